//! Roundtrip and robustness properties of every encode/decode pair.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

mod support;

use support::arb;

use chorus_schema::*;
use proptest::prelude::*;

/// Ways to damage a valid buffer.
#[derive(Clone, Debug)]
enum Damage {
    Truncate(prop::sample::Index),
    FlipBits(Vec<(prop::sample::Index, u8)>),
    Overwrite(Vec<(prop::sample::Index, u8)>),
    Splice(prop::sample::Index, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Damage::Truncate),
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..6).prop_map(Damage::FlipBits),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6).prop_map(Damage::Overwrite),
        (any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Damage::Splice(i, b)),
    ]
}

fn apply_damage(buf: &[u8], d: &Damage) -> Vec<u8> {
    let mut out = buf.to_vec();
    if out.is_empty() {
        return out;
    }
    match d {
        Damage::Truncate(i) => out.truncate(i.index(buf.len())),
        Damage::FlipBits(flips) => {
            for (i, bit) in flips {
                let at = i.index(out.len());
                out[at] ^= 1 << bit;
            }
        }
        Damage::Overwrite(writes) => {
            for (i, b) in writes {
                let at = i.index(out.len());
                out[at] = *b;
            }
        }
        Damage::Splice(i, bytes) => {
            let at = i.index(out.len());
            out.splice(at..at, bytes.iter().copied());
        }
    }
    out
}

/// Decoding damaged input must not panic; whatever decodes must re-encode to
/// something that decodes to the same value.
fn check_damaged<T: PartialEq + std::fmt::Debug>(
    buf: &[u8],
    decode: fn(&[u8]) -> Result<T>,
    encode: fn(&T) -> Vec<u8>,
) {
    if let Ok(v) = decode(buf) {
        let again = decode(&encode(&v)).expect("re-encoded value decodes");
        assert_eq!(again, v);
    }
}

fn enc_result(r: &CommandResult) -> Vec<u8> {
    encode_result(r)
}

proptest! {
    // 256 cases by default; set PROPTEST_CASES for a longer run.

    #[test]
    fn command_roundtrip(c in arb::command()) {
        prop_assert_eq!(Command::decode(&c.encode()), Ok(c));
    }

    #[test]
    fn event_roundtrip(e in arb::event()) {
        prop_assert_eq!(Event::decode(&e.encode()), Ok(e));
    }

    #[test]
    fn event_record_roundtrip(r in arb::event_record()) {
        prop_assert_eq!(EventRecord::decode(&r.encode()), Ok(r));
    }

    #[test]
    fn result_roundtrip(r in arb::command_result()) {
        prop_assert_eq!(decode_result(&encode_result(&r)), Ok(r));
    }

    #[test]
    fn request_roundtrip(r in arb::request()) {
        prop_assert_eq!(Request::decode(&r.encode()), Ok(r));
    }

    #[test]
    fn response_roundtrip(r in arb::response()) {
        prop_assert_eq!(Response::decode(&r.encode()), Ok(r));
    }

    #[test]
    fn random_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..512), ident in 0usize..12) {
        // Give half the inputs a valid file identifier so that the verifier runs.
        let mut buf = buf;
        if buf.len() >= 8 && ident < 6 {
            buf[4..8].copy_from_slice([b"CCMD", b"CEVT", b"CREC", b"CRES", b"CREQ", b"CRSP"][ident]);
        }
        let _ = Command::decode(&buf);
        let _ = Event::decode(&buf);
        let _ = EventRecord::decode(&buf);
        let _ = decode_result(&buf);
        let _ = Request::decode(&buf);
        let _ = Response::decode(&buf);
    }

    #[test]
    fn damaged_command_never_panics(c in arb::command(), d in damage()) {
        check_damaged(&apply_damage(&c.encode(), &d), Command::decode, Command::encode);
    }

    #[test]
    fn damaged_event_never_panics(e in arb::event(), d in damage()) {
        check_damaged(&apply_damage(&e.encode(), &d), Event::decode, Event::encode);
    }

    #[test]
    fn damaged_event_record_never_panics(e in arb::event_record(), d in damage()) {
        check_damaged(&apply_damage(&e.encode(), &d), EventRecord::decode, EventRecord::encode);
    }

    #[test]
    fn damaged_result_never_panics(r in arb::command_result(), d in damage()) {
        check_damaged(&apply_damage(&encode_result(&r), &d), decode_result, enc_result);
    }

    #[test]
    fn damaged_request_never_panics(r in arb::request(), d in damage()) {
        check_damaged(&apply_damage(&r.encode(), &d), Request::decode, Request::encode);
    }

    #[test]
    fn damaged_response_never_panics(r in arb::response(), d in damage()) {
        check_damaged(&apply_damage(&r.encode(), &d), Response::decode, Response::encode);
    }

    #[test]
    fn ids_text_roundtrip(u in any::<u64>(), d in any::<u32>(), p in any::<u16>(), c in any::<[u8; 16]>()) {
        prop_assert_eq!(UserId(u).to_string().parse::<UserId>(), Ok(UserId(u)));
        prop_assert_eq!(DeviceId(d).to_string().parse::<DeviceId>(), Ok(DeviceId(d)));
        prop_assert_eq!(PartitionId(p).to_string().parse::<PartitionId>(), Ok(PartitionId(p)));
        prop_assert_eq!(Seq(u).to_string().parse::<Seq>(), Ok(Seq(u)));
        prop_assert_eq!(ClientMsgId(u).to_string().parse::<ClientMsgId>(), Ok(ClientMsgId(u)));
        prop_assert_eq!(NodeId(u).to_string().parse::<NodeId>(), Ok(NodeId(u)));
        let chat = ChatId(c);
        let text = chat.to_string();
        prop_assert_eq!(text.len(), 32);
        prop_assert!(text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        prop_assert_eq!(text.parse::<ChatId>(), Ok(chat));
        for key in [Key::Chat(chat), Key::User(UserId(u))] {
            prop_assert_eq!(key.to_string().parse::<Key>(), Ok(key));
        }
    }

    #[test]
    fn ids_serde_roundtrip(c in any::<[u8; 16]>(), u in any::<u64>()) {
        let chat = ChatId(c);
        let json = serde_json::to_string(&chat).unwrap();
        prop_assert_eq!(&json, &format!("\"{chat}\""));
        prop_assert_eq!(serde_json::from_str::<ChatId>(&json).unwrap(), chat);
        let bin = bincode::serialize(&chat).unwrap();
        prop_assert_eq!(bincode::deserialize::<ChatId>(&bin).unwrap(), chat);
        prop_assert_eq!(serde_json::to_string(&UserId(u)).unwrap(), u.to_string());
    }

    #[test]
    fn direct_chat_is_symmetric(a in any::<u64>(), b in any::<u64>(), p in 1u16..=1024) {
        let ab = ChatId::direct(UserId(a), UserId(b));
        prop_assert_eq!(ab, ChatId::direct(UserId(b), UserId(a)));
        prop_assert!(ab.is_direct());
        let pid = PartitionId::for_key(&Key::Chat(ab), p);
        prop_assert!(pid.0 < p);
    }
}

#[test]
fn limits_are_enforced_on_decode() {
    let origin = Origin::default();
    let too_long = Command {
        origin,
        body: CommandBody::SendGroup {
            chat: ChatId::group([1; 16]),
            ciphertext: vec![0; MAX_CIPHERTEXT_BYTES + 1],
            media: None,
        },
    };
    assert!(matches!(Command::decode(&too_long.encode()), Err(Error::TooLarge { what: "ciphertext", .. })));

    let phone = Command { origin, body: CommandBody::RegisterUser { phone: "1".repeat(MAX_PHONE_BYTES + 1) } };
    assert!(matches!(Command::decode(&phone.encode()), Err(Error::TooLarge { what: "phone", .. })));

    let reaction = Command {
        origin,
        body: CommandBody::SetReaction {
            chat: ChatId([0; 16]),
            seq: Seq(1),
            reaction: "x".repeat(MAX_REACTION_BYTES + 1),
        },
    };
    assert!(matches!(Command::decode(&reaction.encode()), Err(Error::TooLarge { what: "reaction", .. })));

    let members = Command {
        origin,
        body: CommandBody::CreateGroup {
            chat: ChatId([0; 16]),
            name: String::new(),
            members: (0..=MAX_GROUP_MEMBERS as u64).map(UserId).collect(),
        },
    };
    assert!(matches!(Command::decode(&members.encode()), Err(Error::TooLarge { what: "group members", .. })));

    let append = Request::Append {
        commands: vec![AppendCommand { partition: PartitionId(0), bytes: vec![] }; MAX_COMMANDS_PER_APPEND + 1],
    };
    assert!(matches!(Request::decode(&append.encode()), Err(Error::TooLarge { what: "append commands", .. })));

    let big = vec![0u8; MAX_COMMAND_BYTES + 1];
    assert!(matches!(Command::decode(&big), Err(Error::TooLarge { what: "command", .. })));
}

#[test]
fn wrong_buffer_type_is_refused() {
    let c = Command { origin: Origin::default(), body: CommandBody::SetPresence { online: true, connection: 1 } };
    let err = Event::decode(&c.encode()).unwrap_err();
    assert!(matches!(err, Error::Malformed { what: "event", .. }), "{err}");
    assert!(Command::decode(&[]).is_err());
    assert!(Command::decode(&[0; 7]).is_err());
}

#[test]
fn unknown_enum_value_is_malformed() {
    let c = Command {
        origin: Origin::default(),
        body: CommandBody::Ack { chat: ChatId([7; 16]), kind: ReceiptKind::Read, up_to_seq: Seq(3) },
    };
    let buf = c.encode();
    // Find the encoded `kind` byte (1 = Read) and set it to an unknown value: some
    // position must yield a Malformed receipt kind.
    let found = (0..buf.len()).any(|i| {
        if buf[i] != 1 {
            return false;
        }
        let mut b = buf.clone();
        b[i] = 9;
        matches!(Command::decode(&b), Err(Error::Malformed { what: "receipt kind", .. }))
    });
    assert!(found);
}

#[test]
fn retryable_codes() {
    use ErrorCode::*;
    for c in [NotLeader, PartitionUnavailable, Unavailable, Timeout] {
        assert!(c.retryable());
    }
    for c in [BadFrame, FrameTooLarge, InvalidCommand, MixedGroups, Internal] {
        assert!(!c.retryable());
    }
}

#[test]
fn command_keys() {
    let origin = Origin { user: UserId(5), ..Origin::default() };
    let send =
        Command { origin, body: CommandBody::SendDirect { recipient: UserId(9), ciphertext: vec![], media: None } };
    assert_eq!(send.key(), Key::Chat(ChatId::direct(UserId(9), UserId(5))));
    let claim = Command { origin, body: CommandBody::ClaimPrekey { target: UserId(7), target_device: DeviceId(1) } };
    assert_eq!(claim.key(), Key::User(UserId(7)));
    let presence = Command { origin, body: CommandBody::SetPresence { online: true, connection: 1 } };
    assert_eq!(presence.key(), Key::User(UserId(5)));
}
