//! Group commit: one thread fsyncs the shared RocksDB WAL for every append that
//! is waiting, then reports all of them durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use openraft::storage::LogFlushed;
use rocksdb::DB;

use crate::types::TypeConfig;

/// Counters of the syncer, for benchmarks and status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncerStats {
    /// fsyncs of the WAL issued by the syncer.
    pub syncs: u64,
    /// appends reported durable (each may hold many entries).
    pub appends: u64,
}

#[derive(Default)]
struct Counters {
    syncs: AtomicU64,
    appends: AtomicU64,
}

/// Handle of the syncer thread. Dropping it stops and joins the thread after the
/// appends already submitted were synced and reported.
pub struct Syncer {
    tx: Option<mpsc::Sender<(LogFlushed<TypeConfig>, usize)>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer").field("stats", &self.stats()).finish()
    }
}

impl Syncer {
    pub(crate) fn start(db: Arc<DB>) -> Self {
        let (tx, rx) = mpsc::channel::<(LogFlushed<TypeConfig>, usize)>();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        #[expect(
            clippy::expect_used,
            reason = "the syncer starts once, with the store; a node that cannot spawn a thread cannot run"
        )]
        let thread = std::thread::Builder::new()
            .name("wal-syncer".into())
            .spawn(move || {
                let mut waiting = Vec::new();
                let batch_entries = metrics::histogram!(crate::metrics::FSYNC_BATCH_ENTRIES);
                while let Ok(first) = rx.recv() {
                    waiting.push(first);
                    // Everything queued while the previous fsync ran rides on this one.
                    waiting.extend(rx.try_iter());
                    let result = db.flush_wal(true).map_err(std::io::Error::other);
                    c.syncs.fetch_add(1, Ordering::Relaxed);
                    c.appends.fetch_add(waiting.len() as u64, Ordering::Relaxed);
                    #[expect(clippy::cast_precision_loss, reason = "a histogram takes f64; entry counts are small")]
                    batch_entries.record(waiting.iter().map(|(_, n)| *n).sum::<usize>() as f64);
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "WAL fsync failed");
                    }
                    for (cb, _) in waiting.drain(..) {
                        let r = match &result {
                            Ok(()) => Ok(()),
                            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                        };
                        cb.log_io_completed(r);
                    }
                }
            })
            .expect("spawn WAL syncer thread");
        Syncer { tx: Some(tx), thread: Some(thread), counters }
    }

    /// Reports `callback` durable once the WAL, which already holds its
    /// `entries` log entries, has been fsync'd.
    pub(crate) fn submit(&self, callback: LogFlushed<TypeConfig>, entries: usize) {
        // `tx` is taken only when the syncer is dropped.
        let Some(tx) = self.tx.as_ref() else {
            callback.log_io_completed(Err(std::io::Error::other("WAL syncer stopped")));
            return;
        };
        if let Err(mpsc::SendError((cb, _))) = tx.send((callback, entries)) {
            cb.log_io_completed(Err(std::io::Error::other("WAL syncer stopped")));
        }
    }

    pub fn stats(&self) -> SyncerStats {
        SyncerStats {
            syncs: self.counters.syncs.load(Ordering::Relaxed),
            appends: self.counters.appends.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
