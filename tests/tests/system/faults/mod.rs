//! The fault and load suite: real service binaries as child processes (so kill -9 is real), a
//! real nats-server, temp data dirs, loopback only. Each scenario asserts the exact end state.
//! Sizes come from env vars (`FAULT_*`), so `just soak` runs a larger version by hand.
mod bad_input;
mod contention;
mod outage;
mod poison;
mod replay;
mod replies;
mod sigterm;
mod write_load;
mod writers;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde_json::{Value, json};
use tests::{NatsServer, OrderApi, ProductApi, ServiceProcess, scratch, wait_for};

use crate::get_json;

use contention::*;

pub(super) const LONG: Duration = Duration::from_secs(180);

pub(super) fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (name, price, version, deleted) per product id.
pub(super) type Catalog = BTreeMap<String, (String, String, u64, bool)>;

pub(super) fn row(p: &Value) -> (String, String, u64, bool) {
    (
        p["name"].as_str().unwrap_or_default().to_owned(),
        p["price"].as_str().unwrap_or_default().to_owned(),
        p["version"].as_u64().unwrap_or(0),
        p["deleted"].as_bool().unwrap_or(false),
    )
}

/// product-svc's whole catalog, through its API. A listing first waits for the instance's cache
/// to reach the stream, so right after a fault it may answer 503 (the stream's new leader not
/// elected yet, or the cache catching up): that is waited out; any other status fails.
pub(super) async fn product_catalog(http: &str) -> Catalog {
    let mut out = Catalog::new();
    let mut page = 1;
    loop {
        let url = format!("{http}/api/products?page={page}&pageSize=100");
        let body = wait_for("product-svc to list its catalog", LONG, || async {
            let (status, body) = get_json(&url).await;
            assert!(
                status == 200 || status == 503,
                "listing answered {status}: {body}"
            );
            (status == 200).then_some(body)
        })
        .await;
        for p in body["items"].as_array().unwrap() {
            out.insert(p["id"].as_str().unwrap().to_owned(), row(p));
        }
        if page >= body["totalPages"].as_u64().unwrap() as usize {
            return out;
        }
        page += 1;
    }
}

/// order-svc's whole ProductSnapshot, through its API.
pub(super) async fn snapshot_catalog(http: &str) -> Catalog {
    let mut out = Catalog::new();
    let mut page = 1;
    loop {
        let (status, body) = get_json(&format!(
            "{http}/api/snapshot/products?page={page}&pageSize=1000"
        ))
        .await;
        assert_eq!(status, 200);
        for p in body["items"].as_array().unwrap() {
            out.insert(p["id"].as_str().unwrap().to_owned(), row(p));
        }
        if page >= body["totalPages"].as_u64().unwrap_or(0) as usize {
            return out;
        }
        page += 1;
    }
}

pub(super) async fn wait_snapshot_matches(product_http: &str, order_http: &str) -> usize {
    let mut last_diff;
    let deadline = Instant::now() + LONG;
    loop {
        // Both sides read afresh each round: a catalog read while product-svc was still
        // settling must not be the fixed target.
        let expected = product_catalog(product_http).await;
        let got = snapshot_catalog(order_http).await;
        if got == expected {
            return expected.len();
        }
        last_diff = expected
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(v))
            .count();
        assert!(
            Instant::now() < deadline,
            "snapshot never matched the catalog: {last_diff} rows differ of {}, snapshot has {}",
            expected.len(),
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// nats-server, then product-svc and order-svc as child processes (so kill -9 is real), with
/// their data dirs and logs in `dir`. Destructure it binding every field (`nats: _nats`): a field
/// matched by `_` is dropped at once, and with it its process or directory.
pub(super) struct Processes {
    pub nats: NatsServer,
    pub dir: tempfile::TempDir,
    pub product: ServiceProcess,
    /// product-svc's gRPC URL (order-svc's is this one).
    pub grpc: String,
    pub order: ServiceProcess,
}

impl Processes {
    pub fn start() -> Self {
        let nats = NatsServer::start();
        let dir = scratch();
        let (product, grpc) =
            ServiceProcess::product(&nats.url(), &dir.path().join("product"), dir.path());
        let order = ServiceProcess::order(
            &nats.url(),
            &grpc,
            &dir.path().join("order"),
            dir.path(),
            &[],
        );
        Self {
            nats,
            dir,
            product,
            grpc,
            order,
        }
    }
}

pub(super) async fn create_products(
    http: &str,
    n: usize,
    stock: i64,
    concurrency: usize,
) -> Vec<String> {
    futures::stream::iter(0..n)
        .map(|i| async move {
            let body = json!({"name": format!("Fault {i:06}"), "description": "", "price": format!("{}.{:02}", 1 + i % 400, i % 100),
                "category": format!("C{}", i % 7), "stockQuantity": stock, "lowStockThreshold": 0});
            ProductApi::new(http).create(&body).await.expect(201)["id"].as_str().unwrap().to_owned()
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// The `checks` of order-svc's `/health/ready` (200 or 503).
pub(super) async fn ready_checks(http: &str) -> Value {
    let (_, body) = get_json(&format!("{http}/health/ready")).await;
    body["checks"].clone()
}

/// Four clients placing orders (about 80 orders/s in all) until stopped.
pub(super) struct Load {
    stop: Arc<AtomicBool>,
    /// (order id, HTTP status, when) of every answer.
    pub placed: Arc<Mutex<Vec<(String, u16, Instant)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(orders: &OrderApi, ids: &[String]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let placed: Arc<Mutex<Vec<(String, u16, Instant)>>> = Arc::default();
        let mut tasks = Vec::new();
        for c in 0..4 {
            let (orders, ids, stop, placed) =
                (orders.clone(), ids.to_vec(), stop.clone(), placed.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = c;
                while !stop.load(Ordering::SeqCst) {
                    let r = orders
                        .place(&order_body(&ids[i % ids.len()], 1 + (i % 3) as i64))
                        .await;
                    placed
                        .lock()
                        .unwrap()
                        .push((r.id(), r.status, Instant::now()));
                    i += 4;
                    // Pacing of the load generator, not synchronisation.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }));
        }
        Self {
            stop,
            placed,
            tasks,
        }
    }

    /// Stops the clients; every answer they got.
    pub async fn stop(self) -> Vec<(String, u16, Instant)> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        self.placed.lock().unwrap().clone()
    }
}

/// Waits until every placed order has settled (Confirmed or Rejected); returns the units the
/// Confirmed ones hold, per product.
pub(super) async fn confirmed_units(
    orders: &OrderApi,
    placed: &[(String, u16, Instant)],
) -> HashMap<String, i64> {
    let mut expected: HashMap<String, i64> = HashMap::new();
    for (id, _, _) in placed {
        let o = wait_for("the order to settle", LONG, || async {
            let o = orders.get(id).await.body;
            (o["status"] != "Pending").then_some(o)
        })
        .await;
        assert!(
            o["status"] == "Confirmed" || o["status"] == "Rejected",
            "{o}"
        );
        if o["status"] == "Confirmed" {
            let item = &o["items"][0];
            *expected
                .entry(item["productId"].as_str().unwrap().to_owned())
                .or_default() += item["quantity"].as_i64().unwrap();
        }
    }
    expected
}
