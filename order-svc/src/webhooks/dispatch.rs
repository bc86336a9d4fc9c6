//! Who delivers which order event, and in what order.
//!
//! Every instance runs a dispatcher on one shared durable consumer of the order stream
//! (`order-svc-webhooks`, this site's own subjects only: a hub does not re-deliver the site
//! orders it sources) with the **pinned-client** priority policy: the server delivers to one
//! instance at a time and moves the pin to a standby instance when that one stops pulling
//! (`PIN_TIMEOUT`). So nothing is sent twice by two live instances, and one order's states arrive
//! in stream order at one place.
//!
//! There each event becomes a job per matching hook, queued on its (hook, order) chain: a chain
//! delivers one job at a time, lowest version first, so an order's v3 never overtakes its v2 for
//! a hook, while other orders and other hooks go on (a failing receiver or order holds up only
//! its own chains). An order event is acknowledged once every job it made has ended (delivered,
//! parked or its hook deleted), and kept in progress meanwhile; if the instance dies, the server
//! redelivers what was not acknowledged, in sequence order, to the next pinned instance: at
//! least once, and receivers dedupe on `webhook-id`.
use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, DeliverPolicy, PriorityPolicy, pull},
};
use chrono::Utc;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    deliver::{self, Deliverer, Job, Outcome},
    registry::{Freshness, Registry},
    store::HookStore,
};

/// The shared durable's name, and its priority group.
const DURABLE: &str = "order-svc-webhooks";
const GROUP: &str = "webhooks";
/// How long an instance keeps the pin without pulling (then a standby instance takes over).
const PIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Un-acknowledged events come back after this long; held ones are kept in progress meanwhile.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// A hook takes the events that happened after it was registered, give or take this much (the
/// instances' clocks differ a little).
const SKEW: chrono::TimeDelta = chrono::TimeDelta::seconds(5);
/// Order events held (some delivery not ended) at most; beyond it the server waits.
const MAX_HELD: i64 = 20_000;

/// Delivery figures (readiness).
#[derive(Debug, Default)]
pub struct Figures {
    /// Order events whose deliveries have not all ended.
    pub backlog: AtomicU64,
    pub delivered: AtomicU64,
    pub parked: AtomicU64,
    /// Order events that do not decode (acknowledged, not delivered).
    pub poison: AtomicU64,
}

/// An order event with deliveries outstanding.
struct Held {
    message: jetstream::Message,
    remaining: AtomicUsize,
}

type Chains = HashMap<(Uuid, Uuid), BTreeMap<u64, (Job, Arc<Held>)>>;

#[derive(Clone)]
pub struct Dispatcher {
    pub js: jetstream::Context,
    pub orders_stream: String,
    /// This site's order subjects (`<prefix>.*`).
    pub filter: String,
    pub store: HookStore,
    pub registry: Registry,
    pub deliverer: Deliverer,
    pub figures: Arc<Figures>,
    held: Arc<Mutex<HashMap<u64, Arc<Held>>>>,
    chains: Arc<Mutex<Chains>>,
}

impl Dispatcher {
    pub fn new(
        js: jetstream::Context,
        orders_stream: String,
        filter: String,
        store: HookStore,
        deliverer: Deliverer,
        figures: Arc<Figures>,
    ) -> Self {
        Self {
            js,
            orders_stream,
            filter,
            store,
            registry: deliverer.registry.clone(),
            deliverer,
            figures,
            held: Arc::default(),
            chains: Arc::default(),
        }
    }

    /// Dispatches until `stop` (reconnecting after failures); held events stay unacknowledged.
    ///
    /// Only while some hook is registered: with none, nothing would be delivered, and consuming
    /// and acking every order event was 4 % of order-svc's CPU under load (BENCHMARKS.md). When
    /// the last hook goes, the durable is deleted rather than left behind, so the next hook's
    /// durable starts at its registration (`SKEW` before) instead of replaying every order
    /// stored in between.
    pub async fn run(self, stop: CancellationToken) {
        tokio::spawn(self.clone().keep_in_progress(stop.clone()));
        while !stop.is_cancelled() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.registry.wait_for_hooks(true) => {}
            }
            match self.consume(&stop).await {
                Ok(()) => continue, // stopped, or the last hook was deleted
                Err(error) => {
                    tracing::warn!(error = %error, "Webhook dispatch interrupted; resuming.")
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn consume(&self, stop: &CancellationToken) -> Result<(), Box<dyn std::error::Error>> {
        let stream = self.js.get_stream(&self.orders_stream).await?;
        // Created (once) from the first hook's registration, or from now when there is none:
        // no event a hook should get happened before that (see `SKEW`).
        let hooks = self.store.all().await?;
        let first = hooks
            .iter()
            .map(|h| h.created_at)
            .min()
            .unwrap_or_else(Utc::now);
        let consumer = stream
            .get_or_create_consumer(
                DURABLE,
                pull::Config {
                    durable_name: Some(DURABLE.into()),
                    description: Some(
                        "order-svc's webhook deliveries (one pinned instance)".into(),
                    ),
                    filter_subject: self.filter.clone(),
                    deliver_policy: DeliverPolicy::ByStartTime {
                        start_time: first - SKEW,
                    },
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_ack_pending: MAX_HELD,
                    priority_policy: PriorityPolicy::PinnedClient,
                    priority_groups: vec![GROUP.into()],
                    priority_timeout: PIN_TIMEOUT,
                    ..Default::default()
                },
            )
            .await?;
        let messages = consumer
            .stream()
            .group(GROUP)
            .max_messages_per_batch(256)
            .expires(Duration::from_secs(3))
            .messages()
            .await?;
        let mut chunks = messages.ready_chunks(256);
        let mut pinned = false;
        let mut fresh = Freshness::default();
        loop {
            let chunk = tokio::select! {
                _ = stop.cancelled() => Next::Stop,
                _ = self.registry.wait_for_hooks(false) => Next::NoHookLeft,
                chunk = chunks.next() => Next::Chunk(chunk),
            };
            let chunk = match chunk {
                Next::Chunk(chunk) => chunk,
                Next::Stop => {
                    // Unsubscribe first: the server then skips this instance's waiting pulls,
                    // so what is handed back cannot come back here (to wait out `ACK_WAIT`).
                    drop(chunks);
                    if pinned {
                        self.hand_over(&stream).await;
                    }
                    return Ok(());
                }
                Next::NoHookLeft => {
                    drop(chunks);
                    self.retire(&stream).await;
                    return Ok(());
                }
            };
            pinned = true; // only the pinned instance receives messages
            let Some(chunk) = chunk else {
                return Err("the consumer's message stream ended".into());
            };
            // Every hook acknowledged before these events were stored is matched against them.
            let newest = chunk
                .iter()
                .filter_map(|m| m.as_ref().ok()?.info().ok().map(|i| i.stream_sequence))
                .max()
                .unwrap_or(0);
            if newest > fresh.through {
                fresh.refresh(&self.store, &self.registry, &stream).await?;
            }
            for message in chunk {
                match message {
                    Ok(message) => self.take(message, stop).await,
                    Err(e) => {
                        use pull::MessagesErrorKind as Kind;
                        if matches!(e.kind(), Kind::MissingHeartbeat | Kind::Other) {
                            tracing::debug!(error = %e, "Webhook dispatch: a pull hiccup.");
                        } else {
                            return Err(e.into());
                        }
                    }
                }
            }
        }
    }

    /// Turns one order event into jobs on their chains (or acknowledges it if no hook takes it).
    async fn take(&self, message: jetstream::Message, stop: &CancellationToken) {
        let Ok(info) = message.info().map(|i| i.stream_sequence) else {
            return;
        };
        let seq = info;
        if self.held.lock().expect("held").contains_key(&seq) {
            return; // redelivered while still being delivered here
        }
        let event = match shared::events::OrderEvent::decode(&message.subject, &message.payload) {
            Ok(event) => event,
            Err(error) => {
                self.figures.poison.fetch_add(1, Ordering::Relaxed);
                tracing::error!(stream_seq = seq, error = %error, "An order event does not decode; no webhook gets it.");
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        let hooks: Vec<_> = self
            .registry
            .matching(event.event_type, event.customer_id)
            .into_iter()
            .filter(|h| event.occurred_at + SKEW >= h.hook.created_at)
            .collect();
        if hooks.is_empty() {
            if let Err(error) = message.ack().await {
                tracing::debug!(stream_seq = seq, error = %error, "Acknowledging an order event failed (it comes back).");
            }
            return;
        }
        let body = deliver::body(&event);
        let held = Arc::new(Held {
            message,
            remaining: AtomicUsize::new(hooks.len()),
        });
        self.held.lock().expect("held").insert(seq, held.clone());
        self.figures.backlog.fetch_add(1, Ordering::Relaxed);
        for hook in hooks {
            let job = Job {
                hook,
                event_type: event.event_type,
                order_id: event.order_id,
                version: event.version,
                body: body.clone(),
            };
            self.enqueue(job, held.clone(), stop);
        }
    }

    fn enqueue(&self, job: Job, held: Arc<Held>, stop: &CancellationToken) {
        let key = (job.hook.hook.id, job.order_id);
        let mut chains = self.chains.lock().expect("chains");
        let start = !chains.contains_key(&key);
        chains
            .entry(key)
            .or_default()
            .insert(job.version, (job, held));
        if start {
            tokio::spawn(self.clone().run_chain(key, stop.clone()));
        }
    }

    /// Delivers a chain's jobs one at a time, lowest version first, until it is empty.
    async fn run_chain(self, key: (Uuid, Uuid), stop: CancellationToken) {
        loop {
            let next = {
                let mut chains = self.chains.lock().expect("chains");
                let queue = chains.get_mut(&key).expect("a running chain has its entry");
                match queue.pop_first() {
                    Some((_, job)) => job,
                    None => {
                        chains.remove(&key);
                        return;
                    }
                }
            };
            let (job, held) = next;
            match self.deliverer.deliver(&job, &stop).await {
                Outcome::Stopped => return,
                Outcome::Delivered => self.figures.delivered.fetch_add(1, Ordering::Relaxed),
                Outcome::Parked => self.figures.parked.fetch_add(1, Ordering::Relaxed),
                Outcome::Dropped => 0,
            };
            self.finish(&held).await;
        }
    }

    /// One job of an event ended: the last one acknowledges the event.
    async fn finish(&self, held: &Held) {
        if held.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let seq = held.message.info().map(|i| i.stream_sequence).unwrap_or(0);
        self.held.lock().expect("held").remove(&seq);
        self.figures.backlog.fetch_sub(1, Ordering::Relaxed);
        if let Err(error) = held.message.ack().await {
            tracing::warn!(stream_seq = seq, error = %error, "Acknowledging a delivered order event failed; it may be delivered again.");
        }
    }

    /// On a graceful stop: gives every held event back (redelivered at once, in sequence order,
    /// to the next pinned instance) and releases the pin, so a standby instance takes over now
    /// rather than after `PIN_TIMEOUT` and `ACK_WAIT`. The chains have stopped delivering (they watch `stop`).
    async fn hand_over(&self, stream: &jetstream::stream::Stream) {
        let mut held: Vec<(u64, Arc<Held>)> = self.held.lock().expect("held").drain().collect();
        held.sort_by_key(|(seq, _)| *seq);
        for (_, h) in &held {
            let _ = h.message.ack_with(AckKind::Nak(None)).await;
        }
        if let Err(error) = stream.unpin_consumer(DURABLE, GROUP).await {
            tracing::debug!(error = %error, "Releasing the webhook dispatch pin failed (it lapses).");
        }
        tracing::info!(handed_over = held.len(), "Webhook dispatch handed over.");
    }

    /// The last hook was deleted: the durable goes (every instance that sees the last hook go
    /// tries; one succeeds). What is still held had no hook left to go to: its chains end as
    /// dropped.
    async fn retire(&self, stream: &jetstream::stream::Stream) {
        match stream.delete_consumer(DURABLE).await {
            Ok(_) => tracing::info!("No webhook left: webhook dispatch paused."),
            Err(error) => {
                tracing::debug!(error = %error, "Deleting the webhook durable failed (another instance did, or it is gone).")
            }
        }
    }

    /// Tells the server every held event is still being worked on (so it is not redelivered).
    async fn keep_in_progress(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(ACK_WAIT / 3);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let held: Vec<Arc<Held>> = self.held.lock().expect("held").values().cloned().collect();
            for h in held {
                let _ = h.message.ack_with(AckKind::Progress).await;
            }
        }
    }
}

/// What the consume loop does next.
enum Next<T> {
    Chunk(T),
    Stop,
    NoHookLeft,
}
