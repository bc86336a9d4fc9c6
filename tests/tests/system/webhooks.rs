//! Webhooks with real receivers: every event of a hook's orders arrives signed, at least once,
//! in order per order, across a receiver that fails and one that is down; registrations are
//! scoped by key; hooks cannot reach private addresses unless allowed.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Value, json};
use tests::{
    NatsServer, OrderApi, OrderService, ProductService, Receiver, TEST_KEY, WAIT, order_body,
    scratch, wait_for,
};
use uuid::Uuid;

const ALL_EVENTS: [&str; 7] = [
    "OrderPlaced",
    "OrderConfirmed",
    "OrderRejected",
    "OrderCancelled",
    "OrderShipped",
    "OrderStockReleased",
    "OrderStockCommitted",
];

pub(crate) fn order_config(nats: &str, grpc: &str, dir: &std::path::Path) -> order_svc::Config {
    let mut config = order_svc::Config::for_tests(dir.to_path_buf(), nats, grpc);
    config.webhook_backoff_ms = 100;
    config.webhook_allow_private = true;
    config
}

/// The `webhook-id` of every state in an order's history.
async fn expected_ids(api: &OrderApi, order: &str) -> Vec<(String, u64, String)> {
    let history = api.history(order).await.expect(200);
    let simple = Uuid::parse_str(order).unwrap().simple().to_string();
    history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let version = s["version"].as_u64().unwrap();
            let event = s["eventType"].as_str().unwrap().to_owned();
            (format!("msg_{simple}_{version}"), version, event)
        })
        .collect()
}

/// Waits until the hook's deliveries show an attempt matching `what`.
async fn wait_attempt(api: &OrderApi, hook: &str, what: &str, matches: impl Fn(&Value) -> bool) {
    wait_for(what, WAIT, || async {
        let answer = api.hooks(hook, "/deliveries").await.expect(200);
        answer["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(&matches)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_signed_once_by_id_and_in_order_across_a_failing_and_a_down_receiver() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let a = OrderService::start_with(order_config(
        &nats.url(),
        &product.grpc,
        &dir.path().join("a"),
    ))
    .await;
    let b = OrderService::start_with(order_config(
        &nats.url(),
        &product.grpc,
        &dir.path().join("b"),
    ))
    .await;
    b.wait_ready(WAIT).await;
    let (api_a, api_b) = (a.api(), b.api());
    let p = product.api().create_product("Hooked", "3.00", 100).await;
    api_a.wait_snapshot_version(&p, 1).await;
    api_b.wait_snapshot_version(&p, 1).await;
    let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());

    let mut receiver = Receiver::start().await;
    let hook = api_a
        .register_hook(&json!({"url": receiver.url(), "events": ALL_EVENTS, "customerId": ann}))
        .await;
    assert_eq!(hook.status, 201);
    let location = hook.header("location").unwrap().to_owned();
    let hook = hook.body;
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/webhooks/{hook_id}"));
    receiver.trust(hook["secret"].as_str().unwrap());
    // Any instance reads it at once; the secret is never shown again.
    let read = api_b.hooks(&hook_id, "").await.expect(200);
    assert_eq!(read["url"], hook["url"]);
    assert_eq!(read["customerId"], json!(ann));
    assert!(read.get("secret").is_none(), "{read}");

    // Receiver up: an order placed on A and cancelled on B; bob's order is not ann's hook's.
    let place = |api: &OrderApi, customer| {
        let body = order_body(customer, &[(&p, 1)]);
        let api = api.clone();
        async move {
            api.place(&body).await.expect(201)["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let first = place(&api_a, ann).await;
    let bobs = place(&api_b, bob).await;
    api_b.cancel(&first, "changed my mind").await.expect(200);

    // Receiver answering 503: an order placed on B and shipped on A.
    receiver.set_failing(true);
    let second = place(&api_b, ann).await;
    // Its own 503 (the first order's cancel may still be answered 503 too).
    wait_attempt(
        &api_a,
        &hook_id,
        "a 503 answer to the second order recorded",
        |a| a["statusCode"] == 503 && a["orderId"] == json!(second),
    )
    .await;
    api_a.ship(&second).await.expect(200);
    receiver.set_failing(false);

    // Receiver down (its port closed): an order placed on A.
    receiver.down().await;
    let third = place(&api_a, ann).await;
    wait_attempt(&api_b, &hook_id, "a refused connection recorded", |a| {
        a["statusCode"].is_null() && a["orderId"] == json!(third)
    })
    .await;
    receiver.up().await;

    // Every state of ann's orders arrives, once by webhook-id, each order's in version order.
    let mut expected = BTreeMap::new();
    for order in [&first, &second, &third] {
        let settled = |e: &Vec<(String, u64, String)>| {
            e.last().is_some_and(|(_, _, t)| {
                t != "OrderCancelled" && t != "OrderShipped" && t != "OrderPlaced"
            })
        };
        let ids = wait_for("the order's work to settle", WAIT, || async {
            let ids = expected_ids(&api_a, order).await;
            settled(&ids).then_some(ids)
        })
        .await;
        expected.insert(order.clone(), ids);
    }
    let wanted: BTreeSet<String> = expected
        .values()
        .flatten()
        .map(|(id, _, _)| id.clone())
        .collect();
    // Each order confirmed at once: cancelled (3 states), shipped (3), left confirmed (1).
    assert_eq!(wanted.len(), 3 + 3 + 1, "{expected:?}");
    let accepted = wait_for("every event delivered", WAIT, || async {
        let accepted = receiver.accepted();
        let got: BTreeSet<String> = accepted.iter().map(|d| d.id.clone()).collect();
        got.is_superset(&wanted).then_some(accepted)
    })
    .await;
    assert_eq!(receiver.bad_signatures(), 0, "every delivery verifies");
    let mut first_seen: HashMap<String, Vec<u64>> = HashMap::new();
    let mut seen = BTreeSet::new();
    for d in &accepted {
        let order = d.body["data"]["id"].as_str().unwrap().to_owned();
        assert_ne!(order, bobs, "bob's order is not for ann's hook");
        let version = d.body["data"]["version"].as_u64().unwrap();
        let (id, _, event) = expected[&order]
            .iter()
            .find(|(_, v, _)| *v == version)
            .unwrap();
        assert_eq!(
            (&d.id, d.body["type"].as_str().unwrap()),
            (id, event.as_str())
        );
        if seen.insert(d.id.clone()) {
            first_seen.entry(order).or_default().push(version);
        }
    }
    assert_eq!(seen, wanted);
    assert_eq!(
        accepted.len(),
        wanted.len(),
        "no event was sent twice by the two instances"
    );
    for (order, versions) in &first_seen {
        assert!(
            versions.is_sorted(),
            "{order}: versions arrived as {versions:?}"
        );
    }

    // The deliveries: newest first, the failures and the successes of the same events.
    let items = api_b.hooks(&hook_id, "/deliveries").await.expect(200)["items"].clone();
    let items = items.as_array().unwrap();
    let times: Vec<&str> = items.iter().map(|i| i["at"].as_str().unwrap()).collect();
    assert!(times.is_sorted_by(|x, y| x >= y), "newest first: {times:?}");
    for field in [
        "webhookId",
        "eventType",
        "orderId",
        "attempt",
        "statusCode",
        "error",
        "at",
    ] {
        assert!(items[0].get(field).is_some(), "{field} in {}", items[0]);
    }
    let of_second = |code: u64| {
        items
            .iter()
            .any(|i| i["orderId"] == json!(second) && i["statusCode"] == code)
    };
    assert!(of_second(503) && of_second(204), "{items:?}");

    // Deleted: gone on every instance, with its deliveries.
    api_b.delete_hook(&hook_id).await.expect(204);
    api_a.hooks(&hook_id, "").await.problem(404);
    api_a.hooks(&hook_id, "/deliveries").await.problem(404);
    api_a.delete_hook(&hook_id).await.problem(404);
    a.stop().await;
    b.stop().await;
    product.stop().await;
}

fn keys(dir: &std::path::Path, ann: Uuid) -> std::path::PathBuf {
    let entry = |name: &str, key: &str, scopes: &[&str], customer: Option<Uuid>| {
        let mut e = json!({"name": name, "sha256": shared::auth::hash_key(key), "scopes": scopes});
        if let Some(c) = customer {
            e["customerId"] = json!(c);
        }
        e
    };
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("order-keys.json");
    let keys = json!({"keys": [
        entry("admin", TEST_KEY, order_svc::SCOPES, None),
        entry("ann", "ann-key", &["orders:read", "orders:write"], Some(ann)),
        entry("support", "support-key", &["orders:read"], None),
    ]});
    std::fs::write(&path, keys.to_string()).unwrap();
    path
}

fn as_key(http: &str, key: &str) -> OrderApi {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {key}").parse().unwrap());
    OrderApi::with_client(
        http,
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_checked_and_scoped_and_private_addresses_are_refused_when_connecting() {
    let nats = NatsServer::start();
    let dir = scratch();
    let ann = Uuid::new_v4();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let mut config = order_config(&nats.url(), &product.grpc, &dir.path().join("order"));
    config.webhook_allow_private = false;
    config.webhook_max_attempts = 2;
    config.api_keys = Some(keys(&dir.path().join("roles"), ann));
    let order = OrderService::start_with(config).await;
    let (admin, anns, support) = (
        as_key(&order.http, TEST_KEY),
        as_key(&order.http, "ann-key"),
        as_key(&order.http, "support-key"),
    );
    let p = product.api().create_product("Guarded", "1.00", 10).await;
    admin.wait_snapshot_version(&p, 1).await;

    // Bad input: 400 naming the field (off the schema), 422 for a well-formed URL that names a
    // refused address; nothing registered.
    let bad = |url: &str, events: Value| json!({"url": url, "events": events});
    for (body, status, field) in [
        (
            bad("http://127.0.0.1:9/hook", json!(["OrderPlaced"])),
            422,
            "url",
        ),
        (
            bad("http://[::ffff:10.0.0.1]/", json!(["OrderPlaced"])),
            422,
            "url",
        ),
        (
            bad("http://169.254.169.254/latest", json!(["OrderPlaced"])),
            422,
            "url",
        ),
        (
            bad("ftp://example.com/", json!(["OrderPlaced"])),
            400,
            "url",
        ),
        (
            bad("https://example.com/", json!(["OrderLost"])),
            400,
            "events[0]",
        ),
        (bad("https://example.com/", json!([])), 400, "events"),
    ] {
        let problem = admin.register_hook(&body).await.problem(status);
        assert!(problem["errors"].get(field).is_some(), "{field}: {problem}");
    }
    assert_eq!(admin.hooks("", "").await.expect(200)["items"], json!([]));

    // Scopes: a read-only key registers nothing; ann's key registers only for ann.
    let receiver = Receiver::start().await;
    let by_name = format!("http://localhost:{}/hook", receiver.addr.port());
    support
        .register_hook(&json!({"url": by_name, "events": ["OrderPlaced"]}))
        .await
        .problem(403);
    anns.register_hook(
        &json!({"url": by_name, "events": ["OrderPlaced"], "customerId": Uuid::new_v4()}),
    )
    .await
    .problem(403);
    let anns_hook = anns
        .register_hook(&json!({"url": by_name, "events": ["OrderPlaced", "OrderConfirmed"]}))
        .await
        .expect(201);
    assert_eq!(anns_hook["customerId"], json!(ann));
    let everyones = admin
        .register_hook(&json!({"url": "https://hooks.example.com/in", "events": ["OrderShipped"]}))
        .await
        .expect(201);
    assert_eq!(everyones["customerId"], Value::Null);
    let (anns_id, everyones_id) = (
        anns_hook["id"].as_str().unwrap(),
        everyones["id"].as_str().unwrap(),
    );
    let ids = |list: Value| -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(anns.hooks("", "").await.expect(200)), [anns_id]);
    assert_eq!(
        ids(admin.hooks("", "").await.expect(200)),
        [anns_id, everyones_id]
    );
    anns.hooks(everyones_id, "").await.problem(404);
    anns.delete_hook(everyones_id).await.problem(404);

    // A name that resolves to loopback is registered, but never connected to: each attempt
    // fails, and after the last the event is parked.
    let placed = anns.place(&order_body(ann, &[(&p, 1)])).await.expect(201);
    let order_id = placed["id"].clone();
    wait_attempt(&anns, anns_id, "the event parked", |a| {
        a["orderId"] == order_id && a["parked"] == true && a["attempt"] == 2
    })
    .await;
    let items = anns.hooks(anns_id, "/deliveries").await.expect(200)["items"].clone();
    let error = items[0]["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("loopback"), "{error}");
    // The order's next event goes on after the parked one (and is parked too).
    wait_attempt(&anns, anns_id, "the confirmation parked", |a| {
        a["eventType"] == "OrderConfirmed" && a["parked"] == true
    })
    .await;
    assert_eq!(
        receiver.requests(),
        0,
        "nothing reached the loopback receiver"
    );

    anns.delete_hook(anns_id).await.expect(204);
    anns.hooks(anns_id, "").await.problem(404);
    assert_eq!(ids(admin.hooks("", "").await.expect(200)), [everyones_id]);
    order.stop().await;
    product.stop().await;
}

/// The instance's count of delivered webhook events (readiness figures).
async fn delivered(service: &OrderService) -> u64 {
    let ready = service.api().http().ready().await;
    ready.body["figures"]["webhooksDelivered"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_delivering_instance_stops_the_other_delivers_what_it_held_and_what_follows() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let mut instances = Vec::new();
    for name in ["a", "b"] {
        let config = order_config(&nats.url(), &product.grpc, &dir.path().join(name));
        instances.push(OrderService::start_with(config).await);
    }
    for i in &instances {
        i.wait_ready(WAIT).await;
    }
    let p = product
        .api()
        .create_product("Handed over", "1.00", 100)
        .await;
    instances[0].api().wait_snapshot_version(&p, 1).await;
    let ann = Uuid::new_v4();
    let receiver = Receiver::start().await;
    let hook = instances[0]
        .api()
        .register_hook(
            &json!({"url": receiver.url(), "events": ["OrderConfirmed"], "customerId": ann}),
        )
        .await
        .expect(201);
    receiver.trust(hook["secret"].as_str().unwrap());
    let place = |api: OrderApi| {
        let body = order_body(ann, &[(&p, 1)]);
        async move {
            api.place(&body).await.expect(201)["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };

    // One instance holds the pin: it alone delivers.
    receiver
        .wait_for_order(&place(instances[0].api()).await)
        .await;
    let (a, b) = (
        delivered(&instances[0]).await,
        delivered(&instances[1]).await,
    );
    assert_eq!(a + b, 1, "one delivery, by one instance");
    let pinned = if a == 1 { 0 } else { 1 };
    let other = instances.remove(1 - pinned);
    let pinned = instances.remove(0);

    // The receiver fails, so the pinned instance holds the next confirmation; then it stops.
    receiver.set_failing(true);
    let held = place(other.api()).await;
    wait_for("a failed attempt", WAIT, || async {
        (receiver.requests() >= 2).then_some(())
    })
    .await;
    pinned.stop().await;
    receiver.set_failing(false);
    // The other instance delivers the held event, and what follows.
    receiver.wait_for_order(&held).await;
    receiver.wait_for_order(&place(other.api()).await).await;
    assert_eq!(delivered(&other).await, 2);
    let ids: Vec<String> = receiver.accepted().iter().map(|d| d.id.clone()).collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "each event accepted once: {ids:?}");
    other.stop().await;
    product.stop().await;
}
