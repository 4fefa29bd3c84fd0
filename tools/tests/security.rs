//! The trust boundary, tested as an attacker would, on real processes: a
//! `chorus log-node` process, a real nats-server with TLS and NKeys, raw QUIC
//! clients with and without certificates. Each case names the hole it closes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use chorus_bus::{Bus, NatsAuth};
use chorus_log_node::network::raft::{self as raft_net, Reply, Rpc};
use chorus_log_node::network::tls::{self, Identity, Principal, Role, TlsPaths};
use chorus_log_node::network::{frame, ALPN_LOG, SERVER_NAME};
use chorus_log_node::{ClientConfig, LogClient};
use chorus_projections::bus_auth::{self, BusRole};
use chorus_schema::{
    AppendCommand, ClientMsgId, Command, CommandBody, DeviceId, ErrorCode, GroupId, NodeId, Offset, Origin,
    PartitionId, Request, Response, UserId,
};
use chorus_testkit::cluster::{chorus_binary, Cluster, ClusterSpec};
use chorus_testkit::nats::NatsServer;

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// The attack of hole 1: a session for user 7 that nobody verified.
fn create_session(partitions: u16) -> AppendCommand {
    let cmd = Command {
        origin: Origin { user: UserId(7), device: DeviceId(1), client_msg_id: ClientMsgId(1) },
        body: CommandBody::CreateSession { device: DeviceId(1), token_hash: [0xaa; 32] },
    };
    AppendCommand { partition: PartitionId::for_key(&cmd.key(), partitions), bytes: cmd.encode() }
}

/// What one request on a fresh stream of `conn` got: a response, or `None`
/// when the connection refused it outright.
async fn ask(conn: &quinn::Connection, req: &Request) -> Option<Response> {
    let (mut send, mut recv) = conn.open_bi().await.ok()?;
    send.write_all(&framed(&req.encode())).await.ok()?;
    send.finish().ok()?;
    let bytes = tokio::time::timeout(Duration::from_secs(5), frame::read(&mut recv, 1 << 24)).await.ok()?.ok()??;
    Some(Response::decode(&bytes).expect("the node's response decodes"))
}

async fn connect(quic: quinn::ClientConfig, addr: &str) -> Option<quinn::Connection> {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let sock: SocketAddr = addr.parse().unwrap();
    let conn =
        tokio::time::timeout(Duration::from_secs(5), endpoint.connect_with(quic, sock, SERVER_NAME).unwrap()).await;
    conn.ok()?.ok()
}

fn code(r: Option<Response>) -> Option<ErrorCode> {
    match r {
        Some(Response::Error { code, .. }) => Some(code),
        _ => None,
    }
}

/// A one-node cluster of 4 partitions (a real `chorus log-node` process),
/// ready, with an edge client of it.
async fn one_node(dir: &Path) -> (Cluster, LogClient) {
    let mut spec = ClusterSpec::new(dir, chorus_binary(), 1);
    spec.partitions = 4;
    let mut cluster = Cluster::create(spec).await.unwrap();
    cluster.start_all().unwrap();
    let client = cluster.wait_ready(Duration::from_secs(60)).await.unwrap();
    (cluster, client)
}

fn issue(dir: &Path, role: Role, name: &str) -> TlsPaths {
    tls::issue(dir, &Principal::new(role, name).unwrap()).unwrap()
}

/// Holes: "the log-node client port does not ask for a client certificate"
/// (anyone appends `CreateSession`, reads every chat, changes voters) and
/// "the Raft port trusts any certificate of the CA".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_lets_each_role_do_its_part_only() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, reader) = one_node(dir.path()).await;
    let node = &cluster.node(1).config;
    let (client_addr, raft_addr) = (node.client_addr.clone(), node.raft_addr.clone());
    let tls_dir = dir.path().join("tls");
    let session = create_session(4);
    let user_partition = session.partition;
    let append = Request::Append { commands: vec![session] };
    let read = Request::Read { partition: user_partition, from: Offset(0), limit: 100 };
    let change_voters = Request::ChangeVoters { group: GroupId(0), voters: vec![NodeId(1), NodeId(9)] };

    // No certificate: the handshake fails or nothing is answered.
    let no_cert = tls::quic_client(&cluster.ca, ALPN_LOG).unwrap();
    if let Some(conn) = connect(no_cert, &client_addr).await {
        for req in [&append, &read, &change_voters] {
            assert!(ask(&conn, req).await.is_none(), "a client without a certificate was answered");
        }
    }
    // A certificate of another CA (an edge's server certificate): refused too.
    let stranger = tls::issue_edge_server(&tls_dir, "stranger", &[]).unwrap();
    assert!(Identity::load(&stranger).is_err(), "no principal in an edge server certificate");

    // A projector reads, but may neither append nor change voters.
    let projector = Identity::load(&issue(&tls_dir, Role::Projector, "p1")).unwrap();
    let conn = connect(projector.log_client().unwrap(), &client_addr).await.expect("a projector connects");
    assert_eq!(code(ask(&conn, &append).await), Some(ErrorCode::Forbidden), "projector appends");
    assert_eq!(code(ask(&conn, &change_voters).await), Some(ErrorCode::Forbidden), "projector changes voters");
    assert!(matches!(ask(&conn, &read).await, Some(Response::Events { .. })), "projectors read");

    // An operator changes membership, but does not append.
    let operator = Identity::load(&issue(&tls_dir, Role::Operator, "o1")).unwrap();
    let conn = connect(operator.log_client().unwrap(), &client_addr).await.expect("an operator connects");
    assert_eq!(code(ask(&conn, &append).await), Some(ErrorCode::Forbidden), "operator appends");

    // An edge appends (it is the one that authenticates devices) and reads
    // (gap fill), but may not change voters nor open a session on its own.
    let edge = Identity::load(&issue(&tls_dir, Role::Edge, "e1")).unwrap();
    let conn = connect(edge.log_client().unwrap(), &client_addr).await.expect("an edge connects");
    assert_eq!(code(ask(&conn, &change_voters).await), Some(ErrorCode::Forbidden), "edge changes voters");
    // Not even an edge may open a session by itself: `CreateSession` (and
    // `LinkDevice`, `RegisterUser`) are superseded by `RegisterDevice`, which
    // checks the registration PIN.
    assert_eq!(code(ask(&conn, &append).await), Some(ErrorCode::Forbidden), "edge appends CreateSession");

    // Nothing of the refused requests was stored: the user partition is empty
    // and the group's voters are unchanged.
    let (events, _) = reader.read(user_partition, Offset(0), 100).await.unwrap();
    assert!(events.is_empty(), "refused appends stored {events:?}");
    let status = reader.status(&client_addr).await.unwrap();
    assert_eq!(status.groups[0].voters, vec![NodeId(1)]);

    // The Raft port: an edge's or a projector's certificate is closed at
    // once; a node's may not speak for another node.
    let vote = openraft::Vote::new_committed(99, 1);
    let heartbeat = Rpc {
        group: 0,
        request: raft_net::Request::AppendEntries(openraft::raft::AppendEntriesRequest {
            vote,
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        }),
    };
    let rpc_frame = framed(&raft_net::encode(&vec![heartbeat]));
    for who in [&edge, &projector] {
        let conn = connect(who.raft_client().unwrap(), &raft_addr).await;
        let answered = match conn {
            None => false,
            Some(c) => match c.open_bi().await {
                Err(_) => false,
                Ok((mut s, mut r)) => {
                    let _ = s.write_all(&rpc_frame).await;
                    let _ = s.finish();
                    frame::read(&mut r, 1 << 20).await.ok().flatten().is_some()
                }
            },
        };
        assert!(!answered, "{} spoke on the Raft port", who.principal);
    }
    let other = Identity::load(&tls::issue(&tls_dir, &Principal::node(9)).unwrap()).unwrap();
    let conn = connect(other.raft_client().unwrap(), &raft_addr).await.expect("a node connects");
    let (mut s, mut r) = conn.open_bi().await.unwrap();
    s.write_all(&rpc_frame).await.unwrap();
    s.finish().unwrap();
    let reply: (u32, Reply) = raft_net::decode(&frame::read(&mut r, 1 << 20).await.unwrap().unwrap()).unwrap();
    assert!(matches!(&reply.1, Reply::Refused(m) if m.contains("may not speak for node 1")), "{reply:?}");
    // The term did not move: the forged heartbeat of term 99 was not applied.
    let status = reader.status(&client_addr).await.unwrap();
    assert!(status.groups[0].term < 99, "{status:?}");

    // `chorus log` refuses clearly without a certificate.
    let out = std::process::Command::new(chorus_binary())
        .args(["log", "--node", &client_addr, "--ca"])
        .arg(&cluster.ca)
        .arg("status")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cert"), "{}", String::from_utf8_lossy(&out.stderr));
    drop(cluster);
}

/// Hole: "a node with `tls = None` mints its own CA silently".
#[test]
fn a_node_without_tls_material_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = chorus_log_node::Config {
        data_dir: dir.path().join("data"),
        peers: vec![chorus_log_node::config::Peer {
            id: 1,
            raft_addr: "127.0.0.1:7001".into(),
            client_addr: "127.0.0.1:7101".into(),
        }],
        replication: 1,
        ..chorus_log_node::Config::default()
    };
    let path = dir.path().join("node.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let out = std::process::Command::new(chorus_binary())
        .args(["log-node", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no TLS material configured"), "{err}");
    assert!(!dir.path().join("data/tls").exists(), "no CA was minted");
}

/// Holes: "the NATS bus has no credentials and no TLS": anyone answers
/// `chorus.view.session` with a forged token hash, publishes forged
/// deliveries, subscribes to all traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_refuses_strangers_and_holds_each_role_to_its_subjects() {
    let dir = tempfile::tempdir().unwrap();
    let creds = bus_auth::provision(
        dir.path(),
        &["p".to_owned()],
        &["e1".to_owned(), "e2".to_owned()],
        &dir.path().join("nats.conf"),
    )
    .unwrap();
    let nats = NatsServer::start_with_config(&creds.conf).expect("a nats-server");
    let auth = |role, name| NatsAuth { ca: creds.ca.clone(), nkey_seed: bus_auth::seed_path(dir.path(), role, name) };

    // No credentials: refused at connect.
    assert!(Bus::connect_nats(&nats.url()).await.is_err(), "an anonymous client connected");
    // A key the server does not know: refused.
    let stranger = dir.path().join("stranger.nk");
    bus_auth::create_nkey(&stranger).unwrap();
    let strange = NatsAuth { ca: creds.ca.clone(), nkey_seed: stranger };
    assert!(Bus::connect_nats_with(&nats.url(), &strange).await.is_err(), "an unknown key connected");

    let projector = Bus::connect_nats_with(&nats.url(), &auth(BusRole::Projector, "p")).await.unwrap();
    let e1 = Bus::connect_nats_with(&nats.url(), &auth(BusRole::Edge, "e1")).await.unwrap();
    let e2 = Bus::connect_nats_with(&nats.url(), &auth(BusRole::Edge, "e2")).await.unwrap();

    // Edge 1 tries to answer view queries and to publish deliveries; edge 2
    // watches deliveries.
    let mut forged_views = e1.queue_subscribe("chorus.view.session", "projectors").await;
    let mut deliveries = e2.subscribe("chorus.deliver.>").await.unwrap();
    e1.publish("chorus.deliver.00", Bytes::from_static(b"forged")).await.unwrap();
    e1.flush().await.ok();
    // The projector's delivery arrives (the watch works) …
    projector.publish("chorus.deliver.01", Bytes::from_static(b"real")).await.unwrap();
    projector.flush().await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), deliveries.next()).await.unwrap().unwrap();
    assert_eq!(&m.payload[..], b"real", "the first delivery seen must be the projector's, not the forged one");
    // … and the forged one never does.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), deliveries.next()).await.is_err(),
        "a forged delivery arrived"
    );

    // Nobody may answer view queries but projectors: edge 2's query finds no
    // responder (edge 1's subscription was refused by the server).
    let asked = e2.request("chorus.view.session", Bytes::from_static(b"q"), Duration::from_secs(1)).await;
    assert!(asked.is_err(), "a view query was answered by an edge: {asked:?}");
    if let Ok(sub) = forged_views.as_mut() {
        assert!(tokio::time::timeout(Duration::from_millis(300), sub.next())
            .await
            .map(|m| m.is_none())
            .unwrap_or(true));
    }
    // With a projector serving, the same query is answered.
    let mut views = projector.queue_subscribe("chorus.view.session", "projectors").await.unwrap();
    let serve = tokio::spawn(async move {
        let m = views.next().await.unwrap();
        projector.respond(&m, Bytes::from_static(b"answer")).await.unwrap();
        projector.flush().await.unwrap();
    });
    let answer = e2.request("chorus.view.session", Bytes::from_static(b"q"), Duration::from_secs(5)).await.unwrap();
    assert_eq!(&answer[..], b"answer");
    serve.await.unwrap();

    // An edge cannot read another edge's replies (its inbox is its own).
    let theirs = format!(
        "{}.>",
        chorus_bus::inbox_prefix(
            &bus_auth::public_key_of(&bus_auth::seed_path(dir.path(), BusRole::Edge, "e2")).unwrap()
        )
    );
    let mut spy = e1.subscribe(&theirs).await;
    if let Ok(sub) = spy.as_mut() {
        let projector2 = Bus::connect_nats_with(&nats.url(), &auth(BusRole::Projector, "p")).await.unwrap();
        let mut views = projector2.queue_subscribe("chorus.view.session", "projectors").await.unwrap();
        tokio::spawn(async move {
            if let Some(m) = views.next().await {
                let _ = projector2.respond(&m, Bytes::from_static(b"secret")).await;
                let _ = projector2.flush().await;
            }
        });
        let got = e2.request("chorus.view.session", Bytes::from_static(b"q"), Duration::from_secs(5)).await.unwrap();
        assert_eq!(&got[..], b"secret");
        assert!(
            tokio::time::timeout(Duration::from_millis(300), sub.next()).await.map(|m| m.is_none()).unwrap_or(true),
            "edge 1 read edge 2's reply"
        );
    }
}

/// With certificates, the normal path works: the launcher's edge identity appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_certificate_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, _) = one_node(dir.path()).await;
    let client = LogClient::connect(&cluster.client_addrs(), &cluster.writer, ClientConfig::default()).await.unwrap();
    let cmd = Command {
        origin: Origin { user: UserId(7), device: DeviceId(1), client_msg_id: ClientMsgId(1) },
        body: CommandBody::SendDirect { recipient: UserId(8), ciphertext: b"hi".to_vec(), media: None },
    };
    assert!(matches!(client.append(&cmd).await, Ok(Ok(_))));
    // The operator's client is refused the same append, with the code.
    let admin = cluster.admin(ClientConfig::default()).await.unwrap();
    match admin.append(&cmd).await {
        Err(chorus_log_node::client::Error::Refused { code, .. }) => assert_eq!(code, ErrorCode::Forbidden),
        other => panic!("an operator appended: {other:?}"),
    }
}
