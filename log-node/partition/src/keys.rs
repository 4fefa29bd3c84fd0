//! The E2EE key directory of a user (issue 14): each device's identity key
//! and fallback key (an `i ‖ user ‖ device` record), next to its one-time
//! prekeys (`p ‖ user ‖ device ‖ id`, see `user`).
//!
//! # Rules
//! - `UploadDeviceKeys` (origin device, linked, else `Invalid`): one-time
//!   keys with ids above every id the device ever uploaded, no id twice, at
//!   most [`MAX_PREKEYS_PER_DEVICE`] unclaimed; and/or a fallback key with
//!   its (non-empty) signature, which replaces the earlier one. Nothing to
//!   upload is `Invalid`. Answers the device's unclaimed count.
//! - `ClaimDeviceKeys { target }` (key: the target): one `DeviceKeysClaimed`
//!   event that consumes the lowest unclaimed one-time key of every device
//!   of the target that has one; the others hand out their fallback key (not
//!   consumed). Each one-time key is handed out at most once (the record is
//!   deleted by the fold, and ids are never reused). An unregistered target
//!   is `UnknownUser`; a target without devices `NoPrekeys`. Answers the
//!   bundle: every device with its identity key, its claimed one-time key (if
//!   any) and its fallback key and signature.
//! - Unlinking a device drops its keys (prekeys, identity, fallback).

use std::collections::BTreeSet;

use chorus_schema::{DeviceId, DeviceKeys, EventBody, Outcome, Prekey, RejectCode, Rejection, UserId};
use serde::{Deserialize, Serialize};

use crate::kv::{self, Key, Kv};
use crate::user::{head, UserHead, MAX_PREKEYS_PER_DEVICE};

/// `i ‖ user ‖ device`: [`DeviceKeyRecord`].
pub(crate) const DEVICE_KEYS: u8 = b'i';

/// A linked device's identity key (from `DeviceLinked`) and its fallback key
/// with the device's signature over it (from the last upload that had one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceKeyRecord {
    pub identity_key: Vec<u8>,
    pub fallback: Option<(Prekey, Vec<u8>)>,
}

fn record_key(user: UserId, device: DeviceId) -> Key {
    Key::new(DEVICE_KEYS).user(user).device(device)
}

pub(crate) fn record(kv: &impl Kv, user: UserId, device: DeviceId) -> DeviceKeyRecord {
    kv::read(kv, &record_key(user, device)).unwrap_or_default()
}

fn reject(code: RejectCode, message: impl Into<String>) -> Rejection {
    Rejection::new(code, message)
}

/// Checks one-time keys against the device's history (`high`: the highest id
/// it ever uploaded) and its room (`held`: unclaimed now).
pub(crate) fn check_prekeys(
    device: DeviceId,
    prekeys: &[Prekey],
    high: Option<u32>,
    held: u32,
) -> Result<(), Rejection> {
    let mut ids = BTreeSet::new();
    for p in prekeys {
        if high.is_some_and(|h| p.id <= h) {
            return Err(reject(
                RejectCode::Invalid,
                format!("prekey id {} is not above the highest id ever uploaded for device {device}", p.id),
            ));
        }
        if !ids.insert(p.id) {
            return Err(reject(RejectCode::Invalid, format!("prekey id {} appears twice", p.id)));
        }
    }
    if held as usize + prekeys.len() > MAX_PREKEYS_PER_DEVICE {
        return Err(reject(
            RejectCode::Invalid,
            format!("a device holds at most {MAX_PREKEYS_PER_DEVICE} prekeys ({held} unclaimed now)"),
        ));
    }
    Ok(())
}

/// Decides `UploadDeviceKeys` of `device` of `user` (registered: `u`).
pub(crate) fn decide_upload(
    u: &UserHead,
    user: UserId,
    device: DeviceId,
    prekeys: &[Prekey],
    fallback_key: &Option<Prekey>,
    fallback_signature: &[u8],
) -> Result<(EventBody, Outcome), Rejection> {
    let d =
        u.devices.get(&device).ok_or_else(|| reject(RejectCode::Invalid, format!("device {device} is not linked")))?;
    if prekeys.is_empty() && fallback_key.is_none() {
        return Err(reject(RejectCode::Invalid, "no keys to upload (neither one-time keys nor a fallback key)"));
    }
    match (fallback_key, fallback_signature.is_empty()) {
        (Some(_), true) => return Err(reject(RejectCode::Invalid, "a fallback key needs its signature")),
        (None, false) => return Err(reject(RejectCode::Invalid, "a fallback signature without a fallback key")),
        _ => {}
    }
    check_prekeys(device, prekeys, u.prekey_high.get(&device).copied(), d.prekeys)?;
    let left = d.prekeys.saturating_add(u32::try_from(prekeys.len()).unwrap_or(u32::MAX));
    let event = EventBody::DeviceKeysUploaded {
        user,
        device,
        prekeys: prekeys.to_vec(),
        fallback_key: fallback_key.clone(),
        fallback_signature: fallback_signature.to_vec(),
    };
    Ok((event, Outcome::KeysUploaded { one_time_keys_left: left }))
}

/// Decides `ClaimDeviceKeys` of `target` by `me`.
pub(crate) fn decide_claim(kv: &impl Kv, me: UserId, target: UserId) -> Result<(EventBody, Outcome), Rejection> {
    let u = head(kv, target).ok_or_else(|| reject(RejectCode::UnknownUser, format!("no user {target}")))?;
    if u.devices.is_empty() {
        return Err(reject(RejectCode::NoPrekeys, format!("user {target} has no linked devices")));
    }
    let claimed: Vec<(DeviceId, u32)> =
        u.devices.keys().filter_map(|d| first_prekey_id(kv, target, *d).map(|id| (*d, id))).collect();
    let event = EventBody::DeviceKeysClaimed { user: target, claimed_by: me, claimed };
    let outcome = bundle(kv, &event);
    Ok((event, outcome))
}

fn first_prekey_id(kv: &impl Kv, user: UserId, device: DeviceId) -> Option<u32> {
    let prefix = Key::new(kv::PREKEY).user(user).device(device);
    kv.scan(prefix.bytes(), 1).into_iter().next().map(|(k, _)| kv::u32_at(&k, 13))
}

fn prekey_key(user: UserId, device: DeviceId, id: u32) -> Key {
    Key::new(kv::PREKEY).user(user).device(device).u32(id)
}

/// The outcome of a `DeviceKeysUploaded` or `DeviceKeysClaimed` from the
/// state before its fold (what a retry is answered); `None` for other events.
pub(crate) fn outcome_of(kv: &impl Kv, event: &EventBody) -> Option<Outcome> {
    match event {
        EventBody::DeviceKeysUploaded { user, device, prekeys, .. } => {
            let held = head(kv, *user).and_then(|u| u.devices.get(device).map(|d| d.prekeys)).unwrap_or(0);
            let new = prekeys.iter().filter(|p| kv.get(prekey_key(*user, *device, p.id).bytes()).is_none()).count();
            Some(Outcome::KeysUploaded {
                one_time_keys_left: held.saturating_add(u32::try_from(new).unwrap_or(u32::MAX)),
            })
        }
        EventBody::DeviceKeysClaimed { .. } => Some(bundle(kv, event)),
        _ => None,
    }
}

/// The bundle a `DeviceKeysClaimed` hands out, from the state before its fold.
fn bundle(kv: &impl Kv, event: &EventBody) -> Outcome {
    let EventBody::DeviceKeysClaimed { user, claimed, .. } = event else { return Outcome::Done };
    let devices = head(kv, *user).map(|u| u.devices.keys().copied().collect::<Vec<_>>()).unwrap_or_default();
    let devices = devices
        .into_iter()
        .map(|device| {
            let r = record(kv, *user, device);
            let one_time_key = claimed
                .iter()
                .find(|(d, _)| *d == device)
                .and_then(|(_, id)| kv.get(prekey_key(*user, device, *id).bytes()).map(|key| Prekey { id: *id, key }));
            let (fallback_key, fallback_signature) = match r.fallback {
                Some((k, s)) => (Some(k), s),
                None => (None, Vec::new()),
            };
            DeviceKeys { device, identity_key: r.identity_key, one_time_key, fallback_key, fallback_signature }
        })
        .collect();
    Outcome::KeyBundle { user: *user, devices }
}

/// Folds the key-directory part of a user event into `u` and the records.
pub(crate) fn fold(kv: &mut impl Kv, user: UserId, u: &mut UserHead, event: &EventBody) {
    match event {
        EventBody::DeviceLinked { device, identity_key, .. } => {
            let r = DeviceKeyRecord { identity_key: identity_key.clone(), fallback: None };
            kv::write(kv, &record_key(user, *device), &r);
        }
        EventBody::DeviceUnlinked { device, .. } => kv.delete(record_key(user, *device).bytes()),
        EventBody::DeviceKeysUploaded { device, prekeys, fallback_key, fallback_signature, .. } => {
            crate::user::store_prekeys(kv, u, user, *device, prekeys);
            if let Some(k) = fallback_key {
                let mut r = record(kv, user, *device);
                r.fallback = Some((k.clone(), fallback_signature.clone()));
                kv::write(kv, &record_key(user, *device), &r);
            }
        }
        EventBody::DeviceKeysClaimed { claimed, .. } => {
            for (device, id) in claimed {
                if let Some(d) = u.devices.get_mut(device) {
                    let key = prekey_key(user, *device, *id);
                    if kv.get(key.bytes()).is_some() {
                        kv.delete(key.bytes());
                        d.prekeys -= 1;
                    }
                }
            }
        }
        _ => {}
    }
}
