//! Reading a partition's committed events.

use chorus_schema::{Offset, PartitionId};
use rocksdb::{Direction, IteratorMode, ReadOptions};

use super::{keys, Result, Store, CF_EVENTS};

/// Most bytes of events one read returns (at least one event is always
/// returned), so that a response stays well inside `MAX_FRAME_BYTES`.
pub const READ_BYTES_MAX: usize = 4 << 20;

/// Reads the encoded events with offsets in `from..to`, at most `limit` of them
/// and about [`READ_BYTES_MAX`] bytes, in offset order. Returns fewer when the
/// partition has fewer.
///
/// # Errors
/// On a RocksDB read error, or when the stored offsets have a hole.
pub fn read_range(
    store: &Store,
    partition: PartitionId,
    from: Offset,
    to: Offset,
    limit: usize,
) -> Result<Vec<Vec<u8>>> {
    let (from, to) = (from.0, to.0);
    let mut out = Vec::new();
    if from >= to || limit == 0 {
        return Ok(out);
    }
    let cf = store.cf(CF_EVENTS);
    let mut ro = ReadOptions::default();
    ro.set_iterate_upper_bound(keys::indexed(partition.0, to).to_vec());
    let start = keys::indexed(partition.0, from);
    let mut bytes = 0usize;
    for item in store.db().iterator_cf_opt(cf, ro, IteratorMode::From(&start, Direction::Forward)) {
        let (k, v) = item?;
        let expected = from + out.len() as u64;
        if keys::index_of(&k) != Some(expected) {
            return Err(super::Error::Corrupt {
                what: "event offsets",
                partition: partition.0,
                reason: format!("expected offset {expected}, found key {k:?}"),
            });
        }
        bytes += v.len();
        out.push(v.into_vec());
        if out.len() >= limit || bytes >= READ_BYTES_MAX {
            break;
        }
    }
    Ok(out)
}
