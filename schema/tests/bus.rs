//! Bus payloads: round trips, and malformed, foreign or oversized input is an
//! error, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

mod support;

use bytes::Bytes;
use chorus_schema::bus::{self, subject, Delivery, ViewQuery};
use chorus_schema::*;
use proptest::prelude::*;
use support::arb;

/// Damaged bytes: truncated, bits flipped, bytes spliced in.
fn damaged() -> impl Strategy<Value = (prop::sample::Index, u8, Vec<u8>)> {
    (any::<prop::sample::Index>(), 0u8..3, prop::collection::vec(any::<u8>(), 1..8))
}

fn damage(buf: &[u8], (at, how, extra): &(prop::sample::Index, u8, Vec<u8>)) -> Vec<u8> {
    let mut out = buf.to_vec();
    let i = at.index(out.len().max(1)).min(out.len());
    match how {
        0 => out.truncate(i),
        1 => {
            for (k, b) in extra.iter().enumerate() {
                if let Some(x) = out.get_mut(i + k) {
                    *x ^= b | 1;
                }
            }
        }
        _ => {
            out.splice(i..i, extra.iter().copied());
        }
    }
    out
}

proptest! {
    #[test]
    fn delivery_round_trips_with_the_record_verbatim(d in arb::delivery()) {
        let payload = d.encode();
        let back = Delivery::decode(&payload).unwrap();
        prop_assert_eq!(&back, &d);
        // The record is a slice of the payload, not a copy.
        let inside = payload.as_ptr() as usize..payload.as_ptr() as usize + payload.len();
        prop_assert!(back.record.is_empty() || inside.contains(&(back.record.as_ptr() as usize)));
        prop_assert!(EventRecord::decode(&back.record).is_ok());
    }

    #[test]
    fn updates_round_trip(r in arb::receipt_update(), a in arb::account_update(), j in arb::chat_joined()) {
        prop_assert_eq!(bus::ReceiptUpdate::decode(&r.encode()), Ok(r));
        prop_assert_eq!(bus::AccountUpdate::decode(&a.encode()), Ok(a));
        prop_assert_eq!(bus::ChatJoined::decode(&j.encode()), Ok(j));
    }

    #[test]
    fn presence_and_typing_round_trip(p in arb::presence_update(), t in arb::typing_signal()) {
        prop_assert_eq!(bus::PresenceUpdate::decode(&p.encode()), Ok(p));
        prop_assert_eq!(bus::TypingSignal::decode(&t.encode()), Ok(t));
    }

    #[test]
    fn view_queries_round_trip(q in arb::view_query()) {
        prop_assert!(subject::VIEWS.contains(&q.subject()));
        prop_assert_eq!(ViewQuery::decode(&q.encode()), Ok(q));
    }

    #[test]
    fn view_replies_round_trip(r in arb::view_reply()) {
        prop_assert_eq!(bus::decode_reply(&bus::encode_reply(&r)), Ok(r));
    }

    #[test]
    fn damaged_payloads_are_errors_or_valid_values(
        d in arb::delivery(), q in arb::view_query(), r in arb::view_reply(), u in arb::receipt_update(),
        a in arb::account_update(), j in arb::chat_joined(), how in damaged(),
    ) {
        let bad = Bytes::from(damage(&d.encode(), &how));
        if let Ok(back) = Delivery::decode(&bad) {
            prop_assert!(back.record.len() <= bad.len());
            let _ = EventRecord::decode(&back.record);
        }
        if let Ok(back) = ViewQuery::decode(&damage(&q.encode(), &how)) {
            prop_assert_eq!(ViewQuery::decode(&back.encode()), Ok(back));
        }
        if let Ok(back) = bus::decode_reply(&damage(&bus::encode_reply(&r), &how)) {
            prop_assert_eq!(bus::decode_reply(&bus::encode_reply(&back)), Ok(back));
        }
        let _ = bus::ReceiptUpdate::decode(&damage(&u.encode(), &how));
        let _ = bus::AccountUpdate::decode(&damage(&a.encode(), &how));
        let _ = bus::ChatJoined::decode(&damage(&j.encode(), &how));
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Delivery::decode(&Bytes::from(bytes.clone()));
        let _ = ViewQuery::decode(&bytes);
        let _ = bus::decode_reply(&bytes);
        let _ = bus::ReceiptUpdate::decode(&bytes);
        let _ = bus::AccountUpdate::decode(&bytes);
        let _ = bus::ChatJoined::decode(&bytes);
    }
}

#[test]
fn a_payload_of_another_kind_is_refused() {
    let q = ViewQuery::User(bus::UserRequest { user: UserId(1) }).encode();
    let reply = bus::encode_reply(&Ok(bus::ViewAnswer::Ticks(bus::Ticks::default())));
    let record = EventRecord {
        partition: PartitionId(0),
        offset: Offset(0),
        log_index: LogIndex(1),
        event: Event {
            at_ms: 1,
            origin: Origin::default(),
            body: EventBody::UserRegistered { user: UserId(1), phone: "+1".into() },
        },
    }
    .encode();
    // Each decoder checks its file identifier.
    assert!(bus::decode_reply(&q).is_err());
    assert!(ViewQuery::decode(&reply).is_err());
    assert!(Delivery::decode(&Bytes::from(record.clone())).is_err());
    assert!(bus::ReceiptUpdate::decode(&q).is_err());
    assert!(bus::AccountUpdate::decode(&reply).is_err());
    assert!(bus::ChatJoined::decode(&q).is_err());
    assert!(ViewQuery::decode(b"").is_err());
}

#[test]
fn oversized_payloads_are_refused_before_verifying() {
    let big = vec![0u8; MAX_VIEW_REQUEST_BYTES + 1];
    assert!(matches!(bus::ReceiptUpdate::decode(&big), Err(Error::TooLarge { .. })));
    // View queries carry up to 1000 contact hashes: their own, larger limit.
    let big_query = vec![0u8; chorus_schema::MAX_VIEW_QUERY_BYTES + 1];
    assert!(matches!(ViewQuery::decode(&big_query), Err(Error::TooLarge { .. })));
    let huge = Bytes::from(vec![0u8; MAX_BUS_PAYLOAD_BYTES + 1]);
    assert!(matches!(Delivery::decode(&huge), Err(Error::TooLarge { .. })));
    assert!(matches!(bus::decode_reply(&huge), Err(Error::TooLarge { .. })));
    // Too many recipients, a record above the event limit: refused after verifying.
    let many = Delivery {
        chat: ChatId([1; 16]),
        seq: Seq(1),
        recipients: (0..=MAX_GROUP_MEMBERS as u64).map(UserId).collect(),
        record: Bytes::from_static(b"x"),
    };
    assert!(matches!(Delivery::decode(&many.encode()), Err(Error::TooLarge { .. })));
    let fat = Delivery { recipients: vec![], record: Bytes::from(vec![0; MAX_EVENT_BYTES + 1]), ..many };
    assert!(matches!(Delivery::decode(&fat.encode()), Err(Error::TooLarge { .. })));
    // A page above the cap.
    let items = vec![bus::InboxItem { seq: Seq(1), offset: Offset(1) }; MAX_VIEW_PAGE_ENTRIES + 1];
    let page = bus::ViewAnswer::Inbox(bus::InboxPage { partition: PartitionId(0), entries: items, more: false });
    assert!(matches!(bus::decode_reply(&bus::encode_reply(&Ok(page))), Err(Error::TooLarge { .. })));
}

#[test]
fn subjects_and_queries_match() {
    assert_eq!(subject::deliver(&ChatId([0xab; 16])), format!("chorus.deliver.{}", "ab".repeat(16)));
    assert_eq!(subject::receipt(UserId(42)), "chorus.receipt.42");
    assert_eq!(subject::account(UserId(7)), "chorus.account.7");
    for view in subject::VIEWS {
        assert!(view.starts_with(subject::VIEW_PREFIX));
    }
}

#[test]
fn the_deliver_frame_of_a_record_is_the_frame_of_its_message() {
    let record = EventRecord {
        partition: PartitionId(3),
        offset: Offset(9),
        log_index: LogIndex(4),
        event: Event {
            at_ms: 77,
            origin: Origin { user: UserId(2), device: DeviceId(5), client_msg_id: ClientMsgId(11) },
            body: EventBody::MessageSent {
                chat: ChatId([7; 16]),
                seq: Seq(12),
                ciphertext: vec![0xee; 1000],
                media: Some(MediaRef { blake3: [1; 32], size: 9, mime: "image/png".into() }),
            },
        },
    };
    let frame = edge::deliver_frame(&record).unwrap();
    let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    assert_eq!(len, frame.len() - 4);
    assert_eq!(
        ServerFrame::decode(&frame[4..]).unwrap(),
        ServerFrame::Deliver {
            chat: ChatId([7; 16]),
            seq: Seq(12),
            sender: UserId(2),
            sender_device: DeviceId(5),
            client_msg_id: ClientMsgId(11),
            at_ms: 77,
            ciphertext: vec![0xee; 1000],
            media: Some(MediaRef { blake3: [1; 32], size: 9, mime: "image/png".into() }),
        }
    );
    let other = EventRecord {
        event: Event { body: EventBody::UserRegistered { user: UserId(1), phone: "+1".into() }, ..record.event },
        ..record
    };
    assert_eq!(edge::deliver_frame(&other), None);
    let receipt = EventRecord {
        event: Event {
            body: EventBody::Receipt { chat: ChatId([7; 16]), kind: ReceiptKind::Read, up_to_seq: Seq(3) },
            ..record.event.clone()
        },
        ..record.clone()
    };
    assert_eq!(edge::deliver_frame(&receipt), None, "a receipt only moves the timeline");
}

#[test]
fn the_frame_of_each_group_event_is_its_chat_change() {
    let chat = ChatId([8; 16]);
    let origin = Origin { user: UserId(2), device: DeviceId(5), client_msg_id: ClientMsgId(11) };
    let cases = [
        (
            EventBody::GroupCreated {
                chat,
                seq: Seq(1),
                name: "ops".into(),
                members: vec![UserId(2), UserId(3), UserId(4)],
            },
            GroupOp::Create { name: "ops".into(), members: vec![UserId(2), UserId(3), UserId(4)] },
        ),
        (EventBody::MemberAdded { chat, seq: Seq(1), member: UserId(9) }, GroupOp::Add { member: UserId(9) }),
        (EventBody::MemberRemoved { chat, seq: Seq(1), member: UserId(9) }, GroupOp::Remove { member: UserId(9) }),
        (EventBody::MemberPromoted { chat, seq: Seq(1), member: UserId(3) }, GroupOp::Promote { member: UserId(3) }),
        (EventBody::MemberDemoted { chat, seq: Seq(1), member: UserId(3) }, GroupOp::Demote { member: UserId(3) }),
        (EventBody::MemberLeft { chat, seq: Seq(1) }, GroupOp::Leave),
        (
            EventBody::GroupInfoChanged {
                chat,
                seq: Seq(1),
                name: "dev".into(),
                description: "builders".into(),
                icon: Some(MediaRef { blake3: [4; 32], size: 2048, mime: "image/jpeg".into() }),
            },
            GroupOp::ChangeInfo {
                name: "dev".into(),
                description: "builders".into(),
                icon: Some(MediaRef { blake3: [4; 32], size: 2048, mime: "image/jpeg".into() }),
            },
        ),
    ];
    for (i, (body, change)) in cases.into_iter().enumerate() {
        let mut body = body;
        let seq = Seq(i as u64 + 1);
        set_seq(&mut body, seq);
        let record = EventRecord {
            partition: PartitionId(3),
            offset: Offset(9),
            log_index: LogIndex(4),
            event: Event { at_ms: 77, origin, body },
        };
        let frame = edge::deliver_frame(&record).unwrap();
        let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(len, frame.len() - 4);
        assert_eq!(
            ServerFrame::decode(&frame[4..]).unwrap(),
            ServerFrame::ChatChange {
                chat,
                seq,
                actor: UserId(2),
                actor_device: DeviceId(5),
                client_msg_id: ClientMsgId(11),
                at_ms: 77,
                change,
            }
        );
    }
}

fn set_seq(body: &mut EventBody, to: Seq) {
    match body {
        EventBody::GroupCreated { seq, .. }
        | EventBody::MemberAdded { seq, .. }
        | EventBody::MemberRemoved { seq, .. }
        | EventBody::MemberPromoted { seq, .. }
        | EventBody::MemberDemoted { seq, .. }
        | EventBody::MemberLeft { seq, .. }
        | EventBody::GroupInfoChanged { seq, .. } => *seq = to,
        _ => unreachable!("a group event"),
    }
}

// ---- linked devices (issue 12) ----

#[test]
fn pair_claims_roundtrip_and_are_not_other_payloads() {
    let c = bus::PairClaim { user: UserId(7), device: DeviceId(3), client_msg_id: ClientMsgId(99) };
    assert_eq!(bus::PairClaim::decode(&c.encode()), Ok(c));
    let a = bus::AccountUpdate { user: UserId(7), device: DeviceId(3), change: DeviceNoticeKind::Linked, at_ms: 1 };
    assert!(bus::PairClaim::decode(&a.encode()).is_err());
    assert!(bus::AccountUpdate::decode(&c.encode()).is_err());
}
