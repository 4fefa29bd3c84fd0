//! The chat list view: per user, one [`ChatListEntry`] per chat they are or were a member of.
//!
//! # Rules
//! - An entry appears when the user joins (`ChatOpened`, `GroupCreated`,
//!   `MemberAdded`) and stays after they leave or are removed, frozen at their
//!   departure's seq (the chat shows "you were removed").
//! - `last_seq` is the seq of the last timeline item the user sees: every item
//!   while a member, and their own departure (see
//!   [`roster::audience`]).
//! - `unread` counts the **messages** (`MessageSent`) from others after
//!   `unread_after`, while the user was a member. Edits, deletes, reactions and
//!   roster changes are timeline items but do not make a chat unread (a product
//!   choice: they are not new content). `unread_after` is the larger of the
//!   user's read cursor (the largest of their devices') and the seq of their
//!   last join: messages from before a (re)join are never counted, and a re-join
//!   starts the count at zero.
//! - A `Read` receipt up to `r` subtracts the others' messages in
//!   `(unread_after, r]`, found in this view's message index (`31 ‖ chat ‖ seq`
//!   → sender). So at every point, for a current member,
//!   `unread = #{messages from others with unread_after < seq <= last_seq}`.
//!
//! # Cost
//! Every timeline item writes one entry per member (fan-out on write, up to
//! [`MAX_GROUP_MEMBERS`](chorus_schema::MAX_GROUP_MEMBERS)); a read receipt
//! scans the messages it covers once. The message index grows with the chat; it
//! can be pruned below the smallest `unread_after` of the members (a next step).

use chorus_schema::{ChatId, EventBody, EventRecord, ReceiptKind, Seq, UserId};

use super::roster;
use super::Effect;
use crate::store::{decode, for_each, get_value, keys, put_value, Txn};
use crate::{Error, Result};
use chorus_schema::ChatKind;

pub use chorus_schema::bus::{ChatListEntry, MessageRef};

/// The entry of a chat `kind` that the user joined at `at`.
fn joined(kind: ChatKind, at: Seq) -> ChatListEntry {
    ChatListEntry { kind, last_seq: at, unread: 0, unread_after: at, last_message: None }
}

/// Folds one event into the chat lists of its audience.
///
/// # Errors
/// [`Error::Inconsistent`] if a member has no entry; [`Error::Store`] if the
/// store fails.
///
/// # Panics
/// If a read receipt would take `unread` below zero: the view broke its own
/// invariant.
pub fn apply<T: Txn + ?Sized>(txn: &mut T, record: &EventRecord, _effects: &mut Vec<Effect>) -> Result<()> {
    let event = &record.event;
    let Some(chat) = event.body.chat() else { return Ok(()) };
    let kind = event.body.kind();
    match &event.body {
        EventBody::ChatOpened { members, .. } => {
            for m in members {
                let key = keys::chat_list(*m, &chat);
                if txn.get(&key)?.is_none() {
                    put_value(txn, &key, &joined(ChatKind::Direct, Seq(0)));
                }
            }
            return Ok(());
        }
        EventBody::Receipt { kind: ReceiptKind::Read, up_to_seq, .. } => {
            return read(txn, chat, event.origin.user, *up_to_seq, kind);
        }
        EventBody::Receipt { kind: ReceiptKind::Delivered, .. } => return Ok(()),
        _ => {}
    }
    let Some(seq) = event.body.seq() else { return Ok(()) };
    let sender = event.origin.user;
    let message = matches!(event.body, EventBody::MessageSent { .. });
    if message {
        put_value(txn, &keys::message(&chat, seq), &sender);
    }
    let joiner = match &event.body {
        EventBody::MemberAdded { member, .. } => Some(*member),
        _ => None,
    };
    for user in roster::audience(txn, chat, event)? {
        let key = keys::chat_list(user, &chat);
        let stored: Option<ChatListEntry> = get_value(txn, &key)?;
        let mut entry = match (stored, &event.body) {
            (_, EventBody::GroupCreated { .. }) => joined(ChatKind::Group, seq),
            (Some(mut e), _) if joiner == Some(user) => {
                // A re-join: what was unread before the departure is not counted.
                e.unread = 0;
                e.unread_after = e.unread_after.max(seq);
                e
            }
            (None, _) if joiner == Some(user) => joined(ChatKind::Group, seq),
            (Some(e), _) => e,
            (None, _) => return Err(Error::inconsistent(chat, kind, format!("member {user} has no chat list entry"))),
        };
        entry.last_seq = seq;
        if message {
            entry.last_message = Some(MessageRef { seq, sender, at_ms: event.at_ms });
            if user != sender {
                assert!(seq > entry.unread_after, "message {seq} not after unread_after {}", entry.unread_after);
                entry.unread += 1;
            }
        }
        put_value(txn, &key, &entry);
    }
    Ok(())
}

fn read<T: Txn + ?Sized>(txn: &mut T, chat: ChatId, user: UserId, up_to: Seq, kind: &'static str) -> Result<()> {
    let key = keys::chat_list(user, &chat);
    let mut entry: ChatListEntry = get_value(txn, &key)?
        .ok_or_else(|| Error::inconsistent(chat, kind, format!("reader {user} has no chat list entry")))?;
    if up_to <= entry.unread_after {
        return Ok(());
    }
    let from = keys::message(&chat, entry.unread_after.next());
    let to = keys::message(&chat, up_to.next());
    let mut from_others = 0u64;
    for_each(txn, &from, &to, |k, v| -> Result<()> {
        let sender: UserId = decode(k, v)?;
        if sender != user {
            from_others += 1;
        }
        Ok(())
    })?;
    entry.unread = entry.unread.checked_sub(from_others).ok_or_else(|| {
        Error::inconsistent(
            chat,
            kind,
            format!("user {user} reads {from_others} messages from others with {} unread", entry.unread),
        )
    })?;
    entry.unread_after = up_to;
    put_value(txn, &key, &entry);
    Ok(())
}

/// One user's entry for one chat.
///
/// # Errors
/// [`Error::Store`] if the store fails.
pub fn entry<T: Txn + ?Sized>(txn: &T, user: UserId, chat: &ChatId) -> Result<Option<ChatListEntry>> {
    Ok(get_value(txn, &keys::chat_list(user, chat))?)
}

/// The first `limit` chats of a user's chat list, in chat id order (a client
/// sorts by `last_message.at_ms` or `last_seq` as it likes; the view query
/// pages through it).
///
/// # Errors
/// [`Error::Store`] if the store fails.
pub fn list<T: Txn + ?Sized>(txn: &T, user: UserId, limit: usize) -> Result<Vec<(ChatId, ChatListEntry)>> {
    let prefix = keys::chat_list_of(user);
    let end = keys::prefix_end(&prefix).unwrap_or_else(|| vec![0xff; 64]);
    txn.scan(&prefix, &end, limit)?
        .into_iter()
        .map(|(k, v)| Ok((keys::chat_at(&k, keys::AFTER_TAG + 8), decode(&k, &v)?)))
        .collect()
}
