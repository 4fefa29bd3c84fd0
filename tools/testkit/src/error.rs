//! Errors of the launcher and of what drives it (the Jepsen harness uses
//! them as its own): a process that cannot be started or does not come up,
//! a file that cannot be written, a spec that makes no sense.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] chorus_log_node::config::Error),
    #[error(transparent)]
    Tls(#[from] chorus_log_node::network::tls::Error),
    #[error(transparent)]
    Client(#[from] chorus_log_node::client::Error),
    #[error("serializing {what}: {reason}")]
    Encode { what: &'static str, reason: String },
    /// A process or the cluster did not do what the caller needs to go on
    /// (start, elect, converge, register).
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("bad launch configuration: {0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an IO error with what was being done and to which path.
pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { what, path, source }
}

/// Writes `value` as TOML to `path`.
pub(crate) fn write_toml<T: serde::Serialize>(what: &'static str, value: &T, path: &std::path::Path) -> Result<()> {
    let text = toml::to_string(value).map_err(|e| Error::Encode { what, reason: e.to_string() })?;
    std::fs::write(path, text).map_err(io("write", path))
}
