//! chorus-jepsen: how chorus proves the invariants of DESIGN.md.
//!
//! Two halves. The part that judges a run: the [`history`] model (every
//! operation as invoke → ok / fail / info, plus what devices observed, as JSON
//! lines) and the [`checker`], one module per invariant, modelled on Jepsen's
//! queue/Kafka checkers; it is pure, and its own tests plant each kind of
//! anomaly. And the part that makes a run ([`run::run`], `chorus jepsen`):
//! a [`cluster`] of real `chorus log-node` processes whose Raft links pass
//! through UDP [`proxy`]s, a [`nemesis`] that kills, pauses, partitions them
//! and makes them lose un-fsynced writes on a seeded schedule, a [`workload`] of concurrent clients recorded by
//! the [`recorder`], the final [`readback`] of every replica, and the
//! [`analysis`] and [`report`] of throughput, latency and write stalls.
//!
//! A nats-server and a projector run beside the nodes ([`services`]); at the
//! end the live [`views`] must equal a rebuild from the log.
//!
//! Left out for now (issue "Jepsen"): edges and the client SDK (the workload
//! talks to the log through `LogClient`, behind [`workload::Executor`], so
//! live deliveries are not checked yet) and corrupted files.
//!
//! ```text
//!  workload ──▶ LogClient ──▶ log-node ◀─ proxy ─▶ log-node …   ◀── nemesis (kill, stop, drop)
//!     │                                                             │
//!     └──────────▶ recorder ◀──────────── readback ◀── heal ◀───────┘
//!                     │
//!                     ▼
//!             history.jsonl ─▶ checker::check ─▶ verdict.json, report.html
//! ```

pub mod analysis;
pub mod checker;
pub mod cluster;
pub mod edges;
mod error;
pub mod history;
pub mod nemesis;
pub mod proxy;
pub mod readback;
pub mod recorder;
pub mod report;
pub mod run;
pub mod sdk;
pub mod services;
pub mod views;
pub mod workload;

pub use checker::{check, Anomaly, Invariant, Verdict};

/// The LD_PRELOAD shim that records what each fsync of a node made durable
/// (built from `shim/sync_shim.c` by the build script), if a C compiler was
/// found. The lose-unsynced and power-failure nemeses need it.
pub fn sync_shim() -> Option<std::path::PathBuf> {
    let path = env!("CHORUS_SYNC_SHIM");
    (!path.is_empty()).then(|| path.into()).filter(|p: &std::path::PathBuf| p.is_file())
}
pub use error::{Error, Result};
pub use history::{Entry, History, Item, Observation, Op, Value};
