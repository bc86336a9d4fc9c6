//! The transactional outbox: a service writes an [`OutboxRecord`] into its `outbox` sled tree in
//! the same transaction as the state change, and the [`Relay`] publishes the records to JetStream
//! in key order, deleting each one only after its publish ack.
//!
//! Why it is shaped like this:
//! - Publishes are pipelined (a window of up to `window` acks in flight): awaiting each ack is
//!   ~10× slower on a small box.
//! - A window holds at most one record per subject. If a publish fails, nothing later for that
//!   subject was sent, so per-product order on the stream is the commit order even across
//!   retries; with `max_messages_per_subject = 1` a reordered retry would otherwise leave a stale
//!   message as the "latest".
//! - Retries reuse the record's `Nats-Msg-Id`, so JetStream's dedupe window absorbs a publish
//!   whose ack was lost; consumers stay idempotent (version guard) for anything older.
//! - Only **flushed** records are published ([`Flushed`]): a record is visible in the tree once
//!   its transaction commits, before the writer's flush; published then, a crash before the
//!   flush would lose the state but not its event, and the lost version would later be reused
//!   for another state that every reader skips as already seen.
use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::{HeaderMap, jetstream};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::events::{HEADER_CORRELATION_ID, HEADER_EVENT_TYPE, HEADER_MSG_ID};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxHeader {
    pub subject: String,
    pub msg_id: String,
    pub event_type: String,
    pub correlation_id: String,
}

/// One event waiting to be published. Stored as the JSON header, a newline, then the payload.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRecord {
    pub header: OutboxHeader,
    pub payload: Vec<u8>,
}

impl OutboxRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(&self.header).expect("header serializes");
        out.push(b'\n');
        out.extend_from_slice(&self.payload);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let split = bytes.iter().position(|b| *b == b'\n')?;
        let header = serde_json::from_slice(&bytes[..split]).ok()?;
        Some(Self {
            header,
            payload: bytes[split + 1..].to_vec(),
        })
    }
}

/// Outbox keys are sled-generated ids, big-endian so that key order is commit order.
pub fn key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// How far the outbox is on disk: records with keys up to this id were flushed. The store's
/// writer moves it after each flush; the relay publishes nothing beyond it.
#[derive(Debug, Clone, Default)]
pub struct Flushed(Arc<AtomicU64>);

impl Flushed {
    /// At open, every record the tree holds is on disk.
    pub fn open(tree: &sled::Tree) -> sled::Result<Self> {
        let last = last_id(tree, 0)?;
        Ok(Self(Arc::new(AtomicU64::new(last))))
    }

    /// After a flush, with no write committed since: everything in the tree is on disk.
    pub fn flushed(&self, tree: &sled::Tree) -> sled::Result<()> {
        let last = last_id(tree, self.up_to())?;
        self.0.fetch_max(last, Ordering::SeqCst);
        Ok(())
    }

    pub fn up_to(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The highest record id in the tree, scanning forward from `from` (only what was written
/// since the last flush, after the first call). Not `Tree::last` or any reverse scan: sled
/// seeks those with a 1 MiB constant key, which alone was a fifth of product-svc's binary.
fn last_id(tree: &sled::Tree, from: u64) -> sled::Result<u64> {
    let mut last = from;
    for k in tree.range(key(from)..).keys() {
        last = last.max(id_of(&k?));
    }
    Ok(last)
}

fn id_of(key: &[u8]) -> u64 {
    <[u8; 8]>::try_from(key).map_or(u64::MAX, u64::from_be_bytes)
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Publishes in flight per round.
    pub window: usize,
    /// Streams to create (or converge) before publishing.
    pub streams: Vec<jetstream::stream::Config>,
    pub max_backoff: Duration,
    /// How long shutdown waits for the outbox to drain.
    pub drain_timeout: Duration,
}

/// Publishes an outbox tree to JetStream until cancelled; drains what it can on shutdown.
pub struct Relay {
    pub tree: sled::Tree,
    /// Publishes only records the store has flushed.
    pub flushed: Flushed,
    pub js: jetstream::Context,
    pub wake: Arc<Notify>,
    pub config: RelayConfig,
    /// Publish → acknowledgement latency of each record.
    pub publish_latency: prometheus_client::metrics::histogram::Histogram,
}

/// Records waiting in an outbox tree. Walks the tree (sled keeps no count): nothing while the
/// relay keeps up, a few milliseconds per scrape under a backlog of 100k records.
pub fn depth(tree: &sled::Tree) -> u64 {
    tree.len() as u64
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("stream setup failed: {0}")]
    Stream(String),
    #[error("publish failed: {0}")]
    Publish(String),
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
}

impl Relay {
    pub async fn run(self, cancel: CancellationToken) {
        let mut streams_ready = false;
        let mut backoff = Duration::from_millis(50);
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        loop {
            if cancel.is_cancelled() && drain_deadline.is_none() {
                drain_deadline = Some(tokio::time::Instant::now() + self.config.drain_timeout);
            }
            if let Some(deadline) = drain_deadline {
                if self.tree.is_empty() {
                    tracing::info!("Outbox drained; relay stopped.");
                    return;
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(
                        pending = self.tree.len(),
                        "Outbox not drained before shutdown; the rest is published on the next start."
                    );
                    return;
                }
            }
            let round = async {
                if !streams_ready {
                    self.ensure_streams().await?;
                    streams_ready = true;
                }
                self.publish_round().await
            };
            match round.await {
                Ok(0) => {
                    backoff = Duration::from_millis(50);
                    if drain_deadline.is_some() {
                        continue;
                    }
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = cancel.cancelled() => {}
                    }
                }
                Ok(_) => backoff = Duration::from_millis(50),
                Err(error) => {
                    if matches!(error, RelayError::Stream(_)) {
                        streams_ready = false;
                    }
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "Outbox relay round failed; retrying with the same message ids.");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = cancel.cancelled(), if drain_deadline.is_none() => {}
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
    }

    async fn ensure_streams(&self) -> Result<(), RelayError> {
        for config in &self.config.streams {
            self.js
                .create_or_update_stream(config.clone())
                .await
                .map_err(|e| RelayError::Stream(format!("{}: {e}", config.name)))?;
        }
        Ok(())
    }

    /// Publishes one window; returns how many records were acked (and deleted).
    pub async fn publish_round(&self) -> Result<usize, RelayError> {
        let mut batch = Vec::with_capacity(self.config.window);
        let mut subjects = HashSet::new();
        let durable = self.tree.range(..=key(self.flushed.up_to()));
        for entry in durable.take(self.config.window * 4) {
            let (key, value) = entry?;
            let Some(record) = OutboxRecord::decode(&value) else {
                tracing::error!(key = ?key, "Dropping undecodable outbox record.");
                self.tree.remove(&key)?;
                continue;
            };
            if !subjects.insert(record.header.subject.clone()) {
                continue; // a later event of the same subject waits for the next round
            }
            batch.push((key, record));
            if batch.len() == self.config.window {
                break;
            }
        }
        if batch.is_empty() {
            return Ok(0);
        }
        let mut acks = Vec::with_capacity(batch.len());
        let mut first_error = None;
        let started = std::time::Instant::now();
        for (key, record) in &batch {
            let mut headers = HeaderMap::new();
            headers.insert(HEADER_MSG_ID, record.header.msg_id.as_str());
            headers.insert(HEADER_EVENT_TYPE, record.header.event_type.as_str());
            headers.insert(HEADER_CORRELATION_ID, record.header.correlation_id.as_str());
            match self
                .js
                .publish_with_headers(
                    record.header.subject.clone(),
                    headers,
                    Bytes::from(record.payload.clone()),
                )
                .await
            {
                Ok(ack) => acks.push((key.clone(), ack)),
                Err(e) => {
                    first_error = Some(e.to_string());
                    break;
                }
            }
        }
        let mut acked = sled::Batch::default();
        let mut count = 0;
        for (key, ack) in acks {
            match ack.await {
                Ok(_) => {
                    self.publish_latency
                        .observe(started.elapsed().as_secs_f64());
                    acked.remove(key);
                    count += 1;
                }
                Err(e) => {
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        self.tree.apply_batch(acked)?;
        match first_error {
            Some(e) => Err(RelayError::Publish(e)),
            None => Ok(count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let record = OutboxRecord {
            header: OutboxHeader {
                subject: "eshop.products.x".into(),
                msg_id: "id".into(),
                event_type: "ProductCreated".into(),
                correlation_id: "c".into(),
            },
            payload: b"{\"a\":\"\\n\"}\n".to_vec(),
        };
        assert_eq!(OutboxRecord::decode(&record.encode()), Some(record));
    }

    /// The relay's bound: what was in the tree at open, then what a flush covered; a record
    /// committed after the last flush stays out of reach until the next one.
    #[test]
    fn only_flushed_records_are_within_the_relays_bound() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("outbox").unwrap();
        tree.insert(key(5), b"on disk at open".as_slice()).unwrap();
        let flushed = Flushed::open(&tree).unwrap();
        assert_eq!(flushed.up_to(), 5);
        tree.insert(key(9), b"committed, not flushed".as_slice())
            .unwrap();
        let visible: Vec<_> = tree.range(..=key(flushed.up_to())).keys().collect();
        assert_eq!(visible.len(), 1, "only the flushed record");
        flushed.flushed(&tree).unwrap();
        assert_eq!(flushed.up_to(), 9);
        tree.remove(key(9)).unwrap();
        flushed.flushed(&tree).unwrap();
        assert_eq!(flushed.up_to(), 9, "the bound never goes back");
        assert_eq!(
            Flushed::open(&db.open_tree("empty").unwrap())
                .unwrap()
                .up_to(),
            0
        );
    }
}
