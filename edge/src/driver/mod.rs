//! The quinn driver: accepts client connections and runs each one's
//! [`crate::session::Session`] against the log, the views and the bus.
//!
//! # Per connection: one task
//! - The client opens one bidirectional **control stream** first: its frames
//!   go to the session; the session's answers (`Sent`, `Error`, `LoggedIn`, …)
//!   go back on it.
//! - After login the edge opens one unidirectional **delivery stream**:
//!   `Deliver`, `Receipt`, `SyncDone`.
//! - One task per connection does all of it (`connection`): it reads the
//!   control stream chunk by chunk (`read_chunk`, no read buffer; see
//!   [`chorus_schema::framing`]), writes both streams from bounded queues of encoded
//!   frames, and takes IO results and routed items from the connection's
//!   [`mailbox::Mailbox`]. Requests to the log and the views run in short-lived
//!   tasks that put their results in the mailbox; an idle connection has none.
//! - Keep-alives every `keep_alive_ms`; a silent client is dropped after
//!   `idle_timeout_ms` (10 s by default).
//! - Backpressure: each connection holds at most `delivery_queue_bytes_max`
//!   bytes queued for its client (routed items, recovered records, encoded
//!   deliveries). A client that does not read its delivery stream fills it;
//!   the edge then takes no more work for it (its sync waits) and, once live
//!   items overflow its mailbox, disconnects it (it reconnects and syncs, so
//!   nothing is lost). One that does not read its control stream is not read
//!   from either.
//! - Caps ([`limits`]): connections in all, per source address (counted from
//!   the first packet, after QUIC Retry has validated the address, handshakes
//!   included), and per device and user after login (the oldest is evicted).
//! - Closing: queued frames are flushed first (for at most a second); the
//!   QUIC close code is the [`chorus_schema::EdgeErrorCode`] of the reason
//!   (see `docs/error-codes.md`), after an `Error` frame.
//!
//! # Edge-wide
//! - [`interest`]: the bus subjects held for the connected users (their
//!   chats' deliveries, their joins), subscribed while someone holds them.
//! - [`router`]: bus deliveries and receipt changes to connections.
//! - [`views`]: token checks, recipient checks, sync and gap fill.
//! - One [`crate::session::OtpRegistry`] and one [`crate::session::Limits`]
//!   (rate limits of logins and codes by address, number range and in all)
//!   for all connections.
//! - Account updates (`chorus.account.>`): a device unlinked or logged out
//!   at any edge has its connections here closed at once (`Revoked`).
//! - [`pairing`]: pairing codes across edges (`chorus.pair.<code hash>`).
//! - One UDP socket with large kernel buffers (`udp_recv_buffer_bytes`): a
//!   burst of handshakes must not be dropped, or each costs its client a
//!   retransmission timeout.

mod connection;
pub(crate) mod interest;
pub(crate) mod limits;
pub(crate) mod mailbox;
mod media;
mod media_log;
mod pairing;
pub(crate) mod presence;
pub(crate) mod router;
pub mod tls;
pub(crate) mod typing;
pub(crate) mod views;

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chorus_bus::Bus;
use chorus_log_node::client::{ClientConfig as LogClientConfig, LogClient};
use chorus_schema::bus::subject;
use chorus_schema::{ChatId, CommandResult, Seq, UserId};
use tracing::{debug, info, warn};

use crate::config::{BusConfig, Config};
use crate::session::{AppendError, Correlation, Limits, OtpRegistry, RecipientVerdict, TokenVerdict};
use crate::sms::SmsSink;

/// Why the edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid edge config: {0}")]
    Config(String),
    #[error("tls: {0}")]
    Tls(#[from] tls::Error),
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("connecting to the log: {0}")]
    Log(#[from] chorus_log_node::client::Error),
    #[error("bus: {0}")]
    Bus(#[from] chorus_bus::Error),
    #[error("sms sink: {0}")]
    Sms(#[from] crate::sms::SmsError),
}

/// Counters of an edge, for logs and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections with a control stream (serving).
    pub connections: usize,
    /// Connections the edge holds, handshakes included (what the caps count).
    pub held: usize,
    pub accepted: u64,
    /// Connection attempts refused by `connections_max` or
    /// `connections_per_address_max`.
    pub refused: u64,
    /// First packets answered with a QUIC Retry (address validation).
    pub retried: u64,
    pub routed: u64,
    pub lagged: u64,
    /// Connections closed for a newer one of their device or user.
    pub evicted: u64,
    /// The most bytes one connection has held queued for its client (at most
    /// `delivery_queue_bytes_max`).
    pub queued_bytes_peak: usize,
    /// Bus subjects held for the connected users (their chats' deliveries
    /// and their joins); 0 if they could not be counted just then.
    pub subjects: usize,
    /// Users whose presence connections here watch (one bus subscription each).
    pub presence_targets: usize,
}

/// The result of an IO request of a connection (see [`mailbox::Mailbox`]).
#[derive(Debug)]
pub(crate) enum Input {
    Appended(Correlation, Result<CommandResult, AppendError>),
    Queried(Correlation, Result<chorus_schema::bus::ViewAnswer, String>),
    TokenVerified(TokenVerdict),
    RecipientChecked(Correlation, RecipientVerdict),
    Recovered(Arc<crate::session::Item>),
    SyncDone {
        positions: Vec<(ChatId, Seq)>,
        with_news: u32,
    },
    SyncFailed,
    FillDone(ChatId),
    /// A gap of the chat could not be recovered: the connection closes.
    FillFailed(ChatId),
    // ---- linked devices (issue 12) ----
    /// The wait for pairing claims is in place (or could not be).
    PairingReady(bool),
    /// The pairing code's time is over (no claim came).
    PairingExpired,
    /// A claim of this connection's pairing code, with the message to answer.
    PairClaimed(chorus_schema::bus::PairClaim, chorus_bus::Message),
    PairAnswered(Correlation, Result<chorus_schema::ServerFrame, crate::session::ClaimError>),
    DevicesListed(chorus_schema::ClientMsgId, Option<Vec<chorus_schema::edge::DeviceInfo>>),
    /// The views' answer to an info query (issue 12).
    Info(Correlation, crate::session::InfoAnswer),
    /// A typing signal was not relayed (`not_member`, or the members view failed).
    TypingRefused {
        chat: ChatId,
        not_member: bool,
    },
}

/// What every connection shares.
pub(crate) struct Ctx {
    pub(crate) config: Config,
    pub(crate) log: LogClient,
    pub(crate) bus: Bus,
    /// Opens sealed view replies.
    pub(crate) view_key: chorus_projections::seal::ViewKey,
    pub(crate) sms: SmsSink,
    pub(crate) otp: Mutex<OtpRegistry>,
    /// Rate limits of logins and codes (per address, number range, phone).
    pub(crate) rate_limits: Arc<Limits>,
    pub(crate) router: router::Router,
    pub(crate) interests: interest::Interests,
    /// Presence watchers and their per-target bus subscriptions.
    pub(crate) presence: presence::PresenceHub,
    /// Chat members for typing, cached briefly.
    pub(crate) members: typing::MembersCache,
    pub(crate) known_users: Mutex<HashSet<UserId>>,
    pub(crate) connections: AtomicUsize,
    pub(crate) limits: limits::Limits,
    pub(crate) accepted: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) queued_bytes_peak: Arc<AtomicUsize>,
    /// The bytes all connections hold queued for their clients now.
    pub(crate) queued_bytes: Arc<AtomicUsize>,
    pub(crate) next_conn_id: AtomicU64,
    pub(crate) metrics: crate::metrics::Metrics,
    /// The media objects (issue 14).
    pub(crate) media: Arc<crate::media::MediaStore>,
}

/// A running edge. [`Edge::open`] binds and connects; [`Edge::run`] serves.
pub struct Edge {
    ctx: Arc<Ctx>,
    endpoint: quinn::Endpoint,
    receipts: chorus_bus::Subscription,
    accounts: chorus_bus::Subscription,
    joins: interest::Joins,
    typing: chorus_bus::Subscription,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge").field("addr", &self.endpoint.local_addr().ok()).finish_non_exhaustive()
    }
}

/// A handle on a running edge's counters.
#[derive(Clone)]
pub struct Handle(Arc<Ctx>);

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Handle").field(&self.stats()).finish()
    }
}

impl Handle {
    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.0.connections.load(Ordering::Relaxed),
            held: self.0.limits.held(),
            accepted: self.0.accepted.load(Ordering::Relaxed),
            refused: self.0.refused.load(Ordering::Relaxed),
            retried: self.0.retried.load(Ordering::Relaxed),
            routed: self.0.router.routed.load(Ordering::Relaxed),
            lagged: self.0.router.lagged.load(Ordering::Relaxed),
            evicted: self.0.router.evicted.load(Ordering::Relaxed),
            queued_bytes_peak: self.0.queued_bytes_peak.load(Ordering::Relaxed),
            subjects: self.0.interests.subjects().unwrap_or(0),
            presence_targets: self.0.presence.targets(),
        }
    }
}

/// The QUIC transport settings of the edge's connections (public for
/// `chorus bench media`, which runs raw quinn with the same ones).
pub fn transport(config: &Config) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_millis(config.keep_alive_ms)));
    t.max_idle_timeout(Some(
        // Saturates at the protocol's maximum (2^62 µs).
        Duration::from_millis(config.idle_timeout_ms)
            .try_into()
            .unwrap_or_else(|_| quinn::IdleTimeout::from(quinn::VarInt::MAX)),
    ));
    // One control stream from the client; the edge opens the delivery stream.
    t.max_concurrent_bidi_streams(1u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    // Windows of a messaging connection (see the config): they bound what
    // quinn may hold for one connection.
    t.stream_receive_window(config.stream_receive_window_bytes.into());
    t.receive_window(config.receive_window_bytes.into());
    t.send_window(u64::from(config.send_window_bytes));
    t.datagram_receive_buffer_size(None);
    // quinn keeps, per connection, a transmit buffer as large as the largest
    // batch it ever built: with segmentation offload up to 10 datagrams
    // (~14 KiB) from a single handshake flight, for the connection's life.
    // An edge sends one datagram at a time to each client anyway.
    t.enable_segmentation_offload(false);
    // Path MTU discovery grows that buffer (and the packets) to ~1.5 KiB for
    // the connection's life and probes every few minutes; messaging frames
    // are small, so the QUIC minimum of 1200 bytes serves them as well.
    t.mtu_discovery_config(None);
    Arc::new(t)
}

/// The edge's UDP socket, with the configured kernel buffers.
fn udp_socket(config: &Config) -> Result<std::net::UdpSocket, Error> {
    let bind = |source| Error::Bind { addr: config.listen, source };
    let socket = std::net::UdpSocket::bind(config.listen).map_err(bind)?;
    let state = quinn::udp::UdpSocketState::new((&socket).into()).map_err(bind)?;
    state.set_recv_buffer_size((&socket).into(), config.udp_recv_buffer_bytes).map_err(bind)?;
    state.set_send_buffer_size((&socket).into(), config.udp_send_buffer_bytes).map_err(bind)?;
    let recv = state.recv_buffer_size((&socket).into()).map_err(bind)?;
    let send = state.send_buffer_size((&socket).into()).map_err(bind)?;
    // Linux reports twice what it grants (bookkeeping); below the request the
    // sysctl limits (net.core.rmem_max, wmem_max) capped it.
    if recv < config.udp_recv_buffer_bytes || send < config.udp_send_buffer_bytes {
        warn!(
            recv_bytes = recv,
            send_bytes = send,
            wanted_recv_bytes = config.udp_recv_buffer_bytes,
            wanted_send_bytes = config.udp_send_buffer_bytes,
            "UDP socket buffers capped by the kernel (raise net.core.rmem_max / wmem_max)"
        );
    } else {
        info!(recv_bytes = recv, send_bytes = send, "UDP socket buffers");
    }
    Ok(socket)
}

impl Edge {
    /// Binds the QUIC endpoint, connects to the log and the bus (`local_bus`
    /// for [`BusConfig::Local`]) and subscribes to receipt changes and
    /// account updates (deliveries: per chat, see [`interest`]).
    ///
    /// # Errors
    /// On a bad config, TLS material, bind, log or bus failure.
    pub async fn open(config: Config, local_bus: Option<Bus>) -> Result<Edge, Error> {
        config.validate().map_err(Error::Config)?;
        let mut server = tls::server_config(&config.cert, &config.key, chorus_schema::edge::ALPN)?;
        server.transport_config(transport(&config));
        let runtime = quinn::default_runtime().ok_or_else(|| Error::Config("no async runtime".into()))?;
        let endpoint =
            quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server), udp_socket(&config)?, runtime)
                .map_err(|source| Error::Bind { addr: config.listen, source })?;
        let log = LogClient::connect(
            &config.log_nodes,
            &config.log_tls,
            LogClientConfig { append_deadline_ms: config.append_deadline_ms, ..config.log_client.clone() },
        )
        .await?;
        let bus = match (&config.bus, local_bus) {
            (BusConfig::Local, Some(bus)) => bus,
            (BusConfig::Local, None) => return Err(Error::Config("bus = local needs the in-process bus".into())),
            (BusConfig::Nats { .. }, _) => config
                .bus
                .connect_nats()
                .await?
                .ok_or_else(|| Error::Config("bus = nats needs a NATS configuration".into()))?,
        };
        let view_key =
            chorus_projections::seal::ViewKey::load(&config.view_key).map_err(|e| Error::Config(e.to_string()))?;
        let receipts = bus.subscribe(&format!("{}.>", subject::RECEIPT_PREFIX)).await?;
        let accounts = bus.subscribe(&format!("{}.>", subject::ACCOUNT_PREFIX)).await?;
        let typing = bus.subscribe(&format!("{}.>", subject::TYPING_PREFIX)).await?;
        let rate_limits = Arc::new(Limits::new(&config.session.limits).map_err(Error::Config)?);
        let sms = SmsSink::new(&config.sms)?;
        let limits = limits::Limits::new(config.connections_max, config.connections_per_address_max);
        let (interests, joins) = interest::Interests::new();
        let media = Arc::new(crate::media::MediaStore::open(&config.media).map_err(|e| Error::Config(e.to_string()))?);
        let ctx = Arc::new(Ctx {
            otp: Mutex::new(OtpRegistry::new(config.session.otp.clone(), crate::os_random())),
            rate_limits,
            config,
            log,
            bus,
            view_key,
            sms,
            router: router::Router::default(),
            interests,
            presence: presence::PresenceHub::default(),
            members: typing::MembersCache::default(),
            known_users: Mutex::new(HashSet::new()),
            connections: AtomicUsize::new(0),
            limits,
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            queued_bytes_peak: Arc::new(AtomicUsize::new(0)),
            queued_bytes: Arc::new(AtomicUsize::new(0)),
            metrics: crate::metrics::Metrics::new(),
            next_conn_id: AtomicU64::new(0),
            media,
        });
        tokio::spawn(crate::metrics::sample(Arc::downgrade(&ctx)));
        Ok(Edge { ctx, endpoint, receipts, accounts, joins, typing })
    }

    /// The address clients connect to.
    ///
    /// # Panics
    /// If the endpoint has no local address (it was bound in `open`).
    #[expect(clippy::expect_used, reason = "documented panic: the endpoint was bound in `open`")]
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr().expect("bound endpoint")
    }

    pub fn handle(&self) -> Handle {
        Handle(self.ctx.clone())
    }

    /// Serves until `shutdown` resolves, then closes every connection.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Edge { ctx, endpoint, mut receipts, mut accounts, joins, mut typing } = self;
        info!(
            addr = %endpoint.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            connection_task_bytes = connection::task_bytes(),
            "edge listening"
        );
        let route_ctx = ctx.clone();
        let router = tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = receipts.next() => m,
                    m = accounts.next() => m,
                    m = typing.next() => m,
                };
                let Some(msg) = msg else {
                    warn!("bus subscription ended");
                    return;
                };
                route_ctx.router.dispatch(&msg.subject, &msg.payload);
            }
        });
        let joiner = tokio::spawn(interest::run_joins(ctx.clone(), joins));
        // Rate limiters forget the keys that are back to full.
        let prune_ctx = ctx.clone();
        let pruner = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                prune_ctx.rate_limits.prune();
            }
        });
        tokio::pin!(shutdown);
        loop {
            let incoming = tokio::select! {
                i = endpoint.accept() => i,
                () = &mut shutdown => break,
            };
            let Some(incoming) = incoming else { break };
            // Validate the source address first (a stateless Retry), so that
            // the per-address count is of addresses that really answer.
            if !incoming.remote_address_validated() {
                ctx.retried.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = incoming.retry() {
                    e.into_incoming().ignore();
                }
                continue;
            }
            let slot = match ctx.limits.admit(incoming.remote_address().ip()) {
                Ok(slot) => slot,
                Err(refusal) => {
                    ctx.refused.fetch_add(1, Ordering::Relaxed);
                    debug!(source = %incoming.remote_address().ip(), ?refusal, "connection refused");
                    incoming.refuse();
                    continue;
                }
            };
            ctx.accepted.fetch_add(1, Ordering::Relaxed);
            ctx.metrics.accepted.increment(1);
            tokio::spawn(connection::run(ctx.clone(), incoming, slot));
        }
        router.abort();
        joiner.abort();
        pruner.abort();
        endpoint.close(
            quinn::VarInt::from_u32(u32::from(chorus_schema::EdgeErrorCode::Unavailable.value())),
            b"edge shutting down",
        );
        endpoint.wait_idle().await;
    }
}
