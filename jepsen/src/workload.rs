//! The workload: users with devices, direct chats and groups, and concurrent
//! clients that send, ack, edit rosters and reconnect while the nemesis works.
//!
//! Every operation is recorded as `invoke` then exactly one of `ok` (with its
//! value), `fail` (a rejection: it certainly did not happen) or `info` (a
//! timeout or a lost connection: it may or may not have happened). A send
//! that ends in `info` is retried with the same `client_msg_id`, as a new
//! operation, as a real client would.
//!
//! Each device belongs to one client task, so a device's operations never
//! overlap in time: its ack results are then a real-time sequence, which the
//! receipts check relies on.
//!
//! Operations are carried out by an [`Executor`]: [`SdkExecutor`] (the
//! default) drives real registered devices through two edges with the client
//! SDK (see [`crate::sdk`]); [`LogExecutor`] appends commands to the log
//! directly through `LogClient` (no edges: nothing is delivered to devices).
//! Group creation and roster edits have no client frames yet and always go
//! through `LogClient`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chorus_log_node::LogClient;
use chorus_schema::edge::user_for_phone;
use chorus_schema::{
    ChatId, ClientMsgId, Command, CommandBody, DeviceId, Origin, Outcome as CmdOutcome, ReceiptKind, Seq, UserId,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::history::{ChatSetup, Entry, Observation, Op, Outcome, ReconnectHow, Value};
use crate::recorder::Recorder;
pub use crate::sdk::SdkExecutor;

/// The shape of the workload.
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    pub users: u64,
    pub devices_per_user: u32,
    pub groups: usize,
    /// Initial members of a group, its admin included.
    pub group_size: usize,
    /// Concurrent client tasks; devices are dealt out among them.
    pub clients: usize,
    /// Pause between two operations of a client, drawn uniformly.
    pub think_ms: (u64, u64),
    /// An operation not answered within this is recorded as `info`.
    pub op_timeout: Duration,
    /// Further attempts of a send whose outcome is unknown.
    pub send_retries: u32,
    /// After an operation with unknown outcome, replace the client's
    /// connections with fresh ones before going on. A `LogClient` that holds a
    /// connection to a killed node waits for QUIC's idle timeout before it
    /// tries another node (see the ignored test in `tools/tests/jepsen.rs`);
    /// reconnecting keeps the workload going through kills. Off, the run
    /// measures the `LogClient` as it is. (The SDK executor reconnects by
    /// itself; this does not apply to it.)
    pub reconnect_after_info: bool,
    /// Per mille of operations that drop a device's connection or restart its
    /// client ([`Op::Reconnect`]; the SDK executor only).
    pub reconnect_per_mille: u32,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            users: 10,
            devices_per_user: 2,
            groups: 3,
            group_size: 4,
            clients: 10,
            think_ms: (2, 20),
            op_timeout: Duration::from_millis(2_500),
            send_retries: 3,
            reconnect_after_info: true,
            reconnect_per_mille: 10,
        }
    }
}

/// A group: its admin created it and is never removed.
#[derive(Clone, Debug)]
pub struct Group {
    pub chat: ChatId,
    pub admin: UserId,
    pub initial: Vec<UserId>,
}

/// The phone number of the workload's user `i` (1-based).
pub fn phone(i: u64) -> String {
    format!("+1555{i:07}")
}

/// Locks `m`; a panic elsewhere while holding it leaves a usable value
/// (every critical section is a single update).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Who exists: users, devices, chats. A pure function of the spec and a seed.
///
/// User ids are the ones registration assigns ([`user_for_phone`] of
/// [`phone`]`(i)`), so that log and SDK executors agree. Device ids are
/// placeholders (1, 2, …) until the SDK executor registers the devices and
/// puts the ids the edges chose in their place.
#[derive(Clone, Debug)]
pub struct Universe {
    pub users: Vec<UserId>,
    pub phones: BTreeMap<UserId, String>,
    pub devices: Vec<(UserId, DeviceId)>,
    /// Direct chats: a ring over the users, so everyone has two partners.
    pub direct: BTreeMap<ChatId, (UserId, UserId)>,
    pub groups: Vec<Group>,
}

impl Universe {
    /// # Panics
    /// With fewer than 3 users or groups larger than the user count (a bad spec).
    pub fn generate(spec: &WorkloadSpec, rng: &mut StdRng) -> Universe {
        assert!(spec.users >= 3, "the workload needs at least 3 users");
        assert!(spec.group_size as u64 <= spec.users, "groups cannot be larger than the user count");
        #[expect(clippy::expect_used, reason = "phone(i) is always a well-formed number")]
        let numbered: Vec<(UserId, String)> =
            (1..=spec.users).map(|i| (user_for_phone(&phone(i)).expect("a valid phone number"), phone(i))).collect();
        let users: Vec<UserId> = numbered.iter().map(|(u, _)| *u).collect();
        let phones: BTreeMap<UserId, String> = numbered.into_iter().collect();
        let devices = users.iter().flat_map(|u| (1..=spec.devices_per_user).map(move |d| (*u, DeviceId(d)))).collect();
        // Each user with the next one, the last with the first.
        let direct = users
            .iter()
            .zip(users.iter().cycle().skip(1))
            .map(|(&a, &b)| (ChatId::direct(a, b), (a.min(b), a.max(b))))
            .collect();
        let groups = (0..spec.groups)
            .zip(users.iter().copied().cycle())
            .map(|(_, admin)| {
                let mut others: Vec<UserId> = users.iter().copied().filter(|u| *u != admin).collect();
                others.shuffle(rng);
                let mut initial: Vec<UserId> = others.iter().copied().take(spec.group_size - 1).collect();
                initial.push(admin);
                initial.sort();
                Group { chat: ChatId::group(rng.gen()), admin, initial }
            })
            .collect();
        Universe { users, phones, devices, direct, groups }
    }

    /// The first device of `user` (roster edits and probes act as it).
    ///
    /// # Panics
    /// On a user without devices (not one of the universe's).
    #[expect(clippy::expect_used, reason = "the documented panic: only called with users of the universe")]
    pub fn first_device(&self, user: UserId) -> DeviceId {
        self.devices.iter().find(|(u, _)| *u == user).map(|(_, d)| *d).expect("every user has a device")
    }

    /// The history's `setup` entry.
    pub fn setup_entry(&self) -> Entry {
        let mut chats: Vec<ChatSetup> =
            self.direct.iter().map(|(chat, (a, b))| ChatSetup { chat: *chat, members: vec![*a, *b] }).collect();
        chats.extend(self.groups.iter().map(|g| ChatSetup { chat: g.chat, members: g.initial.clone() }));
        Entry::Setup { chats, devices: self.devices.clone() }
    }

    /// Every chat with a member who may send in it (for liveness probes).
    pub fn chats(&self) -> Vec<(ChatId, UserId)> {
        let mut out: Vec<(ChatId, UserId)> = self.direct.iter().map(|(c, (a, _))| (*c, *a)).collect();
        out.extend(self.groups.iter().map(|g| (g.chat, g.admin)));
        out
    }
}

/// Carries out operations against the system under test.
#[derive(Clone, Debug)]
pub enum Executor {
    Log(LogExecutor),
    Sdk(SdkExecutor),
}

impl Executor {
    /// Runs `op` once and says what came of it; never longer than `timeout`.
    pub async fn execute(&self, op: &Op, timeout: Duration) -> Outcome {
        match self {
            Executor::Log(e) => e.execute(op, timeout).await,
            Executor::Sdk(e) => e.execute(op, timeout).await,
        }
    }

    /// Drops the executor's connections and makes new ones, as a client does
    /// after a timeout. Keeps the old ones if no node answers within `timeout`.
    /// The SDK heals its connections itself: nothing to do.
    pub async fn reconnect(&self, timeout: Duration) {
        match self {
            Executor::Log(e) => e.reconnect(timeout).await,
            Executor::Sdk(_) => {}
        }
    }

    /// The last seq `user`/`device` received per chat, if the executor
    /// delivers anything (acks then stay within what the device has).
    pub fn received(&self, user: UserId, device: DeviceId) -> Option<BTreeMap<ChatId, Seq>> {
        match self {
            Executor::Log(_) => None,
            Executor::Sdk(e) => Some(e.received(user, device)),
        }
    }
}

/// How a [`LogExecutor`] makes a new `LogClient`.
#[derive(Clone, Debug)]
pub struct Connect {
    pub seeds: Vec<String>,
    /// The workload's identity towards the log (an `edge` certificate).
    pub tls: chorus_log_node::network::tls::TlsPaths,
    pub config: chorus_log_node::ClientConfig,
}

/// Talks to the log-nodes directly: each operation is one command appended
/// through `LogClient` (which follows leaders and retries inside its deadline).
#[derive(Clone, Debug)]
pub struct LogExecutor {
    client: Arc<Mutex<LogClient>>,
    connect: Arc<Connect>,
    /// The pair of each direct chat (a `SendDirect` names the recipient).
    pub direct: Arc<BTreeMap<ChatId, (UserId, UserId)>>,
    /// Each user's first device: roster edits are made as it.
    pub first_device: Arc<BTreeMap<UserId, DeviceId>>,
    /// `client_msg_id`s for commands that are not sends (acks, roster edits).
    /// They start at 2^62, far from the sends' ids.
    pub next_id: Arc<AtomicU64>,
}

/// First `client_msg_id` of the commands that are not sends.
pub const OTHER_IDS_FROM: u64 = 1 << 62;

impl LogExecutor {
    /// Connects through `connect.seeds`. `next_id` must be shared by every
    /// executor of a run, so that the ids of one origin never repeat.
    ///
    /// # Errors
    /// When no seed answers.
    pub async fn connect(connect: Connect, universe: &Universe, next_id: Arc<AtomicU64>) -> crate::Result<LogExecutor> {
        let client = LogClient::connect(&connect.seeds, &connect.tls, connect.config.clone()).await?;
        Ok(LogExecutor {
            client: Arc::new(Mutex::new(client)),
            connect: Arc::new(connect),
            direct: Arc::new(universe.direct.clone()),
            first_device: Arc::new(universe.users.iter().map(|u| (*u, universe.first_device(*u))).collect()),
            next_id,
        })
    }

    fn client(&self) -> LogClient {
        lock(&self.client).clone()
    }

    /// A fresh `LogClient` through the seeds that answer a status request
    /// within a second (a client that health-checks its seeds): `LogClient`
    /// itself tries seeds one by one and waits 3 s on each dead one.
    async fn reconnect(&self, timeout: Duration) {
        let c = &self.connect;
        let probes = c.seeds.iter().map(|seed| async move {
            let one = LogClient::connect(std::slice::from_ref(seed), &c.tls, c.config.clone());
            matches!(tokio::time::timeout(Duration::from_secs(1), one).await, Ok(Ok(_))).then(|| seed.clone())
        });
        let live: Vec<String> = futures::future::join_all(probes).await.into_iter().flatten().collect();
        if live.is_empty() {
            return;
        }
        if let Ok(Ok(client)) = tokio::time::timeout(timeout, LogClient::connect(&live, &c.tls, c.config.clone())).await
        {
            *lock(&self.client) = client;
        }
    }

    /// A counter for [`LogExecutor::new`].
    pub fn id_counter() -> Arc<AtomicU64> {
        Arc::new(AtomicU64::new(OTHER_IDS_FROM))
    }

    fn fresh(&self, user: UserId, device: DeviceId) -> Origin {
        Origin { user, device, client_msg_id: ClientMsgId(self.next_id.fetch_add(1, Ordering::Relaxed)) }
    }

    fn actor_device(&self, user: UserId) -> DeviceId {
        self.first_device.get(&user).copied().unwrap_or(DeviceId(1))
    }

    /// The command an operation stands for.
    ///
    /// # Panics
    /// On a read or a reconnect, which are not commands.
    pub fn command(&self, op: &Op) -> Command {
        match op {
            Op::Send { chat, sender, device, client_msg_id } => {
                let origin = Origin { user: *sender, device: *device, client_msg_id: *client_msg_id };
                let ciphertext = format!("{sender}/{device}/{client_msg_id}").into_bytes();
                let body = match self.direct.get(chat) {
                    Some((a, b)) => CommandBody::SendDirect {
                        recipient: if a == sender { *b } else { *a },
                        ciphertext,
                        media: None,
                    },
                    None => CommandBody::SendGroup { chat: *chat, ciphertext, media: None },
                };
                Command { origin, body }
            }
            Op::AddMember { chat, actor, member } => Command {
                origin: self.fresh(*actor, self.actor_device(*actor)),
                body: CommandBody::AddMember { chat: *chat, member: *member },
            },
            Op::RemoveMember { chat, actor, member } => Command {
                origin: self.fresh(*actor, self.actor_device(*actor)),
                body: CommandBody::RemoveMember { chat: *chat, member: *member },
            },
            Op::Ack { chat, user, device, kind, up_to_seq } => Command {
                origin: self.fresh(*user, *device),
                body: CommandBody::Ack { chat: *chat, kind: *kind, up_to_seq: *up_to_seq },
            },
            Op::Read { .. } | Op::DeviceRead { .. } | Op::Reconnect { .. } => panic!("{op:?} is not a command"),
        }
    }

    pub(crate) async fn execute(&self, op: &Op, timeout: Duration) -> Outcome {
        if let Op::Reconnect { .. } = op {
            self.reconnect(timeout).await;
            return Outcome::Ok(Value::Done);
        }
        if let Op::Read { .. } | Op::DeviceRead { .. } = op {
            return Outcome::Fail("reads are not workload operations".into());
        }
        let command = self.command(op);
        match tokio::time::timeout(timeout, self.client().append(&command)).await {
            Err(_) => Outcome::Info(format!("no answer within {timeout:?}")),
            Ok(Err(e)) => failed(&e),
            Ok(Ok(Err(rejection))) => Outcome::Fail(format!("{:?}: {}", rejection.code, rejection.message)),
            Ok(Ok(Ok(outcome))) => match (op, outcome) {
                (Op::Send { .. }, CmdOutcome::Chat { chat, seq }) => Outcome::Ok(Value::Sent { chat, seq }),
                (Op::AddMember { .. } | Op::RemoveMember { .. }, CmdOutcome::Chat { seq, .. }) => {
                    Outcome::Ok(Value::MemberChanged { seq })
                }
                (Op::Ack { .. }, CmdOutcome::Receipt { up_to_seq, .. }) => Outcome::Ok(Value::Receipt { up_to_seq }),
                (_, other) => Outcome::Info(format!("unexpected outcome {other:?}")),
            },
        }
    }
}

/// The history's outcome of an append the log client failed: `fail` only
/// when its type says the command was certainly not applied (refused,
/// never sent, or every node that got it said it did not take it), else
/// `info` (sent, and no answer said which). A `fail` for a command that was
/// applied would make the checker report a lost write that is none; an `info`
/// for one that was not only weakens the check.
fn failed(e: &chorus_log_node::client::Error) -> Outcome {
    match e.applied() {
        chorus_log_node::client::Applied::No => Outcome::Fail(e.to_string()),
        chorus_log_node::client::Applied::Unknown => Outcome::Info(e.to_string()),
    }
}

/// What the clients know and share while the run goes on.
#[derive(Debug, Default)]
struct Knowledge {
    /// The highest acked seq of each chat.
    last_seq: BTreeMap<ChatId, Seq>,
    /// Group rosters as acked operations left them (a guess after `info`).
    members: BTreeMap<ChatId, BTreeSet<UserId>>,
    /// Each device's delivered cursor per chat, as its acks reported it.
    delivered: BTreeMap<(UserId, DeviceId, ChatId), Seq>,
}

/// A running workload.
#[derive(Debug)]
pub struct Workload {
    pub spec: WorkloadSpec,
    pub universe: Universe,
    /// One per client task (client `c` uses `executors[c % len]`), so that a
    /// request stuck on a dead node holds up one client, not all of them.
    pub executors: Vec<Executor>,
    pub recorder: Arc<Recorder>,
    knowledge: Mutex<Knowledge>,
    next_send_id: AtomicU64,
}

/// Process ids of the final phase (liveness probes and reads).
pub const PROBE_PROCESS: u64 = 1_000_000;

impl Workload {
    /// # Panics
    /// Without executors.
    pub fn new(
        spec: WorkloadSpec,
        universe: Universe,
        executors: Vec<Executor>,
        recorder: Arc<Recorder>,
    ) -> Arc<Workload> {
        assert!(!executors.is_empty(), "a workload needs an executor");
        let members = universe.groups.iter().map(|g| (g.chat, g.initial.iter().copied().collect())).collect();
        Arc::new(Workload {
            spec,
            universe,
            executors,
            recorder,
            knowledge: Mutex::new(Knowledge { members, ..Knowledge::default() }),
            next_send_id: AtomicU64::new(1),
        })
    }

    /// A fresh `client_msg_id` for a send (unique in the run, whatever the device).
    pub fn send_id(&self) -> ClientMsgId {
        ClientMsgId(self.next_send_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Records and runs one operation on client `client`'s executor (which
    /// reconnects after an unknown outcome if the spec says so).
    pub async fn perform(&self, client: usize, process: u64, op: Op) -> Outcome {
        let Some(executor) = self.executor(client) else {
            return Outcome::Fail("the workload has no executor".into()); // `new` checks there is one
        };
        let index = self.recorder.invoke(process, op.clone());
        let outcome = executor.execute(&op, self.spec.op_timeout).await;
        self.recorder.complete(index, process, outcome.clone());
        self.learn(process, &op, &outcome);
        if matches!(outcome, Outcome::Info(_)) && self.spec.reconnect_after_info {
            executor.reconnect(self.spec.op_timeout).await;
        }
        outcome
    }

    /// Client `client`'s executor (`executors[client % len]`).
    fn executor(&self, client: usize) -> Option<&Executor> {
        self.executors.get(client.checked_rem(self.executors.len())?)
    }

    fn learn(&self, process: u64, op: &Op, outcome: &Outcome) {
        let mut k = lock(&self.knowledge);
        match (op, outcome) {
            (Op::Send { .. }, Outcome::Ok(Value::Sent { chat, seq })) => {
                let s = k.last_seq.entry(*chat).or_default();
                *s = (*s).max(*seq);
            }
            (Op::AddMember { chat, member, .. }, Outcome::Ok(Value::MemberChanged { .. })) => {
                k.members.entry(*chat).or_default().insert(*member);
            }
            (Op::RemoveMember { chat, member, .. }, Outcome::Ok(Value::MemberChanged { .. })) => {
                k.members.entry(*chat).or_default().remove(member);
            }
            (Op::Ack { chat, user, device, kind, .. }, Outcome::Ok(Value::Receipt { up_to_seq })) => {
                // The device sees its own cursor of the acked kind. A read
                // receipt also moves the delivered cursor up to it (the state
                // machine's rule), which the device then sees as well.
                let viewer = (*user, *device);
                let obs = |kind, up_to_seq| Observation::Receipt { viewer, chat: *chat, of: *user, kind, up_to_seq };
                let delivered = k.delivered.entry((*user, *device, *chat)).or_default();
                let implied = (*kind == ReceiptKind::Read && *up_to_seq > *delivered).then_some(*up_to_seq);
                if *kind == ReceiptKind::Delivered || implied.is_some() {
                    *delivered = (*delivered).max(*up_to_seq);
                }
                drop(k);
                self.recorder.observe(process, obs(*kind, *up_to_seq));
                if let Some(s) = implied {
                    self.recorder.observe(process, obs(ReceiptKind::Delivered, s));
                }
            }
            _ => {}
        }
    }

    /// Runs `clients` client tasks until `deadline`, each with its own share of
    /// the devices and its own seeded RNG.
    pub async fn run(self: &Arc<Self>, seed: u64, deadline: tokio::time::Instant) {
        let mut tasks = Vec::new();
        for c in 0..self.spec.clients {
            let devices: Vec<(UserId, DeviceId)> =
                self.universe.devices.iter().copied().skip(c).step_by(self.spec.clients).collect();
            if devices.is_empty() {
                continue;
            }
            let me = self.clone();
            let rng = StdRng::seed_from_u64(seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(c as u64 + 1)));
            tasks.push(tokio::spawn(async move { me.client(c as u64, devices, rng, deadline).await }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    async fn client(&self, c: u64, devices: Vec<(UserId, DeviceId)>, mut rng: StdRng, deadline: tokio::time::Instant) {
        // A process that saw `info` is retired, as in Jepsen: its successor
        // gets a new id (c, c + clients, c + 2 clients, …).
        let mut process = c;
        let Ok(slot) = usize::try_from(c) else { return }; // a client index
        while tokio::time::Instant::now() < deadline {
            let Some(&(user, device)) = devices.choose(&mut rng) else { return };
            let received = self.executor(slot).and_then(|e| e.received(user, device));
            let op = self.next_op(user, device, received.as_ref(), &mut rng);
            let mut outcome = self.perform(slot, process, op.clone()).await;
            let mut retries = 0;
            while matches!(outcome, Outcome::Info(_)) {
                process += self.spec.clients as u64;
                if !matches!(op, Op::Send { .. })
                    || retries >= self.spec.send_retries
                    || tokio::time::Instant::now() >= deadline
                {
                    break;
                }
                retries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                outcome = self.perform(slot, process, op.clone()).await;
            }
            let (lo, hi) = self.spec.think_ms;
            tokio::time::sleep(Duration::from_millis(rng.gen_range(lo..=hi))).await;
        }
    }

    /// Picks the next operation of `user`/`device`. `received`: what the
    /// device has received per chat, if the executor delivers (acks then
    /// cover what the device got, as an app's do; else any acked seq).
    fn next_op(
        &self,
        user: UserId,
        device: DeviceId,
        received: Option<&BTreeMap<ChatId, Seq>>,
        rng: &mut StdRng,
    ) -> Op {
        if rng.gen_range(0..1000) < self.spec.reconnect_per_mille {
            let how = if rng.gen_bool(0.5) { ReconnectHow::Drop } else { ReconnectHow::Restart };
            return Op::Reconnect { user, device, how };
        }
        let k = lock(&self.knowledge);
        let my_groups: Vec<ChatId> = k.members.iter().filter(|(_, m)| m.contains(&user)).map(|(c, _)| *c).collect();
        let my_directs: Vec<ChatId> =
            self.universe.direct.iter().filter(|(_, (a, b))| *a == user || *b == user).map(|(c, _)| *c).collect();
        let admin_of: Vec<&Group> = self.universe.groups.iter().filter(|g| g.admin == user).collect();
        let roll = rng.gen_range(0..100);
        if roll < 15 && !admin_of.is_empty() {
            let g = admin_of.choose(rng);
            let member = self.universe.users.choose(rng).copied();
            if let (Some(g), Some(member)) = (g, member.filter(|m| *m != user)) {
                let present = k.members.get(&g.chat).is_some_and(|m| m.contains(&member));
                return if present {
                    Op::RemoveMember { chat: g.chat, actor: user, member }
                } else {
                    Op::AddMember { chat: g.chat, actor: user, member }
                };
            }
        }
        if roll < 30 {
            let mut chats = my_directs.clone();
            chats.extend(&my_groups);
            if let Some(chat) = chats.choose(rng) {
                let last = match received {
                    Some(r) => r.get(chat),
                    None => k.last_seq.get(chat),
                };
                if let Some(last) = last.filter(|s| s.0 > 0) {
                    let kind = if rng.gen_bool(0.6) { ReceiptKind::Delivered } else { ReceiptKind::Read };
                    let up_to_seq = Seq(rng.gen_range(1..=last.0));
                    return Op::Ack { chat: *chat, user, device, kind, up_to_seq };
                }
            }
        }
        let chat = if roll < 60 || my_groups.is_empty() {
            // Now and then a send to a group the user is not in: it must be refused.
            if roll < 35 {
                self.universe.groups.choose(rng).map(|g| g.chat).or_else(|| my_directs.first().copied())
            } else {
                my_directs.choose(rng).copied()
            }
        } else {
            my_groups.choose(rng).copied()
        };
        drop(k);
        // Every user has direct chats (the ring of `Universe::generate`):
        // the fallback is never taken.
        let Some(chat) = chat else { return Op::Reconnect { user, device, how: ReconnectHow::Drop } };
        Op::Send { chat, sender: user, device, client_msg_id: self.send_id() }
    }

    /// Creates the groups (retrying until each is acknowledged), as the admin's
    /// first device, outside the history: they are part of the setup.
    ///
    /// # Errors
    /// When a group cannot be created within `timeout`.
    pub async fn create_groups(&self, client: &LogClient, timeout: Duration) -> crate::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        for (i, g) in self.universe.groups.iter().enumerate() {
            let command = Command {
                origin: Origin {
                    user: g.admin,
                    device: self.universe.first_device(g.admin),
                    client_msg_id: ClientMsgId(OTHER_IDS_FROM - 1 - i as u64),
                },
                body: CommandBody::CreateGroup { chat: g.chat, name: format!("group {i}"), members: g.initial.clone() },
            };
            loop {
                match client.append(&command).await {
                    Ok(Ok(_)) => break,
                    Ok(Err(r)) => return Err(crate::Error::Cluster(format!("creating group {}: {r}", g.chat))),
                    Err(e) if tokio::time::Instant::now() > deadline => {
                        return Err(crate::Error::Cluster(format!("creating group {}: {e}", g.chat)))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        Ok(())
    }
}
