//! Accounts under attack, every part a real process (3 log-nodes, a
//! nats-server, a projector and 2 edges), clients on the SDK over QUIC:
//! OTP brute force across resends and edges, re-registration without the
//! PIN, revoked devices, rate limits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::time::{Duration, Instant};

use chorus_client::{self as client, Client, Credentials, Error, Event, Resume};
use chorus_edge::session::{LimitsConfig, OtpConfig, Rate};
use chorus_schema::{DeviceNoticeKind, EdgeErrorCode};
use chorus_testkit::cluster::chorus_binary;
use chorus_testkit::services::sms_code;
use chorus_testkit::stack::{Stack, StackSpec};
use tokio::sync::mpsc::Receiver;

/// One deployment at a time: each is 7 processes on 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

async fn stack(dir: &std::path::Path, limits: LimitsConfig, otp: OtpConfig) -> Stack {
    let mut spec = StackSpec::new(dir, chorus_binary());
    spec.edge.session.limits = limits;
    spec.edge.session.otp = otp;
    Stack::start(spec).await.expect("start the stack")
}

/// Texts a code to `phone` through edge `edge` and reads it from its SMS file.
async fn code(stack: &Stack, edge: usize, phone: &str) -> String {
    let path = stack.cluster.edges[edge].sms_path();
    let len = || std::fs::metadata(&path).map_or(0, |m| m.len());
    let before = len();
    client::request_otp(&stack.client_config(&[edge]), phone).await.expect("a code is texted");
    // The sink writes after the answer: wait for this code, not an older one.
    for _ in 0..50 {
        if len() > before {
            if let Ok(c) = sms_code(&path, phone) {
                return c;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no code for {phone} in {}", path.display())
}

/// Registers through `edge`: the refusal code, or the credentials.
async fn verify(
    stack: &Stack,
    edge: usize,
    phone: &str,
    code: &str,
    pin: Option<&str>,
) -> Result<Credentials, EdgeErrorCode> {
    match client::verify_otp_with_pin(&stack.client_config(&[edge]), phone, code, "d", vec![1; 32], pin).await {
        Ok(c) => Ok(c),
        Err(Error::Refused { code, .. }) => Err(code),
        Err(e) => panic!("verify: {e}"),
    }
}

fn wrong(code: &str) -> &'static str {
    if code == "000000" {
        "111111"
    } else {
        "000000"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn otp_brute_force_across_resends_and_two_edges_locks_the_phone() {
    let _g = serial().await;
    let dir = tempfile::tempdir().unwrap();
    // Codes live 1.5 s and allow 3 tries per edge: a guesser resends after
    // each expiry and switches edges. Only the log's count stops it.
    let otp = OtpConfig { ttl_ms: 1_500, attempts_max: 3, resend_interval_ms: 0, ..OtpConfig::default() };
    let stack = stack(dir.path(), LimitsConfig::unlimited(), otp).await;
    let victim = "+15550000101";
    let mut failures = 0;
    let mut guess = |edge: usize, code: String| {
        let stack = &stack;
        failures += 1;
        let n = failures;
        async move { (n, verify(stack, edge, victim, wrong(&code), None).await.unwrap_err()) }
    };
    // Round 1 on edge 0, round 2 on edge 1, round 3 (a resend) on edge 0:
    // three codes, 3 wrong tries each, 9 failures.
    for edge in [0, 1, 0] {
        let c = code(&stack, edge, victim).await;
        for i in 0..3 {
            let (n, refused) = guess(edge, c.clone()).await;
            let expected = if i < 2 { EdgeErrorCode::BadOtp } else { EdgeErrorCode::TooManyAttempts };
            assert_eq!(refused, expected, "failure {n}");
        }
        // Let the code expire: the next round is a resend.
        tokio::time::sleep(Duration::from_millis(1_600)).await;
    }
    // The 10th wrong code (on edge 1) locks the phone in the log.
    let c = code(&stack, 1, victim).await;
    assert_eq!(guess(1, c.clone()).await.1, EdgeErrorCode::BadOtp);
    // From now on every edge says so, even for the right code.
    assert_eq!(guess(1, c.clone()).await.1, EdgeErrorCode::PhoneLocked);
    assert_eq!(verify(&stack, 1, victim, &c, None).await.unwrap_err(), EdgeErrorCode::PhoneLocked);
    let c = code(&stack, 0, victim).await;
    assert_eq!(verify(&stack, 0, victim, &c, None).await.unwrap_err(), EdgeErrorCode::PhoneLocked);
    // Another number is not affected.
    let other = "+15550000102";
    let c = code(&stack, 0, other).await;
    verify(&stack, 0, other, &c, None).await.expect("another phone registers");
}

/// Waits for the client to be told its device is revoked, and to stop.
async fn revoked(what: &str, events: &mut Receiver<Event>, within: Duration) -> Duration {
    let started = Instant::now();
    let mut told = false;
    loop {
        match tokio::time::timeout_at((started + within).into(), events.recv()).await {
            Ok(Some(Event::Error { code: EdgeErrorCode::Revoked, .. })) => told = true,
            Ok(Some(_)) => {}
            Ok(None) => {
                assert!(told, "the client stopped without being told why");
                return started.elapsed();
            }
            Err(_) => panic!("{what}: still connected after {within:?} (told: {told})"),
        }
    }
}

/// Waits for a device notice.
async fn notice(events: &mut Receiver<Event>) -> (DeviceNoticeKind, chorus_schema::DeviceId) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(Event::Device { kind, device, .. })) => return (kind, device),
            Ok(Some(_)) => {}
            other => panic!("no device notice: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reregistration_needs_the_pin_and_the_devices_are_told() {
    let _g = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let otp = OtpConfig { resend_interval_ms: 0, ..OtpConfig::default() };
    let stack = stack(dir.path(), LimitsConfig::unlimited(), otp).await;
    let phone = "+15550000201";
    let c = code(&stack, 0, phone).await;
    let alice = verify(&stack, 0, phone, &c, None).await.unwrap();
    let (a, mut a_events) = stack.connect(0, alice).await;
    let bob = stack.register(1, "+15550000202").await.unwrap();
    let (b, _b_events) = stack.connect(1, bob).await;
    let to_alice = chorus_schema::Recipient::User(alice.user);
    b.send(to_alice, b"before".to_vec()).await.unwrap();
    a.set_pin("2468").await.expect("the PIN is set");
    assert!(matches!(a.set_pin("12").await, Err(Error::Refused { code: EdgeErrorCode::BadFrame, .. })));

    // Someone with the phone's code but not the PIN gets nothing, on either edge.
    let c = code(&stack, 1, phone).await;
    assert_eq!(verify(&stack, 1, phone, &c, None).await.unwrap_err(), EdgeErrorCode::PinRequired);
    let c = code(&stack, 1, phone).await;
    assert_eq!(verify(&stack, 1, phone, &c, Some("1357")).await.unwrap_err(), EdgeErrorCode::PinRequired);
    // Nothing was linked by those: the first device notice Alice gets (below)
    // is the PIN registration's — notices come in the log's order.

    // With the PIN the number registers a new device, and Alice is told.
    let c = code(&stack, 0, phone).await;
    let second = verify(&stack, 0, phone, &c, Some("2468")).await.expect("registered with the PIN");
    assert_eq!(second.user, alice.user);
    assert_ne!(second.device, alice.device);
    assert_eq!(notice(&mut a_events).await, (DeviceNoticeKind::Linked, second.device));

    // The new device gets no history from before its link; new messages it gets.
    let (c, mut c_events) = Client::connect_raw(stack.client_config(&[1]), second, Resume::default()).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), c_events.recv()).await {
            Ok(Some(Event::Synced { .. })) => break,
            Ok(Some(Event::Message(m))) => panic!("history from before the link: {m:?}"),
            Ok(Some(_)) => {}
            other => panic!("no sync: {other:?}"),
        }
    }
    let after = b.send(to_alice, b"after".to_vec()).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), c_events.recv()).await {
            Ok(Some(Event::Message(m))) => {
                assert_eq!((m.seq, &m.ciphertext[..]), (after.seq, &b"after"[..]));
                break;
            }
            Ok(Some(_)) => {}
            other => panic!("no new message: {other:?}"),
        }
    }
    c.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_device_is_disconnected_within_a_second_on_every_edge() {
    let _g = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let limits = LimitsConfig { otp_requests_per_prefix: Rate::new(3, 1), ..LimitsConfig::unlimited() };
    let otp = OtpConfig { resend_interval_ms: 0, ..OtpConfig::default() };
    let stack = stack(dir.path(), limits, otp).await;
    let phone = "+15550000301";
    let c = code(&stack, 0, phone).await;
    let first = verify(&stack, 0, phone, &c, None).await.unwrap();
    let c = code(&stack, 1, phone).await;
    let second = verify(&stack, 1, phone, &c, None).await.unwrap();

    // The second device is connected to both edges; the first unlinks it.
    let (a, mut a_events) = stack.connect(0, first).await;
    let (_b0, mut b0_events) = stack.connect(0, second).await;
    let (_b1, mut b1_events) = stack.connect(1, second).await;
    // Timed from the request: the log commits, the projector publishes the
    // update, and both edges close the device's connections.
    let (unlinked, t0, t1) = tokio::join!(
        a.unlink_device(second.device),
        revoked("the unlinked device on edge 0", &mut b0_events, Duration::from_secs(1)),
        revoked("the unlinked device on edge 1", &mut b1_events, Duration::from_secs(1))
    );
    unlinked.expect("unlinked");
    eprintln!("disconnected after {t0:?} (edge 0) and {t1:?} (edge 1)");
    assert_eq!(notice(&mut a_events).await, (DeviceNoticeKind::Unlinked, second.device));
    // Its token logs in nowhere now.
    let refused = Client::connect_raw(stack.client_config(&[1]), second, Resume::default()).await.unwrap_err();
    assert!(matches!(refused, Error::Refused { code: EdgeErrorCode::Unauthenticated, .. }), "{refused}");

    // Logging out closes the device's own connections (here a second one on edge 1).
    let (_a1, mut a1_events) = stack.connect(1, first).await;
    let (out, t0, t1) = tokio::join!(
        a.logout(),
        revoked("the logged-out device on edge 0", &mut a_events, Duration::from_secs(1)),
        revoked("the logged-out device on edge 1", &mut a1_events, Duration::from_secs(1))
    );
    out.expect("logged out");
    eprintln!("logged out: disconnected after {t0:?} (edge 0) and {t1:?} (edge 1)");
    let refused = Client::connect_raw(stack.client_config(&[0]), first, Resume::default()).await.unwrap_err();
    assert!(matches!(refused, Error::Refused { code: EdgeErrorCode::Unauthenticated, .. }), "{refused}");

    // Code requests per number range: edge 0 texted +15550… once; the
    // fourth is refused with when to retry.
    let range = ["+15550000311", "+15550000312", "+15550000313"];
    client::request_otp(&stack.client_config(&[0]), range[0]).await.unwrap();
    client::request_otp(&stack.client_config(&[0]), range[1]).await.unwrap();
    match client::request_otp(&stack.client_config(&[0]), range[2]).await {
        Err(Error::Refused { code: EdgeErrorCode::RateLimited, retry_after_ms: Some(ms), .. }) => {
            assert!(ms > 1_000_000, "an hour per request: retry after {ms} ms");
        }
        other => panic!("expected RateLimited with retry_after_ms, got {other:?}"),
    }
    // Another range still gets codes.
    client::request_otp(&stack.client_config(&[0]), "+4915100000001").await.expect("another range");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blocked_user_cannot_send_direct_messages() {
    let _g = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path(), LimitsConfig::unlimited(), OtpConfig::default()).await;
    let alice = stack.register(0, "+15550000401").await.unwrap();
    let bob = stack.register(1, "+15550000402").await.unwrap();
    let (a, mut a_events) = stack.connect(0, alice).await;
    let (b, _b_events) = stack.connect(1, bob).await;
    let to_alice = chorus_schema::Recipient::User(alice.user);
    let first = b.send(to_alice, b"hi".to_vec()).await.expect("not blocked yet");

    a.block(bob.user, true).await.expect("blocked");
    match b.send(to_alice, b"let me in".to_vec()).await {
        Err(Error::Refused { code: EdgeErrorCode::Forbidden, .. }) => {}
        other => panic!("a blocked sender's message: {other:?}"),
    }
    // Alice can still write to Bob; unblocked, Bob gets through again.
    a.send(chorus_schema::Recipient::User(bob.user), b"bye".to_vec()).await.expect("the blocker writes");
    a.block(bob.user, false).await.expect("unblocked");
    let again = b.send(to_alice, b"back".to_vec()).await.expect("unblocked");
    assert_eq!(again.seq.0, first.seq.0 + 2, "the refused message took no seq");
    // Alice got Bob's messages from before the block and after it, nothing between.
    let mut got = Vec::new();
    while got.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(10), a_events.recv()).await {
            Ok(Some(Event::Message(m))) => got.push(m.ciphertext),
            Ok(Some(_)) => {}
            other => panic!("after {got:?}: {other:?}"),
        }
    }
    assert_eq!(got, vec![b"hi".to_vec(), b"back".to_vec()]);
}

/// `chorus client …` against the stack's edge 0, with this profile.
fn cli(stack: &Stack, profile: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(chorus_binary())
        .arg("client")
        .args(["--edge", &stack.edge_addrs()[0]])
        .arg("--ca")
        .arg(&stack.cluster.edge_ca)
        .arg("--profile")
        .arg(profile)
        .args(args)
        .output()
        .expect("run chorus client");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_sets_a_pin_blocks_unlinks_and_logs_out() {
    let _g = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let otp = OtpConfig { resend_interval_ms: 0, ..OtpConfig::default() };
    let stack = stack(dir.path(), LimitsConfig::unlimited(), otp).await;
    let (phone, profile) = ("+15550000501", dir.path().join("cli.json"));
    let bob = stack.register(1, "+15550000502").await.unwrap();
    let (b, _b_events) = stack.connect(1, bob).await;

    let c = code(&stack, 0, phone).await;
    let (ok, out) = cli(&stack, &profile, &["register", "--phone", phone, "--code", &c]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&stack, &profile, &["set-pin", "2468"]);
    assert!(ok && out.contains("PIN set"), "{out}");
    let (ok, out) = cli(&stack, &profile, &["block", "+15550000502"]);
    assert!(ok && out.contains("blocked"), "{out}");
    let to_cli = chorus_schema::Recipient::User(chorus_schema::edge::user_for_phone(phone).unwrap());
    assert!(matches!(b.send(to_cli, b"x".to_vec()).await, Err(Error::Refused { code: EdgeErrorCode::Forbidden, .. })));

    // A second device of the number needs the PIN; the first unlinks it.
    let c = code(&stack, 0, phone).await;
    let second = verify(&stack, 0, phone, &c, Some("2468")).await.expect("registered with the PIN");
    let (_s, mut s_events) = stack.connect(0, second).await;
    let device = second.device.0.to_string();
    let (ok, out) = cli(&stack, &profile, &["unlink", "--device", &device]);
    assert!(ok, "{out}");
    revoked("the device unlinked by the CLI", &mut s_events, Duration::from_secs(5)).await;

    // Logging out forgets the profile; its token logs in no more.
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&profile).unwrap()).unwrap();
    let (ok, out) = cli(&stack, &profile, &["logout"]);
    assert!(ok, "{out}");
    assert!(!profile.exists());
    std::fs::write(&profile, serde_json::to_vec(&saved).unwrap()).unwrap();
    let (ok, out) = cli(&stack, &profile, &["login"]);
    assert!(!ok && out.contains("Unauthenticated"), "{out}");
}
