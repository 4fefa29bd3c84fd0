//! The recorder: the one place a run's history is written to, shared by every
//! client task and the nemesis.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::history::{Entry, History, Observation, Op, Outcome};

/// Appends history entries with monotonic times since its creation.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    start_wall_ms: u64,
    entries: Mutex<Vec<Entry>>,
    next_index: AtomicU64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// A recorder whose time 0 is now.
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            start_wall_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            entries: Mutex::new(Vec::new()),
            next_index: AtomicU64::new(1),
        }
    }

    /// The instant of time 0.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Wall-clock milliseconds at time 0.
    pub fn start_wall_ms(&self) -> u64 {
        self.start_wall_ms
    }

    /// Nanoseconds since time 0.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Appends `entry` as is.
    pub fn push(&self, entry: Entry) {
        self.entries().push(entry);
    }

    /// Records the invocation of `op` by `process`; returns its index.
    pub fn invoke(&self, process: u64, op: Op) -> u64 {
        let index = self.next_index.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries();
        // The time is taken under the lock so that entries are in time order.
        entries.push(Entry::Invoke { index, process, time_ns: self.now_ns(), op });
        index
    }

    /// Records the completion of operation `index`.
    pub fn complete(&self, index: u64, process: u64, outcome: Outcome) {
        let mut entries = self.entries();
        let time_ns = self.now_ns();
        entries.push(match outcome {
            Outcome::Ok(value) => Entry::Ok { index, process, time_ns, value },
            Outcome::Fail(error) => Entry::Fail { index, process, time_ns, error },
            Outcome::Info(error) => Entry::Info { index, process, time_ns, error },
        });
    }

    pub fn observe(&self, process: u64, observation: Observation) {
        let mut entries = self.entries();
        let time_ns = self.now_ns();
        entries.push(Entry::Observe { process, time_ns, observation });
    }

    /// The entries; a panic elsewhere while holding the lock leaves them
    /// usable (every push is a single `Vec::push`).
    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A copy of everything recorded so far.
    pub fn history(&self) -> History {
        History { entries: self.entries().clone() }
    }
}
