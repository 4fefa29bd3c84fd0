//! The E2EE state machine in process (no network): devices exchange
//! envelopes through plain function calls; the key directory is a list of
//! each device's uploaded keys, handed out once each as the server does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use chorus_client::e2ee::envelope::Envelope;
use chorus_client::e2ee::{Address, Crypto, CryptoError, CryptoStore, PeerKeys};
use chorus_schema::{ChatId, DeviceId, UserId};
use proptest::prelude::*;

struct Dev {
    c: Crypto,
    otks: Vec<Vec<u8>>,
    fallback: Option<(Vec<u8>, Vec<u8>)>,
}

fn addr(u: u64, d: u32) -> Address {
    (UserId(u), DeviceId(d))
}

fn dev(u: u64, d: u32) -> Dev {
    let mut c = Crypto::new();
    c.set_address(addr(u, d));
    let up = c.keys_to_upload(None);
    assert_eq!(up.one_time.len(), 50);
    let ids: Vec<u32> = up.one_time.iter().map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids strictly increase");
    let (_, fb, sig) = up.fallback.expect("a first upload has a fallback key");
    Dev { c, otks: up.one_time.into_iter().map(|(_, k)| k).collect(), fallback: Some((fb, sig)) }
}

impl Dev {
    fn me(&self) -> Address {
        self.c.address().unwrap()
    }
    /// What `ClaimKeys` hands out for this device.
    fn claim(&mut self) -> PeerKeys {
        let otk = self.otks.pop();
        PeerKeys {
            address: self.me(),
            identity_key: self.c.identity_key().to_bytes().to_vec(),
            fallback_key: otk.is_none().then(|| self.fallback.clone().unwrap().0),
            fallback_signature: otk.is_none().then(|| self.fallback.clone().unwrap().1),
            one_time_key: otk,
        }
    }
}

/// `a` claims `b`'s keys and opens a session; `b` learns `a`'s identity.
fn meet(a: &mut Dev, b: &mut Dev) {
    let keys = b.claim();
    a.c.add_peer(&keys).unwrap();
    b.c.learn(a.me(), &a.c.identity_key().to_bytes()).unwrap();
}

fn chat(n: u8) -> ChatId {
    ChatId([n; 16])
}

#[test]
fn two_devices_chat_both_ways_the_first_message_a_pre_key_message() {
    let (mut a, mut b) = (dev(1, 1), dev(2, 1));
    meet(&mut a, &mut b);
    let env = a.c.encrypt_direct(chat(1), &[b.me()], b"hello bob").unwrap();
    let parsed = Envelope::decode(&env).unwrap();
    assert_eq!(parsed.slots.len(), 1);
    assert_eq!(parsed.slots[0].olm_type, 0, "the first message is a pre-key message");
    assert!(!env.windows(9).any(|w| w == b"hello bob"), "no plaintext in the envelope");
    let got = b.c.decrypt(chat(1), a.me(), &env).unwrap();
    assert_eq!(got.body, b"hello bob");
    assert!(got.new_session);
    // Bob answers on the session Alice started: no claim needed.
    assert!(b.c.has_session(a.me()));
    let reply = b.c.encrypt_direct(chat(1), &[a.me()], b"hi alice").unwrap();
    assert_eq!(Envelope::decode(&reply).unwrap().slots[0].olm_type, 1);
    assert_eq!(a.c.decrypt(chat(1), b.me(), &reply).unwrap().body, b"hi alice");
    // Once Bob answered, Alice's messages are normal messages.
    let next = a.c.encrypt_direct(chat(1), &[b.me()], b"again").unwrap();
    assert_eq!(Envelope::decode(&next).unwrap().slots[0].olm_type, 1);
    assert_eq!(b.c.decrypt(chat(1), a.me(), &next).unwrap().body, b"again");
}

#[test]
fn the_senders_other_device_reads_it_too_and_a_third_party_cannot() {
    let (mut a1, mut a2, mut b, mut eve) = (dev(1, 1), dev(1, 2), dev(2, 1), dev(3, 1));
    meet(&mut a1, &mut b);
    meet(&mut a1, &mut a2);
    eve.c.learn(a1.me(), &a1.c.identity_key().to_bytes()).unwrap();
    let env = a1.c.encrypt_direct(chat(1), &[b.me(), a2.me()], b"to both").unwrap();
    assert_eq!(b.c.decrypt(chat(1), a1.me(), &env).unwrap().body, b"to both");
    assert_eq!(a2.c.decrypt(chat(1), a1.me(), &env).unwrap().body, b"to both");
    assert_eq!(eve.c.decrypt(chat(1), a1.me(), &env), Err(CryptoError::NotForThisDevice));
}

#[test]
fn bad_input_is_refused() {
    let (mut a, mut b, mut c) = (dev(1, 1), dev(2, 1), dev(3, 1));
    meet(&mut a, &mut b);
    let env = a.c.encrypt_direct(chat(1), &[b.me()], b"x").unwrap();
    // Another chat: the chat is inside the ciphertext.
    let mut b2 = dev(2, 1);
    std::mem::swap(&mut b, &mut b2);
    b2.c.learn(c.me(), &c.c.identity_key().to_bytes()).unwrap();
    assert_eq!(b2.c.decrypt(chat(2), a.me(), &env), Err(CryptoError::WrongChat));
    // Claimed to come from another device: its identity key does not match.
    assert_eq!(b2.c.decrypt(chat(1), c.me(), &env), Err(CryptoError::IdentityMismatch(c.me())));
    // From a device whose key is unknown.
    assert_eq!(b2.c.decrypt(chat(1), addr(9, 9), &env), Err(CryptoError::UnknownDevice(addr(9, 9))));
    // Garbage.
    assert!(matches!(b2.c.decrypt(chat(1), a.me(), b"junk"), Err(CryptoError::Malformed(_))));
    // No session: nothing is encrypted for anyone.
    assert_eq!(a.c.encrypt_direct(chat(1), &[c.me()], b"x"), Err(CryptoError::NoSession(c.me())));
    let _ = &mut c;
}

#[test]
fn the_fallback_key_is_used_when_one_time_keys_run_out_and_is_then_rotated() {
    let (mut a, mut b) = (dev(1, 1), dev(2, 1));
    b.otks.clear();
    // A forged signature is refused.
    let mut forged = b.claim();
    forged.fallback_signature.as_mut().unwrap()[0] ^= 1;
    assert_eq!(a.c.add_peer(&forged), Err(CryptoError::BadSignature(b.me())));
    let mut no_sig = b.claim();
    no_sig.fallback_signature = None;
    assert_eq!(a.c.add_peer(&no_sig), Err(CryptoError::BadSignature(b.me())));
    meet(&mut a, &mut b);
    let env = a.c.encrypt_direct(chat(1), &[b.me()], b"via fallback").unwrap();
    let got = b.c.decrypt(chat(1), a.me(), &env).unwrap();
    assert_eq!(got.body, b"via fallback");
    assert!(got.fallback_used);
    let up = b.c.keys_to_upload(Some(50));
    assert!(up.one_time.is_empty());
    let (_, new_fb, _) = up.fallback.expect("a used fallback key is replaced");
    assert_ne!(Some(new_fb), b.fallback.as_ref().map(|f| f.0.clone()));
    // Another sender that claimed the old fallback key before the rotation
    // still gets through (the previous fallback key is kept).
    let mut c = dev(3, 1);
    let old = PeerKeys {
        address: b.me(),
        identity_key: b.c.identity_key().to_bytes().to_vec(),
        one_time_key: None,
        fallback_key: Some(b.fallback.clone().unwrap().0),
        fallback_signature: Some(b.fallback.clone().unwrap().1),
    };
    c.c.add_peer(&old).unwrap();
    b.c.learn(c.me(), &c.c.identity_key().to_bytes()).unwrap();
    let env = c.c.encrypt_direct(chat(3), &[b.me()], b"late").unwrap();
    assert_eq!(b.c.decrypt(chat(3), c.me(), &env).unwrap().body, b"late");
}

fn group(n: usize) -> Vec<Dev> {
    let mut devs: Vec<Dev> = (1..=n as u64).map(|u| dev(u, 1)).collect();
    for i in 0..n {
        for j in 0..n {
            if i != j && !devs[i].c.has_session(devs[j].me()) {
                let (x, y) = if i < j {
                    let (l, r) = devs.split_at_mut(j);
                    (&mut l[i], &mut r[0])
                } else {
                    let (l, r) = devs.split_at_mut(i);
                    (&mut r[0], &mut l[j])
                };
                meet(x, y);
            }
        }
    }
    devs
}

fn others(devs: &[Dev], me: usize, members: &[usize]) -> Vec<Address> {
    members.iter().filter(|&&i| i != me).map(|&i| devs[i].me()).collect()
}

#[test]
fn a_group_of_three_out_of_order_and_shares_only_once() {
    let mut g = group(3);
    let to = others(&g, 0, &[0, 1, 2]);
    let mut envs = Vec::new();
    for i in 0..5 {
        let (env, shares) = g[0].c.encrypt_group(chat(7), &to, format!("m{i}").as_bytes()).unwrap();
        assert_eq!(Envelope::decode(&env).unwrap().slots.len(), if i == 0 { 2 } else { 0 }, "message {i}");
        g[0].c.confirm_shared(&shares);
        envs.push(env);
    }
    // Member 1 reads them in order, member 2 backwards (the share is in the first).
    let from = g[0].me();
    for (i, e) in envs.iter().enumerate() {
        assert_eq!(g[1].c.decrypt(chat(7), from, e).unwrap().body, format!("m{i}").as_bytes());
    }
    assert!(matches!(g[2].c.decrypt(chat(7), from, &envs[4]), Err(CryptoError::UnknownGroupSession(_))));
    g[2].c.decrypt(chat(7), from, &envs[0]).unwrap();
    for i in (0..5).rev() {
        assert_eq!(g[2].c.decrypt(chat(7), from, &envs[i]).unwrap().body, format!("m{i}").as_bytes());
    }
    // The sender's device reads its own group messages (they come back to it).
    assert_eq!(g[0].c.decrypt(chat(7), from, &envs[3]).unwrap().body, b"m3");
    // And the others answer, each with their own session.
    let to1 = others(&g, 1, &[0, 1, 2]);
    let (env, _) = g[1].c.encrypt_group(chat(7), &to1, b"from 1").unwrap();
    let from1 = g[1].me();
    assert_eq!(g[0].c.decrypt(chat(7), from1, &env).unwrap().body, b"from 1");
    assert_eq!(g[2].c.decrypt(chat(7), from1, &env).unwrap().body, b"from 1");
    // Replayed into another chat: refused.
    assert!(g[2].c.decrypt(chat(8), from1, &env).is_err());
}

#[test]
fn an_unconfirmed_share_is_sent_again() {
    let mut g = group(2);
    let to = others(&g, 0, &[0, 1]);
    let (lost, _) = g[0].c.encrypt_group(chat(7), &to, b"refused by the server").unwrap();
    let (env, shares) = g[0].c.encrypt_group(chat(7), &to, b"second try").unwrap();
    assert_eq!(shares.devices, vec![g[1].me()]);
    g[0].c.confirm_shared(&shares);
    let from = g[0].me();
    assert_eq!(g[1].c.decrypt(chat(7), from, &env).unwrap().body, b"second try");
    drop(lost);
    let (env, shares) = g[0].c.encrypt_group(chat(7), &to, b"third").unwrap();
    assert!(shares.devices.is_empty());
    assert_eq!(g[1].c.decrypt(chat(7), from, &env).unwrap().body, b"third");
}

#[test]
fn a_removed_member_cannot_decrypt_later_messages_and_a_new_one_not_earlier_ones() {
    let mut g = group(4);
    let from = g[0].me();
    // Members 0, 1, 2.
    let to = others(&g, 0, &[0, 1, 2]);
    let (before, shares) = g[0].c.encrypt_group(chat(7), &to, b"before the removal").unwrap();
    g[0].c.confirm_shared(&shares);
    assert_eq!(g[2].c.decrypt(chat(7), from, &before).unwrap().body, b"before the removal");
    let old_id = Envelope::decode(&before).unwrap().group.unwrap().0;
    // Member 2 is removed: the session rotates.
    let to = others(&g, 0, &[0, 1]);
    let (after, shares) = g[0].c.encrypt_group(chat(7), &to, b"after the removal").unwrap();
    g[0].c.confirm_shared(&shares);
    let parsed = Envelope::decode(&after).unwrap();
    assert_ne!(parsed.group.as_ref().unwrap().0, old_id, "a new session");
    assert!(parsed.slots.iter().all(|s| s.to != g[2].me()), "no share for the removed member");
    assert!(matches!(g[2].c.decrypt(chat(7), from, &after), Err(CryptoError::UnknownGroupSession(_))));
    assert_eq!(g[1].c.decrypt(chat(7), from, &after).unwrap().body, b"after the removal");
    // Member 3 joins: it gets the current key, not what came before.
    let to = others(&g, 0, &[0, 1, 3]);
    let (joined, shares) = g[0].c.encrypt_group(chat(7), &to, b"welcome").unwrap();
    g[0].c.confirm_shared(&shares);
    assert_eq!(shares.devices, vec![g[3].me()]);
    assert_eq!(g[3].c.decrypt(chat(7), from, &joined).unwrap().body, b"welcome");
    assert!(matches!(g[3].c.decrypt(chat(7), from, &after), Err(CryptoError::Megolm(_))));
    assert!(g[3].c.decrypt(chat(7), from, &before).is_err());
    assert!(g[2].c.decrypt(chat(7), from, &joined).is_err());
}

#[test]
fn state_survives_a_restart_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let key = [42u8; 32];
    let (mut a, mut b) = (dev(1, 1), dev(2, 1));
    meet(&mut a, &mut b);
    let store_b = CryptoStore::new(dir.path().join("b"), key);
    assert!(store_b.load().unwrap().is_none());
    let e1 = a.c.encrypt_direct(chat(1), &[b.me()], b"one").unwrap();
    let e2 = a.c.encrypt_direct(chat(1), &[b.me()], b"two").unwrap();
    assert_eq!(b.c.decrypt(chat(1), a.me(), &e1).unwrap().body, b"one");
    let (g1, s) = a.c.encrypt_group(chat(5), &[b.me()], b"group one").unwrap();
    a.c.confirm_shared(&s);
    assert_eq!(b.c.decrypt(chat(5), a.me(), &g1).unwrap().body, b"group one");
    store_b.save(&b.c).unwrap();
    let id = b.c.identity_key();
    drop(b);
    let mut b = store_b.load().unwrap().unwrap();
    assert_eq!(b.identity_key(), id);
    assert_eq!(b.decrypt(chat(1), (UserId(1), DeviceId(1)), &e2).unwrap().body, b"two");
    let (g2, _) = a.c.encrypt_group(chat(5), &[(UserId(2), DeviceId(1))], b"group two").unwrap();
    assert_eq!(b.decrypt(chat(5), (UserId(1), DeviceId(1)), &g2).unwrap().body, b"group two");
    // Alice restarts too, and goes on with the same sessions.
    let store_a = CryptoStore::new(dir.path().join("a"), key);
    store_a.save(&a.c).unwrap();
    let mut a2 = store_a.load().unwrap().unwrap();
    let e3 = a2.encrypt_direct(chat(1), &[(UserId(2), DeviceId(1))], b"three").unwrap();
    assert_eq!(b.decrypt(chat(1), (UserId(1), DeviceId(1)), &e3).unwrap().body, b"three");
    let (g3, s) = a2.encrypt_group(chat(5), &[(UserId(2), DeviceId(1))], b"group three").unwrap();
    assert!(s.devices.is_empty(), "the shared set survived");
    assert_eq!(b.decrypt(chat(5), (UserId(1), DeviceId(1)), &g3).unwrap().body, b"group three");
    // A wrong key or a corrupt file is an error, not a panic.
    assert!(matches!(CryptoStore::new(dir.path().join("a"), [0; 32]).load(), Err(CryptoError::Store(_))));
    std::fs::write(dir.path().join("a/crypto.json"), b"{").unwrap();
    assert!(matches!(store_a.load(), Err(CryptoError::Store(_))));
    // No plaintext or pickle key in the store file.
    let raw = std::fs::read(dir.path().join("b/crypto.json")).unwrap();
    assert!(!raw.windows(9).any(|w| w == b"group one"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Envelope::decode(&bytes);
        let mut b = dev(2, 1);
        let _ = b.c.decrypt(chat(1), addr(2, 1), &bytes);
    }

    /// Any interleaving of two devices' messages, each side reading the
    /// other's in any order, decrypts every message once.
    #[test]
    fn direct_messages_in_any_order(script in proptest::collection::vec((any::<bool>(), 1usize..4), 1..12), seed in any::<u64>()) {
        let (mut a, mut b) = (dev(1, 1), dev(2, 1));
        meet(&mut a, &mut b);
        // The first message must reach Bob before he can answer on that session.
        let first = a.c.encrypt_direct(chat(1), &[b.me()], b"start").unwrap();
        prop_assert_eq!(b.c.decrypt(chat(1), a.me(), &first).unwrap().body, b"start".to_vec());
        let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
        for (i, (from_a, n)) in script.iter().enumerate() {
            for k in 0..*n {
                let text = format!("{i}.{k}");
                if *from_a {
                    to_b.push((text.clone(), a.c.encrypt_direct(chat(1), &[b.me()], text.as_bytes()).unwrap()));
                } else {
                    to_a.push((text.clone(), b.c.encrypt_direct(chat(1), &[a.me()], text.as_bytes()).unwrap()));
                }
            }
        }
        // A deterministic shuffle from the seed.
        let mut s = seed | 1;
        let mut shuffle = |v: &mut Vec<(String, Vec<u8>)>| {
            for i in (1..v.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                v.swap(i, (s % (i as u64 + 1)) as usize);
            }
        };
        shuffle(&mut to_a);
        shuffle(&mut to_b);
        for (text, env) in to_b {
            prop_assert_eq!(b.c.decrypt(chat(1), a.me(), &env).unwrap().body, text.into_bytes());
        }
        for (text, env) in to_a {
            prop_assert_eq!(a.c.decrypt(chat(1), b.me(), &env).unwrap().body, text.into_bytes());
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Add(usize),
    Remove(usize),
    Send,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![(1usize..5).prop_map(Op::Add), (1usize..5).prop_map(Op::Remove), Just(Op::Send), Just(Op::Send)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Under any sequence of roster changes, a device reads a group message
    /// exactly when it was a member when the message was sent.
    #[test]
    fn a_group_message_opens_exactly_for_the_members_at_its_sending(ops in proptest::collection::vec(op(), 1..16)) {
        let mut g = group(5);
        let from = g[0].me();
        let mut members: std::collections::BTreeSet<usize> = [1, 2].into_iter().collect();
        let mut sent = Vec::new();
        for (k, o) in ops.iter().enumerate() {
            match o {
                Op::Add(i) => { members.insert(*i); }
                Op::Remove(i) => { members.remove(i); }
                Op::Send => {
                    let to: Vec<Address> = members.iter().map(|&i| g[i].me()).collect();
                    let body = format!("message {k}");
                    let (env, shares) = g[0].c.encrypt_group(chat(9), &to, body.as_bytes()).unwrap();
                    g[0].c.confirm_shared(&shares);
                    sent.push((env, body, members.clone()));
                }
            }
        }
        for (env, body, members) in &sent {
            for (i, d) in g.iter_mut().enumerate().skip(1) {
                let got = d.c.decrypt(chat(9), from, env);
                if members.contains(&i) {
                    prop_assert_eq!(got.unwrap().body, body.as_bytes().to_vec(), "member {} of {:?}", i, members);
                } else {
                    prop_assert!(got.is_err(), "non-member {} opened {}", i, body);
                }
            }
        }
    }
}
