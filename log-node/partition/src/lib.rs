//! The pure partition state machine of chorus: commands in, events out.
//!
//! A log-node runs one [`Partition`] per partition replica, its state in RocksDB
//! behind the [`Kv`] trait (so memory is bounded by configuration, not by
//! traffic). Every replica calls [`Partition::apply`] for each committed
//! command, in log order, with the time stamped on the entry; it stores the
//! events that come out and answers the client with the
//! [`CommandResult`](chorus_schema::CommandResult). Replay calls
//! [`Partition::fold`] on the stored events alone. Because `apply` changes the
//! state only by folding the events it emits, both paths give equal states.
//! [`PartitionState`] is the same over an in-memory [`MemKv`], with read
//! accessors: what tests, tools and the projections' tests use; serialized
//! anywhere, it resumes to the same states and events.
//!
//! ```text
//!  Command ──apply(at_ms)──▶ validate ─▶ partition? ─▶ dedup? ─▶ decide ──▶ Vec<Event>
//!                                                        │         │            │
//!                                     CommandResult ◀────┼─────────┘     fold ◀─┘ (also replay)
//!                                                        └─ reads ─ Kv ◀─ writes ┘
//! ```
//!
//! # What it leaves out
//! IO, clocks, randomness, the storage behind [`Kv`] and Raft. Anything that needs another
//! partition's state: a chat partition cannot see whether users are registered or
//! blocked, and a user partition cannot see chats. Content, which is ciphertext.
//!
//! # Rules
//! - A command whose key is not in this partition: `WrongPartition`. A command
//!   breaking a size limit: `Invalid`.
//! - **Timeline.** Each chat has a gap-free `seq` from 1. Every chat event but
//!   `ChatOpened` and `Receipt` takes the next seq.
//! - **Direct chats.** The first `SendDirect` emits `ChatOpened` (the sorted pair;
//!   no seq) then `MessageSent`. Sending to yourself is `Invalid`. Direct and group
//!   ids never collide: see [`ChatId`](chorus_schema::ChatId).
//! - **Groups.** `CreateGroup` needs an unused group id (`AlreadyExists`,
//!   `Invalid` for a direct id); the members are deduplicated and include the
//!   creator, its first admin. Only admins add, remove, promote, demote and change
//!   info (`NotAdmin`); only members send, edit, delete, react and ack
//!   (`NotMember`). A removed member is no longer a member at all. Adding a member
//!   twice or promoting an admin is `AlreadyExists`; demoting the last admin is
//!   `Invalid`.
//! - **Admin hand-over.** When the last admin leaves (or removes themself) and
//!   members remain, the longest-standing remaining member — the smallest seq of
//!   joining, then the smallest user id — is promoted by a `MemberPromoted` event
//!   logged *before* the departure, so that at every seq a non-empty group has an
//!   admin. The command's outcome is the departure's seq.
//! - **Messages.** The state keeps a small record (sender, deleted flag, time) of
//!   every message. Targets of edits, deletes and reactions must be `MessageSent`
//!   seqs: any other seq (0, beyond the chat's last seq, a seq that was no
//!   message) is `UnknownMessage` (as `docs/error-codes.md` lists it). Inside
//!   [`EDIT_WINDOW_MS`] (48 h, by the message's time against `max(newest,
//!   at_ms)`), the target must not be deleted, and only the sender edits or
//!   deletes a message; either failure is `UnknownMessage` too. Outside the
//!   window an edit or delete is `Invalid` ("message is too old to
//!   edit/delete"); a reaction is accepted (deleted or not).
//! - **Receipts.** Cumulative per (chat, user, device) and kind; beyond the chat's
//!   last seq is `Invalid`; a `Read` receipt also advances the delivered cursor; an
//!   ack that advances nothing emits nothing and answers the current cursor.
//! - **Users.** `RegisterUser` once (`AlreadyExists`); every other command needs a
//!   registered origin user (`UnknownUser`), except `ClaimPrekey`, which needs a
//!   registered target. Devices link once (`AlreadyExists`) and up to
//!   [`MAX_DEVICES_PER_USER`].
//! - **Prekeys.** Uploaded to a linked device, with ids above every id ever
//!   uploaded for that device (so an id is never reused, even after unlinking).
//!   `ClaimPrekey` hands out the lowest-id unclaimed prekey exactly once
//!   (`NoPrekeys` when none is left).
//! - **Key directory (issue 14).** See the `keys` module: `UploadDeviceKeys`
//!   publishes one-time keys (the prekey rules above) and/or replaces the
//!   device's signed fallback key; `ClaimDeviceKeys` hands out, in one
//!   event, the lowest unclaimed one-time key of every device of the target
//!   (each at most once), or a device's fallback key when it has none.
//! - **Sessions.** `CreateSession` needs a linked device (`Invalid`) and replaces
//!   any earlier session of that device (`SessionCreated`, holding only the token's
//!   BLAKE3 hash). `RevokeSession` of a device without a session emits nothing and
//!   answers `Done`. Unlinking a device ends its session too (no extra event: a
//!   view of sessions drops the device's session on `DeviceUnlinked`).
//! - **Registration.** `RegisterDevice` does in one command what
//!   `RegisterUser`, `LinkDevice` and `CreateSession` do (so a failed
//!   registration leaves no device behind): it registers the user if new,
//!   links the device and opens its session. A user with a registration PIN
//!   (`SetRegistrationPin`, only its hash is logged) needs the same hash
//!   (`PinRequired`).
//! - **Phone locks.** `RecordOtpFailure` (the origin user is the phone's,
//!   registered or not) logs `OtpFailed`; [`OTP_FAILURES_MAX`] of them within
//!   [`OTP_FAILURE_WINDOW_MS`] lock the phone for [`OTP_LOCK_MS`]: while locked,
//!   `RecordOtpFailure` and `RegisterDevice` are `Locked`. The edges append a
//!   failure for every wrong code or PIN, so the count holds across resends
//!   and across edges.
//! - **Blocks on direct sends.** Blocks live in the blocker's user
//!   partition (`Block`, for the views) but a `SendDirect` is decided by the
//!   direct chat's partition, which cannot read another partition. So the
//!   edge also appends `SetDirectBlock { peer }` to the direct chat
//!   (`DirectBlockSet`, no seq, the chat may have no message yet), and the
//!   chat's rule refuses the blocked member's `SendDirect` (`Blocked`). The
//!   log, not the edge, enforces it: a send ordered after the block is
//!   refused on every replica. Blocking yourself, or a group chat, is `Invalid`.
//! - **Presence.** A user is online while any of their devices is: each device
//!   has at most one online connection (the edge's random id). `SetPresence
//!   {online, connection}` from a device emits `PresenceChanged` when it
//!   changes that: online with a new connection (replacing an older one of
//!   the device: reconnects race across edges), or offline of the device's
//!   current connection; an offline of another (older) connection, or a
//!   repeat, emits nothing. Each event carries the user's presence after it
//!   (`online`) and its time is their last seen. Online for a device that is
//!   not linked is `Invalid`; offline works for one unlinked meanwhile.
//! - **Blocks.** Blocking a blocked user or unblocking an unblocked one emits
//!   nothing. Answers `Done`.
//! - **Status.** `expires_at_ms = at_ms + ttl` (`ttl_ms` 0 or above 24 h: 24 h);
//!   a status id is used once per user (`AlreadyExists`). The access list and
//!   contact lists are stored sorted, deduplicated and without the poster. The
//!   audience (`StatusAudience`) reads the list: only those users, the poster's
//!   contacts (the last `ContactsUpdated`), or the contacts but those.
//!   `ViewStatus` (key: the author; origin: the viewer) of a post that does not
//!   exist, whose audience does not admit the viewer, or whose author blocks the
//!   viewer is `UnknownStatus` (not told apart); of an expired post (partition
//!   clock ≥ `expires_at_ms`) `Expired`; a repeated view or the author's own
//!   emits nothing. The first view emits `StatusViewed`. A post's record is
//!   deleted when the same user posts again a day or more after its expiry
//!   (compaction by the log's own time; afterwards viewing it is `UnknownStatus`).
//! - **Contact lookups.** `RecordContactLookup { hashes }` counts phone hashes
//!   per user and UTC day of the partition's clock: past
//!   [`CONTACT_LOOKUPS_PER_DAY`] it is `RateLimited`; 0 hashes is `Invalid`.
//! - **Dedup.** See [`DEDUP_RETENTION_MS`] and the `dedup` module: outcomes of
//!   commands that produced events, by (user, device, client_msg_id), rebuilt by
//!   `fold`, remembered for 24 h behind the newest event time. A retry after
//!   that is a new command.
//! - **Time.** The partition's clock is `newest_at_ms`, the largest `at_ms` folded
//!   so far, shared by the edit window and the dedup table; a leader clock that goes
//!   backwards never moves it back.
//!
//! # Module map
//! - `state`: [`Partition`] (`apply`, `fold`), [`PartitionState`] (in memory, accessors).
//! - [`kv`]: the [`Kv`] trait, [`MemKv`], the record layout.
//! - `chat`: chat records and the chat-partition rules ([`ChatKind`], [`Cursors`]).
//! - `user`: user records and the user-partition rules, with their limits.
//! - `dedup`: the dedup table.

mod chat;
mod consumer;
mod dedup;
mod keys;
pub mod kv;
mod state;
mod user;

pub use chat::{ChatKind, Cursors, Member, EDIT_WINDOW_MS};
pub use dedup::DEDUP_RETENTION_MS;
pub use keys::DeviceKeyRecord;
pub use kv::{Kv, MemKv};
pub use state::{Partition, PartitionState};
pub use user::{
    LookupCount, OtpGuard, StatusRecord, CONTACT_LOOKUPS_PER_DAY, DAY_MS, MAX_BLOCKED_PER_USER, MAX_DEVICES_PER_USER,
    MAX_PREKEYS_PER_DEVICE, OTP_FAILURES_MAX, OTP_FAILURE_WINDOW_MS, OTP_LOCK_MS, STATUS_TTL_MS,
};
