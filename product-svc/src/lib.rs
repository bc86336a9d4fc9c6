//! product-svc owns the catalog and the stock. It serves catalog admins over HTTP JSON and
//! order-svc over gRPC (reserve/release stock), and publishes every catalog change to JetStream
//! through a transactional outbox.
//!
//! `App::build(Config)` does every fallible start-up step (open sled, bind both listeners,
//! start connecting to NATS); `App::run_until_stopped(shutdown)` serves until the future
//! resolves, then drains: stop accepting, finish in-flight requests, drain the relay, flush.
mod audit;
mod domain;
mod error;
mod follower;
mod grpc;
mod http;
mod ledger;
mod metrics;
mod retention;
mod seed;
mod store;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use shared::{
    metrics::Metrics,
    outbox::{Relay, RelayConfig},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::Error;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "product-svc",
    version,
    about = "Catalog and stock service of eshop"
)]
pub struct Config {
    /// HTTP JSON API address.
    #[arg(long, env = "PRODUCT_HTTP_ADDR", default_value = "127.0.0.1:5001")]
    pub http_addr: SocketAddr,
    /// gRPC stock API address.
    #[arg(long, env = "PRODUCT_GRPC_ADDR", default_value = "127.0.0.1:5051")]
    pub grpc_addr: SocketAddr,
    /// Directory of the sled database.
    #[arg(long, env = "PRODUCT_DATA_DIR", default_value = "./data/product")]
    pub data_dir: PathBuf,
    /// NATS server URL(s), comma-separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Replicas of the PRODUCTS and STOCK streams (3 on a cluster).
    #[arg(long, env = "PRODUCT_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
    /// Create this many demo products when the store is empty.
    #[arg(long, env = "PRODUCT_SEED", default_value_t = 0)]
    pub seed: usize,
    /// sled page cache, MiB (small default for edge machines).
    #[arg(long, env = "PRODUCT_CACHE_MB", default_value_t = 32)]
    pub cache_mb: u64,
    /// Publishes in flight per relay round.
    #[arg(long, env = "PRODUCT_RELAY_WINDOW", default_value_t = 1000)]
    pub relay_window: usize,
    /// How long shutdown waits for in-flight requests and the relay.
    #[arg(long, env = "PRODUCT_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    /// API key file (SHA-256 digests, scopes `catalog:read`, `catalog:write`); see `just key`.
    #[arg(long, env = "PRODUCT_API_KEYS")]
    pub api_keys: Option<PathBuf>,
    /// A file holding the token gRPC callers (order-svc) must send as `authorization: Bearer`.
    #[arg(long, env = "PRODUCT_GRPC_TOKEN_FILE")]
    pub grpc_token_file: Option<PathBuf>,
    /// PEM certificate (chain) for gRPC over TLS; with `--grpc-tls-key`. Plaintext without.
    #[arg(long, env = "PRODUCT_GRPC_TLS_CERT", requires = "grpc_tls_key")]
    pub grpc_tls_cert: Option<PathBuf>,
    /// PEM private key of `--grpc-tls-cert`.
    #[arg(long, env = "PRODUCT_GRPC_TLS_KEY", requires = "grpc_tls_cert")]
    pub grpc_tls_key: Option<PathBuf>,
    /// gRPC calls one connection may have in flight; beyond it calls are refused at once with
    /// RESOURCE_EXHAUSTED (order-svc retries those with backoff).
    #[arg(long, env = "PRODUCT_GRPC_CONCURRENCY", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_concurrency: u32,
    /// Serve gRPC reflection (for grpcurl); off by default.
    #[arg(long, env = "PRODUCT_GRPC_REFLECTION", value_parser = clap::builder::BoolishValueParser::new())]
    pub grpc_reflection: bool,
    /// Serve the HTTP API and gRPC without authentication (refused otherwise when no key or
    /// token file is given).
    #[arg(long, env = "ALLOW_ANONYMOUS", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_anonymous: bool,
    /// NATS credentials and TLS.
    #[command(flatten)]
    pub nats_auth: shared::nats::NatsAuth,
    /// Requests a second each API key (or, anonymous, each client IP) may make; 0 turns the
    /// limit off. Beyond it: 429 with Retry-After.
    #[arg(long, env = "PRODUCT_RATE_LIMIT", default_value_t = 1000)]
    pub rate_limit: u32,
    /// The order stream product-svc follows to keep its reservations in step (and audits).
    #[arg(long, env = "PRODUCT_ORDERS_STREAM", default_value = shared::streams::ORDERS)]
    pub orders_stream: String,
    /// Edge sites whose order streams the hub's order stream sources (comma-separated site
    /// names, each a JetStream domain): product-svc then creates or converges `ORDERS` (on
    /// `eshop.orders.*`) with a source per site, so the ledger follows every site's orders.
    #[arg(long, env = "PRODUCT_EDGE_SITES", value_delimiter = ',')]
    pub edge_sites: Vec<String>,
    /// How long after an order's last change its reservation may still disagree before the
    /// follower repairs it (order-svc's own release or commit normally comes first).
    #[arg(long, env = "PRODUCT_REPAIR_GRACE_SECS", default_value_t = 30)]
    pub repair_grace_secs: u64,
    /// How long a closed reservation (released, committed, failed, tombstone) is kept before it
    /// is compacted away; held ones are kept forever. 0 keeps everything.
    #[arg(long, env = "PRODUCT_RESERVATION_RETENTION_SECS", default_value_t = 7 * 24 * 3600)]
    pub reservation_retention_secs: u64,
    /// Burst above the rate a caller may use at once.
    #[arg(long, env = "PRODUCT_RATE_BURST", default_value_t = 2000)]
    pub rate_burst: u32,
}

/// The scopes product-svc's API keys may hold.
pub const SCOPES: &[&str] = &["catalog:read", "catalog:write"];

impl Config {
    /// Loopback on random ports, for tests.
    pub fn for_tests(data_dir: PathBuf, nats_url: &str) -> Self {
        Self {
            http_addr: "127.0.0.1:0".parse().expect("addr"),
            grpc_addr: "127.0.0.1:0".parse().expect("addr"),
            data_dir,
            nats_url: nats_url.into(),
            stream_replicas: 1,
            seed: 0,
            cache_mb: 16,
            relay_window: 1000,
            shutdown_grace_secs: 5,
            api_keys: None,
            grpc_token_file: None,
            grpc_tls_cert: None,
            grpc_tls_key: None,
            grpc_concurrency: 256,
            grpc_reflection: false,
            allow_anonymous: false,
            rate_limit: 0,
            rate_burst: 1,
            nats_auth: Default::default(),
            orders_stream: shared::streams::ORDERS.into(),
            repair_grace_secs: 30,
            edge_sites: Vec::new(),
            reservation_retention_secs: 7 * 24 * 3600,
        }
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    store: store::Store,
    nats: async_nats::Client,
    auth: shared::auth::Auth,
    limiter: std::sync::Arc<shared::ratelimit::Limiter>,
    metrics: Arc<Metrics>,
    follower: Arc<follower::FollowerCounters>,
    orders_stream: String,
    /// Closed reservations older than this may be gone (zero: kept forever).
    retention: Duration,
}

pub struct App {
    config: Config,
    auth: shared::auth::Auth,
    /// Digest of the gRPC token; `None` in anonymous mode.
    grpc_token: Option<[u8; 32]>,
    grpc_tls: Option<tonic::transport::ServerTlsConfig>,
    metrics: Arc<Metrics>,
    store: store::Store,
    nats: async_nats::Client,
    http: TcpListener,
    grpc: TcpListener,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let auth = shared::auth::Auth::from_config(
            config.api_keys.as_deref(),
            config.allow_anonymous,
            SCOPES,
            "product-svc",
        )
        .map_err(anyhow::Error::msg)?;
        let grpc_token = match (&config.grpc_token_file, config.allow_anonymous) {
            (Some(path), _) => Some(
                shared::auth::read_token(path)
                    .map_err(anyhow::Error::msg)?
                    .0,
            ),
            (None, true) => {
                tracing::warn!(
                    "gRPC runs without a token (--allow-anonymous): anyone who reaches the port may reserve stock."
                );
                None
            }
            (None, false) => anyhow::bail!(
                "product-svc needs --grpc-token-file FILE (the token order-svc sends), or --allow-anonymous"
            ),
        };
        let grpc_tls = match (&config.grpc_tls_cert, &config.grpc_tls_key) {
            (Some(cert), Some(key)) => Some(grpc_tls(cert, key)?),
            _ => None,
        };
        if let Some(bad) = config
            .edge_sites
            .iter()
            .find(|s| !shared::streams::is_site_name(s))
        {
            anyhow::bail!(
                "--edge-sites: {bad:?} is not a site name (1-32 characters of [A-Za-z0-9_-])"
            );
        }
        // NATS first: refused credentials must stop the start before anything is opened.
        let nats = shared::nats::connect(&config.nats_url, "product-svc", &config.nats_auth)
            .await
            .map_err(anyhow::Error::msg)?;
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("failed to create data dir {}", config.data_dir.display()))?;
        let store = store::Store::open(&config.data_dir, config.cache_mb << 20)
            .with_context(|| format!("failed to open sled at {}", config.data_dir.display()))?;
        if config.seed > 0 && store.is_empty() {
            seed::seed(&store, config.seed)
                .await
                .context("failed to seed the catalog")?;
        }
        let http = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("failed to bind HTTP on {}", config.http_addr))?;
        let grpc = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("failed to bind gRPC on {}", config.grpc_addr))?;
        Ok(Self {
            config,
            auth,
            grpc_token,
            grpc_tls,
            metrics: Metrics::new("product-svc", env!("CARGO_PKG_VERSION")),
            store,
            nats,
            http,
            grpc,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound")
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().expect("bound")
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let http_addr = self.http_addr();
        let grpc_addr = self.grpc_addr();
        let grace = Duration::from_secs(self.config.shutdown_grace_secs);
        let servers_stop = CancellationToken::new();
        let relay_stop = CancellationToken::new();

        let relay = Relay {
            tree: self.store.outbox_tree(),
            js: shared::nats::jetstream(self.nats.clone()),
            wake: self.store.relay_wake(),
            config: RelayConfig {
                window: self.config.relay_window.max(1),
                streams: vec![
                    shared::streams::products(self.config.stream_replicas),
                    shared::streams::stock(self.config.stream_replicas),
                ],
                max_backoff: Duration::from_secs(5),
                drain_timeout: grace,
            },
            publish_latency: self.metrics.outbox_publish.clone(),
        };
        let relay_task = tokio::spawn(relay.run(relay_stop.clone()));
        let follower_counters = Arc::new(follower::FollowerCounters::default());
        let follower = follower::Follower {
            js: shared::nats::jetstream(self.nats.clone()),
            store: self.store.clone(),
            stream: self.config.orders_stream.clone(),
            // With edge sites, product-svc owns the sourcing: it converges the stream's config.
            converge: (!self.config.edge_sites.is_empty()).then(|| {
                shared::streams::orders_with_sites(
                    &self.config.orders_stream,
                    shared::events::ORDER_SUBJECT_PREFIX,
                    self.config.stream_replicas,
                    &self.config.edge_sites,
                )
            }),
            durable: "product-svc-orders".into(),
            grace: Duration::from_secs(self.config.repair_grace_secs),
            counters: follower_counters.clone(),
        };
        let follower_task = tokio::spawn(follower.run(relay_stop.clone()));
        let retention = Duration::from_secs(self.config.reservation_retention_secs);
        let retention_task = (!retention.is_zero()).then(|| {
            tokio::spawn(retention::run(
                self.store.clone(),
                retention,
                relay_stop.clone(),
            ))
        });

        let limiter =
            shared::ratelimit::Limiter::new(self.config.rate_limit, self.config.rate_burst);
        metrics::sample_state(&self.metrics, &self.store, &limiter, &follower_counters);
        let state = AppState {
            store: self.store.clone(),
            nats: self.nats.clone(),
            auth: self.auth.clone(),
            limiter,
            metrics: self.metrics.clone(),
            follower: follower_counters,
            orders_stream: self.config.orders_stream.clone(),
            retention,
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

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<proto::product_service_server::ProductServiceServer<grpc::StockService>>(
            )
            .await;
        let reflection = if self.config.grpc_reflection {
            Some(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                    .build_v1()
                    .context("failed to build gRPC reflection")?,
            )
        } else {
            None
        };
        let service = proto::product_service_server::ProductServiceServer::with_interceptor(
            grpc::StockService {
                store: self.store.clone(),
            },
            grpc::RequireToken(self.grpc_token),
        );
        let stop = servers_stop.clone();
        let tls = self.grpc_tls.is_some();
        let incoming =
            tonic::transport::server::TcpIncoming::from(self.grpc).with_nodelay(Some(true));
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = self.grpc_tls {
            builder = builder
                .tls_config(tls)
                .context("invalid gRPC TLS certificate or key")?;
        }
        let mut grpc_task = tokio::spawn(async move {
            builder
                .timeout(Duration::from_secs(30))
                .concurrency_limit_per_connection(self.config.grpc_concurrency as usize)
                .load_shed(true)
                .layer(grpc::ObserveLayer(self.metrics.grpc_server.clone()))
                .add_service(health_service)
                .add_optional_service(reflection)
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await
        });
        tracing::info!(http.addr = %http_addr, grpc.addr = %grpc_addr, grpc.tls = tls, data_dir = %self.config.data_dir.display(), "product-svc started.");

        let mut failure = None;
        tokio::select! {
            _ = shutdown => {}
            r = &mut http_task => failure = Some(format!("HTTP server stopped: {r:?}")),
            r = &mut grpc_task => failure = Some(format!("gRPC server stopped: {r:?}")),
        }
        servers_stop.cancel();
        let drained = tokio::time::timeout(grace, async {
            let _ = (&mut http_task).await;
            let _ = (&mut grpc_task).await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("In-flight requests did not finish within the grace period.");
            http_task.abort();
            grpc_task.abort();
        }
        relay_stop.cancel();
        let _ = tokio::join!(relay_task, follower_task);
        if let Some(task) = retention_task {
            let _ = task.await;
        }
        self.store.close().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.nats.flush()).await;
        tracing::info!("product-svc stopped.");
        match failure {
            Some(f) => Err(anyhow::anyhow!(f)),
            None => Ok(()),
        }
    }
}

/// The gRPC server's TLS identity from PEM files, checked at start (not at the first call).
fn grpc_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    anyhow::ensure!(
        String::from_utf8_lossy(&cert_pem).contains("-----BEGIN CERTIFICATE-----"),
        "{} holds no PEM certificate",
        cert.display()
    );
    anyhow::ensure!(
        String::from_utf8_lossy(&key_pem).contains("PRIVATE KEY-----"),
        "{} holds no PEM private key",
        key.display()
    );
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(cert_pem, key_pem));
    // Building a server parses both: a bad pair stops the start here.
    tonic::transport::Server::builder()
        .tls_config(tls.clone())
        .with_context(|| {
            format!(
                "the gRPC TLS certificate {} and key {} do not form a usable pair",
                cert.display(),
                key.display()
            )
        })?;
    Ok(tls)
}
