//! A read model's writer (`shared::writer` with what both read models need on top): callers
//! queue updates with the checkpoint they move; each turn applies every queued job's updates in
//! one `apply` (the highest checkpoint wins) and answers every caller that waits with the
//! batch's result. The ProductSnapshot and the orders view each have one.
//!
//! A large batch (a replay's) is applied with the runtime's worker handed to another thread
//! (`block_in_place`): the service runs one async worker per two cores, and a replay's sled
//! writes would otherwise hold it, so the NATS connection could not read the next batch and the
//! projector could not decode it meanwhile, nor could the other read model's replay write. Small
//! batches (the hot path's) run in place: handing the worker over costs a thread wake-up.
use shared::{storage::StorageError, writer::Writer};
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// Updates queued for a read model, the checkpoint they move, and who waits for the result.
struct Queued<U, R> {
    updates: Vec<U>,
    checkpoint: Option<u64>,
    done: Option<oneshot::Sender<Result<R>>>,
}

/// Batches of at least this many updates are applied off the async worker (see the module doc).
const OFFLOAD_AT: usize = 256;

pub(crate) struct BatchWriter<U, R> {
    writer: Writer<Queued<U, R>>,
    /// Names the read model in logs and errors.
    name: &'static str,
}

impl<U, R> Clone for BatchWriter<U, R> {
    fn clone(&self) -> Self {
        Self {
            writer: self.writer.clone(),
            name: self.name,
        }
    }
}

impl<U: Send + 'static, R: Clone + Send + 'static> BatchWriter<U, R> {
    /// Starts the writer task; `apply` writes one batch (only this task calls it).
    pub(crate) fn spawn(
        name: &'static str,
        max_jobs: usize,
        mut apply: impl FnMut(&[U], Option<u64>) -> Result<R> + Send + 'static,
    ) -> Self {
        let writer = Writer::spawn(max_jobs, move |jobs: Vec<Queued<U, R>>| {
            let mut updates = Vec::new();
            let mut checkpoint = None;
            let mut waiting = Vec::with_capacity(jobs.len());
            for job in jobs {
                updates.extend(job.updates);
                checkpoint = checkpoint.max(job.checkpoint);
                waiting.extend(job.done);
            }
            let result = if updates.len() >= OFFLOAD_AT && can_block_in_place() {
                tokio::task::block_in_place(|| apply(&updates, checkpoint))
            } else {
                apply(&updates, checkpoint)
            };
            if let Err(error) = &result {
                tracing::error!(%error, updates = updates.len(), read_model = name, "Writing a batch failed.");
            }
            for done in waiting {
                let _ = done.send(result.clone());
            }
            std::future::ready(())
        });
        Self { writer, name }
    }

    /// Queues updates; with `wait`, returns what their batch did once it is applied (not
    /// flushed), else as soon as they are queued (later updates are applied after them).
    pub(crate) async fn submit(
        &self,
        updates: Vec<U>,
        checkpoint: Option<u64>,
        wait: bool,
    ) -> Result<Option<R>> {
        let (done, answer) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let stopped = || Error::Storage(StorageError::Stopped(self.name));
        let job = Queued {
            updates,
            checkpoint,
            done,
        };
        self.writer.send(job).await.map_err(|_| stopped())?;
        match answer {
            Some(rx) => rx.await.map_err(|_| stopped())?.map(Some),
            None => Ok(None),
        }
    }

    /// Applies what is queued, then stops the task.
    pub(crate) async fn close(&self) {
        self.writer.close().await
    }
}

/// `block_in_place` needs a multi-thread runtime (a test's current-thread runtime would panic).
fn can_block_in_place() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}
