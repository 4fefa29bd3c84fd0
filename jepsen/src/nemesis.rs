//! Nemeses: real faults on the cluster, on a schedule reproducible from a seed.
//!
//! A [`Schedule`] is a pure function of `(seed, time, kinds)`: when each fault
//! starts, how long it lasts, its kind and a `pick` that chooses its targets.
//! Targets that depend on the cluster's state (the leader of a partition) are
//! resolved when the fault starts, by asking the nodes; what was chosen is
//! recorded in the history as a `nemesis` entry at start and at stop.
//!
//! Faults do not overlap: each one is healed before the next begins, and the
//! gap between them lets the cluster recover (or not: a write stall shows in
//! the report).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chorus_log_node::LogClient;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::history::{Entry, FaultPhase};
use crate::recorder::Recorder;
use chorus_testkit::cluster::{Cluster, CorruptFile};

/// The kinds of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// `kill -9` a random node, restart it at the end.
    Kill,
    /// `kill -9` the leader of a random partition.
    KillLeader,
    /// `kill -9` a random minority of the nodes.
    KillMinority,
    /// `kill -9` every node at once (a power failure), restart them all.
    KillAll,
    /// `SIGSTOP` a random node, `SIGCONT` at the end.
    Pause,
    /// `SIGSTOP` the leader of a random partition.
    PauseLeader,
    /// Cut a random minority of the nodes from the majority, both ways.
    PartitionHalves,
    /// Cut the leader of a random partition from every other node.
    PartitionLeader,
    /// Two sides that cannot talk, and one node that talks to both.
    PartitionBridge,
    /// One node's packets out (or in) are dropped, the other direction passes.
    PartitionOneWay,
    /// `kill -9` a random node and drop what it wrote but never fsynced (its
    /// machine lost power); restart it at the end.
    LoseUnsynced,
    /// Every node loses power at once: `kill -9` all, drop every un-fsynced write.
    PowerFailure,
    /// `kill -9` the projector (mid-batch, whatever it is doing); restart it.
    KillProjector,
    /// `kill -9` the nats-server; restart it on the same port.
    KillNats,
    /// `kill -9` a random edge mid-stream; restart it on the same port at the
    /// end. Its clients must fail over to the other edge.
    KillEdge,
    /// `kill -9` a random node, flip bytes in its newest write-ahead log;
    /// restart it. The node must find the damage and re-seed from its peers.
    /// Never while another node is still re-seeding (damage stays on a minority).
    CorruptWal,
    /// `kill -9` a random node, flip bytes in one of its table files (which
    /// hold the log, the snapshots and the events); restart it. As `CorruptWal`.
    CorruptSst,
    /// Two faults at once: a partition of any kind (chosen by the seed) and a
    /// process fault from [`FaultKind::COMBINABLE`] on any node, the partition's
    /// majority side included (then no side may have a quorum).
    Combined,
}

impl FaultKind {
    /// Every kind that a correct chorus must survive with no anomaly.
    pub const ALL: [FaultKind; 18] = [
        FaultKind::Kill,
        FaultKind::KillLeader,
        FaultKind::KillMinority,
        FaultKind::KillAll,
        FaultKind::Pause,
        FaultKind::PauseLeader,
        FaultKind::PartitionHalves,
        FaultKind::PartitionLeader,
        FaultKind::PartitionBridge,
        FaultKind::PartitionOneWay,
        FaultKind::LoseUnsynced,
        FaultKind::PowerFailure,
        FaultKind::KillProjector,
        FaultKind::KillNats,
        FaultKind::KillEdge,
        FaultKind::CorruptWal,
        FaultKind::CorruptSst,
        FaultKind::Combined,
    ];

    /// Process faults that may run together with a partition in a
    /// [`FaultKind::Combined`] fault.
    pub const COMBINABLE: [FaultKind; 8] = [
        FaultKind::Kill,
        FaultKind::KillLeader,
        FaultKind::Pause,
        FaultKind::PauseLeader,
        FaultKind::LoseUnsynced,
        FaultKind::KillProjector,
        FaultKind::KillNats,
        FaultKind::KillEdge,
    ];

    /// Damaged files on one node.
    pub const CORRUPT: [FaultKind; 2] = [FaultKind::CorruptWal, FaultKind::CorruptSst];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillMinority => "kill-minority",
            FaultKind::KillAll => "kill-all",
            FaultKind::Pause => "pause",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::PartitionHalves => "partition-halves",
            FaultKind::PartitionLeader => "partition-leader",
            FaultKind::PartitionBridge => "partition-bridge",
            FaultKind::PartitionOneWay => "partition-one-way",
            FaultKind::LoseUnsynced => "lose-unsynced",
            FaultKind::PowerFailure => "power-failure",
            FaultKind::KillProjector => "kill-projector",
            FaultKind::KillNats => "kill-nats",
            FaultKind::KillEdge => "kill-edge",
            FaultKind::CorruptWal => "corrupt-wal",
            FaultKind::CorruptSst => "corrupt-sst",
            FaultKind::Combined => "combined",
        }
    }

    /// Whether the fault needs the sync shim (see [`crate::sync_shim`]).
    pub fn needs_sync_shim(self) -> bool {
        matches!(self, FaultKind::LoseUnsynced | FaultKind::PowerFailure | FaultKind::Combined)
    }

    /// Whether the fault needs the projector and the bus.
    pub fn needs_services(self) -> bool {
        matches!(self, FaultKind::KillProjector | FaultKind::KillNats | FaultKind::KillEdge)
    }

    /// Whether the fault needs edges (the SDK executor).
    pub fn needs_edges(self) -> bool {
        matches!(self, FaultKind::KillEdge)
    }

    fn is_partition(self) -> bool {
        matches!(
            self,
            FaultKind::PartitionHalves
                | FaultKind::PartitionLeader
                | FaultKind::PartitionBridge
                | FaultKind::PartitionOneWay
        )
    }

    /// Parses a comma-separated list of kind names and groups: `all`, `none`,
    /// `kill` (every kill kind), `pause`, `partition`, `disk` (lose-unsynced,
    /// power-failure), `services` (kill-projector, kill-nats, kill-edge), `corrupt`
    /// (corrupt-wal, corrupt-sst; not in `all`). Order and repeats do not matter.
    ///
    /// # Errors
    /// On an unknown name.
    pub fn parse_list(list: &str) -> Result<Vec<FaultKind>> {
        let mut out = BTreeSet::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let group: Vec<FaultKind> = match name {
                "all" => FaultKind::ALL.to_vec(),
                "none" => Vec::new(),
                "kill" | "kills" => {
                    vec![FaultKind::Kill, FaultKind::KillLeader, FaultKind::KillMinority, FaultKind::KillAll]
                }
                "pause" | "pauses" => vec![FaultKind::Pause, FaultKind::PauseLeader],
                "partition" | "partitions" => FaultKind::ALL.into_iter().filter(|k| k.is_partition()).collect(),
                "disk" => vec![FaultKind::LoseUnsynced, FaultKind::PowerFailure],
                "services" => vec![FaultKind::KillProjector, FaultKind::KillNats, FaultKind::KillEdge],
                "corrupt" => FaultKind::CORRUPT.to_vec(),
                other => match FaultKind::ALL.into_iter().find(|k| k.name() == other) {
                    Some(k) => vec![k],
                    None => {
                        let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                        return Err(Error::Invalid(format!(
                            "unknown nemesis {other:?}; use all, none, kill, pause, partition, disk, services, corrupt or one of {names:?}"
                        )));
                    }
                },
            };
            out.extend(group);
        }
        Ok(out.into_iter().collect())
    }
}

/// One planned fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    pub id: u64,
    /// Start, since the workload began.
    pub at_ms: u64,
    pub duration_ms: u64,
    pub kind: FaultKind,
    /// Seeds the choice of targets.
    pub pick: u64,
}

/// Fault timing bounds of a schedule.
#[derive(Clone, Debug)]
pub struct Timing {
    /// Quiet time before the first fault.
    pub warmup: Duration,
    pub fault_min: Duration,
    pub fault_max: Duration,
    pub gap_min: Duration,
    pub gap_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            warmup: Duration::from_secs(2),
            fault_min: Duration::from_millis(1_500),
            fault_max: Duration::from_millis(3_500),
            gap_min: Duration::from_millis(1_500),
            gap_max: Duration::from_millis(2_500),
        }
    }
}

/// The faults of a run, in time order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Schedule {
    pub seed: u64,
    pub steps: Vec<Step>,
}

impl Schedule {
    /// Plans faults of `kinds` within `time`: each kind once, in a seeded
    /// order, before any kind repeats; every fault ends by `time`.
    pub fn generate(seed: u64, time: Duration, kinds: &[FaultKind], timing: &Timing) -> Schedule {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut steps = Vec::new();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut at = ms(timing.warmup);
        let mut bag: Vec<FaultKind> = Vec::new();
        while !kinds.is_empty() {
            if bag.is_empty() {
                bag = kinds.to_vec();
                bag.shuffle(&mut rng);
            }
            let duration = rng.gen_range(ms(timing.fault_min)..=ms(timing.fault_max));
            if at + duration > ms(time) {
                break;
            }
            let kind = bag.remove(0);
            steps.push(Step { id: steps.len() as u64 + 1, at_ms: at, duration_ms: duration, kind, pick: rng.gen() });
            at += duration + rng.gen_range(ms(timing.gap_min)..=ms(timing.gap_max));
        }
        Schedule { seed, steps }
    }
}

/// A fault as it happened.
#[derive(Clone, Debug, Serialize)]
pub struct Window {
    pub id: u64,
    pub kind: FaultKind,
    pub targets: Vec<u64>,
    /// Directed links cut (partitions only).
    pub cut: Vec<(u64, u64)>,
    pub detail: String,
    pub start_ns: u64,
    pub stop_ns: u64,
}

/// What a started fault needs to be undone.
#[derive(Debug)]
struct Active {
    targets: Vec<u64>,
    cut: BTreeSet<(u64, u64)>,
    detail: String,
    /// The faults of a [`FaultKind::Combined`] one, each with its own undo.
    parts: Vec<(FaultKind, Active)>,
}

/// Runs a schedule against a cluster.
#[derive(Debug)]
pub struct Nemesis {
    pub cluster: Arc<Mutex<Cluster>>,
    /// For status requests (leader lookups).
    pub client: LogClient,
    pub recorder: Arc<Recorder>,
}

impl Nemesis {
    /// Runs every step at its time (relative to the recorder's time 0 plus
    /// `offset`), healing each before the next. Returns the faults as they happened.
    ///
    /// # Errors
    /// When a fault cannot be applied or undone (a process cannot be started,
    /// a signal cannot be sent).
    pub async fn run(&self, schedule: &Schedule, offset: Duration) -> Result<Vec<Window>> {
        let base = tokio::time::Instant::from_std(self.recorder.start()) + offset;
        let mut windows = Vec::new();
        for step in &schedule.steps {
            tokio::time::sleep_until(base + Duration::from_millis(step.at_ms)).await;
            let start_ns = self.recorder.now_ns();
            let active = self.begin(step.kind, step.pick).await?;
            tracing::info!(fault = step.kind.name(), targets = ?active.targets, detail = %active.detail, "fault started");
            self.record(step, FaultPhase::Start, &active);
            tokio::time::sleep_until(base + Duration::from_millis(step.at_ms + step.duration_ms)).await;
            self.end(step.kind, &active).await?;
            let stop_ns = self.recorder.now_ns();
            self.record(step, FaultPhase::Stop, &active);
            tracing::info!(fault = step.kind.name(), "fault healed");
            windows.push(Window {
                id: step.id,
                kind: step.kind,
                targets: active.targets,
                cut: active.cut.into_iter().collect(),
                detail: active.detail,
                start_ns,
                stop_ns,
            });
        }
        Ok(windows)
    }

    fn record(&self, step: &Step, phase: FaultPhase, active: &Active) {
        self.recorder.push(Entry::Nemesis {
            id: step.id,
            time_ns: self.recorder.now_ns(),
            phase,
            fault: step.kind.name().into(),
            targets: active.targets.clone(),
            detail: active.detail.clone(),
        });
    }

    /// The leader of partition `pick mod P`, or a random node if none is known.
    async fn leader(&self, pick: u64, rng: &mut StdRng) -> Result<(u64, String)> {
        let cluster = self.cluster.lock().await;
        let partitions = cluster.spec.partitions;
        // Less than `partitions`, a u16: the fallback is never taken.
        let partition = u16::try_from(pick % u64::from(partitions)).unwrap_or_default();
        match cluster.leader_of(&self.client, partition).await {
            Some(id) => Ok((id, format!("leader of partition {partition}"))),
            None => {
                let ids = cluster.ids();
                let id = *ids.choose(rng).ok_or_else(|| Error::Cluster("the cluster has no nodes".into()))?;
                Ok((id, format!("partition {partition} has no leader; a random node")))
            }
        }
    }

    async fn begin(&self, kind: FaultKind, pick: u64) -> Result<Active> {
        if kind != FaultKind::Combined {
            return self.begin_one(kind, pick).await;
        }
        let partitions: Vec<FaultKind> = FaultKind::ALL.into_iter().filter(|k| k.is_partition()).collect();
        let network =
            picked(&partitions, pick).ok_or_else(|| Error::Invalid("no partition fault to combine".into()))?;
        let mut process = picked(&FaultKind::COMBINABLE, pick >> 16)
            .ok_or_else(|| Error::Invalid("no process fault to combine".into()))?;
        {
            let cluster = self.cluster.lock().await;
            let missing = (process.needs_services() && cluster.projector.is_none())
                || (process.needs_edges() && cluster.edges.is_empty());
            if missing {
                process = FaultKind::Kill; // a run without the bus, projector or edges
            }
        }
        let mut parts = Vec::new();
        for (k, p) in [(network, pick), (process, pick.rotate_left(29))] {
            match self.begin_one(k, p).await {
                Ok(a) => parts.push((k, a)),
                Err(e) => {
                    // Undo what already began before reporting.
                    for (k, a) in parts.iter().rev() {
                        let _ = self.end(*k, a).await;
                    }
                    return Err(e);
                }
            }
        }
        let mut targets: Vec<u64> = parts.iter().flat_map(|(_, a)| a.targets.iter().copied()).collect();
        targets.sort_unstable();
        targets.dedup();
        let detail = parts.iter().map(|(k, a)| format!("{}: {}", k.name(), a.detail)).collect::<Vec<_>>().join(" + ");
        let cut = parts.iter().flat_map(|(_, a)| a.cut.iter().copied()).collect();
        Ok(Active { targets, cut, detail, parts })
    }

    async fn begin_one(&self, kind: FaultKind, pick: u64) -> Result<Active> {
        let mut rng = StdRng::seed_from_u64(pick);
        let mut ids = self.cluster.lock().await.ids();
        ids.shuffle(&mut rng);
        // The first node (a random one) and the others.
        let first = ids.first().copied().ok_or_else(|| Error::Cluster("the cluster has no nodes".into()));
        let rest = ids.get(1..).unwrap_or_default();
        let n = ids.len();
        let minority = (n.saturating_sub(1) / 2).max(1);
        let (targets, detail, cut): (Vec<u64>, String, BTreeSet<(u64, u64)>) = match kind {
            FaultKind::Kill
            | FaultKind::Pause
            | FaultKind::LoseUnsynced
            | FaultKind::CorruptWal
            | FaultKind::CorruptSst => (vec![first?], "a random node".into(), BTreeSet::new()),
            FaultKind::KillLeader | FaultKind::PauseLeader => {
                let (id, detail) = self.leader(pick, &mut rng).await?;
                (vec![id], detail, BTreeSet::new())
            }
            FaultKind::KillMinority => {
                (ids.iter().take(minority).copied().collect(), format!("{minority} of {n} nodes"), BTreeSet::new())
            }
            FaultKind::Combined => return Err(Error::Invalid("a combined fault begins as its parts".into())),
            FaultKind::KillProjector => (Vec::new(), "the projector".into(), BTreeSet::new()),
            FaultKind::KillNats => (Vec::new(), "the nats-server".into(), BTreeSet::new()),
            FaultKind::KillEdge => {
                let edges = self.cluster.lock().await.edges.len().max(1) as u64;
                let edge = pick % edges;
                (vec![edge], format!("edge {edge}"), BTreeSet::new())
            }
            FaultKind::KillAll | FaultKind::PowerFailure => {
                let mut all = ids.clone();
                all.sort_unstable();
                (all, "every node".into(), BTreeSet::new())
            }
            FaultKind::PartitionHalves => {
                let (small, big) = ids.split_at(minority);
                (small.to_vec(), format!("{small:?} | {big:?}"), cut_between(small, big))
            }
            FaultKind::PartitionLeader => {
                let (leader, detail) = self.leader(pick, &mut rng).await?;
                let others: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
                (vec![leader], format!("{detail} isolated"), cut_between(&[leader], &others))
            }
            FaultKind::PartitionBridge => {
                let bridge = first?;
                let (a, b) = rest.split_at(rest.len() / 2);
                (vec![bridge], format!("{a:?} | {b:?}, node {bridge} bridges"), cut_between(a, b))
            }
            FaultKind::PartitionOneWay => {
                let node = first?;
                let others = rest;
                let outbound = rng.gen_bool(0.5);
                let cut = others.iter().map(|o| if outbound { (node, *o) } else { (*o, node) }).collect();
                let detail =
                    if outbound { format!("node {node} cannot send") } else { format!("node {node} cannot hear") };
                (vec![node], detail, cut)
            }
        };
        let mut detail = detail;
        let mut cluster = self.cluster.lock().await;
        match kind {
            FaultKind::Kill | FaultKind::KillLeader | FaultKind::KillMinority | FaultKind::KillAll => {
                for id in &targets {
                    cluster.kill(*id);
                }
            }
            FaultKind::LoseUnsynced | FaultKind::PowerFailure => {
                // Every target goes down first: a power failure is one instant.
                for id in &targets {
                    cluster.kill(*id);
                }
                let mut lost = Vec::new();
                for id in &targets {
                    let (files, bytes) = cluster.lose_unsynced(*id)?;
                    lost.push(format!("node {id} lost {bytes} bytes in {files} files"));
                }
                detail = format!("{detail}; {}", lost.join(", "));
            }
            FaultKind::CorruptWal | FaultKind::CorruptSst => {
                let file = if kind == FaultKind::CorruptWal { CorruptFile::Wal } else { CorruptFile::Sst };
                // Damage stays on a minority: a node still re-seeding from an
                // earlier corruption has not got its data back yet, and damaging
                // another one meanwhile would be damage on a majority.
                let deadline = tokio::time::Instant::now() + RESEED_WAIT;
                while !cluster.reseeding().is_empty() && tokio::time::Instant::now() < deadline {
                    drop(cluster);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    cluster = self.cluster.lock().await;
                }
                let busy = cluster.reseeding();
                if !busy.is_empty() {
                    for id in &targets {
                        cluster.kill(*id);
                    }
                    detail = format!("{detail}; not damaged: nodes {busy:?} still re-seeding after {RESEED_WAIT:?}");
                    return Ok(Active { targets, cut, detail, parts: Vec::new() });
                }
                for id in &targets {
                    cluster.kill(*id);
                    let done = cluster.corrupt(*id, file, pick)?;
                    detail = format!("{detail}; {}", done.unwrap_or_else(|| format!("node {id} has no such file")));
                }
            }
            FaultKind::KillProjector => match &mut cluster.projector {
                Some(p) => p.kill(),
                None => return Err(Error::Invalid("kill-projector needs a projector (views on)".into())),
            },
            FaultKind::KillNats => match &mut cluster.nats {
                Some(n) => n.kill(),
                None => return Err(Error::Invalid("kill-nats needs a nats-server (views on)".into())),
            },
            FaultKind::KillEdge => match edge_index(&targets).and_then(|i| cluster.edges.get_mut(i)) {
                Some(e) => e.kill(),
                None => return Err(Error::Invalid("kill-edge needs edges (the SDK executor)".into())),
            },
            FaultKind::Pause | FaultKind::PauseLeader => {
                for id in &targets {
                    cluster.pause(*id)?;
                }
            }
            _ => cluster.links.set(&cut),
        }
        Ok(Active { targets, cut, detail, parts: Vec::new() })
    }

    async fn end(&self, kind: FaultKind, active: &Active) -> Result<()> {
        if kind == FaultKind::Combined {
            for (k, a) in active.parts.iter().rev() {
                Box::pin(self.end(*k, a)).await?;
            }
            return Ok(());
        }
        let mut cluster = self.cluster.lock().await;
        match kind {
            FaultKind::Kill
            | FaultKind::KillLeader
            | FaultKind::KillMinority
            | FaultKind::KillAll
            | FaultKind::LoseUnsynced
            | FaultKind::PowerFailure
            | FaultKind::CorruptWal
            | FaultKind::CorruptSst => {
                for id in &active.targets {
                    cluster.start(*id)?;
                }
            }
            FaultKind::Pause | FaultKind::PauseLeader => {
                for id in &active.targets {
                    cluster.resume(*id)?;
                }
            }
            FaultKind::KillProjector => {
                if let Some(p) = &mut cluster.projector {
                    p.start()?;
                }
            }
            FaultKind::KillNats => {
                if let Some(n) = &mut cluster.nats {
                    tokio::task::block_in_place(|| n.ensure_running())?;
                }
            }
            FaultKind::KillEdge => {
                if let Some(e) = edge_index(&active.targets).and_then(|i| cluster.edges.get_mut(i)) {
                    e.start()?;
                }
            }
            _ => cluster.links.heal(),
        }
        Ok(())
    }
}

/// How long a corruption fault waits for an earlier one's re-seed to finish.
const RESEED_WAIT: Duration = Duration::from_secs(20);

/// The item at `pick mod len`, if there is any.
fn picked<T: Copy>(items: &[T], pick: u64) -> Option<T> {
    let i = pick.checked_rem(items.len() as u64)?;
    items.get(usize::try_from(i).ok()?).copied()
}

/// The edge a kill-edge fault targets (its only target).
fn edge_index(targets: &[u64]) -> Option<usize> {
    targets.first().and_then(|t| usize::try_from(*t).ok())
}

/// Both directions of every link between `a` and `b`.
fn cut_between(a: &[u64], b: &[u64]) -> BTreeSet<(u64, u64)> {
    let mut cut = BTreeSet::new();
    for x in a {
        for y in b {
            cut.insert((*x, *y));
            cut.insert((*y, *x));
        }
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_schedule_and_every_kind_before_a_repeat() {
        let t = Timing::default();
        let a = Schedule::generate(7, Duration::from_secs(120), &FaultKind::ALL, &t);
        let b = Schedule::generate(7, Duration::from_secs(120), &FaultKind::ALL, &t);
        assert_eq!(a, b);
        assert_ne!(a, Schedule::generate(8, Duration::from_secs(120), &FaultKind::ALL, &t));
        let first: BTreeSet<FaultKind> = a.steps.iter().take(FaultKind::ALL.len()).map(|s| s.kind).collect();
        assert_eq!(first.len(), FaultKind::ALL.len(), "{:?}", a.steps);
        for w in a.steps.windows(2) {
            assert!(w[0].at_ms + w[0].duration_ms < w[1].at_ms, "faults overlap: {w:?}");
        }
        assert!(a.steps.last().map(|s| s.at_ms + s.duration_ms <= 120_000).unwrap());
        assert!(Schedule::generate(1, Duration::from_secs(60), &[], &t).steps.is_empty());
    }

    #[test]
    fn kind_lists_parse() {
        assert_eq!(FaultKind::parse_list("all").unwrap(), FaultKind::ALL.to_vec());
        assert_eq!(
            FaultKind::parse_list("pause,kill-all").unwrap(),
            vec![FaultKind::KillAll, FaultKind::Pause, FaultKind::PauseLeader]
        );
        assert_eq!(FaultKind::parse_list("partition").unwrap().len(), 4);
        assert_eq!(FaultKind::parse_list("disk").unwrap(), vec![FaultKind::LoseUnsynced, FaultKind::PowerFailure]);
        assert!(FaultKind::parse_list("none").unwrap().is_empty());
        assert!(FaultKind::parse_list("flood").is_err());
        assert_eq!(FaultKind::parse_list("corrupt,corrupt-wal").unwrap(), FaultKind::CORRUPT.to_vec());
        assert!(FaultKind::parse_list("all").unwrap().contains(&FaultKind::CorruptSst));
        assert_eq!(FaultKind::parse_list("combined").unwrap(), vec![FaultKind::Combined]);
        // Combined faults pair a partition with a process fault, never two
        // damaged stores or a fault of every node.
        assert!(FaultKind::COMBINABLE.iter().all(|k| !k.is_partition() && !FaultKind::CORRUPT.contains(k)));
        assert!(
            !FaultKind::COMBINABLE.contains(&FaultKind::KillAll)
                && !FaultKind::COMBINABLE.contains(&FaultKind::PowerFailure)
        );
    }

    #[test]
    fn cuts_are_symmetric_between_sides() {
        let c = cut_between(&[1], &[2, 3]);
        assert_eq!(c, [(1, 2), (2, 1), (1, 3), (3, 1)].into_iter().collect());
    }
}
