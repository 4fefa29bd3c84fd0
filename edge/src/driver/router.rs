//! [`Router`]: from the bus to the connections of the users a message is for.
//!
//! The edge takes the deliveries of the chats of its connected users
//! (`chorus.deliver.<chat>`, see [`super::interest`]), every receipt change
//! (`chorus.receipt.>`) and account update (`chorus.account.>`: a device
//! linked, unlinked or logged out), and hands each to the connections of its
//! recipients that are logged in here. A connection that cannot keep up (its
//! queue is full) is marked lagged and closed; its client reconnects and syncs.
//!
//! Registering a connection enforces the per-device and per-user caps: beyond
//! them the oldest connection of the device (or user) is evicted. The newest
//! wins because a client that reconnects after its network changed leaves a
//! connection behind that the edge only notices at its idle timeout;
//! refusing the new one would lock the user out until then. A thief of the
//! token gains nothing from evicting: the token already gives them the
//! account.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chorus_schema::bus::{subject, AccountUpdate, Delivery, KeysLowUpdate, ReceiptStatus, ReceiptUpdate, TypingSignal};
use chorus_schema::{ChatId, DeviceId, EventRecord, ReceiptKind, UserId};
use tracing::warn;

use super::mailbox::{Mailbox, Offer};
use crate::session::Item;

/// What the router hands a connection.
#[derive(Debug)]
pub(crate) enum Routed {
    /// One item for every connection of its recipients: decoded and its
    /// frame encoded once, shared.
    Delivery(Arc<Item>),
    Receipt(ReceiptUpdate),
    /// A device of the user was linked, unlinked or logged out.
    Account(AccountUpdate),
    // ---- E2EE (issue 14) ----
    /// A claim took a device of the user below the low watermark of keys.
    KeysLow(KeysLowUpdate),
    /// The user joined this chat, and the edge now takes its deliveries:
    /// catch up on what came before.
    Joined(ChatId),
    /// The user joined this chat, but the edge could not take its
    /// deliveries: the connection must close (its client reconnects).
    JoinFailed(ChatId),
    /// The presence of a user this connection watches (see `presence.rs`).
    Presence {
        user: UserId,
        visible: bool,
        online: bool,
        last_seen_ms: u64,
    },
    /// `user` is typing (or stopped) in `chat`, a chat of this user.
    Typing {
        chat: chorus_schema::ChatId,
        user: UserId,
        typing: bool,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub(crate) conn: u64,
    pub(crate) device: DeviceId,
    pub(crate) mailbox: Arc<Mailbox>,
}

/// Most logged-in connections per device and per user.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Caps {
    pub(crate) per_device: usize,
    pub(crate) per_user: usize,
}

/// Logged-in connections by user.
#[derive(Debug, Default)]
pub(crate) struct Router {
    routes: Mutex<HashMap<UserId, Vec<Route>>>,
    pub(crate) routed: AtomicU64,
    pub(crate) lagged: AtomicU64,
    /// Connections closed because a newer one of their device or user came.
    pub(crate) evicted: AtomicU64,
}

impl Router {
    /// Routes `user`'s items to `route` too, evicting the oldest
    /// connections of its device and of the user beyond `caps`.
    pub(crate) fn register(&self, user: UserId, route: Route, caps: Caps) {
        let mut routes = crate::lock(&self.routes);
        let list = routes.entry(user).or_default();
        // Oldest first: routes are pushed in login order.
        while list.iter().filter(|r| r.device == route.device).count() >= caps.per_device {
            // Found: the count above is positive.
            let Some(i) = list.iter().position(|r| r.device == route.device) else { break };
            let old = list.remove(i);
            let reason = format!(
                "replaced by a newer connection of this device (connections_per_device_max {})",
                caps.per_device
            );
            old.mailbox.evict(reason);
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        while list.len() >= caps.per_user {
            let old = list.remove(0);
            let reason =
                format!("replaced by a newer connection of this user (connections_per_user_max {})", caps.per_user);
            old.mailbox.evict(reason);
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        list.push(route);
    }

    /// The connections routed for `user` (tests).
    #[cfg(test)]
    pub(crate) fn routes_of(&self, user: UserId) -> Vec<u64> {
        self.routes
            .lock()
            .expect("routes lock")
            .get(&user)
            .map_or_else(Vec::new, |v| v.iter().map(|r| r.conn).collect())
    }

    pub(crate) fn unregister(&self, user: UserId, conn: u64) {
        let mut routes = crate::lock(&self.routes);
        if let Some(v) = routes.get_mut(&user) {
            v.retain(|r| r.conn != conn);
            if v.is_empty() {
                routes.remove(&user);
            }
        }
    }

    fn send(&self, users: &[UserId], mut make: impl FnMut() -> Routed) {
        let routes = crate::lock(&self.routes);
        for user in users {
            for route in routes.get(user).into_iter().flatten() {
                match route.mailbox.offer(make()) {
                    Offer::Queued => {
                        self.routed.fetch_add(1, Ordering::Relaxed);
                    }
                    Offer::Lagged { first: true } => {
                        self.lagged.fetch_add(1, Ordering::Relaxed);
                    }
                    Offer::Lagged { first: false } | Offer::Gone => {}
                }
            }
        }
    }

    /// A message of `chorus.deliver.<chat>`, `chorus.receipt.>`, `chorus.account.>` or `chorus.typing.>`.
    /// A delivery's record is a slice of `payload` (no copy) until it is
    /// decoded, once, for every connection it goes to.
    pub(crate) fn dispatch(&self, subject: &str, payload: &Bytes) {
        if subject.starts_with(subject::DELIVER_PREFIX) {
            let delivery = match Delivery::decode(payload) {
                Ok(d) => d,
                Err(e) => return warn!(%subject, error = %e, "undecodable delivery"),
            };
            let record = match EventRecord::decode(&delivery.record) {
                Ok(r) => r,
                Err(e) => return warn!(%subject, error = %e, "undecodable delivery record"),
            };
            let body = &record.event.body;
            if (body.chat(), body.seq()) != (Some(delivery.chat), Some(delivery.seq)) {
                return warn!(%subject, chat = %delivery.chat, seq = %delivery.seq, "delivery record of another item");
            }
            let item = Item::new(record);
            self.send(&delivery.recipients, || Routed::Delivery(item.clone()));
        } else if subject.starts_with(subject::RECEIPT_PREFIX) {
            match ReceiptUpdate::decode(payload) {
                Ok(update) => self.send(&[update.sender], || Routed::Receipt(update)),
                Err(e) => warn!(%subject, error = %e, "undecodable receipt update"),
            }
        } else if subject.starts_with(subject::ACCOUNT_PREFIX) && subject.ends_with(subject::KEYS_SUFFIX) {
            match KeysLowUpdate::decode(payload) {
                Ok(update) => self.send(&[update.user], || Routed::KeysLow(update)),
                Err(e) => warn!(%subject, error = %e, "undecodable keys low update"),
            }
        } else if subject.starts_with(subject::ACCOUNT_PREFIX) {
            match AccountUpdate::decode(payload) {
                Ok(update) => self.send(&[update.user], || Routed::Account(update)),
                Err(e) => warn!(%subject, error = %e, "undecodable account update"),
            }
        } else if subject.starts_with(subject::TYPING_PREFIX) {
            match TypingSignal::decode(payload) {
                Ok(t) => {
                    let (chat, user, typing) = (t.chat, t.user, t.typing);
                    // Never to the typist's own devices, whatever the signal says.
                    let recipients: Vec<UserId> = t.recipients.into_iter().filter(|u| *u != user).collect();
                    self.send(&recipients, || Routed::Typing { chat, user, typing });
                }
                Err(e) => warn!(%subject, error = %e, "undecodable typing signal"),
            }
        }
    }
}

/// The tick a receipt update shows, if any (`Sent` is the sender's own ack).
pub(crate) fn receipt_kind(status: ReceiptStatus) -> Option<ReceiptKind> {
    match status {
        ReceiptStatus::Sent => None,
        ReceiptStatus::Delivered => Some(ReceiptKind::Delivered),
        ReceiptStatus::Read => Some(ReceiptKind::Read),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::super::mailbox::{Bounds, Mail, Room};
    use super::*;

    fn route(conn: u64, device: u32) -> Route {
        let bounds = Bounds { input_bytes_max: 1024, routed_max: 8, routed_bytes_max: 1024 };
        Route { conn, device: DeviceId(device), mailbox: Arc::new(Mailbox::new(bounds, Arc::new(AtomicUsize::new(0)))) }
    }

    fn message(chat: chorus_schema::ChatId, seq: u64) -> EventRecord {
        use chorus_schema::{ClientMsgId, Event, EventBody, Origin, PartitionId, Seq};
        EventRecord {
            partition: PartitionId(0),
            offset: chorus_schema::Offset(seq),
            log_index: chorus_schema::LogIndex(seq),
            event: Event {
                at_ms: 1,
                origin: Origin { user: UserId(1), device: DeviceId(1), client_msg_id: ClientMsgId(seq) },
                body: EventBody::MessageSent { chat, seq: Seq(seq), ciphertext: vec![0xab; 300], media: None },
            },
        }
    }

    fn routed_item(route: &Route) -> Arc<Item> {
        match route.mailbox.try_take(Room::Free) {
            Some(Mail::Routed(Routed::Delivery(item))) => item,
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    #[test]
    fn a_delivery_is_decoded_once_and_its_frame_shared_by_every_recipient() {
        let r = Router::default();
        let caps = Caps { per_device: 4, per_user: 4 };
        let (a, b, c) = (route(1, 1), route(2, 2), route(3, 1));
        r.register(UserId(1), a.clone(), caps);
        r.register(UserId(1), b.clone(), caps);
        r.register(UserId(2), c.clone(), caps);
        let chat = chorus_schema::ChatId::direct(UserId(1), UserId(2));
        let record = message(chat, 1);
        let recipients = [UserId(1), UserId(2)];
        let payload = Delivery::encode_parts(&chat, chorus_schema::Seq(1), &recipients, &record.encode());
        r.dispatch(&subject::deliver(&chat), &payload);
        let items = [routed_item(&a), routed_item(&b), routed_item(&c)];
        assert_eq!(items[0].record(), &record);
        for item in &items[1..] {
            assert!(Arc::ptr_eq(item, &items[0]), "one item for every connection");
        }
        let frame = items[0].frame().expect("a message has a frame");
        assert_eq!(
            items[0].server_frame().map(|f| f.kind()),
            Some("Deliver"),
            "the shared bytes are the length-prefixed Deliver frame"
        );
        assert_eq!(
            frame.len(),
            4 + usize::try_from(u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]])).unwrap()
        );
        assert_eq!(r.routed.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_delivery_whose_record_is_of_another_item_or_garbage_is_dropped() {
        let r = Router::default();
        let a = route(1, 1);
        r.register(UserId(1), a.clone(), Caps { per_device: 4, per_user: 4 });
        let chat = chorus_schema::ChatId::direct(UserId(1), UserId(2));
        let other = chorus_schema::ChatId::direct(UserId(1), UserId(3));
        // The record says seq 2 of another chat: not what the delivery claims.
        let forged = Delivery::encode_parts(&chat, chorus_schema::Seq(1), &[UserId(1)], &message(other, 2).encode());
        r.dispatch(&subject::deliver(&chat), &forged);
        let garbage = Delivery::encode_parts(&chat, chorus_schema::Seq(1), &[UserId(1)], b"not a record");
        r.dispatch(&subject::deliver(&chat), &garbage);
        r.dispatch(&subject::deliver(&chat), &Bytes::from_static(b"\x00\x01"));
        assert!(a.mailbox.try_take(Room::Free).is_none());
        assert_eq!(r.routed.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_login_beyond_the_device_or_user_cap_evicts_the_oldest() {
        let r = Router::default();
        let caps = Caps { per_device: 2, per_user: 3 };
        let user = UserId(7);
        let (a1, a2, a3) = (route(1, 1), route(2, 1), route(3, 1));
        r.register(user, a1.clone(), caps);
        r.register(user, a2.clone(), caps);
        assert_eq!(r.routes_of(user), vec![1, 2]);
        // A third connection of device 1: its oldest goes.
        r.register(user, a3.clone(), caps);
        assert_eq!(r.routes_of(user), vec![2, 3]);
        assert!(
            matches!(a1.mailbox.try_take(Room::Full), Some(Mail::Evicted(m)) if m.contains("connections_per_device_max 2"))
        );
        assert!(a2.mailbox.try_take(Room::Full).is_none());
        // Other devices count towards the user's cap of 3.
        r.register(user, route(4, 2), caps);
        r.register(user, route(5, 3), caps);
        assert_eq!(r.routes_of(user), vec![3, 4, 5]);
        assert!(
            matches!(a2.mailbox.try_take(Room::Full), Some(Mail::Evicted(m)) if m.contains("connections_per_user_max 3"))
        );
        assert_eq!(r.evicted.load(Ordering::Relaxed), 2);
        // An evicted connection's own unregister changes nothing.
        r.unregister(user, 1);
        assert_eq!(r.routes_of(user), vec![3, 4, 5]);
    }
}
