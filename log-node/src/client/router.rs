//! Leader routing and retry of one request, without IO: which node to try
//! next and when, and when to give up with which error.
//!
//! The client feeds a [`Router`] the answer of each attempt and the time (plain
//! milliseconds of any monotonic clock, so that tests run it on a virtual one)
//! and does what [`Router::next`] says: send to an address at a time, waiting
//! at most so long, or give up. The rules:
//!
//! * The group's leader, if known and not suspected dead, gets the request;
//!   otherwise the known addresses are tried in turn, suspected ones last.
//! * A `NotLeader` hint is followed at once; hints that keep bouncing (two
//!   nodes naming each other around a leader change) are followed after a
//!   backoff, so that one request is not turned into thousands.
//! * A node that did not answer in time or could not be reached is suspected
//!   for two attempt timeouts: the next attempt goes elsewhere, and a hint
//!   naming it (stale, while the others elect its successor) is not followed.
//! * Each failure other than a first hint waits a backoff, doubling from
//!   `backoff_min_ms` up to `backoff_max_ms`.
//! * No attempt ends after the deadline. At the deadline, a request that was
//!   sent at least once without an answer saying it was not applied gives
//!   [`Error::UnknownOutcome`] if it mutates the log; anything else gives
//!   [`Error::Unavailable`]. A refusal is final at once.
//! * Addresses come from the seeds and the hints only.

use std::collections::BTreeMap;

use chorus_schema::ErrorCode;

use super::Error;

/// The router's settings (from [`ClientConfig`](super::ClientConfig)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub attempt_timeout_ms: u64,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
}

/// An attempt shorter than this is not worth making: the router gives up
/// instead (so that a last sliver of deadline does not turn a clean
/// `Unavailable` into an `UnknownOutcome`).
pub const MIN_ATTEMPT_MS: u64 = 20;

/// What the client should do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send the request to `addr` once the clock reads `at_ms`, and wait for
    /// its answer until `at_ms + timeout_ms` at most.
    Send { addr: String, at_ms: u64, timeout_ms: u64 },
    /// Stop trying.
    GiveUp(GiveUp),
}

/// Why the router stopped; [`GiveUp::into_error`] makes the client's error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GiveUp {
    Refused { code: ErrorCode, message: String },
    Unavailable { attempts: u32, last: String },
    UnknownOutcome { attempts: u32, last: String },
}

impl GiveUp {
    pub fn into_error(self) -> Error {
        match self {
            GiveUp::Refused { code, message } => Error::Refused { code, message },
            GiveUp::Unavailable { attempts, last } => Error::Unavailable { attempts, last },
            GiveUp::UnknownOutcome { attempts, last } => Error::UnknownOutcome { attempts, last },
        }
    }
}

/// What one attempt came to (a success ends the request and is not fed back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The node does not lead the group and names the one that does (its
    /// client address). It did not apply the request.
    NotLeader { hint: String },
    /// The node did not apply the request and cannot now (it knows no leader).
    NotApplied { reason: String },
    /// The node may have applied the request: it answered `Timeout` or
    /// `Unavailable`, or the request was sent and no answer came in time, or
    /// the connection broke after sending.
    Unknown { reason: String },
    /// The request never reached the node (connect failed or timed out, no
    /// stream could be opened).
    Unreached { reason: String },
    /// The node refused the request; the same request is refused anywhere.
    Refused { code: ErrorCode, message: String },
}

impl Answer {
    /// The answer an error response of a node stands for.
    pub fn of_code(code: ErrorCode, message: String, hint: Option<String>) -> Answer {
        match (code, hint) {
            (ErrorCode::NotLeader, Some(hint)) => Answer::NotLeader { hint },
            (ErrorCode::NotLeader | ErrorCode::PartitionUnavailable, _) => {
                Answer::NotApplied { reason: format!("{code:?}: {message}") }
            }
            // A proposal that timed out or was dropped may still commit;
            // `Internal` is a node's own failure, perhaps after proposing.
            (ErrorCode::Timeout | ErrorCode::Unavailable | ErrorCode::Internal, _) => {
                Answer::Unknown { reason: format!("{code:?}: {message}") }
            }
            (
                ErrorCode::BadFrame
                | ErrorCode::FrameTooLarge
                | ErrorCode::InvalidCommand
                | ErrorCode::MixedGroups
                | ErrorCode::Forbidden,
                _,
            ) => Answer::Refused { code, message },
        }
    }
}

/// Routing state of one request.
#[derive(Clone, Debug)]
pub struct Router {
    policy: Policy,
    /// Every address it may pick: the seeds, then hints in order of arrival.
    addrs: Vec<String>,
    leader: Option<String>,
    /// Addresses not to try before the given time, unless nothing else is left.
    suspect: BTreeMap<String, u64>,
    /// Next address of the round when no leader is known.
    cursor: usize,
    deadline_ms: u64,
    not_before_ms: u64,
    /// Whether the request changes the log (an append, a membership change):
    /// only then can its outcome be unknown.
    mutating: bool,
    attempts: u32,
    /// Failed attempts in a row, hints excepted (the backoff exponent).
    failures: u32,
    /// Hints followed in a row.
    redirects: u32,
    /// Some attempt may have applied the request.
    maybe_applied: bool,
    last: String,
    done: Option<GiveUp>,
}

impl Router {
    /// A request starting at `now_ms` with `deadline_ms` from now, to the
    /// group led (as far as the client knows) by `leader`, through `addrs`.
    pub fn new(
        policy: Policy,
        addrs: Vec<String>,
        leader: Option<String>,
        now_ms: u64,
        deadline_ms: u64,
        mutating: bool,
    ) -> Router {
        let mut addrs = addrs;
        if let Some(l) = &leader {
            if !addrs.contains(l) {
                addrs.push(l.clone());
            }
        }
        let last = if addrs.is_empty() { "no node address known".to_string() } else { "not tried".to_string() };
        Router {
            policy,
            addrs,
            leader,
            suspect: BTreeMap::new(),
            cursor: 0,
            deadline_ms: now_ms.saturating_add(deadline_ms),
            not_before_ms: now_ms,
            mutating,
            attempts: 0,
            failures: 0,
            redirects: 0,
            maybe_applied: false,
            last,
            done: None,
        }
    }

    /// The leader as the answers so far left it (for the client's cache).
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// Every address the router may pick.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The deadline, in the clock of `now_ms`.
    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }

    /// What to do at `now_ms`: the next attempt, or give up.
    pub fn next(&mut self, now_ms: u64) -> Step {
        if let Some(g) = &self.done {
            return Step::GiveUp(g.clone());
        }
        let at_ms = now_ms.max(self.not_before_ms);
        let left = self.deadline_ms.saturating_sub(at_ms);
        if self.addrs.is_empty() || left < MIN_ATTEMPT_MS.min(self.policy.attempt_timeout_ms).max(1) {
            let g = self.expired();
            self.done = Some(g.clone());
            return Step::GiveUp(g);
        }
        let addr = self.pick(at_ms);
        Step::Send { addr, at_ms, timeout_ms: self.policy.attempt_timeout_ms.min(left) }
    }

    /// Takes the answer of the attempt at `addr`, at `now_ms`.
    pub fn record(&mut self, addr: &str, answer: Answer, now_ms: u64) {
        if self.done.is_some() {
            return;
        }
        self.attempts = self.attempts.saturating_add(1);
        match answer {
            Answer::NotLeader { hint } if self.suspected(&hint, now_ms) => {
                // A stale hint: the node that just failed is still named
                // (the others have not elected its successor yet). Following
                // it would cost another timeout; ask the others after a pause.
                self.last = format!("{addr}: not the leader, names {hint}, which did not answer");
                self.forget_leader(addr);
            }
            Answer::NotLeader { hint } => {
                self.last = format!("{addr}: not the leader, {hint} is");
                self.redirects = self.redirects.saturating_add(1);
                if !self.addrs.contains(&hint) {
                    self.addrs.push(hint.clone());
                }
                self.leader = Some(hint);
                if self.redirects > 1 {
                    self.failures = self.failures.saturating_add(1);
                    self.not_before_ms = now_ms.saturating_add(self.backoff());
                } else {
                    self.not_before_ms = now_ms;
                }
                return;
            }
            Answer::NotApplied { reason } => {
                self.last = format!("{addr}: {reason}");
                self.forget_leader(addr);
            }
            Answer::Unknown { reason } => {
                self.last = format!("{addr}: {reason}");
                self.maybe_applied |= self.mutating;
                self.forget_leader(addr);
                self.suspect(addr, now_ms);
            }
            Answer::Unreached { reason } => {
                self.last = format!("{addr}: {reason}");
                self.forget_leader(addr);
                self.suspect(addr, now_ms);
            }
            Answer::Refused { code, message } => {
                self.done = Some(GiveUp::Refused { code, message });
                return;
            }
        }
        self.redirects = 0;
        self.failures = self.failures.saturating_add(1);
        self.not_before_ms = now_ms.saturating_add(self.backoff());
    }

    /// The pause after the failures so far: `backoff_min_ms` doubled per
    /// failure after the first, at most `backoff_max_ms`.
    fn backoff(&self) -> u64 {
        let doublings = self.failures.saturating_sub(1).min(32);
        self.policy.backoff_min_ms.saturating_mul(1u64 << doublings).min(self.policy.backoff_max_ms)
    }

    fn forget_leader(&mut self, addr: &str) {
        if self.leader.as_deref() == Some(addr) {
            self.leader = None;
        }
    }

    /// Suspects `addr` for two attempt timeouts: long enough for the others
    /// to elect a dead leader's successor (until then they name the dead one),
    /// short enough that a leader that was only slow is asked again.
    fn suspect(&mut self, addr: &str, now_ms: u64) {
        self.suspect.insert(addr.to_string(), now_ms.saturating_add(self.policy.attempt_timeout_ms.saturating_mul(2)));
    }

    fn suspected(&self, addr: &str, at_ms: u64) -> bool {
        self.suspect.get(addr).is_some_and(|until| *until > at_ms)
    }

    /// The leader if known and not suspected; else the next unsuspected
    /// address of the round; else the one suspected for the shortest time.
    /// `addrs` is not empty.
    fn pick(&mut self, at_ms: u64) -> String {
        if let Some(l) = &self.leader {
            if !self.suspected(l, at_ms) {
                return l.clone();
            }
        }
        let n = self.addrs.len();
        let round = (0..n).map(|i| (self.cursor + i) % n);
        let chosen =
            round.clone().find(|i| self.addrs.get(*i).is_some_and(|a| !self.suspected(a, at_ms))).or_else(|| {
                round.min_by_key(|i| self.addrs.get(*i).and_then(|a| self.suspect.get(a)).copied().unwrap_or(0))
            });
        let i = chosen.unwrap_or(0);
        self.cursor = (i + 1) % n;
        self.addrs.get(i).cloned().unwrap_or_default()
    }

    fn expired(&self) -> GiveUp {
        let last = format!("deadline passed; last: {}", self.last);
        if self.maybe_applied {
            GiveUp::UnknownOutcome { attempts: self.attempts, last }
        } else {
            GiveUp::Unavailable { attempts: self.attempts, last }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const POLICY: Policy = Policy { attempt_timeout_ms: 2_000, backoff_min_ms: 10, backoff_max_ms: 250 };

    fn seeds() -> Vec<String> {
        vec!["a:1".into(), "b:1".into(), "c:1".into()]
    }

    fn send(step: Step) -> (String, u64, u64) {
        match step {
            Step::Send { addr, at_ms, timeout_ms } => (addr, at_ms, timeout_ms),
            Step::GiveUp(g) => panic!("gave up: {g:?}"),
        }
    }

    fn unknown() -> Answer {
        Answer::Unknown { reason: "no answer in time".into() }
    }

    fn no_leader() -> Answer {
        Answer::NotApplied { reason: "PartitionUnavailable".into() }
    }

    #[test]
    fn the_known_leader_is_tried_first_and_a_hint_is_followed_at_once() {
        let mut r = Router::new(POLICY, seeds(), Some("b:1".into()), 1_000, 20_000, true);
        let (addr, at, timeout) = send(r.next(1_000));
        assert_eq!((addr.as_str(), at, timeout), ("b:1", 1_000, 2_000));
        r.record("b:1", Answer::NotLeader { hint: "c:1".into() }, 1_005);
        assert_eq!(send(r.next(1_005)), ("c:1".into(), 1_005, 2_000), "no pause before a first hint");
        assert_eq!(r.leader(), Some("c:1"));
        // A second hint in a row waits: hints may bounce around an election.
        r.record("c:1", Answer::NotLeader { hint: "b:1".into() }, 1_010);
        let (addr, at, _) = send(r.next(1_010));
        assert_eq!(addr, "b:1");
        assert!(at > 1_010, "a bouncing hint is followed after a backoff");
    }

    #[test]
    fn a_hint_outside_the_seeds_is_learned() {
        let mut r = Router::new(POLICY, vec!["a:1".into()], None, 0, 20_000, true);
        let (addr, ..) = send(r.next(0));
        r.record(&addr, Answer::NotLeader { hint: "z:9".into() }, 3);
        assert_eq!(send(r.next(3)).0, "z:9");
        assert_eq!(r.addrs(), ["a:1".to_string(), "z:9".to_string()]);
    }

    #[test]
    fn a_dead_leader_is_skipped_after_its_timeout_and_the_next_address_tried() {
        let mut r = Router::new(POLICY, seeds(), Some("a:1".into()), 0, 20_000, true);
        let (addr, _, timeout) = send(r.next(0));
        assert_eq!(addr, "a:1");
        // No answer within the attempt timeout: the node is suspected.
        r.record("a:1", unknown(), timeout);
        let (addr, at, _) = send(r.next(timeout));
        assert_ne!(addr, "a:1", "the dead leader is not tried again at once");
        assert_eq!(at, timeout + POLICY.backoff_min_ms);
        assert_eq!(r.leader(), None);
        // The other node has no leader yet either: the third one is next.
        r.record(&addr, no_leader(), at + 1);
        let (third, ..) = send(r.next(at + 1));
        assert!(third != "a:1" && third != addr, "{third}");
    }

    /// Found by `tools/tests/jepsen.rs` (leader killed): the other nodes
    /// kept naming the dead leader until they elected another, and following
    /// that hint spent the rest of the deadline on a connect to it.
    #[test]
    fn a_hint_naming_the_node_that_just_failed_is_not_followed() {
        let mut r = Router::new(POLICY, seeds(), Some("a:1".into()), 0, 20_000, true);
        let (_, _, timeout) = send(r.next(0));
        r.record("a:1", unknown(), timeout);
        let (b, at, _) = send(r.next(timeout));
        r.record(&b, Answer::NotLeader { hint: "a:1".into() }, at + 1);
        let (next, later, _) = send(r.next(at + 1));
        assert_ne!(next, "a:1", "the stale hint is not followed");
        assert!(later > at + 1, "and the next node is asked after a pause");
        // Once the others name a live leader, it is followed at once.
        r.record(&next, Answer::NotLeader { hint: "c:1".into() }, later + 1);
        assert_eq!(send(r.next(later + 1)), ("c:1".into(), later + 1, 2_000));
    }

    #[test]
    fn an_unreachable_node_is_skipped_too() {
        let mut r = Router::new(POLICY, seeds(), None, 0, 20_000, false);
        let (first, ..) = send(r.next(0));
        r.record(&first, Answer::Unreached { reason: "connect timed out".into() }, 3_000);
        let (second, ..) = send(r.next(3_000));
        assert_ne!(first, second);
    }

    #[test]
    fn backoff_doubles_up_to_its_max() {
        let mut r = Router::new(POLICY, seeds(), None, 0, 1_000_000, true);
        let mut now = 0;
        let mut pauses = Vec::new();
        for _ in 0..10 {
            let (addr, at, _) = send(r.next(now));
            pauses.push(at - now);
            now = at + 1;
            r.record(&addr, no_leader(), now);
        }
        assert_eq!(pauses, [0, 10, 20, 40, 80, 160, 250, 250, 250, 250]);
    }

    #[test]
    fn at_the_deadline_a_sent_append_is_unknown_and_one_never_sent_unavailable() {
        // Sent once without an answer, then nobody leads: unknown.
        let mut r = Router::new(POLICY, seeds(), None, 0, 5_000, true);
        let mut now = 0;
        let (addr, at, timeout) = send(r.next(now));
        now = at + timeout;
        r.record(&addr, unknown(), now);
        let given_up = loop {
            match r.next(now) {
                Step::Send { addr, at_ms, .. } => {
                    now = at_ms + 1;
                    r.record(&addr, no_leader(), now);
                }
                Step::GiveUp(g) => break g,
            }
        };
        assert!(matches!(given_up, GiveUp::UnknownOutcome { .. }), "{given_up:?}");
        assert!(now <= 5_000);

        // Never reached a node: unavailable.
        let mut r = Router::new(POLICY, seeds(), None, 0, 5_000, true);
        let mut now = 0;
        let given_up = loop {
            match r.next(now) {
                Step::Send { addr, at_ms, timeout_ms } => {
                    now = at_ms + timeout_ms;
                    r.record(&addr, Answer::Unreached { reason: "connect timed out".into() }, now);
                }
                Step::GiveUp(g) => break g,
            }
        };
        assert!(matches!(given_up, GiveUp::Unavailable { .. }), "{given_up:?}");

        // A read whose answer was lost is not "unknown": reads change nothing.
        let mut r = Router::new(POLICY, seeds(), None, 0, 100, false);
        let (addr, _, timeout) = send(r.next(0));
        r.record(&addr, unknown(), timeout);
        assert!(matches!(r.next(timeout), Step::GiveUp(GiveUp::Unavailable { .. })));
    }

    #[test]
    fn a_refusal_is_final_and_not_an_unknown_outcome() {
        let mut r = Router::new(POLICY, seeds(), None, 0, 20_000, true);
        let (addr, ..) = send(r.next(0));
        r.record(&addr, unknown(), 2_000);
        let (addr, at, _) = send(r.next(2_000));
        r.record(&addr, Answer::of_code(ErrorCode::Forbidden, "role".into(), None), at + 1);
        assert_eq!(
            r.next(at + 1),
            Step::GiveUp(GiveUp::Refused { code: ErrorCode::Forbidden, message: "role".into() })
        );
    }

    #[test]
    fn error_codes_map_to_what_they_say_about_the_request() {
        assert_eq!(
            Answer::of_code(ErrorCode::NotLeader, "m".into(), Some("x:1".into())),
            Answer::NotLeader { hint: "x:1".into() }
        );
        assert!(matches!(Answer::of_code(ErrorCode::NotLeader, "m".into(), None), Answer::NotApplied { .. }));
        assert!(matches!(
            Answer::of_code(ErrorCode::PartitionUnavailable, "m".into(), None),
            Answer::NotApplied { .. }
        ));
        for code in [ErrorCode::Timeout, ErrorCode::Unavailable, ErrorCode::Internal] {
            assert!(matches!(Answer::of_code(code, "m".into(), None), Answer::Unknown { .. }), "{code:?}");
        }
        for code in [
            ErrorCode::BadFrame,
            ErrorCode::FrameTooLarge,
            ErrorCode::InvalidCommand,
            ErrorCode::MixedGroups,
            ErrorCode::Forbidden,
        ] {
            assert!(matches!(Answer::of_code(code, "m".into(), None), Answer::Refused { .. }), "{code:?}");
        }
    }

    fn answer() -> impl Strategy<Value = Answer> {
        prop_oneof![
            "[a-e]:[12]".prop_map(|hint| Answer::NotLeader { hint }),
            Just(no_leader()),
            Just(unknown()),
            Just(Answer::Unreached { reason: "down".into() }),
            Just(Answer::Refused { code: ErrorCode::Forbidden, message: "no".into() }),
        ]
    }

    proptest! {
        /// Whatever the nodes answer and however long they take, no attempt
        /// ends after the deadline, every address is a seed or a hint, and the
        /// router gives up by the deadline: unknown only if an attempt may
        /// have applied the append.
        #[test]
        fn never_past_the_deadline_never_outside_seeds_and_hints(
            leader in proptest::option::of(0usize..3),
            answers in proptest::collection::vec((answer(), 0u64..3_000), 1..200),
            start in 0u64..1_000_000,
            deadline in 0u64..30_000,
            mutating: bool,
        ) {
            let seeds = seeds();
            let mut r = Router::new(
                POLICY, seeds.clone(), leader.and_then(|i| seeds.get(i).cloned()), start, deadline, mutating,
            );
            let mut allowed = seeds.clone();
            let mut now = start;
            let mut maybe_applied = false;
            let mut answers = answers.into_iter();
            let given_up = loop {
                match r.next(now) {
                    Step::Send { addr, at_ms, timeout_ms } => {
                        prop_assert!(allowed.contains(&addr), "{addr} is neither a seed nor a hint");
                        prop_assert!(at_ms >= now);
                        prop_assert!(timeout_ms > 0);
                        prop_assert!(at_ms + timeout_ms <= start + deadline, "attempt ends after the deadline");
                        let Some((answer, took)) = answers.next() else { break None };
                        now = at_ms + took.min(timeout_ms);
                        if let Answer::NotLeader { hint } = &answer {
                            allowed.push(hint.clone());
                        }
                        maybe_applied |= mutating && matches!(answer, Answer::Unknown { .. });
                        r.record(&addr, answer, now);
                    }
                    Step::GiveUp(g) => break Some(g),
                }
            };
            if let Some(g) = given_up {
                prop_assert!(now <= start + deadline);
                match g {
                    GiveUp::Refused { .. } => {}
                    GiveUp::UnknownOutcome { .. } => prop_assert!(maybe_applied),
                    GiveUp::Unavailable { .. } => prop_assert!(!maybe_applied),
                }
            }
        }
    }
}
