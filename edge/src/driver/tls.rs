//! The edge's TLS: the QUIC server configuration clients connect to.
//!
//! TLS 1.3 only, the edge's certificate, no client certificates (a device
//! authenticates with its login token, checked against the sessions view).
//!
//! **ChaCha20-Poly1305 first**, whatever the client prefers. Every connection
//! keeps its 1-RTT packet keys, the next key phase's and the header
//! protection keys for its whole life: with AES-GCM each is an expanded key
//! schedule with its GHASH table (~0.5 KiB), with ChaCha20 it is the 32-byte
//! key — about 3.5 KiB less per idle connection (heap profile of `chorus
//! bench e2e`). Both are AEADs of the same strength; clients without AES
//! hardware (phones) prefer ChaCha20 anyway. AES-128-GCM stays available: QUIC
//! Initial packets use it by definition, and clients that offer nothing else
//! get it.

use std::path::Path;
use std::sync::Arc;

use quinn::crypto::rustls::QuicServerConfig;
use quinn::rustls;
use rustls::crypto::ring::cipher_suite;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("no {what} in {path}")]
    Missing { what: &'static str, path: String },
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    #[error("QUIC needs TLS 1.3 with AES-128-GCM: {0}")]
    Quic(String),
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read { path: path.display().to_string(), source })
}

/// The edge's cipher suites, most preferred first (see the module docs).
fn cipher_suites() -> Vec<rustls::SupportedCipherSuite> {
    vec![
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
    ]
}

/// The server configuration for `cert` (PEM chain) and `key` (PEM), speaking `alpn`.
///
/// # Errors
/// When a file is unreadable or holds no certificate / key, or rustls refuses them.
pub(crate) fn server_config(cert: &Path, key: &Path, alpn: &[u8]) -> Result<quinn::ServerConfig, Error> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &read(cert)?[..]).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(Error::Missing { what: "certificate", path: cert.display().to_string() });
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &read(key)?[..])
        .ok()
        .flatten()
        .ok_or_else(|| Error::Missing { what: "private key", path: key.display().to_string() })?;
    let provider = rustls::crypto::CryptoProvider { cipher_suites: cipher_suites(), ..rustls::crypto::ring::default_provider() };
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    tls.ignore_client_order = true;
    tls.alpn_protocols = vec![alpn.to_vec()];
    // No 0-RTT: a replayed Login or Send must not be accepted.
    tls.max_early_data_size = 0;
    let quic = QuicServerConfig::try_from(tls).map_err(|e| Error::Quic(e.to_string()))?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chacha20_is_preferred_and_quic_initial_keys_stay_possible() {
        let suites = cipher_suites();
        assert_eq!(suites[0].suite(), rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
        assert!(suites.iter().any(|s| s.suite() == rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
    }

    #[test]
    fn a_missing_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let paths = chorus_log_node::network::tls::issue(dir.path(), "edge").unwrap();
        assert!(server_config(&paths.cert, &paths.key, b"chorus/1").is_ok());
        let e = server_config(&paths.cert, &paths.cert, b"chorus/1").unwrap_err();
        assert!(e.to_string().contains("no private key"), "{e}");
    }
}
