//! `chorus cluster up`: a local cluster of log-node processes on loopback.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use chorus_testkit::cluster::{self as launcher, Cluster, ClusterSpec};

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Start a local cluster and keep it running until Ctrl-C.
    Up(UpArgs),
}

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    #[arg(long, default_value_t = 64)]
    pub partitions: u16,
    /// Directory of the cluster (wiped first).
    #[arg(long, default_value = "cluster")]
    pub dir: PathBuf,
}

pub async fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Up(a) => {
            launcher::clean_dir(&a.dir)?;
            let mut spec = ClusterSpec::new(&a.dir, std::env::current_exe()?, a.nodes);
            spec.partitions = a.partitions;
            let mut cluster = Cluster::create(spec).await?;
            cluster.start_all()?;
            cluster.wait_ready(Duration::from_secs(30)).await?;
            println!(
                "chorus cluster: {} log-nodes, {} partitions, directory {}",
                a.nodes,
                a.partitions,
                a.dir.display()
            );
            for n in &cluster.nodes {
                println!(
                    "  node {}: client {}  raft {}  log {}",
                    n.id,
                    n.config.client_addr,
                    n.config.raft_addr,
                    n.log_path().display()
                );
            }
            let o = &cluster.operator;
            if let Some(first) = cluster.nodes.first() {
                println!(
                    "connect with: chorus log --node {} --ca {} --cert {} --key {} status",
                    first.config.client_addr,
                    o.ca.display(),
                    o.cert.display(),
                    o.key.display()
                );
            }
            println!("Ctrl-C stops it.");
            super::log_node::shutdown_signal().await;
            drop(cluster);
            Ok(())
        }
    }
}
