//! Snapshot files: what a leader sends a replica that is too far behind for
//! its log, streamed from and into RocksDB without holding the event history
//! in memory on either side.
//!
//! Format (version [`SNAPSHOT_VERSION`]), a sequence of frames
//! `kind: u8 ‖ len: u32 BE ‖ len bytes`:
//! - `MAGIC` (8 bytes) first, then one `HEAD` frame: the stored snapshot
//!   record (bincode [`StoredSnapshot`]: version, meta, each partition's state
//!   and next offset);
//! - one `EVENT` frame per event, `partition: u16 BE ‖ offset: u64 BE ‖
//!   encoded EventRecord`, partition by partition in offset order, offsets
//!   `0..next_offset` of each;
//! - one `END` frame holding the BLAKE3 hash of every byte before it.
//!
//! Installing reads the file twice: first to check the hash and the shape
//! (every event of every partition, in order, nothing else), then to write the
//! events in bounded write batches and, last, the stored record, synced after
//! the events were flushed. A crash in between leaves the previous record,
//! which still describes the state: events are a deterministic function of the
//! committed log, so the events written over the old ones are the same bytes
//! at the same offsets, and those past the old record's offsets are unread
//! until a later apply or install writes them again.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use chorus_schema::{GroupId, PartitionId, MAX_EVENT_BYTES};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use super::state_machine::{sm_read_err, sm_write_err, StoredSnapshot, SNAPSHOT_VERSION};
use super::{keys, Store, CF_EVENTS, CF_SNAPSHOT};
use crate::types::{SnapshotMeta, StorageError};

const MAGIC: &[u8; 8] = b"CHSNAP\x00\x01";
const HEAD: u8 = 1;
const EVENT: u8 = 2;
const END: u8 = 3;
/// Largest `HEAD` frame accepted (the partition states of one group).
const HEAD_BYTES_MAX: usize = 1 << 30;
/// Events written per RocksDB batch while installing.
const INSTALL_BATCH_BYTES: usize = 4 << 20;

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

/// Writes the snapshot of `stored` (its states, and every event it covers,
/// read from `store`) into an unnamed file, positioned at its start.
///
/// # Errors
/// On IO errors, or when the store lacks an event the snapshot covers.
pub(crate) fn write(store: &Store, stored: &StoredSnapshot) -> Result<File, StorageError> {
    let file = tempfile::tempfile_in(store.path()).map_err(sm_write_err)?;
    let mut w = Writer { out: BufWriter::with_capacity(1 << 20, file), hash: blake3::Hasher::new() };
    let head = bincode::serialize(stored).map_err(sm_write_err)?;
    w.put(MAGIC).map_err(sm_write_err)?;
    w.frame(HEAD, &[&head]).map_err(sm_write_err)?;
    let cf = store.cf(CF_EVENTS);
    for part in &stored.parts {
        let p = part.partition;
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(keys::indexed(p.0, part.next_offset).to_vec());
        ro.fill_cache(false);
        let start = keys::indexed(p.0, 0);
        let mut expected = 0u64;
        for item in store.db().iterator_cf_opt(cf, ro, IteratorMode::From(&start, Direction::Forward)) {
            let (k, v) = item.map_err(sm_read_err)?;
            if keys::index_of(&k) != Some(expected) {
                return Err(sm_read_err(std::io::Error::other(format!(
                    "Corruption: partition {p}: event offsets have a hole at {expected}"
                ))));
            }
            w.frame(EVENT, &[&p.0.to_be_bytes()[..], &expected.to_be_bytes()[..], &v[..]]).map_err(sm_write_err)?;
            expected += 1;
        }
        if expected != part.next_offset {
            return Err(sm_read_err(std::io::Error::other(format!(
                "partition {p}: snapshot covers {} events, store has {expected}",
                part.next_offset
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
    file.sync_data().map_err(sm_write_err)?;
    file.seek(SeekFrom::Start(0)).map_err(sm_write_err)?;
    Ok(file)
}

/// Reads frames from a snapshot file.
struct Reader {
    input: BufReader<File>,
    hash: blake3::Hasher,
    buf: Vec<u8>,
}

impl Reader {
    fn open(mut file: File) -> Result<Reader, StorageError> {
        file.seek(SeekFrom::Start(0)).map_err(sm_read_err)?;
        let mut r = Reader { input: BufReader::with_capacity(1 << 20, file), hash: blake3::Hasher::new(), buf: Vec::new() };
        let mut magic = [0u8; 8];
        r.input.read_exact(&mut magic).map_err(|_| bad("shorter than its magic"))?;
        if &magic != MAGIC {
            return Err(bad(format!("not a chorus snapshot of format {SNAPSHOT_VERSION}")));
        }
        r.hash.update(&magic);
        Ok(r)
    }

    /// The next frame's kind (its body is in `self.buf`); `END` is not hashed.
    fn next(&mut self, limit: usize) -> Result<u8, StorageError> {
        let mut head = [0u8; 5];
        self.input.read_exact(&mut head).map_err(|_| bad("truncated"))?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
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
        if head[0] != END {
            self.hash.update(&head);
            self.hash.update(&self.buf);
        }
        Ok(head[0])
    }

    fn head(&mut self) -> Result<StoredSnapshot, StorageError> {
        if self.next(HEAD_BYTES_MAX)? != HEAD {
            return Err(bad("no head frame"));
        }
        let stored: StoredSnapshot = bincode::deserialize(&self.buf).map_err(|e| bad(format!("head: {e}")))?;
        if stored.version != SNAPSHOT_VERSION {
            return Err(bad(format!("format {} (this build reads {SNAPSHOT_VERSION})", stored.version)));
        }
        Ok(stored)
    }
}

/// An `EVENT` frame's partition, offset and record.
fn event(buf: &[u8]) -> Result<(PartitionId, u64, &[u8]), StorageError> {
    if buf.len() < 10 {
        return Err(bad("short event frame"));
    }
    let p = u16::from_be_bytes([buf[0], buf[1]]);
    let offset = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
    Ok((PartitionId(p), offset, &buf[10..]))
}

/// Walks every event of the file in the order the head promises, calling `f`
/// on each, and checks the end frame's hash.
fn walk(reader: &mut Reader, stored: &StoredSnapshot, mut f: impl FnMut(PartitionId, u64, &[u8]) -> Result<(), StorageError>) -> Result<(), StorageError> {
    let mut parts = stored.parts.iter().filter(|p| p.next_offset > 0).peekable();
    let mut expected: Option<(PartitionId, u64)> = parts.peek().map(|p| (p.partition, 0));
    loop {
        let kind = reader.next(MAX_EVENT_BYTES + 10)?;
        match kind {
            EVENT => {
                let (p, offset, record) = event(&reader.buf)?;
                if expected != Some((p, offset)) {
                    return Err(bad(format!("event {p}/{offset} where {expected:?} was expected")));
                }
                f(p, offset, record)?;
                let current = parts.peek().expect("an event was expected, so a partition is current");
                expected = if offset + 1 < current.next_offset {
                    Some((p, offset + 1))
                } else {
                    parts.next();
                    parts.peek().map(|n| (n.partition, 0))
                };
            }
            END => {
                if let Some(e) = expected {
                    return Err(bad(format!("ends before event {}/{}", e.0, e.1)));
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

/// Installs the snapshot in `file` for `group` (whose partitions are those
/// with a slot in `slots`): checks it, writes its events and then its record.
/// Returns the record.
///
/// # Errors
/// A damaged or foreign file (nothing is written then), or a RocksDB error.
pub(crate) fn install(
    store: &Store,
    group: GroupId,
    slots: &[u32],
    meta: &SnapshotMeta,
    file: File,
) -> Result<StoredSnapshot, StorageError> {
    let mut reader = Reader::open(file)?;
    let stored = reader.head()?;
    if stored.meta.last_log_id != meta.last_log_id {
        return Err(bad(format!("covers {:?}, its metadata says {:?}", stored.meta.last_log_id, meta.last_log_id)));
    }
    let mine = slots.iter().filter(|s| **s != u32::MAX).count();
    let theirs = stored.parts.iter().filter(|p| slots.get(p.partition.0 as usize).is_some_and(|s| *s != u32::MAX));
    if theirs.count() != mine || stored.parts.len() != mine {
        return Err(bad(format!("its partitions differ from group {group}'s")));
    }
    // Pass 1: the whole file is sound before anything is written.
    walk(&mut reader, &stored, |_, _, _| Ok(()))?;
    // Pass 2: the events, in bounded batches.
    let mut reader = Reader::open(reader.input.into_inner())?;
    reader.head()?;
    let cf = store.cf(CF_EVENTS);
    let mut batch = WriteBatch::default();
    walk(&mut reader, &stored, |p, offset, record| {
        batch.put_cf(cf, keys::indexed(p.0, offset), record);
        if batch.size_in_bytes() >= INSTALL_BATCH_BYTES {
            store.write_no_wal(std::mem::take(&mut batch)).map_err(sm_write_err)?;
        }
        Ok(())
    })?;
    if !batch.is_empty() {
        store.write_no_wal(batch).map_err(sm_write_err)?;
    }
    store.flush_events().map_err(sm_write_err)?;
    let stored = StoredSnapshot { meta: meta.clone(), ..stored };
    let mut batch = WriteBatch::default();
    batch.put_cf(store.cf(CF_SNAPSHOT), keys::snapshot(group.0), bincode::serialize(&stored).map_err(sm_write_err)?);
    store.write_sync(batch).map_err(sm_write_err)?;
    Ok(stored)
}
