//! The `chorus` command as a library: the local cluster launcher (shared by
//! `chorus cluster up`, the benchmarks and the integration tests), the whole
//! deployment as processes ([`stack`]) and the
//! implementation of each subcommand.

pub mod bench;
pub mod commands;
pub mod launcher;
pub mod stack;
