//! Scenario 7: an edge site across a WAN (the proxy adds 10 ms each way on the leaf link and in
//! front of the hub's gRPC). CreateOrder at the edge in snapshot mode (one WAN round trip:
//! ReserveStock) against `--catalog grpc` (two: GetProducts, then ReserveStock), and the time
//! from an uplink's return to "every order taken during the outage settled and the mirror caught
//! up".
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tests::{FaultyProxy, ServiceProcess, edge::EdgeNats, wait_for};
use uuid::Uuid;

use crate::{
    Path, Report, Sizes, bench_client, create_orders, env_or, http_ready, latency_rows,
    seed_catalog,
};

const WAN: Duration = Duration::from_millis(10);

/// The edge site under test: hub and site nats-servers joined by a slow link, the hub's
/// product-svc behind a slow gRPC proxy, and two edge order-svc (snapshot and grpc catalog).
struct Site {
    edge: EdgeNats,
    wan: FaultyProxy,
    product: ServiceProcess,
    snapshot: ServiceProcess,
    grpc_mode: ServiceProcess,
    client: reqwest::Client,
    ids: Arc<Vec<String>>,
}

pub async fn run(
    report: &mut Report,
    dir: &std::path::Path,
    orders_1: usize,
    orders_16: usize,
    outage_orders: usize,
    outage: Duration,
) {
    let site = Site::start(dir).await;
    wan_rates(report, &site, orders_1, orders_16).await;
    outage_and_restore(report, &site, outage_orders, outage).await;
}

impl Site {
    async fn start(dir: &std::path::Path) -> Self {
        let edge = EdgeNats::start("edge1").await;
        let (product, grpc) = ServiceProcess::product_with(
            &edge.hub.url(),
            &dir.join("edge-product"),
            dir,
            &[("RUST_LOG", "warn")],
        );
        let grpc_addr = grpc.trim_start_matches("http://").parse().unwrap();
        let wan = FaultyProxy::start(grpc_addr).await;
        wan.set_latency(WAN);
        edge.link.set_latency(WAN);
        edge.link.cut_all(); // the leaf reconnects through the now-slow link
        let instance = |name: &str, extra: &[(&str, &str)]| {
            let mut env = vec![
                ("RUST_LOG", "warn"),
                ("ORDER_INSTANCE_ID", name),
                ("ORDER_CATALOG_DOMAIN", "hub"),
                // A WAN deadline: three round trips of slack per attempt.
                ("ORDER_STOCK_ATTEMPT_TIMEOUT_MS", "1500"),
            ];
            env.extend_from_slice(extra);
            ServiceProcess::order(
                &edge.site.url(),
                &wan.url(),
                &dir.join(format!("edge-order-{name}")),
                dir,
                &env,
            )
        };
        let snapshot = instance("snap", &[("ORDER_SITE", "edge1")]);
        let grpc_mode = instance(
            "grpc",
            &[
                ("ORDER_CATALOG", "grpc"),
                ("ORDER_STREAM", "ORDERS_EDGEG"),
                ("ORDER_SUBJECT_PREFIX", "eshop.edgeg.orders"),
            ],
        );
        let client = bench_client(64);
        let ids = Arc::new(seed_catalog(&client, &product.http, 50).await);
        for o in [&snapshot, &grpc_mode] {
            http_ready(&o.http, Duration::from_secs(120)).await;
            let last = ids.last().unwrap().clone();
            wait_for(
                "the catalog in the edge snapshot",
                Duration::from_secs(120),
                || async {
                    let url = format!("{}/api/snapshot/products/{last}", o.http);
                    (client.get(url).send().await.ok()?.status() == 200).then_some(())
                },
            )
            .await;
        }
        Self {
            edge,
            wan,
            product,
            snapshot,
            grpc_mode,
            client,
            ids,
        }
    }
}

/// CreateOrder at the edge over the WAN: snapshot (one round trip) against grpc (two).
async fn wan_rates(report: &mut Report, site: &Site, orders_1: usize, orders_16: usize) {
    let mut p50 = std::collections::HashMap::new();
    for (clients, total) in [(1, orders_1), (16, orders_16)] {
        for (mode, http) in [
            ("snapshot", &site.snapshot.http),
            ("grpc", &site.grpc_mode.http),
        ] {
            let https = std::slice::from_ref(http);
            let (rate, hist) = create_orders(&site.client, https, &site.ids, clients, total).await;
            let name = format!("{mode} catalog over a 10 ms WAN, {clients} clients");
            report.add("7 edge", &name, rate, "orders/s", None, "");
            let name = format!("{mode}, WAN, {clients} clients");
            latency_rows(report, "7 edge", &name, &hist, None);
            p50.insert((mode, clients), hist.value_at_quantile(0.5) as f64);
        }
        report.add(
            "7 edge",
            &format!("snapshot / grpc p50 over the WAN, {clients} clients"),
            p50[&("snapshot", clients)] / p50[&("grpc", clients)],
            "×",
            None,
            "≤ 0.6×",
        );
    }
}

/// An outage: orders paced over `outage` at the edge while the hub reprices; then the link
/// returns and the clock runs until every order is settled and the mirror has the new price.
async fn outage_and_restore(
    report: &mut Report,
    site: &Site,
    outage_orders: usize,
    outage: Duration,
) {
    let Site {
        edge,
        wan,
        product,
        snapshot,
        client,
        ids,
        ..
    } = site;
    edge.link.go_down().await;
    wan.go_down().await;
    let reprice = ids[0].clone();
    let pace = outage / outage_orders.max(1) as u32;
    for i in 0..outage_orders {
        let body = json!({"customerId": Uuid::new_v4(), "customerEmail": "outage@example.com",
                          "items": [{"productId": ids[i % ids.len()], "quantity": 1}]});
        let r = client
            .post(format!("{}/api/orders", snapshot.http))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "accepted at the edge during the outage");
        if i == outage_orders / 2 {
            let body = json!({"name": "P00000", "description": "", "price": "19.99", "category": "Bench", "lowStockThreshold": 0});
            let r = client
                .put(format!("{}/api/products/{reprice}", product.http))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
        // Pacing the load over the outage, not waiting for a condition.
        tokio::time::sleep(pace).await;
    }
    edge.link.set_down(false);
    wan.set_down(false);
    let restored = Instant::now();
    wait_for(
        "every outage order settled and the mirror caught up",
        Duration::from_secs(600),
        || async {
            let ready = get_json(client, &format!("{}/health/ready", snapshot.http)).await?;
            let pending = ready["figures"]["pendingOrders"].as_u64()?;
            let url = format!("{}/api/snapshot/products/{reprice}", snapshot.http);
            let row = get_json(client, &url).await?;
            (pending == 0 && row["price"] == "19.99").then_some(())
        },
    )
    .await;
    report.add(
        "7 edge",
        &format!("link restore → {outage_orders} outage orders settled + mirror caught up ({outage:?} outage)"),
        restored.elapsed().as_secs_f64(),
        "s",
        None,
        "",
    );
}

/// A JSON body, or `None` if the request or the decoding failed.
async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    client.get(url).send().await.ok()?.json().await.ok()
}

/// 7. An edge site across a 10 ms WAN.
pub(crate) async fn edge_site(report: &mut Report, dir: &Path, s: Sizes) {
    let Sizes {
        quick,
        orders_1,
        orders_64,
        ..
    } = s;
    let outage = Duration::from_secs(env_or("BENCH_EDGE_OUTAGE_SECS", quick, 30, 10) as u64);
    let outage_orders = env_or("BENCH_EDGE_OUTAGE_ORDERS", quick, 1_000, 200);
    run(
        report,
        dir,
        orders_1 / 4,
        orders_64 / 8,
        outage_orders,
        outage,
    )
    .await;
}
