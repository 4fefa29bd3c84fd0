//! Chat state (direct and group) and the chat-partition rules.

use chorus_schema::{
    ChatId, CommandBody, DeviceId, EventBody, Origin, Outcome, ReceiptKind, RejectCode, Rejection, Seq, UserId,
    MAX_GROUP_MEMBERS,
};
use serde::{Deserialize, Serialize};

use crate::kv::{self, Key, Kv, Message};
use crate::state::Decision;

/// How long after it was sent (by `at_ms`, relative to the partition's newest
/// `at_ms`) a message may still be edited or deleted (see the crate docs,
/// **Messages**).
pub const EDIT_WINDOW_MS: u64 = 48 * 60 * 60 * 1000;

// Defined once in `chorus-schema` (the projections fold and the bus carry the
// same concepts); stored here with the same serde shape as before.
pub use chorus_schema::{ChatKind, Cursors, Member};

/// One chat's head record: what most commands need, in one read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatHead {
    pub kind: ChatKind,
    pub last_seq: Seq,
    pub name: String,
    pub description: String,
    /// Current members and, of them, admins (kept so that limits and the last
    /// admin's departure need no walk of the roster).
    pub members: u32,
    pub admins: u32,
}

pub(crate) fn head(kv: &impl Kv, chat: &ChatId) -> Option<ChatHead> {
    kv::read(kv, &Key::new(kv::CHAT).chat(chat))
}

fn put_head(kv: &mut impl Kv, chat: &ChatId, h: &ChatHead) {
    kv::write(kv, &Key::new(kv::CHAT).chat(chat), h);
}

pub(crate) fn member(kv: &impl Kv, chat: &ChatId, user: UserId) -> Option<Member> {
    kv::read(kv, &Key::new(kv::MEMBER).chat(chat).user(user))
}

/// The current members, in user order.
pub(crate) fn members(kv: &impl Kv, chat: &ChatId) -> Vec<(UserId, Member)> {
    let prefix = Key::new(kv::MEMBER).chat(chat);
    kv.scan(prefix.bytes(), usize::MAX)
        .into_iter()
        .map(|(k, v)| (UserId(kv::u64_at(&k, 17)), kv::decode(&k, &v)))
        .collect()
}

/// The chats of the partition, in id order.
#[expect(
    clippy::indexing_slicing,
    clippy::expect_used,
    reason = "state keys have a fixed layout: a short one is corrupt state, and the replica must stop rather than diverge"
)]
pub(crate) fn ids(kv: &impl Kv) -> Vec<ChatId> {
    kv.scan(&[kv::CHAT], usize::MAX)
        .into_iter()
        .map(|(k, _)| ChatId::from_bytes(k[1..17].try_into().expect("chat key holds a chat id")))
        .collect()
}

pub(crate) fn cursors(kv: &impl Kv, chat: &ChatId, user: UserId, device: DeviceId) -> Cursors {
    kv::read(kv, &Key::new(kv::RECEIPT).chat(chat).user(user).device(device)).unwrap_or_default()
}

fn message(kv: &impl Kv, chat: &ChatId, seq: Seq) -> Option<Message> {
    kv::read(kv, &Key::new(kv::MESSAGE).chat(chat).seq(seq))
}

/// The member who becomes admin when the last admin `leaving` goes: the
/// longest-standing remaining member (smallest `since`, then smallest user id).
/// `None` if another admin remains or nobody remains.
fn successor(kv: &impl Kv, chat: &ChatId, h: &ChatHead, leaving: UserId) -> Option<UserId> {
    if h.admins > 1 || h.members <= 1 {
        return None;
    }
    members(kv, chat).into_iter().filter(|(u, _)| *u != leaving).min_by_key(|(u, m)| (m.since, *u)).map(|(u, _)| u)
}

fn reject(code: RejectCode, message: impl Into<String>) -> Rejection {
    Rejection::new(code, message)
}

/// Looks up a chat the origin is a member of.
fn member_chat(kv: &impl Kv, chat: &ChatId, user: UserId) -> Result<ChatHead, Rejection> {
    let h = head(kv, chat).ok_or_else(|| reject(RejectCode::UnknownChat, format!("no chat {chat}")))?;
    if member(kv, chat, user).is_none() {
        return Err(reject(RejectCode::NotMember, format!("user {user} is not a member of chat {chat}")));
    }
    Ok(h)
}

/// Looks up a group whose admin is the origin.
fn admin_group(kv: &impl Kv, chat: &ChatId, user: UserId) -> Result<ChatHead, Rejection> {
    let h = group(kv, chat)?;
    match member(kv, chat, user) {
        None => Err(reject(RejectCode::NotMember, format!("user {user} is not a member of chat {chat}"))),
        Some(m) if !m.admin => Err(reject(RejectCode::NotAdmin, format!("user {user} is not an admin of chat {chat}"))),
        Some(_) => Ok(h),
    }
}

fn group(kv: &impl Kv, chat: &ChatId) -> Result<ChatHead, Rejection> {
    let h = head(kv, chat).ok_or_else(|| reject(RejectCode::UnknownChat, format!("no chat {chat}")))?;
    if h.kind != ChatKind::Group {
        return Err(reject(RejectCode::Invalid, format!("chat {chat} is a direct chat, not a group")));
    }
    Ok(h)
}

/// The target of an edit, delete or reaction.
enum Target {
    /// A live message inside the edit window.
    Recent(Message),
    /// A message outside the edit window at the command's time; whether it was
    /// deleted no longer matters.
    Old,
}

fn no_message(chat: &ChatId, seq: Seq) -> Rejection {
    reject(RejectCode::UnknownMessage, format!("no message at seq {seq} in chat {chat}"))
}

fn too_old() -> Rejection {
    reject(RejectCode::Invalid, "message is too old to edit/delete")
}

/// Classifies a target seq at time `now` (`max(newest_at_ms, at_ms)`): a seq
/// that never existed, that was no message, or a deleted message inside the
/// window is `UnknownMessage`.
fn target(kv: &impl Kv, h: &ChatHead, chat: &ChatId, seq: Seq, now: u64) -> Result<Target, Rejection> {
    if seq == Seq(0) || seq > h.last_seq {
        return Err(no_message(chat, seq));
    }
    match message(kv, chat, seq) {
        Some(m) if m.at_ms.saturating_add(EDIT_WINDOW_MS) < now => Ok(Target::Old),
        Some(m) if m.deleted => Err(no_message(chat, seq)),
        Some(m) => Ok(Target::Recent(m)),
        None => Err(no_message(chat, seq)),
    }
}

/// The target of an edit or delete by `user`: a recent live message of theirs.
fn own_recent(
    kv: &impl Kv,
    h: &ChatHead,
    chat: &ChatId,
    seq: Seq,
    now: u64,
    user: UserId,
    what: &str,
) -> Result<(), Rejection> {
    match target(kv, h, chat, seq, now)? {
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
/// The record of `blocker` blocking the other member of the direct chat `chat`.
fn direct_block_key(chat: &ChatId, blocker: UserId) -> Key {
    Key::new(kv::DIRECT_BLOCK).chat(chat).user(blocker)
}

/// Whether `blocker` blocks the other member of the direct chat `chat`.
pub(crate) fn blocks(kv: &impl Kv, chat: &ChatId, blocker: UserId) -> bool {
    kv.get(direct_block_key(chat, blocker).bytes()).is_some()
}

pub(crate) fn decide(
    kv: &impl Kv,
    key: ChatId,
    now: u64,
    origin: &Origin,
    body: &CommandBody,
) -> Result<Decision, Rejection> {
    let user = origin.user;
    match body {
        CommandBody::SetDirectBlock { peer, blocked } => {
            if *peer == user {
                return Err(reject(RejectCode::Invalid, "cannot block yourself"));
            }
            if head(kv, &key).is_some_and(|h| h.kind != ChatKind::Direct) {
                return Err(reject(RejectCode::Invalid, format!("chat {key} is not a direct chat")));
            }
            if blocks(kv, &key, user) == *blocked {
                return Ok(Decision { events: vec![], outcome: Outcome::Done });
            }
            Ok(Decision {
                events: vec![EventBody::DirectBlockSet { chat: key, blocked: *blocked }],
                outcome: Outcome::Done,
            })
        }
        CommandBody::SendDirect { recipient, ciphertext, media } => {
            if *recipient == user {
                return Err(reject(RejectCode::Invalid, "cannot send a direct message to yourself"));
            }
            let chat = key;
            debug_assert_eq!(chat, ChatId::direct(user, *recipient));
            if blocks(kv, &chat, *recipient) {
                return Err(reject(
                    RejectCode::Blocked,
                    format!("user {recipient} does not accept messages from {user}"),
                ));
            }
            let mut events = Vec::with_capacity(2);
            let seq = match head(kv, &chat) {
                None => {
                    let mut members = vec![user, *recipient];
                    members.sort();
                    events.push(EventBody::ChatOpened { chat, members });
                    Seq(1)
                }
                Some(h) if h.kind == ChatKind::Direct => h.last_seq.next(),
                Some(_) => return Err(reject(RejectCode::Invalid, format!("chat {chat} is not a direct chat"))),
            };
            events.push(EventBody::MessageSent { chat, seq, ciphertext: ciphertext.clone(), media: media.clone() });
            Ok(Decision { events, outcome: Outcome::Chat { chat, seq } })
        }
        CommandBody::SendGroup { chat, ciphertext, media } => {
            let h = group(kv, chat)?;
            if member(kv, chat, user).is_none() {
                return Err(reject(RejectCode::NotMember, format!("user {user} is not a member of chat {chat}")));
            }
            let seq = h.last_seq.next();
            Ok(one(
                EventBody::MessageSent { chat: *chat, seq, ciphertext: ciphertext.clone(), media: media.clone() },
                *chat,
                seq,
            ))
        }
        CommandBody::EditMessage { chat, seq: target_seq, ciphertext } => {
            let h = member_chat(kv, chat, user)?;
            own_recent(kv, &h, chat, *target_seq, now, user, "edit")?;
            let seq = h.last_seq.next();
            Ok(one(
                EventBody::MessageEdited { chat: *chat, seq, target: *target_seq, ciphertext: ciphertext.clone() },
                *chat,
                seq,
            ))
        }
        CommandBody::DeleteMessage { chat, seq: target_seq } => {
            let h = member_chat(kv, chat, user)?;
            own_recent(kv, &h, chat, *target_seq, now, user, "delete")?;
            let seq = h.last_seq.next();
            Ok(one(EventBody::MessageDeleted { chat: *chat, seq, target: *target_seq }, *chat, seq))
        }
        CommandBody::SetReaction { chat, seq: target_seq, reaction } => {
            let h = member_chat(kv, chat, user)?;
            // Reactions on old messages are normal: any message of the chat will do.
            target(kv, &h, chat, *target_seq, now)?;
            let seq = h.last_seq.next();
            Ok(one(
                EventBody::ReactionSet { chat: *chat, seq, target: *target_seq, reaction: reaction.clone() },
                *chat,
                seq,
            ))
        }
        CommandBody::Ack { chat, kind, up_to_seq } => {
            let h = member_chat(kv, chat, user)?;
            if *up_to_seq > h.last_seq {
                return Err(reject(
                    RejectCode::Invalid,
                    format!("ack up to {up_to_seq} is beyond the last seq {} of chat {chat}", h.last_seq),
                ));
            }
            let current = cursors(kv, chat, user, origin.device).get(*kind);
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
            if head(kv, chat).is_some() {
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
        CommandBody::AddMember { chat, member: new } => {
            let h = admin_group(kv, chat, user)?;
            if member(kv, chat, *new).is_some() {
                return Err(reject(RejectCode::AlreadyExists, format!("user {new} is already a member")));
            }
            if h.members as usize >= MAX_GROUP_MEMBERS {
                return Err(reject(RejectCode::Invalid, format!("a group has at most {MAX_GROUP_MEMBERS} members")));
            }
            let seq = h.last_seq.next();
            Ok(one(EventBody::MemberAdded { chat: *chat, seq, member: *new }, *chat, seq))
        }
        CommandBody::RemoveMember { chat, member: gone } => {
            let h = admin_group(kv, chat, user)?;
            let Some(m) = member(kv, chat, *gone) else {
                return Err(reject(RejectCode::NotMember, format!("user {gone} is not a member")));
            };
            Ok(departure(kv, &h, *chat, *gone, m, EventBody::MemberRemoved { chat: *chat, seq: Seq(0), member: *gone }))
        }
        CommandBody::PromoteMember { chat, member: who } => {
            let h = admin_group(kv, chat, user)?;
            match member(kv, chat, *who) {
                None => Err(reject(RejectCode::NotMember, format!("user {who} is not a member"))),
                Some(m) if m.admin => Err(reject(RejectCode::AlreadyExists, format!("user {who} is already an admin"))),
                Some(_) => {
                    let seq = h.last_seq.next();
                    Ok(one(EventBody::MemberPromoted { chat: *chat, seq, member: *who }, *chat, seq))
                }
            }
        }
        CommandBody::DemoteMember { chat, member: who } => {
            let h = admin_group(kv, chat, user)?;
            match member(kv, chat, *who) {
                None => Err(reject(RejectCode::NotMember, format!("user {who} is not a member"))),
                Some(m) if !m.admin => Err(reject(RejectCode::Invalid, format!("user {who} is not an admin"))),
                Some(_) if h.admins == 1 => {
                    Err(reject(RejectCode::Invalid, "cannot demote the last admin; promote another member first"))
                }
                Some(_) => {
                    let seq = h.last_seq.next();
                    Ok(one(EventBody::MemberDemoted { chat: *chat, seq, member: *who }, *chat, seq))
                }
            }
        }
        CommandBody::ChangeGroupInfo { chat, name, description, icon } => {
            let h = admin_group(kv, chat, user)?;
            let seq = h.last_seq.next();
            let event = EventBody::GroupInfoChanged {
                chat: *chat,
                seq,
                name: name.clone(),
                description: description.clone(),
                icon: icon.clone(),
            };
            Ok(one(event, *chat, seq))
        }
        CommandBody::LeaveGroup { chat } => {
            let h = group(kv, chat)?;
            let Some(m) = member(kv, chat, user) else {
                return Err(reject(RejectCode::NotMember, format!("user {user} is not a member of chat {chat}")));
            };
            Ok(departure(kv, &h, *chat, user, m, EventBody::MemberLeft { chat: *chat, seq: Seq(0) }))
        }
        _ => Err(reject(RejectCode::Invalid, "not a chat command")),
    }
}

/// A member leaves or is removed. If they are the last admin and others remain,
/// the longest-standing remaining member is promoted first, in its own event: so at
/// every seq a non-empty group has an admin, and views need not know the rule.
/// The outcome is the departure's seq (the last event).
fn departure(kv: &impl Kv, h: &ChatHead, chat: ChatId, leaving: UserId, m: Member, mut event: EventBody) -> Decision {
    let mut events = Vec::with_capacity(2);
    let mut seq = h.last_seq.next();
    if m.admin {
        if let Some(successor) = successor(kv, &chat, h, leaving) {
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

/// Folds a chat-partition event at `at_ms`.
///
/// # Panics
/// If the event contradicts the state (unknown chat, seq not next): the log is
/// corrupt or the event belongs to another partition.
pub(crate) fn fold(kv: &mut impl Kv, chat: ChatId, origin: &Origin, at_ms: u64, event: &EventBody) {
    let member_key = |u: UserId| Key::new(kv::MEMBER).chat(&chat).user(u);
    match event {
        EventBody::ChatOpened { members, .. } => {
            assert!(head(kv, &chat).is_none(), "fold: ChatOpened for existing chat {chat}");
            for m in members {
                kv::write(kv, &member_key(*m), &Member { since: Seq(0), admin: false });
            }
            let h = ChatHead {
                kind: ChatKind::Direct,
                last_seq: Seq(0),
                name: String::new(),
                description: String::new(),
                members: u32::try_from(members.len()).unwrap_or(u32::MAX),
                admins: 0,
            };
            put_head(kv, &chat, &h);
            return;
        }
        EventBody::GroupCreated { name, members, seq, .. } => {
            assert!(head(kv, &chat).is_none(), "fold: GroupCreated for existing chat {chat}");
            assert_eq!(*seq, Seq(1), "fold: GroupCreated must have seq 1");
            let mut admins = 0;
            for m in members {
                let admin = *m == origin.user;
                admins += u32::from(admin);
                kv::write(kv, &member_key(*m), &Member { since: *seq, admin });
            }
            let h = ChatHead {
                kind: ChatKind::Group,
                last_seq: *seq,
                name: name.clone(),
                description: String::new(),
                members: u32::try_from(members.len()).unwrap_or(u32::MAX),
                admins,
            };
            put_head(kv, &chat, &h);
            return;
        }
        // Of a direct chat that may have no message yet (no head).
        EventBody::DirectBlockSet { blocked, .. } => {
            let key = direct_block_key(&chat, origin.user);
            if *blocked {
                kv.put(key.bytes(), Vec::new());
            } else {
                kv.delete(key.bytes());
            }
            return;
        }
        _ => {}
    }
    let mut h = head(kv, &chat).unwrap_or_else(|| panic!("fold: {} for unknown chat {chat}", event.kind()));
    if let Some(seq) = event.seq() {
        assert_eq!(seq, h.last_seq.next(), "fold: {} in chat {chat} is not the next seq", event.kind());
        h.last_seq = seq;
    }
    match event {
        EventBody::MessageSent { seq, .. } => {
            kv::write(
                kv,
                &Key::new(kv::MESSAGE).chat(&chat).seq(*seq),
                &Message { sender: origin.user, at_ms, deleted: false },
            );
        }
        EventBody::MessageDeleted { target, .. } => {
            if let Some(mut m) = message(kv, &chat, *target) {
                m.deleted = true;
                kv::write(kv, &Key::new(kv::MESSAGE).chat(&chat).seq(*target), &m);
            }
        }
        EventBody::MessageEdited { .. } | EventBody::ReactionSet { .. } => {}
        EventBody::Receipt { kind, up_to_seq, .. } => {
            let key = Key::new(kv::RECEIPT).chat(&chat).user(origin.user).device(origin.device);
            let mut c: Cursors = kv::read(kv, &key).unwrap_or_default();
            match kind {
                ReceiptKind::Delivered => c.delivered = c.delivered.max(*up_to_seq),
                // Read implies delivered.
                ReceiptKind::Read => {
                    c.read = c.read.max(*up_to_seq);
                    c.delivered = c.delivered.max(*up_to_seq);
                }
            }
            kv::write(kv, &key, &c);
        }
        EventBody::MemberAdded { seq, member: m, .. } => {
            if member(kv, &chat, *m).is_none() {
                h.members += 1;
            }
            kv::write(kv, &member_key(*m), &Member { since: *seq, admin: false });
        }
        EventBody::MemberRemoved { member: m, .. } => remove_member(kv, &mut h, &chat, *m),
        EventBody::MemberLeft { .. } => remove_member(kv, &mut h, &chat, origin.user),
        EventBody::MemberPromoted { member: who, .. } => set_admin(kv, &mut h, &chat, *who, true),
        EventBody::MemberDemoted { member: who, .. } => set_admin(kv, &mut h, &chat, *who, false),
        EventBody::GroupInfoChanged { name, description, .. } => {
            h.name.clone_from(name);
            h.description.clone_from(description);
        }
        _ => unreachable!("fold: {} is not a chat event", event.kind()),
    }
    put_head(kv, &chat, &h);
}

fn remove_member(kv: &mut impl Kv, h: &mut ChatHead, chat: &ChatId, user: UserId) {
    if let Some(m) = member(kv, chat, user) {
        h.members -= 1;
        h.admins -= u32::from(m.admin);
        kv.delete(Key::new(kv::MEMBER).chat(chat).user(user).bytes());
    }
}

fn set_admin(kv: &mut impl Kv, h: &mut ChatHead, chat: &ChatId, user: UserId, admin: bool) {
    if let Some(mut m) = member(kv, chat, user) {
        if m.admin != admin {
            h.admins = if admin { h.admins + 1 } else { h.admins - 1 };
            m.admin = admin;
            kv::write(kv, &Key::new(kv::MEMBER).chat(chat).user(user), &m);
        }
    }
}
