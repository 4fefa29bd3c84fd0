//! The openraft type configuration shared by every partition group.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// A node's addresses, carried in every partition's Raft membership so that any
/// replica can reach any other and can tell a client where the leader is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    /// QUIC address of the node's raft port (mutual TLS).
    pub raft_addr: String,
    /// QUIC address of the node's client API port.
    pub client_addr: String,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} client={}", self.raft_addr, self.client_addr)
    }
}

/// One Raft entry's payload: a batch of encoded `chorus_schema::Command`s that all
/// belong to the entry's partition, stamped with the leader's clock at proposal time
/// so that applying it is deterministic on every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub at_ms: u64,
    pub commands: Vec<Vec<u8>>,
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "proposal(at_ms={}, commands={})", self.at_ms, self.commands.len())
    }
}

/// What applying a [`Proposal`] returns to its proposer: one result per command,
/// and the first event offset the batch wrote (events are numbered per partition).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub results: Vec<chorus_schema::CommandResult>,
}

openraft::declare_raft_types!(
    /// Type configuration of every chorus partition group.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = u64,
        Node = NodeAddr,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type Vote = openraft::Vote<u64>;
pub type StorageError = openraft::StorageError<u64>;
pub type StoredMembership = openraft::StoredMembership<u64, NodeAddr>;
pub type SnapshotMeta = openraft::SnapshotMeta<u64, NodeAddr>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
