//! The order store: a JetStream stream (`ORDERS` by default), one subject per order, each message
//! the order's full state. It is the system of record: a publish ack is the durability point of
//! every order write, and every order-svc instance reads and writes the same orders.
//!
//! Why it works the way it does:
//! - **CAS per order.** Every publish carries `Nats-Expected-Last-Subject-Sequence` = the sequence
//!   of the state it was decided from (0 for a new order), so of two instances deciding from the
//!   same state exactly one wins; the loser re-reads and re-decides. For a keyed create the first
//!   publish is the Idempotency-Key's claim on every instance.
//! - **The dedup-before-CAS trap.** The server checks the expected sequence before the
//!   `Nats-Msg-Id` dedupe, so a publish whose first attempt was stored (ack lost) answers "wrong
//!   last sequence", not "duplicate". A conflict therefore reads the subject's last message: if it
//!   carries our message id, the write is ours.
//! - **Reads from the leader.** `STREAM.MSG.GET` is answered by the stream leader, so a read
//!   right after another instance's acknowledged write sees it (direct gets may be served by
//!   followers or mirrors, which can lag).
//! - **Bounded waits.** Each call is bounded by `timeout`, and a client that is not connected
//!   fails at once: a request never hangs on a dead NATS for longer than its budget.
use std::time::Duration;

use async_nats::jetstream::{
    self,
    context::PublishErrorKind,
    message::PublishMessage,
    stream::{LastRawMessageErrorKind, RawMessageErrorKind, Stream},
};
use shared::events::{self, OrderEvent};
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::{
    domain::Order,
    error::{Error, Result},
};

/// An order state as stored: the order and the stream sequence of its message.
#[derive(Debug, Clone)]
pub struct Stored {
    pub order: Order,
    pub seq: u64,
}

/// What an append found.
pub enum Appended {
    /// Stored at this stream sequence; the message's body.
    Stored(u64, Vec<u8>),
    /// The order moved on (or was created) meanwhile: here is its current state.
    Conflict(Option<Box<Stored>>),
}

#[derive(Clone)]
pub struct OrderLog {
    client: async_nats::Client,
    js: jetstream::Context,
    config: jetstream::stream::Config,
    prefix: String,
    timeout: Duration,
    stream: std::sync::Arc<OnceCell<Stream>>,
}

impl OrderLog {
    pub fn new(
        client: async_nats::Client,
        config: jetstream::stream::Config,
        prefix: String,
        timeout: Duration,
    ) -> Self {
        Self {
            js: shared::nats::jetstream(client.clone()),
            client,
            config,
            prefix,
            timeout,
            stream: Default::default(),
        }
    }

    pub fn subject(&self, id: Uuid) -> String {
        format!("{}.{id}", self.prefix)
    }

    /// The order's current state, read from the stream leader; `None` if it does not exist.
    pub async fn read(&self, id: Uuid) -> Result<Option<Stored>> {
        Ok(self.read_raw(id).await?.map(|(stored, _)| stored))
    }

    /// Publishes `event` (an order's new state) if the order's last message is still at
    /// `expected` (0: the order must not exist yet).
    pub async fn append(&self, event: &OrderEvent, expected: u64) -> Result<Appended> {
        self.connected()?;
        let event_type = event.event_type;
        let msg_id = event.event_id.to_string();
        let payload = serde_json::to_vec(event).map_err(|e| Error::corrupt(e.to_string()))?;
        let publish = PublishMessage::build()
            .payload(payload.clone().into())
            .message_id(&msg_id)
            .expected_last_subject_sequence(expected)
            .header(events::HEADER_EVENT_TYPE, event_type.as_str())
            .header(
                events::HEADER_CORRELATION_ID,
                shared::correlation::current_or_new().as_str(),
            );
        self.stream().await?;
        let sent = tokio::time::timeout(self.timeout, async {
            let ack = self
                .js
                .send_publish(self.subject(event.order_id), publish)
                .await?;
            ack.await
        })
        .await;
        match sent {
            Ok(Ok(ack)) => Ok(Appended::Stored(ack.sequence, payload)),
            Ok(Err(e)) if is_wrong_sequence(&e) => match self.read_raw(event.order_id).await? {
                // Our own message, stored by an attempt whose answer was lost.
                Some((stored, Some(id))) if id == msg_id => {
                    Ok(Appended::Stored(stored.seq, payload))
                }
                other => Ok(Appended::Conflict(
                    other.map(|(stored, _)| Box::new(stored)),
                )),
            },
            // No answer: the message may or may not be stored. If the stream can still be read,
            // it says which; otherwise the caller gets "unavailable" (and a retry, keyed or
            // by CAS, finds whatever was stored).
            failed => {
                let why: Box<dyn std::error::Error + Send + Sync> = match failed {
                    Ok(Err(e)) => Box::new(e),
                    _ => "the publish ack timed out".into(),
                };
                match self.read_raw(event.order_id).await {
                    Ok(Some((stored, Some(id)))) if id == msg_id => {
                        Ok(Appended::Stored(stored.seq, payload))
                    }
                    _ => Err(unavailable(why)),
                }
            }
        }
    }

    async fn read_raw(&self, id: Uuid) -> Result<Option<(Stored, Option<String>)>> {
        self.connected()?;
        let stream = self.stream().await?;
        let subject = self.subject(id);
        let got = tokio::time::timeout(
            self.timeout,
            stream.get_last_raw_message_by_subject(&subject),
        )
        .await
        .map_err(|_| unavailable("reading the order timed out"))?;
        let msg = match got {
            Ok(msg) => msg,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e) => return Err(unavailable(e)),
        };
        let event = decode(id, &msg)?;
        let msg_id = msg
            .headers
            .get(events::HEADER_MSG_ID)
            .map(|v| v.as_str().to_owned());
        Ok(Some((
            Stored {
                order: Order::from_event(&event),
                seq: msg.sequence,
            },
            msg_id,
        )))
    }

    /// The stream: created with the configured settings if it does not exist; an existing one
    /// is converged on what this service owns (the history it keeps, and at the hub the sources
    /// of `--edge-sites`) and keeps every other setting (replicas, limits) as its operator set.
    async fn stream(&self) -> Result<&Stream> {
        self.stream
            .get_or_try_init(|| async {
                let stream = tokio::time::timeout(self.timeout, async {
                    let stream = self
                        .js
                        .get_or_create_stream(self.config.clone())
                        .await
                        .map_err(|e| e.to_string())?;
                    self.converge(stream).await
                })
                .await
                .map_err(|_| unavailable("creating the order stream timed out"))?
                .map_err(unavailable)?;
                // An existing stream keeps its own settings: say so if orders could age out.
                let info = stream.cached_info();
                if !info.config.max_age.is_zero() || info.config.max_messages > 0 {
                    tracing::warn!(stream = %info.config.name, max_age_secs = info.config.max_age.as_secs(), max_messages = info.config.max_messages, "The order stream has age or count limits: orders past them are lost.");
                }
                Ok(stream)
            })
            .await
    }

    /// Creates or converges the stream now (at start, so an existing stream keeps history from
    /// then on, not only after this instance's first order).
    pub async fn prepare(&self) -> Result<()> {
        self.connected()?;
        self.stream().await.map(|_| ())
    }

    /// Raises an existing stream's history to the configured one (never lowers it: that would
    /// delete states) and sets the configured sources, leaving everything else as it is.
    async fn converge(&self, stream: Stream) -> std::result::Result<Stream, String> {
        let existing = stream.cached_info().config.clone();
        let mut wanted = existing.clone();
        wanted.max_messages_per_subject = existing
            .max_messages_per_subject
            .max(self.config.max_messages_per_subject);
        if self.config.sources.is_some() {
            wanted.sources = self.config.sources.clone();
        }
        if wanted.max_messages_per_subject != existing.max_messages_per_subject
            || wanted.sources != existing.sources
        {
            let info = self
                .js
                .update_stream(wanted)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(stream = %info.config.name, history = info.config.max_messages_per_subject, sources = info.config.sources.as_ref().map_or(0, Vec::len), "Order stream converged.");
            return self
                .js
                .get_stream(&info.config.name)
                .await
                .map_err(|e| e.to_string());
        }
        Ok(stream)
    }

    /// Every state the stream keeps of order `id`, oldest first, read from the stream leader:
    /// on this deployment's subject, else (a hub) on any site's (`eshop.<site>.orders.<id>`).
    pub async fn history(&self, id: Uuid) -> Result<Vec<(Order, events::OrderEventType)>> {
        let own = self.states(id, &self.subject(id)).await?;
        match self.prefix.split_once('.') {
            Some((root, rest)) if own.is_empty() && !rest.contains('.') => {
                self.states(id, &format!("{root}.*.{rest}.{id}")).await
            }
            _ => Ok(own),
        }
    }

    /// The states on `subject` (a filter), oldest first.
    async fn states(
        &self,
        id: Uuid,
        subject: &str,
    ) -> Result<Vec<(Order, events::OrderEventType)>> {
        self.connected()?;
        let stream = self.stream().await?;
        let mut states = Vec::new();
        // The first message of the subject at or after `next`, until there is none.
        let mut next = 1;
        loop {
            let got = tokio::time::timeout(
                self.timeout,
                stream.get_first_raw_message_by_subject(subject, next),
            )
            .await
            .map_err(|_| unavailable("reading the order's history timed out"))?;
            let msg = match got {
                Ok(msg) => msg,
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(states),
                Err(e) => return Err(unavailable(e)),
            };
            let event = decode(id, &msg)?;
            states.push((Order::from_event(&event), event.event_type));
            next = msg.sequence + 1;
        }
    }

    /// Fails at once (unavailable) when the client is not connected: a write would not land.
    pub fn connected(&self) -> Result<()> {
        if shared::nats::is_connected(&self.client) {
            Ok(())
        } else {
            Err(unavailable("not connected to NATS"))
        }
    }
}

/// A stored state of order `id`, checked (its body names the order of its subject).
fn decode(id: Uuid, msg: &jetstream::message::StreamMessage) -> Result<OrderEvent> {
    shared::events::OrderEvent::decode(&msg.subject, &msg.payload)
        .map_err(|why| Error::corrupt(format!("order {id} at sequence {}: {why}", msg.sequence)))
}

/// The order stream cannot be reached or did not answer: `why` is kept as the cause.
fn unavailable(why: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::OrderStoreUnavailable(std::sync::Arc::from(why.into()))
}

/// "Wrong last sequence": 10071, or the constant form 10164 that async-nats reports as `Other`.
fn is_wrong_sequence(e: &jetstream::context::PublishError) -> bool {
    match e.kind() {
        PublishErrorKind::WrongLastSequence => true,
        PublishErrorKind::Other => {
            let text = e.to_string().to_lowercase();
            text.contains("wrong last sequence") || text.contains("10164")
        }
        _ => false,
    }
}
