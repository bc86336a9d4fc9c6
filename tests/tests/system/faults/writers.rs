//! Several product-svc instances on one ledger: one writes stock at a time, the others serve reads
//! and take over when it dies; orders never oversell and every one settles.
use std::{
    sync::atomic::AtomicUsize,
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde_json::Value;
use tests::{NatsCluster, OrderApi, OrderService, ProductApi, ProductService, StockApi, wait_for};
use uuid::Uuid;

use crate::{get_json, wait_snapshot_version};

use super::*;

/// Two product-svc instances as processes; returns them with `a,b` (order-svc's URL list).
fn two_product_processes(
    nats_url: &str,
    dir: &std::path::Path,
) -> (ServiceProcess, ServiceProcess, String) {
    let log = |name: &str| {
        let log = dir.join(format!("logs-{name}"));
        std::fs::create_dir_all(&log).unwrap();
        log
    };
    let (a, grpc_a) = ServiceProcess::product(nats_url, &dir.join("product-a"), &log("a"));
    let (b, grpc_b) = ServiceProcess::product(nats_url, &dir.join("product-b"), &log("b"));
    (a, b, format!("{grpc_a},{grpc_b}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_on_two_order_and_two_product_instances_sell_the_last_fifty_units_once()
{
    let clients = env_usize("FAULT_CONTENDERS", 64);
    let units = env_usize("FAULT_UNITS", 50) as i64;
    let nats = NatsServer::start();
    let dir = scratch();
    let a = ProductService::start(&nats.url(), &dir.path().join("product-a")).await;
    let b = ProductService::start(&nats.url(), &dir.path().join("product-b")).await;
    let grpc = format!("{},{}", a.grpc, b.grpc);
    let o1 = OrderService::start(&nats.url(), &grpc, &dir.path().join("order-1")).await;
    let o2 = OrderService::start(&nats.url(), &grpc, &dir.path().join("order-2")).await;
    // Created on the instance that does not write stock: catalog writes go anywhere.
    let follower = if tests::is_stock_writer(&a.http).await {
        &b
    } else {
        &a
    };
    let id = ProductApi::new(&follower.http)
        .create_product("Last fifty", "5.00", units)
        .await;
    wait_snapshot_version(&o1.http, &id, 1).await;
    wait_snapshot_version(&o2.http, &id, 1).await;
    let (h1, h2) = (o1.http.clone(), o2.http.clone());
    let results: Vec<Value> = futures::stream::iter(0..clients)
        .map(|i| {
            let http = if i % 2 == 0 { h1.clone() } else { h2.clone() };
            let id = id.clone();
            async move { OrderApi::new(&http).place(&order_body(&id, 1)).await.body }
        })
        .buffer_unordered(clients)
        .collect()
        .await;
    let confirmed = results
        .iter()
        .filter(|o| o["status"] == "Confirmed")
        .count() as i64;
    let rejected = results.iter().filter(|o| o["status"] == "Rejected").count() as i64;
    assert_eq!(confirmed, units, "exactly the units there were");
    assert_eq!(
        rejected,
        clients as i64 - units,
        "every other order rejected, none pending"
    );
    // Either instance reads the same books, right after the writes (read-your-writes).
    for p in [&a, &b] {
        let product = ProductApi::new(&p.http).get(&id).await.expect(200);
        assert_eq!(product["reservedQuantity"], units, "{product}");
        assert_eq!(product["availableQuantity"], 0, "{product}");
    }
    crate::assert_books_agree(&a.http).await;
    crate::assert_books_agree(&b.http).await;
    eprintln!(
        "FIGURES two writers' race: {clients} clients on 2 order-svc and 2 product-svc, {units} units: {confirmed} confirmed, {rejected} rejected"
    );
    for s in [o1, o2] {
        s.stop().await;
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stock_writer_killed_under_order_load_the_other_takes_over_and_every_order_settles() {
    let nats = NatsServer::start();
    let dir = scratch();
    let (mut a, mut b, grpc) = two_product_processes(&nats.url(), dir.path());
    let order = ServiceProcess::order(
        &nats.url(),
        &grpc,
        &dir.path().join("order"),
        dir.path(),
        &[],
    );
    let orders = OrderApi::new(&order.http);
    let ids = create_products(&a.http, 3, 10_000, 3).await;
    for id in &ids {
        wait_snapshot_version(&order.http, id, 1).await;
    }
    let load = Load::start(&orders, &ids);
    let placed = load.placed.clone();
    wait_for("orders before the kill", LONG, || async {
        (placed.lock().unwrap().len() >= 20).then_some(())
    })
    .await;
    let (writer, survivor) = if tests::is_stock_writer(&a.http).await {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    writer.kill9();
    let killed = Instant::now();
    let confirmed_again = wait_for("a 201 after the kill", LONG, || async {
        placed
            .lock()
            .unwrap()
            .iter()
            .find(|(_, status, at)| *status == 201 && *at > killed)
            .map(|(_, _, at)| *at - killed)
    })
    .await;
    let after = placed.lock().unwrap().len();
    wait_for("orders after the takeover", LONG, || async {
        (placed.lock().unwrap().len() >= after + 20).then_some(())
    })
    .await;
    let placed = load.stop().await;
    assert!(
        placed.iter().all(|(_, s, _)| *s == 201 || *s == 202),
        "only 201/202 answers"
    );
    assert!(
        tests::is_stock_writer(&survivor.http).await,
        "the survivor writes stock"
    );
    let expected = confirmed_units(&orders, &placed).await;
    for id in &ids {
        let want = expected.get(id).copied().unwrap_or(0);
        wait_for(
            "reserved to equal what Confirmed orders hold",
            LONG,
            || async {
                let (_, p) = get_json(&format!("{}/api/products/{id}", survivor.http)).await;
                (p["reservedQuantity"].as_i64() == Some(want)).then_some(())
            },
        )
        .await;
    }
    crate::assert_books_agree(&survivor.http).await;
    eprintln!(
        "FIGURES writer failover: SIGKILL of the stock writer → next 201 Confirmed after {confirmed_again:?} (lease ttl 2 s); {} orders, all settled, reserved exact",
        placed.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_leader_killed_under_reservation_load_loses_nothing_and_reserves_nothing_twice()
{
    let reservations = env_usize("FAULT_RESERVATIONS", 600);
    let cluster = Arc::new(Mutex::new(NatsCluster::start()));
    let url = cluster.lock().unwrap().url();
    let js = crate::js(&url).await;
    wait_for("the JetStream cluster to elect a leader", LONG, || async {
        js.query_account().await.ok()
    })
    .await;
    let dir = scratch();
    let (product, grpc) = ServiceProcess::product_with(
        &url,
        &dir.path().join("product"),
        dir.path(),
        &[("PRODUCT_STREAM_REPLICAS", "3")],
    );
    let id = create_products(&product.http, 1, 1_000_000, 1)
        .await
        .remove(0);
    let info = tests::stream_info(&js, "LEDGER")
        .await
        .expect("LEDGER exists");
    assert_eq!(info.config.num_replicas, 3, "LEDGER is replicated");
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .expect("LEDGER has a leader");
    let stock = StockApi::connect(&grpc).await;
    let done = Arc::new(AtomicUsize::new(0));
    let retried = Arc::new(AtomicUsize::new(0));
    let (killer, victim, started) = (cluster.clone(), leader.clone(), Instant::now());
    let killed = Arc::new(AtomicBool::new(false));
    let order_ids: Vec<Uuid> = (0..reservations).map(|_| Uuid::new_v4()).collect();
    futures::stream::iter(order_ids.clone())
        .map(|order| {
            let (stock, id, done, retried) =
                (stock.clone(), id.clone(), done.clone(), retried.clone());
            let (killer, victim, killed) = (killer.clone(), victim.clone(), killed.clone());
            async move {
                // Like order-svc: the same order id again until an answer (reserves are idempotent).
                let deadline = Instant::now() + LONG;
                loop {
                    match stock.reserve(order, &[(id.as_str(), 1)]).await {
                        Ok(r) => {
                            assert!(r.success, "{order}: {r:?}");
                            break;
                        }
                        Err(status) => {
                            assert!(
                                Instant::now() < deadline,
                                "{order}: never answered: {status:?}"
                            );
                            retried.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                if done.fetch_add(1, Ordering::SeqCst) + 1 == reservations / 3
                    && !killed.swap(true, Ordering::SeqCst)
                {
                    tokio::task::block_in_place(|| killer.lock().unwrap().kill(&victim));
                }
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let elapsed = started.elapsed();
    // Every reservation held once: each order id's unit, no more.
    let books = wait_for("the books to show every reservation", LONG, || async {
        let (status, p) = get_json(&format!("{}/api/products/{id}", product.http)).await;
        (status == 200 && p["reservedQuantity"] == reservations as i64).then_some(p)
    })
    .await;
    assert_eq!(books["stockQuantity"], 1_000_000);
    let report = ProductApi::new(&product.http).audit().await.expect(200);
    assert_eq!(
        report["reservationsChecked"], reservations as u64,
        "{report}"
    );
    let again = stock
        .reserve(order_ids[0], &[(id.as_str(), 1)])
        .await
        .expect("a repeat is answered");
    assert!(again.success);
    let (_, p) = get_json(&format!("{}/api/products/{id}", product.http)).await;
    assert_eq!(
        p["reservedQuantity"], reservations as i64,
        "a repeat holds nothing more"
    );
    eprintln!(
        "FIGURES ledger leader kill: {reservations} reservations in {elapsed:?}, {} retried calls, leader {leader} killed after a third; every one held once",
        retried.load(Ordering::SeqCst)
    );
}
