//! chorus-jepsen: how chorus proves the invariants of ARCHITECTURE.md.
//!
//! Two halves. The part that judges a run: the [`history`] model (every
//! operation as invoke → ok / fail / info, plus what devices observed, as JSON
//! lines) and the [`checker`], one module per invariant, modelled on Jepsen's
//! queue/Kafka checkers; it is pure, and its own tests plant each kind of
//! anomaly. And the part that makes a run ([`run::run`], `chorus jepsen`):
//! a cluster of real `chorus log-node` processes whose Raft links pass
//! through UDP proxies, and two edges, all started by the launcher of
//! `chorus-testkit` ([`chorus_testkit::cluster`]), a [`nemesis`] that kills, pauses,
//! partitions them and makes them lose un-fsynced writes on a seeded schedule
//! (and kills edges, the projector, the bus), a [`workload`] of concurrent
//! clients recorded by the [`recorder`], the final [`readback`] of every
//! replica, and the [`analysis`] and [`report`] of throughput, latency and
//! write stalls.
//!
//! The workload's operations go through a [`workload::Executor`]: the
//! [`sdk`] executor (default) drives real registered devices with the client
//! SDK through the edges, records every live delivery and receipt tick, and
//! reads every device's timeline at the end; the log executor appends
//! commands with `LogClient`. Group creation and roster edits have no client
//! frames yet and always go through `LogClient`.
//!
//! A nats-server and a projector run beside the nodes
//! ([`chorus_testkit::services`]); at the end the live [`views`] must equal a rebuild from the log.
//!
//! Left out for now: corrupted files (exploratory nemeses only).
//!
//! ```text
//!  workload ─▶ SDK clients ─▶ edge ×2 ─▶ log-node ◀─ proxy ─▶ log-node …   ◀── nemesis (kill, stop, drop)
//!     │  (roster edits: LogClient)  ▲ bus ◀── projector ◀── log             │
//!     │      deliveries, ticks ─────┘                                       │
//!     └──────────▶ recorder ◀──── readback (log) + devices' final syncs ◀── heal ◀┘
//!                     │
//!                     ▼
//!             history.jsonl ─▶ checker::check ─▶ verdict.json, report.html
//! ```

pub mod analysis;
pub mod checker;
mod error;
pub mod history;
pub mod nemesis;
pub mod readback;
pub mod recorder;
pub mod report;
pub mod run;
pub mod sdk;
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
