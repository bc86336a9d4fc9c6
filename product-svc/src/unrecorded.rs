//! Stock held for an order that never reached the order stream is given back.
//!
//! order-svc reserves before it publishes an order's first state (one publish per order instead
//! of two), sending along the state to publish in its place if it never lands: the order as
//! `OrderRejected`. If the order-svc instance dies, or NATS fails it, between the reservation
//! and that publish, nothing else would ever release the stock: the follower acts only on
//! orders the stream has. So the stock writer watches every reservation held that way until the
//! order shows up (the follower sees it), and one still unseen a grace period later is settled
//! here by publishing the rejected state as the order's first message, with an expected last
//! subject sequence of 0, then releasing the stock.
//!
//! Why the CAS is the whole fence: the order's own first publish carries the same expectation,
//! so of the two exactly one lands, however late the order's publish is (a message stuck in a
//! client's buffer across a reconnect). If the order's landed, the rejection fails and changes
//! nothing (the follower handles the order as any other); if the rejection landed, the order's
//! publish fails, order-svc reads the rejected state and answers it, and nobody was told the
//! order was taken. A rejection whose ack is lost is still in the stream: the follower then
//! sees a Rejected order holding stock and releases it after its own grace.
//!
//! The watch list is in memory: a new stock writer starts it from its books (every held
//! reservation still marked unrecorded, from the moment it took over), so a reservation whose
//! order did land is checked once more after a failover, by a publish that fails.
use std::{sync::atomic::Ordering, time::Duration};

use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use shared::events::{HEADER_CORRELATION_ID, HEADER_EVENT_TYPE, OrderEventType};
use uuid::Uuid;

use crate::{domain::ReservationStatus, follower::Follower, lease};

/// How long a rejection's publish waits for its ack.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

impl Follower {
    /// Settles unrecorded orders whose grace has passed, while this instance writes stock.
    pub(crate) async fn watch_unrecorded(&self) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.store.watch_unrecorded_in_books() {
                Ok(count) => {
                    if count > 0 {
                        tracing::info!(
                            count,
                            "Watching held reservations whose orders were not recorded yet."
                        );
                    }
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "Reading the books for unrecorded orders failed; retrying.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let tick = (self.grace / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            tokio::time::sleep(tick).await;
            for id in self.store.due_unrecorded(self.grace) {
                self.settle_unrecorded(id).await;
            }
        }
    }

    /// Claims the order's subject with its rejected state and releases the stock; or, if the
    /// order is there, stops watching it. A failure leaves it watched (tried again next tick).
    async fn settle_unrecorded(&self, id: Uuid) {
        let unrecorded = match self.store.reservation(id) {
            Ok(Some(r)) if r.status == ReservationStatus::Active => r.unrecorded,
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(order_id = %id, %error, "Reading a reservation failed.");
                return;
            }
        };
        let Some(unrecorded) = unrecorded else {
            self.store.recorded(id); // closed meanwhile: nothing is held
            return;
        };
        let mut publish = PublishMessage::build()
            .payload(Bytes::copy_from_slice(unrecorded.state.get().as_bytes()))
            .expected_last_subject_sequence(0)
            .header(HEADER_EVENT_TYPE, OrderEventType::OrderRejected.as_str())
            .header(
                HEADER_CORRELATION_ID,
                shared::correlation::current_or_new().as_str(),
            );
        if let Some(event_id) = unrecorded.event_id() {
            publish = publish.message_id(event_id.to_string());
        }
        let sent = tokio::time::timeout(PUBLISH_TIMEOUT, async {
            self.js
                .send_publish(unrecorded.subject.clone(), publish)
                .await?
                .await
        })
        .await;
        match sent {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if lease::is_wrong_sequence(&e) => {
                tracing::debug!(order_id = %id, "The unrecorded order was recorded after all.");
                self.store.recorded(id);
                return;
            }
            Ok(Err(error)) => {
                tracing::warn!(order_id = %id, %error, "Rejecting an unrecorded order failed; will retry.");
                return;
            }
            Err(_) => {
                tracing::warn!(order_id = %id, "Rejecting an unrecorded order timed out; will retry.");
                return;
            }
        }
        match self.store.release(id).await {
            Ok(_) => {
                self.store.recorded(id);
                self.counters.unrecorded.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(order_id = %id, subject = %unrecorded.subject, "Repair: an order held stock but never reached the order stream; recorded it as rejected and released its stock.");
            }
            // The rejection is in the stream: the follower releases it if this does not.
            Err(error) => {
                tracing::warn!(order_id = %id, %error, "Releasing an unrecorded order's stock failed; the follower will.");
                self.store.recorded(id);
            }
        }
    }
}
