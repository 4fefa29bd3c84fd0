//! `RaftStateMachine` of one Raft group: decodes each committed proposal, runs
//! the pure [`PartitionState`] of each command's partition over it and stores
//! the events it produces, numbered per partition.
//!
//! The partition states live in memory; what is on disk is the event log
//! (written on every apply, without the WAL) and the latest snapshot of the
//! states (written synced, after the events it covers were flushed). After a
//! restart the states are the snapshot's, and openraft re-applies the committed
//! log after it (the log store saves the committed id). Applying is
//! deterministic, so re-applied entries rewrite identical events at identical
//! offsets.
//!
//! # Snapshots on the wire
//! A replica that installs a snapshot may hold none of the events it covers,
//! so the snapshot sent carries them all: it is a file (see [`transfer`]),
//! written by streaming the events out of RocksDB and read back in chunks by
//! openraft's chunked transport; the receiver gets a file too, verifies its
//! checksum in a first pass and streams the events into RocksDB in bounded
//! write batches in a second. Neither side holds the event history in memory.
//! Files are unnamed (`O_TMPFILE`): a crash leaves nothing behind.

use std::collections::BTreeMap;
use std::sync::Arc;

use chorus_partition::PartitionState;
use chorus_schema::{Command, EventRecord, GroupId, PartitionId, RejectCode, Rejection};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{keys, transfer, Store, CF_EVENTS, CF_SNAPSHOT};
use crate::types::{
    Applied, Entry, LogId, Proposal, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
    PROPOSAL_VERSION,
};

/// The format of the stored snapshot record and of snapshot files.
pub const SNAPSHOT_VERSION: u8 = 1;

/// One partition's part of a snapshot: its state, and the offset its next
/// event gets (events `0..next_offset` belong to the snapshot).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StoredPart {
    pub partition: PartitionId,
    pub next_offset: u64,
    pub state: PartitionState,
}

/// What is stored for a group's latest snapshot. `version` and `meta` come
/// first, so that they can be read without decoding the states.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StoredSnapshot {
    pub version: u8,
    pub meta: SnapshotMeta,
    pub parts: Vec<StoredPart>,
}

/// One partition of the group.
struct Part {
    partition: PartitionId,
    state: PartitionState,
    next_offset: u64,
    /// The next event offset, published after every apply (tail readers wait on it).
    offsets: watch::Sender<u64>,
}

/// The state machine of one Raft group.
pub struct StateMachine {
    group: GroupId,
    store: Arc<Store>,
    parts: Vec<Part>,
    /// Partition id → index in `parts` (`u32::MAX`: not in this group).
    slots: Vec<u32>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshots_built: u64,
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

pub(crate) fn sm_read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}

pub(crate) fn sm_write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn other(msg: String) -> std::io::Error {
    std::io::Error::other(msg)
}

impl StateMachine {
    /// Loads the state machine of `group`, which hosts `partitions` of a cluster
    /// of `partitions_total`, from its latest snapshot, if any.
    ///
    /// # Errors
    /// When the stored snapshot cannot be read or decoded, is of another
    /// format version, or covers other partitions than `partitions`.
    pub fn open(
        store: Arc<Store>,
        group: GroupId,
        partitions: &[PartitionId],
        partitions_total: u16,
    ) -> Result<Self, StorageError> {
        let stored = read_stored(&store, group)?;
        let (last_applied, membership, mut saved) = match stored {
            Some(s) => {
                let saved: BTreeMap<PartitionId, StoredPart> = s.parts.into_iter().map(|p| (p.partition, p)).collect();
                (s.meta.last_log_id, s.meta.last_membership, saved)
            }
            None => (None, StoredMembership::default(), BTreeMap::new()),
        };
        let mut slots = vec![u32::MAX; partitions_total as usize];
        let mut parts = Vec::with_capacity(partitions.len());
        for &p in partitions {
            let (state, next_offset) = match saved.remove(&p) {
                Some(s) => (s.state, s.next_offset),
                None => (PartitionState::new(p, partitions_total), 0),
            };
            slots[p.0 as usize] = parts.len() as u32;
            let (offsets, _) = watch::channel(next_offset);
            parts.push(Part { partition: p, state, next_offset, offsets });
        }
        if let Some(p) = saved.keys().next() {
            // Moving a partition between groups is an explicit, logged step
            // (see ARCHITECTURE.md); a snapshot holding another group's
            // partition means the configuration changed under the data.
            return Err(sm_read_err(other(format!(
                "group {group}: snapshot holds partition {p}, which the placement puts in another group"
            ))));
        }
        Ok(StateMachine { group, store, parts, slots, last_applied, membership, snapshots_built: 0 })
    }

    /// A receiver of each partition's next event offset, updated after each apply.
    pub fn offsets(&self) -> Vec<(PartitionId, watch::Receiver<u64>)> {
        self.parts.iter().map(|p| (p.partition, p.offsets.subscribe())).collect()
    }

    fn slot(&self, p: PartitionId) -> Option<usize> {
        self.slots.get(p.0 as usize).filter(|s| **s != u32::MAX).map(|s| *s as usize)
    }

    fn apply_proposal(&mut self, log_id: &LogId, p: &Proposal, batch: &mut WriteBatch) -> Result<Applied, StorageError> {
        if p.version != PROPOSAL_VERSION {
            return Err(sm_read_err(other(format!(
                "entry {log_id}: proposal format {} (this build reads {PROPOSAL_VERSION})",
                p.version
            ))));
        }
        let cf = self.store.cf(CF_EVENTS);
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
            // Commands were verified by the leader before proposing; a command that
            // fails to decode here is rejected the same way on every replica.
            let result = match Command::decode(bytes) {
                Ok(cmd) => part.state.apply(p.at_ms, &cmd, &mut produced),
                Err(e) => Err(Rejection { code: RejectCode::Invalid, message: e.to_string() }),
            };
            for event in produced.drain(..) {
                let record = EventRecord { partition, offset: part.next_offset, log_index: log_id.index, event };
                batch.put_cf(cf, keys::indexed(partition.0, part.next_offset), record.encode());
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

fn read_stored(store: &Store, group: GroupId) -> Result<Option<StoredSnapshot>, StorageError> {
    let cf = store.cf(CF_SNAPSHOT);
    match store.db().get_pinned_cf(cf, keys::snapshot(group.0)).map_err(sm_read_err)? {
        None => Ok(None),
        Some(bytes) => {
            let s: StoredSnapshot = bincode::deserialize(&bytes).map_err(sm_read_err)?;
            check_version(s.version)?;
            Ok(Some(s))
        }
    }
}

fn check_version(v: u8) -> Result<(), StorageError> {
    if v == SNAPSHOT_VERSION {
        return Ok(());
    }
    Err(sm_read_err(other(format!("snapshot format {v} (this build reads {SNAPSHOT_VERSION})"))))
}

/// The last log id covered by `group`'s stored snapshot, if any (reads the
/// record's head only).
pub(crate) fn snapshot_last_log_id(store: &Store, group: u16) -> Result<Option<LogId>, StorageError> {
    let cf = store.cf(CF_SNAPSHOT);
    match store.db().get_pinned_cf(cf, keys::snapshot(group)).map_err(sm_read_err)? {
        None => Ok(None),
        Some(bytes) => {
            let (version, meta): (u8, SnapshotMeta) = bincode::deserialize(&bytes).map_err(sm_read_err)?;
            check_version(version)?;
            Ok(meta.last_log_id)
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
        let mut batch = WriteBatch::default();
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
        if !batch.is_empty() {
            self.store.write_no_wal(batch).map_err(sm_write_err)?;
        }
        self.publish_offsets();
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.snapshots_built += 1;
        SnapshotBuilder {
            store: self.store.clone(),
            group: self.group,
            parts: self
                .parts
                .iter()
                .map(|p| StoredPart { partition: p.partition, next_offset: p.next_offset, state: p.state.clone() })
                .collect(),
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
        let slots = self.slots.clone();
        let expect = meta.clone();
        // Reading a file and writing RocksDB batches: blocking work, off the
        // async workers.
        let stored = tokio::task::spawn_blocking(move || transfer::install(&store, group, &slots, &expect, file))
            .await
            .map_err(|e| sm_write_err(other(format!("snapshot install task: {e}"))))??;
        tracing::info!(
            group = %self.group,
            snapshot = %meta,
            events = stored.parts.iter().map(|p| p.next_offset).sum::<u64>(),
            "snapshot installed"
        );
        let mut saved: BTreeMap<PartitionId, StoredPart> = stored.parts.into_iter().map(|p| (p.partition, p)).collect();
        for part in &mut self.parts {
            let s = saved.remove(&part.partition).expect("install checked that the snapshot covers every partition");
            part.state = s.state;
            part.next_offset = s.next_offset;
        }
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.publish_offsets();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let store = self.store.clone();
        let group = self.group;
        let file = tokio::task::spawn_blocking(move || -> Result<_, StorageError> {
            let Some(stored) = read_stored(&store, group)? else { return Ok(None) };
            let meta = stored.meta.clone();
            Ok(Some((meta, transfer::write(&store, &stored)?)))
        })
        .await
        .map_err(|e| sm_read_err(other(format!("snapshot file task: {e}"))))??;
        Ok(file.map(|(meta, file)| Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) }))
    }
}

/// Builds a snapshot from a copy of the states taken when openraft asked for it.
pub struct SnapshotBuilder {
    store: Arc<Store>,
    group: GroupId,
    parts: Vec<StoredPart>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    nonce: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    /// Stores the snapshot durably. openraft 0.9 keeps only the metadata of a
    /// built snapshot: the returned data is an empty file, and snapshots sent
    /// to replicas come from `get_current_snapshot`, which adds the events.
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let snapshot_id = format!(
            "{}-{}-{}",
            self.last_applied.map(|l| l.index).unwrap_or(0),
            self.nonce,
            rand::random::<u32>()
        );
        let meta = SnapshotMeta { last_log_id: self.last_applied, last_membership: self.membership.clone(), snapshot_id };
        let stored = StoredSnapshot { version: SNAPSHOT_VERSION, meta: meta.clone(), parts: std::mem::take(&mut self.parts) };
        let store = self.store.clone();
        let group = self.group;
        let empty = tokio::task::spawn_blocking(move || -> Result<std::fs::File, StorageError> {
            let bytes = bincode::serialize(&stored).map_err(sm_write_err)?;
            // Events up to each `next_offset` were written without the WAL: put
            // them on disk before the snapshot is recorded and openraft may purge
            // the log entries that produced them.
            store.flush_events().map_err(sm_write_err)?;
            let mut batch = WriteBatch::default();
            batch.put_cf(store.cf(CF_SNAPSHOT), keys::snapshot(group.0), &bytes);
            store.write_sync(batch).map_err(sm_write_err)?;
            tempfile::tempfile_in(store.path()).map_err(sm_write_err)
        })
        .await
        .map_err(|e| sm_write_err(other(format!("snapshot build task: {e}"))))??;
        tracing::info!(group = %self.group, snapshot = %meta, "snapshot built");
        Ok(Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(empty)) })
    }
}
