//! The services in-process (`App::build` + `run_until_stopped` on this runtime): fast, and the
//! way most system tests start them.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use crate::*;

/// product-svc running inside the test process.
pub struct ProductService {
    pub http: String,
    pub grpc: String,
    pub data_dir: PathBuf,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl ProductService {
    pub async fn start(nats_url: &str, data_dir: &Path) -> Self {
        Self::start_with(product_svc::Config::for_tests(
            data_dir.to_path_buf(),
            nats_url,
        ))
        .await
    }

    pub async fn start_with(mut config: product_svc::Config) -> Self {
        init_logs();
        if !config.allow_anonymous {
            let keys = write_test_keys(&key_dir(&config.data_dir));
            config.api_keys.get_or_insert(keys.product);
            config.grpc_token_file.get_or_insert(keys.grpc_token);
        }
        let data_dir = config.data_dir.clone();
        let tls = config.grpc_tls_cert.is_some();
        let app = product_svc::App::build(config)
            .await
            .expect("product-svc builds");
        let http = format!("http://{}", app.http_addr());
        let scheme = if tls { "https" } else { "http" };
        let grpc = format!("{scheme}://{}", app.grpc_addr());
        let stop = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(stop.clone().cancelled_owned()));
        Self {
            http,
            grpc,
            data_dir,
            stop,
            task,
        }
    }

    /// Graceful stop (as on SIGTERM); returns once sled is closed.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task
            .await
            .expect("task joins")
            .expect("product-svc stops cleanly");
    }

    /// A stock API client that sends the test token.
    pub async fn grpc_client(&self) -> GrpcClient {
        grpc_client(&self.grpc).await
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
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl OrderService {
    pub async fn start(nats_url: &str, product_grpc: &str, data_dir: &Path) -> Self {
        Self::start_with(order_svc::Config::for_tests(
            data_dir.to_path_buf(),
            nats_url,
            product_grpc,
        ))
        .await
    }

    pub async fn start_with(mut config: order_svc::Config) -> Self {
        init_logs();
        if !config.allow_anonymous {
            let keys = write_test_keys(&key_dir(&config.data_dir));
            config.api_keys.get_or_insert(keys.order);
            config.grpc_token_file.get_or_insert(keys.grpc_token);
        }
        let data_dir = config.data_dir.clone();
        let app = order_svc::App::build(config)
            .await
            .expect("order-svc builds");
        let http = format!("http://{}", app.http_addr());
        let projection = app.projection();
        let orders_projection = app.orders_projection();
        let instance_id = app.instance_id().to_owned();
        let stop = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(stop.clone().cancelled_owned()));
        Self {
            http,
            data_dir,
            instance_id,
            projection,
            orders_projection,
            stop,
            task,
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.task
            .await
            .expect("task joins")
            .expect("order-svc stops cleanly");
    }

    /// Waits until `/health/ready` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) {
        wait_until_ready(&self.http, timeout).await
    }
}

pub async fn wait_until_ready(base: &str, timeout: Duration) {
    let client = http_client();
    let url = format!("{base}/health/ready");
    wait_for("/health/ready = 200", timeout, || {
        let client = client.clone();
        let url = url.clone();
        async move {
            match client.get(&url).send().await {
                Ok(r) if r.status() == 200 => Some(()),
                _ => None,
            }
        }
    })
    .await
}

fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        shared::telemetry::init("info");
    }
}
