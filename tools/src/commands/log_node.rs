//! `chorus log-node`: one log-node process.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chorus_log_node::{Config, Node};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML configuration file (see `--config-check` for every key).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (defaults, file, CHORUS_* env, flags) and exit.
    #[arg(long)]
    pub config_check: bool,
    /// Overrides `id`.
    #[arg(long)]
    pub id: Option<u64>,
    /// Overrides `data_dir`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Overrides `metrics_addr`: serve Prometheus metrics here.
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Defaults → file → environment → flags.
///
/// # Errors
/// On an unreadable or invalid configuration.
pub fn effective_config(args: &Args) -> Result<Config> {
    let mut config: Config = super::load_config(args.config.as_deref())?;
    if let Some(id) = args.id {
        config.id = id;
    }
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(a) = args.metrics_addr {
        config.metrics_addr = Some(a);
    }
    Ok(config)
}

pub async fn run(args: Args) -> Result<()> {
    let config = effective_config(&args)?;
    if args.config_check {
        config.validate()?;
        print!("{}", toml::to_string(&config)?);
        return Ok(());
    }
    crate::metrics::install(config.metrics_addr, crate::metrics::Role::LogNode, &config.id.to_string())?;
    crate::telemetry::export_traces(config.otlp_endpoint.as_deref(), crate::metrics::Role::LogNode)?;
    let node = Node::start(config).await.context("start log-node")?;
    tokio::select! {
        () = shutdown_signal() => {}
        (group, why) = node.fatal() => {
            // Exit rather than linger half-alive: a supervisor restarts the
            // node, which recovers from its disk and its peers.
            let group = group.map_or_else(|| "-".to_string(), |g| g.to_string());
            tracing::error!(%group, %why, "the node cannot serve (a raft core stopped or storage is damaged); exiting");
            anyhow::bail!("group {group}: cannot serve: {why}");
        }
    }
    node.shutdown().await;
    Ok(())
}

/// Waits for SIGINT or SIGTERM.
#[expect(clippy::expect_used, reason = "installing a signal handler fails only outside a runtime with signals: a bug")]
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
