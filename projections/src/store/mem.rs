//! [`MemStore`]: the in-memory backend, a `BTreeMap` with buffered transactions.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::{Result, Store, Txn};

/// An ordered in-memory key-value store. Nothing survives the process; a commit
/// is atomic because it applies a buffered transaction under `&mut self`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemStore {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// Starts a transaction. Its writes reach the store only at
    /// [`MemTxn::commit`]; dropping it discards them.
    pub fn begin(&mut self) -> MemTxn<'_> {
        MemTxn { store: self, writes: BTreeMap::new() }
    }

    /// Every committed entry, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.map.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// The number of committed entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// A transaction of a [`MemStore`]: writes are buffered (a `None` value is a
/// delete) and reads see them over the committed entries.
#[derive(Debug)]
pub struct MemTxn<'a> {
    store: &'a mut MemStore,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl MemTxn<'_> {
    /// Applies every buffered write to the store at once.
    pub fn commit(self) {
        for (k, v) in self.writes {
            match v {
                Some(v) => self.store.map.insert(k, v),
                None => self.store.map.remove(&k),
            };
        }
    }
}

impl Txn for MemTxn<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.writes.get(key) {
            Some(buffered) => Ok(buffered.clone()),
            None => Ok(self.store.map.get(key).cloned()),
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
        let range = (Bound::Included(from), Bound::Excluded(to));
        // Lazy on both sides: `merge` pulls only what the limit needs.
        let base = self.store.map.range::<[u8], _>(range).map(|(k, v)| Ok((k.clone(), v.clone())));
        let overlay = self.writes.range::<[u8], _>(range).map(|(k, v)| (k.as_slice(), v.as_deref()));
        super::merge(base, overlay, limit)
    }
}

impl Store for MemStore {
    type Txn<'a> = MemTxn<'a>;

    fn begin_txn(&mut self) -> MemTxn<'_> {
        self.begin()
    }

    fn commit_txn(txn: MemTxn<'_>) -> Result<()> {
        txn.commit();
        Ok(())
    }

    fn dump(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self.entries().map(|(k, v)| (k.to_vec(), v.to_vec())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_writes_and_commits_atomically() {
        let mut store = MemStore::new();
        let mut t = store.begin();
        t.put(b"a1", b"x");
        t.put(b"a2", b"y");
        t.put(b"b1", b"z");
        t.commit();

        let mut t = store.begin();
        t.delete(b"a1");
        t.put(b"a3", b"w");
        t.put(b"a2", b"Y");
        assert_eq!(t.get(b"a1").unwrap(), None);
        assert_eq!(t.get(b"a2").unwrap(), Some(b"Y".to_vec()));
        let scanned = t.scan_prefix(b"a", 1 << 20).unwrap();
        assert_eq!(scanned, vec![(b"a2".to_vec(), b"Y".to_vec()), (b"a3".to_vec(), b"w".to_vec())]);
        drop(t);
        // Dropped without commit: nothing changed.
        assert_eq!(store.len(), 3);

        let mut t = store.begin();
        t.delete(b"a1");
        t.commit();
        let keys: Vec<_> = store.entries().map(|(k, _)| k.to_vec()).collect();
        assert_eq!(keys, vec![b"a2".to_vec(), b"b1".to_vec()]);
        assert!(store.begin().scan(b"b", b"a", 10).unwrap().is_empty());
    }

    #[test]
    fn bounded_scans_refuse_more_than_their_bound_and_pages_see_everything() {
        let mut store = MemStore::new();
        let mut t = store.begin();
        let n = super::super::SCAN_PAGE * 2 + 7;
        for i in 0..n {
            t.put(format!("k{i:06}").as_bytes(), b"v");
        }
        t.commit();
        let t = store.begin();
        assert_eq!(t.scan_prefix(b"k", n).unwrap().len(), n);
        assert!(matches!(t.scan_prefix(b"k", n - 1), Err(super::super::Error::OverBound { max, .. }) if max == n - 1));
        assert_eq!(t.scan(b"k", b"l", 3).unwrap().len(), 3);
        let mut seen = Vec::new();
        super::super::for_each_prefix(&t, b"k", |k, _| -> super::super::Result<()> {
            seen.push(k.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), n, "every entry once, across page boundaries");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "in key order");
    }
}
