//! Group commit for sled: a 2xx means "in sled and flushed", but a flush per request caps a
//! service at the disk's sync rate (~5k/s here). Writers take a ticket after their write and wait
//! until a flush that *started after* the ticket has finished; one background task runs the
//! flushes back to back, so one `flush_async` serves every request that arrived during the last.
use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};
use std::time::Duration;

use tokio::sync::{Notify, watch};

#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the storage flusher has stopped")]
pub struct FlusherStopped;

struct Inner {
    db: sled::Db,
    requested: AtomicU64,
    closed: AtomicBool,
    wake: Notify,
    done: watch::Sender<u64>,
}

#[derive(Clone)]
pub struct GroupCommit {
    inner: Arc<Inner>,
}

impl GroupCommit {
    /// Starts the flusher task on the current runtime.
    pub fn start(db: sled::Db) -> Self {
        let (done, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            db,
            requested: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
            done,
        });
        tokio::spawn(flusher(inner.clone()));
        Self { inner }
    }

    /// Waits until everything written before this call is flushed to disk.
    pub async fn flush(&self) -> Result<(), FlusherStopped> {
        let mut done = self.inner.done.subscribe();
        let ticket = self.inner.requested.fetch_add(1, Ordering::SeqCst) + 1;
        if self.inner.closed.load(Ordering::SeqCst) {
            // After close (shutdown stragglers): flush inline.
            return self
                .inner
                .db
                .flush_async()
                .await
                .map(|_| ())
                .map_err(|_| FlusherStopped);
        }
        self.inner.wake.notify_one();
        done.wait_for(|flushed| *flushed >= ticket)
            .await
            .map(|_| ())
            .map_err(|_| FlusherStopped)
    }

    /// Final flush, then stops the task. Later `flush` calls flush inline.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
        let _ = self.inner.db.flush_async().await;
    }
}

async fn flusher(inner: Arc<Inner>) {
    loop {
        let target = inner.requested.load(Ordering::SeqCst);
        if target > *inner.done.borrow() {
            match inner.db.flush_async().await {
                Ok(_) => {
                    inner.done.send_replace(target);
                }
                Err(error) => {
                    tracing::error!(%error, "Flushing sled failed; retrying.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
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
        inner.wake.notified().await;
    }
}
