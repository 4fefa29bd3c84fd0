//! Key layout: every key starts with the id of what it belongs to (big
//! endian) — the group for Raft log entries, metadata and snapshots, the
//! partition for events — so that its records are contiguous and ordered.

pub const VOTE: u8 = 1;
pub const COMMITTED: u8 = 2;
pub const PURGED: u8 = 3;
/// A group's applied position (`SmMeta`).
pub const SM: u8 = 4;

/// `id ‖ n`, both big endian: the key of a group's log entry `n` or of a
/// partition's event at offset `n`.
pub fn indexed(id: u16, n: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(&id.to_be_bytes());
    k[2..].copy_from_slice(&n.to_be_bytes());
    k
}

/// The `n` of a key made by [`indexed`].
pub fn index_of(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(2..10)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// A per-group metadata key.
pub fn meta(group: u16, tag: u8) -> [u8; 3] {
    let g = group.to_be_bytes();
    [g[0], g[1], tag]
}

/// The key of a group's snapshot.
pub fn snapshot(group: u16) -> [u8; 2] {
    group.to_be_bytes()
}

/// The key (in the meta column family) of the store's format version; no
/// per-group key has its length.
pub const FORMAT: &[u8] = b"format";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexed_keys_sort_by_partition_then_index() {
        let mut keys = vec![indexed(2, 0), indexed(1, u64::MAX), indexed(1, 256), indexed(1, 3)];
        keys.sort();
        assert_eq!(keys, vec![indexed(1, 3), indexed(1, 256), indexed(1, u64::MAX), indexed(2, 0)]);
        assert_eq!(index_of(&indexed(7, 42)), Some(42));
        assert_eq!(index_of(&[0, 1, 2]), None);
    }
}
