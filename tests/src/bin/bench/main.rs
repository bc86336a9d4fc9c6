//! `just bench`: measures the system on this machine next to baselines run in the same process
//! on the same nats-server (the machine is shared and noisy: only ratios compare across runs).
//! Prints a table and writes `target/bench/report.{md,json}`. Sizes: `--quick`, or `BENCH_*`.
//!
//! Scenarios: 1 projection rate vs a raw fetch→sled→flush→ack loop; 2 cold start to ready (with
//! and without 100k orders); 3 outbox relay vs raw pipelined publish; 4 CreateOrder (snapshot vs
//! grpc catalog, one and two instances, `sync_interval: always`) vs a raw tonic round-trip, and
//! the cross-instance listing lag; 5 footprint (binary size, RSS, sled on disk); 6 the cost of
//! API keys; 7 an edge site across a simulated WAN (`edge.rs`).
#![allow(clippy::print_stdout)]

mod edge;

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::{HeaderMap, jetstream};
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};
use tests::{NatsServer, ServiceProcess, scratch, wait_for};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize)]
struct Row {
    scenario: String,
    metric: String,
    value: f64,
    unit: String,
    baseline: Option<String>,
    baseline_value: Option<f64>,
    ratio: Option<f64>,
    target: String,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
}

impl Report {
    fn add(
        &mut self,
        scenario: &str,
        metric: &str,
        value: f64,
        unit: &str,
        baseline: Option<(&str, f64)>,
        target: &str,
    ) {
        let row = Row {
            scenario: scenario.into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
            baseline: baseline.map(|(b, _)| b.into()),
            baseline_value: baseline.map(|(_, v)| v),
            ratio: baseline.map(|(_, v)| if v == 0.0 { 0.0 } else { value / v }),
            target: target.into(),
        };
        println!("{}", line(&row));
        self.rows.push(row);
    }

    fn markdown(&self) -> String {
        let mut out = String::from(
            "| Scenario | Metric | Value | Baseline (same run) | Ratio | Target |\n|---|---|---:|---|---:|---|\n",
        );
        for r in &self.rows {
            out.push_str(&line(r));
            out.push('\n');
        }
        out
    }
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn line(r: &Row) -> String {
    let baseline = match (&r.baseline, r.baseline_value) {
        (Some(b), Some(v)) => format!("{b}: {} {}", fmt(v), r.unit),
        _ => "—".into(),
    };
    let ratio = r
        .ratio
        .map(|x| format!("{x:.2}×"))
        .unwrap_or_else(|| "—".into());
    format!(
        "| {} | {} | {} {} | {} | {} | {} |",
        r.scenario,
        r.metric,
        fmt(r.value),
        r.unit,
        baseline,
        ratio,
        r.target
    )
}

fn env_or(name: &str, quick: bool, full: usize, small: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { small } else { full })
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn dir_mib(path: &Path) -> f64 {
    fn walk(p: &Path) -> u64 {
        let Ok(meta) = std::fs::metadata(p) else {
            return 0;
        };
        if meta.is_dir() {
            std::fs::read_dir(p)
                .map(|d| d.flatten().map(|e| walk(&e.path())).sum())
                .unwrap_or(0)
        } else {
            meta.len()
        }
    }
    walk(path) as f64 / (1024.0 * 1024.0)
}

fn product_event(id: Uuid, version: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "eventId": Uuid::now_v7(), "eventType": if version == 1 { "ProductCreated" } else { "ProductUpdated" },
        "schemaVersion": 1, "occurredAt": chrono::Utc::now(), "productId": id, "version": version,
        "name": format!("Bench product {}", &id.to_string()[..8]), "description": "A product used by the benchmark.",
        "price": "19.99", "category": "Bench", "deleted": false
    }))
    .unwrap()
}

/// Raw pipelined publish with a sliding window of `window` acks in flight; returns msgs/s.
async fn publish_raw(
    js: &jetstream::Context,
    messages: Vec<(String, Vec<u8>)>,
    window: usize,
) -> f64 {
    let started = Instant::now();
    let n = messages.len();
    let mut inflight = std::collections::VecDeque::with_capacity(window);
    for (subject, payload) in messages {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", Uuid::now_v7().to_string().as_str());
        inflight.push_back(
            js.publish_with_headers(subject, headers, Bytes::from(payload))
                .await
                .expect("publish"),
        );
        if inflight.len() >= window {
            inflight.pop_front().unwrap().await.expect("ack");
        }
    }
    for ack in inflight {
        ack.await.expect("ack");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn fill_products(js: &jetstream::Context, products: usize, updates: usize) -> f64 {
    js.create_or_update_stream(shared::streams::products(1))
        .await
        .expect("stream");
    let ids: Vec<Uuid> = (0..products).map(|_| Uuid::new_v4()).collect();
    let total = products.max(updates);
    let messages: Vec<(String, Vec<u8>)> = (0..total)
        .map(|i| {
            let id = ids[i % products];
            (
                format!("eshop.products.{id}"),
                product_event(id, (i / products) as u64 + 1),
            )
        })
        .collect();
    publish_raw(js, messages, 1000).await
}

/// Baseline of scenario 1: fetch 1,000 → decode → sled batch insert → one flush → ack all.
async fn raw_projection(js: &jetstream::Context, dir: &Path, expected: usize) -> f64 {
    let stream = js.get_stream(shared::streams::PRODUCTS).await.unwrap();
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("raw-baseline".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 4000,
            ..Default::default()
        })
        .await
        .unwrap();
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(32 << 20)
        .open()
        .unwrap();
    let tree = db.open_tree("snapshot").unwrap();
    let started = Instant::now();
    let mut done = 0;
    while done < expected {
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        let mut msgs = Vec::with_capacity(1000);
        while let Some(Ok(m)) = batch.next().await {
            msgs.push(m);
        }
        let mut sled_batch = sled::Batch::default();
        for m in &msgs {
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            let id = Uuid::parse_str(v["productId"].as_str().unwrap()).unwrap();
            sled_batch.insert(id.as_bytes().as_slice(), m.payload.to_vec());
        }
        tree.apply_batch(sled_batch).unwrap();
        db.flush_async().await.unwrap();
        for m in &msgs {
            m.ack().await.unwrap();
        }
        done += msgs.len();
    }
    expected as f64 / started.elapsed().as_secs_f64()
}

/// Raw replay without storage: fetch 1,000 + ack, until `expected` are consumed.
async fn raw_replay(js: &jetstream::Context, expected: usize) -> Duration {
    let started = Instant::now();
    let stream = js.get_stream(shared::streams::PRODUCTS).await.unwrap();
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some(format!("raw-replay-{}", Uuid::new_v4().simple())),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 4000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut done = 0;
    while done < expected {
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        while let Some(Ok(m)) = batch.next().await {
            m.ack().await.unwrap();
            done += 1;
        }
    }
    started.elapsed()
}

async fn http_ready(http: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    tests::wait_until_ready(http, timeout).await;
    started.elapsed()
}

/// Time from spawning order-svc to `/health/ready` = 200 on a stream already filled.
async fn cold_start(nats: &str, dir: &Path, tag: &str) -> (Duration, ServiceProcess) {
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
async fn load<F, Fut>(clients: usize, total: usize, request: F) -> (f64, Histogram<u64>)
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
type Legs = (f64, usize, Histogram<u64>, Vec<f64>);

struct NullStock;

#[tonic::async_trait]
impl proto::product_service_server::ProductService for NullStock {
    async fn reserve_stock(
        &self,
        _: tonic::Request<proto::ReserveStockRequest>,
    ) -> Result<tonic::Response<proto::ReserveStockResponse>, tonic::Status> {
        Ok(tonic::Response::new(proto::ReserveStockResponse {
            success: true,
            ..Default::default()
        }))
    }
    async fn release_stock(
        &self,
        _: tonic::Request<proto::ReleaseStockRequest>,
    ) -> Result<tonic::Response<proto::ReleaseStockResponse>, tonic::Status> {
        Ok(tonic::Response::new(proto::ReleaseStockResponse {
            success: true,
            failure_reason: None,
        }))
    }
    async fn get_products(
        &self,
        _: tonic::Request<proto::GetProductsRequest>,
    ) -> Result<tonic::Response<proto::GetProductsResponse>, tonic::Status> {
        Ok(tonic::Response::new(proto::GetProductsResponse::default()))
    }
    async fn commit_stock(
        &self,
        _: tonic::Request<proto::CommitStockRequest>,
    ) -> Result<tonic::Response<proto::CommitStockResponse>, tonic::Status> {
        Ok(tonic::Response::new(proto::CommitStockResponse {
            committed: true,
        }))
    }
}

/// Baseline of scenario 4: a raw tonic unary round-trip (no work on the server).
async fn raw_tonic(clients: usize, total: usize) -> (f64, Histogram<u64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(proto::product_service_server::ProductServiceServer::new(
                NullStock,
            ))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = proto::product_service_client::ProductServiceClient::new(channel);
    let result = load(clients, total, move |_| {
        let mut c = client.clone();
        async move {
            c.reserve_stock(proto::ReserveStockRequest {
                order_id: Uuid::new_v4().to_string(),
                items: vec![],
            })
            .await
            .is_ok()
        }
    })
    .await;
    server.abort();
    result
}

fn latency_rows(
    report: &mut Report,
    scenario: &str,
    name: &str,
    hist: &Histogram<u64>,
    base: Option<&Histogram<u64>>,
) {
    for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
        let v = hist.value_at_quantile(q) as f64;
        let b = base.map(|b| ("raw tonic", b.value_at_quantile(q) as f64));
        report.add(scenario, &format!("{name} {label}"), v, "µs", b, "");
    }
}

/// A Confirmed order (full state, version 2) on its own subject, as order-svc publishes it.
fn order_event(product: Uuid) -> (String, Vec<u8>) {
    let id = Uuid::now_v7();
    let now = chrono::Utc::now();
    let price: rust_decimal::Decimal = "19.99".parse().unwrap();
    let event = shared::events::OrderEvent {
        event_id: Uuid::now_v7(),
        event_type: shared::events::OrderEventType::OrderConfirmed,
        schema_version: shared::events::ORDER_SCHEMA_VERSION,
        occurred_at: now,
        order_id: id,
        version: 2,
        status: shared::events::OrderStatus::Confirmed,
        customer_id: Uuid::new_v4(),
        customer_email: "bench@example.com".into(),
        items: vec![shared::events::OrderEventItem {
            product_id: product,
            product_name: "Bench product".into(),
            quantity: 1,
            unit_price: price,
            line_total: price,
        }],
        total_amount: price,
        reason: None,
        failed_product_ids: Vec::new(),
        release_owed: false,
        commit_owed: false,
        request_fingerprint: None,
        created_at: now,
        updated_at: now,
    };
    (
        format!("{}.{id}", shared::events::ORDER_SUBJECT_PREFIX),
        serde_json::to_vec(&event).unwrap(),
    )
}

/// Fills `ORDERS` with `n` orders (one message each, as the stream keeps them).
async fn fill_orders(js: &jetstream::Context, n: usize) -> f64 {
    js.create_or_update_stream(shared::streams::orders(
        shared::streams::ORDERS,
        shared::events::ORDER_SUBJECT_PREFIX,
        1,
    ))
    .await
    .expect("stream");
    let messages = (0..n).map(|_| order_event(Uuid::new_v4())).collect();
    publish_raw(js, messages, 1000).await
}

/// Creates `n` products (plenty of stock) through product-svc's HTTP API; returns their ids.
async fn seed_catalog(client: &reqwest::Client, http: &str, n: usize) -> Vec<String> {
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
async fn create_orders(
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
async fn listing_lag(
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
/// (1-client rate and latencies, 64-client rate and latencies).
async fn create_order_sync_always(
    dir: &Path,
    orders_1: usize,
    orders_64: usize,
) -> ((f64, Histogram<u64>), (f64, Histogram<u64>)) {
    let nats = NatsServer::start_with("test-sync-always.conf");
    let (product, grpc) = ServiceProcess::product_with(
        &nats.url(),
        &dir.join("product-sync"),
        dir,
        &[("RUST_LOG", "warn")],
    );
    let order = ServiceProcess::order(
        &nats.url(),
        &grpc,
        &dir.join("order-sync"),
        dir,
        &[("RUST_LOG", "warn"), ("ORDER_INSTANCE_ID", "sync")],
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .default_headers(tests::auth_headers())
        .build()
        .unwrap();
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

/// CreateOrder at 64 clients in the design before orders moved to JetStream (sled orders and an
/// outbox): the final figure of BENCHMARKS.md at 8f82fbc. That design is gone, so it cannot run
/// in the same process; this is the reference it is compared to.
const PREVIOUS_DESIGN_64: f64 = 5_331.0;

/// CreateOrder with API keys checked against the same run with authentication off
/// (`--allow-anonymous`), 1 and 64 clients, legs interleaved keyed, anonymous, anonymous, keyed.
/// Both instances send the gRPC token, so this measures the HTTP key check (SHA-256 of the key,
/// constant-time compare over the key file, the `Caller` extension, the rate-limit bucket).
async fn auth_overhead(report: &mut Report, dir: &Path, orders_1: usize, orders_64: usize) {
    let nats = NatsServer::start();
    let (product, grpc) = ServiceProcess::product_with(
        &nats.url(),
        &dir.join("product-auth"),
        dir,
        &[("RUST_LOG", "warn")],
    );
    let instance = |name: &str, extra: &[(&str, &str)]| {
        let stream = format!("ORDERS_{}", name.to_uppercase());
        let prefix = format!("eshop.{name}orders");
        let mut env = vec![
            ("RUST_LOG", "warn"),
            ("ORDER_INSTANCE_ID", name),
            ("ORDER_STREAM", stream.as_str()),
            ("ORDER_SUBJECT_PREFIX", prefix.as_str()),
        ];
        env.extend_from_slice(extra);
        ServiceProcess::order(
            &nats.url(),
            &grpc,
            &dir.join(format!("order-{name}")),
            dir,
            &env,
        )
    };
    // Rate limiting stays on for the keyed instance (the default rate, never reached here), as
    // in production; the anonymous one has neither keys nor a limit.
    let keyed = instance("keyed", &[("ORDER_RATE_LIMIT", "1000000")]);
    let anonymous = instance("anon", &[("ORDER_API_KEYS", ""), ("ALLOW_ANONYMOUS", "1")]);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .default_headers(tests::auth_headers())
        .build()
        .unwrap();
    let ids = Arc::new(seed_catalog(&client, &product.http, 100).await);
    for o in [&keyed, &anonymous] {
        http_ready(&o.http, Duration::from_secs(60)).await;
        let last = ids.last().unwrap().clone();
        wait_for(
            "catalog in the snapshot",
            Duration::from_secs(60),
            || async {
                let url = format!("{}/api/snapshot/products/{last}", o.http);
                (client.get(url).send().await.ok()?.status() == 200).then_some(())
            },
        )
        .await;
    }
    let unauthenticated = reqwest::get(format!("{}/api/orders", keyed.http))
        .await
        .unwrap();
    assert_eq!(
        unauthenticated.status(),
        401,
        "the keyed instance checks keys"
    );
    for (clients, total) in [(1, orders_1), (64, orders_64)] {
        let mut secs: HashMap<&str, (f64, usize)> = HashMap::new();
        for mode in ["keys", "anonymous", "anonymous", "keys"] {
            let http = if mode == "keys" {
                &keyed.http
            } else {
                &anonymous.http
            };
            let leg = total / 2;
            let (rate, _) =
                create_orders(&client, std::slice::from_ref(http), &ids, clients, leg).await;
            let e = secs.entry(mode).or_default();
            e.0 += leg as f64 / rate;
            e.1 += leg;
        }
        let rate = |m: &str| secs[m].1 as f64 / secs[m].0;
        report.add(
            "6 auth",
            &format!("create order with API keys, {clients} clients"),
            rate("keys"),
            "orders/s",
            Some(("authentication off, same run", rate("anonymous"))),
            "within 10 % (≥ 0.9×)",
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // `--only projection|coldstart|relay|orders|durable|auth|edge` runs one group.
    let only = std::env::args().skip_while(|a| a != "--only").nth(1);
    let run = |group: &str| only.as_deref().is_none_or(|o| o == group);
    let products = env_or("BENCH_PRODUCTS", quick, 100_000, 10_000);
    let small = env_or("BENCH_SMALL_PRODUCTS", quick, 10_000, 2_000);
    let churn = env_or("BENCH_CHURN_UPDATES", quick, 1_000_000, 100_000);
    let updates = env_or("BENCH_RELAY_UPDATES", quick, 20_000, 3_000);
    let orders_1 = env_or("BENCH_ORDERS_1", quick, 2_000, 300);
    let orders_64 = env_or("BENCH_ORDERS_64", quick, 20_000, 3_000);
    let lag_orders = env_or("BENCH_LAG_ORDERS", quick, 1_000, 200);
    // CreateOrder with the default sync interval, for the sync-always comparison: (64, 1 client).
    let mut default_sync: Option<(f64, f64)> = None;
    let mut report = Report::default();
    let dir = scratch();
    println!(
        "| Scenario | Metric | Value | Baseline (same run) | Ratio | Target |\n|---|---|---:|---|---:|---|"
    );

    // 1 + 2. Projection and cold start with `products` products.
    if run("projection") {
        let nats = NatsServer::start();
        let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        let pub_rate = fill_products(&js, products, products).await;
        report.add(
            "0 setup",
            &format!("raw pipelined publish of {products} events (1,000 in flight)"),
            pub_rate,
            "msg/s",
            None,
            "",
        );
        let raw = raw_projection(&js, &dir.path().join("raw-sled"), products).await;
        let replay = raw_replay(&js, products).await;
        let (ready, order) = cold_start(&nats.url(), dir.path(), "big").await;
        let rate = products as f64 / ready.as_secs_f64();
        report.add(
            "1 projection",
            &format!("order-svc cold replay of {products} events (spawn → ready)"),
            rate,
            "msg/s",
            Some(("raw fetch→sled→flush→ack", raw)),
            "≥ 1.0× raw batch loop",
        );
        report.add(
            "2 cold start",
            &format!("{products} products: spawn → /health/ready"),
            ready.as_secs_f64() * 1000.0,
            "ms",
            Some(("raw replay, no storage", replay.as_secs_f64() * 1000.0)),
            "≤ 3000 ms for 100k",
        );
        report.add(
            "5 footprint",
            &format!("order-svc RSS after replaying {products}"),
            rss_mib(order.pid()),
            "MiB",
            None,
            "",
        );
        report.add(
            "5 footprint",
            &format!("order-svc sled on disk, {products} products"),
            dir_mib(&dir.path().join("order-big")),
            "MiB",
            None,
            "",
        );
        // The same catalog plus as many orders: both read models replay before ready.
        fill_orders(&js, products).await;
        let (ready_both, _both) = cold_start(&nats.url(), dir.path(), "big-orders").await;
        report.add(
            "2 cold start",
            &format!("{products} orders + {products} products: spawn → /health/ready"),
            ready_both.as_secs_f64() * 1000.0,
            "ms",
            Some(("products only", ready.as_secs_f64() * 1000.0)),
            "≤ 3000 ms for 100k + 100k",
        );
    }
    if run("coldstart") {
        let nats = NatsServer::start();
        let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        fill_products(&js, small, small).await;
        let (ready_small, _o) = cold_start(&nats.url(), dir.path(), "small").await;
        report.add(
            "2 cold start",
            &format!("{small} products: spawn → /health/ready"),
            ready_small.as_secs_f64() * 1000.0,
            "ms",
            None,
            "",
        );
        let nats2 = NatsServer::start();
        let js2 = jetstream::new(async_nats::connect(nats2.url()).await.unwrap());
        fill_products(&js2, small, churn).await;
        let (ready_churn, _o2) = cold_start(&nats2.url(), dir.path(), "churn").await;
        report.add(
            "2 cold start",
            &format!("{small} products after {churn} updates (compacted)"),
            ready_churn.as_secs_f64() * 1000.0,
            "ms",
            Some((
                &format!("{small} products, no churn"),
                ready_small.as_secs_f64() * 1000.0,
            )),
            "≤ 1.5×",
        );
    }

    // 3. Outbox relay, and 4. CreateOrder, on one system.
    'system: {
        if !run("relay") && !run("orders") {
            break 'system;
        }
        let nats = NatsServer::start();
        let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        let (product, grpc) = ServiceProcess::product_with(
            &nats.url(),
            &dir.path().join("product"),
            dir.path(),
            &[("RUST_LOG", "warn")],
        );
        report.add(
            "5 footprint",
            "product-svc RSS idle",
            rss_mib(product.pid()),
            "MiB",
            None,
            "≤ 10 MiB",
        );
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(128)
            .default_headers(tests::auth_headers())
            .build()
            .unwrap();
        let catalog = 1000;
        let ids = seed_catalog(&client, &product.http, catalog).await;
        let ids = Arc::new(ids);
        wait_for("catalog published", Duration::from_secs(120), || async {
            let info = tests::stream_info(&js, "PRODUCTS").await?;
            (info.state.last_sequence as usize >= catalog).then_some(())
        })
        .await;
        if run("relay") {
            let (c, http, ids2) = (client.clone(), product.http.clone(), ids.clone());
            let started = Instant::now();
            let (http_rate, hist) = load(64, updates, move |i| {
            let (c, http, id) = (c.clone(), http.clone(), ids2[i % ids2.len()].clone());
            async move {
                let body = json!({"name": format!("U{i:07}"), "description": "", "price": "9.99", "category": "Bench", "lowStockThreshold": 0});
                c.put(format!("{http}/api/products/{id}")).json(&body).send().await.map(|r| r.status().is_success()).unwrap_or(false)
            }
        })
        .await;
            let expected = (catalog + updates) as u64;
            wait_for(
                "relay to publish every update",
                Duration::from_secs(300),
                || async {
                    let info = tests::stream_info(&js, "PRODUCTS").await?;
                    (info.state.last_sequence >= expected).then_some(())
                },
            )
            .await;
            let e2e = updates as f64 / started.elapsed().as_secs_f64();
            let raw_js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
            raw_js
                .create_or_update_stream(async_nats::jetstream::stream::Config {
                    name: "RAWPUB".into(),
                    subjects: vec!["rawpub.*".into()],
                    ..Default::default()
                })
                .await
                .unwrap();
            let msgs: Vec<(String, Vec<u8>)> = (0..updates)
                .map(|i| {
                    (
                        format!("rawpub.{}", i % catalog),
                        product_event(Uuid::new_v4(), 1),
                    )
                })
                .collect();
            let raw_rate = publish_raw(&raw_js, msgs, 1000).await;
            report.add(
                "3 relay",
                &format!("HTTP updates, 64 clients ({updates})"),
                http_rate,
                "req/s",
                None,
                "",
            );
            report.add(
                "3 relay",
                "HTTP p99 (update, flushed)",
                hist.value_at_quantile(0.99) as f64,
                "µs",
                None,
                "",
            );
            report.add(
                "3 relay",
                "updates 2xx → publish ack, end to end",
                e2e,
                "msg/s",
                Some(("raw pipelined publish", raw_rate)),
                "relay keeps up with HTTP",
            );
            report.add(
                "3 relay",
                "end-to-end / HTTP rate",
                e2e / http_rate,
                "×",
                None,
                "≈ 1.0 (relay not the bottleneck)",
            );
        }

        if !run("orders") {
            break 'system;
        }
        // 4. CreateOrder: snapshot vs grpc catalog, 1 and 64 clients, next to a raw tonic round-trip.
        let snapshot = ServiceProcess::order(
            &nats.url(),
            &grpc,
            &dir.path().join("order-snap"),
            dir.path(),
            &[("RUST_LOG", "warn"), ("ORDER_INSTANCE_ID", "snap")],
        );
        let grpc_mode = ServiceProcess::order(
            &nats.url(),
            &grpc,
            &dir.path().join("order-grpc"),
            dir.path(),
            // Its own order stream: every instance projects every order of its stream, so
            // sharing one would make each mode pay for the other's orders.
            &[
                ("RUST_LOG", "warn"),
                ("ORDER_INSTANCE_ID", "grpc"),
                ("ORDER_CATALOG", "grpc"),
                ("ORDER_STREAM", "ORDERS_GRPC"),
                ("ORDER_SUBJECT_PREFIX", "eshop.grpcorders"),
            ],
        );
        http_ready(&snapshot.http, Duration::from_secs(60)).await;
        http_ready(&grpc_mode.http, Duration::from_secs(60)).await;
        report.add(
            "5 footprint",
            "order-svc RSS idle (1,000-product snapshot)",
            rss_mib(snapshot.pid()),
            "MiB",
            None,
            "≤ 10 MiB",
        );
        let (raw1, raw1_hist) = raw_tonic(1, orders_1 * 2).await;
        let (raw64, raw64_hist) = raw_tonic(64, orders_64 * 2).await;
        report.add(
            "4 baseline",
            "raw tonic unary, 1 in flight",
            raw1,
            "calls/s",
            None,
            "",
        );
        report.add(
            "4 baseline",
            "raw tonic unary, 64 in flight",
            raw64,
            "calls/s",
            None,
            "",
        );
        // Legs run in the order snapshot, grpc, grpc, snapshot (half the orders each), so a
        // drift of the machine or of product-svc's growing store favours neither mode.
        let mut mode_rates = Vec::new();
        for (clients, total, base, base_hist) in [
            (1, orders_1, raw1, &raw1_hist),
            (64, orders_64, raw64, &raw64_hist),
        ] {
            let mut acc: HashMap<&str, Legs> = HashMap::new();
            for mode in ["snapshot", "grpc", "grpc", "snapshot"] {
                let http = if mode == "snapshot" {
                    snapshot.http.clone()
                } else {
                    grpc_mode.http.clone()
                };
                let order_pid = if mode == "snapshot" {
                    snapshot.pid()
                } else {
                    grpc_mode.pid()
                };
                let pids = [
                    nats.pid().unwrap_or(0),
                    product.pid(),
                    order_pid,
                    std::process::id(),
                ];
                let leg = total / 2;
                let cpu_before: Vec<f64> = pids.iter().map(|p| cpu_secs(*p)).collect();
                let (rate, hist) = create_orders(&client, &[http], &ids, clients, leg).await;
                let a = acc
                    .entry(mode)
                    .or_insert_with(|| (0.0, 0, Histogram::new(3).unwrap(), vec![0.0; pids.len()]));
                a.0 += leg as f64 / rate;
                a.1 += leg;
                a.2.add(&hist).unwrap();
                for (k, (pid, before)) in pids.iter().zip(&cpu_before).enumerate() {
                    a.3[k] += cpu_secs(*pid) - before;
                }
            }
            for mode in ["snapshot", "grpc"] {
                let (secs, orders, hist, cpu) = &acc[mode];
                let rate = *orders as f64 / secs;
                if clients == 64 {
                    let order_name = if mode == "snapshot" {
                        "order-svc"
                    } else {
                        "order-svc (grpc)"
                    };
                    let names = ["nats-server", "product-svc", order_name, "load generator"];
                    for (name, cpu) in names.iter().zip(cpu) {
                        report.add(
                            "4 create order",
                            &format!("{mode}, 64 clients: CPU of {name} per 1,000 orders"),
                            cpu * 1000.0 / (*orders as f64 / 1000.0),
                            "ms",
                            None,
                            "",
                        );
                    }
                }
                let target = match (mode, clients) {
                    ("snapshot", 64) => "≥ 3,000/s; ≥ 1.5× grpc mode",
                    _ => "",
                };
                report.add(
                    "4 create order",
                    &format!("{mode} catalog, {clients} clients"),
                    rate,
                    "orders/s",
                    Some(("raw tonic", base)),
                    target,
                );
                latency_rows(
                    &mut report,
                    "4 create order",
                    &format!("{mode}, {clients} clients"),
                    hist,
                    Some(base_hist),
                );
                mode_rates.push(((mode, clients), rate, hist.value_at_quantile(0.99)));
            }
        }
        let find = |m: &str, c: usize| {
            mode_rates
                .iter()
                .find(|((mm, cc), _, _)| *mm == m && *cc == c)
                .map(|(_, r, p)| (*r, *p))
                .unwrap()
        };
        let (s64, s64p99) = find("snapshot", 64);
        let (g64, g64p99) = find("grpc", 64);
        report.add(
            "4 create order",
            "snapshot / grpc throughput, 64 clients",
            s64 / g64,
            "×",
            None,
            "≥ 1.5×",
        );
        report.add(
            "4 create order",
            "snapshot / grpc p99, 64 clients",
            s64p99 as f64 / g64p99 as f64,
            "×",
            None,
            "< 1.0",
        );
        report.add(
            "4 create order",
            "one instance, 64 clients, next to the previous design",
            s64,
            "orders/s",
            Some((
                "sled orders + outbox (BENCHMARKS.md at 8f82fbc)",
                PREVIOUS_DESIGN_64,
            )),
            "≥ 5,000/s",
        );
        default_sync = Some((s64, find("snapshot", 1).0));

        // Two instances on the same box, round-robin, and the listing lag between them.
        let second = ServiceProcess::order(
            &nats.url(),
            &grpc,
            &dir.path().join("order-snap-b"),
            dir.path(),
            &[("RUST_LOG", "warn"), ("ORDER_INSTANCE_ID", "snap-b")],
        );
        http_ready(&second.http, Duration::from_secs(60)).await;
        let both = [snapshot.http.clone(), second.http.clone()];
        let (rate2, hist2) = create_orders(&client, &both, &ids, 64, orders_64 / 2).await;
        report.add(
            "4 create order",
            "two instances (round-robin), 64 clients",
            rate2,
            "orders/s",
            Some(("one instance, same run", s64)),
            "",
        );
        latency_rows(
            &mut report,
            "4 create order",
            "two instances, 64 clients",
            &hist2,
            None,
        );
        let lag = listing_lag(&client, &snapshot.http, &second.http, &ids, lag_orders).await;
        for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
            report.add(
                "4 create order",
                &format!("201 on A → in B's customer listing, {label} ({lag_orders} orders)"),
                lag.value_at_quantile(q) as f64 / 1000.0,
                "ms",
                None,
                if label == "p99" { "≤ 50 ms" } else { "" },
            );
        }

        // 5. Footprint after the load.
        report.add(
            "5 footprint",
            "product-svc RSS after load",
            rss_mib(product.pid()),
            "MiB",
            None,
            "",
        );
        report.add(
            "5 footprint",
            "order-svc RSS after load (snapshot mode)",
            rss_mib(snapshot.pid()),
            "MiB",
            None,
            "",
        );
        report.add(
            "5 footprint",
            &format!(
                "product-svc sled on disk ({} products, {} orders' reservations)",
                catalog,
                orders_1 + orders_64
            ),
            dir_mib(&dir.path().join("product")),
            "MiB",
            None,
            "",
        );
        for name in ["product-svc", "order-svc"] {
            let size = std::fs::metadata(tests::service_binary(name))
                .map(|m| m.len())
                .unwrap_or(0) as f64
                / 1e6;
            report.add(
                "5 footprint",
                &format!("{name} stripped binary"),
                size,
                "MB",
                None,
                "≤ 5 MB",
            );
        }
    }

    // 7. An edge site across a 10 ms WAN.
    if run("edge") {
        let outage = Duration::from_secs(env_or("BENCH_EDGE_OUTAGE_SECS", quick, 30, 10) as u64);
        let outage_orders = env_or("BENCH_EDGE_OUTAGE_ORDERS", quick, 1_000, 200);
        edge::run(
            &mut report,
            dir.path(),
            orders_1 / 4,
            orders_64 / 8,
            outage_orders,
            outage,
        )
        .await;
    }

    // 6. The cost of authentication on CreateOrder.
    if run("auth") {
        auth_overhead(&mut report, dir.path(), orders_1, orders_64).await;
    }

    // 4b. CreateOrder with JetStream fsyncing every write (nats/single.conf's setting).
    if run("durable") {
        let ((r1, h1), (r64, h64)) =
            create_order_sync_always(dir.path(), orders_1, orders_64).await;
        let (d64, d1) = default_sync.unzip();
        report.add(
            "4 create order",
            "sync_interval: always, 1 client",
            r1,
            "orders/s",
            d1.map(|d| ("default sync, same run", d)),
            "",
        );
        report.add(
            "4 create order",
            "sync_interval: always, 64 clients",
            r64,
            "orders/s",
            d64.map(|d| ("default sync, same run", d)),
            "",
        );
        latency_rows(
            &mut report,
            "4 create order",
            "sync always, 1 client",
            &h1,
            None,
        );
        latency_rows(
            &mut report,
            "4 create order",
            "sync always, 64 clients",
            &h64,
            None,
        );
    }

    let out = tests::workspace_root().join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let md = format!(
        "# Benchmark report\n\nMachine: {} cores; sizes: products {products}, small {small}, churn {churn}, relay updates {updates}, orders {orders_1}/{orders_64}.\n\n{}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        report.markdown()
    );
    std::fs::write(out.join("report.md"), md).unwrap();
    std::fs::write(
        out.join("report.json"),
        serde_json::to_vec_pretty(&report.rows).unwrap(),
    )
    .unwrap();
    println!("\nwrote {}", out.join("report.md").display());
}
