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
