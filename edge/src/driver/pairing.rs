//! Linked devices (issue 12): pairing codes across edges.
//!
//! A new device asks its edge for a pairing code; that edge subscribes to
//! `chorus.pair.<BLAKE3 of the code>` (the code itself never leaves the
//! edge and the client) for the code's lifetime, and shows the client the
//! code only once the subscription is in place. A logged-in device sends
//! the code to its own edge, which requests on that subject
//! ([`chorus_schema::bus::PairClaim`]): nobody subscribes to a wrong, used
//! or expired code, so the bus answers "no responders" at once. The waiting
//! edge takes the **first** claim only (then drops its subscription, and its
//! session refuses any other), appends the link with the new device's
//! session to the user's partition (where the device limit is enforced),
//! and answers the claim with the edge frame the linking device gets
//! (`Done` or `Error`).

use std::time::Duration;

use bytes::Bytes;
use chorus_schema::bus::{subject, DevicesRequest, PairClaim};
use chorus_schema::{ClientMsgId, EdgeErrorCode, ServerFrame, UserId};
use tracing::debug;

use super::mailbox::Mailbox;
use super::{Ctx, Input};
use crate::session::ClaimError;
use std::sync::Arc;

/// Waits for the first well-formed claim of `code_hash` for `ttl_ms`,
/// telling the connection when claims can arrive (`PairingReady`) and
/// handing it the claim (`PairClaimed`). A claim that reaches a connection
/// that is gone is refused here.
pub(super) async fn await_claims(ctx: Arc<Ctx>, to: Arc<Mailbox>, code_hash: [u8; 32], ttl_ms: u64) {
    let subject = subject::pair(&code_hash);
    let mut sub = match ctx.bus.subscribe(&subject).await {
        Ok(sub) => sub,
        Err(e) => {
            debug!(error = %e, "pairing subscription failed");
            let _ = to.put(Input::PairingReady(false)).await;
            return;
        }
    };
    if to.put(Input::PairingReady(true)).await.is_err() {
        return;
    }
    let deadline = tokio::time::sleep(Duration::from_millis(ttl_ms));
    tokio::pin!(deadline);
    loop {
        let msg = tokio::select! {
            m = sub.next() => m,
            () = &mut deadline => {
                let _ = to.put(Input::PairingExpired).await;
                return;
            }
        };
        let Some(msg) = msg else { return };
        let claim = match PairClaim::decode(&msg.payload) {
            Ok(c) => c,
            Err(e) => {
                let frame = error_frame(EdgeErrorCode::BadFrame, format!("pair claim: {e}"), None);
                let _ = ctx.bus.respond(&msg, Bytes::from(frame.encode())).await;
                continue;
            }
        };
        let cmid = claim.client_msg_id;
        if to.put(Input::PairClaimed(claim, msg.clone())).await.is_err() {
            let frame = error_frame(EdgeErrorCode::BadPairingCode, "the new device disconnected".into(), Some(cmid));
            let _ = ctx.bus.respond(&msg, Bytes::from(frame.encode())).await;
        }
        // Single use: the first claim is the connection's to answer.
        return;
    }
}

/// Claims a pairing code for a logged-in device; the answer is the frame
/// the waiting edge sent back.
pub(super) async fn claim(ctx: &Ctx, code_hash: [u8; 32], claim: PairClaim) -> Result<ServerFrame, ClaimError> {
    // The waiting edge appends before it answers.
    let timeout = Duration::from_millis(ctx.config.append_deadline_ms.saturating_add(2_000));
    let payload = Bytes::from(claim.encode());
    match ctx.bus.request(&subject::pair(&code_hash), payload, timeout).await {
        Ok(reply) => ServerFrame::decode(&reply).map_err(|e| ClaimError::Unavailable(format!("bad answer: {e}"))),
        Err(chorus_bus::Error::NoResponders { .. }) => Err(ClaimError::NoDevice),
        Err(e) => Err(ClaimError::Unavailable(e.to_string())),
    }
}

/// Answers a claim with `frame` (best effort: the claimant times out otherwise).
pub(super) async fn answer(ctx: &Ctx, msg: &chorus_bus::Message, frame: &ServerFrame) {
    if let Err(e) = ctx.bus.respond(msg, Bytes::from(frame.encode())).await {
        debug!(error = %e, "pair claim answer failed");
    }
}

/// The user's devices from the devices view; `None` if it did not answer.
pub(super) async fn list(ctx: &Ctx, user: UserId) -> Option<Vec<chorus_schema::edge::DeviceInfo>> {
    match super::views::query(ctx, DevicesRequest { user }).await {
        Ok(devices) => Some(devices),
        Err(e) => {
            debug!(error = %e, "devices view");
            None
        }
    }
}

fn error_frame(code: EdgeErrorCode, message: String, client_msg_id: Option<ClientMsgId>) -> ServerFrame {
    ServerFrame::Error { code, message, client_msg_id, retry_after_ms: None }
}
