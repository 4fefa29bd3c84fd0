//! A group's state after a restart equals the state of an uninterrupted run
//! (proptest, real RocksDB on disk).
//!
//! The state machine keeps the changes since its last checkpoint in memory; a
//! restart loses them, and openraft re-applies the log after the checkpointed
//! position. Here run A applies a random history without interruption; run B
//! applies a prefix, is dropped without a final checkpoint (its memory lost,
//! as in a crash), reopens its store and re-applies from where its state
//! says it is, as openraft does. Both must answer every command alike and end
//! with the same state records and events, byte for byte. Checkpoints are
//! made tiny so that they happen at random points of the history.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::sync::Arc;

use chorus_log_node::store::{StateMachine, Store, CF_EVENTS, CF_META, CF_STATE};
use chorus_log_node::types::{Applied, BatchBuilder, Entry, Proposal};
use chorus_schema::*;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, LogId};
use proptest::prelude::*;

const PARTITIONS: u16 = 2;
const USERS: u64 = 5;

fn user() -> impl Strategy<Value = UserId> {
    (1..=USERS).prop_map(UserId)
}

fn group() -> impl Strategy<Value = ChatId> {
    (1u8..=2).prop_map(|n| ChatId::group([n; 16]))
}

fn body() -> impl Strategy<Value = CommandBody> {
    use CommandBody::*;
    let seq = (0u64..6).prop_map(Seq);
    prop_oneof![
        4 => user().prop_map(|recipient| SendDirect { recipient, ciphertext: vec![7; 20], media: None }),
        3 => group().prop_map(|chat| SendGroup { chat, ciphertext: vec![8; 20], media: None }),
        2 => (group(), prop::collection::vec(user(), 0..3)).prop_map(|(chat, members)| CreateGroup { chat, name: "g".into(), members }),
        2 => (group(), user()).prop_map(|(chat, member)| AddMember { chat, member }),
        1 => (group(), user()).prop_map(|(chat, member)| RemoveMember { chat, member }),
        1 => group().prop_map(|chat| LeaveGroup { chat }),
        2 => (group(), seq.clone()).prop_map(|(chat, seq)| EditMessage { chat, seq, ciphertext: vec![9] }),
        2 => (group(), seq.clone()).prop_map(|(chat, up_to_seq)| Ack { chat, kind: ReceiptKind::Read, up_to_seq }),
        2 => Just(RegisterUser { phone: "1".into() }),
        1 => (1u32..=2).prop_map(|d| LinkDevice { device: DeviceId(d), identity_key: vec![1], name: "d".into(), token_hash: None }),
        1 => (1u32..=2, 1u32..4).prop_map(|(d, id)| UploadPrekeys { device: DeviceId(d), prekeys: vec![Prekey { id, key: vec![id as u8] }] }),
        1 => (user(), 1u32..=2).prop_map(|(target, d)| ClaimPrekey { target, target_device: DeviceId(d) }),
        1 => user().prop_map(|target| Block { target }),
    ]
}

/// Commands with small client_msg_ids, so that some are retries.
fn commands() -> impl Strategy<Value = Vec<Command>> {
    prop::collection::vec((user(), 1u32..=2, 1u64..40, body()), 1..120).prop_map(|v| {
        v.into_iter()
            .map(|(user, device, id, body)| Command {
                origin: Origin { user, device: DeviceId(device), client_msg_id: ClientMsgId(id) },
                body,
            })
            .collect()
    })
}

/// The commands packed into entries of `sizes` commands each (cycled), at
/// times that move forward.
fn entries(cmds: &[Command], sizes: &[usize]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut k = 0;
    while i < cmds.len() {
        let n = sizes[k % sizes.len()].clamp(1, cmds.len() - i);
        let mut b = BatchBuilder::default();
        for c in &cmds[i..i + n] {
            b.push(PartitionId::for_key(&c.key(), PARTITIONS), &c.encode());
        }
        let index = out.len() as u64 + 1;
        out.push(Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Proposal::new(1_000 + index * 1_000, b.finish())),
        });
        i += n;
        k += 1;
    }
    out
}

fn open(dir: &std::path::Path, checkpoint_bytes: usize) -> (Arc<Store>, StateMachine) {
    // A checkpoint still being written holds the store for a moment after
    // its state machine is gone (as a process's last write before it dies).
    let mut tries = 0;
    let store = loop {
        match Store::open(dir) {
            Ok(s) => break s,
            Err(e) if tries < 500 && e.to_string().contains("lock") => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("open store: {e}"),
        }
    };
    let partitions = [PartitionId(0), PartitionId(1)];
    let mut sm = StateMachine::open(store.clone(), GroupId(0), &partitions, PARTITIONS).unwrap();
    sm.set_checkpoint_bytes_max(checkpoint_bytes);
    (store, sm)
}

/// Every state record, event and applied position in the store, after a checkpoint.
async fn dump(store: &Store, sm: &mut StateMachine) -> Vec<(Vec<u8>, Vec<u8>)> {
    sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let mut all = Vec::new();
    for cf in [CF_STATE, CF_EVENTS, CF_META] {
        let handle = store.db().cf_handle(cf).unwrap();
        for item in store.db().iterator_cf(handle, rocksdb::IteratorMode::Start) {
            let (k, v) = item.unwrap();
            let mut key = cf.as_bytes().to_vec();
            key.extend_from_slice(&k);
            all.push((key, v.into_vec()));
        }
    }
    all
}

async fn apply(sm: &mut StateMachine, entries: &[Entry], chunk: usize) -> Vec<Applied> {
    let mut out = Vec::new();
    for c in entries.chunks(chunk.max(1)) {
        out.extend(sm.apply(c.to_vec()).await.unwrap());
    }
    out
}

async fn case(
    cmds: Vec<Command>,
    sizes: Vec<usize>,
    chunk: usize,
    crash_at: prop::sample::Index,
    checkpoint_bytes: usize,
) {
    let entries = entries(&cmds, &sizes);
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

    let (a_store, mut a) = open(a_dir.path(), checkpoint_bytes);
    let a_results = apply(&mut a, &entries, chunk).await;
    let a_dump = dump(&a_store, &mut a).await;

    let k = crash_at.index(entries.len() + 1);
    let (b_store, mut b) = open(b_dir.path(), checkpoint_bytes);
    let head = apply(&mut b, &entries[..k], chunk).await;
    assert_eq!(head[..], a_results[..k]);
    // A crash: the changes since the last checkpoint are gone with the process.
    drop(b);
    drop(b_store);
    let (b_store, mut b) = open(b_dir.path(), checkpoint_bytes);
    let (applied, _) = b.applied_state().await.unwrap();
    let from = applied.map_or(0, |l| l.index as usize);
    assert!(from <= k, "the state claims {from} entries, {k} were applied");
    // openraft re-applies the log after the checkpointed position.
    let rest = apply(&mut b, &entries[from..], chunk).await;
    assert_eq!(rest[..], a_results[from..], "re-applied entries answer as the first time");
    let b_dump = dump(&b_store, &mut b).await;
    assert!(!a_dump.is_empty(), "the applied position is always there");
    assert!(a_dump == b_dump, "state after a restart differs from an uninterrupted run");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn state_after_a_restart_equals_an_uninterrupted_run(
        cmds in commands(),
        sizes in prop::collection::vec(1usize..12, 1..4),
        chunk in 1usize..5,
        crash_at in any::<prop::sample::Index>(),
        checkpoint_bytes in 200usize..4_000,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(case(cmds, sizes, chunk, crash_at, checkpoint_bytes));
    }
}
