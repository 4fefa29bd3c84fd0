//! What the SDK hands the app: errors, credentials, messages and events.

use chorus_schema::{
    ChatId, ClientMsgId, DeviceId, DeviceNoticeKind, EdgeErrorCode, GroupOp, ReceiptKind, Seq, UserId,
};
use serde::{Deserialize, Serialize};

/// Why a client call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The edge answered with an error frame; `retry_after_ms`: a rate limit
    /// allows the request again after that long.
    #[error("{code:?}: {message}")]
    Refused { code: EdgeErrorCode, message: String, retry_after_ms: Option<u64> },
    /// No edge could be reached, or a connection broke during a one-shot call
    /// (or before an account request was answered).
    #[error("connection: {0}")]
    Connection(String),
    /// The edge said something the protocol does not allow here.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The client was closed.
    #[error("client closed")]
    Closed,
    // ---- E2EE (issue 14) ----
    /// A send's `devices_digest` is not the digest of the current device
    /// list: nothing was appended. These are the devices to encrypt for
    /// (then send again, with the same `client_msg_id`). Not retried by the
    /// connection.
    #[error("the device list changed: {} devices now", .0.len())]
    StaleDevices(Vec<(UserId, DeviceId)>),
    /// End-to-end encryption failed (the crypto store, a device's keys).
    #[error("e2ee: {0}")]
    Crypto(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What an account, group, profile, status or contact request was answered with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `Done`; `at`: where a request that changed a chat is in its timeline.
    Done(Option<(ChatId, Seq)>),
    Profile(chorus_schema::Profile),
    Statuses(Vec<chorus_schema::StatusEntry>),
    Contacts(Vec<chorus_schema::ContactMatch>),
    /// A group's name, description and members.
    GroupInfo(chorus_schema::GroupInfo),
    /// Who received and read a message, and when.
    MessageInfo(Vec<chorus_schema::MessageReceipt>),
    // ---- E2EE (issue 14) ----
    /// This device's unclaimed one-time keys after an upload.
    KeysUploaded(u32),
    /// The keys a claim handed out, one entry per device of the user.
    KeyBundle(Vec<chorus_schema::DeviceKeys>),
    /// The devices of a user with their identity and fallback keys.
    DeviceKeys(Vec<chorus_schema::DeviceKeys>),
}

/// A status story to post: text (`ciphertext`, the caption of a picture or
/// video) and/or a media reference, for `audience` (reading `users`),
/// visible `ttl_ms` (0: 24 h, the most).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusPost {
    /// Unique per author (a reused id is refused).
    pub status_id: u64,
    pub ciphertext: Vec<u8>,
    pub media: Option<chorus_schema::MediaRef>,
    pub audience: chorus_schema::StatusAudience,
    pub users: Vec<UserId>,
    pub ttl_ms: u64,
}

/// A registered device's login.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub user: UserId,
    pub device: DeviceId,
    #[serde(with = "hex_token")]
    pub token: [u8; 32],
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("device", &self.device).finish_non_exhaustive()
    }
}

mod hex_token {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let bad = || serde::de::Error::custom("token: 64 hex digits");
        if s.len() != 64 {
            return Err(bad());
        }
        let mut t = [0u8; 32];
        for (i, b) in t.iter_mut().enumerate() {
            *b = u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
        }
        Ok(t)
    }
}

/// A message for this device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub chat: ChatId,
    pub seq: Seq,
    pub sender: UserId,
    pub sender_device: DeviceId,
    pub client_msg_id: ClientMsgId,
    pub at_ms: u64,
    pub ciphertext: Vec<u8>,
}

/// A change to a group's roster or info, in the chat's order with its messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatChange {
    pub chat: ChatId,
    pub seq: Seq,
    /// Who made the change, from which device and with which request id.
    pub actor: UserId,
    pub actor_device: DeviceId,
    pub client_msg_id: ClientMsgId,
    pub at_ms: u64,
    /// What changed; a `Create` lists every founder, the creator included.
    pub change: GroupOp,
}

/// What the client tells the app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Message(Message),
    /// A group's roster or info changed (creation, adds, removals, roles, name).
    ChatChange(ChatChange),
    /// The user's messages in `chat` up to `up_to_seq` are now `status`.
    Receipt {
        chat: ChatId,
        up_to_seq: Seq,
        status: ReceiptKind,
    },
    /// A sync after (re)connecting is complete: what was pending came before.
    Synced {
        chats: u32,
    },
    Connected {
        edge: String,
    },
    Disconnected {
        reason: String,
    },
    /// An error frame not tied to a send (e.g. a refused ack).
    Error {
        code: EdgeErrorCode,
        message: String,
    },
    /// Something happened to a device of this user at `at_ms` (e.g. a new
    /// device registered with the phone number).
    Device {
        kind: DeviceNoticeKind,
        device: DeviceId,
        at_ms: u64,
    },
    // ---- presence and typing (issue 12) ----
    /// The presence of a watched user ([`crate::Client::subscribe_presence`]):
    /// now, then on every change. `visible` false: their privacy settings
    /// (or a block) withhold it; `online` and `last_seen_ms` are then unset.
    Presence {
        user: UserId,
        visible: bool,
        online: bool,
        last_seen_ms: u64,
    },
    /// `user` started or stopped typing in `chat`. The SDK ends a typing
    /// indicator itself ([`chorus_schema::edge::TYPING_EXPIRY_MS`] after its
    /// last refresh: `typing: false`) when no refresh or stop comes.
    Typing {
        chat: ChatId,
        user: UserId,
        typing: bool,
    },
    // ---- E2EE (issue 14) ----
    /// This device holds only `left` unclaimed one-time keys (below
    /// [`chorus_schema::PREKEYS_LOW_WATERMARK`]): upload more. At login,
    /// and when a claim takes it below. (A client of
    /// [`crate::Client::connect`] has already uploaded more when it
    /// passes this on.)
    KeysLow {
        left: u32,
    },
    /// A message for this device that could not be decrypted (a client of
    /// [`crate::Client::connect`]): never dropped silently.
    Undecryptable {
        chat: ChatId,
        seq: Seq,
        sender: UserId,
        sender_device: DeviceId,
        reason: String,
    },
}

/// A committed send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    pub client_msg_id: ClientMsgId,
    pub chat: ChatId,
    pub seq: Seq,
    pub server_time_ms: u64,
}

/// Where a client starts: the positions the app saved (per chat, the last seq
/// it received). Chats not listed are synced from their start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    pub positions: Vec<(ChatId, Seq)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_round_trip_as_json_with_a_hex_token() {
        let c = Credentials { user: UserId(7), device: DeviceId(9), token: [0xab; 32] };
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(&"ab".repeat(32)), "{json}");
        assert_eq!(serde_json::from_str::<Credentials>(&json).unwrap(), c);
        assert!(serde_json::from_str::<Credentials>(r#"{"user":1,"device":2,"token":"zz"}"#).is_err());
        assert!(!format!("{c:?}").contains("ab"), "the token stays out of logs");
    }
}
