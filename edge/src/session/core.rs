//! [`Session`]: the protocol state of one client connection.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use chorus_schema::bus::{InfoRefusal, PairClaim};
use chorus_schema::edge::{
    normalize_phone, pairing_code, pairing_code_hash, user_for_phone, DeviceInfo, CLIENT_MSG_ID_RESERVED_BIT,
};
use chorus_schema::{
    ChatId, ClientFrame, ClientMsgId, Command, CommandBody, CommandResult, DeviceId, DeviceNoticeKind, EdgeErrorCode,
    Origin, Outcome, ReceiptKind, Recipient, RejectCode, Rejection, Seq, ServerFrame, UserId,
};

use super::config::Config;
use super::entropy::Entropy;
use super::item::Item;
use super::limits::{Limits, Refused};
use super::otp::{OtpError, OtpRegistry};
use super::pin::pin_hash;
use super::rate::TokenBucket;
use super::timeline::{Step, Timeline};

// ---- push and reports (issue 14) ----
mod push;
// ---- E2EE (issue 14) ----
#[path = "keys.rs"]
mod keys;

/// Ties an [`Action::Append`] to its [`Session::handle_append_result`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Correlation(pub u64);

/// The logged-in user and device of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub user: UserId,
    pub device: DeviceId,
}

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write a frame on the control stream.
    Send(ServerFrame),
    /// Write a frame on the delivery stream (`Receipt`, `SyncDone`, `DeviceNotice`).
    Deliver(ServerFrame),
    /// Write this item's `Deliver` frame ([`Item::frame`], encoded once for
    /// every connection that receives it) on the delivery stream.
    DeliverItem(Arc<Item>),
    /// Append one command to the log (to the partition of `command.key()`) and
    /// report the outcome with `handle_append_result(correlation, …)`. Retry
    /// retryable log errors with the same command first: it is idempotent.
    Append { correlation: Correlation, command: Command },
    /// Text `text` to `phone` through the SMS gateway (fire and forget).
    SendSms { phone: String, text: String },
    /// Check the sessions view: does (user, device) hold a session with this token
    /// hash? Answer with `handle_token_verified`.
    VerifyToken { user: UserId, device: DeviceId, token_hash: [u8; 32] },
    /// Are all of `users` registered? (the users view). Answer with
    /// `handle_recipient_checked(correlation, …)`, naming the first unknown
    /// one. A direct message, a new group's members and an added member go to
    /// the log only once they are known: the chat's partition cannot tell,
    /// users live in other partitions.
    CheckRecipient { correlation: Correlation, users: Vec<UserId> },
    /// The device is logged in: start routing its deliveries (bus subscription) to
    /// `handle_delivery`.
    Subscribe(Identity),
    /// Stream the device's items after `since` (a chat not listed: from its
    /// start) through `handle_recovered`, then call `handle_sync_done` with
    /// every chat of the user and its last seq.
    Sync { identity: Identity, since: Vec<(ChatId, Seq)> },
    /// Recover the device's items of `chat` in `(after, until]` (a gap in live
    /// delivery) through `handle_recovered`, then call `handle_fill_done`.
    FillGap { identity: Identity, chat: ChatId, after: Seq, until: Seq },
    /// Close the connection with this error code; the session ignores all further input.
    Close { code: EdgeErrorCode, reason: String },
    // ---- linked devices (issue 12) ----
    /// Take claims of the pairing code with this hash (subscribe to
    /// `chorus.pair.<hash>`) for `ttl_ms`, replacing any earlier wait of
    /// this connection: report `handle_pairing_ready` once claims can
    /// arrive, then the first claim with `handle_pair_claim`.
    AwaitPairing { code_hash: [u8; 32], ttl_ms: u64 },
    /// Take no more claims (the code is used, or the connection moved on).
    StopPairing,
    /// Answer the claim `claim` with this frame (on its reply subject).
    AnswerClaim { claim: ClaimId, frame: ServerFrame },
    /// Claim the pairing code with this hash (a bus request to the edge that
    /// holds its device); answer with `handle_pair_answered(correlation, …)`.
    ClaimPairing { correlation: Correlation, code_hash: [u8; 32], claim: PairClaim },
    /// Ask the devices view for `user`'s linked devices; answer with
    /// `handle_devices_listed(client_msg_id, …)`.
    ListDevices { client_msg_id: ClientMsgId, user: UserId },
    // ---- group info and message info (issue 12) ----
    /// Ask the views (group info or message info, for the logged-in user) and
    /// answer with `handle_info(correlation, …)`.
    Info { correlation: Correlation, request: InfoRequest },
    // ---- presence and typing (issue 12) ----
    /// Append this `SetPresence` (the device's connection online or gone);
    /// nothing to report back. The driver keeps the order of a connection's
    /// presence appends (its offline after its online), and appends
    /// [`Session::offline_command`] when the connection ends.
    SetPresence(Command),
    /// Watch the presence of `users` for `viewer` on this connection
    /// (replacing its list): the current state of each, then every change,
    /// through [`Session::handle_presence`], as each target's privacy allows.
    WatchPresence { viewer: UserId, users: Vec<UserId> },
    /// Relay a typing signal to `chat`'s other members if `identity.user` is
    /// a member (the members view, cached briefly); otherwise answer
    /// [`Session::handle_typing_refused`].
    Typing { identity: Identity, chat: ChatId, typing: bool },
    /// Ask a view (profiles, status posts, the contact index) and report the
    /// answer with `handle_query_result(correlation, …)`.
    Query { correlation: Correlation, query: chorus_schema::bus::ViewQuery },
}

// ---- linked devices (issue 12) ----

/// A pairing claim this connection received (the driver keeps its reply subject).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClaimId(pub u64);

/// Why a claim of a pairing code ([`Action::ClaimPairing`]) has no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimError {
    /// No edge holds a device waiting with the code (wrong, expired, used).
    NoDevice,
    /// The bus or the other edge did not answer in time.
    Unavailable(String),
}

/// A new device waiting for a logged-in device to link it.
#[derive(Clone, Debug)]
struct Pairing {
    device_name: String,
    identity_key: Vec<u8>,
    code: String,
    expires_ms: u64,
    /// Claims can arrive (the client has been shown the code).
    ready: bool,
    /// The claim being carried out; the code is used.
    link: Option<PairLink>,
}

#[derive(Clone, Copy, Debug)]
struct PairLink {
    claim: ClaimId,
    by: PairClaim,
    identity: Identity,
    token: [u8; 32],
    tries: u32,
}

// ---- group info and message info (issue 12) ----

/// A view query of [`Action::Info`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InfoRequest {
    Group(chorus_schema::bus::GroupInfoRequest),
    Message(chorus_schema::bus::MessageInfoRequest),
}

/// The views' answer to [`Action::Info`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InfoAnswer {
    Group(Result<chorus_schema::GroupInfo, InfoRefusal>),
    Message(Result<chorus_schema::bus::MessageInfo, InfoRefusal>),
    /// The views did not answer (why).
    Unavailable(String),
}

/// The client's error for a refused info query.
fn info_refused(refusal: InfoRefusal, chat: ChatId, seq: Option<Seq>) -> (EdgeErrorCode, String) {
    let seq = seq.unwrap_or_default();
    match refusal {
        InfoRefusal::UnknownChat => (EdgeErrorCode::UnknownRecipient, format!("no chat {chat}")),
        InfoRefusal::NotMember => (EdgeErrorCode::NotMember, format!("not a member of chat {chat}")),
        InfoRefusal::NotMessage => (EdgeErrorCode::BadFrame, format!("no message at seq {seq} of chat {chat}")),
        InfoRefusal::NotSender => (
            EdgeErrorCode::Forbidden,
            format!("the message at seq {seq} of chat {chat} is not yours: only its sender sees its info"),
        ),
    }
}

/// Why an append has no result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The log did not answer in time or has no leader (outcome unknown).
    #[error("log unavailable: {0}")]
    Unavailable(String),
    /// The log refused the request itself (a bug on one side).
    #[error("log error: {0}")]
    Internal(String),
}

/// The sessions view's answer to [`Action::VerifyToken`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenVerdict {
    Valid,
    Invalid,
    /// The view could not answer.
    Unavailable,
}

/// The users view's answer to [`Action::CheckRecipient`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecipientVerdict {
    /// Every user asked about is registered.
    Registered,
    /// This one is not.
    Unknown(UserId),
    /// The view could not answer.
    Unavailable,
}

/// The hash of a login token, as stored by `CreateSession` and looked up by
/// [`Action::VerifyToken`]: plain BLAKE3 (tokens are 256 random bits).
pub fn token_hash(token: &[u8; 32]) -> [u8; 32] {
    *blake3::hash(token).as_bytes()
}

/// When a token stops logging in: its first 8 bytes, big endian (the edge
/// that registered the device wrote its expiry there; the rest is random).
/// The log keeps the hash of the whole token, so the expiry cannot be
/// changed without the token failing. (Tokens made before expiries existed
/// are random there: they read as far in the future almost always.)
#[expect(clippy::expect_used, reason = "an 8-byte range of a 32-byte array")]
pub fn token_expiry_ms(token: &[u8; 32]) -> u64 {
    u64::from_be_bytes(token[..8].try_into().expect("8 bytes"))
}

/// When the token's device was linked: bytes 8..16, big endian (the other
/// 16 bytes are random). `None` for tokens made before this was written
/// there (random bytes: a time after the expiry or after `now_ms`).
#[expect(clippy::expect_used, reason = "an 8-byte range of a 32-byte array")]
pub fn token_linked_ms(token: &[u8; 32], now_ms: u64) -> Option<u64> {
    let linked = u64::from_be_bytes(token[8..16].try_into().expect("8 bytes"));
    (linked <= now_ms && linked <= token_expiry_ms(token)).then_some(linked)
}

/// A registration waiting for its `RegisterDevice`: one append that
/// registers the user if new, links the device and opens its session, so a
/// failed registration leaves nothing behind.
#[derive(Clone, Debug)]
struct Registration {
    phone: String,
    device_name: String,
    identity_key: Vec<u8>,
    identity: Identity,
    token: [u8; 32],
    pin_hash: Option<[u8; 32]>,
    link_tries: u32,
}

#[derive(Clone, Debug)]
enum State {
    Anonymous,
    Registering(Box<Registration>),
    VerifyingToken(Identity),
    LoggedIn(Identity),
    Closed,
    // ---- linked devices (issue 12) ----
    Pairing(Box<Pairing>),
}

#[derive(Clone, Debug)]
enum Pending {
    Register,
    /// A wrong code or PIN is being recorded in the log; then the client
    /// gets `code` (or `PhoneLocked` if the log says the phone is locked).
    OtpFailure {
        code: EdgeErrorCode,
        message: String,
    },
    Send {
        client_msg_id: ClientMsgId,
    },
    /// A direct message or a group request waiting for
    /// [`Action::CheckRecipient`] before its append (then `Send` or `Request`).
    Recipient {
        client_msg_id: ClientMsgId,
        command: Box<Command>,
    },
    Ack {
        chat: ChatId,
        kind: ReceiptKind,
    },
    /// `SetPin`, `UnlinkDevice`, `Logout`: `Done` on success; `close` the
    /// connection then (the device logged out or unlinked itself).
    Request {
        client_msg_id: ClientMsgId,
        close: bool,
    },
    /// `Block`: the direct chat's marker (what the log enforces) is in; the
    /// user partition's block (what the views list) comes next.
    Block {
        client_msg_id: ClientMsgId,
        peer: UserId,
        blocked: bool,
    },
    // ---- linked devices (issue 12) ----
    /// The `LinkDevice` of a claim of this (new) device's pairing code.
    PairLink,
    /// A `LinkDevice` frame's claim, out at the edge of the waiting device.
    PairClaim {
        client_msg_id: ClientMsgId,
    },
    /// A group info (`seq` none) or message info query.
    Info {
        client_msg_id: ClientMsgId,
        chat: ChatId,
        seq: Option<Seq>,
    },
    /// `GetProfile`, `ListStatus`: the view's answer goes to the client.
    Answer {
        client_msg_id: ClientMsgId,
    },
    /// `SyncContacts`: the lookup is counted in the log (its allowance);
    /// the contact index comes next.
    ContactLookup {
        client_msg_id: ClientMsgId,
        hashes: Vec<[u8; 32]>,
    },
    /// `SyncContacts`: the contact index's answer, to record as contacts.
    ContactMatches {
        client_msg_id: ClientMsgId,
    },
    // ---- E2EE (issue 14) ----
    /// `UploadKeys`: `KeysUploaded` on success.
    KeysUploaded {
        client_msg_id: ClientMsgId,
    },
    /// `ClaimKeys`: `KeyBundle` on success.
    KeyBundle {
        client_msg_id: ClientMsgId,
    },
    /// `GetDeviceKeys`: the directory view's answer.
    DeviceKeyList {
        client_msg_id: ClientMsgId,
        user: UserId,
    },
    /// The directory view's count of this device's keys, asked at login.
    KeysAtLogin,
    /// A `Send` waiting for its device-list check (never answered itself).
    DeviceCheck(Box<keys::DeviceCheck>),
    /// One view answer of the check `check`: the chat's members (`user`
    /// none) or `user`'s devices.
    DeviceCheckPart {
        check: Correlation,
        user: Option<UserId>,
    },
    /// `SyncContacts`: the matches are the user's contacts now; tell the client.
    ContactsRecorded {
        client_msg_id: ClientMsgId,
        matches: Vec<chorus_schema::ContactMatch>,
    },
}

/// One day: contact lookups are counted per UTC day (see the user partition).
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Bytes of live items a connection holds behind a sync or a gap fill before
/// it is closed (the client reconnects and syncs).
const HELD_BYTES_MAX: usize = 16 << 20;

/// Device ids a registration tries before giving up on collisions.
const LINK_TRIES_MAX: u32 = 3;

/// Shortest registration PIN.
const PIN_CHARS_MIN: usize = 4;

/// The protocol state of one connection. See the module docs for the driving loop.
///
/// # Flows
/// - **Registration.** `RequestOtp{phone}` (rate limited per address, per
///   number range and in all: [`Limits`]) → a 6-digit code (injected entropy)
///   stored in the [`OtpRegistry`] → `SendSms` + `OtpSent`. `VerifyOtp` with
///   the right code → one `Append(RegisterDevice)` (the user if new, a random
///   device id, the hash of a random token whose first 8 bytes are its expiry,
///   and the hash of the PIN if the client sent one) → `Registered{user,
///   device, token}`; the connection is then logged in. A wrong code (or a
///   wrong PIN) → `Append(RecordOtpFailure)` for the phone's user, then
///   `BadOtp` / `TooManyAttempts` / `PinRequired`, or `PhoneLocked` once the
///   log locked the phone (too many failures at any edge within hours). The
///   user id is [`user_for_phone`]. Edge-made commands use client message ids
///   with [`CLIENT_MSG_ID_RESERVED_BIT`] set.
/// - **Login.** `Login` (rate limited per address; an expired token is
///   `TokenExpired`) → `VerifyToken` → `handle_token_verified` → `LoggedIn` +
///   `Subscribe`. Before login, everything but `RequestOtp`, `VerifyOtp`, `Login`
///   and `Ping` is `Unauthenticated`; a second login or registration is `Forbidden`.
/// - **Send.** Checked (reserved id bit, size, rate, in-flight bound), then
///   `Append(SendDirect | SendGroup)` with origin = the logged-in identity (never
///   from the frame) → `Sent` or `Error` with the client's `client_msg_id`.
/// - **Ack.** `Append(Ack)`; while one ack of a (chat, kind) is in flight, later
///   ones coalesce into one pending ack with the largest `up_to_seq`. No answer
///   on success.
/// - **Account requests** (logged in): `SetPin` → `Append(SetRegistrationPin)`
///   with the PIN's Argon2id hash; `UnlinkDevice` → `Append(UnlinkDevice)`;
///   `Logout` → `Append(RevokeSession)` of this device, then `Revoked` and
///   close; `Block` → `Append(SetDirectBlock)` to the direct chat (what the
///   log enforces) then `Append(Block | Unblock)` to the user; each answered
///   `Done{client_msg_id}`. `Group` → `Append` of the group command
///   ([`chorus_schema::GroupOp::command`]) with the client's id, so a retry
///   applies once; the chat partition checks admins, membership and size, and
///   its refusal reaches the client as `Error`. `GroupInfo` and `MessageInfo`
///   → [`Action::Info`] (asked as the logged-in user; the projector's views
///   decide who may see what) → `GroupInfo` / `MessageInfo`, or `Error`
///   with the request's id. [`Session::handle_device_notice`] closes a device
///   revoked at any edge and tells the user's other devices.
/// - **History.** A device is handed no message older than its link (the
///   time in its token): a new device does not get the account's history.
/// - **Deliveries.** `handle_delivery` (live, from the bus) and
///   `handle_recovered` (sync, gap fill) go through the connection's timeline
///   (`timeline.rs`): each `(chat, seq)` at most once per connection, in seq
///   order per chat, a gap answered by [`Action::FillGap`]; live items wait
///   for the connection's first sync (clients sync after every login). Messages of others
///   and of the user's other devices become [`Action::DeliverItem`] (the
///   item's shared `Deliver` frame) on the delivery stream; `handle_receipt`
///   becomes `Receipt` frames. Across connections the
///   wire is at-least-once: the client dedups by (chat, seq).
pub struct Session {
    config: Config,
    entropy: Box<dyn Entropy>,
    state: State,
    actions: VecDeque<Action>,
    next_correlation: u64,
    next_internal_cmid: u64,
    pending: BTreeMap<Correlation, Pending>,
    /// The in-flight ack per (chat, kind) and the coalesced one waiting behind it.
    acks: BTreeMap<(ChatId, ReceiptKind), Option<Seq>>,
    rate: TokenBucket,
    bad_frames: u32,
    logins_failed: u32,
    /// The logged-in device was linked at this time (from its token): older
    /// messages are not handed to it — a newly linked device gets no history
    /// from before its link.
    history_from_ms: Option<u64>,
    timeline: Timeline,
    /// The positions the client sent with the sync in progress.
    sync_since: Vec<(ChatId, Seq)>,
    /// The edge's rate limits and the client's address, when the driver set them.
    limits: Option<(Arc<Limits>, IpAddr)>,
    /// This connection's random id in the device's presence (`SetPresence`).
    connection: u64,
    /// The device this connection told the log is online.
    online_as: Option<Identity>,
    /// `Typing` frames of this connection.
    typing_rate: TokenBucket,
    /// The deployment's contact-sync key, handed out in `LoggedIn`.
    contact_key: Option<[u8; 32]>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("state", &self.state)
            .field("pending", &self.pending.len())
            .field("actions", &self.actions.len())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A fresh, anonymous session.
    ///
    /// # Panics
    /// If `config` does not validate (a configuration error of the edge).
    pub fn new(config: Config, entropy: Box<dyn Entropy>) -> Self {
        if let Err(e) = config.validate() {
            panic!("invalid session config: {e}");
        }
        let rate = TokenBucket::new(config.frames_burst, config.frames_per_sec);
        let typing_rate = TokenBucket::new(config.typing_burst, config.typing_per_sec);
        let mut s = Session {
            config,
            entropy,
            state: State::Anonymous,
            actions: VecDeque::new(),
            next_correlation: 1,
            next_internal_cmid: 0,
            pending: BTreeMap::new(),
            acks: BTreeMap::new(),
            rate,
            bad_frames: 0,
            logins_failed: 0,
            history_from_ms: None,
            timeline: Timeline::new(HELD_BYTES_MAX),
            sync_since: Vec::new(),
            limits: None,
            connection: 0,
            online_as: None,
            typing_rate,
            contact_key: None,
        };
        // Internal client message ids start at a random point so that two sessions of
        // one device (reconnects) do not reuse each other's.
        let mut b = [0u8; 8];
        s.entropy.fill(&mut b);
        s.next_internal_cmid = u64::from_le_bytes(b) >> 1;
        s.entropy.fill(&mut b);
        s.connection = u64::from_le_bytes(b);
        s
    }

    /// Applies the edge's rate limits ([`Limits`], shared by all sessions of
    /// the edge) to this connection's logins and codes, `source` being the
    /// client's address. Without it, only the per-session limits apply.
    pub fn set_limits(&mut self, limits: Arc<Limits>, source: IpAddr) {
        self.limits = Some((limits, source));
    }

    /// The deployment's contact-sync key (`chorus_schema::social::contact_hash`),
    /// handed to the client in `LoggedIn`.
    pub fn set_contact_key(&mut self, key: [u8; 32]) {
        self.contact_key = Some(key);
    }

    /// The logged-in identity, if any.
    pub fn identity(&self) -> Option<Identity> {
        match self.state {
            State::LoggedIn(id) => Some(id),
            _ => None,
        }
    }

    /// Whether the session asked to close the connection.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The next thing to do, in order. Once drained, the queue's buffer is
    /// released: an idle connection keeps none.
    pub fn poll_action(&mut self) -> Option<Action> {
        let action = self.actions.pop_front();
        if action.is_none() && self.actions.capacity() > 0 {
            self.actions = VecDeque::new();
        }
        action
    }

    // ---- inputs ------------------------------------------------------------------

    /// One frame's bytes (without the length prefix): decodes and handles it, or
    /// answers the decode error.
    pub fn handle_bytes(&mut self, now_ms: u64, bytes: &[u8], otp: &mut OtpRegistry) {
        match ClientFrame::decode(bytes) {
            Ok(frame) => self.handle_frame(now_ms, frame, otp),
            Err(e) => self.handle_decode_error(&e),
        }
    }

    /// A frame (or the stream) failed to decode: answer with an error frame, and
    /// close after too many, or at once if the stream cannot be resynchronized.
    pub fn handle_decode_error(&mut self, error: &chorus_schema::Error) {
        if self.is_closed() {
            return;
        }
        let code = EdgeErrorCode::for_decode_error(error);
        self.error(code, error.to_string(), None);
        self.bad_frames += 1;
        if code == EdgeErrorCode::FrameTooLarge {
            self.close(code, "frame too large");
        } else if self.bad_frames > self.config.bad_frames_max {
            self.close(EdgeErrorCode::BadFrame, "too many bad frames");
        }
    }

    /// One decoded client frame. `otp` is the edge's shared registry (see its docs).
    pub fn handle_frame(&mut self, now_ms: u64, frame: ClientFrame, otp: &mut OtpRegistry) {
        match (&self.state, frame) {
            (State::Closed, _) => {}
            (_, ClientFrame::Ping { nonce }) => self.send(ServerFrame::Pong { nonce }),
            (State::Anonymous, ClientFrame::RequestOtp { phone }) => self.request_otp(now_ms, &phone, otp),
            (State::Anonymous, ClientFrame::VerifyOtp { phone, code, device_name, identity_key, pin }) => {
                self.verify_otp(now_ms, &phone, &code, device_name, identity_key, pin, otp)
            }
            (State::Anonymous, ClientFrame::Login { user, device, token }) => self.login(now_ms, user, device, &token),
            (State::Anonymous | State::Pairing(_), ClientFrame::PairRequest { device_name, identity_key }) => {
                self.pair_request(now_ms, device_name, identity_key)
            }
            (
                State::Pairing(_),
                ClientFrame::RequestOtp { .. } | ClientFrame::VerifyOtp { .. } | ClientFrame::Login { .. },
            ) => self.error(EdgeErrorCode::Forbidden, "this connection waits to be linked: open another one", None),
            (State::LoggedIn(_), ClientFrame::PairRequest { .. }) => {
                self.error(EdgeErrorCode::Forbidden, "this connection is already authenticated", None)
            }
            (State::LoggedIn(id), ClientFrame::LinkDevice { client_msg_id, code }) => {
                let id = *id;
                self.link_device(now_ms, id, client_msg_id, &code)
            }
            (State::LoggedIn(id), ClientFrame::ListDevices { client_msg_id }) => {
                let user = id.user;
                if self.admit(now_ms, Some(client_msg_id)) {
                    self.actions.push_back(Action::ListDevices { client_msg_id, user });
                }
            }
            (
                State::LoggedIn(_),
                ClientFrame::RequestOtp { .. } | ClientFrame::VerifyOtp { .. } | ClientFrame::Login { .. },
            )
            | (State::Registering(_) | State::VerifyingToken(_), ClientFrame::Login { .. }) => {
                self.error(EdgeErrorCode::Forbidden, "this connection is already authenticated", None)
            }
            (State::LoggedIn(id), ClientFrame::Send { to, client_msg_id, ciphertext, media, devices_digest }) => {
                let id = *id;
                match devices_digest {
                    None => self.send_message(now_ms, id, to, client_msg_id, ciphertext, media),
                    Some(digest) => self.send_checked(now_ms, id, to, client_msg_id, ciphertext, media, digest),
                }
            }
            (State::LoggedIn(id), ClientFrame::Ack { chat, kind, up_to_seq }) => {
                let id = *id;
                if self.admit(now_ms, None) {
                    self.ack(id, chat, kind, up_to_seq);
                }
            }
            (State::LoggedIn(id), ClientFrame::Sync { since }) => {
                let identity = *id;
                if self.timeline.is_syncing() {
                    self.error(EdgeErrorCode::RateLimited, "a sync is already running", None);
                } else if self.admit(now_ms, None) {
                    self.timeline.sync_started();
                    self.sync_since = since.clone();
                    self.actions.push_back(Action::Sync { identity, since });
                }
            }
            (State::LoggedIn(id), ClientFrame::SetPin { client_msg_id, pin }) => {
                let id = *id;
                if pin.chars().count() < PIN_CHARS_MIN && !pin.is_empty() {
                    let message = format!("a PIN has at least {PIN_CHARS_MIN} characters (empty: remove it)");
                    return self.error(EdgeErrorCode::BadFrame, message, Some(client_msg_id));
                }
                if self.admit(now_ms, Some(client_msg_id)) {
                    let pin_hash = (!pin.is_empty()).then(|| pin_hash(id.user, &pin));
                    let pending = Pending::Request { client_msg_id, close: false };
                    self.append_internal(id, pending, CommandBody::SetRegistrationPin { pin_hash });
                }
            }
            (State::LoggedIn(id), ClientFrame::UnlinkDevice { client_msg_id, device }) => {
                let id = *id;
                if self.admit(now_ms, Some(client_msg_id)) {
                    let pending = Pending::Request { client_msg_id, close: device == id.device };
                    self.append_internal(id, pending, CommandBody::UnlinkDevice { device });
                }
            }
            (State::LoggedIn(id), ClientFrame::Block { client_msg_id, user: peer, blocked }) => {
                let id = *id;
                if self.admit(now_ms, Some(client_msg_id)) {
                    let pending = Pending::Block { client_msg_id, peer, blocked };
                    self.append_internal(id, pending, CommandBody::SetDirectBlock { peer, blocked });
                }
            }
            (State::LoggedIn(id), ClientFrame::Group { client_msg_id, chat, op }) => {
                let id = *id;
                if self.refuse_reserved(client_msg_id) {
                    return;
                }
                if chat.is_direct() {
                    let message = format!("chat {chat} is a direct chat, not a group");
                    return self.error(EdgeErrorCode::BadFrame, message, Some(client_msg_id));
                }
                if self.admit(now_ms, Some(client_msg_id)) {
                    // The client's id, so that a retried request is applied once.
                    let origin = Origin { user: id.user, device: id.device, client_msg_id };
                    let command = Command { origin, body: op.command(chat) };
                    // Who joins must exist; the sender does.
                    let joining: Vec<UserId> = match &op {
                        chorus_schema::GroupOp::Create { members, .. } => {
                            members.iter().copied().filter(|m| *m != id.user).collect()
                        }
                        chorus_schema::GroupOp::Add { member } => vec![*member],
                        _ => Vec::new(),
                    };
                    // The partition enforces the limit; refusing an oversized
                    // group here spares asking the users view about each member.
                    if joining.len() >= chorus_schema::MAX_GROUP_MEMBERS {
                        let message = format!(
                            "a group has at most {} members; this one would have {}",
                            chorus_schema::MAX_GROUP_MEMBERS,
                            joining.len() + 1
                        );
                        return self.error(EdgeErrorCode::BadFrame, message, Some(client_msg_id));
                    }
                    if joining.is_empty() {
                        self.append(Pending::Request { client_msg_id, close: false }, command);
                    } else {
                        let correlation = self.correlation();
                        let pending = Pending::Recipient { client_msg_id, command: Box::new(command) };
                        self.pending.insert(correlation, pending);
                        self.actions.push_back(Action::CheckRecipient { correlation, users: joining });
                    }
                }
            }
            (State::LoggedIn(id), ClientFrame::GroupInfo { client_msg_id, chat }) => {
                let id = *id;
                if chat.is_direct() {
                    let message = format!("chat {chat} is a direct chat, not a group");
                    return self.error(EdgeErrorCode::BadFrame, message, Some(client_msg_id));
                }
                let request = InfoRequest::Group(chorus_schema::bus::GroupInfoRequest { user: id.user, chat });
                self.info(now_ms, client_msg_id, chat, None, request);
            }
            (State::LoggedIn(id), ClientFrame::MessageInfo { client_msg_id, chat, seq }) => {
                let id = *id;
                let request = InfoRequest::Message(chorus_schema::bus::MessageInfoRequest { user: id.user, chat, seq });
                self.info(now_ms, client_msg_id, chat, Some(seq), request);
            }
            (
                State::LoggedIn(id),
                frame @ (ClientFrame::SetProfile { .. }
                | ClientFrame::SetPrivacy { .. }
                | ClientFrame::GetProfile { .. }
                | ClientFrame::PostStatus { .. }
                | ClientFrame::ListStatus { .. }
                | ClientFrame::ViewStatus { .. }
                | ClientFrame::SyncContacts { .. }),
            ) => {
                let id = *id;
                self.social(now_ms, id, frame);
            }
            (State::LoggedIn(id), ClientFrame::Logout { client_msg_id }) => {
                let id = *id;
                if self.admit(now_ms, Some(client_msg_id)) {
                    let pending = Pending::Request { client_msg_id, close: true };
                    self.append_internal(id, pending, CommandBody::RevokeSession { device: id.device });
                }
            }
            (State::LoggedIn(id), ClientFrame::SubscribePresence { mut users }) => {
                let viewer = id.user;
                if self.admit(now_ms, None) {
                    users.sort_unstable();
                    users.dedup();
                    self.actions.push_back(Action::WatchPresence { viewer, users });
                }
            }
            (State::LoggedIn(id), ClientFrame::Typing { chat, typing }) => {
                let identity = *id;
                if !self.typing_rate.try_take(now_ms) {
                    return self.error(EdgeErrorCode::RateLimited, "too many typing frames", None);
                }
                self.actions.push_back(Action::Typing { identity, chat, typing });
            }
            // ---- push and reports (issue 14) ----
            (State::LoggedIn(id), frame @ (ClientFrame::RegisterPush { .. } | ClientFrame::Report { .. })) => {
                let id = *id;
                self.push_or_report(now_ms, id, frame);
            }
            // ---- E2EE (issue 14) ----
            (
                State::LoggedIn(id),
                frame @ (ClientFrame::UploadKeys { .. }
                | ClientFrame::ClaimKeys { .. }
                | ClientFrame::GetDeviceKeys { .. }),
            ) => {
                let id = *id;
                self.keys_frame(now_ms, id, frame);
            }
            (
                _,
                ClientFrame::Send { client_msg_id, .. }
                | ClientFrame::SetPin { client_msg_id, .. }
                | ClientFrame::UnlinkDevice { client_msg_id, .. }
                | ClientFrame::Logout { client_msg_id }
                | ClientFrame::Block { client_msg_id, .. }
                | ClientFrame::Group { client_msg_id, .. }
                | ClientFrame::LinkDevice { client_msg_id, .. }
                | ClientFrame::ListDevices { client_msg_id }
                | ClientFrame::GroupInfo { client_msg_id, .. }
                | ClientFrame::MessageInfo { client_msg_id, .. }
                | ClientFrame::SetPrivacy { client_msg_id, .. }
                | ClientFrame::SetProfile { client_msg_id, .. }
                | ClientFrame::GetProfile { client_msg_id, .. }
                | ClientFrame::PostStatus { client_msg_id, .. }
                | ClientFrame::ListStatus { client_msg_id, .. }
                | ClientFrame::ViewStatus { client_msg_id, .. }
                | ClientFrame::SyncContacts { client_msg_id, .. }
                | ClientFrame::RegisterPush { client_msg_id, .. }
                | ClientFrame::Report { client_msg_id, .. }
                | ClientFrame::UploadKeys { client_msg_id, .. }
                | ClientFrame::ClaimKeys { client_msg_id, .. }
                | ClientFrame::GetDeviceKeys { client_msg_id, .. },
            ) => self.error(EdgeErrorCode::Unauthenticated, "log in first", Some(client_msg_id)),
            (_, frame) => self.error(EdgeErrorCode::Unauthenticated, format!("log in before {}", frame.kind()), None),
        }
    }

    /// The sessions view's answer to the pending [`Action::VerifyToken`]. Ignored
    /// if none is pending.
    pub fn handle_token_verified(&mut self, verdict: TokenVerdict) {
        let State::VerifyingToken(id) = self.state else { return };
        match verdict {
            TokenVerdict::Valid => self.logged_in(id, None),
            TokenVerdict::Invalid => {
                self.state = State::Anonymous;
                self.logins_failed += 1;
                self.error(
                    EdgeErrorCode::Unauthenticated,
                    "unknown device or token: the device was unlinked or logged out, or its token is wrong",
                    None,
                );
                if self.logins_failed >= self.config.logins_failed_max {
                    self.close(EdgeErrorCode::Unauthenticated, "too many failed logins");
                }
            }
            TokenVerdict::Unavailable => {
                self.state = State::Anonymous;
                self.error(EdgeErrorCode::Unavailable, "sessions are unavailable, retry", None);
            }
        }
    }

    /// The result of [`Action::Append`] `correlation`. Unknown correlations are ignored.
    pub fn handle_append_result(
        &mut self,
        now_ms: u64,
        correlation: Correlation,
        result: Result<CommandResult, AppendError>,
    ) {
        let Some(pending) = self.pending.remove(&correlation) else { return };
        if self.is_closed() {
            return;
        }
        match pending {
            Pending::Register => self.registration_step(result),
            Pending::PairLink => self.pair_link_step(now_ms, result),
            Pending::PairClaim { client_msg_id } => {
                self.error(EdgeErrorCode::Internal, "a pairing claim answered as an append", Some(client_msg_id))
            }
            Pending::OtpFailure { code, message } => match result {
                Ok(Err(Rejection { code: RejectCode::Locked, message })) => {
                    self.error(EdgeErrorCode::PhoneLocked, message, None)
                }
                // Recorded (or the log could not say): the client hears what was wrong.
                _ => self.error(code, message, None),
            },
            Pending::Block { client_msg_id, peer, blocked } => match (result, self.identity()) {
                (Ok(Ok(_)), Some(id)) => {
                    let body = if blocked {
                        CommandBody::Block { target: peer }
                    } else {
                        CommandBody::Unblock { target: peer }
                    };
                    self.append_internal(id, Pending::Request { client_msg_id, close: false }, body);
                }
                (Ok(Ok(_)), None) => {}
                (Ok(Err(r)), _) => self.error(r.code.to_edge(), r.message, Some(client_msg_id)),
                (Err(e), _) => self.error(append_error_code(&e), e.to_string(), Some(client_msg_id)),
            },
            Pending::Request { client_msg_id, close } => match result {
                Ok(Ok(outcome)) => {
                    let at = match outcome {
                        Outcome::Chat { chat, seq } => Some((chat, seq)),
                        _ => None,
                    };
                    self.send(ServerFrame::Done { client_msg_id, at });
                    if close {
                        self.revoked();
                    }
                }
                Ok(Err(r)) => self.error(r.code.to_edge(), r.message, Some(client_msg_id)),
                Err(e) => self.error(append_error_code(&e), e.to_string(), Some(client_msg_id)),
            },
            Pending::Recipient { client_msg_id, .. }
            | Pending::Answer { client_msg_id }
            | Pending::ContactMatches { client_msg_id } => {
                self.error(EdgeErrorCode::Internal, "a view query answered as an append", Some(client_msg_id))
            }
            Pending::Info { client_msg_id, .. } => {
                self.error(EdgeErrorCode::Internal, "an info query answered as an append", Some(client_msg_id))
            }
            // ---- E2EE (issue 14) ----
            pending @ (Pending::KeysUploaded { .. } | Pending::KeyBundle { .. }) => {
                self.keys_append_result(pending, result)
            }
            Pending::DeviceKeyList { client_msg_id, .. } => {
                self.error(EdgeErrorCode::Internal, "a view query answered as an append", Some(client_msg_id))
            }
            Pending::KeysAtLogin | Pending::DeviceCheckPart { .. } => {}
            Pending::DeviceCheck(check) => {
                // Never appended itself: keep it for its answers.
                self.pending.insert(correlation, Pending::DeviceCheck(check));
            }
            Pending::ContactLookup { client_msg_id, hashes } => match result {
                Ok(Ok(_)) => {
                    let query =
                        chorus_schema::bus::ViewQuery::ContactLookup(chorus_schema::bus::ContactLookupRequest {
                            hashes,
                        });
                    self.query(Pending::ContactMatches { client_msg_id }, query);
                }
                Ok(Err(r)) if r.code == RejectCode::RateLimited => {
                    // The allowance is per UTC day of the log's clock.
                    let retry_after_ms = DAY_MS - now_ms % DAY_MS;
                    let mut message = r.message;
                    truncate(&mut message, chorus_schema::MAX_MESSAGE_BYTES);
                    self.send(ServerFrame::Error {
                        code: EdgeErrorCode::RateLimited,
                        message,
                        client_msg_id: Some(client_msg_id),
                        retry_after_ms: Some(retry_after_ms),
                    });
                }
                Ok(Err(r)) => self.error(r.code.to_edge(), r.message, Some(client_msg_id)),
                Err(e) => self.error(append_error_code(&e), e.to_string(), Some(client_msg_id)),
            },
            Pending::ContactsRecorded { client_msg_id, matches } => match result {
                Ok(Ok(_)) => self.send(ServerFrame::ContactsMatched { client_msg_id, matches }),
                Ok(Err(r)) => self.error(r.code.to_edge(), r.message, Some(client_msg_id)),
                Err(e) => self.error(append_error_code(&e), e.to_string(), Some(client_msg_id)),
            },
            Pending::Send { client_msg_id } => match result {
                Ok(Ok(Outcome::Chat { chat, seq })) => {
                    self.send(ServerFrame::Sent { client_msg_id, chat, seq, server_time_ms: now_ms })
                }
                Ok(Ok(other)) => self.error(
                    EdgeErrorCode::Internal,
                    format!("unexpected send outcome {other:?}"),
                    Some(client_msg_id),
                ),
                Ok(Err(r)) => self.error(r.code.to_edge(), r.message, Some(client_msg_id)),
                Err(e) => self.error(append_error_code(&e), e.to_string(), Some(client_msg_id)),
            },
            Pending::Ack { chat, kind } => {
                match result {
                    Ok(Ok(_)) => {}
                    Ok(Err(r)) => self.error(r.code.to_edge(), r.message, None),
                    Err(e) => self.error(append_error_code(&e), e.to_string(), None),
                }
                let next = self.acks.remove(&(chat, kind)).flatten();
                if let (Some(up_to_seq), Some(id)) = (next, self.identity()) {
                    self.append_ack(id, chat, kind, up_to_seq);
                }
            }
        }
    }

    /// The users view's answer to [`Action::CheckRecipient`] `correlation`: the
    /// message is appended, or refused with `UnknownRecipient` (`Unavailable`
    /// when the view could not say: the client retries with the same id).
    /// Unknown correlations are ignored.
    pub fn handle_recipient_checked(&mut self, correlation: Correlation, verdict: RecipientVerdict) {
        if self.is_closed() {
            return;
        }
        let Some(Pending::Recipient { client_msg_id, command }) = self.pending.remove(&correlation) else { return };
        let cmid = Some(client_msg_id);
        match verdict {
            RecipientVerdict::Registered if matches!(command.body, CommandBody::SendDirect { .. }) => {
                self.append(Pending::Send { client_msg_id }, *command)
            }
            RecipientVerdict::Registered => self.append(Pending::Request { client_msg_id, close: false }, *command),
            RecipientVerdict::Unknown(user) => {
                self.error(EdgeErrorCode::UnknownRecipient, format!("no user {user}"), cmid)
            }
            RecipientVerdict::Unavailable => {
                self.error(EdgeErrorCode::Unavailable, "the users view did not answer: retry", cmid)
            }
        }
    }

    /// The views' answer to [`Action::Info`] `correlation`: the client gets
    /// `GroupInfo` or `MessageInfo`, or the refusal as an `Error` with its
    /// `client_msg_id` (`NotMember`, `Forbidden`, `BadFrame`,
    /// `UnknownRecipient`; `Unavailable` when the views did not answer).
    /// Unknown correlations are ignored.
    pub fn handle_info(&mut self, correlation: Correlation, answer: InfoAnswer) {
        if self.is_closed() || !matches!(self.pending.get(&correlation), Some(Pending::Info { .. })) {
            return;
        }
        let Some(Pending::Info { client_msg_id, chat, seq }) = self.pending.remove(&correlation) else { return };
        let cmid = Some(client_msg_id);
        match answer {
            InfoAnswer::Group(Ok(info)) => self.send(ServerFrame::GroupInfo { client_msg_id, chat, info }),
            InfoAnswer::Message(Ok(info)) => self.send(ServerFrame::MessageInfo {
                client_msg_id,
                chat,
                seq: seq.unwrap_or_default(),
                entries: info.entries,
            }),
            InfoAnswer::Group(Err(refusal)) | InfoAnswer::Message(Err(refusal)) => {
                let (code, message) = info_refused(refusal, chat, seq);
                self.error(code, message, cmid)
            }
            InfoAnswer::Unavailable(why) => {
                self.error(EdgeErrorCode::Unavailable, format!("the views did not answer: {why}"), cmid)
            }
        }
    }

    /// A committed timeline item of a chat of this user, live from the bus.
    /// Duplicates are dropped, gaps become [`Action::FillGap`]; items arriving
    /// during a sync or a fill of their chat wait for it. Ignored before login.
    pub fn handle_delivery(&mut self, item: &Arc<Item>) {
        if self.identity().is_none() {
            return;
        }
        let mut steps = Vec::new();
        let overflow = self.timeline.live(item.clone(), &mut steps);
        self.run_steps(steps, overflow);
    }

    /// An item recovered for an [`Action::Sync`] or [`Action::FillGap`].
    pub fn handle_recovered(&mut self, item: &Arc<Item>) {
        if self.identity().is_none() {
            return;
        }
        let mut steps = Vec::new();
        self.timeline.recovered(item.clone(), &mut steps);
        self.run_steps(steps, Ok(()));
    }

    /// The [`Action::Sync`] is complete: `chats` lists every chat of the user
    /// with its last seq; `SyncDone` tells the client how many had news.
    pub fn handle_sync_done(&mut self, chats: &[(ChatId, Seq)], with_news: u32) {
        if self.identity().is_none() {
            return;
        }
        self.sync_since.clear();
        let mut steps = Vec::new();
        let overflow = self.timeline.sync_done(chats, &mut steps);
        self.actions.push_back(Action::Deliver(ServerFrame::SyncDone { chats: with_news }));
        self.run_steps(steps, overflow);
    }

    /// The [`Action::Sync`] failed (a view or the log did not answer). The
    /// client is told the sync is over with nothing new (it keeps its
    /// positions and gets the rest by its next sync or by gap fills), and
    /// live delivery starts from the positions the client sent: it has
    /// everything up to them. (Starting every chat at 0 instead made the
    /// next live item of each chat fill, and send again, the chat's whole
    /// history, which the SDK then dropped as duplicates: found by the
    /// Jepsen harness, ~100 k duplicate deliveries in a 5-minute run.)
    pub fn handle_sync_failed(&mut self) {
        if self.identity().is_none() {
            return;
        }
        let since = std::mem::take(&mut self.sync_since);
        self.handle_sync_done(&since, 0);
    }

    /// The [`Action::FillGap`] of `chat` is complete. (A fill that fails closes
    /// the connection instead: the client reconnects and syncs from its own
    /// position, which live delivery past the gap would have moved beyond it.)
    pub fn handle_fill_done(&mut self, chat: ChatId) {
        if self.identity().is_none() {
            return;
        }
        let mut steps = Vec::new();
        let overflow = self.timeline.fill_done(chat, &mut steps);
        self.run_steps(steps, overflow);
    }

    /// This user joined `chat`, and the edge now takes its live items:
    /// what was published before that is recovered from the views (an
    /// [`Action::FillGap`] up to the chat's end), then live items follow.
    pub fn handle_joined(&mut self, chat: ChatId) {
        if self.identity().is_none() {
            return;
        }
        let mut steps = Vec::new();
        self.timeline.joined(chat, &mut steps);
        self.run_steps(steps, Ok(()));
    }

    /// Something happened to a device of this user (the account updates of
    /// the bus). This connection's own device logged out or unlinked: the
    /// connection closes (`Revoked`), whichever edge took the request.
    /// Otherwise the client is told (`DeviceNotice`), e.g. that a new device
    /// registered with its phone number.
    pub fn handle_device_notice(&mut self, kind: DeviceNoticeKind, device: DeviceId, at_ms: u64) {
        let Some(me) = self.identity() else { return };
        if device == me.device {
            // Its own link is old news to it.
            if matches!(kind, DeviceNoticeKind::Unlinked | DeviceNoticeKind::LoggedOut) {
                self.revoked();
            }
            return;
        }
        self.actions.push_back(Action::Deliver(ServerFrame::DeviceNotice { kind, device, at_ms }));
    }

    // ---- linked devices (issue 12) ----------------------------------------------

    /// The [`Action::AwaitPairing`] is in place (`ok`): claims can arrive,
    /// so the client is shown its code. Not `ok`: the bus refused, the client
    /// hears `Unavailable`.
    pub fn handle_pairing_ready(&mut self, now_ms: u64, ok: bool) {
        let State::Pairing(p) = &mut self.state else { return };
        if p.ready || p.link.is_some() {
            return;
        }
        if !ok {
            self.state = State::Anonymous;
            return self.error(EdgeErrorCode::Unavailable, "pairing is unavailable right now: retry", None);
        }
        p.ready = true;
        let frame = ServerFrame::PairCode { code: p.code.clone(), expires_in_ms: p.expires_ms.saturating_sub(now_ms) };
        self.send(frame);
    }

    /// The pairing code's time is over and no claim came: the waiting device
    /// is told (`BadPairingCode`) and may ask for a new code.
    pub fn handle_pairing_expired(&mut self, now_ms: u64) {
        let State::Pairing(p) = &self.state else { return };
        if p.link.is_some() || now_ms < p.expires_ms {
            return;
        }
        self.state = State::Anonymous;
        self.error(EdgeErrorCode::BadPairingCode, "the pairing code expired: ask for a new one", None);
    }

    /// A logged-in device (`claim`, at any edge) links this connection's
    /// device with its pairing code. The first live claim is carried out as
    /// one `LinkDevice` append with the new device's session, in the name of
    /// the claiming device; every other claim (a second one, one after the
    /// code's expiry, one on a connection that waits for nothing) is answered
    /// `BadPairingCode` at once. The answer to the claimant is
    /// [`Action::AnswerClaim`].
    pub fn handle_pair_claim(&mut self, now_ms: u64, id: ClaimId, claim: PairClaim) {
        let cmid = Some(claim.client_msg_id);
        let refuse = |message: &str| ServerFrame::Error {
            code: EdgeErrorCode::BadPairingCode,
            message: message.to_owned(),
            client_msg_id: cmid,
            retry_after_ms: None,
        };
        let State::Pairing(p) = &mut self.state else {
            let frame = refuse("no device is waiting with this code: it is wrong, expired or used");
            return self.actions.push_back(Action::AnswerClaim { claim: id, frame });
        };
        if p.link.is_some() || !p.ready {
            let frame = refuse("this pairing code is used");
            return self.actions.push_back(Action::AnswerClaim { claim: id, frame });
        }
        if now_ms >= p.expires_ms {
            let frame = refuse("this pairing code expired");
            self.actions.push_back(Action::AnswerClaim { claim: id, frame });
            self.actions.push_back(Action::StopPairing);
            self.state = State::Anonymous;
            return self.error(EdgeErrorCode::BadPairingCode, "the pairing code expired: ask for a new one", None);
        }
        let mut token = [0u8; 32];
        self.entropy.fill(&mut token);
        token[..8].copy_from_slice(&now_ms.saturating_add(self.config.token_lifetime_ms).to_be_bytes());
        token[8..16].copy_from_slice(&now_ms.to_be_bytes());
        let identity = Identity { user: claim.user, device: self.random_device() };
        let link = PairLink { claim: id, by: claim, identity, token, tries: 0 };
        let State::Pairing(p) = &mut self.state else { return };
        p.link = Some(link);
        // Single use: no further claim reaches this connection.
        self.actions.push_back(Action::StopPairing);
        self.append_pair_link();
    }

    fn append_pair_link(&mut self) {
        let State::Pairing(p) = &self.state else { return };
        let Some(link) = p.link else { return };
        let body = CommandBody::LinkDevice {
            device: link.identity.device,
            identity_key: p.identity_key.clone(),
            name: p.device_name.clone(),
            token_hash: Some(token_hash(&link.token)),
        };
        // In the claiming device's name, as if it had sent the command.
        let origin = Origin { user: link.by.user, device: link.by.device, client_msg_id: link.by.client_msg_id };
        self.append(Pending::PairLink, Command { origin, body });
    }

    fn pair_link_step(&mut self, now_ms: u64, result: Result<CommandResult, AppendError>) {
        let State::Pairing(p) = &mut self.state else { return };
        let Some(link) = p.link.as_mut() else { return };
        let cmid = link.by.client_msg_id;
        let (code, message) = match result {
            Ok(Ok(_)) => {
                let (claim, identity, token) = (link.claim, link.identity, link.token);
                let frame = ServerFrame::Done { client_msg_id: cmid, at: None };
                self.actions.push_back(Action::AnswerClaim { claim, frame });
                self.history_from_ms = Some(now_ms);
                return self.logged_in(identity, Some(token));
            }
            // Another device of the user has this id: try another.
            Ok(Err(Rejection { code: RejectCode::AlreadyExists, .. })) if link.tries + 1 < LINK_TRIES_MAX => {
                link.tries += 1;
                let mut b = [0u8; 4];
                self.entropy.fill(&mut b);
                link.identity.device = DeviceId(u32::from_le_bytes(b).max(1));
                return self.append_pair_link();
            }
            Ok(Err(r)) => (r.code.to_edge(), format!("link refused: {}", r.message)),
            Err(e) => (append_error_code(&e), format!("the link's outcome is unknown: {e}")),
        };
        let claim = link.claim;
        self.state = State::Anonymous;
        let mut message = message;
        truncate(&mut message, chorus_schema::MAX_MESSAGE_BYTES);
        let frame =
            ServerFrame::Error { code, message: message.clone(), client_msg_id: Some(cmid), retry_after_ms: None };
        self.actions.push_back(Action::AnswerClaim { claim, frame });
        self.error(code, message, None);
    }

    /// The answer to [`Action::ClaimPairing`] `correlation`: the waiting
    /// device's edge said `Done` or `Error` (passed on to the client), or
    /// nobody waits with the code (`BadPairingCode`), or nobody answered
    /// (`Unavailable`). Unknown correlations are ignored.
    pub fn handle_pair_answered(&mut self, correlation: Correlation, answer: Result<ServerFrame, ClaimError>) {
        if self.is_closed() {
            return;
        }
        let Some(Pending::PairClaim { client_msg_id }) = self.pending.remove(&correlation) else { return };
        let cmid = Some(client_msg_id);
        match answer {
            Ok(frame @ ServerFrame::Done { client_msg_id: c, .. }) if c == client_msg_id => self.send(frame),
            Ok(frame @ ServerFrame::Error { client_msg_id: c, .. }) if c == cmid => self.send(frame),
            Ok(other) => self.error(
                EdgeErrorCode::Internal,
                format!("the waiting device's edge answered {}", other.kind()),
                cmid,
            ),
            Err(ClaimError::NoDevice) => self.error(
                EdgeErrorCode::BadPairingCode,
                "no device is waiting with this code: it is wrong, expired or used",
                cmid,
            ),
            Err(ClaimError::Unavailable(m)) => {
                self.error(EdgeErrorCode::Unavailable, format!("the pairing did not answer: {m}"), cmid)
            }
        }
    }

    /// The devices view's answer to [`Action::ListDevices`]: the user's
    /// devices, or `None` when the view could not answer (`Unavailable`).
    pub fn handle_devices_listed(&mut self, client_msg_id: ClientMsgId, devices: Option<Vec<DeviceInfo>>) {
        if self.identity().is_none() {
            return;
        }
        match devices {
            Some(devices) => self.send(ServerFrame::DeviceList { client_msg_id, devices }),
            None => {
                self.error(EdgeErrorCode::Unavailable, "the devices view did not answer: retry", Some(client_msg_id))
            }
        }
    }

    fn pair_request(&mut self, now_ms: u64, device_name: String, identity_key: Vec<u8>) {
        if let Some((limits, source)) = &self.limits {
            if let Err(r) = limits.login(*source) {
                return self.rate_limited(r, None);
            }
        }
        if let State::Pairing(p) = &self.state {
            if p.link.is_some() {
                return self.error(EdgeErrorCode::RateLimited, "a link of this device is under way", None);
            }
        }
        let mut b = [0u8; 8];
        self.entropy.fill(&mut b);
        let code = pairing_code(u64::from_le_bytes(b));
        let Ok(code_hash) = pairing_code_hash(&code) else {
            return self.error(EdgeErrorCode::Internal, "made an invalid pairing code", None);
        };
        let ttl_ms = self.config.pairing_code_ttl_ms;
        let expires_ms = now_ms.saturating_add(ttl_ms);
        let pairing = Pairing { device_name, identity_key, code, expires_ms, ready: false, link: None };
        self.state = State::Pairing(Box::new(pairing));
        self.actions.push_back(Action::AwaitPairing { code_hash, ttl_ms });
    }

    fn link_device(&mut self, now_ms: u64, id: Identity, client_msg_id: ClientMsgId, code: &str) {
        if self.refuse_reserved(client_msg_id) {
            return;
        }
        let Ok(code_hash) = pairing_code_hash(code) else {
            let message = format!(
                "a pairing code is {} characters of 0-9 and A-Z (the new device shows it)",
                chorus_schema::edge::PAIRING_CODE_CHARS
            );
            return self.error(EdgeErrorCode::BadPairingCode, message, Some(client_msg_id));
        };
        if !self.admit(now_ms, Some(client_msg_id)) {
            return;
        }
        let correlation = self.correlation();
        self.pending.insert(correlation, Pending::PairClaim { client_msg_id });
        let claim = PairClaim { user: id.user, device: id.device, client_msg_id };
        self.actions.push_back(Action::ClaimPairing { correlation, code_hash, claim });
    }

    /// Every message of this user in `chat` up to `up_to_seq` now has `status`
    /// (the receipts view's aggregate ticks).
    pub fn handle_receipt(&mut self, chat: ChatId, up_to_seq: Seq, status: ReceiptKind) {
        if self.identity().is_some() {
            self.actions.push_back(Action::Deliver(ServerFrame::Receipt { chat, up_to_seq, status }));
        }
    }

    // ---- presence and typing (issue 12) ----

    /// The presence of a watched user, as this user may see it (the edge's
    /// presence hub filtered it): a `Presence` frame on the delivery stream.
    pub fn handle_presence(&mut self, user: UserId, visible: bool, online: bool, last_seen_ms: u64) {
        if self.identity().is_some() {
            let frame = ServerFrame::Presence { user, visible, online, last_seen_ms };
            self.actions.push_back(Action::Deliver(frame));
        }
    }

    /// `user` is typing (or stopped) in `chat`, a chat of this user (the
    /// signal named this user among its recipients).
    pub fn handle_typing(&mut self, chat: ChatId, user: UserId, typing: bool) {
        if self.identity().is_some() {
            self.actions.push_back(Action::Deliver(ServerFrame::Typing { chat, user, typing }));
        }
    }

    /// The [`Action::Typing`] was not relayed: the user is not a member of
    /// `chat` (`NotMember`), or the members view did not answer (`Unavailable`).
    pub fn handle_typing_refused(&mut self, chat: ChatId, not_member: bool) {
        if self.identity().is_none() {
            return;
        }
        if not_member {
            self.error(EdgeErrorCode::NotMember, format!("not a member of chat {chat}: typing not relayed"), None);
        } else {
            self.error(EdgeErrorCode::Unavailable, format!("could not check the members of chat {chat}"), None);
        }
    }

    /// The `SetPresence` that takes this connection's device offline, once
    /// the connection has ended (the driver appends it; `None` if the
    /// connection never said it was online).
    pub fn offline_command(&mut self) -> Option<Command> {
        let id = self.online_as.take()?;
        Some(self.internal_command(id, CommandBody::SetPresence { online: false, connection: self.connection }))
    }

    fn run_steps(&mut self, steps: Vec<Step>, overflow: Result<(), super::timeline::Overflow>) {
        let Some(me) = self.identity() else { return };
        for step in steps {
            match step {
                Step::Emit(item) => self.emit(me, item),
                Step::Fill { chat, after, until } => {
                    self.actions.push_back(Action::FillGap { identity: me, chat, after, until })
                }
            }
        }
        if overflow.is_err() {
            self.close(EdgeErrorCode::Unavailable, "too many deliveries waiting: reconnect and sync");
        }
    }

    /// The frame of one item, if the device sees it: its own sends are not
    /// echoed back to it (its other devices get them).
    fn emit(&mut self, me: Identity, item: Arc<Item>) {
        let e = &item.record().event;
        if item.frame().is_none() {
            return;
        }
        if e.origin.user == me.user && e.origin.device == me.device {
            return;
        }
        if self.history_from_ms.is_some_and(|linked| e.at_ms < linked) {
            return;
        }
        self.actions.push_back(Action::DeliverItem(item));
    }

    // ---- registration --------------------------------------------------------------

    fn request_otp(&mut self, now_ms: u64, phone: &str, otp: &mut OtpRegistry) {
        let phone = match normalize_phone(phone) {
            Ok(p) => p,
            Err(e) => return self.error(EdgeErrorCode::BadFrame, e.to_string(), None),
        };
        if let Some((limits, source)) = &self.limits {
            if let Err(r) = limits.otp_request(*source, &phone) {
                return self.rate_limited(r, None);
            }
        }
        let mut b = [0u8; 8];
        self.entropy.fill(&mut b);
        let code = format!("{:06}", u64::from_le_bytes(b) % 1_000_000);
        match otp.issue(now_ms, &phone, &code) {
            Ok(expires_ms) => {
                self.actions
                    .push_back(Action::SendSms { phone: phone.clone(), text: format!("Your chorus code: {code}") });
                self.send(ServerFrame::OtpSent { phone, expires_in_ms: expires_ms.saturating_sub(now_ms) });
            }
            Err(e) => self.error(otp_error_code(e), e.to_string(), None),
        }
    }

    fn login(&mut self, now_ms: u64, user: UserId, device: DeviceId, token: &[u8; 32]) {
        if let Some((limits, source)) = &self.limits {
            if let Err(r) = limits.login(*source) {
                return self.rate_limited(r, None);
            }
        }
        if token_expiry_ms(token) <= now_ms {
            self.logins_failed += 1;
            self.error(EdgeErrorCode::TokenExpired, "the login token expired: register this device again", None);
            if self.logins_failed >= self.config.logins_failed_max {
                self.close(EdgeErrorCode::Unauthenticated, "too many failed logins");
            }
            return;
        }
        self.history_from_ms = token_linked_ms(token, now_ms);
        self.state = State::VerifyingToken(Identity { user, device });
        self.actions.push_back(Action::VerifyToken { user, device, token_hash: token_hash(token) });
    }

    #[allow(clippy::too_many_arguments)]
    fn verify_otp(
        &mut self,
        now_ms: u64,
        phone: &str,
        code: &str,
        device_name: String,
        identity_key: Vec<u8>,
        pin: Option<String>,
        otp: &mut OtpRegistry,
    ) {
        let (phone, user) = match normalize_phone(phone).and_then(|p| Ok((user_for_phone(&p)?, p))) {
            Ok((user, p)) => (p, user),
            Err(e) => return self.error(EdgeErrorCode::BadFrame, e.to_string(), None),
        };
        if self.pending.values().any(|p| matches!(p, Pending::OtpFailure { .. })) {
            return self.error(EdgeErrorCode::RateLimited, "one code at a time", None);
        }
        if let Some((limits, source)) = &self.limits {
            if let Err(r) = limits.otp_attempt(*source, user) {
                return self.rate_limited(r, None);
            }
        }
        let phone_identity = Identity { user, device: DeviceId(0) };
        match otp.verify(now_ms, &phone, code) {
            Ok(()) => {}
            Err(e @ (OtpError::Wrong | OtpError::TooManyAttempts)) => {
                // Counted by the log for the phone, at every edge and across
                // resends; the answer waits for it (the phone may be locked now).
                let pending = Pending::OtpFailure { code: otp_error_code(e), message: e.to_string() };
                return self.append_internal(phone_identity, pending, CommandBody::RecordOtpFailure);
            }
            Err(e) => return self.error(otp_error_code(e), e.to_string(), None),
        }
        let mut token = [0u8; 32];
        self.entropy.fill(&mut token);
        token[..8].copy_from_slice(&now_ms.saturating_add(self.config.token_lifetime_ms).to_be_bytes());
        token[8..16].copy_from_slice(&now_ms.to_be_bytes());
        self.history_from_ms = Some(now_ms);
        let reg = Registration {
            phone,
            device_name,
            identity_key,
            identity: Identity { user, device: self.random_device() },
            token,
            pin_hash: pin.filter(|p| !p.is_empty()).map(|p| pin_hash(user, &p)),
            link_tries: 0,
        };
        let (identity, body) = (reg.identity, register_body(&reg));
        self.state = State::Registering(Box::new(reg));
        self.append_internal(identity, Pending::Register, body);
    }

    fn random_device(&mut self) -> DeviceId {
        let mut b = [0u8; 4];
        self.entropy.fill(&mut b);
        DeviceId(u32::from_le_bytes(b).max(1))
    }

    fn registration_step(&mut self, result: Result<CommandResult, AppendError>) {
        let State::Registering(reg) = &mut self.state else { return };
        let rejection = match result {
            Ok(Ok(_)) => {
                let (identity, token) = (reg.identity, reg.token);
                return self.logged_in(identity, Some(token));
            }
            // Another device of the user has this id: try another.
            Ok(Err(Rejection { code: RejectCode::AlreadyExists, .. })) if reg.link_tries + 1 < LINK_TRIES_MAX => {
                reg.link_tries += 1;
                let mut b = [0u8; 4];
                self.entropy.fill(&mut b);
                reg.identity.device = DeviceId(u32::from_le_bytes(b).max(1));
                let (identity, body) = (reg.identity, register_body(reg));
                return self.append_internal(identity, Pending::Register, body);
            }
            Ok(Err(r)) => r,
            Err(e) => {
                self.state = State::Anonymous;
                return self.error(append_error_code(&e), e.to_string(), None);
            }
        };
        let pin_given = reg.pin_hash.is_some();
        let phone_identity = Identity { user: reg.identity.user, device: DeviceId(0) };
        self.state = State::Anonymous;
        match rejection.code {
            RejectCode::Locked => self.error(EdgeErrorCode::PhoneLocked, rejection.message, None),
            // A wrong PIN counts as a wrong code (the code itself is used up).
            RejectCode::PinRequired if pin_given => {
                let pending = Pending::OtpFailure { code: EdgeErrorCode::PinRequired, message: rejection.message };
                self.append_internal(phone_identity, pending, CommandBody::RecordOtpFailure);
            }
            RejectCode::PinRequired => self.error(
                EdgeErrorCode::PinRequired,
                "this number's account has a registration PIN: request a new code and send it with the PIN",
                None,
            ),
            code => self.error(code.to_edge(), format!("registration refused: {}", rejection.message), None),
        }
    }

    fn logged_in(&mut self, id: Identity, token: Option<[u8; 32]>) {
        self.state = State::LoggedIn(id);
        self.send(match token {
            Some(token) => ServerFrame::Registered { user: id.user, device: id.device, token },
            None => ServerFrame::LoggedIn { user: id.user, device: id.device, contact_key: self.contact_key },
        });
        // The device is online while this connection lives (the partition
        // keeps one connection per device, so a reconnect elsewhere wins).
        // Before the subscription: the actions after it wait until the
        // delivery stream is open and the bus holds the user's chats, and a
        // connection that ends before that was online all the same.
        self.online_as = Some(id);
        let command = self.internal_command(id, CommandBody::SetPresence { online: true, connection: self.connection });
        self.actions.push_back(Action::SetPresence(command));
        self.actions.push_back(Action::Subscribe(id));
    }

    // ---- messaging -----------------------------------------------------------------

    fn send_message(
        &mut self,
        now_ms: u64,
        id: Identity,
        to: Recipient,
        client_msg_id: ClientMsgId,
        ciphertext: Vec<u8>,
        media: Option<chorus_schema::MediaRef>,
    ) {
        if !self.admit_send(now_ms, client_msg_id, ciphertext.len()) {
            return;
        }
        self.send_admitted(id, to, client_msg_id, ciphertext, media);
    }

    /// The checks every send passes before it is appended (a reserved id,
    /// the ciphertext's size, the rate limit); refused with an `Error` here.
    pub(super) fn admit_send(&mut self, now_ms: u64, client_msg_id: ClientMsgId, ciphertext_len: usize) -> bool {
        let cmid = Some(client_msg_id);
        if self.refuse_reserved(client_msg_id) {
            return false;
        }
        if ciphertext_len > self.config.ciphertext_bytes_max {
            let message = format!("ciphertext {ciphertext_len} > {} bytes", self.config.ciphertext_bytes_max);
            self.error(EdgeErrorCode::CiphertextTooLarge, message, cmid);
            return false;
        }
        self.admit(now_ms, cmid)
    }

    /// A send past its checks and admission: to the log (a direct message
    /// once its recipient is known).
    fn send_admitted(
        &mut self,
        id: Identity,
        to: Recipient,
        client_msg_id: ClientMsgId,
        ciphertext: Vec<u8>,
        media: Option<chorus_schema::MediaRef>,
    ) {
        let origin = Origin { user: id.user, device: id.device, client_msg_id };
        match to {
            Recipient::User(recipient) => {
                let command = Command { origin, body: CommandBody::SendDirect { recipient, ciphertext, media } };
                let correlation = self.correlation();
                self.pending.insert(correlation, Pending::Recipient { client_msg_id, command: Box::new(command) });
                self.actions.push_back(Action::CheckRecipient { correlation, users: vec![recipient] });
            }
            Recipient::Group(chat) => {
                let body = CommandBody::SendGroup { chat, ciphertext, media };
                self.append(Pending::Send { client_msg_id }, Command { origin, body });
            }
        }
    }

    fn ack(&mut self, id: Identity, chat: ChatId, kind: ReceiptKind, up_to_seq: Seq) {
        if let Some(waiting) = self.acks.get_mut(&(chat, kind)) {
            *waiting = Some(waiting.map_or(up_to_seq, |w| w.max(up_to_seq)));
            return;
        }
        self.append_ack(id, chat, kind, up_to_seq);
    }

    fn append_ack(&mut self, id: Identity, chat: ChatId, kind: ReceiptKind, up_to_seq: Seq) {
        self.acks.insert((chat, kind), None);
        self.append_internal(id, Pending::Ack { chat, kind }, CommandBody::Ack { chat, kind, up_to_seq });
    }

    /// Rate and in-flight admission of a logged-in frame; answers `RateLimited` if refused.
    fn admit(&mut self, now_ms: u64, client_msg_id: Option<ClientMsgId>) -> bool {
        if self.pending.len() >= self.config.in_flight_max {
            self.error(EdgeErrorCode::RateLimited, "too many requests in flight", client_msg_id);
            return false;
        }
        if !self.rate.try_take(now_ms) {
            self.error(EdgeErrorCode::RateLimited, "slow down", client_msg_id);
            return false;
        }
        true
    }

    /// An info query of the logged-in user, admitted like any request.
    fn info(&mut self, now_ms: u64, client_msg_id: ClientMsgId, chat: ChatId, seq: Option<Seq>, request: InfoRequest) {
        if self.admit(now_ms, Some(client_msg_id)) {
            let correlation = self.correlation();
            self.pending.insert(correlation, Pending::Info { client_msg_id, chat, seq });
            self.actions.push_back(Action::Info { correlation, request });
        }
    }

    // ---- output helpers --------------------------------------------------------------

    /// Refuses a client's id with the edge's reserved bit set (`BadFrame`); true if refused.
    fn refuse_reserved(&mut self, client_msg_id: ClientMsgId) -> bool {
        let reserved = client_msg_id.0 & CLIENT_MSG_ID_RESERVED_BIT != 0;
        if reserved {
            self.error(EdgeErrorCode::BadFrame, "the top bit of client_msg_id is reserved", Some(client_msg_id));
        }
        reserved
    }

    /// A profile, privacy, status or contact-sync request of a logged-in user.
    fn social(&mut self, now_ms: u64, id: Identity, frame: ClientFrame) {
        use chorus_schema::bus::{ProfileRequest, StatusRequest, ViewQuery};
        let client_msg_id = match &frame {
            ClientFrame::SetProfile { client_msg_id, .. }
            | ClientFrame::SetPrivacy { client_msg_id, .. }
            | ClientFrame::GetProfile { client_msg_id, .. }
            | ClientFrame::PostStatus { client_msg_id, .. }
            | ClientFrame::ListStatus { client_msg_id, .. }
            | ClientFrame::ViewStatus { client_msg_id, .. }
            | ClientFrame::SyncContacts { client_msg_id, .. } => *client_msg_id,
            _ => return,
        };
        if self.refuse_reserved(client_msg_id) || !self.admit(now_ms, Some(client_msg_id)) {
            return;
        }
        // Appends carry the client's id, so that a retried request is applied once.
        let origin = Origin { user: id.user, device: id.device, client_msg_id };
        let done = Pending::Request { client_msg_id, close: false };
        match frame {
            ClientFrame::SetProfile { name, about, avatar, .. } => {
                self.append(done, Command { origin, body: CommandBody::UpdateProfile { name, about, avatar } });
            }
            ClientFrame::SetPrivacy { last_seen, profile_photo, about, read_receipts, .. } => {
                let body = CommandBody::SetPrivacy { last_seen, profile_photo, about, read_receipts };
                self.append(done, Command { origin, body });
            }
            ClientFrame::PostStatus { status_id, ciphertext, media, audience, users, ttl_ms, .. } => {
                let body = CommandBody::PostStatus { status_id, ciphertext, media, acl: users, audience, ttl_ms };
                self.append(done, Command { origin, body });
            }
            ClientFrame::ViewStatus { author, status_id, .. } => {
                self.append(done, Command { origin, body: CommandBody::ViewStatus { author, status_id } });
            }
            ClientFrame::GetProfile { user, .. } => {
                let query = ViewQuery::Profile(ProfileRequest { viewer: id.user, user });
                self.query(Pending::Answer { client_msg_id }, query);
            }
            ClientFrame::ListStatus { author, .. } => {
                let query = ViewQuery::Status(StatusRequest { viewer: id.user, author, now_ms });
                self.query(Pending::Answer { client_msg_id }, query);
            }
            ClientFrame::SyncContacts { hashes, .. } => {
                if hashes.is_empty() {
                    return self.send(ServerFrame::ContactsMatched { client_msg_id, matches: vec![] });
                }
                // Counted first, where the allowance lives: the user partition.
                let n = u32::try_from(hashes.len()).unwrap_or(u32::MAX);
                let body = CommandBody::RecordContactLookup { hashes: n };
                self.append(Pending::ContactLookup { client_msg_id, hashes }, Command { origin, body });
            }
            _ => {}
        }
    }

    /// The view's answer to [`Action::Query`] `correlation` (`Err`: the view
    /// could not answer). Unknown correlations are ignored.
    pub fn handle_query_result(
        &mut self,
        correlation: Correlation,
        result: Result<chorus_schema::bus::ViewAnswer, String>,
    ) {
        use chorus_schema::bus::ViewAnswer;
        let Some(pending) = self.pending.remove(&correlation) else { return };
        if self.is_closed() {
            return;
        }
        // ---- E2EE (issue 14) ----
        if matches!(pending, Pending::DeviceKeyList { .. } | Pending::KeysAtLogin | Pending::DeviceCheckPart { .. }) {
            return self.keys_query_result(correlation, pending, result);
        }
        let client_msg_id = match &pending {
            Pending::Answer { client_msg_id } | Pending::ContactMatches { client_msg_id } => *client_msg_id,
            _ => return,
        };
        match (pending, result) {
            (_, Err(e)) => {
                self.error(EdgeErrorCode::Unavailable, format!("view unavailable: {e}"), Some(client_msg_id))
            }
            (Pending::Answer { .. }, Ok(ViewAnswer::Profile(profile))) => {
                self.send(ServerFrame::Profile { client_msg_id, profile })
            }
            (Pending::Answer { .. }, Ok(ViewAnswer::Statuses(entries))) => {
                self.send(ServerFrame::StatusList { client_msg_id, entries })
            }
            (Pending::ContactMatches { .. }, Ok(ViewAnswer::ContactMatches(matches))) => {
                if let Some(id) = self.identity() {
                    let contacts: Vec<UserId> = matches.iter().map(|m| m.user).collect();
                    let pending = Pending::ContactsRecorded { client_msg_id, matches };
                    self.append_internal(id, pending, CommandBody::UpdateContacts { contacts });
                }
            }
            (_, Ok(_)) => self.error(EdgeErrorCode::Internal, "a view answered another query", Some(client_msg_id)),
        }
    }

    fn query(&mut self, pending: Pending, query: chorus_schema::bus::ViewQuery) {
        let correlation = self.correlation();
        self.pending.insert(correlation, pending);
        self.actions.push_back(Action::Query { correlation, query });
    }

    fn append_internal(&mut self, id: Identity, pending: Pending, body: CommandBody) {
        let command = self.internal_command(id, body);
        self.append(pending, command);
    }

    /// A command of the edge's own for `id`, with a fresh reserved client message id.
    fn internal_command(&mut self, id: Identity, body: CommandBody) -> Command {
        let client_msg_id = ClientMsgId(self.next_internal_cmid | CLIENT_MSG_ID_RESERVED_BIT);
        self.next_internal_cmid = (self.next_internal_cmid + 1) & !CLIENT_MSG_ID_RESERVED_BIT;
        let origin = Origin { user: id.user, device: id.device, client_msg_id };
        Command { origin, body }
    }

    fn correlation(&mut self) -> Correlation {
        let correlation = Correlation(self.next_correlation);
        self.next_correlation += 1;
        correlation
    }

    fn append(&mut self, pending: Pending, command: Command) {
        let correlation = self.correlation();
        self.pending.insert(correlation, pending);
        self.actions.push_back(Action::Append { correlation, command });
    }

    fn send(&mut self, frame: ServerFrame) {
        self.actions.push_back(Action::Send(frame));
    }

    fn error(&mut self, code: EdgeErrorCode, message: impl Into<String>, client_msg_id: Option<ClientMsgId>) {
        let mut message = message.into();
        truncate(&mut message, chorus_schema::MAX_MESSAGE_BYTES);
        self.send(ServerFrame::Error { code, message, client_msg_id, retry_after_ms: None });
    }

    /// `RateLimited`, with when to retry.
    fn rate_limited(&mut self, r: Refused, client_msg_id: Option<ClientMsgId>) {
        let message = format!("too many {}: retry in {} ms", r.what, r.retry_after_ms);
        self.send(ServerFrame::Error {
            code: EdgeErrorCode::RateLimited,
            message,
            client_msg_id,
            retry_after_ms: Some(r.retry_after_ms),
        });
    }

    /// The device logged out or was unlinked: say so (the client stops
    /// reconnecting) and close.
    fn revoked(&mut self) {
        const REASON: &str = "this device logged out or was unlinked";
        self.error(EdgeErrorCode::Revoked, REASON, None);
        self.close(EdgeErrorCode::Revoked, REASON);
    }

    fn close(&mut self, code: EdgeErrorCode, reason: &str) {
        self.state = State::Closed;
        self.pending.clear();
        self.acks.clear();
        self.actions.push_back(Action::Close { code, reason: reason.to_owned() });
    }
}

fn register_body(reg: &Registration) -> CommandBody {
    CommandBody::RegisterDevice {
        phone: reg.phone.clone(),
        device: reg.identity.device,
        identity_key: reg.identity_key.clone(),
        name: reg.device_name.clone(),
        token_hash: token_hash(&reg.token),
        pin_hash: reg.pin_hash,
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}

fn append_error_code(e: &AppendError) -> EdgeErrorCode {
    match e {
        AppendError::Unavailable(_) => EdgeErrorCode::Unavailable,
        AppendError::Internal(_) => EdgeErrorCode::Internal,
    }
}

fn otp_error_code(e: OtpError) -> EdgeErrorCode {
    match e {
        OtpError::TooSoon | OtpError::Full => EdgeErrorCode::RateLimited,
        OtpError::Expired => EdgeErrorCode::OtpExpired,
        OtpError::Wrong => EdgeErrorCode::BadOtp,
        OtpError::TooManyAttempts => EdgeErrorCode::TooManyAttempts,
    }
}
