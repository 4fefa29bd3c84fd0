//! Reading a partition's committed events.

use chorus_schema::PartitionId;
use rocksdb::{Direction, IteratorMode, ReadOptions};

use super::{keys, Result, Store, CF_EVENTS};

/// Reads the encoded events with offsets in `from..to`, at most `limit` of them,
/// in offset order. Returns fewer when the partition has fewer.
///
/// # Errors
/// On a RocksDB read error, or when the stored offsets have a hole.
pub fn read_range(store: &Store, partition: PartitionId, from: u64, to: u64, limit: usize) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    if from >= to || limit == 0 {
        return Ok(out);
    }
    let cf = store.cf(CF_EVENTS);
    let mut ro = ReadOptions::default();
    ro.set_iterate_upper_bound(keys::indexed(partition.0, to).to_vec());
    let start = keys::indexed(partition.0, from);
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
        out.push(v.into_vec());
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}
