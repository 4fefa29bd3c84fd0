//! Invariant 5: a member removed at seq s receives nothing with seq > s; a non-member's send
//! is refused.

use super::{anomaly, Anomaly, Invariant, Model};
use crate::history::{Outcome, Value};

pub(super) fn check(m: &Model) -> Vec<Anomaly> {
    let mut out = Vec::new();
    for (chat, (u, d), item) in m.seen_items() {
        if m.member_at(&chat, u, item.seq) == Some(false) {
            out.push(anomaly(
                Invariant::Removal,
                Some(chat),
                format!("{u}/{d} received seq {} while not a member", item.seq),
            ));
        }
    }
    for (op, chat, sender, ..) in m.sends() {
        if let Outcome::Ok(Value::Sent { seq, .. }) = &op.outcome {
            if m.member_at(&chat, sender, *seq) == Some(false) {
                out.push(anomaly(
                    Invariant::Removal,
                    Some(chat),
                    format!("send by non-member {sender} was accepted at seq {seq}"),
                ));
            }
        }
    }
    out
}
