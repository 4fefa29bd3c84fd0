//! Chat state (direct and group) and the chat-partition rules.

use std::collections::BTreeMap;

use chorus_schema::{
    ChatId, CommandBody, DeviceId, EventBody, Origin, Outcome, ReceiptKind, RejectCode, Rejection, Seq, UserId,
    MAX_GROUP_MEMBERS,
};
use serde::{Deserialize, Serialize};

use crate::state::Decision;

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

/// What the state machine remembers of a message: enough to authorize edits,
/// deletes and reactions. Content stays in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Message {
    sender: UserId,
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
    /// Only `MessageSent` seqs.
    messages: BTreeMap<Seq, Message>,
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

fn reject(code: RejectCode, message: impl Into<String>) -> Rejection {
    Rejection::new(code, message)
}

/// Looks up a group the origin is a member of.
fn member_chat<'a>(chats: &'a BTreeMap<ChatId, Chat>, chat: &ChatId, user: UserId) -> Result<&'a Chat, Rejection> {
    let c = chats.get(chat).ok_or_else(|| reject(RejectCode::UnknownChat, format!("no chat {chat}")))?;
    if !c.members.contains_key(&user) {
        return Err(reject(RejectCode::NotMember, format!("user {user} is not a member of chat {chat}")));
    }
    Ok(c)
}

/// Looks up a group whose admin is the origin.
fn admin_group<'a>(chats: &'a BTreeMap<ChatId, Chat>, chat: &ChatId, user: UserId) -> Result<&'a Chat, Rejection> {
    let c = group(chats, chat)?;
    if !c.members.contains_key(&user) {
        return Err(reject(RejectCode::NotMember, format!("user {user} is not a member of chat {chat}")));
    }
    if !c.is_admin(user) {
        return Err(reject(RejectCode::NotAdmin, format!("user {user} is not an admin of chat {chat}")));
    }
    Ok(c)
}

fn group<'a>(chats: &'a BTreeMap<ChatId, Chat>, chat: &ChatId) -> Result<&'a Chat, Rejection> {
    let c = chats.get(chat).ok_or_else(|| reject(RejectCode::UnknownChat, format!("no chat {chat}")))?;
    if c.kind != ChatKind::Group {
        return Err(reject(RejectCode::Invalid, format!("chat {chat} is a direct chat, not a group")));
    }
    Ok(c)
}

/// Looks up a live message sent by anyone, for edits, deletes and reactions.
fn message(c: &Chat, chat: &ChatId, seq: Seq) -> Result<Message, Rejection> {
    match c.messages.get(&seq) {
        Some(m) if !m.deleted => Ok(*m),
        _ => Err(reject(RejectCode::UnknownMessage, format!("no message at seq {seq} in chat {chat}"))),
    }
}

fn one(event: EventBody, chat: ChatId, seq: Seq) -> Decision {
    Decision { events: vec![event], outcome: Outcome::Chat { chat, seq } }
}

/// Decides a chat-partition command against the current state.
pub(crate) fn decide(chats: &BTreeMap<ChatId, Chat>, origin: &Origin, body: &CommandBody) -> Result<Decision, Rejection> {
    let user = origin.user;
    match body {
        CommandBody::SendDirect { recipient, ciphertext, media } => {
            if *recipient == user {
                return Err(reject(RejectCode::Invalid, "cannot send a direct message to yourself"));
            }
            let chat = ChatId::direct(user, *recipient);
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
            group(chats, chat)?;
            let c = member_chat(chats, chat, user)?;
            let seq = c.last_seq.next();
            Ok(one(
                EventBody::MessageSent { chat: *chat, seq, ciphertext: ciphertext.clone(), media: media.clone() },
                *chat,
                seq,
            ))
        }
        CommandBody::EditMessage { chat, seq: target, ciphertext } => {
            let c = member_chat(chats, chat, user)?;
            let m = message(c, chat, *target)?;
            if m.sender != user {
                return Err(reject(RejectCode::UnknownMessage, format!("message {target} is not yours to edit")));
            }
            let seq = c.last_seq.next();
            Ok(one(EventBody::MessageEdited { chat: *chat, seq, target: *target, ciphertext: ciphertext.clone() }, *chat, seq))
        }
        CommandBody::DeleteMessage { chat, seq: target } => {
            let c = member_chat(chats, chat, user)?;
            let m = message(c, chat, *target)?;
            if m.sender != user {
                return Err(reject(RejectCode::UnknownMessage, format!("message {target} is not yours to delete")));
            }
            let seq = c.last_seq.next();
            Ok(one(EventBody::MessageDeleted { chat: *chat, seq, target: *target }, *chat, seq))
        }
        CommandBody::SetReaction { chat, seq: target, reaction } => {
            let c = member_chat(chats, chat, user)?;
            message(c, chat, *target)?;
            let seq = c.last_seq.next();
            Ok(one(EventBody::ReactionSet { chat: *chat, seq, target: *target, reaction: reaction.clone() }, *chat, seq))
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
                return Err(reject(RejectCode::Invalid, format!("{chat} is a direct chat id; mint group ids with ChatId::group")));
            }
            if chats.contains_key(chat) {
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
                Some(m) if m.admin => Err(reject(RejectCode::AlreadyExists, format!("user {member} is already an admin"))),
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

/// Folds a chat-partition event. Returns `false` if `event` is not a chat event.
///
/// # Panics
/// If the event contradicts the state (unknown chat, seq not next): the log is
/// corrupt or the event belongs to another partition.
pub(crate) fn fold(chats: &mut BTreeMap<ChatId, Chat>, origin: &Origin, event: &EventBody) -> bool {
    let Some(chat_id) = event.chat() else {
        return false;
    };
    match event {
        EventBody::ChatOpened { members, .. } => {
            assert!(!chats.contains_key(&chat_id), "fold: ChatOpened for existing chat {chat_id}");
            let mut c = Chat::new(ChatKind::Direct, String::new());
            for m in members {
                c.members.insert(*m, Member { since: Seq(0), admin: false });
            }
            chats.insert(chat_id, c);
            return true;
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
            return true;
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
            c.messages.insert(*seq, Message { sender: origin.user, deleted: false });
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
    true
}
