//! [`Timeline`]: the order in which one connection receives timeline items.
//!
//! Items reach an edge three ways: live from the bus (at least once, in seq
//! order per chat while nothing is lost, but a bus message can be lost or
//! repeated), from a sync the client asked for, and from a gap fill. The
//! timeline merges them so that the device gets each `(chat, seq)` at most
//! once per connection, in seq order per chat, with no silent gap:
//!
//! - `seen[chat]` is the last seq handed to the device (or known to be before
//!   its position). A live item at or below it is a duplicate: dropped.
//! - A live item right after it is emitted. A live item further on is a
//!   **gap**: it is held and a [`Step::Fill`] asks the driver for the
//!   device's items in `(seen, seq]` (the inbox view, then the log); they come
//!   back through [`Timeline::recovered`], then [`Timeline::fill_done`]
//!   releases what was held.
//! - While a sync runs, live items are held and released after it, through
//!   the same rule; so live delivery continues after the sync with no gap
//!   and no duplicate.
//! - **Live delivery starts with the first sync**: a client syncs after login
//!   (with its positions, or none); live items that arrive before that sync is
//!   over wait for it. After it, a chat the timeline has never seen starts at
//!   0 (the sync listed every chat the user had, so an unknown chat is new).
//!   Taking the first live item as a chat's start instead would hide the
//!   items before it that the sync is about to bring.
//!
//! Items recovered by sync or fill need not be contiguous: a group member
//! does not receive the items of the time they were not a member.
//!
//! - **A chat joined while connected**: the edge takes a chat's live items
//!   only from the moment it learns that a connected user joined it, so
//!   [`Timeline::joined`] fills the chat from the views up to its end; if a
//!   sync or a fill of that chat runs, the catch-up waits for it to end.
//!
//! Held items are bounded in bytes; beyond the bound the connection must be
//! closed (the client reconnects and syncs), rather than grow without limit.

use std::collections::HashMap;

use std::sync::Arc;

use chorus_schema::{ChatId, Seq};

use super::item::Item;

/// What the session must do with the timeline's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Hand this item to the device.
    Emit(Arc<Item>),
    /// Recover the device's items of `chat` in `(after, until]`.
    Fill { chat: ChatId, after: Seq, until: Seq },
}

/// More held bytes than the bound allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Overflow;

#[derive(Debug)]
pub(crate) struct Timeline {
    seen: HashMap<ChatId, Seq>,
    synced_once: bool,
    syncing: bool,
    /// Live items that arrived during a sync, in arrival order.
    held_sync: Vec<Arc<Item>>,
    /// Chats being filled, with the live items held behind the fill.
    filling: HashMap<ChatId, Vec<Arc<Item>>>,
    /// Chats joined during a sync or a fill of theirs: caught up after it.
    joins: Vec<ChatId>,
    held_bytes: usize,
    held_bytes_max: usize,
}

fn position(item: &Arc<Item>) -> Option<(ChatId, Seq)> {
    item.position()
}

fn weight(item: &Arc<Item>) -> usize {
    item.weight()
}

impl Timeline {
    pub(crate) fn new(held_bytes_max: usize) -> Self {
        Timeline {
            seen: HashMap::new(),
            synced_once: false,
            syncing: false,
            held_sync: Vec::new(),
            filling: HashMap::new(),
            joins: Vec::new(),
            held_bytes: 0,
            held_bytes_max,
        }
    }

    pub(crate) fn is_syncing(&self) -> bool {
        self.syncing
    }

    /// The last seq handed over in `chat`, if any.
    #[cfg(test)]
    pub(crate) fn seen(&self, chat: &ChatId) -> Option<Seq> {
        self.seen.get(chat).copied()
    }

    fn hold(&mut self, record: Arc<Item>) -> Result<(), Overflow> {
        self.held_bytes += weight(&record);
        if self.held_bytes > self.held_bytes_max {
            return Err(Overflow);
        }
        match position(&record).map(|(chat, _)| chat).and_then(|c| self.filling.get_mut(&c)) {
            Some(held) if !self.syncing && self.synced_once => held.push(record),
            _ => self.held_sync.push(record),
        }
        Ok(())
    }

    /// An item from the bus.
    pub(crate) fn live(&mut self, record: Arc<Item>, out: &mut Vec<Step>) -> Result<(), Overflow> {
        let Some((chat, seq)) = position(&record) else { return Ok(()) };
        if self.syncing || !self.synced_once || self.filling.contains_key(&chat) {
            return self.hold(record);
        }
        let seen = self.seen.get(&chat).copied().unwrap_or(Seq(0));
        if seq <= seen {
            return Ok(());
        }
        if seq.0 == seen.0 + 1 {
            self.seen.insert(chat, seq);
            out.push(Step::Emit(record));
            return Ok(());
        }
        self.filling.insert(chat, Vec::new());
        out.push(Step::Fill { chat, after: seen, until: seq });
        self.hold(record)
    }

    /// An item recovered by a sync or a fill: emitted unless already handed over.
    pub(crate) fn recovered(&mut self, record: Arc<Item>, out: &mut Vec<Step>) {
        let Some((chat, seq)) = position(&record) else { return };
        if self.seen.get(&chat).is_some_and(|s| seq <= *s) {
            return;
        }
        self.seen.insert(chat, seq);
        out.push(Step::Emit(record));
    }

    /// The user joined `chat` (see the module docs): fill it from what the
    /// device has to the chat's end.
    pub(crate) fn joined(&mut self, chat: ChatId, out: &mut Vec<Step>) {
        if self.syncing || !self.synced_once || self.filling.contains_key(&chat) {
            if !self.joins.contains(&chat) {
                self.joins.push(chat);
            }
            return;
        }
        let after = self.seen.get(&chat).copied().unwrap_or(Seq(0));
        self.filling.insert(chat, Vec::new());
        out.push(Step::Fill { chat, after, until: Seq(u64::MAX) });
    }

    /// Catches up the joins that waited, where nothing runs any more.
    fn run_joins(&mut self, out: &mut Vec<Step>) {
        for chat in std::mem::take(&mut self.joins) {
            self.joined(chat, out);
        }
    }

    pub(crate) fn sync_started(&mut self) {
        self.syncing = true;
    }

    /// The sync is over: `positions` are the last seqs of every chat of the
    /// user at the time of the sync (what it covered). Releases the held items.
    pub(crate) fn sync_done(&mut self, positions: &[(ChatId, Seq)], out: &mut Vec<Step>) -> Result<(), Overflow> {
        for (chat, seq) in positions {
            let s = self.seen.entry(*chat).or_insert(*seq);
            *s = (*s).max(*seq);
        }
        self.syncing = false;
        self.synced_once = true;
        let held = std::mem::take(&mut self.held_sync);
        self.release(held, out)?;
        self.run_joins(out);
        Ok(())
    }

    /// The fill of `chat` is over (whether or not it found everything: a
    /// failed fill must not hold live items forever). Releases the held items.
    pub(crate) fn fill_done(&mut self, chat: ChatId, out: &mut Vec<Step>) -> Result<(), Overflow> {
        let held = self.filling.remove(&chat).unwrap_or_default();
        if let Some(first) = held.iter().filter_map(position).map(|(_, s)| s).min() {
            // The fill covered up to the first held item; whatever it could not
            // recover is not coming back through this connection: move on.
            let s = self.seen.entry(chat).or_insert(Seq(0));
            if s.0 + 1 < first.0 {
                *s = Seq(first.0 - 1);
            }
        }
        self.release(held, out)?;
        self.run_joins(out);
        Ok(())
    }

    fn release(&mut self, held: Vec<Arc<Item>>, out: &mut Vec<Step>) -> Result<(), Overflow> {
        for r in &held {
            self.held_bytes -= weight(r);
        }
        for record in held {
            self.live(record, out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_schema::{ClientMsgId, DeviceId, Event, EventBody, Origin, PartitionId, UserId};

    fn item(chat: u8, seq: u64) -> Arc<Item> {
        let chat = ChatId::group([chat; 16]);
        Item::new(chorus_schema::EventRecord {
            partition: PartitionId(0),
            offset: chorus_schema::Offset(seq),
            log_index: chorus_schema::LogIndex(seq),
            event: Event {
                at_ms: 0,
                origin: Origin { user: UserId(1), device: DeviceId(1), client_msg_id: ClientMsgId(seq) },
                body: EventBody::MessageSent { chat, seq: Seq(seq), ciphertext: vec![0; 10], media: None },
            },
        })
    }

    fn seqs(out: &[Step]) -> Vec<u64> {
        out.iter()
            .filter_map(|s| match s {
                Step::Emit(r) => r.record().event.body.seq().map(|s| s.0),
                Step::Fill { .. } => None,
            })
            .collect()
    }

    #[test]
    fn duplicates_dropped_gaps_filled_then_released_in_order() {
        let mut t = Timeline::new(1 << 20);
        let mut out = Vec::new();
        t.sync_started();
        t.live(item(1, 3), &mut out).unwrap();
        assert!(out.is_empty(), "held during the sync");
        t.recovered(item(1, 1), &mut out);
        t.recovered(item(1, 2), &mut out);
        t.sync_done(&[(ChatId::group([1; 16]), Seq(2))], &mut out).unwrap();
        assert_eq!(seqs(&out), [1, 2, 3]);
        out.clear();
        t.live(item(1, 3), &mut out).unwrap();
        t.live(item(1, 6), &mut out).unwrap();
        assert_eq!(out, [Step::Fill { chat: ChatId::group([1; 16]), after: Seq(3), until: Seq(6) }]);
        out.clear();
        t.live(item(1, 7), &mut out).unwrap();
        t.recovered(item(1, 4), &mut out);
        t.recovered(item(1, 5), &mut out);
        t.recovered(item(1, 6), &mut out);
        t.fill_done(ChatId::group([1; 16]), &mut out).unwrap();
        assert_eq!(seqs(&out), [4, 5, 6, 7], "the held 6 is a duplicate of the filled one");
        // A new chat after a sync starts at 0: its first item at 2 is a gap.
        out.clear();
        t.live(item(2, 2), &mut out).unwrap();
        assert_eq!(out, [Step::Fill { chat: ChatId::group([2; 16]), after: Seq(0), until: Seq(2) }]);
        // A fill that recovered nothing releases the held item anyway.
        out.clear();
        t.fill_done(ChatId::group([2; 16]), &mut out).unwrap();
        assert_eq!(seqs(&out), [2]);
        assert_eq!(t.seen(&ChatId::group([2; 16])), Some(Seq(2)));
    }

    #[test]
    fn live_items_wait_for_the_first_sync_which_may_bring_earlier_ones() {
        let mut t = Timeline::new(1 << 20);
        let mut out = Vec::new();
        t.live(item(1, 9), &mut out).unwrap();
        assert!(out.is_empty(), "held until the first sync");
        t.sync_started();
        for s in 1..=8 {
            t.recovered(item(1, s), &mut out);
        }
        t.sync_done(&[(ChatId::group([1; 16]), Seq(8))], &mut out).unwrap();
        t.live(item(1, 10), &mut out).unwrap();
        assert_eq!(seqs(&out), (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn held_bytes_are_bounded() {
        let mut t = Timeline::new(1000);
        let mut out = Vec::new();
        t.sync_started();
        assert_eq!(t.live(item(1, 1), &mut out), Ok(()));
        assert_eq!(t.live(item(1, 2), &mut out), Ok(()));
        assert_eq!(t.live(item(1, 3), &mut out), Ok(()));
        assert_eq!(t.live(item(1, 4), &mut out), Err(Overflow));
    }
}
