//! `RaftStateMachine` of one Raft group: decodes each committed proposal, runs
//! the rules of each command's partition ([`Partition`]) over it and stores the
//! events it produces, numbered per partition.
//!
//! # State on disk, memory bounded by configuration
//! The partitions' state is records in the `state` column family (the layout
//! of `chorus_partition::kv`, keys prefixed by `partition ‖ generation`), read
//! and written through [`BatchKv`]: reads see the batch's own writes first, then
//! RocksDB (memtables and block cache). Applying a batch of entries writes the
//! state records, the events and the group's [`SmMeta`] (applied log id,
//! membership, next offsets, generation) in one write batch through the WAL,
//! so that after a crash the state is exactly that of some applied index.
//!
//! # Snapshots
//! Building one is cheap: fsync the WAL and record the applied log id, since
//! the state is already on disk. Sending one to a replica streams a consistent
//! RocksDB snapshot of the group's records and events into a file (see
//! [`transfer`]); the receiver writes the records under a new generation and
//! switches to it in one synced write, so a crash mid-install leaves the old
//! state whole.

use std::collections::HashMap;
use std::sync::Arc;

use chorus_partition::{Kv, Partition};
use chorus_schema::{Command, EventRecord, GroupId, PartitionId, RejectCode, Rejection};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{keys, transfer, Store, CF_EVENTS, CF_META, CF_SNAPSHOT, CF_STATE};
use crate::types::{
    Applied, Entry, LogId, Proposal, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
    PROPOSAL_VERSION,
};

/// The format of the built-snapshot record and of snapshot files.
pub const SNAPSHOT_VERSION: u8 = 2;

/// The applied position of a group, written with every applied batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SmMeta {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// The generation of the group's state records (a snapshot install writes
    /// the next one, then switches).
    pub generation: u32,
    /// Each partition's next event offset.
    pub next_offsets: Vec<(PartitionId, u64)>,
}

pub(crate) fn sm_read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}

pub(crate) fn sm_write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn other(msg: String) -> std::io::Error {
    std::io::Error::other(msg)
}

/// The prefix of a partition's state records at `generation`.
pub(crate) fn state_prefix(p: PartitionId, generation: u32) -> [u8; 6] {
    let mut k = [0u8; 6];
    k[..2].copy_from_slice(&p.0.to_be_bytes());
    k[2..].copy_from_slice(&generation.to_be_bytes());
    k
}

pub(crate) fn read_meta_at(
    store: &Store,
    group: GroupId,
    snapshot: Option<&rocksdb::Snapshot<'_>>,
) -> Result<Option<SmMeta>, StorageError> {
    let mut ro = ReadOptions::default();
    if let Some(s) = snapshot {
        ro.set_snapshot(s);
    }
    match store.db().get_pinned_cf_opt(store.cf(CF_META), keys::meta(group.0, keys::SM), &ro).map_err(sm_read_err)? {
        None => Ok(None),
        Some(bytes) => bincode::deserialize(&bytes).map(Some).map_err(sm_read_err),
    }
}

/// One partition of the group.
struct Part {
    partition: PartitionId,
    rules: Partition,
    next_offset: u64,
    /// The next event offset, published after every apply (tail readers wait on it).
    offsets: watch::Sender<u64>,
}

/// The state machine of one Raft group.
pub struct StateMachine {
    group: GroupId,
    store: Arc<Store>,
    partitions_total: u16,
    parts: Vec<Part>,
    /// Partition id → index in `parts` (`u32::MAX`: not in this group).
    slots: Vec<u32>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    generation: u32,
    snapshots_built: u64,
    /// Whether openraft asked for the current snapshot yet (it does once at
    /// start, for its metadata only: see `get_current_snapshot`).
    asked_for_snapshot: bool,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("group", &self.group)
            .field("partitions", &self.parts.len())
            .field("last_applied", &self.last_applied)
            .finish()
    }
}

impl StateMachine {
    /// Opens the state machine of `group`, which hosts `partitions` of a cluster
    /// of `partitions_total`, at the state its records hold.
    ///
    /// # Errors
    /// When the records cannot be read or decoded, or name partitions the
    /// placement puts in another group.
    pub fn open(
        store: Arc<Store>,
        group: GroupId,
        partitions: &[PartitionId],
        partitions_total: u16,
    ) -> Result<Self, StorageError> {
        let meta = read_meta_at(&store, group, None)?.unwrap_or_default();
        let offsets: HashMap<PartitionId, u64> = meta.next_offsets.iter().copied().collect();
        if let Some(p) = offsets.keys().find(|p| !partitions.contains(p)) {
            // Moving a partition between groups is an explicit, logged step
            // (see ARCHITECTURE.md); records of another group's partition mean
            // the configuration changed under the data.
            return Err(sm_read_err(other(format!(
                "group {group}: its records hold partition {p}, which the placement puts in another group"
            ))));
        }
        // Records of a generation past the current one are left from an
        // install that did not finish: drop them.
        let mut batch = WriteBatch::default();
        for &p in partitions {
            batch.delete_range_cf(
                store.cf(CF_STATE),
                state_prefix(p, meta.generation.saturating_add(1)),
                state_prefix(p, u32::MAX),
            );
        }
        store.write(batch).map_err(sm_write_err)?;
        let mut slots = vec![u32::MAX; partitions_total as usize];
        let mut parts = Vec::with_capacity(partitions.len());
        for &p in partitions {
            let kv = ReadKv::new(&store, state_prefix(p, meta.generation));
            let rules = Partition::open(&kv, p, partitions_total);
            kv.error().map_err(sm_read_err)?;
            let next_offset = offsets.get(&p).copied().unwrap_or(0);
            slots[p.0 as usize] = parts.len() as u32;
            let (offsets, _) = watch::channel(next_offset);
            parts.push(Part { partition: p, rules, next_offset, offsets });
        }
        Ok(StateMachine {
            group,
            store,
            partitions_total,
            parts,
            slots,
            last_applied: meta.last_applied,
            membership: meta.membership,
            generation: meta.generation,
            snapshots_built: 0,
            asked_for_snapshot: false,
        })
    }

    /// A receiver of each partition's next event offset, updated after each apply.
    pub fn offsets(&self) -> Vec<(PartitionId, watch::Receiver<u64>)> {
        self.parts.iter().map(|p| (p.partition, p.offsets.subscribe())).collect()
    }

    fn slot(&self, p: PartitionId) -> Option<usize> {
        self.slots.get(p.0 as usize).filter(|s| **s != u32::MAX).map(|s| *s as usize)
    }

    fn meta(&self) -> SmMeta {
        SmMeta {
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            generation: self.generation,
            next_offsets: self.parts.iter().map(|p| (p.partition, p.next_offset)).collect(),
        }
    }

    fn apply_proposal(&mut self, log_id: &LogId, p: &Proposal, batch: &mut BatchKv<'_>) -> Result<Applied, StorageError> {
        if p.version != PROPOSAL_VERSION {
            return Err(sm_read_err(other(format!(
                "entry {log_id}: proposal format {} (this build reads {PROPOSAL_VERSION})",
                p.version
            ))));
        }
        let mut results = Vec::new();
        let mut produced = Vec::new();
        for item in p.commands.iter() {
            // The leader packed the batch; one that does not parse is damage.
            let (partition, bytes) = item.map_err(|e| sm_read_err(other(format!("entry {log_id}: {e}"))))?;
            let Some(slot) = self.slot(partition) else {
                results.push(Err(Rejection {
                    code: RejectCode::WrongPartition,
                    message: format!("partition {partition} is not hosted by group {}", self.group),
                }));
                continue;
            };
            let part = &mut self.parts[slot];
            batch.prefix = state_prefix(partition, self.generation);
            // Commands were verified by the leader before proposing; a command that
            // fails to decode here is rejected the same way on every replica.
            let result = match Command::decode(bytes) {
                Ok(cmd) => part.rules.apply(batch, p.at_ms, &cmd, &mut produced),
                Err(e) => Err(Rejection { code: RejectCode::Invalid, message: e.to_string() }),
            };
            for event in produced.drain(..) {
                let record = EventRecord { partition, offset: part.next_offset, log_index: log_id.index, event };
                batch.events.push((keys::indexed(partition.0, part.next_offset), record.encode()));
                part.next_offset += 1;
            }
            results.push(result);
        }
        Ok(Applied { results })
    }

    fn publish_offsets(&self) {
        for p in &self.parts {
            p.offsets.send_if_modified(|o| std::mem::replace(o, p.next_offset) != p.next_offset);
        }
    }
}

/// The last log id covered by `group`'s latest built snapshot, if any.
pub(crate) fn snapshot_last_log_id(store: &Store, group: u16) -> Result<Option<LogId>, StorageError> {
    let cf = store.cf(CF_SNAPSHOT);
    match store.db().get_pinned_cf(cf, keys::snapshot(group)).map_err(sm_read_err)? {
        None => Ok(None),
        Some(bytes) => {
            let b: transfer::Built = bincode::deserialize(&bytes).map_err(sm_read_err)?;
            if b.version != SNAPSHOT_VERSION {
                return Err(sm_read_err(other(format!(
                    "snapshot record format {} (this build reads {SNAPSHOT_VERSION})",
                    b.version
                ))));
            }
            Ok(b.meta.last_log_id)
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let store = self.store.clone();
        let mut batch = BatchKv::new(&store);
        let mut replies = Vec::new();
        for entry in entries {
            if let Some(prev) = self.last_applied {
                assert!(entry.log_id.index > prev.index, "apply out of order: {} after {prev}", entry.log_id);
            }
            self.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Applied::default(),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    Applied::default()
                }
                EntryPayload::Normal(p) => self.apply_proposal(&entry.log_id, &p, &mut batch)?,
            };
            replies.push(reply);
        }
        let meta = bincode::serialize(&self.meta()).map_err(sm_write_err)?;
        batch.commit((keys::meta(self.group.0, keys::SM), meta)).map_err(sm_write_err)?;
        self.publish_offsets();
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.snapshots_built += 1;
        SnapshotBuilder {
            store: self.store.clone(),
            group: self.group,
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            nonce: self.snapshots_built,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let file = tempfile::tempfile_in(self.store.path()).map_err(sm_write_err)?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Box<tokio::fs::File>) -> Result<(), StorageError> {
        let file = (*snapshot).into_std().await;
        let store = self.store.clone();
        let group = self.group;
        let partitions: Vec<PartitionId> = self.parts.iter().map(|p| p.partition).collect();
        let generation = self.generation.checked_add(1).ok_or_else(|| sm_write_err(other("state generations exhausted".into())))?;
        let expect = meta.clone();
        // Reading a file and writing RocksDB batches: blocking work, off the
        // async workers.
        let installed = tokio::task::spawn_blocking(move || transfer::install(&store, group, &partitions, generation, &expect, file))
            .await
            .map_err(|e| sm_write_err(other(format!("snapshot install task: {e}"))))??;
        tracing::info!(
            group = %self.group,
            snapshot = %meta,
            events = installed.next_offsets.iter().map(|(_, n)| n).sum::<u64>(),
            "snapshot installed"
        );
        self.generation = installed.generation;
        self.last_applied = installed.last_applied;
        self.membership = installed.membership;
        let offsets: HashMap<PartitionId, u64> = installed.next_offsets.into_iter().collect();
        for part in &mut self.parts {
            part.next_offset = offsets[&part.partition];
            let kv = ReadKv::new(&self.store, state_prefix(part.partition, self.generation));
            part.rules = Partition::open(&kv, part.partition, self.partitions_total);
            kv.error().map_err(sm_read_err)?;
        }
        self.publish_offsets();
        Ok(())
    }

    /// openraft asks once at start, for the metadata only: it then gets none,
    /// and builds a snapshot (cheap) if its log was purged. Every later request
    /// is a replica to be sent the current state: a consistent RocksDB snapshot
    /// of the group's records and events, streamed into a file.
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        if !std::mem::replace(&mut self.asked_for_snapshot, true) {
            return Ok(None);
        }
        let store = self.store.clone();
        let group = self.group;
        let nonce = rand::random::<u32>();
        let made = tokio::task::spawn_blocking(move || transfer::write(&store, group, nonce))
            .await
            .map_err(|e| sm_read_err(other(format!("snapshot file task: {e}"))))??;
        Ok(made.map(|(meta, file)| Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) }))
    }
}

/// Records that the state of an applied index is on disk.
pub struct SnapshotBuilder {
    store: Arc<Store>,
    group: GroupId,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    nonce: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    /// The state is records on disk already: fsync the WAL (everything applied
    /// up to `last_applied` is in it) and record the metadata. openraft 0.9 keeps
    /// only the metadata of a built snapshot: the data returned is an empty
    /// file; snapshots sent to replicas come from `get_current_snapshot`.
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let snapshot_id = format!(
            "{}-{}-{}",
            self.last_applied.map(|l| l.index).unwrap_or(0),
            self.nonce,
            rand::random::<u32>()
        );
        let meta = SnapshotMeta { last_log_id: self.last_applied, last_membership: self.membership.clone(), snapshot_id };
        let built = bincode::serialize(&transfer::Built { version: SNAPSHOT_VERSION, meta: meta.clone() }).map_err(sm_write_err)?;
        let store = self.store.clone();
        let group = self.group;
        let empty = tokio::task::spawn_blocking(move || -> Result<std::fs::File, StorageError> {
            store.sync_wal().map_err(sm_write_err)?;
            let mut batch = WriteBatch::default();
            batch.put_cf(store.cf(CF_SNAPSHOT), keys::snapshot(group.0), &built);
            store.write_sync(batch).map_err(sm_write_err)?;
            tempfile::tempfile_in(store.path()).map_err(sm_write_err)
        })
        .await
        .map_err(|e| sm_write_err(other(format!("snapshot build task: {e}"))))??;
        tracing::debug!(group = %self.group, snapshot = %meta, "snapshot built");
        Ok(Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(empty)) })
    }
}

/// The writes of one apply: the state records' final values (an overlay
/// that later commands of the batch read first) and the events. Each command
/// runs with `prefix` set to its partition's.
///
/// The write batch is built at commit, in key order: RocksDB inserts a batch's
/// keys into its memtable skip list one after the other, and a key next to the
/// previous one is found from there instead of from the top (measured: random
/// order made the skip list insert the node's largest cost). A record written
/// many times in one batch (a busy chat's head) is written once.
pub(crate) struct BatchKv<'a> {
    store: &'a Store,
    overlay: HashMap<Vec<u8>, Option<Vec<u8>>>,
    pub(crate) events: Vec<([u8; 10], Vec<u8>)>,
    pub(crate) prefix: [u8; 6],
    error: std::cell::RefCell<Option<rocksdb::Error>>,
}

impl<'a> BatchKv<'a> {
    fn new(store: &'a Store) -> Self {
        BatchKv { store, overlay: HashMap::new(), events: Vec::new(), prefix: [0; 6], error: Default::default() }
    }

    fn full(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(6 + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }

    /// Writes the records, the events and `meta` (the group's position, in
    /// `CF_META`) in one batch through the WAL, unsynced, unless a read
    /// failed: decisions made on a failed read must not be stored.
    fn commit(self, meta: ([u8; 3], Vec<u8>)) -> Result<(), rocksdb::Error> {
        if let Some(e) = self.error.into_inner() {
            return Err(e);
        }
        let mut records: Vec<(Vec<u8>, Option<Vec<u8>>)> = self.overlay.into_iter().collect();
        records.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut events = self.events;
        events.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut batch = WriteBatch::default();
        let state = self.store.cf(CF_STATE);
        for (k, v) in &records {
            match v {
                Some(v) => batch.put_cf(state, k, v),
                None => batch.delete_cf(state, k),
            }
        }
        let cf = self.store.cf(CF_EVENTS);
        for (k, v) in &events {
            batch.put_cf(cf, k, v);
        }
        batch.put_cf(self.store.cf(CF_META), meta.0, meta.1);
        self.store.db().write(batch)
    }
}

impl Kv for BatchKv<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let full = self.full(key);
        if let Some(v) = self.overlay.get(&full) {
            return v.clone();
        }
        match self.store.db().get_cf(self.store.cf(CF_STATE), &full) {
            Ok(v) => v,
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e);
                None
            }
        }
    }

    fn put(&mut self, key: &[u8], value: Vec<u8>) {
        let full = self.full(key);
        self.overlay.insert(full, Some(value));
    }

    fn delete(&mut self, key: &[u8]) {
        let full = self.full(key);
        self.overlay.insert(full, None);
    }

    fn scan(&self, prefix: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let full = self.full(prefix);
        let mut pending: Vec<(&Vec<u8>, &Option<Vec<u8>>)> = self.overlay.iter().filter(|(k, _)| k.starts_with(&full)).collect();
        pending.sort_by(|a, b| a.0.cmp(b.0));
        let mut stored = scan_db(self.store, &full, None, limit.saturating_add(pending.len()), &self.error);
        // The overlay wins over what is stored.
        for (k, v) in pending {
            match stored.binary_search_by(|(s, _)| s.as_slice().cmp(&k[6..])) {
                Ok(i) => match v {
                    Some(v) => stored[i].1 = v.clone(),
                    None => {
                        stored.remove(i);
                    }
                },
                Err(i) => {
                    if let Some(v) = v {
                        stored.insert(i, (k[6..].to_vec(), v.clone()));
                    }
                }
            }
        }
        stored.truncate(limit);
        stored
    }
}

/// The stored records under `full` (partition prefix ‖ local prefix), keys
/// without the 6-byte partition prefix, at most `limit`.
fn scan_db(
    store: &Store,
    full: &[u8],
    snapshot: Option<&rocksdb::Snapshot<'_>>,
    limit: usize,
    error: &std::cell::RefCell<Option<rocksdb::Error>>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut ro = ReadOptions::default();
    if let Some(s) = snapshot {
        ro.set_snapshot(s);
    }
    let mut out = Vec::new();
    let it = store.db().iterator_cf_opt(store.cf(CF_STATE), ro, IteratorMode::From(full, Direction::Forward));
    for item in it {
        match item {
            Ok((k, v)) => {
                if !k.starts_with(full) || out.len() >= limit {
                    break;
                }
                out.push((k[6..].to_vec(), v.into_vec()));
            }
            Err(e) => {
                error.borrow_mut().get_or_insert(e);
                break;
            }
        }
    }
    out
}

/// Reads one partition's records straight from RocksDB (no writes).
pub(crate) struct ReadKv<'a> {
    store: &'a Store,
    prefix: [u8; 6],
    error: std::cell::RefCell<Option<rocksdb::Error>>,
}

impl<'a> ReadKv<'a> {
    pub(crate) fn new(store: &'a Store, prefix: [u8; 6]) -> Self {
        ReadKv { store, prefix, error: Default::default() }
    }

    pub(crate) fn error(self) -> Result<(), rocksdb::Error> {
        self.error.into_inner().map_or(Ok(()), Err)
    }
}

impl Kv for ReadKv<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let mut full = self.prefix.to_vec();
        full.extend_from_slice(key);
        match self.store.db().get_cf(self.store.cf(CF_STATE), &full) {
            Ok(v) => v,
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e);
                None
            }
        }
    }

    fn put(&mut self, _: &[u8], _: Vec<u8>) {
        unreachable!("ReadKv is read-only: rules are only opened through it")
    }

    fn delete(&mut self, _: &[u8]) {
        unreachable!("ReadKv is read-only: rules are only opened through it")
    }

    fn scan(&self, prefix: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut full = self.prefix.to_vec();
        full.extend_from_slice(prefix);
        scan_db(self.store, &full, None, limit, &self.error)
    }
}
