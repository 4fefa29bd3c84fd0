//! Storage of a log-node: one RocksDB instance holds every Raft group's log and
//! vote, and every partition's state records and applied events, in five
//! column families.
//!
//! Durability promises (what openraft relies on):
//! - [`LogStore::append`](log::LogStore) reports an append durable only after the
//!   WAL holding it was fsync'd. Appends from all groups are written without
//!   sync and handed to one [`Syncer`] thread that fsyncs the shared WAL once for
//!   every batch of waiting appends: group commit across groups.
//! - A vote is written with `sync = true` before `save_vote` returns.
//! - Applying a batch of entries writes its events through the WAL without
//!   waiting for an fsync. State records are written by checkpoints: the
//!   changes since the last one and the group's applied position (`SmMeta`) in
//!   one batch, then an fsync. After a crash the state is that of the last
//!   checkpoint, and openraft re-applies the durable log after it, rewriting the
//!   same events at the same offsets.
//! - A built snapshot names a checkpointed position, recorded after the
//!   checkpoint's fsync, so the log is never purged past what is on disk.
//!
//! The layout has a version ([`FORMAT_VERSION`], in the meta column family):
//! a store of another version is refused at open, never misread.

pub mod events;
pub mod keys;
pub mod log;
mod records;
pub mod state_machine;
pub mod syncer;
mod transfer;

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

pub use self::log::LogStore;
pub use self::state_machine::StateMachine;
pub use self::syncer::{Syncer, SyncerStats};

/// Column family of Raft log entries: `group ‖ index` → bincode(Entry).
pub const CF_LOG: &str = "log";
/// Column family of per-group Raft metadata (vote, committed, purged) and the
/// store's format version.
pub const CF_META: &str = "meta";
/// Column family of committed events: `partition ‖ offset` → encoded `EventRecord`.
pub const CF_EVENTS: &str = "events";
/// Column family of the latest built snapshot of each group: `group` →
/// bincode(version, SnapshotMeta).
pub const CF_SNAPSHOT: &str = "snapshot";
/// Column family of partition state records: `partition ‖ generation ‖ key`
/// → value (the key-value layout of `chorus_partition::kv`).
pub const CF_STATE: &str = "state";
/// Every column family.
pub const CFS: [&str; 5] = [CF_LOG, CF_META, CF_EVENTS, CF_SNAPSHOT, CF_STATE];

/// The version of the store's layout. 1 had one Raft group per partition
/// (keys by partition) and states in snapshots; 3 runs partitions on fewer
/// groups, with states as records in `CF_STATE`.
pub const FORMAT_VERSION: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt {what} in partition {partition}: {reason}")]
    Corrupt { what: &'static str, partition: u16, reason: String },
    #[error("the store at {path} has format {found}, this build reads format {FORMAT_VERSION}: move it aside (the node then re-seeds from its peers) or run the build that wrote it")]
    Format { path: String, found: u32 },
}

impl Error {
    /// Whether RocksDB found damaged files (rather than, say, a locked directory).
    pub fn is_corruption(&self) -> bool {
        match self {
            Error::Rocks(e) => e.kind() == rocksdb::ErrorKind::Corruption,
            Error::Corrupt { .. } => true,
            Error::Format { .. } => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The node's RocksDB instance and its WAL syncer, shared by all partitions.
pub struct Store {
    // Field order matters: the syncer (which holds a clone of the DB handle) is
    // dropped and joined first, so that the DB is closed when the store is dropped.
    syncer: Syncer,
    db: Arc<DB>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.db.path()).finish()
    }
}

impl Store {
    /// Opens (or creates) the store under `dir`.
    ///
    /// # Errors
    /// When RocksDB cannot open the directory (in use by another process, corrupt, …).
    pub fn open(dir: &Path) -> Result<Arc<Self>> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Many partitions write small batches concurrently: let RocksDB pipeline
        // WAL and memtable writes of concurrent writers.
        opts.set_enable_pipelined_write(true);
        // One writer inserts a whole batch into the memtables: sequentially,
        // each key from where the previous one went (batches are written in
        // key order), not from the top of the skip list as concurrent inserts
        // must (measured: the skip list was the node's largest cost).
        opts.set_allow_concurrent_memtable_write(false);
        opts.set_max_background_jobs(2);
        opts.set_max_total_wal_size(256 << 20);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // A torn record at the WAL's tail was never fsynced, so never
        // acknowledged: dropping it is safe. Corruption anywhere else would
        // silently drop acknowledged entries (RocksDB's default, point in time,
        // truncates there): refuse to open instead, so that a damaged node never
        // votes or serves with less than it acknowledged.
        opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
        opts.set_paranoid_checks(true);
        // Memory is bounded by configuration: the memtables below and one
        // shared block cache.
        let cache = rocksdb::Cache::new_lru_cache(64 << 20);
        let cf = |name: &str| {
            let mut o = Options::default();
            // Commands and events carry ciphertext, which does not compress:
            // LZ4 there only burns CPU at every flush and compaction.
            let compression = match name {
                CF_LOG | CF_EVENTS => rocksdb::DBCompressionType::None,
                _ => rocksdb::DBCompressionType::Lz4,
            };
            o.set_compression_type(compression);
            if name == CF_EVENTS {
                // Events are written once, never changed, and kept: universal
                // compaction rewrites them a few times in their life, where
                // leveled compaction merged every flush (whose keys span all
                // partitions) into an ever larger bottom level.
                o.set_compaction_style(rocksdb::DBCompactionStyle::Universal);
            }
            o.set_write_buffer_size(32 << 20);
            let mut t = rocksdb::BlockBasedOptions::default();
            t.set_block_cache(&cache);
            if name == CF_STATE {
                // Most reads of the state ask for a record that is not there
                // (a new command's dedup entry): bloom filters answer them
                // without reading blocks, in SST files and in the memtable.
                t.set_bloom_filter(10.0, false);
                t.set_cache_index_and_filter_blocks(true);
                // Partitioned: a lookup loads one 4 KiB filter partition, not
                // the whole filter of an SST file (10 bits a key: 4 MiB for a
                // file of 3M records). With whole filters the block cache
                // thrashed as the state grew, and each miss re-read and
                // checksummed megabytes: a node's appends slowed until its
                // AppendEntries timed out (found by `bench log --minutes`).
                t.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
                t.set_partition_filters(true);
                t.set_metadata_block_size(4096);
                t.set_pin_top_level_index_and_filter(true);
                t.set_pin_l0_filter_and_index_blocks_in_cache(true);
                o.set_memtable_prefix_bloom_ratio(0.05);
                o.set_memtable_whole_key_filtering(true);
            }
            o.set_block_based_table_factory(&t);
            ColumnFamilyDescriptor::new(name, o)
        };
        let db = DB::open_cf_descriptors(&opts, dir, CFS.map(cf))?;
        check_format(&db, dir)?;
        let db = Arc::new(db);
        let syncer = Syncer::start(db.clone());
        Ok(Arc::new(Store { syncer, db }))
    }

    /// The directory of the database (snapshot files are made there, unnamed).
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    pub fn db(&self) -> &DB {
        &self.db
    }

    #[expect(clippy::expect_used, reason = "column families are created at open and never dropped")]
    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        // Column families are created at open and never dropped.
        self.db.cf_handle(name).expect("column family exists")
    }

    pub(crate) fn syncer(&self) -> &Syncer {
        &self.syncer
    }

    /// Writes `batch` without waiting for an fsync.
    pub(crate) fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// Writes `batch` and fsyncs the WAL before returning.
    pub(crate) fn write_sync(&self, batch: WriteBatch) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// Reads every record of every column family, checking each block's
    /// checksum, so that damage anywhere shows now rather than at the first
    /// read of that block. Returns how many records were read.
    ///
    /// # Errors
    /// The first read error (`Corruption` for a damaged block).
    pub fn verify(&self) -> Result<u64> {
        let mut keys = 0;
        for name in CFS {
            let mut ro = rocksdb::ReadOptions::default();
            ro.set_verify_checksums(true);
            ro.fill_cache(false);
            for item in self.db.iterator_cf_opt(self.cf(name), ro, rocksdb::IteratorMode::Start) {
                item?;
                keys += 1;
            }
        }
        Ok(keys)
    }

    /// Counters of the group-commit syncer.
    pub fn syncer_stats(&self) -> SyncerStats {
        self.syncer.stats()
    }
}

/// Records the format of a new store, or checks that of an existing one. A
/// store without a format record but with Raft metadata was written by format 1.
fn check_format(db: &DB, dir: &Path) -> Result<()> {
    #[expect(clippy::expect_used, reason = "the DB was just opened with every column family, CF_META among them")]
    let meta = db.cf_handle(CF_META).expect("column family exists");
    let found = match db.get_cf(meta, keys::FORMAT)? {
        Some(v) => v.as_slice().try_into().map(u32::from_be_bytes).unwrap_or(0),
        None => {
            if db.iterator_cf(meta, rocksdb::IteratorMode::Start).next().is_some() {
                1
            } else {
                let mut wo = WriteOptions::default();
                wo.set_sync(true);
                db.put_cf_opt(meta, keys::FORMAT, FORMAT_VERSION.to_be_bytes(), &wo)?;
                FORMAT_VERSION
            }
        }
    };
    if found != FORMAT_VERSION {
        return Err(Error::Format { path: dir.display().to_string(), found });
    }
    Ok(())
}
