//! A real log-node in this process (RocksDB in a directory of the caller's,
//! QUIC on loopback ports from [`crate::ports`]): the fixture of crate tests
//! that need a log but no processes.

use std::path::Path;
use std::time::Duration;

use chorus_log_node::config::Peer;
use chorus_log_node::network::tls::{self, Principal, Role, TlsPaths};
use chorus_log_node::{ClientConfig, Config, LogClient, Node};

use crate::error::{io, Error, Result};

/// The config of a single-replica node 1 of `partitions` partitions, keeping
/// its data and its CA (`tls/`) in `dir`.
///
/// # Errors
/// When no port is free or the node certificate cannot be issued.
pub fn one_node_config(dir: &Path, partitions: u16) -> Result<Config> {
    let port = || crate::ports::free_addr().map(|a| a.to_string()).map_err(io("find a free port on", "127.0.0.1"));
    let (raft_addr, client_addr) = (port()?, port()?);
    Ok(Config {
        id: 1,
        data_dir: dir.to_path_buf(),
        raft_addr: raft_addr.clone(),
        client_addr: client_addr.clone(),
        partitions,
        replication: 1,
        peers: vec![Peer { id: 1, raft_addr, client_addr }],
        bootstrap: true,
        tls: Some(tls::issue(&dir.join("tls"), &Principal::node(1))?),
        ..Config::default()
    })
}

/// A certificate of `role` named `name` from the CA of the node of `config`
/// (made by [`one_node_config`]).
///
/// # Errors
/// When it cannot be issued.
pub fn identity(config: &Config, role: Role, name: &str) -> Result<TlsPaths> {
    Ok(tls::issue(&config.data_dir.join("tls"), &Principal::new(role, name)?)?)
}

/// Starts the node of `config`, waits until its partitions have leaders and
/// connects an edge client of it.
///
/// # Errors
/// When it does not start, elect within 10 s, or accept the client.
pub async fn start(config: &Config) -> Result<(Node, LogClient)> {
    let node = Node::start(config.clone()).await.map_err(|e| Error::Cluster(format!("start node: {e}")))?;
    if !node.wait_for_leaders(Duration::from_secs(10)).await {
        node.shutdown().await;
        return Err(Error::Cluster("the node's partitions have no leaders after 10 s".into()));
    }
    let edge = identity(config, Role::Edge, "test")?;
    match LogClient::connect(std::slice::from_ref(&config.client_addr), &edge, ClientConfig::default()).await {
        Ok(client) => Ok((node, client)),
        Err(e) => {
            node.shutdown().await;
            Err(e.into())
        }
    }
}
