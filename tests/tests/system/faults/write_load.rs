//! product-svc, nats-server or a cluster stream leader killed under write load: nothing acknowledged is lost.
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tests::{NatsCluster, NatsServer, ServiceProcess, scratch, wait_for};

use crate::js;

use super::*;

/// Highest acknowledged (version, name, price) per product.
pub(super) type Acked = Arc<Mutex<HashMap<String, (u64, String, String)>>>;

pub(super) struct LoadReport {
    ok: usize,
    failed: usize,
}

/// `clients` workers send `total` creates (20%) and updates (80%); `halfway` fires once half are done.
pub(super) async fn write_load(
    http: String,
    seed_ids: Vec<String>,
    total: usize,
    clients: usize,
    acked: Acked,
    halfway: impl FnOnce() + Send + 'static,
) -> LoadReport {
    let ids = Arc::new(Mutex::new(seed_ids));
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let halfway = Arc::new(Mutex::new(Some(halfway)));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, ids, next, done, failed, acked, halfway) = (
            http.clone(),
            ids.clone(),
            next.clone(),
            done.clone(),
            failed.clone(),
            acked.clone(),
            halfway.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).default_headers(tests::auth_headers()).build().unwrap();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= total {
                    return;
                }
                let name = format!("W{i:06}");
                let price = format!("{}.{:02}", 1 + i % 300, i % 100);
                let make = || {
                    if i % 5 == 0 {
                        client.post(format!("{http}/api/products")).json(&json!({"name": name, "description": "", "price": price, "category": "Load", "stockQuantity": 1, "lowStockThreshold": 0}))
                    } else {
                        let id = { let ids = ids.lock().unwrap(); ids[i % ids.len()].clone() };
                        client.put(format!("{http}/api/products/{id}")).json(&json!({"name": name, "description": "", "price": price, "category": "Load", "lowStockThreshold": 0}))
                    }
                };
                // Like a real client: retry (bounded) while the service is unreachable or answers
                // 503 (its streams are: nothing is acknowledged without them).
                let mut sent = make().send().await;
                for _ in 0..500 {
                    if matches!(&sent, Ok(r) if r.status() != 503) {
                        break;
                    }
                    failed.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    sent = make().send().await;
                }
                match sent {
                    Ok(r) if r.status().is_success() => {
                        let p: Value = r.json().await.unwrap();
                        let id = p["id"].as_str().unwrap().to_owned();
                        let v = (p["version"].as_u64().unwrap(), p["name"].as_str().unwrap().to_owned(), p["price"].as_str().unwrap().to_owned());
                        let mut acked = acked.lock().unwrap();
                        let e = acked.entry(id.clone()).or_insert((0, String::new(), String::new()));
                        if v.0 > e.0 {
                            *e = v;
                        }
                        drop(acked);
                        if i % 5 == 0 {
                            ids.lock().unwrap().push(id);
                        }
                    }
                    Ok(r) => panic!("unexpected {}", r.status()),
                    Err(e) => panic!("the service never came back: {e}"),
                }
                if done.fetch_add(1, Ordering::SeqCst) + 1 == total / 2 {
                    let f = halfway.lock().unwrap().take();
                    if let Some(f) = f {
                        tokio::task::block_in_place(f);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    LoadReport {
        ok: total,
        failed: failed.load(Ordering::SeqCst),
    }
}

/// Every acknowledged write is in product-svc; the snapshot equals the catalog; the stream holds
/// exactly the latest event of every product.
pub(super) async fn assert_nothing_acknowledged_lost(
    product_http: &str,
    order_http: &str,
    nats_url: &str,
    acked: &Acked,
) -> (usize, u64) {
    let catalog = product_catalog(product_http).await;
    let acked = acked.lock().unwrap().clone();
    for (id, (version, name, price)) in &acked {
        let (_, actual_price, actual_version, _) = catalog
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged product {id} lost"));
        assert!(
            actual_version >= version,
            "{id}: acknowledged version {version} lost (now {actual_version})"
        );
        if actual_version == version {
            assert_eq!(
                (&catalog[id].0, actual_price),
                (name, price),
                "{id}: acknowledged state differs"
            );
        }
    }
    let rows = wait_snapshot_matches(product_http, order_http).await;
    let js = js(nats_url).await;
    let stream = js.get_stream("PRODUCTS").await.unwrap();
    let info = stream.get_info().await.unwrap();
    assert_eq!(
        info.state.messages as usize,
        catalog.len(),
        "one message per product"
    );
    for (id, (_, _, version, _)) in catalog.iter().take(200) {
        let msg = stream
            .get_last_raw_message_by_subject(&format!("eshop.products.{id}"))
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(
            body["version"].as_u64(),
            Some(*version),
            "{id}: the stream's latest message is the latest version"
        );
    }
    let events: u64 = catalog.values().map(|r| r.2).sum();
    (rows, info.state.last_sequence.saturating_sub(events))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn product_svc_killed_under_write_load_loses_nothing_acknowledged() {
    let total = env_usize("FAULT_WRITES", 2000);
    let clients = env_usize("FAULT_CLIENTS", 8);
    let Processes {
        nats,
        dir: _dir,
        product,
        grpc: _grpc,
        order,
    } = Processes::start();
    let seed = create_products(&product.http, 100, 1, 8).await;
    let http = product.http.clone();
    let product = Arc::new(Mutex::new(product));
    let acked: Acked = Arc::default();
    let killer = product.clone();
    let started = Instant::now();
    let report = write_load(
        http.clone(),
        seed,
        total,
        clients,
        acked.clone(),
        move || {
            let mut p = killer.lock().unwrap();
            p.kill9();
            p.start();
        },
    )
    .await;
    let (rows, duplicates) =
        assert_nothing_acknowledged_lost(&http, &order.http, &nats.url(), &acked).await;
    assert_eq!(duplicates, 0, "no event was stored twice");
    // No order is placed here, so the books check (ORDERS against the ledger) could not fail:
    // it is left to the scenarios that place orders.
    eprintln!(
        "FIGURES product kill: {} writes acknowledged, {} attempts refused during the restart (retried), {rows} products, in {:?}; lost 0, duplicates 0",
        report.ok,
        report.failed,
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_under_write_load_loses_nothing_and_the_consumer_resumes() {
    let total = env_usize("FAULT_WRITES", 2000);
    let clients = env_usize("FAULT_CLIENTS", 8);
    let nats = Arc::new(Mutex::new(NatsServer::start()));
    let url = nats.lock().unwrap().url();
    let dir = scratch();
    let (product, grpc) = ServiceProcess::product(&url, &dir.path().join("product"), dir.path());
    let order = ServiceProcess::order(&url, &grpc, &dir.path().join("order"), dir.path(), &[]);
    let seed = create_products(&product.http, 100, 1, 8).await;
    let acked: Acked = Arc::default();
    let killer = nats.clone();
    let started = Instant::now();
    let report = write_load(
        product.http.clone(),
        seed,
        total,
        clients,
        acked.clone(),
        move || {
            let mut n = killer.lock().unwrap();
            n.kill();
            n.start_again();
        },
    )
    .await;
    let (rows, duplicates) =
        assert_nothing_acknowledged_lost(&product.http, &order.http, &url, &acked).await;
    let log = order.log_text();
    assert_eq!(
        log.matches("order-svc started.").count(),
        1,
        "order-svc was not restarted"
    );
    // No order is placed here, so the books check (ORDERS against the ledger) could not fail:
    // it is left to the scenarios that place orders.
    eprintln!(
        "FIGURES nats kill: {} writes acknowledged, {} attempts refused (retried), {rows} products, {duplicates} extra stream sequences (re-published after the server lost its dedupe state), in {:?}; lost 0",
        report.ok,
        report.failed,
        started.elapsed()
    );
}

/// The same write load on a 3-node JetStream cluster with every stream at 3 replicas: the node
/// leading `PRODUCTS` is killed halfway and the load goes on. With that node still down nothing
/// acknowledged is lost and the snapshot converges; then the node comes back and catches up.
/// Neither service restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_stream_leader_killed_under_write_load_loses_nothing() {
    let total = env_usize("FAULT_WRITES", 2000);
    let clients = env_usize("FAULT_CLIENTS", 8);
    let cluster = Arc::new(Mutex::new(NatsCluster::start()));
    let url = cluster.lock().unwrap().url();
    let js = js(&url).await;
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
    let order = ServiceProcess::order(
        &url,
        &grpc,
        &dir.path().join("order"),
        dir.path(),
        &[("ORDER_STREAM_REPLICAS", "3")],
    );
    let seed = create_products(&product.http, 100, 1, 8).await;
    let info = tests::stream_info(&js, "PRODUCTS")
        .await
        .expect("PRODUCTS exists");
    assert_eq!(info.config.num_replicas, 3, "PRODUCTS is replicated");
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .expect("PRODUCTS has a leader");
    let acked: Acked = Arc::default();
    let (killer, victim) = (cluster.clone(), leader.clone());
    let started = Instant::now();
    let report = write_load(
        product.http.clone(),
        seed,
        total,
        clients,
        acked.clone(),
        move || killer.lock().unwrap().kill(&victim),
    )
    .await;
    // With the node still down: the other two served the stream and the consumer.
    let (rows, duplicates) =
        assert_nothing_acknowledged_lost(&product.http, &order.http, &url, &acked).await;
    cluster.lock().unwrap().start_again(&leader);
    wait_for("the restarted node to catch up", LONG, || async {
        let info = tests::stream_info(&js, "PRODUCTS").await?;
        let cluster = info.cluster?;
        let back = cluster.leader.is_some()
            && cluster.replicas.len() == 2
            && cluster.replicas.iter().all(|r| r.current && !r.offline);
        back.then_some(())
    })
    .await;
    for (service, log) in [
        ("product-svc", product.log_text()),
        ("order-svc", order.log_text()),
    ] {
        assert_eq!(
            log.matches(&format!("{service} started.")).count(),
            1,
            "{service} was restarted"
        );
    }
    // No order is placed here, so the books check (ORDERS against the ledger) could not fail:
    // it is left to the scenarios that place orders.
    eprintln!(
        "FIGURES cluster: stream leader {leader} killed halfway; {} writes acknowledged, {} attempts refused (retried), {rows} products, {duplicates} extra stream sequences, in {:?}; lost 0",
        report.ok,
        report.failed,
        started.elapsed()
    );
}
