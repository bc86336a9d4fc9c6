//! product-svc serves the catalog and the stock: catalog admins over HTTP JSON, order-svc over
//! gRPC (reserve, release, commit stock). It owns no data: `PRODUCTS` is the catalog's record,
//! `LEDGER` the stock's; its sled is a cache rebuilt from them at every start, and any number of
//! instances run side by side, one of them the stock writer (`lease.rs`).
//!
//! `App::build(Config)` does every fallible start-up step (open the cache, bind both listeners,
//! start connecting to NATS); `App::run_until_stopped(shutdown)` serves until the future
//! resolves, then drains in the order `shared::lifecycle` keeps: stop accepting and finish
//! in-flight requests, stop the workers (a writer releases its lease), close the cache.
mod audit;
mod cache;
mod config;
mod domain;
mod error;
mod follower;
mod grpc;
mod http;
mod lease;
mod ledger;
mod metrics;
mod retention;
mod seed;
mod store;
mod unrecorded;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use shared::metrics::Metrics;
use tokio::net::TcpListener;

pub use config::{Config, SCOPES};
pub use error::Error;

pub struct App {
    config: Config,
    auth: shared::auth::Auth,
    /// Digest of the gRPC token; `None` in anonymous mode.
    grpc_token: Option<[u8; 32]>,
    grpc_tls: Option<tonic::transport::ServerTlsConfig>,
    metrics: Arc<Metrics>,
    store: store::Store,
    lease: lease::Lease,
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
        )?;
        let grpc_token = match (&config.grpc_token_file, config.allow_anonymous) {
            (Some(path), _) => Some(shared::auth::read_token(path)?.0),
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
        // NATS first: refused credentials must stop the start before anything is opened.
        let nats =
            shared::nats::connect(&config.nats_url, "product-svc", &config.nats_auth).await?;
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("failed to create data dir {}", config.data_dir.display()))?;
        let instance = shared::instance::instance_id(
            &config.data_dir,
            config.instance_id.as_deref(),
            "product",
        )
        .with_context(|| {
            format!(
                "failed to read or keep the instance id in {}",
                config.data_dir.display()
            )
        })?;
        let js = shared::nats::jetstream(nats.clone());
        let lease = lease::Lease::new(
            js.clone(),
            instance,
            config.stream_replicas,
            Duration::from_millis(config.lease_ttl_ms),
        );
        let cache_dir = config.data_dir.join("cache");
        let store = store::Store::open(
            &cache_dir,
            config.cache_mb << 20,
            nats.clone(),
            lease.clone(),
            NATS_TIMEOUT,
            config.stream_replicas,
            (config.reservation_retention_secs > 0).then(|| store::Orders {
                stream: config.orders_stream.clone(),
                retention: Duration::from_secs(config.reservation_retention_secs),
            }),
        )
        .with_context(|| format!("failed to open the cache at {}", cache_dir.display()))?;
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
            lease,
            nats,
            http,
            grpc,
        })
    }

    /// This instance's id (generated once, kept in the data dir).
    pub fn instance_id(&self) -> &str {
        self.lease.instance()
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
        let mut tasks = shared::lifecycle::Tasks::new();

        let follower_counters = Arc::new(follower::FollowerCounters::default());
        let cache_state = Arc::new(cache::CacheState::default());
        let retention = Duration::from_secs(self.config.reservation_retention_secs);
        self.spawn_workers(&mut tasks, retention, &follower_counters, &cache_state);

        let limiter =
            shared::ratelimit::Limiter::new(self.config.rate_limit, self.config.rate_burst);
        metrics::sample_state(
            &self.metrics,
            &self.store,
            &limiter,
            &follower_counters,
            &cache_state,
        );
        let state = http::AppState::new(http::Shared {
            store: self.store.clone(),
            nats: self.nats.clone(),
            auth: self.auth.clone(),
            limiter,
            metrics: self.metrics.clone(),
            follower: follower_counters,
            cache: cache_state,
            orders_stream: self.config.orders_stream.clone(),
            retention,
        });
        tasks.http(self.http, http::router(state));

        let tls = self.grpc_tls.is_some();
        let grpc = grpc::Server {
            store: self.store.clone(),
            token: self.grpc_token,
            tls: self.grpc_tls,
            reflection: self.config.grpc_reflection,
            concurrency: self.config.grpc_concurrency,
            metrics: self.metrics.grpc_server.clone(),
        };
        let stop = tasks.servers_stop.clone();
        tasks.server("gRPC", grpc.serve(self.grpc, stop).await?);
        tracing::info!(http.addr = %http_addr, grpc.addr = %grpc_addr, grpc.tls = tls, data_dir = %self.config.data_dir.display(), instance = %self.lease.instance(), "product-svc started.");

        let outcome = tasks.run_until(shutdown, grace).await;
        self.store.close().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.nats.flush()).await;
        tracing::info!("product-svc stopped.");
        outcome.map_err(anyhow::Error::from)
    }

    /// The workers: the cache's two followers, the lease, the order follower and retention
    /// (the last two act only on the stock writer), and the seed.
    fn spawn_workers(
        &self,
        tasks: &mut shared::lifecycle::Tasks,
        retention: Duration,
        follower_counters: &Arc<follower::FollowerCounters>,
        cache_state: &Arc<cache::CacheState>,
    ) {
        let js = shared::nats::jetstream(self.nats.clone());
        let cache = cache::Cache {
            store: self.store.clone(),
            js: js.clone(),
            lease: self.lease.clone(),
            replicas: self.config.stream_replicas,
            state: cache_state.clone(),
        };
        tasks.worker(cache.clone().run_catalog(tasks.workers_stop.clone()));
        tasks.worker(cache.run_books(tasks.workers_stop.clone()));
        tasks.worker(self.lease.clone().run(tasks.workers_stop.clone()));
        let follower = follower::Follower {
            js,
            store: self.store.clone(),
            stream: self.config.orders_stream.clone(),
            durable: "product-svc-orders".into(),
            grace: Duration::from_secs(self.config.repair_grace_secs),
            counters: follower_counters.clone(),
            lease: self.lease.clone(),
        };
        tasks.worker(follower.run(tasks.workers_stop.clone()));
        if !retention.is_zero() {
            let stop = tasks.workers_stop.clone();
            tasks.worker(retention::run(self.store.clone(), retention, stop));
        }
        if self.config.seed > 0 {
            cache_state
                .seeding
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let (store, count, state) = (self.store.clone(), self.config.seed, cache_state.clone());
            let stop = tasks.workers_stop.clone();
            tasks.worker(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    () = seed::run(store, count, state) => {}
                }
            });
        }
    }
}

/// How long a write or a read waits on NATS before it answers 503 / UNAVAILABLE.
const NATS_TIMEOUT: Duration = Duration::from_secs(2);

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
