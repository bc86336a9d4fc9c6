//! One stock writer at a time, elected on the ledger stream itself.
//!
//! Why a single writer: a reservation is decided against every product it touches, and the only
//! atomic multi-subject write JetStream offers (atomic batches) costs ~2.3 ms per batch on a
//! single-replica stream. One writer decides from its own cache, as product-svc always did, and
//! publishes each decision as one message, pipelined. The other instances serve reads and answer
//! stock calls `UNAVAILABLE` (order-svc fails over to the writer).
//!
//! How it stays one:
//! - **The lease** is the last message on `eshop.ledger.lease` (`{instance, released}`). It is
//!   taken with a compare-and-set on that subject's sequence, so of two challengers one wins.
//! - **The fence.** Every write of a writer carries `Nats-Expected-Last-Subject-Sequence` = its
//!   lease's sequence with `Nats-Expected-Last-Subject-Sequence-Subject: eshop.ledger.lease`:
//!   the server stores it only while that lease is still the last one. A lease alone is not a
//!   fence (a paused writer wakes up believing it still writes); this is: once another instance
//!   took the lease, every older write in flight fails whole.
//! - **Liveness**: the writer's writes, and while none flow a heartbeat on `eshop.ledger.alive`
//!   (fenced too) every `ttl / 4`; no heartbeat while writes flow, since on a replicated stream
//!   it would contend with them (see `store/writer.rs`). A follower takes over when neither the
//!   lease nor the stream's last sequence moved for `ttl` by its own clock (no clock comparison
//!   between machines); at once when the lease is released (graceful stop) or
//!   names this very instance (a restart: its previous life is over).
//! - **Catching up.** A new writer first lets its cache apply the ledger up to its lease's
//!   sequence (nothing after it can be anyone else's), then writes (`Role::CatchingUp` →
//!   `Role::Writer`, by `ledger_cache.rs`).
//! - **Stepping down**: deposed (a fenced write or heartbeat refused), or a write whose outcome is
//!   unknown: the cache may be ahead of the stream, so it is rebuilt from the stream, and this
//!   instance may win the lease again at once.
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_nats::jetstream::{
    self,
    context::PublishErrorKind,
    message::PublishMessage,
    stream::{LastRawMessageErrorKind, Stream},
};
use serde::{Deserialize, Serialize};
use shared::events::{LEDGER_ALIVE, LEDGER_LEASE};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// This instance's part in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves reads; stock writes go to the writer (or wait for one).
    Follower,
    /// Holds the lease taken at this sequence; the cache is catching up with it.
    CatchingUp(u64),
    /// The stock writer: every ledger write is fenced on this lease sequence.
    Writer(u64),
}

const EXPECTED_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";
const EXPECTED_SUBJECT: &str = "Nats-Expected-Last-Subject-Sequence-Subject";

#[derive(Debug, Serialize, Deserialize)]
struct LeaseRecord {
    instance: String,
    #[serde(default)]
    released: bool,
}

#[derive(Clone)]
pub struct Lease {
    inner: Arc<Inner>,
}

struct Inner {
    instance: String,
    js: jetstream::Context,
    replicas: usize,
    ttl: Duration,
    role: watch::Sender<Role>,
    /// The instance named by the last lease seen (for "the writer is X").
    holder: Mutex<Option<String>>,
    /// When this instance's last fenced write was acknowledged (ms since `epoch`): a writer
    /// whose writes flow needs no heartbeat, and sending one would contend with them.
    wrote_at: std::sync::atomic::AtomicU64,
    epoch: Instant,
}

/// Adds the fence of lease `lease_seq` to a publish.
pub fn fenced(message: PublishMessage, lease_seq: u64) -> PublishMessage {
    message
        .header(EXPECTED_SEQ, lease_seq.to_string().as_str())
        .header(EXPECTED_SUBJECT, LEDGER_LEASE)
}

/// Whether a publish was refused because its fence (or CAS) no longer holds.
pub fn is_wrong_sequence(e: &jetstream::context::PublishError) -> bool {
    e.kind() == PublishErrorKind::WrongLastSequence && !is_in_flight_conflict(e)
}

/// Whether a replicated stream refused a publish because another write checking the same
/// subject's sequence was in flight (error 10164): nothing was stored, and sending it again is
/// safe. async-nats gives this the kind of a wrong sequence; only the code tells them apart.
pub fn is_in_flight_conflict(e: &jetstream::context::PublishError) -> bool {
    e.kind() == PublishErrorKind::WrongLastSequence && e.to_string().contains("10164")
}

impl Lease {
    pub fn new(js: jetstream::Context, instance: String, replicas: usize, ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                instance,
                js,
                replicas,
                ttl,
                role: watch::Sender::new(Role::Follower),
                holder: Mutex::new(None),
                wrote_at: Default::default(),
                epoch: Instant::now(),
            }),
        }
    }

    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    pub fn role(&self) -> Role {
        *self.inner.role.borrow()
    }

    pub fn watch(&self) -> watch::Receiver<Role> {
        self.inner.role.subscribe()
    }

    /// The fence of a write made now, if this instance is the writer.
    pub fn fence(&self) -> Option<u64> {
        match self.role() {
            Role::Writer(seq) => Some(seq),
            _ => None,
        }
    }

    /// A fenced write was acknowledged just now: it proves this writer alive.
    pub fn wrote(&self) {
        let now = self.inner.epoch.elapsed().as_millis() as u64;
        self.inner
            .wrote_at
            .store(now, std::sync::atomic::Ordering::Relaxed);
    }

    fn wrote_within(&self, window: Duration) -> bool {
        let at = self
            .inner
            .wrote_at
            .load(std::sync::atomic::Ordering::Relaxed);
        let now = self.inner.epoch.elapsed().as_millis() as u64;
        at > 0 && now.saturating_sub(at) < window.as_millis() as u64
    }

    /// The instance the last lease seen names (`None`: no lease seen, or released).
    pub fn holder(&self) -> Option<String> {
        self.inner.holder.lock().expect("not poisoned").clone()
    }

    /// The cache applied the ledger up to the lease at `lease_seq`: this instance writes now.
    pub fn caught_up(&self, lease_seq: u64) -> bool {
        let promoted = self.inner.role.send_if_modified(|role| {
            let promote = *role == Role::CatchingUp(lease_seq);
            if promote {
                *role = Role::Writer(lease_seq);
            }
            promote
        });
        if promoted {
            tracing::info!(instance = %self.inner.instance, lease_seq, "This instance is the stock writer.");
        }
        promoted
    }

    /// Stops writing (deposed, or a write's outcome is unknown); the cache is then rebuilt.
    pub fn step_down(&self, why: &str) {
        let was = self.role();
        let changed = self.inner.role.send_if_modified(|role| {
            let change = *role != Role::Follower;
            *role = Role::Follower;
            change
        });
        if changed {
            tracing::warn!(instance = %self.inner.instance, role = ?was, why, "Stepped down as the stock writer.");
        }
    }

    /// Heartbeats while writing, watches the writer otherwise, and takes over when it is gone.
    /// On cancel a writer releases the lease, so another instance takes over at once.
    pub async fn run(self, cancel: CancellationToken) {
        let tick = (self.inner.ttl / 4).max(Duration::from_millis(50));
        let mut watcher = Watcher::default();
        let mut renewed = Instant::now();
        let mut stream = None;
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(tick) => {}
                }
            }
            let Some(ledger) = self.stream(&mut stream).await else {
                continue;
            };
            match self.role() {
                // Writes flowing are the heartbeat (followers watch the stream's last sequence).
                Role::Writer(_) if self.wrote_within(tick) => renewed = Instant::now(),
                Role::Writer(seq) | Role::CatchingUp(seq) => match self.heartbeat(seq).await {
                    Ok(()) | Err(Renewal::Busy) => renewed = Instant::now(),
                    Err(Renewal::Deposed) => {
                        self.step_down("another instance took the stock writer lease");
                    }
                    Err(Renewal::Failed(error)) => {
                        tracing::debug!(%error, "Heartbeat failed.");
                        if renewed.elapsed() >= self.inner.ttl {
                            self.step_down("the lease could not be renewed for a whole ttl");
                        }
                    }
                },
                Role::Follower => {
                    if let Err(error) = self.watch_or_take(ledger, &mut watcher).await {
                        tracing::debug!(%error, "Watching the stock writer lease failed.");
                    }
                    renewed = Instant::now();
                }
            }
        }
        self.release().await;
    }

    async fn stream<'a>(&self, stream: &'a mut Option<Stream>) -> Option<&'a Stream> {
        if stream.is_none() {
            let config = shared::streams::ledger(self.inner.replicas);
            match tokio::time::timeout(self.inner.ttl, self.inner.js.get_or_create_stream(config))
                .await
            {
                Ok(Ok(s)) => *stream = Some(s),
                Ok(Err(error)) => tracing::debug!(%error, "The ledger stream is not reachable."),
                Err(_) => tracing::debug!("Reaching the ledger stream timed out."),
            }
        }
        stream.as_ref()
    }

    async fn heartbeat(&self, lease_seq: u64) -> Result<(), Renewal> {
        let body = serde_json::json!({ "instance": self.inner.instance }).to_string();
        let message = fenced(PublishMessage::build().payload(body.into()), lease_seq);
        match self.publish(LEDGER_ALIVE, message).await {
            // A stock write checking the lease was in flight: it was stored, or it failed and
            // stepped this instance down; either way this heartbeat is not needed.
            Ok(_) | Err(Renewal::Busy) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn publish(
        &self,
        subject: &'static str,
        message: PublishMessage,
    ) -> Result<u64, Renewal> {
        let sent = tokio::time::timeout(self.inner.ttl / 2, async {
            self.inner.js.send_publish(subject, message).await?.await
        })
        .await;
        match sent {
            Ok(Ok(ack)) => Ok(ack.sequence),
            Ok(Err(e)) if is_in_flight_conflict(&e) => Err(Renewal::Busy),
            Ok(Err(e)) if is_wrong_sequence(&e) => Err(Renewal::Deposed),
            Ok(Err(e)) => Err(Renewal::Failed(e.to_string())),
            Err(_) => Err(Renewal::Failed("timed out".into())),
        }
    }

    /// Reads the lease and the heartbeat; takes the lease when it is free, released, this
    /// instance's own, or stale (neither moved for a ttl).
    async fn watch_or_take(&self, ledger: &Stream, watcher: &mut Watcher) -> Result<(), String> {
        let lease = last(ledger, LEDGER_LEASE).await?;
        // Anything the writer writes moves the stream: its heartbeat when idle, its writes else.
        let alive = ledger
            .clone()
            .info()
            .await
            .map_err(|e| e.to_string())?
            .state
            .last_sequence;
        let (lease_seq, record) = match lease {
            None => (0, None),
            Some((seq, payload)) => (seq, serde_json::from_slice::<LeaseRecord>(&payload).ok()),
        };
        *self.inner.holder.lock().expect("not poisoned") = record
            .as_ref()
            .filter(|r| !r.released)
            .map(|r| r.instance.clone());
        let free = lease_seq == 0
            || record
                .as_ref()
                .is_none_or(|r| r.released || r.instance == self.inner.instance);
        let stale = watcher.stale((lease_seq, alive), self.inner.ttl);
        if !(free || stale) {
            return Ok(());
        }
        let body = serde_json::to_vec(&LeaseRecord {
            instance: self.inner.instance.clone(),
            released: false,
        })
        .expect("serializes");
        let message = PublishMessage::build()
            .payload(body.into())
            .expected_last_subject_sequence(lease_seq);
        match self.publish(LEDGER_LEASE, message).await {
            Ok(seq) => {
                *self.inner.holder.lock().expect("not poisoned") =
                    Some(self.inner.instance.clone());
                tracing::info!(instance = %self.inner.instance, lease_seq = seq, previous = ?record.map(|r| r.instance), stale, "Took the stock writer lease; catching up.");
                self.inner.role.send_replace(Role::CatchingUp(seq));
                Ok(())
            }
            // Another instance was faster (or is just now).
            Err(Renewal::Deposed | Renewal::Busy) => Ok(()),
            Err(Renewal::Failed(e)) => Err(e),
        }
    }

    /// Gives the lease up (graceful stop), so another instance takes over without waiting a ttl.
    async fn release(&self) {
        let (Role::Writer(seq) | Role::CatchingUp(seq)) = self.role() else {
            return;
        };
        self.inner.role.send_replace(Role::Follower);
        let body = serde_json::to_vec(&LeaseRecord {
            instance: self.inner.instance.clone(),
            released: true,
        })
        .expect("serializes");
        let message = PublishMessage::build()
            .payload(body.into())
            .expected_last_subject_sequence(seq);
        match self.publish(LEDGER_LEASE, message).await {
            Ok(_) => {
                tracing::info!(instance = %self.inner.instance, "Released the stock writer lease.")
            }
            Err(error) => tracing::warn!(
                ?error,
                "Releasing the stock writer lease failed; another instance takes over after the ttl."
            ),
        }
    }
}

#[derive(Debug)]
enum Renewal {
    Deposed,
    /// Another write checking the lease was in flight (replicated stream): try again later.
    Busy,
    Failed(String),
}

/// When the (lease, heartbeat) pair was last seen to move, by this instance's clock.
#[derive(Default)]
struct Watcher {
    seen: Option<((u64, u64), Instant)>,
}

impl Watcher {
    fn stale(&mut self, now_seen: (u64, u64), ttl: Duration) -> bool {
        match self.seen {
            Some((seen, since)) if seen == now_seen => since.elapsed() >= ttl,
            _ => {
                self.seen = Some((now_seen, Instant::now()));
                false
            }
        }
    }
}

/// The last message on `subject` (sequence, payload), from the stream leader.
async fn last(stream: &Stream, subject: &str) -> Result<Option<(u64, bytes::Bytes)>, String> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(msg) => Ok(Some((msg.sequence, msg.payload))),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}
