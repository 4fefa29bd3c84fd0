#![allow(dead_code)]
//! Test support shared by the integration tests.

pub(crate) mod arb;
