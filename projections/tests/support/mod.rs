//! Shared test support: both storage backends, a real in-process log-node,
//! and a real `nats-server`.
#![allow(dead_code)]

pub(crate) mod backend;
pub(crate) mod log;
pub(crate) mod nats;
