//! Typing signals: checked against the chat's members, then published once
//! on `chorus.typing.<chat>` for the chat's other members; never logged.
//!
//! The members come from the members view (`MembersRequest`, answered from
//! the roster), cached per chat for [`MEMBERS_TTL`]: a typing burst costs one
//! query per chat per TTL, and a member removed within the TTL may still be
//! heard typing for that long (typing carries no content). A refusal is
//! never taken from the cache (it asks again first), so a member who just
//! joined is not refused. Receiving edges
//! route the signal to the recipients' connections like a delivery
//! (`chorus.typing.>`, see the router). Expiry is the receiver's: a typing
//! indicator lapses [`chorus_schema::edge::TYPING_EXPIRY_MS`] after its last
//! refresh in the SDK, so a sender that vanishes needs no stop from anyone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_schema::bus::{subject, Members, MembersRequest, TypingSignal};
use chorus_schema::{ChatId, UserId};

use super::views::ReadError;
use super::Ctx;
use crate::session::Identity;

/// How long a chat's members are cached for typing.
pub(crate) const MEMBERS_TTL: Duration = Duration::from_secs(2);
/// Chats cached at most (expired ones are dropped past this).
const CACHED_CHATS_MAX: usize = 65_536;

/// Members of chats, briefly (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct MembersCache {
    chats: Mutex<HashMap<ChatId, (Instant, Arc<Members>)>>,
}

/// Why a typing signal was not relayed.
#[derive(Debug)]
pub(crate) enum Refused {
    NotMember,
    Unavailable(ReadError),
}

impl MembersCache {
    /// The members of `chat`, from the cache if `cached` and fresh.
    async fn get(&self, ctx: &Ctx, chat: ChatId, cached: bool) -> Result<Arc<Members>, ReadError> {
        let now = Instant::now();
        if let Some((at, m)) = crate::lock(&self.chats).get(&chat).filter(|_| cached) {
            if now.duration_since(*at) < MEMBERS_TTL {
                return Ok(m.clone());
            }
        }
        let members = Arc::new(super::views::query(ctx, MembersRequest { chat }).await?);
        let mut chats = crate::lock(&self.chats);
        if chats.len() >= CACHED_CHATS_MAX {
            chats.retain(|_, (at, _)| now.duration_since(*at) < MEMBERS_TTL);
            if chats.len() >= CACHED_CHATS_MAX {
                chats.clear();
            }
        }
        chats.insert(chat, (now, members.clone()));
        Ok(members)
    }
}

/// Publishes `identity.user`'s typing in `chat` for its other members.
pub(crate) async fn relay(ctx: &Ctx, identity: Identity, chat: ChatId, typing: bool) -> Result<(), Refused> {
    let is_member = |m: &Members| m.known && m.members.binary_search(&identity.user).is_ok();
    let mut members = ctx.members.get(ctx, chat, true).await.map_err(Refused::Unavailable)?;
    if !is_member(&members) {
        // Only a positive answer is trusted from the cache: a chat created
        // or joined a moment ago must not be refused for 2 s.
        members = ctx.members.get(ctx, chat, false).await.map_err(Refused::Unavailable)?;
        if !is_member(&members) {
            return Err(Refused::NotMember);
        }
    }
    let recipients: Vec<UserId> = members.members.iter().copied().filter(|u| *u != identity.user).collect();
    if recipients.is_empty() {
        return Ok(());
    }
    let signal = TypingSignal { chat, user: identity.user, typing, recipients };
    if let Err(e) = ctx.bus.publish(&subject::typing(&chat), Bytes::from(signal.encode())).await {
        tracing::debug!(%chat, error = %e, "typing not published");
    }
    Ok(())
}
