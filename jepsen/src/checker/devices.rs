//! Invariants 1 and 5 on devices: what devices hold agrees with the log: each device's final sync through
//! the SDK, and each message it got live, against the log-side final read of
//! the same device (the log's events by its roster rule).
//!
//! A device holds the messages of its chats from the time its user was a
//! member, but not its own sends (the edge does not echo them) and no roster
//! items. So for every (user, device, chat):
//! - a message the log gives the device that its final sync lacks is
//!   [`Invariant::Lost`] (whatever its send's outcome: an `info` send that
//!   landed must reach every member too);
//! - a message in its final sync or its live stream that the log does not
//!   give it is [`Invariant::Removal`] (delivered outside its membership), or
//!   an echo of its own send;
//! - a message the log gives it that its live stream skipped (the stream
//!   went on past it) is [`Invariant::Lost`]: the app never got it, and an
//!   SDK resuming from its positions never will.
//!
//! Only when the history has device reads (the SDK executor).

use std::collections::BTreeSet;

use super::{anomaly, Anomaly, Invariant, Model};
use crate::history::Item;

pub(super) fn check(m: &Model) -> Vec<Anomaly> {
    let mut out = Vec::new();
    if m.device_reads.is_empty() {
        return out;
    }
    let mut keys: BTreeSet<_> = m.reads.keys().copied().collect();
    keys.extend(m.device_reads.keys().copied());
    keys.extend(m.live.keys().copied());
    let empty = Vec::new();
    for key @ (u, d, chat) in keys {
        let expected: BTreeSet<Item> = m
            .reads
            .get(&key)
            .unwrap_or(&empty)
            .iter()
            .filter(|i| i.message.is_some() && !m.own(u, d, i))
            .copied()
            .collect();
        let held = m.device_reads.get(&key).unwrap_or(&empty);
        for item in expected.iter().filter(|i| !held.contains(i)) {
            out.push(anomaly(
                Invariant::Lost,
                Some(chat),
                format!("{u}/{d}'s final sync lacks seq {} ({:?}), which the log gives it", item.seq, item.message),
            ));
        }
        let live = m.live.get(&key).unwrap_or(&empty);
        if let Some(last) = live.iter().map(|i| i.seq).max() {
            for item in expected.iter().filter(|i| i.seq < last && !live.contains(i)) {
                out.push(anomaly(
                    Invariant::Lost,
                    Some(chat),
                    format!(
                        "{u}/{d}'s live stream skipped seq {} ({:?}) and went on to seq {last}",
                        item.seq, item.message
                    ),
                ));
            }
        }
        for (what, items) in [("final sync", held), ("live stream", live)] {
            for item in items.iter().filter(|i| !expected.contains(i)) {
                let why =
                    if m.own(u, d, item) { "its own send, echoed back" } else { "which the log does not give it" };
                out.push(anomaly(
                    Invariant::Removal,
                    Some(chat),
                    format!("{u}/{d}'s {what} has seq {} ({:?}), {why}", item.seq, item.message),
                ));
            }
        }
    }
    out
}
