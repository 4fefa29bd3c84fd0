//! Commands: what a client asks a partition to do.

use serde::{Deserialize, Serialize};

use crate::codec::{self, ident, Builder};
use crate::consumer::{ConsumerKey, PartitionOffset};
use crate::error::check_len;
use crate::fb;
use crate::ids::{ChatId, DeviceId, Key, Seq, UserId};
use crate::limits::*;
use crate::types::{MediaRef, Origin, Prekey, ReceiptKind, Visibility};
use crate::{Error, Result};

/// A command with its origin. The partition state machine turns it into events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub origin: Origin,
    pub body: CommandBody,
}

/// Every command of chorus. The chat-partition commands come first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandBody {
    // chat partition
    /// Key: the direct chat of the origin user and `recipient`.
    SendDirect {
        recipient: UserId,
        ciphertext: Vec<u8>,
        media: Option<MediaRef>,
    },
    SendGroup {
        chat: ChatId,
        ciphertext: Vec<u8>,
        media: Option<MediaRef>,
    },
    EditMessage {
        chat: ChatId,
        seq: Seq,
        ciphertext: Vec<u8>,
    },
    DeleteMessage {
        chat: ChatId,
        seq: Seq,
    },
    /// An empty reaction removes the origin's reaction.
    SetReaction {
        chat: ChatId,
        seq: Seq,
        reaction: String,
    },
    Ack {
        chat: ChatId,
        kind: ReceiptKind,
        up_to_seq: Seq,
    },
    CreateGroup {
        chat: ChatId,
        name: String,
        members: Vec<UserId>,
    },
    AddMember {
        chat: ChatId,
        member: UserId,
    },
    RemoveMember {
        chat: ChatId,
        member: UserId,
    },
    PromoteMember {
        chat: ChatId,
        member: UserId,
    },
    DemoteMember {
        chat: ChatId,
        member: UserId,
    },
    ChangeGroupInfo {
        chat: ChatId,
        name: String,
        description: String,
        /// The group's picture (opaque to chorus); `None`: no picture.
        icon: Option<MediaRef>,
    },
    LeaveGroup {
        chat: ChatId,
    },
    // user partition: key is the origin user, except ClaimPrekey (the target)
    RegisterUser {
        phone: String,
    },
    /// Links a companion device; with `token_hash` (linked with a pairing
    /// code) its session opens in the same command.
    LinkDevice {
        device: DeviceId,
        identity_key: Vec<u8>,
        name: String,
        token_hash: Option<[u8; 32]>,
    },
    UnlinkDevice {
        device: DeviceId,
    },
    UpdateProfile {
        name: String,
        about: String,
        avatar: Option<MediaRef>,
    },
    SetPrivacy {
        last_seen: Visibility,
        profile_photo: Visibility,
        about: Visibility,
        read_receipts: bool,
    },
    /// A connection of the origin device came online or went away;
    /// `connection` is the edge's random id of it (a late offline of an old
    /// connection leaves a newer one of the device online).
    SetPresence {
        online: bool,
        connection: u64,
    },
    UploadPrekeys {
        device: DeviceId,
        prekeys: Vec<Prekey>,
    },
    ClaimPrekey {
        target: UserId,
        target_device: DeviceId,
    },
    PostStatus {
        status_id: u64,
        ciphertext: Vec<u8>,
        media: Option<MediaRef>,
        /// The user list `audience` reads (sorted and deduplicated when logged).
        acl: Vec<UserId>,
        audience: crate::social::StatusAudience,
        /// How long the post is visible: 0 or above 24 h means 24 h.
        ttl_ms: u64,
    },
    UpdateContacts {
        contacts: Vec<UserId>,
    },
    Block {
        target: UserId,
    },
    Unblock {
        target: UserId,
    },
    /// Opens a login session for a linked device of the origin user, replacing any
    /// earlier session of that device. Only the BLAKE3 hash of the token is logged.
    CreateSession {
        device: DeviceId,
        token_hash: [u8; 32],
    },
    /// Ends the device's session, if it has one.
    RevokeSession {
        device: DeviceId,
    },
    /// A wrong one-time code or registration PIN for the phone of the origin
    /// user ([`crate::edge::user_for_phone`]), registered or not: the
    /// partition counts them and locks the phone after too many.
    RecordOtpFailure,
    /// Registers a device in one step: the user (if new), the device and its
    /// session. A user with a registration PIN requires `pin_hash` (the slow
    /// hash of the PIN, see the edge), and a locked phone registers nothing.
    RegisterDevice {
        phone: String,
        device: DeviceId,
        identity_key: Vec<u8>,
        name: String,
        token_hash: [u8; 32],
        pin_hash: Option<[u8; 32]>,
    },
    /// Sets or (`None`) clears the origin user's registration PIN hash.
    SetRegistrationPin {
        pin_hash: Option<[u8; 32]>,
    },
    /// Key: the direct chat of the origin user and `peer`. The origin user
    /// blocks (or unblocks) `peer` there: the chat refuses `peer`'s sends.
    SetDirectBlock {
        peer: UserId,
        blocked: bool,
    },
    /// Key: `author`. The origin user viewed `author`'s status `status_id`:
    /// refused unless the post is live and its audience admits the viewer.
    ViewStatus {
        author: UserId,
        status_id: u64,
    },
    /// The origin user looks up `hashes` phone hashes in the contact
    /// directory: refused (`RateLimited`) past the day's allowance.
    RecordContactLookup {
        hashes: u32,
    },
    // ---- consumer partition (issue 13) ----
    /// Key: the consumer ([`Key::Consumer`]). Commits the named consumer's
    /// offsets; a partition's committed offset never moves back unless
    /// `reset`. With no offsets: changes nothing and answers the committed
    /// offsets (a read ordered by the log). Never sent by an edge: the
    /// log-node builds it from a `CommitOffsets` request (origin all zero).
    CommitOffsets {
        consumer: String,
        offsets: Vec<PartitionOffset>,
        reset: bool,
    },
    // ---- push and reports (issue 14) ----
    /// Sets (empty `token`: clears) the push token of the origin device,
    /// which must be linked.
    SetPushToken {
        token: String,
        platform: String,
    },
    /// Key: `reported`. The origin user reports `reported` (in `chat`, if
    /// given), revealing `messages` it decrypted. Refused for an unknown
    /// user or a self-report.
    FileReport {
        reported: UserId,
        chat: Option<ChatId>,
        reason: String,
        messages: Vec<crate::push::ReportedMessage>,
    },
    // ---- E2EE (issue 14) ----
    /// The origin device publishes `prekeys` (one-time keys, ids above every
    /// id it ever uploaded) and/or replaces its fallback key and signature.
    UploadDeviceKeys {
        prekeys: Vec<Prekey>,
        fallback_key: Option<Prekey>,
        fallback_signature: Vec<u8>,
    },
    /// Claims one key of every device of `target` (the key: `target`): its
    /// lowest unclaimed one-time key, or its fallback key when none is left.
    ClaimDeviceKeys {
        target: UserId,
    },
    // ---- media (issue 14) ----
    /// An edge stored (or found stored) the object `blake3` of `size` bytes
    /// for the origin user: `MediaUploaded` in the user's partition.
    RecordMedia {
        blake3: [u8; 32],
        size: u64,
    },
}

impl Command {
    /// The key whose partition must decide this command.
    pub fn key(&self) -> Key {
        use CommandBody::*;
        match &self.body {
            SendDirect { recipient, .. } => Key::Chat(ChatId::direct(self.origin.user, *recipient)),
            SetDirectBlock { peer, .. } => Key::Chat(ChatId::direct(self.origin.user, *peer)),
            SendGroup { chat, .. }
            | EditMessage { chat, .. }
            | DeleteMessage { chat, .. }
            | SetReaction { chat, .. }
            | Ack { chat, .. }
            | CreateGroup { chat, .. }
            | AddMember { chat, .. }
            | RemoveMember { chat, .. }
            | PromoteMember { chat, .. }
            | DemoteMember { chat, .. }
            | ChangeGroupInfo { chat, .. }
            | LeaveGroup { chat } => Key::Chat(*chat),
            ClaimPrekey { target, .. } | ClaimDeviceKeys { target } => Key::User(*target),
            ViewStatus { author, .. } => Key::User(*author),
            RegisterUser { .. }
            | LinkDevice { .. }
            | UnlinkDevice { .. }
            | UpdateProfile { .. }
            | SetPrivacy { .. }
            | SetPresence { .. }
            | UploadPrekeys { .. }
            | PostStatus { .. }
            | UpdateContacts { .. }
            | Block { .. }
            | Unblock { .. }
            | CreateSession { .. }
            | RevokeSession { .. }
            | RecordOtpFailure
            | RegisterDevice { .. }
            | SetRegistrationPin { .. }
            | RecordContactLookup { .. }
            | UploadDeviceKeys { .. } => Key::User(self.origin.user),
            CommitOffsets { consumer, .. } => Key::Consumer(ConsumerKey::of(consumer)),
            SetPushToken { .. } => Key::User(self.origin.user),
            FileReport { reported, .. } => Key::User(*reported),
            RecordMedia { .. } => Key::User(self.origin.user),
        }
    }

    /// The name of the command's kind, for logs and error messages.
    pub fn kind(&self) -> &'static str {
        use CommandBody::*;
        match &self.body {
            SendDirect { .. } => "SendDirect",
            SendGroup { .. } => "SendGroup",
            EditMessage { .. } => "EditMessage",
            DeleteMessage { .. } => "DeleteMessage",
            SetReaction { .. } => "SetReaction",
            Ack { .. } => "Ack",
            CreateGroup { .. } => "CreateGroup",
            AddMember { .. } => "AddMember",
            RemoveMember { .. } => "RemoveMember",
            PromoteMember { .. } => "PromoteMember",
            DemoteMember { .. } => "DemoteMember",
            ChangeGroupInfo { .. } => "ChangeGroupInfo",
            LeaveGroup { .. } => "LeaveGroup",
            RegisterUser { .. } => "RegisterUser",
            LinkDevice { .. } => "LinkDevice",
            UnlinkDevice { .. } => "UnlinkDevice",
            UpdateProfile { .. } => "UpdateProfile",
            SetPrivacy { .. } => "SetPrivacy",
            SetPresence { .. } => "SetPresence",
            UploadPrekeys { .. } => "UploadPrekeys",
            ClaimPrekey { .. } => "ClaimPrekey",
            PostStatus { .. } => "PostStatus",
            UpdateContacts { .. } => "UpdateContacts",
            Block { .. } => "Block",
            Unblock { .. } => "Unblock",
            CreateSession { .. } => "CreateSession",
            RevokeSession { .. } => "RevokeSession",
            RecordOtpFailure => "RecordOtpFailure",
            RegisterDevice { .. } => "RegisterDevice",
            SetRegistrationPin { .. } => "SetRegistrationPin",
            SetDirectBlock { .. } => "SetDirectBlock",
            ViewStatus { .. } => "ViewStatus",
            RecordContactLookup { .. } => "RecordContactLookup",
            CommitOffsets { .. } => "CommitOffsets",
            SetPushToken { .. } => "SetPushToken",
            FileReport { .. } => "FileReport",
            UploadDeviceKeys { .. } => "UploadDeviceKeys",
            ClaimDeviceKeys { .. } => "ClaimDeviceKeys",
            RecordMedia { .. } => "RecordMedia",
        }
    }

    /// Checks the field limits of [`crate::limits`]. `decode` runs this; the
    /// partition state machine runs it again for commands built in-process.
    ///
    /// # Errors
    /// [`Error::TooLarge`] naming the first field over its limit.
    pub fn validate(&self) -> Result<()> {
        use CommandBody::*;
        match &self.body {
            SendDirect { ciphertext, media, .. } | SendGroup { ciphertext, media, .. } => {
                check_len("ciphertext", ciphertext.len(), MAX_CIPHERTEXT_BYTES)?;
                validate_media(media)
            }
            EditMessage { ciphertext, .. } => check_len("ciphertext", ciphertext.len(), MAX_CIPHERTEXT_BYTES),
            DeleteMessage { .. } | Ack { .. } | LeaveGroup { .. } => Ok(()),
            SetReaction { reaction, .. } => check_len("reaction", reaction.len(), MAX_REACTION_BYTES),
            CreateGroup { name, members, .. } => {
                check_len("group name", name.len(), MAX_NAME_BYTES)?;
                check_len("group members", members.len(), MAX_GROUP_MEMBERS)
            }
            AddMember { .. } | RemoveMember { .. } | PromoteMember { .. } | DemoteMember { .. } => Ok(()),
            ChangeGroupInfo { name, description, icon, .. } => {
                check_len("group name", name.len(), MAX_NAME_BYTES)?;
                check_len("group description", description.len(), MAX_ABOUT_BYTES)?;
                validate_media(icon)
            }
            RegisterUser { phone } => check_len("phone", phone.len(), MAX_PHONE_BYTES),
            LinkDevice { identity_key, name, .. } => {
                check_len("identity key", identity_key.len(), MAX_KEY_BYTES)?;
                check_len("device name", name.len(), MAX_NAME_BYTES)
            }
            UnlinkDevice { .. } | SetPrivacy { .. } | SetPresence { .. } | ClaimPrekey { .. } => Ok(()),
            UpdateProfile { name, about, avatar } => {
                check_len("profile name", name.len(), MAX_NAME_BYTES)?;
                check_len("profile about", about.len(), MAX_ABOUT_BYTES)?;
                validate_media(avatar)
            }
            UploadPrekeys { prekeys, .. } => {
                check_len("prekeys", prekeys.len(), MAX_PREKEYS_PER_UPLOAD)?;
                prekeys.iter().try_for_each(Prekey::validate)
            }
            PostStatus { ciphertext, media, acl, .. } => {
                check_len("ciphertext", ciphertext.len(), MAX_CIPHERTEXT_BYTES)?;
                check_len("status acl", acl.len(), MAX_ACL)?;
                validate_media(media)
            }
            UpdateContacts { contacts } => check_len("contacts", contacts.len(), MAX_CONTACTS),
            Block { .. } | Unblock { .. } | CreateSession { .. } | RevokeSession { .. } => Ok(()),
            RecordOtpFailure | SetRegistrationPin { .. } | SetDirectBlock { .. } => Ok(()),
            ViewStatus { .. } | RecordContactLookup { .. } | RecordMedia { .. } => Ok(()),
            CommitOffsets { consumer, offsets, .. } => {
                crate::consumer::validate_name(consumer)?;
                crate::consumer::validate_offsets(offsets)
            }
            UploadDeviceKeys { prekeys, fallback_key, fallback_signature } => {
                crate::keys::validate_upload(prekeys, fallback_key, fallback_signature)
            }
            ClaimDeviceKeys { .. } => Ok(()),
            RegisterDevice { phone, identity_key, name, .. } => {
                check_len("phone", phone.len(), MAX_PHONE_BYTES)?;
                check_len("identity key", identity_key.len(), MAX_KEY_BYTES)?;
                check_len("device name", name.len(), MAX_NAME_BYTES)
            }
            SetPushToken { token, platform } => crate::push::validate_push(token, platform),
            FileReport { reason, messages, .. } => crate::push::validate_report(reason, messages),
        }
    }

    /// Encodes as a flatbuffer with file identifier `CCMD`. Does not validate.
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = Builder::with_capacity(128);
        let (body_type, body) = encode_body(&mut fbb, &self.body);
        let origin = codec::origin_fb(&self.origin);
        let root =
            fb::Command::create(&mut fbb, &fb::CommandArgs { origin: Some(&origin), body_type, body: Some(body) });
        codec::finish(fbb, root, ident::COMMAND)
    }

    /// Verifies and decodes a buffer made by [`Command::encode`], then validates it.
    ///
    /// # Errors
    /// [`Error::TooLarge`] above [`MAX_COMMAND_BYTES`] or a field limit;
    /// [`Error::Malformed`] if the verifier refuses the buffer or it holds an unknown
    /// command or enum value.
    pub fn decode(buf: &[u8]) -> Result<Command> {
        let c = codec::root::<fb::Command>(buf, "command", ident::COMMAND, MAX_COMMAND_BYTES, 1024)?;
        let cmd = from_fb(c)?;
        cmd.validate()?;
        Ok(cmd)
    }
}

fn validate_media(m: &Option<MediaRef>) -> Result<()> {
    m.as_ref().map_or(Ok(()), MediaRef::validate)
}

pub(crate) fn from_fb(c: fb::Command<'_>) -> Result<Command> {
    let origin = codec::origin(c.origin());
    let tag = c.body_type();
    let bad = || codec::bad_union("command body", tag.0);
    macro_rules! get {
        ($e:expr) => {
            $e.ok_or_else(bad)?
        };
    }
    use codec::{chat, opt_media, seq, users};
    let body = match tag {
        fb::CommandBody::SendDirect => {
            let b = get!(c.body_as_send_direct());
            CommandBody::SendDirect {
                recipient: UserId(b.recipient()),
                ciphertext: b.ciphertext().bytes().to_vec(),
                media: opt_media(b.media()),
            }
        }
        fb::CommandBody::SendGroup => {
            let b = get!(c.body_as_send_group());
            CommandBody::SendGroup {
                chat: chat(b.chat()),
                ciphertext: b.ciphertext().bytes().to_vec(),
                media: opt_media(b.media()),
            }
        }
        fb::CommandBody::EditMessage => {
            let b = get!(c.body_as_edit_message());
            CommandBody::EditMessage {
                chat: chat(b.chat()),
                seq: seq(b.seq()),
                ciphertext: b.ciphertext().bytes().to_vec(),
            }
        }
        fb::CommandBody::DeleteMessage => {
            let b = get!(c.body_as_delete_message());
            CommandBody::DeleteMessage { chat: chat(b.chat()), seq: seq(b.seq()) }
        }
        fb::CommandBody::SetReaction => {
            let b = get!(c.body_as_set_reaction());
            CommandBody::SetReaction { chat: chat(b.chat()), seq: seq(b.seq()), reaction: b.reaction().to_owned() }
        }
        fb::CommandBody::Ack => {
            let b = get!(c.body_as_ack());
            CommandBody::Ack {
                chat: chat(b.chat()),
                kind: codec::receipt_kind(b.kind())?,
                up_to_seq: seq(b.up_to_seq()),
            }
        }
        fb::CommandBody::CreateGroup => {
            let b = get!(c.body_as_create_group());
            check_len("group members", b.members().len(), MAX_GROUP_MEMBERS)?;
            CommandBody::CreateGroup { chat: chat(b.chat()), name: b.name().to_owned(), members: users(b.members()) }
        }
        fb::CommandBody::AddMember => {
            let b = get!(c.body_as_add_member());
            CommandBody::AddMember { chat: chat(b.chat()), member: UserId(b.member()) }
        }
        fb::CommandBody::RemoveMember => {
            let b = get!(c.body_as_remove_member());
            CommandBody::RemoveMember { chat: chat(b.chat()), member: UserId(b.member()) }
        }
        fb::CommandBody::PromoteMember => {
            let b = get!(c.body_as_promote_member());
            CommandBody::PromoteMember { chat: chat(b.chat()), member: UserId(b.member()) }
        }
        fb::CommandBody::DemoteMember => {
            let b = get!(c.body_as_demote_member());
            CommandBody::DemoteMember { chat: chat(b.chat()), member: UserId(b.member()) }
        }
        fb::CommandBody::ChangeGroupInfo => {
            let b = get!(c.body_as_change_group_info());
            CommandBody::ChangeGroupInfo {
                chat: chat(b.chat()),
                name: b.name().to_owned(),
                description: b.description().to_owned(),
                icon: opt_media(b.icon()),
            }
        }
        fb::CommandBody::LeaveGroup => {
            let b = get!(c.body_as_leave_group());
            CommandBody::LeaveGroup { chat: chat(b.chat()) }
        }
        fb::CommandBody::RegisterUser => {
            let b = get!(c.body_as_register_user());
            CommandBody::RegisterUser { phone: b.phone().to_owned() }
        }
        fb::CommandBody::LinkDevice => {
            let b = get!(c.body_as_link_device());
            CommandBody::LinkDevice {
                device: DeviceId(b.device()),
                identity_key: b.identity_key().bytes().to_vec(),
                name: b.name().to_owned(),
                token_hash: b.token_hash().map(|h| h.0),
            }
        }
        fb::CommandBody::UnlinkDevice => {
            let b = get!(c.body_as_unlink_device());
            CommandBody::UnlinkDevice { device: DeviceId(b.device()) }
        }
        fb::CommandBody::UpdateProfile => {
            let b = get!(c.body_as_update_profile());
            CommandBody::UpdateProfile {
                name: b.name().to_owned(),
                about: b.about().to_owned(),
                avatar: opt_media(b.avatar()),
            }
        }
        fb::CommandBody::SetPrivacy => {
            let b = get!(c.body_as_set_privacy());
            CommandBody::SetPrivacy {
                last_seen: codec::visibility(b.last_seen())?,
                profile_photo: codec::visibility(b.profile_photo())?,
                about: codec::visibility(b.about())?,
                read_receipts: b.read_receipts(),
            }
        }
        fb::CommandBody::SetPresence => {
            let b = get!(c.body_as_set_presence());
            CommandBody::SetPresence { online: b.online(), connection: b.connection() }
        }
        fb::CommandBody::UploadPrekeys => {
            let b = get!(c.body_as_upload_prekeys());
            check_len("prekeys", b.prekeys().len(), MAX_PREKEYS_PER_UPLOAD)?;
            CommandBody::UploadPrekeys { device: DeviceId(b.device()), prekeys: codec::prekeys(b.prekeys()) }
        }
        fb::CommandBody::ClaimPrekey => {
            let b = get!(c.body_as_claim_prekey());
            CommandBody::ClaimPrekey { target: UserId(b.target()), target_device: DeviceId(b.target_device()) }
        }
        fb::CommandBody::PostStatus => {
            let b = get!(c.body_as_post_status());
            check_len("status acl", b.acl().len(), MAX_ACL)?;
            CommandBody::PostStatus {
                status_id: b.status_id(),
                ciphertext: b.ciphertext().bytes().to_vec(),
                media: opt_media(b.media()),
                acl: users(b.acl()),
                audience: crate::social::StatusAudience::from_fb(b.audience())?,
                ttl_ms: b.ttl_ms(),
            }
        }
        fb::CommandBody::UpdateContacts => {
            let b = get!(c.body_as_update_contacts());
            check_len("contacts", b.contacts().len(), MAX_CONTACTS)?;
            CommandBody::UpdateContacts { contacts: users(b.contacts()) }
        }
        fb::CommandBody::Block => {
            let b = get!(c.body_as_block());
            CommandBody::Block { target: UserId(b.target()) }
        }
        fb::CommandBody::Unblock => {
            let b = get!(c.body_as_unblock());
            CommandBody::Unblock { target: UserId(b.target()) }
        }
        fb::CommandBody::CreateSession => {
            let b = get!(c.body_as_create_session());
            CommandBody::CreateSession { device: DeviceId(b.device()), token_hash: b.token_hash().0 }
        }
        fb::CommandBody::RevokeSession => {
            let b = get!(c.body_as_revoke_session());
            CommandBody::RevokeSession { device: DeviceId(b.device()) }
        }
        fb::CommandBody::RecordOtpFailure => {
            get!(c.body_as_record_otp_failure());
            CommandBody::RecordOtpFailure
        }
        fb::CommandBody::RegisterDevice => {
            let b = get!(c.body_as_register_device());
            CommandBody::RegisterDevice {
                phone: b.phone().to_owned(),
                device: DeviceId(b.device()),
                identity_key: b.identity_key().bytes().to_vec(),
                name: b.name().to_owned(),
                token_hash: b.token_hash().0,
                pin_hash: b.pin_hash().map(|h| h.0),
            }
        }
        fb::CommandBody::SetRegistrationPin => {
            let b = get!(c.body_as_set_registration_pin());
            CommandBody::SetRegistrationPin { pin_hash: b.pin_hash().map(|h| h.0) }
        }
        fb::CommandBody::SetDirectBlock => {
            let b = get!(c.body_as_set_direct_block());
            CommandBody::SetDirectBlock { peer: UserId(b.peer()), blocked: b.blocked() }
        }
        fb::CommandBody::ViewStatus => {
            let b = get!(c.body_as_view_status());
            CommandBody::ViewStatus { author: UserId(b.author()), status_id: b.status_id() }
        }
        fb::CommandBody::RecordContactLookup => {
            let b = get!(c.body_as_record_contact_lookup());
            CommandBody::RecordContactLookup { hashes: b.hashes() }
        }
        fb::CommandBody::RecordMedia => {
            let b = get!(c.body_as_record_media());
            CommandBody::RecordMedia { blake3: b.blake3().0, size: b.size() }
        }
        fb::CommandBody::CommitOffsets => {
            let b = get!(c.body_as_commit_offsets());
            CommandBody::CommitOffsets {
                consumer: b.consumer().to_owned(),
                offsets: crate::consumer::offsets_of(b.offsets()),
                reset: b.reset(),
            }
        }
        fb::CommandBody::SetPushToken => {
            let b = get!(c.body_as_set_push_token());
            CommandBody::SetPushToken { token: b.token().to_owned(), platform: b.platform().to_owned() }
        }
        fb::CommandBody::FileReport => {
            let b = get!(c.body_as_file_report());
            CommandBody::FileReport {
                reported: UserId(b.reported()),
                chat: b.chat().map(codec::chat),
                reason: b.reason().to_owned(),
                messages: crate::push::messages_of(Some(b.messages()))?,
            }
        }
        fb::CommandBody::UploadDeviceKeys => {
            let b = get!(c.body_as_upload_device_keys());
            check_len("prekeys", b.prekeys().map_or(0, |p| p.len()), MAX_PREKEYS_PER_UPLOAD)?;
            CommandBody::UploadDeviceKeys {
                prekeys: b.prekeys().map(codec::prekeys).unwrap_or_default(),
                fallback_key: b.fallback_key().map(codec::prekey),
                fallback_signature: b.fallback_signature().map(|s| s.bytes().to_vec()).unwrap_or_default(),
            }
        }
        fb::CommandBody::ClaimDeviceKeys => {
            let b = get!(c.body_as_claim_device_keys());
            CommandBody::ClaimDeviceKeys { target: UserId(b.target()) }
        }
        _ => return Err(bad()),
    };
    Ok(Command { origin, body })
}

fn encode_body<'a>(
    fbb: &mut Builder<'a>,
    body: &CommandBody,
) -> (fb::CommandBody, flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>) {
    use codec::{chat_fb, opt_media_fb, users_fb};
    use CommandBody as B;
    match body {
        B::SendDirect { recipient, ciphertext, media } => {
            let ciphertext = fbb.create_vector(ciphertext);
            let media = opt_media_fb(fbb, media);
            let t = fb::SendDirect::create(
                fbb,
                &fb::SendDirectArgs { recipient: recipient.0, ciphertext: Some(ciphertext), media },
            );
            (fb::CommandBody::SendDirect, t.as_union_value())
        }
        B::SendGroup { chat, ciphertext, media } => {
            let ciphertext = fbb.create_vector(ciphertext);
            let media = opt_media_fb(fbb, media);
            let chat = chat_fb(chat);
            let t = fb::SendGroup::create(
                fbb,
                &fb::SendGroupArgs { chat: Some(&chat), ciphertext: Some(ciphertext), media },
            );
            (fb::CommandBody::SendGroup, t.as_union_value())
        }
        B::EditMessage { chat, seq, ciphertext } => {
            let ciphertext = fbb.create_vector(ciphertext);
            let chat = chat_fb(chat);
            let t = fb::EditMessage::create(
                fbb,
                &fb::EditMessageArgs { chat: Some(&chat), seq: seq.0, ciphertext: Some(ciphertext) },
            );
            (fb::CommandBody::EditMessage, t.as_union_value())
        }
        B::DeleteMessage { chat, seq } => {
            let chat = chat_fb(chat);
            let t = fb::DeleteMessage::create(fbb, &fb::DeleteMessageArgs { chat: Some(&chat), seq: seq.0 });
            (fb::CommandBody::DeleteMessage, t.as_union_value())
        }
        B::SetReaction { chat, seq, reaction } => {
            let reaction = fbb.create_string(reaction);
            let chat = chat_fb(chat);
            let t = fb::SetReaction::create(
                fbb,
                &fb::SetReactionArgs { chat: Some(&chat), seq: seq.0, reaction: Some(reaction) },
            );
            (fb::CommandBody::SetReaction, t.as_union_value())
        }
        B::Ack { chat, kind, up_to_seq } => {
            let chat = chat_fb(chat);
            let t = fb::Ack::create(
                fbb,
                &fb::AckArgs { chat: Some(&chat), kind: codec::receipt_kind_fb(*kind), up_to_seq: up_to_seq.0 },
            );
            (fb::CommandBody::Ack, t.as_union_value())
        }
        B::CreateGroup { chat, name, members } => {
            let name = fbb.create_string(name);
            let members = users_fb(fbb, members);
            let chat = chat_fb(chat);
            let t = fb::CreateGroup::create(
                fbb,
                &fb::CreateGroupArgs { chat: Some(&chat), name: Some(name), members: Some(members) },
            );
            (fb::CommandBody::CreateGroup, t.as_union_value())
        }
        B::AddMember { chat, member } => {
            let chat = chat_fb(chat);
            let t = fb::AddMember::create(fbb, &fb::AddMemberArgs { chat: Some(&chat), member: member.0 });
            (fb::CommandBody::AddMember, t.as_union_value())
        }
        B::RemoveMember { chat, member } => {
            let chat = chat_fb(chat);
            let t = fb::RemoveMember::create(fbb, &fb::RemoveMemberArgs { chat: Some(&chat), member: member.0 });
            (fb::CommandBody::RemoveMember, t.as_union_value())
        }
        B::PromoteMember { chat, member } => {
            let chat = chat_fb(chat);
            let t = fb::PromoteMember::create(fbb, &fb::PromoteMemberArgs { chat: Some(&chat), member: member.0 });
            (fb::CommandBody::PromoteMember, t.as_union_value())
        }
        B::DemoteMember { chat, member } => {
            let chat = chat_fb(chat);
            let t = fb::DemoteMember::create(fbb, &fb::DemoteMemberArgs { chat: Some(&chat), member: member.0 });
            (fb::CommandBody::DemoteMember, t.as_union_value())
        }
        B::ChangeGroupInfo { chat, name, description, icon } => {
            let name = fbb.create_string(name);
            let description = fbb.create_string(description);
            let icon = opt_media_fb(fbb, icon);
            let chat = chat_fb(chat);
            let t = fb::ChangeGroupInfo::create(
                fbb,
                &fb::ChangeGroupInfoArgs { chat: Some(&chat), name: Some(name), description: Some(description), icon },
            );
            (fb::CommandBody::ChangeGroupInfo, t.as_union_value())
        }
        B::LeaveGroup { chat } => {
            let chat = chat_fb(chat);
            let t = fb::LeaveGroup::create(fbb, &fb::LeaveGroupArgs { chat: Some(&chat) });
            (fb::CommandBody::LeaveGroup, t.as_union_value())
        }
        B::RegisterUser { phone } => {
            let phone = fbb.create_string(phone);
            let t = fb::RegisterUser::create(fbb, &fb::RegisterUserArgs { phone: Some(phone) });
            (fb::CommandBody::RegisterUser, t.as_union_value())
        }
        B::LinkDevice { device, identity_key, name, token_hash } => {
            let identity_key = fbb.create_vector(identity_key);
            let name = fbb.create_string(name);
            let token_hash = token_hash.map(fb::Blake3Digest);
            let t = fb::LinkDevice::create(
                fbb,
                &fb::LinkDeviceArgs {
                    device: device.0,
                    identity_key: Some(identity_key),
                    name: Some(name),
                    token_hash: token_hash.as_ref(),
                },
            );
            (fb::CommandBody::LinkDevice, t.as_union_value())
        }
        B::UnlinkDevice { device } => {
            let t = fb::UnlinkDevice::create(fbb, &fb::UnlinkDeviceArgs { device: device.0 });
            (fb::CommandBody::UnlinkDevice, t.as_union_value())
        }
        B::UpdateProfile { name, about, avatar } => {
            let name = fbb.create_string(name);
            let about = fbb.create_string(about);
            let avatar = opt_media_fb(fbb, avatar);
            let t =
                fb::UpdateProfile::create(fbb, &fb::UpdateProfileArgs { name: Some(name), about: Some(about), avatar });
            (fb::CommandBody::UpdateProfile, t.as_union_value())
        }
        B::SetPrivacy { last_seen, profile_photo, about, read_receipts } => {
            let t = fb::SetPrivacy::create(
                fbb,
                &fb::SetPrivacyArgs {
                    last_seen: codec::visibility_fb(*last_seen),
                    profile_photo: codec::visibility_fb(*profile_photo),
                    about: codec::visibility_fb(*about),
                    read_receipts: *read_receipts,
                },
            );
            (fb::CommandBody::SetPrivacy, t.as_union_value())
        }
        B::SetPresence { online, connection } => {
            let t = fb::SetPresence::create(fbb, &fb::SetPresenceArgs { online: *online, connection: *connection });
            (fb::CommandBody::SetPresence, t.as_union_value())
        }
        B::UploadPrekeys { device, prekeys } => {
            let prekeys = codec::prekeys_fb(fbb, prekeys);
            let t = fb::UploadPrekeys::create(fbb, &fb::UploadPrekeysArgs { device: device.0, prekeys: Some(prekeys) });
            (fb::CommandBody::UploadPrekeys, t.as_union_value())
        }
        B::ClaimPrekey { target, target_device } => {
            let t =
                fb::ClaimPrekey::create(fbb, &fb::ClaimPrekeyArgs { target: target.0, target_device: target_device.0 });
            (fb::CommandBody::ClaimPrekey, t.as_union_value())
        }
        B::PostStatus { status_id, ciphertext, media, acl, audience, ttl_ms } => {
            let ciphertext = fbb.create_vector(ciphertext);
            let media = opt_media_fb(fbb, media);
            let acl = users_fb(fbb, acl);
            let t = fb::PostStatus::create(
                fbb,
                &fb::PostStatusArgs {
                    status_id: *status_id,
                    ciphertext: Some(ciphertext),
                    media,
                    acl: Some(acl),
                    audience: audience.to_fb(),
                    ttl_ms: *ttl_ms,
                },
            );
            (fb::CommandBody::PostStatus, t.as_union_value())
        }
        B::UpdateContacts { contacts } => {
            let contacts = users_fb(fbb, contacts);
            let t = fb::UpdateContacts::create(fbb, &fb::UpdateContactsArgs { contacts: Some(contacts) });
            (fb::CommandBody::UpdateContacts, t.as_union_value())
        }
        B::Block { target } => {
            let t = fb::Block::create(fbb, &fb::BlockArgs { target: target.0 });
            (fb::CommandBody::Block, t.as_union_value())
        }
        B::Unblock { target } => {
            let t = fb::Unblock::create(fbb, &fb::UnblockArgs { target: target.0 });
            (fb::CommandBody::Unblock, t.as_union_value())
        }
        B::CreateSession { device, token_hash } => {
            let digest = fb::Blake3Digest(*token_hash);
            let t =
                fb::CreateSession::create(fbb, &fb::CreateSessionArgs { device: device.0, token_hash: Some(&digest) });
            (fb::CommandBody::CreateSession, t.as_union_value())
        }
        B::RevokeSession { device } => {
            let t = fb::RevokeSession::create(fbb, &fb::RevokeSessionArgs { device: device.0 });
            (fb::CommandBody::RevokeSession, t.as_union_value())
        }
        B::RecordOtpFailure => {
            let t = fb::RecordOtpFailure::create(fbb, &fb::RecordOtpFailureArgs {});
            (fb::CommandBody::RecordOtpFailure, t.as_union_value())
        }
        B::RegisterDevice { phone, device, identity_key, name, token_hash, pin_hash } => {
            let phone = fbb.create_string(phone);
            let identity_key = fbb.create_vector(identity_key);
            let name = fbb.create_string(name);
            let token = fb::Blake3Digest(*token_hash);
            let pin = pin_hash.map(fb::Blake3Digest);
            let t = fb::RegisterDevice::create(
                fbb,
                &fb::RegisterDeviceArgs {
                    phone: Some(phone),
                    device: device.0,
                    identity_key: Some(identity_key),
                    name: Some(name),
                    token_hash: Some(&token),
                    pin_hash: pin.as_ref(),
                },
            );
            (fb::CommandBody::RegisterDevice, t.as_union_value())
        }
        B::SetRegistrationPin { pin_hash } => {
            let pin = pin_hash.map(fb::Blake3Digest);
            let t = fb::SetRegistrationPin::create(fbb, &fb::SetRegistrationPinArgs { pin_hash: pin.as_ref() });
            (fb::CommandBody::SetRegistrationPin, t.as_union_value())
        }
        B::SetDirectBlock { peer, blocked } => {
            let t = fb::SetDirectBlock::create(fbb, &fb::SetDirectBlockArgs { peer: peer.0, blocked: *blocked });
            (fb::CommandBody::SetDirectBlock, t.as_union_value())
        }
        B::ViewStatus { author, status_id } => {
            let t = fb::ViewStatus::create(fbb, &fb::ViewStatusArgs { author: author.0, status_id: *status_id });
            (fb::CommandBody::ViewStatus, t.as_union_value())
        }
        B::RecordContactLookup { hashes } => {
            let t = fb::RecordContactLookup::create(fbb, &fb::RecordContactLookupArgs { hashes: *hashes });
            (fb::CommandBody::RecordContactLookup, t.as_union_value())
        }
        B::RecordMedia { blake3, size } => {
            let t = fb::RecordMedia::create(
                fbb,
                &fb::RecordMediaArgs { blake3: Some(&fb::Blake3Digest::new(blake3)), size: *size },
            );
            (fb::CommandBody::RecordMedia, t.as_union_value())
        }
        B::CommitOffsets { consumer, offsets, reset } => {
            let consumer = fbb.create_string(consumer);
            let offsets = fbb.create_vector(&crate::consumer::offsets_fb(offsets));
            let t = fb::CommitOffsets::create(
                fbb,
                &fb::CommitOffsetsArgs { consumer: Some(consumer), offsets: Some(offsets), reset: *reset },
            );
            (fb::CommandBody::CommitOffsets, t.as_union_value())
        }
        B::SetPushToken { token, platform } => {
            let token = fbb.create_string(token);
            let platform = fbb.create_string(platform);
            let t =
                fb::SetPushToken::create(fbb, &fb::SetPushTokenArgs { token: Some(token), platform: Some(platform) });
            (fb::CommandBody::SetPushToken, t.as_union_value())
        }
        B::FileReport { reported, chat, reason, messages } => {
            let reason = fbb.create_string(reason);
            let messages = crate::push::messages_fb(fbb, messages);
            let chat = chat.as_ref().map(chat_fb);
            let t = fb::FileReport::create(
                fbb,
                &fb::FileReportArgs {
                    reported: reported.0,
                    chat: chat.as_ref(),
                    reason: Some(reason),
                    messages: Some(messages),
                },
            );
            (fb::CommandBody::FileReport, t.as_union_value())
        }
        B::UploadDeviceKeys { prekeys, fallback_key, fallback_signature } => {
            let prekeys = codec::prekeys_fb(fbb, prekeys);
            let fallback_key = fallback_key.as_ref().map(|p| codec::prekey_fb(fbb, p));
            let fallback_signature = (!fallback_signature.is_empty()).then(|| fbb.create_vector(fallback_signature));
            let t = fb::UploadDeviceKeys::create(
                fbb,
                &fb::UploadDeviceKeysArgs { prekeys: Some(prekeys), fallback_key, fallback_signature },
            );
            (fb::CommandBody::UploadDeviceKeys, t.as_union_value())
        }
        B::ClaimDeviceKeys { target } => {
            let t = fb::ClaimDeviceKeys::create(fbb, &fb::ClaimDeviceKeysArgs { target: target.0 });
            (fb::CommandBody::ClaimDeviceKeys, t.as_union_value())
        }
    }
}

impl From<Error> for crate::outcome::Rejection {
    fn from(e: Error) -> Self {
        crate::outcome::Rejection { code: crate::outcome::RejectCode::Invalid, message: e.to_string() }
    }
}
