//! The sync shim and the launcher's "lose un-fsynced writes" fault together,
//! on real `dd` processes (no node runs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::path::Path;
use std::process::{Command, Stdio};

use chorus_testkit::cluster::{Cluster, ClusterSpec, SYNC_LOG_ENV};

fn dd(args: &[&str], shim: &Path, log: &Path) {
    let ok = Command::new("dd")
        .args(args)
        .env("LD_PRELOAD", shim)
        .env(SYNC_LOG_ENV, log)
        .stderr(Stdio::null())
        .status()
        .expect("run dd")
        .success();
    assert!(ok, "dd {args:?}");
}

/// The shim records what `fsync` covered, and `lose_unsynced` cuts each
/// write-ahead file back to it: an un-synced tail and a never-synced manifest
/// go, a table file stays.
#[tokio::test]
async fn un_fsynced_tails_of_write_ahead_files_are_lost() {
    let shim = chorus_jepsen::sync_shim().expect("the build script built the sync shim");
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ClusterSpec::new(dir.path(), "/nonexistent/chorus", 1);
    spec.sync_shim = Some(shim.clone());
    let mut cluster = Cluster::create(spec).await.unwrap();
    let node = cluster.node(1);
    let db = node.db_path();
    std::fs::create_dir_all(&db).unwrap();
    let db = std::fs::canonicalize(&db).unwrap();
    let (wal, manifest, sst) = (db.join("000007.log"), db.join("MANIFEST-000005"), db.join("000009.sst"));
    let log = node.sync_log_path();
    // 300 bytes written and fsynced, then 200 more without.
    dd(&["if=/dev/zero", &format!("of={}", wal.display()), "bs=100", "count=3", "conv=fsync"], &shim, &log);
    dd(
        &["if=/dev/zero", &format!("of={}", wal.display()), "bs=100", "count=2", "oflag=append", "conv=notrunc"],
        &shim,
        &log,
    );
    std::fs::write(&manifest, [1u8; 64]).unwrap();
    std::fs::write(&sst, [2u8; 80]).unwrap();
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), 500);

    let (files, bytes) = cluster.lose_unsynced(1).unwrap();
    assert_eq!((files, bytes), (2, 200 + 64));
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), 300);
    assert_eq!(std::fs::metadata(&manifest).unwrap().len(), 0);
    assert_eq!(std::fs::metadata(&sst).unwrap().len(), 80);
    // What survived is durable now: a second loss takes nothing more.
    assert_eq!(cluster.lose_unsynced(1).unwrap(), (0, 0));
}
