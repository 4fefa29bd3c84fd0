//! The roster view: every chat's kind, last seq, members and admins as of the
//! last folded event; and the [`Effect::Deliver`] of every timeline item.
//!
//! Folds `ChatOpened`, `GroupCreated`, `MemberAdded`, `MemberRemoved`,
//! `MemberPromoted`, `MemberDemoted`, `MemberLeft` and `GroupInfoChanged` (a
//! group's name and description: [`Details`]); every other timeline event
//! only advances the chat's `last_seq`. The admin hand-over of the state
//! machine is an explicit `MemberPromoted` event, so the view needs no rule of its
//! own for it.

use chorus_schema::{ChatId, Event, EventBody, EventRecord, Seq, UserId};
use serde::{Deserialize, Serialize};

use super::Effect;
use crate::store::{get_value, keys, put_value, Txn};
use crate::{Error, Result};

pub use chorus_schema::{ChatKind, Member};

/// A chat as the roster knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chat {
    pub kind: ChatKind,
    /// The seq of the last timeline item (0 for a direct chat before its first message).
    pub last_seq: Seq,
}

/// A group's name, description and picture (the latest `GroupCreated` or
/// `GroupInfoChanged`), kept apart from [`Chat`] so that the roster's chat
/// records keep their format.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Details {
    pub name: String,
    pub description: String,
    pub icon: Option<chorus_schema::MediaRef>,
}

/// Folds one event into the roster and pushes the [`Effect::Deliver`] of a
/// timeline item.
///
/// # Errors
/// [`Error::Inconsistent`] for an event that contradicts the roster (a chat
/// created twice, an unknown chat, a seq that is not the next, a role change of
/// a non-member); [`Error::Store`] if the store fails.
pub fn apply<T: Txn + ?Sized>(txn: &mut T, record: &EventRecord, effects: &mut Vec<Effect>) -> Result<()> {
    let event = &record.event;
    let Some(chat_id) = event.body.chat() else { return Ok(()) };
    let kind = event.body.kind();
    match &event.body {
        EventBody::ChatOpened { members, .. } => {
            create(txn, chat_id, kind, Chat { kind: ChatKind::Direct, last_seq: Seq(0) })?;
            for m in members {
                put_value(txn, &keys::roster_member(&chat_id, *m), &Member { since: Seq(0), admin: false });
            }
            effects.push(Effect::Joined { chat: chat_id, seq: Seq(0), users: members.clone() });
        }
        EventBody::GroupCreated { seq, members, name, .. } => {
            if *seq != Seq(1) {
                return Err(Error::inconsistent(chat_id, kind, format!("seq {seq} instead of 1")));
            }
            create(txn, chat_id, kind, Chat { kind: ChatKind::Group, last_seq: *seq })?;
            put_value(txn, &keys::roster_info(&chat_id), &Details { name: name.clone(), ..Details::default() });
            for m in members {
                let member = Member { since: *seq, admin: *m == event.origin.user };
                put_value(txn, &keys::roster_member(&chat_id, *m), &member);
            }
            effects.push(Effect::Joined { chat: chat_id, seq: *seq, users: members.clone() });
        }
        // A block in a direct chat changes no membership (and may come first).
        EventBody::Receipt { .. } | EventBody::DirectBlockSet { .. } => return Ok(()),
        body => {
            let Some(seq) = body.seq() else {
                unreachable!("every chat event but ChatOpened, Receipt and DirectBlockSet has a seq")
            };
            let chat_key = keys::roster_chat(&chat_id);
            let mut chat: Chat =
                get_value(txn, &chat_key)?.ok_or_else(|| Error::inconsistent(chat_id, kind, "unknown chat"))?;
            if seq != chat.last_seq.next() {
                return Err(Error::inconsistent(chat_id, kind, format!("seq {seq} after {}", chat.last_seq)));
            }
            chat.last_seq = seq;
            put_value(txn, &chat_key, &chat);
            match body {
                EventBody::MemberAdded { member, .. } => {
                    put_value(txn, &keys::roster_member(&chat_id, *member), &Member { since: seq, admin: false });
                    effects.push(Effect::Joined { chat: chat_id, seq, users: vec![*member] });
                }
                EventBody::MemberRemoved { member, .. } => txn.delete(&keys::roster_member(&chat_id, *member)),
                EventBody::MemberLeft { .. } => txn.delete(&keys::roster_member(&chat_id, event.origin.user)),
                EventBody::GroupInfoChanged { name, description, icon, .. } => {
                    let details = Details { name: name.clone(), description: description.clone(), icon: icon.clone() };
                    put_value(txn, &keys::roster_info(&chat_id), &details);
                }
                EventBody::MemberPromoted { member, .. } | EventBody::MemberDemoted { member, .. } => {
                    let key = keys::roster_member(&chat_id, *member);
                    let mut m: Member = get_value(txn, &key)?
                        .ok_or_else(|| Error::inconsistent(chat_id, kind, format!("user {member} is not a member")))?;
                    m.admin = matches!(body, EventBody::MemberPromoted { .. });
                    put_value(txn, &key, &m);
                }
                _ => {}
            }
        }
    }
    if let Some(seq) = event.body.seq() {
        // The origin user is a recipient too: their other devices need the item
        // (multi-device); the edge skips the origin device itself.
        let recipients = audience(txn, chat_id, event)?;
        effects.push(Effect::Deliver { chat: chat_id, seq, recipients });
    }
    Ok(())
}

fn create<T: Txn + ?Sized>(txn: &mut T, chat_id: ChatId, kind: &'static str, chat: Chat) -> Result<()> {
    let key = keys::roster_chat(&chat_id);
    if txn.get(&key)?.is_some() {
        return Err(Error::inconsistent(chat_id, kind, "chat exists"));
    }
    put_value(txn, &key, &chat);
    Ok(())
}

/// The user an event removes from its chat: the member of `MemberRemoved`, the
/// origin of `MemberLeft`.
pub fn departed(event: &Event) -> Option<UserId> {
    match &event.body {
        EventBody::MemberRemoved { member, .. } => Some(*member),
        EventBody::MemberLeft { .. } => Some(event.origin.user),
        _ => None,
    }
}

/// Who sees the timeline item `event` (already folded into the roster): the
/// members just after it, plus the user it removes. Sorted, origin included.
///
/// So a member removed at seq `s` sees `s` (their removal) and nothing after.
///
/// # Errors
/// [`Error::Store`] if the store fails.
pub fn audience<T: Txn + ?Sized>(txn: &T, chat: ChatId, event: &Event) -> Result<Vec<UserId>> {
    let mut users: Vec<UserId> = members(txn, &chat)?.into_iter().map(|(u, _)| u).collect();
    if let Some(gone) = departed(event) {
        if let Err(at) = users.binary_search(&gone) {
            users.insert(at, gone);
        }
    }
    Ok(users)
}

/// A chat's kind and last seq; `None` if the roster has never seen it.
///
/// # Errors
/// [`Error::Store`] if the store fails.
pub fn chat<T: Txn + ?Sized>(txn: &T, chat: &ChatId) -> Result<Option<Chat>> {
    Ok(get_value(txn, &keys::roster_chat(chat))?)
}

/// The current members of a chat with their standing, in user id order.
///
/// # Errors
/// [`Error::Store`] if the store fails, or holds more members than a group may have.
pub fn members<T: Txn + ?Sized>(txn: &T, chat: &ChatId) -> Result<Vec<(UserId, Member)>> {
    txn.scan_prefix(&keys::roster_members(chat), chorus_schema::MAX_GROUP_MEMBERS)?
        .into_iter()
        .map(|(k, v)| {
            let user = UserId(keys::u64_at(&k, keys::AFTER_CHAT));
            Ok((user, crate::store::decode(&k, &v)?))
        })
        .collect()
}

/// A current member's standing; `None` if `user` is not a member.
///
/// # Errors
/// [`Error::Store`] if the store fails.
pub fn member<T: Txn + ?Sized>(txn: &T, chat: &ChatId, user: UserId) -> Result<Option<Member>> {
    Ok(get_value(txn, &keys::roster_member(chat, user))?)
}

/// A group's name and description (empty for a direct chat or a chat the
/// roster has never seen).
///
/// # Errors
/// [`Error::Store`] if the store fails.
pub fn details<T: Txn + ?Sized>(txn: &T, chat: &ChatId) -> Result<Details> {
    Ok(get_value(txn, &keys::roster_info(chat))?.unwrap_or_default())
}

/// What a member sees of a group ([`chorus_schema::GroupInfo`]), asked by
/// `user`: refused if the roster has never seen the chat or `user` is not a
/// member now.
///
/// # Errors
/// [`Error::Store`] if the store fails.
pub fn group_info<T: Txn + ?Sized>(
    txn: &T,
    chat_id: &ChatId,
    user: UserId,
) -> Result<Result<chorus_schema::GroupInfo, chorus_schema::bus::InfoRefusal>> {
    use chorus_schema::bus::InfoRefusal;
    let Some(c) = chat(txn, chat_id)? else { return Ok(Err(InfoRefusal::UnknownChat)) };
    let members = members(txn, chat_id)?;
    if members.binary_search_by_key(&user, |(u, _)| *u).is_err() {
        return Ok(Err(InfoRefusal::NotMember));
    }
    let Details { name, description, icon } = details(txn, chat_id)?;
    Ok(Ok(chorus_schema::GroupInfo { last_seq: c.last_seq, name, description, members, icon }))
}

/// The current admins of a chat, in user id order (none for a direct chat).
///
/// # Errors
/// [`Error::Store`] if the store fails.
pub fn admins<T: Txn + ?Sized>(txn: &T, chat: &ChatId) -> Result<Vec<UserId>> {
    Ok(members(txn, chat)?.into_iter().filter(|(_, m)| m.admin).map(|(u, _)| u).collect())
}
