//! Invariant 4: receipts never go backwards; read implies delivered.
//!
//! Two kinds of observation: a device's own cursors (what its acks reported,
//! log executor), and the ticks the SDK hands to a device about its user's
//! messages (SDK executor). Ticks are watermarks: per (device, chat) neither
//! the delivered nor the read one may go back, a read tick counts as delivered
//! too (the projector sends only the read tick when both move to the same
//! seq), and a tick stands at a message its user sent in that chat.

use std::collections::BTreeSet;

use chorus_schema::Seq;

use super::{anomaly, Anomaly, Invariant, Model};

pub(super) fn check(m: &Model) -> Vec<Anomaly> {
    let mut out = Vec::new();
    for (((vu, vd), chat, of), updates) in &m.receipts {
        let (mut delivered, mut read) = (Seq(0), Seq(0));
        for (is_read, up_to) in updates {
            let cursor = if *is_read { &mut read } else { &mut delivered };
            if *up_to < *cursor {
                out.push(anomaly(
                    Invariant::Receipts,
                    Some(*chat),
                    format!(
                        "{vu}/{vd} saw {of}'s {} receipt go back from {cursor} to {up_to}",
                        if *is_read { "read" } else { "delivered" }
                    ),
                ));
            }
            *cursor = (*cursor).max(*up_to);
        }
        if read > delivered {
            out.push(anomaly(
                Invariant::Receipts,
                Some(*chat),
                format!("{vu}/{vd} saw {of} read up to {read} but delivered only up to {delivered}"),
            ));
        }
    }
    // Seqs of every message each user has in each chat, by any reader or ack.
    let mut messages: BTreeSet<(chorus_schema::ChatId, chorus_schema::UserId, Seq)> = BTreeSet::new();
    for (chat, _, item) in m.seen_items() {
        if let Some((sender, _)) = item.message {
            messages.insert((chat, sender, item.seq));
        }
    }
    for (op, chat, sender, ..) in m.sends() {
        if let crate::history::Outcome::Ok(crate::history::Value::Sent { seq, .. }) = &op.outcome {
            messages.insert((chat, sender, *seq));
        }
    }
    for (((vu, vd), chat), ticks) in &m.ticks {
        let (mut delivered, mut read) = (Seq(0), Seq(0));
        for (is_read, up_to) in ticks {
            let (kind, floor) = if *is_read { ("read", read) } else { ("delivered", delivered) };
            if *up_to < floor {
                out.push(anomaly(
                    Invariant::Receipts,
                    Some(*chat),
                    format!("{vu}/{vd} got a {kind} tick up to {up_to} after its ticks had reached {floor}"),
                ));
            }
            if !messages.contains(&(*chat, *vu, *up_to)) {
                out.push(anomaly(
                    Invariant::Receipts,
                    Some(*chat),
                    format!("{vu}/{vd} got a {kind} tick up to seq {up_to}, which is no message of {vu}"),
                ));
            }
            delivered = delivered.max(*up_to);
            if *is_read {
                read = read.max(*up_to);
            }
        }
    }
    out
}
