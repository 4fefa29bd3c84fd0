//! `RaftLogStorage` of one partition over the node's shared RocksDB.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageIOError};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use super::{keys, Store, CF_LOG, CF_META};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// The Raft log and vote of one partition. Cheap to clone: clones share the store.
#[derive(Clone, Debug)]
pub struct LogStore {
    partition: u16,
    store: Arc<Store>,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

impl LogStore {
    pub fn new(store: Arc<Store>, partition: u16) -> Self {
        LogStore { partition, store }
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, tag: u8) -> Result<Option<T>, StorageError> {
        let cf = self.store.cf(CF_META);
        let Some(bytes) = self.store.db().get_pinned_cf(cf, keys::meta(self.partition, tag)).map_err(read_err)? else {
            return Ok(None);
        };
        bincode::deserialize(&bytes).map(Some).map_err(read_err)
    }

    fn last_entry(&self) -> Result<Option<Entry>, StorageError> {
        let cf = self.store.cf(CF_LOG);
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(keys::indexed(self.partition, 0).to_vec());
        let upper = keys::indexed(self.partition, u64::MAX);
        let mut it = self.store.db().iterator_cf_opt(cf, ro, IteratorMode::From(&upper, Direction::Reverse));
        match it.next() {
            None => Ok(None),
            Some(Err(e)) => Err(read_err(e)),
            Some(Ok((k, v))) if k.len() == 10 && k[..2] == self.partition.to_be_bytes() => {
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
        let cf = self.store.cf(CF_LOG);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(keys::indexed(self.partition, end).to_vec());
        let from = keys::indexed(self.partition, start);
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
                    "partition {}: log hole, expected index {expected}, found {}",
                    self.partition, entry.log_id.index
                ))));
            }
            out.push(entry);
        }
        Ok(out)
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
        b.put_cf(self.store.cf(CF_META), keys::meta(self.partition, keys::VOTE), bytes);
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
            keys::meta(self.partition, keys::COMMITTED),
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
        for entry in entries {
            let bytes = bincode::serialize(&entry).map_err(write_err)?;
            b.put_cf(cf, keys::indexed(self.partition, entry.log_id.index), bytes);
        }
        self.store.write(b).map_err(write_err)?;
        self.store.syncer().submit(callback);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(partition = self.partition, %log_id, "truncate log");
        let mut b = WriteBatch::default();
        b.delete_range_cf(
            self.store.cf(CF_LOG),
            keys::indexed(self.partition, log_id.index),
            keys::indexed(self.partition, u64::MAX),
        );
        // u64::MAX itself is never a real index.
        self.store.write(b).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(partition = self.partition, %log_id, "purge log");
        let mut b = WriteBatch::default();
        b.put_cf(
            self.store.cf(CF_META),
            keys::meta(self.partition, keys::PURGED),
            bincode::serialize(&log_id).map_err(write_err)?,
        );
        b.delete_range_cf(
            self.store.cf(CF_LOG),
            keys::indexed(self.partition, 0),
            keys::indexed(self.partition, log_id.index + 1),
        );
        self.store.write(b).map_err(write_err)
    }
}
