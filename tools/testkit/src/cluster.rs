//! The cluster launcher: `chorus log-node` processes on loopback, each with
//! its own directory (config, data, `node.log`), certificates from one CA and
//! ports from [`crate::ports`]; optionally the bus, a projector and edges
//! around them. `chorus cluster up`, `chorus bench`, the Jepsen harness and
//! the integration tests all launch with it.
//!
//! With [`ClusterSpec::proxies`], every node sits behind a [`Proxy`] on its
//! Raft port so that links between nodes can be cut ([`Cluster::links`]):
//! each node then has a private Raft address (bound by the node), a public
//! one (bound by its proxy, and the one every node's `peers` names, so the
//! replicated membership holds it) and its client API address (reached
//! directly: clients are never cut off from a node, only nodes from each
//! other). Faults act on real processes: `kill -9`, `SIGSTOP` / `SIGCONT`,
//! dropped datagrams, lost un-fsynced writes, flipped bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chorus_log_node::config::{Peer, ProposerConfig, RaftConfig};
use chorus_log_node::network::tls::{self, Principal, Role, TlsPaths};
use chorus_log_node::{ClientConfig, Config, LogClient};
use chorus_projections::bus_auth::{self, Provisioned};
use chorus_schema::NodeStatus;

use crate::error::{io, write_toml, Error, Result};
use crate::nats::NatsServer;
use crate::process::{ProcState, Process};
use crate::proxy::{Links, Proxy, NODES_MAX};
use crate::services::{edge_config, projector_config, EdgeProc, ProjectorProc};

/// Most edges of a cluster (each has bus credentials made up front).
pub const EDGES_MAX: usize = 8;

/// The environment variable naming the file where the sync shim records what
/// each fsync made durable (`shim/sync_shim.c` of the Jepsen harness).
pub const SYNC_LOG_ENV: &str = "JEPSEN_SYNC_LOG";

/// What to launch.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub nodes: usize,
    pub partitions: u16,
    /// Raft groups the partitions run on; 0: one per node.
    pub groups: u16,
    pub replication: usize,
    /// The cluster's directory; made if missing.
    pub dir: PathBuf,
    /// The `chorus` binary to run every process with.
    pub binary: PathBuf,
    pub raft: RaftConfig,
    pub proposer: ProposerConfig,
    /// How long a node lets an append wait for its commit (then `Timeout`).
    pub append_timeout_ms: u64,
    /// `RUST_LOG` of every process.
    pub log_filter: String,
    /// Put a UDP proxy in front of every node's Raft port, so that
    /// [`Cluster::links`] can cut links between nodes. At most
    /// [`NODES_MAX`] nodes, and no [`Cluster::add_node`].
    pub proxies: bool,
    /// Run nodes with this LD_PRELOAD shim recording what each fsync made
    /// durable; needed by [`Cluster::lose_unsynced`].
    pub sync_shim: Option<PathBuf>,
}

impl ClusterSpec {
    pub fn new(dir: impl Into<PathBuf>, binary: impl Into<PathBuf>, nodes: usize) -> Self {
        ClusterSpec {
            nodes,
            partitions: 16,
            groups: 0,
            replication: nodes.min(3),
            dir: dir.into(),
            binary: binary.into(),
            raft: RaftConfig::default(),
            proposer: ProposerConfig::default(),
            append_timeout_ms: Config::default().append_timeout_ms,
            log_filter: "info,openraft=warn,quinn=warn".into(),
            proxies: false,
            sync_shim: None,
        }
    }
}

/// Which kind of RocksDB file [`Cluster::corrupt`] damages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CorruptFile {
    Wal,
    Sst,
}

/// What a node process is doing.
pub type NodeState = ProcState;

/// One node process.
#[derive(Debug)]
pub struct NodeProc {
    pub id: u64,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub config: Config,
    pub process: Process,
}

impl NodeProc {
    /// The node's log file (stdout and stderr of every incarnation).
    pub fn log_path(&self) -> PathBuf {
        self.process.log_path().to_path_buf()
    }

    /// The node's RocksDB directory.
    pub fn db_path(&self) -> PathBuf {
        self.config.data_dir.join("db")
    }

    /// Where the sync shim records what each fsync made durable.
    pub fn sync_log_path(&self) -> PathBuf {
        self.dir.join("synced.log")
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }
}

/// A launched cluster. Dropping it kills every process and stops the proxies.
#[derive(Debug)]
pub struct Cluster {
    pub spec: ClusterSpec,
    pub nodes: Vec<NodeProc>,
    /// The cluster CA (log-node certificates).
    pub ca: PathBuf,
    /// An `edge` certificate of the cluster CA: appends, reads (what
    /// [`Cluster::client`] uses).
    pub writer: TlsPaths,
    /// An `operator` certificate of the cluster CA: membership changes, reads
    /// (what [`Cluster::admin`] uses).
    pub operator: TlsPaths,
    /// The edge CA: SDK clients verify the edges with it.
    pub edge_ca: PathBuf,
    /// The link rules every proxy obeys (no effect without proxies).
    pub links: Arc<Links>,
    /// Held for their lifetime: dropping one stops it.
    _proxies: Vec<Proxy>,
    /// The bus, after [`Cluster::start_services`].
    pub nats: Option<NatsServer>,
    /// The bus credentials (with the nats-server).
    pub bus: Option<Provisioned>,
    /// The projector, after [`Cluster::start_services`].
    pub projector: Option<ProjectorProc>,
    /// The edges, after [`Cluster::start_edges`].
    pub edges: Vec<EdgeProc>,
    /// Nodes the caller gave up on (they refuse to start): waits and reads
    /// leave them out.
    pub excluded: BTreeSet<u64>,
}

fn free_addr() -> Result<SocketAddr> {
    crate::ports::free_addr().map_err(io("find a free port on", "127.0.0.1"))
}

impl Cluster {
    /// Writes certificates and node configs under `spec.dir` and starts the
    /// proxies if the spec asks for them (no process is started).
    ///
    /// # Errors
    /// On IO failure or an invalid spec.
    pub async fn create(spec: ClusterSpec) -> Result<Cluster> {
        if spec.nodes == 0 || (spec.proxies && spec.nodes as u64 > NODES_MAX) {
            let max = if spec.proxies { format!("{NODES_MAX} with proxies") } else { "any".into() };
            return Err(Error::Invalid(format!("nodes must be 1..={max}, not {}", spec.nodes)));
        }
        std::fs::create_dir_all(&spec.dir).map_err(io("create", &spec.dir))?;
        let tls_dir = spec.dir.join("tls");
        let links = Arc::new(Links::default());
        let ids: Vec<u64> = (1..=spec.nodes as u64).collect();
        let mut private = BTreeMap::new();
        let mut client = BTreeMap::new();
        for id in &ids {
            private.insert(*id, free_addr()?);
            client.insert(*id, free_addr()?);
        }
        let sources: HashMap<SocketAddr, u64> = private.iter().map(|(id, a)| (*a, *id)).collect();
        let mut proxies = Vec::new();
        let mut peers = Vec::new();
        for (id, raft) in &private {
            let public = if spec.proxies {
                let proxy = Proxy::start(*id, free_addr()?, *raft, sources.clone(), links.clone())
                    .await
                    .map_err(io("bind the raft proxy on", "127.0.0.1"))?;
                let listen = proxy.listen;
                proxies.push(proxy);
                listen
            } else {
                *raft
            };
            let client_addr = client.get(id).map(ToString::to_string).unwrap_or_default();
            peers.push(Peer { id: *id, raft_addr: public.to_string(), client_addr });
        }
        let mut cluster = Cluster {
            ca: tls_dir.join("ca.pem"),
            writer: tls::issue(&tls_dir, &Principal::new(Role::Edge, "launcher")?)?,
            operator: tls::issue(&tls_dir, &Principal::new(Role::Operator, "launcher")?)?,
            edge_ca: tls_dir.join(format!("{}.pem", tls::EDGE_CA)),
            links,
            _proxies: proxies,
            nats: None,
            bus: None,
            projector: None,
            edges: Vec::new(),
            excluded: BTreeSet::new(),
            nodes: Vec::new(),
            spec,
        };
        for (p, raft) in peers.iter().zip(private.values()) {
            let config = Config {
                id: p.id,
                raft_addr: raft.to_string(),
                client_addr: p.client_addr.clone(),
                peers: peers.clone(),
                bootstrap: true,
                ..cluster.base_config()
            };
            cluster.add_proc(config)?;
        }
        Ok(cluster)
    }

    /// What every node's config shares.
    fn base_config(&self) -> Config {
        Config {
            partitions: self.spec.partitions,
            groups: self.spec.groups,
            replication: self.spec.replication,
            raft: self.spec.raft.clone(),
            proposer: self.spec.proposer.clone(),
            append_timeout_ms: self.spec.append_timeout_ms,
            ..Config::default()
        }
    }

    /// Issues the node's certificate, writes its config and adds it (stopped).
    fn add_proc(&mut self, mut config: Config) -> Result<()> {
        let dir = self.spec.dir.join(format!("node-{}", config.id));
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        config.data_dir = dir.join("data");
        config.tls = Some(tls::issue(&self.spec.dir.join("tls"), &Principal::node(config.id))?);
        if config.metrics_addr.is_none() {
            config.metrics_addr = Some(free_addr()?);
        }
        config.validate()?;
        let config_path = dir.join("node.toml");
        write_toml("node config", &config, &config_path)?;
        let mut process = Process::chorus(
            format!("log-node-{}", config.id),
            &self.spec.binary,
            "log-node",
            &config_path,
            dir.join("node.log"),
            &self.spec.log_filter,
        );
        if let Some(shim) = &self.spec.sync_shim {
            process.env("LD_PRELOAD", shim).env(SYNC_LOG_ENV, dir.join("synced.log"));
        }
        self.nodes.push(NodeProc { id: config.id, dir, config_path, config, process });
        Ok(())
    }

    /// Prepares one more node that joins no partition until it is added to one
    /// (see `Request::AddLearner`). Returns its id.
    ///
    /// # Errors
    /// On IO failure, or with proxies (their routes are fixed at creation).
    pub fn add_node(&mut self) -> Result<u64> {
        if self.spec.proxies {
            return Err(Error::Invalid("a cluster behind proxies cannot grow".into()));
        }
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        let mut peers: Vec<Peer> = self.nodes.first().map(|n| n.config.peers.clone()).unwrap_or_default();
        let me = Peer { id, raft_addr: free_addr()?.to_string(), client_addr: free_addr()?.to_string() };
        peers.push(me.clone());
        let config = Config {
            id,
            raft_addr: me.raft_addr,
            client_addr: me.client_addr,
            // It is in no initial replica set: `replication` counts only the
            // founders, and it never bootstraps.
            peers,
            bootstrap: false,
            ..self.base_config()
        };
        self.add_proc(config)?;
        Ok(id)
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// # Panics
    /// On an id that is not a node of the cluster (a caller's bug).
    #[allow(clippy::expect_used)]
    pub fn node(&self, id: u64) -> &NodeProc {
        self.nodes.iter().find(|n| n.id == id).expect("known node id")
    }

    /// # Panics
    /// As [`Cluster::node`].
    #[allow(clippy::expect_used)]
    pub fn node_mut(&mut self, id: u64) -> &mut NodeProc {
        self.nodes.iter_mut().find(|n| n.id == id).expect("known node id")
    }

    pub fn state(&mut self, id: u64) -> NodeState {
        self.node_mut(id).process.state()
    }

    /// Client API addresses of every node, in id order.
    pub fn client_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.config.client_addr.clone()).collect()
    }

    /// Starts node `id`'s process, appending to its log file. A node that is
    /// already alive is left alone.
    ///
    /// # Errors
    /// When the process cannot be spawned.
    pub fn start(&mut self, id: u64) -> Result<()> {
        self.node_mut(id).process.start().map(|_| ())
    }

    /// Starts every stopped node.
    ///
    /// # Errors
    /// As [`Cluster::start`].
    pub fn start_all(&mut self) -> Result<()> {
        for id in self.ids() {
            self.start(id)?;
        }
        Ok(())
    }

    /// `kill -9` node `id` (paused or not) and reaps it.
    pub fn kill(&mut self, id: u64) {
        self.node_mut(id).process.kill();
    }

    /// `SIGSTOP` node `id`. Returns whether it was running.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn pause(&mut self, id: u64) -> Result<bool> {
        self.node_mut(id).process.pause()
    }

    /// `SIGCONT` node `id` if it is paused.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn resume(&mut self, id: u64) -> Result<()> {
        self.node_mut(id).process.resume()
    }

    /// Peak resident set size of node `id`'s process, in KiB (Linux `VmHWM`).
    pub fn peak_rss_kib(&self, id: u64) -> Option<u64> {
        self.node(id).process.rss_kib().map(|(peak, _)| peak)
    }

    /// Makes stopped node `id` lose what it wrote but never fsynced, as a
    /// machine losing power would: every write-ahead file of its RocksDB
    /// (`*.log`, `MANIFEST-*`) is truncated to the size its last successful
    /// fsync covered, as recorded by the sync shim (a file never synced is
    /// emptied). What survives is recorded as durable, so that a later loss
    /// does not cut into it. Returns `(files cut, bytes dropped)`.
    ///
    /// # Errors
    /// When the node runs, the cluster has no sync shim, or on IO failure.
    pub fn lose_unsynced(&mut self, id: u64) -> Result<(usize, u64)> {
        if self.spec.sync_shim.is_none() {
            return Err(Error::Invalid("losing un-fsynced writes needs the sync shim".into()));
        }
        if self.state(id) != NodeState::Stopped {
            return Err(Error::Cluster(format!("node {id} must be stopped to lose its un-fsynced writes")));
        }
        let node = self.node(id);
        let log_path = node.sync_log_path();
        let db = node.db_path();
        let db = std::fs::canonicalize(&db).map_err(io("resolve", &db))?;
        let text = match std::fs::read_to_string(&log_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io("read", &log_path)(e)),
        };
        let mut synced: HashMap<PathBuf, u64> = HashMap::new();
        for line in text.lines() {
            if let Some((size, path)) = line.split_once(' ') {
                if let Ok(size) = size.parse::<u64>() {
                    let e = synced.entry(PathBuf::from(path)).or_default();
                    *e = (*e).max(size);
                }
            }
        }
        let (mut files, mut bytes) = (0, 0);
        let mut durable = String::new();
        for entry in std::fs::read_dir(&db).map_err(io("list", &db))? {
            let entry = entry.map_err(io("list", &db))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let len = entry.metadata().map_err(io("stat", &path))?.len();
            let ahead_log = name.ends_with(".log") || name.starts_with("MANIFEST-");
            let keep = synced.get(&path).copied().unwrap_or(0);
            if ahead_log && len > keep {
                let f = File::options().write(true).open(&path).map_err(io("open", &path))?;
                f.set_len(keep).map_err(io("truncate", &path))?;
                f.sync_all().map_err(io("sync", &path))?;
                files += 1;
                bytes += len - keep;
            }
            durable.push_str(&format!("{} {}\n", len.min(if ahead_log { keep } else { len }), path.display()));
        }
        let mut log = File::options().create(true).append(true).open(&log_path).map_err(io("open", &log_path))?;
        std::io::Write::write_all(&mut log, durable.as_bytes()).map_err(io("write", &log_path))?;
        Ok((files, bytes))
    }

    /// Flips bytes in one of stopped node `id`'s RocksDB files: the newest
    /// write-ahead log (`*.log`) or a table file (`*.sst`), chosen with
    /// `pick`; four bytes in the middle half of the file are XORed with
    /// non-zero values. Returns what was done, or `None` if the node has no
    /// such file.
    ///
    /// # Errors
    /// When the node runs, or on IO failure.
    pub fn corrupt(&mut self, id: u64, file: CorruptFile, pick: u64) -> Result<Option<String>> {
        use rand::{Rng, SeedableRng};
        if self.state(id) != NodeState::Stopped {
            return Err(Error::Cluster(format!("node {id} must be stopped to corrupt its files")));
        }
        let db = self.node(id).db_path();
        let mut candidates: Vec<(std::time::SystemTime, PathBuf, u64)> = Vec::new();
        for entry in std::fs::read_dir(&db).map_err(io("list", &db))? {
            let entry = entry.map_err(io("list", &db))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata().map_err(io("stat", entry.path()))?;
            let wanted = match file {
                CorruptFile::Wal => name.ends_with(".log"),
                CorruptFile::Sst => name.ends_with(".sst"),
            };
            if wanted && meta.len() >= 64 {
                candidates.push((meta.modified().map_err(io("stat", entry.path()))?, entry.path(), meta.len()));
            }
        }
        candidates.sort();
        let mut rng = rand::rngs::StdRng::seed_from_u64(pick);
        let chosen = match file {
            CorruptFile::Wal => candidates.last(),
            CorruptFile::Sst if candidates.is_empty() => None,
            CorruptFile::Sst => candidates.get(rng.gen_range(0..candidates.len())),
        };
        let Some((_, path, len)) = chosen else { return Ok(None) };
        let mut bytes = std::fs::read(path).map_err(io("read", path))?;
        let mut offsets = Vec::new();
        for _ in 0..4 {
            let at = usize::try_from(rng.gen_range(len / 4..len * 3 / 4)).unwrap_or(0);
            if let Some(b) = bytes.get_mut(at) {
                *b ^= rng.gen_range(1..=255u8);
                offsets.push(at);
            }
        }
        std::fs::write(path, &bytes).map_err(io("write", path))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(Some(format!("node {id}: flipped bytes of {name} ({len} bytes) at {offsets:?}")))
    }

    /// Provisions bus credentials (the projector and up to [`EDGES_MAX`]
    /// edges), starts a nats-server and a projector process tailing every
    /// node, and waits up to `timeout` for the projector to serve (it is left
    /// starting after that).
    ///
    /// # Errors
    /// When either cannot be started.
    pub async fn start_services(&mut self, timeout: Duration) -> Result<()> {
        let tls_dir = self.spec.dir.join("tls");
        let edges: Vec<String> = (0..EDGES_MAX).map(edge_name).collect();
        let bus = bus_auth::provision(
            &tls_dir,
            &[crate::services::PROJECTOR_NAME.to_owned()],
            &edges,
            &self.spec.dir.join("nats.conf"),
        )
        .map_err(|e| Error::Cluster(format!("bus credentials: {e}")))?;
        let nats = NatsServer::start_with(Some(&bus.conf), Some(&self.spec.dir.join("nats.log")))?;
        let dir = self.spec.dir.join("projector");
        let config = projector_config(&dir, self.client_addrs(), &tls_dir, &bus, &nats.url())?;
        let mut projector = ProjectorProc::create(&dir, &self.spec.binary, config, &self.spec.log_filter)?;
        self.bus = Some(bus);
        self.nats = Some(nats);
        projector.start_and_wait(timeout).await?;
        self.projector = Some(projector);
        Ok(())
    }

    /// Starts `count` more edge processes (after [`Cluster::start_services`]),
    /// each on its own UDP port with `template`'s tuning (see
    /// [`crate::services::edge_config`]), and waits until they listen.
    ///
    /// # Errors
    /// Without a bus, or when an edge does not come up within 30 s.
    pub async fn start_edges(&mut self, count: usize, template: &chorus_edge::Config) -> Result<()> {
        let nats_url = self
            .nats
            .as_ref()
            .map(NatsServer::url)
            .ok_or_else(|| Error::Invalid("edges need the nats-server".into()))?;
        let bus = self.bus.clone().ok_or_else(|| Error::Invalid("edges need the bus credentials".into()))?;
        if self.edges.len() + count > EDGES_MAX {
            return Err(Error::Invalid(format!("at most {EDGES_MAX} edges")));
        }
        let tls_dir = self.spec.dir.join("tls");
        for index in self.edges.len()..self.edges.len() + count {
            let name = edge_name(index);
            let dir = self.spec.dir.join(&name);
            let config =
                edge_config(template, &dir, &name, free_addr()?, &tls_dir, self.client_addrs(), &bus, &nats_url)?;
            let mut edge = EdgeProc::create(&dir, &self.spec.binary, index, config, &self.spec.log_filter)?;
            edge.start()?;
            self.edges.push(edge);
        }
        for edge in &mut self.edges {
            edge.wait_listening(1, Duration::from_secs(30)).await?;
        }
        Ok(())
    }

    /// The edges' client addresses, in index order.
    pub fn edge_addrs(&self) -> Vec<String> {
        self.edges.iter().map(|e| e.listen.clone()).collect()
    }

    /// Ends every fault: links heal, paused nodes continue, stopped nodes,
    /// the bus, the projector and the edges start.
    ///
    /// # Errors
    /// As [`Cluster::start`] and [`Cluster::resume`]; when the bus does not come back.
    pub fn heal(&mut self) -> Result<()> {
        self.links.heal();
        for id in self.ids() {
            self.resume(id)?;
            self.start(id)?;
        }
        if let Some(nats) = &mut self.nats {
            nats.ensure_running()?;
        }
        if let Some(p) = &mut self.projector {
            p.start()?;
        }
        for e in &mut self.edges {
            e.start()?;
        }
        Ok(())
    }

    /// Connects a client through every node, as an edge (appends, reads).
    ///
    /// # Errors
    /// When no node answers.
    pub async fn client(&self, config: ClientConfig) -> Result<LogClient> {
        Ok(LogClient::connect(&self.client_addrs(), &self.writer, config).await?)
    }

    /// Connects a client through every node, as an operator (membership
    /// changes, reads).
    ///
    /// # Errors
    /// When no node answers.
    pub async fn admin(&self, config: ClientConfig) -> Result<LogClient> {
        Ok(LogClient::connect(&self.client_addrs(), &self.operator, config).await?)
    }

    /// The `--ca/--cert/--key` arguments of `chorus log` as the operator.
    pub fn operator_args(&self) -> Vec<std::ffi::OsString> {
        let o = &self.operator;
        vec![
            "--ca".into(),
            o.ca.clone().into(),
            "--cert".into(),
            o.cert.clone().into(),
            "--key".into(),
            o.key.clone().into(),
        ]
    }

    /// The status of every node not excluded that answers within `timeout`
    /// (a paused or dead node does not).
    pub async fn statuses(&self, client: &LogClient, timeout: Duration) -> BTreeMap<u64, NodeStatus> {
        let asks = self.nodes.iter().filter(|n| !self.excluded.contains(&n.id)).map(|n| {
            let addr = n.config.client_addr.clone();
            let id = n.id;
            async move { (id, tokio::time::timeout(timeout, client.status(&addr)).await) }
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .filter_map(|(id, r)| match r {
                Ok(Ok(s)) => Some((id, s)),
                _ => None,
            })
            .collect()
    }

    /// The leader of `partition` according to the nodes that answer (the one
    /// with the highest term claiming it).
    pub async fn leader_of(&self, client: &LogClient, partition: u16) -> Option<u64> {
        let mut best: Option<(u64, u64)> = None;
        for (id, s) in self.statuses(client, Duration::from_millis(800)).await {
            if let Some(p) = s.partitions.iter().find(|p| p.partition.0 == partition) {
                if p.leader.map(|l| l.0) == Some(id) && best.is_none_or(|(t, _)| p.term > t) {
                    best = Some((p.term, id));
                }
            }
        }
        best.map(|(_, id)| id)
    }

    /// Waits until every node (not excluded) answers and every partition has
    /// a leader that says so itself; returns an edge client whose leader
    /// cache is fresh.
    ///
    /// # Errors
    /// When that does not happen within `timeout` (naming the silent nodes
    /// with the tail of their logs).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<LogClient> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last: String;
        loop {
            match self.client(ClientConfig::default()).await {
                Ok(client) => {
                    let statuses = self.statuses(&client, Duration::from_secs(1)).await;
                    // Partitions some node leads by its own account (a stale
                    // leader may still claim one that has a newer leader).
                    let led = statuses
                        .iter()
                        .flat_map(|(id, s)| s.partitions.iter().filter(|p| p.leader.map(|l| l.0) == Some(*id)))
                        .map(|p| p.partition.0)
                        .collect::<BTreeSet<u16>>()
                        .len();
                    if statuses.len() == self.counted() && led == usize::from(self.spec.partitions) {
                        client.refresh_leaders().await;
                        return Ok(client);
                    }
                    let silent: Vec<u64> = self
                        .ids()
                        .into_iter()
                        .filter(|id| !self.excluded.contains(id) && !statuses.contains_key(id))
                        .collect();
                    last = format!(
                        "{} of {} nodes answer, {led} of {} partitions have a leader{}",
                        statuses.len(),
                        self.counted(),
                        self.spec.partitions,
                        silent
                            .iter()
                            .map(|id| format!("\nnode {id} does not answer; its log ends:\n{}", self.log_tail(*id, 5)))
                            .collect::<String>()
                    );
                }
                Err(e) => last = e.to_string(),
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Cluster(format!("not ready after {timeout:?}: {last}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every replica of every partition has applied the same
    /// events (equal `next_offset` on all voters) and returns them per partition.
    ///
    /// # Errors
    /// When the replicas do not agree within `timeout`.
    pub async fn wait_converged(&self, client: &LogClient, timeout: Duration) -> Result<BTreeMap<u16, u64>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let statuses = self.statuses(client, Duration::from_secs(1)).await;
            let mut per: BTreeMap<u16, Vec<u64>> = BTreeMap::new();
            for s in statuses.values() {
                for p in &s.partitions {
                    if p.voters.contains(&s.node) {
                        per.entry(p.partition.0).or_default().push(p.next_offset.0);
                    }
                }
            }
            // Every answering voter agrees, and every partition has a majority of them.
            let agreed = statuses.len() == self.counted()
                && per.len() == usize::from(self.spec.partitions)
                && per.values().all(|v| v.len() > self.spec.replication / 2 && v.iter().all(|o| Some(o) == v.first()));
            if agreed {
                return Ok(per.into_iter().filter_map(|(p, v)| Some((p, *v.first()?))).collect());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Cluster(format!("replicas did not converge within {timeout:?}: {per:?}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Nodes re-seeding a damaged store from their peers (their data
    /// directory holds the re-seed marker).
    pub fn reseeding(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.config.data_dir.join(chorus_log_node::service::reseed::MARKER).exists())
            .map(|n| n.id)
            .collect()
    }

    /// How many re-seeds from its peers each node completed, from its log.
    pub fn reseeds(&self) -> BTreeMap<u64, usize> {
        self.nodes.iter().map(|n| (n.id, n.process.log_count("re-seed complete"))).filter(|(_, c)| *c > 0).collect()
    }

    /// Nodes not excluded.
    pub fn counted(&self) -> usize {
        self.nodes.len() - self.excluded.len()
    }

    /// Nodes whose process exited on its own (e.g. refused to start).
    pub fn exited(&mut self) -> Vec<u64> {
        let ids = self.ids();
        ids.into_iter().filter(|id| self.state(*id) == NodeState::Stopped).collect()
    }

    /// The tail of node `id`'s log file, for failure messages.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        self.node(id).process.log_tail(lines)
    }

    /// Where every chorus process of the cluster serves its Prometheus
    /// metrics (`http://<addr>/metrics`), named as in [`Cluster::server_pids`]:
    /// the log-nodes (`log-node-<id>`), the projector (`projector`) and the
    /// edges (`edge-<index>`). Each keeps its address across restarts.
    pub fn metrics_addrs(&self) -> Vec<(String, SocketAddr)> {
        let nodes = self.nodes.iter().filter_map(|n| Some((n.process.name.clone(), n.config.metrics_addr?)));
        let projector = self.projector.iter().filter_map(|p| Some((p.process.name.clone(), p.config.metrics_addr?)));
        let edges = self.edges.iter().filter_map(|e| Some((e.process.name.clone(), e.config.metrics_addr?)));
        nodes.chain(projector).chain(edges).collect()
    }

    /// Every server process, named, with its pid: log-nodes, the nats-server,
    /// the projector and the edges (for CPU accounting).
    pub fn server_pids(&self) -> Vec<(String, u32)> {
        let nodes = self.nodes.iter().map(|n| &n.process);
        let services = self.projector.iter().map(|p| &p.process).chain(self.edges.iter().map(|e| &e.process));
        let mut pids: Vec<(String, u32)> =
            nodes.chain(services).filter_map(|p| Some((p.name.clone(), p.pid()?))).collect();
        if let Some(pid) = self.nats.as_ref().and_then(NatsServer::pid) {
            pids.push(("nats-server".to_owned(), pid));
        }
        pids
    }
}

/// The name of edge `index` (its directory, certificate and bus user).
pub fn edge_name(index: usize) -> String {
    format!("edge-{index}")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for e in &mut self.edges {
            e.kill();
        }
        if let Some(p) = &mut self.projector {
            p.kill();
        }
        for id in self.ids() {
            self.kill(id);
        }
    }
}

/// The `chorus` binary next to the running executable (tests run from
/// `target/<profile>/deps`, the binary lives in `target/<profile>`); the
/// executable itself when there is none (it is `chorus`).
pub fn chorus_binary() -> PathBuf {
    let Ok(exe) = std::env::current_exe() else { return PathBuf::from("chorus") };
    let Some(dir) = exe.parent() else { return exe };
    for d in [dir, dir.parent().unwrap_or(dir)] {
        let p = d.join("chorus");
        if p.is_file() {
            return p;
        }
    }
    exe
}

/// Removes `dir` if it exists.
///
/// # Errors
/// When it cannot be removed.
pub fn clean_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io("remove", dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without proxies the peers name the nodes' own Raft addresses; with
    /// them, the proxies' (and the nodes bind elsewhere). A cluster behind
    /// proxies refuses to grow.
    #[tokio::test]
    async fn proxies_stand_between_the_peers() {
        let dir = tempfile::tempdir().unwrap();
        let plain =
            Cluster::create(ClusterSpec::new(dir.path().join("plain"), "/nonexistent/chorus", 3)).await.unwrap();
        for n in &plain.nodes {
            let me = n.config.peers.iter().find(|p| p.id == n.id).unwrap();
            assert_eq!(me.raft_addr, n.config.raft_addr);
            assert_eq!(me.client_addr, n.config.client_addr);
        }
        let mut spec = ClusterSpec::new(dir.path().join("proxied"), "/nonexistent/chorus", 3);
        spec.proxies = true;
        let mut proxied = Cluster::create(spec).await.unwrap();
        for n in &proxied.nodes {
            let me = n.config.peers.iter().find(|p| p.id == n.id).unwrap();
            assert_ne!(me.raft_addr, n.config.raft_addr, "node {} is reached directly", n.id);
        }
        assert!(matches!(proxied.add_node(), Err(Error::Invalid(_))));
        let mut plain = plain;
        let id = plain.add_node().unwrap();
        assert_eq!(id, 4);
        assert!(!plain.node(4).config.bootstrap);
        assert_eq!(plain.node(4).config.peers.len(), 4);
    }
}
