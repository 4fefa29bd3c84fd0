//! Real-time order: a send acknowledged before another was invoked, in the
//! same chat, has the lower seq.

use std::collections::BTreeMap;

use chorus_schema::{ChatId, Seq};

use super::{anomaly, Anomaly, Invariant, Model};
use crate::history::{Outcome, Value};

pub(super) fn check(m: &Model) -> Vec<Anomaly> {
    // Per chat: (complete_ns, seq) of acked sends and (invoke_ns, seq) of the same.
    let mut per_chat: BTreeMap<ChatId, Vec<(u64, u64, Seq)>> = BTreeMap::new();
    for (op, chat, ..) in m.sends() {
        if let (Outcome::Ok(Value::Sent { seq, .. }), Some(done)) = (&op.outcome, op.complete_ns) {
            per_chat.entry(chat).or_default().push((op.invoke_ns, done, *seq));
        }
    }
    let mut out = Vec::new();
    for (chat, mut sends) in per_chat {
        let mut by_completion: Vec<(u64, Seq)> = sends.iter().map(|(_, done, seq)| (*done, *seq)).collect();
        by_completion.sort();
        sends.sort();
        // Walk invocations in time order, keeping the highest seq acked before each.
        let mut i = 0;
        let mut max_before: Option<Seq> = None;
        for (invoke, _, seq) in sends {
            while i < by_completion.len() && by_completion[i].0 < invoke {
                max_before = max_before.max(Some(by_completion[i].1));
                i += 1;
            }
            if let Some(prev) = max_before {
                if prev >= seq {
                    out.push(anomaly(
                        Invariant::RealTime,
                        Some(chat),
                        format!("send invoked after seq {prev} was acked got seq {seq}"),
                    ));
                }
            }
        }
    }
    out
}
