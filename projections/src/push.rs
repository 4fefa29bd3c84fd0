//! The notifier (issue 14): pushes for messages to users with no device
//! online, through a pluggable [`PushSink`] (the one implementation:
//! [`WebhookSink`], a signed JSON POST; see `docs/push-webhook.md`).
//!
//! ```text
//!  projector fold (per partition, in log order)            notifier task                  sink
//!  MessageSent ─▶ recipients except the sender, offline     ┌ coalesce by (user, chat) ┐
//!   (presence view) with push tokens (push_tokens view) ──▶ │ one push per window with │ ──▶ POST (retries
//!   try_send on a bounded queue (full: dropped, counted)    └ the count, last seq      ┘     with backoff)
//! ```
//!
//! # Why in the projector's fold loop
//! The fold already has, in one place and in log order, everything a push
//! needs: the roster (the `Deliver` effect's recipients), presence and the
//! push tokens, read in the same transaction that folds the message. A
//! separate process on a named consumer would have to keep copies of those
//! three views (or query them over the bus per message). The cost to the
//! fold is a few point reads per message when push is configured, and a
//! `try_send`: the fold never waits for the notifier, the notifier never
//! waits for the fold.
//!
//! # Guarantees and limits
//! - **No plaintext, no ciphertext.** A push names the user, the chat, how
//!   many messages and the last seq, and the devices' tokens; nothing of
//!   the messages.
//! - **Bounded.** The queue holds at most [`PushConfig::queue_max`]
//!   intents, the window table at most [`PushConfig::pending_max`]
//!   (user, chat) pairs, at most [`PushConfig::in_flight_max`] pushes are
//!   being sent; beyond, messages are dropped and counted
//!   (`chorus_push_dropped_total`), never buffered without bound.
//! - **Coalesced.** The first message for a (user, chat) opens a window of
//!   [`PushConfig::window_ms`]; every message in it joins the one push sent
//!   when it closes (`count`, `last_seq`).
//! - **Retried.** Connection errors, timeouts and 5xx are retried with
//!   exponential backoff up to [`PushConfig::attempts_max`] attempts; a
//!   4xx is not retried (`chorus_push_failed_total`).
//! - **Restart and replay.** The projector folds each record once (its
//!   cursor commits with the views), so a restart does not push again what
//!   it pushed before; messages older than [`PushConfig::max_age_ms`] (by
//!   the log's time against this machine's clock) are never pushed, so a
//!   projector catching up after downtime sends no flood of stale pushes.
//!   A rebuild (`chorus replay`, [`crate::rebuild_from_log`]) does not run
//!   the notifier at all: it sends nothing. Pushes waiting in a window when
//!   the projector stops are lost (at most one window of pushes).
//! - Presence is read when the message is folded: a user who comes online
//!   during the window still gets the push.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_schema::{ChatId, DeviceId, Seq, UserId};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, warn};

/// Signed as the SMS webhook is (`docs/sms-webhook.md`).
pub use chorus_schema::webhook::{sign, verify, VerifyError, SIGNATURE_HEADER, TIMESTAMP_HEADER};

use crate::fold::push_tokens::PushToken;
use crate::metrics as m;

/// The shortest webhook secret accepted.
pub const SECRET_BYTES_MIN: usize = 32;

/// The notifier's settings (`[push]` in the projector's configuration; no
/// section: no pushes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Where pushes are POSTed: https, or http to a loopback host.
    pub url: String,
    /// A file holding the shared HMAC secret (at least 32 bytes; surrounding
    /// whitespace ignored; keep it mode 0600).
    pub secret_file: PathBuf,
    /// One push per (user, chat) per window of this many ms.
    pub window_ms: u64,
    /// Messages waiting between the fold and the notifier.
    pub queue_max: usize,
    /// (user, chat) windows open at once.
    pub pending_max: usize,
    /// Pushes being sent (with their retries) at once.
    pub in_flight_max: usize,
    /// Attempts per push (the first included).
    pub attempts_max: u32,
    /// The wait before the second attempt; doubles per attempt.
    pub backoff_min_ms: u64,
    /// The longest wait between attempts.
    pub backoff_max_ms: u64,
    /// The time limit of one HTTP attempt.
    pub timeout_ms: u64,
    /// Messages older than this (the log's time against the local clock)
    /// are not pushed: what a projector catching up finds is stale.
    pub max_age_ms: u64,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            url: String::new(),
            secret_file: PathBuf::new(),
            window_ms: 2_000,
            queue_max: 10_000,
            pending_max: 10_000,
            in_flight_max: 16,
            attempts_max: 4,
            backoff_min_ms: 200,
            backoff_max_ms: 5_000,
            timeout_ms: 10_000,
            max_age_ms: 60_000,
        }
    }
}

impl PushConfig {
    /// Checks every rule of the fields.
    ///
    /// # Errors
    /// A message naming the first broken rule.
    pub fn validate(&self) -> Result<(), String> {
        check_webhook_url(&self.url)?;
        if self.secret_file.as_os_str().is_empty() {
            return Err("push.secret_file is empty".into());
        }
        if self.window_ms == 0 || self.queue_max == 0 || self.pending_max == 0 || self.in_flight_max == 0 {
            return Err("push.window_ms, queue_max, pending_max and in_flight_max must be at least 1".into());
        }
        if self.attempts_max == 0 || self.attempts_max > 20 {
            return Err(format!("push.attempts_max {} not in 1..=20", self.attempts_max));
        }
        if self.backoff_min_ms == 0 || self.backoff_min_ms > self.backoff_max_ms {
            return Err(format!(
                "push backoff: need 0 < backoff_min_ms ({}) <= backoff_max_ms ({})",
                self.backoff_min_ms, self.backoff_max_ms
            ));
        }
        if self.timeout_ms == 0 {
            return Err("push.timeout_ms must be at least 1".into());
        }
        Ok(())
    }

    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u64 << failures.saturating_sub(1).min(16);
        Duration::from_millis(self.backoff_min_ms.saturating_mul(factor).min(self.backoff_max_ms))
    }
}

/// Checks a webhook URL: https, or http to a loopback host.
///
/// # Errors
/// A message saying why not.
pub fn check_webhook_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("push webhook url {url:?}: {e}"))?;
    let host = parsed.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!("push webhook url {url:?} must be https (plain http only to a loopback host)")),
    }
}

/// One device to wake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushDevice {
    pub device: DeviceId,
    pub platform: String,
    pub token: String,
}

/// A message the fold found for an offline user with push tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushIntent {
    pub user: UserId,
    pub chat: ChatId,
    pub seq: Seq,
    /// The message's commit time (the log's).
    pub at_ms: u64,
    pub devices: Vec<PushDevice>,
}

impl PushIntent {
    /// The intent of one message for `user`'s `tokens` (in device order).
    pub fn new(user: UserId, chat: ChatId, seq: Seq, at_ms: u64, tokens: Vec<(DeviceId, PushToken)>) -> PushIntent {
        let devices =
            tokens.into_iter().map(|(device, t)| PushDevice { device, platform: t.platform, token: t.token }).collect();
        PushIntent { user, chat, seq, at_ms, devices }
    }
}

/// One push: what the sink sends (the webhook's JSON body, exactly).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    pub user: UserId,
    /// The chat id, hex.
    pub chat: String,
    /// Messages in the window.
    pub count: u64,
    /// The highest seq among them.
    pub last_seq: Seq,
    /// The commit time of the newest.
    pub last_at_ms: u64,
    pub devices: Vec<PushDevice>,
}

/// Why a sink could not deliver a push.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Worth another attempt (connection error, timeout, 5xx).
    #[error("{0} (retryable)")]
    Retryable(String),
    /// Not worth another attempt (4xx).
    #[error("{0}")]
    Permanent(String),
}

/// A boxed future of a sink.
pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// Where pushes go. The notifier coalesces, bounds and retries; a sink
/// makes one attempt.
pub trait PushSink: Send + Sync + 'static {
    /// One attempt to deliver `push`.
    fn send<'a>(&'a self, push: &'a Push) -> SinkFuture<'a>;
}

/// The HTTP webhook sink: a JSON POST of [`Push`] with
/// [`TIMESTAMP_HEADER`] and [`SIGNATURE_HEADER`] (see [`sign`]).
pub struct WebhookSink {
    url: String,
    secret: Vec<u8>,
    http: reqwest::Client,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink").field("url", &self.url).finish_non_exhaustive()
    }
}

impl WebhookSink {
    /// The sink of a configuration.
    ///
    /// # Errors
    /// A bad URL, a secret file that cannot be read or is too short, or an
    /// HTTP client that cannot be built.
    pub fn new(config: &PushConfig) -> Result<WebhookSink, String> {
        check_webhook_url(&config.url)?;
        let secret = read_secret(&config.secret_file)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| format!("push http client: {e}"))?;
        Ok(WebhookSink { url: config.url.clone(), secret, http })
    }
}

impl PushSink for WebhookSink {
    fn send<'a>(&'a self, push: &'a Push) -> SinkFuture<'a> {
        Box::pin(async move {
            #[expect(clippy::expect_used, reason = "a struct of strings and numbers always serializes")]
            let body = serde_json::to_vec(push).expect("json of strings and numbers");
            let at_ms = now_ms();
            let reply = self
                .http
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(TIMESTAMP_HEADER, at_ms.to_string())
                .header(SIGNATURE_HEADER, sign(&self.secret, at_ms, &body))
                .body(body)
                .send()
                .await
                .map_err(|e| SinkError::Retryable(format!("push webhook: {e}")))?;
            let status = reply.status();
            if status.is_success() {
                Ok(())
            } else if status.is_server_error() {
                Err(SinkError::Retryable(format!("push webhook answered {status}")))
            } else {
                Err(SinkError::Permanent(format!("push webhook answered {status}")))
            }
        })
    }
}

fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let err = |reason: String| format!("push webhook secret {}: {reason}", path.display());
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let secret = bytes.trim_ascii().to_vec();
    if secret.len() < SECRET_BYTES_MIN {
        return Err(err(format!("{} bytes; at least {SECRET_BYTES_MIN} are needed", secret.len())));
    }
    Ok(secret)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The notifier's counters (also exported as metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushStats {
    pub sent: u64,
    pub failed: u64,
    pub coalesced: u64,
    pub dropped: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    coalesced: AtomicU64,
    dropped: AtomicU64,
}

impl Counters {
    fn add(&self, which: &AtomicU64, name: &'static str) {
        which.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(name).increment(1);
    }
}

/// The fold's end of the notifier: offers intents without ever waiting.
#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<PushIntent>,
    counters: Arc<Counters>,
    max_age_ms: u64,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl Notifier {
    /// Starts the notifier task on the current runtime; it stops when
    /// `stop` turns true (pushes waiting in a window are then dropped).
    pub fn spawn(config: PushConfig, sink: Arc<dyn PushSink>, stop: watch::Receiver<bool>) -> Notifier {
        let (tx, rx) = mpsc::channel(config.queue_max);
        let counters = Arc::new(Counters::default());
        let max_age_ms = config.max_age_ms;
        tokio::spawn(run(config, sink, rx, counters.clone(), stop));
        Notifier { tx, counters, max_age_ms }
    }

    /// Whether a message committed at `at_ms` is recent enough to push.
    pub fn is_fresh(&self, at_ms: u64) -> bool {
        now_ms().saturating_sub(at_ms) <= self.max_age_ms
    }

    /// Hands an intent to the notifier; a full queue drops it (counted).
    pub fn offer(&self, intent: PushIntent) {
        if self.tx.try_send(intent).is_err() {
            self.counters.add(&self.counters.dropped, m::PUSH_DROPPED_TOTAL);
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> PushStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PushStats { sent: get(&c.sent), failed: get(&c.failed), coalesced: get(&c.coalesced), dropped: get(&c.dropped) }
    }
}

struct Window {
    push: Push,
    due: Instant,
}

async fn run(
    config: PushConfig,
    sink: Arc<dyn PushSink>,
    mut rx: mpsc::Receiver<PushIntent>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let config = Arc::new(config);
    let window = Duration::from_millis(config.window_ms);
    let mut tick = tokio::time::interval((window / 8).clamp(Duration::from_millis(10), Duration::from_millis(250)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let in_flight = Arc::new(Semaphore::new(config.in_flight_max));
    let mut windows: HashMap<(UserId, ChatId), Window> = HashMap::new();
    loop {
        tokio::select! {
            intent = rx.recv() => {
                let Some(intent) = intent else { return };
                let key = (intent.user, intent.chat);
                if let Some(w) = windows.get_mut(&key) {
                    w.push.count += 1;
                    if intent.seq > w.push.last_seq {
                        w.push.last_seq = intent.seq;
                        w.push.last_at_ms = intent.at_ms;
                        w.push.devices = intent.devices;
                    }
                    counters.add(&counters.coalesced, m::PUSH_COALESCED_TOTAL);
                } else if windows.len() >= config.pending_max {
                    counters.add(&counters.dropped, m::PUSH_DROPPED_TOTAL);
                } else {
                    let push = Push {
                        user: intent.user,
                        chat: hex::encode(intent.chat.as_bytes()),
                        count: 1,
                        last_seq: intent.seq,
                        last_at_ms: intent.at_ms,
                        devices: intent.devices,
                    };
                    windows.insert(key, Window { push, due: Instant::now() + window });
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let due: Vec<(UserId, ChatId)> =
                    windows.iter().filter(|(_, w)| w.due <= now).map(|(k, _)| *k).collect();
                for key in due {
                    // A window whose push finds no free sender stays open
                    // (and keeps coalescing) until one is free.
                    let Ok(permit) = in_flight.clone().try_acquire_owned() else { break };
                    let Some(w) = windows.remove(&key) else { continue };
                    let (sink, config, counters) = (sink.clone(), config.clone(), counters.clone());
                    tokio::spawn(async move {
                        deliver(&*sink, &config, &counters, &w.push).await;
                        drop(permit);
                    });
                }
            }
            _ = stop.changed() => {
                if !windows.is_empty() {
                    debug!(windows = windows.len(), "notifier stopping: open windows dropped");
                }
                return;
            }
        }
    }
}

async fn deliver(sink: &dyn PushSink, config: &PushConfig, counters: &Counters, push: &Push) {
    let mut attempt = 1;
    loop {
        match sink.send(push).await {
            Ok(()) => return counters.add(&counters.sent, m::PUSH_SENT_TOTAL),
            Err(SinkError::Retryable(e)) if attempt < config.attempts_max => {
                debug!(attempt, error = %e, "push failed; retrying");
                tokio::time::sleep(config.backoff(attempt)).await;
                attempt += 1;
            }
            Err(e) => {
                // Without the tokens: they are secrets of the devices.
                warn!(user = %push.user, attempt, error = %e, "push given up");
                return counters.add(&counters.failed, m::PUSH_FAILED_TOTAL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_documented_scheme() {
        let secret = [7u8; 32];
        let body = br#"{"phone":"+1","text":"Your chorus code: 000111","at_ms":1000}"#;
        // The SMS webhook's known answer: one scheme for both webhooks.
        let sig = sign(&secret, 1000, body);
        assert_eq!(sig, "sha256=f643e1dfe8f8e73c2ec3b8b77ccfb641c676bdff48c2d6589d1063a40e732d8e");
        assert_eq!(verify(&secret, "1000", &sig, body, 1000, 300_000), Ok(()));
        assert!(verify(&secret, "1001", &sig, body, 1000, 300_000).is_err());
        assert!(verify(&secret, "1000", &sig, b"{}", 1000, 300_000).is_err());
        assert!(verify(&secret, "1000", &sig, body, 400_000, 300_000).is_err());
    }

    /// A webhook that accepts connections and never answers: the notifier
    /// keeps at most `in_flight_max` pushes on it, at most `pending_max`
    /// windows open and at most `queue_max` intents queued, and `offer`
    /// never waits.
    #[tokio::test(flavor = "current_thread")]
    async fn a_stuck_webhook_never_blocks_and_every_bound_drops_with_a_count() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/push", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicU64::new(0));
        let a = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::Relaxed);
                held.push(conn);
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, [b'k'; 32]).unwrap();
        let config = PushConfig {
            url,
            secret_file: secret,
            window_ms: 50,
            queue_max: 10,
            pending_max: 3,
            in_flight_max: 1,
            timeout_ms: 60_000,
            ..PushConfig::default()
        };
        let sink = Arc::new(WebhookSink::new(&config).unwrap());
        let (_stop_tx, stop) = watch::channel(false);
        let notifier = Notifier::spawn(config, sink, stop);
        let intent = |u: u64| PushIntent {
            user: UserId(u),
            chat: ChatId::direct(UserId(u), UserId(1_000)),
            seq: Seq(1),
            at_ms: now_ms(),
            devices: vec![PushDevice { device: DeviceId(1), platform: "fcm".into(), token: "t".into() }],
        };
        // 15 offers without yielding: the task has not run, the queue holds 10.
        let started = Instant::now();
        for u in 0..15 {
            notifier.offer(intent(u));
        }
        assert!(started.elapsed() < Duration::from_millis(100), "offer never waits");
        assert_eq!(notifier.stats().dropped, 5, "a full queue drops");
        // The task takes the 10: 3 windows open, 7 dropped.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(notifier.stats().dropped, 12, "a full window table drops");
        // A message for an open window joins it.
        notifier.offer(intent(0));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let stats = notifier.stats();
        assert_eq!((stats.coalesced, stats.sent, stats.failed), (1, 0, 0), "{stats:?}");
        assert_eq!(accepted.load(Ordering::Relaxed), 1, "one push in flight at most");
    }

    #[test]
    fn config_rules_hold() {
        let good = PushConfig { url: "http://127.0.0.1:9/p".into(), secret_file: "s".into(), ..PushConfig::default() };
        good.validate().unwrap();
        for bad in [
            PushConfig { url: "http://push.example.com/p".into(), ..good.clone() },
            PushConfig { secret_file: PathBuf::new(), ..good.clone() },
            PushConfig { window_ms: 0, ..good.clone() },
            PushConfig { attempts_max: 0, ..good.clone() },
            PushConfig { backoff_min_ms: 10_000, ..good.clone() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert_eq!(good.backoff(1), Duration::from_millis(200));
        assert_eq!(good.backoff(2), Duration::from_millis(400));
        assert_eq!(good.backoff(30), Duration::from_millis(5_000));
    }
}
