//! Prometheus metrics of real processes: 3 log-nodes, a nats-server, a
//! projector and 2 edges (and `chorus dev`), scraped over HTTP during and
//! after a known workload, parsed as Prometheus text; the counters must agree
//! with the workload, and every documented metric must be exported.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chorus_schema::{ChatId, EdgeErrorCode, GroupOp, Recipient};
use chorus_testkit::cluster::chorus_binary;
use chorus_testkit::events::{messages, refused};
use chorus_testkit::stack::{Stack, StackSpec};
use prometheus_parse::{Sample, Scrape, Value};

/// One deployment at a time: each is 7 processes on 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `GET http://addr/metrics`, parsed.
async fn scrape(addr: SocketAddr) -> Scrape {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap_or_else(|e| panic!("scrape {addr}: {e}"))
        .error_for_status()
        .unwrap()
        .text()
        .await
        .unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// Every process's scrape, by process name.
async fn scrape_all(stack: &Stack) -> BTreeMap<String, Scrape> {
    let mut out = BTreeMap::new();
    for (name, addr) in stack.metrics_addrs() {
        out.insert(name, scrape(addr).await);
    }
    out
}

/// A counter's, gauge's or untyped sample's value; a histogram's count.
fn value(s: &Sample) -> f64 {
    match &s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(buckets) => buckets.iter().find(|b| b.less_than.is_infinite()).map_or(0.0, |b| b.count),
        Value::Summary(_) => panic!("chorus exports no summaries: {s:?}"),
    }
}

/// The sum of `name` over the samples of one scrape whose labels include `labels`.
fn sum(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(value)
        .sum()
}

/// The sum of `name` over the scrapes of processes whose name starts with `prefix`.
fn total(all: &BTreeMap<String, Scrape>, prefix: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    all.iter().filter(|(n, _)| n.starts_with(prefix)).map(|(_, s)| sum(s, name, labels)).sum()
}

/// `name{label=…}` by the label's value.
fn by_label(scrape: &Scrape, name: &str, label: &str) -> BTreeMap<String, f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter_map(|s| Some((s.labels.get(label)?.to_owned(), value(s))))
        .collect()
}

/// Metric families in a scrape (a histogram's `_sum` and `_count` under its
/// family name).
fn names(scrape: &Scrape) -> BTreeSet<String> {
    let histograms: BTreeSet<&str> =
        scrape.samples.iter().filter(|s| matches!(s.value, Value::Histogram(_))).map(|s| s.metric.as_str()).collect();
    let family = |n: &str| {
        let base = ["_sum", "_count"].iter().find_map(|x| n.strip_suffix(x)).filter(|b| histograms.contains(b));
        base.unwrap_or(n).to_owned()
    };
    scrape.samples.iter().map(|s| family(&s.metric)).collect()
}

/// The log's end of every partition: the furthest next offset any node reports.
async fn log_ends(stack: &Stack) -> BTreeMap<String, f64> {
    let mut ends: BTreeMap<String, f64> = BTreeMap::new();
    for addr in stack.cluster.client_addrs() {
        let status = stack.log.status(&addr).await.unwrap();
        for p in status.partitions {
            let e = ends.entry(p.partition.to_string()).or_default();
            *e = e.max(p.next_offset.0 as f64);
        }
    }
    ends
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_of_every_process_agree_with_the_workload() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(StackSpec::new(dir.path(), chorus_binary()).unthrottled()).await.expect("start");
    let addrs = stack.metrics_addrs();
    assert_eq!(addrs.len(), 3 + 1 + 2, "3 log-nodes, a projector, 2 edges: {addrs:?}");

    // Before any client: every process says what it is.
    let before = scrape_all(&stack).await;
    for (name, scrape) in &before {
        let role = name.rsplit_once('-').filter(|(_, i)| i.parse::<u32>().is_ok()).map_or(name.as_str(), |(r, _)| r);
        let info: Vec<_> = scrape.samples.iter().filter(|s| s.metric == "chorus_process_info").collect();
        assert_eq!(info.len(), 1, "{name}: {info:?}");
        assert_eq!(info[0].labels.get("role"), Some(role), "{name}: {info:?}");
        assert_eq!(value(info[0]), 1.0);
        let id = info[0].labels.get("id").unwrap();
        match role {
            "log-node" => assert_eq!(Some(id), name.strip_prefix("log-node-"), "{name}"),
            "edge" => assert_eq!(id, name, "an edge's id is its name"),
            _ => assert_eq!(id, "projector"),
        }
    }
    assert_eq!(total(&before, "edge", "chorus_edge_sends_total", &[]), 0.0);

    // The workload: two devices register (a text each) and log in, one at
    // each edge; Alice sends Bob N messages; one request is refused.
    const N: usize = 200;
    let alice = stack.register(0, "+15550000901").await.unwrap();
    let bob = stack.register(1, "+15550000902").await.unwrap();
    let (a, _a_events) = stack.connect(0, alice).await;
    let (_b, mut b_events) = stack.connect(1, bob).await;
    let sender = {
        let a = a.clone();
        tokio::spawn(async move {
            for i in 0..N {
                a.send(Recipient::User(bob.user), format!("m{i}").into_bytes()).await.unwrap();
            }
        })
    };
    // Scraped while messages flow: parses, and counts no more than was sent.
    let during = scrape_all(&stack).await;
    let sends_during = total(&during, "edge", "chorus_edge_sends_total", &[]);
    assert!(sends_during <= N as f64, "{sends_during}");
    sender.await.unwrap();
    let got = messages(&mut b_events, N, Duration::from_secs(30)).await;
    assert_eq!(got.len(), N);
    let (code, _) = refused(a.group(ChatId::group([9; 16]), GroupOp::Leave).await);
    assert_eq!(code, EdgeErrorCode::UnknownRecipient);

    // After the run (gauges are sampled every 0.5–1 s: wait for them).
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let after = scrape_all(&stack).await;
        let projector = &after["projector"];
        let ends = log_ends(&stack).await;
        let cursors = by_label(projector, "chorus_projector_next_offset", "partition");
        let lags = by_label(projector, "chorus_projector_lag_events", "partition");
        let node_ends: BTreeMap<String, f64> = ends.keys().map(|p| (p.clone(), 0.0)).collect();
        let node_ends = after.iter().filter(|(n, _)| n.starts_with("log-node")).fold(node_ends, |mut acc, (_, s)| {
            for (p, v) in by_label(s, "chorus_log_next_offset", "partition") {
                let e = acc.entry(p).or_default();
                *e = e.max(v);
            }
            acc
        });
        let settled = cursors == ends
            && node_ends == ends
            && lags.len() == ends.len()
            && lags.values().all(|l| *l == 0.0)
            && total(&after, "edge", "chorus_edge_connections", &[]) == 2.0;
        if settled {
            break after;
        }
        assert!(
            Instant::now() < deadline,
            "the projector's cursors {cursors:?} (lags {lags:?}) and the nodes' ends {node_ends:?} never matched the log's ends {ends:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // Edges: what the clients did.
    assert_eq!(total(&after, "edge", "chorus_edge_sends_total", &[]), N as f64);
    assert_eq!(sum(&after["edge-0"], "chorus_edge_sends_total", &[]), N as f64, "Alice sends through edge 0");
    assert_eq!(total(&after, "edge", "chorus_edge_logins_total", &[]), 2.0, "one login per device");
    assert!(sum(&after["edge-1"], "chorus_edge_deliveries_total", &[]) >= N as f64, "Bob is on edge 1");
    assert_eq!(total(&after, "edge", "chorus_edge_refusals_total", &[("code", "UnknownRecipient")]), 1.0);
    assert_eq!(total(&after, "edge", "chorus_sms_sent_total", &[]), 2.0, "one code per registration");
    assert_eq!(total(&after, "edge", "chorus_edge_connections", &[]), 2.0);
    // The log: every send is a committed append, on the group leaders.
    assert!(total(&after, "log-node", "chorus_log_appends_total", &[]) >= N as f64);
    assert!(total(&after, "log-node", "chorus_log_commit_seconds", &[]) >= 1.0, "commit latency histogram");
    for node in ["log-node-1", "log-node-2", "log-node-3"] {
        let s = &after[node];
        assert!(sum(s, "chorus_log_fsync_batch_entries", &[]) > 0.0, "{node} fsyncs its log");
        assert!(sum(s, "chorus_raft_term", &[]) >= 1.0, "{node}");
        assert!(sum(s, "chorus_raft_last_applied", &[]) > 0.0, "{node}");
    }
    // Every group has exactly one leader, and every node saw one.
    let leaders: f64 = after.values().map(|s| sum(s, "chorus_raft_is_leader", &[])).sum();
    assert_eq!(leaders, 3.0, "3 groups, one leader each");
    assert!(
        total(&after, "log-node", "chorus_raft_leader_changes_total", &[]) >= 9.0,
        "each node saw each group's leader"
    );
    // The projector folded what the log holds and answered view queries.
    let projector = &after["projector"];
    let events: f64 = log_ends(&stack).await.values().sum();
    assert_eq!(sum(projector, "chorus_projector_records_total", &[]), events, "every event folded once");
    assert!(sum(projector, "chorus_bus_published_total", &[("kind", "deliver")]) >= N as f64);
    assert!(sum(projector, "chorus_view_query_seconds", &[("view", "session")]) >= 2.0, "each login checks a token");

    // Every documented metric is exported by a process of its role.
    let exported: BTreeSet<String> = after.values().flat_map(names).collect();
    let missing: Vec<_> = chorus_tools::metrics::all_names().into_iter().filter(|n| !exported.contains(*n)).collect();
    assert!(missing.is_empty(), "documented but not exported: {missing:?}");
    let undocumented: Vec<_> = exported
        .iter()
        .filter(|n| n.starts_with("chorus_") && !chorus_tools::metrics::all_names().contains(&n.as_str()))
        .collect();
    assert!(undocumented.is_empty(), "exported but not documented: {undocumented:?}");
}

/// `chorus dev` serves the metrics of its embedded log-node, projector and
/// edge on one address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chorus_dev_serves_metrics() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let port = || chorus_testkit::ports::free_addr().unwrap().to_string();
    let metrics: SocketAddr = port().parse().unwrap();
    let log = std::fs::File::create(dir.path().join("dev.log")).unwrap();
    let mut child = std::process::Command::new(chorus_binary())
        .current_dir(dir.path())
        .args(["dev", "--partitions", "4", "--data"])
        .arg(dir.path().join("data"))
        .args(["--client-addr", &port(), "--raft-addr", &port(), "--edge-addr", &port()])
        .args(["--metrics-addr", &metrics.to_string()])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let scrape = loop {
        // Served once the edge is up: its gauges are there.
        if let Ok(r) = reqwest::get(format!("http://{metrics}/metrics")).await {
            let text = r.text().await.unwrap();
            let s = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
            if names(&s).contains("chorus_edge_connections") && names(&s).contains("chorus_projector_lag_events") {
                break s;
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chorus dev served no metrics: {}", std::fs::read_to_string(dir.path().join("dev.log")).unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let info: Vec<_> = scrape.samples.iter().filter(|s| s.metric == "chorus_process_info").collect();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].labels.get("role"), Some("dev"));
    let names = names(&scrape);
    for n in
        ["chorus_log_appends_total", "chorus_raft_term", "chorus_projector_next_offset", "chorus_edge_logins_total"]
    {
        assert!(names.contains(n), "{n} missing from {names:?}");
    }
    assert_eq!(sum(&scrape, "chorus_raft_is_leader", &[]), 1.0, "one group, led by the only node");
}

/// `docs/metrics.md` lists exactly the metrics the code names.
#[test]
fn the_metrics_doc_lists_every_metric_and_no_other() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md")).unwrap();
    let documented: BTreeSet<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|n| n.starts_with("chorus_"))
        .collect();
    let named: BTreeSet<&str> = chorus_tools::metrics::all_names().into_iter().collect();
    assert_eq!(documented, named, "docs/metrics.md and the code's metric names differ");
    // The dashboard is valid JSON and queries only metrics that exist.
    let dashboard =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana/chorus.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut exprs = Vec::new();
    fn collect(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(e)) = m.get("expr") {
                    out.push(e.clone());
                }
                m.values().for_each(|v| collect(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&json, &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");
    for e in &exprs {
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("chorus_")) {
            let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| word.strip_suffix(s)).unwrap_or(word);
            assert!(named.contains(base), "the dashboard queries {word}, which no process exports: {e}");
        }
    }
}

/// With `otlp_endpoint` set (here `CHORUS_OTLP_ENDPOINT` of `chorus dev`),
/// spans reach an OTLP/HTTP collector: a registration's appends, exported as
/// protobuf by `chorus-dev`. Needs a `chorus` built with the `otlp` feature (the default).
#[cfg(feature = "otlp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chorus_dev_exports_spans_by_otlp() {
    use std::io::{BufRead, BufReader, Read, Write};

    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // A collector that takes every request and answers 200.
    let collector = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}/v1/traces", collector.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<(String, Vec<u8>)>();
    std::thread::spawn(move || {
        for stream in collector.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = header.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap();
                    }
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mut stream = stream;
            stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").unwrap();
            let _ = tx.send((request_line, body));
        }
    });
    let port = || chorus_testkit::ports::free_addr().unwrap().to_string();
    let edge = port();
    let data = dir.path().join("data");
    let log = std::fs::File::create(dir.path().join("dev.log")).unwrap();
    let mut child = std::process::Command::new(chorus_binary())
        .current_dir(dir.path())
        .env("CHORUS_OTLP_ENDPOINT", &endpoint)
        .env("RUST_LOG", "info,chorus_edge=debug,chorus_log_node=debug")
        .args(["dev", "--partitions", "4", "--metrics-addr", "off", "--data"])
        .arg(&data)
        .args(["--client-addr", &port(), "--raft-addr", &port(), "--edge-addr", &edge])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let ca = data.join("tls").join(format!("{}.pem", chorus_log_node::network::tls::EDGE_CA));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = chorus_testkit::services::register(&edge, &data.join("sms.jsonl"), &ca, "+15550000991", "t").await;
        if r.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "no registration through chorus dev: {r:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A clean stop flushes the spans not yet exported.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("dev.log")).unwrap();
    assert!(status.success(), "chorus dev: {status}: {log}");
    let requests: Vec<(String, Vec<u8>)> = rx.try_iter().collect();
    let contains = |body: &[u8], what: &[u8]| body.windows(what.len()).any(|w| w == what);
    assert!(
        requests.iter().any(|(line, body)| line.starts_with("POST /v1/traces")
            && contains(body, b"chorus-dev")
            && contains(body, b"propose")
            && contains(body, b"append")),
        "no trace export with the appends' spans: {:?}\n{log}",
        requests.iter().map(|(l, b)| (l, b.len())).collect::<Vec<_>>()
    );
}
