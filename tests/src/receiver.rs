//! A webhook receiver on loopback, as a client would run one: it verifies every delivery's
//! Standard Webhooks signature, keeps what it accepted, and can answer 503 or be down (its port
//! closed) for a while, then come back on the same port.
use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// One delivery the receiver accepted (answered 2xx).
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `webhook-id`.
    pub id: String,
    pub timestamp: i64,
    pub body: Value,
    pub received: Instant,
}

#[derive(Default)]
struct Inner {
    /// The secrets of the hooks that deliver here (a delivery verifies with one of them).
    keys: Mutex<Vec<ring::hmac::Key>>,
    failing: AtomicBool,
    accepted: Mutex<Vec<Delivery>>,
    /// Requests refused for a bad or missing signature.
    bad_signatures: AtomicU64,
    /// Every request that reached the receiver.
    requests: AtomicU64,
}

pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    stop: Option<CancellationToken>,
}

impl Receiver {
    /// Listens on a free loopback port.
    pub async fn start() -> Self {
        let mut receiver = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], crate::free_port())),
            inner: Arc::default(),
            stop: None,
        };
        receiver.up().await;
        receiver
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Adds a secret deliveries are verified with (`whsec_<base64>`).
    pub fn trust(&self, secret: &str) {
        let bytes = STANDARD
            .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
            .expect("base64");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes);
        self.inner.keys.lock().unwrap().push(key);
    }

    /// Answer 503 to everything (`true`) or accept verified deliveries (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.inner.failing.store(failing, Ordering::SeqCst);
    }

    /// Closes the port: deliveries find nobody listening.
    pub async fn down(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.cancel();
        }
        crate::wait_for("the receiver's port to close", crate::WAIT, || async {
            (!crate::accepts_connections(self.addr)).then_some(())
        })
        .await;
    }

    /// Listens again on the same port.
    pub async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("the receiver's port is free");
        let stop = CancellationToken::new();
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(self.inner.clone());
        let until = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { until.cancelled().await })
                .await
                .expect("the receiver serves");
        });
        self.stop = Some(stop);
    }

    /// Waits until a delivery of order `id` (any event) was accepted.
    pub async fn wait_for_order(&self, id: &str) {
        crate::wait_for("a delivery of the order accepted", crate::WAIT, || async {
            let accepted = self.accepted();
            accepted
                .iter()
                .any(|d| d.body["data"]["id"] == id)
                .then_some(())
        })
        .await
    }

    pub fn accepted(&self) -> Vec<Delivery> {
        self.inner.accepted.lock().unwrap().clone()
    }

    pub fn bad_signatures(&self) -> u64 {
        self.inner.bad_signatures.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.cancel();
        }
    }
}

async fn receive(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    inner.requests.fetch_add(1, Ordering::SeqCst);
    if inner.failing.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let (id, timestamp) = (header("webhook-id"), header("webhook-timestamp"));
    let verified = {
        let keys = inner.keys.lock().unwrap();
        keys.iter().any(|key| {
            let signed = [id.as_bytes(), b".", timestamp.as_bytes(), b".", &body].concat();
            header("webhook-signature").split(' ').any(|sig| {
                sig.strip_prefix("v1,")
                    .and_then(|b64| STANDARD.decode(b64).ok())
                    .is_some_and(|tag| ring::hmac::verify(key, &signed, &tag).is_ok())
            })
        })
    };
    let timestamp: i64 = timestamp.parse().unwrap_or(0);
    let fresh = (chrono::Utc::now().timestamp() - timestamp).abs() <= 300;
    if !verified || !fresh || id.is_empty() {
        inner.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::BAD_REQUEST;
    }
    let Ok(body) = serde_json::from_slice(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    inner.accepted.lock().unwrap().push(Delivery {
        id: id.to_owned(),
        timestamp,
        body,
        received: Instant::now(),
    });
    StatusCode::NO_CONTENT
}
