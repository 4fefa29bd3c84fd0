//! Typed ids and the key → partition mapping.
//!
//! Every id is a newtype with `Display`/`FromStr` (decimal for integers, 32
//! lowercase hex characters for [`ChatId`]) and serde support.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

macro_rules! int_id {
    ($(#[$doc:meta])* $name:ident($int:ty), $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $int);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                // `u64::from_str` accepts a leading '+'; ids have exactly one spelling.
                if s.starts_with('+') {
                    return Err(Error::malformed($what, format!("{s:?} is not a decimal number")));
                }
                s.parse::<$int>()
                    .map($name)
                    .map_err(|e| Error::malformed($what, format!("{s:?}: {e}")))
            }
        }

        impl From<$int> for $name {
            fn from(v: $int) -> Self {
                $name(v)
            }
        }
    };
}

int_id!(
    /// A registered user.
    UserId(u64), "user id"
);
int_id!(
    /// One of a user's devices (the primary phone and its linked companions).
    DeviceId(u32), "device id"
);
int_id!(
    /// A partition of the log, in `0..P`.
    PartitionId(u16), "partition id"
);
int_id!(
    /// A Raft group of the log, in `0..G`: it replicates the commands of the
    /// partitions placed on it, several partitions per group.
    GroupId(u16), "group id"
);
int_id!(
    /// A position in a chat's timeline: gap-free, starting at 1 (0 means "nothing yet").
    Seq(u64), "seq"
);
int_id!(
    /// A device-chosen id that makes a command idempotent (unique per user and device).
    ClientMsgId(u64), "client message id"
);
int_id!(
    /// A log-node process of the cluster.
    NodeId(u64), "node id"
);
int_id!(
    /// A position among a partition's committed events: gap-free from 0. Readers
    /// (projectors, analysts, the edge's sync) resume from an offset.
    Offset(u64), "offset"
);
int_id!(
    /// An index in a Raft group's log. Several partitions share a group, so a
    /// partition's events have increasing, not consecutive, log indexes.
    LogIndex(u64), "log index"
);

impl Offset {
    /// The offset after this one.
    ///
    /// # Panics
    /// On overflow, which 2^64 events in one partition cannot reach.
    #[must_use]
    #[expect(clippy::expect_used, reason = "documented panic: 2^64 events in one partition cannot happen")]
    pub fn next(self) -> Offset {
        Offset(self.0.checked_add(1).expect("offset overflow"))
    }

    /// The offset `n` events further on, saturating.
    #[must_use]
    pub fn plus(self, n: u64) -> Offset {
        Offset(self.0.saturating_add(n))
    }
}

impl Seq {
    /// The seq after this one.
    ///
    /// # Panics
    /// On overflow, which 2^64 appends to one chat cannot reach.
    #[must_use]
    #[expect(clippy::expect_used, reason = "documented panic: 2^64 appends to one chat cannot happen")]
    pub fn next(self) -> Seq {
        Seq(self.0.checked_add(1).expect("seq overflow"))
    }
}

/// A chat (direct or group): 16 bytes.
///
/// The top bit of the first byte tells the kind apart: [`ChatId::direct`] sets it,
/// [`ChatId::group`] clears it. So a group can never be created under the id of
/// some pair's direct chat (which anyone can compute) and squat it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ChatId(pub [u8; 16]);

const DIRECT_BIT: u8 = 0x80;

impl ChatId {
    /// The direct chat of two users: the first 16 bytes of BLAKE3 over a domain tag
    /// and the sorted pair, with the direct bit set. `direct(a, b) == direct(b, a)`.
    pub fn direct(a: UserId, b: UserId) -> ChatId {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let mut h = blake3::Hasher::new();
        h.update(b"chorus/chat/direct/v1\0");
        h.update(&lo.0.to_le_bytes());
        h.update(&hi.0.to_le_bytes());
        let digest = h.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest.as_bytes()[..16]);
        bytes[0] |= DIRECT_BIT;
        ChatId(bytes)
    }

    /// A group id from 16 random bytes (chosen by the client or edge); clears the direct bit.
    pub fn group(random: [u8; 16]) -> ChatId {
        let mut bytes = random;
        bytes[0] &= !DIRECT_BIT;
        ChatId(bytes)
    }

    /// The id with exactly these bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> ChatId {
        ChatId(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Whether this id has the direct-chat bit (see the type's docs).
    pub fn is_direct(&self) -> bool {
        self.0[0] & DIRECT_BIT != 0
    }
}

impl fmt::Display for ChatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ChatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChatId({self})")
    }
}

impl FromStr for ChatId {
    type Err = Error;

    /// Parses 32 hex characters (either case).
    fn from_str(s: &str) -> Result<Self> {
        let raw = s.as_bytes();
        if raw.len() != 32 {
            return Err(Error::malformed("chat id", format!("expected 32 hex characters, got {}", raw.len())));
        }
        let mut bytes = [0u8; 16];
        let (pairs, _) = raw.as_chunks::<2>();
        for (byte, &[hi, lo]) in bytes.iter_mut().zip(pairs) {
            match (hex_val(hi), hex_val(lo)) {
                (Some(hi), Some(lo)) => *byte = hi << 4 | lo,
                _ => return Err(Error::malformed("chat id", format!("{s:?} is not hex"))),
            }
        }
        Ok(ChatId(bytes))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Hex string in human-readable formats (so it can be a JSON map key), 16 bytes otherwise.
impl Serialize for ChatId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for ChatId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = std::borrow::Cow::<str>::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 16]>::deserialize(d).map(ChatId)
        }
    }
}

/// What a command or event is about; decides its partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Key {
    Chat(ChatId),
    User(UserId),
    /// A named consumer's committed offsets (issue 13).
    Consumer(crate::consumer::ConsumerKey),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Chat(c) => write!(f, "chat:{c}"),
            Key::User(u) => write!(f, "user:{u}"),
            Key::Consumer(c) => write!(f, "consumer:{c}"),
        }
    }
}

impl FromStr for Key {
    type Err = Error;

    /// Parses `chat:<32 hex>` or `user:<decimal>`.
    fn from_str(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("chat:") {
            rest.parse().map(Key::Chat)
        } else if let Some(rest) = s.strip_prefix("user:") {
            rest.parse().map(Key::User)
        } else {
            Err(Error::malformed("key", format!("{s:?} starts with neither chat: nor user:")))
        }
    }
}

impl Key {
    /// A 64-bit hash of a tagged encoding of the key (BLAKE3, first 8 bytes little-endian).
    pub fn hash64(&self) -> u64 {
        let mut h = blake3::Hasher::new();
        match self {
            Key::Chat(c) => {
                h.update(b"chorus/key/chat\0");
                h.update(&c.0);
            }
            Key::User(u) => {
                h.update(b"chorus/key/user\0");
                h.update(&u.0.to_le_bytes());
            }
            Key::Consumer(c) => {
                h.update(b"chorus/key/consumer\0");
                h.update(&c.0);
            }
        }
        let digest = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_bytes()[..8]);
        u64::from_le_bytes(first)
    }
}

impl PartitionId {
    /// The partition of `key` among `partitions` partitions: [`Key::hash64`] then jump
    /// consistent hashing (Lamping & Veach, 2014).
    ///
    /// The partition count P is fixed for the life of a cluster: changing it would
    /// move keys between partitions, and a key's whole history (seqs, rosters,
    /// dedup table, prekeys) lives in one partition's state. Partitions move between
    /// nodes by Raft membership change, never by rehashing.
    ///
    /// # Panics
    /// If `partitions` is 0 (a configuration error, never network input).
    pub fn for_key(key: &Key, partitions: u16) -> PartitionId {
        assert!(partitions > 0, "partition count must be positive");
        PartitionId(jump_consistent_hash(key.hash64(), partitions))
    }
}

/// Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm", fig. 1.
#[expect(
    clippy::cast_possible_truncation,
    reason = "the algorithm's f64 -> i64 step stays below buckets; the result is in 0..buckets (a u16)"
)]
fn jump_consistent_hash(mut key: u64, buckets: u16) -> u16 {
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    // `b` is in 0..buckets because the loop ran at least once (buckets > 0).
    b as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_is_symmetric_and_tagged() {
        let a = ChatId::direct(UserId(1), UserId(2));
        assert_eq!(a, ChatId::direct(UserId(2), UserId(1)));
        assert_ne!(a, ChatId::direct(UserId(1), UserId(3)));
        assert!(a.is_direct());
        assert!(!ChatId::group([0xff; 16]).is_direct());
    }

    #[test]
    fn jump_hash_is_in_range_and_stable() {
        for p in [1u16, 2, 3, 7, 64, 1000, u16::MAX] {
            for u in 0..200u64 {
                let pid = PartitionId::for_key(&Key::User(UserId(u)), p);
                assert!(pid.0 < p);
            }
        }
        // Growing P from 64 to 65 moves only keys that land in the new partition.
        for u in 0..2000u64 {
            let k = Key::User(UserId(u));
            let before = PartitionId::for_key(&k, 64);
            let after = PartitionId::for_key(&k, 65);
            assert!(after == before || after == PartitionId(64));
        }
    }

    #[test]
    fn chat_id_text() {
        let c = ChatId([0xab; 16]);
        assert_eq!(c.to_string(), "ab".repeat(16));
        assert_eq!("AB".repeat(16).parse::<ChatId>().unwrap(), c);
        assert!("ab".parse::<ChatId>().is_err());
        assert!("zz".repeat(16).parse::<ChatId>().is_err());
        assert!("+5".parse::<UserId>().is_err());
    }
}
