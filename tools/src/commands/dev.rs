//! `chorus dev`: embedded mode, one process with one replica per partition.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chorus_log_node::config::Peer;
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
}

pub fn config(args: &Args) -> Config {
    Config {
        id: 1,
        data_dir: args.data.clone(),
        raft_addr: args.raft_addr.clone(),
        client_addr: args.client_addr.clone(),
        partitions: args.partitions,
        replication: 1,
        peers: vec![Peer { id: 1, raft_addr: args.raft_addr.clone(), client_addr: args.client_addr.clone() }],
        bootstrap: true,
        tls: None,
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
    /// The CA clients check the edge's certificate against.
    pub ca: PathBuf,
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
    let config = config(args);
    let ca = config.data_dir.join("tls").join("ca.pem");
    let node = Node::start(config).await.context("start embedded log-node")?;
    node.wait_for_leaders(std::time::Duration::from_secs(10)).await;
    // The projector folds the log into views, on the in-process bus.
    let bus = chorus_bus::Bus::local();
    let projector_config = chorus_projections::projector::Config {
        log_nodes: vec![args.client_addr.clone()],
        ca_path: ca.clone(),
        store_dir: args.data.join("projector"),
        bus: chorus_projections::projector::BusConfig::Local,
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
    let tls_dir = args.data.join("tls");
    let edge_tls = chorus_log_node::network::tls::issue(&tls_dir, "edge").context("edge certificate")?;
    let mut edge_config = chorus_edge::Config {
        listen: args.edge_addr,
        cert: edge_tls.cert,
        key: edge_tls.key,
        log_seeds: vec![args.client_addr.clone()],
        log_ca: ca.clone(),
        bus: chorus_edge::config::BusConfig::Local,
        // The `log` sink, allowed here only: codes on standard output and in
        // data/sms.jsonl.
        sms: chorus_edge::config::SmsConfig::Log { file: Some(args.data.join("sms.jsonl")) },
        dev: true,
        ..chorus_edge::Config::default()
    };
    edge(&mut edge_config);
    let opened = chorus_edge::Edge::open(edge_config, Some(bus.clone())).await.context("open embedded edge")?;
    let edge_handle = opened.handle();
    let (stop_edge, edge_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let edge = tokio::spawn(opened.run(async move {
        let _ = edge_stop_rx.await;
    }));
    Ok(Dev { node, projector, stop_projector, edge, stop_edge, edge_handle, ca })
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
    let dev = start(&args, |_| {}).await?;
    let ca = dev.ca.clone();
    let d = args.data.display();
    println!(
        "chorus dev: embedded log-node ({} partitions), projector, edge and in-process bus; data in {d}",
        args.partitions,
    );
    println!("clients connect to {} (QUIC, CA {}):", args.edge_addr, ca.display());
    println!("  chorus client --edge {} --profile {d}/alice.json register --phone +15550001", args.edge_addr);
    println!("  (the code is printed here and written to {d}/sms.jsonl)");
    println!("  chorus client --edge {} --profile {d}/alice.json register --phone +15550001 --code CODE", args.edge_addr);
    println!("  chorus client --edge {} --profile {d}/alice.json send --to +15550002 hello", args.edge_addr);
    println!("  chorus client --edge {} --profile {d}/bob.json listen", args.edge_addr);
    println!("the log directly: chorus log --node {} --ca {} status", args.client_addr, ca.display());
    println!("Ctrl-C stops it.");
    super::log_node::shutdown_signal().await;
    dev.stop().await
}
