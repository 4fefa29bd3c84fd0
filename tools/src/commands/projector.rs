//! `chorus projector` and `chorus replay`: fold the log into views.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chorus_projections::projector::{BusConfig, Config, Projector};
use chorus_projections::store::RocksStore;
use chorus_projections::{compare, rebuild_views_from_log, Comparison, Views};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML configuration (see `--config-check`); the bus must be NATS for a
    /// standalone projector (`[bus] kind = "nats"`, `url = "nats://…"`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (defaults, file, CHORUS_* env, flags) and exit.
    #[arg(long)]
    pub config_check: bool,
    /// Overrides `store_dir`.
    #[arg(long)]
    pub store_dir: Option<PathBuf>,
    /// Overrides `metrics_addr`: serve Prometheus metrics here.
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

pub async fn run(args: Args) -> Result<()> {
    let mut config: Config = super::load_config(args.config.as_deref())?;
    if let Some(dir) = &args.store_dir {
        config.store_dir = dir.clone();
    }
    if let Some(a) = args.metrics_addr {
        config.metrics_addr = Some(a);
    }
    config.validate()?;
    if args.config_check {
        print!("{}", toml::to_string(&config)?);
        return Ok(());
    }
    if config.bus == BusConfig::Local {
        anyhow::bail!("a standalone projector needs a NATS bus (`[bus] kind = \"nats\"`); the local bus exists only inside `chorus dev`");
    }
    let id = super::principal_name(&config.log_tls).unwrap_or_else(|| config.store_dir.display().to_string());
    crate::metrics::install(config.metrics_addr, crate::metrics::Role::Projector, &id)?;
    crate::telemetry::export_traces(config.otlp_endpoint.as_deref(), crate::metrics::Role::Projector)?;
    let projector = Projector::open(config, None).await.context("open projector")?;
    projector.run(super::log_node::shutdown_signal()).await?;
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub log: super::LogTarget,
    /// The views to rebuild: `all`, or one or more of roster, cursors,
    /// chat_list, receipt_status, inbox, directory, receipt_log, presence, privacy,
    /// contacts, profile, status, contact_index, push_tokens, reports
    /// (comma-separated). A store
    /// of some views holds only their keys and the cursors; a projector
    /// refuses it.
    #[arg(long, default_value = "all")]
    pub view: Views,
    /// A fresh directory for the rebuilt store.
    #[arg(long)]
    pub out: PathBuf,
    /// A live projector's store to compare the rebuilt views with, key by key
    /// (opened read-only; stop the projector, or let it catch up with a log
    /// that is not moving). Prints the first differing key and exits non-zero
    /// if the views differ or the stores are at different offsets.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// The deployment's view key (the projectors' `view_key`): the contact
    /// index hashes phone numbers with a key derived from it, so a rebuild
    /// of `contact_index` equals the live one only with it.
    #[arg(long)]
    pub view_key: Option<PathBuf>,
}

pub async fn replay(args: ReplayArgs) -> Result<()> {
    let client = args.log.connect().await?;
    let stats = match &args.view_key {
        Some(path) => {
            let key = chorus_projections::seal::ViewKey::load(path)
                .with_context(|| format!("--view-key {}", path.display()))?;
            chorus_projections::rebuild_views_with_contact_key(&client, &args.out, args.view, key.contact_key()).await?
        }
        None => {
            if args.view.contains(chorus_projections::View::ContactIndex) {
                eprintln!("warning: no --view-key: contact_index is rebuilt with an all-zero key and will differ from a live one");
            }
            rebuild_views_from_log(&client, &args.out, args.view).await?
        }
    };
    println!(
        "rebuilt {} from {} records in {} batches into {}",
        args.view,
        stats.records,
        stats.batches,
        args.out.display()
    );
    let Some(live_dir) = &args.compare else { return Ok(()) };
    let rebuilt = RocksStore::open_read_only(&args.out).with_context(|| format!("open {}", args.out.display()))?;
    let live =
        RocksStore::open_read_only(live_dir).with_context(|| format!("open {} read-only", live_dir.display()))?;
    match compare(&live, &rebuilt, args.view)? {
        Comparison::Equal { keys } => {
            println!("{} of {} equal {}: {keys} keys", args.view, live_dir.display(), args.out.display());
            Ok(())
        }
        Comparison::NotComparable { live, rebuilt } => {
            anyhow::bail!("not comparable: the live store is at offsets {live:?}, the rebuild at {rebuilt:?} (next offset per partition)")
        }
        Comparison::Differs(d) => {
            println!("first difference: {d}");
            anyhow::bail!("views differ: {d}")
        }
    }
}
