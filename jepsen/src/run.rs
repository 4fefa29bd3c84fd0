//! One Jepsen run, end to end: start the cluster, set up the chats, run the
//! workload and the nemesis together, heal, check liveness, read everything
//! back, check the history, and write the results.
//!
//! ```text
//!  Cluster::create ─▶ start, wait ready ─▶ groups ─▶ ┬ workload (clients) ┬─▶ heal ─▶ liveness probes
//!                                                    └ nemesis (schedule) ┘         ─▶ converge ─▶ read back
//!  ─▶ checker::check + replica divergence + lost receipts ─▶ DIR/history.jsonl, verdict.json, report.html
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
use crate::cluster::{Cluster, ClusterSpec};
use crate::error::{io, Error, Result};
use crate::history::{Entry, Op, Outcome};
use crate::nemesis::{FaultKind, Nemesis, Schedule, Timing, Window};
use crate::readback;
use crate::views::{self, ViewsReport};
use crate::recorder::Recorder;
use crate::report;
use crate::workload::{Connect, Executor, LogExecutor, Universe, Workload, WorkloadSpec, PROBE_PROCESS};

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
    /// rebuild from the log at the end.
    pub views: bool,
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
}

impl Liveness {
    pub fn holds(&self) -> bool {
        self.recovered_ms.is_some_and(|ms| ms <= self.bound_ms) && self.stuck_chats.is_empty()
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
    pub reads: usize,
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
    if config.views && !crate::services::nats_installed() {
        return Err(Error::Invalid("checking views needs `nats-server` on PATH (apt-get install nats-server), or turn views off".into()));
    }
    std::fs::create_dir_all(&config.out).map_err(io("create", &config.out))?;
    let cluster_dir = config.out.join("cluster");
    if cluster_dir.exists() {
        std::fs::remove_dir_all(&cluster_dir).map_err(io("remove", &cluster_dir))?;
    }
    let mut spec = ClusterSpec::new(&cluster_dir, &config.binary, config.nodes);
    spec.partitions = config.partitions;
    if config.nemesis.iter().any(|k| k.needs_sync_shim()) {
        spec.sync_shim = Some(crate::sync_shim().ok_or_else(|| {
            Error::Invalid("the lose-unsynced and power-failure nemeses need the sync shim, which was not built (no C compiler?)".into())
        })?);
    }
    spec.raft = RaftConfig { heartbeat_ms: 150, election_min_ms: 600, election_max_ms: 1200, ..RaftConfig::default() };
    let mut cluster = Cluster::create(spec).await?;
    cluster.start_all()?;
    let admin = cluster.wait_ready(Duration::from_secs(60)).await?;
    if config.views {
        cluster.start_services()?;
    }
    tracing::info!(nodes = config.nodes, partitions = config.partitions, views = config.views, "cluster ready");

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
            "reconnect_after_info": config.workload.reconnect_after_info,
            "views": config.views,
        }),
    });
    let mut rng = StdRng::seed_from_u64(config.seed);
    let universe = Universe::generate(&config.workload, &mut rng);
    let client_config = ClientConfig {
        append_deadline: config.workload.op_timeout.saturating_sub(Duration::from_millis(500)),
        // A batch stuck on a dead node must not hold back the client's next
        // operations on that partition.
        batches_in_flight_max: 4,
        ..ClientConfig::default()
    };
    // One LogClient per client task (plus one for the probes), each listing
    // the nodes from a different first one.
    let ids = LogExecutor::id_counter();
    let mut executors = Vec::new();
    for c in 0..=config.workload.clients {
        let mut seeds = cluster.client_addrs();
        let n = seeds.len();
        seeds.rotate_left(c % n);
        let connect = Connect { seeds, ca: cluster.ca.clone(), config: client_config.clone() };
        executors.push(Executor::Log(LogExecutor::connect(connect, &universe, ids.clone()).await?));
    }
    let workload = Workload::new(config.workload.clone(), universe, executors, recorder.clone());
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
    let liveness = probe(&workload, config.liveness_bound, heal_ns).await;
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

    let history = recorder.history();
    let mut verdict = checker::check(&history);
    let ops = history.operations();
    let extra = readback::divergence(&replicas).into_iter().chain(readback::lost_receipts(&replicas, &ops));
    let views = match (&converged, config.views) {
        (Some(converged), true) => {
            let (anomalies, report) = views::check(&mut cluster, &admin, converged, &config.out, Duration::from_secs(60)).await?;
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
        nemesis: config.nemesis.clone(),
        schedule,
        liveness,
        faults,
        ops: analysis::op_counts(&ops),
        reads,
        packets_dropped: cluster.links.counts().0,
        not_checked: [
            (!config.views).then(|| "views: off in this run".to_string()),
            (config.views && converged.is_none()).then(|| "views: the replicas did not converge".to_string()),
            Some("live deliveries: no edge yet; devices' final reads come from the log and the roster rule".into()),
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
    let json = serde_json::to_string_pretty(&report).map_err(|e| Error::Encode { what: "verdict", reason: e.to_string() })?;
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

/// Sends one new message to every chat, retrying (same `client_msg_id`) until
/// acknowledged or `bound` after `heal_ns` has passed.
async fn probe(workload: &Arc<Workload>, bound: Duration, heal_ns: u64) -> Liveness {
    let chats = workload.universe.chats();
    let recorder = workload.recorder.clone();
    let deadline_ns = heal_ns + bound.as_nanos() as u64;
    let tasks: Vec<_> = chats
        .into_iter()
        .enumerate()
        .map(|(i, (chat, sender))| {
            let w = workload.clone();
            let recorder = recorder.clone();
            tokio::spawn(async move {
                let op = Op::Send { chat, sender, device: DeviceId(1), client_msg_id: w.send_id() };
                loop {
                    match w.perform(w.spec.clients, PROBE_PROCESS + 2 + i as u64, op.clone()).await {
                        Outcome::Ok(_) => return (chat, Some(recorder.now_ns())),
                        Outcome::Fail(_) => return (chat, None),
                        Outcome::Info(_) if recorder.now_ns() > deadline_ns => return (chat, None),
                        Outcome::Info(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            })
        })
        .collect();
    let mut last = Some(heal_ns);
    let mut stuck = Vec::new();
    for t in tasks {
        match t.await {
            Ok((_, Some(at))) if at <= deadline_ns => last = last.map(|l| l.max(at)),
            Ok((chat, _)) => {
                stuck.push(chat);
                last = None;
            }
            Err(_) => last = None,
        }
    }
    Liveness {
        bound_ms: bound.as_millis() as u64,
        recovered_ms: last.map(|l| (l - heal_ns) / 1_000_000),
        stuck_chats: stuck,
    }
}

/// Whether `report` covers every invariant (each has an entry, empty or not).
pub fn covers_every_invariant(report: &RunReport) -> bool {
    Invariant::ALL.iter().all(|i| report.verdict.anomalies.contains_key(i))
}
