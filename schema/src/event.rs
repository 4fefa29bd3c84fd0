//! Events: what a partition decided, in log order. Views are folds of these.

use serde::{Deserialize, Serialize};

use crate::codec::{self, ident, Builder};
use crate::consumer::{ConsumerKey, PartitionOffset};
use crate::error::check_len;
use crate::fb;
use crate::ids::{ChatId, DeviceId, Key, LogIndex, Offset, PartitionId, Seq, UserId};
use crate::limits::*;
use crate::types::{MediaRef, Origin, Prekey, ReceiptKind, Visibility};
use crate::Result;

/// One event: when the leader decided it, whose command caused it, and what happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The deciding leader's wall clock; not monotone across leader changes.
    pub at_ms: u64,
    /// The origin of the command that produced the event.
    pub origin: Origin,
    pub body: EventBody,
}

/// Every event of chorus. `seq` fields are positions in the chat's timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventBody {
    // chat partition
    /// A direct chat came into existence (takes no seq); `members` is the sorted pair.
    ChatOpened {
        chat: ChatId,
        members: Vec<UserId>,
    },
    /// The sender is the event's origin.
    MessageSent {
        chat: ChatId,
        seq: Seq,
        ciphertext: Vec<u8>,
        media: Option<MediaRef>,
    },
    MessageEdited {
        chat: ChatId,
        seq: Seq,
        target: Seq,
        ciphertext: Vec<u8>,
    },
    MessageDeleted {
        chat: ChatId,
        seq: Seq,
        target: Seq,
    },
    /// The origin user's reaction to `target`; empty removes it.
    ReactionSet {
        chat: ChatId,
        seq: Seq,
        target: Seq,
        reaction: String,
    },
    /// Cumulative receipt of the origin's user and device (takes no seq). `Read`
    /// also advances the delivered cursor.
    Receipt {
        chat: ChatId,
        kind: ReceiptKind,
        up_to_seq: Seq,
    },
    /// The origin user is the creator and first admin; `members` is sorted and includes it.
    GroupCreated {
        chat: ChatId,
        seq: Seq,
        name: String,
        members: Vec<UserId>,
    },
    MemberAdded {
        chat: ChatId,
        seq: Seq,
        member: UserId,
    },
    MemberRemoved {
        chat: ChatId,
        seq: Seq,
        member: UserId,
    },
    MemberPromoted {
        chat: ChatId,
        seq: Seq,
        member: UserId,
    },
    MemberDemoted {
        chat: ChatId,
        seq: Seq,
        member: UserId,
    },
    GroupInfoChanged {
        chat: ChatId,
        seq: Seq,
        name: String,
        description: String,
        /// The group's picture from now on (`None`: none).
        icon: Option<MediaRef>,
    },
    /// The origin user left.
    MemberLeft {
        chat: ChatId,
        seq: Seq,
    },
    // user partition
    UserRegistered {
        user: UserId,
        phone: String,
    },
    DeviceLinked {
        user: UserId,
        device: DeviceId,
        identity_key: Vec<u8>,
        name: String,
    },
    DeviceUnlinked {
        user: UserId,
        device: DeviceId,
    },
    ProfileUpdated {
        user: UserId,
        name: String,
        about: String,
        avatar: Option<MediaRef>,
    },
    PrivacyChanged {
        user: UserId,
        last_seen: Visibility,
        profile_photo: Visibility,
        about: Visibility,
        read_receipts: bool,
    },
    /// A connection of `device` came online (`device_online`) or went away,
    /// at the event's `at_ms` (the user's last seen); `online` is the user's
    /// presence after it: online while any device has a connection.
    PresenceChanged {
        user: UserId,
        online: bool,
        device: DeviceId,
        connection: u64,
        device_online: bool,
    },
    PrekeysUploaded {
        user: UserId,
        device: DeviceId,
        prekeys: Vec<Prekey>,
    },
    /// `user`/`device` own the prekey; `claimed_by` received it.
    PrekeyClaimed {
        user: UserId,
        device: DeviceId,
        prekey_id: u32,
        claimed_by: UserId,
    },
    StatusPosted {
        user: UserId,
        status_id: u64,
        ciphertext: Vec<u8>,
        media: Option<MediaRef>,
        acl: Vec<UserId>,
        expires_at_ms: u64,
        audience: crate::social::StatusAudience,
    },
    ContactsUpdated {
        user: UserId,
        contacts: Vec<UserId>,
    },
    UserBlocked {
        user: UserId,
        target: UserId,
    },
    UserUnblocked {
        user: UserId,
        target: UserId,
    },
    /// The device's login session, replacing any earlier one; `token_hash` is the
    /// BLAKE3 hash of the token.
    SessionCreated {
        user: UserId,
        device: DeviceId,
        token_hash: [u8; 32],
    },
    SessionRevoked {
        user: UserId,
        device: DeviceId,
    },
    /// A wrong code or PIN for the user's phone (the user may be unregistered;
    /// its time is the event's `at_ms`).
    OtpFailed {
        user: UserId,
    },
    /// The user's registration PIN hash (`None`: no PIN).
    RegistrationPinSet {
        user: UserId,
        pin_hash: Option<[u8; 32]>,
    },
    /// The origin user blocks (or unblocks) the other member of the direct
    /// chat `chat` (no seq).
    DirectBlockSet {
        chat: ChatId,
        blocked: bool,
    },
    /// `viewer` viewed `user`'s status `status_id` (the first time).
    StatusViewed {
        user: UserId,
        status_id: u64,
        viewer: UserId,
    },
    /// `user` looked up `hashes` phone hashes in the contact directory.
    ContactLookupRecorded {
        user: UserId,
        hashes: u32,
    },
    // ---- consumer partition (issue 13) ----
    /// The named consumer `consumer` committed `offsets`: the partitions
    /// whose committed offset changed, with the new value.
    OffsetsCommitted {
        consumer: String,
        offsets: Vec<PartitionOffset>,
    },
    // ---- push and reports (issue 14) ----
    /// `device` of `user` set its push token (empty: cleared).
    PushTokenSet {
        user: UserId,
        device: DeviceId,
        token: String,
        platform: String,
    },
    /// The origin user reported `user` (in `chat`, if given), revealing `messages`.
    ReportFiled {
        user: UserId,
        chat: Option<ChatId>,
        reason: String,
        messages: Vec<crate::push::ReportedMessage>,
    },
    // ---- E2EE (issue 14) ----
    /// `device` published one-time keys and/or replaced its fallback key.
    DeviceKeysUploaded {
        user: UserId,
        device: DeviceId,
        prekeys: Vec<Prekey>,
        fallback_key: Option<Prekey>,
        fallback_signature: Vec<u8>,
    },
    /// `claimed_by` claimed one key of every device of `user`: `claimed`
    /// lists the one-time keys consumed `(device, prekey id)`; every other
    /// device handed out its fallback key (not consumed).
    DeviceKeysClaimed {
        user: UserId,
        claimed_by: UserId,
        claimed: Vec<(DeviceId, u32)>,
    },
    // ---- media (issue 14) ----
    /// `user` uploaded the object `blake3` of `size` bytes (or re-uploaded
    /// one already stored): the media view counts it and restarts its grace
    /// period before garbage collection.
    MediaUploaded {
        user: UserId,
        blake3: [u8; 32],
        size: u64,
    },
}

impl EventBody {
    /// The key of the partition this event belongs to: the chat of a chat-partition
    /// event, the user of a user-partition event.
    pub fn key(&self) -> Key {
        use EventBody::*;
        match self {
            ChatOpened { chat, .. }
            | MessageSent { chat, .. }
            | MessageEdited { chat, .. }
            | MessageDeleted { chat, .. }
            | ReactionSet { chat, .. }
            | Receipt { chat, .. }
            | GroupCreated { chat, .. }
            | MemberAdded { chat, .. }
            | MemberRemoved { chat, .. }
            | MemberPromoted { chat, .. }
            | MemberDemoted { chat, .. }
            | GroupInfoChanged { chat, .. }
            | MemberLeft { chat, .. }
            | DirectBlockSet { chat, .. } => Key::Chat(*chat),
            UserRegistered { user, .. }
            | DeviceLinked { user, .. }
            | DeviceUnlinked { user, .. }
            | ProfileUpdated { user, .. }
            | PrivacyChanged { user, .. }
            | PresenceChanged { user, .. }
            | PrekeysUploaded { user, .. }
            | PrekeyClaimed { user, .. }
            | StatusPosted { user, .. }
            | ContactsUpdated { user, .. }
            | UserBlocked { user, .. }
            | UserUnblocked { user, .. }
            | SessionCreated { user, .. }
            | SessionRevoked { user, .. }
            | OtpFailed { user }
            | RegistrationPinSet { user, .. }
            | StatusViewed { user, .. }
            | ContactLookupRecorded { user, .. }
            | DeviceKeysUploaded { user, .. }
            | DeviceKeysClaimed { user, .. } => Key::User(*user),
            OffsetsCommitted { consumer, .. } => Key::Consumer(ConsumerKey::of(consumer)),
            PushTokenSet { user, .. } | ReportFiled { user, .. } => Key::User(*user),
            MediaUploaded { user, .. } => Key::User(*user),
        }
    }

    /// The chat of a chat-partition event.
    pub fn chat(&self) -> Option<ChatId> {
        match self.key() {
            Key::Chat(chat) => Some(chat),
            Key::User(_) | Key::Consumer(_) => None,
        }
    }

    /// The user of a user-partition event.
    pub fn user(&self) -> Option<UserId> {
        match self.key() {
            Key::User(user) => Some(user),
            Key::Chat(_) | Key::Consumer(_) => None,
        }
    }

    /// The timeline position of a chat timeline event (every chat event except
    /// `ChatOpened` and `Receipt`).
    pub fn seq(&self) -> Option<Seq> {
        use EventBody::*;
        match self {
            MessageSent { seq, .. }
            | MessageEdited { seq, .. }
            | MessageDeleted { seq, .. }
            | ReactionSet { seq, .. }
            | GroupCreated { seq, .. }
            | MemberAdded { seq, .. }
            | MemberRemoved { seq, .. }
            | MemberPromoted { seq, .. }
            | MemberDemoted { seq, .. }
            | GroupInfoChanged { seq, .. }
            | MemberLeft { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    /// The name of the event's kind, for logs.
    pub fn kind(&self) -> &'static str {
        use EventBody::*;
        match self {
            ChatOpened { .. } => "ChatOpened",
            MessageSent { .. } => "MessageSent",
            MessageEdited { .. } => "MessageEdited",
            MessageDeleted { .. } => "MessageDeleted",
            ReactionSet { .. } => "ReactionSet",
            Receipt { .. } => "Receipt",
            GroupCreated { .. } => "GroupCreated",
            MemberAdded { .. } => "MemberAdded",
            MemberRemoved { .. } => "MemberRemoved",
            MemberPromoted { .. } => "MemberPromoted",
            MemberDemoted { .. } => "MemberDemoted",
            GroupInfoChanged { .. } => "GroupInfoChanged",
            MemberLeft { .. } => "MemberLeft",
            UserRegistered { .. } => "UserRegistered",
            DeviceLinked { .. } => "DeviceLinked",
            DeviceUnlinked { .. } => "DeviceUnlinked",
            ProfileUpdated { .. } => "ProfileUpdated",
            PrivacyChanged { .. } => "PrivacyChanged",
            PresenceChanged { .. } => "PresenceChanged",
            PrekeysUploaded { .. } => "PrekeysUploaded",
            PrekeyClaimed { .. } => "PrekeyClaimed",
            StatusPosted { .. } => "StatusPosted",
            ContactsUpdated { .. } => "ContactsUpdated",
            UserBlocked { .. } => "UserBlocked",
            UserUnblocked { .. } => "UserUnblocked",
            SessionCreated { .. } => "SessionCreated",
            SessionRevoked { .. } => "SessionRevoked",
            OtpFailed { .. } => "OtpFailed",
            RegistrationPinSet { .. } => "RegistrationPinSet",
            DirectBlockSet { .. } => "DirectBlockSet",
            StatusViewed { .. } => "StatusViewed",
            ContactLookupRecorded { .. } => "ContactLookupRecorded",
            OffsetsCommitted { .. } => "OffsetsCommitted",
            PushTokenSet { .. } => "PushTokenSet",
            ReportFiled { .. } => "ReportFiled",
            DeviceKeysUploaded { .. } => "DeviceKeysUploaded",
            DeviceKeysClaimed { .. } => "DeviceKeysClaimed",
            MediaUploaded { .. } => "MediaUploaded",
        }
    }
}

impl Event {
    /// The key of the partition this event belongs to.
    pub fn key(&self) -> Key {
        self.body.key()
    }

    /// Checks the field limits of [`crate::limits`].
    ///
    /// # Errors
    /// [`crate::Error::TooLarge`] naming the first field over its limit.
    pub fn validate(&self) -> Result<()> {
        use EventBody::*;
        let media = |m: &Option<MediaRef>| m.as_ref().map_or(Ok(()), MediaRef::validate);
        match &self.body {
            ChatOpened { members, .. } => check_len("chat members", members.len(), 2),
            MessageSent { ciphertext, media: m, .. } => {
                check_len("ciphertext", ciphertext.len(), MAX_CIPHERTEXT_BYTES)?;
                media(m)
            }
            MessageEdited { ciphertext, .. } => check_len("ciphertext", ciphertext.len(), MAX_CIPHERTEXT_BYTES),
            ReactionSet { reaction, .. } => check_len("reaction", reaction.len(), MAX_REACTION_BYTES),
            GroupCreated { name, members, .. } => {
                check_len("group name", name.len(), MAX_NAME_BYTES)?;
                check_len("group members", members.len(), MAX_GROUP_MEMBERS)
            }
            GroupInfoChanged { name, description, icon, .. } => {
                check_len("group name", name.len(), MAX_NAME_BYTES)?;
                check_len("group description", description.len(), MAX_ABOUT_BYTES)?;
                icon.as_ref().map_or(Ok(()), MediaRef::validate)
            }
            UserRegistered { phone, .. } => check_len("phone", phone.len(), MAX_PHONE_BYTES),
            DeviceLinked { identity_key, name, .. } => {
                check_len("identity key", identity_key.len(), MAX_KEY_BYTES)?;
                check_len("device name", name.len(), MAX_NAME_BYTES)
            }
            ProfileUpdated { name, about, avatar, .. } => {
                check_len("profile name", name.len(), MAX_NAME_BYTES)?;
                check_len("profile about", about.len(), MAX_ABOUT_BYTES)?;
                media(avatar)
            }
            PrekeysUploaded { prekeys, .. } => {
                check_len("prekeys", prekeys.len(), MAX_PREKEYS_PER_UPLOAD)?;
                prekeys.iter().try_for_each(Prekey::validate)
            }
            StatusPosted { ciphertext, media: m, acl, .. } => {
                check_len("ciphertext", ciphertext.len(), MAX_CIPHERTEXT_BYTES)?;
                check_len("status acl", acl.len(), MAX_ACL)?;
                media(m)
            }
            ContactsUpdated { contacts, .. } => check_len("contacts", contacts.len(), MAX_CONTACTS),
            MessageDeleted { .. }
            | Receipt { .. }
            | MemberAdded { .. }
            | MemberRemoved { .. }
            | MemberPromoted { .. }
            | MemberDemoted { .. }
            | MemberLeft { .. }
            | DeviceUnlinked { .. }
            | PrivacyChanged { .. }
            | PresenceChanged { .. }
            | PrekeyClaimed { .. }
            | UserBlocked { .. }
            | UserUnblocked { .. }
            | SessionCreated { .. }
            | SessionRevoked { .. }
            | OtpFailed { .. }
            | RegistrationPinSet { .. }
            | DirectBlockSet { .. }
            | StatusViewed { .. }
            | ContactLookupRecorded { .. }
            | MediaUploaded { .. } => Ok(()),
            OffsetsCommitted { consumer, offsets } => {
                crate::consumer::validate_name(consumer)?;
                crate::consumer::validate_offsets(offsets)
            }
            PushTokenSet { token, platform, .. } => crate::push::validate_push(token, platform),
            ReportFiled { reason, messages, .. } => crate::push::validate_report(reason, messages),
            DeviceKeysUploaded { prekeys, fallback_key, fallback_signature, .. } => {
                crate::keys::validate_upload(prekeys, fallback_key, fallback_signature)
            }
            DeviceKeysClaimed { claimed, .. } => check_len("claimed keys", claimed.len(), MAX_DEVICES_PER_USER),
        }
    }

    /// Encodes as a flatbuffer with file identifier `CEVT`. Does not validate.
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = Builder::with_capacity(128);
        let root = build_event(&mut fbb, self);
        codec::finish(fbb, root, ident::EVENT)
    }

    /// Verifies and decodes a buffer made by [`Event::encode`], then validates it.
    ///
    /// # Errors
    /// [`crate::Error::TooLarge`] above [`MAX_EVENT_BYTES`] or a field limit;
    /// [`crate::Error::Malformed`] if the verifier refuses the buffer or it holds an
    /// unknown event or enum value.
    pub fn decode(buf: &[u8]) -> Result<Event> {
        let e = codec::root::<fb::Event>(buf, "event", ident::EVENT, MAX_EVENT_BYTES, 1024)?;
        let event = from_fb(e)?;
        event.validate()?;
        Ok(event)
    }
}

/// What the log-node stores and serves: one committed event with its place in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub partition: PartitionId,
    /// Position among the partition's events: gap-free from 0.
    pub offset: Offset,
    /// The Raft log index of the entry whose command produced the event.
    pub log_index: LogIndex,
    pub event: Event,
}

impl EventRecord {
    /// Encodes as a flatbuffer with file identifier `CREC`. Does not validate.
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = Builder::with_capacity(160);
        let event = build_event(&mut fbb, &self.event);
        let root = fb::EventRecord::create(
            &mut fbb,
            &fb::EventRecordArgs {
                partition: self.partition.0,
                offset: self.offset.0,
                log_index: self.log_index.0,
                event: Some(event),
            },
        );
        codec::finish(fbb, root, ident::EVENT_RECORD)
    }

    /// Verifies and decodes a buffer made by [`EventRecord::encode`], then validates it.
    ///
    /// # Errors
    /// As [`Event::decode`].
    pub fn decode(buf: &[u8]) -> Result<EventRecord> {
        let r = codec::root::<fb::EventRecord>(buf, "event record", ident::EVENT_RECORD, MAX_EVENT_BYTES, 1024)?;
        let event = from_fb(r.event())?;
        event.validate()?;
        Ok(EventRecord {
            partition: PartitionId(r.partition()),
            offset: Offset(r.offset()),
            log_index: LogIndex(r.log_index()),
            event,
        })
    }
}

/// A committed record together with the bytes the log stored for it: decoded
/// for readers that fold it, the bytes for those that forward it unchanged
/// (the projector's deliveries carry them verbatim instead of encoding the
/// record again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    pub record: EventRecord,
    /// Exactly what [`EventRecord::decode`] accepted.
    pub bytes: bytes::Bytes,
}

impl StoredRecord {
    /// Verifies and decodes `bytes`, keeping them.
    ///
    /// # Errors
    /// As [`EventRecord::decode`].
    pub fn decode(bytes: bytes::Bytes) -> Result<StoredRecord> {
        Ok(StoredRecord { record: EventRecord::decode(&bytes)?, bytes })
    }
}

fn from_fb(e: fb::Event<'_>) -> Result<Event> {
    use codec::{chat, opt_media, seq, users};
    let origin = codec::origin(e.origin());
    let tag = e.body_type();
    let bad = || codec::bad_union("event body", tag.0);
    macro_rules! get {
        ($e:expr) => {
            $e.ok_or_else(bad)?
        };
    }
    use EventBody as B;
    let body = match tag {
        fb::EventBody::ChatOpened => {
            let b = get!(e.body_as_chat_opened());
            check_len("chat members", b.members().len(), 2)?;
            B::ChatOpened { chat: chat(b.chat()), members: users(b.members()) }
        }
        fb::EventBody::MessageSent => {
            let b = get!(e.body_as_message_sent());
            B::MessageSent {
                chat: chat(b.chat()),
                seq: seq(b.seq()),
                ciphertext: b.ciphertext().bytes().to_vec(),
                media: opt_media(b.media()),
            }
        }
        fb::EventBody::MessageEdited => {
            let b = get!(e.body_as_message_edited());
            B::MessageEdited {
                chat: chat(b.chat()),
                seq: seq(b.seq()),
                target: seq(b.target()),
                ciphertext: b.ciphertext().bytes().to_vec(),
            }
        }
        fb::EventBody::MessageDeleted => {
            let b = get!(e.body_as_message_deleted());
            B::MessageDeleted { chat: chat(b.chat()), seq: seq(b.seq()), target: seq(b.target()) }
        }
        fb::EventBody::ReactionSet => {
            let b = get!(e.body_as_reaction_set());
            B::ReactionSet {
                chat: chat(b.chat()),
                seq: seq(b.seq()),
                target: seq(b.target()),
                reaction: b.reaction().to_owned(),
            }
        }
        fb::EventBody::Receipt => {
            let b = get!(e.body_as_receipt());
            B::Receipt { chat: chat(b.chat()), kind: codec::receipt_kind(b.kind())?, up_to_seq: seq(b.up_to_seq()) }
        }
        fb::EventBody::GroupCreated => {
            let b = get!(e.body_as_group_created());
            check_len("group members", b.members().len(), MAX_GROUP_MEMBERS)?;
            B::GroupCreated {
                chat: chat(b.chat()),
                seq: seq(b.seq()),
                name: b.name().to_owned(),
                members: users(b.members()),
            }
        }
        fb::EventBody::MemberAdded => {
            let b = get!(e.body_as_member_added());
            B::MemberAdded { chat: chat(b.chat()), seq: seq(b.seq()), member: UserId(b.member()) }
        }
        fb::EventBody::MemberRemoved => {
            let b = get!(e.body_as_member_removed());
            B::MemberRemoved { chat: chat(b.chat()), seq: seq(b.seq()), member: UserId(b.member()) }
        }
        fb::EventBody::MemberPromoted => {
            let b = get!(e.body_as_member_promoted());
            B::MemberPromoted { chat: chat(b.chat()), seq: seq(b.seq()), member: UserId(b.member()) }
        }
        fb::EventBody::MemberDemoted => {
            let b = get!(e.body_as_member_demoted());
            B::MemberDemoted { chat: chat(b.chat()), seq: seq(b.seq()), member: UserId(b.member()) }
        }
        fb::EventBody::GroupInfoChanged => {
            let b = get!(e.body_as_group_info_changed());
            B::GroupInfoChanged {
                chat: chat(b.chat()),
                seq: seq(b.seq()),
                name: b.name().to_owned(),
                description: b.description().to_owned(),
                icon: opt_media(b.icon()),
            }
        }
        fb::EventBody::MemberLeft => {
            let b = get!(e.body_as_member_left());
            B::MemberLeft { chat: chat(b.chat()), seq: seq(b.seq()) }
        }
        fb::EventBody::UserRegistered => {
            let b = get!(e.body_as_user_registered());
            B::UserRegistered { user: UserId(b.user()), phone: b.phone().to_owned() }
        }
        fb::EventBody::DeviceLinked => {
            let b = get!(e.body_as_device_linked());
            B::DeviceLinked {
                user: UserId(b.user()),
                device: DeviceId(b.device()),
                identity_key: b.identity_key().bytes().to_vec(),
                name: b.name().to_owned(),
            }
        }
        fb::EventBody::DeviceUnlinked => {
            let b = get!(e.body_as_device_unlinked());
            B::DeviceUnlinked { user: UserId(b.user()), device: DeviceId(b.device()) }
        }
        fb::EventBody::ProfileUpdated => {
            let b = get!(e.body_as_profile_updated());
            B::ProfileUpdated {
                user: UserId(b.user()),
                name: b.name().to_owned(),
                about: b.about().to_owned(),
                avatar: opt_media(b.avatar()),
            }
        }
        fb::EventBody::PrivacyChanged => {
            let b = get!(e.body_as_privacy_changed());
            B::PrivacyChanged {
                user: UserId(b.user()),
                last_seen: codec::visibility(b.last_seen())?,
                profile_photo: codec::visibility(b.profile_photo())?,
                about: codec::visibility(b.about())?,
                read_receipts: b.read_receipts(),
            }
        }
        fb::EventBody::PresenceChanged => {
            let b = get!(e.body_as_presence_changed());
            B::PresenceChanged {
                user: UserId(b.user()),
                online: b.online(),
                device: DeviceId(b.device()),
                connection: b.connection(),
                device_online: b.device_online(),
            }
        }
        fb::EventBody::PrekeysUploaded => {
            let b = get!(e.body_as_prekeys_uploaded());
            check_len("prekeys", b.prekeys().len(), MAX_PREKEYS_PER_UPLOAD)?;
            B::PrekeysUploaded {
                user: UserId(b.user()),
                device: DeviceId(b.device()),
                prekeys: codec::prekeys(b.prekeys()),
            }
        }
        fb::EventBody::PrekeyClaimed => {
            let b = get!(e.body_as_prekey_claimed());
            B::PrekeyClaimed {
                user: UserId(b.user()),
                device: DeviceId(b.device()),
                prekey_id: b.prekey_id(),
                claimed_by: UserId(b.claimed_by()),
            }
        }
        fb::EventBody::StatusPosted => {
            let b = get!(e.body_as_status_posted());
            check_len("status acl", b.acl().len(), MAX_ACL)?;
            B::StatusPosted {
                user: UserId(b.user()),
                status_id: b.status_id(),
                ciphertext: b.ciphertext().bytes().to_vec(),
                media: opt_media(b.media()),
                acl: users(b.acl()),
                expires_at_ms: b.expires_at_ms(),
                audience: crate::social::StatusAudience::from_fb(b.audience())?,
            }
        }
        fb::EventBody::ContactsUpdated => {
            let b = get!(e.body_as_contacts_updated());
            check_len("contacts", b.contacts().len(), MAX_CONTACTS)?;
            B::ContactsUpdated { user: UserId(b.user()), contacts: users(b.contacts()) }
        }
        fb::EventBody::UserBlocked => {
            let b = get!(e.body_as_user_blocked());
            B::UserBlocked { user: UserId(b.user()), target: UserId(b.target()) }
        }
        fb::EventBody::UserUnblocked => {
            let b = get!(e.body_as_user_unblocked());
            B::UserUnblocked { user: UserId(b.user()), target: UserId(b.target()) }
        }
        fb::EventBody::SessionCreated => {
            let b = get!(e.body_as_session_created());
            B::SessionCreated { user: UserId(b.user()), device: DeviceId(b.device()), token_hash: b.token_hash().0 }
        }
        fb::EventBody::SessionRevoked => {
            let b = get!(e.body_as_session_revoked());
            B::SessionRevoked { user: UserId(b.user()), device: DeviceId(b.device()) }
        }
        fb::EventBody::OtpFailed => {
            let b = get!(e.body_as_otp_failed());
            B::OtpFailed { user: UserId(b.user()) }
        }
        fb::EventBody::RegistrationPinSet => {
            let b = get!(e.body_as_registration_pin_set());
            B::RegistrationPinSet { user: UserId(b.user()), pin_hash: b.pin_hash().map(|h| h.0) }
        }
        fb::EventBody::DirectBlockSet => {
            let b = get!(e.body_as_direct_block_set());
            B::DirectBlockSet { chat: codec::chat(b.chat()), blocked: b.blocked() }
        }
        fb::EventBody::StatusViewed => {
            let b = get!(e.body_as_status_viewed());
            B::StatusViewed { user: UserId(b.user()), status_id: b.status_id(), viewer: UserId(b.viewer()) }
        }
        fb::EventBody::ContactLookupRecorded => {
            let b = get!(e.body_as_contact_lookup_recorded());
            B::ContactLookupRecorded { user: UserId(b.user()), hashes: b.hashes() }
        }
        fb::EventBody::MediaUploaded => {
            let b = get!(e.body_as_media_uploaded());
            B::MediaUploaded { user: UserId(b.user()), blake3: b.blake3().0, size: b.size() }
        }
        fb::EventBody::OffsetsCommitted => {
            let b = get!(e.body_as_offsets_committed());
            B::OffsetsCommitted { consumer: b.consumer().to_owned(), offsets: crate::consumer::offsets_of(b.offsets()) }
        }
        fb::EventBody::PushTokenSet => {
            let b = get!(e.body_as_push_token_set());
            B::PushTokenSet {
                user: UserId(b.user()),
                device: DeviceId(b.device()),
                token: b.token().to_owned(),
                platform: b.platform().to_owned(),
            }
        }
        fb::EventBody::ReportFiled => {
            let b = get!(e.body_as_report_filed());
            B::ReportFiled {
                user: UserId(b.user()),
                chat: b.chat().map(chat),
                reason: b.reason().to_owned(),
                messages: crate::push::messages_of(Some(b.messages()))?,
            }
        }
        fb::EventBody::DeviceKeysUploaded => {
            let b = get!(e.body_as_device_keys_uploaded());
            check_len("prekeys", b.prekeys().map_or(0, |p| p.len()), MAX_PREKEYS_PER_UPLOAD)?;
            B::DeviceKeysUploaded {
                user: UserId(b.user()),
                device: DeviceId(b.device()),
                prekeys: b.prekeys().map(codec::prekeys).unwrap_or_default(),
                fallback_key: b.fallback_key().map(codec::prekey),
                fallback_signature: b.fallback_signature().map(|s| s.bytes().to_vec()).unwrap_or_default(),
            }
        }
        fb::EventBody::DeviceKeysClaimed => {
            let b = get!(e.body_as_device_keys_claimed());
            check_len("claimed keys", b.claimed().len(), MAX_DEVICES_PER_USER)?;
            B::DeviceKeysClaimed {
                user: UserId(b.user()),
                claimed_by: UserId(b.claimed_by()),
                claimed: b.claimed().iter().map(|c| (DeviceId(c.device()), c.prekey_id())).collect(),
            }
        }
        _ => return Err(bad()),
    };
    Ok(Event { at_ms: e.at_ms(), origin, body })
}

fn build_event<'a>(fbb: &mut Builder<'a>, e: &Event) -> flatbuffers::WIPOffset<fb::Event<'a>> {
    let (body_type, body) = encode_body(fbb, &e.body);
    let origin = codec::origin_fb(&e.origin);
    fb::Event::create(fbb, &fb::EventArgs { at_ms: e.at_ms, origin: Some(&origin), body_type, body: Some(body) })
}

fn encode_body<'a>(
    fbb: &mut Builder<'a>,
    body: &EventBody,
) -> (fb::EventBody, flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>) {
    use codec::{chat_fb, opt_media_fb, users_fb};
    use EventBody as B;
    match body {
        B::ChatOpened { chat, members } => {
            let members = users_fb(fbb, members);
            let chat = chat_fb(chat);
            let t = fb::ChatOpened::create(fbb, &fb::ChatOpenedArgs { chat: Some(&chat), members: Some(members) });
            (fb::EventBody::ChatOpened, t.as_union_value())
        }
        B::MessageSent { chat, seq, ciphertext, media } => {
            let ciphertext = fbb.create_vector(ciphertext);
            let media = opt_media_fb(fbb, media);
            let chat = chat_fb(chat);
            let t = fb::MessageSent::create(
                fbb,
                &fb::MessageSentArgs { chat: Some(&chat), seq: seq.0, ciphertext: Some(ciphertext), media },
            );
            (fb::EventBody::MessageSent, t.as_union_value())
        }
        B::MessageEdited { chat, seq, target, ciphertext } => {
            let ciphertext = fbb.create_vector(ciphertext);
            let chat = chat_fb(chat);
            let t = fb::MessageEdited::create(
                fbb,
                &fb::MessageEditedArgs {
                    chat: Some(&chat),
                    seq: seq.0,
                    target: target.0,
                    ciphertext: Some(ciphertext),
                },
            );
            (fb::EventBody::MessageEdited, t.as_union_value())
        }
        B::MessageDeleted { chat, seq, target } => {
            let chat = chat_fb(chat);
            let t = fb::MessageDeleted::create(
                fbb,
                &fb::MessageDeletedArgs { chat: Some(&chat), seq: seq.0, target: target.0 },
            );
            (fb::EventBody::MessageDeleted, t.as_union_value())
        }
        B::ReactionSet { chat, seq, target, reaction } => {
            let reaction = fbb.create_string(reaction);
            let chat = chat_fb(chat);
            let t = fb::ReactionSet::create(
                fbb,
                &fb::ReactionSetArgs { chat: Some(&chat), seq: seq.0, target: target.0, reaction: Some(reaction) },
            );
            (fb::EventBody::ReactionSet, t.as_union_value())
        }
        B::Receipt { chat, kind, up_to_seq } => {
            let chat = chat_fb(chat);
            let t = fb::Receipt::create(
                fbb,
                &fb::ReceiptArgs { chat: Some(&chat), kind: codec::receipt_kind_fb(*kind), up_to_seq: up_to_seq.0 },
            );
            (fb::EventBody::Receipt, t.as_union_value())
        }
        B::GroupCreated { chat, seq, name, members } => {
            let name = fbb.create_string(name);
            let members = users_fb(fbb, members);
            let chat = chat_fb(chat);
            let t = fb::GroupCreated::create(
                fbb,
                &fb::GroupCreatedArgs { chat: Some(&chat), seq: seq.0, name: Some(name), members: Some(members) },
            );
            (fb::EventBody::GroupCreated, t.as_union_value())
        }
        B::MemberAdded { chat, seq, member } => {
            let chat = chat_fb(chat);
            let t =
                fb::MemberAdded::create(fbb, &fb::MemberAddedArgs { chat: Some(&chat), seq: seq.0, member: member.0 });
            (fb::EventBody::MemberAdded, t.as_union_value())
        }
        B::MemberRemoved { chat, seq, member } => {
            let chat = chat_fb(chat);
            let t = fb::MemberRemoved::create(
                fbb,
                &fb::MemberRemovedArgs { chat: Some(&chat), seq: seq.0, member: member.0 },
            );
            (fb::EventBody::MemberRemoved, t.as_union_value())
        }
        B::MemberPromoted { chat, seq, member } => {
            let chat = chat_fb(chat);
            let t = fb::MemberPromoted::create(
                fbb,
                &fb::MemberPromotedArgs { chat: Some(&chat), seq: seq.0, member: member.0 },
            );
            (fb::EventBody::MemberPromoted, t.as_union_value())
        }
        B::MemberDemoted { chat, seq, member } => {
            let chat = chat_fb(chat);
            let t = fb::MemberDemoted::create(
                fbb,
                &fb::MemberDemotedArgs { chat: Some(&chat), seq: seq.0, member: member.0 },
            );
            (fb::EventBody::MemberDemoted, t.as_union_value())
        }
        B::GroupInfoChanged { chat, seq, name, description, icon } => {
            let name = fbb.create_string(name);
            let description = fbb.create_string(description);
            let icon = opt_media_fb(fbb, icon);
            let chat = chat_fb(chat);
            let t = fb::GroupInfoChanged::create(
                fbb,
                &fb::GroupInfoChangedArgs {
                    chat: Some(&chat),
                    seq: seq.0,
                    name: Some(name),
                    description: Some(description),
                    icon,
                },
            );
            (fb::EventBody::GroupInfoChanged, t.as_union_value())
        }
        B::MemberLeft { chat, seq } => {
            let chat = chat_fb(chat);
            let t = fb::MemberLeft::create(fbb, &fb::MemberLeftArgs { chat: Some(&chat), seq: seq.0 });
            (fb::EventBody::MemberLeft, t.as_union_value())
        }
        B::UserRegistered { user, phone } => {
            let phone = fbb.create_string(phone);
            let t = fb::UserRegistered::create(fbb, &fb::UserRegisteredArgs { user: user.0, phone: Some(phone) });
            (fb::EventBody::UserRegistered, t.as_union_value())
        }
        B::DeviceLinked { user, device, identity_key, name } => {
            let identity_key = fbb.create_vector(identity_key);
            let name = fbb.create_string(name);
            let t = fb::DeviceLinked::create(
                fbb,
                &fb::DeviceLinkedArgs {
                    user: user.0,
                    device: device.0,
                    identity_key: Some(identity_key),
                    name: Some(name),
                },
            );
            (fb::EventBody::DeviceLinked, t.as_union_value())
        }
        B::DeviceUnlinked { user, device } => {
            let t = fb::DeviceUnlinked::create(fbb, &fb::DeviceUnlinkedArgs { user: user.0, device: device.0 });
            (fb::EventBody::DeviceUnlinked, t.as_union_value())
        }
        B::ProfileUpdated { user, name, about, avatar } => {
            let name = fbb.create_string(name);
            let about = fbb.create_string(about);
            let avatar = opt_media_fb(fbb, avatar);
            let t = fb::ProfileUpdated::create(
                fbb,
                &fb::ProfileUpdatedArgs { user: user.0, name: Some(name), about: Some(about), avatar },
            );
            (fb::EventBody::ProfileUpdated, t.as_union_value())
        }
        B::PrivacyChanged { user, last_seen, profile_photo, about, read_receipts } => {
            let t = fb::PrivacyChanged::create(
                fbb,
                &fb::PrivacyChangedArgs {
                    user: user.0,
                    last_seen: codec::visibility_fb(*last_seen),
                    profile_photo: codec::visibility_fb(*profile_photo),
                    about: codec::visibility_fb(*about),
                    read_receipts: *read_receipts,
                },
            );
            (fb::EventBody::PrivacyChanged, t.as_union_value())
        }
        B::PresenceChanged { user, online, device, connection, device_online } => {
            let t = fb::PresenceChanged::create(
                fbb,
                &fb::PresenceChangedArgs {
                    user: user.0,
                    online: *online,
                    device: device.0,
                    connection: *connection,
                    device_online: *device_online,
                },
            );
            (fb::EventBody::PresenceChanged, t.as_union_value())
        }
        B::PrekeysUploaded { user, device, prekeys } => {
            let prekeys = codec::prekeys_fb(fbb, prekeys);
            let t = fb::PrekeysUploaded::create(
                fbb,
                &fb::PrekeysUploadedArgs { user: user.0, device: device.0, prekeys: Some(prekeys) },
            );
            (fb::EventBody::PrekeysUploaded, t.as_union_value())
        }
        B::PrekeyClaimed { user, device, prekey_id, claimed_by } => {
            let t = fb::PrekeyClaimed::create(
                fbb,
                &fb::PrekeyClaimedArgs {
                    user: user.0,
                    device: device.0,
                    prekey_id: *prekey_id,
                    claimed_by: claimed_by.0,
                },
            );
            (fb::EventBody::PrekeyClaimed, t.as_union_value())
        }
        B::StatusPosted { user, status_id, ciphertext, media, acl, expires_at_ms, audience } => {
            let ciphertext = fbb.create_vector(ciphertext);
            let media = opt_media_fb(fbb, media);
            let acl = users_fb(fbb, acl);
            let t = fb::StatusPosted::create(
                fbb,
                &fb::StatusPostedArgs {
                    user: user.0,
                    status_id: *status_id,
                    ciphertext: Some(ciphertext),
                    media,
                    acl: Some(acl),
                    expires_at_ms: *expires_at_ms,
                    audience: audience.to_fb(),
                },
            );
            (fb::EventBody::StatusPosted, t.as_union_value())
        }
        B::ContactsUpdated { user, contacts } => {
            let contacts = users_fb(fbb, contacts);
            let t =
                fb::ContactsUpdated::create(fbb, &fb::ContactsUpdatedArgs { user: user.0, contacts: Some(contacts) });
            (fb::EventBody::ContactsUpdated, t.as_union_value())
        }
        B::UserBlocked { user, target } => {
            let t = fb::UserBlocked::create(fbb, &fb::UserBlockedArgs { user: user.0, target: target.0 });
            (fb::EventBody::UserBlocked, t.as_union_value())
        }
        B::UserUnblocked { user, target } => {
            let t = fb::UserUnblocked::create(fbb, &fb::UserUnblockedArgs { user: user.0, target: target.0 });
            (fb::EventBody::UserUnblocked, t.as_union_value())
        }
        B::SessionCreated { user, device, token_hash } => {
            let digest = fb::Blake3Digest(*token_hash);
            let t = fb::SessionCreated::create(
                fbb,
                &fb::SessionCreatedArgs { user: user.0, device: device.0, token_hash: Some(&digest) },
            );
            (fb::EventBody::SessionCreated, t.as_union_value())
        }
        B::SessionRevoked { user, device } => {
            let t = fb::SessionRevoked::create(fbb, &fb::SessionRevokedArgs { user: user.0, device: device.0 });
            (fb::EventBody::SessionRevoked, t.as_union_value())
        }
        B::OtpFailed { user } => {
            let t = fb::OtpFailed::create(fbb, &fb::OtpFailedArgs { user: user.0 });
            (fb::EventBody::OtpFailed, t.as_union_value())
        }
        B::RegistrationPinSet { user, pin_hash } => {
            let pin = pin_hash.map(fb::Blake3Digest);
            let t = fb::RegistrationPinSet::create(
                fbb,
                &fb::RegistrationPinSetArgs { user: user.0, pin_hash: pin.as_ref() },
            );
            (fb::EventBody::RegistrationPinSet, t.as_union_value())
        }
        B::DirectBlockSet { chat, blocked } => {
            let chat = codec::chat_fb(chat);
            let t = fb::DirectBlockSet::create(fbb, &fb::DirectBlockSetArgs { chat: Some(&chat), blocked: *blocked });
            (fb::EventBody::DirectBlockSet, t.as_union_value())
        }
        B::StatusViewed { user, status_id, viewer } => {
            let t = fb::StatusViewed::create(
                fbb,
                &fb::StatusViewedArgs { user: user.0, status_id: *status_id, viewer: viewer.0 },
            );
            (fb::EventBody::StatusViewed, t.as_union_value())
        }
        B::ContactLookupRecorded { user, hashes } => {
            let t = fb::ContactLookupRecorded::create(
                fbb,
                &fb::ContactLookupRecordedArgs { user: user.0, hashes: *hashes },
            );
            (fb::EventBody::ContactLookupRecorded, t.as_union_value())
        }
        B::MediaUploaded { user, blake3, size } => {
            let t = fb::MediaUploaded::create(
                fbb,
                &fb::MediaUploadedArgs { user: user.0, blake3: Some(&fb::Blake3Digest::new(blake3)), size: *size },
            );
            (fb::EventBody::MediaUploaded, t.as_union_value())
        }
        B::OffsetsCommitted { consumer, offsets } => {
            let consumer = fbb.create_string(consumer);
            let offsets = fbb.create_vector(&crate::consumer::offsets_fb(offsets));
            let t = fb::OffsetsCommitted::create(
                fbb,
                &fb::OffsetsCommittedArgs { consumer: Some(consumer), offsets: Some(offsets) },
            );
            (fb::EventBody::OffsetsCommitted, t.as_union_value())
        }
        B::PushTokenSet { user, device, token, platform } => {
            let token = fbb.create_string(token);
            let platform = fbb.create_string(platform);
            let t = fb::PushTokenSet::create(
                fbb,
                &fb::PushTokenSetArgs { user: user.0, device: device.0, token: Some(token), platform: Some(platform) },
            );
            (fb::EventBody::PushTokenSet, t.as_union_value())
        }
        B::ReportFiled { user, chat, reason, messages } => {
            let reason = fbb.create_string(reason);
            let messages = crate::push::messages_fb(fbb, messages);
            let chat = chat.as_ref().map(chat_fb);
            let t = fb::ReportFiled::create(
                fbb,
                &fb::ReportFiledArgs {
                    user: user.0,
                    chat: chat.as_ref(),
                    reason: Some(reason),
                    messages: Some(messages),
                },
            );
            (fb::EventBody::ReportFiled, t.as_union_value())
        }
        B::DeviceKeysUploaded { user, device, prekeys, fallback_key, fallback_signature } => {
            let prekeys = codec::prekeys_fb(fbb, prekeys);
            let fallback_key = fallback_key.as_ref().map(|p| codec::prekey_fb(fbb, p));
            let fallback_signature = (!fallback_signature.is_empty()).then(|| fbb.create_vector(fallback_signature));
            let t = fb::DeviceKeysUploaded::create(
                fbb,
                &fb::DeviceKeysUploadedArgs {
                    user: user.0,
                    device: device.0,
                    prekeys: Some(prekeys),
                    fallback_key,
                    fallback_signature,
                },
            );
            (fb::EventBody::DeviceKeysUploaded, t.as_union_value())
        }
        B::DeviceKeysClaimed { user, claimed_by, claimed } => {
            let items: Vec<fb::ClaimedPrekey> =
                claimed.iter().map(|(d, id)| fb::ClaimedPrekey::new(d.0, *id)).collect();
            let claimed = fbb.create_vector(&items);
            let t = fb::DeviceKeysClaimed::create(
                fbb,
                &fb::DeviceKeysClaimedArgs { user: user.0, claimed_by: claimed_by.0, claimed: Some(claimed) },
            );
            (fb::EventBody::DeviceKeysClaimed, t.as_union_value())
        }
    }
}
