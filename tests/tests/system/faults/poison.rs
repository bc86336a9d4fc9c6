//! Malformed events on the stream are skipped, counted, and never block later ones.
use serde_json::json;
use tests::wait_for;
use uuid::Uuid;

use crate::js;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_are_skipped_counted_and_later_events_applied() {
    let Processes {
        nats,
        dir: _dir,
        product,
        grpc: _grpc,
        order,
    } = Processes::start();
    create_products(&product.http, 10, 1, 4).await;
    let js = js(&nats.url()).await;
    let bodies: Vec<Vec<u8>> = vec![
        vec![0xff, 0x00, 0x13],
        b"{\"eventType\":\"ProductCreated\"}".to_vec(),
        serde_json::to_vec(&json!({"eventId": Uuid::now_v7(), "eventType": "ProductTeleported", "schemaVersion": 1, "occurredAt": "2026-01-01T00:00:00Z",
            "productId": Uuid::nil(), "version": 1, "name": "x", "description": "", "price": "1.00", "category": "c", "deleted": false})).unwrap(),
        serde_json::to_vec(&json!({"eventId": Uuid::now_v7(), "eventType": "ProductCreated", "schemaVersion": 99, "occurredAt": "2026-01-01T00:00:00Z",
            "productId": Uuid::nil(), "version": 1, "name": "x", "description": "", "price": "1.00", "category": "c", "deleted": false})).unwrap(),
    ];
    for body in &bodies {
        js.publish(
            format!("eshop.products.{}", Uuid::new_v4()),
            body.clone().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        create_products(&product.http, 5, 1, 5).await;
    }
    let rows = wait_snapshot_matches(&product.http, &order.http).await;
    wait_for("the poison count", LONG, || async {
        (ready_checks(&order.http).await["snapshot"]["poison"].as_u64()
            == Some(bodies.len() as u64))
        .then_some(())
    })
    .await;
    // No order is placed here, so the books check (ORDERS against the ledger) could not fail:
    // it is left to the scenarios that place orders.
    eprintln!(
        "FIGURES poison: {} poison messages terminated and counted; {rows} valid products applied",
        bodies.len()
    );
}
