//! `chorus jepsen`: a Jepsen run against a local cluster of real log-node
//! processes, with faults, a history, the checker's verdict and a report.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use chorus_jepsen::nemesis::FaultKind;
use chorus_jepsen::run::{self, ExecutorKind, RunConfig, RunReport};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds of workload (faults happen within them).
    #[arg(long, default_value_t = 60)]
    pub time: u64,
    /// Faults: a comma-separated list of `all`, `none`, `kill`, `pause`,
    /// `partition`, `disk` (groups) or kinds (`kill-leader`, `kill-minority`,
    /// `kill-all`, `pause-leader`, `partition-halves`, `partition-leader`,
    /// `partition-bridge`, `partition-one-way`, `lose-unsynced`, `power-failure`,
    /// `kill-projector`, `kill-nats`, `kill-edge`; group `services`).
    #[arg(long, default_value = "all")]
    pub nemesis: String,
    /// Seeds the schedule and the workload: the same seed gives the same plan.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Directory for history.jsonl, verdict.json, report.html (and the cluster).
    #[arg(long, default_value = "jepsen-out")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    #[arg(long, default_value_t = 8)]
    pub partitions: u16,
    /// Concurrent clients.
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// After the final heal, every chat must take a new send within this many seconds.
    #[arg(long, default_value_t = 30)]
    pub liveness_bound: u64,
    /// Keep the cluster's data directories even when the run is valid.
    #[arg(long)]
    pub keep_data: bool,
    /// Do not give clients fresh connections after an operation with unknown
    /// outcome: measure the log client's own fail-over.
    #[arg(long)]
    pub no_reconnect: bool,
    /// Run no nats-server and projector, and do not check the views (needs
    /// `--executor log`).
    #[arg(long)]
    pub no_views: bool,
    /// How operations reach chorus: `sdk` (registered devices on the client
    /// SDK through two edges; live deliveries and devices' own reads are
    /// checked) or `log` (commands appended to the log directly).
    #[arg(long, default_value = "sdk")]
    pub executor: String,
    /// Per mille of operations that drop a device's connection or restart its
    /// client (SDK executor).
    #[arg(long, default_value_t = 10)]
    pub reconnect_per_mille: u32,
}

/// The run as configured by `args`, with nodes run by `binary`.
///
/// # Errors
/// On an unknown nemesis name.
pub fn config(args: &Args, binary: PathBuf) -> Result<RunConfig> {
    let mut c = RunConfig::new(&args.out, binary);
    c.time = Duration::from_secs(args.time);
    c.nemesis = FaultKind::parse_list(&args.nemesis)?;
    c.seed = args.seed;
    c.nodes = args.nodes;
    c.partitions = args.partitions;
    c.workload.clients = args.clients;
    c.liveness_bound = Duration::from_secs(args.liveness_bound);
    c.keep_data = args.keep_data;
    c.workload.reconnect_after_info = !args.no_reconnect;
    c.views = !args.no_views;
    c.executor = ExecutorKind::parse(&args.executor)?;
    c.workload.reconnect_per_mille = args.reconnect_per_mille;
    if c.executor == ExecutorKind::Sdk && !c.views {
        bail!("--no-views needs --executor log (the edges need the projector and the bus)");
    }
    if !c.views {
        c.nemesis.retain(|k| !k.needs_services());
    }
    if c.executor != ExecutorKind::Sdk {
        c.nemesis.retain(|k| !k.needs_edges());
    }
    Ok(c)
}

/// A few lines for the terminal.
pub fn summary(r: &RunReport) -> String {
    let mut s = format!(
        "jepsen seed {} ({:?} executor): {} — {} ok / {} fail / {} info operations, {} final reads, {} faults, {} packets dropped\n",
        r.seed,
        r.executor,
        if r.valid { "valid" } else { "INVALID" },
        r.verdict.ok,
        r.verdict.fail,
        r.verdict.info,
        r.reads,
        r.faults.len(),
        r.packets_dropped
    );
    if let Some(sdk) = &r.sdk {
        s.push_str(&format!(
            "  devices: {} live deliveries and ticks observed, {} final reads by devices; SDK: {} logins, {} disconnects, {} sends resent, {} duplicate deliveries dropped, {} drops and {} restarts asked\n",
            r.observed, r.device_reads, sdk.connects, sdk.disconnects, sdk.resent, sdk.duplicates_dropped, sdk.drops, sdk.restarts
        ));
    }
    for f in &r.faults {
        s.push_str(&format!(
            "  fault {:>2} {:<18} targets {:?}: {} ms, writes stalled {} ms, recovered {} after heal\n",
            f.id,
            f.kind.name(),
            f.targets,
            f.duration_ms,
            f.stall_ms,
            f.recovery_ms.map(|m| format!("{m} ms")).unwrap_or_else(|| "never".into())
        ));
    }
    if let Some(l) = &r.lagging {
        s.push_str(&format!("  replicas did not converge: {l}\n"));
    }
    if !r.reseeds.is_empty() {
        let each: Vec<String> = r.reseeds.iter().map(|(n, c)| format!("node {n} × {c}")).collect();
        s.push_str(&format!("  re-seeded from peers after damaged files: {}\n", each.join(", ")));
    }
    for d in &r.down {
        s.push_str(&format!(
            "  node {} did not start after the final heal:\n    {}\n",
            d.node,
            d.log_tail.replace('\n', "\n    ")
        ));
    }
    if let Some(v) = &r.views {
        s.push_str(&format!(
            "  views: {} live entries vs {} rebuilt from the log; projector caught up in {}\n",
            v.live_entries,
            v.rebuilt_entries,
            v.caught_up_ms.map(|m| format!("{m} ms")).unwrap_or_else(|| "never".into())
        ));
    }
    s.push_str(&format!(
        "  liveness: every chat writable {} after the final heal (bound {} ms)\n",
        r.liveness.recovered_ms.map(|m| format!("{m} ms")).unwrap_or_else(|| "never".into()),
        r.liveness.bound_ms
    ));
    if r.sdk.is_some() {
        s.push_str(&format!(
            "  liveness: every direct probe on every recipient device {} after the final heal{}\n",
            r.liveness.delivered_ms.map(|m| format!("{m} ms")).unwrap_or_else(|| "never".into()),
            if r.liveness.undelivered.is_empty() {
                String::new()
            } else {
                format!("; not delivered: {:?}", r.liveness.undelivered)
            }
        ));
    }
    for (inv, list) in &r.verdict.anomalies {
        for a in list.iter().take(3) {
            s.push_str(&format!("  {inv:?}: {a}\n"));
        }
        if list.len() > 3 {
            s.push_str(&format!("  {inv:?}: … {} more\n", list.len() - 3));
        }
    }
    s
}

pub async fn run(args: Args) -> Result<()> {
    let binary = std::env::current_exe()?;
    let config = config(&args, binary)?;
    let report = run::run(config).await?;
    print!("{}", summary(&report));
    println!("  results in {}", args.out.display());
    if !report.valid {
        bail!("the run found anomalies or broke the liveness bound (see {})", args.out.join("verdict.json").display());
    }
    Ok(())
}
