//! [`RocksStore`]: the durable backend, one RocksDB instance in one directory.
//!
//! # Transactions
//! rust-rocksdb 0.24 has no binding for RocksDB's `WriteBatchWithIndex`, and the
//! workspace forbids `unsafe` (the C API is in `librocksdb-sys`), so a
//! [`RocksTxn`] is the same thing built in Rust: an ordered index of its own
//! writes (a `BTreeMap`, `None` for a delete) read over a RocksDB snapshot taken
//! when the transaction began. `get` looks in the index, then the snapshot;
//! `scan` merges the index's range with a snapshot iterator over the same range
//! ([`merge`]). [`RocksTxn::commit`] turns the index into one `WriteBatch` and
//! writes it atomically: WAL on, no fsync. A transaction remembers the snapshot
//! rows of each range it scanned ([`RocksTxn`]'s range cache): the snapshot
//! does not change under it, and folds scan the same small ranges (a chat's
//! members, a partition's due expiries) for record after record, so each is
//! read from RocksDB once per transaction, not once per record. A crash may lose the newest commits,
//! but never part of one, and the projector's cursor commits in the same batch
//! as the views, so losing a commit only makes the projector fold its records
//! again (see [`crate::store`] for the promise).
//!
//! # Writers and readers
//! One write transaction at a time: [`RocksStore::begin`] holds the store's
//! writer lock until the transaction is committed or dropped, so two writers
//! never read the same state and overwrite each other. Readers
//! ([`RocksStore::read`]) take no lock: they see the snapshot of their start,
//! consistent across every key they read, however long they take.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rocksdb::{IteratorMode, Options, ReadOptions, SnapshotWithThreadMode, WriteBatch, WriteOptions, DB};

use super::{Error, Result, Store, Txn};

fn backend(e: rocksdb::Error) -> Error {
    Error::Backend(Box::new(e))
}

/// A RocksDB instance holding the views. Cheap to clone: clones share the
/// database and its writer lock.
#[derive(Clone)]
pub struct RocksStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: DB,
    dir: PathBuf,
    writer: Mutex<()>,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore").field("dir", &self.inner.dir).finish_non_exhaustive()
    }
}

impl RocksStore {
    /// Opens (creating if needed) the store in `dir`.
    ///
    /// # Errors
    /// [`Error::Backend`] if RocksDB cannot open the directory (e.g. another
    /// process holds its lock).
    pub fn open(dir: impl AsRef<Path>) -> Result<RocksStore> {
        let dir = dir.as_ref().to_path_buf();
        let mut options = Options::default();
        options.create_if_missing(true);
        let db = DB::open(&options, &dir).map_err(backend)?;
        Ok(RocksStore { inner: Arc::new(Inner { db, dir, writer: Mutex::new(()) }) })
    }

    /// Opens the store in `dir` read-only, e.g. a live projector's store
    /// (RocksDB's read-only mode takes no lock, so the projector may keep
    /// running). What it sees is what was committed when it opened (the WAL
    /// included); a commit of a transaction with writes fails.
    ///
    /// # Errors
    /// [`Error::Backend`] if there is no database in `dir` or it cannot be read.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<RocksStore> {
        let dir = dir.as_ref().to_path_buf();
        let db = DB::open_for_read_only(&Options::default(), &dir, false).map_err(backend)?;
        Ok(RocksStore { inner: Arc::new(Inner { db, dir, writer: Mutex::new(()) }) })
    }

    /// The directory of the database.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Starts the write transaction: blocks while another one is open, then
    /// reads through a snapshot of everything committed so far.
    pub fn begin(&self) -> RocksTxn<'_> {
        // A writer that panicked left nothing behind (its writes were only in
        // its index), so a poisoned lock is as good as a free one.
        let guard = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        RocksTxn {
            db: &self.inner.db,
            snapshot: self.inner.db.snapshot(),
            writes: BTreeMap::new(),
            writer: Some(guard),
            ranges: RefCell::default(),
        }
    }

    /// A read-only transaction over a snapshot of what is committed now. Its
    /// writes (if any) are discarded; [`RocksTxn::commit`] refuses them.
    pub fn read(&self) -> RocksTxn<'_> {
        RocksTxn {
            db: &self.inner.db,
            snapshot: self.inner.db.snapshot(),
            writes: BTreeMap::new(),
            writer: None,
            ranges: RefCell::default(),
        }
    }

    /// Every committed entry, in key order (for tests and `replay` checks).
    ///
    /// # Errors
    /// [`Error::Backend`] if RocksDB fails.
    pub fn entries(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner
            .db
            .iterator(IteratorMode::Start)
            .map(|item| item.map(|(k, v)| (k.into_vec(), v.into_vec())).map_err(backend))
            .collect()
    }

    /// The committed entries with `from <= key < to`, in key order, read
    /// lazily from one consistent view of the database (for comparing large
    /// stores without loading them).
    pub fn range(&self, from: &[u8], to: &[u8]) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + '_ {
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(to.to_vec());
        self.inner
            .db
            .iterator_opt(IteratorMode::From(from, rocksdb::Direction::Forward), options)
            .map(|item| item.map(|(k, v)| (k.into_vec(), v.into_vec())).map_err(backend))
    }

    /// Deletes every entry with `from <= key < to` in one atomic write (a range
    /// tombstone: cheap whatever the number of entries). Waits for the write
    /// transaction, like [`RocksStore::begin`].
    ///
    /// # Errors
    /// [`Error::Backend`] if RocksDB refuses the write (e.g. a read-only store).
    pub fn delete_range(&self, from: &[u8], to: &[u8]) -> Result<()> {
        let _writer = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = WriteBatch::default();
        batch.delete_range(from, to);
        self.inner.db.write(batch).map_err(backend)
    }

    /// Whether the store holds no entry at all.
    ///
    /// # Errors
    /// [`Error::Backend`] if RocksDB fails.
    pub fn is_empty(&self) -> Result<bool> {
        match self.inner.db.iterator(IteratorMode::Start).next() {
            None => Ok(true),
            Some(Ok(_)) => Ok(false),
            Some(Err(e)) => Err(backend(e)),
        }
    }
}

/// A transaction of a [`RocksStore`]: an index of its writes over a snapshot.
pub struct RocksTxn<'a> {
    db: &'a DB,
    snapshot: SnapshotWithThreadMode<'a, DB>,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The writer lock, for a transaction from [`RocksStore::begin`].
    writer: Option<MutexGuard<'a, ()>>,
    /// The snapshot rows of ranges scanned so far, by `(from, to)`.
    ranges: RefCell<HashMap<RangeKey, SnapshotRange>>,
}

/// A scanned range: `(from, to)`.
type RangeKey = (Vec<u8>, Vec<u8>);

/// Rows of the snapshot in one range, from its start: all of them
/// (`complete`), or the first ones (a scan stopped at its limit).
struct SnapshotRange {
    rows: Arc<Vec<(Vec<u8>, Vec<u8>)>>,
    complete: bool,
}

/// Most snapshot rows a transaction keeps for one range.
const RANGE_ROWS_CACHED_MAX: usize = 4096;

/// A snapshot iterator that keeps what it yields (up to
/// [`RANGE_ROWS_CACHED_MAX`] rows) and whether it reached the end.
struct Recording<I> {
    inner: I,
    rows: Vec<(Vec<u8>, Vec<u8>)>,
    overflowed: bool,
    ended: bool,
    failed: bool,
}

impl<I: Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>> Iterator for Recording<I> {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.inner.next();
        match &item {
            None => self.ended = true,
            Some(Err(_)) => self.failed = true,
            Some(Ok(row)) if self.rows.len() < RANGE_ROWS_CACHED_MAX => self.rows.push(row.clone()),
            Some(Ok(_)) => self.overflowed = true,
        }
        item
    }
}

impl std::fmt::Debug for RocksTxn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksTxn").field("writes", &self.writes.len()).field("writer", &self.writer.is_some()).finish()
    }
}

impl RocksTxn<'_> {
    /// The number of keys written (put or deleted) so far.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Writes every buffered write to the database in one atomic batch (WAL
    /// on, no fsync), then releases the writer lock.
    ///
    /// # Errors
    /// [`Error::Backend`] if RocksDB refuses the batch; nothing was written.
    ///
    /// # Panics
    /// If a read-only transaction ([`RocksStore::read`]) wrote something: a
    /// programmer error.
    pub fn commit(self) -> Result<()> {
        if self.writer.is_none() {
            assert!(self.writes.is_empty(), "a read-only transaction has {} writes", self.writes.len());
            return Ok(());
        }
        if self.writes.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for (k, v) in &self.writes {
            match v {
                Some(v) => batch.put(k, v),
                None => batch.delete(k),
            }
        }
        let mut options = WriteOptions::default();
        // Losing the newest commits in a crash rewinds the cursor with them.
        options.set_sync(false);
        self.db.write_opt(batch, &options).map_err(backend)
    }
}

impl Txn for RocksTxn<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.writes.get(key) {
            Some(buffered) => Ok(buffered.clone()),
            None => self.snapshot.get(key).map_err(backend),
        }
    }

    fn put(&mut self, key: &[u8], value: &[u8]) {
        self.writes.insert(key.to_vec(), Some(value.to_vec()));
    }

    fn delete(&mut self, key: &[u8]) {
        self.writes.insert(key.to_vec(), None);
    }

    fn scan(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if from >= to {
            return Ok(Vec::new());
        }
        let overlay = || {
            self.writes
                .range::<[u8], _>((Bound::Included(from), Bound::Excluded(to)))
                .map(|(k, v)| (k.as_slice(), v.as_deref()))
        };
        let cached = self.ranges.borrow().get(&(from.to_vec(), to.to_vec())).map(|r| (r.rows.clone(), r.complete));
        match cached {
            Some((rows, true)) => merge(rows.iter().cloned().map(Ok), overlay(), limit),
            Some((rows, false)) => {
                // The cached rows, then the snapshot after the last of them
                // (opened only if the merge gets that far).
                let after = rows.last().map(|(k, _)| k.clone());
                let rest = std::iter::once(()).flat_map(move |()| {
                    let start = after.clone().unwrap_or_else(|| from.to_vec());
                    let skip = after.clone();
                    self.snapshot_range(&start, to)
                        .skip_while(move |r| matches!((r, &skip), (Ok((k, _)), Some(s)) if k == s))
                });
                merge(rows.iter().cloned().map(Ok).chain(rest), overlay(), limit)
            }
            None => {
                let mut base = Recording {
                    inner: self.snapshot_range(from, to),
                    rows: Vec::new(),
                    overflowed: false,
                    ended: false,
                    failed: false,
                };
                let out = merge(&mut base, overlay(), limit)?;
                if !base.failed && !base.overflowed {
                    let range = SnapshotRange { rows: Arc::new(base.rows), complete: base.ended };
                    self.ranges.borrow_mut().insert((from.to_vec(), to.to_vec()), range);
                }
                Ok(out)
            }
        }
    }
}

impl RocksTxn<'_> {
    /// The snapshot's entries with `from <= key < to`, in key order, lazily.
    fn snapshot_range(&self, from: &[u8], to: &[u8]) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + '_ {
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(to.to_vec());
        self.snapshot
            .iterator_opt(IteratorMode::From(from, rocksdb::Direction::Forward), options)
            .map(|item| item.map(|(k, v)| (k.into_vec(), v.into_vec())).map_err(backend))
    }
}

/// Merges a sorted base (committed entries) with a sorted overlay of writes
/// (`None`: a delete) into what a reader of the transaction sees: overlay
/// values win, deletes hide base entries. Both inputs must be sorted by key
/// with unique keys. Stops at `limit` entries out, having pulled from `base`
/// only the entries they needed (and those the overlay deletes).
///
/// # Errors
/// The first error of `base`.
///
/// # Panics
/// If either input is not strictly increasing (a programmer error).
pub fn merge<'o>(
    base: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>,
    overlay: impl Iterator<Item = (&'o [u8], Option<&'o [u8]>)>,
    limit: usize,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut base = base.peekable();
    let mut overlay = overlay.peekable();
    let mut last_base: Option<Vec<u8>> = None;
    while out.len() < limit {
        // Surface a base error before comparing keys.
        if let Some(Err(_)) = base.peek() {
            if let Some(Err(e)) = base.next() {
                return Err(e);
            }
        }
        let order = match (base.peek(), overlay.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(Ok((bk, _))), Some((ok, _))) => bk.as_slice().cmp(ok),
            (Some(Err(_)), _) => unreachable!("errors are returned above"),
        };
        match order {
            // The `if let`s below always match: their items were peeked (and
            // base errors returned) above.
            std::cmp::Ordering::Less => {
                if let Some(Ok((k, v))) = base.next() {
                    assert!(last_base.as_ref().is_none_or(|l| *l < k), "base out of order");
                    last_base = Some(k.clone());
                    out.push((k, v));
                }
            }
            std::cmp::Ordering::Greater | std::cmp::Ordering::Equal => {
                if order == std::cmp::Ordering::Equal {
                    if let Some(Ok((bk, _))) = base.next() {
                        last_base = Some(bk);
                    }
                }
                if let Some((k, Some(v))) = overlay.next() {
                    out.push((k.to_vec(), v.to_vec()));
                }
            }
        }
        if let [.., (before, _), (last, _)] = out.as_slice() {
            assert!(before < last, "merge inputs out of order");
        }
    }
    Ok(out)
}

impl Store for RocksStore {
    type Txn<'a> = RocksTxn<'a>;

    fn begin_txn(&mut self) -> RocksTxn<'_> {
        self.begin()
    }

    fn commit_txn(txn: RocksTxn<'_>) -> Result<()> {
        txn.commit()
    }

    fn dump(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.entries()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(entries: &[(&[u8], &[u8])]) -> Vec<Result<(Vec<u8>, Vec<u8>)>> {
        entries.iter().map(|(k, v)| Ok((k.to_vec(), v.to_vec()))).collect()
    }

    #[derive(Clone, Debug)]
    enum Op {
        Put(u8, u8),
        Delete(u8),
        Scan(u8, u8, usize),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (0u8..24, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
            (0u8..24).prop_map(Op::Delete),
            // Few distinct ranges, so that scans repeat and hit the range cache.
            (0u8..4, 0u8..4, 0usize..8).prop_map(|(a, b, l)| Op::Scan(a * 6, b * 6 + 6, l)),
        ]
    }

    proptest::proptest! {
        /// A transaction's scans, cached or not, see exactly the committed
        /// entries overlaid with its own writes so far (a model: one BTreeMap).
        #[test]
        fn cached_scans_see_the_snapshot_and_every_write_since(
            committed in proptest::collection::btree_map(0u8..24, proptest::prelude::any::<u8>(), 0..20),
            ops in proptest::collection::vec(op(), 0..60),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = RocksStore::open(dir.path()).unwrap();
            let mut t = store.begin();
            for (k, v) in &committed {
                t.put(&[*k], &[*v]);
            }
            t.commit().unwrap();
            let mut model = committed.clone();
            let mut t = store.begin();
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        t.put(&[k], &[v]);
                        model.insert(k, v);
                    }
                    Op::Delete(k) => {
                        t.delete(&[k]);
                        model.remove(&k);
                    }
                    Op::Scan(from, to, limit) => {
                        let got = t.scan(&[from], &[to], limit).unwrap();
                        let want: Vec<(Vec<u8>, Vec<u8>)> = model
                            .iter()
                            .filter(|(k, _)| (from..to).contains(*k))
                            .take(limit)
                            .map(|(k, v)| (vec![*k], vec![*v]))
                            .collect();
                        proptest::prop_assert_eq!(got, want);
                    }
                }
            }
        }
    }

    #[test]
    fn merge_overlays_and_hides() {
        let b = || base(&[(b"a", b"1"), (b"b", b"2"), (b"d", b"4")]);
        let o: Vec<(&[u8], Option<&[u8]>)> =
            vec![(b"a", Some(b"A")), (b"b", None), (b"c", Some(b"C")), (b"e", None), (b"f", Some(b"F"))];
        let got = merge(b().into_iter(), o.clone().into_iter(), usize::MAX).unwrap();
        let want: Vec<(Vec<u8>, Vec<u8>)> = [(b"a", b"A"), (b"c", b"C"), (b"d", b"4"), (b"f", b"F")]
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(got, want);
        assert!(merge(Vec::new().into_iter(), std::iter::empty(), usize::MAX).unwrap().is_empty());
        for limit in 0..=5 {
            let got = merge(b().into_iter(), o.clone().into_iter(), limit).unwrap();
            assert_eq!(got, want[..limit.min(want.len())], "limit {limit}");
        }
    }

    #[test]
    fn merge_pulls_from_the_base_only_what_the_limit_needs() {
        let pulled = std::cell::Cell::new(0usize);
        let base = (0u32..100_000).map(|i| {
            pulled.set(pulled.get() + 1);
            Ok((i.to_be_bytes().to_vec(), b"v".to_vec()))
        });
        let got = merge(base, std::iter::empty(), 101).unwrap();
        assert_eq!(got.len(), 101);
        assert!(pulled.get() <= 102, "pulled {} entries for a limit of 101", pulled.get());
    }

    #[test]
    fn merge_returns_base_errors() {
        let b = vec![Ok((b"a".to_vec(), b"1".to_vec())), Err(Error::Backend("disk on fire".into()))];
        assert!(matches!(merge(b.into_iter(), std::iter::empty(), usize::MAX), Err(Error::Backend(_))));
    }

    #[test]
    fn reads_own_writes_through_to_the_db_and_commits_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path()).unwrap();
        let mut t = store.begin();
        t.put(b"a1", b"x");
        t.put(b"a2", b"y");
        t.put(b"b1", b"z");
        t.commit().unwrap();

        let mut t = store.begin();
        t.delete(b"a1");
        t.put(b"a3", b"w");
        t.put(b"a2", b"Y");
        assert_eq!(t.get(b"a1").unwrap(), None);
        assert_eq!(t.get(b"a2").unwrap(), Some(b"Y".to_vec()));
        assert_eq!(t.get(b"b1").unwrap(), Some(b"z".to_vec()));
        let scanned = t.scan_prefix(b"a", 1 << 20).unwrap();
        assert_eq!(scanned, vec![(b"a2".to_vec(), b"Y".to_vec()), (b"a3".to_vec(), b"w".to_vec())]);
        // A reader does not see the open transaction's writes.
        assert_eq!(store.read().get(b"a1").unwrap(), Some(b"x".to_vec()));
        drop(t);
        assert_eq!(store.entries().unwrap().len(), 3);

        let mut t = store.begin();
        t.delete(b"a1");
        let reader = store.read();
        t.commit().unwrap();
        // The reader keeps its snapshot.
        assert_eq!(reader.get(b"a1").unwrap(), Some(b"x".to_vec()));
        drop(reader);
        let keys: Vec<_> = store.entries().unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![b"a2".to_vec(), b"b1".to_vec()]);
        assert!(store.begin().scan(b"b", b"a", 10).unwrap().is_empty());
        drop(store);

        // Committed writes survive a reopen.
        let store = RocksStore::open(dir.path()).unwrap();
        assert_eq!(store.read().get(b"a2").unwrap(), Some(b"y".to_vec()));
        assert!(!store.is_empty().unwrap());
    }

    #[test]
    fn ranges_read_only_and_range_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path()).unwrap();
        let mut t = store.begin();
        for k in [&b"a1"[..], b"b1", b"b2", b"b3", b"c1"] {
            t.put(k, b"v");
        }
        t.commit().unwrap();
        let keys = |s: &RocksStore, from: &[u8], to: &[u8]| -> Vec<Vec<u8>> {
            s.range(from, to).map(|e| e.unwrap().0).collect()
        };
        assert_eq!(keys(&store, b"b", b"c"), vec![b"b1".to_vec(), b"b2".to_vec(), b"b3".to_vec()]);

        // A read-only open beside the open store sees its commits and cannot write.
        let reader = RocksStore::open_read_only(dir.path()).unwrap();
        assert_eq!(keys(&reader, b"a", b"z").len(), 5);
        let mut t = reader.begin();
        t.put(b"d1", b"v");
        assert!(t.commit().is_err());
        assert!(reader.delete_range(b"a", b"z").is_err());
        drop(reader);

        store.delete_range(b"b2", b"c").unwrap();
        assert_eq!(keys(&store, b"a", b"z"), vec![b"a1".to_vec(), b"b1".to_vec(), b"c1".to_vec()]);
        assert_eq!(store.entries().unwrap().len(), 3);
        assert!(RocksStore::open_read_only(tempfile::tempdir().unwrap().path()).is_err(), "no database there");
    }
}
