//! Shared test support: both storage backends, a real in-process log-node,
//! and a real `nats-server`.
#![allow(dead_code)]

pub mod backend;
pub mod log;
pub mod nats;
