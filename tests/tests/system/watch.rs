//! Watching an order (Server-Sent Events): a client sees every state once, in order, from any
//! instance, and resumes after the last event it saw.
use serde_json::Value;
use tests::{NatsServer, OrderService, ProductService, WAIT, free_port, order_body, scratch};
use uuid::Uuid;

use crate::product_config;

/// An open watch: its response body, read event by event.
pub(crate) struct Watch {
    response: reqwest::Response,
    buf: String,
}

impl Watch {
    pub(crate) async fn open(http: &str, id: &str, last_event_id: Option<&str>) -> Self {
        Self::open_path(http, &format!("/api/orders/{id}/watch"), last_event_id).await
    }

    /// Opens a watch at `path` (with its query).
    pub(crate) async fn open_path(http: &str, path: &str, last_event_id: Option<&str>) -> Self {
        let client = reqwest::Client::builder()
            .default_headers(tests::auth_headers())
            .build()
            .unwrap();
        let mut request = client.get(format!("{http}{path}"));
        if let Some(last) = last_event_id {
            request = request.header("last-event-id", last);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Self {
            response,
            buf: String::new(),
        }
    }

    /// The next event: (event type, id, data); keep-alive comments are skipped.
    async fn next(&mut self) -> (String, u64, Value) {
        self.next_within(WAIT).await
    }

    /// `next`, waiting up to `wait`.
    pub(crate) async fn next_within(&mut self, wait: std::time::Duration) -> (String, u64, Value) {
        tokio::time::timeout(wait, async {
            loop {
                if let Some(end) = self.buf.find("\n\n") {
                    let block: String = self.buf.drain(..end + 2).collect();
                    let field = |name: &str| {
                        block
                            .lines()
                            .find_map(|l| l.strip_prefix(name))
                            .map(|v| v.trim_start().to_owned())
                    };
                    if let (Some(event), Some(id), Some(data)) =
                        (field("event:"), field("id:"), field("data:"))
                    {
                        return (
                            event,
                            id.parse().unwrap(),
                            serde_json::from_str(&data).unwrap(),
                        );
                    }
                    continue; // a comment (keep-alive)
                }
                let chunk = self
                    .response
                    .chunk()
                    .await
                    .unwrap()
                    .expect("the watch is open");
                self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
            }
        })
        .await
        .expect("an event within the wait")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_another_instance_sees_every_state_once_in_order_and_resumes() {
    let nats = NatsServer::start();
    let dir = scratch();
    let grpc_port = free_port();
    let product_dir = dir.path().join("product");
    let product =
        ProductService::start_with(product_config(&nats.url(), &product_dir, grpc_port)).await;
    let a = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order-a")).await;
    let b = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order-b")).await;
    b.wait_ready(WAIT).await;
    let p = product.api().create_product("Watched", "4.00", 10).await;
    a.api().wait_snapshot_version(&p, 1).await;
    let grpc = product.grpc.clone();
    product.stop().await;

    // Placed on A while product-svc is down: 202 Pending. B watches it.
    let id = a
        .api()
        .place(&order_body(Uuid::new_v4(), &[(&p, 2)]))
        .await
        .expect(202)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut watch = Watch::open(&b.http, &id, None).await;
    let (event, version, order) = watch.next().await;
    assert_eq!((event.as_str(), version), ("OrderPlaced", 1));
    assert_eq!(
        (order["id"].as_str(), order["status"].as_str()),
        (Some(id.as_str()), Some("Pending"))
    );

    // product-svc back: the reconciler confirms it; then A cancels it and the release follows.
    let product =
        ProductService::start_with(product_config(&nats.url(), &product_dir, grpc_port)).await;
    assert_eq!(product.grpc, grpc);
    let (event, version, order) = watch.next().await;
    assert_eq!(
        (event.as_str(), version, order["status"].as_str()),
        ("OrderConfirmed", 2, Some("Confirmed"))
    );
    a.api().cancel(&id, "watched").await.expect(200);
    let (event, version, order) = watch.next().await;
    assert_eq!(
        (event.as_str(), version, order["reason"].as_str()),
        ("OrderCancelled", 3, Some("watched"))
    );
    let (event, version, _) = watch.next().await;
    assert_eq!((event.as_str(), version), ("OrderStockReleased", 4));

    // Resuming after version 2 sends only the later states, in order.
    let mut resumed = Watch::open(&a.http, &id, Some("2")).await;
    assert_eq!(resumed.next().await.1, 3);
    assert_eq!(resumed.next().await.1, 4);
    let bad = reqwest::Client::new()
        .get(format!("{}/api/orders/{id}/watch", a.http))
        .headers(tests::auth_headers())
        .header("last-event-id", "two")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let unknown = tests::OrderApi::new(&a.http)
        .http()
        .get(&format!("/api/orders/{}/watch", Uuid::new_v4()))
        .await;
    unknown.problem(404);
    drop((watch, resumed));

    // Open watches end cleanly when the server stops (a stream still open after the grace
    // period would be cut instead: an error here, not the end of the body).
    let mut open = Watch::open(&a.http, &id, None).await;
    open.next().await;
    a.stop().await;
    let end = tokio::time::timeout(WAIT, open.response.chunk())
        .await
        .expect("the stream ends");
    assert!(
        matches!(end, Ok(None)),
        "a clean end of the stream: {end:?}"
    );
    b.stop().await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_watch_sees_only_that_customers_states_in_stream_order_and_resumes_by_position()
{
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let a = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order-a")).await;
    let b = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order-b")).await;
    b.wait_ready(WAIT).await;
    let p = product.api().create_product("Watched", "2.00", 10).await;
    a.api().wait_snapshot_version(&p, 1).await;
    let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());

    // Watching on B: ann's orders, and every order (admin). Orders are placed on A.
    let mut anns = Watch::open_path(
        &b.http,
        &format!("/api/orders/watch?customerId={ann}"),
        None,
    )
    .await;
    let mut all = Watch::open_path(&b.http, "/api/orders/watch", None).await;
    let place = |customer| {
        let api = a.api();
        let body = order_body(customer, &[(&p, 1)]);
        async move {
            api.place(&body).await.expect(201)["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let first = place(ann).await;
    let bobs = place(bob).await;
    b.api().cancel(&first, "watched").await.expect(200);
    let mut seen = Vec::new();
    // Confirmed before its first publish: three states.
    for expected in ["OrderConfirmed", "OrderCancelled", "OrderStockReleased"] {
        let (event, position, order) = anns.next().await;
        assert_eq!(
            (event.as_str(), order["id"].as_str()),
            (expected, Some(first.as_str()))
        );
        seen.push(position);
    }
    assert!(seen.is_sorted() && seen[0] > 0, "positions grow: {seen:?}");
    // The admin's watch of every order also sees bob's, in stream order.
    let mut everyone = Vec::new();
    while everyone.len() < 4 {
        let (_, position, order) = all.next().await;
        everyone.push((position, order["id"].as_str().unwrap().to_owned()));
    }
    assert!(everyone.iter().any(|(_, id)| *id == bobs), "{everyone:?}");
    assert!(
        everyone.is_sorted_by_key(|(position, _)| *position),
        "{everyone:?}"
    );

    // Resuming after the first event on the other instance sends exactly the later ones.
    let after = seen[0].to_string();
    let mut resumed = Watch::open_path(
        &a.http,
        &format!("/api/orders/watch?customerId={ann}"),
        Some(&after),
    )
    .await;
    assert_eq!(resumed.next().await.1, seen[1]);
    assert_eq!(resumed.next().await.1, seen[2]);

    // Bad input is a 400 naming it.
    let api = tests::OrderApi::new(&a.http);
    api.http()
        .get("/api/orders/watch?customerId=00000000-0000-0000-0000-000000000000")
        .await
        .problem(400);
    let bad = reqwest::Client::new()
        .get(format!("{}/api/orders/watch", a.http))
        .headers(tests::auth_headers())
        .header("last-event-id", "-1")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    drop((anns, all, resumed));
    a.stop().await;
    b.stop().await;
    product.stop().await;
}
