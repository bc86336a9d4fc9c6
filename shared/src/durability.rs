//! Group commit for sled: a 2xx means "in sled and flushed", but a flush per request caps a
//! service at the disk's sync rate (~5k/s here). Writers take a ticket after their write and wait
//! until a flush that *started after* the ticket has finished; one dedicated thread runs the
//! flushes back to back, so one flush serves every request that arrived during the last.
//!
//! The flusher is a plain OS thread calling sled's blocking `flush` (not `flush_async`, which
//! hands every flush to sled's thread pool): under load, profiling showed the hand-offs and
//! context switches costing more CPU than the flushes.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, Thread},
    time::Duration,
};

use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
#[error("the storage flusher has stopped")]
pub struct FlusherStopped;

struct Inner {
    db: sled::Db,
    requested: AtomicU64,
    closed: AtomicBool,
    done: watch::Sender<u64>,
}

#[derive(Clone)]
pub struct GroupCommit {
    inner: Arc<Inner>,
    flusher: Thread,
}

impl GroupCommit {
    /// Starts the flusher thread.
    pub fn start(db: sled::Db) -> Self {
        let (done, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            db,
            requested: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            done,
        });
        let for_thread = inner.clone();
        let handle = thread::Builder::new()
            .name("sled-flusher".into())
            .spawn(move || flusher(for_thread))
            .expect("flusher thread starts");
        Self {
            inner,
            flusher: handle.thread().clone(),
        }
    }

    /// Waits until everything written before this call is flushed to disk.
    pub async fn flush(&self) -> Result<(), FlusherStopped> {
        let mut done = self.inner.done.subscribe();
        let ticket = self.inner.requested.fetch_add(1, Ordering::SeqCst) + 1;
        if self.inner.closed.load(Ordering::SeqCst) {
            // After close: flush inline (rare; shutdown stragglers).
            return self
                .inner
                .db
                .flush_async()
                .await
                .map(|_| ())
                .map_err(|_| FlusherStopped);
        }
        self.flusher.unpark();
        done.wait_for(|flushed| *flushed >= ticket)
            .await
            .map(|_| ())
            .map_err(|_| FlusherStopped)
    }

    /// Final flush, then stops the thread.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.flusher.unpark();
        let _ = self.inner.db.flush_async().await;
    }
}

fn flusher(inner: Arc<Inner>) {
    loop {
        let target = inner.requested.load(Ordering::SeqCst);
        if target > *inner.done.borrow() {
            match inner.db.flush() {
                Ok(_) => {
                    inner.done.send_replace(target);
                }
                Err(error) => {
                    tracing::error!(%error, "Flushing sled failed; retrying.");
                    thread::sleep(Duration::from_millis(50));
                }
            }
            continue;
        }
        if inner.closed.load(Ordering::SeqCst) {
            // A writer that took a ticket before seeing `closed` is flushed first.
            if inner.requested.load(Ordering::SeqCst) > *inner.done.borrow() {
                continue;
            }
            return;
        }
        // unpark() before park() makes park() return at once, so no wake-up is lost.
        thread::park_timeout(Duration::from_millis(500));
    }
}
