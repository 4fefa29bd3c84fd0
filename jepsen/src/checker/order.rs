//! Invariant 2: every reader sees each chat in the same order, gap-free.

use std::collections::BTreeMap;

use chorus_schema::{ChatId, Seq};

use super::{anomaly, Anomaly, Invariant, Model};
use crate::history::Item;

pub(super) fn check(m: &Model) -> Vec<Anomaly> {
    let mut out = Vec::new();
    // Each reader's stream strictly increases: no reorder, no repeat.
    for (what, streams) in [("final read", &m.reads), ("device read", &m.device_reads), ("live stream", &m.live)] {
        for ((u, d, chat), items) in streams {
            for (a, b) in items.iter().zip(items.iter().skip(1)) {
                if b.seq <= a.seq {
                    out.push(anomaly(
                        Invariant::Order,
                        Some(*chat),
                        format!("{what} of {u}/{d}: seq {} after seq {}", b.seq, a.seq),
                    ));
                }
            }
        }
    }
    // All readers agree on what stands at each seq, and the chat has no gap.
    let mut merged: BTreeMap<ChatId, BTreeMap<Seq, Item>> = BTreeMap::new();
    for (chat, (u, d), item) in m.seen_items() {
        let slot = merged.entry(chat).or_default();
        match slot.get(&item.seq) {
            Some(other) if other != &item => out.push(anomaly(
                Invariant::Order,
                Some(chat),
                format!(
                    "seq {} is {:?} for {u}/{d} but {:?} for another reader",
                    item.seq, item.message, other.message
                ),
            )),
            Some(_) => {}
            None => {
                slot.insert(item.seq, item);
            }
        }
    }
    for (chat, items) in &merged {
        let mut expected = 1;
        for seq in items.keys() {
            if seq.0 != expected {
                out.push(anomaly(
                    Invariant::Order,
                    Some(*chat),
                    format!("gap: no reader has seqs {expected}..{}", seq.0),
                ));
            }
            expected = seq.0 + 1;
        }
    }
    out
}
