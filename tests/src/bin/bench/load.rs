//! Driving the services: starting and waiting for them, a closed-loop load generator with latency histograms, seeding the catalog and creating orders.
use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tests::{NatsServer, ServiceProcess, wait_for};
use uuid::Uuid;

pub(crate) async fn http_ready(http: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    tests::wait_until_ready(http, timeout).await;
    started.elapsed()
}

/// Time from spawning order-svc to `/health/ready` = 200 on a stream already filled.
pub(crate) async fn cold_start(nats: &str, dir: &Path, tag: &str) -> (Duration, ServiceProcess) {
    let started = Instant::now();
    let order = ServiceProcess::order(
        nats,
        "http://127.0.0.1:9",
        &dir.join(format!("order-{tag}")),
        dir,
        &[("RUST_LOG", "warn"), ("ORDER_INSTANCE_ID", tag)],
    );
    http_ready(&order.http, Duration::from_secs(300)).await;
    (started.elapsed(), order)
}

/// Runs `total` requests with `clients` in flight; returns (requests/s, latency histogram in µs).
pub(crate) async fn load<F, Fut>(clients: usize, total: usize, request: F) -> (f64, Histogram<u64>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (request, next) = (request.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).unwrap();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return hist;
                }
                let t = Instant::now();
                assert!(request(i).await, "request {i} failed");
                hist.record(t.elapsed().as_micros() as u64).unwrap();
            }
        }));
    }
    let mut hist = Histogram::<u64>::new(3).unwrap();
    for t in tasks {
        hist.add(t.await.unwrap()).unwrap();
    }
    (total as f64 / started.elapsed().as_secs_f64(), hist)
}

/// One mode's legs of the create-order load: seconds, orders, latencies, CPU seconds per process.
pub(crate) type Legs = (f64, usize, Histogram<u64>, Vec<f64>);

/// A client with the test key that keeps up to `pool` idle connections per host.
pub(crate) fn bench_client(pool: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(pool)
        .default_headers(tests::auth_headers())
        .build()
        .expect("client")
}

/// Creates `n` products (plenty of stock) through product-svc's HTTP API; returns their ids.
pub(crate) async fn seed_catalog(client: &reqwest::Client, http: &str, n: usize) -> Vec<String> {
    futures::stream::iter(0..n)
        .map(|i| {
            let (c, http) = (client.clone(), http.to_owned());
            async move {
                let body = json!({"name": format!("P{i:05}"), "description": "", "price": "9.99", "category": "Bench", "stockQuantity": 1_000_000_000, "lowStockThreshold": 0});
                c.post(format!("{http}/api/products")).json(&body).send().await.unwrap().json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await
}

/// `total` create-order requests from `clients` clients, spread round-robin over `https`;
/// every one must be answered 201.
pub(crate) async fn create_orders(
    client: &reqwest::Client,
    https: &[String],
    ids: &Arc<Vec<String>>,
    clients: usize,
    total: usize,
) -> (f64, Histogram<u64>) {
    let (c, https, ids) = (client.clone(), https.to_vec(), ids.clone());
    load(clients, total, move |i| {
        let (c, http, id) = (c.clone(), https[i % https.len()].clone(), ids[(i * 7919) % ids.len()].clone());
        async move {
            let body = json!({"customerId": Uuid::new_v4(), "customerEmail": "bench@example.com", "items": [{"productId": id, "quantity": 1}]});
            c.post(format!("{http}/api/orders")).json(&body).send().await.map(|r| r.status() == 201).unwrap_or(false)
        }
    })
    .await
}

/// From an order's 201 on instance `a` to its appearance in instance `b`'s customer listing
/// (polled back to back), one order at a time; µs.
pub(crate) async fn listing_lag(
    client: &reqwest::Client,
    a: &str,
    b: &str,
    ids: &[String],
    n: usize,
) -> Histogram<u64> {
    let mut hist = Histogram::<u64>::new(3).unwrap();
    for i in 0..n {
        let customer = Uuid::new_v4();
        let body = json!({"customerId": customer, "customerEmail": "lag@example.com", "items": [{"productId": ids[i % ids.len()], "quantity": 1}]});
        let r = client
            .post(format!("{a}/api/orders"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let acked = Instant::now();
        let url = format!("{b}/api/orders?customerId={customer}");
        loop {
            let page: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
            if page["totalCount"] == 1 {
                break;
            }
            assert!(
                acked.elapsed() < Duration::from_secs(30),
                "order never listed on B"
            );
        }
        hist.record(acked.elapsed().as_micros() as u64).unwrap();
    }
    hist
}

/// CreateOrder against a nats-server with `sync_interval: always` (fsync before every ack):
/// (1-client rate and latencies, 64-client rate and latencies), then the floor on the same
/// server (1 client, 64 clients).
pub(crate) async fn create_order_sync_always(
    dir: &Path,
    orders_1: usize,
    orders_64: usize,
) -> (
    ((f64, Histogram<u64>), (f64, Histogram<u64>)),
    (crate::FloorRun, crate::FloorRun),
) {
    let nats = NatsServer::start_with("test-sync-always.conf");
    let orders = create_orders_on(&nats.url(), 1, dir, "sync", orders_1, orders_64).await;
    let floor = crate::Floor::start(&nats.url());
    let (client, ids) = (
        bench_client(128),
        Arc::new(vec![Uuid::new_v4().to_string()]),
    );
    let one = crate::run_floor(&floor, &nats, &client, &ids, 1, orders_1).await;
    let many = crate::run_floor(&floor, &nats, &client, &ids, 64, orders_64).await;
    (orders, (one, many))
}

/// CreateOrder at 1 and 64 clients on the 3-node cluster (streams R3) started from `config`
/// (the default sync interval, or `sync_interval: always` as `nats/cluster/` runs).
pub(crate) async fn create_order_on_cluster(
    config: &'static str,
    tag: &str,
    dir: &Path,
    orders_1: usize,
    orders_64: usize,
) -> ((f64, Histogram<u64>), (f64, Histogram<u64>)) {
    let cluster = tests::NatsCluster::start_with(config);
    create_orders_on(&cluster.url(), 3, dir, tag, orders_1, orders_64).await
}

/// product-svc and order-svc (child processes) on `nats`, streams with `replicas`, a seeded
/// catalog; then CreateOrder at 1 and at 64 clients.
async fn create_orders_on(
    nats: &str,
    replicas: usize,
    dir: &Path,
    tag: &str,
    orders_1: usize,
    orders_64: usize,
) -> ((f64, Histogram<u64>), (f64, Histogram<u64>)) {
    let replicas = replicas.to_string();
    let (product, grpc) = ServiceProcess::product_with(
        nats,
        &dir.join(format!("product-{tag}")),
        dir,
        &[("RUST_LOG", "warn"), ("PRODUCT_STREAM_REPLICAS", &replicas)],
    );
    let order = ServiceProcess::order(
        nats,
        &grpc,
        &dir.join(format!("order-{tag}")),
        dir,
        &[
            ("RUST_LOG", "warn"),
            ("ORDER_INSTANCE_ID", tag),
            ("ORDER_STREAM_REPLICAS", &replicas),
        ],
    );
    let client = bench_client(128);
    let ids = Arc::new(seed_catalog(&client, &product.http, 100).await);
    let last = ids.last().unwrap().clone();
    wait_for(
        "catalog in the snapshot",
        Duration::from_secs(60),
        || async {
            let url = format!("{}/api/snapshot/products/{last}", order.http);
            (client.get(url).send().await.ok()?.status() == 200).then_some(())
        },
    )
    .await;
    let https = [order.http.clone()];
    let one = create_orders(&client, &https, &ids, 1, orders_1 / 2).await;
    let many = create_orders(&client, &https, &ids, 64, orders_64 / 2).await;
    (one, many)
}
