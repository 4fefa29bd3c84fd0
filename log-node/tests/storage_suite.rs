//! openraft's own storage conformance suite, run against the RocksDB store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use chorus_log_node::store::{LogStore, StateMachine, Store};
use chorus_log_node::types::{StorageError, TypeConfig};
use chorus_schema::{GroupId, PartitionId};
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open store");
        // Group 3 of 4, hosting partitions 3 and 7 of 8: keys of other groups
        // must not leak in.
        let log = LogStore::new(store.clone(), 3);
        let sm = StateMachine::open(store, GroupId(3), &[PartitionId(3), PartitionId(7)], 8)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn rocksdb_store_passes_openraft_suite() {
    Suite::test_all(RocksBuilder).expect("openraft storage suite");
}
