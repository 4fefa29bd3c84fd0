//! The edge's TLS: the QUIC server configuration clients connect to.
//!
//! TLS 1.3 only, the edge's certificate, no client certificates (a device
//! authenticates with its login token, checked against the sessions view),
//! rustls' default cipher suites (*ring*), no 0-RTT.
//!
//! **Resumption with stateless tickets**: after each handshake the edge sends
//! one session ticket, encrypted under a key only the edge process holds
//! (rotated every 6 hours); a client reconnecting with it skips the
//! certificate and its signature (about 1 KiB less to send, no signature on
//! the edge, no certificate check on the client). The key exchange still
//! runs (forward secrecy) and the edge keeps nothing per ticket. It
//! authenticates the edge again, not the device: every login is still
//! checked against the sessions view. (rustls' default instead sends two
//! tickets per handshake and remembers 256 sessions in the edge: with
//! thousands of clients, nearly every ticket presented would be a miss.)

use std::path::Path;
use std::sync::Arc;

use quinn::crypto::rustls::QuicServerConfig;
use quinn::rustls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no {what} in {path}: {reason}")]
    Pem { what: &'static str, path: String, reason: String },
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    #[error("QUIC needs TLS 1.3 with AES-128-GCM: {0}")]
    Quic(String),
}

fn pem<'a>(what: &'static str, path: &'a Path) -> impl Fn(rustls::pki_types::pem::Error) -> Error + 'a {
    move |e| Error::Pem { what, path: path.display().to_string(), reason: e.to_string() }
}

/// The server configuration for `cert` (PEM chain) and `key` (PEM), speaking `alpn`.
///
/// # Errors
/// When a file is unreadable or holds no certificate / key, or rustls refuses them.
pub fn server_config(cert: &Path, key: &Path, alpn: &[u8]) -> Result<quinn::ServerConfig, Error> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(pem("certificate", cert))?;
    if certs.is_empty() {
        return Err(pem("certificate", cert)(rustls::pki_types::pem::Error::NoItemsFound));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem("private key", key))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    // No 0-RTT: a replayed Login or Send must not be accepted.
    tls.max_early_data_size = 0;
    tls.ticketer = rustls::crypto::ring::Ticketer::new()?;
    tls.send_tls13_tickets = 1;
    // Stateless tickets only: no per-session state on the edge.
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let quic = QuicServerConfig::try_from(tls).map_err(|e| Error::Quic(e.to_string()))?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let paths = chorus_log_node::network::tls::issue_edge_server(dir.path(), "e1", &[]).unwrap();
        assert!(server_config(&paths.cert, &paths.key, b"chorus/1").is_ok());
        let e = server_config(&paths.cert, &paths.cert, b"chorus/1").unwrap_err();
        assert!(e.to_string().contains("no private key"), "{e}");
    }
}
