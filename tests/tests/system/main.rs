//! System tests: one binary, real nats-server, real sled, real HTTP and gRPC on loopback.
mod auth;
mod code_shape;
mod edge;
mod faults;
mod harness;
mod health;
mod metrics;
mod orders;
mod products;
mod scale;
mod seed;
mod stock_calls;
mod stock_loop;
mod transport;
mod unrecorded;
mod watch;
mod webhooks;
mod webhooks_idle;

use std::time::Duration;

use async_nats::jetstream;
use serde_json::Value;
use tests::{OrderApi, ProductApi, http_client, wait_for};
pub use tests::{WAIT, product_body};

/// A JetStream context on `url` (one URL or a comma-separated list, as the services take it).
pub async fn js(url: &str) -> jetstream::Context {
    let client = shared::nats::connect(url, "eshop-tests", &Default::default())
        .await
        .expect("NATS connects");
    jetstream::new(client)
}

/// Messages in a stream, or 0 when it does not exist yet.
pub async fn stream_messages(js: &jetstream::Context, name: &str) -> u64 {
    tests::stream_info(js, name)
        .await
        .map_or(0, |i| i.state.messages)
}

pub async fn wait_stream_messages(js: &jetstream::Context, name: &str, expected: u64) {
    wait_for(&format!("{expected} messages in {name}"), WAIT, || async {
        (stream_messages(js, name).await == expected).then_some(())
    })
    .await
}

/// Subjects of a stream matching `filter`, each with its message count.
pub async fn stream_subjects(
    js: &jetstream::Context,
    name: &str,
    filter: &str,
) -> std::collections::HashMap<String, usize> {
    use futures::StreamExt;
    let Ok(stream) = js.get_stream(name).await else {
        return Default::default();
    };
    let subjects = stream.info_with_subjects(filter).await.unwrap();
    futures::pin_mut!(subjects);
    let mut out = std::collections::HashMap::new();
    while let Some(Ok((subject, n))) = subjects.next().await {
        out.insert(subject, n);
    }
    out
}

/// The latest message on a subject: (headers as pairs, body JSON).
pub async fn last_message(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
) -> Option<(async_nats::HeaderMap, Value)> {
    let stream = js.get_stream(stream).await.ok()?;
    let msg = stream.get_last_raw_message_by_subject(subject).await.ok()?;
    let body = serde_json::from_slice(&msg.payload).ok()?;
    Some((msg.headers, body))
}

/// Creates a product over HTTP and returns its JSON (asserting 201).
pub async fn create_product(http: &str, name: &str, price: &str, stock: i64) -> Value {
    let body = product_body(name, price, stock, 0);
    ProductApi::new(http).create(&body).await.expect(201)
}

pub async fn get_json(url: &str) -> (u16, Value) {
    let response = http_client().get(url).send().await.expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Asserts a problem+json answer with `status`, returns the body.
pub async fn expect_problem(response: reqwest::Response, status: u16) -> Value {
    tests::Answer::read(response).await.problem(status)
}

/// Waits until order-svc's snapshot holds `id` at `version`.
pub async fn wait_snapshot_version(http: &str, id: &str, version: u64) {
    OrderApi::new(http).wait_snapshot_version(id, version).await
}

/// product-svc in-process on a fixed gRPC port (so a restart keeps the address order-svc calls).
pub fn product_config(nats: &str, dir: &std::path::Path, grpc_port: u16) -> product_svc::Config {
    let mut config = product_svc::Config::for_tests(dir.to_path_buf(), nats);
    config.grpc_addr = format!("127.0.0.1:{grpc_port}").parse().unwrap();
    config
}

/// Waits until product-svc's stock audit finds no mismatch between its reservations and the
/// orders' latest states (work in flight shows until it is done); panics with the last report.
pub async fn assert_books_agree(product_http: &str) {
    let url = format!("{product_http}/api/stock/audit");
    let mut last = Value::Null;
    let agreed = tokio::time::timeout(WAIT, async {
        loop {
            let (status, report) = get_json(&url).await;
            if status == 200 && report["mismatches"] == 0 {
                return;
            }
            last = report;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(agreed.is_ok(), "the books disagree: {last}");
}
