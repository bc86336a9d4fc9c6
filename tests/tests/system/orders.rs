//! order-svc against a real nats-server, real sled and an in-process product-svc: the snapshot
//! projection (cold start, restart, wiped store, poison), read-through, the order flow, outages.
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use tests::{NatsServer, OrderService, ProductService, free_port, http_client, scratch, wait_for};
use uuid::Uuid;

use crate::{
    WAIT, create_product, expect_problem, get_json, js, last_message, product_config,
    wait_snapshot_version, wait_stream_messages,
};

fn order_body(customer: Uuid, items: &[(&str, i64)]) -> Value {
    json!({
        "customerId": customer,
        "customerEmail": "ann@example.com",
        "items": items.iter().map(|(id, q)| json!({"productId": id, "quantity": q})).collect::<Vec<_>>(),
    })
}

async fn place(http: &str, body: &Value) -> reqwest::Response {
    http_client()
        .post(format!("{http}/api/orders"))
        .json(body)
        .send()
        .await
        .expect("POST /api/orders")
}

async fn snapshot_count(http: &str) -> u64 {
    get_json(&format!("{http}/api/snapshot/products?pageSize=1"))
        .await
        .1["totalCount"]
        .as_u64()
        .unwrap_or(0)
}

async fn product_field(http: &str, id: &str, field: &str) -> i64 {
    get_json(&format!("{http}/api/products/{id}")).await.1[field]
        .as_i64()
        .expect("field")
}

/// Creates `n` products over HTTP, 8 at a time; returns their ids.
async fn create_many(http: &str, n: usize) -> Vec<String> {
    futures::stream::iter(0..n)
        .map(|i| async move {
            create_product(http, &format!("Item {i:05}"), "9.99", 100).await["id"]
                .as_str()
                .unwrap()
                .to_owned()
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
    create_many(&product.http, 1000).await;
    wait_stream_messages(&js(&nats.url()).await, "PRODUCTS", 1000).await;

    let order = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order")).await;
    order.wait_ready(WAIT).await;
    assert_eq!(
        snapshot_count(&order.http).await,
        1000,
        "ready means the whole catalog is in the snapshot"
    );
    let (_, health) = get_json(&format!("{}/health/ready", order.http)).await;
    assert_eq!(health["details"]["snapshot"]["lag"], 0);
    order.stop().await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_snapshot_and_resumes_from_the_checkpoint_and_a_wiped_store_replays_all()
{
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let ids = create_many(&product.http, 50).await;
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
    wait_for("50 products in the snapshot", WAIT, || async {
        (snapshot_count(&order.http).await == 50).then_some(())
    })
    .await;
    order.stop().await;

    // While order-svc is down: 5 updates and 5 new products.
    let client = http_client();
    for id in &ids[..5] {
        let body = json!({"name": "Renamed", "description": "", "price": "1.50", "category": "Tests", "lowStockThreshold": 0});
        assert_eq!(
            client
                .put(format!("{}/api/products/{id}", product.http))
                .json(&body)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    create_many(&product.http, 5).await;

    let order = OrderService::start_with(config()).await;
    order.wait_ready(WAIT).await;
    assert_eq!(snapshot_count(&order.http).await, 55);
    wait_snapshot_version(&order.http, &ids[0], 2).await;
    let (_, row) = get_json(&format!("{}/api/snapshot/products/{}", order.http, ids[0])).await;
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
    assert_eq!(snapshot_count(&order.http).await, 55);
    wait_snapshot_version(&order.http, &ids[4], 2).await;
    order.stop().await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_for_a_product_missing_from_the_snapshot_reads_through() {
    let product_nats = NatsServer::start();
    let order_nats = NatsServer::start(); // order-svc never sees product events
    let dir = scratch();
    let product = ProductService::start(&product_nats.url(), &dir.path().join("product")).await;
    let id = create_product(&product.http, "Fresh", "12.50", 5).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let order =
        OrderService::start(&order_nats.url(), &product.grpc, &dir.path().join("order")).await;
    order.wait_ready(WAIT).await;
    assert_eq!(
        get_json(&format!("{}/api/snapshot/products/{id}", order.http))
            .await
            .0,
        404
    );

    let response = place(&order.http, &order_body(Uuid::new_v4(), &[(&id, 2)])).await;
    assert_eq!(response.status(), 201);
    let placed: Value = response.json().await.unwrap();
    assert_eq!(placed["status"], "Confirmed");
    assert_eq!(placed["totalAmount"], "25.00");
    assert_eq!(placed["items"][0]["productName"], "Fresh");
    wait_snapshot_version(&order.http, &id, 1).await;

    let unknown = Uuid::new_v4().to_string();
    let problem = expect_problem(
        place(
            &order.http,
            &order_body(Uuid::new_v4(), &[(&id, 1), (&unknown, 1)]),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(problem["unknownProductIds"], json!([unknown]));
    order.stop().await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_confirm_reject_cancel_and_list() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let order = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order")).await;
    let a = create_product(&product.http, "A", "10.00", 5).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = create_product(&product.http, "B", "0.10", 100).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_snapshot_version(&order.http, &a, 1).await;
    wait_snapshot_version(&order.http, &b, 1).await;
    let customer = Uuid::new_v4();

    let response = place(
        &order.http,
        &order_body(customer, &[(&a, 2), (&b, 3), (&a, 1)]),
    )
    .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let confirmed: Value = response.json().await.unwrap();
    assert_eq!(confirmed["status"], "Confirmed");
    assert_eq!(confirmed["totalAmount"], "30.30");
    assert_eq!(
        confirmed["items"].as_array().unwrap().len(),
        2,
        "duplicate product ids are merged"
    );
    assert_eq!(
        location,
        format!("/api/orders/{}", confirmed["id"].as_str().unwrap())
    );
    assert_eq!(
        product_field(&product.http, &a, "reservedQuantity").await,
        3
    );

    let rejected: Value = place(&order.http, &order_body(customer, &[(&a, 3), (&b, 1)]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rejected["status"], "Rejected");
    assert_eq!(rejected["failedProductIds"], json!([a]));
    assert!(
        rejected["reason"]
            .as_str()
            .unwrap()
            .contains("insufficient stock")
    );
    assert_eq!(
        product_field(&product.http, &b, "reservedQuantity").await,
        3,
        "a rejected order holds nothing"
    );

    let id = confirmed["id"].as_str().unwrap();
    let cancel = |reason: &str| {
        http_client()
            .post(format!("{}/api/orders/{id}/cancel", order.http))
            .json(&json!({"reason": reason}))
            .send()
    };
    let cancelled: Value = cancel("changed my mind")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["status"], "Cancelled");
    assert_eq!(cancelled["reason"], "changed my mind");
    wait_for("stock released", WAIT, || async {
        (product_field(&product.http, &a, "reservedQuantity").await == 0).then_some(())
    })
    .await;
    expect_problem(cancel("again").await.unwrap(), 409).await;
    let rejected_id = rejected["id"].as_str().unwrap();
    let r = http_client()
        .post(format!("{}/api/orders/{rejected_id}/cancel", order.http))
        .json(&json!({"reason": "x"}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 409).await;

    let (status, page) = get_json(&format!(
        "{}/api/orders?customerId={customer}&pageSize=10",
        order.http
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["totalCount"], 2);
    assert_eq!(page["items"][0]["id"], rejected["id"], "newest first");
    assert_eq!(page["items"][1]["status"], "Cancelled");
    let (_, other) = get_json(&format!(
        "{}/api/orders?customerId={}",
        order.http,
        Uuid::new_v4()
    ))
    .await;
    assert_eq!(other["totalCount"], 0);
    let (status, one) = get_json(&format!("{}/api/orders/{id}", order.http)).await;
    assert_eq!((status, one["status"].as_str()), (200, Some("Cancelled")));

    // ORDERS holds each order's latest full state: the rejected one at version 2, the confirmed
    // one cancelled (3) and its release recorded (4).
    wait_stream_messages(&js(&nats.url()).await, "ORDERS", 2).await;
    let js = js(&nats.url()).await;
    let (headers, cancelled) = wait_for("the release recorded in ORDERS", WAIT, || async {
        last_message(&js, "ORDERS", &format!("eshop.orders.{id}"))
            .await
            .filter(|(_, body)| body["version"] == 4)
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
    let (status, openapi) = get_json(&format!("{}/openapi.json", order.http)).await;
    assert_eq!(status, 200);
    assert!(openapi["paths"]["/api/orders"]["post"].is_object());
    order.stop().await;
    product.stop().await;
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
    let p = create_product(&product.http, "Outage", "5.00", 10).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_snapshot_version(&order.http, &p, 1).await;
    let before: Value = place(&order.http, &order_body(Uuid::new_v4(), &[(&p, 2)]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(before["status"], "Confirmed");
    product.stop().await;

    let response = place(&order.http, &order_body(Uuid::new_v4(), &[(&p, 3)])).await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let pending: Value = response.json().await.unwrap();
    assert_eq!(pending["status"], "Pending");
    let cancel = http_client()
        .post(format!(
            "{}/api/orders/{}/cancel",
            order.http,
            before["id"].as_str().unwrap()
        ))
        .json(&json!({"reason": "outage"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        cancel.status(),
        200,
        "cancel works while product-svc is down"
    );

    let product =
        ProductService::start_with(product_config(&nats.url(), &product_dir, grpc_port)).await;
    wait_for("the pending order to be confirmed", WAIT, || async {
        let (_, o) = get_json(&format!("{}{location}", order.http)).await;
        (o["status"] == "Confirmed").then_some(())
    })
    .await;
    wait_for(
        "the cancelled order's stock to be released",
        WAIT,
        || async {
            (product_field(&product.http, &p, "reservedQuantity").await == 3).then_some(())
        },
    )
    .await;
    assert_eq!(
        product_field(&product.http, &p, "availableQuantity").await,
        7
    );
    order.stop().await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_replays_the_same_order_and_refuses_a_different_body() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let order = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order")).await;
    let p = create_product(&product.http, "Idem", "2.00", 10).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_snapshot_version(&order.http, &p, 1).await;
    let body = order_body(Uuid::new_v4(), &[(&p, 2)]);
    let send = |body: Value| {
        http_client()
            .post(format!("{}/api/orders", order.http))
            .header("Idempotency-Key", "key-123")
            .json(&body)
            .send()
    };
    let first: Value = send(body.clone()).await.unwrap().json().await.unwrap();
    let second = send(body.clone()).await.unwrap();
    assert_eq!(second.status(), 201);
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    assert_eq!(
        product_field(&product.http, &p, "reservedQuantity").await,
        2,
        "reserved once"
    );
    let mut other = body.clone();
    other["items"][0]["quantity"] = json!(3);
    expect_problem(send(other).await.unwrap(), 422).await;
    let (_, page) = get_json(&format!("{}/api/orders", order.http)).await;
    assert_eq!(page["totalCount"], 1);
    order.stop().await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_order_request_is_a_keyed_problem_and_creates_nothing() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let order = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order")).await;
    let p = Uuid::new_v4().to_string();
    let c = Uuid::new_v4().to_string();
    let many: Vec<Value> = (0..101)
        .map(|_| json!({"productId": Uuid::new_v4(), "quantity": 1}))
        .collect();
    let cases: Vec<(Value, &str)> = vec![
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
    ];
    for (body, field) in cases {
        let problem = expect_problem(place(&order.http, &body).await, 400).await;
        assert!(
            problem["errors"][field].is_array(),
            "no error keyed `{field}`: {problem}"
        );
    }
    // Each line within the schema, their merged quantity over it: a business rule, 422.
    let merged = json!({"customerId": c, "customerEmail": "a@b.co",
        "items": [{"productId": p, "quantity": 6000}, {"productId": p, "quantity": 6000.0}]});
    let problem = expect_problem(place(&order.http, &merged).await, 422).await;
    assert!(problem["errors"]["items"].is_array(), "{problem}");
    let client = http_client();
    let raw = |b: &'static str| {
        client
            .post(format!("{}/api/orders", order.http))
            .header("content-type", "application/json")
            .body(b)
            .send()
    };
    expect_problem(raw("{not json").await.unwrap(), 400).await;
    expect_problem(raw("").await.unwrap(), 400).await;
    let huge = client
        .post(format!("{}/api/orders", order.http))
        .header("content-type", "application/json")
        .body(Bytes::from(vec![b' '; 100 * 1024]))
        .send()
        .await
        .unwrap();
    expect_problem(huge, 413).await;
    let bad_key = client
        .post(format!("{}/api/orders", order.http))
        .header("Idempotency-Key", "")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_problem(bad_key, 400).await;
    expect_problem(
        client
            .get(format!("{}/api/orders?customerId=nope", order.http))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    expect_problem(
        client
            .get(format!("{}/api/orders/{}", order.http, Uuid::new_v4()))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    expect_problem(
        client
            .get(format!("{}/api/orders/zzz", order.http))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    let long_reason = client
        .post(format!(
            "{}/api/orders/{}/cancel",
            order.http,
            Uuid::new_v4()
        ))
        .json(&json!({"reason": "r".repeat(501)}))
        .send()
        .await
        .unwrap();
    expect_problem(long_reason, 400).await;
    let (_, page) = get_json(&format!("{}/api/orders", order.http)).await;
    assert_eq!(page["totalCount"], 0, "nothing was created");
    order.stop().await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_are_terminated_counted_and_never_block_later_events() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let order = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order")).await;
    let first = create_product(&product.http, "Before poison", "1.00", 1).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_snapshot_version(&order.http, &first, 1).await;

    let js = js(&nats.url()).await;
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
    let after = create_product(&product.http, "After poison", "2.00", 1).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_snapshot_version(&order.http, &after, 1).await;
    // The counters move once a batch is flushed and acked, a moment after its rows are visible.
    let health = wait_for("3 poison events counted", WAIT, || async {
        let (_, health) = get_json(&format!("{}/health/ready", order.http)).await;
        (health["details"]["snapshot"]["poison"].as_u64() >= Some(3)).then_some(health)
    })
    .await;
    assert_eq!(health["details"]["snapshot"]["poison"], 3, "{health}");
    assert_eq!(snapshot_count(&order.http).await, 2);
    order.stop().await;
    product.stop().await;
    let _ = Duration::ZERO;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_consumer_is_recreated_from_the_checkpoint() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let order = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order")).await;
    let first = create_product(&product.http, "Before", "1.00", 1).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_snapshot_version(&order.http, &first, 1).await;
    let js = js(&nats.url()).await;
    let stream = js.get_stream("PRODUCTS").await.unwrap();
    let durable = format!("order-svc-{}-products", order.instance_id);
    stream
        .delete_consumer(&durable)
        .await
        .expect("durable deleted");
    let after = create_product(&product.http, "After", "2.00", 1).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_snapshot_version(&order.http, &after, 1).await;
    assert!(
        stream.consumer_info(&durable).await.is_ok(),
        "the durable exists again"
    );
    // The counter moves once a batch is flushed and acked, a moment after its rows are visible.
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
    order.stop().await;
    product.stop().await;
}
