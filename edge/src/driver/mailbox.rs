//! [`Mailbox`]: what reaches a connection's task from elsewhere — IO results
//! of the requests it started and items the [`super::router`] routes to it.
//!
//! One small object per connection instead of two channels: a tokio channel
//! allocates a block of 32 slots up front and keeps the blocks of its largest
//! burst, so an idle connection paid for its busiest moment. Here both queues
//! are empty `VecDeque`s while idle and are freed whenever they drain.
//!
//! Bounds, as before:
//! - **Inputs** (IO results; a sync streams every record it recovers) are
//!   bounded by `inputs_max`: a producer waits for room, so a long sync
//!   follows the connection's pace.
//! - **Routed** items are bounded by `routed_max`: the router never waits; a
//!   connection with a full queue is marked **lagged** and the connection is
//!   closed (its client reconnects and syncs), rather than buffered without
//!   bound.

use std::collections::VecDeque;
use std::sync::Mutex;

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
    Lagged { first: bool },
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
}

#[derive(Debug, Default)]
struct Queues {
    inputs: VecDeque<Input>,
    routed: VecDeque<Routed>,
    lagged: bool,
    closed: bool,
}

/// See the module docs. Shared (`Arc`) by the connection, its IO tasks and the router.
#[derive(Debug)]
pub(crate) struct Mailbox {
    queues: Mutex<Queues>,
    /// Wakes the connection's task (a stored permit covers a wake-up that
    /// comes before it waits).
    ready: Notify,
    /// Free input slots.
    input_slots: Semaphore,
    routed_max: usize,
}

/// Drops a drained queue's buffer, so that an idle connection holds none.
fn release<T>(q: &mut VecDeque<T>) {
    if q.is_empty() && q.capacity() > 0 {
        *q = VecDeque::new();
    }
}

impl Mailbox {
    /// # Panics
    /// If a bound is 0.
    pub(crate) fn new(inputs_max: usize, routed_max: usize) -> Mailbox {
        assert!(inputs_max > 0 && routed_max > 0, "mailbox bounds must be positive");
        Mailbox {
            queues: Mutex::new(Queues::default()),
            ready: Notify::new(),
            input_slots: Semaphore::new(inputs_max),
            routed_max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().expect("mailbox lock")
    }

    /// Queues an IO result, waiting while `inputs_max` are queued.
    ///
    /// # Errors
    /// [`Gone`] once the connection has closed the mailbox.
    pub(crate) async fn put(&self, input: Input) -> Result<(), Gone> {
        self.input_slots.acquire().await.map_err(|_| Gone)?.forget();
        let mut q = self.lock();
        if q.closed {
            return Err(Gone);
        }
        q.inputs.push_back(input);
        drop(q);
        self.ready.notify_one();
        Ok(())
    }

    /// Queues a routed item unless `routed_max` are queued; never waits.
    pub(crate) fn offer(&self, routed: Routed) -> Offer {
        let mut q = self.lock();
        if q.closed {
            return Offer::Gone;
        }
        if q.routed.len() >= self.routed_max {
            let first = !q.lagged;
            q.lagged = true;
            drop(q);
            self.ready.notify_one();
            return Offer::Lagged { first };
        }
        q.routed.push_back(routed);
        drop(q);
        self.ready.notify_one();
        Offer::Queued
    }

    /// The next mail, if any.
    pub(crate) fn try_take(&self) -> Option<Mail> {
        let mut q = self.lock();
        if q.lagged {
            return Some(Mail::Lagged);
        }
        if let Some(input) = q.inputs.pop_front() {
            release(&mut q.inputs);
            drop(q);
            self.input_slots.add_permits(1);
            return Some(Mail::Input(input));
        }
        let routed = q.routed.pop_front()?;
        release(&mut q.routed);
        Some(Mail::Routed(routed))
    }

    /// Waits for the next mail. Cancel-safe: nothing is taken unless it returns.
    pub(crate) async fn take(&self) -> Mail {
        loop {
            if let Some(mail) = self.try_take() {
                return mail;
            }
            self.ready.notified().await;
        }
    }

    /// The connection is done: drops what is queued; later `put`s and
    /// `offer`s (and those waiting) get [`Gone`].
    pub(crate) fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        q.inputs = VecDeque::new();
        q.routed = VecDeque::new();
        drop(q);
        self.input_slots.close();
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

    #[tokio::test]
    async fn inputs_come_in_order_and_a_full_queue_makes_producers_wait() {
        let m = Arc::new(Mailbox::new(2, 1));
        m.put(fill(1)).await.unwrap();
        m.put(fill(2)).await.unwrap();
        let m2 = m.clone();
        let third = tokio::spawn(async move { m2.put(fill(3)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished(), "a third input waits for room");
        assert_eq!(chat_of(m.take().await), 1);
        third.await.unwrap().unwrap();
        assert_eq!(chat_of(m.take().await), 2);
        assert_eq!(chat_of(m.take().await), 3);
        assert!(m.try_take().is_none());
    }

    #[tokio::test]
    async fn a_full_routed_queue_marks_the_connection_lagged_once() {
        let m = Mailbox::new(4, 2);
        let receipt = || {
            Routed::Receipt(chorus_projections::wire::ReceiptUpdate {
                chat: ChatId([1; 16]),
                sender: chorus_schema::UserId(1),
                up_to_seq: chorus_schema::Seq(1),
                status: chorus_projections::ReceiptStatus::Read,
            })
        };
        assert_eq!(m.offer(receipt()), Offer::Queued);
        assert_eq!(m.offer(receipt()), Offer::Queued);
        assert_eq!(m.offer(receipt()), Offer::Lagged { first: true });
        assert_eq!(m.offer(receipt()), Offer::Lagged { first: false });
        // Lagged comes before anything queued: the connection must go.
        assert!(matches!(m.take().await, Mail::Lagged));
    }

    #[tokio::test]
    async fn a_closed_mailbox_refuses_and_releases_waiting_producers() {
        let m = Arc::new(Mailbox::new(1, 1));
        m.put(fill(1)).await.unwrap();
        let m2 = m.clone();
        let waiting = tokio::spawn(async move { m2.put(fill(2)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        m.close();
        assert_eq!(waiting.await.unwrap(), Err(Gone));
        assert_eq!(m.put(fill(3)).await, Err(Gone));
        assert!(m.try_take().is_none(), "queued mail was dropped");
    }

    #[tokio::test]
    async fn take_wakes_on_mail_put_after_it_started_waiting() {
        let m = Arc::new(Mailbox::new(4, 4));
        let m2 = m.clone();
        let taker = tokio::spawn(async move { chat_of(m2.take().await) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        m.put(fill(9)).await.unwrap();
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), taker).await.unwrap().unwrap(), 9);
        let q = m.lock();
        assert_eq!((q.inputs.capacity(), q.routed.capacity()), (0, 0), "drained queues hold no buffer");
    }
}
