//! The inbox view: per user and chat, every timeline item the user receives,
//! with the offset of its record in the chat's partition, so that sync and
//! gap filling read exactly those records from the log.
//!
//! # Rule
//! For each timeline item `(chat, seq)`, every recipient of its
//! [`Effect::Deliver`] (the members just before or after the item, the origin
//! user included: [`roster::audience`]) gets `(user, chat, seq) → offset`. So a
//! member removed at `s` has `s` and nothing after it until they are added
//! again, and a member added at `s` has nothing before `s`. Items are never
//! removed: the inbox is the user's history of the chat, as delivered.
//!
//! # Cost
//! One write per recipient and item (fan-out on write, like the chat list);
//! a page is one range scan.

use chorus_schema::{ChatId, EventRecord, Seq, UserId};

use super::{roster, Effect};
use crate::store::{decode, keys, put_value, Txn};
use crate::Result;

/// Folds a timeline item into the inboxes of its recipients; ignores every
/// other event. Reads the roster after the event (fold it first).
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn apply<T: Txn + ?Sized>(txn: &mut T, record: &EventRecord, _effects: &mut Vec<Effect>) -> Result<()> {
    let event = &record.event;
    let (Some(chat), Some(seq)) = (event.body.chat(), event.body.seq()) else { return Ok(()) };
    for user in roster::audience(txn, chat, event)? {
        put_value(txn, &keys::inbox(user, &chat, seq), &record.offset);
    }
    Ok(())
}

pub use chorus_schema::bus::InboxItem;

/// Up to `limit` items of `user`'s inbox of `chat` with seq > `after`, in seq
/// order, and whether more follow.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn items<T: Txn + ?Sized>(
    txn: &T,
    user: UserId,
    chat: &ChatId,
    after: Seq,
    limit: usize,
) -> Result<(Vec<InboxItem>, bool)> {
    let prefix = keys::inbox_of(user, chat);
    #[expect(clippy::expect_used, reason = "a key prefix starts with its family tag, below 0xff")]
    let to = keys::prefix_end(&prefix).expect("an inbox prefix is not all 0xff");
    let from = match after.0.checked_add(1) {
        Some(next) => keys::inbox(user, chat, Seq(next)),
        // Nothing follows the largest seq.
        None => return Ok((Vec::new(), false)),
    };
    // One entry past the page says whether more follow; nothing further is read.
    let mut rows = txn.scan(&from, &to, limit.saturating_add(1))?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let page = rows
        .into_iter()
        .map(|(k, v)| Ok(InboxItem { seq: Seq(keys::u64_at(&k, keys::AFTER_USER_CHAT)), offset: decode(&k, &v)? }))
        .collect::<Result<Vec<_>>>()?;
    Ok((page, more))
}

#[cfg(test)]
mod tests {
    use chorus_schema::{ClientMsgId, DeviceId, Event, EventBody, Origin, PartitionId};

    use super::*;
    use crate::store::MemStore;

    fn u(n: u64) -> UserId {
        UserId(n)
    }

    /// Folds the roster and the inbox over `bodies` (origin user 1), with
    /// offsets starting at 100.
    fn fold(bodies: Vec<(u64, EventBody)>) -> MemStore {
        let mut store = MemStore::new();
        for (i, (user, body)) in bodies.into_iter().enumerate() {
            let origin = Origin { user: u(user), device: DeviceId(1), client_msg_id: ClientMsgId(i as u64) };
            let offset = 100 + i as u64;
            let record = EventRecord {
                partition: PartitionId(0),
                offset: chorus_schema::Offset(offset),
                log_index: chorus_schema::LogIndex(offset),
                event: Event { at_ms: 0, origin, body },
            };
            let mut txn = store.begin();
            let mut effects = Vec::new();
            roster::apply(&mut txn, &record, &mut effects).unwrap();
            apply(&mut txn, &record, &mut effects).unwrap();
            txn.commit();
        }
        store
    }

    fn all(store: &mut MemStore, user: u64, chat: &ChatId) -> Vec<(u64, u64)> {
        let (items, more) = items(&store.begin(), u(user), chat, Seq(0), usize::MAX).unwrap();
        assert!(!more);
        items.into_iter().map(|i| (i.seq.0, i.offset.0)).collect()
    }

    #[test]
    fn recipients_get_items_with_offsets() {
        let chat = ChatId::group([3; 16]);
        let msg = |seq| EventBody::MessageSent { chat, seq: Seq(seq), ciphertext: vec![], media: None };
        let mut store = fold(vec![
            (1, EventBody::GroupCreated { chat, seq: Seq(1), name: "g".into(), members: vec![u(1), u(2), u(3)] }),
            (1, msg(2)),
            (1, EventBody::MemberRemoved { chat, seq: Seq(3), member: u(3) }),
            (2, msg(4)),
            (1, EventBody::Receipt { chat, kind: chorus_schema::ReceiptKind::Read, up_to_seq: Seq(4) }),
            (1, EventBody::MemberAdded { chat, seq: Seq(5), member: u(4) }),
            (4, msg(6)),
        ]);
        // The sender has their own items (for their other devices).
        assert_eq!(all(&mut store, 1, &chat), vec![(1, 100), (2, 101), (3, 102), (4, 103), (5, 105), (6, 106)]);
        assert_eq!(all(&mut store, 2, &chat), all(&mut store, 1, &chat));
        // Removed at 3: their removal, then nothing.
        assert_eq!(all(&mut store, 3, &chat), vec![(1, 100), (2, 101), (3, 102)]);
        // Added at 5: nothing before.
        assert_eq!(all(&mut store, 4, &chat), vec![(5, 105), (6, 106)]);
        assert_eq!(all(&mut store, 9, &chat), vec![]);
        assert_eq!(all(&mut store, 1, &ChatId::group([4; 16])), vec![]);

        // Paging.
        let t = store.begin();
        let (page, more) = items(&t, u(1), &chat, Seq(0), 2).unwrap();
        assert_eq!(
            (page, more),
            (
                vec![
                    InboxItem { seq: Seq(1), offset: chorus_schema::Offset(100) },
                    InboxItem { seq: Seq(2), offset: chorus_schema::Offset(101) }
                ],
                true
            )
        );
        let (page, more) = items(&t, u(1), &chat, Seq(4), 2).unwrap();
        assert_eq!((page.iter().map(|i| i.seq.0).collect::<Vec<_>>(), more), (vec![5, 6], false));
        assert_eq!(items(&t, u(1), &chat, Seq(6), 2).unwrap(), (vec![], false));
        assert_eq!(items(&t, u(1), &chat, Seq(u64::MAX), 2).unwrap(), (vec![], false));
        assert_eq!(items(&t, u(1), &chat, Seq(0), 0).unwrap(), (vec![], true));
    }

    /// A transaction that counts the entries its scans return.
    struct Counting<'a, T>(&'a T, std::cell::Cell<usize>);

    impl<T: Txn> Txn for Counting<'_, T> {
        fn get(&self, key: &[u8]) -> crate::store::Result<Option<Vec<u8>>> {
            self.0.get(key)
        }
        fn put(&mut self, _: &[u8], _: &[u8]) {
            unreachable!("reads only")
        }
        fn delete(&mut self, _: &[u8]) {
            unreachable!("reads only")
        }
        fn scan(&self, from: &[u8], to: &[u8], limit: usize) -> crate::store::Result<Vec<(Vec<u8>, Vec<u8>)>> {
            let rows = self.0.scan(from, to, limit)?;
            self.1.set(self.1.get() + rows.len());
            Ok(rows)
        }
    }

    #[test]
    fn a_page_reads_at_most_one_entry_past_its_limit() {
        let chat = ChatId::direct(u(1), u(2));
        let mut bodies = vec![(1, EventBody::ChatOpened { chat, members: vec![u(1), u(2)] })];
        bodies.extend(
            (1..=5000).map(|s| (1, EventBody::MessageSent { chat, seq: Seq(s), ciphertext: vec![], media: None })),
        );
        let mut store = fold(bodies);
        let everything = all(&mut store, 2, &chat);
        assert_eq!(everything.len(), 5000);
        let txn = store.begin();
        let counting = Counting(&txn, std::cell::Cell::new(0));
        let (page, more) = items(&counting, u(2), &chat, Seq(100), 10).unwrap();
        assert!(counting.1.get() <= 11, "read {} entries for a page of 10", counting.1.get());
        assert!(more);
        let seqs: Vec<(u64, u64)> = page.iter().map(|i| (i.seq.0, i.offset.0)).collect();
        assert_eq!(seqs, everything[100..110], "the same page as a full scan gives");
        // The last page: no more.
        let (page, more) = items(&txn, u(2), &chat, Seq(4995), 10).unwrap();
        assert_eq!((page.len(), more), (5, false));
    }

    #[test]
    fn direct_chats_and_user_events() {
        let chat = ChatId::direct(u(1), u(2));
        let mut store = fold(vec![
            (1, EventBody::ChatOpened { chat, members: vec![u(1), u(2)] }),
            (2, EventBody::UserRegistered { user: u(2), phone: "2".into() }),
            (1, EventBody::MessageSent { chat, seq: Seq(1), ciphertext: vec![], media: None }),
        ]);
        assert_eq!(all(&mut store, 1, &chat), vec![(1, 102)]);
        assert_eq!(all(&mut store, 2, &chat), vec![(1, 102)]);
        let inbox_keys = store.entries().filter(|(k, _)| k[0] == keys::INBOX).count();
        assert_eq!(inbox_keys, 2);
    }
}
