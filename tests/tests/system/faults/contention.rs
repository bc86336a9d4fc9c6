//! Many clients racing for little stock never oversell.
use futures::StreamExt;
use serde_json::{Value, json};
use tests::OrderApi;
use uuid::Uuid;

use crate::{get_json, wait_snapshot_version};

use super::*;

pub(super) fn order_body(product: &str, quantity: i64) -> Value {
    json!({"customerId": Uuid::new_v4(), "customerEmail": "load@example.com", "items": [{"productId": product, "quantity": quantity}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_racing_for_fifty_units_never_oversell() {
    let clients = env_usize("FAULT_CONTENDERS", 64);
    let units = env_usize("FAULT_UNITS", 50) as i64;
    let Processes {
        nats: _nats,
        dir: _dir,
        product,
        grpc: _grpc,
        order,
    } = Processes::start();
    let id = create_products(&product.http, 1, units, 1).await.remove(0);
    wait_snapshot_version(&order.http, &id, 1).await;
    let results: Vec<Value> = futures::stream::iter(0..clients)
        .map(|_| {
            let (orders, id) = (OrderApi::new(&order.http), id.clone());
            async move { orders.place(&order_body(&id, 1)).await.body }
        })
        .buffer_unordered(clients)
        .collect()
        .await;
    let confirmed = results
        .iter()
        .filter(|o| o["status"] == "Confirmed")
        .count() as i64;
    let rejected = results.iter().filter(|o| o["status"] == "Rejected").count() as i64;
    assert_eq!(
        confirmed, units,
        "confirmed quantities sum to the units available"
    );
    assert_eq!(
        rejected,
        clients as i64 - units,
        "every other order is rejected, none pending"
    );
    let (_, p) = get_json(&format!("{}/api/products/{id}", product.http)).await;
    assert_eq!(p["reservedQuantity"], units);
    assert_eq!(p["availableQuantity"], 0);
    crate::assert_books_agree(&product.http).await;
    eprintln!(
        "FIGURES contention: {clients} clients, {units} units: {confirmed} confirmed, {rejected} rejected, 0 pending, reserved {units}"
    );
}
