//! Scenario 9: webhooks. CreateOrder at 64 clients on one instance with no hook, and with 100
//! hooks registered (each for its own customer and `OrderConfirmed`): the usual load, where one
//! order in 100 is a hooked customer's, and the worst case, where every order is (one delivery
//! per order), in the same run (legs: no hook, usual, worst, usual, no hook); how long the
//! delivery backlog takes to drain after the load; the delivery rate to a local receiver, and
//! each delivery's latency from the order's 201 to its receipt.
use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tests::{NatsServer, Receiver, ServiceProcess};
use uuid::Uuid;

use crate::*;

const HOOKS: usize = 100;

pub(crate) async fn webhooks(report: &mut Report, dir: &Path, orders: usize) {
    let s = "9 webhooks";
    let nats = NatsServer::start();
    let (product, grpc) = ServiceProcess::product_with(
        &nats.url(),
        &dir.join("product-hooks"),
        dir,
        &[("RUST_LOG", "warn")],
    );
    let order = ServiceProcess::order(
        &nats.url(),
        &grpc,
        &dir.join("order-hooks"),
        dir,
        &[
            ("RUST_LOG", "warn"),
            ("ORDER_INSTANCE_ID", "hooks"),
            ("ORDER_WEBHOOK_ALLOW_PRIVATE", "1"),
        ],
    );
    let client = bench_client(64);
    let ids = Arc::new(seed_catalog(&client, &product.http, 100).await);
    http_ready(&order.http, Duration::from_secs(60)).await;
    let customers: Arc<Vec<Uuid>> = Arc::new((0..HOOKS).map(|_| Uuid::new_v4()).collect());
    let load = Load {
        client: client.clone(),
        http: order.http.clone(),
        ids,
        customers: customers.clone(),
        placed_at: Arc::default(),
    };

    // CPU seconds so far of order-svc, product-svc, nats-server and this process (the load
    // generator and the receiver).
    let pids = [
        order.pid(),
        product.pid(),
        nats.pid().unwrap_or(0),
        std::process::id(),
    ];
    let cpu = move || pids.map(cpu_secs);

    // Legs in the order no hook, usual, worst case, usual, no hook (the hooks deleted again), so
    // the system's growth over the run (the view, the streams) favours neither side; each side
    // is the mean of its two legs.
    load.run(1, orders / 10).await; // warm-up
    let before = cpu();
    let (none_1, _) = load.run(1, orders).await;
    let cpu_none_1 = per_order(before, cpu(), orders);

    let receiver = Receiver::start().await;
    let api = tests::OrderApi::with_client(&order.http, client.clone());
    let mut hooks = Vec::new();
    for customer in customers.iter() {
        let hook = api
            .register_hook(&json!({"url": receiver.url(), "events": ["OrderConfirmed"], "customerId": customer}))
            .await
            .expect(201);
        receiver.trust(hook["secret"].as_str().expect("registered"));
        hooks.push(hook["id"].as_str().expect("registered").to_owned());
    }
    // The usual load with the hooks registered: one order in 100 is a hooked customer's.
    let before = cpu();
    let (typical_1, _) = load.run(100, orders).await;
    let cpu_typical_1 = per_order(before, cpu(), orders);
    let expected = orders.div_ceil(100);
    wait_accepted(&receiver, expected).await;
    // Every order a hooked customer's: one delivery per order.
    load.placed_at.lock().unwrap().clear();
    let started = Instant::now();
    let before = cpu();
    let (hooked, _) = load.run(1, orders).await;
    let load_end = Instant::now();
    wait_accepted(&receiver, expected + orders).await;
    let drain = load_end.elapsed().as_secs_f64();
    let cpu_hooked = per_order(before, cpu(), orders);
    let accepted = receiver.accepted();
    // The usual load again, then no hook again.
    let before = cpu();
    let (typical_2, _) = load.run(100, orders).await;
    let cpu_typical_2 = per_order(before, cpu(), orders);
    wait_accepted(&receiver, 2 * expected + orders).await;
    for hook in &hooks {
        api.delete_hook(hook).await.expect(204);
    }
    let before = cpu();
    let (none_2, _) = load.run(1, orders).await;
    let cpu_none_2 = per_order(before, cpu(), orders);
    let (none, cpu_none) = mean_of_legs((none_1, cpu_none_1), (none_2, cpu_none_2));
    let (typical, cpu_typical) =
        mean_of_legs((typical_1, cpu_typical_1), (typical_2, cpu_typical_2));
    let last = accepted.iter().map(|d| d.received).max().unwrap();
    let placed = load.placed_at.lock().unwrap();
    let mut latency = Histogram::<u64>::new(3).unwrap();
    for d in &accepted {
        let id = d.body["data"]["id"].as_str().unwrap();
        if let Some(at) = placed.get(id) {
            latency
                .record(d.received.saturating_duration_since(*at).as_micros() as u64)
                .unwrap();
        }
    }

    report.add(
        s,
        &format!("CreateOrder 64 clients, {HOOKS} hooks, 1 order in 100 a hooked customer's"),
        typical,
        "orders/s",
        Some(("no hook, same run", none)),
        "≥ 0.9×",
    );
    report.add(
        s,
        "CPU per order, all processes but the load generator, 1 order in 100 hooked",
        cpu_typical[..3].iter().sum(),
        "µs",
        Some(("no hook", cpu_none[..3].iter().sum())),
        "",
    );
    report.add(
        s,
        &format!("CreateOrder 64 clients, {HOOKS} hooks (one delivery per order)"),
        hooked,
        "orders/s",
        Some(("no hook, same run", none)),
        "≥ 0.9×",
    );
    report.add(
        s,
        "delivery backlog left at the load's end, drained after",
        drain,
        "s",
        None,
        "≤ 5 s",
    );
    report.add(
        s,
        "delivery rate (load start to last receipt)",
        orders as f64 / last.duration_since(started).as_secs_f64(),
        "deliveries/s",
        None,
        "",
    );
    let names = [
        "order-svc",
        "product-svc",
        "nats-server",
        "load generator + receiver",
    ];
    for (i, name) in names.iter().enumerate() {
        report.add(
            s,
            &format!("CPU per order with {HOOKS} hooks (delivery included): {name}"),
            cpu_hooked[i],
            "µs",
            Some(("no hook", cpu_none[i])),
            "",
        );
    }
    for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
        let v = latency.value_at_quantile(q) as f64 / 1000.0;
        report.add(
            s,
            &format!("delivery latency, order's 201 → receipt, {label}"),
            v,
            "ms",
            None,
            "",
        );
    }
    drop((order, product));
}

/// Waits until the receiver has accepted `count` deliveries in all (at most two minutes).
async fn wait_accepted(receiver: &Receiver, count: usize) {
    let waited = tokio::time::timeout(Duration::from_secs(120), async {
        while receiver.accepted().len() < count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "every delivery arrived");
}

/// CPU µs per order of each process between two readings.
/// Two legs of the same size as one: their rate over their summed time, their mean CPU.
fn mean_of_legs(a: (f64, [f64; 4]), b: (f64, [f64; 4])) -> (f64, [f64; 4]) {
    let rate = 2.0 / (1.0 / a.0 + 1.0 / b.0);
    (rate, std::array::from_fn(|i| (a.1[i] + b.1[i]) / 2.0))
}

fn per_order(before: [f64; 4], after: [f64; 4], orders: usize) -> [f64; 4] {
    std::array::from_fn(|i| (after[i] - before[i]) * 1e6 / orders as f64)
}

/// The create-order load: a client, the instance, the products, the hooked customers, and when
/// each order was answered 201.
struct Load {
    client: reqwest::Client,
    http: String,
    ids: Arc<Vec<String>>,
    customers: Arc<Vec<Uuid>>,
    placed_at: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Load {
    /// `total` orders from 64 clients, every `hooked_every`-th for one of the hooked customers
    /// (the others for new customers); records each order's 201 time.
    async fn run(&self, hooked_every: usize, total: usize) -> (f64, Histogram<u64>) {
        let (c, http, ids, customers, placed_at) = (
            self.client.clone(),
            self.http.clone(),
            self.ids.clone(),
            self.customers.clone(),
            self.placed_at.clone(),
        );
        load(64, total, move |i| {
            let (c, http, placed_at) = (c.clone(), http.clone(), placed_at.clone());
            let customer = match i % hooked_every {
                0 => customers[(i / hooked_every) % customers.len()],
                _ => Uuid::new_v4(),
            };
            let body = json!({"customerId": customer, "customerEmail": "hooks@example.com",
                "items": [{"productId": ids[(i * 7919) % ids.len()], "quantity": 1}]});
            async move {
                let Ok(r) = c
                    .post(format!("{http}/api/orders"))
                    .json(&body)
                    .send()
                    .await
                else {
                    return false;
                };
                if r.status() != 201 {
                    return false;
                }
                let at = Instant::now();
                let order: Value = r.json().await.unwrap_or_default();
                if let Some(id) = order["id"].as_str() {
                    placed_at.lock().unwrap().insert(id.to_owned(), at);
                }
                true
            }
        })
        .await
    }
}
