//! SIGTERM under load: exit 0 with everything acknowledged kept.
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use tests::{NatsServer, ServiceProcess, http_client, scratch, wait_for};

use crate::{get_json, wait_snapshot_version};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_load_exits_zero_and_keeps_everything_acknowledged() {
    let nats = NatsServer::start();
    let dir = scratch();
    let (mut product, grpc) =
        ServiceProcess::product(&nats.url(), &dir.path().join("product"), dir.path());
    let mut order = ServiceProcess::order(
        &nats.url(),
        &grpc,
        &dir.path().join("order"),
        dir.path(),
        &[],
    );
    let id = create_products(&product.http, 1, 100_000, 1)
        .await
        .remove(0);
    wait_snapshot_version(&order.http, &id, 1).await;

    // order-svc, then product-svc: SIGTERM while 8 clients write; restart; everything
    // acknowledged is there.
    let order_url = format!("{}/api/orders", order.http);
    let product_id = id.clone();
    let orders_acked = sigterm_under_load(&mut order, order_url, move |_, _| {
        order_body(&product_id, 1)
    })
    .await;
    for oid in &orders_acked {
        let (status, o) = get_json(&format!("{}/api/orders/{oid}", order.http)).await;
        assert_eq!(status, 200, "acknowledged order {oid} lost");
        assert_ne!(o["status"], "Pending");
    }
    let product_url = format!("{}/api/products", product.http);
    let products_acked = sigterm_under_load(&mut product, product_url, |c, i| {
        json!({"name": format!("T{c}-{i}"), "description": "", "price": "1.00", "category": "T", "stockQuantity": 1, "lowStockThreshold": 0})
    })
    .await;
    for pid in &products_acked {
        assert_eq!(
            get_json(&format!("{}/api/products/{pid}", product.http))
                .await
                .0,
            200,
            "acknowledged product {pid} lost"
        );
    }
    let rows = wait_snapshot_matches(&product.http, &order.http).await;
    crate::assert_books_agree(&product.http).await;
    eprintln!(
        "FIGURES graceful stop: order-svc exit 0 with {} orders acknowledged, product-svc exit 0 with {} creates acknowledged; all present after restart ({rows} in the snapshot); lost 0",
        orders_acked.len(),
        products_acked.len()
    );
}

/// 8 clients POST `body(client, n)` to `url` until 50 are acknowledged; then SIGTERM, which
/// must exit 0 within the grace period; then the service is restarted. Returns the ids of every
/// acknowledged (2xx) request.
pub(super) async fn sigterm_under_load(
    service: &mut ServiceProcess,
    url: String,
    body: impl Fn(usize, usize) -> Value + Send + Sync + 'static,
) -> Vec<String> {
    let body = Arc::new(body);
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for c in 0..8 {
        let (url, body, acked, stop) = (url.clone(), body.clone(), acked.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                match http_client().post(&url).json(&body(c, i)).send().await {
                    Ok(r) if r.status().is_success() => {
                        let id = r.json::<Value>().await.unwrap()["id"]
                            .as_str()
                            .unwrap()
                            .to_owned();
                        acked.lock().unwrap().push(id);
                    }
                    _ => tokio::task::yield_now().await,
                }
            }
        }));
    }
    wait_for("requests flowing", LONG, || async {
        (acked.lock().unwrap().len() >= 50).then_some(())
    })
    .await;
    let name = service.name;
    let status = tokio::task::block_in_place(|| service.terminate(Duration::from_secs(15)));
    assert!(status.success(), "{name} exit status {status}");
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.await.unwrap();
    }
    service.start();
    acked.lock().unwrap().clone()
}
