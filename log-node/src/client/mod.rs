//! Client of the log-node API: routes appends to the leader of the Raft group
//! that hosts their partition, batches concurrent appends per group into one
//! frame, retries what may succeed elsewhere or later (safe: every command is
//! deduplicated by its `client_msg_id`), and reads or tails committed events.
//!
//! The parts: [`config`] (every timeout and bound, serde), [`error`] (what a
//! failure says about whether the request was applied), [`router`] (leader
//! routing and retry of one request, sans IO), `conns` (one connection per
//! node address, each connected on its own), and here the IO that ties them.
//!
//! Queues: each group's appends wait in a bounded queue
//! (`queue_commands_max`) for the group's batcher; a full queue makes
//! [`LogClient::append`] wait (back-pressure) until its deadline, then fail
//! [`Error::Overloaded`] (never sent). Batches in flight per group are bounded
//! by `batches_in_flight_max`.

pub mod config;
mod conns;
pub mod error;
mod offsets;
pub mod router;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use chorus_schema::{
    AppendCommand, Command, CommandResult, ErrorCode, EventRecord, GroupId, NodeStatus, Offset, PartitionId, Request,
    Response, StoredRecord, MAX_FRAME_BYTES,
};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

pub use self::config::ClientConfig;
use self::conns::Conns;
pub use self::error::{Applied, Error, Result};
use self::router::{Answer, Router, Step};
use crate::network::frame;
use crate::network::tls::{self, TlsPaths};

/// An append waiting for its group's batcher: the command, the instant its
/// deadline passes, and where its result goes.
type Pending = (AppendCommand, Instant, oneshot::Sender<Result<CommandResult>>);

struct Inner {
    conns: Conns,
    config: ClientConfig,
    /// The zero of the router's millisecond clock.
    epoch: Instant,
    /// Client addresses of every node known: the seeds, then leaders named by hints.
    nodes: RwLock<Vec<String>>,
    partitions: u16,
    /// The group hosting each partition.
    placement: Vec<GroupId>,
    groups: u16,
    /// Cached leader (client address) per group.
    leaders: RwLock<Vec<Option<String>>>,
    batchers: Mutex<HashMap<GroupId, mpsc::Sender<Pending>>>,
    /// When the last leader sweep started.
    last_refresh: Mutex<Option<Instant>>,
}

impl Inner {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn nodes(&self) -> Vec<String> {
        self.nodes.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn leader(&self, group: GroupId) -> Option<String> {
        let leaders = self.leaders.read().unwrap_or_else(PoisonError::into_inner);
        leaders.get(usize::from(group.0)).cloned().flatten()
    }

    /// Records what a request learned about `group`'s leader: `after` where
    /// it knew `before`. A leader forgotten is cleared only if the cache still
    /// holds it (another request may have learned a newer one meanwhile).
    fn learn(&self, group: GroupId, before: Option<&str>, after: Option<&str>) {
        if before == after {
            return;
        }
        if let Some(addr) = after {
            let mut nodes = self.nodes.write().unwrap_or_else(PoisonError::into_inner);
            if !nodes.iter().any(|n| n == addr) {
                nodes.push(addr.to_string());
            }
        }
        let mut leaders = self.leaders.write().unwrap_or_else(PoisonError::into_inner);
        let Some(slot) = leaders.get_mut(usize::from(group.0)) else { return };
        match after {
            Some(addr) => *slot = Some(addr.to_string()),
            None if slot.as_deref() == before => *slot = None,
            None => {}
        }
    }
}

/// A handle to the cluster; cheap to clone.
#[derive(Clone)]
pub struct LogClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LogClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogClient").field("partitions", &self.inner.partitions).finish_non_exhaustive()
    }
}

/// The placement a node's status describes: each partition's group, indexed
/// by partition, and the number of groups. A status is peer data: it must list
/// partitions 0, 1, … in order, at least one and at most `u16::MAX`, on
/// groups it lists too, or the client would index out of bounds later.
fn placement_of(s: &NodeStatus) -> std::result::Result<(Vec<GroupId>, usize), String> {
    let groups = s.groups.len();
    let partitions = s.partitions.len();
    if partitions == 0 || partitions > usize::from(u16::MAX) || groups == 0 || groups > usize::from(u16::MAX) {
        return Err(format!("its status lists {partitions} partitions on {groups} groups"));
    }
    if let Some((i, p)) = s.partitions.iter().enumerate().find(|(i, p)| usize::from(p.partition.0) != *i) {
        return Err(format!("its status lists partition {} in place {i}", p.partition));
    }
    if s.partitions.iter().any(|p| p.group.0 as usize >= groups) {
        return Err(format!("its status places partitions on {groups} groups inconsistently"));
    }
    Ok((s.partitions.iter().map(|p| p.group).collect(), groups))
}

impl LogClient {
    /// Connects to the cluster through any of `seeds` (client API addresses)
    /// with the identity in `tls` (its certificate's role decides what the
    /// nodes let it do), trusting node certificates of the CA in `tls.ca`.
    ///
    /// # Errors
    /// [`Error::Tls`] when the TLS material is unusable, [`Error::Config`]
    /// for a bad `config`, [`Error::Unavailable`] when no seed answers a
    /// status request.
    pub async fn connect(seeds: &[String], tls: &TlsPaths, config: ClientConfig) -> Result<Self> {
        let quic = tls::Identity::load(tls)?.log_client()?;
        Self::connect_with(seeds, quic, config).await
    }

    /// As [`LogClient::connect`], with a prepared QUIC client configuration.
    /// The seeds are asked at once; the first usable status wins.
    ///
    /// # Errors
    /// As [`LogClient::connect`].
    pub async fn connect_with(seeds: &[String], quic: quinn::ClientConfig, config: ClientConfig) -> Result<Self> {
        config.validate().map_err(Error::Config)?;
        let unavailable = |last: String| Error::Unavailable { attempts: 0, last };
        let any: std::net::SocketAddr = ([0, 0, 0, 0], 0).into();
        let endpoint = quinn::Endpoint::client(any).map_err(|e| unavailable(format!("binding {any}: {e}")))?;
        let mut inner = Inner {
            conns: Conns::new(endpoint, quic, config.connect_timeout()),
            epoch: Instant::now(),
            nodes: RwLock::new(seeds.to_vec()),
            partitions: 0,
            placement: Vec::new(),
            groups: 0,
            leaders: RwLock::new(Vec::new()),
            batchers: Mutex::default(),
            last_refresh: Mutex::new(None),
            config,
        };
        let timeout = inner.config.request_timeout().min(inner.config.connect_timeout() * 2);
        let mut last = String::from("no seeds given");
        let mut found = None;
        {
            let inner = &inner;
            let mut asks: FuturesUnordered<_> = seeds
                .iter()
                .map(|seed| async move { (seed, request_on(inner, seed, &Request::Status, timeout).await) })
                .collect();
            while let Some((seed, answer)) = asks.next().await {
                match answer {
                    Ok(Response::Status(s)) => match placement_of(&s) {
                        Ok(p) => {
                            found = Some(p);
                            break;
                        }
                        Err(e) => last = format!("{seed}: {e}"),
                    },
                    Ok(other) => last = format!("{seed}: unexpected {}", describe(&other)),
                    Err(e) => last = e.to_string(),
                }
            }
        }
        let Some((placement, groups)) = found else {
            return Err(Error::Unavailable { attempts: u32::try_from(seeds.len()).unwrap_or(u32::MAX), last });
        };
        // `placement_of` checked both counts against `u16::MAX`.
        inner.partitions = u16::try_from(placement.len()).unwrap_or(u16::MAX);
        inner.groups = u16::try_from(groups).unwrap_or(u16::MAX);
        inner.placement = placement;
        inner.leaders = RwLock::new(vec![None; groups]);
        let client = LogClient { inner: Arc::new(inner) };
        client.refresh_leaders().await;
        Ok(client)
    }

    /// The settings this client runs with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Number of partitions of the cluster.
    pub fn partitions(&self) -> u16 {
        self.inner.partitions
    }

    /// Number of Raft groups of the cluster.
    pub fn groups(&self) -> u16 {
        self.inner.groups
    }

    /// The partition `command` belongs to.
    pub fn partition_of(&self, command: &Command) -> PartitionId {
        PartitionId::for_key(&command.key(), self.inner.partitions)
    }

    /// The Raft group hosting `partition`.
    ///
    /// # Panics
    /// If the cluster has no such partition.
    #[expect(clippy::indexing_slicing, reason = "documented panic: callers pass partitions of this cluster")]
    pub fn group_of(&self, partition: PartitionId) -> GroupId {
        self.inner.placement[partition.0 as usize]
    }

    /// Asks every known node for its status, at once, and caches each
    /// group's leader. A sweep started less than `leader_refresh_ms` ago
    /// makes this return at once: callers on a failure path may call it in a
    /// loop without flooding the nodes.
    pub async fn refresh_leaders(&self) {
        {
            let mut last = self.inner.last_refresh.lock().unwrap_or_else(PoisonError::into_inner);
            let min = Duration::from_millis(self.inner.config.leader_refresh_ms);
            if last.is_some_and(|at| at.elapsed() < min) {
                return;
            }
            *last = Some(Instant::now());
        }
        let timeout = Duration::from_millis(self.inner.config.attempt_timeout_ms);
        let nodes = self.inner.nodes();
        let statuses = futures::future::join_all(nodes.iter().map(|addr| async move {
            match request_on(&self.inner, addr, &Request::Status, timeout).await {
                Ok(Response::Status(s)) => Some((addr.clone(), s)),
                _ => None,
            }
        }))
        .await;
        let mut best: Vec<(u64, Option<String>)> = vec![(0, None); usize::from(self.inner.groups)];
        for (addr, status) in statuses.into_iter().flatten() {
            for g in &status.groups {
                if let Some(b) = best.get_mut(usize::from(g.group.0)) {
                    if g.leader == Some(status.node) && g.term >= b.0 {
                        *b = (g.term, Some(addr.clone()));
                    }
                }
            }
        }
        let mut leaders = self.inner.leaders.write().unwrap_or_else(PoisonError::into_inner);
        for (slot, (_, addr)) in leaders.iter_mut().zip(best) {
            if addr.is_some() {
                *slot = addr;
            }
        }
    }

    /// The status of the node at `addr`.
    ///
    /// # Errors
    /// As [`LogClient::request`]; an error response as [`Error::Refused`] or
    /// [`Error::Unavailable`] by its code.
    pub async fn status(&self, addr: &str) -> Result<NodeStatus> {
        match self.request(addr, &Request::Status).await? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Sends one request to the node at `addr` and reads one response (an
    /// error response included), within `request_timeout_ms`.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the request did not reach the node,
    /// [`Error::UnknownOutcome`] when it did and no response came,
    /// [`Error::Protocol`] for an undecodable response.
    pub async fn request(&self, addr: &str, req: &Request) -> Result<Response> {
        request_on(&self.inner, addr, req, self.inner.config.request_timeout()).await.map_err(Failed::into_error)
    }

    /// The client addresses of the nodes this client knows.
    pub fn node_addrs(&self) -> Vec<String> {
        self.inner.nodes()
    }

    /// The cached leader (client address) of the group hosting `partition`, if known.
    pub fn leader_addr(&self, partition: PartitionId) -> Option<String> {
        let group = *self.inner.placement.get(usize::from(partition.0))?;
        self.inner.leader(group)
    }

    /// Sends `req`, which changes the log, to the leader of `group`: follows
    /// `NotLeader` hints and retries on other nodes or later until the
    /// append deadline (see [`router`]). Returns the first response that is
    /// not an error.
    ///
    /// # Errors
    /// [`Error::Refused`] at once; [`Error::UnknownOutcome`] or
    /// [`Error::Unavailable`] at the deadline.
    pub async fn routed(&self, group: GroupId, req: &Request) -> Result<Response> {
        let deadline = Instant::now() + self.inner.config.append_deadline();
        self.route(group, req, true, deadline, |_| true).await
    }

    /// Routes `req` to `group`'s leader until `deadline` (see [`router`]).
    /// A response that is no error but fails `expected` ends the request: as
    /// [`Error::UnknownOutcome`] if `mutating`, else [`Error::Protocol`].
    async fn route(
        &self,
        group: GroupId,
        req: &Request,
        mutating: bool,
        deadline: Instant,
        expected: fn(&Response) -> bool,
    ) -> Result<Response> {
        let inner = &self.inner;
        let now = inner.now_ms();
        let left = u64::try_from(deadline.saturating_duration_since(Instant::now()).as_millis()).unwrap_or(u64::MAX);
        let mut router = Router::new(inner.config.policy(), inner.nodes(), inner.leader(group), now, left, mutating);
        loop {
            let (addr, at_ms, timeout_ms) = match router.next(inner.now_ms()) {
                Step::GiveUp(g) => return Err(g.into_error()),
                Step::Send { addr, at_ms, timeout_ms } => (addr, at_ms, timeout_ms),
            };
            tokio::time::sleep_until(inner.epoch + Duration::from_millis(at_ms)).await;
            let before = router.leader().map(str::to_owned);
            let answer = match request_on(inner, &addr, req, Duration::from_millis(timeout_ms)).await {
                Ok(Response::Error { code, message, leader }) => {
                    Answer::of_code(code, message, leader.map(|h| h.client_addr))
                }
                Ok(resp) if expected(&resp) => {
                    if mutating {
                        // Only the leader commits: `addr` leads the group.
                        inner.learn(group, before.as_deref(), Some(&addr));
                    }
                    return Ok(resp);
                }
                Ok(other) => {
                    let last = format!("{addr}: unexpected {}", describe(&other));
                    let attempts = router.attempts().saturating_add(1);
                    return Err(if mutating {
                        Error::UnknownOutcome { attempts, last }
                    } else {
                        Error::Protocol(last)
                    });
                }
                Err(Failed::Unreached(reason)) => Answer::Unreached { reason },
                Err(Failed::Lost(reason) | Failed::Garbled(reason)) => Answer::Unknown { reason },
            };
            router.record(&addr, answer, inner.now_ms());
            inner.learn(group, before.as_deref(), router.leader());
        }
    }

    /// Appends encoded commands whose partitions are all on `group`, in one
    /// frame, on the group's leader. Returns one result per command.
    ///
    /// # Errors
    /// As [`LogClient::routed`]; a wrong number of results is
    /// [`Error::UnknownOutcome`].
    pub async fn append_encoded(&self, group: GroupId, commands: Vec<AppendCommand>) -> Result<Vec<CommandResult>> {
        self.append_until(group, commands, Instant::now() + self.inner.config.append_deadline()).await
    }

    async fn append_until(
        &self,
        group: GroupId,
        commands: Vec<AppendCommand>,
        deadline: Instant,
    ) -> Result<Vec<CommandResult>> {
        let n = commands.len();
        let expected = |r: &Response| matches!(r, Response::Appended { .. });
        match self.route(group, &Request::Append { commands }, true, deadline, expected).await? {
            Response::Appended { results } if results.len() == n => Ok(results),
            Response::Appended { results } => {
                Err(Error::UnknownOutcome { attempts: 1, last: format!("{} results for {n} commands", results.len()) })
            }
            other => Err(Error::UnknownOutcome { attempts: 1, last: format!("unexpected {}", describe(&other)) }),
        }
    }

    /// Runs a membership request (`AddLearner`, `ChangeVoters`, …) on the leader of `group`.
    ///
    /// # Errors
    /// As [`LogClient::routed`].
    pub async fn admin(&self, group: GroupId, req: &Request) -> Result<()> {
        let deadline = Instant::now() + self.inner.config.append_deadline();
        self.route(group, req, true, deadline, |r| matches!(r, Response::Done)).await.map(drop)
    }

    /// Appends commands of partitions hosted by one group, in one frame, in order.
    ///
    /// # Errors
    /// As [`LogClient::append_encoded`]; [`Error::Refused`] with `MixedGroups`
    /// (nothing sent) when the commands span groups.
    pub async fn append_batch(&self, commands: &[Command]) -> Result<Vec<CommandResult>> {
        let Some(first) = commands.first() else { return Ok(Vec::new()) };
        let group = self.group_of(self.partition_of(first));
        let mut encoded = Vec::with_capacity(commands.len());
        for c in commands {
            let partition = self.partition_of(c);
            if self.group_of(partition) != group {
                return Err(Error::Refused {
                    code: ErrorCode::MixedGroups,
                    message: "commands span Raft groups".into(),
                });
            }
            encoded.push(AppendCommand { partition, bytes: c.encode() });
        }
        self.append_encoded(group, encoded).await
    }

    /// Appends one command. Concurrent calls for partitions of the same group
    /// are batched into shared frames. The append deadline counts from this
    /// call: time spent waiting for room in the group's queue (back-pressure)
    /// or for a batch slot is part of it.
    ///
    /// # Errors
    /// [`Error::Overloaded`] when the group's queue stayed full until the
    /// deadline; otherwise as [`LogClient::append_encoded`].
    pub async fn append(&self, command: &Command) -> Result<CommandResult> {
        let deadline = Instant::now() + self.inner.config.append_deadline();
        let partition = self.partition_of(command);
        let group = self.group_of(partition);
        let (tx, rx) = oneshot::channel();
        let item = AppendCommand { partition, bytes: command.encode() };
        match tokio::time::timeout_at(deadline, self.batcher(group).send((item, deadline, tx))).await {
            Err(_) => return Err(Error::Overloaded { group, queued: self.inner.config.queue_commands_max }),
            Ok(Err(_)) => return Err(Error::Unavailable { attempts: 0, last: "the group's batcher stopped".into() }),
            Ok(Ok(())) => {}
        }
        rx.await.map_err(|_| Error::UnknownOutcome { attempts: 0, last: "the batch was dropped".into() })?
    }

    fn batcher(&self, group: GroupId) -> mpsc::Sender<Pending> {
        let mut batchers = self.inner.batchers.lock().unwrap_or_else(PoisonError::into_inner);
        batchers
            .entry(group)
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(self.inner.config.queue_commands_max);
                tokio::spawn(run_batcher(self.clone(), group, rx));
                tx
            })
            .clone()
    }

    /// Reads committed events of `partition` from the node at `addr`, from offset
    /// `from`. Returns the events and the offset to read next.
    ///
    /// # Errors
    /// As [`LogClient::request`]; an error response by its code; an
    /// undecodable event as [`Error::Protocol`].
    pub async fn read_from(
        &self,
        addr: &str,
        partition: PartitionId,
        from: Offset,
        limit: u32,
    ) -> Result<(Vec<EventRecord>, Offset)> {
        match self.request(addr, &Request::Read { partition, from, limit }).await? {
            Response::Events { events, next, .. } => Ok((decode_events(&events)?, next)),
            other => Err(unexpected(other)),
        }
    }

    /// Reads committed events of `partition` from its leader, or from any node
    /// that answers within `request_timeout_ms` (a follower serves what it
    /// has applied, perhaps less than the leader).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when no node answered in time, a refusal, or an
    /// undecodable event as [`Error::Protocol`].
    pub async fn read(&self, partition: PartitionId, from: Offset, limit: u32) -> Result<(Vec<EventRecord>, Offset)> {
        let group = self.group_of(partition);
        let deadline = Instant::now() + self.inner.config.request_timeout();
        let req = Request::Read { partition, from, limit };
        match self.route(group, &req, false, deadline, |r| matches!(r, Response::Events { .. })).await? {
            Response::Events { events, next, .. } => Ok((decode_events(&events)?, next)),
            other => Err(unexpected(other)),
        }
    }

    /// Streams committed events of `partition` from `from` on, as they commit,
    /// from the node at `addr`, into `out` until the receiver is dropped or the
    /// stream breaks.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the stream cannot be opened or breaks; an
    /// error response by its code; [`Error::Protocol`] for a bad response.
    pub async fn tail(
        &self,
        addr: &str,
        partition: PartitionId,
        from: Offset,
        out: mpsc::Sender<EventRecord>,
    ) -> Result<()> {
        self.tail_with(addr, partition, from, out, |bytes| EventRecord::decode(&bytes)).await
    }

    /// As [`LogClient::tail`], each record with the bytes the node sent for it
    /// (what the log stores), for a reader that forwards them unchanged.
    ///
    /// # Errors
    /// As [`LogClient::tail`].
    pub async fn tail_stored(
        &self,
        addr: &str,
        partition: PartitionId,
        from: Offset,
        out: mpsc::Sender<StoredRecord>,
    ) -> Result<()> {
        self.tail_with(addr, partition, from, out, |bytes| StoredRecord::decode(bytes.into())).await
    }

    async fn tail_with<T>(
        &self,
        addr: &str,
        partition: PartitionId,
        from: Offset,
        out: mpsc::Sender<T>,
        decode: impl Fn(Vec<u8>) -> chorus_schema::Result<T>,
    ) -> Result<()> {
        let broken =
            |e: &dyn std::fmt::Display| Error::Unavailable { attempts: 1, last: format!("tail at {addr}: {e}") };
        let conn = self.inner.conns.get(addr).await.map_err(|e| broken(&e))?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| broken(&e))?;
        frame::write(&mut send, &Request::Tail { partition, from }.encode()).await.map_err(|e| broken(&e))?;
        send.finish().map_err(|e| broken(&e))?;
        loop {
            let Some(bytes) = frame::read(&mut recv, MAX_FRAME_BYTES).await.map_err(|e| broken(&e))? else {
                return Ok(());
            };
            match Response::decode(&bytes).map_err(|e| Error::Protocol(format!("tail at {addr}: {e}")))? {
                Response::Events { events, .. } => {
                    let decoded = events
                        .into_iter()
                        .map(|e| decode(e).map_err(|e| Error::Protocol(format!("tail at {addr}: {e}"))))
                        .collect::<Result<Vec<T>>>()?;
                    for e in decoded {
                        if out.send(e).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
    }
}

fn decode_events(events: &[Vec<u8>]) -> Result<Vec<EventRecord>> {
    events.iter().map(|e| EventRecord::decode(e).map_err(|e| Error::Protocol(e.to_string()))).collect()
}

/// A response's kind, for messages (not its whole payload).
fn describe(resp: &Response) -> String {
    match resp {
        Response::Error { code, message, .. } => format!("error {code:?}: {message}"),
        Response::Status(_) => "status".into(),
        Response::Events { .. } => "events".into(),
        Response::Appended { .. } => "append results".into(),
        Response::Done => "done".into(),
    }
}

/// The error of a response to a request to one named node that is not the
/// expected one.
fn unexpected(resp: Response) -> Error {
    match resp {
        Response::Error { code, message, .. } => Error::of_response(code, message),
        other => Error::Protocol(format!("unexpected {}", describe(&other))),
    }
}

/// Runs `group`'s batcher: takes appends from its queue, up to
/// `batch_commands_max` per frame and `batches_in_flight_max` frames at once.
/// A batch's deadline is its earliest command's.
async fn run_batcher(client: LogClient, group: GroupId, mut rx: mpsc::Receiver<Pending>) {
    let max = client.inner.config.batch_commands_max;
    let in_flight = Arc::new(Semaphore::new(client.inner.config.batches_in_flight_max));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let mut batch = vec![first];
        while batch.len() < max {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let client = client.clone();
        tokio::spawn(async move {
            let deadline = batch.iter().map(|(_, d, _)| *d).min().unwrap_or_else(Instant::now);
            let (commands, waiters): (Vec<_>, Vec<_>) = batch.into_iter().map(|(c, _, w)| (c, w)).unzip();
            match client.append_until(group, commands, deadline).await {
                Ok(results) => {
                    for (w, r) in waiters.into_iter().zip(results) {
                        let _ = w.send(Ok(r));
                    }
                }
                // Every command of the batch gets the same typed error: a
                // refusal's code, or what the batch's attempts say about
                // whether it was applied.
                Err(e) => {
                    for w in waiters {
                        let _ = w.send(Err(e.duplicate()));
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Why one exchange with one node failed, by whether the request may have
/// reached it.
#[derive(Debug)]
enum Failed {
    /// Nothing was sent: no connection, no stream.
    Unreached(String),
    /// Sent (at least in part), and no response came: it may have been applied.
    Lost(String),
    /// A response came that does not decode.
    Garbled(String),
}

impl Failed {
    fn into_error(self) -> Error {
        match self {
            Failed::Unreached(last) => Error::Unavailable { attempts: 1, last },
            Failed::Lost(last) => Error::UnknownOutcome { attempts: 1, last },
            Failed::Garbled(why) => Error::Protocol(why),
        }
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Unreached(why) | Failed::Lost(why) | Failed::Garbled(why) => f.write_str(why),
        }
    }
}

/// One request to the node at `addr` and its response, all within `timeout`.
/// A connection that failed or answered nothing in time is dropped, so that
/// the next request to the node dials afresh.
async fn request_on(inner: &Inner, addr: &str, req: &Request, timeout: Duration) -> Result<Response, Failed> {
    let deadline = Instant::now() + timeout;
    let conn = match tokio::time::timeout_at(deadline, inner.conns.get(addr)).await {
        Err(_) => return Err(Failed::Unreached(format!("{addr}: no connection within {timeout:?}"))),
        Ok(Err(why)) => return Err(Failed::Unreached(why)),
        Ok(Ok(c)) => c,
    };
    let mut sent = false;
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| format!("opening a stream: {e}"))?;
        // From here on bytes of the request may reach the node.
        sent = true;
        frame::write(&mut send, &req.encode()).await.map_err(|e| format!("sending: {e}"))?;
        send.finish().map_err(|e| format!("sending: {e}"))?;
        frame::read(&mut recv, MAX_FRAME_BYTES)
            .await
            .map_err(|e| format!("receiving: {e}"))?
            .ok_or_else(|| "closed without a response".to_string())
    };
    let result = tokio::time::timeout_at(deadline, exchange).await;
    let failed = |why: String| {
        if sent {
            Failed::Lost(format!("{addr}: {why}"))
        } else {
            Failed::Unreached(format!("{addr}: {why}"))
        }
    };
    match result {
        Ok(Ok(bytes)) => Response::decode(&bytes).map_err(|e| Failed::Garbled(format!("{addr}: {e}"))),
        Ok(Err(why)) => {
            if conn.close_reason().is_some() {
                inner.conns.forget(addr, &conn);
            }
            Err(failed(why))
        }
        Err(_) => {
            // Perhaps a dead peer: the next request to it opens a new connection.
            inner.conns.forget(addr, &conn);
            Err(failed(format!("no response within {timeout:?}")))
        }
    }
}

#[cfg(test)]
mod placement_tests {
    use chorus_schema::{GroupStatus, NodeId, PartitionStatus};

    use super::*;

    fn partition(p: u16, group: u16) -> PartitionStatus {
        PartitionStatus {
            partition: PartitionId(p),
            group: GroupId(group),
            leader: None,
            term: 0,
            last_log_index: chorus_schema::LogIndex(0),
            last_applied: chorus_schema::LogIndex(0),
            next_offset: chorus_schema::Offset(0),
            voters: vec![],
            replicas: vec![],
        }
    }

    fn group(g: u16) -> GroupStatus {
        GroupStatus {
            group: GroupId(g),
            leader: None,
            term: 0,
            last_log_index: chorus_schema::LogIndex(0),
            last_applied: chorus_schema::LogIndex(0),
            voters: vec![],
            learners: vec![],
            replicas: vec![],
            partitions: vec![],
        }
    }

    #[test]
    fn a_forged_status_is_refused_not_indexed() {
        let status = |partitions: Vec<PartitionStatus>, groups: u16| NodeStatus {
            node: NodeId(1),
            partitions,
            groups: (0..groups).map(group).collect(),
            members: vec![],
        };
        let good = status(vec![partition(0, 0), partition(1, 1), partition(2, 0)], 2);
        assert_eq!(placement_of(&good).unwrap(), (vec![GroupId(0), GroupId(1), GroupId(0)], 2));
        // Too many partitions for a u16 count (they would wrap to 0 or a few).
        let many = status((0..=u16::MAX).map(|p| partition(p, 0)).chain([partition(0, 0)]).collect(), 1);
        assert!(placement_of(&many).unwrap_err().contains("65537 partitions"));
        // None at all, a group it does not list, partitions out of place.
        assert!(placement_of(&status(vec![], 1)).is_err());
        assert!(placement_of(&status(vec![partition(0, 5)], 2)).unwrap_err().contains("inconsistently"));
        assert!(placement_of(&status(vec![partition(1, 0), partition(0, 0)], 1)).unwrap_err().contains("in place 0"));
        assert!(placement_of(&status(vec![partition(0, 0), partition(9, 0)], 1)).is_err());
    }
}
