//! The dedup table: the outcome of recent commands that produced events, by origin.
//!
//! # Why it is bounded, and by what
//! A client retries only the commands it has not seen acknowledged. A client
//! that has been away longer than [`DEDUP_RETENTION_MS`] does not resend
//! blindly: it reconciles by reading its chat history (its own messages carry
//! their origin) and resends only what is missing. So an outcome is kept for
//! [`DEDUP_RETENTION_MS`] behind the partition's newest event time, and a retry
//! that arrives later is evaluated as a new command (a send appends a second
//! message).
//!
//! The table is one [`Kv`] record per command (`d ‖ user ‖ device ‖
//! client_msg_id`), so it lives on disk with the rest of the state and memory
//! does not grow with traffic. An entry past the retention is treated as absent
//! when read; whether it is still on disk never changes an outcome.

use chorus_schema::{Origin, Outcome};

use crate::kv::{self, DedupEntry, Kv};

/// How long a command's outcome is remembered, relative to the newest `at_ms`
/// folded into the partition.
pub const DEDUP_RETENTION_MS: u64 = 24 * 60 * 60 * 1000;

/// Whether an entry written at `at_ms` is still remembered when the
/// partition's clock is `newest_at_ms`.
fn live(at_ms: u64, newest_at_ms: u64) -> bool {
    at_ms.saturating_add(DEDUP_RETENTION_MS) >= newest_at_ms
}

/// The remembered outcome of the command from `origin`, if any.
pub(crate) fn get(kv: &impl Kv, origin: &Origin, newest_at_ms: u64) -> Option<Outcome> {
    let e: DedupEntry = kv::read(kv, &kv::dedup_key(origin))?;
    live(e.at_ms, newest_at_ms).then_some(e.outcome)
}

/// Records `outcome` for `origin` (a later event of the same command overwrites
/// it, so the last event's outcome counts).
pub(crate) fn record(kv: &mut impl Kv, origin: &Origin, at_ms: u64, outcome: Outcome) {
    kv::write(kv, &kv::dedup_key(origin), &DedupEntry { at_ms, outcome });
}

/// How many entries are remembered at `newest_at_ms` (walks the table: for
/// tests and tools).
pub(crate) fn len(kv: &impl Kv, newest_at_ms: u64) -> usize {
    kv.scan(&[kv::DEDUP], usize::MAX)
        .iter()
        .filter(|(k, v)| live(kv::decode::<DedupEntry>(k, v).at_ms, newest_at_ms))
        .count()
}
