//! order-svc against a real nats-server, real sled and an in-process product-svc: the snapshot
//! projection (cold start, restart, wiped store, poison), read-through, the order flow, outages.
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use tests::{
    NatsServer, OrderService, ProductApi, ProductService, System, WAIT, free_port, order_body,
    scratch, wait_for,
};
use uuid::Uuid;

use crate::{js, last_message, product_config, wait_stream_messages};

/// Creates `n` products, 8 at a time; returns their ids.
async fn create_many(products: &ProductApi, n: usize) -> Vec<String> {
    futures::stream::iter(0..n)
        .map(|i| async move {
            products
                .create_product(&format!("Item {i:05}"), "9.99", 100)
                .await
        })
        .buffered(8)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_replays_the_catalog_and_is_ready_only_after() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    create_many(&product.api(), 1000).await;
    wait_stream_messages(&js(&nats.url()).await, "PRODUCTS", 1000).await;

    let order = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order")).await;
    order.wait_ready(WAIT).await;
    let orders = order.api();
    assert_eq!(
        orders.snapshot_count().await,
        1000,
        "ready means the whole catalog is in the snapshot"
    );
    assert_eq!(orders.ready().await.body["checks"]["snapshot"]["lag"], 0);
    order.stop().await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_snapshot_and_resumes_from_the_checkpoint_and_a_wiped_store_replays_all()
{
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let products = product.api();
    let ids = create_many(&products, 50).await;
    let order_dir = dir.path().join("order");
    // A fixed instance id, so the wiped store below meets its own durable again.
    let config = || {
        let mut config =
            order_svc::Config::for_tests(order_dir.clone(), &nats.url(), &product.grpc);
        config.instance_id = Some("wiped".into());
        config
    };
    let order = OrderService::start_with(config()).await;
    order.wait_ready(WAIT).await;
    let orders = order.api();
    wait_for("50 products in the snapshot", WAIT, || async {
        (orders.snapshot_count().await == 50).then_some(())
    })
    .await;
    order.stop().await;

    // While order-svc is down: 5 updates and 5 new products.
    for id in &ids[..5] {
        let body = json!({"name": "Renamed", "description": "", "price": "1.50", "category": "Tests", "lowStockThreshold": 0});
        products.update(id, &body, None).await.expect(200);
    }
    create_many(&products, 5).await;

    let order = OrderService::start_with(config()).await;
    order.wait_ready(WAIT).await;
    let orders = order.api();
    assert_eq!(orders.snapshot_count().await, 55);
    orders.wait_snapshot_version(&ids[0], 2).await;
    let row = orders.snapshot_product(&ids[0]).await.body;
    assert_eq!(
        (row["name"].as_str(), row["price"].as_str()),
        (Some("Renamed"), Some("1.50"))
    );
    let applied = order
        .projection
        .applied
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (10..55).contains(&applied),
        "resumed from the checkpoint (10 new events, maybe a few redelivered), not a replay: applied {applied}"
    );
    order.stop().await;

    // A wiped data dir replays everything although the durable exists with an advanced ack floor.
    std::fs::remove_dir_all(&order_dir).unwrap();
    let order = OrderService::start_with(config()).await;
    order.wait_ready(WAIT).await;
    assert_eq!(order.api().snapshot_count().await, 55);
    order.api().wait_snapshot_version(&ids[4], 2).await;
    order.stop().await;
    product.stop().await;
}

/// The LSN of sled's newest recovery snapshot in `dir` (`snap.<hex>` files), if any.
fn sled_snapshot_lsn(dir: &std::path::Path) -> Option<u64> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().ok()?;
            u64::from_str_radix(name.strip_prefix("snap.")?, 16).ok()
        })
        .max()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_leaves_sled_a_recovery_snapshot_of_everything_written() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    create_many(&product.api(), 30).await;
    let order_dir = dir.path().join("order");
    let order = OrderService::start(&nats.url(), &product.grpc, &order_dir).await;
    order.wait_ready(WAIT).await;
    assert_eq!(order.api().snapshot_count().await, 30);
    // sled wrote this one when it opened the empty store, before the replay.
    let at_open = sled_snapshot_lsn(&order_dir).unwrap_or(0);
    order.stop().await;
    let at_stop = sled_snapshot_lsn(&order_dir).expect("a snapshot after the stop");
    assert!(
        at_stop > at_open,
        "the stop checkpointed the replay's writes: snapshot LSN {at_stop} > {at_open}"
    );
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_for_a_product_missing_from_the_snapshot_reads_through() {
    let product_nats = NatsServer::start();
    let order_nats = NatsServer::start(); // order-svc never sees product events
    let dir = scratch();
    let product = ProductService::start(&product_nats.url(), &dir.path().join("product")).await;
    let id = product.api().create_product("Fresh", "12.50", 5).await;
    let order =
        OrderService::start(&order_nats.url(), &product.grpc, &dir.path().join("order")).await;
    order.wait_ready(WAIT).await;
    let orders = order.api();
    assert_eq!(orders.snapshot_product(&id).await.status, 404);

    let placed = orders
        .place(&order_body(Uuid::new_v4(), &[(&id, 2)]))
        .await
        .expect(201);
    assert_eq!(placed["status"], "Confirmed");
    assert_eq!(placed["totalAmount"], "25.00");
    assert_eq!(placed["items"][0]["productName"], "Fresh");
    orders.wait_snapshot_version(&id, 1).await;

    let unknown = Uuid::new_v4().to_string();
    let problem = orders
        .place(&order_body(Uuid::new_v4(), &[(&id, 1), (&unknown, 1)]))
        .await
        .problem(422);
    assert_eq!(problem["unknownProductIds"], json!([unknown]));
    order.stop().await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_confirm_reject_cancel_and_list() {
    let system = System::start().await;
    let (products, orders) = (&system.products, &system.orders);
    let a = system.product_in_snapshot("A", "10.00", 5).await;
    let b = system.product_in_snapshot("B", "0.10", 100).await;
    let customer = Uuid::new_v4();

    let placed = orders
        .place(&order_body(customer, &[(&a, 2), (&b, 3), (&a, 1)]))
        .await;
    let location = placed.header("location").map(str::to_owned);
    let confirmed = placed.expect(201);
    assert_eq!(confirmed["status"], "Confirmed");
    assert_eq!(confirmed["totalAmount"], "30.30");
    assert_eq!(
        confirmed["items"].as_array().unwrap().len(),
        2,
        "duplicate product ids are merged"
    );
    let id = confirmed["id"].as_str().unwrap();
    assert_eq!(location, Some(format!("/api/orders/{id}")));
    assert_eq!(products.field(&a, "reservedQuantity").await, 3);

    let rejected = orders
        .place(&order_body(customer, &[(&a, 3), (&b, 1)]))
        .await
        .body;
    assert_eq!(rejected["status"], "Rejected");
    assert_eq!(rejected["failedProductIds"], json!([a]));
    assert!(
        rejected["reason"]
            .as_str()
            .unwrap()
            .contains("insufficient stock")
    );
    assert_eq!(
        products.field(&b, "reservedQuantity").await,
        3,
        "a rejected order holds nothing"
    );

    let cancelled = orders.cancel(id, "changed my mind").await.expect(200);
    assert_eq!(cancelled["status"], "Cancelled");
    assert_eq!(cancelled["reason"], "changed my mind");
    wait_for("stock released", WAIT, || async {
        (products.field(&a, "reservedQuantity").await == 0).then_some(())
    })
    .await;
    // A retried cancel answers the order as it is (the version check on ORDERS below shows it
    // wrote nothing: one cancel, one recorded release).
    let again = orders.cancel(id, "again").await.expect(200);
    assert_eq!(again["status"], "Cancelled");
    assert_eq!(
        again["reason"], "changed my mind",
        "a retry changes nothing"
    );
    let rejected_id = rejected["id"].as_str().unwrap();
    orders.cancel(rejected_id, "x").await.problem(409);

    let page = orders
        .list(&format!("customerId={customer}&pageSize=10"))
        .await
        .expect(200);
    assert_eq!(page["totalCount"], 2);
    assert_eq!(page["items"][0]["id"], rejected["id"], "newest first");
    assert_eq!(page["items"][1]["status"], "Cancelled");
    let other = orders.list(&format!("customerId={}", Uuid::new_v4())).await;
    assert_eq!(other.body["totalCount"], 0);
    assert_eq!(orders.status(id).await, "Cancelled");

    // ORDERS holds every full state of each order; stock was decided before either was
    // published, so each first state is final: the rejected one's one, the confirmed one's
    // three (confirmed, cancelled, its release recorded).
    let js = js(&system.nats.url()).await;
    wait_stream_messages(&js, "ORDERS", 4).await;
    let (headers, cancelled) = wait_for("the release recorded in ORDERS", WAIT, || async {
        last_message(&js, "ORDERS", &format!("eshop.orders.{id}"))
            .await
            .filter(|(_, body)| body["version"] == 3)
    })
    .await;
    assert_eq!(cancelled["eventType"], "OrderStockReleased");
    assert_eq!(cancelled["status"], "Cancelled");
    assert_eq!(cancelled["releaseOwed"], false);
    assert_eq!(
        cancelled["items"].as_array().unwrap().len(),
        2,
        "full state"
    );
    assert!(headers.get("Nats-Msg-Id").is_some());
    // Its history: every state, oldest first, each as GET showed it then, with its event.
    let history = orders.history(id).await.expect(200);
    let states: Vec<(u64, &str, &str)> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let event = s["eventType"].as_str().unwrap();
            (
                s["version"].as_u64().unwrap(),
                event,
                s["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (1, "OrderConfirmed", "Confirmed"),
            (2, "OrderCancelled", "Cancelled"),
            (3, "OrderStockReleased", "Cancelled"),
        ]
    );
    assert_eq!(history["items"][1]["reason"], "changed my mind");
    orders
        .history(&Uuid::new_v4().to_string())
        .await
        .problem(404);
    orders.history("nope").await.problem(404);
    let (status, openapi) = crate::get_json(&format!("{}/openapi.json", system.order.http)).await;
    assert_eq!(status, 200);
    assert!(openapi["paths"]["/api/orders"]["post"].is_object());
    system.stop().await;
}

/// An order stream created before history was kept (one message per order) is raised to keep
/// every state when order-svc starts; the operator's other settings stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_order_stream_is_converged_to_keep_history_and_keeps_its_other_settings() {
    let nats = NatsServer::start();
    let js = js(&nats.url()).await;
    let mut old = shared::streams::orders("ORDERS", "eshop.orders", 1);
    old.max_messages_per_subject = 1;
    old.max_bytes = 1 << 30;
    js.create_stream(old).await.unwrap();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let order = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order")).await;
    let config = wait_for("ORDERS to keep history", WAIT, || async {
        let info = tests::stream_info(&js, "ORDERS").await?;
        (info.config.max_messages_per_subject == shared::streams::ORDER_HISTORY)
            .then_some(info.config)
    })
    .await;
    assert_eq!(config.max_bytes, 1 << 30, "an operator's setting stays");
    order.stop().await;
    product.stop().await;
}

/// An order's ETag is its version; If-Match on cancel and ship changes only that version, and
/// is checked before the state rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etags_and_if_match_guard_cancel_and_ship() {
    let system = System::start().await;
    let orders = &system.orders;
    let p = system.product_in_snapshot("Tagged", "3.00", 10).await;
    let placed = orders.place(&order_body(Uuid::new_v4(), &[(&p, 1)])).await;
    assert_eq!(
        placed.header("etag"),
        Some("\"1\""),
        "Confirmed at once is version 1"
    );
    let id = placed.id();
    let read = orders.get(&id).await;
    assert_eq!(read.header("etag"), Some("\"1\""));

    let stale = orders
        .cancel_if_match(&id, "late", "\"5\"")
        .await
        .problem(412);
    assert_eq!(stale["currentVersion"], 1);
    assert_eq!(
        orders.status(&id).await,
        "Confirmed",
        "a refused If-Match changes nothing"
    );
    let bad = orders.cancel_if_match(&id, "x", "W/2").await.problem(400);
    assert!(bad["errors"]["If-Match"].is_array(), "{bad}");
    let cancelled = orders.cancel_if_match(&id, "now", "W/\"1\"").await;
    assert_eq!(cancelled.header("etag"), Some("\"2\""));
    assert_eq!(cancelled.expect(200)["status"], "Cancelled");
    // Shipping a Cancelled order is a 409, but a stale If-Match is answered first: 412.
    orders.ship_if_match(&id, "\"1\"").await.problem(412);
    orders.ship(&id).await.problem(409);

    let second = orders
        .place(&order_body(Uuid::new_v4(), &[(&p, 1)]))
        .await
        .id();
    orders.ship_if_match(&second, "\"7\"").await.problem(412);
    let shipped = orders.ship_if_match(&second, "*").await.expect(200);
    assert_eq!(shipped["status"], "Shipped");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn product_svc_down_gives_202_pending_then_confirmed_and_cancels_release_after_it_returns() {
    let nats = NatsServer::start();
    let dir = scratch();
    let grpc_port = free_port();
    let product_dir = dir.path().join("product");
    let product =
        ProductService::start_with(product_config(&nats.url(), &product_dir, grpc_port)).await;
    let order = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order")).await;
    let (products, orders) = (product.api(), order.api());
    let p = products.create_product("Outage", "5.00", 10).await;
    orders.wait_snapshot_version(&p, 1).await;
    let before = orders
        .place(&order_body(Uuid::new_v4(), &[(&p, 2)]))
        .await
        .body;
    assert_eq!(before["status"], "Confirmed");
    product.stop().await;

    let pending = orders.place(&order_body(Uuid::new_v4(), &[(&p, 3)])).await;
    assert!(pending.header("location").is_some());
    assert_eq!(
        pending.header("retry-after"),
        Some("2"),
        "a 202 says when to look again"
    );
    let pending = pending.expect(202);
    assert_eq!(pending["status"], "Pending");
    let cancel = orders
        .cancel(before["id"].as_str().unwrap(), "outage")
        .await;
    assert_eq!(cancel.status, 200, "cancel works while product-svc is down");

    let product =
        ProductService::start_with(product_config(&nats.url(), &product_dir, grpc_port)).await;
    let products = product.api(); // a restart keeps the gRPC port, not the HTTP one
    let pending_id = pending["id"].as_str().unwrap();
    wait_for("the pending order to be confirmed", WAIT, || async {
        (orders.get(pending_id).await.body["status"] == "Confirmed").then_some(())
    })
    .await;
    wait_for(
        "the cancelled order's stock to be released",
        WAIT,
        || async { (products.field(&p, "reservedQuantity").await == 3).then_some(()) },
    )
    .await;
    assert_eq!(products.field(&p, "availableQuantity").await, 7);
    order.stop().await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_replays_the_same_order_and_refuses_a_different_body() {
    let system = System::start().await;
    let (products, orders) = (&system.products, &system.orders);
    let p = system.product_in_snapshot("Idem", "2.00", 10).await;
    let body = order_body(Uuid::new_v4(), &[(&p, 2)]);
    let first = orders.place_keyed(&body, "key-123").await.expect(201);
    let second = orders.place_keyed(&body, "key-123").await.expect(201);
    assert_eq!(first["id"], second["id"]);
    assert_eq!(
        products.field(&p, "reservedQuantity").await,
        2,
        "reserved once"
    );
    let mut other = body.clone();
    other["items"][0]["quantity"] = json!(3);
    orders.place_keyed(&other, "key-123").await.problem(422);
    assert_eq!(orders.list("").await.body["totalCount"], 1);
    system.stop().await;
}

/// Create-order bodies the schema refuses, each with the field its 400 must name.
fn invalid_order_bodies(p: &str, c: &str) -> Vec<(Value, &'static str)> {
    let many: Vec<Value> = (0..101)
        .map(|_| json!({"productId": Uuid::new_v4(), "quantity": 1}))
        .collect();
    vec![
        (
            json!({"customerEmail": "a@b.co", "items": [{"productId": p, "quantity": 1}]}),
            "customerId",
        ),
        (
            json!({"customerId": c, "customerEmail": " a@b.co", "items": [{"productId": p, "quantity": 1}]}),
            "customerEmail",
        ),
        (
            json!({"customerId": "nope", "customerEmail": "a@b.co", "items": [{"productId": p, "quantity": 1}]}),
            "customerId",
        ),
        // The nil UUID names nobody and nothing (the original requires a non-empty CustomerId).
        (
            json!({"customerId": Uuid::nil(), "customerEmail": "a@b.co", "items": [{"productId": p, "quantity": 1}]}),
            "customerId",
        ),
        (
            json!({"customerId": c, "customerEmail": "a@b.co", "items": [{"productId": Uuid::nil(), "quantity": 1}]}),
            "items[0].productId",
        ),
        (
            json!({"customerId": c, "customerEmail": "invalid@", "items": [{"productId": p, "quantity": 1}]}),
            "customerEmail",
        ),
        (
            json!({"customerId": c, "customerEmail": format!("{}@b.co", "a".repeat(320)), "items": [{"productId": p, "quantity": 1}]}),
            "customerEmail",
        ),
        (
            json!({"customerId": c, "customerEmail": "a@b.co", "items": []}),
            "items",
        ),
        (json!({"customerId": c, "customerEmail": "a@b.co"}), "items"),
        (
            json!({"customerId": c, "customerEmail": "a@b.co", "items": many}),
            "items",
        ),
        (
            json!({"customerId": c, "customerEmail": "a@b.co", "items": [{"productId": p, "quantity": 0}]}),
            "items[0].quantity",
        ),
        (
            json!({"customerId": c, "customerEmail": "a@b.co", "items": [{"productId": p, "quantity": -3}]}),
            "items[0].quantity",
        ),
        (
            json!({"customerId": c, "customerEmail": "a@b.co", "items": [{"productId": p, "quantity": 10001}]}),
            "items[0].quantity",
        ),
        (
            json!({"customerId": c, "customerEmail": "a@b.co", "items": [{"productId": p, "quantity": 1.5}]}),
            "items[0].quantity",
        ),
        (
            json!({"customerId": c, "customerEmail": "a@b.co", "items": [{"productId": p, "quantity": 99999999999999999999u128 as f64}]}),
            "items[0].quantity",
        ),
        (
            json!({"customerId": c, "customerEmail": "a@b.co", "items": [{"productId": "x", "quantity": 1}]}),
            "items[0].productId",
        ),
        (
            json!({"customerId": c, "customerEmail": "a@b.co", "items": [{"productId": p, "quantity": 1, "price": "1"}]}),
            "items[0].price",
        ),
        (
            json!({"customerId": c, "customerEmail": "a@b.co", "items": "all"}),
            "items",
        ),
        (
            json!({"customerId": c, "customerEmail": 7, "items": [{"productId": p, "quantity": 1}]}),
            "customerEmail",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_order_request_is_a_keyed_problem_and_creates_nothing() {
    let system = System::start().await;
    let orders = &system.orders;
    let (p, c) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
    for (body, field) in invalid_order_bodies(&p, &c) {
        let problem = orders.place(&body).await.problem(400);
        assert!(
            problem["errors"][field].is_array(),
            "no error keyed `{field}`: {problem}"
        );
    }
    // Each line within the schema, their merged quantity over it: a business rule, 422.
    let merged = json!({"customerId": c, "customerEmail": "a@b.co",
        "items": [{"productId": p, "quantity": 6000}, {"productId": p, "quantity": 6000.0}]});
    let problem = orders.place(&merged).await.problem(422);
    assert!(problem["errors"]["items"].is_array(), "{problem}");
    // Bodies that are not JSON, or too big, never reach validation.
    for (body, status) in [
        (Bytes::from_static(b"{not json"), 400),
        (Bytes::new(), 400),
        (Bytes::from(vec![b' '; 100 * 1024]), 413),
    ] {
        let answer = orders
            .http()
            .post_raw("/api/orders", Some("application/json"), body);
        answer.await.problem(status);
    }
    orders.place_keyed(&json!({}), "").await.problem(400);
    orders.list("customerId=nope").await.problem(400);
    let nil = orders
        .list(&format!("customerId={}", Uuid::nil()))
        .await
        .problem(400);
    assert!(nil["errors"]["customerId"].is_array(), "{nil}");
    orders.get(&Uuid::nil().to_string()).await.problem(404);
    orders
        .cancel(&Uuid::nil().to_string(), "x")
        .await
        .problem(404);
    orders.get(&Uuid::new_v4().to_string()).await.problem(404);
    orders.get("zzz").await.problem(404);
    let long_reason = "r".repeat(501);
    orders
        .cancel(&Uuid::new_v4().to_string(), &long_reason)
        .await
        .problem(400);
    assert_eq!(
        orders.list("").await.body["totalCount"],
        0,
        "nothing was created"
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_are_terminated_counted_and_never_block_later_events() {
    let system = System::start().await;
    system.product_in_snapshot("Before poison", "1.00", 1).await;

    let js = js(&system.nats.url()).await;
    let poison = [
        b"garbage \xff\xfe".to_vec(),
        serde_json::to_vec(&json!({"eventId": Uuid::now_v7(), "eventType": "ProductCreated", "schemaVersion": 1})).unwrap(),
        serde_json::to_vec(&json!({"eventId": Uuid::now_v7(), "eventType": "ProductExploded", "schemaVersion": 1, "occurredAt": "2026-01-01T00:00:00Z",
            "productId": Uuid::nil(), "version": 1, "name": "x", "description": "", "price": "1.00", "category": "c", "deleted": false})).unwrap(),
    ];
    for payload in poison {
        js.publish(format!("eshop.products.{}", Uuid::new_v4()), payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    system.product_in_snapshot("After poison", "2.00", 1).await;
    // The counters move once a batch is done, a moment after its rows are visible.
    let health = wait_for("3 poison events counted", WAIT, || async {
        let health = system.orders.ready().await.body;
        (health["checks"]["snapshot"]["poison"].as_u64() >= Some(3)).then_some(health)
    })
    .await;
    assert_eq!(health["checks"]["snapshot"]["poison"], 3, "{health}");
    assert_eq!(system.orders.snapshot_count().await, 2);
    system.stop().await;
}

/// What is poison on the order stream is one rule for every reader (`OrderEvent::decode`):
/// order-svc's view and product-svc's follower terminate and count the same four messages, the
/// audit skips them, and orders placed after them are listed and agree with the books.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_order_events_are_terminated_by_every_reader_and_never_block_later_orders() {
    let system = System::start().await;
    let (products, orders) = (&system.products, &system.orders);
    let p = system.product_in_snapshot("Lamp", "5.00", 10).await;
    let customer = Uuid::new_v4();
    let first = orders
        .place(&order_body(customer, &[(&p, 1)]))
        .await
        .expect(201);
    let first_id = first["id"].as_str().unwrap();

    let js = js(&system.nats.url()).await;
    let (_, state) = last_message(&js, "ORDERS", &format!("eshop.orders.{first_id}"))
        .await
        .expect("the order's state");
    // Each on a subject of its own, so no real order is touched: bytes that are no JSON, a real
    // state on another order's subject, and states of their own subject with an unknown schema
    // or no version. All four but the first decode as JSON.
    let elsewhere = |mut state: Value, change: &dyn Fn(&mut Value)| {
        let id = Uuid::now_v7();
        state["orderId"] = json!(id);
        change(&mut state);
        (id, serde_json::to_vec(&state).unwrap())
    };
    let (old, old_schema) = elsewhere(state.clone(), &|s| s["schemaVersion"] = json!(1));
    let (zero, no_version) = elsewhere(state.clone(), &|s| s["version"] = json!(0));
    let poison = [
        (Uuid::now_v7(), b"{\"orderId\": garbage".to_vec()),
        (Uuid::now_v7(), serde_json::to_vec(&state).unwrap()),
        (old, old_schema),
        (zero, no_version),
    ];
    for (subject_id, payload) in poison {
        js.publish(format!("eshop.orders.{subject_id}"), payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let second = orders
        .place(&order_body(customer, &[(&p, 2)]))
        .await
        .expect(201);
    assert_eq!(second["status"], "Confirmed");

    let health = wait_for(
        "4 poison order events counted by the view",
        WAIT,
        || async {
            let health = orders.ready().await.body;
            (health["checks"]["ordersView"]["poison"].as_u64() >= Some(4)).then_some(health)
        },
    )
    .await;
    assert_eq!(health["checks"]["ordersView"]["poison"], 4, "{health}");
    let ready = wait_for(
        "4 poison order events counted by the follower",
        WAIT,
        || async {
            let (_, ready) =
                crate::get_json(&format!("{}/health/ready", system.product.http)).await;
            (ready["figures"]["orderFollower"]["poison"].as_u64() >= Some(4)).then_some(ready)
        },
    )
    .await;
    assert_eq!(ready["figures"]["orderFollower"]["poison"], 4, "{ready}");

    let page = orders
        .list(&format!("customerId={customer}&pageSize=10"))
        .await
        .expect(200);
    assert_eq!(page["totalCount"], 2, "{page}");
    assert_eq!(orders.list("").await.body["totalCount"], 2);
    crate::assert_books_agree(&system.product.http).await;
    let audit = products.audit().await.expect(200);
    assert_eq!(audit["ordersChecked"], 2, "{audit}");
    assert_eq!(products.field(&p, "reservedQuantity").await, 3);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_consumer_is_recreated_from_the_checkpoint() {
    let system = System::start().await;
    let order = &system.order;
    system.product_in_snapshot("Before", "1.00", 1).await;
    let js = js(&system.nats.url()).await;
    let stream = js.get_stream("PRODUCTS").await.unwrap();
    let durable = format!("order-svc-{}-products", order.instance_id);
    stream
        .delete_consumer(&durable)
        .await
        .expect("durable deleted");
    system.product_in_snapshot("After", "2.00", 1).await;
    assert!(
        stream.consumer_info(&durable).await.is_ok(),
        "the durable exists again"
    );
    // The counter moves once a batch is done, a moment after its rows are visible.
    let applied = || {
        order
            .projection
            .applied
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    wait_for("2 events applied", WAIT, || async {
        (applied() >= 2).then_some(())
    })
    .await;
    assert_eq!(
        applied(),
        2,
        "resumed after the checkpoint, nothing replayed twice"
    );
    system.stop().await;
}
