//! The E2EE key directory of the user partition (issue 14): the rules of
//! `UploadDeviceKeys` and `ClaimDeviceKeys` one by one, and a model that
//! random histories of links, unlinks, uploads and claims must follow (no
//! one-time key is ever handed out twice; counts; fallback use; unlink).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::collections::{BTreeMap, BTreeSet};

use chorus_partition::{PartitionState, MAX_PREKEYS_PER_DEVICE};
use chorus_schema::*;
use proptest::prelude::*;

const A: UserId = UserId(1);
const B: UserId = UserId(2);
const C: UserId = UserId(3);

struct Harness {
    state: PartitionState,
    now_ms: u64,
    next_cmid: u64,
    /// Every event applied, to check that a replay folds to the same state.
    log: Vec<Event>,
}

impl Harness {
    fn new() -> Self {
        let mut h = Harness { state: PartitionState::new(PartitionId(0), 1), now_ms: 1_000, next_cmid: 1, log: vec![] };
        h.ok(A, 1, CommandBody::RegisterUser { phone: "+15550100001".into() });
        h.ok(B, 1, CommandBody::RegisterUser { phone: "+15550100002".into() });
        h
    }

    fn command(&mut self, user: UserId, device: u32, body: CommandBody) -> Command {
        self.next_cmid += 1;
        Command { origin: Origin { user, device: DeviceId(device), client_msg_id: ClientMsgId(self.next_cmid) }, body }
    }

    fn apply(&mut self, cmd: &Command) -> (CommandResult, Vec<EventBody>) {
        self.now_ms += 10;
        let mut out = Vec::new();
        let before = self.state.clone();
        let result = self.state.apply(self.now_ms, cmd, &mut out);
        if result.is_err() {
            assert!(out.is_empty(), "a rejection emitted events: {out:?}");
            assert_eq!(self.state, before, "a rejection changed the state");
        }
        let bodies = out.iter().map(|e| e.body.clone()).collect();
        self.log.extend(out);
        (result, bodies)
    }

    fn run(&mut self, user: UserId, device: u32, body: CommandBody) -> (CommandResult, Vec<EventBody>) {
        let cmd = self.command(user, device, body);
        self.apply(&cmd)
    }

    #[track_caller]
    fn ok(&mut self, user: UserId, device: u32, body: CommandBody) -> Outcome {
        let what = format!("{body:?}");
        match self.run(user, device, body) {
            (Ok(o), _) => o,
            (Err(r), _) => panic!("{what} by {user} was rejected: {r}"),
        }
    }

    #[track_caller]
    fn reject(&mut self, user: UserId, device: u32, body: CommandBody, code: RejectCode) -> String {
        let what = format!("{body:?}");
        match self.run(user, device, body) {
            (Err(r), _) => {
                assert_eq!(r.code, code, "{what}: {}", r.message);
                r.message
            }
            (Ok(o), _) => panic!("{what} was accepted ({o:?}), expected {code:?}"),
        }
    }

    fn link(&mut self, device: u32) {
        let body = CommandBody::LinkDevice {
            device: DeviceId(device),
            identity_key: ik(device),
            name: "d".into(),
            token_hash: None,
        };
        self.ok(A, 1, body);
    }

    /// Folding the log into a fresh state gives this state.
    fn check_replay(&self) {
        let mut replica = PartitionState::new(PartitionId(0), 1);
        for e in &self.log {
            replica.fold(e);
        }
        assert_eq!(replica, self.state, "replay differs from the live state");
    }
}

fn ik(device: u32) -> Vec<u8> {
    vec![device as u8; 64]
}

fn pk(id: u32) -> Prekey {
    Prekey { id, key: id.to_be_bytes().to_vec() }
}

fn fallback(id: u32) -> Prekey {
    Prekey { id, key: vec![0xfb, id as u8] }
}

fn upload(ids: &[u32], fb: Option<u32>) -> CommandBody {
    CommandBody::UploadDeviceKeys {
        prekeys: ids.iter().map(|i| pk(*i)).collect(),
        fallback_key: fb.map(fallback),
        fallback_signature: fb.map(|i| vec![0x51, i as u8]).unwrap_or_default(),
    }
}

fn bundle(o: Outcome) -> Vec<DeviceKeys> {
    match o {
        Outcome::KeyBundle { user, devices } => {
            assert_eq!(user, A);
            devices
        }
        other => panic!("not a bundle: {other:?}"),
    }
}

#[test]
fn a_claim_takes_one_key_of_every_device_and_falls_back_when_none_is_left() {
    let mut h = Harness::new();
    h.link(1);
    h.link(2);
    assert_eq!(h.ok(A, 1, upload(&[1, 2], Some(100))), Outcome::KeysUploaded { one_time_keys_left: 2 });
    assert_eq!(h.ok(A, 2, upload(&[], Some(200))), Outcome::KeysUploaded { one_time_keys_left: 0 });

    let claim = h.command(B, 1, CommandBody::ClaimDeviceKeys { target: A });
    let (r, events) = h.apply(&claim);
    let devices = bundle(r.unwrap());
    assert_eq!(events, vec![EventBody::DeviceKeysClaimed { user: A, claimed_by: B, claimed: vec![(DeviceId(1), 1)] }]);
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[0].device, DeviceId(1));
    assert_eq!(devices[0].identity_key, ik(1));
    assert_eq!(devices[0].one_time_key, Some(pk(1)));
    assert_eq!(devices[0].fallback_key, Some(fallback(100)));
    assert_eq!(devices[0].fallback_signature, vec![0x51, 100]);
    // Device 2 has no one-time key: its fallback key (not consumed).
    assert_eq!(devices[1].one_time_key, None);
    assert_eq!(devices[1].fallback_key, Some(fallback(200)));
    // A retry of the same claim gets the same bundle and claims nothing.
    let (again, events) = h.apply(&claim);
    assert_eq!(bundle(again.unwrap()), devices);
    assert!(events.is_empty());

    assert_eq!(bundle(h.ok(C, 1, CommandBody::ClaimDeviceKeys { target: A }))[0].one_time_key, Some(pk(2)));
    let third = bundle(h.ok(C, 1, CommandBody::ClaimDeviceKeys { target: A }));
    assert_eq!(third[0].one_time_key, None);
    assert_eq!(third[0].fallback_key, Some(fallback(100)));
    assert_eq!(h.state.unclaimed_prekeys(A, DeviceId(1)), Some(0));
    // A new fallback key replaces the old one.
    h.ok(A, 1, upload(&[], Some(101)));
    assert_eq!(bundle(h.ok(C, 1, CommandBody::ClaimDeviceKeys { target: A }))[0].fallback_key, Some(fallback(101)));
    h.check_replay();
}

#[test]
fn bad_uploads_and_claims_are_refused_and_change_nothing() {
    let mut h = Harness::new();
    h.reject(B, 1, CommandBody::ClaimDeviceKeys { target: UserId(99) }, RejectCode::UnknownUser);
    let m = h.reject(B, 1, CommandBody::ClaimDeviceKeys { target: A }, RejectCode::NoPrekeys);
    assert!(m.contains("no linked devices"), "{m}");
    h.reject(A, 1, upload(&[1], None), RejectCode::Invalid); // device 1 not linked yet
    h.link(1);
    let m = h.reject(A, 1, upload(&[], None), RejectCode::Invalid);
    assert!(m.contains("no keys"), "{m}");
    let m = h.reject(A, 1, upload(&[3, 3], None), RejectCode::Invalid);
    assert!(m.contains("twice"), "{m}");
    let unsigned =
        CommandBody::UploadDeviceKeys { prekeys: vec![], fallback_key: Some(fallback(1)), fallback_signature: vec![] };
    h.reject(A, 1, unsigned, RejectCode::Invalid);
    let sig_only = CommandBody::UploadDeviceKeys { prekeys: vec![], fallback_key: None, fallback_signature: vec![1] };
    h.reject(A, 1, sig_only, RejectCode::Invalid);
    h.ok(A, 1, upload(&[5], None));
    let m = h.reject(A, 1, upload(&[5], None), RejectCode::Invalid);
    assert!(m.contains("not above"), "{m}");
    h.reject(A, 1, upload(&[4], None), RejectCode::Invalid);
    let many: Vec<u32> = (10..10 + MAX_PREKEYS_PER_UPLOAD as u32).collect();
    for chunk in 0..(MAX_PREKEYS_PER_DEVICE / MAX_PREKEYS_PER_UPLOAD) as u32 {
        let ids: Vec<u32> = many.iter().map(|i| i + chunk * 1000).collect();
        if chunk as usize == MAX_PREKEYS_PER_DEVICE / MAX_PREKEYS_PER_UPLOAD - 1 {
            // The device holds 1 already: this one would be one too many.
            let m = h.reject(A, 1, upload(&ids, None), RejectCode::Invalid);
            assert!(m.contains("at most"), "{m}");
        } else {
            h.ok(A, 1, upload(&ids, None));
        }
    }
    // Too many keys in one command: refused by validation, before any rule.
    let too_many: Vec<u32> = (100_000..100_001 + MAX_PREKEYS_PER_UPLOAD as u32).collect();
    h.reject(A, 1, upload(&too_many, None), RejectCode::Invalid);
    h.check_replay();
}

#[test]
fn unlinking_drops_the_keys_and_ids_are_never_reused() {
    let mut h = Harness::new();
    h.link(1);
    h.link(2);
    h.ok(A, 2, upload(&[1, 2, 3], Some(9)));
    h.ok(A, 1, CommandBody::UnlinkDevice { device: DeviceId(2) });
    assert_eq!(h.state.unclaimed_prekeys(A, DeviceId(2)), None);
    let devices = bundle(h.ok(B, 1, CommandBody::ClaimDeviceKeys { target: A }));
    assert_eq!(devices.iter().map(|d| d.device).collect::<Vec<_>>(), vec![DeviceId(1)]);
    h.link(2);
    // The relinked device has a new identity record and no fallback key.
    let devices = bundle(h.ok(B, 1, CommandBody::ClaimDeviceKeys { target: A }));
    assert_eq!(devices[1].fallback_key, None);
    assert_eq!(devices[1].identity_key, ik(2));
    h.reject(A, 2, upload(&[3], None), RejectCode::Invalid);
    h.ok(A, 2, upload(&[4], None));
    h.check_replay();
}

/// What the model knows of one device.
#[derive(Clone, Debug, Default)]
struct ModelDevice {
    unclaimed: BTreeSet<u32>,
    fallback: Option<u32>,
}

#[derive(Clone, Debug)]
enum Op {
    Link(u32),
    Unlink(u32),
    /// Upload `n` fresh ids (and a fallback key) to a device; `stale`: reuse
    /// an old id (must be refused).
    Upload {
        device: u32,
        n: u32,
        fallback: bool,
        stale: bool,
    },
    Claim {
        by: UserId,
        retry: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (1u32..4).prop_map(Op::Link),
        1 => (1u32..4).prop_map(Op::Unlink),
        2 => (1u32..4, 0u32..5, any::<bool>(), prop::bool::weighted(0.1))
            .prop_map(|(device, n, fallback, stale)| Op::Upload { device, n, fallback, stale }),
        3 => (prop_oneof![Just(B), Just(C)], prop::bool::weighted(0.2)).prop_map(|(by, retry)| Op::Claim { by, retry }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn claims_follow_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let mut h = Harness::new();
        let mut devices: BTreeMap<u32, ModelDevice> = BTreeMap::new();
        let mut high: BTreeMap<u32, u32> = BTreeMap::new();
        let mut handed_out: BTreeSet<(u32, u32)> = BTreeSet::new();
        let mut last_claim: Option<(Command, Outcome)> = None;
        let mut next_fallback = 1000;
        for op in ops {
            match op {
                Op::Link(d) => {
                    let linked = devices.contains_key(&d);
                    let body = CommandBody::LinkDevice { device: DeviceId(d), identity_key: ik(d), name: "d".into(), token_hash: None };
                    let (r, _) = h.run(A, 1, body);
                    prop_assert_eq!(r.is_ok(), !linked);
                    devices.entry(d).or_default();
                }
                Op::Unlink(d) => {
                    let (r, _) = h.run(A, 1, CommandBody::UnlinkDevice { device: DeviceId(d) });
                    prop_assert_eq!(r.is_ok(), devices.remove(&d).is_some());
                }
                Op::Upload { device, n, fallback, stale } => {
                    let h0 = high.get(&device).copied().unwrap_or(0);
                    let mut ids: Vec<u32> = (h0 + 1..=h0 + n).collect();
                    if stale && h0 > 0 {
                        ids.push(h0);
                    }
                    next_fallback += 1;
                    let fb = fallback.then_some(next_fallback);
                    let (r, _) = h.run(A, device, upload(&ids, fb));
                    let valid = devices.contains_key(&device) && !(ids.is_empty() && fb.is_none()) && !(stale && h0 > 0);
                    prop_assert_eq!(r.is_ok(), valid, "{:?}", r);
                    if valid {
                        let m = devices.get_mut(&device).unwrap();
                        m.unclaimed.extend(ids.iter().copied());
                        if fb.is_some() {
                            m.fallback = fb;
                        }
                        if let Some(max) = ids.iter().max() {
                            high.insert(device, h0.max(*max));
                        }
                        prop_assert_eq!(r, Ok(Outcome::KeysUploaded { one_time_keys_left: m.unclaimed.len() as u32 }));
                    }
                }
                Op::Claim { by, retry } => {
                    if retry {
                        if let Some((cmd, outcome)) = &last_claim {
                            let (r, events) = h.apply(cmd);
                            prop_assert_eq!(r, Ok(outcome.clone()), "a retry is answered the same");
                            prop_assert!(events.is_empty(), "a retry claims nothing");
                        }
                        continue;
                    }
                    let cmd = h.command(by, 1, CommandBody::ClaimDeviceKeys { target: A });
                    let (r, _) = h.apply(&cmd);
                    if devices.is_empty() {
                        prop_assert_eq!(r.map_err(|e| e.code), Err(RejectCode::NoPrekeys));
                        continue;
                    }
                    let outcome = r.unwrap();
                    let got = bundle(outcome.clone());
                    prop_assert_eq!(got.iter().map(|d| d.device.0).collect::<Vec<_>>(), devices.keys().copied().collect::<Vec<_>>());
                    for dk in &got {
                        let m = devices.get_mut(&dk.device.0).unwrap();
                        prop_assert_eq!(&dk.identity_key, &ik(dk.device.0));
                        prop_assert_eq!(dk.fallback_key.clone(), m.fallback.map(fallback));
                        let expected = m.unclaimed.pop_first();
                        prop_assert_eq!(dk.one_time_key.clone(), expected.map(pk));
                        if let Some(id) = expected {
                            prop_assert!(handed_out.insert((dk.device.0, id)), "key {} of device {} handed out twice", id, dk.device.0);
                        }
                    }
                    last_claim = Some((cmd, outcome));
                }
            }
            for (d, m) in &devices {
                prop_assert_eq!(h.state.unclaimed_prekeys(A, DeviceId(*d)), Some(m.unclaimed.len()));
            }
        }
        h.check_replay();
    }
}
