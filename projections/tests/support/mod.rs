//! Shared test support: both storage backends, and (for the projector tests) a
//! real in-process log-node and a real `nats-server`.
#![allow(dead_code)]

pub mod backend;
