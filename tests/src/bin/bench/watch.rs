//! Scenario 8: watchers (SSE) on one order-svc instance: what each open watch costs (RSS, CPU
//! per delivered event) and how long an event takes from the request that caused it to its
//! receipt at every watcher of the order.
use std::{path::Path, sync::Arc, time::Duration, time::Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tests::{NatsServer, ServiceProcess};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::*;

/// `watchers` SSE watches spread over `orders` orders; then every order is cancelled, paced,
/// and each watcher's receipt of its `OrderCancelled` is timed from the cancel's request.
pub(crate) async fn watchers(report: &mut Report, dir: &Path, watchers: usize, orders: usize) {
    let nats = NatsServer::start();
    let (product, grpc) = ServiceProcess::product_with(
        &nats.url(),
        &dir.join("product-watch"),
        dir,
        &[("RUST_LOG", "warn")],
    );
    let order = ServiceProcess::order(
        &nats.url(),
        &grpc,
        &dir.join("order-watch"),
        dir,
        &[("RUST_LOG", "warn"), ("ORDER_INSTANCE_ID", "watch")],
    );
    let client = bench_client(64);
    let product_id = seed_catalog(&client, &product.http, 1).await.remove(0);
    http_ready(&order.http, Duration::from_secs(60)).await;
    let mut ids = Vec::with_capacity(orders);
    while ids.len() < orders {
        let body = json!({"customerId": Uuid::new_v4(), "customerEmail": "w@example.com",
            "items": [{"productId": product_id, "quantity": 1}]});
        let r = client
            .post(format!("{}/api/orders", order.http))
            .json(&body)
            .send()
            .await
            .unwrap();
        if r.status() == 201 {
            ids.push(
                r.json::<Value>().await.unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    let rss_before = rss_mib(order.pid());
    // Cancel sent-at, per order; each watcher records its receipt latency of the cancel.
    let sent: Arc<Vec<Mutex<Option<Instant>>>> =
        Arc::new((0..orders).map(|_| Mutex::new(None)).collect());
    let latencies = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let mut open = Vec::with_capacity(watchers);
    for w in 0..watchers {
        let index = w % orders;
        let url = format!("{}/api/orders/{}/watch", order.http, ids[index]);
        let mut response = client.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let first = response.chunk().await.unwrap().expect("the current state");
        assert!(std::str::from_utf8(&first).unwrap().contains("event:"));
        let (sent, latencies) = (sent.clone(), latencies.clone());
        open.push(tokio::spawn(async move {
            let mut text = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                text.push_str(std::str::from_utf8(&chunk).unwrap());
                if text.contains("event: OrderCancelled") {
                    let at = sent[index].lock().await.expect("sent before received");
                    latencies
                        .lock()
                        .await
                        .record(at.elapsed().as_micros() as u64)
                        .unwrap();
                    return;
                }
            }
        }));
    }
    let rss_after = rss_mib(order.pid());
    let cpu_before = cpu_secs(order.pid());
    let started = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        *sent[i].lock().await = Some(Instant::now());
        let url = format!("{}/api/orders/{id}/cancel", order.http);
        let r = client
            .post(url)
            .json(&json!({"reason": "bench"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for task in open {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("every watcher got its event")
            .unwrap();
    }
    let cpu = cpu_secs(order.pid()) - cpu_before;
    let took = started.elapsed();
    let latencies = latencies.lock().await;
    let s = "8 watch";
    report.add(
        s,
        &format!("{watchers} open watches: order-svc RSS per watch"),
        (rss_after - rss_before) * 1024.0 / watchers as f64,
        "KiB",
        None,
        "",
    );
    report.add(
        s,
        &format!("{watchers} open watches: order-svc RSS"),
        rss_after,
        "MiB",
        Some(("no watch, same process", rss_before)),
        "",
    );
    report.add(
        s,
        "order-svc CPU per delivered event (cancel + release, all watchers)",
        cpu * 1e6 / (watchers as f64 * 2.0),
        "µs",
        None,
        "",
    );
    report.add(
        s,
        &format!("{orders} cancels paced over"),
        took.as_secs_f64() * 1e3,
        "ms",
        None,
        "",
    );
    latency_rows(
        report,
        s,
        "cancel request → OrderCancelled at each watcher",
        &latencies,
        None,
    );
}
