//! Configuration of a log-node process.
//!
//! Precedence: defaults → TOML file (`--config`) → `CHORUS_*` environment
//! variables (`__` separates nested keys, e.g. `CHORUS_RAFT__HEARTBEAT_MS`) → flags.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::network::tls::TlsPaths;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("parsing {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A member of the initial cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub id: u64,
    pub raft_addr: String,
    pub client_addr: String,
}

/// Raft timing and log-compaction settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RaftConfig {
    /// Leader heartbeat interval. openraft 0.9 also uses it as the timeout of
    /// every AppendEntries RPC: below ~250 ms, appends of merged proposals to
    /// a follower busy on 2 cores time out and are sent again.
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot (a checkpoint of the state, then a purge of the log
    /// it covers) after this many log entries since the last one. Entries are
    /// merged proposals of up to `proposer.proposal_bytes_max`, so this also
    /// bounds the log's bytes.
    pub snapshot_after_logs: u64,
    /// Log entries kept behind the latest snapshot (for lagging followers).
    pub keep_logs_after_snapshot: u64,
    /// Most entries in one AppendEntries RPC. Entries are merged proposals of
    /// up to `proposer.proposal_bytes_max` each, so this also bounds its bytes.
    pub max_payload_entries: u64,
    /// Bytes per chunk of a snapshot sent to a replica.
    pub snapshot_chunk_bytes: u64,
}

/// The leader's proposer: how concurrent appends of a group's partitions are
/// merged into Raft entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProposerConfig {
    /// Most command bytes merged into one entry (at least one command goes in).
    pub proposal_bytes_max: usize,
    /// Proposals of one group in flight at once; appends that arrive meanwhile
    /// wait and leave together in the next one.
    pub proposals_in_flight_max: usize,
    /// Most command bytes waiting for a proposal per group; beyond it appends
    /// are refused `Unavailable` (retryable) rather than queued without bound.
    pub queue_bytes_max: usize,
}

impl Default for ProposerConfig {
    fn default() -> Self {
        ProposerConfig { proposal_bytes_max: 1 << 20, proposals_in_flight_max: 2, queue_bytes_max: 64 << 20 }
    }
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_ms: 250,
            election_min_ms: 750,
            election_max_ms: 1500,
            snapshot_after_logs: 1_000,
            keep_logs_after_snapshot: 100,
            max_payload_entries: 16,
            snapshot_chunk_bytes: 4 << 20,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// This node's id; unique in the cluster, never reused.
    pub id: u64,
    pub data_dir: PathBuf,
    /// UDP address of the Raft port (QUIC, mutual TLS).
    pub raft_addr: String,
    /// UDP address of the client API port (QUIC).
    pub client_addr: String,
    /// Number of partitions; fixed for the life of the cluster.
    pub partitions: u16,
    /// Number of Raft groups the partitions run on (partition `p` on group
    /// `p mod groups`); 0 means one per peer (at most one per partition).
    /// Fixed for the life of the cluster.
    pub groups: u16,
    /// Replicas per partition in the initial placement.
    pub replication: usize,
    /// The initial cluster, this node included.
    pub peers: Vec<Peer>,
    /// Initialize the partitions this node leads in the initial placement when
    /// they have no Raft state yet. Set it only when creating a cluster: a node
    /// that lost its disk must be replaced, not bootstrapped again.
    pub bootstrap: bool,
    /// TLS material: the cluster CA and this node's certificate (role
    /// `node`, name = `id`) and key. Required: a node without it refuses to
    /// start (`chorus dev` issues its own).
    pub tls: Option<TlsPaths>,
    pub raft: RaftConfig,
    pub proposer: ProposerConfig,
    /// How long an append may wait for its commit before the client is told
    /// `Timeout` (outcome unknown).
    pub append_timeout_ms: u64,
    /// Read the whole store at start, checking every block's checksum, so
    /// that a damaged file makes the node re-seed from its peers before it
    /// takes part. Off, damage shows at the first read of the damaged block,
    /// which stops the node; it re-seeds at its next start. Start-up time grows
    /// with the store (the events column family holds the whole history).
    pub verify_on_start: bool,
    /// Where this process serves Prometheus metrics (`GET /metrics`, plain
    /// HTTP; see `docs/metrics.md`). None: not served. Also
    /// `CHORUS_METRICS_ADDR` and `--metrics-addr`.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// An OpenTelemetry collector's OTLP/HTTP traces endpoint (e.g.
    /// `http://127.0.0.1:4318/v1/traces`): spans are exported there when set
    /// (the `chorus` binary must be built with the `otlp` feature). None: no
    /// export. Also `CHORUS_OTLP_ENDPOINT`.
    pub otlp_endpoint: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            id: 1,
            data_dir: PathBuf::from("data/log-node-1"),
            raft_addr: "127.0.0.1:7001".into(),
            client_addr: "127.0.0.1:7100".into(),
            partitions: 64,
            groups: 0,
            replication: 3,
            peers: Vec::new(),
            bootstrap: false,
            tls: None,
            raft: RaftConfig::default(),
            proposer: ProposerConfig::default(),
            append_timeout_ms: 10_000,
            verify_on_start: true,
            metrics_addr: None,
            otlp_endpoint: None,
        }
    }
}

impl Config {
    /// Reads a TOML file over the defaults.
    ///
    /// # Errors
    /// When the file cannot be read or parsed.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
        toml::from_str(&text).map_err(|source| Error::Parse { path: path.to_owned(), source })
    }

    /// Applies `CHORUS_*` variables from `vars` (normally `std::env::vars()`);
    /// see [`apply_env`].
    ///
    /// # Errors
    /// When a variable names an unknown key or holds a value of the wrong type.
    pub fn apply_env(self, vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        apply_env(self, vars)
    }

    /// Checks the configuration for mistakes that would only show at run time.
    ///
    /// # Errors
    /// With the first mistake found.
    pub fn validate(&self) -> Result<()> {
        if self.partitions == 0 {
            return Err(Error::Invalid("partitions must be at least 1".into()));
        }
        if self.group_count() > self.partitions {
            return Err(Error::Invalid(format!(
                "{} groups for {} partitions: a group hosts at least one partition",
                self.group_count(),
                self.partitions
            )));
        }
        let pr = &self.proposer;
        if pr.proposal_bytes_max == 0 || pr.proposals_in_flight_max == 0 || pr.queue_bytes_max < pr.proposal_bytes_max {
            return Err(Error::Invalid(
                "proposer: proposal_bytes_max and proposals_in_flight_max must be positive, queue_bytes_max at least proposal_bytes_max".into(),
            ));
        }
        if self.replication == 0 {
            return Err(Error::Invalid("replication must be at least 1".into()));
        }
        if self.peers.is_empty() {
            return Err(Error::Invalid("peers must list the initial cluster, this node included".into()));
        }
        if !self.peers.iter().any(|p| p.id == self.id) {
            return Err(Error::Invalid(format!("peers does not include this node (id {})", self.id)));
        }
        let mut ids: Vec<u64> = self.peers.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.peers.len() {
            return Err(Error::Invalid("peer ids must be unique".into()));
        }
        if self.replication > self.peers.len() {
            return Err(Error::Invalid(format!(
                "replication {} is more than the {} peers",
                self.replication,
                self.peers.len()
            )));
        }
        let r = &self.raft;
        if !(r.heartbeat_ms > 0 && r.heartbeat_ms < r.election_min_ms && r.election_min_ms < r.election_max_ms) {
            return Err(Error::Invalid(
                "raft timing must satisfy 0 < heartbeat_ms < election_min_ms < election_max_ms".into(),
            ));
        }
        Ok(())
    }

    /// The number of Raft groups (`groups`, or when 0 one per peer but no
    /// more than partitions; at least 1).
    pub fn group_count(&self) -> u16 {
        match self.groups {
            0 => u16::try_from(self.peers.len()).unwrap_or(u16::MAX).min(self.partitions).max(1),
            g => g,
        }
    }

    /// Which group hosts which partition.
    ///
    /// # Panics
    /// On a configuration that does not validate.
    pub fn placement(&self) -> crate::placement::Placement {
        crate::placement::Placement::new(self.partitions, self.group_count())
    }

    /// The initial replica set of `group`: `replication` peers in id order,
    /// starting at `group mod peers`, so that leadership spreads evenly.
    pub fn initial_replicas(&self, group: u16) -> Vec<&Peer> {
        let mut peers: Vec<&Peer> = self.peers.iter().collect();
        peers.sort_by_key(|p| p.id);
        let n = peers.len();
        (0..self.replication).filter_map(|i| peers.get((group as usize + i).checked_rem(n)?).copied()).collect()
    }
}

/// Applies `CHORUS_*` variables from `vars` (normally `std::env::vars()`)
/// over any configuration: the log-node's, the projector's and the edge's load
/// the same way (defaults → TOML file → environment → flags). `__` separates
/// nested keys (`CHORUS_RAFT__HEARTBEAT_MS`, `CHORUS_SESSION__FRAMES_PER_SEC`);
/// a value is parsed as the type of the key it replaces (a list: a TOML array
/// such as `["a", "b"]`, or comma-separated strings). A key that is unset
/// (an `Option` that is `None`, e.g. `CHORUS_METRICS_ADDR`) takes the value
/// as a string, and must then be a key of the configuration.
///
/// # Errors
/// When a variable names an unknown key or holds a value of the wrong type.
pub fn apply_env<T: Serialize + DeserializeOwned>(
    config: T,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<T> {
    let mut doc = toml::Value::try_from(&config).map_err(|e| Error::Invalid(e.to_string()))?;
    // Keys set that were absent (unset options): each must exist afterwards.
    let mut unset: Vec<(String, Vec<String>)> = Vec::new();
    for (var, value) in vars {
        let Some(path) = var.strip_prefix("CHORUS_") else { continue };
        let env = |reason: String| Error::Env { var: var.clone(), reason };
        let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
        let Some((last, sections)) = keys.split_last() else { continue };
        let mut table = &mut doc;
        for k in sections {
            table = table.get_mut(k).ok_or_else(|| env(format!("no section `{k}`")))?;
        }
        let t = table.as_table_mut().ok_or_else(|| env("not a section".into()))?;
        let Some(old) = t.get(last) else {
            // Absent: an option that is unset, or a key that does not exist
            // (told apart once the result is built, below).
            t.insert(last.clone(), toml::Value::String(value));
            unset.push((var.clone(), keys.clone()));
            continue;
        };
        let new = match old {
            toml::Value::Integer(_) => {
                toml::Value::Integer(value.parse().map_err(|_| env("expected an integer".into()))?)
            }
            toml::Value::Float(_) => toml::Value::Float(value.parse().map_err(|_| env("expected a number".into()))?),
            toml::Value::Boolean(_) => {
                toml::Value::Boolean(value.parse().map_err(|_| env("expected true or false".into()))?)
            }
            toml::Value::String(_) => toml::Value::String(value),
            toml::Value::Array(_) if value.trim_start().starts_with('[') => {
                let parsed: toml::Table =
                    toml::from_str(&format!("v = {value}")).map_err(|e| env(format!("not a TOML array: {e}")))?;
                parsed.get("v").cloned().ok_or_else(|| env("not a TOML array".into()))?
            }
            toml::Value::Array(_) => toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.into()))
                    .collect(),
            ),
            _ => return Err(env("only keys with a value (not sections) can be set from the environment".into())),
        };
        t.insert(last.clone(), new);
    }
    let built: T = doc.try_into().map_err(|e: toml::de::Error| match unset.first() {
        // Most likely the variable that named no key of the configuration (or
        // an alias of one, which takes no string).
        Some((var, keys)) => Error::Env {
            var: var.clone(),
            reason: format!("unknown key `{}`, or a value it cannot take: {e}", keys.join(".")),
        },
        None => Error::Invalid(e.to_string()),
    })?;
    if !unset.is_empty() {
        // A key the type ignored (or refused) is not a key of the config.
        let back = toml::Value::try_from(&built).map_err(|e| Error::Invalid(e.to_string()))?;
        for (var, keys) in unset {
            let found = keys.iter().try_fold(&back, |v, k| v.get(k)).is_some();
            if !found {
                let last = keys.last().cloned().unwrap_or_default();
                return Err(Error::Env { var, reason: format!("unknown key `{last}`") });
            }
        }
    }
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Config {
        Config {
            peers: (1..=3)
                .map(|id| Peer {
                    id,
                    raft_addr: format!("127.0.0.1:{}", 7000 + id),
                    client_addr: format!("127.0.0.1:{}", 7100 + id),
                })
                .collect(),
            ..Config::default()
        }
    }

    #[test]
    fn env_sets_lists_and_numbers_of_any_config() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Probe {
            log_nodes: Vec<String>,
            ratio: f64,
        }
        let probe = || Probe { log_nodes: vec!["a:1".into()], ratio: 0.5 };
        let vars = |v: &str| [("CHORUS_LOG_NODES".to_string(), v.to_string()), ("CHORUS_RATIO".into(), "2.5".into())];
        let want = Probe { log_nodes: vec!["b:2".into(), "c:3".into()], ratio: 2.5 };
        assert_eq!(apply_env(probe(), vars("b:2, c:3")).unwrap(), want);
        assert_eq!(apply_env(probe(), vars(r#"["b:2", "c:3"]"#)).unwrap(), want);
        assert!(apply_env(probe(), vars("[1, 2")).is_err());
        assert!(apply_env(probe(), [("CHORUS_RATIO".to_string(), "x".to_string())]).is_err());
    }

    #[test]
    fn env_overrides_nested_and_top_level_keys() {
        let c = three()
            .apply_env([
                ("CHORUS_RAFT__HEARTBEAT_MS".to_string(), "99".to_string()),
                ("CHORUS_PARTITIONS".to_string(), "8".to_string()),
                ("HOME".to_string(), "/root".to_string()),
            ])
            .unwrap();
        assert_eq!(c.raft.heartbeat_ms, 99);
        assert_eq!(c.partitions, 8);
        let err = three().apply_env([("CHORUS_NOPE".to_string(), "1".to_string())]).unwrap_err();
        assert!(err.to_string().contains("unknown key"), "{err}");
        // An unset option takes a value from the environment; a bad one is refused.
        let c = three()
            .apply_env([
                ("CHORUS_METRICS_ADDR".to_string(), "127.0.0.1:9464".to_string()),
                ("CHORUS_OTLP_ENDPOINT".to_string(), "http://127.0.0.1:4318/v1/traces".to_string()),
            ])
            .unwrap();
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(c.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4318/v1/traces"));
        assert!(three().apply_env([("CHORUS_METRICS_ADDR".to_string(), "nowhere".to_string())]).is_err());
        let err = three().apply_env([("CHORUS_PARTITIONS".to_string(), "many".to_string())]).unwrap_err();
        assert!(err.to_string().contains("integer"), "{err}");
    }

    #[test]
    fn validate_rejects_inconsistent_configs() {
        assert!(three().validate().is_ok());
        assert!(Config { replication: 4, ..three() }.validate().is_err());
        assert!(Config { id: 9, ..three() }.validate().is_err());
        assert!(Config { partitions: 0, ..three() }.validate().is_err());
        assert!(Config { partitions: 2, groups: 3, ..three() }.validate().is_err(), "3 groups for 2 partitions");
        assert_eq!(Config { partitions: 2, ..three() }.group_count(), 2, "one per peer, at most one per partition");
        assert!(Config { partitions: 2, ..three() }.validate().is_ok());
        assert_eq!(three().group_count(), 3);
        assert_eq!(Config { groups: 6, ..three() }.group_count(), 6);
        assert!(Config::default().validate().is_err(), "no peers");
    }

    #[test]
    fn initial_placement_spreads_replicas() {
        let c = three();
        let ids = |p| c.initial_replicas(p).iter().map(|p| p.id).collect::<Vec<_>>();
        assert_eq!(ids(0), vec![1, 2, 3]);
        assert_eq!(ids(1), vec![2, 3, 1]);
        assert_eq!(ids(5), vec![3, 1, 2]);
    }
}
