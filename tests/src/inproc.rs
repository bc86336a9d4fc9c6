//! The services in-process (`App::build` + `run_until_stopped` on this runtime): fast, and the
//! way most system tests start them; and [`System`], the usual fixture of nats-server,
//! product-svc and order-svc.
use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tempfile::TempDir;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::*;

/// A service's `run_until_stopped` on this runtime, and the token that stops it.
struct Running {
    name: &'static str,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn spawn<F>(name: &'static str, run: impl FnOnce(WaitForCancellationFutureOwned) -> F) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(stop.clone().cancelled_owned()));
        Self { name, stop, task }
    }

    /// Graceful stop (as on SIGTERM); returns once the service has closed its store.
    async fn stop(self) {
        self.stop.cancel();
        let outcome = self.task.await.expect("task joins");
        if let Err(e) = outcome {
            panic!("{} did not stop cleanly: {e:#}", self.name);
        }
    }
}

/// Test keys next to the data dir, unless the config runs anonymous or names its own.
fn test_keys(allow_anonymous: bool, data_dir: &Path) -> Option<TestKeys> {
    init_logs();
    (!allow_anonymous).then(|| write_test_keys(&key_dir(data_dir)))
}

/// product-svc running inside the test process.
pub struct ProductService {
    pub http: String,
    pub grpc: String,
    pub data_dir: PathBuf,
    running: Running,
}

impl ProductService {
    pub async fn start(nats_url: &str, data_dir: &Path) -> Self {
        let config = product_svc::Config::for_tests(data_dir.to_path_buf(), nats_url);
        Self::start_with(config).await
    }

    pub async fn start_with(mut config: product_svc::Config) -> Self {
        if let Some(keys) = test_keys(config.allow_anonymous, &config.data_dir) {
            config.api_keys.get_or_insert(keys.product);
            config.grpc_token_file.get_or_insert(keys.grpc_token);
        }
        let data_dir = config.data_dir.clone();
        let scheme = if config.grpc_tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let app = product_svc::App::build(config)
            .await
            .expect("product-svc builds");
        let service = Self {
            http: format!("http://{}", app.http_addr()),
            grpc: format!("{scheme}://{}", app.grpc_addr()),
            data_dir,
            running: Running::spawn("product-svc", |stop| app.run_until_stopped(stop)),
        };
        wait_until_stock_ready(&service.http, Duration::from_secs(30)).await;
        service
    }

    /// Graceful stop (as on SIGTERM); returns once sled is closed.
    pub async fn stop(self) {
        self.running.stop().await
    }

    /// The catalog API with the test key.
    pub fn api(&self) -> ProductApi {
        ProductApi::new(&self.http)
    }

    /// The stock API (gRPC), with the test token.
    pub async fn stock(&self) -> crate::StockApi {
        crate::StockApi::connect(&self.grpc).await
    }
}

/// order-svc running inside the test process.
pub struct OrderService {
    pub http: String,
    pub data_dir: PathBuf,
    /// The instance id (names its durables `order-svc-<id>-products` and `-orders`).
    pub instance_id: String,
    pub projection: Arc<order_svc::ProjectionStatus>,
    pub orders_projection: Arc<order_svc::ProjectionStatus>,
    running: Running,
}

impl OrderService {
    pub async fn start(nats_url: &str, product_grpc: &str, data_dir: &Path) -> Self {
        let config = order_svc::Config::for_tests(data_dir.to_path_buf(), nats_url, product_grpc);
        Self::start_with(config).await
    }

    pub async fn start_with(mut config: order_svc::Config) -> Self {
        if let Some(keys) = test_keys(config.allow_anonymous, &config.data_dir) {
            config.api_keys.get_or_insert(keys.order);
            config.grpc_token_file.get_or_insert(keys.grpc_token);
        }
        let data_dir = config.data_dir.clone();
        let app = order_svc::App::build(config)
            .await
            .expect("order-svc builds");
        Self {
            http: format!("http://{}", app.http_addr()),
            data_dir,
            instance_id: app.instance_id().to_owned(),
            projection: app.projection(),
            orders_projection: app.orders_projection(),
            running: Running::spawn("order-svc", |stop| app.run_until_stopped(stop)),
        }
    }

    pub async fn stop(self) {
        self.running.stop().await
    }

    /// The order API with the test key.
    pub fn api(&self) -> OrderApi {
        OrderApi::new(&self.http)
    }

    /// Waits until `/health/ready` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) {
        wait_until_ready(&self.http, timeout).await
    }
}

/// The usual system: a nats-server, product-svc and order-svc in-process on it, in a scratch dir.
pub struct System {
    pub nats: NatsServer,
    pub product: ProductService,
    pub order: OrderService,
    /// Typed clients of both APIs, with the test key.
    pub products: ProductApi,
    pub orders: OrderApi,
    pub dir: TempDir,
}

impl System {
    pub async fn start() -> Self {
        let nats = NatsServer::start();
        let dir = scratch();
        let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
        let order =
            OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order")).await;
        Self {
            products: product.api(),
            orders: order.api(),
            nats,
            product,
            order,
            dir,
        }
    }

    /// Creates a product and waits until order-svc's snapshot has it; returns its id.
    pub async fn product_in_snapshot(&self, name: &str, price: &str, stock: i64) -> String {
        let id = self.products.create_product(name, price, stock).await;
        self.orders.wait_snapshot_version(&id, 1).await;
        id
    }

    /// Stops both services gracefully (order-svc first).
    pub async fn stop(self) {
        self.order.stop().await;
        self.product.stop().await;
    }
}

pub async fn wait_until_ready(base: &str, timeout: Duration) {
    wait_on_readiness(base, timeout, "/health/ready = 200", |status, _| {
        status == 200
    })
    .await
}

/// Waits until a product-svc instance is ready and some instance (it or another) is the stock
/// writer, so a test's first stock call is not refused for want of one.
pub async fn wait_until_stock_ready(base: &str, timeout: Duration) {
    wait_on_readiness(
        base,
        timeout,
        "product-svc ready with a stock writer",
        |status, body| {
            let stock = &body["figures"]["stock"];
            // This instance writes, or the lease names another one (not this one's past life).
            let other =
                stock["writerInstance"].is_string() && stock["writerInstance"] != stock["instance"];
            status == 200 && (stock["writer"] == true || other)
        },
    )
    .await
}

/// Waits until product-svc at `base` is the stock writer (after the ttl of a dead writer's lease,
/// for a new instance).
pub async fn wait_until_writer(base: &str, timeout: Duration) {
    wait_on_readiness(
        base,
        timeout,
        "product-svc to be the stock writer",
        |_, body| body["figures"]["stock"]["writer"] == true,
    )
    .await
}

/// Whether product-svc at `base` is the stock writer now (its readiness figures say so).
pub async fn is_stock_writer(base: &str) -> bool {
    let Ok(r) = http_client()
        .get(format!("{base}/health/ready"))
        .send()
        .await
    else {
        return false;
    };
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    body["figures"]["stock"]["writer"] == true
}

/// Polls `/health/ready` until `done(status, body)` holds (the body is `Null` if not JSON).
async fn wait_on_readiness(
    base: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(u16, &serde_json::Value) -> bool,
) {
    let client = http_client();
    let url = format!("{base}/health/ready");
    let done = &done;
    wait_for(what, timeout, || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let r = client.get(&url).send().await.ok()?;
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            done(status, &body).then_some(())
        }
    })
    .await
}

fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        shared::telemetry::init("info");
    }
}
