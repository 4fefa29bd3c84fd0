//! The rules of push tokens and abuse reports (issue 14).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use chorus_partition::PartitionState;
use chorus_schema::push::{ReportedMessage, MAX_REPORT_MESSAGES, MAX_REPORT_TEXT_BYTES};
use chorus_schema::*;

const A: UserId = UserId(1);
const B: UserId = UserId(2);
const C: UserId = UserId(3);

struct H {
    state: PartitionState,
    now: u64,
    cmid: u64,
}

impl H {
    fn new() -> H {
        let mut h = H { state: PartitionState::new(PartitionId(0), 1), now: 1000, cmid: 0 };
        for u in [A, B] {
            h.run(u, 1, CommandBody::RegisterUser { phone: format!("+1555{}", u.0) }).unwrap();
            let link = CommandBody::LinkDevice {
                device: DeviceId(1),
                identity_key: vec![1],
                name: "p".into(),
                token_hash: None,
            };
            h.run(u, 1, link).unwrap();
        }
        h
    }

    fn run(&mut self, user: UserId, device: u32, body: CommandBody) -> Result<Vec<EventBody>, Rejection> {
        self.now += 10;
        self.cmid += 1;
        let cmd =
            Command { origin: Origin { user, device: DeviceId(device), client_msg_id: ClientMsgId(self.cmid) }, body };
        let before = self.state.clone();
        let mut out = Vec::new();
        match self.state.apply(self.now, &cmd, &mut out) {
            Ok(_) => Ok(out.into_iter().map(|e| e.body).collect()),
            Err(r) => {
                assert!(out.is_empty());
                assert_eq!(self.state, before, "a rejection changed the state");
                Err(r)
            }
        }
    }
}

fn token(t: &str) -> CommandBody {
    CommandBody::SetPushToken { token: t.into(), platform: "fcm".into() }
}

#[test]
fn a_linked_device_sets_and_clears_its_push_token() {
    let mut h = H::new();
    let events = h.run(A, 1, token("tok-1")).unwrap();
    assert_eq!(
        events,
        [EventBody::PushTokenSet { user: A, device: DeviceId(1), token: "tok-1".into(), platform: "fcm".into() }]
    );
    let events = h.run(A, 1, token("")).unwrap();
    assert_eq!(
        events,
        [EventBody::PushTokenSet { user: A, device: DeviceId(1), token: String::new(), platform: "fcm".into() }]
    );
    // An unlinked device, an unregistered user.
    assert_eq!(h.run(A, 7, token("x")).unwrap_err().code, RejectCode::Invalid);
    assert_eq!(h.run(C, 1, token("x")).unwrap_err().code, RejectCode::UnknownUser);
    // Too long: refused by the command's limits.
    let long = "t".repeat(push::MAX_PUSH_TOKEN_BYTES + 1);
    assert_eq!(h.run(A, 1, token(&long)).unwrap_err().code, RejectCode::Invalid);
}

#[test]
fn reports_name_a_registered_other_user_within_limits() {
    let mut h = H::new();
    let msg = |text: &[u8]| ReportedMessage { seq: Seq(3), sender: B, at_ms: 5, text: text.to_vec() };
    let chat = ChatId::direct(A, B);
    let report = |reported, messages: Vec<ReportedMessage>| CommandBody::FileReport {
        reported,
        chat: Some(chat),
        reason: "spam".into(),
        messages,
    };
    let events = h.run(A, 1, report(B, vec![msg(b"buy now")])).unwrap();
    assert_eq!(
        events,
        [EventBody::ReportFiled { user: B, chat: Some(chat), reason: "spam".into(), messages: vec![msg(b"buy now")] }]
    );
    assert_eq!(h.run(A, 1, report(A, vec![])).unwrap_err().code, RejectCode::Invalid, "self-report");
    assert_eq!(h.run(A, 1, report(C, vec![])).unwrap_err().code, RejectCode::UnknownUser);
    let many = vec![msg(b"x"); MAX_REPORT_MESSAGES + 1];
    assert_eq!(h.run(A, 1, report(B, many)).unwrap_err().code, RejectCode::Invalid);
    let big = vec![msg(&vec![b'x'; MAX_REPORT_TEXT_BYTES + 1])];
    assert_eq!(h.run(A, 1, report(B, big)).unwrap_err().code, RejectCode::Invalid);
    // The events encode and decode.
    let e = Event {
        at_ms: 1,
        origin: Origin { user: A, device: DeviceId(1), client_msg_id: ClientMsgId(1) },
        body: events[0].clone(),
    };
    assert_eq!(Event::decode(&e.encode()).unwrap(), e);
}
