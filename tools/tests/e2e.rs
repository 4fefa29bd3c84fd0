//! Messaging end to end, every part a real process: 3 log-nodes, a
//! nats-server, a projector and 2 edges, with clients on the SDK over QUIC.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chorus_client::{Client, Credentials, Event, Resume};
use chorus_schema::edge::{write_frame, ALPN};
use chorus_schema::{
    ChatId, ClientFrame, ClientMsgId, EdgeErrorCode, Offset, PartitionId, ReceiptKind, Recipient, Seq, ServerFrame,
    UserId,
};
use chorus_testkit::cluster::chorus_binary;
use chorus_testkit::events::{messages, synced};
use chorus_testkit::stack::{Stack, StackSpec};

/// One deployment at a time: each is 7 processes on 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

async fn stack(dir: &std::path::Path) -> Stack {
    stack_with(StackSpec::new(dir, chorus_binary())).await
}

async fn stack_with(spec: StackSpec) -> Stack {
    Stack::start(spec.unthrottled()).await.expect("start the stack")
}

async fn connect(
    stack: &Stack,
    edges: &[usize],
    c: Credentials,
    resume: Resume,
) -> (Client, tokio::sync::mpsc::Receiver<Event>) {
    Client::connect_raw(stack.client_config(edges), c, resume).await.expect("log in")
}

/// Nothing more arrives within `wait`.
async fn quiet(events: &mut tokio::sync::mpsc::Receiver<Event>, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.recv()).await {
        assert!(!matches!(ev, Event::Message(_)), "unexpected message {ev:?}");
    }
}

fn text(i: usize, who: &str) -> Vec<u8> {
    format!("{who} {i}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_clients_exchange_1000_messages_both_ways_with_receipts() {
    let _g = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path()).await;
    let alice = stack.register(0, "+15550000001").await.unwrap();
    let bob = stack.register(1, "+15550000002").await.unwrap();
    let (a, mut a_events) = connect(&stack, &[0], alice, Resume::default()).await;
    let (b, mut b_events) = connect(&stack, &[1], bob, Resume::default()).await;
    synced(&mut a_events).await;
    synced(&mut b_events).await;

    const N: usize = 1000;
    // Each side sends in order (one at a time, so that commit order is send order).
    let send_all = |c: Client, to: UserId, who: &'static str| {
        tokio::spawn(async move {
            let mut sent = Vec::new();
            for i in 0..N {
                let s = c.send(Recipient::User(to), text(i, who)).await.expect("send");
                sent.push(s);
            }
            sent
        })
    };
    let a_sends = send_all(a.clone(), bob.user, "alice");
    let b_sends = send_all(b.clone(), alice.user, "bob");
    // Each side receives the other's N messages, acking delivered as they come.
    let recv_all = |c: Client, mut events: tokio::sync::mpsc::Receiver<Event>| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < N {
                match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
                    Ok(Some(Event::Message(m))) => {
                        c.ack(m.chat, ReceiptKind::Delivered, m.seq);
                        got.push(m);
                    }
                    Ok(Some(_)) => {}
                    other => panic!("after {} messages: {other:?}", got.len()),
                }
            }
            (got, events)
        })
    };
    let a_recv = recv_all(a.clone(), a_events);
    let b_recv = recv_all(b.clone(), b_events);
    let (a_sent, b_sent) = (a_sends.await.unwrap(), b_sends.await.unwrap());
    let ((a_got, mut a_events), (b_got, mut b_events)) = (a_recv.await.unwrap(), b_recv.await.unwrap());

    let chat = ChatId::direct(alice.user, bob.user);
    for (sent, got, sender, who) in [(&a_sent, &b_got, alice, "alice"), (&b_sent, &a_got, bob, "bob")] {
        assert!(sent.iter().all(|s| s.chat == chat));
        let sent_seqs: Vec<Seq> = sent.iter().map(|s| s.seq).collect();
        let got_seqs: Vec<Seq> = got.iter().map(|m| m.seq).collect();
        assert_eq!(got_seqs, sent_seqs, "{who}'s messages arrive in commit order, each once");
        for (i, m) in got.iter().enumerate() {
            assert_eq!(m.ciphertext, text(i, who), "content of {who}'s message {i}");
            assert_eq!((m.sender, m.sender_device), (sender.user, sender.device));
            assert_eq!(m.client_msg_id, sent[i].client_msg_id);
        }
    }
    // Both sides' seqs together are the chat's gap-free timeline.
    let all: BTreeSet<u64> = a_sent.iter().chain(&b_sent).map(|s| s.seq.0).collect();
    assert_eq!(all, (1..=2 * N as u64).collect());

    // Read receipts: each side reads everything; the other sees the tick reach Read
    // for its last message.
    let a_last = a_got.last().unwrap().seq;
    let b_last = b_got.last().unwrap().seq;
    a.ack(chat, ReceiptKind::Read, a_last);
    b.ack(chat, ReceiptKind::Read, b_last);
    for (events, last) in [(&mut a_events, a_sent.last().unwrap().seq), (&mut b_events, b_sent.last().unwrap().seq)] {
        let mut delivered = Seq(0);
        let mut read = Seq(0);
        while read < last {
            match tokio::time::timeout(Duration::from_secs(20), events.recv()).await {
                Ok(Some(Event::Receipt { chat: c, up_to_seq, status })) => {
                    assert_eq!(c, chat);
                    match status {
                        ReceiptKind::Delivered => {
                            assert!(up_to_seq >= delivered, "delivered ticks never go back");
                            delivered = up_to_seq;
                        }
                        ReceiptKind::Read => {
                            assert!(up_to_seq >= read, "read ticks never go back");
                            read = up_to_seq;
                        }
                    }
                }
                Ok(Some(Event::Message(m))) => panic!("unexpected message {m:?}"),
                Ok(Some(_)) => {}
                other => panic!("read tick stuck at {read} (delivered {delivered}) of {last}: {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_offline_recipient_gets_everything_once_in_order_then_live() {
    let _g = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path()).await;
    let alice = stack.register(0, "+15550000011").await.unwrap();
    let bob = stack.register(1, "+15550000012").await.unwrap();
    let (a, mut a_events) = connect(&stack, &[0], alice, Resume::default()).await;
    synced(&mut a_events).await;

    // Bob is online for the first message, then goes away.
    let (b, mut b_events) = connect(&stack, &[1], bob, Resume::default()).await;
    synced(&mut b_events).await;
    let first = a.send(Recipient::User(bob.user), b"hello".to_vec()).await.unwrap();
    let got = messages(&mut b_events, 1, Duration::from_secs(10)).await;
    assert_eq!(got[0].seq, first.seq);
    let resume = Resume { positions: b.positions() };
    b.close();
    drop(b_events);

    // 500 sends while Bob is offline.
    let mut sent = Vec::new();
    for i in 0..500 {
        sent.push(a.send(Recipient::User(bob.user), text(i, "offline")).await.unwrap());
    }
    // Bob comes back on the other edge: the sync brings the 500, once each, in order.
    let (b, mut b_events) = connect(&stack, &[0], bob, resume).await;
    let synced_msgs = synced(&mut b_events).await;
    assert_eq!(synced_msgs.iter().map(|m| m.seq).collect::<Vec<_>>(), sent.iter().map(|s| s.seq).collect::<Vec<_>>());
    for (i, m) in synced_msgs.iter().enumerate() {
        assert_eq!(m.ciphertext, text(i, "offline"));
    }
    // Then live delivery goes on with no gap and no duplicate.
    let mut live = Vec::new();
    for i in 0..20 {
        live.push(a.send(Recipient::User(bob.user), text(i, "live")).await.unwrap().seq);
    }
    let got = messages(&mut b_events, 20, Duration::from_secs(10)).await;
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), live);
    quiet(&mut b_events, Duration::from_millis(500)).await;
    assert_eq!(
        b.stats().duplicates_dropped.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the edge sent nothing twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_edge_mid_send_loses_nothing_and_shows_nothing_twice() {
    let _g = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let mut stack = stack(dir.path()).await;
    let alice = stack.register(0, "+15550000021").await.unwrap();
    let bob = stack.register(1, "+15550000022").await.unwrap();
    // Alice prefers edge 0 and fails over to edge 1; Bob is on edge 1.
    let (a, mut a_events) = connect(&stack, &[0, 1], alice, Resume::default()).await;
    let (_b, mut b_events) = connect(&stack, &[1], bob, Resume::default()).await;
    synced(&mut a_events).await;
    synced(&mut b_events).await;

    const N: usize = 400;
    let sender = {
        let a = a.clone();
        tokio::spawn(async move {
            // 16 concurrent senders, each in order.
            let mut tasks = Vec::new();
            for t in 0..16 {
                let a = a.clone();
                tasks.push(tokio::spawn(async move {
                    let mut out = Vec::new();
                    for i in (t..N).step_by(16) {
                        out.push((i, a.send(Recipient::User(bob.user), text(i, "m")).await.expect("send resolves")));
                    }
                    out
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all
        })
    };
    // Kill edge 0 once some sends are through.
    let got_before = messages(&mut b_events, 60, Duration::from_secs(20)).await;
    stack.cluster.edges[0].kill();
    let sent = tokio::time::timeout(Duration::from_secs(60), sender).await.expect("sends finish").unwrap();
    assert_eq!(sent.len(), N);
    assert!(a.stats().connects.load(std::sync::atomic::Ordering::Relaxed) >= 2, "alice reconnected");

    let mut got = got_before;
    got.extend(messages(&mut b_events, N - got.len(), Duration::from_secs(20)).await);
    quiet(&mut b_events, Duration::from_millis(500)).await;
    // Every send committed once: distinct seqs, and Bob saw exactly those, in order.
    let by_seq: BTreeMap<Seq, usize> = sent.iter().map(|(i, s)| (s.seq, *i)).collect();
    assert_eq!(by_seq.len(), N, "a resent message got a second seq");
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), by_seq.keys().copied().collect::<Vec<_>>());
    for m in &got {
        assert_eq!(m.ciphertext, text(by_seq[&m.seq], "m"));
    }
    // The log holds each message once.
    let chat = ChatId::direct(alice.user, bob.user);
    let partition = PartitionId::for_key(&chorus_schema::Key::Chat(chat), stack.spec.partitions);
    let mut seqs = Vec::new();
    let mut from = Offset(0);
    loop {
        let (events, next) = stack.log.read(partition, from, 4096).await.unwrap();
        if events.is_empty() {
            break;
        }
        from = next;
        for r in events {
            if let chorus_schema::EventBody::MessageSent { chat: c, seq, .. } = r.event.body {
                if c == chat {
                    seqs.push(seq.0);
                }
            }
        }
    }
    assert_eq!(seqs, (1..=N as u64).collect::<Vec<_>>());

    // Found by the Jepsen harness (edge kills): a client whose first edge is
    // dead waited for QUIC's idle timeout (10 s) on the handshake before it
    // tried the next edge. It now gives a handshake `connect_timeout_ms` (3 s).
    let started = std::time::Instant::now();
    let (a2, mut a2_events) = connect(&stack, &[0, 1], alice, Resume::default()).await;
    assert!(started.elapsed() < Duration::from_secs(6), "login through the live edge took {:?}", started.elapsed());
    synced(&mut a2_events).await;
    // Asked to reconnect (as after a network change), the client comes back
    // and a send made meanwhile goes through once.
    a2.reconnect();
    let sent = tokio::time::timeout(Duration::from_secs(20), a2.send(Recipient::User(bob.user), b"after".to_vec()))
        .await
        .expect("the send resolves after the reconnect")
        .unwrap();
    assert_eq!(sent.seq, Seq(N as u64 + 1));
    assert_eq!(messages(&mut b_events, 1, Duration::from_secs(20)).await[0].seq, sent.seq);
    assert!(a2.stats().connects.load(std::sync::atomic::Ordering::Relaxed) >= 2, "the client reconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_projector_loses_no_delivery_and_views_equal_a_rebuild() {
    let _g = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let mut stack = stack(dir.path()).await;
    let alice = stack.register(0, "+15550000031").await.unwrap();
    let bob = stack.register(1, "+15550000032").await.unwrap();
    let (a, mut a_events) = connect(&stack, &[0], alice, Resume::default()).await;
    let (b, mut b_events) = connect(&stack, &[1], bob, Resume::default()).await;
    synced(&mut a_events).await;
    synced(&mut b_events).await;

    let mut sent = Vec::new();
    for i in 0..300 {
        if i == 100 {
            stack.projector().unwrap().kill();
        }
        if i == 150 {
            stack.projector().unwrap().start().unwrap();
        }
        sent.push(a.send(Recipient::User(bob.user), text(i, "p")).await.unwrap().seq);
    }
    // Deliveries published while the projector was down come when it resumes
    // from its cursor (or through the edge's gap fill); none is lost or doubled.
    let got = messages(&mut b_events, 300, Duration::from_secs(60)).await;
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), sent);
    b.ack(ChatId::direct(alice.user, bob.user), ReceiptKind::Read, *sent.last().unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;
    quiet(&mut b_events, Duration::from_millis(300)).await;

    // Stop the projector cleanly, rebuild the views from the log, compare.
    stack.projector().unwrap().stop(Duration::from_secs(10));
    let rebuilt = dir.path().join("rebuilt");
    // The deployment's view key: the contact index hashes phones with a key derived from it.
    let view_key = stack.projector().unwrap().config.view_key.clone();
    let status = std::process::Command::new(chorus_binary())
        .args(["replay", "--node", &stack.cluster.client_addrs()[0]])
        .args(stack.cluster.operator_args())
        .arg("--view-key")
        .arg(&view_key)
        .arg("--out")
        .arg(&rebuilt)
        .status()
        .unwrap();
    assert!(status.success());
    let live = dump(&stack.projector().unwrap().config.store_dir);
    let fresh = dump(&rebuilt);
    assert!(!live.is_empty());
    let first_diff = live.iter().zip(&fresh).position(|(x, y)| x != y);
    assert_eq!(live.len(), fresh.len(), "same number of keys (first difference at {first_diff:?})");
    assert_eq!(first_diff, None, "live views == views rebuilt from the log");
}

/// Every key and value of a projector store (RocksDB, all column families).
fn dump(path: &std::path::Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), path).unwrap();
    let db = rocksdb::DB::open_cf_for_read_only(&rocksdb::Options::default(), path, &cfs, false).unwrap();
    let mut out = Vec::new();
    for cf in &cfs {
        let h = db.cf_handle(cf).unwrap();
        for kv in db.iterator_cf(h, rocksdb::IteratorMode::Start) {
            let (k, v) = kv.unwrap();
            let mut key = cf.as_bytes().to_vec();
            key.push(0);
            key.extend_from_slice(&k);
            out.push((key, v.to_vec()));
        }
    }
    out
}

/// A raw connection to an edge: its control stream, frames written by hand.
struct Raw {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    reader: chorus_schema::edge::FrameReader,
}

impl Raw {
    /// A connection without keep-alives of its own (quinn's default): only
    /// the edge's keep-alives hold it open.
    async fn open(stack: &Stack, edge: usize) -> Raw {
        Raw::open_with(stack, edge, quinn::TransportConfig::default()).await
    }

    async fn open_with(stack: &Stack, edge: usize, mut t: quinn::TransportConfig) -> Raw {
        let endpoint = quinn::Endpoint::client("0.0.0.0:0".parse().unwrap()).unwrap();
        let mut quic = chorus_log_node::network::tls::quic_client(&stack.cluster.edge_ca, ALPN).unwrap();
        t.max_concurrent_uni_streams(1u32.into());
        quic.transport_config(std::sync::Arc::new(t));
        let addr = stack.edge_addrs()[edge].parse().unwrap();
        let conn = endpoint.connect_with(quic, addr, "chorus.local").unwrap().await.unwrap();
        let (send, recv) = conn.open_bi().await.unwrap();
        Raw { conn, send, recv, reader: Default::default() }
    }

    async fn bytes(&mut self, b: &[u8]) {
        self.send.write_all(b).await.unwrap();
    }

    async fn frame(&mut self, f: &ClientFrame) {
        let mut b = Vec::new();
        write_frame(&mut b, &f.encode());
        self.bytes(&b).await;
    }

    /// The next server frame, or `None` once the connection is closed.
    async fn next(&mut self) -> Option<ServerFrame> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(f) = self.reader.next_frame().unwrap() {
                return Some(ServerFrame::decode(&f).unwrap());
            }
            match tokio::time::timeout(Duration::from_secs(10), self.recv.read(&mut chunk)).await.expect("an answer") {
                Ok(Some(n)) => self.reader.push(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// Logs in as `who`, syncs from the start and takes the delivery stream
    /// (it appears with the `SyncDone` frame), without reading it.
    async fn log_in(&mut self, who: Credentials) -> quinn::RecvStream {
        self.frame(&ClientFrame::Login { user: who.user, device: who.device, token: who.token }).await;
        assert!(matches!(self.next().await, Some(ServerFrame::LoggedIn { .. })));
        self.frame(&ClientFrame::Sync { since: Vec::new() }).await;
        tokio::time::timeout(Duration::from_secs(10), self.conn.accept_uni()).await.expect("a delivery stream").unwrap()
    }

    async fn error(&mut self, step: &str) -> (EdgeErrorCode, Option<ClientMsgId>) {
        eprintln!("step: {step}");
        match self.next().await {
            Some(ServerFrame::Error { code, client_msg_id, .. }) => (code, client_msg_id),
            other => panic!("expected an error frame, got {other:?}"),
        }
    }
}

/// The events of `chat` in the log, from its partition's start to its end now.
async fn chat_events(stack: &Stack, chat: ChatId) -> Vec<chorus_schema::EventRecord> {
    let records = stack.partition_records(&chorus_schema::Key::Chat(chat)).await.unwrap();
    records.into_iter().filter(|r| r.event.body.chat() == Some(chat)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_clear_errors_stores_nothing_and_harms_no_one() {
    let _g = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path()).await;
    let alice = stack.register(0, "+15550000041").await.unwrap();
    let bob = stack.register(1, "+15550000042").await.unwrap();
    let (a, mut a_events) = connect(&stack, &[0], alice, Resume::default()).await;
    let (_b, mut b_events) = connect(&stack, &[1], bob, Resume::default()).await;
    synced(&mut a_events).await;
    synced(&mut b_events).await;

    // Unauthenticated: a send before login.
    let mut raw = Raw::open(&stack, 0).await;
    let send = |to: UserId, id: u64, len: usize| ClientFrame::Send {
        to: Recipient::User(to),
        client_msg_id: ClientMsgId(id),
        ciphertext: vec![7; len],
        media: None,
        devices_digest: None,
    };
    raw.frame(&send(bob.user, 1, 10)).await;
    assert_eq!(raw.error("1").await, (EdgeErrorCode::Unauthenticated, Some(ClientMsgId(1))));
    // Acting as another user: Bob's ids with a made-up token.
    raw.frame(&ClientFrame::Login { user: bob.user, device: bob.device, token: [1; 32] }).await;
    assert_eq!(raw.error("2").await.0, EdgeErrorCode::Unauthenticated);
    // Malformed frames: garbage in a well-formed length prefix.
    let mut garbage = Vec::new();
    write_frame(&mut garbage, b"this is not a flatbuffer");
    raw.bytes(&garbage).await;
    assert_eq!(raw.error("3").await.0, EdgeErrorCode::BadFrame);
    // Logged in as Alice (a second device connection of hers).
    raw.frame(&ClientFrame::Login { user: alice.user, device: alice.device, token: alice.token }).await;
    assert!(matches!(raw.next().await, Some(ServerFrame::LoggedIn { .. })));
    // Over the ciphertext limit: refused while decoding, so without its id.
    raw.frame(&send(bob.user, 2, chorus_schema::MAX_CIPHERTEXT_BYTES + 1)).await;
    assert_eq!(raw.error("4").await, (EdgeErrorCode::CiphertextTooLarge, None));
    // An unknown recipient.
    raw.frame(&send(UserId(0xdead_beef), 3, 10)).await;
    assert_eq!(raw.error("5").await, (EdgeErrorCode::UnknownRecipient, Some(ClientMsgId(3))));
    // The reserved client_msg_id bit.
    raw.frame(&send(bob.user, 1 << 63, 10)).await;
    assert_eq!(raw.error("6").await.0, EdgeErrorCode::BadFrame);
    // A length prefix over the frame limit closes the connection after an error.
    raw.bytes(&u32::MAX.to_be_bytes()).await;
    assert_eq!(raw.error("7").await.0, EdgeErrorCode::FrameTooLarge);
    assert_eq!(raw.next().await, None, "closed after an unframeable stream");
    let reason = raw.conn.closed().await;
    assert!(reason.to_string().contains("frame too large"), "{reason}");

    // Others are unaffected: Alice's main connection still sends, Bob receives.
    let s = a.send(Recipient::User(bob.user), b"still here".to_vec()).await.unwrap();
    let got = messages(&mut b_events, 1, Duration::from_secs(10)).await;
    assert_eq!((got[0].seq, &got[0].ciphertext[..]), (s.seq, &b"still here"[..]));
    // Nothing was stored: the refused frames were answered before that send,
    // whose commit orders after anything they could have appended in its chat.
    let sent: Vec<Vec<u8>> = chat_events(&stack, ChatId::direct(alice.user, bob.user))
        .await
        .into_iter()
        .filter_map(|r| match r.event.body {
            chorus_schema::EventBody::MessageSent { ciphertext, .. } => Some(ciphertext),
            _ => None,
        })
        .collect();
    assert_eq!(sent, vec![b"still here".to_vec()], "only the good message is in the chat");
    assert!(chat_events(&stack, ChatId::direct(alice.user, UserId(0xdead_beef))).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_stops_reading_is_disconnected_and_resyncs_while_idle_ones_stay_up() {
    let _g = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let mut spec = StackSpec::new(dir.path(), chorus_binary());
    spec.edge.delivery_queue_max = 32;
    let stack = stack_with(spec).await;
    let alice = stack.register(0, "+15550000051").await.unwrap();
    let bob = stack.register(1, "+15550000052").await.unwrap();
    let (a, mut a_events) = connect(&stack, &[0], alice, Resume::default()).await;
    synced(&mut a_events).await;

    // An idle connection of Alice's that sends no keep-alives itself.
    let mut idle = Raw::open(&stack, 0).await;
    let _idle_deliveries = idle.log_in(alice).await;
    let idle_since = tokio::time::Instant::now();

    // Bob logs in on a connection with a small receive window and never
    // reads his deliveries.
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window((16u32 << 10).into());
    let mut slow = Raw::open_with(&stack, 1, t).await;
    let _unread = slow.log_in(bob).await;

    // Alice sends more than the window, the edge's queue and its mailbox hold.
    let n = 200;
    let mut sent = Vec::new();
    for i in 0..n {
        let mut body = text(i, "alice");
        body.resize(2048, b'.');
        sent.push(a.send(Recipient::User(bob.user), body).await.unwrap());
    }
    // The edge gives up on Bob's connection, saying why, on its control stream.
    let (code, _) = slow.error("slow reader").await;
    assert_eq!(code, EdgeErrorCode::Unavailable);
    let reason = tokio::time::timeout(Duration::from_secs(10), slow.conn.closed()).await.expect("closed");
    assert!(reason.to_string().contains("too slow"), "{reason}");

    // Bob reconnects and gets every message once, in order, by syncing.
    let (_b, mut b_events) = connect(&stack, &[1], bob, Resume::default()).await;
    let got = synced(&mut b_events).await;
    let seqs: Vec<Seq> = got.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, sent.iter().map(|s| s.seq).collect::<Vec<_>>(), "all of them, once, in order");

    // Alice's idle connection outlived the idle timeout (10 s) on the edge's
    // keep-alives and still answers.
    tokio::time::sleep_until(idle_since + Duration::from_secs(12)).await;
    idle.frame(&ClientFrame::Ping { nonce: 7 }).await;
    assert_eq!(idle.next().await, Some(ServerFrame::Pong { nonce: 7 }));
}
