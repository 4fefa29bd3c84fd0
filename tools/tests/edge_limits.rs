//! The edge under abuse, on a real edge over real QUIC (the embedded
//! `chorus dev` stack in this process, so that the edge's counters can be
//! read): a client that stops reading holds at most its byte budget at the
//! edge and still gets everything, and 1,000 connection attempts from one
//! address are capped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::collections::BTreeSet;
use std::time::Duration;

use chorus_client::{self as client, Client, ClientConfig, Credentials, Event, Resume};
use chorus_schema::{Recipient, Seq};
use chorus_testkit::cluster::chorus_binary;
use chorus_testkit::events::synced;
use chorus_testkit::ports::free_port;
use chorus_tools::commands::dev::{self, Dev};

/// One embedded stack at a time: each is a log-node, a projector and an edge.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

fn args(dir: &std::path::Path) -> dev::Args {
    let port = || format!("127.0.0.1:{}", free_port().unwrap());
    dev::Args {
        data: dir.join("data"),
        client_addr: port(),
        raft_addr: port(),
        partitions: 4,
        edge_addr: port().parse().unwrap(),
        metrics_addr: chorus_tools::metrics::MetricsAddr(None),
        otlp_endpoint: None,
        push: Default::default(),
    }
}

async fn start(args: &dev::Args, edge: impl FnOnce(&mut chorus_edge::Config)) -> Dev {
    dev::start(args, |c| {
        c.session.frames_burst = 10_000;
        c.session.frames_per_sec = 10_000;
        c.session.in_flight_max = 1024;
        edge(c);
    })
    .await
    .expect("start the embedded stack")
}

fn client_config(args: &dev::Args, dev: &Dev) -> ClientConfig {
    ClientConfig::new(vec![args.edge_addr.to_string()], dev.ca.clone())
}

/// Registers `phone`, reading the code from the dev SMS file.
async fn register(args: &dev::Args, dev: &Dev, phone: &str) -> Credentials {
    let config = client_config(args, dev);
    client::request_otp(&config, phone).await.expect("request a code");
    let path = args.data.join("sms.jsonl");
    let mut code = None;
    for _ in 0..100 {
        code = chorus_edge::sms::last_code(&path, phone);
        if code.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let code = code.unwrap_or_else(|| panic!("no code texted to {phone}"));
    client::verify_otp(&config, phone, &code, "test", vec![1; 32]).await.expect("verify the code")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_stops_reading_holds_at_most_its_byte_budget_and_still_gets_everything() {
    let _g = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let args = args(dir.path());
    // The smallest budget the edge accepts (16 frames of the largest ciphertext).
    const BUDGET: usize = 16 * (64 * 1024 + 4096);
    let dev = start(&args, |c| c.delivery_queue_bytes_max = BUDGET).await;
    let alice = register(&args, &dev, "+15550000061").await;
    let bob = register(&args, &dev, "+15550000062").await;
    let (a, mut a_events) = Client::connect_raw(client_config(&args, &dev), alice, Resume::default()).await.unwrap();
    synced(&mut a_events).await;

    // Bob's app takes a few events and then stops: the SDK stops reading
    // once its small event queue is full, and QUIC flow control backs up
    // into the edge.
    let mut config = client_config(&args, &dev);
    config.events_queue = 4;
    let (_b, mut b_events) = Client::connect_raw(config, bob, Resume::default()).await.unwrap();
    synced(&mut b_events).await;

    // Far more than the client's windows and the edge's budget together.
    let n = 600;
    let mut sent = BTreeSet::new();
    for i in 0..n {
        let mut body = format!("alice {i}").into_bytes();
        body.resize(16 << 10, b'.');
        sent.insert(a.send(Recipient::User(bob.user), body).await.unwrap().seq);
    }
    // The edge gave up on Bob's connection (lagged) rather than buffer on.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while dev.edge_handle.stats().lagged == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edge never cut the slow reader off: {:?}",
            dev.edge_handle
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = dev.edge_handle.stats();
    assert!(
        stats.queued_bytes_peak <= BUDGET,
        "a connection held {} bytes, over the budget of {BUDGET}",
        stats.queued_bytes_peak
    );
    assert!(stats.queued_bytes_peak > BUDGET / 2, "the slow reader's queue never filled: {stats:?}");

    // Bob's app reads again: the SDK reconnects, syncs, and every message
    // arrives once.
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.len() < n {
        match tokio::time::timeout_at(deadline, b_events.recv()).await {
            Ok(Some(Event::Message(m))) => got.push(m.seq),
            Ok(Some(_)) => {}
            other => panic!("{} of {n} messages, then {other:?}", got.len()),
        }
    }
    let unique: BTreeSet<Seq> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "no message twice");
    assert_eq!(unique, sent, "every message");
    assert!(dev.edge_handle.stats().queued_bytes_peak <= BUDGET);
    dev.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_connection_attempts_from_one_address_are_capped() {
    let _g = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let args = args(dir.path());
    const CAP: usize = 16;
    let dev = start(&args, |c| {
        c.connections_per_address_max = CAP;
        c.connections_per_device_max = 2;
    })
    .await;
    let alice = register(&args, &dev, "+15550000071").await;

    // 1,000 attempts from 127.0.0.1, on 50 client endpoints (ports), none
    // of which opens a control stream: the edge holds each until its open
    // timeout.
    let quic = chorus_log_node::network::tls::quic_client(&dev.ca, chorus_schema::edge::ALPN).unwrap();
    let endpoints: Vec<quinn::Endpoint> =
        (0..50).map(|_| quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap()).collect();
    let mut attempts = Vec::new();
    for i in 0..1000 {
        let connecting =
            endpoints[i % endpoints.len()].connect_with(quic.clone(), args.edge_addr, "chorus.local").unwrap();
        attempts.push(tokio::spawn(async move { tokio::time::timeout(Duration::from_secs(10), connecting).await }));
    }
    let mut held = Vec::new();
    let mut refused = 0;
    for a in attempts {
        match a.await.unwrap() {
            Ok(Ok(conn)) => held.push(conn),
            Ok(Err(quinn::ConnectionError::ConnectionClosed(_) | quinn::ConnectionError::TransportError(_))) => {
                refused += 1
            }
            Ok(Err(e)) => panic!("unexpected: {e}"),
            Err(_) => panic!("an attempt neither connected nor was refused"),
        }
        assert!(dev.edge_handle.stats().held <= CAP, "{:?}", dev.edge_handle.stats());
    }
    let stats = dev.edge_handle.stats();
    assert!(held.len() <= CAP, "{} connections established", held.len());
    assert_eq!(held.len() + refused, 1000);
    assert!(stats.refused >= (1000 - CAP) as u64, "{stats:?}");
    assert!(stats.retried >= 1000, "every first packet was answered with a Retry: {stats:?}");
    assert!(stats.held <= CAP);

    // They go away; a well-behaved client then logs in and sends.
    for c in &held {
        c.close(0u32.into(), b"bye");
    }
    drop(held);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while dev.edge_handle.stats().held > 0 {
        assert!(tokio::time::Instant::now() < deadline, "connections not released: {:?}", dev.edge_handle.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (a, mut a_events) = Client::connect_raw(client_config(&args, &dev), alice, Resume::default()).await.unwrap();
    synced(&mut a_events).await;
    let bob = register(&args, &dev, "+15550000072").await;
    a.send(Recipient::User(bob.user), b"still works".to_vec()).await.unwrap();

    // The device cap (2): a third login of Alice's device evicts the oldest
    // connection; the newest works.
    let (_a2, mut a2_events) = Client::connect_raw(client_config(&args, &dev), alice, Resume::default()).await.unwrap();
    synced(&mut a2_events).await;
    assert_eq!(dev.edge_handle.stats().evicted, 0);
    let (a3, mut a3_events) = Client::connect_raw(client_config(&args, &dev), alice, Resume::default()).await.unwrap();
    synced(&mut a3_events).await;
    assert!(dev.edge_handle.stats().evicted >= 1, "{:?}", dev.edge_handle.stats());
    let evicted = loop {
        match tokio::time::timeout(Duration::from_secs(10), a_events.recv()).await {
            Ok(Some(Event::Error { code, message })) => break (code, message),
            Ok(Some(_)) => {}
            other => panic!("the oldest connection was not told: {other:?}"),
        }
    };
    assert_eq!(evicted.0, chorus_schema::EdgeErrorCode::RateLimited);
    assert!(evicted.1.contains("connections_per_device_max 2"), "{}", evicted.1);
    a3.send(Recipient::User(bob.user), b"newest works".to_vec()).await.unwrap();
    dev.stop().await.unwrap();
}

#[test]
fn a_standalone_edge_refuses_the_log_sms_sink_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(&config, "[bus]\nkind = \"nats\"\nurl = \"nats://127.0.0.1:1\"\nca = \"ca.pem\"\nnkey_seed = \"edge.nk\"\n[sms]\nkind = \"log\"\n").unwrap();
    let out = std::process::Command::new(chorus_binary())
        .args(["edge", "--config"])
        .arg(&config)
        .output()
        .expect("run chorus edge");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {stderr}");
    assert!(stderr.contains("`log` SMS sink") && stderr.contains("chorus dev"), "{stderr}");
    // The file sink passes this check (and then needs a log and a bus).
    std::fs::write(&config, "log_nodes = [\"127.0.0.1:1\"]\n[bus]\nkind = \"nats\"\nurl = \"nats://127.0.0.1:1\"\nca = \"ca.pem\"\nnkey_seed = \"edge.nk\"\n[sms]\nkind = \"file\"\npath = \"sms.jsonl\"\n").unwrap();
    let out = std::process::Command::new(chorus_binary())
        .args(["edge", "--config-check", "--config"])
        .arg(&config)
        .output()
        .expect("run chorus edge");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
