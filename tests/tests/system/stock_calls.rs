//! The stock call's machinery, each part shown to work where it is wired: a lost reply retried
//! inside the call, the breaker sparing a dead product-svc, the correlation id carried from HTTP
//! through gRPC to ORDERS, and the structured log line of every call on both sides.
use serde_json::Value;
use tests::{
    FaultyProxy, NatsServer, OrderApi, OrderService, ProductApi, ProductService, ServiceProcess,
    WAIT, order_body, scratch, wait_for,
};
use uuid::Uuid;

use crate::{js, last_message};

/// A gauge or counter from a service's `/metrics` (0 when absent).
async fn metric(http: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// product-svc in-process, order-svc in-process calling it through a `FaultyProxy`.
async fn behind_proxy(
    nats: &NatsServer,
    dir: &std::path::Path,
    tune: impl FnOnce(&mut order_svc::Config),
) -> (ProductService, FaultyProxy, OrderService) {
    let product = ProductService::start(&nats.url(), &dir.join("product")).await;
    let proxy =
        FaultyProxy::start(product.grpc.trim_start_matches("http://").parse().unwrap()).await;
    let mut config = order_svc::Config::for_tests(dir.join("order"), &nats.url(), &proxy.url());
    tune(&mut config);
    let order = OrderService::start_with(config).await;
    (product, proxy, order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_is_retried_inside_the_call_and_the_order_is_confirmed_once() {
    let nats = NatsServer::start();
    let dir = scratch();
    let (product, proxy, order) = behind_proxy(&nats, dir.path(), |_| {}).await;
    let (products, orders) = (product.api(), order.api());
    let id = products.create_product("Lossy", "2.00", 10).await;
    orders.wait_snapshot_version(&id, 1).await;
    proxy.drop_replies_on_next_connections(1);
    proxy.cut_all();
    wait_for("old connections to close", WAIT, || async {
        (proxy.open_connections() == 0).then_some(())
    })
    .await;

    // The first attempt reaches product-svc and its reply is lost; only a retry inside the
    // request can answer 201 (without it the order would be 202 Pending, settled later).
    let placed = orders
        .place(&order_body(Uuid::new_v4(), &[(&id, 3)]))
        .await
        .expect(201);
    assert_eq!(placed["status"], "Confirmed");
    assert_eq!(proxy.injected().0, 1, "the first attempt's reply was lost");
    assert!(
        proxy.connections() >= 2,
        "the retry came on a new connection"
    );
    assert_eq!(
        products.field(&id, "reservedQuantity").await,
        3,
        "reserved exactly once"
    );
    order.stop().await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_the_breaker_opens_orders_are_taken_pending_without_calling_product_svc() {
    let nats = NatsServer::start();
    let dir = scratch();
    let (product, proxy, order) = behind_proxy(&nats, dir.path(), |c| {
        c.stock_retries = 0;
        c.breaker_threshold = 2;
        c.breaker_cooldown_ms = 600_000;
    })
    .await;
    let orders = order.api();
    let id = product.api().create_product("Guarded", "2.00", 10).await;
    orders.wait_snapshot_version(&id, 1).await;
    proxy.go_down().await;

    // Each refused call counts; the threshold's worth of them opens the breaker.
    wait_for("the breaker to open", WAIT, || async {
        let answer = orders.place(&order_body(Uuid::new_v4(), &[(&id, 1)])).await;
        assert_eq!(answer.status, 202, "{}", answer.body);
        (metric(&order.http, "eshop_stock_breaker_open").await == 1.0).then_some(())
    })
    .await;
    let calls = proxy.attempts();
    for _ in 0..5 {
        let pending = orders
            .place(&order_body(Uuid::new_v4(), &[(&id, 1)]))
            .await
            .expect(202);
        assert_eq!(pending["status"], "Pending");
    }
    assert_eq!(
        proxy.attempts(),
        calls,
        "no call reached product-svc while the breaker was open"
    );
    assert_eq!(metric(&order.http, "eshop_stock_breaker_open").await, 1.0);
    assert_eq!(
        orders.ready().await.body["figures"]["stockCircuitOpen"],
        true
    );
    order.stop().await;
    product.stop().await;
}

/// Two product-svc endpoints (two proxies in front of one product-svc, so each can die on its
/// own): a dead one costs a healthy one nothing, and a call fails over within itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_endpoints_a_dead_one_never_stops_orders_and_calls_fail_over_at_once() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let upstream: std::net::SocketAddr =
        product.grpc.trim_start_matches("http://").parse().unwrap();
    let (a, b) = (
        FaultyProxy::start(upstream).await,
        FaultyProxy::start(upstream).await,
    );
    let mut config = order_svc::Config::for_tests(
        dir.path().join("order"),
        &nats.url(),
        &format!("{},{}", a.url(), b.url()),
    );
    // One retry and a threshold of 2: with one breaker shared by both endpoints, the dead one's
    // failures would open it for the healthy one within two orders and they would be 202.
    config.stock_retries = 1;
    config.breaker_threshold = 2;
    config.breaker_cooldown_ms = 600_000;
    let order = OrderService::start_with(config).await;
    let (products, orders) = (product.api(), order.api());
    let id = products.create_product("Twice served", "2.00", 100).await;
    orders.wait_snapshot_version(&id, 1).await;

    a.go_down().await;
    for _ in 0..6 {
        let placed = orders
            .place(&order_body(Uuid::new_v4(), &[(&id, 1)]))
            .await
            .expect(201);
        assert_eq!(placed["status"], "Confirmed");
    }
    let ready = orders.ready().await.body;
    assert_eq!(ready["figures"]["stockCircuitOpen"], false, "{ready}");
    let endpoints = ready["figures"]["stockEndpoints"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(endpoints.len(), 2, "{ready}");
    assert_eq!(
        endpoints[1]["breakerOpen"], false,
        "the healthy endpoint's breaker: {ready}"
    );

    // The endpoint in use dies; the next call fails over inside itself to the other one (whose
    // breaker is still closed: it failed once, under the threshold of 2).
    a.set_down(false);
    b.go_down().await;
    let placed = orders
        .place(&order_body(Uuid::new_v4(), &[(&id, 1)]))
        .await
        .expect(201);
    assert_eq!(placed["status"], "Confirmed");
    assert_eq!(
        products.field(&id, "reservedQuantity").await,
        7,
        "each order reserved once"
    );
    order.stop().await;
    product.stop().await;
}

/// The first JSON log line that has every `(field, value)` pair among its event fields.
fn log_line(log: &str, wanted: &[(&str, &str)]) -> Option<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|line| {
            wanted
                .iter()
                .all(|(k, v)| line["fields"][*k].as_str() == Some(*v))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_correlation_id_crosses_http_grpc_and_orders_and_each_call_is_logged_on_both_sides() {
    let nats = NatsServer::start();
    let dir = scratch();
    let json_debug = [
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "info,order_svc=debug,product_svc=debug"),
    ];
    let (product, grpc) = ServiceProcess::product_with(
        &nats.url(),
        &dir.path().join("product"),
        dir.path(),
        &json_debug,
    );
    let order = ServiceProcess::order(
        &nats.url(),
        &grpc,
        &dir.path().join("order"),
        dir.path(),
        &json_debug,
    );
    let id = ProductApi::new(&product.http)
        .create_product("Traced", "2.00", 10)
        .await;
    let orders = OrderApi::new(&order.http);
    orders.wait_snapshot_version(&id, 1).await;
    let cid = "till-7-sale-0042";
    let request = orders
        .http()
        .request(reqwest::Method::POST, "/api/orders")
        .header("X-Correlation-Id", cid)
        .json(&order_body(Uuid::new_v4(), &[(&id, 2)]));
    let placed = orders.http().send(request).await;
    assert_eq!(placed.header("x-correlation-id"), Some(cid));
    let order_id = placed.expect(201)["id"].as_str().unwrap().to_owned();

    // Where it lands: the order's message on ORDERS carries it ...
    let js = js(&nats.url()).await;
    let (headers, state) = last_message(&js, "ORDERS", &format!("eshop.orders.{order_id}"))
        .await
        .expect("the order on ORDERS");
    assert_eq!(state["status"], "Confirmed");
    assert_eq!(
        headers
            .get(shared::events::HEADER_CORRELATION_ID)
            .map(|v| v.as_str()),
        Some(cid)
    );
    // ... and product-svc's ReserveStock handler saw it (its own log line, inside the handler).
    let handled = wait_for("product-svc's handler line", WAIT, || async {
        log_line(
            &product.log_text(),
            &[("message", "Stock reserved."), ("order_id", &order_id)],
        )
    })
    .await;
    assert_eq!(handled["fields"]["correlation_id"], cid, "{handled}");

    // Every call is logged once per side with method, code, micros and correlation id.
    let server = wait_for("product-svc's call line", WAIT, || async {
        log_line(
            &product.log_text(),
            &[("message", "gRPC call handled."), ("correlation_id", cid)],
        )
    })
    .await;
    assert_eq!(
        server["fields"]["method"],
        "/eshop.product.v1.ProductService/ReserveStock"
    );
    assert_eq!(server["fields"]["code"], "Ok");
    assert!(server["fields"]["micros"].is_u64(), "{server}");
    let client = wait_for("order-svc's call line", WAIT, || async {
        log_line(
            &order.log_text(),
            &[("message", "Stock call done."), ("correlation_id", cid)],
        )
    })
    .await;
    assert_eq!(client["fields"]["method"], "ReserveStock");
    assert_eq!(client["fields"]["code"], "Ok");
    assert!(client["fields"]["micros"].is_u64(), "{client}");
}
