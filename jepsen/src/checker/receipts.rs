//! Receipts never go backwards; read implies delivered.

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
    out
}
