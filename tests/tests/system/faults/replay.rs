//! A service or its NATS link lost in the middle of a cold-start replay.
use std::time::Instant;

use tests::{FaultyProxy, NatsServer, ServiceProcess, scratch, wait_for, wait_until_ready};

use crate::js;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_svc_killed_mid_replay_recovers_the_exact_catalog() {
    let n = env_usize("FAULT_REPLAY_PRODUCTS", 20_000);
    let nats = NatsServer::start();
    let dir = scratch();
    let (_product, grpc) =
        ServiceProcess::product(&nats.url(), &dir.path().join("product"), dir.path());
    let product_http = _product.http.clone();
    let started = Instant::now();
    create_products(&product_http, n, 5, 32).await;
    let created_in = started.elapsed();
    crate::wait_stream_messages(&js(&nats.url()).await, "PRODUCTS", n as u64).await;

    let mut order = ServiceProcess::order(
        &nats.url(),
        &grpc,
        &dir.path().join("order"),
        dir.path(),
        &[],
    );
    let applied_at_kill = wait_for("the replay to start", LONG, || async {
        let applied = ready_checks(&order.http).await["snapshot"]["applied"]
            .as_u64()
            .unwrap_or(0);
        (applied > 0).then_some(applied)
    })
    .await;
    order.kill9();
    assert!(
        (applied_at_kill as usize) < n,
        "killed mid-replay ({applied_at_kill} of {n} applied)"
    );
    let restarted = Instant::now();
    order.start();
    wait_until_ready(&order.http, LONG).await;
    let ready_in = restarted.elapsed();
    let rows = wait_snapshot_matches(&product_http, &order.http).await;
    assert_eq!(rows, n);
    // No order is placed here, so the books check (ORDERS against the ledger) could not fail:
    // it is left to the scenarios that place orders.
    eprintln!(
        "FIGURES replay: {n} products created in {created_in:?}; killed at {applied_at_kill} applied; ready {ready_in:?} after restart; snapshot == catalog; lost 0"
    );
}

/// order-svc's NATS connection runs through a proxy that cuts it twice mid-replay: deliveries in
/// flight are lost on the way. The durable acks all-up-to, so a lost delivery must never be
/// acknowledged by a later ack: the snapshot still ends up equal to the catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_connection_cut_mid_replay_loses_no_event() {
    let n = env_usize("FAULT_CUT_PRODUCTS", 10_000);
    let nats = NatsServer::start();
    let dir = scratch();
    let (product, grpc) =
        ServiceProcess::product(&nats.url(), &dir.path().join("product"), dir.path());
    create_products(&product.http, n, 1, 32).await;
    crate::wait_stream_messages(&js(&nats.url()).await, "PRODUCTS", n as u64).await;
    let proxy = FaultyProxy::start(format!("127.0.0.1:{}", nats.port()).parse().unwrap()).await;
    let order = ServiceProcess::order(
        &format!("nats://{}", proxy.addr),
        &grpc,
        &dir.path().join("order"),
        dir.path(),
        &[],
    );
    let mut cuts_at = Vec::new();
    for _ in 0..2 {
        let last = cuts_at.last().copied().unwrap_or(0);
        let applied = wait_for("the replay to move on", LONG, || async {
            let applied = ready_checks(&order.http).await["snapshot"]["applied"]
                .as_u64()
                .unwrap_or(0);
            (applied > last).then_some(applied)
        })
        .await;
        proxy.cut_all();
        cuts_at.push(applied);
    }
    let rows = wait_snapshot_matches(&product.http, &order.http).await;
    assert_eq!(rows, n);
    let gaps = order
        .log_text()
        .matches("deliveries lost on the way")
        .count();
    // No order is placed here, so the books check (ORDERS against the ledger) could not fail:
    // it is left to the scenarios that place orders.
    eprintln!(
        "FIGURES cut: {n} products; NATS connection cut at {cuts_at:?} applied; {gaps} delivery gaps detected; {} proxy connections; snapshot == catalog",
        proxy.connections()
    );
}

/// A burst of catalog events after order-svc is ready (a catalog import) over a slow link: its
/// projector started with short batches (nothing to replay), falls far behind, and a new session
/// takes long batches. Every event ends up in the snapshot, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_after_start_is_projected_whole() {
    let n = env_usize("FAULT_BURST_PRODUCTS", 30_000);
    let nats = NatsServer::start();
    let dir = scratch();
    let js = js(&nats.url()).await;
    js.create_or_update_stream(shared::streams::products(1))
        .await
        .expect("PRODUCTS");
    // 20 ms each way: a batch of 200 per round trip is far slower than the burst arrives.
    let proxy = FaultyProxy::start(format!("127.0.0.1:{}", nats.port()).parse().unwrap()).await;
    proxy.set_latency(std::time::Duration::from_millis(20));
    let order = ServiceProcess::order(
        &format!("nats://{}", proxy.addr),
        "http://127.0.0.1:9",
        &dir.path().join("order"),
        dir.path(),
        &[("RUST_LOG", "info,order_svc::projector=debug")],
    );
    wait_until_ready(&order.http, LONG).await;
    let mut acks = std::collections::VecDeque::new();
    for i in 0..n {
        let id = uuid::Uuid::new_v4();
        let event = serde_json::json!({
            "eventId": uuid::Uuid::now_v7(), "eventType": "ProductCreated", "schemaVersion": 1,
            "occurredAt": chrono::Utc::now(), "productId": id, "version": 1,
            "name": format!("Burst {i}"), "description": "", "price": "1.00",
            "category": "Burst", "deleted": false
        });
        let payload = serde_json::to_vec(&event).unwrap();
        let ack = js
            .publish(shared::events::product_subject(id), payload.into())
            .await
            .expect("publish");
        acks.push_back(ack);
        if acks.len() >= 1000 {
            acks.pop_front().unwrap().await.expect("ack");
        }
    }
    for ack in acks {
        ack.await.expect("ack");
    }
    let products = wait_for("the burst in the snapshot", LONG, || async {
        let products = ready_checks(&order.http).await["snapshot"]["products"].as_u64()?;
        (products >= n as u64).then_some(products)
    })
    .await;
    assert_eq!(products, n as u64, "every event of the burst, once");
    let poison = ready_checks(&order.http).await["snapshot"]["poison"].as_u64();
    assert_eq!(poison, Some(0));
    assert!(
        order
            .log_text()
            .contains("Far behind the stream; a new session takes long batches."),
        "the projector fell behind and a new session took over"
    );
    eprintln!("FIGURES burst: {n} products after start over a 40 ms round trip; snapshot == burst");
}
