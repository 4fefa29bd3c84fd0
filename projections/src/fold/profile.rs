//! The profile view: each user's profile (name, about, picture), privacy
//! settings and blocks; and [`visible`], the profile as another user may see it.
//!
//! # Rules of reading (as WhatsApp does)
//! - The name is always visible (it is what a chat shows).
//! - The about text and the picture follow their privacy setting:
//!   `Everyone`; `Contacts`: the viewer is in the *owner's* contact list
//!   (the contacts view); `Nobody`. The owner always sees their own.
//! - A user the owner blocks sees neither, whatever the settings.
//!
//! Folds `ProfileUpdated`, `PrivacyChanged`, `UserBlocked`, `UserUnblocked`.

use chorus_schema::{EventBody, EventRecord, MediaRef, Profile, UserId, Visibility};
use serde::{Deserialize, Serialize};

use super::{contacts, Effect};
use crate::store::{get_value, keys, put_value, Txn};
use crate::Result;

/// What the view keeps per user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// A `ProfileUpdated` was folded.
    pub set: bool,
    pub name: String,
    pub about: String,
    pub avatar: Option<MediaRef>,
    pub last_seen: Visibility,
    pub profile_photo: Visibility,
    pub about_visibility: Visibility,
    pub read_receipts: bool,
}

impl Default for Stored {
    fn default() -> Stored {
        Stored {
            set: false,
            name: String::new(),
            about: String::new(),
            avatar: None,
            last_seen: Visibility::Everyone,
            profile_photo: Visibility::Everyone,
            about_visibility: Visibility::Everyone,
            read_receipts: true,
        }
    }
}

/// Folds one event; ignores those it does not know.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn apply<T: Txn + ?Sized>(txn: &mut T, record: &EventRecord, _effects: &mut Vec<Effect>) -> Result<()> {
    match &record.event.body {
        EventBody::ProfileUpdated { user, name, about, avatar } => {
            let mut p = stored(txn, *user)?;
            p.set = true;
            p.name.clone_from(name);
            p.about.clone_from(about);
            p.avatar.clone_from(avatar);
            put_value(txn, &keys::profile(*user), &p);
        }
        EventBody::PrivacyChanged { user, last_seen, profile_photo, about, read_receipts } => {
            let mut p = stored(txn, *user)?;
            p.last_seen = *last_seen;
            p.profile_photo = *profile_photo;
            p.about_visibility = *about;
            p.read_receipts = *read_receipts;
            put_value(txn, &keys::profile(*user), &p);
        }
        EventBody::UserBlocked { user, target } => txn.put(&keys::profile_block(*user, *target), &[]),
        EventBody::UserUnblocked { user, target } => txn.delete(&keys::profile_block(*user, *target)),
        _ => {}
    }
    Ok(())
}

/// What the view holds for `user` (defaults if nothing was folded).
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn stored<T: Txn + ?Sized>(txn: &T, user: UserId) -> Result<Stored> {
    Ok(get_value(txn, &keys::profile(user))?.unwrap_or_default())
}

/// Whether `user` blocks `target`.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn blocks<T: Txn + ?Sized>(txn: &T, user: UserId, target: UserId) -> Result<bool> {
    Ok(txn.get(&keys::profile_block(user, target))?.is_some())
}

/// Whether `viewer` may see a part of `owner`'s profile under `setting`.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn may_see<T: Txn + ?Sized>(txn: &T, viewer: UserId, owner: UserId, setting: Visibility) -> Result<bool> {
    if viewer == owner {
        return Ok(true);
    }
    if blocks(txn, owner, viewer)? {
        return Ok(false);
    }
    Ok(match setting {
        Visibility::Everyone => true,
        Visibility::Contacts => contacts::contains(txn, owner, viewer)?,
        Visibility::Nobody => false,
    })
}

/// `user`'s profile as `viewer` may see it (see the module docs).
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn visible<T: Txn + ?Sized>(txn: &T, viewer: UserId, user: UserId) -> Result<Profile> {
    let p = stored(txn, user)?;
    let about = may_see(txn, viewer, user, p.about_visibility)?.then(|| p.about.clone()).filter(|_| p.set);
    let avatar = if may_see(txn, viewer, user, p.profile_photo)? { p.avatar.clone() } else { None };
    Ok(Profile { user, found: p.set, name: p.name, about, avatar })
}

#[cfg(test)]
mod tests {
    use chorus_schema::{ClientMsgId, DeviceId, Event, LogIndex, Offset, Origin, PartitionId};

    use super::*;
    use crate::store::MemStore;

    const A: UserId = UserId(1);
    const B: UserId = UserId(2);
    const C: UserId = UserId(3);

    fn fold(store: &mut MemStore, bodies: Vec<EventBody>) {
        for (i, body) in bodies.into_iter().enumerate() {
            let origin = Origin { user: A, device: DeviceId(1), client_msg_id: ClientMsgId(i as u64) };
            let r = EventRecord {
                partition: PartitionId(0),
                offset: Offset(i as u64),
                log_index: LogIndex(i as u64),
                event: Event { at_ms: 0, origin, body },
            };
            let mut txn = store.begin();
            apply(&mut txn, &r, &mut Vec::new()).unwrap();
            contacts::apply(&mut txn, &r, &mut Vec::new()).unwrap();
            txn.commit();
        }
    }

    fn privacy(photo: Visibility, about: Visibility) -> EventBody {
        EventBody::PrivacyChanged {
            user: A,
            last_seen: Visibility::Everyone,
            profile_photo: photo,
            about,
            read_receipts: true,
        }
    }

    #[test]
    fn privacy_contacts_and_blocks() {
        let mut store = MemStore::new();
        assert!(!visible(&store.begin(), B, A).unwrap().found);
        let avatar = MediaRef { blake3: [1; 32], size: 1, mime: "image/png".into() };
        fold(
            &mut store,
            vec![
                EventBody::ContactsUpdated { user: A, contacts: vec![B] },
                EventBody::ProfileUpdated { user: A, name: "a".into(), about: "hi".into(), avatar: Some(avatar) },
            ],
        );
        let sees = |store: &mut MemStore, v| {
            let p = visible(&store.begin(), v, A).unwrap();
            assert_eq!(p.name, "a");
            (p.about.is_some(), p.avatar.is_some())
        };
        assert_eq!((sees(&mut store, B), sees(&mut store, C)), ((true, true), (true, true)));
        fold(&mut store, vec![privacy(Visibility::Contacts, Visibility::Nobody)]);
        assert_eq!(
            (sees(&mut store, B), sees(&mut store, C), sees(&mut store, A)),
            ((false, true), (false, false), (true, true))
        );
        fold(&mut store, vec![EventBody::UserBlocked { user: A, target: B }]);
        assert_eq!(sees(&mut store, B), (false, false));
        fold(&mut store, vec![EventBody::UserUnblocked { user: A, target: B }]);
        assert_eq!(sees(&mut store, B), (false, true));
    }
}
