//! The `chorus` command as a library: the implementation of each
//! subcommand. The processes `chorus cluster up` and `chorus bench` start
//! are launched with `chorus-testkit`, the launcher the tests and the Jepsen
//! harness use too.

pub mod bench;
pub mod commands;
pub mod metrics;
pub mod status;
pub mod telemetry;
