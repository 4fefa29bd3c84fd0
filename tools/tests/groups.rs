//! Groups through the edge, every part a real process: 3 log-nodes, a
//! nats-server, a projector and 2 edges, clients on the SDK over QUIC. The
//! rules (admins, the last admin, the size limit, removal) are the chat
//! partition's; these tests show that clients reach them and hear them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::time::Duration;

use chorus_client::{Client, Error, Event, Message, Resume};
use chorus_schema::edge::user_for_phone;
use chorus_schema::{
    ChatId, ClientMsgId, Command, CommandBody, DeviceId, EdgeErrorCode, EventBody, EventRecord, GroupOp, Key, Origin,
    Recipient, Seq, UserId, MAX_GROUP_MEMBERS,
};
use chorus_testkit::cluster::chorus_binary;
use chorus_testkit::events::{changes, messages, refused, synced};
use chorus_testkit::stack::{Stack, StackSpec};

/// One deployment at a time: each is 7 processes on 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn stack(dir: &std::path::Path) -> Stack {
    Stack::start(StackSpec::new(dir, chorus_binary()).unthrottled()).await.expect("start the stack")
}

/// A group request, failing the test if it is not answered within 20 s.
async fn group(c: &Client, chat: ChatId, op: GroupOp) -> Result<Seq, Error> {
    tokio::time::timeout(Duration::from_secs(20), c.group(chat, op)).await.expect("a group request is answered")
}

/// The chat's events as the log holds them, in order.
async fn chat_events(stack: &Stack, chat: ChatId) -> Vec<EventRecord> {
    let records = stack.partition_records(&Key::Chat(chat)).await.unwrap();
    records.into_iter().filter(|r| r.event.body.chat() == Some(chat)).collect()
}

/// Registers `n` users straight through the log with the command an edge
/// appends at the end of registration (faster than `n` OTP round trips).
async fn register_many(stack: &Stack, n: usize) -> Vec<UserId> {
    let commands: Vec<Command> = (0..n)
        .map(|i| {
            let phone = format!("+1555{:07}", 3_000_000 + i);
            let user = user_for_phone(&phone).unwrap();
            let origin = Origin { user, device: DeviceId(1), client_msg_id: ClientMsgId(1) };
            let body = CommandBody::RegisterDevice {
                phone,
                device: DeviceId(1),
                identity_key: vec![1; 32],
                name: "bulk".into(),
                token_hash: [2; 32],
                pin_hash: None,
            };
            Command { origin, body }
        })
        .collect();
    let mut users: Vec<UserId> = commands.iter().map(|c| c.origin.user).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for c in commands {
        let log = stack.log.clone();
        tasks.spawn(async move { log.append(&c).await });
    }
    while let Some(r) = tasks.join_next().await {
        let result = r.unwrap().expect("append a registration");
        assert!(result.is_ok(), "{result:?}");
    }
    users.sort();
    users
}

fn texts(ms: &[Message]) -> Vec<String> {
    ms.iter().map(|m| String::from_utf8_lossy(&m.ciphertext).into_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admins_edit_a_removed_member_gets_exactly_what_came_before_and_the_last_admin_hands_over() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path()).await;
    let alice = stack.register(0, "+15550000101").await.unwrap();
    let bob = stack.register(1, "+15550000102").await.unwrap();
    let carol = stack.register(0, "+15550000103").await.unwrap();
    let dave = stack.register(1, "+15550000104").await.unwrap();
    let (a, a_events) = stack.connect(0, alice).await;
    let (b, mut b_events) = stack.connect(1, bob).await;
    let (c, mut c_events) = stack.connect(0, carol).await;

    let chat = a.create_group("trip", vec![bob.user, carol.user]).await.unwrap();
    assert!(!chat.is_direct());

    // A non-admin edit is refused by the partition, and changes nothing.
    let (code, message) = refused(group(&b, chat, GroupOp::Add { member: dave.user }).await);
    assert_eq!(code, EdgeErrorCode::Forbidden, "{message}");
    assert!(message.contains("admin"), "{message}");
    let (code, message) = refused(
        group(&b, chat, GroupOp::ChangeInfo { name: "mine".into(), description: String::new(), icon: None }).await,
    );
    assert_eq!(code, EdgeErrorCode::Forbidden, "{message}");
    // Removing or demoting the last admin is refused too.
    let (code, message) = refused(group(&a, chat, GroupOp::Demote { member: alice.user }).await);
    assert_eq!(code, EdgeErrorCode::BadFrame, "{message}");
    assert!(message.contains("last admin"), "{message}");
    // A chat that is not a group, and a group that does not exist.
    let (code, _) = refused(group(&a, ChatId::direct(alice.user, bob.user), GroupOp::Leave).await);
    assert_eq!(code, EdgeErrorCode::BadFrame);
    let (code, _) = refused(group(&a, ChatId::group([7; 16]), GroupOp::Leave).await);
    assert_eq!(code, EdgeErrorCode::UnknownRecipient);
    let refused_edits = chat_events(&stack, chat).await;
    assert_eq!(refused_edits.len(), 1, "only the creation is in the log: {refused_edits:?}");
    assert!(matches!(&refused_edits[0].event.body, EventBody::GroupCreated { members, .. } if members.len() == 3));

    // 1,000 messages; Carol is removed after the 500th.
    const N: usize = 1000;
    let mut removed_at = None;
    for i in 0..N {
        a.send(Recipient::Group(chat), format!("m{i}").into_bytes()).await.unwrap();
        if i == N / 2 - 1 {
            removed_at = Some(group(&a, chat, GroupOp::Remove { member: carol.user }).await.unwrap());
        }
    }
    // The removal's seq comes after the 500 messages and the creation (seq 1).
    let removed_at = removed_at.unwrap();
    assert_eq!(removed_at, Seq(N as u64 / 2 + 2));
    let everything: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    let got = messages(&mut b_events, N, Duration::from_secs(30)).await;
    assert_eq!(texts(&got), everything, "Bob gets all, in order");
    let got = messages(&mut c_events, N / 2, Duration::from_secs(30)).await;
    assert_eq!(texts(&got), everything[..N / 2], "Carol gets exactly those before her removal");
    assert!(got.iter().all(|m| m.seq < removed_at));
    // Nothing after it, live or on a fresh sync from the start.
    a.send(Recipient::Group(chat), b"barrier".to_vec()).await.unwrap();
    messages(&mut b_events, 1, Duration::from_secs(10)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, c_events.recv()).await {
        assert!(!matches!(ev, Event::Message(ref m) if m.chat == chat), "after removal: {ev:?}");
    }
    c.close();
    let (c, mut c_events) =
        Client::connect_raw(stack.client_config(&[1]), carol, Resume::default()).await.expect("log in again");
    let resynced: Vec<Message> = synced(&mut c_events).await.into_iter().filter(|m| m.chat == chat).collect();
    assert_eq!(texts(&resynced), everything[..N / 2], "a re-sync brings nothing past the removal");
    // And she can no longer send to it.
    match c.send(Recipient::Group(chat), b"still here?".to_vec()).await {
        Err(Error::Refused { code, .. }) => assert_eq!(code, EdgeErrorCode::NotMember),
        other => panic!("a removed member's send: {other:?}"),
    }

    // The last admin leaves: the oldest member (Bob) becomes admin and can add Dave.
    group(&a, chat, GroupOp::Leave).await.unwrap();
    group(&b, chat, GroupOp::Add { member: dave.user }).await.unwrap();
    let (d, mut d_events) = stack.connect(1, dave).await;
    let sent = b.send(Recipient::Group(chat), b"welcome".to_vec()).await.unwrap();
    let got = messages(&mut d_events, 1, Duration::from_secs(10)).await;
    assert_eq!((got[0].chat, got[0].seq, got[0].sender), (chat, sent.seq, bob.user));
    let kinds: Vec<_> = chat_events(&stack, chat)
        .await
        .into_iter()
        .filter(|r| !matches!(r.event.body, EventBody::MessageSent { .. }))
        .map(|r| r.event.body)
        .collect();
    assert!(
        matches!(
            kinds.as_slice(),
            [
                EventBody::GroupCreated { .. },
                EventBody::MemberRemoved { member: removed, .. },
                EventBody::MemberPromoted { member: promoted, .. },
                EventBody::MemberLeft { .. },
                EventBody::MemberAdded { member: added, .. },
            ] if *removed == carol.user && *promoted == bob.user && *added == dave.user
        ),
        "{kinds:?}"
    );
    drop((a, a_events, d));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_hear_every_roster_change_in_its_place_and_a_removed_member_hears_its_removal_last() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path()).await;
    let alice = stack.register(0, "+15550000121").await.unwrap();
    let bob = stack.register(1, "+15550000122").await.unwrap();
    let carol = stack.register(0, "+15550000123").await.unwrap();
    let (a, mut a_events) = stack.connect(0, alice).await;
    let (b, mut b_events) = stack.connect(1, bob).await;
    let (_c, mut c_events) = stack.connect(1, carol).await;

    let chat = a.create_group("band", vec![bob.user]).await.unwrap();
    let got = changes(&mut b_events, 1, Duration::from_secs(10)).await;
    let mut founders = vec![alice.user, bob.user];
    founders.sort();
    assert_eq!((got[0].chat, got[0].seq, got[0].actor), (chat, Seq(1), alice.user));
    assert_eq!(got[0].change, GroupOp::Create { name: "band".into(), members: founders });

    // Carol, online but not yet a member, hears of the group when she is added.
    let added = group(&a, chat, GroupOp::Add { member: carol.user }).await.unwrap();
    let sent = a.send(Recipient::Group(chat), b"hi all".to_vec()).await.unwrap();
    group(&a, chat, GroupOp::Promote { member: carol.user }).await.unwrap();
    let info = GroupOp::ChangeInfo { name: "the band".into(), description: "tuesdays".into(), icon: None };
    group(&a, chat, info.clone()).await.unwrap();
    group(&b, chat, GroupOp::Leave).await.unwrap();
    let removed = group(&a, chat, GroupOp::Remove { member: carol.user }).await.unwrap();
    a.send(Recipient::Group(chat), b"just me".to_vec()).await.unwrap();

    let expected = vec![
        GroupOp::Add { member: carol.user },
        GroupOp::Promote { member: carol.user },
        info.clone(),
        GroupOp::Leave,
        GroupOp::Remove { member: carol.user },
    ];
    // Alice's own requests are answered Done to her device, not echoed: she
    // hears only Bob's leaving.
    let got = changes(&mut a_events, 1, Duration::from_secs(10)).await;
    assert_eq!((got[0].actor, &got[0].change), (bob.user, &GroupOp::Leave));
    // Carol: from her addition to her removal, with the message in its place.
    let mut carol_saw = Vec::new();
    while carol_saw.len() < 6 {
        match tokio::time::timeout(Duration::from_secs(10), c_events.recv()).await.expect("Carol's items") {
            Some(Event::ChatChange(c)) => carol_saw.push((c.seq, Some(c.change), None)),
            Some(Event::Message(m)) => carol_saw.push((m.seq, None, Some(m.ciphertext))),
            Some(_) => {}
            None => panic!("Carol's client stopped"),
        }
    }
    let seqs: Vec<Seq> = carol_saw.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(seqs, (added.0..=removed.0).map(Seq).collect::<Vec<_>>(), "every item, in order, once");
    assert_eq!(carol_saw[1], (sent.seq, None, Some(b"hi all".to_vec())));
    let carol_changes: Vec<GroupOp> = carol_saw.into_iter().filter_map(|(_, c, _)| c).collect();
    assert_eq!(carol_changes, expected);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, c_events.recv()).await {
        assert!(!matches!(ev, Event::Message(_) | Event::ChatChange(_)), "after her removal: {ev:?}");
    }
    // Bob, after leaving, hears nothing more either: his own Leave is his last item.
    let got = changes(&mut b_events, 3, Duration::from_secs(10)).await;
    assert_eq!(got.iter().map(|c| c.change.clone()).collect::<Vec<_>>(), expected[..3]);
    // Carol re-syncing from the start gets the same changes, and no more.
    let (_c2, mut c2_events) =
        Client::connect_raw(stack.client_config(&[0]), carol, Resume::default()).await.expect("log in again");
    let mut resynced = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), c2_events.recv()).await.expect("a sync") {
            Some(Event::ChatChange(c)) if c.chat == chat => resynced.push(c.change),
            Some(Event::Synced { .. }) => break,
            Some(_) => {}
            None => panic!("client stopped"),
        }
    }
    assert_eq!(resynced, expected);
}

/// The delivery subjects the nats-server holds now.
fn delivery_subscriptions(stack: &Stack) -> Vec<String> {
    let nats = stack.cluster.nats.as_ref().expect("the stack's nats-server");
    let all = nats.subscriptions().expect("the nats-server's subscriptions");
    all.into_iter().filter(|s| s.starts_with("chorus.deliver.")).collect()
}

/// Waits (up to 10 s) until the delivery subscriptions are `want`.
async fn wait_subscriptions(stack: &Stack, want: &[String]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = delivery_subscriptions(stack);
        if got == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "subscriptions {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edges_take_only_the_chats_of_their_connected_users_and_a_join_while_connected() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path()).await;
    let alice = stack.register(0, "+15550000131").await.unwrap();
    let bob = stack.register(1, "+15550000132").await.unwrap();
    let carol = stack.register(1, "+15550000133").await.unwrap();
    let deliver = |chat: ChatId| format!("chorus.deliver.{chat}");
    // No one is connected: no edge takes any chat (not `chorus.deliver.>`).
    assert_eq!(delivery_subscriptions(&stack), Vec::<String>::new());

    let (a, mut a_events) = stack.connect(0, alice).await;
    let (b, mut b_events) = stack.connect(1, bob).await;
    let direct = a.send(Recipient::User(bob.user), b"hi bob".to_vec()).await.unwrap().chat;
    // Bob joined the direct chat while connected: his edge took it, and the
    // first message came.
    let got = messages(&mut b_events, 1, Duration::from_secs(10)).await;
    assert_eq!((got[0].chat, &got[0].ciphertext[..]), (direct, &b"hi bob"[..]));
    // Each edge holds it once (for its connected member).
    wait_subscriptions(&stack, &[deliver(direct), deliver(direct)]).await;

    // A group of Alice and Carol: Carol is not connected, so only Alice's edge takes it.
    let group = a.create_group("g", vec![carol.user]).await.unwrap();
    let mut want = vec![deliver(direct), deliver(direct), deliver(group)];
    want.sort();
    wait_subscriptions(&stack, &want).await;
    a.send(Recipient::Group(group), b"while carol is away".to_vec()).await.unwrap();
    // Carol logs in at edge 1: it takes the group, and her sync brings the message.
    let (c, mut c_events) =
        Client::connect_raw(stack.client_config(&[1]), carol, Resume::default()).await.expect("log in");
    let synced_msgs = synced(&mut c_events).await;
    assert_eq!(texts(&synced_msgs), ["while carol is away"]);
    want.push(deliver(group));
    want.sort();
    wait_subscriptions(&stack, &want).await;
    // Live from now on, across the edges.
    b.send(Recipient::User(alice.user), b"hi alice".to_vec()).await.unwrap();
    let got = messages(&mut a_events, 1, Duration::from_secs(10)).await;
    assert_eq!(texts(&got), ["hi alice"]);
    a.send(Recipient::Group(group), b"welcome back".to_vec()).await.unwrap();
    let got = messages(&mut c_events, 1, Duration::from_secs(10)).await;
    assert_eq!(texts(&got), ["welcome back"]);

    // Everyone leaves: every edge lets go of every chat.
    for client in [a, b, c] {
        client.close();
    }
    wait_subscriptions(&stack, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_over_the_size_limit_is_refused_and_not_created() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path()).await;
    let alice = stack.register(0, "+15550000111").await.unwrap();
    let (a, _events) = stack.connect(0, alice).await;

    // The creator plus MAX_GROUP_MEMBERS others is one too many.
    let others = register_many(&stack, MAX_GROUP_MEMBERS).await;
    let chat = ChatId::group([9; 16]);
    let op = GroupOp::Create { name: "big".into(), members: others.clone() };
    let (code, message) = refused(group(&a, chat, op).await);
    assert_eq!(code, EdgeErrorCode::BadFrame, "{message}");
    assert!(message.contains(&MAX_GROUP_MEMBERS.to_string()), "{message}");
    assert!(chat_events(&stack, chat).await.is_empty(), "nothing was created");
    match a.send(Recipient::Group(chat), b"hi".to_vec()).await {
        Err(Error::Refused { code, .. }) => assert_eq!(code, EdgeErrorCode::UnknownRecipient),
        other => panic!("a send to a group never created: {other:?}"),
    }

    // An unknown member is refused by name, and nothing is created.
    // (The stranger comes first: until the users view has folded every
    // registration above, later ones may be unknown too.)
    let mut with_stranger = vec![UserId(77)];
    with_stranger.extend_from_slice(&others[2..]);
    let op = GroupOp::Create { name: "big".into(), members: with_stranger };
    let (code, message) = refused(group(&a, chat, op).await);
    assert_eq!(code, EdgeErrorCode::UnknownRecipient, "{message}");
    assert!(message.contains(&UserId(77).to_string()), "{message}");
    assert!(chat_events(&stack, chat).await.is_empty(), "nothing was created");

    // One fewer fits (once the users view has every new user).
    let op = GroupOp::Create { name: "big".into(), members: others[1..].to_vec() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match group(&a, chat, op.clone()).await {
            Ok(_) => break,
            Err(Error::Refused { code: EdgeErrorCode::UnknownRecipient, .. })
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("creating a full group: {other:?}"),
        }
    }
    let events = chat_events(&stack, chat).await;
    assert!(
        matches!(&events[..], [r] if matches!(&r.event.body, EventBody::GroupCreated { members, .. } if members.len() == MAX_GROUP_MEMBERS))
    );
}
