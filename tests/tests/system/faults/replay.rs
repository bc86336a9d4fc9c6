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
