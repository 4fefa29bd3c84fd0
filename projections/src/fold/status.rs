//! The status view: the live status posts of every user, with their viewers,
//! and [`visible`], the posts one user may see.
//!
//! # Expiry, deterministically
//! A post is gone from the view once its partition's log has moved past its
//! expiry: every event of a partition first deletes the posts of that
//! partition whose `expires_at_ms` is at or below the event's `at_ms` (an
//! expiry index `91 ‖ partition ‖ expires_at ‖ author ‖ id` makes that a
//! prefix scan from the soonest). The deletion depends only on the log, so a
//! replay deletes the same posts at the same events (ARCHITECTURE.md
//! invariant 6). Between a post's expiry and the next event of its partition
//! the entry is still stored, so reads also filter by the reader's clock
//! (`now_ms` of the query): an expired post is never shown.
//!
//! # Who sees a post
//! Its author, with the viewers; anyone else only if the author does not block
//! them and the audience admits them (`StatusAudience::admits`, "contacts"
//! read from the contacts view at the time of the read, as the partition's
//! `ViewStatus` rule reads its own copy).

use chorus_schema::social::MAX_STATUS_LIST;
use chorus_schema::{EventBody, EventRecord, MediaRef, StatusAudience, StatusEntry, UserId};
use serde::{Deserialize, Serialize};

use super::{contacts, profile, Effect};
use crate::store::{decode, for_each_prefix, get_value, keys, put_value, Txn};
use crate::Result;

/// Posts deleted per folded event at most (the rest go with the next events).
pub const EXPIRED_PER_EVENT_MAX: usize = 64;

/// A live post.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Post {
    pub posted_at_ms: u64,
    pub expires_at_ms: u64,
    pub ciphertext: Vec<u8>,
    pub media: Option<MediaRef>,
    pub audience: StatusAudience,
    pub acl: Vec<UserId>,
    pub viewers: Vec<UserId>,
}

/// Folds one event: expires the partition's due posts, then folds
/// `StatusPosted` and `StatusViewed`.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn apply<T: Txn + ?Sized>(txn: &mut T, record: &EventRecord, _effects: &mut Vec<Effect>) -> Result<()> {
    let at_ms = record.event.at_ms;
    let due = txn.scan_prefix(&keys::status_expiries(record.partition), EXPIRED_PER_EVENT_MAX)?;
    for (k, _) in due {
        let after = 1 + 2;
        if keys::u64_at(&k, after) > at_ms {
            break;
        }
        let (author, id) = (UserId(keys::u64_at(&k, after + 8)), keys::u64_at(&k, after + 16));
        txn.delete(&keys::status(author, id));
        txn.delete(&k);
    }
    match &record.event.body {
        EventBody::StatusPosted { user, status_id, ciphertext, media, acl, expires_at_ms, audience }
            if *expires_at_ms > at_ms =>
        {
            let post = Post {
                posted_at_ms: at_ms,
                expires_at_ms: *expires_at_ms,
                ciphertext: ciphertext.clone(),
                media: media.clone(),
                audience: *audience,
                acl: acl.clone(),
                viewers: vec![],
            };
            put_value(txn, &keys::status(*user, *status_id), &post);
            txn.put(&keys::status_expiry(record.partition, *expires_at_ms, *user, *status_id), &[]);
        }
        EventBody::StatusViewed { user, status_id, viewer } => {
            let key = keys::status(*user, *status_id);
            if let Some(mut post) = get_value::<Post, _>(txn, &key)? {
                if let Err(i) = post.viewers.binary_search(viewer) {
                    post.viewers.insert(i, *viewer);
                    put_value(txn, &key, &post);
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Whether `viewer` may see `author`'s `post`.
fn admits<T: Txn + ?Sized>(txn: &T, viewer: UserId, author: UserId, post: &Post) -> Result<bool> {
    if viewer == author {
        return Ok(true);
    }
    if profile::blocks(txn, author, viewer)? {
        return Ok(false);
    }
    let is_contact = contacts::contains(txn, author, viewer)?;
    Ok(post.audience.admits(viewer, &post.acl, is_contact))
}

/// The live posts (at `now_ms`) that `viewer` may see: of `author`, or
/// (`None`) of every user in the viewer's contact list and the viewer's own;
/// by author, then post id; at most [`MAX_STATUS_LIST`]. Viewers are listed
/// only on the viewer's own posts.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn visible<T: Txn + ?Sized>(
    txn: &T,
    viewer: UserId,
    author: Option<UserId>,
    now_ms: u64,
) -> Result<Vec<StatusEntry>> {
    let authors = match author {
        Some(a) => vec![a],
        None => {
            let mut a = contacts::list(txn, viewer)?;
            if let Err(i) = a.binary_search(&viewer) {
                a.insert(i, viewer);
            }
            a
        }
    };
    let mut out = Vec::new();
    for author in authors {
        for_each_prefix(txn, &keys::statuses_of(author), |k, v| -> Result<()> {
            let post: Post = decode(k, v)?;
            if out.len() < MAX_STATUS_LIST && post.expires_at_ms > now_ms && admits(txn, viewer, author, &post)? {
                out.push(StatusEntry {
                    author,
                    status_id: keys::u64_at(k, keys::AFTER_USER),
                    posted_at_ms: post.posted_at_ms,
                    expires_at_ms: post.expires_at_ms,
                    ciphertext: post.ciphertext,
                    media: post.media,
                    viewers: if viewer == author { post.viewers } else { vec![] },
                });
            }
            Ok(())
        })?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use chorus_schema::{ClientMsgId, DeviceId, Event, LogIndex, Offset, Origin, PartitionId};

    use super::*;
    use crate::store::MemStore;

    const A: UserId = UserId(1);
    const B: UserId = UserId(2);
    const C: UserId = UserId(3);

    fn record(partition: u16, at_ms: u64, body: EventBody) -> EventRecord {
        let origin = Origin { user: A, device: DeviceId(1), client_msg_id: ClientMsgId(at_ms) };
        EventRecord {
            partition: PartitionId(partition),
            offset: Offset(at_ms),
            log_index: LogIndex(at_ms),
            event: Event { at_ms, origin, body },
        }
    }

    fn fold(store: &mut MemStore, records: &[EventRecord]) {
        for r in records {
            let mut txn = store.begin();
            super::apply(&mut txn, r, &mut Vec::new()).unwrap();
            crate::fold::contacts::apply(&mut txn, r, &mut Vec::new()).unwrap();
            crate::fold::profile::apply(&mut txn, r, &mut Vec::new()).unwrap();
            txn.commit();
        }
    }

    fn posted(id: u64, expires_at_ms: u64, audience: StatusAudience, acl: Vec<UserId>) -> EventBody {
        EventBody::StatusPosted {
            user: A,
            status_id: id,
            ciphertext: vec![1],
            media: None,
            acl,
            expires_at_ms,
            audience,
        }
    }

    #[test]
    fn audiences_viewers_and_expiry_by_the_logs_time() {
        let mut store = MemStore::new();
        fold(
            &mut store,
            &[
                record(0, 10, EventBody::ContactsUpdated { user: A, contacts: vec![B, C] }),
                record(0, 20, posted(1, 1_000, StatusAudience::Contacts, vec![])),
                record(0, 30, posted(2, 5_000, StatusAudience::ContactsExcept, vec![C])),
                record(0, 40, EventBody::StatusViewed { user: A, status_id: 1, viewer: B }),
            ],
        );
        let t = store.begin();
        let ids = |v, now| -> Vec<u64> { visible(&t, v, Some(A), now).unwrap().iter().map(|e| e.status_id).collect() };
        assert_eq!(ids(B, 50), vec![1, 2]);
        assert_eq!(ids(C, 50), vec![1]);
        assert_eq!(ids(UserId(9), 50), Vec::<u64>::new());
        // The reader's clock hides an expired post before the log deletes it.
        assert_eq!(ids(B, 1_000), vec![2]);
        let own = visible(&t, A, None, 50).unwrap();
        assert_eq!(own[0].viewers, vec![B], "the author sees the viewers");
        assert!(visible(&t, B, Some(A), 50).unwrap().iter().all(|e| e.viewers.is_empty()));
        drop(t);
        assert!(store.entries().any(|(k, _)| k == keys::status(A, 1).as_slice()));
        // An event of another partition deletes nothing of partition 0; the
        // next event of partition 0 past the expiry deletes the post and its index entry.
        fold(&mut store, &[record(1, 2_000, EventBody::OtpFailed { user: UserId(5) })]);
        assert!(store.entries().any(|(k, _)| k == keys::status(A, 1).as_slice()));
        fold(&mut store, &[record(0, 2_000, EventBody::OtpFailed { user: A })]);
        assert!(!store.entries().any(|(k, _)| k == keys::status(A, 1).as_slice()));
        assert!(store.entries().any(|(k, _)| k == keys::status(A, 2).as_slice()));
        assert_eq!(store.entries().filter(|(k, _)| k[0] == keys::STATUS_EXPIRY).count(), 1);
        // A block hides everything from the blocked user.
        fold(&mut store, &[record(0, 2_100, EventBody::UserBlocked { user: A, target: B })]);
        assert!(visible(&store.begin(), B, Some(A), 2_200).unwrap().is_empty());
    }
}
