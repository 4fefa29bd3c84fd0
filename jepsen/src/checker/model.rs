//! What the history says, indexed for the checks.

use std::collections::{BTreeMap, BTreeSet};

use chorus_schema::{ChatId, ClientMsgId, DeviceId, Seq, UserId};

use crate::history::{History, Item, Observation, Op, Operation, Outcome, Value};

/// A membership change with a known seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Change {
    pub seq: Seq,
    pub member: UserId,
    pub added: bool,
}

/// Receipt observations per (viewer, chat, of): (kind is read?, up_to_seq), in time order.
pub(crate) type ReceiptUpdates = BTreeMap<((UserId, DeviceId), ChatId, UserId), Vec<(bool, Seq)>>;

/// Receipt ticks per (viewer, chat): (kind is read?, up_to_seq), in time order.
pub(crate) type Ticks = BTreeMap<((UserId, DeviceId), ChatId), Vec<(bool, Seq)>>;

/// Everything the checks need, built once.
#[derive(Debug, Default)]
pub struct Model {
    pub(crate) ops: Vec<Operation>,
    pub(crate) devices: BTreeMap<UserId, Vec<DeviceId>>,
    pub(crate) initial: BTreeMap<ChatId, BTreeSet<UserId>>,
    /// Acknowledged membership changes per chat, in seq order.
    pub(crate) changes: BTreeMap<ChatId, Vec<Change>>,
    /// Members whose status became unknown (membership op of unknown outcome).
    pub(crate) ambiguous: BTreeSet<(ChatId, UserId)>,
    /// The final read of each (user, device, chat), as the log gives it.
    pub(crate) reads: BTreeMap<(UserId, DeviceId, ChatId), Vec<Item>>,
    /// The final read of each (user, device, chat), as the device holds it
    /// (SDK executor only; empty otherwise).
    pub(crate) device_reads: BTreeMap<(UserId, DeviceId, ChatId), Vec<Item>>,
    /// Live deliveries per (user, device, chat), in observation order.
    pub(crate) live: BTreeMap<(UserId, DeviceId, ChatId), Vec<Item>>,
    /// Receipt observations per (viewer, chat, of), in time order: (kind is read?, up_to_seq).
    pub(crate) receipts: ReceiptUpdates,
    /// Receipt ticks the SDK handed to each device, in time order.
    pub(crate) ticks: Ticks,
    /// The device of every send, by (sender, client_msg_id).
    pub(crate) sent_from: BTreeMap<(UserId, ClientMsgId), DeviceId>,
}

impl Model {
    pub fn build(history: &History) -> Model {
        let mut m = Model::default();
        let (chats, devices) = history.setup();
        for (u, d) in devices {
            m.devices.entry(u).or_default().push(d);
        }
        for c in chats {
            m.initial.insert(c.chat, c.members.into_iter().collect());
        }
        m.ops = history.operations();
        for op in &m.ops {
            match (&op.op, &op.outcome) {
                (
                    Op::AddMember { chat, member, .. } | Op::RemoveMember { chat, member, .. },
                    Outcome::Ok(Value::MemberChanged { seq }),
                ) => {
                    let added = matches!(op.op, Op::AddMember { .. });
                    m.changes.entry(*chat).or_default().push(Change { seq: *seq, member: *member, added });
                }
                (Op::AddMember { chat, member, .. } | Op::RemoveMember { chat, member, .. }, Outcome::Info(_)) => {
                    m.ambiguous.insert((*chat, *member));
                }
                (Op::Read { user, device, chat }, Outcome::Ok(Value::Read { items })) => {
                    m.reads.insert((*user, *device, *chat), items.clone());
                }
                (Op::DeviceRead { user, device, chat }, Outcome::Ok(Value::Read { items })) => {
                    m.device_reads.insert((*user, *device, *chat), items.clone());
                }
                (Op::Send { sender, device, client_msg_id, .. }, _) => {
                    m.sent_from.insert((*sender, *client_msg_id), *device);
                }
                _ => {}
            }
        }
        for changes in m.changes.values_mut() {
            changes.sort();
        }
        for (_, obs) in history.observations() {
            match obs {
                Observation::Deliver { user, device, chat, item } => {
                    m.live.entry((*user, *device, *chat)).or_default().push(*item);
                }
                Observation::Receipt { viewer, chat, of, kind, up_to_seq } => {
                    let read = matches!(kind, chorus_schema::ReceiptKind::Read);
                    m.receipts.entry((*viewer, *chat, *of)).or_default().push((read, *up_to_seq));
                }
                Observation::Tick { viewer, chat, kind, up_to_seq } => {
                    let read = matches!(kind, chorus_schema::ReceiptKind::Read);
                    m.ticks.entry((*viewer, *chat)).or_default().push((read, *up_to_seq));
                }
            }
        }
        m
    }

    /// Whether `user` is certainly a member of `chat` at `seq` (`None`: unknown).
    /// An added member receives its own `MemberAdded` item and everything after;
    /// a removed member receives its own `MemberRemoved` item and nothing after.
    pub(crate) fn member_at(&self, chat: &ChatId, user: UserId, seq: Seq) -> Option<bool> {
        if self.ambiguous.contains(&(*chat, user)) {
            return None;
        }
        let mut member = self.initial.get(chat).is_some_and(|s| s.contains(&user));
        for c in self.changes.get(chat).into_iter().flatten().filter(|c| c.member == user) {
            if c.added && c.seq <= seq {
                member = true;
            } else if !c.added && c.seq < seq {
                member = false;
            }
        }
        Some(member)
    }

    /// Every user ever a member of `chat`.
    pub(crate) fn users_of(&self, chat: &ChatId) -> BTreeSet<UserId> {
        let mut users: BTreeSet<UserId> = self.initial.get(chat).cloned().unwrap_or_default();
        users.extend(self.changes.get(chat).into_iter().flatten().map(|c| c.member));
        users
    }

    /// Sends, with their op and outcome.
    pub(crate) fn sends(&self) -> impl Iterator<Item = (&Operation, ChatId, UserId, DeviceId, ClientMsgId)> {
        self.ops.iter().filter_map(|o| match &o.op {
            Op::Send { chat, sender, device, client_msg_id } => Some((o, *chat, *sender, *device, *client_msg_id)),
            _ => None,
        })
    }

    /// Every item any reader (final reads from the log and from devices, live
    /// deliveries) has for `chat`.
    pub(crate) fn seen_items(&self) -> impl Iterator<Item = (ChatId, (UserId, DeviceId), Item)> + '_ {
        let flat = |m: &'_ BTreeMap<(UserId, DeviceId, ChatId), Vec<Item>>| {
            m.iter().flat_map(|((u, d, c), items)| items.iter().map(move |i| (*c, (*u, *d), *i))).collect::<Vec<_>>()
        };
        flat(&self.reads).into_iter().chain(flat(&self.device_reads)).chain(flat(&self.live))
    }

    /// Whether `item` is a message that `device` of `user` sent itself (a
    /// device does not receive its own sends).
    pub(crate) fn own(&self, user: UserId, device: DeviceId, item: &Item) -> bool {
        item.message
            .is_some_and(|(sender, cmid)| sender == user && self.sent_from.get(&(sender, cmid)) == Some(&device))
    }

    pub(crate) fn outcome_counts(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for o in &self.ops {
            match o.outcome {
                Outcome::Ok(_) => counts.0 += 1,
                Outcome::Fail(_) => counts.1 += 1,
                Outcome::Info(_) => counts.2 += 1,
            }
        }
        counts
    }
}
