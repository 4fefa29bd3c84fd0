//! The contacts view: each user's contact list as last uploaded
//! (`ContactsUpdated` replaces it), what privacy rules read ("my contacts").
//!
//! Minimal on purpose: user → set of contact user ids, one key per pair.

use chorus_schema::{EventBody, EventRecord, UserId};

use super::Effect;
use crate::store::{for_each_prefix, keys, Txn};
use crate::Result;

/// Folds `ContactsUpdated`; ignores every other event.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn apply<T: Txn + ?Sized>(txn: &mut T, record: &EventRecord, _effects: &mut Vec<Effect>) -> Result<()> {
    if let EventBody::ContactsUpdated { user, contacts } = &record.event.body {
        for old in self::contacts(txn, *user)? {
            txn.delete(&keys::contact(*user, old));
        }
        for c in contacts {
            txn.put(&keys::contact(*user, *c), &[]);
        }
    }
    Ok(())
}

/// Whether `other` is in `user`'s contact list.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn is_contact<T: Txn + ?Sized>(txn: &T, user: UserId, other: UserId) -> Result<bool> {
    Ok(txn.get(&keys::contact(user, other))?.is_some())
}

/// `user`'s contacts, in id order.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn contacts<T: Txn + ?Sized>(txn: &T, user: UserId) -> Result<Vec<UserId>> {
    let mut out = Vec::new();
    for_each_prefix(txn, &keys::contacts_of(user), |k, _| -> Result<()> {
        out.push(UserId(keys::u64_at(k, keys::AFTER_USER)));
        Ok(())
    })?;
    Ok(out)
}
