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
//! | `chorus.account.<user>.keys` | [`KeysLowUpdate`] | projector → edges holding the user's devices, when a claim takes a device below the low watermark of one-time keys (issue 14) |
//! | `chorus.joined.<user>` | [`ChatJoined`] | projector → edges holding the user's devices, once per member who joins a chat |
//! | `chorus.view.<view>` ([`ViewQuery::subject`]) | [`ViewQuery`] → [`ViewReply`] | request/reply, queue group [`subject::QUEUE_GROUP`] |
//! | `chorus.pair.<code hash hex>` | [`PairClaim`] → an edge `ServerFrame` (`Done` or `Error`) | edge → the edge holding the waiting device |
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
use crate::edge::{DeviceNoticeKind, GroupInfo, MessageReceipt};
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
    /// The subject prefix of chat joins: `chorus.joined.<user id>`.
    pub const JOINED_PREFIX: &str = "chorus.joined";
    /// The prefix of every view query subject.
    pub const VIEW_PREFIX: &str = "chorus.view";
    pub const VIEW_CHAT_LIST: &str = "chorus.view.chat_list";
    pub const VIEW_CURSORS: &str = "chorus.view.cursors";
    pub const VIEW_RECEIPT_STATUS: &str = "chorus.view.receipt_status";
    pub const VIEW_SESSION: &str = "chorus.view.session";
    pub const VIEW_USER: &str = "chorus.view.user";
    pub const VIEW_INBOX: &str = "chorus.view.inbox";
    // ---- linked devices (issue 12) ----
    pub const VIEW_DEVICES: &str = "chorus.view.devices";
    /// The subject prefix of pairing claims: `chorus.pair.<code hash hex>`.
    pub const PAIR_PREFIX: &str = "chorus.pair";
    // ---- group info and message info (issue 12) ----
    pub const VIEW_GROUP_INFO: &str = "chorus.view.group_info";
    pub const VIEW_MESSAGE_INFO: &str = "chorus.view.message_info";
    /// Every view subject a projector answers.
    // ---- presence and typing (issue 12) ----
    /// The subject prefix of presence changes: `chorus.presence.<user id>`
    /// (published by the projector, once per change).
    pub const PRESENCE_PREFIX: &str = "chorus.presence";
    /// The subject prefix of typing signals: `chorus.typing.<chat hex>`
    /// (published by edges; never logged).
    pub const TYPING_PREFIX: &str = "chorus.typing";
    pub const VIEW_PRESENCE: &str = "chorus.view.presence";
    pub const VIEW_MEMBERS: &str = "chorus.view.members";
    /// Every view subject a projector answers.
    // ---- profiles, status, contact sync (issue 12) ----
    pub const VIEW_PROFILE: &str = "chorus.view.profile";
    pub const VIEW_STATUS: &str = "chorus.view.status";
    pub const VIEW_CONTACT_INDEX: &str = "chorus.view.contact_index";
    // ---- E2EE (issue 14) ----
    pub const VIEW_DEVICE_KEYS: &str = "chorus.view.device_keys";
    /// The subject suffix of low one-time key notices:
    /// `chorus.account.<user id>.keys` (under the account prefix, so that
    /// the edges' `chorus.account.>` subscription takes them).
    pub const KEYS_SUFFIX: &str = ".keys";
    /// Every view subject a projector answers.
    pub const VIEWS: [&str; 15] = [
        VIEW_CHAT_LIST,
        VIEW_CURSORS,
        VIEW_RECEIPT_STATUS,
        VIEW_SESSION,
        VIEW_USER,
        VIEW_INBOX,
        VIEW_DEVICES,
        VIEW_GROUP_INFO,
        VIEW_MESSAGE_INFO,
        VIEW_PRESENCE,
        VIEW_MEMBERS,
        VIEW_PROFILE,
        VIEW_STATUS,
        VIEW_CONTACT_INDEX,
        // ---- E2EE (issue 14) ----
        VIEW_DEVICE_KEYS,
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

    /// `chorus.account.<user>.keys`.
    pub fn keys(user: UserId) -> String {
        format!("{ACCOUNT_PREFIX}.{user}{KEYS_SUFFIX}")
    }

    /// `chorus.account.<user>`.
    pub fn account(user: UserId) -> String {
        format!("{ACCOUNT_PREFIX}.{user}")
    }

    /// `chorus.joined.<user>`.
    pub fn joined(user: UserId) -> String {
        format!("{JOINED_PREFIX}.{user}")
    }
    /// `chorus.pair.<hex of the pairing code's hash>` (never the code itself).
    pub fn pair(code_hash: &[u8; 32]) -> String {
        let mut s = String::with_capacity(PAIR_PREFIX.len() + 65);
        s.push_str(PAIR_PREFIX);
        s.push('.');
        for b in code_hash {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
    /// `chorus.presence.<user>`.
    pub fn presence(user: UserId) -> String {
        format!("{PRESENCE_PREFIX}.{user}")
    }

    /// `chorus.typing.<chat hex>`.
    pub fn typing(chat: &ChatId) -> String {
        format!("{TYPING_PREFIX}.{chat}")
    }
}

const DELIVERY_IDENT: &str = "CBDL";
const RECEIPT_UPDATE_IDENT: &str = "CBRU";
const ACCOUNT_UPDATE_IDENT: &str = "CBAU";
const CHAT_JOINED_IDENT: &str = "CBJN";
const VIEW_REQUEST_IDENT: &str = "CBVQ";
const VIEW_REPLY_IDENT: &str = "CBVA";
const PAIR_CLAIM_IDENT: &str = "CBPC";
const PRESENCE_UPDATE_IDENT: &str = "CBPU";
const TYPING_SIGNAL_IDENT: &str = "CBTY";
const KEYS_LOW_IDENT: &str = "CBKL";

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

/// `user` became a member of `chat` at `seq` (0 for a direct chat opened by
/// its first message). Edges deliver a chat's items only to those that hold
/// it, and hold a chat only while one of its members is connected: this is how
/// an edge learns of a chat that a connected user joins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatJoined {
    pub chat: ChatId,
    pub user: UserId,
    pub seq: Seq,
}

impl ChatJoined {
    /// Encodes with file identifier `CBJN`.
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = Builder::with_capacity(64);
        let chat = codec::chat_fb(&self.chat);
        let root = fbus::ChatJoined::create(
            &mut fbb,
            &fbus::ChatJoinedArgs { chat: Some(&chat), user: self.user.0, seq: self.seq.0 },
        );
        codec::finish(fbb, root, CHAT_JOINED_IDENT)
    }

    /// Verifies and decodes a payload made by [`ChatJoined::encode`].
    ///
    /// # Errors
    /// [`Error::TooLarge`], [`Error::Malformed`].
    pub fn decode(payload: &[u8]) -> Result<ChatJoined> {
        let j = codec::root::<fbus::ChatJoined>(payload, "chat joined", CHAT_JOINED_IDENT, MAX_VIEW_REQUEST_BYTES, 4)?;
        Ok(ChatJoined { chat: codec::chat(j.chat()), user: UserId(j.user()), seq: Seq(j.seq()) })
    }
}
// ---- linked devices (issue 12) ----

/// `device` of `user` links the device waiting with a pairing code
/// (`chorus.pair.<code hash>`, edge to edge). The answer is an encoded edge
/// `ServerFrame`: `Done` or `Error` for `client_msg_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairClaim {
    pub user: UserId,
    pub device: DeviceId,
    pub client_msg_id: crate::ids::ClientMsgId,
}

impl PairClaim {
    /// Encodes with file identifier `CBPC`.
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = Builder::with_capacity(64);
        let root = fbus::PairClaim::create(
            &mut fbb,
            &fbus::PairClaimArgs { user: self.user.0, device: self.device.0, client_msg_id: self.client_msg_id.0 },
        );
        codec::finish(fbb, root, PAIR_CLAIM_IDENT)
    }

    /// Verifies and decodes a payload made by [`PairClaim::encode`].
    ///
    /// # Errors
    /// [`Error::TooLarge`] or [`Error::Malformed`].
    pub fn decode(payload: &[u8]) -> Result<PairClaim> {
        let c = codec::root::<fbus::PairClaim>(payload, "pair claim", PAIR_CLAIM_IDENT, MAX_VIEW_REQUEST_BYTES, 4)?;
        Ok(PairClaim {
            user: UserId(c.user()),
            device: DeviceId(c.device()),
            client_msg_id: crate::ids::ClientMsgId(c.client_msg_id()),
        })
    }
}
// ---- presence and typing (issue 12) ----

/// The presence of `user` changed, or (`audience`) who may see it did: then
/// `online` and `last_seen_ms` are unset and edges ask the presence view
/// again for each watcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresenceUpdate {
    pub user: UserId,
    pub online: bool,
    pub last_seen_ms: u64,
    pub audience: bool,
}

impl PresenceUpdate {
    /// Encodes with file identifier `CBPU`.
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = Builder::with_capacity(64);
        let root = fbus::PresenceUpdate::create(
            &mut fbb,
            &fbus::PresenceUpdateArgs {
                user: self.user.0,
                online: self.online,
                last_seen_ms: self.last_seen_ms,
                audience: self.audience,
            },
        );
        codec::finish(fbb, root, PRESENCE_UPDATE_IDENT)
    }

    /// Verifies and decodes a payload made by [`PresenceUpdate::encode`].
    ///
    /// # Errors
    /// [`Error::TooLarge`], [`Error::Malformed`].
    pub fn decode(payload: &[u8]) -> Result<PresenceUpdate> {
        let p = codec::root::<fbus::PresenceUpdate>(
            payload,
            "presence update",
            PRESENCE_UPDATE_IDENT,
            MAX_VIEW_REQUEST_BYTES,
            4,
        )?;
        Ok(PresenceUpdate {
            user: UserId(p.user()),
            online: p.online(),
            last_seen_ms: p.last_seen_ms(),
            audience: p.audience(),
        })
    }
}

/// `user` is typing (or stopped) in `chat`, for the devices of `recipients`
/// (the chat's other members, sorted). Edges publish it; the log never sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypingSignal {
    pub chat: ChatId,
    pub user: UserId,
    pub typing: bool,
    pub recipients: Vec<UserId>,
}

impl TypingSignal {
    /// Encodes with file identifier `CBTY`.
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = Builder::with_capacity(64 + self.recipients.len() * 8);
        let chat = codec::chat_fb(&self.chat);
        let recipients = codec::users_fb(&mut fbb, &self.recipients);
        let root = fbus::TypingSignal::create(
            &mut fbb,
            &fbus::TypingSignalArgs {
                chat: Some(&chat),
                user: self.user.0,
                typing: self.typing,
                recipients: Some(recipients),
            },
        );
        codec::finish(fbb, root, TYPING_SIGNAL_IDENT)
    }

    /// Verifies and decodes a payload made by [`TypingSignal::encode`].
    ///
    /// # Errors
    /// [`Error::TooLarge`] (also above [`MAX_GROUP_MEMBERS`] recipients), [`Error::Malformed`].
    pub fn decode(payload: &[u8]) -> Result<TypingSignal> {
        let t =
            codec::root::<fbus::TypingSignal>(payload, "typing signal", TYPING_SIGNAL_IDENT, MAX_BUS_PAYLOAD_BYTES, 4)?;
        check_len("typing recipients", t.recipients().len(), MAX_GROUP_MEMBERS)?;
        Ok(TypingSignal {
            chat: codec::chat(t.chat()),
            user: UserId(t.user()),
            typing: t.typing(),
            recipients: codec::users(t.recipients()),
        })
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

// ---- E2EE (issue 14) ----
/// The devices of `user` with their keys and unclaimed one-time key counts
/// (the directory view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceKeysRequest {
    pub user: UserId,
}

/// A claim took `device` of `user` below [`crate::PREKEYS_LOW_WATERMARK`]
/// unclaimed one-time keys (`chorus.account.<user>.keys`, projector → edges).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeysLowUpdate {
    pub user: UserId,
    pub device: DeviceId,
    pub one_time_keys_left: u32,
}

impl KeysLowUpdate {
    /// Encodes with file identifier `CBKL`.
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = Builder::with_capacity(48);
        let root = fbus::KeysLowUpdate::create(
            &mut fbb,
            &fbus::KeysLowUpdateArgs {
                user: self.user.0,
                device: self.device.0,
                one_time_keys_left: self.one_time_keys_left,
            },
        );
        codec::finish(fbb, root, KEYS_LOW_IDENT)
    }

    /// Verifies and decodes a payload made by [`KeysLowUpdate::encode`].
    ///
    /// # Errors
    /// [`Error::TooLarge`], [`Error::Malformed`].
    pub fn decode(payload: &[u8]) -> Result<KeysLowUpdate> {
        let k =
            codec::root::<fbus::KeysLowUpdate>(payload, "keys low update", KEYS_LOW_IDENT, MAX_VIEW_REQUEST_BYTES, 4)?;
        Ok(KeysLowUpdate {
            user: UserId(k.user()),
            device: DeviceId(k.device()),
            one_time_keys_left: k.one_time_keys_left(),
        })
    }
}

/// The linked devices of `user`, with names and link times (the devices view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevicesRequest {
    pub user: UserId,
}
// ---- group info and message info (issue 12) ----

/// A group's name, description and members, asked by `user` (answered only
/// for a member).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupInfoRequest {
    pub user: UserId,
    pub chat: ChatId,
}

/// Who received and read the message at `seq` of `chat`, and when, asked by
/// `user` (answered only for its sender).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageInfoRequest {
    pub user: UserId,
    pub chat: ChatId,
    pub seq: Seq,
}

/// Why a group or message info query is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InfoRefusal {
    /// The projector has never seen the chat.
    UnknownChat,
    /// The asking user is not a member of the chat.
    NotMember,
    /// There is no message at that seq (another kind of item, or none yet).
    NotMessage,
    /// The message is another user's: only its sender sees its info.
    NotSender,
}

/// Who received and read one message: one entry per current member other
/// than the sender who was a member when it was sent, in user id order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageInfo {
    pub entries: Vec<MessageReceipt>,
}

fn refusal_fb(r: Option<InfoRefusal>) -> fbus::InfoRefusal {
    match r {
        None => fbus::InfoRefusal::None,
        Some(InfoRefusal::UnknownChat) => fbus::InfoRefusal::UnknownChat,
        Some(InfoRefusal::NotMember) => fbus::InfoRefusal::NotMember,
        Some(InfoRefusal::NotMessage) => fbus::InfoRefusal::NotMessage,
        Some(InfoRefusal::NotSender) => fbus::InfoRefusal::NotSender,
    }
}

fn refusal(r: fbus::InfoRefusal) -> Result<Option<InfoRefusal>> {
    Ok(match r {
        fbus::InfoRefusal::None => None,
        fbus::InfoRefusal::UnknownChat => Some(InfoRefusal::UnknownChat),
        fbus::InfoRefusal::NotMember => Some(InfoRefusal::NotMember),
        fbus::InfoRefusal::NotMessage => Some(InfoRefusal::NotMessage),
        fbus::InfoRefusal::NotSender => Some(InfoRefusal::NotSender),
        other => return Err(Error::malformed("info refusal", format!("unknown value {}", other.0))),
    })
}

/// The presence of `user` as `viewer` may see it (issue 12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresenceRequest {
    pub user: UserId,
    pub viewer: UserId,
}

/// The current members of `chat` (issue 12: typing goes to them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MembersRequest {
    pub chat: ChatId,
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
    // ---- linked devices (issue 12) ----
    Devices(DevicesRequest),
    GroupInfo(GroupInfoRequest),
    MessageInfo(MessageInfoRequest),
    // issue 12
    Presence(PresenceRequest),
    Members(MembersRequest),
    Profile(ProfileRequest),
    Status(StatusRequest),
    ContactLookup(ContactLookupRequest),
    // ---- E2EE (issue 14) ----
    DeviceKeys(DeviceKeysRequest),
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
            ViewQuery::Devices(_) => subject::VIEW_DEVICES,
            ViewQuery::GroupInfo(_) => subject::VIEW_GROUP_INFO,
            ViewQuery::MessageInfo(_) => subject::VIEW_MESSAGE_INFO,
            ViewQuery::Presence(_) => subject::VIEW_PRESENCE,
            ViewQuery::Members(_) => subject::VIEW_MEMBERS,
            ViewQuery::Profile(_) => subject::VIEW_PROFILE,
            ViewQuery::Status(_) => subject::VIEW_STATUS,
            ViewQuery::ContactLookup(_) => subject::VIEW_CONTACT_INDEX,
            ViewQuery::DeviceKeys(_) => subject::VIEW_DEVICE_KEYS,
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
            ViewQuery::Devices(q) => {
                let t = fbus::DevicesRequest::create(&mut fbb, &fbus::DevicesRequestArgs { user: q.user.0 });
                (fbus::ViewQuery::DevicesRequest, t.as_union_value())
            }
            ViewQuery::GroupInfo(q) => {
                let chat = codec::chat_fb(&q.chat);
                let t = fbus::GroupInfoRequest::create(
                    &mut fbb,
                    &fbus::GroupInfoRequestArgs { user: q.user.0, chat: Some(&chat) },
                );
                (fbus::ViewQuery::GroupInfoRequest, t.as_union_value())
            }
            ViewQuery::MessageInfo(q) => {
                let chat = codec::chat_fb(&q.chat);
                let t = fbus::MessageInfoRequest::create(
                    &mut fbb,
                    &fbus::MessageInfoRequestArgs { user: q.user.0, chat: Some(&chat), seq: q.seq.0 },
                );
                (fbus::ViewQuery::MessageInfoRequest, t.as_union_value())
            }
            ViewQuery::Presence(q) => {
                let t = fbus::PresenceRequest::create(
                    &mut fbb,
                    &fbus::PresenceRequestArgs { user: q.user.0, viewer: q.viewer.0 },
                );
                (fbus::ViewQuery::PresenceRequest, t.as_union_value())
            }
            ViewQuery::Members(q) => {
                let chat = codec::chat_fb(&q.chat);
                let t = fbus::MembersRequest::create(&mut fbb, &fbus::MembersRequestArgs { chat: Some(&chat) });
                (fbus::ViewQuery::MembersRequest, t.as_union_value())
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
            ViewQuery::DeviceKeys(q) => {
                let t = fbus::DeviceKeysRequest::create(&mut fbb, &fbus::DeviceKeysRequestArgs { user: q.user.0 });
                (fbus::ViewQuery::DeviceKeysRequest, t.as_union_value())
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
            fbus::ViewQuery::DevicesRequest => {
                let q = r.query_as_devices_request().ok_or_else(bad)?;
                ViewQuery::Devices(DevicesRequest { user: UserId(q.user()) })
            }
            fbus::ViewQuery::GroupInfoRequest => {
                let q = r.query_as_group_info_request().ok_or_else(bad)?;
                ViewQuery::GroupInfo(GroupInfoRequest { user: UserId(q.user()), chat: codec::chat(q.chat()) })
            }
            fbus::ViewQuery::MessageInfoRequest => {
                let q = r.query_as_message_info_request().ok_or_else(bad)?;
                ViewQuery::MessageInfo(MessageInfoRequest {
                    user: UserId(q.user()),
                    chat: codec::chat(q.chat()),
                    seq: Seq(q.seq()),
                })
            }
            fbus::ViewQuery::PresenceRequest => {
                let q = r.query_as_presence_request().ok_or_else(bad)?;
                ViewQuery::Presence(PresenceRequest { user: UserId(q.user()), viewer: UserId(q.viewer()) })
            }
            fbus::ViewQuery::MembersRequest => {
                let q = r.query_as_members_request().ok_or_else(bad)?;
                ViewQuery::Members(MembersRequest { chat: codec::chat(q.chat()) })
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
            fbus::ViewQuery::DeviceKeysRequest => {
                let q = r.query_as_device_keys_request().ok_or_else(bad)?;
                ViewQuery::DeviceKeys(DeviceKeysRequest { user: UserId(q.user()) })
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

/// The presence of a user as one viewer may see it: `visible` false when
/// their privacy settings or a block withhold it (the rest is then unset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceInfo {
    pub visible: bool,
    pub online: bool,
    /// When their presence last changed (0: never).
    pub last_seen_ms: u64,
}

/// The current members of a chat, sorted; `known` false: no such chat.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    pub known: bool,
    pub members: Vec<UserId>,
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
    // ---- linked devices (issue 12) ----
    Devices(Vec<crate::edge::DeviceInfo>),
    GroupInfo(Result<GroupInfo, InfoRefusal>),
    MessageInfo(Result<MessageInfo, InfoRefusal>),
    // issue 12
    Presence(PresenceInfo),
    Members(Members),
    Profile(crate::social::Profile),
    Statuses(Vec<crate::social::StatusEntry>),
    ContactMatches(Vec<crate::social::ContactMatch>),
    // ---- E2EE (issue 14) ----
    /// Each linked device's keys (no `one_time_key`) and unclaimed one-time
    /// key count, in device order.
    DeviceKeys(Vec<(crate::keys::DeviceKeys, u32)>),
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
        Ok(ViewAnswer::Devices(devices)) => {
            let devices = crate::edge::device_infos_fb(&mut fbb, devices);
            let t = fbus::LinkedDevices::create(&mut fbb, &fbus::LinkedDevicesArgs { devices: Some(devices) });
            (fbus::ViewAnswer::LinkedDevices, t.as_union_value())
        }
        Ok(ViewAnswer::GroupInfo(answer)) => {
            let t = match answer {
                Ok(info) => {
                    let members = fbb.create_vector(&crate::edge::group_members_fb(&info.members));
                    let name = fbb.create_string(&info.name);
                    let description = fbb.create_string(&info.description);
                    let icon = codec::opt_media_fb(&mut fbb, &info.icon);
                    fbus::GroupInfo::create(
                        &mut fbb,
                        &fbus::GroupInfoArgs {
                            refusal: fbus::InfoRefusal::None,
                            last_seq: info.last_seq.0,
                            name: Some(name),
                            description: Some(description),
                            members: Some(members),
                            icon,
                        },
                    )
                }
                Err(r) => fbus::GroupInfo::create(
                    &mut fbb,
                    &fbus::GroupInfoArgs { refusal: refusal_fb(Some(*r)), ..Default::default() },
                ),
            };
            (fbus::ViewAnswer::GroupInfo, t.as_union_value())
        }
        Ok(ViewAnswer::MessageInfo(answer)) => {
            let t = match answer {
                Ok(info) => {
                    let entries = fbb.create_vector(&crate::edge::receipts_fb(&info.entries));
                    fbus::MessageInfo::create(
                        &mut fbb,
                        &fbus::MessageInfoArgs { refusal: fbus::InfoRefusal::None, entries: Some(entries) },
                    )
                }
                Err(r) => fbus::MessageInfo::create(
                    &mut fbb,
                    &fbus::MessageInfoArgs { refusal: refusal_fb(Some(*r)), entries: None },
                ),
            };
            (fbus::ViewAnswer::MessageInfo, t.as_union_value())
        }
        Ok(ViewAnswer::Presence(p)) => {
            let t = fbus::PresenceInfo::create(
                &mut fbb,
                &fbus::PresenceInfoArgs { visible: p.visible, online: p.online, last_seen_ms: p.last_seen_ms },
            );
            (fbus::ViewAnswer::PresenceInfo, t.as_union_value())
        }
        Ok(ViewAnswer::Members(m)) => {
            let members = codec::users_fb(&mut fbb, &m.members);
            let t = fbus::Members::create(&mut fbb, &fbus::MembersArgs { known: m.known, members: Some(members) });
            (fbus::ViewAnswer::Members, t.as_union_value())
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
        Ok(ViewAnswer::DeviceKeys(entries)) => {
            let keys: Vec<_> = entries.iter().map(|(k, _)| k.clone()).collect();
            let devices = crate::keys::device_keys_fb(&mut fbb, &keys);
            let left: Vec<u32> = entries.iter().map(|(_, n)| *n).collect();
            let left = fbb.create_vector(&left);
            let t = fbus::DeviceKeyDirectory::create(
                &mut fbb,
                &fbus::DeviceKeyDirectoryArgs { devices: Some(devices), one_time_keys_left: Some(left) },
            );
            (fbus::ViewAnswer::DeviceKeyDirectory, t.as_union_value())
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
        fbus::ViewAnswer::LinkedDevices => {
            let d = r.answer_as_linked_devices().ok_or_else(bad)?;
            page(d.devices().len())?;
            let devices = crate::edge::device_infos(d.devices());
            if let Some(long) = devices.iter().find(|d| d.name.len() > crate::limits::MAX_NAME_BYTES) {
                check_len("device name", long.name.len(), crate::limits::MAX_NAME_BYTES)?;
            }
            ViewAnswer::Devices(devices)
        }
        fbus::ViewAnswer::GroupInfo => {
            let g = r.answer_as_group_info().ok_or_else(bad)?;
            ViewAnswer::GroupInfo(match refusal(g.refusal())? {
                Some(r) => Err(r),
                None => {
                    let members = g.members().ok_or_else(|| Error::malformed("group info", "no members"))?;
                    check_len("group members", members.len(), MAX_GROUP_MEMBERS)?;
                    let name = g.name().unwrap_or_default();
                    let description = g.description().unwrap_or_default();
                    check_len("group name", name.len(), crate::limits::MAX_NAME_BYTES)?;
                    check_len("group description", description.len(), crate::limits::MAX_ABOUT_BYTES)?;
                    Ok(GroupInfo {
                        last_seq: Seq(g.last_seq()),
                        name: name.to_owned(),
                        description: description.to_owned(),
                        members: crate::edge::group_members(members),
                        icon: codec::opt_media(g.icon()),
                    })
                }
            })
        }
        fbus::ViewAnswer::MessageInfo => {
            let m = r.answer_as_message_info().ok_or_else(bad)?;
            ViewAnswer::MessageInfo(match refusal(m.refusal())? {
                Some(r) => Err(r),
                None => {
                    let entries = m.entries().ok_or_else(|| Error::malformed("message info", "no entries"))?;
                    check_len("message info", entries.len(), MAX_GROUP_MEMBERS)?;
                    Ok(MessageInfo { entries: crate::edge::receipts(entries) })
                }
            })
        }
        fbus::ViewAnswer::PresenceInfo => {
            let p = r.answer_as_presence_info().ok_or_else(bad)?;
            ViewAnswer::Presence(PresenceInfo {
                visible: p.visible(),
                online: p.online(),
                last_seen_ms: p.last_seen_ms(),
            })
        }
        fbus::ViewAnswer::Members => {
            let m = r.answer_as_members().ok_or_else(bad)?;
            check_len("members", m.members().len(), MAX_GROUP_MEMBERS)?;
            ViewAnswer::Members(Members { known: m.known(), members: codec::users(m.members()) })
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
        fbus::ViewAnswer::DeviceKeyDirectory => {
            let d = r.answer_as_device_key_directory().ok_or_else(bad)?;
            let keys = crate::keys::device_keys(d.devices())?;
            if d.one_time_keys_left().len() != keys.len() {
                return Err(Error::malformed("device key directory", "one count per device"));
            }
            for k in &keys {
                k.validate()?;
            }
            ViewAnswer::DeviceKeys(keys.into_iter().zip(d.one_time_keys_left().iter()).collect())
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
query!(DevicesRequest, Devices, Devices, Vec<crate::edge::DeviceInfo>);
query!(GroupInfoRequest, GroupInfo, GroupInfo, Result<GroupInfo, InfoRefusal>);
query!(MessageInfoRequest, MessageInfo, MessageInfo, Result<MessageInfo, InfoRefusal>);
query!(PresenceRequest, Presence, Presence, PresenceInfo);
query!(MembersRequest, Members, Members, Members);
query!(ProfileRequest, Profile, Profile, crate::social::Profile);
query!(StatusRequest, Status, Statuses, Vec<crate::social::StatusEntry>);
query!(ContactLookupRequest, ContactLookup, ContactMatches, Vec<crate::social::ContactMatch>);
query!(DeviceKeysRequest, DeviceKeys, DeviceKeys, Vec<(crate::keys::DeviceKeys, u32)>);

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
