//! Lost and late gRPC replies are retried and never reserve twice.
use std::time::Duration;

use tests::{FaultyProxy, NatsServer, OrderApi, ServiceProcess, scratch, wait_for};

use crate::{get_json, wait_snapshot_version};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_or_late_replies_are_retried_and_never_reserve_twice() {
    let orders = env_usize("FAULT_LOSSY_ORDERS", 12);
    let nats = NatsServer::start();
    let dir = scratch();
    let (product, grpc) =
        ServiceProcess::product(&nats.url(), &dir.path().join("product"), dir.path());
    let proxy = FaultyProxy::start(grpc.trim_start_matches("http://").parse().unwrap()).await;
    let order = ServiceProcess::order(
        &nats.url(),
        &proxy.url(),
        &dir.path().join("order"),
        dir.path(),
        &[],
    );
    let id = create_products(&product.http, 1, 1000, 1).await.remove(0);
    wait_snapshot_version(&order.http, &id, 1).await;
    let mut total = 0;
    let mut placed = Vec::new();
    for i in 0..orders {
        if i % 2 == 0 {
            proxy.drop_replies_on_next_connections(1);
        } else {
            proxy.delay_replies_on_next_connections(1, Duration::from_millis(1500));
        }
        proxy.cut_all();
        wait_for("old connections to close", LONG, || async {
            (proxy.open_connections() == 0).then_some(())
        })
        .await;
        let q = 1 + (i % 4) as i64;
        let r = OrderApi::new(&order.http).place(&order_body(&id, q)).await;
        // 202 is allowed here (a late reply can outlast the budget); the in-call retry that turns
        // a lost reply into a 201 has its own test (stock_calls.rs).
        assert!(r.status == 201 || r.status == 202, "{}", r.status);
        placed.push(r.id());
        total += q;
    }
    for oid in &placed {
        wait_for("the order to be confirmed", LONG, || async {
            let (_, o) = get_json(&format!("{}/api/orders/{oid}", order.http)).await;
            (o["status"] == "Confirmed").then_some(())
        })
        .await;
    }
    let (dropped, delayed) = proxy.injected();
    assert!(
        dropped > 0 && delayed > 0,
        "faults were injected: {dropped} connections lost replies, {delayed} were late"
    );
    let (_, p) = get_json(&format!("{}/api/products/{id}", product.http)).await;
    assert_eq!(
        p["reservedQuantity"].as_i64(),
        Some(total),
        "each order reserved exactly once"
    );
    crate::assert_books_agree(&product.http).await;
    eprintln!(
        "FIGURES lossy: {orders} orders through {} proxied connections ({dropped} lost replies, {delayed} late); reserved {total} = sum of confirmed",
        proxy.connections()
    );
}
