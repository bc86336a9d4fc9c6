//! Several order-svc instances against one NATS: every instance serves every order, keys are
//! claimed once across instances, racing writes end in one state, a dead instance strands
//! nothing, and an instance's disk is only a cache. Real nats-server, sled, gRPC and HTTP.
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde_json::{Value, json};
use tests::{
    Answer, NatsServer, OrderApi, OrderService, ProductService, ServiceProcess, free_port, scratch,
    wait_for,
};
use uuid::Uuid;

use crate::{
    WAIT, create_product, get_json, js, last_message, product_config, wait_snapshot_version,
};

fn order_body(customer: Uuid, product: &str, quantity: i64) -> Value {
    tests::order_body(customer, &[(product, quantity)])
}

async fn post_order(http: &str, body: &Value, key: Option<&str>) -> Answer {
    let orders = OrderApi::new(http);
    match key {
        Some(key) => orders.place_keyed(body, key).await,
        None => orders.place(body).await,
    }
}

async fn cancel(http: &str, id: &str) -> Answer {
    OrderApi::new(http).cancel(id, "racing").await
}

async fn reserved(product_http: &str, id: &str) -> i64 {
    get_json(&format!("{product_http}/api/products/{id}"))
        .await
        .1["reservedQuantity"]
        .as_i64()
        .expect("reservedQuantity")
}

/// Two in-process order-svc instances (own data dirs, generated instance ids), both ready.
async fn two_instances(
    nats: &str,
    grpc: &str,
    dir: &std::path::Path,
) -> (OrderService, OrderService) {
    let a = OrderService::start(nats, grpc, &dir.join("order-a")).await;
    let b = OrderService::start(nats, grpc, &dir.join("order-b")).await;
    a.wait_ready(WAIT).await;
    b.wait_ready(WAIT).await;
    (a, b)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_placed_on_one_instance_is_read_cancelled_and_listed_on_the_other() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let (a, b) = two_instances(&nats.url(), &product.grpc, dir.path()).await;
    assert_ne!(a.instance_id, b.instance_id, "each instance has its own id");
    let p = create_product(&product.http, "Shared", "3.00", 1000).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_snapshot_version(&a.http, &p, 1).await;
    let customer = Uuid::new_v4();

    // Read-your-writes across instances: GET on B right after A's 201.
    let response = post_order(&a.http, &order_body(customer, &p, 2), None).await;
    assert_eq!(response.status, 201);
    let placed = response.body;
    assert_eq!(placed["status"], "Confirmed");
    let id = placed["id"].as_str().unwrap();
    let (status, on_b) = get_json(&format!("{}/api/orders/{id}", b.http)).await;
    assert_eq!(status, 200);
    assert_eq!(on_b, placed, "B answers A's order at once, same body");

    // Cancel on B an order placed on A: released once.
    let response = cancel(&b.http, id).await;
    assert_eq!(response.status, 200);
    let cancelled = response.body;
    assert_eq!(cancelled["status"], "Cancelled");
    wait_for("the release", WAIT, || async {
        (reserved(&product.http, &p).await == 0).then_some(())
    })
    .await;
    let (_, on_a) = get_json(&format!("{}/api/orders/{id}", a.http)).await;
    assert_eq!(on_a["status"], "Cancelled");

    // Listings on B catch up with A's orders; the lag from A's 201 to B's listing is measured.
    let mut lags = Vec::new();
    for i in 0..20 {
        let response = post_order(&a.http, &order_body(customer, &p, 1), None).await;
        assert_eq!(response.status, 201);
        let acked = Instant::now();
        let url = format!("{}/api/orders?customerId={customer}&pageSize=100", b.http);
        wait_for("B's listing to show A's order", WAIT, || async {
            let (_, page) = get_json(&url).await;
            (page["totalCount"] == 2 + i).then_some(())
        })
        .await;
        lags.push(acked.elapsed());
    }
    lags.sort();
    let (_, page) = get_json(&format!(
        "{}/api/orders?customerId={customer}&pageSize=100",
        b.http
    ))
    .await;
    let ids: HashSet<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 21, "every order once");
    assert!(ids.contains(id));
    eprintln!(
        "FIGURES cross-instance listing lag (201 on A to B's listing, polled): p50 {:?}, max {:?} over {}",
        percentile(&lags, 0.5),
        lags[lags.len() - 1],
        lags.len()
    );
    a.stop().await;
    b.stop().await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_sent_to_two_instances_makes_one_order_and_one_reservation() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let (a, b) = two_instances(&nats.url(), &product.grpc, dir.path()).await;
    let p = create_product(&product.http, "Keyed", "1.00", 100).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_snapshot_version(&a.http, &p, 1).await;
    wait_snapshot_version(&b.http, &p, 1).await;
    let body = order_body(Uuid::new_v4(), &p, 3);
    let answers: Vec<(u16, Value)> = futures::stream::iter(0..20)
        .map(|i| {
            let http = if i % 2 == 0 {
                a.http.clone()
            } else {
                b.http.clone()
            };
            let body = body.clone();
            async move {
                let response = post_order(&http, &body, Some("same-key")).await;
                let status = response.status;
                (status, response.body)
            }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    let ids: HashSet<&str> = answers
        .iter()
        .map(|(status, order)| {
            assert!(matches!(status, 201 | 202), "{status}: {order}");
            order["id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one order for one key");
    let id = *ids.iter().next().unwrap();
    wait_for("the order to be confirmed", WAIT, || async {
        let (_, o) = get_json(&format!("{}/api/orders/{id}", b.http)).await;
        (o["status"] == "Confirmed").then_some(())
    })
    .await;
    assert_eq!(reserved(&product.http, &p).await, 3, "reserved once");
    let js = js(&nats.url()).await;
    let subjects = crate::stream_subjects(&js, "ORDERS", "eshop.orders.*").await;
    assert_eq!(subjects.len(), 1, "one order in the stream: {subjects:?}");

    let mut other = body.clone();
    other["items"][0]["quantity"] = json!(4);
    for http in [&a.http, &b.http] {
        post_order(http, &other, Some("same-key"))
            .await
            .problem(422);
    }
    // Keys are scoped per customer: another customer's same key is another order.
    let elsewhere = post_order(
        &b.http,
        &order_body(Uuid::new_v4(), &p, 3),
        Some("same-key"),
    )
    .await;
    assert_eq!(elsewhere.status, 201);
    assert_eq!(reserved(&product.http, &p).await, 6);
    a.stop().await;
    b.stop().await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_racing_on_two_instances_cancel_once_and_release_once() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let (a, b) = two_instances(&nats.url(), &product.grpc, dir.path()).await;
    let p = create_product(&product.http, "Racing", "1.00", 500).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_snapshot_version(&a.http, &p, 1).await;
    let mut ids = Vec::new();
    for _ in 0..50 {
        let response = post_order(&a.http, &order_body(Uuid::new_v4(), &p, 2), None).await;
        let order = response.body;
        assert_eq!(order["status"], "Confirmed");
        ids.push(order["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(reserved(&product.http, &p).await, 100);
    let outcomes: Vec<(Answer, Answer)> = futures::stream::iter(ids.clone())
        .map(|id| {
            let (ha, hb) = (a.http.clone(), b.http.clone());
            async move { tokio::join!(cancel(&ha, &id), cancel(&hb, &id)) }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    // Cancel is idempotent: the loser of the race gets the winner's Cancelled order; the
    // version check below shows that only one cancel was written.
    for (ra, rb) in &outcomes {
        assert_eq!(
            (ra.status, rb.status),
            (200, 200),
            "{:?} / {:?}",
            ra.body,
            rb.body
        );
        assert_eq!(
            (&ra.body["status"], &rb.body["status"]),
            (&json!("Cancelled"), &json!("Cancelled"))
        );
    }
    wait_for("every release", WAIT, || async {
        (reserved(&product.http, &p).await == 0).then_some(())
    })
    .await;
    // Confirmed 1 (placed confirmed), Cancelled 2, release recorded 3: one cancel and one
    // release each.
    let js = js(&nats.url()).await;
    for id in &ids {
        let (_, state) = wait_for("the release recorded", WAIT, || async {
            last_message(&js, "ORDERS", &format!("eshop.orders.{id}"))
                .await
                .filter(|(_, body)| body["releaseOwed"] == false)
        })
        .await;
        assert_eq!(state["version"], 3, "{state}");
        assert_eq!(state["eventType"], "OrderStockReleased");
    }
    assert_eq!(
        reserved(&product.http, &p).await,
        0,
        "back to the exact figure"
    );
    let (_, health) = get_json(&format!("{}/health/ready", a.http)).await;
    let (_, health_b) = get_json(&format!("{}/health/ready", b.http)).await;
    eprintln!(
        "FIGURES racing cancels: 50 orders, each cancelled once; CAS conflicts {} + {}, duplicate work {} + {}",
        health["figures"]["casConflicts"],
        health_b["figures"]["casConflicts"],
        health["figures"]["duplicateWork"],
        health_b["figures"]["duplicateWork"]
    );
    a.stop().await;
    b.stop().await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_orders_of_an_instance_killed_for_good_are_settled_by_another() {
    let nats = NatsServer::start();
    let dir = scratch();
    let grpc_port = free_port();
    let product_dir = dir.path().join("product");
    let product =
        ProductService::start_with(product_config(&nats.url(), &product_dir, grpc_port)).await;
    let mut a = ServiceProcess::order(
        &nats.url(),
        &product.grpc,
        &dir.path().join("order-a"),
        dir.path(),
        &[("ORDER_REQUEST_BUDGET_MS", "500")],
    );
    let b = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order-b")).await;
    let p = create_product(&product.http, "Stranded", "1.00", 40).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_snapshot_version(&a.http, &p, 1).await;
    product.stop().await;

    let mut ids = Vec::new();
    for i in 0..30 {
        let response = post_order(&a.http, &order_body(Uuid::new_v4(), &p, 1 + i % 2), None).await;
        assert_eq!(response.status, 202, "product-svc is down");
        let order = response.body;
        ids.push(order["id"].as_str().unwrap().to_owned());
    }
    a.kill9();
    let product =
        ProductService::start_with(product_config(&nats.url(), &product_dir, grpc_port)).await;
    let mut confirmed = 0;
    for id in &ids {
        let order = wait_for("B to settle A's order", WAIT, || async {
            let (_, o) = get_json(&format!("{}/api/orders/{id}", b.http)).await;
            (o["status"] != "Pending").then_some(o)
        })
        .await;
        if order["status"] == "Confirmed" {
            confirmed += order["items"][0]["quantity"].as_i64().unwrap();
        }
    }
    assert_eq!(
        reserved(&product.http, &p).await,
        confirmed,
        "reserved == Σ confirmed"
    );
    let (_, health) = get_json(&format!("{}/health/ready", b.http)).await;
    assert_eq!(health["figures"]["pendingOrders"], 0, "{health}");
    eprintln!(
        "FIGURES stranded: 30 Pending orders of a killed instance settled by another; {confirmed} units confirmed"
    );
    b.stop().await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_instance_rebuilds_its_orders_view_and_snapshot_from_the_streams() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let order_dir = dir.path().join("order-a");
    let a = OrderService::start(&nats.url(), &product.grpc, &order_dir).await;
    let mut products = Vec::new();
    for i in 0..10 {
        products.push(
            create_product(&product.http, &format!("W{i}"), "2.00", 100).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    wait_snapshot_version(&a.http, &products[9], 1).await;
    let customer = Uuid::new_v4();
    let mut placed = HashMap::new();
    for (i, p) in products.iter().enumerate() {
        let order: Value = post_order(&a.http, &order_body(customer, p, 1 + i as i64), None)
            .await
            .body;
        placed.insert(order["id"].as_str().unwrap().to_owned(), order);
    }
    let first = placed.keys().next().unwrap().clone();
    assert_eq!(cancel(&a.http, &first).await.status, 200);
    let first_state = wait_for("the release recorded", WAIT, || async {
        let (_, o) = get_json(&format!("{}/api/orders/{first}", a.http)).await;
        (o["version"] == 3).then_some(o)
    })
    .await;
    placed.insert(first.clone(), first_state);
    a.stop().await;

    std::fs::remove_dir_all(&order_dir).unwrap();
    let a = OrderService::start(&nats.url(), &product.grpc, &order_dir).await;
    a.wait_ready(WAIT).await;
    let (_, page) = get_json(&format!(
        "{}/api/orders?customerId={customer}&pageSize=100",
        a.http
    ))
    .await;
    assert_eq!(page["totalCount"], 10, "every order listable again");
    for item in page["items"].as_array().unwrap() {
        let id = item["id"].as_str().unwrap();
        assert_eq!(item, &placed[id], "the view holds the latest state");
        let (status, fetched) = get_json(&format!("{}/api/orders/{id}", a.http)).await;
        assert_eq!((status, &fetched), (200, &placed[id]));
    }
    let (_, snapshot) = get_json(&format!("{}/api/snapshot/products?pageSize=1", a.http)).await;
    assert_eq!(snapshot["totalCount"], 10, "snapshot == catalog");
    a.stop().await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_started_without_an_id_get_their_own_durables_and_full_snapshots() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    for i in 0..100 {
        create_product(&product.http, &format!("D{i}"), "1.00", 1).await;
    }
    let (a, b) = two_instances(&nats.url(), &product.grpc, dir.path()).await;
    let js = js(&nats.url()).await;
    let stream = js.get_stream("PRODUCTS").await.unwrap();
    for instance in [&a, &b] {
        let durable = format!("order-svc-{}-products", instance.instance_id);
        assert!(
            stream.consumer_info(&durable).await.is_ok(),
            "{durable} exists"
        );
        let (_, snapshot) = get_json(&format!(
            "{}/api/snapshot/products?pageSize=1",
            instance.http
        ))
        .await;
        assert_eq!(
            snapshot["totalCount"], 100,
            "each instance sees the whole catalog"
        );
    }
    // The id is kept in the data dir: a restart is the same instance.
    let (a_id, a_dir) = (a.instance_id.clone(), a.data_dir.clone());
    a.stop().await;
    let again = OrderService::start(&nats.url(), &product.grpc, &a_dir).await;
    assert_eq!(again.instance_id, a_id);
    again.stop().await;
    b.stop().await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_on_two_instances_race_for_the_last_fifty_units() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let (a, b) = two_instances(&nats.url(), &product.grpc, dir.path()).await;
    let p = create_product(&product.http, "Last", "1.00", 50).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_snapshot_version(&a.http, &p, 1).await;
    wait_snapshot_version(&b.http, &p, 1).await;
    let statuses: Vec<String> = futures::stream::iter(0..64)
        .map(|i| {
            let http = if i % 2 == 0 {
                a.http.clone()
            } else {
                b.http.clone()
            };
            let p = p.clone();
            async move {
                let o: Value = post_order(&http, &order_body(Uuid::new_v4(), &p, 1), None)
                    .await
                    .body;
                o["status"].as_str().unwrap().to_owned()
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let confirmed = statuses.iter().filter(|s| *s == "Confirmed").count();
    let rejected = statuses.iter().filter(|s| *s == "Rejected").count();
    assert_eq!(
        (confirmed, rejected),
        (50, 14),
        "exactly 50 confirmed, none pending"
    );
    assert_eq!(reserved(&product.http, &p).await, 50);
    a.stop().await;
    b.stop().await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_under_order_load_loses_no_acknowledged_order_and_never_hangs() {
    let mut nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let order = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order")).await;
    let p = create_product(&product.http, "Outage", "1.00", 100_000).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_snapshot_version(&order.http, &p, 1).await;
    let budget = Duration::from_millis(2000);

    let stop = tokio_util::sync::CancellationToken::new();
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (http, p, stop) = (order.http.clone(), p.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut acked, mut refused, mut slowest) = (Vec::new(), 0, Duration::ZERO);
                while !stop.is_cancelled() {
                    let started = Instant::now();
                    let response =
                        post_order(&http, &order_body(Uuid::new_v4(), &p, 1), None).await;
                    slowest = slowest.max(started.elapsed());
                    let status = response.status;
                    if status == 201 || status == 202 {
                        let o = response.body;
                        acked.push(o["id"].as_str().unwrap().to_owned());
                    } else {
                        let problem = response.problem(503);
                        assert!(problem["detail"].is_string());
                        refused += 1;
                        // Pacing of the load generator while NATS is down, not synchronisation.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                (acked, refused, slowest)
            })
        })
        .collect();
    wait_for("orders before the kill", WAIT, || async {
        let (_, page) = get_json(&format!("{}/api/orders?pageSize=1", order.http)).await;
        (page["totalCount"].as_u64().unwrap_or(0) >= 50).then_some(())
    })
    .await;
    nats.kill();
    // Refusals while it is down (the load keeps running).
    wait_for("a 503 during the outage", WAIT, || async {
        let r = post_order(&order.http, &order_body(Uuid::new_v4(), &p, 1), None).await;
        (r.status == 503).then_some(())
    })
    .await;
    nats.start_again();
    wait_for("orders after the restart", WAIT, || async {
        let r = post_order(&order.http, &order_body(Uuid::new_v4(), &p, 1), None).await;
        (r.status == 201).then_some(())
    })
    .await;
    stop.cancel();
    let (mut acked, mut refused, mut slowest) = (Vec::new(), 0, Duration::ZERO);
    for task in load {
        let (a, r, s) = task.await.unwrap();
        acked.extend(a);
        refused += r;
        slowest = slowest.max(s);
    }
    let js = js(&nats.url()).await;
    for id in &acked {
        assert!(
            last_message(&js, "ORDERS", &format!("eshop.orders.{id}"))
                .await
                .is_some(),
            "acknowledged order {id} is in ORDERS"
        );
    }
    // A bound, not a speed claim: no answer waits on a dead NATS past the request budget.
    assert!(
        slowest < budget + Duration::from_secs(2),
        "an answer took {slowest:?} (budget {budget:?})"
    );
    eprintln!(
        "FIGURES nats kill under order load: {} acknowledged, all in ORDERS after restart; {refused} answered 503; slowest answer {slowest:?}",
        acked.len()
    );
    order.stop().await;
    product.stop().await;
}

/// Listings a client can use, on two instances: by status (repeatable), by creation window,
/// and by cursor, each page newest first and every order once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_filter_by_status_and_creation_and_page_by_cursor_on_either_instance() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let (a, b) = two_instances(&nats.url(), &product.grpc, dir.path()).await;
    let p = create_product(&product.http, "Listed", "1.00", 10_000).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_snapshot_version(&a.http, &p, 1).await;
    wait_snapshot_version(&b.http, &p, 1).await;
    let customer = Uuid::new_v4();
    let mut placed = Vec::new();
    for i in 0..120 {
        let http = if i % 2 == 0 { &a.http } else { &b.http };
        let order = post_order(http, &order_body(customer, &p, 1), None)
            .await
            .expect(201);
        if i % 3 == 0 {
            cancel(http, order["id"].as_str().unwrap())
                .await
                .expect(200);
        }
        placed.push(order);
    }
    let orders = OrderApi::new(&b.http);
    let query = |q: &str| format!("customerId={customer}&{q}");
    wait_for("B to list every order", WAIT, || async {
        let page = orders
            .list(&query("status=Cancelled&pageSize=1"))
            .await
            .body;
        (page["totalCount"] == 40).then_some(())
    })
    .await;
    let both = orders
        .list(&query("status=Confirmed&status=Cancelled"))
        .await
        .expect(200);
    assert_eq!(both["totalCount"], 120);
    let confirmed = orders
        .list(&query("status=Confirmed&pageSize=100"))
        .await
        .expect(200);
    assert_eq!(confirmed["totalCount"], 80);
    assert!(
        confirmed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["status"] == "Confirmed")
    );

    // Created after the 60th order: the 59 after it.
    let after = placed[60]["createdAt"].as_str().unwrap();
    let window = orders
        .http()
        .send(
            orders
                .http()
                .request(reqwest::Method::GET, "/api/orders")
                .query(&[
                    ("customerId", customer.to_string().as_str()),
                    ("createdAfter", after),
                ]),
        )
        .await
        .expect(200);
    assert_eq!(window["totalCount"], 59, "{window}");

    // Every order once, newest first, by cursor; the same order as by page number.
    let first = orders.list(&query("pageSize=100")).await.body;
    let second = orders.list(&query("pageSize=100&page=2")).await.body;
    let items: Vec<&Value> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .collect();
    let created: Vec<&str> = items
        .iter()
        .map(|o| o["createdAt"].as_str().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let by_page: Vec<Value> = items.iter().map(|o| o["id"].clone()).collect();
    let mut by_cursor = Vec::new();
    let mut next = String::new();
    loop {
        let q = if next.is_empty() {
            query("pageSize=25")
        } else {
            query(&format!("pageSize=25&cursor={next}"))
        };
        let page = orders.list(&q).await.expect(200);
        assert_eq!(page["totalCount"], 120);
        by_cursor.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].clone()),
        );
        match page["nextCursor"].as_str() {
            Some(cursor) => next = cursor.to_owned(),
            None => break,
        }
    }
    assert_eq!(by_cursor.len(), 120);
    assert_eq!(
        by_cursor, by_page,
        "cursor pages walk the same order as page numbers"
    );

    // Bad parameters are named.
    for (q, field) in [
        (query("cursor=00&page=2"), "cursor"),
        (query("status=Lost"), "status"),
        (query("createdAfter=yesterday"), "createdAfter"),
    ] {
        let problem = orders.list(&q).await.problem(400);
        assert!(problem["errors"][field].is_array(), "{q}: {problem}");
    }
    a.stop().await;
    b.stop().await;
    product.stop().await;
}
