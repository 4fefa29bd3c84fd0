//! The edge's Prometheus metrics: their names (a contract with dashboards,
//! `docs/metrics.md` and `chorus status`) and the handles the driver keeps.
//!
//! The library only records through the [`metrics`] facade; the process that
//! runs the edge (`chorus edge`, `chorus dev`) installs the exporter and
//! serves `/metrics`.
//!
//! Counters on the delivery path are handles made once ([`Metrics`]), so a
//! delivery costs one atomic add. Gauges of edge-wide state the driver
//! already counts (connections, queued bytes) are sampled from its atomics
//! by one task ([`sample`]) rather than set on every change.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use chorus_schema::{EdgeErrorCode, ServerFrame};
use metrics::{counter, gauge, Counter};

/// Client connections being served (with a control stream).
pub const CONNECTIONS: &str = "chorus_edge_connections";
/// Connections accepted (handshake started) since the edge started.
pub const ACCEPTED_TOTAL: &str = "chorus_edge_accepted_total";
/// Logins answered `LoggedIn`.
pub const LOGINS_TOTAL: &str = "chorus_edge_logins_total";
/// Messages sent by clients and committed (answered `Sent`).
pub const SENDS_TOTAL: &str = "chorus_edge_sends_total";
/// Frames queued on clients' delivery streams (`Deliver`, receipts, notices, …).
pub const DELIVERIES_TOTAL: &str = "chorus_edge_deliveries_total";
/// Bytes queued for clients in all (mailboxes and delivery streams), sampled.
pub const QUEUE_BYTES: &str = "chorus_edge_queue_bytes";
/// `Error` frames sent to clients, by `code` (the name of the
/// [`EdgeErrorCode`], as in `docs/error-codes.md`).
pub const REFUSALS_TOTAL: &str = "chorus_edge_refusals_total";
/// Texts (one-time codes) handed to the SMS sink.
pub const SMS_SENT_TOTAL: &str = "chorus_sms_sent_total";
/// Texts the SMS sink failed to send.
pub const SMS_FAILED_TOTAL: &str = "chorus_sms_failed_total";

/// Every metric of the edge, for docs and tests.
pub const ALL: &[&str] = &[
    CONNECTIONS,
    ACCEPTED_TOTAL,
    LOGINS_TOTAL,
    SENDS_TOTAL,
    DELIVERIES_TOTAL,
    QUEUE_BYTES,
    REFUSALS_TOTAL,
    SMS_SENT_TOTAL,
    SMS_FAILED_TOTAL,
];

/// The edge's handles, made once and shared by every connection.
pub(crate) struct Metrics {
    pub(crate) accepted: Counter,
    pub(crate) logins: Counter,
    pub(crate) sends: Counter,
    pub(crate) deliveries: Counter,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        // Shown from the start, though they may stay at 0 for long.
        let _ = counter!(SMS_SENT_TOTAL);
        let _ = counter!(SMS_FAILED_TOTAL);
        Metrics {
            accepted: counter!(ACCEPTED_TOTAL),
            logins: counter!(LOGINS_TOTAL),
            sends: counter!(SENDS_TOTAL),
            deliveries: counter!(DELIVERIES_TOTAL),
        }
    }

    /// Counts what a frame on a client's control stream says.
    pub(crate) fn answered(&self, frame: &ServerFrame) {
        match frame {
            ServerFrame::LoggedIn { .. } => self.logins.increment(1),
            ServerFrame::Sent { .. } => self.sends.increment(1),
            ServerFrame::Error { code, .. } => refused(*code),
            _ => {}
        }
    }
}

/// Counts an `Error` frame with `code` (rare: a lookup by label is fine).
pub(crate) fn refused(code: EdgeErrorCode) {
    counter!(REFUSALS_TOTAL, "code" => code.name()).increment(1);
}

/// How often [`sample`] reads the driver's gauges.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// Sets [`CONNECTIONS`] and [`QUEUE_BYTES`] from the driver's counters every
/// [`SAMPLE_EVERY`], until the edge is dropped.
pub(crate) async fn sample(ctx: Weak<crate::driver::Ctx>) {
    let connections = gauge!(CONNECTIONS);
    let queued = gauge!(QUEUE_BYTES);
    loop {
        let Some(ctx) = ctx.upgrade() else { return };
        #[expect(clippy::cast_precision_loss, reason = "a gauge is an f64")]
        {
            connections.set(ctx.connections.load(Ordering::Relaxed) as f64);
            queued.set(ctx.queued_bytes.load(Ordering::Relaxed) as f64);
        }
        drop(ctx);
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}
