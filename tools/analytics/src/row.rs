//! [`Row`]: one event as an analyst sees it, and [`RowBuilder`], the fold
//! that makes rows (it keeps group membership so member counts are right).

use std::collections::{HashMap, HashSet};

use chorus_schema::{ChatId, Event, EventBody, EventRecord, Offset, PartitionId, ReceiptKind, UserId};
use serde::Serialize;

use crate::pseudonym::Pseudonymizer;

/// The `kind` of a record that did not decode (an event kind newer than this
/// build, or a damaged record): only `partition` and `offset` are set.
pub const UNKNOWN_KIND: &str = "unknown";

/// One event of the log as metadata: the columns of an export and of
/// `chorus tail --json`, one flat row per event. A column that does not apply
/// to the event's kind is `None` (JSON `null`, Parquet null).
///
/// Never in a row: ciphertext or plaintext, keys (identity keys, prekeys),
/// token and PIN hashes, and the text users write (profile names and about
/// text, device names, group names and descriptions, reactions): those are
/// content, not metadata. Media references appear only as their size.
///
/// With a [`Pseudonymizer`], every user id (`sender_user`, `user`,
/// `other_user`), device (`sender_device`, `device`), chat id and phone number
/// is replaced by its keyed pseudonym.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Row {
    pub partition: u16,
    /// Position among the partition's events: gap-free from 0.
    pub offset: u64,
    /// The Raft log index of the entry that produced the event.
    pub log_index: Option<u64>,
    /// Commit time in ms since the Unix epoch: the deciding leader's wall
    /// clock, so not monotone across a leader change.
    pub at_ms: Option<u64>,
    /// The event's kind in snake_case (`message_sent`, `receipt`, …), or
    /// [`UNKNOWN_KIND`].
    pub kind: &'static str,
    /// The chat of a chat event: 32 hex characters (a pseudonym of the same
    /// length when pseudonymized).
    pub chat: Option<ChatKey>,
    /// Position in the chat's timeline (every chat event except
    /// `chat_opened`, `receipt` and `direct_block_set`).
    pub seq: Option<u64>,
    /// The timeline position an edit, delete or reaction refers to.
    pub target_seq: Option<u64>,
    /// The user whose command produced the event (a message's sender).
    pub sender_user: Option<u64>,
    /// That user's device. Raw: the device number; pseudonymized: a pseudonym
    /// of the (user, device) pair.
    pub sender_device: Option<u64>,
    /// The user a user-partition event is about.
    pub user: Option<u64>,
    /// The device a user-partition event is about (linked, unlinked, online,
    /// session, prekeys), as `sender_device`.
    pub device: Option<u64>,
    /// The other user an event names: a group edit's member, a block's
    /// target, a prekey's claimer, a status's viewer.
    pub other_user: Option<u64>,
    /// Chat events: members of the chat after the event (2 for a direct
    /// chat; `None` for a group whose creation the builder did not see).
    pub members: Option<u32>,
    /// Messages, edits, deletes and reactions: the members but the sender.
    pub recipients: Option<u32>,
    /// Bytes of the ciphertext of `message_sent`, `message_edited` and
    /// `status_posted` (never the bytes themselves).
    pub ciphertext_bytes: Option<u32>,
    /// Bytes of the attached media object (a message's, a status's, a group
    /// icon or an avatar), if any.
    pub media_bytes: Option<u64>,
    /// `delivered` or `read`, for a receipt.
    pub receipt: Option<&'static str>,
    /// A receipt's cumulative position.
    pub up_to_seq: Option<u64>,
    /// Group edits: `create`, `add`, `remove`, `promote`, `demote`,
    /// `change_info`, `leave`.
    pub group_op: Option<&'static str>,
    /// Presence: the user's presence after the change (online while any
    /// device is connected).
    pub online: Option<bool>,
    /// Presence: whether the change was `device` coming online.
    pub device_online: Option<bool>,
    /// Block events: blocked (true) or unblocked.
    pub blocked: Option<bool>,
    /// How many items a list event carried: members of a new chat, prekeys
    /// uploaded, contacts, phone hashes looked up, a status's audience list,
    /// the partitions whose offsets a named consumer's commit moved.
    pub items: Option<u32>,
    pub status_id: Option<u64>,
    pub expires_at_ms: Option<u64>,
    /// `user_registered` only: the phone number, or its pseudonym.
    pub phone: Option<String>,
}

impl Row {
    /// The row of a record that did not decode: only its place is known.
    pub fn unknown(partition: PartitionId, offset: Offset) -> Row {
        Row { partition: partition.0, offset: offset.0, kind: UNKNOWN_KIND, ..Row::default() }
    }
}

/// The snake_case name of an event's kind: the `kind` column.
pub fn kind_name(body: &EventBody) -> &'static str {
    use EventBody::*;
    match body {
        ChatOpened { .. } => "chat_opened",
        MessageSent { .. } => "message_sent",
        MessageEdited { .. } => "message_edited",
        MessageDeleted { .. } => "message_deleted",
        ReactionSet { .. } => "reaction_set",
        Receipt { .. } => "receipt",
        GroupCreated { .. } => "group_created",
        MemberAdded { .. } => "member_added",
        MemberRemoved { .. } => "member_removed",
        MemberPromoted { .. } => "member_promoted",
        MemberDemoted { .. } => "member_demoted",
        GroupInfoChanged { .. } => "group_info_changed",
        MemberLeft { .. } => "member_left",
        UserRegistered { .. } => "user_registered",
        DeviceLinked { .. } => "device_linked",
        DeviceUnlinked { .. } => "device_unlinked",
        ProfileUpdated { .. } => "profile_updated",
        PrivacyChanged { .. } => "privacy_changed",
        PresenceChanged { .. } => "presence_changed",
        PrekeysUploaded { .. } => "prekeys_uploaded",
        PrekeyClaimed { .. } => "prekey_claimed",
        StatusPosted { .. } => "status_posted",
        ContactsUpdated { .. } => "contacts_updated",
        UserBlocked { .. } => "user_blocked",
        UserUnblocked { .. } => "user_unblocked",
        SessionCreated { .. } => "session_created",
        SessionRevoked { .. } => "session_revoked",
        OtpFailed { .. } => "otp_failed",
        RegistrationPinSet { .. } => "registration_pin_set",
        DirectBlockSet { .. } => "direct_block_set",
        StatusViewed { .. } => "status_viewed",
        ContactLookupRecorded { .. } => "contact_lookup_recorded",
        OffsetsCommitted { .. } => "offsets_committed",
        PushTokenSet { .. } => "push_token_set",
        ReportFiled { .. } => "report_filed",
        // ---- E2EE (issue 14) ----
        DeviceKeysUploaded { .. } => "device_keys_uploaded",
        DeviceKeysClaimed { .. } => "device_keys_claimed",
        MediaUploaded { .. } => "media_uploaded",
    }
}

/// The `chat` column: a chat id, or its pseudonym (16 bytes either way),
/// written as 32 lowercase hex characters (in JSON, Parquet and `Display`).
/// A copyable value, so a row costs no allocation for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChatKey(pub [u8; 16]);

impl ChatKey {
    /// The 32 hex characters, on the stack.
    pub fn hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        // 16 bytes always fit 32 characters.
        let _ = hex::encode_to_slice(self.0, &mut out);
        out
    }
}

impl std::fmt::Display for ChatKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = self.hex();
        f.write_str(std::str::from_utf8(&h).map_err(|_| std::fmt::Error)?)
    }
}

impl Serialize for ChatKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let h = self.hex();
        s.serialize_str(std::str::from_utf8(&h).map_err(serde::ser::Error::custom)?)
    }
}

/// Lowercase hex of `bytes`, as `ChatId`'s `Display` but without the
/// formatter's per-byte cost (one row per event makes this hot).
pub(crate) fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Makes [`Row`]s from records, in log order per partition.
///
/// It folds group membership (`group_created`, `member_added`,
/// `member_removed`, `member_left`) so that `members` and `recipients` are the
/// counts at each event. A direct chat always has two members and needs no
/// state. The state is per chat, and a chat lives in one partition, so one
/// builder may take several partitions' records interleaved, each partition's
/// in offset order.
///
/// To export a range that starts after offset 0, feed the records before it
/// to [`RowBuilder::observe`] first (warm-up): otherwise a group created
/// before the range has `members: None`. Warm-up costs a read and decode of
/// the partition's earlier records, but no row building or writing.
#[derive(Debug, Default)]
pub struct RowBuilder {
    groups: HashMap<ChatId, HashSet<UserId>>,
    pseudonymizer: Option<Pseudonymizer>,
}

impl RowBuilder {
    /// A builder with no state; ids pseudonymized when `pseudonymizer` is given.
    pub fn new(pseudonymizer: Option<Pseudonymizer>) -> RowBuilder {
        RowBuilder { groups: HashMap::new(), pseudonymizer }
    }

    /// Folds `record` into the membership state without making a row.
    pub fn observe(&mut self, record: &EventRecord) {
        self.fold(&record.event);
    }

    /// Folds `record`, then returns its row.
    pub fn row(&mut self, record: &EventRecord) -> Row {
        self.fold(&record.event);
        self.map(record)
    }

    /// The folded group membership, for saving beside an export's manifest
    /// (chat id in hex → sorted member ids).
    pub fn groups_snapshot(&self) -> std::collections::BTreeMap<String, Vec<u64>> {
        self.groups
            .iter()
            .map(|(chat, m)| {
                let mut m: Vec<u64> = m.iter().map(|u| u.0).collect();
                m.sort_unstable();
                (hex(&chat.0), m)
            })
            .collect()
    }

    /// Replaces the folded group membership by a [`RowBuilder::groups_snapshot`].
    ///
    /// # Errors
    /// A key that is not a chat id (the snapshot is left unused).
    pub fn restore_groups(
        &mut self,
        snapshot: &std::collections::BTreeMap<String, Vec<u64>>,
    ) -> chorus_schema::Result<()> {
        let mut groups = HashMap::with_capacity(snapshot.len());
        for (chat, members) in snapshot {
            groups.insert(chat.parse::<ChatId>()?, members.iter().copied().map(UserId).collect());
        }
        self.groups = groups;
        Ok(())
    }

    /// The number of members of `chat` as folded so far (`None`: a group the
    /// builder has not seen created).
    pub fn members(&self, chat: &ChatId) -> Option<u32> {
        if chat.is_direct() {
            return Some(2);
        }
        self.groups.get(chat).map(|m| count(m.len()))
    }

    fn fold(&mut self, event: &Event) {
        use EventBody::*;
        match &event.body {
            GroupCreated { chat, members, .. } => {
                self.groups.insert(*chat, members.iter().copied().collect());
            }
            MemberAdded { chat, member, .. } => {
                if let Some(m) = self.groups.get_mut(chat) {
                    m.insert(*member);
                }
            }
            MemberRemoved { chat, member, .. } => {
                if let Some(m) = self.groups.get_mut(chat) {
                    m.remove(member);
                }
            }
            MemberLeft { chat, .. } => {
                if let Some(m) = self.groups.get_mut(chat) {
                    m.remove(&event.origin.user);
                }
            }
            _ => {}
        }
    }

    fn user(&self, u: UserId) -> Option<u64> {
        Some(match &self.pseudonymizer {
            Some(p) => p.user(u),
            None => u.0,
        })
    }

    fn device(&self, u: UserId, d: chorus_schema::DeviceId) -> Option<u64> {
        Some(match &self.pseudonymizer {
            Some(p) => p.device(u, d),
            None => u64::from(d.0),
        })
    }

    fn chat(&self, c: &ChatId) -> Option<ChatKey> {
        Some(match &self.pseudonymizer {
            Some(p) => p.chat(c),
            None => ChatKey(c.0),
        })
    }

    fn map(&self, record: &EventRecord) -> Row {
        use EventBody::*;
        let e = &record.event;
        let sender = e.origin.user;
        let mut row = Row {
            partition: record.partition.0,
            offset: record.offset.0,
            log_index: Some(record.log_index.0),
            at_ms: Some(e.at_ms),
            kind: kind_name(&e.body),
            sender_user: self.user(sender),
            sender_device: self.device(sender, e.origin.device),
            ..Row::default()
        };
        if let Some(chat) = e.body.chat() {
            row.chat = self.chat(&chat);
            row.members = self.members(&chat);
            row.seq = e.body.seq().map(|s| s.0);
        }
        if let Some(user) = e.body.user() {
            row.user = self.user(user);
        }
        // The members but the sender (the sender is a member of any chat it
        // may write to; if the state says otherwise, all members).
        let recipients = |row: &Row, chat: &ChatId| {
            let members = row.members?;
            let sender_in = chat.is_direct() || self.groups.get(chat).is_some_and(|m| m.contains(&sender));
            Some(if sender_in { members.saturating_sub(1) } else { members })
        };
        let media = |m: &Option<chorus_schema::MediaRef>| m.as_ref().map(|m| m.size);
        match &e.body {
            ChatOpened { members, .. } => row.items = Some(count(members.len())),
            MessageSent { chat, ciphertext, media: m, .. } => {
                row.recipients = recipients(&row, chat);
                row.ciphertext_bytes = Some(count(ciphertext.len()));
                row.media_bytes = media(m);
            }
            MessageEdited { chat, target, ciphertext, .. } => {
                row.recipients = recipients(&row, chat);
                row.target_seq = Some(target.0);
                row.ciphertext_bytes = Some(count(ciphertext.len()));
            }
            MessageDeleted { chat, target, .. } | ReactionSet { chat, target, .. } => {
                row.recipients = recipients(&row, chat);
                row.target_seq = Some(target.0);
            }
            Receipt { kind, up_to_seq, .. } => {
                row.receipt = Some(match kind {
                    ReceiptKind::Delivered => "delivered",
                    ReceiptKind::Read => "read",
                });
                row.up_to_seq = Some(up_to_seq.0);
            }
            GroupCreated { members, .. } => {
                row.group_op = Some("create");
                row.items = Some(count(members.len()));
            }
            MemberAdded { member, .. } => {
                row.group_op = Some("add");
                row.other_user = self.user(*member);
            }
            MemberRemoved { member, .. } => {
                row.group_op = Some("remove");
                row.other_user = self.user(*member);
            }
            MemberPromoted { member, .. } => {
                row.group_op = Some("promote");
                row.other_user = self.user(*member);
            }
            MemberDemoted { member, .. } => {
                row.group_op = Some("demote");
                row.other_user = self.user(*member);
            }
            GroupInfoChanged { icon, .. } => {
                row.group_op = Some("change_info");
                row.media_bytes = media(icon);
            }
            MemberLeft { .. } => row.group_op = Some("leave"),
            DirectBlockSet { blocked, .. } => row.blocked = Some(*blocked),
            UserRegistered { user: _, phone } => {
                row.phone = Some(match &self.pseudonymizer {
                    Some(p) => p.phone(phone),
                    None => phone.clone(),
                });
            }
            DeviceLinked { user, device, .. }
            | DeviceUnlinked { user, device }
            | SessionCreated { user, device, .. }
            | SessionRevoked { user, device } => row.device = self.device(*user, *device),
            ProfileUpdated { avatar, .. } => row.media_bytes = media(avatar),
            PresenceChanged { user, online, device, device_online, .. } => {
                row.device = self.device(*user, *device);
                row.online = Some(*online);
                row.device_online = Some(*device_online);
            }
            PrekeysUploaded { user, device, prekeys } => {
                row.device = self.device(*user, *device);
                row.items = Some(count(prekeys.len()));
            }
            PrekeyClaimed { user, device, claimed_by, .. } => {
                row.device = self.device(*user, *device);
                row.other_user = self.user(*claimed_by);
            }
            StatusPosted { status_id, ciphertext, media: m, acl, expires_at_ms, .. } => {
                row.status_id = Some(*status_id);
                row.ciphertext_bytes = Some(count(ciphertext.len()));
                row.media_bytes = media(m);
                row.items = Some(count(acl.len()));
                row.expires_at_ms = Some(*expires_at_ms);
            }
            ContactsUpdated { contacts, .. } => row.items = Some(count(contacts.len())),
            // A named consumer's commit: how many partitions' offsets moved.
            OffsetsCommitted { offsets, .. } => row.items = Some(count(offsets.len())),
            MediaUploaded { size, .. } => row.media_bytes = Some(*size),
            UserBlocked { target, .. } => {
                row.other_user = self.user(*target);
                row.blocked = Some(true);
            }
            UserUnblocked { target, .. } => {
                row.other_user = self.user(*target);
                row.blocked = Some(false);
            }
            StatusViewed { status_id, viewer, .. } => {
                row.status_id = Some(*status_id);
                row.other_user = self.user(*viewer);
            }
            ContactLookupRecorded { hashes, .. } => row.items = Some(*hashes),
            PrivacyChanged { .. } | OtpFailed { .. } | RegistrationPinSet { .. } => {}
            // Metadata only: never the token, the reason or the revealed text.
            PushTokenSet { .. } => {}
            ReportFiled { messages, .. } => row.items = Some(count(messages.len())),
            // ---- E2EE (issue 14) ----
            DeviceKeysUploaded { user, device, prekeys, .. } => {
                row.device = self.device(*user, *device);
                row.items = Some(count(prekeys.len()));
            }
            DeviceKeysClaimed { claimed_by, claimed, .. } => {
                row.other_user = self.user(*claimed_by);
                row.items = Some(count(claimed.len()));
            }
        }
        row
    }
}
