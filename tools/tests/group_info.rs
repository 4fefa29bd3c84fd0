//! Group info and message info through the edge, every part a real process:
//! 3 log-nodes, a nats-server, a projector and 2 edges, clients on the SDK
//! over QUIC. The answers come from the projector's views (the roster and
//! the receipt log); only members see a group's info, only a message's
//! sender its receipts; the views rebuilt from the log equal the live ones.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chorus_client::Client;
use chorus_schema::{ChatId, EdgeErrorCode, GroupOp, MessageReceipt, ReceiptKind, Recipient, Seq, UserId};
use chorus_testkit::cluster::chorus_binary;
use chorus_testkit::events::{messages, refused};
use chorus_testkit::stack::{Stack, StackSpec};

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The message info of `seq` once `done` holds for it (the projector folds
/// receipts a moment after they commit), failing the test after 20 s.
async fn message_info_when(
    c: &Client,
    chat: ChatId,
    seq: Seq,
    done: impl Fn(&[MessageReceipt]) -> bool,
) -> Vec<MessageReceipt> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let entries = c.message_info(chat, seq).await.expect("message info");
        if done(&entries) {
            return entries;
        }
        assert!(tokio::time::Instant::now() < deadline, "message info of {seq} never got there: {entries:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn entry(entries: &[MessageReceipt], user: UserId) -> MessageReceipt {
    *entries.iter().find(|e| e.user == user).unwrap_or_else(|| panic!("no entry of {user} in {entries:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_see_group_info_the_sender_sees_who_received_and_read_and_replay_equals_live() {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = Stack::start(StackSpec::new(dir.path(), chorus_binary()).unthrottled()).await.expect("stack");
    let alice = stack.register(0, "+15550000201").await.unwrap();
    let bob = stack.register(1, "+15550000202").await.unwrap();
    let carol = stack.register(0, "+15550000203").await.unwrap();
    let dave = stack.register(1, "+15550000204").await.unwrap();
    let eve = stack.register(0, "+15550000205").await.unwrap();
    let (a, _a_events) = stack.connect(0, alice).await;
    let (b, mut b_events) = stack.connect(1, bob).await;
    let (c, mut c_events) = stack.connect(0, carol).await;
    let (e, _e_events) = stack.connect(0, eve).await;

    // ---- group info ----
    let chat = a.create_group("trip", vec![bob.user, carol.user]).await.unwrap();
    let info = a.group_info(chat).await.unwrap();
    assert_eq!((info.name.as_str(), info.description.as_str(), info.last_seq), ("trip", "", Seq(1)));
    let mut founders = vec![alice.user, bob.user, carol.user];
    founders.sort();
    assert_eq!(info.members.iter().map(|(u, _)| *u).collect::<Vec<_>>(), founders);
    assert!(info.members.iter().all(|(u, m)| m.since == Seq(1) && m.admin == (*u == alice.user)), "{info:?}");

    // Edits show in every member's answer (here Bob's, through the other edge).
    let icon = chorus_schema::MediaRef { blake3: [7; 32], size: 34_567, mime: "image/jpeg".into() };
    let edit = GroupOp::ChangeInfo { name: "trip 2".into(), description: "summer".into(), icon: Some(icon.clone()) };
    a.group(chat, edit).await.unwrap();
    let promoted_at = a.group(chat, GroupOp::Promote { member: bob.user }).await.unwrap();
    let info = b.group_info(chat).await.unwrap();
    assert_eq!((info.name.as_str(), info.description.as_str(), info.last_seq), ("trip 2", "summer", promoted_at));
    assert_eq!(info.icon, Some(icon), "the picture is part of the group's info");
    let mut admins: Vec<UserId> = info.members.iter().filter(|(_, m)| m.admin).map(|(u, _)| *u).collect();
    admins.sort();
    let mut expected = vec![alice.user, bob.user];
    expected.sort();
    assert_eq!(admins, expected);

    // Not for a non-member, an unknown group or a direct chat.
    let (code, message) = refused(e.group_info(chat).await);
    assert_eq!(code, EdgeErrorCode::NotMember, "{message}");
    let (code, _) = refused(a.group_info(ChatId::group([7; 16])).await);
    assert_eq!(code, EdgeErrorCode::UnknownRecipient);
    let (code, _) = refused(a.group_info(ChatId::direct(alice.user, bob.user)).await);
    assert_eq!(code, EdgeErrorCode::BadFrame);

    // ---- message info ----
    let before = now_ms();
    let first = a.send(Recipient::Group(chat), b"first".to_vec()).await.unwrap();
    // Nobody has acknowledged it yet.
    let entries = a.message_info(chat, first.seq).await.unwrap();
    assert_eq!(entries.iter().map(|e| e.user).collect::<Vec<_>>(), {
        let mut others = vec![bob.user, carol.user];
        others.sort();
        others
    });
    assert!(entries.iter().all(|e| e.delivered_at_ms.is_none() && e.read_at_ms.is_none()), "{entries:?}");
    // Bob's device has it; Carol reads it (a read delivers too).
    assert_eq!(messages(&mut b_events, 1, Duration::from_secs(10)).await[0].seq, first.seq);
    assert_eq!(messages(&mut c_events, 1, Duration::from_secs(10)).await[0].seq, first.seq);
    b.ack(chat, ReceiptKind::Delivered, first.seq);
    c.ack(chat, ReceiptKind::Read, first.seq);
    let entries = message_info_when(&a, chat, first.seq, |es| {
        es.iter().all(|e| e.delivered_at_ms.is_some()) && es.iter().any(|e| e.read_at_ms.is_some())
    })
    .await;
    let after = now_ms();
    let (bob_has, carol_has) = (entry(&entries, bob.user), entry(&entries, carol.user));
    assert_eq!(bob_has.read_at_ms, None, "Bob only received it: {entries:?}");
    let within = |t: Option<u64>| t.is_some_and(|t| (before..=after).contains(&t));
    assert!(within(bob_has.delivered_at_ms), "{entries:?} not in {before}..={after}");
    assert!(within(carol_has.delivered_at_ms) && carol_has.read_at_ms == carol_has.delivered_at_ms, "{entries:?}");

    // A member added later is not in the info of an earlier message, but is in a later one's.
    a.group(chat, GroupOp::Add { member: dave.user }).await.unwrap();
    let (d, mut d_events) = stack.connect(1, dave).await;
    let second = a.send(Recipient::Group(chat), b"second".to_vec()).await.unwrap();
    let entries = a.message_info(chat, first.seq).await.unwrap();
    assert!(entries.iter().all(|e| e.user != dave.user), "{entries:?}");
    let entries = a.message_info(chat, second.seq).await.unwrap();
    assert!(entries.iter().any(|e| e.user == dave.user), "{entries:?}");
    // Bob's later receipt covers the second message at a later time; Carol's read of
    // the first says nothing of the second.
    messages(&mut d_events, 1, Duration::from_secs(10)).await;
    messages(&mut b_events, 1, Duration::from_secs(10)).await;
    b.ack(chat, ReceiptKind::Read, second.seq);
    d.ack(chat, ReceiptKind::Delivered, second.seq);
    let entries =
        message_info_when(&a, chat, second.seq, |es| es.iter().filter(|e| e.delivered_at_ms.is_some()).count() == 2)
            .await;
    let bob_second = entry(&entries, bob.user);
    assert!(bob_second.read_at_ms.is_some() && bob_second.delivered_at_ms >= bob_has.delivered_at_ms);
    assert_eq!(entry(&entries, carol.user).delivered_at_ms, None, "{entries:?}");
    assert!(entry(&entries, dave.user).delivered_at_ms.is_some() && entry(&entries, dave.user).read_at_ms.is_none());
    // The first message's info did not change for Bob: he had it before.
    let again = a.message_info(chat, first.seq).await.unwrap();
    assert_eq!(entry(&again, bob.user).delivered_at_ms, bob_has.delivered_at_ms);

    // Only the sender asks; a seq that is no message and a non-member are refused.
    let (code, message) = refused(b.message_info(chat, first.seq).await);
    assert_eq!(code, EdgeErrorCode::Forbidden, "{message}");
    let (code, message) = refused(a.message_info(chat, promoted_at).await);
    assert_eq!(code, EdgeErrorCode::BadFrame, "{message}");
    assert!(message.contains("no message"), "{message}");
    let (code, _) = refused(e.message_info(chat, first.seq).await);
    assert_eq!(code, EdgeErrorCode::NotMember);
    let (code, _) = refused(a.message_info(chat, Seq(1_000)).await);
    assert_eq!(code, EdgeErrorCode::BadFrame);

    // ---- the CLI: `chorus client group info` ----
    let profile = dir.path().join("alice.json");
    std::fs::write(&profile, format!("{{\"credentials\":{}}}", serde_json::to_string(&alice).unwrap())).unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(chorus_binary())
            .arg("client")
            .args(["--edge", &stack.edge_addrs()[0]])
            .arg("--ca")
            .arg(&stack.cluster.edge_ca)
            .arg("--profile")
            .arg(&profile)
            .args(["group", "info", "--chat", &chat.to_string()])
            .args(args)
            .output()
            .expect("run chorus client");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, out) = cli(&[]);
    assert!(ok && out.contains("\"trip 2\" (4 members") && out.contains("\"summer\""), "{out}");
    assert!(out.contains(&format!("{}  admin", bob.user)) && out.contains(&format!("{}  member", dave.user)), "{out}");
    let (ok, out) = cli(&["--seq", &second.seq.to_string()]);
    assert!(ok && out.contains("delivered to 2, read by 1 of 3"), "{out}");
    let (ok, out) = cli(&["--seq", &promoted_at.to_string()]);
    assert!(!ok && out.contains("no message"), "{out}");

    // ---- replay equality of the changed and the new view ----
    // Let the projector fold everything, stop it, rebuild from the log, compare.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let live = stack.projector().unwrap().config.store_dir.clone();
    stack.projector().unwrap().stop(Duration::from_secs(10));
    for view in ["roster", "receipt_log"] {
        let out = std::process::Command::new(chorus_binary())
            .args(["replay", "--node", &stack.cluster.client_addrs()[0]])
            .args(stack.cluster.operator_args())
            .args(["--view", view, "--out"])
            .arg(dir.path().join(format!("replayed-{view}")))
            .arg("--compare")
            .arg(&live)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{view}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("equal") && !stdout.contains(": 0 keys"), "{view}: {stdout}");
    }
    drop((a, b, c, d, e));
}
