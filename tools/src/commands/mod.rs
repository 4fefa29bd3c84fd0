//! One module per subcommand of `chorus`.

pub mod client;
pub mod cluster;
pub mod dev;
pub mod edge;
pub mod jepsen;
pub mod log;
pub mod log_node;
pub mod projector;
