//! An edge site on a leaf node: the hub (its own nats-server, JetStream domain `hub`, with
//! product-svc and the hub's order-svc, whose `ORDERS` sources the site's stream) and site `edge1` (a leaf nats-server, domain `edge1`, with order-svc) joined by
//! a `FaultyProxy` uplink; a second proxy is the WAN in front of the hub's gRPC. The site keeps
//! selling with the uplink down and everything settles once it is back.
use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use serde_json::{Value, json};
use tests::{
    FaultyProxy, OrderService, ProductService, edge::EdgeNats, order_body, scratch, wait_for,
};
use uuid::Uuid;

use crate::get_json;

/// Mirrors and sources resume on nats-server's own retry interval after a link returns
/// (measured 16-40 s, research notes): edge waits allow for it.
const EDGE_WAIT: Duration = Duration::from_secs(120);
const SITE: &str = "edge1";

struct Deployment {
    edge: EdgeNats,
    product: ProductService,
    /// The WAN between the site and the hub's gRPC port.
    wan: FaultyProxy,
    order: OrderService,
    /// The hub's order-svc (`--edge-sites edge1`): it owns the hub's `ORDERS` and its sources.
    hub_order: OrderService,
    grpc_port: u16,
}

fn hub_product_config(nats: &str, dir: &std::path::Path, grpc_port: u16) -> product_svc::Config {
    crate::product_config(nats, dir, grpc_port)
}

fn hub_order_config(nats: &str, dir: &std::path::Path, grpc: &str) -> order_svc::Config {
    let mut config = order_svc::Config::for_tests(dir.to_path_buf(), nats, grpc);
    config.edge_sites = vec![SITE.into()];
    config
}

fn edge_order_config(nats: &str, dir: &std::path::Path, wan: &FaultyProxy) -> order_svc::Config {
    let mut config = order_svc::Config::for_tests(dir.to_path_buf(), nats, &wan.url());
    config.site = Some(SITE.into());
    config.catalog_domain = Some("hub".into());
    config
}

impl Deployment {
    async fn start(dir: &std::path::Path) -> Self {
        let edge = EdgeNats::start(SITE).await;
        let grpc_port = tests::free_port();
        let product = ProductService::start_with(hub_product_config(
            &edge.hub.url(),
            &dir.join("product"),
            grpc_port,
        ))
        .await;
        let wan = FaultyProxy::start(format!("127.0.0.1:{grpc_port}").parse().unwrap()).await;
        let order = OrderService::start_with(edge_order_config(
            &edge.site.url(),
            &dir.join("order"),
            &wan,
        ))
        .await;
        order.wait_ready(EDGE_WAIT).await;
        let hub_order = OrderService::start_with(hub_order_config(
            &edge.hub.url(),
            &dir.join("hub-order"),
            &product.grpc,
        ))
        .await;
        hub_order.wait_ready(EDGE_WAIT).await;
        Self {
            edge,
            product,
            wan,
            order,
            hub_order,
            grpc_port,
        }
    }

    /// The uplink (leaf link and WAN) down, once nothing crosses it any more.
    async fn cut_link(&self) {
        self.edge.link.go_down().await;
        self.wan.go_down().await;
    }

    fn restore_link(&self) {
        self.edge.link.set_down(false);
        self.wan.set_down(false);
    }

    async fn create_product(&self, name: &str, price: &str, stock: i64) -> String {
        self.product.api().create_product(name, price, stock).await
    }

    async fn place(&self, product: &str, quantity: u32) -> (u16, Value) {
        let body = order_body(Uuid::new_v4(), &[(product, i64::from(quantity))]);
        let answer = self.order.api().place(&body).await;
        (answer.status, answer.body)
    }

    /// Edge orders in the hub's `ORDERS`: subject → messages.
    async fn hub_orders(&self) -> HashMap<String, usize> {
        let js = crate::js(&self.edge.hub.url()).await;
        crate::stream_subjects(&js, "ORDERS", &format!("eshop.{SITE}.orders.*")).await
    }

    /// Waits until the hub's `ORDERS` holds exactly these edge orders, each state once (a
    /// subject holds as many messages as its latest state's version).
    async fn wait_hub_has(&self, ids: &HashSet<String>) {
        let expected: HashSet<String> = ids
            .iter()
            .map(|id| format!("eshop.{SITE}.orders.{id}"))
            .collect();
        let js = crate::js(&self.edge.hub.url()).await;
        wait_for(
            "every edge order in the hub's ORDERS, each state once",
            EDGE_WAIT,
            || async {
                let orders = self.hub_orders().await;
                let subjects: HashSet<String> = orders.keys().cloned().collect();
                if subjects != expected {
                    return None;
                }
                for (subject, n) in &orders {
                    let (_, last) = crate::last_message(&js, "ORDERS", subject).await?;
                    if last["version"].as_u64() != Some(*n as u64) {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
    }

    /// Waits until every listed edge order is settled (none Pending); returns the statuses.
    async fn wait_settled(&self, ids: &HashSet<String>) -> HashMap<String, String> {
        wait_for("every edge order settled", EDGE_WAIT, || async {
            let mut statuses = HashMap::new();
            for id in ids {
                let (_, o) = get_json(&format!("{}/api/orders/{id}", self.order.http)).await;
                let status = o["status"].as_str()?.to_owned();
                if status == "Pending" {
                    return None;
                }
                statuses.insert(id.clone(), status);
            }
            Some(statuses)
        })
        .await
    }

    async fn hub_product(&self, id: &str) -> Value {
        get_json(&format!("{}/api/products/{id}", self.product.http))
            .await
            .1
    }

    async fn edge_snapshot(&self, id: &str) -> Value {
        get_json(&format!("{}/api/snapshot/products/{id}", self.order.http))
            .await
            .1
    }

    async fn stop(self) {
        self.order.stop().await;
        self.hub_order.stop().await;
        self.product.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_link_up_the_catalog_reaches_the_edge_and_edge_orders_reach_the_hub_once() {
    let dir = scratch();
    let d = Deployment::start(dir.path()).await;
    let p = d.create_product("Edge lamp", "12.00", 10).await;
    wait_for("the product in the edge snapshot", EDGE_WAIT, || async {
        (d.edge_snapshot(&p).await["version"] == 1).then_some(())
    })
    .await;
    let (status, order) = d.place(&p, 2).await;
    assert_eq!((status, order["status"].as_str()), (201, Some("Confirmed")));
    let id = order["id"].as_str().unwrap().to_owned();
    d.wait_hub_has(&HashSet::from([id.clone()])).await;
    assert_eq!(d.hub_product(&p).await["reservedQuantity"], 2);
    // The hub's ledger follows the site's orders like its own.
    crate::assert_books_agree(&d.product.http).await;
    // The hub's order-svc lists and reads the site's order (its site settles it).
    let (status, read) = get_json(&format!("{}/api/orders/{id}", d.hub_order.http)).await;
    assert_eq!((status, read["status"].as_str()), (200, Some("Confirmed")));
    wait_for(
        "the site's order in the hub's listing",
        EDGE_WAIT,
        || async {
            let (_, listed) = get_json(&format!("{}/api/orders", d.hub_order.http)).await;
            (listed["totalCount"] == 1).then_some(())
        },
    )
    .await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_edge_order_svc_with_the_link_down_serves_the_mirrored_catalog() {
    let dir = scratch();
    let d = Deployment::start(dir.path()).await;
    let p = d.create_product("Mirrored", "3.50", 10).await;
    wait_for("the product in the edge snapshot", EDGE_WAIT, || async {
        (d.edge_snapshot(&p).await["version"] == 1).then_some(())
    })
    .await;
    let Deployment {
        edge,
        product,
        wan,
        order,
        hub_order,
        ..
    } = d;
    order.stop().await;
    edge.link.go_down().await;
    wan.go_down().await;
    std::fs::remove_dir_all(dir.path().join("order")).unwrap();
    let order = OrderService::start_with(edge_order_config(
        &edge.site.url(),
        &dir.path().join("order"),
        &wan,
    ))
    .await;
    order.wait_ready(EDGE_WAIT).await;
    let (_, row) = get_json(&format!("{}/api/snapshot/products/{p}", order.http)).await;
    assert_eq!(
        (row["version"].as_u64(), row["price"].as_str()),
        (Some(1), Some("3.50"))
    );
    let placed = order
        .api()
        .place(&order_body(Uuid::new_v4(), &[(&p, 1)]))
        .await;
    assert_eq!(
        placed.status, 202,
        "priced at the edge, stock owed to the hub"
    );
    let id = placed.id();
    // The till watches its order at the edge: Pending now, Confirmed once the uplink is back.
    let mut till = crate::watch::Watch::open(&order.http, &id, None).await;
    let (event, _, pending) = till.next_within(EDGE_WAIT).await;
    assert_eq!(
        (event.as_str(), pending["status"].as_str()),
        ("OrderPlaced", Some("Pending"))
    );
    edge.link.set_down(false);
    wan.set_down(false);
    let (event, version, confirmed) = till.next_within(EDGE_WAIT).await;
    assert_eq!(
        (event.as_str(), version, confirmed["status"].as_str()),
        ("OrderConfirmed", 2, Some("Confirmed"))
    );
    let (_, o) = get_json(&format!("{}/api/orders/{id}", order.http)).await;
    assert_eq!(o["status"], "Confirmed");
    drop(till);
    order.stop().await;
    hub_order.stop().await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_hub_product_svc_down_the_edge_keeps_taking_orders_that_settle_later() {
    let dir = scratch();
    let d = Deployment::start(dir.path()).await;
    let p = d.create_product("Resilient", "1.00", 100).await;
    wait_for("the product in the edge snapshot", EDGE_WAIT, || async {
        (d.edge_snapshot(&p).await["version"] == 1).then_some(())
    })
    .await;
    let Deployment {
        edge,
        product,
        wan,
        order,
        hub_order,
        grpc_port,
    } = d;
    product.stop().await;
    let mut ids = HashSet::new();
    for _ in 0..5 {
        let placed = order
            .api()
            .place(&order_body(Uuid::new_v4(), &[(&p, 2)]))
            .await;
        ids.insert(placed.expect(202)["id"].as_str().unwrap().to_owned());
    }
    let product = ProductService::start_with(hub_product_config(
        &edge.hub.url(),
        &dir.path().join("product"),
        grpc_port,
    ))
    .await;
    let d = Deployment {
        edge,
        product,
        wan,
        order,
        hub_order,
        grpc_port,
    };
    let statuses = d.wait_settled(&ids).await;
    assert!(statuses.values().all(|s| s == "Confirmed"), "{statuses:?}");
    assert_eq!(d.hub_product(&p).await["reservedQuantity"], 10);
    d.wait_hub_has(&ids).await;
    crate::assert_books_agree(&d.product.http).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_uplink_cuts_under_order_load_and_hub_price_changes_end_with_exact_books() {
    let outage = Duration::from_secs(
        std::env::var("EDGE_OUTAGE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10),
    );
    let dir = scratch();
    let d = Deployment::start(dir.path()).await;
    let p = d.create_product("Contended", "1.00", 100_000).await;
    wait_for("the product in the edge snapshot", EDGE_WAIT, || async {
        (d.edge_snapshot(&p).await["version"] == 1).then_some(())
    })
    .await;
    let mut ids = HashSet::new();
    let mut quantities: HashMap<String, i64> = HashMap::new();
    let mut cancelled = HashSet::new();
    let mut hub_version = 1;
    for round in 0..3 {
        let edge_price = d.edge_snapshot(&p).await["price"]
            .as_str()
            .unwrap()
            .to_owned();
        d.cut_link().await;
        let cut_at = tokio::time::Instant::now();
        let mut n = 0u32;
        while cut_at.elapsed() < outage {
            // Paced load at the edge; the hub reprices now and then.
            let (status, order) = d.place(&p, 1 + n % 3).await;
            assert_eq!(status, 202, "round {round}: accepted while cut off");
            assert_eq!(
                order["items"][0]["unitPrice"].as_str(),
                Some(edge_price.as_str()),
                "priced from the edge snapshot"
            );
            let id = order["id"].as_str().unwrap().to_owned();
            ids.insert(id.clone());
            if n == 1 {
                // Cancels work at the site too; the release is owed until the link is back.
                let r = d.order.api().cancel(&id, "cut off").await;
                assert_eq!(r.status, 200, "round {round}: cancelled while cut off");
                cancelled.insert(id);
            } else {
                quantities.insert(id, i64::from(1 + n % 3));
            }
            if n.is_multiple_of(8) {
                hub_version += 1;
                let price = format!("{}.00", 1 + hub_version);
                let body = json!({"name": "Contended", "description": "Contended description",
                                  "price": price, "category": "Tests", "lowStockThreshold": 0});
                d.product.api().update(&p, &body, None).await.expect(200);
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        d.restore_link();
        let statuses = d.wait_settled(&ids).await;
        assert!(
            statuses.iter().all(|(id, s)| s
                == if cancelled.contains(id) {
                    "Cancelled"
                } else {
                    "Confirmed"
                }),
            "round {round}: {statuses:?}"
        );
    }
    // Books: every edge order in the hub once, reserved == Σ confirmed, the catalog caught up.
    d.wait_hub_has(&ids).await;
    let confirmed: i64 = quantities.values().sum();
    wait_for(
        "reserved == the confirmed orders' units (cancels released)",
        EDGE_WAIT,
        || async { (d.hub_product(&p).await["reservedQuantity"] == confirmed).then_some(()) },
    )
    .await;
    wait_for(
        "the edge snapshot to equal the hub catalog",
        EDGE_WAIT,
        || async {
            let (hub, edge) = (d.hub_product(&p).await, d.edge_snapshot(&p).await);
            (hub["version"] == edge["version"] && hub["price"] == edge["price"]).then_some(())
        },
    )
    .await;
    crate::assert_books_agree(&d.product.http).await;
    eprintln!(
        "FIGURES edge: 3 cuts of {outage:?}: {} orders accepted at the edge (202), {} cancelled while cut off, the rest Confirmed, each once in the hub's ORDERS; reserved {confirmed}; {} price changes caught up",
        ids.len(),
        cancelled.len(),
        hub_version - 1
    );
    d.stop().await;
}

/// `just edge --secure` (nats/edge/*-secure.conf): every service on its least-privilege NATS
/// user over TLS, the leaf link over TLS as the hub's leaf user. A site sells, the hub's
/// order-svc (the owner of ORDERS) sources the site's orders, and the books agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_least_privilege_users_and_tls_a_site_sells_and_the_hub_sources_its_orders() {
    let dir = scratch();
    let edge = EdgeNats::start_secure().await;
    let user = |name: &str| shared::nats::NatsAuth {
        nats_user: Some(name.into()),
        nats_password: Some(format!("test-{}-password", name.trim_end_matches("-svc"))),
        nats_tls_ca: Some(tests::tls_fixture("ca.pem")),
        ..Default::default()
    };
    let grpc_port = tests::free_port();
    let mut config = hub_product_config(&edge.hub.url(), &dir.path().join("product"), grpc_port);
    config.nats_auth = user("product-svc");
    let product = ProductService::start_with(config).await;
    let mut config = hub_order_config(
        &edge.hub.url(),
        &dir.path().join("hub-order"),
        &product.grpc,
    );
    config.nats_auth = user("order-svc");
    let hub_order = OrderService::start_with(config).await;
    let mut config =
        order_svc::Config::for_tests(dir.path().join("order"), &edge.site.url(), &product.grpc);
    config.site = Some(SITE.into());
    config.catalog_domain = Some("hub".into());
    config.nats_auth = user("order-svc");
    let order = OrderService::start_with(config).await;
    order.wait_ready(EDGE_WAIT).await;
    hub_order.wait_ready(EDGE_WAIT).await;

    let p = product.api().create_product("Sealed lamp", "9.00", 5).await;
    order.api().wait_snapshot_version(&p, 1).await;
    let placed = order
        .api()
        .place(&order_body(Uuid::new_v4(), &[(&p, 2)]))
        .await
        .expect(201);
    assert_eq!(placed["status"], "Confirmed");
    let id = placed["id"].as_str().unwrap().to_owned();
    wait_for("the site's order at the hub", EDGE_WAIT, || async {
        let (status, read) = get_json(&format!("{}/api/orders/{id}", hub_order.http)).await;
        (status == 200 && read["status"] == "Confirmed").then_some(())
    })
    .await;
    assert_eq!(product.api().field(&p, "reservedQuantity").await, 2);
    crate::assert_books_agree(&product.http).await;
    order.stop().await;
    hub_order.stop().await;
    product.stop().await;
}
