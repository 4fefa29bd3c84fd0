//! Named consumers' committed offsets (issue 13): property tests of the
//! consumer-partition rules against a model, and replay equality.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;

use chorus_partition::PartitionState;
use chorus_schema::*;
use proptest::prelude::*;

const P: u16 = 4;
const NAMES: [&str; 3] = ["c1", "analytics", "ops.tail-2"];

fn home(name: &str) -> PartitionId {
    PartitionId::for_key(&Key::Consumer(ConsumerKey::of(name)), P)
}

fn commit(name: &str, offsets: Vec<PartitionOffset>, reset: bool) -> Command {
    Command {
        origin: Origin::default(),
        body: CommandBody::CommitOffsets { consumer: name.to_owned(), offsets, reset },
    }
}

#[derive(Clone, Debug)]
struct Step {
    name: usize,
    /// (partition, offset); partitions may be out of range (P + 1).
    offsets: Vec<(u16, u64)>,
    reset: bool,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0..NAMES.len(),
        prop::collection::btree_map(0..=P, 0u64..20, 0..4).prop_map(|m| m.into_iter().collect()),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(name, offsets, reset)| Step { name, offsets, reset })
}

proptest! {
    #[test]
    fn commits_follow_the_model_and_replay(steps in prop::collection::vec(step(), 1..80)) {
        let mut states: BTreeMap<PartitionId, PartitionState> =
            (0..P).map(|p| (PartitionId(p), PartitionState::new(PartitionId(p), P))).collect();
        let mut model: BTreeMap<&str, BTreeMap<u16, u64>> = BTreeMap::new();
        let mut logs: BTreeMap<PartitionId, Vec<Event>> = BTreeMap::new();
        for (i, s) in steps.iter().enumerate() {
            let name = NAMES[s.name];
            let p = home(name);
            let offsets: Vec<_> =
                s.offsets.iter().map(|&(p, o)| PartitionOffset::new(PartitionId(p), Offset(o))).collect();
            let state = states.get_mut(&p).unwrap();
            let before = state.kv().clone();
            let mut out = Vec::new();
            let r = state.apply(1000 + i as u64, &commit(name, offsets.clone(), s.reset), &mut out);
            if s.offsets.iter().any(|&(p, _)| p >= P) {
                let rej = r.expect_err("a partition out of range is refused");
                prop_assert_eq!(rej.code, RejectCode::Invalid);
                prop_assert!(out.is_empty());
                prop_assert_eq!(state.kv(), &before, "a refusal changes nothing");
                continue;
            }
            let m = model.entry(name).or_default();
            let old = m.clone();
            for &(p, o) in &s.offsets {
                let e = m.entry(p).or_insert(o);
                *e = if s.reset { o } else { (*e).max(o) };
            }
            let expected: Vec<_> =
                m.iter().map(|(&p, &o)| PartitionOffset::new(PartitionId(p), Offset(o))).collect();
            prop_assert_eq!(r.clone(), Ok(Outcome::Offsets(expected.clone())));
            prop_assert_eq!(state.consumer_offsets(name), expected);
            if !s.reset {
                for (p, o) in &old {
                    prop_assert!(m[p] >= *o, "a commit without reset never moves back");
                }
            }
            // An event exactly when something changed, naming only what changed.
            if *m == old {
                prop_assert!(out.is_empty());
            } else {
                prop_assert_eq!(out.len(), 1);
                match &out[0].body {
                    EventBody::OffsetsCommitted { consumer, offsets } => {
                        prop_assert_eq!(consumer.as_str(), name);
                        for o in offsets {
                            prop_assert_eq!(m[&o.partition.0], o.offset.0);
                            prop_assert_ne!(old.get(&o.partition.0), Some(&o.offset.0));
                        }
                    }
                    other => prop_assert!(false, "unexpected event {}", other.kind()),
                }
                // Every event survives its encoding.
                prop_assert_eq!(Event::decode(&out[0].encode()).unwrap(), out[0].clone());
            }
            // An empty commit reads the same offsets and changes nothing.
            let mut none = Vec::new();
            let read = states.get_mut(&p).unwrap().apply(1000 + i as u64, &commit(name, vec![], false), &mut none);
            prop_assert!(none.is_empty());
            prop_assert_eq!(read, r);
            logs.entry(p).or_default().extend(out);
        }
        // Replay: folding the events gives the same state.
        for (p, live) in &states {
            let mut replayed = PartitionState::new(*p, P);
            for e in logs.get(p).into_iter().flatten() {
                replayed.fold(e);
            }
            prop_assert_eq!(replayed.kv(), live.kv());
        }
    }
}

#[test]
fn bad_names_and_duplicates_are_invalid_and_change_nothing() {
    for (name, offsets) in [
        ("", vec![]),
        ("has space", vec![]),
        ("c1", vec![PartitionOffset::new(PartitionId(1), Offset(1)), PartitionOffset::new(PartitionId(1), Offset(2))]),
    ] {
        let p = home(name);
        let mut s = PartitionState::new(p, P);
        let mut out = Vec::new();
        let r = s.apply(1, &commit(name, offsets, false), &mut out);
        assert_eq!(r.unwrap_err().code, RejectCode::Invalid, "{name:?}");
        assert!(out.is_empty());
        assert_eq!(s.kv(), PartitionState::new(p, P).kv());
    }
}

#[test]
fn a_commit_in_the_wrong_partition_is_refused() {
    let p = home("c1");
    let other = PartitionId((p.0 + 1) % P);
    let mut s = PartitionState::new(other, P);
    let r = s.apply(1, &commit("c1", vec![PartitionOffset::new(PartitionId(0), Offset(3))], false), &mut Vec::new());
    assert_eq!(r.unwrap_err().code, RejectCode::WrongPartition);
}

#[test]
fn reset_rewinds_and_a_plain_commit_does_not() {
    let p = home("c1");
    let mut s = PartitionState::new(p, P);
    let at = |o| vec![PartitionOffset::new(PartitionId(2), Offset(o))];
    let mut out = Vec::new();
    s.apply(1, &commit("c1", at(10), false), &mut out).unwrap();
    assert_eq!(s.apply(2, &commit("c1", at(4), false), &mut out).unwrap(), Outcome::Offsets(at(10)));
    assert_eq!(s.apply(3, &commit("c1", at(4), true), &mut out).unwrap(), Outcome::Offsets(at(4)));
    assert_eq!(out.len(), 2, "the ignored rewind emitted nothing");
    assert_eq!(s.consumer_offsets("analytics"), vec![], "consumers are apart");
}
