//! Invariant 6: views rebuilt from the log equal the live projector's.
//!
//! After the cluster has converged, the live projector (which ran through the
//! faults, and may have been killed mid-batch) must catch up with every
//! partition; it is then stopped and its store read entry by entry. A fresh
//! store is rebuilt from the log with `rebuild_views_with_contact_key` (effects off, the
//! live projector's contact key), and
//! the two are compared key by key ([`crate::checker::check_views`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chorus_log_node::LogClient;
use chorus_projections::store::RocksStore;
use chorus_projections::Projection;
use chorus_schema::{Offset, PartitionId};
use serde::Serialize;

use crate::checker::{check_views, Anomaly, Invariant};
use crate::error::{io, Error, Result};
use chorus_testkit::cluster::Cluster;

/// What the views check saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ViewsReport {
    pub live_entries: usize,
    pub rebuilt_entries: usize,
    /// From the start of the check until the live projector had folded every
    /// committed event (`None`: it never did within the timeout).
    pub caught_up_ms: Option<u64>,
}

/// Most differences listed one by one; the rest are counted in one anomaly.
const LISTED_MAX: usize = 50;

type Entries = Vec<(Vec<u8>, Vec<u8>)>;

fn open_entries(dir: &Path, partitions: u16) -> Result<(Entries, Vec<Offset>)> {
    let store = RocksStore::open(dir).map_err(|e| Error::Cluster(format!("open views in {}: {e}", dir.display())))?;
    let txn = store.read();
    let mut next = Vec::new();
    for p in 0..partitions {
        next.push(Projection::next_offset(&txn, PartitionId(p)).map_err(|e| Error::Cluster(e.to_string()))?);
    }
    drop(txn);
    let entries = store.entries().map_err(|e| Error::Cluster(e.to_string()))?;
    Ok((entries, next))
}

fn open_next(dir: &Path, partitions: u16) -> Result<Vec<Offset>> {
    let store = RocksStore::open(dir).map_err(|e| Error::Cluster(format!("open views in {}: {e}", dir.display())))?;
    let txn = store.read();
    (0..partitions)
        .map(|p| Projection::next_offset(&txn, PartitionId(p)).map_err(|e| Error::Cluster(e.to_string())))
        .collect()
}

/// Waits until the live projector has folded every event of `converged`
/// (next offset per partition) and leaves it running, serving view queries:
/// then the edges' syncs see the whole log. Returns how long that took
/// (`None`: not within `timeout`).
///
/// # Errors
/// When the harness has no projector, or it cannot be restarted.
pub async fn wait_caught_up(
    cluster: &mut Cluster,
    converged: &BTreeMap<u16, u64>,
    timeout: Duration,
) -> Result<Option<u64>> {
    let partitions = cluster.spec.partitions;
    let started = Instant::now();
    loop {
        let projector =
            cluster.projector.as_mut().ok_or_else(|| Error::Invalid("no projector runs in this cluster".into()))?;
        // Its store can be opened only while it is stopped.
        tokio::task::block_in_place(|| projector.stop(Duration::from_secs(5)));
        let dir = projector.config.store_dir.clone();
        let next = tokio::task::spawn_blocking(move || open_next(&dir, partitions))
            .await
            .map_err(|e| Error::Cluster(format!("reading the live views: {e}")))??;
        projector.start_and_wait(Duration::from_secs(30)).await?;
        let behind = converged.iter().any(|(p, n)| {
            next.get(*p as usize).copied().unwrap_or(chorus_schema::Offset(0)) < chorus_schema::Offset(*n)
        });
        if !behind {
            return Ok(Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)));
        }
        if started.elapsed() > timeout {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn no_projector() -> Error {
    Error::Invalid("no projector runs in this cluster".into())
}

fn as_map(entries: &Entries) -> BTreeMap<String, serde_json::Value> {
    entries.iter().map(|(k, v)| (hex::encode(k), serde_json::Value::String(hex::encode(v)))).collect()
}

/// Lets the live projector catch up with `converged` (next offset per
/// partition), stops it, rebuilds the views from the log into `work_dir`
/// and compares.
///
/// # Errors
/// When the harness has no projector, or a store cannot be opened or rebuilt.
pub async fn check(
    cluster: &mut Cluster,
    client: &LogClient,
    converged: &BTreeMap<u16, u64>,
    work_dir: &Path,
    timeout: Duration,
) -> Result<(Vec<Anomaly>, ViewsReport)> {
    let partitions = cluster.spec.partitions;
    let started = Instant::now();
    let mut report = ViewsReport::default();
    let mut anomalies = Vec::new();
    let store_dir = match &cluster.projector {
        Some(p) => p.config.store_dir.clone(),
        None => return Err(no_projector()),
    };
    let live = loop {
        let projector = cluster.projector.as_mut().ok_or_else(no_projector)?;
        tokio::task::block_in_place(|| projector.stop(Duration::from_secs(5)));
        let dir = store_dir.clone();
        let (entries, next) = tokio::task::spawn_blocking(move || open_entries(&dir, partitions))
            .await
            .map_err(|e| Error::Cluster(format!("reading the live views: {e}")))??;
        let behind: Vec<(u16, u64, u64)> = converged
            .iter()
            .filter(|(p, n)| next.get(**p as usize).copied().unwrap_or_default() < Offset(**n))
            .map(|(p, n)| (*p, next.get(*p as usize).copied().unwrap_or_default().0, *n))
            .collect();
        if behind.is_empty() {
            report.caught_up_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
            break entries;
        }
        if started.elapsed() > timeout {
            anomalies.push(Anomaly {
                invariant: Invariant::Views,
                chat: None,
                detail: format!(
                    "the live projector did not catch up within {timeout:?}: (partition, folded, committed) {behind:?}"
                ),
            });
            break entries;
        }
        cluster.projector.as_mut().ok_or_else(no_projector)?.start()?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    report.live_entries = live.len();

    let rebuilt_dir = work_dir.join("rebuilt-views");
    if rebuilt_dir.exists() {
        std::fs::remove_dir_all(&rebuilt_dir).map_err(io("remove", &rebuilt_dir))?;
    }
    // The contact index hashes phones with the deployment's key (derived from
    // the view key): the rebuild uses the live projector's.
    let view_key = &cluster.projector.as_ref().ok_or_else(no_projector)?.config.view_key;
    let contact_key = chorus_projections::seal::ViewKey::load(view_key)
        .map_err(|e| Error::Cluster(format!("the projector's view key: {e}")))?
        .contact_key();
    chorus_projections::rebuild_views_with_contact_key(
        client,
        &rebuilt_dir,
        chorus_projections::Views::all(),
        contact_key,
    )
    .await
    .map_err(|e| Error::Cluster(format!("rebuilding the views from the log: {e}")))?;
    let dir = rebuilt_dir.clone();
    let (rebuilt, _) = tokio::task::spawn_blocking(move || open_entries(&dir, partitions))
        .await
        .map_err(|e| Error::Cluster(format!("reading the rebuilt views: {e}")))??;
    report.rebuilt_entries = rebuilt.len();

    let mut diffs = check_views(&as_map(&live), &as_map(&rebuilt));
    if diffs.len() > LISTED_MAX {
        let more = diffs.len() - LISTED_MAX;
        diffs.truncate(LISTED_MAX);
        diffs.push(Anomaly {
            invariant: Invariant::Views,
            chat: None,
            detail: format!("… and {more} more differing keys"),
        });
    }
    anomalies.extend(diffs);
    Ok((anomalies, report))
}
