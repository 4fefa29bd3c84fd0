//! Both storage backends behind one test trait, so that every view test runs
//! against [`MemStore`] and a real RocksDB on disk.

use chorus_projections::store::{MemStore, Result, RocksStore, RocksTxn, Store};
use tempfile::TempDir;

/// A store a test can make fresh.
pub(crate) trait Backend: Store + Sized {
    fn fresh() -> Self;
}

impl Backend for MemStore {
    fn fresh() -> Self {
        MemStore::new()
    }
}

/// A [`RocksStore`] in its own temporary directory, removed on drop.
pub(crate) struct Rocks {
    pub store: RocksStore,
    // Dropped after the store (fields drop in order).
    _dir: TempDir,
}

impl Backend for Rocks {
    fn fresh() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = RocksStore::open(dir.path()).expect("open rocks store");
        Rocks { store, _dir: dir }
    }
}

impl Store for Rocks {
    type Txn<'a> = RocksTxn<'a>;

    fn begin_txn(&mut self) -> RocksTxn<'_> {
        self.store.begin()
    }

    fn commit_txn(txn: RocksTxn<'_>) -> Result<()> {
        txn.commit()
    }

    fn dump(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.store.entries()
    }
}

/// Runs generic test functions once per backend:
/// `both_backends!(direct_chat, unread_drops_on_read);` makes
/// `mem::direct_chat`, `rocks::direct_chat`, ….
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod mem {
            $(#[test] fn $name() { super::$name::<chorus_projections::store::MemStore>() })*
        }
        mod rocks {
            $(#[test] fn $name() { super::$name::<$crate::support::backend::Rocks>() })*
        }
    };
}
