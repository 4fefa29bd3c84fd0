//! The SDK executor: every device of the workload is a real registered
//! device holding one `chorus_client::Client`, connected to both edges.
//!
//! - **Registration** ([`register_all`]): each user's devices register through
//!   the edges' OTP flow (the code is read from the edge's SMS file), device
//!   `k` of a user at edge `k mod edges` (an edge texts one phone at most
//!   every 30 s). The user id is a function of the phone, so the
//!   [`Universe`] is generated with the real user ids; the device ids are the
//!   edge's choice and replace the universe's placeholders.
//! - **Sends and acks** go through the SDK: `send_raw_with_id` (raw bytes: Jepsen checks the server, not E2EE) with the
//!   workload's `client_msg_id` (a retry uses the same one, so it is
//!   exactly-once), `ack` (fire and forget: the protocol confirms no ack, so
//!   an ack is recorded as `info`). A send that errors or times out is `info`,
//!   one the edge refuses for good is `fail`.
//! - **Group creation and roster edits** have no client frames yet: they go
//!   through `LogClient` as before ([`LogExecutor`]), as the admin's first
//!   device.
//! - **Observations**: a task per client records every message and receipt
//!   tick the SDK hands to the app as an `observe` entry.
//! - **Reconnects** ([`ReconnectHow`]): the client drops its connection and
//!   heals itself, or the app restarts (close, connect again with the old
//!   positions).
//! - **Final reads** ([`SdkExecutor::final_reads`]): a fresh client of every
//!   device syncs from nothing; its messages per chat become `device_read`
//!   operations.
//!
//! Devices are spread over the edges: device `i` lists them from edge
//! `i mod edges` on, and the SDK fails over to the next one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chorus_client::{Client, ClientConfig, Credentials, Error as SdkError, Event, Resume};
use chorus_schema::{ChatId, DeviceId, EdgeErrorCode, GroupOp, Recipient, Seq, UserId};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::history::{Item, Observation, Op, Outcome, ReconnectHow, Value};
use crate::recorder::Recorder;
use crate::workload::Universe;

/// How long the workload waits for the SDK's answer to a send: longer than
/// the edges' append deadline (5 s, see [`crate::edges`]).
pub const OP_TIMEOUT: Duration = Duration::from_secs(7);

/// The `info` reason of every ack made through the SDK.
pub const ACK_UNCONFIRMED: &str = "acks through the SDK are fire and forget: nothing confirms them";

/// Whether `op` is an ack made through the SDK (its outcome is unknown by
/// design, not because of a fault).
pub fn is_unconfirmed_ack(op: &crate::history::Operation) -> bool {
    matches!((&op.op, &op.outcome), (Op::Ack { .. }, Outcome::Info(reason)) if reason == ACK_UNCONFIRMED)
}

/// Locks `m`; a panic elsewhere while holding it leaves a usable value
/// (every critical section is a single update).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Process ids of devices' observations: `OBSERVER_PROCESS + device index`.
pub const OBSERVER_PROCESS: u64 = 2_000_000;
/// Process ids of the devices' final reads.
pub const DEVICE_READ_PROCESS: u64 = 3_000_000;

/// Registers every device of `universe` through the edges (`(address, SMS
/// file)` each) and replaces the universe's device ids with the real ones,
/// in the same order. Returns the credentials, in that order.
///
/// # Errors
/// With fewer edges than devices per user, or when a registration fails.
pub async fn register_all(
    universe: &mut Universe,
    edges: &[(String, PathBuf)],
    ca: &std::path::Path,
) -> Result<Vec<Credentials>> {
    let mut ordinal: BTreeMap<UserId, usize> = BTreeMap::new();
    let mut jobs = Vec::new();
    for (user, _) in &universe.devices {
        let k = ordinal.entry(*user).or_default();
        let Some((listen, sms)) = edges.get(*k).cloned() else {
            return Err(Error::Invalid(format!(
                "{} devices per user need as many edges (an edge texts a phone at most every 30 s)",
                *k + 1
            )));
        };
        let phone =
            universe.phones.get(user).cloned().ok_or_else(|| Error::Invalid(format!("user {user} has no phone")))?;
        let name = format!("device {k}");
        *k += 1;
        let ca = ca.to_path_buf();
        jobs.push(async move { chorus_testkit::services::register(&listen, &sms, &ca, &phone, &name).await });
    }
    let mut out = Vec::new();
    for (i, r) in futures::future::join_all(jobs).await.into_iter().enumerate() {
        let c = r?;
        assert_eq!(
            Some(c.user),
            universe.devices.get(i).map(|d| d.0),
            "the edge derives the user id from the phone as the universe does"
        );
        out.push(c);
    }
    universe.devices = out.iter().map(|c| (c.user, c.device)).collect();
    Ok(out)
}

/// Counters over every client of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SdkStats {
    /// Logins (first connections and reconnections).
    pub connects: u64,
    /// Sends the SDK resent after a reconnect.
    pub resent: u64,
    /// Deliveries the SDK dropped as already passed on.
    pub duplicates_dropped: u64,
    /// `Disconnected` events the apps saw.
    pub disconnects: u64,
    /// Reconnect operations of each kind.
    pub drops: u64,
    pub restarts: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connects: AtomicU64,
    resent: AtomicU64,
    duplicates_dropped: AtomicU64,
    disconnects: AtomicU64,
    drops: AtomicU64,
    restarts: AtomicU64,
}

/// One registered device and its client.
#[derive(Debug)]
pub struct Device {
    pub index: usize,
    pub user: UserId,
    pub device: DeviceId,
    credentials: Credentials,
    config: ClientConfig,
    recorder: Arc<Recorder>,
    counters: Arc<Counters>,
    /// The live client (`None` while it is being replaced or could not connect).
    client: Mutex<Option<Client>>,
    listener: Mutex<Option<JoinHandle<()>>>,
    /// The last seq of each chat the app got and the harness recorded: the
    /// positions the next client resumes from (so that the recorded live
    /// stream has no hole of the harness's making).
    recorded: Arc<Mutex<BTreeMap<ChatId, Seq>>>,
    /// Serializes connects and restarts.
    connecting: tokio::sync::Mutex<()>,
}

impl Device {
    /// Records what the app gets: messages and receipt ticks.
    async fn listen(
        mut events: mpsc::Receiver<Event>,
        recorder: Arc<Recorder>,
        counters: Arc<Counters>,
        recorded: Arc<Mutex<BTreeMap<ChatId, Seq>>>,
        (user, device, process): (UserId, DeviceId, u64),
    ) {
        while let Some(event) = events.recv().await {
            match event {
                Event::Message(m) => {
                    let item = Item { seq: m.seq, message: Some((m.sender, m.client_msg_id)) };
                    recorder.observe(process, Observation::Deliver { user, device, chat: m.chat, item });
                    let mut r = lock(&recorded);
                    let p = r.entry(m.chat).or_default();
                    *p = (*p).max(m.seq);
                }
                // A roster change moves the device's position, but is not
                // observed: the checker models what devices hold as the
                // log's messages (a history item does not say which device
                // made a roster change, and the edge does not echo it to
                // that one).
                Event::ChatChange(c) => {
                    let mut r = lock(&recorded);
                    let p = r.entry(c.chat).or_default();
                    *p = (*p).max(c.seq);
                }
                Event::Receipt { chat, up_to_seq, status } => {
                    recorder
                        .observe(process, Observation::Tick { viewer: (user, device), chat, kind: status, up_to_seq });
                }
                Event::Disconnected { .. } => {
                    counters.disconnects.fetch_add(1, Ordering::Relaxed);
                }
                Event::Synced { .. }
                | Event::Connected { .. }
                | Event::Error { .. }
                | Event::Device { .. }
                | Event::Presence { .. }
                | Event::Typing { .. }
                | Event::KeysLow { .. } => {}
                // A raw client (no E2EE) never has it.
                Event::Undecryptable { .. } => {}
            }
        }
    }

    /// The live client, connecting one (from the last positions) if there is none.
    async fn client(&self, timeout: Duration) -> Option<Client> {
        if let Some(c) = lock(&self.client).clone() {
            return Some(c);
        }
        let _one = self.connecting.lock().await;
        if let Some(c) = lock(&self.client).clone() {
            return Some(c);
        }
        let resume = Resume { positions: lock(&self.recorded).iter().map(|(c, s)| (*c, *s)).collect() };
        // A first login fails at once when no edge can check the token (an
        // edge down, the projector down): the app tries again meanwhile.
        let deadline = tokio::time::Instant::now() + timeout;
        let (client, events) = loop {
            let connect = Client::connect_raw(self.config.clone(), self.credentials, resume.clone());
            match tokio::time::timeout_at(deadline, connect).await {
                Ok(Ok(c)) => break c,
                Ok(Err(e)) => {
                    tracing::debug!(user = %self.user, device = %self.device, error = %e, "device cannot connect");
                    if tokio::time::Instant::now() + Duration::from_millis(200) >= deadline {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => return None,
            }
        };
        let process = OBSERVER_PROCESS + self.index as u64;
        let listener = tokio::spawn(Device::listen(
            events,
            self.recorder.clone(),
            self.counters.clone(),
            self.recorded.clone(),
            (self.user, self.device, process),
        ));
        *lock(&self.listener) = Some(listener);
        *lock(&self.client) = Some(client.clone());
        Some(client)
    }

    /// Closes the live client and waits (up to `grace`) until everything it
    /// handed over is recorded (the next one resumes from what was).
    async fn close(&self, grace: Duration) {
        let _one = self.connecting.lock().await;
        let Some(client) = lock(&self.client).take() else { return };
        let s = client.stats();
        self.counters.connects.fetch_add(s.connects.load(Ordering::Relaxed), Ordering::Relaxed);
        self.counters.resent.fetch_add(s.resent.load(Ordering::Relaxed), Ordering::Relaxed);
        self.counters.duplicates_dropped.fetch_add(s.duplicates_dropped.load(Ordering::Relaxed), Ordering::Relaxed);
        client.close();
        let listener = lock(&self.listener).take();
        if let Some(mut l) = listener {
            // The worker ends (closing the event stream) once it sees the
            // close; a worker busy connecting to a dead edge may take longer.
            if tokio::time::timeout(grace, &mut l).await.is_err() {
                l.abort();
            }
        }
    }

    /// The last seq the device got per chat.
    pub fn positions(&self) -> BTreeMap<ChatId, Seq> {
        lock(&self.recorded).clone()
    }
}

/// Drives the workload through the SDK (see the module docs).
#[derive(Clone, Debug)]
pub struct SdkExecutor {
    devices: Arc<BTreeMap<(UserId, DeviceId), Arc<Device>>>,
    direct: Arc<BTreeMap<ChatId, (UserId, UserId)>>,
    /// Roster edits: no client frames for them yet.
    counters: Arc<Counters>,
}

/// Edge error codes after which a send certainly did not happen: the SDK
/// reports them as final refusals, and the harness holds it to that (an
/// `Internal` refusal of a send that was in fact committed shows as a
/// phantom). `Unauthenticated` is left out: pending sends fail with it when a
/// re-login is refused, whatever became of their earlier attempts.
fn refused_for_good(code: EdgeErrorCode) -> bool {
    matches!(
        code,
        EdgeErrorCode::NotMember
            | EdgeErrorCode::UnknownRecipient
            | EdgeErrorCode::CiphertextTooLarge
            | EdgeErrorCode::BadFrame
            | EdgeErrorCode::Forbidden
            | EdgeErrorCode::Internal
    )
}

impl SdkExecutor {
    /// Connects a client for every device (`credentials` in the order of
    /// `universe.devices`), device `i` listing the edges from `i mod n` on.
    ///
    /// # Errors
    /// When a device cannot log in within `timeout`.
    pub async fn connect(
        credentials: &[Credentials],
        edges: &[String],
        ca: PathBuf,
        universe: &Universe,
        recorder: Arc<Recorder>,
        timeout: Duration,
    ) -> Result<SdkExecutor> {
        let counters = Arc::new(Counters::default());
        let mut devices = BTreeMap::new();
        for (index, c) in credentials.iter().enumerate() {
            let mut list = edges.to_vec();
            list.rotate_left(index % edges.len().max(1));
            let mut config = ClientConfig::new(list, ca.clone());
            config.reconnect_max_ms = 1_000;
            // Notice a killed edge within seconds (the default idle timeout,
            // 10 s, outlasts most faults of a run).
            config.keep_alive_ms = 1_000;
            config.idle_timeout_ms = 5_000;
            let device = Device {
                index,
                user: c.user,
                device: c.device,
                credentials: *c,
                config,
                recorder: recorder.clone(),
                counters: counters.clone(),
                client: Mutex::new(None),
                listener: Mutex::new(None),
                recorded: Arc::new(Mutex::new(BTreeMap::new())),
                connecting: tokio::sync::Mutex::new(()),
            };
            devices.insert((c.user, c.device), Arc::new(device));
        }
        let logins = devices.values().map(|d| async move { (d.user, d.device, d.client(timeout).await.is_some()) });
        for (user, device, ok) in futures::future::join_all(logins).await {
            if !ok {
                return Err(Error::Cluster(format!("device {user}/{device} cannot log in")));
            }
        }
        Ok(SdkExecutor { devices: Arc::new(devices), direct: Arc::new(universe.direct.clone()), counters })
    }

    pub fn device(&self, user: UserId, device: DeviceId) -> Option<&Arc<Device>> {
        self.devices.get(&(user, device))
    }

    /// Runs `op` once; never longer than `timeout` (a restart excepted, which
    /// may wait for a dead edge's handshake to time out).
    pub async fn execute(&self, op: &Op, timeout: Duration) -> Outcome {
        match op {
            Op::Send { chat, sender, device, client_msg_id } => {
                let Some(d) = self.device(*sender, *device) else {
                    return Outcome::Fail(format!("no device {sender}/{device}"));
                };
                let Some(client) = d.client(timeout).await else {
                    return Outcome::Fail("the device could not connect: nothing was sent".into());
                };
                let to = match self.direct.get(chat) {
                    Some((a, b)) => Recipient::User(if a == sender { *b } else { *a }),
                    None => Recipient::Group(*chat),
                };
                let ciphertext = format!("{sender}/{device}/{client_msg_id}").into_bytes();
                match tokio::time::timeout(timeout, client.send_raw_with_id(to, *client_msg_id, ciphertext)).await {
                    Err(_) => Outcome::Info(format!("no answer within {timeout:?}")),
                    Ok(Ok(sent)) => Outcome::Ok(Value::Sent { chat: sent.chat, seq: sent.seq }),
                    Ok(Err(SdkError::Refused { code, message, .. })) if refused_for_good(code) => {
                        Outcome::Fail(format!("{code:?}: {message}"))
                    }
                    Ok(Err(e)) => Outcome::Info(e.to_string()),
                }
            }
            Op::Ack { chat, user, device, kind, up_to_seq } => {
                let Some(d) = self.device(*user, *device) else {
                    return Outcome::Fail(format!("no device {user}/{device}"));
                };
                match d.client(timeout).await {
                    Some(client) => {
                        client.ack(*chat, *kind, *up_to_seq);
                        Outcome::Info(ACK_UNCONFIRMED.into())
                    }
                    None => Outcome::Fail("the device could not connect: nothing was acked".into()),
                }
            }
            Op::AddMember { chat, actor, member } | Op::RemoveMember { chat, actor, member } => {
                // Through the actor's first device: the edge appends the
                // partition's command and answers with the change's seq.
                let Some((_, d)) = self.devices.range((*actor, DeviceId(0))..=(*actor, DeviceId(u32::MAX))).next()
                else {
                    return Outcome::Fail(format!("no device of {actor}"));
                };
                let Some(client) = d.client(timeout).await else {
                    return Outcome::Fail("the device could not connect: nothing was asked".into());
                };
                let group_op = if matches!(op, Op::AddMember { .. }) {
                    GroupOp::Add { member: *member }
                } else {
                    GroupOp::Remove { member: *member }
                };
                match tokio::time::timeout(timeout, client.group(*chat, group_op)).await {
                    Err(_) => Outcome::Info(format!("no answer within {timeout:?}")),
                    Ok(Ok(seq)) => Outcome::Ok(Value::MemberChanged { seq }),
                    Ok(Err(SdkError::Refused { code, message, .. })) if refused_for_good(code) => {
                        Outcome::Fail(format!("{code:?}: {message}"))
                    }
                    Ok(Err(e)) => Outcome::Info(e.to_string()),
                }
            }
            Op::Reconnect { user, device, how } => {
                let Some(d) = self.device(*user, *device) else {
                    return Outcome::Fail(format!("no device {user}/{device}"));
                };
                match how {
                    ReconnectHow::Drop => {
                        self.counters.drops.fetch_add(1, Ordering::Relaxed);
                        match d.client(timeout).await {
                            Some(c) => c.reconnect(),
                            None => return Outcome::Info("the device has no connection to drop".into()),
                        }
                    }
                    ReconnectHow::Restart => {
                        self.counters.restarts.fetch_add(1, Ordering::Relaxed);
                        d.close(Duration::from_secs(5)).await;
                        if d.client(timeout.max(Duration::from_secs(10))).await.is_none() {
                            return Outcome::Info("closed; the new client could not connect yet".into());
                        }
                    }
                }
                Outcome::Ok(Value::Done)
            }
            Op::Read { .. } | Op::DeviceRead { .. } => Outcome::Fail("reads are not workload operations".into()),
        }
    }

    /// The last seq each chat's messages reached on `user`/`device`.
    pub fn received(&self, user: UserId, device: DeviceId) -> BTreeMap<ChatId, Seq> {
        self.device(user, device).map(|d| d.positions()).unwrap_or_default()
    }

    /// Connects every device that has no client (a restart that could not
    /// connect before the workload ended); returns those that still cannot.
    pub async fn ensure_connected(&self, timeout: Duration) -> Vec<(UserId, DeviceId)> {
        let connects =
            self.devices.values().map(|d| async move { (d.user, d.device, d.client(timeout).await.is_some()) });
        futures::future::join_all(connects).await.into_iter().filter(|(_, _, ok)| !ok).map(|(u, d, _)| (u, d)).collect()
    }

    /// Closes every client, waiting until what each handed over is recorded.
    pub async fn close_all(&self) {
        let closes = self.devices.values().map(|d| d.close(Duration::from_secs(5)));
        futures::future::join_all(closes).await;
    }

    pub fn stats(&self) -> SdkStats {
        let c = &self.counters;
        SdkStats {
            connects: c.connects.load(Ordering::Relaxed),
            resent: c.resent.load(Ordering::Relaxed),
            duplicates_dropped: c.duplicates_dropped.load(Ordering::Relaxed),
            disconnects: c.disconnects.load(Ordering::Relaxed),
            drops: c.drops.load(Ordering::Relaxed),
            restarts: c.restarts.load(Ordering::Relaxed),
        }
    }

    /// Waits until `user`/`device` has got seq `seq` of `chat` or later.
    pub async fn wait_received(
        &self,
        user: UserId,
        device: DeviceId,
        chat: ChatId,
        seq: Seq,
        deadline: tokio::time::Instant,
    ) -> bool {
        loop {
            if self.received(user, device).get(&chat).is_some_and(|s| *s >= seq) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every device's final read: a fresh client syncs from nothing and its
    /// messages per chat are recorded as `device_read` operations, for every
    /// chat in `chats` of the device and every chat it got messages in.
    /// `expected` says how many messages the log gives each device; a read
    /// that brings fewer (the projector still folding, a sync that failed on
    /// the edge — which looks like an empty one) is tried again a few times,
    /// and the last attempt is recorded. Returns the reads recorded.
    pub async fn final_reads(
        &self,
        recorder: &Recorder,
        chats: &BTreeMap<(UserId, DeviceId), BTreeSet<ChatId>>,
        expected: &BTreeMap<(UserId, DeviceId), usize>,
        timeout: Duration,
    ) -> usize {
        let sem = Arc::new(tokio::sync::Semaphore::new(4));
        let jobs = self.devices.values().map(|d| {
            let sem = sem.clone();
            let want = expected.get(&(d.user, d.device)).copied().unwrap_or(0);
            async move {
                // The semaphore is never closed: a permit is always acquired.
                let _permit = sem.acquire().await.ok();
                let mut got = Err("not tried".to_string());
                for attempt in 0..4 {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    got = sync_once(&d.config, d.credentials, timeout).await;
                    if got.as_ref().is_ok_and(|m| m.values().map(Vec::len).sum::<usize>() >= want) {
                        break;
                    }
                }
                (d.clone(), got)
            }
        });
        let results = futures::future::join_all(jobs).await;
        let mut reads = 0;
        for (d, got) in results {
            let process = DEVICE_READ_PROCESS + d.index as u64;
            let mut all: BTreeSet<ChatId> = chats.get(&(d.user, d.device)).cloned().unwrap_or_default();
            if let Ok(m) = &got {
                all.extend(m.keys());
            }
            for chat in all {
                let index = recorder.invoke(process, Op::DeviceRead { user: d.user, device: d.device, chat });
                let outcome = match &got {
                    Ok(m) => Outcome::Ok(Value::Read { items: m.get(&chat).cloned().unwrap_or_default() }),
                    Err(e) => Outcome::Info(e.clone()),
                };
                recorder.complete(index, process, outcome);
                reads += 1;
            }
        }
        reads
    }
}

/// One full sync of a device by a fresh client: its messages per chat, in
/// the order they came.
async fn sync_once(
    config: &ClientConfig,
    credentials: Credentials,
    timeout: Duration,
) -> Result<BTreeMap<ChatId, Vec<Item>>, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let (client, mut events) =
        match tokio::time::timeout_at(deadline, Client::connect_raw(config.clone(), credentials, Resume::default()))
            .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(format!("connect: {e}")),
            Err(_) => return Err(format!("connect: no login within {timeout:?}")),
        };
    let mut out: BTreeMap<ChatId, Vec<Item>> = BTreeMap::new();
    let result = loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::Message(m))) => {
                out.entry(m.chat).or_default().push(Item { seq: m.seq, message: Some((m.sender, m.client_msg_id)) })
            }
            Ok(Some(Event::Synced { .. })) => break Ok(out),
            Ok(Some(_)) => {}
            Ok(None) => break Err("the client stopped before its sync was over".into()),
            Err(_) => break Err(format!("no sync within {timeout:?}")),
        }
    };
    client.close();
    result
}
