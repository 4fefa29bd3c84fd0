//! The dedup table: the outcome of every command that produced events, by origin.

use std::collections::{BTreeMap, BTreeSet};

use chorus_schema::{ClientMsgId, DeviceId, Origin, Outcome, UserId};
use serde::{Deserialize, Serialize};

/// How long a command's outcome is remembered, relative to the newest `at_ms`
/// folded into the partition.
pub const DEDUP_RETENTION_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// The identity of a command for idempotency: its origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DedupKey {
    pub user: UserId,
    pub device: DeviceId,
    pub client_msg_id: ClientMsgId,
}

impl From<&Origin> for DedupKey {
    fn from(o: &Origin) -> Self {
        DedupKey { user: o.user, device: o.device, client_msg_id: o.client_msg_id }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    at_ms: u64,
    outcome: Outcome,
}

/// Outcomes by origin, bounded by age.
///
/// The table is a pure function of the folded events, so a replica that replays
/// the log, or restores a snapshot, holds exactly the live table:
/// - [`Dedup::record`] is called for every folded event. Events that carry an
///   outcome insert it (a later event of the same command overwrites, so the last
///   event's outcome counts).
/// - Every call also advances `newest_at_ms` (the largest `at_ms` folded so far)
///   and prunes entries with `at_ms + DEDUP_RETENTION_MS < newest_at_ms`. A time
///   index makes each prune O(log n) and each entry is pruned once, so the cost is
///   amortized O(log n) per event.
///
/// A retry that arrives after its entry was pruned is evaluated again as a new
/// command. Leader clocks that go backwards only delay pruning.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "DedupRepr", into = "DedupRepr")]
pub(crate) struct Dedup {
    entries: BTreeMap<DedupKey, Entry>,
    by_time: BTreeSet<(u64, DedupKey)>,
    newest_at_ms: u64,
}

impl Dedup {
    pub(crate) fn get(&self, origin: &Origin) -> Option<&Outcome> {
        self.entries.get(&DedupKey::from(origin)).map(|e| &e.outcome)
    }

    pub(crate) fn record(&mut self, origin: &Origin, at_ms: u64, outcome: Option<Outcome>) {
        self.newest_at_ms = self.newest_at_ms.max(at_ms);
        if let Some(outcome) = outcome {
            let key = DedupKey::from(origin);
            if let Some(old) = self.entries.insert(key, Entry { at_ms, outcome }) {
                self.by_time.remove(&(old.at_ms, key));
            }
            self.by_time.insert((at_ms, key));
        }
        self.prune();
    }

    fn prune(&mut self) {
        let horizon = self.newest_at_ms.saturating_sub(DEDUP_RETENTION_MS);
        while let Some(&(at_ms, key)) = self.by_time.first() {
            if at_ms >= horizon {
                break;
            }
            self.by_time.pop_first();
            self.entries.remove(&key);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn newest_at_ms(&self) -> u64 {
        self.newest_at_ms
    }
}

/// The serialized form: the entries in key order (the time index is rebuilt).
#[derive(Serialize, Deserialize)]
struct DedupRepr {
    newest_at_ms: u64,
    entries: Vec<(DedupKey, u64, Outcome)>,
}

impl From<Dedup> for DedupRepr {
    fn from(d: Dedup) -> Self {
        DedupRepr {
            newest_at_ms: d.newest_at_ms,
            entries: d.entries.into_iter().map(|(k, e)| (k, e.at_ms, e.outcome)).collect(),
        }
    }
}

impl From<DedupRepr> for Dedup {
    fn from(r: DedupRepr) -> Self {
        let mut d = Dedup { newest_at_ms: r.newest_at_ms, ..Dedup::default() };
        for (key, at_ms, outcome) in r.entries {
            if let Some(old) = d.entries.insert(key, Entry { at_ms, outcome }) {
                d.by_time.remove(&(old.at_ms, key));
            }
            d.by_time.insert((at_ms, key));
        }
        d
    }
}
