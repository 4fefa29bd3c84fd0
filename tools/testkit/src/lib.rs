//! What the tests, the tools and the Jepsen harness share, so that there is
//! one way to start chorus processes on this machine:
//!
//! - [`ports`]: loopback ports for processes that must know their addresses
//!   before they bind;
//! - [`nats`]: a real `nats-server` process;
//! - [`cluster`]: the launcher: `chorus log-node` processes (optionally each
//!   behind a [`proxy`] so that links can be cut), and around them the bus,
//!   a projector and edges ([`services`]), with the faults the Jepsen harness
//!   injects (kill, pause, lose un-fsynced writes, corrupt files);
//! - [`stack`]: a whole deployment, ready to serve clients (the end-to-end
//!   tests and `chorus bench e2e`);
//! - [`node`]: a one-node log in this process, for crate tests that need a
//!   real log without processes.
//!
//! Every process writes its own log file in its directory; failures quote
//! its tail.

pub mod cluster;
mod error;
pub mod events;
pub mod nats;
pub mod node;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod services;
pub mod stack;
pub mod webhook;

pub use error::{io, Error, Result};
