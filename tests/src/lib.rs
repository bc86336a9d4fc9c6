//! The system-test harness: real `nats-server` processes, real services (in-process or as child
//! processes, so kill -9 is real), real sled in temp dirs, everything on 127.0.0.1.
//!
//! Nothing here sleeps to synchronise: every wait polls a condition against a deadline.
use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tempfile::TempDir;
pub mod api;
pub mod edge;
mod inproc;
pub mod nats;
mod process;
pub mod proxy;
pub mod receiver;
mod stock;
pub use api::{Answer, Http, OrderApi, ProductApi, order_body, product_body};
pub use inproc::*;
pub use nats::{NatsCluster, NatsServer};
pub use process::*;
pub use proxy::FaultyProxy;
pub use receiver::Receiver;
pub use stock::{StockApi, reserve_request};

/// How long a test waits for something the system should do promptly.
pub const WAIT: Duration = Duration::from_secs(30);

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

/// Writes the key files of [`TEST_KEY`] and the [`TEST_GRPC_TOKEN`] file into `dir`. Each file
/// is written whole and renamed into place: services of concurrent tests may share a key dir, and
/// one must never read another's half-written file (the content is always the same).
pub fn write_test_keys(dir: &Path) -> TestKeys {
    std::fs::create_dir_all(dir).expect("key dir");
    let digest = shared::auth::hash_key(TEST_KEY);
    let file = |scopes: &[&str]| {
        serde_json::json!({"keys": [{"name": "tests", "sha256": digest, "scopes": scopes}]})
            .to_string()
    };
    let product = dir.join("product-keys.json");
    let order = dir.join("order-keys.json");
    write_whole(&product, &file(product_svc::SCOPES));
    write_whole(&order, &file(order_svc::SCOPES));
    let grpc_token = dir.join("grpc-token");
    write_whole(&grpc_token, TEST_GRPC_TOKEN);
    TestKeys {
        product,
        order,
        grpc_token,
    }
}

/// Writes `text` to a unique temporary file next to `path`, then renames it over `path`.
fn write_whole(path: &Path, text: &str) {
    let unique = format!("{}.{}.tmp", path.display(), uuid::Uuid::new_v4());
    std::fs::write(&unique, text).expect("key file written");
    std::fs::rename(&unique, path).expect("key file renamed into place");
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
