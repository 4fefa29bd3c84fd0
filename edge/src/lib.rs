//! The chorus edge: where clients connect. (The client SDK that connects is
//! the `chorus-client` crate: apps link it without the edge's server side.)
//!
//! # Module map
//! - [`session`]: the sans-IO core of one client connection — authentication
//!   (OTP registration, token login), sends, acks, sync, deliveries — as a
//!   synchronous state machine: frames and IO results in (`handle_*`),
//!   [`session::Action`]s out ([`session::Session::poll_action`]).
//! - [`driver`]: the quinn server around it ([`Edge`]): one task per
//!   connection for its control and delivery streams, keep-alives, the log,
//!   the views and the bus.
//! - [`config`]: [`Config`] of an edge process. [`sms`]: OTP text sinks.
//!
//! # Dataflow
//! ```text
//!  client ──ClientFrame──▶ driver ──handle_frame──▶ Session ──poll_action──▶ Action
//!     ▲                      │  ▲                                              │
//!     │                      │  └── handle_append_result / handle_token_verified ◀─ log, views
//!     │                      │  └── handle_delivery ◀── router ◀── bus (projector)
//!     └──── ServerFrame ◀────┴──────────────── Action::Send / Action::Deliver ◀┘
//! ```

pub mod config;
pub mod driver;
pub mod media;
pub mod metrics;
pub mod session;
pub mod sms;

pub use config::Config;
pub use driver::Edge;

/// Milliseconds since the Unix epoch (saturating at `u64::MAX`).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Locks `m`, recovering the data if a holder panicked (every critical
/// section here leaves the data consistent).
pub(crate) fn lock<T: ?Sized>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// 32 bytes from the operating system's generator.
pub(crate) fn os_random() -> [u8; 32] {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}
