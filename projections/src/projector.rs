//! The projector process: tails every partition of the log, folds committed
//! events into the views in RocksDB, publishes deliveries and receipt changes
//! on the bus, and answers view queries over the bus.
//!
//! ```text
//!  log-node ──tail(p, cursor)──▶ partition task p ──batch──▶ spawn_blocking: one RocksTxn
//!  (any node, reconnect with        (one per partition)        Projection::apply × n, cursor
//!   backoff, resume from cursor)                                commit (views + cursor)
//!                                                                    │ then
//!                                                                    ▼
//!                   bus: chorus.deliver.<chat>  /  chorus.receipt.<sender>   (at least once)
//!  edges ──request chorus.view.{chat_list,cursors,receipt_status,session,user,inbox,group_info,message_info}──▶ queue group `projectors`
//!        ◀────────────── reply (bus::ViewReply, sealed) ◀── snapshot read of the store
//! ```
//!
//! # Guarantees
//! - **Views are exact.** Each partition's records are folded in offset order
//!   from the stored cursor, and the cursor commits in the same atomic batch as
//!   the views, so after any crash the projector resumes where its last commit
//!   left off: nothing is folded twice, nothing skipped (ARCHITECTURE.md invariant 6: the
//!   views equal [`rebuild_from_log`] at the same offsets).
//! - **Effects are at least once, best effort.** They are published only after
//!   their commit. A crash after the commit and before the publish loses them;
//!   a crash after the publish and before the commit reached disk (no fsync)
//!   re-folds the batch and publishes them again. Bus subscribers may also miss
//!   messages (late start, disconnect). The log and the views are the truth;
//!   edges dedup by `(chat, seq)` and fill gaps from the log (see `chorus_schema::bus`).
//! - **Records are forwarded, not re-encoded.** The tail hands each record
//!   with the bytes the log stored ([`chorus_schema::StoredRecord`]); a
//!   delivery carries those bytes verbatim.
//! - **Per-chat order.** A chat lives in one partition, one task folds and
//!   publishes that partition's records in order through one bus handle, so
//!   deliveries of a chat are published in seq order.
//!
//! # What it leaves out
//! - A tail that stays silent on a node that lost its replica (or hangs) is not
//!   detected; only a stream error triggers a reconnect.
//! - One projector folds every partition: partitions are not yet spread over
//!   several projector processes (they would each need their own store, or a
//!   partition lease).
//! - Views of most user-partition events (see the crate docs).

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus_bus::{Bus, Message, Subscription};
use chorus_log_node::network::tls::TlsPaths;
use chorus_log_node::{ClientConfig, LogClient};
use chorus_schema::bus::{
    self, subject, AccountUpdate, ChatCursors, ChatJoined, ChatListItem, ChatListPage, CursorsPage, Delivery,
    InboxPage, Members, PresenceInfo, PresenceUpdate, ReceiptUpdate, SessionInfo, UserInfo, ViewAnswer, ViewError,
    ViewErrorCode, ViewQuery, ViewReply,
};
use chorus_schema::{EventRecord, Key, Offset, PartitionId, StoredRecord, MAX_VIEW_PAGE_ENTRIES};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn, Instrument};

use crate::fold::{chat_list, cursors, directory, inbox, presence, privacy, receipt_log, receipt_status, roster};
use crate::metrics::Published;
use crate::seal::{self, ViewKey};
use crate::store::{self, keys, RocksStore, Txn};
use crate::{Applied, Effect, Projection};

/// Why the projector could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration breaks a rule (see [`Config::validate`]).
    #[error("invalid projector config: {0}")]
    InvalidConfig(String),
    /// No log node answered (at start) or a read kept failing (replay).
    #[error("log: {0}")]
    Log(#[from] chorus_log_node::client::Error),
    /// The bus could not be reached or refused a subscription.
    #[error("bus: {0}")]
    Bus(#[from] chorus_bus::Error),
    /// The store failed: fatal, the projector stops (restart resumes from the cursor).
    #[error("store: {0}")]
    Store(#[from] store::Error),
    /// A record could not be folded ([`crate::Error::Inconsistent`]: the views
    /// do not come from this log; rebuild them with [`rebuild_from_log`]).
    #[error("fold: {0}")]
    Fold(#[from] crate::Error),
    /// [`rebuild_from_log`] refuses a store that already holds views.
    #[error("store in {dir} is not empty: rebuild needs a fresh directory")]
    NotEmpty { dir: PathBuf },
    /// A projector refuses a store rebuilt for some views only
    /// ([`crate::rebuild_views_from_log`]): its cursors are those of these views.
    #[error("store in {dir} holds only the views {views} (a replay of some views): a projector needs every view")]
    PartialStore { dir: PathBuf, views: String },
    /// A task of the projector panicked.
    #[error("projector task failed: {0}")]
    Task(String),
    /// A log node's tail stream sent a record of another partition than the
    /// one asked for (peer data: the tail is dropped and opened again,
    /// nothing of it is folded).
    #[error("the tail of partition {asked} sent a record of partition {got}")]
    WrongPartition { asked: PartitionId, got: PartitionId },
}

/// Checks that a tailed record is of the partition that was tailed.
fn check_tailed(asked: PartitionId, record: &EventRecord) -> Result<()> {
    if record.partition != asked {
        return Err(Error::WrongPartition { asked, got: record.partition });
    }
    Ok(())
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which bus to publish on and serve queries from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BusConfig {
    /// The in-process bus of embedded mode (`chorus dev`): pass it to
    /// [`Projector::open`].
    #[default]
    Local,
    /// A NATS server, e.g. `nats://127.0.0.1:4222`, over TLS with this
    /// process's NKey (see [`crate::bus_auth`] for who may do what).
    Nats {
        url: String,
        /// The CA that signs the server's certificate.
        ca: PathBuf,
        /// This process's NKey user seed (`chorus certs` writes `<role>-<name>.nk`).
        nkey_seed: PathBuf,
    },
}

impl BusConfig {
    /// Connects to the NATS server of this configuration; `None` for the
    /// local bus (which the caller hands in).
    ///
    /// # Errors
    /// As [`Bus::connect_nats_with`].
    pub async fn connect_nats(&self) -> std::result::Result<Option<Bus>, chorus_bus::Error> {
        match self {
            BusConfig::Local => Ok(None),
            BusConfig::Nats { url, ca, nkey_seed } => {
                let auth = chorus_bus::NatsAuth { ca: ca.clone(), nkey_seed: nkey_seed.clone() };
                Ok(Some(Bus::connect_nats_with(url, &auth).await?))
            }
        }
    }
}

/// Projector settings. Defaults fit a single local log-node (`chorus dev`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Client API addresses of log nodes (any subset of the cluster).
    pub log_nodes: Vec<String>,
    /// The projector's identity towards the log: the cluster CA and a
    /// certificate of role `projector` (reads and tails only).
    pub log_tls: TlsPaths,
    /// The log client's timeouts, backoff and queue bound (`[log_client]`).
    pub log_client: ClientConfig,
    /// The RocksDB directory of the views.
    pub store_dir: PathBuf,
    /// Most records folded in one transaction.
    pub batch_records_max: usize,
    /// Records buffered between a partition's tail stream and its folder.
    pub tail_buffer_records: usize,
    /// First wait before reconnecting a broken tail; doubles per failure.
    pub reconnect_backoff_min_ms: u64,
    /// Longest wait between reconnect attempts.
    pub reconnect_backoff_max_ms: u64,
    /// View queries answered at once (the rest wait on the bus).
    pub view_requests_in_flight_max: usize,
    pub bus: BusConfig,
    /// The view key shared with the edges (hex, mode 0600): every view reply
    /// is sealed with it ([`crate::seal`]).
    pub view_key: PathBuf,
    /// Where this process serves Prometheus metrics (`GET /metrics`, plain
    /// HTTP; see `docs/metrics.md`). None: not served. Also
    /// `CHORUS_METRICS_ADDR` and `--metrics-addr`.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// An OpenTelemetry collector's OTLP/HTTP traces endpoint (e.g.
    /// `http://127.0.0.1:4318/v1/traces`): spans are exported there when set
    /// (the `chorus` binary must be built with the `otlp` feature). None: no
    /// export. Also `CHORUS_OTLP_ENDPOINT`.
    pub otlp_endpoint: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            log_nodes: vec!["127.0.0.1:7100".into()],
            log_tls: TlsPaths {
                ca: PathBuf::from("data/tls/ca.pem"),
                cert: PathBuf::from("data/tls/projector-1.pem"),
                key: PathBuf::from("data/tls/projector-1.key"),
            },
            log_client: ClientConfig::default(),
            store_dir: PathBuf::from("data/projector-1"),
            batch_records_max: 512,
            tail_buffer_records: 4096,
            reconnect_backoff_min_ms: 50,
            reconnect_backoff_max_ms: 5_000,
            view_requests_in_flight_max: 64,
            bus: BusConfig::Local,
            view_key: PathBuf::from("data/tls/view.key"),
            metrics_addr: None,
            otlp_endpoint: None,
        }
    }
}

/// The largest [`Config::batch_records_max`]: a batch is one RocksDB write.
pub const BATCH_RECORDS_LIMIT: usize = 65_536;

pub use crate::replay::{rebuild_from_log, ReplayStats, REPLAY_READ_RECORDS};

impl Config {
    /// Checks every rule of the fields.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first broken rule.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.log_nodes.is_empty() {
            return bad("log_nodes is empty: name at least one log node client address".into());
        }
        if let Err(m) = self.log_client.validate() {
            return bad(m);
        }
        if let Some(a) = self.log_nodes.iter().find(|a| !a.contains(':')) {
            return bad(format!("log node address {a:?} has no port"));
        }
        if [&self.log_tls.ca, &self.log_tls.cert, &self.log_tls.key].iter().any(|p| p.as_os_str().is_empty()) {
            return bad("log_tls needs ca, cert and key".into());
        }
        if self.store_dir.as_os_str().is_empty() {
            return bad("store_dir is empty".into());
        }
        if !(1..=BATCH_RECORDS_LIMIT).contains(&self.batch_records_max) {
            return bad(format!("batch_records_max {} not in 1..={BATCH_RECORDS_LIMIT}", self.batch_records_max));
        }
        if self.tail_buffer_records < 1 {
            return bad("tail_buffer_records must be at least 1".into());
        }
        if self.reconnect_backoff_min_ms == 0 || self.reconnect_backoff_min_ms > self.reconnect_backoff_max_ms {
            return bad(format!(
                "reconnect backoff: need 0 < min ({}) <= max ({})",
                self.reconnect_backoff_min_ms, self.reconnect_backoff_max_ms
            ));
        }
        if self.view_requests_in_flight_max == 0 {
            return bad("view_requests_in_flight_max must be at least 1".into());
        }
        if let BusConfig::Nats { url, ca, nkey_seed } = &self.bus {
            if url.is_empty() {
                return bad("bus.url is empty".into());
            }
            if ca.as_os_str().is_empty() || nkey_seed.as_os_str().is_empty() {
                return bad("a NATS bus needs bus.ca and bus.nkey_seed (TLS and this process's credentials)".into());
            }
        }
        if self.view_key.as_os_str().is_empty() {
            return bad("view_key is empty".into());
        }
        Ok(())
    }
}

/// Counters of a running projector, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records folded (committed), over every partition.
    pub records_folded: u64,
    /// Transactions committed.
    pub batches_committed: u64,
    /// Bus messages published (deliveries and receipt changes).
    pub published: u64,
    /// Publishes the bus refused (the effect is lost; the views have it).
    pub publish_errors: u64,
    /// Tail streams re-opened after an error or end.
    pub reconnects: u64,
    /// View queries answered (errors included).
    pub view_requests: u64,
    /// View queries that did not decode.
    pub view_bad_requests: u64,
}

#[derive(Default)]
struct Counters {
    records_folded: AtomicU64,
    batches_committed: AtomicU64,
    published: AtomicU64,
    publish_errors: AtomicU64,
    reconnects: AtomicU64,
    view_requests: AtomicU64,
    view_bad_requests: AtomicU64,
}

struct Shared {
    counters: Counters,
    /// The next offset to fold of each partition, moved after a batch's
    /// commit and publish.
    progress: watch::Sender<Vec<Offset>>,
    /// The Prometheus handles ([`crate::metrics`]).
    metrics: crate::metrics::Metrics,
}

/// A cheap handle on a projector: progress and counters. Holds nothing of the
/// store, so it may outlive the projector.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("stats", &self.stats()).finish()
    }
}

impl Handle {
    /// The next offset to fold of every partition: everything before it is
    /// committed in the views and its effects were handed to the bus.
    pub fn next_offsets(&self) -> Vec<Offset> {
        self.shared.progress.borrow().clone()
    }

    /// Waits until `done(next_offsets)` holds; false on timeout.
    pub async fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&[Offset]) -> bool) -> bool {
        let mut rx = self.shared.progress.subscribe();
        tokio::time::timeout(timeout, async move {
            loop {
                if done(&rx.borrow_and_update()) {
                    return;
                }
                if rx.changed().await.is_err() {
                    // The projector is gone: nothing will change any more.
                    std::future::pending::<()>().await;
                }
            }
        })
        .await
        .is_ok()
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            records_folded: get(&c.records_folded),
            batches_committed: get(&c.batches_committed),
            published: get(&c.published),
            publish_errors: get(&c.publish_errors),
            reconnects: get(&c.reconnects),
            view_requests: get(&c.view_requests),
            view_bad_requests: get(&c.view_bad_requests),
        }
    }
}

/// A projector ready to run: connected to the log and the bus, store open,
/// view subscriptions live.
pub struct Projector {
    config: Config,
    client: LogClient,
    store: RocksStore,
    bus: Bus,
    views: Vec<Subscription>,
    shared: Arc<Shared>,
    view_key: ViewKey,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Projector {
    /// Validates `config`, opens the store, connects to the log and the bus,
    /// and subscribes to the view subjects (queue group `projectors`), so that
    /// requests sent after this returns are answered once [`Projector::run`]
    /// starts.
    ///
    /// `local_bus` is the in-process bus of embedded mode, required when
    /// `config.bus` is [`BusConfig::Local`] and ignored otherwise.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`], [`Error::Store`] (e.g. the directory is
    /// locked by another projector), [`Error::PartialStore`], [`Error::Log`]
    /// when no log node answers, [`Error::Bus`].
    pub async fn open(config: Config, local_bus: Option<Bus>) -> Result<Projector> {
        config.validate()?;
        let bus = match (&config.bus, local_bus) {
            (BusConfig::Local, Some(bus)) => bus,
            (BusConfig::Local, None) => {
                return Err(Error::InvalidConfig("bus is local: pass the in-process bus to Projector::open".into()))
            }
            (BusConfig::Nats { .. }, _) => config
                .bus
                .connect_nats()
                .await?
                .ok_or_else(|| Error::InvalidConfig("bus = nats needs a NATS configuration".into()))?,
        };
        let view_key = ViewKey::load(&config.view_key).map_err(|e| Error::InvalidConfig(e.to_string()))?;
        let client = LogClient::connect(&config.log_nodes, &config.log_tls, config.log_client.clone()).await?;
        let dir = config.store_dir.clone();
        let store = tokio::task::spawn_blocking(move || RocksStore::open(dir)).await.map_err(task_failed)??;
        if let Some(views) = store::get_value::<String, _>(&store.read(), &keys::partial())? {
            return Err(Error::PartialStore { dir: config.store_dir.clone(), views });
        }
        let mut views = Vec::new();
        for view in subject::VIEWS {
            views.push(bus.queue_subscribe(view, subject::QUEUE_GROUP).await?);
        }
        let partitions = client.partitions();
        let initial = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || -> Result<Vec<Offset>> {
                let txn = store.read();
                (0..partitions).map(|p| Ok(Projection::next_offset(&txn, PartitionId(p))?)).collect()
            })
            .await
            .map_err(task_failed)??
        };
        let metrics = crate::metrics::Metrics::new(partitions);
        metrics.next_offsets(&initial);
        let (progress, _) = watch::channel(initial);
        let shared = Arc::new(Shared { counters: Counters::default(), progress, metrics });
        info!(partitions, dir = %config.store_dir.display(), "projector opened");
        Ok(Projector { config, client, store, bus, views, shared, view_key })
    }

    /// A cheap handle for progress and counters.
    pub fn handle(&self) -> Handle {
        Handle { shared: self.shared.clone() }
    }

    /// Folds every partition and serves view queries until `shutdown`
    /// completes (then finishes the batches in progress, and returns `Ok`) or
    /// a fatal error stops it.
    ///
    /// # Errors
    /// [`Error::Store`] or [`Error::Fold`] from any partition (the others are
    /// stopped too); [`Error::Task`] if a task panicked.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let Projector { config, client, store, bus, views, shared, view_key } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let ctx = Arc::new(Ctx { config, client, store, bus, shared, view_key });
        let mut tasks: JoinSet<Result<()>> = JoinSet::new();
        let limiter = Arc::new(Semaphore::new(ctx.config.view_requests_in_flight_max));
        for sub in views {
            tasks.spawn(serve_views(ctx.clone(), sub, limiter.clone(), stop_rx.clone()));
        }
        for p in 0..ctx.client.partitions() {
            tasks.spawn(run_partition(ctx.clone(), PartitionId(p), stop_rx.clone()));
        }
        let lag = tokio::spawn(crate::metrics::sample_lag(
            ctx.client.clone(),
            ctx.config.log_nodes.clone(),
            ctx.shared.progress.subscribe(),
            stop_rx.clone(),
        ));
        tokio::pin!(shutdown);
        let mut outcome = Ok(());
        tokio::select! {
            () = &mut shutdown => info!("projector shutting down"),
            Some(done) = tasks.join_next() => {
                outcome = flatten(done);
                if let Err(e) = &outcome {
                    error!(error = %e, "projector stopping");
                }
            }
        }
        let _ = stop_tx.send(true);
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = flatten(done) {
                if outcome.is_ok() {
                    outcome = Err(e);
                }
            }
        }
        lag.abort();
        let _ = ctx.bus.flush().await;
        outcome
    }
}

pub(crate) fn task_failed(e: tokio::task::JoinError) -> Error {
    Error::Task(e.to_string())
}

fn flatten(done: std::result::Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    done.map_err(task_failed)?
}

struct Ctx {
    config: Config,
    client: LogClient,
    store: RocksStore,
    bus: Bus,
    shared: Arc<Shared>,
    /// Seals view replies ([`crate::seal`]).
    view_key: ViewKey,
}

/// A bus message to send after a commit.
struct Outgoing {
    subject: String,
    payload: Bytes,
    kind: Published,
}

enum TailEnd {
    Stop,
    Reconnect(String),
}

async fn run_partition(ctx: Arc<Ctx>, partition: PartitionId, mut stop: watch::Receiver<bool>) -> Result<()> {
    let slot = usize::from(partition.0);
    // `open` made a slot for each of the client's partitions.
    let Some(mut next) = ctx.shared.progress.borrow().get(slot).copied() else {
        return Err(Error::Task(format!("no progress slot for partition {partition}")));
    };
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let addr = ctx.client.leader_addr(partition).or_else(|| {
            let nodes = &ctx.config.log_nodes;
            nodes.get(failures as usize % nodes.len().max(1)).cloned()
        });
        // `validate` refuses an empty `log_nodes`.
        let Some(addr) = addr else { return Err(Error::InvalidConfig("log_nodes is empty".into())) };
        debug!(%partition, %addr, %next, "tailing");
        let (tx, mut rx) = mpsc::channel::<StoredRecord>(ctx.config.tail_buffer_records);
        let tail = {
            let client = ctx.client.clone();
            let addr = addr.clone();
            tokio::spawn(async move { client.tail_stored(&addr, partition, next, tx).await })
        };
        let end = loop {
            let first = tokio::select! {
                r = rx.recv() => r,
                _ = stop.changed() => break TailEnd::Stop,
            };
            let Some(first) = first else { break TailEnd::Reconnect("tail stream ended".into()) };
            let mut batch = vec![first];
            while batch.len() < ctx.config.batch_records_max {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let span = tracing::debug_span!("fold", %partition, records = batch.len());
            match fold_batch(&ctx, partition, batch).instrument(span).await {
                Ok((folded_to, outgoing)) => {
                    next = folded_to;
                    failures = 0;
                    publish(&ctx, outgoing).await;
                    // After the publish, so that a waiter on the progress also
                    // sees the batch's effects on the bus.
                    ctx.shared.progress.send_modify(|v| {
                        if let Some(n) = v.get_mut(slot) {
                            *n = next;
                        }
                    });
                    ctx.shared.metrics.next_offset(partition, next);
                }
                Err(Error::Fold(e @ crate::Error::OffsetGap { .. })) => break TailEnd::Reconnect(e.to_string()),
                Err(e @ Error::WrongPartition { .. }) => break TailEnd::Reconnect(e.to_string()),
                Err(e) => {
                    tail.abort();
                    error!(%partition, error = %e, "fold failed");
                    return Err(e);
                }
            }
        };
        tail.abort();
        let tail_result = tail.await;
        match end {
            TailEnd::Stop => return Ok(()),
            TailEnd::Reconnect(why) => {
                let detail = match tail_result {
                    Ok(Err(e)) => e.to_string(),
                    _ => why,
                };
                failures = failures.saturating_add(1);
                ctx.shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                let wait = backoff(&ctx.config, failures);
                warn!(%partition, %addr, %next, wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), reason = %detail, "tail broken; reconnecting");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return Ok(()),
                }
                ctx.client.refresh_leaders().await;
            }
        }
    }
}

fn backoff(config: &Config, failures: u32) -> Duration {
    let factor = 1u64 << failures.saturating_sub(1).min(16);
    Duration::from_millis(config.reconnect_backoff_min_ms.saturating_mul(factor).min(config.reconnect_backoff_max_ms))
}

/// Folds `batch` (records of `partition` in offset order) in one transaction
/// with the cursor and commits it. Returns the new cursor and the bus
/// messages of its effects.
async fn fold_batch(
    ctx: &Arc<Ctx>,
    partition: PartitionId,
    batch: Vec<StoredRecord>,
) -> Result<(Offset, Vec<Outgoing>)> {
    let store = ctx.store.clone();
    let contact_key = ctx.view_key.contact_key();
    let (next, folded, outgoing) = tokio::task::spawn_blocking(move || -> Result<(Offset, u64, Vec<Outgoing>)> {
        let projection = Projection::new().with_contact_key(contact_key);
        let mut txn = store.begin();
        let mut outgoing = Vec::new();
        let mut folded = 0u64;
        let mut effects = Vec::new();
        for stored in &batch {
            check_tailed(partition, &stored.record)?;
            if projection.apply(&mut txn, &stored.record, &mut effects)? == Applied::Folded {
                folded += 1;
            }
            for effect in effects.drain(..) {
                messages_of(effect, stored, &mut outgoing);
            }
        }
        let next = Projection::next_offset(&txn, partition)?;
        txn.commit()?;
        Ok((next, folded, outgoing))
    })
    .await
    .map_err(task_failed)??;
    let c = &ctx.shared.counters;
    c.records_folded.fetch_add(folded, Ordering::Relaxed);
    ctx.shared.metrics.records.increment(folded);
    c.batches_committed.fetch_add(1, Ordering::Relaxed);
    Ok((next, outgoing))
}

/// The bus messages of one effect of `stored`. A delivery carries the
/// record's stored bytes as the log served them (copied once, into the
/// payload), never a fresh encoding of the decoded record; a join is one
/// message per user who joined.
fn messages_of(effect: Effect, stored: &StoredRecord, out: &mut Vec<Outgoing>) {
    let one = match effect {
        Effect::Deliver { chat, seq, recipients } => Outgoing {
            subject: subject::deliver(&chat),
            payload: Delivery::encode_parts(&chat, seq, &recipients, &stored.bytes),
            kind: Published::Deliver,
        },
        Effect::ReceiptChanged { chat, sender, up_to_seq, status } => Outgoing {
            subject: subject::receipt(sender),
            payload: ReceiptUpdate { chat, sender, up_to_seq, status }.encode().into(),
            kind: Published::Receipt,
        },
        Effect::KeysLow { user, device, left } => Outgoing {
            subject: subject::keys(user),
            payload: chorus_schema::bus::KeysLowUpdate { user, device, one_time_keys_left: left }.encode().into(),
            kind: Published::Account,
        },
        Effect::Account { user, device, change } => Outgoing {
            subject: subject::account(user),
            payload: AccountUpdate { user, device, change, at_ms: stored.record.event.at_ms }.encode().into(),
            kind: Published::Account,
        },
        Effect::Presence { user, presence } => Outgoing {
            subject: subject::presence(user),
            payload: PresenceUpdate {
                user,
                online: presence.is_some_and(|p| p.online),
                last_seen_ms: presence.map_or(0, |p| p.last_seen_ms),
                audience: presence.is_none(),
            }
            .encode()
            .into(),
            kind: Published::Presence,
        },
        Effect::Joined { chat, seq, users } => {
            for user in users {
                let payload = ChatJoined { chat, user, seq }.encode().into();
                out.push(Outgoing { subject: subject::joined(user), payload, kind: Published::Joined });
            }
            return;
        }
    };
    out.push(one);
}

async fn publish(ctx: &Ctx, outgoing: Vec<Outgoing>) {
    let c = &ctx.shared.counters;
    for m in outgoing {
        match ctx.bus.publish(&m.subject, m.payload).await {
            Ok(()) => {
                c.published.fetch_add(1, Ordering::Relaxed);
                ctx.shared.metrics.published(m.kind);
            }
            Err(e) => {
                c.publish_errors.fetch_add(1, Ordering::Relaxed);
                ctx.shared.metrics.publish_errors.increment(1);
                warn!(subject = %m.subject, error = %e, "publish failed; the views still have it");
            }
        }
    }
}

// ---- view queries -----------------------------------------------------------

async fn serve_views(
    ctx: Arc<Ctx>,
    mut sub: Subscription,
    limiter: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut in_flight = JoinSet::new();
    loop {
        let msg = tokio::select! {
            m = sub.next() => m,
            _ = stop.changed() => break,
        };
        let Some(msg) = msg else { break };
        // The limiter is never closed.
        let Ok(permit) = limiter.clone().acquire_owned().await else { break };
        let ctx = ctx.clone();
        in_flight.spawn(async move {
            answer_request(&ctx, msg).await;
            drop(permit);
        });
        // Reap finished requests so the set stays small.
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
    Ok(())
}

async fn answer_request(ctx: &Ctx, msg: Message) {
    let started = std::time::Instant::now();
    let c = &ctx.shared.counters;
    c.view_requests.fetch_add(1, Ordering::Relaxed);
    if msg.reply.is_none() {
        c.view_bad_requests.fetch_add(1, Ordering::Relaxed);
        debug!(subject = %msg.subject, "view request without a reply subject");
        return;
    }
    let store = ctx.store.clone();
    let partitions = ctx.client.partitions();
    let subject = msg.subject.clone();
    let payload = msg.payload.clone();
    let answered = tokio::task::spawn_blocking(move || match seal::open_request(&payload) {
        Ok(query) => answer(&store, partitions, &subject, query),
        Err(e) => (error_reply(ViewErrorCode::BadRequest, e.to_string()), true),
    })
    .await;
    let (reply, bad) = match answered {
        Ok(r) => r,
        Err(e) => (error_reply(ViewErrorCode::Unavailable, e.to_string()), false),
    };
    if bad {
        c.view_bad_requests.fetch_add(1, Ordering::Relaxed);
    }
    let sealed = ctx.view_key.seal_reply(&msg.subject, &msg.payload, &reply);
    if let Err(e) = ctx.bus.respond(&msg, Bytes::from(sealed)).await {
        debug!(subject = %msg.subject, error = %e, "view reply not sent");
    }
    ctx.shared.metrics.view_query(&msg.subject, started.elapsed().as_secs_f64());
}

/// An encoded error reply.
fn error_reply(code: ViewErrorCode, message: String) -> Vec<u8> {
    bus::encode_reply(&Err(ViewError { code, message }))
}

/// Answers one view query from a snapshot of `store`: the encoded
/// [`ViewReply`], and whether the request was malformed (it did not decode, or
/// it is not the query of `subject`: the bus permissions are per subject, so
/// a query is answered only on its own). `partitions` is the log's partition
/// count (for [`InboxPage::partition`]).
pub fn answer(store: &RocksStore, partitions: u16, subject: &str, payload: &[u8]) -> (Vec<u8>, bool) {
    let query = match ViewQuery::decode(payload) {
        Ok(q) if q.subject() == subject => q,
        Ok(q) => {
            let message = format!("a {} query on {subject}", q.subject());
            return (error_reply(ViewErrorCode::BadRequest, message), true);
        }
        Err(e) => return (error_reply(ViewErrorCode::BadRequest, e.to_string()), true),
    };
    let txn = store.read();
    let answered: crate::Result<ViewAnswer> = (|| {
        Ok(match query {
            ViewQuery::ChatList(q) => {
                let (rows, more) = chat_list_page(&txn, q.user, q.after, q.limit)?;
                let entries = rows.into_iter().map(|(chat, entry)| ChatListItem { chat, entry }).collect();
                ViewAnswer::ChatList(ChatListPage { entries, more })
            }
            ViewQuery::Cursors(q) => {
                let (rows, more) = chat_list_page(&txn, q.user, q.after, q.limit)?;
                let mut entries = Vec::with_capacity(rows.len());
                for (chat, entry) in rows {
                    let c = cursors::get(&txn, &chat, q.user, q.device)?;
                    entries.push(ChatCursors { chat, last_seq: entry.last_seq, delivered: c.delivered, read: c.read });
                }
                ViewAnswer::Cursors(CursorsPage { entries, more })
            }
            ViewQuery::ReceiptStatus(q) => ViewAnswer::Ticks(receipt_status::ticks(&txn, &q.chat, q.sender)?),
            ViewQuery::Session(q) => {
                ViewAnswer::Session(SessionInfo { token_hash: directory::session(&txn, q.user, q.device)? })
            }
            ViewQuery::User(q) => ViewAnswer::User(UserInfo {
                registered: directory::is_registered(&txn, q.user)?,
                devices: directory::devices(&txn, q.user)?.into_iter().map(|(d, _)| d).collect(),
            }),
            ViewQuery::Inbox(q) => {
                let (entries, more) = inbox::items(&txn, q.user, &q.chat, q.after, page_limit(q.limit))?;
                ViewAnswer::Inbox(InboxPage {
                    partition: PartitionId::for_key(&Key::Chat(q.chat), partitions),
                    entries,
                    more,
                })
            }
            ViewQuery::Devices(q) => ViewAnswer::Devices(directory::device_list(&txn, q.user)?),
            ViewQuery::DeviceKeys(q) => ViewAnswer::DeviceKeys(crate::fold::device_keys::list(&txn, q.user)?),
            ViewQuery::GroupInfo(q) => ViewAnswer::GroupInfo(roster::group_info(&txn, &q.chat, q.user)?),
            ViewQuery::MessageInfo(q) => {
                ViewAnswer::MessageInfo(receipt_log::message_info(&txn, &q.chat, q.seq, q.user)?)
            }
            ViewQuery::Presence(q) => {
                // An unknown user looks like a hidden one: nothing to see.
                if directory::is_registered(&txn, q.user)? && privacy::may_see_presence(&txn, q.user, q.viewer)? {
                    let p = presence::get(&txn, q.user)?;
                    ViewAnswer::Presence(PresenceInfo { visible: true, online: p.online, last_seen_ms: p.last_seen_ms })
                } else {
                    ViewAnswer::Presence(PresenceInfo::default())
                }
            }
            ViewQuery::Members(q) => {
                let known = roster::chat(&txn, &q.chat)?.is_some();
                let members = roster::members(&txn, &q.chat)?.into_iter().map(|(u, _)| u).collect();
                ViewAnswer::Members(Members { known, members })
            }
            ViewQuery::Profile(q) => ViewAnswer::Profile(crate::fold::profile::visible(&txn, q.viewer, q.user)?),
            ViewQuery::Status(q) => {
                ViewAnswer::Statuses(crate::fold::status::visible(&txn, q.viewer, q.author, q.now_ms)?)
            }
            ViewQuery::ContactLookup(q) => {
                ViewAnswer::ContactMatches(crate::fold::contact_index::lookup(&txn, &q.hashes)?)
            }
        })
    })();
    let reply: ViewReply = answered.map_err(|e| ViewError { code: ViewErrorCode::Unavailable, message: e.to_string() });
    (bus::encode_reply(&reply), false)
}

/// The entries of a page asked for with `limit`: 0 (no preference) and
/// anything above the cap get [`MAX_VIEW_PAGE_ENTRIES`].
fn page_limit(limit: u32) -> usize {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if limit == 0 {
        MAX_VIEW_PAGE_ENTRIES
    } else {
        limit.min(MAX_VIEW_PAGE_ENTRIES)
    }
}

/// Up to `limit` (see [`page_limit`]) chat list entries of `user` after the
/// chat `after`, and whether more follow.
fn chat_list_page<T: Txn + ?Sized>(
    txn: &T,
    user: chorus_schema::UserId,
    after: Option<chorus_schema::ChatId>,
    limit: u32,
) -> store::Result<(Vec<(chorus_schema::ChatId, chat_list::ChatListEntry)>, bool)> {
    let limit = page_limit(limit);
    let prefix = keys::chat_list_of(user);
    let from = match after {
        // The first key after the chat's own key.
        Some(chat) => {
            let mut k = keys::chat_list(user, &chat);
            k.push(0);
            k
        }
        None => prefix.clone(),
    };
    #[expect(clippy::expect_used, reason = "a key prefix starts with its family tag, below 0xff")]
    let to = keys::prefix_end(&prefix).expect("a chat list prefix is not all 0xff");
    // One entry past the page says whether more follow; nothing further is read.
    let mut rows = txn.scan(&from, &to, limit.saturating_add(1))?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let page = rows
        .into_iter()
        .map(|(k, v)| Ok((keys::chat_at(&k, keys::AFTER_TAG + 8), store::decode(&k, &v)?)))
        .collect::<store::Result<Vec<_>>>()?;
    Ok((page, more))
}

#[cfg(test)]
mod tests {
    use chorus_schema::{ChatId, DeviceId, Seq, UserId};

    use super::*;

    #[test]
    fn a_tailed_record_of_another_partition_is_an_error_not_a_panic() {
        let record = |p: u16| EventRecord {
            partition: PartitionId(p),
            offset: chorus_schema::Offset(0),
            log_index: chorus_schema::LogIndex(1),
            event: chorus_schema::Event {
                at_ms: 0,
                origin: chorus_schema::Origin {
                    user: UserId(1),
                    device: DeviceId(1),
                    client_msg_id: chorus_schema::ClientMsgId(1),
                },
                body: chorus_schema::EventBody::UserRegistered { user: UserId(1), phone: "+1".into() },
            },
        };
        check_tailed(PartitionId(3), &record(3)).unwrap();
        for forged in [4, 60_000, u16::MAX] {
            let e = check_tailed(PartitionId(3), &record(forged)).unwrap_err();
            assert!(matches!(e, Error::WrongPartition { asked: PartitionId(3), .. }), "{e}");
        }
    }

    #[test]
    fn config_defaults_are_valid_and_rules_hold() {
        Config::default().validate().unwrap();
        let bad = |f: &dyn Fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            assert!(matches!(c.validate(), Err(Error::InvalidConfig(_))), "{c:?}");
        };
        bad(&|c| c.log_nodes.clear());
        bad(&|c| c.log_nodes = vec!["nohost".into()]);
        bad(&|c| c.batch_records_max = 0);
        bad(&|c| c.reconnect_backoff_min_ms = 10_000);
        let nats =
            |url: &str, seed: &str| BusConfig::Nats { url: url.into(), ca: "ca.pem".into(), nkey_seed: seed.into() };
        bad(&|c| c.bus = nats("", "p.nk"));
        bad(&|c| c.bus = nats("nats://x:4222", ""));
        bad(&|c| c.view_key = PathBuf::new());
        let toml_like: Config = serde_json::from_str(
            r#"{"log_nodes":["a:1"],"bus":{"kind":"nats","url":"nats://x:4222","ca":"ca.pem","nkey_seed":"p.nk"}}"#,
        )
        .unwrap();
        assert_eq!(toml_like.bus, nats("nats://x:4222", "p.nk"));
        assert_eq!(toml_like.batch_records_max, 512);
    }

    #[test]
    fn backoff_doubles_up_to_the_max() {
        let c = Config::default();
        assert_eq!(backoff(&c, 1), Duration::from_millis(50));
        assert_eq!(backoff(&c, 2), Duration::from_millis(100));
        assert_eq!(backoff(&c, 40), Duration::from_millis(5_000));
    }

    #[test]
    fn malformed_view_requests_get_error_replies() {
        use chorus_schema::bus::{ChatListRequest, InboxRequest, Query, SessionRequest, UserRequest};
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path()).unwrap();
        // A valid request one byte short, one of another view, garbage, too large.
        let session = ViewQuery::from(SessionRequest { user: UserId(1), device: DeviceId(2) }).encode();
        let user = ViewQuery::from(UserRequest { user: UserId(1) }).encode();
        for (subject, payload) in [
            (subject::VIEW_CHAT_LIST, &b""[..]),
            (subject::VIEW_CURSORS, &[0xff; 7][..]),
            (subject::VIEW_RECEIPT_STATUS, &[0u8; 5000][..]),
            (subject::VIEW_SESSION, &session[..session.len() - 1]),
            (subject::VIEW_USER, &session[..]),
            (subject::VIEW_INBOX, &user[..]),
            ("chorus.view.nothing", &user[..]),
        ] {
            let (reply, bad) = answer(&store, 4, subject, payload);
            assert!(bad, "{subject}");
            let r = bus::decode_reply(&reply).unwrap();
            assert_eq!(r.unwrap_err().code, ViewErrorCode::BadRequest, "{subject}");
        }
        // Well-formed requests about nothing: empty answers.
        fn ok<Q: Query>(store: &RocksStore, q: Q) -> Q::Answer {
            let q: ViewQuery = q.into();
            let (reply, bad) = answer(store, 4, q.subject(), &q.encode());
            assert!(!bad, "{q:?}");
            Q::answer(bus::decode_reply(&reply).unwrap().unwrap()).expect("an answer of the query's kind")
        }
        let q = ChatListRequest { user: UserId(1), after: None, limit: 0 };
        assert_eq!(ok(&store, q), ChatListPage { entries: vec![], more: false });
        assert_eq!(
            ok(&store, SessionRequest { user: UserId(1), device: DeviceId(2) }),
            SessionInfo { token_hash: None }
        );
        assert_eq!(ok(&store, UserRequest { user: UserId(1) }), UserInfo { registered: false, devices: vec![] });
        let chat = ChatId::group([1; 16]);
        let page = ok(&store, InboxRequest { user: UserId(1), chat, after: Seq(0), limit: 0 });
        assert_eq!(
            page,
            InboxPage { partition: PartitionId::for_key(&Key::Chat(chat), 4), entries: vec![], more: false }
        );
    }

    #[test]
    fn a_delivery_forwards_the_stored_bytes_verbatim() {
        let record = EventRecord {
            partition: PartitionId(0),
            offset: chorus_schema::Offset(7),
            log_index: chorus_schema::LogIndex(1),
            event: chorus_schema::Event {
                at_ms: 5,
                origin: chorus_schema::Origin {
                    user: UserId(1),
                    device: DeviceId(1),
                    client_msg_id: chorus_schema::ClientMsgId(1),
                },
                body: chorus_schema::EventBody::MessageSent {
                    chat: ChatId::direct(UserId(1), UserId(2)),
                    seq: Seq(1),
                    ciphertext: vec![0xc1; 100],
                    media: None,
                },
            },
        };
        let stored = StoredRecord::decode(Bytes::from(record.encode())).unwrap();
        let chat = ChatId::direct(UserId(1), UserId(2));
        let effect = Effect::Deliver { chat, seq: Seq(1), recipients: vec![UserId(1), UserId(2)] };
        let mut out = Vec::new();
        messages_of(effect, &stored, &mut out);
        let [out] = &out[..] else { panic!("{} messages for one delivery", out.len()) };
        assert_eq!(out.subject, subject::deliver(&chat));
        let d = Delivery::decode(&out.payload).unwrap();
        assert_eq!(d.record, stored.bytes, "the record bytes as the log served them");
        assert_eq!((d.chat, d.seq, d.recipients), (chat, Seq(1), vec![UserId(1), UserId(2)]));
        // A join is one small message per user who joined, on their subject.
        let mut out = Vec::new();
        messages_of(Effect::Joined { chat, seq: Seq(0), users: vec![UserId(1), UserId(2)] }, &stored, &mut out);
        let subjects: Vec<&str> = out.iter().map(|o| o.subject.as_str()).collect();
        assert_eq!(subjects, [subject::joined(UserId(1)), subject::joined(UserId(2))]);
        assert_eq!(ChatJoined::decode(&out[1].payload), Ok(ChatJoined { chat, user: UserId(2), seq: Seq(0) }));
    }

    #[test]
    fn the_schema_bus_limit_is_the_bus_limit() {
        assert_eq!(chorus_schema::MAX_BUS_PAYLOAD_BYTES, chorus_bus::PAYLOAD_BYTES_MAX);
    }

    #[test]
    fn page_limits_are_capped() {
        assert_eq!(page_limit(0), MAX_VIEW_PAGE_ENTRIES);
        assert_eq!(page_limit(1), 1);
        assert_eq!(page_limit(u32::MAX), MAX_VIEW_PAGE_ENTRIES);
    }
}
