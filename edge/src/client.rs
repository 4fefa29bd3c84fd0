//! The Rust client SDK: what an app links to talk to chorus edges.
//!
//! - [`request_otp`] / [`verify_otp`] ([`verify_otp_with_pin`] for an
//!   account with a registration PIN): registration; the result is the
//!   device's [`Credentials`] (keep the token secret; it expires).
//! - Account requests of a logged-in client: [`Client::set_pin`],
//!   [`Client::unlink_device`], [`Client::logout`]. A device that logs out or
//!   is unlinked (from anywhere) is disconnected at once and its client stops
//!   with `Revoked`; other devices get [`Event::Device`] notices (a new device
//!   registered with the number, a device unlinked).
//! - A rate-limited request is refused with its `retry_after_ms`
//!   ([`Error::Refused`]).
//! - [`Client::connect`]: logs in on one of the edges and keeps a connection
//!   up in the background: on loss it reconnects (to the next edge, with
//!   backoff), logs in again, **resends every unacknowledged send with its
//!   `client_msg_id`** (the log deduplicates them), re-sends its latest acks
//!   and syncs from its positions. A dead edge is noticed after the QUIC idle
//!   timeout ([`ClientConfig::idle_timeout_ms`]); one that does not answer a
//!   handshake is skipped after [`ClientConfig::connect_timeout_ms`];
//!   [`Client::reconnect`] drops the connection on the app's request.
//! - [`Client::send`] resolves once the message is committed (`Sent`) or
//!   refused for good; retryable refusals (`Unavailable`, `RateLimited`) are
//!   retried by the SDK.
//! - The [`Event`] stream: messages in seq order per chat, **each
//!   `(chat, seq)` at most once** (the SDK drops what it has passed on
//!   already, across reconnects), receipt ticks of the user's own messages,
//!   and connection changes.
//!
//! The app persists [`Client::positions`] to resume without receiving history
//! again ([`Resume`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chorus_schema::edge::{write_frame, ALPN};
use chorus_schema::{
    ChatId, ClientFrame, ClientMsgId, DeviceId, DeviceNoticeKind, EdgeErrorCode, ReceiptKind, Recipient, Seq,
    ServerFrame, UserId,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

/// The TLS name edges' certificates carry.
const SERVER_NAME: &str = "chorus.local";

/// Why a client call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The edge answered with an error frame; `retry_after_ms`: a rate limit
    /// allows the request again after that long.
    #[error("{code:?}: {message}")]
    Refused { code: EdgeErrorCode, message: String, retry_after_ms: Option<u64> },
    /// No edge could be reached, or a connection broke during a one-shot call.
    #[error("connection: {0}")]
    Connection(String),
    /// The edge said something the protocol does not allow here.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The client was closed.
    #[error("client closed")]
    Closed,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the edges are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    /// Edge addresses (`host:port`), tried in turn.
    pub edges: Vec<String>,
    /// The CA that signs the edges' certificates (PEM).
    pub ca: PathBuf,
    /// Reconnect backoff bounds.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// Events buffered for the app before the SDK stops reading (and the edge,
    /// after its own queue, disconnects it).
    pub events_queue: usize,
    /// How long the QUIC handshake with one edge may take before the next
    /// edge is tried (an edge that died does not answer at all).
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// QUIC keep-alive interval and idle timeout: a connection whose edge
    /// stops answering (killed, unreachable) is given up after
    /// `idle_timeout_ms`, and the client moves to the next edge.
    #[serde(default = "default_keep_alive_ms")]
    pub keep_alive_ms: u64,
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

fn default_connect_timeout_ms() -> u64 {
    3_000
}

fn default_keep_alive_ms() -> u64 {
    3_000
}

fn default_idle_timeout_ms() -> u64 {
    10_000
}

impl ClientConfig {
    pub fn new(edges: Vec<String>, ca: PathBuf) -> Self {
        ClientConfig {
            edges,
            ca,
            reconnect_min_ms: 50,
            reconnect_max_ms: 2_000,
            events_queue: 8_192,
            connect_timeout_ms: default_connect_timeout_ms(),
            keep_alive_ms: default_keep_alive_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
        }
    }
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

    pub fn serialize<S: Serializer>(t: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
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

/// What the client tells the app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Message(Message),
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
}

/// Whether a refusal of the login ends the client (no reconnect helps).
fn login_refused_for_good(code: EdgeErrorCode) -> bool {
    matches!(code, EdgeErrorCode::Unauthenticated | EdgeErrorCode::TokenExpired | EdgeErrorCode::Revoked)
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

fn endpoint() -> Result<quinn::Endpoint> {
    quinn::Endpoint::client("0.0.0.0:0".parse().expect("literal")).map_err(|e| Error::Connection(e.to_string()))
}

fn quic_config(config: &ClientConfig) -> Result<quinn::ClientConfig> {
    let mut c =
        chorus_log_node::network::tls::quic_client(&config.ca, ALPN).map_err(|e| Error::Connection(e.to_string()))?;
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_millis(config.keep_alive_ms)));
    let idle = Duration::from_millis(config.idle_timeout_ms)
        .try_into()
        .map_err(|_| Error::Connection("idle timeout too large".into()))?;
    t.max_idle_timeout(Some(idle));
    t.max_concurrent_bidi_streams(0u32.into());
    t.max_concurrent_uni_streams(1u32.into());
    c.transport_config(Arc::new(t));
    Ok(c)
}

/// The frames of one received stream, read chunk by chunk (no read buffer).
#[derive(Debug, Default)]
struct Frames {
    splitter: crate::framing::FrameSplitter,
    ready: VecDeque<Bytes>,
    /// The stream broke (a bad length) after the frames in `ready`.
    broken: Option<String>,
}

/// Most bytes taken from a stream at once.
const READ_CHUNK_MAX: usize = 64 << 10;

/// One QUIC connection to an edge with its control stream.
struct Link {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    frames: Frames,
}

impl Link {
    async fn open(endpoint: &quinn::Endpoint, quic: &quinn::ClientConfig, edge: &str) -> Result<Link> {
        let err = |e: &dyn std::fmt::Display| Error::Connection(format!("{edge}: {e}"));
        let addr =
            tokio::net::lookup_host(edge).await.map_err(|e| err(&e))?.next().ok_or_else(|| err(&"no address"))?;
        let conn =
            endpoint.connect_with(quic.clone(), addr, SERVER_NAME).map_err(|e| err(&e))?.await.map_err(|e| err(&e))?;
        let (send, recv) = conn.open_bi().await.map_err(|e| err(&e))?;
        Ok(Link { conn, send, recv, frames: Frames::default() })
    }

    /// [`Link::open`], given up after `timeout_ms` (a dead edge does not
    /// answer the handshake at all; QUIC would wait for its idle timeout).
    async fn open_within(
        endpoint: &quinn::Endpoint,
        quic: &quinn::ClientConfig,
        edge: &str,
        timeout_ms: u64,
    ) -> Result<Link> {
        let bound = Duration::from_millis(timeout_ms);
        tokio::time::timeout(bound, Link::open(endpoint, quic, edge))
            .await
            .unwrap_or_else(|_| Err(Error::Connection(format!("{edge}: no handshake within {bound:?}"))))
    }

    async fn write(&mut self, frame: &ClientFrame) -> Result<()> {
        let mut buf = Vec::new();
        write_frame(&mut buf, &frame.encode());
        self.send.write_all(&buf).await.map_err(|e| Error::Connection(e.to_string()))
    }

    async fn read(&mut self) -> Result<ServerFrame> {
        read_frame(&mut self.recv, &mut self.frames).await
    }
}

/// The next frame of `recv`. Cancel-safe (`read_chunk` is; the rest does not wait).
async fn read_frame(recv: &mut quinn::RecvStream, frames: &mut Frames) -> Result<ServerFrame> {
    loop {
        if let Some(bytes) = frames.ready.pop_front() {
            return ServerFrame::decode(&bytes).map_err(|e| Error::Protocol(e.to_string()));
        }
        if let Some(e) = &frames.broken {
            return Err(Error::Protocol(e.clone()));
        }
        match recv.read_chunk(READ_CHUNK_MAX, true).await {
            Ok(Some(chunk)) => {
                let mut out = Vec::new();
                if let Err(e) = frames.splitter.push(chunk.bytes, &mut out) {
                    frames.broken = Some(e.to_string());
                }
                frames.ready.extend(out);
            }
            Ok(None) => return Err(Error::Connection("stream finished".into())),
            Err(e) => return Err(Error::Connection(e.to_string())),
        }
    }
}

async fn read_delivery(stream: &mut Option<quinn::RecvStream>, frames: &mut Frames) -> Result<ServerFrame> {
    match stream {
        Some(s) => read_frame(s, frames).await,
        None => std::future::pending().await,
    }
}

/// A one-shot exchange: the first edge that answers.
async fn one_shot(config: &ClientConfig, frame: ClientFrame) -> Result<ServerFrame> {
    let endpoint = endpoint()?;
    let quic = quic_config(config)?;
    let mut last = Error::Connection("no edges configured".into());
    for edge in &config.edges {
        match Link::open_within(&endpoint, &quic, edge, config.connect_timeout_ms).await {
            Ok(mut link) => {
                link.write(&frame).await?;
                let reply = link.read().await;
                link.conn.close(0u32.into(), b"done");
                return match reply? {
                    ServerFrame::Error { code, message, retry_after_ms, .. } => {
                        Err(Error::Refused { code, message, retry_after_ms })
                    }
                    other => Ok(other),
                };
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Asks an edge to text a one-time code to `phone`. Returns how long it is valid (ms).
///
/// # Errors
/// [`Error::Refused`] (bad phone number, rate limits) or a connection error.
pub async fn request_otp(config: &ClientConfig, phone: &str) -> Result<u64> {
    match one_shot(config, ClientFrame::RequestOtp { phone: phone.to_owned() }).await? {
        ServerFrame::OtpSent { expires_in_ms, .. } => Ok(expires_in_ms),
        other => Err(Error::Protocol(format!("expected OtpSent, got {}", other.kind()))),
    }
}

/// Registers this device with the texted `code` (on the same edge that sent
/// it: codes are kept per edge). `identity_key` is the device's public
/// identity key (E2EE); empty until the app has one.
///
/// # Errors
/// [`Error::Refused`] (`BadOtp`, `OtpExpired`, `TooManyAttempts`, …) or a connection error.
pub async fn verify_otp(
    config: &ClientConfig,
    phone: &str,
    code: &str,
    device_name: &str,
    identity_key: Vec<u8>,
) -> Result<Credentials> {
    verify_otp_with_pin(config, phone, code, device_name, identity_key, None).await
}

/// [`verify_otp`] for a number whose account has a registration PIN
/// ([`Client::set_pin`]): without it (or with a wrong one) registration is
/// refused with `PinRequired`, and a wrong one counts as a wrong code.
///
/// # Errors
/// As [`verify_otp`], and `PinRequired`, `PhoneLocked`.
pub async fn verify_otp_with_pin(
    config: &ClientConfig,
    phone: &str,
    code: &str,
    device_name: &str,
    identity_key: Vec<u8>,
    pin: Option<&str>,
) -> Result<Credentials> {
    let frame = ClientFrame::VerifyOtp {
        phone: phone.to_owned(),
        code: code.to_owned(),
        device_name: device_name.to_owned(),
        identity_key,
        pin: pin.map(str::to_owned),
    };
    match one_shot(config, frame).await? {
        ServerFrame::Registered { user, device, token } => Ok(Credentials { user, device, token }),
        other => Err(Error::Protocol(format!("expected Registered, got {}", other.kind()))),
    }
}

enum Command {
    Send {
        to: Recipient,
        client_msg_id: ClientMsgId,
        ciphertext: Vec<u8>,
        reply: oneshot::Sender<Result<Sent>>,
    },
    Ack {
        chat: ChatId,
        kind: ReceiptKind,
        up_to_seq: Seq,
    },
    Sync,
    Reconnect,
    Close,
    /// `SetPin`, `UnlinkDevice` or `Logout`, answered `Done`.
    Request {
        frame: ClientFrame,
        client_msg_id: ClientMsgId,
        request: PendingRequest,
    },
}

struct PendingRequest {
    reply: oneshot::Sender<Result<()>>,
    /// A logout or the unlink of this device: the edge closing the session
    /// (`Revoked`) before its `Done` arrives means it succeeded.
    ends_session: bool,
}

struct PendingSend {
    frame: ClientFrame,
    reply: oneshot::Sender<Result<Sent>>,
}

/// Counters of a client.
#[derive(Debug, Default)]
pub struct ClientStats {
    pub connects: AtomicU64,
    pub resent: AtomicU64,
    pub duplicates_dropped: AtomicU64,
}

/// A logged-in device with a self-healing connection. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    next_id: Arc<AtomicU64>,
    positions: Arc<Mutex<HashMap<ChatId, Seq>>>,
    credentials: Credentials,
    stats: Arc<ClientStats>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("credentials", &self.credentials).finish_non_exhaustive()
    }
}

impl Client {
    /// Logs in (the first time must succeed: bad credentials are an error, not
    /// a retry loop), syncs from `resume`, and keeps the connection up.
    ///
    /// # Errors
    /// [`Error::Refused`] (`Unauthenticated`: unknown device or revoked token)
    /// or a connection error when no edge answers.
    pub async fn connect(
        config: ClientConfig,
        credentials: Credentials,
        resume: Resume,
    ) -> Result<(Client, mpsc::Receiver<Event>)> {
        let endpoint = endpoint()?;
        let quic = quic_config(&config)?;
        let positions: HashMap<ChatId, Seq> = resume.positions.into_iter().collect();
        let positions = Arc::new(Mutex::new(positions));
        let (events_tx, events) = mpsc::channel(config.events_queue);
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(ClientStats::default());
        let mut worker = Worker {
            config,
            endpoint,
            quic,
            credentials,
            positions: positions.clone(),
            events: events_tx,
            commands: commands_rx,
            pending: BTreeMap::new(),
            requests: BTreeMap::new(),
            acks: BTreeMap::new(),
            edge_index: 0,
            stats: stats.clone(),
        };
        let first = worker.establish().await?;
        tokio::spawn(worker.run(first));
        // Random 62-bit start: a device's ids must not repeat across restarts
        // within the dedup window; the top bit is the edge's.
        let start = u64::from_le_bytes(crate::os_random()[..8].try_into().expect("8 bytes")) >> 2;
        let client = Client { commands, next_id: Arc::new(AtomicU64::new(start)), positions, credentials, stats };
        Ok((client, events))
    }

    pub fn credentials(&self) -> Credentials {
        self.credentials
    }

    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// A fresh client message id.
    pub fn next_client_msg_id(&self) -> ClientMsgId {
        ClientMsgId(self.next_id.fetch_add(1, Ordering::Relaxed) & !chorus_schema::edge::CLIENT_MSG_ID_RESERVED_BIT)
    }

    /// Sends `ciphertext` to `to` and waits until it is committed.
    ///
    /// # Errors
    /// [`Error::Refused`] for a final refusal (unknown recipient, not a member,
    /// too large…); [`Error::Closed`] if the client was closed first.
    pub async fn send(&self, to: Recipient, ciphertext: Vec<u8>) -> Result<Sent> {
        self.send_with_id(to, self.next_client_msg_id(), ciphertext).await
    }

    /// As [`Client::send`] with the caller's `client_msg_id` (a retry of an
    /// earlier send must use the same one).
    ///
    /// # Errors
    /// As [`Client::send`].
    pub async fn send_with_id(&self, to: Recipient, client_msg_id: ClientMsgId, ciphertext: Vec<u8>) -> Result<Sent> {
        if ciphertext.len() > chorus_schema::MAX_CIPHERTEXT_BYTES {
            return Err(Error::Refused {
                code: EdgeErrorCode::CiphertextTooLarge,
                message: format!("ciphertext {} > {} bytes", ciphertext.len(), chorus_schema::MAX_CIPHERTEXT_BYTES),
                retry_after_ms: None,
            });
        }
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Send { to, client_msg_id, ciphertext, reply }).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    async fn request(&self, make: impl FnOnce(ClientMsgId) -> ClientFrame) -> Result<()> {
        let client_msg_id = self.next_client_msg_id();
        let (reply, rx) = oneshot::channel();
        let frame = make(client_msg_id);
        let ends_session = match &frame {
            ClientFrame::Logout { .. } => true,
            ClientFrame::UnlinkDevice { device, .. } => *device == self.credentials.device,
            _ => false,
        };
        let request = PendingRequest { reply, ends_session };
        self.commands.send(Command::Request { frame, client_msg_id, request }).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Sets the account's registration PIN (empty: removes it): registering
    /// the number on a new device then needs it ([`verify_otp_with_pin`]).
    ///
    /// # Errors
    /// [`Error::Refused`] (a PIN shorter than 4 characters), or
    /// [`Error::Connection`] if the connection broke before the answer.
    pub async fn set_pin(&self, pin: &str) -> Result<()> {
        self.request(|client_msg_id| ClientFrame::SetPin { client_msg_id, pin: pin.to_owned() }).await
    }

    /// Unlinks `device` of this user; its connections close at every edge.
    /// Unlinking this device ends this client too.
    ///
    /// # Errors
    /// As [`Client::set_pin`].
    pub async fn unlink_device(&self, device: DeviceId) -> Result<()> {
        self.request(|client_msg_id| ClientFrame::UnlinkDevice { client_msg_id, device }).await
    }

    /// Blocks (`blocked`) or unblocks `user`: the log then refuses their
    /// direct messages to this user (`Forbidden` for them).
    ///
    /// # Errors
    /// As [`Client::set_pin`].
    pub async fn block(&self, user: UserId, blocked: bool) -> Result<()> {
        self.request(|client_msg_id| ClientFrame::Block { client_msg_id, user, blocked }).await
    }

    /// Ends this device's session: its connections close at every edge and
    /// the token no longer logs in. This client stops.
    ///
    /// # Errors
    /// As [`Client::set_pin`].
    pub async fn logout(&self) -> Result<()> {
        self.request(|client_msg_id| ClientFrame::Logout { client_msg_id }).await
    }

    /// A cumulative receipt (fire and forget; re-sent after a reconnect).
    pub fn ack(&self, chat: ChatId, kind: ReceiptKind, up_to_seq: Seq) {
        let _ = self.commands.send(Command::Ack { chat, kind, up_to_seq });
    }

    /// Asks for a sync now (one runs after every (re)connect anyway).
    pub fn sync(&self) {
        let _ = self.commands.send(Command::Sync);
    }

    /// The last seq passed on per chat: save it and pass it as [`Resume`].
    pub fn positions(&self) -> Vec<(ChatId, Seq)> {
        let mut p: Vec<_> = self.positions.lock().expect("positions lock").iter().map(|(c, s)| (*c, *s)).collect();
        p.sort();
        p
    }

    /// Drops the current connection and connects again (to the next edge),
    /// as after a network change: unacknowledged sends are resent with their
    /// `client_msg_id`, the latest acks re-sent, and the client syncs from its
    /// positions. Pending sends stay pending. Ignored while disconnected.
    pub fn reconnect(&self) {
        let _ = self.commands.send(Command::Reconnect);
    }

    /// Closes the connection; pending sends fail with [`Error::Closed`].
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }
}

/// One live connection: the control link (the delivery stream follows).
struct Live {
    link: Link,
    edge: String,
}

struct Worker {
    config: ClientConfig,
    endpoint: quinn::Endpoint,
    quic: quinn::ClientConfig,
    credentials: Credentials,
    positions: Arc<Mutex<HashMap<ChatId, Seq>>>,
    events: mpsc::Sender<Event>,
    commands: mpsc::UnboundedReceiver<Command>,
    pending: BTreeMap<ClientMsgId, PendingSend>,
    /// Account requests written on the current connection (not resent after
    /// a reconnect: they fail with `Connection` then).
    requests: BTreeMap<ClientMsgId, PendingRequest>,
    acks: BTreeMap<(ChatId, ReceiptKind), Seq>,
    edge_index: usize,
    stats: Arc<ClientStats>,
}

enum Outcome {
    Lost(String),
    Closed,
    /// The login was refused for good.
    Fatal(Error),
}

impl Worker {
    /// Connects to the next edges in turn and logs in.
    async fn establish(&mut self) -> Result<Live> {
        let mut last = Error::Connection("no edges configured".into());
        for _ in 0..self.config.edges.len() {
            let edge = self.config.edges[self.edge_index % self.config.edges.len()].clone();
            self.edge_index += 1;
            match self.login(&edge).await {
                Ok(live) => return Ok(live),
                Err(e @ Error::Refused { code, .. }) if login_refused_for_good(code) => return Err(e),
                Err(e) => {
                    debug!(%edge, error = %e, "edge not available");
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn login(&mut self, edge: &str) -> Result<Live> {
        let mut link = Link::open_within(&self.endpoint, &self.quic, edge, self.config.connect_timeout_ms).await?;
        let c = self.credentials;
        link.write(&ClientFrame::Login { user: c.user, device: c.device, token: c.token }).await?;
        match link.read().await? {
            ServerFrame::LoggedIn { .. } => {}
            ServerFrame::Error { code, message, retry_after_ms, .. } => {
                return Err(Error::Refused { code, message, retry_after_ms })
            }
            other => return Err(Error::Protocol(format!("expected LoggedIn, got {}", other.kind()))),
        }
        // The delivery stream reaches us with its first frame (QUIC streams
        // appear when data arrives): `serve` accepts it.
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        let _ = self.events.send(Event::Connected { edge: edge.to_owned() }).await;
        debug!(%edge, user = %c.user, device = %c.device, "logged in");
        Ok(Live { link, edge: edge.to_owned() })
    }

    async fn run(mut self, first: Live) {
        let mut live = Some(first);
        let mut backoff = Duration::from_millis(self.config.reconnect_min_ms);
        loop {
            let current = match live.take() {
                Some(l) => l,
                None => match self.establish().await {
                    Ok(l) => {
                        backoff = Duration::from_millis(self.config.reconnect_min_ms);
                        l
                    }
                    Err(e @ Error::Refused { code, .. }) if login_refused_for_good(code) => return self.fail_all(e),
                    Err(_) => {
                        if self.drain_commands_while(backoff).await {
                            return self.fail_all(Error::Closed);
                        }
                        backoff = (backoff * 2).min(Duration::from_millis(self.config.reconnect_max_ms));
                        continue;
                    }
                },
            };
            match self.serve(current).await {
                Outcome::Closed => return self.fail_all(Error::Closed),
                Outcome::Fatal(e) => return self.fail_all(e),
                Outcome::Lost(reason) => {
                    debug!(%reason, "connection lost");
                    for (_, r) in std::mem::take(&mut self.requests) {
                        let _ = r
                            .reply
                            .send(Err(Error::Connection(format!("connection lost before the answer: {reason}"))));
                    }
                    let _ = self.events.send(Event::Disconnected { reason }).await;
                }
            }
        }
    }

    /// While disconnected: queue sends and acks (they go out on reconnect).
    /// Returns true if the client was closed.
    async fn drain_commands_while(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => return false,
                c = self.commands.recv() => match c {
                    None | Some(Command::Close) => return true,
                    Some(c) => { self.queue(c); }
                },
            }
        }
    }

    /// Records a command; returns the frame to write now, if any.
    fn queue(&mut self, command: Command) -> Option<ClientFrame> {
        match command {
            Command::Send { to, client_msg_id, ciphertext, reply } => {
                let frame = ClientFrame::Send { to, client_msg_id, ciphertext, media: None };
                self.pending.insert(client_msg_id, PendingSend { frame: frame.clone(), reply });
                Some(frame)
            }
            Command::Ack { chat, kind, up_to_seq } => {
                let e = self.acks.entry((chat, kind)).or_insert(up_to_seq);
                *e = (*e).max(up_to_seq);
                Some(ClientFrame::Ack { chat, kind, up_to_seq: *e })
            }
            Command::Sync => Some(self.sync_frame()),
            Command::Request { frame, client_msg_id, request } => {
                self.requests.insert(client_msg_id, request);
                Some(frame)
            }
            Command::Reconnect | Command::Close => None,
        }
    }

    fn sync_frame(&self) -> ClientFrame {
        let since = self.positions.lock().expect("positions lock").iter().map(|(c, s)| (*c, *s)).collect();
        ClientFrame::Sync { since }
    }

    fn fail_all(&mut self, error: Error) {
        for (_, p) in std::mem::take(&mut self.pending) {
            let _ = p.reply.send(Err(error.clone()));
        }
        for (_, r) in std::mem::take(&mut self.requests) {
            let done = r.ends_session && matches!(error, Error::Refused { code: EdgeErrorCode::Revoked, .. });
            let _ = r.reply.send(if done { Ok(()) } else { Err(error.clone()) });
        }
    }

    async fn serve(&mut self, live: Live) -> Outcome {
        let Live { mut link, edge } = live;
        let mut deliveries: Option<quinn::RecvStream> = None;
        let conn = link.conn.clone();
        // Resend what is unacknowledged, re-send the acks, then sync.
        let mut replay: Vec<ClientFrame> = self.pending.values().map(|p| p.frame.clone()).collect();
        self.stats.resent.fetch_add(replay.len() as u64, Ordering::Relaxed);
        replay.extend(self.acks.iter().map(|((chat, kind), s)| ClientFrame::Ack {
            chat: *chat,
            kind: *kind,
            up_to_seq: *s,
        }));
        replay.push(self.sync_frame());
        for f in &replay {
            if let Err(e) = link.write(f).await {
                return Outcome::Lost(e.to_string());
            }
        }
        let mut dframes = Frames::default();
        let mut retry = tokio::time::interval(Duration::from_millis(200));
        let mut retry_due: Vec<ClientMsgId> = Vec::new();
        loop {
            tokio::select! {
                c = self.commands.recv() => {
                    let Some(c) = c else { return Outcome::Closed };
                    if matches!(c, Command::Close) {
                        link.conn.close(0u32.into(), b"client closed");
                        return Outcome::Closed;
                    }
                    if matches!(c, Command::Reconnect) {
                        link.conn.close(0u32.into(), b"reconnecting");
                        return Outcome::Lost(format!("{edge}: the app asked to reconnect"));
                    }
                    if let Some(frame) = self.queue(c) {
                        if let Err(e) = link.write(&frame).await {
                            return Outcome::Lost(e.to_string());
                        }
                    }
                }
                f = link.read() => match f {
                    Ok(frame) => {
                        if let Some(outcome) = self.control(frame, &mut retry_due).await {
                            return outcome;
                        }
                    }
                    Err(e) => return Outcome::Lost(format!("{edge}: {e}")),
                },
                s = conn.accept_uni(), if deliveries.is_none() => match s {
                    Ok(s) => deliveries = Some(s),
                    Err(e) => return Outcome::Lost(format!("{edge}: {e}")),
                },
                f = read_delivery(&mut deliveries, &mut dframes) => match f {
                    Ok(frame) => self.delivered(frame).await,
                    Err(e) => {
                        // The edge closes both streams at once: why it
                        // closes (e.g. `Revoked`) is on the control stream.
                        while let Ok(Ok(frame)) = tokio::time::timeout(Duration::from_secs(1), link.read()).await {
                            if let Some(outcome) = self.control(frame, &mut retry_due).await {
                                return outcome;
                            }
                        }
                        return Outcome::Lost(format!("{edge}: {e}"));
                    }
                },
                _ = retry.tick(), if !retry_due.is_empty() => {
                    for id in std::mem::take(&mut retry_due) {
                        if let Some(p) = self.pending.get(&id) {
                            let frame = p.frame.clone();
                            if let Err(e) = link.write(&frame).await {
                                return Outcome::Lost(e.to_string());
                            }
                        }
                    }
                }
            }
        }
    }

    async fn control(&mut self, frame: ServerFrame, retry_due: &mut Vec<ClientMsgId>) -> Option<Outcome> {
        match frame {
            ServerFrame::Sent { client_msg_id, chat, seq, server_time_ms } => {
                if let Some(p) = self.pending.remove(&client_msg_id) {
                    let _ = p.reply.send(Ok(Sent { client_msg_id, chat, seq, server_time_ms }));
                }
            }
            ServerFrame::Error { code, message, client_msg_id: Some(id), retry_after_ms } => {
                if let Some(r) = self.requests.remove(&id) {
                    let _ = r.reply.send(Err(Error::Refused { code, message, retry_after_ms }));
                } else if code.retryable() {
                    if self.pending.contains_key(&id) {
                        retry_due.push(id);
                    }
                } else if let Some(p) = self.pending.remove(&id) {
                    let _ = p.reply.send(Err(Error::Refused { code, message, retry_after_ms }));
                }
            }
            ServerFrame::Error { code, message, client_msg_id: None, retry_after_ms }
                if login_refused_for_good(code) =>
            {
                let _ = self.events.send(Event::Error { code, message: message.clone() }).await;
                return Some(Outcome::Fatal(Error::Refused { code, message, retry_after_ms }));
            }
            ServerFrame::Error { code, message, client_msg_id: None, .. } => {
                let _ = self.events.send(Event::Error { code, message }).await;
            }
            ServerFrame::Done { client_msg_id } => {
                if let Some(r) = self.requests.remove(&client_msg_id) {
                    let _ = r.reply.send(Ok(()));
                }
            }
            other => debug!(kind = other.kind(), "unexpected control frame"),
        }
        None
    }

    async fn delivered(&mut self, frame: ServerFrame) {
        let event = match frame {
            ServerFrame::Deliver { chat, seq, sender, sender_device, client_msg_id, at_ms, ciphertext, .. } => {
                {
                    let mut positions = self.positions.lock().expect("positions lock");
                    let p = positions.entry(chat).or_insert(Seq(0));
                    if seq <= *p {
                        self.stats.duplicates_dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    *p = seq;
                }
                Event::Message(Message { chat, seq, sender, sender_device, client_msg_id, at_ms, ciphertext })
            }
            ServerFrame::Receipt { chat, up_to_seq, status } => Event::Receipt { chat, up_to_seq, status },
            ServerFrame::SyncDone { chats } => Event::Synced { chats },
            ServerFrame::DeviceNotice { kind, device, at_ms } => Event::Device { kind, device, at_ms },
            other => return debug!(kind = other.kind(), "unexpected delivery frame"),
        };
        let _ = self.events.send(event).await;
    }
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
