//! Errors of the harness: the launcher's (`chorus-testkit`), which are the
//! same kinds (IO, configuration, the cluster not doing what the harness
//! needs, a bad run configuration). The checker itself cannot fail.

pub(crate) use chorus_testkit::io;
pub use chorus_testkit::{Error, Result};
