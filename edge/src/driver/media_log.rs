//! Media uploads recorded in the log (issue 14): a completed (or
//! deduplicated) upload appends `RecordMedia` to the uploader's partition,
//! which commits `MediaUploaded`; the `media` view folds it (the grace
//! period before garbage collection starts there).

use chorus_schema::edge::CLIENT_MSG_ID_RESERVED_BIT;
use chorus_schema::{ClientMsgId, Command, CommandBody, DeviceId, EdgeErrorCode, Origin, UserId};
use rand::RngCore;

use super::Ctx;
use crate::media::upload::Refusal;

/// Tries of an append whose outcome is unknown (the same `client_msg_id`:
/// the log deduplicates it).
const ATTEMPTS: u32 = 3;

/// Records that `user` (on `device`) uploaded `blake3`.
///
/// # Errors
/// `Unavailable` when the log does not take it (the object is stored; the
/// client retries the upload, which completes at once and records it again).
pub(super) async fn uploaded(
    ctx: &Ctx,
    user: UserId,
    device: DeviceId,
    blake3: [u8; 32],
    size: u64,
) -> Result<(), Refusal> {
    let client_msg_id = ClientMsgId(rand::rngs::OsRng.next_u64() | CLIENT_MSG_ID_RESERVED_BIT);
    let command =
        Command { origin: Origin { user, device, client_msg_id }, body: CommandBody::RecordMedia { blake3, size } };
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        match ctx.log.append(&command).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(r)) => {
                return Err(Refusal::new(
                    EdgeErrorCode::Internal,
                    format!("the log refused the upload's record: {}", r.message),
                ))
            }
            Err(e) => {
                last = e.to_string();
                tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt + 1))).await;
            }
        }
    }
    Err(Refusal::new(EdgeErrorCode::Unavailable, format!("recording the upload: {last}")))
}
