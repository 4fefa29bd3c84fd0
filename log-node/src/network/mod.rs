//! QUIC networking of a log-node: TLS material, framing, the Raft transport
//! between nodes (mutual TLS) and the endpoint configuration shared with the
//! client API.

pub mod frame;
pub mod raft;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

/// ALPN of node-to-node Raft traffic.
pub const ALPN_RAFT: &[u8] = b"chorus-raft/1";
/// ALPN of the log-node client API.
pub const ALPN_LOG: &[u8] = b"chorus-log/1";
/// Name every node certificate carries and every connection verifies.
pub const SERVER_NAME: &str = "chorus.local";

/// Transport settings shared by all chorus QUIC endpoints: keep-alives so that a
/// dead peer is noticed within seconds, and bounded concurrent streams.
pub fn transport(max_bidi_streams: u32) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(2)));
    // 10 s, in milliseconds.
    t.max_idle_timeout(Some(quinn::VarInt::from_u32(10_000).into()));
    t.max_concurrent_bidi_streams(max_bidi_streams.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.stream_receive_window((8u32 << 20).into());
    t.receive_window((64u32 << 20).into());
    t.send_window(64 << 20);
    Arc::new(t)
}
