//! The log-node's Prometheus metrics: their names (a contract with
//! dashboards, `docs/metrics.md` and `chorus status`) and the handles the hot
//! paths keep.
//!
//! The library only records through the [`metrics`] facade; the process that
//! runs a node (`chorus log-node`, `chorus dev`) installs the exporter and
//! serves `/metrics`. Without one installed, every call here is a no-op.
//!
//! Hot paths (the API's append, the proposer, the WAL syncer) hold
//! [`metrics::Counter`]/[`metrics::Histogram`] handles made once per group,
//! so recording is an atomic add, never a registry lookup. Gauges of state
//! that changes on every apply (next offsets) are sampled by one task
//! ([`sample`]) instead of being set on every change.

use std::time::Duration;

use chorus_schema::{GroupId, Offset, PartitionId};
use metrics::{counter, gauge, histogram, Counter, Histogram};
use tokio::sync::watch;

/// Commands appended (committed and answered), by `group`.
pub const APPENDS_TOTAL: &str = "chorus_log_appends_total";
/// Seconds from an append's arrival at the API to its answer (committed and
/// applied), by `group`.
pub const COMMIT_SECONDS: &str = "chorus_log_commit_seconds";
/// Log entries made durable by one fsync of the shared WAL.
pub const FSYNC_BATCH_ENTRIES: &str = "chorus_log_fsync_batch_entries";
/// Times this node saw a group's leader change, by `group`.
pub const LEADER_CHANGES_TOTAL: &str = "chorus_raft_leader_changes_total";
/// Snapshots, by `group` and `kind` (`built`: a checkpoint after which the log
/// is purged; `installed`: received from the leader).
pub const SNAPSHOTS_TOTAL: &str = "chorus_raft_snapshots_total";
/// Re-seeds from peers this node completed (after damaged storage).
pub const RESEEDS_TOTAL: &str = "chorus_log_reseeds_total";
/// The next event offset of each `partition` on this replica.
pub const NEXT_OFFSET: &str = "chorus_log_next_offset";
/// The Raft term of each `group` on this node.
pub const TERM: &str = "chorus_raft_term";
/// The last log index applied by each `group` on this node.
pub const LAST_APPLIED: &str = "chorus_raft_last_applied";
/// 1 for the group's leader, 0 elsewhere, by `group`.
pub const IS_LEADER: &str = "chorus_raft_is_leader";

/// Every metric of the log-node, for docs and tests.
pub const ALL: &[&str] = &[
    APPENDS_TOTAL,
    COMMIT_SECONDS,
    FSYNC_BATCH_ENTRIES,
    LEADER_CHANGES_TOTAL,
    SNAPSHOTS_TOTAL,
    RESEEDS_TOTAL,
    NEXT_OFFSET,
    TERM,
    LAST_APPLIED,
    IS_LEADER,
];

/// The handles of one group's append path.
#[derive(Clone)]
pub(crate) struct GroupMetrics {
    pub(crate) appends: Counter,
    pub(crate) commit_seconds: Histogram,
}

impl GroupMetrics {
    pub(crate) fn new(group: GroupId) -> GroupMetrics {
        let g = group.to_string();
        GroupMetrics {
            appends: counter!(APPENDS_TOTAL, "group" => g.clone()),
            commit_seconds: histogram!(COMMIT_SECONDS, "group" => g),
        }
    }
}

/// `kind` of [`SNAPSHOTS_TOTAL`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum SnapshotKind {
    Built,
    Installed,
}

pub(crate) fn snapshot(group: GroupId, kind: SnapshotKind) {
    let kind = match kind {
        SnapshotKind::Built => "built",
        SnapshotKind::Installed => "installed",
    };
    counter!(SNAPSHOTS_TOTAL, "group" => group.to_string(), "kind" => kind).increment(1);
}

/// Registers the counters that may stay at 0 for a long time (snapshots of
/// each of `groups`, re-seeds), so that a scrape shows them from the start.
pub(crate) fn register(groups: u16) {
    let _ = counter!(RESEEDS_TOTAL);
    for g in 0..groups {
        for kind in ["built", "installed"] {
            let _ = counter!(SNAPSHOTS_TOTAL, "group" => GroupId(g).to_string(), "kind" => kind);
        }
    }
}

/// Raft state of one group, set from its metrics whenever they change.
pub(crate) struct RaftGauges {
    term: metrics::Gauge,
    last_applied: metrics::Gauge,
    is_leader: metrics::Gauge,
    leader_changes: Counter,
    leader: Option<u64>,
}

impl RaftGauges {
    pub(crate) fn new(group: GroupId) -> RaftGauges {
        let g = group.to_string();
        RaftGauges {
            term: gauge!(TERM, "group" => g.clone()),
            last_applied: gauge!(LAST_APPLIED, "group" => g.clone()),
            is_leader: gauge!(IS_LEADER, "group" => g.clone()),
            leader_changes: counter!(LEADER_CHANGES_TOTAL, "group" => g),
            leader: None,
        }
    }

    #[expect(clippy::cast_precision_loss, reason = "a gauge is an f64; terms and indexes stay far below 2^53")]
    pub(crate) fn update(&mut self, me: u64, m: &crate::types::RaftMetrics) {
        self.term.set(m.current_term as f64);
        self.last_applied.set(m.last_applied.map_or(0, |l| l.index) as f64);
        self.is_leader.set(if m.current_leader == Some(me) { 1.0 } else { 0.0 });
        if m.current_leader.is_some() && m.current_leader != self.leader {
            // The first leader a node sees counts too: it changed from none.
            self.leader_changes.increment(1);
        }
        if m.current_leader.is_some() {
            self.leader = m.current_leader;
        }
    }
}

/// How often [`sample`] reads the partitions' next offsets.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// Sets [`NEXT_OFFSET`] of every partition every [`SAMPLE_EVERY`], until the
/// node's offsets are dropped.
pub(crate) async fn sample(offsets: std::sync::Weak<Vec<watch::Receiver<Offset>>>) {
    let mut gauges: Option<Vec<metrics::Gauge>> = None;
    loop {
        let Some(offsets) = offsets.upgrade() else { return };
        let gauges = gauges.get_or_insert_with(|| {
            (0..offsets.len())
                .map(|p| gauge!(NEXT_OFFSET, "partition" => PartitionId(u16::try_from(p).unwrap_or(u16::MAX)).to_string()))
                .collect()
        });
        for (g, o) in gauges.iter().zip(offsets.iter()) {
            #[expect(clippy::cast_precision_loss, reason = "a gauge is an f64; offsets stay far below 2^53")]
            g.set(o.borrow().0 as f64);
        }
        drop(offsets);
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}
