//! One Jepsen run, end to end: start the cluster (and the edges), register
//! the devices, set up the chats, run the workload and the nemesis together,
//! heal, check liveness, read everything back from the log and from every
//! device, check the history, and write the results.
//!
//! ```text
//!  Cluster::create ─▶ start, wait ready ─▶ nats, projector, edges ─▶ register devices ─▶ groups
//!  ─▶ ┬ workload (clients) ┬─▶ heal ─▶ liveness probes (acked, and delivered to the recipient's devices)
//!     └ nemesis (schedule) ┘
//!  ─▶ close the devices' clients ─▶ converge ─▶ read back the log ─▶ projector caught up ─▶ devices' final syncs
//!  ─▶ checker::check + replica divergence + lost receipts + views ─▶ DIR/history.jsonl, verdict.json, report.html
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chorus_log_node::config::RaftConfig;
use chorus_log_node::ClientConfig;
use chorus_schema::{ChatId, DeviceId, UserId};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use tokio::sync::Mutex;

use crate::analysis::{self, FaultReport, Throughput};
use crate::checker::{self, Invariant, Verdict};
use crate::error::{io, Error, Result};
use crate::history::{Entry, Op, Outcome, Value};
use crate::nemesis::{FaultKind, Nemesis, Schedule, Timing, Window};
use crate::readback;
use crate::recorder::Recorder;
use crate::report;
use crate::sdk::{SdkExecutor, SdkStats};
use crate::views::{self, ViewsReport};
use crate::workload::{Connect, Executor, LogExecutor, Universe, Workload, WorkloadSpec, PROBE_PROCESS};
use chorus_testkit::cluster::{Cluster, ClusterSpec};

/// What carries out the workload's operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// Real devices through two edges and the client SDK.
    Sdk,
    /// Commands appended to the log directly (`LogClient`); no edges.
    Log,
}

impl ExecutorKind {
    /// Parses `sdk` or `log`.
    ///
    /// # Errors
    /// On any other name.
    pub fn parse(name: &str) -> Result<ExecutorKind> {
        match name {
            "sdk" => Ok(ExecutorKind::Sdk),
            "log" => Ok(ExecutorKind::Log),
            other => Err(Error::Invalid(format!("unknown executor {other:?}; use sdk or log"))),
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// How long the workload (and the nemesis) runs.
    pub time: Duration,
    pub nemesis: Vec<FaultKind>,
    pub timing: Timing,
    pub seed: u64,
    /// Results go here (made if missing); the cluster lives in `out/cluster`.
    pub out: PathBuf,
    pub nodes: usize,
    pub partitions: u16,
    /// The `chorus` binary that runs the nodes.
    pub binary: PathBuf,
    pub workload: WorkloadSpec,
    /// After the final heal, a send to every chat must be acknowledged within this.
    pub liveness_bound: Duration,
    /// Keep the cluster's data directories after a valid run.
    pub keep_data: bool,
    /// Run a nats-server and a projector, and check the live views against a
    /// rebuild from the log at the end (the SDK executor needs them).
    pub views: bool,
    pub executor: ExecutorKind,
    /// Edge processes (SDK executor).
    pub edges: usize,
    /// Per-connection limits of the edges.
    pub session: chorus_edge::session::Config,
}

impl RunConfig {
    pub fn new(out: impl Into<PathBuf>, binary: impl Into<PathBuf>) -> RunConfig {
        RunConfig {
            time: Duration::from_secs(60),
            nemesis: FaultKind::ALL.to_vec(),
            timing: Timing::default(),
            seed: 1,
            out: out.into(),
            nodes: 3,
            partitions: 8,
            binary: binary.into(),
            workload: WorkloadSpec::default(),
            liveness_bound: Duration::from_secs(30),
            keep_data: false,
            views: true,
            executor: ExecutorKind::Sdk,
            edges: 2,
            // Every device registers and logs in from the loopback address.
            session: chorus_edge::session::Config {
                limits: chorus_edge::session::LimitsConfig::unlimited(),
                ..chorus_edge::session::Config::default()
            },
        }
    }
}

/// Whether writes came back after the final heal.
#[derive(Clone, Debug, Serialize)]
pub struct Liveness {
    pub bound_ms: u64,
    /// From the final heal until every chat took a new send (`None`: some never did).
    pub recovered_ms: Option<u64>,
    /// Probe sends that failed to be acknowledged within the bound.
    pub stuck_chats: Vec<ChatId>,
    /// SDK executor: from the final heal until every direct chat's probe had
    /// reached every device of the recipient (`None`: some did not, or not checked).
    pub delivered_ms: Option<u64>,
    /// Probes not delivered to a recipient device within the bound, as
    /// `chat → user/device`.
    pub undelivered: Vec<String>,
}

impl Liveness {
    pub fn holds(&self) -> bool {
        self.recovered_ms.is_some_and(|ms| ms <= self.bound_ms)
            && self.stuck_chats.is_empty()
            && self.undelivered.is_empty()
    }
}

/// A node that would not start after the final heal.
#[derive(Clone, Debug, Serialize)]
pub struct DownNode {
    pub node: u64,
    /// The last lines of its log: why it stopped.
    pub log_tail: String,
}

/// Everything a run found; `verdict.json`.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// No anomaly and liveness held.
    pub valid: bool,
    pub seed: u64,
    pub time_s: f64,
    pub nodes: usize,
    pub partitions: u16,
    pub executor: ExecutorKind,
    pub nemesis: Vec<FaultKind>,
    pub schedule: Schedule,
    pub verdict: Verdict,
    pub liveness: Liveness,
    pub faults: Vec<FaultReport>,
    /// The views check (`None`: views were not checked).
    pub views: Option<ViewsReport>,
    /// Nodes that did not start again after the final heal (left out of the
    /// final phase).
    pub down: Vec<DownNode>,
    /// Re-seeds from peers each node completed (after damaged files).
    pub reseeds: BTreeMap<u64, usize>,
    /// Set when the replicas did not converge after the final heal (each
    /// partition was then read from its most advanced replica).
    pub lagging: Option<String>,
    /// Operations per kind and outcome, e.g. `send.ok`.
    pub ops: BTreeMap<String, usize>,
    /// Final reads from the log (one per device and chat).
    pub reads: usize,
    /// Final reads by the devices themselves (SDK executor).
    pub device_reads: usize,
    /// Live deliveries and receipt ticks the devices observed (SDK executor).
    pub observed: usize,
    /// The SDK clients' counters (SDK executor).
    pub sdk: Option<SdkStats>,
    pub packets_dropped: u64,
    /// Invariants (or parts) this run could not check, and why.
    pub not_checked: Vec<String>,
    pub throughput: Throughput,
}

/// Runs one test and writes `history.jsonl`, `verdict.json` and `report.html`
/// into `config.out`.
///
/// # Errors
/// When the harness itself cannot go on (cluster does not start or converge,
/// files cannot be written). Anomalies are not errors: see [`RunReport::valid`].
pub async fn run(config: RunConfig) -> Result<RunReport> {
    if config.nemesis.iter().any(|k| k.needs_services()) && !config.views {
        return Err(Error::Invalid("kill-projector and kill-nats need the projector and the bus (views on)".into()));
    }
    if config.executor == ExecutorKind::Sdk && !config.views {
        return Err(Error::Invalid("the SDK executor needs the projector and the bus (views on)".into()));
    }
    if config.nemesis.iter().any(|k| k.needs_edges()) && config.executor != ExecutorKind::Sdk {
        return Err(Error::Invalid("kill-edge needs edges: the SDK executor".into()));
    }
    if config.executor == ExecutorKind::Sdk && config.edges == 0 {
        return Err(Error::Invalid("the SDK executor needs at least one edge".into()));
    }
    if config.views && !chorus_testkit::nats::nats_installed() {
        return Err(Error::Invalid(
            "checking views needs `nats-server` on PATH (apt-get install nats-server), or turn views off".into(),
        ));
    }
    std::fs::create_dir_all(&config.out).map_err(io("create", &config.out))?;
    let cluster_dir = config.out.join("cluster");
    if cluster_dir.exists() {
        std::fs::remove_dir_all(&cluster_dir).map_err(io("remove", &cluster_dir))?;
    }
    let mut spec = ClusterSpec::new(&cluster_dir, &config.binary, config.nodes);
    spec.partitions = config.partitions;
    // Every node behind a proxy: the partition nemeses cut links for real.
    spec.proxies = true;
    spec.append_timeout_ms = 3_000;
    if config.nemesis.iter().any(|k| k.needs_sync_shim()) {
        spec.sync_shim = Some(crate::sync_shim().ok_or_else(|| {
            Error::Invalid(
                "the lose-unsynced and power-failure nemeses need the sync shim, which was not built (no C compiler?)"
                    .into(),
            )
        })?);
    }
    spec.raft = RaftConfig { heartbeat_ms: 150, election_min_ms: 600, election_max_ms: 1200, ..RaftConfig::default() };
    let mut cluster = Cluster::create(spec).await?;
    cluster.start_all()?;
    let admin = cluster.wait_ready(Duration::from_secs(60)).await?;
    if config.views {
        cluster.start_services(Duration::from_secs(30)).await?;
    }
    let sdk_run = config.executor == ExecutorKind::Sdk;
    if sdk_run {
        let edge = chorus_edge::Config {
            session: config.session.clone(),
            // An append stuck on a dead log-node gives up (the client resends
            // with the same id) well before the SDK's own patience runs out.
            append_deadline_ms: 5_000,
            ..chorus_edge::Config::default()
        };
        cluster.start_edges(config.edges, &edge).await?;
    }
    tracing::info!(nodes = config.nodes, partitions = config.partitions, views = config.views, executor = ?config.executor, "cluster ready");

    let recorder = Arc::new(Recorder::new());
    let schedule = Schedule::generate(config.seed, config.time, &config.nemesis, &config.timing);
    recorder.push(Entry::Meta {
        start_wall_ms: recorder.start_wall_ms(),
        params: serde_json::json!({
            "seed": config.seed,
            "time_s": config.time.as_secs_f64(),
            "nodes": config.nodes,
            "partitions": config.partitions,
            "nemesis": config.nemesis.iter().map(|k| k.name()).collect::<Vec<_>>(),
            "clients": config.workload.clients,
            "executor": config.executor,
            "edges": if sdk_run { config.edges } else { 0 },
            "reconnect_after_info": config.workload.reconnect_after_info,
            "views": config.views,
        }),
    });
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut universe = Universe::generate(&config.workload, &mut rng);
    let credentials = if sdk_run {
        let edges: Vec<(String, PathBuf)> = cluster.edges.iter().map(|e| (e.listen.clone(), e.sms_path())).collect();
        let c = crate::sdk::register_all(&mut universe, &edges, &cluster.edge_ca).await?;
        tracing::info!(devices = c.len(), "devices registered through the edges");
        c
    } else {
        Vec::new()
    };
    let mut spec = config.workload.clone();
    if sdk_run {
        // An app waits for the SDK's answer, which comes once the send is
        // committed or refused for good (the SDK retries the rest): longer
        // than an edge's append deadline, so that what the edge answers
        // reaches the history rather than a timeout.
        spec.op_timeout = spec.op_timeout.max(crate::sdk::OP_TIMEOUT);
    } else {
        spec.reconnect_per_mille = 0;
    }
    let client_config = ClientConfig {
        append_deadline_ms: u64::try_from(
            config.workload.op_timeout.saturating_sub(Duration::from_millis(500)).as_millis(),
        )
        .unwrap_or(u64::MAX),
        // A batch stuck on a dead node must not hold back the client's next
        // operations on that partition.
        batches_in_flight_max: 4,
        ..ClientConfig::default()
    };
    // One LogClient per client task (plus one for the probes), each listing
    // the nodes from a different first one.
    let ids = LogExecutor::id_counter();
    let mut logs = Vec::new();
    for c in 0..=config.workload.clients {
        let mut seeds = cluster.client_addrs();
        let n = seeds.len();
        seeds.rotate_left(c % n);
        let connect = Connect { seeds, tls: cluster.writer.clone(), config: client_config.clone() };
        logs.push(LogExecutor::connect(connect, &universe, ids.clone()).await?);
    }
    // With the SDK, every client task shares the devices (each device belongs
    // to one task); roster edits go through the actor's device too.
    let sdk = if sdk_run {
        let e = SdkExecutor::connect(
            &credentials,
            &cluster.edge_addrs(),
            cluster.edge_ca.clone(),
            &universe,
            recorder.clone(),
            Duration::from_secs(30),
        )
        .await?;
        Some(e)
    } else {
        None
    };
    let executors: Vec<Executor> = logs
        .into_iter()
        .map(|l| match &sdk {
            Some(s) => Executor::Sdk(s.clone()),
            None => Executor::Log(l),
        })
        .collect();
    let workload = Workload::new(spec, universe, executors, recorder.clone());
    workload.create_groups(&admin, Duration::from_secs(30)).await?;
    recorder.push(workload.universe.setup_entry());

    let cluster = Arc::new(Mutex::new(cluster));
    let nemesis = Nemesis { cluster: cluster.clone(), client: admin.clone(), recorder: recorder.clone() };
    let offset = recorder.start().elapsed();
    let deadline = tokio::time::Instant::now() + config.time;
    let load = {
        let w = workload.clone();
        let seed = config.seed;
        tokio::spawn(async move { w.run(seed, deadline).await })
    };
    let faults = nemesis.run(&schedule, offset).await;
    let _ = load.await;
    // The history so far, in case the final phase cannot finish (the full
    // history replaces it at the end).
    let history_path = config.out.join("history.jsonl");
    std::fs::write(&history_path, recorder.history().to_jsonl()).map_err(io("write", &history_path))?;
    let windows: Vec<Window> = match faults {
        Ok(w) => w,
        Err(e) => {
            cluster.lock().await.heal()?;
            return Err(e);
        }
    };

    // Heal, then every chat must take a new send within the bound.
    let heal_ns = recorder.now_ns();
    cluster.lock().await.heal()?;
    recorder.push(Entry::Nemesis {
        id: 0,
        time_ns: heal_ns,
        phase: crate::history::FaultPhase::Stop,
        fault: "final-heal".into(),
        targets: Vec::new(),
        detail: "every link healed, every node running".into(),
    });
    // A node that exits right after its restart refuses to start (e.g. it
    // found a damaged file): the final phase goes on without it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut down: Vec<DownNode> = {
        let mut c = cluster.lock().await;
        let exited = c.exited();
        let down = exited.iter().map(|id| DownNode { node: *id, log_tail: c.log_tail(*id, 5) }).collect();
        c.excluded.extend(exited);
        down
    };
    for d in &down {
        tracing::warn!(node = d.node, log = %d.log_tail, "node does not start; left out of the final phase");
    }
    if let Some(s) = &sdk {
        // A device whose client restart could not connect before the
        // workload ended has none: it connects now (the probes need it).
        let left = Duration::from_nanos(
            (heal_ns + u64::try_from(config.liveness_bound.as_nanos()).unwrap_or(u64::MAX))
                .saturating_sub(recorder.now_ns()),
        );
        for (u, d) in s.ensure_connected(left).await {
            tracing::warn!(user = %u, device = %d, "device cannot connect after the final heal");
        }
    }
    let liveness = probe(&workload, sdk.as_ref(), config.liveness_bound, heal_ns).await;
    tracing::info!(?liveness, "liveness probes done");

    let mut cluster = cluster.lock().await;
    // A node whose files were damaged comes back by re-seeding from its peers:
    // one that has not finished by now is not a full replica again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cluster.reseeding().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in cluster.reseeding() {
        let log_tail = format!("still re-seeding from its peers 60 s after the heal:\n{}", cluster.log_tail(id, 5));
        tracing::warn!(node = id, "node still re-seeding; left out of the final phase");
        down.push(DownNode { node: id, log_tail });
        cluster.excluded.insert(id);
    }
    let reseeds = cluster.reseeds();
    let sdk_stats = match &sdk {
        Some(s) => {
            // The devices stop: what their clients handed over is recorded, and
            // a send still pending in one cannot land after the read-back. The
            // edges restart, which ends any append still in flight in them.
            s.close_all().await;
            for e in &mut cluster.edges {
                let before = e.listening_count();
                e.kill();
                e.start()?;
                e.wait_listening(before + 1, Duration::from_secs(30)).await?;
            }
            Some(s.stats())
        }
        None => None,
    };
    let admin = cluster.wait_ready(Duration::from_secs(60)).await?;
    // Replicas that never agree are a finding, not a harness failure: the
    // reads then take each partition from its most advanced replica.
    let (converged, lagging) = match cluster.wait_converged(&admin, Duration::from_secs(60)).await {
        Ok(c) => (Some(c), None),
        Err(e) => {
            tracing::warn!(error = %e, "replicas did not converge");
            (None, Some(e.to_string()))
        }
    };
    let replicas = readback::read_all(&cluster, &admin, Duration::from_secs(10)).await?;
    let initial: BTreeMap<ChatId, Vec<UserId>> = match workload.universe.setup_entry() {
        Entry::Setup { chats, .. } => chats.into_iter().map(|c| (c.chat, c.members)).collect(),
        _ => BTreeMap::new(),
    };
    let devices: Vec<(UserId, DeviceId)> = workload.universe.devices.clone();
    let reads = readback::record_reads(
        &recorder,
        &replicas,
        &devices,
        &initial,
        config.partitions,
        PROBE_PROCESS + 1,
        converged.is_some(),
    );

    // Each device's own final read, once the projector (whose views the
    // edges sync from) holds the whole log.
    let mut device_reads = 0;
    let mut caught_up = None;
    if let (Some(s), Some(converged)) = (&sdk, &converged) {
        caught_up = views::wait_caught_up(&mut cluster, converged, Duration::from_secs(60)).await?;
        let (chats, expected) = device_expectations(&recorder.history());
        device_reads = s.final_reads(&recorder, &chats, &expected, Duration::from_secs(30)).await;
        tracing::info!(device_reads, ?caught_up, "devices' final reads done");
    }

    let history = recorder.history();
    let mut verdict = checker::check(&history);
    let ops = history.operations();
    let extra = readback::divergence(&replicas).into_iter().chain(readback::lost_receipts(&replicas, &ops));
    let views = match (&converged, config.views) {
        (Some(converged), true) => {
            let (anomalies, report) =
                views::check(&mut cluster, &admin, converged, &config.out, Duration::from_secs(60)).await?;
            verdict.anomalies.entry(Invariant::Views).or_default().extend(anomalies);
            Some(report)
        }
        _ => None,
    };
    for a in extra {
        verdict.anomalies.entry(a.invariant).or_default().push(a);
    }
    let faults = analysis::faults(&windows, &ops, config.partitions);
    let throughput = analysis::throughput(&ops);
    let report = RunReport {
        valid: verdict.is_valid() && liveness.holds() && down.is_empty() && lagging.is_none(),
        down,
        reseeds,
        lagging,
        seed: config.seed,
        time_s: config.time.as_secs_f64(),
        nodes: config.nodes,
        partitions: config.partitions,
        executor: config.executor,
        nemesis: config.nemesis.clone(),
        schedule,
        liveness,
        faults,
        ops: analysis::op_counts(&ops),
        reads,
        device_reads,
        observed: history.observations().count(),
        sdk: sdk_stats,
        packets_dropped: cluster.links.counts().0,
        not_checked: [
            (!config.views).then(|| "views: off in this run".to_string()),
            (config.views && converged.is_none()).then(|| "views: the replicas did not converge".to_string()),
            (!sdk_run).then(|| {
                "live deliveries and devices' own reads: the log executor has no edges; devices' final reads come from the log and the roster rule".to_string()
            }),
            (sdk_run && converged.is_none()).then(|| "devices' final reads: the replicas did not converge".to_string()),
            (sdk_run && converged.is_some() && caught_up.is_none())
                .then(|| "devices' final reads were taken before the projector had caught up".to_string()),
            sdk_run.then(|| "acks: through the SDK they are fire and forget (recorded as info), so the log's cursors are not held to them".to_string()),
        ]
        .into_iter()
        .flatten()
        .collect(),
        views,
        throughput,
        verdict,
    };

    std::fs::write(&history_path, history.to_jsonl()).map_err(io("write", &history_path))?;
    let verdict_path = config.out.join("verdict.json");
    let json =
        serde_json::to_string_pretty(&report).map_err(|e| Error::Encode { what: "verdict", reason: e.to_string() })?;
    std::fs::write(&verdict_path, json).map_err(io("write", &verdict_path))?;
    let html_path = config.out.join("report.html");
    std::fs::write(&html_path, report::html(&report, &ops, &windows)).map_err(io("write", &html_path))?;
    drop(cluster);
    if report.valid && !config.keep_data {
        let _ = std::fs::remove_dir_all(&cluster_dir);
        let _ = std::fs::remove_dir_all(config.out.join("rebuilt-views"));
    }
    Ok(report)
}

/// Sends one new message to every chat (as the sender's first device),
/// retrying (same `client_msg_id`) until acknowledged or `bound` after
/// `heal_ns` has passed. With the SDK, each direct chat's probe must also
/// reach every device of the recipient within the bound.
async fn probe(workload: &Arc<Workload>, sdk: Option<&SdkExecutor>, bound: Duration, heal_ns: u64) -> Liveness {
    let chats = workload.universe.chats();
    let recorder = workload.recorder.clone();
    let deadline_ns = heal_ns + u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
    let deadline = tokio::time::Instant::from_std(recorder.start()) + Duration::from_nanos(deadline_ns);
    let tasks: Vec<_> = chats
        .into_iter()
        .enumerate()
        .map(|(i, (chat, sender))| {
            let w = workload.clone();
            let recorder = recorder.clone();
            let sdk = sdk.cloned();
            tokio::spawn(async move {
                let device = w.universe.first_device(sender);
                let op = Op::Send { chat, sender, device, client_msg_id: w.send_id() };
                let (acked_ns, seq) = loop {
                    match w.perform(w.spec.clients, PROBE_PROCESS + 2 + i as u64, op.clone()).await {
                        Outcome::Ok(Value::Sent { seq, .. }) => break (recorder.now_ns(), seq),
                        Outcome::Ok(_) | Outcome::Fail(_) => return (chat, None, Vec::new()),
                        Outcome::Info(_) if recorder.now_ns() > deadline_ns => return (chat, None, Vec::new()),
                        Outcome::Info(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                };
                // Delivery to the other member of a direct chat (a group's
                // roster at the end is not known for certain here).
                let mut missing = Vec::new();
                let mut delivered_ns = None;
                if let (Some(sdk), Some((a, b))) = (&sdk, w.universe.direct.get(&chat)) {
                    let recipient = if *a == sender { *b } else { *a };
                    delivered_ns = Some(acked_ns);
                    for (u, d) in w.universe.devices.iter().filter(|(u, _)| *u == recipient) {
                        if sdk.wait_received(*u, *d, chat, seq, deadline).await {
                            delivered_ns = delivered_ns.map(|t: u64| t.max(recorder.now_ns()));
                        } else {
                            missing.push(format!("{chat} → {u}/{d}"));
                        }
                    }
                }
                (chat, Some((acked_ns, delivered_ns)), missing)
            })
        })
        .collect();
    let mut last = Some(heal_ns);
    let mut delivered = sdk.map(|_| heal_ns);
    let mut stuck = Vec::new();
    let mut undelivered = Vec::new();
    for t in tasks {
        match t.await {
            Ok((_, Some((at, got)), missing)) if at <= deadline_ns => {
                last = last.map(|l| l.max(at));
                if let Some(g) = got {
                    delivered = delivered.map(|d| d.max(g));
                }
                if !missing.is_empty() {
                    delivered = None;
                }
                undelivered.extend(missing);
            }
            Ok((chat, _, _)) => {
                stuck.push(chat);
                last = None;
                delivered = None;
            }
            Err(_) => {
                last = None;
                delivered = None;
            }
        }
    }
    Liveness {
        bound_ms: u64::try_from(bound.as_millis()).unwrap_or(u64::MAX),
        recovered_ms: last.map(|l| (l - heal_ns) / 1_000_000),
        stuck_chats: stuck,
        delivered_ms: delivered.map(|d| (d - heal_ns) / 1_000_000),
        undelivered,
    }
}

/// A value per device.
type PerDevice<T> = BTreeMap<(UserId, DeviceId), T>;

/// From the log-side final reads of `history`: the chats of each device, and
/// how many messages the log gives it (its own sends left out: the edge does
/// not echo them).
fn device_expectations(
    history: &crate::history::History,
) -> (PerDevice<std::collections::BTreeSet<ChatId>>, PerDevice<usize>) {
    let ops = history.operations();
    let sent_from: BTreeMap<(UserId, chorus_schema::ClientMsgId), DeviceId> = ops
        .iter()
        .filter_map(|o| match o.op {
            Op::Send { sender, device, client_msg_id, .. } => Some(((sender, client_msg_id), device)),
            _ => None,
        })
        .collect();
    let mut chats: BTreeMap<(UserId, DeviceId), std::collections::BTreeSet<ChatId>> = BTreeMap::new();
    let mut expected: BTreeMap<(UserId, DeviceId), usize> = BTreeMap::new();
    for o in &ops {
        if let (Op::Read { user, device, chat }, Outcome::Ok(Value::Read { items })) = (&o.op, &o.outcome) {
            chats.entry((*user, *device)).or_default().insert(*chat);
            let n = items
                .iter()
                .filter(|i| {
                    i.message.is_some_and(|(s, cmid)| !(s == *user && sent_from.get(&(s, cmid)) == Some(device)))
                })
                .count();
            *expected.entry((*user, *device)).or_default() += n;
        }
    }
    (chats, expected)
}

/// Whether `report` covers every invariant (each has an entry, empty or not).
pub fn covers_every_invariant(report: &RunReport) -> bool {
    Invariant::ALL.iter().all(|i| report.verdict.anomalies.contains_key(i))
}
