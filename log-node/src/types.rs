//! The openraft type configuration shared by every Raft group, and the payload
//! of its entries.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use chorus_schema::PartitionId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A node's addresses, carried in every group's Raft membership so that any
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

/// The format of [`Proposal`]s this build writes and reads. A replica refuses
/// (as a storage error, which stops the node) an entry of another version
/// rather than guess at its meaning.
pub const PROPOSAL_VERSION: u8 = 1;

/// One Raft entry's payload: encoded `chorus_schema::Command`s of any of the
/// group's partitions, merged by the leader's proposer, stamped with the
/// leader's clock at proposal time so that applying it is deterministic on
/// every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub version: u8,
    pub at_ms: u64,
    pub commands: Batch,
}

impl Proposal {
    pub fn new(at_ms: u64, commands: Batch) -> Self {
        Proposal { version: PROPOSAL_VERSION, at_ms, commands }
    }
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "proposal(v{}, at_ms={}, {} bytes)", self.version, self.at_ms, self.commands.bytes().len())
    }
}

/// Commands packed into one reference-counted buffer, so that cloning an entry
/// (the log cache, replication to each follower) copies nothing: a sequence of
/// `partition: u16 BE ‖ len: u32 BE ‖ len bytes of an encoded Command`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Batch(Bytes);

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Batch({} bytes)", self.0.len())
    }
}

/// A [`Batch`] whose bytes do not parse: the entry is damaged or was written by
/// something else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed command batch at byte {at}: {reason}")]
pub struct BatchError {
    pub at: usize,
    pub reason: &'static str,
}

const HEADER: usize = 2 + 4;

impl Batch {
    /// The bytes of one command and its partition, as packed.
    pub fn encoded_len(command: &[u8]) -> usize {
        HEADER + command.len()
    }

    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// Wraps packed bytes, checking that they parse.
    ///
    /// # Errors
    /// When they do not.
    pub fn from_bytes(bytes: Bytes) -> Result<Batch, BatchError> {
        let b = Batch(bytes);
        for item in b.iter() {
            item?;
        }
        Ok(b)
    }

    /// One command of `partition`, packed.
    pub fn single(partition: PartitionId, command: &[u8]) -> Batch {
        let mut b = BatchBuilder::with_capacity(Self::encoded_len(command));
        b.push(partition, command);
        b.finish()
    }

    /// The commands, in order.
    pub fn iter(&self) -> BatchIter<'_> {
        BatchIter { bytes: &self.0, at: 0 }
    }

    /// How many commands the batch holds (walks it).
    pub fn count(&self) -> usize {
        self.iter().count()
    }
}

/// Packs commands into a [`Batch`].
#[derive(Debug, Default)]
pub struct BatchBuilder(BytesMut);

impl BatchBuilder {
    pub fn with_capacity(bytes: usize) -> Self {
        BatchBuilder(BytesMut::with_capacity(bytes))
    }

    /// # Panics
    /// If `command` is 4 GiB or more (commands are bounded far below that).
    #[expect(clippy::expect_used, reason = "documented panic: commands are bounded far below 4 GiB")]
    pub fn push(&mut self, partition: PartitionId, command: &[u8]) {
        let len = u32::try_from(command.len()).expect("command under 4 GiB");
        self.0.reserve(HEADER + command.len());
        self.0.put_u16(partition.0);
        self.0.put_u32(len);
        self.0.put_slice(command);
    }

    pub fn len_bytes(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn finish(self) -> Batch {
        Batch(self.0.freeze())
    }
}

/// The commands of a [`Batch`]; a malformed batch yields one error, then ends.
#[derive(Debug)]
pub struct BatchIter<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<(PartitionId, &'a [u8]), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.bytes.get(self.at..).unwrap_or_default();
        if rest.is_empty() {
            return None;
        }
        let fail = |at, reason| Some(Err(BatchError { at, reason }));
        let Some(&[p0, p1, l0, l1, l2, l3]) = rest.first_chunk::<HEADER>() else {
            self.at = self.bytes.len();
            return fail(self.at, "truncated header");
        };
        let partition = u16::from_be_bytes([p0, p1]);
        let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
        let Some(command) = rest.get(HEADER..HEADER + len) else {
            let at = self.at;
            self.at = self.bytes.len();
            return fail(at, "truncated command");
        };
        self.at += HEADER + len;
        Some(Ok((PartitionId(partition), command)))
    }
}

impl Serialize for Batch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Batch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a packed command batch")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Batch, E> {
                Ok(Batch(Bytes::copy_from_slice(v)))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Batch, E> {
                Ok(Batch(Bytes::from(v)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Batch, A::Error> {
                // Self-describing formats (JSON) write bytes as a sequence.
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(Batch(Bytes::from(v)))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// What applying a [`Proposal`] returns to its proposer: one result per
/// command, in the order of the batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub results: Vec<chorus_schema::CommandResult>,
}

openraft::declare_raft_types!(
    /// Type configuration of every chorus Raft group.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = u64,
        Node = NodeAddr,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
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
pub type RaftMetrics = openraft::RaftMetrics<u64, NodeAddr>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trips_and_refuses_truncation() {
        let mut b = BatchBuilder::default();
        b.push(PartitionId(3), b"abc");
        b.push(PartitionId(65535), b"");
        b.push(PartitionId(0), &[7; 300]);
        let batch = b.finish();
        let items: Vec<_> = batch.iter().map(Result::unwrap).collect();
        assert_eq!(
            items,
            vec![(PartitionId(3), &b"abc"[..]), (PartitionId(65535), &b""[..]), (PartitionId(0), &[7u8; 300][..])]
        );
        assert_eq!(batch.count(), 3);
        let bytes = batch.bytes().clone();
        for cut in 1..bytes.len() {
            let r = Batch::from_bytes(bytes.slice(..cut));
            // Cutting exactly at a command boundary leaves a shorter valid batch.
            let boundary = [9, 15, 15 + 306].contains(&cut);
            assert_eq!(r.is_ok(), boundary, "cut at {cut}");
        }
        let encoded = bincode::serialize(&Proposal::new(5, batch.clone())).unwrap();
        let back: Proposal = bincode::deserialize(&encoded).unwrap();
        assert_eq!(back.commands, batch);
        assert_eq!(back.version, PROPOSAL_VERSION);
        let json = serde_json::to_string(&Proposal::new(5, batch.clone())).unwrap();
        assert_eq!(serde_json::from_str::<Proposal>(&json).unwrap().commands, batch);
    }
}
