//! A stream of messages on one subscription, from either implementation.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;

use crate::local::LocalReceiver;
use crate::Message;

/// Messages matching one subscription, in the order each publisher sent
/// them. Dropping it unsubscribes. Also a [`futures::Stream`].
///
/// The stream ends (`None`) only when the bus itself is gone; a NATS
/// subscription survives reconnects.
pub struct Subscription {
    inner: Inner,
}

enum Inner {
    Nats(async_nats::Subscriber),
    Local(LocalReceiver),
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner {
            Inner::Nats(_) => "nats",
            Inner::Local(_) => "local",
        };
        f.debug_struct("Subscription").field("bus", &kind).finish()
    }
}

impl Subscription {
    pub(crate) fn nats(subscriber: async_nats::Subscriber) -> Subscription {
        Subscription { inner: Inner::Nats(subscriber) }
    }

    pub(crate) fn local(receiver: LocalReceiver) -> Subscription {
        Subscription { inner: Inner::Local(receiver) }
    }

    /// The next message, or `None` once the bus is closed.
    pub async fn next(&mut self) -> Option<Message> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        match &mut self.inner {
            Inner::Local(receiver) => receiver.rx.poll_recv(cx),
            Inner::Nats(subscriber) => Pin::new(subscriber).poll_next(cx).map(|message| {
                message.map(|m| Message {
                    subject: m.subject.to_string(),
                    payload: m.payload,
                    reply: m.reply.map(|r| r.to_string()),
                })
            }),
        }
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.get_mut().poll_message(cx)
    }
}
