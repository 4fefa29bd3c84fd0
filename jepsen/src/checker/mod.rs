//! The checker: one module per invariant of ARCHITECTURE.md (numbered there), all reading one
//! [`Model`] built from the history.
//!
//! Outcomes follow Jepsen: an `ok` operation happened; a `fail` one certainly
//! did not; an `info` one may or may not have happened, but at most once.
//! Membership changes of unknown outcome make that member's status ambiguous
//! in that chat from then on, and the checks that depend on it skip the member.

mod devices;
mod duplicates;
mod lost;
mod model;
mod order;
mod phantom;
mod realtime;
mod receipts;
mod removal;
mod retry;

use std::collections::BTreeMap;
use std::fmt;

use chorus_schema::ChatId;
use serde::Serialize;

pub use model::Model;

use crate::history::History;

/// The invariants checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Invariant {
    /// Invariant 1. Every acknowledged send reaches every device of every member (by the
    /// log, and in what each device holds).
    Lost,
    /// Invariant 2. Every reader sees each chat in the same order, gap-free, strictly increasing.
    Order,
    /// Invariant 8. A send acknowledged before another was invoked (same chat) has the lower seq.
    RealTime,
    /// Invariant 9. Everything delivered was sent, and nothing whose send failed.
    Phantom,
    /// Invariant 2. A message appears at most once, whatever its send's outcome.
    Duplicate,
    /// Invariant 3. Every acknowledgement of one `client_msg_id` names the same (chat, seq).
    Retry,
    /// Invariant 4. Receipts never go backwards; read implies delivered.
    Receipts,
    /// Invariant 5. A removed member receives nothing after removal; a non-member's send is
    /// refused; a device holds or is handed nothing the log does not give it.
    Removal,
    /// Invariant 6. Views rebuilt from the log equal the live ones.
    Views,
}

impl Invariant {
    pub const ALL: [Invariant; 9] = [
        Invariant::Lost,
        Invariant::Order,
        Invariant::RealTime,
        Invariant::Phantom,
        Invariant::Duplicate,
        Invariant::Retry,
        Invariant::Receipts,
        Invariant::Removal,
        Invariant::Views,
    ];
}

/// One violation, with enough context to find it in the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    pub invariant: Invariant,
    pub chat: Option<ChatId>,
    pub detail: String,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.chat {
            Some(c) => write!(f, "{:?} in chat {c}: {}", self.invariant, self.detail),
            None => write!(f, "{:?}: {}", self.invariant, self.detail),
        }
    }
}

/// The verdict: anomalies per invariant (every invariant has an entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub anomalies: BTreeMap<Invariant, Vec<Anomaly>>,
    /// Operations seen, by outcome.
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
}

impl Verdict {
    pub fn is_valid(&self) -> bool {
        self.anomalies.values().all(Vec::is_empty)
    }

    pub fn of(&self, inv: Invariant) -> &[Anomaly] {
        self.anomalies.get(&inv).map(Vec::as_slice).unwrap_or(&[])
    }
}

pub(crate) fn anomaly(invariant: Invariant, chat: Option<ChatId>, detail: impl Into<String>) -> Anomaly {
    Anomaly { invariant, chat, detail: detail.into() }
}

/// Checks every invariant that the history alone can decide (all but
/// [`Invariant::Views`]; see [`check_views`]).
pub fn check(history: &History) -> Verdict {
    let model = Model::build(history);
    let mut all = Vec::new();
    all.extend(lost::check(&model));
    all.extend(order::check(&model));
    all.extend(realtime::check(&model));
    all.extend(phantom::check(&model));
    all.extend(duplicates::check(&model));
    all.extend(retry::check(&model));
    all.extend(receipts::check(&model));
    all.extend(removal::check(&model));
    all.extend(devices::check(&model));
    let mut anomalies: BTreeMap<Invariant, Vec<Anomaly>> = Invariant::ALL.iter().map(|i| (*i, Vec::new())).collect();
    for a in all {
        anomalies.entry(a.invariant).or_default().push(a);
    }
    let (ok, fail, info) = model.outcome_counts();
    Verdict { anomalies, ok, fail, info }
}

/// Compares a live view dump with one rebuilt from the log, entry by entry.
pub fn check_views(
    live: &BTreeMap<String, serde_json::Value>,
    rebuilt: &BTreeMap<String, serde_json::Value>,
) -> Vec<Anomaly> {
    let mut out = Vec::new();
    for (k, v) in live {
        match rebuilt.get(k) {
            None => out.push(anomaly(Invariant::Views, None, format!("{k} is live but not rebuilt"))),
            Some(r) if r != v => out.push(anomaly(Invariant::Views, None, format!("{k}: live {v} ≠ rebuilt {r}"))),
            Some(_) => {}
        }
    }
    for k in rebuilt.keys().filter(|k| !live.contains_key(*k)) {
        out.push(anomaly(Invariant::Views, None, format!("{k} is rebuilt but not live")));
    }
    out
}

#[cfg(test)]
mod tests;
