//! The conformance suite: every case runs against `Bus::local()` and against
//! `Bus::connect_nats` on a real server (`on_local::*`, `on_nats::*`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_bus::subject::SUBJECT_BYTES_MAX;
use chorus_bus::{Bus, Error, Message, PAYLOAD_BYTES_MAX};
use futures::StreamExt;

use crate::harness::*;

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod on_local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&crate::harness::Harness::local().await).await
                }
            )*
        }
        mod on_nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&crate::harness::Harness::nats().await).await
                }
            )*
        }
    };
}

conformance!(
    publish_subscribe_exact,
    wildcards,
    no_delivery_to_non_matching,
    order_per_publisher,
    queue_group_delivers_to_exactly_one_member,
    request_reply,
    request_without_responder_fails_at_once,
    request_timeout,
    dropping_a_subscription_unsubscribes,
    invalid_subjects_rejected,
    payload_limit,
    many_messages_all_arrive,
    subscription_is_a_stream,
);

async fn publish_subscribe_exact(h: &Harness) {
    let publisher = h.peer().await;
    let mut sub = h.bus.subscribe("chat.c1.msg").await.unwrap();
    publisher.publish("chat.c1.msg", Bytes::from_static(b"hello")).await.unwrap();
    let message = must_recv(&mut sub).await;
    assert_eq!(
        message,
        Message { subject: "chat.c1.msg".to_owned(), payload: Bytes::from_static(b"hello"), reply: None }
    );
    publisher.flush().await.unwrap();
    must_be_quiet(&mut sub).await;
}

async fn wildcards(h: &Harness) {
    let publisher = h.peer().await;
    let mut star = h.bus.subscribe("deliver.*.msg").await.unwrap();
    let mut tail = h.bus.subscribe("deliver.>").await.unwrap();
    let mut all = h.bus.subscribe(">").await.unwrap();
    let published = ["deliver.d1.msg", "deliver.d2.typing", "deliver.d3.msg.extra", "deliver", "other.d1.msg"];
    for subject in published {
        publisher.publish(subject, Bytes::from(subject)).await.unwrap();
    }
    publisher.flush().await.unwrap();

    let star = recv_until_quiet(&mut star).await;
    assert_eq!(subjects(&star), ["deliver.d1.msg"]);
    let tail = recv_until_quiet(&mut tail).await;
    assert_eq!(subjects(&tail), ["deliver.d1.msg", "deliver.d2.typing", "deliver.d3.msg.extra"]);
    for message in &tail {
        assert_eq!(message.payload, message.subject.as_bytes(), "payload follows its subject");
    }
    // A bare `>` also sees reply traffic under `_INBOX.` (NATS flushes
    // included); everything else published must be there, in order.
    let all = recv_until_quiet(&mut all).await;
    let all: Vec<Message> = all.into_iter().filter(|m| !m.subject.starts_with("_INBOX.")).collect();
    assert_eq!(subjects(&all), published);
}

async fn no_delivery_to_non_matching(h: &Harness) {
    let publisher = h.peer().await;
    let mut sub = h.bus.subscribe("presence.u1").await.unwrap();
    for subject in ["presence.u2", "presence.u1.x", "presence", "Presence.u1", "presence.u10", "xpresence.u1"] {
        publisher.publish(subject, Bytes::new()).await.unwrap();
    }
    publisher.publish("presence.u1", Bytes::from_static(b"marker")).await.unwrap();
    let first = must_recv(&mut sub).await;
    assert_eq!(first.payload, "marker", "a non-matching subject was delivered: {first:?}");
    publisher.flush().await.unwrap();
    must_be_quiet(&mut sub).await;
}

async fn order_per_publisher(h: &Harness) {
    const PER_PUBLISHER: u32 = 1_000;
    let a = h.peer().await;
    let b = h.peer().await;
    let mut sub = h.bus.subscribe("seq.*").await.unwrap();
    // Interleave two publishers; each one's messages must stay in order.
    let send_a = async {
        for i in 0..PER_PUBLISHER {
            a.publish("seq.a", index_payload(i)).await.unwrap();
        }
    };
    let send_b = async {
        for i in 0..PER_PUBLISHER {
            b.publish("seq.b", index_payload(i)).await.unwrap();
        }
    };
    futures::join!(send_a, send_b);

    let (mut next_a, mut next_b) = (0, 0);
    for _ in 0..2 * PER_PUBLISHER {
        let message = must_recv(&mut sub).await;
        let next = match message.subject.as_str() {
            "seq.a" => &mut next_a,
            "seq.b" => &mut next_b,
            other => panic!("unexpected subject {other}"),
        };
        assert_eq!(payload_index(&message), *next, "out of order on {}", message.subject);
        *next += 1;
    }
    assert_eq!((next_a, next_b), (PER_PUBLISHER, PER_PUBLISHER));
}

async fn queue_group_delivers_to_exactly_one_member(h: &Harness) {
    const COUNT: u32 = 300;
    // Members on different handles (connections, for NATS), as several
    // projector processes would be, and on different matching patterns:
    // a group is its name.
    let (bus_b, bus_c, publisher) = (h.peer().await, h.peer().await, h.peer().await);
    let mut members = [
        h.bus.queue_subscribe("jobs.*", "workers").await.unwrap(),
        bus_b.queue_subscribe("jobs.*", "workers").await.unwrap(),
        bus_c.queue_subscribe("jobs.>", "workers").await.unwrap(),
    ];
    let mut other_group = h.bus.queue_subscribe("jobs.*", "auditors").await.unwrap();
    let mut plain = h.bus.subscribe("jobs.*").await.unwrap();

    for i in 0..COUNT {
        publisher.publish("jobs.new", index_payload(i)).await.unwrap();
    }
    publisher.flush().await.unwrap();

    let mut seen = BTreeSet::new();
    let mut total = 0;
    for (n, member) in members.iter_mut().enumerate() {
        let got = recv_until_quiet(member).await;
        assert!(!got.is_empty(), "member {n} of {} got nothing", COUNT);
        total += got.len();
        seen.extend(got.iter().map(payload_index));
    }
    assert_eq!(total, COUNT as usize, "a message went to more than one member");
    assert_eq!(seen, (0..COUNT).collect::<BTreeSet<_>>(), "a message went to no member");
    assert_eq!(recv_until_quiet(&mut other_group).await.len(), COUNT as usize);
    assert_eq!(recv_until_quiet(&mut plain).await.len(), COUNT as usize);
}

async fn request_reply(h: &Harness) {
    let responder = h.peer().await;
    let mut requests = responder.queue_subscribe("svc.echo", "echo").await.unwrap();
    let responder_task = tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            assert!(request.reply.is_some(), "a request carries a reply subject");
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&request.payload);
            responder.respond(&request, reply.into()).await.unwrap();
        }
    });

    let reply = h.bus.request("svc.echo", Bytes::from_static(b"ping"), Duration::from_secs(5)).await.unwrap();
    assert_eq!(reply, "echo:ping");

    // Concurrent requests each get their own reply.
    let replies = futures::future::join_all((0..20).map(|i| {
        let bus = h.bus.clone();
        async move {
            let reply = bus.request("svc.echo", Bytes::from(format!("{i}")), Duration::from_secs(5)).await.unwrap();
            (i, reply)
        }
    }))
    .await;
    for (i, reply) in replies {
        assert_eq!(reply, format!("echo:{i}"));
    }

    // A published (not requested) message cannot be answered.
    let mut plain = h.bus.subscribe("svc.plain").await.unwrap();
    h.bus.publish("svc.plain", Bytes::new()).await.unwrap();
    let message = must_recv(&mut plain).await;
    match h.bus.respond(&message, Bytes::new()).await {
        Err(Error::NoReplySubject { subject }) => assert_eq!(subject, "svc.plain"),
        other => panic!("expected NoReplySubject, got {other:?}"),
    }
    responder_task.abort();
}

async fn request_without_responder_fails_at_once(h: &Harness) {
    let start = Instant::now();
    let result = h.bus.request("svc.nobody", Bytes::from_static(b"?"), Duration::from_secs(10)).await;
    match result {
        Err(Error::NoResponders { subject }) => assert_eq!(subject, "svc.nobody"),
        other => panic!("expected NoResponders, got {other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "NoResponders must not wait for the timeout (took {:?})",
        start.elapsed()
    );
}

async fn request_timeout(h: &Harness) {
    let silent = h.peer().await;
    let _listening = silent.subscribe("svc.slow").await.unwrap();
    let timeout = Duration::from_millis(300);
    let start = Instant::now();
    let result = h.bus.request("svc.slow", Bytes::new(), timeout).await;
    match result {
        Err(Error::Timeout { subject, after_ms }) => {
            assert_eq!(subject, "svc.slow");
            assert_eq!(after_ms, 300);
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    let elapsed = start.elapsed();
    assert!(elapsed >= timeout, "gave up early, after {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "gave up late, after {elapsed:?}");
}

async fn dropping_a_subscription_unsubscribes(h: &Harness) {
    let sub = h.bus.subscribe("svc.gone").await.unwrap();
    drop(sub);
    h.bus.flush().await.unwrap();
    match h.bus.request("svc.gone", Bytes::new(), Duration::from_secs(5)).await {
        Err(Error::NoResponders { .. }) => {}
        other => panic!("expected NoResponders after the drop, got {other:?}"),
    }
}

/// Every invalid input, tried with every call that takes it; returns the
/// errors as text so that implementations can be compared word for word.
pub(crate) async fn rejections(bus: &Bus) -> Vec<String> {
    let long_subject = "a".repeat(SUBJECT_BYTES_MAX + 1);
    let bad_literals =
        ["", "a..b", ".a", "a.", "a b", "a\tb", "a\r\nb", "a.*", "a.>", "*", ">", "a*b", "a.b>", &long_subject];
    let bad_patterns = ["", "a..b", ".a", "a.", "a b", "a.>.b", ">.a", "a*", "a.*b", &long_subject];
    let long_group = "g".repeat(65);
    let bad_groups = ["", "two words", "tab\tgroup", &long_group];
    let timeout = Duration::from_millis(500);

    let mut errors = Vec::new();
    let mut record = |what: String, result: Result<(), Error>, want_group_error: bool| {
        match (&result, want_group_error) {
            (Err(Error::InvalidSubject { .. }), false) | (Err(Error::InvalidQueueGroup { .. }), true) => {}
            _ => panic!("{what}: expected a validation error, got {result:?}"),
        }
        errors.push(format!("{what}: {}", result.unwrap_err()));
    };
    for subject in bad_literals {
        record(format!("publish {subject:?}"), bus.publish(subject, Bytes::new()).await, false);
        record(format!("request {subject:?}"), bus.request(subject, Bytes::new(), timeout).await.map(drop), false);
        let message = Message { subject: "svc.x".to_owned(), payload: Bytes::new(), reply: Some(subject.to_owned()) };
        record(format!("respond {subject:?}"), bus.respond(&message, Bytes::new()).await, false);
    }
    for pattern in bad_patterns {
        record(format!("subscribe {pattern:?}"), bus.subscribe(pattern).await.map(drop), false);
        record(format!("queue_subscribe {pattern:?}"), bus.queue_subscribe(pattern, "g").await.map(drop), false);
    }
    for group in bad_groups {
        record(format!("queue_subscribe group {group:?}"), bus.queue_subscribe("a.b", group).await.map(drop), true);
    }
    errors
}

async fn invalid_subjects_rejected(h: &Harness) {
    let errors = rejections(&h.bus).await;
    assert_eq!(errors.len(), 14 * 3 + 10 * 2 + 4);
    // Wildcards are fine where subscribing, and what is refused is refused
    // before anything reaches the bus: it still works.
    let mut sub = h.bus.subscribe("ok.*").await.unwrap();
    let _queue = h.bus.queue_subscribe("ok.>", "group.with.dots").await.unwrap();
    h.bus.publish("ok.1", Bytes::new()).await.unwrap();
    assert_eq!(must_recv(&mut sub).await.subject, "ok.1");
}

async fn payload_limit(h: &Harness) {
    let publisher = h.peer().await;
    let mut sub = h.bus.subscribe("media.blob").await.unwrap();
    let largest = Bytes::from(vec![7u8; PAYLOAD_BYTES_MAX]);
    publisher.publish("media.blob", largest.clone()).await.unwrap();
    assert_eq!(must_recv(&mut sub).await.payload, largest);

    let too_large = Bytes::from(vec![7u8; PAYLOAD_BYTES_MAX + 1]);
    match publisher.publish("media.blob", too_large.clone()).await {
        Err(Error::PayloadTooLarge { subject, bytes, limit }) => {
            assert_eq!((subject.as_str(), bytes, limit), ("media.blob", PAYLOAD_BYTES_MAX + 1, PAYLOAD_BYTES_MAX));
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    match publisher.request("media.blob", too_large, Duration::from_secs(1)).await {
        Err(Error::PayloadTooLarge { limit, .. }) => assert_eq!(limit, PAYLOAD_BYTES_MAX),
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    publisher.flush().await.unwrap();
    must_be_quiet(&mut sub).await;
}

async fn many_messages_all_arrive(h: &Harness) {
    const COUNT: u32 = 10_000;
    let publisher = h.peer().await;
    let mut sub = h.bus.subscribe("bulk.>").await.unwrap();
    let receiver = tokio::spawn(async move {
        for i in 0..COUNT {
            let message = must_recv(&mut sub).await;
            assert_eq!(message.subject, "bulk.deliveries");
            assert_eq!(payload_index(&message), i, "message lost or reordered");
        }
        sub
    });
    for i in 0..COUNT {
        publisher.publish("bulk.deliveries", index_payload(i)).await.unwrap();
    }
    publisher.flush().await.unwrap();
    let mut sub = receiver.await.unwrap();
    must_be_quiet(&mut sub).await;
    assert_eq!(h.bus.dropped(), 0);
    assert_eq!(publisher.dropped(), 0);
}

async fn subscription_is_a_stream(h: &Harness) {
    let mut sub = h.bus.subscribe("stream.*").await.unwrap();
    for subject in ["stream.a", "stream.b", "stream.c"] {
        h.bus.publish(subject, Bytes::new()).await.unwrap();
    }
    let received: Vec<Message> = tokio::time::timeout(ARRIVAL_TIMEOUT, sub.by_ref().take(3).collect())
        .await
        .expect("three messages through the Stream impl");
    assert_eq!(subjects(&received), ["stream.a", "stream.b", "stream.c"]);
}
