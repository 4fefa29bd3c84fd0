//! TLS material: a development CA made with rcgen, node certificates signed by it,
//! and the rustls configurations (TLS 1.3 only) of every endpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::{Deserialize, Serialize};

use super::{transport, ALPN_LOG, ALPN_RAFT, SERVER_NAME};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("no {what} found in {path}")]
    Missing { what: &'static str, path: PathBuf },
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("quic crypto: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Paths of the PEM files a node or client uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsPaths {
    /// The cluster CA certificate, which every peer's certificate must chain to.
    pub ca: PathBuf,
    /// This process's certificate.
    pub cert: PathBuf,
    /// This process's private key.
    pub key: PathBuf,
}

/// Loaded TLS material.
#[derive(Clone, Debug)]
pub struct Identity {
    pub ca: CertificateDer<'static>,
    pub certs: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "chorus development CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(|source| Error::Write { path: path.to_owned(), source })
}

/// Writes a private key readable by its owner only (mode 0600), also when the
/// file was there before with wider permissions.
fn write_secret(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let err = |source| Error::Write { path: path.to_owned(), source };
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(err)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    f.write_all(contents.as_bytes()).map_err(err)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Read { path: path.to_owned(), source })
}

/// Makes a development CA in `dir` (`ca.pem`, `ca.key`) unless one is there.
///
/// # Errors
/// On IO or generation failure.
pub fn ensure_ca(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write { path: dir.to_owned(), source })?;
    if dir.join("ca.pem").exists() && dir.join("ca.key").exists() {
        return Ok(());
    }
    let key = KeyPair::generate()?;
    let cert = ca_params().self_signed(&key)?;
    write_secret(&dir.join("ca.key"), &key.serialize_pem())?;
    write(&dir.join("ca.pem"), &cert.pem())?;
    Ok(())
}

/// Issues `<name>.pem` / `<name>.key` in `dir`, signed by the CA there (made if
/// missing), valid for [`SERVER_NAME`], `localhost` and `127.0.0.1`, usable as
/// server and client certificate. Returns the paths.
///
/// # Errors
/// On IO or generation failure.
pub fn issue(dir: &Path, name: &str) -> Result<TlsPaths> {
    ensure_ca(dir)?;
    let ca_key_pem = String::from_utf8_lossy(&read(&dir.join("ca.key"))?).into_owned();
    let ca_key = KeyPair::from_pem(&ca_key_pem)?;
    let issuer = Issuer::new(ca_params(), ca_key);
    let mut params = CertificateParams::new(vec![SERVER_NAME.to_string(), "localhost".to_string(), "127.0.0.1".to_string()])?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let paths = TlsPaths { ca: dir.join("ca.pem"), cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}.key")) };
    write_secret(&paths.key, &key.serialize_pem())?;
    write(&paths.cert, &cert.pem())?;
    Ok(paths)
}

impl Identity {
    /// Loads the PEM files.
    ///
    /// # Errors
    /// When a file is unreadable or holds no certificate / key.
    pub fn load(paths: &TlsPaths) -> Result<Self> {
        let ca = rustls_pemfile::certs(&mut &read(&paths.ca)?[..])
            .next()
            .and_then(|c| c.ok())
            .ok_or_else(|| Error::Missing { what: "certificate", path: paths.ca.clone() })?;
        let certs: Vec<_> = rustls_pemfile::certs(&mut &read(&paths.cert)?[..]).filter_map(|c| c.ok()).collect();
        if certs.is_empty() {
            return Err(Error::Missing { what: "certificate", path: paths.cert.clone() });
        }
        let key = rustls_pemfile::private_key(&mut &read(&paths.key)?[..])
            .ok()
            .flatten()
            .ok_or_else(|| Error::Missing { what: "private key", path: paths.key.clone() })?;
        Ok(Identity { ca, certs, key: Arc::new(key) })
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone())?;
        Ok(Arc::new(roots))
    }

    fn server(&self, client_auth: bool, alpn: &[u8], streams: u32) -> Result<quinn::ServerConfig> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?;
        let builder = if client_auth {
            let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider()).build()?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut tls = builder.with_single_cert(self.certs.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![alpn.to_vec()];
        tls.max_early_data_size = 0;
        let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
        cfg.transport_config(transport(streams));
        Ok(cfg)
    }

    fn client(&self, client_auth: bool, alpn: &[u8]) -> Result<quinn::ClientConfig> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?);
        let mut tls = if client_auth {
            builder.with_client_auth_cert(self.certs.clone(), self.key.clone_key())?
        } else {
            builder.with_no_client_auth()
        };
        tls.alpn_protocols = vec![alpn.to_vec()];
        let mut cfg = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
        cfg.transport_config(transport(1024));
        Ok(cfg)
    }

    /// Server side of the Raft port: peers must present a certificate of the CA.
    pub fn raft_server(&self) -> Result<quinn::ServerConfig> {
        self.server(true, ALPN_RAFT, 4096)
    }

    /// Client side of the Raft port: presents this node's certificate.
    pub fn raft_client(&self) -> Result<quinn::ClientConfig> {
        self.client(true, ALPN_RAFT)
    }

    /// A server configuration for any chorus QUIC service speaking `alpn` with
    /// this identity (TLS 1.3; `client_auth`: peers must present a certificate
    /// of the CA). The caller may replace the transport configuration.
    ///
    /// # Errors
    /// On bad TLS material.
    pub fn quic_server(&self, client_auth: bool, alpn: &[u8]) -> Result<quinn::ServerConfig> {
        self.server(client_auth, alpn, 1)
    }

    /// Server side of the client API port.
    pub fn log_server(&self) -> Result<quinn::ServerConfig> {
        self.server(false, ALPN_LOG, 1024)
    }
}

/// Client configuration for the client API: verifies the node against `ca`.
///
/// # Errors
/// When `ca` is unreadable or holds no certificate.
pub fn log_client(ca: &Path) -> Result<quinn::ClientConfig> {
    quic_client(ca, ALPN_LOG)
}

/// Client configuration for any chorus QUIC service speaking `alpn` (TLS 1.3,
/// server verified against `ca`, no client certificate). The caller may
/// replace the transport configuration.
///
/// # Errors
/// When `ca` is unreadable or holds no certificate.
pub fn quic_client(ca: &Path, alpn: &[u8]) -> Result<quinn::ClientConfig> {
    let ca_der = rustls_pemfile::certs(&mut &read(ca)?[..])
        .next()
        .and_then(|c| c.ok())
        .ok_or_else(|| Error::Missing { what: "certificate", path: ca.to_owned() })?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(Arc::new(roots))
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let mut cfg = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    cfg.transport_config(transport(1024));
    Ok(cfg)
}

impl Identity {
    /// Client configuration for the client API with this identity's CA.
    ///
    /// # Errors
    /// On a bad CA certificate.
    pub fn log_client(&self) -> Result<quinn::ClientConfig> {
        self.client(false, ALPN_LOG)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn private_keys_are_written_for_their_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        // A key file left world-readable by an older version is tightened too.
        std::fs::write(dir.path().join("node-1.key"), "old").unwrap();
        std::fs::set_permissions(dir.path().join("node-1.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let paths = issue(dir.path(), "node-1").unwrap();
        assert_eq!(mode(&dir.path().join("ca.key")), 0o600);
        assert_eq!(mode(&paths.key), 0o600);
        // And the key is the new one, loadable.
        Identity::load(&paths).unwrap();
    }
}
