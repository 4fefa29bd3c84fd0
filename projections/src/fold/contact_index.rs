//! The contact index: the contact-sync hash of every registered phone number
//! (`blake3::keyed_hash(contact_key, E.164)`, see `chorus_schema::social`)
//! → its user, so that uploaded hashes are answered without phone numbers.
//!
//! The key is the deployment's ([`crate::Projection::with_contact_key`]): a
//! rebuild must use the same key (`chorus replay --view-key`) to equal the
//! live view. Folds `UserRegistered`.

use chorus_schema::{ContactMatch, EventBody, EventRecord, UserId};

use super::Effect;
use crate::store::{get_value, keys, put_value, Txn};
use crate::Result;

/// Folds `UserRegistered` under `key`; ignores every other event.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn apply<T: Txn + ?Sized>(
    txn: &mut T,
    key: &[u8; 32],
    record: &EventRecord,
    _effects: &mut Vec<Effect>,
) -> Result<()> {
    if let EventBody::UserRegistered { user, phone } = &record.event.body {
        // A phone that does not normalize was never registered through an
        // edge (tests append raw commands): it cannot be looked up.
        if let Ok(hash) = chorus_schema::social::contact_hash(key, phone) {
            put_value(txn, &keys::contact_index(&hash), user);
        }
    }
    Ok(())
}

/// The registered users among `hashes`, in the order asked (each once).
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn lookup<T: Txn + ?Sized>(txn: &T, hashes: &[[u8; 32]]) -> Result<Vec<ContactMatch>> {
    let mut out: Vec<ContactMatch> = Vec::new();
    for h in hashes {
        if let Some(user) = get_value::<UserId, _>(txn, &keys::contact_index(h))? {
            if !out.iter().any(|m| m.hash == *h) {
                out.push(ContactMatch { hash: *h, user });
            }
        }
    }
    Ok(out)
}
