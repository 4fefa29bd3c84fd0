//! The QUIC side of the SDK: the TLS and transport configuration, and one
//! link to an edge (its connection and control stream; the delivery stream
//! is accepted by the worker).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus_schema::edge::{write_frame, ALPN};
use chorus_schema::framing::FrameSplitter;
use chorus_schema::{ClientFrame, ServerFrame};
use quinn::crypto::rustls::QuicClientConfig;

use crate::config::ClientConfig;
use crate::types::{Error, Result};

/// The TLS name edges' certificates carry.
const SERVER_NAME: &str = "chorus.local";

/// Most bytes taken from a stream at once.
const READ_CHUNK_MAX: usize = 64 << 10;

pub(crate) fn endpoint() -> Result<quinn::Endpoint> {
    quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0))).map_err(|e| Error::Connection(e.to_string()))
}

/// TLS 1.3 with the edges' CA as the only root, the edge ALPN, and the
/// config's keep-alive and idle timeout; no bidirectional streams from the
/// edge, one unidirectional (the delivery stream).
pub fn quic_config(config: &ClientConfig) -> Result<quinn::ClientConfig> {
    let bad = |e: &dyn std::fmt::Display| Error::Connection(format!("{}: {e}", config.ca.display()));
    let pem = std::fs::read(&config.ca).map_err(|e| bad(&e))?;
    let ca = rustls_pemfile::certs(&mut &pem[..]).next().and_then(|c| c.ok()).ok_or_else(|| bad(&"no certificate"))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).map_err(|e| bad(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| bad(&e))?;
    let mut c = quinn::ClientConfig::new(Arc::new(crypto));
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
pub(crate) struct Frames {
    splitter: FrameSplitter,
    ready: VecDeque<Bytes>,
    /// The stream broke (a bad length) after the frames in `ready`.
    broken: Option<String>,
}

/// The next frame of `recv`. Cancel-safe (`read_chunk` is; the rest does not wait).
pub(crate) async fn read_frame(recv: &mut quinn::RecvStream, frames: &mut Frames) -> Result<ServerFrame> {
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

/// One QUIC connection to an edge with its control stream.
pub(crate) struct Link {
    pub(crate) conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    frames: Frames,
}

impl Link {
    /// Connects to `edge` and opens the control stream. No timeout of its
    /// own: the caller bounds it. Errors do not name the edge (the caller knows it).
    pub(crate) async fn open(endpoint: quinn::Endpoint, quic: quinn::ClientConfig, edge: String) -> Result<Link> {
        let err = |e: &dyn std::fmt::Display| Error::Connection(e.to_string());
        let addr =
            tokio::net::lookup_host(&edge).await.map_err(|e| err(&e))?.next().ok_or_else(|| err(&"no address"))?;
        let conn = endpoint.connect_with(quic, addr, SERVER_NAME).map_err(|e| err(&e))?.await.map_err(|e| err(&e))?;
        let (send, recv) = conn.open_bi().await.map_err(|e| err(&e))?;
        Ok(Link { conn, send, recv, frames: Frames::default() })
    }

    /// [`Link::open`], given up after `timeout_ms` (a dead edge does not
    /// answer the handshake at all; QUIC would wait for its idle timeout).
    pub(crate) async fn open_within(
        endpoint: &quinn::Endpoint,
        quic: &quinn::ClientConfig,
        edge: &str,
        timeout_ms: u64,
    ) -> Result<Link> {
        let bound = Duration::from_millis(timeout_ms);
        match tokio::time::timeout(bound, Link::open(endpoint.clone(), quic.clone(), edge.to_owned())).await {
            Ok(Ok(link)) => Ok(link),
            Ok(Err(e)) => Err(Error::Connection(format!("{edge}: {e}"))),
            Err(_) => Err(Error::Connection(format!("{edge}: no handshake within {bound:?}"))),
        }
    }

    pub(crate) async fn write(&mut self, frame: &ClientFrame) -> Result<()> {
        let mut buf = Vec::new();
        write_frame(&mut buf, &frame.encode());
        self.send.write_all(&buf).await.map_err(|e| Error::Connection(e.to_string()))
    }

    /// The next control frame. Cancel-safe.
    pub(crate) async fn read(&mut self) -> Result<ServerFrame> {
        read_frame(&mut self.recv, &mut self.frames).await
    }
}
