//! `chorus bench presence`: one user's presence changes, watched by
//! `--subscribers` real SDK clients (QUIC connections, half on each of the 2
//! edges), all processes on this machine: 3 log-nodes (fsync on), the
//! nats-server, the projector and 2 edges.
//!
//! The watched user goes online (a client logs in) and offline (it closes)
//! `--changes` times in all. Each change is a `PresenceChanged` committed in
//! the user's partition; the projector publishes it once on
//! `chorus.presence.<user>`; each edge, subscribed once for its watchers,
//! hands it to every watching connection. The latency of one change to one
//! subscriber is its arrival minus the change's commit time (the event's
//! `at_ms`, stamped by the log's leader: the same clock on one machine, 1 ms
//! resolution). Printed: p50/p99 over changes of the time until the **last**
//! subscriber has the change, and p50/p99 over every (change, subscriber).
//!
//! The subscribers are connections of `--viewers` registered users (a
//! user's connections count towards the edge's caps, raised here as the e2e
//! bench does), so registering stays quick; each connection watches on its
//! own and gets each change itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use chorus_client::{Client, Event, Resume};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use chorus_testkit::cluster::{self as launcher, chorus_binary};
use chorus_testkit::stack::{Stack, StackSpec};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Watching connections (real SDK clients), split over the 2 edges.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Registered users the watching connections belong to.
    #[arg(long, default_value_t = 10)]
    pub viewers: usize,
    /// Presence changes measured (alternately online and offline).
    #[arg(long, default_value_t = 40)]
    pub changes: usize,
    #[arg(long, default_value_t = 64)]
    pub partitions: u16,
    /// Clients connecting at once.
    #[arg(long, default_value_t = 50)]
    pub connect_in_flight: usize,
    /// Deployment directory (wiped first).
    #[arg(long, default_value = "target/bench-presence")]
    pub dir: PathBuf,
}

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What one subscriber saw: (subscriber, online, last_seen_ms, arrival wall ms).
type Seen = (usize, bool, u64, u64);

pub async fn run(args: Args) -> Result<()> {
    if args.subscribers == 0 || args.viewers == 0 || args.changes == 0 {
        bail!("--subscribers, --viewers and --changes must be positive");
    }
    launcher::clean_dir(&args.dir)?;
    let mut spec = StackSpec::new(&args.dir, chorus_binary());
    spec.partitions = args.partitions;
    let many = args.subscribers + 64;
    spec.edge.connections_per_address_max = many;
    spec.edge.connections_per_device_max = many;
    spec.edge.connections_per_user_max = many;
    spec.edge.session.limits = chorus_edge::session::LimitsConfig::unlimited();
    spec.log_filter = "warn".into();
    let stack = Arc::new(Stack::start(spec).await.context("start the deployment")?);
    println!("deployment: 3 log-nodes ({} partitions, fsync on), nats-server, projector, 2 edges", args.partitions);

    let target = stack.register(0, "+15559000000").await?;
    let mut viewers = Vec::new();
    for i in 0..args.viewers {
        viewers.push(stack.register(i % 2, &format!("+1555{:07}", 9_000_001 + i)).await?);
    }

    // The subscribers: connect, watch the target, report every presence of it.
    let (tx, mut rx) = mpsc::unbounded_channel::<Seen>();
    let t = std::time::Instant::now();
    let mut clients = Vec::with_capacity(args.subscribers);
    for chunk in (0..args.subscribers).collect::<Vec<_>>().chunks(args.connect_in_flight.max(1)) {
        let mut tasks = Vec::new();
        for &i in chunk {
            let creds = *viewers.get(i % viewers.len()).context("a viewer")?;
            let (stack, tx) = (stack.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                let (client, mut events) = Client::connect_raw(stack.client_config(&[i % 2]), creds, Resume::default())
                    .await
                    .with_context(|| format!("subscriber {i} logs in"))?;
                client.subscribe_presence(vec![target.user]);
                tokio::spawn(async move {
                    while let Some(ev) = events.recv().await {
                        if let Event::Presence { user, visible: true, online, last_seen_ms } = ev {
                            if user == target.user {
                                let _ = tx.send((i, online, last_seen_ms, wall_ms()));
                            }
                        }
                    }
                });
                anyhow::Ok(client)
            }));
        }
        for task in tasks {
            clients.push(task.await??);
        }
    }
    drop(tx);
    println!("{} subscribers logged in and watching in {:.1} s", clients.len(), t.elapsed().as_secs_f64());
    // Everyone has the current state first.
    let mut have = std::collections::HashSet::new();
    while have.len() < args.subscribers {
        let Ok(Some((i, ..))) = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await else {
            bail!("{} subscribers never got the current presence", args.subscribers - have.len());
        };
        have.insert(i);
    }

    let mut last = Histogram::<u64>::new_with_bounds(1, 600_000, 3)?;
    let mut every = Histogram::<u64>::new_with_bounds(1, 600_000, 3)?;
    let mut online: Option<(Client, mpsc::Receiver<Event>)> = None;
    let mut previous_ms = 0u64;
    for change in 0..args.changes {
        let going_online = online.is_none();
        match online.take() {
            None => {
                let (c, ev) =
                    Client::connect_raw(stack.client_config(&[change % 2]), target, Resume::default()).await?;
                online = Some((c, ev));
            }
            Some((c, _)) => c.close(),
        }
        // Wait until every subscriber has this change (a newer last seen, in this direction).
        let mut got = std::collections::HashSet::new();
        let (mut missing, mut worst) = (args.subscribers, 0u64);
        let mut at = 0u64;
        while missing > 0 {
            let Ok(Some((i, on, seen_ms, arrived_ms))) = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await
            else {
                bail!("change {change}: {missing} subscribers never got it");
            };
            if on != going_online || seen_ms <= previous_ms || !got.insert(i) {
                continue;
            }
            at = seen_ms;
            missing -= 1;
            let ms = arrived_ms.saturating_sub(seen_ms).max(1);
            every.record(ms)?;
            worst = worst.max(ms);
        }
        previous_ms = at;
        last.record(worst)?;
        // Let the edges' queues drain before the next change.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "presence to {} subscribers ({} viewer users, 2 edges), {} changes: to the last subscriber p50 {} ms, p99 {} ms, max {} ms; per subscriber p50 {} ms, p99 {} ms",
        args.subscribers,
        args.viewers,
        args.changes,
        last.value_at_quantile(0.5),
        last.value_at_quantile(0.99),
        last.max(),
        every.value_at_quantile(0.5),
        every.value_at_quantile(0.99),
    );
    for c in clients {
        c.close();
    }
    Ok(())
}
