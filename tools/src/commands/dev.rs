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

pub async fn run(args: Args) -> Result<()> {
    let config = config(&args);
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
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let projector_task = tokio::spawn(projector.run(async move {
        let _ = stop_rx.await;
    }));
    // The edge: clients connect here. OTP codes go to the log and data/sms.jsonl.
    let tls_dir = args.data.join("tls");
    let edge_tls = chorus_log_node::network::tls::issue(&tls_dir, "edge").context("edge certificate")?;
    let edge_config = chorus_edge::Config {
        listen: args.edge_addr,
        cert: edge_tls.cert,
        key: edge_tls.key,
        log_seeds: vec![args.client_addr.clone()],
        log_ca: ca.clone(),
        bus: chorus_edge::config::BusConfig::Local,
        sms: chorus_edge::config::SmsConfig::File { path: args.data.join("sms.jsonl") },
        ..chorus_edge::Config::default()
    };
    let edge = chorus_edge::Edge::open(edge_config, Some(bus.clone())).await.context("open embedded edge")?;
    let (edge_stop_tx, edge_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let edge_task = tokio::spawn(edge.run(async move {
        let _ = edge_stop_rx.await;
    }));
    let d = args.data.display();
    println!(
        "chorus dev: embedded log-node ({} partitions), projector, edge and in-process bus; data in {d}",
        args.partitions,
    );
    println!("clients connect to {} (QUIC, CA {}):", args.edge_addr, ca.display());
    println!("  chorus client --edge {} --profile {d}/alice.json register --phone +15550001", args.edge_addr);
    println!("  (the code is printed in this log and in {d}/sms.jsonl)");
    println!("  chorus client --edge {} --profile {d}/alice.json register --phone +15550001 --code CODE", args.edge_addr);
    println!("  chorus client --edge {} --profile {d}/alice.json send --to +15550002 hello", args.edge_addr);
    println!("  chorus client --edge {} --profile {d}/bob.json listen", args.edge_addr);
    println!("the log directly: chorus log --node {} --ca {} status", args.client_addr, ca.display());
    println!("Ctrl-C stops it.");
    super::log_node::shutdown_signal().await;
    let _ = edge_stop_tx.send(());
    let _ = edge_task.await;
    let _ = stop_tx.send(());
    projector_task.await.context("projector task")??;
    node.shutdown().await;
    Ok(())
}
