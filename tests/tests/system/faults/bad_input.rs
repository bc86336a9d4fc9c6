//! A sweep of malformed HTTP and gRPC input: 4xx problems, nothing changed.
use serde_json::{Value, json};
use tests::http_client;
use uuid::Uuid;

use crate::{expect_problem, get_json, wait_snapshot_version};

use super::*;

/// Invalid values for each field of a JSON body (every one must be refused).
pub(super) fn invalid_values(long: &str) -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!([]),
        json!({}),
        json!(1e300),
        json!(-1),
        json!(long),
        json!("\u{0}\u{1b}[31m"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_sweep_gets_4xx_problems_and_changes_nothing() {
    let Processes {
        nats: _nats,
        dir: _dir,
        product,
        grpc,
        order,
    } = Processes::start();
    let id = create_products(&product.http, 1, 10, 1).await.remove(0);
    wait_snapshot_version(&order.http, &id, 1).await;
    let before = product_catalog(&product.http).await;
    let long = "ж".repeat(5000);
    let corpus = body_corpus(&product.http, &order.http, &id, &long);
    let mut answered = sweep_bodies(&corpus).await;
    answered += sweep_paths(&product.http, &order.http).await;
    answered += sweep_grpc(&grpc, &id, &long).await;

    assert_eq!(
        product_catalog(&product.http).await,
        before,
        "no state change in product-svc"
    );
    let (_, p) = get_json(&format!("{}/api/products/{id}", product.http)).await;
    assert_eq!(
        (p["reservedQuantity"].as_i64(), p["stockQuantity"].as_i64()),
        (Some(0), Some(10))
    );
    let (_, orders) = get_json(&format!("{}/api/orders", order.http)).await;
    assert_eq!(orders["totalCount"], 0, "no order was created");
    crate::assert_books_agree(&product.http).await;
    eprintln!(
        "FIGURES bad input: {answered} bad requests, all 4xx problem+json or INVALID_ARGUMENT; 0 5xx; no state change"
    );
}

/// (method and URL, content type, body): every way to break each body of both APIs.
type Corpus = Vec<(String, String, Vec<u8>)>;

/// Missing fields, invalid values, unknown fields, truncated, mistyped and oversized bodies for
/// create/update product and create order; bad order lines; bad stock deltas.
fn body_corpus(product: &str, order: &str, id: &str, long: &str) -> Corpus {
    let mut corpus: Corpus = Vec::new();
    let valid_product = json!({"name": "N", "description": "D", "price": "1.00", "category": "C", "stockQuantity": 1, "lowStockThreshold": 0});
    let mut valid_update = valid_product.clone();
    valid_update
        .as_object_mut()
        .unwrap()
        .remove("stockQuantity");
    let valid_order = json!({"customerId": Uuid::new_v4(), "customerEmail": "a@b.co", "items": [{"productId": id, "quantity": 1}]});
    for (url, valid) in [
        (format!("POST {}/api/products", product), &valid_product),
        (format!("PUT {}/api/products/{id}", product), &valid_update),
        (format!("POST {}/api/orders", order), &valid_order),
    ] {
        let fields: Vec<String> = valid.as_object().unwrap().keys().cloned().collect();
        for field in &fields {
            let mut missing = valid.clone();
            missing.as_object_mut().unwrap().remove(field);
            corpus.push((
                url.clone(),
                "application/json".into(),
                serde_json::to_vec(&missing).unwrap(),
            ));
            for bad in invalid_values(long) {
                let mut body = valid.clone();
                body[field] = bad;
                corpus.push((
                    url.clone(),
                    "application/json".into(),
                    serde_json::to_vec(&body).unwrap(),
                ));
            }
        }
        let mut unknown = valid.clone();
        unknown["surprise"] = json!(1);
        corpus.push((
            url.clone(),
            "application/json".into(),
            serde_json::to_vec(&unknown).unwrap(),
        ));
        let text = serde_json::to_vec(valid).unwrap();
        for cut in (1..text.len()).step_by(7) {
            corpus.push((url.clone(), "application/json".into(), text[..cut].to_vec()));
        }
        corpus.push((url.clone(), "text/plain".into(), text.clone()));
        corpus.push((
            url.clone(),
            "application/json".into(),
            vec![b'['; 200 * 1024],
        ));
        corpus.push((
            url.clone(),
            "application/json".into(),
            b"\xff\xfe\x00".to_vec(),
        ));
    }
    corpus.extend(line_and_delta_cases(product, order, id, &valid_order, long));
    corpus
}

/// Order lines (bad quantities and product ids, too many lines) and stock deltas.
fn line_and_delta_cases(
    product: &str,
    order: &str,
    id: &str,
    valid_order: &Value,
    long: &str,
) -> Corpus {
    let mut corpus: Corpus = Vec::new();
    // Order items: every per-item mutation, and too many items.
    for bad in [
        json!(0),
        json!(-5),
        json!(10_001),
        json!(1.5),
        json!(9_223_372_036_854_775_807i64),
        json!("1"),
        json!(null),
    ] {
        let mut body = valid_order.clone();
        body["items"][0]["quantity"] = bad;
        corpus.push((
            format!("POST {}/api/orders", order),
            "application/json".into(),
            serde_json::to_vec(&body).unwrap(),
        ));
    }
    for bad in [
        json!("not-a-uuid"),
        json!(Uuid::nil()),
        json!(42),
        json!(long),
    ] {
        let mut body = valid_order.clone();
        body["items"][0]["productId"] = bad;
        corpus.push((
            format!("POST {}/api/orders", order),
            "application/json".into(),
            serde_json::to_vec(&body).unwrap(),
        ));
    }
    let mut many = valid_order.clone();
    many["items"] = json!(
        (0..101)
            .map(|_| json!({"productId": Uuid::new_v4(), "quantity": 1}))
            .collect::<Vec<_>>()
    );
    corpus.push((
        format!("POST {}/api/orders", order),
        "application/json".into(),
        serde_json::to_vec(&many).unwrap(),
    ));
    for delta in [
        json!(2_000_000_000),
        json!(-2_000_000_000),
        json!("5"),
        json!(null),
        json!(-11),
    ] {
        corpus.push((
            format!("POST {}/api/products/{id}/stock", product),
            "application/json".into(),
            serde_json::to_vec(&json!({"delta": delta})).unwrap(),
        ));
    }

    corpus
}

/// Sends every body; each must answer a 4xx problem. Returns how many were sent.
async fn sweep_bodies(corpus: &Corpus) -> usize {
    let client = http_client();
    let mut answered = 0;
    for (target, content_type, body) in corpus {
        let (method, url) = target.split_once(' ').unwrap();
        let request = match method {
            "POST" => client.post(url),
            _ => client.put(url),
        };
        let response = request
            .header("content-type", content_type.as_str())
            .header("x-correlation-id", "bad id\u{7f}".replace('\u{7f}', ""))
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{target} ({} bytes): {e:?}", body.len()));
        let status = response.status().as_u16();
        assert!(
            (400..500).contains(&status),
            "{target} answered {status} for {}",
            String::from_utf8_lossy(&body[..body.len().min(120)])
        );
        expect_problem(response, status).await;
        answered += 1;
    }
    answered
}

/// Paths and queries the APIs cannot parse: each a 4xx problem.
async fn sweep_paths(product: &str, order: &str) -> usize {
    let client = http_client();
    let mut answered = 0;
    for url in [
        format!("{}/api/products/{}", product, "x".repeat(300)),
        format!("{}/api/products?page=-1", product),
        format!("{}/api/products?pageSize=99999999999999999999", product),
        format!("{}/api/orders/%00", order),
        format!("{}/api/orders?customerId=%ff", order),
        format!("{}/api/orders?page=abc", order),
    ] {
        let r = client.get(&url).send().await.unwrap();
        let status = r.status().as_u16();
        assert!((400..500).contains(&status), "{url} answered {status}");
        expect_problem(r, status).await;
        answered += 1;
    }
    answered
}

/// Malformed stock API calls: each INVALID_ARGUMENT.
async fn sweep_grpc(grpc: &str, id: &str, long: &str) -> usize {
    let stock = tests::StockApi::connect(grpc).await;
    let order = Uuid::new_v4().to_string();
    let too_many: Vec<(&str, i32)> = (0..1001).map(|_| (id, 1)).collect();
    let bad_reservations: Vec<(&str, Vec<(&str, i32)>)> = vec![
        ("", vec![(id, 1)]),
        (&order, vec![]),
        (&order, vec![(id, i32::MIN)]),
        (&order, vec![(long, 1)]),
        (&order, too_many),
        (&order, vec![(id, i32::MAX), (id, i32::MAX)]),
    ];
    let mut answered = 0;
    for (order, items) in &bad_reservations {
        let status = stock.reserve(order, items).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{}",
            status.message()
        );
        answered += 1;
    }
    let released = stock.release("🦀").await.unwrap_err();
    assert_eq!(released.code(), tonic::Code::InvalidArgument);
    let products = stock.get_products(&[long]).await.unwrap_err();
    assert_eq!(products.code(), tonic::Code::InvalidArgument);
    answered + 2
}
