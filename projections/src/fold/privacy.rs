//! The privacy view: each user's privacy settings (`PrivacyChanged`) and the
//! users they block (`UserBlocked`, `UserUnblocked`), and the rule of who
//! may see a user's presence ([`may_see_presence`]).
//!
//! Every one of these events gives an [`Effect::Presence`] without a
//! presence (`presence: None`): who may see the user's presence may have
//! changed, so edges ask again for the user's watchers (see the edge's
//! presence hub). A user who never set privacy has the defaults
//! ([`Privacy::default`]: everyone sees their last seen, photo and about).
//!
//! # Cost
//! One write per event; the rule reads at most three keys (the block, the
//! settings, the contact).

use chorus_schema::{EventBody, EventRecord, UserId, Visibility};
use serde::{Deserialize, Serialize};

use super::{contacts, Effect};
use crate::store::{get_value, keys, put_value, Txn};
use crate::Result;

/// A user's privacy settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Privacy {
    pub last_seen: Visibility,
    pub profile_photo: Visibility,
    pub about: Visibility,
    pub read_receipts: bool,
}

impl Default for Privacy {
    fn default() -> Privacy {
        Privacy {
            last_seen: Visibility::Everyone,
            profile_photo: Visibility::Everyone,
            about: Visibility::Everyone,
            read_receipts: true,
        }
    }
}

/// Folds `PrivacyChanged`, `UserBlocked` and `UserUnblocked`; ignores every
/// other event.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn apply<T: Txn + ?Sized>(txn: &mut T, record: &EventRecord, effects: &mut Vec<Effect>) -> Result<()> {
    let user = match &record.event.body {
        EventBody::PrivacyChanged { user, last_seen, profile_photo, about, read_receipts } => {
            let p = Privacy {
                last_seen: *last_seen,
                profile_photo: *profile_photo,
                about: *about,
                read_receipts: *read_receipts,
            };
            put_value(txn, &keys::privacy(*user), &p);
            *user
        }
        EventBody::UserBlocked { user, target } => {
            txn.put(&keys::block(*user, *target), &[]);
            *user
        }
        EventBody::UserUnblocked { user, target } => {
            txn.delete(&keys::block(*user, *target));
            *user
        }
        _ => return Ok(()),
    };
    effects.push(Effect::Presence { user, presence: None });
    Ok(())
}

/// `user`'s privacy settings (the defaults if never set).
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn settings<T: Txn + ?Sized>(txn: &T, user: UserId) -> Result<Privacy> {
    Ok(get_value(txn, &keys::privacy(user))?.unwrap_or_default())
}

/// Whether `user` blocks `target`.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn blocks<T: Txn + ?Sized>(txn: &T, user: UserId, target: UserId) -> Result<bool> {
    Ok(txn.get(&keys::block(user, target))?.is_some())
}

/// Whether `viewer` may see what `target` shares with `visibility`: never if
/// `target` blocks `viewer`; else everyone, `target`'s contacts, or nobody.
/// A user always sees their own.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn may_see<T: Txn + ?Sized>(txn: &T, target: UserId, viewer: UserId, visibility: Visibility) -> Result<bool> {
    if target == viewer {
        return Ok(true);
    }
    if blocks(txn, target, viewer)? {
        return Ok(false);
    }
    Ok(match visibility {
        Visibility::Everyone => true,
        Visibility::Contacts => contacts::contains(txn, target, viewer)?,
        Visibility::Nobody => false,
    })
}

/// Whether `viewer` may see `target`'s presence (online and last seen: the
/// last-seen setting covers both, like WhatsApp's "same as last seen").
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn may_see_presence<T: Txn + ?Sized>(txn: &T, target: UserId, viewer: UserId) -> Result<bool> {
    may_see(txn, target, viewer, settings(txn, target)?.last_seen)
}
