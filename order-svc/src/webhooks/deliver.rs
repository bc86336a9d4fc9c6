//! One event to one hook, at least once: POST it, signed afresh for every attempt, until the
//! receiver answers 2xx or the attempts run out (backoff from `--webhook-backoff-ms` doubling,
//! capped at 60 s; 10 s per attempt); the last failure parks the event. Every attempt is
//! recorded in the hook's deliveries.
use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use chrono::Utc;
use shared::events::{OrderEvent, OrderEventType};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    client::DeliveryClient,
    registry::{LiveHook, Registry},
    sign,
    store::{Attempt, HookStore},
};
use crate::{domain::Order, http::OrderBody};

/// One event for one hook.
pub struct Job {
    pub hook: Arc<LiveHook>,
    pub event_type: OrderEventType,
    pub order_id: Uuid,
    pub version: u64,
    /// The delivery body (`{"type", "timestamp", "data"}`), the same for every attempt.
    pub body: Bytes,
}

impl Job {
    /// `webhook-id`: the same for every attempt and every instance, so receivers dedupe on it.
    pub fn message_id(&self) -> String {
        format!("msg_{}_{}", self.order_id.simple(), self.version)
    }
}

/// How a job ended.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Delivered,
    /// Every attempt failed: given up, shown in the deliveries.
    Parked,
    /// The hook was deleted meanwhile.
    Dropped,
    /// The service is stopping: the event stays unacknowledged, for another instance.
    Stopped,
}

#[derive(Clone)]
pub struct Deliverer {
    /// The HTTP client, built by the first attempt (so a service without hooks never loads
    /// the system's TLS roots).
    pub client: Arc<std::sync::OnceLock<DeliveryClient>>,
    /// Where attempts go to be recorded (`record_attempts`).
    pub log: mpsc::UnboundedSender<Attempt>,
    pub registry: Registry,
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub allow_private: bool,
}

impl Deliverer {
    pub async fn deliver(&self, job: &Job, stop: &CancellationToken) -> Outcome {
        let message_id = job.message_id();
        for attempt in 1..=self.max_attempts.max(1) {
            if !self.registry.contains(job.hook.hook.id) {
                return Outcome::Dropped;
            }
            let sent = {
                let _permit = tokio::select! {
                    _ = stop.cancelled() => return Outcome::Stopped,
                    permit = job.hook.permits.acquire() => permit,
                };
                tokio::select! {
                    _ = stop.cancelled() => return Outcome::Stopped,
                    sent = self.attempt(job, &message_id) => sent,
                }
            };
            let last = attempt == self.max_attempts.max(1);
            let (status_code, error) = match &sent {
                Ok(code) if (200..300).contains(code) => (Some(*code), None),
                Ok(code) => (Some(*code), Some(format!("the receiver answered {code}"))),
                Err(why) => (None, Some(why.clone())),
            };
            let delivered = error.is_none();
            let record = Attempt {
                webhook_id: job.hook.hook.id,
                event_type: job.event_type,
                order_id: job.order_id,
                version: job.version,
                message_id: message_id.clone(),
                attempt,
                status_code,
                error,
                parked: !delivered && last,
                at: Utc::now(),
            };
            let (webhook_id, status_code, error) =
                (record.webhook_id, record.status_code, record.error.clone());
            let _ = self.log.send(record);
            if delivered {
                return Outcome::Delivered;
            }
            if last {
                tracing::warn!(webhook_id = %webhook_id, order_id = %job.order_id, version = job.version, attempts = attempt, "A webhook event is parked: every attempt failed.");
                return Outcome::Parked;
            }
            let wait = crate::domain::retry_delay(attempt, self.initial_backoff);
            tracing::info!(webhook_id = %webhook_id, order_id = %job.order_id, version = job.version, attempt, status_code = ?status_code, error = ?error, retry_in_ms = wait.as_millis() as u64, "A webhook delivery failed; it will be retried.");
            tokio::select! {
                _ = stop.cancelled() => return Outcome::Stopped,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        Outcome::Parked
    }

    /// One POST: the receiver's status code, or why there was none.
    async fn attempt(&self, job: &Job, message_id: &str) -> Result<u16, String> {
        let timestamp = Utc::now().timestamp();
        let signature = sign::signature(&job.hook.key, message_id, timestamp, &job.body);
        let client = self
            .client
            .get_or_init(|| DeliveryClient::new(self.allow_private));
        let timestamp_text = timestamp.to_string();
        let headers = [
            ("webhook-id", message_id),
            ("webhook-timestamp", timestamp_text.as_str()),
            ("webhook-signature", signature.as_str()),
        ];
        client
            .post_json(&job.hook.url, &headers, job.body.clone())
            .await
    }
}

/// Writes the attempts the deliveries send, a batch at a time: whatever was sent while the
/// previous write was in flight, one message per hook. Ends when every sender is gone, or at
/// `stop` after writing what is queued.
pub async fn record_attempts(
    store: HookStore,
    mut attempts: mpsc::UnboundedReceiver<Attempt>,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            first = attempts.recv() => first,
            _ = stop.cancelled() => attempts.try_recv().ok(),
        };
        let Some(first) = first else { return };
        let mut batch = vec![first];
        while let Ok(next) = attempts.try_recv() {
            batch.push(next);
        }
        let mut by_hook: Vec<(Uuid, Vec<Attempt>)> = Vec::new();
        for attempt in batch {
            match by_hook.iter_mut().find(|(h, _)| *h == attempt.webhook_id) {
                Some((_, list)) => list.push(attempt),
                None => by_hook.push((attempt.webhook_id, vec![attempt])),
            }
        }
        let writes = by_hook.iter().map(|(hook, list)| store.record(*hook, list));
        for (result, (hook, list)) in futures::future::join_all(writes)
            .await
            .into_iter()
            .zip(&by_hook)
        {
            if let Err(e) = result {
                tracing::warn!(webhook_id = %hook, attempts = list.len(), error = %shared::telemetry::error_chain(&e), "Delivery attempts could not be recorded.");
            }
        }
    }
}

/// A delivery's body: the event type, when it happened, the order as GET shows it.
#[derive(serde::Serialize)]
struct DeliveryBody {
    #[serde(rename = "type")]
    event_type: &'static str,
    timestamp: String,
    data: OrderBody,
}

pub(super) fn body(event: &OrderEvent) -> Bytes {
    let body = DeliveryBody {
        event_type: event.event_type.as_str(),
        timestamp: event
            .occurred_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        data: OrderBody::from(&Order::from_event(event)),
    };
    Bytes::from(serde_json::to_vec(&body).expect("an order encodes"))
}
