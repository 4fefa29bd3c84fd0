//! `RaftStateMachine` of one partition: decodes each committed proposal, runs the
//! pure [`PartitionState`] over it and stores the events it produces.
//!
//! The partition state lives in memory; what is on disk is the event log (written
//! on every apply, without the WAL) and the latest snapshot of the state (written
//! synced, after the events it covers were flushed). After a restart the state is the snapshot's, and openraft
//! re-applies the committed log after it (the log store saves the committed id).
//! Applying is deterministic, so re-applied entries rewrite identical events at
//! identical offsets.

use std::io::Cursor;
use std::sync::Arc;

use chorus_partition::PartitionState;
use chorus_schema::{Command, EventRecord, PartitionId, RejectCode, Rejection};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{events, keys, Store, CF_EVENTS, CF_SNAPSHOT};
use crate::types::{Applied, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

/// What is stored for a partition's latest snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    state: PartitionState,
    /// Events `0..next_offset` belong to this snapshot.
    next_offset: u64,
}

/// What is sent to a replica that installs the snapshot: the stored snapshot and
/// every event it covers, since the replica may have none of them.
#[derive(Debug, Serialize, Deserialize)]
struct TransferSnapshot {
    stored: StoredSnapshot,
    events: Vec<Vec<u8>>,
}

/// The state machine of one partition.
pub struct StateMachine {
    partition: PartitionId,
    store: Arc<Store>,
    state: PartitionState,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    next_offset: u64,
    snapshots_built: u64,
    /// The next event offset, published after every apply (tail readers wait on it).
    offsets: watch::Sender<u64>,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("partition", &self.partition)
            .field("last_applied", &self.last_applied)
            .field("next_offset", &self.next_offset)
            .finish()
    }
}

fn sm_read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}

fn sm_write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

impl StateMachine {
    /// Loads the partition's state machine from its latest snapshot, if any.
    ///
    /// # Errors
    /// When the stored snapshot cannot be read or decoded.
    pub fn open(store: Arc<Store>, partition: PartitionId, partitions: u16) -> Result<Self, StorageError> {
        let stored = read_stored(&store, partition.0)?;
        let (state, last_applied, membership, next_offset) = match stored {
            Some(s) => (s.state, s.meta.last_log_id, s.meta.last_membership, s.next_offset),
            None => (PartitionState::new(partition, partitions), None, StoredMembership::default(), 0),
        };
        let (offsets, _) = watch::channel(next_offset);
        Ok(StateMachine { partition, store, state, last_applied, membership, next_offset, snapshots_built: 0, offsets })
    }

    /// A receiver of the partition's next event offset, updated after each apply.
    pub fn offsets(&self) -> watch::Receiver<u64> {
        self.offsets.subscribe()
    }

    fn apply_proposal(
        &mut self,
        log_id: &LogId,
        at_ms: u64,
        commands: &[Vec<u8>],
        batch: &mut WriteBatch,
    ) -> Result<Applied, StorageError> {
        let cf = self.store.cf(CF_EVENTS);
        let mut results = Vec::with_capacity(commands.len());
        let mut produced = Vec::new();
        for bytes in commands {
            // Commands were verified by the leader before proposing; a command that
            // fails to decode here is rejected the same way on every replica.
            let result = match Command::decode(bytes) {
                Ok(cmd) => self.state.apply(at_ms, &cmd, &mut produced),
                Err(e) => Err(Rejection { code: RejectCode::Invalid, message: e.to_string() }),
            };
            for event in produced.drain(..) {
                let record =
                    EventRecord { partition: self.partition, offset: self.next_offset, log_index: log_id.index, event };
                batch.put_cf(cf, keys::indexed(self.partition.0, self.next_offset), record.encode());
                self.next_offset += 1;
            }
            results.push(result);
        }
        Ok(Applied { results })
    }
}

fn read_stored(store: &Store, partition: u16) -> Result<Option<StoredSnapshot>, StorageError> {
    let cf = store.cf(CF_SNAPSHOT);
    match store.db().get_pinned_cf(cf, keys::snapshot(partition)).map_err(sm_read_err)? {
        None => Ok(None),
        Some(bytes) => bincode::deserialize(&bytes).map(Some).map_err(sm_read_err),
    }
}

/// The last log id covered by `partition`'s stored snapshot, if any.
pub(crate) fn snapshot_last_log_id(store: &Store, partition: u16) -> Result<Option<LogId>, StorageError> {
    Ok(read_stored(store, partition)?.and_then(|s| s.meta.last_log_id))
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
                EntryPayload::Normal(p) => self.apply_proposal(&entry.log_id, p.at_ms, &p.commands, &mut batch)?,
            };
            replies.push(reply);
        }
        if !batch.is_empty() {
            self.store.write_no_wal(batch).map_err(sm_write_err)?;
        }
        self.offsets.send_replace(self.next_offset);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.snapshots_built += 1;
        SnapshotBuilder {
            store: self.store.clone(),
            partition: self.partition,
            state: self.state.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            next_offset: self.next_offset,
            nonce: self.snapshots_built,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Box<Cursor<Vec<u8>>>) -> Result<(), StorageError> {
        let t: TransferSnapshot = bincode::deserialize(snapshot.get_ref())
            .map_err(|e| StorageError::from(StorageIOError::read_snapshot(Some(meta.signature()), &e)))?;
        if t.stored.meta.last_log_id != meta.last_log_id || t.events.len() as u64 != t.stored.next_offset {
            return Err(StorageIOError::read_snapshot(
                Some(meta.signature()),
                &std::io::Error::other("snapshot data does not match its metadata"),
            )
            .into());
        }
        let p = self.partition.0;
        let mut batch = WriteBatch::default();
        let cf = self.store.cf(CF_EVENTS);
        batch.delete_range_cf(cf, keys::indexed(p, 0), keys::indexed(p, u64::MAX));
        for (offset, event) in t.events.iter().enumerate() {
            batch.put_cf(cf, keys::indexed(p, offset as u64), event);
        }
        let stored = StoredSnapshot { meta: meta.clone(), ..t.stored };
        batch.put_cf(self.store.cf(CF_SNAPSHOT), keys::snapshot(p), bincode::serialize(&stored).map_err(sm_write_err)?);
        self.store.write_sync(batch).map_err(sm_write_err)?;
        tracing::info!(partition = %self.partition, snapshot = %meta, events = stored.next_offset, "snapshot installed");
        self.state = stored.state;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.next_offset = stored.next_offset;
        self.offsets.send_replace(self.next_offset);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let Some(stored) = read_stored(&self.store, self.partition.0)? else {
            return Ok(None);
        };
        // One read returns at most `READ_BYTES_MAX`: read until every event
        // the snapshot covers is in.
        let mut events = Vec::with_capacity(stored.next_offset as usize);
        while (events.len() as u64) < stored.next_offset {
            let batch = events::read_range(&self.store, self.partition, events.len() as u64, stored.next_offset, usize::MAX)
                .map_err(sm_read_err)?;
            if batch.is_empty() {
                break;
            }
            events.extend(batch);
        }
        if events.len() as u64 != stored.next_offset {
            return Err(sm_read_err(std::io::Error::other(format!(
                "partition {}: snapshot covers {} events, store has {}",
                self.partition,
                stored.next_offset,
                events.len()
            ))));
        }
        let meta = stored.meta.clone();
        let bytes = bincode::serialize(&TransferSnapshot { stored, events }).map_err(sm_read_err)?;
        Ok(Some(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) }))
    }
}

/// Builds a snapshot from a copy of the state taken when openraft asked for it.
pub struct SnapshotBuilder {
    store: Arc<Store>,
    partition: PartitionId,
    state: PartitionState,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    next_offset: u64,
    nonce: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    /// Stores the snapshot durably and returns it in stored form (state only).
    /// openraft 0.9 keeps only the metadata of a built snapshot; snapshots sent to
    /// replicas come from `get_current_snapshot`, which adds the events.
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let snapshot_id = format!(
            "{}-{}-{}",
            self.last_applied.map(|l| l.index).unwrap_or(0),
            self.nonce,
            rand::random::<u32>()
        );
        let meta = SnapshotMeta { last_log_id: self.last_applied, last_membership: self.membership.clone(), snapshot_id };
        let stored = StoredSnapshot { meta: meta.clone(), state: self.state.clone(), next_offset: self.next_offset };
        let bytes = bincode::serialize(&stored).map_err(sm_write_err)?;
        // Events up to `next_offset` were written without the WAL: put them on
        // disk before the snapshot is recorded and openraft may purge the log
        // entries that produced them.
        self.store.flush_events().map_err(sm_write_err)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.store.cf(CF_SNAPSHOT), keys::snapshot(self.partition.0), &bytes);
        self.store.write_sync(batch).map_err(sm_write_err)?;
        tracing::info!(partition = %self.partition, snapshot = %meta, "snapshot built");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}
