//! What only the NATS bus can show: surviving a server restart, connection
//! errors, and that it refuses exactly what the local bus refuses.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_bus::{Bus, Error, LOCAL_SUBSCRIPTION_BUFFER};

use crate::harness::*;
use crate::support::NatsServer;

/// How long the client may take to notice a dead server and to come back.
const RECONNECT_DEADLINE: Duration = Duration::from_secs(30);

async fn must_become(bus: &Bus, connected: bool) {
    let deadline = Instant::now() + RECONNECT_DEADLINE;
    while bus.is_connected() != connected {
        assert!(
            Instant::now() < deadline,
            "client still {} after {RECONNECT_DEADLINE:?}",
            if connected { "disconnected" } else { "connected" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reconnects_after_server_restart_and_subscriptions_work_again() {
    let mut server = NatsServer::start().expect("a nats-server");
    let bus = must_connect(&server.url()).await;
    let mut sub = bus.subscribe("edge.e1.deliver").await.unwrap();
    let mut requests = bus.queue_subscribe("svc.ping", "ping").await.unwrap();
    let responder = bus.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            responder.respond(&request, Bytes::from_static(b"pong")).await.unwrap();
        }
    });
    bus.publish("edge.e1.deliver", Bytes::from_static(b"before")).await.unwrap();
    assert_eq!(must_recv(&mut sub).await.payload, "before");

    server.kill();
    must_become(&bus, false).await;
    server.ensure_running().expect("the nats-server restarts");
    must_become(&bus, true).await;

    // The restarted server knows nothing; the client re-sends its
    // subscriptions after reconnecting. A fresh connection publishes until
    // the re-sent subscription is in place (moments after the reconnect).
    let other = must_connect(&server.url()).await;
    let deadline = Instant::now() + RECONNECT_DEADLINE;
    loop {
        other.publish("edge.e1.deliver", Bytes::from_static(b"after")).await.unwrap();
        if let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
            assert_eq!(message.payload, "after");
            break;
        }
        assert!(Instant::now() < deadline, "subscription not restored after reconnect");
    }
    let reply = other
        .request("svc.ping", Bytes::new(), Duration::from_secs(5))
        .await
        .expect("the queue subscription answers again");
    assert_eq!(reply, "pong");
    // And the reconnected client itself publishes and requests.
    bus.publish("edge.e1.deliver", Bytes::from_static(b"own")).await.unwrap();
    let own = loop {
        let message = must_recv(&mut sub).await;
        if message.payload != "after" {
            break message;
        }
    };
    assert_eq!(own.payload, "own");
    assert_eq!(bus.request("svc.ping", Bytes::new(), Duration::from_secs(5)).await.unwrap(), "pong");
    // New subscriptions work too.
    let mut late = bus.subscribe("edge.e2.deliver").await.unwrap();
    other.publish("edge.e2.deliver", Bytes::new()).await.unwrap();
    must_recv(&mut late).await;
}

#[tokio::test]
async fn connect_to_nothing_is_a_connect_error() {
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("nats://127.0.0.1:{}", listener.local_addr().unwrap().port())
    };
    match Bus::connect_nats(&url).await {
        Err(Error::Connect { url: got, reason }) => {
            assert_eq!(got, url);
            assert!(!reason.is_empty());
        }
        other => panic!("expected Connect error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_is_refused_identically_by_both_buses() {
    let nats = Harness::nats().await;
    let local = Harness::local().await;
    let from_nats = crate::suite::rejections(&nats.bus).await;
    let from_local = crate::suite::rejections(&local.bus).await;
    assert_eq!(from_nats, from_local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_drops_are_counted() {
    let h = Harness::nats().await;
    let publisher = h.peer().await;
    let _never_read = h.bus.subscribe("flood").await.unwrap();
    for i in 0..(LOCAL_SUBSCRIPTION_BUFFER + 1_000) as u32 {
        publisher.publish("flood", index_payload(i)).await.unwrap();
    }
    publisher.flush().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.bus.dropped() == 0 {
        assert!(Instant::now() < deadline, "no slow-consumer drop was counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(publisher.dropped(), 0, "drops are counted where the subscriber is");
}
