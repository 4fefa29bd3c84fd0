//! One module per subcommand of `chorus`.

pub mod client;
pub mod cluster;
pub mod dev;
pub mod edge;
pub mod jepsen;
pub mod log;
pub mod log_node;
pub mod projector;

/// The TOML configuration at `path`, or the defaults without one.
///
/// # Errors
/// When the file cannot be read or parsed.
pub(crate) fn load_config<T: serde::de::DeserializeOwned + Default>(
    path: Option<&std::path::Path>,
) -> anyhow::Result<T> {
    use anyhow::Context;
    match path {
        Some(p) => toml::from_str(&std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?)
            .with_context(|| format!("parse {}", p.display())),
        None => Ok(T::default()),
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
    #[arg(long)]
    pub cert: std::path::PathBuf,
    /// The certificate's private key.
    #[arg(long)]
    pub key: std::path::PathBuf,
}

impl LogTlsArgs {
    pub fn paths(&self) -> chorus_log_node::network::tls::TlsPaths {
        chorus_log_node::network::tls::TlsPaths { ca: self.ca.clone(), cert: self.cert.clone(), key: self.key.clone() }
    }
}
