//! `chorus export` as a process against real clusters, read back by DuckDB
//! (the Python `duckdb` package): counts per kind and chat equal the log's,
//! seqs are gap-free, no byte of any file holds a message; a `kill -9`
//! mid-export resumed from the manifest gives every event exactly once;
//! pseudonyms are stable per key and hide ids and phones.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::Duration;

use chorus_log_node::LogClient;
use chorus_schema::edge::user_for_phone;
use chorus_schema::{
    ChatId, ClientMsgId, Command, CommandBody, DeviceId, EventRecord, GroupOp, Offset, Origin, PartitionId,
    ReceiptKind, Recipient, Seq, UserId,
};
use chorus_testkit::cluster::{chorus_binary, Cluster, ClusterSpec};
use chorus_testkit::stack::{Stack, StackSpec};

/// One deployment at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The `chorus export` command line against `cluster` (its operator certificate).
fn export_cmd(cluster: &Cluster, out: &Path, format: &str) -> Process {
    let mut p = Process::new(chorus_binary());
    let o = &cluster.operator;
    p.arg("export")
        .arg("--node")
        .arg(&cluster.client_addrs()[0])
        .arg("--ca")
        .arg(&o.ca)
        .arg("--cert")
        .arg(&o.cert)
        .arg("--key")
        .arg(&o.key)
        .arg("--format")
        .arg(format)
        .arg("--out")
        .arg(out)
        .env("RUST_LOG", "warn");
    p
}

fn must_run(mut p: Process) -> String {
    let out = p.output().expect("run chorus export");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "chorus export failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Every record of every partition, as the log holds it now.
async fn all_records(log: &LogClient) -> Vec<EventRecord> {
    let mut out = Vec::new();
    for p in 0..log.partitions() {
        let mut from = Offset(0);
        loop {
            let (records, next) = log.read(PartitionId(p), from, 4096).await.unwrap();
            if records.is_empty() {
                break;
            }
            out.extend(records);
            from = next;
        }
    }
    out
}

/// Runs DuckDB over the export in `dir` and returns its JSON report: rows,
/// distinct (partition, offset), counts per kind, message counts per chat,
/// chats whose seqs are not 1..=n without gaps, and every value as text.
fn duckdb(dir: &Path, format: &str) -> serde_json::Value {
    const SCRIPT: &str = r#"
import duckdb, json, sys
d, fmt = sys.argv[1], sys.argv[2]
src = f"read_parquet('{d}/part-*.parquet')" if fmt == "parquet" else f"read_json_auto('{d}/part-*.jsonl', format='newline_delimited')"
con = duckdb.connect()
con.execute(f"CREATE VIEW e AS SELECT * FROM {src}")
q = lambda s: con.execute(s).fetchall()
out = {
  "rows": q("SELECT count(*) FROM e")[0][0],
  "distinct": q("SELECT count(DISTINCT (partition, \"offset\")) FROM e")[0][0],
  "kinds": dict(q("SELECT kind, count(*) FROM e GROUP BY kind")),
  "messages": dict(q("SELECT chat, count(*) FROM e WHERE kind = 'message_sent' GROUP BY chat")),
  "gaps": [r[0] for r in q("SELECT chat FROM e WHERE seq IS NOT NULL GROUP BY chat HAVING min(seq) <> 1 OR max(seq) <> count(*) OR count(DISTINCT seq) <> count(*)")],
  "group_messages": [list(r) for r in q("SELECT DISTINCT members, recipients FROM e WHERE kind = 'message_sent' AND chat = '" + sys.argv[3] + "'")],
  "text": "\n".join(str(r) for r in q("SELECT * FROM e")),
}
print(json.dumps(out, default=str))
"#;
    let group = std::env::var("EXPORT_TEST_GROUP").unwrap_or_default();
    let out = Process::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(dir)
        .arg(format)
        .arg(group)
        .output()
        .expect("run python3 (with the duckdb package: tools/setup.sh)");
    assert!(out.status.success(), "duckdb: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every file of `dir`, as bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).map(|p| (p.clone(), std::fs::read(p).unwrap())).collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_known_workload_exports_with_exact_counts_and_no_message_bytes() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(StackSpec::new(dir.path().join("stack"), chorus_binary()).unthrottled()).await.unwrap();
    let alice = stack.register(0, "+15550000201").await.unwrap();
    let bob = stack.register(1, "+15550000202").await.unwrap();
    let carol = stack.register(0, "+15550000203").await.unwrap();
    let (a, _a_events) = stack.connect(0, alice).await;
    let (b, _b_events) = stack.connect(1, bob).await;

    // What the SDK sends is what the log stores as the message's ciphertext
    // (the app encrypts before; chorus never sees plaintext): these bytes
    // must appear nowhere in an export.
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let mut body = |i: usize, who: &str| {
        let b = format!("SECRET-{who}-{i}-plaintext-7c1e9a4b").into_bytes();
        bodies.push(b.clone());
        b
    };
    let direct = ChatId::direct(alice.user, bob.user);
    for i in 0..12 {
        a.send(Recipient::User(bob.user), body(i, "alice")).await.unwrap();
    }
    for i in 0..5 {
        b.send(Recipient::User(alice.user), body(i, "bob")).await.unwrap();
    }
    b.ack(direct, ReceiptKind::Delivered, Seq(17));
    b.ack(direct, ReceiptKind::Read, Seq(12));
    let group = a.create_group("SECRET-GROUP-NAME", vec![bob.user, carol.user]).await.unwrap();
    for i in 0..4 {
        a.send(Recipient::Group(group), body(i, "group")).await.unwrap();
    }
    a.group(group, GroupOp::Promote { member: bob.user }).await.unwrap();
    a.group(group, GroupOp::Remove { member: carol.user }).await.unwrap();
    b.send(Recipient::Group(group), body(9, "group")).await.unwrap();
    // The receipts are sent in the background: wait until both are in the log.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let records = loop {
        let records = all_records(&stack.log).await;
        let receipts = records.iter().filter(|r| r.event.body.kind() == "Receipt").count();
        if receipts >= 2 {
            break records;
        }
        assert!(tokio::time::Instant::now() < deadline, "the receipts never reached the log");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    for r in &records {
        *kinds.entry(chorus_analytics::kind_name(&r.event.body).to_owned()).or_default() += 1;
    }
    assert_eq!(kinds["message_sent"], 12 + 5 + 4 + 1);
    assert_eq!(kinds["member_promoted"], 1);
    std::env::set_var("EXPORT_TEST_GROUP", group.to_string());

    for format in ["parquet", "jsonl"] {
        let out = dir.path().join(format!("export-{format}"));
        let stdout = must_run(export_cmd(&stack.cluster, &out, format));
        assert!(stdout.contains(&format!("exported {} rows", records.len())), "{stdout}");
        let r = duckdb(&out, format);
        assert_eq!(r["rows"], records.len() as u64, "{format}");
        assert_eq!(r["distinct"], records.len() as u64, "{format}");
        let got: BTreeMap<String, u64> =
            r["kinds"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).collect();
        assert_eq!(got, kinds, "{format}: counts per kind");
        assert_eq!(r["messages"][direct.to_string()], 17, "{format}");
        assert_eq!(r["messages"][group.to_string()], 5, "{format}");
        assert_eq!(r["gaps"], serde_json::json!([]), "{format}: seqs with gaps");
        // Four messages to three members, one after the removal to two.
        let mut gm: Vec<(u64, u64)> = r["group_messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v[0].as_u64().unwrap(), v[1].as_u64().unwrap()))
            .collect();
        gm.sort();
        assert_eq!(gm, vec![(2, 1), (3, 2)], "{format}: members and recipients of the group's messages");
        let text = r["text"].as_str().unwrap();
        assert!(text.contains("message_sent") && text.contains("read"), "{format}: the text dump has the rows");
        for body in &bodies {
            let s = std::str::from_utf8(body).unwrap();
            assert!(!text.contains(s), "{format}: a value holds a message");
            for (path, bytes) in files(&out) {
                assert!(!contains(&bytes, body), "{} holds message bytes {s}", path.display());
            }
        }
        for (path, bytes) in files(&out) {
            assert!(!contains(&bytes, b"SECRET"), "{} holds user content", path.display());
        }
    }
    drop(stack);
}

/// `n` direct messages from many senders, appended straight to the log.
async fn fill(log: &LogClient, n: u64) {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..64u64 {
        let log = log.clone();
        tasks.spawn(async move {
            for i in (w..n).step_by(64) {
                let cmd = Command {
                    origin: Origin { user: UserId(100 + w), device: DeviceId(1), client_msg_id: ClientMsgId(i + 1) },
                    body: CommandBody::SendDirect {
                        recipient: UserId(10_000 + i % 97),
                        ciphertext: vec![0xAB; 64],
                        media: None,
                    },
                };
                assert!(log.append(&cmd).await.unwrap().is_ok());
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

fn jsonl_rows(dir: &Path) -> Vec<serde_json::Value> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_export_resumes_from_its_manifest_exactly_once_and_pseudonyms_are_keyed() {
    let _g = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ClusterSpec::new(dir.path().join("cluster"), chorus_binary(), 3);
    spec.partitions = 8;
    let mut cluster = Cluster::create(spec).await.unwrap();
    cluster.start_all().unwrap();
    let log = cluster.wait_ready(Duration::from_secs(60)).await.unwrap();
    const N: u64 = 20_000;
    fill(&log, N).await;
    let phones = ["+15550009901", "+15550009902"];
    for phone in phones {
        let user = user_for_phone(phone).unwrap();
        let cmd = Command {
            origin: Origin { user, device: DeviceId(1), client_msg_id: ClientMsgId(1) },
            body: CommandBody::RegisterDevice {
                phone: phone.into(),
                device: DeviceId(1),
                identity_key: vec![1; 32],
                name: "SECRET-DEVICE".into(),
                token_hash: [2; 32],
                pin_hash: None,
            },
        };
        assert!(log.append(&cmd).await.unwrap().is_ok());
    }
    let total = all_records(&log).await.len() as u64;
    assert!(total >= N + 2, "{total}");

    // Small parts and reads, so the export is still running when killed.
    let out = dir.path().join("resumed");
    let mut first = export_cmd(&cluster, &out, "parquet");
    first.args(["--part-rows", "500", "--row-group-rows", "100", "--batch", "64", "--read-ahead", "1"]);
    let mut child = first.stdout(std::process::Stdio::null()).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !out.join("part-00002.parquet").exists() {
        assert!(std::time::Instant::now() < deadline, "no part written");
        assert!(child.try_wait().unwrap().is_none(), "the export ended before it was killed");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(child.try_wait().unwrap().is_none(), "the export ended before it was killed");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    let manifest = chorus_analytics::Manifest::load(&out).unwrap().expect("a manifest after the first part");
    let before: u64 = manifest.parts.iter().map(|p| p.rows).sum();
    assert!(before > 0 && before < total, "killed mid-export: {before} of {total}");
    let mut resume = export_cmd(&cluster, &out, "parquet");
    resume.args(["--from-manifest", "--part-rows", "5000"]);
    let stdout = must_run(resume);
    // The saved group membership spares the warm-up: only new records are read.
    let new = total - before;
    assert!(stdout.contains(&format!("exported {new} rows ({new} records read)")), "{stdout}");
    std::env::set_var("EXPORT_TEST_GROUP", "");
    let r = duckdb(&out, "parquet");
    assert_eq!((r["rows"].as_u64(), r["distinct"].as_u64()), (Some(total), Some(total)), "each event exactly once");
    // Nothing new: a second resume exports no rows.
    let mut again = export_cmd(&cluster, &out, "parquet");
    again.arg("--from-manifest");
    assert!(must_run(again).contains("exported 0 rows"));
    assert_eq!(duckdb(&out, "parquet")["rows"].as_u64(), Some(total));

    // Pseudonyms: the same key twice gives the same ids, another key others.
    let pseudo = |name: &str, key: &str| {
        let out = dir.path().join(name);
        let mut p = export_cmd(&cluster, &out, "jsonl");
        p.args(["--pseudonymize", key]);
        must_run(p);
        let text: String =
            files(&out).into_iter().map(|(_, b)| String::from_utf8(b).unwrap()).collect::<Vec<_>>().join("\n");
        (jsonl_rows(&out), text)
    };
    let ids = |rows: &[serde_json::Value]| -> Vec<String> {
        rows.iter()
            .map(|r| {
                format!(
                    "{} {} {} {} {} {}",
                    r["partition"], r["offset"], r["sender_user"], r["sender_device"], r["chat"], r["phone"]
                )
            })
            .collect::<Vec<_>>()
    };
    let (k1, text1) = pseudo("k1", "key one");
    let (k1b, _) = pseudo("k1b", "key one");
    let (k2, _) = pseudo("k2", "key two");
    assert_eq!(k1.len() as u64, total);
    assert_eq!(ids(&k1), ids(&k1b));
    let (s1, s2): (HashSet<String>, HashSet<String>) = (
        k1.iter().map(|r| r["sender_user"].to_string()).collect(),
        k2.iter().map(|r| r["sender_user"].to_string()).collect(),
    );
    assert!(s1.is_disjoint(&s2), "another key gives other pseudonyms");
    for phone in phones {
        assert!(!text1.contains(phone), "a raw phone number");
        let raw = user_for_phone(phone).unwrap().0;
        assert!(!k1.iter().any(|r| r["sender_user"] == raw || r["user"] == raw), "a raw user id");
    }
    let raw_senders: HashSet<u64> = (100..164).collect();
    assert!(!k1.iter().any(|r| r["sender_user"].as_u64().is_some_and(|u| raw_senders.contains(&u))));
    assert_eq!(
        k1.iter().filter(|r| r["phone"].is_string()).count(),
        2,
        "the registrations keep a (pseudonymous) phone"
    );
    assert!(!text1.contains("SECRET"));
}
