//! `chorus bench export`: how fast the log's events become analyst rows.
//!
//! Fills a local 3-node cluster with a chat workload (direct messages and
//! their receipts, [`super::replay::fill`]), then times
//! [`crate::commands::export::export`] to Parquet in this process: events/s
//! (wall clock) and events/s per core (events over the CPU seconds this
//! process spent: reading, decoding, building rows, encoding Parquet; the
//! log-nodes serving the reads are other processes and not counted).
//! Target: ≥ 500,000 events/s per core, with a release build.
//!
//! Then the second half, views rebuilt per second by `chorus replay`, per
//! core, on the same log ([`super::replay::measure`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use chorus_analytics::Format;
use chorus_log_node::ClientConfig;
use chorus_testkit::cluster::{self as launcher, Cluster, ClusterSpec};

use crate::commands::export::{export, ExportArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Events to fill the log with (at least; writers finish their last send).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    #[arg(long, default_value_t = 16)]
    pub partitions: u16,
    /// Ciphertext bytes per message (read and skipped by the exporter).
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Concurrent writers filling the log.
    #[arg(long, default_value_t = 512)]
    pub writers: u64,
    /// Export runs (each into a fresh directory); every run is printed.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    #[arg(long, default_value_t = 128 * 1024)]
    pub row_group_rows: usize,
    /// Cluster and output directory (wiped first).
    #[arg(long, default_value = "target/bench-export")]
    pub dir: PathBuf,
}

pub async fn run(args: Args) -> Result<()> {
    launcher::clean_dir(&args.dir)?;
    let mut spec = ClusterSpec::new(args.dir.join("cluster"), std::env::current_exe()?, 3);
    spec.partitions = args.partitions;
    spec.log_filter = "warn".into();
    let mut cluster = Cluster::create(spec).await?;
    cluster.start_all()?;
    let writer = cluster.wait_ready(Duration::from_secs(60)).await?;
    println!(
        "bench export: 3 log-nodes (processes), {} partitions; filling with {} events: direct messages of {} B from {} writers, each delivered-acked, every fourth read-acked …",
        args.partitions, args.events, args.payload, args.writers
    );
    let t0 = Instant::now();
    let filled = super::replay::fill(&writer, args.events, args.writers, args.payload).await?;
    println!("  filled with {filled} events in {:.1} s", t0.elapsed().as_secs_f64());

    // The export half.
    let operator = cluster.admin(ClientConfig::default()).await?;
    let node = cluster.client_addrs().into_iter().next().unwrap_or_default();
    let mut per_core = Vec::new();
    for run in 1..=args.runs {
        let out = args.dir.join(format!("export-{run}"));
        let export_args = ExportArgs {
            format: Format::Parquet,
            out,
            partitions: Vec::new(),
            from_offset: None,
            from_time: None,
            to_offset: None,
            to_time: None,
            from_manifest: false,
            pseudonymize: None,
            row_group_rows: args.row_group_rows,
            part_rows: 4 * 1024 * 1024,
            batch: 4096,
            read_ahead: 4,
        };
        let r = export(&operator, &node, &export_args).await?;
        let rate = r.records as f64 / r.seconds.max(1e-9);
        let core = r.records as f64 / r.cpu_seconds.max(1e-9);
        println!(
            "  run {run}: {} events to Parquet in {:.2} s = {rate:.0} events/s; {:.2} CPU s = {core:.0} events/s per core ({} files)",
            r.records,
            r.seconds,
            r.cpu_seconds,
            r.files.len()
        );
        per_core.push(core);
    }
    if !per_core.is_empty() {
        let (med, lo, hi) = super::stats::median_min_max(&per_core);
        println!("export events/s per core: median {med:.0} (min {lo:.0}, max {hi:.0}); target ≥ 500000");
    }

    // The replay half: every view rebuilt from the same log, as `chorus
    // replay` does, in this process.
    println!("replay: every view rebuilt from the log into a fresh store, {} runs …", args.runs);
    let runs = super::replay::measure(&operator, &cluster, &args.dir, args.runs).await?;
    super::replay::summarize(&runs);

    drop(cluster);
    Ok(())
}
