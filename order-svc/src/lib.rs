//! order-svc serves orders. The order stream (`ORDERS`) is their system of record: every state
//! of an order is a CAS publish on the order's subject, so any number of instances serve every
//! order. Each instance prices orders from a local ProductSnapshot (projected from `PRODUCTS`),
//! keeps a local orders view (projected from the order stream) for listings and background work,
//! and reserves and releases stock on product-svc over gRPC. Its sled holds only what it can
//! rebuild from the streams.
//!
//! `App::build(Config)` does every fallible start-up step; `App::run_until_stopped(shutdown)`
//! serves until the future resolves, then drains in the order `shared::lifecycle` keeps: stop
//! accepting and finish in-flight requests, stop the workers and both projectors (everything
//! applied is acked), flush.
mod config;
mod domain;
mod error;
mod http;
mod metrics;
mod order_log;
mod orders;
mod projector;
mod snapshot;
mod stock;
mod store;
mod tail;
mod view;
mod webhooks;
mod workers;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;

pub use config::{CatalogMode, Config, SCOPES};
pub use error::Error;
pub use projector::ProjectionStatus;

pub struct App {
    config: Config,
    auth: shared::auth::Auth,
    instance_id: String,
    metrics: Arc<shared::metrics::Metrics>,
    orders: orders::Orders,
    /// The sled database, and the two read models on it.
    store: store::Store,
    product_snapshot: snapshot::ProductSnapshot,
    view: view::OrdersView,
    nats: async_nats::Client,
    http: TcpListener,
    snapshot: Arc<ProjectionStatus>,
    orders_view: Arc<ProjectionStatus>,
    webhooks: webhooks::Webhooks,
}

impl App {
    pub async fn build(mut config: Config) -> anyhow::Result<Self> {
        config.settle_names()?;
        let auth = shared::auth::Auth::from_config(
            config.api_keys.as_deref(),
            config.allow_anonymous,
            SCOPES,
            "order-svc",
        )?;
        let (token, tls_ca) = config.grpc_credentials()?;
        // NATS first: refused credentials must stop the start before anything is opened.
        let nats = shared::nats::connect(&config.nats_url, "order-svc", &config.nats_auth).await?;
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("failed to create data dir {}", config.data_dir.display()))?;
        let instance_id =
            shared::instance::instance_id(&config.data_dir, config.instance_id.as_deref(), "order")
                .with_context(|| {
                    format!(
                        "failed to read or keep the instance id in {}",
                        config.data_dir.display()
                    )
                })?;
        let store = store::Store::open(&config.data_dir, config.cache_mb << 20)
            .with_context(|| format!("failed to open sled at {}", config.data_dir.display()))?;
        let metrics = shared::metrics::Metrics::new("order-svc", env!("CARGO_PKG_VERSION"));
        let stock = stock::StockClient::new(
            stock::StockConfig {
                urls: config.product_grpc_urls(),
                attempt_timeout: Duration::from_millis(config.stock_attempt_timeout_ms),
                retries: config.stock_retries,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                breaker_threshold: config.breaker_threshold,
                breaker_cooldown: Duration::from_millis(config.breaker_cooldown_ms),
                token,
                tls_ca,
            },
            metrics.grpc_client.clone(),
        )
        .context("invalid --product-grpc-url or --grpc-tls-ca")?;
        let http = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("failed to bind HTTP on {}", config.http_addr))?;
        let budget = Duration::from_millis(config.request_budget_ms);
        let log = order_log::OrderLog::new(
            nats.clone(),
            orders_stream_config(&config),
            config.orders_subject_prefix.clone(),
            budget,
        );
        let product_snapshot = snapshot::ProductSnapshot::open(&store)?;
        let view = view::OrdersView::open(&store)?;
        view.set_own_prefix(&config.orders_subject_prefix);
        let orders = orders::Orders::new(
            log,
            view.clone(),
            product_snapshot.clone(),
            stock,
            config.catalog,
            budget,
            config.site.is_none(),
        );
        let webhooks = webhooks::Webhooks::new(
            shared::nats::jetstream(nats.clone()),
            &config.orders_stream,
            config.stream_replicas,
            webhooks::Settings {
                max_attempts: config.webhook_max_attempts,
                initial_backoff: Duration::from_millis(config.webhook_backoff_ms),
                allow_private: config.webhook_allow_private,
            },
        );
        Ok(Self {
            webhooks,
            config,
            auth,
            instance_id,
            metrics,
            orders,
            store,
            product_snapshot,
            view,
            nats,
            http,
            snapshot: Arc::default(),
            orders_view: Arc::default(),
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound")
    }

    /// This instance's id (names its durables).
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Live ProductSnapshot projection figures (readiness, checkpoint, poison count).
    pub fn projection(&self) -> Arc<ProjectionStatus> {
        self.snapshot.clone()
    }

    /// Live orders-view projection figures.
    pub fn orders_projection(&self) -> Arc<ProjectionStatus> {
        self.orders_view.clone()
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let (data_dir, cache_bytes) = (self.config.data_dir.clone(), self.config.cache_mb << 20);
        let outcome = self.serve(shutdown).await;
        // Every handle of the store is gone with `self`.
        let started = std::time::Instant::now();
        match tokio::task::spawn_blocking(move || store::Store::checkpoint(&data_dir, cache_bytes))
            .await
        {
            Ok(Ok(())) => tracing::info!(
                micros = started.elapsed().as_micros() as u64,
                "The read models' store is checkpointed (the next start reads no log back)."
            ),
            Ok(Err(error)) => {
                tracing::info!(error = %shared::telemetry::error_chain(&error), "The read models' store was not checkpointed; the next start reads its log back.")
            }
            Err(error) => tracing::warn!(%error, "Checkpointing the read models' store failed."),
        }
        tracing::info!("order-svc stopped.");
        outcome
    }

    async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let http_addr = self.http_addr();
        let grace = Duration::from_secs(self.config.shutdown_grace_secs);
        let mut tasks = shared::lifecycle::Tasks::new();
        self.spawn_workers(&mut tasks);

        let limiter =
            shared::ratelimit::Limiter::new(self.config.rate_limit, self.config.rate_burst);
        metrics::sample_state(
            &self.metrics,
            self.orders.clone(),
            self.store.clone(),
            [
                ("products", self.snapshot.clone()),
                ("orders", self.orders_view.clone()),
            ],
            limiter.clone(),
        );
        let state = http::AppState::new(http::Shared {
            auth: self.auth.clone(),
            limiter,
            metrics: self.metrics.clone(),
            orders: self.orders.clone(),
            product_snapshot: self.product_snapshot.clone(),
            snapshot: self.snapshot.clone(),
            orders_view: self.orders_view.clone(),
            nats: self.nats.clone(),
            stopping: tasks.servers_stop.clone(),
            watch_max: Duration::from_secs(self.config.watch_max_secs.max(1)),
            webhooks: self.webhooks.clone(),
            tail: tail::OrderTail::new(
                shared::nats::jetstream(self.nats.clone()),
                self.config.orders_stream.clone(),
            ),
        });
        tasks.http(self.http, http::router(state));
        tracing::info!(http.addr = %http_addr, data_dir = %self.config.data_dir.display(), catalog = ?self.config.catalog, catalog_domain = ?self.config.catalog_domain, instance = %self.instance_id, orders_stream = %self.config.orders_stream, "order-svc started.");

        let outcome = tasks.run_until(shutdown, grace).await;
        self.product_snapshot.close().await;
        self.view.close().await;
        self.store.close().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.nats.flush()).await;
        outcome.map_err(anyhow::Error::from)
    }

    /// The workers: both projectors (the product snapshot from `PRODUCTS` or its mirror, the
    /// orders view from the order stream), the reconciler, the stock-work releaser, and the
    /// webhooks' registry follower and dispatcher.
    fn spawn_workers(&self, tasks: &mut shared::lifecycle::Tasks) {
        let interval = Duration::from_millis(self.config.worker_interval_ms);
        let workers_stop = tasks.workers_stop.clone();
        let js = shared::nats::jetstream(self.nats.clone());
        let js_for_hooks = js.clone();
        let products = projector::Projector {
            js: js.clone(),
            projection: self.product_snapshot.clone(),
            stream: match &self.config.catalog_domain {
                Some(domain) => {
                    shared::streams::products_mirror(domain, self.config.stream_replicas)
                }
                None => shared::streams::products(self.config.stream_replicas),
            },
            durable: format!("order-svc-{}-products", self.instance_id),
            status: self.snapshot.clone(),
        };
        let orders_view = projector::Projector {
            js,
            projection: self.view.clone(),
            stream: orders_stream_config(&self.config),
            durable: format!("order-svc-{}-orders", self.instance_id),
            status: self.orders_view.clone(),
        };
        tasks.worker(self.orders.clone().prepare_stream(workers_stop.clone()));
        tasks.worker(projector::run(products, workers_stop.clone()));
        tasks.worker(projector::run(orders_view, workers_stop.clone()));
        tasks.worker(workers::reconciler(
            self.orders.clone(),
            interval,
            workers_stop.clone(),
        ));
        tasks.worker(workers::releaser(
            self.orders.clone(),
            interval,
            workers_stop.clone(),
        ));
        let webhooks = self.webhooks.workers(
            js_for_hooks,
            self.config.orders_stream.clone(),
            &self.config.orders_subject_prefix,
            workers_stop,
        );
        for worker in webhooks {
            tasks.worker(worker);
        }
    }
}

/// The order stream's config; at the hub (`--edge-sites`), with a source per site.
fn orders_stream_config(config: &Config) -> async_nats::jetstream::stream::Config {
    if config.edge_sites.is_empty() {
        shared::streams::orders(
            &config.orders_stream,
            &config.orders_subject_prefix,
            config.stream_replicas,
        )
    } else {
        shared::streams::orders_with_sites(
            &config.orders_stream,
            &config.orders_subject_prefix,
            config.stream_replicas,
            &config.edge_sites,
        )
    }
}

pub(crate) use shared::instance::is_token;
