//! chorus log-node: the replicated log every other part of chorus stands on.
//!
//! A cluster has `P` partitions (the unit of ordering and reading) running on
//! `G` openraft groups (the unit of replication, few: one per node by
//! default), all on a single RocksDB instance per node. Each group's leader
//! merges the appends of all its partitions into few large entries; applying
//! an entry runs each command through its partition's pure state machine
//! (`chorus-partition`), which turns it into events, numbered per partition and
//! stored for readers. Nodes talk Raft over QUIC with mutual TLS; clients
//! append, read, tail and ask for status over QUIC too.
//!
//! ```text
//!  client ──Append──▶ api ──▶ Proposer(g) ──client_write──▶ Raft(g) ──AppendEntries──▶ peers (network::raft)
//!                      merges appends into      │ append (group-committed WAL fsync: store::syncer)
//!                      one entry                ▼ apply
//!               StateMachine(g) ── PartitionState(p)::apply ──▶ events CF (by partition) ──▶ Read / Tail
//! ```
//!
//! Module map: [`config`] (serde config), [`placement`] (partition → group),
//! [`types`] (openraft type config, proposals), [`store`] (RocksDB log, state
//! machine, streamed snapshots, group commit), [`network`] (TLS, framing, Raft
//! transport), [`service`] (node startup, proposers, client API, re-seed),
//! [`client`] (the API client with leader routing and batching), [`consumer`]
//! (named consumers: live reading with offsets committed in the log),
//! [`metrics`] (Prometheus metric names and the handles that record them).
//!
//! Left out for now: moving partitions between groups (designed, no tool),
//! moving groups automatically (membership changes are explicit admin
//! requests), and reads that are linearizable (reads serve the replica's
//! applied events).

pub mod client;
pub mod config;
pub mod consumer;
pub mod metrics;
pub mod network;
pub mod placement;
pub mod service;
pub mod store;
pub mod types;

pub use client::{ClientConfig, LogClient};
pub use config::Config;
pub use service::Node;
