//! Invariant 1: no acknowledged send is lost.

use super::{anomaly, Anomaly, Invariant, Model};
use crate::history::{Outcome, Value};

pub(super) fn check(m: &Model) -> Vec<Anomaly> {
    let mut out = Vec::new();
    for (op, chat, sender, _, cmid) in m.sends() {
        let Outcome::Ok(Value::Sent { chat: acked_chat, seq }) = &op.outcome else { continue };
        if *acked_chat != chat {
            continue; // reported by the retry check
        }
        for user in m.users_of(&chat) {
            if m.member_at(&chat, user, *seq) != Some(true) {
                continue;
            }
            for device in m.devices.get(&user).into_iter().flatten() {
                match m.reads.get(&(user, *device, chat)) {
                    None => out.push(anomaly(
                        Invariant::Lost,
                        Some(chat),
                        format!("no final read by {user}/{device}, so acked seq {seq} is unaccounted for"),
                    )),
                    Some(items) => {
                        if !items.iter().any(|i| i.seq == *seq && i.message == Some((sender, cmid))) {
                            out.push(anomaly(
                                Invariant::Lost,
                                Some(chat),
                                format!("acked send {cmid} of {sender} at seq {seq} missing for {user}/{device}"),
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}
