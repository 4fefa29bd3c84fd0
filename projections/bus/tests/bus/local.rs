//! What only the in-process bus can show exactly: its drop policy and its
//! round robin.

use std::time::Duration;

use bytes::Bytes;
use chorus_bus::{Bus, Error, LOCAL_SUBSCRIPTION_BUFFER};

use crate::harness::*;

#[tokio::test]
async fn slow_subscriber_loses_the_overflow_and_it_is_counted() {
    let bus = Bus::local();
    let mut slow = bus.subscribe("flood").await.unwrap();
    let overflow = 7;
    for i in 0..(LOCAL_SUBSCRIPTION_BUFFER + overflow) as u32 {
        // Publishing never waits for a reader.
        bus.publish("flood", index_payload(i)).await.unwrap();
    }
    assert_eq!(bus.dropped(), overflow as u64);
    // The oldest messages are kept, the newest dropped.
    for i in 0..LOCAL_SUBSCRIPTION_BUFFER as u32 {
        assert_eq!(payload_index(&must_recv(&mut slow).await), i);
    }
    must_be_quiet(&mut slow).await;
    // Once it has caught up it receives again.
    bus.publish("flood", index_payload(0)).await.unwrap();
    must_recv(&mut slow).await;
    assert_eq!(bus.dropped(), overflow as u64);
}

#[tokio::test]
async fn queue_group_members_take_turns() {
    let bus = Bus::local();
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(bus.queue_subscribe("turns.*", "g").await.unwrap());
    }
    for i in 0..9 {
        bus.publish("turns.x", index_payload(i)).await.unwrap();
    }
    let mut got = Vec::new();
    for member in &mut members {
        got.push(recv_until_quiet(member).await.iter().map(payload_index).collect::<Vec<_>>());
    }
    got.sort();
    assert_eq!(got, [vec![0, 3, 6], vec![1, 4, 7], vec![2, 5, 8]]);
}

#[tokio::test]
async fn queue_group_skips_a_full_member() {
    let bus = Bus::local();
    let mut a = bus.queue_subscribe("work", "g").await.unwrap();
    let _b = bus.queue_subscribe("work", "g").await.unwrap();
    // Fill both members, then one more: nobody has room, one drop.
    for i in 0..(2 * LOCAL_SUBSCRIPTION_BUFFER + 1) as u32 {
        bus.publish("work", index_payload(i)).await.unwrap();
    }
    assert_eq!(bus.dropped(), 1);
    // `a` catches up, `b` stays full: every message goes to `a`, none is lost.
    assert_eq!(recv_until_quiet(&mut a).await.len(), LOCAL_SUBSCRIPTION_BUFFER);
    for i in 0..10 {
        bus.publish("work", index_payload(i)).await.unwrap();
    }
    assert_eq!(recv_until_quiet(&mut a).await.len(), 10);
    assert_eq!(bus.dropped(), 1);
}

#[tokio::test]
async fn extra_replies_are_discarded_not_counted_as_drops() {
    let bus = Bus::local();
    let mut requests = bus.subscribe("svc.chatty").await.unwrap();
    let responder = bus.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            for reply in ["first", "second", "third"] {
                responder.respond(&request, Bytes::from(reply)).await.unwrap();
            }
        }
    });
    let reply = bus.request("svc.chatty", Bytes::new(), Duration::from_secs(5)).await.unwrap();
    assert_eq!(reply, "first");
    assert_eq!(bus.dropped(), 0);
}

#[tokio::test]
async fn separate_local_buses_are_separate() {
    let one = Bus::local();
    let other = Bus::local();
    let mut sub = one.subscribe("x").await.unwrap();
    other.publish("x", Bytes::new()).await.unwrap();
    must_be_quiet(&mut sub).await;
    assert!(matches!(other.request("x", Bytes::new(), Duration::from_secs(1)).await, Err(Error::NoResponders { .. })));
    assert!(one.is_connected());
}
