//! What the tests and the Jepsen harness share.
//!
//! Today: [`ports`], loopback ports for processes that a test starts and that
//! must know their addresses before they bind.

pub mod ports;
