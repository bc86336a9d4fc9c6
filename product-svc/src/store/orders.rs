//! The one look the stock writer takes at the order stream: an order's latest status, for a
//! reserve whose reservation may have been compacted away (`reservations.rs` says when).
use std::time::Duration;

use async_nats::jetstream::{self, stream::LastRawMessageErrorKind};
use chrono::Utc;
use shared::events::{ORDER_SUBJECT_PREFIX, OrderStatus};
use uuid::Uuid;

use crate::error::{Error, Result};

#[derive(Clone)]
pub struct Orders {
    /// The order stream (`ORDERS`; at a hub it also holds every site's orders).
    pub stream: String,
    /// Closed reservations older than this are compacted.
    pub retention: Duration,
}

impl Orders {
    /// Whether a reservation of `order_id` could have been compacted by now.
    pub fn may_be_compacted(&self, order_id: Uuid) -> bool {
        let Some(created) = order_id.get_timestamp() else {
            return true;
        };
        let (secs, _) = created.to_unix();
        let age = Utc::now().timestamp().saturating_sub(secs as i64);
        age >= 0 && age as u64 >= self.retention.as_secs().saturating_sub(60)
    }

    /// The order's latest status (`None`: not in the stream), read from the stream leader, on
    /// the hub's subject or any site's.
    pub async fn status(
        &self,
        js: &jetstream::Context,
        order_id: Uuid,
        timeout: Duration,
    ) -> Result<Option<OrderStatus>> {
        let unavailable = |e: &dyn std::fmt::Display| Error::OrdersUnavailable(e.to_string());
        let read = async {
            let stream = match js.get_stream(&self.stream).await {
                Ok(stream) => stream,
                Err(_) => return Ok(None),
            };
            let (root, rest) = ORDER_SUBJECT_PREFIX
                .split_once('.')
                .expect("the prefix has two tokens");
            for subject in [
                format!("{ORDER_SUBJECT_PREFIX}.{order_id}"),
                format!("{root}.*.{rest}.{order_id}"),
            ] {
                match stream.get_last_raw_message_by_subject(&subject).await {
                    Ok(msg) => {
                        let event = shared::events::OrderEvent::decode(&msg.subject, &msg.payload)
                            .map_err(Error::corrupt)?;
                        return Ok(Some(event.status));
                    }
                    Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {}
                    Err(e) => return Err(unavailable(&e)),
                }
            }
            Ok(None)
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| unavailable(&"reading the order stream timed out"))?
    }
}
