//! `chorus dev`: embedded mode, one process with one replica per partition.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chorus_log_node::config::Peer;
use chorus_log_node::network::tls::{self, Principal, Role, TlsPaths};
use chorus_log_node::{Config, Node};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where data lives.
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    /// Client API address (QUIC).
    #[arg(long, default_value = "127.0.0.1:7100")]
    pub client_addr: String,
    /// Raft address (unused by other nodes in embedded mode, but bound).
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub raft_addr: String,
    #[arg(long, default_value_t = 64)]
    pub partitions: u16,
    /// Where clients connect (QUIC, ALPN chorus/1).
    #[arg(long, default_value = "127.0.0.1:7300")]
    pub edge_addr: std::net::SocketAddr,
    /// Where to serve Prometheus metrics of the whole embedded deployment
    /// (`GET /metrics`), or `off`.
    #[arg(long, env = "CHORUS_METRICS_ADDR", default_value = crate::metrics::DEV_ADDR)]
    pub metrics_addr: crate::metrics::MetricsAddr,
    /// Export traces by OTLP/HTTP to this collector URL (e.g.
    /// `http://127.0.0.1:4318/v1/traces`; needs a chorus built with the
    /// `otlp` feature).
    #[arg(long, env = "CHORUS_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    #[command(flatten)]
    pub push: PushArgs,
}

// ---- push (issue 14) ----
/// Push notifications of `chorus dev` (the projector's `[push]`; see
/// `docs/push-webhook.md`). Off unless `--push-url` is given.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct PushArgs {
    /// POST pushes for offline users here (https, or http to loopback).
    #[arg(long, env = "CHORUS_PUSH_URL")]
    pub push_url: Option<String>,
    /// The file holding the webhook's HMAC secret (at least 32 bytes).
    #[arg(long, env = "CHORUS_PUSH_SECRET_FILE", requires = "push_url")]
    pub push_secret_file: Option<PathBuf>,
    /// One push per (user, chat) per this many ms.
    #[arg(long, env = "CHORUS_PUSH_WINDOW_MS")]
    pub push_window_ms: Option<u64>,
}

impl PushArgs {
    /// The projector's `[push]` of these flags (None without `--push-url`).
    ///
    /// # Errors
    /// A URL without a secret file.
    pub fn config(&self) -> Result<Option<chorus_projections::push::PushConfig>> {
        let Some(url) = &self.push_url else { return Ok(None) };
        let Some(secret_file) = &self.push_secret_file else {
            anyhow::bail!("--push-url needs --push-secret-file (the webhook's HMAC secret)");
        };
        let mut config = chorus_projections::push::PushConfig {
            url: url.clone(),
            secret_file: secret_file.clone(),
            ..Default::default()
        };
        if let Some(w) = self.push_window_ms {
            config.window_ms = w;
        }
        Ok(Some(config))
    }
}

/// The TLS material of the embedded deployment, under `data/tls`: made on
/// first start, then reused (dev is the one place that mints its own).
pub struct DevTls {
    /// The view key shared by the projector and the edge.
    pub view_key: std::path::PathBuf,
    pub node: TlsPaths,
    pub projector: TlsPaths,
    pub edge: TlsPaths,
    pub edge_server: TlsPaths,
    pub operator: TlsPaths,
}

/// Issues (or re-issues: certificates are cheap, the CAs are kept) the
/// embedded deployment's certificates.
///
/// # Errors
/// On IO failure.
pub fn dev_tls(data: &std::path::Path) -> Result<DevTls> {
    let dir = data.join("tls");
    let who = |role| Principal::new(role, "dev");
    let view_key = dir.join("view.key");
    chorus_projections::seal::ViewKey::create(&view_key)?;
    Ok(DevTls {
        view_key,
        node: tls::issue(&dir, &Principal::node(1))?,
        projector: tls::issue(&dir, &who(Role::Projector)?)?,
        edge: tls::issue(&dir, &who(Role::Edge)?)?,
        edge_server: tls::issue_edge_server(&dir, "dev", &[])?,
        operator: tls::issue(&dir, &who(Role::Operator)?)?,
    })
}

pub fn config(args: &Args, node_tls: TlsPaths) -> Config {
    Config {
        id: 1,
        data_dir: args.data.clone(),
        raft_addr: args.raft_addr.clone(),
        client_addr: args.client_addr.clone(),
        partitions: args.partitions,
        replication: 1,
        peers: vec![Peer { id: 1, raft_addr: args.raft_addr.clone(), client_addr: args.client_addr.clone() }],
        bootstrap: true,
        tls: Some(node_tls),
        ..Config::default()
    }
}

/// A running `chorus dev`: the embedded log-node, projector and edge.
pub struct Dev {
    node: Node,
    projector: tokio::task::JoinHandle<chorus_projections::projector::Result<()>>,
    stop_projector: tokio::sync::oneshot::Sender<()>,
    edge: tokio::task::JoinHandle<()>,
    stop_edge: tokio::sync::oneshot::Sender<()>,
    /// The edge's counters.
    pub edge_handle: chorus_edge::driver::Handle,
    /// The CA clients check the edge's certificate against (the edge CA).
    pub ca: PathBuf,
    /// An operator's certificate, for `chorus log`.
    pub operator: TlsPaths,
}

impl std::fmt::Debug for Dev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dev").field("edge", &self.edge_handle).finish_non_exhaustive()
    }
}

/// Starts the embedded processes; `edge` may change the edge's config (tests).
///
/// # Errors
/// When a part fails to start.
pub async fn start(args: &Args, edge: impl FnOnce(&mut chorus_edge::Config)) -> Result<Dev> {
    let tls = dev_tls(&args.data).context("TLS material")?;
    let config = config(args, tls.node.clone());
    let node = Node::start(config).await.context("start embedded log-node")?;
    node.wait_for_leaders(std::time::Duration::from_secs(10)).await;
    // The projector folds the log into views, on the in-process bus.
    let bus = chorus_bus::Bus::local();
    let projector_config = chorus_projections::projector::Config {
        log_nodes: vec![args.client_addr.clone()],
        log_tls: tls.projector.clone(),
        view_key: tls.view_key.clone(),
        store_dir: args.data.join("projector"),
        bus: chorus_projections::projector::BusConfig::Local,
        push: args.push.config()?,
        ..Default::default()
    };
    let projector = chorus_projections::projector::Projector::open(projector_config, Some(bus.clone()))
        .await
        .context("open embedded projector")?;
    let (stop_projector, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let projector = tokio::spawn(projector.run(async move {
        let _ = stop_rx.await;
    }));
    // The edge: clients connect here. OTP codes go to standard output and data/sms.jsonl.
    let mut edge_config = chorus_edge::Config {
        listen: args.edge_addr,
        cert: tls.edge_server.cert.clone(),
        key: tls.edge_server.key.clone(),
        log_nodes: vec![args.client_addr.clone()],
        log_tls: tls.edge.clone(),
        view_key: tls.view_key.clone(),
        bus: chorus_edge::config::BusConfig::Local,
        // The `log` sink, allowed here only: codes on standard output and in
        // data/sms.jsonl.
        sms: chorus_edge::config::SmsConfig::Log { file: Some(args.data.join("sms.jsonl")) },
        dev: true,
        // Media objects and staged uploads under the data directory.
        media: chorus_edge::media::MediaConfig { dir: args.data.join("media"), ..Default::default() },
        ..chorus_edge::Config::default()
    };
    edge(&mut edge_config);
    let opened = chorus_edge::Edge::open(edge_config, Some(bus.clone())).await.context("open embedded edge")?;
    let edge_handle = opened.handle();
    let (stop_edge, edge_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let edge = tokio::spawn(opened.run(async move {
        let _ = edge_stop_rx.await;
    }));
    Ok(Dev {
        node,
        projector,
        stop_projector,
        edge,
        stop_edge,
        edge_handle,
        ca: tls.edge_server.ca.clone(),
        operator: tls.operator.clone(),
    })
}

impl Dev {
    /// Stops the edge, the projector and the node, in that order.
    ///
    /// # Errors
    /// When the projector failed.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop_edge.send(());
        let _ = self.edge.await;
        let _ = self.stop_projector.send(());
        self.projector.await.context("projector task")??;
        self.node.shutdown().await;
        Ok(())
    }
}

pub async fn run(args: Args) -> Result<()> {
    crate::metrics::install(args.metrics_addr.0, crate::metrics::Role::Dev, "dev")?;
    crate::telemetry::export_traces(args.otlp_endpoint.as_deref(), crate::metrics::Role::Dev)?;
    let dev = start(&args, |_| {}).await?;
    let ca = dev.ca.clone();
    let d = args.data.display();
    println!(
        "chorus dev: embedded log-node ({} partitions), projector, edge and in-process bus; data in {d}",
        args.partitions,
    );
    println!("clients connect to {} (QUIC, edge CA {}):", args.edge_addr, ca.display());
    println!("  chorus client --edge {} --profile {d}/alice.json register --phone +15550001", args.edge_addr);
    println!("  (the code is printed here and written to {d}/sms.jsonl)");
    println!(
        "  chorus client --edge {} --profile {d}/alice.json register --phone +15550001 --code CODE",
        args.edge_addr
    );
    println!("  chorus client --edge {} --profile {d}/alice.json send --to +15550002 hello", args.edge_addr);
    println!("  chorus client --edge {} --profile {d}/bob.json listen", args.edge_addr);
    let o = &dev.operator;
    println!(
        "the log directly: chorus log --node {} --ca {} --cert {} --key {} status",
        args.client_addr,
        o.ca.display(),
        o.cert.display(),
        o.key.display()
    );
    println!("the whole deployment: chorus status (or chorus status --json)");
    if let Some(a) = args.metrics_addr.0 {
        println!("metrics (Prometheus): http://{a}/metrics");
    }
    println!("Ctrl-C stops it.");
    super::log_node::shutdown_signal().await;
    dev.stop().await
}
