//! Scenario 10: stock on JetStream. ReserveStock at 1 and 64 in flight, with one product-svc and
//! with a second one following, next to the raw fenced publish loop on the same nats-server (the
//! floor: one ledger message per reservation); a hot product; a cold start on 100k products and
//! 10k open reservations; the failover from a SIGKILL of the writer to the next reservation;
//! ReserveStock on the 3-node cluster.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use async_nats::{HeaderMap, jetstream};
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde_json::json;
use tests::{NatsCluster, NatsServer, ServiceProcess, StockApi, wait_for};
use uuid::Uuid;

use crate::*;

/// Only the 1-in-flight latency of ReserveStock and its floor (`--only stock-1`), for profiling.
pub(crate) async fn stock_one(report: &mut Report, dir: &Path, s: Sizes) {
    let nats = NatsServer::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let raw = raw_fenced(&js, 1, s.orders_1, 1).await;
    let (_p, grpc) = ServiceProcess::product_with(
        &nats.url(),
        &dir.join("stock-1"),
        dir,
        &[("RUST_LOG", "warn")],
    );
    let ids = seed_catalog(&bench_client(1), &_p.http, 100).await;
    let stock = StockApi::connect(&grpc).await;
    let (_, h) = reserves(&stock, &ids, 1, s.orders_1).await;
    report.add(
        "10 stock",
        "ReserveStock p50, 1 in flight",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        "ms",
        Some((
            "raw fenced publish, 1 in flight",
            raw.1.value_at_quantile(0.5) as f64 / 1000.0,
        )),
        "≤ 0.4 ms",
    );
}

pub(crate) async fn stock(report: &mut Report, dir: &Path, s: Sizes) {
    let nats = NatsServer::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let (one, many) = (s.orders_1, s.orders_64);
    let raw_one = raw_fenced(&js, 1, one, 1).await;
    let raw_many = raw_fenced(&js, 64, many, 1).await;
    let env = [("RUST_LOG", "warn")];
    let (mut a, grpc_a) =
        ServiceProcess::product_with(&nats.url(), &dir.join("stock-a"), dir, &env);
    let client = bench_client(64);
    let ids = seed_catalog(&client, &a.http, 100).await;
    let stock = StockApi::connect(&grpc_a).await;
    let (r1, h1) = reserves(&stock, &ids, 1, one).await;
    let (r64, h64) = reserves(&stock, &ids, 64, many).await;
    let label = |n| format!("raw fenced publish, {n} in flight");
    report.add(
        "10 stock",
        "ReserveStock, 1 in flight",
        r1,
        "/s",
        Some((&label(1), raw_one.0)),
        "",
    );
    report.add(
        "10 stock",
        "ReserveStock p50, 1 in flight",
        h1.value_at_quantile(0.5) as f64 / 1000.0,
        "ms",
        Some((&label(1), raw_one.1.value_at_quantile(0.5) as f64 / 1000.0)),
        "≤ 0.4 ms",
    );
    report.add(
        "10 stock",
        "ReserveStock p99, 1 in flight",
        h1.value_at_quantile(0.99) as f64 / 1000.0,
        "ms",
        None,
        "",
    );
    report.add(
        "10 stock",
        "ReserveStock, 64 in flight",
        r64,
        "/s",
        Some((&label(64), raw_many.0)),
        "≥ 5,000/s",
    );
    report.add(
        "10 stock",
        "ReserveStock p50 / p99, 64 in flight",
        h64.value_at_quantile(0.5) as f64 / 1000.0,
        "ms",
        None,
        &format!("p99 {:.2} ms", h64.value_at_quantile(0.99) as f64 / 1000.0),
    );

    // A second instance following the ledger on the same box; calls still go to the writer.
    let (b, grpc_b) = ServiceProcess::product_with(&nats.url(), &dir.join("stock-b"), dir, &env);
    let (r64b, _) = reserves(&stock, &ids, 64, many).await;
    report.add(
        "10 stock",
        "ReserveStock, 64 in flight, a second instance following",
        r64b,
        "/s",
        Some(("one instance", r64)),
        "",
    );
    let hot = vec![ids[0].clone()];
    let (hot64, _) = reserves(&stock, &hot, 64, many).await;
    report.add(
        "10 stock",
        "hot product: 64 in flight on one product (CAS retries: 0, one writer decides)",
        hot64,
        "/s",
        Some(("spread over 100 products", r64b)),
        "",
    );

    // Failover: SIGKILL the writer, time until the other instance reserves.
    a.kill9();
    let killed = Instant::now();
    let other = StockApi::connect(&grpc_b).await;
    wait_for(
        "the other instance to reserve",
        Duration::from_secs(60),
        || async {
            let order = Uuid::now_v7();
            other
                .reserve(order, &[(ids[1].as_str(), 1)])
                .await
                .ok()
                .filter(|r| r.success)
        },
    )
    .await;
    report.add(
        "10 stock",
        "failover: writer SIGKILL → next reservation on the other instance",
        killed.elapsed().as_secs_f64() * 1000.0,
        "ms",
        None,
        "≤ 5 s (lease ttl 2 s)",
    );
    drop(b);
    failover_through_orders(report, dir).await;
    stock_cold_start(report, dir, s).await;
}

/// The failover as order clients see it: one order-svc on both product-svc instances, 8 clients
/// creating orders back to back; from the SIGKILL of the stock writer to the first order sent
/// after it that is answered 201 Confirmed (order-svc's breaker and failover included).
pub(crate) async fn failover_through_orders(report: &mut Report, dir: &Path) {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    };
    let nats = NatsServer::start();
    let env = [("RUST_LOG", "warn")];
    let (a, grpc_a) = ServiceProcess::product_with(&nats.url(), &dir.join("fo-a"), dir, &env);
    let (b, grpc_b) = ServiceProcess::product_with(&nats.url(), &dir.join("fo-b"), dir, &env);
    let client = bench_client(8);
    let ids = Arc::new(seed_catalog(&client, &a.http, 10).await);
    let order = ServiceProcess::order(
        &nats.url(),
        &format!("{grpc_a},{grpc_b}"),
        &dir.join("fo-order"),
        dir,
        &[("RUST_LOG", "warn"), ("ORDER_INSTANCE_ID", "failover")],
    );
    http_ready(&order.http, Duration::from_secs(60)).await;
    // (sent, answered, confirmed, status) of every order.
    type Answers = Mutex<Vec<(Instant, Instant, bool, u16)>>;
    let answers: Arc<Answers> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (client, http, ids) = (client.clone(), order.http.clone(), ids.clone());
            let (answers, stop) = (answers.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    let id = &ids[i % ids.len()];
                    i += 8;
                    let body = json!({"customerId": Uuid::new_v4(), "customerEmail": "bench@example.com",
                        "items": [{"productId": id, "quantity": 1}]});
                    let sent = Instant::now();
                    let (confirmed, status) = match client.post(format!("{http}/api/orders")).json(&body).send().await {
                        Ok(r) if r.status() == 201 => (r.json::<serde_json::Value>().await
                            .is_ok_and(|o| o["status"] == "Confirmed"), 201),
                        Ok(r) => (false, r.status().as_u16()),
                        Err(_) => (false, 0),
                    };
                    answers.lock().unwrap().push((sent, Instant::now(), confirmed, status));
                }
            })
        })
        .collect();
    let confirmed_count =
        |answers: &Answers| answers.lock().unwrap().iter().filter(|a| a.2).count();
    wait_for("steady order load", Duration::from_secs(60), || async {
        (confirmed_count(&answers) >= 500).then_some(())
    })
    .await;
    // Kill whichever instance writes stock.
    let writer_is_a = tests::is_stock_writer(&a.http).await;
    let (mut victim, _other) = if writer_is_a { (a, b) } else { (b, a) };
    victim.kill9();
    let killed = Instant::now();
    let first_after = || {
        answers
            .lock()
            .unwrap()
            .iter()
            .filter(|(sent, _, confirmed, _)| *confirmed && *sent > killed)
            .map(|(_, answered, _, _)| *answered)
            .min()
    };
    let answered = wait_for(
        "an order sent after the kill to be confirmed",
        Duration::from_secs(60),
        || async { first_after() },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let meanwhile: Vec<u16> = answers
        .lock()
        .unwrap()
        .iter()
        .filter(|(sent, _, confirmed, _)| !*confirmed && *sent > killed && *sent < answered)
        .map(|a| a.3)
        .collect();
    let pending = meanwhile.iter().filter(|s| **s == 202).count();
    let other = meanwhile.len() - pending;
    report.add(
        "10 stock",
        &format!(
            "failover through order-svc: writer SIGKILL → first order sent after it answered 201 Confirmed (8 clients; meanwhile {pending} answered 202 Pending, left to the reconciler, {other} otherwise)"
        ),
        answered.duration_since(killed).as_secs_f64() * 1000.0,
        "ms",
        None,
        "≤ 5 s (breaker cooldown included)",
    );
}

/// ReserveStock on the loopback 3-node cluster (`LEDGER` R3), next to the raw fenced publish
/// there (one in flight: a replicated stream takes one write checking the lease at a time).
pub(crate) async fn stock_on_cluster(report: &mut Report, dir: &Path, s: Sizes) {
    let cluster = NatsCluster::start();
    let first = cluster.url().split(',').next().unwrap().to_owned();
    let js = jetstream::new(async_nats::connect(first).await.unwrap());
    wait_for(
        "the cluster's JetStream",
        Duration::from_secs(60),
        || async { js.query_account().await.ok() },
    )
    .await;
    let (one, many) = (s.orders_1 / 2, s.orders_64 / 4);
    let raw = raw_fenced(&js, 1, one, 3).await;
    let env = [("RUST_LOG", "warn"), ("PRODUCT_STREAM_REPLICAS", "3")];
    let (p, grpc) = ServiceProcess::product_with(&cluster.url(), &dir.join("stock-r3"), dir, &env);
    let ids = seed_catalog(&bench_client(8), &p.http, 20).await;
    let stock = StockApi::connect(&grpc).await;
    let (r1, h1) = reserves(&stock, &ids, 1, one).await;
    let (r64, h64) = reserves(&stock, &ids, 64, many).await;
    let label = "raw fenced publish on R3, 1 in flight";
    report.add(
        "10 stock",
        "R3: ReserveStock, 1 in flight",
        r1,
        "/s",
        Some((label, raw.0)),
        "",
    );
    report.add(
        "10 stock",
        "R3: ReserveStock p50, 1 in flight",
        h1.value_at_quantile(0.5) as f64 / 1000.0,
        "ms",
        Some((label, raw.1.value_at_quantile(0.5) as f64 / 1000.0)),
        "",
    );
    report.add(
        "10 stock",
        "R3: ReserveStock, 64 in flight",
        r64,
        "/s",
        Some((label, raw.0)),
        &format!(
            "p99 {:.2} ms; {} calls answered UNAVAILABLE and retried",
            h64.value_at_quantile(0.99) as f64 / 1000.0,
            RETRIED.load(std::sync::atomic::Ordering::Relaxed)
        ),
    );
}

/// `total` reservations of one unit, each a new order, `clients` in flight. Like order-svc, a
/// call answered UNAVAILABLE is sent again with the same order id (counted in `RETRIED`).
async fn reserves(
    stock: &StockApi,
    ids: &[String],
    clients: usize,
    total: usize,
) -> (f64, Histogram<u64>) {
    let (stock, ids) = (stock.clone(), ids.to_vec());
    load(clients, total, move |i| {
        let (stock, id) = (stock.clone(), ids[i % ids.len()].clone());
        async move {
            let order = Uuid::now_v7();
            for _ in 0..100 {
                match stock.reserve(order, &[(id.as_str(), 1)]).await {
                    Ok(r) => return r.success,
                    Err(status) if status.code() == tonic::Code::Unavailable => {
                        if RETRIED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 5 {
                            eprintln!("reserve {order} UNAVAILABLE: {}", status.message());
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(_) => return false,
                }
            }
            false
        }
    })
    .await
}

/// Reserve calls answered UNAVAILABLE and sent again.
static RETRIED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The floor: publishes of a reservation-sized message fenced on a lease subject, `window` in
/// flight, on a stream like `LEDGER`; (msgs/s, latency of each in µs).
async fn raw_fenced(
    js: &jetstream::Context,
    window: usize,
    total: usize,
    replicas: usize,
) -> (f64, Histogram<u64>) {
    let name = format!("RAWLEDGER{window}");
    js.create_or_update_stream(jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("raw{window}.>")],
        max_messages_per_subject: 1,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .unwrap();
    let lease = js
        .publish(format!("raw{window}.lease"), "lease".into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    let body = serde_json::to_vec(
        &json!({"items": [[Uuid::new_v4(), 1]], "status": "Active", "failure": null}),
    )
    .unwrap();
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let started = Instant::now();
    let mut inflight = std::collections::VecDeque::with_capacity(window);
    for _ in 0..total {
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            lease.to_string().as_str(),
        );
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence-Subject",
            format!("raw{window}.lease").as_str(),
        );
        let subject = format!("raw{window}.reservations.{}", Uuid::now_v7());
        let ack = js
            .publish_with_headers(subject, headers, Bytes::from(body.clone()))
            .await
            .unwrap();
        inflight.push_back((Instant::now(), ack));
        if inflight.len() >= window {
            let (t, ack) = inflight.pop_front().unwrap();
            ack.await.unwrap();
            hist.record(t.elapsed().as_micros() as u64).unwrap();
        }
    }
    for (t, ack) in inflight {
        ack.await.unwrap();
        hist.record(t.elapsed().as_micros() as u64).unwrap();
    }
    (total as f64 / started.elapsed().as_secs_f64(), hist)
}

/// product-svc on an empty data dir against 100k products and 10k open reservations.
pub(crate) async fn stock_cold_start(report: &mut Report, dir: &Path, s: Sizes) {
    let products = s.products;
    let open = products / 10;
    let nats = NatsServer::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    fill_products(&js, products, products).await;
    js.create_or_update_stream(shared::streams::ledger(1))
        .await
        .unwrap();
    let id = Uuid::new_v4();
    let messages: Vec<(String, Vec<u8>)> = (0..open)
        .map(|_| {
            let body = json!({"items": [[id, 1]], "status": "Active", "failure": null});
            (
                format!("eshop.ledger.reservations.{}", Uuid::now_v7()),
                serde_json::to_vec(&body).unwrap(),
            )
        })
        .collect();
    publish_raw(&js, messages, 1000).await;
    let started = Instant::now();
    let p = ServiceProcess::product_with(
        &nats.url(),
        &dir.join("stock-cold"),
        dir,
        &[(
            "RUST_LOG",
            &std::env::var("BENCH_COLD_LOG").unwrap_or("warn".into()),
        )],
    )
    .0;
    let ready = started.elapsed();
    report.add(
        "10 stock",
        &format!("cold start, empty data dir: {products} products, {open} open reservations → ready writer"),
        ready.as_secs_f64() * 1000.0,
        "ms",
        None,
        "≤ 2 s",
    );
    report.add(
        "10 stock",
        "product-svc RSS after that cold start",
        rss_mib(p.pid()),
        "MiB",
        None,
        "",
    );
}
