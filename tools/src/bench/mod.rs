//! `chorus bench …`: benchmarks that print figures (never timed tests).

pub mod e2e;
pub mod export;
pub mod group;
pub mod log;
pub mod media;
pub mod presence;
pub mod replay;
pub mod stats;
// ---- E2EE (issue 14) ----
pub mod crypto;
