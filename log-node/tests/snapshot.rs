//! Snapshots sent to a replica: a snapshot carries every event it covers, of
//! every partition of its group, streamed through a file.
//!
//! Found by a 5-minute Jepsen run (seed 101): once a partition held more than
//! 4 MiB of events, building the snapshot to send to a lagging replica read
//! only the first 4 MiB, failed its own count check ("snapshot covers 30205
//! events, store has 24169"), and the leader's Raft core stopped. Snapshots
//! are now streamed from RocksDB into a file and from a file into RocksDB;
//! these tests keep the count and the contents exact, and a damaged file out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::io::{Read, Seek, SeekFrom, Write};

use chorus_log_node::store::{events, StateMachine, Store};
use chorus_log_node::types::{Batch, BatchBuilder, Entry, Proposal};
use chorus_schema::{ClientMsgId, Command, CommandBody, DeviceId, GroupId, Key, Offset, Origin, PartitionId, UserId};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, LogId};

const PARTITIONS: u16 = 4;
const GROUP: GroupId = GroupId(1);

/// Partitions 1 and 3 on group 1 (of 2).
fn hosted() -> Vec<PartitionId> {
    vec![PartitionId(1), PartitionId(3)]
}

fn send(from: u64, to: u64, i: u64, bytes: usize) -> Command {
    Command {
        origin: Origin { user: UserId(from), device: DeviceId(1), client_msg_id: ClientMsgId(i + 1) },
        body: CommandBody::SendDirect { recipient: UserId(to), ciphertext: vec![i as u8; bytes], media: None },
    }
}

/// A pair of users whose direct chat is on partition `p`.
fn pair_on(p: PartitionId) -> (u64, u64) {
    (2..)
        .map(|to| (1, to))
        .find(|&(a, b)| {
            PartitionId::for_key(&Key::Chat(chorus_schema::ChatId::direct(UserId(a), UserId(b))), PARTITIONS) == p
        })
        .unwrap()
}

fn entry(index: u64, batch: Batch) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Proposal::new(1, batch)),
    }
}

fn read_all(s: &Store, p: PartitionId) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    loop {
        let batch = events::read_range(s, p, Offset(all.len() as u64), Offset(u64::MAX), usize::MAX).unwrap();
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

/// A group whose two partitions hold events: 150 sends of 60 KiB (about
/// 9 MiB, over two reads' worth) in one, a few small ones in the other, each
/// entry spanning both partitions.
async fn filled() -> (tempfile::TempDir, std::sync::Arc<Store>, StateMachine) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut sm = StateMachine::open(store.clone(), GROUP, &hosted(), PARTITIONS).unwrap();
    let (a, b) = pair_on(PartitionId(1));
    let (c, d) = pair_on(PartitionId(3));
    let entries: Vec<Entry> = (0..150u64)
        .map(|i| {
            let mut batch = BatchBuilder::default();
            batch.push(PartitionId(1), &send(a, b, i, 60 << 10).encode());
            if i % 10 == 0 {
                batch.push(PartitionId(3), &send(c, d, i, 100).encode());
            }
            entry(i + 1, batch.finish())
        })
        .collect();
    let applied = sm.apply(entries).await.unwrap();
    assert!(applied.iter().flat_map(|a| &a.results).all(|r| r.is_ok()), "every command applied: {applied:?}");
    (dir, store, sm)
}

#[tokio::test]
async fn a_snapshot_of_more_events_than_one_read_carries_them_all() {
    let (_dir, store, mut sm) = filled().await;
    let next = events::read_range(&store, PartitionId(1), Offset(0), Offset(u64::MAX), usize::MAX).unwrap().len();
    assert!(next < 150, "one read stops short of every event ({next}), or this test shows nothing");

    sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let snapshot = sm.get_current_snapshot().await.expect("the snapshot can be sent").expect("one was built");

    // A replica that installs it holds the same events, in both partitions.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Store::open(other_dir.path()).unwrap();
    let mut replica = StateMachine::open(other.clone(), GROUP, &hosted(), PARTITIONS).unwrap();
    let mut receiving = replica.begin_receiving_snapshot().await.unwrap();
    // As the chunked transport does: copy the sender's file into the receiver's.
    let mut sent = (*snapshot.snapshot).into_std().await;
    let mut bytes = Vec::new();
    sent.read_to_end(&mut bytes).unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut *receiving, &bytes).await.unwrap();
    replica.install_snapshot(&snapshot.meta, receiving).await.unwrap();
    for p in hosted() {
        let (mine, theirs) = (read_all(&store, p), read_all(&other, p));
        assert!(!mine.is_empty());
        assert_eq!(mine, theirs, "partition {p}");
    }
    assert_eq!(read_all(&store, PartitionId(1)).len(), 151, "ChatOpened and 150 sends");
    assert_eq!(replica.applied_state().await.unwrap(), sm.applied_state().await.unwrap());

    // The replica's state goes on from the snapshot's: the next send of the
    // chat gets the next seq on both.
    let (a, b) = pair_on(PartitionId(1));
    let next = vec![entry(151, Batch::single(PartitionId(1), &send(a, b, 999, 10).encode()))];
    let mine = sm.apply(next.clone()).await.unwrap();
    let theirs = replica.apply(next).await.unwrap();
    assert_eq!(mine, theirs);
    assert_eq!(read_all(&store, PartitionId(1)), read_all(&other, PartitionId(1)));
}

#[tokio::test]
async fn a_damaged_snapshot_file_is_refused_and_nothing_is_written() {
    let (_dir, _store, mut sm) = filled().await;
    sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let snapshot = sm.get_current_snapshot().await.unwrap().unwrap();
    let mut good = Vec::new();
    (*snapshot.snapshot).into_std().await.read_to_end(&mut good).unwrap();
    for (what, bytes) in [
        ("a flipped byte in the middle", {
            let mut b = good.clone();
            let i = b.len() / 2;
            b[i] ^= 0x40;
            b
        }),
        ("cut short", good[..good.len() - 100].to_vec()),
        ("empty", Vec::new()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let other = Store::open(dir.path()).unwrap();
        let mut replica = StateMachine::open(other.clone(), GROUP, &hosted(), PARTITIONS).unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&bytes).unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        let err = replica.install_snapshot(&snapshot.meta, Box::new(tokio::fs::File::from_std(file))).await;
        assert!(err.is_err(), "{what}: installed");
        for p in hosted() {
            assert!(read_all(&other, p).is_empty(), "{what}: events written from a bad file");
        }
        assert_eq!(replica.applied_state().await.unwrap().0, None, "{what}");
    }
}
