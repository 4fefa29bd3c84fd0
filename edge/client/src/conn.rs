//! [`Core`]: the SDK's connection logic as a sans-IO state machine, like the
//! edge's `Session` (quinn-proto style).
//!
//! The driver (`worker.rs`, the quinn shell) feeds it inputs — the app's
//! calls ([`Core::send`], [`Core::ack`], …), what happened to the link
//! ([`Core::handle_link_up`], [`Core::handle_link_down`]), the frames of the
//! control and delivery streams, and timer expiries ([`Core::handle_timeout`])
//! — and after every call drains [`Core::poll_output`] and performs the
//! [`Output`]s in order, then sleeps until [`Core::poll_timeout`] at most. No
//! clock (time is the `now_ms` argument, milliseconds on any monotonic
//! scale), no IO, no randomness: tests drive it against the edge's `Session`
//! under a virtual clock.
//!
//! # Links
//! Each connection attempt gets a fresh [`LinkId`] ([`Output::Connect`]);
//! inputs name the link they come from, and inputs of a link the core has
//! given up are ignored. So the driver never has to reason about stale
//! results: it reports what it saw, and drops a link when told
//! ([`Output::Disconnect`]).
//!
//! # Connection states
//! ```text
//!            ┌──────────── round over (every edge failed once), wait backoff ◀──┐
//!            ▼                                                                  │
//!  new ──▶ Connecting ──link up──▶ LoggingIn ──LoggedIn──▶ Live ──lost──▶ Connecting (next edge, at once)
//!            │ link down / handshake timeout  │ refused / login timeout          │
//!            └────────────▶ next edge ◀───────┘                                  │ Revoked, close
//!                                                                                ▼
//!                                     Stopped ◀── refused for good / first round failed
//! ```
//! - The first round must succeed ([`crate::Client::connect`] fails
//!   otherwise); later rounds retry forever with backoff
//!   (`reconnect_min_ms` doubling up to `reconnect_max_ms`).
//! - On login: every unacknowledged send is written again with its
//!   `client_msg_id` (the log deduplicates them), the latest acks are
//!   re-sent, account requests not yet written are written, then a `Sync`
//!   from the positions.
//! - Retryable refusals of a send (`Unavailable`, `RateLimited`) are written
//!   again after `resend_interval_ms` (or the edge's `retry_after_ms`).
//! - Deliveries: each `(chat, seq)` is passed on at most once, in seq order
//!   per chat: anything at or below the chat's position is dropped.
//! - A lost connection fails the account requests written on it (their
//!   outcome is unknown: they are not resent); sends stay pending.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chorus_schema::edge::DeviceInfo;
use chorus_schema::{
    ChatId, ClientFrame, ClientMsgId, DeviceId, EdgeErrorCode, GroupOp, ReceiptKind, Recipient, Seq, ServerFrame,
    UserId, Visibility,
};
use tracing::debug;

use crate::config::ClientConfig;
use crate::types::{Answer, ChatChange, Credentials, Error, Event, Message, Result, Resume, Sent};

/// One connection attempt (and, once up, the connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u64);

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Open `link` to `edge` (QUIC handshake, then the control stream), and
    /// report [`Core::handle_link_up`] or [`Core::handle_link_down`]. Only
    /// one link is wanted at a time: a `Connect` comes after the previous
    /// link's `Disconnect` (or its reported loss).
    Connect { link: LinkId, edge: String },
    /// Write a frame on the control stream of the current link.
    Send(ClientFrame),
    /// Close `link` (or abandon its attempt), telling the edge `reason`. A
    /// link already gone needs nothing.
    Disconnect { link: LinkId, reason: String },
    /// Hand an event to the app.
    Event(Event),
    /// The send `client_msg_id` is answered (every caller waiting for it).
    SendDone { client_msg_id: ClientMsgId, result: Result<Sent> },
    /// The account or group request `client_msg_id` is answered; with where
    /// it is in its chat's timeline, for a request that changed a chat.
    RequestDone { client_msg_id: ClientMsgId, result: Result<crate::types::Answer> },
    /// The client stopped for good: closed, its login refused for good, or
    /// no edge took its first login. Nothing follows.
    Stopped(Error),
    // ---- linked devices (issue 12) ----
    /// The [`Request::ListDevices`] `client_msg_id` is answered with the
    /// user's devices (a failure comes as [`Output::RequestDone`]).
    DevicesListed { client_msg_id: ClientMsgId, devices: Vec<DeviceInfo> },
}

/// An account request of a logged-in device, answered `Done`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    SetPin {
        pin: String,
    },
    UnlinkDevice {
        device: DeviceId,
    },
    Block {
        user: UserId,
        blocked: bool,
    },
    Logout,
    /// A group request (create, add, remove, promote, demote, leave, change info).
    Group {
        chat: ChatId,
        op: GroupOp,
    },
    // ---- linked devices (issue 12) ----
    /// Link the new device that shows this pairing code (answered `Done`).
    LinkDevice {
        code: String,
    },
    /// The user's devices (answered by [`Output::DevicesListed`]).
    ListDevices,
    // ---- group info and message info (issue 12) ----
    /// A group's name, description and members (answered [`Answer::GroupInfo`]).
    GroupInfo {
        chat: ChatId,
    },
    /// Who received and read this user's message at `seq`, and when
    /// (answered [`Answer::MessageInfo`]).
    MessageInfo {
        chat: ChatId,
        seq: Seq,
    },
    /// Privacy settings (issue 12).
    SetPrivacy {
        last_seen: Visibility,
        profile_photo: Visibility,
        about: Visibility,
        read_receipts: bool,
    },
    SetProfile {
        name: String,
        about: String,
        avatar: Option<chorus_schema::MediaRef>,
    },
    GetProfile {
        user: UserId,
    },
    PostStatus(crate::types::StatusPost),
    ListStatus {
        author: Option<UserId>,
    },
    ViewStatus {
        author: UserId,
        status_id: u64,
    },
    /// Phone numbers: hashed with the deployment's key from `LoggedIn`
    /// before they leave the device.
    SyncContacts {
        phones: Vec<String>,
    },
}

impl Request {
    /// Whether the request only reads: then a connection lost before its
    /// answer writes it again after the next login instead of failing it.
    fn reads_only(&self) -> bool {
        matches!(
            self,
            Request::GroupInfo { .. }
                | Request::MessageInfo { .. }
                | Request::GetProfile { .. }
                | Request::ListStatus { .. }
        )
    }
}

impl Request {
    fn frame(&self, client_msg_id: ClientMsgId, contact_key: Option<[u8; 32]>) -> Result<ClientFrame> {
        Ok(match self {
            Request::SetPin { pin } => ClientFrame::SetPin { client_msg_id, pin: pin.clone() },
            Request::UnlinkDevice { device } => ClientFrame::UnlinkDevice { client_msg_id, device: *device },
            Request::Block { user, blocked } => ClientFrame::Block { client_msg_id, user: *user, blocked: *blocked },
            Request::Logout => ClientFrame::Logout { client_msg_id },
            Request::Group { chat, op } => ClientFrame::Group { client_msg_id, chat: *chat, op: op.clone() },
            Request::LinkDevice { code } => ClientFrame::LinkDevice { client_msg_id, code: code.clone() },
            Request::ListDevices => ClientFrame::ListDevices { client_msg_id },
            Request::GroupInfo { chat } => ClientFrame::GroupInfo { client_msg_id, chat: *chat },
            Request::MessageInfo { chat, seq } => ClientFrame::MessageInfo { client_msg_id, chat: *chat, seq: *seq },
            Request::SetProfile { name, about, avatar } => ClientFrame::SetProfile {
                client_msg_id,
                name: name.clone(),
                about: about.clone(),
                avatar: avatar.clone(),
            },
            Request::SetPrivacy { last_seen, profile_photo, about, read_receipts } => ClientFrame::SetPrivacy {
                client_msg_id,
                last_seen: *last_seen,
                profile_photo: *profile_photo,
                about: *about,
                read_receipts: *read_receipts,
            },
            Request::GetProfile { user } => ClientFrame::GetProfile { client_msg_id, user: *user },
            Request::PostStatus(p) => ClientFrame::PostStatus {
                client_msg_id,
                status_id: p.status_id,
                ciphertext: p.ciphertext.clone(),
                media: p.media.clone(),
                audience: p.audience,
                users: p.users.clone(),
                ttl_ms: p.ttl_ms,
            },
            Request::ListStatus { author } => ClientFrame::ListStatus { client_msg_id, author: *author },
            Request::ViewStatus { author, status_id } => {
                ClientFrame::ViewStatus { client_msg_id, author: *author, status_id: *status_id }
            }
            Request::SyncContacts { phones } => {
                let key =
                    contact_key.ok_or_else(|| Error::Protocol("the edge gave no contact-sync key at login".into()))?;
                let hashes = phones
                    .iter()
                    .map(|p| {
                        chorus_schema::social::contact_hash(&key, p).map_err(|e| Error::Refused {
                            code: EdgeErrorCode::BadFrame,
                            message: e.to_string(),
                            retry_after_ms: None,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                ClientFrame::SyncContacts { client_msg_id, hashes }
            }
        })
    }
}

/// Counters of a core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Logins that succeeded.
    pub connects: u64,
    /// Sends written again after a (re)login.
    pub resent: u64,
    /// Deliveries dropped as already passed on.
    pub duplicates_dropped: u64,
}

/// The timings the core uses (from [`ClientConfig`]).
#[derive(Clone, Copy, Debug)]
struct Timing {
    reconnect_min_ms: u64,
    reconnect_max_ms: u64,
    resend_interval_ms: u64,
    connect_timeout_ms: u64,
    login_timeout_ms: u64,
    close_reason_wait_ms: u64,
}

#[derive(Clone, Debug)]
enum State {
    /// Between rounds of attempts, until `until`.
    Waiting {
        until: u64,
    },
    /// The driver is opening `link` to `edges[edge]`, by `deadline`.
    Connecting {
        link: LinkId,
        edge: usize,
        deadline: u64,
    },
    /// `Login` written; the answer is due by `deadline`.
    LoggingIn {
        link: LinkId,
        edge: usize,
        deadline: u64,
    },
    /// Logged in. `draining`: the delivery stream ended; the control stream
    /// is read for the reason until the deadline, then the link is given up.
    Live {
        link: LinkId,
        edge: usize,
        draining: Option<(u64, String)>,
    },
    Stopped,
}

#[derive(Clone, Debug)]
struct PendingSend {
    frame: ClientFrame,
    /// A retryable refusal: write it again at this time (on this link).
    retry_at: Option<u64>,
}

#[derive(Clone, Debug)]
struct PendingRequest {
    frame: ClientFrame,
    /// A logout or the unlink of this device: the edge closing the session
    /// (`Revoked`) before its `Done` arrives means it succeeded.
    ends_session: bool,
    /// Written on the current link (then a loss fails it: its outcome is unknown).
    written: bool,
    /// A query: a loss writes it again after the next login.
    reads_only: bool,
}

/// The SDK's connection state machine. See the module docs.
#[derive(Debug)]
pub struct Core {
    timing: Timing,
    edges: Vec<String>,
    credentials: Credentials,
    state: State,
    next_link: u64,
    /// The edge the next attempt goes to (modulo the number of edges).
    edge_index: usize,
    /// Failed attempts of the current round.
    tries: usize,
    /// A login succeeded once: failed rounds are retried from then on.
    ever_connected: bool,
    last_error: Error,
    backoff_ms: u64,
    pending: BTreeMap<ClientMsgId, PendingSend>,
    requests: BTreeMap<ClientMsgId, PendingRequest>,
    /// The deployment's contact-sync key, from the last `LoggedIn`.
    contact_key: Option<[u8; 32]>,
    acks: BTreeMap<(ChatId, ReceiptKind), Seq>,
    positions: HashMap<ChatId, Seq>,
    outputs: VecDeque<Output>,
    stats: Stats,
    /// The users whose presence the app watches (sent again after every login).
    watched: Vec<UserId>,
    /// Typing indicators shown, until when (cleared then: `Event::Typing` false).
    typing: BTreeMap<(ChatId, UserId), u64>,
    /// The latest time an input brought (deliveries carry none).
    clock_ms: u64,
}

/// Whether a refusal of the login ends the client (no reconnect helps).
fn login_refused_for_good(code: EdgeErrorCode) -> bool {
    matches!(code, EdgeErrorCode::Unauthenticated | EdgeErrorCode::TokenExpired | EdgeErrorCode::Revoked)
}

impl Core {
    /// A core for `credentials` that starts at `resume`'s positions; its
    /// first output connects to the first edge (or stops: no edges).
    pub fn new(config: &ClientConfig, credentials: Credentials, resume: Resume, now_ms: u64) -> Core {
        let timing = Timing {
            reconnect_min_ms: config.reconnect_min_ms,
            reconnect_max_ms: config.reconnect_max_ms.max(config.reconnect_min_ms),
            resend_interval_ms: config.resend_interval_ms,
            connect_timeout_ms: config.connect_timeout_ms,
            login_timeout_ms: config.login_timeout_ms,
            close_reason_wait_ms: config.close_reason_wait_ms,
        };
        let mut core = Core {
            timing,
            edges: config.edges.clone(),
            credentials,
            state: State::Waiting { until: now_ms },
            next_link: 1,
            edge_index: 0,
            tries: 0,
            ever_connected: false,
            last_error: Error::Connection("no edges configured".into()),
            backoff_ms: timing.reconnect_min_ms,
            pending: BTreeMap::new(),
            requests: BTreeMap::new(),
            contact_key: None,
            acks: BTreeMap::new(),
            positions: resume.positions.into_iter().collect(),
            outputs: VecDeque::new(),
            stats: Stats::default(),
            watched: Vec::new(),
            typing: BTreeMap::new(),
            clock_ms: now_ms,
        };
        core.connect_next(now_ms);
        core
    }

    /// The next thing to do, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Core::handle_timeout`] is due next, if anything waits on time.
    pub fn poll_timeout(&self) -> Option<u64> {
        let typing = self.typing.values().min().copied();
        let state = match &self.state {
            State::Waiting { until } => Some(*until),
            State::Connecting { deadline, .. } | State::LoggingIn { deadline, .. } => Some(*deadline),
            State::Live { draining: Some((deadline, _)), .. } => Some(*deadline),
            State::Live { draining: None, .. } => self.pending.values().filter_map(|p| p.retry_at).min(),
            State::Stopped => None,
        };
        match (state, typing) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the client stopped for good.
    pub fn is_stopped(&self) -> bool {
        matches!(self.state, State::Stopped)
    }

    /// Whether a login is up.
    pub fn is_live(&self) -> bool {
        matches!(self.state, State::Live { .. })
    }

    /// The last seq passed on per chat (sorted).
    pub fn positions(&self) -> Vec<(ChatId, Seq)> {
        let mut p: Vec<_> = self.positions.iter().map(|(c, s)| (*c, *s)).collect();
        p.sort();
        p
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    // ---- the app's calls ----------------------------------------------------------

    /// Sends `ciphertext` to `to` as `client_msg_id`: answered by
    /// [`Output::SendDone`] once committed or refused for good. A send of an
    /// id already pending is the same send (answered once, for both).
    pub fn send(&mut self, to: Recipient, client_msg_id: ClientMsgId, ciphertext: Vec<u8>) {
        self.send_media(to, client_msg_id, ciphertext, None);
    }

    /// As [`Core::send`], with the message's media reference (issue 14: the
    /// uploaded attachment the ciphertext carries the key of).
    pub fn send_media(
        &mut self,
        to: Recipient,
        client_msg_id: ClientMsgId,
        ciphertext: Vec<u8>,
        media: Option<chorus_schema::MediaRef>,
    ) {
        if self.is_stopped() {
            return self.outputs.push_back(Output::SendDone { client_msg_id, result: Err(Error::Closed) });
        }
        if self.pending.contains_key(&client_msg_id) {
            return;
        }
        let frame = ClientFrame::Send { to, client_msg_id, ciphertext, media };
        if self.is_live() {
            self.outputs.push_back(Output::Send(frame.clone()));
        }
        self.pending.insert(client_msg_id, PendingSend { frame, retry_at: None });
    }

    /// An account request, answered by [`Output::RequestDone`]. Written now
    /// if logged in, else after the next login.
    pub fn request(&mut self, client_msg_id: ClientMsgId, request: Request) {
        if self.is_stopped() {
            return self.outputs.push_back(Output::RequestDone { client_msg_id, result: Err(Error::Closed) });
        }
        let ends_session = match request {
            Request::Logout => true,
            Request::UnlinkDevice { device } => device == self.credentials.device,
            Request::SetPin { .. }
            | Request::Block { .. }
            | Request::Group { .. }
            | Request::LinkDevice { .. }
            | Request::ListDevices
            | Request::SetPrivacy { .. }
            | Request::SetProfile { .. }
            | Request::GetProfile { .. }
            | Request::PostStatus(_)
            | Request::ListStatus { .. }
            | Request::ViewStatus { .. }
            | Request::SyncContacts { .. } => false,
            Request::GroupInfo { .. } | Request::MessageInfo { .. } => false,
        };
        let reads_only = request.reads_only();
        let frame = match request.frame(client_msg_id, self.contact_key) {
            Ok(f) => f,
            Err(e) => return self.outputs.push_back(Output::RequestDone { client_msg_id, result: Err(e) }),
        };
        // The edge refuses a frame over a limit while decoding it, before it
        // knows the request's id: the answer could never be matched. Refuse
        // it here, by name.
        if let Err(e) = frame.validate() {
            let code = EdgeErrorCode::for_decode_error(&e);
            let result = Err(Error::Refused { code, message: e.to_string(), retry_after_ms: None });
            return self.outputs.push_back(Output::RequestDone { client_msg_id, result });
        }
        let written = self.is_live();
        if written {
            self.outputs.push_back(Output::Send(frame.clone()));
        }
        self.requests.insert(client_msg_id, PendingRequest { frame, ends_session, written, reads_only });
    }

    /// A cumulative receipt: kept (the largest per chat and kind) and re-sent
    /// after every login.
    pub fn ack(&mut self, chat: ChatId, kind: ReceiptKind, up_to_seq: Seq) {
        if self.is_stopped() {
            return;
        }
        let e = self.acks.entry((chat, kind)).or_insert(up_to_seq);
        *e = (*e).max(up_to_seq);
        let up_to_seq = *e;
        if self.is_live() {
            self.outputs.push_back(Output::Send(ClientFrame::Ack { chat, kind, up_to_seq }));
        }
    }

    /// Watch the presence of `users` (replacing the list; empty: none):
    /// `Event::Presence` for each now and on every change, across reconnects.
    pub fn subscribe_presence(&mut self, mut users: Vec<UserId>) {
        if self.is_stopped() {
            return;
        }
        users.sort_unstable();
        users.dedup();
        users.truncate(chorus_schema::MAX_WATCHED_USERS);
        self.watched = users;
        if self.is_live() {
            self.outputs.push_back(Output::Send(ClientFrame::SubscribePresence { users: self.watched.clone() }));
        }
    }

    /// This user is typing (or stopped) in `chat`: sent now if logged in,
    /// else dropped (typing is ephemeral). Refresh it within
    /// [`chorus_schema::edge::TYPING_EXPIRY_MS`] while typing.
    pub fn typing(&mut self, chat: ChatId, typing: bool) {
        if self.is_live() {
            self.outputs.push_back(Output::Send(ClientFrame::Typing { chat, typing }));
        }
    }

    /// A sync from the positions now (one runs after every login anyway).
    pub fn sync(&mut self) {
        if self.is_live() {
            let frame = self.sync_frame();
            self.outputs.push_back(Output::Send(frame));
        }
    }

    /// Drops the live connection and connects again (to the next edge).
    /// Ignored unless logged in.
    pub fn reconnect(&mut self, now_ms: u64) {
        if let State::Live { edge, .. } = self.state {
            let reason = format!("{}: the app asked to reconnect", self.edge_name(edge));
            self.lost(now_ms, reason);
        }
    }

    /// Stops: pending sends and requests fail with [`Error::Closed`].
    pub fn close(&mut self) {
        if !self.is_stopped() {
            self.stop(Error::Closed, "client closed");
        }
    }

    // ---- the link -------------------------------------------------------------------

    /// The driver opened `link` (handshake done, control stream open).
    pub fn handle_link_up(&mut self, now_ms: u64, link: LinkId) {
        let State::Connecting { link: l, edge, .. } = self.state else { return };
        if l != link {
            return;
        }
        let deadline = now_ms.saturating_add(self.timing.login_timeout_ms);
        self.state = State::LoggingIn { link, edge, deadline };
        let c = self.credentials;
        self.outputs.push_back(Output::Send(ClientFrame::Login { user: c.user, device: c.device, token: c.token }));
    }

    /// `link` broke, or could not be opened: `reason` says why.
    pub fn handle_link_down(&mut self, now_ms: u64, link: LinkId, reason: &str) {
        match self.state {
            State::Connecting { link: l, edge, .. } | State::LoggingIn { link: l, edge, .. } if l == link => {
                let error = Error::Connection(format!("{}: {reason}", self.edge_name(edge)));
                self.attempt_failed(now_ms, error);
            }
            State::Live { link: l, edge, .. } if l == link => {
                let reason = format!("{}: {reason}", self.edge_name(edge));
                self.lost(now_ms, reason);
            }
            _ => {}
        }
    }

    /// A frame of `link`'s control stream.
    pub fn handle_control(&mut self, now_ms: u64, link: LinkId, frame: ServerFrame) {
        match self.state {
            State::LoggingIn { link: l, edge, .. } if l == link => self.login_answer(now_ms, edge, frame),
            State::Live { link: l, .. } if l == link => self.control(now_ms, frame),
            _ => {}
        }
    }

    /// A frame of `link`'s delivery stream (at the latest time an input brought).
    pub fn handle_delivery(&mut self, link: LinkId, frame: ServerFrame) {
        let now_ms = self.clock_ms;
        self.handle_delivery_at(now_ms, link, frame);
    }

    /// A frame of `link`'s delivery stream, at `now_ms`.
    pub fn handle_delivery_at(&mut self, now_ms: u64, link: LinkId, frame: ServerFrame) {
        self.clock_ms = self.clock_ms.max(now_ms);
        if self.current_link() != Some(link) {
            return;
        }
        let event = match frame {
            ServerFrame::Deliver { chat, seq, sender, sender_device, client_msg_id, at_ms, ciphertext, .. } => {
                let p = self.positions.entry(chat).or_insert(Seq(0));
                if seq <= *p {
                    self.stats.duplicates_dropped += 1;
                    return;
                }
                *p = seq;
                Event::Message(Message { chat, seq, sender, sender_device, client_msg_id, at_ms, ciphertext })
            }
            ServerFrame::ChatChange { chat, seq, actor, actor_device, client_msg_id, at_ms, change } => {
                let p = self.positions.entry(chat).or_insert(Seq(0));
                if seq <= *p {
                    self.stats.duplicates_dropped += 1;
                    return;
                }
                *p = seq;
                Event::ChatChange(ChatChange { chat, seq, actor, actor_device, client_msg_id, at_ms, change })
            }
            ServerFrame::Receipt { chat, up_to_seq, status } => Event::Receipt { chat, up_to_seq, status },
            ServerFrame::SyncDone { chats } => Event::Synced { chats },
            ServerFrame::DeviceNotice { kind, device, at_ms } => Event::Device { kind, device, at_ms },
            ServerFrame::Presence { user, visible, online, last_seen_ms } => {
                Event::Presence { user, visible, online, last_seen_ms }
            }
            ServerFrame::Typing { chat, user, typing } => {
                let shown = if typing {
                    let until = now_ms.saturating_add(chorus_schema::edge::TYPING_EXPIRY_MS);
                    self.typing.insert((chat, user), until).is_some()
                } else {
                    self.typing.remove(&(chat, user)).is_some()
                };
                if shown == typing {
                    // A refresh of a shown indicator, or a stop of none: nothing new.
                    return;
                }
                Event::Typing { chat, user, typing }
            }
            other => return debug!(kind = other.kind(), "unexpected delivery frame"),
        };
        self.outputs.push_back(Output::Event(event));
    }

    /// `link`'s delivery stream ended (`reason`). The edge closes both
    /// streams at once, and why (e.g. `Revoked`) is on the control stream:
    /// it is read for `close_reason_wait_ms` more before the link is given up.
    pub fn handle_delivery_ended(&mut self, now_ms: u64, link: LinkId, reason: &str) {
        if let State::Live { link: l, edge, draining: ref mut d @ None } = self.state {
            if l == link {
                let deadline = now_ms.saturating_add(self.timing.close_reason_wait_ms);
                *d = Some((deadline, format!("{}: {reason}", self.edges.get(edge).map_or("?", String::as_str))));
            }
        }
    }

    /// Time passed: what was due by `now_ms` happens.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.clock_ms = self.clock_ms.max(now_ms);
        let lapsed: Vec<(ChatId, UserId)> =
            self.typing.iter().filter(|(_, until)| **until <= now_ms).map(|(k, _)| *k).collect();
        for (chat, user) in lapsed {
            self.typing.remove(&(chat, user));
            self.outputs.push_back(Output::Event(Event::Typing { chat, user, typing: false }));
        }
        match &mut self.state {
            State::Waiting { until } if *until <= now_ms => {
                self.tries = 0;
                self.connect_next(now_ms);
            }
            State::Connecting { deadline, edge, .. } if *deadline <= now_ms => {
                let (edge, ms) = (*edge, self.timing.connect_timeout_ms);
                let error = Error::Connection(format!("{}: no handshake within {ms} ms", self.edge_name(edge)));
                self.attempt_failed(now_ms, error);
            }
            State::LoggingIn { deadline, edge, .. } if *deadline <= now_ms => {
                let (edge, ms) = (*edge, self.timing.login_timeout_ms);
                let error = Error::Connection(format!("{}: no login answer within {ms} ms", self.edge_name(edge)));
                self.attempt_failed(now_ms, error);
            }
            State::Live { draining: Some((deadline, reason)), .. } if *deadline <= now_ms => {
                let reason = std::mem::take(reason);
                self.lost(now_ms, reason);
            }
            State::Live { draining: None, .. } => {
                for p in self.pending.values_mut() {
                    if p.retry_at.is_some_and(|at| at <= now_ms) {
                        p.retry_at = None;
                        self.outputs.push_back(Output::Send(p.frame.clone()));
                    }
                }
            }
            _ => {}
        }
    }

    // ---- internals -------------------------------------------------------------------

    fn edge_name(&self, edge: usize) -> &str {
        self.edges.get(edge).map_or("?", String::as_str)
    }

    fn current_link(&self) -> Option<LinkId> {
        match self.state {
            State::Connecting { link, .. } | State::LoggingIn { link, .. } | State::Live { link, .. } => Some(link),
            State::Waiting { .. } | State::Stopped => None,
        }
    }

    fn sync_frame(&self) -> ClientFrame {
        ClientFrame::Sync { since: self.positions() }
    }

    /// Starts an attempt at the next edge.
    fn connect_next(&mut self, now_ms: u64) {
        let n = self.edges.len();
        if n == 0 {
            return self.stop(Error::Connection("no edges configured".into()), "no edges");
        }
        let edge = self.edge_index % n;
        self.edge_index = self.edge_index.wrapping_add(1);
        let link = LinkId(self.next_link);
        self.next_link += 1;
        let deadline = now_ms.saturating_add(self.timing.connect_timeout_ms);
        self.state = State::Connecting { link, edge, deadline };
        self.outputs.push_back(Output::Connect { link, edge: self.edge_name(edge).to_owned() });
    }

    /// An attempt failed: the next edge, or the end of the round.
    fn attempt_failed(&mut self, now_ms: u64, error: Error) {
        if let Some(link) = self.current_link() {
            self.outputs.push_back(Output::Disconnect { link, reason: error.to_string() });
        }
        debug!(%error, "edge not available");
        self.last_error = error;
        self.tries += 1;
        if self.tries < self.edges.len() {
            self.connect_next(now_ms);
        } else if !self.ever_connected {
            let error = self.last_error.clone();
            self.state = State::Waiting { until: now_ms };
            self.stop(error, "no edge took the login");
        } else {
            self.state = State::Waiting { until: now_ms.saturating_add(self.backoff_ms) };
            self.backoff_ms = self.backoff_ms.saturating_mul(2).min(self.timing.reconnect_max_ms);
        }
    }

    fn login_answer(&mut self, now_ms: u64, edge: usize, frame: ServerFrame) {
        match frame {
            ServerFrame::LoggedIn { contact_key, .. } => {
                if contact_key.is_some() {
                    self.contact_key = contact_key;
                }
                self.live(edge)
            }
            ServerFrame::Error { code, message, retry_after_ms, .. } => {
                let error = Error::Refused { code, message, retry_after_ms };
                if login_refused_for_good(code) {
                    self.stop(error, "login refused");
                } else {
                    self.attempt_failed(now_ms, error);
                }
            }
            other => self.attempt_failed(now_ms, Error::Protocol(format!("expected LoggedIn, got {}", other.kind()))),
        }
    }

    /// Logged in: write again what the edge may not have.
    fn live(&mut self, edge: usize) {
        let State::LoggingIn { link, .. } = self.state else { return };
        self.state = State::Live { link, edge, draining: None };
        self.tries = 0;
        self.ever_connected = true;
        self.backoff_ms = self.timing.reconnect_min_ms;
        self.stats.connects += 1;
        let name = self.edge_name(edge).to_owned();
        debug!(edge = %name, user = %self.credentials.user, device = %self.credentials.device, "logged in");
        self.outputs.push_back(Output::Event(Event::Connected { edge: name }));
        for p in self.pending.values_mut() {
            p.retry_at = None;
            self.outputs.push_back(Output::Send(p.frame.clone()));
        }
        self.stats.resent += u64::try_from(self.pending.len()).unwrap_or(u64::MAX);
        for ((chat, kind), up_to_seq) in &self.acks {
            let frame = ClientFrame::Ack { chat: *chat, kind: *kind, up_to_seq: *up_to_seq };
            self.outputs.push_back(Output::Send(frame));
        }
        for r in self.requests.values_mut().filter(|r| !r.written) {
            r.written = true;
            self.outputs.push_back(Output::Send(r.frame.clone()));
        }
        if !self.watched.is_empty() {
            self.outputs.push_back(Output::Send(ClientFrame::SubscribePresence { users: self.watched.clone() }));
        }
        let sync = self.sync_frame();
        self.outputs.push_back(Output::Send(sync));
    }

    /// The live connection is gone: fail what cannot be resent, tell the app,
    /// and connect again at once (to the next edge).
    fn lost(&mut self, now_ms: u64, reason: String) {
        debug!(%reason, "connection lost");
        if let Some(link) = self.current_link() {
            self.outputs.push_back(Output::Disconnect { link, reason: reason.clone() });
        }
        for r in self.requests.values_mut().filter(|r| r.reads_only) {
            r.written = false;
        }
        let written: Vec<ClientMsgId> = self.requests.iter().filter(|(_, r)| r.written).map(|(id, _)| *id).collect();
        for client_msg_id in written {
            self.requests.remove(&client_msg_id);
            let error = Error::Connection(format!("connection lost before the answer: {reason}"));
            self.outputs.push_back(Output::RequestDone { client_msg_id, result: Err(error) });
        }
        for p in self.pending.values_mut() {
            p.retry_at = None;
        }
        self.outputs.push_back(Output::Event(Event::Disconnected { reason }));
        self.tries = 0;
        self.connect_next(now_ms);
    }

    fn stop(&mut self, error: Error, reason: &str) {
        if let Some(link) = self.current_link() {
            self.outputs.push_back(Output::Disconnect { link, reason: reason.to_owned() });
        }
        for (client_msg_id, _) in std::mem::take(&mut self.pending) {
            self.outputs.push_back(Output::SendDone { client_msg_id, result: Err(error.clone()) });
        }
        for (client_msg_id, r) in std::mem::take(&mut self.requests) {
            let done = r.ends_session && matches!(error, Error::Refused { code: EdgeErrorCode::Revoked, .. });
            let result = if done { Ok(Answer::Done(None)) } else { Err(error.clone()) };
            self.outputs.push_back(Output::RequestDone { client_msg_id, result });
        }
        self.acks.clear();
        self.state = State::Stopped;
        self.outputs.push_back(Output::Stopped(error));
    }

    fn answered(&mut self, client_msg_id: ClientMsgId, answer: Answer) {
        if self.requests.remove(&client_msg_id).is_some() {
            self.outputs.push_back(Output::RequestDone { client_msg_id, result: Ok(answer) });
        }
    }

    fn control(&mut self, now_ms: u64, frame: ServerFrame) {
        match frame {
            ServerFrame::Sent { client_msg_id, chat, seq, server_time_ms } => {
                if self.pending.remove(&client_msg_id).is_some() {
                    let sent = Sent { client_msg_id, chat, seq, server_time_ms };
                    self.outputs.push_back(Output::SendDone { client_msg_id, result: Ok(sent) });
                }
            }
            ServerFrame::Error { code, message, client_msg_id: Some(id), retry_after_ms } => {
                let error = Error::Refused { code, message, retry_after_ms };
                if self.requests.remove(&id).is_some() {
                    self.outputs.push_back(Output::RequestDone { client_msg_id: id, result: Err(error) });
                } else if code.retryable() {
                    let wait = self.timing.resend_interval_ms.max(retry_after_ms.unwrap_or(0));
                    if let Some(p) = self.pending.get_mut(&id) {
                        p.retry_at = Some(now_ms.saturating_add(wait));
                    }
                } else if self.pending.remove(&id).is_some() {
                    self.outputs.push_back(Output::SendDone { client_msg_id: id, result: Err(error) });
                }
            }
            ServerFrame::Error { code, message, client_msg_id: None, retry_after_ms } => {
                self.outputs.push_back(Output::Event(Event::Error { code, message: message.clone() }));
                if login_refused_for_good(code) {
                    self.stop(Error::Refused { code, message, retry_after_ms }, "session refused");
                }
            }
            ServerFrame::GroupInfo { client_msg_id, info, .. } => self.answered(client_msg_id, Answer::GroupInfo(info)),
            ServerFrame::MessageInfo { client_msg_id, entries, .. } => {
                self.answered(client_msg_id, Answer::MessageInfo(entries))
            }
            ServerFrame::DeviceList { client_msg_id, devices } => {
                if self.requests.remove(&client_msg_id).is_some() {
                    self.outputs.push_back(Output::DevicesListed { client_msg_id, devices });
                }
            }
            ServerFrame::Done { client_msg_id, at } => self.answered(client_msg_id, Answer::Done(at)),
            ServerFrame::Profile { client_msg_id, profile } => self.answered(client_msg_id, Answer::Profile(profile)),
            ServerFrame::StatusList { client_msg_id, entries } => {
                self.answered(client_msg_id, Answer::Statuses(entries))
            }
            ServerFrame::ContactsMatched { client_msg_id, matches } => {
                self.answered(client_msg_id, Answer::Contacts(matches))
            }
            other => debug!(kind = other.kind(), "unexpected control frame"),
        }
    }
}

#[cfg(test)]
mod tests;
