//! `/metrics` on both services: scraped before and after known traffic, the counters move by
//! exactly what the traffic did, and the state gauges tell the truth once it has settled.
use std::collections::HashMap;

use tests::{NatsServer, OrderApi, OrderService, ProductService, scratch, wait_for};
use uuid::Uuid;

use crate::WAIT;

/// One scrape: `name{labels}` → value. Comments and the EOF marker are skipped.
async fn scrape(base: &str) -> Samples {
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200, "/metrics is open");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "Prometheus text format"
    );
    let text = response.text().await.unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').expect("a sample line");
            (key.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

/// One scrape's samples.
type Samples = HashMap<String, f64>;

fn get(samples: &Samples, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

/// How much `key` moved between two scrapes.
fn moved(before: &Samples, after: &Samples, key: &str) -> f64 {
    get(after, key) - get(before, key)
}

const RESERVE: &str = "/eshop.product.v1.ProductService/ReserveStock";

/// `eshop_http_requests_total` of one route and status.
fn http(method: &str, route: &str, status: u16) -> String {
    format!(
        "eshop_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
    )
}

/// One product created, 3 orders placed (3 reservations), one 401, one 404, and reads past the
/// product API's burst of 3. Returns how many reads were refused with 429.
async fn known_traffic(product: &ProductService, order: &OrderService) -> f64 {
    let id = product.api().create_product("Metered", "2.50", 100).await;
    let orders = order.api();
    orders.wait_snapshot_version(&id, 1).await;
    for _ in 0..3 {
        let body = tests::order_body(Uuid::new_v4(), &[(&id, 2)]);
        orders.place(&body).await.expect(201);
    }
    let anonymous = OrderApi::with_client(&order.http, reqwest::Client::new());
    assert_eq!(anonymous.list("").await.status, 401);
    assert_eq!(orders.get(&Uuid::new_v4().to_string()).await.status, 404);
    // Past the product API's burst: some of these are refused with 429.
    let mut refused = 0.0;
    for _ in 0..6 {
        if product.api().get(&id).await.status == 429 {
            refused += 1.0;
        }
    }
    assert!(refused >= 1.0, "the burst of 3 was exceeded");
    refused
}

/// product-svc's counters moved by exactly the known traffic.
fn product_counters_moved(p0: &Samples, p1: &Samples, refused: f64) {
    assert_eq!(moved(p0, p1, &http("POST", "/api/products", 201)), 1.0);
    assert_eq!(
        moved(p0, p1, &http("GET", "/api/products/{id}", 429)),
        refused
    );
    assert_eq!(
        moved(p0, p1, "eshop_http_rate_limited_total"),
        refused,
        "every 429 is counted"
    );
    let reserve_ok = format!("eshop_grpc_server_calls_total{{method=\"{RESERVE}\",code=\"Ok\"}}");
    assert_eq!(moved(p0, p1, &reserve_ok), 3.0, "server side");
    let reserve_latency =
        format!("eshop_grpc_server_call_duration_seconds_count{{method=\"{RESERVE}\"}}");
    assert_eq!(moved(p0, p1, &reserve_latency), 3.0);
    assert_eq!(
        get(p1, "eshop_stock_writer"),
        1.0,
        "the one instance writes stock"
    );
    assert!(get(p1, "eshop_sled_size_bytes") > 0.0);
    assert_eq!(get(p1, "eshop_products"), 1.0);
}

/// order-svc's counters moved by exactly the known traffic.
fn order_counters_moved(o0: &Samples, o1: &Samples) {
    assert_eq!(moved(o0, o1, &http("POST", "/api/orders", 201)), 3.0);
    assert_eq!(moved(o0, o1, &http("GET", "/api/orders", 401)), 1.0);
    assert_eq!(moved(o0, o1, &http("GET", "/api/orders/{id}", 404)), 1.0);
    let reserve_client =
        format!("eshop_grpc_client_calls_total{{method=\"{RESERVE}\",code=\"Ok\"}}");
    assert_eq!(moved(o0, o1, &reserve_client), 3.0, "client side");
    assert_eq!(
        moved(
            o0,
            o1,
            &format!("eshop_grpc_client_retries_total{{method=\"{RESERVE}\"}}")
        ),
        0.0,
        "no retries against a healthy product-svc"
    );
    assert!(
        moved(
            o0,
            o1,
            "eshop_projection_applied_total{projection=\"products\"}"
        ) >= 1.0
    );
    assert_eq!(get(o1, "eshop_stock_breaker_open"), 0.0);
    assert_eq!(get(o1, "eshop_orders_pending"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_with_traffic_and_state_gauges_settle() {
    let nats = NatsServer::start();
    let dir = scratch();
    let mut pc = product_svc::Config::for_tests(dir.path().join("product"), &nats.url());
    // A small budget on product-svc's HTTP API, to see the rate limit counted.
    pc.rate_limit = 1;
    pc.rate_burst = 3;
    let product = ProductService::start_with(pc).await;
    let order = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order")).await;
    let (p0, o0) = (scrape(&product.http).await, scrape(&order.http).await);
    for (samples, service) in [(&p0, "product-svc"), (&o0, "order-svc")] {
        let info = format!(
            "eshop_build_info{{service=\"{service}\",version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(get(samples, &info), 1.0, "{service} build info");
    }

    let refused = known_traffic(&product, &order).await;

    // Counters: exactly what the traffic did.
    let p1 = scrape(&product.http).await;
    let o1 = scrape(&order.http).await;
    product_counters_moved(&p0, &p1, refused);
    order_counters_moved(&o0, &o1);

    // State gauges settle: both projections catch up with their streams.
    wait_for("the views to catch up", WAIT, || async {
        let p = scrape(&product.http).await;
        let o = scrape(&order.http).await;
        let settled = get(&p, "eshop_cache_poison_total") == 0.0
            && get(&o, "eshop_projection_lag{projection=\"products\"}") == 0.0
            && get(&o, "eshop_projection_lag{projection=\"orders\"}") == 0.0
            // Three orders, each one message (confirmed before its first publish).
            && get(&o, "eshop_projection_checkpoint{projection=\"orders\"}") >= 3.0
            && get(&o, "eshop_orders_view_rows") == 3.0;
        settled.then_some(())
    })
    .await;
}
