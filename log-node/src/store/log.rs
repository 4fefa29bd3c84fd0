//! `RaftLogStorage` of one Raft group over the node's shared RocksDB.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{EntryPayload, OptionalSend, RaftLogReader, StorageIOError};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use super::{keys, Store, CF_LOG, CF_META};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// Most recent log entries kept in memory per group, so that replication
/// (which reads entries right after they were appended) rarely touches RocksDB.
pub const CACHE_ENTRIES_MAX: usize = 1024;
/// Most payload bytes of the cached entries per group: entries are merged
/// proposals of up to a MiB or so, so the count alone bounds nothing.
pub const CACHE_BYTES_MAX: usize = 32 << 20;

fn payload_bytes(e: &Entry) -> usize {
    match &e.payload {
        EntryPayload::Normal(p) => p.commands.bytes().len(),
        _ => 0,
    }
}

/// The newest entries of the log, contiguous, mirroring what is on disk.
/// Cloning an entry shares its payload (reference-counted bytes).
#[derive(Debug, Default)]
struct Cache {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl Cache {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.log_id.index)
    }

    fn push(&mut self, entry: Entry) {
        if let Some(last) = self.entries.back() {
            if last.log_id.index + 1 != entry.log_id.index {
                self.entries.clear();
                self.bytes = 0;
            }
        }
        self.bytes += payload_bytes(&entry);
        self.entries.push_back(entry);
        while self.entries.len() > CACHE_ENTRIES_MAX || (self.bytes > CACHE_BYTES_MAX && self.entries.len() > 1) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= payload_bytes(&e);
        }
    }

    fn pop_back(&mut self) {
        if let Some(e) = self.entries.pop_back() {
            self.bytes -= payload_bytes(&e);
        }
    }

    /// Entries `start..end` if the cache holds all of them that exist.
    fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        if start < first {
            return None;
        }
        let skip = usize::try_from(start - first).ok()?;
        Some(self.entries.iter().skip(skip).take_while(|e| e.log_id.index < end).cloned().collect())
    }

    fn truncate(&mut self, index: u64) {
        while self.entries.back().is_some_and(|e| e.log_id.index >= index) {
            self.pop_back();
        }
    }

    fn purge(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.log_id.index <= index) {
            self.pop_front();
        }
    }
}

/// The Raft log and vote of one Raft group. Cheap to clone: clones share the
/// store and the cache of recent entries.
#[derive(Clone, Debug)]
pub struct LogStore {
    group: u16,
    store: Arc<Store>,
    cache: Arc<Mutex<Cache>>,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

impl LogStore {
    pub fn new(store: Arc<Store>, group: u16) -> Self {
        LogStore { group, store, cache: Default::default() }
    }

    #[expect(
        clippy::result_large_err,
        reason = "StorageError is openraft's error type, dictated by its storage traits"
    )]
    fn get_meta<T: serde::de::DeserializeOwned>(&self, tag: u8) -> Result<Option<T>, StorageError> {
        let cf = self.store.cf(CF_META);
        let Some(bytes) = self.store.db().get_pinned_cf(cf, keys::meta(self.group, tag)).map_err(read_err)? else {
            return Ok(None);
        };
        bincode::deserialize(&bytes).map(Some).map_err(read_err)
    }

    #[expect(
        clippy::result_large_err,
        reason = "StorageError is openraft's error type, dictated by its storage traits"
    )]
    fn last_entry(&self) -> Result<Option<Entry>, StorageError> {
        let cf = self.store.cf(CF_LOG);
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(keys::indexed(self.group, 0).to_vec());
        let upper = keys::indexed(self.group, u64::MAX);
        let mut it = self.store.db().iterator_cf_opt(cf, ro, IteratorMode::From(&upper, Direction::Reverse));
        match it.next() {
            None => Ok(None),
            Some(Err(e)) => Err(read_err(e)),
            Some(Ok((k, v))) if k.len() == 10 && k.starts_with(&self.group.to_be_bytes()) => {
                bincode::deserialize(&v).map(Some).map_err(read_err)
            }
            Some(Ok(_)) => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        if start >= end {
            return Ok(Vec::new());
        }
        if let Some(hit) = self.cache.lock().unwrap_or_else(PoisonError::into_inner).get(start, end) {
            return Ok(hit);
        }
        let cf = self.store.cf(CF_LOG);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(keys::indexed(self.group, end).to_vec());
        let from = keys::indexed(self.group, start);
        let mut out = Vec::new();
        for item in self.store.db().iterator_cf_opt(cf, ro, IteratorMode::From(&from, Direction::Forward)) {
            let (k, v) = item.map_err(read_err)?;
            let entry: Entry = bincode::deserialize(&v).map_err(read_err)?;
            // Entries below the first present one may have been purged, but the
            // entries present are contiguous: a hole means the store is corrupt.
            let expected = out.first().map_or(entry.log_id.index, |f: &Entry| f.log_id.index + out.len() as u64);
            assert_eq!(keys::index_of(&k), Some(entry.log_id.index), "log key and entry disagree");
            if entry.log_id.index != expected {
                return Err(read_err(std::io::Error::other(format!(
                    "Corruption: group {}: log hole, expected index {expected}, found {}",
                    self.group, entry.log_id.index
                ))));
            }
            out.push(entry);
        }
        Ok(out)
    }
}

impl LogStore {
    /// Why this replica cannot be trusted, if it cannot: reads everything
    /// Raft reads at start (every log entry, the metadata, the snapshot), so
    /// that damage shows before the node takes part, and checks that the log
    /// holds the commit index the replica recorded itself. That index is
    /// written after the entries it covers, into the same write-ahead log, so
    /// after any crash (which keeps a prefix of that log) it never runs ahead
    /// of the log: if it does, records were lost from the middle.
    ///
    /// # Errors
    /// A storage error that is not damage (the disk cannot be read at all).
    pub async fn check(&mut self) -> Result<Option<String>, StorageError> {
        match self.check_inner().await {
            Err(e) if crate::service::reseed::is_corruption(&e.to_string()) => Ok(Some(e.to_string())),
            other => other,
        }
    }

    async fn check_inner(&mut self) -> Result<Option<String>, StorageError> {
        let entries = self.try_get_log_entries(..).await?;
        let _vote: Option<Vote> = self.get_meta(keys::VOTE)?;
        let purged: Option<LogId> = self.get_meta(keys::PURGED)?;
        let snapshot = super::state_machine::snapshot_last_log_id(&self.store, self.group)?;
        let Some(committed) = self.get_meta::<Option<LogId>>(keys::COMMITTED)?.flatten() else { return Ok(None) };
        let last = [entries.last().map(|e| e.log_id), purged, snapshot].into_iter().flatten().map(|l| l.index).max();
        Ok(match last {
            Some(last) if last >= committed.index => None,
            last => Some(format!(
                "Corruption: group {}: log ends at {last:?} but index {} was recorded as committed",
                self.group, committed.index
            )),
        })
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(keys::PURGED)?;
        let last = self.last_entry()?.map(|e| e.log_id);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last.or(last_purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut b = WriteBatch::default();
        let bytes = bincode::serialize(vote).map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))?;
        b.put_cf(self.store.cf(CF_META), keys::meta(self.group, keys::VOTE), bytes);
        self.store.write_sync(b).map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(keys::VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: it only saves re-applying after a restart, and the next
        // synced append carries it to disk.
        let mut b = WriteBatch::default();
        b.put_cf(
            self.store.cf(CF_META),
            keys::meta(self.group, keys::COMMITTED),
            bincode::serialize(&committed).map_err(write_err)?,
        );
        self.store.write(b).map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(keys::COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = self.store.cf(CF_LOG);
        let mut b = WriteBatch::default();
        let mut appended = Vec::new();
        for entry in entries {
            let bytes = bincode::serialize(&entry).map_err(write_err)?;
            b.put_cf(cf, keys::indexed(self.group, entry.log_id.index), bytes);
            appended.push(entry);
        }
        self.store.write(b).map_err(write_err)?;
        let entries = appended.len();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        for entry in appended {
            cache.push(entry);
        }
        drop(cache);
        self.store.syncer().submit(callback, entries);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(group = self.group, %log_id, "truncate log");
        let mut b = WriteBatch::default();
        b.delete_range_cf(
            self.store.cf(CF_LOG),
            keys::indexed(self.group, log_id.index),
            keys::indexed(self.group, u64::MAX),
        );
        // u64::MAX itself is never a real index.
        self.store.write(b).map_err(write_err)?;
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).truncate(log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(group = self.group, %log_id, "purge log");
        let mut b = WriteBatch::default();
        b.put_cf(
            self.store.cf(CF_META),
            keys::meta(self.group, keys::PURGED),
            bincode::serialize(&log_id).map_err(write_err)?,
        );
        b.delete_range_cf(
            self.store.cf(CF_LOG),
            keys::indexed(self.group, 0),
            keys::indexed(self.group, log_id.index + 1),
        );
        self.store.write(b).map_err(write_err)?;
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).purge(log_id.index);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Batch, Proposal};
    use chorus_schema::PartitionId;
    use openraft::{CommittedLeaderId, LogId};

    fn entry(index: u64) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Blank }
    }

    fn indexes(v: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn cache_serves_only_ranges_it_fully_holds() {
        let mut c = Cache::default();
        for i in 5..10 {
            c.push(entry(i));
        }
        assert_eq!(indexes(c.get(6, 8)), Some(vec![6, 7]));
        assert_eq!(indexes(c.get(8, 100)), Some(vec![8, 9]));
        assert_eq!(indexes(c.get(4, 8)), None, "5 is the oldest held; 4 may be on disk");
        c.truncate(8);
        assert_eq!(indexes(c.get(5, 100)), Some(vec![5, 6, 7]));
        c.purge(6);
        assert_eq!(indexes(c.get(7, 100)), Some(vec![7]));
        assert_eq!(indexes(c.get(6, 100)), None);
        // A gap resets the cache rather than mixing non-contiguous entries.
        c.push(entry(20));
        assert_eq!(indexes(c.get(20, 21)), Some(vec![20]));
        assert_eq!(indexes(c.get(7, 21)), None);
        for i in 21..(21 + CACHE_ENTRIES_MAX as u64 + 10) {
            c.push(entry(i));
        }
        assert_eq!(c.entries.len(), CACHE_ENTRIES_MAX);
        assert_eq!(c.bytes, 0);
        // Large entries: bounded by bytes, and the accounting follows every removal.
        let big = |index| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Proposal::new(0, Batch::single(PartitionId(0), &vec![0; 1 << 20]))),
        };
        let mut c = Cache::default();
        for i in 0..100 {
            c.push(big(i));
        }
        assert!(c.bytes <= CACHE_BYTES_MAX, "{} bytes cached", c.bytes);
        assert!(c.entries.len() >= 20, "still caches the newest: {}", c.entries.len());
        c.truncate(90);
        c.purge(85);
        assert_eq!(c.bytes, c.entries.iter().map(payload_bytes).sum::<usize>());
        assert_eq!(indexes(c.get(86, 100)), Some(vec![86, 87, 88, 89]));
    }
}
