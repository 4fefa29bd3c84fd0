//! Profiles, privacy, contact sync, status stories and blocking through the
//! edge, every part a real process: 3 log-nodes, a nats-server, a projector
//! and 2 edges, clients on the SDK over QUIC. The rules live in the user
//! partition (status audiences and expiry, the contact-lookup allowance) and
//! in the projector's views (what a reader may see); these tests show that
//! clients reach them and hear them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::future::Future;
use std::time::Duration;

use chorus_client::{Client, Error, StatusPost};
use chorus_schema::{EdgeErrorCode, MediaRef, Profile, Recipient, StatusAudience, UserId, Visibility};
use chorus_testkit::cluster::chorus_binary;
use chorus_testkit::events::messages;
use chorus_testkit::stack::{Stack, StackSpec};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn refused<T: std::fmt::Debug>(r: Result<T, Error>) -> (EdgeErrorCode, String, Option<u64>) {
    match r {
        Err(Error::Refused { code, message, retry_after_ms }) => (code, message, retry_after_ms),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Polls `f` until `ok` holds for its value (views are folded a moment
/// after the log commits), failing with the last value after 15 s.
async fn eventually<T: std::fmt::Debug, F: Future<Output = T>>(
    what: &str,
    mut f: impl FnMut() -> F,
    ok: impl Fn(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let v = f().await;
        if ok(&v) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: still {v:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn shows(p: &Profile) -> (bool, bool) {
    (p.about.is_some(), p.avatar.is_some())
}

fn ids(s: &[chorus_schema::StatusEntry]) -> Vec<u64> {
    s.iter().map(|e| e.status_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contacts_profiles_statuses_and_blocks() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(StackSpec::new(dir.path(), chorus_binary()).unthrottled()).await.expect("stack");
    let phones = ["+15550000201", "+15550000202", "+15550000203", "+15550000204"];
    let alice = stack.register(0, phones[0]).await.unwrap();
    let bob = stack.register(1, phones[1]).await.unwrap();
    let carol = stack.register(0, phones[2]).await.unwrap();
    let dave = stack.register(1, phones[3]).await.unwrap();
    let (a, mut a_events) = stack.connect(0, alice).await;
    let (b, _b_events) = stack.connect(1, bob).await;
    let (c, _c_events) = stack.connect(0, carol).await;
    let (d, _d_events) = stack.connect(1, dave).await;

    // ---- contact sync: only the registered numbers come back, with their ids.
    let upload = [phones[1], phones[2], "+15559999999"].map(String::from);
    let matches = a.sync_contacts(&upload).await.unwrap();
    let mut users: Vec<UserId> = matches.iter().map(|m| m.user).collect();
    users.sort();
    let mut want = vec![bob.user, carol.user];
    want.sort();
    assert_eq!(users, want, "{matches:?}");
    // A number that is not E.164 is refused before it leaves the device.
    assert_eq!(refused(a.sync_contacts(&["12".to_string()]).await).0, EdgeErrorCode::BadFrame);

    // ---- profiles and privacy: "my contacts" is alice's list (bob, carol).
    let avatar = MediaRef { blake3: [7; 32], size: 10, mime: "image/jpeg".into() };
    a.set_profile("Alice", "at the beach", Some(avatar.clone())).await.unwrap();
    let p = eventually("dave sees alice's profile", || d.profile(alice.user), |p| p.as_ref().is_ok_and(|p| p.found))
        .await
        .unwrap();
    assert_eq!(
        (p.name.as_str(), p.about.as_deref(), p.avatar.as_ref()),
        ("Alice", Some("at the beach"), Some(&avatar))
    );
    a.set_privacy(Visibility::Everyone, Visibility::Contacts, Visibility::Contacts, true).await.unwrap();
    let _ = eventually(
        "dave, no contact, sees the name only",
        || d.profile(alice.user),
        |p| p.as_ref().is_ok_and(|p| shows(p) == (false, false) && p.name == "Alice"),
    )
    .await;
    assert_eq!(shows(&b.profile(alice.user).await.unwrap()), (true, true), "bob is a contact");
    a.set_privacy(Visibility::Everyone, Visibility::Nobody, Visibility::Nobody, true).await.unwrap();
    let _ = eventually(
        "nobody: bob sees neither",
        || b.profile(alice.user),
        |p| p.as_ref().is_ok_and(|p| shows(p) == (false, false)),
    )
    .await;
    assert_eq!(shows(&a.profile(alice.user).await.unwrap()), (true, true), "the owner sees their own");
    a.set_privacy(Visibility::Everyone, Visibility::Everyone, Visibility::Everyone, true).await.unwrap();
    let _ = eventually(
        "everyone: dave sees both",
        || d.profile(alice.user),
        |p| p.as_ref().is_ok_and(|p| shows(p) == (true, true)),
    )
    .await;

    // ---- status audiences: contacts, contacts except carol, only dave.
    let post = |status_id: u64, text: &str, audience, users| StatusPost {
        status_id,
        ciphertext: text.as_bytes().to_vec(),
        media: None,
        audience,
        users,
        ttl_ms: 0,
    };
    // Status 1 is a picture with a caption.
    let picture = chorus_schema::MediaRef { blake3: [6; 32], size: 52_311, mime: "image/jpeg".into() };
    a.post_status(StatusPost { media: Some(picture.clone()), ..post(1, "one", StatusAudience::Contacts, vec![]) })
        .await
        .unwrap();
    a.post_status(post(2, "two", StatusAudience::ContactsExcept, vec![carol.user])).await.unwrap();
    a.post_status(post(3, "three", StatusAudience::OnlyShareWith, vec![dave.user])).await.unwrap();
    let (code, _, _) = refused(a.post_status(post(3, "again", StatusAudience::Contacts, vec![])).await);
    assert_eq!(code, EdgeErrorCode::BadFrame, "a status id is used once");
    let listed = |cl: &Client, author| {
        let cl = cl.clone();
        async move { cl.statuses(author).await.map(|s| ids(&s)) }
    };
    let _ = eventually("bob sees 1 and 2", || listed(&b, Some(alice.user)), |s| s.as_ref().is_ok_and(|s| s == &[1, 2]))
        .await;
    let _ = eventually("carol sees 1", || listed(&c, Some(alice.user)), |s| s.as_ref().is_ok_and(|s| s == &[1])).await;
    let seen = c.statuses(Some(alice.user)).await.unwrap();
    assert_eq!(
        (seen[0].media.as_ref(), &seen[0].ciphertext[..]),
        (Some(&picture), &b"one"[..]),
        "the picture and its caption"
    );
    let _ = eventually("dave sees 3", || listed(&d, Some(alice.user)), |s| s.as_ref().is_ok_and(|s| s == &[3])).await;
    // Without an author: the contacts' posts (bob has no contacts: none).
    assert_eq!(b.statuses(None).await.unwrap(), vec![]);

    // Viewers: the author sees who viewed; a viewer outside the audience is refused.
    b.view_status(alice.user, 1).await.unwrap();
    c.view_status(alice.user, 1).await.unwrap();
    assert_eq!(refused(d.view_status(alice.user, 1).await).0, EdgeErrorCode::UnknownRecipient);
    assert_eq!(refused(d.view_status(alice.user, 99).await).0, EdgeErrorCode::UnknownRecipient);
    let own = eventually(
        "alice sees her viewers",
        || a.statuses(None),
        |s| s.as_ref().is_ok_and(|s| s.iter().any(|e| e.status_id == 1 && e.viewers.len() == 2)),
    )
    .await
    .unwrap();
    let mut viewers = own.iter().find(|e| e.status_id == 1).unwrap().viewers.clone();
    viewers.sort();
    let mut want = vec![bob.user, carol.user];
    want.sort();
    assert_eq!(viewers, want);
    assert!(b.statuses(Some(alice.user)).await.unwrap().iter().all(|e| e.viewers.is_empty()), "only the author");

    // ---- expiry: a post with a short ttl is gone from the list, viewing it is
    // `Expired`, and nothing is recorded.
    a.post_status(StatusPost { ttl_ms: 1_500, ..post(4, "brief", StatusAudience::Contacts, vec![]) }).await.unwrap();
    let _ =
        eventually("carol sees 4", || listed(&c, Some(alice.user)), |s| s.as_ref().is_ok_and(|s| s.contains(&4))).await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let (code, message, _) = refused(c.view_status(alice.user, 4).await);
    assert_eq!(code, EdgeErrorCode::Expired, "{message}");
    assert!(!c.statuses(Some(alice.user)).await.unwrap().iter().any(|e| e.status_id == 4));
    let own = a.statuses(Some(alice.user)).await.unwrap();
    assert!(!own.iter().any(|e| e.status_id == 4), "gone for the author too");

    // ---- blocking: bob sees no status, no photo, no about of alice; his
    // direct messages are refused; his group messages still arrive.
    let chat = a.create_group("both", vec![bob.user]).await.unwrap();
    a.block(bob.user, true).await.unwrap();
    let _ = eventually(
        "bob sees no status of alice",
        || listed(&b, Some(alice.user)),
        |s| s.as_ref().is_ok_and(Vec::is_empty),
    )
    .await;
    let p = b.profile(alice.user).await.unwrap();
    assert_eq!((p.name.as_str(), shows(&p)), ("Alice", (false, false)), "blocked: the name only");
    assert_eq!(shows(&c.profile(alice.user).await.unwrap()), (true, true), "others still see it");
    assert_eq!(refused(b.view_status(alice.user, 1).await).0, EdgeErrorCode::UnknownRecipient);
    let (code, _, _) = refused(b.send(Recipient::User(alice.user), b"hi".to_vec()).await);
    assert_eq!(code, EdgeErrorCode::Forbidden);
    b.send(Recipient::Group(chat), b"in the group".to_vec()).await.unwrap();
    let got = messages(&mut a_events, 1, Duration::from_secs(15)).await;
    assert!(got.iter().any(|m| m.chat == chat && m.ciphertext == b"in the group" && m.sender == bob.user), "{got:?}");
    // Unblocked: bob sees the photo again.
    a.block(bob.user, false).await.unwrap();
    let _ =
        eventually("unblocked", || b.profile(alice.user), |p| p.as_ref().is_ok_and(|p| shows(p) == (true, true))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contact_sync_is_rate_limited_per_day_with_retry_after() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(StackSpec::new(dir.path(), chorus_binary()).unthrottled()).await.expect("stack");
    let eve = stack.register(0, "+15550000301").await.unwrap();
    let (e, _events) = stack.connect(0, eve).await;
    let batch = |from: u32| -> Vec<String> { (from..from + 1000).map(|i| format!("+1555200{i:04}")).collect() };
    assert_eq!(e.sync_contacts(&batch(0)).await.unwrap(), vec![]);
    assert_eq!(e.sync_contacts(&batch(1000)).await.unwrap(), vec![]);
    let (code, message, retry_after_ms) = refused(e.sync_contacts(&["+15550000301".to_string()]).await);
    assert_eq!(code, EdgeErrorCode::RateLimited, "{message}");
    assert!(message.contains("2000 of 2000"), "{message}");
    let retry = retry_after_ms.expect("retry_after_ms");
    assert!(retry > 0 && retry <= 24 * 60 * 60 * 1000, "{retry}");
}

/// Texts a code to `phone` through edge `edge` and reads it from its SMS file.
async fn code(stack: &Stack, edge: usize, phone: &str) -> String {
    let path = stack.cluster.edges[edge].sms_path();
    let len = || std::fs::metadata(&path).map_or(0, |m| m.len());
    let before = len();
    chorus_client::request_otp(&stack.client_config(&[edge]), phone).await.expect("a code is texted");
    for _ in 0..50 {
        if len() > before {
            if let Ok(c) = chorus_testkit::services::sms_code(&path, phone) {
                return c;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no code for {phone} in {}", path.display())
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

/// Polls a CLI command until its output contains `want` (views are folded a
/// moment after the log commits).
fn cli_until(stack: &Stack, profile: &std::path::Path, args: &[&str], want: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (ok, out) = cli(stack, profile, args);
        if ok && out.contains(want) {
            return out;
        }
        assert!(std::time::Instant::now() < deadline, "{args:?}: no {want:?} in {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_syncs_contacts_sets_a_profile_and_posts_lists_and_views_statuses() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(StackSpec::new(dir.path(), chorus_binary()).unthrottled()).await.expect("stack");
    let (phone, profile) = ("+15550000401", dir.path().join("cli.json"));
    let bob = stack.register(1, "+15550000402").await.unwrap();
    let (b, _b_events) = stack.connect(1, bob).await;
    let c = code(&stack, 0, phone).await;
    let (ok, out) = cli(&stack, &profile, &["register", "--phone", phone, "--code", &c]);
    assert!(ok, "{out}");
    let me = chorus_schema::edge::user_for_phone(phone).unwrap();

    let (ok, out) = cli(&stack, &profile, &["contacts", "sync", "+15550000402", "+15559999998"]);
    assert!(ok && out.contains(&format!("+15550000402 user {}", bob.user)) && out.contains("1 of 2"), "{out}");
    let (ok, out) =
        cli(&stack, &profile, &["profile", "set", "--name", "Cli", "--about", "hello", "--picture", &"ab".repeat(32)]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&stack, &profile, &["privacy", "--about", "contacts", "--photo", "nobody"]);
    assert!(ok, "{out}");
    // Bob is a contact: he sees the about text, not the photo.
    let p = eventually(
        "bob sees the CLI user's profile",
        || b.profile(me),
        |p| p.as_ref().is_ok_and(|p| p.name == "Cli" && p.about.is_some()),
    )
    .await
    .unwrap();
    assert_eq!((p.about.as_deref(), p.avatar.is_none()), (Some("hello"), true));
    let out = cli_until(&stack, &profile, &["profile", "get", "+15550000401"], "about: hello");
    assert!(out.contains(&format!("picture: {}", "ab".repeat(32))), "the owner sees their own photo: {out}");

    let (ok, out) = cli(&stack, &profile, &["status", "post", "first story", "--id", "7"]);
    assert!(ok && out.contains("status 7 posted"), "{out}");
    eventually(
        "bob sees the story",
        || b.statuses(Some(me)),
        |s| s.as_ref().is_ok_and(|s| s.iter().any(|e| e.status_id == 7 && e.ciphertext == b"first story")),
    )
    .await
    .unwrap();
    b.view_status(me, 7).await.unwrap();
    cli_until(&stack, &profile, &["status", "list"], &format!("first story (viewed by {})", bob.user));
    let (ok, out) = cli(&stack, &profile, &["status", "view", "--user", "+15550000401", "--id", "99"]);
    assert!(!ok && out.contains("UnknownRecipient"), "{out}");

    let (ok, out) = cli(&stack, &profile, &["block", "+15550000402"]);
    assert!(ok && out.contains("blocked"), "{out}");
    eventually("blocked: bob sees no story", || b.statuses(Some(me)), |s| s.as_ref().is_ok_and(Vec::is_empty))
        .await
        .unwrap();
    let (ok, out) = cli(&stack, &profile, &["unblock", "+15550000402"]);
    assert!(ok && out.contains("unblocked"), "{out}");
    eventually(
        "unblocked: bob sees the story again",
        || b.statuses(Some(me)),
        |s| s.as_ref().is_ok_and(|s| s.len() == 1),
    )
    .await
    .unwrap();
}
