//! [`Router`]: from the bus to the connections of the users a message is for.
//!
//! The edge subscribes to every delivery (`chorus.deliver.>`), receipt
//! change (`chorus.receipt.>`) and account update (`chorus.account.>`: a
//! device linked, unlinked or logged out) and hands each to the connections
//! of its recipients that are logged in here. A connection that cannot keep up (its
//! queue is full) is marked lagged and closed; its client reconnects and syncs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chorus_projections::wire::{self, AccountUpdate, Delivery, ReceiptUpdate};
use chorus_projections::ReceiptStatus;
use chorus_schema::{EventRecord, ReceiptKind, UserId};
use tracing::{debug, warn};

use super::mailbox::{Mailbox, Offer};

/// What the router hands a connection.
#[derive(Debug)]
pub(crate) enum Routed {
    Delivery(Arc<EventRecord>),
    Receipt(ReceiptUpdate),
    /// A device of the user was linked, unlinked or logged out.
    Account(AccountUpdate),
}

#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub(crate) conn: u64,
    pub(crate) mailbox: Arc<Mailbox>,
}

/// Logged-in connections by user.
#[derive(Debug, Default)]
pub(crate) struct Router {
    routes: Mutex<HashMap<UserId, Vec<Route>>>,
    pub(crate) routed: AtomicU64,
    pub(crate) lagged: AtomicU64,
}

impl Router {
    pub(crate) fn register(&self, user: UserId, route: Route) {
        self.routes.lock().expect("routes lock").entry(user).or_default().push(route);
    }

    pub(crate) fn unregister(&self, user: UserId, conn: u64) {
        let mut routes = self.routes.lock().expect("routes lock");
        if let Some(v) = routes.get_mut(&user) {
            v.retain(|r| r.conn != conn);
            if v.is_empty() {
                routes.remove(&user);
            }
        }
    }

    fn send(&self, users: &[UserId], mut make: impl FnMut() -> Routed) {
        let routes = self.routes.lock().expect("routes lock");
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

    /// A message of `chorus.deliver.>`, `chorus.receipt.>` or `chorus.account.>`.
    pub(crate) fn dispatch(&self, subject: &str, payload: &[u8]) {
        if subject.starts_with(wire::DELIVER_PREFIX) {
            let delivery: Delivery = match wire::decode_payload(payload) {
                Ok(d) => d,
                Err(e) => return warn!(%subject, error = %e, "undecodable delivery"),
            };
            if delivery.record.is_empty() {
                // Too large for the bus: the connections see a gap at the next
                // item and fill it from the log.
                return debug!(chat = %delivery.chat, seq = %delivery.seq, "delivery without its record");
            }
            let record = match EventRecord::decode(&delivery.record) {
                Ok(r) => Arc::new(r),
                Err(e) => return warn!(%subject, error = %e, "undecodable delivery record"),
            };
            self.send(&delivery.recipients, || Routed::Delivery(record.clone()));
        } else if subject.starts_with(wire::RECEIPT_PREFIX) {
            match wire::decode_payload::<ReceiptUpdate>(payload) {
                Ok(update) => self.send(&[update.sender], || Routed::Receipt(update)),
                Err(e) => warn!(%subject, error = %e, "undecodable receipt update"),
            }
        } else if subject.starts_with(wire::ACCOUNT_PREFIX) {
            match wire::decode_payload::<AccountUpdate>(payload) {
                Ok(update) => self.send(&[update.user], || Routed::Account(update)),
                Err(e) => warn!(%subject, error = %e, "undecodable account update"),
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
