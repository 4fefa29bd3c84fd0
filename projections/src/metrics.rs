//! The projector's Prometheus metrics: their names (a contract with
//! dashboards, `docs/metrics.md` and `chorus status`) and the handles the
//! projector keeps.
//!
//! The library only records through the [`metrics`] facade; the process that
//! runs the projector (`chorus projector`, `chorus dev`) installs the exporter
//! and serves `/metrics`.
//!
//! The lag needs the log's end: [`sample_lag`] asks the log nodes for their
//! status once a second (one small request per node) and takes, per
//! partition, the furthest next offset any node reports.

use std::collections::HashMap;
use std::time::Duration;

use chorus_schema::bus::subject;
use chorus_schema::{Offset, PartitionId};
use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

/// The projector's cursor of each `partition`: the next offset to fold.
pub const NEXT_OFFSET: &str = "chorus_projector_next_offset";
/// The log's end of each `partition` (the furthest next offset a log node
/// reported), sampled once a second.
pub const LOG_END_OFFSET: &str = "chorus_projector_log_end_offset";
/// Events of each `partition` in the log and not yet folded (log end −
/// cursor, 0 when the cursor is ahead of the last sample).
pub const LAG_EVENTS: &str = "chorus_projector_lag_events";
/// Records folded (committed into the views).
pub const RECORDS_TOTAL: &str = "chorus_projector_records_total";
/// Seconds to answer one view query, by `view` (the subject's last part,
/// e.g. `chat_list`).
pub const VIEW_QUERY_SECONDS: &str = "chorus_view_query_seconds";
/// Bus messages published, by `kind` (`deliver`, `receipt`, `account`,
/// `presence`, `joined`).
pub const BUS_PUBLISHED_TOTAL: &str = "chorus_bus_published_total";
/// Publishes the bus refused (the effect is lost; the views have it).
pub const BUS_PUBLISH_ERRORS_TOTAL: &str = "chorus_bus_publish_errors_total";

// ---- push (issue 14) ----
/// Pushes the sink accepted (one per (user, chat) per window; see `docs/push-webhook.md`).
pub const PUSH_SENT_TOTAL: &str = "chorus_push_sent_total";
/// Pushes given up: refused with a 4xx, or still failing after the last attempt.
pub const PUSH_FAILED_TOTAL: &str = "chorus_push_failed_total";
/// Messages folded into a push already waiting for its (user, chat) window.
pub const PUSH_COALESCED_TOTAL: &str = "chorus_push_coalesced_total";
/// Messages not pushed because the notifier's queue or window table was full.
pub const PUSH_DROPPED_TOTAL: &str = "chorus_push_dropped_total";

/// Every metric of the projector, for docs and tests.
pub const ALL: &[&str] = &[
    NEXT_OFFSET,
    LOG_END_OFFSET,
    LAG_EVENTS,
    RECORDS_TOTAL,
    VIEW_QUERY_SECONDS,
    BUS_PUBLISHED_TOTAL,
    BUS_PUBLISH_ERRORS_TOTAL,
    PUSH_SENT_TOTAL,
    PUSH_FAILED_TOTAL,
    PUSH_COALESCED_TOTAL,
    PUSH_DROPPED_TOTAL,
];

/// What a bus message published by the projector is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Published {
    Deliver,
    Receipt,
    Account,
    Presence,
    Joined,
}

impl Published {
    const ALL: [Published; 5] =
        [Published::Deliver, Published::Receipt, Published::Account, Published::Presence, Published::Joined];

    fn label(self) -> &'static str {
        match self {
            Published::Deliver => "deliver",
            Published::Receipt => "receipt",
            Published::Account => "account",
            Published::Presence => "presence",
            Published::Joined => "joined",
        }
    }
}

/// The projector's handles, made once.
pub(crate) struct Metrics {
    pub(crate) records: Counter,
    published: [Counter; 5],
    pub(crate) publish_errors: Counter,
    /// By view subject.
    views: HashMap<&'static str, Histogram>,
    /// By partition.
    next_offsets: Vec<Gauge>,
}

fn view_label(subject: &str) -> &str {
    subject.rsplit('.').next().unwrap_or(subject)
}

impl Metrics {
    pub(crate) fn new(partitions: u16) -> Metrics {
        // The push counters exist (at 0) whether push is configured or not,
        // so dashboards and the docs test see every documented name.
        for name in [PUSH_SENT_TOTAL, PUSH_FAILED_TOTAL, PUSH_COALESCED_TOTAL, PUSH_DROPPED_TOTAL] {
            counter!(name).increment(0);
        }
        Metrics {
            records: counter!(RECORDS_TOTAL),
            published: Published::ALL.map(|k| counter!(BUS_PUBLISHED_TOTAL, "kind" => k.label())),
            publish_errors: counter!(BUS_PUBLISH_ERRORS_TOTAL),
            views: subject::VIEWS
                .iter()
                .map(|s| (*s, histogram!(VIEW_QUERY_SECONDS, "view" => view_label(s).to_owned())))
                .collect(),
            next_offsets: (0..partitions)
                .map(|p| gauge!(NEXT_OFFSET, "partition" => PartitionId(p).to_string()))
                .collect(),
        }
    }

    pub(crate) fn published(&self, kind: Published) {
        // `ALL` lists every kind, in declaration order.
        if let Some(c) = self.published.get(kind as usize) {
            c.increment(1);
        }
    }

    pub(crate) fn view_query(&self, subject: &str, seconds: f64) {
        match self.views.get(subject) {
            Some(h) => h.record(seconds),
            None => histogram!(VIEW_QUERY_SECONDS, "view" => view_label(subject).to_owned()).record(seconds),
        }
    }

    #[expect(clippy::cast_precision_loss, reason = "a gauge is an f64; offsets stay far below 2^53")]
    pub(crate) fn next_offset(&self, partition: PartitionId, next: Offset) {
        if let Some(g) = self.next_offsets.get(usize::from(partition.0)) {
            g.set(next.0 as f64);
        }
    }

    /// Sets every partition's cursor (at start).
    pub(crate) fn next_offsets(&self, offsets: &[Offset]) {
        for (p, o) in (0u16..).zip(offsets) {
            self.next_offset(PartitionId(p), *o);
        }
    }
}

/// How often [`sample_lag`] asks the log for its ends.
pub(crate) const LAG_EVERY: Duration = Duration::from_secs(1);

/// Sets [`LOG_END_OFFSET`] and [`LAG_EVENTS`] of every partition from the
/// log's ends (the furthest next offset any of `nodes` reports) and the
/// projector's cursors (`progress`), every [`LAG_EVERY`], until `stop`.
pub(crate) async fn sample_lag(
    client: chorus_log_node::LogClient,
    nodes: Vec<String>,
    progress: tokio::sync::watch::Receiver<Vec<Offset>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let partitions = client.partitions();
    let ends_g: Vec<Gauge> =
        (0..partitions).map(|p| gauge!(LOG_END_OFFSET, "partition" => PartitionId(p).to_string())).collect();
    let lag_g: Vec<Gauge> =
        (0..partitions).map(|p| gauge!(LAG_EVENTS, "partition" => PartitionId(p).to_string())).collect();
    loop {
        let mut ends: Vec<Option<u64>> = vec![None; usize::from(partitions)];
        for addr in &nodes {
            let Ok(Ok(status)) = tokio::time::timeout(LAG_EVERY, client.status(addr)).await else { continue };
            for p in status.partitions {
                if let Some(e) = ends.get_mut(usize::from(p.partition.0)) {
                    *e = Some(e.map_or(p.next_offset.0, |e| e.max(p.next_offset.0)));
                }
            }
        }
        let cursors = progress.borrow().clone();
        for ((end, cursor), (end_g, lag_g)) in ends.iter().zip(&cursors).zip(ends_g.iter().zip(&lag_g)) {
            // A partition no node answered for keeps its last sample.
            let Some(end) = end else { continue };
            #[expect(clippy::cast_precision_loss, reason = "a gauge is an f64; offsets stay far below 2^53")]
            {
                end_g.set(*end as f64);
                lag_g.set(end.saturating_sub(cursor.0) as f64);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(LAG_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}
