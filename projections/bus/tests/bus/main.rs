//! Integration tests of chorus-bus: one conformance suite run against both
//! implementations (the NATS one against a real `nats-server`), plus what
//! only one of them can show (the local drop policy, NATS reconnects).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

#[path = "../support/mod.rs"]
mod support;

mod harness;
mod local;
mod nats;
mod suite;
