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
pub(crate) fn load_config<T: serde::de::DeserializeOwned + Default>(path: Option<&std::path::Path>) -> anyhow::Result<T> {
    use anyhow::Context;
    match path {
        Some(p) => toml::from_str(&std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?)
            .with_context(|| format!("parse {}", p.display())),
        None => Ok(T::default()),
    }
}
