//! Webhooks: order clients are told of every order change they care about instead of polling.
//! Registrations and delivery attempts live in JetStream (`store`), each instance follows the
//! registrations (`registry`), one instance at a time dispatches the order stream's events to
//! the matching hooks in order per order (`dispatch`), each event POSTed signed the way Standard
//! Webhooks says (`sign`) to addresses the SSRF guard allows (`guard`), retried with backoff and
//! parked after the last attempt (`deliver`).
mod client;
mod deliver;
mod dispatch;
mod guard;
mod registry;
mod sign;
mod store;

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use uuid::Uuid;

pub use dispatch::Figures;
pub use store::{Attempt, Hook};

use crate::{
    domain::{HookDraft, HookRefused, Registrar},
    error::{Error, Result},
};

/// Webhook settings (`--webhook-*`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub allow_private: bool,
}

/// What the HTTP API and the workers use: registrations, attempts, and the two workers.
#[derive(Clone)]
pub struct Webhooks {
    store: store::HookStore,
    registry: registry::Registry,
    settings: Settings,
    figures: Arc<Figures>,
}

/// A worker's future.
pub type Worker = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

impl Webhooks {
    pub fn new(
        js: async_nats::jetstream::Context,
        orders_stream: &str,
        replicas: usize,
        settings: Settings,
    ) -> Self {
        Self {
            store: store::HookStore::new(js, orders_stream, replicas),
            registry: registry::Registry::new(),
            settings,
            figures: Arc::default(),
        }
    }

    pub fn figures(&self) -> &Figures {
        &self.figures
    }

    /// Registers a hook: checked (events, customer, URL), stored, answered with its secret.
    pub async fn register(&self, draft: HookDraft, by: Registrar) -> Result<Hook> {
        let scope = crate::domain::validate_hook(&draft, by).map_err(|refused| match refused {
            HookRefused::Invalid(errors) => Error::Validation(errors),
            HookRefused::Forbidden(why) => Error::Forbidden(why),
        })?;
        let raw = draft.url.unwrap_or_default();
        let url = guard::check_url(&raw, self.settings.allow_private).map_err(|why| {
            let mut errors = shared::fields::FieldErrors::new();
            errors.add("url", why);
            // Off the documented shape: 400; of that shape and still refused: 422.
            if guard::has_documented_shape(&raw) {
                Error::Unprocessable(errors)
            } else {
                Error::Validation(errors)
            }
        })?;
        let hook = Hook {
            id: Uuid::new_v4(),
            url: url.to_string(),
            events: scope.events,
            customer_id: scope.customer,
            secret: sign::new_secret(),
            created_at: Utc::now(),
        };
        self.store.create(&hook).await?;
        tracing::info!(webhook_id = %hook.id, customer_id = ?hook.customer_id, events = hook.events.len(), "Webhook registered.");
        Ok(hook)
    }

    /// Every hook `customer` may see (`None`: all), oldest first.
    pub async fn list(&self, customer: Option<Uuid>) -> Result<Vec<Hook>> {
        let hooks = self.store.all().await?;
        Ok(hooks
            .into_iter()
            .filter(|h| customer.is_none_or(|c| h.customer_id == Some(c)))
            .collect())
    }

    /// One hook, if `customer` (a key's binding) may see it.
    pub async fn get(&self, id: Uuid, customer: Option<Uuid>) -> Result<Hook> {
        match self.store.get(id).await? {
            Some(h) if customer.is_none_or(|c| h.customer_id == Some(c)) => Ok(h),
            _ => Err(Error::NoSuchWebhook),
        }
    }

    pub async fn delete(&self, id: Uuid, customer: Option<Uuid>) -> Result<()> {
        self.get(id, customer).await?;
        self.store.delete(id).await?;
        tracing::info!(webhook_id = %id, "Webhook deleted.");
        Ok(())
    }

    /// A hook's last attempts, newest first.
    pub async fn attempts(&self, id: Uuid, customer: Option<Uuid>) -> Result<Vec<Attempt>> {
        self.get(id, customer).await?;
        self.store.attempts(id).await
    }

    /// The registry follower, the dispatcher and the attempts' recorder, until `stop`.
    pub fn workers(
        &self,
        js: async_nats::jetstream::Context,
        orders_stream: String,
        orders_prefix: &str,
        stop: tokio_util::sync::CancellationToken,
    ) -> [Worker; 3] {
        let (log, attempts) = tokio::sync::mpsc::unbounded_channel();
        let deliverer = deliver::Deliverer {
            client: Arc::default(),
            log,
            registry: self.registry.clone(),
            max_attempts: self.settings.max_attempts,
            initial_backoff: self.settings.initial_backoff,
            allow_private: self.settings.allow_private,
        };
        let recorder = deliver::record_attempts(self.store.clone(), attempts, stop.clone());
        let dispatcher = dispatch::Dispatcher::new(
            js,
            orders_stream,
            format!("{orders_prefix}.*"),
            self.store.clone(),
            deliverer,
            self.figures.clone(),
        );
        let follow = self
            .registry
            .clone()
            .follow(self.store.clone(), stop.clone());
        [
            Box::pin(follow),
            Box::pin(dispatcher.run(stop)),
            Box::pin(recorder),
        ]
    }
}
