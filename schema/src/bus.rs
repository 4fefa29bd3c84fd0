//! What the projector puts on the bus (NATS) and the view queries it answers:
//! the subjects, the payloads (flatbuffers, `schema/fbs/bus.fbs`) and the view
//! values they carry.
//!
//! # Subjects
//! | subject | payload | direction |
//! | --- | --- | --- |
//! | `chorus.deliver.<chat hex>` | [`Delivery`] | projector → edges, once per timeline item |
//! | `chorus.receipt.<sender user>` | [`ReceiptUpdate`] | projector → edges holding the sender's devices |
//! | `chorus.account.<user>` | [`AccountUpdate`] | projector → edges holding the user's devices |
//! | `chorus.view.<view>` ([`ViewQuery::subject`]) | [`ViewQuery`] → [`ViewReply`] | request/reply, queue group [`subject::QUEUE_GROUP`] |
//!
//! The subjects live here with the payloads, not in the projector's crate: a
//! subject and its payload type are one contract, and every side of it (the
//! projector, the edge, the bus permissions of `chorus bus-config`) already
//! depends on this crate.
//!
//! # Encoding
//! Each payload is one flatbuffer with its own file identifier. Decoding checks
//! the size limit and the identifier, runs the verifier with bounds and then the
//! domain limits, so a malformed or oversized payload is an [`Error`], never a
//! panic or a large allocation. A [`Delivery`] carries the committed
//! `EventRecord` exactly as the log stores it: the projector forwards the
//! bytes it read, and [`Delivery::decode`] hands them back as a slice of the
//! received buffer ([`Bytes`]), not a copy.
//!
//! # Delivery semantics
//! Effects are published after the transaction that produced them has
//! committed, at least once while the projector runs; after a crash the last
//! batch's effects may be published again or not at all, and a subscriber that
//! starts late, disconnects or lags misses messages. The log and the views are
//! the truth: an edge dedups by `(chat, seq)` and fills gaps from them.

use bytes::Bytes;
use flatbuffers::{ForwardsUOffset, Vector, WIPOffset};
use serde::{Deserialize, Serialize};

use crate::codec::{self, Builder};
use crate::edge::DeviceNoticeKind;
use crate::error::check_len;
use crate::fb::bus as fbus;
use crate::ids::{ChatId, DeviceId, Offset, PartitionId, Seq, UserId};
use crate::limits::{
    MAX_BUS_PAYLOAD_BYTES, MAX_EVENT_BYTES, MAX_GROUP_MEMBERS, MAX_MESSAGE_BYTES, MAX_VIEW_PAGE_ENTRIES,
    MAX_VIEW_REQUEST_BYTES,
};
use crate::types::ChatKind;
use crate::{Error, Result};

/// Subject names and the queue group of view queries.
pub mod subject {
    use crate::ids::{ChatId, UserId};

    /// The subject prefix of deliveries: `chorus.deliver.<chat hex>`.
    pub const DELIVER_PREFIX: &str = "chorus.deliver";
    /// The subject prefix of receipt changes: `chorus.receipt.<sender user id>`.
    pub const RECEIPT_PREFIX: &str = "chorus.receipt";
    /// The subject prefix of account updates: `chorus.account.<user id>`.
    pub const ACCOUNT_PREFIX: &str = "chorus.account";
    /// The prefix of every view query subject.
    pub const VIEW_PREFIX: &str = "chorus.view";
    pub const VIEW_CHAT_LIST: &str = "chorus.view.chat_list";
    pub const VIEW_CURSORS: &str = "chorus.view.cursors";
    pub const VIEW_RECEIPT_STATUS: &str = "chorus.view.receipt_status";
    pub const VIEW_SESSION: &str = "chorus.view.session";
    pub const VIEW_USER: &str = "chorus.view.user";
    pub const VIEW_INBOX: &str = "chorus.view.inbox";
    pub const VIEW_PROFILE: &str = "chorus.view.profile";
    pub const VIEW_STATUS: &str = "chorus.view.status";
    pub const VIEW_CONTACT_INDEX: &str = "chorus.view.contact_index";
    /// Every view subject a projector answers.
    pub const VIEWS: [&str; 9] = [
        VIEW_CHAT_LIST,
        VIEW_CURSORS,
        VIEW_RECEIPT_STATUS,
        VIEW_SESSION,
        VIEW_USER,
        VIEW_INBOX,
        VIEW_PROFILE,
        VIEW_STATUS,
        VIEW_CONTACT_INDEX,
    ];
    /// The queue group every projector serves view queries in.
    pub const QUEUE_GROUP: &str = "projectors";

    /// `chorus.deliver.<chat hex>`.
    pub fn deliver(chat: &ChatId) -> String {
        format!("{DELIVER_PREFIX}.{chat}")
    }

    /// `chorus.receipt.<sender>`.
    pub fn receipt(sender: UserId) -> String {
        format!("{RECEIPT_PREFIX}.{sender}")
    }

    /// `chorus.account.<user>`.
    pub fn account(user: UserId) -> String {
        format!("{ACCOUNT_PREFIX}.{user}")
    }
}

const DELIVERY_IDENT: &str = "CBDL";
const RECEIPT_UPDATE_IDENT: &str = "CBRU";
const ACCOUNT_UPDATE_IDENT: &str = "CBAU";
const VIEW_REQUEST_IDENT: &str = "CBVQ";
const VIEW_REPLY_IDENT: &str = "CBVA";

// ---- view values ------------------------------------------------------------------

/// The aggregate tick of one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ReceiptStatus {
    /// Committed to the log (the sender's ack said so); not yet delivered to all.
    Sent,
    /// Every other member has it on a device.
    Delivered,
    /// Every other member has read it.
    Read,
}

/// A sender's watermarks in one chat: seqs of their own messages (0: none yet),
/// with `read <= delivered`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticks {
    pub delivered: Seq,
    pub read: Seq,
}

impl Ticks {
    /// The status of the sender's message at `seq`.
    pub fn status(&self, seq: Seq) -> ReceiptStatus {
        if seq <= self.read {
            ReceiptStatus::Read
        } else if seq <= self.delivered {
            ReceiptStatus::Delivered
        } else {
            ReceiptStatus::Sent
        }
    }
}

/// The newest message of a chat, as a chat list shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRef {
    pub seq: Seq,
    pub sender: UserId,
    pub at_ms: u64,
}

/// One chat in one user's chat list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatListEntry {
    pub kind: ChatKind,
    /// The last timeline item the user sees (sync streams up to here).
    pub last_seq: Seq,
    /// Messages from others after `unread_after`.
    pub unread: u64,
    /// The larger of the user's read cursor and their last join's seq.
    pub unread_after: Seq,
    /// The newest message the user sees, if any.
    pub last_message: Option<MessageRef>,
}

/// One item of an inbox: its seq, and the offset of its `EventRecord` in the
/// chat's partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxItem {
    pub seq: Seq,
    pub offset: Offset,
}

// ---- published payloads -------------------------------------------------------------

/// A new timeline item `(chat, seq)` for the devices of `recipients`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub chat: ChatId,
    pub seq: Seq,
    /// Every user whose devices receive the item, sorted. The origin user is
    /// included (their other devices need the item); an edge skips the origin
    /// *device*, which has the item already.
    pub recipients: Vec<UserId>,
    /// The committed `EventRecord` as the log stores it (decode with
    /// `EventRecord::decode`). From [`Delivery::decode`], a slice of the
    /// payload.
    pub record: Bytes,
}

impl Delivery {
    /// Encodes with file identifier `CBDL`; the record bytes are copied once,
    /// into the payload (which is the builder's buffer, not a copy of it).
    pub fn encode(&self) -> Bytes {
        Delivery::encode_parts(&self.chat, self.seq, &self.recipients, &self.record)
    }

    /// [`Delivery::encode`] from borrowed parts (the projector's record bytes
    /// stay where the log client put them).
    pub fn encode_parts(chat: &ChatId, seq: Seq, recipients: &[UserId], record: &[u8]) -> Bytes {
        let mut fbb = Builder::with_capacity(record.len() + recipients.len() * 8 + 96);
        let record = fbb.create_vector(record);
        let recipients = codec::users_fb(&mut fbb, recipients);
        let chat = codec::chat_fb(chat);
        let root = fbus::Delivery::create(
            &mut fbb,
            &fbus::DeliveryArgs { chat: Some(&chat), seq: seq.0, recipients: Some(recipients), record: Some(record) },
        );
        codec::finish_shared(fbb, root, DELIVERY_IDENT)
    }

    /// Verifies and decodes a payload made by [`Delivery::encode`]; `record` is
    /// a slice of `payload`. The record itself is not verified here (its
    /// reader does, with `EventRecord::decode`).
    ///
    /// # Errors
    /// [`Error::TooLarge`] above [`MAX_BUS_PAYLOAD_BYTES`], more than
    /// [`MAX_GROUP_MEMBERS`] recipients or a record above [`MAX_EVENT_BYTES`];
    /// [`Error::Malformed`] if the verifier refuses it.
    pub fn decode(payload: &Bytes) -> Result<Delivery> {
        let d = codec::root::<fbus::Delivery>(payload, "delivery", DELIVERY_IDENT, MAX_BUS_PAYLOAD_BYTES, 8)?;
        check_len("delivery recipients", d.recipients().len(), MAX_GROUP_MEMBERS)?;
        let record = d.record().bytes();
        check_len("delivery record", record.len(), MAX_EVENT_BYTES)?;
        // The verifier put the vector inside `payload`: slice it, do not copy.
        let start = (record.as_ptr() as usize).wrapping_sub(payload.as_ptr() as usize);
        let end = start.checked_add(record.len()).filter(|end| *end <= payload.len());
        let Some(end) = end else {
            return Err(Error::malformed("delivery", "record outside the payload"));
        };
        Ok(Delivery {
            chat: codec::chat(d.chat()),
            seq: Seq(d.seq()),
            recipients: codec::users(d.recipients()),
            record: payload.slice(start..end),
        })
    }
}

/// Every message of `sender` in `chat` up to `up_to_seq` now has at least
/// `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiptUpdate {
    pub chat: ChatId,
    pub sender: UserId,
    pub up_to_seq: Seq,
    pub status: ReceiptStatus,
}

impl ReceiptUpdate {
    /// Encodes with file identifier `CBRU`.
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = Builder::with_capacity(64);
        let chat = codec::chat_fb(&self.chat);
        let root = fbus::ReceiptUpdate::create(
            &mut fbb,
            &fbus::ReceiptUpdateArgs {
                chat: Some(&chat),
                sender: self.sender.0,
                up_to_seq: self.up_to_seq.0,
                status: status_fb(self.status),
            },
        );
        codec::finish(fbb, root, RECEIPT_UPDATE_IDENT)
    }

    /// Verifies and decodes a payload made by [`ReceiptUpdate::encode`].
    ///
    /// # Errors
    /// [`Error::TooLarge`], [`Error::Malformed`] (also for an unknown status).
    pub fn decode(payload: &[u8]) -> Result<ReceiptUpdate> {
        let r = codec::root::<fbus::ReceiptUpdate>(
            payload,
            "receipt update",
            RECEIPT_UPDATE_IDENT,
            MAX_VIEW_REQUEST_BYTES,
            4,
        )?;
        Ok(ReceiptUpdate {
            chat: codec::chat(r.chat()),
            sender: UserId(r.sender()),
            up_to_seq: Seq(r.up_to_seq()),
            status: status(r.status())?,
        })
    }
}

/// A change to `device` of `user`, committed at `at_ms`. Edges close the
/// connections of an unlinked or logged-out device at once and tell the user's
/// other devices (a `DeviceNotice` frame of the same kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountUpdate {
    pub user: UserId,
    pub device: DeviceId,
    pub change: DeviceNoticeKind,
    pub at_ms: u64,
}

impl AccountUpdate {
    /// Encodes with file identifier `CBAU`.
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = Builder::with_capacity(64);
        let change = crate::edge::device_notice_kind_fb(self.change);
        let root = fbus::AccountUpdate::create(
            &mut fbb,
            &fbus::AccountUpdateArgs { user: self.user.0, device: self.device.0, change, at_ms: self.at_ms },
        );
        codec::finish(fbb, root, ACCOUNT_UPDATE_IDENT)
    }

    /// Verifies and decodes a payload made by [`AccountUpdate::encode`].
    ///
    /// # Errors
    /// [`Error::TooLarge`], [`Error::Malformed`] (also for an unknown change).
    pub fn decode(payload: &[u8]) -> Result<AccountUpdate> {
        let a = codec::root::<fbus::AccountUpdate>(
            payload,
            "account update",
            ACCOUNT_UPDATE_IDENT,
            MAX_VIEW_REQUEST_BYTES,
            4,
        )?;
        let change = crate::edge::device_notice_kind(a.change())?;
        Ok(AccountUpdate { user: UserId(a.user()), device: DeviceId(a.device()), change, at_ms: a.at_ms() })
    }
}

// ---- view queries ---------------------------------------------------------------------

/// A page of `user`'s chat list: chats after `after` (all from the start if
/// `None`), in chat id order, at most `limit` (0 or above the cap:
/// [`MAX_VIEW_PAGE_ENTRIES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatListRequest {
    pub user: UserId,
    pub after: Option<ChatId>,
    pub limit: u32,
}

/// The delivered and read cursors of one device of `user` in each chat of
/// their chat list, paged like [`ChatListRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CursorsRequest {
    pub user: UserId,
    pub device: DeviceId,
    pub after: Option<ChatId>,
    pub limit: u32,
}

/// The ticks of `sender`'s messages in `chat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiptStatusRequest {
    pub chat: ChatId,
    pub sender: UserId,
}

/// The live session of one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionRequest {
    pub user: UserId,
    pub device: DeviceId,
}

/// Is `user` registered, and with which linked devices?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserRequest {
    pub user: UserId,
}

/// The timeline items of `chat` that `user` receives, with seq > `after`, in
/// seq order, at most `limit` (capped like [`ChatListRequest`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InboxRequest {
    pub user: UserId,
    pub chat: ChatId,
    pub after: Seq,
    pub limit: u32,
}

/// `user`'s profile as `viewer` may see it (privacy settings, contacts, blocks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProfileRequest {
    pub viewer: UserId,
    pub user: UserId,
}

/// The status posts `viewer` may see at `now_ms`: of `author`, or (`None`)
/// of every contact of the viewer and the viewer's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRequest {
    pub viewer: UserId,
    pub author: Option<UserId>,
    pub now_ms: u64,
}

/// Which of these contact hashes are registered users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactLookupRequest {
    pub hashes: Vec<[u8; 32]>,
}

/// One view query; each kind has its own subject ([`ViewQuery::subject`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewQuery {
    ChatList(ChatListRequest),
    Cursors(CursorsRequest),
    ReceiptStatus(ReceiptStatusRequest),
    Session(SessionRequest),
    User(UserRequest),
    Inbox(InboxRequest),
    Profile(ProfileRequest),
    Status(StatusRequest),
    ContactLookup(ContactLookupRequest),
}

impl ViewQuery {
    /// The subject this query is asked on.
    pub fn subject(&self) -> &'static str {
        match self {
            ViewQuery::ChatList(_) => subject::VIEW_CHAT_LIST,
            ViewQuery::Cursors(_) => subject::VIEW_CURSORS,
            ViewQuery::ReceiptStatus(_) => subject::VIEW_RECEIPT_STATUS,
            ViewQuery::Session(_) => subject::VIEW_SESSION,
            ViewQuery::User(_) => subject::VIEW_USER,
            ViewQuery::Inbox(_) => subject::VIEW_INBOX,
            ViewQuery::Profile(_) => subject::VIEW_PROFILE,
            ViewQuery::Status(_) => subject::VIEW_STATUS,
            ViewQuery::ContactLookup(_) => subject::VIEW_CONTACT_INDEX,
        }
    }

    /// Encodes with file identifier `CBVQ`.
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = Builder::with_capacity(64);
        let (query_type, query) = match self {
            ViewQuery::ChatList(q) => {
                let after = q.after.as_ref().map(codec::chat_fb);
                let t = fbus::ChatListRequest::create(
                    &mut fbb,
                    &fbus::ChatListRequestArgs { user: q.user.0, after: after.as_ref(), limit: q.limit },
                );
                (fbus::ViewQuery::ChatListRequest, t.as_union_value())
            }
            ViewQuery::Cursors(q) => {
                let after = q.after.as_ref().map(codec::chat_fb);
                let t = fbus::CursorsRequest::create(
                    &mut fbb,
                    &fbus::CursorsRequestArgs {
                        user: q.user.0,
                        device: q.device.0,
                        after: after.as_ref(),
                        limit: q.limit,
                    },
                );
                (fbus::ViewQuery::CursorsRequest, t.as_union_value())
            }
            ViewQuery::ReceiptStatus(q) => {
                let chat = codec::chat_fb(&q.chat);
                let t = fbus::ReceiptStatusRequest::create(
                    &mut fbb,
                    &fbus::ReceiptStatusRequestArgs { chat: Some(&chat), sender: q.sender.0 },
                );
                (fbus::ViewQuery::ReceiptStatusRequest, t.as_union_value())
            }
            ViewQuery::Session(q) => {
                let t = fbus::SessionRequest::create(
                    &mut fbb,
                    &fbus::SessionRequestArgs { user: q.user.0, device: q.device.0 },
                );
                (fbus::ViewQuery::SessionRequest, t.as_union_value())
            }
            ViewQuery::User(q) => {
                let t = fbus::UserRequest::create(&mut fbb, &fbus::UserRequestArgs { user: q.user.0 });
                (fbus::ViewQuery::UserRequest, t.as_union_value())
            }
            ViewQuery::Inbox(q) => {
                let chat = codec::chat_fb(&q.chat);
                let t = fbus::InboxRequest::create(
                    &mut fbb,
                    &fbus::InboxRequestArgs { user: q.user.0, chat: Some(&chat), after: q.after.0, limit: q.limit },
                );
                (fbus::ViewQuery::InboxRequest, t.as_union_value())
            }
            ViewQuery::Profile(q) => {
                let t = fbus::ProfileRequest::create(
                    &mut fbb,
                    &fbus::ProfileRequestArgs { viewer: q.viewer.0, user: q.user.0 },
                );
                (fbus::ViewQuery::ProfileRequest, t.as_union_value())
            }
            ViewQuery::Status(q) => {
                let t = fbus::StatusRequest::create(
                    &mut fbb,
                    &fbus::StatusRequestArgs {
                        viewer: q.viewer.0,
                        author: q.author.map_or(0, |a| a.0),
                        now_ms: q.now_ms,
                    },
                );
                (fbus::ViewQuery::StatusRequest, t.as_union_value())
            }
            ViewQuery::ContactLookup(q) => {
                let items: Vec<crate::fb::Blake3Digest> =
                    q.hashes.iter().map(|h| crate::fb::Blake3Digest(*h)).collect();
                let hashes = fbb.create_vector(&items);
                let t = fbus::ContactLookupRequest::create(
                    &mut fbb,
                    &fbus::ContactLookupRequestArgs { hashes: Some(hashes) },
                );
                (fbus::ViewQuery::ContactLookupRequest, t.as_union_value())
            }
        };
        let root = fbus::ViewRequest::create(&mut fbb, &fbus::ViewRequestArgs { query_type, query: Some(query) });
        codec::finish(fbb, root, VIEW_REQUEST_IDENT)
    }

    /// Verifies and decodes a request made by [`ViewQuery::encode`].
    ///
    /// # Errors
    /// [`Error::TooLarge`] above [`crate::limits::MAX_VIEW_QUERY_BYTES`]; [`Error::Malformed`]
    /// if the verifier refuses it or it holds an unknown query.
    pub fn decode(payload: &[u8]) -> Result<ViewQuery> {
        let r = codec::root::<fbus::ViewRequest>(
            payload,
            "view request",
            VIEW_REQUEST_IDENT,
            crate::limits::MAX_VIEW_QUERY_BYTES,
            4,
        )?;
        let tag = r.query_type();
        let bad = || codec::bad_union("view query", tag.0);
        Ok(match tag {
            fbus::ViewQuery::ChatListRequest => {
                let q = r.query_as_chat_list_request().ok_or_else(bad)?;
                ViewQuery::ChatList(ChatListRequest {
                    user: UserId(q.user()),
                    after: q.after().map(codec::chat),
                    limit: q.limit(),
                })
            }
            fbus::ViewQuery::CursorsRequest => {
                let q = r.query_as_cursors_request().ok_or_else(bad)?;
                ViewQuery::Cursors(CursorsRequest {
                    user: UserId(q.user()),
                    device: DeviceId(q.device()),
                    after: q.after().map(codec::chat),
                    limit: q.limit(),
                })
            }
            fbus::ViewQuery::ReceiptStatusRequest => {
                let q = r.query_as_receipt_status_request().ok_or_else(bad)?;
                ViewQuery::ReceiptStatus(ReceiptStatusRequest {
                    chat: codec::chat(q.chat()),
                    sender: UserId(q.sender()),
                })
            }
            fbus::ViewQuery::SessionRequest => {
                let q = r.query_as_session_request().ok_or_else(bad)?;
                ViewQuery::Session(SessionRequest { user: UserId(q.user()), device: DeviceId(q.device()) })
            }
            fbus::ViewQuery::UserRequest => {
                let q = r.query_as_user_request().ok_or_else(bad)?;
                ViewQuery::User(UserRequest { user: UserId(q.user()) })
            }
            fbus::ViewQuery::InboxRequest => {
                let q = r.query_as_inbox_request().ok_or_else(bad)?;
                ViewQuery::Inbox(InboxRequest {
                    user: UserId(q.user()),
                    chat: codec::chat(q.chat()),
                    after: Seq(q.after()),
                    limit: q.limit(),
                })
            }
            fbus::ViewQuery::ProfileRequest => {
                let q = r.query_as_profile_request().ok_or_else(bad)?;
                ViewQuery::Profile(ProfileRequest { viewer: UserId(q.viewer()), user: UserId(q.user()) })
            }
            fbus::ViewQuery::StatusRequest => {
                let q = r.query_as_status_request().ok_or_else(bad)?;
                ViewQuery::Status(StatusRequest {
                    viewer: UserId(q.viewer()),
                    author: (q.author() != 0).then(|| UserId(q.author())),
                    now_ms: q.now_ms(),
                })
            }
            fbus::ViewQuery::ContactLookupRequest => {
                let q = r.query_as_contact_lookup_request().ok_or_else(bad)?;
                check_len("contact hashes", q.hashes().len(), crate::social::MAX_CONTACT_HASHES_PER_SYNC)?;
                ViewQuery::ContactLookup(ContactLookupRequest { hashes: q.hashes().iter().map(|h| h.0).collect() })
            }
            _ => return Err(bad()),
        })
    }
}

// ---- view answers -----------------------------------------------------------------------

/// One chat of a chat list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatListItem {
    pub chat: ChatId,
    pub entry: ChatListEntry,
}

/// A page of a chat list; `more` when chats follow the last one (ask again with
/// `after` = its chat).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChatListPage {
    pub entries: Vec<ChatListItem>,
    pub more: bool,
}

/// One device's cursors in one chat, with the last seq the user sees there:
/// sync streams `(delivered, last_seq]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatCursors {
    pub chat: ChatId,
    pub last_seq: Seq,
    pub delivered: Seq,
    pub read: Seq,
}

/// A page of per-chat cursors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CursorsPage {
    pub entries: Vec<ChatCursors>,
    pub more: bool,
}

/// The live session of one device: `token_hash` is the BLAKE3 hash of its
/// login token, `None` if it has none (never created, revoked, or unlinked).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionInfo {
    pub token_hash: Option<[u8; 32]>,
}

/// Whether a user is registered, and their linked devices in id order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub registered: bool,
    pub devices: Vec<DeviceId>,
}

/// A page of an inbox; `more` when items follow the last one (ask again with
/// `after` = its seq). `partition` is the chat's partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxPage {
    pub partition: PartitionId,
    pub entries: Vec<InboxItem>,
    pub more: bool,
}

/// The answer to one [`ViewQuery`], of the query's kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewAnswer {
    ChatList(ChatListPage),
    Cursors(CursorsPage),
    Ticks(Ticks),
    Session(SessionInfo),
    User(UserInfo),
    Inbox(InboxPage),
    Profile(crate::social::Profile),
    Statuses(Vec<crate::social::StatusEntry>),
    ContactMatches(Vec<crate::social::ContactMatch>),
}

/// Why a view query failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewErrorCode {
    /// The request did not decode (or was too large): do not retry as is.
    BadRequest,
    /// The projector's store failed: retryable, perhaps on another projector.
    Unavailable,
}

/// A view query's error reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ViewError {
    pub code: ViewErrorCode,
    pub message: String,
}

/// Every view reply: the answer or an error.
pub type ViewReply = std::result::Result<ViewAnswer, ViewError>;

/// Encodes a reply with file identifier `CBVA`.
pub fn encode_reply(reply: &ViewReply) -> Vec<u8> {
    let mut fbb = Builder::with_capacity(256);
    let (answer_type, answer) = match reply {
        Ok(ViewAnswer::ChatList(p)) => {
            let items: Vec<_> = p.entries.iter().map(|i| chat_list_item_fb(&mut fbb, i)).collect();
            let entries = fbb.create_vector(&items);
            let t =
                fbus::ChatListPage::create(&mut fbb, &fbus::ChatListPageArgs { entries: Some(entries), more: p.more });
            (fbus::ViewAnswer::ChatListPage, t.as_union_value())
        }
        Ok(ViewAnswer::Cursors(p)) => {
            let items: Vec<_> = p
                .entries
                .iter()
                .map(|c| fbus::ChatCursors::new(&codec::chat_fb(&c.chat), c.last_seq.0, c.delivered.0, c.read.0))
                .collect();
            let entries = fbb.create_vector(&items);
            let t =
                fbus::CursorsPage::create(&mut fbb, &fbus::CursorsPageArgs { entries: Some(entries), more: p.more });
            (fbus::ViewAnswer::CursorsPage, t.as_union_value())
        }
        Ok(ViewAnswer::Ticks(t)) => {
            let t = fbus::Ticks::create(&mut fbb, &fbus::TicksArgs { delivered: t.delivered.0, read: t.read.0 });
            (fbus::ViewAnswer::Ticks, t.as_union_value())
        }
        Ok(ViewAnswer::Session(s)) => {
            let hash = s.token_hash.as_ref().map(fbus::Hash32::new);
            let t = fbus::SessionInfo::create(&mut fbb, &fbus::SessionInfoArgs { token_hash: hash.as_ref() });
            (fbus::ViewAnswer::SessionInfo, t.as_union_value())
        }
        Ok(ViewAnswer::User(u)) => {
            let devices = fbb.create_vector_from_iter(u.devices.iter().map(|d| d.0));
            let t = fbus::UserInfo::create(
                &mut fbb,
                &fbus::UserInfoArgs { registered: u.registered, devices: Some(devices) },
            );
            (fbus::ViewAnswer::UserInfo, t.as_union_value())
        }
        Ok(ViewAnswer::Inbox(p)) => {
            let items: Vec<_> = p.entries.iter().map(|i| fbus::InboxItem::new(i.seq.0, i.offset.0)).collect();
            let entries = fbb.create_vector(&items);
            let t = fbus::InboxPage::create(
                &mut fbb,
                &fbus::InboxPageArgs { partition: p.partition.0, entries: Some(entries), more: p.more },
            );
            (fbus::ViewAnswer::InboxPage, t.as_union_value())
        }
        Ok(ViewAnswer::Profile(p)) => {
            let t = crate::social::profile_fb(&mut fbb, crate::ClientMsgId(0), p);
            (fbus::ViewAnswer::ProfileInfo, t.as_union_value())
        }
        Ok(ViewAnswer::Statuses(s)) => {
            let t = crate::social::status_list_fb(&mut fbb, crate::ClientMsgId(0), s);
            (fbus::ViewAnswer::StatusPage, t.as_union_value())
        }
        Ok(ViewAnswer::ContactMatches(m)) => {
            let t = crate::social::matches_fb(&mut fbb, crate::ClientMsgId(0), m);
            (fbus::ViewAnswer::ContactMatches, t.as_union_value())
        }
        Err(e) => {
            let code = match e.code {
                ViewErrorCode::BadRequest => fbus::ViewErrorCode::BadRequest,
                ViewErrorCode::Unavailable => fbus::ViewErrorCode::Unavailable,
            };
            // A message never makes the reply undecodable: cut to the limit on a
            // character boundary.
            let mut end = e.message.len().min(MAX_MESSAGE_BYTES);
            while !e.message.is_char_boundary(end) {
                end -= 1;
            }
            let message = fbb.create_string(&e.message[..end]);
            let t = fbus::ViewError::create(&mut fbb, &fbus::ViewErrorArgs { code, message: Some(message) });
            (fbus::ViewAnswer::ViewError, t.as_union_value())
        }
    };
    let root = fbus::ViewReply::create(&mut fbb, &fbus::ViewReplyArgs { answer_type, answer: Some(answer) });
    codec::finish(fbb, root, VIEW_REPLY_IDENT)
}

/// Verifies and decodes a reply made by [`encode_reply`].
///
/// # Errors
/// [`Error::TooLarge`] above [`MAX_BUS_PAYLOAD_BYTES`] or a page above
/// [`MAX_VIEW_PAGE_ENTRIES`] entries (a user's devices: `u32`s, bounded by the
/// payload); [`Error::Malformed`] if the verifier refuses it or it holds an
/// unknown answer or enum value.
pub fn decode_reply(payload: &[u8]) -> Result<ViewReply> {
    let r = codec::root::<fbus::ViewReply>(
        payload,
        "view reply",
        VIEW_REPLY_IDENT,
        MAX_BUS_PAYLOAD_BYTES,
        MAX_VIEW_PAGE_ENTRIES + 8,
    )?;
    let tag = r.answer_type();
    let bad = || codec::bad_union("view answer", tag.0);
    let page = |len: usize| check_len("view page", len, MAX_VIEW_PAGE_ENTRIES);
    Ok(Ok(match tag {
        fbus::ViewAnswer::ChatListPage => {
            let p = r.answer_as_chat_list_page().ok_or_else(bad)?;
            page(p.entries().len())?;
            let entries = chat_list_items(p.entries())?;
            ViewAnswer::ChatList(ChatListPage { entries, more: p.more() })
        }
        fbus::ViewAnswer::CursorsPage => {
            let p = r.answer_as_cursors_page().ok_or_else(bad)?;
            page(p.entries().len())?;
            let entries = p
                .entries()
                .iter()
                .map(|c| ChatCursors {
                    chat: codec::chat(c.chat()),
                    last_seq: Seq(c.last_seq()),
                    delivered: Seq(c.delivered()),
                    read: Seq(c.read()),
                })
                .collect();
            ViewAnswer::Cursors(CursorsPage { entries, more: p.more() })
        }
        fbus::ViewAnswer::Ticks => {
            let t = r.answer_as_ticks().ok_or_else(bad)?;
            ViewAnswer::Ticks(Ticks { delivered: Seq(t.delivered()), read: Seq(t.read()) })
        }
        fbus::ViewAnswer::SessionInfo => {
            let s = r.answer_as_session_info().ok_or_else(bad)?;
            ViewAnswer::Session(SessionInfo { token_hash: s.token_hash().map(|h| h.0) })
        }
        fbus::ViewAnswer::UserInfo => {
            let u = r.answer_as_user_info().ok_or_else(bad)?;
            ViewAnswer::User(UserInfo {
                registered: u.registered(),
                devices: u.devices().iter().map(DeviceId).collect(),
            })
        }
        fbus::ViewAnswer::InboxPage => {
            let p = r.answer_as_inbox_page().ok_or_else(bad)?;
            page(p.entries().len())?;
            let entries =
                p.entries().iter().map(|i| InboxItem { seq: Seq(i.seq()), offset: Offset(i.offset()) }).collect();
            ViewAnswer::Inbox(InboxPage { partition: PartitionId(p.partition()), entries, more: p.more() })
        }
        fbus::ViewAnswer::ProfileInfo => {
            ViewAnswer::Profile(crate::social::profile(r.answer_as_profile_info().ok_or_else(bad)?)?)
        }
        fbus::ViewAnswer::StatusPage => {
            ViewAnswer::Statuses(crate::social::status_list(r.answer_as_status_page().ok_or_else(bad)?)?)
        }
        fbus::ViewAnswer::ContactMatches => {
            ViewAnswer::ContactMatches(crate::social::matches(r.answer_as_contact_matches().ok_or_else(bad)?)?)
        }
        fbus::ViewAnswer::ViewError => {
            let e = r.answer_as_view_error().ok_or_else(bad)?;
            check_len("view error message", e.message().len(), MAX_MESSAGE_BYTES)?;
            let code = match e.code() {
                fbus::ViewErrorCode::BadRequest => ViewErrorCode::BadRequest,
                fbus::ViewErrorCode::Unavailable => ViewErrorCode::Unavailable,
                other => return Err(Error::malformed("view error code", format!("unknown value {}", other.0))),
            };
            return Ok(Err(ViewError { code, message: e.message().to_owned() }));
        }
        _ => return Err(bad()),
    }))
}

/// A view query with its typed answer, so that a caller asks for a
/// [`SessionInfo`] and gets one (or an error), never another kind.
pub trait Query: Clone + Into<ViewQuery> {
    type Answer;
    /// The answer of this query's kind, or `None` for another kind.
    fn answer(answer: ViewAnswer) -> Option<Self::Answer>;
}

macro_rules! query {
    ($request:ident, $variant:ident, $answer_variant:ident, $answer:ty) => {
        impl From<$request> for ViewQuery {
            fn from(q: $request) -> ViewQuery {
                ViewQuery::$variant(q)
            }
        }
        impl Query for $request {
            type Answer = $answer;
            fn answer(answer: ViewAnswer) -> Option<$answer> {
                match answer {
                    ViewAnswer::$answer_variant(a) => Some(a),
                    _ => None,
                }
            }
        }
    };
}

query!(ChatListRequest, ChatList, ChatList, ChatListPage);
query!(CursorsRequest, Cursors, Cursors, CursorsPage);
query!(ReceiptStatusRequest, ReceiptStatus, Ticks, Ticks);
query!(SessionRequest, Session, Session, SessionInfo);
query!(UserRequest, User, User, UserInfo);
query!(InboxRequest, Inbox, Inbox, InboxPage);
query!(ProfileRequest, Profile, Profile, crate::social::Profile);
query!(StatusRequest, Status, Statuses, Vec<crate::social::StatusEntry>);
query!(ContactLookupRequest, ContactLookup, ContactMatches, Vec<crate::social::ContactMatch>);

// ---- helpers ------------------------------------------------------------------------------

fn status_fb(s: ReceiptStatus) -> fbus::ReceiptStatus {
    match s {
        ReceiptStatus::Sent => fbus::ReceiptStatus::Sent,
        ReceiptStatus::Delivered => fbus::ReceiptStatus::Delivered,
        ReceiptStatus::Read => fbus::ReceiptStatus::Read,
    }
}

fn status(s: fbus::ReceiptStatus) -> Result<ReceiptStatus> {
    match s {
        fbus::ReceiptStatus::Sent => Ok(ReceiptStatus::Sent),
        fbus::ReceiptStatus::Delivered => Ok(ReceiptStatus::Delivered),
        fbus::ReceiptStatus::Read => Ok(ReceiptStatus::Read),
        other => Err(Error::malformed("receipt status", format!("unknown value {}", other.0))),
    }
}

fn chat_list_item_fb<'a>(fbb: &mut Builder<'a>, item: &ChatListItem) -> WIPOffset<fbus::ChatListItem<'a>> {
    let chat = codec::chat_fb(&item.chat);
    let e = &item.entry;
    let last = e.last_message.map(|m| fbus::MessageRef::new(m.seq.0, m.sender.0, m.at_ms));
    let kind = match e.kind {
        ChatKind::Direct => fbus::ChatKind::Direct,
        ChatKind::Group => fbus::ChatKind::Group,
    };
    fbus::ChatListItem::create(
        fbb,
        &fbus::ChatListItemArgs {
            chat: Some(&chat),
            kind,
            last_seq: e.last_seq.0,
            unread: e.unread,
            unread_after: e.unread_after.0,
            last_message: last.as_ref(),
        },
    )
}

fn chat_list_items(v: Vector<'_, ForwardsUOffset<fbus::ChatListItem<'_>>>) -> Result<Vec<ChatListItem>> {
    v.iter()
        .map(|i| {
            let kind = match i.kind() {
                fbus::ChatKind::Direct => ChatKind::Direct,
                fbus::ChatKind::Group => ChatKind::Group,
                other => return Err(Error::malformed("chat kind", format!("unknown value {}", other.0))),
            };
            Ok(ChatListItem {
                chat: codec::chat(i.chat()),
                entry: ChatListEntry {
                    kind,
                    last_seq: Seq(i.last_seq()),
                    unread: i.unread(),
                    unread_after: Seq(i.unread_after()),
                    last_message: i.last_message().map(|m| MessageRef {
                        seq: Seq(m.seq()),
                        sender: UserId(m.sender()),
                        at_ms: m.at_ms(),
                    }),
                },
            })
        })
        .collect()
}
