//! [`Partition`]: decide commands in log order and fold events, over a [`Kv`];
//! [`PartitionState`]: the same over an in-memory map, with its accessors.

use chorus_schema::{
    ChatId, Command, CommandBody, CommandResult, DeviceId, Event, EventBody, Key, Outcome, PartitionId, RejectCode,
    Rejection, Seq, UserId,
};
use serde::{Deserialize, Serialize};

use crate::chat::{self, ChatKind, Cursors, Member};
use crate::consumer;
use crate::dedup;
use crate::kv::{self, Head, Kv, MemKv};
use crate::user;

/// What `decide` concluded about an accepted command: the events to append (maybe
/// none) and the outcome to answer.
#[derive(Debug)]
pub(crate) struct Decision {
    pub(crate) events: Vec<EventBody>,
    pub(crate) outcome: Outcome,
}

/// The rules of one partition. It holds no state but the partition's clock
/// (cached from the `h` record): everything else is read from and written to
/// the [`Kv`] each call is given, which must be the partition's.
///
/// Deterministic: no IO, clock or randomness (time comes in as `at_ms`), so
/// that equal histories give equal key-value states on every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    partition: PartitionId,
    partitions: u16,
    /// The largest `at_ms` folded so far: the partition's clock for the edit
    /// window and the dedup retention (leader clocks may go backwards; this
    /// never does).
    newest_at_ms: u64,
}

impl Partition {
    /// Partition `partition` of a cluster with `partitions` partitions, whose
    /// state is in `kv` (empty for a new partition).
    ///
    /// # Panics
    /// If `partition` is not below `partitions` (configuration error).
    pub fn open(kv: &impl Kv, partition: PartitionId, partitions: u16) -> Self {
        assert!(partition.0 < partitions, "partition {partition} out of 0..{partitions}");
        let head: Head = kv.get(kv::HEAD).map(|v| kv::decode(kv::HEAD, &v)).unwrap_or_default();
        Partition { partition, partitions, newest_at_ms: head.newest_at_ms }
    }

    /// Decides `cmd` against the state, in log order, at the leader's time `at_ms`.
    ///
    /// On success the events it produces (possibly none) are folded into the state
    /// and pushed to `out`. On rejection nothing is pushed and nothing changes. A
    /// retry (same origin user, device and client_msg_id) of a command that
    /// produced events returns the original outcome and appends nothing, for
    /// [`crate::DEDUP_RETENTION_MS`]. Acks are not looked up in the dedup table:
    /// cumulative cursors make them idempotent already.
    ///
    /// The rules are in the crate docs.
    pub fn apply(&mut self, kv: &mut impl Kv, at_ms: u64, cmd: &Command, out: &mut Vec<Event>) -> CommandResult {
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
        // Acks and consumer commits are idempotent by value: no dedup entry.
        let is_ack = matches!(cmd.body, CommandBody::Ack { .. } | CommandBody::CommitOffsets { .. });
        if !is_ack {
            if let Some(outcome) = dedup::get(kv, &cmd.origin, self.newest_at_ms) {
                return Ok(outcome);
            }
        }
        let decision = match key {
            Key::Chat(chat) => chat::decide(kv, chat, self.newest_at_ms.max(at_ms), &cmd.origin, &cmd.body)?,
            Key::User(_) => user::decide(kv, self.newest_at_ms.max(at_ms), &cmd.origin, &cmd.body)?,
            Key::Consumer(_) => match &cmd.body {
                CommandBody::CommitOffsets { consumer: name, offsets, reset } => {
                    consumer::decide(kv, self.partitions, name, offsets, *reset)?
                }
                // `Command::key` gives a consumer key to consumer commands only.
                _ => return Err(Rejection::new(RejectCode::Invalid, format!("{} has a consumer key", cmd.kind()))),
            },
        };
        if decision.events.is_empty() {
            return Ok(decision.outcome);
        }
        out.reserve(decision.events.len());
        for body in decision.events {
            let event = Event { at_ms, origin: cmd.origin, body };
            // The key was checked above: every event of a command has the command's key.
            self.fold_owned(kv, &event);
            out.push(event);
        }
        if cfg!(debug_assertions) && !is_ack {
            // What a retry will get is what fold derived from the events; they agree
            // by construction, and the tests keep them so. (No entry: expired at
            // once, by a clock far behind the partition's.)
            if let Some(derived) = dedup::get(kv, &cmd.origin, self.newest_at_ms) {
                assert_eq!(derived, decision.outcome, "fold derived another outcome");
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
    pub fn fold(&mut self, kv: &mut impl Kv, event: &Event) {
        let key = event.key();
        assert_eq!(
            PartitionId::for_key(&key, self.partitions),
            self.partition,
            "fold: {} for {key} does not belong to partition {}",
            event.body.kind(),
            self.partition
        );
        self.fold_owned(kv, event);
    }

    /// [`fold`](Self::fold) of an event whose key is known to be this partition's.
    fn fold_owned(&mut self, kv: &mut impl Kv, event: &Event) {
        if event.at_ms > self.newest_at_ms {
            self.newest_at_ms = event.at_ms;
            #[expect(clippy::expect_used, reason = "bincode encoding of a derived Serialize into memory cannot fail")]
            let head = bincode::serialize(&Head { newest_at_ms: self.newest_at_ms }).expect("in-memory encoding");
            kv.put(kv::HEAD, head);
        }
        let outcome = match event.body.key() {
            Key::Chat(chat) => {
                let outcome = match &event.body {
                    EventBody::ChatOpened { .. } | EventBody::Receipt { .. } => None,
                    EventBody::DirectBlockSet { .. } => Some(Outcome::Done),
                    body => body.seq().map(|seq| Outcome::Chat { chat, seq }),
                };
                chat::fold(kv, chat, &event.origin, event.at_ms, &event.body);
                outcome
            }
            Key::User(_) => {
                let outcome = user::outcome_of(kv, &event.body);
                user::fold(kv, event.at_ms, &event.body);
                Some(outcome)
            }
            Key::Consumer(_) => {
                consumer::fold(kv, &event.body);
                None
            }
        };
        if let Some(outcome) = outcome {
            dedup::record(kv, &event.origin, event.at_ms, outcome);
        }
    }

    /// This partition's id.
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// The cluster's partition count.
    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// The largest `at_ms` folded so far (0 for an empty partition).
    pub fn newest_at_ms(&self) -> u64 {
        self.newest_at_ms
    }
}

/// A [`Partition`] with its state in memory ([`MemKv`]): for tests, replay and
/// tools. Equal histories give equal values; serialize it with any serde
/// format for a snapshot (human-readable ones too).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    rules: Partition,
    kv: MemKv,
}

impl PartitionState {
    /// The empty state of partition `partition` of a cluster with `partitions` partitions.
    ///
    /// # Panics
    /// If `partition` is not below `partitions` (configuration error).
    pub fn new(partition: PartitionId, partitions: u16) -> Self {
        let kv = MemKv::default();
        PartitionState { rules: Partition::open(&kv, partition, partitions), kv }
    }

    /// See [`Partition::apply`].
    pub fn apply(&mut self, at_ms: u64, cmd: &Command, out: &mut Vec<Event>) -> CommandResult {
        self.rules.apply(&mut self.kv, at_ms, cmd, out)
    }

    /// See [`Partition::fold`].
    pub fn fold(&mut self, event: &Event) {
        self.rules.fold(&mut self.kv, event);
    }

    /// The key-value records of the state.
    pub fn kv(&self) -> &MemKv {
        &self.kv
    }

    // ---- read accessors ----------------------------------------------------------

    /// This partition's id.
    pub fn partition(&self) -> PartitionId {
        self.rules.partition
    }

    /// The cluster's partition count.
    pub fn partitions(&self) -> u16 {
        self.rules.partitions
    }

    /// The chats of this partition, in id order.
    pub fn chat_ids(&self) -> Vec<ChatId> {
        chat::ids(&self.kv)
    }

    /// Whether a chat is direct or a group.
    pub fn chat_kind(&self, chat: &ChatId) -> Option<ChatKind> {
        chat::head(&self.kv, chat).map(|h| h.kind)
    }

    /// The seq of the chat's last timeline item; `None` for a chat this partition
    /// does not know.
    pub fn last_seq(&self, chat: &ChatId) -> Option<Seq> {
        chat::head(&self.kv, chat).map(|h| h.last_seq)
    }

    /// The current members, sorted.
    pub fn members(&self, chat: &ChatId) -> Option<Vec<UserId>> {
        chat::head(&self.kv, chat)?;
        Some(chat::members(&self.kv, chat).into_iter().map(|(u, _)| u).collect())
    }

    /// The current admins of a group, sorted (empty for a direct chat).
    pub fn admins(&self, chat: &ChatId) -> Option<Vec<UserId>> {
        chat::head(&self.kv, chat)?;
        Some(chat::members(&self.kv, chat).into_iter().filter(|(_, m)| m.admin).map(|(u, _)| u).collect())
    }

    /// A current member's standing (when they joined, whether admin).
    pub fn member(&self, chat: &ChatId, user: UserId) -> Option<Member> {
        chat::member(&self.kv, chat, user)
    }

    /// Whether `user` is a current member of `chat`.
    pub fn is_member(&self, chat: &ChatId, user: UserId) -> bool {
        self.member(chat, user).is_some()
    }

    /// A group's name and description.
    pub fn group_info(&self, chat: &ChatId) -> Option<(String, String)> {
        chat::head(&self.kv, chat).filter(|h| h.kind == ChatKind::Group).map(|h| (h.name, h.description))
    }

    /// The receipt cursors of one device in one chat (zero if it never acked).
    pub fn cursors(&self, chat: &ChatId, user: UserId, device: DeviceId) -> Option<Cursors> {
        chat::head(&self.kv, chat)?;
        Some(chat::cursors(&self.kv, chat, user, device))
    }

    /// Whether `user` is registered in this partition.
    pub fn is_registered(&self, user: UserId) -> bool {
        user::head(&self.kv, user).is_some()
    }

    /// The phone number a user registered with.
    pub fn phone(&self, user: UserId) -> Option<String> {
        user::head(&self.kv, user).map(|u| u.phone)
    }

    /// A user's linked devices, sorted.
    pub fn devices(&self, user: UserId) -> Option<Vec<DeviceId>> {
        user::head(&self.kv, user).map(|u| u.devices.keys().copied().collect())
    }

    /// The number of unclaimed one-time prekeys of a linked device.
    pub fn unclaimed_prekeys(&self, user: UserId, device: DeviceId) -> Option<usize> {
        user::head(&self.kv, user).and_then(|u| u.devices.get(&device).map(|d| d.prekeys as usize))
    }

    /// The BLAKE3 hash of the login token of a linked device's session, if it has one.
    pub fn session(&self, user: UserId, device: DeviceId) -> Option<[u8; 32]> {
        user::head(&self.kv, user).and_then(|u| u.devices.get(&device).and_then(|d| d.session))
    }

    /// Whether a user is online (their last presence transition).
    pub fn online(&self, user: UserId) -> Option<bool> {
        user::head(&self.kv, user).map(|u| u.online)
    }

    /// The wrong codes/PINs of `user`'s phone in the window and its lock.
    pub fn otp_guard(&self, user: UserId) -> user::OtpGuard {
        user::otp_guard(&self.kv, user)
    }

    /// Whether `user`'s phone is locked at `at_ms` (too many wrong codes or PINs).
    pub fn phone_locked(&self, user: UserId, at_ms: u64) -> bool {
        self.otp_guard(user).locked_until_ms > at_ms
    }

    /// The registration PIN hash of `user`, if set.
    pub fn registration_pin(&self, user: UserId) -> Option<[u8; 32]> {
        user::pin_hash(&self.kv, user)
    }

    /// Whether `blocker` blocks the other member of the direct chat `chat`
    /// (what refuses that member's `SendDirect`).
    pub fn blocks_in_chat(&self, chat: &ChatId, blocker: UserId) -> bool {
        chat::blocks(&self.kv, chat, blocker)
    }

    /// The users `user` blocks, sorted.
    pub fn blocked(&self, user: UserId) -> Option<Vec<UserId>> {
        user::head(&self.kv, user)?;
        Some(user::blocked(&self.kv, user))
    }

    /// The status post `status_id` of `user` as the rules keep it (until a day
    /// after its expiry).
    pub fn status(&self, user: UserId, status_id: u64) -> Option<crate::StatusRecord> {
        user::status(&self.kv, user, status_id)
    }

    /// The contact list of `user` (sorted), as last uploaded.
    pub fn contacts(&self, user: UserId) -> Vec<UserId> {
        user::contacts(&self.kv, user)
    }

    /// Phone hashes `user` looked up on the UTC day of `at_ms`.
    pub fn contact_lookups(&self, user: UserId, at_ms: u64) -> u32 {
        user::lookups_on(&self.kv, user, at_ms)
    }

    /// The committed offsets of the named consumer `consumer`, by partition
    /// (issue 13).
    pub fn consumer_offsets(&self, consumer: &str) -> Vec<chorus_schema::PartitionOffset> {
        consumer::all(&self.kv, &chorus_schema::ConsumerKey::of(consumer))
    }

    /// Entries in the dedup table that are still remembered.
    pub fn dedup_len(&self) -> usize {
        dedup::len(&self.kv, self.rules.newest_at_ms)
    }

    /// The largest `at_ms` folded so far (0 for an empty partition).
    pub fn newest_at_ms(&self) -> u64 {
        self.rules.newest_at_ms
    }
}
