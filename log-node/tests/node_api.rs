//! A real log-node in this process (real RocksDB on disk, real QUIC on
//! loopback): appends, reads, idempotent retries, restart, and bad input on
//! both the client port and the raft port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chorus_log_node::network::raft::{self as raft_net, Reply};
use chorus_log_node::network::tls::{Principal, Role, TlsPaths};
use chorus_log_node::network::{frame, tls, SERVER_NAME};
use chorus_log_node::{Config, LogClient, Node};
use chorus_schema::{
    AppendCommand, ClientMsgId, Command, CommandBody, DeviceId, ErrorCode, EventBody, Offset, Origin, Outcome,
    PartitionId, Request, Response, UserId, MAX_CIPHERTEXT_BYTES,
};

/// The testkit's one-node config: 4 partitions on 2 Raft groups.
fn config(dir: &Path) -> Config {
    Config { groups: 2, ..chorus_testkit::node::one_node_config(dir, 4).unwrap() }
}

/// A certificate of `role` from the test cluster's CA.
fn identity(config: &Config, role: Role, name: &str) -> TlsPaths {
    chorus_testkit::node::identity(config, role, name).unwrap()
}

fn send(from: u64, to: u64, id: u64, text: &str) -> Command {
    Command {
        origin: Origin { user: UserId(from), device: DeviceId(1), client_msg_id: ClientMsgId(id) },
        body: CommandBody::SendDirect { recipient: UserId(to), ciphertext: text.as_bytes().to_vec(), media: None },
    }
}

async fn must_start(config: Config) -> (Node, LogClient) {
    chorus_testkit::node::start(&config).await.expect("the node starts and elects")
}

/// Sends raw bytes as one stream on the client port and returns the decoded response.
async fn raw_request(conn: &quinn::Connection, bytes: &[u8], finish: bool) -> Option<Response> {
    let (mut send, mut recv) = conn.open_bi().await.expect("open stream");
    send.write_all(bytes).await.expect("write");
    if finish {
        send.finish().expect("finish");
    }
    let reply = frame::read(&mut recv, 1 << 24).await.ok().flatten()?;
    Some(Response::decode(&reply).expect("the node's response decodes"))
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_read_retry_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (node, client) = must_start(cfg.clone()).await;

    let first = client.append(&send(1, 2, 100, "hello")).await.unwrap().unwrap();
    let Outcome::Chat { chat, seq } = first.clone() else { panic!("unexpected outcome {first:?}") };
    assert_eq!(seq.0, 1);
    let second = client.append(&send(2, 1, 200, "hi back")).await.unwrap().unwrap();
    assert_eq!(second, Outcome::Chat { chat, seq: chorus_schema::Seq(2) }, "same chat, next seq");

    // A retry with the same client_msg_id returns the original result and appends nothing.
    let retry = client.append(&send(1, 2, 100, "hello")).await.unwrap().unwrap();
    assert_eq!(retry, first);

    let partition = client.partition_of(&send(1, 2, 100, "hello"));
    let (events, next) = client.read(partition, Offset(0), 100).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| std::mem::discriminant(&e.event.body)).collect();
    assert_eq!(events.len(), 3, "ChatOpened + 2 × MessageSent: {events:?}");
    assert_eq!(next, Offset(3));
    assert!(matches!(events[0].event.body, EventBody::ChatOpened { .. }));
    assert!(matches!(events[2].event.body, EventBody::MessageSent { ref ciphertext, .. } if ciphertext == b"hi back"));
    assert_eq!(kinds.len(), 3);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.offset, Offset(i as u64));
        assert_eq!(e.partition, partition);
    }

    node.shutdown().await;
    drop(client);

    // Everything survives a restart, and so does the dedup table.
    let (node, client) = must_start(cfg).await;
    let (again, _) = client.read(partition, Offset(0), 100).await.unwrap();
    assert_eq!(again, events);
    let retry = client.append(&send(1, 2, 100, "hello")).await.unwrap().unwrap();
    assert_eq!(retry, first, "dedup survives a restart");
    let third = client.append(&send(1, 2, 101, "after restart")).await.unwrap().unwrap();
    assert_eq!(third, Outcome::Chat { chat, seq: chorus_schema::Seq(3) });
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_streams_committed_events_in_order_as_they_commit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (node, client) = must_start(cfg.clone()).await;
    let partition = client.partition_of(&send(1, 2, 0, ""));
    // History before the tail starts, and live events after.
    for i in 0..5 {
        client.append(&send(1, 2, i, "before")).await.unwrap().unwrap();
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let tailer = client.clone();
    let addr = cfg.client_addr.clone();
    let task = tokio::spawn(async move { tailer.tail(&addr, partition, Offset(2), tx).await });
    for i in 5..40 {
        client.append(&send(1, 2, i, "live")).await.unwrap().unwrap();
    }
    // ChatOpened at 0, then one MessageSent per append: offsets 2..=40 must stream, in order.
    for expected in 2..=40u64 {
        let e = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("tail delivers").expect("open");
        assert_eq!(e.offset, Offset(expected));
        assert_eq!(e.partition, partition);
        let EventBody::MessageSent { seq, .. } = e.event.body else { panic!("unexpected {e:?}") };
        assert_eq!(seq.0, expected, "offset n holds seq n in this chat");
    }
    drop(rx);
    // Dropping the receiver ends the tail once the next event arrives.
    client.append(&send(1, 2, 99, "after")).await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("tail ends").unwrap().unwrap();
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_errors_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (node, client) = must_start(cfg.clone()).await;
    let ca = cfg.data_dir.join("tls/ca.pem");
    let edge = tls::Identity::load(&identity(&cfg, Role::Edge, "test")).unwrap();

    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = endpoint
        .connect_with(edge.log_client().unwrap(), cfg.client_addr.parse().unwrap(), SERVER_NAME)
        .unwrap()
        .await
        .expect("connect to client port");

    let code = |r: Option<Response>| match r {
        Some(Response::Error { code, .. }) => Some(code),
        other => panic!("expected an error response, got {other:?}"),
    };
    // Garbage inside a well-formed frame.
    assert_eq!(
        code(raw_request(&conn, &framed(b"\x01\x02garbage not a flatbuffer"), true).await),
        Some(ErrorCode::BadFrame)
    );
    // A length prefix over the limit.
    assert_eq!(code(raw_request(&conn, &u32::MAX.to_be_bytes(), true).await), Some(ErrorCode::FrameTooLarge));
    // A frame cut short.
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(b"short");
    assert_eq!(code(raw_request(&conn, &truncated, true).await), Some(ErrorCode::BadFrame));
    // A valid frame holding a command that does not decode.
    let bad_cmd =
        Request::Append { commands: vec![AppendCommand { partition: PartitionId(0), bytes: b"nonsense".to_vec() }] }
            .encode();
    assert_eq!(code(raw_request(&conn, &framed(&bad_cmd), true).await), Some(ErrorCode::InvalidCommand));
    // Ciphertext over the limit: refused, nothing stored.
    let huge = send(5, 6, 1, &"x".repeat(MAX_CIPHERTEXT_BYTES + 1));
    assert!(huge.encode().len() > MAX_CIPHERTEXT_BYTES);
    let p = client.partition_of(&huge);
    let req = Request::Append { commands: vec![AppendCommand { partition: p, bytes: huge.encode() }] }.encode();
    assert_eq!(code(raw_request(&conn, &framed(&req), true).await), Some(ErrorCode::InvalidCommand));
    // A command that claims another partition than its key's, and one on a
    // partition the cluster does not have.
    let ok = send(5, 6, 2, "x");
    let other = PartitionId((client.partition_of(&ok).0 + 1) % 4);
    let req = Request::Append { commands: vec![AppendCommand { partition: other, bytes: ok.encode() }] }.encode();
    assert_eq!(code(raw_request(&conn, &framed(&req), true).await), Some(ErrorCode::InvalidCommand));
    let req =
        Request::Append { commands: vec![AppendCommand { partition: PartitionId(4), bytes: ok.encode() }] }.encode();
    assert_eq!(code(raw_request(&conn, &framed(&req), true).await), Some(ErrorCode::InvalidCommand));
    // Commands of partitions on two groups in one append.
    let on = |g: u16| {
        (0..100u64)
            .map(|i| send(5, 100 + i, 3, "y"))
            .find(|c| client.group_of(client.partition_of(c)) == chorus_schema::GroupId(g))
            .unwrap()
    };
    let (a, b) = (on(0), on(1));
    let req = Request::Append {
        commands: vec![
            AppendCommand { partition: client.partition_of(&a), bytes: a.encode() },
            AppendCommand { partition: client.partition_of(&b), bytes: b.encode() },
        ],
    }
    .encode();
    assert_eq!(code(raw_request(&conn, &framed(&req), true).await), Some(ErrorCode::MixedGroups));
    for p in 0..4 {
        let (events, _) = client.read(PartitionId(p), Offset(0), 100).await.unwrap();
        assert!(events.iter().all(|e| e.event.origin.user != UserId(5)), "nothing of the refused commands was stored");
    }

    // Raft port: a connection without a client certificate is refused.
    let raft_sock = cfg.raft_addr.parse().unwrap();
    let no_cert = endpoint
        .connect_with(tls::quic_client(&ca, chorus_log_node::network::ALPN_RAFT).unwrap(), raft_sock, SERVER_NAME)
        .unwrap()
        .await;
    let refused = match no_cert {
        Err(_) => true,
        // TLS 1.3 may finish the handshake on the client before the server rejects the certificate.
        Ok(c) => match c.open_bi().await {
            Err(_) => true,
            Ok((mut s, mut r)) => {
                let _ = s.write_all(&framed(b"x")).await;
                let _ = s.finish();
                frame::read(&mut r, 1024).await.ok().flatten().is_none()
            }
        },
    };
    assert!(refused, "raft port must require a client certificate");

    // With a node certificate, garbage gets a Refused reply, not a crash.
    let node_id = tls::issue(&cfg.data_dir.join("tls"), &Principal::node(9)).unwrap();
    let ident = tls::Identity::load(&node_id).unwrap();
    let rconn = endpoint.connect_with(ident.raft_client().unwrap(), raft_sock, SERVER_NAME).unwrap().await.unwrap();
    let (mut s, mut r) = rconn.open_bi().await.unwrap();
    s.write_all(&framed(b"\xff\xff\xff\xff not bincode")).await.unwrap();
    s.finish().unwrap();
    let reply = frame::read(&mut r, 1 << 20).await.unwrap().expect("a reply frame");
    let reply: (u32, Reply) = raft_net::decode(&reply).unwrap();
    assert!(matches!(reply, (raft_net::WHOLE_FRAME, Reply::Refused(_))), "{reply:?}");
    // An oversized raft frame: the stream is refused.
    let (mut s, mut r) = rconn.open_bi().await.unwrap();
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    s.finish().unwrap();
    let reply: (u32, Reply) = raft_net::decode(&frame::read(&mut r, 1 << 20).await.unwrap().unwrap()).unwrap();
    assert!(
        matches!(reply, (raft_net::WHOLE_FRAME, Reply::Refused(ref m)) if m.contains("over the limit")),
        "{reply:?}"
    );

    // Other clients are unaffected.
    let ok = client.append(&send(7, 8, 1, "still here")).await.unwrap();
    assert!(matches!(ok, Ok(Outcome::Chat { .. })), "{ok:?}");
    drop(Arc::new(conn));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_raft_core_is_reported_as_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _client) = must_start(config(dir.path())).await;
    // Healthy: nothing fatal within a moment.
    assert!(tokio::time::timeout(Duration::from_millis(300), node.fatal()).await.is_err());
    // One group's core stops (as after a storage error): reported, with
    // that group.
    node.raft(chorus_schema::GroupId(1)).unwrap().shutdown().await.unwrap();
    let (group, why) = tokio::time::timeout(Duration::from_secs(5), node.fatal()).await.expect("reported");
    assert_eq!(group, Some(chorus_schema::GroupId(1)), "{why}");
}
