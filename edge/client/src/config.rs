//! [`ClientConfig`]: where the edges are, and the SDK's bounds and timings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the edges are, how much the SDK buffers, and its retry timing.
/// Every field but `edges` and `ca` has a serde default (the values of
/// [`ClientConfig::new`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    /// Edge addresses (`host:port`), tried in turn.
    pub edges: Vec<String>,
    /// The CA that signs the edges' certificates (PEM).
    pub ca: PathBuf,
    /// Reconnect backoff: after a round in which no edge took the login, the
    /// client waits `reconnect_min_ms` before the next round, doubling the
    /// wait each failed round up to `reconnect_max_ms`. A successful login
    /// resets it. (The first round after a lost connection starts at once.)
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// A send the edge refused as retryable (`Unavailable`, `RateLimited`)
    /// is written again after this long (or after the edge's
    /// `retry_after_ms`, if longer), with the same `client_msg_id`.
    #[serde(default = "default_resend_interval_ms")]
    pub resend_interval_ms: u64,
    /// Events buffered for the app before the SDK stops reading (and the edge,
    /// after its own queue, disconnects it).
    #[serde(default = "default_events_queue")]
    pub events_queue: usize,
    /// Sends and account requests the SDK holds unanswered, at most (queued
    /// for the connection, in flight, or waiting for a reconnect). Beyond it
    /// [`crate::Client::send`] and the account requests **wait** for a slot
    /// (back-pressure): an app that sends faster than the edges commit, or
    /// while no edge is reachable, is slowed down instead of growing the
    /// SDK's memory. Acks, syncs, reconnects and close never wait: acks are
    /// cumulative and kept as one position per (chat, kind).
    #[serde(default = "default_commands_queue")]
    pub commands_queue: usize,
    /// How long the QUIC handshake with one edge may take before the next
    /// edge is tried (an edge that died does not answer at all).
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How long an edge may take to answer the login once the handshake is
    /// done (it checks the token with its views) before the next edge is tried.
    #[serde(default = "default_login_timeout_ms")]
    pub login_timeout_ms: u64,
    /// When the edge ends the delivery stream, how long the SDK keeps reading
    /// the control stream for the reason (e.g. `Revoked`: then it stops
    /// instead of reconnecting) before it reconnects.
    #[serde(default = "default_close_reason_wait_ms")]
    pub close_reason_wait_ms: u64,
    /// QUIC keep-alive interval and idle timeout: a connection whose edge
    /// stops answering (killed, unreachable) is given up after
    /// `idle_timeout_ms`, and the client moves to the next edge.
    #[serde(default = "default_keep_alive_ms")]
    pub keep_alive_ms: u64,
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

fn default_reconnect_min_ms() -> u64 {
    50
}

fn default_reconnect_max_ms() -> u64 {
    2_000
}

fn default_resend_interval_ms() -> u64 {
    200
}

fn default_events_queue() -> usize {
    8_192
}

fn default_commands_queue() -> usize {
    1_024
}

fn default_connect_timeout_ms() -> u64 {
    3_000
}

fn default_login_timeout_ms() -> u64 {
    10_000
}

fn default_close_reason_wait_ms() -> u64 {
    1_000
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
            reconnect_min_ms: default_reconnect_min_ms(),
            reconnect_max_ms: default_reconnect_max_ms(),
            resend_interval_ms: default_resend_interval_ms(),
            events_queue: default_events_queue(),
            commands_queue: default_commands_queue(),
            connect_timeout_ms: default_connect_timeout_ms(),
            login_timeout_ms: default_login_timeout_ms(),
            close_reason_wait_ms: default_close_reason_wait_ms(),
            keep_alive_ms: default_keep_alive_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_with_only_the_edges_and_the_ca_takes_the_defaults() {
        let c: ClientConfig = serde_json::from_str(r#"{"edges":["127.0.0.1:1"],"ca":"/ca.pem"}"#).unwrap();
        assert_eq!(c, ClientConfig::new(vec!["127.0.0.1:1".into()], "/ca.pem".into()));
        let c: ClientConfig =
            serde_json::from_str(r#"{"edges":[],"ca":"/ca.pem","reconnect_max_ms":7,"commands_queue":3}"#).unwrap();
        assert_eq!((c.reconnect_max_ms, c.commands_queue, c.reconnect_min_ms), (7, 3, 50));
    }
}
