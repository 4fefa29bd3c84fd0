//! Invariant 2, no duplicates: each message (sender, client_msg_id) stands at one seq.

use std::collections::{BTreeMap, BTreeSet};

use chorus_schema::{ChatId, ClientMsgId, Seq, UserId};

use super::{anomaly, Anomaly, Invariant, Model};

pub(super) fn check(m: &Model) -> Vec<Anomaly> {
    let mut at: BTreeMap<(ChatId, UserId, ClientMsgId), BTreeSet<Seq>> = BTreeMap::new();
    for (chat, _, item) in m.seen_items() {
        if let Some((sender, cmid)) = item.message {
            at.entry((chat, sender, cmid)).or_default().insert(item.seq);
        }
    }
    at.into_iter()
        .filter(|(_, seqs)| seqs.len() > 1)
        .map(|((chat, sender, cmid), seqs)| {
            anomaly(
                Invariant::Duplicate,
                Some(chat),
                format!("message {cmid} of {sender} stands at seqs {:?}", seqs.iter().map(|s| s.0).collect::<Vec<_>>()),
            )
        })
        .collect()
}
