//! Scenarios 3 and 4 on one system: the outbox relay end to end, and CreateOrder (snapshot vs
//! grpc catalog, one and two instances, `sync_interval: always`) against a raw tonic round trip.
use std::{
    collections::HashMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use async_nats::jetstream;
use hdrhistogram::Histogram;
use serde_json::json;
use tests::{NatsServer, ServiceProcess, wait_for};
use uuid::Uuid;

use crate::*;

/// Scenarios 3 (outbox relay) and 4 (CreateOrder) on one system: nats-server, product-svc with
/// a catalog of a thousand products. Returns CreateOrder's (64-client, 1-client) rates when it ran.
pub(crate) async fn relay_and_orders(
    report: &mut Report,
    dir: &Path,
    s: Sizes,
    relay: bool,
    orders: bool,
) -> Option<(f64, f64)> {
    let nats = NatsServer::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let (product, grpc) = ServiceProcess::product_with(
        &nats.url(),
        &dir.join("product"),
        dir,
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
    if relay {
        outbox_relay(report, &nats, &js, &client, &product.http, &ids, s.updates).await;
    }
    if !orders {
        return None;
    }
    Some(create_order(report, dir, s, &nats, &grpc, &product, &client, &ids).await)
}

/// 3. HTTP updates through the outbox relay, end to end, next to a raw pipelined publish.
pub(crate) async fn outbox_relay(
    report: &mut Report,
    nats: &NatsServer,
    js: &jetstream::Context,
    client: &reqwest::Client,
    product_http: &str,
    ids: &Arc<Vec<String>>,
    updates: usize,
) {
    let catalog = ids.len();
    let (c, http, ids2) = (client.clone(), product_http.to_owned(), ids.clone());
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
            let info = tests::stream_info(js, "PRODUCTS").await?;
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

/// Scenario 4, CreateOrder: snapshot vs grpc catalog, 1 and 64 clients, next to a raw tonic
/// round-trip; then two instances and the cross-instance listing lag. Returns the (64, 1)-client rates.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn create_order(
    report: &mut Report,
    dir: &Path,
    s: Sizes,
    nats: &NatsServer,
    grpc: &str,
    product: &ServiceProcess,
    client: &reqwest::Client,
    ids: &Arc<Vec<String>>,
) -> (f64, f64) {
    let Sizes {
        orders_1,
        orders_64,
        lag_orders,
        ..
    } = s;
    let catalog = ids.len();
    // 4. CreateOrder: snapshot vs grpc catalog, 1 and 64 clients, next to a raw tonic round-trip.
    let snapshot = ServiceProcess::order(
        &nats.url(),
        grpc,
        &dir.join("order-snap"),
        dir,
        &[("RUST_LOG", "warn"), ("ORDER_INSTANCE_ID", "snap")],
    );
    let grpc_mode = ServiceProcess::order(
        &nats.url(),
        grpc,
        &dir.join("order-grpc"),
        dir,
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
            let (rate, hist) = create_orders(client, &[http], ids, clients, leg).await;
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
                report,
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
    let default_sync = (s64, find("snapshot", 1).0);

    // Two instances on the same box, round-robin, and the listing lag between them.
    let second = ServiceProcess::order(
        &nats.url(),
        grpc,
        &dir.join("order-snap-b"),
        dir,
        &[("RUST_LOG", "warn"), ("ORDER_INSTANCE_ID", "snap-b")],
    );
    http_ready(&second.http, Duration::from_secs(60)).await;
    let both = [snapshot.http.clone(), second.http.clone()];
    let (rate2, hist2) = create_orders(client, &both, ids, 64, orders_64 / 2).await;
    report.add(
        "4 create order",
        "two instances (round-robin), 64 clients",
        rate2,
        "orders/s",
        Some(("one instance, same run", s64)),
        "",
    );
    latency_rows(
        report,
        "4 create order",
        "two instances, 64 clients",
        &hist2,
        None,
    );
    let lag = listing_lag(client, &snapshot.http, &second.http, ids, lag_orders).await;
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
        dir_mib(&dir.join("product")),
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
    default_sync
}

/// 4b. CreateOrder with JetStream fsyncing every write (nats/single.conf's setting).
pub(crate) async fn durable(
    report: &mut Report,
    dir: &Path,
    s: Sizes,
    default_sync: Option<(f64, f64)>,
) {
    let Sizes {
        orders_1,
        orders_64,
        ..
    } = s;
    let ((r1, h1), (r64, h64)) = create_order_sync_always(dir, orders_1, orders_64).await;
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
    latency_rows(report, "4 create order", "sync always, 1 client", &h1, None);
    latency_rows(
        report,
        "4 create order",
        "sync always, 64 clients",
        &h64,
        None,
    );
}
