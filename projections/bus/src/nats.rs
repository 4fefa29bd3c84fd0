//! The cluster bus: a thin layer over one async-nats client connection.
//!
//! async-nats reconnects on its own (forever, with capped exponential
//! backoff) and re-sends every live subscription after a reconnect; messages
//! published while disconnected wait in the client's command buffer. This
//! layer adds what makes it behave like [`crate::LocalBus`]: the shared
//! subject rules, typed errors, a slow-consumer counter, and subscriptions
//! that are live at the server when `subscribe` returns.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::client::{PublishErrorKind, RequestErrorKind, SubscribeErrorKind};
use async_nats::{ConnectOptions, Event};
use bytes::Bytes;
use futures::StreamExt;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::local::LOCAL_SUBSCRIPTION_BUFFER;
use crate::subject;
use crate::subscription::Subscription;

/// How long `connect` waits for the first connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `subscribe` and `flush` wait for the server to confirm that it
/// has processed everything this connection sent before. While the client
/// is disconnected they fail after this long (and a subscription that was
/// not confirmed is dropped, so the caller can simply retry).
pub const SERVER_CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// The connection name the server shows for chorus clients.
const CLIENT_NAME: &str = "chorus";

/// Credentials and trust of an authenticated NATS connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsAuth {
    /// The CA that signs the server's certificate.
    pub ca: std::path::PathBuf,
    /// This client's NKey user seed (`SU…`), in a file of mode 0600.
    pub nkey_seed: std::path::PathBuf,
}

/// The prefix of the reply subjects of the NATS user with NKey `public_key`:
/// `_INBOX_` and the key's first 20 characters. The server configuration
/// lets that user subscribe to `<prefix>.>` and nothing else of the kind.
pub fn inbox_prefix(public_key: &str) -> String {
    let short: String = public_key.chars().take(20).collect();
    format!("_INBOX_{short}")
}

/// The cluster bus. Cheap to clone: clones share one connection.
#[derive(Clone, Debug)]
pub struct NatsBus {
    client: async_nats::Client,
    url: String,
    dropped: Arc<AtomicU64>,
}

impl NatsBus {
    /// Connects to the NATS server at `url` (e.g. `nats://127.0.0.1:4222`).
    ///
    /// # Errors
    /// [`Error::Connect`] when no server answers at `url` within
    /// [`CONNECT_TIMEOUT`]. Later disconnections are not errors: the client
    /// reconnects in the background.
    pub async fn connect(url: &str) -> Result<NatsBus> {
        Self::connect_with(url, None).await
    }

    /// As [`NatsBus::connect`], authenticated: TLS required (the server
    /// verified against `auth.ca`), signing in with the NKey in
    /// `auth.nkey_seed`, reply subjects under [`inbox_prefix`] of its public
    /// key (so that the server can let each client read only its own replies).
    ///
    /// # Errors
    /// [`Error::Connect`] as for [`NatsBus::connect`], and when the seed file
    /// is unreadable or not an NKey seed, or the server refuses the credentials.
    pub async fn connect_with(url: &str, auth: Option<&NatsAuth>) -> Result<NatsBus> {
        let dropped = Arc::new(AtomicU64::new(0));
        let events_dropped = Arc::clone(&dropped);
        let events_url = url.to_owned();
        let connect_err = |reason: String| Error::Connect { url: url.to_owned(), reason };
        let mut options = ConnectOptions::new();
        if let Some(auth) = auth {
            let seed = std::fs::read_to_string(&auth.nkey_seed)
                .map_err(|e| connect_err(format!("nkey seed {}: {e}", auth.nkey_seed.display())))?;
            let seed = seed.trim().to_owned();
            let public = nkeys::KeyPair::from_seed(&seed)
                .map_err(|e| connect_err(format!("nkey seed {}: {e}", auth.nkey_seed.display())))?
                .public_key();
            options = ConnectOptions::with_nkey(seed)
                .require_tls(true)
                .add_root_certificates(auth.ca.clone())
                .custom_inbox_prefix(inbox_prefix(&public));
        }
        let client = options
            .name(CLIENT_NAME)
            .connection_timeout(CONNECT_TIMEOUT)
            .subscription_capacity(LOCAL_SUBSCRIPTION_BUFFER)
            .event_callback(move |event| {
                let dropped = Arc::clone(&events_dropped);
                let url = events_url.clone();
                async move { on_event(&url, &dropped, event) }
            })
            .connect(url)
            .await
            .map_err(|e| Error::Connect { url: url.to_owned(), reason: e.to_string() })?;
        info!(url, "connected to NATS");
        Ok(NatsBus { client, url: url.to_owned(), dropped })
    }

    /// The URL this bus was connected with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the client is connected right now (it reconnects by itself).
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Slow-consumer drops the client has reported. async-nats drops a
    /// message when a subscription's buffer is full and reports it through a
    /// bounded event queue, so under a storm this is a lower bound.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// See [`crate::Bus::publish`].
    ///
    /// # Errors
    /// [`Error::InvalidSubject`], [`Error::PayloadTooLarge`],
    /// [`Error::Closed`] when the client is gone.
    pub async fn publish(&self, subject: &str, payload: Bytes) -> Result<()> {
        subject::validate_literal(subject)?;
        let bytes = payload.len();
        self.client.publish(subject.to_owned(), payload).await.map_err(|e| match e.kind() {
            PublishErrorKind::MaxPayloadExceeded => self.payload_too_large(subject, bytes),
            PublishErrorKind::Send => Error::Closed,
            PublishErrorKind::InvalidSubject => Error::Publish { subject: subject.to_owned(), reason: e.to_string() },
        })
    }

    /// See [`crate::Bus::subscribe`] and [`crate::Bus::queue_subscribe`].
    ///
    /// # Errors
    /// [`Error::InvalidSubject`], [`Error::InvalidQueueGroup`],
    /// [`Error::Subscribe`] when the server does not confirm in time.
    pub async fn subscribe(&self, pattern: &str, group: Option<&str>) -> Result<Subscription> {
        subject::validate_pattern(pattern)?;
        if let Some(group) = group {
            subject::validate_queue_group(group)?;
        }
        let subscribed = match group {
            None => self.client.subscribe(pattern.to_owned()).await,
            Some(group) => self.client.queue_subscribe(pattern.to_owned(), group.to_owned()).await,
        };
        let subscriber = subscribed.map_err(|e| match e.kind() {
            SubscribeErrorKind::Other => Error::Closed,
            SubscribeErrorKind::InvalidSubject | SubscribeErrorKind::InvalidQueueName => {
                Error::Subscribe { subject: pattern.to_owned(), reason: e.to_string() }
            }
        })?;
        // Local subscriptions are live the moment they exist; make NATS ones
        // live at the server before returning, so that a message published
        // by anyone after `subscribe` returns is delivered in both modes.
        self.confirm().await.map_err(|reason| Error::Subscribe { subject: pattern.to_owned(), reason })?;
        Ok(Subscription::nats(subscriber))
    }

    /// See [`crate::Bus::request`].
    ///
    /// # Errors
    /// [`Error::InvalidSubject`], [`Error::PayloadTooLarge`],
    /// [`Error::NoResponders`] (the server answers at once when nobody
    /// subscribes), [`Error::Timeout`], [`Error::Request`].
    pub async fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> Result<Bytes> {
        subject::validate_literal(subject)?;
        let bytes = payload.len();
        let request = async_nats::Request::new().payload(payload).timeout(Some(timeout));
        match self.client.send_request(subject.to_owned(), request).await {
            Ok(reply) => Ok(reply.payload),
            Err(e) => Err(match e.kind() {
                RequestErrorKind::NoResponders => Error::NoResponders { subject: subject.to_owned() },
                RequestErrorKind::TimedOut => Error::Timeout {
                    subject: subject.to_owned(),
                    after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                },
                RequestErrorKind::MaxPayloadExceeded => self.payload_too_large(subject, bytes),
                RequestErrorKind::InvalidSubject | RequestErrorKind::Other => {
                    Error::Request { subject: subject.to_owned(), reason: e.to_string() }
                }
            }),
        }
    }

    /// See [`crate::Bus::flush`].
    ///
    /// # Errors
    /// [`Error::Flush`] when the server does not confirm in time.
    pub async fn flush(&self) -> Result<()> {
        self.confirm().await.map_err(|reason| Error::Flush { reason })
    }

    /// Waits until the server has processed everything this connection sent
    /// so far. async-nats's own `flush` only empties the socket buffer; a
    /// message to ourselves comes back only after the server has handled
    /// every earlier operation of this connection (they are processed in
    /// order), including subscriptions and publishes.
    async fn confirm(&self) -> Result<(), String> {
        let inbox = self.client.new_inbox();
        let mut echo = self.client.subscribe(inbox.clone()).await.map_err(|e| e.to_string())?;
        self.client.publish(inbox, Bytes::new()).await.map_err(|e| e.to_string())?;
        match tokio::time::timeout(SERVER_CONFIRM_TIMEOUT, echo.next()).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("connection closed".to_owned()),
            Err(_elapsed) => Err(format!("server did not confirm within {} ms", SERVER_CONFIRM_TIMEOUT.as_millis())),
        }
    }

    fn payload_too_large(&self, subject: &str, bytes: usize) -> Error {
        Error::PayloadTooLarge { subject: subject.to_owned(), bytes, limit: self.client.server_info().max_payload }
    }
}

fn on_event(url: &str, dropped: &AtomicU64, event: Event) {
    match event {
        Event::SlowConsumer(sid) => {
            dropped.fetch_add(1, Ordering::Relaxed);
            warn!(url, sid, "slow subscriber: NATS client is dropping messages");
        }
        Event::Disconnected => warn!(url, "disconnected from NATS, reconnecting"),
        Event::Connected => info!(url, "connected to NATS"),
        Event::LameDuckMode => warn!(url, "NATS server entered lame duck mode"),
        Event::ServerError(error) => warn!(url, %error, "NATS server error"),
        Event::ClientError(error) => warn!(url, %error, "NATS client error"),
        Event::Draining | Event::Closed => debug!(url, %event, "NATS connection event"),
    }
}
