//! Snapshots larger than one read: a snapshot carries every event it covers,
//! and those can be far more than one `read_range` returns.
//!
//! Found by a 5-minute Jepsen run (seed 101): once a partition held more than
//! 4 MiB of events, building the snapshot to send to a lagging replica read
//! only the first 4 MiB, failed its own count check ("snapshot covers 30205
//! events, store has 24169"), and the leader's Raft core stopped.

use chorus_log_node::store::{events, StateMachine, Store};
use chorus_log_node::types::{Entry, Proposal};
use chorus_schema::{ClientMsgId, Command, CommandBody, DeviceId, Origin, PartitionId, UserId};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, LogId};

const PARTITIONS: u16 = 1;

fn send(i: u64) -> Vec<u8> {
    Command {
        origin: Origin { user: UserId(1), device: DeviceId(1), client_msg_id: ClientMsgId(i + 1) },
        body: CommandBody::SendDirect { recipient: UserId(2), ciphertext: vec![i as u8; 60 << 10], media: None },
    }
    .encode()
}

#[tokio::test]
async fn a_snapshot_of_more_events_than_one_read_carries_them_all() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = Store::open(a.path()).unwrap();
    let mut sm = StateMachine::open(store.clone(), PartitionId(0), PARTITIONS).unwrap();
    // 150 sends of 60 KiB: about 9 MiB of events, over two reads' worth.
    let entries: Vec<Entry> = (0..150u64)
        .map(|i| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), i + 1),
            payload: EntryPayload::Normal(Proposal { at_ms: 1, commands: vec![send(i)] }),
        })
        .collect();
    sm.apply(entries).await.unwrap();
    let next = events::read_range(&store, PartitionId(0), 0, u64::MAX, usize::MAX).unwrap().len();
    assert!(next < 150, "one read stops short of every event ({next}), or this test shows nothing");

    sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let snapshot = sm.get_current_snapshot().await.expect("the snapshot can be sent").expect("one was built");

    // A replica that installs it holds the same events.
    let other = Store::open(b.path()).unwrap();
    let mut replica = StateMachine::open(other.clone(), PartitionId(0), PARTITIONS).unwrap();
    replica.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
    let read_all = |s: &Store| {
        let mut all = Vec::new();
        loop {
            let batch = events::read_range(s, PartitionId(0), all.len() as u64, u64::MAX, usize::MAX).unwrap();
            if batch.is_empty() {
                return all;
            }
            all.extend(batch);
        }
    };
    let (mine, theirs) = (read_all(&store), read_all(&other));
    assert!(mine.len() >= 150, "every send produced an event: {}", mine.len());
    assert_eq!(mine, theirs);
}
