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

#[cfg(test)]
mod tests {
    use chorus_schema::{ClientMsgId, Event, LogIndex, Offset, Origin, PartitionId};

    use super::*;
    use crate::store::MemStore;

    const A: UserId = UserId(1);

    fn record(at_ms: u64, body: EventBody) -> EventRecord {
        let origin = Origin { user: A, device: DeviceId(1), client_msg_id: ClientMsgId(at_ms) };
        EventRecord {
            partition: PartitionId(0),
            offset: Offset(at_ms),
            log_index: LogIndex(at_ms),
            event: Event { at_ms, origin, body },
        }
    }

    fn set(device: u32, token: &str) -> EventBody {
        EventBody::PushTokenSet { user: A, device: DeviceId(device), token: token.into(), platform: "fcm".into() }
    }

    fn devices(store: &mut MemStore) -> Vec<(u32, String)> {
        tokens(&store.begin(), A).unwrap().into_iter().map(|(d, t)| (d.0, t.token)).collect()
    }

    #[test]
    fn set_replace_clear_and_drop_with_the_device() {
        let mut store = MemStore::new();
        let fold = |store: &mut MemStore, at, body| {
            let mut txn = store.begin();
            apply(&mut txn, &record(at, body), &mut Vec::new()).unwrap();
            txn.commit();
        };
        fold(&mut store, 1, set(1, "a"));
        fold(&mut store, 2, set(2, "b"));
        fold(&mut store, 3, set(1, "a2"));
        assert_eq!(devices(&mut store), [(1, "a2".to_owned()), (2, "b".to_owned())]);
        fold(&mut store, 4, set(2, ""));
        assert_eq!(devices(&mut store), [(1, "a2".to_owned())]);
        fold(&mut store, 5, set(2, "b"));
        fold(&mut store, 6, EventBody::DeviceUnlinked { user: A, device: DeviceId(1) });
        fold(&mut store, 7, EventBody::SessionRevoked { user: A, device: DeviceId(2) });
        assert!(devices(&mut store).is_empty(), "unlinked and logged-out devices are not woken");
    }
}
