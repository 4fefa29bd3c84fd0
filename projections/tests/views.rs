//! Every view over hand-written event sequences: exact views and effects, on
//! both backends (in memory and RocksDB on disk).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

mod support;

use support::backend::Backend;

use std::collections::BTreeMap;

use chorus_projections::fold::chat_list::{self, MessageRef};
use chorus_projections::fold::cursors::{self, Cursors};
use chorus_projections::fold::directory::{self, Device};
use chorus_projections::fold::inbox;
use chorus_projections::fold::receipt_status::{self, ReceiptStatus as Status, Ticks};
use chorus_projections::fold::roster::{self, ChatKind};
use chorus_projections::store::{keys, Store, Txn};
use chorus_projections::{rebuild, Applied, Effect, Error, Projection};
use chorus_schema::{
    ChatId, ClientMsgId, DeviceId, Event, EventBody, EventRecord, LogIndex, Offset, Origin, PartitionId, ReceiptKind,
    Seq, UserId,
};

/// A hand-written log of one partition, folded as it is written.
struct Log<S: Backend> {
    records: Vec<EventRecord>,
    next_seq: BTreeMap<ChatId, u64>,
    /// Every delivery so far: (user, chat) -> seq -> offset of the item.
    delivered: BTreeMap<(UserId, ChatId), BTreeMap<Seq, u64>>,
    store: S,
}

const P: PartitionId = PartitionId(3);

fn u(n: u64) -> UserId {
    UserId(n)
}

fn users(ns: &[u64]) -> Vec<UserId> {
    ns.iter().copied().map(UserId).collect()
}

fn group(n: u8) -> ChatId {
    ChatId::group([n; 16])
}

impl<S: Backend> Log<S> {
    fn new() -> Log<S> {
        Log { records: Vec::new(), next_seq: BTreeMap::new(), delivered: BTreeMap::new(), store: S::fresh() }
    }

    fn seq(&mut self, chat: ChatId) -> Seq {
        let next = self.next_seq.entry(chat).or_insert(1);
        *next += 1;
        Seq(*next - 1)
    }

    /// Appends and folds an event of `user`'s device `device`; returns its effects.
    fn push(&mut self, user: u64, device: u32, body: EventBody) -> Vec<Effect> {
        let offset = self.records.len() as u64;
        let origin = Origin { user: UserId(user), device: DeviceId(device), client_msg_id: ClientMsgId(offset) };
        let record = EventRecord {
            partition: P,
            offset: Offset(offset),
            log_index: LogIndex(offset + 10),
            event: Event { at_ms: 1_000 + offset, origin, body },
        };
        let mut effects = Vec::new();
        let mut txn = self.store.begin_txn();
        assert_eq!(Projection::new().apply(&mut txn, &record, &mut effects).unwrap(), Applied::Folded);
        S::commit_txn(txn).unwrap();
        self.records.push(record);
        for e in &effects {
            if let Effect::Deliver { chat, seq, recipients } = e {
                for r in recipients {
                    self.delivered.entry((*r, *chat)).or_default().insert(*seq, offset);
                }
            }
        }
        effects
    }

    fn open(&mut self, a: u64, b: u64) -> ChatId {
        let chat = ChatId::direct(u(a), u(b));
        let mut members = users(&[a, b]);
        members.sort();
        // Both members join as the chat opens; its items come with its messages.
        let joined = vec![Effect::Joined { chat, seq: Seq(0), users: members.clone() }];
        assert_eq!(self.push(a, 1, EventBody::ChatOpened { chat, members }), joined);
        chat
    }

    fn send(&mut self, user: u64, chat: ChatId) -> (Seq, Vec<Effect>) {
        let seq = self.seq(chat);
        (seq, self.push(user, 1, EventBody::MessageSent { chat, seq, ciphertext: vec![1], media: None }))
    }

    fn create(&mut self, creator: u64, chat: ChatId, members: &[u64]) -> Vec<Effect> {
        let seq = self.seq(chat);
        self.push(creator, 1, EventBody::GroupCreated { chat, seq, name: "g".into(), members: users(members) })
    }

    fn ack(&mut self, user: u64, device: u32, chat: ChatId, kind: ReceiptKind, up_to: u64) -> Vec<Effect> {
        self.push(user, device, EventBody::Receipt { chat, kind, up_to_seq: Seq(up_to) })
    }

    fn txn(&mut self) -> S::Txn<'_> {
        self.store.begin_txn()
    }

    fn entry(&mut self, user: u64, chat: ChatId) -> chat_list::ChatListEntry {
        chat_list::entry(&self.txn(), u(user), &chat).unwrap().expect("entry")
    }

    fn members(&mut self, chat: ChatId) -> Vec<UserId> {
        roster::members(&self.txn(), &chat).unwrap().into_iter().map(|(u, _)| u).collect()
    }

    fn ticks(&mut self, chat: ChatId, sender: u64) -> Ticks {
        receipt_status::ticks(&self.txn(), &chat, u(sender)).unwrap()
    }

    /// The seqs of `user`'s inbox of `chat`.
    fn inbox(&mut self, user: u64, chat: ChatId) -> Vec<u64> {
        let (items, more) = inbox::items(&self.txn(), u(user), &chat, Seq(0), usize::MAX).unwrap();
        assert!(!more);
        items.into_iter().map(|i| i.seq.0).collect()
    }

    /// The inbox is exactly the deliveries so far, with each item's offset, and
    /// the store equals a rebuild from the records.
    fn must_check(&mut self) {
        let delivered = self.delivered.clone();
        let txn = self.store.begin_txn();
        let mut n = 0;
        for ((user, chat), seqs) in &delivered {
            let (items, _) = inbox::items(&txn, *user, chat, Seq(0), usize::MAX).unwrap();
            let got: BTreeMap<Seq, u64> = items.into_iter().map(|i| (i.seq, i.offset.0)).collect();
            assert_eq!(&got, seqs, "inbox of {user} in {chat}");
            n += seqs.len();
        }
        assert_eq!(txn.scan_prefix(&[keys::INBOX], 1 << 20).unwrap().len(), n, "inbox items nobody was delivered");
        drop(txn);
        assert_eq!(rebuild(&self.records).unwrap().dump().unwrap(), self.store.dump().unwrap());
    }
}

fn joined(chat: ChatId, seq: Seq, who: &[u64]) -> Effect {
    Effect::Joined { chat, seq, users: users(who) }
}

fn deliver(chat: ChatId, seq: Seq, recipients: &[u64]) -> Effect {
    Effect::Deliver { chat, seq, recipients: users(recipients) }
}

fn tick(chat: ChatId, sender: u64, up_to: u64, status: Status) -> Effect {
    Effect::ReceiptChanged { chat, sender: u(sender), up_to_seq: Seq(up_to), status }
}

fn direct_chat<S: Backend>() {
    let mut log = Log::<S>::new();
    let chat = log.open(2, 1);
    assert_eq!(log.members(chat), users(&[1, 2]));
    assert_eq!(roster::chat(&log.txn(), &chat).unwrap().unwrap().kind, ChatKind::Direct);
    assert_eq!(log.entry(1, chat).last_seq, Seq(0));

    // The sender is a recipient too (their other devices), but their own
    // messages never count as unread for them.
    assert_eq!(log.send(1, chat), (Seq(1), vec![deliver(chat, Seq(1), &[1, 2])]));
    assert_eq!(log.send(1, chat).1, vec![deliver(chat, Seq(2), &[1, 2])]);
    assert_eq!(log.entry(1, chat).unread, 0);
    assert_eq!(log.send(2, chat).1, vec![deliver(chat, Seq(3), &[1, 2])]);

    let e2 = log.entry(2, chat);
    assert_eq!((e2.kind, e2.last_seq, e2.unread), (ChatKind::Direct, Seq(3), 2));
    assert_eq!(e2.last_message, Some(MessageRef { seq: Seq(3), sender: u(2), at_ms: 1_003 }));
    assert_eq!(log.entry(1, chat).unread, 1);

    // 2 reads up to 2: both of 1's messages are read (and so delivered).
    assert_eq!(log.ack(2, 1, chat, ReceiptKind::Read, 2), vec![tick(chat, 1, 2, Status::Read)]);
    assert_eq!(log.entry(2, chat).unread, 0);
    assert_eq!(log.ticks(chat, 1), Ticks { delivered: Seq(2), read: Seq(2) });
    assert_eq!(receipt_status::status(&log.txn(), &chat, u(1), Seq(2)).unwrap(), Status::Read);
    assert_eq!(receipt_status::status(&log.txn(), &chat, u(2), Seq(3)).unwrap(), Status::Sent);

    // 1 reads everything: their own message does not count, 2's message is read.
    assert_eq!(log.ack(1, 1, chat, ReceiptKind::Read, 3), vec![tick(chat, 2, 3, Status::Read)]);
    assert_eq!(log.entry(1, chat).unread, 0);
    // Both users' inboxes hold every message, at the records' offsets.
    let (items, more) = inbox::items(&log.txn(), u(2), &chat, Seq(1), 10).unwrap();
    assert!(!more);
    assert_eq!(
        items,
        vec![inbox::InboxItem { seq: Seq(2), offset: Offset(2) }, inbox::InboxItem { seq: Seq(3), offset: Offset(3) }]
    );
    assert_eq!(log.inbox(1, chat), vec![1, 2, 3]);
    log.must_check();
}

fn receipts_from_several_devices<S: Backend>() {
    let mut log = Log::<S>::new();
    let chat = log.open(1, 2);
    for _ in 0..3 {
        log.send(1, chat);
    }
    // Delivered to one device of 2 is delivered.
    assert_eq!(log.ack(2, 1, chat, ReceiptKind::Delivered, 2), vec![tick(chat, 1, 2, Status::Delivered)]);
    assert_eq!(log.ack(2, 2, chat, ReceiptKind::Delivered, 3), vec![tick(chat, 1, 3, Status::Delivered)]);
    // A receipt below the cursor changes nothing.
    assert_eq!(log.ack(2, 1, chat, ReceiptKind::Delivered, 1), vec![]);
    assert_eq!(log.ack(2, 1, chat, ReceiptKind::Read, 1), vec![tick(chat, 1, 1, Status::Read)]);
    // The sender's own receipts tick nothing for their own messages.
    assert_eq!(log.ack(1, 1, chat, ReceiptKind::Read, 3), vec![]);

    let t = log.txn();
    assert_eq!(cursors::get(&t, &chat, u(2), DeviceId(1)).unwrap(), Cursors { delivered: Seq(2), read: Seq(1) });
    assert_eq!(cursors::get(&t, &chat, u(2), DeviceId(2)).unwrap(), Cursors { delivered: Seq(3), read: Seq(0) });
    assert_eq!(cursors::get(&t, &chat, u(2), DeviceId(7)).unwrap(), Cursors::default());
    assert_eq!(cursors::of_user(&t, &chat, u(2)).unwrap(), Cursors { delivered: Seq(3), read: Seq(1) });
    assert_eq!(cursors::devices(&t, &chat, u(2)).unwrap().len(), 2);
    drop(t);
    assert_eq!(log.ticks(chat, 1), Ticks { delivered: Seq(3), read: Seq(1) });
    // Device 2 reads past device 1's read cursor: read implies delivered.
    assert_eq!(log.ack(2, 2, chat, ReceiptKind::Read, 3), vec![tick(chat, 1, 3, Status::Read)]);
    let t = log.txn();
    assert_eq!(cursors::get(&t, &chat, u(2), DeviceId(2)).unwrap(), Cursors { delivered: Seq(3), read: Seq(3) });
    assert_eq!(chat_list::entry(&t, u(2), &chat).unwrap().unwrap().unread, 0);
    // Everything read by all: the pending index is empty.
    assert!(t.scan_prefix(&chorus_projections::store::keys::pending_of(&chat, u(1)), 1 << 20).unwrap().is_empty());
}

fn group_add_remove_promote<S: Backend>() {
    let mut log = Log::<S>::new();
    let chat = group(1);
    assert_eq!(
        log.create(1, chat, &[1, 2, 3]),
        vec![joined(chat, Seq(1), &[1, 2, 3]), deliver(chat, Seq(1), &[1, 2, 3])]
    );
    assert_eq!(roster::admins(&log.txn(), &chat).unwrap(), users(&[1]));
    let s = log.seq(chat);
    assert_eq!(
        log.push(1, 1, EventBody::MemberAdded { chat, seq: s, member: u(4) }),
        vec![joined(chat, Seq(2), &[4]), deliver(chat, Seq(2), &[1, 2, 3, 4])]
    );
    let s = log.seq(chat);
    log.push(1, 1, EventBody::MemberPromoted { chat, seq: s, member: u(2) });
    assert_eq!(roster::admins(&log.txn(), &chat).unwrap(), users(&[1, 2]));
    // 3 is removed by 2: 3 sees their removal, and nothing after it.
    let s = log.seq(chat);
    assert_eq!(
        log.push(2, 1, EventBody::MemberRemoved { chat, seq: s, member: u(3) }),
        vec![deliver(chat, Seq(4), &[1, 2, 3, 4])]
    );
    assert_eq!(log.send(1, chat).1, vec![deliver(chat, Seq(5), &[1, 2, 4])]);
    let s = log.seq(chat);
    assert_eq!(
        log.push(1, 1, EventBody::MemberDemoted { chat, seq: s, member: u(2) }),
        vec![deliver(chat, Seq(6), &[1, 2, 4])]
    );
    assert_eq!(log.members(chat), users(&[1, 2, 4]));
    assert_eq!(roster::admins(&log.txn(), &chat).unwrap(), users(&[1]));
    let m4 = roster::member(&log.txn(), &chat, u(4)).unwrap().unwrap();
    assert_eq!((m4.since, m4.admin), (Seq(2), false));
    assert_eq!(roster::member(&log.txn(), &chat, u(3)).unwrap(), None);
    assert_eq!(roster::chat(&log.txn(), &chat).unwrap().unwrap().last_seq, Seq(6));

    // The removed member's entry stays, frozen at their removal.
    let e3 = log.entry(3, chat);
    assert_eq!((e3.kind, e3.last_seq, e3.unread), (ChatKind::Group, Seq(4), 0));
    let e4 = log.entry(4, chat);
    assert_eq!((e4.last_seq, e4.unread, e4.unread_after), (Seq(6), 1, Seq(2)));

    // Ticks of message 5: 3 (removed) does not block; 2 and 4 must.
    assert_eq!(log.ack(2, 1, chat, ReceiptKind::Read, 6), vec![]);
    assert_eq!(log.ack(4, 1, chat, ReceiptKind::Delivered, 5), vec![tick(chat, 1, 5, Status::Delivered)]);
    assert_eq!(log.ack(4, 1, chat, ReceiptKind::Read, 6), vec![tick(chat, 1, 5, Status::Read)]);
    assert_eq!(log.entry(4, chat).unread, 0);

    // A member added after a message does not block its ticks, but blocks later ones.
    let (m7, _) = log.send(1, chat);
    let s = log.seq(chat);
    assert_eq!(
        log.push(1, 1, EventBody::MemberAdded { chat, seq: s, member: u(5) }),
        vec![joined(chat, Seq(8), &[5]), deliver(chat, Seq(8), &[1, 2, 4, 5])]
    );
    let (m9, _) = log.send(1, chat);
    assert_eq!((m7, m9), (Seq(7), Seq(9)));
    log.ack(2, 1, chat, ReceiptKind::Read, 9);
    assert_eq!(log.ack(4, 2, chat, ReceiptKind::Read, 9), vec![tick(chat, 1, 7, Status::Read)]);
    assert_eq!(log.ack(5, 1, chat, ReceiptKind::Read, 9), vec![tick(chat, 1, 9, Status::Read)]);
    assert_eq!(log.entry(5, chat).unread, 0);
    // 3 has the items up to their removal; 4 and 5 from their joins.
    assert_eq!(log.inbox(3, chat), vec![1, 2, 3, 4]);
    assert_eq!(log.inbox(4, chat), vec![2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(log.inbox(5, chat), vec![8, 9]);
    assert_eq!(log.inbox(1, chat), (1..=9).collect::<Vec<_>>());
    log.must_check();
}

fn removed_member_gets_nothing_after_removal_and_rejoin_counts_afresh<S: Backend>() {
    let mut log = Log::<S>::new();
    let chat = group(2);
    log.create(1, chat, &[1, 2, 3]);
    log.send(1, chat);
    log.send(2, chat);
    assert_eq!(log.entry(3, chat).unread, 2);
    let s = log.seq(chat);
    log.push(1, 1, EventBody::MemberRemoved { chat, seq: s, member: u(3) });
    for _ in 0..3 {
        let (_, effects) = log.send(2, chat);
        for e in effects {
            let Effect::Deliver { recipients, .. } = e else { panic!("{e:?}") };
            assert_eq!(recipients, users(&[1, 2]));
        }
    }
    assert_eq!(log.entry(3, chat).last_seq, Seq(4));
    // 3 comes back at seq 8: nothing from before counts, the next message does.
    let s = log.seq(chat);
    assert_eq!(s, Seq(8));
    log.push(1, 1, EventBody::MemberAdded { chat, seq: s, member: u(3) });
    let e3 = log.entry(3, chat);
    assert_eq!((e3.last_seq, e3.unread, e3.unread_after), (Seq(8), 0, Seq(8)));
    log.send(2, chat);
    log.send(3, chat);
    assert_eq!(log.entry(3, chat).unread, 1);
    log.ack(3, 1, chat, ReceiptKind::Read, 9);
    assert_eq!(log.entry(3, chat).unread, 0);
    // Nothing between the removal and the re-join.
    assert_eq!(log.inbox(3, chat), vec![1, 2, 3, 4, 8, 9, 10]);
    log.must_check();
}

fn unread_drops_on_read<S: Backend>() {
    let mut log = Log::<S>::new();
    let chat = group(3);
    log.create(1, chat, &[1, 2]);
    // 2, 3: from 1; 4: from 2; 5: from 1; 6: info change (not a message).
    log.send(1, chat);
    log.send(1, chat);
    log.send(2, chat);
    log.send(1, chat);
    let s = log.seq(chat);
    log.push(1, 1, EventBody::GroupInfoChanged { chat, seq: s, name: "n".into(), description: "d".into(), icon: None });
    let e = log.entry(2, chat);
    assert_eq!((e.unread, e.last_seq, e.last_message.map(|m| m.seq)), (3, Seq(6), Some(Seq(5))));
    log.ack(2, 1, chat, ReceiptKind::Delivered, 6);
    assert_eq!(log.entry(2, chat).unread, 3);
    log.ack(2, 1, chat, ReceiptKind::Read, 3);
    assert_eq!(log.entry(2, chat).unread, 1);
    // Another device reading less changes nothing.
    log.ack(2, 2, chat, ReceiptKind::Read, 2);
    assert_eq!(log.entry(2, chat).unread, 1);
    log.ack(2, 2, chat, ReceiptKind::Read, 4);
    assert_eq!(log.entry(2, chat).unread, 1);
    log.ack(2, 1, chat, ReceiptKind::Read, 6);
    let e = log.entry(2, chat);
    assert_eq!((e.unread, e.unread_after), (0, Seq(6)));
    assert_eq!(log.entry(1, chat).unread, 1);
    let list = chat_list::list(&log.txn(), u(2), 100).unwrap();
    assert_eq!(list.iter().map(|(c, _)| *c).collect::<Vec<_>>(), vec![chat]);
}

fn leaving_admin_hands_over<S: Backend>() {
    let mut log = Log::<S>::new();
    let chat = group(4);
    log.create(1, chat, &[1, 2, 3]);
    // What the state machine logs when the last admin leaves: a promotion first.
    let s = log.seq(chat);
    assert_eq!(
        log.push(1, 1, EventBody::MemberPromoted { chat, seq: s, member: u(2) }),
        vec![deliver(chat, Seq(2), &[1, 2, 3])]
    );
    // The leaver receives their own departure (on their other devices), and nothing after.
    let s = log.seq(chat);
    assert_eq!(log.push(1, 1, EventBody::MemberLeft { chat, seq: s }), vec![deliver(chat, Seq(3), &[1, 2, 3])]);
    assert_eq!(log.send(2, chat).1, vec![deliver(chat, Seq(4), &[2, 3])]);
    assert_eq!(log.members(chat), users(&[2, 3]));
    assert_eq!(roster::admins(&log.txn(), &chat).unwrap(), users(&[2]));
    assert_eq!(log.entry(1, chat).last_seq, Seq(3));
    assert_eq!(log.entry(3, chat).unread, 1);
    assert_eq!(log.inbox(1, chat), vec![1, 2, 3]);
    log.must_check();
}

fn cursor_skips_refolds_and_refuses_gaps<S: Backend>() {
    let mut log = Log::<S>::new();
    let chat = log.open(1, 2);
    log.send(1, chat);
    let before = log.store.dump().unwrap();
    let mut effects = Vec::new();
    let mut txn = log.store.begin_txn();
    assert_eq!(Projection::next_offset(&txn, P).unwrap(), Offset(2));
    assert_eq!(Projection::next_offset(&txn, PartitionId(0)).unwrap(), Offset(0));
    for r in &log.records {
        assert_eq!(Projection::new().apply(&mut txn, r, &mut effects).unwrap(), Applied::AlreadyFolded);
    }
    let mut ahead = log.records[1].clone();
    ahead.offset = Offset(5);
    let err = Projection::new().apply(&mut txn, &ahead, &mut effects).unwrap_err();
    assert!(matches!(err, Error::OffsetGap { expected: Offset(2), got: Offset(5), .. }), "{err}");
    S::commit_txn(txn).unwrap();
    assert!(effects.is_empty());
    assert_eq!(log.store.dump().unwrap(), before);
}

fn events_that_contradict_the_views_are_errors<S: Backend>() {
    let mut store = S::fresh();
    let origin = Origin { user: u(1), device: DeviceId(1), client_msg_id: ClientMsgId(1) };
    let record = |offset, body| EventRecord {
        partition: P,
        offset,
        log_index: LogIndex(offset.0),
        event: Event { at_ms: 0, origin, body },
    };
    let chat = group(9);
    let mut txn = store.begin_txn();
    let unknown = record(Offset(0), EventBody::MessageSent { chat, seq: Seq(1), ciphertext: vec![], media: None });
    let err = Projection::new().apply(&mut txn, &unknown, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, Error::Inconsistent { .. }), "{err}");
    drop(txn);

    let created =
        record(Offset(0), EventBody::GroupCreated { chat, seq: Seq(1), name: "g".into(), members: users(&[1, 2]) });
    let skipped = record(Offset(1), EventBody::MessageSent { chat, seq: Seq(3), ciphertext: vec![], media: None });
    let mut txn = store.begin_txn();
    Projection::new().apply(&mut txn, &created, &mut Vec::new()).unwrap();
    let err = Projection::new().apply(&mut txn, &skipped, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("seq 3 after 1"), "{err}");
}

fn user_partition_events_fold_into_the_directory_only<S: Backend>() {
    let mut log = Log::<S>::new();
    let d = DeviceId;
    log.push(7, 1, EventBody::UserRegistered { user: u(7), phone: "1".into() });
    log.push(
        7,
        1,
        EventBody::PresenceChanged {
            user: u(7),
            online: true,
            device: DeviceId(1),
            connection: 1,
            device_online: true,
        },
    );
    for dev in [1, 2, 3] {
        log.push(
            7,
            1,
            EventBody::DeviceLinked { user: u(7), device: d(dev), identity_key: vec![dev as u8], name: "p".into() },
        );
    }
    log.push(7, 1, EventBody::SessionCreated { user: u(7), device: d(1), token_hash: [1; 32] });
    log.push(7, 2, EventBody::SessionCreated { user: u(7), device: d(2), token_hash: [2; 32] });
    log.push(7, 1, EventBody::SessionCreated { user: u(7), device: d(1), token_hash: [3; 32] });
    log.push(7, 3, EventBody::SessionCreated { user: u(7), device: d(3), token_hash: [4; 32] });
    log.push(7, 2, EventBody::SessionRevoked { user: u(7), device: d(2) });
    // Unlinking ends the device's session without a SessionRevoked; its
    // one effect tells the edges to close the device's connections.
    assert_eq!(
        log.push(7, 1, EventBody::DeviceUnlinked { user: u(7), device: d(3) }),
        vec![Effect::Account { user: u(7), device: d(3), change: chorus_schema::DeviceNoticeKind::Unlinked }]
    );
    log.push(8, 1, EventBody::UserRegistered { user: u(8), phone: "2".into() });

    let t = log.txn();
    assert!(directory::is_registered(&t, u(7)).unwrap() && directory::is_registered(&t, u(8)).unwrap());
    assert!(!directory::is_registered(&t, u(9)).unwrap());
    assert_eq!(
        directory::devices(&t, u(7)).unwrap(),
        vec![(d(1), Device { token_hash: Some([3; 32]) }), (d(2), Device { token_hash: None })]
    );
    assert_eq!(directory::session(&t, u(7), d(1)).unwrap(), Some([3; 32]));
    assert_eq!(directory::session(&t, u(7), d(3)).unwrap(), None);
    assert!(directory::devices(&t, u(8)).unwrap().is_empty());
    // The device list follows the links (issue 12): the unlinked device is gone.
    let listed: Vec<_> = directory::device_list(&t, u(7)).unwrap().into_iter().map(|i| i.device).collect();
    assert_eq!(listed, vec![d(1), d(2)]);
    drop(t);
    let tags: std::collections::BTreeSet<u8> = log.store.dump().unwrap().into_iter().map(|(k, _)| k[0]).collect();
    // (and the presence view: the presence change; and the key directory,
    // issue 14: each linked device's identity key)
    assert_eq!(
        tags,
        [keys::APPLIED, keys::USERS, keys::DEVICES, keys::DEVICE_INFO, keys::DEVICE_KEYS, keys::PRESENCE]
            .into_iter()
            .collect()
    );
    log.must_check();
}

fn presence_is_seen_as_privacy_contacts_and_blocks_allow<S: Backend>() {
    use chorus_projections::fold::presence::{self, Presence};
    use chorus_projections::fold::{contacts, privacy};
    use chorus_schema::Visibility;
    let mut log = Log::<S>::new();
    let changed = |online: bool, device: u32, device_online: bool| EventBody::PresenceChanged {
        user: u(7),
        online,
        device: DeviceId(device),
        connection: 1,
        device_online,
    };
    let set_privacy = |last_seen: Visibility| EventBody::PrivacyChanged {
        user: u(7),
        last_seen,
        profile_photo: Visibility::Everyone,
        about: Visibility::Everyone,
        read_receipts: true,
    };
    log.push(7, 1, EventBody::UserRegistered { user: u(7), phone: "1".into() });
    // Online (offset 1, at 1001): published once; a second device changes nothing.
    let on = Presence { online: true, last_seen_ms: 1001 };
    assert_eq!(log.push(7, 1, changed(true, 1, true)), vec![Effect::Presence { user: u(7), presence: Some(on) }]);
    assert_eq!(log.push(7, 2, changed(true, 2, true)), vec![]);
    assert_eq!(log.push(7, 1, changed(true, 1, false)), vec![]);
    let off = Presence { online: false, last_seen_ms: 1004 };
    assert_eq!(log.push(7, 2, changed(false, 2, false)), vec![Effect::Presence { user: u(7), presence: Some(off) }]);
    let audience = vec![Effect::Presence { user: u(7), presence: None }];
    let sees = |log: &mut Log<S>, viewer: u64| privacy::may_see_presence(&log.txn(), u(7), u(viewer)).unwrap();
    // Everyone by default; the user always.
    assert!(sees(&mut log, 8) && sees(&mut log, 7));
    assert_eq!(log.push(7, 1, set_privacy(Visibility::Nobody)), audience);
    assert!(!sees(&mut log, 8) && sees(&mut log, 7));
    assert_eq!(log.push(7, 1, EventBody::ContactsUpdated { user: u(7), contacts: vec![u(8), u(9)] }), audience);
    assert_eq!(log.push(7, 1, set_privacy(Visibility::Contacts)), audience);
    assert!(sees(&mut log, 8) && sees(&mut log, 9) && !sees(&mut log, 10));
    // A new list replaces the old one.
    log.push(7, 1, EventBody::ContactsUpdated { user: u(7), contacts: vec![u(9)] });
    assert!(!sees(&mut log, 8) && sees(&mut log, 9));
    assert_eq!(contacts::list(&log.txn(), u(7)).unwrap(), vec![u(9)]);
    // A block wins over everything; unblocking restores the rule.
    assert_eq!(log.push(7, 1, EventBody::UserBlocked { user: u(7), target: u(9) }), audience);
    assert!(!sees(&mut log, 9));
    log.push(7, 1, set_privacy(Visibility::Everyone));
    assert!(!sees(&mut log, 9) && sees(&mut log, 10));
    assert_eq!(log.push(7, 1, EventBody::UserUnblocked { user: u(7), target: u(9) }), audience);
    assert!(sees(&mut log, 9));
    assert_eq!(presence::get(&log.txn(), u(7)).unwrap(), off);
    log.must_check();
}

crate::both_backends!(
    direct_chat,
    receipts_from_several_devices,
    group_add_remove_promote,
    removed_member_gets_nothing_after_removal_and_rejoin_counts_afresh,
    unread_drops_on_read,
    leaving_admin_hands_over,
    cursor_skips_refolds_and_refuses_gaps,
    events_that_contradict_the_views_are_errors,
    user_partition_events_fold_into_the_directory_only,
    presence_is_seen_as_privacy_contacts_and_blocks_allow,
);
