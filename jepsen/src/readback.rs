//! The final phase: read every partition back from every replica once the
//! cluster has healed and converged, and turn it into what each device would
//! have received.
//!
//! Each replica's copy of a partition is read separately and compared with the
//! others (they must be identical, event for event). Each device's final read
//! of a chat is taken from one replica, rotating over replicas so that every
//! replica serves some reader of every chat: disagreements then also show as
//! order anomalies. A device receives a chat's timeline items while its user
//! is a member, as the log's roster events say — the rule the edge applies
//! when it delivers; a removed member gets its own removal and nothing after.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chorus_log_node::LogClient;
use chorus_schema::{ChatId, DeviceId, EventBody, EventRecord, Offset, PartitionId, ReceiptKind, Seq, UserId};

use crate::checker::{Anomaly, Invariant};
use crate::error::{Error, Result};
use crate::history::{Item, Op, Outcome, Value};
use crate::recorder::Recorder;
use chorus_testkit::cluster::Cluster;

/// Every replica's events: node → partition → events in offset order.
pub type Replicas = BTreeMap<u64, BTreeMap<u16, Vec<EventRecord>>>;

/// Reads every partition from each of its voters.
///
/// # Errors
/// When a voter cannot be read within `timeout` per request.
pub async fn read_all(cluster: &Cluster, client: &LogClient, timeout: Duration) -> Result<Replicas> {
    let statuses = cluster.statuses(client, timeout).await;
    let mut out: Replicas = BTreeMap::new();
    for (id, status) in &statuses {
        let addr = cluster.node(*id).config.client_addr.clone();
        for p in status.partitions.iter().filter(|p| p.voters.contains(&status.node)) {
            let mut events = Vec::new();
            loop {
                let read = client.read_from(&addr, p.partition, Offset(events.len() as u64), 4096);
                let (batch, next) = tokio::time::timeout(timeout, read).await.map_err(|_| {
                    Error::Cluster(format!("reading partition {} from node {id} timed out", p.partition))
                })??;
                if batch.is_empty() {
                    break;
                }
                events.extend(batch);
                assert_eq!(next, Offset(events.len() as u64), "a read continues where the last one ended");
            }
            out.entry(*id).or_default().insert(p.partition.0, events);
        }
    }
    if out.len() != cluster.counted() {
        return Err(Error::Cluster(format!("only nodes {:?} answered the final read", out.keys().collect::<Vec<_>>())));
    }
    Ok(out)
}

/// Replicas of a partition that differ: they must hold the same events at the
/// same offsets. A replica that merely lags (holds a prefix of another's
/// events) is not an anomaly here; after convergence none lags.
pub fn divergence(replicas: &Replicas) -> Vec<Anomaly> {
    let mut per: BTreeMap<u16, Vec<(u64, &Vec<EventRecord>)>> = BTreeMap::new();
    for (node, parts) in replicas {
        for (p, events) in parts {
            per.entry(*p).or_default().push((*node, events));
        }
    }
    let mut out = Vec::new();
    for (p, copies) in per {
        let Some((&(first_node, first), rest)) = copies.split_first() else { continue };
        for (node, events) in rest {
            let Some(at) = first.iter().zip(events.iter()).position(|(a, b)| a != b) else { continue };
            out.push(Anomaly {
                invariant: Invariant::Order,
                chat: None,
                detail: format!(
                    "partition {p}: node {first_node} has {} events, node {node} has {}; they differ from offset {at}",
                    first.len(),
                    events.len()
                ),
            });
        }
    }
    out
}

/// One chat as a replica holds it: timeline items with the roster event that
/// each carries, in seq order.
#[derive(Debug, Default)]
struct Timeline {
    /// Members from the start (a direct chat's pair).
    founders: BTreeSet<UserId>,
    items: Vec<(Item, Option<Roster>)>,
}

#[derive(Clone, Copy, Debug)]
enum Roster {
    Created,
    Joined(UserId),
    Left(UserId),
}

fn timelines(parts: &BTreeMap<u16, Vec<EventRecord>>) -> BTreeMap<ChatId, Timeline> {
    let mut out: BTreeMap<ChatId, Timeline> = BTreeMap::new();
    for r in parts.values().flatten() {
        let Some(chat) = r.event.body.chat() else { continue };
        let t = out.entry(chat).or_default();
        if let EventBody::ChatOpened { members, .. } = &r.event.body {
            t.founders.extend(members);
        }
        let Some(seq) = r.event.body.seq() else { continue };
        let origin = r.event.origin;
        let (message, roster) = match &r.event.body {
            EventBody::MessageSent { .. } => (Some((origin.user, origin.client_msg_id)), None),
            EventBody::GroupCreated { members, .. } => {
                t.founders.extend(members);
                (None, Some(Roster::Created))
            }
            EventBody::MemberAdded { member, .. } => (None, Some(Roster::Joined(*member))),
            EventBody::MemberRemoved { member, .. } => (None, Some(Roster::Left(*member))),
            EventBody::MemberLeft { .. } => (None, Some(Roster::Left(origin.user))),
            _ => (None, None),
        };
        t.items.push((Item { seq, message }, roster));
    }
    out
}

impl Timeline {
    /// Every user who was ever a member.
    fn users(&self) -> BTreeSet<UserId> {
        let mut users = self.founders.clone();
        for (_, r) in &self.items {
            if let Some(Roster::Joined(u) | Roster::Left(u)) = r {
                users.insert(*u);
            }
        }
        users
    }

    /// What `user` receives: items while a member, its own join and leave included.
    fn received_by(&self, user: UserId) -> Vec<Item> {
        let mut member = self.founders.contains(&user);
        let mut out = Vec::new();
        for (item, roster) in &self.items {
            if let Some(Roster::Joined(u)) = roster {
                if *u == user {
                    member = true;
                }
            }
            if member {
                out.push(*item);
            }
            if let Some(Roster::Left(u)) = roster {
                if *u == user {
                    member = false;
                }
            }
        }
        out
    }
}

/// Records a final `read` of every chat by every device of every user who was
/// ever a member of it (by the log, or by the setup's `initial` members), each
/// from one replica of the chat's partition, in rotation — or, when the
/// replicas did not converge, from the replica with the most events.
pub fn record_reads(
    recorder: &Recorder,
    replicas: &Replicas,
    devices: &[(UserId, DeviceId)],
    initial: &BTreeMap<ChatId, Vec<UserId>>,
    partitions: u16,
    process: u64,
    converged: bool,
) -> usize {
    let per_node: BTreeMap<u64, BTreeMap<ChatId, Timeline>> =
        replicas.iter().map(|(n, parts)| (*n, timelines(parts))).collect();
    let mut chats: BTreeSet<ChatId> = initial.keys().copied().collect();
    for t in per_node.values() {
        chats.extend(t.keys());
    }
    let mut turn = 0usize;
    let mut reads = 0;
    for chat in chats {
        let partition = PartitionId::for_key(&chorus_schema::Key::Chat(chat), partitions).0;
        let mut holders: Vec<u64> =
            replicas.iter().filter(|(_, parts)| parts.contains_key(&partition)).map(|(n, _)| *n).collect();
        if !converged {
            let most = holders
                .iter()
                .copied()
                .max_by_key(|n| replicas.get(n).and_then(|parts| parts.get(&partition)).map_or(0, Vec::len));
            holders = most.into_iter().collect();
        }
        if holders.is_empty() {
            continue;
        }
        let empty = Timeline::default();
        let mut users: BTreeSet<UserId> = initial.get(&chat).into_iter().flatten().copied().collect();
        for n in &holders {
            users.extend(per_node.get(n).and_then(|t| t.get(&chat)).unwrap_or(&empty).users());
        }
        for user in users {
            for (_, device) in devices.iter().filter(|(u, _)| *u == user) {
                // `holders` is not empty (checked above).
                let Some(node) = holders.get(turn % holders.len()) else { continue };
                turn += 1;
                let items = per_node.get(node).and_then(|t| t.get(&chat)).unwrap_or(&empty).received_by(user);
                let index = recorder.invoke(process, Op::Read { user, device: *device, chat });
                recorder.complete(index, process, Outcome::Ok(Value::Read { items }));
                reads += 1;
            }
        }
    }
    reads
}

/// Acked receipts that the log does not hold: every acknowledged ack's cursor
/// must be at most the device's final cursor of that kind (read receipts also
/// move the delivered cursor).
pub fn lost_receipts(replicas: &Replicas, ops: &[crate::history::Operation]) -> Vec<Anomaly> {
    let Some(parts) = replicas.values().next() else { return Vec::new() };
    let mut cursors: BTreeMap<(ChatId, UserId, DeviceId, bool), Seq> = BTreeMap::new();
    for r in parts.values().flatten() {
        if let EventBody::Receipt { chat, kind, up_to_seq } = &r.event.body {
            let o = r.event.origin;
            let read = *kind == ReceiptKind::Read;
            for k in [read, false] {
                let c = cursors.entry((*chat, o.user, o.device, k)).or_default();
                *c = (*c).max(*up_to_seq);
            }
        }
    }
    let mut out = Vec::new();
    for op in ops {
        if let (Op::Ack { chat, user, device, kind, .. }, Outcome::Ok(Value::Receipt { up_to_seq })) =
            (&op.op, &op.outcome)
        {
            let read = *kind == ReceiptKind::Read;
            let have = cursors.get(&(*chat, *user, *device, read)).copied().unwrap_or_default();
            if have < *up_to_seq {
                out.push(Anomaly {
                    invariant: Invariant::Receipts,
                    chat: Some(*chat),
                    detail: format!(
                        "{user}/{device} was acked {kind:?} up to {up_to_seq}, but the log's cursor is {have}"
                    ),
                });
            }
        }
    }
    out
}
