//! [`Mailbox`]: what reaches a connection's task from elsewhere — IO results
//! of the requests it started and items the [`super::router`] routes to it.
//!
//! One small object per connection instead of two channels: a tokio channel
//! allocates a block of 32 slots up front and keeps the blocks of its largest
//! burst, so an idle connection paid for its busiest moment. Here both queues
//! are empty `VecDeque`s while idle and are freed whenever they drain.
//!
//! Bounds, in bytes (a part of the connection's delivery budget,
//! `delivery_queue_bytes_max`; see [`super::connection`]):
//! - **Inputs** (IO results; a sync streams every record it recovers) are
//!   bounded by `input_bytes_max`: a producer waits for room, so a long sync
//!   follows the connection's pace.
//! - **Routed** items are bounded by `routed_max` items and `routed_bytes_max`
//!   bytes: the router never waits; a connection with a full queue is marked
//!   **lagged** and the connection is closed (its client reconnects and
//!   syncs), rather than buffered without bound.
//! - The connection may hold mail back while its delivery stream is full
//!   ([`Mailbox::take`] with `Room::Full`): then only the lagged mark comes
//!   out, and producers of inputs wait.
//!
//! The mailbox also keeps the connection's **queued bytes** (its queues plus
//! the delivery stream's, which the connection reports with
//! [`Mailbox::set_outgoing_bytes`]) and raises the edge-wide peak with them,
//! so that tests and operators can see that a connection never held more.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore};

use super::router::Routed;
use super::Input;

/// The connection is gone: nobody will take what is put.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("connection gone")]
pub(crate) struct Gone;

/// What [`Mailbox::offer`] did with a routed item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    Queued,
    /// The queue was full: the connection is lagged (`first`: it just became so).
    Lagged {
        first: bool,
    },
    Gone,
}

/// The next thing for the connection, inputs first (they free the client and
/// the session).
#[derive(Debug)]
pub(crate) enum Mail {
    Input(Input),
    Routed(Routed),
    /// The routed queue overflowed: close the connection.
    Lagged,
    /// A newer connection of the same device or user took this one's place
    /// (the per-device or per-user cap): close it.
    Evicted(String),
}

/// Whether the connection can take mail that may produce deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Room {
    Free,
    /// The delivery stream is full: only `Lagged` and `Evicted` come out.
    Full,
}

/// The bounds of one mailbox.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    pub(crate) input_bytes_max: usize,
    pub(crate) routed_max: usize,
    pub(crate) routed_bytes_max: usize,
}

/// What an input is charged against `input_bytes_max`.
fn input_bytes(input: &Input) -> usize {
    match input {
        Input::Recovered(item) => item.weight(),
        Input::SyncDone { positions, .. } => 64 + positions.len() * 24,
        Input::Info(_, crate::session::InfoAnswer::Group(Ok(info))) => 64 + info.members.len() * 24,
        Input::Info(_, crate::session::InfoAnswer::Message(Ok(info))) => 64 + info.entries.len() * 24,
        _ => 64,
    }
}

fn routed_bytes(routed: &Routed) -> usize {
    match routed {
        Routed::Delivery(item) => item.weight(),
        Routed::Receipt(_)
        | Routed::Account(_)
        | Routed::KeysLow(_)
        | Routed::Joined(_)
        | Routed::JoinFailed(_)
        | Routed::Presence { .. }
        | Routed::Typing { .. } => 64,
    }
}

#[derive(Debug, Default)]
struct Queues {
    /// Inputs with the bytes each was charged.
    inputs: VecDeque<(Input, usize)>,
    routed: VecDeque<Routed>,
    input_bytes: usize,
    routed_bytes: usize,
    outgoing_bytes: usize,
    lagged: bool,
    evicted: Option<String>,
    closed: bool,
    /// The queued bytes last added to the edge-wide total.
    reported: usize,
}

impl Queues {
    fn queued_bytes(&self) -> usize {
        self.input_bytes + self.routed_bytes + self.outgoing_bytes
    }
}

/// See the module docs. Shared (`Arc`) by the connection, its IO tasks and the router.
#[derive(Debug)]
pub(crate) struct Mailbox {
    queues: Mutex<Queues>,
    /// Wakes the connection's task (a stored permit covers a wake-up that
    /// comes before it waits).
    ready: Notify,
    /// Free input bytes.
    input_bytes: Semaphore,
    bounds: Bounds,
    /// The most bytes any connection of the edge has held queued.
    peak: Arc<AtomicUsize>,
    /// The bytes every connection of the edge holds queued now.
    total: Arc<AtomicUsize>,
}

/// Drops a drained queue's buffer, so that an idle connection holds none.
fn release<T>(q: &mut VecDeque<T>) {
    if q.is_empty() && q.capacity() > 0 {
        *q = VecDeque::new();
    }
}

impl Mailbox {
    /// `peak`: the edge-wide high-water mark of one connection's queued bytes.
    ///
    /// # Panics
    /// If a bound is 0, or `input_bytes_max` is above `u32::MAX`.
    pub(crate) fn new(bounds: Bounds, peak: Arc<AtomicUsize>) -> Mailbox {
        assert!(
            bounds.input_bytes_max > 0 && bounds.routed_max > 0 && bounds.routed_bytes_max > 0,
            "mailbox bounds must be positive"
        );
        assert!(u32::try_from(bounds.input_bytes_max).is_ok(), "input_bytes_max fits a semaphore");
        Mailbox {
            queues: Mutex::new(Queues::default()),
            ready: Notify::new(),
            input_bytes: Semaphore::new(bounds.input_bytes_max),
            bounds,
            peak,
            total: Arc::default(),
        }
    }

    /// Keeps this connection's queued bytes in `total`, the edge-wide sum.
    pub(crate) fn with_total(mut self, total: Arc<AtomicUsize>) -> Mailbox {
        self.total = total;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        crate::lock(&self.queues)
    }

    /// After every change of the queued bytes: raises the peak, moves the
    /// edge-wide total by the change.
    fn note(&self, q: &mut Queues) {
        let now = q.queued_bytes();
        self.peak.fetch_max(now, Ordering::Relaxed);
        if now >= q.reported {
            self.total.fetch_add(now - q.reported, Ordering::Relaxed);
        } else {
            self.total.fetch_sub(q.reported - now, Ordering::Relaxed);
        }
        q.reported = now;
    }

    /// Queues an IO result, waiting while its bytes do not fit `input_bytes_max`.
    ///
    /// # Errors
    /// [`Gone`] once the connection has closed the mailbox.
    pub(crate) async fn put(&self, input: Input) -> Result<(), Gone> {
        let bytes = input_bytes(&input).min(self.bounds.input_bytes_max);
        let permits = u32::try_from(bytes).unwrap_or(u32::MAX); // at most input_bytes_max, checked in `new`
        self.input_bytes.acquire_many(permits).await.map_err(|_| Gone)?.forget();
        let mut q = self.lock();
        if q.closed {
            return Err(Gone);
        }
        q.inputs.push_back((input, bytes));
        q.input_bytes += bytes;
        self.note(&mut q);
        drop(q);
        self.ready.notify_one();
        Ok(())
    }

    /// Queues a routed item unless `routed_max` items or `routed_bytes_max`
    /// bytes are queued; never waits.
    pub(crate) fn offer(&self, routed: Routed) -> Offer {
        let bytes = routed_bytes(&routed);
        let mut q = self.lock();
        if q.closed {
            return Offer::Gone;
        }
        if q.lagged || q.routed.len() >= self.bounds.routed_max || q.routed_bytes + bytes > self.bounds.routed_bytes_max
        {
            let first = !q.lagged;
            q.lagged = true;
            drop(q);
            self.ready.notify_one();
            return Offer::Lagged { first };
        }
        q.routed.push_back(routed);
        q.routed_bytes += bytes;
        self.note(&mut q);
        drop(q);
        self.ready.notify_one();
        Offer::Queued
    }

    /// Marks the connection as replaced by a newer one: its next mail is
    /// [`Mail::Evicted`] with `reason`.
    pub(crate) fn evict(&self, reason: String) {
        let mut q = self.lock();
        if q.closed || q.evicted.is_some() {
            return;
        }
        q.evicted = Some(reason);
        drop(q);
        self.ready.notify_one();
    }

    /// The bytes of the connection's delivery stream queue (they count
    /// towards its queued bytes).
    pub(crate) fn set_outgoing_bytes(&self, bytes: usize) {
        let mut q = self.lock();
        q.outgoing_bytes = bytes;
        self.note(&mut q);
    }

    /// The bytes the connection holds queued now (mailbox and delivery stream).
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.lock().queued_bytes()
    }

    /// The next mail, if any. With `Room::Full` only the lagged and evicted
    /// marks come out.
    pub(crate) fn try_take(&self, room: Room) -> Option<Mail> {
        let mut q = self.lock();
        if q.lagged {
            return Some(Mail::Lagged);
        }
        if let Some(reason) = q.evicted.take() {
            return Some(Mail::Evicted(reason));
        }
        if room == Room::Full {
            return None;
        }
        if let Some((input, bytes)) = q.inputs.pop_front() {
            q.input_bytes -= bytes;
            release(&mut q.inputs);
            self.note(&mut q);
            drop(q);
            self.input_bytes.add_permits(bytes);
            return Some(Mail::Input(input));
        }
        let routed = q.routed.pop_front()?;
        q.routed_bytes -= routed_bytes(&routed);
        release(&mut q.routed);
        self.note(&mut q);
        Some(Mail::Routed(routed))
    }

    /// Waits for the next mail (see [`Mailbox::try_take`]). Cancel-safe:
    /// nothing is taken unless it returns.
    pub(crate) async fn take(&self, room: Room) -> Mail {
        loop {
            if let Some(mail) = self.try_take(room) {
                return mail;
            }
            self.ready.notified().await;
        }
    }

    /// Whether [`Mailbox::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The connection is done: drops what is queued; later `put`s and
    /// `offer`s (and those waiting) get [`Gone`].
    pub(crate) fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        q.inputs = VecDeque::new();
        q.routed = VecDeque::new();
        q.input_bytes = 0;
        q.routed_bytes = 0;
        q.outgoing_bytes = 0;
        self.note(&mut q);
        drop(q);
        self.input_bytes.close();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use chorus_schema::ChatId;

    use super::*;

    fn fill(chat: u8) -> Input {
        Input::FillDone(ChatId([chat; 16]))
    }

    fn chat_of(mail: Mail) -> u8 {
        match mail {
            Mail::Input(Input::FillDone(c)) => c.0[0],
            other => panic!("unexpected {other:?}"),
        }
    }

    fn mailbox(input_bytes_max: usize, routed_max: usize, routed_bytes_max: usize) -> Mailbox {
        Mailbox::new(Bounds { input_bytes_max, routed_max, routed_bytes_max }, Arc::default())
    }

    fn receipt() -> Routed {
        Routed::Receipt(chorus_schema::bus::ReceiptUpdate {
            chat: ChatId([1; 16]),
            sender: chorus_schema::UserId(1),
            up_to_seq: chorus_schema::Seq(1),
            status: chorus_schema::bus::ReceiptStatus::Read,
        })
    }

    #[tokio::test]
    async fn inputs_come_in_order_and_a_full_queue_makes_producers_wait() {
        // Room for two small inputs (64 bytes each).
        let m = Arc::new(mailbox(128, 1, 1024));
        m.put(fill(1)).await.unwrap();
        m.put(fill(2)).await.unwrap();
        let m2 = m.clone();
        let third = tokio::spawn(async move { m2.put(fill(3)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished(), "a third input waits for room");
        assert_eq!(m.queued_bytes(), 128);
        assert_eq!(chat_of(m.take(Room::Free).await), 1);
        third.await.unwrap().unwrap();
        assert_eq!(chat_of(m.take(Room::Free).await), 2);
        assert_eq!(chat_of(m.take(Room::Free).await), 3);
        assert!(m.try_take(Room::Free).is_none());
        assert_eq!(m.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn a_full_routed_queue_marks_the_connection_lagged_once() {
        let m = mailbox(1024, 2, 1024);
        assert_eq!(m.offer(receipt()), Offer::Queued);
        assert_eq!(m.offer(receipt()), Offer::Queued);
        assert_eq!(m.offer(receipt()), Offer::Lagged { first: true });
        assert_eq!(m.offer(receipt()), Offer::Lagged { first: false });
        // Lagged comes before anything queued: the connection must go.
        assert!(matches!(m.take(Room::Free).await, Mail::Lagged));
    }

    #[tokio::test]
    async fn routed_items_are_bounded_in_bytes_and_the_peak_counts_every_queue() {
        let peak = Arc::new(AtomicUsize::new(0));
        let m = Mailbox::new(Bounds { input_bytes_max: 1000, routed_max: 1000, routed_bytes_max: 200 }, peak.clone());
        m.set_outgoing_bytes(500);
        assert_eq!(m.offer(receipt()), Offer::Queued);
        assert_eq!(m.offer(receipt()), Offer::Queued);
        m.put(fill(1)).await.unwrap();
        assert_eq!(m.queued_bytes(), 500 + 128 + 64);
        // Three receipts (192 bytes) fit in 200; a fourth does not.
        assert_eq!(m.offer(receipt()), Offer::Queued);
        assert_eq!(m.offer(receipt()), Offer::Lagged { first: true });
        assert_eq!(peak.load(Ordering::Relaxed), 500 + 192 + 64);
        m.set_outgoing_bytes(0);
        assert_eq!(peak.load(Ordering::Relaxed), 500 + 192 + 64, "a peak stays");
    }

    #[tokio::test]
    async fn a_full_delivery_stream_holds_mail_back_but_not_the_lagged_or_evicted_marks() {
        let m = mailbox(1024, 4, 1024);
        m.put(fill(1)).await.unwrap();
        assert_eq!(m.offer(receipt()), Offer::Queued);
        assert!(m.try_take(Room::Full).is_none());
        m.evict("replaced".into());
        assert!(matches!(m.try_take(Room::Full), Some(Mail::Evicted(r)) if r == "replaced"));
        assert!(m.try_take(Room::Full).is_none(), "evicted once");
        assert_eq!(chat_of(m.try_take(Room::Free).unwrap()), 1);
        assert!(matches!(m.try_take(Room::Free), Some(Mail::Routed(_))));
    }

    #[tokio::test]
    async fn a_closed_mailbox_refuses_and_releases_waiting_producers() {
        let m = Arc::new(mailbox(64, 1, 1024));
        m.put(fill(1)).await.unwrap();
        let m2 = m.clone();
        let waiting = tokio::spawn(async move { m2.put(fill(2)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        m.close();
        assert_eq!(waiting.await.unwrap(), Err(Gone));
        assert_eq!(m.put(fill(3)).await, Err(Gone));
        assert!(m.try_take(Room::Free).is_none(), "queued mail was dropped");
    }

    #[tokio::test]
    async fn take_wakes_on_mail_put_after_it_started_waiting() {
        let m = Arc::new(mailbox(1024, 4, 1024));
        let m2 = m.clone();
        let taker = tokio::spawn(async move { chat_of(m2.take(Room::Free).await) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        m.put(fill(9)).await.unwrap();
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), taker).await.unwrap().unwrap(), 9);
        let q = m.lock();
        assert_eq!((q.inputs.capacity(), q.routed.capacity()), (0, 0), "drained queues hold no buffer");
    }
}
