//! Each instance's copy of the registrations, followed from the registration stream (each
//! hook's latest, then every change): what the dispatcher matches order events against, with
//! each hook's signing key ready. The dispatcher asks `wait_applied` (through `Freshness`) for
//! the stream's last change before matching, so a hook registered (201) before an order changed
//! is never missed because this copy lagged.
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use futures::StreamExt;
use shared::events::OrderEventType;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    sign,
    store::{self, Hook, HookStore},
};
use crate::domain::HookScope;

/// Requests in flight to one hook at most (a receiver that is down is not flooded with every
/// order's retries at once).
const PER_HOOK_IN_FLIGHT: usize = 16;

/// A registered hook, ready to deliver to.
pub struct LiveHook {
    pub hook: Hook,
    /// The hook's URL, parsed once.
    pub url: url::Url,
    pub scope: HookScope,
    pub key: ring::hmac::Key,
    pub permits: Semaphore,
}

#[derive(Clone)]
pub struct Registry {
    hooks: Arc<RwLock<HashMap<Uuid, Arc<LiveHook>>>>,
    /// The registration stream's sequence applied so far.
    applied: Arc<watch::Sender<u64>>,
}

impl Registry {
    pub fn new() -> Self {
        Self {
            hooks: Arc::default(),
            applied: Arc::new(watch::channel(0).0),
        }
    }

    /// The hooks that take an order state of `customer` produced by `event`.
    pub fn matching(&self, event: OrderEventType, customer: Uuid) -> Vec<Arc<LiveHook>> {
        let hooks = self.hooks.read().expect("registry lock");
        hooks
            .values()
            .filter(|h| h.scope.takes(event, customer))
            .cloned()
            .collect()
    }

    /// Returns once there is at least one hook (`present`), or none (`!present`).
    pub async fn wait_for_hooks(&self, present: bool) {
        let mut applied = self.applied.subscribe();
        let has_hooks = || !self.hooks.read().expect("registry lock").is_empty();
        let _ = applied.wait_for(|_| has_hooks() == present).await;
    }

    /// Whether the hook is still registered (a deleted hook's pending deliveries stop).
    pub fn contains(&self, id: Uuid) -> bool {
        self.hooks.read().expect("registry lock").contains_key(&id)
    }

    /// Waits until every registration change up to `seq` is applied; `false` on timeout.
    pub async fn wait_applied(&self, seq: u64, timeout: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(timeout, applied.wait_for(|a| *a >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn apply(&self, seq: u64, subject: &str, payload: &[u8]) {
        let id = subject
            .rsplit('.')
            .next()
            .and_then(|t| t.parse::<Uuid>().ok());
        match (id, store::decode(payload)) {
            (Some(id), Ok(None)) => {
                self.hooks.write().expect("registry lock").remove(&id);
            }
            (Some(_), Ok(Some(hook))) => match (sign::key(&hook.secret), hook.url.parse()) {
                (Some(key), Ok(url)) => {
                    let live = LiveHook {
                        url,
                        scope: HookScope {
                            events: hook.events.clone(),
                            customer: hook.customer_id,
                        },
                        key,
                        permits: Semaphore::new(PER_HOOK_IN_FLIGHT),
                        hook,
                    };
                    let mut hooks = self.hooks.write().expect("registry lock");
                    hooks.insert(live.hook.id, Arc::new(live));
                }
                _ => tracing::error!(
                    stream_seq = seq,
                    "A webhook registration has an unusable secret or URL; skipped."
                ),
            },
            (_, Err(error)) => {
                tracing::error!(stream_seq = seq, error = %error, "A webhook registration does not decode; skipped.")
            }
            (None, Ok(_)) => {
                tracing::error!(
                    stream_seq = seq,
                    subject,
                    "A webhook registration on an unexpected subject; skipped."
                )
            }
        }
        self.applied.send_replace(seq);
    }

    /// Follows the registration stream until `stop`, reconnecting after a failure.
    pub async fn follow(self, store: HookStore, stop: CancellationToken) {
        while !stop.is_cancelled() {
            match store.follow().await {
                Ok(mut messages) => loop {
                    let next = tokio::select! {
                        _ = stop.cancelled() => return,
                        next = messages.next() => next,
                    };
                    let Some(Ok(message)) = next else { break };
                    let seq = message
                        .info()
                        .map(|i| i.stream_sequence)
                        .unwrap_or_default();
                    self.apply(seq, &message.subject, &message.payload);
                },
                Err(error) => {
                    tracing::warn!(error = %shared::telemetry::error_chain(&error), "Cannot follow the webhook registrations; retrying.");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// Up to which order stream sequence the registry is known to hold every hook registered before
/// it: the registry has applied the registration stream's last sequence read *before* the
/// order stream's last sequence was read. Refreshed at most every `FRESHNESS_EVERY` (two stream
/// infos), so under load one refresh covers every event stored meanwhile.
#[derive(Default)]
pub(super) struct Freshness {
    pub(super) through: u64,
    at: Option<tokio::time::Instant>,
}

const FRESHNESS_EVERY: Duration = Duration::from_millis(5);

impl Freshness {
    pub(super) async fn refresh(
        &mut self,
        store: &HookStore,
        registry: &Registry,
        orders: &async_nats::jetstream::stream::Stream,
    ) -> Result<(), Box<dyn std::error::Error>> {
        if let Some(at) = self.at {
            tokio::time::sleep_until(at + FRESHNESS_EVERY).await;
        }
        self.at = Some(tokio::time::Instant::now());
        let hooks = store.last_change().await?;
        let through = orders.clone().info().await?.state.last_sequence;
        if !registry.wait_applied(hooks, Duration::from_secs(5)).await {
            return Err("the webhook registry is behind its stream".into());
        }
        self.through = through;
        Ok(())
    }
}
