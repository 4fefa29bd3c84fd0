//! Invariant 3: a retried `client_msg_id` maps to one (chat, seq), and the message stands
//! there for every reader: final reads, devices' reads and live deliveries.

use std::collections::{BTreeMap, BTreeSet};

use chorus_schema::{ChatId, ClientMsgId, DeviceId, Seq, UserId};

use super::{anomaly, Anomaly, Invariant, Model};
use crate::history::{Outcome, Value};

pub(super) fn check(m: &Model) -> Vec<Anomaly> {
    let mut acks: BTreeMap<(UserId, DeviceId, ClientMsgId), BTreeSet<(ChatId, Seq)>> = BTreeMap::new();
    for (op, chat, sender, device, cmid) in m.sends() {
        if let Outcome::Ok(Value::Sent { chat: c, seq }) = &op.outcome {
            if *c != chat {
                // The ack names another chat than the send targeted.
                acks.entry((sender, device, cmid)).or_default().insert((*c, *seq));
            }
            acks.entry((sender, device, cmid)).or_default().insert((chat, *seq));
        }
    }
    // Every place each reader (final reads, devices' reads, live deliveries)
    // has the message: each must be where its send was acked.
    let mut stands: BTreeMap<(ChatId, UserId, ClientMsgId), BTreeSet<Seq>> = BTreeMap::new();
    for (chat, _, item) in m.seen_items() {
        if let Some((sender, cmid)) = item.message {
            stands.entry((chat, sender, cmid)).or_default().insert(item.seq);
        }
    }
    let mut out = Vec::new();
    for ((sender, device, cmid), places) in acks {
        if places.len() > 1 {
            out.push(anomaly(
                Invariant::Retry,
                places.first().map(|p| p.0),
                format!(
                    "{sender}/{device} {cmid} acked as {:?}",
                    places.iter().map(|(c, s)| format!("{c}#{s}")).collect::<Vec<_>>()
                ),
            ));
            continue;
        }
        let Some((chat, seq)) = places.into_iter().next() else { continue };
        for actual in stands.get(&(chat, sender, cmid)).into_iter().flatten() {
            if *actual != seq {
                out.push(anomaly(
                    Invariant::Retry,
                    Some(chat),
                    format!("{sender} {cmid} acked at seq {seq} but stands at seq {actual}"),
                ));
            }
        }
    }
    out
}
