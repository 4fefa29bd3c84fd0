//! The media view (issue 14): every media object the log knows of — its
//! size, when it was last uploaded (`MediaUploaded`), and how many live
//! references hold it — for quota accounting and garbage collection.
//!
//! References: a message's media (`MessageSent.media`, ended by
//! `MessageDeleted`), a profile's avatar (`ProfileUpdated`, ended by the next
//! one), a group's icon (`GroupInfoChanged`, ended by the next one), and a
//! status post's media (held until the post's `expires_at_ms`, a time kept
//! on the object: a deterministic fold, and the collector compares it with
//! its clock). [`collectable`] is the collector's rule.

use chorus_schema::{ChatId, EventBody, EventRecord, MediaRef, Seq, UserId};
use serde::{Deserialize, Serialize};

use super::Effect;
use crate::store::{get_value, put_value, Txn};
use crate::Result;

/// Key tags of the view.
pub const MEDIA: u8 = 0xc0;
pub const MEDIA_HOLDER: u8 = 0xc1;

/// What the view knows of one object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaObject {
    /// Bytes (from the last upload or reference).
    pub size: u64,
    /// The log time of its last `MediaUploaded` (0: never recorded).
    pub uploaded_at_ms: u64,
    /// Live references of messages, avatars and icons.
    pub refs: u64,
    /// A status post references it until then.
    pub held_until_ms: u64,
}

/// `c0 ‖ blake3`.
pub fn object_key(blake3: &[u8; 32]) -> Vec<u8> {
    let mut k = vec![MEDIA];
    k.extend_from_slice(blake3);
    k
}

/// What holds a reference.
enum Holder {
    Message(ChatId, Seq),
    Avatar(UserId),
    Icon(ChatId),
}

/// `c1 ‖ kind ‖ id`.
fn holder_key(h: &Holder) -> Vec<u8> {
    let mut k = vec![MEDIA_HOLDER];
    match h {
        Holder::Message(chat, seq) => {
            k.push(1);
            k.extend_from_slice(chat.as_bytes());
            k.extend_from_slice(&seq.0.to_be_bytes());
        }
        Holder::Avatar(user) => {
            k.push(2);
            k.extend_from_slice(&user.0.to_be_bytes());
        }
        Holder::Icon(chat) => {
            k.push(3);
            k.extend_from_slice(chat.as_bytes());
        }
    }
    k
}

/// The object `blake3`, if the view knows it.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn object<T: Txn + ?Sized>(txn: &T, blake3: &[u8; 32]) -> Result<Option<MediaObject>> {
    Ok(get_value(txn, &object_key(blake3))?)
}

/// Whether the collector deletes a stored object: no live reference, no
/// status post holding it at `now_ms`, and its last upload (or, for an
/// object the log never recorded, its storing, `stored_ms`) older than
/// `grace_ms`.
pub fn collectable(known: Option<&MediaObject>, stored_ms: u64, now_ms: u64, grace_ms: u64) -> bool {
    let old = |at: u64| at.saturating_add(grace_ms) <= now_ms;
    match known {
        None => old(stored_ms),
        Some(o) => o.refs == 0 && o.held_until_ms <= now_ms && old(o.uploaded_at_ms.max(stored_ms)),
    }
}

fn change<T: Txn + ?Sized>(txn: &mut T, blake3: &[u8; 32], f: impl FnOnce(&mut MediaObject)) -> Result<()> {
    let key = object_key(blake3);
    let mut o: MediaObject = get_value(txn, &key)?.unwrap_or_default();
    f(&mut o);
    put_value(txn, &key, &o);
    Ok(())
}

/// Points `holder` at `media` (none: at nothing), moving its reference.
fn hold<T: Txn + ?Sized>(txn: &mut T, holder: &Holder, media: Option<&MediaRef>) -> Result<()> {
    let key = holder_key(holder);
    if let Some(old) = txn.get(&key)? {
        if let Ok(old) = <[u8; 32]>::try_from(old.as_slice()) {
            change(txn, &old, |o| o.refs = o.refs.saturating_sub(1))?;
        }
        txn.delete(&key);
    }
    if let Some(m) = media {
        change(txn, &m.blake3, |o| {
            o.refs += 1;
            o.size = m.size;
        })?;
        txn.put(&key, &m.blake3);
    }
    Ok(())
}

/// Folds one event.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn apply<T: Txn + ?Sized>(txn: &mut T, record: &EventRecord, _effects: &mut Vec<Effect>) -> Result<()> {
    let at_ms = record.event.at_ms;
    match &record.event.body {
        EventBody::MediaUploaded { blake3, size, .. } => change(txn, blake3, |o| {
            o.size = *size;
            o.uploaded_at_ms = o.uploaded_at_ms.max(at_ms);
        })?,
        EventBody::MessageSent { chat, seq, media: Some(m), .. } => hold(txn, &Holder::Message(*chat, *seq), Some(m))?,
        EventBody::MessageDeleted { chat, target, .. } => hold(txn, &Holder::Message(*chat, *target), None)?,
        EventBody::ProfileUpdated { user, avatar, .. } => hold(txn, &Holder::Avatar(*user), avatar.as_ref())?,
        EventBody::GroupInfoChanged { chat, icon, .. } => hold(txn, &Holder::Icon(*chat), icon.as_ref())?,
        EventBody::StatusPosted { media: Some(m), expires_at_ms, .. } => change(txn, &m.blake3, |o| {
            o.size = m.size;
            o.held_until_ms = o.held_until_ms.max(*expires_at_ms);
        })?,
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_collector_keeps_referenced_held_and_recent_objects() {
        let grace = 1000;
        let o = |refs, uploaded_at_ms, held_until_ms| MediaObject { size: 1, uploaded_at_ms, refs, held_until_ms };
        assert!(collectable(Some(&o(0, 100, 0)), 100, 1100, grace));
        assert!(!collectable(Some(&o(1, 100, 0)), 100, 1100, grace), "referenced");
        assert!(!collectable(Some(&o(0, 500, 0)), 100, 1100, grace), "uploaded again recently");
        assert!(!collectable(Some(&o(0, 100, 2000)), 100, 1100, grace), "a live status holds it");
        assert!(collectable(None, 100, 1100, grace), "unknown to the log and old");
        assert!(!collectable(None, 200, 1100, grace), "unknown to the log but recent");
    }
}
