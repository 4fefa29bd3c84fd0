//! The user-partition rules of push tokens and abuse reports (issue 14).
//!
//! - `SetPushToken` (key: the origin user): the origin user must be
//!   registered (`UnknownUser`) and the origin device linked (`Invalid`);
//!   emits `PushTokenSet` (an empty token clears the device's token). The
//!   partition keeps no token state: the tokens are a view
//!   (`projections/src/fold/push_tokens.rs`), which also drops a device's
//!   token when the device is unlinked.
//! - `FileReport` (key: the reported user): the reported user must be
//!   registered (`UnknownUser`) and not the reporter (`Invalid`); the size
//!   limits are the command's (`chorus_schema::push`). Emits `ReportFiled`.
//!   No state either: the `reports` view counts them.

use chorus_schema::{CommandBody, EventBody, Origin, Outcome, RejectCode, Rejection};

use crate::kv::Kv;
use crate::state::Decision;
use crate::user::head;

/// Decides a push or report command; `None` for any other command.
pub(crate) fn decide(kv: &impl Kv, origin: &Origin, body: &CommandBody) -> Option<Result<Decision, Rejection>> {
    let me = origin.user;
    let done = |event| Ok(Decision { events: vec![event], outcome: Outcome::Done });
    match body {
        CommandBody::SetPushToken { token, platform } => Some((|| {
            let u = head(kv, me)
                .ok_or_else(|| Rejection::new(RejectCode::UnknownUser, format!("user {me} is not registered")))?;
            if !u.devices.contains_key(&origin.device) {
                return Err(Rejection::new(RejectCode::Invalid, format!("device {} is not linked", origin.device)));
            }
            done(EventBody::PushTokenSet {
                user: me,
                device: origin.device,
                token: token.clone(),
                platform: platform.clone(),
            })
        })()),
        CommandBody::FileReport { reported, chat, reason, messages } => Some((|| {
            if *reported == me {
                return Err(Rejection::new(RejectCode::Invalid, "a user cannot report themself"));
            }
            if head(kv, *reported).is_none() {
                return Err(Rejection::new(RejectCode::UnknownUser, format!("no user {reported}")));
            }
            done(EventBody::ReportFiled {
                user: *reported,
                chat: *chat,
                reason: reason.clone(),
                messages: messages.clone(),
            })
        })()),
        _ => None,
    }
}

/// Whether `event` is a push or report event (they change no partition state).
pub(crate) fn is_stateless(event: &EventBody) -> bool {
    matches!(event, EventBody::PushTokenSet { .. } | EventBody::ReportFiled { .. })
}
