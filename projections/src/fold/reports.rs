//! The reports view (issue 14): for operators, how many times each user was
//! reported and the latest [`REPORTS_KEPT`] reports (with the messages the
//! reporters chose to reveal). The log keeps every report.
//!
//! # Rules
//! - `ReportFiled` (in the reported user's partition) adds one to the
//!   user's count, stores the report as the user's n-th (n = the count
//!   after it) and deletes the (n − [`REPORTS_KEPT`])-th.
//!
//! # Cost
//! One read, two writes and one delete per report; the latest reports are
//! one prefix scan.

use chorus_schema::push::ReportedMessage;
use chorus_schema::{ChatId, EventBody, EventRecord, UserId};
use serde::{Deserialize, Serialize};

use super::Effect;
use crate::store::{decode, for_each_prefix, get_value, keys, put_value, Txn};
use crate::Result;

/// Reports kept per reported user.
pub const REPORTS_KEPT: u64 = 20;

/// The reports against one user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    /// When the latest was filed (the log's time).
    pub last_at_ms: u64,
}

/// One report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub reporter: UserId,
    pub chat: Option<ChatId>,
    pub at_ms: u64,
    pub reason: String,
    pub messages: Vec<ReportedMessage>,
}

/// Folds `ReportFiled`; ignores every other event.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn apply<T: Txn + ?Sized>(txn: &mut T, record: &EventRecord, _effects: &mut Vec<Effect>) -> Result<()> {
    let EventBody::ReportFiled { user, chat, reason, messages } = &record.event.body else { return Ok(()) };
    let mut summary = summary(txn, *user)?;
    summary.count += 1;
    summary.last_at_ms = record.event.at_ms;
    put_value(txn, &keys::report_summary(*user), &summary);
    let report = Report {
        reporter: record.event.origin.user,
        chat: *chat,
        at_ms: record.event.at_ms,
        reason: reason.clone(),
        messages: messages.clone(),
    };
    put_value(txn, &keys::report(*user, summary.count), &report);
    if summary.count > REPORTS_KEPT {
        txn.delete(&keys::report(*user, summary.count - REPORTS_KEPT));
    }
    Ok(())
}

/// The reports against `user` (zero if none).
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn summary<T: Txn + ?Sized>(txn: &T, user: UserId) -> Result<Summary> {
    Ok(get_value(txn, &keys::report_summary(user))?.unwrap_or_default())
}

/// The kept reports against `user`, oldest first.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn latest<T: Txn + ?Sized>(txn: &T, user: UserId) -> Result<Vec<Report>> {
    let mut out = Vec::new();
    for_each_prefix(txn, &keys::reports_of(user), |k, v| {
        out.push(decode(k, v)?);
        Ok::<_, crate::Error>(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use chorus_schema::{ClientMsgId, DeviceId, Event, LogIndex, Offset, Origin, PartitionId};

    use super::*;
    use crate::store::MemStore;

    fn filed(reporter: u64, at_ms: u64, reported: UserId) -> EventRecord {
        let origin = Origin { user: UserId(reporter), device: DeviceId(1), client_msg_id: ClientMsgId(at_ms) };
        let body = EventBody::ReportFiled { user: reported, chat: None, reason: format!("r{at_ms}"), messages: vec![] };
        EventRecord {
            partition: PartitionId(0),
            offset: Offset(at_ms),
            log_index: LogIndex(at_ms),
            event: Event { at_ms, origin, body },
        }
    }

    #[test]
    fn counts_every_report_and_keeps_the_latest() {
        let mut store = MemStore::new();
        let (bad, other) = (UserId(7), UserId(8));
        for i in 1..=REPORTS_KEPT + 5 {
            let mut txn = store.begin();
            apply(&mut txn, &filed(i, i * 10, bad), &mut Vec::new()).unwrap();
            txn.commit();
        }
        let t = store.begin();
        assert_eq!(summary(&t, bad).unwrap(), Summary { count: REPORTS_KEPT + 5, last_at_ms: (REPORTS_KEPT + 5) * 10 });
        let latest = latest(&t, bad).unwrap();
        assert_eq!(latest.len() as u64, REPORTS_KEPT);
        assert_eq!(latest[0].reporter, UserId(6), "the oldest kept is the 6th");
        assert_eq!(latest.last().unwrap().reason, format!("r{}", (REPORTS_KEPT + 5) * 10));
        assert_eq!(summary(&t, other).unwrap(), Summary::default());
        assert!(super::latest(&t, other).unwrap().is_empty());
    }
}
