//! Snapshot files: what a leader sends a replica that is too far behind for
//! its log, streamed out of and into RocksDB without holding the state or the
//! event history in memory on either side.
//!
//! Format (version [`SNAPSHOT_VERSION`]): `MAGIC` (8 bytes), then frames
//! `kind: u8 ‖ len: u32 BE ‖ len bytes`:
//! - one `HEAD` frame: bincode [`Head`] (version, snapshot metadata, each
//!   partition's next event offset);
//! - one `STATE` frame per state record, `partition: u16 BE ‖ record key ‖
//!   value` with the key length before it (`u16 BE`), partition by partition in
//!   the head's order, keys ascending;
//! - one `EVENT` frame per event, `partition: u16 BE ‖ offset: u64 BE ‖
//!   encoded EventRecord`, partition by partition, offsets `0..next_offset`;
//! - one `END` frame holding the BLAKE3 hash of every byte before it.
//!
//! The sender reads one consistent RocksDB snapshot (the group's applied
//! position, records and events at one instant). Installing reads the file
//! twice: first to check the hash and the shape, then to write the records
//! under a new generation of the group's state and the events, in bounded
//! write batches; last, one synced write switches the group to the new
//! generation and position. A crash before that switch leaves the old state
//! whole (the new generation's records are dropped at the next open); the
//! events written over old ones are the same bytes at the same offsets, since
//! events are a deterministic function of the committed log.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use chorus_schema::{GroupId, Offset, PartitionId, MAX_EVENT_BYTES};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};
use serde::{Deserialize, Serialize};

use super::state_machine::{
    read_meta_at, sm_read_err, sm_write_err, snapshot_id, state_prefix, SmMeta, SNAPSHOT_VERSION,
};
use super::{keys, Store, CF_EVENTS, CF_META, CF_SNAPSHOT, CF_STATE};
use crate::types::{SnapshotMeta, StorageError};

const MAGIC: &[u8; 8] = b"CHSNAP\x00\x02";
const HEAD: u8 = 1;
const STATE: u8 = 2;
const EVENT: u8 = 3;
const END: u8 = 4;
/// Largest `HEAD` frame accepted.
const HEAD_BYTES_MAX: usize = 1 << 20;
/// Largest `STATE` frame accepted.
const STATE_BYTES_MAX: usize = 1 << 20;
/// Bytes written per RocksDB batch while installing.
const INSTALL_BATCH_BYTES: usize = 4 << 20;

/// The head of a snapshot file.
#[derive(Debug, Serialize, Deserialize)]
struct Head {
    version: u8,
    meta: SnapshotMeta,
    next_offsets: Vec<(PartitionId, u64)>,
}

/// The record of a built (or installed) snapshot, in `CF_SNAPSHOT`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Built {
    pub version: u8,
    pub meta: SnapshotMeta,
}

fn bad(what: impl Into<String>) -> StorageError {
    sm_read_err(std::io::Error::other(format!("snapshot file: {}", what.into())))
}

/// Writes frames into a file, hashing every byte.
struct Writer {
    out: BufWriter<File>,
    hash: blake3::Hasher,
}

impl Writer {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hash.update(bytes);
        self.out.write_all(bytes)
    }

    fn frame(&mut self, kind: u8, parts: &[&[u8]]) -> std::io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len = u32::try_from(len).map_err(|_| std::io::Error::other("snapshot frame over 4 GiB"))?;
        self.put(&[kind])?;
        self.put(&len.to_be_bytes())?;
        for p in parts {
            self.put(p)?;
        }
        Ok(())
    }
}

/// Writes the current state of `group` (its records and every event they
/// cover, at one instant) into an unnamed file, positioned at its start, with
/// the metadata that names it. `None` if the group has applied nothing yet.
///
/// # Errors
/// On IO errors, or when the store lacks an event the state covers.
#[expect(clippy::result_large_err, reason = "StorageError is openraft's error type, dictated by its storage traits")]
pub(crate) fn write(store: &Store, group: GroupId) -> Result<Option<(SnapshotMeta, File)>, StorageError> {
    let snap = store.db().snapshot();
    let Some(sm) = read_meta_at(store, group, Some(&snap))? else { return Ok(None) };
    if sm.last_applied.is_none() {
        return Ok(None);
    }
    let meta = SnapshotMeta {
        last_log_id: sm.last_applied,
        last_membership: sm.membership.clone(),
        snapshot_id: snapshot_id(sm.last_applied),
    };
    let file = tempfile::tempfile_in(store.path()).map_err(sm_write_err)?;
    let mut w = Writer { out: BufWriter::with_capacity(1 << 20, file), hash: blake3::Hasher::new() };
    let head = Head {
        version: SNAPSHOT_VERSION,
        meta: meta.clone(),
        next_offsets: sm.next_offsets.iter().map(|&(p, o)| (p, o.0)).collect(),
    };
    w.put(MAGIC).map_err(sm_write_err)?;
    w.frame(HEAD, &[&bincode::serialize(&head).map_err(sm_write_err)?]).map_err(sm_write_err)?;
    for &(p, _) in &sm.next_offsets {
        let prefix = state_prefix(p, sm.generation);
        let mut ro = ReadOptions::default();
        ro.set_snapshot(&snap);
        ro.fill_cache(false);
        // Across the memtable's prefix buckets: every record of the partition.
        ro.set_total_order_seek(true);
        for item in store.db().iterator_cf_opt(store.cf(CF_STATE), ro, IteratorMode::From(&prefix, Direction::Forward))
        {
            let (k, v) = item.map_err(sm_read_err)?;
            if !k.starts_with(&prefix) {
                break;
            }
            let key = k.get(prefix.len()..).unwrap_or_default();
            let klen =
                u16::try_from(key.len()).map_err(|_| sm_read_err(std::io::Error::other("state key over 64 KiB")))?;
            w.frame(STATE, &[&p.0.to_be_bytes()[..], &klen.to_be_bytes()[..], key, &v[..]]).map_err(sm_write_err)?;
        }
    }
    for &(p, Offset(next_offset)) in &sm.next_offsets {
        let mut ro = ReadOptions::default();
        ro.set_snapshot(&snap);
        ro.set_iterate_upper_bound(keys::indexed(p.0, next_offset).to_vec());
        ro.fill_cache(false);
        let start = keys::indexed(p.0, 0);
        let mut expected = 0u64;
        for item in store.db().iterator_cf_opt(store.cf(CF_EVENTS), ro, IteratorMode::From(&start, Direction::Forward))
        {
            let (k, v) = item.map_err(sm_read_err)?;
            if keys::index_of(&k) != Some(expected) {
                return Err(sm_read_err(std::io::Error::other(format!(
                    "Corruption: partition {p}: event offsets have a hole at {expected}"
                ))));
            }
            w.frame(EVENT, &[&p.0.to_be_bytes()[..], &expected.to_be_bytes()[..], &v[..]]).map_err(sm_write_err)?;
            expected += 1;
        }
        if expected != next_offset {
            return Err(sm_read_err(std::io::Error::other(format!(
                "partition {p}: the state covers {next_offset} events, the store has {expected}"
            ))));
        }
    }
    let digest = w.hash.finalize();
    // The END frame is not part of the hash it carries.
    let mut out = w.out;
    out.write_all(&[END]).map_err(sm_write_err)?;
    out.write_all(&32u32.to_be_bytes()).map_err(sm_write_err)?;
    out.write_all(digest.as_bytes()).map_err(sm_write_err)?;
    let mut file = out.into_inner().map_err(|e| sm_write_err(e.into_error()))?;
    file.seek(SeekFrom::Start(0)).map_err(sm_write_err)?;
    Ok(Some((meta, file)))
}

/// Reads frames from a snapshot file.
struct Reader {
    input: BufReader<File>,
    hash: blake3::Hasher,
    buf: Vec<u8>,
}

impl Reader {
    #[expect(
        clippy::result_large_err,
        reason = "StorageError is openraft's error type, dictated by its storage traits"
    )]
    fn open(mut file: File) -> Result<Reader, StorageError> {
        file.seek(SeekFrom::Start(0)).map_err(sm_read_err)?;
        let mut r =
            Reader { input: BufReader::with_capacity(1 << 20, file), hash: blake3::Hasher::new(), buf: Vec::new() };
        let mut magic = [0u8; 8];
        r.input.read_exact(&mut magic).map_err(|_| bad("shorter than its magic"))?;
        if &magic != MAGIC {
            return Err(bad(format!("not a chorus snapshot of format {SNAPSHOT_VERSION}")));
        }
        r.hash.update(&magic);
        Ok(r)
    }

    /// The next frame's kind (its body is in `self.buf`); `END` is not hashed.
    #[expect(
        clippy::result_large_err,
        reason = "StorageError is openraft's error type, dictated by its storage traits"
    )]
    fn next(&mut self, limit: usize) -> Result<u8, StorageError> {
        let mut head = [0u8; 5];
        self.input.read_exact(&mut head).map_err(|_| bad("truncated"))?;
        let [kind, l0, l1, l2, l3] = head;
        let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
        if len > limit {
            return Err(bad(format!("frame of {len} bytes, limit {limit}")));
        }
        // Grows as bytes arrive: a corrupt length cannot make it allocate more
        // than the file holds.
        self.buf.clear();
        let got = (&mut self.input).take(len as u64).read_to_end(&mut self.buf).map_err(sm_read_err)?;
        if got != len {
            return Err(bad("truncated frame"));
        }
        if kind != END {
            self.hash.update(&head);
            self.hash.update(&self.buf);
        }
        Ok(kind)
    }

    #[expect(
        clippy::result_large_err,
        reason = "StorageError is openraft's error type, dictated by its storage traits"
    )]
    fn head(&mut self) -> Result<Head, StorageError> {
        if self.next(HEAD_BYTES_MAX)? != HEAD {
            return Err(bad("no head frame"));
        }
        let head: Head = bincode::deserialize(&self.buf).map_err(|e| bad(format!("head: {e}")))?;
        if head.version != SNAPSHOT_VERSION {
            return Err(bad(format!("format {} (this build reads {SNAPSHOT_VERSION})", head.version)));
        }
        Ok(head)
    }
}

/// One record or event of the file.
enum Item<'a> {
    State { partition: PartitionId, key: &'a [u8], value: &'a [u8] },
    Event { partition: PartitionId, offset: u64, record: &'a [u8] },
}

#[expect(clippy::result_large_err, reason = "StorageError is openraft's error type, dictated by its storage traits")]
fn state(buf: &[u8]) -> Result<(PartitionId, &[u8], &[u8]), StorageError> {
    let Some((&[p0, p1, k0, k1], rest)) = buf.split_first_chunk::<4>() else {
        return Err(bad("short state frame"));
    };
    let p = u16::from_be_bytes([p0, p1]);
    let klen = u16::from_be_bytes([k0, k1]) as usize;
    let (key, value) = rest.split_at_checked(klen).ok_or_else(|| bad("state key past its frame"))?;
    Ok((PartitionId(p), key, value))
}

#[expect(clippy::result_large_err, reason = "StorageError is openraft's error type, dictated by its storage traits")]
fn event(buf: &[u8]) -> Result<(PartitionId, u64, &[u8]), StorageError> {
    let Some((&[p0, p1], rest)) = buf.split_first_chunk::<2>() else {
        return Err(bad("short event frame"));
    };
    let Some((offset, record)) = rest.split_first_chunk::<8>() else {
        return Err(bad("short event frame"));
    };
    let p = u16::from_be_bytes([p0, p1]);
    let offset = u64::from_be_bytes(*offset);
    Ok((PartitionId(p), offset, record))
}

/// Walks every item of the file in the order the head promises, calling `f`
/// on each, and checks the end frame's hash.
#[expect(clippy::result_large_err, reason = "StorageError is openraft's error type, dictated by its storage traits")]
fn walk(
    reader: &mut Reader,
    head: &Head,
    mut f: impl FnMut(Item<'_>) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let order: Vec<PartitionId> = head.next_offsets.iter().map(|(p, _)| *p).collect();
    // State records: partitions in the head's order, keys ascending.
    let mut at = 0usize;
    let mut last_key: Option<Vec<u8>> = None;
    // Events: the next expected (index into the head, offset).
    let mut events = head.next_offsets.iter().enumerate().filter(|(_, (_, n))| *n > 0).map(|(i, _)| i).peekable();
    let mut expected: Option<(usize, u64)> = events.peek().map(|i| (*i, 0));
    let mut in_events = false;
    loop {
        match reader.next(STATE_BYTES_MAX.max(MAX_EVENT_BYTES + 10))? {
            STATE if !in_events => {
                let (p, key, value) = state(&reader.buf)?;
                let i = order
                    .get(at..)
                    .unwrap_or_default()
                    .iter()
                    .position(|q| *q == p)
                    .map(|d| at + d)
                    .ok_or_else(|| bad(format!("state of partition {p} out of order")))?;
                if i != at {
                    at = i;
                    last_key = None;
                }
                if last_key.as_deref().is_some_and(|k| k >= key) {
                    return Err(bad(format!("state keys of partition {p} out of order")));
                }
                last_key = Some(key.to_vec());
                f(Item::State { partition: p, key, value })?;
            }
            EVENT => {
                in_events = true;
                let (p, offset, record) = event(&reader.buf)?;
                let Some((i, want)) = expected else {
                    return Err(bad(format!("event {p}/{offset} past the last one")));
                };
                // `i` indexes the head's partitions (`order` is built from them).
                let (q, next_offset) =
                    head.next_offsets.get(i).copied().ok_or_else(|| bad("event index past the head"))?;
                if (q, want) != (p, offset) {
                    return Err(bad(format!("event {p}/{offset} where {q}/{want} was expected")));
                }
                f(Item::Event { partition: p, offset, record })?;
                expected = if offset + 1 < next_offset {
                    Some((i, offset + 1))
                } else {
                    events.next();
                    events.peek().map(|i| (*i, 0))
                };
            }
            END => {
                if let Some((i, want)) = expected {
                    let q = order.get(i).map_or_else(|| "?".to_owned(), ToString::to_string);
                    return Err(bad(format!("ends before event {q}/{want}")));
                }
                let digest = reader.hash.finalize();
                if reader.buf.as_slice() != digest.as_bytes() {
                    return Err(bad("checksum mismatch"));
                }
                return Ok(());
            }
            other => return Err(bad(format!("unexpected frame kind {other}"))),
        }
    }
}

/// Installs the snapshot in `file` for `group` (which hosts `partitions`):
/// checks it, writes its records under `generation` and its events, then
/// switches the group to them. Returns the group's new position.
///
/// # Errors
/// A damaged or foreign file (nothing that is read is written then), or a
/// RocksDB error.
#[expect(clippy::result_large_err, reason = "StorageError is openraft's error type, dictated by its storage traits")]
pub(crate) fn install(
    store: &Store,
    group: GroupId,
    partitions: &[PartitionId],
    generation: u32,
    meta: &SnapshotMeta,
    file: File,
) -> Result<SmMeta, StorageError> {
    let mut reader = Reader::open(file)?;
    let head = reader.head()?;
    if head.meta.last_log_id != meta.last_log_id {
        return Err(bad(format!("covers {:?}, its metadata says {:?}", head.meta.last_log_id, meta.last_log_id)));
    }
    let theirs: HashSet<PartitionId> = head.next_offsets.iter().map(|(p, _)| *p).collect();
    let mine: HashSet<PartitionId> = partitions.iter().copied().collect();
    if theirs != mine || theirs.len() != head.next_offsets.len() {
        return Err(bad(format!("its partitions differ from group {group}'s")));
    }
    // Pass 1: the whole file is sound before anything is written.
    #[expect(
        clippy::result_large_err,
        reason = "StorageError is openraft's error type, dictated by its storage traits"
    )]
    walk(&mut reader, &head, |_| Ok(()))?;
    // Pass 2: the records and events, in bounded batches.
    let mut reader = Reader::open(reader.input.into_inner())?;
    reader.head()?;
    let mut batch = WriteBatch::default();
    #[expect(
        clippy::result_large_err,
        reason = "StorageError is openraft's error type, dictated by its storage traits"
    )]
    walk(&mut reader, &head, |item| {
        match item {
            Item::State { partition, key, value } => {
                let mut k = state_prefix(partition, generation).to_vec();
                k.extend_from_slice(key);
                batch.put_cf(store.cf(CF_STATE), k, value);
            }
            Item::Event { partition, offset, record } => {
                batch.put_cf(store.cf(CF_EVENTS), keys::indexed(partition.0, offset), record);
            }
        }
        if batch.size_in_bytes() >= INSTALL_BATCH_BYTES {
            store.write(std::mem::take(&mut batch)).map_err(sm_write_err)?;
        }
        Ok(())
    })?;
    store.write(batch).map_err(sm_write_err)?;
    // The switch, synced (which also makes every write above durable: the WAL
    // is ordered).
    let sm = SmMeta {
        last_applied: meta.last_log_id,
        membership: meta.last_membership.clone(),
        generation,
        next_offsets: head.next_offsets.into_iter().map(|(p, o)| (p, Offset(o))).collect(),
    };
    let mut batch = WriteBatch::default();
    batch.put_cf(store.cf(CF_META), keys::meta(group.0, keys::SM), bincode::serialize(&sm).map_err(sm_write_err)?);
    let built = Built { version: SNAPSHOT_VERSION, meta: meta.clone() };
    batch.put_cf(store.cf(CF_SNAPSHOT), keys::snapshot(group.0), bincode::serialize(&built).map_err(sm_write_err)?);
    store.write_sync(batch).map_err(sm_write_err)?;
    // The older generations are unreachable now.
    let mut batch = WriteBatch::default();
    for &p in partitions {
        batch.delete_range_cf(store.cf(CF_STATE), state_prefix(p, 0), state_prefix(p, generation));
    }
    store.write(batch).map_err(sm_write_err)?;
    Ok(sm)
}
