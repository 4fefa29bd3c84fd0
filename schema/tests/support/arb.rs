//! proptest strategies for every domain type of chorus-schema (shared by the tests).

use chorus_schema::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

pub(crate) fn user() -> impl Strategy<Value = UserId> {
    prop_oneof![0u64..8, any::<u64>()].prop_map(UserId)
}
pub(crate) fn device() -> impl Strategy<Value = DeviceId> {
    any::<u32>().prop_map(DeviceId)
}
pub(crate) fn seq() -> impl Strategy<Value = Seq> {
    prop_oneof![0u64..16, any::<u64>()].prop_map(Seq)
}
pub(crate) fn chat() -> impl Strategy<Value = ChatId> {
    any::<[u8; 16]>().prop_map(ChatId)
}
pub(crate) fn node() -> impl Strategy<Value = NodeId> {
    any::<u64>().prop_map(NodeId)
}
pub(crate) fn group() -> impl Strategy<Value = GroupId> {
    any::<u16>().prop_map(GroupId)
}

pub(crate) fn partition() -> impl Strategy<Value = PartitionId> {
    any::<u16>().prop_map(PartitionId)
}
pub(crate) fn origin() -> impl Strategy<Value = Origin> {
    (user(), device(), any::<u64>()).prop_map(|(user, device, c)| Origin {
        user,
        device,
        client_msg_id: ClientMsgId(c),
    })
}
pub(crate) fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}
/// Strings up to `max` bytes (any Unicode, trimmed to a char boundary).
pub(crate) fn text(max: usize) -> impl Strategy<Value = String> {
    any::<String>().prop_map(move |mut s| {
        while s.len() > max {
            s.pop();
        }
        s
    })
}
pub(crate) fn users(max: usize) -> impl Strategy<Value = Vec<UserId>> {
    vec(user(), 0..max)
}
pub(crate) fn media() -> impl Strategy<Value = MediaRef> {
    (any::<[u8; 32]>(), any::<u64>(), text(MAX_MIME_BYTES)).prop_map(|(blake3, size, mime)| MediaRef {
        blake3,
        size,
        mime,
    })
}
pub(crate) fn opt_media() -> impl Strategy<Value = Option<MediaRef>> {
    option::of(media())
}
pub(crate) fn kind() -> impl Strategy<Value = ReceiptKind> {
    prop_oneof![Just(ReceiptKind::Delivered), Just(ReceiptKind::Read)]
}
pub(crate) fn visibility() -> impl Strategy<Value = Visibility> {
    prop_oneof![Just(Visibility::Everyone), Just(Visibility::Contacts), Just(Visibility::Nobody)]
}
pub(crate) fn prekey() -> impl Strategy<Value = Prekey> {
    (any::<u32>(), bytes(40)).prop_map(|(id, key)| Prekey { id, key })
}

pub(crate) fn command_body() -> impl Strategy<Value = CommandBody> {
    use CommandBody::*;
    prop_oneof![
        (user(), bytes(64), opt_media()).prop_map(|(recipient, ciphertext, media)| SendDirect {
            recipient,
            ciphertext,
            media
        }),
        (chat(), bytes(64), opt_media()).prop_map(|(chat, ciphertext, media)| SendGroup { chat, ciphertext, media }),
        (chat(), seq(), bytes(64)).prop_map(|(chat, seq, ciphertext)| EditMessage { chat, seq, ciphertext }),
        (chat(), seq()).prop_map(|(chat, seq)| DeleteMessage { chat, seq }),
        (chat(), seq(), text(MAX_REACTION_BYTES)).prop_map(|(chat, seq, reaction)| SetReaction { chat, seq, reaction }),
        (chat(), kind(), seq()).prop_map(|(chat, kind, up_to_seq)| Ack { chat, kind, up_to_seq }),
        (chat(), text(MAX_NAME_BYTES), users(8)).prop_map(|(chat, name, members)| CreateGroup { chat, name, members }),
        (chat(), user()).prop_map(|(chat, member)| AddMember { chat, member }),
        (chat(), user()).prop_map(|(chat, member)| RemoveMember { chat, member }),
        (chat(), user()).prop_map(|(chat, member)| PromoteMember { chat, member }),
        (chat(), user()).prop_map(|(chat, member)| DemoteMember { chat, member }),
        (chat(), text(MAX_NAME_BYTES), text(200), opt_media())
            .prop_map(|(chat, name, description, icon)| { ChangeGroupInfo { chat, name, description, icon } }),
        chat().prop_map(|chat| LeaveGroup { chat }),
        text(MAX_PHONE_BYTES).prop_map(|phone| RegisterUser { phone }),
        (device(), bytes(40), text(MAX_NAME_BYTES), proptest::option::of(any::<[u8; 32]>()))
            .prop_map(|(device, identity_key, name, token_hash)| LinkDevice { device, identity_key, name, token_hash }),
        device().prop_map(|device| UnlinkDevice { device }),
        (text(MAX_NAME_BYTES), text(200), opt_media()).prop_map(|(name, about, avatar)| UpdateProfile {
            name,
            about,
            avatar
        }),
        (visibility(), visibility(), visibility(), any::<bool>()).prop_map(
            |(last_seen, profile_photo, about, read_receipts)| {
                SetPrivacy { last_seen, profile_photo, about, read_receipts }
            }
        ),
        (any::<bool>(), any::<u64>()).prop_map(|(online, connection)| SetPresence { online, connection }),
        (device(), vec(prekey(), 0..6)).prop_map(|(device, prekeys)| UploadPrekeys { device, prekeys }),
        (user(), device()).prop_map(|(target, target_device)| ClaimPrekey { target, target_device }),
        (any::<u64>(), bytes(64), opt_media(), users(8), audience(), any::<u64>()).prop_map(
            |(status_id, ciphertext, media, acl, audience, ttl_ms)| PostStatus {
                status_id,
                ciphertext,
                media,
                acl,
                audience,
                ttl_ms
            }
        ),
        users(8).prop_map(|contacts| UpdateContacts { contacts }),
        user().prop_map(|target| Block { target }),
        user().prop_map(|target| Unblock { target }),
        (device(), any::<[u8; 32]>()).prop_map(|(device, token_hash)| CreateSession { device, token_hash }),
        device().prop_map(|device| RevokeSession { device }),
        Just(RecordOtpFailure),
        (
            text(MAX_PHONE_BYTES),
            device(),
            bytes(40),
            text(MAX_NAME_BYTES),
            any::<[u8; 32]>(),
            option::of(any::<[u8; 32]>())
        )
            .prop_map(|(phone, device, identity_key, name, token_hash, pin_hash)| RegisterDevice {
                phone,
                device,
                identity_key,
                name,
                token_hash,
                pin_hash
            }),
        option::of(any::<[u8; 32]>()).prop_map(|pin_hash| SetRegistrationPin { pin_hash }),
        (user(), any::<bool>()).prop_map(|(peer, blocked)| SetDirectBlock { peer, blocked }),
        (user(), any::<u64>()).prop_map(|(author, status_id)| ViewStatus { author, status_id }),
        any::<u32>().prop_map(|hashes| RecordContactLookup { hashes }),
        // ---- push and reports (issue 14) ----
        (text(64), text(8)).prop_map(|(token, platform)| SetPushToken { token, platform }),
        (user(), option::of(chat()), text(32), reported_messages())
            .prop_map(|(reported, chat, reason, messages)| { FileReport { reported, chat, reason, messages } }),
        // ---- E2EE (issue 14) ----
        (vec(prekey(), 0..6), option::of(prekey()), bytes(64)).prop_map(
            |(prekeys, fallback_key, fallback_signature)| UploadDeviceKeys {
                prekeys,
                fallback_key,
                fallback_signature
            }
        ),
        user().prop_map(|target| ClaimDeviceKeys { target }),
        (any::<[u8; 32]>(), any::<u64>()).prop_map(|(blake3, size)| RecordMedia { blake3, size }),
    ]
}

// ---- push and reports (issue 14) ----
pub(crate) fn reported_messages() -> impl Strategy<Value = Vec<chorus_schema::push::ReportedMessage>> {
    vec(
        (any::<u64>(), user(), any::<u64>(), bytes(64)).prop_map(|(seq, sender, at_ms, text)| {
            chorus_schema::push::ReportedMessage { seq: Seq(seq), sender, at_ms, text }
        }),
        0..4,
    )
}

pub(crate) fn audience() -> impl Strategy<Value = chorus_schema::StatusAudience> {
    prop_oneof![
        Just(chorus_schema::StatusAudience::OnlyShareWith),
        Just(chorus_schema::StatusAudience::Contacts),
        Just(chorus_schema::StatusAudience::ContactsExcept),
    ]
}

pub(crate) fn command() -> impl Strategy<Value = Command> {
    (origin(), command_body()).prop_map(|(origin, body)| Command { origin, body })
}

pub(crate) fn event_body() -> impl Strategy<Value = EventBody> {
    use EventBody::*;
    prop_oneof![
        (chat(), users(3)).prop_map(|(chat, members)| ChatOpened { chat, members }),
        (chat(), seq(), bytes(64), opt_media()).prop_map(|(chat, seq, ciphertext, media)| MessageSent {
            chat,
            seq,
            ciphertext,
            media
        }),
        (chat(), seq(), seq(), bytes(64)).prop_map(|(chat, seq, target, ciphertext)| MessageEdited {
            chat,
            seq,
            target,
            ciphertext
        }),
        (chat(), seq(), seq()).prop_map(|(chat, seq, target)| MessageDeleted { chat, seq, target }),
        (chat(), seq(), seq(), text(MAX_REACTION_BYTES)).prop_map(|(chat, seq, target, reaction)| ReactionSet {
            chat,
            seq,
            target,
            reaction
        }),
        (chat(), kind(), seq()).prop_map(|(chat, kind, up_to_seq)| Receipt { chat, kind, up_to_seq }),
        (chat(), seq(), text(MAX_NAME_BYTES), users(8)).prop_map(|(chat, seq, name, members)| GroupCreated {
            chat,
            seq,
            name,
            members
        }),
        (chat(), seq(), user()).prop_map(|(chat, seq, member)| MemberAdded { chat, seq, member }),
        (chat(), seq(), user()).prop_map(|(chat, seq, member)| MemberRemoved { chat, seq, member }),
        (chat(), seq(), user()).prop_map(|(chat, seq, member)| MemberPromoted { chat, seq, member }),
        (chat(), seq(), user()).prop_map(|(chat, seq, member)| MemberDemoted { chat, seq, member }),
        (chat(), seq(), text(MAX_NAME_BYTES), text(200), opt_media())
            .prop_map(|(chat, seq, name, description, icon)| GroupInfoChanged { chat, seq, name, description, icon }),
        (chat(), seq()).prop_map(|(chat, seq)| MemberLeft { chat, seq }),
        (user(), text(MAX_PHONE_BYTES)).prop_map(|(user, phone)| UserRegistered { user, phone }),
        (user(), device(), bytes(40), text(MAX_NAME_BYTES))
            .prop_map(|(user, device, identity_key, name)| DeviceLinked { user, device, identity_key, name }),
        (user(), device()).prop_map(|(user, device)| DeviceUnlinked { user, device }),
        (user(), text(MAX_NAME_BYTES), text(200), opt_media()).prop_map(|(user, name, about, avatar)| ProfileUpdated {
            user,
            name,
            about,
            avatar
        }),
        (user(), visibility(), visibility(), visibility(), any::<bool>()).prop_map(
            |(user, last_seen, profile_photo, about, read_receipts)| PrivacyChanged {
                user,
                last_seen,
                profile_photo,
                about,
                read_receipts
            }
        ),
        (user(), any::<bool>(), any::<u32>(), any::<u64>(), any::<bool>()).prop_map(
            |(user, online, device, connection, device_online)| PresenceChanged {
                user,
                online,
                device: DeviceId(device),
                connection,
                device_online
            }
        ),
        (user(), device(), vec(prekey(), 0..6)).prop_map(|(user, device, prekeys)| PrekeysUploaded {
            user,
            device,
            prekeys
        }),
        (user(), device(), any::<u32>(), user()).prop_map(|(user, device, prekey_id, claimed_by)| PrekeyClaimed {
            user,
            device,
            prekey_id,
            claimed_by
        }),
        (user(), any::<u64>(), bytes(64), opt_media(), users(8), any::<u64>(), audience()).prop_map(
            |(user, status_id, ciphertext, media, acl, expires_at_ms, audience)| StatusPosted {
                user,
                status_id,
                ciphertext,
                media,
                acl,
                expires_at_ms,
                audience
            }
        ),
        (user(), users(8)).prop_map(|(user, contacts)| ContactsUpdated { user, contacts }),
        (user(), user()).prop_map(|(user, target)| UserBlocked { user, target }),
        (user(), user()).prop_map(|(user, target)| UserUnblocked { user, target }),
        (user(), device(), any::<[u8; 32]>()).prop_map(|(user, device, token_hash)| SessionCreated {
            user,
            device,
            token_hash
        }),
        (user(), device()).prop_map(|(user, device)| SessionRevoked { user, device }),
        user().prop_map(|user| OtpFailed { user }),
        (user(), option::of(any::<[u8; 32]>())).prop_map(|(user, pin_hash)| RegistrationPinSet { user, pin_hash }),
        (chat(), any::<bool>()).prop_map(|(chat, blocked)| DirectBlockSet { chat, blocked }),
        (user(), any::<u64>(), user()).prop_map(|(user, status_id, viewer)| StatusViewed { user, status_id, viewer }),
        (user(), any::<u32>()).prop_map(|(user, hashes)| ContactLookupRecorded { user, hashes }),
        // ---- push and reports (issue 14) ----
        (user(), device(), text(64), text(8)).prop_map(|(user, device, token, platform)| PushTokenSet {
            user,
            device,
            token,
            platform
        }),
        (user(), option::of(chat()), text(32), reported_messages())
            .prop_map(|(user, chat, reason, messages)| ReportFiled { user, chat, reason, messages }),
        // ---- E2EE (issue 14) ----
        (user(), device(), vec(prekey(), 0..6), option::of(prekey()), bytes(64)).prop_map(
            |(user, device, prekeys, fallback_key, fallback_signature)| DeviceKeysUploaded {
                user,
                device,
                prekeys,
                fallback_key,
                fallback_signature
            }
        ),
        (user(), user(), vec((device(), any::<u32>()), 0..5))
            .prop_map(|(user, claimed_by, claimed)| DeviceKeysClaimed { user, claimed_by, claimed }),
        (user(), any::<[u8; 32]>(), any::<u64>()).prop_map(|(user, blake3, size)| MediaUploaded { user, blake3, size }),
    ]
}

pub(crate) fn event() -> impl Strategy<Value = Event> {
    (any::<u64>(), origin(), event_body()).prop_map(|(at_ms, origin, body)| Event { at_ms, origin, body })
}

pub(crate) fn event_record() -> impl Strategy<Value = EventRecord> {
    (partition(), any::<u64>(), any::<u64>(), event()).prop_map(|(partition, offset, log_index, event)| EventRecord {
        partition,
        offset: Offset(offset),
        log_index: LogIndex(log_index),
        event,
    })
}

pub(crate) fn reject_code() -> impl Strategy<Value = RejectCode> {
    use RejectCode::*;
    prop_oneof![
        Just(NotMember),
        Just(NotAdmin),
        Just(UnknownChat),
        Just(UnknownUser),
        Just(UnknownMessage),
        Just(AlreadyExists),
        Just(NoPrekeys),
        Just(Invalid),
        Just(WrongPartition),
        Just(Locked),
        Just(PinRequired),
        Just(Blocked),
    ]
}

pub(crate) fn command_result() -> impl Strategy<Value = CommandResult> {
    prop_oneof![
        (chat(), seq()).prop_map(|(chat, seq)| Ok(Outcome::Chat { chat, seq })),
        (chat(), seq()).prop_map(|(chat, up_to_seq)| Ok(Outcome::Receipt { chat, up_to_seq })),
        (user(), device(), prekey()).prop_map(|(user, device, prekey)| Ok(Outcome::PrekeyClaimed {
            user,
            device,
            prekey
        })),
        Just(Ok(Outcome::Done)),
        any::<u32>().prop_map(|one_time_keys_left| Ok(Outcome::KeysUploaded { one_time_keys_left })),
        (user(), vec(device_keys(), 0..5)).prop_map(|(user, devices)| Ok(Outcome::KeyBundle { user, devices })),
        (reject_code(), text(100)).prop_map(|(code, message)| Err(Rejection { code, message })),
    ]
}

pub(crate) fn error_code() -> impl Strategy<Value = ErrorCode> {
    use ErrorCode::*;
    prop_oneof![
        Just(BadFrame),
        Just(FrameTooLarge),
        Just(InvalidCommand),
        Just(MixedGroups),
        Just(NotLeader),
        Just(PartitionUnavailable),
        Just(Unavailable),
        Just(Timeout),
        Just(Internal),
        Just(Forbidden),
    ]
}

pub(crate) fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        vec((partition(), command()).prop_map(|(partition, c)| AppendCommand { partition, bytes: c.encode() }), 0..4)
            .prop_map(|commands| Request::Append { commands }),
        (partition(), any::<u64>(), any::<u32>()).prop_map(|(partition, from, limit)| Request::Read {
            partition,
            from: Offset(from),
            limit
        }),
        (partition(), any::<u64>()).prop_map(|(partition, from)| Request::Tail { partition, from: Offset(from) }),
        Just(Request::Status),
        (group(), node(), text(64), text(64)).prop_map(|(group, node, raft_addr, client_addr)| Request::AddLearner {
            group,
            node,
            raft_addr,
            client_addr
        }),
        (group(), vec(node(), 0..6)).prop_map(|(group, voters)| Request::ChangeVoters { group, voters }),
        (group(), node()).prop_map(|(group, node)| Request::RemoveVoter { group, node }),
        (group(), node()).prop_map(|(group, node)| Request::PromoteLearner { group, node }),
    ]
}

pub(crate) fn partition_status() -> impl Strategy<Value = PartitionStatus> {
    ((partition(), group()), option::of(node()), any::<[u64; 4]>(), vec(node(), 0..4), replicas()).prop_map(
        |((partition, group), leader, [term, last_log_index, last_applied, next_offset], voters, replicas)| {
            PartitionStatus {
                partition,
                group,
                leader,
                term,
                last_log_index: LogIndex(last_log_index),
                last_applied: LogIndex(last_applied),
                next_offset: Offset(next_offset),
                voters,
                replicas,
            }
        },
    )
}

fn replicas() -> impl Strategy<Value = Vec<ReplicaStatus>> {
    vec((node(), option::of(any::<u64>()), option::of(any::<u64>())), 0..4).prop_map(|r| {
        r.into_iter().map(|(node, matched, lag)| ReplicaStatus { node, matched: matched.map(LogIndex), lag }).collect()
    })
}

pub(crate) fn group_status() -> impl Strategy<Value = GroupStatus> {
    (
        group(),
        option::of(node()),
        any::<[u64; 3]>(),
        vec(node(), 0..4),
        vec(node(), 0..3),
        replicas(),
        vec(partition(), 0..5),
    )
        .prop_map(
            |(group, leader, [term, last_log_index, last_applied], voters, learners, replicas, partitions)| {
                GroupStatus {
                    group,
                    leader,
                    term,
                    last_log_index: LogIndex(last_log_index),
                    last_applied: LogIndex(last_applied),
                    voters,
                    learners,
                    replicas,
                    partitions,
                }
            },
        )
}

pub(crate) fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        vec(command_result(), 0..6).prop_map(|results| Response::Appended { results }),
        (partition(), vec(event_record().prop_map(|e| e.encode()), 0..4), any::<u64>())
            .prop_map(|(partition, events, next)| Response::Events { partition, events, next: Offset(next) }),
        (node(), vec(partition_status(), 0..4), vec(group_status(), 0..3), vec(member_addr(), 0..4)).prop_map(
            |(node, partitions, groups, members)| Response::Status(NodeStatus { node, partitions, groups, members })
        ),
        Just(Response::Done),
        (
            error_code(),
            text(100),
            option::of((node(), text(64)).prop_map(|(node, client_addr)| LeaderHint { node, client_addr }))
        )
            .prop_map(|(code, message, leader)| Response::Error { code, message, leader }),
    ]
}

pub(crate) fn recipient() -> impl Strategy<Value = edge::Recipient> {
    prop_oneof![user().prop_map(edge::Recipient::User), chat().prop_map(edge::Recipient::Group)]
}

pub(crate) fn client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        text(MAX_PHONE_BYTES).prop_map(|phone| ClientFrame::RequestOtp { phone }),
        (
            text(MAX_PHONE_BYTES),
            text(MAX_OTP_CODE_BYTES),
            text(MAX_NAME_BYTES),
            bytes(40),
            option::of(text(MAX_PIN_BYTES))
        )
            .prop_map(|(phone, code, device_name, identity_key, pin)| ClientFrame::VerifyOtp {
                phone,
                code,
                device_name,
                identity_key,
                pin
            }),
        (user(), device(), any::<[u8; 32]>()).prop_map(|(user, device, token)| ClientFrame::Login {
            user,
            device,
            token
        }),
        (recipient(), any::<u64>(), bytes(64), opt_media(), option::of(any::<[u8; 32]>())).prop_map(
            |(to, c, ciphertext, media, devices_digest)| ClientFrame::Send {
                to,
                client_msg_id: ClientMsgId(c),
                ciphertext,
                media,
                devices_digest
            }
        ),
        (chat(), kind(), seq()).prop_map(|(chat, kind, up_to_seq)| ClientFrame::Ack { chat, kind, up_to_seq }),
        vec((chat(), seq()), 0..6).prop_map(|since| ClientFrame::Sync { since }),
        any::<u64>().prop_map(|nonce| ClientFrame::Ping { nonce }),
        (any::<u64>(), text(MAX_PIN_BYTES))
            .prop_map(|(c, pin)| ClientFrame::SetPin { client_msg_id: ClientMsgId(c), pin }),
        (any::<u64>(), device())
            .prop_map(|(c, device)| ClientFrame::UnlinkDevice { client_msg_id: ClientMsgId(c), device }),
        any::<u64>().prop_map(|c| ClientFrame::Logout { client_msg_id: ClientMsgId(c) }),
        (any::<u64>(), user(), any::<bool>()).prop_map(|(c, user, blocked)| ClientFrame::Block {
            client_msg_id: ClientMsgId(c),
            user,
            blocked
        }),
        (any::<u64>(), any::<[u8; 16]>(), group_op()).prop_map(|(c, chat, op)| ClientFrame::Group {
            client_msg_id: ClientMsgId(c),
            chat: ChatId::group(chat),
            op
        }),
        // ---- linked devices (issue 12) ----
        (text(MAX_NAME_BYTES), bytes(40))
            .prop_map(|(device_name, identity_key)| ClientFrame::PairRequest { device_name, identity_key }),
        (any::<u64>(), text(MAX_PAIRING_CODE_BYTES))
            .prop_map(|(c, code)| ClientFrame::LinkDevice { client_msg_id: ClientMsgId(c), code }),
        any::<u64>().prop_map(|c| ClientFrame::ListDevices { client_msg_id: ClientMsgId(c) }),
        // ---- group info and message info (issue 12) ----
        (any::<u64>(), chat()).prop_map(|(c, chat)| ClientFrame::GroupInfo { client_msg_id: ClientMsgId(c), chat }),
        (any::<u64>(), chat(), seq()).prop_map(|(c, chat, seq)| ClientFrame::MessageInfo {
            client_msg_id: ClientMsgId(c),
            chat,
            seq
        }),
        // issue 12
        vec(user(), 0..8).prop_map(|users| ClientFrame::SubscribePresence { users }),
        (chat(), any::<bool>()).prop_map(|(chat, typing)| ClientFrame::Typing { chat, typing }),
        (any::<u64>(), visibility(), visibility(), visibility(), any::<bool>()).prop_map(
            |(c, last_seen, profile_photo, about, read_receipts)| ClientFrame::SetPrivacy {
                client_msg_id: ClientMsgId(c),
                last_seen,
                profile_photo,
                about,
                read_receipts
            }
        ),
        social_client_frame(),
        // ---- E2EE (issue 14) ----
        e2ee_client_frame(),
    ]
}

// ---- group info and message info (issue 12) ----

pub(crate) fn group_info() -> impl Strategy<Value = GroupInfo> {
    let member = (user(), seq(), any::<bool>()).prop_map(|(u, since, admin)| (u, Member { since, admin }));
    (seq(), text(MAX_NAME_BYTES), text(MAX_ABOUT_BYTES), vec(member, 0..12), opt_media()).prop_map(
        |(last_seq, name, description, members, icon)| GroupInfo { last_seq, name, description, members, icon },
    )
}

/// Times are never 0 on the wire's meaning (0 is "not yet").
pub(crate) fn message_receipts() -> impl Strategy<Value = Vec<MessageReceipt>> {
    let time = option::of(1..u64::MAX);
    vec(
        (user(), time.clone(), time).prop_map(|(user, delivered_at_ms, read_at_ms)| MessageReceipt {
            user,
            delivered_at_ms,
            read_at_ms,
        }),
        0..12,
    )
}

pub(crate) fn info_refusal() -> impl Strategy<Value = bus::InfoRefusal> {
    prop_oneof![
        Just(bus::InfoRefusal::UnknownChat),
        Just(bus::InfoRefusal::NotMember),
        Just(bus::InfoRefusal::NotMessage),
        Just(bus::InfoRefusal::NotSender),
    ]
}

// ---- linked devices (issue 12) ----
pub(crate) fn device_info() -> impl Strategy<Value = edge::DeviceInfo> {
    (device(), text(MAX_NAME_BYTES), any::<u64>()).prop_map(|(device, name, linked_at_ms)| edge::DeviceInfo {
        device,
        name,
        linked_at_ms,
    })
}

pub(crate) fn social_client_frame() -> impl Strategy<Value = ClientFrame> {
    let id = || any::<u64>().prop_map(ClientMsgId);
    prop_oneof![
        (id(), text(16), text(32), opt_media()).prop_map(|(client_msg_id, name, about, avatar)| {
            ClientFrame::SetProfile { client_msg_id, name, about, avatar }
        }),
        (id(), visibility(), visibility(), visibility(), any::<bool>()).prop_map(
            |(client_msg_id, last_seen, profile_photo, about, read_receipts)| ClientFrame::SetPrivacy {
                client_msg_id,
                last_seen,
                profile_photo,
                about,
                read_receipts
            }
        ),
        (id(), user()).prop_map(|(client_msg_id, user)| ClientFrame::GetProfile { client_msg_id, user }),
        (id(), any::<u64>(), bytes(64), opt_media(), audience(), users(8), any::<u64>()).prop_map(
            |(client_msg_id, status_id, ciphertext, media, audience, users, ttl_ms)| ClientFrame::PostStatus {
                client_msg_id,
                status_id,
                ciphertext,
                media,
                audience,
                users,
                ttl_ms
            }
        ),
        (id(), option::of(user().prop_filter("0 means none", |u| u.0 != 0)))
            .prop_map(|(client_msg_id, author)| ClientFrame::ListStatus { client_msg_id, author }),
        (id(), user(), any::<u64>()).prop_map(|(client_msg_id, author, status_id)| ClientFrame::ViewStatus {
            client_msg_id,
            author,
            status_id
        }),
        (id(), vec(any::<[u8; 32]>(), 0..8))
            .prop_map(|(client_msg_id, hashes)| ClientFrame::SyncContacts { client_msg_id, hashes }),
        // ---- push and reports (issue 14) ----
        (id(), text(64), text(8)).prop_map(|(client_msg_id, token, platform)| ClientFrame::RegisterPush {
            client_msg_id,
            token,
            platform
        }),
        (id(), user(), option::of(chat()), text(32), reported_messages()).prop_map(
            |(client_msg_id, user, chat, reason, messages)| ClientFrame::Report {
                client_msg_id,
                user,
                chat,
                reason,
                messages
            }
        ),
    ]
}

pub(crate) fn profile() -> impl Strategy<Value = chorus_schema::Profile> {
    (user(), any::<bool>(), text(16), option::of(text(32)), opt_media())
        .prop_map(|(user, found, name, about, avatar)| chorus_schema::Profile { user, found, name, about, avatar })
}

pub(crate) fn status_entry() -> impl Strategy<Value = chorus_schema::StatusEntry> {
    (user(), any::<u64>(), any::<u64>(), any::<u64>(), bytes(32), opt_media(), users(4)).prop_map(
        |(author, status_id, posted_at_ms, expires_at_ms, ciphertext, media, viewers)| chorus_schema::StatusEntry {
            author,
            status_id,
            posted_at_ms,
            expires_at_ms,
            ciphertext,
            media,
            viewers,
        },
    )
}

pub(crate) fn contact_match() -> impl Strategy<Value = chorus_schema::ContactMatch> {
    (any::<[u8; 32]>(), user()).prop_map(|(hash, user)| chorus_schema::ContactMatch { hash, user })
}

pub(crate) fn group_op() -> impl Strategy<Value = GroupOp> {
    prop_oneof![
        (text(MAX_NAME_BYTES), vec(user(), 0..16)).prop_map(|(name, members)| GroupOp::Create { name, members }),
        user().prop_map(|member| GroupOp::Add { member }),
        user().prop_map(|member| GroupOp::Remove { member }),
        user().prop_map(|member| GroupOp::Promote { member }),
        user().prop_map(|member| GroupOp::Demote { member }),
        Just(GroupOp::Leave),
        (text(MAX_NAME_BYTES), text(MAX_ABOUT_BYTES), opt_media())
            .prop_map(|(name, description, icon)| GroupOp::ChangeInfo { name, description, icon }),
    ]
}

pub(crate) fn edge_error_code() -> impl Strategy<Value = EdgeErrorCode> {
    (0..EdgeErrorCode::ALL.len()).prop_map(|i| EdgeErrorCode::ALL[i])
}

pub(crate) fn server_frame() -> impl Strategy<Value = ServerFrame> {
    prop_oneof![
        (text(MAX_PHONE_BYTES), any::<u64>())
            .prop_map(|(phone, expires_in_ms)| ServerFrame::OtpSent { phone, expires_in_ms }),
        (user(), device(), any::<[u8; 32]>()).prop_map(|(user, device, token)| ServerFrame::Registered {
            user,
            device,
            token
        }),
        (user(), device(), option::of(any::<[u8; 32]>()))
            .prop_map(|(user, device, contact_key)| ServerFrame::LoggedIn { user, device, contact_key }),
        (any::<u64>(), chat(), seq(), any::<u64>()).prop_map(|(c, chat, seq, server_time_ms)| ServerFrame::Sent {
            client_msg_id: ClientMsgId(c),
            chat,
            seq,
            server_time_ms
        }),
        (chat(), seq(), user(), device(), any::<u64>(), any::<u64>(), bytes(64), opt_media()).prop_map(
            |(chat, seq, sender, sender_device, c, at_ms, ciphertext, media)| ServerFrame::Deliver {
                chat,
                seq,
                sender,
                sender_device,
                client_msg_id: ClientMsgId(c),
                at_ms,
                ciphertext,
                media
            }
        ),
        (chat(), seq(), kind()).prop_map(|(chat, up_to_seq, status)| ServerFrame::Receipt { chat, up_to_seq, status }),
        any::<u32>().prop_map(|chats| ServerFrame::SyncDone { chats }),
        any::<u64>().prop_map(|nonce| ServerFrame::Pong { nonce }),
        (edge_error_code(), text(100), option::of(any::<u64>().prop_map(ClientMsgId)), option::of(any::<u64>()))
            .prop_map(|(code, message, client_msg_id, retry_after_ms)| ServerFrame::Error {
                code,
                message,
                client_msg_id,
                retry_after_ms
            }),
        (any::<u64>(), option::of((any::<[u8; 16]>(), any::<u64>()))).prop_map(|(c, at)| ServerFrame::Done {
            client_msg_id: ClientMsgId(c),
            at: at.map(|(chat, seq)| (ChatId::from_bytes(chat), Seq(seq)))
        }),
        (
            prop_oneof![
                Just(DeviceNoticeKind::Linked),
                Just(DeviceNoticeKind::Unlinked),
                Just(DeviceNoticeKind::LoggedOut)
            ],
            device(),
            any::<u64>()
        )
            .prop_map(|(kind, device, at_ms)| ServerFrame::DeviceNotice { kind, device, at_ms }),
        (chat(), seq(), user(), device(), any::<u64>(), any::<u64>(), group_op()).prop_map(
            |(chat, seq, actor, actor_device, c, at_ms, change)| ServerFrame::ChatChange {
                chat,
                seq,
                actor,
                actor_device,
                client_msg_id: ClientMsgId(c),
                at_ms,
                change
            }
        ),
        // ---- linked devices (issue 12) ----
        (text(MAX_PAIRING_CODE_BYTES), any::<u64>())
            .prop_map(|(code, expires_in_ms)| ServerFrame::PairCode { code, expires_in_ms }),
        (any::<u64>(), vec(device_info(), 0..6))
            .prop_map(|(c, devices)| ServerFrame::DeviceList { client_msg_id: ClientMsgId(c), devices }),
        // ---- group info and message info (issue 12) ----
        (any::<u64>(), chat(), group_info()).prop_map(|(c, chat, info)| ServerFrame::GroupInfo {
            client_msg_id: ClientMsgId(c),
            chat,
            info
        }),
        (any::<u64>(), chat(), seq(), message_receipts()).prop_map(|(c, chat, seq, entries)| {
            ServerFrame::MessageInfo { client_msg_id: ClientMsgId(c), chat, seq, entries }
        }),
        // issue 12
        (user(), any::<bool>(), any::<bool>(), any::<u64>()).prop_map(|(user, visible, online, last_seen_ms)| {
            ServerFrame::Presence { user, visible, online, last_seen_ms }
        }),
        (chat(), user(), any::<bool>()).prop_map(|(chat, user, typing)| ServerFrame::Typing { chat, user, typing }),
        (any::<u64>(), profile())
            .prop_map(|(c, profile)| ServerFrame::Profile { client_msg_id: ClientMsgId(c), profile }),
        (any::<u64>(), vec(status_entry(), 0..4))
            .prop_map(|(c, entries)| ServerFrame::StatusList { client_msg_id: ClientMsgId(c), entries }),
        (any::<u64>(), vec(contact_match(), 0..4))
            .prop_map(|(c, matches)| ServerFrame::ContactsMatched { client_msg_id: ClientMsgId(c), matches }),
        // ---- E2EE (issue 14) ----
        e2ee_server_frame(),
    ]
}

// ---- E2EE (issue 14) ----

pub(crate) fn device_keys() -> impl Strategy<Value = DeviceKeys> {
    (device(), bytes(64), option::of(prekey()), option::of(prekey()), bytes(64)).prop_map(
        |(device, identity_key, one_time_key, fallback_key, fallback_signature)| DeviceKeys {
            device,
            identity_key,
            one_time_key,
            fallback_key,
            fallback_signature,
        },
    )
}

pub(crate) fn e2ee_client_frame() -> impl Strategy<Value = ClientFrame> {
    let id = || any::<u64>().prop_map(ClientMsgId);
    prop_oneof![
        (id(), vec(prekey(), 0..8), option::of(prekey()), bytes(64)).prop_map(
            |(client_msg_id, one_time_keys, fallback_key, fallback_signature)| ClientFrame::UploadKeys {
                client_msg_id,
                one_time_keys,
                fallback_key,
                fallback_signature
            }
        ),
        (id(), user()).prop_map(|(client_msg_id, user)| ClientFrame::ClaimKeys { client_msg_id, user }),
        (id(), user()).prop_map(|(client_msg_id, user)| ClientFrame::GetDeviceKeys { client_msg_id, user }),
    ]
}

pub(crate) fn e2ee_server_frame() -> impl Strategy<Value = ServerFrame> {
    let id = || any::<u64>().prop_map(ClientMsgId);
    prop_oneof![
        (id(), any::<u32>()).prop_map(|(client_msg_id, one_time_keys_left)| ServerFrame::KeysUploaded {
            client_msg_id,
            one_time_keys_left
        }),
        (id(), user(), vec(device_keys(), 0..5)).prop_map(|(client_msg_id, user, devices)| ServerFrame::KeyBundle {
            client_msg_id,
            user,
            devices
        }),
        (id(), user(), vec(device_keys(), 0..5))
            .prop_map(|(client_msg_id, user, devices)| ServerFrame::DeviceKeyList { client_msg_id, user, devices }),
        (id(), vec((user(), device()), 0..12))
            .prop_map(|(client_msg_id, devices)| ServerFrame::StaleDevices { client_msg_id, devices }),
        any::<u32>().prop_map(|one_time_keys_left| ServerFrame::KeysLow { one_time_keys_left }),
    ]
}

pub(crate) fn presence_update() -> impl Strategy<Value = bus::PresenceUpdate> {
    (user(), any::<bool>(), any::<u64>(), any::<bool>())
        .prop_map(|(user, online, last_seen_ms, audience)| bus::PresenceUpdate { user, online, last_seen_ms, audience })
}

pub(crate) fn typing_signal() -> impl Strategy<Value = bus::TypingSignal> {
    (chat(), user(), any::<bool>(), vec(user(), 0..8)).prop_map(|(chat, user, typing, recipients)| bus::TypingSignal {
        chat,
        user,
        typing,
        recipients,
    })
}

// ---- bus payloads ------------------------------------------------------------------

pub(crate) fn receipt_status() -> impl Strategy<Value = bus::ReceiptStatus> {
    prop_oneof![Just(bus::ReceiptStatus::Sent), Just(bus::ReceiptStatus::Delivered), Just(bus::ReceiptStatus::Read)]
}
pub(crate) fn account_change() -> impl Strategy<Value = DeviceNoticeKind> {
    prop_oneof![Just(DeviceNoticeKind::Linked), Just(DeviceNoticeKind::Unlinked), Just(DeviceNoticeKind::LoggedOut)]
}
pub(crate) fn chat_kind() -> impl Strategy<Value = ChatKind> {
    prop_oneof![Just(ChatKind::Direct), Just(ChatKind::Group)]
}
/// A delivery whose record is a real encoded `EventRecord`.
pub(crate) fn delivery() -> impl Strategy<Value = bus::Delivery> {
    (chat(), seq(), users(8), event_record()).prop_map(|(chat, seq, recipients, r)| bus::Delivery {
        chat,
        seq,
        recipients,
        record: r.encode().into(),
    })
}
pub(crate) fn receipt_update() -> impl Strategy<Value = bus::ReceiptUpdate> {
    (chat(), user(), seq(), receipt_status()).prop_map(|(chat, sender, up_to_seq, status)| bus::ReceiptUpdate {
        chat,
        sender,
        up_to_seq,
        status,
    })
}
pub(crate) fn account_update() -> impl Strategy<Value = bus::AccountUpdate> {
    (user(), device(), account_change(), any::<u64>()).prop_map(|(user, device, change, at_ms)| bus::AccountUpdate {
        user,
        device,
        change,
        at_ms,
    })
}
pub(crate) fn chat_joined() -> impl Strategy<Value = bus::ChatJoined> {
    (chat(), user(), seq()).prop_map(|(chat, user, seq)| bus::ChatJoined { chat, user, seq })
}
pub(crate) fn view_query() -> impl Strategy<Value = bus::ViewQuery> {
    use bus::ViewQuery as Q;
    prop_oneof![
        (user(), option::of(chat()), any::<u32>()).prop_map(|(user, after, limit)| Q::ChatList(bus::ChatListRequest {
            user,
            after,
            limit
        })),
        (user(), device(), option::of(chat()), any::<u32>())
            .prop_map(|(user, device, after, limit)| Q::Cursors(bus::CursorsRequest { user, device, after, limit })),
        (chat(), user()).prop_map(|(chat, sender)| Q::ReceiptStatus(bus::ReceiptStatusRequest { chat, sender })),
        (user(), device()).prop_map(|(user, device)| Q::Session(bus::SessionRequest { user, device })),
        user().prop_map(|user| Q::User(bus::UserRequest { user })),
        (user(), chat(), seq(), any::<u32>()).prop_map(|(user, chat, after, limit)| Q::Inbox(bus::InboxRequest {
            user,
            chat,
            after,
            limit
        })),
        // ---- linked devices (issue 12) ----
        user().prop_map(|user| Q::Devices(bus::DevicesRequest { user })),
        // ---- group info and message info (issue 12) ----
        (user(), chat()).prop_map(|(user, chat)| Q::GroupInfo(bus::GroupInfoRequest { user, chat })),
        (user(), chat(), seq()).prop_map(|(user, chat, seq)| Q::MessageInfo(bus::MessageInfoRequest {
            user,
            chat,
            seq
        })),
        (user(), user()).prop_map(|(user, viewer)| Q::Presence(bus::PresenceRequest { user, viewer })),
        chat().prop_map(|chat| Q::Members(bus::MembersRequest { chat })),
        (user(), user()).prop_map(|(viewer, user)| Q::Profile(bus::ProfileRequest { viewer, user })),
        (user(), option::of(user().prop_filter("0 means none", |u| u.0 != 0)), any::<u64>())
            .prop_map(|(viewer, author, now_ms)| Q::Status(bus::StatusRequest { viewer, author, now_ms })),
        vec(any::<[u8; 32]>(), 0..8).prop_map(|hashes| Q::ContactLookup(bus::ContactLookupRequest { hashes })),
    ]
}
fn chat_list_entry() -> impl Strategy<Value = bus::ChatListEntry> {
    let message = (seq(), user(), any::<u64>()).prop_map(|(seq, sender, at_ms)| bus::MessageRef { seq, sender, at_ms });
    (chat_kind(), seq(), any::<u64>(), seq(), option::of(message)).prop_map(
        |(kind, last_seq, unread, unread_after, last_message)| bus::ChatListEntry {
            kind,
            last_seq,
            unread,
            unread_after,
            last_message,
        },
    )
}
pub(crate) fn view_reply() -> impl Strategy<Value = bus::ViewReply> {
    use bus::ViewAnswer as A;
    let item = (chat(), chat_list_entry()).prop_map(|(chat, entry)| bus::ChatListItem { chat, entry });
    let cursors = (chat(), seq(), seq(), seq()).prop_map(|(chat, last_seq, delivered, read)| bus::ChatCursors {
        chat,
        last_seq,
        delivered,
        read,
    });
    let inbox = (seq(), any::<u64>()).prop_map(|(seq, offset)| bus::InboxItem { seq, offset: Offset(offset) });
    let code = prop_oneof![Just(bus::ViewErrorCode::BadRequest), Just(bus::ViewErrorCode::Unavailable)];
    prop_oneof![
        (vec(item, 0..8), any::<bool>())
            .prop_map(|(entries, more)| Ok(A::ChatList(bus::ChatListPage { entries, more }))),
        (vec(cursors, 0..8), any::<bool>())
            .prop_map(|(entries, more)| Ok(A::Cursors(bus::CursorsPage { entries, more }))),
        (seq(), seq()).prop_map(|(delivered, read)| Ok(A::Ticks(bus::Ticks { delivered, read }))),
        option::of(any::<[u8; 32]>()).prop_map(|token_hash| Ok(A::Session(bus::SessionInfo { token_hash }))),
        (any::<bool>(), vec(device(), 0..8))
            .prop_map(|(registered, devices)| Ok(A::User(bus::UserInfo { registered, devices }))),
        (partition(), vec(inbox, 0..8), any::<bool>())
            .prop_map(|(partition, entries, more)| Ok(A::Inbox(bus::InboxPage { partition, entries, more }))),
        (code, text(64)).prop_map(|(code, message)| Err(bus::ViewError { code, message })),
        // ---- linked devices (issue 12) ----
        vec(device_info(), 0..6).prop_map(|devices| Ok(A::Devices(devices))),
        // ---- group info and message info (issue 12) ----
        prop_oneof![group_info().prop_map(Ok), info_refusal().prop_map(Err)].prop_map(|a| Ok(A::GroupInfo(a))),
        prop_oneof![
            message_receipts().prop_map(|entries| Ok(bus::MessageInfo { entries })),
            info_refusal().prop_map(Err)
        ]
        .prop_map(|a| Ok(A::MessageInfo(a))),
        (any::<bool>(), any::<bool>(), any::<u64>()).prop_map(|(visible, online, last_seen_ms)| Ok(A::Presence(
            bus::PresenceInfo { visible, online, last_seen_ms }
        ))),
        (any::<bool>(), vec(user(), 0..8)).prop_map(|(known, members)| Ok(A::Members(bus::Members { known, members }))),
        profile().prop_map(|p| Ok(A::Profile(p))),
        vec(status_entry(), 0..4).prop_map(|s| Ok(A::Statuses(s))),
        vec(contact_match(), 0..4).prop_map(|m| Ok(A::ContactMatches(m))),
    ]
}

pub(crate) fn member_addr() -> impl Strategy<Value = MemberAddr> {
    (node(), text(60), text(60)).prop_map(|(node, client_addr, raft_addr)| MemberAddr { node, client_addr, raft_addr })
}
