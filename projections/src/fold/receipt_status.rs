//! The receipt status view: the aggregate tick (sent, delivered, read) of every
//! message, per sender and chat, and the [`Effect::ReceiptChanged`] that tells the
//! sender's devices when it moves.
//!
//! # The rule
//! Ticks are decided only when a `Receipt` event is folded, against the state
//! just after it. Let `E` be a receipt event of chat `C`, and `S` a sender who is
//! a member of `C` after `E`. Let `O` be the members of `C` after `E` other than
//! `S`. For `m` in `O`, let `d(m)` (`r(m)`) be the largest delivered (read)
//! cursor of `m`'s devices, and `j(m)` the seq at which `m` last joined (0 in a
//! direct chat, 1 for a group's founders). A message of `S` at seq `s` is
//! - **Delivered** at `E` if `O` is not empty and every `m` in `O` has
//!   `max(d(m), j(m)) >= s`: every other member has a device that acknowledged it,
//!   or joined after it (and so was never meant to receive it);
//! - **Read** at `E` likewise with `r(m)`;
//! - **Sent** otherwise.
//!
//! A message's status is the highest it reached at any receipt event so far: it
//! never goes back. A member removed (or who left) before `E` is not in `O`, so
//! they do not block a tick; a member added after the message does not either.
//! Roster changes alone decide nothing: the next receipt re-decides. A sender
//! alone in a group gets no ticks (no one received the message), and a sender
//! who left the chat gets no more ticks for it.
//!
//! The condition is monotone in `s`, so each sender's ticks are two watermarks
//! ([`Ticks`]) over their own messages: every message of `S` at or below
//! `delivered` is at least Delivered, at or below `read` is Read.
//!
//! # Cost
//! A receipt reads the chat's roster and cursors (O(members + devices)) and, for
//! each sender, the messages that its watermarks pass, which are then done: each
//! message is scanned once per tick. The pending index (`41 ‖ chat ‖ sender ‖
//! seq`) holds a sender's messages not yet read by all, and forgets them when
//! they are read or the sender leaves.

use chorus_schema::{ChatId, EventBody, EventRecord, Seq, UserId};

use super::{cursors, roster, Effect};
use crate::store::{decode, for_each, for_each_prefix, get_value, keys, put_value, Txn, SCAN_PAGE};
use crate::{Error, Result};

pub use chorus_schema::bus::{ReceiptStatus, Ticks};

/// Folds one event: records messages, forgets a departed sender's pending
/// messages, and re-decides ticks at a receipt.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn apply<T: Txn + ?Sized>(txn: &mut T, record: &EventRecord, effects: &mut Vec<Effect>) -> Result<()> {
    let event = &record.event;
    let Some(chat) = event.body.chat() else { return Ok(()) };
    match &event.body {
        EventBody::MessageSent { seq, .. } => {
            let sender = event.origin.user;
            txn.put(&keys::pending(&chat, sender, *seq), &[]);
            let key = keys::ticks(&chat, sender);
            if txn.get(&key)?.is_none() {
                put_value(txn, &key, &Ticks::default());
            }
        }
        EventBody::MemberRemoved { .. } | EventBody::MemberLeft { .. } => {
            let gone = roster::departed(event)
                .ok_or_else(|| Error::inconsistent(chat, "departure", "a departure without a departed user"))?;
            // Page by page: the transaction's deletes hide what the next scan would see again.
            let prefix = keys::pending_of(&chat, gone);
            let end = keys::prefix_end(&prefix).unwrap_or_else(|| vec![0xff; 64]);
            loop {
                let page = txn.scan(&prefix, &end, SCAN_PAGE)?;
                for (k, _) in &page {
                    txn.delete(k);
                }
                if page.len() < SCAN_PAGE {
                    break;
                }
            }
        }
        EventBody::Receipt { .. } => decide(txn, chat, effects)?,
        _ => {}
    }
    Ok(())
}

/// The two smallest values of a set of (user, cursor), to take the minimum over
/// "everyone but S" for every S in one pass.
#[derive(Default)]
struct TwoMin {
    first: Option<(Seq, UserId)>,
    second: Option<Seq>,
}

impl TwoMin {
    fn push(&mut self, user: UserId, value: Seq) {
        match self.first {
            Some((f, _)) if value >= f => self.second = Some(self.second.map_or(value, |s| s.min(value))),
            Some((f, _)) => {
                self.second = Some(f);
                self.first = Some((value, user));
            }
            None => self.first = Some((value, user)),
        }
    }

    /// The smallest value of a user other than `user` (`None` if there is none).
    fn excluding(&self, user: UserId) -> Option<Seq> {
        match self.first {
            Some((f, u)) if u != user => Some(f),
            Some(_) => self.second,
            None => None,
        }
    }
}

fn decide<T: Txn + ?Sized>(txn: &mut T, chat: ChatId, effects: &mut Vec<Effect>) -> Result<()> {
    let members = roster::members(txn, &chat)?;
    if members.len() < 2 {
        return Ok(());
    }
    let acked = cursors::of_chat(txn, &chat)?;
    let (mut delivered, mut read) = (TwoMin::default(), TwoMin::default());
    for (user, m) in &members {
        let c = acked.get(user).copied().unwrap_or_default();
        delivered.push(*user, c.delivered.max(m.since));
        read.push(*user, c.read.max(m.since));
    }
    let mut senders = Vec::new();
    for_each_prefix(txn, &keys::ticks_of_chat(&chat), |k, v| -> Result<()> {
        senders.push((k.to_vec(), v.to_vec()));
        Ok(())
    })?;
    for (k, v) in senders {
        let sender = UserId(keys::u64_at(&k, keys::AFTER_CHAT));
        if members.binary_search_by_key(&sender, |(u, _)| *u).is_err() {
            continue;
        }
        let before: Ticks = decode(&k, &v)?;
        // Both exist: the sender is a member and there are at least two.
        let (Some(d), Some(r)) = (delivered.excluding(sender), read.excluding(sender)) else {
            return Err(Error::inconsistent(chat, "receipt", "a sender with no other member"));
        };
        let mut after = before;
        if d > before.delivered {
            if let Some((last, _)) = pending_in(txn, &chat, sender, before.delivered, d)?.last() {
                after.delivered = *last;
            }
        }
        if r > before.read {
            let passed = pending_in(txn, &chat, sender, before.read, r)?;
            if let Some((last, _)) = passed.last() {
                after.read = *last;
            }
            // Read by all: the message's status is final.
            for (_, key) in passed {
                txn.delete(&key);
            }
        }
        assert!(after.read <= after.delivered, "chat {chat} sender {sender}: ticks {after:?}");
        if after == before {
            continue;
        }
        if after.delivered > before.delivered && after.delivered > after.read {
            effects.push(Effect::ReceiptChanged {
                chat,
                sender,
                up_to_seq: after.delivered,
                status: ReceiptStatus::Delivered,
            });
        }
        if after.read > before.read {
            effects.push(Effect::ReceiptChanged { chat, sender, up_to_seq: after.read, status: ReceiptStatus::Read });
        }
        put_value(txn, &k, &after);
    }
    Ok(())
}

/// The sender's pending messages with `after < seq <= up_to`, with their keys.
fn pending_in<T: Txn + ?Sized>(
    txn: &T,
    chat: &ChatId,
    sender: UserId,
    after: Seq,
    up_to: Seq,
) -> Result<Vec<(Seq, Vec<u8>)>> {
    let from = keys::pending(chat, sender, after.next());
    let to = keys::pending(chat, sender, up_to.next());
    let mut out = Vec::new();
    for_each(txn, &from, &to, |k, _| -> Result<()> {
        out.push((Seq(keys::u64_at(k, keys::AFTER_CHAT_USER)), k.to_vec()));
        Ok(())
    })?;
    Ok(out)
}

/// A sender's watermarks in a chat (zero if they never sent there).
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn ticks<T: Txn + ?Sized>(txn: &T, chat: &ChatId, sender: UserId) -> Result<Ticks> {
    Ok(get_value(txn, &keys::ticks(chat, sender))?.unwrap_or_default())
}

/// The status of `sender`'s message at `seq` (meaningful for seqs of the
/// sender's messages).
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn status<T: Txn + ?Sized>(txn: &T, chat: &ChatId, sender: UserId, seq: Seq) -> Result<ReceiptStatus> {
    Ok(ticks(txn, chat, sender)?.status(seq))
}
