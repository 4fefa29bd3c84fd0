//! The push tokens view (issue 14): the push token of each device that set
//! one, read by the notifier ([`crate::push`]) to reach users with no device
//! online.
//!
//! # Rules
//! - `PushTokenSet` stores the device's token and platform; an empty token
//!   removes it.
//! - `DeviceUnlinked` and `SessionRevoked` (logout) remove the device's
//!   token: a device that is gone or logged out is not woken up.
//!
//! # Cost
//! One write per event; a user's tokens are one prefix scan (at most
//! `MAX_DEVICES_PER_USER`).

use chorus_schema::{DeviceId, EventBody, EventRecord, UserId};
use serde::{Deserialize, Serialize};

use super::Effect;
use crate::store::{decode, for_each_prefix, keys, put_value, Txn};
use crate::Result;

/// A device's push token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushToken {
    pub token: String,
    pub platform: String,
}

/// Folds `PushTokenSet`, `DeviceUnlinked` and `SessionRevoked`; ignores every
/// other event.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn apply<T: Txn + ?Sized>(txn: &mut T, record: &EventRecord, _effects: &mut Vec<Effect>) -> Result<()> {
    match &record.event.body {
        EventBody::PushTokenSet { user, device, token, platform } => {
            let key = keys::push_token(*user, *device);
            if token.is_empty() {
                txn.delete(&key);
            } else {
                put_value(txn, &key, &PushToken { token: token.clone(), platform: platform.clone() });
            }
        }
        EventBody::DeviceUnlinked { user, device } | EventBody::SessionRevoked { user, device } => {
            txn.delete(&keys::push_token(*user, *device));
        }
        _ => {}
    }
    Ok(())
}

/// The push tokens of `user`'s devices, in device order.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn tokens<T: Txn + ?Sized>(txn: &T, user: UserId) -> Result<Vec<(DeviceId, PushToken)>> {
    let mut out = Vec::new();
    for_each_prefix(txn, &keys::push_tokens_of(user), |k, v| {
        out.push((DeviceId(keys::u32_at(k, keys::AFTER_USER)), decode(k, v)?));
        Ok::<_, crate::Error>(())
    })?;
    Ok(out)
}
