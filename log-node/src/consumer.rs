//! Named consumers: read the log's committed events live, with offsets kept
//! by chorus (issue 13), like a Kafka consumer group of one member.
//!
//! A [`Consumer`] tails the chosen partitions (all by default) and hands their
//! records out one at a time with [`Consumer::next`], merged across
//! partitions; within a partition in offset order, gap-free. A *named*
//! consumer commits its position with [`Consumer::commit`] (or automatically,
//! see [`Options::commit_every`]): the offsets after the records handed out
//! so far are appended to the log as a `CommitOffsets` command in the
//! consumer's own partition, replicated like every other state, so they
//! survive the consumer's restart and the death of log-nodes.
//!
//! **At-least-once.** A restarted consumer starts at its committed offsets
//! ([`Start::Committed`]): every record handed out but not committed is
//! handed out again; nothing before the committed offset is. A commit never
//! moves a partition back (a late commit of an older instance of the same
//! consumer is ignored there), except a reset
//! ([`LogClient::reset_offsets`], `chorus consumer reset`).
//!
//! **Time.** [`Start::Time`] starts each partition at its first event whose
//! `at_ms` is at or after the given time. `at_ms` is the clock of the leader
//! that proposed the event: leaders' clocks differ and may go backwards after
//! a leader change, so the order of `at_ms` within a partition is only
//! roughly that of offsets. The scan reads the partition from its start.
//!
//! ```no_run
//! # async fn example(client: chorus_log_node::LogClient) -> Result<(), chorus_log_node::consumer::Error> {
//! use chorus_log_node::consumer::{Consumer, Options, Start};
//!
//! // Resume where "billing" committed; partitions it never committed start at their beginning.
//! let options = Options::named("billing").start(Start::Committed).commit_every_records(100);
//! let mut consumer = Consumer::open(client, options).await?;
//! while let Some(stored) = consumer.next().await? {
//!     let r = &stored.record;
//!     println!("{} {} {}", r.partition, r.offset, r.event.body.kind());
//!     // Handing out the next record commits this one's offset (every 100 records here):
//!     // a crash before that hands it out again after the restart.
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use chorus_schema::{Offset, PartitionId, PartitionOffset, StoredRecord};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{self, LogClient};

/// What can go wrong with a consumer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the log failed (committing, reading the committed
    /// offsets, finding where to start).
    #[error("log: {0}")]
    Log(#[from] client::Error),
    /// The options are unusable.
    #[error("consumer options: {0}")]
    Options(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a consumer starts in each partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// At the consumer's committed offset; in a partition without one, as
    /// [`Options::fallback`] says (default [`Start::Earliest`]). Needs a name.
    Committed,
    /// At offset 0.
    Earliest,
    /// At the end: only events committed after the consumer opened.
    Latest,
    /// At this offset in every partition.
    Offset(Offset),
    /// At the first event with `at_ms` at or after this time (see the module docs).
    Time { at_ms: u64 },
}

/// How to open a [`Consumer`].
#[derive(Clone, Debug)]
pub struct Options {
    name: Option<String>,
    partitions: Option<Vec<PartitionId>>,
    start: Start,
    fallback: Start,
    commit_every: Option<Duration>,
    commit_every_records: Option<u64>,
    buffer_records: usize,
}

impl Options {
    /// An anonymous consumer: nothing is committed; starts at the end.
    pub fn anonymous() -> Options {
        Options {
            name: None,
            partitions: None,
            start: Start::Latest,
            fallback: Start::Earliest,
            commit_every: None,
            commit_every_records: None,
            buffer_records: 1024,
        }
    }

    /// The consumer named `name` (1 to 64 ASCII letters, digits, `.`, `_`,
    /// `-`): starts at its committed offsets.
    pub fn named(name: impl Into<String>) -> Options {
        Options { name: Some(name.into()), start: Start::Committed, ..Options::anonymous() }
    }

    /// Only these partitions (default: all).
    #[must_use]
    pub fn partitions(mut self, partitions: Vec<PartitionId>) -> Options {
        self.partitions = Some(partitions);
        self
    }

    /// Where to start.
    #[must_use]
    pub fn start(mut self, start: Start) -> Options {
        self.start = start;
        self
    }

    /// With [`Start::Committed`]: where to start in a partition the consumer
    /// never committed (not `Committed`).
    #[must_use]
    pub fn fallback(mut self, fallback: Start) -> Options {
        self.fallback = fallback;
        self
    }

    /// Commit, from [`Consumer::next`], at least this often while records
    /// were handed out since the last commit.
    #[must_use]
    pub fn commit_every(mut self, every: Duration) -> Options {
        self.commit_every = Some(every);
        self
    }

    /// Commit, from [`Consumer::next`], once this many records were handed
    /// out since the last commit.
    #[must_use]
    pub fn commit_every_records(mut self, n: u64) -> Options {
        self.commit_every_records = Some(n.max(1));
        self
    }
}

/// A live reader of the log's committed events; see the module docs.
pub struct Consumer {
    client: LogClient,
    name: Option<String>,
    rx: mpsc::Receiver<StoredRecord>,
    tails: Vec<JoinHandle<()>>,
    /// By partition: the offset after the last record handed out.
    handed: BTreeMap<PartitionId, Offset>,
    /// By partition: what the last commit acknowledged (or the start).
    committed: BTreeMap<PartitionId, Offset>,
    since_commit: u64,
    last_commit: Instant,
    commit_every: Option<Duration>,
    commit_every_records: Option<u64>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("name", &self.name).field("handed", &self.handed).finish_non_exhaustive()
    }
}

impl Consumer {
    /// Opens a consumer: finds where to start in each partition and starts
    /// tailing them.
    ///
    /// # Errors
    /// [`Error::Options`] for a partition out of range, `Committed` without a
    /// name, a `Committed` fallback or a bad name; [`Error::Log`] when the
    /// committed offsets or the partitions' ends cannot be read.
    pub async fn open(client: LogClient, options: Options) -> Result<Consumer> {
        let p = client.partitions();
        let partitions = options.partitions.clone().unwrap_or_else(|| (0..p).map(PartitionId).collect());
        if let Some(bad) = partitions.iter().find(|x| x.0 >= p) {
            return Err(Error::Options(format!("no partition {bad} (the cluster has {p})")));
        }
        if let Some(name) = &options.name {
            chorus_schema::consumer::validate_name(name).map_err(|e| Error::Options(e.to_string()))?;
        }
        let committed = match (&options.name, options.start) {
            (None, Start::Committed) => return Err(Error::Options("Start::Committed needs a named consumer".into())),
            (_, _) if options.fallback == Start::Committed => {
                return Err(Error::Options("the fallback cannot be Start::Committed".into()))
            }
            (Some(name), Start::Committed) => {
                client.consumer_offsets(name).await?.into_iter().map(|o| (o.partition, o.offset)).collect()
            }
            _ => BTreeMap::new(),
        };
        let mut from = BTreeMap::new();
        for &partition in &partitions {
            let offset = match (options.start, committed.get(&partition)) {
                (Start::Committed, Some(&c)) => c,
                (Start::Committed, None) => resolve(&client, partition, options.fallback).await?,
                (s, _) => resolve(&client, partition, s).await?,
            };
            from.insert(partition, offset);
        }
        let (tx, rx) = mpsc::channel(options.buffer_records.max(1));
        let tails = from
            .iter()
            .map(|(&partition, &start)| tokio::spawn(tail_partition(client.clone(), partition, start, tx.clone())))
            .collect();
        Ok(Consumer {
            client,
            name: options.name,
            rx,
            tails,
            committed: from.clone(),
            handed: from,
            since_commit: 0,
            last_commit: Instant::now(),
            commit_every: options.commit_every,
            commit_every_records: options.commit_every_records,
        })
    }

    /// The next record of any of the partitions, waiting for one to commit;
    /// `None` only if every tail ended (they retry forever, so: never).
    /// Records of one partition come in offset order, gap-free.
    ///
    /// Before waiting, commits what was handed out so far if an automatic
    /// commit is due ([`Options::commit_every`],
    /// [`Options::commit_every_records`]): calling `next` again says the
    /// records before were processed.
    ///
    /// # Errors
    /// [`Error::Log`] when a due commit fails (nothing is lost: the records
    /// since the last commit are handed out again after a restart).
    pub async fn next(&mut self) -> Result<Option<StoredRecord>> {
        if self.commit_every_records.is_some_and(|n| self.since_commit >= n) {
            self.commit().await?;
        }
        loop {
            let due = self.commit_every.map(|every| self.last_commit + every);
            let record = match due {
                Some(due) if self.since_commit > 0 => tokio::select! {
                    r = self.rx.recv() => r,
                    () = tokio::time::sleep_until(due) => {
                        self.commit().await?;
                        continue;
                    }
                },
                _ => self.rx.recv().await,
            };
            let Some(record) = record else { return Ok(None) };
            let r = &record.record;
            self.handed.insert(r.partition, r.offset.next());
            self.since_commit = self.since_commit.saturating_add(1);
            return Ok(Some(record));
        }
    }

    /// Commits the offsets after every record handed out so far (a named
    /// consumer; an anonymous one only forgets its count). Returns every
    /// committed offset of the consumer, as the log has them after the commit.
    ///
    /// # Errors
    /// [`Error::Log`] when the commit fails or its outcome is unknown; it
    /// may then be called again (commits are idempotent).
    pub async fn commit(&mut self) -> Result<Vec<PartitionOffset>> {
        let Some(name) = &self.name else {
            self.since_commit = 0;
            self.last_commit = Instant::now();
            return Ok(Vec::new());
        };
        let changed: Vec<PartitionOffset> = self
            .handed
            .iter()
            .filter(|(p, o)| self.committed.get(p) != Some(o))
            .map(|(&p, &o)| PartitionOffset::new(p, o))
            .collect();
        let now = self.client.commit_offsets(name, &changed).await?;
        for c in &changed {
            self.committed.insert(c.partition, c.offset);
        }
        self.since_commit = 0;
        self.last_commit = Instant::now();
        Ok(now)
    }

    /// By partition, the offset after the last record handed out (the start
    /// offset if none was).
    pub fn positions(&self) -> Vec<PartitionOffset> {
        self.handed.iter().map(|(&p, &o)| PartitionOffset::new(p, o)).collect()
    }

    /// The consumer's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        for t in &self.tails {
            t.abort();
        }
    }
}

/// The offset `start` means in `partition` (not `Committed`).
async fn resolve(client: &LogClient, partition: PartitionId, start: Start) -> Result<Offset> {
    match start {
        Start::Earliest | Start::Committed => Ok(Offset(0)),
        Start::Offset(o) => Ok(o),
        Start::Latest => end(client, partition).await,
        Start::Time { at_ms } => {
            let mut from = Offset(0);
            loop {
                let (records, next) = client.read(partition, from, crate::service::api::READ_LIMIT_MAX).await?;
                if let Some(r) = records.iter().find(|r| r.event.at_ms >= at_ms) {
                    return Ok(r.offset);
                }
                if records.is_empty() {
                    return Ok(from);
                }
                from = next;
            }
        }
    }
}

/// The partition's end (the offset its next event will get), as its group's
/// leader knows it (or, with no known leader, any node).
async fn end(client: &LogClient, partition: PartitionId) -> Result<Offset> {
    client.refresh_leaders().await;
    let mut last = None;
    let addrs: Vec<String> = client.leader_addr(partition).into_iter().chain(client.node_addrs()).collect();
    for addr in addrs {
        match client.status(&addr).await {
            Ok(s) => {
                if let Some(p) = s.partitions.iter().find(|x| x.partition == partition) {
                    return Ok(p.next_offset);
                }
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(|| Error::Options("no log node to ask".into()), Error::Log))
}

/// Tails one partition into `tx` from `from`, forever: a broken stream is
/// resumed (on the leader if known, else the next node) after the last
/// record sent, so the partition's records reach `tx` in order, gap-free,
/// each once.
async fn tail_partition(client: LogClient, partition: PartitionId, mut from: Offset, tx: mpsc::Sender<StoredRecord>) {
    let mut failures: usize = 0;
    loop {
        let nodes = client.node_addrs();
        let Some(addr) = client
            .leader_addr(partition)
            .filter(|_| failures.is_multiple_of(2))
            .or_else(|| nodes.get(failures % nodes.len().max(1)).cloned())
        else {
            return;
        };
        let (itx, mut irx) = mpsc::channel::<StoredRecord>(256);
        let tail = {
            let client = client.clone();
            let addr = addr.clone();
            tokio::spawn(async move { client.tail_stored(&addr, partition, from, itx).await })
        };
        while let Some(r) = irx.recv().await {
            if r.record.offset < from {
                continue;
            }
            from = r.record.offset.next();
            failures = 0;
            if tx.send(r).await.is_err() {
                tail.abort();
                return;
            }
        }
        match tail.await {
            Ok(Ok(())) | Err(_) => {}
            Ok(Err(e)) => tracing::debug!(%partition, %addr, error = %e, "consumer tail broke; resuming"),
        }
        failures = failures.saturating_add(1);
        client.refresh_leaders().await;
        tokio::time::sleep(Duration::from_millis(100u64.saturating_mul(failures.min(10) as u64))).await;
    }
}
