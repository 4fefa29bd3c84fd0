//! The cluster under test: `chorus log-node` processes on loopback, each behind
//! a [`Proxy`] on its Raft port so that links between nodes can be cut.
//!
//! Each node gets a directory (config, data, `node.log`), a certificate from
//! one CA and three addresses: its private Raft address (bound by the node),
//! its public Raft address (bound by its proxy, and the one every node's
//! `peers` names, so the replicated membership holds it) and its client API
//! address (reached directly: the workload's clients are never cut off from
//! a node, only nodes from each other). Faults act on real processes: `kill -9`,
//! `SIGSTOP` / `SIGCONT`, dropped datagrams.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chorus_log_node::config::{Peer, RaftConfig};
use chorus_log_node::network::tls::{self, Principal, Role, TlsPaths};
use chorus_projections::bus_auth::{self, Provisioned};

/// Most edges of a run (each has bus credentials made up front).
pub const EDGES_MAX: usize = 8;
use chorus_log_node::{ClientConfig, Config, LogClient};
use chorus_schema::NodeStatus;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::edges::EdgeProc;
use crate::error::{io, Error, Result};
use crate::proxy::{Links, Proxy, NODES_MAX};
use crate::services::{Nats, ProjectorProc};

/// What to launch.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub nodes: usize,
    pub partitions: u16,
    pub replication: usize,
    /// The cluster's directory; made if missing.
    pub dir: PathBuf,
    /// The `chorus` binary to run nodes with.
    pub binary: PathBuf,
    pub raft: RaftConfig,
    /// How long a node lets an append wait for its commit (then `Timeout`).
    pub append_timeout_ms: u64,
    /// `RUST_LOG` of the node processes.
    pub log_filter: String,
    /// Run nodes with this LD_PRELOAD shim recording what each fsync made
    /// durable (see [`crate::sync_shim`]); needed by [`Cluster::lose_unsynced`].
    pub sync_shim: Option<PathBuf>,
}

impl ClusterSpec {
    pub fn new(dir: impl Into<PathBuf>, binary: impl Into<PathBuf>, nodes: usize) -> Self {
        ClusterSpec {
            nodes,
            partitions: 8,
            replication: nodes.min(3),
            dir: dir.into(),
            binary: binary.into(),
            raft: RaftConfig::default(),
            append_timeout_ms: 3_000,
            log_filter: "info,openraft=warn,quinn=warn".into(),
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Stopped,
    Running,
    Paused,
}

/// One node process.
#[derive(Debug)]
pub struct NodeProc {
    pub id: u64,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub config: Config,
    child: Option<Child>,
    paused: bool,
}

impl NodeProc {
    /// The node's log file (stdout and stderr of every incarnation).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    /// The node's RocksDB directory.
    pub fn db_path(&self) -> PathBuf {
        self.config.data_dir.join("db")
    }

    /// Where the sync shim records what each fsync made durable.
    pub fn sync_log_path(&self) -> PathBuf {
        self.dir.join("synced.log")
    }

    fn state(&mut self) -> NodeState {
        let alive = match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        };
        match (alive, self.paused) {
            (false, _) => NodeState::Stopped,
            (true, true) => NodeState::Paused,
            (true, false) => NodeState::Running,
        }
    }
}

/// A launched cluster. Dropping it kills every node process and stops the proxies.
#[derive(Debug)]
pub struct Cluster {
    pub spec: ClusterSpec,
    pub nodes: Vec<NodeProc>,
    pub ca: PathBuf,
    /// An `edge` certificate of the cluster CA, for the workload's direct
    /// log clients (appends, reads).
    pub writer: TlsPaths,
    /// The edge CA: SDK clients verify the edges with it.
    pub edge_ca: PathBuf,
    /// The link rules every proxy obeys.
    pub links: Arc<Links>,
    _proxies: Vec<Proxy>,
    /// The bus, when the run checks views.
    pub nats: Option<Nats>,
    /// The bus credentials (with the nats-server).
    pub bus: Option<Provisioned>,
    /// The projector, when the run checks views.
    pub projector: Option<ProjectorProc>,
    /// The edges, when the workload runs through the SDK.
    pub edges: Vec<EdgeProc>,
    /// Nodes the harness gave up on (they refuse to start): waits and reads
    /// leave them out.
    pub excluded: BTreeSet<u64>,
}

fn free_udp_addr() -> Result<SocketAddr> {
    chorus_testkit::ports::free_addr().map_err(io("find a free UDP port on", "127.0.0.1"))
}

impl Cluster {
    /// Writes certificates and node configs under `spec.dir` and starts the
    /// proxies (no node is started).
    ///
    /// # Errors
    /// On IO failure or an invalid spec.
    pub async fn create(spec: ClusterSpec) -> Result<Cluster> {
        if spec.nodes == 0 || spec.nodes as u64 > NODES_MAX {
            return Err(Error::Invalid(format!("nodes must be 1..={NODES_MAX}, not {}", spec.nodes)));
        }
        std::fs::create_dir_all(&spec.dir).map_err(io("create", &spec.dir))?;
        let tls_dir = spec.dir.join("tls");
        let links = Arc::new(Links::default());
        let ids: Vec<u64> = (1..=spec.nodes as u64).collect();
        let mut private = BTreeMap::new();
        let mut client = BTreeMap::new();
        for id in &ids {
            private.insert(*id, free_udp_addr()?);
            client.insert(*id, free_udp_addr()?);
        }
        let sources: HashMap<SocketAddr, u64> = private.iter().map(|(id, a)| (*a, *id)).collect();
        let mut proxies = Vec::new();
        let mut peers = Vec::new();
        for id in &ids {
            let proxy =
                Proxy::start(*id, "127.0.0.1:0".parse().expect("literal"), private[id], sources.clone(), links.clone())
                    .await
                    .map_err(io("bind the raft proxy on", "127.0.0.1"))?;
            peers.push(Peer { id: *id, raft_addr: proxy.listen.to_string(), client_addr: client[id].to_string() });
            proxies.push(proxy);
        }
        let mut nodes = Vec::new();
        for id in &ids {
            let dir = spec.dir.join(format!("node-{id}"));
            std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
            let config = Config {
                id: *id,
                data_dir: dir.join("data"),
                raft_addr: private[id].to_string(),
                client_addr: client[id].to_string(),
                partitions: spec.partitions,
                groups: 0,
                replication: spec.replication,
                peers: peers.clone(),
                bootstrap: true,
                tls: Some(tls::issue(&tls_dir, &Principal::node(*id))?),
                raft: spec.raft.clone(),
                proposer: Default::default(),
                append_timeout_ms: spec.append_timeout_ms,
                verify_on_start: true,
            };
            config.validate()?;
            let config_path = dir.join("node.toml");
            let text =
                toml::to_string(&config).map_err(|e| Error::Encode { what: "node config", reason: e.to_string() })?;
            std::fs::write(&config_path, text).map_err(io("write", &config_path))?;
            nodes.push(NodeProc { id: *id, dir, config_path, config, child: None, paused: false });
        }
        let writer = tls::issue(&tls_dir, &Principal::new(Role::Edge, "jepsen")?)?;
        let edge_ca = tls_dir.join(format!("{}.pem", tls::EDGE_CA));
        Ok(Cluster {
            ca: tls_dir.join("ca.pem"),
            writer,
            edge_ca,
            spec,
            nodes,
            links,
            _proxies: proxies,
            nats: None,
            bus: None,
            projector: None,
            edges: Vec::new(),
            excluded: BTreeSet::new(),
        })
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// # Panics
    /// On an id that is not a node of the cluster (a harness bug).
    pub fn node(&self, id: u64) -> &NodeProc {
        self.nodes.iter().find(|n| n.id == id).expect("known node id")
    }

    fn node_mut(&mut self, id: u64) -> &mut NodeProc {
        self.nodes.iter_mut().find(|n| n.id == id).expect("known node id")
    }

    pub fn state(&mut self, id: u64) -> NodeState {
        self.node_mut(id).state()
    }

    /// Client API addresses of every node, in id order.
    pub fn client_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.config.client_addr.clone()).collect()
    }

    /// Starts node `id`'s process, appending to its log file. A node that is
    /// already running is left alone.
    ///
    /// # Errors
    /// When the process cannot be spawned.
    pub fn start(&mut self, id: u64) -> Result<()> {
        let binary = self.spec.binary.clone();
        let filter = self.spec.log_filter.clone();
        let shim = self.spec.sync_shim.clone();
        let n = self.node_mut(id);
        if n.state() != NodeState::Stopped {
            return Ok(());
        }
        let log_path = n.log_path();
        let log = File::options().create(true).append(true).open(&log_path).map_err(io("open", &log_path))?;
        let err_log = log.try_clone().map_err(io("open", &log_path))?;
        let mut command = Command::new(&binary);
        command
            .arg("log-node")
            .arg("--config")
            .arg(&n.config_path)
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log);
        if let Some(shim) = shim {
            command.env("LD_PRELOAD", shim).env("JEPSEN_SYNC_LOG", n.sync_log_path());
        }
        let child = command.spawn().map_err(io("spawn", &binary))?;
        n.child = Some(child);
        n.paused = false;
        Ok(())
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
        let n = self.node_mut(id);
        if let Some(mut c) = n.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        n.paused = false;
    }

    fn signal(&mut self, id: u64, signal: Signal) -> Result<bool> {
        let n = self.node_mut(id);
        let Some(child) = &n.child else { return Ok(false) };
        kill(Pid::from_raw(child.id() as i32), signal)
            .map_err(|e| Error::Cluster(format!("{signal} to node {id}: {e}")))?;
        Ok(true)
    }

    /// `SIGSTOP` node `id`. Returns whether it was running.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn pause(&mut self, id: u64) -> Result<bool> {
        if self.state(id) != NodeState::Running {
            return Ok(false);
        }
        self.signal(id, Signal::SIGSTOP)?;
        self.node_mut(id).paused = true;
        Ok(true)
    }

    /// `SIGCONT` node `id` if it is paused.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn resume(&mut self, id: u64) -> Result<()> {
        if self.state(id) == NodeState::Paused {
            self.signal(id, Signal::SIGCONT)?;
            self.node_mut(id).paused = false;
        }
        Ok(())
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
    /// `pick`. Four bytes in the middle half of the file are XORed with
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
            let at = rng.gen_range(len / 4..len * 3 / 4) as usize;
            bytes[at] ^= rng.gen_range(1..=255u8);
            offsets.push(at);
        }
        std::fs::write(path, &bytes).map_err(io("write", path))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(Some(format!("node {id}: flipped bytes of {name} ({len} bytes) at {offsets:?}")))
    }

    /// Starts a nats-server and a projector process tailing every node (for
    /// the views check and the bus nemeses).
    ///
    /// # Errors
    /// When either cannot be started.
    pub fn start_services(&mut self) -> Result<()> {
        // Bus credentials for the projector and up to EDGES_MAX edges.
        let tls_dir = self.spec.dir.join("tls");
        let edges: Vec<String> = (0..EDGES_MAX).map(|i| format!("edge-{i}")).collect();
        let bus = bus_auth::provision(&tls_dir, &["jepsen".to_owned()], &edges, &self.spec.dir.join("nats.conf"))
            .map_err(|e| Error::Cluster(format!("bus credentials: {e}")))?;
        let nats = Nats::start(&bus.conf, &self.spec.dir.join("nats.log"))?;
        let mut projector = ProjectorProc::create(
            &self.spec.dir.join("projector"),
            &self.spec.binary,
            self.client_addrs(),
            &tls_dir,
            &bus,
            nats.url(),
        )?;
        projector.start()?;
        self.bus = Some(bus);
        self.nats = Some(nats);
        self.projector = Some(projector);
        Ok(())
    }

    /// Starts `count` edge processes (after [`Cluster::start_services`]),
    /// each on its own UDP port, and waits until they listen.
    ///
    /// # Errors
    /// Without a bus, or when an edge does not come up.
    pub async fn start_edges(&mut self, count: usize, session: chorus_edge::session::Config) -> Result<()> {
        let nats_url =
            self.nats.as_ref().map(Nats::url).ok_or_else(|| Error::Invalid("edges need the nats-server".into()))?;
        let bus = self.bus.clone().ok_or_else(|| Error::Invalid("edges need the bus credentials".into()))?;
        if self.edges.len() + count > EDGES_MAX {
            return Err(Error::Invalid(format!("at most {EDGES_MAX} edges")));
        }
        for i in 0..count {
            let listen = free_udp_addr()?.to_string();
            let mut edge = EdgeProc::create(
                &self.spec.dir.join(format!("edge-{i}")),
                &self.spec.binary,
                i,
                listen,
                &self.spec.dir.join("tls"),
                self.client_addrs(),
                &bus,
                nats_url.clone(),
                session.clone(),
            )?;
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
            nats.restart()?;
        }
        if let Some(p) = &mut self.projector {
            p.start()?;
        }
        for e in &mut self.edges {
            e.start()?;
        }
        Ok(())
    }

    /// Connects a client through every node.
    ///
    /// # Errors
    /// When no node answers.
    pub async fn client(&self, config: ClientConfig) -> Result<LogClient> {
        Ok(LogClient::connect(&self.client_addrs(), &self.writer, config).await?)
    }

    /// The status of every node that answers within `timeout` (a paused or
    /// dead node does not).
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

    /// Waits until every node answers and every partition has a leader that
    /// says so itself; returns a client whose leader cache is fresh.
    ///
    /// # Errors
    /// When that does not happen within `timeout`.
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
                    if statuses.len() == self.counted() && led == self.spec.partitions as usize {
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
                        per.entry(p.partition.0).or_default().push(p.next_offset);
                    }
                }
            }
            // Every answering voter agrees, and every partition has a majority of them.
            let agreed = statuses.len() == self.counted()
                && per.len() == self.spec.partitions as usize
                && per.values().all(|v| v.len() > self.spec.replication / 2 && v.iter().all(|o| *o == v[0]));
            if agreed {
                return Ok(per.into_iter().map(|(p, v)| (p, v[0])).collect());
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
        self.nodes
            .iter()
            .map(|n| {
                (n.id, std::fs::read_to_string(n.log_path()).unwrap_or_default().matches("re-seed complete").count())
            })
            .filter(|(_, c)| *c > 0)
            .collect()
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
        let text = std::fs::read_to_string(self.node(id).log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in self.ids() {
            self.kill(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dd(args: &[&str], shim: &std::path::Path, log: &std::path::Path) {
        let ok = Command::new("dd")
            .args(args)
            .env("LD_PRELOAD", shim)
            .env("JEPSEN_SYNC_LOG", log)
            .stderr(Stdio::null())
            .status()
            .expect("run dd")
            .success();
        assert!(ok, "dd {args:?}");
    }

    /// The shim records what `fsync` covered (real `dd` processes), and
    /// `lose_unsynced` cuts each write-ahead file back to it: an un-synced
    /// tail and a never-synced manifest go, a table file stays.
    #[tokio::test]
    async fn un_fsynced_tails_of_write_ahead_files_are_lost() {
        let shim = crate::sync_shim().expect("the build script built the sync shim");
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
}
