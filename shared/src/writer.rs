//! The one writer model of every sled store in eshop: callers queue work, and one task per store
//! takes everything queued (up to a bound), applies it as **one** batch, and answers each caller
//! before it takes the next batch.
//!
//! Why: a store's per-write costs (a sled batch or transaction seals one of sled's log buffers;
//! a stock batch is one round of publishes) then scale with the number of batches, not of
//! callers: taking whatever queued during the last write makes batches grow under load. And
//! with one writer, every read-check-write (a version guard, a stock check) is race-free
//! without a lock.
//!
//! [`Writer::spawn`] starts the task with the store's `apply`; [`Writer::close`] applies what is
//! already queued, then stops the task (it holds the database open).
use std::{
    future::Future,
    sync::{Arc, Mutex},
};

use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// The callers' side of a store's writer task: a cheap clone.
pub struct Writer<J> {
    queue: mpsc::Sender<J>,
    stop: CancellationToken,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl<J> Clone for Writer<J> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            stop: self.stop.clone(),
            task: self.task.clone(),
        }
    }
}

/// The writer task has stopped (the store is closing): the job was not applied.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the store's writer has stopped")]
pub struct WriterStopped;

impl<J: Send + 'static> Writer<J> {
    /// Starts the writer task on the current runtime. `apply` gets each batch (at most
    /// `max_batch` jobs, in queue order) and answers its jobs itself.
    pub fn spawn<F, Fut>(max_batch: usize, apply: F) -> Self
    where
        F: FnMut(Vec<J>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (queue, receiver) = mpsc::channel(4 * max_batch);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(receiver, max_batch, stop.clone(), apply));
        Self {
            queue,
            stop,
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// Queues a job (waits while the queue is full).
    pub async fn send(&self, job: J) -> Result<(), WriterStopped> {
        self.queue.send(job).await.map_err(|_| WriterStopped)
    }

    /// Applies what is queued, then stops the task and waits for it.
    pub async fn close(&self) {
        self.stop.cancel();
        let task = self.task.lock().expect("writer task lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn run<J, F, Fut>(
    mut queue: mpsc::Receiver<J>,
    max_batch: usize,
    stop: CancellationToken,
    mut apply: F,
) where
    F: FnMut(Vec<J>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        let received = tokio::select! {
            n = queue.recv_many(&mut batch, max_batch) => n,
            _ = stop.cancelled() => {
                // No new jobs; what was queued before the stop is still applied.
                queue.close();
                queue.recv_many(&mut batch, max_batch).await
            }
        };
        if received == 0 {
            return;
        }
        apply(std::mem::replace(&mut batch, Vec::with_capacity(max_batch))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_keep_queue_order_and_close_applies_what_was_queued() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let writer = Writer::spawn(3, move |batch: Vec<u32>| {
            log.lock().unwrap().push(batch);
            async {}
        });
        for i in 0..7 {
            writer.send(i).await.unwrap();
        }
        writer.close().await;
        let batches = seen.lock().unwrap().clone();
        assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= 3));
        assert_eq!(batches.concat(), (0..7).collect::<Vec<_>>());
        assert!(
            writer.send(8).await.is_err(),
            "a closed writer takes nothing"
        );
    }
}
