//! Linked devices (issue 12), every part a real process: 3 log-nodes, a
//! nats-server, a projector and 2 edges, clients on the SDK over QUIC and
//! the `chorus client` CLI. A new device pairs with a one-time code at one
//! edge while a logged-in device links it at the other; the user partition
//! enforces the device limit; every device of every member gets every
//! message; cursors and receipts are per device; an unlinked device cannot
//! come back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::io::BufRead as _;
use std::time::Duration;

use chorus_client::{Client, Credentials, Error, Event, Message, Resume};
use chorus_partition::PartitionState;
use chorus_schema::{
    ChatId, DeviceId, DeviceNoticeKind, EdgeErrorCode, EventBody, Key, PartitionId, ReceiptKind, Recipient, Seq,
    MAX_DEVICES_PER_USER,
};
use chorus_testkit::cluster::chorus_binary;
use chorus_testkit::events::{messages, refused};
use chorus_testkit::stack::{Stack, StackSpec};
use tokio::sync::mpsc::Receiver;

/// One deployment at a time: each is 7 processes on 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a pairing code is valid in these tests.
const PAIRING_TTL_MS: u64 = 4_000;

async fn stack(dir: &std::path::Path) -> Stack {
    let mut spec = StackSpec::new(dir, chorus_binary()).unthrottled();
    spec.edge.session.pairing_code_ttl_ms = PAIRING_TTL_MS;
    Stack::start(spec).await.expect("start the stack")
}

/// A new device pairs at `new_edge`; `linker` links it with the code.
/// Returns the linker's answer and the new device's.
async fn pair(
    stack: &Stack,
    new_edge: usize,
    name: &str,
    linker: &Client,
) -> (Result<(), Error>, Result<Credentials, Error>) {
    let pairing = chorus_client::pair_request(&stack.client_config(&[new_edge]), name, vec![7; 32])
        .await
        .expect("a pairing code");
    assert!(pairing.expires_in_ms() <= PAIRING_TTL_MS && pairing.expires_in_ms() > PAIRING_TTL_MS / 2);
    let code = pairing.code().to_owned();
    let waiting = tokio::spawn(pairing.wait());
    let linked = tokio::time::timeout(Duration::from_secs(20), linker.link_device(&code)).await.expect("answered");
    let new = waiting.await.expect("the waiting task");
    (linked, new)
}

/// The user's `DeviceLinked` events in the log.
async fn links_in_log(stack: &Stack, user: chorus_schema::UserId) -> Vec<DeviceId> {
    stack
        .partition_records(&Key::User(user))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.event.body {
            EventBody::DeviceLinked { user: u, device, .. } if u == user => Some(device),
            _ => None,
        })
        .collect()
}

fn texts(ms: &[Message]) -> Vec<String> {
    ms.iter().map(|m| String::from_utf8_lossy(&m.ciphertext).into_owned()).collect()
}

/// Nothing but non-message events arrive for `quiet`.
async fn no_messages(events: &mut Receiver<Event>, quiet: Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + quiet;
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.recv()).await {
        assert!(!matches!(ev, Event::Message(_)), "{what}: {ev:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pairing_across_edges_single_use_codes_expiry_the_device_limit_and_unlinking() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path()).await;
    let alice = stack.register(0, "+15550000201").await.unwrap();
    let (a, mut a_events) = stack.connect(0, alice).await;

    // The new device waits at edge 1; the primary links it from edge 0.
    let pairing = chorus_client::pair_request(&stack.client_config(&[1]), "laptop", vec![7; 32]).await.unwrap();
    let code = pairing.code().to_owned();
    let waiting = tokio::spawn(pairing.wait());
    a.link_device(&code).await.expect("linked");
    let laptop = waiting.await.unwrap().expect("the new device's credentials");
    assert_eq!(laptop.user, alice.user);
    assert_ne!(laptop.device, alice.device);
    // It logs in like any device (at either edge), and the primary is told.
    let (l, l_events) = stack.connect(0, laptop).await;
    drop((l, l_events));
    let notice = loop {
        match tokio::time::timeout(Duration::from_secs(10), a_events.recv()).await {
            Ok(Some(Event::Device { kind, device, .. })) => break (kind, device),
            Ok(Some(_)) => {}
            other => panic!("no device notice: {other:?}"),
        }
    };
    assert_eq!(notice, (DeviceNoticeKind::Linked, laptop.device));
    let listed = a.devices().await.unwrap();
    let ids: Vec<DeviceId> = listed.iter().map(|d| d.device).collect();
    let mut want = vec![alice.device, laptop.device];
    want.sort();
    assert_eq!(ids, want);
    let entry = listed.iter().find(|d| d.device == laptop.device).unwrap();
    assert_eq!(entry.name, "laptop");
    assert!(entry.linked_at_ms > 0);

    // The code is single use: a second link with it is refused, nothing changes.
    let (code_used, message) = refused(a.link_device(&code).await);
    assert_eq!(code_used, EdgeErrorCode::BadPairingCode, "{message}");
    // A code that was never issued, and a malformed one.
    let (c, _) = refused(a.link_device(&chorus_schema::edge::pairing_code(12345)).await);
    assert_eq!(c, EdgeErrorCode::BadPairingCode);
    let (c, _) = refused(a.link_device("not a code").await);
    assert_eq!(c, EdgeErrorCode::BadPairingCode);
    // An expired code links nothing; its device hears that it expired.
    let pairing = chorus_client::pair_request(&stack.client_config(&[1]), "late", vec![7; 32]).await.unwrap();
    let late = pairing.code().to_owned();
    tokio::time::sleep(Duration::from_millis(PAIRING_TTL_MS + 500)).await;
    let (c, message) = refused(a.link_device(&late).await);
    assert_eq!(c, EdgeErrorCode::BadPairingCode, "{message}");
    let (c, message) = refused(pairing.wait().await);
    assert_eq!(c, EdgeErrorCode::BadPairingCode, "the waiting device hears its code expired: {message}");
    assert_eq!(links_in_log(&stack, alice.user).await, vec![alice.device, laptop.device]);

    // Three more companions fit (the primary and 4 in all)...
    let mut companions = vec![laptop];
    for i in 0..3 {
        let (linked, new) = pair(&stack, i % 2, &format!("companion {i}"), &a).await;
        linked.expect("linked");
        companions.push(new.expect("credentials"));
    }
    assert_eq!(a.devices().await.unwrap().len(), MAX_DEVICES_PER_USER);
    // ...a fifth is refused by the user partition, on both sides, and nothing changes.
    // (Presence comes and goes with every connection: only the rest counts.)
    let account_events = |records: Vec<chorus_schema::EventRecord>| {
        records.iter().filter(|r| !matches!(r.event.body, chorus_schema::EventBody::PresenceChanged { .. })).count()
    };
    let before = account_events(stack.partition_records(&Key::User(alice.user)).await.unwrap());
    let (linked, new) = pair(&stack, 1, "one too many", &a).await;
    let (c, message) = refused(linked);
    assert_eq!(c, EdgeErrorCode::TooManyDevices, "{message}");
    assert!(message.contains("at most 5 devices"), "{message}");
    let (c, _) = refused(new);
    assert_eq!(c, EdgeErrorCode::TooManyDevices);
    assert_eq!(
        account_events(stack.partition_records(&Key::User(alice.user)).await.unwrap()),
        before,
        "nothing was appended"
    );
    assert_eq!(a.devices().await.unwrap().len(), MAX_DEVICES_PER_USER);

    // Unlinking a companion closes its connection at once; reconnecting it
    // is refused with a clear error, and it is gone from the list.
    let gone = companions[1];
    let (g, mut g_events) = stack.connect(1, gone).await;
    a.unlink(gone.device).await.unwrap();
    let mut told = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), g_events.recv()).await {
            Ok(Some(Event::Error { code: EdgeErrorCode::Revoked, .. })) => told = true,
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => panic!("the unlinked device is still connected"),
        }
    }
    assert!(told, "the unlinked device was told why");
    drop(g);
    for edge in [0, 1] {
        let r = Client::connect_raw(stack.client_config(&[edge]), gone, Resume::default()).await.map(|_| ());
        let (c, message) = refused(r);
        assert_eq!(c, EdgeErrorCode::Unauthenticated, "{message}");
        assert!(message.contains("unlinked"), "{message}");
    }
    assert!(!a.devices().await.unwrap().iter().any(|d| d.device == gone.device));
    // Its place is free again.
    let (linked, new) = pair(&stack, 0, "replacement", &a).await;
    linked.expect("room after the unlink");
    stack.connect(1, new.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_device_of_every_member_gets_every_message_and_cursors_and_receipts_are_per_device() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path()).await;
    let alice = stack.register(0, "+15550000211").await.unwrap();
    let bob = stack.register(1, "+15550000212").await.unwrap();
    let carol = stack.register(0, "+15550000213").await.unwrap();
    let (a1, mut a1_events) = stack.connect(0, alice).await;
    let (b1, mut b1_events) = stack.connect(1, bob).await;
    let (c1, mut c1_events) = stack.connect(0, carol).await;
    // A companion each for Alice and Bob, on the other edge than their primary.
    let (linked, a2) = pair(&stack, 1, "alice laptop", &a1).await;
    linked.unwrap();
    let (linked, b2) = pair(&stack, 0, "bob laptop", &b1).await;
    linked.unwrap();
    let (a2c, mut a2_events) = stack.connect(1, a2.unwrap()).await;
    let (b2c, mut b2_events) = stack.connect(0, b2.unwrap()).await;

    // Direct: Alice's primary to Bob reaches both of Bob's devices and Alice's laptop.
    let direct = ChatId::direct(alice.user, bob.user);
    for i in 0..3 {
        a1.send(Recipient::User(bob.user), format!("d{i}").into_bytes()).await.unwrap();
    }
    let want: Vec<String> = (0..3).map(|i| format!("d{i}")).collect();
    for (who, events) in [("bob 1", &mut b1_events), ("bob 2", &mut b2_events), ("alice 2", &mut a2_events)] {
        let got = messages(events, 3, Duration::from_secs(20)).await;
        assert_eq!(texts(&got), want, "{who}");
        assert!(got.iter().all(|m| m.chat == direct && m.sender == alice.user && m.sender_device == alice.device));
    }
    // Bob's laptop answers: Alice's both devices and Bob's primary get it.
    let sent = b2c.send(Recipient::User(alice.user), b"reply".to_vec()).await.unwrap();
    for (who, events) in [("alice 1", &mut a1_events), ("alice 2", &mut a2_events), ("bob 1", &mut b1_events)] {
        let got = messages(events, 1, Duration::from_secs(20)).await;
        assert_eq!((texts(&got), got[0].seq), (vec!["reply".to_string()], sent.seq), "{who}");
    }

    // A group: every device of every member, the sender's other device too.
    let group = a1.create_group("all", vec![bob.user, carol.user]).await.unwrap();
    for i in 0..3 {
        a2c.send(Recipient::Group(group), format!("g{i}").into_bytes()).await.unwrap();
    }
    let want: Vec<String> = (0..3).map(|i| format!("g{i}")).collect();
    for (who, events) in
        [("alice 1", &mut a1_events), ("bob 1", &mut b1_events), ("bob 2", &mut b2_events), ("carol", &mut c1_events)]
    {
        let got: Vec<Message> =
            messages(events, 3, Duration::from_secs(20)).await.into_iter().filter(|m| m.chat == group).collect();
        assert_eq!(texts(&got), want, "{who}");
    }
    // The sending device gets no echo of its own messages.
    no_messages(&mut a2_events, Duration::from_millis(500), "the sender's own device").await;

    // Receipts per device: Bob's primary reads up to d1 (seq 2), his laptop
    // takes delivery of everything. The log keeps a cursor per device...
    b1.ack(direct, ReceiptKind::Read, Seq(2));
    b2c.ack(direct, ReceiptKind::Delivered, Seq(3));
    // ...and Alice's devices see the ticks of the furthest of Bob's devices:
    // delivered up to 3 (the laptop), read up to 2 (the primary).
    let mut ticks = (Seq(0), Seq(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ticks != (Seq(3), Seq(2)) {
        match tokio::time::timeout_at(deadline, a1_events.recv()).await {
            Ok(Some(Event::Receipt { chat, up_to_seq, status })) if chat == direct => match status {
                ReceiptKind::Delivered => ticks.0 = ticks.0.max(up_to_seq),
                ReceiptKind::Read => {
                    ticks.1 = ticks.1.max(up_to_seq);
                    ticks.0 = ticks.0.max(up_to_seq);
                }
            },
            Ok(Some(_)) => {}
            other => panic!("ticks {ticks:?}, then {other:?}"),
        }
    }
    // The chat partition's state, rebuilt from the log: one cursor per device.
    let mut state =
        PartitionState::new(PartitionId::for_key(&Key::Chat(direct), stack.spec.partitions), stack.spec.partitions);
    for r in stack.partition_records(&Key::Chat(direct)).await.unwrap() {
        state.fold(&r.event);
    }
    let b1_cursors = state.cursors(&direct, bob.user, bob.device).unwrap();
    assert_eq!((b1_cursors.delivered, b1_cursors.read), (Seq(2), Seq(2)));
    let b2_device = b2c.credentials().device;
    let b2_cursors = state.cursors(&direct, bob.user, b2_device).unwrap();
    assert_eq!((b2_cursors.delivered, b2_cursors.read), (Seq(3), Seq(0)));
    drop((a1, a2c, b1, c1));
}

/// Runs `chorus client` with this profile against edge `edge`.
fn cli(stack: &Stack, edge: usize, profile: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(chorus_binary());
    cmd.arg("client")
        .args(["--edge", &stack.edge_addrs()[edge]])
        .arg("--ca")
        .arg(&stack.cluster.edge_ca)
        .arg("--profile")
        .arg(profile)
        .args(args);
    cmd
}

fn run(mut cmd: std::process::Command) -> (bool, String) {
    let out = cmd.output().expect("run chorus client");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_links_lists_and_unlinks_devices() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path()).await;
    let alice = stack.register(0, "+15550000221").await.unwrap();
    let primary = dir.path().join("primary.json");
    std::fs::write(&primary, serde_json::to_vec(&serde_json::json!({ "credentials": alice })).unwrap()).unwrap();
    let laptop = dir.path().join("laptop.json");

    // The new device prints its code on its first line and waits (at edge 1).
    let mut new = cli(&stack, 1, &laptop, &["link", "--new", "--name", "cli laptop"]);
    let mut child = new.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut code = String::new();
    stdout.read_line(&mut code).unwrap();
    let code = code.trim().to_owned();
    assert_eq!(code.len(), 11, "{code:?}");
    // The logged-in device links it (at edge 0).
    let (ok, out) = run(cli(&stack, 0, &primary, &["link", &code]));
    assert!(ok && out.contains("device linked"), "{out}");
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(status.success() && rest.contains("linked as user"), "{rest}");
    // The new device's profile logs in.
    let (ok, out) = run(cli(&stack, 1, &laptop, &["login"]));
    assert!(ok, "{out}");
    let laptop_device: serde_json::Value = serde_json::from_slice(&std::fs::read(&laptop).unwrap()).unwrap();
    let laptop_device = laptop_device["credentials"]["device"].as_u64().unwrap().to_string();

    // A used code is refused by name.
    let (ok, out) = run(cli(&stack, 0, &primary, &["link", &code]));
    assert!(!ok && out.contains("BadPairingCode"), "{out}");
    // Both devices are listed, by name.
    let (ok, out) = run(cli(&stack, 0, &primary, &["devices"]));
    assert!(ok && out.contains("cli laptop") && out.contains(&laptop_device) && out.contains("(this device)"), "{out}");
    assert_eq!(out.lines().count(), 2, "{out}");
    // Unlinked, the laptop can no longer log in.
    let (ok, out) = run(cli(&stack, 0, &primary, &["unlink", &laptop_device]));
    assert!(ok && out.contains("unlinked"), "{out}");
    let (ok, out) = run(cli(&stack, 1, &laptop, &["login"]));
    assert!(!ok && out.contains("Unauthenticated"), "{out}");
    let (ok, out) = run(cli(&stack, 0, &primary, &["devices"]));
    assert!(ok && !out.contains("cli laptop"), "{out}");
}
