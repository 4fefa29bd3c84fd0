//! One module per subcommand of `chorus`.

pub mod cluster;
pub mod dev;
pub mod jepsen;
pub mod log;
pub mod log_node;
pub mod projector;
