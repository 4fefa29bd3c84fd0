//! The edge's reads: view queries over the bus (sessions, users, cursors,
//! inboxes) and records from the log. Sync and gap fill are built here.

use std::collections::HashMap;
use std::time::Duration;

use super::mailbox::Mailbox;
use super::{Ctx, Input};
use crate::session::{RecipientVerdict, TokenVerdict};
use bytes::Bytes;
use chorus_projections::seal;
use chorus_schema::bus::{
    self, ChatCursors, CursorsPage, CursorsRequest, InboxItem, InboxPage, InboxRequest, Query, SessionInfo,
    SessionRequest, UserInfo, UserRequest, ViewQuery,
};
use chorus_schema::{ChatId, DeviceId, EventRecord, Offset, PartitionId, Seq, UserId, MAX_VIEW_PAGE_ENTRIES};

use crate::session::Item;

/// The page size the edge asks for: the cap.
const PAGE: u32 = 1024;
const _: () = assert!(PAGE as usize == MAX_VIEW_PAGE_ENTRIES);

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("view query {subject}: {reason}")]
    View { subject: &'static str, reason: String },
    #[error("log read: {0}")]
    Log(#[from] chorus_log_node::client::Error),
    #[error("log read: offset {offset} of partition {partition} not found")]
    Missing { partition: PartitionId, offset: Offset },
    #[error("connection gone")]
    Gone,
    /// A view reply named a partition that cannot hold the chat (a forged
    /// or corrupt reply): nothing is read from it.
    #[error("inbox page of chat {chat} names partition {named}, the chat is in {expected}")]
    WrongPartition { chat: ChatId, named: PartitionId, expected: PartitionId },
}

/// The partition an inbox page of `chat` may name: the chat's own, of the
/// `partitions` the log has. A bus reply is peer data: checked before the
/// log client is asked for the partition (which it would index with).
fn checked_partition(chat: ChatId, named: PartitionId, partitions: u16) -> Result<PartitionId, ReadError> {
    let expected = PartitionId::for_key(&chorus_schema::Key::Chat(chat), partitions);
    if named != expected {
        return Err(ReadError::WrongPartition { chat, named, expected });
    }
    Ok(expected)
}

/// One view query: sealed with a fresh nonce, and answered only by a reply
/// sealed with the view key for this very request (see
/// `chorus_projections::seal`): what the bus alone says is not trusted.
pub(crate) async fn query<Q: Query>(ctx: &Ctx, request: Q) -> Result<Q::Answer, ReadError> {
    let request: ViewQuery = request.into();
    let subject = request.subject();
    let err = |reason: String| ReadError::View { subject, reason };
    let sealed = Bytes::from(seal::seal_request(&request.encode()));
    let reply =
        ctx.bus.request(subject, sealed.clone(), ctx.config.view_timeout()).await.map_err(|e| err(e.to_string()))?;
    let answer = ctx.view_key.open_reply(subject, &sealed, &reply).map_err(|e| {
        tracing::warn!(subject, error = %e, "view reply refused");
        err(e.to_string())
    })?;
    let answer = bus::decode_reply(answer).map_err(|e| err(e.to_string()))?.map_err(|e| err(e.to_string()))?;
    Q::answer(answer).ok_or_else(|| err("an answer of another view".into()))
}

/// Any view query, answered with whatever the view said (the session checks
/// the kind).
pub(crate) async fn any_query(ctx: &Ctx, request: ViewQuery) -> Result<bus::ViewAnswer, ReadError> {
    let subject = request.subject();
    let err = |reason: String| ReadError::View { subject, reason };
    let sealed = Bytes::from(seal::seal_request(&request.encode()));
    let reply =
        ctx.bus.request(subject, sealed.clone(), ctx.config.view_timeout()).await.map_err(|e| err(e.to_string()))?;
    let answer = ctx.view_key.open_reply(subject, &sealed, &reply).map_err(|e| err(e.to_string()))?;
    bus::decode_reply(answer).map_err(|e| err(e.to_string()))?.map_err(|e| err(e.to_string()))
}

/// Checks a login token against the sessions view. A device without a session
/// may be one that registered a moment ago on another edge whose
/// `CreateSession` the projector has not folded yet: asked again a few times.
pub(crate) async fn verify_token(ctx: &Ctx, user: UserId, device: DeviceId, hash: [u8; 32]) -> TokenVerdict {
    for attempt in 0..5 {
        match query(ctx, SessionRequest { user, device }).await {
            // blake3::Hash compares in constant time.
            Ok(SessionInfo { token_hash: Some(h) }) => {
                return if blake3::Hash::from(h) == blake3::Hash::from(hash) {
                    TokenVerdict::Valid
                } else {
                    TokenVerdict::Invalid
                };
            }
            Ok(SessionInfo { token_hash: None }) if attempt < 4 => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(SessionInfo { token_hash: None }) => return TokenVerdict::Invalid,
            Err(e) => {
                tracing::debug!(error = %e, "token check failed");
                return TokenVerdict::Unavailable;
            }
        }
    }
    TokenVerdict::Invalid
}

/// Whether `user` is registered (positive answers are cached: users are not
/// deleted). `Err` when the view cannot say.
pub(crate) async fn user_exists(ctx: &Ctx, user: UserId) -> Result<bool, ReadError> {
    if crate::lock(&ctx.known_users).contains(&user) {
        return Ok(true);
    }
    let info: UserInfo = query(ctx, UserRequest { user }).await?;
    if info.registered {
        let mut known = crate::lock(&ctx.known_users);
        if known.len() >= KNOWN_USERS_MAX {
            known.clear();
        }
        known.insert(user);
    }
    Ok(info.registered)
}

const KNOWN_USERS_MAX: usize = 1 << 20;

/// Queries of the users view in flight at once for one [`users_exist`].
const USER_CHECKS_IN_FLIGHT: usize = 32;

/// Whether every one of `users` is registered: `Unknown` names the first
/// unknown one (in `users`' order), `Unavailable` if the view could not say
/// for one of them. Asks up to [`USER_CHECKS_IN_FLIGHT`] at once.
pub(crate) async fn users_exist(ctx: &std::sync::Arc<Ctx>, users: Vec<UserId>) -> RecipientVerdict {
    for chunk in users.chunks(USER_CHECKS_IN_FLIGHT) {
        let mut checks = tokio::task::JoinSet::new();
        for (i, user) in chunk.iter().copied().enumerate() {
            let ctx = ctx.clone();
            checks.spawn(async move { (i, user, user_exists(&ctx, user).await) });
        }
        let mut unknown: Option<(usize, UserId)> = None;
        let mut unavailable = false;
        while let Some(done) = checks.join_next().await {
            match done {
                Ok((_, _, Ok(true))) => {}
                Ok((i, user, Ok(false))) => {
                    if unknown.is_none_or(|(j, _)| i < j) {
                        unknown = Some((i, user));
                    }
                }
                Ok((_, user, Err(e))) => {
                    tracing::debug!(%user, error = %e, "user check");
                    unavailable = true;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "user check task");
                    unavailable = true;
                }
            }
        }
        if let Some((_, user)) = unknown {
            return RecipientVerdict::Unknown(user);
        }
        if unavailable {
            return RecipientVerdict::Unavailable;
        }
    }
    RecipientVerdict::Registered
}

/// Every chat of the user (as the cursors view lists them for `device`).
pub(crate) async fn chats_of(ctx: &Ctx, user: UserId, device: DeviceId) -> Result<Vec<ChatId>, ReadError> {
    Ok(all_cursors(ctx, user, device).await?.into_iter().map(|c| c.chat).collect())
}

/// Every chat of the device's user with its cursors, all pages.
async fn all_cursors(ctx: &Ctx, user: UserId, device: DeviceId) -> Result<Vec<ChatCursors>, ReadError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page: CursorsPage = query(ctx, CursorsRequest { user, device, after, limit: PAGE }).await?;
        after = page.entries.last().map(|c| c.chat);
        out.extend(page.entries);
        if !page.more || after.is_none() {
            return Ok(out);
        }
    }
}

/// The sync of one connection: every chat's items after the client's position
/// (or from the start), then the list of chats with their last seqs.
pub(crate) async fn sync(
    ctx: &Ctx,
    user: UserId,
    device: DeviceId,
    since: Vec<(ChatId, Seq)>,
    to: &Mailbox,
) -> Result<(), ReadError> {
    let since: HashMap<ChatId, Seq> = since.into_iter().collect();
    let chats = all_cursors(ctx, user, device).await?;
    let mut with_news = 0u32;
    for c in &chats {
        let from = since.get(&c.chat).copied().unwrap_or(Seq(0));
        if from < c.last_seq {
            with_news += 1;
            recover(ctx, user, c.chat, from, c.last_seq, to).await?;
        }
    }
    let positions = chats.iter().map(|c| (c.chat, c.last_seq)).collect();
    to.put(Input::SyncDone { positions, with_news }).await.map_err(|_| ReadError::Gone)
}

/// Streams the items of `chat` that `user` receives in `(after, until]` to the
/// connection, in seq order: their offsets from the inbox view, their records
/// from the log.
pub(crate) async fn recover(
    ctx: &Ctx,
    user: UserId,
    chat: ChatId,
    after: Seq,
    until: Seq,
    to: &Mailbox,
) -> Result<(), ReadError> {
    let mut after = after;
    while after < until {
        let page: InboxPage = query(ctx, InboxRequest { user, chat, after, limit: PAGE }).await?;
        let items: Vec<InboxItem> = page.entries.iter().copied().filter(|i| i.seq <= until).collect();
        let Some(last) = page.entries.last() else { return Ok(()) };
        after = last.seq;
        let partition = checked_partition(chat, page.partition, ctx.log.partitions())?;
        for record in read_offsets(ctx, partition, &items).await? {
            to.put(Input::Recovered(Item::new(record))).await.map_err(|_| ReadError::Gone)?;
        }
        if !page.more {
            return Ok(());
        }
    }
    Ok(())
}

/// The records at `items`' offsets (ascending), reading spans of the partition.
async fn read_offsets(ctx: &Ctx, partition: PartitionId, items: &[InboxItem]) -> Result<Vec<EventRecord>, ReadError> {
    const SPAN_MAX: u64 = 1024;
    let mut out = Vec::with_capacity(items.len());
    let last = items.last().map_or(Offset(0), |it| it.offset);
    // The items not read yet.
    let mut rest = items;
    let mut empty_reads = 0;
    while let Some(first) = rest.first() {
        let from = first.offset;
        let span = last.0.saturating_sub(from.0).saturating_add(1).min(SPAN_MAX);
        let (records, _next) = ctx.log.read(partition, from, span as u32).await?;
        if records.is_empty() {
            // The replica read has not applied it yet: the leader has, soon.
            empty_reads += 1;
            if empty_reads > 20 {
                return Err(ReadError::Missing { partition, offset: from });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            ctx.log.refresh_leaders().await;
            continue;
        }
        let top = records.last().map_or(from, |r| r.offset);
        for r in records {
            match rest.split_first() {
                Some((it, tail)) if r.offset == it.offset => {
                    out.push(r);
                    rest = tail;
                }
                _ => {}
            }
        }
        // Offsets the span covered but did not return do not exist: a bug.
        if let Some(it) = rest.first().filter(|it| it.offset <= top) {
            return Err(ReadError::Missing { partition, offset: it.offset });
        }
    }
    Ok(out)
}

// ---- group info and message info (issue 12) ----

/// Asks the views for a group's info or a message's info.
pub(crate) async fn info(ctx: &Ctx, request: crate::session::InfoRequest) -> crate::session::InfoAnswer {
    use crate::session::{InfoAnswer, InfoRequest};
    let answer = match request {
        InfoRequest::Group(q) => query(ctx, q).await.map(InfoAnswer::Group),
        InfoRequest::Message(q) => query(ctx, q).await.map(InfoAnswer::Message),
    };
    answer.unwrap_or_else(|e| {
        tracing::debug!(error = %e, "info query failed");
        InfoAnswer::Unavailable(e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use chorus_schema::{ChatId, PartitionId, UserId};

    use super::*;

    #[test]
    fn an_inbox_page_naming_another_partition_is_an_error_not_a_read() {
        let chat = ChatId::direct(UserId(1), UserId(2));
        let own = PartitionId::for_key(&chorus_schema::Key::Chat(chat), 64);
        assert_eq!(checked_partition(chat, own, 64).unwrap(), own);
        // Forged replies: a partition the log does not have, and another one.
        for named in [PartitionId(60_000), PartitionId(u16::MAX), PartitionId((own.0 + 1) % 64)] {
            let e = checked_partition(chat, named, 64).unwrap_err();
            assert!(matches!(e, ReadError::WrongPartition { .. }), "{e}");
        }
    }
}
