//! Orders reserve stock before their first publish. An order that held stock but never reached
//! the order stream is recorded as rejected by product-svc and its stock given back; of that
//! rejection and the order's own (late) first publish exactly one lands.
use async_nats::jetstream::{self, message::PublishMessage};
use serde_json::{Value, json};
use tests::{NatsServer, OrderService, ProductApi, ProductService, StockApi, scratch, wait_for};
use tonic::Code;
use uuid::Uuid;

use crate::{WAIT, create_product, js, last_message, product_config, wait_snapshot_version};

/// An order's first state as order-svc writes it (`status` Rejected: what product-svc records
/// if the order never lands; Confirmed: the order's own first publish).
fn first_state(order: Uuid, product: &str, quantity: u32, status: &str, event: &str) -> Value {
    let now = chrono::Utc::now();
    json!({
        "eventId": Uuid::now_v7(), "eventType": event, "schemaVersion": 2, "occurredAt": now,
        "orderId": order, "version": 1, "status": status, "customerId": Uuid::new_v4(),
        "customerEmail": "ann@example.com",
        "items": [{"productId": product, "productName": "Held", "quantity": quantity,
                   "unitPrice": "2.00", "lineTotal": "2.00"}],
        "totalAmount": "2.00", "reason": "the order was not recorded in time",
        "failedProductIds": [], "releaseOwed": false, "commitOwed": false,
        "createdAt": now, "updatedAt": now,
    })
}

/// Reserves `quantity` of `product` for `order` as order-svc does before its first publish.
async fn reserve_unrecorded(
    stock: &StockApi,
    order: Uuid,
    product: &str,
    quantity: i32,
) -> Result<proto::ReserveStockResponse, tonic::Status> {
    let state = first_state(order, product, quantity as u32, "Rejected", "OrderRejected");
    let mut request = tests::reserve_request(order, &[(product, quantity)]);
    request.unrecorded = Some(proto::UnrecordedOrder {
        subject: format!("eshop.orders.{order}"),
        state: state.to_string().into_bytes(),
    });
    stock.send_reserve(request).await
}

/// Publishes an order's first state (expected last subject sequence 0).
async fn publish_first(js: &jetstream::Context, order: Uuid, state: &Value) -> Result<(), String> {
    let publish = PublishMessage::build()
        .payload(state.to_string().into())
        .expected_last_subject_sequence(0);
    js.send_publish(format!("eshop.orders.{order}"), publish)
        .await
        .map_err(|e| e.to_string())?
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_held_for_an_order_that_never_lands_is_rejected_and_released_and_a_late_publish_loses()
 {
    let nats = NatsServer::start();
    let dir = scratch();
    let mut config = product_config(&nats.url(), dir.path(), tests::free_port());
    // The landed order's first publish must come within it, even on a busy machine.
    config.repair_grace_secs = 3;
    let product = ProductService::start_with(config).await;
    let js = js(&nats.url()).await;
    js.create_stream(shared::streams::orders("ORDERS", "eshop.orders", 1))
        .await
        .unwrap();
    let p = create_product(&product.http, "Held", "2.00", 10).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stock = StockApi::connect(&product.grpc).await;

    // Two orders hold stock before their first publish; only one of them lands (within grace).
    let (lost, landed) = (Uuid::now_v7(), Uuid::now_v7());
    assert!(
        reserve_unrecorded(&stock, lost, &p, 3)
            .await
            .unwrap()
            .success
    );
    assert!(
        reserve_unrecorded(&stock, landed, &p, 2)
            .await
            .unwrap()
            .success
    );
    let confirmed = first_state(landed, &p, 2, "Confirmed", "OrderConfirmed");
    publish_first(&js, landed, &confirmed).await.unwrap();
    let api = ProductApi::new(&product.http);
    assert_eq!(api.get(&p).await.expect(200)["reservedQuantity"], 5);

    // The lost one is recorded as rejected (its first message) and its stock given back.
    wait_for("the lost order's stock released", WAIT, || async {
        (api.get(&p).await.body["reservedQuantity"] == 2).then_some(())
    })
    .await;
    let (headers, recorded) = last_message(&js, "ORDERS", &format!("eshop.orders.{lost}"))
        .await
        .expect("the rejection is the lost order's first message");
    assert_eq!(
        (
            &recorded["eventType"],
            &recorded["status"],
            &recorded["version"]
        ),
        (&json!("OrderRejected"), &json!("Rejected"), &json!(1))
    );
    assert_eq!(
        headers.get("Eshop-Event-Type").map(|v| v.as_str()),
        Some("OrderRejected")
    );
    // The landed one keeps its stock and its state.
    let (_, kept) = last_message(&js, "ORDERS", &format!("eshop.orders.{landed}"))
        .await
        .unwrap();
    assert_eq!(kept["status"], "Confirmed");
    // The lost order's first publish, however late, loses: the subject is taken.
    let late = first_state(lost, &p, 3, "Confirmed", "OrderConfirmed");
    let refused = publish_first(&js, lost, &late).await.unwrap_err();
    assert!(refused.contains("wrong last sequence"), "{refused}");
    let (_, ready) = crate::get_json(&format!("{}/health/ready", product.http)).await;
    assert_eq!(ready["figures"]["orderFollower"]["unrecordedRejected"], 1);
    crate::assert_books_agree(&product.http).await;

    // What order-svc hands over is checked, naming the field; nothing is held for it.
    let other = Uuid::now_v7();
    let mut request = tests::reserve_request(other, &[(&p, 1)]);
    request.unrecorded = Some(proto::UnrecordedOrder {
        subject: format!("eshop.orders.{lost}"),
        state: first_state(other, &p, 1, "Rejected", "OrderRejected")
            .to_string()
            .into_bytes(),
    });
    let bad = stock.send_reserve(request.clone()).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("unrecorded.subject"), "{bad:?}");
    request.unrecorded = Some(proto::UnrecordedOrder {
        subject: format!("eshop.orders.{other}"),
        state: first_state(other, &p, 1, "Confirmed", "OrderConfirmed")
            .to_string()
            .into_bytes(),
    });
    let bad = stock.send_reserve(request).await.unwrap_err();
    assert!(bad.message().starts_with("unrecorded.state"), "{bad:?}");
    assert_eq!(api.get(&p).await.expect(200)["reservedQuantity"], 2);
    product.stop().await;
}

/// order-svc's half: the reservation it makes carries the order's subject and its rejected
/// first state, and the order it answers is confirmed at version 1 with no Pending state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_svc_reserves_with_the_orders_rejected_state_then_publishes_it_confirmed() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let order = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order")).await;
    let p = create_product(&product.http, "Handed", "2.00", 10).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_snapshot_version(&order.http, &p, 1).await;
    let placed = order
        .api()
        .place(&tests::order_body(Uuid::new_v4(), &[(&p, 2)]))
        .await
        .expect(201);
    assert_eq!(
        (&placed["status"], &placed["version"]),
        (&json!("Confirmed"), &json!(1))
    );
    let id = placed["id"].as_str().unwrap();
    let js = js(&nats.url()).await;
    let (_, reservation) = last_message(&js, "LEDGER", &format!("eshop.ledger.reservations.{id}"))
        .await
        .expect("the reservation's ledger message");
    let unrecorded = &reservation["unrecorded"];
    assert_eq!(unrecorded["subject"], format!("eshop.orders.{id}"));
    let state = &unrecorded["state"];
    assert_eq!(
        (&state["orderId"], &state["status"], &state["version"]),
        (&placed["id"], &json!("Rejected"), &json!(1))
    );
    assert_eq!(state["customerId"], placed["customerId"]);
    let history = order.api().history(id).await.expect(200);
    let events: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["OrderConfirmed"], "no Pending state was published");
    crate::assert_books_agree(&product.http).await;
    order.stop().await;
    product.stop().await;
}
