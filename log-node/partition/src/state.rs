//! [`PartitionState`]: decide commands in log order, fold events.

use std::collections::BTreeMap;

use chorus_schema::{
    ChatId, Command, CommandBody, CommandResult, DeviceId, Event, EventBody, Key, Outcome, PartitionId, RejectCode,
    Rejection, Seq, UserId,
};
use serde::{Deserialize, Serialize};

use crate::chat::{self, ChatKind, Chats, Cursors, Member};
use crate::dedup::Dedup;
use crate::user::{self, User};

/// What `decide` concluded about an accepted command: the events to append (maybe
/// none) and the outcome to answer.
#[derive(Debug)]
pub(crate) struct Decision {
    pub(crate) events: Vec<EventBody>,
    pub(crate) outcome: Outcome,
}

/// The state of one partition: its chats, its users and its dedup table.
///
/// Deterministic: no IO, clock or randomness (time comes in as `at_ms`), and only
/// ordered collections, so that equal histories give equal values and equal
/// serialized snapshots. Serialize it with any serde format for a snapshot;
/// human-readable formats (JSON) work too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    partition: PartitionId,
    partitions: u16,
    /// The largest `at_ms` folded so far: the partition's clock for the edit window
    /// and the dedup retention (leader clocks may go backwards; this never does).
    newest_at_ms: u64,
    chats: Chats,
    users: BTreeMap<UserId, User>,
    dedup: Dedup,
}

impl PartitionState {
    /// The empty state of partition `partition` of a cluster with `partitions` partitions.
    ///
    /// # Panics
    /// If `partition` is not below `partitions` (configuration error).
    pub fn new(partition: PartitionId, partitions: u16) -> Self {
        assert!(partition.0 < partitions, "partition {partition} out of 0..{partitions}");
        PartitionState {
            partition,
            partitions,
            newest_at_ms: 0,
            chats: Chats::default(),
            users: BTreeMap::new(),
            dedup: Dedup::default(),
        }
    }

    /// Decides `cmd` against the state, in log order, at the leader's time `at_ms`.
    ///
    /// On success the events it produces (possibly none) are folded into `self` and
    /// pushed to `out`. On rejection nothing is pushed and nothing changes. A retry
    /// (same origin user, device and client_msg_id) of a command that produced
    /// events returns the original outcome and appends nothing, for
    /// [`crate::DEDUP_RETENTION_MS`] and within the device's last
    /// [`crate::DEDUP_PER_DEVICE_MAX`] commands. Acks are not looked up in the dedup
    /// table: cumulative cursors make them idempotent already.
    ///
    /// The rules are in the crate docs.
    pub fn apply(&mut self, at_ms: u64, cmd: &Command, out: &mut Vec<Event>) -> CommandResult {
        if let Err(e) = cmd.validate() {
            return Err(Rejection::new(RejectCode::Invalid, e.to_string()));
        }
        let key = cmd.key();
        let owner = PartitionId::for_key(&key, self.partitions);
        if owner != self.partition {
            return Err(Rejection::new(
                RejectCode::WrongPartition,
                format!("{key} belongs to partition {owner}, not {}", self.partition),
            ));
        }
        let is_ack = matches!(cmd.body, CommandBody::Ack { .. });
        if !is_ack {
            if let Some(outcome) = self.dedup.get(&cmd.origin) {
                return Ok(outcome.clone());
            }
        }
        let decision = match key {
            Key::Chat(chat) => chat::decide(&self.chats, chat, self.newest_at_ms.max(at_ms), &cmd.origin, &cmd.body)?,
            Key::User(_) => user::decide(&self.users, at_ms, &cmd.origin, &cmd.body)?,
        };
        if decision.events.is_empty() {
            return Ok(decision.outcome);
        }
        out.reserve(decision.events.len());
        for body in decision.events {
            let event = Event { at_ms, origin: cmd.origin, body };
            // The key was checked above: every event of a command has the command's key.
            self.fold_owned(&event);
            out.push(event);
        }
        if cfg!(debug_assertions) && !is_ack {
            // What a retry will get is what fold derived from the events; they agree
            // by construction, and the tests keep them so. (No entry: evicted at
            // once, by a clock far behind the partition's or a full device table.)
            if let Some(derived) = self.dedup.get(&cmd.origin) {
                assert_eq!(derived, &decision.outcome, "fold derived another outcome");
            }
        }
        Ok(decision.outcome)
    }

    /// Folds one committed event into the state: what [`apply`](Self::apply) does
    /// after deciding, and all that replay does.
    ///
    /// # Panics
    /// If the event contradicts the state (a seq that is not the next one, an unknown
    /// chat or user, another partition's key): the log is corrupt or misrouted, and
    /// the replica must stop rather than diverge.
    pub fn fold(&mut self, event: &Event) {
        let key = event.key();
        assert_eq!(
            PartitionId::for_key(&key, self.partitions),
            self.partition,
            "fold: {} for {key} does not belong to partition {}",
            event.body.kind(),
            self.partition
        );
        self.fold_owned(event);
    }

    /// [`fold`](Self::fold) of an event whose key is known to be this partition's.
    fn fold_owned(&mut self, event: &Event) {
        self.newest_at_ms = self.newest_at_ms.max(event.at_ms);
        let outcome = match event.body.key() {
            Key::Chat(chat) => {
                let outcome = match &event.body {
                    EventBody::ChatOpened { .. } | EventBody::Receipt { .. } => None,
                    body => body.seq().map(|seq| Outcome::Chat { chat, seq }),
                };
                chat::fold(&mut self.chats, chat, &event.origin, event.at_ms, &event.body);
                outcome
            }
            Key::User(_) => {
                let outcome = user::outcome_of(&self.users, &event.body);
                user::fold(&mut self.users, &event.body);
                Some(outcome)
            }
        };
        // Both tables forget by the partition's clock, whatever the event's key.
        self.chats.prune(self.newest_at_ms);
        self.dedup.record(&event.origin, event.at_ms, outcome, self.newest_at_ms);
    }

    // ---- read accessors ----------------------------------------------------------

    /// This partition's id.
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// The cluster's partition count.
    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// The chats of this partition, in id order.
    pub fn chat_ids(&self) -> impl Iterator<Item = ChatId> + '_ {
        self.chats.ids()
    }

    /// Whether a chat is direct or a group.
    pub fn chat_kind(&self, chat: &ChatId) -> Option<ChatKind> {
        self.chats.get(chat).map(|c| c.kind)
    }

    /// The seq of the chat's last timeline item; `None` for a chat this partition
    /// does not know.
    pub fn last_seq(&self, chat: &ChatId) -> Option<Seq> {
        self.chats.get(chat).map(|c| c.last_seq)
    }

    /// The current members, sorted.
    pub fn members(&self, chat: &ChatId) -> Option<Vec<UserId>> {
        self.chats.get(chat).map(|c| c.members.keys().copied().collect())
    }

    /// The current admins of a group, sorted (empty for a direct chat).
    pub fn admins(&self, chat: &ChatId) -> Option<Vec<UserId>> {
        self.chats.get(chat).map(|c| c.members.iter().filter(|(_, m)| m.admin).map(|(u, _)| *u).collect())
    }

    /// A current member's standing (when they joined, whether admin).
    pub fn member(&self, chat: &ChatId, user: UserId) -> Option<Member> {
        self.chats.get(chat).and_then(|c| c.members.get(&user)).copied()
    }

    /// Whether `user` is a current member of `chat`.
    pub fn is_member(&self, chat: &ChatId, user: UserId) -> bool {
        self.chats.get(chat).is_some_and(|c| c.members.contains_key(&user))
    }

    /// A group's name and description.
    pub fn group_info(&self, chat: &ChatId) -> Option<(&str, &str)> {
        self.chats.get(chat).filter(|c| c.kind == ChatKind::Group).map(|c| (c.name.as_str(), c.description.as_str()))
    }

    /// The receipt cursors of one device in one chat (zero if it never acked).
    pub fn cursors(&self, chat: &ChatId, user: UserId, device: DeviceId) -> Option<Cursors> {
        self.chats.get(chat).map(|c| c.cursors(user, device))
    }

    /// Whether `user` is registered in this partition.
    pub fn is_registered(&self, user: UserId) -> bool {
        self.users.contains_key(&user)
    }

    /// The phone number a user registered with.
    pub fn phone(&self, user: UserId) -> Option<&str> {
        self.users.get(&user).map(|u| u.phone.as_str())
    }

    /// A user's linked devices, sorted.
    pub fn devices(&self, user: UserId) -> Option<Vec<DeviceId>> {
        self.users.get(&user).map(|u| u.devices.keys().copied().collect())
    }

    /// The number of unclaimed one-time prekeys of a linked device.
    pub fn unclaimed_prekeys(&self, user: UserId, device: DeviceId) -> Option<usize> {
        self.users.get(&user).and_then(|u| u.devices.get(&device)).map(|d| d.prekeys.len())
    }

    /// The BLAKE3 hash of the login token of a linked device's session, if it has one.
    pub fn session(&self, user: UserId, device: DeviceId) -> Option<[u8; 32]> {
        self.users.get(&user).and_then(|u| u.devices.get(&device)).and_then(|d| d.session)
    }

    /// Whether a user is online (their last presence transition).
    pub fn online(&self, user: UserId) -> Option<bool> {
        self.users.get(&user).map(|u| u.online)
    }

    /// The users `user` blocks, sorted.
    pub fn blocked(&self, user: UserId) -> Option<Vec<UserId>> {
        self.users.get(&user).map(|u| u.blocked.iter().copied().collect())
    }

    /// Entries in the dedup table.
    pub fn dedup_len(&self) -> usize {
        self.dedup.len()
    }

    /// The largest `at_ms` folded so far (0 for an empty partition).
    pub fn newest_at_ms(&self) -> u64 {
        self.newest_at_ms
    }
}
