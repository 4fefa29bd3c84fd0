//! Who may do what on the NATS bus, and the nats-server configuration that
//! enforces it.
//!
//! Every process signs in with its own NKey (a seed file of mode 0600 per
//! process; the server holds only public keys) over TLS. Permissions by role:
//!
//! | role | publish | subscribe |
//! | --- | --- | --- |
//! | projector | `chorus.deliver.>`, `chorus.receipt.>`, `chorus.account.>`, `chorus.joined.>`, `chorus.presence.>`, replies to requests it received | `chorus.view.>` |
//! | edge | `chorus.view.>` (requests), `chorus.pair.>` (pairing claims, and replies to those it received), `chorus.typing.>` | `chorus.deliver.>`, `chorus.receipt.>`, `chorus.account.>`, `chorus.joined.>`, `chorus.pair.>`, `chorus.presence.>`, `chorus.typing.>` |
//!
//! (Typing is edge to edge: never logged, so no projector sees it. An edge
//! could forge another user's typing signal, as it could anything its
//! clients say; it cannot forge presence, which comes from the log.)
//!
//! and each its own inbox `_INBOX_<key prefix>.>` (publish and subscribe).
//!
//! So an edge can neither forge deliveries nor answer `chorus.view.session`,
//! and cannot read another edge's replies; a client without credentials is
//! refused at connect. View replies are also sealed with the view key
//! ([`crate::seal`]): a login never rests on what the bus alone says.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chorus_schema::bus::subject;

/// What a bus user is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusRole {
    Projector,
    Edge,
}

/// One user of the server configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusUser {
    pub role: BusRole,
    /// The NKey public key (`U…`).
    pub public_key: String,
}

/// The subjects a role may publish and subscribe to, and whether it may
/// reply to requests it received. Everyone may also publish to and read its
/// own inbox (`_INBOX_<key prefix>.>`): the bus confirms a subscription by
/// sending itself a message there.
pub fn permissions(user: &BusUser) -> (Vec<String>, Vec<String>, bool) {
    let deliver = format!("{}.>", subject::DELIVER_PREFIX);
    let receipt = format!("{}.>", subject::RECEIPT_PREFIX);
    let account = format!("{}.>", subject::ACCOUNT_PREFIX);
    let joined = format!("{}.>", subject::JOINED_PREFIX);
    let views = format!("{}.>", subject::VIEW_PREFIX);
    let inbox = format!("{}.>", chorus_bus::inbox_prefix(&user.public_key));
    // Linked devices (issue 12): an edge claims a pairing code from the edge
    // holding the waiting device, which answers the claim.
    let pair = format!("{}.>", subject::PAIR_PREFIX);
    let presence = format!("{}.>", subject::PRESENCE_PREFIX);
    let typing = format!("{}.>", subject::TYPING_PREFIX);
    match user.role {
        BusRole::Projector => {
            (vec![deliver, receipt, account, joined, presence, inbox.clone()], vec![views, inbox], true)
        }
        BusRole::Edge => (
            vec![views, pair.clone(), typing.clone(), inbox.clone()],
            vec![deliver, receipt, account, joined, pair, presence, typing, inbox],
            true,
        ),
    }
}

/// The server's TLS material.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn quoted(list: &[String]) -> String {
    list.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
}

/// A nats-server configuration: TLS required, the users with their
/// permissions, nobody else (no anonymous user). `listen` is `host:port`.
pub fn server_config(listen: &str, tls: &ServerTls, users: &[BusUser]) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "listen: {listen:?}");
    let _ = writeln!(c, "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  timeout: 5\n}}", tls.cert, tls.key);
    let _ = writeln!(c, "authorization {{\n  users = [");
    for u in users {
        let (publish, subscribe, responses) = permissions(u);
        let _ = writeln!(c, "    {{");
        let _ = writeln!(c, "      nkey: {:?}", u.public_key);
        let _ = writeln!(c, "      permissions: {{");
        let _ = writeln!(c, "        publish: {{ allow: [{}] }}", quoted(&publish));
        let _ = writeln!(c, "        subscribe: {{ allow: [{}] }}", quoted(&subscribe));
        if responses {
            let _ = writeln!(c, "        allow_responses: true");
        }
        let _ = writeln!(c, "      }}");
        let _ = writeln!(c, "    }}");
    }
    let _ = writeln!(c, "  ]\n}}");
    c
}

/// Why credentials could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("nkey: {0}")]
    Nkey(String),
}

/// Makes a new NKey user: writes its seed to `seed_path` (mode 0600) and its
/// public key to `seed_path` + `.pub`; returns the public key. An existing
/// seed is kept (its public key is returned).
///
/// # Errors
/// On IO failure or an unreadable existing seed.
pub fn create_nkey(seed_path: &Path) -> Result<String, CredentialError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |path: &Path, e: std::io::Error| CredentialError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    if seed_path.exists() {
        return public_key_of(seed_path);
    }
    let pair = nkeys::KeyPair::new_user();
    let seed = pair.seed().map_err(|e| CredentialError::Nkey(e.to_string()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(seed_path)
        .map_err(|e| io(seed_path, e))?;
    f.write_all(seed.as_bytes()).map_err(|e| io(seed_path, e))?;
    let public = pair.public_key();
    let pub_path = public_path(seed_path);
    std::fs::write(&pub_path, &public).map_err(|e| io(&pub_path, e))?;
    Ok(public)
}

/// `<seed path>.pub`.
pub fn public_path(seed_path: &Path) -> PathBuf {
    let mut s = seed_path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// The public key of the seed in `seed_path`.
///
/// # Errors
/// When the file is unreadable or no NKey seed.
pub fn public_key_of(seed_path: &Path) -> Result<String, CredentialError> {
    let seed = std::fs::read_to_string(seed_path)
        .map_err(|e| CredentialError::Io { path: seed_path.display().to_string(), reason: e.to_string() })?;
    let pair = nkeys::KeyPair::from_seed(seed.trim()).map_err(|e| CredentialError::Nkey(e.to_string()))?;
    Ok(pair.public_key())
}

/// The seed file of a bus user in the credentials directory:
/// `<role>-<name>.nk` (its public key beside it in `.nk.pub`).
pub fn seed_path(dir: &Path, role: BusRole, name: &str) -> PathBuf {
    let role = match role {
        BusRole::Projector => "projector",
        BusRole::Edge => "edge",
    };
    dir.join(format!("{role}-{name}.nk"))
}

/// The users of every `<role>-<name>.nk.pub` in `dir`.
///
/// # Errors
/// When the directory or a key file is unreadable.
pub fn users_in(dir: &Path) -> Result<Vec<BusUser>, CredentialError> {
    let io = |e: std::io::Error| CredentialError::Io { path: dir.display().to_string(), reason: e.to_string() };
    let mut users = Vec::new();
    let mut names: Vec<PathBuf> =
        std::fs::read_dir(dir).map_err(io)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    for path in names {
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else { continue };
        if !file.ends_with(".nk.pub") {
            continue;
        }
        let role = if file.starts_with("projector-") {
            BusRole::Projector
        } else if file.starts_with("edge-") {
            BusRole::Edge
        } else {
            continue;
        };
        let public_key = std::fs::read_to_string(&path).map_err(io)?.trim().to_owned();
        users.push(BusUser { role, public_key });
    }
    Ok(users)
}

/// Writes the nats-server configuration of a deployment to `conf`: its TLS
/// certificate (`nats-server.pem`, of the cluster CA in `dir`, made if
/// missing) and every bus user whose public key is in `dir`. Returns the
/// cluster CA path, which clients verify the server with.
///
/// # Errors
/// On IO failure.
pub fn write_server_config(
    dir: &Path,
    listen: &str,
    hosts: &[String],
    conf: &Path,
) -> Result<PathBuf, CredentialError> {
    let io =
        |e: &dyn std::fmt::Display| CredentialError::Io { path: conf.display().to_string(), reason: e.to_string() };
    let tls = chorus_log_node::network::tls::issue_service(dir, "nats-server", hosts).map_err(|e| io(&e))?;
    let users = users_in(dir)?;
    std::fs::write(conf, server_config(listen, &ServerTls { cert: tls.cert, key: tls.key }, &users))
        .map_err(|e| io(&e))?;
    Ok(tls.ca)
}

/// What [`provision`] made.
#[derive(Clone, Debug)]
pub struct Provisioned {
    /// Where the credentials are.
    pub dir: PathBuf,
    /// The nats-server configuration.
    pub conf: PathBuf,
    /// The CA clients verify the server with.
    pub ca: PathBuf,
    /// The view key of the projectors and edges.
    pub view_key: PathBuf,
}

/// Credentials of a whole deployment on one machine (tests, benches, Jepsen):
/// an NKey per projector and edge, the view key and the server configuration,
/// all in `dir`.
///
/// # Errors
/// On IO failure.
pub fn provision(
    dir: &Path,
    projectors: &[String],
    edges: &[String],
    conf: &Path,
) -> Result<Provisioned, CredentialError> {
    for p in projectors {
        create_nkey(&seed_path(dir, BusRole::Projector, p))?;
    }
    for e in edges {
        create_nkey(&seed_path(dir, BusRole::Edge, e))?;
    }
    let view_key = dir.join("view.key");
    crate::seal::ViewKey::create(&view_key)
        .map_err(|e| CredentialError::Io { path: view_key.display().to_string(), reason: e.to_string() })?;
    let ca = write_server_config(dir, "127.0.0.1:4222", &[], conf)?;
    Ok(Provisioned { dir: dir.to_path_buf(), conf: conf.to_path_buf(), ca, view_key })
}

impl Provisioned {
    /// The bus configuration of `name` in `role` for the server at `url`.
    pub fn bus(&self, url: &str, role: BusRole, name: &str) -> crate::projector::BusConfig {
        crate::projector::BusConfig::Nats {
            url: url.to_owned(),
            ca: self.ca.clone(),
            nkey_seed: seed_path(&self.dir, role, name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_may_not_publish_deliveries_nor_answer_views() {
        let edge = BusUser { role: BusRole::Edge, public_key: "UABCDEFGHIJKLMNOPQRSTUVWXYZ".into() };
        let (publish, subscribe, responses) = permissions(&edge);
        assert_eq!(publish, vec!["chorus.view.>", "chorus.pair.>", "chorus.typing.>", "_INBOX_UABCDEFGHIJKLMNOPQRS.>"]);
        assert!(responses, "edges answer pairing claims");
        assert!(subscribe.contains(&"_INBOX_UABCDEFGHIJKLMNOPQRS.>".to_owned()), "{subscribe:?}");
        assert!(!subscribe.iter().any(|s| s.starts_with("chorus.view")), "edges do not take view requests");
        let projector = BusUser { role: BusRole::Projector, public_key: "UP".into() };
        let (publish, subscribe, responses) = permissions(&projector);
        assert_eq!(
            publish,
            vec![
                "chorus.deliver.>",
                "chorus.receipt.>",
                "chorus.account.>",
                "chorus.joined.>",
                "chorus.presence.>",
                "_INBOX_UP.>"
            ]
        );
        assert_eq!(subscribe, vec!["chorus.view.>", "_INBOX_UP.>"]);
        assert!(responses);
    }

    #[test]
    fn a_seed_is_private_and_its_public_key_is_kept_beside_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("edge-1.nk");
        let public = create_nkey(&seed).unwrap();
        assert!(public.starts_with('U'), "{public}");
        assert_eq!(std::fs::metadata(&seed).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(public_path(&seed)).unwrap(), public);
        assert_eq!(create_nkey(&seed).unwrap(), public, "an existing seed is kept");
        let conf = server_config(
            "127.0.0.1:4222",
            &ServerTls { cert: "c.pem".into(), key: "c.key".into() },
            &[BusUser { role: BusRole::Edge, public_key: public.clone() }],
        );
        assert!(conf.contains(&format!("nkey: {public:?}")), "{conf}");
        assert!(!conf.contains(&std::fs::read_to_string(&seed).unwrap()), "the seed never goes into the server config");
    }
}
