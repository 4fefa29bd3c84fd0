//! Where a partition's state lives: a sorted key-value map, and the layout of
//! the keys and values in it.
//!
//! The rules never hold state themselves: every read and write goes through
//! [`Kv`], so that the state can live in RocksDB on a node (bounded memory:
//! memtables and block cache, by configuration) and in a `BTreeMap` in tests
//! ([`MemKv`]). Keys are local to the partition (the node prefixes them); the
//! first byte names the record kind, integers are big endian so that keys sort
//! by them. Values are bincode.
//!
//! | key | value |
//! | --- | --- |
//! | `h ‖ 8 zero bytes` | [`Head`]: the partition's clock |
//! | `c ‖ chat` | [`ChatHead`]: kind, last seq, info, member and admin counts |
//! | `m ‖ chat ‖ user` | [`Member`](crate::Member) |
//! | `r ‖ chat ‖ user ‖ device` | [`Cursors`](crate::Cursors) |
//! | `w ‖ chat ‖ seq` | [`Message`]: sender, time, deleted — every `MessageSent` |
//! | `d ‖ user ‖ device ‖ client_msg_id` | [`DedupEntry`] |
//! | `u ‖ user` | [`UserHead`]: phone, presence, devices, counts |
//! | `p ‖ user ‖ device ‖ prekey id` | an unclaimed one-time prekey |
//! | `b ‖ user ‖ target` | a block |
//! | `o ‖ user` | [`OtpGuard`]: recent wrong codes/PINs of the user's phone, and its lock (the user may be unregistered) |
//! | `n ‖ user` | the user's registration PIN hash (32 bytes), while set |
//! | `x ‖ chat ‖ user` | in a direct chat: `user` blocks the other member (empty value) |
//! | `q ‖ user ‖ device` | the device is online: the edge's id of its connection (u64) |
//! | `s ‖ user ‖ status id` | [`StatusRecord`](crate::StatusRecord): expiry, audience, viewers (deleted a day after expiry) |
//! | `k ‖ user` | the user's contact list (sorted user ids), as last uploaded |
//! | `l ‖ user` | [`LookupCount`](crate::user::LookupCount): phone hashes looked up on one UTC day |
//! | `g ‖ consumer key ‖ partition` | a named consumer's committed offset in that partition (u64; issue 13) |
//! | `i ‖ user ‖ device` | [`DeviceKeyRecord`](crate::DeviceKeyRecord): the device's identity key and fallback key (issue 14) |
//!
//! Records past their window (messages older than the edit window, dedup
//! entries older than the retention) stay on disk and are treated as old when
//! read: whether a record is current never depends on when something was
//! deleted, so every replica decides alike.

use std::collections::BTreeMap;

use chorus_schema::{ChatId, ClientMsgId, DeviceId, Origin, Outcome, Seq, UserId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A sorted key-value map holding one partition's state.
///
/// Reads see every earlier write, including those not yet committed to disk
/// (an implementation over a database keeps a write overlay). Implementations
/// over fallible storage record the first error and report it after the batch
/// (the rules cannot act on it); see the log-node's state machine.
pub trait Kv {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    fn put(&mut self, key: &[u8], value: Vec<u8>);
    fn delete(&mut self, key: &[u8]);
    /// The entries whose key starts with `prefix`, in key order, at most `limit`.
    fn scan(&self, prefix: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)>;
}

/// [`Kv`] in memory, for tests, replay tools and the embedded pure state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemKv(pub BTreeMap<Vec<u8>, Vec<u8>>);

impl Kv for MemKv {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(key).cloned()
    }

    fn put(&mut self, key: &[u8], value: Vec<u8>) {
        self.0.insert(key.to_vec(), value);
    }

    fn delete(&mut self, key: &[u8]) {
        self.0.remove(key);
    }

    fn scan(&self, prefix: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.0
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Serialized as a sequence of `(key, value)` pairs (JSON maps need string keys).
impl Serialize for MemKv {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

impl<'de> Deserialize<'de> for MemKv {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(MemKv(Vec::<(Vec<u8>, Vec<u8>)>::deserialize(d)?.into_iter().collect()))
    }
}

// ---- keys -----------------------------------------------------------------------

/// The partition head's key: padded to 9 bytes, the shortest local key (a
/// node may bucket keys by their first bytes).
pub(crate) const HEAD: &[u8] = b"h\0\0\0\0\0\0\0\0";
pub(crate) const CHAT: u8 = b'c';
pub(crate) const MEMBER: u8 = b'm';
pub(crate) const RECEIPT: u8 = b'r';
pub(crate) const MESSAGE: u8 = b'w';
pub(crate) const DEDUP: u8 = b'd';
pub(crate) const USER: u8 = b'u';
pub(crate) const PREKEY: u8 = b'p';
pub(crate) const BLOCK: u8 = b'b';
pub(crate) const OTP_GUARD: u8 = b'o';
pub(crate) const PIN: u8 = b'n';
pub(crate) const DIRECT_BLOCK: u8 = b'x';
/// `q ‖ user ‖ device`: the device's online connection (issue 12).
pub(crate) const ONLINE: u8 = b'q';
pub(crate) const STATUS: u8 = b's';
pub(crate) const CONTACTS: u8 = b'k';
pub(crate) const LOOKUPS: u8 = b'l';
/// `g ‖ consumer key ‖ partition`: a named consumer's committed offset (issue 13).
pub(crate) const CONSUMER_OFFSET: u8 = b'g';

/// Builds a key: a kind byte and big-endian fields.
pub(crate) struct Key(Vec<u8>);

impl Key {
    pub(crate) fn new(kind: u8) -> Key {
        let mut v = Vec::with_capacity(40);
        v.push(kind);
        Key(v)
    }
    pub(crate) fn chat(mut self, c: &ChatId) -> Key {
        self.0.extend_from_slice(c.as_bytes());
        self
    }
    pub(crate) fn user(mut self, u: UserId) -> Key {
        self.0.extend_from_slice(&u.0.to_be_bytes());
        self
    }
    pub(crate) fn device(mut self, d: DeviceId) -> Key {
        self.0.extend_from_slice(&d.0.to_be_bytes());
        self
    }
    pub(crate) fn seq(mut self, s: Seq) -> Key {
        self.0.extend_from_slice(&s.0.to_be_bytes());
        self
    }
    pub(crate) fn u32(mut self, n: u32) -> Key {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }
    pub(crate) fn u64(mut self, n: u64) -> Key {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }
    pub(crate) fn client_msg_id(mut self, c: ClientMsgId) -> Key {
        self.0.extend_from_slice(&c.0.to_be_bytes());
        self
    }
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
    pub(crate) fn raw(mut self, b: &[u8]) -> Key {
        self.0.extend_from_slice(b);
        self
    }
    pub(crate) fn u16(mut self, n: u16) -> Key {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }
}

pub(crate) fn dedup_key(o: &Origin) -> Key {
    Key::new(DEDUP).user(o.user).device(o.device).client_msg_id(o.client_msg_id)
}

/// The big-endian `u64` at `at` of a key.
#[expect(
    clippy::indexing_slicing,
    clippy::expect_used,
    reason = "state keys have a fixed layout: a short one is corrupt state, and the replica must stop rather than diverge"
)]
pub(crate) fn u64_at(key: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(key[at..at + 8].try_into().expect("key holds the field"))
}

/// The big-endian `u32` at `at` of a key.
#[expect(
    clippy::indexing_slicing,
    clippy::expect_used,
    reason = "state keys have a fixed layout: a short one is corrupt state, and the replica must stop rather than diverge"
)]
pub(crate) fn u32_at(key: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(key[at..at + 4].try_into().expect("key holds the field"))
}

/// The big-endian `u16` at `at` of a key.
#[expect(
    clippy::indexing_slicing,
    clippy::expect_used,
    reason = "state keys have a fixed layout: a short one is corrupt state, and the replica must stop rather than diverge"
)]
pub(crate) fn u16_at(key: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(key[at..at + 2].try_into().expect("key holds the field"))
}

// ---- values ---------------------------------------------------------------------

/// Reads and decodes a record.
///
/// # Panics
/// If the stored bytes do not decode: the state is corrupt, and the replica
/// must stop rather than diverge.
pub(crate) fn read<T: DeserializeOwned>(kv: &impl Kv, key: &Key) -> Option<T> {
    kv.get(key.bytes()).map(|v| decode(key.bytes(), &v))
}

pub(crate) fn decode<T: DeserializeOwned>(key: &[u8], v: &[u8]) -> T {
    bincode::deserialize(v).unwrap_or_else(|e| panic!("state record {key:?} does not decode: {e}"))
}

#[expect(clippy::expect_used, reason = "bincode encoding of a derived Serialize into memory cannot fail")]
pub(crate) fn write<T: Serialize>(kv: &mut impl Kv, key: &Key, value: &T) {
    kv.put(key.bytes(), bincode::serialize(value).expect("in-memory bincode encoding cannot fail"));
}

/// The partition's clock: the largest `at_ms` folded so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub newest_at_ms: u64,
}

/// What the state machine remembers of a message: enough to authorize edits,
/// deletes and reactions. Content stays in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub sender: UserId,
    pub at_ms: u64,
    pub deleted: bool,
}

/// The outcome of a command that produced events, for retries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupEntry {
    pub at_ms: u64,
    pub outcome: Outcome,
}

pub use crate::chat::ChatHead;
pub use crate::user::{DeviceHead, OtpGuard, UserHead};
