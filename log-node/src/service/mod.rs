//! The log-node service: starts the Raft groups and their proposers, serves
//! Raft and the client API, and stops them.

pub mod api;
pub mod authz;
pub mod node;
pub mod proposer;
pub mod reseed;

pub use node::{Node, NodeError};
