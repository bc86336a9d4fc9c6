//! product-svc follows the order stream with its own durable consumer and applies the ledger
//! rules (`ledger.rs`) to every order's latest state: the safety net under order-svc's gRPC
//! calls, never a replacement for them.
//!
//! Why it is this simple (no checkpoint, unlike order-svc's projector): every action is
//! idempotent by order id (a release of a released reservation, a commit of a committed one,
//! change nothing), and each is a stock write the ledger acknowledged. So the durable's ack floor
//! is the position, each message is acked after its action, and a redelivery is harmless. Only
//! the stock writer follows (the one instance that can act), on the one durable all instances
//! share: a new writer takes over where the last one's acks ended, and nothing is repaired
//! twice. A repair that is not due yet is negatively acknowledged with the rest of the grace
//! period as its delay; a newer state of the same order replaces the old message in the stream
//! (one message per order), so only the latest state is ever acted on for long.
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, DeliverPolicy, pull},
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::{
    lease::{Lease, Role},
    ledger::{self, LedgerAction},
    store::Store,
};

/// What the follower did, for `/health/ready` and `/metrics`.
#[derive(Debug, Default)]
pub struct FollowerCounters {
    pub applied: AtomicU64,
    pub releases: AtomicU64,
    pub commits: AtomicU64,
    pub unrepairable: AtomicU64,
    pub poison: AtomicU64,
    /// Orders that held stock but never reached the order stream (`unrecorded.rs`).
    pub unrecorded: AtomicU64,
}

pub struct Follower {
    pub js: jetstream::Context,
    pub store: Store,
    /// The order stream (created by order-svc, which owns it; followed once it exists).
    pub stream: String,
    pub durable: String,
    pub grace: Duration,
    pub counters: Arc<FollowerCounters>,
    pub lease: Lease,
}

impl Follower {
    /// Follows while this instance is the stock writer, until cancelled.
    pub async fn run(self, cancel: CancellationToken) {
        let mut role = self.lease.watch();
        let writing = |r: &Role| matches!(r, Role::Writer(_));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = role.wait_for(writing) => if changed.is_err() { return },
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = role.wait_for(|r| !writing(r)) => {}
                () = self.sessions() => {}
                () = self.watch_unrecorded() => {}
            }
        }
    }

    /// Follows; a failed session (stream missing, connection lost) is retried.
    async fn sessions(&self) {
        let mut backoff = Duration::from_millis(200);
        loop {
            if let Err(error) = self.session().await {
                tracing::debug!(stream = %self.stream, %error, "Order follower session ended; retrying.");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn session(&self) -> Result<(), String> {
        let stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| e.to_string())?;
        let consumer = stream
            .get_or_create_consumer(
                &self.durable,
                pull::Config {
                    durable_name: Some(self.durable.clone()),
                    // Each order's latest state, then every new one (ORDERS keeps history).
                    deliver_policy: DeliverPolicy::LastPerSubject,
                    filter_subject: ">".into(),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    // Repairs not due yet wait here (negatively acknowledged with a delay): room
                    // for a burst of cancels and ships within one grace period.
                    max_ack_pending: 20_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(stream = %self.stream, durable = %self.durable, "Following the order stream.");
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| e.to_string())?;
            let ack = self.handle(&stream, &message).await;
            message.ack_with(ack).await.map_err(|e| e.to_string())?;
        }
        Err("the consumer's message stream ended".into())
    }

    /// Applies the ledger rules to one order state; returns how to acknowledge it. A repair is
    /// decided only from the order's latest state: an older one (ORDERS keeps history, and a
    /// delayed redelivery can come after a newer state) is skipped, the newer one decides.
    async fn handle(
        &self,
        stream: &jetstream::stream::Stream,
        message: &jetstream::Message,
    ) -> AckKind {
        let event = match shared::events::OrderEvent::decode(&message.subject, &message.payload) {
            Ok(event) => event,
            Err(error) => {
                self.counters.poison.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(subject = %message.subject, %error, "Terminating a poison order event.");
                return AckKind::Term;
            }
        };
        let id = event.order_id;
        self.store.recorded(id);
        let reservation = match self.store.reservation(id) {
            Ok(r) => r,
            Err(error) => {
                tracing::error!(order_id = %id, %error, "Reading a reservation failed.");
                return AckKind::Nak(Some(Duration::from_secs(1)));
            }
        };
        let age = (chrono::Utc::now() - event.updated_at)
            .to_std()
            .unwrap_or_default();
        let action = ledger::follow(event.status, age, reservation.as_ref(), self.grace);
        let acts = matches!(
            action,
            LedgerAction::Release | LedgerAction::Commit | LedgerAction::Unrepairable(_)
        );
        if acts {
            match is_latest(stream, message).await {
                Ok(true) => {}
                Ok(false) => return AckKind::Ack,
                Err(error) => {
                    tracing::warn!(order_id = %id, %error, "Reading the order's latest state failed; will retry.");
                    return AckKind::Nak(Some(Duration::from_secs(1)));
                }
            }
        }
        let done = match action {
            LedgerAction::Nothing => Ok(()),
            LedgerAction::Wait(delay) => return AckKind::Nak(Some(delay)),
            LedgerAction::Unrepairable(kind) => {
                self.counters.unrepairable.fetch_add(1, Ordering::Relaxed);
                tracing::error!(order_id = %id, status = ?event.status, mismatch = ?kind, "The ledger disagrees with the order and cannot repair it.");
                Ok(())
            }
            LedgerAction::Release => self.store.release(id).await.map(|released| {
                if released {
                    self.counters.releases.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(order_id = %id, status = ?event.status, "Repair: released stock still held for an order that no longer needs it.");
                }
            }),
            LedgerAction::Commit => self.store.commit(id).await.map(|committed| {
                if committed {
                    self.counters.commits.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(order_id = %id, "Repair: committed the stock of a shipped order.");
                }
            }),
        };
        match done {
            Ok(()) => {
                self.counters.applied.fetch_add(1, Ordering::Relaxed);
                AckKind::Ack
            }
            Err(error) => {
                tracing::warn!(order_id = %id, %error, "A ledger repair failed; will retry.");
                AckKind::Nak(Some(Duration::from_secs(1)))
            }
        }
    }
}

/// Whether `message` is still its subject's last message (read from the stream leader).
async fn is_latest(
    stream: &jetstream::stream::Stream,
    message: &jetstream::Message,
) -> Result<bool, String> {
    let seq = message.info().map_err(|e| e.to_string())?.stream_sequence;
    let last = stream
        .get_last_raw_message_by_subject(&message.subject)
        .await
        .map_err(|e| e.to_string())?;
    Ok(last.sequence == seq)
}
