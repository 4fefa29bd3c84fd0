//! The SDK's connection core (`chorus_client::conn::Core`) against the edge's
//! session core (`Session`), in-process and under a virtual clock: frames
//! go through their real encoding, the edges' sessions are the real ones,
//! and only the log (a deduplicating in-memory log of direct chats), the
//! views (token check, sync, gap fill) and the bus (fan-out to the sessions
//! of a chat's users) are small fakes here. The network is a queue per link
//! that a test can cut, losing what is in flight in both directions.
//!
//! What it checks, deterministically: a send whose answer is lost is written
//! again with the same `client_msg_id` after the reconnect and committed
//! once; each device's messages come in seq order per chat, each
//! `(chat, seq)` once, across reconnects (with syncs that repeat history:
//! the SDK drops the repeats); the reconnect backoff grows up to its
//! maximum while no edge is up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::collections::{BTreeMap, HashMap, VecDeque};

use chorus_client::conn::{Core, LinkId, Output};
use chorus_client::{ClientConfig, Credentials, Error, Event, Resume, Sent};
use chorus_edge::session::{
    token_hash, Action, Config, Correlation, Identity, Item, OtpConfig, OtpRegistry, RecipientVerdict, SeededEntropy,
    Session, TokenVerdict,
};
use chorus_schema::{
    ChatId, ClientFrame, ClientMsgId, CommandBody, DeviceId, Event as LogEvent, EventBody, EventRecord, LogIndex,
    Offset, Outcome, PartitionId, Recipient, Seq, ServerFrame, UserId,
};

const EDGES: [&str; 2] = ["edge-a:1", "edge-b:1"];

/// A token that never expires, linked at time 0 (so no history is hidden).
fn token(seed: u8) -> [u8; 32] {
    let mut t = [seed; 32];
    t[..8].copy_from_slice(&u64::MAX.to_be_bytes());
    t[8..16].copy_from_slice(&0u64.to_be_bytes());
    t
}

/// The log: direct chats, deduplicated by (user, device, client_msg_id).
#[derive(Default)]
struct Log {
    chats: BTreeMap<ChatId, Vec<EventRecord>>,
    members: BTreeMap<ChatId, [UserId; 2]>,
    dedup: HashMap<(UserId, DeviceId, ClientMsgId), (ChatId, Seq)>,
    offset: u64,
}

impl Log {
    /// Appends a send; a repeated one answers the first's outcome and appends nothing.
    fn send(&mut self, now: u64, command: &chorus_schema::Command) -> (Outcome, Option<EventRecord>) {
        let o = command.origin;
        let CommandBody::SendDirect { recipient, ciphertext, .. } = &command.body else {
            return (Outcome::Done, None);
        };
        if let Some((chat, seq)) = self.dedup.get(&(o.user, o.device, o.client_msg_id)) {
            return (Outcome::Chat { chat: *chat, seq: *seq }, None);
        }
        let chat = ChatId::direct(o.user, *recipient);
        self.members.insert(chat, [o.user, *recipient]);
        let items = self.chats.entry(chat).or_default();
        let seq = Seq(items.len() as u64 + 1);
        self.offset += 1;
        let record = EventRecord {
            partition: PartitionId(0),
            offset: Offset(self.offset),
            log_index: LogIndex(self.offset),
            event: LogEvent {
                at_ms: now,
                origin: o,
                body: EventBody::MessageSent { chat, seq, ciphertext: ciphertext.clone(), media: None },
            },
        };
        items.push(record.clone());
        self.dedup.insert((o.user, o.device, o.client_msg_id), (chat, seq));
        (Outcome::Chat { chat, seq }, Some(record))
    }

    fn chats_of(&self, user: UserId) -> Vec<(ChatId, Seq)> {
        self.members
            .iter()
            .filter(|(_, m)| m.contains(&user))
            .map(|(c, _)| (*c, Seq(self.chats.get(c).map_or(0, |i| i.len() as u64))))
            .collect()
    }

    fn items(&self, chat: ChatId, after: Seq, until: Seq) -> Vec<EventRecord> {
        let items = self.chats.get(&chat).map(Vec::as_slice).unwrap_or_default();
        items
            .iter()
            .filter(|r| matches!(r.event.body, EventBody::MessageSent { seq, .. } if seq > after && seq <= until))
            .cloned()
            .collect()
    }
}

/// One link: a session at an edge and the frames in flight each way.
struct Wire {
    session: Session,
    to_edge: VecDeque<ClientFrame>,
    control: VecDeque<ServerFrame>,
    delivery: VecDeque<ServerFrame>,
    subscribed: bool,
    closed: bool,
}

/// One device: its SDK core and what it handed to the app.
struct Device {
    credentials: Credentials,
    core: Core,
    events: Vec<Event>,
    answers: Vec<(ClientMsgId, Result<Sent, Error>)>,
    connects: Vec<(u64, String)>,
}

struct World {
    now: u64,
    up: [bool; 2],
    log: Log,
    otp: OtpRegistry,
    devices: Vec<Device>,
    wires: BTreeMap<(usize, LinkId), Wire>,
    next_seed: u8,
    /// Every live item the bus carried is carried twice (at least once).
    bus_repeats: bool,
    /// Syncs answer each chat from its start, whatever the client's
    /// position: across connections the wire is at-least-once, and the SDK
    /// must drop what it passed on already.
    sync_repeats_history: bool,
}

fn config() -> ClientConfig {
    let mut c = ClientConfig::new(EDGES.iter().map(|e| (*e).to_owned()).collect(), "/unused.pem".into());
    c.reconnect_min_ms = 50;
    c.reconnect_max_ms = 800;
    c.resend_interval_ms = 200;
    c
}

impl World {
    fn new() -> World {
        World {
            now: 0,
            up: [true, true],
            log: Log::default(),
            otp: OtpRegistry::new(OtpConfig::default(), [3; 32]),
            devices: Vec::new(),
            wires: BTreeMap::new(),
            next_seed: 1,
            bus_repeats: true,
            sync_repeats_history: false,
        }
    }

    /// A device of `user` whose token the sessions view accepts.
    fn device(&mut self, user: u64) -> usize {
        let credentials = Credentials { user: UserId(user), device: DeviceId(1), token: token(self.next_seed) };
        self.next_seed += 1;
        let core = Core::new(&config(), credentials, Resume::default(), self.now);
        self.devices.push(Device { credentials, core, events: Vec::new(), answers: Vec::new(), connects: Vec::new() });
        self.devices.len() - 1
    }

    fn valid_token(&self, user: UserId, device: DeviceId, hash: [u8; 32]) -> bool {
        self.devices.iter().any(|d| {
            d.credentials.user == user && d.credentials.device == device && token_hash(&d.credentials.token) == hash
        })
    }

    /// Runs everything that can happen without time passing, until quiet.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            if !self.step() {
                return;
            }
        }
        panic!("the world does not settle");
    }

    fn step(&mut self) -> bool {
        let mut busy = false;
        for d in 0..self.devices.len() {
            while let Some(o) = self.devices[d].core.poll_output() {
                busy = true;
                self.client_output(d, o);
            }
        }
        let keys: Vec<_> = self.wires.keys().copied().collect();
        for key in keys {
            busy |= self.pump_wire(key);
        }
        busy
    }

    fn client_output(&mut self, d: usize, o: Output) {
        let now = self.now;
        match o {
            Output::Connect { link, edge } => {
                self.devices[d].connects.push((now, edge.clone()));
                let Some(e) = EDGES.iter().position(|x| *x == edge) else { panic!("unknown edge {edge}") };
                if self.up[e] {
                    let session = Session::new(Config::default(), Box::new(SeededEntropy::new([self.next_seed; 32])));
                    self.next_seed = self.next_seed.wrapping_add(1);
                    let wire = Wire {
                        session,
                        to_edge: VecDeque::new(),
                        control: VecDeque::new(),
                        delivery: VecDeque::new(),
                        subscribed: false,
                        closed: false,
                    };
                    self.wires.insert((d, link), wire);
                    self.devices[d].core.handle_link_up(now, link);
                } else {
                    self.devices[d].core.handle_link_down(now, link, "connection refused");
                }
            }
            Output::Send(frame) => {
                // Through the real encoding, on the device's current wire.
                let frame = ClientFrame::decode(&frame.encode()).expect("a frame the edge decodes");
                let wire = self.wires.iter_mut().rev().find(|((dev, _), w)| *dev == d && !w.closed);
                if let Some((_, w)) = wire {
                    w.to_edge.push_back(frame);
                }
            }
            Output::Disconnect { link, .. } => {
                self.wires.remove(&(d, link));
            }
            Output::Event(e) => self.devices[d].events.push(e),
            Output::SendDone { client_msg_id, result } => self.devices[d].answers.push((client_msg_id, result)),
            Output::RequestDone { .. } | Output::DevicesListed { .. } => {}
            Output::Stopped(e) => panic!("device {d} stopped: {e}"),
        }
    }

    /// Moves the frames of one wire and runs its session's actions.
    fn pump_wire(&mut self, key: (usize, LinkId)) -> bool {
        let now = self.now;
        let mut busy = false;
        let Some(w) = self.wires.get_mut(&key) else { return false };
        while let Some(f) = w.to_edge.pop_front() {
            busy = true;
            w.session.handle_frame(now, f, &mut self.otp);
        }
        busy |= self.run_actions(key);
        let Some(w) = self.wires.get_mut(&key) else { return busy };
        let (control, delivery): (Vec<_>, Vec<_>) = (w.control.drain(..).collect(), w.delivery.drain(..).collect());
        let closed = w.closed;
        let (d, link) = key;
        for f in control {
            busy = true;
            let f = ServerFrame::decode(&f.encode()).expect("a frame the SDK decodes");
            self.devices[d].core.handle_control(now, link, f);
        }
        for f in delivery {
            busy = true;
            let f = ServerFrame::decode(&f.encode()).expect("a frame the SDK decodes");
            self.devices[d].core.handle_delivery(link, f);
        }
        if closed {
            self.wires.remove(&key);
            self.devices[d].core.handle_link_down(now, link, "closed by the edge");
            busy = true;
        }
        busy
    }

    fn run_actions(&mut self, key: (usize, LinkId)) -> bool {
        let mut busy = false;
        loop {
            let Some(w) = self.wires.get_mut(&key) else { return busy };
            let Some(action) = w.session.poll_action() else { return busy };
            busy = true;
            match action {
                Action::Send(f) => w.control.push_back(f),
                Action::Deliver(f) => w.delivery.push_back(f),
                Action::DeliverItem(item) => w.delivery.push_back(item.server_frame().expect("a message item")),
                Action::VerifyToken { user, device, token_hash } => {
                    let verdict = if self.valid_token(user, device, token_hash) {
                        TokenVerdict::Valid
                    } else {
                        TokenVerdict::Invalid
                    };
                    if let Some(w) = self.wires.get_mut(&key) {
                        w.session.handle_token_verified(verdict);
                    }
                }
                Action::CheckRecipient { correlation, users: _ } => {
                    // Every user of this world is registered.
                    w.session.handle_recipient_checked(correlation, RecipientVerdict::Registered)
                }
                Action::Subscribe(_) => w.subscribed = true,
                // No view of profiles or statuses in this harness.
                Action::Query { correlation, .. } => {
                    w.session.handle_query_result(correlation, Err("no views here".into()))
                }
                Action::Append { correlation, command } => self.append(key, correlation, &command),
                Action::Sync { identity, since } => self.sync(key, identity, &since),
                Action::FillGap { identity: _, chat, after, until } => {
                    let items = self.log.items(chat, after, until);
                    if let Some(w) = self.wires.get_mut(&key) {
                        for r in &items {
                            w.session.handle_recovered(&Item::new(r.clone()));
                        }
                        w.session.handle_fill_done(chat);
                    }
                }
                Action::SendSms { .. } => {}
                // Presence and typing need the bus and the projector's views:
                // tools/tests/presence.rs runs them with real processes.
                Action::SetPresence(_) | Action::WatchPresence { .. } | Action::Typing { .. } => {}
                Action::Close { .. } => w.closed = true,
                // Linked devices (issue 12): no pairing in this world.
                Action::AwaitPairing { .. }
                | Action::StopPairing
                | Action::AnswerClaim { .. }
                | Action::ClaimPairing { .. }
                | Action::ListDevices { .. } => panic!("unexpected pairing action {action:?}"),
                Action::Info { correlation, .. } => w
                    .session
                    .handle_info(correlation, chorus_edge::session::InfoAnswer::Unavailable("no views here".into())),
            }
        }
    }

    fn append(&mut self, key: (usize, LinkId), correlation: Correlation, command: &chorus_schema::Command) {
        let now = self.now;
        let (outcome, record) = self.log.send(now, command);
        if let Some(w) = self.wires.get_mut(&key) {
            w.session.handle_append_result(now, correlation, Ok(Ok(outcome)));
        }
        // The bus: every subscribed session of the chat's users, maybe twice.
        if let Some(record) = record {
            let EventBody::MessageSent { chat, .. } = &record.event.body else { return };
            let members = self.log.members.get(chat).copied().unwrap_or_default();
            let repeats = if self.bus_repeats { 2 } else { 1 };
            let item = Item::new(record.clone());
            for w in self.wires.values_mut().filter(|w| w.subscribed) {
                if w.session.identity().is_some_and(|id| members.contains(&id.user)) {
                    for _ in 0..repeats {
                        w.session.handle_delivery(&item);
                    }
                }
            }
        }
    }

    fn sync(&mut self, key: (usize, LinkId), identity: Identity, since: &[(ChatId, Seq)]) {
        let chats = self.log.chats_of(identity.user);
        let since: HashMap<ChatId, Seq> = since.iter().copied().collect();
        let mut with_news = 0;
        let mut recovered = Vec::new();
        for (chat, last) in &chats {
            let from = if self.sync_repeats_history { Seq(0) } else { since.get(chat).copied().unwrap_or(Seq(0)) };
            let items = self.log.items(*chat, from, *last);
            with_news += u32::from(!items.is_empty());
            recovered.extend(items);
        }
        if let Some(w) = self.wires.get_mut(&key) {
            for r in &recovered {
                w.session.handle_recovered(&Item::new(r.clone()));
            }
            w.session.handle_sync_done(&chats, with_news);
        }
    }

    /// Cuts device `d`'s link: what is in flight either way is lost.
    fn cut(&mut self, d: usize) {
        let links: Vec<_> = self.wires.keys().filter(|(dev, _)| *dev == d).copied().collect();
        for key in links {
            self.wires.remove(&key);
            self.devices[d].core.handle_link_down(self.now, key.1, "cut");
        }
    }

    /// Advances the virtual clock to the next timer of any device (at most
    /// `max_ms` ahead) and runs it.
    fn tick(&mut self, max_ms: u64) {
        let next = self.devices.iter().filter_map(|d| d.core.poll_timeout()).min();
        self.now = next.map_or(self.now + max_ms, |t| t.clamp(self.now, self.now + max_ms));
        for d in &mut self.devices {
            d.core.handle_timeout(self.now);
        }
        self.settle();
    }

    fn live(&self, d: usize) -> bool {
        self.devices[d].core.is_live()
    }

    fn messages(&self, d: usize) -> Vec<(ChatId, Seq, ClientMsgId)> {
        self.devices[d]
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some((m.chat, m.seq, m.client_msg_id)),
                _ => None,
            })
            .collect()
    }
}

/// Each (chat, seq) at most once and in seq order per chat.
#[track_caller]
fn assert_in_order_once(messages: &[(ChatId, Seq, ClientMsgId)]) {
    let mut last: HashMap<ChatId, Seq> = HashMap::new();
    for (chat, seq, _) in messages {
        let l = last.entry(*chat).or_insert(Seq(0));
        assert!(*seq > *l, "{chat:?} seq {seq:?} after {l:?}: {messages:?}");
        *l = *seq;
    }
}

#[test]
fn a_send_whose_answer_is_lost_is_resent_with_its_id_after_the_reconnect_and_delivered_once() {
    let mut w = World::new();
    let alice = w.device(1);
    let bob = w.device(2);
    w.settle();
    assert!(w.live(alice) && w.live(bob));
    let id = ClientMsgId(77);
    w.devices[alice].core.send(Recipient::User(UserId(2)), id, b"hello".to_vec());
    // Alice's frame reaches the edge, which appends it; its `Sent` is lost
    // with the link.
    let Some(output) = w.devices[alice].core.poll_output() else { panic!("the send is written") };
    w.client_output(alice, output);
    let key = *w.wires.keys().find(|(d, _)| *d == alice).expect("alice's wire");
    let wire = w.wires.get_mut(&key).expect("wire");
    let frame = wire.to_edge.pop_front().expect("the Send frame");
    wire.session.handle_frame(w.now, frame, &mut w.otp);
    w.run_actions(key);
    assert_eq!(w.log.dedup.len(), 1, "committed");
    w.cut(alice);
    assert!(w.devices[alice].answers.is_empty(), "the answer was lost");
    w.settle();
    assert!(w.live(alice), "reconnected at once");
    assert_eq!(w.devices[alice].connects.last().map(|c| c.1.as_str()), Some(EDGES[1]), "to the next edge");
    assert_eq!(w.devices[alice].core.stats().resent, 1);
    // Committed once: the resend was deduplicated, and answered with the first seq.
    assert_eq!(w.log.chats.values().map(Vec::len).sum::<usize>(), 1);
    match &w.devices[alice].answers[..] {
        [(got, Ok(sent))] => assert_eq!((*got, sent.seq), (id, Seq(1))),
        other => panic!("one answer expected: {other:?}"),
    }
    assert_eq!(w.messages(bob).iter().map(|m| (m.1, m.2)).collect::<Vec<_>>(), vec![(Seq(1), id)]);
}

#[test]
fn messages_come_in_seq_order_once_each_across_the_receiver_s_reconnects() {
    let mut w = World::new();
    let alice = w.device(1);
    let bob = w.device(2);
    let carol = w.device(3);
    w.sync_repeats_history = true;
    w.settle();
    let mut sent = 0u64;
    for round in 0..6u64 {
        for i in 0..5u64 {
            let id = ClientMsgId(round * 100 + i);
            let to = if i % 2 == 0 { 2 } else { 3 };
            w.devices[alice].core.send(Recipient::User(UserId(to)), id, vec![u8::try_from(i).unwrap_or(0)]);
            w.devices[carol].core.send(Recipient::User(UserId(2)), ClientMsgId(10_000 + round * 100 + i), vec![1]);
            sent += 1;
            // Deliver part of what is in flight, then cut bob mid-stream.
            w.step();
            w.step();
        }
        if round % 2 == 0 {
            w.cut(bob);
        } else {
            w.cut(alice);
        }
        // Reconnects (and rate-limited sends) run on timers: run time on.
        while !(w.live(alice) && w.live(bob) && w.live(carol)) {
            w.tick(100);
        }
    }
    for _ in 0..50 {
        w.tick(250);
    }
    let answered = |d: usize| w.devices[d].answers.iter().filter(|(_, r)| r.is_ok()).count() as u64;
    assert_eq!(answered(alice), sent, "every send of alice answered");
    assert_eq!(answered(carol), sent);
    let bob_got = w.messages(bob);
    assert_in_order_once(&bob_got);
    assert_in_order_once(&w.messages(carol));
    // Everything for bob arrived: both chats, every seq.
    let chats = w.log.chats_of(UserId(2));
    let total: u64 = chats.iter().map(|(_, s)| s.0).sum();
    assert_eq!(bob_got.len() as u64, total, "{chats:?}");
    assert!(w.devices[bob].core.stats().connects >= 4, "bob reconnected");
    assert!(w.devices[bob].core.stats().duplicates_dropped > 0, "the syncs repeated what bob had");
}

#[test]
fn while_no_edge_is_up_the_backoff_grows_to_its_max_then_a_returning_edge_takes_the_pending_send() {
    let mut w = World::new();
    let alice = w.device(1);
    let _bob = w.device(2);
    w.settle();
    w.up = [false, false];
    w.devices[alice].core.send(Recipient::User(UserId(2)), ClientMsgId(5), b"later".to_vec());
    w.cut(alice);
    let start = w.devices[alice].connects.len();
    w.settle();
    while w.now < 10_000 {
        w.tick(10_000);
    }
    // Attempts come in rounds of two (one per edge) at the same instant; the
    // gaps between rounds double from the minimum up to the maximum.
    let times: Vec<u64> = w.devices[alice].connects[start..].iter().map(|c| c.0).collect();
    let mut rounds: Vec<u64> = times.chunks(2).map(|r| r[0]).collect();
    rounds.dedup();
    let gaps: Vec<u64> = rounds.windows(2).map(|p| p[1] - p[0]).collect();
    assert_eq!(&gaps[..6], &[50, 100, 200, 400, 800, 800], "{times:?}");
    assert!(gaps.iter().all(|g| *g <= 800));
    assert!(w.devices[alice].answers.is_empty());
    // An edge comes back: the next round takes it, and the send goes out.
    w.up = [false, true];
    w.tick(1_000);
    w.settle();
    assert!(w.live(alice));
    assert!(matches!(&w.devices[alice].answers[..], [(ClientMsgId(5), Ok(_))]));
}
