//! Errors of the harness (the checker itself cannot fail).

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
    /// The cluster did not do what the harness needs to go on (start, elect, converge).
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("bad run configuration: {0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an IO error with what was being done and to which path.
pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { what, path, source }
}
