//! order-svc serves orders. The order stream (`ORDERS`) is their system of record: every state
//! of an order is a CAS publish on the order's subject, so any number of instances serve every
//! order. Each instance prices orders from a local ProductSnapshot (projected from `PRODUCTS`),
//! keeps a local orders view (projected from the order stream) for listings and background work,
//! and reserves and releases stock on product-svc over gRPC. Its sled holds only what it can
//! rebuild from the streams.
//!
//! `App::build(Config)` does every fallible start-up step; `App::run_until_stopped(shutdown)`
//! serves until the future resolves, then stops accepting, finishes in-flight requests, stops
//! the workers and both projectors (everything applied is acked) and flushes.
mod domain;
mod error;
mod http;
mod metrics;
mod order_log;
mod orders;
mod projector;
mod stock;
mod store;
mod view;
mod workers;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
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
    /// Names this instance's durable consumers. Default: an id generated on first start and
    /// kept in the data dir (so every instance has its own durables, and a wiped data dir
    /// starts as a new instance).
    #[arg(long, env = "ORDER_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// The order stream (created if missing; an edge site runs its own).
    #[arg(long, env = "ORDER_STREAM", default_value = shared::streams::ORDERS)]
    pub orders_stream: String,
    /// Subject prefix of the order stream: order `<id>` is published on `<prefix>.<id>`.
    #[arg(long, env = "ORDER_SUBJECT_PREFIX", default_value = shared::events::ORDER_SUBJECT_PREFIX)]
    pub orders_subject_prefix: String,
    /// This instance runs at edge site SITE (its nats-server a leaf node in JetStream domain
    /// SITE): orders go to the site's own stream (`ORDERS_<SITE>` on `eshop.<site>.orders.*`),
    /// which the hub's `ORDERS` sources. Conflicts with a non-default --orders-stream/-prefix.
    #[arg(long, env = "ORDER_SITE")]
    pub site: Option<String>,
    /// The JetStream domain that owns the catalog (e.g. `hub`): the local `PRODUCTS` is then a
    /// mirror of that domain's `PRODUCTS`, projected locally, so the catalog is read with the
    /// uplink down. Unset: `PRODUCTS` is local (one box, or a cluster).
    #[arg(long, env = "ORDER_CATALOG_DOMAIN")]
    pub catalog_domain: Option<String>,
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
    /// How often the reconciler and the releaser look for work (jittered by ±50 %).
    #[arg(long, env = "ORDER_WORKER_INTERVAL_MS", default_value_t = 1000)]
    pub worker_interval_ms: u64,
    /// Replicas of the streams this service creates if missing (3 on a cluster).
    #[arg(long, env = "ORDER_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
    /// sled page cache, MiB.
    #[arg(long, env = "ORDER_CACHE_MB", default_value_t = 32)]
    pub cache_mb: u64,
    /// How long shutdown waits for in-flight requests.
    #[arg(long, env = "ORDER_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    /// API key file (SHA-256 digests, scopes `orders:read`, `orders:write`, `orders:admin`,
    /// optionally bound to a customer); see `just key`.
    #[arg(long, env = "ORDER_API_KEYS")]
    pub api_keys: Option<PathBuf>,
    /// A file holding the token product-svc's gRPC API expects (`authorization: Bearer`).
    #[arg(long, env = "ORDER_GRPC_TOKEN_FILE")]
    pub grpc_token_file: Option<PathBuf>,
    /// PEM CA certificate(s) to verify product-svc's gRPC certificate; needs an `https://`
    /// `--product-grpc-url`.
    #[arg(long, env = "ORDER_GRPC_TLS_CA")]
    pub grpc_tls_ca: Option<PathBuf>,
    /// Serve the HTTP API without authentication and call product-svc without a token
    /// (refused otherwise when no key or token file is given).
    #[arg(long, env = "ALLOW_ANONYMOUS", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_anonymous: bool,
    /// NATS credentials and TLS.
    #[command(flatten)]
    pub nats_auth: shared::nats::NatsAuth,
    /// Requests a second each API key (or, anonymous, each client IP) may make; 0 turns the
    /// limit off. Beyond it: 429 with Retry-After.
    #[arg(long, env = "ORDER_RATE_LIMIT", default_value_t = 1000)]
    pub rate_limit: u32,
    /// Burst above the rate a caller may use at once.
    #[arg(long, env = "ORDER_RATE_BURST", default_value_t = 2000)]
    pub rate_burst: u32,
}

/// The scopes order-svc's API keys may hold.
pub const SCOPES: &[&str] = &["orders:read", "orders:write", "orders:admin"];

impl Config {
    /// Loopback on a random port, for tests.
    pub fn for_tests(data_dir: PathBuf, nats_url: &str, product_grpc_url: &str) -> Self {
        Self {
            http_addr: "127.0.0.1:0".parse().expect("addr"),
            data_dir,
            nats_url: nats_url.into(),
            product_grpc_url: product_grpc_url.into(),
            instance_id: None,
            orders_stream: shared::streams::ORDERS.into(),
            orders_subject_prefix: shared::events::ORDER_SUBJECT_PREFIX.into(),
            site: None,
            catalog_domain: None,
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
            api_keys: None,
            grpc_token_file: None,
            grpc_tls_ca: None,
            allow_anonymous: false,
            rate_limit: 0,
            rate_burst: 1,
            nats_auth: Default::default(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    auth: shared::auth::Auth,
    limiter: Arc<shared::ratelimit::Limiter>,
    metrics: Arc<shared::metrics::Metrics>,
    orders: orders::Orders,
    snapshot: Arc<ProjectionStatus>,
    orders_view: Arc<ProjectionStatus>,
}

pub struct App {
    config: Config,
    auth: shared::auth::Auth,
    instance_id: String,
    metrics: Arc<shared::metrics::Metrics>,
    orders: orders::Orders,
    nats: async_nats::Client,
    http: TcpListener,
    snapshot: Arc<ProjectionStatus>,
    orders_view: Arc<ProjectionStatus>,
}

impl App {
    pub async fn build(mut config: Config) -> anyhow::Result<Self> {
        if let Some(site) = config.site.clone() {
            anyhow::ensure!(
                shared::streams::is_site_name(&site),
                "--site must be 1-32 characters of [A-Za-z0-9_-]"
            );
            anyhow::ensure!(
                config.orders_stream == shared::streams::ORDERS
                    && config.orders_subject_prefix == shared::events::ORDER_SUBJECT_PREFIX,
                "--site names the order stream and subjects itself; drop --orders-stream/--orders-subject-prefix"
            );
            config.orders_stream = shared::streams::site_orders_stream(&site);
            config.orders_subject_prefix = shared::streams::site_orders_prefix(&site);
        }
        if let Some(domain) = &config.catalog_domain {
            anyhow::ensure!(
                shared::streams::is_site_name(domain),
                "--catalog-domain must be 1-32 characters of [A-Za-z0-9_-]"
            );
        }
        let auth = shared::auth::Auth::from_config(
            config.api_keys.as_deref(),
            config.allow_anonymous,
            SCOPES,
            "order-svc",
        )
        .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            is_token(&config.orders_stream),
            "--orders-stream must be 1-64 characters of [A-Za-z0-9_-]"
        );
        anyhow::ensure!(
            config.orders_subject_prefix.len() <= 128
                && config
                    .orders_subject_prefix
                    .split('.')
                    .all(|t| !t.is_empty()
                        && t.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')),
            "--orders-subject-prefix must be dot-separated tokens of [A-Za-z0-9_-]"
        );
        let token = match (&config.grpc_token_file, config.allow_anonymous) {
            (Some(path), _) => Some(
                shared::auth::read_token(path)
                    .map_err(anyhow::Error::msg)?
                    .1,
            ),
            (None, true) => None,
            (None, false) => anyhow::bail!(
                "order-svc needs --grpc-token-file FILE (the token product-svc expects), or --allow-anonymous"
            ),
        };
        let tls_ca = match (
            &config.grpc_tls_ca,
            config.product_grpc_url.starts_with("https://"),
        ) {
            (Some(path), true) => Some(
                std::fs::read(path)
                    .with_context(|| format!("failed to read --grpc-tls-ca {}", path.display()))?,
            ),
            (Some(_), false) => {
                anyhow::bail!("--grpc-tls-ca needs an https:// --product-grpc-url")
            }
            (None, true) => anyhow::bail!(
                "an https:// --product-grpc-url needs --grpc-tls-ca FILE (the CA that signed product-svc's certificate)"
            ),
            (None, false) => None,
        };
        // NATS first: refused credentials must stop the start before anything is opened.
        let nats = shared::nats::connect(&config.nats_url, "order-svc", &config.nats_auth)
            .await
            .map_err(anyhow::Error::msg)?;
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("failed to create data dir {}", config.data_dir.display()))?;
        let instance_id = instance_id(&config.data_dir, config.instance_id.as_deref())?;
        let store = store::Store::open(&config.data_dir, config.cache_mb << 20)
            .with_context(|| format!("failed to open sled at {}", config.data_dir.display()))?;
        let metrics = shared::metrics::Metrics::new("order-svc", env!("CARGO_PKG_VERSION"));
        let stock = stock::StockClient::new(
            stock::StockConfig {
                url: config.product_grpc_url.clone(),
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
        store
            .orders_view()
            .set_own_prefix(&config.orders_subject_prefix);
        let orders = orders::Orders {
            log,
            view: store.orders_view(),
            snapshot: store,
            stock: Arc::new(stock),
            catalog: config.catalog,
            budget,
            counters: Arc::default(),
            stock_work_wake: Arc::default(),
            own_stock_work: Arc::default(),
        };
        Ok(Self {
            config,
            auth,
            instance_id,
            metrics,
            orders,
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
        let http_addr = self.http_addr();
        let grace = Duration::from_secs(self.config.shutdown_grace_secs);
        let interval = Duration::from_millis(self.config.worker_interval_ms);
        let servers_stop = CancellationToken::new();
        let workers_stop = CancellationToken::new();
        let js = shared::nats::jetstream(self.nats.clone());
        let store = self.orders.snapshot.clone();

        let products = projector::Projector {
            js: js.clone(),
            projection: store.clone(),
            commit: store.commit(),
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
            projection: self.orders.view.clone(),
            commit: store.commit(),
            stream: orders_stream_config(&self.config),
            durable: format!("order-svc-{}-orders", self.instance_id),
            status: self.orders_view.clone(),
        };
        let projectors = [
            tokio::spawn(projector::run(products, workers_stop.clone())),
            tokio::spawn(projector::run(orders_view, workers_stop.clone())),
        ];
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

        let limiter =
            shared::ratelimit::Limiter::new(self.config.rate_limit, self.config.rate_burst);
        metrics::sample_state(
            &self.metrics,
            self.orders.clone(),
            [
                ("products", self.snapshot.clone()),
                ("orders", self.orders_view.clone()),
            ],
            limiter.clone(),
        );
        let state = AppState {
            auth: self.auth.clone(),
            limiter,
            metrics: self.metrics.clone(),
            orders: self.orders.clone(),
            snapshot: self.snapshot.clone(),
            orders_view: self.orders_view.clone(),
        };
        let router = http::router(state);
        let stop = servers_stop.clone();
        let mut http_task = tokio::spawn(async move {
            axum::serve(
                self.http,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        });
        tracing::info!(http.addr = %http_addr, data_dir = %self.config.data_dir.display(), catalog = ?self.config.catalog, catalog_domain = ?self.config.catalog_domain, instance = %self.instance_id, orders_stream = %self.config.orders_stream, "order-svc started.");

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
        let [a, b] = projectors;
        let _ = tokio::join!(a, b, reconciler, releaser);
        store.close().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.nats.flush()).await;
        tracing::info!("order-svc stopped.");
        match failure {
            Some(f) => Err(anyhow::anyhow!(f)),
            None => Ok(()),
        }
    }
}

fn orders_stream_config(config: &Config) -> async_nats::jetstream::stream::Config {
    shared::streams::orders(
        &config.orders_stream,
        &config.orders_subject_prefix,
        config.stream_replicas,
    )
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The given instance id, or the one kept in the data dir (generated on first start).
fn instance_id(data_dir: &Path, given: Option<&str>) -> anyhow::Result<String> {
    if let Some(id) = given {
        anyhow::ensure!(
            is_token(id),
            "--instance-id must be 1-64 characters of [A-Za-z0-9_-]"
        );
        return Ok(id.to_owned());
    }
    let path = data_dir.join("instance-id");
    match std::fs::read_to_string(&path) {
        Ok(kept) => {
            let id = kept.trim().to_owned();
            anyhow::ensure!(
                is_token(&id),
                "{} holds an invalid instance id",
                path.display()
            );
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = format!("order-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            // Written to a temp file and renamed, so a crash never leaves half an id.
            let tmp = data_dir.join("instance-id.tmp");
            std::fs::write(&tmp, &id)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .with_context(|| format!("failed to write {}", path.display()))?;
            tracing::info!(instance = %id, "Generated this instance's id.");
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
    }
}
