//! Presence and typing through the edges, every part a real process: 3
//! log-nodes, a nats-server, a projector and 2 edges, clients on the SDK over
//! QUIC. Presence transitions are the user partition's events; who sees them
//! is the projector's privacy rule, cached per watcher by the edges; typing
//! goes edge to edge over the bus and never reaches the log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::time::{Duration, Instant};

use chorus_client::{Credentials, Event};
use chorus_schema::edge::TYPING_EXPIRY_MS;
use chorus_schema::{
    ClientMsgId, Command, CommandBody, DeviceId, EdgeErrorCode, EventBody, Key, Origin, Recipient, UserId, Visibility,
};
use chorus_testkit::cluster::chorus_binary;
use chorus_testkit::events::messages;
use chorus_testkit::stack::{Stack, StackSpec};
use tokio::sync::mpsc::Receiver;

/// One deployment at a time: each is 7 processes on 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn stack(dir: &std::path::Path) -> Stack {
    Stack::start(StackSpec::new(dir, chorus_binary()).unthrottled()).await.expect("start the stack")
}

/// The next event `pick` accepts, skipping others.
///
/// # Panics
/// If none comes within `timeout` (naming `what`).
async fn next<T>(events: &mut Receiver<Event>, what: &str, timeout: Duration, pick: impl Fn(&Event) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(ev)) => {
                if let Some(t) = pick(&ev) {
                    return t;
                }
            }
            Ok(None) => panic!("client stopped waiting for {what}"),
            Err(_) => panic!("no {what} within {timeout:?}"),
        }
    }
}

/// Fails if an event `bad` accepts arrives within `wait`.
async fn none(events: &mut Receiver<Event>, what: &str, wait: Duration, bad: impl Fn(&Event) -> bool) {
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.recv()).await {
        assert!(!bad(&ev), "{what}: {ev:?}");
    }
}

/// The presence of `user` as the next `Presence` event of them says:
/// (visible, online, last_seen_ms).
async fn presence_of(events: &mut Receiver<Event>, user: UserId) -> (bool, bool, u64) {
    next(events, &format!("presence of {user}"), Duration::from_secs(20), |ev| match ev {
        Event::Presence { user: u, visible, online, last_seen_ms } if *u == user => {
            Some((*visible, *online, *last_seen_ms))
        }
        _ => None,
    })
    .await
}

fn is_presence_of(user: UserId) -> impl Fn(&Event) -> bool {
    move |ev| matches!(ev, Event::Presence { user: u, .. } if *u == user)
}

/// Appends a command of `user` to the log (what a settings screen would do:
/// the edge has no privacy or contacts frames yet).
async fn must_append(stack: &Stack, user: UserId, id: u64, body: CommandBody) {
    let origin = Origin { user, device: DeviceId(0), client_msg_id: ClientMsgId(id) };
    let cmd = Command { origin, body };
    let result = stack.log.append(&cmd).await.unwrap_or_else(|e| panic!("append {cmd:?}: {e}"));
    result.unwrap_or_else(|r| panic!("refused {cmd:?}: {r}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_reaches_watchers_on_another_edge_as_privacy_contacts_and_blocks_allow() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path()).await;
    let alice = stack.register(0, "+15550000201").await.unwrap();
    let bob = stack.register(1, "+15550000202").await.unwrap();
    let carol = stack.register(1, "+15550000203").await.unwrap();
    let a_user = alice.user;

    // Bob watches Alice from edge 1. Her registration's connection came and
    // went: she is offline (once its offline is in), with a last seen.
    let (b, mut b_ev) = stack.connect(1, bob).await;
    b.subscribe_presence(vec![a_user]);
    let registered_seen = loop {
        let (visible, online, seen) = presence_of(&mut b_ev, a_user).await;
        assert!(visible && seen > 0, "{visible} {online} {seen}");
        if !online {
            break seen;
        }
    };

    // Alice logs in on edge 0: online.
    let (a, a_ev) = stack.connect(0, alice).await;
    let (visible, online, online_at) = presence_of(&mut b_ev, a_user).await;
    assert!(visible && online && online_at >= registered_seen);
    // Her connection closes: offline, last seen then; the user partition has
    // the transitions.
    a.close();
    drop(a_ev);
    let (visible, online, offline_at) = presence_of(&mut b_ev, a_user).await;
    assert!(visible && !online && offline_at >= online_at, "{visible} {online} {offline_at}");
    let transitions: Vec<(bool, u64)> = stack
        .partition_records(&Key::User(a_user))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.event.body {
            EventBody::PresenceChanged { user, online, .. } if user == a_user => Some((online, r.event.at_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(
        transitions.last().copied(),
        Some((false, offline_at)),
        "the last transition is the offline Bob saw: {transitions:?}"
    );
    assert!(transitions.contains(&(true, online_at)), "{transitions:?}");

    // Last seen: nobody (set through the CLI). Bob's view is withheld at once
    // (an audience update).
    let (ok, out) = cli(&stack, dir.path(), alice, 0, &["privacy", "--last-seen", "nobody"]);
    assert!(ok && out.contains("last seen Nobody"), "{out}");
    // (The CLI's own connection may show her online just before.)
    loop {
        match presence_of(&mut b_ev, a_user).await {
            (true, true, _) => continue,
            state => break assert_eq!(state, (false, false, 0)),
        }
    }
    // Carol, a new watcher, sees nothing either.
    let (c, mut c_ev) = stack.connect(1, carol).await;
    c.subscribe_presence(vec![a_user]);
    assert_eq!(presence_of(&mut c_ev, a_user).await, (false, false, 0));

    // My contacts, and Bob is one: Bob sees her again, Carol does not.
    must_append(&stack, a_user, 2, CommandBody::UpdateContacts { contacts: vec![bob.user] }).await;
    // Alice comes online while hidden: nobody hears it...
    let (a, a_ev) = stack.connect(0, alice).await;
    none(&mut b_ev, "hidden from Bob", Duration::from_millis(500), is_presence_of(a_user)).await;
    // ...then shows it to her contacts (through the SDK): Bob sees her online.
    a.set_privacy(Visibility::Contacts, Visibility::Everyone, Visibility::Everyone, true).await.unwrap();
    let (visible, online, back_at) = presence_of(&mut b_ev, a_user).await;
    assert!(visible && online && back_at > offline_at, "{visible} {online} {back_at}");
    none(&mut c_ev, "Carol is not Alice's contact", Duration::from_secs(1), is_presence_of(a_user)).await;

    // Alice blocks Bob: his view is withheld, and her going offline does not reach him.
    a.block(bob.user, true).await.unwrap();
    assert_eq!(presence_of(&mut b_ev, a_user).await, (false, false, 0));
    a.close();
    drop(a_ev);
    none(&mut b_ev, "a blocked viewer sees nothing", Duration::from_secs(2), is_presence_of(a_user)).await;
    none(&mut c_ev, "nor does a non-contact", Duration::from_millis(200), is_presence_of(a_user)).await;
    // A blocked watcher that subscribes afresh gets the withheld state only;
    // a user that does not exist looks the same.
    let nobody = UserId(4242);
    b.subscribe_presence(vec![a_user, nobody]);
    let mut answered = std::collections::BTreeMap::new();
    while answered.len() < 2 {
        let (user, state) = next(&mut b_ev, "the watched users' presence", Duration::from_secs(20), |ev| match ev {
            Event::Presence { user, visible, online, last_seen_ms } => {
                Some((*user, (*visible, *online, *last_seen_ms)))
            }
            _ => None,
        })
        .await;
        answered.insert(user, state);
    }
    assert_eq!(answered, [(a_user, (false, false, 0)), (nobody, (false, false, 0))].into_iter().collect());
    b.close();
    c.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn typing_reaches_the_other_members_only_expires_and_never_reaches_the_log() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path()).await;
    let alice = stack.register(0, "+15550000211").await.unwrap();
    let bob = stack.register(1, "+15550000212").await.unwrap();
    let carol = stack.register(1, "+15550000213").await.unwrap();
    let (a, mut a_ev) = stack.connect(0, alice).await;
    let (b, mut b_ev) = stack.connect(1, bob).await;
    let (c, mut c_ev) = stack.connect(1, carol).await;
    let chat = a.create_group("pair", vec![bob.user]).await.unwrap();
    // Once Bob has a message of the group, the projector knows its members.
    a.send(Recipient::Group(chat), b"hi".to_vec()).await.unwrap();
    messages(&mut b_ev, 1, Duration::from_secs(10)).await;
    let before = stack.partition_records(&Key::Chat(chat)).await.unwrap();

    let typing_of = |who: UserId, on: bool| {
        move |ev: &Event| match ev {
            Event::Typing { chat: ch, user, typing } if *ch == chat && *user == who && *typing == on => Some(()),
            _ => None,
        }
    };
    // Alice types: Bob (on the other edge) sees it; it lapses 5 s later
    // without a stop, in Bob's SDK.
    a.typing(chat, true);
    next(&mut b_ev, "Alice typing", Duration::from_secs(10), typing_of(alice.user, true)).await;
    let shown = Instant::now();
    next(&mut b_ev, "Alice's typing lapsing", Duration::from_secs(10), typing_of(alice.user, false)).await;
    let lapsed = shown.elapsed();
    assert!(
        lapsed >= Duration::from_millis(TYPING_EXPIRY_MS - 500)
            && lapsed < Duration::from_millis(TYPING_EXPIRY_MS + 2000),
        "lapsed after {lapsed:?}"
    );
    // Typing, then a stop: both reach Bob, in order.
    a.typing(chat, true);
    next(&mut b_ev, "Alice typing again", Duration::from_secs(10), typing_of(alice.user, true)).await;
    a.typing(chat, false);
    next(&mut b_ev, "Alice's stop", Duration::from_secs(10), typing_of(alice.user, false)).await;
    // Neither Carol (not a member) nor Alice herself heard any of it.
    let any_typing = |ev: &Event| matches!(ev, Event::Typing { .. });
    none(&mut c_ev, "typing reached a non-member", Duration::from_millis(300), any_typing).await;
    none(&mut a_ev, "typing echoed to the typist", Duration::from_millis(300), any_typing).await;

    // Carol types in a chat she is not in: NotMember, and nothing relayed.
    c.typing(chat, true);
    let code = next(&mut c_ev, "an error", Duration::from_secs(10), |ev| match ev {
        Event::Error { code, .. } => Some(*code),
        _ => None,
    })
    .await;
    assert_eq!(code, EdgeErrorCode::NotMember);
    none(&mut b_ev, "a non-member's typing was relayed", Duration::from_secs(1), any_typing).await;

    // A burst beyond the per-connection rate is refused (RateLimited), not relayed in full.
    for _ in 0..30 {
        b.typing(chat, true);
    }
    let code = next(&mut b_ev, "a rate limit", Duration::from_secs(10), |ev| match ev {
        Event::Error { code, .. } => Some(*code),
        _ => None,
    })
    .await;
    assert_eq!(code, EdgeErrorCode::RateLimited);

    // None of it is in the log: the chat's partition holds exactly what it held.
    let after = stack.partition_records(&Key::Chat(chat)).await.unwrap();
    assert_eq!(after.len(), before.len(), "typing reached the log");
    assert!(after.iter().all(|r| !format!("{:?}", r.event.body).contains("Typing")));
    a.close();
    b.close();
    c.close();
}

/// `chorus client …` against the stack's edge `edge`, logged in as `c`.
fn cli(stack: &Stack, dir: &std::path::Path, c: Credentials, edge: usize, args: &[&str]) -> (bool, String) {
    let profile = dir.join(format!("cli-{}.json", c.user));
    let json = serde_json::json!({ "credentials": c });
    std::fs::write(&profile, serde_json::to_vec(&json).unwrap()).unwrap();
    let out = std::process::Command::new(chorus_binary())
        .arg("client")
        .args(["--edge", &stack.edge_addrs()[edge]])
        .arg("--ca")
        .arg(&stack.cluster.edge_ca)
        .arg("--profile")
        .arg(&profile)
        .args(args)
        .output()
        .expect("run chorus client");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_watches_presence_and_types() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path()).await;
    let alice = stack.register(0, "+15550000221").await.unwrap();
    let bob = stack.register(1, "+15550000222").await.unwrap();
    let carol = stack.register(1, "+15550000223").await.unwrap();
    let (a, a_ev) = stack.connect(0, alice).await;
    let chat = a.create_group("cli", vec![bob.user]).await.unwrap();
    a.send(Recipient::Group(chat), b"hi".to_vec()).await.unwrap();

    // Bob's CLI watches Alice for 3 s while she goes offline.
    let watcher = {
        let (stack_dir, edge_addrs, ca) = (dir.path().to_owned(), stack.edge_addrs(), stack.cluster.edge_ca.clone());
        let a_id = alice.user.to_string();
        std::thread::spawn(move || {
            let profile = stack_dir.join("bob-watch.json");
            std::fs::write(&profile, serde_json::to_vec(&serde_json::json!({ "credentials": bob })).unwrap()).unwrap();
            let out = std::process::Command::new(chorus_binary())
                .args(["client", "--edge", &edge_addrs[1], "--ca"])
                .arg(&ca)
                .arg("--profile")
                .arg(&profile)
                .args(["presence", &a_id, "--for-ms", "4000"])
                .output()
                .expect("run chorus client presence");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    tokio::time::sleep(Duration::from_millis(2000)).await;
    a.close();
    drop(a_ev);
    let out = tokio::task::spawn_blocking(move || watcher.join().unwrap()).await.unwrap();
    let a_line = |s: &str| format!("{}: {s}", alice.user);
    assert!(out.contains(&a_line("online")), "{out}");
    assert!(out.contains(&a_line("offline, last seen at")), "{out}");

    // Bob's CLI types in the group: Alice (back on edge 0) sees it.
    let (a, mut a_ev2) = stack.connect(0, alice).await;
    let (ok, out) = cli(&stack, dir.path(), bob, 1, &["typing", &chat.to_string(), "--for-ms", "1000"]);
    assert!(ok, "{out}");
    next(&mut a_ev2, "Bob typing", Duration::from_secs(10), |ev| match ev {
        Event::Typing { chat: c, user, typing: true } if *c == chat && *user == bob.user => Some(()),
        _ => None,
    })
    .await;
    // Carol's is refused: she is not in the group.
    let (ok, out) = cli(&stack, dir.path(), carol, 1, &["typing", &chat.to_string(), "--for-ms", "500"]);
    assert!(!ok && out.contains("NotMember"), "{out}");
    a.close();
}
