//! `chorus bench e2e`: messages through the whole pipeline — SDK clients over
//! QUIC → edge → 3-node log (fsync on) → projector → NATS → edge → SDK — all
//! processes on this machine. The clients send raw bytes
//! ([`chorus_client::Client::send_raw`], no end-to-end encryption): this
//! measures the server; `chorus bench crypto` measures the SDK's crypto.
//!
//! Prints delivered messages/s at saturation with the server CPU time per
//! delivered message (summed over every server process: log-nodes,
//! nats-server, projector, edges), send→receive latency at fixed offered
//! loads, logins/s of one edge, and the edge's resident memory per idle
//! logged-in connection.
//!
//! The idle connections are logins of one device that is up to date: each
//! logs in and syncs from its positions (as a client resuming does), so a
//! login costs a handshake, the token check and an empty sync — not a
//! download of the device's history. `--idle-in-flight` logins run at once,
//! from one client UDP socket per [`CONNS_PER_SOCKET`] connections.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chorus_client::{Client, Credentials, Event, Resume};
use chorus_schema::edge::{write_frame, FrameReader, ALPN};
use chorus_schema::{ChatId, ClientFrame, Recipient, Seq, ServerFrame};
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, Semaphore};

use super::stats::process_cpu_us;
use chorus_testkit::cluster::{self as launcher, chorus_binary};
use chorus_testkit::stack::{Stack, StackSpec};

/// Idle connections per client UDP socket (a real client has its own).
const CONNS_PER_SOCKET: usize = 1_000;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Sender → receiver client pairs.
    #[arg(long, default_value_t = 64)]
    pub pairs: usize,
    /// Sends in flight per sender in the saturation run.
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    #[arg(long, default_value_t = 64)]
    pub partitions: u16,
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Offered loads of the latency runs, msgs/s.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    pub rates: Vec<u64>,
    /// Idle logged-in connections for the logins/s and memory figures (0: skip).
    #[arg(long, default_value_t = 10_000)]
    pub idle: usize,
    /// Logins of idle connections in flight at once.
    #[arg(long, default_value_t = 200)]
    pub idle_in_flight: usize,
    /// Idle connections do a full TLS handshake every time (no session
    /// resumption, as a device's first connection).
    #[arg(long)]
    pub idle_full_handshakes: bool,
    /// Ciphertext bytes per message (at least 16).
    #[arg(long, default_value_t = 200)]
    pub payload: usize,
    /// Deployment directory (wiped first).
    #[arg(long, default_value = "target/bench-e2e")]
    pub dir: PathBuf,
}

/// The bench's clock: send times travel inside the message.
fn micros(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Locks a histogram, recovering it if a recorder panicked.
fn locked(h: &Mutex<Histogram<u64>>) -> std::sync::MutexGuard<'_, Histogram<u64>> {
    h.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn payload(epoch: Instant, size: usize) -> Vec<u8> {
    let mut p = vec![0xA5; size.max(16)];
    if let Some(head) = p.first_chunk_mut::<8>() {
        *head = micros(epoch).to_le_bytes();
    }
    p
}

struct Pair {
    sender: Client,
    receiver: Client,
    to: Credentials,
}

/// CPU time (µs) of every server process so far, by process name.
pub(super) fn server_cpu(stack: &Stack) -> Vec<(String, u64)> {
    stack.server_pids().into_iter().map(|(name, pid)| (name, process_cpu_us(pid).unwrap_or(0))).collect()
}

/// Server CPU µs per message between two [`server_cpu`] samples: the total,
/// and per kind of process (log-node, nats-server, projector, edge).
pub(super) fn cpu_per_message(before: &[(String, u64)], after: &[(String, u64)], messages: u64) -> String {
    let kinds = ["log-node", "nats-server", "projector", "edge"];
    let labels = ["log-nodes", "nats-server", "projector", "edges"];
    let mut by_kind = [0u64; 4];
    for (name, us) in after {
        let was = before.iter().find(|(n, _)| n == name).map_or(0, |(_, us)| *us);
        let kind = kinds.iter().position(|k| name.starts_with(k)).unwrap_or(0);
        if let Some(n) = by_kind.get_mut(kind) {
            *n += us.saturating_sub(was);
        }
    }
    let per = |us: u64| us as f64 / messages.max(1) as f64;
    let total: u64 = by_kind.iter().sum();
    let parts: Vec<String> = labels.iter().zip(by_kind).map(|(k, us)| format!("{k} {:.0}", per(us))).collect();
    format!("{:.0} µs per delivered message ({})", per(total), parts.join(", "))
}

struct Counters {
    delivered: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    /// Send → `Sent` (committed in the log): the first half of the path.
    committed: Mutex<Histogram<u64>>,
    recording: std::sync::atomic::AtomicBool,
}

pub async fn run(args: Args) -> Result<()> {
    launcher::clean_dir(&args.dir)?;
    let mut spec = StackSpec::new(&args.dir, chorus_binary());
    spec.partitions = args.partitions;
    spec.edge.session.frames_burst = 1_000_000;
    spec.edge.session.frames_per_sec = 1_000_000;
    spec.edge.session.in_flight_max = 4096;
    // Every client connects from 127.0.0.1, and the idle connections are
    // logins of one device.
    let many = args.idle + 4 * args.pairs + 64;
    spec.edge.connections_per_address_max = many;
    spec.edge.connections_per_device_max = many;
    spec.edge.connections_per_user_max = many;
    // Every client registers and logs in from the loopback address.
    spec.edge.session.limits = chorus_edge::session::LimitsConfig::unlimited();
    spec.log_filter = "warn".into();
    let stack = Stack::start(spec).await.context("start the deployment")?;
    println!("deployment: 3 log-nodes ({} partitions, fsync on), nats-server, projector, 2 edges", args.partitions);

    // Register 2 × pairs devices, 16 at a time.
    let t = Instant::now();
    let stack = Arc::new(stack);
    let mut creds = Vec::new();
    for chunk in (0..2 * args.pairs).collect::<Vec<_>>().chunks(16) {
        let mut tasks = Vec::new();
        for i in chunk {
            let (stack, i) = (stack.clone(), *i);
            tasks.push(tokio::spawn(async move { stack.register(i % 2, &format!("+1555{:07}", 1_000_000 + i)).await }));
        }
        for t in tasks {
            creds.push(t.await??);
        }
    }
    println!("registered {} devices in {:.1} s", creds.len(), t.elapsed().as_secs_f64());

    let epoch = Instant::now();
    let counters = Arc::new(Counters {
        delivered: AtomicU64::new(0),
        latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        committed: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        recording: false.into(),
    });
    let mut pairs = Vec::new();
    for (i, &[s, r]) in creds.as_chunks::<2>().0.iter().enumerate() {
        // Sender on edge i%2, receiver on the other: every message crosses edges.
        let (sender, _sender_events) = Client::connect_raw(stack.client_config(&[i % 2]), s, Resume::default()).await?;
        let (receiver, events) = Client::connect_raw(stack.client_config(&[(i + 1) % 2]), r, Resume::default()).await?;
        tokio::spawn(receive(events, counters.clone(), epoch));
        tokio::spawn(async move {
            let mut e = _sender_events;
            while e.recv().await.is_some() {}
        });
        pairs.push(Arc::new(Pair { sender, receiver, to: r }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Saturation: closed loop, `in_flight` sends per sender.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for p in &pairs {
        for _ in 0..args.in_flight {
            let (p, stop, failed, size) = (p.clone(), stop.clone(), failed.clone(), args.payload);
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if p.sender.send_raw(Recipient::User(p.to.user), payload(epoch, size)).await.is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // warm-up
    let d0 = counters.delivered.load(Ordering::Relaxed);
    let cpu0 = server_cpu(&stack);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let delivered = counters.delivered.load(Ordering::Relaxed) - d0;
    let cpu = cpu_per_message(&cpu0, &server_cpu(&stack), delivered);
    let rate = delivered as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    println!(
        "saturation: {rate:.0} msgs/s delivered ({} pairs × {} in flight, {} B, {} s; {} sends failed)",
        args.pairs,
        args.in_flight,
        args.payload,
        args.seconds,
        failed.load(Ordering::Relaxed)
    );
    println!("server CPU at saturation: {cpu}");
    settle(&counters).await;

    // Latency at fixed offered loads (open loop).
    for &r in &args.rates {
        locked(&counters.latency).reset();
        locked(&counters.committed).reset();
        counters.recording.store(true, Ordering::Relaxed);
        let (d0, cpu0) = (counters.delivered.load(Ordering::Relaxed), server_cpu(&stack));
        let sent = open_loop(&pairs, r, Duration::from_secs(args.seconds), epoch, args.payload, &counters).await;
        settle(&counters).await;
        let cpu = cpu_per_message(&cpu0, &server_cpu(&stack), counters.delivered.load(Ordering::Relaxed) - d0);
        counters.recording.store(false, Ordering::Relaxed);
        let h = locked(&counters.latency).clone();
        let c = locked(&counters.committed).clone();
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "latency at {r} msgs/s offered ({sent} sent, {} received): send→receive p50 {:.1} ms, p99 {:.1} ms, p999 {:.1} ms, max {:.1} ms; send→committed p50 {:.1} ms, p99 {:.1} ms",
            h.len(),
            ms(&h, 0.5),
            ms(&h, 0.99),
            ms(&h, 0.999),
            h.max() as f64 / 1000.0,
            ms(&c, 0.5),
            ms(&c, 0.99),
        );
        println!("server CPU at {r} msgs/s offered: {cpu}");
    }

    if args.idle > 0 {
        // The first sender is up to date with its one chat: what its pair's
        // receiver has of it.
        let ([first, second, ..], Some(pair)) = (creds.as_slice(), pairs.first()) else {
            anyhow::bail!("the idle connections need a pair of users");
        };
        let chat = ChatId::direct(first.user, second.user);
        let since: Vec<(ChatId, Seq)> = pair.receiver.positions().into_iter().filter(|(c, _)| *c == chat).collect();
        let resumption = !args.idle_full_handshakes;
        let quic = idle_client_config(&stack.cluster.edge_ca, resumption)?;
        idle_connections(&stack, quic, resumption, *first, since, args.idle, args.idle_in_flight.max(1)).await?;
    }
    Ok(())
}

async fn receive(mut events: mpsc::Receiver<Event>, counters: Arc<Counters>, epoch: Instant) {
    while let Some(ev) = events.recv().await {
        if let Event::Message(m) = ev {
            counters.delivered.fetch_add(1, Ordering::Relaxed);
            let head = m.ciphertext.first_chunk::<8>();
            if let (true, Some(head)) = (counters.recording.load(Ordering::Relaxed), head) {
                let sent = u64::from_le_bytes(*head);
                let _ = locked(&counters.latency).record(micros(epoch).saturating_sub(sent).max(1));
            }
        }
    }
}

/// Waits until deliveries stop moving (the pipeline drained).
async fn settle(counters: &Counters) {
    let mut last = counters.delivered.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = counters.delivered.load(Ordering::Relaxed);
        if now == last {
            return;
        }
        last = now;
    }
}

/// Sends at `rate` msgs/s spread over the pairs for `length`; returns how many were sent.
async fn open_loop(
    pairs: &[Arc<Pair>],
    rate: u64,
    length: Duration,
    epoch: Instant,
    size: usize,
    counters: &Arc<Counters>,
) -> u64 {
    let tick = Duration::from_millis(1);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut next = 0usize;
    while start.elapsed() < length {
        interval.tick().await;
        #[expect(clippy::cast_possible_truncation, reason = "a non-negative count, rounded down (and saturating)")]
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            let Some(p) = pairs.get(next % pairs.len().max(1)).cloned() else { break };
            next += 1;
            sent += 1;
            let counters = counters.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                if p.sender.send_raw(Recipient::User(p.to.user), payload(epoch, size)).await.is_ok() {
                    let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                    let _ = locked(&counters.committed).record(us.max(1));
                }
            });
        }
    }
    sent
}

/// A UDP counter of the host's kernel so far (all sockets: Linux
/// `/proc/net/snmp`, line `Udp:`), e.g. `OutDatagrams` or `RcvbufErrors`
/// (datagrams dropped for a full socket receive buffer).
fn udp_counter(name: &str) -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// The idle clients' QUIC configuration: the edge verified against `ca`;
/// `resumption`: TLS sessions are resumed with the edge's tickets, as a
/// client reconnecting does.
fn idle_client_config(ca: &std::path::Path, resumption: bool) -> Result<quinn::ClientConfig> {
    use quinn::rustls;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(ca)?)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    if !resumption {
        tls.resumption = rustls::client::Resumption::disabled();
    }
    let mut quic = quinn::ClientConfig::new(Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls)?));
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(3)));
    t.max_concurrent_uni_streams(1u32.into());
    quic.transport_config(Arc::new(t));
    Ok(quic)
}

/// A client endpoint on its own UDP socket with room for bursts of
/// handshakes of many connections.
fn client_endpoint() -> Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    state.set_recv_buffer_size((&socket).into(), 8 << 20)?;
    state.set_send_buffer_size((&socket).into(), 4 << 20)?;
    let runtime = quinn::default_runtime().context("no async runtime")?;
    Ok(quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)?)
}

/// Logs `n` connections of device `who` in to edge 0 (`in_flight` at a
/// time), each syncing from `since`, and keeps them idle: prints logins/s and
/// the edge's resident memory per connection.
async fn idle_connections(
    stack: &Stack,
    quic: quinn::ClientConfig,
    resumption: bool,
    who: Credentials,
    since: Vec<(ChatId, Seq)>,
    n: usize,
    in_flight: usize,
) -> Result<()> {
    let edge = &stack.cluster.edges.first().context("no edge")?.process;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, before) = edge.rss_kib().context("edge rss")?;
    let endpoints = (0..n.div_ceil(CONNS_PER_SOCKET)).map(|_| client_endpoint()).collect::<Result<Vec<_>>>()?;
    let addr = stack.edge_addrs().first().context("no edge")?.parse()?;
    let since = Arc::new(since);
    let slots = Arc::new(Semaphore::new(in_flight));
    let (drops, datagrams) = (udp_counter("RcvbufErrors"), udp_counter("OutDatagrams"));
    let (cpu0, bench_cpu0) = (server_cpu(stack), process_cpu_us(std::process::id()));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let slot = slots.clone().acquire_owned().await?;
        // One endpoint per CONNS_PER_SOCKET connections, made above.
        let endpoint = endpoints.get(i / CONNS_PER_SOCKET).cloned().context("an endpoint per CONNS_PER_SOCKET")?;
        let (quic, since) = (quic.clone(), since.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let conn = idle_login(&endpoint, quic, addr, who, &since).await;
            drop(slot);
            conn.map(|c| (c, t.elapsed()))
        }));
    }
    let mut conns = Vec::with_capacity(n);
    let mut took = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for t in tasks {
        let (conn, d) = t.await??;
        took.record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1))?;
        conns.push(conn);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_per_message(&cpu0, &server_cpu(stack), n as u64);
    let bench_cpu = match (bench_cpu0, process_cpu_us(std::process::id())) {
        (Some(a), Some(b)) => format!("{:.0}", (b - a) as f64 / n as f64),
        _ => "?".into(),
    };
    let drops = match (drops, udp_counter("RcvbufErrors")) {
        (Some(a), Some(b)) => (b - a).to_string(),
        _ => "?".into(),
    };
    let datagrams = match (datagrams, udp_counter("OutDatagrams")) {
        (Some(a), Some(b)) => format!("{:.1}", (b - a) as f64 / n as f64),
        _ => "?".into(),
    };
    let ms = |q: f64| took.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "logins: {:.0} logins/s ({n} in {elapsed:.1} s, {in_flight} in flight, {}; handshake→synced p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {datagrams} UDP datagrams per login, {drops} dropped by full receive buffers)",
        n as f64 / elapsed,
        if resumption { "TLS sessions resumed when the client holds a ticket" } else { "full TLS handshakes" },
        ms(0.5),
        ms(0.99),
        took.max() as f64 / 1000.0
    );
    println!(
        "server CPU per login: {} (clients, in this process: {bench_cpu} µs)",
        cpu.replace("delivered message", "login")
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (peak, after) = edge.rss_kib().context("edge rss")?;
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64;
    println!(
        "idle connections: {n} logged in; edge RSS {} → {} MiB (peak {} MiB): {:.1} KiB per connection",
        before / 1024,
        after / 1024,
        peak / 1024,
        per / 1024.0
    );
    drop(conns);
    Ok(())
}

async fn idle_login(
    endpoint: &quinn::Endpoint,
    quic: quinn::ClientConfig,
    addr: std::net::SocketAddr,
    who: Credentials,
    since: &[(ChatId, Seq)],
) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream, quinn::RecvStream)> {
    let conn = endpoint.connect_with(quic, addr, "chorus.local")?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut buf = Vec::new();
    write_frame(&mut buf, &ClientFrame::Login { user: who.user, device: who.device, token: who.token }.encode());
    send.write_all(&buf).await?;
    let mut reader = FrameReader::new();
    loop {
        if let Some(f) = reader.next_frame()? {
            match ServerFrame::decode(&f)? {
                ServerFrame::LoggedIn { .. } => break,
                other => anyhow::bail!("login refused: {other:?}"),
            }
        }
        let chunk = recv.read_chunk(1024, true).await?.context("control stream closed")?;
        reader.push(&chunk.bytes);
    }
    // Sync from its positions (as every client does after login); the edge
    // answers SyncDone on the delivery stream.
    let mut buf = Vec::new();
    write_frame(&mut buf, &ClientFrame::Sync { since: since.to_vec() }.encode());
    send.write_all(&buf).await?;
    let mut deliveries = conn.accept_uni().await?;
    let mut reader = FrameReader::new();
    loop {
        if let Some(f) = reader.next_frame()? {
            match ServerFrame::decode(&f)? {
                ServerFrame::SyncDone { .. } => break,
                ServerFrame::Deliver { .. } | ServerFrame::Receipt { .. } => {}
                other => anyhow::bail!("unexpected delivery frame: {other:?}"),
            }
        }
        let chunk = deliveries.read_chunk(1024, true).await?.context("delivery stream closed")?;
        reader.push(&chunk.bytes);
    }
    Ok((conn, send, recv, deliveries))
}
