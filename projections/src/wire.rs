//! What the projector puts on the bus: deliveries, receipt changes, and the
//! view queries it answers (requests and replies).
//!
//! # Encoding
//! Every payload is one of the serde types below, encoded with bincode 1
//! (fixed-size little-endian integers, no trailing bytes) through [`encode`]
//! and decoded through [`decode`] with a size limit, so a malformed or
//! oversized payload is an error and never a panic or a large allocation.
//! **These types move to flatbuffers in `schema/` later** (with the verifier,
//! like every other frame of chorus); until then edges must use this module's
//! [`encode`]/[`decode`] and the same crate version as the projector.
//!
//! # Subjects
//! | subject | payload | direction |
//! | --- | --- | --- |
//! | `chorus.deliver.<chat hex>` | [`Delivery`] | projector → edges, once per timeline item |
//! | `chorus.receipt.<sender user>` | [`ReceiptUpdate`] | projector → edges holding the sender's devices |
//! | `chorus.account.<user>` | [`AccountUpdate`] | projector → edges holding the user's devices (device linked, unlinked, logged out) |
//! | `chorus.view.chat_list` | [`ChatListRequest`] → [`Reply<ChatListPage>`] | request/reply, queue group `projectors` |
//! | `chorus.view.cursors` | [`CursorsRequest`] → [`Reply<CursorsPage>`] | request/reply, queue group `projectors` |
//! | `chorus.view.receipt_status` | [`ReceiptStatusRequest`] → [`Reply<Ticks>`] | request/reply, queue group `projectors` |
//! | `chorus.view.session` | [`SessionRequest`] → [`Reply<SessionInfo>`] | request/reply, queue group `projectors` |
//! | `chorus.view.user` | [`UserRequest`] → [`Reply<UserInfo>`] | request/reply, queue group `projectors` |
//! | `chorus.view.inbox` | [`InboxRequest`] → [`Reply<InboxPage>`] | request/reply, queue group `projectors` |
//!
//! # Delivery semantics
//! Effects are published after the transaction that produced them has
//! committed, at least once while the projector runs; after a crash the last
//! batch's effects may be published again (the batch is re-folded and its
//! commit was lost) or not at all (the commit survived, the publish did not).
//! A subscriber that starts late, disconnects or lags misses messages too. The
//! log and the projector's views are the truth: an edge that sees a seq gap
//! in a chat, or a duplicate, reads the log or the views; it must dedup by
//! `(chat, seq)`.

use bincode::Options;
use chorus_schema::{ChatId, DeviceId, PartitionId, Seq, UserId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::fold::chat_list;
use crate::fold::receipt_status::{Status, Ticks};

/// The subject prefix of deliveries: `chorus.deliver.<chat hex>`.
pub const DELIVER_PREFIX: &str = "chorus.deliver";
/// The subject prefix of receipt changes: `chorus.receipt.<sender user id>`.
pub const RECEIPT_PREFIX: &str = "chorus.receipt";
/// The subject prefix of account updates: `chorus.account.<user id>`.
pub const ACCOUNT_PREFIX: &str = "chorus.account";
/// Request/reply subject of [`ChatListRequest`].
pub const VIEW_CHAT_LIST: &str = "chorus.view.chat_list";
/// Request/reply subject of [`CursorsRequest`].
pub const VIEW_CURSORS: &str = "chorus.view.cursors";
/// Request/reply subject of [`ReceiptStatusRequest`].
pub const VIEW_RECEIPT_STATUS: &str = "chorus.view.receipt_status";
/// Request/reply subject of [`SessionRequest`].
pub const VIEW_SESSION: &str = "chorus.view.session";
/// Request/reply subject of [`UserRequest`].
pub const VIEW_USER: &str = "chorus.view.user";
/// Request/reply subject of [`InboxRequest`].
pub const VIEW_INBOX: &str = "chorus.view.inbox";
/// The queue group every projector serves view queries in.
pub const QUEUE_GROUP: &str = "projectors";

/// The largest request a projector decodes.
pub const REQUEST_BYTES_MAX: u64 = 1024;
/// The largest reply or published payload decoded by [`decode`] with
/// [`PAYLOAD_BYTES_MAX`] (the bus's own limit).
pub const PAYLOAD_BYTES_MAX: u64 = chorus_bus::PAYLOAD_BYTES_MAX as u64;
/// The most entries in one page of a view reply; a request asking for more
/// gets this many.
pub const PAGE_ENTRIES_MAX: u32 = 1024;

/// `chorus.deliver.<chat hex>`.
pub fn deliver_subject(chat: &ChatId) -> String {
    format!("{DELIVER_PREFIX}.{chat}")
}

/// `chorus.receipt.<sender>`.
pub fn receipt_subject(sender: UserId) -> String {
    format!("{RECEIPT_PREFIX}.{sender}")
}

/// `chorus.account.<user>`.
pub fn account_subject(user: UserId) -> String {
    format!("{ACCOUNT_PREFIX}.{user}")
}

/// What happened to a device of a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountChange {
    /// A device was linked (registered with the user's number).
    Linked,
    /// A device was unlinked: its connections must close.
    Unlinked,
    /// A device's session was revoked (logout): its connections must close.
    LoggedOut,
}

/// A change to `device` of `user`, committed at `at_ms`. Edges close the
/// connections of an unlinked or logged-out device at once and tell the
/// user's other devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountUpdate {
    pub user: UserId,
    pub device: DeviceId,
    pub change: AccountChange,
    pub at_ms: u64,
}

/// A new timeline item `(chat, seq)` for the devices of `recipients`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub chat: ChatId,
    pub seq: Seq,
    /// Every user whose devices receive the item, sorted. The origin user is
    /// included (their other devices need their own items); an edge skips the
    /// origin *device* (`EventRecord.event.origin`), which has the item already.
    pub recipients: Vec<UserId>,
    /// The committed `EventRecord`, encoded as the log stores it
    /// (`EventRecord::encode`, flatbuffers); decode and verify with
    /// `EventRecord::decode`. Empty when the record is too large for one bus
    /// message ([`Delivery::RECORD_BYTES_MAX`]): read `(chat, seq)` from the log.
    pub record: Vec<u8>,
}

impl Delivery {
    /// The largest record carried inline, leaving room for the recipients
    /// (up to `MAX_GROUP_MEMBERS` × 8 bytes) under the bus payload limit.
    pub const RECORD_BYTES_MAX: usize = chorus_bus::PAYLOAD_BYTES_MAX - 64 * 1024;
}

/// Every message of `sender` in `chat` up to `up_to_seq` now has at least
/// `status` (see [`crate::fold::receipt_status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptUpdate {
    pub chat: ChatId,
    pub sender: UserId,
    pub up_to_seq: Seq,
    pub status: Status,
}

/// A page of `user`'s chat list: chats after `after` (all from the start if
/// `None`), in chat id order, at most `limit` (capped at [`PAGE_ENTRIES_MAX`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatListRequest {
    pub user: UserId,
    pub after: Option<ChatId>,
    pub limit: u32,
}

/// One chat of a chat list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatListItem {
    pub chat: ChatId,
    pub entry: chat_list::Entry,
}

/// A page of a chat list; `more` when chats follow the last one (ask again
/// with `after` = its chat).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatListPage {
    pub entries: Vec<ChatListItem>,
    pub more: bool,
}

/// The delivered and read cursors of one device of `user` in each chat of
/// their chat list, paged like [`ChatListRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorsRequest {
    pub user: UserId,
    pub device: DeviceId,
    pub after: Option<ChatId>,
    pub limit: u32,
}

/// One device's cursors in one chat, with the last seq the user sees there:
/// sync streams `(delivered, last_seq]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatCursors {
    pub chat: ChatId,
    pub last_seq: Seq,
    pub delivered: Seq,
    pub read: Seq,
}

/// A page of per-chat cursors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorsPage {
    pub entries: Vec<ChatCursors>,
    pub more: bool,
}

/// The ticks of `sender`'s messages in `chat` (a message at seq `s` is
/// `ticks.status(s)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptStatusRequest {
    pub chat: ChatId,
    pub sender: UserId,
}

/// The live session of one device: `token_hash` is the BLAKE3 hash of its
/// login token (the last `SessionCreated` of the device), `None` if it has
/// none (never created, revoked, or the device was unlinked).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRequest {
    pub user: UserId,
    pub device: DeviceId,
}

/// The answer to [`SessionRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub token_hash: Option<[u8; 32]>,
}

/// Is `user` registered, and with which linked devices?
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRequest {
    pub user: UserId,
}

/// The answer to [`UserRequest`]: `registered` once `UserRegistered` was
/// folded; the devices linked and not unlinked, in id order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub registered: bool,
    pub devices: Vec<DeviceId>,
}

/// The timeline items of `chat` that `user` receives (the recipients of each
/// item's [`Delivery`]), with seq > `after`, in seq order, at most `limit`
/// (capped at [`PAGE_ENTRIES_MAX`]). Sync and gap filling read these items'
/// records from the log at the given offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxRequest {
    pub user: UserId,
    pub chat: ChatId,
    pub after: Seq,
    pub limit: u32,
}

/// One item of an inbox: its seq, and the offset of its `EventRecord` in the
/// chat's partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxItem {
    pub seq: Seq,
    pub offset: u64,
}

/// A page of an inbox; `more` when items follow the last one (ask again with
/// `after` = its seq). `partition` is the chat's partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxPage {
    pub partition: PartitionId,
    pub entries: Vec<InboxItem>,
    pub more: bool,
}

/// Why a view query failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request did not decode (or was too large): do not retry as is.
    BadRequest,
    /// The projector's store failed: retryable, perhaps on another projector.
    Unavailable,
}

/// A view query's error reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ViewError {
    pub code: ErrorCode,
    pub message: String,
}

/// Every view reply: the answer or an error.
pub type Reply<T> = Result<T, ViewError>;

/// A payload that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("payload does not decode: {0}")]
pub struct DecodeError(#[from] bincode::Error);

fn options(limit: u64) -> impl Options {
    bincode::DefaultOptions::new().with_fixint_encoding().reject_trailing_bytes().with_limit(limit)
}

/// Encodes a payload.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of integers, ids, byte vectors and strings always serialize.
    options(u64::MAX).serialize(value).expect("bincode serialization of a bus payload")
}

/// Decodes a payload of at most `limit` bytes.
///
/// # Errors
/// [`DecodeError`] for anything malformed, trailing, or over `limit`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: u64) -> Result<T, DecodeError> {
    if bytes.len() as u64 > limit {
        return Err(DecodeError(Box::new(bincode::ErrorKind::SizeLimit)));
    }
    Ok(options(limit).deserialize(bytes)?)
}

/// Decodes a request (at most [`REQUEST_BYTES_MAX`]).
///
/// # Errors
/// As [`decode`].
pub fn decode_request<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    decode(bytes, REQUEST_BYTES_MAX)
}

/// Decodes a reply or a published payload (at most [`PAYLOAD_BYTES_MAX`]).
///
/// # Errors
/// As [`decode`].
pub fn decode_payload<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    decode(bytes, PAYLOAD_BYTES_MAX)
}

/// Just the ticks, for [`Reply<Ticks>`].
pub type ReceiptStatusReply = Reply<Ticks>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let d = Delivery { chat: ChatId([9; 16]), seq: Seq(3), recipients: vec![UserId(1)], record: vec![1, 2, 3] };
        assert_eq!(decode_payload::<Delivery>(&encode(&d)).unwrap(), d);
        let r = CursorsRequest { user: UserId(1), device: DeviceId(2), after: None, limit: 10 };
        let mut bytes = encode(&r);
        assert_eq!(decode_request::<CursorsRequest>(&bytes).unwrap(), r);
        bytes.push(0);
        assert!(decode_request::<CursorsRequest>(&bytes).is_err(), "trailing bytes");
        assert!(decode_request::<CursorsRequest>(&[0xff; 3]).is_err());
        // A length prefix claiming 2^60 recipients fails without allocating.
        let mut huge = encode(&ChatId([0; 16]));
        huge.extend_from_slice(&5u64.to_le_bytes());
        huge.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(decode_payload::<Delivery>(&huge).is_err());
        assert!(decode_request::<ChatListRequest>(&vec![0; 4096]).is_err(), "over the request limit");
        assert_eq!(deliver_subject(&ChatId([0xab; 16])), format!("chorus.deliver.{}", "ab".repeat(16)));
        assert_eq!(receipt_subject(UserId(42)), "chorus.receipt.42");
    }
}
