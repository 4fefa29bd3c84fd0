//! A group's state records: RocksDB as of the last checkpoint, plus what
//! changed since, in memory, bounded.
//!
//! Applying a command reads and writes a few records (a chat's head, a message,
//! a dedup entry). Writing each through RocksDB's memtable at random keys
//! measured as the node's largest cost, and a busy chat's head was rewritten
//! for every message. So records changed since the last checkpoint live in
//! `dirty` (a hash map); a **checkpoint** writes them all, in key order, with
//! the group's applied position ([`SmMeta`]) in one write batch and fsyncs the
//! WAL. RocksDB therefore always holds the state of some applied index, and
//! after a crash openraft re-applies the log after it (a built snapshot names a
//! checkpointed index, so the log is never purged past the last checkpoint).
//!
//! Memory is bounded by configuration: a checkpoint starts when `dirty` holds
//! more than `checkpoint_bytes_max` (and at every snapshot build); the records
//! of the checkpoint being written (`flushing`) stay readable until it is
//! done, then serve as a read cache until the next one; a second checkpoint
//! waits for the first, so at most two generations of changes are in memory.
//!
//! Reads look in `dirty`, then `flushing`, then RocksDB.

use std::sync::{Arc, Mutex, PoisonError};

use chorus_partition::Kv;
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};
use tokio::sync::watch;

use super::state_machine::{sm_read_err, sm_write_err, SmMeta};
use super::{keys, Store, CF_META, CF_STATE};
use crate::types::StorageError;

/// Keys carry client-chosen ids, so the hash is seeded per process
/// (foldhash: a fraction of SipHash's cost, which was ~10% of a node's CPU).
type Map = std::collections::HashMap<Vec<u8>, Option<Vec<u8>>, foldhash::fast::RandomState>;

/// Memory one changed record takes, about (key, value, map slot).
fn footprint(key: &[u8], value: &Option<Vec<u8>>) -> usize {
    key.len() + value.as_ref().map_or(0, Vec::len) + 64
}

/// The outcome of a checkpoint, for whoever waits on it.
pub(crate) type Done = watch::Receiver<Option<Result<(), String>>>;

/// The records of one group.
pub(crate) struct Records {
    store: Arc<Store>,
    group: u16,
    dirty: Map,
    dirty_bytes: usize,
    flushing: Arc<Map>,
    /// The checkpoint being written, if any.
    in_flight: Option<Done>,
    pub(crate) checkpoint_bytes_max: usize,
    /// The first read error since the last commit: decisions made on it must
    /// not be checkpointed (the apply fails, and the node stops).
    error: Mutex<Option<rocksdb::Error>>,
}

/// The default of `checkpoint_bytes_max`.
pub(super) const CHECKPOINT_BYTES_MAX: usize = 16 << 20;

impl Records {
    pub(crate) fn new(store: Arc<Store>, group: u16) -> Self {
        Records {
            store,
            group,
            dirty: Map::default(),
            dirty_bytes: 0,
            flushing: Arc::new(Map::default()),
            in_flight: None,
            checkpoint_bytes_max: CHECKPOINT_BYTES_MAX,
            error: Mutex::new(None),
        }
    }

    /// A view for the records of the partition whose keys start with `prefix`.
    pub(crate) fn view(&mut self, prefix: [u8; 6]) -> View<'_> {
        View { records: self, prefix }
    }

    /// The first read error since the last call, if any.
    #[expect(
        clippy::result_large_err,
        reason = "StorageError is openraft's error type, dictated by its storage traits"
    )]
    pub(crate) fn take_error(&self) -> Result<(), StorageError> {
        match self.error.lock().unwrap_or_else(PoisonError::into_inner).take() {
            Some(e) => Err(sm_read_err(e)),
            None => Ok(()),
        }
    }

    pub(crate) fn needs_checkpoint(&self) -> bool {
        self.dirty_bytes > self.checkpoint_bytes_max
    }

    /// Waits for the checkpoint in flight, if any.
    ///
    /// # Errors
    /// When it failed: the node must stop.
    pub(crate) async fn settle(&mut self) -> Result<(), StorageError> {
        if let Some(mut done) = self.in_flight.take() {
            let r = done
                .wait_for(Option::is_some)
                .await
                .map(|r| r.clone())
                .map_err(|_| "checkpoint task dropped".to_string());
            match r {
                Ok(Some(Ok(()))) => {}
                Ok(Some(Err(e))) | Err(e) => {
                    return Err(sm_write_err(std::io::Error::other(format!("checkpoint: {e}"))))
                }
                Ok(None) => unreachable!("waited for Some"),
            }
        }
        Ok(())
    }

    /// Starts a checkpoint of every change so far at position `meta` (after
    /// the one in flight, if any), and returns what tells when it is on disk.
    ///
    /// # Errors
    /// When the previous checkpoint failed.
    pub(crate) async fn checkpoint(&mut self, meta: &SmMeta) -> Result<Done, StorageError> {
        self.settle().await?;
        let changes = Arc::new(std::mem::take(&mut self.dirty));
        self.dirty_bytes = 0;
        self.flushing = changes.clone();
        let meta = bincode::serialize(meta).map_err(sm_write_err)?;
        let (tx, rx) = watch::channel(None);
        let store = self.store.clone();
        let group = self.group;
        tokio::task::spawn_blocking(move || {
            let r = write_checkpoint(&store, group, &changes, meta).map_err(|e| e.to_string());
            if let Err(e) = &r {
                tracing::error!(group, error = %e, "checkpoint failed");
            }
            let _ = tx.send(Some(r));
        });
        self.in_flight = Some(rx.clone());
        Ok(rx)
    }

    /// Forgets every change not yet checkpointed and the read cache (the state
    /// was replaced by an installed snapshot). Call after [`Records::settle`].
    pub(crate) fn reset(&mut self) {
        self.dirty.clear();
        self.dirty_bytes = 0;
        self.flushing = Arc::new(Map::default());
    }

    fn get(&self, full: &[u8]) -> Option<Vec<u8>> {
        if let Some(v) = self.dirty.get(full) {
            return v.clone();
        }
        if let Some(v) = self.flushing.get(full) {
            return v.clone();
        }
        match self.store.db().get_cf(self.store.cf(CF_STATE), full) {
            Ok(v) => v,
            Err(e) => {
                self.error.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(e);
                None
            }
        }
    }

    fn put(&mut self, full: Vec<u8>, value: Option<Vec<u8>>) {
        let key_len = full.len();
        self.dirty_bytes += footprint(&full, &value);
        if let Some(old) = self.dirty.insert(full, value) {
            // Replaced: the old record no longer takes memory.
            self.dirty_bytes -= key_len + old.map_or(0, |v| v.len()) + 64;
        }
    }

    /// The records under `full` (keys without the 6-byte partition prefix), the
    /// changes over what is stored, at most `limit`.
    fn scan(&self, full: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let pending = |m: &Map| {
            let mut v: Vec<(Vec<u8>, Option<Vec<u8>>)> =
                m.iter().filter(|(k, _)| k.starts_with(full)).map(|(k, v)| (k.clone(), v.clone())).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let (flushing, dirty) = (pending(&self.flushing), pending(&self.dirty));
        let mut out = scan_db(&self.store, full, limit.saturating_add(flushing.len() + dirty.len()), &self.error);
        for layer in [flushing, dirty] {
            for (k, v) in layer {
                // Keys start with the 6-byte partition prefix.
                let local = k.get(6..).unwrap_or_default();
                match (out.binary_search_by(|(s, _)| s.as_slice().cmp(local)), v) {
                    (Ok(i), Some(v)) => {
                        if let Some(slot) = out.get_mut(i) {
                            slot.1 = v;
                        }
                    }
                    (Ok(i), None) => {
                        out.remove(i);
                    }
                    (Err(i), Some(v)) => out.insert(i, (local.to_vec(), v)),
                    (Err(_), None) => {}
                }
            }
        }
        out.truncate(limit);
        out
    }
}

/// Writes one checkpoint: the changes in key order, and the position, in one
/// batch; then fsyncs the WAL.
fn write_checkpoint(store: &Store, group: u16, changes: &Map, meta: Vec<u8>) -> Result<(), rocksdb::Error> {
    let mut sorted: Vec<(&Vec<u8>, &Option<Vec<u8>>)> = changes.iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let cf = store.cf(CF_STATE);
    let mut batch = WriteBatch::default();
    for (k, v) in sorted {
        match v {
            Some(v) => batch.put_cf(cf, k, v),
            None => batch.delete_cf(cf, k),
        }
    }
    batch.put_cf(store.cf(CF_META), keys::meta(group, keys::SM), meta);
    store.db().write(batch)?;
    store.db().flush_wal(true)
}

/// The stored records under `full`, keys without the 6-byte partition prefix,
/// at most `limit`.
fn scan_db(store: &Store, full: &[u8], limit: usize, error: &Mutex<Option<rocksdb::Error>>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let it = store.db().iterator_cf_opt(
        store.cf(CF_STATE),
        ReadOptions::default(),
        IteratorMode::From(full, Direction::Forward),
    );
    for item in it {
        match item {
            Ok((k, v)) => {
                if !k.starts_with(full) || out.len() >= limit {
                    break;
                }
                out.push((k.get(6..).unwrap_or_default().to_vec(), v.into_vec()));
            }
            Err(e) => {
                error.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(e);
                break;
            }
        }
    }
    out
}

/// One partition's records, as its rules see them.
pub(crate) struct View<'a> {
    records: &'a mut Records,
    prefix: [u8; 6],
}

impl View<'_> {
    fn full(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(6 + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }
}

impl Kv for View<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.records.get(&self.full(key))
    }

    fn put(&mut self, key: &[u8], value: Vec<u8>) {
        let full = self.full(key);
        self.records.put(full, Some(value));
    }

    fn delete(&mut self, key: &[u8]) {
        let full = self.full(key);
        self.records.put(full, None);
    }

    fn scan(&self, prefix: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.records.scan(&self.full(prefix), limit)
    }
}
