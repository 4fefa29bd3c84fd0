//! Chat state (direct and group) and the chat-partition rules.

use std::collections::{BTreeMap, BTreeSet};

use chorus_schema::{
    ChatId, CommandBody, DeviceId, EventBody, Origin, Outcome, ReceiptKind, RejectCode, Rejection, Seq, UserId,
    MAX_GROUP_MEMBERS,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::state::Decision;

/// How long after it was sent (by `at_ms`, relative to the partition's newest
/// `at_ms`) a message may still be edited or deleted, and how long the state machine
/// remembers its sender (see the crate docs, **Messages**).
pub const EDIT_WINDOW_MS: u64 = 48 * 60 * 60 * 1000;

/// Direct (a fixed pair) or group (a roster with admins).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatKind {
    Direct,
    Group,
}

/// A member of a chat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The seq of the event that made them a member (the longest-standing member
    /// has the smallest `since`).
    pub since: Seq,
    pub admin: bool,
}

/// The cumulative receipt cursors of one device in one chat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursors {
    pub delivered: Seq,
    pub read: Seq,
}

impl Cursors {
    pub fn get(&self, kind: ReceiptKind) -> Seq {
        match kind {
            ReceiptKind::Delivered => self.delivered,
            ReceiptKind::Read => self.read,
        }
    }
}

/// What the state machine remembers of a recent message: enough to authorize
/// edits, deletes and reactions. Content stays in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Message {
    sender: UserId,
    at_ms: u64,
    deleted: bool,
}

/// One chat's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Chat {
    pub(crate) kind: ChatKind,
    pub(crate) last_seq: Seq,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) members: BTreeMap<UserId, Member>,
    /// The remembered `MessageSent` seqs: those inside the edit window (see [`Chats`]).
    messages: BTreeMap<Seq, Message>,
    /// The largest seq of a message that was forgotten (0 if none): a target at or
    /// below it that is not remembered is too old, not unknown.
    forgotten: Seq,
    /// Kept after a member leaves, so that a member who comes back never sees a
    /// cursor go backwards.
    pub(crate) receipts: BTreeMap<UserId, BTreeMap<DeviceId, Cursors>>,
}

impl Chat {
    fn new(kind: ChatKind, name: String) -> Chat {
        Chat {
            kind,
            last_seq: Seq(0),
            name,
            description: String::new(),
            members: BTreeMap::new(),
            messages: BTreeMap::new(),
            forgotten: Seq(0),
            receipts: BTreeMap::new(),
        }
    }

    pub(crate) fn cursors(&self, user: UserId, device: DeviceId) -> Cursors {
        self.receipts.get(&user).and_then(|d| d.get(&device)).copied().unwrap_or_default()
    }

    fn is_admin(&self, user: UserId) -> bool {
        self.members.get(&user).is_some_and(|m| m.admin)
    }

    fn admin_count(&self) -> usize {
        self.members.values().filter(|m| m.admin).count()
    }

    /// The member who becomes admin when the last admin `leaving` goes: the
    /// longest-standing remaining member (smallest `since`, then smallest user id).
    /// `None` if another admin remains or nobody remains.
    fn successor(&self, leaving: UserId) -> Option<UserId> {
        let other_admin = self.members.iter().any(|(u, m)| *u != leaving && m.admin);
        if other_admin {
            return None;
        }
        self.members.iter().filter(|(u, _)| **u != leaving).min_by_key(|(u, m)| (m.since, **u)).map(|(u, _)| *u)
    }
}

/// The chats of a partition, with a partition-wide time index of the remembered
/// messages.
///
/// A message is remembered (sender, deleted flag, `at_ms`) only while
/// `at_ms + EDIT_WINDOW_MS >= newest_at_ms`, the largest `at_ms` folded into the
/// partition so far. [`Chats::prune`] runs after every folded event and forgets the messages
/// that fell out of the window; the index makes each prune O(log n) and each
/// message is forgotten once, so the cost is amortized O(log n) per event. The
/// index is keyed by each message's own `at_ms`, so a leader clock that goes
/// backwards is handled exactly (such a message may be forgotten at once, or before
/// older seqs of its chat); nothing assumes `at_ms` is monotone.
///
/// `decide` also treats a remembered message as outside the window if it is out of
/// it at the command's own time (`max(newest_at_ms, at_ms)`), so the window does
/// not depend on when the last prune ran.
///
/// Serialized as the chats alone (in id order); the index is rebuilt from the
/// messages' `at_ms` on deserialize.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Chats {
    map: BTreeMap<ChatId, Chat>,
    /// `(at_ms, chat, seq)` of every remembered message.
    by_time: BTreeSet<(u64, ChatId, Seq)>,
}

impl Chats {
    pub(crate) fn get(&self, chat: &ChatId) -> Option<&Chat> {
        self.map.get(chat)
    }

    pub(crate) fn ids(&self) -> impl Iterator<Item = ChatId> + '_ {
        self.map.keys().copied()
    }

    /// Forgets the messages with `at_ms + EDIT_WINDOW_MS < newest_at_ms`.
    pub(crate) fn prune(&mut self, newest_at_ms: u64) {
        let horizon = newest_at_ms.saturating_sub(EDIT_WINDOW_MS);
        while let Some(&(at_ms, chat, seq)) = self.by_time.first() {
            if at_ms >= horizon {
                break;
            }
            self.by_time.pop_first();
            let c = self.map.get_mut(&chat).expect("prune: indexed message of an unknown chat");
            c.messages.remove(&seq);
            c.forgotten = c.forgotten.max(seq);
        }
    }
}

impl Serialize for Chats {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Chats {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<ChatId, Chat>::deserialize(deserializer)?;
        let by_time =
            map.iter().flat_map(|(chat, c)| c.messages.iter().map(move |(seq, m)| (m.at_ms, *chat, *seq))).collect();
        Ok(Chats { map, by_time })
    }
}

fn reject(code: RejectCode, message: impl Into<String>) -> Rejection {
    Rejection::new(code, message)
}

/// Looks up a group the origin is a member of.
fn member_chat<'a>(chats: &'a Chats, chat: &ChatId, user: UserId) -> Result<&'a Chat, Rejection> {
    let c = chats.get(chat).ok_or_else(|| reject(RejectCode::UnknownChat, format!("no chat {chat}")))?;
    if !c.members.contains_key(&user) {
        return Err(reject(RejectCode::NotMember, format!("user {user} is not a member of chat {chat}")));
    }
    Ok(c)
}

/// Looks up a group whose admin is the origin.
fn admin_group<'a>(chats: &'a Chats, chat: &ChatId, user: UserId) -> Result<&'a Chat, Rejection> {
    let c = group(chats, chat)?;
    if !c.members.contains_key(&user) {
        return Err(reject(RejectCode::NotMember, format!("user {user} is not a member of chat {chat}")));
    }
    if !c.is_admin(user) {
        return Err(reject(RejectCode::NotAdmin, format!("user {user} is not an admin of chat {chat}")));
    }
    Ok(c)
}

fn group<'a>(chats: &'a Chats, chat: &ChatId) -> Result<&'a Chat, Rejection> {
    let c = chats.get(chat).ok_or_else(|| reject(RejectCode::UnknownChat, format!("no chat {chat}")))?;
    if c.kind != ChatKind::Group {
        return Err(reject(RejectCode::Invalid, format!("chat {chat} is a direct chat, not a group")));
    }
    Ok(c)
}

/// The target of an edit, delete or reaction.
enum Target {
    /// A live message inside the edit window.
    Recent(Message),
    /// A seq of the chat that is outside the edit window: forgotten, or remembered
    /// but out of the window at the command's time. Whether it was a live message is
    /// no longer known.
    Old,
}

fn no_message(chat: &ChatId, seq: Seq) -> Rejection {
    reject(RejectCode::UnknownMessage, format!("no message at seq {seq} in chat {chat}"))
}

fn too_old() -> Rejection {
    reject(RejectCode::Invalid, "message is too old to edit/delete")
}

/// Classifies a target seq at time `now` (`max(newest_at_ms, at_ms)`): a seq that
/// never existed, a deleted message or a seq inside the window that is not a
/// message is `UnknownMessage`.
fn target(c: &Chat, chat: &ChatId, seq: Seq, now: u64) -> Result<Target, Rejection> {
    if seq == Seq(0) || seq > c.last_seq {
        return Err(no_message(chat, seq));
    }
    match c.messages.get(&seq) {
        Some(m) if m.at_ms.saturating_add(EDIT_WINDOW_MS) < now => Ok(Target::Old),
        Some(m) if m.deleted => Err(no_message(chat, seq)),
        Some(m) => Ok(Target::Recent(*m)),
        None if seq <= c.forgotten => Ok(Target::Old),
        None => Err(no_message(chat, seq)),
    }
}

/// The target of an edit or delete by `user`: a recent live message of theirs.
fn own_recent(c: &Chat, chat: &ChatId, seq: Seq, now: u64, user: UserId, what: &str) -> Result<(), Rejection> {
    match target(c, chat, seq, now)? {
        Target::Old => Err(too_old()),
        Target::Recent(m) if m.sender != user => {
            Err(reject(RejectCode::UnknownMessage, format!("message {seq} is not yours to {what}")))
        }
        Target::Recent(_) => Ok(()),
    }
}

fn one(event: EventBody, chat: ChatId, seq: Seq) -> Decision {
    Decision { events: vec![event], outcome: Outcome::Chat { chat, seq } }
}

/// Decides a chat-partition command against the current state.
///
/// `key` is the command's chat key (for `SendDirect`, the pair's id, already
/// hashed by the caller); `now` is `max(newest_at_ms, at_ms)`.
pub(crate) fn decide(
    chats: &Chats,
    key: ChatId,
    now: u64,
    origin: &Origin,
    body: &CommandBody,
) -> Result<Decision, Rejection> {
    let user = origin.user;
    match body {
        CommandBody::SendDirect { recipient, ciphertext, media } => {
            if *recipient == user {
                return Err(reject(RejectCode::Invalid, "cannot send a direct message to yourself"));
            }
            let chat = key;
            debug_assert_eq!(chat, ChatId::direct(user, *recipient));
            let mut events = Vec::with_capacity(2);
            let seq = match chats.get(&chat) {
                None => {
                    let mut members = vec![user, *recipient];
                    members.sort();
                    events.push(EventBody::ChatOpened { chat, members });
                    Seq(1)
                }
                Some(c) if c.kind == ChatKind::Direct => c.last_seq.next(),
                Some(_) => return Err(reject(RejectCode::Invalid, format!("chat {chat} is not a direct chat"))),
            };
            events.push(EventBody::MessageSent { chat, seq, ciphertext: ciphertext.clone(), media: media.clone() });
            Ok(Decision { events, outcome: Outcome::Chat { chat, seq } })
        }
        CommandBody::SendGroup { chat, ciphertext, media } => {
            let c = group(chats, chat)?;
            if !c.members.contains_key(&user) {
                return Err(reject(RejectCode::NotMember, format!("user {user} is not a member of chat {chat}")));
            }
            let seq = c.last_seq.next();
            Ok(one(
                EventBody::MessageSent { chat: *chat, seq, ciphertext: ciphertext.clone(), media: media.clone() },
                *chat,
                seq,
            ))
        }
        CommandBody::EditMessage { chat, seq: target, ciphertext } => {
            let c = member_chat(chats, chat, user)?;
            own_recent(c, chat, *target, now, user, "edit")?;
            let seq = c.last_seq.next();
            Ok(one(
                EventBody::MessageEdited { chat: *chat, seq, target: *target, ciphertext: ciphertext.clone() },
                *chat,
                seq,
            ))
        }
        CommandBody::DeleteMessage { chat, seq: target } => {
            let c = member_chat(chats, chat, user)?;
            own_recent(c, chat, *target, now, user, "delete")?;
            let seq = c.last_seq.next();
            Ok(one(EventBody::MessageDeleted { chat: *chat, seq, target: *target }, *chat, seq))
        }
        CommandBody::SetReaction { chat, seq: target_seq, reaction } => {
            let c = member_chat(chats, chat, user)?;
            // Reactions on old messages are normal: any seq of the chat will do.
            target(c, chat, *target_seq, now)?;
            let target = target_seq;
            let seq = c.last_seq.next();
            Ok(one(
                EventBody::ReactionSet { chat: *chat, seq, target: *target, reaction: reaction.clone() },
                *chat,
                seq,
            ))
        }
        CommandBody::Ack { chat, kind, up_to_seq } => {
            let c = member_chat(chats, chat, user)?;
            if *up_to_seq > c.last_seq {
                return Err(reject(
                    RejectCode::Invalid,
                    format!("ack up to {up_to_seq} is beyond the last seq {} of chat {chat}", c.last_seq),
                ));
            }
            let current = c.cursors(user, origin.device).get(*kind);
            if *up_to_seq <= current {
                return Ok(Decision { events: vec![], outcome: Outcome::Receipt { chat: *chat, up_to_seq: current } });
            }
            Ok(Decision {
                events: vec![EventBody::Receipt { chat: *chat, kind: *kind, up_to_seq: *up_to_seq }],
                outcome: Outcome::Receipt { chat: *chat, up_to_seq: *up_to_seq },
            })
        }
        CommandBody::CreateGroup { chat, name, members } => {
            if chat.is_direct() {
                return Err(reject(
                    RejectCode::Invalid,
                    format!("{chat} is a direct chat id; mint group ids with ChatId::group"),
                ));
            }
            if chats.map.contains_key(chat) {
                return Err(reject(RejectCode::AlreadyExists, format!("chat {chat} exists")));
            }
            let mut members = members.clone();
            members.push(user);
            members.sort();
            members.dedup();
            if members.len() > MAX_GROUP_MEMBERS {
                return Err(reject(RejectCode::Invalid, format!("a group has at most {MAX_GROUP_MEMBERS} members")));
            }
            let seq = Seq(1);
            Ok(one(EventBody::GroupCreated { chat: *chat, seq, name: name.clone(), members }, *chat, seq))
        }
        CommandBody::AddMember { chat, member } => {
            let c = admin_group(chats, chat, user)?;
            if c.members.contains_key(member) {
                return Err(reject(RejectCode::AlreadyExists, format!("user {member} is already a member")));
            }
            if c.members.len() >= MAX_GROUP_MEMBERS {
                return Err(reject(RejectCode::Invalid, format!("a group has at most {MAX_GROUP_MEMBERS} members")));
            }
            let seq = c.last_seq.next();
            Ok(one(EventBody::MemberAdded { chat: *chat, seq, member: *member }, *chat, seq))
        }
        CommandBody::RemoveMember { chat, member } => {
            let c = admin_group(chats, chat, user)?;
            if !c.members.contains_key(member) {
                return Err(reject(RejectCode::NotMember, format!("user {member} is not a member")));
            }
            Ok(departure(c, *chat, *member, EventBody::MemberRemoved { chat: *chat, seq: Seq(0), member: *member }))
        }
        CommandBody::PromoteMember { chat, member } => {
            let c = admin_group(chats, chat, user)?;
            match c.members.get(member) {
                None => Err(reject(RejectCode::NotMember, format!("user {member} is not a member"))),
                Some(m) if m.admin => {
                    Err(reject(RejectCode::AlreadyExists, format!("user {member} is already an admin")))
                }
                Some(_) => {
                    let seq = c.last_seq.next();
                    Ok(one(EventBody::MemberPromoted { chat: *chat, seq, member: *member }, *chat, seq))
                }
            }
        }
        CommandBody::DemoteMember { chat, member } => {
            let c = admin_group(chats, chat, user)?;
            match c.members.get(member) {
                None => Err(reject(RejectCode::NotMember, format!("user {member} is not a member"))),
                Some(m) if !m.admin => Err(reject(RejectCode::Invalid, format!("user {member} is not an admin"))),
                Some(_) if c.admin_count() == 1 => {
                    Err(reject(RejectCode::Invalid, "cannot demote the last admin; promote another member first"))
                }
                Some(_) => {
                    let seq = c.last_seq.next();
                    Ok(one(EventBody::MemberDemoted { chat: *chat, seq, member: *member }, *chat, seq))
                }
            }
        }
        CommandBody::ChangeGroupInfo { chat, name, description } => {
            let c = admin_group(chats, chat, user)?;
            let seq = c.last_seq.next();
            Ok(one(
                EventBody::GroupInfoChanged { chat: *chat, seq, name: name.clone(), description: description.clone() },
                *chat,
                seq,
            ))
        }
        CommandBody::LeaveGroup { chat } => {
            let c = group(chats, chat)?;
            if !c.members.contains_key(&user) {
                return Err(reject(RejectCode::NotMember, format!("user {user} is not a member of chat {chat}")));
            }
            Ok(departure(c, *chat, user, EventBody::MemberLeft { chat: *chat, seq: Seq(0) }))
        }
        _ => Err(reject(RejectCode::Invalid, "not a chat command")),
    }
}

/// A member leaves or is removed. If they are the last admin and others remain,
/// the longest-standing remaining member is promoted first, in its own event: so at
/// every seq a non-empty group has an admin, and views need not know the rule.
/// The outcome is the departure's seq (the last event).
fn departure(c: &Chat, chat: ChatId, leaving: UserId, mut event: EventBody) -> Decision {
    let mut events = Vec::with_capacity(2);
    let mut seq = c.last_seq.next();
    if c.is_admin(leaving) {
        if let Some(successor) = c.successor(leaving) {
            events.push(EventBody::MemberPromoted { chat, seq, member: successor });
            seq = seq.next();
        }
    }
    match &mut event {
        EventBody::MemberRemoved { seq: s, .. } | EventBody::MemberLeft { seq: s, .. } => *s = seq,
        _ => unreachable!("departure takes MemberRemoved or MemberLeft"),
    }
    events.push(event);
    Decision { events, outcome: Outcome::Chat { chat, seq } }
}

/// Folds a chat-partition event at `at_ms`. The caller then prunes with
/// [`Chats::prune`] (after every event of the partition, chat or user).
///
/// # Panics
/// If the event contradicts the state (unknown chat, seq not next): the log is
/// corrupt or the event belongs to another partition.
pub(crate) fn fold(chats: &mut Chats, chat_id: ChatId, origin: &Origin, at_ms: u64, event: &EventBody) {
    let Chats { map: chats, by_time } = chats;
    match event {
        EventBody::ChatOpened { members, .. } => {
            assert!(!chats.contains_key(&chat_id), "fold: ChatOpened for existing chat {chat_id}");
            let mut c = Chat::new(ChatKind::Direct, String::new());
            for m in members {
                c.members.insert(*m, Member { since: Seq(0), admin: false });
            }
            chats.insert(chat_id, c);
            return;
        }
        EventBody::GroupCreated { name, members, seq, .. } => {
            assert!(!chats.contains_key(&chat_id), "fold: GroupCreated for existing chat {chat_id}");
            assert_eq!(*seq, Seq(1), "fold: GroupCreated must have seq 1");
            let mut c = Chat::new(ChatKind::Group, name.clone());
            for m in members {
                c.members.insert(*m, Member { since: *seq, admin: *m == origin.user });
            }
            c.last_seq = *seq;
            chats.insert(chat_id, c);
            return;
        }
        _ => {}
    }
    let c = chats.get_mut(&chat_id).unwrap_or_else(|| panic!("fold: {} for unknown chat {chat_id}", event.kind()));
    if let Some(seq) = event.seq() {
        assert_eq!(seq, c.last_seq.next(), "fold: {} in chat {chat_id} is not the next seq", event.kind());
        c.last_seq = seq;
    }
    match event {
        EventBody::MessageSent { seq, .. } => {
            c.messages.insert(*seq, Message { sender: origin.user, at_ms, deleted: false });
            by_time.insert((at_ms, chat_id, *seq));
        }
        EventBody::MessageDeleted { target, .. } => {
            if let Some(m) = c.messages.get_mut(target) {
                m.deleted = true;
            }
        }
        EventBody::MessageEdited { .. } | EventBody::ReactionSet { .. } => {}
        EventBody::Receipt { kind, up_to_seq, .. } => {
            let cursors = c.receipts.entry(origin.user).or_default().entry(origin.device).or_default();
            match kind {
                ReceiptKind::Delivered => cursors.delivered = cursors.delivered.max(*up_to_seq),
                // Read implies delivered.
                ReceiptKind::Read => {
                    cursors.read = cursors.read.max(*up_to_seq);
                    cursors.delivered = cursors.delivered.max(*up_to_seq);
                }
            }
        }
        EventBody::MemberAdded { seq, member, .. } => {
            c.members.insert(*member, Member { since: *seq, admin: false });
        }
        EventBody::MemberRemoved { member, .. } => {
            c.members.remove(member);
        }
        EventBody::MemberLeft { .. } => {
            c.members.remove(&origin.user);
        }
        EventBody::MemberPromoted { member, .. } => {
            if let Some(m) = c.members.get_mut(member) {
                m.admin = true;
            }
        }
        EventBody::MemberDemoted { member, .. } => {
            if let Some(m) = c.members.get_mut(member) {
                m.admin = false;
            }
        }
        EventBody::GroupInfoChanged { name, description, .. } => {
            c.name.clone_from(name);
            c.description.clone_from(description);
        }
        _ => unreachable!("fold: {} is not a chat event", event.kind()),
    }
}
