//! Named consumers (issue 13), every part a real process: 3 log-nodes, a
//! nats-server, a projector and 2 edges; events made by clients on the SDK;
//! `chorus tail --json` run as a process and killed with `kill -9`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use chorus_log_node::ClientConfig;
use chorus_schema::{ChatId, EventRecord, Key, Offset, PartitionId, PartitionOffset, Recipient};
use chorus_testkit::cluster::chorus_binary;
use chorus_testkit::stack::{Stack, StackSpec};

/// One deployment at a time: each is 7 processes on 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn stack(dir: &std::path::Path) -> Stack {
    Stack::start(StackSpec::new(dir, chorus_binary()).unthrottled()).await.expect("start the stack")
}

/// One JSON line of `chorus tail --json`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Line {
    partition: u16,
    offset: u64,
    kind: String,
    at_ms: u64,
}

/// A running `chorus tail --json …`: its stdout lines arrive on a channel.
struct Tail {
    child: Child,
    lines: std_mpsc::Receiver<Line>,
}

impl Tail {
    /// Starts `chorus tail --json <extra>` against the stack's first node as
    /// the operator and waits until it says where it started.
    fn start(stack: &Stack, extra: &[&str]) -> Tail {
        let mut cmd = Command::new(chorus_binary());
        cmd.arg("tail")
            .arg("--json")
            .arg("--node")
            .arg(&stack.cluster.client_addrs()[0])
            .args(stack.cluster.operator_args())
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn chorus tail");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with("tail: started at") {
                    let _ = ready_tx.send(());
                } else {
                    eprintln!("[tail] {line}");
                }
            }
        });
        let (tx, lines) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
                let l = Line {
                    partition: v["partition"].as_u64().unwrap() as u16,
                    offset: v["offset"].as_u64().unwrap(),
                    kind: v["kind"].as_str().unwrap().to_owned(),
                    at_ms: v["at_ms"].as_u64().unwrap(),
                };
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(30)).expect("chorus tail starts");
        Tail { child, lines }
    }

    /// Lines until `n` arrived or `timeout` passed.
    fn take(&self, n: usize, timeout: Duration) -> Vec<Line> {
        let end = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => out.push(l),
                Err(_) => break,
            }
        }
        out
    }

    /// Lines until every partition reached its offset in `ends` (exclusive)
    /// or `timeout` passed.
    fn until(&self, ends: &BTreeMap<u16, u64>, timeout: Duration) -> Vec<Line> {
        let end = Instant::now() + timeout;
        let mut out: Vec<Line> = Vec::new();
        let mut at: BTreeMap<u16, u64> = BTreeMap::new();
        loop {
            if ends.iter().all(|(p, e)| *e == 0 || at.get(p).is_some_and(|o| o + 1 >= *e)) {
                return out;
            }
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    at.insert(l.partition, l.offset);
                    out.push(l);
                }
                Err(_) => return out,
            }
        }
    }

    /// `kill -9`.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Every record of every partition, as the log holds it now.
async fn all_records(stack: &Stack) -> BTreeMap<u16, Vec<EventRecord>> {
    let mut out = BTreeMap::new();
    for p in 0..stack.spec.partitions {
        let mut records = Vec::new();
        let mut from = Offset(0);
        loop {
            let (page, next) = stack.log.read(PartitionId(p), from, 1024).await.unwrap();
            if page.is_empty() {
                break;
            }
            records.extend(page);
            from = next;
        }
        out.insert(p, records);
    }
    out
}

fn ends(records: &BTreeMap<u16, Vec<EventRecord>>) -> BTreeMap<u16, u64> {
    records.iter().map(|(p, r)| (*p, r.len() as u64)).collect()
}

/// Each partition's lines in offset order, gap-free, strictly increasing.
fn check_order(lines: &[Line], what: &str) -> BTreeMap<u16, (u64, u64)> {
    let mut spans: BTreeMap<u16, (u64, u64)> = BTreeMap::new();
    for l in lines {
        match spans.get_mut(&l.partition) {
            None => {
                spans.insert(l.partition, (l.offset, l.offset));
            }
            Some((_, last)) => {
                assert_eq!(l.offset, *last + 1, "{what}: partition {} jumps from {last} to {}", l.partition, l.offset);
                *last = l.offset;
            }
        }
    }
    spans
}

fn committed_map(offsets: &[PartitionOffset]) -> BTreeMap<u16, u64> {
    offsets.iter().map(|o| (o.partition.0, o.offset.0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_named_consumer_killed_mid_stream_sees_everything_at_least_once_and_nothing_before_its_commit_again() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path()).await;
    let operator = stack.cluster.admin(ClientConfig::default()).await.unwrap();
    let alice = stack.register(0, "+15550001301").await.unwrap();
    let bob = stack.register(1, "+15550001302").await.unwrap();
    let carol = stack.register(1, "+15550001303").await.unwrap();
    let (a, _ae) = stack.connect(0, alice).await;

    // A workload that runs while the consumer is killed and restarted.
    let workload = tokio::spawn(async move {
        for i in 0..240u32 {
            let to = if i % 2 == 0 { bob.user } else { carol.user };
            a.send(Recipient::User(to), format!("m{i}").into_bytes()).await.expect("send");
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        a
    });

    let args = ["--consumer", "c1", "--commit-every-ms", "100", "--commit-every-records", "10"];
    let first = Tail::start(&stack, &args);
    let run1 = first.take(120, Duration::from_secs(60));
    assert_eq!(run1.len(), 120, "the first run saw events");
    first.kill();
    assert!(!workload.is_finished(), "killed mid-stream: the workload was still running");
    let committed = committed_map(&operator.consumer_offsets("c1").await.unwrap());
    let spans1 = check_order(&run1, "run 1");
    assert!(!committed.is_empty(), "the first run committed");
    for (p, c) in &committed {
        let (lo, hi) = spans1[p];
        assert!(lo <= *c && *c <= hi + 1, "partition {p}: committed {c} outside what was handed out {lo}..={hi}");
    }

    let _a = workload.await.unwrap();
    let log = all_records(&stack).await;
    let second = Tail::start(&stack, &args);
    let run2 = second.until(&ends(&log), Duration::from_secs(60));
    second.kill();
    let spans2 = check_order(&run2, "run 2");
    // Nothing before the committed offset again; partitions never committed start at 0.
    for (p, (lo, _)) in &spans2 {
        assert_eq!(*lo, committed.get(p).copied().unwrap_or(0), "partition {p}: run 2 starts at its commit");
    }
    // Every event at least once across both runs, with the log's kinds.
    let mut seen: BTreeMap<(u16, u64), &Line> = BTreeMap::new();
    for l in run1.iter().chain(&run2) {
        seen.insert((l.partition, l.offset), l);
    }
    for (p, records) in &log {
        for r in records {
            let l =
                seen.get(&(*p, r.offset.0)).unwrap_or_else(|| panic!("partition {p} offset {} never seen", r.offset));
            assert_eq!(l.kind, chorus_analytics::kind_name(&r.event.body));
            assert_eq!(l.at_ms, r.event.at_ms);
        }
    }
    let sent = log.values().flatten().filter(|r| chorus_analytics::kind_name(&r.event.body) == "message_sent").count();
    assert_eq!(sent, 240);
    // The commits themselves are events of the consumer's partition, seen like any other.
    assert!(seen.values().any(|l| l.kind == "offsets_committed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn committed_offsets_survive_their_leader_and_tail_from_latest_and_from_a_time() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut stack = stack(dir.path()).await;
    let operator = stack.cluster.admin(ClientConfig::default()).await.unwrap();

    // Edges may not commit (nor read) offsets; operators may.
    let refused = stack.log.commit_offsets("c2", &[]).await.unwrap_err();
    assert_eq!(refused.refusal(), Some(chorus_schema::ErrorCode::Forbidden), "{refused}");
    // Nor can a commit ride inside an append (the origin would be the edge's to choose).
    let inside = chorus_schema::Command {
        origin: chorus_schema::Origin::default(),
        body: chorus_schema::CommandBody::CommitOffsets { consumer: "c2".into(), offsets: vec![], reset: true },
    };
    let refused = stack.log.append_batch(&[inside]).await.unwrap_err();
    assert_eq!(refused.refusal(), Some(chorus_schema::ErrorCode::Forbidden), "{refused}");
    let bad = operator.commit_offsets("no spaces", &[]).await.unwrap_err();
    assert!(bad.refusal().is_some(), "{bad}");
    // An analyst's certificate (`chorus certs --role analyst`) commits and reads offsets, and appends nothing.
    {
        use chorus_log_node::network::tls::{self, Principal, Role};
        let paths =
            tls::issue(stack.cluster.ca.parent().unwrap(), &Principal::new(Role::Analyst, "a1").unwrap()).unwrap();
        let analyst =
            chorus_log_node::LogClient::connect(&stack.cluster.client_addrs(), &paths, ClientConfig::default())
                .await
                .unwrap();
        let p0 = PartitionOffset::new(PartitionId(0), Offset(1));
        assert_eq!(analyst.commit_offsets("a1", &[p0]).await.unwrap(), vec![p0]);
        let send = chorus_schema::Command {
            origin: chorus_schema::Origin::default(),
            body: chorus_schema::CommandBody::RecordOtpFailure,
        };
        let refused = analyst.append_batch(&[send]).await.unwrap_err();
        assert_eq!(refused.refusal(), Some(chorus_schema::ErrorCode::Forbidden), "{refused}");
    }

    let at = |p: u16, o: u64| PartitionOffset::new(PartitionId(p), Offset(o));
    let now = operator.commit_offsets("c2", &[at(1, 7), at(3, 2)]).await.unwrap();
    assert_eq!(now, vec![at(1, 7), at(3, 2)]);
    assert_eq!(operator.commit_offsets("c2", &[at(1, 5)]).await.unwrap(), vec![at(1, 7), at(3, 2)], "no rewind");

    // Kill the leader of the group that keeps c2's offsets: the new leader has them.
    let home = operator.consumer_partition("c2");
    operator.refresh_leaders().await;
    let leader_addr = operator.leader_addr(home).expect("a leader");
    let leader = stack.cluster.nodes.iter().find(|n| n.config.client_addr == leader_addr).unwrap().id;
    stack.cluster.kill(leader);
    let after = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match operator.consumer_offsets("c2").await {
                Ok(o) => return o,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
    .await
    .expect("a new leader answers");
    assert_eq!(after, vec![at(1, 7), at(3, 2)], "the commit survived its leader");
    assert_eq!(operator.reset_offsets("c2", &[at(1, 0)]).await.unwrap(), vec![at(1, 0), at(3, 2)], "reset rewinds");
    // The same through `chorus consumer show|reset` (JSON on stdout).
    let consumer_cli = |args: &[&str]| -> serde_json::Value {
        let alive = stack.cluster.nodes.iter().find(|n| n.id != leader).unwrap();
        let out = Command::new(chorus_binary())
            .arg("consumer")
            .arg("--node")
            .arg(&alive.config.client_addr)
            .args(stack.cluster.operator_args())
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run chorus consumer");
        assert!(out.status.success(), "chorus consumer {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    assert_eq!(consumer_cli(&["show", "c2"]), serde_json::json!({"1": 0, "3": 2}));
    assert_eq!(
        consumer_cli(&["reset", "c2", "--to", "9", "--partitions", "3,5"]),
        serde_json::json!({"1": 0, "3": 9, "5": 9})
    );
    stack.cluster.start(leader).unwrap();

    // Events through the SDK before and after a `--from latest` tail starts.
    let alice = stack.register(0, "+15550001401").await.unwrap();
    let bob = stack.register(1, "+15550001402").await.unwrap();
    let (a, _ae) = stack.connect(0, alice).await;
    // The directory view may not know bob yet (the projector caught up after the kill): retry briefly.
    let end = Instant::now() + Duration::from_secs(30);
    while let Err(e) = a.send(Recipient::User(bob.user), b"old".to_vec()).await {
        assert!(Instant::now() < end, "first send: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..5 {
        a.send(Recipient::User(bob.user), format!("old{i}").into_bytes()).await.unwrap();
    }
    let before = ends(&all_records(&stack).await);
    let latest = Tail::start(&stack, &["--from", "latest"]);
    let chat = ChatId::direct(alice.user, bob.user);
    let chat_partition = PartitionId::for_key(&Key::Chat(chat), stack.spec.partitions);
    let mut new_seqs = Vec::new();
    for i in 0..5 {
        new_seqs.push(a.send(Recipient::User(bob.user), format!("new{i}").into_bytes()).await.unwrap().seq);
    }
    let lines = latest.take(64, Duration::from_secs(5));
    latest.kill();
    for l in &lines {
        assert!(l.offset >= before[&l.partition], "--from latest saw an old event {l:?}");
    }
    let new_in_chat = lines.iter().filter(|l| l.partition == chat_partition.0 && l.kind == "message_sent").count();
    assert_eq!(new_in_chat, 5, "--from latest saw the new sends: {lines:?}");

    // --from time: the first event at or after the time of the third new send, in the chat's partition.
    let records = stack.partition_records(&Key::Chat(chat)).await.unwrap();
    let third =
        records.iter().find(|r| r.event.body.chat() == Some(chat) && r.event.body.seq() == Some(new_seqs[2])).unwrap();
    let t = third.event.at_ms;
    let expected: Vec<&EventRecord> = records.iter().skip_while(|r| r.event.at_ms < t).collect();
    let from_time = format!("time:{t}");
    let limit = expected.len().to_string();
    let p = chat_partition.0.to_string();
    let timed = Tail::start(&stack, &["--from", &from_time, "--partitions", &p, "--limit", &limit]);
    let lines = timed.take(expected.len(), Duration::from_secs(20));
    timed.kill();
    let got: Vec<u64> = lines.iter().map(|l| l.offset).collect();
    let want: Vec<u64> = expected.iter().map(|r| r.offset.0).collect();
    assert_eq!(got, want, "--from time starts at the first event at or after it");
    assert!(got.first().is_some_and(|o| *o <= third.offset.0));
}
