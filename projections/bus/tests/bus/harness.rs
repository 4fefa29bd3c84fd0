//! How the suite makes a bus, and `must_*` helpers that panic with context.

use std::time::Duration;

use chorus_bus::{Bus, Message, Subscription};

use crate::support::NatsServer;

/// How long a message that should arrive may take.
pub(crate) const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a subscription must stay silent to count as quiet.
pub(crate) const QUIET: Duration = Duration::from_millis(300);

/// A bus under test, with the server it needs (if any) kept alive.
pub(crate) struct Harness {
    pub bus: Bus,
    server: Option<NatsServer>,
}

impl Harness {
    pub(crate) async fn local() -> Harness {
        Harness { bus: Bus::local(), server: None }
    }

    pub(crate) async fn nats() -> Harness {
        let server = NatsServer::start().expect("a nats-server");
        let bus = must_connect(&server.url()).await;
        Harness { bus, server: Some(server) }
    }

    /// Another handle onto the same bus, as another process would have: a
    /// second connection for NATS, a clone for the in-process bus.
    pub(crate) async fn peer(&self) -> Bus {
        match &self.server {
            Some(server) => must_connect(&server.url()).await,
            None => self.bus.clone(),
        }
    }
}

pub(crate) async fn must_connect(url: &str) -> Bus {
    Bus::connect_nats(url).await.unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

pub(crate) async fn must_recv(sub: &mut Subscription) -> Message {
    match tokio::time::timeout(ARRIVAL_TIMEOUT, sub.next()).await {
        Ok(Some(message)) => message,
        Ok(None) => panic!("{sub:?} ended while a message was expected"),
        Err(_) => panic!("no message on {sub:?} within {ARRIVAL_TIMEOUT:?}"),
    }
}

pub(crate) async fn must_be_quiet(sub: &mut Subscription) {
    if let Ok(Some(message)) = tokio::time::timeout(QUIET, sub.next()).await {
        panic!("unexpected message on {sub:?}: {message:?}");
    }
}

/// Everything that arrives until the subscription has been quiet for [`QUIET`].
pub(crate) async fn recv_until_quiet(sub: &mut Subscription) -> Vec<Message> {
    let mut messages = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(QUIET, sub.next()).await {
        messages.push(message);
    }
    messages
}

pub(crate) fn subjects(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.subject.as_str()).collect()
}

pub(crate) fn index_payload(i: u32) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(&i.to_be_bytes())
}

pub(crate) fn payload_index(message: &Message) -> u32 {
    let bytes: [u8; 4] =
        message.payload[..].try_into().unwrap_or_else(|_| panic!("payload is not an index: {message:?}"));
    u32::from_be_bytes(bytes)
}
