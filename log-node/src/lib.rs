//! chorus log-node: the replicated log every other part of chorus stands on.
//!
//! A node hosts one openraft group per partition (`P` of them, fixed per cluster)
//! on a single RocksDB instance. A committed entry is a batch of commands; the
//! partition's pure state machine (`chorus-partition`) turns each command into
//! events, which are numbered per partition and stored for readers. Nodes talk
//! Raft over QUIC with mutual TLS; clients append, read, tail and ask for status
//! over QUIC too.
//!
//! ```text
//!  client ──Append──▶ api ──client_write──▶ Raft(p) ──AppendEntries──▶ peers (network::raft)
//!                                              │ append (group-committed WAL fsync: store::syncer)
//!                                              ▼ apply
//!                         StateMachine(p) ── PartitionState::apply ──▶ events CF ──▶ Read / Tail
//! ```
//!
//! Module map: [`config`] (serde config), [`types`] (openraft type config),
//! [`store`] (RocksDB log, state machine, snapshots, group commit),
//! [`network`] (TLS, framing, Raft transport), [`service`] (node startup and
//! client API), [`client`] (the API client with leader routing and batching).
//!
//! Left out for now: streaming snapshots larger than memory, moving partitions
//! automatically (membership changes are explicit admin requests), and reads
//! that are linearizable (reads serve the replica's applied events).

pub mod client;
pub mod config;
pub mod network;
pub mod service;
pub mod store;
pub mod types;

pub use client::{ClientConfig, LogClient};
pub use config::Config;
pub use service::Node;
