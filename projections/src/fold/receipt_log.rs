//! The receipt log view: when each member's receipts moved, so that a sender
//! can see who received and who read one message, and when ("message info").
//!
//! # The rule
//! Per (chat, user) the view keeps the user's **best** cursors over their
//! devices (the largest delivered and read seqs any of them acknowledged:
//! `Cursors::advance` of every `Receipt` of the user, a read moving the
//! delivered cursor too), and a **step** each time one of them moves: the
//! new seq and the commit time (`at_ms`) of the receipt that moved it. So the
//! user first had the message at seq `s` at the time of their first
//! delivered step at or above `s`, and first read it at their first read step
//! at or above `s` ([`first_at`]).
//!
//! Cursors are cumulative and never go back, so the steps of one cursor are
//! strictly increasing in seq and in time order of the log; a user who
//! leaves and comes back keeps theirs (as the cursors view does).
//!
//! # Cost
//! A receipt reads one record and writes at most three (the best cursors and
//! up to two steps). A query reads the roster and, per member, one short scan
//! per kind. Steps are never pruned (a next step: below the oldest message
//! anyone may still ask about).

use chorus_schema::bus::{InfoRefusal, MessageInfo};
use chorus_schema::{ChatId, Cursors, EventBody, EventRecord, MessageReceipt, ReceiptKind, Seq, UserId};

use super::{roster, Effect};
use crate::store::{get_value, keys, put_value, Txn};
use crate::Result;

/// The key byte of a cursor kind.
fn kind_byte(kind: ReceiptKind) -> u8 {
    match kind {
        ReceiptKind::Delivered => 0,
        ReceiptKind::Read => 1,
    }
}

/// Folds a `Receipt` into its user's best cursors and steps; ignores every
/// other event.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn apply<T: Txn + ?Sized>(txn: &mut T, record: &EventRecord, _effects: &mut Vec<Effect>) -> Result<()> {
    let event = &record.event;
    let EventBody::Receipt { chat, kind, up_to_seq } = &event.body else { return Ok(()) };
    let user = event.origin.user;
    let key = keys::receipt_best(chat, user);
    let before: Cursors = get_value(txn, &key)?.unwrap_or_default();
    let after = before.advance(*kind, *up_to_seq);
    if after == before {
        return Ok(());
    }
    assert!(after.read <= after.delivered, "read {} above delivered {}", after.read, after.delivered);
    for k in [ReceiptKind::Delivered, ReceiptKind::Read] {
        if after.get(k) > before.get(k) {
            put_value(txn, &keys::receipt_step(chat, user, kind_byte(k), after.get(k)), &event.at_ms);
        }
    }
    put_value(txn, &key, &after);
    Ok(())
}

/// When `user`'s cursor of `kind` in `chat` first reached `seq` (the commit
/// time of that receipt), if it has.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn first_at<T: Txn + ?Sized>(
    txn: &T,
    chat: &ChatId,
    user: UserId,
    kind: ReceiptKind,
    seq: Seq,
) -> Result<Option<u64>> {
    let byte = kind_byte(kind);
    let from = keys::receipt_step(chat, user, byte, seq);
    let prefix = keys::receipt_steps(chat, user, byte);
    #[expect(clippy::expect_used, reason = "a key prefix starts with its family tag, below 0xff")]
    let to = keys::prefix_end(&prefix).expect("a receipt step prefix is not all 0xff");
    match txn.scan(&from, &to, 1)?.into_iter().next() {
        Some((k, v)) => Ok(Some(crate::store::decode(&k, &v)?)),
        None => Ok(None),
    }
}

/// The user's best cursors over their devices (zero if none acknowledged).
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn best<T: Txn + ?Sized>(txn: &T, chat: &ChatId, user: UserId) -> Result<Cursors> {
    Ok(get_value(txn, &keys::receipt_best(chat, user))?.unwrap_or_default())
}

/// The info of the message at `seq` of `chat`, asked by `user`: for every
/// current member other than `user` who was a member at `seq` (their last
/// join at or before it), when they first had it and first read it. Refused
/// unless the chat exists, `user` is a member, and the item at `seq` is a
/// message of `user`'s (the chat list's message index says whose).
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn message_info<T: Txn + ?Sized>(
    txn: &T,
    chat: &ChatId,
    seq: Seq,
    user: UserId,
) -> Result<Result<MessageInfo, InfoRefusal>> {
    if roster::chat(txn, chat)?.is_none() {
        return Ok(Err(InfoRefusal::UnknownChat));
    }
    let members = roster::members(txn, chat)?;
    if members.binary_search_by_key(&user, |(u, _)| *u).is_err() {
        return Ok(Err(InfoRefusal::NotMember));
    }
    let sender: Option<UserId> = get_value(txn, &keys::message(chat, seq))?;
    match sender {
        None => return Ok(Err(InfoRefusal::NotMessage)),
        Some(s) if s != user => return Ok(Err(InfoRefusal::NotSender)),
        Some(_) => {}
    }
    let mut entries = Vec::with_capacity(members.len());
    for (member, m) in members {
        if member == user || m.since > seq {
            continue;
        }
        entries.push(MessageReceipt {
            user: member,
            delivered_at_ms: first_at(txn, chat, member, ReceiptKind::Delivered, seq)?,
            read_at_ms: first_at(txn, chat, member, ReceiptKind::Read, seq)?,
        });
    }
    Ok(Ok(MessageInfo { entries }))
}

#[cfg(test)]
mod tests {
    use chorus_schema::{ClientMsgId, DeviceId, Event, Offset, Origin, PartitionId};

    use super::*;
    use crate::store::MemStore;

    fn receipt(user: u64, device: u32, kind: ReceiptKind, up_to: u64, at_ms: u64) -> EventRecord {
        EventRecord {
            partition: PartitionId(0),
            offset: Offset(0),
            log_index: chorus_schema::LogIndex(1),
            event: Event {
                at_ms,
                origin: Origin { user: UserId(user), device: DeviceId(device), client_msg_id: ClientMsgId(1) },
                body: EventBody::Receipt { chat: ChatId::group([1; 16]), kind, up_to_seq: Seq(up_to) },
            },
        }
    }

    #[test]
    fn steps_follow_the_best_cursor_over_devices_and_a_read_delivers() {
        let chat = ChatId::group([1; 16]);
        let mut store = MemStore::new();
        let mut txn = store.begin();
        for r in [
            receipt(7, 1, ReceiptKind::Delivered, 3, 100),
            // Another device, behind: no step.
            receipt(7, 2, ReceiptKind::Delivered, 2, 110),
            // A read past the delivered cursor moves both.
            receipt(7, 2, ReceiptKind::Read, 5, 120),
            receipt(7, 1, ReceiptKind::Delivered, 9, 130),
            // A read below the best read cursor changes nothing.
            receipt(7, 1, ReceiptKind::Read, 4, 140),
        ] {
            apply(&mut txn, &r, &mut Vec::new()).unwrap();
        }
        let at = |kind, seq| first_at(&txn, &chat, UserId(7), kind, Seq(seq)).unwrap();
        assert_eq!(best(&txn, &chat, UserId(7)).unwrap(), Cursors { delivered: Seq(9), read: Seq(5) });
        assert_eq!(at(ReceiptKind::Delivered, 1), Some(100));
        assert_eq!(at(ReceiptKind::Delivered, 3), Some(100));
        assert_eq!(at(ReceiptKind::Delivered, 4), Some(120));
        assert_eq!(at(ReceiptKind::Delivered, 6), Some(130));
        assert_eq!(at(ReceiptKind::Delivered, 10), None);
        assert_eq!(at(ReceiptKind::Read, 5), Some(120));
        assert_eq!(at(ReceiptKind::Read, 6), None);
        assert_eq!(first_at(&txn, &chat, UserId(8), ReceiptKind::Delivered, Seq(1)).unwrap(), None);
    }
}
