//! product-svc owns the catalog and the stock. It serves catalog admins over HTTP JSON and
//! order-svc over gRPC (reserve/release stock), and publishes every catalog change to JetStream
//! through a transactional outbox.
//!
//! `App::build(Config)` does every fallible start-up step (open sled, bind both listeners,
//! start connecting to NATS); `App::run_until_stopped(shutdown)` serves until the future
//! resolves, then drains in the order `shared::lifecycle` keeps: stop accepting and finish
//! in-flight requests, stop the follower and drain the relay, flush.
mod audit;
mod config;
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

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use shared::{
    metrics::Metrics,
    outbox::{Relay, RelayConfig},
};
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
        let mut tasks = shared::lifecycle::Tasks::new();

        let follower_counters = Arc::new(follower::FollowerCounters::default());
        let retention = Duration::from_secs(self.config.reservation_retention_secs);
        self.spawn_workers(&mut tasks, grace, retention, &follower_counters);

        let limiter =
            shared::ratelimit::Limiter::new(self.config.rate_limit, self.config.rate_burst);
        metrics::sample_state(&self.metrics, &self.store, &limiter, &follower_counters);
        let state = http::AppState::new(http::Shared {
            store: self.store.clone(),
            nats: self.nats.clone(),
            auth: self.auth.clone(),
            limiter,
            metrics: self.metrics.clone(),
            follower: follower_counters,
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
        tracing::info!(http.addr = %http_addr, grpc.addr = %grpc_addr, grpc.tls = tls, data_dir = %self.config.data_dir.display(), "product-svc started.");

        let outcome = tasks.run_until(shutdown, grace).await;
        self.store.close().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.nats.flush()).await;
        tracing::info!("product-svc stopped.");
        outcome.map_err(anyhow::Error::from)
    }

    /// The workers: the outbox relay, the follower of the order stream, and retention.
    fn spawn_workers(
        &self,
        tasks: &mut shared::lifecycle::Tasks,
        grace: Duration,
        retention: Duration,
        follower_counters: &Arc<follower::FollowerCounters>,
    ) {
        let relay = Relay {
            tree: self.store.outbox_tree(),
            flushed: self.store.outbox_flushed(),
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
        tasks.worker(relay.run(tasks.workers_stop.clone()));
        let follower = follower::Follower {
            js: shared::nats::jetstream(self.nats.clone()),
            store: self.store.clone(),
            stream: self.config.orders_stream.clone(),
            durable: "product-svc-orders".into(),
            grace: Duration::from_secs(self.config.repair_grace_secs),
            counters: follower_counters.clone(),
        };
        tasks.worker(follower.run(tasks.workers_stop.clone()));
        if !retention.is_zero() {
            let stop = tasks.workers_stop.clone();
            tasks.worker(retention::run(self.store.clone(), retention, stop));
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
