//! Numbers about a run beyond correctness: throughput and latency over time,
//! and how long writes stalled around each fault.
//!
//! Stalls are measured per partition, since a fault usually stops only the
//! partitions whose leader it hit: for each partition, the longest stretch
//! without any acknowledged write that overlaps the fault window, and the time
//! from the fault's end to the partition's first acknowledged write after it.
//! The worst partition is reported.

use std::collections::BTreeMap;

use chorus_schema::{Key, PartitionId};
use serde::Serialize;

use crate::history::{Op, Operation, Outcome};
use crate::nemesis::{FaultKind, Window};

/// One fault with its effect on writes.
#[derive(Clone, Debug, Serialize)]
pub struct FaultReport {
    pub id: u64,
    pub kind: FaultKind,
    pub targets: Vec<u64>,
    pub cut: Vec<(u64, u64)>,
    pub detail: String,
    pub start_ms: u64,
    pub duration_ms: u64,
    /// The longest stretch without an acknowledged write in one partition that
    /// overlaps the fault (the partition is `stall_partition`).
    pub stall_ms: u64,
    pub stall_partition: Option<u16>,
    /// From the fault's end to the first acknowledged write after it, in the
    /// slowest partition (`None`: some partition had none until the end).
    pub recovery_ms: Option<u64>,
}

fn partition_of(op: &Op, partitions: u16) -> Option<u16> {
    let chat = match op {
        Op::Send { chat, .. } | Op::AddMember { chat, .. } | Op::RemoveMember { chat, .. } | Op::Ack { chat, .. } => {
            chat
        }
        Op::Read { .. } | Op::DeviceRead { .. } | Op::Reconnect { .. } => return None,
    };
    Some(PartitionId::for_key(&Key::Chat(*chat), partitions).0)
}

/// Completion times of acknowledged writes per partition, sorted.
fn ok_writes(ops: &[Operation], partitions: u16) -> BTreeMap<u16, Vec<u64>> {
    let mut per: BTreeMap<u16, Vec<u64>> = BTreeMap::new();
    for o in ops {
        if let (Outcome::Ok(_), Some(done), Some(p)) = (&o.outcome, o.complete_ns, partition_of(&o.op, partitions)) {
            per.entry(p).or_default().push(done);
        }
    }
    for v in per.values_mut() {
        v.sort_unstable();
    }
    per
}

/// Stall and recovery of every fault window.
pub fn faults(windows: &[Window], ops: &[Operation], partitions: u16) -> Vec<FaultReport> {
    let per = ok_writes(ops, partitions);
    let end = ops.iter().filter_map(|o| o.complete_ns).max().unwrap_or(0);
    windows
        .iter()
        .map(|w| {
            let (s, e) = (w.start_ns, w.stop_ns);
            let mut stall = (0u64, None);
            let mut recovery = Some(0u64);
            for (p, times) in &per {
                let Some((&first, rest)) = times.split_first().filter(|(t, _)| **t <= s) else {
                    continue; // the partition had no writes yet: nothing to stall
                };
                // Gaps between consecutive acks (and from the last ack to the end).
                let mut prev = first;
                for t in rest.iter().copied().chain(std::iter::once(end.max(prev))) {
                    if prev < e && t > s && t - prev > stall.0 {
                        stall = (t - prev, Some(*p));
                    }
                    prev = t;
                }
                recovery = match (recovery, times.iter().find(|t| **t >= e)) {
                    (Some(r), Some(t)) => Some(r.max(t - e)),
                    _ => None,
                };
            }
            FaultReport {
                id: w.id,
                kind: w.kind,
                targets: w.targets.clone(),
                cut: w.cut.clone(),
                detail: w.detail.clone(),
                start_ms: s / 1_000_000,
                duration_ms: (e - s) / 1_000_000,
                stall_ms: stall.0 / 1_000_000,
                stall_partition: stall.1,
                recovery_ms: recovery.map(|r| r / 1_000_000),
            }
        })
        .collect()
}

/// One second of the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Bucket {
    pub second: u64,
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
    /// Latency of the `ok` operations completed in this second, in ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Operations per second by outcome, and latency, over the whole run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Throughput {
    pub buckets: Vec<Bucket>,
    pub ok_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[expect(clippy::cast_possible_truncation, reason = "q is in [0, 1]: the rounded index is at most len - 1")]
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(i).copied().unwrap_or(0.0)
}

/// Buckets every completed write (final reads excluded) by completion second.
pub fn throughput(ops: &[Operation]) -> Throughput {
    let writes: Vec<&Operation> = ops
        .iter()
        .filter(|o| !matches!(o.op, Op::Read { .. } | Op::DeviceRead { .. } | Op::Reconnect { .. }))
        .filter(|o| !crate::sdk::is_unconfirmed_ack(o))
        .collect();
    let last = writes.iter().filter_map(|o| o.complete_ns).max().unwrap_or(0) / 1_000_000_000;
    let mut buckets: Vec<Bucket> = (0..=last).map(|second| Bucket { second, ..Bucket::default() }).collect();
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(); buckets.len()];
    let mut all = Vec::new();
    for o in &writes {
        let Some(done) = o.complete_ns else { continue };
        let i = (done / 1_000_000_000) as usize;
        // `done` is at most the maximum, so `i <= last`: both are there.
        let (Some(bucket), Some(lat)) = (buckets.get_mut(i), lat.get_mut(i)) else { continue };
        match o.outcome {
            Outcome::Ok(_) => {
                bucket.ok += 1;
                let ms = (done - o.invoke_ns) as f64 / 1e6;
                lat.push(ms);
                all.push(ms);
            }
            Outcome::Fail(_) => bucket.fail += 1,
            Outcome::Info(_) => bucket.info += 1,
        }
    }
    for (b, l) in buckets.iter_mut().zip(lat.iter_mut()) {
        l.sort_by(f64::total_cmp);
        b.p50_ms = quantile(l, 0.5);
        b.p99_ms = quantile(l, 0.99);
        b.max_ms = l.last().copied().unwrap_or(0.0);
    }
    all.sort_by(f64::total_cmp);
    let ok: u64 = buckets.iter().map(|b| b.ok).sum();
    Throughput {
        ok_per_s: ok as f64 / buckets.len().max(1) as f64,
        p50_ms: quantile(&all, 0.5),
        p99_ms: quantile(&all, 0.99),
        buckets,
    }
}

/// Operations per kind and outcome: `send.ok`, `ack.info`, ….
pub fn op_counts(ops: &[Operation]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for o in ops {
        let kind = match o.op {
            Op::Send { .. } => "send",
            Op::AddMember { .. } => "add-member",
            Op::RemoveMember { .. } => "remove-member",
            Op::Read { .. } => "read",
            Op::Ack { .. } => "ack",
            Op::Reconnect { .. } => "reconnect",
            Op::DeviceRead { .. } => "device-read",
        };
        let outcome = match o.outcome {
            Outcome::Ok(_) => "ok",
            Outcome::Fail(_) => "fail",
            Outcome::Info(_) => "info",
        };
        *out.entry(format!("{kind}.{outcome}")).or_default() += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Value;
    use chorus_schema::{ChatId, ClientMsgId, DeviceId, Seq, UserId};

    fn send_ok(index: u64, invoke_ms: u64, done_ms: u64) -> Operation {
        let chat = ChatId::direct(UserId(1), UserId(2));
        Operation {
            index,
            process: 0,
            op: Op::Send { chat, sender: UserId(1), device: DeviceId(1), client_msg_id: ClientMsgId(index) },
            invoke_ns: invoke_ms * 1_000_000,
            complete_ns: Some(done_ms * 1_000_000),
            outcome: Outcome::Ok(Value::Sent { chat, seq: Seq(index) }),
        }
    }

    #[test]
    fn stall_is_the_longest_gap_over_the_fault_and_recovery_starts_at_its_end() {
        // Acks every 100 ms, except none between 1000 and 3500 ms; fault 1200..2000.
        let mut ops = Vec::new();
        let times: Vec<u64> = (0..=10).map(|i| i * 100).chain((35..=40).map(|i| i * 100)).collect();
        for (i, t) in times.iter().enumerate() {
            ops.push(send_ok(i as u64 + 1, t.saturating_sub(5), *t));
        }
        let w = Window {
            id: 1,
            kind: FaultKind::Kill,
            targets: vec![1],
            cut: vec![],
            detail: String::new(),
            start_ns: 1_200_000_000,
            stop_ns: 2_000_000_000,
        };
        let r = &faults(&[w], &ops, 8)[0];
        assert_eq!(r.stall_ms, 2_500);
        assert_eq!(r.recovery_ms, Some(1_500));
        let t = throughput(&ops);
        assert_eq!(t.buckets.len(), 5);
        assert_eq!(t.buckets[0].ok, 10);
        assert_eq!(t.buckets[2].ok, 0);
        assert!((t.p50_ms - 5.0).abs() < 1e-9, "{}", t.p50_ms);
    }
}
