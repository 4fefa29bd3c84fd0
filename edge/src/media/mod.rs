//! Media (issue 14): content-addressed, client-encrypted objects uploaded
//! and downloaded over their own QUIC streams.
//!
//! - [`upload`]: the sans-IO upload state machine (header checks, resume
//!   point, each chunk's verdict);
//! - [`store`]: the objects in an `object_store` (local directory or S3) and
//!   the staged partial uploads;
//! - [`config`]: the `[media]` config section.
//!
//! The streams themselves are served by the driver (`driver::media`).

pub mod config;
pub mod store;
pub mod upload;

pub use config::{MediaConfig, S3Config};
pub use store::{MediaStore, StoreError, StoredObject};
