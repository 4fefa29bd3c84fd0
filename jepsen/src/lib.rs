//! chorus-jepsen: how chorus proves the invariants of DESIGN.md.
//!
//! This crate holds the part that judges a run: the [`history`] model (every
//! operation as invoke → ok / fail / info, plus what devices observed, as JSON
//! lines) and the [`checker`], one module per invariant, modelled on Jepsen's
//! queue/Kafka checkers. The checker is pure: it reads a history and returns a
//! verdict per invariant, and its own tests plant each kind of anomaly.
//!
//! Left out for now (issue "Jepsen"): the cluster of real processes, the
//! workload generator, the nemeses (kill, pause, partition, lose un-fsynced
//! writes, corrupt files) and the report with plots. They need the messaging
//! layer (edge, projections) and will drive `chorus_tools::launcher`.
//!
//! ```text
//!  workload ─▶ history.jsonl ─▶ checker::check ─▶ Verdict { invariant → anomalies }
//! ```

pub mod checker;
pub mod history;

pub use checker::{check, Anomaly, Invariant, Verdict};
pub use history::{Entry, History, Item, Observation, Op, Value};
