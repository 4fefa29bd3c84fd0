//! The Jepsen harness against real processes: the proxies really cut links,
//! a CI-sized run of every nemesis kind through the client SDK and two edges
//! finds no anomaly, and an edge killed mid-stream loses nothing.
//!
//! Results of the runs stay in `target/tmp/jepsen-ci-*` (history, verdict,
//! report), so that a failure can be read.

use std::collections::BTreeSet;
use std::time::Duration;

use chorus_jepsen::cluster::{Cluster, ClusterSpec};
use chorus_jepsen::nemesis::{FaultKind, Timing};
use chorus_jepsen::run::{self, ExecutorKind, RunConfig, RunReport};
use chorus_schema::{ClientMsgId, Command, CommandBody, DeviceId, Origin, UserId};

fn binary() -> std::path::PathBuf {
    env!("CARGO_BIN_EXE_chorus").into()
}

/// Partitions led by `id`, as `id` itself reports.
async fn led_by(cluster: &Cluster, client: &chorus_log_node::LogClient, id: u64) -> usize {
    let statuses = cluster.statuses(client, Duration::from_secs(1)).await;
    statuses.get(&id).map(|s| s.partitions.iter().filter(|p| p.leader.map(|l| l.0) == Some(id)).count()).unwrap_or(0)
}

/// Cutting every link of one node through the proxies makes the others elect
/// leaders among themselves and leaves the cut node unable to commit; healing
/// lets it catch up. A proxy that let packets through would fail this.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolating_a_node_through_its_proxy_moves_leadership_away() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ClusterSpec::new(dir.path(), binary(), 3);
    spec.partitions = 4;
    let mut cluster = Cluster::create(spec).await.unwrap();
    cluster.start_all().unwrap();
    let client = cluster.wait_ready(Duration::from_secs(60)).await.unwrap();

    // Isolate the node leading the most partitions.
    let mut best = (0, 0);
    for id in cluster.ids() {
        let n = led_by(&cluster, &client, id).await;
        if n > best.1 {
            best = (id, n);
        }
    }
    let (isolated, led) = best;
    assert!(led > 0, "some node leads a partition");
    let others: Vec<u64> = cluster.ids().into_iter().filter(|i| *i != isolated).collect();
    let cut: BTreeSet<(u64, u64)> = others.iter().flat_map(|o| [(isolated, *o), (*o, isolated)]).collect();
    cluster.links.set(&cut);

    // The majority elects leaders for every partition among itself.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let statuses = cluster.statuses(&client, Duration::from_secs(1)).await;
        let led_by_majority: usize = others
            .iter()
            .filter_map(|o| statuses.get(o))
            .map(|s| s.partitions.iter().filter(|p| p.leader == Some(s.node)).count())
            .sum();
        if led_by_majority == 4 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the majority never led every partition: {statuses:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (dropped, _) = cluster.links.counts();
    assert!(dropped > 0, "packets must have been dropped");

    // The isolated node cannot commit on its own: an append sent to it alone
    // does not succeed while it is cut off.
    let alone = chorus_log_node::LogClient::connect(
        &[cluster.node(isolated).config.client_addr.clone()],
        &cluster.ca,
        chorus_log_node::ClientConfig { append_deadline: Duration::from_secs(3), ..Default::default() },
    )
    .await
    .unwrap();
    let cmd = Command {
        origin: Origin { user: UserId(1), device: DeviceId(1), client_msg_id: ClientMsgId(1) },
        body: CommandBody::SendDirect { recipient: UserId(2), ciphertext: b"x".to_vec(), media: None },
    };
    let r = tokio::time::timeout(Duration::from_secs(5), alone.append(&cmd)).await;
    // It either times out, fails, or is redirected to the majority's leader,
    // whose address the client learns from the hint: then it commits there.
    if let Ok(Ok(Ok(_))) = &r {
        let statuses = cluster.statuses(&client, Duration::from_secs(1)).await;
        let p = client.partition_of(&cmd).0 as usize;
        let leader = statuses.get(&others[0]).and_then(|s| s.partitions[p].leader).map(|l| l.0);
        assert_ne!(leader, Some(isolated), "the isolated node still leads the partition it committed in");
    }

    cluster.links.heal();
    cluster.wait_converged(&client, Duration::from_secs(30)).await.unwrap();
}

fn ci_config(seed: u64, nemesis: &str) -> RunConfig {
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("jepsen-ci-{seed}"));
    let mut c = RunConfig::new(out, binary());
    // Eight kinds per run: 40 s hold eight faults however the seed draws
    // their lengths (2 s warm-up, then at most 3 s of fault and 2 s of gap each).
    c.time = Duration::from_secs(40);
    c.timing = Timing {
        fault_max: Duration::from_millis(3_000),
        gap_max: Duration::from_millis(2_000),
        ..Timing::default()
    };
    c.seed = seed;
    c.nemesis = FaultKind::parse_list(nemesis).unwrap();
    c.liveness_bound = Duration::from_secs(30);
    c
}

fn must_be_valid(r: &RunReport, out: &std::path::Path) {
    let summary: Vec<String> = r.verdict.anomalies.values().flatten().take(20).map(|a| a.to_string()).collect();
    assert!(r.valid, "run seed {} is invalid (see {}): liveness {:?}, anomalies {summary:#?}", r.seed, out.display(), r.liveness);
    assert!(r.liveness.holds(), "liveness: {:?}", r.liveness);
    assert!(r.ops.get("send.ok").copied().unwrap_or(0) >= 300, "too few acknowledged sends: {:?}", r.ops);
    assert!(r.ops.get("send.fail").copied().unwrap_or(0) > 0, "non-member sends must have been refused: {:?}", r.ops);
    assert!(r.reads > 0);
    if r.executor == ExecutorKind::Sdk {
        assert!(r.device_reads > 0 && r.observed > 0, "devices read {} and observed {}", r.device_reads, r.observed);
        assert!(r.liveness.delivered_ms.is_some(), "probes not delivered: {:?}", r.liveness);
        let sdk = r.sdk.as_ref().expect("SDK counters");
        assert!(sdk.drops + sdk.restarts > 0, "no reconnect was exercised: {sdk:?}");
    }
    let views = r.views.as_ref().expect("views were checked");
    assert!(views.live_entries > 0 && views.caught_up_ms.is_some(), "views: {views:?}");
    for f in &r.faults {
        assert!(f.recovery_ms.is_some(), "writes never recovered after fault {f:?}");
    }
}

/// CI: two seeds × 40 s through the SDK executor (registered devices, two
/// edges), every nemesis kind at least once, zero anomalies (live deliveries
/// and devices' own final reads agree with the log, the live views equal a
/// rebuild from the log), writes back and delivered within the liveness bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nemesis_kind_two_seeds_no_anomaly() {
    let mut seen = BTreeSet::new();
    for (seed, nemesis) in [(11, "kill,disk,kill-projector,kill-edge"), (12, "pause,partition,kill-nats")] {
        let config = ci_config(seed, nemesis);
        let out = config.out.clone();
        let report = run::run(config).await.unwrap_or_else(|e| panic!("run seed {seed} failed ({}): {e}", out.display()));
        eprintln!(
            "seed {seed}: ops {:?}, faults {:?}",
            report.ops,
            report.faults.iter().map(|f| (f.kind.name(), f.stall_ms, f.recovery_ms)).collect::<Vec<_>>()
        );
        must_be_valid(&report, &out);
        for f in &report.faults {
            seen.insert(f.kind);
        }
    }
    let missing: Vec<&str> = FaultKind::ALL.iter().filter(|k| !seen.contains(k)).map(|k| k.name()).collect();
    assert!(missing.is_empty(), "nemesis kinds never run: {missing:?}");
}

/// Found by the harness (`chorus jepsen --nemesis kill`): after `kill -9` of a
/// partition's leader, a `LogClient` whose connection to that leader is warm
/// keeps waiting on the dead connection until QUIC's idle timeout (10 s) —
/// far beyond its `append_deadline` and the ~1 s the cluster needs to elect a
/// new leader — because a single request is bounded only by a fixed 15 s, not
/// by the deadline, and the dead node is not given up on sooner. In a Jepsen
/// run with a fault every few seconds, writes to the affected partitions then
/// stall for the whole run. This test asserts the behaviour a client needs:
/// the append succeeds within its deadline plus an election.
///
/// Fixed: each attempt of a routed request is bounded (2 s, and the deadline
/// left), a timed-out connection is dropped, and the next attempt goes to
/// another node than the one that just failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_client_fails_over_within_its_deadline_after_the_leader_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ClusterSpec::new(dir.path(), binary(), 3);
    spec.partitions = 4;
    let mut cluster = Cluster::create(spec).await.unwrap();
    cluster.start_all().unwrap();
    let admin = cluster.wait_ready(Duration::from_secs(60)).await.unwrap();
    let deadline = Duration::from_secs(3);
    let client = cluster
        .client(chorus_log_node::ClientConfig { append_deadline: deadline, ..Default::default() })
        .await
        .unwrap();
    let send = |id| Command {
        origin: Origin { user: UserId(1), device: DeviceId(1), client_msg_id: ClientMsgId(id) },
        body: CommandBody::SendDirect { recipient: UserId(2), ciphertext: b"x".to_vec(), media: None },
    };
    // Warm the connection to the partition's leader.
    client.append(&send(1)).await.unwrap().unwrap();
    let partition = client.partition_of(&send(1)).0;
    let leader = cluster.leader_of(&admin, partition).await.expect("the partition has a leader");
    cluster.kill(leader);

    let started = std::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(30), client.append(&send(2))).await;
    let took = started.elapsed();
    assert!(matches!(result, Ok(Ok(Ok(_)))), "the append must succeed on the new leader; after {took:?}: {result:?}");
    assert!(
        took < deadline + Duration::from_secs(3),
        "the append took {took:?} after the leader was killed (deadline {deadline:?})"
    );
}

/// Found by the harness (`chorus jepsen --nemesis corrupt-wal`): bytes
/// flipped in the fsynced part of one node's RocksDB write-ahead log (a
/// minority, one node at a time) are not detected. RocksDB's default WAL
/// recovery (point in time) silently ends the log at the damaged record, so
/// the node comes back without Raft entries it had acknowledged; openraft then
/// panics in some partition groups ("follower log reversion is not allowed",
/// "assertion failed: Some(log_id) <= self.committed()") while the process
/// stays up, and replicas diverge: different events at the same offset,
/// acknowledged sends lost, seqs reassigned. A node must instead refuse to
/// start on a damaged log (or recover it from its peers) and never rejoin
/// with less than it acknowledged.
///
/// Half fixed: the store now refuses to open on such a log, so nothing
/// acknowledged is lost or reassigned, but the node stays down (no recovery
/// from peers yet) and the run counts it as invalid. Run it with
/// `cargo test -p chorus-tools --test jepsen -- --ignored corrupted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a node with a damaged WAL refuses to start and is not yet rebuilt from its peers (see the doc comment)"]
async fn a_corrupted_write_ahead_log_on_one_node_loses_nothing() {
    let mut config = ci_config(21, "corrupt-wal");
    config.time = Duration::from_secs(30);
    config.views = false;
    config.executor = ExecutorKind::Log;
    let out = config.out.clone();
    let report = run::run(config).await.unwrap_or_else(|e| panic!("run failed ({}): {e}", out.display()));
    let counts: Vec<(String, usize)> =
        report.verdict.anomalies.iter().map(|(i, a)| (format!("{i:?}"), a.len())).filter(|(_, n)| *n > 0).collect();
    assert!(report.lagging.is_none(), "replicas did not converge: {:?}", report.lagging);
    assert!(report.verdict.is_valid(), "anomalies per invariant: {counts:?} (see {})", out.display());
}

/// An edge killed (`kill -9`) mid-stream, three times, and restarted: its
/// devices fail over to the other edge, no acknowledged send is lost or
/// duplicated, every device's live stream stays in order, and every device's
/// final sync equals what the log gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_killed_mid_stream_lose_nothing_and_devices_converge() {
    let mut config = ci_config(31, "kill-edge");
    config.time = Duration::from_secs(20);
    let out = config.out.clone();
    let report = run::run(config).await.unwrap_or_else(|e| panic!("run failed ({}): {e}", out.display()));
    must_be_valid(&report, &out);
    assert!(report.faults.len() >= 3 && report.faults.iter().all(|f| f.kind == FaultKind::KillEdge), "{:?}", report.faults);
    let sdk = report.sdk.as_ref().expect("SDK counters");
    // Every device logged in once at the start; the kills forced more.
    assert!(sdk.disconnects > 0, "no client lost its edge: {sdk:?}");
}
