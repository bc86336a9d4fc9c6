//! order-svc owns orders. It prices orders from a local ProductSnapshot (projected from the
//! `PRODUCTS` stream by a durable JetStream consumer), reserves and releases stock on
//! product-svc over gRPC, and publishes order events through an outbox to `ORDERS`.
//!
//! `App::build(Config)` does every fallible start-up step; `App::run_until_stopped(shutdown)`
//! serves until the future resolves, then stops accepting, finishes in-flight requests, stops
//! the workers and the projector (everything applied is acked), drains the relay and flushes.
mod domain;
mod error;
mod http;
mod openapi;
mod orders;
mod projector;
mod stock;
mod store;
mod workers;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use shared::outbox::{Relay, RelayConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::Error;
pub use projector::ProjectionStatus;

/// Where create-order reads catalog data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CatalogMode {
    /// The local ProductSnapshot, reading through to product-svc on a miss (Phase 15).
    Snapshot,
    /// Always ask product-svc's GetProducts (the original Phase-6 design; for comparison).
    Grpc,
}

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "order-svc", version, about = "Order service of eshop")]
pub struct Config {
    /// HTTP JSON API address.
    #[arg(long, env = "ORDER_HTTP_ADDR", default_value = "127.0.0.1:5002")]
    pub http_addr: SocketAddr,
    /// Directory of the sled database.
    #[arg(long, env = "ORDER_DATA_DIR", default_value = "./data/order")]
    pub data_dir: PathBuf,
    /// NATS server URL(s), comma-separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// product-svc's gRPC endpoint.
    #[arg(
        long,
        env = "PRODUCT_GRPC_URL",
        default_value = "http://127.0.0.1:5051"
    )]
    pub product_grpc_url: String,
    /// Names this instance's durable consumer (each instance has its own sled and durable).
    #[arg(long, env = "ORDER_INSTANCE_ID", default_value = "order-1")]
    pub instance_id: String,
    /// Catalog source for create-order.
    #[arg(long, env = "ORDER_CATALOG", value_enum, default_value = "snapshot")]
    pub catalog: CatalogMode,
    /// How long a create request waits for product-svc before answering 202 Pending.
    #[arg(long, env = "ORDER_REQUEST_BUDGET_MS", default_value_t = 2000)]
    pub request_budget_ms: u64,
    /// Deadline of one gRPC attempt.
    #[arg(long, env = "ORDER_STOCK_ATTEMPT_TIMEOUT_MS", default_value_t = 1000)]
    pub stock_attempt_timeout_ms: u64,
    /// Retries of a transient gRPC failure (backoff 100 ms ×2, capped at 5 s, with jitter).
    #[arg(long, env = "ORDER_STOCK_RETRIES", default_value_t = 3)]
    pub stock_retries: usize,
    /// Consecutive transient failures that open the circuit breaker.
    #[arg(long, env = "ORDER_BREAKER_THRESHOLD", default_value_t = 5)]
    pub breaker_threshold: u32,
    /// How long the breaker stays open.
    #[arg(long, env = "ORDER_BREAKER_COOLDOWN_MS", default_value_t = 2000)]
    pub breaker_cooldown_ms: u64,
    /// How often the reconciler and the releaser look for work.
    #[arg(long, env = "ORDER_WORKER_INTERVAL_MS", default_value_t = 1000)]
    pub worker_interval_ms: u64,
    /// Replicas of the streams this service creates if missing (3 on a cluster).
    #[arg(long, env = "ORDER_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
    /// sled page cache, MiB.
    #[arg(long, env = "ORDER_CACHE_MB", default_value_t = 32)]
    pub cache_mb: u64,
    /// How long shutdown waits for in-flight requests and the relay.
    #[arg(long, env = "ORDER_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
}

impl Config {
    /// Loopback on a random port, for tests.
    pub fn for_tests(data_dir: PathBuf, nats_url: &str, product_grpc_url: &str) -> Self {
        Self {
            http_addr: "127.0.0.1:0".parse().expect("addr"),
            data_dir,
            nats_url: nats_url.into(),
            product_grpc_url: product_grpc_url.into(),
            instance_id: "test".into(),
            catalog: CatalogMode::Snapshot,
            request_budget_ms: 2000,
            stock_attempt_timeout_ms: 1000,
            stock_retries: 3,
            breaker_threshold: 5,
            breaker_cooldown_ms: 500,
            worker_interval_ms: 200,
            stream_replicas: 1,
            cache_mb: 16,
            shutdown_grace_secs: 5,
        }
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    orders: orders::Orders,
    projection: Arc<ProjectionStatus>,
}

pub struct App {
    config: Config,
    orders: orders::Orders,
    nats: async_nats::Client,
    http: TcpListener,
    projection: Arc<ProjectionStatus>,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !config.instance_id.is_empty()
                && config.instance_id.len() <= 64
                && config
                    .instance_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "--instance-id must be 1-64 characters of [A-Za-z0-9_-]"
        );
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("failed to create data dir {}", config.data_dir.display()))?;
        let store = store::Store::open(&config.data_dir, config.cache_mb << 20)
            .with_context(|| format!("failed to open sled at {}", config.data_dir.display()))?;
        let stock = stock::StockClient::new(stock::StockConfig {
            url: config.product_grpc_url.clone(),
            attempt_timeout: Duration::from_millis(config.stock_attempt_timeout_ms),
            retries: config.stock_retries,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            breaker_threshold: config.breaker_threshold,
            breaker_cooldown: Duration::from_millis(config.breaker_cooldown_ms),
        })
        .context("invalid --product-grpc-url")?;
        let nats = shared::nats::connect(&config.nats_url, "order-svc")
            .await
            .context("invalid NATS options")?;
        let http = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("failed to bind HTTP on {}", config.http_addr))?;
        let orders = orders::Orders {
            store,
            stock: Arc::new(stock),
            catalog: config.catalog,
            budget: Duration::from_millis(config.request_budget_ms),
        };
        Ok(Self {
            config,
            orders,
            nats,
            http,
            projection: Arc::default(),
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound")
    }

    /// Live projection figures (readiness, checkpoint, poison count), for tests and benchmarks.
    pub fn projection(&self) -> Arc<ProjectionStatus> {
        self.projection.clone()
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let http_addr = self.http_addr();
        let grace = Duration::from_secs(self.config.shutdown_grace_secs);
        let interval = Duration::from_millis(self.config.worker_interval_ms);
        let servers_stop = CancellationToken::new();
        let workers_stop = CancellationToken::new();
        let relay_stop = CancellationToken::new();
        let js = shared::nats::jetstream(self.nats.clone());

        let projector = projector::Projector {
            js: js.clone(),
            store: self.orders.store.clone(),
            durable: format!("order-svc-{}", self.config.instance_id),
            replicas: self.config.stream_replicas,
            status: self.projection.clone(),
        };
        let projector_task = tokio::spawn(projector::run(projector, workers_stop.clone()));
        let reconciler = tokio::spawn(workers::reconciler(
            self.orders.clone(),
            interval,
            workers_stop.clone(),
        ));
        let releaser = tokio::spawn(workers::releaser(
            self.orders.clone(),
            interval,
            workers_stop.clone(),
        ));
        let relay = Relay {
            tree: self.orders.store.outbox_tree(),
            js,
            wake: self.orders.store.relay_wake(),
            config: RelayConfig {
                window: 1000,
                streams: vec![shared::streams::orders(self.config.stream_replicas)],
                max_backoff: Duration::from_secs(5),
                drain_timeout: grace,
            },
        };
        let relay_task = tokio::spawn(relay.run(relay_stop.clone()));

        let state = AppState {
            orders: self.orders.clone(),
            projection: self.projection.clone(),
        };
        let router = http::router(state);
        let stop = servers_stop.clone();
        let mut http_task = tokio::spawn(async move {
            axum::serve(self.http, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        tracing::info!(http.addr = %http_addr, data_dir = %self.config.data_dir.display(), catalog = ?self.config.catalog, instance = %self.config.instance_id, "order-svc started.");

        let mut failure = None;
        tokio::select! {
            _ = shutdown => {}
            r = &mut http_task => failure = Some(format!("HTTP server stopped: {r:?}")),
        }
        servers_stop.cancel();
        if tokio::time::timeout(grace, &mut http_task).await.is_err() {
            tracing::warn!("In-flight requests did not finish within the grace period.");
            http_task.abort();
        }
        workers_stop.cancel();
        let _ = tokio::join!(projector_task, reconciler, releaser);
        relay_stop.cancel();
        let _ = relay_task.await;
        self.orders.store.close().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.nats.flush()).await;
        tracing::info!("order-svc stopped.");
        match failure {
            Some(f) => Err(anyhow::anyhow!(f)),
            None => Ok(()),
        }
    }
}
