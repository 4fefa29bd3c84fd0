//! Client of the log-node API: routes appends to the leader of the Raft group
//! that hosts their partition (following `NotLeader` hints), batches
//! concurrent appends per group into one frame, retries retryable failures
//! (safe: every command is deduplicated by its `client_msg_id`), and reads or
//! tails committed events.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chorus_schema::{
    AppendCommand, Command, CommandResult, ErrorCode, EventRecord, GroupId, NodeStatus, PartitionId, Request, Response,
    StoredRecord, MAX_FRAME_BYTES,
};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::network::tls::{Principal, Role, TlsPaths};
use crate::network::{frame, tls, SERVER_NAME};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tls(#[from] tls::Error),
    #[error("connecting to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("stream to {addr}: {reason}")]
    Stream { addr: String, reason: String },
    #[error("server error {code:?}: {message}")]
    Server { code: ErrorCode, message: String },
    #[error("bad response: {0}")]
    BadResponse(String),
    #[error("no node of the cluster answered: {0}")]
    NoNode(String),
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp { attempts: u32, last: String },
}

impl Error {
    /// Whether retrying the same request may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Stream { .. } | Error::NoNode(_) => true,
            Error::Server { code, .. } => code.retryable(),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long an append keeps retrying before it fails.
    pub append_deadline: Duration,
    /// Most commands the batcher puts in one `Append` frame.
    pub batch_commands_max: usize,
    /// Batches of one group in flight at once. The leader merges the batches
    /// in flight into its Raft entries, so a few suffice.
    pub batches_in_flight_max: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig { append_deadline: Duration::from_secs(20), batch_commands_max: 512, batches_in_flight_max: 2 }
    }
}

type Pending = (AppendCommand, oneshot::Sender<Result<CommandResult>>);

struct Inner {
    endpoint: quinn::Endpoint,
    quic: quinn::ClientConfig,
    config: ClientConfig,
    /// Client addresses of every node known.
    nodes: RwLock<Vec<String>>,
    conns: tokio::sync::Mutex<HashMap<String, quinn::Connection>>,
    partitions: u16,
    /// The group hosting each partition.
    placement: Vec<GroupId>,
    groups: u16,
    /// Cached leader (client address) per group.
    leaders: RwLock<Vec<Option<String>>>,
    batchers: Mutex<HashMap<GroupId, mpsc::UnboundedSender<Pending>>>,
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
    /// When the TLS material is unusable or no seed answers a status request.
    pub async fn connect(seeds: &[String], tls: &TlsPaths, config: ClientConfig) -> Result<Self> {
        let quic = tls::Identity::load(tls)?.log_client()?;
        Self::connect_with(seeds, quic, config).await
    }

    /// As [`LogClient::connect`], with a prepared QUIC client configuration.
    ///
    /// # Errors
    /// When no seed answers a status request.
    pub async fn connect_with(seeds: &[String], quic: quinn::ClientConfig, config: ClientConfig) -> Result<Self> {
        let endpoint = quinn::Endpoint::client("0.0.0.0:0".parse().expect("literal address"))
            .map_err(|e| Error::Connect { addr: "0.0.0.0:0".into(), reason: e.to_string() })?;
        let mut inner = Inner {
            endpoint,
            quic,
            config,
            nodes: RwLock::new(seeds.to_vec()),
            conns: Default::default(),
            partitions: 0,
            placement: Vec::new(),
            groups: 0,
            leaders: RwLock::new(Vec::new()),
            batchers: Default::default(),
        };
        let mut last = String::from("no seeds given");
        for seed in seeds {
            match request_on(&inner, seed, &Request::Status, Duration::from_secs(3)).await {
                Ok(Response::Status(s)) => {
                    let (placement, groups) = match placement_of(&s) {
                        Ok(p) => p,
                        Err(e) => {
                            last = format!("{seed}: {e}");
                            continue;
                        }
                    };
                    inner.partitions = placement.len() as u16;
                    inner.placement = placement;
                    inner.groups = groups as u16;
                    *inner.leaders.write().expect("leaders lock") = vec![None; groups];
                    let client = LogClient { inner: Arc::new(inner) };
                    client.refresh_leaders().await;
                    return Ok(client);
                }
                Ok(other) => last = format!("{seed}: unexpected {other:?}"),
                Err(e) => last = format!("{seed}: {e}"),
            }
        }
        Err(Error::NoNode(last))
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
    pub fn group_of(&self, partition: PartitionId) -> GroupId {
        self.inner.placement[partition.0 as usize]
    }

    /// Asks every known node for its status and caches each group's leader.
    pub async fn refresh_leaders(&self) {
        let nodes = self.inner.nodes.read().expect("nodes lock").clone();
        let mut best: Vec<(u64, Option<String>)> = vec![(0, None); self.inner.groups as usize];
        for addr in nodes {
            let Ok(status) = self.status(&addr).await else { continue };
            for g in &status.groups {
                let i = g.group.0 as usize;
                if i < best.len() && g.leader == Some(status.node) && g.term >= best[i].0 {
                    best[i] = (g.term, Some(addr.clone()));
                }
            }
        }
        let mut leaders = self.inner.leaders.write().expect("leaders lock");
        for (i, (_, addr)) in best.into_iter().enumerate() {
            if addr.is_some() {
                leaders[i] = addr;
            }
        }
    }

    /// The status of the node at `addr`.
    ///
    /// # Errors
    /// When the node cannot be reached or answers with an error.
    pub async fn status(&self, addr: &str) -> Result<NodeStatus> {
        match self.request(addr, &Request::Status).await? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Sends one request to the node at `addr` and reads one response.
    ///
    /// # Errors
    /// On connection or stream failure, or an undecodable response.
    pub async fn request(&self, addr: &str, req: &Request) -> Result<Response> {
        request_on(&self.inner, addr, req, REQUEST_TIMEOUT).await
    }

    fn leader_or_any(&self, group: GroupId, attempt: u32) -> String {
        if let Some(l) = self.inner.leaders.read().expect("leaders lock")[group.0 as usize].clone() {
            return l;
        }
        let nodes = self.inner.nodes.read().expect("nodes lock");
        nodes[attempt as usize % nodes.len()].clone()
    }

    fn learn(&self, group: GroupId, leader: Option<String>) {
        if let Some(addr) = &leader {
            let mut nodes = self.inner.nodes.write().expect("nodes lock");
            if !nodes.contains(addr) {
                nodes.push(addr.clone());
            }
        }
        self.inner.leaders.write().expect("leaders lock")[group.0 as usize] = leader;
    }

    /// The cached leader (client address) of the group hosting `partition`, if known.
    pub fn leader_addr(&self, partition: PartitionId) -> Option<String> {
        let group = *self.inner.placement.get(partition.0 as usize)?;
        self.inner.leaders.read().expect("leaders lock").get(group.0 as usize).cloned().flatten()
    }

    /// Sends `req` to the leader of `group`, following `NotLeader` hints and
    /// retrying retryable failures until the append deadline. Returns the first
    /// response that is not an error.
    ///
    /// # Errors
    /// A non-retryable server error, or the last error once the deadline passed.
    pub async fn routed(&self, group: GroupId, req: &Request) -> Result<Response> {
        let deadline = tokio::time::Instant::now() + self.inner.config.append_deadline;
        let mut attempt = 0u32;
        let mut redirects = 0u32;
        let mut failed: Option<String> = None;
        loop {
            let mut addr = self.leader_or_any(group, attempt);
            // Not straight back to the node that just failed (perhaps dead).
            if failed.as_ref() == Some(&addr) {
                let nodes = self.inner.nodes.read().expect("nodes lock");
                if let Some(other) =
                    (1..=nodes.len()).map(|i| &nodes[(attempt as usize + i) % nodes.len()]).find(|n| **n != addr)
                {
                    addr = other.clone();
                }
            }
            attempt += 1;
            // A killed node's connection looks alive until QUIC's idle timeout:
            // bound each attempt, so that the next one tries another node.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let timeout = ATTEMPT_TIMEOUT.min(left).max(Duration::from_millis(100));
            let err = match request_on(&self.inner, &addr, req, timeout).await {
                Ok(Response::Error { code: ErrorCode::NotLeader, leader: Some(hint), message }) => {
                    self.learn(group, Some(hint.client_addr));
                    Error::Server { code: ErrorCode::NotLeader, message }
                }
                Ok(Response::Error { code, message, .. }) => {
                    if code.retryable() {
                        self.learn(group, None);
                    }
                    Error::Server { code, message }
                }
                Ok(resp) => return Ok(resp),
                Err(e) => {
                    self.learn(group, None);
                    failed = Some(addr.clone());
                    e
                }
            };
            if !err.retryable() {
                return Err(err);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::GaveUp { attempts: attempt, last: err.to_string() });
            }
            if matches!(err, Error::Server { code: ErrorCode::NotLeader, .. }) {
                // Follow a hint at once; but hints that keep bouncing (two
                // nodes pointing at each other around a leader change) must
                // not turn one request into thousands before the deadline.
                redirects += 1;
                if redirects > 1 {
                    tokio::time::sleep(Duration::from_millis(10 * u64::from(redirects.min(10)))).await;
                }
            } else {
                redirects = 0;
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt.min(10)))).await;
            }
        }
    }

    /// Appends encoded commands whose partitions are all on `group`, in one
    /// frame, on the group's leader. Returns one result per command.
    ///
    /// # Errors
    /// As [`LogClient::routed`].
    pub async fn append_encoded(&self, group: GroupId, commands: Vec<AppendCommand>) -> Result<Vec<CommandResult>> {
        match self.routed(group, &Request::Append { commands }).await? {
            Response::Appended { results } => Ok(results),
            other => Err(unexpected(other)),
        }
    }

    /// Runs a membership request (`AddLearner`, `ChangeVoters`, …) on the leader of `group`.
    ///
    /// # Errors
    /// As [`LogClient::routed`].
    pub async fn admin(&self, group: GroupId, req: &Request) -> Result<()> {
        match self.routed(group, req).await? {
            Response::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Appends commands of partitions hosted by one group, in one frame, in order.
    ///
    /// # Errors
    /// As [`LogClient::append_encoded`]; also when the commands span groups.
    pub async fn append_batch(&self, commands: &[Command]) -> Result<Vec<CommandResult>> {
        let Some(first) = commands.first() else { return Ok(Vec::new()) };
        let group = self.group_of(self.partition_of(first));
        let mut encoded = Vec::with_capacity(commands.len());
        for c in commands {
            let partition = self.partition_of(c);
            if self.group_of(partition) != group {
                return Err(Error::Server {
                    code: ErrorCode::MixedGroups,
                    message: "commands span Raft groups".into(),
                });
            }
            encoded.push(AppendCommand { partition, bytes: c.encode() });
        }
        self.append_encoded(group, encoded).await
    }

    /// Appends one command. Concurrent calls for partitions of the same group
    /// are batched into shared frames.
    ///
    /// # Errors
    /// As [`LogClient::append_encoded`].
    pub async fn append(&self, command: &Command) -> Result<CommandResult> {
        let partition = self.partition_of(command);
        let (tx, rx) = oneshot::channel();
        let item = AppendCommand { partition, bytes: command.encode() };
        self.batcher(self.group_of(partition)).send((item, tx)).map_err(|_| Error::NoNode("client closed".into()))?;
        rx.await.map_err(|_| Error::NoNode("batcher stopped".into()))?
    }

    fn batcher(&self, group: GroupId) -> mpsc::UnboundedSender<Pending> {
        let mut batchers = self.inner.batchers.lock().expect("batchers lock");
        batchers
            .entry(group)
            .or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(run_batcher(self.clone(), group, rx));
                tx
            })
            .clone()
    }

    /// Reads committed events of `partition` from the node at `addr`, from offset
    /// `from`. Returns the events and the offset to read next.
    ///
    /// # Errors
    /// On failure to reach the node, an error response or an undecodable event.
    pub async fn read_from(
        &self,
        addr: &str,
        partition: PartitionId,
        from: u64,
        limit: u32,
    ) -> Result<(Vec<EventRecord>, u64)> {
        match self.request(addr, &Request::Read { partition, from, limit }).await? {
            Response::Events { events, next, .. } => Ok((decode_events(&events)?, next)),
            other => Err(unexpected(other)),
        }
    }

    /// Reads committed events of `partition` from its leader (or any node).
    ///
    /// # Errors
    /// As [`LogClient::read_from`].
    pub async fn read(&self, partition: PartitionId, from: u64, limit: u32) -> Result<(Vec<EventRecord>, u64)> {
        let addr = self.leader_or_any(self.group_of(partition), 0);
        self.read_from(&addr, partition, from, limit).await
    }

    /// Streams committed events of `partition` from `from` on, as they commit,
    /// from the node at `addr`, into `out` until the receiver is dropped or the
    /// stream breaks.
    ///
    /// # Errors
    /// When the stream cannot be opened or breaks.
    pub async fn tail(
        &self,
        addr: &str,
        partition: PartitionId,
        from: u64,
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
        from: u64,
        out: mpsc::Sender<StoredRecord>,
    ) -> Result<()> {
        self.tail_with(addr, partition, from, out, |bytes| StoredRecord::decode(bytes.into())).await
    }

    async fn tail_with<T>(
        &self,
        addr: &str,
        partition: PartitionId,
        from: u64,
        out: mpsc::Sender<T>,
        decode: impl Fn(Vec<u8>) -> chorus_schema::Result<T>,
    ) -> Result<()> {
        let conn = connection(&self.inner, addr).await?;
        let stream_err = |e: &dyn std::fmt::Display| Error::Stream { addr: addr.to_string(), reason: e.to_string() };
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| stream_err(&e))?;
        frame::write(&mut send, &Request::Tail { partition, from }.encode()).await.map_err(|e| stream_err(&e))?;
        send.finish().map_err(|e| stream_err(&e))?;
        loop {
            let Some(bytes) = frame::read(&mut recv, MAX_FRAME_BYTES).await.map_err(|e| stream_err(&e))? else {
                return Ok(());
            };
            match Response::decode(&bytes).map_err(|e| Error::BadResponse(e.to_string()))? {
                Response::Events { events, .. } => {
                    let decoded = events
                        .into_iter()
                        .map(|e| decode(e).map_err(|e| Error::BadResponse(e.to_string())))
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
    events.iter().map(|e| EventRecord::decode(e).map_err(|e| Error::BadResponse(e.to_string()))).collect()
}

fn unexpected(resp: Response) -> Error {
    match resp {
        Response::Error { code, message, .. } => Error::Server { code, message },
        other => Error::BadResponse(format!("unexpected response {other:?}")),
    }
}

async fn run_batcher(client: LogClient, group: GroupId, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let max = client.inner.config.batch_commands_max;
    let in_flight = Arc::new(Semaphore::new(client.inner.config.batches_in_flight_max));
    while let Some(first) = rx.recv().await {
        let permit = in_flight.clone().acquire_owned().await.expect("semaphore never closed");
        let mut batch = vec![first];
        while batch.len() < max {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let client = client.clone();
        tokio::spawn(async move {
            let (commands, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            match client.append_encoded(group, commands).await {
                Ok(results) if results.len() == waiters.len() => {
                    for (w, r) in waiters.into_iter().zip(results) {
                        let _ = w.send(Ok(r));
                    }
                }
                Ok(results) => {
                    let msg = format!("{} results for {} commands", results.len(), waiters.len());
                    for w in waiters {
                        let _ = w.send(Err(Error::BadResponse(msg.clone())));
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    let retryable = e.retryable();
                    for w in waiters {
                        let _ = w.send(Err(match &e {
                            _ if retryable => Error::GaveUp { attempts: 0, last: msg.clone() },
                            // Every command of the batch gets the server's
                            // code (e.g. `Forbidden`), not a string.
                            Error::Server { code, message } => Error::Server { code: *code, message: message.clone() },
                            _ => Error::BadResponse(msg.clone()),
                        }));
                    }
                }
            }
            drop(permit);
        });
    }
}

async fn connection(inner: &Inner, addr: &str) -> Result<quinn::Connection> {
    let mut conns = inner.conns.lock().await;
    if let Some(c) = conns.get(addr) {
        if c.close_reason().is_none() {
            return Ok(c.clone());
        }
    }
    let connect_err = |reason: String| Error::Connect { addr: addr.to_string(), reason };
    let sock: SocketAddr = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| connect_err(e.to_string()))?
        .next()
        .ok_or_else(|| connect_err("no address".into()))?;
    let connecting =
        inner.endpoint.connect_with(inner.quic.clone(), sock, SERVER_NAME).map_err(|e| connect_err(e.to_string()))?;
    let conn = tokio::time::timeout(Duration::from_secs(3), connecting)
        .await
        .map_err(|_| connect_err("timed out".into()))?
        .map_err(|e| connect_err(e.to_string()))?;
    // The handshake checked the chain and `serverAuth`; this checks that the
    // server is a log-node and not, say, another certificate of the CA.
    match Principal::of_connection(&conn) {
        Ok(p) if p.role == Role::Node => {}
        Ok(p) => return Err(connect_err(format!("the server is {p}, not a log-node"))),
        Err(e) => return Err(connect_err(e.to_string())),
    }
    conns.insert(addr.to_string(), conn.clone());
    Ok(conn)
}

/// How long a single request may take on its own.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one attempt of a routed request waits before trying another node
/// (an append is idempotent, so a retry after a slow attempt is safe).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

async fn request_on(inner: &Inner, addr: &str, req: &Request, timeout: Duration) -> Result<Response> {
    let conn = tokio::time::timeout(timeout, connection(inner, addr))
        .await
        .map_err(|_| Error::Connect { addr: addr.to_string(), reason: format!("timed out after {timeout:?}") })??;
    let stream_err = |e: &dyn std::fmt::Display| Error::Stream { addr: addr.to_string(), reason: e.to_string() };
    let result = tokio::time::timeout(timeout, async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| stream_err(&e))?;
        frame::write(&mut send, &req.encode()).await.map_err(|e| stream_err(&e))?;
        send.finish().map_err(|e| stream_err(&e))?;
        let bytes = frame::read(&mut recv, MAX_FRAME_BYTES)
            .await
            .map_err(|e| stream_err(&e))?
            .ok_or_else(|| stream_err(&"closed without a response"))?;
        Response::decode(&bytes).map_err(|e| Error::BadResponse(e.to_string()))
    })
    .await;
    match result {
        Ok(r) => {
            if r.is_err() && conn.close_reason().is_some() {
                inner.conns.lock().await.remove(addr);
            }
            r
        }
        Err(_) => {
            // Perhaps a dead peer: the next request to it opens a new connection.
            let mut conns = inner.conns.lock().await;
            if conns.get(addr).is_some_and(|c| c.stable_id() == conn.stable_id()) {
                conns.remove(addr);
            }
            Err(stream_err(&format!("no response within {timeout:?}")))
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
            last_log_index: 0,
            last_applied: 0,
            next_offset: 0,
            voters: vec![],
            replicas: vec![],
        }
    }

    fn group(g: u16) -> GroupStatus {
        GroupStatus {
            group: GroupId(g),
            leader: None,
            term: 0,
            last_log_index: 0,
            last_applied: 0,
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
