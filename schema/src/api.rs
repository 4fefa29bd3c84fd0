//! Log-node client API frames: one [`Request`] per QUIC stream, one or more
//! [`Response`]s back.
//!
//! Commands and event records travel as complete nested buffers, so that a node
//! forwards a command and serves a stored record without re-encoding it. Decoding
//! a frame bounds the count and size of the nested buffers but does not decode
//! them: decode each with [`crate::Command::decode`] or
//! [`crate::EventRecord::decode`] when you need its content.

use serde::{Deserialize, Serialize};

use crate::codec::{self, ident, Builder};
pub use crate::codes::ErrorCode;
use crate::consumer::PartitionOffset;
use crate::error::check_len;
use crate::fb;
use crate::ids::{GroupId, LogIndex, NodeId, Offset, PartitionId};
use crate::limits::*;
use crate::outcome::{self, CommandResult};
use crate::{Error, Result};

/// A client request to a log-node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Append commands, in order, all of partitions hosted by one Raft group.
    Append { commands: Vec<AppendCommand> },
    /// Read up to `limit` committed events of a partition from offset `from`.
    Read { partition: PartitionId, from: Offset, limit: u32 },
    /// Stream committed events of a partition from offset `from`, then as they commit.
    Tail { partition: PartitionId, from: Offset },
    /// The node's view of its partitions.
    Status,
    /// Add `node` as a learner of `group`.
    AddLearner { group: GroupId, node: NodeId, raft_addr: String, client_addr: String },
    /// Make `voters` the voting members of `group`.
    ChangeVoters { group: GroupId, voters: Vec<NodeId> },
    /// Remove `node` from the voters of `group`, whatever the others are
    /// (the leader computes the new set). Done if it is not a voter.
    RemoveVoter { group: GroupId, node: NodeId },
    /// Make learner `node` a voter of `group`. Done if it already is one.
    PromoteLearner { group: GroupId, node: NodeId },
    // ---- named consumers (issue 13) ----
    /// Commit the offsets of the named consumer `consumer` (with no
    /// offsets: read them). The node appends a
    /// [`crate::CommandBody::CommitOffsets`] to the consumer's partition and
    /// answers [`Response::Appended`] with one result, an
    /// [`crate::Outcome::Offsets`] (the committed offsets once applied), or a
    /// rejection. Send it to the leader of the consumer's group.
    CommitOffsets { consumer: String, offsets: Vec<PartitionOffset>, reset: bool },
}

/// One command of an [`Request::Append`]: an encoded [`crate::Command`] and the
/// partition its key maps to. The sender computes the partition (so that the
/// node routes without decoding); the partition's state machine refuses a
/// command whose key is not its own (`WrongPartition`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendCommand {
    pub partition: PartitionId,
    pub bytes: Vec<u8>,
}

/// A log-node's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// One result per appended command, in order.
    Appended {
        results: Vec<CommandResult>,
    },
    /// Each element is an encoded [`crate::EventRecord`]; `next` is the offset to read from next.
    Events {
        partition: PartitionId,
        events: Vec<Vec<u8>>,
        next: Offset,
    },
    Status(NodeStatus),
    Done,
    Error {
        code: ErrorCode,
        message: String,
        leader: Option<LeaderHint>,
    },
}

/// Where to retry a request that reached a follower.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderHint {
    pub node: NodeId,
    pub client_addr: String,
}

/// A node's view of the partitions and Raft groups it hosts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: NodeId,
    pub partitions: Vec<PartitionStatus>,
    pub groups: Vec<GroupStatus>,
    /// Every node in the memberships of this node's groups, with its
    /// addresses (empty from a node older than this field).
    pub members: Vec<MemberAddr>,
}

/// A node of the cluster and where to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddr {
    pub node: NodeId,
    pub client_addr: String,
    pub raft_addr: String,
}

/// One partition as seen by one node. Leader, term, log indexes, voters and
/// replicas are those of the Raft group that hosts the partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStatus {
    pub partition: PartitionId,
    pub group: GroupId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: LogIndex,
    pub last_applied: LogIndex,
    /// The offset the next committed event will get.
    pub next_offset: Offset,
    pub voters: Vec<NodeId>,
    /// Replication progress, known on the leader only.
    pub replicas: Vec<ReplicaStatus>,
}

/// One Raft group as seen by one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    pub group: GroupId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: LogIndex,
    pub last_applied: LogIndex,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Replication progress, known on the leader only.
    pub replicas: Vec<ReplicaStatus>,
    /// The partitions the group hosts.
    pub partitions: Vec<PartitionId>,
}

/// Replication progress of one replica, as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub node: NodeId,
    pub matched: Option<LogIndex>,
    pub lag: Option<u64>,
}

impl Request {
    /// Checks count and size limits.
    ///
    /// # Errors
    /// [`Error::TooLarge`] naming the first field over its limit.
    pub fn validate(&self) -> Result<()> {
        match self {
            Request::Append { commands } => {
                check_len("append commands", commands.len(), MAX_COMMANDS_PER_APPEND)?;
                commands.iter().try_for_each(|c| check_len("command", c.bytes.len(), MAX_COMMAND_BYTES))
            }
            Request::Read { .. }
            | Request::Tail { .. }
            | Request::Status
            | Request::RemoveVoter { .. }
            | Request::PromoteLearner { .. } => Ok(()),
            Request::AddLearner { raft_addr, client_addr, .. } => {
                check_len("raft address", raft_addr.len(), MAX_ADDR_BYTES)?;
                check_len("client address", client_addr.len(), MAX_ADDR_BYTES)
            }
            Request::ChangeVoters { voters, .. } => check_len("voters", voters.len(), MAX_VOTERS),
            Request::CommitOffsets { consumer, offsets, .. } => {
                crate::consumer::validate_name(consumer)?;
                crate::consumer::validate_offsets(offsets)
            }
        }
    }

    /// Encodes as a flatbuffer with file identifier `CREQ`. Does not validate.
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = Builder::with_capacity(256);
        let (body_type, body) = match self {
            Request::Append { commands } => {
                let items: Vec<_> = commands
                    .iter()
                    .map(|c| {
                        let bytes = fbb.create_vector(&c.bytes);
                        fb::CommandBytes::create(
                            &mut fbb,
                            &fb::CommandBytesArgs { bytes: Some(bytes), partition: c.partition.0 },
                        )
                    })
                    .collect();
                let commands = fbb.create_vector(&items);
                let t = fb::AppendRequest::create(&mut fbb, &fb::AppendRequestArgs { commands: Some(commands) });
                (fb::RequestBody::AppendRequest, t.as_union_value())
            }
            Request::Read { partition, from, limit } => {
                let t = fb::ReadRequest::create(
                    &mut fbb,
                    &fb::ReadRequestArgs { partition: partition.0, from: from.0, limit: *limit },
                );
                (fb::RequestBody::ReadRequest, t.as_union_value())
            }
            Request::Tail { partition, from } => {
                let t =
                    fb::TailRequest::create(&mut fbb, &fb::TailRequestArgs { partition: partition.0, from: from.0 });
                (fb::RequestBody::TailRequest, t.as_union_value())
            }
            Request::Status => {
                let t = fb::StatusRequest::create(&mut fbb, &fb::StatusRequestArgs {});
                (fb::RequestBody::StatusRequest, t.as_union_value())
            }
            Request::AddLearner { group, node, raft_addr, client_addr } => {
                let raft_addr = fbb.create_string(raft_addr);
                let client_addr = fbb.create_string(client_addr);
                let t = fb::AddLearnerRequest::create(
                    &mut fbb,
                    &fb::AddLearnerRequestArgs {
                        group: group.0,
                        node: node.0,
                        raft_addr: Some(raft_addr),
                        client_addr: Some(client_addr),
                    },
                );
                (fb::RequestBody::AddLearnerRequest, t.as_union_value())
            }
            Request::ChangeVoters { group, voters } => {
                let voters = fbb.create_vector_from_iter(voters.iter().map(|n| n.0));
                let t = fb::ChangeVotersRequest::create(
                    &mut fbb,
                    &fb::ChangeVotersRequestArgs { group: group.0, voters: Some(voters) },
                );
                (fb::RequestBody::ChangeVotersRequest, t.as_union_value())
            }
            Request::RemoveVoter { group, node } => {
                let t = fb::RemoveVoterRequest::create(
                    &mut fbb,
                    &fb::RemoveVoterRequestArgs { group: group.0, node: node.0 },
                );
                (fb::RequestBody::RemoveVoterRequest, t.as_union_value())
            }
            Request::PromoteLearner { group, node } => {
                let t = fb::PromoteLearnerRequest::create(
                    &mut fbb,
                    &fb::PromoteLearnerRequestArgs { group: group.0, node: node.0 },
                );
                (fb::RequestBody::PromoteLearnerRequest, t.as_union_value())
            }
            Request::CommitOffsets { consumer, offsets, reset } => {
                let consumer = fbb.create_string(consumer);
                let offsets = fbb.create_vector(&crate::consumer::offsets_fb(offsets));
                let t = fb::CommitOffsetsRequest::create(
                    &mut fbb,
                    &fb::CommitOffsetsRequestArgs { consumer: Some(consumer), offsets: Some(offsets), reset: *reset },
                );
                (fb::RequestBody::CommitOffsetsRequest, t.as_union_value())
            }
        };
        let root = fb::Request::create(&mut fbb, &fb::RequestArgs { body_type, body: Some(body) });
        codec::finish(fbb, root, ident::REQUEST)
    }

    /// Verifies and decodes a frame made by [`Request::encode`], then validates it.
    /// Nested commands are bounded but not decoded (see the module docs).
    ///
    /// # Errors
    /// [`Error::TooLarge`] above [`MAX_FRAME_BYTES`] or a limit;
    /// [`Error::Malformed`] if the verifier refuses it or it holds an unknown variant.
    pub fn decode(buf: &[u8]) -> Result<Request> {
        let r =
            codec::root::<fb::Request>(buf, "request", ident::REQUEST, MAX_FRAME_BYTES, MAX_COMMANDS_PER_APPEND + 16)?;
        let tag = r.body_type();
        let bad = || codec::bad_union("request body", tag.0);
        let req = match tag {
            fb::RequestBody::AppendRequest => {
                let b = r.body_as_append_request().ok_or_else(bad)?;
                let commands = b.commands();
                check_len("append commands", commands.len(), MAX_COMMANDS_PER_APPEND)?;
                let mut out = Vec::with_capacity(commands.len());
                for c in commands.iter() {
                    let bytes = c.bytes().bytes();
                    check_len("command", bytes.len(), MAX_COMMAND_BYTES)?;
                    out.push(AppendCommand { partition: PartitionId(c.partition()), bytes: bytes.to_vec() });
                }
                Request::Append { commands: out }
            }
            fb::RequestBody::ReadRequest => {
                let b = r.body_as_read_request().ok_or_else(bad)?;
                Request::Read { partition: PartitionId(b.partition()), from: Offset(b.from()), limit: b.limit() }
            }
            fb::RequestBody::TailRequest => {
                let b = r.body_as_tail_request().ok_or_else(bad)?;
                Request::Tail { partition: PartitionId(b.partition()), from: Offset(b.from()) }
            }
            fb::RequestBody::StatusRequest => {
                r.body_as_status_request().ok_or_else(bad)?;
                Request::Status
            }
            fb::RequestBody::AddLearnerRequest => {
                let b = r.body_as_add_learner_request().ok_or_else(bad)?;
                Request::AddLearner {
                    group: GroupId(b.group()),
                    node: NodeId(b.node()),
                    raft_addr: b.raft_addr().to_owned(),
                    client_addr: b.client_addr().to_owned(),
                }
            }
            fb::RequestBody::ChangeVotersRequest => {
                let b = r.body_as_change_voters_request().ok_or_else(bad)?;
                check_len("voters", b.voters().len(), MAX_VOTERS)?;
                Request::ChangeVoters { group: GroupId(b.group()), voters: b.voters().iter().map(NodeId).collect() }
            }
            fb::RequestBody::RemoveVoterRequest => {
                let b = r.body_as_remove_voter_request().ok_or_else(bad)?;
                Request::RemoveVoter { group: GroupId(b.group()), node: NodeId(b.node()) }
            }
            fb::RequestBody::PromoteLearnerRequest => {
                let b = r.body_as_promote_learner_request().ok_or_else(bad)?;
                Request::PromoteLearner { group: GroupId(b.group()), node: NodeId(b.node()) }
            }
            fb::RequestBody::CommitOffsetsRequest => {
                let b = r.body_as_commit_offsets_request().ok_or_else(bad)?;
                Request::CommitOffsets {
                    consumer: b.consumer().to_owned(),
                    offsets: crate::consumer::offsets_of(b.offsets()),
                    reset: b.reset(),
                }
            }
            _ => return Err(bad()),
        };
        req.validate()?;
        Ok(req)
    }
}

impl Response {
    /// Checks count and size limits.
    ///
    /// # Errors
    /// [`Error::TooLarge`] naming the first field over its limit.
    pub fn validate(&self) -> Result<()> {
        match self {
            Response::Appended { results, .. } => {
                check_len("append results", results.len(), MAX_COMMANDS_PER_APPEND)?;
                results.iter().try_for_each(outcome::validate_result)
            }
            Response::Events { events, .. } => {
                check_len("events", events.len(), MAX_EVENTS_PER_RESPONSE)?;
                events.iter().try_for_each(|e| check_len("event record", e.len(), MAX_EVENT_BYTES))
            }
            Response::Status(s) => {
                check_len("status partitions", s.partitions.len(), MAX_STATUS_PARTITIONS)?;
                check_len("status groups", s.groups.len(), MAX_STATUS_PARTITIONS)?;
                s.partitions.iter().try_for_each(|p| {
                    check_len("voters", p.voters.len(), MAX_VOTERS)?;
                    check_len("replicas", p.replicas.len(), MAX_REPLICAS)
                })?;
                s.groups.iter().try_for_each(|g| {
                    check_len("voters", g.voters.len(), MAX_VOTERS)?;
                    check_len("learners", g.learners.len(), MAX_VOTERS)?;
                    check_len("replicas", g.replicas.len(), MAX_REPLICAS)?;
                    check_len("group partitions", g.partitions.len(), MAX_STATUS_PARTITIONS)
                })?;
                check_len("status members", s.members.len(), MAX_STATUS_PARTITIONS)?;
                s.members.iter().try_for_each(|m| {
                    check_len("client address", m.client_addr.len(), MAX_ADDR_BYTES)?;
                    check_len("raft address", m.raft_addr.len(), MAX_ADDR_BYTES)
                })
            }
            Response::Done => Ok(()),
            Response::Error { message, leader, .. } => {
                check_len("error message", message.len(), MAX_MESSAGE_BYTES)?;
                leader.as_ref().map_or(Ok(()), |l| check_len("client address", l.client_addr.len(), MAX_ADDR_BYTES))
            }
        }
    }

    /// Encodes as a flatbuffer with file identifier `CRSP`. Does not validate.
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = Builder::with_capacity(256);
        let (body_type, body) = match self {
            Response::Appended { results } => {
                let items: Vec<_> = results.iter().map(|r| outcome::build_result(&mut fbb, r)).collect();
                let results = fbb.create_vector(&items);
                let t = fb::AppendedResponse::create(&mut fbb, &fb::AppendedResponseArgs { results: Some(results) });
                (fb::ResponseBody::AppendedResponse, t.as_union_value())
            }
            Response::Events { partition, events, next } => {
                let items: Vec<_> = events
                    .iter()
                    .map(|e| {
                        let bytes = fbb.create_vector(e);
                        fb::EventRecordBytes::create(&mut fbb, &fb::EventRecordBytesArgs { bytes: Some(bytes) })
                    })
                    .collect();
                let events = fbb.create_vector(&items);
                let t = fb::EventsResponse::create(
                    &mut fbb,
                    &fb::EventsResponseArgs { partition: partition.0, events: Some(events), next: next.0 },
                );
                (fb::ResponseBody::EventsResponse, t.as_union_value())
            }
            Response::Status(status) => {
                let parts: Vec<_> = status
                    .partitions
                    .iter()
                    .map(|p| {
                        let voters = fbb.create_vector_from_iter(p.voters.iter().map(|n| n.0));
                        let replicas = build_replicas(&mut fbb, &p.replicas);
                        fb::PartitionStatus::create(
                            &mut fbb,
                            &fb::PartitionStatusArgs {
                                partition: p.partition.0,
                                leader: p.leader.map(|n| n.0),
                                term: p.term,
                                last_log_index: p.last_log_index.0,
                                last_applied: p.last_applied.0,
                                next_offset: p.next_offset.0,
                                voters: Some(voters),
                                replicas: Some(replicas),
                                group: p.group.0,
                            },
                        )
                    })
                    .collect();
                let partitions = fbb.create_vector(&parts);
                let groups: Vec<_> = status
                    .groups
                    .iter()
                    .map(|g| {
                        let voters = fbb.create_vector_from_iter(g.voters.iter().map(|n| n.0));
                        let learners = fbb.create_vector_from_iter(g.learners.iter().map(|n| n.0));
                        let replicas = build_replicas(&mut fbb, &g.replicas);
                        let partitions = fbb.create_vector_from_iter(g.partitions.iter().map(|p| p.0));
                        fb::GroupStatus::create(
                            &mut fbb,
                            &fb::GroupStatusArgs {
                                group: g.group.0,
                                leader: g.leader.map(|n| n.0),
                                term: g.term,
                                last_log_index: g.last_log_index.0,
                                last_applied: g.last_applied.0,
                                voters: Some(voters),
                                learners: Some(learners),
                                replicas: Some(replicas),
                                partitions: Some(partitions),
                            },
                        )
                    })
                    .collect();
                let groups = fbb.create_vector(&groups);
                let members: Vec<_> = status
                    .members
                    .iter()
                    .map(|m| {
                        let client_addr = fbb.create_string(&m.client_addr);
                        let raft_addr = fbb.create_string(&m.raft_addr);
                        fb::MemberAddr::create(
                            &mut fbb,
                            &fb::MemberAddrArgs {
                                node: m.node.0,
                                client_addr: Some(client_addr),
                                raft_addr: Some(raft_addr),
                            },
                        )
                    })
                    .collect();
                let members = fbb.create_vector(&members);
                let t = fb::StatusResponse::create(
                    &mut fbb,
                    &fb::StatusResponseArgs {
                        node: status.node.0,
                        partitions: Some(partitions),
                        groups: Some(groups),
                        members: Some(members),
                    },
                );
                (fb::ResponseBody::StatusResponse, t.as_union_value())
            }
            Response::Done => {
                let t = fb::DoneResponse::create(&mut fbb, &fb::DoneResponseArgs {});
                (fb::ResponseBody::DoneResponse, t.as_union_value())
            }
            Response::Error { code, message, leader } => {
                let message = fbb.create_string(message);
                let leader = leader.as_ref().map(|l| {
                    let client_addr = fbb.create_string(&l.client_addr);
                    fb::LeaderHint::create(
                        &mut fbb,
                        &fb::LeaderHintArgs { node: l.node.0, client_addr: Some(client_addr) },
                    )
                });
                let t = fb::ErrorResponse::create(
                    &mut fbb,
                    &fb::ErrorResponseArgs { code: error_code_fb(*code), message: Some(message), leader },
                );
                (fb::ResponseBody::ErrorResponse, t.as_union_value())
            }
        };
        let root = fb::Response::create(&mut fbb, &fb::ResponseArgs { body_type, body: Some(body) });
        codec::finish(fbb, root, ident::RESPONSE)
    }

    /// Verifies and decodes a frame made by [`Response::encode`], then validates it.
    /// Nested event records are bounded but not decoded (see the module docs).
    ///
    /// # Errors
    /// [`Error::TooLarge`] above [`MAX_FRAME_BYTES`] or a limit;
    /// [`Error::Malformed`] if the verifier refuses it or it holds an unknown variant.
    pub fn decode(buf: &[u8]) -> Result<Response> {
        let r = codec::root::<fb::Response>(buf, "response", ident::RESPONSE, MAX_FRAME_BYTES, MAX_FRAME_BYTES / 8)?;
        let tag = r.body_type();
        let bad = || codec::bad_union("response body", tag.0);
        let resp = match tag {
            fb::ResponseBody::AppendedResponse => {
                let b = r.body_as_appended_response().ok_or_else(bad)?;
                check_len("append results", b.results().len(), MAX_COMMANDS_PER_APPEND)?;
                let results = b.results().iter().map(outcome::read_result).collect::<Result<Vec<_>>>()?;
                Response::Appended { results }
            }
            fb::ResponseBody::EventsResponse => {
                let b = r.body_as_events_response().ok_or_else(bad)?;
                check_len("events", b.events().len(), MAX_EVENTS_PER_RESPONSE)?;
                let events = b.events().iter().map(|e| e.bytes().bytes().to_vec()).collect();
                Response::Events { partition: PartitionId(b.partition()), events, next: Offset(b.next()) }
            }
            fb::ResponseBody::StatusResponse => {
                let b = r.body_as_status_response().ok_or_else(bad)?;
                check_len("status partitions", b.partitions().len(), MAX_STATUS_PARTITIONS)?;
                let partitions = b
                    .partitions()
                    .iter()
                    .map(|p| PartitionStatus {
                        partition: PartitionId(p.partition()),
                        leader: p.leader().map(NodeId),
                        term: p.term(),
                        last_log_index: LogIndex(p.last_log_index()),
                        last_applied: LogIndex(p.last_applied()),
                        next_offset: Offset(p.next_offset()),
                        voters: p.voters().iter().map(NodeId).collect(),
                        replicas: read_replicas(p.replicas()),
                        group: GroupId(p.group()),
                    })
                    .collect();
                let groups = b.groups().map(|g| g.iter()).into_iter().flatten();
                let groups = groups
                    .map(|g| GroupStatus {
                        group: GroupId(g.group()),
                        leader: g.leader().map(NodeId),
                        term: g.term(),
                        last_log_index: LogIndex(g.last_log_index()),
                        last_applied: LogIndex(g.last_applied()),
                        voters: g.voters().iter().map(NodeId).collect(),
                        learners: g.learners().iter().map(NodeId).collect(),
                        replicas: read_replicas(g.replicas()),
                        partitions: g.partitions().iter().map(PartitionId).collect(),
                    })
                    .collect();
                check_len("status members", b.members().map_or(0, |m| m.len()), MAX_STATUS_PARTITIONS)?;
                let members = b.members().map(|m| m.iter()).into_iter().flatten();
                let members = members
                    .map(|m| MemberAddr {
                        node: NodeId(m.node()),
                        client_addr: m.client_addr().to_owned(),
                        raft_addr: m.raft_addr().to_owned(),
                    })
                    .collect();
                Response::Status(NodeStatus { node: NodeId(b.node()), partitions, groups, members })
            }
            fb::ResponseBody::DoneResponse => {
                r.body_as_done_response().ok_or_else(bad)?;
                Response::Done
            }
            fb::ResponseBody::ErrorResponse => {
                let b = r.body_as_error_response().ok_or_else(bad)?;
                Response::Error {
                    code: error_code(b.code())?,
                    message: b.message().to_owned(),
                    leader: b
                        .leader()
                        .map(|l| LeaderHint { node: NodeId(l.node()), client_addr: l.client_addr().to_owned() }),
                }
            }
            _ => return Err(bad()),
        };
        resp.validate()?;
        Ok(resp)
    }
}

fn build_replicas<'b>(
    fbb: &mut Builder<'b>,
    replicas: &[ReplicaStatus],
) -> flatbuffers::WIPOffset<flatbuffers::Vector<'b, flatbuffers::ForwardsUOffset<fb::ReplicaStatus<'b>>>> {
    let items: Vec<_> = replicas
        .iter()
        .map(|r| {
            fb::ReplicaStatus::create(
                fbb,
                &fb::ReplicaStatusArgs { node: r.node.0, matched: r.matched.map(|m| m.0), lag: r.lag },
            )
        })
        .collect();
    fbb.create_vector(&items)
}

fn read_replicas<'a>(
    v: flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<fb::ReplicaStatus<'a>>>,
) -> Vec<ReplicaStatus> {
    v.iter()
        .map(|r| ReplicaStatus { node: NodeId(r.node()), matched: r.matched().map(LogIndex), lag: r.lag() })
        .collect()
}

fn error_code_fb(c: ErrorCode) -> fb::ErrorCode {
    fb::ErrorCode(c.value())
}

fn error_code(c: fb::ErrorCode) -> Result<ErrorCode> {
    ErrorCode::from_value(c.0).ok_or_else(|| Error::malformed("error code", format!("unknown value {}", c.0)))
}
