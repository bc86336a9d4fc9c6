//! The stock loop: shipping commits the reservation (on-hand drops by exactly the shipped
//! quantities), CommitStock is idempotent by order id, and the order states that cannot ship
//! or cannot be cancelled any more say so.
use serde_json::{Value, json};
use tests::{
    NatsServer, OrderApi, OrderService, ProductApi, ProductService, System, order_body, scratch,
    wait_for,
};
use tonic::Code;
use uuid::Uuid;

use crate::{WAIT, get_json, js, product_body, wait_snapshot_version};

/// (on hand, reserved) of a product, from product-svc's HTTP API.
async fn stock(product_http: &str, id: &str) -> (i64, i64) {
    let body = ProductApi::new(product_http).get(id).await.expect(200);
    (
        body["stockQuantity"].as_i64().unwrap(),
        body["reservedQuantity"].as_i64().unwrap(),
    )
}

/// Places an order for `quantity` of one product (asserting 201).
async fn place(order_http: &str, id: &str, quantity: u32) -> Value {
    let body = order_body(Uuid::new_v4(), &[(id, i64::from(quantity))]);
    OrderApi::new(order_http).place(&body).await.expect(201)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipping_commits_exactly_the_reserved_units_once() {
    let system = System::start().await;
    let (product, orders) = (&system.product, &system.orders);
    let order_http = &system.order.http;
    // Threshold 8: reserving 3 of 10 crosses below it (one StockLow); shipping does not move
    // available stock, so it must not fire another.
    let id = system
        .products
        .create(&product_body("Shippable", "5.00", 10, 8))
        .await
        .id();
    orders.wait_snapshot_version(&id, 1).await;

    let placed = place(order_http, &id, 3).await;
    assert_eq!(placed["status"], "Confirmed");
    assert_eq!(stock(&product.http, &id).await, (10, 3));
    let order_id = placed["id"].as_str().unwrap().to_owned();
    let shipped = orders.ship(&order_id).await.expect(200);
    assert_eq!(shipped["status"], "Shipped");
    wait_for("the commit to reach product-svc", WAIT, || async {
        (stock(&product.http, &id).await == (7, 0)).then_some(())
    })
    .await;
    // The commit is recorded on the order (version 3: confirmed, shipped, committed).
    wait_for("the commit to be recorded", WAIT, || async {
        (orders.get(&order_id).await.body["version"] == 3).then_some(())
    })
    .await;
    let again = orders.ship(&order_id).await;
    assert_eq!(
        again.status, 200,
        "shipping twice answers the shipped order"
    );
    assert_eq!(again.body["status"], "Shipped");
    assert_eq!(stock(&product.http, &id).await, (7, 0), "one decrement");
    let problem = orders.cancel(&order_id, "too late").await.problem(409);
    assert_eq!(problem["orderStatus"], "Shipped");

    let jetstream = js(&system.nats.url()).await;
    let stock_stream = jetstream.get_stream("STOCK").await.unwrap();
    let low = stock_stream
        .info_with_subjects(format!("eshop.stock.{id}"))
        .await
        .unwrap();
    let mut count = 0;
    futures::pin_mut!(low);
    while let Some(Ok((_, n))) = futures::StreamExt::next(&mut low).await {
        count += n;
    }
    assert_eq!(count, 1, "one StockLow crossing for the whole flow");

    // Orders that are not Confirmed cannot ship; the problem names their state.
    let rejected = place(order_http, &id, 50).await;
    assert_eq!(rejected["status"], "Rejected");
    let cancelled = place(order_http, &id, 1).await;
    let cancelled_id = cancelled["id"].as_str().unwrap();
    orders
        .cancel(cancelled_id, "changed my mind")
        .await
        .expect(200);
    for (body, status) in [(&rejected, "Rejected"), (&cancelled, "Cancelled")] {
        let problem = orders.ship(body["id"].as_str().unwrap()).await.problem(409);
        assert_eq!(problem["orderStatus"], status);
    }
    orders.ship(&Uuid::new_v4().to_string()).await.problem(404);
    wait_for("the cancelled order's release", WAIT, || async {
        (stock(&product.http, &id).await == (7, 0)).then_some(())
    })
    .await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_stock_is_idempotent_and_refuses_unknown_or_released_reservations() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), dir.path()).await;
    let id = crate::create_product(&product.http, "Committed", "1.00", 20).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let api = product.stock().await;
    let shipped = Uuid::new_v4();
    assert!(api.reserve(shipped, &[(&id, 4)]).await.unwrap().success);
    let first = api.commit(shipped).await.unwrap();
    let second = api.commit(shipped).await.unwrap();
    assert!(
        first.committed && !second.committed,
        "the second call changes nothing"
    );
    assert_eq!(
        stock(&product.http, &id).await,
        (16, 0),
        "one decrement of 4"
    );
    // A released order's stock was given back: nothing to commit.
    let released = Uuid::new_v4();
    assert!(api.reserve(released, &[(&id, 2)]).await.unwrap().success);
    api.release(released).await.unwrap();
    let refused = api.commit(released).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let unknown = api.commit(Uuid::new_v4()).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let invalid = api.commit("nope").await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(
        invalid.message().contains("order_id"),
        "{}",
        invalid.message()
    );
    // A commit after release must not have moved stock; a release after commit neither.
    api.release(shipped).await.unwrap();
    assert_eq!(stock(&product.http, &id).await, (16, 0));
    product.stop().await;
}

/// The follower's counters from product-svc's readiness report.
async fn follower(product_http: &str) -> Value {
    get_json(&format!("{product_http}/health/ready")).await.1["figures"]["orderFollower"].clone()
}

fn short_grace(nats: &str, dir: &std::path::Path, grpc_port: u16) -> product_svc::Config {
    let mut config = crate::product_config(nats, dir, grpc_port);
    // Short, but well above the moment between an order's reservation and its first publish
    // (an order still unseen after it would be recorded as rejected).
    config.repair_grace_secs = 2;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_lost_with_order_svc_is_repaired_by_product_svcs_follower() {
    let nats = NatsServer::start();
    let dir = scratch();
    let port = tests::free_port();
    let product_dir = dir.path().join("product");
    let product = ProductService::start_with(short_grace(&nats.url(), &product_dir, port)).await;
    let order = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order")).await;
    let id = crate::create_product(&product.http, "Leaky", "2.00", 10).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_snapshot_version(&order.http, &id, 1).await;
    let placed = place(&order.http, &id, 3).await;
    assert_eq!(placed["status"], "Confirmed");

    // product-svc down: the cancel is recorded, its release cannot be sent.
    product.stop().await;
    let placed_id = placed["id"].as_str().unwrap();
    order
        .api()
        .cancel(placed_id, "lost release")
        .await
        .expect(200);
    // ...and order-svc is gone for good with its disk: nobody will send the release.
    order.stop().await;
    std::fs::remove_dir_all(dir.path().join("order")).unwrap();

    let product = ProductService::start_with(short_grace(&nats.url(), &product_dir, port)).await;
    wait_for("the follower to release the stock", WAIT, || async {
        (stock(&product.http, &id).await == (10, 0)).then_some(())
    })
    .await;
    assert_eq!(follower(&product.http).await["releases"], 1);
    crate::assert_books_agree(&product.http).await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fabricated_cancel_on_a_confirmed_order_releases_its_stock_once() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start_with(short_grace(
        &nats.url(),
        &dir.path().join("product"),
        tests::free_port(),
    ))
    .await;
    let order = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order")).await;
    let id = crate::create_product(&product.http, "Forged", "2.00", 10).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_snapshot_version(&order.http, &id, 1).await;
    let placed = place(&order.http, &id, 4).await;
    let order_id = placed["id"].as_str().unwrap();
    assert_eq!(stock(&product.http, &id).await, (10, 4));

    // Someone with write access to the order stream publishes a Cancelled state that owes no
    // release (so order-svc will not send one), with the right compare-and-set.
    let jetstream = js(&nats.url()).await;
    let subject = format!("eshop.orders.{order_id}");
    let stream = jetstream.get_stream("ORDERS").await.unwrap();
    let last = stream
        .get_last_raw_message_by_subject(&subject)
        .await
        .unwrap();
    let mut event: Value = serde_json::from_slice(&last.payload).unwrap();
    event["eventType"] = json!("OrderCancelled");
    event["status"] = json!("Cancelled");
    event["version"] = json!(event["version"].as_u64().unwrap() + 1);
    event["releaseOwed"] = json!(false);
    event["eventId"] = json!(Uuid::now_v7());
    event["updatedAt"] = json!(chrono::Utc::now());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "Nats-Expected-Last-Subject-Sequence",
        last.sequence.to_string().as_str(),
    );
    jetstream
        .publish_with_headers(subject, headers, serde_json::to_vec(&event).unwrap().into())
        .await
        .unwrap()
        .await
        .expect("the CAS publish is accepted");

    wait_for("the follower to release the stock", WAIT, || async {
        (stock(&product.http, &id).await == (10, 0)).then_some(())
    })
    .await;
    crate::assert_books_agree(&product.http).await;
    // Once: the counter says one repair, and the stock did not move twice.
    assert_eq!(follower(&product.http).await["releases"], 1);
    assert_eq!(stock(&product.http, &id).await, (10, 0));
    order.stop().await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_reports_a_reservation_written_behind_the_ledgers_back() {
    let nats = NatsServer::start();
    let dir = scratch();
    let port = tests::free_port();
    let product_dir = dir.path().join("product");
    let product =
        ProductService::start_with(crate::product_config(&nats.url(), &product_dir, port)).await;
    let order = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order")).await;
    let id = crate::create_product(&product.http, "Audited", "2.00", 10).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_snapshot_version(&order.http, &id, 1).await;
    let placed = place(&order.http, &id, 2).await;
    assert_eq!(placed["status"], "Confirmed");
    crate::assert_books_agree(&product.http).await;
    order.stop().await;

    // A reservation for an order nobody placed, published straight to the ledger (not through
    // the writer: no fence): the audit reads the stream, not the writer's books.
    let ghost = Uuid::new_v4();
    let js = crate::js(&nats.url()).await;
    let row = json!({"items": [[id, 1]], "status": "Active", "failure": null});
    js.publish(
        format!("eshop.ledger.reservations.{ghost}"),
        serde_json::to_vec(&row).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let (status, report) = get_json(&format!("{}/api/stock/audit", product.http)).await;
    assert_eq!(status, 200);
    assert_eq!(report["mismatches"], 1, "{report}");
    assert_eq!(report["kinds"]["heldWithoutOrder"]["count"], 1);
    assert_eq!(
        report["kinds"]["heldWithoutOrder"]["orderIds"][0],
        json!(ghost)
    );
    assert_eq!(report["ordersChecked"], 1);
    assert_eq!(report["reservationsChecked"], 2);
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_reservations_are_compacted_after_retention_and_held_ones_stay() {
    let nats = NatsServer::start();
    let dir = scratch();
    let mut config =
        crate::product_config(&nats.url(), &dir.path().join("product"), tests::free_port());
    config.reservation_retention_secs = 1;
    let product = ProductService::start_with(config).await;
    let order = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order")).await;
    let id = crate::create_product(&product.http, "Compacted", "2.00", 10).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_snapshot_version(&order.http, &id, 1).await;
    let held = place(&order.http, &id, 1).await;
    let shipped = place(&order.http, &id, 2).await;
    let cancelled = place(&order.http, &id, 3).await;
    let orders = order.api();
    let id_of = |o: &Value| o["id"].as_str().unwrap().to_owned();
    orders.ship(&id_of(&shipped)).await.expect(200);
    orders
        .cancel(&id_of(&cancelled), "compact me")
        .await
        .expect(200);
    // A tombstone too: a release for an order product-svc never saw.
    product.stock().await.release(Uuid::new_v4()).await.unwrap();

    let audit = format!("{}/api/stock/audit", product.http);
    wait_for("the closed reservations to be compacted", WAIT, || async {
        let (_, report) = get_json(&audit).await;
        (report["reservationsChecked"] == 1).then_some(report)
    })
    .await;
    assert_eq!(
        stock(&product.http, &id).await,
        (8, 1),
        "the held reservation stays"
    );
    crate::assert_books_agree(&product.http).await;
    // A reserve retried for the cancelled order after its reservation was compacted (an edge
    // site back after a week): the order is settled in ORDERS, so nothing is held again.
    let late = product
        .stock()
        .await
        .reserve(id_of(&cancelled), &[(id.as_str(), 3)])
        .await
        .unwrap();
    assert!(!late.success, "{late:?}");
    assert_eq!(
        late.error_code,
        proto::ErrorCode::RequestMismatch as i32,
        "{late:?}"
    );
    assert_eq!(
        stock(&product.http, &id).await,
        (8, 1),
        "nothing held again"
    );
    // The shipped units were folded into a count before their reservation went: a cache rebuilt
    // from the compacted ledger has them.
    product.stop().await;
    let mut config =
        crate::product_config(&nats.url(), &dir.path().join("product"), tests::free_port());
    config.reservation_retention_secs = 1;
    let product = ProductService::start_with(config).await;
    assert_eq!(stock(&product.http, &id).await, (8, 1), "after a rebuild");
    let order = {
        order.stop().await;
        OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order")).await
    };
    let orders = order.api();
    // The held order still releases normally after the others were compacted.
    orders.cancel(&id_of(&held), "done").await.expect(200);
    wait_for("the release", WAIT, || async {
        (stock(&product.http, &id).await == (8, 0)).then_some(())
    })
    .await;
    order.stop().await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_created_cancelled_and_shipped_across_two_instances_leave_exact_books() {
    use futures::StreamExt;
    use std::collections::HashMap;
    let orders: usize = std::env::var("STOCK_LOOP_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let a = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order-a")).await;
    let b = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order-b")).await;
    const INITIAL: i64 = 100_000;
    let mut ids = Vec::new();
    for i in 0..5 {
        let p = crate::create_product(&product.http, &format!("Loop {i}"), "1.00", INITIAL).await;
        ids.push(p["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        wait_snapshot_version(&a.http, id, 1).await;
        wait_snapshot_version(&b.http, id, 1).await;
    }
    let https = [a.http.clone(), b.http.clone()];
    // Order i: product i % 5, 1 + i % 3 units, placed on instance i % 2; a third are then
    // cancelled and a third shipped, each on the other instance.
    let placed: Vec<(usize, String)> = futures::stream::iter(0..orders)
        .map(|i| {
            let (http, id) = (https[i % 2].clone(), ids[i % 5].clone());
            async move {
                let o = place(&http, &id, 1 + (i % 3) as u32).await;
                assert_eq!(o["status"], "Confirmed");
                (i, o["id"].as_str().unwrap().to_owned())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    futures::stream::iter(placed.iter().filter(|(i, _)| i % 3 != 0))
        .for_each_concurrent(32, |(i, order_id)| {
            let other = OrderApi::new(&https[(i + 1) % 2]);
            async move {
                let answer = if i % 3 == 1 {
                    other.cancel(order_id, "load").await
                } else {
                    other.ship(order_id).await
                };
                assert_eq!(answer.status, 200, "order {i}");
            }
        })
        .await;

    // What the orders say, per product: held = confirmed units, shipped = shipped units.
    let mut held: HashMap<&str, i64> = HashMap::new();
    let mut shipped: HashMap<&str, i64> = HashMap::new();
    for (i, _) in &placed {
        let units = 1 + (i % 3) as i64;
        match i % 3 {
            0 => *held.entry(&ids[i % 5]).or_default() += units,
            2 => *shipped.entry(&ids[i % 5]).or_default() += units,
            _ => {}
        }
    }
    for id in &ids {
        let expected = (
            INITIAL - shipped.get(id.as_str()).copied().unwrap_or(0),
            held.get(id.as_str()).copied().unwrap_or(0),
        );
        wait_for(
            &format!("product {id} to match its orders"),
            WAIT,
            || async { (stock(&product.http, id).await == expected).then_some(()) },
        )
        .await;
    }
    crate::assert_books_agree(&product.http).await;
    a.stop().await;
    b.stop().await;
    product.stop().await;
}
