//! The E2EE key directory through the edge (issue 14), every part a real
//! process: 3 log-nodes, a nats-server, a projector and 2 edges, clients on
//! the SDK over QUIC. The rules (each one-time key handed out at most once,
//! the fallback key, the id rules) are the user partition's; the claim
//! budget and the device-list check of a send are the edge's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::collections::BTreeSet;
use std::time::Duration;

use chorus_client::{Client, Error, Event, Resume};
use chorus_schema::edge::user_for_phone;
use chorus_schema::{
    device_list_digest, ClientMsgId, Command, CommandBody, DeviceId, DeviceKeys, EdgeErrorCode, EventBody, Key, Origin,
    Prekey, Recipient, UserId, MAX_KEY_BYTES, MAX_PREKEYS_PER_UPLOAD, PREKEYS_LOW_WATERMARK,
};
use chorus_testkit::cluster::chorus_binary;
use chorus_testkit::events::{messages, refused};
use chorus_testkit::stack::{Stack, StackSpec};
use tokio::sync::mpsc::Receiver;

/// Claims per user per edge: a burst of 30, then one per 100 ms.
const CLAIM_BURST: u32 = 30;

async fn stack(dir: &std::path::Path) -> Stack {
    let mut spec = StackSpec::new(dir, chorus_binary()).unthrottled();
    spec.edge.session.limits.key_claims_per_user = chorus_edge::session::Rate::new(CLAIM_BURST, 36_000);
    Stack::start(spec).await.expect("start the stack")
}

fn pk(id: u32) -> Prekey {
    Prekey { id, key: format!("otk-{id}").into_bytes() }
}

fn fallback(id: u32) -> (Prekey, Vec<u8>) {
    (Prekey { id, key: format!("fallback-{id}").into_bytes() }, format!("sig-{id}").into_bytes())
}

async fn answered<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f).await.expect("answered within 20 s")
}

/// The only device entry of a one-device user's bundle.
fn only(mut devices: Vec<DeviceKeys>) -> DeviceKeys {
    assert_eq!(devices.len(), 1, "{devices:?}");
    devices.remove(0)
}

/// Waits for a `KeysLow` event (other events are dropped).
async fn keys_low(events: &mut Receiver<Event>) -> u32 {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), events.recv()).await {
            Ok(Some(Event::KeysLow { left })) => return left,
            Ok(Some(_)) => {}
            other => panic!("no KeysLow: {other:?}"),
        }
    }
}

/// The user partition's key events of `user`, in log order.
async fn key_events(stack: &Stack, user: UserId) -> Vec<EventBody> {
    let records = stack.partition_records(&Key::User(user)).await.unwrap();
    records
        .into_iter()
        .map(|r| r.event.body)
        .filter(|b| {
            matches!(b, EventBody::DeviceKeysUploaded { user: u, .. } | EventBody::DeviceKeysClaimed { user: u, .. } if *u == user)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_are_claimed_once_fall_back_run_low_are_rate_limited_and_sends_check_the_device_list() {
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path()).await;
    let alice = stack.register(0, "+15550001401").await.unwrap();
    let bob = stack.register(1, "+15550001402").await.unwrap();
    let carol = stack.register(0, "+15550001403").await.unwrap();
    let dave = stack.register(1, "+15550001404").await.unwrap();

    // (c) At login, a device without keys hears it is low (from the view).
    let (a, mut a_events) = Client::connect_raw(stack.client_config(&[0]), alice, Resume::default()).await.unwrap();
    assert_eq!(keys_low(&mut a_events).await, 0);
    let (b, _b_events) = stack.connect(1, bob).await;
    let (c, _c_events) = stack.connect(0, carol).await;

    // Alice publishes 20 one-time keys and a signed fallback key.
    const N: u32 = 20;
    const { assert!(N >= PREKEYS_LOW_WATERMARK) };
    let left = answered(a.upload_keys((1..=N).map(pk).collect(), Some(fallback(100)))).await.unwrap();
    assert_eq!(left, N);
    let listed = only(answered(b.device_keys(alice.user)).await.unwrap());
    assert_eq!(listed.device, alice.device);
    assert!(!listed.identity_key.is_empty(), "the identity key registered with the device");
    assert_eq!((listed.one_time_key, listed.fallback_key.clone()), (None, Some(fallback(100).0)));

    // (a) Bob and Carol claim at the same time, round after round: every
    // one-time key goes to exactly one of them.
    let mut handed_out = BTreeSet::new();
    for _round in 0..N / 2 {
        let (kb, kc) = tokio::join!(answered(b.claim_keys(alice.user)), answered(c.claim_keys(alice.user)));
        for k in [only(kb.unwrap()), only(kc.unwrap())] {
            assert_eq!(k.identity_key, listed.identity_key);
            let otk = k.one_time_key.expect("a one-time key while some are left");
            assert_eq!(otk, pk(otk.id), "the key uploaded under that id");
            assert!(handed_out.insert(otk.id), "one-time key {} handed out twice", otk.id);
        }
    }
    assert_eq!(handed_out, (1..=N).collect::<BTreeSet<_>>());
    // (c) The first claim took Alice below the watermark: she is told, live.
    assert_eq!(keys_low(&mut a_events).await, N - 1);

    // (b) None left: the fallback key with its signature, not consumed.
    for _ in 0..2 {
        let k = only(answered(b.claim_keys(alice.user)).await.unwrap());
        assert_eq!(k.one_time_key, None);
        assert_eq!(k.fallback_key, Some(fallback(100).0));
        assert_eq!(k.fallback_signature, fallback(100).1);
    }
    let events = key_events(&stack, alice.user).await;
    let claimed: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            EventBody::DeviceKeysClaimed { claimed, .. } => Some(claimed.iter().map(|(_, id)| *id).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(claimed.len(), N as usize, "the log consumed each key once: {claimed:?}");
    // The count is right: one more key makes one.
    assert_eq!(answered(a.upload_keys(vec![pk(N + 1)], None)).await.unwrap(), 1);

    // (f) Bad input: clear errors, no state change.
    let before = key_events(&stack, alice.user).await.len();
    let (code, message) = refused(answered(b.claim_keys(UserId(12345))).await);
    assert_eq!(code, EdgeErrorCode::UnknownRecipient, "{message}");
    let (code, message) = refused(answered(a.upload_keys(vec![pk(N + 5), pk(N + 5)], None)).await);
    assert_eq!(code, EdgeErrorCode::BadFrame);
    assert!(message.contains("twice"), "{message}");
    let (code, message) = refused(answered(a.upload_keys(vec![pk(3)], None)).await);
    assert!(code == EdgeErrorCode::BadFrame && message.contains("not above"), "{code:?}: {message}");
    let (code, message) = refused(answered(a.upload_keys(vec![], None)).await);
    assert!(code == EdgeErrorCode::BadFrame && message.contains("no keys"), "{code:?}: {message}");
    let big = Prekey { id: N + 6, key: vec![0; MAX_KEY_BYTES + 1] };
    let (code, message) = refused(answered(a.upload_keys(vec![big], None)).await);
    assert_eq!(code, EdgeErrorCode::BadFrame, "{message}");
    let many: Vec<Prekey> = (1000..1001 + MAX_PREKEYS_PER_UPLOAD as u32).map(pk).collect();
    let (code, message) = refused(answered(a.upload_keys(many, None)).await);
    assert_eq!(code, EdgeErrorCode::BadFrame, "{message}");
    let unsigned = (Prekey { id: 7, key: vec![1] }, vec![]);
    let (code, message) = refused(answered(a.upload_keys(vec![], Some(unsigned))).await);
    assert!(code == EdgeErrorCode::BadFrame && message.contains("signature"), "{code:?}: {message}");
    // A registered user without devices (the one device unlinked).
    let nobody = user_for_phone("+15550001499").unwrap();
    let origin = Origin { user: nobody, device: DeviceId(1), client_msg_id: ClientMsgId(1) };
    let register = CommandBody::RegisterDevice {
        phone: "+15550001499".into(),
        device: DeviceId(1),
        identity_key: vec![1; 64],
        name: "gone".into(),
        token_hash: [2; 32],
        pin_hash: None,
    };
    assert!(stack.log.append(&Command { origin, body: register }).await.unwrap().is_ok());
    let origin = Origin { client_msg_id: ClientMsgId(2), ..origin };
    let unlink = Command { origin, body: CommandBody::UnlinkDevice { device: DeviceId(1) } };
    assert!(stack.log.append(&unlink).await.unwrap().is_ok());
    let (code, message) = refused(answered(b.claim_keys(nobody)).await);
    assert!(code == EdgeErrorCode::BadFrame && message.contains("no linked devices"), "{code:?}: {message}");
    assert_eq!(key_events(&stack, alice.user).await.len(), before, "refused requests changed nothing");
    assert_eq!(answered(a.upload_keys(vec![pk(N + 2)], None)).await.unwrap(), 2, "the count did not move");

    // (d) Dave claims in a loop: past the budget, RateLimited with when to
    // retry; after that long, a claim goes through.
    let (d, _d_events) = stack.connect(1, dave).await;
    let tries = (0..CLAIM_BURST + 20).map(|_| answered(d.claim_keys(bob.user)));
    let results = futures::future::join_all(tries).await;
    let retry_after = results
        .iter()
        .find_map(|r| match r {
            Err(Error::Refused { code: EdgeErrorCode::RateLimited, retry_after_ms, .. }) => Some(*retry_after_ms),
            _ => None,
        })
        .expect("some claims are refused")
        .expect("a refusal says when to retry");
    assert!(retry_after > 0 && retry_after <= 100, "{retry_after} ms");
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(ok >= CLAIM_BURST as usize && ok < results.len(), "{ok} of {} went through", results.len());
    tokio::time::sleep(Duration::from_millis(retry_after)).await;
    answered(d.claim_keys(bob.user)).await.expect("allowed again after retry_after_ms");

    // (e) Bob sends to Alice for her one device: accepted.
    let to = Recipient::User(alice.user);
    let one = device_list_digest(&[(alice.user, alice.device)]);
    answered(b.send_with_digest(to, ClientMsgId(1), b"hi".to_vec(), None, Some(one))).await.unwrap();
    // Alice links a second device: the same digest is stale now.
    let pairing = chorus_client::pair_request(&stack.client_config(&[1]), "laptop", vec![9; 64]).await.unwrap();
    let code = pairing.code().to_owned();
    let waiting = tokio::spawn(pairing.wait());
    answered(a.link_device(&code)).await.expect("linked");
    let laptop = waiting.await.unwrap().expect("the new device's credentials");
    let (_l1, mut l_events) = stack.connect(1, laptop).await;
    let stale = answered(b.send_with_digest(to, ClientMsgId(2), b"secret".to_vec(), None, Some(one))).await;
    let mut current = vec![(alice.user, alice.device), (alice.user, laptop.device)];
    current.sort();
    match stale {
        Err(Error::StaleDevices(devices)) => assert_eq!(devices, current),
        other => panic!("expected StaleDevices, got {other:?}"),
    }
    // Nothing was appended: the direct chat holds only the first message.
    let chat = chorus_schema::ChatId::direct(alice.user, bob.user);
    let sent: Vec<u64> = stack
        .partition_records(&Key::Chat(chat))
        .await
        .unwrap()
        .into_iter()
        .filter(|r| matches!(r.event.body, EventBody::MessageSent { chat: c, .. } if c == chat))
        .map(|r| r.event.origin.client_msg_id.0)
        .collect();
    assert_eq!(sent, vec![1]);
    // The same id with the right digest goes through, once.
    let both = device_list_digest(&current);
    let s = answered(b.send_with_digest(to, ClientMsgId(2), b"secret".to_vec(), None, Some(both))).await.unwrap();
    assert_eq!(s.client_msg_id, ClientMsgId(2));
    let got = messages(&mut l_events, 1, Duration::from_secs(20)).await;
    assert_eq!((got[0].client_msg_id, got[0].ciphertext.as_slice()), (ClientMsgId(2), b"secret".as_slice()));
    let got: Vec<u64> =
        messages(&mut a_events, 2, Duration::from_secs(20)).await.iter().map(|m| m.client_msg_id.0).collect();
    assert_eq!(got, vec![1, 2], "Alice's phone got each message once, the refused one only after its resend");
    // An unknown recipient is refused as without a digest.
    let nobody_to = Recipient::User(UserId(4242));
    let r = answered(b.send_with_digest(nobody_to, ClientMsgId(4), b"?".to_vec(), None, Some(one))).await;
    assert_eq!(refused(r).0, EdgeErrorCode::UnknownRecipient);
    // Sends without a digest are not checked (load generators, raw clients).
    answered(b.send_with_id(to, ClientMsgId(3), b"raw".to_vec())).await.unwrap();

    // A group: every device of every member but the sending one.
    let group = answered(b.create_group("keys", vec![alice.user, carol.user])).await.unwrap();
    let mut members = vec![(alice.user, alice.device), (alice.user, laptop.device), (carol.user, carol.device)];
    members.sort();
    let to = Recipient::Group(group);
    let without_laptop = device_list_digest(&[(alice.user, alice.device), (carol.user, carol.device)]);
    match answered(b.send_with_digest(to, ClientMsgId(10), b"g".to_vec(), None, Some(without_laptop))).await {
        Err(Error::StaleDevices(devices)) => assert_eq!(devices, members),
        other => panic!("expected StaleDevices, got {other:?}"),
    }
    let s = answered(b.send_with_digest(to, ClientMsgId(10), b"g".to_vec(), None, Some(device_list_digest(&members))))
        .await
        .unwrap();
    assert_eq!(s.chat, group);
    // Alice's laptop sends: Alice's phone is on its list, the laptop is not.
    let mut from_laptop = vec![(alice.user, alice.device), (bob.user, bob.device), (carol.user, carol.device)];
    from_laptop.sort();
    let (l, _) = stack.connect(0, laptop).await;
    let digest = device_list_digest(&from_laptop);
    answered(l.send_with_digest(to, ClientMsgId(11), b"g2".to_vec(), None, Some(digest))).await.unwrap();
}
