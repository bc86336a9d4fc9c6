//! API keys on both HTTP APIs: 401 without a valid key, 403 without the scope, open probes, and
//! a key bound to a customer that sees only that customer's orders. In-process services.
use serde_json::{Value, json};
use tests::{
    Answer, NatsServer, OrderApi, OrderService, ProductApi, ProductService, TEST_KEY, scratch,
};
use uuid::Uuid;

use crate::{create_product, expect_problem, wait_snapshot_version};

/// A client that sends no key, or the given one.
fn client(key: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = key {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {key}").parse().unwrap(),
        );
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

fn entry(name: &str, key: &str, scopes: &[&str], customer: Option<Uuid>) -> Value {
    let mut e = json!({"name": name, "sha256": shared::auth::hash_key(key), "scopes": scopes});
    if let Some(c) = customer {
        e["customerId"] = json!(c);
    }
    e
}

fn order_body(customer: Uuid, product: &str) -> Value {
    tests::order_body(customer, &[(product, 1)])
}

/// Key files with roles: product-svc's admin and a catalog reader; order-svc's admin, a key bound
/// to `ann` and an unbound support key that may only read.
fn keys_with_roles(dir: &std::path::Path, ann: Uuid) -> (std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let product_keys = dir.join("product.json");
    std::fs::write(
        &product_keys,
        json!({"keys": [
            entry("admin", TEST_KEY, product_svc::SCOPES, None),
            entry("reader", "catalog-reader", &["catalog:read"], None),
        ]})
        .to_string(),
    )
    .unwrap();
    let order_keys = dir.join("order.json");
    std::fs::write(
        &order_keys,
        json!({"keys": [
            entry("admin", TEST_KEY, order_svc::SCOPES, None),
            entry("ann", "ann-key", &["orders:read", "orders:write"], Some(ann)),
            entry("support", "support-key", &["orders:read"], None),
        ]})
        .to_string(),
    )
    .unwrap();
    (product_keys, order_keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_scopes_and_customer_binding_decide_who_may_do_what() {
    let nats = NatsServer::start();
    let dir = scratch();
    let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let (product_keys, order_keys) = keys_with_roles(&dir.path().join("keys"), ann);
    let mut pc = product_svc::Config::for_tests(dir.path().join("product"), &nats.url());
    pc.api_keys = Some(product_keys);
    let product = ProductService::start_with(pc).await;
    let mut oc = order_svc::Config::for_tests(dir.path().join("order"), &nats.url(), &product.grpc);
    oc.api_keys = Some(order_keys);
    let order = OrderService::start_with(oc).await;
    let p = product.api().create_product("Keyed", "1.00", 100).await;
    order.api().wait_snapshot_version(&p, 1).await;

    // No key, a wrong key, a malformed header: 401 with WWW-Authenticate; probes stay open.
    for c in [client(None), client(Some("wrong"))] {
        for url in [
            format!("{}/api/products", product.http),
            format!("{}/api/orders?customerId={ann}", order.http),
        ] {
            let r = Answer::read(c.get(&url).send().await.unwrap()).await;
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
            r.problem(401);
        }
        for url in [
            format!("{}/health/ready", product.http),
            format!("{}/health/live", order.http),
            format!("{}/openapi.json", order.http),
        ] {
            assert_eq!(c.get(&url).send().await.unwrap().status(), 200, "{url}");
        }
    }
    let r = client(None)
        .get(format!("{}/api/products", product.http))
        .header("Authorization", "Basic eDp5")
        .send()
        .await
        .unwrap();
    expect_problem(r, 401).await;

    // Scopes: a catalog reader reads but cannot write.
    let reader = ProductApi::with_client(&product.http, client(Some("catalog-reader")));
    reader.get(&p).await.expect(200);
    reader.adjust_stock(&p, 5).await.problem(403);

    // A key bound to ann: her orders only.
    let as_ann = OrderApi::with_client(&order.http, client(Some("ann-key")));
    let anns = as_ann.place(&order_body(ann, &p)).await.expect(201);
    let ann_id = anns["id"].as_str().unwrap();
    as_ann.place(&order_body(bob, &p)).await.problem(403);
    let bob_id = &order.api().place(&order_body(bob, &p)).await.id();
    as_ann.get(bob_id).await.problem(404);
    as_ann.cancel(bob_id, "not mine").await.problem(404);
    as_ann.list(&format!("customerId={bob}")).await.problem(403);
    let page = as_ann.list("").await.expect(200);
    assert_eq!(page["totalCount"], 1, "an unfiltered listing is her own");
    assert_eq!(page["items"][0]["id"], anns["id"]);
    as_ann.get(ann_id).await.expect(200);
    // Shipping is an admin action, even for the customer's own order.
    as_ann.ship(ann_id).await.problem(403);

    // Unbound orders:read reads any order and filtered lists, but not unfiltered ones or writes.
    let support = OrderApi::with_client(&order.http, client(Some("support-key")));
    support.get(bob_id).await.expect(200);
    support.list("").await.problem(403);
    support.cancel(bob_id, "no").await.problem(403);
    let all = order.api().list("").await.expect(200);
    assert_eq!(all["totalCount"], 2, "admin sees all");
    order.stop().await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_a_service_refuses_to_start_unless_anonymous_is_allowed() {
    let nats = NatsServer::start();
    let dir = scratch();
    let config = product_svc::Config::for_tests(dir.path().join("product"), &nats.url());
    let error = product_svc::App::build(config.clone())
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("--api-keys"), "{error}");
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"keys": [{"name": "x", "sha256": "00", "scopes": ["catalog:read"]}]}"#,
    )
    .unwrap();
    let mut with_bad = config.clone();
    with_bad.api_keys = Some(bad);
    let error = product_svc::App::build(with_bad)
        .await
        .err()
        .expect("refused");
    // The file, then the entry as its cause.
    let chain = format!("{error:#}");
    assert!(
        chain.contains("bad.json") && chain.contains("entry 0 (\"x\")"),
        "{chain}"
    );

    let mut anonymous = config;
    anonymous.allow_anonymous = true;
    let product = ProductService::start_with(anonymous).await;
    let r = client(None)
        .get(format!("{}/api/products", product.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "anonymous mode needs no key");
    product.stop().await;

    // The documented env form, ALLOW_ANONYMOUS=1, on the real binary (clap's plain bool parser
    // would take only true/false).
    let (mut process, _) = tests::ServiceProcess::product_with(
        &nats.url(),
        &dir.path().join("product-env"),
        dir.path(),
        &[
            ("PRODUCT_API_KEYS", ""),
            ("PRODUCT_GRPC_TOKEN_FILE", ""),
            ("ALLOW_ANONYMOUS", "1"),
        ],
    );
    let r = client(None)
        .get(format!("{}/api/products", process.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "ALLOW_ANONYMOUS=1 is anonymous mode");
    assert!(
        process
            .terminate(std::time::Duration::from_secs(10))
            .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stock_api_needs_the_shared_token_and_health_stays_open() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let channel = tonic::transport::Endpoint::from_shared(product.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let request = || proto::ReleaseStockRequest {
        order_id: Uuid::new_v4().to_string(),
    };
    let mut bare = proto::product_service_client::ProductServiceClient::new(channel.clone());
    let status = bare.release_stock(request()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let mut wrong = tonic::Request::new(request());
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer not-the-token".parse().unwrap());
    let status = bare.release_stock(wrong).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let good = product.stock().await;
    assert!(good.release(Uuid::new_v4()).await.unwrap().success);
    // A client without the token still gets health.
    let path = http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let health: tonic::Response<HealthResponse> = grpc
        .unary(
            tonic::Request::new(HealthRequest::default()),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect("health is open");
    assert_eq!(health.into_inner().status, 1, "SERVING");
    product.stop().await;

    // No token file: refused unless anonymous.
    let mut config = product_svc::Config::for_tests(dir.path().join("p2"), &nats.url());
    config.api_keys = Some(tests::write_test_keys(&dir.path().join("k2")).product);
    let error = product_svc::App::build(config)
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("--grpc-token-file"), "{error}");
}

/// `grpc.health.v1.HealthCheckRequest` / `HealthCheckResponse`, by hand (no health proto here).
#[derive(Clone, PartialEq, prost::Message)]
struct HealthRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_has_its_own_rate_limit_and_probes_have_none() {
    let nats = NatsServer::start();
    let dir = scratch();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let file = keys.join("product.json");
    std::fs::write(
        &file,
        json!({"keys": [
            entry("a", "key-a", &["catalog:read"], None),
            entry("b", "key-b", &["catalog:read"], None),
        ]})
        .to_string(),
    )
    .unwrap();
    let mut config = product_svc::Config::for_tests(dir.path().join("product"), &nats.url());
    config.api_keys = Some(file);
    // A burst of 3, then one a second: a fourth request right away is refused.
    config.rate_limit = 1;
    config.rate_burst = 3;
    let product = ProductService::start_with(config).await;
    let url = format!("{}/api/products", product.http);
    let a = client(Some("key-a"));
    // The bucket starts full: the burst passes. Then, at one a second, a refusal must come
    // within a few more requests (unless they took many seconds).
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(a.get(&url).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200]);
    let mut limited = None;
    for _ in 0..20 {
        let r = a.get(&url).send().await.unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.expect("a refusal within 20 requests at one a second");
    assert!(limited.headers().contains_key("retry-after"));
    let problem = expect_problem(limited, 429).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("Too many requests")
    );
    let b = client(Some("key-b"));
    assert_eq!(
        b.get(&url).send().await.unwrap().status(),
        200,
        "key b has its own bucket"
    );
    for _ in 0..10 {
        let r = a
            .get(format!("{}/health/ready", product.http))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "probes are not limited");
    }
    product.stop().await;
}

/// Anonymous mode has a bucket per client IP: test clients bound to 127.0.0.2 and 127.0.0.3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_callers_have_a_rate_limit_per_client_ip() {
    let nats = NatsServer::start();
    let dir = scratch();
    let mut config = product_svc::Config::for_tests(dir.path().join("product"), &nats.url());
    config.allow_anonymous = true;
    config.rate_limit = 1;
    config.rate_burst = 3;
    let product = ProductService::start_with(config).await;
    let url = format!("{}/api/products", product.http);
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let (first, second) = (from([127, 0, 0, 2]), from([127, 0, 0, 3]));
    let mut limited = None;
    for _ in 0..23 {
        let r = first.get(&url).send().await.unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status(), 200);
    }
    expect_problem(
        limited.expect("127.0.0.2 is limited within 23 requests"),
        429,
    )
    .await;
    assert_eq!(
        second.get(&url).send().await.unwrap().status(),
        200,
        "127.0.0.3 has its own bucket"
    );
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_credentials_work_end_to_end_and_a_wrong_password_fails_start_up_fast() {
    let nats = NatsServer::start_with("test-auth.conf");
    let dir = scratch();
    let credentials = |password: &str| shared::nats::NatsAuth {
        nats_user: Some("eshop".into()),
        nats_password: Some(password.into()),
        ..Default::default()
    };
    for auth in [
        credentials("wrong-password"),
        shared::nats::NatsAuth::default(),
    ] {
        let mut config = product_svc::Config::for_tests(dir.path().join("refused"), &nats.url());
        config.allow_anonymous = true;
        config.nats_auth = auth;
        let started = std::time::Instant::now();
        let error = product_svc::App::build(config)
            .await
            .err()
            .expect("refused");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "fails fast, not an endless reconnect loop: {:?}",
            started.elapsed()
        );
        // The whole chain: what failed, and the server's reason as its cause.
        let text = format!("{error:#}");
        assert!(
            text.contains("refused this client") && text.contains("authorization"),
            "{text}"
        );
    }

    // The default build has no nkeys support (a size choice): such flags are refused clearly.
    let mut nkey = product_svc::Config::for_tests(dir.path().join("nkey"), &nats.url());
    nkey.allow_anonymous = true;
    nkey.nats_auth.nats_creds = Some(dir.path().join("user.creds"));
    let error = product_svc::App::build(nkey).await.err().expect("refused");
    assert!(error.to_string().contains("nats-nkeys"), "{error}");

    let mut pc = product_svc::Config::for_tests(dir.path().join("product"), &nats.url());
    pc.nats_auth = credentials("test-nats-password");
    let product = ProductService::start_with(pc).await;
    let mut oc = order_svc::Config::for_tests(dir.path().join("order"), &nats.url(), &product.grpc);
    oc.nats_auth = credentials("test-nats-password");
    let order = OrderService::start_with(oc).await;
    let p = create_product(&product.http, "Secured", "3.00", 5).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_snapshot_version(&order.http, &p, 1).await;
    let placed = client(Some(TEST_KEY))
        .post(format!("{}/api/orders", order.http))
        .json(&order_body(Uuid::new_v4(), &p))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 201);
    order.stop().await;
    product.stop().await;
}

fn nats_user(user: &str, password: &str) -> shared::nats::NatsAuth {
    shared::nats::NatsAuth {
        nats_user: Some(user.into()),
        nats_password: Some(password.into()),
        ..Default::default()
    }
}

/// Each service's NATS user subscribes below its own inbox prefix only: a request through it is
/// answered, and the other service's inbox (or every inbox) is refused by the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_nats_user_may_read_only_its_own_inbox() {
    let nats = NatsServer::start_with("test-secure.conf");
    for (user, password, other) in [
        ("product-svc", "test-product-password", "order-svc"),
        ("order-svc", "test-order-password", "product-svc"),
    ] {
        let (tx, mut refusals) = tokio::sync::mpsc::unbounded_channel();
        let client =
            async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
                .custom_inbox_prefix(shared::nats::inbox_prefix(user))
                .event_callback(move |event| {
                    let tx = tx.clone();
                    async move {
                        if let async_nats::Event::ServerError(e) = event {
                            let _ = tx.send(e.to_string().to_lowercase());
                        }
                    }
                })
                .connect(nats.url())
                .await
                .unwrap();
        let js = async_nats::jetstream::new(client.clone());
        js.query_account()
            .await
            .expect("a reply to its own inbox arrives");
        for forbidden in [
            format!("{}.>", shared::nats::inbox_prefix(other)),
            "_INBOX.>".into(),
        ] {
            let _subscription = client.subscribe(forbidden.clone()).await.unwrap();
            let refusal = tokio::time::timeout(crate::WAIT, refusals.recv())
                .await
                .expect("the server refuses the subscription")
                .unwrap();
            assert!(
                refusal.contains("permissions violation")
                    && refusal.contains(&forbidden.to_lowercase()),
                "{user} subscribing {forbidden}: {refusal}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_privilege_nats_users_run_the_system_and_refuse_a_forged_product_event() {
    let nats = NatsServer::start_with("test-secure.conf");
    let dir = scratch();
    let mut pc = product_svc::Config::for_tests(dir.path().join("product"), &nats.url());
    pc.nats_auth = nats_user("product-svc", "test-product-password");
    let product = ProductService::start_with(pc).await;
    let mut oc = order_svc::Config::for_tests(dir.path().join("order"), &nats.url(), &product.grpc);
    oc.nats_auth = nats_user("order-svc", "test-order-password");
    let order = OrderService::start_with(oc).await;
    order.wait_ready(crate::WAIT).await;
    let p = create_product(&product.http, "Guarded", "10.00", 5).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_snapshot_version(&order.http, &p, 1).await;
    let admin = client(Some(TEST_KEY));
    // Webhooks work under order-svc's user too (their streams are its alone).
    let receiver = tests::Receiver::start().await;
    let hook = OrderApi::with_client(&order.http, admin.clone())
        .register_hook(&json!({"url": receiver.url(), "events": ["OrderConfirmed"]}))
        .await
        .expect(201);
    receiver.trust(hook["secret"].as_str().expect("registered"));
    let placed: Value = admin
        .post(format!("{}/api/orders", order.http))
        .json(&order_body(Uuid::new_v4(), &p))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(placed["status"], "Confirmed", "{placed}");
    let id = placed["id"].as_str().unwrap();
    let (status, fetched) = crate::get_json(&format!("{}/api/orders/{id}", order.http)).await;
    assert_eq!((status, &fetched["id"]), (200, &placed["id"]));
    // A watch of every order reads the order stream under order-svc's user too.
    let mut watch =
        crate::watch::Watch::open_path(&order.http, "/api/orders/watch", Some("0")).await;
    let (event, _, first) = watch.next_within(crate::WAIT).await;
    assert_eq!(
        (event.as_str(), &first["id"]),
        ("OrderConfirmed", &placed["id"])
    );
    tests::wait_for("the confirmation delivered", crate::WAIT, || async {
        let accepted = receiver.accepted();
        accepted
            .iter()
            .any(|d| d.body["data"]["id"] == placed["id"])
            .then_some(())
    })
    .await;

    // order-svc's credentials cannot publish a product event: the server refuses it.
    let forger = shared::nats::connect(
        &nats.url(),
        "order-svc",
        &nats_user("order-svc", "test-order-password"),
    )
    .await
    .unwrap();
    let forged = json!({"eventId": Uuid::now_v7(), "eventType": "ProductUpdated", "schemaVersion": 1,
        "occurredAt": chrono::Utc::now(), "productId": p, "version": 99, "name": "Guarded",
        "description": "", "price": "0.01", "category": "Tests", "deleted": false});
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(std::time::Duration::from_secs(2))
        .build(forger);
    let outcome = match js
        .publish(format!("eshop.products.{p}"), forged.to_string().into())
        .await
    {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(outcome.is_err(), "the forged publish was refused");
    let admin_js = async_nats::jetstream::new(
        shared::nats::connect(
            &nats.url(),
            "admin",
            &nats_user("admin", "test-admin-password"),
        )
        .await
        .unwrap(),
    );
    let info = tests::stream_info(&admin_js, "PRODUCTS").await.unwrap();
    assert_eq!(info.state.messages, 1, "nothing forged was stored");
    let (_, row) = crate::get_json(&format!("{}/api/snapshot/products/{p}", order.http)).await;
    assert_eq!(
        (row["version"].as_u64(), row["price"].as_str()),
        (Some(1), Some("10.00"))
    );
    // product-svc's order follower and its audit work under its permission set.
    tests::wait_for(
        "the order follower to read the order stream",
        crate::WAIT,
        || async {
            let (_, ready) = crate::get_json(&format!("{}/health/ready", product.http)).await;
            (ready["figures"]["orderFollower"]["applied"].as_u64() >= Some(1)).then_some(())
        },
    )
    .await;
    crate::assert_books_agree(&product.http).await;
    order.stop().await;
    product.stop().await;
}
