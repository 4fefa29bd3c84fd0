//! `chorus bench …`: benchmarks that print figures (never timed tests).

pub mod log;
pub mod stats;
