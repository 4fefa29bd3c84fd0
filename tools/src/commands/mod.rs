//! One module per subcommand of `chorus`.

pub mod client;
pub mod cluster;
pub mod dev;
pub mod edge;
pub mod export;
pub mod jepsen;
pub mod log;
pub mod log_node;
pub mod media;
pub mod projector;
pub mod reports;
pub mod status;
pub mod tail;

/// A process's configuration, the same way for the log-node, the projector
/// and the edge: defaults → the TOML file at `path` → `CHORUS_*` environment
/// variables ([`chorus_log_node::config::apply_env`]); the caller applies its
/// flags last.
///
/// # Errors
/// When the file cannot be read or parsed, or a variable does not fit.
pub(crate) fn load_config<T: serde::de::DeserializeOwned + serde::Serialize + Default>(
    path: Option<&std::path::Path>,
) -> anyhow::Result<T> {
    use anyhow::Context;
    let config = match path {
        Some(p) => toml::from_str(&std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?)
            .with_context(|| format!("parse {}", p.display()))?,
        None => T::default(),
    };
    Ok(chorus_log_node::config::apply_env(config, std::env::vars())?)
}

/// The name in the certificate of `tls` (a projector's or an edge's name in
/// the cluster), for the `id` of its metrics; `None` if it cannot be read.
pub(crate) fn principal_name(tls: &chorus_log_node::network::tls::TlsPaths) -> Option<String> {
    chorus_log_node::network::tls::Identity::load(tls).ok().map(|i| i.principal.name)
}

/// Which log node a command talks to, and as whom: `--node` and the TLS
/// flags (`chorus log`, `export`, `tail`, `consumer`, `replay`).
#[derive(Debug, clap::Args)]
pub struct LogTarget {
    /// Client API address of any log node.
    #[arg(long, default_value = "127.0.0.1:7100")]
    pub node: String,
    #[command(flatten)]
    pub tls: LogTlsArgs,
}

impl LogTarget {
    /// A log client seeded with `--node`.
    ///
    /// # Errors
    /// A missing certificate ([`LogTlsArgs::paths`]), or no node answering.
    pub async fn connect(&self) -> anyhow::Result<chorus_log_node::LogClient> {
        let tls = self.tls.paths()?;
        let config = chorus_log_node::ClientConfig::default();
        Ok(chorus_log_node::LogClient::connect(std::slice::from_ref(&self.node), &tls, config).await?)
    }
}

/// Who a command-line client of the log is: `--ca`, `--cert`, `--key`.
#[derive(Debug, clap::Args)]
pub struct LogTlsArgs {
    /// The cluster CA certificate the nodes' certificates must chain to.
    #[arg(long, default_value = "data/tls/ca.pem")]
    pub ca: std::path::PathBuf,
    /// This client's certificate, of the cluster CA (`chorus certs --role
    /// operator --name <you>`): its role decides what the log lets it do
    /// (operators: status, reads, membership; edges: appends).
    /// The default is the operator certificate `chorus dev` issues.
    #[arg(long, default_value = "data/tls/operator-dev.pem")]
    pub cert: std::path::PathBuf,
    /// The certificate's private key.
    #[arg(long, default_value = "data/tls/operator-dev.key")]
    pub key: std::path::PathBuf,
}

impl LogTlsArgs {
    /// The paths, once the certificate is known to exist.
    ///
    /// # Errors
    /// When the certificate file does not exist (say, the default one away
    /// from `chorus dev`'s data): the message says which flags to give.
    pub fn paths(&self) -> anyhow::Result<chorus_log_node::network::tls::TlsPaths> {
        if !self.cert.exists() {
            anyhow::bail!(
                "no client certificate at {}: give --cert and --key (a certificate of the cluster CA, made by `chorus certs --role operator`), or run beside `chorus dev`, which issues data/tls/operator-dev.pem",
                self.cert.display()
            );
        }
        Ok(chorus_log_node::network::tls::TlsPaths {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        })
    }
}
