//! The replay half of `chorus bench export`: views rebuilt per second by
//! `chorus replay`, per core of the replaying process ([`measure`]), and the
//! chat workload both halves read ([`fill`]: 1:1 sends, each followed by the
//! recipient's delivered receipt and every fourth by a read receipt).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use chorus_log_node::LogClient;
use chorus_schema::{ClientMsgId, Command, CommandBody, DeviceId, Origin, Outcome, ReceiptKind, UserId};
use chorus_testkit::cluster::{self as launcher, Cluster};

use super::stats::{median_min_max, process_cpu_us};

/// One rebuild of every view.
#[derive(Clone, Copy, Debug)]
pub struct ReplayRun {
    pub records: u64,
    pub secs: f64,
    /// CPU time of this (the replaying) process.
    pub cpu_us: u64,
    /// CPU time of the log-nodes serving the reads.
    pub log_cpu_us: u64,
}

impl ReplayRun {
    /// Records folded per wall-clock second.
    pub fn per_sec(&self) -> f64 {
        self.records as f64 / self.secs
    }

    /// Records folded per CPU second of the replaying process.
    pub fn per_core_sec(&self) -> f64 {
        self.records as f64 * 1e6 / self.cpu_us.max(1) as f64
    }
}

fn cluster_cpu_us(cluster: &Cluster) -> u64 {
    cluster.nodes.iter().filter_map(|n| n.pid()).filter_map(process_cpu_us).sum()
}

/// Rebuilds every view from `client`'s log into fresh stores under
/// `scratch`, `runs` times, timing each.
///
/// # Errors
/// When a rebuild fails.
pub async fn measure(client: &LogClient, cluster: &Cluster, scratch: &Path, runs: usize) -> Result<Vec<ReplayRun>> {
    let me = std::process::id();
    let mut out = Vec::new();
    for run in 1..=runs {
        let dir = scratch.join(format!("replay-{run}"));
        launcher::clean_dir(&dir)?;
        let (cpu0, log0, t0) = (process_cpu_us(me).unwrap_or(0), cluster_cpu_us(cluster), Instant::now());
        let stats = chorus_projections::rebuild_from_log(client, &dir).await.context("replay")?;
        let secs = t0.elapsed().as_secs_f64();
        let r = ReplayRun {
            records: stats.records,
            secs,
            cpu_us: process_cpu_us(me).unwrap_or(0).saturating_sub(cpu0),
            log_cpu_us: cluster_cpu_us(cluster).saturating_sub(log0),
        };
        println!(
            "  replay {run}: {} records in {secs:.2} s = {:.0}/s; {:.0}/s per core of the replaying process ({:.2} µs CPU per record; log-nodes {:.2} µs per record serving reads)",
            r.records,
            r.per_sec(),
            r.per_core_sec(),
            r.cpu_us as f64 / r.records.max(1) as f64,
            r.log_cpu_us as f64 / r.records.max(1) as f64,
        );
        std::fs::remove_dir_all(&dir).ok();
        out.push(r);
    }
    Ok(out)
}

/// Prints the medians of [`measure`]'s runs.
pub fn summarize(runs: &[ReplayRun]) {
    if runs.is_empty() {
        return;
    }
    let per_sec: Vec<f64> = runs.iter().map(ReplayRun::per_sec).collect();
    let per_core: Vec<f64> = runs.iter().map(ReplayRun::per_core_sec).collect();
    let (m, lo, hi) = median_min_max(&per_sec);
    let (c, clo, chi) = median_min_max(&per_core);
    println!("replay (every view): median {m:.0} records/s (min {lo:.0}, max {hi:.0}); per core {c:.0}/s (min {clo:.0}, max {chi:.0}); target ≥ 500000/s per core");
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn origin(user: u64) -> Origin {
    Origin {
        user: UserId(user),
        device: DeviceId(1),
        client_msg_id: ClientMsgId(NEXT_ID.fetch_add(1, Ordering::Relaxed)),
    }
}

/// Appends a chat workload until the log holds at least `events` events:
/// `writers` users each send to their own peer; the peer acks every message
/// delivered, and every fourth read. Returns the events appended (each send
/// is one event, plus the chat's opening; each ack one).
///
/// # Errors
/// When an append fails.
pub async fn fill(client: &LogClient, events: u64, writers: u64, payload: usize) -> Result<u64> {
    let made = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (client, made) = (client.clone(), made.clone());
        tasks.push(tokio::spawn(async move {
            let (me, peer) = (1 + w, 1_000_000 + w);
            let mut opened = false;
            let mut n = 0u64;
            while made.load(Ordering::Relaxed) < events {
                let send = Command {
                    origin: origin(me),
                    body: CommandBody::SendDirect {
                        recipient: UserId(peer),
                        ciphertext: vec![0xAB; payload],
                        media: None,
                    },
                };
                let Outcome::Chat { chat, seq } = client.append(&send).await?? else {
                    bail!("a send gave no chat position");
                };
                let mut acks = vec![ReceiptKind::Delivered];
                n += 1;
                if n.is_multiple_of(4) {
                    acks.push(ReceiptKind::Read);
                }
                for kind in &acks {
                    let ack =
                        Command { origin: origin(peer), body: CommandBody::Ack { chat, kind: *kind, up_to_seq: seq } };
                    client.append(&ack).await??;
                }
                let opening = u64::from(!opened);
                opened = true;
                made.fetch_add(1 + opening + acks.len() as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(made.load(Ordering::Relaxed))
}
