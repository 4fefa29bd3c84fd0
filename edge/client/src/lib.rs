//! The Rust client SDK: what an app links to talk to chorus edges. It
//! depends on the wire types (`chorus-schema`), quinn and rustls, and on
//! nothing of the server side.
//!
//! - [`request_otp`] / [`verify_otp`] ([`verify_otp_with_pin`] for an
//!   account with a registration PIN): registration; the result is the
//!   device's [`Credentials`] (keep the token secret; it expires).
//! - Account requests of a logged-in client: [`Client::set_pin`],
//!   [`Client::unlink_device`], [`Client::block`], [`Client::logout`]. A
//!   device that logs out or is unlinked (from anywhere) is disconnected at
//!   once and its client stops with `Revoked`; other devices get
//!   [`Event::Device`] notices (a new device registered with the number, a
//!   device unlinked).
//! - Linked devices: a new device calls [`pair_request`], shows its
//!   [`Pairing::code`] and [`Pairing::wait`]s for its credentials while a
//!   logged-in device of the user calls [`Client::link_device`] with the
//!   code; [`Client::devices`] lists the user's devices, [`Client::unlink`]
//!   removes one. At most the primary and 4 companions (`TooManyDevices`).
//! - Groups: [`Client::create_group`], [`Client::group`] (edits);
//!   [`Client::group_info`] (name, description, members and admins; members
//!   only) and [`Client::message_info`] (who received and read one of the
//!   user's messages, and when). Queries are written again after a lost
//!   connection; account and group requests are failed instead (their
//!   outcome is unknown).
//! - A rate-limited request is refused with its `retry_after_ms`
//!   ([`Error::Refused`]).
//! - [`Client::connect`] (and [`Client::connect_raw`]): logs in on one of the edges and keeps a connection
//!   up in the background: on loss it reconnects (to the next edge, with
//!   backoff), logs in again, **resends every unacknowledged send with its
//!   `client_msg_id`** (the log deduplicates them), re-sends its latest acks
//!   and syncs from its positions. A dead edge is noticed after the QUIC idle
//!   timeout ([`ClientConfig::idle_timeout_ms`]); one that does not answer a
//!   handshake is skipped after [`ClientConfig::connect_timeout_ms`] (a
//!   login after [`ClientConfig::login_timeout_ms`]);
//!   [`Client::reconnect`] drops the connection on the app's request.
//! - [`Client::send`] resolves once the message is committed (`Sent`) or
//!   refused for good; retryable refusals (`Unavailable`, `RateLimited`) are
//!   retried by the SDK (after [`ClientConfig::resend_interval_ms`]). At
//!   most [`ClientConfig::commands_queue`] sends and account requests are
//!   held unanswered: beyond it `send` waits (back-pressure).
//! - The [`Event`] stream: messages in seq order per chat, **each
//!   `(chat, seq)` at most once** (the SDK drops what it has passed on
//!   already, across reconnects), receipt ticks of the user's own messages,
//!   and connection changes. It holds [`ClientConfig::events_queue`] events;
//!   an app that does not read it stops the SDK reading the edge.
//!
//! - **End-to-end encryption** ([`e2ee`], vodozemac): an app creates the
//!   device's crypto store before registering ([`e2ee::prepare`] gives the
//!   identity key that [`verify_otp`] / [`pair_request`] register) and logs
//!   in with [`Client::connect`]: then [`Client::send`] encrypts (Olm
//!   per device for direct messages, Megolm sender keys for groups, rotated
//!   when a device leaves; keys claimed, the device list checked by the
//!   server with a digest, re-encrypted on `StaleDevices`), the events carry
//!   plaintext, a message that cannot be decrypted is
//!   [`Event::Undecryptable`] (never dropped), and the store is saved before
//!   a plaintext reaches the app. [`Client::safety_number`] compares
//!   identities. [`Client::connect_raw`] alone gives a raw client (the bytes go
//!   as they are), and [`Client::send_raw`] sends raw bytes on any client:
//!   for load generators and server tests (`chorus bench`, Jepsen). One
//!   crypto store serves one client at a time.
//!
//! The app persists [`Client::positions`] to resume without receiving history
//! again ([`Resume`]).
//!
//! # Module map
//! - [`conn`]: the sans-IO connection state machine ([`conn::Core`]): every
//!   decision above — which edge, when to retry, what to resend, what to
//!   pass on — with time as an argument and no IO.
//! - `worker`: the task that drives the core with quinn (a thin shell).
//! - `client`: [`Client`], the app's handle; `register`: the one-shot
//!   registration calls; `link`: TLS, QUIC and the framed streams.
//! - `config`: [`ClientConfig`]; `types`: [`Event`], [`Credentials`], [`Error`], …
//! - [`e2ee`]: the pure crypto state ([`e2ee::Crypto`]), the envelope, the
//!   store, safety numbers; `e2ee::sdk`: what [`Client::connect`] adds.

mod client;
mod config;
pub mod conn;
pub mod content;
pub mod e2ee;
mod link;
pub mod media;
mod register;
mod types;
mod worker;

pub use client::{Client, ClientStats};
pub use config::ClientConfig;
/// The SDK's QUIC client configuration (TLS, ALPN, transport), for
/// benchmarks that compare against raw quinn (`chorus bench media`).
pub use link::quic_config;
pub use register::{request_otp, verify_otp, verify_otp_with_pin};
// ---- linked devices (issue 12) ----
pub use chorus_schema::edge::DeviceInfo;
// ---- E2EE (issue 14) ----
pub use chorus_schema::{device_list_digest, DeviceKeys, Prekey};
pub use register::{pair_request, Pairing};
pub use types::{Answer, ChatChange, Credentials, Error, Event, Message, Result, Resume, Sent, StatusPost};
