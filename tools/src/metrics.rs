//! Serving Prometheus metrics from a `chorus` process.
//!
//! The libraries (log-node, projections, edge) record through the
//! [`metrics`] facade and own their metric names (`chorus_log_node::metrics`,
//! `chorus_projections::metrics`, `chorus_edge::metrics`): each crate
//! documents what it measures beside the code that measures it, and none
//! depends on another for it. The process owns the recorder: [`install`],
//! once, from the command that runs a log-node, a projector, an edge or
//! `chorus dev`, with the process's `metrics_addr`.
//!
//! Histograms are exported as Prometheus histograms (buckets, so that
//! dashboards can take quantiles over any set of processes), not summaries.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// `1` with the process's `role` and `id`: which processes a scrape sees.
pub const PROCESS_INFO: &str = "chorus_process_info";

/// Every metric every process exports (beside its role's).
pub const ALL: &[&str] = &[PROCESS_INFO];

/// The default address of `chorus dev`'s metrics.
pub const DEV_ADDR: &str = "127.0.0.1:9464";

/// What a process is, the `role` label of [`PROCESS_INFO`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    LogNode,
    Projector,
    Edge,
    Dev,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::LogNode => "log-node",
            Role::Projector => "projector",
            Role::Edge => "edge",
            Role::Dev => "dev",
        }
    }
}

/// Buckets of latency histograms (seconds): 100 µs to 10 s.
const SECONDS_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Buckets of the fsync batch size histogram (entries).
const ENTRIES_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];

/// Installs the global recorder and serves `GET /metrics` on `addr` (on the
/// current tokio runtime), then sets [`PROCESS_INFO`]. Does nothing without
/// an address: the libraries' metrics calls are then no-ops.
///
/// # Errors
/// When `addr` cannot be bound or a recorder is already installed.
pub fn install(addr: Option<SocketAddr>, role: Role, id: &str) -> Result<()> {
    let Some(addr) = addr else { return Ok(()) };
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(chorus_log_node::metrics::FSYNC_BATCH_ENTRIES.into()), ENTRIES_BUCKETS)?
        .install()
        .with_context(|| format!("serve metrics on {addr}"))?;
    metrics::gauge!(PROCESS_INFO, "role" => role.label(), "id" => id.to_owned()).set(1.0);
    tracing::info!(%addr, role = role.label(), "serving metrics at /metrics");
    Ok(())
}

/// Every metric name any `chorus` process exports: the documented set
/// (`docs/metrics.md` lists exactly these).
pub fn all_names() -> Vec<&'static str> {
    let mut all: Vec<&'static str> = ALL
        .iter()
        .chain(chorus_log_node::metrics::ALL)
        .chain(chorus_projections::metrics::ALL)
        .chain(chorus_edge::metrics::ALL)
        .copied()
        .collect();
    all.sort_unstable();
    all
}

/// A `--metrics-addr` value of `chorus dev`: an address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<SocketAddr>);

impl std::str::FromStr for MetricsAddr {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "off" | "none" | "" => Ok(MetricsAddr(None)),
            a => a
                .parse()
                .map(|a| MetricsAddr(Some(a)))
                .map_err(|e| format!("{a:?}: {e} (an address such as 127.0.0.1:9464, or off)")),
        }
    }
}
