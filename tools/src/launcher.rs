//! Local cluster launcher: log-node processes on loopback, each with its own
//! directory (config, data, log file), random ports and certificates from one
//! CA. `chorus cluster up`, `chorus bench log` and the integration tests use it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chorus_log_node::config::{Peer, ProposerConfig, RaftConfig};
use chorus_log_node::network::tls::{self, Principal, Role, TlsPaths};
use chorus_log_node::{ClientConfig, Config, LogClient};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

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
    /// The `chorus` binary to run nodes with.
    pub binary: PathBuf,
    pub raft: RaftConfig,
    pub proposer: ProposerConfig,
    /// `RUST_LOG` of the node processes.
    pub log_filter: String,
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
            log_filter: "info".into(),
        }
    }
}

/// One node process of the cluster.
#[derive(Debug)]
pub struct NodeProc {
    pub id: u64,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub config: Config,
    child: Option<Child>,
}

impl NodeProc {
    /// The node's log file (stdout and stderr of its process).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

/// A launched cluster. Dropping it kills every node process.
#[derive(Debug)]
pub struct Cluster {
    pub spec: ClusterSpec,
    pub nodes: Vec<NodeProc>,
    pub ca: PathBuf,
    /// An `edge` certificate of the cluster CA: appends, reads (what
    /// [`Cluster::client`] uses).
    pub writer: TlsPaths,
    /// An `operator` certificate of the cluster CA: membership changes, reads.
    pub operator: TlsPaths,
    binary: PathBuf,
    log_filter: String,
}

/// A UDP port on 127.0.0.1 that no port-0 bind will take meanwhile
/// ([`chorus_testkit::ports`]).
///
/// # Errors
/// When no socket can be bound.
pub fn free_udp_port() -> Result<u16> {
    chorus_testkit::ports::free_port().context("find a free UDP port")
}

impl Cluster {
    /// Writes certificates and node configs under `spec.dir` (nothing started).
    ///
    /// # Errors
    /// On IO failure.
    pub fn create(spec: ClusterSpec) -> Result<Cluster> {
        std::fs::create_dir_all(&spec.dir).with_context(|| format!("create {}", spec.dir.display()))?;
        let tls_dir = spec.dir.join("tls");
        let mut peers = Vec::new();
        for id in 1..=spec.nodes as u64 {
            peers.push(Peer {
                id,
                raft_addr: format!("127.0.0.1:{}", free_udp_port()?),
                client_addr: format!("127.0.0.1:{}", free_udp_port()?),
            });
        }
        let mut cluster = Cluster {
            ca: tls_dir.join("ca.pem"),
            writer: tls::issue(&tls_dir, &Principal::new(Role::Edge, "launcher")?)?,
            operator: tls::issue(&tls_dir, &Principal::new(Role::Operator, "launcher")?)?,
            binary: spec.binary.clone(),
            log_filter: spec.log_filter.clone(),
            nodes: Vec::new(),
            spec,
        };
        for p in &peers {
            let config = Config {
                id: p.id,
                raft_addr: p.raft_addr.clone(),
                client_addr: p.client_addr.clone(),
                peers: peers.clone(),
                bootstrap: true,
                ..cluster.base_config()
            };
            cluster.add_proc(config)?;
        }
        Ok(cluster)
    }

    fn base_config(&self) -> Config {
        Config {
            partitions: self.spec.partitions,
            groups: self.spec.groups,
            replication: self.spec.replication,
            raft: self.spec.raft.clone(),
            proposer: self.spec.proposer.clone(),
            ..Config::default()
        }
    }

    fn add_proc(&mut self, mut config: Config) -> Result<&mut NodeProc> {
        let dir = self.spec.dir.join(format!("node-{}", config.id));
        std::fs::create_dir_all(&dir)?;
        let tls: TlsPaths = tls::issue(&self.spec.dir.join("tls"), &Principal::node(config.id))?;
        config.data_dir = dir.join("data");
        config.tls = Some(tls);
        config.validate()?;
        let config_path = dir.join("node.toml");
        std::fs::write(&config_path, toml::to_string(&config)?)?;
        self.nodes.push(NodeProc { id: config.id, dir, config_path, config, child: None });
        Ok(self.nodes.last_mut().expect("just pushed"))
    }

    /// Prepares one more node that joins no partition until it is added to one
    /// (see `Request::AddLearner`). Returns its id.
    ///
    /// # Errors
    /// On IO failure.
    pub fn add_node(&mut self) -> Result<u64> {
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        let mut peers: Vec<Peer> = self.nodes[0].config.peers.clone();
        let me = Peer {
            id,
            raft_addr: format!("127.0.0.1:{}", free_udp_port()?),
            client_addr: format!("127.0.0.1:{}", free_udp_port()?),
        };
        peers.push(me.clone());
        let config = Config {
            id,
            raft_addr: me.raft_addr,
            client_addr: me.client_addr,
            // It is in no initial replica set: `replication` counts only the
            // founders, and it never bootstraps.
            peers,
            bootstrap: false,
            replication: self.spec.replication,
            ..self.base_config()
        };
        self.add_proc(config)?;
        Ok(id)
    }

    pub fn node(&self, id: u64) -> &NodeProc {
        self.nodes.iter().find(|n| n.id == id).expect("known node id")
    }

    fn node_mut(&mut self, id: u64) -> &mut NodeProc {
        self.nodes.iter_mut().find(|n| n.id == id).expect("known node id")
    }

    /// Client API addresses of every node.
    pub fn client_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.config.client_addr.clone()).collect()
    }

    /// Starts node `id`'s process (appending to its log file).
    ///
    /// # Errors
    /// When the process cannot be spawned or it is already running.
    pub fn start(&mut self, id: u64) -> Result<()> {
        let binary = self.binary.clone();
        let filter = self.log_filter.clone();
        let n = self.node_mut(id);
        if n.is_running() {
            bail!("node {id} is already running");
        }
        let log = File::options().create(true).append(true).open(n.log_path())?;
        let child = Command::new(&binary)
            .arg("log-node")
            .arg("--config")
            .arg(&n.config_path)
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", binary.display()))?;
        n.child = Some(child);
        Ok(())
    }

    /// Starts every node that is not running.
    ///
    /// # Errors
    /// As [`Cluster::start`].
    pub fn start_all(&mut self) -> Result<()> {
        let ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        for id in ids {
            if !self.node_mut(id).is_running() {
                self.start(id)?;
            }
        }
        Ok(())
    }

    /// `kill -9` node `id` and reaps it.
    pub fn kill(&mut self, id: u64) {
        let n = self.node_mut(id);
        if let Some(mut c) = n.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` to node `id` (e.g. SIGSTOP / SIGCONT for pauses).
    ///
    /// # Errors
    /// When the node is not running or the signal cannot be sent.
    pub fn signal(&self, id: u64, signal: Signal) -> Result<()> {
        let pid = self.node(id).pid().context("node not running")?;
        kill(Pid::from_raw(pid as i32), signal).context("send signal")?;
        Ok(())
    }

    /// Peak resident set size of node `id`'s process, in KiB (Linux `VmHWM`).
    pub fn peak_rss_kib(&self, id: u64) -> Option<u64> {
        let pid = self.node(id).pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
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
        [
            "--ca".into(),
            o.ca.clone().into(),
            "--cert".into(),
            o.cert.clone().into(),
            "--key".into(),
            o.key.clone().into(),
        ]
        .into_iter()
        .collect()
    }

    /// Waits until every partition has a leader that a client can see.
    ///
    /// # Errors
    /// When that does not happen within `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<LogClient> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last: String;
        loop {
            match self.client(ClientConfig::default()).await {
                Ok(client) => {
                    let mut led = 0;
                    for addr in self.client_addrs() {
                        if let Ok(s) = client.status(&addr).await {
                            led += s.partitions.iter().filter(|p| p.leader == Some(s.node)).count();
                        }
                    }
                    if led == self.spec.partitions as usize {
                        client.refresh_leaders().await;
                        return Ok(client);
                    }
                    last = format!("{led} of {} partitions have a leader", self.spec.partitions);
                }
                Err(e) => last = e.to_string(),
            }
            if tokio::time::Instant::now() > deadline {
                bail!("cluster not ready after {timeout:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
        let ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        for id in ids {
            self.kill(id);
        }
    }
}

/// The `chorus` binary next to the running executable (tests run from
/// `target/<profile>/deps`, the binary lives in `target/<profile>`).
pub fn chorus_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    for d in [dir, dir.parent().unwrap_or(dir)] {
        let p = d.join("chorus");
        if p.is_file() {
            return p;
        }
    }
    exe
}

/// Removes `dir` if it exists.
pub fn clean_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    Ok(())
}
