//! Pure tests of the row builder's member counts and of the exporter's
//! manifest: crash (drop without finishing, orphan parts), resume, overlap.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::cast_possible_truncation)]

use std::collections::BTreeSet;

use chorus_analytics::{Exporter, Format, Manifest, Options, Pseudonymizer, Row, RowBuilder};
use chorus_schema::{
    ChatId, ClientMsgId, DeviceId, Event, EventBody, EventRecord, LogIndex, Offset, Origin, PartitionId, Seq, UserId,
};
use proptest::prelude::*;

fn record(offset: u64, user: u64, body: EventBody) -> EventRecord {
    EventRecord {
        partition: PartitionId(3),
        offset: Offset(offset),
        log_index: LogIndex(offset + 10),
        event: Event {
            at_ms: 1_000 + offset,
            origin: Origin { user: UserId(user), device: DeviceId(1), client_msg_id: ClientMsgId(offset) },
            body,
        },
    }
}

#[derive(Clone, Debug)]
enum Op {
    Add(u64),
    Remove(u64),
    Leave(u64),
    Send(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u64..12).prop_map(Op::Add),
        (1u64..12).prop_map(Op::Remove),
        (1u64..12).prop_map(Op::Leave),
        (1u64..12).prop_map(Op::Send),
    ]
}

/// A group's history as the partition would decide it (adds of
/// non-members, removes and leaves of members, sends by members only).
fn history(initial: &BTreeSet<u64>, ops: &[Op]) -> (Vec<EventRecord>, Vec<(u32, Option<u32>)>) {
    let chat = ChatId::group([7; 16]);
    let mut members = initial.clone();
    let mut seq = 1;
    let creator = *initial.iter().next().unwrap();
    let mut out = vec![record(
        0,
        creator,
        EventBody::GroupCreated {
            chat,
            seq: Seq(1),
            name: "secret group name".into(),
            members: initial.iter().copied().map(UserId).collect(),
        },
    )];
    let mut expect = vec![(count(&members), None)];
    for op in ops {
        let offset = out.len() as u64;
        let admin = *members.iter().next().unwrap_or(&creator);
        let (user, body, recipients) = match *op {
            Op::Add(u) if !members.contains(&u) => {
                members.insert(u);
                seq += 1;
                (admin, EventBody::MemberAdded { chat, seq: Seq(seq), member: UserId(u) }, None)
            }
            Op::Remove(u) if members.contains(&u) && members.len() > 1 => {
                members.remove(&u);
                seq += 1;
                (admin, EventBody::MemberRemoved { chat, seq: Seq(seq), member: UserId(u) }, None)
            }
            Op::Leave(u) if members.contains(&u) && members.len() > 1 => {
                members.remove(&u);
                seq += 1;
                (u, EventBody::MemberLeft { chat, seq: Seq(seq) }, None)
            }
            Op::Send(u) if members.contains(&u) => {
                seq += 1;
                let body = EventBody::MessageSent { chat, seq: Seq(seq), ciphertext: vec![0xAB; 33], media: None };
                (u, body, Some(count(&members) - 1))
            }
            _ => continue,
        };
        out.push(record(offset, user, body));
        expect.push((count(&members), recipients));
    }
    (out, expect)
}

fn count(m: &BTreeSet<u64>) -> u32 {
    m.len() as u32
}

proptest! {
    #[test]
    fn member_counts_follow_the_group(initial in proptest::collection::btree_set(1u64..12, 1..5),
                                      ops in proptest::collection::vec(op(), 0..60),
                                      warm in 0usize..60) {
        let (records, expect) = history(&initial, &ops);
        let mut b = RowBuilder::new(None);
        let rows: Vec<Row> = records.iter().map(|r| b.row(r)).collect();
        for (row, (members, recipients)) in rows.iter().zip(&expect) {
            prop_assert_eq!(row.members, Some(*members));
            if let Some(r) = recipients {
                prop_assert_eq!(row.recipients, Some(*r));
                prop_assert_eq!(row.ciphertext_bytes, Some(33));
            }
        }
        // A builder warmed with the records before a range start makes the
        // same rows for the range as one that saw everything.
        let warm = warm.min(records.len());
        let mut w = RowBuilder::new(None);
        records[..warm].iter().for_each(|r| w.observe(r));
        let tail: Vec<Row> = records[warm..].iter().map(|r| w.row(r)).collect();
        prop_assert_eq!(&tail[..], &rows[warm..]);
        // An unwarmed builder does not guess a group's size.
        let mut cold = RowBuilder::new(None);
        if warm > 0 && warm < records.len() {
            prop_assert_eq!(cold.row(&records[warm]).members, None);
        }
    }
}

#[test]
fn rows_carry_no_content_and_pseudonyms_replace_ids() {
    let chat = ChatId::direct(UserId(41), UserId(42));
    let recs = [
        record(0, 41, EventBody::UserRegistered { user: UserId(41), phone: "+15550001".into() }),
        record(
            1,
            41,
            EventBody::MessageSent { chat, seq: Seq(1), ciphertext: b"CIPHERTEXT-BYTES".to_vec(), media: None },
        ),
        record(2, 42, EventBody::Receipt { chat, kind: chorus_schema::ReceiptKind::Read, up_to_seq: Seq(1) }),
        record(3, 41, EventBody::ReactionSet { chat, seq: Seq(2), target: Seq(1), reaction: "SECRET-REACTION".into() }),
    ];
    let mut b = RowBuilder::new(None);
    let rows: Vec<Row> = recs.iter().map(|r| b.row(r)).collect();
    assert_eq!(rows[0].phone.as_deref(), Some("+15550001"));
    assert_eq!(rows[1].chat.map(|c| c.to_string()), Some(chat.to_string()));
    assert_eq!(
        (rows[1].kind, rows[1].members, rows[1].recipients, rows[1].ciphertext_bytes),
        ("message_sent", Some(2), Some(1), Some(16))
    );
    assert_eq!((rows[2].receipt, rows[2].up_to_seq, rows[2].sender_user), (Some("read"), Some(1), Some(42)));
    let json = serde_json::to_string(&rows).unwrap();
    assert!(!json.contains("CIPHERTEXT") && !json.contains("SECRET"));

    let p = Pseudonymizer::new("key");
    let mut b = RowBuilder::new(Some(p.clone()));
    let prows: Vec<Row> = recs.iter().map(|r| b.row(r)).collect();
    let json = serde_json::to_string(&prows).unwrap();
    assert!(
        !json.contains("+15550001")
            && !json.contains(&chat.to_string())
            && !json.contains(":41,")
            && !json.contains(":42,"),
        "{json}"
    );
    assert_eq!(prows[1].sender_user, Some(p.user(UserId(41))));
    assert_eq!(prows[0].user, prows[1].sender_user);
    assert_eq!(prows[1].chat, prows[2].chat);
}

fn row(p: u16, offset: u64) -> Row {
    Row { partition: p, offset, kind: "message_sent", ..Row::default() }
}

fn read_jsonl_parts(dir: &std::path::Path) -> Vec<(u16, u64)> {
    let m = Manifest::load(dir).unwrap().unwrap();
    let mut out = Vec::new();
    for part in &m.parts {
        for line in std::fs::read_to_string(dir.join(&part.file)).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            out.push((v["partition"].as_u64().unwrap() as u16, v["offset"].as_u64().unwrap()));
        }
    }
    out
}

#[test]
fn a_crashed_export_resumes_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { format: Format::Jsonl, part_rows: 10, ..Options::default() };
    let mut e = Exporter::create(dir.path(), opts.clone(), &[PartitionId(0), PartitionId(1)]).unwrap();
    for o in 0..25 {
        e.write(&row(0, o)).unwrap();
        e.write(&row(1, o)).unwrap();
    }
    // Crash: no finish. Parts 1..=5 are committed (50 rows), nothing open.
    // Simulate a crash later: a temp file and a renamed part the manifest misses.
    drop(e);
    std::fs::write(dir.path().join(".part-00006.jsonl.tmp"), "half").unwrap();
    std::fs::write(dir.path().join("part-00006.jsonl"), "{\"partition\":0,\"offset\":25}\n").unwrap();
    assert!(
        Exporter::create(dir.path(), opts.clone(), &[PartitionId(0), PartitionId(1)]).is_err(),
        "a second fresh export into the same dir"
    );
    let m = Manifest::load(dir.path()).unwrap().unwrap();
    assert_eq!(m.next_offsets.get(&0), Some(&25));
    assert_eq!(m.parts.len(), 5);
    assert_eq!(m.partitions, vec![0, 1]);

    let mut e = Exporter::resume(dir.path(), opts.clone()).unwrap();
    assert!(!dir.path().join("part-00006.jsonl").exists() && !dir.path().join(".part-00006.jsonl.tmp").exists());
    assert!(matches!(
        e.write(&row(0, 24)),
        Err(chorus_analytics::Error::Overlap { partition: 0, offset: 24, next: 25 })
    ));
    for o in 25..30 {
        e.write(&row(0, o)).unwrap();
    }
    e.covered(PartitionId(1), Offset(40));
    let s = e.finish().unwrap();
    assert_eq!(s.rows, 5);
    let m = Manifest::load(dir.path()).unwrap().unwrap();
    assert_eq!((m.next_offsets[&0], m.next_offsets[&1]), (30, 40));
    let mut got = read_jsonl_parts(dir.path());
    got.sort();
    let mut want: Vec<(u16, u64)> = (0..30).map(|o| (0, o)).chain((0..25).map(|o| (1, o))).collect();
    want.sort();
    assert_eq!(got, want);

    // Another key or format does not resume it.
    let other = Options { pseudonymizer: Some(Pseudonymizer::new("x")), ..opts.clone() };
    assert!(Exporter::resume(dir.path(), other).is_err());
    assert!(Exporter::resume(dir.path(), Options { format: Format::Parquet, ..opts }).is_err());
}

#[test]
fn a_parquet_part_reads_back() {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { format: Format::Parquet, row_group_rows: 1000, ..Options::default() };
    let mut e = Exporter::create(dir.path(), opts, &[PartitionId(2)]).unwrap();
    for o in 0..2500 {
        e.write(&row(2, o)).unwrap();
    }
    let s = e.finish().unwrap();
    assert_eq!(s.files.len(), 1);
    let f = std::fs::File::open(&s.files[0]).unwrap();
    let b = ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
    assert_eq!(b.metadata().num_row_groups(), 3);
    let n: usize = b.build().unwrap().map(|batch| batch.unwrap().num_rows()).sum();
    assert_eq!(n, 2500);
}

#[test]
fn a_resumed_export_keeps_member_counts_from_the_saved_groups_without_warm_up() {
    let initial: BTreeSet<u64> = [1, 2, 3].into_iter().collect();
    let ops: Vec<Op> = (0..40)
        .map(|i| match i % 4 {
            0 => Op::Add(4 + i % 7),
            1 => Op::Send(1),
            2 => Op::Remove(4 + (i + 3) % 7),
            _ => Op::Send(2),
        })
        .collect();
    let (records, _) = history(&initial, &ops);
    let mut all = RowBuilder::new(None);
    let want: Vec<Row> = records.iter().map(|r| all.row(r)).collect();

    let dir = tempfile::tempdir().unwrap();
    let opts = Options { format: Format::Jsonl, part_rows: 5, ..Options::default() };
    let mut e = Exporter::create(dir.path(), opts.clone(), &[PartitionId(3)]).unwrap();
    assert!(!e.warm(PartitionId(3)));
    let cut = records.len() / 2 / 5 * 5 + 3;
    for r in &records[..cut] {
        e.export(r).unwrap();
    }
    drop(e); // a crash: the rows after the last committed part are lost
    let mut e = Exporter::resume(dir.path(), opts).unwrap();
    assert!(e.warm(PartitionId(3)));
    let next = e.next_offset(PartitionId(3)).unwrap().0 as usize;
    assert!(next < cut && next.is_multiple_of(5), "{next}");
    for r in &records[next..] {
        e.export(r).unwrap();
    }
    e.finish().unwrap();
    let m = Manifest::load(dir.path()).unwrap().unwrap();
    let groups_files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|n| n.starts_with("groups-"))
        .collect();
    assert_eq!(groups_files, vec![m.groups_file.clone().unwrap()], "only the manifest's groups file stays");
    let mut got = Vec::new();
    for part in &m.parts {
        for line in std::fs::read_to_string(dir.path().join(&part.file)).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            got.push((v["offset"].as_u64().unwrap(), v["members"].as_u64(), v["recipients"].as_u64()));
        }
    }
    let want: Vec<_> = want.iter().map(|r| (r.offset, r.members.map(u64::from), r.recipients.map(u64::from))).collect();
    assert_eq!(got, want);
}
