//! Where webhooks live: in JetStream beside the order stream, so every instance serves and
//! delivers the same hooks and a wiped data dir loses none. Two streams per order stream (an
//! edge site's hooks stay at the site, with names and subjects that cannot collide with the
//! hub's across the leaf link):
//! - `<ORDERS>_WEBHOOKS`: one subject per hook (`eshop.webhooks.<ORDERS>.<id>`), its latest
//!   message the registration (secret included: it is needed to sign, and only order-svc's
//!   NATS user may read the stream); an empty message is a deletion. Its last sequence is what
//!   the registry must have applied before an order event is matched against it.
//! - `<ORDERS>_DELIVERIES`: a hook's delivery attempts (`eshop.deliveries.<ORDERS>.<id>`), each
//!   message the attempts of one write (an instance batches what its deliveries recorded while
//!   the previous write was in flight: one publish per batch, not per attempt); the last 100
//!   messages are kept per hook, of which the last 100 attempts are shown.
//!
//! Reads that must be current (`GET /api/webhooks/{id}`, the listing) read the stream leader:
//! `STREAM.MSG.GET`, or an ordered consumer created for the read.
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull::OrderedConfig},
    stream::{Config, DiscardPolicy, LastRawMessageErrorKind, StorageType, Stream},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::events::OrderEventType;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::{
    error::{Error, Result, bounded},
    tail::read_ordered,
};

/// Delivery attempts kept per hook (what `deliveries` shows).
pub const ATTEMPTS_KEPT: i64 = 100;

/// A registration as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<OrderEventType>,
    pub customer_id: Option<Uuid>,
    pub secret: String,
    pub created_at: DateTime<Utc>,
}

/// One delivery attempt, as `GET /api/webhooks/{id}/deliveries` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub webhook_id: Uuid,
    pub event_type: OrderEventType,
    pub order_id: Uuid,
    /// The order's version the event carries.
    pub version: u64,
    /// The `webhook-id` header (the same for every attempt of one event).
    pub message_id: String,
    pub attempt: u32,
    /// The receiver's status code (`None`: no answer).
    pub status_code: Option<u16>,
    pub error: Option<String>,
    /// The last attempt failed: the event is given up (the order's later events go on).
    pub parked: bool,
    pub at: DateTime<Utc>,
}

#[derive(Clone)]
pub struct HookStore {
    js: jetstream::Context,
    hooks: Config,
    attempts: Config,
    timeout: Duration,
    streams: std::sync::Arc<(OnceCell<Stream>, OnceCell<Stream>)>,
}

impl HookStore {
    pub fn new(js: jetstream::Context, orders_stream: &str, replicas: usize) -> Self {
        let stream = |name: String, subject: String, per_subject: i64| Config {
            name,
            subjects: vec![subject],
            max_messages_per_subject: per_subject,
            discard: DiscardPolicy::Old,
            storage: StorageType::File,
            num_replicas: replicas.max(1),
            ..Default::default()
        };
        Self {
            js,
            hooks: stream(
                format!("{orders_stream}_WEBHOOKS"),
                format!("eshop.webhooks.{orders_stream}.*"),
                1,
            ),
            attempts: stream(
                format!("{orders_stream}_DELIVERIES"),
                format!("eshop.deliveries.{orders_stream}.*"),
                ATTEMPTS_KEPT,
            ),
            timeout: Duration::from_secs(5),
            streams: Default::default(),
        }
    }

    fn hook_subject(&self, id: Uuid) -> String {
        self.hooks.subjects[0].replace('*', &id.to_string())
    }

    fn attempts_subject(&self, id: Uuid) -> String {
        self.attempts.subjects[0].replace('*', &id.to_string())
    }

    async fn hooks_stream(&self) -> Result<&Stream> {
        self.streams
            .0
            .get_or_try_init(|| self.open(&self.hooks))
            .await
    }

    async fn attempts_stream(&self) -> Result<&Stream> {
        self.streams
            .1
            .get_or_try_init(|| self.open(&self.attempts))
            .await
    }

    async fn open(&self, config: &Config) -> Result<Stream> {
        bounded(
            self.timeout,
            unavailable,
            self.js.get_or_create_stream(config.clone()),
        )
        .await
    }

    /// Stores a new hook (its subject must be empty: ids are fresh UUIDs).
    pub async fn create(&self, hook: &Hook) -> Result<()> {
        self.hooks_stream().await?;
        let payload = serde_json::to_vec(hook).map_err(|e| Error::corrupt(e.to_string()))?;
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .expected_last_subject_sequence(0);
        let subject = self.hook_subject(hook.id);
        bounded(self.timeout, unavailable, async {
            self.js.send_publish(subject, publish).await?.await
        })
        .await
        .map(drop)
    }

    /// Deletes a hook (an empty registration) and its attempts.
    pub async fn delete(&self, id: Uuid) -> Result<()> {
        let subject = self.hook_subject(id);
        bounded(self.timeout, unavailable, async {
            self.js.publish(subject, Default::default()).await?.await
        })
        .await?;
        let attempts = self.attempts_stream().await?;
        let purge = attempts.purge().filter(self.attempts_subject(id));
        bounded(self.timeout, unavailable, purge.into_future()).await?;
        Ok(())
    }

    /// A hook, read from the stream leader.
    pub async fn get(&self, id: Uuid) -> Result<Option<Hook>> {
        let stream = self.hooks_stream().await?;
        let subject = self.hook_subject(id);
        let got = tokio::time::timeout(
            self.timeout,
            stream.get_last_raw_message_by_subject(&subject),
        )
        .await
        .map_err(|_| unavailable("reading the webhook timed out".into()))?;
        match got {
            Ok(msg) => decode(&msg.payload),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(unavailable(e.into())),
        }
    }

    /// Every hook, oldest registration first.
    pub async fn all(&self) -> Result<Vec<Hook>> {
        let filter = self.hooks.subjects[0].clone();
        let mut hooks: Vec<Hook> = self
            .read_all(
                self.hooks_stream().await?,
                filter,
                DeliverPolicy::LastPerSubject,
            )
            .await?
            .iter()
            .filter_map(|payload| decode(payload).ok().flatten())
            .collect();
        hooks.sort_by_key(|h| (h.created_at, h.id));
        Ok(hooks)
    }

    /// The sequence of the last registration change (what the registry must have applied).
    pub async fn last_change(&self) -> Result<u64> {
        let mut stream = self.hooks_stream().await?.clone();
        let info = bounded(self.timeout, unavailable, stream.info()).await?;
        Ok(info.state.last_sequence)
    }

    /// A consumer that follows the registrations: each hook's latest, then every change.
    pub async fn follow(&self) -> Result<jetstream::consumer::pull::Ordered> {
        let consumer = bounded(
            self.timeout,
            unavailable,
            self.hooks_stream().await?.create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::LastPerSubject,
                filter_subject: self.hooks.subjects[0].clone(),
                ..Default::default()
            }),
        )
        .await?;
        bounded(self.timeout, unavailable, consumer.messages()).await
    }

    /// Records delivery attempts of one hook, oldest first, as one message.
    pub async fn record(&self, hook: Uuid, attempts: &[Attempt]) -> Result<()> {
        self.attempts_stream().await?;
        let payload = serde_json::to_vec(attempts).map_err(|e| Error::corrupt(e.to_string()))?;
        let subject = self.attempts_subject(hook);
        bounded(self.timeout, unavailable, async {
            self.js.publish(subject, payload.into()).await?.await
        })
        .await
        .map(drop)
    }

    /// A hook's last `ATTEMPTS_KEPT` attempts, newest first.
    pub async fn attempts(&self, id: Uuid) -> Result<Vec<Attempt>> {
        let stream = self.attempts_stream().await?;
        let payloads = self
            .read_all(stream, self.attempts_subject(id), DeliverPolicy::All)
            .await?;
        let mut attempts: Vec<Attempt> = payloads
            .iter()
            .filter_map(|p| serde_json::from_slice::<Vec<Attempt>>(p).ok())
            .flatten()
            .collect();
        attempts.reverse();
        attempts.truncate(ATTEMPTS_KEPT as usize);
        Ok(attempts)
    }

    /// What an ordered consumer created now reads of `filter`, up to the last message.
    async fn read_all(
        &self,
        stream: &Stream,
        filter: String,
        deliver_policy: DeliverPolicy,
    ) -> Result<Vec<bytes::Bytes>> {
        let config = OrderedConfig {
            deliver_policy,
            filter_subject: filter,
            ..Default::default()
        };
        let read = read_ordered(stream, config, u64::MAX, self.timeout, unavailable).await?;
        Ok(read.into_iter().map(|m| m.payload).collect())
    }
}

/// A registration message: a hook, or `None` for a deletion.
pub fn decode(payload: &[u8]) -> Result<Option<Hook>> {
    if payload.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(payload)
        .map(Some)
        .map_err(|e| Error::corrupt(format!("a webhook registration does not decode: {e}")))
}

fn unavailable(why: Box<dyn std::error::Error + Send + Sync>) -> Error {
    Error::WebhookStoreUnavailable(std::sync::Arc::from(why))
}
