//! Linked devices (issue 12): the companion limit and pairing links, by rule
//! and over random sequences against a model.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::collections::BTreeMap;

use chorus_partition::{PartitionState, MAX_DEVICES_PER_USER};
use chorus_schema::*;
use proptest::prelude::*;

const A: UserId = UserId(1);

fn origin(device: u32, cmid: u64) -> Origin {
    Origin { user: A, device: DeviceId(device), client_msg_id: ClientMsgId(cmid) }
}

fn register(device: u32, token: u8) -> CommandBody {
    CommandBody::RegisterDevice {
        phone: "+15550001".into(),
        device: DeviceId(device),
        identity_key: vec![1],
        name: "phone".into(),
        token_hash: [token; 32],
        pin_hash: None,
    }
}

fn link(device: u32, token: Option<u8>) -> CommandBody {
    CommandBody::LinkDevice {
        device: DeviceId(device),
        identity_key: vec![2],
        name: format!("companion {device}"),
        token_hash: token.map(|t| [t; 32]),
    }
}

/// Applies one command; a refusal must emit nothing and change nothing.
fn apply(s: &mut PartitionState, at_ms: u64, origin: Origin, body: CommandBody) -> (CommandResult, Vec<EventBody>) {
    let before = s.clone();
    let mut out = Vec::new();
    let r = s.apply(at_ms, &Command { origin, body }, &mut out);
    if r.is_err() {
        assert!(out.is_empty(), "a refusal emitted {out:?}");
        assert_eq!(*s, before, "a refusal changed the state");
    }
    (r, out.into_iter().map(|e| e.body).collect())
}

#[test]
fn a_pairing_link_opens_the_session_with_the_link() {
    let mut s = PartitionState::new(PartitionId(0), 1);
    apply(&mut s, 1, origin(1, 1), register(1, 1)).0.unwrap();
    let (r, events) = apply(&mut s, 2, origin(1, 2), link(7, Some(9)));
    assert_eq!(r, Ok(Outcome::Done));
    assert_eq!(
        events,
        vec![
            EventBody::DeviceLinked { user: A, device: DeviceId(7), identity_key: vec![2], name: "companion 7".into() },
            EventBody::SessionCreated { user: A, device: DeviceId(7), token_hash: [9; 32] },
        ]
    );
    assert_eq!(s.session(A, DeviceId(7)), Some([9; 32]));
    // A device that is not logged in cannot pair.
    apply(&mut s, 3, origin(1, 30), CommandBody::RevokeSession { device: DeviceId(7) }).0.unwrap();
    let (r, _) = apply(&mut s, 3, origin(7, 31), link(9, Some(9)));
    assert_eq!(r.unwrap_err().code, RejectCode::Invalid);
    let (r, _) = apply(&mut s, 3, origin(2, 32), link(9, Some(9)));
    assert_eq!(r.unwrap_err().code, RejectCode::Invalid, "nor an unknown one");
    // Without a token: linked, no session.
    apply(&mut s, 3, origin(1, 3), link(8, None)).0.unwrap();
    assert_eq!(s.session(A, DeviceId(8)), None);
    assert_eq!(s.devices(A), Some(vec![DeviceId(1), DeviceId(7), DeviceId(8)]));
    assert_eq!(s.session(A, DeviceId(7)), None, "revoked");
}

#[test]
fn the_primary_and_four_companions_then_too_many_devices() {
    assert_eq!(MAX_DEVICES_PER_USER, 5);
    let mut s = PartitionState::new(PartitionId(0), 1);
    apply(&mut s, 1, origin(1, 1), register(1, 1)).0.unwrap();
    for d in 2..=5u32 {
        apply(&mut s, u64::from(d), origin(1, u64::from(d)), link(d, Some(d as u8))).0.unwrap();
    }
    // A fifth companion: refused by name, nothing changed (checked by `apply`).
    let (r, _) = apply(&mut s, 10, origin(1, 10), link(6, Some(6)));
    let e = r.unwrap_err();
    assert_eq!(e.code, RejectCode::TooManyDevices);
    assert!(e.message.contains("at most 5 devices"), "{}", e.message);
    assert_eq!(s.session(A, DeviceId(6)), None);
    // Registering another device by SMS is refused alike.
    assert_eq!(apply(&mut s, 11, origin(6, 11), register(6, 6)).0.unwrap_err().code, RejectCode::TooManyDevices);
    // Unlinking one makes room.
    apply(&mut s, 12, origin(1, 12), CommandBody::UnlinkDevice { device: DeviceId(3) }).0.unwrap();
    apply(&mut s, 13, origin(1, 13), link(6, Some(6))).0.unwrap();
    assert_eq!(s.devices(A).unwrap().len(), 5);
    assert_eq!(s.session(A, DeviceId(3)), None, "an unlinked device has no session");
}

#[derive(Clone, Debug)]
enum Op {
    Register(u32, u8),
    Link(u32, Option<u8>),
    Unlink(u32),
    Revoke(u32),
}

fn op() -> impl Strategy<Value = Op> {
    let device = 1u32..=8;
    prop_oneof![
        1 => (prop_oneof![Just(1u32), device.clone()], 0u8..4).prop_map(|(d, t)| Op::Register(d, t)),
        4 => (device.clone(), prop::option::of(0u8..4)).prop_map(|(d, t)| Op::Link(d, t)),
        2 => device.clone().prop_map(Op::Unlink),
        1 => device.prop_map(Op::Revoke),
    ]
}

proptest! {
    /// Against a model (device → session): at most five devices ever; a link
    /// or registration past the limit is `TooManyDevices` and changes
    /// nothing; a pairing link always has its session; an unlinked device
    /// has none.
    #[test]
    fn devices_follow_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let mut s = PartitionState::new(PartitionId(0), 1);
        let mut model: Option<BTreeMap<u32, Option<u8>>> = None;
        for (i, op) in ops.into_iter().enumerate() {
            let at = 1_000 + i as u64;
            let o = origin(1, i as u64 + 1);
            let full = model.as_ref().is_some_and(|m| m.len() >= MAX_DEVICES_PER_USER);
            match op {
                Op::Register(d, t) => {
                    let (r, _) = apply(&mut s, at, o, register(d, t));
                    match &mut model {
                        Some(m) if m.contains_key(&d) => prop_assert_eq!(r.unwrap_err().code, RejectCode::AlreadyExists),
                        Some(_) if full => prop_assert_eq!(r.unwrap_err().code, RejectCode::TooManyDevices),
                        m => {
                            prop_assert!(r.is_ok());
                            m.get_or_insert_with(BTreeMap::new).insert(d, Some(t));
                        }
                    }
                }
                Op::Link(d, t) => {
                    let (r, _) = apply(&mut s, at, o, link(d, t));
                    // The origin, device 1, must be logged in to pair.
                    let linker_in = model.as_ref().is_some_and(|m| m.get(&1).is_some_and(Option::is_some));
                    match &mut model {
                        None => prop_assert_eq!(r.unwrap_err().code, RejectCode::UnknownUser),
                        Some(_) if t.is_some() && !linker_in => prop_assert_eq!(r.unwrap_err().code, RejectCode::Invalid),
                        Some(m) if m.contains_key(&d) => prop_assert_eq!(r.unwrap_err().code, RejectCode::AlreadyExists),
                        Some(_) if full => prop_assert_eq!(r.unwrap_err().code, RejectCode::TooManyDevices),
                        Some(m) => {
                            prop_assert!(r.is_ok());
                            m.insert(d, t);
                        }
                    }
                }
                Op::Unlink(d) => {
                    let (r, _) = apply(&mut s, at, o, CommandBody::UnlinkDevice { device: DeviceId(d) });
                    let was_linked = model.as_mut().is_some_and(|m| m.remove(&d).is_some());
                    prop_assert_eq!(r.is_ok(), was_linked);
                }
                Op::Revoke(d) => {
                    let (r, _) = apply(&mut s, at, o, CommandBody::RevokeSession { device: DeviceId(d) });
                    match &mut model {
                        None => prop_assert!(r.is_err()),
                        Some(m) => {
                            prop_assert!(r.is_ok());
                            if let Some(t) = m.get_mut(&d) {
                                *t = None;
                            }
                        }
                    }
                }
            }
            let devices = s.devices(A);
            prop_assert!(devices.as_ref().map_or(0, Vec::len) <= MAX_DEVICES_PER_USER);
            prop_assert_eq!(devices, model.as_ref().map(|m| m.keys().map(|d| DeviceId(*d)).collect::<Vec<_>>()));
            for d in 1..=8u32 {
                let want = model.as_ref().and_then(|m| m.get(&d).copied().flatten()).map(|t| [t; 32]);
                prop_assert_eq!(s.session(A, DeviceId(d)), want, "session of device {}", d);
            }
        }
    }
}
