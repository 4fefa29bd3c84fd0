//! Push tokens and abuse reports (issue 14): the shared types, limits and
//! codec helpers of `SetPushToken`/`PushTokenSet`/`RegisterPush` and
//! `FileReport`/`ReportFiled`/`Report`.

use flatbuffers::{ForwardsUOffset, Vector, WIPOffset};
use serde::{Deserialize, Serialize};

use crate::codec::Builder;
use crate::error::check_len;
use crate::fb;
use crate::ids::{Seq, UserId};
use crate::Result;

/// A push token (FCM tokens are about 160 bytes, APNs 64 hex digits).
pub const MAX_PUSH_TOKEN_BYTES: usize = 1024;
/// A push platform name (e.g. `fcm`, `apns`).
pub const MAX_PUSH_PLATFORM_BYTES: usize = 32;
/// Messages one report may reveal.
pub const MAX_REPORT_MESSAGES: usize = 10;
/// The plaintext of one revealed message.
pub const MAX_REPORT_TEXT_BYTES: usize = 4096;
/// A report's free-text reason.
pub const MAX_REPORT_REASON_BYTES: usize = 512;

/// A message a reporter chose to reveal: the plaintext it decrypted, with
/// its seq, sender and time in the chat.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReportedMessage {
    pub seq: Seq,
    pub sender: UserId,
    pub at_ms: u64,
    pub text: Vec<u8>,
}

/// Checks a push token and platform.
///
/// # Errors
/// [`crate::Error::TooLarge`] naming the field.
pub fn validate_push(token: &str, platform: &str) -> Result<()> {
    check_len("push token", token.len(), MAX_PUSH_TOKEN_BYTES)?;
    check_len("push platform", platform.len(), MAX_PUSH_PLATFORM_BYTES)
}

/// Checks a report's reason and messages.
///
/// # Errors
/// [`crate::Error::TooLarge`] naming the field.
pub fn validate_report(reason: &str, messages: &[ReportedMessage]) -> Result<()> {
    check_len("report reason", reason.len(), MAX_REPORT_REASON_BYTES)?;
    check_len("reported messages", messages.len(), MAX_REPORT_MESSAGES)?;
    messages.iter().try_for_each(|m| check_len("reported message text", m.text.len(), MAX_REPORT_TEXT_BYTES))
}

pub(crate) fn messages_fb<'a>(
    fbb: &mut Builder<'a>,
    messages: &[ReportedMessage],
) -> WIPOffset<Vector<'a, ForwardsUOffset<fb::ReportedMessage<'a>>>> {
    let items: Vec<_> = messages
        .iter()
        .map(|m| {
            let text = fbb.create_vector(&m.text);
            fb::ReportedMessage::create(
                fbb,
                &fb::ReportedMessageArgs { seq: m.seq.0, sender: m.sender.0, at_ms: m.at_ms, text: Some(text) },
            )
        })
        .collect();
    fbb.create_vector(&items)
}

/// The messages of a verified vector, checked against the count limit first
/// (so a huge vector is refused before it is copied).
pub(crate) fn messages_of(
    v: Option<Vector<'_, ForwardsUOffset<fb::ReportedMessage<'_>>>>,
) -> Result<Vec<ReportedMessage>> {
    let Some(v) = v else { return Ok(Vec::new()) };
    check_len("reported messages", v.len(), MAX_REPORT_MESSAGES)?;
    Ok(v.iter()
        .map(|m| ReportedMessage {
            seq: Seq(m.seq()),
            sender: UserId(m.sender()),
            at_ms: m.at_ms(),
            text: m.text().bytes().to_vec(),
        })
        .collect())
}
