//! Media uploads recorded in the log (issue 14).

use chorus_schema::UserId;

use super::Ctx;
use crate::media::upload::Refusal;

/// Records that `user` uploaded (or re-uploaded) `blake3`.
pub(super) async fn uploaded(_ctx: &Ctx, _user: UserId, _blake3: [u8; 32], _size: u64) -> Result<(), Refusal> {
    Ok(())
}
