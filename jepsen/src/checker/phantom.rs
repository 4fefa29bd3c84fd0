//! Invariant 9, no phantom: everything delivered was sent, and nothing whose send failed.

use std::collections::BTreeMap;

use chorus_schema::{ChatId, ClientMsgId, UserId};

use super::{anomaly, Anomaly, Invariant, Model};
use crate::history::Outcome;

pub(super) fn check(m: &Model) -> Vec<Anomaly> {
    // (chat, sender, cmid) → did any send with that key not fail?
    let mut sent: BTreeMap<(ChatId, UserId, ClientMsgId), bool> = BTreeMap::new();
    for (op, chat, sender, _, cmid) in m.sends() {
        let possible = !matches!(op.outcome, Outcome::Fail(_));
        let e = sent.entry((chat, sender, cmid)).or_insert(false);
        *e |= possible;
    }
    let mut out = Vec::new();
    let mut reported = std::collections::BTreeSet::new();
    for (chat, (u, d), item) in m.seen_items() {
        let Some((sender, cmid)) = item.message else { continue };
        let problem = match sent.get(&(chat, sender, cmid)) {
            None => Some("was never sent"),
            Some(false) => Some("was delivered although its send failed"),
            Some(true) => None,
        };
        if let Some(p) = problem {
            if reported.insert((chat, sender, cmid)) {
                out.push(anomaly(
                    Invariant::Phantom,
                    Some(chat),
                    format!("message {cmid} of {sender} at seq {} (seen by {u}/{d}) {p}", item.seq),
                ));
            }
        }
    }
    out
}
