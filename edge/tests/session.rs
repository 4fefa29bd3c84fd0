//! The session core, driven by hand: every flow with the exact actions out, and a
//! proptest over random frame and result sequences.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use chorus_edge::session::*;
use std::net::IpAddr;
use std::sync::Arc;

use chorus_schema::edge::{user_for_phone, CLIENT_MSG_ID_RESERVED_BIT};
use chorus_schema::*;
use proptest::prelude::*;

const PHONE: &str = "+15550100001";

fn otp() -> OtpRegistry {
    OtpRegistry::new(OtpConfig::default(), [9; 32])
}

fn session(config: Config) -> Session {
    Session::new(config, Box::new(SeededEntropy::new([1; 32])))
}

/// The session's actions; a shared item's frame is decoded back into the
/// `Deliver` frame it must be (so assertions name the frame, and check the
/// frame built once for every connection).
fn drain(s: &mut Session) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action())
        .map(|a| match a {
            Action::DeliverItem(item) => Action::Deliver(item.server_frame().expect("an item's frame decodes")),
            other => other,
        })
        .collect()
}

#[track_caller]
fn only_send(actions: Vec<Action>) -> ServerFrame {
    match <[Action; 1]>::try_from(actions) {
        Ok([Action::Send(f)]) => f,
        Ok(other) => panic!("expected one Send, got {other:?}"),
        Err(v) => panic!("expected one Send, got {v:?}"),
    }
}

#[track_caller]
fn error_code(actions: Vec<Action>) -> (EdgeErrorCode, Option<ClientMsgId>) {
    match only_send(actions) {
        ServerFrame::Error { code, client_msg_id, .. } => (code, client_msg_id),
        f => panic!("expected an error, got {f:?}"),
    }
}

#[track_caller]
fn append(actions: &[Action]) -> (Correlation, Command) {
    match actions {
        [Action::Append { correlation, command }] => (*correlation, command.clone()),
        other => panic!("expected one Append, got {other:?}"),
    }
}

/// The code texted by the last RequestOtp.
/// The direct message's recipient check, answered `Registered`, then its append.
fn checked_append(s: &mut Session) -> (Correlation, Command) {
    let actions = drain(s);
    let [Action::CheckRecipient { correlation, .. }] = actions.as_slice() else {
        panic!("expected one recipient check, got {actions:?}")
    };
    s.handle_recipient_checked(*correlation, RecipientVerdict::Registered);
    append(&drain(s))
}

fn texted_code(actions: &[Action]) -> String {
    actions
        .iter()
        .find_map(|a| match a {
            Action::SendSms { text, .. } => Some(text.rsplit(' ').next().unwrap().to_owned()),
            _ => None,
        })
        .expect("an SMS")
}

/// Registers through the whole flow and returns the identity and token.
fn register(s: &mut Session, otp: &mut OtpRegistry, now: u64) -> (Identity, [u8; 32]) {
    s.handle_frame(now, ClientFrame::RequestOtp { phone: PHONE.into() }, otp);
    let code = texted_code(&drain(s));
    s.handle_frame(
        now,
        ClientFrame::VerifyOtp {
            phone: PHONE.into(),
            code,
            device_name: "phone".into(),
            identity_key: vec![7; 32],
            pin: None,
        },
        otp,
    );
    let (c, _) = append(&drain(s));
    s.handle_append_result(now, c, Ok(Ok(Outcome::Done)));
    let actions = drain(s);
    match &actions[..] {
        [Action::Send(ServerFrame::Registered { user, device, token }), Action::SetPresence(online), Action::Subscribe(id)] =>
        {
            assert_eq!(id, &Identity { user: *user, device: *device });
            assert!(matches!(online.body, CommandBody::SetPresence { online: true, .. }), "{online:?}");
            assert_eq!((online.origin.user, online.origin.device), (id.user, id.device));
            (*id, *token)
        }
        other => panic!("expected Registered, got {other:?}"),
    }
}

fn logged_in(config: Config) -> (Session, OtpRegistry, Identity) {
    let mut s = session(config);
    let mut o = otp();
    let (id, _) = register(&mut s, &mut o, 1000);
    (s, o, id)
}

#[test]
fn registration_texts_a_code_then_appends_one_register_device() {
    let mut s = session(Config::default());
    let mut o = otp();
    s.handle_frame(1000, ClientFrame::RequestOtp { phone: "+1 555 010 0001".into() }, &mut o);
    let actions = drain(&mut s);
    assert_eq!(actions.len(), 2);
    let code = texted_code(&actions);
    assert_eq!(code.len(), 6);
    assert!(code.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(actions[0], Action::SendSms { phone: PHONE.into(), text: format!("Your chorus code: {code}") });
    assert_eq!(actions[1], Action::Send(ServerFrame::OtpSent { phone: PHONE.into(), expires_in_ms: 300_000 }));

    s.handle_frame(
        2000,
        ClientFrame::VerifyOtp {
            phone: PHONE.into(),
            code,
            device_name: "phone".into(),
            identity_key: vec![7; 32],
            pin: None,
        },
        &mut o,
    );
    let user = user_for_phone(PHONE).unwrap();
    let (c, register) = append(&drain(&mut s));
    assert_eq!(register.origin.user, user);
    assert_ne!(register.origin.client_msg_id.0 & CLIENT_MSG_ID_RESERVED_BIT, 0);
    let device = register.origin.device;
    assert_ne!(device, DeviceId(0));
    let CommandBody::RegisterDevice { phone, device: d, identity_key, name, token_hash: hash, pin_hash } =
        register.body
    else {
        panic!("{register:?}")
    };
    assert_eq!((phone.as_str(), d, identity_key, name.as_str(), pin_hash), (PHONE, device, vec![7; 32], "phone", None));
    assert_eq!(s.identity(), None);
    s.handle_append_result(2003, c, Ok(Ok(Outcome::Done)));
    let id = Identity { user, device };
    let actions = drain(&mut s);
    let Action::Send(ServerFrame::Registered { token, .. }) = actions[0] else { panic!("{actions:?}") };
    assert_eq!(token_hash(&token), hash);
    // The token carries its expiry: registration time + the configured lifetime.
    assert_eq!(token_expiry_ms(&token), 2000 + Config::default().token_lifetime_ms);
    assert_eq!(actions[0], Action::Send(ServerFrame::Registered { user, device, token }));
    assert_eq!(actions[2..], [Action::Subscribe(id)]);
    // The device is online while the connection lives.
    assert!(
        matches!(&actions[1], Action::SetPresence(c) if matches!(c.body, CommandBody::SetPresence { online: true, .. }))
    );
    assert_eq!(s.identity(), Some(id));
}

#[test]
fn a_device_id_collision_links_another_id() {
    let mut s = session(Config::default());
    let mut o = otp();
    s.handle_frame(0, ClientFrame::RequestOtp { phone: PHONE.into() }, &mut o);
    let code = texted_code(&drain(&mut s));
    s.handle_frame(
        0,
        ClientFrame::VerifyOtp { phone: PHONE.into(), code, device_name: "d".into(), identity_key: vec![], pin: None },
        &mut o,
    );
    let (c1, first) = append(&drain(&mut s));
    s.handle_append_result(0, c1, Ok(Err(Rejection::new(RejectCode::AlreadyExists, "linked"))));
    let (_, second) = append(&drain(&mut s));
    let (CommandBody::RegisterDevice { device: d1, .. }, CommandBody::RegisterDevice { device: d2, .. }) =
        (&first.body, &second.body)
    else {
        panic!("{first:?} {second:?}")
    };
    assert_ne!(d1, d2);
    assert_eq!(second.origin.device, *d2);
}

#[test]
fn otp_errors() {
    let mut s = session(Config::default());
    let mut o = otp();
    let verify = |code: &str| ClientFrame::VerifyOtp {
        phone: PHONE.into(),
        code: code.into(),
        device_name: "d".into(),
        identity_key: vec![],
        pin: None,
    };
    s.handle_frame(0, verify("000000"), &mut o);
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::OtpExpired);
    s.handle_frame(0, ClientFrame::RequestOtp { phone: "555".into() }, &mut o);
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::BadFrame);
    s.handle_frame(0, ClientFrame::RequestOtp { phone: PHONE.into() }, &mut o);
    let code = texted_code(&drain(&mut s));
    s.handle_frame(1, ClientFrame::RequestOtp { phone: PHONE.into() }, &mut o);
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::RateLimited);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    // Each wrong code is recorded in the log for the phone (as the phone's
    // user, no device) before the client hears it was wrong.
    let failed = |s: &mut Session, o: &mut OtpRegistry, code: &str| {
        s.handle_frame(2, verify(code), o);
        let (c, cmd) = append(&drain(s));
        assert_eq!(cmd.body, CommandBody::RecordOtpFailure);
        assert_eq!((cmd.origin.user, cmd.origin.device), (user_for_phone(PHONE).unwrap(), DeviceId(0)));
        s.handle_append_result(2, c, Ok(Ok(Outcome::Done)));
        error_code(drain(s)).0
    };
    for _ in 0..4 {
        assert_eq!(failed(&mut s, &mut o, wrong), EdgeErrorCode::BadOtp);
    }
    assert_eq!(failed(&mut s, &mut o, wrong), EdgeErrorCode::TooManyAttempts);
    assert_eq!(failed(&mut s, &mut o, &code), EdgeErrorCode::TooManyAttempts);
    s.handle_frame(300_000, verify(&code), &mut o);
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::OtpExpired);
    assert_eq!(s.identity(), None);
}

#[test]
fn a_failed_registration_step_returns_to_anonymous() {
    let mut s = session(Config::default());
    let mut o = otp();
    s.handle_frame(0, ClientFrame::RequestOtp { phone: PHONE.into() }, &mut o);
    let code = texted_code(&drain(&mut s));
    s.handle_frame(
        0,
        ClientFrame::VerifyOtp { phone: PHONE.into(), code, device_name: "d".into(), identity_key: vec![], pin: None },
        &mut o,
    );
    let (c1, _) = append(&drain(&mut s));
    s.handle_append_result(0, c1, Err(AppendError::Unavailable("no leader".into())));
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::Unavailable);
    s.handle_frame(0, ClientFrame::Sync { since: vec![] }, &mut o);
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::Unauthenticated);
}

#[test]
fn login_is_verified_against_the_sessions_view() {
    let mut s = session(Config::default());
    let mut o = otp();
    let (user, device, token) = (UserId(5), DeviceId(9), [3u8; 32]);
    s.handle_frame(0, ClientFrame::Login { user, device, token }, &mut o);
    assert_eq!(drain(&mut s), vec![Action::VerifyToken { user, device, token_hash: token_hash(&token) }]);
    // Waiting for the view: still not logged in.
    s.handle_frame(0, ClientFrame::Ack { chat: ChatId([1; 16]), kind: ReceiptKind::Read, up_to_seq: Seq(1) }, &mut o);
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::Unauthenticated);
    s.handle_token_verified(TokenVerdict::Valid);
    let id = Identity { user, device };
    let actions = drain(&mut s);
    assert_eq!(actions[0], Action::Send(ServerFrame::LoggedIn { user, device, contact_key: None }));
    assert_eq!(actions[2..], [Action::Subscribe(id)]);
    assert!(
        matches!(&actions[1], Action::SetPresence(c) if matches!(c.body, CommandBody::SetPresence { online: true, .. }) && c.origin.user == user),
        "{actions:?}"
    );
    assert_eq!(s.identity(), Some(id));
    // A second login on the same connection: Forbidden.
    s.handle_frame(0, ClientFrame::Login { user: UserId(6), device, token }, &mut o);
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::Forbidden);
    s.handle_frame(0, ClientFrame::RequestOtp { phone: PHONE.into() }, &mut o);
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::Forbidden);
    assert_eq!(s.identity(), Some(id));
}

#[test]
fn failed_logins_close_the_connection() {
    let mut s = session(Config { logins_failed_max: 2, ..Config::default() });
    let mut o = otp();
    let login = ClientFrame::Login { user: UserId(5), device: DeviceId(1), token: [9; 32] };
    s.handle_frame(0, login.clone(), &mut o);
    drain(&mut s);
    s.handle_token_verified(TokenVerdict::Unavailable);
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::Unavailable);
    s.handle_frame(0, login.clone(), &mut o);
    drain(&mut s);
    s.handle_token_verified(TokenVerdict::Invalid);
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::Unauthenticated);
    s.handle_frame(0, login, &mut o);
    drain(&mut s);
    s.handle_token_verified(TokenVerdict::Invalid);
    let actions = drain(&mut s);
    assert!(matches!(actions[0], Action::Send(ServerFrame::Error { code: EdgeErrorCode::Unauthenticated, .. })));
    assert!(matches!(actions[1], Action::Close { code: EdgeErrorCode::Unauthenticated, .. }));
    assert!(s.is_closed());
    s.handle_frame(0, ClientFrame::Ping { nonce: 1 }, &mut o);
    assert_eq!(drain(&mut s), vec![]);
}

#[test]
fn before_login_only_registration_login_and_ping_are_allowed() {
    let mut s = session(Config::default());
    let mut o = otp();
    s.handle_frame(0, ClientFrame::Ping { nonce: 42 }, &mut o);
    assert_eq!(only_send(drain(&mut s)), ServerFrame::Pong { nonce: 42 });
    let send = ClientFrame::Send {
        to: Recipient::User(UserId(2)),
        client_msg_id: ClientMsgId(7),
        ciphertext: vec![1],
        media: None,
        devices_digest: None,
    };
    s.handle_frame(0, send, &mut o);
    assert_eq!(error_code(drain(&mut s)), (EdgeErrorCode::Unauthenticated, Some(ClientMsgId(7))));
    s.handle_frame(
        0,
        ClientFrame::Ack { chat: ChatId([1; 16]), kind: ReceiptKind::Delivered, up_to_seq: Seq(1) },
        &mut o,
    );
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::Unauthenticated);
    s.handle_frame(0, ClientFrame::Sync { since: vec![] }, &mut o);
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::Unauthenticated);
}

#[test]
fn send_appends_as_the_logged_in_device_and_answers_sent() {
    let (mut s, mut o, id) = logged_in(Config::default());
    let media = MediaRef { blake3: [1; 32], size: 10, mime: "image/png".into() };
    s.handle_frame(
        5000,
        ClientFrame::Send {
            to: Recipient::User(UserId(2)),
            client_msg_id: ClientMsgId(77),
            ciphertext: vec![1, 2],
            media: Some(media.clone()),
            devices_digest: None,
        },
        &mut o,
    );
    let (c, cmd) = checked_append(&mut s);
    assert_eq!(
        cmd,
        Command {
            origin: Origin { user: id.user, device: id.device, client_msg_id: ClientMsgId(77) },
            body: CommandBody::SendDirect { recipient: UserId(2), ciphertext: vec![1, 2], media: Some(media) },
        }
    );
    let chat = ChatId::direct(id.user, UserId(2));
    s.handle_append_result(5005, c, Ok(Ok(Outcome::Chat { chat, seq: Seq(4) })));
    assert_eq!(
        only_send(drain(&mut s)),
        ServerFrame::Sent { client_msg_id: ClientMsgId(77), chat, seq: Seq(4), server_time_ms: 5005 }
    );

    let group = ChatId::group([5; 16]);
    let send = |c: u64| ClientFrame::Send {
        to: Recipient::Group(group),
        client_msg_id: ClientMsgId(c),
        ciphertext: vec![3],
        media: None,
        devices_digest: None,
    };
    s.handle_frame(5010, send(78), &mut o);
    let (c, cmd) = append(&drain(&mut s));
    assert_eq!(cmd.body, CommandBody::SendGroup { chat: group, ciphertext: vec![3], media: None });
    assert_eq!(cmd.origin.user, id.user);
    s.handle_append_result(5011, c, Ok(Err(Rejection::new(RejectCode::NotMember, "not a member"))));
    assert_eq!(error_code(drain(&mut s)), (EdgeErrorCode::NotMember, Some(ClientMsgId(78))));

    s.handle_frame(5020, send(79), &mut o);
    let (c, _) = append(&drain(&mut s));
    s.handle_append_result(5021, c, Err(AppendError::Unavailable("timeout".into())));
    let (code, cmid) = error_code(drain(&mut s));
    assert_eq!((code, cmid), (EdgeErrorCode::Unavailable, Some(ClientMsgId(79))));
    assert!(code.retryable());
    // Unknown and repeated correlations are ignored.
    s.handle_append_result(5022, c, Ok(Ok(Outcome::Done)));
    assert_eq!(drain(&mut s), vec![]);
}

#[test]
fn send_checks_size_reserved_ids_and_rate_before_appending() {
    let (mut s, mut o, _) =
        logged_in(Config { ciphertext_bytes_max: 4, frames_burst: 2, frames_per_sec: 1, ..Config::default() });
    let send = |cmid: u64, len: usize| ClientFrame::Send {
        to: Recipient::User(UserId(2)),
        client_msg_id: ClientMsgId(cmid),
        ciphertext: vec![0; len],
        media: None,
        devices_digest: None,
    };
    s.handle_frame(0, send(1, 5), &mut o);
    assert_eq!(error_code(drain(&mut s)), (EdgeErrorCode::CiphertextTooLarge, Some(ClientMsgId(1))));
    s.handle_frame(0, send(CLIENT_MSG_ID_RESERVED_BIT | 2, 1), &mut o);
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::BadFrame);
    s.handle_frame(0, send(3, 4), &mut o);
    checked_append(&mut s);
    s.handle_frame(0, send(4, 4), &mut o);
    checked_append(&mut s);
    s.handle_frame(0, send(5, 4), &mut o);
    assert_eq!(error_code(drain(&mut s)), (EdgeErrorCode::RateLimited, Some(ClientMsgId(5))));
    s.handle_frame(1000, send(5, 4), &mut o);
    checked_append(&mut s);
}

#[test]
fn a_direct_message_reaches_the_log_only_for_a_registered_recipient() {
    let (mut s, mut o, _) = logged_in(Config::default());
    let send = |cmid: u64| ClientFrame::Send {
        to: Recipient::User(UserId(9)),
        client_msg_id: ClientMsgId(cmid),
        ciphertext: vec![1],
        media: None,
        devices_digest: None,
    };
    for (cmid, verdict, code) in [
        (1, RecipientVerdict::Unknown(UserId(9)), EdgeErrorCode::UnknownRecipient),
        (2, RecipientVerdict::Unavailable, EdgeErrorCode::Unavailable),
    ] {
        s.handle_frame(0, send(cmid), &mut o);
        let actions = drain(&mut s);
        let [Action::CheckRecipient { correlation, users }] = actions.as_slice() else { panic!("{actions:?}") };
        assert_eq!(*users, vec![UserId(9)]);
        s.handle_recipient_checked(*correlation, verdict);
        // No append: only the error, with the message's id.
        assert_eq!(error_code(drain(&mut s)), (code, Some(ClientMsgId(cmid))));
        // A repeated answer is ignored.
        s.handle_recipient_checked(*correlation, RecipientVerdict::Registered);
        assert_eq!(drain(&mut s), vec![]);
    }
}

#[test]
fn acks_coalesce_per_chat_and_kind_while_one_is_in_flight() {
    let (mut s, mut o, id) = logged_in(Config::default());
    let chat = ChatId::group([1; 16]);
    let ack = |kind, n| ClientFrame::Ack { chat, kind, up_to_seq: Seq(n) };
    s.handle_frame(0, ack(ReceiptKind::Delivered, 3), &mut o);
    let (c1, cmd) = append(&drain(&mut s));
    assert_eq!(cmd.body, CommandBody::Ack { chat, kind: ReceiptKind::Delivered, up_to_seq: Seq(3) });
    assert_eq!((cmd.origin.user, cmd.origin.device), (id.user, id.device));
    s.handle_frame(0, ack(ReceiptKind::Delivered, 7), &mut o);
    s.handle_frame(0, ack(ReceiptKind::Delivered, 5), &mut o);
    assert_eq!(drain(&mut s), vec![]);
    // Another kind is another command.
    s.handle_frame(0, ack(ReceiptKind::Read, 2), &mut o);
    let (c_read, _) = append(&drain(&mut s));
    s.handle_append_result(0, c1, Ok(Ok(Outcome::Receipt { chat, up_to_seq: Seq(3) })));
    let (c2, cmd) = append(&drain(&mut s));
    assert_eq!(cmd.body, CommandBody::Ack { chat, kind: ReceiptKind::Delivered, up_to_seq: Seq(7) });
    s.handle_append_result(0, c2, Ok(Ok(Outcome::Receipt { chat, up_to_seq: Seq(7) })));
    assert_eq!(drain(&mut s), vec![]);
    s.handle_append_result(0, c_read, Ok(Err(Rejection::new(RejectCode::NotMember, "no"))));
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::NotMember);
    // Nothing in flight: the next ack goes out at once.
    s.handle_frame(0, ack(ReceiptKind::Delivered, 8), &mut o);
    append(&drain(&mut s));
}

#[test]
fn deliveries_and_sync() {
    let (mut s, mut o, id) = logged_in(Config::default());
    let chat = ChatId::group([1; 16]);
    let record = |origin: Origin, body: EventBody| EventRecord {
        partition: PartitionId(0),
        offset: Offset(0),
        log_index: LogIndex(1),
        event: Event { at_ms: 1077, origin, body },
    };
    let other = Origin { user: UserId(2), device: DeviceId(1), client_msg_id: ClientMsgId(5) };
    let me = Origin { user: id.user, device: id.device, client_msg_id: ClientMsgId(6) };
    let my_other_device = Origin { device: DeviceId(id.device.0.wrapping_add(1)), ..me };
    let msg = EventBody::MessageSent { chat, seq: Seq(3), ciphertext: vec![9], media: None };

    let at = |o: Origin, seq: u64| {
        record(o, EventBody::MessageSent { chat, seq: Seq(seq), ciphertext: vec![9], media: None })
    };
    let deliver = |o: Origin, seq: u64| {
        Action::Deliver(ServerFrame::Deliver {
            chat,
            seq: Seq(seq),
            sender: o.user,
            sender_device: o.device,
            client_msg_id: o.client_msg_id,
            at_ms: 1077,
            ciphertext: vec![9],
            media: None,
        })
    };
    let _ = &msg;

    s.handle_frame(0, ClientFrame::Sync { since: vec![(chat, Seq(2))] }, &mut o);
    assert_eq!(drain(&mut s), vec![Action::Sync { identity: id, since: vec![(chat, Seq(2))] }]);
    s.handle_frame(0, ClientFrame::Sync { since: vec![] }, &mut o);
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::RateLimited, "one sync at a time");
    // Live items during the sync wait for it.
    s.handle_delivery(&Item::new(at(other, 4)));
    assert_eq!(drain(&mut s), vec![]);
    s.handle_recovered(&Item::new(at(other, 3)));
    s.handle_recovered(&Item::new(at(me, 3)));
    s.handle_sync_done(&[(chat, Seq(3))], 1);
    assert_eq!(
        drain(&mut s),
        vec![deliver(other, 3), Action::Deliver(ServerFrame::SyncDone { chats: 1 }), deliver(other, 4)],
        "the recovered duplicate is dropped; the held live item follows the sync"
    );
    // My own send is not echoed to this device; my other device's is delivered.
    s.handle_delivery(&Item::new(at(me, 5)));
    s.handle_delivery(&Item::new(at(my_other_device, 6)));
    s.handle_delivery(&Item::new(at(other, 6)));
    assert_eq!(drain(&mut s), vec![deliver(my_other_device, 6)]);
    // A gap asks for a fill; the held item follows what the fill recovers.
    s.handle_delivery(&Item::new(at(other, 9)));
    assert_eq!(drain(&mut s), vec![Action::FillGap { identity: id, chat, after: Seq(6), until: Seq(9) }]);
    s.handle_recovered(&Item::new(at(other, 7)));
    s.handle_recovered(&Item::new(at(other, 8)));
    s.handle_recovered(&Item::new(at(other, 9)));
    s.handle_fill_done(chat);
    assert_eq!(drain(&mut s), vec![deliver(other, 7), deliver(other, 8), deliver(other, 9)]);
    // A roster change is delivered in its place; an item with no frame (an
    // edit) only moves the timeline.
    let left = Item::new(record(other, EventBody::MemberLeft { chat, seq: Seq(10) }));
    s.handle_delivery(&left);
    let edit = EventBody::MessageEdited { chat, seq: Seq(11), target: Seq(9), ciphertext: vec![1] };
    s.handle_delivery(&Item::new(record(other, edit)));
    s.handle_delivery(&Item::new(at(other, 12)));
    s.handle_receipt(chat, Seq(5), ReceiptKind::Read);
    assert!(matches!(left.server_frame(), Some(ServerFrame::ChatChange { seq: Seq(10), change: GroupOp::Leave, .. })));
    assert_eq!(
        drain(&mut s),
        vec![
            Action::Deliver(left.server_frame().unwrap()),
            deliver(other, 12),
            Action::Deliver(ServerFrame::Receipt { chat, up_to_seq: Seq(5), status: ReceiptKind::Read })
        ]
    );

    // A sync that fails starts live delivery at the client's positions: a
    // later item fills only what the client lacks, not the chat's history.
    let (mut s, mut o, id) = logged_in(Config::default());
    s.handle_frame(0, ClientFrame::Sync { since: vec![(chat, Seq(5))] }, &mut o);
    drain(&mut s);
    s.handle_sync_failed();
    assert_eq!(drain(&mut s), vec![Action::Deliver(ServerFrame::SyncDone { chats: 0 })]);
    s.handle_delivery(&Item::new(at(other, 6)));
    s.handle_delivery(&Item::new(at(other, 9)));
    assert_eq!(
        drain(&mut s),
        vec![deliver(other, 6), Action::FillGap { identity: id, chat, after: Seq(6), until: Seq(9) }]
    );

    // Before login nothing is delivered.
    let mut anon = session(Config::default());
    drain(&mut anon);
    anon.handle_delivery(&Item::new(record(other, msg)));
    anon.handle_sync_done(&[], 0);
    anon.handle_receipt(chat, Seq(1), ReceiptKind::Read);
    assert_eq!(drain(&mut anon), vec![]);
}

/// Requests a code and sends `VerifyOtp` with it and `pin`; returns the
/// `RegisterDevice` append.
fn verify_with_pin(s: &mut Session, o: &mut OtpRegistry, now: u64, pin: Option<&str>) -> (Correlation, Command) {
    s.handle_frame(now, ClientFrame::RequestOtp { phone: PHONE.into() }, o);
    let code = texted_code(&drain(s));
    let frame = ClientFrame::VerifyOtp {
        phone: PHONE.into(),
        code,
        device_name: "new".into(),
        identity_key: vec![],
        pin: pin.map(str::to_owned),
    };
    s.handle_frame(now, frame, o);
    append(&drain(s))
}

#[test]
fn a_locked_phone_and_a_registration_pin_refuse_registration() {
    let user = user_for_phone(PHONE).unwrap();
    // The log says the phone is locked: PhoneLocked, nothing else appended.
    let mut s = session(Config::default());
    let mut o = otp();
    let (c, _) = verify_with_pin(&mut s, &mut o, 0, None);
    s.handle_append_result(0, c, Ok(Err(Rejection::new(RejectCode::Locked, "locked for 360 more minutes"))));
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::PhoneLocked);
    assert_eq!(s.identity(), None);

    // No PIN sent for an account with one: PinRequired, no failure recorded.
    let (c, cmd) = verify_with_pin(&mut s, &mut o, 100_000, None);
    assert!(matches!(cmd.body, CommandBody::RegisterDevice { pin_hash: None, .. }));
    s.handle_append_result(0, c, Ok(Err(Rejection::new(RejectCode::PinRequired, "pin"))));
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::PinRequired);

    // A wrong PIN: the slow hash goes to the log (never the PIN); refused,
    // it counts as a wrong code for the phone.
    let (c, cmd) = verify_with_pin(&mut s, &mut o, 200_000, Some("1111"));
    let CommandBody::RegisterDevice { pin_hash: Some(h), .. } = cmd.body else { panic!("{cmd:?}") };
    assert_eq!(h, pin_hash(user, "1111"));
    s.handle_append_result(0, c, Ok(Err(Rejection::new(RejectCode::PinRequired, "wrong registration PIN"))));
    let (c, failure) = append(&drain(&mut s));
    assert_eq!((failure.body, failure.origin.user), (CommandBody::RecordOtpFailure, user));
    s.handle_append_result(0, c, Ok(Ok(Outcome::Done)));
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::PinRequired);
    // Once the failures lock the phone, a wrong code says so.
    s.handle_frame(300_000, ClientFrame::RequestOtp { phone: PHONE.into() }, &mut o);
    drain(&mut s);
    let wrong = ClientFrame::VerifyOtp {
        phone: PHONE.into(),
        code: "x".into(),
        device_name: "d".into(),
        identity_key: vec![],
        pin: None,
    };
    s.handle_frame(300_000, wrong, &mut o);
    let (c, _) = append(&drain(&mut s));
    s.handle_append_result(0, c, Ok(Err(Rejection::new(RejectCode::Locked, "locked"))));
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::PhoneLocked);
}

#[test]
fn expired_tokens_do_not_log_in() {
    let config = Config { token_lifetime_ms: 1000, ..Config::default() };
    let mut s = session(config.clone());
    let mut o = otp();
    let (id, token) = register(&mut s, &mut o, 5000);
    assert_eq!(token_expiry_ms(&token), 6000);
    let mut s = session(config);
    s.handle_frame(5999, ClientFrame::Login { user: id.user, device: id.device, token }, &mut o);
    assert!(matches!(drain(&mut s)[..], [Action::VerifyToken { .. }]));
    let mut s = session(Config::default());
    s.handle_frame(6000, ClientFrame::Login { user: id.user, device: id.device, token }, &mut o);
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::TokenExpired);
}

#[test]
fn pin_unlink_and_logout_requests() {
    let (mut s, mut o, id) = logged_in(Config::default());
    // Too short a PIN is refused here; a PIN is stored as its slow hash.
    s.handle_frame(0, ClientFrame::SetPin { client_msg_id: ClientMsgId(1), pin: "12".into() }, &mut o);
    assert_eq!(error_code(drain(&mut s)), (EdgeErrorCode::BadFrame, Some(ClientMsgId(1))));
    s.handle_frame(0, ClientFrame::SetPin { client_msg_id: ClientMsgId(2), pin: "2468".into() }, &mut o);
    let (c, cmd) = append(&drain(&mut s));
    assert_eq!(cmd.body, CommandBody::SetRegistrationPin { pin_hash: Some(pin_hash(id.user, "2468")) });
    assert_eq!((cmd.origin.user, cmd.origin.device), (id.user, id.device));
    s.handle_append_result(0, c, Ok(Ok(Outcome::Done)));
    assert_eq!(only_send(drain(&mut s)), ServerFrame::Done { client_msg_id: ClientMsgId(2), at: None });
    // Unlinking another device: Done, the connection stays.
    s.handle_frame(0, ClientFrame::UnlinkDevice { client_msg_id: ClientMsgId(3), device: DeviceId(77) }, &mut o);
    let (c, cmd) = append(&drain(&mut s));
    assert_eq!(cmd.body, CommandBody::UnlinkDevice { device: DeviceId(77) });
    s.handle_append_result(0, c, Ok(Err(Rejection::new(RejectCode::Invalid, "device 77 is not linked"))));
    assert_eq!(error_code(drain(&mut s)), (EdgeErrorCode::BadFrame, Some(ClientMsgId(3))));
    // Logging out revokes this device's session, then closes.
    s.handle_frame(0, ClientFrame::Logout { client_msg_id: ClientMsgId(4) }, &mut o);
    let (c, cmd) = append(&drain(&mut s));
    assert_eq!(cmd.body, CommandBody::RevokeSession { device: id.device });
    s.handle_append_result(0, c, Ok(Ok(Outcome::Done)));
    let actions = drain(&mut s);
    assert_eq!(actions[0], Action::Send(ServerFrame::Done { client_msg_id: ClientMsgId(4), at: None }));
    assert!(matches!(actions[1], Action::Send(ServerFrame::Error { code: EdgeErrorCode::Revoked, .. })));
    assert!(matches!(actions[2], Action::Close { code: EdgeErrorCode::Revoked, .. }));
    assert!(s.is_closed());
}

#[test]
fn group_requests_that_bring_someone_in_check_they_exist_first() {
    let (mut s, mut o, id) = logged_in(Config::default());
    let chat = ChatId::group([5; 16]);
    let group = |cmid: u64, op: GroupOp| ClientFrame::Group { client_msg_id: ClientMsgId(cmid), chat, op };
    // A creation lists the sender too: only the others are checked.
    let create = GroupOp::Create { name: "g".into(), members: vec![id.user, UserId(5), UserId(6)] };
    s.handle_frame(0, group(1, create.clone()), &mut o);
    let actions = drain(&mut s);
    let [Action::CheckRecipient { correlation, users }] = actions.as_slice() else { panic!("{actions:?}") };
    assert_eq!(*users, vec![UserId(5), UserId(6)]);
    // An unknown one: refused by name, nothing appended.
    s.handle_recipient_checked(*correlation, RecipientVerdict::Unknown(UserId(6)));
    let actions = drain(&mut s);
    let [Action::Send(ServerFrame::Error { code, message, client_msg_id, .. })] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_eq!((*code, *client_msg_id), (EdgeErrorCode::UnknownRecipient, Some(ClientMsgId(1))));
    assert!(message.contains(&UserId(6).to_string()), "{message}");
    // All known: the partition's command, with the client's id, answered Done.
    s.handle_frame(0, group(2, create), &mut o);
    let actions = drain(&mut s);
    let [Action::CheckRecipient { correlation, .. }] = actions.as_slice() else { panic!("{actions:?}") };
    s.handle_recipient_checked(*correlation, RecipientVerdict::Registered);
    let (c, cmd) = append(&drain(&mut s));
    assert_eq!(cmd.origin.client_msg_id, ClientMsgId(2));
    assert!(matches!(cmd.body, CommandBody::CreateGroup { chat: c2, .. } if c2 == chat));
    s.handle_append_result(0, c, Ok(Ok(Outcome::Chat { chat, seq: Seq(1) })));
    assert_eq!(only_send(drain(&mut s)), ServerFrame::Done { client_msg_id: ClientMsgId(2), at: Some((chat, Seq(1))) });
    // An add is checked; a removal is not (the partition knows its members).
    s.handle_frame(0, group(3, GroupOp::Add { member: UserId(7) }), &mut o);
    let actions = drain(&mut s);
    let [Action::CheckRecipient { users, .. }] = actions.as_slice() else { panic!("{actions:?}") };
    assert_eq!(*users, vec![UserId(7)]);
    s.handle_frame(0, group(4, GroupOp::Remove { member: UserId(5) }), &mut o);
    let (_, cmd) = append(&drain(&mut s));
    assert_eq!(cmd.body, CommandBody::RemoveMember { chat, member: UserId(5) });
}

#[test]
fn group_and_message_info_ask_the_views_as_the_logged_in_user_and_answer_by_request_id() {
    use chorus_schema::bus::{GroupInfoRequest, InfoRefusal, MessageInfo, MessageInfoRequest};
    let chat = ChatId::group([4; 16]);
    // Before login: refused by id.
    let mut anonymous = session(Config::default());
    let mut o = otp();
    anonymous.handle_frame(0, ClientFrame::GroupInfo { client_msg_id: ClientMsgId(1), chat }, &mut o);
    assert_eq!(error_code(drain(&mut anonymous)), (EdgeErrorCode::Unauthenticated, Some(ClientMsgId(1))));

    let (mut s, mut o, id) = logged_in(Config::default());
    // A direct chat has no group info.
    let direct = ChatId::direct(id.user, UserId(9));
    s.handle_frame(0, ClientFrame::GroupInfo { client_msg_id: ClientMsgId(2), chat: direct }, &mut o);
    assert_eq!(error_code(drain(&mut s)), (EdgeErrorCode::BadFrame, Some(ClientMsgId(2))));
    // Group info: asked as this user, answered with the request's id.
    s.handle_frame(0, ClientFrame::GroupInfo { client_msg_id: ClientMsgId(3), chat }, &mut o);
    let actions = drain(&mut s);
    let [Action::Info { correlation, request }] = actions.as_slice() else { panic!("one info query: {actions:?}") };
    assert_eq!(*request, InfoRequest::Group(GroupInfoRequest { user: id.user, chat }));
    let member = Member { since: Seq(1), admin: true };
    let info = GroupInfo {
        last_seq: Seq(5),
        name: "n".into(),
        description: "d".into(),
        members: vec![(id.user, member)],
        icon: None,
    };
    // An answer to an unknown correlation changes nothing.
    s.handle_info(Correlation(9_999), InfoAnswer::Group(Ok(info.clone())));
    assert!(drain(&mut s).is_empty());
    s.handle_info(*correlation, InfoAnswer::Group(Ok(info.clone())));
    assert_eq!(only_send(drain(&mut s)), ServerFrame::GroupInfo { client_msg_id: ClientMsgId(3), chat, info });
    // Refusals become errors with the request's id.
    for (refusal, code) in [
        (InfoRefusal::NotMember, EdgeErrorCode::NotMember),
        (InfoRefusal::UnknownChat, EdgeErrorCode::UnknownRecipient),
        (InfoRefusal::NotSender, EdgeErrorCode::Forbidden),
        (InfoRefusal::NotMessage, EdgeErrorCode::BadFrame),
    ] {
        s.handle_frame(0, ClientFrame::MessageInfo { client_msg_id: ClientMsgId(4), chat, seq: Seq(7) }, &mut o);
        let actions = drain(&mut s);
        let [Action::Info { correlation, request }] = actions.as_slice() else { panic!("one info query: {actions:?}") };
        assert_eq!(*request, InfoRequest::Message(MessageInfoRequest { user: id.user, chat, seq: Seq(7) }));
        s.handle_info(*correlation, InfoAnswer::Message(Err(refusal)));
        assert_eq!(error_code(drain(&mut s)), (code, Some(ClientMsgId(4))), "{refusal:?}");
    }
    s.handle_frame(0, ClientFrame::MessageInfo { client_msg_id: ClientMsgId(5), chat, seq: Seq(7) }, &mut o);
    let actions = drain(&mut s);
    let [Action::Info { correlation, .. }] = actions.as_slice() else { panic!("one info query: {actions:?}") };
    let entries = vec![MessageReceipt { user: UserId(9), delivered_at_ms: Some(10), read_at_ms: None }];
    s.handle_info(*correlation, InfoAnswer::Message(Ok(MessageInfo { entries: entries.clone() })));
    assert_eq!(
        only_send(drain(&mut s)),
        ServerFrame::MessageInfo { client_msg_id: ClientMsgId(5), chat, seq: Seq(7), entries }
    );
    // The views did not answer: retryable.
    s.handle_frame(0, ClientFrame::GroupInfo { client_msg_id: ClientMsgId(6), chat }, &mut o);
    let actions = drain(&mut s);
    let [Action::Info { correlation, .. }] = actions.as_slice() else { panic!("one info query: {actions:?}") };
    s.handle_info(*correlation, InfoAnswer::Unavailable("timeout".into()));
    assert_eq!(error_code(drain(&mut s)), (EdgeErrorCode::Unavailable, Some(ClientMsgId(6))));
}

#[test]
fn a_block_is_appended_to_the_direct_chat_then_to_the_user() {
    let (mut s, mut o, id) = logged_in(Config::default());
    let peer = UserId(99);
    s.handle_frame(0, ClientFrame::Block { client_msg_id: ClientMsgId(5), user: peer, blocked: true }, &mut o);
    // First the chat's marker: what the log checks on the peer's SendDirect.
    let (c, cmd) = append(&drain(&mut s));
    assert_eq!(cmd.body, CommandBody::SetDirectBlock { peer, blocked: true });
    assert_eq!(cmd.key(), Key::Chat(ChatId::direct(id.user, peer)));
    s.handle_append_result(0, c, Ok(Ok(Outcome::Done)));
    // Then the user's own list.
    let (c, cmd) = append(&drain(&mut s));
    assert_eq!(cmd.body, CommandBody::Block { target: peer });
    assert_eq!((cmd.origin.user, cmd.origin.device), (id.user, id.device));
    s.handle_append_result(0, c, Ok(Ok(Outcome::Done)));
    assert_eq!(only_send(drain(&mut s)), ServerFrame::Done { client_msg_id: ClientMsgId(5), at: None });
    // A refused marker stops there.
    s.handle_frame(0, ClientFrame::Block { client_msg_id: ClientMsgId(6), user: id.user, blocked: true }, &mut o);
    let (c, _) = append(&drain(&mut s));
    s.handle_append_result(0, c, Ok(Err(Rejection::new(RejectCode::Invalid, "cannot block yourself"))));
    assert_eq!(error_code(drain(&mut s)), (EdgeErrorCode::BadFrame, Some(ClientMsgId(6))));
    // The log's refusal of a blocked sender reaches the client as Forbidden.
    s.handle_frame(
        0,
        ClientFrame::Send {
            to: Recipient::User(peer),
            client_msg_id: ClientMsgId(7),
            ciphertext: vec![1],
            media: None,
            devices_digest: None,
        },
        &mut o,
    );
    let (c, _) = checked_append(&mut s);
    s.handle_append_result(0, c, Ok(Err(Rejection::new(RejectCode::Blocked, "blocked"))));
    assert_eq!(error_code(drain(&mut s)), (EdgeErrorCode::Forbidden, Some(ClientMsgId(7))));
}

#[test]
fn a_newly_linked_device_gets_no_history_from_before_its_link() {
    let chat = ChatId::group([1; 16]);
    let other = Origin { user: UserId(2), device: DeviceId(1), client_msg_id: ClientMsgId(5) };
    let item = |seq: u64, at_ms: u64| EventRecord {
        partition: PartitionId(0),
        offset: Offset(seq),
        log_index: LogIndex(seq),
        event: Event {
            at_ms,
            origin: other,
            body: EventBody::MessageSent { chat, seq: Seq(seq), ciphertext: vec![], media: None },
        },
    };
    let delivered = |actions: Vec<Action>| -> Vec<u64> {
        actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Deliver(ServerFrame::Deliver { seq, .. }) => Some(seq.0),
                _ => None,
            })
            .collect()
    };
    // Registered at 5000: the token says so, and the sync skips older items.
    let mut s = session(Config::default());
    let mut o = otp();
    let (id, token) = register(&mut s, &mut o, 5000);
    assert_eq!(token_linked_ms(&token, 6000), Some(5000));
    s.handle_frame(5000, ClientFrame::Sync { since: vec![] }, &mut o);
    drain(&mut s);
    for (seq, at) in [(1, 100), (2, 4999), (3, 5000), (4, 7000)] {
        s.handle_recovered(&Item::new(item(seq, at)));
    }
    s.handle_sync_done(&[(chat, Seq(4))], 1);
    assert_eq!(delivered(drain(&mut s)), vec![3, 4]);
    // The same on a later login with the token, at any edge.
    let mut s = session(Config::default());
    s.handle_frame(9000, ClientFrame::Login { user: id.user, device: id.device, token }, &mut o);
    drain(&mut s);
    s.handle_token_verified(TokenVerdict::Valid);
    drain(&mut s);
    s.handle_frame(9000, ClientFrame::Sync { since: vec![] }, &mut o);
    drain(&mut s);
    s.handle_recovered(&Item::new(item(1, 100)));
    s.handle_recovered(&Item::new(item(2, 6000)));
    s.handle_sync_done(&[(chat, Seq(2))], 1);
    assert_eq!(delivered(drain(&mut s)), vec![2]);
    // A token without a link time (made before it existed): everything.
    assert_eq!(token_linked_ms(&[0xff; 32], 9000), None);
}

#[test]
fn device_notices_close_a_revoked_device_and_tell_the_others() {
    let (mut s, _o, id) = logged_in(Config::default());
    s.handle_device_notice(DeviceNoticeKind::Linked, DeviceId(5), 42);
    assert_eq!(
        drain(&mut s),
        vec![Action::Deliver(ServerFrame::DeviceNotice {
            kind: DeviceNoticeKind::Linked,
            device: DeviceId(5),
            at_ms: 42
        })]
    );
    s.handle_device_notice(DeviceNoticeKind::LoggedOut, DeviceId(5), 43);
    assert_eq!(drain(&mut s).len(), 1);
    assert!(!s.is_closed());
    s.handle_device_notice(DeviceNoticeKind::Unlinked, id.device, 44);
    let actions = drain(&mut s);
    assert!(matches!(
        actions[..],
        [Action::Send(ServerFrame::Error { code: EdgeErrorCode::Revoked, .. }), Action::Close { .. }]
    ));
    assert!(s.is_closed());
}

#[test]
fn edge_rate_limits_refuse_with_retry_after() {
    let config = LimitsConfig {
        otp_requests_per_source: Rate::new(1, 1),
        logins_per_source: Rate::new(1, 1),
        otp_attempts_per_phone: Rate::new(1, 1),
        ..LimitsConfig::default()
    };
    let limits = Arc::new(Limits::new(&config).unwrap());
    let source: IpAddr = [192, 0, 2, 1].into();
    let mut o = OtpRegistry::new(OtpConfig { resend_interval_ms: 0, ..OtpConfig::default() }, [9; 32]);
    let mut s = session(Config::default());
    s.set_limits(limits.clone(), source);
    s.handle_frame(0, ClientFrame::RequestOtp { phone: PHONE.into() }, &mut o);
    drain(&mut s);
    // A second connection from the same address shares the edge's limits.
    let mut s2 = session(Config::default());
    s2.set_limits(limits.clone(), source);
    s2.handle_frame(0, ClientFrame::RequestOtp { phone: "+15550100002".into() }, &mut o);
    let f = only_send(drain(&mut s2));
    let ServerFrame::Error { code: EdgeErrorCode::RateLimited, retry_after_ms: Some(ms), .. } = f else {
        panic!("{f:?}")
    };
    assert!(ms > 3_000_000 && ms <= 3_600_000, "retry after {ms} ms");
    // Attempts per phone: the second guess waits, whatever the address.
    let verify = || ClientFrame::VerifyOtp {
        phone: PHONE.into(),
        code: "x".into(),
        device_name: "d".into(),
        identity_key: vec![],
        pin: None,
    };
    s.handle_frame(0, verify(), &mut o);
    let (c, _) = append(&drain(&mut s));
    s.handle_append_result(0, c, Ok(Ok(Outcome::Done)));
    drain(&mut s);
    let mut s3 = session(Config::default());
    s3.set_limits(limits.clone(), [192, 0, 2, 9].into());
    s3.handle_frame(0, verify(), &mut o);
    assert!(matches!(
        only_send(drain(&mut s3)),
        ServerFrame::Error { code: EdgeErrorCode::RateLimited, retry_after_ms: Some(_), .. }
    ));
    // Logins per address.
    let login = ClientFrame::Login { user: UserId(1), device: DeviceId(1), token: [9; 32] };
    s3.handle_frame(0, login.clone(), &mut o);
    assert!(matches!(drain(&mut s3)[..], [Action::VerifyToken { .. }]));
    s3.handle_token_verified(TokenVerdict::Invalid);
    drain(&mut s3);
    s3.handle_frame(0, login, &mut o);
    assert!(matches!(
        only_send(drain(&mut s3)),
        ServerFrame::Error { code: EdgeErrorCode::RateLimited, retry_after_ms: Some(_), .. }
    ));
}

#[test]
fn bad_bytes_get_error_frames_then_a_close() {
    let mut s = session(Config { bad_frames_max: 1, ..Config::default() });
    let mut o = otp();
    s.handle_bytes(0, b"garbage", &mut o);
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::BadFrame);
    s.handle_bytes(0, &ClientFrame::Ping { nonce: 3 }.encode(), &mut o);
    assert_eq!(only_send(drain(&mut s)), ServerFrame::Pong { nonce: 3 });
    s.handle_bytes(0, b"garbage again", &mut o);
    let actions = drain(&mut s);
    assert_eq!(actions.len(), 2);
    assert!(matches!(actions[1], Action::Close { code: EdgeErrorCode::BadFrame, .. }));
    assert!(s.is_closed());
}

// ---- proptest ------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Input {
    Frame(ClientFrame),
    /// Answer the oldest unanswered append with this result.
    AppendResult(u8),
    Verdict(u8),
    Delivery,
    Bytes(Vec<u8>),
    Tick(u64),
    // ---- linked devices (issue 12) ----
    PairingReady(bool),
    /// A claim of this connection's pairing code by (user, device, client_msg_id).
    Claim(u64, u32, u64),
}

fn frame() -> impl Strategy<Value = ClientFrame> {
    let chat = (0u8..3).prop_map(|n| ChatId::group([n; 16]));
    let phone = prop_oneof![Just(PHONE.to_string()), Just("+15550100002".to_string()), Just("bad".to_string())];
    prop_oneof![
        phone.clone().prop_map(|phone| ClientFrame::RequestOtp { phone }),
        (phone, "[0-9]{6}").prop_map(|(phone, code)| ClientFrame::VerifyOtp {
            phone,
            code,
            device_name: "d".into(),
            identity_key: vec![1],
            pin: None
        }),
        (0u64..4, 0u32..3, any::<[u8; 32]>()).prop_map(|(u, d, token)| ClientFrame::Login {
            user: UserId(u),
            device: DeviceId(d),
            token
        }),
        (
            prop_oneof![(0u64..4).prop_map(|u| Recipient::User(UserId(u))), chat.clone().prop_map(Recipient::Group)],
            prop_oneof![0u64..8, any::<u64>()],
            0usize..80
        )
            .prop_map(|(to, c, n)| ClientFrame::Send {
                to,
                client_msg_id: ClientMsgId(c),
                ciphertext: vec![0; n],
                media: None,
                devices_digest: None
            }),
        (chat.clone(), any::<bool>(), 0u64..10).prop_map(|(chat, read, n)| ClientFrame::Ack {
            chat,
            kind: if read { ReceiptKind::Read } else { ReceiptKind::Delivered },
            up_to_seq: Seq(n),
        }),
        prop::collection::vec((chat, (0u64..5).prop_map(Seq)), 0..3).prop_map(|since| ClientFrame::Sync { since }),
        any::<u64>().prop_map(|nonce| ClientFrame::Ping { nonce }),
        (0u64..4, prop_oneof![Just(String::new()), Just("12".to_string()), Just("2468".to_string())])
            .prop_map(|(c, pin)| ClientFrame::SetPin { client_msg_id: ClientMsgId(c), pin }),
        (0u64..4, 0u32..3)
            .prop_map(|(c, d)| ClientFrame::UnlinkDevice { client_msg_id: ClientMsgId(c), device: DeviceId(d) }),
        (0u64..4).prop_map(|c| ClientFrame::Logout { client_msg_id: ClientMsgId(c) }),
        (0u64..4, 0u64..4, any::<bool>()).prop_map(|(c, u, blocked)| ClientFrame::Block {
            client_msg_id: ClientMsgId(c),
            user: UserId(u),
            blocked
        }),
        // ---- linked devices (issue 12) ----
        Just(ClientFrame::PairRequest { device_name: "new".into(), identity_key: vec![3] }),
        (0u64..4, prop_oneof![Just("ABCDE-FGHJK".to_string()), Just("nope".to_string())])
            .prop_map(|(c, code)| ClientFrame::LinkDevice { client_msg_id: ClientMsgId(c), code }),
        (0u64..4).prop_map(|c| ClientFrame::ListDevices { client_msg_id: ClientMsgId(c) }),
    ]
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        6 => frame().prop_map(Input::Frame),
        4 => any::<u8>().prop_map(Input::AppendResult),
        2 => any::<u8>().prop_map(Input::Verdict),
        1 => Just(Input::Delivery),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Input::Bytes),
        1 => (0u64..2000).prop_map(Input::Tick),
        1 => any::<bool>().prop_map(Input::PairingReady),
        2 => (0u64..4, 0u32..3, 0u64..4).prop_map(|(u, d, c)| Input::Claim(u, d, c)),
    ]
}

fn result_for(n: u8, command: &Command) -> Result<CommandResult, AppendError> {
    match n % 6 {
        0 => Err(AppendError::Unavailable("x".into())),
        1 => Ok(Err(Rejection::new(RejectCode::NotMember, "x"))),
        2 => Ok(Err(Rejection::new(RejectCode::AlreadyExists, "x"))),
        _ => Ok(Ok(match &command.body {
            CommandBody::SendDirect { .. } | CommandBody::SendGroup { .. } => {
                Outcome::Chat { chat: ChatId::group([1; 16]), seq: Seq(1) }
            }
            _ => Outcome::Done,
        })),
    }
}

proptest! {
    /// Random frames, IO results, deliveries and garbage never panic; no Append
    /// before login but the registration of a phone that was texted a code; after
    /// login every Append's origin is the logged-in identity.
    #[test]
    fn sessions_never_act_as_another_identity(
        inputs in prop::collection::vec(input(), 0..80),
        small in any::<bool>(),
        use_texted in any::<bool>(),
    ) {
        let config = if small {
            Config { ciphertext_bytes_max: 40, frames_burst: 3, frames_per_sec: 2, in_flight_max: 4, ..Config::default() }
        } else {
            Config::default()
        };
        let mut s = session(config);
        let mut o = OtpRegistry::new(OtpConfig { resend_interval_ms: 0, ..OtpConfig::default() }, [0; 32]);
        let mut now = 0u64;
        let mut appends: std::collections::VecDeque<(Correlation, Command)> = Default::default();
        let mut identity: Option<Identity> = None;
        let mut texted: Vec<(String, String)> = Vec::new();
        // Claims of a pairing code handed to the session, and the answered ones.
        let mut claims: Vec<bus::PairClaim> = Vec::new();
        let mut next_claim = 0u64;
        for input in inputs {
            match input {
                Input::Frame(ClientFrame::VerifyOtp { phone, device_name, identity_key, code, pin }) => {
                    // Often use the texted code, so that registrations complete.
                    let code = if use_texted {
                        texted.iter().rev().find(|(p, _)| *p == phone).map_or(code, |(_, c)| c.clone())
                    } else {
                        code
                    };
                    s.handle_frame(now, ClientFrame::VerifyOtp { phone, code, device_name, identity_key, pin }, &mut o)
                }
                Input::Frame(f) => s.handle_frame(now, f, &mut o),
                Input::AppendResult(n) => {
                    if let Some((c, cmd)) = appends.pop_front() {
                        s.handle_append_result(now, c, result_for(n, &cmd));
                    }
                }
                Input::Verdict(n) => s.handle_token_verified(match n % 3 {
                    0 => TokenVerdict::Valid,
                    1 => TokenVerdict::Invalid,
                    _ => TokenVerdict::Unavailable,
                }),
                Input::Delivery => s.handle_delivery(&Item::new(EventRecord {
                    partition: PartitionId(0),
                    offset: Offset(0),
                    log_index: LogIndex(0),
                    event: Event {
                        at_ms: now,
                        origin: Origin { user: UserId(1), device: DeviceId(1), client_msg_id: ClientMsgId(1) },
                        body: EventBody::MessageSent { chat: ChatId::group([1; 16]), seq: Seq(1), ciphertext: vec![], media: None },
                    },
                })),
                Input::Bytes(b) => s.handle_bytes(now, &b, &mut o),
                Input::Tick(dt) => now += dt,
                Input::PairingReady(ok) => s.handle_pairing_ready(now, ok),
                Input::Claim(u, d, c) => {
                    let claim = bus::PairClaim { user: UserId(u), device: DeviceId(d), client_msg_id: ClientMsgId(c) };
                    claims.push(claim);
                    next_claim += 1;
                    s.handle_pair_claim(now, ClaimId(next_claim), claim);
                }
            }
            while let Some(a) = s.poll_action() {
                match a {
                    Action::Send(ServerFrame::LoggedIn { user, device, .. } | ServerFrame::Registered { user, device, .. }) => {
                        prop_assert!(identity.is_none(), "logged in twice");
                        identity = Some(Identity { user, device });
                        prop_assert_eq!(s.identity(), identity);
                    }
                    Action::SendSms { phone, text } => {
                        texted.push((phone, text.rsplit(' ').next().unwrap().to_owned()));
                    }
                    Action::Deliver(_)
                    | Action::DeliverItem(_)
                    | Action::Subscribe(_)
                    | Action::Sync { .. }
                    | Action::FillGap { .. } => {
                        prop_assert!(identity.is_some(), "delivery before login");
                    }
                    Action::Query { correlation, .. } => {
                        prop_assert!(identity.is_some(), "view query before login");
                        s.handle_query_result(correlation, Err("no views here".into()));
                    }
                    Action::Info { correlation, request } => {
                        prop_assert!(identity.is_some(), "info query before login");
                        let asker = match request {
                            InfoRequest::Group(q) => q.user,
                            InfoRequest::Message(q) => q.user,
                        };
                        prop_assert_eq!(Some(asker), identity.map(|i| i.user));
                        s.handle_info(correlation, InfoAnswer::Unavailable("test".into()));
                    }
                    Action::CheckRecipient { correlation, users } => {
                        prop_assert!(identity.is_some(), "recipient check before login");
                        prop_assert!(!users.is_empty(), "a check of no one");
                        s.handle_recipient_checked(correlation, match users[0].0 % 4 {
                            0 => RecipientVerdict::Unknown(users[0]),
                            3 => RecipientVerdict::Unavailable,
                            _ => RecipientVerdict::Registered,
                        });
                    }
                    Action::Append { correlation, command } => {
                        let registration = matches!(
                            command.body,
                            CommandBody::RegisterDevice { .. } | CommandBody::RecordOtpFailure
                        );
                        // A pairing link is appended in the name of the
                        // claim the (new) device's edge received, with its session.
                        let pairing = matches!(command.body, CommandBody::LinkDevice { token_hash: Some(_), .. });
                        if identity.is_none() && pairing {
                            let by = (command.origin.user, command.origin.device, command.origin.client_msg_id);
                            prop_assert!(
                                claims.iter().any(|c| (c.user, c.device, c.client_msg_id) == by),
                                "a link in the name of a claim never received: {:?}", command
                            );
                            appends.push_back((correlation, command));
                            continue;
                        }
                        match identity {
                            Some(id) => {
                                prop_assert!(!registration, "registration command after login: {:?}", command);
                                prop_assert_eq!((command.origin.user, command.origin.device), (id.user, id.device));
                            }
                            None => {
                                prop_assert!(registration, "append before login: {:?}", command);
                                let users: Vec<UserId> = texted.iter().map(|(p, _)| user_for_phone(p).unwrap()).collect();
                                prop_assert!(users.contains(&command.origin.user), "registration of an unverified phone");
                                prop_assert_ne!(command.origin.client_msg_id.0 & CLIENT_MSG_ID_RESERVED_BIT, 0);
                            }
                        }
                        if let CommandBody::SendDirect { ciphertext, .. } | CommandBody::SendGroup { ciphertext, .. } = &command.body {
                            let max = if small { 40 } else { MAX_CIPHERTEXT_BYTES };
                            prop_assert!(ciphertext.len() <= max);
                            prop_assert_eq!(command.origin.client_msg_id.0 & CLIENT_MSG_ID_RESERVED_BIT, 0);
                        }
                        prop_assert!(command.validate().is_ok());
                        appends.push_back((correlation, command));
                    }
                    Action::Send(f) => prop_assert!(f.validate().is_ok()),
                    Action::SetPresence(command) => {
                        let id = identity.expect("presence before login");
                        prop_assert_eq!((command.origin.user, command.origin.device), (id.user, id.device));
                        prop_assert_ne!(command.origin.client_msg_id.0 & CLIENT_MSG_ID_RESERVED_BIT, 0);
                    }
                    Action::WatchPresence { viewer, .. } => {
                        prop_assert_eq!(Some(viewer), identity.map(|i| i.user), "a watch as another user");
                    }
                    Action::Typing { identity: typist, .. } => {
                        prop_assert_eq!(Some(typist), identity, "typing as another identity");
                    }
                    Action::VerifyToken { .. } => prop_assert!(identity.is_none()),
                    Action::Close { .. } => prop_assert!(s.is_closed()),
                    Action::AwaitPairing { .. } => prop_assert!(identity.is_none(), "a logged-in device waits to be linked"),
                    Action::StopPairing => {}
                    Action::AnswerClaim { frame, .. } => prop_assert!(frame.validate().is_ok()),
                    Action::ClaimPairing { claim, .. } => {
                        let id = identity.expect("a claim before login");
                        prop_assert_eq!((claim.user, claim.device), (id.user, id.device));
                    }
                    Action::ListDevices { user, .. } => prop_assert_eq!(Some(user), identity.map(|i| i.user)),
                }
            }
        }
    }
}

// ---- linked devices (issue 12) ----------------------------------------------------

fn pairing_session(now: u64) -> (Session, OtpRegistry, [u8; 32], String) {
    let mut s = session(Config { pairing_code_ttl_ms: 60_000, ..Config::default() });
    let mut o = otp();
    s.handle_frame(now, ClientFrame::PairRequest { device_name: "laptop".into(), identity_key: vec![5] }, &mut o);
    let actions = drain(&mut s);
    let [Action::AwaitPairing { code_hash, ttl_ms: 60_000 }] = actions.as_slice() else {
        panic!("expected AwaitPairing, got {actions:?}")
    };
    let code_hash = *code_hash;
    // The code is shown only once claims can arrive.
    s.handle_pairing_ready(now + 5, true);
    let ServerFrame::PairCode { code, expires_in_ms } = only_send(drain(&mut s)) else { panic!("no PairCode") };
    assert_eq!(expires_in_ms, 59_995);
    assert_eq!(chorus_schema::edge::pairing_code_hash(&code).unwrap(), code_hash, "the subject names the code's hash");
    (s, o, code_hash, code)
}

const LINKER: bus::PairClaim = bus::PairClaim { user: UserId(42), device: DeviceId(1), client_msg_id: ClientMsgId(7) };

#[test]
fn a_pairing_code_links_its_device_on_the_first_claim_only() {
    let (mut s, _o, _, _) = pairing_session(1000);
    s.handle_pair_claim(2000, ClaimId(1), LINKER);
    let actions = drain(&mut s);
    let [Action::StopPairing, Action::Append { correlation, command }] = actions.as_slice() else {
        panic!("expected StopPairing and one append, got {actions:?}")
    };
    assert_eq!(command.origin, Origin { user: UserId(42), device: DeviceId(1), client_msg_id: ClientMsgId(7) });
    let CommandBody::LinkDevice { device, identity_key, name, token_hash: Some(hash) } = &command.body else {
        panic!("expected a pairing LinkDevice, got {command:?}")
    };
    assert_eq!((identity_key.as_slice(), name.as_str()), (&[5u8][..], "laptop"));
    // A second claim, while the first is carried out: refused, nothing appended.
    s.handle_pair_claim(2001, ClaimId(2), bus::PairClaim { client_msg_id: ClientMsgId(8), ..LINKER });
    match drain(&mut s).as_slice() {
        [Action::AnswerClaim {
            claim: ClaimId(2),
            frame: ServerFrame::Error { code: EdgeErrorCode::BadPairingCode, client_msg_id: Some(ClientMsgId(8)), .. },
        }] => {}
        other => panic!("expected the second claim refused, got {other:?}"),
    }
    s.handle_append_result(2002, *correlation, Ok(Ok(Outcome::Done)));
    let actions = drain(&mut s);
    match actions.as_slice() {
        [Action::AnswerClaim {
            claim: ClaimId(1),
            frame: ServerFrame::Done { client_msg_id: ClientMsgId(7), at: None },
        }, Action::Send(ServerFrame::Registered { user, device: d, token }), Action::SetPresence(_), Action::Subscribe(id)] =>
        {
            assert_eq!((*user, *d), (UserId(42), *device));
            assert_eq!(token_hash(token), *hash, "the log has the hash of the token the device got");
            assert_eq!(token_linked_ms(token, 3000), Some(2000));
            assert_eq!(*id, Identity { user: UserId(42), device: *device });
        }
        other => panic!("expected Done to the linker and Registered, got {other:?}"),
    }
    assert_eq!(s.identity(), Some(Identity { user: UserId(42), device: *device }));
}

#[test]
fn an_expired_pairing_code_links_nothing() {
    let (mut s, _o, _, _) = pairing_session(1000);
    s.handle_pair_claim(61_000, ClaimId(1), LINKER);
    let actions = drain(&mut s);
    match actions.as_slice() {
        [Action::AnswerClaim {
            frame: ServerFrame::Error { code: EdgeErrorCode::BadPairingCode, message, .. }, ..
        }, Action::StopPairing, Action::Send(ServerFrame::Error { code: EdgeErrorCode::BadPairingCode, .. })] => {
            assert!(message.contains("expired"), "{message}")
        }
        other => panic!("expected the expired claim refused, got {other:?}"),
    }
    assert!(!actions.iter().any(|a| matches!(a, Action::Append { .. })));
    assert_eq!(s.identity(), None);
}

#[test]
fn a_refused_link_tells_both_devices_and_uses_the_code_up() {
    let (mut s, mut o, _, _) = pairing_session(1000);
    s.handle_pair_claim(2000, ClaimId(1), LINKER);
    let (c, _) = match drain(&mut s).as_slice() {
        [Action::StopPairing, Action::Append { correlation, command }] => (*correlation, command.clone()),
        other => panic!("{other:?}"),
    };
    let refusal = Rejection::new(RejectCode::TooManyDevices, "a user links at most 5 devices");
    s.handle_append_result(2001, c, Ok(Err(refusal)));
    match drain(&mut s).as_slice() {
        [Action::AnswerClaim {
            frame: ServerFrame::Error { code: EdgeErrorCode::TooManyDevices, client_msg_id: Some(ClientMsgId(7)), .. },
            ..
        }, Action::Send(ServerFrame::Error { code: EdgeErrorCode::TooManyDevices, .. })] => {}
        other => panic!("expected TooManyDevices to both, got {other:?}"),
    }
    assert_eq!(s.identity(), None);
    // The code is used: a later claim is refused at once.
    s.handle_pair_claim(2002, ClaimId(2), LINKER);
    assert!(matches!(
        drain(&mut s).as_slice(),
        [Action::AnswerClaim { frame: ServerFrame::Error { code: EdgeErrorCode::BadPairingCode, .. }, .. }]
    ));
    // The device may ask for a new code.
    s.handle_frame(2003, ClientFrame::PairRequest { device_name: "laptop".into(), identity_key: vec![5] }, &mut o);
    assert!(matches!(drain(&mut s).as_slice(), [Action::AwaitPairing { .. }]));
}

#[test]
fn link_device_claims_the_code_and_passes_the_answer_on() {
    let (mut s, mut o, id) = logged_in(Config::default());
    let code = chorus_schema::edge::pairing_code(99);
    let cmid = ClientMsgId(5);
    s.handle_frame(2000, ClientFrame::LinkDevice { client_msg_id: cmid, code: code.to_lowercase() }, &mut o);
    let actions = drain(&mut s);
    let [Action::ClaimPairing { correlation, code_hash, claim }] = actions.as_slice() else {
        panic!("expected a claim, got {actions:?}")
    };
    assert_eq!(*code_hash, chorus_schema::edge::pairing_code_hash(&code).unwrap());
    assert_eq!(*claim, bus::PairClaim { user: id.user, device: id.device, client_msg_id: cmid });
    s.handle_pair_answered(*correlation, Ok(ServerFrame::Done { client_msg_id: cmid, at: None }));
    assert_eq!(only_send(drain(&mut s)), ServerFrame::Done { client_msg_id: cmid, at: None });
    // Nobody waits with the code.
    s.handle_frame(2001, ClientFrame::LinkDevice { client_msg_id: ClientMsgId(6), code }, &mut o);
    let [Action::ClaimPairing { correlation, .. }] = drain(&mut s)[..] else { panic!() };
    s.handle_pair_answered(correlation, Err(ClaimError::NoDevice));
    assert_eq!(error_code(drain(&mut s)), (EdgeErrorCode::BadPairingCode, Some(ClientMsgId(6))));
    // A malformed code never leaves the edge.
    s.handle_frame(2002, ClientFrame::LinkDevice { client_msg_id: ClientMsgId(7), code: "12".into() }, &mut o);
    assert_eq!(error_code(drain(&mut s)), (EdgeErrorCode::BadPairingCode, Some(ClientMsgId(7))));
    // Not logged in: refused.
    let mut anon = session(Config::default());
    anon.handle_frame(1, ClientFrame::LinkDevice { client_msg_id: ClientMsgId(1), code: "x".into() }, &mut o);
    assert_eq!(error_code(drain(&mut anon)), (EdgeErrorCode::Unauthenticated, Some(ClientMsgId(1))));
}

#[test]
fn a_waiting_device_hears_that_its_code_expired() {
    let (mut s, mut o, _, _) = pairing_session(1000);
    // Too early (a stale timer of an earlier code): nothing.
    s.handle_pairing_expired(30_000);
    assert!(drain(&mut s).is_empty());
    s.handle_pairing_expired(61_000);
    assert_eq!(error_code(drain(&mut s)), (EdgeErrorCode::BadPairingCode, None));
    s.handle_frame(61_001, ClientFrame::PairRequest { device_name: "laptop".into(), identity_key: vec![5] }, &mut o);
    assert!(matches!(drain(&mut s).as_slice(), [Action::AwaitPairing { .. }]));
}
#[test]
fn a_connection_is_online_from_login_until_it_ends_and_typing_is_rate_limited() {
    let (mut s, mut o, id) = logged_in(Config { typing_burst: 2, typing_per_sec: 1, ..Config::default() });
    // The offline names the connection the online named (register() checked the online).
    let offline = s.offline_command().expect("an online connection goes offline");
    assert!(matches!(offline.body, CommandBody::SetPresence { online: false, .. }), "{offline:?}");
    assert_eq!((offline.origin.user, offline.origin.device), (id.user, id.device));
    assert!(s.offline_command().is_none(), "once");

    // A watch list, deduplicated, as the logged-in user.
    s.handle_frame(2000, ClientFrame::SubscribePresence { users: vec![UserId(9), UserId(8), UserId(9)] }, &mut o);
    assert_eq!(drain(&mut s), vec![Action::WatchPresence { viewer: id.user, users: vec![UserId(8), UserId(9)] }]);

    // Typing: two at once, then RateLimited until the bucket refills.
    let chat = ChatId::group([4; 16]);
    for _ in 0..2 {
        s.handle_frame(3000, ClientFrame::Typing { chat, typing: true }, &mut o);
        assert_eq!(drain(&mut s), vec![Action::Typing { identity: id, chat, typing: true }]);
    }
    s.handle_frame(3000, ClientFrame::Typing { chat, typing: true }, &mut o);
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::RateLimited);
    s.handle_frame(4000, ClientFrame::Typing { chat, typing: false }, &mut o);
    assert_eq!(drain(&mut s), vec![Action::Typing { identity: id, chat, typing: false }]);
    // Refused for a chat the user is not in: NotMember.
    s.handle_typing_refused(chat, true);
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::NotMember);
    // What others do reaches the delivery stream.
    s.handle_typing(chat, UserId(5), true);
    s.handle_presence(UserId(8), false, false, 0);
    assert_eq!(
        drain(&mut s),
        vec![
            Action::Deliver(ServerFrame::Typing { chat, user: UserId(5), typing: true }),
            Action::Deliver(ServerFrame::Presence { user: UserId(8), visible: false, online: false, last_seen_ms: 0 }),
        ]
    );
}

#[test]
fn presence_and_typing_need_a_login() {
    let mut s = session(Config::default());
    let mut o = otp();
    s.handle_frame(1000, ClientFrame::SubscribePresence { users: vec![UserId(1)] }, &mut o);
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::Unauthenticated);
    s.handle_frame(1000, ClientFrame::Typing { chat: ChatId::group([1; 16]), typing: true }, &mut o);
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::Unauthenticated);
    assert!(s.offline_command().is_none(), "never online");
}

#[test]
fn privacy_settings_are_appended_with_the_clients_id_and_answered_done() {
    let (mut s, mut o, id) = logged_in(Config::default());
    let frame = |c: u64| ClientFrame::SetPrivacy {
        client_msg_id: ClientMsgId(c),
        last_seen: chorus_schema::Visibility::Contacts,
        profile_photo: chorus_schema::Visibility::Everyone,
        about: chorus_schema::Visibility::Nobody,
        read_receipts: false,
    };
    s.handle_frame(2000, frame(CLIENT_MSG_ID_RESERVED_BIT | 1), &mut o);
    assert_eq!(error_code(drain(&mut s)).0, EdgeErrorCode::BadFrame, "the reserved bit");
    s.handle_frame(2000, frame(5), &mut o);
    let (c, cmd) = append(&drain(&mut s));
    assert_eq!((cmd.origin.user, cmd.origin.device, cmd.origin.client_msg_id), (id.user, id.device, ClientMsgId(5)));
    assert!(matches!(
        cmd.body,
        CommandBody::SetPrivacy { last_seen: chorus_schema::Visibility::Contacts, read_receipts: false, .. }
    ));
    s.handle_append_result(2001, c, Ok(Ok(Outcome::Done)));
    assert_eq!(only_send(drain(&mut s)), ServerFrame::Done { client_msg_id: ClientMsgId(5), at: None });
}

#[track_caller]
fn query(actions: &[Action]) -> (Correlation, chorus_schema::bus::ViewQuery) {
    match actions {
        [Action::Query { correlation, query }] => (*correlation, query.clone()),
        other => panic!("expected one Query, got {other:?}"),
    }
}

#[test]
fn contact_sync_is_counted_in_the_log_then_looked_up_then_recorded_as_contacts() {
    use chorus_schema::bus::{ContactLookupRequest, ViewAnswer, ViewQuery};
    let (mut s, mut o, id) = logged_in(Config::default());
    let hashes = vec![[1; 32], [2; 32]];
    let cmid = ClientMsgId(40);
    s.handle_frame(5000, ClientFrame::SyncContacts { client_msg_id: cmid, hashes: hashes.clone() }, &mut o);
    // First the allowance, in the user's partition, with the client's id.
    let (c, cmd) = append(&drain(&mut s));
    assert_eq!(cmd.body, CommandBody::RecordContactLookup { hashes: 2 });
    assert_eq!(cmd.origin, Origin { user: id.user, device: id.device, client_msg_id: cmid });
    s.handle_append_result(5001, c, Ok(Ok(Outcome::Done)));
    // Then the index.
    let (c, q) = query(&drain(&mut s));
    assert_eq!(q, ViewQuery::ContactLookup(ContactLookupRequest { hashes }));
    let matched = vec![ContactMatch { hash: [2; 32], user: UserId(77) }];
    s.handle_query_result(c, Ok(ViewAnswer::ContactMatches(matched.clone())));
    // Then the matches become the contacts; the client hears once they are.
    let (c, cmd) = append(&drain(&mut s));
    assert_eq!(cmd.body, CommandBody::UpdateContacts { contacts: vec![UserId(77)] });
    assert_ne!(cmd.origin.client_msg_id.0 & CLIENT_MSG_ID_RESERVED_BIT, 0, "an edge-made command");
    s.handle_append_result(5002, c, Ok(Ok(Outcome::Done)));
    assert_eq!(only_send(drain(&mut s)), ServerFrame::ContactsMatched { client_msg_id: cmid, matches: matched });
}

#[test]
fn contact_sync_past_the_allowance_is_rate_limited_until_midnight_utc_and_looks_nothing_up() {
    let (mut s, mut o, _) = logged_in(Config::default());
    let day = 24 * 60 * 60 * 1000;
    let now = 3 * day + 1000;
    s.handle_frame(now, ClientFrame::SyncContacts { client_msg_id: ClientMsgId(41), hashes: vec![[1; 32]] }, &mut o);
    let (c, _) = append(&drain(&mut s));
    let refusal = Rejection::new(RejectCode::RateLimited, "contact sync: 2000 of 2000 phone hashes used today");
    s.handle_append_result(now, c, Ok(Err(refusal)));
    match only_send(drain(&mut s)) {
        ServerFrame::Error { code, client_msg_id, retry_after_ms, message } => {
            assert_eq!((code, client_msg_id), (EdgeErrorCode::RateLimited, Some(ClientMsgId(41))));
            assert_eq!(retry_after_ms, Some(day - 1000));
            assert!(message.contains("2000 of 2000"), "{message}");
        }
        f => panic!("expected an error, got {f:?}"),
    }
}

#[test]
fn profile_and_status_reads_ask_the_views_as_the_logged_in_user() {
    use chorus_schema::bus::{ProfileRequest, StatusRequest, ViewAnswer, ViewQuery};
    let (mut s, mut o, id) = logged_in(Config::default());
    s.handle_frame(6000, ClientFrame::GetProfile { client_msg_id: ClientMsgId(50), user: UserId(9) }, &mut o);
    let (c, q) = query(&drain(&mut s));
    assert_eq!(q, ViewQuery::Profile(ProfileRequest { viewer: id.user, user: UserId(9) }));
    let profile = Profile { user: UserId(9), found: true, name: "n".into(), about: None, avatar: None };
    s.handle_query_result(c, Ok(ViewAnswer::Profile(profile.clone())));
    assert_eq!(only_send(drain(&mut s)), ServerFrame::Profile { client_msg_id: ClientMsgId(50), profile });

    s.handle_frame(6100, ClientFrame::ListStatus { client_msg_id: ClientMsgId(51), author: None }, &mut o);
    let (c, q) = query(&drain(&mut s));
    assert_eq!(q, ViewQuery::Status(StatusRequest { viewer: id.user, author: None, now_ms: 6100 }));
    s.handle_query_result(c, Err("timeout".into()));
    assert_eq!(error_code(drain(&mut s)), (EdgeErrorCode::Unavailable, Some(ClientMsgId(51))));

    // Status posts and views are the user partition's commands with the client's id.
    s.handle_frame(
        6200,
        ClientFrame::ViewStatus { client_msg_id: ClientMsgId(52), author: UserId(9), status_id: 3 },
        &mut o,
    );
    let (_, cmd) = append(&drain(&mut s));
    assert_eq!(cmd.body, CommandBody::ViewStatus { author: UserId(9), status_id: 3 });
    assert_eq!(cmd.key(), Key::User(UserId(9)), "decided by the author's partition");
    // Before login: refused.
    let mut anon = session(Config::default());
    anon.handle_frame(1, ClientFrame::GetProfile { client_msg_id: ClientMsgId(1), user: UserId(9) }, &mut o);
    assert_eq!(error_code(drain(&mut anon)), (EdgeErrorCode::Unauthenticated, Some(ClientMsgId(1))));
}

// ---- E2EE (issue 14) ----

/// The view queries among `actions`, in order.
fn queries(actions: &[Action]) -> Vec<(Correlation, bus::ViewQuery)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Query { correlation, query } => Some((*correlation, query.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_send_with_a_digest_checks_the_group_s_devices_first_and_a_stale_one_appends_nothing() {
    let (mut s, mut o, id) = logged_in(Config::default());
    drain(&mut s);
    let chat = ChatId::group([4; 16]);
    let (bob, carol) = (UserId(20), UserId(30));
    let current = vec![(id.user, DeviceId(77)), (bob, DeviceId(1)), (carol, DeviceId(1)), (carol, DeviceId(2))];
    let send = |digest: [u8; 32]| ClientFrame::Send {
        to: Recipient::Group(chat),
        client_msg_id: ClientMsgId(5),
        ciphertext: vec![1],
        media: None,
        devices_digest: Some(digest),
    };
    for (digest, fresh) in [(device_list_digest(&current[1..]), false), (device_list_digest(&current), true)] {
        s.handle_frame(10, send(digest), &mut o);
        let q = queries(&drain(&mut s));
        assert!(
            matches!(&q[..], [(_, bus::ViewQuery::Members(bus::MembersRequest { chat: c }))] if *c == chat),
            "{q:?}"
        );
        let members = bus::Members { known: true, members: vec![id.user, bob, carol] };
        s.handle_query_result(q[0].0, Ok(bus::ViewAnswer::Members(members)));
        let q = queries(&drain(&mut s));
        assert_eq!(q.len(), 3, "one devices query per member: {q:?}");
        for (correlation, query) in q {
            let bus::ViewQuery::User(bus::UserRequest { user }) = query else { panic!("{query:?}") };
            // The sending device is on its user's list, and left out of the digest.
            let devices: Vec<DeviceId> = current
                .iter()
                .chain([(id.user, id.device)].iter())
                .filter(|(u, _)| *u == user)
                .map(|(_, d)| *d)
                .collect();
            s.handle_query_result(correlation, Ok(bus::ViewAnswer::User(bus::UserInfo { registered: true, devices })));
        }
        let actions = drain(&mut s);
        if fresh {
            let (_, command) = append(&actions);
            assert!(matches!(command.body, CommandBody::SendGroup { chat: c, .. } if c == chat));
        } else {
            let mut sorted = current.clone();
            sorted.sort();
            assert_eq!(
                only_send(actions),
                ServerFrame::StaleDevices { client_msg_id: ClientMsgId(5), devices: sorted }
            );
        }
    }
}

#[test]
fn key_requests_go_to_the_right_partition_and_claims_are_limited_per_user() {
    let limits = LimitsConfig { key_claims_per_user: Rate::new(1, 1), ..LimitsConfig::default() };
    let (mut s, mut o, id) = logged_in(Config::default());
    s.set_limits(Arc::new(Limits::new(&limits).unwrap()), IpAddr::from([10, 0, 0, 1]));
    drain(&mut s);
    let upload = ClientFrame::UploadKeys {
        client_msg_id: ClientMsgId(1),
        one_time_keys: vec![Prekey { id: 1, key: vec![1] }],
        fallback_key: None,
        fallback_signature: vec![],
    };
    s.handle_frame(1, upload, &mut o);
    let (c, command) = append(&drain(&mut s));
    assert_eq!(command.key(), Key::User(id.user));
    assert_eq!(command.origin.client_msg_id, ClientMsgId(1));
    s.handle_append_result(1, c, Ok(Ok(Outcome::KeysUploaded { one_time_keys_left: 1 })));
    assert_eq!(
        only_send(drain(&mut s)),
        ServerFrame::KeysUploaded { client_msg_id: ClientMsgId(1), one_time_keys_left: 1 }
    );
    let target = UserId(99);
    s.handle_frame(2, ClientFrame::ClaimKeys { client_msg_id: ClientMsgId(2), user: target }, &mut o);
    let (c, command) = append(&drain(&mut s));
    assert_eq!(command.key(), Key::User(target), "a claim is decided by the target's partition");
    s.handle_append_result(2, c, Ok(Ok(Outcome::KeyBundle { user: target, devices: vec![] })));
    assert_eq!(
        only_send(drain(&mut s)),
        ServerFrame::KeyBundle { client_msg_id: ClientMsgId(2), user: target, devices: vec![] }
    );
    s.handle_frame(3, ClientFrame::ClaimKeys { client_msg_id: ClientMsgId(3), user: target }, &mut o);
    match only_send(drain(&mut s)) {
        ServerFrame::Error { code: EdgeErrorCode::RateLimited, client_msg_id, retry_after_ms: Some(ms), .. } => {
            assert_eq!(client_msg_id, Some(ClientMsgId(3)));
            assert!(ms > 0);
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    // The view answers GetDeviceKeys; KeysLow at login comes below the watermark only.
    s.keys_at_login();
    let q = queries(&drain(&mut s));
    let entry = |left| (DeviceKeys { device: id.device, ..DeviceKeys::default() }, left);
    s.handle_query_result(q[0].0, Ok(bus::ViewAnswer::DeviceKeys(vec![entry(PREKEYS_LOW_WATERMARK)])));
    assert!(drain(&mut s).is_empty());
    s.keys_at_login();
    let q = queries(&drain(&mut s));
    s.handle_query_result(q[0].0, Ok(bus::ViewAnswer::DeviceKeys(vec![entry(3)])));
    assert_eq!(drain(&mut s), vec![Action::Deliver(ServerFrame::KeysLow { one_time_keys_left: 3 })]);
}
