//! `chorus export`: the log's events as metadata-only Parquet or JSON lines
//! files for analysts (the rows of `chorus_analytics`), resumable from a
//! manifest.
//!
//! A new export reads each partition from offset 0: the records before the
//! range only warm the row builder's group membership (member counts), the
//! rest become rows. A resumed export starts from the group membership saved
//! beside its manifest and reads only what is new. Reads of the next partitions run ahead of the writer (a few at a
//! time, decoding on the runtime's threads) while the current one is written.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chorus_analytics::{Exporter, Format, Manifest, Options, Pseudonymizer, Row};
use chorus_log_node::LogClient;
use chorus_schema::{EventRecord, Offset, PartitionId, Request, Response};
use tokio::sync::mpsc;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub log: super::LogTarget,
    #[command(flatten)]
    pub export: ExportArgs,
}

/// What to export and how; [`export`] takes these.
#[derive(Clone, Debug, clap::Args)]
pub struct ExportArgs {
    /// parquet or jsonl.
    #[arg(long, default_value = "parquet")]
    pub format: Format,
    /// The export directory: part-NNNNN.<format> files and manifest.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Partitions to export (default: all; with --from-manifest, the manifest's).
    #[arg(long, value_delimiter = ',')]
    pub partitions: Vec<u16>,
    /// First offset of each partition to export.
    #[arg(long, conflicts_with_all = ["from_time", "from_manifest"])]
    pub from_offset: Option<u64>,
    /// Start of each partition at the first event committed at or after this
    /// time (RFC 3339, e.g. 2026-12-07T17:00:00Z, or ms since the epoch).
    #[arg(long, value_parser = parse_time, conflicts_with = "from_manifest")]
    pub from_time: Option<u64>,
    /// Export up to this offset of each partition (exclusive).
    #[arg(long)]
    pub to_offset: Option<u64>,
    /// Stop each partition at the first event committed after this time.
    #[arg(long, value_parser = parse_time)]
    pub to_time: Option<u64>,
    /// Continue the export in --out from where its manifest says it ended.
    #[arg(long)]
    pub from_manifest: bool,
    /// Replace user ids, devices, chats and phone numbers by keyed BLAKE3
    /// pseudonyms, stable across exports with the same key.
    #[arg(long)]
    pub pseudonymize: Option<String>,
    /// Rows per Parquet row group.
    #[arg(long, default_value_t = 128 * 1024)]
    pub row_group_rows: usize,
    /// Rows per part file (the manifest advances at each part).
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub part_rows: u64,
    /// Events per read request (at most 4096).
    #[arg(long, default_value_t = 4096)]
    pub batch: u32,
    /// Partitions read ahead of the one being written.
    #[arg(long, default_value_t = 4)]
    pub read_ahead: usize,
}

/// An RFC 3339 time or milliseconds since the epoch, as ms.
fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    rfc3339_ms(s).ok_or_else(|| format!("{s:?} is neither ms since the epoch nor RFC 3339 (2026-12-07T17:00:00Z)"))
}

/// `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` → ms since the epoch.
fn rfc3339_ms(s: &str) -> Option<u64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if s.get(4..5)? != "-" || s.get(7..8)? != "-" || !matches!(s.get(10..11)?, "T" | "t" | " ") {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut ms = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        let f = frac.get(..digits)?;
        ms = format!("{:0<3}", f.get(..digits.min(3))?).parse().ok()?;
        rest = frac.get(digits..)?;
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.get(..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 60 + om)
        }
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let total = ((days * 24 + h) * 60 + mi) * 60 + sec - offset_min * 60;
    u64::try_from(total * 1000 + ms).ok()
}

pub async fn run(args: Args) -> Result<()> {
    let client = args.log.connect().await?;
    let report = export(&client, &args.log.node, &args.export).await?;
    println!(
        "exported {} rows ({} records read) into {} file(s) in {:.2}s: {:.0} records/s, CPU {:.2}s: {:.0} records/s per core",
        report.rows,
        report.records,
        report.files.len(),
        report.seconds,
        report.records as f64 / report.seconds.max(1e-9),
        report.cpu_seconds,
        report.records as f64 / report.cpu_seconds.max(1e-9),
    );
    for f in &report.files {
        println!("  {}", f.display());
    }
    if report.unknown > 0 {
        println!("  {} record(s) did not decode: rows of kind \"unknown\"", report.unknown);
    }
    Ok(())
}

/// What an export did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Rows written.
    pub rows: u64,
    /// Records read (rows, and the warm-up and skipped records).
    pub records: u64,
    /// Records that did not decode (exported as kind "unknown").
    pub unknown: u64,
    pub files: Vec<PathBuf>,
    pub seconds: f64,
    /// CPU time (user + system) of this process during the export.
    pub cpu_seconds: f64,
}

/// This process's CPU time so far, in seconds.
pub fn own_cpu_seconds() -> f64 {
    crate::bench::stats::process_cpu_us(std::process::id()).map_or(0.0, |us| us as f64 / 1e6)
}

/// Where each partition's export ends now: its next offset at the leader
/// of its group (or at `node`), as the nodes' status says.
async fn end_offsets(client: &LogClient, node: &str, partitions: &[PartitionId]) -> Result<HashMap<u16, Offset>> {
    client.refresh_leaders().await;
    let mut statuses = HashMap::new();
    let mut ends = HashMap::new();
    for p in partitions {
        let addr = client.leader_addr(*p).unwrap_or_else(|| node.to_owned());
        if !statuses.contains_key(&addr) {
            let s = match client.status(&addr).await {
                Ok(s) => s,
                Err(_) => client.status(node).await.with_context(|| format!("status of {node}"))?,
            };
            statuses.insert(addr.clone(), s);
        }
        let Some(s) = statuses.get(&addr) else { continue };
        let end = s.partitions.iter().find(|ps| ps.partition == *p).map(|ps| ps.next_offset);
        let Some(end) = end else { bail!("partition {p} is not in the status of {addr}") };
        ends.insert(p.0, end);
    }
    Ok(ends)
}

/// One batch of a partition's records from `from` on; `None` where a
/// record did not decode.
type Batch = (Offset, Vec<Option<EventRecord>>);

/// Reads `partition` from `from` to `end`, decoding, into `out`.
async fn read_partition(
    client: LogClient,
    node: String,
    partition: PartitionId,
    (mut from, end): (Offset, Offset),
    batch: u32,
    out: mpsc::Sender<Result<Batch>>,
) {
    let mut failures = 0u32;
    while from < end {
        let addr = client.leader_addr(partition).unwrap_or_else(|| node.clone());
        let limit = batch.clamp(1, 4096).min(u32::try_from(end.0 - from.0).unwrap_or(u32::MAX));
        let got = client.request(&addr, &Request::Read { partition, from, limit }).await;
        let events = match got {
            Ok(Response::Events { events, .. }) if !events.is_empty() => events,
            other => {
                // A follower behind, a leader change, an unreachable node:
                // find the leaders again and retry for a while.
                failures += 1;
                if failures > 50 {
                    let why = match other {
                        Ok(r) => format!("{r:?}"),
                        Err(e) => e.to_string(),
                    };
                    let _ = out.send(Err(anyhow::anyhow!("reading partition {partition} at {from}: {why}"))).await;
                    return;
                }
                client.refresh_leaders().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        failures = 0;
        let n = events.len() as u64;
        let records = events.iter().map(|b| EventRecord::decode(b).ok()).collect();
        if out.send(Ok((from, records))).await.is_err() {
            return;
        }
        from = from.plus(n);
    }
}

/// Exports `args`' range of the log `client` reaches (`node`: the address
/// to fall back on) into `args.out`.
///
/// # Errors
/// A directory that holds another export (or none, with
/// `--from-manifest`), an unreadable partition, or IO failure.
pub async fn export(client: &LogClient, node: &str, args: &ExportArgs) -> Result<Report> {
    let started = Instant::now();
    let cpu_started = own_cpu_seconds();
    let pseudonymizer = args.pseudonymize.as_deref().map(Pseudonymizer::new);
    let options = Options {
        format: args.format,
        row_group_rows: args.row_group_rows,
        part_rows: args.part_rows.max(1),
        pseudonymizer,
    };
    let total = client.partitions();
    let mut partitions: Vec<PartitionId> = if !args.partitions.is_empty() {
        args.partitions.iter().map(|p| PartitionId(*p)).collect()
    } else {
        (0..total).map(PartitionId).collect()
    };
    let check = |partitions: &[PartitionId]| match partitions.iter().find(|p| p.0 >= total) {
        Some(p) => bail!("partition {p} does not exist (the log has {total})"),
        None => Ok(()),
    };
    check(&partitions)?;
    let exporter = if args.from_manifest {
        let e = Exporter::resume(&args.out, options)?;
        if args.partitions.is_empty() {
            partitions = e.manifest().partitions.iter().map(|p| PartitionId(*p)).collect();
        }
        e
    } else {
        Exporter::create(&args.out, options, &partitions)?
    };
    let mut exporter = exporter;
    check(&partitions)?;
    partitions.sort();
    partitions.dedup();
    let ends = end_offsets(client, node, &partitions).await?;
    let manifest: Manifest = exporter.manifest().clone();

    let mut report = Report::default();
    // Each partition's range: rows from `start`; reading from 0 to warm the
    // row builder, unless the manifest's saved membership makes it warm.
    let ranges: HashMap<u16, (Offset, Offset, Offset)> = partitions
        .iter()
        .map(|p| {
            let end = ends.get(&p.0).copied().unwrap_or(Offset(0));
            let end = args.to_offset.map_or(end, |t| end.min(Offset(t)));
            let start = manifest.next_offset(*p).or(args.from_offset.map(Offset)).unwrap_or(Offset(0));
            let read_from = if exporter.warm(*p) { start } else { Offset(0) };
            (p.0, (read_from, start, end))
        })
        .collect();
    // Readers run ahead: a channel per partition, started `read_ahead` ahead.
    let mut readers: Vec<Option<mpsc::Receiver<Result<Batch>>>> = Vec::with_capacity(partitions.len());
    let spawn = |p: PartitionId| {
        let (tx, rx) = mpsc::channel(4);
        let (read_from, _, end) = ranges.get(&p.0).copied().unwrap_or_default();
        tokio::spawn(read_partition(client.clone(), node.to_owned(), p, (read_from, end), args.batch, tx));
        rx
    };
    for (i, p) in partitions.iter().enumerate() {
        readers.push(if i < args.read_ahead.max(1) { Some(spawn(*p)) } else { None });
    }
    for i in 0..partitions.len() {
        let Some(p) = partitions.get(i).copied() else { break };
        if let Some(next) = partitions.get(i + args.read_ahead.max(1)) {
            if let Some(slot) = readers.get_mut(i + args.read_ahead.max(1)) {
                *slot = Some(spawn(*next));
            }
        }
        let Some(mut rx) = readers.get_mut(i).and_then(Option::take) else { continue };
        let (_, start, end) = ranges.get(&p.0).copied().unwrap_or_default();
        // With --from-time, rows start at the first event at or after it.
        let mut started = args.from_time.is_none();
        let mut stopped_at = None;
        while let Some(batch) = rx.recv().await {
            let (from, records) = batch?;
            for (k, record) in records.iter().enumerate() {
                report.records += 1;
                let offset = from.plus(k as u64);
                if stopped_at.is_some() {
                    continue;
                }
                match record {
                    Some(r) if offset < start => exporter.observe(r),
                    Some(r) => {
                        if let Some(t) = args.to_time {
                            if r.event.at_ms > t {
                                stopped_at = Some(offset);
                                continue;
                            }
                        }
                        if !started && args.from_time.is_some_and(|t| r.event.at_ms >= t) {
                            started = true;
                        }
                        if !started {
                            exporter.observe(r);
                            continue;
                        }
                        exporter.export(r)?;
                        report.rows += 1;
                    }
                    None if offset < start => {}
                    None => {
                        report.unknown += 1;
                        if started {
                            exporter.write(&Row::unknown(p, offset))?;
                            report.rows += 1;
                        }
                    }
                }
            }
            if stopped_at.is_some() {
                break;
            }
        }
        exporter.covered(p, stopped_at.unwrap_or(end).max(start));
    }
    let summary = exporter.finish()?;
    report.files = summary.files;
    report.seconds = started.elapsed().as_secs_f64();
    report.cpu_seconds = own_cpu_seconds() - cpu_started;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_ms("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
        assert_eq!(rfc3339_ms("2023-11-14T22:13:20.5Z"), Some(1_700_000_000_500));
        assert_eq!(rfc3339_ms("2023-11-14T23:13:20+01:00"), Some(1_700_000_000_000));
        assert_eq!(rfc3339_ms("2023-13-14T22:13:20Z"), None);
        assert!(parse_time("yesterday").is_err());
    }
}
