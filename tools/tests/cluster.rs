//! Real log-node processes on loopback, killed and restarted for real.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chorus_log_node::LogClient;
use chorus_schema::{
    ChatId, ClientMsgId, Command, CommandBody, DeviceId, EventBody, EventRecord, GroupId, NodeId, Offset, Origin,
    Outcome, PartitionId, Request, Seq, UserId,
};
use chorus_testkit::cluster::{chorus_binary, Cluster, ClusterSpec};

fn send(from: u64, to: u64, id: u64) -> Command {
    Command {
        origin: Origin { user: UserId(from), device: DeviceId(1), client_msg_id: ClientMsgId(id) },
        body: CommandBody::SendDirect { recipient: UserId(to), ciphertext: format!("m{id}").into_bytes(), media: None },
    }
}

fn spec(dir: &std::path::Path, nodes: usize, partitions: u16) -> ClusterSpec {
    let mut s = ClusterSpec::new(dir, chorus_binary(), nodes);
    s.partitions = partitions;
    s
}

/// Appends `cmd` until it is acknowledged; a failed attempt has an unknown
/// outcome, so the same command (same client_msg_id) is sent again.
async fn must_append(client: &LogClient, cmd: &Command) -> Outcome {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        match client.append(cmd).await {
            Ok(Ok(o)) => return o,
            Ok(Err(rejection)) => panic!("command {cmd:?} rejected: {rejection:?}"),
            Err(e) => {
                assert!(e.retryable(), "command {cmd:?} refused by the log: {e}");
                assert!(tokio::time::Instant::now() < deadline, "append never acknowledged: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Every event of `partition` on node at `addr`.
async fn must_read_all(client: &LogClient, addr: &str, partition: PartitionId) -> Vec<EventRecord> {
    let mut out = Vec::new();
    loop {
        let (events, next) =
            client.read_from(addr, partition, Offset(out.len() as u64), 4096).await.expect("read events");
        if events.is_empty() {
            return out;
        }
        out.extend(events);
        assert_eq!(next, Offset(out.len() as u64));
    }
}

/// Waits until every node in `ids` has applied the same number of events of every partition.
async fn must_converge(cluster: &Cluster, client: &LogClient, ids: &[u64]) -> BTreeMap<u16, u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut per: BTreeMap<u16, BTreeSet<u64>> = BTreeMap::new();
        let mut all_answered = true;
        for id in ids {
            match client.status(&cluster.node(*id).config.client_addr).await {
                Ok(s) => {
                    for p in s.partitions {
                        per.entry(p.partition.0).or_default().insert(p.next_offset.0);
                    }
                }
                Err(_) => all_answered = false,
            }
        }
        if all_answered && per.values().all(|s| s.len() == 1) {
            return per.into_iter().map(|(p, s)| (p, *s.iter().next().unwrap())).collect();
        }
        assert!(tokio::time::Instant::now() < deadline, "replicas did not converge: {per:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The node leading the most partitions.
async fn busiest_leader(cluster: &Cluster, client: &LogClient) -> u64 {
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    for addr in cluster.client_addrs() {
        if let Ok(s) = client.status(&addr).await {
            count.insert(s.node.0, s.partitions.iter().filter(|p| p.leader == Some(s.node)).count());
        }
    }
    count.into_iter().max_by_key(|(_, c)| *c).map(|(id, _)| id).expect("some node answered")
}

/// Checks that all replicas in `ids` hold identical event logs, that every
/// acknowledged send is there exactly once at its acknowledged (chat, seq), and
/// that every chat's seqs are gap-free.
async fn must_check_log(cluster: &Cluster, client: &LogClient, ids: &[u64], acked: &[(Command, Outcome)]) {
    let mut sent: BTreeMap<(UserId, ClientMsgId), Vec<(ChatId, Seq)>> = BTreeMap::new();
    for p in 0..client.partitions() {
        let p = PartitionId(p);
        let reference = must_read_all(client, &cluster.node(ids[0]).config.client_addr, p).await;
        for id in &ids[1..] {
            let other = must_read_all(client, &cluster.node(*id).config.client_addr, p).await;
            assert_eq!(other.len(), reference.len(), "partition {p}: node {id} has a different number of events");
            assert!(other == reference, "partition {p}: node {id} differs from node {}", ids[0]);
        }
        let mut last_seq: BTreeMap<ChatId, u64> = BTreeMap::new();
        for e in &reference {
            if let EventBody::MessageSent { chat, seq, .. } = &e.event.body {
                let last = last_seq.entry(*chat).or_insert(0);
                assert_eq!(seq.0, *last + 1, "chat {chat}: seq gap or reorder");
                *last = seq.0;
                sent.entry((e.event.origin.user, e.event.origin.client_msg_id)).or_default().push((*chat, *seq));
            }
        }
    }
    for (cmd, outcome) in acked {
        let Outcome::Chat { chat, seq } = outcome else { panic!("unexpected outcome {outcome:?}") };
        let found = sent.get(&(cmd.origin.user, cmd.origin.client_msg_id)).cloned().unwrap_or_default();
        assert_eq!(found, vec![(*chat, *seq)], "acked send {:?} must be in the log exactly once", cmd.origin);
    }
}

/// Concurrent writers of the leader-kill test: many, so that the leaders
/// merge their appends.
const WRITERS: u64 = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_kill_9_of_leaders() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::create(spec(dir.path(), 3, 8)).await.unwrap();
    cluster.start_all().unwrap();
    let client = cluster.wait_ready(Duration::from_secs(60)).await.unwrap();

    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || i < 20 {
                let cmd = send(w + 1, 1000 + (w % 7), w * 1_000_000 + i);
                let outcome = must_append(&client, &cmd).await;
                acked.lock().unwrap().push((cmd, outcome));
                i += 1;
            }
        }));
    }
    // Nemesis: three times, kill -9 the node leading the most partitions, then restart it.
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let victim = busiest_leader(&cluster, &client).await;
        eprintln!("round {round}: kill -9 node {victim}");
        cluster.kill(victim);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        cluster.start(victim).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= WRITERS as usize * 20, "writers made progress: {} acks", acked.len());
    must_converge(&cluster, &client, &[1, 2, 3]).await;
    must_check_log(&cluster, &client, &[1, 2, 3], &acked).await;
    // The leaders merged concurrent appends: far fewer Raft entries than
    // commands, so the kills hit merged entries in flight.
    let s = client.status(&cluster.node(1).config.client_addr).await.unwrap();
    let entries: u64 = s.groups.iter().map(|g| g.last_log_index.0).sum();
    eprintln!("{} sends acknowledged through 3 leader kills, in {entries} Raft entries", acked.len());
    assert!(
        entries * 2 < acked.len() as u64,
        "{entries} entries for {} commands: appends were not merged",
        acked.len()
    );
}

/// Raft groups of the cluster whose leader, by its own account, is `id`.
async fn groups_led_by(cluster: &Cluster, client: &LogClient, id: u64) -> Vec<u16> {
    match client.status(&cluster.node(id).config.client_addr).await {
        Ok(s) => s.groups.iter().filter(|g| g.leader == Some(s.node)).map(|g| g.group.0).collect(),
        Err(_) => Vec::new(),
    }
}

/// Waits until node `id`'s log says it is receiving a snapshot (the
/// `occurrence`-th time), then kills it at once, and checks that it had not
/// installed it yet.
async fn kill_mid_snapshot(cluster: &mut Cluster, id: u64, occurrence: usize) {
    wait_for_log_count(cluster, id, "receiving a snapshot", occurrence).await;
    cluster.kill(id);
    let installed = log_count(cluster, id, "snapshot installed");
    assert!(
        installed < occurrence,
        "the transfer was over before the kill; node {id}'s log:\n{}",
        cluster.log_tail(id, 30)
    );
}

/// How many lines of node `id`'s log contain `pattern`.
fn log_count(cluster: &Cluster, id: u64, pattern: &str) -> usize {
    std::fs::read_to_string(cluster.node(id).log_path()).unwrap_or_default().matches(pattern).count()
}

/// Waits (up to a minute) until `pattern` is in node `id`'s log `count` times.
async fn wait_for_log_count(cluster: &Cluster, id: u64, pattern: &str, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while log_count(cluster, id, pattern) < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {id}'s log never said {pattern:?} {count} times:\n{}",
            cluster.log_tail(id, 30)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every replica ends with the same history, holding every acknowledged
/// append, and node 3 got there by installing a snapshot.
async fn must_catch_up_node_3_by_snapshot(cluster: &Cluster, client: &LogClient, acked: &[(Command, Outcome)]) {
    must_converge(cluster, client, &[1, 2, 3]).await;
    must_check_log(cluster, client, &[1, 2, 3], acked).await;
    assert!(
        log_count(cluster, 3, "snapshot installed") > 0,
        "node 3 caught up by snapshot; its log:\n{}",
        cluster.log_tail(3, 40)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_whose_log_was_purged_catches_up_by_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), 3, 2);
    s.raft.snapshot_after_logs = 50;
    s.raft.keep_logs_after_snapshot = 5;
    let mut cluster = Cluster::create(s).await.unwrap();
    cluster.start_all().unwrap();
    let client = cluster.wait_ready(Duration::from_secs(60)).await.unwrap();
    // Some history before the node goes down.
    let mut acked = Vec::new();
    for i in 0..20 {
        let cmd = send(1 + i % 4, 50, i);
        acked.push((cmd.clone(), must_append(&client, &cmd).await));
    }
    cluster.kill(3);
    // Many separate entries (sequential appends), so that the log is purged past
    // what node 3 has.
    for i in 20..400 {
        let cmd = send(1 + i % 4, 50, i);
        let outcome = must_append(&client, &cmd).await;
        acked.push((cmd, outcome));
    }
    cluster.start(3).unwrap();
    must_catch_up_node_3_by_snapshot(&cluster, &client, &acked).await;
}

/// A replica far behind gets a streamed snapshot of many chunks; it is killed
/// mid-transfer, restarted, then the sender is killed mid-transfer too. It
/// ends with exactly the others' events, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_transfer_killed_midway_on_either_side_is_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), 3, 2);
    s.raft.snapshot_after_logs = 20;
    s.raft.keep_logs_after_snapshot = 2;
    // Many small chunks (openraft waits a millisecond between two), so that
    // the transfer lasts long enough to be interrupted.
    s.raft.snapshot_chunk_bytes = 16 << 10;
    let mut cluster = Cluster::create(s).await.unwrap();
    cluster.start_all().unwrap();
    let client = cluster.wait_ready(Duration::from_secs(60)).await.unwrap();
    cluster.kill(3);
    // About 24 MiB of events while node 3 is down, in many entries, so that
    // the logs are purged past what node 3 has.
    let big = |from: u64, to: u64, id: u64| Command {
        origin: Origin { user: UserId(from), device: DeviceId(1), client_msg_id: ClientMsgId(id) },
        body: CommandBody::SendDirect { recipient: UserId(to), ciphertext: vec![id as u8; 12 << 10], media: None },
    };
    let mut acked = Vec::new();
    for round in 0..100u64 {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..20 {
            let (client, cmd) = (client.clone(), big(1 + i % 5, 60 + i % 3, round * 100 + i));
            tasks.spawn(async move {
                let outcome = must_append(&client, &cmd).await;
                (cmd, outcome)
            });
        }
        while let Some(done) = tasks.join_next().await {
            acked.push(done.unwrap());
        }
    }
    // Node 3 restarts and is sent a snapshot of each group; killed mid-way.
    cluster.start(3).unwrap();
    kill_mid_snapshot(&mut cluster, 3, 1).await;
    // Restarted, it is sent one again (a fresh transfer); this time its
    // sender is killed mid-way, and the new leader sends it.
    cluster.start(3).unwrap();
    let before = log_count(&cluster, 3, "receiving a snapshot");
    wait_for_log_count(&cluster, 3, "receiving a snapshot", before + 1).await;
    let sender = if !groups_led_by(&cluster, &client, 1).await.is_empty() { 1 } else { 2 };
    cluster.kill(sender);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.start(sender).unwrap();
    // More writes meanwhile, then every replica holds the same history.
    for i in 0..40 {
        let cmd = send(1 + i % 4, 70, 1_000_000 + i);
        let outcome = must_append(&client, &cmd).await;
        acked.push((cmd, outcome));
    }
    must_catch_up_node_3_by_snapshot(&cluster, &client, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_node_move_replicas_onto_it_and_remove_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::create(spec(dir.path(), 3, 4)).await.unwrap();
    cluster.start_all().unwrap();
    let client = cluster.wait_ready(Duration::from_secs(60)).await.unwrap();
    let mut acked = Vec::new();
    for i in 0..40 {
        let cmd = send(1 + i % 8, 60, i);
        acked.push((cmd.clone(), must_append(&client, &cmd).await));
    }

    let new = cluster.add_node().unwrap();
    cluster.start(new).unwrap();
    let (raft_addr, client_addr) = {
        let c = &cluster.node(new).config;
        (c.raft_addr.clone(), c.client_addr.clone())
    };
    // Move every replica of node 3 onto the new node: learner first, then swap voters.
    // Membership changes are an operator's.
    let admin = cluster.admin(chorus_log_node::ClientConfig::default()).await.unwrap();
    assert_eq!(client.groups(), 3, "one group per node");
    for g in 0..client.groups() {
        let g = GroupId(g);
        admin
            .admin(
                g,
                &Request::AddLearner {
                    group: g,
                    node: NodeId(new),
                    raft_addr: raft_addr.clone(),
                    client_addr: client_addr.clone(),
                },
            )
            .await
            .expect("add learner");
        if g.0.is_multiple_of(2) {
            admin
                .admin(g, &Request::ChangeVoters { group: g, voters: vec![NodeId(1), NodeId(2), NodeId(new)] })
                .await
                .expect("change voters");
        } else {
            // One voter at a time, the leader computing each set; both
            // requests are no-ops the second time.
            for _ in 0..2 {
                admin.admin(g, &Request::PromoteLearner { group: g, node: NodeId(new) }).await.expect("promote");
            }
            for _ in 0..2 {
                admin.admin(g, &Request::RemoveVoter { group: g, node: NodeId(3) }).await.expect("remove voter");
            }
        }
    }
    // A node that is no learner cannot be promoted.
    let refused = admin.admin(GroupId(1), &Request::PromoteLearner { group: GroupId(1), node: NodeId(99) }).await;
    assert!(refused.is_err(), "promoting an unknown node must fail: {refused:?}");
    // Node 3 holds no replica now: remove it.
    cluster.kill(3);
    let s = client.status(&cluster.node(1).config.client_addr).await.unwrap();
    for g in &s.groups {
        assert_eq!(g.voters, vec![NodeId(1), NodeId(2), NodeId(new)], "group {}", g.group);
    }
    for p in &s.partitions {
        assert_eq!(p.voters, vec![NodeId(1), NodeId(2), NodeId(new)], "partition {}", p.partition);
    }
    for i in 40..80 {
        let cmd = send(1 + i % 8, 60, i);
        acked.push((cmd.clone(), must_append(&client, &cmd).await));
    }
    must_converge(&cluster, &client, &[1, 2, new]).await;
    must_check_log(&cluster, &client, &[1, 2, new], &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_appends_and_reads_against_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::create(spec(dir.path(), 3, 4)).await.unwrap();
    cluster.start_all().unwrap();
    cluster.wait_ready(Duration::from_secs(60)).await.unwrap();
    let node = cluster.node(2).config.client_addr.clone();
    let ca = cluster.ca.display().to_string();
    let (cert, key) = (cluster.writer.cert.display().to_string(), cluster.writer.key.display().to_string());
    let run = |args: &[&str]| {
        let out = std::process::Command::new(chorus_binary())
            .args(["log", "--node", &node, "--ca", &ca, "--cert", &cert, "--key", &key])
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(out.status.success(), "chorus log {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let out = run(&["append", "--from", "11", "--to", "12", "--text", "hello", "--client-msg-id", "7"]);
    assert!(out.contains("seq: Seq(1)") || out.contains("seq: 1"), "{out}");
    // The same client_msg_id again: same result, nothing appended.
    let again = run(&["append", "--from", "11", "--to", "12", "--text", "hello", "--client-msg-id", "7"]);
    assert_eq!(again, out);
    let read = run(&["read", "--user", "11", "--peer", "12"]);
    assert!(read.contains("2 events"), "{read}");
    let status = run(&["status"]);
    assert_eq!(status.lines().filter(|l| l.contains("partition")).count(), 4, "{status}");
    // The views rebuilt from the log: ChatOpened + one MessageSent.
    let out_dir = dir.path().join("replayed-views");
    let replay = std::process::Command::new(chorus_binary())
        .args(["replay", "--node", &node])
        .args(cluster.operator_args())
        .arg("--out")
        .arg(&out_dir)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&replay.stdout);
    assert!(replay.status.success(), "chorus replay: {}", String::from_utf8_lossy(&replay.stderr));
    assert!(stdout.contains("from 2 records"), "{stdout}");
}
