//! `chorus projector` and `chorus replay`: fold the log into views.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chorus_log_node::{ClientConfig, LogClient};
use chorus_projections::projector::{rebuild_from_log, BusConfig, Config, Projector};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML configuration (see `--config-check`); the bus must be NATS for a
    /// standalone projector (`[bus] kind = "nats"`, `url = "nats://…"`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    pub config_check: bool,
}

pub async fn run(args: Args) -> Result<()> {
    let config: Config = match &args.config {
        Some(p) => toml::from_str(&std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?)
            .with_context(|| format!("parse {}", p.display()))?,
        None => Config::default(),
    };
    config.validate()?;
    if args.config_check {
        print!("{}", toml::to_string(&config)?);
        return Ok(());
    }
    if config.bus == BusConfig::Local {
        anyhow::bail!("a standalone projector needs a NATS bus (`[bus] kind = \"nats\"`); the local bus exists only inside `chorus dev`");
    }
    let projector = Projector::open(config, None).await.context("open projector")?;
    projector.run(super::log_node::shutdown_signal()).await?;
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Client API address of any log node.
    #[arg(long, default_value = "127.0.0.1:7100")]
    pub node: String,
    #[arg(long, default_value = "data/tls/ca.pem")]
    pub ca: PathBuf,
    /// The views to rebuild. Every view lives in one store and is rebuilt
    /// together (roster, chat_list, cursors, receipt_status), so `all` is the
    /// only choice for now.
    #[arg(long, default_value = "all", value_parser = ["all"])]
    pub view: String,
    /// A fresh directory for the rebuilt store.
    #[arg(long)]
    pub out: PathBuf,
}

pub async fn replay(args: ReplayArgs) -> Result<()> {
    let client = LogClient::connect(std::slice::from_ref(&args.node), &args.ca, ClientConfig::default()).await?;
    let stats = rebuild_from_log(&client, &args.out).await?;
    println!(
        "rebuilt {} views from {} records in {} batches into {}",
        args.view,
        stats.records,
        stats.batches,
        args.out.display()
    );
    Ok(())
}
