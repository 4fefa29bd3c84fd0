//! Properties of the client ↔ edge frames, their framing and phone-number ids.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

mod support;

use chorus_schema::edge::{
    normalize_phone, pairing_code, pairing_code_hash, user_for_phone, write_frame, FrameReader, PAIRING_CODE_CHARS,
};
use chorus_schema::*;
use proptest::prelude::*;
use support::arb;

proptest! {
    #[test]
    fn client_frame_roundtrip(f in arb::client_frame()) {
        prop_assert_eq!(ClientFrame::decode(&f.encode()), Ok(f));
    }

    #[test]
    fn server_frame_roundtrip(f in arb::server_frame()) {
        prop_assert_eq!(ServerFrame::decode(&f.encode()), Ok(f));
    }

    #[test]
    fn random_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..512), ident in 0usize..4) {
        let mut buf = buf;
        if buf.len() >= 8 && ident < 2 {
            buf[4..8].copy_from_slice([b"CECF", b"CESF"][ident]);
        }
        let _ = ClientFrame::decode(&buf);
        let _ = ServerFrame::decode(&buf);
        let mut r = FrameReader::new();
        r.push(&buf);
        while let Ok(Some(_)) = r.next_frame() {}
    }

    #[test]
    fn damaged_client_frame_never_panics(f in arb::client_frame(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<prop::sample::Index>()) {
        let buf = f.encode();
        let mut b = buf.clone();
        for (i, v) in &flips {
            let at = i.index(b.len());
            b[at] ^= v;
        }
        for candidate in [b, buf[..cut.index(buf.len())].to_vec()] {
            if let Ok(v) = ClientFrame::decode(&candidate) {
                prop_assert_eq!(ClientFrame::decode(&v.encode()), Ok(v));
            }
        }
    }

    #[test]
    fn damaged_server_frame_never_panics(f in arb::server_frame(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<prop::sample::Index>()) {
        let buf = f.encode();
        let mut b = buf.clone();
        for (i, v) in &flips {
            let at = i.index(b.len());
            b[at] ^= v;
        }
        for candidate in [b, buf[..cut.index(buf.len())].to_vec()] {
            if let Ok(v) = ServerFrame::decode(&candidate) {
                prop_assert_eq!(ServerFrame::decode(&v.encode()), Ok(v));
            }
        }
    }

    #[test]
    fn framing_splits_any_chunking(frames in prop::collection::vec(arb::client_frame(), 0..5), chunk in 1usize..64) {
        let mut stream = Vec::new();
        for f in &frames {
            write_frame(&mut stream, &f.encode());
        }
        let mut r = FrameReader::new();
        let mut out = Vec::new();
        for c in stream.chunks(chunk) {
            r.push(c);
            while let Some(f) = r.next_frame().unwrap() {
                out.push(ClientFrame::decode(&f).unwrap());
            }
        }
        prop_assert_eq!(out, frames);
        prop_assert_eq!(r.buffered(), 0);
    }
}

#[test]
fn oversized_frames_are_refused() {
    let mut r = FrameReader::new();
    r.push(&((MAX_EDGE_FRAME_BYTES as u32) + 1).to_be_bytes());
    let e = r.next_frame().unwrap_err();
    assert_eq!(EdgeErrorCode::for_decode_error(&e), EdgeErrorCode::FrameTooLarge);

    let send = ClientFrame::Send {
        to: Recipient::User(UserId(1)),
        client_msg_id: ClientMsgId(1),
        ciphertext: vec![0; MAX_CIPHERTEXT_BYTES + 1],
        media: None,
        devices_digest: None,
    };
    let e = ClientFrame::decode(&send.encode()).unwrap_err();
    assert_eq!(EdgeErrorCode::for_decode_error(&e), EdgeErrorCode::CiphertextTooLarge);
    // A client frame is not a server frame.
    assert!(ServerFrame::decode(&ClientFrame::Ping { nonce: 1 }.encode()).is_err());
}

#[test]
fn error_codes_are_stable() {
    let codes: Vec<u8> = EdgeErrorCode::ALL.iter().map(|c| c.value()).collect();
    assert_eq!(codes, (0..26).collect::<Vec<u8>>());
    let retryable: Vec<_> = EdgeErrorCode::ALL.iter().copied().filter(|c| c.retryable()).collect();
    assert_eq!(retryable, vec![EdgeErrorCode::RateLimited, EdgeErrorCode::Unavailable]);
}

#[test]
fn phone_numbers_normalize_to_one_user() {
    assert_eq!(normalize_phone(" +1 (555) 010-0001 ").unwrap(), "+15550100001");
    assert_eq!(user_for_phone("+1 555 010 0001").unwrap(), user_for_phone("+15550100001").unwrap());
    assert_ne!(user_for_phone("+15550100001").unwrap(), user_for_phone("+15550100002").unwrap());
    for bad in ["", "15550100001", "+0555010000", "+1555", "+1234567890123456", "+1555x0100001", "++15550100001"] {
        assert!(normalize_phone(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn group_requests_name_a_group_and_exactly_the_members_their_operation_takes() {
    let frame = |chat, op| ClientFrame::Group { client_msg_id: ClientMsgId(1), chat, op };
    let group = ChatId::group([1; 16]);
    // Round trip, and the command each operation becomes.
    let add = frame(group, GroupOp::Add { member: UserId(7) });
    assert_eq!(ClientFrame::decode(&add.encode()).unwrap(), add);
    assert_eq!(
        GroupOp::Add { member: UserId(7) }.command(group),
        CommandBody::AddMember { chat: group, member: UserId(7) }
    );
    assert_eq!(GroupOp::Leave.command(group), CommandBody::LeaveGroup { chat: group });

    // Over the size limit at the frame already.
    let big = frame(
        group,
        GroupOp::Create { name: "g".into(), members: (0..=MAX_GROUP_MEMBERS as u64).map(UserId).collect() },
    );
    assert!(ClientFrame::decode(&big.encode()).is_err());
}

// ---- linked devices (issue 12) ----

#[test]
fn pairing_codes_hash_the_same_however_typed() {
    for r in [0u64, 1, u64::MAX, 0x0123_4567_89ab_cdef] {
        let code = pairing_code(r);
        assert_eq!(code.len(), PAIRING_CODE_CHARS + 1, "{code}");
        let h = pairing_code_hash(&code).unwrap();
        assert_eq!(pairing_code_hash(&code.to_lowercase().replace('-', " ")).unwrap(), h);
        assert_eq!(pairing_code_hash(&code.replace('0', "O").replace('1', "l")).unwrap(), h);
    }
    assert_ne!(pairing_code_hash(&pairing_code(1)).unwrap(), pairing_code_hash(&pairing_code(2)).unwrap());
    for bad in ["", "12345", "12345-123456", "UUUUU-UUUUU", "12345-1234é"] {
        assert!(pairing_code_hash(bad).is_err(), "{bad:?}");
    }
    // The bus subject names the hash, never the code.
    let code = pairing_code(42);
    let subject = chorus_schema::bus::subject::pair(&pairing_code_hash(&code).unwrap());
    assert!(subject.starts_with("chorus.pair.") && subject.len() == "chorus.pair.".len() + 64, "{subject}");
    assert!(!subject.contains(&code.replace('-', "")));
}
