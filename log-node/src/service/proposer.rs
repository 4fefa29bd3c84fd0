//! The leader's proposer: merges the appends of all of a group's partitions
//! that wait while earlier proposals are in flight into one Raft entry.
//!
//! openraft 0.9 waits for each log fsync inside its core, so the cost of an
//! entry (a core wake-up, an fsync wait, an AppendEntries exchange, an apply
//! on every replica) is paid per `client_write`. Merging happens before it:
//! like Redpanda's replicate batcher or Kafka's linger, but without a timer —
//! an append that finds a free proposal slot leaves at once, and appends that
//! arrive while every slot is taken leave together in the next entry, so
//! entries grow exactly as fast as load does.
//!
//! Bounds: an entry holds at most `proposal_bytes_max` command bytes (and at
//! least one append), at most `proposals_in_flight_max` entries of the group
//! are in flight, and at most `queue_bytes_max` bytes wait; beyond that an
//! append is refused with [`Error::Overloaded`], which clients retry.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use chorus_schema::{AppendCommand, CommandResult, GroupId};
use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::config::ProposerConfig;
use crate::types::{Batch, BatchBuilder, NodeAddr, Proposal, Raft};

/// Why an append was not committed through this proposer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("this node does not lead group")]
    NotLeader(ForwardToLeader<u64, NodeAddr>),
    #[error("group {group}: {queued} bytes of appends wait for a proposal, limit {limit}")]
    Overloaded { group: GroupId, queued: usize, limit: usize },
    /// The outcome is unknown (the core stopped, the proposal was dropped).
    #[error("{0}")]
    Unavailable(String),
}

struct Pending {
    commands: Vec<AppendCommand>,
    bytes: usize,
    reply: oneshot::Sender<Result<Vec<CommandResult>, Error>>,
}

/// Handle of one group's proposer task; cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    group: GroupId,
    tx: mpsc::UnboundedSender<Pending>,
    queued: Arc<AtomicUsize>,
    queue_bytes_max: usize,
    /// The group's append counter and commit latency histogram.
    pub(crate) metrics: crate::metrics::GroupMetrics,
}

impl std::fmt::Debug for Proposer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proposer")
            .field("group", &self.group)
            .field("queued", &self.queued.load(Ordering::Relaxed))
            .finish()
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

impl Proposer {
    /// Starts the proposer of `group`, proposing to `raft`. It stops when every
    /// handle is dropped.
    pub fn start(group: GroupId, raft: Raft, config: &ProposerConfig) -> Proposer {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        tokio::spawn(run(group, raft, rx, queued.clone(), config.clone()));
        Proposer {
            group,
            tx,
            queued,
            queue_bytes_max: config.queue_bytes_max,
            metrics: crate::metrics::GroupMetrics::new(group),
        }
    }

    /// Appends `commands` (all of this group's partitions) in the next
    /// proposal and returns their results, in order, once it is applied.
    ///
    /// # Errors
    /// [`Error::NotLeader`] with the leader's hint, [`Error::Overloaded`],
    /// or [`Error::Unavailable`] when the outcome is unknown.
    pub async fn propose(&self, commands: Vec<AppendCommand>) -> Result<Vec<CommandResult>, Error> {
        let bytes = commands.iter().map(|c| Batch::encoded_len(&c.bytes)).sum();
        let queued = self.queued.fetch_add(bytes, Ordering::AcqRel);
        if queued > 0 && queued + bytes > self.queue_bytes_max {
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
            return Err(Error::Overloaded { group: self.group, queued, limit: self.queue_bytes_max });
        }
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Pending { commands, bytes, reply }).is_err() {
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
            return Err(Error::Unavailable(format!("group {}: proposer stopped", self.group)));
        }
        rx.await.map_err(|_| Error::Unavailable(format!("group {}: proposal dropped", self.group)))?
    }
}

async fn run(
    group: GroupId,
    raft: Raft,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    queued: Arc<AtomicUsize>,
    config: ProposerConfig,
) {
    let slots = Arc::new(Semaphore::new(config.proposals_in_flight_max));
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // Wait for a slot first: whatever arrives meanwhile joins this proposal.
        // The semaphore is never closed.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            tracing::error!("proposer slots closed: proposer stops");
            return;
        };
        let mut batch = BatchBuilder::with_capacity(first.bytes.min(config.proposal_bytes_max));
        let mut waiters = Vec::new();
        let mut take = |p: Pending, batch: &mut BatchBuilder| {
            queued.fetch_sub(p.bytes, Ordering::AcqRel);
            for c in &p.commands {
                batch.push(c.partition, &c.bytes);
            }
            waiters.push((p.commands.len(), p.reply));
        };
        take(first, &mut batch);
        while batch.len_bytes() < config.proposal_bytes_max {
            match rx.try_recv() {
                Ok(p) if batch.len_bytes() + p.bytes > config.proposal_bytes_max => {
                    carry = Some(p);
                    break;
                }
                Ok(p) => take(p, &mut batch),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let result = raft.client_write(Proposal::new(now_ms(), batch.finish())).await;
            match result {
                Ok(resp) => {
                    let expected: usize = waiters.iter().map(|(n, _)| n).sum();
                    let mut results = resp.data.results.into_iter();
                    if results.len() != expected {
                        tracing::error!(%group, results = results.len(), expected, "apply answered another number of results");
                    }
                    for (n, reply) in waiters {
                        let mine: Vec<_> = results.by_ref().take(n).collect();
                        let r = if mine.len() == n {
                            Ok(mine)
                        } else {
                            Err(Error::Unavailable("apply answered too few results".into()))
                        };
                        let _ = reply.send(r);
                    }
                }
                Err(e) => {
                    let err = match e {
                        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => Error::NotLeader(f),
                        other => Error::Unavailable(format!("group {group}: {other}")),
                    };
                    for (_, reply) in waiters {
                        let _ = reply.send(Err(err.clone()));
                    }
                }
            }
            drop(slot);
        });
    }
}
