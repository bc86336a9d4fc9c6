//! The system-test harness: real `nats-server` processes, real services (in-process or as child
//! processes, so kill -9 is real), real sled in temp dirs, everything on 127.0.0.1.
//!
//! Nothing here sleeps to synchronise: every wait polls a condition against a deadline.
use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

pub mod edge;
pub mod nats;
pub mod proxy;
pub use nats::{NatsCluster, NatsServer};
pub use proxy::FaultyProxy;

/// The workspace root (for `nats/test.conf` and the service binaries).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Blocking variant for sync code (process management).
pub fn wait_for_blocking<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A loopback port that was free a moment ago (for child processes that must be restarted on
/// the same address).
/// A stream's current info; `None` while it does not exist or the server does not answer.
pub async fn stream_info(
    js: &async_nats::jetstream::Context,
    name: &str,
) -> Option<async_nats::jetstream::stream::Info> {
    js.get_stream(name).await.ok()?.get_info().await.ok()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub fn accepts_connections(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// The API key every harness-started service accepts, with every scope of its service.
pub const TEST_KEY: &str = "eshop-test-admin-key";

/// The gRPC token harness-started product-svc and order-svc share.
pub const TEST_GRPC_TOKEN: &str = "eshop-test-grpc-token";

/// Key and token files of harness-started services.
pub struct TestKeys {
    pub product: PathBuf,
    pub order: PathBuf,
    pub grpc_token: PathBuf,
}

/// Writes the key files of [`TEST_KEY`] and the [`TEST_GRPC_TOKEN`] file into `dir`.
pub fn write_test_keys(dir: &Path) -> TestKeys {
    std::fs::create_dir_all(dir).expect("key dir");
    let digest = shared::auth::hash_key(TEST_KEY);
    let file = |scopes: &[&str]| {
        serde_json::json!({"keys": [{"name": "tests", "sha256": digest, "scopes": scopes}]})
            .to_string()
    };
    let product = dir.join("product-keys.json");
    let order = dir.join("order-keys.json");
    std::fs::write(&product, file(product_svc::SCOPES)).expect("product keys");
    std::fs::write(&order, file(order_svc::SCOPES)).expect("order keys");
    let grpc_token = dir.join("grpc-token");
    std::fs::write(&grpc_token, TEST_GRPC_TOKEN).expect("grpc token");
    TestKeys {
        product,
        order,
        grpc_token,
    }
}

/// Sends [`TEST_GRPC_TOKEN`] on every gRPC call.
#[derive(Clone)]
pub struct TokenInterceptor;

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let value = format!("Bearer {TEST_GRPC_TOKEN}")
            .parse()
            .expect("metadata");
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

/// A stock API client that sends the test token.
pub type GrpcClient = proto::product_service_client::ProductServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, TokenInterceptor>,
>;

pub async fn grpc_client(url: &str) -> GrpcClient {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("gRPC connects");
    proto::product_service_client::ProductServiceClient::with_interceptor(channel, TokenInterceptor)
}

/// `Authorization: Bearer TEST_KEY`, for clients of harness-started services.
pub fn auth_headers() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {TEST_KEY}").parse().expect("header"),
    );
    headers
}

/// An HTTP client that sends [`TEST_KEY`].
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .default_headers(auth_headers())
        .build()
        .expect("client")
}

/// A file of the test PKI in `tests/fixtures/tls` (`ca.pem`, `server.pem`, `client-key.pem`...).
pub fn tls_fixture(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures/tls").join(name)
}

/// Key files next to a service's data dir, unless the config names its own or runs anonymous.
fn key_dir(data_dir: &Path) -> PathBuf {
    data_dir
        .parent()
        .map_or_else(|| data_dir.to_path_buf(), Path::to_path_buf)
        .join("keys")
}

// -------------------------------------------------------------------------------------------
// Services in-process

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

// -------------------------------------------------------------------------------------------
// Services as child processes (kill -9 is real)

static BUILD: Mutex<bool> = Mutex::new(false);

/// Path of a service binary next to the test binary. `just test` builds the binaries first;
/// if one is missing (a bare `cargo nextest run`), it is built here once.
pub fn service_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // A test binary lives in target/<profile>/deps, the bench binary in target/<profile>.
    let here = exe.parent().expect("exe dir");
    let dir = if here.join(name).exists() {
        here.to_path_buf()
    } else {
        here.parent().expect("target/<profile>").to_path_buf()
    };
    let path = dir.join(name);
    let mut built = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if !*built && !path.exists() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(workspace_root())
            .args([
                "build",
                "--quiet",
                "-p",
                "product-svc",
                "-p",
                "order-svc",
                "--bins",
            ])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the service binaries failed");
        *built = true;
    }
    assert!(path.exists(), "{} is missing", path.display());
    path
}

/// A service running as a child process.
pub struct ServiceProcess {
    pub name: &'static str,
    pub http: String,
    pub http_addr: SocketAddr,
    args: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
}

impl ServiceProcess {
    /// Starts `product-svc` with fixed free ports (so a restart keeps its addresses).
    pub fn product(nats_url: &str, data_dir: &Path, log_dir: &Path) -> (Self, String) {
        Self::product_with(nats_url, data_dir, log_dir, &[])
    }

    /// `product` with extra environment (flags' env equivalents, `RUST_LOG`).
    pub fn product_with(
        nats_url: &str,
        data_dir: &Path,
        log_dir: &Path,
        extra: &[(&str, &str)],
    ) -> (Self, String) {
        let http = free_port();
        let grpc = free_port();
        let keys = write_test_keys(&log_dir.join("keys"));
        let args = vec![
            (
                "PRODUCT_API_KEYS".into(),
                keys.product.display().to_string(),
            ),
            (
                "PRODUCT_GRPC_TOKEN_FILE".into(),
                keys.grpc_token.display().to_string(),
            ),
            ("PRODUCT_HTTP_ADDR".into(), format!("127.0.0.1:{http}")),
            ("PRODUCT_GRPC_ADDR".into(), format!("127.0.0.1:{grpc}")),
            ("PRODUCT_DATA_DIR".into(), data_dir.display().to_string()),
            ("NATS_URL".into(), nats_url.into()),
            ("PRODUCT_SHUTDOWN_GRACE_SECS".into(), "5".into()),
            // Load tests come from one key; the limit has its own test.
            ("PRODUCT_RATE_LIMIT".into(), "0".into()),
        ];
        let mut args = args;
        args.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut p = Self::new("product-svc", http, args, log_dir);
        p.start();
        (p, format!("http://127.0.0.1:{grpc}"))
    }

    pub fn order(
        nats_url: &str,
        product_grpc: &str,
        data_dir: &Path,
        log_dir: &Path,
        extra: &[(&str, &str)],
    ) -> Self {
        let http = free_port();
        let keys = write_test_keys(&log_dir.join("keys"));
        let mut args = vec![
            ("ORDER_API_KEYS".into(), keys.order.display().to_string()),
            (
                "ORDER_GRPC_TOKEN_FILE".into(),
                keys.grpc_token.display().to_string(),
            ),
            ("ORDER_HTTP_ADDR".into(), format!("127.0.0.1:{http}")),
            ("ORDER_DATA_DIR".into(), data_dir.display().to_string()),
            ("NATS_URL".into(), nats_url.into()),
            ("PRODUCT_GRPC_URL".into(), product_grpc.into()),
            ("ORDER_WORKER_INTERVAL_MS".into(), "200".into()),
            ("ORDER_BREAKER_COOLDOWN_MS".into(), "500".into()),
            ("ORDER_SHUTDOWN_GRACE_SECS".into(), "5".into()),
            ("ORDER_RATE_LIMIT".into(), "0".into()),
        ];
        args.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut p = Self::new("order-svc", http, args, log_dir);
        p.start();
        p
    }

    fn new(
        name: &'static str,
        http_port: u16,
        args: Vec<(String, String)>,
        log_dir: &Path,
    ) -> Self {
        let http_addr: SocketAddr = format!("127.0.0.1:{http_port}").parse().expect("addr");
        Self {
            name,
            http: format!("http://{http_addr}"),
            http_addr,
            args,
            child: None,
            log: log_dir.join(format!("{name}.log")),
        }
    }

    /// Starts (or restarts) the process and waits until its HTTP port accepts connections.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = Command::new(service_binary(self.name));
        cmd.env(
            "RUST_LOG",
            std::env::var("SERVICE_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
        // Later pairs override earlier ones; an empty value removes the variable (clap takes an
        // empty value as a missing one: `PRODUCT_API_KEYS=` would be an error, not "no keys").
        for (k, v) in &self.args {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let child = cmd.spawn().expect("service starts");
        self.child = Some(child);
        let addr = self.http_addr;
        let name = self.name;
        wait_for_blocking(
            &format!("{name} to listen on {addr}"),
            Duration::from_secs(60),
            || {
                if let Some(child) = self.child.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    panic!(
                        "{name} exited during start-up with {status}; log: {}",
                        self.log.display()
                    );
                }
                accepts_connections(addr).then_some(())
            },
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the exit; returns the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let name = self.name;
        wait_for_blocking(&format!("{name} to exit after SIGTERM"), timeout, || {
            child.try_wait().ok().flatten()
        })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A scratch directory for one test: data dirs and logs.
/// Set `ESHOP_KEEP_TEST_DIRS=1` to keep it (with the service logs) after the test.
pub fn scratch() -> TempDir {
    let mut dir = tempfile::Builder::new()
        .prefix("eshop-test-")
        .tempdir()
        .expect("tempdir");
    if std::env::var_os("ESHOP_KEEP_TEST_DIRS").is_some() {
        dir.disable_cleanup(true);
        eprintln!("keeping test dir {}", dir.path().display());
    }
    dir
}
