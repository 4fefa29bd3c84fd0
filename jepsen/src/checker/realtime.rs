//! Invariant 8, real-time order: a send acknowledged before another was invoked, in the
//! same chat, has the lower seq.
//!
//! A retry (same sender, device and `client_msg_id`) is the same send: its
//! effect may have taken place during any earlier attempt, so a send counts as
//! invoked when its *first* attempt was. Without that, a retry acked with the
//! seq its first, timed-out attempt got would look like a send that jumped
//! back in time.

use std::collections::BTreeMap;

use chorus_schema::{ChatId, ClientMsgId, DeviceId, Seq, UserId};

use super::{anomaly, Anomaly, Invariant, Model};
use crate::history::{Outcome, Value};

pub(super) fn check(m: &Model) -> Vec<Anomaly> {
    let mut first_invoke: BTreeMap<(UserId, DeviceId, ClientMsgId), u64> = BTreeMap::new();
    for (op, _, sender, device, cmid) in m.sends() {
        let t = first_invoke.entry((sender, device, cmid)).or_insert(op.invoke_ns);
        *t = (*t).min(op.invoke_ns);
    }
    // Per chat: (first invoke_ns, complete_ns, seq) of acked sends.
    let mut per_chat: BTreeMap<ChatId, Vec<(u64, u64, Seq)>> = BTreeMap::new();
    for (op, chat, sender, device, cmid) in m.sends() {
        if let (Outcome::Ok(Value::Sent { seq, .. }), Some(done)) = (&op.outcome, op.complete_ns) {
            // Filled from the same sends just above: the fallback is never taken.
            let invoked = first_invoke.get(&(sender, device, cmid)).copied().unwrap_or(op.invoke_ns);
            per_chat.entry(chat).or_default().push((invoked, done, *seq));
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
            while let Some((_, acked)) = by_completion.get(i).filter(|(done, _)| *done < invoke) {
                max_before = max_before.max(Some(*acked));
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
