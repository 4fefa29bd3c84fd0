//! TLS material and who is who: the cluster CA and the certificates it
//! issues, one per *principal* (a role and a name, carried in the certificate
//! as the SAN URI `chorus://role/<role>/<name>`), the separate edge CA for the
//! certificates clients see, and the rustls configurations (TLS 1.3 only) of
//! every endpoint.
//!
//! | role | certificate | may |
//! | --- | --- | --- |
//! | `node` (name = node id) | cluster CA, server + client auth | Raft port (only as itself), reads, status |
//! | `edge` | cluster CA, client auth | appends, reads and tails, status |
//! | `projector` | cluster CA, client auth | reads and tails, status |
//! | `operator` | cluster CA, client auth | membership changes, reads and tails, status |
//! | `analyst` | cluster CA, client auth | reads and tails, status, named consumers' offsets (issue 13) |
//! | edge server | **edge CA**, server auth only | nothing inside: clients verify edges with it |
//!
//! The authorization table itself is `service::authz`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
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
    #[error("{0}")]
    Principal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a certificate of the cluster CA lets its holder do; see the table
/// at the top of this module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Node,
    Edge,
    Projector,
    Operator,
    /// Reads, tails, status and named consumers' offsets, nothing else
    /// (issue 13: `chorus tail`, exports).
    Analyst,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Node, Role::Edge, Role::Projector, Role::Operator, Role::Analyst];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Edge => "edge",
            Role::Projector => "projector",
            Role::Operator => "operator",
            Role::Analyst => "analyst",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| Error::Principal(format!("unknown role {s:?} (node, edge, projector, operator, analyst)")))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who holds a certificate: a role and a name (a node's name is its id).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Principal {
    pub role: Role,
    pub name: String,
}

/// The scheme and authority of principal URIs.
const URI_PREFIX: &str = "chorus://role/";
/// Longest principal name.
const NAME_BYTES_MAX: usize = 64;

impl Principal {
    /// A principal; the name is 1–64 of `[A-Za-z0-9._-]`, a node's a decimal id.
    ///
    /// # Errors
    /// [`Error::Principal`] for another name.
    pub fn new(role: Role, name: &str) -> Result<Principal> {
        let ok_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if name.is_empty() || name.len() > NAME_BYTES_MAX || !ok_chars {
            return Err(Error::Principal(format!(
                "bad {role} name {name:?}: 1 to {NAME_BYTES_MAX} letters, digits, '.', '_' or '-'"
            )));
        }
        if role == Role::Node && name.parse::<u64>().is_err() {
            return Err(Error::Principal(format!("a node's name is its numeric id, not {name:?}")));
        }
        Ok(Principal { role, name: name.to_owned() })
    }

    /// Node `id`.
    pub fn node(id: u64) -> Principal {
        Principal { role: Role::Node, name: id.to_string() }
    }

    /// The node id, for a node.
    pub fn node_id(&self) -> Option<u64> {
        (self.role == Role::Node).then(|| self.name.parse().ok()).flatten()
    }

    /// `chorus://role/<role>/<name>`, the SAN URI that carries it.
    pub fn uri(&self) -> String {
        format!("{URI_PREFIX}{}/{}", self.role, self.name)
    }

    /// Parses a SAN URI made by [`Principal::uri`].
    pub fn from_uri(uri: &str) -> Option<Principal> {
        let (role, name) = uri.strip_prefix(URI_PREFIX)?.split_once('/')?;
        Principal::new(role.parse().ok()?, name).ok()
    }

    /// The principal a certificate names: its one `chorus://role/…` SAN URI.
    ///
    /// # Errors
    /// [`Error::Principal`] when the certificate does not parse or names no
    /// principal, or more than one.
    pub fn of_certificate(der: &CertificateDer<'_>) -> Result<Principal> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| Error::Principal(format!("unparsable certificate: {e}")))?;
        let san = cert.subject_alternative_name().map_err(|e| Error::Principal(format!("bad SAN extension: {e}")))?;
        let mut found = san.into_iter().flat_map(|s| s.value.general_names.iter()).filter_map(|n| match n {
            GeneralName::URI(u) if u.starts_with(URI_PREFIX) => Some(*u),
            _ => None,
        });
        match (found.next(), found.next()) {
            (Some(uri), None) => {
                Principal::from_uri(uri).ok_or_else(|| Error::Principal(format!("malformed principal URI {uri:?}")))
            }
            (None, _) => Err(Error::Principal(format!(
                "the certificate names no chorus principal (a SAN URI {URI_PREFIX}<role>/<name>); issue one with `chorus certs --role …`"
            ))),
            (Some(_), Some(_)) => Err(Error::Principal("the certificate names more than one chorus principal".into())),
        }
    }

    /// The principal of the peer of a QUIC connection (from the first
    /// certificate it presented, which the handshake verified).
    ///
    /// # Errors
    /// [`Error::Principal`] when the peer presented no certificate or it names
    /// no principal.
    pub fn of_connection(conn: &quinn::Connection) -> Result<Principal> {
        let certs = conn
            .peer_identity()
            .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
            .ok_or_else(|| Error::Principal("the peer presented no certificate".into()))?;
        let first = certs.first().ok_or_else(|| Error::Principal("the peer presented no certificate".into()))?;
        Principal::of_certificate(first)
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.role, self.name)
    }
}

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

/// Loaded TLS material: the CA this process trusts, its certificate chain
/// and key, and the principal its certificate names.
#[derive(Clone, Debug)]
pub struct Identity {
    pub ca: CertificateDer<'static>,
    pub certs: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    /// Who this process is (from its own certificate).
    pub principal: Principal,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The cluster CA (`ca.pem`, `ca.key`): signs the certificates of nodes,
/// edges (as clients of the log and the bus), projectors and operators.
pub const CLUSTER_CA: &str = "ca";
/// The edge CA (`edge-ca.pem`, `edge-ca.key`): signs only the server
/// certificates that edges show to clients. Nothing inside trusts it.
pub const EDGE_CA: &str = "edge-ca";

fn ca_params(common_name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p
}

fn ca_common_name(stem: &str) -> &'static str {
    if stem == EDGE_CA {
        "chorus edge CA"
    } else {
        "chorus cluster CA"
    }
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
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(err)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    f.write_all(contents.as_bytes()).map_err(err)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Read { path: path.to_owned(), source })
}

/// Makes the CA `<stem>.pem` / `<stem>.key` in `dir` unless it is there.
fn ensure_ca_named(dir: &Path, stem: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write { path: dir.to_owned(), source })?;
    let (pem, key_path) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
    if pem.exists() && key_path.exists() {
        return Ok(());
    }
    let key = KeyPair::generate()?;
    let cert = ca_params(ca_common_name(stem)).self_signed(&key)?;
    write_secret(&key_path, &key.serialize_pem())?;
    write(&pem, &cert.pem())?;
    Ok(())
}

fn issuer(dir: &Path, stem: &str) -> Result<Issuer<'static, KeyPair>> {
    ensure_ca_named(dir, stem)?;
    let ca_key_pem = String::from_utf8_lossy(&read(&dir.join(format!("{stem}.key")))?).into_owned();
    Ok(Issuer::new(ca_params(ca_common_name(stem)), KeyPair::from_pem(&ca_key_pem)?))
}

/// The DNS names and addresses a server certificate is valid for.
fn server_names() -> Vec<String> {
    vec![SERVER_NAME.to_string(), "localhost".to_string(), "127.0.0.1".to_string()]
}

/// Issues the certificate of `who` in `dir` (`<role>-<name>.pem` / `.key`),
/// signed by the cluster CA there (made if missing), and returns its paths.
///
/// A node's certificate is a server and a client certificate (valid for
/// [`SERVER_NAME`], `localhost` and `127.0.0.1`); every other role's is a
/// client certificate only. Each carries the principal's SAN URI.
///
/// # Errors
/// On IO or generation failure.
pub fn issue(dir: &Path, who: &Principal) -> Result<TlsPaths> {
    let issuer = issuer(dir, CLUSTER_CA)?;
    let (names, usages) = if who.role == Role::Node {
        (server_names(), vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth])
    } else {
        (Vec::new(), vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth])
    };
    let mut params = CertificateParams::new(names)?;
    params.subject_alt_names.push(SanType::URI(who.uri().try_into()?));
    params.distinguished_name.push(DnType::CommonName, who.to_string());
    params.extended_key_usages = usages;
    let stem = format!("{}-{}", who.role, who.name);
    write_signed(dir, CLUSTER_CA, &stem, params, &issuer)
}

/// Issues an edge's server certificate `edge-server-<name>.pem` / `.key` in
/// `dir`, signed by the **edge CA** (`edge-ca.pem`, made if missing): server
/// authentication only, valid for [`SERVER_NAME`], `localhost`, `127.0.0.1`
/// and `hosts`. Clients verify edges against `edge-ca.pem`; no part of the
/// cluster trusts that CA, so a stolen edge server key opens nothing inside.
///
/// # Errors
/// On IO or generation failure, or a bad name.
pub fn issue_edge_server(dir: &Path, name: &str, hosts: &[String]) -> Result<TlsPaths> {
    Principal::new(Role::Edge, name)?; // the same name rules
    let issuer = issuer(dir, EDGE_CA)?;
    let mut names = server_names();
    names.extend(hosts.iter().cloned());
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, format!("edge server {name}"));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    write_signed(dir, EDGE_CA, &format!("edge-server-{name}"), params, &issuer)
}

/// Issues `<stem>.pem` / `.key` in `dir`: a server certificate of the
/// cluster CA for a service that is no chorus process (the NATS server),
/// valid for [`SERVER_NAME`], `localhost`, `127.0.0.1` and `hosts`. Server
/// authentication only and no principal, so it opens nothing: clients of the
/// log want a node principal, and no server asks for a client certificate
/// it could serve as.
///
/// # Errors
/// On IO or generation failure.
pub fn issue_service(dir: &Path, stem: &str, hosts: &[String]) -> Result<TlsPaths> {
    let issuer = issuer(dir, CLUSTER_CA)?;
    let mut names = server_names();
    names.extend(hosts.iter().cloned());
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, stem);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    write_signed(dir, CLUSTER_CA, stem, params, &issuer)
}

fn write_signed(
    dir: &Path,
    ca: &str,
    stem: &str,
    params: CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<TlsPaths> {
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    let paths = TlsPaths {
        ca: dir.join(format!("{ca}.pem")),
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}.key")),
    };
    write_secret(&paths.key, &key.serialize_pem())?;
    write(&paths.cert, &cert.pem())?;
    Ok(paths)
}

/// The first certificate in the PEM file at `path`.
fn first_cert(path: &Path) -> Result<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut &read(path)?[..])
        .next()
        .and_then(|c| c.ok())
        .ok_or_else(|| Error::Missing { what: "certificate", path: path.to_owned() })
}

fn roots_of(ca: CertificateDer<'static>) -> Result<Arc<rustls::RootCertStore>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca)?;
    Ok(Arc::new(roots))
}

impl Identity {
    /// Loads the PEM files; the certificate must name a principal.
    ///
    /// # Errors
    /// When a file is unreadable or holds no certificate / key, or the
    /// certificate names no principal.
    pub fn load(paths: &TlsPaths) -> Result<Self> {
        let ca = first_cert(&paths.ca)?;
        let certs: Vec<_> = rustls_pemfile::certs(&mut &read(&paths.cert)?[..]).filter_map(|c| c.ok()).collect();
        let first = certs.first().ok_or_else(|| Error::Missing { what: "certificate", path: paths.cert.clone() })?;
        let principal =
            Principal::of_certificate(first).map_err(|e| Error::Principal(format!("{}: {e}", paths.cert.display())))?;
        let key = rustls_pemfile::private_key(&mut &read(&paths.key)?[..])
            .ok()
            .flatten()
            .ok_or_else(|| Error::Missing { what: "private key", path: paths.key.clone() })?;
        Ok(Identity { ca, certs, key: Arc::new(key), principal })
    }

    fn server(&self, alpn: &[u8], streams: u32) -> Result<quinn::ServerConfig> {
        let verifier = WebPkiClientVerifier::builder_with_provider(roots_of(self.ca.clone())?, provider()).build()?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.certs.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![alpn.to_vec()];
        tls.max_early_data_size = 0;
        let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
        cfg.transport_config(transport(streams));
        Ok(cfg)
    }

    fn client(&self, alpn: &[u8]) -> Result<quinn::ClientConfig> {
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots_of(self.ca.clone())?)
            .with_client_auth_cert(self.certs.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![alpn.to_vec()];
        let mut cfg = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
        cfg.transport_config(transport(1024));
        Ok(cfg)
    }

    /// Server side of the Raft port: peers must present a certificate of the
    /// cluster CA (the Raft service then admits node principals only).
    pub fn raft_server(&self) -> Result<quinn::ServerConfig> {
        self.server(ALPN_RAFT, 4096)
    }

    /// Client side of the Raft port: presents this node's certificate.
    pub fn raft_client(&self) -> Result<quinn::ClientConfig> {
        self.client(ALPN_RAFT)
    }

    /// Server side of the client API port: every client presents a
    /// certificate of the cluster CA; what it may do depends on its role.
    pub fn log_server(&self) -> Result<quinn::ServerConfig> {
        self.server(ALPN_LOG, 1024)
    }

    /// Client configuration for the client API: presents this identity's
    /// certificate, verifies the node against the cluster CA.
    ///
    /// # Errors
    /// On bad TLS material.
    pub fn log_client(&self) -> Result<quinn::ClientConfig> {
        self.client(ALPN_LOG)
    }
}

/// Client configuration for any chorus QUIC service speaking `alpn` (TLS 1.3,
/// server verified against `ca`, **no client certificate**): what the client
/// SDK uses towards edges (with the edge CA). The caller may replace the
/// transport configuration.
///
/// # Errors
/// When `ca` is unreadable or holds no certificate.
pub fn quic_client(ca: &Path, alpn: &[u8]) -> Result<quinn::ClientConfig> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots_of(first_cert(ca)?)?)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let mut cfg = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    cfg.transport_config(transport(1024));
    Ok(cfg)
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
        let paths = issue(dir.path(), &Principal::node(1)).unwrap();
        assert_eq!(paths.key, dir.path().join("node-1.key"));
        assert_eq!(mode(&dir.path().join("ca.key")), 0o600);
        assert_eq!(mode(&paths.key), 0o600);
        // And the key is the new one, loadable.
        Identity::load(&paths).unwrap();
        let edge = issue_edge_server(dir.path(), "e1", &[]).unwrap();
        assert_eq!(mode(&dir.path().join("edge-ca.key")), 0o600);
        assert_eq!(mode(&edge.key), 0o600);
    }

    #[test]
    fn each_role_is_carried_in_its_certificate() {
        let dir = tempfile::tempdir().unwrap();
        for role in Role::ALL {
            let who = if role == Role::Node { Principal::node(7) } else { Principal::new(role, "a-1").unwrap() };
            let paths = issue(dir.path(), &who).unwrap();
            let id = Identity::load(&paths).unwrap();
            assert_eq!(id.principal, who);
            assert_eq!(Principal::from_uri(&who.uri()), Some(who.clone()));
        }
        assert_eq!(Principal::node(7).node_id(), Some(7));
        assert_eq!(Principal::new(Role::Edge, "7").unwrap().node_id(), None);
    }

    #[test]
    fn an_edge_server_certificate_is_of_another_ca_and_names_no_principal() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = issue(dir.path(), &Principal::new(Role::Edge, "e1").unwrap()).unwrap();
        let server = issue_edge_server(dir.path(), "e1", &[]).unwrap();
        assert_ne!(std::fs::read(&cluster.ca).unwrap(), std::fs::read(&server.ca).unwrap());
        let e = Identity::load(&server).unwrap_err();
        assert!(e.to_string().contains("names no chorus principal"), "{e}");
    }

    #[test]
    fn bad_principals_are_refused() {
        assert!(Principal::new(Role::Edge, "").is_err());
        assert!(Principal::new(Role::Edge, "a/b").is_err());
        assert!(Principal::new(Role::Edge, &"x".repeat(65)).is_err());
        assert!(Principal::new(Role::Node, "one").is_err());
        assert!("root".parse::<Role>().is_err());
        assert_eq!(Principal::from_uri("chorus://role/admin/x"), None);
        assert_eq!(Principal::from_uri("chorus://role/edge/a/b"), None);
        assert_eq!(Principal::from_uri("https://role/edge/a"), None);
    }
}
