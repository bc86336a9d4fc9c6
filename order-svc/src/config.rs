//! order-svc's configuration: every flag with its environment variable and default (clap), and
//! the loopback configuration the tests start from, and the checks across flags (names, the
//! gRPC credentials) that `App::build` runs before anything is opened.
use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;

use crate::is_token;

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
    /// product-svc's gRPC endpoint(s), comma-separated: calls stick to the instance that last
    /// answered and fail over to the next on a transient failure; each has its own breaker.
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
    /// The hub's order-svc: its order stream also sources each of these sites' streams
    /// (`ORDERS_<SITE>` in JetStream domain SITE), so the hub lists and audits every site's
    /// orders. order-svc owns the order stream, so it alone changes its config (product-svc's
    /// NATS user may not). Comma-separated; conflicts with --site.
    #[arg(long, env = "ORDER_EDGE_SITES", value_delimiter = ',')]
    pub edge_sites: Vec<String>,
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
    /// How long one watch (`GET /api/orders/{id}/watch`) stays open; the client then resumes
    /// with `Last-Event-ID`, as SSE clients do.
    #[arg(long, env = "ORDER_WATCH_MAX_SECS", default_value_t = 300)]
    pub watch_max_secs: u64,
    /// Attempts of one webhook delivery before the event is parked (shown in the hook's
    /// deliveries; the order's later events go on).
    #[arg(long, env = "ORDER_WEBHOOK_MAX_ATTEMPTS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub webhook_max_attempts: u32,
    /// Wait after a webhook's first failed attempt, doubling per attempt up to 60 s.
    #[arg(long, env = "ORDER_WEBHOOK_BACKOFF_MS", default_value_t = 1000)]
    pub webhook_backoff_ms: u64,
    /// Let webhooks reach loopback, private and link-local addresses (refused by default: a hook
    /// must not reach into the network order-svc runs in). For development and tests.
    #[arg(long, env = "ORDER_WEBHOOK_ALLOW_PRIVATE", value_parser = clap::builder::BoolishValueParser::new())]
    pub webhook_allow_private: bool,
    /// How often the reconciler and the releaser look for work (jittered by ±50 %).
    #[arg(long, env = "ORDER_WORKER_INTERVAL_MS", default_value_t = 1000)]
    pub worker_interval_ms: u64,
    /// Replicas of the streams this service creates if missing (3 on a cluster).
    #[arg(long, env = "ORDER_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
    /// sled page cache, MiB.
    #[arg(long, env = "ORDER_CACHE_MB", default_value_t = 32)]
    pub cache_mb: u64,
    /// Async worker threads. Default: half the machine's cores, at least one
    /// (`shared::lifecycle::runtime` says why).
    #[arg(long, env = "ORDER_WORKER_THREADS")]
    pub worker_threads: Option<std::num::NonZeroUsize>,
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
            edge_sites: Vec::new(),
            catalog_domain: None,
            catalog: CatalogMode::Snapshot,
            request_budget_ms: 2000,
            stock_attempt_timeout_ms: 1000,
            stock_retries: 3,
            breaker_threshold: 5,
            breaker_cooldown_ms: 500,
            worker_interval_ms: 200,
            watch_max_secs: 300,
            webhook_max_attempts: 8,
            webhook_backoff_ms: 1000,
            webhook_allow_private: true,
            stream_replicas: 1,
            cache_mb: 16,
            worker_threads: None,
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

impl Config {
    /// Checks the stream, subject and site names, and derives a site's own order stream and
    /// subjects from `--site`.
    pub(crate) fn settle_names(&mut self) -> anyhow::Result<()> {
        if let Some(site) = self.site.clone() {
            anyhow::ensure!(
                shared::streams::is_site_name(&site),
                "--site must be 1-32 characters of [A-Za-z0-9_-]"
            );
            anyhow::ensure!(
                self.orders_stream == shared::streams::ORDERS
                    && self.orders_subject_prefix == shared::events::ORDER_SUBJECT_PREFIX,
                "--site names the order stream and subjects itself; drop --orders-stream/--orders-subject-prefix"
            );
            self.orders_stream = shared::streams::site_orders_stream(&site);
            self.orders_subject_prefix = shared::streams::site_orders_prefix(&site);
        }
        if let Some(bad) = self
            .edge_sites
            .iter()
            .find(|s| !shared::streams::is_site_name(s))
        {
            anyhow::bail!(
                "--edge-sites: {bad:?} is not a site name (1-32 characters of [A-Za-z0-9_-])"
            );
        }
        anyhow::ensure!(
            self.site.is_none() || self.edge_sites.is_empty(),
            "--edge-sites is for the hub's order-svc; a site (--site) does not source others"
        );
        if let Some(domain) = &self.catalog_domain {
            anyhow::ensure!(
                shared::streams::is_site_name(domain),
                "--catalog-domain must be 1-32 characters of [A-Za-z0-9_-]"
            );
        }
        anyhow::ensure!(
            is_token(&self.orders_stream),
            "--orders-stream must be 1-64 characters of [A-Za-z0-9_-]"
        );
        anyhow::ensure!(
            self.orders_subject_prefix.len() <= 128
                && self.orders_subject_prefix.split('.').all(|t| !t.is_empty()
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')),
            "--orders-subject-prefix must be dot-separated tokens of [A-Za-z0-9_-]"
        );
        Ok(())
    }

    /// product-svc's gRPC URLs (`--product-grpc-url`, comma-separated).
    pub fn product_grpc_urls(&self) -> Vec<String> {
        shared::nats::split_urls(&self.product_grpc_url)
    }

    /// The gRPC token order-svc sends (`None` when anonymous) and the CA to trust for an https:// URL.
    pub(crate) fn grpc_credentials(&self) -> anyhow::Result<(Option<String>, Option<Vec<u8>>)> {
        let token = match (&self.grpc_token_file, self.allow_anonymous) {
            (Some(path), _) => Some(shared::auth::read_token(path)?.1),
            (None, true) => None,
            (None, false) => anyhow::bail!(
                "order-svc needs --grpc-token-file FILE (the token product-svc expects), or --allow-anonymous"
            ),
        };
        let urls = self.product_grpc_urls();
        anyhow::ensure!(!urls.is_empty(), "--product-grpc-url names no URL");
        let https = urls.iter().filter(|u| u.starts_with("https://")).count();
        anyhow::ensure!(
            https == 0 || https == urls.len(),
            "--product-grpc-url mixes https:// and plain URLs; use one scheme for every instance"
        );
        let tls_ca = match (&self.grpc_tls_ca, https > 0) {
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
        Ok((token, tls_ca))
    }
}
