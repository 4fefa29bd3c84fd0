//! The cursors view: per (chat, user, device) the delivered and read cursors,
//! from `Receipt` events.
//!
//! Cursors are cumulative: each only moves forward (a receipt below the cursor
//! changes nothing), and a `Read` receipt moves the delivered cursor too, so
//! `read <= delivered` always. Cursors outlive membership, as in the state
//! machine: a member who comes back never sees a cursor go backwards.

use std::collections::BTreeMap;

use chorus_schema::{ChatId, DeviceId, EventBody, EventRecord, UserId};

use super::Effect;
use crate::store::{decode, for_each_prefix, get_value, keys, put_value, Txn};
use crate::Result;

pub use chorus_schema::Cursors;

/// Folds a `Receipt` into its device's cursors; ignores every other event.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn apply<T: Txn + ?Sized>(txn: &mut T, record: &EventRecord, _effects: &mut Vec<Effect>) -> Result<()> {
    let event = &record.event;
    let EventBody::Receipt { chat, kind, up_to_seq } = &event.body else { return Ok(()) };
    let key = keys::cursors(chat, event.origin.user, event.origin.device);
    let before: Cursors = get_value(txn, &key)?.unwrap_or_default();
    let after = before.advance(*kind, *up_to_seq);
    assert!(after.read <= after.delivered, "read {} above delivered {}", after.read, after.delivered);
    if after != before {
        put_value(txn, &key, &after);
    }
    Ok(())
}

/// The cursors of one device (zero if it never acknowledged anything).
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn get<T: Txn + ?Sized>(txn: &T, chat: &ChatId, user: UserId, device: DeviceId) -> Result<Cursors> {
    Ok(get_value(txn, &keys::cursors(chat, user, device))?.unwrap_or_default())
}

/// The cursors of each of a user's devices that acknowledged something, in
/// device order.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn devices<T: Txn + ?Sized>(txn: &T, chat: &ChatId, user: UserId) -> Result<Vec<(DeviceId, Cursors)>> {
    let mut out = Vec::new();
    for_each_prefix(txn, &keys::cursors_of_user(chat, user), |k, v| -> Result<()> {
        out.push((DeviceId(keys::u32_at(k, keys::AFTER_CHAT_USER)), decode(k, v)?));
        Ok(())
    })?;
    Ok(out)
}

/// A user's cursors: for each kind, the largest over their devices (what "the
/// user has read up to" means).
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn of_user<T: Txn + ?Sized>(txn: &T, chat: &ChatId, user: UserId) -> Result<Cursors> {
    Ok(devices(txn, chat, user)?.into_iter().fold(Cursors::default(), |acc, (_, c)| acc.max(c)))
}

/// [`of_user`] for every user of the chat who acknowledged something (members or not).
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn of_chat<T: Txn + ?Sized>(txn: &T, chat: &ChatId) -> Result<BTreeMap<UserId, Cursors>> {
    let mut out: BTreeMap<UserId, Cursors> = BTreeMap::new();
    for_each_prefix(txn, &keys::cursors_of_chat(chat), |k, v| -> Result<()> {
        let user = UserId(keys::u64_at(k, keys::AFTER_CHAT));
        let c: Cursors = decode(k, v)?;
        let e = out.entry(user).or_default();
        *e = e.max(c);
        Ok(())
    })?;
    Ok(out)
}
