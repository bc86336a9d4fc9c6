//! product-svc's configuration: every flag with its environment variable and default (clap), and
//! the loopback configuration the tests start from.
use std::{net::SocketAddr, path::PathBuf};

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
    /// Directory of this instance's id and its cache (rebuilt from the streams at every start).
    #[arg(long, env = "PRODUCT_DATA_DIR", default_value = "./data/product")]
    pub data_dir: PathBuf,
    /// This instance's id (default: generated once, kept in the data dir).
    #[arg(long, env = "PRODUCT_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// How long the stock writer may go without a heartbeat before another instance takes over
    /// (milliseconds).
    #[arg(long, env = "PRODUCT_LEASE_TTL_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(200..))]
    pub lease_ttl_ms: u64,
    /// NATS server URL(s), comma-separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Replicas of the PRODUCTS, STOCK and LEDGER streams (3 on a cluster).
    #[arg(long, env = "PRODUCT_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
    /// Create this many demo products (deterministic ids: those that exist are left alone).
    #[arg(long, env = "PRODUCT_SEED", default_value_t = 0)]
    pub seed: usize,
    /// sled page cache for the stock books, MiB (small default for edge machines; the catalog
    /// is kept in memory).
    #[arg(long, env = "PRODUCT_CACHE_MB", default_value_t = 32)]
    pub cache_mb: u64,
    /// Async worker threads. Default: half the machine's cores, at least one
    /// (`shared::lifecycle::runtime` says why).
    #[arg(long, env = "PRODUCT_WORKER_THREADS")]
    pub worker_threads: Option<std::num::NonZeroUsize>,
    /// How long shutdown waits for in-flight requests.
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
    /// How long after an order's last change its reservation may still disagree before the
    /// follower repairs it (order-svc's own release or commit normally comes first); also how
    /// long an order that held stock before its first publish may take to reach the order
    /// stream before it is recorded as rejected (keep it well above order-svc's request budget
    /// and NATS timeout).
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
            instance_id: None,
            lease_ttl_ms: 2000,
            nats_url: nats_url.into(),
            stream_replicas: 1,
            seed: 0,
            cache_mb: 16,
            worker_threads: None,
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
            reservation_retention_secs: 7 * 24 * 3600,
        }
    }
}
