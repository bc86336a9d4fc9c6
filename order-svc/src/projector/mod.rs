//! The projector: a durable JetStream pull consumer applied into a sled read model through a
//! version guard. One machinery serves both read models (the ProductSnapshot from `PRODUCTS`,
//! the orders view from the order stream); each is a [`Projection`].
//!
//! Why it works the way it does:
//! - **Batches.** Whatever is ready (up to 1,000 messages in a replay of more than 2,000, up
//!   to 200 otherwise: a short replay's burst is memory its process keeps; a session that falls
//!   that far behind later is replaced by one with long batches) is applied in one batch of
//!   writes that also moves the checkpoint (last applied stream sequence), then acked with
//!   **one** ack: the durable uses `AckPolicy::All`, so acking the batch's last message acks the
//!   batch (a thousand ack publishes per batch were a fifth of a replay's cost). Redelivery is
//!   harmless: the version guard skips what is known.
//! - **No flush before the ack.** Both read models are caches of their streams, so an ack need
//!   not wait for the disk: sled flushes every half second on its own, and after a crash it
//!   recovers a prefix of its writes, so the checkpoint it finds covers the rows it finds; the
//!   durable's ack floor is then ahead of it, which the next rule turns into a redelivery from
//!   checkpoint + 1. A flush per batch (a sync of the disk) was most of a cold start's storage
//!   time and, with two instances, each instance's cost of projecting the other's orders.
//! - **Cold start.** An empty store (no checkpoint) must see every entity, but a durable's
//!   deliver policy is immutable and an existing durable may have acked far ahead: so the durable
//!   is deleted and recreated with `DeliverPolicy::All` (`PRODUCTS`, one message per product) or
//!   `LastPerSubject` (`ORDERS`, which keeps each order's history). Either way a replay costs
//!   O(entities), not O(events).
//! - **Behind the ack floor.** If the checkpoint is behind what the durable acked (a crash lost
//!   writes not yet flushed, a restored backup, or a read model that does not persist its
//!   checkpoint for batches that change nothing), delivery restarts at checkpoint + 1.
//! - **Delivered past the checkpoint.** Messages delivered to a previous session but not applied
//!   (a crash, or prefetched at shutdown) would be acknowledged by the next ack-all, so a session
//!   that finds the durable's delivered sequence past the checkpoint also restarts at
//!   checkpoint + 1.
//! - **Poison.** Messages the read model refuses (undecodable, or an order state that fails
//!   `shared::events::OrderEvent::decode`) are terminated, counted and logged with their
//!   sequence; they still advance the checkpoint, so they never stall the consumer.
//! - **Lost deliveries.** Deliveries are numbered without gaps; a gap (messages lost with a cut
//!   connection) ends the session before the next ack-all could acknowledge them.
//! - **Supervision.** A vanished consumer makes async-nats' `messages()` yield errors forever;
//!   persistent errors end the session, and the next session recreates the durable from the
//!   checkpoint.
mod batch;
mod consumer;

use consumer::is_not_found;

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::{StreamExt, stream::FuturesOrdered};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Most messages in one batch of a long replay: per-batch costs (the checkpoint, the ack, the
/// writer's turn) fall with size.
pub const BATCH: usize = 1000;
/// Most messages in one batch otherwise: a short replay takes a few more batches, and a batch's
/// messages, updates and writes are a burst of memory, part of which its process keeps after it
/// (allocator pages shared by freed and live blocks: idle RSS after a 1,000-product replay is
/// ~1.5 MiB lower).
const SHORT_BATCH: usize = 200;
/// A session that starts with more undelivered messages than this is a long replay; a session
/// of short batches that falls this far behind (a burst after start) ends, and the next one
/// takes long batches (batches under `store::batches`' hand-over size are written on the async
/// worker, which then stalls the NATS connection and the other read model).
const LONG_REPLAY: u64 = 2 * BATCH as u64;
/// Batches being written and acked while the next one is decoded.
const IN_FLIGHT: usize = 2;
/// How long a durable may go without its instance before the server deletes it.
pub const INACTIVE_THRESHOLD: Duration = Duration::from_secs(24 * 3600);

/// A read model fed by the projector. `apply` runs the version guard and moves the checkpoint in
/// one batch of writes (checkpoint last); the projector acks after it.
pub trait Projection: Clone + Send + Sync + 'static {
    type Update: Send + Sync;
    /// Names the read model in logs.
    const NAME: &'static str;
    /// The update a message carries, or why it is poison.
    fn decode(&self, msg: &jetstream::Message) -> Result<Self::Update, String>;
    fn apply(
        &self,
        updates: Vec<Self::Update>,
        checkpoint: Option<u64>,
    ) -> impl Future<Output = crate::error::Result<Applied>> + Send;
    /// The stream sequence of the last applied message; `None` on an empty (cold) store.
    fn checkpoint(&self) -> crate::error::Result<Option<u64>>;
    /// Moves the checkpoint back to `to` if it is past it (a batch failed to be written).
    fn rewind_checkpoint(&self, to: u64) -> crate::error::Result<()>;
    /// The replay into an empty store is over (drop cold-start caches).
    fn end_cold_start(&self);
}

/// What applying a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Rows that changed.
    pub changed: usize,
    /// Whether anything was written (a batch of known states usually writes nothing).
    pub wrote: bool,
}

/// What `/health/ready` reports about the projection.
#[derive(Debug, Default)]
pub struct ProjectionStatus {
    pub ready: AtomicBool,
    /// Stream last sequence seen at start-up: ready once the checkpoint reaches it.
    pub target: AtomicU64,
    pub checkpoint: AtomicU64,
    pub lag: AtomicU64,
    pub applied: AtomicU64,
    pub poison: AtomicU64,
    pub connected: AtomicBool,
}

impl ProjectionStatus {
    fn mark_ready<P: Projection>(&self, projection: &P, why: &str) {
        if !self.ready.swap(true, Ordering::SeqCst) {
            projection.end_cold_start();
            tracing::info!(
                checkpoint = self.checkpoint.load(Ordering::Relaxed),
                applied = self.applied.load(Ordering::Relaxed),
                why,
                "{} caught up; ready.",
                P::NAME
            );
        }
    }
}

pub struct Projector<P: Projection> {
    pub js: jetstream::Context,
    pub projection: P,
    /// The stream, created with this config if missing.
    pub stream: jetstream::stream::Config,
    pub durable: String,
    pub status: Arc<ProjectionStatus>,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("JetStream: {0}")]
    Nats(String),
    #[error("storage: {0}")]
    Store(#[from] crate::error::Error),
    /// A session of short batches fell this many messages behind: the next one takes long ones.
    #[error("{0} messages behind")]
    FarBehind(u64),
    /// A batch's write failed; it began at stream sequence `first_seq`.
    #[error("storage: {error}")]
    Write {
        error: crate::error::Error,
        first_seq: Option<u64>,
    },
}

impl SessionError {
    /// Where a failed write began.
    fn failed_write_at(&self) -> Option<u64> {
        match self {
            SessionError::Write { first_seq, .. } => *first_seq,
            _ => None,
        }
    }
}

fn nats<E: std::fmt::Display>(e: E) -> SessionError {
    SessionError::Nats(e.to_string())
}

impl<P: Projection> Projector<P> {
    pub async fn run(self, cancel: CancellationToken) {
        if let Ok(Some(c)) = self.projection.checkpoint() {
            self.status.checkpoint.store(c, Ordering::SeqCst);
        }
        let mut backoff = Duration::from_millis(100);
        let mut first = true;
        while !cancel.is_cancelled() {
            let started = std::time::Instant::now();
            let result = self.session(&cancel, first).await;
            first = false;
            if started.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_millis(100);
            }
            match result {
                Ok(()) => return,
                Err(SessionError::FarBehind(pending)) => {
                    tracing::debug!(
                        pending,
                        "Far behind the stream; a new session takes long batches."
                    );
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "Projection session ended; recreating the consumer from the checkpoint.");
                    self.status.connected.store(false, Ordering::SeqCst);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = cancel.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn session(&self, cancel: &CancellationToken, first: bool) -> Result<(), SessionError> {
        let stream = self
            .js
            .get_or_create_stream(self.stream.clone())
            .await
            .map_err(nats)?;
        let info = stream.get_info().await.map_err(nats)?;
        if first || !self.status.ready.load(Ordering::SeqCst) {
            self.status
                .target
                .store(info.state.last_sequence, Ordering::SeqCst);
        }
        let mut consumer = self.ensure_consumer(&stream).await?;
        // The consumer numbers its deliveries 1, 2, 3, ... (redeliveries included): a gap means
        // deliveries lost on the way (a cut connection), which the next ack-all would
        // acknowledge unapplied. So a gap ends the session, and the next one restarts delivery
        // right after the checkpoint.
        let info = consumer.info().await.map_err(nats)?;
        let next_delivery = info.delivered.consumer_sequence + 1;
        let batch = if info.num_pending > LONG_REPLAY {
            BATCH
        } else {
            SHORT_BATCH
        };
        self.status.connected.store(true, Ordering::SeqCst);
        self.check_caught_up(&consumer).await?;

        let chunks = consumer
            .stream()
            .max_messages_per_batch(batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(nats)?
            .ready_chunks(batch);
        let messages = Messages { chunks, batch };
        // Batches decoded and being written and acked, in order, while the next is decoded.
        let mut finishing = FuturesOrdered::new();
        let pumped = self
            .pump(
                cancel,
                &stream,
                &consumer,
                messages,
                next_delivery,
                &mut finishing,
            )
            .await;
        // However the session ends, batches already decoded are still written and acked (the
        // ack a no-op when its consumer is gone) and counted: dropping them would leave the
        // figures short.
        let mut failed_at = pumped
            .as_ref()
            .err()
            .and_then(SessionError::failed_write_at);
        let mut finished = Ok(());
        while let Some(result) = finishing.next().await {
            if let Some(at) = result
                .as_ref()
                .err()
                .and_then(SessionError::failed_write_at)
            {
                failed_at = Some(failed_at.map_or(at, |first: u64| first.min(at)));
            }
            finished = finished.and(result);
        }
        // A batch queued behind a failed one may have been written and moved the checkpoint
        // past the failed one's rows: the checkpoint goes back to before them, so the next
        // session redelivers them (the version guard skips what is known).
        if let Some(at) = failed_at {
            let to = at.saturating_sub(1);
            self.projection.rewind_checkpoint(to)?;
            self.status.checkpoint.fetch_min(to, Ordering::SeqCst);
            tracing::warn!(
                checkpoint = to,
                "A batch failed to be written; the checkpoint is back before it."
            );
        }
        pumped?;
        finished
    }

    /// Decodes batches as they arrive and writes and acks them in order, until cancelled or the
    /// consumer fails; batches in flight are left in `finishing` for the caller.
    async fn pump<'a>(
        &'a self,
        cancel: &CancellationToken,
        stream: &jetstream::stream::Stream,
        consumer: &PullConsumer,
        mut messages: Messages,
        mut next_delivery: u64,
        finishing: &mut FuturesOrdered<Finishing<'a>>,
    ) -> Result<(), SessionError> {
        // Consumer info is a JetStream API call: every 0.5 s while catching up (readiness),
        // every 5 s once ready (lag and lost-consumer detection; batches report lag for free).
        let mut lag_tick = tokio::time::interval(Duration::from_millis(500));
        let mut ticks = 0u32;
        let mut consecutive_errors = 0u32;
        loop {
            tokio::select! {
                // In this order: a batch just pushed is polled first, so that it is queued at
                // the writer before the next batch can be (the writer applies in queue order,
                // and a checkpoint must not pass rows still unwritten).
                biased;
                _ = cancel.cancelled() => return Ok(()),
                Some(result) = finishing.next(), if !finishing.is_empty() => result?,
                _ = lag_tick.tick() => {
                    ticks = ticks.wrapping_add(1);
                    if !self.status.ready.load(Ordering::SeqCst) || ticks.is_multiple_of(10) {
                        self.check_caught_up(consumer).await?;
                    }
                }
                chunk = tokio::task::unconstrained(messages.chunks.next()) => {
                    let Some(chunk) = chunk else {
                        return Err(SessionError::Nats("message stream ended".into()));
                    };
                    let mut messages_in = Vec::with_capacity(chunk.len());
                    for item in chunk {
                        match item {
                            Ok(msg) => messages_in.push(msg),
                            Err(error) => {
                                consecutive_errors += 1;
                                tracing::warn!(%error, consecutive_errors, "Consumer stream error.");
                                match stream.consumer_info(&self.durable).await {
                                    Err(e) if is_not_found(&e) => {
                                        return Err(SessionError::Nats(format!("consumer lost: {e}")));
                                    }
                                    _ if consecutive_errors >= 10 => {
                                        return Err(SessionError::Nats(format!("persistent consumer errors: {error}")));
                                    }
                                    _ => {}
                                }
                            }
                        }
                    }
                    if !messages_in.is_empty() {
                        consecutive_errors = 0;
                        // Decoded while the batches before it are written; queued behind them at
                        // the read model's writer, which applies in order (the acks acknowledge
                        // everything up to their message, so their order does not matter).
                        let decoded = self.decode(messages_in, &mut next_delivery)?;
                        let behind = decoded.pending_after();
                        finishing.push_back(Box::pin(self.finish(decoded)));
                        if messages.batch < BATCH && behind > LONG_REPLAY {
                            return Err(SessionError::FarBehind(behind));
                        }
                        while finishing.len() > IN_FLIGHT {
                            if let Some(result) = finishing.next().await {
                                result?;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The consumer's deliveries, in chunks of whatever is ready.
struct Messages {
    chunks: futures::stream::ReadyChunks<jetstream::consumer::pull::Stream>,
    /// The most messages in one chunk (`BATCH` or `SHORT_BATCH`).
    batch: usize,
}

/// A batch's write and ack, in flight.
type Finishing<'a> = Pin<Box<dyn Future<Output = Result<(), SessionError>> + Send + 'a>>;

/// Runs the projector with a span naming the durable.
pub async fn run<P: Projection>(projector: Projector<P>, cancel: CancellationToken) {
    let span = tracing::info_span!("projector", durable = %projector.durable);
    projector.run(cancel).instrument(span).await
}
