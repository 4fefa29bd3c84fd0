//! The contacts view: each user's contact list, as their last
//! `ContactsUpdated` set it (the partition stores it sorted, without
//! duplicates and without the user). "My contacts" in privacy settings means
//! these users.
//!
//! Each `ContactsUpdated` replaces the list and gives an
//! [`Effect::Presence`] without a presence (`presence: None`): who may see the
//! user's presence may have changed, so edges ask again for their watchers.
//!
//! # Cost
//! A list update deletes the old list and writes the new one: at most
//! `MAX_CONTACTS` keys each way; a membership check is one point read.

use chorus_schema::{EventBody, EventRecord, UserId, MAX_CONTACTS};

use super::Effect;
use crate::store::{keys, Txn};
use crate::Result;

/// Folds a `ContactsUpdated`; ignores every other event.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails; [`crate::Error::OverBound`]
/// if the stored list is longer than the log allows.
pub fn apply<T: Txn + ?Sized>(txn: &mut T, record: &EventRecord, effects: &mut Vec<Effect>) -> Result<()> {
    let EventBody::ContactsUpdated { user, contacts } = &record.event.body else { return Ok(()) };
    for (k, _) in txn.scan_prefix(&keys::contacts_of(*user), MAX_CONTACTS)? {
        txn.delete(&k);
    }
    for c in contacts {
        txn.put(&keys::contact(*user, *c), &[]);
    }
    effects.push(Effect::Presence { user: *user, presence: None });
    Ok(())
}

/// Whether `contact` is in `user`'s contact list.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn contains<T: Txn + ?Sized>(txn: &T, user: UserId, contact: UserId) -> Result<bool> {
    Ok(txn.get(&keys::contact(user, contact))?.is_some())
}

/// `user`'s contact list, sorted.
///
/// # Errors
/// As [`apply`].
pub fn list<T: Txn + ?Sized>(txn: &T, user: UserId) -> Result<Vec<UserId>> {
    Ok(txn
        .scan_prefix(&keys::contacts_of(user), MAX_CONTACTS)?
        .into_iter()
        .map(|(k, _)| UserId(keys::u64_at(&k, keys::AFTER_USER)))
        .collect())
}
