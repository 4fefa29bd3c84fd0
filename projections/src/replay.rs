//! Replay: rebuild views from the log into a fresh store (`chorus replay`),
//! and compare a rebuilt store with a live one, key by key (ARCHITECTURE.md invariant 6).
//!
//! # What a rebuild holds
//! - Every view ([`rebuild_from_log`]): a projector store like any other, at
//!   the end of the log as it was read; a projector may run on it and resume
//!   from its cursors.
//! - Some views ([`rebuild_views_from_log`] with fewer than [`Views::all`]):
//!   exactly those views' keys and the cursors. The views they read are folded
//!   too (a chat list needs the roster, see [`View::reads`]) and then deleted.
//!   The store carries the mark [`keys::partial`] from its first write on, and
//!   a projector refuses it ([`Error::PartialStore`]): resuming every view from
//!   cursors that only some views reached would corrupt the others.
//!
//! # Comparing
//! [`compare`] first checks that both stores are at the same cursors (the next
//! offset of every partition): a live projector that is behind or ahead of the
//! rebuild is [`Comparison::NotComparable`], not different. Then it walks each
//! view's key families through both stores in key order, lazily, and reports
//! the first key that differs. The pure part is [`first_difference`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use chorus_log_node::LogClient;
use chorus_schema::{EventRecord, Offset, PartitionId};
use tracing::{debug, info, warn};

use crate::projector::{task_failed, Error, Result};
use crate::store::{self, keys, put_value, RocksStore};
use crate::{Projection, View, Views};

/// Records read per request by [`rebuild_views_from_log`].
pub const REPLAY_READ_RECORDS: u32 = 1024;

/// Most records folded in one transaction of a rebuild.
pub const REPLAY_TXN_RECORDS: usize = 16 * 1024;

/// Reads a rebuild keeps ready ahead of its folds.
const REPLAY_READS_AHEAD: usize = 4;

/// What a rebuild did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Records folded, over every partition.
    pub records: u64,
    /// Transactions committed (up to [`REPLAY_TXN_RECORDS`] records each).
    pub batches: u64,
    /// The next offset of each partition after the replay (its end of log then).
    pub next_offsets: Vec<Offset>,
}

/// Builds every view from scratch: reads every partition of the log from
/// offset 0 (committed events only) and folds them into a fresh store in
/// `store_dir`, effects off. [`rebuild_views_from_log`] with [`Views::all`].
///
/// The result equals a live projector's views at the same offsets (ARCHITECTURE.md
/// invariant 6).
///
/// # Errors
/// As [`rebuild_views_from_log`].
pub async fn rebuild_from_log(client: &LogClient, store_dir: &Path) -> Result<ReplayStats> {
    rebuild_views_from_log(client, store_dir, Views::all()).await
}

/// Builds `views` from scratch into a fresh store in `store_dir` (see the
/// module docs for what it holds). The library behind `chorus replay --view`.
///
/// Reads go to each partition's leader (any node if unknown); retryable read
/// errors are retried with backoff for about a minute.
///
/// # Errors
/// [`Error::InvalidConfig`] if `views` is empty; [`Error::NotEmpty`] if the
/// directory holds a store with entries; [`Error::Log`] if reads keep
/// failing; [`Error::Store`], [`Error::Fold`].
pub async fn rebuild_views_from_log(client: &LogClient, store_dir: &Path, views: Views) -> Result<ReplayStats> {
    rebuild_views_with(client, store_dir, Projection::only(views), views).await
}

/// As [`rebuild_views_from_log`] with the deployment's contact-sync key
/// (`contact_index` hashes phones with it; see `crate::seal::ViewKey::contact_key`).
///
/// # Errors
/// As [`rebuild_views_from_log`].
pub async fn rebuild_views_with_contact_key(
    client: &LogClient,
    store_dir: &Path,
    views: Views,
    contact_key: [u8; 32],
) -> Result<ReplayStats> {
    rebuild_views_with(client, store_dir, Projection::only(views).with_contact_key(contact_key), views).await
}

async fn rebuild_views_with(
    client: &LogClient,
    store_dir: &Path,
    projection: Projection,
    views: Views,
) -> Result<ReplayStats> {
    if views == Views::default() {
        return Err(Error::InvalidConfig("no view to rebuild".into()));
    }
    let dir = store_dir.to_path_buf();
    let store = tokio::task::spawn_blocking(move || RocksStore::open(dir)).await.map_err(task_failed)??;
    if !store.is_empty()? {
        return Err(Error::NotEmpty { dir: store_dir.to_path_buf() });
    }
    if !views.is_all() {
        let mut txn = store.begin();
        put_value(&mut txn, &keys::partial(), &views.to_string());
        txn.commit()?;
    }
    // A reader task reads every partition in turn, a few batches ahead of
    // the folder, which folds them in transactions of up to
    // `REPLAY_TXN_RECORDS` records (fewer, larger commits; the transaction's
    // range cache serves a chat's roster once per transaction).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<EventRecord>>(REPLAY_READS_AHEAD);
    let reader = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut next_offsets = Vec::new();
            for p in 0..client.partitions() {
                let partition = PartitionId(p);
                let mut from = Offset(0);
                loop {
                    let (records, next) = read_with_retry(&client, partition, from).await?;
                    if records.is_empty() {
                        break;
                    }
                    if tx.send(records).await.is_err() {
                        // The folder failed; its error is the one to report.
                        return Ok(next_offsets);
                    }
                    from = next;
                }
                next_offsets.push(from);
                debug!(%partition, next = %from, "partition read");
            }
            Ok::<_, Error>(next_offsets)
        })
    };
    let folder = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || -> Result<(u64, u64)> {
            let (mut records, mut batches) = (0u64, 0u64);
            let mut next = rx.blocking_recv();
            while next.is_some() {
                let mut txn = store.begin();
                let mut in_txn = 0usize;
                while let Some(batch) = next.take() {
                    for r in &batch {
                        projection.apply(&mut txn, r, &mut Vec::new())?;
                    }
                    in_txn += batch.len();
                    records += batch.len() as u64;
                    next = rx.blocking_recv();
                    if in_txn >= REPLAY_TXN_RECORDS {
                        break;
                    }
                }
                txn.commit()?;
                batches += 1;
            }
            Ok((records, batches))
        })
    };
    let folded = folder.await.map_err(task_failed)?;
    let read = reader.await.map_err(task_failed)?;
    let (records, batches) = folded?;
    let stats = ReplayStats { records, batches, next_offsets: read? };
    // Drop the views that were folded only because the asked ones read them.
    let read_only: Vec<View> = projection.views().iter().filter(|v| !views.contains(*v)).collect();
    if !read_only.is_empty() {
        let store = store.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            for view in read_only {
                for tag in view.tags() {
                    store.delete_range(&[*tag], &[*tag + 1])?;
                }
            }
            Ok(())
        })
        .await
        .map_err(task_failed)??;
    }
    info!(%views, records = stats.records, dir = %store_dir.display(), "views rebuilt from the log");
    Ok(stats)
}

async fn read_with_retry(
    client: &LogClient,
    partition: PartitionId,
    from: Offset,
) -> Result<(Vec<EventRecord>, Offset)> {
    let mut attempt = 0u32;
    loop {
        let addr = client.leader_addr(partition);
        let result = match &addr {
            Some(addr) => client.read_from(addr, partition, from, REPLAY_READ_RECORDS).await,
            None => client.read(partition, from, REPLAY_READ_RECORDS).await,
        };
        match result {
            Ok(r) => return Ok(r),
            Err(e) if e.retryable() && attempt < 20 => {
                attempt += 1;
                warn!(%partition, %from, attempt, error = %e, "replay read failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt.min(30)))).await;
                client.refresh_leaders().await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

// ---- comparing ----------------------------------------------------------------

/// The outcome of [`compare`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Comparison {
    /// Same cursors, and every key of the views equal; `keys` entries compared.
    Equal { keys: u64 },
    /// The stores are at different offsets, so their views may rightly
    /// differ: the next offset to fold per partition (partitions never folded
    /// have none). Catch the projector up (or stop appending) and rebuild again.
    NotComparable { live: BTreeMap<PartitionId, u64>, rebuilt: BTreeMap<PartitionId, u64> },
    /// The first key, in key order, where the stores differ.
    Differs(Difference),
}

/// One key where two stores differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// The view that owns the key.
    pub view: View,
    pub key: Vec<u8>,
    /// The live store's value (`None`: the key is absent there).
    pub live: Option<Vec<u8>>,
    /// The rebuilt store's value (`None`: the key is absent there).
    pub rebuilt: Option<Vec<u8>>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Vec<u8>>| v.as_deref().map_or_else(|| "absent".to_string(), keys::display);
        write!(
            f,
            "view {}: key {}: live {}, rebuilt {}",
            self.view,
            keys::display(&self.key),
            show(&self.live),
            show(&self.rebuilt)
        )
    }
}

/// Compares the keys of `views` in `live` (a projector's store, e.g. opened
/// with [`RocksStore::open_read_only`]) and `rebuilt` (a rebuild of at least
/// those views), after checking that both are at the same cursors.
///
/// # Errors
/// [`Error::Store`] if either store fails or a cursor does not decode.
pub fn compare(live: &RocksStore, rebuilt: &RocksStore, views: Views) -> Result<Comparison> {
    let (live_at, rebuilt_at) = (cursors(live)?, cursors(rebuilt)?);
    if live_at != rebuilt_at {
        return Ok(Comparison::NotComparable { live: live_at, rebuilt: rebuilt_at });
    }
    let mut tags: Vec<(u8, View)> = views.iter().flat_map(|v| v.tags().iter().map(move |t| (*t, v))).collect();
    tags.sort_unstable();
    let mut compared = 0u64;
    for (tag, view) in tags {
        let (from, to) = ([tag], [tag + 1]);
        let (equal, difference) = first_difference(live.range(&from, &to), rebuilt.range(&from, &to))?;
        compared += equal;
        if let Some((key, live, rebuilt)) = difference {
            return Ok(Comparison::Differs(Difference { view, key, live, rebuilt }));
        }
    }
    Ok(Comparison::Equal { keys: compared })
}

fn cursors(store: &RocksStore) -> Result<BTreeMap<PartitionId, u64>> {
    let mut out = BTreeMap::new();
    for entry in store.range(&[keys::APPLIED], &[keys::APPLIED + 1]) {
        let (k, v) = entry?;
        let partition = k
            .get(1..3)
            .and_then(|b| b.try_into().ok())
            .map(|b: [u8; 2]| PartitionId(u16::from_be_bytes(b)))
            .ok_or_else(|| store::Error::Backend(format!("cursor key {} is malformed", keys::display(&k)).into()))?;
        out.insert(partition, store::decode(&k, &v)?);
    }
    Ok(out)
}

/// A key where two entry streams differ, with each side's value (`None`:
/// absent on that side).
pub type Mismatch = (Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>);

/// Walks two streams of entries, each sorted by key with unique keys, in
/// step: the number of equal entries before the first difference, and the
/// first key (in key order) that is in one stream only or has different
/// values (`None` if the streams are equal).
///
/// # Errors
/// The first error of either stream.
pub fn first_difference(
    mut a: impl Iterator<Item = store::Result<(Vec<u8>, Vec<u8>)>>,
    mut b: impl Iterator<Item = store::Result<(Vec<u8>, Vec<u8>)>>,
) -> store::Result<(u64, Option<Mismatch>)> {
    let mut equal = 0u64;
    let mut next_a = a.next().transpose()?;
    let mut next_b = b.next().transpose()?;
    loop {
        match (next_a, next_b) {
            (None, None) => return Ok((equal, None)),
            (Some((k, v)), None) => return Ok((equal, Some((k, Some(v), None)))),
            (None, Some((k, v))) => return Ok((equal, Some((k, None, Some(v))))),
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(&kb) {
                // `ka` is not in `b`: everything `b` has left is above it.
                std::cmp::Ordering::Less => return Ok((equal, Some((ka, Some(va), None)))),
                std::cmp::Ordering::Greater => return Ok((equal, Some((kb, None, Some(vb))))),
                std::cmp::Ordering::Equal if va != vb => return Ok((equal, Some((ka, Some(va), Some(vb))))),
                std::cmp::Ordering::Equal => {
                    equal += 1;
                    next_a = a.next().transpose()?;
                    next_b = b.next().transpose()?;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(pairs: &[(&str, &str)]) -> Vec<store::Result<(Vec<u8>, Vec<u8>)>> {
        pairs.iter().map(|(k, v)| Ok((k.as_bytes().to_vec(), v.as_bytes().to_vec()))).collect()
    }

    type Shown = (String, Option<String>, Option<String>);

    fn diff(a: &[(&str, &str)], b: &[(&str, &str)]) -> (u64, Option<Shown>) {
        let (n, d) = first_difference(entries(a).into_iter(), entries(b).into_iter()).unwrap();
        let s = |v: Vec<u8>| String::from_utf8(v).unwrap();
        (n, d.map(|(k, x, y)| (s(k), x.map(s), y.map(s))))
    }

    #[test]
    fn first_difference_finds_the_smallest_differing_key() {
        let base = [("a", "1"), ("c", "3"), ("e", "5")];
        assert_eq!(diff(&base, &base), (3, None));
        assert_eq!(diff(&[], &[]), (0, None));
        // A value differs.
        assert_eq!(
            diff(&base, &[("a", "1"), ("c", "X"), ("e", "5")]),
            (1, Some(("c".into(), Some("3".into()), Some("X".into()))))
        );
        // A key only on one side, in the middle, at the end, at the start.
        assert_eq!(diff(&base, &[("a", "1"), ("b", "2"), ("c", "3")]), (1, Some(("b".into(), None, Some("2".into())))));
        assert_eq!(diff(&base, &[("a", "1"), ("e", "5")]), (1, Some(("c".into(), Some("3".into()), None))));
        assert_eq!(diff(&base, &[("a", "1"), ("c", "3")]), (2, Some(("e".into(), Some("5".into()), None))));
        assert_eq!(diff(&[], &[("a", "1")]), (0, Some(("a".into(), None, Some("1".into())))));
    }

    #[test]
    fn first_difference_returns_errors() {
        let bad = vec![Ok((b"a".to_vec(), b"1".to_vec())), Err(store::Error::Backend("disk on fire".into()))];
        let good = entries(&[("a", "1"), ("b", "2")]);
        assert!(first_difference(bad.into_iter(), good.into_iter()).is_err());
    }

    #[test]
    fn differences_display_hex() {
        let d = Difference { view: View::Inbox, key: vec![0x60, 1], live: None, rebuilt: Some(vec![0xab]) };
        assert_eq!(d.to_string(), "view inbox: key 6001: live absent, rebuilt ab");
    }
}
