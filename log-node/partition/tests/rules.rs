//! One test per rule of the partition state machine.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use chorus_partition::{
    ChatKind, Cursors, PartitionState, CONTACT_LOOKUPS_PER_DAY, DAY_MS, DEDUP_RETENTION_MS, EDIT_WINDOW_MS,
    OTP_FAILURES_MAX, OTP_FAILURE_WINDOW_MS, OTP_LOCK_MS, STATUS_TTL_MS,
};
use chorus_schema::*;

const A: UserId = UserId(1);
const B: UserId = UserId(2);
const C: UserId = UserId(3);
const D: UserId = UserId(4);

fn group_id(n: u8) -> ChatId {
    ChatId::group([n; 16])
}

/// Drives one partition with fresh client message ids and a clock.
struct Harness {
    state: PartitionState,
    now_ms: u64,
    next_cmid: u64,
}

impl Harness {
    fn new() -> Self {
        Harness { state: PartitionState::new(PartitionId(0), 1), now_ms: 1_000, next_cmid: 1 }
    }

    fn command(&mut self, user: UserId, device: u32, body: CommandBody) -> Command {
        let cmid = self.next_cmid;
        self.next_cmid += 1;
        Command { origin: Origin { user, device: DeviceId(device), client_msg_id: ClientMsgId(cmid) }, body }
    }

    fn apply(&mut self, cmd: &Command) -> (CommandResult, Vec<EventBody>) {
        self.now_ms += 10;
        let mut out = Vec::new();
        let before = self.state.clone();
        let result = self.state.apply(self.now_ms, cmd, &mut out);
        if result.is_err() {
            assert!(out.is_empty(), "a rejection emitted events: {out:?}");
            assert_eq!(self.state, before, "a rejection changed the state");
        }
        for e in &out {
            assert_eq!(e.at_ms, self.now_ms);
            assert_eq!(e.origin, cmd.origin);
        }
        (result, out.into_iter().map(|e| e.body).collect())
    }

    fn run(&mut self, user: UserId, body: CommandBody) -> (CommandResult, Vec<EventBody>) {
        self.run_on(user, 1, body)
    }

    fn run_on(&mut self, user: UserId, device: u32, body: CommandBody) -> (CommandResult, Vec<EventBody>) {
        let cmd = self.command(user, device, body);
        self.apply(&cmd)
    }

    #[track_caller]
    fn must_ok(&mut self, user: UserId, body: CommandBody) -> (Outcome, Vec<EventBody>) {
        let what = format!("{body:?}");
        match self.run(user, body) {
            (Ok(o), events) => (o, events),
            (Err(r), _) => panic!("{what} by {user} was rejected: {r}"),
        }
    }

    #[track_caller]
    fn must_reject(&mut self, user: UserId, body: CommandBody, code: RejectCode) -> String {
        let what = format!("{body:?}");
        match self.run(user, body) {
            (Err(r), _) => {
                assert_eq!(r.code, code, "{what} by {user}: {}", r.message);
                r.message
            }
            (Ok(o), _) => panic!("{what} by {user} was accepted ({o:?}), expected {code:?}"),
        }
    }

    fn create_group(&mut self, chat: ChatId, creator: UserId, members: &[UserId]) {
        let (o, _) =
            self.must_ok(creator, CommandBody::CreateGroup { chat, name: "g".into(), members: members.to_vec() });
        assert_eq!(o, Outcome::Chat { chat, seq: Seq(1) });
    }

    fn send(&mut self, chat: ChatId, user: UserId) -> CommandResult {
        self.run(user, CommandBody::SendGroup { chat, ciphertext: b"hi".to_vec(), media: None }).0
    }

    fn register(&mut self, user: UserId) {
        self.must_ok(user, CommandBody::RegisterUser { phone: format!("+1555{}", user.0) });
    }
}

fn send_direct(to: UserId) -> CommandBody {
    CommandBody::SendDirect { recipient: to, ciphertext: b"x".to_vec(), media: None }
}

#[test]
fn first_direct_send_opens_the_chat() {
    let mut h = Harness::new();
    let chat = ChatId::direct(A, B);
    let (o, events) = h.must_ok(B, send_direct(A));
    assert_eq!(o, Outcome::Chat { chat, seq: Seq(1) });
    assert_eq!(
        events,
        vec![
            EventBody::ChatOpened { chat, members: vec![A, B] },
            EventBody::MessageSent { chat, seq: Seq(1), ciphertext: b"x".to_vec(), media: None },
        ]
    );
    let (o, events) = h.must_ok(A, send_direct(B));
    assert_eq!(o, Outcome::Chat { chat, seq: Seq(2) });
    assert_eq!(events.len(), 1);
    assert_eq!(h.state.members(&chat), Some(vec![A, B]));
    assert_eq!(h.state.chat_kind(&chat), Some(ChatKind::Direct));
    assert_eq!(h.state.last_seq(&chat), Some(Seq(2)));
    h.must_reject(A, send_direct(A), RejectCode::Invalid);
    // A third user cannot use the pair's chat by its id.
    h.must_reject(C, CommandBody::SetReaction { chat, seq: Seq(1), reaction: "+".into() }, RejectCode::NotMember);
    h.must_reject(A, CommandBody::SendGroup { chat, ciphertext: vec![], media: None }, RejectCode::Invalid);
    h.must_reject(A, CommandBody::AddMember { chat, member: C }, RejectCode::Invalid);
}

#[test]
fn a_retry_returns_the_original_outcome_and_appends_nothing() {
    let mut h = Harness::new();
    let first = h.command(A, 1, send_direct(B));
    let (r1, e1) = h.apply(&first);
    assert_eq!(e1.len(), 2);
    h.must_ok(B, send_direct(A));
    let (r2, e2) = h.apply(&first);
    assert_eq!(r1, r2);
    assert!(e2.is_empty());
    assert_eq!(h.state.last_seq(&ChatId::direct(A, B)), Some(Seq(2)));

    // The same client_msg_id from another device is another command.
    let mut other = first.clone();
    other.origin.device = DeviceId(2);
    let (r3, e3) = h.apply(&other);
    assert_eq!(r3, Ok(Outcome::Chat { chat: ChatId::direct(A, B), seq: Seq(3) }));
    assert_eq!(e3.len(), 1);
}

#[test]
fn a_rejected_command_is_not_remembered() {
    let mut h = Harness::new();
    let g = group_id(1);
    let send = h.command(B, 1, CommandBody::SendGroup { chat: g, ciphertext: vec![1], media: None });
    assert_eq!(h.apply(&send).0.unwrap_err().code, RejectCode::UnknownChat);
    h.create_group(g, A, &[B]);
    assert_eq!(h.apply(&send).0, Ok(Outcome::Chat { chat: g, seq: Seq(2) }));
}

#[test]
fn dedup_entries_expire_after_the_retention() {
    let mut h = Harness::new();
    let g = group_id(1);
    h.create_group(g, A, &[]);
    let send = h.command(A, 1, CommandBody::SendGroup { chat: g, ciphertext: vec![1], media: None });
    assert_eq!(h.apply(&send).0, Ok(Outcome::Chat { chat: g, seq: Seq(2) }));
    h.now_ms += DEDUP_RETENTION_MS / 2;
    assert_eq!(h.apply(&send), (Ok(Outcome::Chat { chat: g, seq: Seq(2) }), vec![]));
    assert_eq!(h.state.dedup_len(), 2);
    // Another event far in the future prunes both entries; the retry is new again.
    h.now_ms += DEDUP_RETENTION_MS;
    h.must_ok(A, CommandBody::ChangeGroupInfo { chat: g, name: "n".into(), description: "d".into(), icon: None });
    assert_eq!(h.state.dedup_len(), 1);
    assert_eq!(h.apply(&send).0, Ok(Outcome::Chat { chat: g, seq: Seq(4) }));
}

#[test]
fn dedup_keeps_outcomes_for_24_hours() {
    assert_eq!(DEDUP_RETENTION_MS, 24 * 60 * 60 * 1000);
    let mut h = Harness::new();
    let g = group_id(1);
    h.create_group(g, A, &[B]);
    let send = h.command(A, 1, CommandBody::SendGroup { chat: g, ciphertext: vec![1], media: None });
    let (r, _) = h.apply(&send);
    assert_eq!(r, Ok(Outcome::Chat { chat: g, seq: Seq(2) }));
    let sent_at = h.now_ms;
    // Another event exactly 24 h later keeps the entry (`at_ms + retention >= newest`).
    h.now_ms = sent_at + DEDUP_RETENTION_MS - 10; // apply adds 10
    h.must_ok(B, CommandBody::SetReaction { chat: g, seq: Seq(2), reaction: "+".into() });
    assert_eq!(h.state.newest_at_ms(), sent_at + DEDUP_RETENTION_MS);
    assert_eq!(h.apply(&send), (r.clone(), vec![]));
    // One millisecond later it is gone, and the retry is a new command.
    h.now_ms = sent_at + DEDUP_RETENTION_MS - 9;
    h.must_ok(B, CommandBody::SetReaction { chat: g, seq: Seq(2), reaction: "-".into() });
    assert_eq!(h.apply(&send).0, Ok(Outcome::Chat { chat: g, seq: Seq(5) }));
}

/// Drives `state` without the harness (whose per-command clone is quadratic here).
fn apply_raw(state: &mut PartitionState, log: &mut Vec<Event>, at_ms: u64, cmd: &Command) -> CommandResult {
    let mut out = Vec::new();
    let r = state.apply(at_ms, cmd, &mut out);
    log.extend(out);
    r
}

#[test]
fn dedup_has_no_bound_per_device_and_survives_replay_and_snapshots() {
    let mut state = PartitionState::new(PartitionId(0), 1);
    let mut log = Vec::new();
    let g = group_id(1);
    let origin = |device: u32, id: u64| Origin { user: A, device: DeviceId(device), client_msg_id: ClientMsgId(id) };
    let send = |device: u32, id: u64| Command {
        origin: origin(device, id),
        body: CommandBody::SendGroup { chat: g, ciphertext: vec![], media: None },
    };
    let create =
        Command { origin: origin(2, 1), body: CommandBody::CreateGroup { chat: g, name: "g".into(), members: vec![] } };
    let t = 1_000_000;
    apply_raw(&mut state, &mut log, t, &create).unwrap();
    // Device 1 sends 5,000 commands; id 2 comes with an earlier time (the
    // leader's clock went back). The table lives in the state's records, not in
    // a bounded map: every one of them is still remembered.
    let n = 5_000u64;
    for id in 1..=n {
        let at = if id == 2 { t - 5 } else { t + id };
        apply_raw(&mut state, &mut log, at, &send(1, id)).unwrap();
    }
    assert_eq!(state.dedup_len(), n as usize + 1);
    let seq_of = |r: CommandResult| match r {
        Ok(Outcome::Chat { seq, .. }) => seq,
        other => panic!("{other:?}"),
    };
    let last = state.last_seq(&g).unwrap();
    for (id, seq) in [(1, 2), (2, 3), (n, n + 1)] {
        assert_eq!(seq_of(apply_raw(&mut state, &mut log, t + n + 1, &send(1, id))), Seq(seq), "retry of {id}");
    }
    assert_eq!(state.last_seq(&g), Some(last), "retries append nothing");
    // Device 2's entry (the group creation) too.
    assert_eq!(apply_raw(&mut state, &mut log, t + n + 2, &create), Ok(Outcome::Chat { chat: g, seq: Seq(1) }));

    // Replay and snapshots rebuild exactly this table.
    let mut replayed = PartitionState::new(PartitionId(0), 1);
    for e in &log {
        replayed.fold(e);
    }
    assert_eq!(replayed, state);
    let bin = bincode::serialize(&state).unwrap();
    assert_eq!(bincode::deserialize::<PartitionState>(&bin).unwrap(), state);
    let json = serde_json::to_vec(&state).unwrap();
    assert_eq!(serde_json::from_slice::<PartitionState>(&json).unwrap(), state);
}

#[test]
fn create_group_rules() {
    let mut h = Harness::new();
    let g = group_id(1);
    let (_, events) = h.must_ok(A, CommandBody::CreateGroup { chat: g, name: "g".into(), members: vec![C, B, C, A] });
    assert_eq!(
        events,
        vec![EventBody::GroupCreated { chat: g, seq: Seq(1), name: "g".into(), members: vec![A, B, C] }]
    );
    assert_eq!(h.state.members(&g), Some(vec![A, B, C]));
    assert_eq!(h.state.admins(&g), Some(vec![A]));
    assert_eq!(h.state.group_info(&g), Some(("g".into(), "".into())));
    h.must_reject(
        B,
        CommandBody::CreateGroup { chat: g, name: "again".into(), members: vec![] },
        RejectCode::AlreadyExists,
    );
    let direct = ChatId::direct(A, B);
    h.must_reject(
        A,
        CommandBody::CreateGroup { chat: direct, name: "squat".into(), members: vec![] },
        RejectCode::Invalid,
    );
    let too_many = (10..10 + MAX_GROUP_MEMBERS as u64).map(UserId).collect();
    h.must_reject(
        A,
        CommandBody::CreateGroup { chat: group_id(2), name: "big".into(), members: too_many },
        RejectCode::Invalid,
    );
}

#[test]
fn only_admins_manage_and_only_members_send() {
    let mut h = Harness::new();
    let g = group_id(1);
    h.create_group(g, A, &[B]);
    h.must_reject(B, CommandBody::AddMember { chat: g, member: C }, RejectCode::NotAdmin);
    h.must_reject(B, CommandBody::RemoveMember { chat: g, member: A }, RejectCode::NotAdmin);
    h.must_reject(B, CommandBody::PromoteMember { chat: g, member: B }, RejectCode::NotAdmin);
    h.must_reject(B, CommandBody::DemoteMember { chat: g, member: A }, RejectCode::NotAdmin);
    h.must_reject(
        B,
        CommandBody::ChangeGroupInfo { chat: g, name: "x".into(), description: "y".into(), icon: None },
        RejectCode::NotAdmin,
    );
    h.must_reject(C, CommandBody::AddMember { chat: g, member: C }, RejectCode::NotMember);
    assert_eq!(h.send(g, C).unwrap_err().code, RejectCode::NotMember);
    assert_eq!(h.send(g, B), Ok(Outcome::Chat { chat: g, seq: Seq(2) }));

    h.must_ok(A, CommandBody::AddMember { chat: g, member: C });
    h.must_reject(A, CommandBody::AddMember { chat: g, member: C }, RejectCode::AlreadyExists);
    h.must_ok(A, CommandBody::PromoteMember { chat: g, member: B });
    h.must_reject(A, CommandBody::PromoteMember { chat: g, member: B }, RejectCode::AlreadyExists);
    h.must_reject(A, CommandBody::PromoteMember { chat: g, member: D }, RejectCode::NotMember);
    h.must_ok(B, CommandBody::ChangeGroupInfo { chat: g, name: "new".into(), description: "about".into(), icon: None });
    assert_eq!(h.state.group_info(&g), Some(("new".into(), "about".into())));
    h.must_ok(B, CommandBody::DemoteMember { chat: g, member: A });
    h.must_reject(B, CommandBody::DemoteMember { chat: g, member: B }, RejectCode::Invalid);
    h.must_reject(B, CommandBody::DemoteMember { chat: g, member: C }, RejectCode::Invalid);
    assert_eq!(h.state.admins(&g), Some(vec![B]));
    assert_eq!(h.state.last_seq(&g), Some(Seq(6)));
    h.must_reject(A, CommandBody::LeaveGroup { chat: group_id(9) }, RejectCode::UnknownChat);
    assert_eq!(h.send(group_id(9), A).unwrap_err().code, RejectCode::UnknownChat);
}

#[test]
fn a_removed_member_is_refused_and_gone() {
    let mut h = Harness::new();
    let g = group_id(1);
    h.create_group(g, A, &[B, C]);
    h.send(g, B).unwrap();
    let (o, events) = h.must_ok(A, CommandBody::RemoveMember { chat: g, member: B });
    assert_eq!(o, Outcome::Chat { chat: g, seq: Seq(3) });
    assert_eq!(events, vec![EventBody::MemberRemoved { chat: g, seq: Seq(3), member: B }]);
    assert_eq!(h.state.members(&g), Some(vec![A, C]));
    assert!(!h.state.is_member(&g, B));
    assert_eq!(h.send(g, B).unwrap_err().code, RejectCode::NotMember);
    h.must_reject(B, CommandBody::Ack { chat: g, kind: ReceiptKind::Read, up_to_seq: Seq(3) }, RejectCode::NotMember);
    h.must_reject(B, CommandBody::EditMessage { chat: g, seq: Seq(2), ciphertext: vec![] }, RejectCode::NotMember);
    h.must_reject(B, CommandBody::LeaveGroup { chat: g }, RejectCode::NotMember);
    h.must_reject(A, CommandBody::RemoveMember { chat: g, member: B }, RejectCode::NotMember);
    // Re-added, B is the newest member again.
    h.must_ok(A, CommandBody::AddMember { chat: g, member: B });
    assert!(h.send(g, B).is_ok());
}

#[test]
fn the_last_admin_leaving_promotes_the_longest_standing_member() {
    let mut h = Harness::new();
    let g = group_id(1);
    h.create_group(g, A, &[D, C]);
    h.must_ok(A, CommandBody::AddMember { chat: g, member: B });
    // C and D joined at seq 1, B at seq 2: C wins (same seq, smaller id).
    let (o, events) = h.must_ok(A, CommandBody::LeaveGroup { chat: g });
    assert_eq!(
        events,
        vec![
            EventBody::MemberPromoted { chat: g, seq: Seq(3), member: C },
            EventBody::MemberLeft { chat: g, seq: Seq(4) }
        ]
    );
    assert_eq!(o, Outcome::Chat { chat: g, seq: Seq(4) });
    assert_eq!(h.state.admins(&g), Some(vec![C]));
    assert_eq!(h.state.members(&g), Some(vec![B, C, D]));

    // An admin removing themself hands over the same way; with another admin left, nobody is promoted.
    h.must_ok(C, CommandBody::PromoteMember { chat: g, member: B });
    let (_, events) = h.must_ok(C, CommandBody::RemoveMember { chat: g, member: C });
    assert_eq!(events, vec![EventBody::MemberRemoved { chat: g, seq: Seq(6), member: C }]);
    let (_, events) = h.must_ok(B, CommandBody::LeaveGroup { chat: g });
    assert_eq!(
        events,
        vec![
            EventBody::MemberPromoted { chat: g, seq: Seq(7), member: D },
            EventBody::MemberLeft { chat: g, seq: Seq(8) }
        ]
    );
    // The last member leaves: nobody to promote, the group is empty.
    let (_, events) = h.must_ok(D, CommandBody::LeaveGroup { chat: g });
    assert_eq!(events, vec![EventBody::MemberLeft { chat: g, seq: Seq(9) }]);
    assert_eq!(h.state.members(&g), Some(vec![]));
}

#[test]
fn only_the_sender_edits_or_deletes_and_members_react() {
    let mut h = Harness::new();
    let g = group_id(1);
    h.create_group(g, A, &[B]);
    h.send(g, B).unwrap(); // seq 2
    h.must_reject(A, CommandBody::EditMessage { chat: g, seq: Seq(2), ciphertext: vec![] }, RejectCode::UnknownMessage);
    h.must_reject(A, CommandBody::DeleteMessage { chat: g, seq: Seq(2) }, RejectCode::UnknownMessage);
    h.must_reject(B, CommandBody::EditMessage { chat: g, seq: Seq(1), ciphertext: vec![] }, RejectCode::UnknownMessage);
    h.must_reject(B, CommandBody::EditMessage { chat: g, seq: Seq(9), ciphertext: vec![] }, RejectCode::UnknownMessage);
    let (_, events) = h.must_ok(B, CommandBody::EditMessage { chat: g, seq: Seq(2), ciphertext: vec![7] });
    assert_eq!(events, vec![EventBody::MessageEdited { chat: g, seq: Seq(3), target: Seq(2), ciphertext: vec![7] }]);
    let (_, events) = h.must_ok(A, CommandBody::SetReaction { chat: g, seq: Seq(2), reaction: "👍".into() });
    assert_eq!(events, vec![EventBody::ReactionSet { chat: g, seq: Seq(4), target: Seq(2), reaction: "👍".into() }]);
    h.must_reject(
        A,
        CommandBody::SetReaction { chat: g, seq: Seq(3), reaction: "x".into() },
        RejectCode::UnknownMessage,
    );
    h.must_reject(D, CommandBody::SetReaction { chat: g, seq: Seq(2), reaction: "x".into() }, RejectCode::NotMember);
    let (_, events) = h.must_ok(B, CommandBody::DeleteMessage { chat: g, seq: Seq(2) });
    assert_eq!(events, vec![EventBody::MessageDeleted { chat: g, seq: Seq(5), target: Seq(2) }]);
    h.must_reject(B, CommandBody::DeleteMessage { chat: g, seq: Seq(2) }, RejectCode::UnknownMessage);
    h.must_reject(
        A,
        CommandBody::SetReaction { chat: g, seq: Seq(2), reaction: "".into() },
        RejectCode::UnknownMessage,
    );
}

#[test]
fn messages_are_edited_and_deleted_only_within_the_edit_window() {
    assert_eq!(EDIT_WINDOW_MS, 48 * 60 * 60 * 1000);
    let mut h = Harness::new();
    let g = group_id(1);
    h.create_group(g, A, &[B]);
    h.send(g, A).unwrap(); // seq 2
    let sent_at = h.now_ms;
    h.send(g, B).unwrap(); // seq 3
    h.must_ok(A, CommandBody::AddMember { chat: g, member: C }); // seq 4: not a message
    let edit = |seq| CommandBody::EditMessage { chat: g, seq: Seq(seq), ciphertext: vec![1] };
    let delete = |seq| CommandBody::DeleteMessage { chat: g, seq: Seq(seq) };
    let react = |seq| CommandBody::SetReaction { chat: g, seq: Seq(seq), reaction: "+".into() };

    // At exactly the window's end, edits still count as recent.
    h.now_ms = sent_at + EDIT_WINDOW_MS - 10; // apply adds 10
    h.must_ok(A, edit(2)); // seq 5
                           // One millisecond later, at the command's own time (nothing was folded in
                           // between), the message is too old: for its sender and for anyone else.
    h.now_ms = sent_at + EDIT_WINDOW_MS - 9;
    let msg = h.must_reject(A, edit(2), RejectCode::Invalid);
    assert_eq!(msg, "message is too old to edit/delete");
    h.now_ms -= 10;
    h.must_reject(B, edit(2), RejectCode::Invalid);
    h.now_ms -= 10;
    h.must_reject(A, delete(2), RejectCode::Invalid);
    // A reaction on an old message is fine.
    h.now_ms -= 10;
    h.must_ok(C, react(2)); // seq 6, folded: seq 3 is old by the next command
                            // Old messages: edits and deletes are too old, reactions are fine; an old
                            // seq that was no message is still no message.
    h.must_reject(B, edit(3), RejectCode::Invalid);
    h.must_reject(B, delete(3), RejectCode::Invalid);
    h.must_ok(A, react(3)); // seq 7
    h.must_reject(A, react(1), RejectCode::UnknownMessage); // the group's creation
    h.must_reject(A, edit(4), RejectCode::UnknownMessage); // a member added
    h.must_ok(A, react(2)); // seq 8
                            // Seqs that never existed stay unknown.
    h.must_reject(A, edit(0), RejectCode::UnknownMessage);
    h.must_reject(A, delete(99), RejectCode::UnknownMessage);
    h.must_reject(A, react(0), RejectCode::UnknownMessage);
    h.must_reject(A, react(99), RejectCode::UnknownMessage);
    // Inside the window the old rules hold.
    h.send(g, C).unwrap(); // seq 9
    h.must_reject(A, edit(9), RejectCode::UnknownMessage); // not A's
    h.must_reject(A, edit(8), RejectCode::UnknownMessage); // a reaction, not a message
    h.must_reject(A, react(8), RejectCode::UnknownMessage);
    h.must_ok(C, delete(9)); // seq 10
    h.must_reject(A, react(9), RejectCode::UnknownMessage); // deleted
                                                            // Once the deleted message is old, deleting it is too old and reacting is fine.
    h.now_ms += EDIT_WINDOW_MS + 1;
    h.must_reject(C, delete(9), RejectCode::Invalid);
    h.must_ok(A, react(9));
}

#[test]
fn the_edit_window_survives_a_clock_that_goes_backwards() {
    let mut h = Harness::new();
    h.now_ms = 10 * EDIT_WINDOW_MS;
    let g = group_id(1);
    h.create_group(g, A, &[B]);
    h.send(g, A).unwrap(); // seq 2, at the newest time
                           // The leader's clock goes back by more than the window: seq 3 is old at once,
                           // while the earlier seq 2 is still editable.
    h.now_ms -= EDIT_WINDOW_MS + 100;
    h.send(g, B).unwrap(); // seq 3
    h.must_reject(B, CommandBody::EditMessage { chat: g, seq: Seq(3), ciphertext: vec![] }, RejectCode::Invalid);
    h.must_ok(A, CommandBody::EditMessage { chat: g, seq: Seq(2), ciphertext: vec![] }); // seq 4
    h.must_ok(A, CommandBody::SetReaction { chat: g, seq: Seq(3), reaction: "+".into() }); // seq 5
                                                                                           // Snapshots of that state round-trip.
    let bin = bincode::serialize(&h.state).unwrap();
    assert_eq!(bincode::deserialize::<PartitionState>(&bin).unwrap(), h.state);
}

#[test]
fn acks_are_monotone_and_read_implies_delivered() {
    let mut h = Harness::new();
    let g = group_id(1);
    h.create_group(g, A, &[B]);
    for _ in 0..4 {
        h.send(g, A).unwrap();
    } // last seq 5
    let ack = |kind, up_to| CommandBody::Ack { chat: g, kind, up_to_seq: Seq(up_to) };
    h.must_reject(B, ack(ReceiptKind::Delivered, 6), RejectCode::Invalid);
    h.must_reject(C, ack(ReceiptKind::Delivered, 1), RejectCode::NotMember);
    h.must_reject(
        B,
        CommandBody::Ack { chat: group_id(2), kind: ReceiptKind::Read, up_to_seq: Seq(0) },
        RejectCode::UnknownChat,
    );

    let (o, events) = h.must_ok(B, ack(ReceiptKind::Delivered, 3));
    assert_eq!(o, Outcome::Receipt { chat: g, up_to_seq: Seq(3) });
    assert_eq!(events, vec![EventBody::Receipt { chat: g, kind: ReceiptKind::Delivered, up_to_seq: Seq(3) }]);
    // Not advancing: no event, the current cursor.
    let (o, events) = h.must_ok(B, ack(ReceiptKind::Delivered, 2));
    assert_eq!((o, events), (Outcome::Receipt { chat: g, up_to_seq: Seq(3) }, vec![]));
    // Read 4 advances read and delivered.
    let (o, events) = h.must_ok(B, ack(ReceiptKind::Read, 4));
    assert_eq!(o, Outcome::Receipt { chat: g, up_to_seq: Seq(4) });
    assert_eq!(events.len(), 1);
    assert_eq!(h.state.cursors(&g, B, DeviceId(1)), Some(Cursors { delivered: Seq(4), read: Seq(4) }));
    let (o, events) = h.must_ok(B, ack(ReceiptKind::Delivered, 4));
    assert_eq!((o, events), (Outcome::Receipt { chat: g, up_to_seq: Seq(4) }, vec![]));
    // Cursors are per device.
    let (o, _) = h.run_on(B, 2, ack(ReceiptKind::Read, 1));
    assert_eq!(o, Ok(Outcome::Receipt { chat: g, up_to_seq: Seq(1) }));
    assert_eq!(h.state.cursors(&g, B, DeviceId(2)), Some(Cursors { delivered: Seq(1), read: Seq(1) }));
    // Delivered ahead of read: read may still catch up.
    h.must_ok(B, ack(ReceiptKind::Delivered, 5));
    let (o, _) = h.must_ok(B, ack(ReceiptKind::Read, 5));
    assert_eq!(o, Outcome::Receipt { chat: g, up_to_seq: Seq(5) });
    assert_eq!(h.state.cursors(&g, B, DeviceId(1)), Some(Cursors { delivered: Seq(5), read: Seq(5) }));

    // A retried ack (same client_msg_id) that advanced is natural idempotence, not dedup.
    let cmd = h.command(A, 1, ack(ReceiptKind::Read, 2));
    assert_eq!(h.apply(&cmd).0, Ok(Outcome::Receipt { chat: g, up_to_seq: Seq(2) }));
    h.must_ok(A, ack(ReceiptKind::Read, 5));
    assert_eq!(h.apply(&cmd), (Ok(Outcome::Receipt { chat: g, up_to_seq: Seq(5) }), vec![]));
}

#[test]
fn users_register_once_and_must_be_registered() {
    let mut h = Harness::new();
    h.must_reject(A, CommandBody::SetPresence { online: true, connection: 1 }, RejectCode::UnknownUser);
    h.must_reject(
        A,
        CommandBody::LinkDevice { device: DeviceId(1), identity_key: vec![1], name: "p".into(), token_hash: None },
        RejectCode::UnknownUser,
    );
    h.must_reject(B, CommandBody::ClaimPrekey { target: A, target_device: DeviceId(1) }, RejectCode::UnknownUser);
    let (o, events) = h.must_ok(A, CommandBody::RegisterUser { phone: "+15550001".into() });
    assert_eq!(o, Outcome::Done);
    assert_eq!(events, vec![EventBody::UserRegistered { user: A, phone: "+15550001".into() }]);
    assert_eq!(h.state.phone(A).as_deref(), Some("+15550001"));
    h.must_reject(A, CommandBody::RegisterUser { phone: "+1".into() }, RejectCode::AlreadyExists);
    h.must_ok(
        A,
        CommandBody::LinkDevice { device: DeviceId(1), identity_key: vec![1], name: "phone".into(), token_hash: None },
    );
    h.must_reject(
        A,
        CommandBody::LinkDevice { device: DeviceId(1), identity_key: vec![2], name: "x".into(), token_hash: None },
        RejectCode::AlreadyExists,
    );
    h.must_ok(
        A,
        CommandBody::LinkDevice { device: DeviceId(2), identity_key: vec![2], name: "laptop".into(), token_hash: None },
    );
    assert_eq!(h.state.devices(A), Some(vec![DeviceId(1), DeviceId(2)]));
    h.must_ok(A, CommandBody::UnlinkDevice { device: DeviceId(2) });
    h.must_reject(A, CommandBody::UnlinkDevice { device: DeviceId(2) }, RejectCode::Invalid);
    assert_eq!(h.state.devices(A), Some(vec![DeviceId(1)]));
    let (o, events) = h.must_ok(A, CommandBody::UpdateProfile { name: "Ann".into(), about: "hi".into(), avatar: None });
    assert_eq!(o, Outcome::Done);
    assert_eq!(events.len(), 1);
}

#[test]
fn each_prekey_is_claimed_exactly_once() {
    let mut h = Harness::new();
    h.register(A);
    let dev = DeviceId(1);
    let pk = |id: u32| Prekey { id, key: vec![id as u8; 4] };
    h.must_reject(A, CommandBody::UploadPrekeys { device: dev, prekeys: vec![pk(1)] }, RejectCode::Invalid);
    h.must_ok(A, CommandBody::LinkDevice { device: dev, identity_key: vec![9], name: "p".into(), token_hash: None });
    h.must_reject(A, CommandBody::UploadPrekeys { device: dev, prekeys: vec![pk(1), pk(1)] }, RejectCode::Invalid);
    h.must_reject(A, CommandBody::UploadPrekeys { device: dev, prekeys: vec![] }, RejectCode::Invalid);
    h.must_ok(A, CommandBody::UploadPrekeys { device: dev, prekeys: vec![pk(7), pk(5), pk(6)] });
    assert_eq!(h.state.unclaimed_prekeys(A, dev), Some(3));
    h.must_reject(A, CommandBody::UploadPrekeys { device: dev, prekeys: vec![pk(7)] }, RejectCode::Invalid);
    h.must_reject(A, CommandBody::UploadPrekeys { device: dev, prekeys: vec![pk(4)] }, RejectCode::Invalid);

    let claim = h.command(B, 1, CommandBody::ClaimPrekey { target: A, target_device: dev });
    let (r, events) = h.apply(&claim);
    assert_eq!(r, Ok(Outcome::PrekeyClaimed { user: A, device: dev, prekey: pk(5) }));
    assert_eq!(events, vec![EventBody::PrekeyClaimed { user: A, device: dev, prekey_id: 5, claimed_by: B }]);
    // A retry gets the same prekey, and nothing is claimed.
    assert_eq!(h.apply(&claim), (Ok(Outcome::PrekeyClaimed { user: A, device: dev, prekey: pk(5) }), vec![]));
    let (o, _) = h.must_ok(C, CommandBody::ClaimPrekey { target: A, target_device: dev });
    assert_eq!(o, Outcome::PrekeyClaimed { user: A, device: dev, prekey: pk(6) });
    let (o, _) = h.must_ok(B, CommandBody::ClaimPrekey { target: A, target_device: dev });
    assert_eq!(o, Outcome::PrekeyClaimed { user: A, device: dev, prekey: pk(7) });
    h.must_reject(B, CommandBody::ClaimPrekey { target: A, target_device: dev }, RejectCode::NoPrekeys);
    h.must_reject(B, CommandBody::ClaimPrekey { target: A, target_device: DeviceId(3) }, RejectCode::Invalid);

    // Unlinking drops unclaimed prekeys; ids stay above the old high-water mark after relinking.
    h.must_ok(A, CommandBody::UploadPrekeys { device: dev, prekeys: vec![pk(8)] });
    h.must_ok(A, CommandBody::UnlinkDevice { device: dev });
    h.must_ok(A, CommandBody::LinkDevice { device: dev, identity_key: vec![10], name: "p".into(), token_hash: None });
    assert_eq!(h.state.unclaimed_prekeys(A, dev), Some(0));
    h.must_reject(A, CommandBody::UploadPrekeys { device: dev, prekeys: vec![pk(5)] }, RejectCode::Invalid);
    h.must_ok(A, CommandBody::UploadPrekeys { device: dev, prekeys: vec![pk(9)] });
}

#[test]
fn presence_is_online_while_any_device_has_a_connection_and_a_late_offline_of_an_old_connection_changes_nothing() {
    let mut h = Harness::new();
    h.register(A);
    for d in [1, 2] {
        h.must_ok(
            A,
            CommandBody::LinkDevice { device: DeviceId(d), identity_key: vec![1], name: "d".into(), token_hash: None },
        );
    }
    let set = |online: bool, connection: u64| CommandBody::SetPresence { online, connection };
    let changed = |online: bool, device: u32, connection: u64, device_online: bool| {
        vec![EventBody::PresenceChanged { user: A, online, device: DeviceId(device), connection, device_online }]
    };
    let ok = |h: &mut Harness, device: u32, body: CommandBody| match h.run_on(A, device, body) {
        (Ok(o), events) => (o, events),
        (Err(r), _) => panic!("refused: {r}"),
    };
    assert_eq!(h.state.online(A), Some(false));
    // Offline of a device that is not online: nothing.
    assert_eq!(ok(&mut h, 1, set(false, 7)), (Outcome::Done, vec![]));
    // Device 1 comes online with connection 7: the user is online.
    assert_eq!(ok(&mut h, 1, set(true, 7)), (Outcome::Done, changed(true, 1, 7, true)));
    assert_eq!(ok(&mut h, 1, set(true, 7)), (Outcome::Done, vec![]), "a repeat");
    // Device 1 reconnects elsewhere (connection 8) before the old one's offline arrives.
    assert_eq!(ok(&mut h, 1, set(true, 8)), (Outcome::Done, changed(true, 1, 8, true)));
    assert_eq!(ok(&mut h, 1, set(false, 7)), (Outcome::Done, vec![]), "the old connection's late offline");
    assert_eq!(h.state.online(A), Some(true));
    // Device 2 too; then device 1 leaves: still online.
    assert_eq!(ok(&mut h, 2, set(true, 9)), (Outcome::Done, changed(true, 2, 9, true)));
    assert_eq!(ok(&mut h, 1, set(false, 8)), (Outcome::Done, changed(true, 1, 8, false)));
    assert_eq!(h.state.online(A), Some(true));
    // The last device leaves: offline.
    assert_eq!(ok(&mut h, 2, set(false, 9)), (Outcome::Done, changed(false, 2, 9, false)));
    assert_eq!(h.state.online(A), Some(false));
    // A device that is not linked cannot come online; an unregistered user neither.
    match h.run_on(A, 3, set(true, 1)) {
        (Err(r), events) => assert!(r.code == RejectCode::Invalid && events.is_empty(), "{r}"),
        other => panic!("accepted: {other:?}"),
    }
    h.must_reject(B, set(true, 1), RejectCode::UnknownUser);
}

#[test]
fn blocks_status_privacy_and_contacts() {
    let mut h = Harness::new();
    h.register(A);
    h.must_reject(A, CommandBody::Block { target: A }, RejectCode::Invalid);
    assert_eq!(h.must_ok(A, CommandBody::Unblock { target: B }), (Outcome::Done, vec![]));
    assert_eq!(h.must_ok(A, CommandBody::Block { target: B }).1, vec![EventBody::UserBlocked { user: A, target: B }]);
    assert_eq!(h.must_ok(A, CommandBody::Block { target: B }).1, vec![]);
    assert_eq!(h.state.blocked(A), Some(vec![B]));
    assert_eq!(
        h.must_ok(A, CommandBody::Unblock { target: B }).1,
        vec![EventBody::UserUnblocked { user: A, target: B }]
    );
    assert_eq!(h.state.blocked(A), Some(vec![]));

    let (_, events) = h.must_ok(
        A,
        CommandBody::PostStatus {
            status_id: 7,
            ciphertext: vec![1],
            media: None,
            acl: vec![C, A, B, C],
            audience: StatusAudience::OnlyShareWith,
            ttl_ms: 0,
        },
    );
    let at = h.now_ms;
    assert_eq!(
        events,
        vec![EventBody::StatusPosted {
            user: A,
            status_id: 7,
            ciphertext: vec![1],
            media: None,
            acl: vec![B, C],
            expires_at_ms: at + STATUS_TTL_MS,
            audience: StatusAudience::OnlyShareWith,
        }]
    );
    let (_, events) = h.must_ok(A, CommandBody::UpdateContacts { contacts: vec![D, B, A, D] });
    assert_eq!(events, vec![EventBody::ContactsUpdated { user: A, contacts: vec![B, D] }]);
    let (_, events) = h.must_ok(
        A,
        CommandBody::SetPrivacy {
            last_seen: Visibility::Contacts,
            profile_photo: Visibility::Everyone,
            about: Visibility::Nobody,
            read_receipts: false,
        },
    );
    assert_eq!(events.len(), 1);
}

#[test]
fn commands_of_other_partitions_are_refused() {
    let partitions = 8;
    let mut state = PartitionState::new(PartitionId(0), partitions);
    let mut out = Vec::new();
    let foreign = (1..100)
        .map(UserId)
        .find(|u| PartitionId::for_key(&Key::User(*u), partitions) != PartitionId(0))
        .expect("some user lives elsewhere");
    let local = (1..100)
        .map(UserId)
        .find(|u| PartitionId::for_key(&Key::User(*u), partitions) == PartitionId(0))
        .expect("some user lives here");
    let origin = |user| Origin { user, device: DeviceId(1), client_msg_id: ClientMsgId(1) };
    let register = |user| Command { origin: origin(user), body: CommandBody::RegisterUser { phone: "1".into() } };
    let r = state.apply(1, &register(foreign), &mut out).unwrap_err();
    assert_eq!(r.code, RejectCode::WrongPartition);
    assert!(out.is_empty());
    assert_eq!(state.apply(1, &register(local), &mut out), Ok(Outcome::Done));
    // ClaimPrekey belongs to the target's partition, whoever asks.
    let claim = Command {
        origin: origin(foreign),
        body: CommandBody::ClaimPrekey { target: local, target_device: DeviceId(1) },
    };
    assert_eq!(state.apply(2, &claim, &mut out).unwrap_err().code, RejectCode::Invalid);
}

#[test]
fn oversized_commands_are_invalid() {
    let mut h = Harness::new();
    h.register(A);
    let msg =
        h.must_reject(A, CommandBody::RegisterUser { phone: "9".repeat(MAX_PHONE_BYTES + 1) }, RejectCode::Invalid);
    assert!(msg.contains("phone"), "{msg}");
}

#[test]
fn snapshot_through_json_and_bincode() {
    let mut h = Harness::new();
    h.register(A);
    h.must_ok(
        A,
        CommandBody::LinkDevice { device: DeviceId(1), identity_key: vec![1], name: "p".into(), token_hash: None },
    );
    h.must_ok(A, CommandBody::UploadPrekeys { device: DeviceId(1), prekeys: vec![Prekey { id: 1, key: vec![1] }] });
    h.must_ok(B, CommandBody::ClaimPrekey { target: A, target_device: DeviceId(1) });
    h.create_group(group_id(1), A, &[B]);
    h.must_ok(B, CommandBody::Ack { chat: group_id(1), kind: ReceiptKind::Read, up_to_seq: Seq(1) });
    h.must_ok(A, send_direct(B));
    let json = serde_json::to_string(&h.state).unwrap();
    assert_eq!(serde_json::from_str::<PartitionState>(&json).unwrap(), h.state);
    let bin = bincode::serialize(&h.state).unwrap();
    assert_eq!(bincode::deserialize::<PartitionState>(&bin).unwrap(), h.state);
}

#[test]
fn sessions_need_a_linked_device_and_replace_each_other() {
    let mut h = Harness::new();
    let dev = DeviceId(1);
    h.must_reject(A, CommandBody::CreateSession { device: dev, token_hash: [1; 32] }, RejectCode::UnknownUser);
    h.register(A);
    h.must_reject(A, CommandBody::CreateSession { device: dev, token_hash: [1; 32] }, RejectCode::Invalid);
    assert_eq!(h.must_ok(A, CommandBody::RevokeSession { device: dev }), (Outcome::Done, vec![]));
    h.must_ok(A, CommandBody::LinkDevice { device: dev, identity_key: vec![1], name: "p".into(), token_hash: None });
    assert_eq!(h.state.session(A, dev), None);

    let (o, events) = h.must_ok(A, CommandBody::CreateSession { device: dev, token_hash: [1; 32] });
    assert_eq!(o, Outcome::Done);
    assert_eq!(events, vec![EventBody::SessionCreated { user: A, device: dev, token_hash: [1; 32] }]);
    assert_eq!(h.state.session(A, dev), Some([1; 32]));
    // A new session replaces the old one.
    h.must_ok(A, CommandBody::CreateSession { device: dev, token_hash: [2; 32] });
    assert_eq!(h.state.session(A, dev), Some([2; 32]));

    let (o, events) = h.must_ok(A, CommandBody::RevokeSession { device: dev });
    assert_eq!(o, Outcome::Done);
    assert_eq!(events, vec![EventBody::SessionRevoked { user: A, device: dev }]);
    assert_eq!(h.state.session(A, dev), None);
    assert_eq!(h.must_ok(A, CommandBody::RevokeSession { device: dev }), (Outcome::Done, vec![]));

    // Unlinking ends the session; relinking does not bring it back.
    h.must_ok(A, CommandBody::CreateSession { device: dev, token_hash: [3; 32] });
    h.must_ok(A, CommandBody::UnlinkDevice { device: dev });
    assert_eq!(h.state.session(A, dev), None);
    h.must_ok(A, CommandBody::LinkDevice { device: dev, identity_key: vec![1], name: "p".into(), token_hash: None });
    assert_eq!(h.state.session(A, dev), None);

    // A retried CreateSession appends nothing.
    let create = h.command(A, 1, CommandBody::CreateSession { device: dev, token_hash: [4; 32] });
    assert_eq!(h.apply(&create).1.len(), 1);
    assert_eq!(h.apply(&create), (Ok(Outcome::Done), vec![]));
}

fn register_device(device: u32, token: u8, pin: Option<[u8; 32]>) -> CommandBody {
    CommandBody::RegisterDevice {
        phone: "+15550001".into(),
        device: DeviceId(device),
        identity_key: vec![1],
        name: "d".into(),
        token_hash: [token; 32],
        pin_hash: pin,
    }
}

#[test]
fn register_device_registers_links_and_opens_a_session_in_one_command() {
    let mut h = Harness::new();
    let (o, events) = h.must_ok(A, register_device(7, 1, None));
    assert_eq!(o, Outcome::Done);
    assert_eq!(
        events,
        vec![
            EventBody::UserRegistered { user: A, phone: "+15550001".into() },
            EventBody::DeviceLinked { user: A, device: DeviceId(7), identity_key: vec![1], name: "d".into() },
            EventBody::SessionCreated { user: A, device: DeviceId(7), token_hash: [1; 32] },
        ]
    );
    assert_eq!(h.state.session(A, DeviceId(7)), Some([1; 32]));
    // A returning user: no second UserRegistered; a taken device id is refused whole.
    let (_, events) = h.must_ok(A, register_device(8, 2, None));
    assert_eq!(events.len(), 2);
    h.must_reject(A, register_device(8, 3, None), RejectCode::AlreadyExists);
    assert_eq!(h.state.devices(A), Some(vec![DeviceId(7), DeviceId(8)]));
    assert_eq!(h.state.session(A, DeviceId(8)), Some([2; 32]));
}

#[test]
fn a_registration_pin_is_required_to_register_again() {
    let mut h = Harness::new();
    h.must_ok(A, register_device(1, 1, None));
    h.must_reject(B, CommandBody::SetRegistrationPin { pin_hash: Some([5; 32]) }, RejectCode::UnknownUser);
    let (_, events) = h.must_ok(A, CommandBody::SetRegistrationPin { pin_hash: Some([5; 32]) });
    assert_eq!(events, vec![EventBody::RegistrationPinSet { user: A, pin_hash: Some([5; 32]) }]);
    assert_eq!(h.state.registration_pin(A), Some([5; 32]));
    // Setting the same hash again changes nothing.
    assert_eq!(h.must_ok(A, CommandBody::SetRegistrationPin { pin_hash: Some([5; 32]) }).1, vec![]);
    // Without it, or with another, nothing is linked.
    h.must_reject(A, register_device(2, 2, None), RejectCode::PinRequired);
    let msg = h.must_reject(A, register_device(2, 2, Some([6; 32])), RejectCode::PinRequired);
    assert!(msg.contains("wrong"), "{msg}");
    assert_eq!(h.state.devices(A), Some(vec![DeviceId(1)]));
    h.must_ok(A, register_device(2, 2, Some([5; 32])));
    assert_eq!(h.state.devices(A), Some(vec![DeviceId(1), DeviceId(2)]));
    // Cleared: registering needs no PIN again.
    h.must_ok(A, CommandBody::SetRegistrationPin { pin_hash: None });
    assert_eq!(h.state.registration_pin(A), None);
    h.must_ok(A, register_device(3, 3, None));
}

#[test]
fn otp_failures_lock_the_phone_registered_or_not() {
    let mut h = Harness::new();
    // B is not registered: its phone's failures are counted all the same.
    for i in 0..OTP_FAILURES_MAX {
        assert!(!h.state.phone_locked(B, h.now_ms), "locked after {i}");
        let (_, events) = h.must_ok(B, CommandBody::RecordOtpFailure);
        assert_eq!(events, vec![EventBody::OtpFailed { user: B }]);
    }
    assert!(h.state.phone_locked(B, h.now_ms));
    assert!(!h.state.is_registered(B));
    // Locked: no more failures recorded, no registration even with the right code.
    h.must_reject(B, CommandBody::RecordOtpFailure, RejectCode::Locked);
    let msg = h.must_reject(B, register_device(1, 1, None), RejectCode::Locked);
    assert!(msg.contains("locked"), "{msg}");
    assert!(h.state.devices(B).is_none());
    // Other phones are not affected.
    h.must_ok(C, register_device(1, 1, None));
    // The lock ends after OTP_LOCK_MS.
    h.now_ms += OTP_LOCK_MS;
    h.must_ok(B, register_device(1, 1, None));
    assert!(h.state.is_registered(B));
}

#[test]
fn otp_failures_are_counted_over_a_sliding_window() {
    let mut h = Harness::new();
    for _ in 0..OTP_FAILURES_MAX - 1 {
        h.must_ok(D, CommandBody::RecordOtpFailure);
    }
    // Hours later the old failures no longer count.
    h.now_ms += OTP_FAILURE_WINDOW_MS;
    for _ in 0..OTP_FAILURES_MAX - 1 {
        h.must_ok(D, CommandBody::RecordOtpFailure);
    }
    assert!(!h.state.phone_locked(D, h.now_ms));
    assert_eq!(h.state.otp_guard(D).failures.len(), OTP_FAILURES_MAX - 1);
    h.must_ok(D, CommandBody::RecordOtpFailure);
    assert!(h.state.phone_locked(D, h.now_ms));
    // Replaying the events gives the same lock (fold equals apply).
    let mut replayed = PartitionState::new(PartitionId(0), 1);
    let mut h2 = Harness::new();
    let mut events = Vec::new();
    for i in 0..OTP_FAILURES_MAX as u64 {
        let cmd = h2.command(D, 0, CommandBody::RecordOtpFailure);
        h2.state.apply(1000 + i, &cmd, &mut events).unwrap();
    }
    for e in &events {
        replayed.fold(e);
    }
    assert_eq!(replayed, h2.state);
    assert!(replayed.phone_locked(D, 1000 + OTP_FAILURES_MAX as u64));
}

#[test]
fn a_blocked_user_cannot_send_direct_messages() {
    let mut h = Harness::new();
    let chat = ChatId::direct(A, B);
    // A blocks B before they ever talked: the chat need not exist.
    let (o, events) = h.must_ok(A, CommandBody::SetDirectBlock { peer: B, blocked: true });
    assert_eq!((o, events), (Outcome::Done, vec![EventBody::DirectBlockSet { chat, blocked: true }]));
    assert!(h.state.blocks_in_chat(&chat, A));
    assert!(!h.state.blocks_in_chat(&chat, B));
    assert_eq!(
        h.must_ok(A, CommandBody::SetDirectBlock { peer: B, blocked: true }).1,
        vec![],
        "blocking twice is a no-op"
    );
    let msg = h.must_reject(B, send_direct(A), RejectCode::Blocked);
    assert!(msg.contains("does not accept"), "{msg}");
    assert_eq!(h.state.last_seq(&chat), None, "nothing was appended");
    // The blocker may still write; others are not affected.
    h.must_ok(A, send_direct(B));
    h.must_ok(C, send_direct(A));
    h.must_ok(A, CommandBody::SetDirectBlock { peer: B, blocked: false });
    let (o, _) = h.must_ok(B, send_direct(A));
    assert_eq!(o, Outcome::Chat { chat, seq: Seq(2) });
    // Nonsense is refused.
    h.must_reject(A, CommandBody::SetDirectBlock { peer: A, blocked: true }, RejectCode::Invalid);
}

fn post(status_id: u64, audience: StatusAudience, acl: Vec<UserId>, ttl_ms: u64) -> CommandBody {
    CommandBody::PostStatus { status_id, ciphertext: vec![9], media: None, acl, audience, ttl_ms }
}

fn view(author: UserId, status_id: u64) -> CommandBody {
    CommandBody::ViewStatus { author, status_id }
}

#[test]
fn status_audiences_views_and_expiry() {
    let mut h = Harness::new();
    for u in [A, B, C, D] {
        h.register(u);
    }
    // A's contacts: B and C.
    h.must_ok(A, CommandBody::UpdateContacts { contacts: vec![B, C] });
    assert_eq!(h.state.contacts(A), vec![B, C]);
    h.must_ok(A, post(1, StatusAudience::Contacts, vec![], 0));
    h.must_ok(A, post(2, StatusAudience::ContactsExcept, vec![C], 0));
    h.must_ok(A, post(3, StatusAudience::OnlyShareWith, vec![D], 0));
    h.must_reject(A, post(3, StatusAudience::Contacts, vec![], 0), RejectCode::AlreadyExists);
    // Contacts: B and C, not D.
    assert_eq!(h.must_ok(B, view(A, 1)).1, vec![EventBody::StatusViewed { user: A, status_id: 1, viewer: B }]);
    assert_eq!(h.must_ok(C, view(A, 1)).1.len(), 1);
    h.must_reject(D, view(A, 1), RejectCode::UnknownStatus);
    // Except C.
    assert_eq!(h.must_ok(B, view(A, 2)).1.len(), 1);
    h.must_reject(C, view(A, 2), RejectCode::UnknownStatus);
    h.must_reject(D, view(A, 2), RejectCode::UnknownStatus);
    // Only D.
    assert_eq!(h.must_ok(D, view(A, 3)).1.len(), 1);
    h.must_reject(B, view(A, 3), RejectCode::UnknownStatus);
    // A second view, and the author's own, log nothing.
    assert_eq!(h.must_ok(B, view(A, 1)).1, vec![]);
    assert_eq!(h.must_ok(A, view(A, 1)).1, vec![]);
    assert_eq!(h.state.status(A, 1).unwrap().viewers, vec![B, C]);
    // Unknown ids.
    h.must_reject(B, view(A, 99), RejectCode::UnknownStatus);
    h.must_reject(B, view(D, 1), RejectCode::UnknownStatus);
    // A blocked contact sees nothing.
    h.must_ok(A, CommandBody::Block { target: C });
    h.must_reject(C, view(A, 1), RejectCode::UnknownStatus);

    // Expiry: a post with a short ttl; past it, viewing is `Expired` and
    // changes nothing.
    h.must_ok(A, post(4, StatusAudience::Contacts, vec![], 1_000));
    let expires = h.state.status(A, 4).unwrap().expires_at_ms;
    assert_eq!(expires, h.now_ms + 1_000);
    h.now_ms = expires;
    let before = h.state.clone();
    let msg = h.must_reject(B, view(A, 4), RejectCode::Expired);
    assert!(msg.contains("expired"), "{msg}");
    assert_eq!(h.state.status(A, 4), before.status(A, 4));
    // A ttl above 24 h is 24 h.
    h.must_ok(A, post(5, StatusAudience::Contacts, vec![], 10 * STATUS_TTL_MS));
    assert_eq!(h.state.status(A, 5).unwrap().expires_at_ms, h.now_ms + STATUS_TTL_MS);
    // Compaction: a day after its expiry, A's next post deletes the record.
    h.now_ms = expires + DAY_MS;
    h.must_ok(A, post(6, StatusAudience::Contacts, vec![], 0));
    assert_eq!(h.state.status(A, 4), None);
    assert!(h.state.status(A, 6).is_some());
    h.must_reject(B, view(A, 4), RejectCode::UnknownStatus);
}

#[test]
fn contact_lookups_are_limited_per_day() {
    let mut h = Harness::new();
    h.register(A);
    h.must_reject(A, CommandBody::RecordContactLookup { hashes: 0 }, RejectCode::Invalid);
    h.must_ok(A, CommandBody::RecordContactLookup { hashes: 1500 });
    h.must_ok(A, CommandBody::RecordContactLookup { hashes: CONTACT_LOOKUPS_PER_DAY - 1500 });
    let msg = h.must_reject(A, CommandBody::RecordContactLookup { hashes: 1 }, RejectCode::RateLimited);
    assert!(msg.contains("00:00 UTC"), "{msg}");
    assert_eq!(h.state.contact_lookups(A, h.now_ms), CONTACT_LOOKUPS_PER_DAY);
    // The next UTC day the allowance is back.
    h.now_ms = (h.now_ms / DAY_MS + 1) * DAY_MS;
    h.must_ok(A, CommandBody::RecordContactLookup { hashes: 1 });
    assert_eq!(h.state.contact_lookups(A, h.now_ms), 1);
}

#[test]
fn a_recorded_upload_is_a_media_uploaded_event_of_the_uploader_and_an_empty_one_is_refused() {
    let mut h = Harness::new();
    h.register(A);
    let (_, events) = h.must_ok(A, CommandBody::RecordMedia { blake3: [7; 32], size: 1000 });
    assert_eq!(events, vec![EventBody::MediaUploaded { user: A, blake3: [7; 32], size: 1000 }]);
    h.must_reject(A, CommandBody::RecordMedia { blake3: [7; 32], size: 0 }, RejectCode::Invalid);
}
