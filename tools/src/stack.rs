//! A whole chorus deployment on this machine, every part its own OS process:
//! a log cluster ([`Cluster`]), a `nats-server`, a `chorus projector` and
//! `chorus edge`s. The end-to-end tests and `chorus bench e2e` use it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chorus_bus::testing::NatsServer;
use chorus_client::{self as client, ClientConfig, Credentials};
use chorus_edge::config::SmsConfig;
use chorus_log_node::network::tls::{self, Principal, Role};
use chorus_log_node::LogClient;
use chorus_projections::bus_auth::{self, BusRole};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::launcher::{free_udp_port, Cluster, ClusterSpec};

/// One non-log process (projector or edge): its config file and log file.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    /// The `chorus` subcommand that runs it.
    command: &'static str,
    binary: PathBuf,
    log_filter: String,
    child: Option<Child>,
}

impl Service {
    fn new(
        name: String,
        dir: PathBuf,
        command: &'static str,
        binary: PathBuf,
        log_filter: String,
        config: &str,
    ) -> Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let config_path = dir.join(format!("{command}.toml"));
        std::fs::write(&config_path, config)?;
        Ok(Service { name, dir, config_path, command, binary, log_filter, child: None })
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.command))
    }

    /// Starts the process (appending to its log file).
    ///
    /// # Errors
    /// When it is running already or cannot be spawned.
    pub fn start(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("{} is already running", self.name);
        }
        let log = File::options().create(true).append(true).open(self.log_path())?;
        let child = Command::new(&self.binary)
            .arg(self.command)
            .arg("--config")
            .arg(&self.config_path)
            .env("RUST_LOG", &self.log_filter)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {} {}", self.binary.display(), self.command))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit (then `kill -9` after `timeout`).
    pub fn stop(&mut self, timeout: Duration) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            let deadline = std::time::Instant::now() + timeout;
            while self.is_running() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    /// Waits until the log file shows `needle` at least `count` times.
    ///
    /// # Errors
    /// When the process exits or the time runs out first.
    pub async fn wait_for_log(&mut self, needle: &str, count: usize, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            if text.matches(needle).count() >= count {
                return Ok(());
            }
            if !self.is_running() {
                bail!("{} exited before logging {needle:?}:\n{}", self.name, tail(&text, 30));
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{} did not log {needle:?} within {timeout:?}:\n{}", self.name, tail(&text, 30));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Peak resident set size in KiB (Linux `VmHWM`) and current (`VmRSS`).
    pub fn rss_kib(&self) -> Option<(u64, u64)> {
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        };
        Some((field("VmHWM:")?, field("VmRSS:")?))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What to start.
#[derive(Clone, Debug)]
pub struct StackSpec {
    pub dir: PathBuf,
    pub binary: PathBuf,
    pub nodes: usize,
    pub partitions: u16,
    pub edges: usize,
    /// Per-connection limits of the edges (tests and benches raise the rates).
    pub session: chorus_edge::session::Config,
    /// Frames an edge queues for a client's delivery stream before it
    /// disconnects the client as too slow.
    pub delivery_queue_max: usize,
    /// The edges' connection caps (`connections_per_address_max`, per device,
    /// per user). Every client of a stack connects from 127.0.0.1: benches
    /// with many clients raise them.
    pub connection_caps: (usize, usize, usize),
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
            session: chorus_edge::session::Config::default(),
            delivery_queue_max: chorus_edge::Config::default().delivery_queue_max,
            connection_caps: {
                let d = chorus_edge::Config::default();
                (d.connections_per_address_max, d.connections_per_device_max, d.connections_per_user_max)
            },
            log_filter: "info,quinn=warn,openraft=warn".into(),
        }
    }
}

/// A running deployment. Dropping it kills every process.
#[derive(Debug)]
pub struct Stack {
    pub spec: StackSpec,
    pub cluster: Cluster,
    pub nats: NatsServer,
    pub projector: Service,
    pub edges: Vec<Service>,
    pub edge_addrs: Vec<String>,
    pub log: LogClient,
    /// The edge CA: clients verify the edges with it.
    pub edge_ca: PathBuf,
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
        let mut cluster = Cluster::create(cs)?;
        cluster.start_all()?;
        let log = cluster.wait_ready(Duration::from_secs(60)).await?;
        let tls_dir = spec.dir.join("log").join("tls");
        let edge_names: Vec<String> = (0..spec.edges).map(|i| format!("edge-{i}")).collect();
        let bus = bus_auth::provision(&tls_dir, &["projector".to_owned()], &edge_names, &spec.dir.join("nats.conf"))?;
        let nats = NatsServer::start_with_config(&bus.conf);
        let projector_config = chorus_projections::projector::Config {
            log_nodes: cluster.client_addrs(),
            log_tls: tls::issue(&tls_dir, &Principal::new(Role::Projector, "projector")?)?,
            store_dir: spec.dir.join("projector").join("store"),
            bus: bus.bus(&nats.url(), BusRole::Projector, "projector"),
            view_key: bus.view_key.clone(),
            ..Default::default()
        };
        let mut projector = Service::new(
            "projector".into(),
            spec.dir.join("projector"),
            "projector",
            spec.binary.clone(),
            spec.log_filter.clone(),
            &toml::to_string(&projector_config)?,
        )?;
        projector.start()?;
        let mut edges = Vec::new();
        let mut edge_addrs = Vec::new();
        for i in 0..spec.edges {
            let name = format!("edge-{i}");
            let server = tls::issue_edge_server(&tls_dir, &name, &[])?;
            let dir = spec.dir.join(&name);
            let listen = format!("127.0.0.1:{}", free_udp_port()?);
            let config = chorus_edge::Config {
                listen: listen.parse()?,
                cert: server.cert,
                key: server.key,
                log_seeds: cluster.client_addrs(),
                log_tls: tls::issue(&tls_dir, &Principal::new(Role::Edge, &name)?)?,
                bus: bus.bus(&nats.url(), BusRole::Edge, &name),
                view_key: bus.view_key.clone(),
                sms: SmsConfig::File { path: dir.join("sms.jsonl") },
                session: spec.session.clone(),
                delivery_queue_max: spec.delivery_queue_max,
                connections_per_address_max: spec.connection_caps.0,
                connections_per_device_max: spec.connection_caps.1,
                connections_per_user_max: spec.connection_caps.2,
                ..chorus_edge::Config::default()
            };
            let mut edge = Service::new(
                format!("edge-{i}"),
                dir,
                "edge",
                spec.binary.clone(),
                spec.log_filter.clone(),
                &toml::to_string(&config)?,
            )?;
            edge.start()?;
            edges.push(edge);
            edge_addrs.push(listen);
        }
        projector.wait_for_log("projector", 1, Duration::from_secs(30)).await.ok();
        for e in &mut edges {
            e.wait_for_log("edge listening", 1, Duration::from_secs(30)).await?;
        }
        let edge_ca = tls_dir.join(format!("{}.pem", tls::EDGE_CA));
        Ok(Stack { spec, cluster, nats, projector, edges, edge_addrs, log, edge_ca })
    }

    /// Every server process of the deployment, named: log-nodes, the
    /// nats-server, the projector and the edges (for CPU accounting).
    pub fn server_pids(&self) -> Vec<(String, u32)> {
        let mut pids = Vec::new();
        for n in &self.cluster.nodes {
            if let Some(pid) = n.pid() {
                pids.push((format!("log-node-{}", n.id), pid));
            }
        }
        // The nats-server is a child of this process (see `NatsServer::start`).
        for pid in children_named("nats-server") {
            pids.push(("nats-server".to_owned(), pid));
        }
        for s in std::iter::once(&self.projector).chain(&self.edges) {
            if let Some(pid) = s.pid() {
                pids.push((s.name.clone(), pid));
            }
        }
        pids
    }

    /// A client configuration for the given edges (all if empty).
    pub fn client_config(&self, edges: &[usize]) -> ClientConfig {
        let addrs = if edges.is_empty() {
            self.edge_addrs.clone()
        } else {
            edges.iter().map(|i| self.edge_addrs[*i].clone()).collect()
        };
        ClientConfig::new(addrs, self.edge_ca.clone())
    }

    /// Restarts edge `i` after a kill and waits until it listens again.
    ///
    /// # Errors
    /// When it does not come back.
    pub async fn restart_edge(&mut self, i: usize) -> Result<()> {
        let e = &mut self.edges[i];
        e.kill();
        let before = std::fs::read_to_string(e.log_path()).unwrap_or_default().matches("edge listening").count();
        e.start()?;
        e.wait_for_log("edge listening", before + 1, Duration::from_secs(30)).await
    }

    /// Registers a device for `phone` through edge `edge` (reading the texted
    /// code from that edge's SMS file).
    ///
    /// # Errors
    /// When registration fails.
    pub async fn register(&self, edge: usize, phone: &str) -> Result<Credentials> {
        let config = self.client_config(&[edge]);
        client::request_otp(&config, phone).await?;
        // The text is written in the background: wait for it.
        let path = self.edges[edge].dir.join("sms.jsonl");
        let mut code = sms_code(&path, phone);
        for _ in 0..100 {
            if code.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            code = sms_code(&path, phone);
        }
        let code = code?;
        Ok(client::verify_otp(&config, phone, &code, "test", vec![1; 32]).await?)
    }
}

/// The processes named `name` (as in `/proc/<pid>/comm`) whose parent is this
/// process (Linux; empty elsewhere).
fn children_named(name: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
            // `pid (comm) state ppid …`; comm may hold spaces, so split at the last ')'.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { return false };
            let ppid = stat[close + 1..].split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
            &stat[open + 1..close] == name && ppid == Some(me)
        })
        .collect()
}

/// The last code texted to `phone` in an SMS file sink.
///
/// # Errors
/// When there is none.
pub fn sms_code(path: &Path, phone: &str) -> Result<String> {
    chorus_edge::sms::last_code(path, phone).with_context(|| format!("no code texted to {phone} in {}", path.display()))
}
