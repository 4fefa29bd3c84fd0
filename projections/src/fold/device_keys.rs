//! The E2EE key directory (issue 14), a key family of the directory view
//! (`0x53 ‖ user ‖ device`): each linked device's identity key, its fallback
//! key and signature, and its count of unclaimed one-time keys — what an
//! edge needs to answer `GetDeviceKeys` and to send `KeysLow` at login
//! without the log.
//!
//! # Rules
//! The same as the state machine's (`chorus_partition`, module `keys`):
//! - `DeviceLinked` creates the entry with the identity key; `DeviceUnlinked`
//!   drops it.
//! - `PrekeysUploaded` and `DeviceKeysUploaded` add their one-time keys to
//!   the count; a `DeviceKeysUploaded` with a fallback key replaces it.
//! - `PrekeyClaimed` and each key of a `DeviceKeysClaimed` take one off.
//!
//! Effect: a claim that takes a device from at least
//! [`PREKEYS_LOW_WATERMARK`] to below it gives an [`Effect::KeysLow`].
//! Events of a device without an entry (unlinked meanwhile) are ignored.

use chorus_schema::{DeviceId, DeviceKeys, EventBody, Prekey, UserId, PREKEYS_LOW_WATERMARK};
use serde::{Deserialize, Serialize};

use super::Effect;
use crate::store::{decode, for_each_prefix, get_value, keys, put_value, Txn};
use crate::Result;

/// One linked device's keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub identity_key: Vec<u8>,
    pub fallback: Option<(Prekey, Vec<u8>)>,
    pub one_time_keys_left: u32,
}

fn change<T: Txn + ?Sized>(
    txn: &mut T,
    user: UserId,
    device: DeviceId,
    f: impl FnOnce(&mut Entry),
) -> Result<Option<(u32, u32)>> {
    let key = keys::device_keys(user, device);
    let Some(mut e) = get_value::<Entry, _>(txn, &key)? else { return Ok(None) };
    let before = e.one_time_keys_left;
    f(&mut e);
    let after = e.one_time_keys_left;
    put_value(txn, &key, &e);
    Ok(Some((before, after)))
}

fn low(user: UserId, device: DeviceId, counts: Option<(u32, u32)>, effects: &mut Vec<Effect>) {
    if let Some((before, after)) = counts {
        if before >= PREKEYS_LOW_WATERMARK && after < PREKEYS_LOW_WATERMARK {
            effects.push(Effect::KeysLow { user, device, left: after });
        }
    }
}

/// Folds one event into the key directory (called by the directory view).
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn apply<T: Txn + ?Sized>(txn: &mut T, body: &EventBody, effects: &mut Vec<Effect>) -> Result<()> {
    let n = |len: usize| u32::try_from(len).unwrap_or(u32::MAX);
    match body {
        EventBody::DeviceLinked { user, device, identity_key, .. } => {
            let e = Entry { identity_key: identity_key.clone(), ..Entry::default() };
            put_value(txn, &keys::device_keys(*user, *device), &e);
        }
        EventBody::DeviceUnlinked { user, device } => txn.delete(&keys::device_keys(*user, *device)),
        EventBody::PrekeysUploaded { user, device, prekeys } => {
            change(txn, *user, *device, |e| {
                e.one_time_keys_left = e.one_time_keys_left.saturating_add(n(prekeys.len()))
            })?;
        }
        EventBody::DeviceKeysUploaded { user, device, prekeys, fallback_key, fallback_signature } => {
            change(txn, *user, *device, |e| {
                e.one_time_keys_left = e.one_time_keys_left.saturating_add(n(prekeys.len()));
                if let Some(k) = fallback_key {
                    e.fallback = Some((k.clone(), fallback_signature.clone()));
                }
            })?;
        }
        EventBody::PrekeyClaimed { user, device, .. } => {
            let counts =
                change(txn, *user, *device, |e| e.one_time_keys_left = e.one_time_keys_left.saturating_sub(1))?;
            low(*user, *device, counts, effects);
        }
        EventBody::DeviceKeysClaimed { user, claimed, .. } => {
            for (device, _) in claimed {
                let counts =
                    change(txn, *user, *device, |e| e.one_time_keys_left = e.one_time_keys_left.saturating_sub(1))?;
                low(*user, *device, counts, effects);
            }
        }
        _ => {}
    }
    Ok(())
}

/// The linked devices of `user` with their keys (no one-time key) and their
/// unclaimed one-time key counts, in device order.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn list<T: Txn + ?Sized>(txn: &T, user: UserId) -> Result<Vec<(DeviceKeys, u32)>> {
    let mut out = Vec::new();
    for_each_prefix(txn, &keys::device_keys_of(user), |k, v| -> Result<()> {
        let e: Entry = decode(k, v)?;
        let (fallback_key, fallback_signature) = match e.fallback {
            Some((k, s)) => (Some(k), s),
            None => (None, Vec::new()),
        };
        let device = DeviceId(keys::u32_at(k, keys::AFTER_USER));
        let dk =
            DeviceKeys { device, identity_key: e.identity_key, one_time_key: None, fallback_key, fallback_signature };
        out.push((dk, e.one_time_keys_left));
        Ok(())
    })?;
    Ok(out)
}
