//! Properties of random command sequences over small id spaces, so that commands
//! collide: same chats, same users, retries of earlier commands.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::collections::{BTreeMap, BTreeSet};

use chorus_partition::{PartitionState, DEDUP_RETENTION_MS, EDIT_WINDOW_MS};
use chorus_schema::*;
use proptest::prelude::*;
use proptest::sample::Index;

const USERS: u64 = 4;
const GROUPS: u8 = 3;

fn user() -> impl Strategy<Value = UserId> {
    (1..=USERS).prop_map(UserId)
}

/// A chat the commands can name: one of a few groups or a direct pair.
fn chat() -> impl Strategy<Value = ChatId> {
    prop_oneof![
        3 => (1..=GROUPS).prop_map(|n| ChatId::group([n; 16])),
        1 => (user(), user()).prop_map(|(a, b)| ChatId::direct(a, b)),
    ]
}

fn seq() -> impl Strategy<Value = Seq> {
    prop_oneof![3 => 1u64..4, 1 => 0u64..12].prop_map(Seq)
}

fn device() -> impl Strategy<Value = DeviceId> {
    (1u32..=2).prop_map(DeviceId)
}

fn body() -> impl Strategy<Value = CommandBody> {
    use CommandBody::*;
    let ct = prop::collection::vec(any::<u8>(), 0..4);
    prop_oneof![
        4 => (user(), ct.clone()).prop_map(|(recipient, ciphertext)| SendDirect { recipient, ciphertext, media: None }),
        4 => (chat(), ct.clone()).prop_map(|(chat, ciphertext)| SendGroup { chat, ciphertext, media: None }),
        2 => (chat(), seq(), ct.clone()).prop_map(|(chat, seq, ciphertext)| EditMessage { chat, seq, ciphertext }),
        2 => (chat(), seq()).prop_map(|(chat, seq)| DeleteMessage { chat, seq }),
        2 => (chat(), seq(), "[a-c]{0,2}").prop_map(|(chat, seq, reaction)| SetReaction { chat, seq, reaction }),
        4 => (chat(), prop_oneof![Just(ReceiptKind::Delivered), Just(ReceiptKind::Read)], seq())
            .prop_map(|(chat, kind, up_to_seq)| Ack { chat, kind, up_to_seq }),
        2 => ((1..=GROUPS).prop_map(|n| ChatId::group([n; 16])), prop::collection::vec(user(), 0..4))
            .prop_map(|(chat, members)| CreateGroup { chat, name: "g".into(), members }),
        2 => (chat(), user()).prop_map(|(chat, member)| AddMember { chat, member }),
        2 => (chat(), user()).prop_map(|(chat, member)| RemoveMember { chat, member }),
        // Demoting needs a second admin: promote and demote often enough that it happens.
        4 => (chat(), user()).prop_map(|(chat, member)| PromoteMember { chat, member }),
        4 => (chat(), user()).prop_map(|(chat, member)| DemoteMember { chat, member }),
        1 => chat().prop_map(|chat| ChangeGroupInfo { chat, name: "n".into(), description: "d".into(), icon: None }),
        2 => chat().prop_map(|chat| LeaveGroup { chat }),
        2 => "[0-9]{1,3}".prop_map(|phone| RegisterUser { phone }),
        2 => device().prop_map(|device| LinkDevice { device, identity_key: vec![1], name: "d".into(), token_hash: None }),
        1 => device().prop_map(|device| UnlinkDevice { device }),
        1 => Just(UpdateProfile { name: "n".into(), about: "a".into(), avatar: None }),
        1 => any::<bool>().prop_map(|read_receipts| SetPrivacy {
            last_seen: Visibility::Contacts,
            profile_photo: Visibility::Everyone,
            about: Visibility::Nobody,
            read_receipts,
        }),
        2 => (any::<bool>(), 0u64..3).prop_map(|(online, connection)| SetPresence { online, connection }),
        3 => (device(), 0u32..1000, 0u32..4).prop_map(|(device, first, n)| UploadPrekeys {
            device,
            prekeys: (first..first + n).map(|id| Prekey { id, key: id.to_le_bytes().to_vec() }).collect(),
        }),
        4 => (user(), device()).prop_map(|(target, target_device)| ClaimPrekey { target, target_device }),
        2 => (0u64..4, prop::collection::vec(user(), 0..3), 0u8..3, prop::option::of(1u64..5_000)).prop_map(
            |(status_id, acl, a, ttl)| PostStatus {
                status_id,
                ciphertext: vec![],
                media: None,
                acl,
                audience: [
                    chorus_schema::StatusAudience::OnlyShareWith,
                    chorus_schema::StatusAudience::Contacts,
                    chorus_schema::StatusAudience::ContactsExcept
                ][a as usize],
                ttl_ms: ttl.unwrap_or(0),
            }
        ),
        4 => (user(), 0u64..4).prop_map(|(author, status_id)| ViewStatus { author, status_id }),
        1 => (0u32..1500).prop_map(|hashes| RecordContactLookup { hashes }),
        // ---- push and reports (issue 14) ----
        1 => (0u8..2).prop_map(|t| SetPushToken { token: if t == 0 { String::new() } else { "tok".into() }, platform: "fcm".into() }),
        1 => user().prop_map(|reported| FileReport { reported, chat: None, reason: "spam".into(), messages: vec![] }),
        1 => prop::collection::vec(user(), 0..3).prop_map(|contacts| UpdateContacts { contacts }),
        1 => user().prop_map(|target| Block { target }),
        1 => user().prop_map(|target| Unblock { target }),
        2 => (device(), 0u8..3).prop_map(|(device, t)| CreateSession { device, token_hash: [t; 32] }),
        1 => device().prop_map(|device| RevokeSession { device }),
        2 => Just(RecordOtpFailure),
        2 => (device(), 0u8..3, prop::option::of(0u8..2)).prop_map(|(device, t, pin)| RegisterDevice {
            phone: "+1555".into(),
            device,
            identity_key: vec![1],
            name: "d".into(),
            token_hash: [t; 32],
            pin_hash: pin.map(|p| [p; 32]),
        }),
        1 => prop::option::of(0u8..2).prop_map(|pin| SetRegistrationPin { pin_hash: pin.map(|p| [p; 32]) }),
        2 => (user(), any::<bool>()).prop_map(|(peer, blocked)| SetDirectBlock { peer, blocked }),
    ]
}

#[derive(Clone, Debug)]
enum Step {
    Fresh {
        user: UserId,
        device: DeviceId,
        body: CommandBody,
        dt_ms: i64,
    },
    /// Repeat an earlier command exactly (same origin).
    Retry {
        of: Index,
        dt_ms: i64,
    },
}

/// Mostly small steps forward; sometimes half a dedup retention (so that both the
/// dedup retention and the edit window pass within a sequence); sometimes the
/// leader's clock goes backwards, by up to an edit window.
fn dt_ms() -> impl Strategy<Value = i64> {
    prop_oneof![
        30 => 0i64..5_000,
        2 => Just(DEDUP_RETENTION_MS as i64 / 2 + 1),
        1 => -(EDIT_WINDOW_MS as i64)..0,
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (user(), device(), body(), dt_ms()).prop_map(|(user, device, body, dt_ms)| Step::Fresh { user, device, body, dt_ms }),
        1 => (any::<Index>(), dt_ms()).prop_map(|(of, dt_ms)| Step::Retry { of, dt_ms }),
    ]
}

/// The concrete input: (at_ms, command, index of the original if a retry).
fn materialize(steps: &[Step]) -> Vec<(u64, Command, Option<usize>)> {
    let mut out: Vec<(u64, Command, Option<usize>)> = Vec::new();
    let mut now = 1_000_000u64;
    for (i, s) in steps.iter().enumerate() {
        match s {
            Step::Retry { of, dt_ms } if !out.is_empty() => {
                now = now.saturating_add_signed(*dt_ms);
                let j = of.index(out.len());
                let original = out[j].2.unwrap_or(j);
                out.push((now, out[j].1.clone(), Some(original)));
            }
            Step::Retry { dt_ms, .. } => now = now.saturating_add_signed(*dt_ms),
            Step::Fresh { user, device, body, dt_ms } => {
                now = now.saturating_add_signed(*dt_ms);
                let origin = Origin { user: *user, device: *device, client_msg_id: ClientMsgId(i as u64 + 1) };
                out.push((now, Command { origin, body: body.clone() }, None));
            }
        }
    }
    out
}

type Run = Vec<(CommandResult, Vec<Event>)>;

fn run(state: &mut PartitionState, cmds: &[(u64, Command, Option<usize>)]) -> Run {
    cmds.iter()
        .map(|(at_ms, cmd, _)| {
            let before = state.clone();
            let mut out = Vec::new();
            let result = state.apply(*at_ms, cmd, &mut out);
            if result.is_err() {
                assert!(out.is_empty(), "rejected {cmd:?} emitted {out:?}");
                assert_eq!(*state, before, "rejected {cmd:?} changed the state");
            }
            (result, out)
        })
        .collect()
}

fn check_invariants(cmds: &[(u64, Command, Option<usize>)], live: &Run, state: &PartitionState) {
    let mut next_seq: BTreeMap<ChatId, Seq> = BTreeMap::new();
    let mut members: BTreeMap<ChatId, BTreeSet<UserId>> = BTreeMap::new();
    let mut receipts: BTreeMap<(ChatId, UserId, DeviceId, ReceiptKind), Seq> = BTreeMap::new();
    let mut claimed = BTreeSet::new();
    // A reference model of the dedup table: origin -> (at_ms, result).
    let mut dedup: BTreeMap<(UserId, DeviceId, ClientMsgId), (u64, CommandResult)> = BTreeMap::new();
    // A reference model of every message ever sent: (chat, seq) -> (sender, at_ms, deleted).
    let mut messages: BTreeMap<(ChatId, Seq), (UserId, u64, bool)> = BTreeMap::new();
    let mut newest = 0u64;
    // A reference model of linked devices and their sessions (token hashes).
    let mut linked: BTreeSet<(UserId, DeviceId)> = BTreeSet::new();
    let mut sessions: BTreeMap<(UserId, DeviceId), [u8; 32]> = BTreeMap::new();

    for (i, ((at_ms, cmd, retry_of), (result, events))) in cmds.iter().zip(live).enumerate() {
        let key = (cmd.origin.user, cmd.origin.device, cmd.origin.client_msg_id);
        let is_ack = matches!(cmd.body, CommandBody::Ack { .. });
        let hit = !is_ack && dedup.contains_key(&key);
        if !hit {
            check_target_rule(cmd, *at_ms, newest, &members, &next_seq, &messages, result);
        }
        if hit {
            assert_eq!(result, &dedup[&key].1, "retry of {cmd:?} got another result");
            assert!(events.is_empty(), "retry of {cmd:?} appended {events:?}");
        } else if retry_of.is_some() && is_ack && was_accepted_before(&cmds[..i], &live[..i], cmd) {
            assert!(events.is_empty(), "retried ack {cmd:?} appended {events:?}");
        }

        for e in events {
            assert_eq!(Event::decode(&e.encode()).as_ref(), Ok(e), "event roundtrip");
            if let Some(chat) = e.body.chat() {
                if let Some(seq) = e.body.seq() {
                    let expected = next_seq.entry(chat).or_insert(Seq(1));
                    assert_eq!(seq, *expected, "gap in chat {chat}: {:?}", e.body);
                    *expected = seq.next();
                }
            }
            match &e.body {
                EventBody::ChatOpened { chat, members: m } | EventBody::GroupCreated { chat, members: m, .. } => {
                    assert!(members.insert(*chat, m.iter().copied().collect()).is_none(), "chat {chat} created twice");
                }
                EventBody::MemberAdded { chat, member, .. } => {
                    assert!(members.get_mut(chat).unwrap().insert(*member));
                }
                EventBody::MemberRemoved { chat, member, .. } => {
                    assert!(members.get_mut(chat).unwrap().remove(member));
                }
                EventBody::MemberLeft { chat, .. } => {
                    assert!(members.get_mut(chat).unwrap().remove(&e.origin.user));
                }
                _ => {}
            }
            match &e.body {
                EventBody::MessageSent { chat, .. }
                | EventBody::MessageEdited { chat, .. }
                | EventBody::MessageDeleted { chat, .. }
                | EventBody::ReactionSet { chat, .. }
                | EventBody::Receipt { chat, .. } => {
                    assert!(members[chat].contains(&e.origin.user), "non-member {} acted in {chat}", e.origin.user);
                }
                _ => {}
            }
            if let EventBody::Receipt { chat, kind, up_to_seq } = &e.body {
                let cursor = receipts.entry((*chat, e.origin.user, e.origin.device, *kind)).or_default();
                assert!(*up_to_seq > *cursor, "receipt went backwards");
                *cursor = *up_to_seq;
            }
            match &e.body {
                EventBody::MessageSent { chat, seq, .. } => {
                    messages.insert((*chat, *seq), (e.origin.user, e.at_ms, false));
                }
                EventBody::MessageDeleted { chat, target, .. } => {
                    let m = messages.get_mut(&(*chat, *target)).expect("deleted a message never sent");
                    assert!(!m.2, "deleted twice");
                    m.2 = true;
                }
                _ => {}
            }
            match &e.body {
                EventBody::DeviceLinked { user, device, .. } => {
                    linked.insert((*user, *device));
                }
                EventBody::DeviceUnlinked { user, device } => {
                    linked.remove(&(*user, *device));
                    sessions.remove(&(*user, *device));
                }
                EventBody::SessionCreated { user, device, token_hash } => {
                    assert!(linked.contains(&(*user, *device)), "session of an unlinked device");
                    sessions.insert((*user, *device), *token_hash);
                }
                EventBody::SessionRevoked { user, device } => {
                    assert!(sessions.remove(&(*user, *device)).is_some(), "revoked a session that did not exist");
                }
                _ => {}
            }
            if let EventBody::PrekeyClaimed { user, device, prekey_id, .. } = &e.body {
                assert!(claimed.insert((*user, *device, *prekey_id)), "prekey claimed twice");
            }
        }

        if !events.is_empty() {
            if !is_ack && !hit {
                dedup.insert(key, (*at_ms, result.clone()));
            }
            newest = newest.max(*at_ms);
            dedup.retain(|_, (t, _)| *t >= newest.saturating_sub(DEDUP_RETENTION_MS));
        }
        if let (Ok(Outcome::Chat { chat, seq }), false) = (result, events.is_empty()) {
            assert_eq!(events.last().and_then(|e| e.body.seq()), Some(*seq), "outcome is not the last event's seq");
            assert_eq!(events.last().and_then(|e| e.body.chat()), Some(*chat));
        }
    }
    assert_eq!(state.dedup_len(), dedup.len(), "dedup table size differs from the model");
    for u in 1..=USERS {
        for d in 1..=2 {
            let (u, d) = (UserId(u), DeviceId(d));
            assert_eq!(state.session(u, d), sessions.get(&(u, d)).copied(), "session of {u}/{d}");
        }
    }

    for chat in state.chat_ids() {
        assert_eq!(state.last_seq(&chat), next_seq.get(&chat).map(|s| Seq(s.0 - 1)).or(Some(Seq(0))));
        assert_eq!(state.members(&chat).unwrap(), members[&chat].iter().copied().collect::<Vec<_>>());
        for u in 1..=USERS {
            for d in 1..=2 {
                let c = state.cursors(&chat, UserId(u), DeviceId(d)).unwrap();
                assert!(c.delivered >= c.read, "read ahead of delivered");
            }
        }
    }
}

/// The edit-window rules for edits, deletes and reactions, against a model that
/// remembers every message: a message is recent while `at_ms + EDIT_WINDOW_MS`
/// reaches `max(newest, at_ms of the command)`; a seq that is no message is unknown.
fn check_target_rule(
    cmd: &Command,
    at_ms: u64,
    newest: u64,
    members: &BTreeMap<ChatId, BTreeSet<UserId>>,
    next_seq: &BTreeMap<ChatId, Seq>,
    messages: &BTreeMap<(ChatId, Seq), (UserId, u64, bool)>,
    result: &CommandResult,
) {
    let (chat, target, own) = match &cmd.body {
        CommandBody::EditMessage { chat, seq, .. } | CommandBody::DeleteMessage { chat, seq } => (*chat, *seq, true),
        CommandBody::SetReaction { chat, seq, .. } => (*chat, *seq, false),
        _ => return,
    };
    if !members.get(&chat).is_some_and(|m| m.contains(&cmd.origin.user)) {
        return;
    }
    let last = next_seq.get(&chat).map_or(0, |s| s.0 - 1);
    let now = newest.max(at_ms);
    let expected: Result<(), RejectCode> = if target.0 == 0 || target.0 > last {
        Err(RejectCode::UnknownMessage)
    } else {
        match messages.get(&(chat, target)) {
            Some((_, t, _)) if t + EDIT_WINDOW_MS < now => Err(RejectCode::Invalid), // old
            Some((_, _, true)) => Err(RejectCode::UnknownMessage),
            Some((sender, _, _)) if own && *sender != cmd.origin.user => Err(RejectCode::UnknownMessage),
            Some(_) => Ok(()),
            None => Err(RejectCode::UnknownMessage),
        }
    };
    // Outside the window, reactions are accepted.
    let expected = match expected {
        Err(RejectCode::Invalid) if !own => Ok(()),
        e => e,
    };
    let got = result.as_ref().map(|_| ()).map_err(|r| r.code);
    assert_eq!(got, expected, "{cmd:?} at {at_ms} (newest {newest}): {result:?}");
    if let Err(r) = result {
        if r.code == RejectCode::Invalid {
            assert_eq!(r.message, "message is too old to edit/delete");
        }
    }
}

/// Whether an earlier run of exactly this command was accepted.
fn was_accepted_before(
    cmds: &[(u64, Command, Option<usize>)],
    live: &[(CommandResult, Vec<Event>)],
    cmd: &Command,
) -> bool {
    cmds.iter().zip(live).any(|((_, c, _), (r, _))| c == cmd && r.is_ok())
}

proptest! {
    // 256 cases by default; set PROPTEST_CASES for a longer run.

    #[test]
    fn sequences_keep_their_invariants(steps in prop::collection::vec(step(), 1..150), split in any::<Index>()) {
        let cmds = materialize(&steps);
        let mut live = PartitionState::new(PartitionId(0), 1);
        let results = run(&mut live, &cmds);
        check_invariants(&cmds, &results, &live);

        // Replay: folding the emitted events gives the live state.
        let mut replayed = PartitionState::new(PartitionId(0), 1);
        for e in results.iter().flat_map(|(_, events)| events) {
            replayed.fold(e);
        }
        prop_assert_eq!(&replayed, &live);

        // Snapshot midway (JSON and bincode), resume: same results, events and state.
        let k = split.index(cmds.len() + 1);
        let mut first = PartitionState::new(PartitionId(0), 1);
        let head = run(&mut first, &cmds[..k]);
        prop_assert_eq!(&head[..], &results[..k]);
        let json = serde_json::to_vec(&first).unwrap();
        let bin = bincode::serialize(&first).unwrap();
        for mut resumed in [serde_json::from_slice::<PartitionState>(&json).unwrap(), bincode::deserialize(&bin).unwrap()] {
            prop_assert_eq!(&resumed, &first);
            let tail = run(&mut resumed, &cmds[k..]);
            prop_assert_eq!(&tail[..], &results[k..]);
            prop_assert_eq!(&resumed, &live);
        }
    }
}

/// Keeps the generators honest: over a fixed set of sequences, every kind of
/// command succeeds at least once (a generator that can never produce a valid
/// command of some kind would leave its rules untested). With `--nocapture` it
/// also prints how often each outcome happens.
#[test]
fn generator_coverage() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..200 {
        let steps = prop::collection::vec(step(), 100..150).new_tree(&mut runner).unwrap().current();
        let cmds = materialize(&steps);
        let mut state = PartitionState::new(PartitionId(0), 1);
        for ((_, cmd, retry), (result, events)) in cmds.iter().zip(run(&mut state, &cmds)) {
            let verdict = match &result {
                Ok(_) if events.is_empty() => "ok-quiet".to_string(),
                Ok(_) => "ok".to_string(),
                Err(r) => format!("{:?}", r.code),
            };
            let kind = if retry.is_some() { format!("retry {}", cmd.kind()) } else { cmd.kind().to_string() };
            *counts.entry(format!("{kind:>22} {verdict}")).or_default() += 1;
        }
    }
    let mut kinds = std::collections::BTreeSet::new();
    let mut succeeded = std::collections::BTreeSet::new();
    for (k, v) in &counts {
        println!("{k:<40} {v}");
        let mut parts = k.trim().rsplitn(2, ' ');
        let (verdict, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or("").trim().to_string());
        if kind.starts_with("retry") {
            continue;
        }
        if verdict.starts_with("ok") {
            succeeded.insert(kind.clone());
        }
        kinds.insert(kind);
    }
    let never: Vec<_> = kinds.difference(&succeeded).collect();
    assert!(never.is_empty(), "command kinds that never succeed in the generated sequences: {never:?}");
    assert!(kinds.len() >= 25, "only {} command kinds generated: {kinds:?}", kinds.len());
}
