//! The durable behind a projection: created, recreated at the checkpoint when it ran ahead or
//! vanished, and asked whether the projection has caught up.
use std::{sync::atomic::Ordering, time::Duration};

use async_nats::jetstream::{
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
    context::{ConsumerInfoError, ConsumerInfoErrorKind},
    stream::Stream,
};

use super::{BATCH, INACTIVE_THRESHOLD, Projection, Projector, SessionError, nats};

impl<P: Projection> Projector<P> {
    /// Picks up the durable, or (re)creates it so that delivery starts right after the checkpoint.
    pub(super) async fn ensure_consumer(
        &self,
        stream: &Stream,
    ) -> Result<PullConsumer, SessionError> {
        let checkpoint = self.projection.checkpoint()?;
        let existing = stream.consumer_info(&self.durable).await.ok();
        // A stream that keeps an entity's history (ORDERS) is replayed last-per-subject: a read
        // model needs only the latest state, and a cold start stays O(entities).
        let replay = if self.stream.max_messages_per_subject > 1 {
            DeliverPolicy::LastPerSubject
        } else {
            DeliverPolicy::All
        };
        let start = match (checkpoint, &existing) {
            (None, Some(_)) => {
                tracing::info!(durable = %self.durable, stream = %self.stream.name, "Cold start: empty {}; replaying the stream's latest states.", P::NAME);
                Some(replay)
            }
            (None, None) => Some(replay),
            (Some(c), Some(info)) if info.ack_floor.stream_sequence > c => {
                tracing::info!(
                    checkpoint = c,
                    ack_floor = info.ack_floor.stream_sequence,
                    "Checkpoint is behind the consumer's ack floor (applied rows lost in a crash, or \
                     already-known states acked before the checkpoint moved); redelivering from \
                     checkpoint + 1."
                );
                Some(DeliverPolicy::ByStartSequence {
                    start_sequence: c + 1,
                })
            }
            // Delivered past the checkpoint: those messages were never applied, and with
            // ack-all the next ack would acknowledge them; so delivery restarts after the
            // checkpoint. (Also upgrades a durable created with one-by-one acks.)
            (Some(c), Some(info))
                if info.delivered.stream_sequence > c
                    || info.config.ack_policy != AckPolicy::All =>
            {
                tracing::info!(
                    checkpoint = c,
                    delivered = info.delivered.stream_sequence,
                    "Restarting delivery right after the checkpoint."
                );
                Some(DeliverPolicy::ByStartSequence {
                    start_sequence: c + 1,
                })
            }
            (Some(_), Some(_)) => None,
            (Some(c), None) => Some(DeliverPolicy::ByStartSequence {
                start_sequence: c + 1,
            }),
        };
        if let Some(deliver_policy) = start {
            if existing.is_some() {
                stream.delete_consumer(&self.durable).await.map_err(nats)?;
            }
            stream
                .create_consumer(pull::Config {
                    durable_name: Some(self.durable.clone()),
                    // Last-per-subject needs a filter; `>` is every subject of the stream.
                    filter_subject: if deliver_policy == DeliverPolicy::LastPerSubject {
                        ">".into()
                    } else {
                        String::new()
                    },
                    deliver_policy,
                    ack_policy: AckPolicy::All,
                    ack_wait: Duration::from_secs(10),
                    max_deliver: 20,
                    max_ack_pending: (BATCH * 4) as i64,
                    // A durable whose instance is gone for good (its data dir wiped, so it got a
                    // new instance id) is removed by the server; an instance that returns after
                    // this long recreates its durable from the checkpoint.
                    inactive_threshold: INACTIVE_THRESHOLD,
                    ..Default::default()
                })
                .await
                .map_err(nats)?;
        }
        stream.get_consumer(&self.durable).await.map_err(nats)
    }

    /// Updates lag; marks ready when nothing is pending (covers a target that was compacted away).
    /// Fails only when the server says the consumer is gone (deleted, or lost with its store).
    pub(super) async fn check_caught_up(
        &self,
        consumer: &PullConsumer,
    ) -> Result<(), SessionError> {
        match consumer.get_info().await {
            Ok(info) => {
                // Lag = messages not yet delivered (acks in flight are not lag).
                self.status.lag.store(info.num_pending, Ordering::Relaxed);
                if info.num_pending == 0 && info.num_ack_pending == 0 {
                    self.status
                        .mark_ready(&self.projection, "consumer has nothing pending");
                }
                Ok(())
            }
            Err(e) if is_not_found(&e) => Err(SessionError::Nats(format!("consumer lost: {e}"))),
            Err(_) => Ok(()), // disconnected: the client reconnects and the pull resumes by itself
        }
    }
}

/// The server said the consumer does not exist (JetStream error 10014; the client maps that
/// code to this kind).
pub(super) fn is_not_found(error: &ConsumerInfoError) -> bool {
    error.kind() == ConsumerInfoErrorKind::NotFound
}
