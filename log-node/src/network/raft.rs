//! Raft RPCs between nodes over QUIC with mutual TLS.
//!
//! All Raft groups share one QUIC connection per pair of nodes. RPCs to the
//! same peer that are waiting at the same moment are coalesced: one
//! bidirectional stream carries one request frame holding a batch of RPCs
//! (bincode-encoded openraft messages tagged with their group) and a reply
//! frame for each of them, tagged with its index, sent as soon as it is ready
//! (one group's slow append never holds back another's heartbeat), up to
//! [`RPC_BATCH_BYTES_MAX`] of entries. Snapshot
//! chunks travel alone, so that they never delay heartbeats. Decoding is bounded
//! by the frame length, and a bad frame gets a `Refused` reply, never a panic.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use bincode::Options;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::tls::Principal;
use super::{frame, SERVER_NAME};
use crate::types::{NodeAddr, Raft, TypeConfig};

/// Largest Raft frame accepted (AppendEntries batches, snapshot chunks).
pub const RAFT_FRAME_BYTES_MAX: usize = 256 << 20;

fn codec() -> impl Options {
    bincode::DefaultOptions::new().with_fixint_encoding().allow_trailing_bytes()
}

/// Encodes a value the way [`decode`] reads it.
#[expect(
    clippy::expect_used,
    reason = "bincode into memory fails only on sequences of unknown length, which the wire types have none of"
)]
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    codec().serialize(v).expect("in-memory bincode encoding cannot fail")
}

/// Decodes untrusted bytes; no allocation may exceed the input's length.
///
/// # Errors
/// On malformed input.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    codec().with_limit(bytes.len() as u64 + 64).deserialize(bytes)
}

/// A Raft RPC, as sent on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
}

/// A Raft RPC tagged with its group.
#[derive(Debug, Serialize, Deserialize)]
pub struct Rpc {
    pub group: u16,
    pub request: Request,
}

impl Rpc {
    /// About how many bytes the RPC's entries take (what dominates its frame).
    fn payload_bytes(&self) -> usize {
        match &self.request {
            Request::AppendEntries(ae) => ae
                .entries
                .iter()
                .map(|e| match &e.payload {
                    openraft::EntryPayload::Normal(p) => p.commands.bytes().len(),
                    _ => 0,
                })
                .sum(),
            Request::InstallSnapshot(s) => s.data.len(),
            Request::Vote(_) => 0,
        }
    }
}

/// The answer to an [`Rpc`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// The request could not be served at all (bad frame, unknown group).
    Refused(String),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

/// Most RPCs coalesced into one frame.
pub const RPC_BATCH_MAX: usize = 256;
/// Most entry bytes coalesced into one frame (one RPC alone may exceed it).
pub const RPC_BATCH_BYTES_MAX: usize = 32 << 20;

struct Queued {
    rpc: Rpc,
    ttl: Duration,
    reply: Waiter,
}

/// Connections to peer nodes, shared by every group's network factory.
pub struct Peers {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    /// By peer: (node id, raft address).
    conns: std::sync::Mutex<HashMap<Dest, Arc<Mutex<Option<quinn::Connection>>>>>,
    batchers: std::sync::Mutex<HashMap<Dest, mpsc::UnboundedSender<Queued>>>,
    me: Weak<Peers>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers").finish_non_exhaustive()
    }
}

impl Peers {
    /// `endpoint` is the node's raft endpoint, which also dials peers with `client`.
    pub fn new(endpoint: quinn::Endpoint, client: quinn::ClientConfig) -> Arc<Self> {
        Arc::new_cyclic(|me| Peers {
            endpoint,
            client,
            conns: Default::default(),
            batchers: Default::default(),
            me: me.clone(),
        })
    }

    async fn connection(&self, dest: &Dest, timeout: Duration) -> Result<quinn::Connection, Unreachable> {
        let (target, addr) = (dest.0, dest.1.as_str());
        let slot = self.conns.lock().unwrap_or_else(PoisonError::into_inner).entry(dest.clone()).or_default().clone();
        let mut guard = slot.lock().await;
        if let Some(c) = guard.as_ref() {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let sock: SocketAddr = tokio::net::lookup_host(addr)
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| Unreachable::new(&Msg(format!("cannot resolve {addr}"))))?;
        let connecting =
            self.endpoint.connect_with(self.client.clone(), sock, SERVER_NAME).map_err(|e| Unreachable::new(&e))?;
        let conn = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| Unreachable::new(&Msg(format!("connect to {addr} timed out"))))?
            .map_err(|e| Unreachable::new(&e))?;
        // The handshake checked the chain and `serverAuth`; the peer must
        // also be the node this link is for (an address may have been
        // reused by another node).
        match Principal::of_connection(&conn) {
            Ok(p) if p.node_id() == Some(target) => {}
            Ok(p) => {
                conn.close(CLOSE_WRONG_PEER.into(), b"not the node dialed");
                return Err(Unreachable::new(&Msg(format!("{addr} is {p}, not node {target}"))));
            }
            Err(e) => return Err(Unreachable::new(&Msg(format!("{addr}: {e}")))),
        }
        *guard = Some(conn.clone());
        Ok(conn)
    }

    fn forget(&self, dest: &Dest) {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner).remove(dest);
    }

    /// Forgets `conn` if it is still the one cached for `addr` (a newer one stays).
    fn forget_conn(&self, dest: &Dest, conn: &quinn::Connection) {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(slot) = conns.get(dest) else { return };
        // Busy slot: someone is dialing or using it; leave it be.
        let Ok(cached) = slot.try_lock() else { return };
        if cached.as_ref().is_some_and(|c| c.stable_id() == conn.stable_id()) {
            drop(cached);
            conns.remove(dest);
        }
    }

    /// Queues `rpc` for the peer at `addr`; it leaves with every other RPC queued
    /// for that peer by then.
    fn enqueue(&self, dest: &Dest, rpc: Rpc, ttl: Duration) -> oneshot::Receiver<Result<Reply, Failure>> {
        let (tx, rx) = oneshot::channel();
        let mut batchers = self.batchers.lock().unwrap_or_else(PoisonError::into_inner);
        let sender = batchers.entry(dest.clone()).or_insert_with(|| {
            let (qtx, qrx) = mpsc::unbounded_channel();
            tokio::spawn(run_batcher(self.me.clone(), dest.clone(), qrx));
            qtx
        });
        if let Err(mpsc::error::SendError(q)) = sender.send(Queued { rpc, ttl, reply: tx }) {
            let _ = q.reply.send(Err(Failure::Network("peer batcher stopped".into())));
        }
        rx
    }

    /// Sends `rpcs` as one frame on a new stream; each waiter gets its RPC's
    /// reply as soon as the peer has it (replies come back one frame each, in
    /// the order they finish: a heartbeat never waits for a large append of
    /// another group). Waiters still unanswered when the exchange fails or
    /// `ttl` passes get the error.
    async fn exchange(&self, dest: &Dest, rpcs: &[Rpc], waiters: Vec<Waiter>, ttl: Duration) {
        let addr = dest.1.as_str();
        let mut waiters: Vec<Option<Waiter>> = waiters.into_iter().map(Some).collect();
        let fail_all = |waiters: &mut Vec<Option<Waiter>>, e: Failure| {
            for w in waiters.iter_mut().filter_map(Option::take) {
                let _ = w.send(Err(e.clone()));
            }
        };
        // Dialing takes a handshake, which a loaded peer may answer later than
        // a heartbeat interval: give it a second, whatever the RPC's ttl.
        let conn = match self.connection(dest, Duration::from_secs(1)).await {
            Ok(c) => c,
            Err(u) => return fail_all(&mut waiters, Failure::Unreachable(u.to_string())),
        };
        let bytes = encode(&rpcs);
        let heard_before = conn.stats().udp_rx.datagrams;
        let mut open = rpcs.len();
        let result = tokio::time::timeout(ttl, async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            frame::write(&mut send, &bytes).await.map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            while open > 0 {
                let frame = frame::read(&mut recv, RAFT_FRAME_BYTES_MAX)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("{addr} closed the stream with {open} replies missing"))?;
                let (index, reply) = decode::<(u32, Reply)>(&frame).map_err(|e| e.to_string())?;
                if let Reply::Refused(why) = &reply {
                    if index == WHOLE_FRAME {
                        return Err(format!("{addr} refused the frame: {why}"));
                    }
                }
                let waiter = waiters.get_mut(index as usize).and_then(Option::take).ok_or_else(|| {
                    format!("{addr} answered request {index} of {} twice or out of range", rpcs.len())
                })?;
                let _ = waiter.send(Ok(reply));
                open -= 1;
            }
            Ok::<(), String>(())
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                if conn.close_reason().is_some() {
                    self.forget(dest);
                }
                fail_all(&mut waiters, Failure::Network(format!("rpc to {addr}: {e}")));
            }
            Err(_) => {
                // A peer killed and restarted has lost the connection's state
                // and cannot reset it: it would look alive until QUIC's idle
                // timeout. If nothing at all came back from it during the
                // exchange (not even an acknowledgement), dial afresh for the
                // next RPC. A peer that is merely slow keeps its connection:
                // dialing anew under load costs handshakes and drops every
                // exchange in flight.
                if conn.stats().udp_rx.datagrams == heard_before {
                    self.forget_conn(dest, &conn);
                }
                fail_all(&mut waiters, Failure::Network(format!("rpc to {addr} timed out after {ttl:?}")));
            }
        }
    }
}

type Waiter = oneshot::Sender<Result<Reply, Failure>>;

/// Why an RPC got no reply.
#[derive(Clone, Debug)]
enum Failure {
    /// The peer could not be dialed (openraft backs off).
    Unreachable(String),
    /// The exchange failed or timed out.
    Network(String),
}

/// A peer: its node id and Raft address.
type Dest = (u64, String);

/// The application close code of a Raft connection whose peer is not the
/// node it must be (or no node at all).
pub const CLOSE_WRONG_PEER: u32 = 0x11;

/// The index of a reply that refuses the whole request frame.
pub const WHOLE_FRAME: u32 = u32::MAX;

/// Drains the RPCs queued for one peer into frames, each sent on its own task so
/// that a slow exchange never holds back the next one.
async fn run_batcher(peers: Weak<Peers>, dest: Dest, mut rx: mpsc::UnboundedReceiver<Queued>) {
    let mut carry: Option<Queued> = None;
    loop {
        let first = match carry.take() {
            Some(q) => q,
            None => match rx.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        let mut bytes = first.rpc.payload_bytes();
        let mut batch = vec![first];
        while batch.len() < RPC_BATCH_MAX {
            match rx.try_recv() {
                Ok(q) if bytes + q.rpc.payload_bytes() > RPC_BATCH_BYTES_MAX => {
                    carry = Some(q);
                    break;
                }
                Ok(q) => {
                    bytes += q.rpc.payload_bytes();
                    batch.push(q);
                }
                Err(_) => break,
            }
        }
        let Some(peers) = peers.upgrade() else { return };
        let dest = dest.clone();
        tokio::spawn(async move {
            let ttl = batch.iter().map(|q| q.ttl).max().unwrap_or(Duration::from_secs(1));
            let (rpcs, waiters): (Vec<Rpc>, Vec<_>) = batch.into_iter().map(|q| (q.rpc, q.reply)).unzip();
            peers.exchange(&dest, &rpcs, waiters, ttl).await;
        });
    }
}

/// The network factory of one Raft group.
#[derive(Clone, Debug)]
pub struct Network {
    pub group: u16,
    pub peers: Arc<Peers>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerLink;

    async fn new_client(&mut self, target: u64, node: &NodeAddr) -> PeerLink {
        PeerLink { group: self.group, target, addr: node.raft_addr.clone(), peers: self.peers.clone() }
    }
}

/// One group's link to one peer.
#[derive(Debug)]
pub struct PeerLink {
    group: u16,
    target: u64,
    addr: String,
    peers: Arc<Peers>,
}

enum CallError {
    Unreachable(Unreachable),
    Network(NetworkError),
}

impl<E: std::error::Error> From<CallError> for RPCError<u64, NodeAddr, E> {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Unreachable(u) => RPCError::Unreachable(u),
            CallError::Network(n) => RPCError::Network(n),
        }
    }
}

impl PeerLink {
    fn dest(&self) -> Dest {
        (self.target, self.addr.clone())
    }

    async fn call(&self, request: Request, ttl: Duration) -> Result<Reply, CallError> {
        let rpc = Rpc { group: self.group, request };
        let rx = if matches!(rpc.request, Request::InstallSnapshot(_)) {
            // Snapshot chunks are large: they go alone.
            let (tx, rx) = oneshot::channel();
            self.peers.exchange(&self.dest(), std::slice::from_ref(&rpc), vec![tx], ttl).await;
            rx
        } else {
            self.peers.enqueue(&self.dest(), rpc, ttl)
        };
        match rx.await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(Failure::Unreachable(e))) => Err(CallError::Unreachable(Unreachable::new(&Msg(e)))),
            Ok(Err(Failure::Network(e))) => Err(CallError::Network(NetworkError::new(&Msg(e)))),
            Err(_) => Err(CallError::Network(NetworkError::new(&Msg(format!("rpc to node {} dropped", self.target))))),
        }
    }

    fn unexpected(&self, reply: Reply) -> NetworkError {
        NetworkError::new(&Msg(format!("node {} answered with {reply:?}", self.target)))
    }
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, NodeAddr, RaftError<u64>>> {
        match self.call(Request::AppendEntries(rpc), option.hard_ttl()).await? {
            Reply::AppendEntries(Ok(r)) => Ok(r),
            Reply::AppendEntries(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(RPCError::Network(self.unexpected(other))),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, NodeAddr, RaftError<u64, InstallSnapshotError>>> {
        match self.call(Request::InstallSnapshot(rpc), option.hard_ttl()).await? {
            Reply::InstallSnapshot(Ok(r)) => Ok(r),
            Reply::InstallSnapshot(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(RPCError::Network(self.unexpected(other))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, NodeAddr, RaftError<u64>>> {
        match self.call(Request::Vote(rpc), option.hard_ttl()).await? {
            Reply::Vote(Ok(r)) => Ok(r),
            Reply::Vote(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(RPCError::Network(self.unexpected(other))),
        }
    }
}

/// Serves Raft RPCs arriving on `endpoint` to the groups in `rafts` (indexed
/// by group id) until the endpoint closes. Only nodes may connect (the
/// handshake wants a certificate of the cluster CA; here its principal must
/// be a node), and a node speaks only for itself: an RPC whose vote names
/// another node is refused.
pub async fn serve(endpoint: quinn::Endpoint, rafts: Arc<Vec<Raft>>) {
    while let Some(incoming) = endpoint.accept().await {
        let rafts = rafts.clone();
        tokio::spawn(async move {
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "raft handshake failed");
                    return;
                }
            };
            let peer = conn.remote_address();
            let node = match Principal::of_connection(&conn).map(|p| (p.node_id(), p)) {
                Ok((Some(id), _)) => id,
                Ok((None, p)) => {
                    tracing::warn!(%peer, principal = %p, "raft connection refused: not a node");
                    conn.close(CLOSE_WRONG_PEER.into(), format!("{p} is not a node").as_bytes());
                    return;
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "raft connection refused");
                    conn.close(CLOSE_WRONG_PEER.into(), e.to_string().as_bytes());
                    return;
                }
            };
            loop {
                match conn.accept_bi().await {
                    Ok((send, recv)) => {
                        tokio::spawn(serve_stream(rafts.clone(), node, send, recv));
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "raft connection closed");
                        return;
                    }
                }
            }
        });
    }
}

async fn serve_stream(rafts: Arc<Vec<Raft>>, node: u64, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    use futures::stream::{FuturesUnordered, StreamExt};
    let rpcs = match frame::read(&mut recv, RAFT_FRAME_BYTES_MAX).await {
        Ok(Some(bytes)) => match decode::<Vec<Rpc>>(&bytes) {
            Ok(rpcs) if rpcs.len() <= RPC_BATCH_MAX => Ok(rpcs),
            Ok(rpcs) => Err(format!("{} rpcs in one frame, limit {RPC_BATCH_MAX}", rpcs.len())),
            Err(e) => Err(format!("malformed raft request: {e}")),
        },
        Ok(None) => return,
        Err(e) => Err(format!("bad raft frame: {e}")),
    };
    let rpcs = match rpcs {
        Ok(rpcs) => rpcs,
        Err(why) => {
            tracing::warn!(reason = %why, "raft request refused");
            if frame::write(&mut send, &encode(&(WHOLE_FRAME, Reply::Refused(why)))).await.is_ok() {
                let _ = send.finish();
            }
            return;
        }
    };
    let rafts = &rafts;
    let mut pending: FuturesUnordered<_> =
        rpcs.into_iter().zip(0u32..).map(|(rpc, i)| async move { (i, dispatch(rafts, node, rpc).await) }).collect();
    while let Some(answer) = pending.next().await {
        if let Reply::Refused(why) = &answer.1 {
            tracing::warn!(reason = %why, "raft request refused");
        }
        if frame::write(&mut send, &encode(&answer)).await.is_err() {
            // The caller is gone (it timed out): the remaining RPCs still run
            // to completion on this task, their replies are dropped.
            while pending.next().await.is_some() {}
            return;
        }
    }
    let _ = send.finish();
}

/// The node an RPC speaks for: the leader or candidate of its vote.
fn sender(request: &Request) -> u64 {
    match request {
        Request::AppendEntries(r) => r.vote.leader_id().node_id,
        Request::Vote(r) => r.vote.leader_id().node_id,
        Request::InstallSnapshot(r) => r.vote.leader_id().node_id,
    }
}

async fn dispatch(rafts: &[Raft], node: u64, rpc: Rpc) -> Reply {
    let Some(raft) = rafts.get(rpc.group as usize) else {
        return Reply::Refused(format!("no group {}", rpc.group));
    };
    let claimed = sender(&rpc.request);
    if claimed != node {
        return Reply::Refused(format!("node {node} may not speak for node {claimed}"));
    }
    match rpc.request {
        Request::AppendEntries(r) => Reply::AppendEntries(raft.append_entries(r).await),
        Request::Vote(r) => Reply::Vote(raft.vote(r).await),
        Request::InstallSnapshot(r) => Reply::InstallSnapshot(raft.install_snapshot(r).await),
    }
}
