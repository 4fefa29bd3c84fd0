//! The core driven by hand under a virtual clock: the exact outputs of each
//! flow. (The core against the edge's real `Session` is in the edge crate's
//! `tests/client_session.rs`.)

use chorus_schema::{ChatId, ClientMsgId, DeviceId, EdgeErrorCode, ReceiptKind, Recipient, Seq, ServerFrame, UserId};

use super::*;

const ME: Credentials = Credentials { user: UserId(1), device: DeviceId(2), token: [7; 32] };

fn config(edges: usize) -> ClientConfig {
    let mut c = ClientConfig::new((0..edges).map(|i| format!("edge{i}:1")).collect(), "/ca.pem".into());
    c.reconnect_min_ms = 100;
    c.reconnect_max_ms = 1_000;
    c.resend_interval_ms = 200;
    c.connect_timeout_ms = 3_000;
    c.login_timeout_ms = 5_000;
    c.close_reason_wait_ms = 1_000;
    c
}

fn drain(core: &mut Core) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

#[track_caller]
fn connect_of(outputs: &[Output]) -> (LinkId, String) {
    let mut connects = outputs.iter().filter_map(|o| match o {
        Output::Connect { link, edge } => Some((*link, edge.clone())),
        _ => None,
    });
    let c = connects.next().unwrap_or_else(|| panic!("no Connect in {outputs:?}"));
    assert!(connects.next().is_none(), "one Connect at a time: {outputs:?}");
    c
}

fn sends(outputs: &[Output]) -> Vec<ClientFrame> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send(f) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

fn logged_in() -> ServerFrame {
    ServerFrame::LoggedIn { user: ME.user, device: ME.device, contact_key: None }
}

/// Takes the pending Connect through the login; returns the link and the outputs after `LoggedIn`.
#[track_caller]
fn log_in(core: &mut Core, now: u64, outputs: &[Output]) -> (LinkId, Vec<Output>) {
    let (link, _) = connect_of(outputs);
    core.handle_link_up(now, link);
    assert_eq!(sends(&drain(core)), vec![ClientFrame::Login { user: ME.user, device: ME.device, token: ME.token }]);
    core.handle_control(now, link, logged_in());
    (link, drain(core))
}

fn live(edges: usize) -> (Core, LinkId) {
    let mut core = Core::new(&config(edges), ME, Resume::default(), 0);
    let first = drain(&mut core);
    let (link, _) = log_in(&mut core, 0, &first);
    (core, link)
}

fn deliver(chat: u8, seq: u64) -> ServerFrame {
    ServerFrame::Deliver {
        chat: ChatId([chat; 16]),
        seq: Seq(seq),
        sender: UserId(9),
        sender_device: DeviceId(1),
        client_msg_id: ClientMsgId(seq),
        at_ms: 5,
        ciphertext: vec![1],
        media: None,
    }
}

#[test]
fn the_first_round_tries_every_edge_once_then_stops() {
    let mut core = Core::new(&config(2), ME, Resume::default(), 0);
    let (l1, e1) = connect_of(&drain(&mut core));
    assert_eq!(e1, "edge0:1");
    core.handle_link_down(10, l1, "refused");
    let out = drain(&mut core);
    let (l2, e2) = connect_of(&out);
    assert_eq!(e2, "edge1:1");
    // A stale report of the first link changes nothing.
    core.handle_link_down(11, l1, "again");
    assert!(drain(&mut core).is_empty());
    core.handle_link_down(12, l2, "refused");
    match drain(&mut core).last() {
        Some(Output::Stopped(Error::Connection(m))) => assert!(m.contains("edge1:1: refused"), "{m}"),
        other => panic!("expected a stop, got {other:?}"),
    }
    assert!(core.is_stopped());
    assert_eq!(core.poll_timeout(), None);
}

#[test]
fn a_login_refused_for_good_stops_at_once_and_others_try_the_next_edge() {
    let mut core = Core::new(&config(2), ME, Resume::default(), 0);
    let (l1, _) = connect_of(&drain(&mut core));
    core.handle_link_up(0, l1);
    drain(&mut core);
    let busy = ServerFrame::Error {
        code: EdgeErrorCode::Unavailable,
        message: "views".into(),
        client_msg_id: None,
        retry_after_ms: None,
    };
    core.handle_control(1, l1, busy);
    let out = drain(&mut core);
    assert!(out.contains(&Output::Disconnect { link: l1, reason: "Unavailable: views".into() }), "{out:?}");
    let (l2, _) = connect_of(&out);
    core.handle_link_up(2, l2);
    drain(&mut core);
    let bad = ServerFrame::Error {
        code: EdgeErrorCode::Unauthenticated,
        message: "no".into(),
        client_msg_id: None,
        retry_after_ms: None,
    };
    core.handle_control(3, l2, bad);
    let out = drain(&mut core);
    assert!(
        matches!(out.last(), Some(Output::Stopped(Error::Refused { code: EdgeErrorCode::Unauthenticated, .. }))),
        "{out:?}"
    );
}

#[test]
fn a_silent_edge_is_skipped_after_the_connect_timeout_and_a_silent_login_after_the_login_timeout() {
    let mut core = Core::new(&config(2), ME, Resume::default(), 0);
    let (l1, _) = connect_of(&drain(&mut core));
    assert_eq!(core.poll_timeout(), Some(3_000));
    core.handle_timeout(2_999);
    assert!(drain(&mut core).is_empty());
    core.handle_timeout(3_000);
    let out = drain(&mut core);
    assert_eq!(
        out[0],
        Output::Disconnect { link: l1, reason: "connection: edge0:1: no handshake within 3000 ms".into() }
    );
    let (l2, e2) = connect_of(&out);
    assert_eq!(e2, "edge1:1");
    core.handle_link_up(3_100, l2);
    drain(&mut core);
    assert_eq!(core.poll_timeout(), Some(8_100));
    core.handle_timeout(8_100);
    assert!(matches!(drain(&mut core).last(), Some(Output::Stopped(Error::Connection(m))) if m.contains("login")));
}

#[test]
fn reconnect_backoff_doubles_up_to_its_max_and_a_login_resets_it() {
    let (mut core, link) = live(2);
    drain(&mut core);
    let mut now = 1_000;
    core.handle_link_down(now, link, "reset");
    let out = drain(&mut core);
    assert!(
        matches!(
            &out[..],
            [Output::Disconnect { .. }, Output::Event(Event::Disconnected { .. }), Output::Connect { .. }]
        ),
        "{out:?}"
    );
    let mut attempt = connect_of(&out).0;
    // Round after round both edges refuse: the waits between rounds.
    let mut waits = Vec::new();
    for _ in 0..6 {
        core.handle_link_down(now, attempt, "refused");
        attempt = connect_of(&drain(&mut core)).0;
        core.handle_link_down(now, attempt, "refused");
        assert!(drain(&mut core).iter().all(|o| !matches!(o, Output::Connect { .. })), "the round is over");
        let until = core.poll_timeout().expect("a backoff timer");
        waits.push(until - now);
        core.handle_timeout(until - 1);
        assert!(drain(&mut core).is_empty(), "nothing before the timer");
        now = until;
        core.handle_timeout(now);
        attempt = connect_of(&drain(&mut core)).0;
    }
    assert_eq!(waits, vec![100, 200, 400, 800, 1_000, 1_000]);
    // A login resets it.
    core.handle_link_up(now, attempt);
    core.handle_control(now, attempt, logged_in());
    drain(&mut core);
    core.handle_link_down(now, attempt, "reset");
    let mut attempt = connect_of(&drain(&mut core)).0;
    for _ in 0..2 {
        core.handle_link_down(now, attempt, "refused");
        if let Some(o) = drain(&mut core).iter().find(|o| matches!(o, Output::Connect { .. })) {
            attempt = connect_of(std::slice::from_ref(o)).0;
        }
    }
    assert_eq!(core.poll_timeout(), Some(now + 100));
}

#[test]
fn an_unacknowledged_send_is_written_again_after_the_next_login_and_answered_once() {
    let (mut core, link) = live(2);
    drain(&mut core);
    let id = ClientMsgId(42);
    core.send(Recipient::User(UserId(5)), id, b"hi".to_vec());
    let first = sends(&drain(&mut core));
    assert!(matches!(&first[..], [ClientFrame::Send { client_msg_id, .. }] if *client_msg_id == id));
    // The same id again (a caller's retry) is the same send: not written twice.
    core.send(Recipient::User(UserId(5)), id, b"hi".to_vec());
    assert!(drain(&mut core).is_empty());
    core.handle_link_down(10, link, "gone");
    let out = drain(&mut core);
    let (link2, out) = log_in(&mut core, 20, &out);
    let frames = sends(&out);
    assert_eq!(frames[0], first[0], "the same frame, the same client_msg_id");
    assert!(matches!(frames.last(), Some(ClientFrame::Sync { .. })));
    assert_eq!(core.stats().resent, 1);
    let sent = ServerFrame::Sent { client_msg_id: id, chat: ChatId([3; 16]), seq: Seq(1), server_time_ms: 9 };
    core.handle_control(30, link2, sent.clone());
    core.handle_control(31, link2, sent);
    let done: Vec<_> = drain(&mut core).into_iter().filter(|o| matches!(o, Output::SendDone { .. })).collect();
    assert_eq!(done.len(), 1, "{done:?}");
}

#[test]
fn a_retryable_refusal_is_written_again_after_the_resend_interval() {
    let (mut core, link) = live(1);
    drain(&mut core);
    let id = ClientMsgId(7);
    core.send(Recipient::User(UserId(5)), id, b"x".to_vec());
    let frame = sends(&drain(&mut core));
    let refused = |retry_after_ms| ServerFrame::Error {
        code: EdgeErrorCode::RateLimited,
        message: "slow down".into(),
        client_msg_id: Some(id),
        retry_after_ms,
    };
    core.handle_control(1_000, link, refused(None));
    assert!(drain(&mut core).is_empty(), "not an answer to the app");
    assert_eq!(core.poll_timeout(), Some(1_200));
    core.handle_timeout(1_199);
    assert!(drain(&mut core).is_empty());
    core.handle_timeout(1_200);
    assert_eq!(sends(&drain(&mut core)), frame);
    // The edge's retry_after_ms, when longer, wins.
    core.handle_control(2_000, link, refused(Some(5_000)));
    assert_eq!(core.poll_timeout(), Some(7_000));
    // A final refusal answers it.
    let final_refusal = ServerFrame::Error {
        code: EdgeErrorCode::NotMember,
        message: "no".into(),
        client_msg_id: Some(id),
        retry_after_ms: None,
    };
    core.handle_control(2_001, link, final_refusal);
    assert!(matches!(
        &drain(&mut core)[..],
        [Output::SendDone { result: Err(Error::Refused { code: EdgeErrorCode::NotMember, .. }), .. }]
    ));
    assert_eq!(core.poll_timeout(), None);
}

#[test]
fn deliveries_are_passed_on_once_in_seq_order_per_chat() {
    let mut core = Core::new(&config(1), ME, Resume { positions: vec![(ChatId([1; 16]), Seq(2))] }, 0);
    let first = drain(&mut core);
    let (link, out) = log_in(&mut core, 0, &first);
    assert_eq!(sends(&out), vec![ClientFrame::Sync { since: vec![(ChatId([1; 16]), Seq(2))] }]);
    for seq in [1, 2, 3, 3, 4, 2] {
        core.handle_delivery(link, deliver(1, seq));
    }
    let seqs: Vec<u64> = drain(&mut core)
        .into_iter()
        .filter_map(|o| match o {
            Output::Event(Event::Message(m)) => Some(m.seq.0),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, vec![3, 4]);
    assert_eq!(core.stats().duplicates_dropped, 4);
    assert_eq!(core.positions(), vec![(ChatId([1; 16]), Seq(4))]);
}

#[test]
fn acks_are_kept_as_the_largest_and_re_sent_after_a_login() {
    let mut core = Core::new(&config(1), ME, Resume::default(), 0);
    let first = drain(&mut core);
    // Before any login: kept, not written.
    core.ack(ChatId([1; 16]), ReceiptKind::Read, Seq(5));
    core.ack(ChatId([1; 16]), ReceiptKind::Read, Seq(3));
    assert!(sends(&drain(&mut core)).is_empty());
    let (_, out) = log_in(&mut core, 0, &first);
    assert_eq!(
        sends(&out),
        vec![
            ClientFrame::Ack { chat: ChatId([1; 16]), kind: ReceiptKind::Read, up_to_seq: Seq(5) },
            ClientFrame::Sync { since: vec![] }
        ]
    );
}

#[test]
fn requests_fail_when_their_connection_is_lost_and_wait_for_a_login_when_not_written() {
    let (mut core, link) = live(1);
    drain(&mut core);
    core.request(ClientMsgId(1), Request::SetPin { pin: "1234".into() });
    assert_eq!(sends(&drain(&mut core)).len(), 1);
    core.handle_link_down(5, link, "gone");
    let out = drain(&mut core);
    assert!(out.iter().any(|o| matches!(o, Output::RequestDone { client_msg_id: ClientMsgId(1), result: Err(Error::Connection(m)) } if m.contains("lost before the answer"))), "{out:?}");
    // Written after the next login, not before.
    core.request(ClientMsgId(2), Request::Block { user: UserId(9), blocked: true });
    let (link, out) = log_in(&mut core, 6, &out);
    assert!(sends(&out).contains(&ClientFrame::Block {
        client_msg_id: ClientMsgId(2),
        user: UserId(9),
        blocked: true
    }));
    core.handle_control(7, link, ServerFrame::Done { client_msg_id: ClientMsgId(2), at: None });
    assert_eq!(
        drain(&mut core),
        vec![Output::RequestDone { client_msg_id: ClientMsgId(2), result: Ok(crate::types::Answer::Done(None)) }]
    );
}

#[test]
fn a_request_over_a_limit_is_refused_at_once_and_never_written() {
    let (mut core, _link) = live(1);
    drain(&mut core);
    let pin = "9".repeat(chorus_schema::MAX_PIN_BYTES + 1);
    core.request(ClientMsgId(1), Request::SetPin { pin });
    let name = "g".repeat(chorus_schema::MAX_NAME_BYTES + 1);
    let op = chorus_schema::GroupOp::ChangeInfo { name, description: String::new(), icon: None };
    core.request(ClientMsgId(2), Request::Group { chat: chorus_schema::ChatId::group([1; 16]), op });
    let out = drain(&mut core);
    assert!(sends(&out).is_empty(), "{out:?}");
    for (id, what) in [(1, "pin"), (2, "group name")] {
        assert!(
            out.iter().any(|o| matches!(o, Output::RequestDone { client_msg_id, result: Err(Error::Refused { code: EdgeErrorCode::BadFrame, message, .. }) } if client_msg_id.0 == id && message.contains(what))),
            "{what}: {out:?}"
        );
    }
}

#[test]
fn revoked_stops_the_client_and_a_logout_in_flight_succeeded() {
    let (mut core, link) = live(2);
    drain(&mut core);
    core.request(ClientMsgId(1), Request::Logout);
    core.send(Recipient::User(UserId(5)), ClientMsgId(2), vec![]);
    drain(&mut core);
    // The delivery stream ends first; the reason follows on the control stream.
    core.handle_delivery_ended(10, link, "stream finished");
    assert_eq!(core.poll_timeout(), Some(1_010));
    let revoked = ServerFrame::Error {
        code: EdgeErrorCode::Revoked,
        message: "logged out".into(),
        client_msg_id: None,
        retry_after_ms: None,
    };
    core.handle_control(20, link, revoked);
    let out = drain(&mut core);
    let done = Output::RequestDone { client_msg_id: ClientMsgId(1), result: Ok(crate::types::Answer::Done(None)) };
    assert!(out.contains(&done), "{out:?}");
    assert!(out.iter().any(|o| matches!(
        o,
        Output::SendDone { result: Err(Error::Refused { code: EdgeErrorCode::Revoked, .. }), .. }
    )));
    assert!(matches!(out.last(), Some(Output::Stopped(Error::Refused { code: EdgeErrorCode::Revoked, .. }))));
    assert!(!out.iter().any(|o| matches!(o, Output::Connect { .. })), "no reconnect");
}

#[test]
fn an_ended_delivery_stream_without_a_reason_reconnects_after_the_wait() {
    let (mut core, link) = live(2);
    drain(&mut core);
    core.handle_delivery_ended(10, link, "reset");
    core.handle_timeout(1_009);
    assert!(drain(&mut core).is_empty());
    core.handle_timeout(1_010);
    let out = drain(&mut core);
    assert!(out.contains(&Output::Event(Event::Disconnected { reason: "edge0:1: reset".into() })), "{out:?}");
    assert_eq!(connect_of(&out).1, "edge1:1");
}

#[test]
fn close_fails_what_is_pending_and_stops() {
    let (mut core, link) = live(1);
    drain(&mut core);
    core.send(Recipient::User(UserId(5)), ClientMsgId(2), vec![]);
    drain(&mut core);
    core.close();
    assert_eq!(
        drain(&mut core),
        vec![
            Output::Disconnect { link, reason: "client closed".into() },
            Output::SendDone { client_msg_id: ClientMsgId(2), result: Err(Error::Closed) },
            Output::Stopped(Error::Closed),
        ]
    );
    core.send(Recipient::User(UserId(5)), ClientMsgId(3), vec![]);
    assert_eq!(drain(&mut core), vec![Output::SendDone { client_msg_id: ClientMsgId(3), result: Err(Error::Closed) }]);
}

#[test]
fn the_app_s_reconnect_moves_to_the_next_edge_and_is_ignored_while_disconnected() {
    let (mut core, _) = live(2);
    drain(&mut core);
    core.reconnect(5);
    let out = drain(&mut core);
    assert!(out.contains(&Output::Event(Event::Disconnected { reason: "edge0:1: the app asked to reconnect".into() })));
    assert_eq!(connect_of(&out).1, "edge1:1");
    core.reconnect(6);
    assert!(drain(&mut core).is_empty());
}

// ---- linked devices (issue 12) ----

#[test]
fn link_device_is_answered_done_and_list_devices_with_the_list() {
    let (mut core, link) = live(1);
    drain(&mut core);
    core.request(ClientMsgId(1), Request::LinkDevice { code: "ABCDE-FGHJK".into() });
    core.request(ClientMsgId(2), Request::ListDevices);
    assert_eq!(
        sends(&drain(&mut core)),
        vec![
            ClientFrame::LinkDevice { client_msg_id: ClientMsgId(1), code: "ABCDE-FGHJK".into() },
            ClientFrame::ListDevices { client_msg_id: ClientMsgId(2) },
        ]
    );
    core.handle_control(3, link, ServerFrame::Done { client_msg_id: ClientMsgId(1), at: None });
    let devices = vec![chorus_schema::edge::DeviceInfo { device: DeviceId(2), name: "cli".into(), linked_at_ms: 5 }];
    core.handle_control(4, link, ServerFrame::DeviceList { client_msg_id: ClientMsgId(2), devices: devices.clone() });
    // A list nobody asked for is dropped.
    core.handle_control(5, link, ServerFrame::DeviceList { client_msg_id: ClientMsgId(9), devices: vec![] });
    assert_eq!(
        drain(&mut core),
        vec![
            Output::RequestDone { client_msg_id: ClientMsgId(1), result: Ok(crate::types::Answer::Done(None)) },
            Output::DevicesListed { client_msg_id: ClientMsgId(2), devices },
        ]
    );
    // A refused link is answered with the edge's code.
    core.request(ClientMsgId(3), Request::LinkDevice { code: "ABCDE-FGHJK".into() });
    drain(&mut core);
    let refusal = ServerFrame::Error {
        code: EdgeErrorCode::TooManyDevices,
        message: "at most 5".into(),
        client_msg_id: Some(ClientMsgId(3)),
        retry_after_ms: None,
    };
    core.handle_control(6, link, refusal);
    assert!(matches!(
        drain(&mut core).as_slice(),
        [Output::RequestDone { result: Err(Error::Refused { code: EdgeErrorCode::TooManyDevices, .. }), .. }]
    ));
}
#[test]
fn info_queries_are_answered_by_id_and_written_again_after_a_lost_connection() {
    let chat = ChatId::group([3; 16]);
    let (mut core, link) = live(1);
    drain(&mut core);
    core.request(ClientMsgId(1), Request::GroupInfo { chat });
    core.request(ClientMsgId(2), Request::MessageInfo { chat, seq: Seq(4) });
    assert_eq!(
        sends(&drain(&mut core)),
        vec![
            ClientFrame::GroupInfo { client_msg_id: ClientMsgId(1), chat },
            ClientFrame::MessageInfo { client_msg_id: ClientMsgId(2), chat, seq: Seq(4) },
        ]
    );
    // A query only reads: a lost connection writes it again after the next
    // login instead of failing it.
    core.handle_link_down(5, link, "gone");
    let out = drain(&mut core);
    assert!(!out.iter().any(|o| matches!(o, Output::RequestDone { .. })), "{out:?}");
    let (link, out) = log_in(&mut core, 6, &out);
    let written = sends(&out);
    assert!(written.contains(&ClientFrame::GroupInfo { client_msg_id: ClientMsgId(1), chat }), "{written:?}");
    assert!(written.contains(&ClientFrame::MessageInfo { client_msg_id: ClientMsgId(2), chat, seq: Seq(4) }));
    let info = chorus_schema::GroupInfo { last_seq: Seq(9), name: "g".into(), ..Default::default() };
    core.handle_control(7, link, ServerFrame::GroupInfo { client_msg_id: ClientMsgId(1), chat, info: info.clone() });
    let refusal = ServerFrame::Error {
        code: EdgeErrorCode::Forbidden,
        message: "not yours".into(),
        client_msg_id: Some(ClientMsgId(2)),
        retry_after_ms: None,
    };
    core.handle_control(8, link, refusal);
    let out = drain(&mut core);
    assert_eq!(
        out[0],
        Output::RequestDone { client_msg_id: ClientMsgId(1), result: Ok(crate::types::Answer::GroupInfo(info)) }
    );
    assert!(
        matches!(
            &out[1],
            Output::RequestDone {
                client_msg_id: ClientMsgId(2),
                result: Err(Error::Refused { code: EdgeErrorCode::Forbidden, .. })
            }
        ),
        "{out:?}"
    );
}
fn events(outputs: &[Output]) -> Vec<Event> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_typing_indicator_lapses_5_s_after_its_last_refresh_and_a_stop_ends_it_at_once() {
    let (mut core, link) = live(1);
    drain(&mut core);
    let chat = ChatId([3; 16]);
    let typing = |on: bool| ServerFrame::Typing { chat, user: UserId(9), typing: on };
    let shown = |on: bool| vec![Event::Typing { chat, user: UserId(9), typing: on }];
    core.handle_delivery_at(1_000, link, typing(true));
    assert_eq!(events(&drain(&mut core)), shown(true));
    // A refresh shows nothing new and pushes the lapse back.
    core.handle_delivery_at(4_000, link, typing(true));
    assert!(drain(&mut core).is_empty());
    assert_eq!(core.poll_timeout(), Some(9_000));
    core.handle_timeout(8_999);
    assert!(drain(&mut core).is_empty());
    core.handle_timeout(9_000);
    assert_eq!(events(&drain(&mut core)), shown(false), "lapsed without a stop");
    assert_eq!(core.poll_timeout(), None);
    // A stop ends it at once; a stop of nothing shown says nothing.
    core.handle_delivery_at(10_000, link, typing(true));
    core.handle_delivery_at(10_500, link, typing(false));
    assert_eq!(events(&drain(&mut core)), [shown(true), shown(false)].concat());
    core.handle_delivery_at(10_600, link, typing(false));
    assert!(drain(&mut core).is_empty());
}

#[test]
fn the_presence_watch_list_is_sent_again_after_every_login_and_typing_only_while_live() {
    let mut core = Core::new(&config(1), ME, Resume::default(), 0);
    let first = drain(&mut core);
    // Typing while not logged in is dropped; the watch list waits for the login.
    core.typing(ChatId([1; 16]), true);
    core.subscribe_presence(vec![UserId(8), UserId(7), UserId(8)]);
    let (link, after) = log_in(&mut core, 0, &first);
    let watch = ClientFrame::SubscribePresence { users: vec![UserId(7), UserId(8)] };
    let sent = sends(&after);
    assert!(sent.contains(&watch), "{sent:?}");
    assert!(!sent.iter().any(|f| matches!(f, ClientFrame::Typing { .. })), "{sent:?}");
    core.handle_delivery_at(
        5,
        link,
        ServerFrame::Presence { user: UserId(7), visible: true, online: true, last_seen_ms: 4 },
    );
    assert_eq!(
        events(&drain(&mut core)),
        vec![Event::Presence { user: UserId(7), visible: true, online: true, last_seen_ms: 4 }]
    );
    core.typing(ChatId([1; 16]), true);
    assert_eq!(sends(&drain(&mut core)), vec![ClientFrame::Typing { chat: ChatId([1; 16]), typing: true }]);
    // After a reconnect the list is sent again.
    core.reconnect(10);
    let outputs = drain(&mut core);
    let (_, after) = log_in(&mut core, 10, &outputs);
    assert!(sends(&after).contains(&watch));
}

// ---- E2EE (issue 14) ----

#[test]
fn a_stale_device_list_fails_the_send_at_once_and_is_not_written_again() {
    let (mut core, link) = live(1);
    drain(&mut core);
    let id = ClientMsgId(8);
    let digest = chorus_schema::device_list_digest(&[(UserId(5), DeviceId(1))]);
    core.send_with(Recipient::User(UserId(5)), id, b"x".to_vec(), None, Some(digest));
    let frames = sends(&drain(&mut core));
    assert!(matches!(&frames[..], [ClientFrame::Send { devices_digest: Some(d), .. }] if *d == digest));
    let current = vec![(UserId(5), DeviceId(1)), (UserId(5), DeviceId(2))];
    core.handle_control(10, link, ServerFrame::StaleDevices { client_msg_id: id, devices: current.clone() });
    match &drain(&mut core)[..] {
        [Output::SendDone { client_msg_id, result: Err(Error::StaleDevices(devices)) }] => {
            assert_eq!((*client_msg_id, devices), (id, &current));
        }
        other => panic!("expected the send to fail with StaleDevices, got {other:?}"),
    }
    // Nothing is pending: no resend on a timer, nor after the next login.
    assert_eq!(core.poll_timeout(), None);
    core.handle_link_down(20, link, "gone");
    let out = drain(&mut core);
    let (_, out) = log_in(&mut core, 30, &out);
    assert!(!sends(&out).iter().any(|f| matches!(f, ClientFrame::Send { .. })), "{out:?}");
    // The same id may be sent again (with the right digest).
    let right = chorus_schema::device_list_digest(&current);
    core.send_with(Recipient::User(UserId(5)), id, b"x".to_vec(), None, Some(right));
    assert!(
        matches!(&sends(&drain(&mut core))[..], [ClientFrame::Send { devices_digest: Some(d), .. }] if *d == right)
    );
}

#[test]
fn keys_low_is_an_event_on_either_stream() {
    let (mut core, link) = live(1);
    drain(&mut core);
    core.handle_delivery(link, ServerFrame::KeysLow { one_time_keys_left: 3 });
    core.handle_control(1, link, ServerFrame::KeysLow { one_time_keys_left: 2 });
    let events: Vec<_> = drain(&mut core)
        .into_iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(events, vec![Event::KeysLow { left: 3 }, Event::KeysLow { left: 2 }]);
}
