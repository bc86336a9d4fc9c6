//! One batch: decoded, applied through the version guard with the checkpoint, then acked with
//! one ack (poison terminated first), and the status figures moved. Decoding is apart from the
//! rest so that the pump decodes a batch while the one before it is still being applied.
use std::sync::atomic::Ordering;

use async_nats::jetstream::{self, AckKind};

use super::{Projection, Projector, SessionError};

impl<P: Projection> Projector<P> {
    /// Decodes a batch; a gap in the delivery numbers fails it.
    pub(super) fn decode(
        &self,
        batch: Vec<jetstream::Message>,
        next_delivery: &mut u64,
    ) -> Result<Decoded<P::Update>, SessionError> {
        let mut updates = Vec::with_capacity(batch.len());
        let mut poison = Vec::new();
        let mut last_seq = None;
        let mut first_seq = None;
        let mut pending_after = None;
        for (i, msg) in batch.iter().enumerate() {
            let (seq, pending, delivery) = msg
                .info()
                .map(|info| (info.stream_sequence, info.pending, info.consumer_sequence))
                .unwrap_or((0, 0, *next_delivery));
            if delivery != *next_delivery {
                return Err(SessionError::Nats(format!(
                    "deliveries lost on the way: expected delivery {next_delivery}, got {delivery}"
                )));
            }
            *next_delivery += 1;
            last_seq = last_seq.max(Some(seq));
            first_seq = first_seq.or(Some(seq));
            pending_after = Some(pending);
            match self.projection.decode(msg) {
                Ok(update) => updates.push(update),
                Err(reason) => {
                    tracing::warn!(stream_sequence = seq, subject = %msg.subject, reason, "Terminating a poison event.");
                    poison.push(i);
                }
            }
        }
        // Keep only the messages still to be acked: poison is terminated one by one, and one
        // ack of the last good message acks the rest (the others are dropped now, which halves
        // what a replay holds while the next batch is decoded).
        let messages = batch.len();
        let poisoned = poison.len();
        let last_good = (0..batch.len()).rev().find(|i| !poison.contains(i));
        let acks = batch
            .into_iter()
            .enumerate()
            .filter_map(|(i, msg)| {
                if poison.contains(&i) {
                    Some((msg, AckKind::Term))
                } else if Some(i) == last_good {
                    Some((msg, AckKind::Ack))
                } else {
                    None
                }
            })
            .collect();
        Ok(Decoded {
            updates,
            first_seq,
            acks,
            messages,
            poisoned,
            last_seq,
            pending_after,
        })
    }

    /// Writes a decoded batch (rows, then the checkpoint; not flushed: sled flushes every half
    /// second, and a restart after a crash resumes from the checkpoint it finds), publishes its
    /// progress, then acks it.
    pub(super) async fn finish(&self, w: Decoded<P::Update>) -> Result<(), SessionError> {
        let applied = w.updates.len();
        let changed = match self.projection.apply(w.updates, w.last_seq).await {
            Ok(done) => done.changed,
            Err(error) => {
                let first_seq = w.first_seq;
                return Err(SessionError::Write { error, first_seq });
            }
        };
        if let Some(seq) = w.last_seq {
            self.status.checkpoint.fetch_max(seq, Ordering::SeqCst);
        }
        if let Some(pending) = w.pending_after {
            // Messages the server still holds for us after this batch (free: from the ack subject).
            self.status.lag.store(pending, Ordering::Relaxed);
        }
        self.status
            .applied
            .fetch_add(applied as u64, Ordering::Relaxed);
        self.status
            .poison
            .fetch_add(w.poisoned as u64, Ordering::Relaxed);
        // The figures move before the ack: once the server sees nothing pending, they are final.
        for (msg, kind) in &w.acks {
            if let Err(error) = msg.ack_with(*kind).await {
                // The data is applied; a lost ack only means a harmless redelivery.
                tracing::debug!(%error, "Ack failed.");
            }
        }
        tracing::debug!(
            messages = w.messages,
            changed,
            poison = w.poisoned,
            "Applied a batch of events."
        );
        let checkpoint = self.status.checkpoint.load(Ordering::SeqCst);
        if checkpoint >= self.status.target.load(Ordering::SeqCst) {
            self.status.mark_ready(
                &self.projection,
                "checkpoint reached the start-up stream sequence",
            );
        }
        Ok(())
    }
}

impl<U> Decoded<U> {
    /// Messages the server still held for the consumer after this batch.
    pub(super) fn pending_after(&self) -> u64 {
        self.pending_after.unwrap_or(0)
    }
}

/// A decoded batch, waiting to be written and acked.
pub(super) struct Decoded<U> {
    updates: Vec<U>,
    /// The stream sequence of its first message.
    first_seq: Option<u64>,
    /// In stream order: the poison to terminate and the last good message to ack.
    acks: Vec<(jetstream::Message, AckKind)>,
    messages: usize,
    poisoned: usize,
    last_seq: Option<u64>,
    pending_after: Option<u64>,
}
