//! The checker is itself tested: a clean history passes, and each planted
//! anomaly is reported under its invariant (and the clean parts stay clean).

use chorus_schema::{ChatId, ClientMsgId, DeviceId, ReceiptKind, Seq, UserId};

use super::{check, check_views, Invariant, Verdict};
use crate::history::{ChatSetup, Entry, History, Item, Observation, Op, Value};

const A: UserId = UserId(1);
const B: UserId = UserId(2);
const C: UserId = UserId(3);
const D1: DeviceId = DeviceId(1);

fn chat() -> ChatId {
    ChatId::from_bytes([7; 16])
}

/// Builds histories: sends by A, B in turn, then final reads by everyone.
struct Builder {
    entries: Vec<Entry>,
    index: u64,
    time: u64,
}

impl Builder {
    fn new() -> Self {
        Builder {
            entries: vec![Entry::Setup {
                chats: vec![ChatSetup { chat: chat(), members: vec![A, B, C] }],
                devices: vec![(A, D1), (B, D1), (C, D1)],
            }],
            index: 0,
            time: 0,
        }
    }

    fn tick(&mut self) -> u64 {
        self.time += 10;
        self.time
    }

    fn op(&mut self, op: Op, result: Result<Value, &str>, info: bool) -> &mut Self {
        self.index += 1;
        let (index, process) = (self.index, self.index % 4);
        let t = self.tick();
        self.entries.push(Entry::Invoke { index, process, time_ns: t, op });
        let t = self.tick();
        self.entries.push(match (result, info) {
            (Ok(value), _) => Entry::Ok { index, process, time_ns: t, value },
            (Err(e), true) => Entry::Info { index, process, time_ns: t, error: e.into() },
            (Err(e), false) => Entry::Fail { index, process, time_ns: t, error: e.into() },
        });
        self
    }

    fn send(&mut self, sender: UserId, cmid: u64, seq: u64) -> &mut Self {
        self.op(
            Op::Send { chat: chat(), sender, device: D1, client_msg_id: ClientMsgId(cmid) },
            Ok(Value::Sent { chat: chat(), seq: Seq(seq) }),
            false,
        )
    }

    fn read(&mut self, user: UserId, items: Vec<Item>) -> &mut Self {
        self.op(Op::Read { user, device: D1, chat: chat() }, Ok(Value::Read { items }), false)
    }

    fn observe(&mut self, o: Observation) -> &mut Self {
        let t = self.tick();
        self.entries.push(Entry::Observe { process: 99, time_ns: t, observation: o });
        self
    }

    fn history(&self) -> History {
        History { entries: self.entries.clone() }
    }
}

fn msg(seq: u64, sender: UserId, cmid: u64) -> Item {
    Item { seq: Seq(seq), message: Some((sender, ClientMsgId(cmid))) }
}

fn clean_items() -> Vec<Item> {
    vec![msg(1, A, 11), msg(2, B, 21), msg(3, A, 12)]
}

fn clean() -> Builder {
    let mut b = Builder::new();
    b.send(A, 11, 1).send(B, 21, 2).send(A, 12, 3);
    b
}

/// The planted anomaly is reported under `inv`, and under no other invariant.
fn only(v: &Verdict, inv: Invariant) {
    reported(v, inv, &[]);
}

/// The planted anomaly is reported under `inv`; it may also, legitimately,
/// break the invariants in `also`, and no others.
fn reported(v: &Verdict, inv: Invariant, also: &[Invariant]) {
    assert!(!v.of(inv).is_empty(), "expected a {inv:?} anomaly, verdict: {:#?}", v.anomalies);
    for other in Invariant::ALL.iter().filter(|i| **i != inv && !also.contains(i)) {
        assert!(v.of(*other).is_empty(), "planted {inv:?} also reported as {other:?}: {:#?}", v.anomalies);
    }
}

#[test]
fn clean_history_passes_and_roundtrips_as_jsonl() {
    let mut b = clean();
    for u in [A, B, C] {
        b.read(u, clean_items());
    }
    b.observe(Observation::Receipt {
        viewer: (A, D1),
        chat: chat(),
        of: B,
        kind: ReceiptKind::Delivered,
        up_to_seq: Seq(1),
    });
    b.observe(Observation::Receipt {
        viewer: (A, D1),
        chat: chat(),
        of: B,
        kind: ReceiptKind::Read,
        up_to_seq: Seq(1),
    });
    b.observe(Observation::Deliver { user: C, device: D1, chat: chat(), item: msg(1, A, 11) });
    let h = b.history();
    let v = check(&h);
    assert!(v.is_valid(), "{:#?}", v.anomalies);
    assert_eq!((v.ok, v.fail, v.info), (6, 0, 0));
    let parsed = History::from_jsonl(h.to_jsonl().as_bytes()).unwrap();
    assert_eq!(parsed, h);
}

#[test]
fn lost_acked_send_is_reported() {
    let mut b = clean();
    b.read(A, clean_items()).read(B, clean_items()).read(C, vec![msg(1, A, 11), msg(2, B, 21)]);
    let v = check(&b.history());
    only(&v, Invariant::Lost);
    assert!(v.of(Invariant::Lost)[0].detail.contains("seq 3"), "{:?}", v.of(Invariant::Lost));
}

#[test]
fn missing_final_read_is_reported_as_unaccounted() {
    let mut b = clean();
    b.read(A, clean_items()).read(B, clean_items());
    let v = check(&b.history());
    assert!(v.of(Invariant::Lost).iter().any(|a| a.detail.contains("no final read")));
}

#[test]
fn reorder_is_reported() {
    let mut b = clean();
    b.read(A, clean_items()).read(B, clean_items()).read(C, vec![msg(2, B, 21), msg(1, A, 11), msg(3, A, 12)]);
    only(&check(&b.history()), Invariant::Order);
}

#[test]
fn readers_disagreeing_on_a_seq_is_reported() {
    let mut b = clean();
    b.read(A, clean_items()).read(B, clean_items()).read(C, vec![msg(1, A, 11), msg(2, A, 12), msg(3, B, 21)]);
    // C also lacks the acked messages where they were acked, and so sees them twice over.
    reported(&check(&b.history()), Invariant::Order, &[Invariant::Lost, Invariant::Retry, Invariant::Duplicate]);
}

#[test]
fn gap_is_reported() {
    let mut b = Builder::new();
    b.send(A, 11, 1).send(A, 12, 3);
    let items = vec![msg(1, A, 11), msg(3, A, 12)];
    b.read(A, items.clone()).read(B, items.clone()).read(C, items);
    let v = check(&b.history());
    assert!(v.of(Invariant::Order).iter().any(|a| a.detail.contains("gap")), "{:#?}", v.anomalies);
}

#[test]
fn duplicate_is_reported() {
    let mut b = clean();
    let dup = vec![msg(1, A, 11), msg(2, B, 21), msg(3, A, 12), msg(4, A, 11)];
    b.read(A, dup.clone()).read(B, dup.clone()).read(C, dup);
    // The copy also stands away from where its send was acked.
    reported(&check(&b.history()), Invariant::Duplicate, &[Invariant::Retry]);
}

#[test]
fn unknown_outcome_send_may_appear_once_but_not_twice() {
    let mut b = clean();
    b.op(Op::Send { chat: chat(), sender: B, device: D1, client_msg_id: ClientMsgId(22) }, Err("timeout"), true);
    let once = vec![msg(1, A, 11), msg(2, B, 21), msg(3, A, 12), msg(4, B, 22)];
    let mut ok = Builder { entries: b.entries.clone(), index: b.index, time: b.time };
    ok.read(A, once.clone()).read(B, once.clone()).read(C, once);
    let v = check(&ok.history());
    assert!(v.is_valid(), "{:#?}", v.anomalies);
    assert_eq!(v.info, 1);
    let twice = vec![msg(1, A, 11), msg(2, B, 21), msg(3, A, 12), msg(4, B, 22), msg(5, B, 22)];
    b.read(A, twice.clone()).read(B, twice.clone()).read(C, twice);
    only(&check(&b.history()), Invariant::Duplicate);
}

#[test]
fn phantom_and_failed_send_appearing_are_reported() {
    let mut b = clean();
    b.op(Op::Send { chat: chat(), sender: B, device: D1, client_msg_id: ClientMsgId(23) }, Err("refused"), false);
    let items = vec![msg(1, A, 11), msg(2, B, 21), msg(3, A, 12), msg(4, B, 23), msg(5, C, 99)];
    b.read(A, items.clone()).read(B, items.clone()).read(C, items);
    let v = check(&b.history());
    let details: Vec<&str> = v.of(Invariant::Phantom).iter().map(|a| a.detail.as_str()).collect();
    assert!(details.iter().any(|d| d.contains("failed")), "{details:?}");
    assert!(details.iter().any(|d| d.contains("never sent")), "{details:?}");
}

#[test]
fn post_removal_delivery_and_non_member_send_are_reported() {
    let mut b = clean();
    b.op(Op::RemoveMember { chat: chat(), actor: A, member: C }, Ok(Value::MemberChanged { seq: Seq(4) }), false);
    b.send(A, 13, 5);
    b.send(C, 31, 6); // C is no longer a member: must have been refused
    let all = vec![
        msg(1, A, 11),
        msg(2, B, 21),
        msg(3, A, 12),
        Item { seq: Seq(4), message: None },
        msg(5, A, 13),
        msg(6, C, 31),
    ];
    b.read(A, all.clone()).read(B, all.clone()).read(C, all);
    let v = check(&b.history());
    let details: Vec<&str> = v.of(Invariant::Removal).iter().map(|a| a.detail.as_str()).collect();
    assert!(details.iter().any(|d| d.contains("received seq 5")), "{details:?}");
    assert!(details.iter().any(|d| d.contains("non-member")), "{details:?}");
    assert!(!details.iter().any(|d| d.contains("received seq 4")), "C gets its own removal: {details:?}");
}

#[test]
fn receipts_going_backwards_or_read_beyond_delivered_are_reported() {
    let mut b = clean();
    for u in [A, B, C] {
        b.read(u, clean_items());
    }
    let r = |kind, s| Observation::Receipt { viewer: (A, D1), chat: chat(), of: B, kind, up_to_seq: Seq(s) };
    b.observe(r(ReceiptKind::Delivered, 3)).observe(r(ReceiptKind::Delivered, 2));
    b.observe(Observation::Receipt {
        viewer: (A, D1),
        chat: chat(),
        of: C,
        kind: ReceiptKind::Read,
        up_to_seq: Seq(3),
    });
    let v = check(&b.history());
    let details: Vec<&str> = v.of(Invariant::Receipts).iter().map(|a| a.detail.as_str()).collect();
    assert!(details.iter().any(|d| d.contains("go back")), "{details:?}");
    assert!(details.iter().any(|d| d.contains("delivered only")), "{details:?}");
}

#[test]
fn retry_acked_at_two_places_is_reported() {
    let mut b = clean();
    b.send(A, 11, 4); // the retry of cmid 11 acked at another seq
    for u in [A, B, C] {
        b.read(u, clean_items());
    }
    // Nobody has seq 4, which was acked.
    reported(&check(&b.history()), Invariant::Retry, &[Invariant::Lost]);
}

#[test]
fn real_time_order_violation_is_reported() {
    let mut b = Builder::new();
    b.send(A, 11, 2).send(B, 21, 1); // B invoked after A was acked, yet ordered first
    let items = vec![msg(1, B, 21), msg(2, A, 11)];
    for u in [A, B, C] {
        b.read(u, items.clone());
    }
    only(&check(&b.history()), Invariant::RealTime);
}

#[test]
fn live_stream_duplicate_is_reported() {
    let mut b = clean();
    for u in [A, B, C] {
        b.read(u, clean_items());
    }
    let d = |s, cmid| Observation::Deliver { user: B, device: D1, chat: chat(), item: msg(s, A, cmid) };
    b.observe(d(1, 11)).observe(d(1, 11));
    only(&check(&b.history()), Invariant::Order);
}

#[test]
fn views_differences_are_reported() {
    let live = [("a".to_string(), serde_json::json!(1)), ("b".to_string(), serde_json::json!(2))].into_iter().collect();
    let rebuilt =
        [("a".to_string(), serde_json::json!(1)), ("c".to_string(), serde_json::json!(3))].into_iter().collect();
    let v = check_views(&live, &rebuilt);
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(check_views(&live, &live).is_empty());
}

#[test]
fn retry_acked_with_its_first_attempts_seq_is_not_a_real_time_violation() {
    // A's first attempt of cmid 11 times out but lands at seq 1; B's send is
    // acked at seq 2; A's retry of cmid 11 is invoked after that and acked
    // with the original seq 1. Real-time order holds: the send began first.
    let mut b = Builder::new();
    b.op(Op::Send { chat: chat(), sender: A, device: D1, client_msg_id: ClientMsgId(11) }, Err("timeout"), true);
    b.send(B, 21, 2).send(A, 11, 1);
    let items = vec![msg(1, A, 11), msg(2, B, 21)];
    for u in [A, B, C] {
        b.read(u, items.clone());
    }
    let v = check(&b.history());
    assert!(v.is_valid(), "{:#?}", v.anomalies);
    // Without the timed-out first attempt it is a violation.
    let mut b = Builder::new();
    b.send(B, 21, 2).send(A, 11, 1);
    for u in [A, B, C] {
        b.read(u, items.clone());
    }
    only(&check(&b.history()), Invariant::RealTime);
}

// ---- what devices observe and hold (SDK executor) --------------------------------

impl Builder {
    fn device_read(&mut self, user: UserId, items: Vec<Item>) -> &mut Self {
        self.op(Op::DeviceRead { user, device: D1, chat: chat() }, Ok(Value::Read { items }), false)
    }

    fn live(&mut self, user: UserId, item: Item) -> &mut Self {
        self.observe(Observation::Deliver { user, device: D1, chat: chat(), item })
    }

    fn receipt_tick(&mut self, viewer: UserId, kind: ReceiptKind, s: u64) -> &mut Self {
        self.observe(Observation::Tick { viewer: (viewer, D1), chat: chat(), kind, up_to_seq: Seq(s) })
    }
}

/// What `user`'s only device holds of `items`: not its own sends, no roster items.
fn held_by(user: UserId, items: &[Item]) -> Vec<Item> {
    items.iter().copied().filter(|i| i.message.is_some_and(|(s, _)| s != user)).collect()
}

/// The clean history plus what devices saw: log reads, devices' own reads,
/// live deliveries in order (each device gets the others' messages), and
/// receipt ticks of A's messages.
fn sdk_clean() -> Builder {
    let mut b = clean();
    b.live(B, msg(1, A, 11)).live(C, msg(1, A, 11)).receipt_tick(A, ReceiptKind::Delivered, 1);
    b.live(A, msg(2, B, 21)).live(C, msg(2, B, 21)).receipt_tick(A, ReceiptKind::Read, 1);
    b.live(B, msg(3, A, 12)).live(C, msg(3, A, 12)).receipt_tick(A, ReceiptKind::Delivered, 3).receipt_tick(
        A,
        ReceiptKind::Read,
        3,
    );
    for u in [A, B, C] {
        b.read(u, clean_items());
    }
    for u in [A, B, C] {
        b.device_read(u, held_by(u, &clean_items()));
    }
    b
}

#[test]
fn clean_sdk_history_passes() {
    let v = check(&sdk_clean().history());
    assert!(v.is_valid(), "{:#?}", v.anomalies);
}

#[test]
fn live_delivery_out_of_seq_order_is_reported() {
    let mut b = sdk_clean();
    b.live(A, msg(2, B, 21)); // again, after seq 2 (and in a stream that was at 2)
    b.live(B, msg(1, A, 11)); // seq 1 after seq 3
    let v = check(&b.history());
    only(&v, Invariant::Order);
    assert_eq!(v.of(Invariant::Order).len(), 2, "{:#?}", v.anomalies);
}

#[test]
fn live_phantom_is_reported() {
    let mut b = sdk_clean();
    b.live(C, msg(4, B, 99)); // never sent
                              // The log does not give it to C either.
    reported(&check(&b.history()), Invariant::Phantom, &[Invariant::Removal]);
}

#[test]
fn live_delivery_away_from_its_acked_seq_is_reported() {
    let mut b = sdk_clean();
    b.live(C, msg(4, A, 12)); // acked at seq 3
    let v = check(&b.history());
    reported(&v, Invariant::Retry, &[Invariant::Duplicate, Invariant::Removal]);
    assert!(v.of(Invariant::Retry)[0].detail.contains("acked at seq 3 but stands at seq 4"), "{:#?}", v.anomalies);
}

#[test]
fn live_delivery_after_removal_is_reported() {
    let mut b = clean();
    b.op(Op::RemoveMember { chat: chat(), actor: A, member: C }, Ok(Value::MemberChanged { seq: Seq(4) }), false);
    b.send(A, 13, 5);
    b.live(B, msg(1, A, 11)).live(B, msg(3, A, 12)).live(B, msg(5, A, 13));
    b.live(C, msg(1, A, 11)).live(C, msg(2, B, 21)).live(C, msg(3, A, 12));
    b.live(C, msg(5, A, 13)); // C was removed at seq 4
    let all = vec![msg(1, A, 11), msg(2, B, 21), msg(3, A, 12), Item { seq: Seq(4), message: None }, msg(5, A, 13)];
    b.read(A, all.clone()).read(B, all.clone()).read(C, all[..4].to_vec());
    b.device_read(A, held_by(A, &all)).device_read(B, held_by(B, &all)).device_read(C, held_by(C, &all[..4]));
    let v = check(&b.history());
    only(&v, Invariant::Removal);
    let details: Vec<&str> = v.of(Invariant::Removal).iter().map(|a| a.detail.as_str()).collect();
    assert!(details.iter().any(|d| d.contains("received seq 5")), "{details:?}");
    assert!(details.iter().any(|d| d.contains("live stream has seq 5")), "{details:?}");
}

#[test]
fn device_missing_a_message_the_log_gives_it_is_reported() {
    let mut b = clean();
    // B's send of unknown outcome landed at seq 4: every other device must have it.
    b.op(Op::Send { chat: chat(), sender: B, device: D1, client_msg_id: ClientMsgId(22) }, Err("timeout"), true);
    let all = vec![msg(1, A, 11), msg(2, B, 21), msg(3, A, 12), msg(4, B, 22)];
    for u in [A, B, C] {
        b.read(u, all.clone());
    }
    b.device_read(A, held_by(A, &all)).device_read(B, held_by(B, &all)).device_read(C, held_by(C, &all[..3]));
    let v = check(&b.history());
    only(&v, Invariant::Lost);
    assert!(v.of(Invariant::Lost)[0].detail.contains("lacks seq 4"), "{:#?}", v.anomalies);
}

#[test]
fn device_holding_its_own_send_is_reported() {
    let mut b = clean();
    for u in [A, B, C] {
        b.read(u, clean_items());
    }
    b.device_read(A, clean_items())
        .device_read(B, held_by(B, &clean_items()))
        .device_read(C, held_by(C, &clean_items()));
    let v = check(&b.history());
    only(&v, Invariant::Removal);
    assert!(v.of(Invariant::Removal).iter().all(|a| a.detail.contains("own send")), "{:#?}", v.anomalies);
}

#[test]
fn ticks_going_back_or_at_no_message_are_reported() {
    let mut b = sdk_clean();
    b.receipt_tick(A, ReceiptKind::Delivered, 1); // the read tick 3 counts as delivered up to 3
    let v = check(&b.history());
    only(&v, Invariant::Receipts);
    assert!(v.of(Invariant::Receipts)[0].detail.contains("after its ticks had reached 3"), "{:#?}", v.anomalies);

    let mut b = sdk_clean();
    b.receipt_tick(B, ReceiptKind::Delivered, 3); // seq 3 is A's message, not B's
    let v = check(&b.history());
    only(&v, Invariant::Receipts);
    assert!(v.of(Invariant::Receipts)[0].detail.contains("no message of"), "{:#?}", v.anomalies);
}

#[test]
fn a_hole_in_a_live_stream_is_reported() {
    let mut b = clean();
    b.live(C, msg(1, A, 11)).live(C, msg(3, A, 12)); // seq 2 never handed to C's app
    for u in [A, B, C] {
        b.read(u, clean_items());
    }
    for u in [A, B, C] {
        b.device_read(u, held_by(u, &clean_items()));
    }
    let v = check(&b.history());
    only(&v, Invariant::Lost);
    assert!(v.of(Invariant::Lost)[0].detail.contains("skipped seq 2"), "{:#?}", v.anomalies);
}
