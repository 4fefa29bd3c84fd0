//! The presence view: each user's presence (online or not) and last seen,
//! and the [`Effect::Presence`] of every change.
//!
//! # Rules
//! - `PresenceChanged` carries the user's presence after it (the partition
//!   derives it from its per-device online set). When that differs from the
//!   view's, the user changed presence at the event's `at_ms`: the view
//!   stores `{online, last_seen_ms: at_ms}` and an [`Effect::Presence`] is
//!   published (`chorus.presence.<user>`), once per change. A device coming
//!   or going while another device stays online changes nothing here.
//! - A user the view has never seen is offline with last seen 0.
//!
//! Who may see it is the [`privacy`](super::privacy) view's rule
//! ([`super::privacy::may_see_presence`]); the view itself stores no audience.
//!
//! # Cost
//! One point read and at most one write per `PresenceChanged`.

use chorus_schema::{EventBody, EventRecord, UserId};
use serde::{Deserialize, Serialize};

use super::Effect;
use crate::store::{get_value, keys, put_value, Txn};
use crate::Result;

/// A user's presence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub online: bool,
    /// When the user last went online or offline (0: never).
    pub last_seen_ms: u64,
}

/// Folds a `PresenceChanged`; ignores every other event.
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn apply<T: Txn + ?Sized>(txn: &mut T, record: &EventRecord, effects: &mut Vec<Effect>) -> Result<()> {
    let EventBody::PresenceChanged { user, online, .. } = &record.event.body else { return Ok(()) };
    let before = get(txn, *user)?;
    if before.online == *online && before.last_seen_ms != 0 {
        return Ok(());
    }
    let now = Presence { online: *online, last_seen_ms: record.event.at_ms };
    put_value(txn, &keys::presence(*user), &now);
    effects.push(Effect::Presence { user: *user, presence: Some(now) });
    Ok(())
}

/// The presence of `user` (offline, never seen, if the view has nothing).
///
/// # Errors
/// [`crate::Error::Store`] if the store fails.
pub fn get<T: Txn + ?Sized>(txn: &T, user: UserId) -> Result<Presence> {
    Ok(get_value(txn, &keys::presence(user))?.unwrap_or_default())
}
