//! The directory view: who is registered, their linked devices, and the live
//! session of each device (the BLAKE3 hash of its login token), which is what
//! an edge checks when a device logs in.
//!
//! # Rules
//! The same as the state machine's user fold (`chorus_partition`), so that the
//! view equals its state:
//! - `UserRegistered` registers the user, once.
//! - `DeviceLinked` adds a device, without a session, with its name and link
//!   time (the event's time: `ListDevices`); `DeviceUnlinked` removes
//!   it, and its session and name with it (the state machine logs no `SessionRevoked`
//!   for an unlinked device: the unlink ends the session).
//! - `SessionCreated` sets the device's token hash, replacing any earlier one:
//!   the live token is the last one created.
//! - `SessionRevoked` clears it (nothing happens for a device without a
//!   session or one that is not linked).
//!
//! Effects: `DeviceLinked`, `DeviceUnlinked` and `SessionRevoked` each give
//! an [`Effect::Account`], so that edges close the connections of a device
//! that is gone at once (not at its next login) and tell the user's other
//! devices (e.g. that the number was registered on a new device).
//!
//! Every other event (chat events, profiles, presence, prekeys, …) is ignored.
//! An event of an unregistered user, a device linked twice, and unlinking or
//! creating a session of a device that is not linked contradict the view.
//!
//! # Cost
//! One or two point reads and one write per event; a user's devices are one
//! prefix scan (at most `MAX_DEVICES_PER_USER` of the state machine).

use chorus_schema::{DeviceId, EventBody, EventRecord, UserId};
use serde::{Deserialize, Serialize};

use super::Effect;
use crate::store::{decode, for_each_prefix, get_value, keys, put_value, Txn};
use crate::{Error, Result};
use chorus_schema::DeviceNoticeKind;

/// A linked device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The BLAKE3 hash of the token of the device's live session, if it has one.
    pub token_hash: Option<[u8; 32]>,
}

/// A linked device's name and link time (a key family of its own, `0x52`,
/// so that [`Device`]'s stored format is unchanged).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub name: String,
    pub linked_at_ms: u64,
}

/// Folds one user-partition event into the directory; ignores every other event.
///
/// # Errors
/// [`Error::Inconsistent`] for an event that contradicts the directory (see
/// the module docs); [`Error::Store`] if the store fails.
pub fn apply<T: Txn + ?Sized>(txn: &mut T, record: &EventRecord, effects: &mut Vec<Effect>) -> Result<()> {
    let body = &record.event.body;
    let kind = body.kind();
    match body {
        EventBody::UserRegistered { user, .. } => {
            let key = keys::user(*user);
            if txn.get(&key)?.is_some() {
                return Err(Error::inconsistent_user(*user, kind, "user registered twice"));
            }
            txn.put(&key, &[]);
        }
        EventBody::DeviceLinked { user, device, name, .. } => {
            registered(txn, *user, kind)?;
            let key = keys::device(*user, *device);
            if txn.get(&key)?.is_some() {
                return Err(Error::inconsistent_user(*user, kind, format!("device {device} linked twice")));
            }
            put_value(txn, &key, &Device::default());
            let info = DeviceInfo { name: name.clone(), linked_at_ms: record.event.at_ms };
            put_value(txn, &keys::device_info(*user, *device), &info);
            effects.push(Effect::Account { user: *user, device: *device, change: DeviceNoticeKind::Linked });
        }
        EventBody::DeviceUnlinked { user, device } => {
            registered(txn, *user, kind)?;
            let key = keys::device(*user, *device);
            if txn.get(&key)?.is_none() {
                return Err(Error::inconsistent_user(*user, kind, format!("device {device} is not linked")));
            }
            txn.delete(&key);
            txn.delete(&keys::device_info(*user, *device));
            effects.push(Effect::Account { user: *user, device: *device, change: DeviceNoticeKind::Unlinked });
        }
        EventBody::SessionCreated { user, device, token_hash } => {
            registered(txn, *user, kind)?;
            let key = keys::device(*user, *device);
            if txn.get(&key)?.is_none() {
                return Err(Error::inconsistent_user(*user, kind, format!("device {device} is not linked")));
            }
            put_value(txn, &key, &Device { token_hash: Some(*token_hash) });
        }
        EventBody::SessionRevoked { user, device } => {
            registered(txn, *user, kind)?;
            let key = keys::device(*user, *device);
            let linked: Option<Device> = get_value(txn, &key)?;
            if linked.is_some_and(|d| d.token_hash.is_some()) {
                put_value(txn, &key, &Device { token_hash: None });
            }
            effects.push(Effect::Account { user: *user, device: *device, change: DeviceNoticeKind::LoggedOut });
        }
        _ => {}
    }
    // ---- E2EE (issue 14) ----
    super::device_keys::apply(txn, body, effects)?;
    Ok(())
}

fn registered<T: Txn + ?Sized>(txn: &T, user: UserId, kind: &'static str) -> Result<()> {
    if is_registered(txn, user)? {
        Ok(())
    } else {
        Err(Error::inconsistent_user(user, kind, "user is not registered"))
    }
}

/// Whether `UserRegistered` of `user` was folded.
///
/// # Errors
/// [`Error::Store`] if the store fails.
pub fn is_registered<T: Txn + ?Sized>(txn: &T, user: UserId) -> Result<bool> {
    Ok(txn.get(&keys::user(user))?.is_some())
}

/// A linked device of `user`; `None` if it is not linked (never, or unlinked).
///
/// # Errors
/// [`Error::Store`] if the store fails.
pub fn device<T: Txn + ?Sized>(txn: &T, user: UserId, device: DeviceId) -> Result<Option<Device>> {
    Ok(get_value(txn, &keys::device(user, device))?)
}

/// The token hash of the live session of `user`'s `device`: `None` if the
/// device has no session (never created, revoked) or is not linked.
///
/// # Errors
/// [`Error::Store`] if the store fails.
pub fn session<T: Txn + ?Sized>(txn: &T, user: UserId, device: DeviceId) -> Result<Option<[u8; 32]>> {
    Ok(self::device(txn, user, device)?.and_then(|d| d.token_hash))
}

/// The linked devices of `user`, in device id order.
///
/// # Errors
/// [`Error::Store`] if the store fails.
pub fn devices<T: Txn + ?Sized>(txn: &T, user: UserId) -> Result<Vec<(DeviceId, Device)>> {
    let mut out = Vec::new();
    for_each_prefix(txn, &keys::devices_of(user), |k, v| -> Result<()> {
        out.push((DeviceId(keys::u32_at(k, keys::AFTER_USER)), decode(k, v)?));
        Ok(())
    })?;
    Ok(out)
}

/// The linked devices of `user` with their names and link times, in device
/// id order (`ListDevices`).
///
/// # Errors
/// [`Error::Store`] if the store fails.
pub fn device_list<T: Txn + ?Sized>(txn: &T, user: UserId) -> Result<Vec<chorus_schema::edge::DeviceInfo>> {
    let mut out = Vec::new();
    for_each_prefix(txn, &keys::device_infos_of(user), |k, v| -> Result<()> {
        let info: DeviceInfo = decode(k, v)?;
        out.push(chorus_schema::edge::DeviceInfo {
            device: DeviceId(keys::u32_at(k, keys::AFTER_USER)),
            name: info.name,
            linked_at_ms: info.linked_at_ms,
        });
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use chorus_schema::{ClientMsgId, Event, Origin, PartitionId};

    use super::*;
    use crate::store::MemStore;

    const U: UserId = UserId(7);

    fn record(offset: u64, body: EventBody) -> EventRecord {
        let origin = Origin { user: U, device: DeviceId(1), client_msg_id: ClientMsgId(offset) };
        EventRecord {
            partition: PartitionId(0),
            offset: chorus_schema::Offset(offset),
            log_index: chorus_schema::LogIndex(offset),
            event: Event { at_ms: 0, origin, body },
        }
    }

    /// Folds each body in its own committed transaction; the first error stops.
    fn fold(store: &mut MemStore, bodies: Vec<EventBody>) -> Result<()> {
        for (i, body) in bodies.into_iter().enumerate() {
            let mut txn = store.begin();
            apply(&mut txn, &record(i as u64, body), &mut Vec::new())?;
            txn.commit();
        }
        Ok(())
    }

    fn linked(device: u32) -> EventBody {
        EventBody::DeviceLinked { user: U, device: DeviceId(device), identity_key: vec![1], name: "d".into() }
    }

    fn session(device: u32, token: u8) -> EventBody {
        EventBody::SessionCreated { user: U, device: DeviceId(device), token_hash: [token; 32] }
    }

    #[test]
    fn devices_and_sessions() {
        let mut store = MemStore::new();
        assert!(!is_registered(&store.begin(), U).unwrap());
        fold(
            &mut store,
            vec![
                EventBody::UserRegistered { user: U, phone: "1".into() },
                linked(2),
                linked(1),
                session(1, 0xaa),
                session(1, 0xbb),
                session(2, 0xcc),
                EventBody::SessionRevoked { user: U, device: DeviceId(2) },
                // Revoking again (or a device without a session) changes nothing.
                EventBody::SessionRevoked { user: U, device: DeviceId(2) },
                EventBody::SessionRevoked { user: U, device: DeviceId(9) },
                EventBody::PresenceChanged {
                    user: U,
                    online: true,
                    device: DeviceId(1),
                    connection: 1,
                    device_online: true,
                },
            ],
        )
        .unwrap();
        let t = store.begin();
        assert!(is_registered(&t, U).unwrap());
        assert!(!is_registered(&t, UserId(8)).unwrap());
        // The live token is the last one created.
        assert_eq!(super::session(&t, U, DeviceId(1)).unwrap(), Some([0xbb; 32]));
        assert_eq!(super::session(&t, U, DeviceId(2)).unwrap(), None);
        assert_eq!(device(&t, U, DeviceId(2)).unwrap(), Some(Device { token_hash: None }));
        let ids: Vec<DeviceId> = devices(&t, U).unwrap().into_iter().map(|(d, _)| d).collect();
        assert_eq!(ids, vec![DeviceId(1), DeviceId(2)]);
        drop(t);

        // Unlinking ends the session; linking again starts without one.
        let mut txn = store.begin();
        apply(&mut txn, &record(20, EventBody::DeviceUnlinked { user: U, device: DeviceId(1) }), &mut Vec::new())
            .unwrap();
        txn.commit();
        let t = store.begin();
        assert_eq!(super::session(&t, U, DeviceId(1)).unwrap(), None);
        assert_eq!(device(&t, U, DeviceId(1)).unwrap(), None);
        assert_eq!(devices(&t, U).unwrap(), vec![(DeviceId(2), Device { token_hash: None })]);
        drop(t);
        let mut txn = store.begin();
        apply(&mut txn, &record(21, linked(1)), &mut Vec::new()).unwrap();
        txn.commit();
        assert_eq!(super::session(&store.begin(), U, DeviceId(1)).unwrap(), None);
    }

    #[test]
    fn device_list_has_names_and_link_times() {
        let mut store = MemStore::new();
        fold(&mut store, vec![EventBody::UserRegistered { user: U, phone: "1".into() }, linked(3), linked(1)]).unwrap();
        let list = device_list(&store.begin(), U).unwrap();
        let ids: Vec<(u32, String, u64)> = list.into_iter().map(|d| (d.device.0, d.name, d.linked_at_ms)).collect();
        // `record` stamps every event at 0; the offsets order the folds.
        assert_eq!(ids, vec![(1, "d".to_string(), 0), (3, "d".to_string(), 0)]);
        let mut txn = store.begin();
        apply(&mut txn, &record(9, EventBody::DeviceUnlinked { user: U, device: DeviceId(3) }), &mut Vec::new())
            .unwrap();
        txn.commit();
        let ids: Vec<u32> = device_list(&store.begin(), U).unwrap().into_iter().map(|d| d.device.0).collect();
        assert_eq!(ids, vec![1]);
    }

    #[test]
    fn contradictions_are_errors() {
        let registered = || EventBody::UserRegistered { user: U, phone: "1".into() };
        for (bodies, detail) in [
            (vec![linked(1)], "not registered"),
            (vec![session(1, 1)], "not registered"),
            (vec![registered(), registered()], "registered twice"),
            (vec![registered(), linked(1), linked(1)], "linked twice"),
            (vec![registered(), session(1, 1)], "is not linked"),
            (vec![registered(), EventBody::DeviceUnlinked { user: U, device: DeviceId(1) }], "is not linked"),
        ] {
            let err = fold(&mut MemStore::new(), bodies).unwrap_err();
            assert!(matches!(err, Error::Inconsistent { key: chorus_schema::Key::User(U), .. }), "{err}");
            assert!(err.to_string().contains(detail), "{err}");
        }
    }

    #[test]
    fn chat_events_are_ignored() {
        let mut store = MemStore::new();
        let chat = chorus_schema::ChatId::group([1; 16]);
        fold(&mut store, vec![EventBody::MemberLeft { chat, seq: chorus_schema::Seq(2) }]).unwrap();
        assert!(store.is_empty());
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::unwrap_used)]
mod key_tests {
    use chorus_schema::{ClientMsgId, Event, Origin, PartitionId, Prekey};

    use super::*;
    use crate::fold::device_keys;
    use crate::store::MemStore;

    const U: UserId = UserId(7);

    fn fold(store: &mut MemStore, body: EventBody) -> Vec<Effect> {
        let origin = Origin { user: U, device: DeviceId(1), client_msg_id: ClientMsgId(1) };
        let record = EventRecord {
            partition: PartitionId(0),
            offset: chorus_schema::Offset(0),
            log_index: chorus_schema::LogIndex(0),
            event: Event { at_ms: 0, origin, body },
        };
        let mut effects = Vec::new();
        let mut txn = store.begin();
        apply(&mut txn, &record, &mut effects).unwrap();
        txn.commit();
        effects.retain(|e| matches!(e, Effect::KeysLow { .. }));
        effects
    }

    fn pk(id: u32) -> Prekey {
        Prekey { id, key: vec![id as u8] }
    }

    #[test]
    fn keys_follow_uploads_claims_and_unlinks_and_a_claim_below_the_watermark_is_announced() {
        let mut s = MemStore::new();
        fold(&mut s, EventBody::UserRegistered { user: U, phone: "1".into() });
        let link = |d: u32| EventBody::DeviceLinked {
            user: U,
            device: DeviceId(d),
            identity_key: vec![d as u8],
            name: "d".into(),
        };
        fold(&mut s, link(1));
        fold(&mut s, link(2));
        let upload = EventBody::DeviceKeysUploaded {
            user: U,
            device: DeviceId(1),
            prekeys: (1..=20).map(pk).collect(),
            fallback_key: Some(pk(100)),
            fallback_signature: vec![5],
        };
        assert!(fold(&mut s, upload).is_empty());
        let list = device_keys::list(&s.begin(), U).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!((list[0].0.identity_key.clone(), list[0].1), (vec![1], 20));
        assert_eq!((list[0].0.fallback_key.clone(), list[0].0.fallback_signature.clone()), (Some(pk(100)), vec![5]));
        assert_eq!((list[1].0.fallback_key.clone(), list[1].1), (None, 0));
        let claim = |ids: &[(u32, u32)]| EventBody::DeviceKeysClaimed {
            user: U,
            claimed_by: UserId(8),
            claimed: ids.iter().map(|(d, id)| (DeviceId(*d), *id)).collect(),
        };
        // 20 → 19 crosses the watermark (once); 19 → 18 does not.
        assert_eq!(fold(&mut s, claim(&[(1, 1)])), vec![Effect::KeysLow { user: U, device: DeviceId(1), left: 19 }]);
        assert!(fold(&mut s, claim(&[(1, 2)])).is_empty());
        // The old single-key event counts too.
        fold(&mut s, EventBody::PrekeyClaimed { user: U, device: DeviceId(1), prekey_id: 3, claimed_by: UserId(8) });
        assert_eq!(device_keys::list(&s.begin(), U).unwrap()[0].1, 17);
        fold(&mut s, EventBody::DeviceUnlinked { user: U, device: DeviceId(1) });
        let list = device_keys::list(&s.begin(), U).unwrap();
        assert_eq!(list.iter().map(|(k, _)| k.device).collect::<Vec<_>>(), vec![DeviceId(2)]);
    }
}
