//! A whole chorus deployment on this machine, every part its own OS process:
//! a log cluster, a `nats-server`, a `chorus projector` and `chorus edge`s,
//! all started by the [`Cluster`] launcher. The end-to-end tests and
//! `chorus bench e2e` use it.

use std::path::PathBuf;
use std::time::Duration;

use chorus_client::{Client, ClientConfig, Credentials, Event, Resume};
use chorus_log_node::LogClient;
use chorus_schema::{EventRecord, Key, Offset, PartitionId};
use tokio::sync::mpsc::Receiver;

use crate::cluster::{Cluster, ClusterSpec};
use crate::error::{Error, Result};
use crate::services::{register, EdgeProc, ProjectorProc};

/// What to start.
#[derive(Clone, Debug)]
pub struct StackSpec {
    pub dir: PathBuf,
    pub binary: PathBuf,
    pub nodes: usize,
    pub partitions: u16,
    pub edges: usize,
    /// The edges' tuning (session limits, connection caps, queues):
    /// everything but their wiring, which the launcher fills in.
    pub edge: chorus_edge::Config,
    pub log_filter: String,
}

impl StackSpec {
    pub fn new(dir: impl Into<PathBuf>, binary: impl Into<PathBuf>) -> Self {
        StackSpec {
            dir: dir.into(),
            binary: binary.into(),
            nodes: 3,
            partitions: 16,
            edges: 2,
            edge: chorus_edge::Config::default(),
            log_filter: "info,quinn=warn,openraft=warn".into(),
        }
    }

    /// Edges that let one loopback address send thousands of frames at
    /// once: the rate and in-flight bounds raised, and the per-address
    /// limits off unless the spec set its own.
    #[must_use]
    pub fn unthrottled(mut self) -> Self {
        let session = &mut self.edge.session;
        session.frames_burst = 10_000;
        session.frames_per_sec = 10_000;
        session.in_flight_max = 1024;
        if session.limits == chorus_edge::session::LimitsConfig::default() {
            session.limits = chorus_edge::session::LimitsConfig::unlimited();
        }
        self
    }
}

/// A running deployment. Dropping it kills every process.
#[derive(Debug)]
pub struct Stack {
    pub spec: StackSpec,
    /// The log-nodes and every process around them.
    pub cluster: Cluster,
    /// An edge client of the log.
    pub log: LogClient,
}

impl Stack {
    /// Starts everything and waits until it serves.
    ///
    /// # Errors
    /// When a part does not come up.
    pub async fn start(spec: StackSpec) -> Result<Stack> {
        let mut cs = ClusterSpec::new(spec.dir.join("log"), spec.binary.clone(), spec.nodes);
        cs.partitions = spec.partitions;
        cs.log_filter = spec.log_filter.clone();
        let mut cluster = Cluster::create(cs).await?;
        cluster.start_all()?;
        let log = cluster.wait_ready(Duration::from_secs(60)).await?;
        cluster.start_services(Duration::from_secs(30)).await?;
        cluster.start_edges(spec.edges, &spec.edge).await?;
        Ok(Stack { spec, cluster, log })
    }

    /// The projector.
    ///
    /// # Errors
    /// Never once started (it always has one).
    pub fn projector(&mut self) -> Result<&mut ProjectorProc> {
        self.cluster.projector.as_mut().ok_or_else(|| Error::Cluster("the stack has no projector".into()))
    }

    /// Edge `i`.
    ///
    /// # Errors
    /// When there is no such edge.
    pub fn edge(&mut self, i: usize) -> Result<&mut EdgeProc> {
        self.cluster.edges.get_mut(i).ok_or_else(|| Error::Invalid(format!("the stack has no edge {i}")))
    }

    /// The edges' client addresses, in index order.
    pub fn edge_addrs(&self) -> Vec<String> {
        self.cluster.edge_addrs()
    }

    /// Where every chorus process serves its Prometheus metrics
    /// (`http://<addr>/metrics`), named: `log-node-<id>`, `projector`,
    /// `edge-<index>` (see [`Cluster::metrics_addrs`]).
    pub fn metrics_addrs(&self) -> Vec<(String, std::net::SocketAddr)> {
        self.cluster.metrics_addrs()
    }

    /// Every server process of the deployment, named: log-nodes, the
    /// nats-server, the projector and the edges (for CPU accounting).
    pub fn server_pids(&self) -> Vec<(String, u32)> {
        self.cluster.server_pids()
    }

    /// A client configuration for the given edges (all if empty).
    pub fn client_config(&self, edges: &[usize]) -> ClientConfig {
        let all = self.edge_addrs();
        let addrs = if edges.is_empty() { all } else { edges.iter().filter_map(|i| all.get(*i).cloned()).collect() };
        ClientConfig::new(addrs, self.cluster.edge_ca.clone())
    }

    /// Restarts edge `i` after a kill and waits until it listens again.
    ///
    /// # Errors
    /// When it does not come back.
    pub async fn restart_edge(&mut self, i: usize) -> Result<()> {
        self.edge(i)?.restart(Duration::from_secs(30)).await
    }

    /// Registers a device for `phone` through edge `edge` (reading the texted
    /// code from that edge's SMS file).
    ///
    /// # Errors
    /// When registration fails.
    pub async fn register(&self, edge: usize, phone: &str) -> Result<Credentials> {
        let e = self.cluster.edges.get(edge).ok_or_else(|| Error::Invalid(format!("the stack has no edge {edge}")))?;
        register(&e.listen, &e.sms_path(), &self.cluster.edge_ca, phone, "test").await
    }

    /// Logs `c` in at edge `edge` with no saved positions and waits until
    /// its first sync is over.
    ///
    /// # Panics
    /// When the login fails, or no sync comes within 30 s.
    pub async fn connect(&self, edge: usize, c: Credentials) -> (Client, Receiver<Event>) {
        let (client, mut events) = match Client::connect_raw(self.client_config(&[edge]), c, Resume::default()).await {
            Ok(connected) => connected,
            Err(e) => panic!("log in at edge {edge}: {e}"),
        };
        crate::events::synced(&mut events).await;
        (client, events)
    }

    /// Every record of `key`'s partition, in order, as the log holds it now.
    ///
    /// # Errors
    /// When the log cannot be read.
    pub async fn partition_records(&self, key: &Key) -> Result<Vec<EventRecord>> {
        let partition = PartitionId::for_key(key, self.spec.partitions);
        let mut out = Vec::new();
        let mut from = Offset(0);
        loop {
            let (records, next) =
                self.log.read(partition, from, 1024).await.map_err(|e| Error::Cluster(format!("read the log: {e}")))?;
            if records.is_empty() {
                return Ok(out);
            }
            out.extend(records);
            from = next;
        }
    }

    /// Waits (up to 20 s) until the log says `user` went offline, then 700 ms
    /// more so that the projector has surely folded it (presence and a later
    /// message are folded in different partitions).
    ///
    /// # Errors
    /// When the log cannot be read or the user stays online.
    pub async fn wait_offline(&self, user: chorus_schema::UserId) -> Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let records = self.partition_records(&Key::User(user)).await?;
            let last = records.iter().rev().find_map(|r| match &r.event.body {
                chorus_schema::EventBody::PresenceChanged { user: u, online, .. } if *u == user => Some(*online),
                _ => None,
            });
            if last == Some(false) {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::Cluster(format!("user {user} never went offline")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        Ok(())
    }
}
