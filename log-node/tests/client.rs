//! The log client against a real log-node in this process (real RocksDB,
//! real QUIC on loopback): a dead address delays only requests to it, a full
//! queue is back-pressure, and failed appends say by their type whether they
//! were applied.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::path::Path;
use std::time::Duration;

use chorus_log_node::client::{Applied, Error};
use chorus_log_node::config::Peer;
use chorus_log_node::network::tls::{self, Principal, Role, TlsPaths};
use chorus_log_node::{ClientConfig, Config, LogClient, Node};
use chorus_schema::{ClientMsgId, Command, CommandBody, DeviceId, ErrorCode, Origin, UserId};

fn free_port() -> u16 {
    chorus_testkit::ports::free_port().unwrap()
}

fn config(dir: &Path) -> Config {
    let raft_addr = format!("127.0.0.1:{}", free_port());
    let client_addr = format!("127.0.0.1:{}", free_port());
    Config {
        id: 1,
        data_dir: dir.to_path_buf(),
        raft_addr: raft_addr.clone(),
        client_addr: client_addr.clone(),
        partitions: 4,
        groups: 2,
        replication: 1,
        peers: vec![Peer { id: 1, raft_addr, client_addr }],
        bootstrap: true,
        tls: Some(tls::issue(&dir.join("tls"), &Principal::node(1)).unwrap()),
        ..Config::default()
    }
}

fn identity(config: &Config, role: Role) -> TlsPaths {
    tls::issue(&config.data_dir.join("tls"), &Principal::new(role, "test").unwrap()).unwrap()
}

fn send(from: u64, id: u64) -> Command {
    Command {
        origin: Origin { user: UserId(from), device: DeviceId(1), client_msg_id: ClientMsgId(id) },
        body: CommandBody::SendDirect { recipient: UserId(from + 1), ciphertext: b"x".to_vec(), media: None },
    }
}

async fn start(config: &Config) -> Node {
    let node = Node::start(config.clone()).await.expect("start node");
    assert!(node.wait_for_leaders(Duration::from_secs(10)).await, "leaders elected");
    node
}

/// A QUIC handshake with a node that never answers (a bound UDP socket that
/// reads and drops) takes the whole connect timeout. Meanwhile requests to
/// the live node are served at once: no lock is held across a connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_address_delays_only_the_requests_sent_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let node = start(&cfg).await;
    let hole = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap().to_string();
    let connect_timeout = Duration::from_secs(3);
    let client = LogClient::connect(
        std::slice::from_ref(&cfg.client_addr),
        &identity(&cfg, Role::Edge),
        ClientConfig { connect_timeout_ms: 3_000, ..ClientConfig::default() },
    )
    .await
    .unwrap();

    let started = std::time::Instant::now();
    let dead = tokio::spawn({
        let client = client.clone();
        let hole_addr = hole_addr.clone();
        async move { client.status(&hole_addr).await }
    });
    // The client is handshaking with the hole once its first packet arrived.
    let mut buf = vec![0u8; 2048];
    hole.recv_from(&mut buf).await.unwrap();

    let live = client.status(&cfg.client_addr).await.expect("the live node answers");
    assert_eq!(live.node.0, 1);
    let append = client.append(&send(1, 1)).await.expect("appended").expect("accepted");
    drop(append);
    assert!(
        started.elapsed() < connect_timeout / 2,
        "requests to the live node waited {:?} for the dead one's handshake",
        started.elapsed()
    );

    let dead = dead.await.unwrap();
    assert!(started.elapsed() >= connect_timeout - Duration::from_millis(100));
    match dead {
        Err(e @ Error::Unavailable { .. }) => assert_eq!(e.applied(), Applied::No, "nothing reached the hole"),
        other => panic!("a request to a dead address must be unavailable: {other:?}"),
    }
    node.shutdown().await;
}

/// A queue of one command and one batch in flight: many concurrent appends
/// wait for room (back-pressure) and all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_back_pressure_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let node = start(&cfg).await;
    let config =
        ClientConfig { queue_commands_max: 1, batches_in_flight_max: 1, batch_commands_max: 1, ..Default::default() };
    let client =
        LogClient::connect(std::slice::from_ref(&cfg.client_addr), &identity(&cfg, Role::Edge), config).await.unwrap();
    let appends: Vec<_> = (0..64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.append(&send(10 + i % 8, 100 + i)).await })
        })
        .collect();
    for a in appends {
        let result = a.await.unwrap();
        assert!(matches!(result, Ok(Ok(_))), "{result:?}");
    }
    node.shutdown().await;
}

/// Refused by the log: final, typed with the log's code. Sent to a node that
/// has stopped (its connection closed, its port gone): never sent,
/// `Unavailable`, or `Overloaded` for appends that waited behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_appends_say_whether_they_were_applied() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let node = start(&cfg).await;
    let operator =
        LogClient::connect(std::slice::from_ref(&cfg.client_addr), &identity(&cfg, Role::Operator), Default::default())
            .await
            .unwrap();
    match operator.append(&send(1, 1)).await {
        Err(e @ Error::Refused { code: ErrorCode::Forbidden, .. }) => {
            assert_eq!(e.applied(), Applied::No);
            assert!(!e.retryable());
        }
        other => panic!("an operator may not append: {other:?}"),
    }

    let config = ClientConfig {
        connect_timeout_ms: 200,
        attempt_timeout_ms: 300,
        append_deadline_ms: 1_500,
        queue_commands_max: 1,
        batches_in_flight_max: 1,
        batch_commands_max: 1,
        ..ClientConfig::default()
    };
    let client =
        LogClient::connect(std::slice::from_ref(&cfg.client_addr), &identity(&cfg, Role::Edge), config).await.unwrap();
    client.append(&send(1, 2)).await.unwrap().unwrap();
    node.shutdown().await;

    let started = std::time::Instant::now();
    let appends: Vec<_> = (0..4)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.append(&send(1, 10 + i)).await })
        })
        .collect();
    for a in appends {
        match a.await.unwrap() {
            Err(e @ (Error::Unavailable { .. } | Error::Overloaded { .. })) => {
                assert_eq!(e.applied(), Applied::No, "{e}");
                assert!(e.retryable(), "{e}");
            }
            other => panic!("an append to a stopped node was never sent: {other:?}"),
        }
    }
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1_500 + 500), "the append deadline holds: {took:?}");
}
