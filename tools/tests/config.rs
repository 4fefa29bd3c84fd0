//! The log-node, the projector and the edge load their configuration the same
//! way — defaults → TOML file → `CHORUS_*` environment → flags — and name the
//! same things the same (`log_nodes`, `log_tls`, `bus`, `view_key`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::process::Command;

fn chorus() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chorus"))
}

/// `chorus <args> --config-check` with `env`: the effective configuration.
fn effective(args: &[&str], env: &[(&str, &str)]) -> toml::Table {
    let out = chorus().args(args).arg("--config-check").envs(env.iter().copied()).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

fn strings(v: &toml::Value) -> Vec<&str> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect()
}

#[test]
fn every_process_layers_defaults_file_environment_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let edge_file = dir.path().join("edge.toml");
    std::fs::write(
        &edge_file,
        "log_nodes = [\"10.0.0.1:7100\"]\nkeep_alive_ms = 1234\n[sms]\nkind = \"file\"\npath = \"sms.jsonl\"\n",
    )
    .unwrap();
    let projector_file = dir.path().join("projector.toml");
    std::fs::write(&projector_file, "log_nodes = [\"10.0.0.1:7100\"]\nbatch_records_max = 64\n").unwrap();
    let node_file = dir.path().join("node.toml");
    std::fs::write(
        &node_file,
        "partitions = 16\nreplication = 1\n[[peers]]\nid = 1\nraft_addr = \"127.0.0.1:7001\"\nclient_addr = \"127.0.0.1:7100\"\n",
    )
    .unwrap();
    let edge_path = edge_file.to_str().unwrap();
    let projector_path = projector_file.to_str().unwrap();
    let node_path = node_file.to_str().unwrap();

    // The file over the defaults.
    let edge = effective(&["edge", "--config", edge_path], &[]);
    assert_eq!(strings(&edge["log_nodes"]), ["10.0.0.1:7100"]);
    assert_eq!(edge["keep_alive_ms"].as_integer(), Some(1234));
    let projector = effective(&["projector", "--config", projector_path], &[]);
    assert_eq!(strings(&projector["log_nodes"]), ["10.0.0.1:7100"]);
    assert_eq!(projector["batch_records_max"].as_integer(), Some(64));

    // The environment over the file, with the same variable for the same key.
    let env = [("CHORUS_LOG_NODES", "10.0.0.2:7100,10.0.0.3:7100"), ("CHORUS_SESSION__FRAMES_PER_SEC", "7")];
    let edge = effective(&["edge", "--config", edge_path], &env);
    assert_eq!(strings(&edge["log_nodes"]), ["10.0.0.2:7100", "10.0.0.3:7100"]);
    assert_eq!(edge["session"]["frames_per_sec"].as_integer(), Some(7));
    let projector = effective(&["projector", "--config", projector_path], &env[..1]);
    assert_eq!(strings(&projector["log_nodes"]), ["10.0.0.2:7100", "10.0.0.3:7100"]);
    let node = effective(&["log-node", "--config", node_path], &[("CHORUS_PARTITIONS", "32")]);
    assert_eq!(node["partitions"].as_integer(), Some(32));

    // Flags over the environment.
    let edge = effective(
        &["edge", "--config", edge_path, "--listen", "127.0.0.1:9999"],
        &[("CHORUS_LISTEN", "127.0.0.1:8888")],
    );
    assert_eq!(edge["listen"].as_str(), Some("127.0.0.1:9999"));
    let projector = effective(
        &["projector", "--config", projector_path, "--store-dir", "/tmp/flag"],
        &[("CHORUS_STORE_DIR", "/tmp/env")],
    );
    assert_eq!(projector["store_dir"].as_str(), Some("/tmp/flag"));
    let node = effective(&["log-node", "--config", node_path, "--id", "1"], &[("CHORUS_ID", "2")]);
    assert_eq!(node["id"].as_integer(), Some(1));

    // The old edge key still reads, as the new one.
    std::fs::write(&edge_file, "log_seeds = [\"10.0.0.9:7100\"]\n[sms]\nkind = \"file\"\npath = \"sms.jsonl\"\n")
        .unwrap();
    assert_eq!(strings(&effective(&["edge", "--config", edge_path], &[])["log_nodes"]), ["10.0.0.9:7100"]);

    // A variable naming no key, or a value of the wrong type, is refused by name.
    for (args, var) in [
        (vec!["edge", "--config", edge_path], ("CHORUS_LOG_SEEDS", "x")),
        (vec!["projector", "--config", projector_path], ("CHORUS_BATCH_RECORDS_MAX", "many")),
    ] {
        let out = chorus().args(&args).arg("--config-check").env(var.0, var.1).output().unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(var.0), "{}", String::from_utf8_lossy(&out.stderr));
    }
}
