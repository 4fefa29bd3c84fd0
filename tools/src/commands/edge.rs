//! `chorus edge`: one edge process (clients connect here over QUIC).

use std::path::PathBuf;

use anyhow::{Context, Result};
use chorus_edge::config::BusConfig;
use chorus_edge::{Config, Edge};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML configuration (see `--config-check`); a standalone edge needs a
    /// NATS bus (`[bus] kind = "nats"`, `url = "nats://…"`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (defaults, file, CHORUS_* env, flags) and exit.
    #[arg(long)]
    pub config_check: bool,
    /// Overrides `listen`.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Overrides `metrics_addr`: serve Prometheus metrics here.
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

pub async fn run(args: Args) -> Result<()> {
    let mut config: Config = super::load_config(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(a) = args.metrics_addr {
        config.metrics_addr = Some(a);
    }
    config.validate().map_err(anyhow::Error::msg)?;
    if args.config_check {
        print!("{}", toml::to_string(&config)?);
        return Ok(());
    }
    if config.bus == BusConfig::Local {
        anyhow::bail!("a standalone edge needs a NATS bus (`[bus] kind = \"nats\"`); the local bus exists only inside `chorus dev`");
    }
    let id = super::principal_name(&config.log_tls).unwrap_or_else(|| config.listen.to_string());
    crate::metrics::install(config.metrics_addr, crate::metrics::Role::Edge, &id)?;
    crate::telemetry::export_traces(config.otlp_endpoint.as_deref(), crate::metrics::Role::Edge)?;
    let edge = Edge::open(config, None).await.context("open edge")?;
    println!("edge listening on {}", edge.local_addr());
    edge.run(super::log_node::shutdown_signal()).await;
    Ok(())
}
