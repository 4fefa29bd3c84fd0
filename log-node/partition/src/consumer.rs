//! Consumer-partition rules (issue 13): a named consumer's committed offsets.
//!
//! A consumer's key is [`Key::Consumer`](chorus_schema::Key) (BLAKE3 of its
//! name), so all its commits are decided in one partition, in log order.
//! State: one record per consumer and partition, `g ‖ consumer key ‖
//! partition` → the committed offset (the next one to read).
//!
//! Rules:
//! - A commit names partitions below the cluster's partition count
//!   (`Invalid` otherwise; the schema already refused bad names, a partition
//!   named twice and too many offsets).
//! - Without `reset`, a committed offset only moves forward: an offset below
//!   the committed one is ignored for that partition (a late commit of an
//!   older instance of the consumer, a zombie, must not rewind a newer one,
//!   which would hand records out again without need). With `reset` (an
//!   operator's explicit rewind) the given offsets are taken as they are.
//! - A commit that changes something emits one `OffsetsCommitted` with the
//!   changed partitions and their new offsets; one that changes nothing (a
//!   repeat, an empty commit) emits nothing. Either way the outcome is
//!   every committed offset of the consumer, by partition: so an empty
//!   commit is a read ordered by the log, after every earlier commit.
//! - Commits are idempotent by value (absolute offsets), so they are not kept
//!   in the dedup table (their origin is all zero: the node makes them).

use chorus_schema::{ConsumerKey, EventBody, Offset, Outcome, PartitionId, PartitionOffset, RejectCode, Rejection};

use crate::kv::{self, Key, Kv};
use crate::state::Decision;

fn offset_key(consumer: &ConsumerKey, partition: PartitionId) -> Key {
    Key::new(kv::CONSUMER_OFFSET).raw(&consumer.0).u16(partition.0)
}

/// The committed offset of `consumer` in `partition`, if it ever committed one.
pub(crate) fn committed(kv: &impl Kv, consumer: &ConsumerKey, partition: PartitionId) -> Option<Offset> {
    kv::read::<u64>(kv, &offset_key(consumer, partition)).map(Offset)
}

/// Every committed offset of `consumer`, by partition.
pub(crate) fn all(kv: &impl Kv, consumer: &ConsumerKey) -> Vec<PartitionOffset> {
    let prefix = Key::new(kv::CONSUMER_OFFSET).raw(&consumer.0);
    kv.scan(prefix.bytes(), usize::from(u16::MAX) + 1)
        .into_iter()
        .map(|(k, v)| {
            let p = kv::u16_at(&k, 1 + 16);
            PartitionOffset::new(PartitionId(p), Offset(kv::decode(&k, &v)))
        })
        .collect()
}

/// Decides a `CommitOffsets`.
pub(crate) fn decide(
    kv: &impl Kv,
    partitions: u16,
    consumer: &str,
    offsets: &[PartitionOffset],
    reset: bool,
) -> Result<Decision, Rejection> {
    if let Some(bad) = offsets.iter().find(|o| o.partition.0 >= partitions) {
        return Err(Rejection::new(
            RejectCode::Invalid,
            format!("no partition {} (the cluster has {partitions})", bad.partition),
        ));
    }
    let key = ConsumerKey::of(consumer);
    let mut changed: Vec<PartitionOffset> = offsets
        .iter()
        .filter(|o| match committed(kv, &key, o.partition) {
            None => true,
            Some(c) if reset => c != o.offset,
            Some(c) => o.offset > c,
        })
        .copied()
        .collect();
    changed.sort_unstable();
    let mut now = all(kv, &key);
    for c in &changed {
        match now.binary_search_by_key(&c.partition, |o| o.partition) {
            Ok(i) => {
                if let Some(slot) = now.get_mut(i) {
                    *slot = *c;
                }
            }
            Err(i) => now.insert(i, *c),
        }
    }
    let events = if changed.is_empty() {
        Vec::new()
    } else {
        vec![EventBody::OffsetsCommitted { consumer: consumer.to_owned(), offsets: changed }]
    };
    Ok(Decision { events, outcome: Outcome::Offsets(now) })
}

/// Folds a consumer-partition event.
pub(crate) fn fold(kv: &mut impl Kv, event: &EventBody) {
    if let EventBody::OffsetsCommitted { consumer, offsets } = event {
        let key = ConsumerKey::of(consumer);
        for o in offsets {
            kv::write(kv, &offset_key(&key, o.partition), &o.offset.0);
        }
    }
}
