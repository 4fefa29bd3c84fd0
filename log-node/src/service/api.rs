//! The client API of a log-node: one request frame per QUIC stream, answered by
//! one response frame (or, for `Tail`, a stream of them).
//!
//! Connection policy: a malformed, oversized or invalid request gets an `Error`
//! response on its own stream; the connection and every other stream go on.
//!
//! Every client presents a certificate of the cluster CA naming a principal
//! (checked by the handshake); a request its role may not make (see
//! [`super::authz`]) is answered `Forbidden` and nothing is done. A
//! certificate that names no principal closes the connection at once
//! ([`CLOSE_NO_PRINCIPAL`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chorus_schema::{
    AppendCommand, Command, ErrorCode, GroupId, GroupStatus, LeaderHint, LogIndex, MemberAddr, NodeId, NodeStatus,
    Offset, PartitionId, PartitionStatus, ReplicaStatus, Request, Response, MAX_FRAME_BYTES,
};
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::ChangeMembers;
use tokio::sync::watch;
use tracing::Instrument;

use super::authz;
use super::node::Damage;
use super::proposer::{self, Proposer};
use crate::network::frame;
use crate::network::tls::Principal;
use crate::placement::Placement;
use crate::store::{events, Store};
use crate::types::{NodeAddr, Raft, RaftMetrics};

/// Most events in one `Events` response.
#[expect(clippy::cast_possible_truncation, reason = "MAX_EVENTS_PER_RESPONSE is 4096")]
pub const READ_LIMIT_MAX: u32 = chorus_schema::MAX_EVENTS_PER_RESPONSE as u32;

pub(crate) struct Api {
    pub node_id: u64,
    pub placement: Placement,
    /// By group.
    pub rafts: Arc<Vec<Raft>>,
    /// By group.
    pub proposers: Arc<Vec<Proposer>>,
    pub store: Arc<Store>,
    /// By partition.
    pub offsets: Arc<Vec<watch::Receiver<Offset>>>,
    pub append_timeout: Duration,
    /// Set when a read finds damaged storage; the node then stops (see `Node::fatal`).
    pub damage: Arc<watch::Sender<Damage>>,
    /// A learner is promoted only this close to the leader's last log index.
    pub promote_max_lag: u64,
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error { code, message: message.into(), leader: None }
}

/// The application close code of a client connection whose certificate names
/// no principal.
pub const CLOSE_NO_PRINCIPAL: u32 = 0x10;

pub(crate) async fn serve(endpoint: quinn::Endpoint, api: Arc<Api>) {
    while let Some(incoming) = endpoint.accept().await {
        let api = api.clone();
        tokio::spawn(async move {
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "client handshake failed");
                    return;
                }
            };
            let who = match Principal::of_connection(&conn) {
                Ok(p) => Arc::new(p),
                Err(e) => {
                    tracing::warn!(peer = %conn.remote_address(), error = %e, "client refused");
                    conn.close(CLOSE_NO_PRINCIPAL.into(), e.to_string().as_bytes());
                    return;
                }
            };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(serve_stream(api.clone(), who.clone(), send, recv));
            }
        });
    }
}

async fn serve_stream(api: Arc<Api>, who: Arc<Principal>, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let request = match frame::read(&mut recv, MAX_FRAME_BYTES).await {
        Ok(Some(bytes)) => Request::decode(&bytes).map_err(|e| error(ErrorCode::BadFrame, e.to_string())),
        Ok(None) => return,
        Err(e @ frame::Error::TooLarge { .. }) => Err(error(ErrorCode::FrameTooLarge, e.to_string())),
        Err(e) => Err(error(ErrorCode::BadFrame, e.to_string())),
    };
    let request = request.and_then(|r| {
        if authz::allows(&who, &r) {
            Ok(r)
        } else {
            tracing::warn!(principal = %who, request = authz::request_name(&r), "request refused: forbidden for the role");
            Err(error(
                ErrorCode::Forbidden,
                format!("the {} certificate of {who} may not {}", who.role, authz::request_name(&r)),
            ))
        }
    });
    let response = match request {
        Err(r) => r,
        Ok(Request::Tail { partition, from }) => {
            api.tail(partition, from, &mut send).await;
            return;
        }
        Ok(req) => api.handle(req).await,
    };
    if frame::write(&mut send, &response.encode()).await.is_ok() {
        let _ = send.finish();
    }
}

fn not_leader(f: &openraft::error::ForwardToLeader<u64, NodeAddr>, group: GroupId) -> Response {
    match (&f.leader_id, &f.leader_node) {
        (Some(id), Some(node)) => Response::Error {
            code: ErrorCode::NotLeader,
            message: format!("group {group} is led by node {id}"),
            leader: Some(LeaderHint { node: NodeId(*id), client_addr: node.client_addr.clone() }),
        },
        _ => error(ErrorCode::PartitionUnavailable, format!("group {group} has no known leader")),
    }
}

fn replicas(m: &RaftMetrics) -> Vec<ReplicaStatus> {
    let last = m.last_log_index.unwrap_or(0);
    m.replication
        .as_ref()
        .map(|r| {
            r.iter()
                .map(|(node, matched)| ReplicaStatus {
                    node: NodeId(*node),
                    matched: matched.map(|l| LogIndex(l.index)),
                    lag: Some(last.saturating_sub(matched.map(|l| l.index).unwrap_or(0))),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every node in the memberships of `metrics`' groups, by id (a node in
/// several groups once; its addresses from the first group that has it).
fn members(metrics: &[RaftMetrics]) -> Vec<MemberAddr> {
    let mut seen = std::collections::BTreeMap::new();
    for m in metrics {
        for (id, addr) in m.membership_config.membership().nodes() {
            seen.entry(*id).or_insert_with(|| MemberAddr {
                node: NodeId(*id),
                client_addr: addr.client_addr.clone(),
                raft_addr: addr.raft_addr.clone(),
            });
        }
    }
    seen.into_values().collect()
}

impl Api {
    fn group(&self, group: GroupId) -> Result<&Raft, Response> {
        self.rafts.get(group.0 as usize).ok_or_else(|| {
            error(ErrorCode::InvalidCommand, format!("no group {group} (cluster has {})", self.placement.groups()))
        })
    }

    fn group_of(&self, partition: PartitionId) -> Result<GroupId, Response> {
        self.placement.group_of(partition).ok_or_else(|| {
            error(
                ErrorCode::InvalidCommand,
                format!("no partition {partition} (cluster has {})", self.placement.partitions()),
            )
        })
    }

    /// An `Internal` error for the client; damaged storage also stops the node.
    fn storage_error(&self, e: &crate::store::Error) -> Response {
        if e.is_corruption() {
            tracing::error!(error = %e, "a read found damaged storage");
            let why = e.to_string();
            self.damage.send_if_modified(|d| d.is_none() && d.replace((None, why)).is_none());
        }
        error(ErrorCode::Internal, e.to_string())
    }

    async fn handle(&self, req: Request) -> Response {
        let r = match req {
            Request::Append { commands } => self.append(commands).await,
            Request::Read { partition, from, limit } => self.read(partition, from, limit),
            Request::Status => Ok(Response::Status(self.status())),
            Request::AddLearner { group, node, raft_addr, client_addr } => {
                self.add_learner(group, node, NodeAddr { raft_addr, client_addr }).await
            }
            Request::ChangeVoters { group, voters } => self.change_voters(group, voters).await,
            Request::RemoveVoter { group, node } => self.remove_voter(group, node).await,
            Request::PromoteLearner { group, node } => self.promote_learner(group, node).await,
            Request::CommitOffsets { consumer, offsets, reset } => self.commit_offsets(consumer, offsets, reset).await,
            Request::Tail { .. } => unreachable!("tail is served as a stream"),
        };
        r.unwrap_or_else(|e| e)
    }

    /// Checks every command (it decodes, its key is in the partition it
    /// claims, all partitions on one group) and hands them to that group's
    /// proposer, which merges them with other appends into one entry.
    async fn append(&self, commands: Vec<AppendCommand>) -> Result<Response, Response> {
        let received = std::time::Instant::now();
        if commands.is_empty() {
            return Err(error(ErrorCode::InvalidCommand, "append of no commands"));
        }
        let mut group = None;
        for (i, c) in commands.iter().enumerate() {
            let g = self.group_of(c.partition)?;
            match group {
                None => group = Some(g),
                Some(h) if h != g => {
                    return Err(error(
                        ErrorCode::MixedGroups,
                        format!("command {i} is on group {g} (partition {}), the first on group {h}", c.partition),
                    ))
                }
                Some(_) => {}
            }
            let cmd =
                Command::decode(&c.bytes).map_err(|e| error(ErrorCode::InvalidCommand, format!("command {i}: {e}")))?;
            if let Some(why) = authz::superseded(&cmd.body) {
                return Err(error(ErrorCode::Forbidden, format!("command {i} ({}): {why}", cmd.kind())));
            }
            let p = PartitionId::for_key(&cmd.key(), self.placement.partitions());
            if p != c.partition {
                return Err(error(
                    ErrorCode::InvalidCommand,
                    format!("command {i} belongs to partition {p}, not {}", c.partition),
                ));
            }
        }
        // `commands` is not empty: checked above.
        let Some(group) = group else { return Err(error(ErrorCode::InvalidCommand, "append of no commands")) };
        self.propose(group, commands, received).await
    }

    /// Hands checked commands of `group`'s partitions to its proposer and
    /// waits for their results; the commit latency counts from `received`.
    async fn propose(
        &self,
        group: GroupId,
        commands: Vec<AppendCommand>,
        received: std::time::Instant,
    ) -> Result<Response, Response> {
        let proposer = self
            .proposers
            .get(group.0 as usize)
            .ok_or_else(|| error(ErrorCode::Internal, format!("no proposer for group {group}")))?;
        let span = tracing::debug_span!("propose", %group, commands = commands.len());
        match tokio::time::timeout(self.append_timeout, proposer.propose(commands)).instrument(span).await {
            Err(_) => Err(error(
                ErrorCode::Timeout,
                "commit not confirmed in time: the outcome is unknown, retry with the same client_msg_id",
            )),
            Ok(Ok(results)) => {
                proposer.metrics.appends.increment(results.len() as u64);
                proposer.metrics.commit_seconds.record(received.elapsed().as_secs_f64());
                Ok(Response::Appended { results })
            }
            Ok(Err(proposer::Error::NotLeader(f))) => Err(not_leader(&f, group)),
            Ok(Err(e)) => Err(error(ErrorCode::Unavailable, e.to_string())),
        }
    }

    /// A named consumer's commit (or, with no offsets, read; issue 13): the
    /// `CommitOffsets` command of the consumer's partition, through the same
    /// proposer as every append, so the answer comes once it is applied.
    /// The origin is all zero: commits speak for no user, and the
    /// partition keeps no dedup entry for them (they are idempotent by value).
    async fn commit_offsets(
        &self,
        consumer: String,
        offsets: Vec<chorus_schema::PartitionOffset>,
        reset: bool,
    ) -> Result<Response, Response> {
        let cmd = Command {
            origin: chorus_schema::Origin::default(),
            body: chorus_schema::CommandBody::CommitOffsets { consumer, offsets, reset },
        };
        let partition = PartitionId::for_key(&cmd.key(), self.placement.partitions());
        let group = self.group_of(partition)?;
        self.propose(group, vec![AppendCommand { partition, bytes: cmd.encode() }], std::time::Instant::now()).await
    }

    fn read(&self, partition: PartitionId, from: Offset, limit: u32) -> Result<Response, Response> {
        self.group_of(partition)?;
        let next = *self
            .offsets
            .get(partition.0 as usize)
            .ok_or_else(|| error(ErrorCode::Internal, format!("no offsets for partition {partition}")))?
            .borrow();
        let limit = limit.clamp(1, READ_LIMIT_MAX) as usize;
        let events =
            events::read_range(&self.store, partition, from, next, limit).map_err(|e| self.storage_error(&e))?;
        let next = from.plus(events.len() as u64);
        Ok(Response::Events { partition, events, next })
    }

    async fn tail(&self, partition: PartitionId, mut from: Offset, send: &mut quinn::SendStream) {
        let offsets = self.group_of(partition).and_then(|_| {
            self.offsets
                .get(partition.0 as usize)
                .cloned()
                .ok_or_else(|| error(ErrorCode::Internal, format!("no offsets for partition {partition}")))
        });
        let mut offsets = match offsets {
            Ok(o) => o,
            Err(e) => {
                let _ = frame::write(send, &e.encode()).await;
                let _ = send.finish();
                return;
            }
        };
        loop {
            let next = *offsets.borrow_and_update();
            if from < next {
                let events = match events::read_range(&self.store, partition, from, next, READ_LIMIT_MAX as usize) {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = frame::write(send, &self.storage_error(&e).encode()).await;
                        return;
                    }
                };
                from = from.plus(events.len() as u64);
                let resp = Response::Events { partition, events, next: from };
                if frame::write(send, &resp.encode()).await.is_err() {
                    return; // the reader went away
                }
                continue;
            }
            tokio::select! {
                changed = offsets.changed() => if changed.is_err() { return },
                _ = send.stopped() => return,
            }
        }
    }

    fn status(&self) -> NodeStatus {
        let metrics: Vec<RaftMetrics> = self.rafts.iter().map(|r| r.metrics().borrow().clone()).collect();
        let partitions = (0..self.placement.partitions())
            .filter_map(|p| {
                // Every partition of the cluster is on a group, every group has its metrics.
                let partition = PartitionId(p);
                let group = self.placement.group_of(partition)?;
                let m = metrics.get(group.0 as usize)?;
                Some(PartitionStatus {
                    partition,
                    group,
                    leader: m.current_leader.map(NodeId),
                    term: m.current_term,
                    last_log_index: LogIndex(m.last_log_index.unwrap_or(0)),
                    last_applied: LogIndex(m.last_applied.map(|l| l.index).unwrap_or(0)),
                    next_offset: self.offsets.get(p as usize).map_or(Offset(0), |o| *o.borrow()),
                    voters: m.membership_config.membership().voter_ids().map(NodeId).collect(),
                    replicas: replicas(m),
                })
            })
            .collect();
        let groups = metrics
            .iter()
            .zip(0u16..)
            .map(|(m, g)| {
                let group = GroupId(g);
                GroupStatus {
                    group,
                    leader: m.current_leader.map(NodeId),
                    term: m.current_term,
                    last_log_index: LogIndex(m.last_log_index.unwrap_or(0)),
                    last_applied: LogIndex(m.last_applied.map(|l| l.index).unwrap_or(0)),
                    voters: m.membership_config.membership().voter_ids().map(NodeId).collect(),
                    learners: m.membership_config.membership().learner_ids().map(NodeId).collect(),
                    replicas: replicas(m),
                    partitions: self.placement.partitions_of(group),
                }
            })
            .collect();
        let members = members(&metrics);
        NodeStatus { node: NodeId(self.node_id), partitions, groups, members }
    }

    async fn add_learner(&self, group: GroupId, node: NodeId, addr: NodeAddr) -> Result<Response, Response> {
        let raft = self.group(group)?;
        match raft.add_learner(node.0, addr, true).await {
            Ok(_) => Ok(Response::Done),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(not_leader(&f, group)),
            Err(e) => Err(error(ErrorCode::Unavailable, e.to_string())),
        }
    }

    async fn change_voters(&self, group: GroupId, voters: Vec<NodeId>) -> Result<Response, Response> {
        let raft = self.group(group)?;
        if voters.is_empty() {
            return Err(error(ErrorCode::InvalidCommand, "a group needs at least one voter"));
        }
        let voters: BTreeSet<u64> = voters.into_iter().map(|v| v.0).collect();
        Self::membership(raft, group, ChangeMembers::ReplaceAllVoters(voters)).await
    }

    /// Removes `node` from the voters, computed from the leader's current
    /// membership (so that a concurrent change is not undone). The node is
    /// dropped, not kept as a learner: it comes back through `AddLearner`.
    async fn remove_voter(&self, group: GroupId, node: NodeId) -> Result<Response, Response> {
        let raft = self.group(group)?;
        let voters = self.leader_voters(raft, group).await?;
        if !voters.contains(&node.0) {
            return Ok(Response::Done);
        }
        if voters.len() == 1 {
            return Err(error(ErrorCode::InvalidCommand, format!("node {node} is the only voter of group {group}")));
        }
        Self::membership(raft, group, ChangeMembers::RemoveVoters(BTreeSet::from([node.0]))).await
    }

    /// Makes learner `node` a voter (done if it already is one), once it is
    /// within one AppendEntries of the leader's log: a voter far behind could
    /// not help commit, and would leave the partition one failure from a stall.
    async fn promote_learner(&self, group: GroupId, node: NodeId) -> Result<Response, Response> {
        let raft = self.group(group)?;
        if self.leader_voters(raft, group).await?.contains(&node.0) {
            return Ok(Response::Done);
        }
        let m = raft.metrics().borrow().clone();
        if !m.membership_config.membership().learner_ids().any(|l| l == node.0) {
            return Err(error(ErrorCode::InvalidCommand, format!("node {node} is no learner of group {group}")));
        }
        let last = m.last_log_index.unwrap_or(0);
        let matched = m.replication.as_ref().and_then(|r| r.get(&node.0).cloned()).flatten().map(|l| l.index);
        match matched {
            Some(i) if last.saturating_sub(i) <= self.promote_max_lag => {}
            _ => {
                return Err(error(
                    ErrorCode::Unavailable,
                    format!("learner {node} of group {group} is behind: matched {matched:?} of {last}"),
                ))
            }
        }
        Self::membership(raft, group, ChangeMembers::AddVoterIds(BTreeSet::from([node.0]))).await
    }

    /// The voters of the latest membership, asked of the leader: a follower's
    /// view may be stale, so a follower answers `NotLeader`.
    async fn leader_voters(&self, raft: &Raft, group: GroupId) -> Result<BTreeSet<u64>, Response> {
        match raft.ensure_linearizable().await {
            Ok(_) => Ok(raft.metrics().borrow().membership_config.membership().voter_ids().collect()),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(not_leader(&f, group))
            }
            Err(e) => Err(error(ErrorCode::Unavailable, e.to_string())),
        }
    }

    async fn membership(
        raft: &Raft,
        group: GroupId,
        change: ChangeMembers<u64, NodeAddr>,
    ) -> Result<Response, Response> {
        // `retain = false`: a node removed from the voters is not kept as a learner.
        match raft.change_membership(change, false).await {
            Ok(_) => Ok(Response::Done),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(not_leader(&f, group)),
            // Another change is still being committed: retry later.
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                e @ ChangeMembershipError::InProgress(_),
            ))) => Err(error(ErrorCode::Unavailable, e.to_string())),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(error(ErrorCode::InvalidCommand, e.to_string()))
            }
            Err(e) => Err(error(ErrorCode::Unavailable, e.to_string())),
        }
    }
}
