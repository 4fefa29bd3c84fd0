//! Push notifications and abuse reports (issue 14), every part a real
//! process: 3 log-nodes, a nats-server, a projector (with `[push]` pointing
//! at a real HTTP receiver in this test process) and 2 edges, clients on the
//! SDK over QUIC.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::time::Duration;

use chorus_client::{Client, Credentials};
use chorus_projections::push::verify;
use chorus_schema::push::{ReportedMessage, MAX_REPORT_MESSAGES};
use chorus_schema::{ChatId, EdgeErrorCode, EventBody, Key, Recipient, Seq, UserId};
use chorus_testkit::cluster::chorus_binary;
use chorus_testkit::events::refused;
use chorus_testkit::stack::{Stack, StackSpec};
use chorus_testkit::webhook::{Got, Receiver};

/// One deployment at a time: each is 7 processes on 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SECRET: &[u8] = b"push-secret-of-at-least-thirty-two-bytes";
const WINDOW_MS: u64 = 1500;

/// Checks what a gateway checks, and that nothing of the messages is in it.
fn check_signed_and_opaque(g: &Got, plaintexts: &[&[u8]]) {
    let now = chorus_projections::push::now_ms();
    verify(SECRET, &g.timestamp, &g.signature, &g.body, now, 300_000).expect("a valid signature");
    assert!(
        verify(b"another secret, also thirty-two bytes", &g.timestamp, &g.signature, &g.body, now, 300_000).is_err()
    );
    for p in plaintexts {
        assert!(!g.body.windows(p.len()).any(|w| w == *p), "push body carries message bytes: {}", text(&g.body));
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn stack_with_push(dir: &std::path::Path, url: &str) -> Stack {
    let mut stack = Stack::start(StackSpec::new(dir, chorus_binary()).unthrottled()).await.expect("start the stack");
    let secret = dir.join("push.secret");
    std::fs::write(&secret, SECRET).unwrap();
    let url = url.to_owned();
    stack
        .projector()
        .unwrap()
        .reconfigure(
            |c| {
                c.push = Some(chorus_projections::push::PushConfig {
                    url,
                    secret_file: secret,
                    window_ms: WINDOW_MS,
                    backoff_min_ms: 100,
                    backoff_max_ms: 1000,
                    ..Default::default()
                });
            },
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    stack
}

async fn with_token(
    stack: &Stack,
    edge: usize,
    c: Credentials,
    token: &str,
) -> (Client, tokio::sync::mpsc::Receiver<chorus_client::Event>) {
    let (client, events) = stack.connect(edge, c).await;
    client.register_push(token, "fcm").await.unwrap();
    (client, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offline_users_get_one_signed_opaque_push_per_chat_per_window_with_retries_on_5xx_only() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (rx, url) = Receiver::start().await;
    let stack = stack_with_push(dir.path(), &url).await;
    let alice = stack.register(0, "+15550001401").await.unwrap();
    let bob = stack.register(1, "+15550001402").await.unwrap();
    let carol = stack.register(0, "+15550001403").await.unwrap();
    let dave = stack.register(1, "+15550001404").await.unwrap();
    let (a, _a_events) = stack.connect(0, alice).await;
    let (b, _b_events) = with_token(&stack, 1, bob, "tok-bob").await;
    let (c, _c_events) = with_token(&stack, 0, carol, "tok-carol").await;
    let (d, _d_events) = with_token(&stack, 1, dave, "tok-dave").await;
    // Bob and Dave go offline; Carol stays online.
    b.close();
    d.close();
    stack.wait_offline(bob.user).await.unwrap();
    stack.wait_offline(dave.user).await.unwrap();

    // A burst of 5 to offline Bob, one to online Carol.
    let to_carol = a.send(Recipient::User(carol.user), b"secret-to-carol".to_vec()).await.unwrap();
    let mut last = Seq(0);
    for i in 0..5 {
        last = a.send(Recipient::User(bob.user), format!("secret-to-bob-{i}").into_bytes()).await.unwrap().seq;
    }
    let ab = ChatId::direct(alice.user, bob.user);
    let got = rx.wait_for(bob.user, ab, 1).await;
    assert_eq!(got.len(), 1, "one push for the burst");
    // Nothing more comes in the next two windows.
    tokio::time::sleep(Duration::from_millis(2 * WINDOW_MS + 500)).await;
    let got = rx.for_chat(bob.user, ab);
    assert_eq!(got.len(), 1, "exactly one push per chat per window: {got:?}");
    let push = got[0].push();
    assert_eq!((push.count, push.last_seq), (5, last), "{push:?}");
    assert_eq!(push.devices.len(), 1);
    assert_eq!((push.devices[0].token.as_str(), push.devices[0].platform.as_str()), ("tok-bob", "fcm"));
    check_signed_and_opaque(&got[0], &[b"secret", b"to-bob"]);
    assert!(rx.for_user(carol.user).is_empty(), "Carol is online: no push ({to_carol:?})");
    assert!(rx.for_user(alice.user).is_empty(), "the sender gets no push");

    // A group: each offline member once, the online one and the sender never.
    let group = a.create_group("push", vec![bob.user, carol.user, dave.user]).await.unwrap();
    a.send(Recipient::Group(group), b"secret-group-1".to_vec()).await.unwrap();
    let last = a.send(Recipient::Group(group), b"secret-group-2".to_vec()).await.unwrap().seq;
    for user in [bob.user, dave.user] {
        let got = rx.wait_for(user, group, 1).await;
        assert_eq!(got.len(), 1, "one group push for {user}");
    }
    tokio::time::sleep(Duration::from_millis(2 * WINDOW_MS)).await;
    for user in [bob.user, dave.user] {
        let got = rx.for_chat(user, group);
        assert_eq!(got.len(), 1, "one group push for {user}: {got:?}");
        assert_eq!((got[0].push().count, got[0].push().last_seq), (2, last));
        check_signed_and_opaque(&got[0], &[b"secret"]);
    }
    assert!(rx.for_user(carol.user).is_empty(), "Carol is still online");

    // Carol's devices all go offline: she starts getting pushes.
    c.close();
    stack.wait_offline(carol.user).await.unwrap();
    let ac = ChatId::direct(alice.user, carol.user);
    a.send(Recipient::User(carol.user), b"secret-later".to_vec()).await.unwrap();
    let got = rx.wait_for(carol.user, ac, 1).await;
    assert_eq!(got.len(), 1, "Carol, now offline, gets a push");
    assert_eq!(got[0].push().devices[0].token, "tok-carol");

    // A webhook failing 503 twice, then taking it: the third attempt lands.
    rx.script.lock().unwrap().extend([503, 503]);
    let ad = ChatId::direct(alice.user, dave.user);
    a.send(Recipient::User(dave.user), b"secret-retry".to_vec()).await.unwrap();
    let got = rx.wait_for(dave.user, ad, 3).await;
    let statuses: Vec<u16> = got.iter().map(|g| g.status).collect();
    assert_eq!(statuses, [503, 503, 200], "retried on 5xx until accepted");
    assert!(got.iter().all(|g| g.push() == got[0].push()), "the same push each time");

    // A 400 is not retried.
    rx.script.lock().unwrap().push_back(400);
    let before = rx.for_chat(bob.user, ab).len();
    a.send(Recipient::User(bob.user), b"secret-refused".to_vec()).await.unwrap();
    let got = rx.wait_for(bob.user, ab, before + 1).await;
    tokio::time::sleep(Duration::from_millis(WINDOW_MS + 2000)).await;
    let got_later = rx.for_chat(bob.user, ab);
    assert_eq!(got.len(), before + 1);
    assert_eq!(got_later.len(), before + 1, "a 4xx is not retried: {got_later:?}");
    assert_eq!(got_later[before].status, 400);

    // A device that clears its token gets no more pushes.
    let (b2, _b2_events) = with_token(&stack, 1, bob, "").await;
    b2.close();
    stack.wait_offline(bob.user).await.unwrap();
    let n = rx.for_user(bob.user).len();
    a.send(Recipient::User(bob.user), b"secret-untokened".to_vec()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(WINDOW_MS + 1500)).await;
    assert_eq!(rx.for_user(bob.user).len(), n, "no token, no push");

    // The projector's counters agree: 5 pushes accepted (the burst, two group
    // pushes, Carol's, the retried one), 1 refused (the 400), 6 messages
    // coalesced (4 of the burst, 1 per group push), none dropped.
    let addr = stack.cluster.projector.as_ref().unwrap().config.metrics_addr.unwrap();
    let scrape = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    let counter = |name: &str| -> f64 {
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} not exported"))
    };
    assert_eq!(counter("chorus_push_sent_total"), 5.0);
    assert_eq!(counter("chorus_push_failed_total"), 1.0);
    assert_eq!(counter("chorus_push_coalesced_total"), 6.0);
    assert_eq!(counter("chorus_push_dropped_total"), 0.0);

    // Neither a projector restart nor a rebuild of the views sends anything again.
    let before = rx.got.lock().unwrap().len();
    drop((a, b, c, d, b2));
    let mut stack = stack;
    stack.projector().unwrap().reconfigure(|_| {}, Duration::from_secs(30)).await.unwrap();
    let out = dir.path().join("rebuilt");
    let node = stack.cluster.client_addrs()[0].clone();
    let replay = std::process::Command::new(chorus_binary())
        .args(["replay", "--node", &node, "--out"])
        .arg(&out)
        .args(stack.cluster.operator_args())
        .output()
        .unwrap();
    assert!(replay.status.success(), "{}", text(&replay.stderr));
    tokio::time::sleep(Duration::from_millis(2 * WINDOW_MS + 1000)).await;
    assert_eq!(rx.got.lock().unwrap().len(), before, "nothing pushed twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_reach_the_log_with_their_attachments_and_bad_ones_append_nothing() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(StackSpec::new(dir.path(), chorus_binary()).unthrottled()).await.expect("start the stack");
    let alice = stack.register(0, "+15550001501").await.unwrap();
    let bob = stack.register(1, "+15550001502").await.unwrap();
    let (a, _events) = stack.connect(0, alice).await;
    let chat = ChatId::direct(alice.user, bob.user);
    let msg = |i: u64, text: &str| ReportedMessage {
        seq: Seq(i),
        sender: bob.user,
        at_ms: 1000 + i,
        text: text.as_bytes().to_vec(),
    };
    let attached = vec![msg(1, "buy cheap pills"), msg(2, "click this link")];
    a.report(bob.user, Some(chat), "spam", attached.clone()).await.unwrap();

    // Bad reports: clear errors, nothing appended.
    let (code, message) = refused(a.report(alice.user, None, "me", vec![]).await);
    assert_eq!(code, EdgeErrorCode::BadFrame, "{message}");
    assert!(message.contains("themself"), "{message}");
    let nobody = UserId(0x7fff_0000_0000_0001);
    let (code, message) = refused(a.report(nobody, None, "", vec![]).await);
    assert_eq!(code, EdgeErrorCode::UnknownRecipient, "{message}");
    let many = vec![msg(1, "x"); MAX_REPORT_MESSAGES + 1];
    let (code, message) = refused(a.report(bob.user, None, "", many).await);
    assert_eq!(code, EdgeErrorCode::BadFrame, "{message}");
    let big = vec![msg(1, &"x".repeat(chorus_schema::push::MAX_REPORT_TEXT_BYTES + 1))];
    let (code, message) = refused(a.report(bob.user, None, "", big).await);
    assert_eq!(code, EdgeErrorCode::BadFrame, "{message}");

    let reports: Vec<_> = stack
        .partition_records(&Key::User(bob.user))
        .await
        .unwrap()
        .into_iter()
        .filter(|r| matches!(r.event.body, EventBody::ReportFiled { .. }))
        .collect();
    assert_eq!(reports.len(), 1, "only the good report is in the log: {reports:?}");
    assert_eq!(reports[0].event.origin.user, alice.user);
    assert_eq!(
        reports[0].event.body,
        EventBody::ReportFiled { user: bob.user, chat: Some(chat), reason: "spam".into(), messages: attached }
    );
    assert!(stack
        .partition_records(&Key::User(nobody))
        .await
        .unwrap()
        .iter()
        .all(|r| !matches!(r.event.body, EventBody::ReportFiled { .. })));

    // An operator reads it with the CLI.
    let node = stack.cluster.client_addrs()[0].clone();
    let out = std::process::Command::new(chorus_binary())
        .args(["reports", "show", &bob.user.0.to_string(), "--json", "--node", &node])
        .args(stack.cluster.operator_args())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["count"], 1, "{json}");
    assert_eq!(json["latest"][0]["reporter"], alice.user.0);
    assert_eq!(json["latest"][0]["messages"][1]["text"], "click this link");
}
