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
    println!(
        "chorus dev: embedded log-node ({} partitions) and projector on the in-process bus, data in {}",
        args.partitions,
        args.data.display()
    );
    println!("connect with:");
    println!("  chorus log --node {} --ca {} status", args.client_addr, ca.display());
    println!("  chorus log --node {} --ca {} append --from 1 --to 2 --text hello", args.client_addr, ca.display());
    println!("  chorus log --node {} --ca {} read --user 1 --peer 2", args.client_addr, ca.display());
    println!("Ctrl-C stops it.");
    super::log_node::shutdown_signal().await;
    let _ = stop_tx.send(());
    projector_task.await.context("projector task")??;
    node.shutdown().await;
    Ok(())
}
