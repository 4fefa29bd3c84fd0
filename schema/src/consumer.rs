//! Named consumers (issue 13): their names, keys and committed offsets.
//!
//! A named consumer reads the log like a Kafka consumer group and keeps its
//! position in the log itself: a `CommitOffsets` command in the consumer's own
//! partition ([`crate::Key::Consumer`]), folded into the partition's state, so
//! the committed offsets are replicated like every other state and survive
//! node crashes. See `chorus_log_node::consumer` for the client side.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::fb;
use crate::ids::{Offset, PartitionId};
use crate::{Error, Result};

/// Longest consumer name, in bytes.
pub const MAX_CONSUMER_NAME_BYTES: usize = 64;
/// Partition offsets in one commit (or one answer).
pub const MAX_CONSUMER_OFFSETS: usize = 4096;

/// Where a consumer is in one partition: `offset` is the next offset it will
/// read; everything before it was processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionOffset {
    pub partition: PartitionId,
    pub offset: Offset,
}

impl PartitionOffset {
    /// `offset` in `partition`.
    pub fn new(partition: PartitionId, offset: Offset) -> Self {
        PartitionOffset { partition, offset }
    }
}

/// The key of a named consumer: the first 16 bytes of BLAKE3 over a domain tag
/// and the name (names are unbounded text; keys are `Copy`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConsumerKey(pub [u8; 16]);

impl ConsumerKey {
    /// The key of the consumer named `name` (not validated here).
    pub fn of(name: &str) -> ConsumerKey {
        let mut h = blake3::Hasher::new();
        h.update(b"chorus/consumer/v1\0");
        h.update(name.as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&h.finalize().as_bytes()[..16]);
        ConsumerKey(bytes)
    }
}

impl fmt::Display for ConsumerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ConsumerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConsumerKey({self})")
    }
}

/// Checks a consumer name: 1 to [`MAX_CONSUMER_NAME_BYTES`] bytes of ASCII
/// letters, digits, `.`, `_` and `-`.
///
/// # Errors
/// [`Error::Malformed`] naming what is wrong.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_CONSUMER_NAME_BYTES {
        return Err(Error::malformed(
            "consumer name",
            format!("{} bytes, expected 1 to {MAX_CONSUMER_NAME_BYTES}", name.len()),
        ));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(Error::malformed("consumer name", format!("{c:?} is not a letter, digit, '.', '_' or '-'")));
    }
    Ok(())
}

/// Checks a list of partition offsets: at most [`MAX_CONSUMER_OFFSETS`], each
/// partition at most once.
///
/// # Errors
/// [`Error::TooLarge`] or [`Error::Malformed`].
pub fn validate_offsets(offsets: &[PartitionOffset]) -> Result<()> {
    crate::error::check_len("consumer offsets", offsets.len(), MAX_CONSUMER_OFFSETS)?;
    let mut seen: Vec<PartitionId> = offsets.iter().map(|o| o.partition).collect();
    seen.sort_unstable();
    if let Some((p, _)) = seen.iter().zip(seen.iter().skip(1)).find(|(a, b)| a == b) {
        return Err(Error::malformed("consumer offsets", format!("partition {p} twice")));
    }
    Ok(())
}

pub(crate) fn offsets_fb(offsets: &[PartitionOffset]) -> Vec<fb::PartitionOffset> {
    offsets.iter().map(|o| fb::PartitionOffset::new(o.partition.0, o.offset.0)).collect()
}

pub(crate) fn offsets_of(v: flatbuffers::Vector<'_, fb::PartitionOffset>) -> Vec<PartitionOffset> {
    v.iter().map(|o| PartitionOffset::new(PartitionId(o.partition()), Offset(o.offset()))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("c1").is_ok());
        assert!(validate_name("analytics.daily-export_2").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(&"a".repeat(65)).is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name("é").is_err());
        assert_ne!(ConsumerKey::of("a"), ConsumerKey::of("b"));
    }

    #[test]
    fn offsets() {
        let o = |p, n| PartitionOffset::new(PartitionId(p), Offset(n));
        assert!(validate_offsets(&[o(1, 2), o(0, 5)]).is_ok());
        assert!(validate_offsets(&[o(1, 2), o(1, 5)]).is_err());
    }
}
