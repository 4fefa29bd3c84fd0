//! End-to-end encryption through a whole stack, every part a real process
//! (3 log-nodes, a nats-server, a projector and 2 edges), clients on the SDK
//! with their crypto stores on disk: what the server relays and stores is
//! ciphertext only, and the keys go where the rosters say.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use chorus_client::e2ee::{prepare, CryptoStore};
use chorus_client::{Client, Credentials, Event, Message, Resume};
use chorus_schema::{ChatId, EventBody, GroupOp, Key, Recipient, Seq};
use chorus_testkit::cluster::chorus_binary;
use chorus_testkit::services::sms_code;
use chorus_testkit::stack::{Stack, StackSpec};
use tokio::sync::mpsc::Receiver;

/// One deployment at a time: each is 7 processes on 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn stack(dir: &Path) -> Stack {
    Stack::start(StackSpec::new(dir.join("stack"), chorus_binary()).unthrottled()).await.expect("start the stack")
}

/// A device: its credentials and its crypto store (outside the stack's
/// data directories).
struct Dev {
    creds: Credentials,
    store: CryptoStore,
}

fn new_store(dir: &Path, name: &str) -> CryptoStore {
    CryptoStore::new(dir.join("clients").join(name), rand::random())
}

/// Registers `phone` at `edge` with the identity key of a new crypto store.
async fn register(stack: &Stack, dir: &Path, edge: usize, phone: &str) -> Dev {
    let store = new_store(dir, phone);
    let identity = prepare(&store).unwrap();
    assert_eq!(identity.len(), 64);
    let config = stack.client_config(&[edge]);
    chorus_client::request_otp(&config, phone).await.unwrap();
    let sms = stack.cluster.edges[edge].sms_path();
    let code = loop {
        if let Ok(code) = sms_code(&sms, phone) {
            break code;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let creds = chorus_client::verify_otp(&config, phone, &code, "test", identity).await.unwrap();
    Dev { creds, store }
}

async fn connect(stack: &Stack, edge: usize, d: &Dev, resume: Resume) -> (Client, Receiver<Event>) {
    let (c, mut events) =
        Client::connect(stack.client_config(&[edge]), d.creds, resume, d.store.clone()).await.unwrap();
    assert!(c.is_e2ee());
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Some(Event::Synced { .. })) => break,
            Ok(Some(Event::Undecryptable { reason, .. })) => panic!("undecryptable during sync: {reason}"),
            Ok(Some(_)) => {}
            other => panic!("no sync: {other:?}"),
        }
    }
    (c, events)
}

/// The next `n` messages from other devices (this device's own echoes
/// skipped); an undecryptable one fails the test.
async fn receive(events: &mut Receiver<Event>, me: &Credentials, n: usize) -> Vec<Message> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Some(Event::Message(m))) if m.sender == me.user && m.sender_device == me.device => {}
            Ok(Some(Event::Message(m))) => out.push(m),
            Ok(Some(Event::Undecryptable { reason, sender, sender_device, .. })) => {
                panic!("undecryptable from {sender}/{sender_device}: {reason}")
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("client stopped"),
            Err(_) => panic!("only {} of {n} messages arrived", out.len()),
        }
    }
    out
}

fn text(m: &Message) -> String {
    String::from_utf8(m.ciphertext.clone()).unwrap()
}

/// A distinctive plaintext: 48 random hex digits after a tag.
fn secret(tag: &str) -> String {
    format!("{tag}-{}", hex::encode(rand::random::<[u8; 24]>()))
}

/// Runs `chorus client` with `profile` at edge 0.
fn cli(stack: &Stack, profile: &Path, args: &[&str]) -> (bool, String) {
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

/// Every file under `root`.
fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out
}

/// The files under `root` that hold any of `needles`, with the needle.
fn holders(root: &Path, needles: &[String]) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for f in files(root) {
        let Ok(bytes) = std::fs::read(&f) else { continue };
        for n in needles {
            if bytes.windows(n.len()).any(|w| w == n.as_bytes()) {
                out.push((f.clone(), n.clone()));
            }
        }
    }
    out
}

/// The ciphertexts of `chat`'s messages in the log, by seq.
async fn logged_ciphertexts(stack: &Stack, chat: ChatId) -> Vec<(Seq, Vec<u8>)> {
    let records = stack.partition_records(&Key::Chat(chat)).await.unwrap();
    records
        .into_iter()
        .filter_map(|r| match r.event.body {
            EventBody::MessageSent { chat: c, seq, ciphertext, .. } if c == chat => Some((seq, ciphertext)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn direct_chat_both_ways_a_new_device_a_restart_and_no_plaintext_on_the_servers_disks() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path()).await;
    let alice = register(&stack, dir.path(), 0, "+15550001201").await;
    let bob = register(&stack, dir.path(), 1, "+15550001202").await;
    let (a, mut a_events) = connect(&stack, 0, &alice, Resume::default()).await;
    let (b, mut b_events) = connect(&stack, 1, &bob, Resume::default()).await;
    let mut secrets = Vec::new();

    // Both ways.
    let s1 = secret("alice-to-bob");
    let sent = a.send(Recipient::User(bob.creds.user), s1.clone().into_bytes()).await.unwrap();
    let got = receive(&mut b_events, &bob.creds, 1).await;
    assert_eq!((text(&got[0]), got[0].seq, got[0].sender), (s1.clone(), sent.seq, alice.creds.user));
    let s2 = secret("bob-to-alice");
    b.send(Recipient::User(alice.creds.user), s2.clone().into_bytes()).await.unwrap();
    assert_eq!(text(&receive(&mut a_events, &alice.creds, 1).await[0]), s2);
    secrets.extend([s1.clone(), s2.clone()]);
    // What the log holds is an envelope, not the text.
    let chat = ChatId::direct(alice.creds.user, bob.creds.user);
    let logged = logged_ciphertexts(&stack, chat).await;
    assert_eq!(logged.len(), 2);
    for (_, c) in &logged {
        let env = chorus_client::e2ee::envelope::Envelope::decode(c).expect("an envelope");
        assert_eq!(env.slots.len(), 1, "one Olm message, for Bob's one device");
        assert!(!c.windows(s1.len()).any(|w| w == s1.as_bytes()));
    }

    // Bob links a new device; Alice's next message is caught by the digest
    // check (her list has one device of Bob) and re-encrypted for both.
    let bob2_store = new_store(dir.path(), "bob2");
    let pairing =
        chorus_client::pair_request(&stack.client_config(&[0]), "laptop", prepare(&bob2_store).unwrap()).await.unwrap();
    let code = pairing.code().to_owned();
    let waiting = tokio::spawn(pairing.wait());
    b.link_device(&code).await.unwrap();
    let bob2 = Dev { creds: waiting.await.unwrap().unwrap(), store: bob2_store };
    let (b2, mut b2_events) = connect(&stack, 0, &bob2, Resume::default()).await;
    let s3 = secret("to-both-of-bobs-devices");
    let sent3 = a.send(Recipient::User(bob.creds.user), s3.clone().into_bytes()).await.unwrap();
    let on_b = receive(&mut b_events, &bob.creds, 1).await;
    let on_b2 = receive(&mut b2_events, &bob2.creds, 1).await;
    assert_eq!((text(&on_b[0]), on_b[0].seq), (s3.clone(), sent3.seq));
    assert_eq!((text(&on_b2[0]), on_b2[0].seq), (s3.clone(), sent3.seq));
    // Bob's new device reads what Bob's phone sends too.
    let s4 = secret("bob-phone-to-alice");
    b.send(Recipient::User(alice.creds.user), s4.clone().into_bytes()).await.unwrap();
    assert_eq!(text(&receive(&mut a_events, &alice.creds, 1).await[0]), s4);
    assert_eq!(text(&receive(&mut b2_events, &bob2.creds, 1).await[0]), s4);
    secrets.extend([s3, s4]);

    // Alice restarts from her store (and her positions): she still decrypts,
    // and still encrypts on the sessions she had.
    let positions = Resume { positions: a.positions() };
    a.close();
    drop(a);
    drop(a_events);
    let (a, mut a_events) = connect(&stack, 1, &alice, positions).await;
    let s5 = secret("after-alice-restart");
    b2.send(Recipient::User(alice.creds.user), s5.clone().into_bytes()).await.unwrap();
    assert_eq!(text(&receive(&mut a_events, &alice.creds, 1).await[0]), s5);
    // Bob's phone reads what his laptop sends (the sender's other devices).
    assert_eq!(text(&receive(&mut b_events, &bob.creds, 1).await[0]), s5);
    let s6 = secret("alice-after-restart");
    a.send(Recipient::User(bob.creds.user), s6.clone().into_bytes()).await.unwrap();
    assert_eq!(text(&receive(&mut b_events, &bob.creds, 1).await[0]), s6);
    assert_eq!(text(&receive(&mut b2_events, &bob2.creds, 1).await[0]), s6);
    secrets.extend([s5, s6]);

    // The CLI: registers with a crypto store next to its profile, sends,
    // listens (plaintext printed), and prints the same safety number as
    // the SDK.
    let profile = dir.path().join("clients").join("cli.json");
    let phone = "+15550001203";
    let (ok, out) = cli(&stack, &profile, &["register", "--phone", phone]);
    assert!(ok, "{out}");
    let code = sms_code(&stack.cluster.edges[0].sms_path(), phone).unwrap();
    let (ok, out) = cli(&stack, &profile, &["register", "--phone", phone, "--code", &code]);
    assert!(ok, "{out}");
    assert!(profile.with_extension("e2ee").join("crypto.json").exists(), "the crypto store next to the profile");
    let s7 = secret("cli-to-alice");
    let (ok, out) = cli(&stack, &profile, &["send", "--to", "+15550001201", &s7]);
    assert!(ok, "{out}");
    assert_eq!(text(&receive(&mut a_events, &alice.creds, 1).await[0]), s7);
    let s8 = secret("alice-to-cli");
    let cli_user = chorus_schema::edge::user_for_phone(phone).unwrap();
    a.send(Recipient::User(cli_user), s8.clone().into_bytes()).await.unwrap();
    let (ok, out) = cli(&stack, &profile, &["listen", "--count", "1", "--idle-ms", "20000"]);
    assert!(ok && out.contains(&s8), "{out}");
    let (ok, out) = cli(&stack, &profile, &["verify", "+15550001201"]);
    assert!(ok, "{out}");
    let number = a.safety_number(cli_user).await.unwrap();
    assert_eq!(number.len(), 71, "{number}");
    assert!(out.contains(&number), "the CLI's safety number {out} is the SDK's {number}");
    secrets.extend([s7, s8.clone()]);

    // A raw send (no E2EE) is the scan's control: it must be found.
    let raw = secret("raw-control");
    a.send_raw(Recipient::User(bob.creds.user), raw.clone().into_bytes()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match b_events.recv().await {
                Some(Event::Undecryptable { reason, .. }) => return reason,
                Some(_) => {}
                None => panic!("client stopped"),
            }
        }
    })
    .await
    .expect("the raw message comes as undecryptable");
    assert!(got.contains("malformed"), "{got}");

    for c in [&a, &b, &b2] {
        c.close();
    }
    // Let the log-nodes and the projector write everything down.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let data = dir.path().join("stack");
    let found = holders(&data, std::slice::from_ref(&raw));
    assert!(!found.is_empty(), "the control plaintext is somewhere under {}", data.display());
    let leaks = holders(&data, &secrets);
    assert!(leaks.is_empty(), "plaintext on the servers' disks: {leaks:?}");
    assert!(files(&data).len() > 10, "the scan saw the data directories");

    // A report may reveal what the reporter decrypted (after the scan: this
    // is plaintext the reporter chose to give): the CLI attaches what its
    // `listen` kept, since a direct message cannot be decrypted twice.
    let (ok, out) = cli(&stack, &profile, &["report", "+15550001201", "--reason", "test", "--attach", "3"]);
    assert!(ok && out.contains("1 messages attached"), "{out}");
    let records = stack.partition_records(&Key::User(alice.creds.user)).await.unwrap();
    let reported: Vec<_> = records
        .into_iter()
        .filter_map(|r| match r.event.body {
            EventBody::ReportFiled { messages, .. } => Some(messages),
            _ => None,
        })
        .collect();
    assert_eq!(reported.len(), 1);
    assert_eq!(reported[0].iter().map(|m| m.text.clone()).collect::<Vec<_>>(), vec![s8.into_bytes()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_of_five_and_a_removed_member_cannot_decrypt_what_follows() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path()).await;
    let mut devs = Vec::new();
    for i in 0..5 {
        devs.push(register(&stack, dir.path(), i % 2, &format!("+155500013{i:02}")).await);
    }
    let mut clients = Vec::new();
    for (i, d) in devs.iter().enumerate() {
        clients.push(connect(&stack, i % 2, d, Resume::default()).await);
    }
    let others: Vec<_> = devs[1..].iter().map(|d| d.creds.user).collect();
    let chat = clients[0].0.create_group("five", others).await.unwrap();
    let mut secrets = Vec::new();

    // Everyone writes once; everyone reads the four others.
    for (i, (c, _)) in clients.iter().enumerate() {
        let s = secret(&format!("group-from-{i}"));
        c.send(Recipient::Group(chat), s.clone().into_bytes()).await.unwrap();
        secrets.push(s);
    }
    for (i, (_, events)) in clients.iter_mut().enumerate() {
        let got = receive(events, &devs[i].creds, 4).await;
        let mut texts: Vec<String> = got.iter().map(text).collect();
        texts.sort();
        let mut want: Vec<String> =
            secrets.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, s)| s.clone()).collect();
        want.sort();
        assert_eq!(texts, want, "member {i}");
    }

    // A member whose device never published keys (a raw client) does not
    // stop the others from getting a message; it gets only ciphertext.
    let raw_member = stack.register(0, "+15550001399").await.unwrap();
    let (raw_client, mut raw_events) = stack.connect(0, raw_member).await;
    clients[0].0.group(chat, GroupOp::Add { member: raw_member.user }).await.unwrap();
    let with_raw = secret("with-a-keyless-member");
    let sent_raw = clients[0].0.send(Recipient::Group(chat), with_raw.clone().into_bytes()).await.unwrap();
    for i in 1..5 {
        assert_eq!(text(&receive(&mut clients[i].1, &devs[i].creds, 1).await[0]), with_raw, "member {i}");
    }
    let got = loop {
        match tokio::time::timeout(Duration::from_secs(30), raw_events.recv()).await.unwrap().unwrap() {
            Event::Message(m) if m.seq == sent_raw.seq => break m,
            _ => {}
        }
    };
    assert!(!got.ciphertext.windows(with_raw.len()).any(|w| w == with_raw.as_bytes()));
    raw_client.close();
    clients[0].0.group(chat, GroupOp::Remove { member: raw_member.user }).await.unwrap();
    secrets.push(with_raw);

    // Carol (member 2) is removed; Alice's next message is not for her.
    let carol = 2;
    clients[0].0.group(chat, GroupOp::Remove { member: devs[carol].creds.user }).await.unwrap();
    let after = secret("after-the-removal");
    let sent = clients[0].0.send(Recipient::Group(chat), after.clone().into_bytes()).await.unwrap();
    for i in [1, 3, 4] {
        let got = receive(&mut clients[i].1, &devs[i].creds, 1).await;
        assert_eq!((text(&got[0]), got[0].seq), (after.clone(), sent.seq), "member {i}");
    }
    // The server does not give it to Carol ...
    let carol_events = &mut clients[carol].1;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(2), carol_events.recv()).await {
        if let Event::Message(m) = &ev {
            assert!(m.seq < sent.seq, "the removed member got {m:?}");
        }
        assert!(!matches!(ev, Event::Undecryptable { seq, .. } if seq >= sent.seq));
    }
    // ... and even given the ciphertext (from the log, as another member's
    // raw stream carries it) her keys cannot open it: the session rotated.
    for (c, _) in &clients {
        c.close();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let logged = logged_ciphertexts(&stack, chat).await;
    let alice_addr = (devs[0].creds.user, devs[0].creds.device);
    // The chat's first message is Alice's (each send waited for its commit).
    let before = &logged[0].1;
    let (_, after_ct) = logged.iter().find(|(s, _)| *s == sent.seq).unwrap();
    let mut carol_keys = devs[carol].store.load().unwrap().unwrap();
    // Control: her keys open Alice's message from before the removal.
    assert_eq!(carol_keys.decrypt(chat, alice_addr, before).unwrap().body, secrets[0].as_bytes());
    let refused = carol_keys.decrypt(chat, alice_addr, after_ct);
    assert!(
        matches!(refused, Err(chorus_client::e2ee::CryptoError::UnknownGroupSession(_))),
        "the removed member opened a later message: {refused:?}"
    );
    // Control: a remaining member's keys (from her store) open it.
    let mut bob_keys = devs[1].store.load().unwrap().unwrap();
    assert_eq!(bob_keys.decrypt(chat, alice_addr, after_ct).unwrap().body, after.as_bytes());

    secrets.push(after);
    let leaks = holders(&dir.path().join("stack"), &secrets);
    assert!(leaks.is_empty(), "plaintext on the servers' disks: {leaks:?}");
}

/// The privacy check over everything the servers keep or send: direct
/// and group messages, an attachment (its bytes in the object store) and the
/// pushes for a user who is offline. None of it holds a plaintext: every
/// RocksDB file, Raft log segment and object-store file under the stack's
/// directories, and every push body, is scanned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_plaintext_in_any_file_object_or_push() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (pushes, url) = chorus_testkit::webhook::Receiver::start().await;
    // Both edges share one object store (a directory here; S3 in a cluster).
    let mut spec = StackSpec::new(dir.path().join("stack"), chorus_binary()).unthrottled();
    spec.edge.media.dir = dir.path().join("stack").join("media");
    let mut stack = Stack::start(spec).await.expect("start the stack");
    let secret_file = dir.path().join("push.secret");
    std::fs::write(&secret_file, b"push-secret-of-at-least-thirty-two-bytes").unwrap();
    stack
        .projector()
        .unwrap()
        .reconfigure(
            |c| {
                c.push = Some(chorus_projections::push::PushConfig {
                    url,
                    secret_file,
                    window_ms: 500,
                    ..Default::default()
                });
            },
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let alice = register(&stack, dir.path(), 0, "+15550001501").await;
    let bob = register(&stack, dir.path(), 1, "+15550001502").await;
    let carol = register(&stack, dir.path(), 0, "+15550001503").await;
    let (a, _a_events) = connect(&stack, 0, &alice, Resume::default()).await;
    let (b, mut b_events) = connect(&stack, 1, &bob, Resume::default()).await;
    // Carol registers a push token (her keys are uploaded at this first
    // connection), then goes offline.
    let (c, c_events) = connect(&stack, 0, &carol, Resume::default()).await;
    c.register_push("carols-phone", "fcm").await.unwrap();
    c.close();
    drop((c, c_events));
    stack.wait_offline(carol.creds.user).await.unwrap();
    let mut secrets = Vec::new();

    // Direct messages: to Bob (online) and to Carol (offline: pushed).
    let s1 = secret("direct-to-bob");
    a.send(Recipient::User(bob.creds.user), s1.clone().into_bytes()).await.unwrap();
    assert_eq!(text(&receive(&mut b_events, &bob.creds, 1).await[0]), s1);
    let s2 = secret("direct-to-carol");
    a.send(Recipient::User(carol.creds.user), s2.clone().into_bytes()).await.unwrap();
    // A group of the three.
    let chat = a.create_group("three", vec![bob.creds.user, carol.creds.user]).await.unwrap();
    let s3 = secret("group-message");
    a.send(Recipient::Group(chat), s3.clone().into_bytes()).await.unwrap();
    assert_eq!(text(&receive(&mut b_events, &bob.creds, 1).await[0]), s3);
    // An attachment: the file's own plaintext must not reach the store.
    let s4 = secret("inside-the-file");
    let file = s4.repeat(4096).into_bytes();
    let (attachment, _) = a.upload_file(&file, "notes.txt").await.unwrap();
    let content = chorus_client::content::Content { text: secret("caption"), attachment: Some(attachment.clone()) };
    a.send_with_media(Recipient::User(bob.creds.user), content.encode(), attachment.media_ref()).await.unwrap();
    let got = receive(&mut b_events, &bob.creds, 1).await;
    let received = chorus_client::content::Content::decode(&got[0].ciphertext);
    assert_eq!(received.text, content.text);
    let on_bob = received.attachment.expect("the attachment's key and hash travel inside the message");
    assert_eq!(b.download_file(&on_bob).await.unwrap(), file, "Bob downloads and decrypts the file");
    secrets.extend([s1, s2.clone(), s3.clone(), s4, content.text.clone()]);

    // Carol's pushes: one for the direct chat, one for the group.
    let direct = pushes.wait_for(carol.creds.user, ChatId::direct(alice.creds.user, carol.creds.user), 1).await;
    let group = pushes.wait_for(carol.creds.user, chat, 1).await;
    assert_eq!((direct.len(), group.len()), (1, 1), "one push per chat for offline Carol");
    assert!(pushes.for_user(bob.creds.user).is_empty(), "Bob is online: no push");

    // A raw send is the scan's control: it must be found.
    let raw = secret("raw-control");
    a.send_raw(Recipient::User(bob.creds.user), raw.clone().into_bytes()).await.unwrap();
    a.close();
    b.close();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let data = dir.path().join("stack");
    assert!(!holders(&data, std::slice::from_ref(&raw)).is_empty(), "the control plaintext is found");
    let objects: Vec<_> =
        files(&data).into_iter().filter(|f| f.components().any(|c| c.as_os_str() == "media")).collect();
    assert!(!objects.is_empty(), "the scan saw the object store");
    let leaks = holders(&data, &secrets);
    assert!(leaks.is_empty(), "plaintext on the servers' disks: {leaks:?}");
    for g in pushes.got.lock().unwrap().iter() {
        for s in &secrets {
            assert!(!g.body.windows(s.len()).any(|w| w == s.as_bytes()), "a push body holds a plaintext");
        }
    }
}
