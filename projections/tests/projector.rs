//! The projector against a real log-node (RocksDB, QUIC, in process), real
//! RocksDB views on disk, the local bus and a real nats-server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use chorus_bus::{Bus, Subscription};
use chorus_log_node::LogClient;
use chorus_projections::fold::chat_list;
use chorus_projections::projector::{BusConfig, Config, Error as ProjectorError, Handle, Projector};
use chorus_projections::seal::{self, ViewKey};
use chorus_projections::store::{keys as store_keys, RocksStore, Txn};
use chorus_projections::{bus_auth, compare, rebuild_from_log, rebuild_views_from_log, Comparison, View, Views};
use chorus_schema::bus::{self as on_bus, subject, Query, ReceiptStatus as Status, Ticks, ViewQuery};
use chorus_schema::{
    ChatId, CommandBody, DeviceId, EventRecord, Offset, Outcome, PartitionId, ReceiptKind, Seq, UserId,
};
use support::log::{must_append, must_start, node_config, read_all, Device};
use support::nats::NatsServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(20);

fn projector_config(node: &chorus_log_node::Config, store: &Path, bus: BusConfig) -> Config {
    Config {
        log_nodes: vec![node.client_addr.clone()],
        log_tls: support::log::identity(node, chorus_log_node::network::tls::Role::Projector),
        store_dir: store.to_path_buf(),
        batch_records_max: 16,
        reconnect_backoff_min_ms: 20,
        reconnect_backoff_max_ms: 500,
        bus,
        view_key: view_key().0.clone(),
        ..Config::default()
    }
}

/// The view key of every projector of this test process (and of the test's
/// own queries, which it seals like an edge).
fn view_key() -> &'static (std::path::PathBuf, ViewKey) {
    static KEY: std::sync::OnceLock<(std::path::PathBuf, ViewKey)> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("chorus-projector-test-{}.view.key", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let key = ViewKey::create(&path).expect("view key");
        (path, key)
    })
}

struct Running {
    handle: Handle,
    stop: oneshot::Sender<()>,
    task: JoinHandle<chorus_projections::projector::Result<()>>,
}

impl Running {
    async fn must_stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task).await.expect("projector stops").unwrap().expect("projector ran fine");
    }
}

async fn must_run(config: Config, bus: Option<Bus>) -> Running {
    let projector = Projector::open(config, bus).await.expect("open projector");
    let handle = projector.handle();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(projector.run(async move {
        let _ = stopped.await;
    }));
    Running { handle, stop, task }
}

/// Waits until the projector has folded everything committed so far.
async fn must_catch_up(handle: &Handle, client: &LogClient) -> Vec<chorus_schema::Offset> {
    let (_, ends) = read_all(client).await;
    let target = ends.clone();
    assert!(
        handle.wait_until(WAIT, |next| next == target.as_slice()).await,
        "projector at {:?}, log ends at {ends:?}",
        handle.next_offsets()
    );
    ends
}

/// A view query as an edge makes it: sealed, and the reply's tag checked.
async fn query_raw(bus: &Bus, subject: &str, query: &[u8]) -> Vec<u8> {
    let request = seal::seal_request(query);
    let reply = bus.request(subject, Bytes::from(request.clone()), Duration::from_secs(5)).await.expect("view reply");
    view_key().1.open_reply(subject, &request, &reply).expect("a reply sealed with the view key").to_vec()
}

async fn must_query<Q: Query>(bus: &Bus, q: Q) -> Q::Answer {
    let q: ViewQuery = q.into();
    let reply = query_raw(bus, q.subject(), &q.encode()).await;
    let answer = on_bus::decode_reply(&reply).expect("reply decodes");
    let answer = answer.unwrap_or_else(|e| panic!("view error on {}: {e}", q.subject()));
    Q::answer(answer).expect("an answer of the query's kind")
}

/// A payload published by the projector.
trait Published: Sized {
    fn decode(payload: &Bytes) -> chorus_schema::Result<Self>;
}

impl Published for on_bus::Delivery {
    fn decode(payload: &Bytes) -> chorus_schema::Result<Self> {
        on_bus::Delivery::decode(payload)
    }
}

impl Published for on_bus::ReceiptUpdate {
    fn decode(payload: &Bytes) -> chorus_schema::Result<Self> {
        on_bus::ReceiptUpdate::decode(payload)
    }
}

impl Published for on_bus::AccountUpdate {
    fn decode(payload: &Bytes) -> chorus_schema::Result<Self> {
        on_bus::AccountUpdate::decode(payload)
    }
}

impl Published for on_bus::ChatJoined {
    fn decode(payload: &Bytes) -> chorus_schema::Result<Self> {
        on_bus::ChatJoined::decode(payload)
    }
}

async fn chat_list_of(bus: &Bus, user: u64) -> BTreeMap<ChatId, chat_list::ChatListEntry> {
    let q = on_bus::ChatListRequest { user: UserId(user), after: None, limit: 0 };
    let page: on_bus::ChatListPage = must_query(bus, q).await;
    assert!(!page.more);
    page.entries.into_iter().map(|i| (i.chat, i.entry)).collect()
}

fn chat_seq(outcome: Outcome) -> (ChatId, Seq) {
    match outcome {
        Outcome::Chat { chat, seq } => (chat, seq),
        other => panic!("not a chat outcome: {other:?}"),
    }
}

/// Receives `n` messages, then checks that nothing else arrives for a while.
async fn must_receive_exactly<T: Published>(sub: &mut Subscription, n: usize) -> Vec<T> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} messages", out.len()));
        out.push(T::decode(&m.expect("bus open").payload).expect("payload decodes"));
    }
    if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
        panic!("unexpected extra message on {}", m.subject);
    }
    out
}

/// Direct and group sends and acks, a user's devices and sessions → every
/// delivery once, in per-chat seq order, with the record; receipt changes;
/// and every view query (chat list, cursors, receipt status, session, user,
/// inbox), malformed ones included.
async fn deliveries_and_views(bus: Bus, bus_config: BusConfig) {
    let node_dir = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let node_cfg = node_config(node_dir.path(), 4);
    let (node, client) = must_start(&node_cfg).await;
    let mut deliveries = bus.subscribe("chorus.deliver.>").await.unwrap();
    let mut receipts = bus.subscribe("chorus.receipt.>").await.unwrap();
    let mut accounts = bus.subscribe("chorus.account.>").await.unwrap();
    let mut joins = bus.subscribe("chorus.joined.>").await.unwrap();
    let local = matches!(bus_config, BusConfig::Local).then(|| bus.clone());
    let running = must_run(projector_config(&node_cfg, store_dir.path(), bus_config), local).await;

    let (mut a, mut b, mut c) = (Device::new(1, 1), Device::new(2, 1), Device::new(3, 1));
    let group = ChatId::group([5; 16]);
    let mut last: BTreeMap<ChatId, Seq> = BTreeMap::new();
    let mut record = |o: Outcome| {
        let (chat, seq) = chat_seq(o);
        assert!(last.insert(chat, seq).is_none_or(|prev| prev < seq));
        chat
    };
    let direct = record(must_append(&client, &a.send_direct(2, "one")).await);
    record(must_append(&client, &a.send_direct(2, "two")).await);
    record(must_append(&client, &b.send_direct(1, "three")).await);
    record(must_append(&client, &a.send_direct(2, "four")).await);
    record(must_append(&client, &a.create_group(group, &[1, 2, 3])).await);
    record(must_append(&client, &a.send_group(group, "g1")).await);
    record(must_append(&client, &b.send_group(group, "g2")).await);
    record(must_append(&client, &c.send_group(group, "g3")).await);
    // 2 reads the direct chat up to 2 (both of 1's first messages), and got the group up to 4.
    must_append(&client, &b.ack(direct, ReceiptKind::Read, 2)).await;
    must_append(&client, &b.ack(group, ReceiptKind::Delivered, 4)).await;
    // 1 registers three devices; device 2's session is revoked, device 3
    // is unlinked (which ends its session).
    for cmd in [
        a.register_device(1, [0x44; 32]),
        a.register_device(2, [0x22; 32]),
        a.register_device(3, [0x33; 32]),
        a.revoke_session(2),
        a.unlink(3),
    ] {
        must_append(&client, &cmd).await;
    }
    must_catch_up(&running.handle, &client).await;
    assert_eq!(last, BTreeMap::from([(direct, Seq(4)), (group, Seq(4))]));

    // Account updates of user 1's devices, in log order: the edges close
    // revoked and unlinked devices with them.
    let got: Vec<on_bus::AccountUpdate> = must_receive_exactly(&mut accounts, 5).await;
    let changes: Vec<(u32, chorus_schema::DeviceNoticeKind)> = got.iter().map(|u| (u.device.0, u.change)).collect();
    use chorus_schema::DeviceNoticeKind::{Linked, LoggedOut, Unlinked};
    assert_eq!(changes, vec![(1, Linked), (2, Linked), (3, Linked), (2, LoggedOut), (3, Unlinked)]);
    assert!(got.iter().all(|u| u.user == UserId(1) && u.at_ms > 0));

    // Each member hears once that they joined: both users of the direct chat
    // as it opened (seq 0), the group's three founders at its creation.
    let got: Vec<on_bus::ChatJoined> = must_receive_exactly(&mut joins, 5).await;
    let mut got: Vec<(ChatId, u64, u64)> = got.iter().map(|j| (j.chat, j.user.0, j.seq.0)).collect();
    got.sort();
    let mut want = vec![(direct, 1, 0), (direct, 2, 0), (group, 1, 1), (group, 2, 1), (group, 3, 1)];
    want.sort();
    assert_eq!(got, want);

    // Every timeline item once, in seq order per chat, with its record.
    let got: Vec<on_bus::Delivery> = must_receive_exactly(&mut deliveries, 8).await;
    let mut by_chat: BTreeMap<ChatId, Vec<&on_bus::Delivery>> = BTreeMap::new();
    // Where each item's record is in the log: (chat, seq) -> (partition, offset).
    let mut located: BTreeMap<(ChatId, Seq), (PartitionId, u64)> = BTreeMap::new();
    for d in &got {
        by_chat.entry(d.chat).or_default().push(d);
        let r = EventRecord::decode(&d.record).expect("the record decodes");
        located.insert((d.chat, d.seq), (r.partition, r.offset.0));
        assert_eq!((r.event.body.chat(), r.event.body.seq()), (Some(d.chat), Some(d.seq)));
        // Every member, the sender included (their other devices).
        let expected: Vec<UserId> =
            if d.chat == direct { vec![UserId(1), UserId(2)] } else { vec![UserId(1), UserId(2), UserId(3)] };
        assert_eq!(d.recipients, expected, "recipients of {} {}", d.chat, d.seq);
    }
    for (chat, ds) in &by_chat {
        let seqs: Vec<u64> = ds.iter().map(|d| d.seq.0).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4], "chat {chat}");
    }
    // 2 read 1's messages 1 and 2 in the direct chat: one Read tick for sender 1.
    let ticks: Vec<on_bus::ReceiptUpdate> = must_receive_exactly(&mut receipts, 1).await;
    assert_eq!(
        ticks,
        vec![on_bus::ReceiptUpdate { chat: direct, sender: UserId(1), up_to_seq: Seq(2), status: Status::Read }]
    );

    // Views over the bus.
    let list2 = chat_list_of(&bus, 2).await;
    assert_eq!(list2.keys().copied().collect::<Vec<_>>().len(), 2);
    let (d2, g2) = (list2[&direct], list2[&group]);
    assert_eq!((d2.last_seq, d2.unread, d2.unread_after), (Seq(4), 1, Seq(2)), "one unread: 1's message 4");
    assert_eq!((g2.last_seq, g2.unread), (Seq(4), 2), "g1 and g3 are from others");
    let list1 = chat_list_of(&bus, 1).await;
    assert_eq!((list1[&direct].unread, list1[&group].unread), (1, 2));
    assert!(chat_list_of(&bus, 99).await.is_empty());

    let q = on_bus::CursorsRequest { user: UserId(2), device: DeviceId(1), after: None, limit: 10 };
    let page: on_bus::CursorsPage = must_query(&bus, q).await;
    let cursors: BTreeMap<ChatId, on_bus::ChatCursors> = page.entries.into_iter().map(|c| (c.chat, c)).collect();
    assert_eq!(
        cursors[&direct],
        on_bus::ChatCursors { chat: direct, last_seq: Seq(4), delivered: Seq(2), read: Seq(2) }
    );
    assert_eq!(cursors[&group], on_bus::ChatCursors { chat: group, last_seq: Seq(4), delivered: Seq(4), read: Seq(0) });
    // Paging: one at a time.
    let first_chat = *cursors.keys().next().unwrap();
    let q = on_bus::CursorsRequest { user: UserId(2), device: DeviceId(1), after: None, limit: 1 };
    let page: on_bus::CursorsPage = must_query(&bus, q).await;
    assert_eq!((page.entries.len(), page.more, page.entries[0].chat), (1, true, first_chat));
    let q = on_bus::CursorsRequest { after: Some(first_chat), ..q };
    let page: on_bus::CursorsPage = must_query(&bus, q).await;
    assert_eq!((page.entries.len(), page.more), (1, false));

    let q = on_bus::ReceiptStatusRequest { chat: direct, sender: UserId(1) };
    let t: Ticks = must_query(&bus, q).await;
    assert_eq!(t, Ticks { delivered: Seq(2), read: Seq(2) });
    assert_eq!((t.status(Seq(2)), t.status(Seq(4))), (Status::Read, Status::Sent));
    // 3 has not acked the group: 1's g1 is not delivered to all.
    let q = on_bus::ReceiptStatusRequest { chat: group, sender: UserId(1) };
    let t: Ticks = must_query(&bus, q).await;
    assert_eq!(t, Ticks::default());

    // The directory: users, devices and live sessions.
    let user = |u| on_bus::UserRequest { user: UserId(u) };
    let info: on_bus::UserInfo = must_query(&bus, user(1)).await;
    assert_eq!(info, on_bus::UserInfo { registered: true, devices: vec![DeviceId(1), DeviceId(2)] });
    let info: on_bus::UserInfo = must_query(&bus, user(2)).await;
    assert_eq!(info, on_bus::UserInfo { registered: false, devices: vec![] });
    for (device, token_hash) in [(1, Some([0x44; 32])), (2, None), (3, None), (4, None)] {
        let q = on_bus::SessionRequest { user: UserId(1), device: DeviceId(device) };
        let s: on_bus::SessionInfo = must_query(&bus, q).await;
        assert_eq!(s.token_hash, token_hash, "session of device {device}");
    }

    // Inboxes: every item each user receives (their own included), at the
    // offsets of the delivered records, paged.
    for (user, chat) in [(1, direct), (2, direct), (1, group), (3, group)] {
        let q = on_bus::InboxRequest { user: UserId(user), chat, after: Seq(0), limit: 0 };
        let page: on_bus::InboxPage = must_query(&bus, q).await;
        let expected: Vec<on_bus::InboxItem> =
            (1..=4).map(|s| on_bus::InboxItem { seq: Seq(s), offset: Offset(located[&(chat, Seq(s))].1) }).collect();
        assert_eq!(page.entries, expected, "inbox of {user} in {chat}");
        assert_eq!(page.partition, located[&(chat, Seq(1))].0);
        assert!(!page.more);
    }
    let q = on_bus::InboxRequest { user: UserId(2), chat: group, after: Seq(1), limit: 2 };
    let page: on_bus::InboxPage = must_query(&bus, q).await;
    assert_eq!((page.entries.iter().map(|i| i.seq.0).collect::<Vec<_>>(), page.more), (vec![2, 3], true));
    let q = on_bus::InboxRequest { after: Seq(3), ..q };
    let page: on_bus::InboxPage = must_query(&bus, q).await;
    assert_eq!((page.entries.iter().map(|i| i.seq.0).collect::<Vec<_>>(), page.more), (vec![4], false));
    // Not a member: nothing.
    let q = on_bus::InboxRequest { user: UserId(3), chat: direct, after: Seq(0), limit: 0 };
    let page: on_bus::InboxPage = must_query(&bus, q).await;
    assert!(page.entries.is_empty() && !page.more);

    // A malformed request gets an error reply, and the projector keeps serving.
    for subject in [subject::VIEW_CHAT_LIST, subject::VIEW_SESSION, subject::VIEW_USER, subject::VIEW_INBOX] {
        let reply = query_raw(&bus, subject, b"\xff\xff").await;
        let r = on_bus::decode_reply(&reply).unwrap();
        assert_eq!(r.unwrap_err().code, on_bus::ViewErrorCode::BadRequest, "{subject}");
    }
    assert_eq!(chat_list_of(&bus, 2).await.len(), 2);
    let info: on_bus::UserInfo = must_query(&bus, user(1)).await;
    assert!(info.registered);

    let stats = running.handle.stats();
    assert_eq!(stats.published, 9 + 5 + 5, "deliveries and ticks, account updates, joins: {stats:?}");
    assert_eq!(stats.view_bad_requests, 4, "{stats:?}");
    running.must_stop().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_and_views_on_the_local_bus() {
    deliveries_and_views(Bus::local(), BusConfig::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_and_views_on_nats() {
    // A secured server: TLS, one NKey per process, permissions per role.
    // This test's own connection is an edge's.
    let dir = tempfile::tempdir().unwrap();
    let creds = bus_auth::provision(dir.path(), &["p".to_owned()], &["test".to_owned()], &dir.path().join("nats.conf"))
        .unwrap();
    let nats = NatsServer::start_with_config(&creds.conf).expect("a nats-server");
    let edge = chorus_bus::NatsAuth {
        ca: creds.ca.clone(),
        nkey_seed: bus_auth::seed_path(dir.path(), bus_auth::BusRole::Edge, "test"),
    };
    let bus = Bus::connect_nats_with(&nats.url(), &edge).await.unwrap();
    deliveries_and_views(bus, creds.bus(&nats.url(), bus_auth::BusRole::Projector, "p")).await;
}

/// A subscriber that starts late misses deliveries; the views do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_subscriber_misses_messages_but_the_views_have_everything() {
    let node_dir = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let node_cfg = node_config(node_dir.path(), 2);
    let (node, client) = must_start(&node_cfg).await;
    let bus = Bus::local();
    let running = must_run(projector_config(&node_cfg, store_dir.path(), BusConfig::Local), Some(bus.clone())).await;
    let (mut a, mut b) = (Device::new(1, 1), Device::new(2, 7));
    let (chat, _) = chat_seq(must_append(&client, &a.send_direct(2, "missed")).await);
    must_append(&client, &a.send_direct(2, "missed too")).await;
    must_catch_up(&running.handle, &client).await;

    let mut late = bus.subscribe("chorus.deliver.>").await.unwrap();
    must_append(&client, &a.send_direct(2, "seen")).await;
    must_append(&client, &b.ack(chat, ReceiptKind::Delivered, 3)).await;
    must_catch_up(&running.handle, &client).await;
    let got: Vec<on_bus::Delivery> = must_receive_exactly(&mut late, 1).await;
    assert_eq!(got[0].seq, Seq(3), "only what was published after subscribing");

    let list = chat_list_of(&bus, 2).await;
    assert_eq!((list[&chat].last_seq, list[&chat].unread), (Seq(3), 3));
    let q = on_bus::CursorsRequest { user: UserId(2), device: DeviceId(7), after: None, limit: 0 };
    let page: on_bus::CursorsPage = must_query(&bus, q).await;
    assert_eq!(page.entries, vec![on_bus::ChatCursors { chat, last_seq: Seq(3), delivered: Seq(3), read: Seq(0) }]);
    running.must_stop().await;
    node.shutdown().await;
}

/// The log node restarts under the projector: its tails break, it reconnects
/// with backoff and resumes from its cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_reconnects_when_the_log_node_restarts() {
    let node_dir = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let node_cfg = node_config(node_dir.path(), 2);
    let (node, client) = must_start(&node_cfg).await;
    let bus = Bus::local();
    let running = must_run(projector_config(&node_cfg, store_dir.path(), BusConfig::Local), Some(bus.clone())).await;
    let mut a = Device::new(1, 1);
    let (chat, _) = chat_seq(must_append(&client, &a.send_direct(2, "before")).await);
    must_catch_up(&running.handle, &client).await;

    node.shutdown().await;
    drop(client);
    let (node, client) = must_start(&node_cfg).await;
    for i in 0..5 {
        must_append(&client, &a.send_direct(2, &format!("after {i}"))).await;
    }
    must_catch_up(&running.handle, &client).await;
    assert!(running.handle.stats().reconnects >= 1, "{:?}", running.handle.stats());
    let list = chat_list_of(&bus, 2).await;
    assert_eq!((list[&chat].last_seq, list[&chat].unread), (Seq(6), 6));
    running.must_stop().await;
    node.shutdown().await;
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The projector dies mid-stream (its runtime dropped, no shutdown), more is
/// appended, it restarts on the same store: the views equal a rebuild from
/// the log in a fresh directory, entry for entry, so nothing was folded twice.
#[test]
fn crash_and_resume_equals_rebuild_from_log() {
    let main = runtime();
    let node_dir = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let node_cfg = node_config(node_dir.path(), 4);
    let (node, client) = main.block_on(must_start(&node_cfg));
    let config = Config { batch_records_max: 4, ..projector_config(&node_cfg, store_dir.path(), BusConfig::Local) };

    // Senders 1..=4 each write to 5 in parallel: 4 direct chats, spread over partitions.
    let append_round = |round: u64, n: u64| {
        let client = client.clone();
        async move {
            let mut tasks = Vec::new();
            for user in 1..=4u64 {
                let client = client.clone();
                tasks.push(tokio::spawn(async move {
                    let mut d = Device::new(user, 1);
                    // Fresh ids per round (the dedup table would swallow repeats).
                    for _ in 0..round * 1000 {
                        d.command(chorus_schema::CommandBody::SetPresence { online: true, connection: 1 });
                    }
                    for i in 0..n {
                        must_append(&client, &d.send_direct(5, &format!("r{round} m{i}"))).await;
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
    };

    // Run 1: crash while appends are still flowing.
    let crashed = runtime();
    let bus = Bus::local();
    let running = crashed.block_on(must_run(config.clone(), Some(bus.clone())));
    let appending = main.spawn(append_round(1, 60));
    crashed.block_on(async {
        let handle = running.handle.clone();
        assert!(handle.wait_until(WAIT, |next| next.iter().map(|o| o.0).sum::<u64>() >= 40).await, "some progress");
    });
    let at_crash = running.handle.next_offsets();
    drop(crashed); // No shutdown: tasks are dropped wherever they are.
    main.block_on(appending).unwrap();
    let (_, ends) = main.block_on(read_all(&client));
    assert!(
        at_crash.iter().map(|o| o.0).sum::<u64>() < ends.iter().map(|o| o.0).sum::<u64>(),
        "crashed mid-stream: {at_crash:?} of {ends:?}"
    );

    // More while it is down, then restart on the same directory.
    main.block_on(append_round(2, 10));
    let resumed = runtime();
    let running = resumed.block_on(must_run(config.clone(), Some(bus.clone())));
    assert!(
        running.handle.next_offsets().iter().map(|o| o.0).sum::<u64>() >= at_crash.iter().map(|o| o.0).sum::<u64>()
    );
    main.block_on(append_round(3, 5));
    let (_, ends) = main.block_on(read_all(&client));
    resumed.block_on(async {
        assert!(
            running.handle.wait_until(WAIT, |next| next == ends.as_slice()).await,
            "{:?} vs {ends:?}",
            running.handle.next_offsets()
        );
        running.must_stop().await;
    });
    drop(resumed);

    let live = RocksStore::open(store_dir.path()).unwrap();
    // Unread counts are not idempotent: exact counts mean nothing was folded twice.
    let txn = live.read();
    let list = chat_list::list(&txn, UserId(5), 100).unwrap();
    assert_eq!(list.len(), 4);
    for (_, e) in &list {
        assert_eq!((e.unread, e.last_seq), (75, Seq(75)), "{e:?}");
    }
    drop(txn);

    let fresh = tempfile::tempdir().unwrap();
    let stats = main.block_on(rebuild_from_log(&client, fresh.path())).unwrap();
    assert_eq!(stats.next_offsets, ends);
    assert_eq!(stats.records, ends.iter().map(|o| o.0).sum::<u64>());
    let rebuilt = RocksStore::open(fresh.path()).unwrap();
    let (l, r) = (live.entries().unwrap(), rebuilt.entries().unwrap());
    assert_eq!(l.len(), r.len());
    assert!(l == r, "live views differ from the rebuild");
    drop(rebuilt);
    // Rebuilding into a store that has views is refused.
    assert!(matches!(
        main.block_on(rebuild_from_log(&client, fresh.path())),
        Err(chorus_projections::projector::Error::NotEmpty { .. })
    ));
    main.block_on(node.shutdown());
}

/// A projector runs live; then each view alone, and every view, is rebuilt
/// from the log into a fresh store and compared with the live store, key by
/// key over that view's key families (the live store opened read-only beside
/// the running projector). A store at other offsets is not comparable, a
/// changed key is found, and a projector refuses a store of one view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_each_view_equals_the_live_view() {
    let node_dir = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let node_cfg = node_config(node_dir.path(), 4);
    let (node, client) = must_start(&node_cfg).await;
    let bus = Bus::local();
    let config = projector_config(&node_cfg, store_dir.path(), BusConfig::Local);
    let running = must_run(config.clone(), Some(bus.clone())).await;

    // Something in every view: chats, a group with joins and departures,
    // receipts, users with devices and sessions.
    let (mut a, mut b, mut c, mut d) = (Device::new(1, 1), Device::new(2, 1), Device::new(3, 2), Device::new(4, 1));
    let group = ChatId::group([8; 16]);
    let (direct, _) = chat_seq(must_append(&client, &a.send_direct(2, "hi")).await);
    must_append(&client, &b.send_direct(1, "hello")).await;
    must_append(&client, &c.send_direct(1, "yo")).await;
    must_append(&client, &a.create_group(group, &[1, 2, 3])).await;
    must_append(&client, &b.send_group(group, "g")).await;
    must_append(&client, &a.command(CommandBody::AddMember { chat: group, member: UserId(4) })).await;
    must_append(&client, &a.command(CommandBody::RemoveMember { chat: group, member: UserId(2) })).await;
    must_append(&client, &d.send_group(group, "new here")).await;
    must_append(&client, &c.command(CommandBody::LeaveGroup { chat: group })).await;
    must_append(&client, &b.ack(direct, ReceiptKind::Read, 2)).await;
    must_append(&client, &d.ack(group, ReceiptKind::Delivered, 5)).await;
    for (dev, user) in [(&mut a, 1u8), (&mut b, 2)] {
        for cmd in [dev.register_device(1, [user; 32]), dev.register_device(2, [0; 32]), dev.unlink(2)] {
            must_append(&client, &cmd).await;
        }
    }
    // Presence, privacy settings and blocks, contacts (issue 12).
    let privacy = CommandBody::SetPrivacy {
        last_seen: chorus_schema::Visibility::Contacts,
        profile_photo: chorus_schema::Visibility::Everyone,
        about: chorus_schema::Visibility::Nobody,
        read_receipts: true,
    };
    for body in [
        CommandBody::SetPresence { online: true, connection: 3 },
        CommandBody::UpdateContacts { contacts: vec![UserId(2), UserId(3)] },
        privacy,
        CommandBody::Block { target: UserId(3) },
        CommandBody::SetPresence { online: false, connection: 3 },
    ] {
        must_append(&client, &a.command(body)).await;
    }
    // The social views: contacts, a profile, a block, a status and its viewer,
    // a phone the contact index can hash.
    let mut e = Device::new(5, 1);
    let register = e.command(CommandBody::RegisterDevice {
        phone: "+15550001234".into(),
        device: DeviceId(1),
        identity_key: vec![1; 32],
        name: "d".into(),
        token_hash: [5; 32],
        pin_hash: None,
    });
    must_append(&client, &register).await;
    must_append(&client, &a.command(CommandBody::UpdateContacts { contacts: vec![UserId(2), UserId(3), UserId(5)] }))
        .await;
    must_append(&client, &a.command(CommandBody::UpdateProfile { name: "A".into(), about: "x".into(), avatar: None }))
        .await;
    must_append(&client, &a.command(CommandBody::Block { target: UserId(4) })).await;
    let post = CommandBody::PostStatus {
        status_id: 1,
        ciphertext: b"s".to_vec(),
        media: None,
        acl: vec![],
        audience: chorus_schema::StatusAudience::Contacts,
        ttl_ms: 0,
    };
    must_append(&client, &a.command(post)).await;
    must_append(&client, &b.command(CommandBody::ViewStatus { author: UserId(1), status_id: 1 })).await;
    // ---- push and reports (issue 14) ----
    must_append(&client, &a.command(CommandBody::SetPushToken { token: "tok-a".into(), platform: "fcm".into() })).await;
    let report = CommandBody::FileReport {
        reported: UserId(1),
        chat: None,
        reason: "spam".into(),
        messages: vec![chorus_schema::push::ReportedMessage {
            seq: chorus_schema::Seq(1),
            sender: UserId(1),
            at_ms: 1,
            text: b"spam".to_vec(),
        }],
    };
    must_append(&client, &b.command(report)).await;
    // Media (issue 14): an upload and an avatar referencing it.
    must_append(&client, &a.command(CommandBody::RecordMedia { blake3: [6; 32], size: 9 })).await;
    let avatar = Some(chorus_schema::MediaRef { blake3: [6; 32], size: 9, mime: "image/jpeg".into() });
    must_append(&client, &a.command(CommandBody::UpdateProfile { name: "A".into(), about: "y".into(), avatar })).await;
    let ends = must_catch_up(&running.handle, &client).await;
    let contact_key = ViewKey::load(&config.view_key).unwrap().contact_key();

    let live = RocksStore::open_read_only(store_dir.path()).expect("open the live store read-only");
    let live_entries = live.entries().unwrap();
    let mut selections: Vec<Views> = View::ALL.into_iter().map(Views::one).collect();
    selections.push(Views::all());
    for views in selections {
        let fresh = tempfile::tempdir().unwrap();
        let stats = chorus_projections::rebuild_views_with_contact_key(&client, fresh.path(), views, contact_key)
            .await
            .unwrap();
        assert_eq!(stats.next_offsets, ends, "{views}");
        let rebuilt = RocksStore::open(fresh.path()).unwrap();
        let Comparison::Equal { keys } = compare(&live, &rebuilt, views).unwrap() else {
            panic!("{views}: {:?}", compare(&live, &rebuilt, views))
        };
        // Exactly the views' keys and the cursors (and the mark of a partial store).
        let expected: Vec<(Vec<u8>, Vec<u8>)> =
            live_entries.iter().filter(|(k, _)| views.owns(k) || k[0] == store_keys::APPLIED).cloned().collect();
        let mut got = rebuilt.entries().unwrap();
        let marks: Vec<(Vec<u8>, Vec<u8>)> = got.extract_if(.., |(k, _)| *k == store_keys::partial()).collect();
        assert_eq!(marks.len(), usize::from(!views.is_all()), "{views}: the mark of a partial store");
        assert_eq!(keys as usize, expected.iter().filter(|(k, _)| views.owns(k)).count());
        assert!(keys > 0, "{views}: the workload reaches every view");
        assert!(got == expected, "{views}: rebuilt entries differ from the live ones");
        drop(rebuilt);
        if !views.is_all() {
            let refused =
                Projector::open(Config { store_dir: fresh.path().to_path_buf(), ..config.clone() }, Some(bus.clone()))
                    .await;
            assert!(matches!(refused, Err(ProjectorError::PartialStore { .. })), "{views}: {refused:?}");
        }
    }
    drop(live);

    // The projector stops; one more message: a rebuild is now ahead of the live store.
    running.must_stop().await;
    must_append(&client, &a.send_direct(2, "later")).await;
    let live = RocksStore::open_read_only(store_dir.path()).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    rebuild_views_from_log(&client, fresh.path(), Views::one(View::Inbox)).await.unwrap();
    let rebuilt = RocksStore::open(fresh.path()).unwrap();
    assert!(matches!(compare(&live, &rebuilt, Views::one(View::Inbox)).unwrap(), Comparison::NotComparable { .. }));
    drop(rebuilt);

    // A rebuild at the live offsets with one changed value: found, with its key.
    let at_live = tempfile::tempdir().unwrap();
    let rebuilt = RocksStore::open(at_live.path()).unwrap();
    let mut txn = rebuilt.begin();
    for (k, v) in &live_entries {
        txn.put(k, v);
    }
    let (key, value) = live_entries.iter().find(|(k, _)| View::ChatList.owns(k)).unwrap().clone();
    let mut changed = value.clone();
    changed[0] ^= 1;
    txn.put(&key, &changed);
    txn.commit().unwrap();
    assert_eq!(
        compare(&live, &rebuilt, Views::one(View::Roster)).unwrap(),
        compare(&live, &live, Views::one(View::Roster)).unwrap()
    );
    let Comparison::Differs(diff) = compare(&live, &rebuilt, Views::all()).unwrap() else { panic!("not found") };
    assert_eq!(
        (diff.view, &diff.key, diff.live.as_ref(), diff.rebuilt.as_ref()),
        (View::ChatList, &key, Some(&value), Some(&changed))
    );
    node.shutdown().await;
}
