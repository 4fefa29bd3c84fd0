//! Starting and stopping a log-node.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::path::Path;

use chorus_schema::{GroupId, Offset, PartitionId};
use openraft::SnapshotPolicy;
use tokio::sync::watch;

use super::api::{self, Api};
use super::proposer::Proposer;
use super::reseed::{self, Marker, Reseed};
use crate::config::Config;
use crate::network::raft::{self as raft_net, Network, Peers};
use crate::network::tls::{self, Identity};
use crate::placement::Placement;
use crate::store::{LogStore, StateMachine, Store};
use crate::types::{NodeAddr, Raft};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    #[error(transparent)]
    Tls(#[from] tls::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("binding {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("bad address {addr}: {reason}")]
    Addr { addr: String, reason: String },
    #[error("raft: {0}")]
    Raft(String),
    #[error("re-seed marker: {0}")]
    Marker(#[from] std::io::Error),
    #[error("no TLS material configured: set tls.ca, tls.cert and tls.key (issue them with `chorus certs --role node --name <id>`); only `chorus dev` makes its own")]
    NoTls,
    #[error("this is node {id} but its certificate names {principal}: issue one with `chorus certs --role node --name {id}`")]
    WrongIdentity { id: u64, principal: String },
}

/// A running log-node. Dropping it does not stop it: call [`Node::shutdown`].
#[derive(Clone)]
pub struct Node {
    pub id: u64,
    config: Arc<Config>,
    placement: Placement,
    /// By group.
    rafts: Arc<Vec<Raft>>,
    store: Arc<Store>,
    raft_endpoint: quinn::Endpoint,
    client_endpoint: quinn::Endpoint,
    /// By partition.
    offsets: Arc<Vec<watch::Receiver<Offset>>>,
    /// The first fatal failure: storage damage found outside a Raft core (a
    /// client read), or a group's Raft core that stopped.
    damage: Arc<watch::Sender<Damage>>,
    /// True once the node takes part in Raft as itself: at once after a normal
    /// start, after the re-seed when its store was damaged.
    reseeded: watch::Receiver<bool>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.id).finish_non_exhaustive()
    }
}

fn parse_addr(addr: &str) -> Result<SocketAddr, NodeError> {
    addr.parse().map_err(|e: std::net::AddrParseError| NodeError::Addr { addr: addr.into(), reason: e.to_string() })
}

fn raft_config(config: &Config) -> Result<Arc<openraft::Config>, NodeError> {
    let r = &config.raft;
    let c = openraft::Config {
        cluster_name: "chorus".into(),
        heartbeat_interval: r.heartbeat_ms,
        election_timeout_min: r.election_min_ms,
        election_timeout_max: r.election_max_ms,
        max_payload_entries: r.max_payload_entries,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(r.snapshot_after_logs),
        max_in_snapshot_log_to_keep: r.keep_logs_after_snapshot,
        install_snapshot_timeout: 10_000,
        snapshot_max_chunk_size: r.snapshot_chunk_bytes,
        ..Default::default()
    };
    Ok(Arc::new(c.validate().map_err(|e| NodeError::Raft(e.to_string()))?))
}

/// A start-up error; damage found this late marks the node for a re-seed at
/// its next start.
/// The first fatal failure of a node: the group (none for damage found by a
/// read) and why.
pub(crate) type Damage = Option<(Option<GroupId>, String)>;

fn damaged(config: &Config, why: String) -> NodeError {
    if reseed::is_corruption(&why) {
        if let Err(e) = Marker::mark(&config.data_dir, &why) {
            tracing::error!(error = %e, "could not mark the store for a re-seed");
        }
    }
    NodeError::Raft(why)
}

/// A node without peers (a single-node cluster) has nobody to re-seed from:
/// it refuses to start and leaves its store as it is.
fn no_peer_to_reseed_from(config: &Config, reason: &str) -> Result<(), NodeError> {
    if config.peers.iter().any(|p| p.id != config.id) {
        return Ok(());
    }
    Err(NodeError::Raft(format!("the store is damaged and this node has no peer to re-seed from: {reason}")))
}

/// Opens the store of `config`, moving a damaged one aside. Returns the
/// re-seed marker when the node must re-seed from its peers: a re-seed was
/// under way, RocksDB refused the store as corrupt, or a partition's log holds
/// less than the commit index it recorded.
async fn open_store(config: &Config) -> Result<(Arc<Store>, Option<Marker>), NodeError> {
    let dir: &Path = &config.data_dir;
    let db = dir.join("db");
    let mut marker = Marker::load(dir)?;
    if let Some(m) = &mut marker {
        no_peer_to_reseed_from(config, &m.reason)?;
        m.quarantine(dir, &db)?;
    }
    let store = match Store::open(&db) {
        Ok(store) => store,
        Err(e) if marker.is_none() && e.is_corruption() => {
            tracing::error!(error = %e, "the store is damaged");
            no_peer_to_reseed_from(config, &e.to_string())?;
            let mut m = Marker::new(e.to_string());
            m.save(dir)?;
            m.quarantine(dir, &db)?;
            return Ok((Store::open(&db)?, Some(m)));
        }
        Err(e) => return Err(e.into()),
    };
    if marker.is_some() {
        return Ok((store, marker));
    }
    let mut damage = None;
    if config.verify_on_start {
        match store.verify() {
            Ok(keys) => tracing::info!(keys, "store verified"),
            Err(e) if e.is_corruption() => damage = Some(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    for g in 0..config.group_count() {
        if damage.is_some() {
            break;
        }
        damage = LogStore::new(store.clone(), g).check().await.map_err(|e| NodeError::Raft(e.to_string()))?;
    }
    let Some(reason) = damage else { return Ok((store, None)) };
    tracing::error!(%reason, "the store is damaged");
    no_peer_to_reseed_from(config, &reason)?;
    let mut m = Marker::new(reason);
    m.save(dir)?;
    drop(store); // closes the database before it is moved
    m.quarantine(dir, &db)?;
    Ok((Store::open(&db)?, Some(m)))
}

impl Node {
    /// Opens the store, starts every partition group and both QUIC endpoints.
    ///
    /// # Errors
    /// On an invalid config, unreadable TLS material, a store that cannot be
    /// opened, or an address that cannot be bound.
    pub async fn start(config: Config) -> Result<Node, NodeError> {
        config.validate()?;
        let config = Arc::new(config);
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| NodeError::Bind { addr: config.data_dir.display().to_string(), source })?;
        // Never a silently minted CA: `chorus dev` issues its own material
        // and passes it like everyone else.
        let tls_paths = config.tls.clone().ok_or(NodeError::NoTls)?;
        let identity = Identity::load(&tls_paths)?;
        if identity.principal.node_id() != Some(config.id) {
            return Err(NodeError::WrongIdentity { id: config.id, principal: identity.principal.to_string() });
        }
        let (store, marker) = open_store(&config).await?;

        let raft_sock = parse_addr(&config.raft_addr)?;
        let mut raft_endpoint = quinn::Endpoint::server(identity.raft_server()?, raft_sock)
            .map_err(|source| NodeError::Bind { addr: config.raft_addr.clone(), source })?;
        let raft_client = identity.raft_client()?;
        raft_endpoint.set_default_client_config(raft_client.clone());
        let peers = Peers::new(raft_endpoint.clone(), raft_client);

        let rc = raft_config(&config)?;
        let placement = config.placement();
        let mut rafts = Vec::with_capacity(placement.groups() as usize);
        let mut offsets: Vec<Option<watch::Receiver<Offset>>> = vec![None; placement.partitions() as usize];
        for g in 0..placement.groups() {
            let group = GroupId(g);
            let log = LogStore::new(store.clone(), g);
            let sm = StateMachine::open(store.clone(), group, &placement.partitions_of(group), placement.partitions())
                .map_err(|e| damaged(&config, e.to_string()))?;
            for (p, rx) in sm.offsets() {
                // A partition past the placement's count stays `None`: refused below.
                if let Some(slot) = offsets.get_mut(p.0 as usize) {
                    *slot = Some(rx);
                }
            }
            let net = Network { group: g, peers: peers.clone() };
            let raft =
                Raft::new(config.id, rc.clone(), net, log, sm).await.map_err(|e| damaged(&config, e.to_string()))?;
            rafts.push(raft);
        }
        let offsets: Vec<watch::Receiver<Offset>> = offsets
            .into_iter()
            .collect::<Option<_>>()
            .ok_or_else(|| NodeError::Raft("the placement leaves a partition without a group".into()))?;
        let rafts = Arc::new(rafts);
        let proposers: Vec<Proposer> =
            rafts.iter().zip(0u16..).map(|(r, g)| Proposer::start(GroupId(g), r.clone(), &config.proposer)).collect();
        let (reseed_done, reseeded) = watch::channel(marker.is_none());
        if let Some(marker) = marker {
            // The Raft port opens once this node is no voter of a partition it
            // may have forgotten: see `reseed`. Never bootstrap an empty store.
            tracing::warn!(node = config.id, reason = %marker.reason, "storage was damaged: re-seeding from peers");
            let reseed = Reseed {
                config: config.clone(),
                rafts: rafts.clone(),
                raft_endpoint: raft_endpoint.clone(),
                tls: tls_paths.clone(),
                marker,
                done: reseed_done,
            };
            tokio::spawn(reseed.run());
        } else {
            tokio::spawn(raft_net::serve(raft_endpoint.clone(), rafts.clone()));
        }

        if config.bootstrap && *reseeded.borrow() {
            for g in 0..placement.groups() {
                let replicas = config.initial_replicas(g);
                if replicas.first().is_none_or(|r| r.id != config.id) {
                    continue;
                }
                let Some(raft) = rafts.get(g as usize) else { continue };
                if raft.is_initialized().await.map_err(|e| NodeError::Raft(e.to_string()))? {
                    continue;
                }
                let members: BTreeMap<u64, NodeAddr> = replicas
                    .iter()
                    .map(|r| (r.id, NodeAddr { raft_addr: r.raft_addr.clone(), client_addr: r.client_addr.clone() }))
                    .collect();
                raft.initialize(members).await.map_err(|e| NodeError::Raft(format!("initialize group {g}: {e}")))?;
            }
        }

        let client_sock = parse_addr(&config.client_addr)?;
        let client_endpoint = quinn::Endpoint::server(identity.log_server()?, client_sock)
            .map_err(|source| NodeError::Bind { addr: config.client_addr.clone(), source })?;
        let offsets = Arc::new(offsets);
        let damage = Arc::new(watch::channel(None).0);
        for (raft, g) in rafts.iter().zip(0u16..) {
            tokio::spawn(watch_core(config.id, GroupId(g), raft.clone(), damage.clone()));
        }
        crate::metrics::register(placement.groups());
        tokio::spawn(crate::metrics::sample(Arc::downgrade(&offsets)));
        let api = Arc::new(Api {
            damage: damage.clone(),
            promote_max_lag: config.raft.max_payload_entries,
            node_id: config.id,
            placement,
            rafts: rafts.clone(),
            proposers: Arc::new(proposers),
            store: store.clone(),
            offsets: offsets.clone(),
            append_timeout: Duration::from_millis(config.append_timeout_ms),
        });
        tokio::spawn(api::serve(client_endpoint.clone(), api));
        tracing::info!(
            node = config.id,
            raft = %config.raft_addr,
            client = %config.client_addr,
            partitions = config.partitions,
            groups = placement.groups(),
            "log-node started"
        );
        Ok(Node {
            id: config.id,
            config,
            placement,
            rafts,
            store,
            raft_endpoint,
            client_endpoint,
            offsets,
            damage,
            reseeded,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Resolves when the Raft core of any group has stopped (a storage error,
    /// a panic inside openraft) or a read found damaged storage: the node can
    /// no longer serve, and a process that stays up would look healthy to its
    /// peers and its supervisor. `chorus log-node` exits on it. Returns the
    /// group (none for damage found by a read) and why.
    ///
    /// When the cause is damaged storage, the node is marked for a re-seed
    /// from its peers at its next start (see [`reseed`](super::reseed)).
    pub async fn fatal(&self) -> (Option<GroupId>, String) {
        let mut damage = self.damage.subscribe();
        // Waited for `Some`: `None` only when the sender is gone.
        let first = match damage.wait_for(Option::is_some).await {
            Ok(first) => first.clone(),
            Err(_) => None,
        };
        let Some((group, why)) = first else { return std::future::pending().await };
        if reseed::is_corruption(&why) {
            if let Err(e) = Marker::mark(&self.config.data_dir, &why) {
                tracing::error!(error = %e, "could not mark the store for a re-seed");
            }
        }
        (group, why)
    }

    /// Whether the node is still re-seeding its damaged store from its peers.
    pub fn reseeding(&self) -> bool {
        !*self.reseeded.borrow()
    }

    /// Waits until the node is done re-seeding (at once if it never was).
    pub async fn wait_reseeded(&self) {
        let mut r = self.reseeded.clone();
        let _ = r.wait_for(|done| *done).await;
    }

    /// Raft group `group`.
    pub fn raft(&self, group: GroupId) -> Option<&Raft> {
        self.rafts.get(group.0 as usize)
    }

    /// Which group hosts which partition.
    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// The local address of the client API (useful with port 0).
    #[expect(clippy::expect_used, reason = "a bound endpoint has a local address")]
    pub fn client_addr(&self) -> SocketAddr {
        self.client_endpoint.local_addr().expect("bound endpoint has an address")
    }

    /// The local address of the Raft port.
    #[expect(clippy::expect_used, reason = "a bound endpoint has a local address")]
    pub fn raft_addr(&self) -> SocketAddr {
        self.raft_endpoint.local_addr().expect("bound endpoint has an address")
    }

    /// The next event offset of `partition` on this replica.
    pub fn next_offset(&self, partition: PartitionId) -> Option<Offset> {
        self.offsets.get(partition.0 as usize).map(|o| *o.borrow())
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Waits until every group that has this node as a voter has a leader.
    pub async fn wait_for_leaders(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let all = self.rafts.iter().all(|r| {
                let m = r.metrics().borrow().clone();
                let member = m.membership_config.membership().voter_ids().any(|v| v == self.id);
                !member || m.current_leader.is_some()
            });
            if all {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops serving and shuts every partition group down.
    pub async fn shutdown(self) {
        self.client_endpoint.close(0u32.into(), b"shutdown");
        for r in self.rafts.iter() {
            let _ = r.shutdown().await;
        }
        self.raft_endpoint.close(0u32.into(), b"shutdown");
        self.client_endpoint.wait_idle().await;
        // Wait (boundedly) for the partition tasks to release the store, so that
        // the directory can be opened again by the time this returns.
        let store = Arc::downgrade(&self.store);
        drop(self);
        for _ in 0..200 {
            if store.strong_count() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        tracing::info!("log-node stopped");
    }
}

/// Records the first failure of `group`'s Raft core in `damage`, and keeps
/// the group's Raft gauges ([`crate::metrics::RaftGauges`]). One task per
/// group, each woken only by its own group's metrics.
async fn watch_core(me: u64, group: GroupId, raft: Raft, damage: Arc<watch::Sender<Damage>>) {
    let mut metrics = raft.metrics();
    let mut gauges = crate::metrics::RaftGauges::new(group);
    let why = loop {
        let failed = {
            let m = metrics.borrow_and_update();
            gauges.update(me, &m);
            m.running_state.as_ref().err().map(ToString::to_string)
        };
        if let Some(why) = failed {
            break why;
        }
        if metrics.changed().await.is_err() {
            break "raft core stopped".to_string();
        }
    };
    damage.send_if_modified(|d| {
        if d.is_some() {
            return false;
        }
        *d = Some((Some(group), why));
        true
    });
}
