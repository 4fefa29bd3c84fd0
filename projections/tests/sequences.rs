//! Properties over event sequences made by the real partition state machine from
//! random commands over small id spaces (so that chats, members and devices collide),
//! on both backends (in memory and RocksDB on disk).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use chorus_partition::PartitionState;
use chorus_projections::fold::{chat_list, cursors, directory, inbox, presence, receipt_log, roster};
use chorus_projections::store::{keys, MemStore, Store, Txn};
use chorus_projections::{fold_into, rebuild, rebuild_only, Effect, Projection, ReceiptStatus, View, Views};
use chorus_schema::*;
use proptest::prelude::*;
use proptest::sample::Index;
use support::backend::{Backend, Rocks};

const USERS: u64 = 4;
const DEVICES: u32 = 2;
const GROUPS: u8 = 2;
const PARTITION: PartitionId = PartitionId(0);

fn user() -> impl Strategy<Value = UserId> {
    (1..=USERS).prop_map(UserId)
}

fn device() -> impl Strategy<Value = DeviceId> {
    (1..=DEVICES).prop_map(DeviceId)
}

fn group() -> impl Strategy<Value = ChatId> {
    (1..=GROUPS).prop_map(|n| ChatId::group([n; 16]))
}

fn chat() -> impl Strategy<Value = ChatId> {
    prop_oneof![
        2 => group(),
        1 => (user(), user()).prop_map(|(a, b)| ChatId::direct(a, b)),
    ]
}

fn token() -> impl Strategy<Value = [u8; 32]> {
    (0u8..4).prop_map(|b| [b; 32])
}

fn kind() -> impl Strategy<Value = ReceiptKind> {
    prop_oneof![Just(ReceiptKind::Delivered), Just(ReceiptKind::Read)]
}

/// A command, except acks, which name a seq relative to the chat's last seq when
/// they run, and device commands, which pick one of the user's linked devices
/// when they run (so that most of them are accepted).
#[derive(Clone, Debug)]
enum Step {
    Command(CommandBody),
    Ack { chat: ChatId, kind: ReceiptKind, back: u64 },
    Device { op: DeviceOp, pick: Index },
}

#[derive(Clone, Debug)]
enum DeviceOp {
    Unlink,
    CreateSession([u8; 32]),
    RevokeSession,
}

fn step() -> impl Strategy<Value = (UserId, DeviceId, Step)> {
    use CommandBody::*;
    let body = prop_oneof![
        4 => user().prop_map(|recipient| SendDirect { recipient, ciphertext: vec![1], media: None }),
        1 => (user(), any::<bool>()).prop_map(|(peer, blocked)| SetDirectBlock { peer, blocked }),
        5 => group().prop_map(|chat| SendGroup { chat, ciphertext: vec![2], media: None }),
        1 => (chat(), 1u64..6).prop_map(|(chat, s)| EditMessage { chat, seq: Seq(s), ciphertext: vec![3] }),
        1 => (chat(), 1u64..6).prop_map(|(chat, s)| DeleteMessage { chat, seq: Seq(s) }),
        1 => (chat(), 1u64..6).prop_map(|(chat, s)| SetReaction { chat, seq: Seq(s), reaction: "+".into() }),
        2 => (group(), prop::collection::vec(user(), 0..4))
            .prop_map(|(chat, members)| CreateGroup { chat, name: "g".into(), members }),
        4 => (group(), user()).prop_map(|(chat, member)| AddMember { chat, member }),
        3 => (group(), user()).prop_map(|(chat, member)| RemoveMember { chat, member }),
        1 => (group(), user()).prop_map(|(chat, member)| PromoteMember { chat, member }),
        1 => (group(), user()).prop_map(|(chat, member)| DemoteMember { chat, member }),
        1 => group().prop_map(|chat| ChangeGroupInfo { chat, name: "n".into(), description: "d".into(), icon: None }),
        1 => group().prop_map(|chat| LeaveGroup { chat }),
    ];
    let user_body = prop_oneof![
        1 => Just(RegisterUser { phone: "5".into() }),
        2 => (any::<bool>(), 0u64..3).prop_map(|(online, connection)| SetPresence { online, connection }),
        4 => device().prop_map(|device| LinkDevice { device, identity_key: vec![4], name: "d".into(), token_hash: None }),
    ];
    let device_op = prop_oneof![
        1 => Just(DeviceOp::Unlink),
        3 => token().prop_map(DeviceOp::CreateSession),
        2 => Just(DeviceOp::RevokeSession),
    ];
    let step = prop_oneof![
        3 => body.prop_map(Step::Command),
        2 => prop_oneof![
            2 => user_body.prop_map(Step::Command),
            3 => (device_op, any::<Index>()).prop_map(|(op, pick)| Step::Device { op, pick }),
        ],
        2 => (chat(), kind(), prop_oneof![3 => Just(0u64), 2 => 0u64..4]).prop_map(|(chat, kind, back)| Step::Ack { chat, kind, back }),
    ];
    (user(), device(), step)
}

/// Drives the state machine and returns the committed records, in offset order.
///
/// Every user but the last is registered first, so that device and session
/// commands mostly succeed (they need a registered user), while the last
/// user's commands exercise the unregistered case and `RegisterUser`.
fn events(steps: &[(UserId, DeviceId, Step)]) -> Vec<EventRecord> {
    let mut state = PartitionState::new(PARTITION, 1);
    let mut out = Vec::new();
    for user in 1..USERS {
        let origin = Origin { user: UserId(user), device: DeviceId(1), client_msg_id: ClientMsgId(1_000_000 + user) };
        let register = Command { origin, body: CommandBody::RegisterUser { phone: user.to_string() } };
        assert!(state.apply(999_000, &register, &mut out).is_ok());
    }
    for (i, (user, device, step)) in steps.iter().enumerate() {
        let body = match step {
            Step::Command(body) => body.clone(),
            Step::Ack { chat, kind, back } => {
                let last = state.last_seq(chat).unwrap_or(Seq(0));
                CommandBody::Ack { chat: *chat, kind: *kind, up_to_seq: Seq(last.0.saturating_sub(*back)) }
            }
            Step::Device { op, pick } => {
                let linked = state.devices(*user).unwrap_or_default();
                // No linked device: device 1, refused (or a no-op revoke).
                let device = if linked.is_empty() { DeviceId(1) } else { linked[pick.index(linked.len())] };
                match op {
                    DeviceOp::Unlink => CommandBody::UnlinkDevice { device },
                    DeviceOp::CreateSession(token_hash) => {
                        CommandBody::CreateSession { device, token_hash: *token_hash }
                    }
                    DeviceOp::RevokeSession => CommandBody::RevokeSession { device },
                }
            }
        };
        let origin = Origin { user: *user, device: *device, client_msg_id: ClientMsgId(i as u64 + 1) };
        let at_ms = 1_000_000 + 1_000 * i as u64;
        let _ = state.apply(at_ms, &Command { origin, body }, &mut out);
    }
    out.into_iter()
        .enumerate()
        .map(|(i, event)| EventRecord {
            partition: PARTITION,
            offset: Offset(i as u64),
            log_index: LogIndex(2 * i as u64 + 1),
            event,
        })
        .collect()
}

fn union(a: &[UserId], b: &[UserId]) -> BTreeSet<UserId> {
    a.iter().chain(b).copied().collect()
}

/// The largest cursors over a user's devices, from the state machine.
fn user_cursors(state: &PartitionState, chat: &ChatId, user: UserId) -> (Seq, Seq) {
    (1..=DEVICES).fold((Seq(0), Seq(0)), |(d, r), dev| {
        let c = state.cursors(chat, user, DeviceId(dev)).unwrap_or_default();
        (d.max(c.delivered), r.max(c.read))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// (a) Folding in two runs, the second re-reading some records of the first,
    /// gives the same store and the same effects as one run.
    #[test]
    fn resume_equals_one_run(steps in prop::collection::vec(step(), 1..120), split in any::<Index>(), back in any::<Index>()) {
        let records = events(&steps);
        let mut whole_effects = Vec::new();
        let mut whole = MemStore::new();
        fold_into(&mut whole, &records, &mut whole_effects).unwrap();
        prop_assert_eq!(&whole, &rebuild(&records).unwrap());

        let k = split.index(records.len() + 1);
        let j = back.index(k + 1);
        let mut resumed = MemStore::new();
        let mut effects = Vec::new();
        fold_into(&mut resumed, &records[..k], &mut effects).unwrap();
        // A restarted projector may re-read from before its cursor.
        fold_into(&mut resumed, &records[j..], &mut effects).unwrap();
        prop_assert_eq!(&resumed, &whole);
        prop_assert_eq!(&effects, &whole_effects);
        prop_assert_eq!(Projection::next_offset(&resumed.begin(), PARTITION).unwrap(), Offset(records.len() as u64));

        // A projector that batches: records [0, k) in one transaction, the rest in another.
        let mut batched = MemStore::new();
        let mut batch_effects = Vec::new();
        for batch in [&records[..k], &records[k..]] {
            let mut txn = batched.begin();
            for r in batch {
                Projection::new().apply(&mut txn, r, &mut batch_effects).unwrap();
            }
            txn.commit();
        }
        prop_assert_eq!(&batched, &whole);
        prop_assert_eq!(batch_effects, whole_effects);
    }

    /// (g) Folding one view (with the views it reads) gives exactly that
    /// view's entries of a fold of every view, for every view.
    #[test]
    fn one_view_equals_its_part_of_every_view(steps in prop::collection::vec(step(), 1..120)) {
        let records = events(&steps);
        let whole = rebuild(&records).unwrap();
        for view in View::ALL {
            let only = rebuild_only(&records, Views::one(view)).unwrap();
            let expected: Vec<(&[u8], &[u8])> =
                whole.entries().filter(|(k, _)| view.owns(k) || k[0] == keys::APPLIED).collect();
            prop_assert_eq!(only.entries().collect::<Vec<_>>(), expected, "view {}", view);
        }
    }

    /// (b) cursors, (c) deliveries, (d) unread, (e) inbox, (f) directory, and
    /// the views against the state machine, checked after every event.
    #[test]
    fn views_follow_the_state_machine(steps in prop::collection::vec(step(), 1..120)) {
        views_follow::<MemStore>(&steps)?;
    }
}

proptest! {
    // Each case opens a RocksDB on disk: fewer cases, same properties.
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// (b)–(d) on RocksDB.
    #[test]
    fn views_follow_the_state_machine_on_rocks(steps in prop::collection::vec(step(), 1..120)) {
        views_follow::<Rocks>(&steps)?;
    }

    /// (a) on RocksDB: a resumed, re-reading, batched fold into RocksDB equals the
    /// one-run in-memory fold, entry for entry.
    #[test]
    fn resume_on_rocks_equals_one_run(steps in prop::collection::vec(step(), 1..120), split in any::<Index>(), back in any::<Index>()) {
        let records = events(&steps);
        let mut whole_effects = Vec::new();
        let mut whole = MemStore::new();
        fold_into(&mut whole, &records, &mut whole_effects).unwrap();
        let k = split.index(records.len() + 1);
        let j = back.index(k + 1);
        let mut rocks = Rocks::fresh();
        let mut effects = Vec::new();
        fold_into(&mut rocks, &records[..k], &mut effects).unwrap();
        // Re-read from before the cursor, in one batched transaction.
        let mut txn = rocks.begin_txn();
        for r in &records[j..] {
            Projection::new().apply(&mut txn, r, &mut effects).unwrap();
        }
        Rocks::commit_txn(txn).unwrap();
        prop_assert_eq!(rocks.dump().unwrap(), whole.dump().unwrap());
        prop_assert_eq!(effects, whole_effects);
    }
}

/// (b) cursors, (c) deliveries, (d) unread, (e) inbox, (f) directory, and the
/// views against the state machine, checked after every event, on backend `S`.
fn views_follow<S: Backend>(steps: &[(UserId, DeviceId, Step)]) -> Result<(), TestCaseError> {
    let records = events(steps);
    let mut store = S::fresh();
    let mut shadow = PartitionState::new(PARTITION, 1);
    // (chat, seq) -> sender of every message.
    let mut messages: BTreeMap<ChatId, BTreeMap<Seq, UserId>> = BTreeMap::new();
    // The inbox model, from the state machine's rosters: (user, chat) -> seq ->
    // offset of every item where the user was a member before or after it.
    let mut inboxes: BTreeMap<(UserId, ChatId), BTreeMap<Seq, u64>> = BTreeMap::new();
    // The receipt log model: (chat, user, kind) -> each (seq, at_ms) the
    // user's best cursor of that kind moved to.
    let mut steps_model: BTreeMap<(ChatId, UserId, u8), Vec<(Seq, u64)>> = BTreeMap::new();
    // The group details model: the latest name and description.
    let mut details: BTreeMap<ChatId, (String, String)> = BTreeMap::new();
    for record in &records {
        let event = &record.event;
        let chat = event.body.chat();
        let before = chat.and_then(|c| shadow.members(&c)).unwrap_or_default();
        let cursors_before =
            chat.map(|c| cursors::get(&store.begin_txn(), &c, event.origin.user, event.origin.device).unwrap());
        shadow.fold(event);
        if let EventBody::MessageSent { chat, seq, .. } = &event.body {
            messages.entry(*chat).or_default().insert(*seq, event.origin.user);
        }
        let mut effects = Vec::new();
        let mut txn = store.begin_txn();
        Projection::new().apply(&mut txn, record, &mut effects).unwrap();
        S::commit_txn(txn).unwrap();
        let txn = store.begin_txn();
        let Some(chat) = chat else {
            // User events: account updates only, for device changes.
            let expected: Vec<Effect> = match &event.body {
                EventBody::DeviceLinked { user, device, .. } => {
                    vec![Effect::Account {
                        user: *user,
                        device: *device,
                        change: chorus_schema::DeviceNoticeKind::Linked,
                    }]
                }
                EventBody::DeviceUnlinked { user, device } => {
                    vec![Effect::Account {
                        user: *user,
                        device: *device,
                        change: chorus_schema::DeviceNoticeKind::Unlinked,
                    }]
                }
                EventBody::SessionRevoked { user, device } => {
                    vec![Effect::Account {
                        user: *user,
                        device: *device,
                        change: chorus_schema::DeviceNoticeKind::LoggedOut,
                    }]
                }
                // (g) below.
                EventBody::PresenceChanged { .. } => effects.clone(),
                _ => vec![],
            };
            prop_assert_eq!(&effects, &expected);
            // (g) The presence view is the state machine's; a change of the
            // user's presence is published once, with its time.
            if let EventBody::PresenceChanged { user, online, .. } = &event.body {
                let p = presence::get(&txn, *user).unwrap();
                prop_assert_eq!(p.online, shadow.online(*user).unwrap());
                prop_assert_eq!(p.online, *online);
                for e in &effects {
                    prop_assert_eq!(
                        e,
                        &Effect::Presence {
                            user: *user,
                            presence: Some(presence::Presence { online: *online, last_seen_ms: event.at_ms })
                        }
                    );
                }
                prop_assert!(effects.len() <= 1);
            }
            // (f) The directory is the state machine's users, devices and sessions.
            let user = event.body.user().expect("a user event");
            prop_assert_eq!(directory::is_registered(&txn, user).unwrap(), shadow.is_registered(user));
            let devices = directory::devices(&txn, user).unwrap();
            let ids: Vec<DeviceId> = devices.iter().map(|(d, _)| *d).collect();
            prop_assert_eq!(ids, shadow.devices(user).unwrap_or_default());
            for dev in 0..=DEVICES + 1 {
                let d = DeviceId(dev);
                prop_assert_eq!(directory::session(&txn, user, d).unwrap(), shadow.session(user, d), "{}/{}", user, d);
            }
            continue;
        };
        if let EventBody::DirectBlockSet { .. } = &event.body {
            // A block changes no view (the chat may not even exist yet).
            prop_assert!(effects.is_empty());
            continue;
        }
        let after = shadow.members(&chat).unwrap();
        if let Some(seq) = event.body.seq() {
            for u in union(&before, &after) {
                inboxes.entry((u, chat)).or_default().insert(seq, record.offset.0);
            }
        }
        // (e) The inbox of every user of the chat is the model's.
        for u in union(&before, &after) {
            let (items, more) = inbox::items(&txn, u, &chat, Seq(0), usize::MAX).unwrap();
            prop_assert!(!more);
            let got: BTreeMap<Seq, u64> = items.into_iter().map(|i| (i.seq, i.offset.0)).collect();
            let want = inboxes.get(&(u, chat)).cloned().unwrap_or_default();
            prop_assert_eq!(got, want, "inbox of {} in {}", u, chat);
        }

        // (g) The receipt log: the user's best cursors are the state
        // machine's, and the first step at or above every seq is the model's.
        if let EventBody::Receipt { .. } = &event.body {
            let u = event.origin.user;
            let (d, r) = user_cursors(&shadow, &chat, u);
            prop_assert_eq!(receipt_log::best(&txn, &chat, u).unwrap(), Cursors { delivered: d, read: r });
            for (k, byte, now) in [(ReceiptKind::Delivered, 0u8, d), (ReceiptKind::Read, 1, r)] {
                let steps = steps_model.entry((chat, u, byte)).or_default();
                if now > steps.last().map_or(Seq(0), |(s, _)| *s) {
                    steps.push((now, event.at_ms));
                }
                for s in 1..=now.0 + 1 {
                    let want = steps.iter().find(|(q, _)| q.0 >= s).map(|(_, t)| *t);
                    prop_assert_eq!(
                        receipt_log::first_at(&txn, &chat, u, k, Seq(s)).unwrap(),
                        want,
                        "{} {:?} {}",
                        u,
                        k,
                        s
                    );
                }
            }
        }
        // (h) A group's details are its latest name and description.
        match &event.body {
            EventBody::GroupCreated { name, .. } => {
                details.insert(chat, (name.clone(), String::new()));
            }
            EventBody::GroupInfoChanged { name, description, .. } => {
                details.insert(chat, (name.clone(), description.clone()));
            }
            _ => {}
        }
        if let Some((name, description)) = details.get(&chat) {
            let d = roster::details(&txn, &chat).unwrap();
            prop_assert_eq!((&d.name, &d.description), (name, description));
        }

        // (b) Cursors never go backwards, read <= delivered, and they equal the state machine's.
        if let EventBody::Receipt { .. } = &event.body {
            let c = cursors::get(&txn, &chat, event.origin.user, event.origin.device).unwrap();
            let old = cursors_before.unwrap();
            prop_assert!(c.delivered >= old.delivered && c.read >= old.read, "{:?} -> {:?}", old, c);
            prop_assert!(c.read <= c.delivered);
            let sm = shadow.cursors(&chat, event.origin.user, event.origin.device).unwrap();
            prop_assert_eq!((c.delivered, c.read), (sm.delivered, sm.read));
        }

        for effect in &effects {
            match effect {
                // (c) Deliveries name exactly the members before or after the
                // item, the origin user included (multi-device), sorted.
                Effect::Deliver { chat: c, seq, recipients } => {
                    prop_assert_eq!(*c, chat);
                    prop_assert_eq!(Some(*seq), event.body.seq());
                    let audience = union(&before, &after);
                    prop_assert!(
                        recipients.contains(&event.origin.user),
                        "the origin {} misses {}",
                        event.origin.user,
                        seq
                    );
                    prop_assert!(recipients.windows(2).all(|w| w[0] < w[1]), "not sorted: {:?}", recipients);
                    prop_assert_eq!(recipients.iter().copied().collect::<BTreeSet<_>>(), audience);
                }
                // Ticks are sound: every other current member that was a member
                // at the message acknowledged it.
                Effect::ReceiptChanged { chat: c, sender, up_to_seq, status } => {
                    prop_assert_eq!(*c, chat);
                    prop_assert!(
                        matches!(event.body, EventBody::Receipt { .. }),
                        "ticks moved at {}",
                        event.body.kind()
                    );
                    prop_assert_eq!(messages[&chat].get(up_to_seq), Some(sender));
                    let others: Vec<UserId> = after.iter().copied().filter(|u| u != sender).collect();
                    prop_assert!(!others.is_empty() && after.contains(sender));
                    for m in others {
                        let since = shadow.member(&chat, m).unwrap().since;
                        let (d, r) = user_cursors(&shadow, &chat, m);
                        let acked = if *status == ReceiptStatus::Read { r } else { d };
                        prop_assert!(
                            acked.max(since) >= *up_to_seq,
                            "{} has not acked {} ({:?})",
                            m,
                            up_to_seq,
                            status
                        );
                    }
                }
                Effect::Account { .. } | Effect::Presence { .. } | Effect::KeysLow { .. } => {
                    prop_assert!(false, "a user effect of chat event {}", event.body.kind())
                }
                // Joins name exactly the users who became members, at the
                // item that made them members (0: the direct chat opened).
                Effect::Joined { chat: c, seq, users } => {
                    prop_assert_eq!(*c, chat);
                    prop_assert_eq!(*seq, event.body.seq().unwrap_or(Seq(0)));
                    let was: BTreeSet<UserId> = before.iter().copied().collect();
                    let joined: BTreeSet<UserId> = after.iter().copied().filter(|u| !was.contains(u)).collect();
                    prop_assert_eq!(users.iter().copied().collect::<BTreeSet<_>>(), joined);
                }
            }
        }

        // (d) unread <= last_seq, and exactly the others' messages after the
        // read cursor and the join, for every current member.
        let last = shadow.last_seq(&chat).unwrap();
        for u in &after {
            let e = chat_list::entry(&txn, *u, &chat).unwrap().expect("member has an entry");
            prop_assert!(e.unread <= e.last_seq.0);
            prop_assert_eq!(e.last_seq, last);
            let since = shadow.member(&chat, *u).unwrap().since;
            let from = user_cursors(&shadow, &chat, *u).1.max(since);
            let unread =
                messages.get(&chat).map_or(0, |m| m.range(from.next()..).filter(|(_, s)| *s != u).count() as u64);
            prop_assert_eq!(e.unread, unread, "user {} chat {}", u, chat);
        }
        for (_, e) in chat_list::list(&txn, event.origin.user, usize::MAX).unwrap() {
            prop_assert!(e.unread <= e.last_seq.0);
        }

        // The roster is the state machine's.
        let members: Vec<UserId> = roster::members(&txn, &chat).unwrap().into_iter().map(|(u, _)| u).collect();
        prop_assert_eq!(&members, &after);
        prop_assert_eq!(roster::admins(&txn, &chat).unwrap(), shadow.admins(&chat).unwrap());
        prop_assert_eq!(roster::chat(&txn, &chat).unwrap().unwrap().last_seq, last);
    }
    // (e) No inbox item beyond the model's, and (f) no directory entry beyond
    // the state machine's users and devices.
    let txn = store.begin_txn();
    let items = txn.scan_prefix(&[keys::INBOX], 1 << 20).unwrap().len();
    prop_assert_eq!(items, inboxes.values().map(BTreeMap::len).sum::<usize>());
    let mut registered = 0;
    let mut linked = 0;
    for user in 1..=USERS {
        if shadow.is_registered(UserId(user)) {
            registered += 1;
            linked += shadow.devices(UserId(user)).unwrap().len();
        }
    }
    prop_assert_eq!(txn.scan_prefix(&[keys::USERS], 1 << 20).unwrap().len(), registered);
    prop_assert_eq!(txn.scan_prefix(&[keys::DEVICES], 1 << 20).unwrap().len(), linked);
    Ok(())
}

/// The generator reaches what the properties are about: receipts that tick,
/// removals, re-joins and deliveries.
#[test]
fn generator_covers_the_rules() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let mut kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
    let (mut delivered, mut read, mut events) = (0, 0, 0);
    for _ in 0..200 {
        let steps = prop::collection::vec(step(), 1..120).new_tree(&mut runner).unwrap().current();
        let records = events_of(&steps);
        events += records.len();
        for r in &records {
            *kinds.entry(r.event.body.kind()).or_default() += 1;
        }
        let mut effects = Vec::new();
        fold_into(&mut MemStore::new(), &records, &mut effects).unwrap();
        for e in effects {
            match e {
                Effect::ReceiptChanged { status: ReceiptStatus::Delivered, .. } => delivered += 1,
                Effect::ReceiptChanged { status: ReceiptStatus::Read, .. } => read += 1,
                _ => {}
            }
        }
    }
    eprintln!("{events} events, {delivered} delivered and {read} read ticks: {kinds:?}");
    for kind in [
        "MessageSent",
        "Receipt",
        "GroupCreated",
        "MemberAdded",
        "MemberRemoved",
        "MemberLeft",
        "MemberPromoted",
        "UserRegistered",
        "DeviceLinked",
        "DeviceUnlinked",
        "SessionCreated",
        "SessionRevoked",
    ] {
        assert!(kinds.get(kind).copied().unwrap_or(0) >= 20, "{kind}: {kinds:?}");
    }
    assert!(delivered >= 20 && read >= 20, "{delivered} delivered, {read} read");
}

fn events_of(steps: &[(UserId, DeviceId, Step)]) -> Vec<EventRecord> {
    events(steps)
}
