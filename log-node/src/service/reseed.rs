//! Re-seeding a node whose storage is damaged, from its peers.
//!
//! A node that finds its RocksDB corrupt (RocksDB refuses to open it, a read
//! fails its checksum, or the log is shorter than the commit index the node
//! itself recorded) cannot be trusted with its own state: serving it would
//! spread bad data, and voting with a log that lost acknowledged entries could
//! elect a leader without them. Raft's safety rests on a voter never forgetting
//! what it acknowledged, so such a node must stop being a voter *before* it
//! takes part in Raft again. The procedure:
//!
//! 1. **Mark.** A `RESEED` file in the data directory records why (written
//!    atomically, fsynced). From here on every start resumes the procedure.
//! 2. **Quarantine.** The damaged `db` directory is renamed `db.corrupt-<ms>`
//!    (kept for inspection) and an empty store is opened.
//! 3. **Step down**, with the Raft port still closed: for every Raft group whose
//!    leader lists this node as a voter, the leader removes it (`RemoveVoter`).
//!    Until that change commits the node stays silent, so its empty log can
//!    neither vote nor count toward a commit; the remaining voters commit the
//!    change only among themselves, and every later candidate must win their
//!    votes, which they refuse to a log without the committed entries.
//! 4. **Catch up and return.** The Raft port opens; the leader adds the node as
//!    a learner (`AddLearner`, which waits until the learner is up to date,
//!    through a snapshot if its log was purged), then promotes it
//!    (`PromoteLearner`). Each group done is recorded in the marker.
//! 5. The marker is removed.
//!
//! A node killed anywhere in this resumes at its next start: removing a voter
//! that is not one, adding a learner that is one and promoting a voter are all
//! no-ops. If the remaining voters cannot commit the removal (too many of them
//! are down), the node waits: re-seeding never trades safety for availability.
//!
//! Left out: a corrupt byte in the very last WAL records looks to RocksDB like
//! a torn, never-synced write and is dropped silently; the commit-index check
//! catches that only when a later commit record survived.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chorus_schema::{GroupId, NodeId, Request};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::client::{ClientConfig, LogClient};
use crate::config::Config;
use crate::network::raft as raft_net;
use crate::types::Raft;

/// Name of the marker file in the data directory.
pub const MARKER: &str = "RESEED";

/// Whether a storage error message is RocksDB reporting damaged files (its
/// `Status::ToString` prefix), as opposed to a full disk or a bad request.
pub fn is_corruption(message: &str) -> bool {
    message.contains("Corruption:")
}

/// The progress of a re-seed, kept in [`MARKER`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// Why the node is re-seeded.
    pub reason: String,
    /// When the damage was found (ms since the Unix epoch).
    pub since_ms: u64,
    /// Where the damaged store was moved; `None` until it was.
    pub quarantined: Option<PathBuf>,
    /// The Raft groups whose voters held this node when the procedure began;
    /// `None` until the leaders were asked.
    pub groups: Option<BTreeSet<u16>>,
    /// Groups that are back: caught up and voters again.
    pub done: BTreeSet<u16>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Marker {
    pub fn new(reason: impl Into<String>) -> Marker {
        Marker { reason: reason.into(), since_ms: now_ms(), ..Marker::default() }
    }

    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(MARKER)
    }

    /// The marker of `data_dir`, if a re-seed is under way.
    ///
    /// # Errors
    /// When the file exists but cannot be read or parsed.
    pub fn load(data_dir: &Path) -> std::io::Result<Option<Marker>> {
        match std::fs::read(Self::path(data_dir)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the marker durably (temporary file, fsync, rename, fsync of the directory).
    ///
    /// # Errors
    /// On IO failure.
    pub fn save(&self, data_dir: &Path) -> std::io::Result<()> {
        let tmp = data_dir.join(format!("{MARKER}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, Self::path(data_dir))?;
        sync_dir(data_dir)
    }

    /// Records that the store of `data_dir` is damaged, unless a re-seed is
    /// already under way (its progress is kept).
    ///
    /// # Errors
    /// On IO failure.
    pub fn mark(data_dir: &Path, reason: &str) -> std::io::Result<()> {
        if Self::load(data_dir)?.is_some() {
            return Ok(());
        }
        tracing::error!(reason, "storage is damaged: this node will re-seed from its peers at its next start");
        Marker::new(reason).save(data_dir)
    }

    /// Removes the marker: the re-seed is complete.
    ///
    /// # Errors
    /// On IO failure.
    pub fn clear(data_dir: &Path) -> std::io::Result<()> {
        std::fs::remove_file(Self::path(data_dir))?;
        sync_dir(data_dir)
    }

    /// Moves the damaged store aside (if not done yet) and records where.
    ///
    /// # Errors
    /// On IO failure.
    pub fn quarantine(&mut self, data_dir: &Path, db: &Path) -> std::io::Result<()> {
        if self.quarantined.is_some() {
            return Ok(());
        }
        let to = data_dir.join(format!("db.corrupt-{}", now_ms()));
        if db.exists() {
            std::fs::rename(db, &to)?;
            sync_dir(data_dir)?;
            tracing::warn!(from = %db.display(), to = %to.display(), "damaged store quarantined");
        }
        self.quarantined = Some(to);
        self.save(data_dir)
    }
}

/// What the re-seed needs of the starting node.
pub(crate) struct Reseed {
    pub config: Arc<Config>,
    pub rafts: Arc<Vec<Raft>>,
    pub raft_endpoint: quinn::Endpoint,
    /// The cluster CA, to reach the peers' client API.
    pub tls: crate::network::tls::TlsPaths,
    pub marker: Marker,
    pub done: watch::Sender<bool>,
}

const RETRY: Duration = Duration::from_millis(500);

impl Reseed {
    /// Runs the procedure to its end (retrying every step until it succeeds),
    /// then opens the Raft port for good.
    pub(crate) async fn run(mut self) {
        let me = self.config.id;
        let dir = self.config.data_dir.clone();
        let client = self.connect().await;
        let groups = match self.marker.groups.clone() {
            Some(g) => g,
            None => {
                let g = self.voter_groups(&client).await;
                self.marker.groups = Some(g.clone());
                self.save(&dir);
                g
            }
        };
        let todo: Vec<u16> = groups.difference(&self.marker.done).copied().collect();
        tracing::warn!(node = me, groups = ?todo, "re-seeding: stepping down as voter");
        for &g in &todo {
            let group = GroupId(g);
            let remove = Request::RemoveVoter { group, node: NodeId(me) };
            self.retry("remove voter", g, || client.admin(group, &remove)).await;
        }
        // Not a voter of any group still to do: safe to take part again.
        tokio::spawn(raft_net::serve(self.raft_endpoint.clone(), self.rafts.clone()));
        let (raft_addr, client_addr) = self.own_addrs();
        for &g in &todo {
            let group = GroupId(g);
            let add = Request::AddLearner {
                group,
                node: NodeId(me),
                raft_addr: raft_addr.clone(),
                client_addr: client_addr.clone(),
            };
            self.retry("add learner", g, || client.admin(group, &add)).await;
            let promote = Request::PromoteLearner { group, node: NodeId(me) };
            self.retry("promote", g, || client.admin(group, &promote)).await;
            self.marker.done.insert(g);
            self.save(&dir);
            tracing::info!(node = me, group = g, "re-seeded group");
        }
        if let Err(e) = Marker::clear(&dir) {
            tracing::error!(error = %e, "removing the re-seed marker");
        }
        tracing::warn!(node = me, groups = todo.len(), "re-seed complete");
        metrics::counter!(crate::metrics::RESEEDS_TOTAL).increment(1);
        let _ = self.done.send(true);
    }

    fn save(&self, dir: &Path) {
        // A marker that cannot be written is retried by the next step's save;
        // losing progress only repeats idempotent steps.
        if let Err(e) = self.marker.save(dir) {
            tracing::error!(error = %e, "saving the re-seed marker");
        }
    }

    /// The addresses the cluster knows this node by (its `peers` entry).
    fn own_addrs(&self) -> (String, String) {
        let c = &self.config;
        c.peers.iter().find(|p| p.id == c.id).map_or_else(
            || (c.raft_addr.clone(), c.client_addr.clone()),
            |p| (p.raft_addr.clone(), p.client_addr.clone()),
        )
    }

    /// The client API addresses of the other nodes.
    fn peer_addrs(&self) -> Vec<String> {
        let c = &self.config;
        c.peers.iter().filter(|p| p.id != c.id).map(|p| p.client_addr.clone()).collect()
    }

    async fn connect(&self) -> LogClient {
        let seeds = self.peer_addrs();
        loop {
            match LogClient::connect(&seeds, &self.tls, ClientConfig::default()).await {
                Ok(client) => return client,
                Err(e) => tracing::warn!(error = %e, "re-seeding: no peer answers yet"),
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// The groups whose leader lists this node as a voter. Waits until every
    /// group has a leader that answers.
    async fn voter_groups(&self, client: &LogClient) -> BTreeSet<u16> {
        let me = self.config.id;
        let peers = self.peer_addrs();
        loop {
            // The view of each group's leader with the highest term.
            let mut views: Vec<Option<(u64, bool)>> = vec![None; self.rafts.len()];
            for addr in &peers {
                let Ok(status) = client.status(addr).await else { continue };
                for gs in &status.groups {
                    let Some(view) = views.get_mut(gs.group.0 as usize) else { continue };
                    if gs.leader == Some(status.node) && view.is_none_or(|(t, _)| gs.term > t) {
                        *view = Some((gs.term, gs.voters.iter().any(|v| v.0 == me)));
                    }
                }
            }
            if views.iter().all(Option::is_some) {
                return views
                    .iter()
                    .zip(0u16..)
                    .filter(|(v, _)| v.is_some_and(|(_, voter)| voter))
                    .map(|(_, g)| g)
                    .collect();
            }
            let missing: Vec<usize> = views.iter().enumerate().filter(|(_, v)| v.is_none()).map(|(g, _)| g).collect();
            tracing::warn!(?missing, "re-seeding: waiting for every group to have a leader");
            tokio::time::sleep(RETRY).await;
        }
    }

    async fn retry<F, Fut>(&self, what: &str, group: u16, mut step: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = crate::client::Result<()>>,
    {
        loop {
            match step().await {
                Ok(()) => return,
                Err(e) => tracing::warn!(group, step = what, error = %e, "re-seeding: retrying"),
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_survives_a_restart_and_keeps_its_progress() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Marker::load(dir.path()).unwrap(), None);
        Marker::mark(dir.path(), "Corruption: checksum mismatch").unwrap();
        let mut m = Marker::load(dir.path()).unwrap().expect("marked");
        assert_eq!(m.reason, "Corruption: checksum mismatch");
        m.groups = Some(BTreeSet::from([0, 2]));
        m.done.insert(0);
        m.save(dir.path()).unwrap();
        // Damage found again while re-seeding does not reset the progress.
        Marker::mark(dir.path(), "Corruption: again").unwrap();
        assert_eq!(Marker::load(dir.path()).unwrap(), Some(m));
        Marker::clear(dir.path()).unwrap();
        assert_eq!(Marker::load(dir.path()).unwrap(), None);
    }

    #[test]
    fn quarantine_moves_the_store_aside_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        std::fs::write(db.join("000004.log"), b"damaged").unwrap();
        let mut m = Marker::new("Corruption: test");
        m.quarantine(dir.path(), &db).unwrap();
        let to = m.quarantined.clone().expect("recorded");
        assert!(!db.exists(), "the damaged store is gone from its place");
        assert_eq!(std::fs::read(to.join("000004.log")).unwrap(), b"damaged");
        assert_eq!(Marker::load(dir.path()).unwrap().and_then(|m| m.quarantined), Some(to.clone()));
        // A second call (a restart) leaves the fresh store alone.
        std::fs::create_dir(&db).unwrap();
        m.quarantine(dir.path(), &db).unwrap();
        assert!(db.exists());
        assert_eq!(m.quarantined, Some(to));
    }

    #[test]
    fn only_rocksdb_damage_counts_as_corruption() {
        assert!(is_corruption("raft: when Read Logs: rocksdb::Error: Corruption: block checksum mismatch"));
        assert!(!is_corruption("rocksdb: IO error: No space left on device"));
        assert!(!is_corruption("rocksdb: IO error: lock hold by current process"));
    }
}
