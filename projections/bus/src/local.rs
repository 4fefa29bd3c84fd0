//! The in-process bus of embedded mode (`chorus dev`).
//!
//! A registry of subscriptions behind one mutex: literal subscriptions are
//! indexed by subject (the common case: device and inbox subjects), wildcard
//! subscriptions are matched one by one. Publishing never awaits: it matches,
//! `try_send`s into each subscription's bounded channel and returns, so a
//! publisher's messages reach every subscription in the order it sent them.
//!
//! # Slow subscribers
//! Each subscription buffers at most [`LOCAL_SUBSCRIPTION_BUFFER`] messages.
//! When that buffer is full the message is **dropped for that subscription**
//! and [`LocalBus::dropped`] goes up by one, like NATS core drops for a slow
//! consumer; the publisher is never slowed down by a reader. Consumers must
//! treat the bus as a fast path and recover gaps from the log. A queue group
//! first tries its other members before dropping (as the NATS server does).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::subject;
use crate::subscription::Subscription;
use crate::Message;

/// How many undelivered messages one local subscription holds before new
/// ones are dropped. Equal to the async-nats client's per-subscription
/// capacity, which [`crate::NatsBus`] sets explicitly, so a consumer falls
/// behind at the same point in both modes.
pub const LOCAL_SUBSCRIPTION_BUFFER: usize = 64 * 1024;

/// The largest payload the local bus carries: the NATS server's default
/// `max_payload` (1 MiB), so that embedded mode refuses what a default
/// cluster refuses.
pub const PAYLOAD_BYTES_MAX: usize = 1024 * 1024;

/// Prefix of the reply subjects of local requests (as NATS's `_INBOX`).
const INBOX_PREFIX: &str = "_INBOX.local";

/// The in-process bus. Cheap to clone: clones share one registry.
#[derive(Clone, Default)]
pub struct LocalBus {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    registry: Mutex<Registry>,
    dropped: AtomicU64,
    next_inbox: AtomicU64,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    /// Ids of subscriptions without wildcards, by their subject.
    literal: HashMap<String, Vec<u64>>,
    /// Ids of subscriptions with a wildcard, matched one by one.
    wildcard: Vec<u64>,
    /// Round-robin state of each queue group, by group name. As in NATS, a
    /// group is its name: members on different (matching) subjects share it.
    groups: HashMap<String, GroupState>,
}

struct Entry {
    pattern: String,
    group: Option<String>,
    tx: mpsc::Sender<Message>,
    /// Messages dropped because this subscription's buffer was full.
    dropped: u64,
    purpose: Purpose,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Subscription,
    /// The reply inbox of one request: only the first reply matters, later
    /// ones are discarded without counting as slow-consumer drops.
    RequestInbox,
}

#[derive(Default)]
struct GroupState {
    members: usize,
    cursor: usize,
}

impl std::fmt::Debug for LocalBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBus")
            .field("subscriptions", &self.registry().entries.len())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl LocalBus {
    /// A new, empty bus.
    pub fn new() -> LocalBus {
        LocalBus::default()
    }

    /// Messages dropped so far because a subscriber's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// See [`crate::Bus::publish`].
    ///
    /// # Errors
    /// [`Error::InvalidSubject`], [`Error::PayloadTooLarge`].
    pub fn publish(&self, subject: &str, payload: Bytes) -> Result<()> {
        subject::validate_literal(subject)?;
        check_payload(subject, &payload)?;
        self.deliver(subject, None, payload);
        Ok(())
    }

    /// See [`crate::Bus::subscribe`] and [`crate::Bus::queue_subscribe`].
    ///
    /// # Errors
    /// [`Error::InvalidSubject`], [`Error::InvalidQueueGroup`].
    pub fn subscribe(&self, pattern: &str, group: Option<&str>) -> Result<Subscription> {
        subject::validate_pattern(pattern)?;
        if let Some(group) = group {
            subject::validate_queue_group(group)?;
        }
        Ok(self.register(pattern, group, LOCAL_SUBSCRIPTION_BUFFER, Purpose::Subscription))
    }

    /// See [`crate::Bus::request`].
    ///
    /// # Errors
    /// [`Error::InvalidSubject`], [`Error::PayloadTooLarge`],
    /// [`Error::NoResponders`] at once when nobody subscribes to `subject`,
    /// [`Error::Timeout`] when nobody replies in time.
    pub async fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> Result<Bytes> {
        subject::validate_literal(subject)?;
        check_payload(subject, &payload)?;
        let n = self.shared.next_inbox.fetch_add(1, Ordering::Relaxed);
        let inbox = format!("{INBOX_PREFIX}.{n}");
        let mut replies = self.register(&inbox, None, 1, Purpose::RequestInbox);
        if self.deliver(subject, Some(inbox), payload) == 0 {
            return Err(Error::NoResponders { subject: subject.to_owned() });
        }
        match tokio::time::timeout(timeout, replies.next()).await {
            Ok(Some(reply)) => Ok(reply.payload),
            Ok(None) => Err(Error::Closed),
            Err(_elapsed) => Err(Error::Timeout {
                subject: subject.to_owned(),
                after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the registry half
        // updated in a way that matters more than losing the bus, so keep
        // serving rather than poisoning every later call.
        self.shared.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn register(&self, pattern: &str, group: Option<&str>, capacity: usize, purpose: Purpose) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity);
        let mut registry = self.registry();
        let id = registry.next_id;
        registry.next_id += 1;
        if subject::has_wildcard(pattern) {
            registry.wildcard.push(id);
        } else {
            registry.literal.entry(pattern.to_owned()).or_default().push(id);
        }
        if let Some(group) = group {
            registry.groups.entry(group.to_owned()).or_default().members += 1;
        }
        registry.entries.insert(
            id,
            Entry { pattern: pattern.to_owned(), group: group.map(str::to_owned), tx, dropped: 0, purpose },
        );
        drop(registry);
        Subscription::local(LocalReceiver { rx, _registration: Registration { bus: Arc::downgrade(&self.shared), id } })
    }

    /// Hands one message to every matching plain subscription and to one
    /// member of every matching queue group. Returns how many subscriptions
    /// matched (whether or not their buffers had room): the "interest" that
    /// decides `NoResponders`.
    fn deliver(&self, subject: &str, reply: Option<String>, payload: Bytes) -> usize {
        let message = Message { subject: subject.to_owned(), payload, reply };
        let mut registry = self.registry();
        let registry = &mut *registry;
        let mut matched: Vec<u64> = registry.literal.get(subject).cloned().unwrap_or_default();
        matched.extend(
            registry
                .wildcard
                .iter()
                .copied()
                .filter(|id| registry.entries.get(id).is_some_and(|e| subject::matches(&e.pattern, subject))),
        );

        let mut closed = Vec::new();
        let mut groups: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for &id in &matched {
            // The index lists only registered ids.
            let Some(entry) = registry.entries.get(&id) else { continue };
            match &entry.group {
                Some(group) => groups.entry(group.clone()).or_default().push(id),
                None => {
                    if let Err(full) = self.offer(registry, id, &message, &mut closed) {
                        self.count_drop(registry, full);
                    }
                }
            }
        }
        for (group, mut members) in groups {
            // Sorted ids make the round robin independent of the index
            // layout, so the same subscriptions always take turns the same way.
            members.sort_unstable();
            let state = registry.groups.entry(group).or_default();
            let start = state.cursor % members.len();
            state.cursor = state.cursor.wrapping_add(1);
            let mut first_full = None;
            let mut delivered = false;
            for &id in members.iter().cycle().skip(start).take(members.len()) {
                match self.offer(registry, id, &message, &mut closed) {
                    Ok(()) => {
                        delivered = true;
                        break;
                    }
                    Err(full) => {
                        first_full.get_or_insert(full);
                    }
                }
            }
            if let (false, Some(full)) = (delivered, first_full) {
                self.count_drop(registry, full);
            }
        }
        for id in closed {
            registry.remove(id);
        }
        matched.len()
    }

    /// Tries to hand `message` to subscription `id`. `Err(id)` when its
    /// buffer is full; a subscription whose receiver is gone is queued in
    /// `closed` for removal and counts as neither delivered nor dropped.
    fn offer(&self, registry: &Registry, id: u64, message: &Message, closed: &mut Vec<u64>) -> Result<(), u64> {
        // An id not registered (none is: the callers take ids from the
        // index) is as good as closed.
        let Some(entry) = registry.entries.get(&id) else {
            closed.push(id);
            return Ok(());
        };
        match entry.tx.try_send(message.clone()) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(id),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                closed.push(id);
                Ok(())
            }
        }
    }

    fn count_drop(&self, registry: &mut Registry, id: u64) {
        let Some(entry) = registry.entries.get_mut(&id) else {
            return;
        };
        if entry.purpose == Purpose::RequestInbox {
            return;
        }
        entry.dropped += 1;
        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        // Warn once per subscription; the counter tells the rest.
        if entry.dropped == 1 {
            warn!(
                subject = %entry.pattern,
                buffer = LOCAL_SUBSCRIPTION_BUFFER,
                "slow subscriber: local bus is dropping messages"
            );
        } else {
            debug!(subject = %entry.pattern, dropped = entry.dropped, "local bus dropped a message");
        }
    }
}

impl Registry {
    fn remove(&mut self, id: u64) {
        let Some(entry) = self.entries.remove(&id) else {
            return;
        };
        if subject::has_wildcard(&entry.pattern) {
            self.wildcard.retain(|&other| other != id);
        } else if let Some(ids) = self.literal.get_mut(&entry.pattern) {
            ids.retain(|&other| other != id);
            if ids.is_empty() {
                self.literal.remove(&entry.pattern);
            }
        }
        if let Some(group) = entry.group {
            if let Some(state) = self.groups.get_mut(&group) {
                state.members -= 1;
                if state.members == 0 {
                    self.groups.remove(&group);
                }
            }
        }
    }
}

fn check_payload(subject: &str, payload: &Bytes) -> Result<()> {
    if payload.len() > PAYLOAD_BYTES_MAX {
        return Err(Error::PayloadTooLarge {
            subject: subject.to_owned(),
            bytes: payload.len(),
            limit: PAYLOAD_BYTES_MAX,
        });
    }
    Ok(())
}

/// The receiving end of a local subscription; dropping it unsubscribes.
pub(crate) struct LocalReceiver {
    pub(crate) rx: mpsc::Receiver<Message>,
    /// Removes the registry entry on drop. A publisher racing with the drop
    /// sees a closed channel and removes the entry itself; both are fine.
    _registration: Registration,
}

struct Registration {
    bus: Weak<Shared>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(shared) = self.bus.upgrade() {
            shared.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(self.id);
        }
    }
}
