//! The storage the folds write through: a small key-value transaction trait
//! ([`Txn`]), the key layout ([`keys`]), typed value helpers, and an in-memory
//! backend ([`MemStore`]).
//!
//! # Durability promise of a backend
//! A projector folds one or more committed events into one transaction, and the
//! same transaction carries the projector's cursor (the next offset of each
//! partition it folded, [`keys::applied`], written by
//! [`Projection::apply`](crate::Projection::apply)). A backend must commit a
//! transaction **atomically**: after a crash, either every write of the
//! transaction is visible, cursor included, or none is. That is what makes
//! restarting exact: the projector reads its cursor, re-reads the log from there,
//! and neither skips nor double-counts an event (unread counters are not
//! idempotent; only the cursor makes them exact). A RocksDB backend gets this from
//! one `WriteBatch` per transaction; `sync` on commit is optional, because losing
//! the newest committed transactions only rewinds the cursor with them.
//!
//! Effects are run only after the commit returns (see [`crate::fold::Effect`]), so
//! an effect may be repeated after a crash (at-least-once) but never precedes the
//! state it announces.
//!
//! A transaction must also **read its own writes**: a fold reads keys that an
//! earlier fold of the same transaction (the roster before the chat list, or an
//! earlier event of a batch) has just written. RocksDB gives this with a
//! `WriteBatchWithIndex` read through to the database.

pub mod keys;
mod mem;
mod rocks;

pub use mem::{MemStore, MemTxn};
pub use rocks::{merge, RocksStore, RocksTxn};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A failure of the storage backend, or a stored value that does not decode.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend failed to read (an IO error, a closed database). Fatal for
    /// the transaction; the projector may retry it from its cursor.
    #[error("storage backend: {0}")]
    Backend(Box<dyn std::error::Error + Send + Sync>),
    /// A stored value is not what its key says it holds: corruption, or a value
    /// written by an incompatible version. Fatal: rebuild the views from the log.
    #[error("value under key {key} does not decode: {source}")]
    Decode { key: String, source: bincode::Error },
    /// A range holds more entries than the rule that bounds it allows (more
    /// members than a group may have, say): the views disagree with the log.
    /// Fatal: rebuild the views from the log.
    #[error("more than {max} entries from key {}", hex_prefix(from))]
    OverBound { from: Vec<u8>, max: usize },
}

fn hex_prefix(key: &[u8]) -> String {
    key.iter().take(48).map(|b| format!("{b:02x}")).collect()
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One transaction over an ordered byte-key store.
///
/// Writes are buffered and become durable together at the backend's commit (see
/// the module docs for the promise); reads see the transaction's own writes.
/// `put` and `delete` cannot fail, as in a RocksDB `WriteBatch`: a failure
/// surfaces when the transaction commits.
pub trait Txn {
    /// The value under `key`, if any.
    ///
    /// # Errors
    /// [`Error::Backend`] if the backend fails.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Sets `key` to `value`.
    fn put(&mut self, key: &[u8], value: &[u8]);

    /// Removes `key` (nothing happens if it is absent).
    fn delete(&mut self, key: &[u8]);

    /// The first `limit` entries with `from <= key < to`, in key order. The
    /// backend stops reading there: a page query asks for one entry more than
    /// its page (to know whether more follow) and reads no further, however
    /// large the rest of the range. There is no unbounded scan: a caller that
    /// needs a whole range either knows its bound (see [`Txn::scan_within`]) or
    /// goes page by page ([`for_each`]).
    ///
    /// # Errors
    /// [`Error::Backend`] if the backend fails.
    fn scan(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Every entry with `from <= key < to`, which the caller knows are at most
    /// `max` (a rule of the log bounds them, e.g. a group's members).
    ///
    /// # Errors
    /// [`Error::Backend`] if the backend fails; [`Error::OverBound`] when the
    /// range holds more than `max` entries (the views disagree with the rule).
    fn scan_within(&self, from: &[u8], to: &[u8], max: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let rows = self.scan(from, to, max.saturating_add(1))?;
        if rows.len() > max {
            return Err(Error::OverBound { from: from.to_vec(), max });
        }
        Ok(rows)
    }

    /// [`Txn::scan_within`] over the keys that start with `prefix`.
    ///
    /// # Errors
    /// As [`Txn::scan_within`].
    fn scan_prefix(&self, prefix: &[u8], max: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        match keys::prefix_end(prefix) {
            Some(end) => self.scan_within(prefix, &end, max),
            None => {
                // Only an all-0xff prefix has no end; no view key is like that, but
                // stay correct: scan to the end and filter.
                let mut all = self.scan_within(prefix, &[0xff; 64], max)?;
                all.retain(|(k, _)| k.starts_with(prefix));
                Ok(all)
            }
        }
    }
}

/// Entries [`for_each`] reads at a time.
pub const SCAN_PAGE: usize = 1024;

/// Hands every entry with `from <= key < to` to `f`, in key order, reading
/// [`SCAN_PAGE`] entries at a time: memory stays bounded however long the
/// range (a chat's messages between two receipts, say).
///
/// # Errors
/// [`Error::Backend`] if the backend fails, or the first error of `f`.
pub fn for_each<T: Txn + ?Sized, E: From<Error>>(
    txn: &T,
    from: &[u8],
    to: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let mut next = from.to_vec();
    loop {
        let page = txn.scan(&next, to, SCAN_PAGE)?;
        for (k, v) in &page {
            f(k, v)?;
        }
        match page.last() {
            Some((last, _)) if page.len() == SCAN_PAGE => {
                // The smallest key after `last`.
                next.clone_from(last);
                next.push(0);
            }
            _ => return Ok(()),
        }
    }
}

/// [`for_each`] over the keys that start with `prefix`.
///
/// # Errors
/// As [`for_each`].
pub fn for_each_prefix<T: Txn + ?Sized, E: From<Error>>(
    txn: &T,
    prefix: &[u8],
    f: impl FnMut(&[u8], &[u8]) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let end = keys::prefix_end(prefix).unwrap_or_else(|| vec![0xff; 64]);
    for_each(txn, prefix, &end, f)
}

/// A backend: begins and commits [`Txn`]s, and lists its committed entries.
///
/// Both backends implement it so that the same folds and the same tests run
/// over either ([`MemStore`] in memory, [`RocksStore`] on disk).
pub trait Store {
    /// The backend's transaction.
    type Txn<'a>: Txn
    where
        Self: 'a;

    /// Starts a (write) transaction.
    fn begin_txn(&mut self) -> Self::Txn<'_>;

    /// Commits `txn` atomically (see the module docs).
    ///
    /// # Errors
    /// [`Error::Backend`] if the backend refuses the write; nothing was committed.
    fn commit_txn(txn: Self::Txn<'_>) -> Result<()>;

    /// Every committed entry, in key order.
    ///
    /// # Errors
    /// [`Error::Backend`] if the backend fails.
    fn dump(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
}

/// Encodes a value as the views store it (bincode 1, fixed-size integers).
pub(crate) fn encode<V: Serialize>(value: &V) -> Vec<u8> {
    // Serializing plain structs of integers, ids and strings into a Vec cannot fail.
    #[expect(clippy::expect_used, reason = "bincode encoding of a derived Serialize into memory cannot fail")]
    let bytes = bincode::serialize(value).expect("bincode serialization of a view value");
    bytes
}

/// Decodes a value stored under `key`.
pub(crate) fn decode<V: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<V> {
    bincode::deserialize(bytes).map_err(|source| Error::Decode { key: keys::display(key), source })
}

/// Reads and decodes the value under `key`.
pub(crate) fn get_value<V: DeserializeOwned, T: Txn + ?Sized>(txn: &T, key: &[u8]) -> Result<Option<V>> {
    txn.get(key)?.map(|bytes| decode(key, &bytes)).transpose()
}

/// Encodes and writes `value` under `key`.
pub(crate) fn put_value<V: Serialize, T: Txn + ?Sized>(txn: &mut T, key: &[u8], value: &V) {
    txn.put(key, &encode(value));
}
