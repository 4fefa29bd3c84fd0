//! `RaftStateMachine` of one Raft group: decodes each committed proposal, runs
//! the rules of each command's partition ([`Partition`]) over it and stores the
//! events it produces, numbered per partition.
//!
//! # State on disk, memory bounded by configuration
//! The partitions' state is records in the `state` column family (the layout
//! of `chorus_partition::kv`, keys prefixed by `partition ‖ generation`), as of
//! the group's last checkpoint, plus the changes since, in memory and bounded
//! (see [`records`](super::records)). Events are written with every applied
//! batch (through the WAL, unsynced). A checkpoint writes the changes and the
//! group's applied position ([`SmMeta`]) in one batch and fsyncs: after a crash
//! the state is that of the last checkpoint, and openraft re-applies the log
//! after it, rewriting the same events at the same offsets.
//!
//! # Snapshots
//! Building one is a checkpoint and a record of its position. Sending one to a
//! replica streams a consistent RocksDB snapshot of the group's records and
//! events (just checkpointed) into a file (see [`transfer`]); the receiver
//! writes the records under a new generation and switches to it in one synced
//! write, so a crash mid-install leaves the old state whole.

use std::collections::HashMap;
use std::sync::Arc;

use chorus_partition::Partition;
use chorus_schema::{Command, EventRecord, GroupId, LogIndex, Offset, PartitionId, RejectCode, Rejection};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use rocksdb::{ReadOptions, WriteBatch};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::records::{Done, Records};
use super::{keys, transfer, Store, CF_EVENTS, CF_META, CF_SNAPSHOT, CF_STATE};
use crate::types::{
    Applied, Entry, LogId, Proposal, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
    PROPOSAL_VERSION,
};

/// The id of the snapshot of a group's state at `last_applied`: the state is
/// a function of the committed log, so equal positions have equal states (on
/// every replica) and equal ids.
pub(crate) fn snapshot_id(last_applied: Option<LogId>) -> String {
    match last_applied {
        Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
        None => "empty".to_string(),
    }
}

/// The format of the built-snapshot record and of snapshot files.
pub const SNAPSHOT_VERSION: u8 = 2;

/// The applied position of a group, written with every checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SmMeta {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// The generation of the group's state records (a snapshot install writes
    /// the next one, then switches).
    pub generation: u32,
    /// Each partition's next event offset.
    pub next_offsets: Vec<(PartitionId, Offset)>,
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

#[expect(clippy::result_large_err, reason = "StorageError is openraft's error type, dictated by its storage traits")]
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
    next_offset: Offset,
    /// The next event offset, published after every apply (tail readers wait on it).
    offsets: watch::Sender<Offset>,
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
    records: Records,
    /// Nothing was applied, installed or built since the state machine was
    /// opened: openraft is still starting (see `get_current_snapshot`).
    fresh: bool,
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
    #[expect(
        clippy::result_large_err,
        reason = "StorageError is openraft's error type, dictated by its storage traits"
    )]
    pub fn open(
        store: Arc<Store>,
        group: GroupId,
        partitions: &[PartitionId],
        partitions_total: u16,
    ) -> Result<Self, StorageError> {
        let meta = read_meta_at(&store, group, None)?.unwrap_or_default();
        let offsets: HashMap<PartitionId, Offset> = meta.next_offsets.iter().copied().collect();
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
        let mut records = Records::new(store.clone(), group.0);
        let mut slots = vec![u32::MAX; partitions_total as usize];
        let mut parts = Vec::with_capacity(partitions.len());
        for &p in partitions {
            let rules = Partition::open(&records.view(state_prefix(p, meta.generation)), p, partitions_total);
            records.take_error()?;
            let next_offset = offsets.get(&p).copied().unwrap_or_default();
            let slot = slots.get_mut(p.0 as usize).ok_or_else(|| {
                sm_read_err(other(format!("group {group}: partition {p} is not below {partitions_total}")))
            })?;
            *slot = u32::try_from(parts.len()).map_err(sm_read_err)?;
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
            records,
            fresh: true,
        })
    }

    /// Changes kept in memory before a checkpoint writes them (default
    /// [`records::CHECKPOINT_BYTES_MAX`](super::records::CHECKPOINT_BYTES_MAX)).
    pub fn set_checkpoint_bytes_max(&mut self, bytes: usize) {
        self.records.checkpoint_bytes_max = bytes;
    }

    /// A receiver of each partition's next event offset, updated after each apply.
    pub fn offsets(&self) -> Vec<(PartitionId, watch::Receiver<Offset>)> {
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

    #[expect(
        clippy::result_large_err,
        reason = "StorageError is openraft's error type, dictated by its storage traits"
    )]
    fn apply_proposal(
        &mut self,
        log_id: &LogId,
        p: &Proposal,
        events: &mut Vec<([u8; 10], Vec<u8>)>,
    ) -> Result<Applied, StorageError> {
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
            let part = self
                .parts
                .get_mut(slot)
                .ok_or_else(|| sm_read_err(other(format!("partition {partition}: slot {slot} has no part"))))?;
            let mut view = self.records.view(state_prefix(partition, self.generation));
            // Commands were verified by the leader before proposing; a command that
            // fails to decode here is rejected the same way on every replica.
            let result = match Command::decode(bytes) {
                Ok(cmd) => part.rules.apply(&mut view, p.at_ms, &cmd, &mut produced),
                Err(e) => Err(Rejection { code: RejectCode::Invalid, message: e.to_string() }),
            };
            for event in produced.drain(..) {
                let record =
                    EventRecord { partition, offset: part.next_offset, log_index: LogIndex(log_id.index), event };
                events.push((keys::indexed(partition.0, part.next_offset.0), record.encode()));
                part.next_offset = part.next_offset.next();
            }
            results.push(result);
        }
        Ok(Applied { results })
    }

    /// Starts a checkpoint at the current position.
    async fn checkpoint(&mut self) -> Result<Done, StorageError> {
        let meta = self.meta();
        self.records.checkpoint(&meta).await
    }

    fn publish_offsets(&self) {
        for p in &self.parts {
            p.offsets.send_if_modified(|o| std::mem::replace(o, p.next_offset) != p.next_offset);
        }
    }
}

/// The last log id covered by `group`'s latest built snapshot, if any.
#[expect(clippy::result_large_err, reason = "StorageError is openraft's error type, dictated by its storage traits")]
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
        self.fresh = false;
        let mut events = Vec::new();
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
                EntryPayload::Normal(p) => self.apply_proposal(&entry.log_id, &p, &mut events)?,
            };
            replies.push(reply);
        }
        // Decisions made on a failed read must not be stored.
        self.records.take_error()?;
        if !events.is_empty() {
            // In key order: each memtable insert starts where the previous one went.
            events.sort_unstable_by_key(|e| e.0);
            let mut batch = WriteBatch::default();
            let cf = self.store.cf(CF_EVENTS);
            for (k, v) in &events {
                batch.put_cf(cf, k, v);
            }
            self.store.write(batch).map_err(sm_write_err)?;
        }
        self.publish_offsets();
        if self.records.needs_checkpoint() {
            self.checkpoint().await?;
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.fresh = false;
        SnapshotBuilder {
            store: self.store.clone(),
            group: self.group,
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            checkpoint: Some(self.checkpoint().await),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        tracing::info!(group = %self.group, "receiving a snapshot");
        let file = tempfile::tempfile_in(self.store.path()).map_err(sm_write_err)?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        self.fresh = false;
        let file = (*snapshot).into_std().await;
        // The installed state replaces everything: nothing of the old may be
        // written after it.
        self.records.settle().await?;
        let store = self.store.clone();
        let group = self.group;
        let partitions: Vec<PartitionId> = self.parts.iter().map(|p| p.partition).collect();
        let generation =
            self.generation.checked_add(1).ok_or_else(|| sm_write_err(other("state generations exhausted".into())))?;
        let expect = meta.clone();
        // Reading a file and writing RocksDB batches: blocking work, off the
        // async workers.
        #[expect(
            clippy::result_large_err,
            reason = "StorageError is openraft's error type, dictated by its storage traits"
        )]
        let installed = tokio::task::spawn_blocking(move || {
            transfer::install(&store, group, &partitions, generation, &expect, file)
        })
        .await
        .map_err(|e| sm_write_err(other(format!("snapshot install task: {e}"))))??;
        tracing::info!(
            group = %self.group,
            snapshot = %meta,
            events = installed.next_offsets.iter().map(|(_, n)| n.0).sum::<u64>(),
            "snapshot installed"
        );
        crate::metrics::snapshot(self.group, crate::metrics::SnapshotKind::Installed);
        self.records.reset();
        self.generation = installed.generation;
        self.last_applied = installed.last_applied;
        self.membership = installed.membership;
        let offsets: HashMap<PartitionId, Offset> = installed.next_offsets.into_iter().collect();
        for part in &mut self.parts {
            // `install` checked that the snapshot holds exactly this group's partitions.
            part.next_offset = offsets.get(&part.partition).copied().ok_or_else(|| {
                sm_write_err(other(format!("snapshot install: no offset for partition {}", part.partition)))
            })?;
            let view = self.records.view(state_prefix(part.partition, self.generation));
            part.rules = Partition::open(&view, part.partition, self.partitions_total);
            self.records.take_error()?;
        }
        self.publish_offsets();
        Ok(())
    }

    /// The current state: after a checkpoint, a consistent RocksDB snapshot of
    /// the group's records and events, streamed into a file, named by its
    /// position (so a snapshot built at the same position has the same id).
    ///
    /// openraft 0.9 also asks once while it starts, for the metadata alone;
    /// writing the whole history into a file for that would make every start
    /// as slow as the history is long. A state machine that has done nothing
    /// since it was opened answers none: openraft then builds a snapshot (a
    /// checkpoint, cheap) if its log was purged.
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        if self.fresh {
            return Ok(None);
        }
        self.checkpoint().await?;
        self.records.settle().await?;
        let store = self.store.clone();
        let group = self.group;
        #[expect(
            clippy::result_large_err,
            reason = "StorageError is openraft's error type, dictated by its storage traits"
        )]
        let made = tokio::task::spawn_blocking(move || transfer::write(&store, group))
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
    /// The checkpoint of `last_applied`, started when openraft asked for the builder.
    checkpoint: Option<Result<Done, StorageError>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    /// Waits for the checkpoint of `last_applied`, then records the metadata.
    /// openraft 0.9 keeps only the metadata of a built snapshot: the data
    /// returned is an empty file; snapshots sent to replicas come from
    /// `get_current_snapshot`.
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let mut done =
            self.checkpoint.take().ok_or_else(|| sm_write_err(other("snapshot builder used twice".into())))??;
        match done.wait_for(Option::is_some).await.map(|r| r.clone()) {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => return Err(sm_write_err(other(format!("checkpoint: {e}")))),
            Ok(None) | Err(_) => return Err(sm_write_err(other("checkpoint task dropped".into()))),
        }
        let snapshot_id = snapshot_id(self.last_applied);
        let meta =
            SnapshotMeta { last_log_id: self.last_applied, last_membership: self.membership.clone(), snapshot_id };
        let built = bincode::serialize(&transfer::Built { version: SNAPSHOT_VERSION, meta: meta.clone() })
            .map_err(sm_write_err)?;
        let store = self.store.clone();
        let group = self.group;
        #[expect(
            clippy::result_large_err,
            reason = "StorageError is openraft's error type, dictated by its storage traits"
        )]
        let empty = tokio::task::spawn_blocking(move || -> Result<std::fs::File, StorageError> {
            let mut batch = WriteBatch::default();
            batch.put_cf(store.cf(CF_SNAPSHOT), keys::snapshot(group.0), &built);
            store.write_sync(batch).map_err(sm_write_err)?;
            tempfile::tempfile_in(store.path()).map_err(sm_write_err)
        })
        .await
        .map_err(|e| sm_write_err(other(format!("snapshot build task: {e}"))))??;
        tracing::debug!(group = %self.group, snapshot = %meta, "snapshot built");
        crate::metrics::snapshot(self.group, crate::metrics::SnapshotKind::Built);
        Ok(Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(empty)) })
    }
}
