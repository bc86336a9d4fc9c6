//! The order stream in stream order, for watches that span many orders (a customer's, or all):
//! their event id is the stream sequence, so a client resumes exactly where it stopped.
//!
//! One ordered consumer per instance (started by the first such watch, from then on) feeds a
//! broadcast channel every watcher of the instance reads; a watcher that resumes, or falls
//! behind the channel, first reads what it missed with an ordered consumer of its own, from the
//! sequence after its last one up to the stream's last, then goes on from the channel, skipping
//! what it already sent. The watcher subscribes before it reads the stream's last sequence, and
//! the tail exists before that (it is awaited), so every later message reaches it by the
//! channel: nothing falls between the two.
use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull::OrderedConfig},
};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{OnceCell, broadcast};

use crate::error::{Error, Result, Unavailable, bounded};

/// Messages the channel holds for slow watchers (beyond it they catch up from the stream).
const CAPACITY: usize = 4096;
/// Most messages one catch-up reads (a resume further back starts at the stream's oldest kept
/// messages of the gap's end).
const MAX_CATCH_UP: u64 = 200_000;

/// One order message: its stream sequence, subject and body.
#[derive(Debug, Clone)]
pub struct Tailed {
    pub seq: u64,
    pub subject: async_nats::Subject,
    pub payload: Bytes,
}

#[derive(Clone)]
pub struct OrderTail {
    js: jetstream::Context,
    stream: String,
    /// The channel, made with the tail by the first watch (its slots, ~256 KiB, are allocated
    /// and written at once).
    feed: Arc<OnceCell<broadcast::Sender<Tailed>>>,
    timeout: Duration,
}

impl OrderTail {
    pub fn new(js: jetstream::Context, stream: String) -> Self {
        Self {
            js,
            stream,
            feed: Arc::default(),
            timeout: Duration::from_secs(5),
        }
    }

    /// A receiver of every message stored from now on, and the stream's last sequence (every
    /// later message reaches the receiver).
    pub async fn subscribe(&self) -> Result<(broadcast::Receiver<Tailed>, u64)> {
        let feed = self.feed.get_or_try_init(|| self.start()).await?;
        let receiver = feed.subscribe();
        Ok((receiver, self.last_seq().await?))
    }

    async fn last_seq(&self) -> Result<u64> {
        let mut stream = self.stream().await?;
        let info = bounded(self.timeout, unavailable, stream.info()).await?;
        Ok(info.state.last_sequence)
    }

    async fn stream(&self) -> Result<jetstream::stream::Stream> {
        bounded(self.timeout, unavailable, self.js.get_stream(&self.stream)).await
    }

    /// Starts the one tail of this instance: every message from now on, into the channel.
    async fn start(&self) -> Result<broadcast::Sender<Tailed>> {
        let consumer = bounded(
            self.timeout,
            unavailable,
            self.stream().await?.create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::New,
                ..Default::default()
            }),
        )
        .await?;
        let mut messages = bounded(self.timeout, unavailable, consumer.messages()).await?;
        let feed = broadcast::channel(CAPACITY).0;
        let sender = feed.clone();
        tokio::spawn(async move {
            while let Some(next) = messages.next().await {
                match next {
                    Ok(message) => {
                        let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
                        let _ = feed.send(Tailed {
                            seq,
                            subject: message.subject.clone(),
                            payload: message.payload.clone(),
                        });
                    }
                    Err(error) => {
                        tracing::debug!(error = %error, "The order stream tail hiccupped (it resumes).")
                    }
                }
            }
        });
        Ok(sender)
    }

    /// The messages after `after` up to `until`, in order (at most `MAX_CATCH_UP`, the latest).
    pub async fn read(&self, after: u64, until: u64) -> Result<Vec<Tailed>> {
        if until <= after {
            return Ok(Vec::new());
        }
        let start = (after + 1).max(until.saturating_sub(MAX_CATCH_UP));
        let config = OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ..Default::default()
        };
        let stream = self.stream().await?;
        read_ordered(&stream, config, until, self.timeout, unavailable).await
    }
}

/// What an ordered consumer with `config` reads now, in order, up to sequence `until` or the
/// last message it has (whichever comes first). Each step is bounded by `timeout`.
pub async fn read_ordered(
    stream: &jetstream::stream::Stream,
    config: OrderedConfig,
    until: u64,
    timeout: Duration,
    unavailable: Unavailable,
) -> Result<Vec<Tailed>> {
    let consumer = bounded(timeout, unavailable, stream.create_consumer(config)).await?;
    let mut out = Vec::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(out);
    }
    let mut messages = bounded(timeout, unavailable, consumer.messages()).await?;
    loop {
        let next = tokio::time::timeout(timeout, messages.next())
            .await
            .map_err(|_| unavailable("reading a stream timed out".into()))?;
        let Some(message) = next else { break };
        let message = message.map_err(|e| unavailable(e.into()))?;
        let info = message.info().map_err(unavailable)?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        if seq > until {
            break;
        }
        out.push(Tailed {
            seq,
            subject: message.subject.clone(),
            payload: message.payload.clone(),
        });
        if seq >= until || pending == 0 {
            break;
        }
    }
    Ok(out)
}

fn unavailable(why: Box<dyn std::error::Error + Send + Sync>) -> Error {
    Error::OrderStoreUnavailable(Arc::from(why))
}
