//! Scenarios 3 and 4 on one system: catalog writes end to end, then CreateOrder (`create.rs`);
//! and 4b, CreateOrder with `sync_interval: always`.
use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use async_nats::jetstream;
use serde_json::json;
use tests::{NatsServer, ServiceProcess, wait_for};
use uuid::Uuid;

use crate::*;

/// Scenarios 3 (catalog writes) and 4 (CreateOrder) on one system: nats-server, product-svc with
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
        "≤ 8 MiB",
    );
    let client = bench_client(128);
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

/// 3. HTTP updates (a CAS publish per product each), end to end, next to a raw pipelined publish.
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
        "every update in PRODUCTS",
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
        "3 catalog writes",
        &format!("HTTP updates, 64 clients ({updates})"),
        http_rate,
        "req/s",
        None,
        "",
    );
    report.add(
        "3 catalog writes",
        "HTTP p99 (update, in PRODUCTS)",
        hist.value_at_quantile(0.99) as f64,
        "µs",
        None,
        "",
    );
    report.add(
        "3 catalog writes",
        "updates 2xx → publish ack, end to end",
        e2e,
        "msg/s",
        Some(("raw pipelined publish", raw_rate)),
        "relay keeps up with HTTP",
    );
    report.add(
        "3 catalog writes",
        "end-to-end / HTTP rate",
        e2e / http_rate,
        "×",
        None,
        "≈ 1.0 (relay not the bottleneck)",
    );
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
    let (((r1, h1), (r64, h64)), (floor1, floor64)) =
        create_order_sync_always(dir, orders_1, orders_64).await;
    floor_rows(report, " (sync always)", &floor1, &floor64);
    report.add(
        "4 create order",
        "sync_interval: always, 64 clients, next to its floor",
        r64,
        "orders/s",
        Some(("floor, sync always, 64 clients", floor64.rate)),
        "≥ 1,500/s",
    );
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

/// What `sync_interval: always` costs on the 3-node cluster (R3 streams), as `nats/cluster/`
/// now runs: CreateOrder at 1 and 64 clients beside the default interval, same run.
pub(crate) async fn cluster(report: &mut Report, dir: &Path, s: Sizes) {
    let (orders_1, orders_64) = (s.orders_1 / 2, s.orders_64 / 4);
    let ((l1, _), (l64, _)) =
        create_order_on_cluster("test.conf", "r3-lazy", dir, orders_1, orders_64).await;
    let ((a1, h1), (a64, h64)) = create_order_on_cluster(
        "test-sync-always.conf",
        "r3-always",
        dir,
        orders_1,
        orders_64,
    )
    .await;
    for (clients, always, lazy) in [("1 client", a1, l1), ("64 clients", a64, l64)] {
        report.add(
            "4 create order",
            &format!("R3 cluster, sync_interval: always, {clients}"),
            always,
            "orders/s",
            Some(("R3 cluster, default sync, same run", lazy)),
            "",
        );
    }
    latency_rows(
        report,
        "4 create order",
        "R3 sync always, 1 client",
        &h1,
        None,
    );
    latency_rows(
        report,
        "4 create order",
        "R3 sync always, 64 clients",
        &h64,
        None,
    );
}
