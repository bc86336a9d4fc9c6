//! product-svc against a real nats-server and real sled: the catalog in `PRODUCTS`, the stock
//! books in `LEDGER`, the gRPC stock API's guarantees, and bad input.
use proto::ErrorCode;
use serde_json::{Value, json};
use tests::{NatsServer, ProductService, ServiceProcess, http_client, scratch, wait_for};
use uuid::Uuid;

use crate::{
    WAIT, create_product, get_json, js, last_message, stream_messages, wait_stream_messages,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_publishes_exactly_one_event_with_headers_and_body() {
    let nats = NatsServer::start();
    let dir = scratch();
    let svc = ProductService::start(&nats.url(), dir.path()).await;
    let response = http_client()
        .post(format!("{}/api/products", svc.http))
        .header("X-Correlation-ID", "test-corr-1")
        .json(&crate::product_body("Lamp", "149.99", 5, 2))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-correlation-id"], "test-corr-1");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let product: Value = response.json().await.unwrap();
    let id = product["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/products/{id}"));
    assert_eq!(product["price"], "149.99");
    assert_eq!(product["version"], 1);
    assert_eq!(product["availableQuantity"], 5);

    let js = js(&nats.url()).await;
    wait_stream_messages(&js, "PRODUCTS", 1).await;
    let (headers, body) = last_message(&js, "PRODUCTS", &format!("eshop.products.{id}"))
        .await
        .expect("event on the product's subject");
    assert_eq!(
        headers.get("Nats-Msg-Id").unwrap().as_str(),
        body["eventId"].as_str().unwrap()
    );
    assert_eq!(
        headers.get("Eshop-Event-Type").unwrap().as_str(),
        "ProductCreated"
    );
    assert_eq!(
        headers.get("X-Correlation-ID").unwrap().as_str(),
        "test-corr-1"
    );
    assert_eq!(body["eventType"], "ProductCreated");
    assert_eq!(body["schemaVersion"], 1);
    assert_eq!(body["productId"], id.as_str());
    assert_eq!(body["version"], 1);
    assert_eq!(body["name"], "Lamp");
    assert_eq!(body["price"], "149.99");
    assert_eq!(body["category"], "Tests");
    assert_eq!(body["deleted"], false);
    assert!(
        Uuid::parse_str(body["eventId"].as_str().unwrap())
            .unwrap()
            .get_version_num()
            == 7
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_and_delete_publish_full_state_with_growing_versions() {
    let nats = NatsServer::start();
    let dir = scratch();
    let svc = ProductService::start(&nats.url(), dir.path()).await;
    let products = svc.api();
    let id = &products.create_product("Kettle", "20.00", 10).await;
    let subject = format!("eshop.products.{id}");
    let js = js(&nats.url()).await;
    wait_for("created event", WAIT, || async {
        last_message(&js, "PRODUCTS", &subject)
            .await
            .filter(|(_, b)| b["version"] == 1)
    })
    .await;

    let mut update = crate::product_body("Kettle Pro", "25.5", 0, 0);
    update.as_object_mut().unwrap().remove("stockQuantity");
    let response = products.update(id, &update, None).await;
    assert_eq!(response.header("etag"), Some("\"2\""));
    let updated = response.expect(200);
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["price"], "25.50");
    assert_eq!(updated["stockQuantity"], 10, "PUT does not touch stock");
    let (_, body) = wait_for("updated event", WAIT, || async {
        last_message(&js, "PRODUCTS", &subject)
            .await
            .filter(|(_, b)| b["version"] == 2)
    })
    .await;
    assert_eq!(body["eventType"], "ProductUpdated");
    assert_eq!(body["name"], "Kettle Pro");

    // The same body again changes nothing: no new version, no event.
    let same = products.update(id, &update, None).await.expect(200);
    assert_eq!(same["version"], 2);

    // If-Match with a stale version is refused and changes nothing.
    let mut other = crate::product_body("X", "1", 0, 0);
    other.as_object_mut().unwrap().remove("stockQuantity");
    let problem = products
        .update(id, &other, Some("\"1\""))
        .await
        .problem(412);
    assert_eq!(problem["currentVersion"], 2);

    products.discontinue(id, Some("\"2\"")).await.expect(200);
    let (headers, body) = wait_for("deleted event", WAIT, || async {
        last_message(&js, "PRODUCTS", &subject)
            .await
            .filter(|(_, b)| b["version"] == 3)
    })
    .await;
    assert_eq!(
        headers.get("Eshop-Event-Type").unwrap().as_str(),
        "ProductDeleted"
    );
    assert_eq!(body["deleted"], true);
    assert_eq!(
        body["name"], "Kettle Pro",
        "a delete still carries the full state"
    );

    // Compacted: one message per product however many changes it had.
    wait_for("compaction to one message", WAIT, || async {
        (stream_messages(&js, "PRODUCTS").await == 1).then_some(())
    })
    .await;
    assert_eq!(products.get(id).await.expect(200)["deleted"], true);
    products.update(id, &update, None).await.problem(409);
    // Discontinuing again answers it as it is (the contract's "or already was"): no new version.
    let again = products.discontinue(id, None).await.expect(200);
    assert_eq!(
        (again["version"].as_u64(), again["deleted"].as_bool()),
        (Some(3), Some(true))
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_down_writes_answer_503_and_store_nothing_then_work_again() {
    let mut nats = NatsServer::start();
    let dir = scratch();
    let svc = ProductService::start(&nats.url(), dir.path()).await;
    let first = create_product(&svc.http, "Before", "1.00", 5).await;
    let id = first["id"].as_str().unwrap().to_owned();
    let stock = svc.stock().await;

    nats.stop();
    let products = svc.api();
    wait_for("product-svc to see NATS gone", WAIT, || async {
        let ready = products.http().ready().await.body;
        (ready["checks"]["nats"]["ok"] == false).then_some(())
    })
    .await;
    for _ in 0..3 {
        let refused = products
            .create(&crate::product_body("During", "2.00", 3, 0))
            .await;
        assert_eq!(refused.status, 503, "no acknowledgement without JetStream");
        assert!(refused.header("retry-after").is_some());
    }
    assert_eq!(products.adjust_stock(&id, 5).await.status, 503);
    let reserve = stock
        .reserve(Uuid::new_v4(), &[(id.as_str(), 1)])
        .await
        .expect_err("no reservation without JetStream");
    assert_eq!(reserve.code(), tonic::Code::Unavailable, "{reserve:?}");
    nats.start_again();

    tests::wait_until_stock_ready(&svc.http, WAIT).await;
    let after = create_product(&svc.http, "After", "3.00", 1).await;
    assert_eq!(
        products.adjust_stock(&id, 2).await.expect(200)["stockQuantity"],
        7
    );
    let js_ctx = js(&nats.url()).await;
    let info = tests::stream_info(&js_ctx, "PRODUCTS")
        .await
        .expect("PRODUCTS exists");
    assert_eq!(
        info.state.messages, 2,
        "only the acknowledged creates are in the catalog"
    );
    assert_eq!(products.get(&id).await.expect(200)["stockQuantity"], 7);
    assert_eq!(
        products
            .get(after["id"].as_str().unwrap())
            .await
            .expect(200)["name"],
        "After"
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_or_stale_data_dir_restarts_with_every_product_stock_level_and_reservation() {
    let nats = NatsServer::start();
    let dir = scratch();
    let data = dir.path().join("data");
    let (mut svc, grpc) = ServiceProcess::product(&nats.url(), &data, dir.path());
    let a = create_product(&svc.http, "Kept A", "3.00", 10).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = create_product(&svc.http, "Kept B", "4.00", 20).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stock = tests::StockApi::connect(&grpc).await;
    let held = Uuid::new_v4();
    assert!(
        stock
            .reserve(held, &[(a.as_str(), 2), (b.as_str(), 3)])
            .await
            .unwrap()
            .success
    );
    // An old copy of the data dir, from before the rest.
    svc.kill9();
    let stale = dir.path().join("stale");
    copy_dir(&data, &stale);
    svc.start();
    let shipped = Uuid::new_v4();
    assert!(
        stock
            .reserve(shipped, &[(a.as_str(), 4)])
            .await
            .unwrap()
            .success
    );
    stock.commit(shipped).await.unwrap();
    let released = Uuid::new_v4();
    assert!(
        stock
            .reserve(released, &[(b.as_str(), 5)])
            .await
            .unwrap()
            .success
    );
    stock.release(released).await.unwrap();
    tests::ProductApi::new(&svc.http)
        .adjust_stock(&b, 7)
        .await
        .expect(200);
    // a: 10 - 4 shipped, 2 held; b: 20 + 7, 3 held (the released 5 came back).
    let expected = vec![(a.clone(), 6, 2), (b.clone(), 27, 3)];
    assert_eq!(books(&svc.http, &[&a, &b]).await, expected);

    for (how, restore) in [("restored from the stale copy", true), ("wiped", false)] {
        svc.kill9();
        std::fs::remove_dir_all(&data).unwrap();
        if restore {
            copy_dir(&stale, &data);
        }
        svc.start();
        // Wiped, it is a new instance: it takes over once the old one's lease went stale.
        tests::wait_until_writer(&svc.http, WAIT).await;
        assert_eq!(
            books(&svc.http, &[&a, &b]).await,
            expected,
            "data dir {how}"
        );
        // Every reservation is known again: a repeated call answers as the first one did.
        let again = stock
            .reserve(held, &[(a.as_str(), 2), (b.as_str(), 3)])
            .await
            .unwrap();
        assert!(again.success, "{how}: the held reservation is remembered");
        assert_eq!(
            books(&svc.http, &[&a, &b]).await,
            expected,
            "{how}: nothing held twice"
        );
        assert!(
            !stock.commit(shipped).await.unwrap().committed,
            "{how}: shipped once"
        );
    }
    // The audit reads the ledger itself: three reservations (no order stream here, so the held
    // one is reported as held without an order, which is what it is).
    let report = tests::ProductApi::new(&svc.http).audit().await.expect(200);
    assert_eq!(report["reservationsChecked"], 3, "{report}");
    assert_eq!(
        report["kinds"]["heldWithoutOrder"]["orderIds"],
        json!([held]),
        "{report}"
    );
}

/// Writes that fail their checks share the writer's batches with writes that succeed: each
/// failure answers its error and changes nothing, every success lands once, and the ledger holds
/// exactly the successes (a wiped instance rebuilds the same books).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_writes_in_a_shared_batch_change_nothing_and_the_rest_land_once() {
    let nats = NatsServer::start();
    let dir = scratch();
    let data = dir.path().join("data");
    let (mut svc, grpc) = ServiceProcess::product(&nats.url(), &data, dir.path());
    // 20 on hand from the start: the 20 reservations fit whatever order the calls land in.
    let id = create_product(&svc.http, "Batched", "2.00", 20).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stock = tests::StockApi::connect(&grpc).await;
    let api = tests::ProductApi::new(&svc.http);
    let calls = (0..80).map(|i| {
        let (stock, api, id) = (stock.clone(), api.clone(), id.clone());
        async move {
            match i % 4 {
                // Succeeds: +1 on hand.
                0 => api.adjust_stock(&id, 1).await.status == 200,
                // Fails its check: on hand would go below zero.
                1 => api.adjust_stock(&id, -1000).await.status == 409,
                // Succeeds: one unit held.
                2 => stock
                    .reserve(Uuid::new_v4(), &[(id.as_str(), 1)])
                    .await
                    .is_ok_and(|r| r.success),
                // Fails its check: no reservation to commit.
                _ => stock
                    .commit(Uuid::new_v4())
                    .await
                    .is_err_and(|s| s.code() == tonic::Code::NotFound),
            }
        }
    });
    let answers = futures::future::join_all(calls).await;
    let wrong: Vec<usize> = (0..answers.len()).filter(|i| !answers[*i]).collect();
    assert!(
        wrong.is_empty(),
        "calls answered otherwise than expected: {wrong:?}"
    );
    // 20 + 20 adjustments of +1; 20 units held.
    let expected = vec![(id.clone(), 40, 20)];
    assert_eq!(books(&svc.http, &[&id]).await, expected);

    svc.kill9();
    std::fs::remove_dir_all(&data).unwrap();
    svc.start();
    tests::wait_until_writer(&svc.http, WAIT).await;
    assert_eq!(
        books(&svc.http, &[&id]).await,
        expected,
        "the ledger holds exactly the writes that succeeded"
    );
}

/// Each product's (id, on hand, reserved), read over HTTP.
async fn books(http: &str, ids: &[&String]) -> Vec<(String, i64, i64)> {
    let api = tests::ProductApi::new(http);
    let mut rows = Vec::new();
    for id in ids {
        let p = api.get(id).await.expect(200);
        rows.push((
            id.to_string(),
            p["stockQuantity"].as_i64().unwrap(),
            p["reservedQuantity"].as_i64().unwrap(),
        ));
    }
    rows
}

/// Copies a directory tree (a data dir of a killed process).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_stock_is_idempotent_by_order_id() {
    let nats = NatsServer::start();
    let dir = scratch();
    let svc = ProductService::start(&nats.url(), dir.path()).await;
    let a = create_product(&svc.http, "A", "1.00", 10).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = create_product(&svc.http, "B", "1.00", 10).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stock = svc.stock().await;
    let order = Uuid::new_v4();

    let first = stock
        .reserve(order, &[(&a, 2), (&b, 3), (&a, 1)])
        .await
        .unwrap();
    assert!(first.success);
    // The same request (duplicates merged in any order) returns the stored result, reserving nothing more.
    let again = stock.reserve(order, &[(&b, 3), (&a, 3)]).await.unwrap();
    assert_eq!(again, first);
    let (_, pa) = get_json(&format!("{}/api/products/{a}", svc.http)).await;
    assert_eq!(pa["reservedQuantity"], 3);
    assert_eq!(pa["availableQuantity"], 7);

    let mismatch = stock.reserve(order, &[(&a, 1)]).await.unwrap();
    assert!(!mismatch.success);
    assert_eq!(mismatch.error_code, ErrorCode::RequestMismatch as i32);
    let (_, pa) = get_json(&format!("{}/api/products/{a}", svc.http)).await;
    assert_eq!(
        pa["reservedQuantity"], 3,
        "a mismatched request changes nothing"
    );

    // Release is idempotent and gives everything back.
    for _ in 0..2 {
        let released = stock.release(order).await.unwrap();
        assert!(released.success);
    }
    let (_, pa) = get_json(&format!("{}/api/products/{a}", svc.http)).await;
    assert_eq!(pa["reservedQuantity"], 0);
    let (_, pb) = get_json(&format!("{}/api/products/{b}", svc.http)).await;
    assert_eq!(pb["availableQuantity"], 10);

    // Releasing an unknown order succeeds, and a late reserve for it cannot hold stock.
    let late = Uuid::new_v4();
    assert!(stock.release(late).await.unwrap().success);
    let refused = stock.reserve(late, &[(&a, 1)]).await.unwrap();
    assert!(!refused.success);
    assert_eq!(refused.error_code, ErrorCode::RequestMismatch as i32);
    let (_, pa) = get_json(&format!("{}/api/products/{a}", svc.http)).await;
    assert_eq!(pa["reservedQuantity"], 0);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_stock_is_all_or_nothing_and_names_every_failure() {
    let nats = NatsServer::start();
    let dir = scratch();
    let svc = ProductService::start(&nats.url(), dir.path()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let stock = if i == 3 { 1 } else { 10 };
        ids.push(
            create_product(&svc.http, &format!("P{i}"), "1.00", stock).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let stock = svc.stock().await;
    let items: Vec<(&str, i32)> = ids.iter().map(|id| (id.as_str(), 2)).collect();
    let response = stock.reserve(Uuid::new_v4(), &items).await.unwrap();
    assert!(!response.success);
    assert_eq!(response.error_code, ErrorCode::InsufficientStock as i32);
    assert_eq!(response.failed_product_ids, vec![ids[3].clone()]);
    for id in &ids {
        let (_, p) = get_json(&format!("{}/api/products/{id}", svc.http)).await;
        assert_eq!(
            p["reservedQuantity"], 0,
            "no item of a failed reservation is held"
        );
    }
    let unknown = Uuid::new_v4().to_string();
    let both = stock
        .reserve(Uuid::new_v4(), &[(&ids[3], 5), (&unknown, 1), (&ids[0], 1)])
        .await
        .unwrap();
    assert_eq!(both.error_code, ErrorCode::ProductNotFound as i32);
    assert_eq!(both.failed_product_ids.len(), 2);
    assert!(
        both.failed_product_ids.contains(&unknown) && both.failed_product_ids.contains(&ids[3])
    );

    let found = stock.get_products(&[&ids[0], &unknown]).await.unwrap();
    assert_eq!(found.products.len(), 1);
    assert_eq!(found.products[0].version, 1);
    assert_eq!(found.products[0].price, "1.00");
    assert_eq!(found.missing_product_ids, vec![unknown]);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reservations_never_oversell() {
    let nats = NatsServer::start();
    let dir = scratch();
    let svc = ProductService::start(&nats.url(), dir.path()).await;
    let id = create_product(&svc.http, "Last ten", "1.00", 10).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stock = svc.stock().await;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (stock, id) = (stock.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            stock
                .reserve(Uuid::new_v4(), &[(&id, 1)])
                .await
                .unwrap()
                .success
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 10);
    let (_, p) = get_json(&format!("{}/api/products/{id}", svc.http)).await;
    assert_eq!(p["reservedQuantity"], 10);
    assert_eq!(p["availableQuantity"], 0);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_adjustments_respect_reservations_and_low_stock_fires_once_per_crossing() {
    let nats = NatsServer::start();
    let dir = scratch();
    let svc = ProductService::start(&nats.url(), dir.path()).await;
    let products = svc.api();
    let id = products
        .create(&crate::product_body("Low", "1.00", 12, 10))
        .await
        .id();
    let stock = svc.stock().await;
    assert!(
        stock
            .reserve(Uuid::new_v4(), &[(&id, 3)])
            .await
            .unwrap()
            .success
    ); // 9 < 10: crossing
    assert!(
        stock
            .reserve(Uuid::new_v4(), &[(&id, 1)])
            .await
            .unwrap()
            .success
    ); // still low
    assert!(
        stock
            .reserve(Uuid::new_v4(), &[(&id, 1)])
            .await
            .unwrap()
            .success
    );

    // On hand 12, reserved 5: writing off 8 would leave 4 < 5 reserved.
    products.adjust_stock(&id, -8).await.problem(409);
    let body = products.adjust_stock(&id, -7).await.expect(200);
    assert_eq!(
        (
            body["stockQuantity"].as_i64(),
            body["availableQuantity"].as_i64()
        ),
        (Some(5), Some(0))
    );
    // Restock above the threshold, then a new crossing fires again.
    products.adjust_stock(&id, 20).await.expect(200);
    assert!(
        stock
            .reserve(Uuid::new_v4(), &[(&id, 15)])
            .await
            .unwrap()
            .success
    );

    let js = js(&nats.url()).await;
    wait_stream_messages(&js, "STOCK", 2).await;
    let (headers, body) = last_message(&js, "STOCK", &format!("eshop.stock.{id}"))
        .await
        .unwrap();
    assert_eq!(
        headers.get("Eshop-Event-Type").unwrap().as_str(),
        "StockLow"
    );
    assert_eq!(body["availableQuantity"], 5);
    assert_eq!(body["lowStockThreshold"], 10);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_lists_sort_by_name_filter_by_category_and_page() {
    let nats = NatsServer::start();
    let dir = scratch();
    let svc = ProductService::start(&nats.url(), dir.path()).await;
    let products = svc.api();
    for name in ["Cherry", "apple", "Banana", "Date", "Elder"] {
        products.create_product(name, "1.00", 1).await;
    }
    let mut other = crate::product_body("Zeta", "1.00", 1, 0);
    other["category"] = json!("Other");
    products.create(&other).await.expect(201);
    let page = products
        .list("category=Tests&page=2&pageSize=2")
        .await
        .expect(200);
    assert_eq!(page["totalCount"], 5);
    assert_eq!(page["totalPages"], 3);
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Date", "Elder"],
        "byte order: upper case sorts before lower case"
    );
    let all = products.list("").await.expect(200);
    assert_eq!(all["totalCount"], 6);
    assert_eq!(all["pageSize"], 20);
    let past = products.list("page=9").await.expect(200);
    assert_eq!(past["items"].as_array().unwrap().len(), 0);
    let (_, ready) = get_json(&format!("{}/health/ready", svc.http)).await;
    assert_eq!(
        ready["checks"]["store"]["products"], 6,
        "readiness counts the catalog"
    );
    svc.stop().await;
}

/// Create bodies the API refuses: (body, status, the field the problem names).
fn refused_create_bodies() -> Vec<(String, u16, Option<&'static str>)> {
    let valid = || json!({"name": "n", "description": "", "price": "1", "category": "c", "stockQuantity": 1, "lowStockThreshold": 0});
    let with = |field: &str, value: Value| {
        let mut body = valid();
        body[field] = value;
        body.to_string()
    };
    vec![
        ("{".into(), 400, None),
        ("[]".into(), 400, Some("$")),
        (json!({"name": 5}).to_string(), 400, Some("name")),
        (json!({"name": "x", "extra": 1}).to_string(), 400, Some("extra")),
        (json!({}).to_string(), 400, Some("name")),
        (with("price", json!("-1")), 400, Some("price")),
        (with("price", json!("1.005")), 400, Some("price")),
        (with("price", json!(7)), 400, Some("price")),
        (with("name", json!(" ")), 400, Some("name")),
        (with("stockQuantity", json!(-1)), 400, Some("stockQuantity")),
        (with("stockQuantity", json!(1e30)), 400, Some("stockQuantity")),
        (with("name", json!("n".repeat(201))), 400, Some("name")),
        // A non-ASCII name is fine; only the description is too long.
        (json!({"name": "ñandú 🦤", "description": "d".repeat(2001), "price": "1", "category": "c",
            "stockQuantity": 1, "lowStockThreshold": 0}).to_string(), 400, Some("description")),
        (format!("{{\"name\": \"{}\"}}", "x".repeat(70 * 1024)), 413, None),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_http_input_gets_a_problem_and_changes_nothing() {
    let nats = NatsServer::start();
    let dir = scratch();
    let svc = ProductService::start(&nats.url(), dir.path()).await;
    let products = svc.api();
    let http = products.http();
    let id = &products.create_product("Keep", "1.00", 1).await;
    for (body, status, field) in refused_create_bodies() {
        let answer = http.post_raw("/api/products", Some("application/json"), body.clone());
        let problem = answer.await.problem(status);
        if let Some(field) = field {
            assert!(
                problem["errors"][field].is_array(),
                "no error keyed `{field}` for {}: {problem}",
                &body[..body.len().min(80)]
            );
        }
    }
    http.post_raw("/api/products", None, "{}")
        .await
        .problem(415);
    let unknown = format!("/api/products/{}", Uuid::new_v4());
    for path in ["/api/products/not-a-uuid", &unknown, "/nope"] {
        http.get(path).await.problem(404);
    }
    products.list("page=0").await.problem(400);
    products.list("pageSize=101").await.problem(400);
    let stock = format!("/api/products/{id}/stock");
    for delta in [json!(1.5), json!("1")] {
        http.post_json(&stock, &json!({ "delta": delta }))
            .await
            .problem(400);
    }
    // A malformed If-Match is a 400 naming the header (not a 412 against a made-up version).
    let problem = products.discontinue(id, Some("W/3")).await.problem(400);
    assert!(problem["errors"]["If-Match"].is_array(), "{problem}");
    // A bad correlation id is replaced, not echoed.
    let r = http_client()
        .get(format!("{}/api/products/{id}", svc.http))
        .header("X-Correlation-ID", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let echoed = r.headers()["x-correlation-id"].to_str().unwrap().to_owned();
    assert!(
        Uuid::parse_str(&echoed).is_ok(),
        "replaced by a UUID: {echoed}"
    );

    let list = products.list("").await.expect(200);
    assert_eq!(list["totalCount"], 1, "nothing was created by bad input");
    assert_eq!(products.get(id).await.expect(200)["version"], 1);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_grpc_input_is_invalid_argument_naming_the_field() {
    let nats = NatsServer::start();
    let dir = scratch();
    let svc = ProductService::start(&nats.url(), dir.path()).await;
    let id = svc.api().create_product("G", "1.00", 5).await;
    let stock = svc.stock().await;
    let order = Uuid::new_v4().to_string();
    let nil = Uuid::nil().to_string();
    // (order id, lines, the field the refusal names)
    type Case<'a> = (&'a str, Vec<(&'a str, i32)>, &'a str);
    let cases: Vec<Case> = vec![
        ("x", vec![(&id, 1)], "order_id"),
        (&nil, vec![(&id, 1)], "order_id"),
        (&order, vec![(&nil, 1)], "items[0].product_id"),
        (&order, vec![], "items"),
        (&order, vec![("nope", 1)], "items[0].product_id"),
        (&order, vec![(&id, 1), (&id, 0)], "items[1].quantity"),
        (&order, vec![(&id, -5)], "items[0].quantity"),
    ];
    for (order, items, field) in cases {
        let status = stock.reserve(order, &items).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
    let status = stock.release("").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let status = stock.get_products(&["bad"]).await.unwrap_err();
    assert!(status.message().starts_with("product_ids[0]"));
    assert_eq!(svc.api().field(&id, "reservedQuantity").await, 0);
    svc.stop().await;
}
