//! The log-node service: starts the partition groups, serves Raft and the client
//! API, and stops them.

pub mod api;
pub mod node;
pub mod reseed;

pub use node::{Node, NodeError};
