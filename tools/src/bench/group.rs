//! `chorus bench group`: one group, every member online as a real QUIC
//! client on the SDK, across 2 edges; messages one at a time at a fixed
//! rate. Prints the time until **every** member has each message (p50, p99,
//! max), the time of each single delivery, and the server CPU per message.
//! The clients send raw bytes ([`Client::send_raw`], no end-to-end
//! encryption): this measures the server (`chorus bench crypto`: the SDK's).
//!
//! The path of a group message: the sender's SDK → its edge → the log
//! (3 nodes, fsync on) → the projector (roster audience, chat lists and
//! inboxes of every member, one bus message for the group) → NATS → both
//! edges → every member's connection → every member's SDK.
//!
//! Open loop: message `k` is due at `start + k / rate`; its latency to a
//! member is measured from that due time (so queueing shows), and a message
//! is complete when the last member (all but its sender) has it. Senders
//! rotate over the members. All clients run in this process: each is an SDK
//! [`Client`] with its own QUIC connection and worker task; by default each
//! also has its own UDP socket (as apps do), `--clients-per-socket` shares
//! sockets (QUIC endpoints) to spare the bench's own CPU.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chorus_client::{Client, Credentials, Event, Resume};
use chorus_schema::{ChatId, ReceiptKind, Recipient};
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, Semaphore};

use super::e2e::{cpu_per_message, server_cpu};
use super::stats::process_cpu_us;
use chorus_testkit::cluster::{self as launcher, chorus_binary};
use chorus_testkit::stack::{Stack, StackSpec};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Members of the group, all online (the creator included).
    #[arg(long, default_value_t = 512)]
    pub members: usize,
    /// Offered load, messages/s (one message at a time, open loop).
    #[arg(long, default_value_t = 50)]
    pub rate: u64,
    /// Seconds of measured sending (after a warm-up of 2 s).
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    #[arg(long, default_value_t = 64)]
    pub partitions: u16,
    /// Ciphertext bytes per message (at least 16).
    #[arg(long, default_value_t = 200)]
    pub payload: usize,
    /// Clients per UDP socket (QUIC endpoint) in this process; 1: each
    /// client has its own, as an app does.
    #[arg(long, default_value_t = 1)]
    pub clients_per_socket: usize,
    /// Every member acknowledges each message as delivered (as a phone
    /// does): one receipt per member per message more through the log.
    #[arg(long)]
    pub ack: bool,
    /// Registrations and logins in flight at once while setting up.
    #[arg(long, default_value_t = 16)]
    pub setup_in_flight: usize,
    /// Deployment directory (wiped first).
    #[arg(long, default_value = "target/bench-group")]
    pub dir: PathBuf,
}

/// Microseconds since the bench's epoch.
fn micros(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A message's number and due time travel in its first 16 bytes.
fn payload(number: u64, due_us: u64, size: usize) -> Vec<u8> {
    let mut p = vec![0xA5; size.max(16)];
    if let Some((head, rest)) = p.split_first_chunk_mut::<8>() {
        *head = number.to_le_bytes();
        if let Some(due) = rest.first_chunk_mut::<8>() {
            *due = due_us.to_le_bytes();
        }
    }
    p
}

fn parse(ciphertext: &[u8]) -> Option<(u64, u64)> {
    let n = u64::from_le_bytes(ciphertext.get(..8)?.try_into().ok()?);
    let due = u64::from_le_bytes(ciphertext.get(8..16)?.try_into().ok()?);
    Some((n, due))
}

/// Arrivals per message until every member has it.
struct Tracker {
    /// Members each message must reach (all but its sender).
    expected: u32,
    /// Messages numbered below this are the warm-up's: not recorded.
    first_measured: AtomicU64,
    /// Per message: members that have it, and the latest arrival's latency.
    open: Mutex<HashMap<u64, (u32, u64)>>,
    /// Due time → the last member has it.
    everyone: Mutex<Histogram<u64>>,
    /// Due time → one member has it (every delivery).
    each: Mutex<Histogram<u64>>,
    complete: AtomicU64,
    deliveries: AtomicU64,
}

impl Tracker {
    fn arrived(&self, number: u64, latency_us: u64) {
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        if number < self.first_measured.load(Ordering::Relaxed) {
            return;
        }
        let latency_us = latency_us.max(1);
        let _ = locked(&self.each).record(latency_us);
        let done = {
            let mut open = locked(&self.open);
            let e = open.entry(number).or_insert((0, 0));
            e.0 += 1;
            e.1 = e.1.max(latency_us);
            if e.0 >= self.expected {
                let last = e.1;
                open.remove(&number);
                Some(last)
            } else {
                None
            }
        };
        if let Some(last) = done {
            self.complete.fetch_add(1, Ordering::Relaxed);
            let _ = locked(&self.everyone).record(last);
        }
    }
}

/// Resident memory of this process, KiB (Linux).
fn own_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Open file descriptors of this process (Linux).
fn own_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

/// A client endpoint on its own UDP socket, with room for bursts.
fn client_endpoint() -> Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    state.set_recv_buffer_size((&socket).into(), 4 << 20)?;
    let runtime = quinn::default_runtime().context("no async runtime")?;
    Ok(quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)?)
}

pub async fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.members >= 2, "a group bench needs at least 2 members");
    anyhow::ensure!(
        args.members <= chorus_schema::MAX_GROUP_MEMBERS,
        "at most {} members",
        chorus_schema::MAX_GROUP_MEMBERS
    );
    anyhow::ensure!(args.rate > 0 && args.clients_per_socket > 0, "--rate and --clients-per-socket must be positive");
    launcher::clean_dir(&args.dir)?;
    let mut spec = StackSpec::new(&args.dir, chorus_binary()).unthrottled();
    spec.partitions = args.partitions;
    spec.edges = 2;
    let many = args.members + 64;
    spec.edge.connections_per_address_max = many;
    spec.edge.connections_per_user_max = many;
    spec.edge.session.limits = chorus_edge::session::LimitsConfig::unlimited();
    spec.log_filter = "warn".into();
    let stack = Arc::new(Stack::start(spec).await.context("start the deployment")?);
    println!("deployment: 3 log-nodes ({} partitions, fsync on), nats-server, projector, 2 edges", args.partitions);

    // Register every member, alternating edges.
    let t = Instant::now();
    let slots = Arc::new(Semaphore::new(args.setup_in_flight.max(1)));
    let mut tasks = Vec::new();
    for i in 0..args.members {
        let (stack, slots) = (stack.clone(), slots.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = slots.acquire_owned().await?;
            anyhow::Ok(stack.register(i % 2, &format!("+1556{:07}", 1_000_000 + i)).await?)
        }));
    }
    let mut creds: Vec<Credentials> = Vec::with_capacity(args.members);
    for t in tasks {
        creds.push(t.await??);
    }
    println!("registered {} devices in {:.1} s", creds.len(), t.elapsed().as_secs_f64());

    // Log every member in, on edge i % 2; sockets shared per `clients_per_socket`.
    let (rss0, fds0) = (own_rss_kib(), own_fds());
    let endpoints =
        (0..args.members.div_ceil(args.clients_per_socket)).map(|_| client_endpoint()).collect::<Result<Vec<_>>>()?;
    let epoch = Instant::now();
    let tracker = Arc::new(Tracker {
        expected: u32::try_from(args.members - 1)?,
        first_measured: AtomicU64::new(u64::MAX),
        open: Mutex::new(HashMap::new()),
        everyone: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3)?),
        each: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3)?),
        complete: AtomicU64::new(0),
        deliveries: AtomicU64::new(0),
    });
    let t = Instant::now();
    let mut tasks = Vec::new();
    for (i, c) in creds.iter().enumerate() {
        let endpoint = endpoints.get(i / args.clients_per_socket).cloned().context("an endpoint per client group")?;
        let config = stack.client_config(&[i % 2]);
        let (c, slots) = (*c, slots.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = slots.acquire_owned().await?;
            anyhow::Ok(Client::connect_raw_on(endpoint, config, c, Resume::default()).await?)
        }));
    }
    let mut clients = Vec::with_capacity(args.members);
    let mut events = Vec::with_capacity(args.members);
    for t in tasks {
        let (client, rx) = t.await??;
        clients.push(client);
        events.push(rx);
    }
    println!(
        "logged in {} clients in {:.1} s ({} UDP sockets); this process: {} MiB more RSS, {} more file descriptors",
        clients.len(),
        t.elapsed().as_secs_f64(),
        endpoints.len(),
        match (rss0, own_rss_kib()) {
            (Some(a), Some(b)) => format!("{:.0}", b.saturating_sub(a) as f64 / 1024.0),
            _ => "?".into(),
        },
        match (fds0, own_fds()) {
            (Some(a), Some(b)) => b.saturating_sub(a).to_string(),
            _ => "?".into(),
        },
    );

    let members: Vec<_> = creds.iter().skip(1).map(|c| c.user).collect();
    let creator = clients.first().context("no clients")?;
    let chat = creator.create_group("bench", members).await.context("create the group")?;
    println!("group {chat}: {} members", args.members);
    for (client, rx) in clients.iter().zip(events) {
        let ack = args.ack.then(|| client.clone());
        tokio::spawn(receive(rx, chat, tracker.clone(), epoch, ack));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Warm-up, then the measured run, one message at a time.
    let clients = Arc::new(clients);
    let warmup = args.rate * 2;
    let measured = args.rate * args.seconds;
    tracker.first_measured.store(warmup, Ordering::Relaxed);
    let failed = Arc::new(AtomicU64::new(0));
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let start = Instant::now();
    let mut window = None;
    for k in 0..warmup + measured {
        if k == warmup {
            window = Some((server_cpu(&stack), process_cpu_us(std::process::id()), Instant::now()));
        }
        let due = start + interval.mul_f64(k as f64);
        tokio::time::sleep_until(due.into()).await;
        let due_us = u64::try_from(due.duration_since(epoch).as_micros()).unwrap_or(u64::MAX);
        let sender = clients.get(usize::try_from(k)? % clients.len()).context("a sender")?.clone();
        let (failed, size) = (failed.clone(), args.payload);
        tokio::spawn(async move {
            if sender.send_raw(Recipient::Group(chat), payload(k, due_us, size)).await.is_err() {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let sending = window.as_ref().map(|(_, _, t)| t.elapsed()).unwrap_or_default();
    // Let the last messages arrive (up to 10 s), then take the CPU figures.
    let settle = Instant::now();
    while tracker.complete.load(Ordering::Relaxed) < measured && settle.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (cpu, bench_cpu) = match window {
        Some((cpu0, bench0, _)) => {
            let cpu = cpu_per_message(&cpu0, &server_cpu(&stack), measured).replace("delivered message", "message");
            let bench = match (bench0, process_cpu_us(std::process::id())) {
                (Some(a), Some(b)) => format!("{:.0}", b.saturating_sub(a) as f64 / measured.max(1) as f64),
                _ => "?".into(),
            };
            (cpu, bench)
        }
        None => ("?".into(), "?".into()),
    };
    let complete = tracker.complete.load(Ordering::Relaxed);
    let everyone = locked(&tracker.everyone).clone();
    let each = locked(&tracker.each).clone();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "sent {measured} messages at {} msgs/s over {:.1} s ({} members, senders rotating, {} B{}; {} sends failed)",
        args.rate,
        sending.as_secs_f64(),
        args.members,
        args.payload,
        if args.ack { ", every member acks delivered" } else { "" },
        failed.load(Ordering::Relaxed),
    );
    println!(
        "until every member has it: {complete} of {measured} messages complete; p50 {:.1} ms, p99 {:.1} ms, p999 {:.1} ms, max {:.1} ms",
        ms(&everyone, 0.5),
        ms(&everyone, 0.99),
        ms(&everyone, 0.999),
        everyone.max() as f64 / 1000.0
    );
    println!(
        "each delivery ({} to members): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        each.len(),
        ms(&each, 0.5),
        ms(&each, 0.99),
        each.max() as f64 / 1000.0
    );
    println!("server CPU: {cpu}; the clients (this process): {bench_cpu} µs per message");
    let missing = locked(&tracker.open).len();
    if complete < measured {
        println!(
            "{} messages did not reach every member within 10 s ({missing} partly delivered)",
            measured - complete
        );
    }
    Ok(())
}

/// One member's events: records each group message's arrival (and acks it
/// if asked to).
async fn receive(
    mut events: mpsc::Receiver<Event>,
    chat: ChatId,
    tracker: Arc<Tracker>,
    epoch: Instant,
    ack: Option<Client>,
) {
    while let Some(ev) = events.recv().await {
        match ev {
            Event::Message(m) if m.chat == chat => {
                if let Some((number, due_us)) = parse(&m.ciphertext) {
                    tracker.arrived(number, micros(epoch).saturating_sub(due_us));
                }
                if let Some(c) = &ack {
                    c.ack(chat, ReceiptKind::Delivered, m.seq);
                }
            }
            _ => {}
        }
    }
}
