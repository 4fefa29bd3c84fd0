//! `chorus media gc`: garbage collection of media objects (issue 14).
//!
//! The `media` view (a fold of the log: uploads and references, see
//! `chorus_projections::fold::media`) says which objects are live; this
//! rebuilds it from the log into a scratch store, then deletes from the
//! object store every object the view's rule
//! ([`chorus_projections::fold::media::collectable`]) lets go: no live
//! message, avatar or icon references it, no live status post holds it, and
//! its last upload is older than the grace period (`media.gc_grace_ms`).
//! `--every-ms` keeps it running as the periodic sweeper.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use chorus_edge::media::{MediaConfig, MediaStore};
use chorus_projections::fold::media::{collectable, object};
use chorus_projections::store::RocksStore;
use chorus_projections::{rebuild_views_from_log, View, Views};

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Delete media objects no live message references (past the grace period).
    Gc(GcArgs),
}

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub log: super::LogTarget,
    /// An edge configuration file: its `[media]` section names the object
    /// store (default: the local directory `data/media`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The local object store's directory instead of the config's.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The grace period instead of the config's `media.gc_grace_ms`.
    #[arg(long)]
    pub grace_ms: Option<u64>,
    /// Print what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Sweep again every this many ms (a long-running sweeper); default: once.
    #[arg(long)]
    pub every_ms: Option<u64>,
}

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub objects: usize,
    pub deleted: Vec<[u8; 32]>,
    pub kept: usize,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One sweep: rebuilds the media view from the log under `scratch` (wiped
/// first), then deletes what it lets go.
///
/// # Errors
/// The log, the scratch store or the object store failing.
pub async fn sweep(
    log: &chorus_log_node::LogClient,
    store: &MediaStore,
    scratch: &Path,
    grace_ms: u64,
    dry_run: bool,
) -> Result<Swept> {
    if scratch.exists() {
        std::fs::remove_dir_all(scratch).with_context(|| format!("wipe {}", scratch.display()))?;
    }
    // The view first, then the objects: an object stored after the view was
    // read is younger than the grace period anyway.
    rebuild_views_from_log(log, scratch, Views::one(View::Media)).await.context("rebuild the media view")?;
    let now = now_ms();
    let objects = store.objects().await?;
    let view = RocksStore::open_read_only(scratch).context("open the media view")?;
    let mut swept = Swept { objects: objects.len(), ..Swept::default() };
    let mut doomed = Vec::new();
    {
        let txn = view.read();
        for o in &objects {
            let known = object(&txn, &o.blake3)?;
            if collectable(known.as_ref(), o.stored_ms, now, grace_ms) {
                doomed.push(o.blake3);
            } else {
                swept.kept += 1;
            }
        }
    }
    for hash in doomed {
        if !dry_run {
            store.delete(&hash).await?;
        }
        swept.deleted.push(hash);
    }
    Ok(swept)
}

pub async fn run(cmd: Cmd) -> Result<()> {
    let Cmd::Gc(args) = cmd;
    let mut media: MediaConfig = match &args.config {
        Some(path) => {
            let edge: chorus_edge::Config = super::load_config(Some(path))?;
            edge.media
        }
        None => MediaConfig::default(),
    };
    if let Some(dir) = args.dir {
        media.dir = dir;
    }
    let grace_ms = args.grace_ms.unwrap_or(media.gc_grace_ms);
    let store = MediaStore::open(&media)?;
    let log = args.log.connect().await?;
    let scratch = std::env::temp_dir().join(format!("chorus-media-gc-{}", std::process::id()));
    loop {
        let swept = sweep(&log, &store, &scratch, grace_ms, args.dry_run).await?;
        for hash in &swept.deleted {
            println!("{} {}", if args.dry_run { "would delete" } else { "deleted" }, hex::encode(hash));
        }
        println!(
            "{} objects: {} {}, {} kept (grace {grace_ms} ms)",
            swept.objects,
            swept.deleted.len(),
            if args.dry_run { "collectable" } else { "deleted" },
            swept.kept
        );
        let Some(every) = args.every_ms else { break };
        tokio::time::sleep(Duration::from_millis(every)).await;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
