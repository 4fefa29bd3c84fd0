//! `chorus bench log`: committed appends per second on a local 3-node cluster
//! with fsync on, and commit latency at a fixed offered load.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use chorus_log_node::{ClientConfig, LogClient};
use chorus_schema::{ClientMsgId, Command, CommandBody, DeviceId, Origin, UserId};
use hdrhistogram::Histogram;

use super::stats::{median_min_max, process_cpu_us};
use chorus_testkit::cluster::{self as launcher, Cluster, ClusterSpec};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    #[arg(long, default_value_t = 64)]
    pub partitions: u16,
    /// Raft groups the partitions run on (0: one per node).
    #[arg(long, default_value_t = 0)]
    pub groups: u16,
    /// Proposals of one group in flight at once at its leader.
    #[arg(long, default_value_t = 2)]
    pub proposals_in_flight: usize,
    /// Concurrent writers in the closed-loop (throughput) runs.
    #[arg(long, default_value_t = 1024)]
    pub writers: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Throughput runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Ciphertext bytes per appended message.
    #[arg(long, default_value_t = 200)]
    pub payload: usize,
    /// Offered load of the latency run, appends/s (default: half the measured maximum).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Client batches of one group in flight at once.
    #[arg(long, default_value_t = 2)]
    pub in_flight: usize,
    /// Most commands per client batch (one Append frame).
    #[arg(long, default_value_t = 512)]
    pub batch_max: usize,
    /// Soak instead: this many minutes at the latency run's rate (half the
    /// measured maximum unless --rate), a line per minute (throughput,
    /// latency, RSS of every node).
    #[arg(long)]
    pub minutes: Option<u64>,
    /// Cluster directory (wiped first).
    #[arg(long, default_value = "target/bench-log")]
    pub dir: PathBuf,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn command(writer: u64, payload: usize) -> Command {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    Command {
        origin: Origin { user: UserId(writer), device: DeviceId(1), client_msg_id: ClientMsgId(id) },
        body: CommandBody::SendDirect {
            recipient: UserId(1_000_000 + writer),
            ciphertext: vec![0xAB; payload],
            media: None,
        },
    }
}

fn cpu_total_us(cluster: &Cluster) -> u64 {
    cluster.nodes.iter().filter_map(|n| n.pid()).filter_map(process_cpu_us).sum()
}

async fn closed_loop(client: &LogClient, writers: usize, payload: usize, dur: Duration) -> Result<u64> {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + dur;
    let mut tasks = Vec::new();
    for w in 0..writers as u64 {
        let (client, done, failed) = (client.clone(), done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop {
                match client.append(&command(w, payload)).await {
                    Ok(Ok(_)) => done.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let f = failed.load(Ordering::Relaxed);
    if f > 0 {
        bail!("{f} appends failed during the run");
    }
    Ok(done.load(Ordering::Relaxed))
}

/// Sends at `rate` on a fixed schedule; returns the latency histogram and how
/// many appends failed (an overloaded cluster makes clients give up).
async fn open_loop(client: &LogClient, rate: u64, payload: usize, dur: Duration) -> Result<(Histogram<u64>, u64)> {
    let hist = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
    let failed = Arc::new(AtomicU64::new(0));
    let start = tokio::time::Instant::now();
    let total = rate * dur.as_secs();
    let mut tasks = tokio::task::JoinSet::new();
    // The schedule is kept in batches of a millisecond's worth: one timer
    // wake per millisecond instead of one per append.
    let per_tick = (rate as f64 / 1000.0).max(f64::MIN_POSITIVE);
    let mut sent = 0u64;
    let mut tick = 0u64;
    while sent < total {
        tick += 1;
        #[expect(clippy::cast_possible_truncation, reason = "a non-negative count, rounded down (and saturating)")]
        let due = ((tick as f64 * per_tick) as u64).min(total);
        let scheduled = start + Duration::from_millis(tick);
        tokio::time::sleep_until(scheduled).await;
        for i in sent..due {
            let (client, hist, failed) = (client.clone(), hist.clone(), failed.clone());
            tasks.spawn(async move {
                match client.append(&command(i % 4096, payload)).await {
                    Ok(Ok(_)) => {
                        // Measured from the scheduled time, so queueing in the client shows.
                        let us = u64::try_from(scheduled.elapsed().as_micros()).unwrap_or(u64::MAX);
                        hist.lock().unwrap_or_else(std::sync::PoisonError::into_inner).saturating_record(us.max(1));
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        sent = due;
        while tasks.try_join_next().is_some() {}
    }
    while let Some(t) = tasks.join_next().await {
        t?;
    }
    let h = hist.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    Ok((h, failed.load(Ordering::Relaxed)))
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `minutes` of open-loop load at `rate`, one line per minute.
async fn soak(cluster: &Cluster, client: &LogClient, rate: u64, payload: usize, minutes: u64) -> Result<()> {
    println!("soak: {minutes} min at {rate} appends/s offered");
    for minute in 1..=minutes {
        let cpu0 = cpu_total_us(cluster);
        let t0 = Instant::now();
        let (h, failed) = open_loop(client, rate, payload, Duration::from_secs(60)).await?;
        let secs = t0.elapsed().as_secs_f64();
        let cpu = cpu_total_us(cluster) - cpu0;
        let rss: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| n.pid().and_then(rss_kib).map_or("-".into(), |k| format!("{:.0}", k as f64 / 1024.0)))
            .collect();
        println!(
            "  minute {minute}: {:.0} committed/s, {failed} gave up, p50 {:.2} ms p99 {:.2} ms, server CPU {:.1} µs/append, RSS MiB per node [{}]",
            h.len() as f64 / secs,
            h.value_at_quantile(0.50) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            cpu as f64 / h.len().max(1) as f64,
            rss.join(", ")
        );
    }
    Ok(())
}

pub async fn run(args: Args) -> Result<()> {
    launcher::clean_dir(&args.dir)?;
    let mut spec = ClusterSpec::new(&args.dir, std::env::current_exe()?, args.nodes);
    spec.partitions = args.partitions;
    spec.groups = args.groups;
    spec.proposer.proposals_in_flight_max = args.proposals_in_flight;
    spec.log_filter = "warn".into();
    let mut cluster = Cluster::create(spec).await?;
    cluster.start_all()?;
    let client = cluster.wait_ready(Duration::from_secs(60)).await?;
    let client_config = ClientConfig {
        batch_commands_max: args.batch_max,
        batches_in_flight_max: args.in_flight,
        ..ClientConfig::default()
    };
    let client = LogClient::connect(&cluster.client_addrs(), &cluster.writer, client_config).await.unwrap_or(client);
    client.refresh_leaders().await;
    println!(
        "bench log: {} log-nodes (processes) on loopback, {} partitions on {} Raft groups × {} replicas, fsync on (group commit), {} proposals in flight per group, {} B payload, {} writers, client batches ≤ {} commands, {} in flight per group",
        args.nodes,
        args.partitions,
        client.groups(),
        args.nodes.min(3),
        args.proposals_in_flight,
        args.payload,
        args.writers,
        args.batch_max,
        args.in_flight
    );
    println!("warm-up 3 s …");
    closed_loop(&client, args.writers, args.payload, Duration::from_secs(3)).await?;

    let dur = Duration::from_secs(args.seconds);
    let mut rates = Vec::new();
    let mut cpu_per = Vec::new();
    for run in 1..=args.runs {
        let cpu0 = cpu_total_us(&cluster);
        let t0 = Instant::now();
        let n = closed_loop(&client, args.writers, args.payload, dur).await?;
        let secs = t0.elapsed().as_secs_f64();
        let cpu = cpu_total_us(&cluster) - cpu0;
        let rate = n as f64 / secs;
        println!(
            "  run {run}: {n} committed appends in {secs:.1} s = {rate:.0}/s; server CPU {:.1} µs per append (all nodes)",
            cpu as f64 / n as f64
        );
        rates.push(rate);
        cpu_per.push(cpu as f64 / n as f64);
    }
    let (med, lo, hi) = median_min_max(&rates);
    let (cmed, _, _) = median_min_max(&cpu_per);
    println!(
        "committed appends/s: median {med:.0} (min {lo:.0}, max {hi:.0}) over {} runs of {} s",
        args.runs, args.seconds
    );
    println!("server CPU per committed append (3 replicas, all nodes): median {cmed:.1} µs");

    #[expect(clippy::cast_possible_truncation, reason = "a non-negative rate, rounded down (and saturating)")]
    let rate = args.rate.unwrap_or((med / 2.0) as u64).max(1);
    if let Some(minutes) = args.minutes {
        soak(&cluster, &client, rate, args.payload, minutes).await?;
        return Ok(());
    }
    let (h, failed) = open_loop(&client, rate, args.payload, dur).await?;
    println!(
        "commit latency at {rate} appends/s offered (open loop, {} s, {} acked, {failed} gave up): p50 {:.2} ms  p99 {:.2} ms  p999 {:.2} ms  max {:.2} ms",
        args.seconds,
        h.len(),
        h.value_at_quantile(0.50) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.value_at_quantile(0.999) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
    for n in &cluster.nodes {
        if let Some(kib) = cluster.peak_rss_kib(n.id) {
            println!("peak RSS node {}: {:.1} MiB", n.id, kib as f64 / 1024.0);
        }
    }
    drop(cluster);
    Ok(())
}
