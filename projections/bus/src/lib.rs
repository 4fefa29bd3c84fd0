//! The bus between projector processes and QUIC edge nodes.
//!
//! Projectors publish deliveries, presence and typing on subjects; edges
//! subscribe to the subjects of the devices they hold and ask projectors for
//! views with request/reply. One type, [`Bus`], with two implementations
//! chosen at construction:
//!
//! - [`Bus::connect_nats`]: a NATS client connection, for cluster mode;
//! - [`Bus::local`]: an in-process bus, for embedded mode (`chorus dev`).
//!
//! Both follow NATS core semantics and pass one conformance suite
//! (`tests/bus/suite.rs`): subjects with `*` and `>` wildcards, queue groups
//! that hand each message to one member, request/reply with an immediate
//! [`Error::NoResponders`] when nobody listens, per-publisher order, and the
//! same subject rules ([`subject`]) so that nothing is accepted in one mode
//! and refused in the other.
//!
//! ```text
//!  projector ──publish("deliver.dev.42", frame)──▶ Bus ──▶ Subscription("deliver.dev.*") ── edge
//!  edge ──request("view.inbox.u7", query, 2s)──▶ Bus ──▶ queue group "inbox" (one projector)
//!       ◀────────────── reply ◀── Bus::respond(&msg, view) ◀──┘
//! ```
//!
//! # What it leaves out
//! - **No persistence, no redelivery, no acks.** The bus is a fast path; the
//!   replicated log is the truth. A message can be lost (no subscriber yet,
//!   a disconnection, a slow subscriber whose buffer is full: see
//!   [`LOCAL_SUBSCRIPTION_BUFFER`] and [`Bus::dropped`]); consumers detect
//!   gaps by `seq` and read them from the log. No JetStream.
//! - No headers, no cluster topology settings: one server URL. Authentication
//!   is TLS plus an NKey per process ([`NatsAuth`]); what each may publish and
//!   subscribe is the server's configuration (see `chorus_projections::bus_auth`).
//!
//! # Modules
//! - [`subject`]: subject and queue group rules, wildcard matching.
//! - `local`: [`LocalBus`], the in-process registry of subscriptions.
//! - `nats`: [`NatsBus`], over an async-nats client.
//! - `subscription`: [`Subscription`], a stream of [`Message`]s from either.
//! - `error`: [`Error`] and [`Result`].

mod error;
mod local;
mod nats;
pub mod subject;
mod subscription;

use std::time::Duration;

use bytes::Bytes;

pub use error::{Error, Result};
pub use local::{LocalBus, LOCAL_SUBSCRIPTION_BUFFER, PAYLOAD_BYTES_MAX};
pub use nats::{inbox_prefix, NatsAuth, NatsBus, CONNECT_TIMEOUT, SERVER_CONFIRM_TIMEOUT};
pub use subscription::Subscription;

/// One message as a subscriber receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The literal subject it was published on (never a wildcard pattern).
    pub subject: String,
    pub payload: Bytes,
    /// Where to send the reply when the message is a request; see [`Bus::respond`].
    pub reply: Option<String>,
}

/// The bus: NATS in a cluster, in-process in embedded mode. Cheap to clone;
/// clones share the connection (or the in-process registry).
#[derive(Clone, Debug)]
pub enum Bus {
    Nats(NatsBus),
    Local(LocalBus),
}

impl Bus {
    /// Connects to a NATS server, e.g. `nats://127.0.0.1:4222`. After this
    /// succeeds, lost connections are re-established in the background and
    /// subscriptions carry on.
    ///
    /// # Errors
    /// [`Error::Connect`] when no server answers within [`CONNECT_TIMEOUT`].
    pub async fn connect_nats(url: &str) -> Result<Bus> {
        Ok(Bus::Nats(NatsBus::connect(url).await?))
    }

    /// Connects to a NATS server with TLS and NKey credentials; see
    /// [`NatsBus::connect_with`].
    ///
    /// # Errors
    /// [`Error::Connect`] when no server answers, TLS fails or the
    /// credentials are refused.
    pub async fn connect_nats_with(url: &str, auth: &NatsAuth) -> Result<Bus> {
        Ok(Bus::Nats(NatsBus::connect_with(url, Some(auth)).await?))
    }

    /// A new in-process bus with no subscriptions. Every clone of the
    /// returned value is the same bus; two calls give two separate buses.
    pub fn local() -> Bus {
        Bus::Local(LocalBus::new())
    }

    /// Sends `payload` to every subscription matching `subject` and to one
    /// member of each matching queue group. Succeeds whether or not anybody
    /// listens. Messages from one `Bus` handle reach each subscriber in the
    /// order they were published.
    ///
    /// # Errors
    /// [`Error::InvalidSubject`] (wildcards are refused here),
    /// [`Error::PayloadTooLarge`], [`Error::Closed`].
    pub async fn publish(&self, subject: &str, payload: Bytes) -> Result<()> {
        match self {
            Bus::Nats(bus) => bus.publish(subject, payload).await,
            Bus::Local(bus) => bus.publish(subject, payload),
        }
    }

    /// Subscribes to a subject or a pattern with `*` (one token) and `>`
    /// (one or more trailing tokens). The subscription is live when this
    /// returns: anything published afterwards, by anyone, is delivered.
    /// Reply subjects live under `_INBOX.`, so a bare `>` also sees replies
    /// (and, on NATS, the round trips of `subscribe` and `flush`).
    ///
    /// # Errors
    /// [`Error::InvalidSubject`]; for NATS [`Error::Subscribe`] when the
    /// server does not confirm within [`SERVER_CONFIRM_TIMEOUT`] (e.g. while
    /// disconnected), [`Error::Closed`].
    pub async fn subscribe(&self, subject: &str) -> Result<Subscription> {
        match self {
            Bus::Nats(bus) => bus.subscribe(subject, None).await,
            Bus::Local(bus) => bus.subscribe(subject, None),
        }
    }

    /// Like [`Bus::subscribe`], but each message goes to exactly one member
    /// of `group` (members are all queue subscriptions with that group name
    /// whose pattern matches). Locally members take turns; NATS picks at random.
    ///
    /// # Errors
    /// As [`Bus::subscribe`], plus [`Error::InvalidQueueGroup`].
    pub async fn queue_subscribe(&self, subject: &str, group: &str) -> Result<Subscription> {
        match self {
            Bus::Nats(bus) => bus.subscribe(subject, Some(group)).await,
            Bus::Local(bus) => bus.subscribe(subject, Some(group)),
        }
    }

    /// Publishes `payload` with a fresh reply subject and waits up to
    /// `timeout` for the first reply (later replies are discarded).
    ///
    /// # Errors
    /// [`Error::NoResponders`] at once when nothing subscribes to `subject`,
    /// [`Error::Timeout`] when nothing replies in time, [`Error::InvalidSubject`],
    /// [`Error::PayloadTooLarge`], [`Error::Request`], [`Error::Closed`].
    pub async fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> Result<Bytes> {
        match self {
            Bus::Nats(bus) => bus.request(subject, payload, timeout).await,
            Bus::Local(bus) => bus.request(subject, payload, timeout).await,
        }
    }

    /// Replies to a message received from a [`Bus::request`].
    ///
    /// # Errors
    /// [`Error::NoReplySubject`] when `msg` was published without a reply
    /// subject; otherwise as [`Bus::publish`].
    pub async fn respond(&self, msg: &Message, payload: Bytes) -> Result<()> {
        let Some(reply) = msg.reply.as_deref() else {
            return Err(Error::NoReplySubject { subject: msg.subject.clone() });
        };
        self.publish(reply, payload).await
    }

    /// Waits until everything published through this handle has been routed
    /// to subscribers (by the server, for NATS; the local bus routes during
    /// `publish`, so this returns at once).
    ///
    /// # Errors
    /// For NATS, [`Error::Flush`] when the server does not confirm within
    /// [`SERVER_CONFIRM_TIMEOUT`].
    pub async fn flush(&self) -> Result<()> {
        match self {
            Bus::Nats(bus) => bus.flush().await,
            Bus::Local(_) => Ok(()),
        }
    }

    /// Messages dropped so far because a subscriber of this bus (handle,
    /// for NATS: this connection) fell [`LOCAL_SUBSCRIPTION_BUFFER`]
    /// messages behind. Export it as a metric; it should stay 0.
    pub fn dropped(&self) -> u64 {
        match self {
            Bus::Nats(bus) => bus.dropped(),
            Bus::Local(bus) => bus.dropped(),
        }
    }

    /// Whether the bus can deliver right now: always for the local bus; for
    /// NATS, whether the client is connected (it reconnects by itself).
    pub fn is_connected(&self) -> bool {
        match self {
            Bus::Nats(bus) => bus.is_connected(),
            Bus::Local(_) => true,
        }
    }
}
