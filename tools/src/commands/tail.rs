//! `chorus tail --json`: stream the log's committed events as JSON lines,
//! optionally as a named consumer whose offsets chorus keeps (issue 13); and
//! `chorus consumer show|reset`: look at and rewind a named consumer.

use std::io::Write;

use anyhow::{bail, Context, Result};
use chorus_analytics::{Pseudonymizer, RowBuilder};
use chorus_log_node::consumer::{Consumer, Options, Start};
use chorus_schema::{Offset, PartitionId, PartitionOffset};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub log: super::LogTarget,
    /// One JSON object per event and line (the only output format for now).
    #[arg(long)]
    pub json: bool,
    /// Where to start: `earliest`, `latest`, `committed` (a named consumer's
    /// offsets, `earliest` where it has none), an offset (`N` or
    /// `offset:N`, in every partition) or `time:MS` (the first event at or
    /// after MS, Unix milliseconds, by the leaders' clocks). Default:
    /// `committed` with `--consumer`, else `latest`.
    #[arg(long)]
    pub from: Option<String>,
    /// Only these partitions (default: all).
    #[arg(long, value_delimiter = ',')]
    pub partitions: Vec<u16>,
    /// Run as this named consumer: its offsets are committed in the log, and
    /// a restart resumes there (at-least-once).
    #[arg(long)]
    pub consumer: Option<String>,
    /// With `--consumer`: commit at least this often (once lines were printed).
    #[arg(long, default_value_t = 1000)]
    pub commit_every_ms: u64,
    /// With `--consumer`: commit after this many lines as well.
    #[arg(long, default_value_t = 1000)]
    pub commit_every_records: u64,
    /// Stop after this many events (default: never).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Replace user, device, chat and phone identifiers by keyed BLAKE3
    /// pseudonyms, the same as `chorus export --pseudonymize KEY` gives.
    #[arg(long)]
    pub pseudonymize: Option<String>,
}

/// Parses `--from`.
pub fn parse_start(s: &str) -> Result<Start> {
    Ok(match s {
        "earliest" => Start::Earliest,
        "latest" => Start::Latest,
        "committed" => Start::Committed,
        _ => {
            if let Some(ms) = s.strip_prefix("time:") {
                Start::Time { at_ms: ms.parse().with_context(|| format!("--from {s}: time:MS, Unix milliseconds"))? }
            } else {
                let n = s.strip_prefix("offset:").unwrap_or(s);
                Start::Offset(Offset(
                    n.parse()
                        .with_context(|| format!("--from {s}: earliest, latest, committed, an offset or time:MS"))?,
                ))
            }
        }
    })
}

pub async fn run(args: Args) -> Result<()> {
    if !args.json {
        bail!("give --json (JSON lines are the only output format)");
    }
    let client = args.log.connect().await?;
    let mut options = match &args.consumer {
        Some(name) => Options::named(name.clone())
            .commit_every(std::time::Duration::from_millis(args.commit_every_ms.max(1)))
            .commit_every_records(args.commit_every_records),
        None => Options::anonymous(),
    };
    if let Some(from) = &args.from {
        options = options.start(parse_start(from)?);
    }
    if !args.partitions.is_empty() {
        options = options.partitions(args.partitions.iter().copied().map(PartitionId).collect());
    }
    let mut consumer = Consumer::open(client, options).await?;
    // On stderr, so that stdout holds events only: a reader (or a test) knows
    // from here on every newly committed event is printed.
    let start: serde_json::Map<String, serde_json::Value> =
        consumer.positions().iter().map(|o| (o.partition.0.to_string(), serde_json::Value::from(o.offset.0))).collect();
    eprintln!("tail: started at {}", serde_json::Value::Object(start));
    let stdout = std::io::stdout();
    let mut seen = 0u64;
    // The columns of `chorus export` (one row model, `chorus_analytics`).
    // Group member counts are known for groups created since the start.
    let mut rows = RowBuilder::new(args.pseudonymize.as_deref().map(Pseudonymizer::new));
    while args.limit.is_none_or(|l| seen < l) {
        let Some(stored) = consumer.next().await? else { break };
        let mut out = stdout.lock();
        serde_json::to_writer(&mut out, &rows.row(&stored.record))?;
        out.write_all(b"\n")?;
        // Flushed per line: a reader sees each event at once, and a line is
        // out before the offset after it can be committed.
        out.flush()?;
        seen += 1;
    }
    if consumer.name().is_some() {
        consumer.commit().await?;
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ConsumerArgs {
    #[command(flatten)]
    pub log: super::LogTarget,
    #[command(subcommand)]
    pub cmd: ConsumerCmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum ConsumerCmd {
    /// Print a named consumer's committed offsets as JSON (`{"partition": offset, …}`).
    Show { name: String },
    /// Set a named consumer's committed offsets, backwards too.
    Reset {
        name: String,
        /// `earliest`, `latest` or an offset (`N`), for every partition given.
        #[arg(long)]
        to: String,
        /// Only these partitions (default: all).
        #[arg(long, value_delimiter = ',')]
        partitions: Vec<u16>,
    },
}

pub async fn consumer(args: ConsumerArgs) -> Result<()> {
    let client = args.log.connect().await?;
    let now = match args.cmd {
        ConsumerCmd::Show { name } => client.consumer_offsets(&name).await?,
        ConsumerCmd::Reset { name, to, partitions } => {
            let partitions: Vec<PartitionId> = if partitions.is_empty() {
                (0..client.partitions()).map(PartitionId).collect()
            } else {
                partitions.into_iter().map(PartitionId).collect()
            };
            let start = parse_start(&to)?;
            let mut offsets = Vec::with_capacity(partitions.len());
            for p in partitions {
                let offset = match start {
                    Start::Earliest => Offset(0),
                    Start::Offset(o) => o,
                    Start::Latest => {
                        let status = client.status(&args.log.node).await?;
                        status
                            .partitions
                            .iter()
                            .find(|s| s.partition == p)
                            .map(|s| s.next_offset)
                            .with_context(|| format!("node {} does not report partition {p}", args.log.node))?
                    }
                    _ => bail!("--to earliest, latest or an offset"),
                };
                offsets.push(PartitionOffset::new(p, offset));
            }
            client.reset_offsets(&name, &offsets).await?
        }
    };
    let map: serde_json::Map<String, serde_json::Value> =
        now.iter().map(|o| (o.partition.0.to_string(), serde_json::Value::from(o.offset.0))).collect();
    println!("{}", serde_json::Value::Object(map));
    Ok(())
}
