//! Client ↔ edge frames (ALPN [`ALPN`]): [`ClientFrame`], [`ServerFrame`], their
//! stable [`EdgeErrorCode`]s, the length-prefixed framing and phone-number ids.
//!
//! # Streams
//! One bidirectional **control stream**, opened by the client, carries
//! [`ClientFrame`]s up and [`ServerFrame`]s down; the edge also opens one
//! unidirectional **delivery stream** to the client, carrying [`ServerFrame`]s
//! (`Deliver`, `Receipt`, `SyncDone`). Every frame on a stream is a `u32`
//! big-endian length followed by one flatbuffer ([`write_frame`], [`FrameReader`])
//! of at most [`MAX_EDGE_FRAME_BYTES`], with the file identifier `CECF`
//! (client frame) or `CESF` (server frame).
//!
//! # Identity
//! A user id is a function of the phone number ([`user_for_phone`]), so every
//! edge maps a number to the same user without a lookup.

use serde::{Deserialize, Serialize};

use crate::codec::{self, Builder};
pub use crate::codes::EdgeErrorCode;
use crate::error::check_len;

use crate::command::CommandBody;
use crate::fb::edge as fe;
use crate::ids::{ChatId, ClientMsgId, DeviceId, Seq, UserId};
use crate::keys;
pub use crate::keys::{device_list_digest, DeviceKeys};
use crate::limits::*;
use crate::social::{self, ContactMatch, Profile, StatusAudience, StatusEntry, MAX_CONTACT_HASHES_PER_SYNC};
use crate::types::{MediaRef, Member, Prekey, ReceiptKind, Visibility};
use crate::{Error, Result};

/// The ALPN protocol id of the client ↔ edge protocol.
pub const ALPN: &[u8] = b"chorus/1";

const CLIENT_FRAME_IDENT: &str = "CECF";
const SERVER_FRAME_IDENT: &str = "CESF";

/// Who a message is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Recipient {
    /// A direct message; the chat is `ChatId::direct(sender, user)`.
    User(UserId),
    /// A group message.
    Group(ChatId),
}

/// What a client sends on its control stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientFrame {
    /// Start registration: the edge texts a one-time code to `phone`.
    RequestOtp {
        phone: String,
    },
    /// Finish registration with the texted code; links a new device. `pin`:
    /// the registration PIN, required if the phone's user set one.
    VerifyOtp {
        phone: String,
        code: String,
        device_name: String,
        identity_key: Vec<u8>,
        pin: Option<String>,
    },
    /// Resume as a registered device with the token from `Registered`.
    Login {
        user: UserId,
        device: DeviceId,
        token: [u8; 32],
    },
    /// Send a message. `client_msg_id` makes retries idempotent (unique per device;
    /// the top bit is reserved for the edge, see [`CLIENT_MSG_ID_RESERVED_BIT`]).
    Send {
        to: Recipient,
        client_msg_id: ClientMsgId,
        ciphertext: Vec<u8>,
        media: Option<MediaRef>,
        /// The [`device_list_digest`] of the devices the message was encrypted
        /// for (`None`: no check). A stale one is answered
        /// [`ServerFrame::StaleDevices`] and nothing is appended.
        devices_digest: Option<[u8; 32]>,
    },
    /// A cumulative receipt for `chat` up to `up_to_seq`.
    Ack {
        chat: ChatId,
        kind: ReceiptKind,
        up_to_seq: Seq,
    },
    /// Ask for everything after the given cursors (empty: everything).
    Sync {
        since: Vec<(ChatId, Seq)>,
    },
    Ping {
        nonce: u64,
    },
    /// Sets the user's registration PIN (empty: removes it). Answered `Done`.
    SetPin {
        client_msg_id: ClientMsgId,
        pin: String,
    },
    /// Unlinks a device of the user (this one or another); its connections
    /// close at every edge. Answered `Done`.
    UnlinkDevice {
        client_msg_id: ClientMsgId,
        device: DeviceId,
    },
    /// Ends this device's session; its connections close at every edge.
    /// Answered `Done`.
    Logout {
        client_msg_id: ClientMsgId,
    },
    /// Blocks (`blocked`) or unblocks `user`: their direct messages to this
    /// user are refused (`Forbidden`). Answered `Done`.
    Block {
        client_msg_id: ClientMsgId,
        user: UserId,
        blocked: bool,
    },
    /// A group request on `chat` (for [`GroupOp::Create`], a fresh id from
    /// [`ChatId::group`]). Answered `Done`, or `Error` with the partition's
    /// reason (`NotAdmin`, `NotMember`, `AlreadyExists`, `Invalid`, …).
    Group {
        client_msg_id: ClientMsgId,
        chat: ChatId,
        op: GroupOp,
    },
    // ---- linked devices (issue 12) ----
    /// A new device (not logged in) asks for a pairing code: answered
    /// `PairCode`, then `Registered` once a logged-in device of the user
    /// links it with the code ([`ClientFrame::LinkDevice`], at any edge).
    PairRequest {
        device_name: String,
        identity_key: Vec<u8>,
    },
    /// Links the new device that shows `code` to this device's user. Answered
    /// `Done`, or `Error` (`BadPairingCode`, `TooManyDevices`).
    LinkDevice {
        client_msg_id: ClientMsgId,
        code: String,
    },
    /// The user's linked devices: answered `DeviceList`.
    ListDevices {
        client_msg_id: ClientMsgId,
    },
    // ---- group info and message info (issue 12) ----
    /// Asks for a group's name, description and members (members only).
    /// Answered [`ServerFrame::GroupInfo`], or `Error` (`NotMember`,
    /// `UnknownRecipient`) with `client_msg_id`.
    GroupInfo {
        client_msg_id: ClientMsgId,
        chat: ChatId,
    },
    /// Asks who received and read the message at `seq` of `chat`, and when
    /// (its sender only). Answered [`ServerFrame::MessageInfo`], or `Error`
    /// (`Forbidden` for another's message, `BadFrame` for a seq that is no
    /// message, `NotMember`, `UnknownRecipient`) with `client_msg_id`.
    MessageInfo {
        client_msg_id: ClientMsgId,
        chat: ChatId,
        seq: Seq,
    },
    // ---- presence and typing (issue 12) ----
    /// Watch the presence of `users` (replaces this connection's list; at most
    /// [`MAX_WATCHED_USERS`]): a `Presence` frame for each now and on each
    /// change, on the delivery stream, as each target's privacy allows.
    SubscribePresence {
        users: Vec<UserId>,
    },
    /// This user is typing (or stopped) in `chat`: relayed to the chat's
    /// other members, never logged; refresh within 5 s or it lapses.
    /// Refused with `NotMember` in a chat the user is not in.
    Typing {
        chat: ChatId,
        typing: bool,
    },
    // ---- social ----
    /// Sets this user's profile. Answered `Done`.
    SetProfile {
        client_msg_id: ClientMsgId,
        name: String,
        about: String,
        avatar: Option<MediaRef>,
    },
    /// Who sees this user's last seen (and online), profile photo and
    /// about; whether they send read receipts. Answered `Done`.
    SetPrivacy {
        client_msg_id: ClientMsgId,
        last_seen: Visibility,
        profile_photo: Visibility,
        about: Visibility,
        read_receipts: bool,
    },
    /// `user`'s profile as this user may see it. Answered `Profile`.
    GetProfile {
        client_msg_id: ClientMsgId,
        user: UserId,
    },
    /// Posts a status for `audience` (reading `users`), visible for `ttl_ms`
    /// (0: 24 h, the most). Answered `Done`.
    PostStatus {
        client_msg_id: ClientMsgId,
        status_id: u64,
        ciphertext: Vec<u8>,
        media: Option<MediaRef>,
        audience: StatusAudience,
        users: Vec<UserId>,
        ttl_ms: u64,
    },
    /// The live statuses this user may see: of `author`, or (`None`) of
    /// every contact and this user's own. Answered `StatusList`.
    ListStatus {
        client_msg_id: ClientMsgId,
        author: Option<UserId>,
    },
    /// Marks `author`'s status `status_id` as viewed. Answered `Done` (or
    /// `Expired`, `UnknownRecipient`).
    ViewStatus {
        client_msg_id: ClientMsgId,
        author: UserId,
        status_id: u64,
    },
    /// Phone hashes ([`crate::social::contact_hash`]). Answered `ContactsMatched`.
    SyncContacts {
        client_msg_id: ClientMsgId,
        hashes: Vec<[u8; 32]>,
    },
    // ---- E2EE (issue 14) ----
    /// Publishes this device's one-time keys (ids strictly increasing per
    /// device) and/or replaces its fallback key (`fallback_signature`: the
    /// device's Ed25519 signature over the key's bytes). Answered
    /// [`ServerFrame::KeysUploaded`].
    UploadKeys {
        client_msg_id: ClientMsgId,
        one_time_keys: Vec<Prekey>,
        fallback_key: Option<Prekey>,
        fallback_signature: Vec<u8>,
    },
    /// Claims one one-time key of every device of `user` (a device with none
    /// left gives its fallback key). Answered [`ServerFrame::KeyBundle`];
    /// rate-limited per requesting user (`RateLimited`, `retry_after_ms`).
    ClaimKeys {
        client_msg_id: ClientMsgId,
        user: UserId,
    },
    /// The devices of `user` and their identity and fallback keys, claiming
    /// nothing. Answered [`ServerFrame::DeviceKeyList`].
    GetDeviceKeys {
        client_msg_id: ClientMsgId,
        user: UserId,
    },
}

// ---- group info and message info (issue 12) ----

/// A group as its members see it: name, description and members (in user
/// id order, with the seq that last made each a member and whether they are
/// admin), as of its timeline item `last_seq`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub last_seq: Seq,
    pub name: String,
    pub description: String,
    pub members: Vec<(UserId, Member)>,
    /// The group's picture (a media reference; `None`: none).
    pub icon: Option<MediaRef>,
}

/// When one member first had a message on a device (`delivered_at_ms`) and
/// first read it (`read_at_ms`): the commit times of the receipts that first
/// covered it; `None`: not yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageReceipt {
    pub user: UserId,
    pub delivered_at_ms: Option<u64>,
    pub read_at_ms: Option<u64>,
}

pub(crate) fn group_members_fb(members: &[(UserId, Member)]) -> Vec<fe::GroupMember> {
    members.iter().map(|(u, m)| fe::GroupMember::new(u.0, m.since.0, m.admin)).collect()
}

pub(crate) fn group_members(v: flatbuffers::Vector<'_, fe::GroupMember>) -> Vec<(UserId, Member)> {
    v.iter().map(|m| (UserId(m.user()), Member { since: Seq(m.since()), admin: m.admin() })).collect()
}

pub(crate) fn receipts_fb(entries: &[MessageReceipt]) -> Vec<fe::MessageReceipt> {
    entries
        .iter()
        .map(|e| fe::MessageReceipt::new(e.user.0, e.delivered_at_ms.unwrap_or(0), e.read_at_ms.unwrap_or(0)))
        .collect()
}

pub(crate) fn receipts(v: flatbuffers::Vector<'_, fe::MessageReceipt>) -> Vec<MessageReceipt> {
    let time = |ms: u64| (ms != 0).then_some(ms);
    v.iter()
        .map(|e| MessageReceipt {
            user: UserId(e.user()),
            delivered_at_ms: time(e.delivered_at_ms()),
            read_at_ms: time(e.read_at_ms()),
        })
        .collect()
}

/// What a [`ClientFrame::Group`] does. The chat partition enforces the rules:
/// only admins edit, a group never loses its last admin (the oldest member is
/// promoted when the last admin leaves), at most [`MAX_GROUP_MEMBERS`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupOp {
    /// Create the group with the sender as its admin and `members` (the others).
    Create {
        name: String,
        members: Vec<UserId>,
    },
    Add {
        member: UserId,
    },
    Remove {
        member: UserId,
    },
    Promote {
        member: UserId,
    },
    Demote {
        member: UserId,
    },
    Leave,
    ChangeInfo {
        name: String,
        description: String,
        /// The group's picture (a media reference, opaque to chorus; `None`: none).
        icon: Option<MediaRef>,
    },
}

impl GroupOp {
    /// The chat-partition command that carries the operation out on `chat`.
    pub fn command(&self, chat: ChatId) -> CommandBody {
        match self {
            GroupOp::Create { name, members } => {
                CommandBody::CreateGroup { chat, name: name.clone(), members: members.clone() }
            }
            GroupOp::Add { member } => CommandBody::AddMember { chat, member: *member },
            GroupOp::Remove { member } => CommandBody::RemoveMember { chat, member: *member },
            GroupOp::Promote { member } => CommandBody::PromoteMember { chat, member: *member },
            GroupOp::Demote { member } => CommandBody::DemoteMember { chat, member: *member },
            GroupOp::Leave => CommandBody::LeaveGroup { chat },
            GroupOp::ChangeInfo { name, description, icon } => CommandBody::ChangeGroupInfo {
                chat,
                name: name.clone(),
                description: description.clone(),
                icon: icon.clone(),
            },
        }
    }

    /// The name of the operation, for logs and the CLI.
    pub fn name(&self) -> &'static str {
        match self {
            GroupOp::Create { .. } => "create",
            GroupOp::Add { .. } => "add",
            GroupOp::Remove { .. } => "remove",
            GroupOp::Promote { .. } => "promote",
            GroupOp::Demote { .. } => "demote",
            GroupOp::Leave => "leave",
            GroupOp::ChangeInfo { .. } => "change-info",
        }
    }

    /// Checks the field limits (as decoding does).
    ///
    /// # Errors
    /// [`Error::TooLarge`] naming the first field over its limit.
    pub fn validate(&self) -> Result<()> {
        match self {
            GroupOp::Create { name, members } => {
                check_len("group name", name.len(), MAX_NAME_BYTES)?;
                check_len("group members", members.len(), MAX_GROUP_MEMBERS)
            }
            GroupOp::ChangeInfo { name, description, icon } => {
                check_len("group name", name.len(), MAX_NAME_BYTES)?;
                check_len("group description", description.len(), MAX_ABOUT_BYTES)?;
                icon.as_ref().map_or(Ok(()), MediaRef::validate)
            }
            GroupOp::Add { .. }
            | GroupOp::Remove { .. }
            | GroupOp::Promote { .. }
            | GroupOp::Demote { .. }
            | GroupOp::Leave => Ok(()),
        }
    }

    fn kind_fb(&self) -> fe::GroupOpKind {
        match self {
            GroupOp::Create { .. } => fe::GroupOpKind::Create,
            GroupOp::Add { .. } => fe::GroupOpKind::Add,
            GroupOp::Remove { .. } => fe::GroupOpKind::Remove,
            GroupOp::Promote { .. } => fe::GroupOpKind::Promote,
            GroupOp::Demote { .. } => fe::GroupOpKind::Demote,
            GroupOp::Leave => fe::GroupOpKind::Leave,
            GroupOp::ChangeInfo { .. } => fe::GroupOpKind::ChangeInfo,
        }
    }

    fn members(&self) -> Vec<u64> {
        match self {
            GroupOp::Create { members, .. } => members.iter().map(|m| m.0).collect(),
            GroupOp::Add { member }
            | GroupOp::Remove { member }
            | GroupOp::Promote { member }
            | GroupOp::Demote { member } => {
                vec![member.0]
            }
            GroupOp::Leave | GroupOp::ChangeInfo { .. } => Vec::new(),
        }
    }

    /// The change a committed group event made: `(chat, seq, change)`. `None`
    /// for every other event.
    pub fn of_event(body: &crate::EventBody) -> Option<(ChatId, Seq, GroupOp)> {
        use crate::EventBody as E;
        Some(match body {
            E::GroupCreated { chat, seq, name, members } => {
                (*chat, *seq, GroupOp::Create { name: name.clone(), members: members.clone() })
            }
            E::MemberAdded { chat, seq, member } => (*chat, *seq, GroupOp::Add { member: *member }),
            E::MemberRemoved { chat, seq, member } => (*chat, *seq, GroupOp::Remove { member: *member }),
            E::MemberPromoted { chat, seq, member } => (*chat, *seq, GroupOp::Promote { member: *member }),
            E::MemberDemoted { chat, seq, member } => (*chat, *seq, GroupOp::Demote { member: *member }),
            E::MemberLeft { chat, seq } => (*chat, *seq, GroupOp::Leave),
            E::GroupInfoChanged { chat, seq, name, description, icon } => (
                *chat,
                *seq,
                GroupOp::ChangeInfo { name: name.clone(), description: description.clone(), icon: icon.clone() },
            ),
            _ => return None,
        })
    }

    fn from_fb(b: &fe::Group<'_>) -> Result<GroupOp> {
        GroupOp::from_parts("group request", b.kind(), b.members(), b.name(), b.description(), b.icon())
    }

    fn from_parts(
        what: &'static str,
        kind: fe::GroupOpKind,
        members: Option<flatbuffers::Vector<'_, u64>>,
        name: Option<&str>,
        description: Option<&str>,
        icon: Option<crate::fb::MediaRef<'_>>,
    ) -> Result<GroupOp> {
        let members = members.map(|m| m.iter().map(UserId).collect::<Vec<_>>()).unwrap_or_default();
        check_len("group members", members.len(), MAX_GROUP_MEMBERS)?;
        let one = || match members.as_slice() {
            [m] => Ok(*m),
            _ => Err(Error::malformed(what, format!("needs exactly one member, has {}", members.len()))),
        };
        let name = name.unwrap_or_default().to_owned();
        Ok(match kind {
            fe::GroupOpKind::Create => GroupOp::Create { name, members: members.clone() },
            fe::GroupOpKind::Add => GroupOp::Add { member: one()? },
            fe::GroupOpKind::Remove => GroupOp::Remove { member: one()? },
            fe::GroupOpKind::Promote => GroupOp::Promote { member: one()? },
            fe::GroupOpKind::Demote => GroupOp::Demote { member: one()? },
            fe::GroupOpKind::Leave => GroupOp::Leave,
            fe::GroupOpKind::ChangeInfo => {
                let icon = codec::opt_media(icon);
                GroupOp::ChangeInfo { name, description: description.unwrap_or_default().to_owned(), icon }
            }
            other => return Err(Error::malformed(what, format!("unknown operation {}", other.0))),
        })
    }
}

/// What happened to a device of a user: the projector's account updates
/// (`bus::AccountUpdate`) and the edge's [`ServerFrame::DeviceNotice`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeviceNoticeKind {
    /// A new device was linked (registered with the phone's code).
    Linked,
    /// A device was unlinked: its connections must close.
    Unlinked,
    /// A device's session was revoked (logout): its connections must close.
    LoggedOut,
}

/// What the edge sends to a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerFrame {
    OtpSent {
        phone: String,
        expires_in_ms: u64,
    },
    /// Registration is complete; keep `token` secret, it logs this device in.
    Registered {
        user: UserId,
        device: DeviceId,
        token: [u8; 32],
    },
    /// `contact_key`: the deployment's key for [`crate::social::contact_hash`].
    LoggedIn {
        user: UserId,
        device: DeviceId,
        contact_key: Option<[u8; 32]>,
    },
    /// The message `client_msg_id` is committed at `(chat, seq)`.
    Sent {
        client_msg_id: ClientMsgId,
        chat: ChatId,
        seq: Seq,
        server_time_ms: u64,
    },
    /// A message for this device.
    Deliver {
        chat: ChatId,
        seq: Seq,
        sender: UserId,
        sender_device: DeviceId,
        client_msg_id: ClientMsgId,
        at_ms: u64,
        ciphertext: Vec<u8>,
        media: Option<MediaRef>,
    },
    /// The other members' cumulative receipt of this device's messages in `chat`.
    Receipt {
        chat: ChatId,
        up_to_seq: Seq,
        status: ReceiptKind,
    },
    /// A `Sync` is complete: `chats` chats had something newer.
    SyncDone {
        chats: u32,
    },
    Pong {
        nonce: u64,
    },
    /// A refused frame; `client_msg_id` names the refused `Send` (or request),
    /// if it was one; `retry_after_ms`: when a rate limit allows it again.
    Error {
        code: EdgeErrorCode,
        message: String,
        client_msg_id: Option<ClientMsgId>,
        retry_after_ms: Option<u64>,
    },
    /// The request `client_msg_id` (`SetPin`, `UnlinkDevice`, `Logout`,
    /// `Block`, `Group`) is done. `at`: where a request that changed a chat
    /// (a group request) is in its timeline.
    Done {
        client_msg_id: ClientMsgId,
        at: Option<(ChatId, Seq)>,
    },
    /// Something happened to `device` of this user at `at_ms` (delivery stream).
    DeviceNotice {
        kind: DeviceNoticeKind,
        device: DeviceId,
        at_ms: u64,
    },
    /// A group's roster or info changed at `(chat, seq)` (delivery stream, in
    /// the chat's order with its messages). `actor`/`actor_device`/
    /// `client_msg_id` made the change; a [`GroupOp::Create`] here lists every
    /// founder, the creator included.
    ChatChange {
        chat: ChatId,
        seq: Seq,
        actor: UserId,
        actor_device: DeviceId,
        client_msg_id: ClientMsgId,
        at_ms: u64,
        change: GroupOp,
    },
    // ---- linked devices (issue 12) ----
    /// The pairing code of a `PairRequest` (single use, for `expires_in_ms`).
    PairCode {
        code: String,
        expires_in_ms: u64,
    },
    /// The answer to `ListDevices`: the user's linked devices in id order.
    DeviceList {
        client_msg_id: ClientMsgId,
        devices: Vec<DeviceInfo>,
    },
    // ---- group info and message info (issue 12) ----
    /// The answer to [`ClientFrame::GroupInfo`] `client_msg_id`.
    GroupInfo {
        client_msg_id: ClientMsgId,
        chat: ChatId,
        info: GroupInfo,
    },
    /// The answer to [`ClientFrame::MessageInfo`] `client_msg_id`: one entry
    /// per current member but the sender who was a member at `seq`.
    MessageInfo {
        client_msg_id: ClientMsgId,
        chat: ChatId,
        seq: Seq,
        entries: Vec<MessageReceipt>,
    },
    // ---- presence and typing (issue 12) ----
    /// The presence of a watched user (delivery stream). `visible` false:
    /// withheld by their privacy settings or a block (`online` false,
    /// `last_seen_ms` 0). `last_seen_ms`: when it last changed (0: never).
    Presence {
        user: UserId,
        visible: bool,
        online: bool,
        last_seen_ms: u64,
    },
    /// `user` is typing (or stopped) in `chat` (delivery stream). A typing
    /// indicator lapses [`TYPING_EXPIRY_MS`] after it arrived unless refreshed.
    Typing {
        chat: ChatId,
        user: UserId,
        typing: bool,
    },
    // ---- social ----
    /// The answer to `GetProfile`.
    Profile {
        client_msg_id: ClientMsgId,
        profile: Profile,
    },
    /// The answer to `ListStatus`.
    StatusList {
        client_msg_id: ClientMsgId,
        entries: Vec<StatusEntry>,
    },
    /// The answer to `SyncContacts`: the registered ones.
    ContactsMatched {
        client_msg_id: ClientMsgId,
        matches: Vec<ContactMatch>,
    },
    // ---- E2EE (issue 14) ----
    /// The answer to `UploadKeys`: this device's unclaimed one-time keys now.
    KeysUploaded {
        client_msg_id: ClientMsgId,
        one_time_keys_left: u32,
    },
    /// The answer to `ClaimKeys`: one entry per device of `user`.
    KeyBundle {
        client_msg_id: ClientMsgId,
        user: UserId,
        devices: Vec<DeviceKeys>,
    },
    /// The answer to `GetDeviceKeys` (no `one_time_key`).
    DeviceKeyList {
        client_msg_id: ClientMsgId,
        user: UserId,
        devices: Vec<DeviceKeys>,
    },
    /// The answer to a `Send` whose `devices_digest` is stale: nothing was
    /// appended; `devices` is the current list (sorted).
    StaleDevices {
        client_msg_id: ClientMsgId,
        devices: Vec<(UserId, DeviceId)>,
    },
    /// This device holds fewer than [`PREKEYS_LOW_WATERMARK`] unclaimed
    /// one-time keys (at login, and live when a claim takes it below).
    KeysLow {
        one_time_keys_left: u32,
    },
}

// ---- linked devices (issue 12) ----------------------------------------------------

/// One linked device of a user (`ServerFrame::DeviceList`, the devices view).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub device: DeviceId,
    pub name: String,
    /// When the device was linked (the log's time of its `DeviceLinked`).
    pub linked_at_ms: u64,
}

/// Characters of a pairing code (Crockford's base32: 50 random bits).
pub const PAIRING_CODE_CHARS: usize = 10;
const PAIRING_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A pairing code made of `random` bits, as shown: `XXXXX-XXXXX`.
pub fn pairing_code(random: u64) -> String {
    let mut out = String::with_capacity(PAIRING_CODE_CHARS + 1);
    for i in 0..PAIRING_CODE_CHARS {
        if i == PAIRING_CODE_CHARS / 2 {
            out.push('-');
        }
        let digit = ((random >> (5 * i)) & 31) as usize;
        out.extend(PAIRING_ALPHABET.get(digit).map(|b| char::from(*b)));
    }
    out
}

/// The hash a pairing code is known by outside the edge that issued it (the
/// bus subject of its claim): BLAKE3 over a domain tag and the code as
/// [`pairing_code`] writes it. Case, dashes and spaces are ignored, and the
/// look-alikes `O`, `I` and `L` read as `0`, `1`, `1`.
///
/// # Errors
/// [`Error::Invalid`] unless the code is [`PAIRING_CODE_CHARS`] characters of the alphabet.
pub fn pairing_code_hash(code: &str) -> Result<[u8; 32]> {
    let mut digits = Vec::with_capacity(PAIRING_CODE_CHARS);
    for ch in code.chars() {
        let ch = match ch.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !ch.is_ascii() || !PAIRING_ALPHABET.contains(&(ch as u8)) || digits.len() == PAIRING_CODE_CHARS {
            return Err(Error::Invalid {
                what: "pairing code",
                reason: format!("{PAIRING_CODE_CHARS} characters of 0-9 and A-Z (without I, L, O and U)"),
            });
        }
        digits.push(ch as u8);
    }
    if digits.len() != PAIRING_CODE_CHARS {
        return Err(Error::Invalid { what: "pairing code", reason: format!("{PAIRING_CODE_CHARS} characters") });
    }
    let mut h = blake3::Hasher::new();
    h.update(b"chorus/pairing-code/v1\0");
    h.update(&digits);
    Ok(*h.finalize().as_bytes())
}

/// A typing indicator lapses this long after its last refresh: the receiving
/// SDK clears it (a client that vanishes sends no stop).
pub const TYPING_EXPIRY_MS: u64 = 5_000;

/// Client message ids with this bit set are reserved for commands the edge makes
/// itself (registration, acks); a `Send` carrying one is refused with `BadFrame`.
pub const CLIENT_MSG_ID_RESERVED_BIT: u64 = 1 << 63;

// ---- phone numbers --------------------------------------------------------------

/// Normalizes a phone number to E.164: `+` then 8 to 15 digits, the first not 0.
/// Spaces, dashes, dots and parentheses are dropped.
///
/// # Errors
/// [`Error::Invalid`] for anything else.
pub fn normalize_phone(phone: &str) -> Result<String> {
    let invalid = |reason: &str| Error::Invalid { what: "phone", reason: reason.to_owned() };
    let mut out = String::with_capacity(16);
    for (i, ch) in phone.trim().chars().enumerate() {
        match ch {
            '+' if i == 0 => out.push('+'),
            '0'..='9' => out.push(ch),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return Err(invalid("only digits, spaces, dashes, dots and parentheses after a leading '+'")),
        }
        if out.len() > 16 {
            return Err(invalid("more than 15 digits"));
        }
    }
    let digits = out.strip_prefix('+').ok_or_else(|| invalid("must start with '+' and a country code"))?;
    if !(8..=15).contains(&digits.len()) || digits.starts_with('0') {
        return Err(invalid("must have 8 to 15 digits, the first not 0"));
    }
    Ok(out)
}

/// The user id of a phone number: the first 8 bytes (little endian) of BLAKE3 over
/// a domain tag and the normalized number. Every edge derives the same id.
///
/// # Errors
/// As [`normalize_phone`].
pub fn user_for_phone(phone: &str) -> Result<UserId> {
    let phone = normalize_phone(phone)?;
    let mut h = blake3::Hasher::new();
    h.update(b"chorus/user/phone/v1\0");
    h.update(phone.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&h.finalize().as_bytes()[..8]);
    Ok(UserId(u64::from_le_bytes(id)))
}

// ---- framing --------------------------------------------------------------------

/// Appends `frame` to `out` with its u32 big-endian length prefix.
///
/// # Panics
/// If `frame` is longer than `u32::MAX` (no encoder here makes one).
#[expect(clippy::expect_used, reason = "documented panic: frames are bounded far below u32::MAX")]
pub fn write_frame(out: &mut Vec<u8>, frame: &[u8]) {
    let len = u32::try_from(frame.len()).expect("frame length fits u32");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(frame);
}

/// Splits a byte stream into frames: push what the stream yields, pop whole frames.
/// A length prefix above [`MAX_EDGE_FRAME_BYTES`] is an error at once, before
/// buffering the body, and the stream cannot be resynchronized afterwards.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn new() -> Self {
        FrameReader::default()
    }

    /// Buffers bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if buffered.
    ///
    /// # Errors
    /// [`Error::TooLarge`] (`what: "edge frame"`) if the next length prefix is above
    /// [`MAX_EDGE_FRAME_BYTES`]; close the stream.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>> {
        let Some(prefix) = self.buf.first_chunk::<4>() else { return Ok(None) };
        let len = u32::from_be_bytes(*prefix) as usize;
        check_len("edge frame", len, MAX_EDGE_FRAME_BYTES)?;
        let Some(frame) = self.buf.get(4..4 + len) else { return Ok(None) };
        let frame = frame.to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(frame))
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// The length-prefixed frame a device receives for a committed timeline item:
/// the `Deliver` frame of a `MessageSent`, built straight from the record (the
/// ciphertext is copied once, into the frame, and the prefix is written in
/// front of the builder's output in place: the result is a view of the
/// builder's buffer), or the [`ServerFrame::ChatChange`] of a group event. An
/// edge builds it once per item and hands the same bytes to every device that
/// receives it. `None` for any other event (receipts, edits, …: they only move
/// the timeline).
///
/// Decodes (after its prefix) as the [`ServerFrame::Deliver`] or
/// [`ServerFrame::ChatChange`] of the record.
pub fn deliver_frame(record: &crate::EventRecord) -> Option<bytes::Bytes> {
    let e = &record.event;
    if let Some((chat, seq, change)) = GroupOp::of_event(&e.body) {
        let frame = ServerFrame::ChatChange {
            chat,
            seq,
            actor: e.origin.user,
            actor_device: e.origin.device,
            client_msg_id: e.origin.client_msg_id,
            at_ms: e.at_ms,
            change,
        };
        let mut out = Vec::new();
        write_frame(&mut out, &frame.encode());
        return Some(bytes::Bytes::from(out));
    }
    let crate::EventBody::MessageSent { chat, seq, ciphertext, media } = &e.body else { return None };
    let media_bytes = media.as_ref().map_or(0, |m| m.mime.len() + 64);
    let mut fbb = Builder::with_capacity(ciphertext.len() + media_bytes + 160);
    let ciphertext = fbb.create_vector(ciphertext);
    let media = codec::opt_media_fb(&mut fbb, media);
    let chat = codec::chat_fb(chat);
    let t = fe::Deliver::create(
        &mut fbb,
        &fe::DeliverArgs {
            chat: Some(&chat),
            seq: seq.0,
            sender: e.origin.user.0,
            sender_device: e.origin.device.0,
            client_msg_id: e.origin.client_msg_id.0,
            at_ms: e.at_ms,
            ciphertext: Some(ciphertext),
            media,
        },
    );
    let root = fe::ServerFrame::create(
        &mut fbb,
        &fe::ServerFrameArgs { body_type: fe::ServerFrameBody::Deliver, body: Some(t.as_union_value()) },
    );
    fbb.finish(root, Some(SERVER_FRAME_IDENT));
    let (mut buf, head) = fbb.collapse();
    let len = u32::try_from(buf.len().saturating_sub(head)).ok()?.to_be_bytes();
    match head.checked_sub(4) {
        Some(start) => {
            buf.get_mut(start..head)?.copy_from_slice(&len);
            Some(bytes::Bytes::from(buf).slice(start..))
        }
        // The builder used its whole buffer: no room for the prefix in place.
        None => {
            let mut out = Vec::with_capacity(4 + buf.len() - head);
            write_frame(&mut out, buf.get(head..)?);
            Some(bytes::Bytes::from(out))
        }
    }
}

// ---- ClientFrame ------------------------------------------------------------------

impl ClientFrame {
    /// The name of the frame's kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientFrame::RequestOtp { .. } => "RequestOtp",
            ClientFrame::VerifyOtp { .. } => "VerifyOtp",
            ClientFrame::Login { .. } => "Login",
            ClientFrame::Send { .. } => "Send",
            ClientFrame::Ack { .. } => "Ack",
            ClientFrame::Sync { .. } => "Sync",
            ClientFrame::Ping { .. } => "Ping",
            ClientFrame::SetPin { .. } => "SetPin",
            ClientFrame::UnlinkDevice { .. } => "UnlinkDevice",
            ClientFrame::Logout { .. } => "Logout",
            ClientFrame::Block { .. } => "Block",
            ClientFrame::Group { .. } => "Group",
            ClientFrame::PairRequest { .. } => "PairRequest",
            ClientFrame::LinkDevice { .. } => "LinkDevice",
            ClientFrame::ListDevices { .. } => "ListDevices",
            ClientFrame::GroupInfo { .. } => "GroupInfo",
            ClientFrame::MessageInfo { .. } => "MessageInfo",
            ClientFrame::SubscribePresence { .. } => "SubscribePresence",
            ClientFrame::Typing { .. } => "Typing",
            ClientFrame::SetPrivacy { .. } => "SetPrivacy",
            ClientFrame::SetProfile { .. } => "SetProfile",
            ClientFrame::GetProfile { .. } => "GetProfile",
            ClientFrame::PostStatus { .. } => "PostStatus",
            ClientFrame::ListStatus { .. } => "ListStatus",
            ClientFrame::ViewStatus { .. } => "ViewStatus",
            ClientFrame::SyncContacts { .. } => "SyncContacts",
            ClientFrame::UploadKeys { .. } => "UploadKeys",
            ClientFrame::ClaimKeys { .. } => "ClaimKeys",
            ClientFrame::GetDeviceKeys { .. } => "GetDeviceKeys",
        }
    }

    /// Checks the field limits.
    ///
    /// # Errors
    /// [`Error::TooLarge`] naming the first field over its limit.
    pub fn validate(&self) -> Result<()> {
        match self {
            ClientFrame::RequestOtp { phone } => check_len("phone", phone.len(), MAX_PHONE_BYTES),
            ClientFrame::VerifyOtp { phone, code, device_name, identity_key, pin } => {
                check_len("phone", phone.len(), MAX_PHONE_BYTES)?;
                check_len("otp code", code.len(), MAX_OTP_CODE_BYTES)?;
                check_len("pin", pin.as_ref().map_or(0, String::len), MAX_PIN_BYTES)?;
                check_len("device name", device_name.len(), MAX_NAME_BYTES)?;
                check_len("identity key", identity_key.len(), MAX_KEY_BYTES)
            }
            ClientFrame::Send { ciphertext, media, .. } => {
                check_len("ciphertext", ciphertext.len(), MAX_CIPHERTEXT_BYTES)?;
                media.as_ref().map_or(Ok(()), MediaRef::validate)
            }
            ClientFrame::Sync { since } => check_len("sync cursors", since.len(), MAX_SYNC_CURSORS),
            ClientFrame::SetPin { pin, .. } => check_len("pin", pin.len(), MAX_PIN_BYTES),
            ClientFrame::Group { op, .. } => op.validate(),
            ClientFrame::PairRequest { device_name, identity_key } => {
                check_len("device name", device_name.len(), MAX_NAME_BYTES)?;
                check_len("identity key", identity_key.len(), MAX_KEY_BYTES)
            }
            ClientFrame::LinkDevice { code, .. } => check_len("pairing code", code.len(), MAX_PAIRING_CODE_BYTES),
            ClientFrame::ListDevices { .. } => Ok(()),
            ClientFrame::SubscribePresence { users } => check_len("watched users", users.len(), MAX_WATCHED_USERS),
            ClientFrame::Typing { .. } | ClientFrame::SetPrivacy { .. } => Ok(()),
            ClientFrame::SetProfile { name, about, avatar, .. } => {
                check_len("profile name", name.len(), MAX_NAME_BYTES)?;
                check_len("profile about", about.len(), MAX_ABOUT_BYTES)?;
                avatar.as_ref().map_or(Ok(()), MediaRef::validate)
            }
            ClientFrame::PostStatus { ciphertext, media, users, .. } => {
                check_len("ciphertext", ciphertext.len(), MAX_CIPHERTEXT_BYTES)?;
                check_len("status users", users.len(), MAX_ACL)?;
                media.as_ref().map_or(Ok(()), MediaRef::validate)
            }
            ClientFrame::SyncContacts { hashes, .. } => {
                check_len("contact hashes", hashes.len(), MAX_CONTACT_HASHES_PER_SYNC)
            }
            ClientFrame::GetProfile { .. } | ClientFrame::ListStatus { .. } | ClientFrame::ViewStatus { .. } => Ok(()),
            ClientFrame::Login { .. }
            | ClientFrame::Ack { .. }
            | ClientFrame::Ping { .. }
            | ClientFrame::UnlinkDevice { .. }
            | ClientFrame::Logout { .. }
            | ClientFrame::Block { .. }
            | ClientFrame::GroupInfo { .. }
            | ClientFrame::MessageInfo { .. } => Ok(()),
            ClientFrame::UploadKeys { one_time_keys, fallback_key, fallback_signature, .. } => {
                keys::validate_upload(one_time_keys, fallback_key, fallback_signature)
            }
            ClientFrame::ClaimKeys { .. } | ClientFrame::GetDeviceKeys { .. } => Ok(()),
        }
    }

    /// Encodes as a flatbuffer with file identifier `CECF` (without the length
    /// prefix: see [`write_frame`]). Does not validate.
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = Builder::with_capacity(128);
        let (body_type, body) = match self {
            ClientFrame::RequestOtp { phone } => {
                let phone = fbb.create_string(phone);
                let t = fe::RequestOtp::create(&mut fbb, &fe::RequestOtpArgs { phone: Some(phone) });
                (fe::ClientFrameBody::RequestOtp, t.as_union_value())
            }
            ClientFrame::VerifyOtp { phone, code, device_name, identity_key, pin } => {
                let phone = fbb.create_string(phone);
                let code = fbb.create_string(code);
                let device_name = fbb.create_string(device_name);
                let identity_key = fbb.create_vector(identity_key);
                let pin = pin.as_ref().map(|p| fbb.create_string(p));
                let t = fe::VerifyOtp::create(
                    &mut fbb,
                    &fe::VerifyOtpArgs {
                        phone: Some(phone),
                        code: Some(code),
                        device_name: Some(device_name),
                        identity_key: Some(identity_key),
                        pin,
                    },
                );
                (fe::ClientFrameBody::VerifyOtp, t.as_union_value())
            }
            ClientFrame::Login { user, device, token } => {
                let token = fe::Token(*token);
                let t =
                    fe::Login::create(&mut fbb, &fe::LoginArgs { user: user.0, device: device.0, token: Some(&token) });
                (fe::ClientFrameBody::Login, t.as_union_value())
            }
            ClientFrame::Send { to, client_msg_id, ciphertext, media, devices_digest } => {
                let (to_type, to) = match to {
                    Recipient::User(u) => {
                        let t = fe::RecipientUser::create(&mut fbb, &fe::RecipientUserArgs { user: u.0 });
                        (fe::Recipient::RecipientUser, t.as_union_value())
                    }
                    Recipient::Group(c) => {
                        let chat = codec::chat_fb(c);
                        let t = fe::RecipientGroup::create(&mut fbb, &fe::RecipientGroupArgs { chat: Some(&chat) });
                        (fe::Recipient::RecipientGroup, t.as_union_value())
                    }
                };
                let ciphertext = fbb.create_vector(ciphertext);
                let media = codec::opt_media_fb(&mut fbb, media);
                let t = fe::Send::create(
                    &mut fbb,
                    &fe::SendArgs {
                        to_type,
                        to: Some(to),
                        client_msg_id: client_msg_id.0,
                        ciphertext: Some(ciphertext),
                        media,
                        devices_digest: devices_digest.map(crate::fb::Blake3Digest).as_ref(),
                    },
                );
                (fe::ClientFrameBody::Send, t.as_union_value())
            }
            ClientFrame::Ack { chat, kind, up_to_seq } => {
                let chat = codec::chat_fb(chat);
                let t = fe::Ack::create(
                    &mut fbb,
                    &fe::AckArgs { chat: Some(&chat), kind: codec::receipt_kind_fb(*kind), up_to_seq: up_to_seq.0 },
                );
                (fe::ClientFrameBody::Ack, t.as_union_value())
            }
            ClientFrame::Sync { since } => {
                let cursors: Vec<fe::SyncCursor> =
                    since.iter().map(|(c, s)| fe::SyncCursor::new(&codec::chat_fb(c), s.0)).collect();
                let since = fbb.create_vector(&cursors);
                let t = fe::Sync::create(&mut fbb, &fe::SyncArgs { since: Some(since) });
                (fe::ClientFrameBody::Sync, t.as_union_value())
            }
            ClientFrame::Ping { nonce } => {
                let t = fe::Ping::create(&mut fbb, &fe::PingArgs { nonce: *nonce });
                (fe::ClientFrameBody::Ping, t.as_union_value())
            }
            ClientFrame::SetPin { client_msg_id, pin } => {
                let pin = fbb.create_string(pin);
                let t =
                    fe::SetPin::create(&mut fbb, &fe::SetPinArgs { client_msg_id: client_msg_id.0, pin: Some(pin) });
                (fe::ClientFrameBody::SetPin, t.as_union_value())
            }
            ClientFrame::UnlinkDevice { client_msg_id, device } => {
                let t = fe::UnlinkDevice::create(
                    &mut fbb,
                    &fe::UnlinkDeviceArgs { client_msg_id: client_msg_id.0, device: device.0 },
                );
                (fe::ClientFrameBody::UnlinkDevice, t.as_union_value())
            }
            ClientFrame::Logout { client_msg_id } => {
                let t = fe::Logout::create(&mut fbb, &fe::LogoutArgs { client_msg_id: client_msg_id.0 });
                (fe::ClientFrameBody::Logout, t.as_union_value())
            }
            ClientFrame::Block { client_msg_id, user, blocked } => {
                let t = fe::Block::create(
                    &mut fbb,
                    &fe::BlockArgs { client_msg_id: client_msg_id.0, user: user.0, blocked: *blocked },
                );
                (fe::ClientFrameBody::Block, t.as_union_value())
            }
            ClientFrame::Group { client_msg_id, chat, op } => {
                let chat = codec::chat_fb(chat);
                let members = op.members();
                let members = (!members.is_empty()).then(|| fbb.create_vector(&members));
                let (name, description, icon) = match op {
                    GroupOp::Create { name, .. } => (Some(fbb.create_string(name)), None, None),
                    GroupOp::ChangeInfo { name, description, icon } => (
                        Some(fbb.create_string(name)),
                        Some(fbb.create_string(description)),
                        codec::opt_media_fb(&mut fbb, icon),
                    ),
                    _ => (None, None, None),
                };
                let t = fe::Group::create(
                    &mut fbb,
                    &fe::GroupArgs {
                        client_msg_id: client_msg_id.0,
                        chat: Some(&chat),
                        kind: op.kind_fb(),
                        members,
                        name,
                        description,
                        icon,
                    },
                );
                (fe::ClientFrameBody::Group, t.as_union_value())
            }
            ClientFrame::PairRequest { device_name, identity_key } => {
                let device_name = fbb.create_string(device_name);
                let identity_key = fbb.create_vector(identity_key);
                let t = fe::PairRequest::create(
                    &mut fbb,
                    &fe::PairRequestArgs { device_name: Some(device_name), identity_key: Some(identity_key) },
                );
                (fe::ClientFrameBody::PairRequest, t.as_union_value())
            }
            ClientFrame::LinkDevice { client_msg_id, code } => {
                let code = fbb.create_string(code);
                let t = fe::LinkDevice::create(
                    &mut fbb,
                    &fe::LinkDeviceArgs { client_msg_id: client_msg_id.0, code: Some(code) },
                );
                (fe::ClientFrameBody::LinkDevice, t.as_union_value())
            }
            ClientFrame::ListDevices { client_msg_id } => {
                let t = fe::ListDevices::create(&mut fbb, &fe::ListDevicesArgs { client_msg_id: client_msg_id.0 });
                (fe::ClientFrameBody::ListDevices, t.as_union_value())
            }
            ClientFrame::GroupInfo { client_msg_id, chat } => {
                let chat = codec::chat_fb(chat);
                let t = fe::GroupInfoRequest::create(
                    &mut fbb,
                    &fe::GroupInfoRequestArgs { client_msg_id: client_msg_id.0, chat: Some(&chat) },
                );
                (fe::ClientFrameBody::GroupInfoRequest, t.as_union_value())
            }
            ClientFrame::MessageInfo { client_msg_id, chat, seq } => {
                let chat = codec::chat_fb(chat);
                let t = fe::MessageInfoRequest::create(
                    &mut fbb,
                    &fe::MessageInfoRequestArgs { client_msg_id: client_msg_id.0, chat: Some(&chat), seq: seq.0 },
                );
                (fe::ClientFrameBody::MessageInfoRequest, t.as_union_value())
            }
            ClientFrame::SubscribePresence { users } => {
                let users = codec::users_fb(&mut fbb, users);
                let t = fe::SubscribePresence::create(&mut fbb, &fe::SubscribePresenceArgs { users: Some(users) });
                (fe::ClientFrameBody::SubscribePresence, t.as_union_value())
            }
            ClientFrame::Typing { chat, typing } => {
                let chat = codec::chat_fb(chat);
                let t = fe::Typing::create(&mut fbb, &fe::TypingArgs { chat: Some(&chat), typing: *typing });
                (fe::ClientFrameBody::Typing, t.as_union_value())
            }
            ClientFrame::SetProfile { client_msg_id, name, about, avatar } => {
                let name = fbb.create_string(name);
                let about = fbb.create_string(about);
                let avatar = codec::opt_media_fb(&mut fbb, avatar);
                let t = fe::SetProfile::create(
                    &mut fbb,
                    &fe::SetProfileArgs {
                        client_msg_id: client_msg_id.0,
                        name: Some(name),
                        about: Some(about),
                        avatar,
                    },
                );
                (fe::ClientFrameBody::SetProfile, t.as_union_value())
            }
            ClientFrame::SetPrivacy { client_msg_id, last_seen, profile_photo, about, read_receipts } => {
                let t = fe::SetPrivacy::create(
                    &mut fbb,
                    &fe::SetPrivacyArgs {
                        client_msg_id: client_msg_id.0,
                        last_seen: codec::visibility_fb(*last_seen),
                        profile_photo: codec::visibility_fb(*profile_photo),
                        about: codec::visibility_fb(*about),
                        read_receipts: *read_receipts,
                    },
                );
                (fe::ClientFrameBody::SetPrivacy, t.as_union_value())
            }
            ClientFrame::GetProfile { client_msg_id, user } => {
                let t = fe::GetProfile::create(
                    &mut fbb,
                    &fe::GetProfileArgs { client_msg_id: client_msg_id.0, user: user.0 },
                );
                (fe::ClientFrameBody::GetProfile, t.as_union_value())
            }
            ClientFrame::PostStatus { client_msg_id, status_id, ciphertext, media, audience, users, ttl_ms } => {
                let ciphertext = fbb.create_vector(ciphertext);
                let media = codec::opt_media_fb(&mut fbb, media);
                let users = codec::users_fb(&mut fbb, users);
                let t = fe::PostStatus::create(
                    &mut fbb,
                    &fe::PostStatusArgs {
                        client_msg_id: client_msg_id.0,
                        status_id: *status_id,
                        ciphertext: Some(ciphertext),
                        media,
                        audience: audience.to_fb(),
                        users: Some(users),
                        ttl_ms: *ttl_ms,
                    },
                );
                (fe::ClientFrameBody::PostStatus, t.as_union_value())
            }
            ClientFrame::ListStatus { client_msg_id, author } => {
                let t = fe::ListStatus::create(
                    &mut fbb,
                    &fe::ListStatusArgs { client_msg_id: client_msg_id.0, author: author.map_or(0, |a| a.0) },
                );
                (fe::ClientFrameBody::ListStatus, t.as_union_value())
            }
            ClientFrame::ViewStatus { client_msg_id, author, status_id } => {
                let t = fe::ViewStatus::create(
                    &mut fbb,
                    &fe::ViewStatusArgs { client_msg_id: client_msg_id.0, author: author.0, status_id: *status_id },
                );
                (fe::ClientFrameBody::ViewStatus, t.as_union_value())
            }
            ClientFrame::SyncContacts { client_msg_id, hashes } => {
                let items: Vec<crate::fb::Blake3Digest> = hashes.iter().map(|h| crate::fb::Blake3Digest(*h)).collect();
                let hashes = fbb.create_vector(&items);
                let t = fe::SyncContacts::create(
                    &mut fbb,
                    &fe::SyncContactsArgs { client_msg_id: client_msg_id.0, hashes: Some(hashes) },
                );
                (fe::ClientFrameBody::SyncContacts, t.as_union_value())
            }
            ClientFrame::UploadKeys { client_msg_id, one_time_keys, fallback_key, fallback_signature } => {
                let one_time_keys = codec::prekeys_fb(&mut fbb, one_time_keys);
                let fallback_key = fallback_key.as_ref().map(|p| codec::prekey_fb(&mut fbb, p));
                let fallback_signature =
                    (!fallback_signature.is_empty()).then(|| fbb.create_vector(fallback_signature));
                let t = fe::UploadKeys::create(
                    &mut fbb,
                    &fe::UploadKeysArgs {
                        client_msg_id: client_msg_id.0,
                        one_time_keys: Some(one_time_keys),
                        fallback_key,
                        fallback_signature,
                    },
                );
                (fe::ClientFrameBody::UploadKeys, t.as_union_value())
            }
            ClientFrame::ClaimKeys { client_msg_id, user } => {
                let t = fe::ClaimKeys::create(
                    &mut fbb,
                    &fe::ClaimKeysArgs { client_msg_id: client_msg_id.0, user: user.0 },
                );
                (fe::ClientFrameBody::ClaimKeys, t.as_union_value())
            }
            ClientFrame::GetDeviceKeys { client_msg_id, user } => {
                let t = fe::GetDeviceKeys::create(
                    &mut fbb,
                    &fe::GetDeviceKeysArgs { client_msg_id: client_msg_id.0, user: user.0 },
                );
                (fe::ClientFrameBody::GetDeviceKeys, t.as_union_value())
            }
        };
        let root = fe::ClientFrame::create(&mut fbb, &fe::ClientFrameArgs { body_type, body: Some(body) });
        codec::finish(fbb, root, CLIENT_FRAME_IDENT)
    }

    /// Verifies and decodes a buffer made by [`ClientFrame::encode`], then validates it.
    ///
    /// # Errors
    /// [`Error::TooLarge`] above [`MAX_EDGE_FRAME_BYTES`] or a field limit (see
    /// [`EdgeErrorCode::for_decode_error`]); [`Error::Malformed`] if the verifier
    /// refuses it or it holds an unknown variant.
    pub fn decode(buf: &[u8]) -> Result<ClientFrame> {
        let f = codec::root::<fe::ClientFrame>(buf, "client frame", CLIENT_FRAME_IDENT, MAX_EDGE_FRAME_BYTES, 64)?;
        let tag = f.body_type();
        let bad = || codec::bad_union("client frame body", tag.0);
        let frame = match tag {
            fe::ClientFrameBody::RequestOtp => {
                let b = f.body_as_request_otp().ok_or_else(bad)?;
                ClientFrame::RequestOtp { phone: b.phone().to_owned() }
            }
            fe::ClientFrameBody::VerifyOtp => {
                let b = f.body_as_verify_otp().ok_or_else(bad)?;
                ClientFrame::VerifyOtp {
                    phone: b.phone().to_owned(),
                    code: b.code().to_owned(),
                    device_name: b.device_name().to_owned(),
                    identity_key: b.identity_key().bytes().to_vec(),
                    pin: b.pin().map(str::to_owned),
                }
            }
            fe::ClientFrameBody::Login => {
                let b = f.body_as_login().ok_or_else(bad)?;
                ClientFrame::Login { user: UserId(b.user()), device: DeviceId(b.device()), token: b.token().0 }
            }
            fe::ClientFrameBody::Send => {
                let b = f.body_as_send().ok_or_else(bad)?;
                let to_tag = b.to_type();
                let bad_to = || codec::bad_union("recipient", to_tag.0);
                let to = match to_tag {
                    fe::Recipient::RecipientUser => {
                        Recipient::User(UserId(b.to_as_recipient_user().ok_or_else(bad_to)?.user()))
                    }
                    fe::Recipient::RecipientGroup => {
                        Recipient::Group(codec::chat(b.to_as_recipient_group().ok_or_else(bad_to)?.chat()))
                    }
                    _ => return Err(bad_to()),
                };
                check_len("ciphertext", b.ciphertext().len(), MAX_CIPHERTEXT_BYTES)?;
                ClientFrame::Send {
                    to,
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    ciphertext: b.ciphertext().bytes().to_vec(),
                    media: codec::opt_media(b.media()),
                    devices_digest: b.devices_digest().map(|d| d.0),
                }
            }
            fe::ClientFrameBody::Ack => {
                let b = f.body_as_ack().ok_or_else(bad)?;
                ClientFrame::Ack {
                    chat: codec::chat(b.chat()),
                    kind: codec::receipt_kind(b.kind())?,
                    up_to_seq: Seq(b.up_to_seq()),
                }
            }
            fe::ClientFrameBody::Sync => {
                let b = f.body_as_sync().ok_or_else(bad)?;
                check_len("sync cursors", b.since().len(), MAX_SYNC_CURSORS)?;
                ClientFrame::Sync { since: b.since().iter().map(|c| (codec::chat(c.chat()), Seq(c.seq()))).collect() }
            }
            fe::ClientFrameBody::Ping => {
                let b = f.body_as_ping().ok_or_else(bad)?;
                ClientFrame::Ping { nonce: b.nonce() }
            }
            fe::ClientFrameBody::SetPin => {
                let b = f.body_as_set_pin().ok_or_else(bad)?;
                ClientFrame::SetPin { client_msg_id: ClientMsgId(b.client_msg_id()), pin: b.pin().to_owned() }
            }
            fe::ClientFrameBody::UnlinkDevice => {
                let b = f.body_as_unlink_device().ok_or_else(bad)?;
                ClientFrame::UnlinkDevice {
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    device: DeviceId(b.device()),
                }
            }
            fe::ClientFrameBody::Logout => {
                let b = f.body_as_logout().ok_or_else(bad)?;
                ClientFrame::Logout { client_msg_id: ClientMsgId(b.client_msg_id()) }
            }
            fe::ClientFrameBody::Block => {
                let b = f.body_as_block().ok_or_else(bad)?;
                ClientFrame::Block {
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    user: UserId(b.user()),
                    blocked: b.blocked(),
                }
            }
            fe::ClientFrameBody::Group => {
                let b = f.body_as_group().ok_or_else(bad)?;
                ClientFrame::Group {
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    chat: codec::chat(b.chat()),
                    op: GroupOp::from_fb(&b)?,
                }
            }
            fe::ClientFrameBody::PairRequest => {
                let b = f.body_as_pair_request().ok_or_else(bad)?;
                ClientFrame::PairRequest {
                    device_name: b.device_name().to_owned(),
                    identity_key: b.identity_key().bytes().to_vec(),
                }
            }
            fe::ClientFrameBody::LinkDevice => {
                let b = f.body_as_link_device().ok_or_else(bad)?;
                ClientFrame::LinkDevice { client_msg_id: ClientMsgId(b.client_msg_id()), code: b.code().to_owned() }
            }
            fe::ClientFrameBody::ListDevices => {
                let b = f.body_as_list_devices().ok_or_else(bad)?;
                ClientFrame::ListDevices { client_msg_id: ClientMsgId(b.client_msg_id()) }
            }
            fe::ClientFrameBody::GroupInfoRequest => {
                let b = f.body_as_group_info_request().ok_or_else(bad)?;
                ClientFrame::GroupInfo { client_msg_id: ClientMsgId(b.client_msg_id()), chat: codec::chat(b.chat()) }
            }
            fe::ClientFrameBody::MessageInfoRequest => {
                let b = f.body_as_message_info_request().ok_or_else(bad)?;
                ClientFrame::MessageInfo {
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    chat: codec::chat(b.chat()),
                    seq: Seq(b.seq()),
                }
            }
            fe::ClientFrameBody::SubscribePresence => {
                let b = f.body_as_subscribe_presence().ok_or_else(bad)?;
                check_len("watched users", b.users().len(), MAX_WATCHED_USERS)?;
                ClientFrame::SubscribePresence { users: codec::users(b.users()) }
            }
            fe::ClientFrameBody::Typing => {
                let b = f.body_as_typing().ok_or_else(bad)?;
                ClientFrame::Typing { chat: codec::chat(b.chat()), typing: b.typing() }
            }
            fe::ClientFrameBody::SetProfile => {
                let b = f.body_as_set_profile().ok_or_else(bad)?;
                ClientFrame::SetProfile {
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    name: b.name().to_owned(),
                    about: b.about().to_owned(),
                    avatar: codec::opt_media(b.avatar()),
                }
            }
            fe::ClientFrameBody::SetPrivacy => {
                let b = f.body_as_set_privacy().ok_or_else(bad)?;
                ClientFrame::SetPrivacy {
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    last_seen: codec::visibility(b.last_seen())?,
                    profile_photo: codec::visibility(b.profile_photo())?,
                    about: codec::visibility(b.about())?,
                    read_receipts: b.read_receipts(),
                }
            }
            fe::ClientFrameBody::GetProfile => {
                let b = f.body_as_get_profile().ok_or_else(bad)?;
                ClientFrame::GetProfile { client_msg_id: ClientMsgId(b.client_msg_id()), user: UserId(b.user()) }
            }
            fe::ClientFrameBody::PostStatus => {
                let b = f.body_as_post_status().ok_or_else(bad)?;
                check_len("ciphertext", b.ciphertext().len(), MAX_CIPHERTEXT_BYTES)?;
                let users = b.users().map(codec::users).unwrap_or_default();
                check_len("status users", users.len(), MAX_ACL)?;
                ClientFrame::PostStatus {
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    status_id: b.status_id(),
                    ciphertext: b.ciphertext().bytes().to_vec(),
                    media: codec::opt_media(b.media()),
                    audience: StatusAudience::from_fb(b.audience())?,
                    users,
                    ttl_ms: b.ttl_ms(),
                }
            }
            fe::ClientFrameBody::ListStatus => {
                let b = f.body_as_list_status().ok_or_else(bad)?;
                let author = (b.author() != 0).then(|| UserId(b.author()));
                ClientFrame::ListStatus { client_msg_id: ClientMsgId(b.client_msg_id()), author }
            }
            fe::ClientFrameBody::ViewStatus => {
                let b = f.body_as_view_status().ok_or_else(bad)?;
                ClientFrame::ViewStatus {
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    author: UserId(b.author()),
                    status_id: b.status_id(),
                }
            }
            fe::ClientFrameBody::SyncContacts => {
                let b = f.body_as_sync_contacts().ok_or_else(bad)?;
                check_len("contact hashes", b.hashes().len(), MAX_CONTACT_HASHES_PER_SYNC)?;
                ClientFrame::SyncContacts {
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    hashes: b.hashes().iter().map(|h| h.0).collect(),
                }
            }
            fe::ClientFrameBody::UploadKeys => {
                let b = f.body_as_upload_keys().ok_or_else(bad)?;
                let one_time_keys = b.one_time_keys();
                check_len("one-time keys", one_time_keys.map_or(0, |k| k.len()), MAX_PREKEYS_PER_UPLOAD)?;
                ClientFrame::UploadKeys {
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    one_time_keys: one_time_keys.map(codec::prekeys).unwrap_or_default(),
                    fallback_key: b.fallback_key().map(codec::prekey),
                    fallback_signature: b.fallback_signature().map(|s| s.bytes().to_vec()).unwrap_or_default(),
                }
            }
            fe::ClientFrameBody::ClaimKeys => {
                let b = f.body_as_claim_keys().ok_or_else(bad)?;
                ClientFrame::ClaimKeys { client_msg_id: ClientMsgId(b.client_msg_id()), user: UserId(b.user()) }
            }
            fe::ClientFrameBody::GetDeviceKeys => {
                let b = f.body_as_get_device_keys().ok_or_else(bad)?;
                ClientFrame::GetDeviceKeys { client_msg_id: ClientMsgId(b.client_msg_id()), user: UserId(b.user()) }
            }
            _ => return Err(bad()),
        };
        frame.validate()?;
        Ok(frame)
    }
}

// ---- ServerFrame ------------------------------------------------------------------

impl ServerFrame {
    /// The name of the frame's kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerFrame::OtpSent { .. } => "OtpSent",
            ServerFrame::Registered { .. } => "Registered",
            ServerFrame::LoggedIn { .. } => "LoggedIn",
            ServerFrame::Sent { .. } => "Sent",
            ServerFrame::Deliver { .. } => "Deliver",
            ServerFrame::Receipt { .. } => "Receipt",
            ServerFrame::SyncDone { .. } => "SyncDone",
            ServerFrame::Pong { .. } => "Pong",
            ServerFrame::Error { .. } => "Error",
            ServerFrame::Done { .. } => "Done",
            ServerFrame::DeviceNotice { .. } => "DeviceNotice",
            ServerFrame::ChatChange { .. } => "ChatChange",
            ServerFrame::PairCode { .. } => "PairCode",
            ServerFrame::DeviceList { .. } => "DeviceList",
            ServerFrame::GroupInfo { .. } => "GroupInfo",
            ServerFrame::MessageInfo { .. } => "MessageInfo",
            ServerFrame::Presence { .. } => "Presence",
            ServerFrame::Typing { .. } => "Typing",
            ServerFrame::Profile { .. } => "Profile",
            ServerFrame::StatusList { .. } => "StatusList",
            ServerFrame::ContactsMatched { .. } => "ContactsMatched",
            ServerFrame::KeysUploaded { .. } => "KeysUploaded",
            ServerFrame::KeyBundle { .. } => "KeyBundle",
            ServerFrame::DeviceKeyList { .. } => "DeviceKeyList",
            ServerFrame::StaleDevices { .. } => "StaleDevices",
            ServerFrame::KeysLow { .. } => "KeysLow",
        }
    }

    /// Checks the field limits.
    ///
    /// # Errors
    /// [`Error::TooLarge`] naming the first field over its limit.
    pub fn validate(&self) -> Result<()> {
        match self {
            ServerFrame::OtpSent { phone, .. } => check_len("phone", phone.len(), MAX_PHONE_BYTES),
            ServerFrame::Deliver { ciphertext, media, .. } => {
                check_len("ciphertext", ciphertext.len(), MAX_CIPHERTEXT_BYTES)?;
                media.as_ref().map_or(Ok(()), MediaRef::validate)
            }
            ServerFrame::Error { message, .. } => check_len("error message", message.len(), MAX_MESSAGE_BYTES),
            ServerFrame::ChatChange { change, .. } => change.validate(),
            ServerFrame::PairCode { code, .. } => check_len("pairing code", code.len(), MAX_PAIRING_CODE_BYTES),
            ServerFrame::DeviceList { devices, .. } => {
                check_len("device list", devices.len(), MAX_VIEW_PAGE_ENTRIES)?;
                devices.iter().try_for_each(|d| check_len("device name", d.name.len(), MAX_NAME_BYTES))
            }
            ServerFrame::GroupInfo { info, .. } => {
                check_len("group name", info.name.len(), MAX_NAME_BYTES)?;
                check_len("group description", info.description.len(), MAX_ABOUT_BYTES)?;
                check_len("group members", info.members.len(), MAX_GROUP_MEMBERS)
            }
            ServerFrame::MessageInfo { entries, .. } => check_len("message info", entries.len(), MAX_GROUP_MEMBERS),
            ServerFrame::Registered { .. }
            | ServerFrame::LoggedIn { .. }
            | ServerFrame::Sent { .. }
            | ServerFrame::Receipt { .. }
            | ServerFrame::SyncDone { .. }
            | ServerFrame::Pong { .. }
            | ServerFrame::Done { .. }
            | ServerFrame::DeviceNotice { .. }
            | ServerFrame::Presence { .. }
            | ServerFrame::Typing { .. }
            | ServerFrame::Profile { .. }
            | ServerFrame::StatusList { .. }
            | ServerFrame::ContactsMatched { .. } => Ok(()),
            ServerFrame::KeyBundle { devices, .. } | ServerFrame::DeviceKeyList { devices, .. } => {
                keys::validate_list(devices)
            }
            ServerFrame::StaleDevices { devices, .. } => check_len("device list", devices.len(), keys::MAX_DEVICE_LIST),
            ServerFrame::KeysUploaded { .. } | ServerFrame::KeysLow { .. } => Ok(()),
        }
    }

    /// Encodes as a flatbuffer with file identifier `CESF` (without the length
    /// prefix: see [`write_frame`]). Does not validate.
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = Builder::with_capacity(128);
        let (body_type, body) = match self {
            ServerFrame::OtpSent { phone, expires_in_ms } => {
                let phone = fbb.create_string(phone);
                let t = fe::OtpSent::create(
                    &mut fbb,
                    &fe::OtpSentArgs { phone: Some(phone), expires_in_ms: *expires_in_ms },
                );
                (fe::ServerFrameBody::OtpSent, t.as_union_value())
            }
            ServerFrame::Registered { user, device, token } => {
                let token = fe::Token(*token);
                let t = fe::Registered::create(
                    &mut fbb,
                    &fe::RegisteredArgs { user: user.0, device: device.0, token: Some(&token) },
                );
                (fe::ServerFrameBody::Registered, t.as_union_value())
            }
            ServerFrame::LoggedIn { user, device, contact_key } => {
                let key = contact_key.map(crate::fb::Blake3Digest);
                let t = fe::LoggedIn::create(
                    &mut fbb,
                    &fe::LoggedInArgs { user: user.0, device: device.0, contact_key: key.as_ref() },
                );
                (fe::ServerFrameBody::LoggedIn, t.as_union_value())
            }
            ServerFrame::Sent { client_msg_id, chat, seq, server_time_ms } => {
                let chat = codec::chat_fb(chat);
                let t = fe::Sent::create(
                    &mut fbb,
                    &fe::SentArgs {
                        client_msg_id: client_msg_id.0,
                        chat: Some(&chat),
                        seq: seq.0,
                        server_time_ms: *server_time_ms,
                    },
                );
                (fe::ServerFrameBody::Sent, t.as_union_value())
            }
            ServerFrame::Deliver { chat, seq, sender, sender_device, client_msg_id, at_ms, ciphertext, media } => {
                let ciphertext = fbb.create_vector(ciphertext);
                let media = codec::opt_media_fb(&mut fbb, media);
                let chat = codec::chat_fb(chat);
                let t = fe::Deliver::create(
                    &mut fbb,
                    &fe::DeliverArgs {
                        chat: Some(&chat),
                        seq: seq.0,
                        sender: sender.0,
                        sender_device: sender_device.0,
                        client_msg_id: client_msg_id.0,
                        at_ms: *at_ms,
                        ciphertext: Some(ciphertext),
                        media,
                    },
                );
                (fe::ServerFrameBody::Deliver, t.as_union_value())
            }
            ServerFrame::Receipt { chat, up_to_seq, status } => {
                let chat = codec::chat_fb(chat);
                let t = fe::Receipt::create(
                    &mut fbb,
                    &fe::ReceiptArgs {
                        chat: Some(&chat),
                        up_to_seq: up_to_seq.0,
                        status: codec::receipt_kind_fb(*status),
                    },
                );
                (fe::ServerFrameBody::Receipt, t.as_union_value())
            }
            ServerFrame::SyncDone { chats } => {
                let t = fe::SyncDone::create(&mut fbb, &fe::SyncDoneArgs { chats: *chats });
                (fe::ServerFrameBody::SyncDone, t.as_union_value())
            }
            ServerFrame::Pong { nonce } => {
                let t = fe::Pong::create(&mut fbb, &fe::PongArgs { nonce: *nonce });
                (fe::ServerFrameBody::Pong, t.as_union_value())
            }
            ServerFrame::Error { code, message, client_msg_id, retry_after_ms } => {
                let message = fbb.create_string(message);
                let t = fe::Error::create(
                    &mut fbb,
                    &fe::ErrorArgs {
                        code: code_fb(*code),
                        message: Some(message),
                        client_msg_id: client_msg_id.map(|c| c.0),
                        retry_after_ms: *retry_after_ms,
                    },
                );
                (fe::ServerFrameBody::Error, t.as_union_value())
            }
            ServerFrame::Done { client_msg_id, at } => {
                let chat = at.map(|(c, _)| codec::chat_fb(&c));
                let seq = at.map_or(0, |(_, s)| s.0);
                let t = fe::Done::create(
                    &mut fbb,
                    &fe::DoneArgs { client_msg_id: client_msg_id.0, chat: chat.as_ref(), seq },
                );
                (fe::ServerFrameBody::Done, t.as_union_value())
            }
            ServerFrame::DeviceNotice { kind, device, at_ms } => {
                let kind = device_notice_kind_fb(*kind);
                let t =
                    fe::DeviceNotice::create(&mut fbb, &fe::DeviceNoticeArgs { kind, device: device.0, at_ms: *at_ms });
                (fe::ServerFrameBody::DeviceNotice, t.as_union_value())
            }
            ServerFrame::ChatChange { chat, seq, actor, actor_device, client_msg_id, at_ms, change } => {
                let members = fbb.create_vector(&change.members());
                let (name, description, icon) = match change {
                    GroupOp::Create { name, .. } => (Some(fbb.create_string(name)), None, None),
                    GroupOp::ChangeInfo { name, description, icon } => (
                        Some(fbb.create_string(name)),
                        Some(fbb.create_string(description)),
                        codec::opt_media_fb(&mut fbb, icon),
                    ),
                    _ => (None, None, None),
                };
                let chat = codec::chat_fb(chat);
                let t = fe::ChatChange::create(
                    &mut fbb,
                    &fe::ChatChangeArgs {
                        chat: Some(&chat),
                        seq: seq.0,
                        actor: actor.0,
                        actor_device: actor_device.0,
                        client_msg_id: client_msg_id.0,
                        at_ms: *at_ms,
                        kind: change.kind_fb(),
                        members: Some(members),
                        name,
                        description,
                        icon,
                    },
                );
                (fe::ServerFrameBody::ChatChange, t.as_union_value())
            }
            ServerFrame::PairCode { code, expires_in_ms } => {
                let code = fbb.create_string(code);
                let t = fe::PairCode::create(
                    &mut fbb,
                    &fe::PairCodeArgs { code: Some(code), expires_in_ms: *expires_in_ms },
                );
                (fe::ServerFrameBody::PairCode, t.as_union_value())
            }
            ServerFrame::DeviceList { client_msg_id, devices } => {
                let devices = device_infos_fb(&mut fbb, devices);
                let t = fe::DeviceList::create(
                    &mut fbb,
                    &fe::DeviceListArgs { client_msg_id: client_msg_id.0, devices: Some(devices) },
                );
                (fe::ServerFrameBody::DeviceList, t.as_union_value())
            }
            ServerFrame::GroupInfo { client_msg_id, chat, info } => {
                let members = fbb.create_vector(&group_members_fb(&info.members));
                let name = fbb.create_string(&info.name);
                let description = fbb.create_string(&info.description);
                let icon = codec::opt_media_fb(&mut fbb, &info.icon);
                let chat = codec::chat_fb(chat);
                let t = fe::GroupInfo::create(
                    &mut fbb,
                    &fe::GroupInfoArgs {
                        client_msg_id: client_msg_id.0,
                        chat: Some(&chat),
                        last_seq: info.last_seq.0,
                        name: Some(name),
                        description: Some(description),
                        members: Some(members),
                        icon,
                    },
                );
                (fe::ServerFrameBody::GroupInfo, t.as_union_value())
            }
            ServerFrame::MessageInfo { client_msg_id, chat, seq, entries } => {
                let entries = fbb.create_vector(&receipts_fb(entries));
                let chat = codec::chat_fb(chat);
                let t = fe::MessageInfo::create(
                    &mut fbb,
                    &fe::MessageInfoArgs {
                        client_msg_id: client_msg_id.0,
                        chat: Some(&chat),
                        seq: seq.0,
                        entries: Some(entries),
                    },
                );
                (fe::ServerFrameBody::MessageInfo, t.as_union_value())
            }
            ServerFrame::Presence { user, visible, online, last_seen_ms } => {
                let t = fe::Presence::create(
                    &mut fbb,
                    &fe::PresenceArgs { user: user.0, visible: *visible, online: *online, last_seen_ms: *last_seen_ms },
                );
                (fe::ServerFrameBody::Presence, t.as_union_value())
            }
            ServerFrame::Typing { chat, user, typing } => {
                let chat = codec::chat_fb(chat);
                let t = fe::PeerTyping::create(
                    &mut fbb,
                    &fe::PeerTypingArgs { chat: Some(&chat), user: user.0, typing: *typing },
                );
                (fe::ServerFrameBody::PeerTyping, t.as_union_value())
            }
            ServerFrame::Profile { client_msg_id, profile } => {
                let t = social::profile_fb(&mut fbb, *client_msg_id, profile);
                (fe::ServerFrameBody::Profile, t.as_union_value())
            }
            ServerFrame::StatusList { client_msg_id, entries } => {
                let t = social::status_list_fb(&mut fbb, *client_msg_id, entries);
                (fe::ServerFrameBody::StatusList, t.as_union_value())
            }
            ServerFrame::ContactsMatched { client_msg_id, matches } => {
                let t = social::matches_fb(&mut fbb, *client_msg_id, matches);
                (fe::ServerFrameBody::ContactsMatched, t.as_union_value())
            }
            ServerFrame::KeysUploaded { client_msg_id, one_time_keys_left } => {
                let t = fe::KeysUploaded::create(
                    &mut fbb,
                    &fe::KeysUploadedArgs { client_msg_id: client_msg_id.0, one_time_keys_left: *one_time_keys_left },
                );
                (fe::ServerFrameBody::KeysUploaded, t.as_union_value())
            }
            ServerFrame::KeyBundle { client_msg_id, user, devices } => {
                let devices = keys::device_keys_fb(&mut fbb, devices);
                let t = fe::KeyBundle::create(
                    &mut fbb,
                    &fe::KeyBundleArgs { client_msg_id: client_msg_id.0, user: user.0, devices: Some(devices) },
                );
                (fe::ServerFrameBody::KeyBundle, t.as_union_value())
            }
            ServerFrame::DeviceKeyList { client_msg_id, user, devices } => {
                let devices = keys::device_keys_fb(&mut fbb, devices);
                let t = fe::DeviceKeyList::create(
                    &mut fbb,
                    &fe::DeviceKeyListArgs { client_msg_id: client_msg_id.0, user: user.0, devices: Some(devices) },
                );
                (fe::ServerFrameBody::DeviceKeyList, t.as_union_value())
            }
            ServerFrame::StaleDevices { client_msg_id, devices } => {
                let devices = fbb.create_vector(&keys::addresses_fb(devices));
                let t = fe::StaleDevices::create(
                    &mut fbb,
                    &fe::StaleDevicesArgs { client_msg_id: client_msg_id.0, devices: Some(devices) },
                );
                (fe::ServerFrameBody::StaleDevices, t.as_union_value())
            }
            ServerFrame::KeysLow { one_time_keys_left } => {
                let t = fe::KeysLow::create(&mut fbb, &fe::KeysLowArgs { one_time_keys_left: *one_time_keys_left });
                (fe::ServerFrameBody::KeysLow, t.as_union_value())
            }
        };
        let root = fe::ServerFrame::create(&mut fbb, &fe::ServerFrameArgs { body_type, body: Some(body) });
        codec::finish(fbb, root, SERVER_FRAME_IDENT)
    }

    /// Verifies and decodes a buffer made by [`ServerFrame::encode`], then validates it.
    ///
    /// # Errors
    /// [`Error::TooLarge`] above [`MAX_EDGE_FRAME_BYTES`] or a field limit;
    /// [`Error::Malformed`] if the verifier refuses it or it holds an unknown variant.
    pub fn decode(buf: &[u8]) -> Result<ServerFrame> {
        let f = codec::root::<fe::ServerFrame>(buf, "server frame", SERVER_FRAME_IDENT, MAX_EDGE_FRAME_BYTES, 64)?;
        let tag = f.body_type();
        let bad = || codec::bad_union("server frame body", tag.0);
        let frame = match tag {
            fe::ServerFrameBody::OtpSent => {
                let b = f.body_as_otp_sent().ok_or_else(bad)?;
                ServerFrame::OtpSent { phone: b.phone().to_owned(), expires_in_ms: b.expires_in_ms() }
            }
            fe::ServerFrameBody::Registered => {
                let b = f.body_as_registered().ok_or_else(bad)?;
                ServerFrame::Registered { user: UserId(b.user()), device: DeviceId(b.device()), token: b.token().0 }
            }
            fe::ServerFrameBody::LoggedIn => {
                let b = f.body_as_logged_in().ok_or_else(bad)?;
                ServerFrame::LoggedIn {
                    user: UserId(b.user()),
                    device: DeviceId(b.device()),
                    contact_key: b.contact_key().map(|k| k.0),
                }
            }
            fe::ServerFrameBody::Sent => {
                let b = f.body_as_sent().ok_or_else(bad)?;
                ServerFrame::Sent {
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    chat: codec::chat(b.chat()),
                    seq: Seq(b.seq()),
                    server_time_ms: b.server_time_ms(),
                }
            }
            fe::ServerFrameBody::Deliver => {
                let b = f.body_as_deliver().ok_or_else(bad)?;
                check_len("ciphertext", b.ciphertext().len(), MAX_CIPHERTEXT_BYTES)?;
                ServerFrame::Deliver {
                    chat: codec::chat(b.chat()),
                    seq: Seq(b.seq()),
                    sender: UserId(b.sender()),
                    sender_device: DeviceId(b.sender_device()),
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    at_ms: b.at_ms(),
                    ciphertext: b.ciphertext().bytes().to_vec(),
                    media: codec::opt_media(b.media()),
                }
            }
            fe::ServerFrameBody::Receipt => {
                let b = f.body_as_receipt().ok_or_else(bad)?;
                ServerFrame::Receipt {
                    chat: codec::chat(b.chat()),
                    up_to_seq: Seq(b.up_to_seq()),
                    status: codec::receipt_kind(b.status())?,
                }
            }
            fe::ServerFrameBody::SyncDone => {
                let b = f.body_as_sync_done().ok_or_else(bad)?;
                ServerFrame::SyncDone { chats: b.chats() }
            }
            fe::ServerFrameBody::Pong => {
                let b = f.body_as_pong().ok_or_else(bad)?;
                ServerFrame::Pong { nonce: b.nonce() }
            }
            fe::ServerFrameBody::Error => {
                let b = f.body_as_error().ok_or_else(bad)?;
                ServerFrame::Error {
                    code: code(b.code())?,
                    message: b.message().to_owned(),
                    client_msg_id: b.client_msg_id().map(ClientMsgId),
                    retry_after_ms: b.retry_after_ms(),
                }
            }
            fe::ServerFrameBody::Done => {
                let b = f.body_as_done().ok_or_else(bad)?;
                ServerFrame::Done {
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    at: b.chat().map(|c| (codec::chat(c), Seq(b.seq()))),
                }
            }
            fe::ServerFrameBody::DeviceNotice => {
                let b = f.body_as_device_notice().ok_or_else(bad)?;
                let kind = device_notice_kind(b.kind())?;
                ServerFrame::DeviceNotice { kind, device: DeviceId(b.device()), at_ms: b.at_ms() }
            }
            fe::ServerFrameBody::ChatChange => {
                let b = f.body_as_chat_change().ok_or_else(bad)?;
                ServerFrame::ChatChange {
                    chat: codec::chat(b.chat()),
                    seq: Seq(b.seq()),
                    actor: UserId(b.actor()),
                    actor_device: DeviceId(b.actor_device()),
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    at_ms: b.at_ms(),
                    change: GroupOp::from_parts(
                        "chat change",
                        b.kind(),
                        b.members(),
                        b.name(),
                        b.description(),
                        b.icon(),
                    )?,
                }
            }
            fe::ServerFrameBody::PairCode => {
                let b = f.body_as_pair_code().ok_or_else(bad)?;
                ServerFrame::PairCode { code: b.code().to_owned(), expires_in_ms: b.expires_in_ms() }
            }
            fe::ServerFrameBody::DeviceList => {
                let b = f.body_as_device_list().ok_or_else(bad)?;
                check_len("device list", b.devices().len(), MAX_VIEW_PAGE_ENTRIES)?;
                ServerFrame::DeviceList {
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    devices: device_infos(b.devices()),
                }
            }
            fe::ServerFrameBody::GroupInfo => {
                let b = f.body_as_group_info().ok_or_else(bad)?;
                check_len("group members", b.members().len(), MAX_GROUP_MEMBERS)?;
                ServerFrame::GroupInfo {
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    chat: codec::chat(b.chat()),
                    info: GroupInfo {
                        last_seq: Seq(b.last_seq()),
                        name: b.name().to_owned(),
                        description: b.description().to_owned(),
                        members: group_members(b.members()),
                        icon: codec::opt_media(b.icon()),
                    },
                }
            }
            fe::ServerFrameBody::MessageInfo => {
                let b = f.body_as_message_info().ok_or_else(bad)?;
                check_len("message info", b.entries().len(), MAX_GROUP_MEMBERS)?;
                ServerFrame::MessageInfo {
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    chat: codec::chat(b.chat()),
                    seq: Seq(b.seq()),
                    entries: receipts(b.entries()),
                }
            }
            fe::ServerFrameBody::Presence => {
                let b = f.body_as_presence().ok_or_else(bad)?;
                ServerFrame::Presence {
                    user: UserId(b.user()),
                    visible: b.visible(),
                    online: b.online(),
                    last_seen_ms: b.last_seen_ms(),
                }
            }
            fe::ServerFrameBody::PeerTyping => {
                let b = f.body_as_peer_typing().ok_or_else(bad)?;
                ServerFrame::Typing { chat: codec::chat(b.chat()), user: UserId(b.user()), typing: b.typing() }
            }
            fe::ServerFrameBody::Profile => {
                let b = f.body_as_profile().ok_or_else(bad)?;
                ServerFrame::Profile { client_msg_id: ClientMsgId(b.client_msg_id()), profile: social::profile(b)? }
            }
            fe::ServerFrameBody::StatusList => {
                let b = f.body_as_status_list().ok_or_else(bad)?;
                ServerFrame::StatusList {
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    entries: social::status_list(b)?,
                }
            }
            fe::ServerFrameBody::ContactsMatched => {
                let b = f.body_as_contacts_matched().ok_or_else(bad)?;
                ServerFrame::ContactsMatched {
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    matches: social::matches(b)?,
                }
            }
            fe::ServerFrameBody::KeysUploaded => {
                let b = f.body_as_keys_uploaded().ok_or_else(bad)?;
                ServerFrame::KeysUploaded {
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    one_time_keys_left: b.one_time_keys_left(),
                }
            }
            fe::ServerFrameBody::KeyBundle => {
                let b = f.body_as_key_bundle().ok_or_else(bad)?;
                ServerFrame::KeyBundle {
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    user: UserId(b.user()),
                    devices: keys::device_keys(b.devices())?,
                }
            }
            fe::ServerFrameBody::DeviceKeyList => {
                let b = f.body_as_device_key_list().ok_or_else(bad)?;
                ServerFrame::DeviceKeyList {
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    user: UserId(b.user()),
                    devices: keys::device_keys(b.devices())?,
                }
            }
            fe::ServerFrameBody::StaleDevices => {
                let b = f.body_as_stale_devices().ok_or_else(bad)?;
                ServerFrame::StaleDevices {
                    client_msg_id: ClientMsgId(b.client_msg_id()),
                    devices: keys::addresses(b.devices())?,
                }
            }
            fe::ServerFrameBody::KeysLow => {
                let b = f.body_as_keys_low().ok_or_else(bad)?;
                ServerFrame::KeysLow { one_time_keys_left: b.one_time_keys_left() }
            }
            _ => return Err(bad()),
        };
        frame.validate()?;
        Ok(frame)
    }
}

impl EdgeErrorCode {
    /// The code to answer a client frame that failed to decode with.
    pub fn for_decode_error(e: &Error) -> EdgeErrorCode {
        match e {
            Error::TooLarge { what: "client frame" | "edge frame", .. } => EdgeErrorCode::FrameTooLarge,
            Error::TooLarge { what: "ciphertext", .. } => EdgeErrorCode::CiphertextTooLarge,
            _ => EdgeErrorCode::BadFrame,
        }
    }
}

pub(crate) fn device_notice_kind_fb(k: DeviceNoticeKind) -> fe::DeviceNoticeKind {
    match k {
        DeviceNoticeKind::Linked => fe::DeviceNoticeKind::Linked,
        DeviceNoticeKind::Unlinked => fe::DeviceNoticeKind::Unlinked,
        DeviceNoticeKind::LoggedOut => fe::DeviceNoticeKind::LoggedOut,
    }
}

pub(crate) fn device_notice_kind(k: fe::DeviceNoticeKind) -> Result<DeviceNoticeKind> {
    match k {
        fe::DeviceNoticeKind::Linked => Ok(DeviceNoticeKind::Linked),
        fe::DeviceNoticeKind::Unlinked => Ok(DeviceNoticeKind::Unlinked),
        fe::DeviceNoticeKind::LoggedOut => Ok(DeviceNoticeKind::LoggedOut),
        other => Err(Error::malformed("device notice kind", format!("unknown value {}", other.0))),
    }
}

pub(crate) fn device_infos_fb<'a>(
    fbb: &mut Builder<'a>,
    devices: &[DeviceInfo],
) -> flatbuffers::WIPOffset<flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<fe::DeviceInfo<'a>>>> {
    let items: Vec<_> = devices
        .iter()
        .map(|d| {
            let name = fbb.create_string(&d.name);
            fe::DeviceInfo::create(
                fbb,
                &fe::DeviceInfoArgs { device: d.device.0, name: Some(name), linked_at_ms: d.linked_at_ms },
            )
        })
        .collect();
    fbb.create_vector(&items)
}

pub(crate) fn device_infos(
    v: flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<fe::DeviceInfo<'_>>>,
) -> Vec<DeviceInfo> {
    v.iter()
        .map(|d| DeviceInfo { device: DeviceId(d.device()), name: d.name().to_owned(), linked_at_ms: d.linked_at_ms() })
        .collect()
}

fn code_fb(c: EdgeErrorCode) -> fe::ErrorCode {
    fe::ErrorCode(c.value())
}

fn code(c: fe::ErrorCode) -> Result<EdgeErrorCode> {
    EdgeErrorCode::from_value(c.0).ok_or_else(|| Error::malformed("edge error code", format!("unknown value {}", c.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames written before `retry_after_ms` and `pin` existed (the fields
    /// absent) still decode, as `None`.
    #[test]
    fn frames_without_the_new_fields_decode() {
        let mut fbb = Builder::with_capacity(64);
        let message = fbb.create_string("slow down");
        let e = fe::Error::create(
            &mut fbb,
            &fe::ErrorArgs {
                code: fe::ErrorCode::RateLimited,
                message: Some(message),
                client_msg_id: None,
                retry_after_ms: None,
            },
        );
        let root = fe::ServerFrame::create(
            &mut fbb,
            &fe::ServerFrameArgs { body_type: fe::ServerFrameBody::Error, body: Some(e.as_union_value()) },
        );
        let old = codec::finish(fbb, root, SERVER_FRAME_IDENT);
        assert_eq!(
            ServerFrame::decode(&old).unwrap(),
            ServerFrame::Error {
                code: EdgeErrorCode::RateLimited,
                message: "slow down".into(),
                client_msg_id: None,
                retry_after_ms: None
            }
        );
        let new = ClientFrame::VerifyOtp {
            phone: "+15550100001".into(),
            code: "1".into(),
            device_name: "d".into(),
            identity_key: vec![],
            pin: None,
        };
        assert_eq!(ClientFrame::decode(&new.encode()).unwrap(), new);
    }
}

#[cfg(test)]
mod group_tests {
    use super::*;

    /// A `Group` frame as a client could build it, whatever its member count.
    fn raw(kind: fe::GroupOpKind, members: &[u64]) -> Vec<u8> {
        let mut fbb = Builder::with_capacity(128);
        let chat = codec::chat_fb(&ChatId::group([3; 16]));
        let members = fbb.create_vector(members);
        let t = fe::Group::create(
            &mut fbb,
            &fe::GroupArgs {
                client_msg_id: 1,
                chat: Some(&chat),
                kind,
                members: Some(members),
                name: None,
                description: None,
                icon: None,
            },
        );
        let root = fe::ClientFrame::create(
            &mut fbb,
            &fe::ClientFrameArgs { body_type: fe::ClientFrameBody::Group, body: Some(t.as_union_value()) },
        );
        codec::finish(fbb, root, CLIENT_FRAME_IDENT)
    }

    #[test]
    fn a_single_member_operation_needs_exactly_one_member() {
        for kind in [fe::GroupOpKind::Add, fe::GroupOpKind::Remove, fe::GroupOpKind::Promote, fe::GroupOpKind::Demote] {
            for members in [&[][..], &[1, 2][..]] {
                let e = ClientFrame::decode(&raw(kind, members)).err().map(|e| e.to_string()).unwrap_or_default();
                assert!(e.contains("exactly one member"), "{kind:?} with {members:?}: {e:?}");
            }
            assert!(ClientFrame::decode(&raw(kind, &[5])).is_ok());
        }
        let e = ClientFrame::decode(&raw(fe::GroupOpKind(200), &[])).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("unknown operation"), "{e:?}");
    }
}
