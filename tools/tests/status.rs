//! `chorus status` against real processes: every node, group and partition
//! of a 3-node cluster is listed, and a node killed with `kill -9` shows
//! unreachable, its replicas lagging by the leader's count; on a whole stack
//! (log-nodes, projector, edges), the projector's positions and lag and the
//! edges' connections are read from the processes' own `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chorus_log_node::LogClient;
use chorus_schema::Recipient;
use chorus_schema::{ClientMsgId, Command, CommandBody, DeviceId, Origin, UserId};
use chorus_testkit::cluster::{chorus_binary, Cluster, ClusterSpec};
use chorus_testkit::events::messages;
use chorus_testkit::stack::{Stack, StackSpec};
use chorus_tools::status::DeploymentStatus;

const PARTITIONS: u16 = 6;

fn send(from: u64, to: u64, id: u64) -> Command {
    Command {
        origin: Origin { user: UserId(from), device: DeviceId(1), client_msg_id: ClientMsgId(id) },
        body: CommandBody::SendDirect { recipient: UserId(to), ciphertext: format!("m{id}").into_bytes(), media: None },
    }
}

/// Appends `cmd` until acknowledged (a retry with the same id appends once).
async fn must_append(client: &LogClient, cmd: &Command) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        match client.append(cmd).await {
            Ok(Ok(_)) => return,
            Ok(Err(rejection)) => panic!("command {cmd:?} rejected: {rejection:?}"),
            Err(e) => {
                assert!(e.retryable(), "command {cmd:?} refused by the log: {e}");
                assert!(tokio::time::Instant::now() < deadline, "append never acknowledged: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Sends until every partition got at least `per` commands; ids from `base`.
async fn write_everywhere(client: &LogClient, per: usize, base: u64) {
    let mut count: BTreeMap<u16, usize> = BTreeMap::new();
    let mut i = 0;
    while (0..PARTITIONS).any(|p| count.get(&p).copied().unwrap_or(0) < per) {
        let cmd = send(100 + i % 17, 200 + i, base + i);
        let p = client.partition_of(&cmd).0;
        if count.get(&p).copied().unwrap_or(0) < per {
            must_append(client, &cmd).await;
            *count.entry(p).or_default() += 1;
        }
        i += 1;
    }
}

/// Runs `chorus status ARGS` against `cluster` (through node `via`) and
/// returns its stdout.
fn chorus_status(cluster: &Cluster, via: u64, args: &[&str]) -> String {
    let out = std::process::Command::new(chorus_binary())
        .args(["status", "--node", &cluster.node(via).config.client_addr])
        .args(cluster.operator_args())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "chorus status {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn status_json(cluster: &Cluster, via: u64, scrape: &str) -> DeploymentStatus {
    let out = chorus_status(cluster, via, &["--json", "--scrape", scrape]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not a DeploymentStatus ({e}): {out}"))
}

/// The highest next offset of each partition among the nodes that answer.
async fn log_offsets(cluster: &Cluster, client: &LogClient) -> BTreeMap<u16, u64> {
    let mut out = BTreeMap::new();
    for s in cluster.statuses(client, Duration::from_secs(2)).await.values() {
        for p in &s.partitions {
            let o = out.entry(p.partition.0).or_insert(0);
            *o = (*o).max(p.next_offset.0);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_the_whole_cluster_and_the_lag_of_a_killed_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ClusterSpec::new(dir.path(), chorus_binary(), 3);
    spec.partitions = PARTITIONS;
    let mut cluster = Cluster::create(spec).await.unwrap();
    cluster.start_all().unwrap();
    let client = cluster.wait_ready(Duration::from_secs(60)).await.unwrap();
    write_everywhere(&client, 2, 1).await;

    // A metrics endpoint nobody serves: shown down, the rest still shown.
    let dead_scrape = chorus_testkit::ports::free_addr().unwrap().to_string();
    // Asked through node 2 only: nodes 1 and 3 are learnt from its answer.
    // A replica may still be catching up at first; a healthy cluster shows
    // every lag 0 soon.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let s = loop {
        let s = status_json(&cluster, 2, &dead_scrape);
        let nodes: Vec<_> = s.nodes.iter().map(|n| (n.id, n.client_addr.clone(), n.reachable)).collect();
        let expected: Vec<_> = [1, 2, 3].map(|id| (Some(id), cluster.node(id).config.client_addr.clone(), true)).into();
        assert_eq!(nodes, expected, "{s:#?}");
        assert_eq!(s.groups.iter().map(|g| g.group).collect::<Vec<_>>(), [0, 1, 2], "{s:#?}");
        for g in &s.groups {
            assert!(g.from_leader && g.leader == g.reported_by, "group {} not seen by its leader: {g:?}", g.group);
            assert_eq!(g.voters, [1, 2, 3]);
            let commit = g.commit_index.unwrap();
            assert!(commit >= g.applied_index && commit <= g.last_log_index, "{g:?}");
            assert_eq!(g.replicas.iter().map(|r| r.node).collect::<Vec<_>>(), [1, 2, 3]);
            for r in &g.replicas {
                assert!(r.reachable && r.applied_index.is_some(), "{g:?}");
                assert_eq!(r.lag, Some(g.last_log_index - r.matched.unwrap_or(0)), "{g:?}");
            }
        }
        if s.groups.iter().all(|g| g.replicas.iter().all(|r| r.lag == Some(0))) {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "replicas never caught up: {s:#?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let offsets = log_offsets(&cluster, &client).await;
    let listed: BTreeMap<u16, u64> = s.partitions.iter().map(|p| (p.partition, p.next_offset)).collect();
    assert_eq!(listed.keys().copied().collect::<Vec<_>>(), (0..PARTITIONS).collect::<Vec<_>>());
    // Each partition got two sends: at least ChatOpened + MessageSent each.
    assert!(listed.values().all(|n| *n >= 3), "{listed:?}");
    assert_eq!(listed, offsets);
    assert_eq!(s.scrapes.len(), 1);
    assert!(!s.scrapes[0].up && s.scrapes[0].error.is_some(), "{:?}", s.scrapes);

    // The text form: a header and one line per node.
    let text = chorus_status(&cluster, 1, &["--scrape", ""]);
    let section: Vec<&str> =
        text.lines().skip_while(|l| !l.starts_with("NODES (3)")).skip(1).take_while(|l| !l.is_empty()).collect();
    assert!(
        section[0].starts_with("ID") && section[0].contains("CLIENT_ADDR") && section[0].contains("STATE"),
        "{text}"
    );
    assert_eq!(section.len(), 4, "{text}");
    for id in 1..=3 {
        let addr = &cluster.node(id).config.client_addr;
        assert!(section
            .iter()
            .any(|l| l.starts_with(&format!("{id} ")) && l.contains(addr.as_str()) && l.contains("up")));
    }
    for title in
        ["GROUPS (3)", "REPLICAS (9)", "PARTITIONS (6)", "METRICS ENDPOINTS (0)", "PROJECTORS (0)", "EDGES (0)"]
    {
        assert!(text.lines().any(|l| l == title), "no {title}: {text}");
    }

    // kill -9 node 3, then write to every partition: its replicas fall behind.
    cluster.kill(3);
    write_everywhere(&client, 3, 1_000_000).await;
    // The surviving leaders' views (a group that lost its leader elects one).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let s = loop {
        let s = status_json(&cluster, 1, "");
        if s.groups.len() == 3 && s.groups.iter().all(|g| g.from_leader) {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader view of every group: {s:#?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let n3 = s.nodes.iter().find(|n| n.id == Some(3)).unwrap_or_else(|| panic!("node 3 not listed: {s:#?}"));
    assert!(!n3.reachable && n3.error.is_some(), "{n3:?}");
    assert_eq!(n3.client_addr, cluster.node(3).config.client_addr);
    assert_eq!(s.nodes.iter().filter(|n| n.reachable).map(|n| n.id.unwrap()).collect::<BTreeSet<_>>(), [1, 2].into());
    for g in &s.groups {
        assert_ne!(g.leader, Some(3), "{g:?}");
        let r3 = g.replicas.iter().find(|r| r.node == 3).unwrap();
        assert!(!r3.reachable && r3.applied_index.is_none(), "{r3:?}");
        let lag = r3.lag.unwrap_or_else(|| panic!("no lag for node 3 in {g:?}"));
        assert!(lag > 0, "node 3 does not lag in group {}: {g:?}", g.group);
        assert_eq!(lag, g.last_log_index - r3.matched.unwrap_or(0), "{g:?}");
        // The live replicas keep up (commit needs 2 of 3, node 3 is not one).
        assert!(g.commit_index.unwrap() > r3.matched.unwrap_or(0), "{g:?}");
    }
    let offsets = log_offsets(&cluster, &client).await;
    let listed: BTreeMap<u16, u64> = s.partitions.iter().map(|p| (p.partition, p.next_offset)).collect();
    assert_eq!(listed, offsets);
    // The text form says so too.
    let text = chorus_status(&cluster, 1, &["--scrape", ""]);
    let down = text.lines().find(|l| l.starts_with("3 ")).unwrap();
    assert!(down.contains("DOWN"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_shows_the_projector_and_the_edges_of_a_running_stack() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(StackSpec::new(dir.path(), chorus_binary()).unthrottled()).await.expect("start");
    let alice = stack.register(0, "+15550000801").await.unwrap();
    let bob = stack.register(1, "+15550000802").await.unwrap();
    let (a, _a_events) = stack.connect(0, alice).await;
    let (_b, mut b_events) = stack.connect(1, bob).await;
    for i in 0..20 {
        a.send(Recipient::User(bob.user), format!("m{i}").into_bytes()).await.unwrap();
    }
    messages(&mut b_events, 20, Duration::from_secs(30)).await;
    let scrape: Vec<String> = stack.metrics_addrs().iter().map(|(_, a)| a.to_string()).collect();
    let scrape = scrape.join(",");
    // The projector has folded everything once its lag is 0 everywhere (the
    // presence appends of the logins may still be on their way at first);
    // the edges sample their connection counts twice a second.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let s = loop {
        let s = status_json(&stack.cluster, 1, &scrape);
        let connections: u64 = s.edges.iter().map(|e| e.connections).sum();
        if s.partitions.iter().all(|p| p.projector_lag == Some(0)) && connections == 2 {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "the projector never caught up: {s:#?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(s.nodes.iter().filter(|n| n.reachable).count(), 3, "{s:#?}");
    assert!(s.scrapes.iter().all(|x| x.up), "{:?}", s.scrapes);
    assert_eq!(s.scrapes.len(), 6, "3 log-nodes, a projector, 2 edges: {:?}", s.scrapes);
    let [projector] = s.projectors.as_slice() else { panic!("one projector: {:?}", s.projectors) };
    assert_eq!(projector.total_lag, 0);
    // Its cursor in every partition is the partition's end in the log.
    let offsets = log_offsets(&stack.cluster, &stack.cluster.admin(Default::default()).await.unwrap()).await;
    let cursors: BTreeMap<u16, u64> = projector.partitions.iter().map(|p| (p.partition, p.offset)).collect();
    assert_eq!(cursors, offsets, "{projector:?}");
    assert!(offsets.values().sum::<u64>() >= 20, "{offsets:?}");
    // Two edges, one connection each (alice on edge 0, bob on edge 1).
    let edges: Vec<u64> = s.edges.iter().map(|e| e.connections).collect();
    assert_eq!(edges, [1, 1], "{:?}", s.edges);
    // The text form lists them too.
    let text = chorus_status(&stack.cluster, 1, &["--scrape", &scrape]);
    for title in ["PROJECTORS (1)", "EDGES (2)", "METRICS ENDPOINTS (6)"] {
        assert!(text.lines().any(|l| l == title), "no {title}: {text}");
    }
}
