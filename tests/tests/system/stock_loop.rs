//! The stock loop: shipping commits the reservation (on-hand drops by exactly the shipped
//! quantities), CommitStock is idempotent by order id, and the order states that cannot ship
//! or cannot be cancelled any more say so.
use proto::{CommitStockRequest, OrderItem, ReleaseStockRequest, ReserveStockRequest};
use serde_json::{Value, json};
use tests::{NatsServer, OrderService, ProductService, http_client, scratch, wait_for};
use tonic::Code;
use uuid::Uuid;

use crate::{WAIT, expect_problem, get_json, js, product_body, wait_snapshot_version};

/// (on hand, reserved) of a product, from product-svc's HTTP API.
async fn stock(product_http: &str, id: &str) -> (i64, i64) {
    let (_, body) = get_json(&format!("{product_http}/api/products/{id}")).await;
    (
        body["stockQuantity"].as_i64().unwrap(),
        body["reservedQuantity"].as_i64().unwrap(),
    )
}

async fn place(order_http: &str, id: &str, quantity: u32) -> Value {
    let response = http_client()
        .post(format!("{order_http}/api/orders"))
        .json(
            &json!({"customerId": Uuid::new_v4(), "customerEmail": "ship@example.com",
                      "items": [{"productId": id, "quantity": quantity}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn post(url: String) -> reqwest::Response {
    http_client()
        .post(url)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipping_commits_exactly_the_reserved_units_once() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let order = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order")).await;
    // Threshold 8: reserving 3 of 10 crosses below it (one StockLow); shipping does not move
    // available stock, so it must not fire another.
    let created = http_client()
        .post(format!("{}/api/products", product.http))
        .json(&product_body("Shippable", "5.00", 10, 8))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_snapshot_version(&order.http, &id, 1).await;

    let placed = place(&order.http, &id, 3).await;
    assert_eq!(placed["status"], "Confirmed");
    assert_eq!(stock(&product.http, &id).await, (10, 3));
    let order_id = placed["id"].as_str().unwrap().to_owned();
    let ship_url = format!("{}/api/orders/{order_id}/ship", order.http);
    let shipped = post(ship_url.clone()).await;
    assert_eq!(shipped.status(), 200);
    let shipped: Value = shipped.json().await.unwrap();
    assert_eq!(shipped["status"], "Shipped");
    wait_for("the commit to reach product-svc", WAIT, || async {
        (stock(&product.http, &id).await == (7, 0)).then_some(())
    })
    .await;
    // The commit is recorded on the order (version 4: placed, confirmed, shipped, committed).
    wait_for("the commit to be recorded", WAIT, || async {
        let (_, body) = get_json(&format!("{}/api/orders/{order_id}", order.http)).await;
        (body["version"] == 4).then_some(())
    })
    .await;
    let again = post(ship_url).await;
    assert_eq!(
        again.status(),
        200,
        "shipping twice answers the shipped order"
    );
    assert_eq!(again.json::<Value>().await.unwrap()["status"], "Shipped");
    assert_eq!(stock(&product.http, &id).await, (7, 0), "one decrement");
    let cancel = http_client()
        .post(format!("{}/api/orders/{order_id}/cancel", order.http))
        .json(&json!({"reason": "too late"}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(cancel, 409).await;
    assert_eq!(problem["orderStatus"], "Shipped");

    let jetstream = js(&nats.url()).await;
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
    let rejected = place(&order.http, &id, 50).await;
    assert_eq!(rejected["status"], "Rejected");
    let cancelled = place(&order.http, &id, 1).await;
    let cancelled_id = cancelled["id"].as_str().unwrap();
    let r = http_client()
        .post(format!("{}/api/orders/{cancelled_id}/cancel", order.http))
        .json(&json!({"reason": "changed my mind"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for (body, status) in [(&rejected, "Rejected"), (&cancelled, "Cancelled")] {
        let r = post(format!(
            "{}/api/orders/{}/ship",
            order.http,
            body["id"].as_str().unwrap()
        ))
        .await;
        let problem = expect_problem(r, 409).await;
        assert_eq!(problem["orderStatus"], status);
    }
    let unknown = post(format!("{}/api/orders/{}/ship", order.http, Uuid::new_v4())).await;
    expect_problem(unknown, 404).await;
    wait_for("the cancelled order's release", WAIT, || async {
        (stock(&product.http, &id).await == (7, 0)).then_some(())
    })
    .await;
    order.stop().await;
    product.stop().await;
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
    let mut grpc = product.grpc_client().await;
    let reserve = |order: Uuid, quantity: i32| ReserveStockRequest {
        order_id: order.to_string(),
        items: vec![OrderItem {
            product_id: id.clone(),
            quantity,
        }],
    };
    let commit = |order: Uuid| CommitStockRequest {
        order_id: order.to_string(),
    };
    let shipped = Uuid::new_v4();
    assert!(
        grpc.reserve_stock(reserve(shipped, 4))
            .await
            .unwrap()
            .into_inner()
            .success
    );
    let first = grpc
        .commit_stock(commit(shipped))
        .await
        .unwrap()
        .into_inner();
    let second = grpc
        .commit_stock(commit(shipped))
        .await
        .unwrap()
        .into_inner();
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
    assert!(
        grpc.reserve_stock(reserve(released, 2))
            .await
            .unwrap()
            .into_inner()
            .success
    );
    grpc.release_stock(ReleaseStockRequest {
        order_id: released.to_string(),
    })
    .await
    .unwrap();
    let refused = grpc.commit_stock(commit(released)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let unknown = grpc.commit_stock(commit(Uuid::new_v4())).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let invalid = grpc
        .commit_stock(CommitStockRequest {
            order_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(
        invalid.message().contains("order_id"),
        "{}",
        invalid.message()
    );
    // A commit after release must not have moved stock; a release after commit neither.
    grpc.release_stock(ReleaseStockRequest {
        order_id: shipped.to_string(),
    })
    .await
    .unwrap();
    assert_eq!(stock(&product.http, &id).await, (16, 0));
    product.stop().await;
}
