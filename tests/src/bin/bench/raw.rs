//! The baselines: the same work done with the raw clients (publish, fetch→sled→flush→ack, replay, a tonic round trip) on the same nats-server, so every figure has a same-run floor.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use async_nats::{HeaderMap, jetstream};
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::*;

pub(crate) fn product_event(id: Uuid, version: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "eventId": Uuid::now_v7(), "eventType": if version == 1 { "ProductCreated" } else { "ProductUpdated" },
        "schemaVersion": 1, "occurredAt": chrono::Utc::now(), "productId": id, "version": version,
        "name": format!("Bench product {}", &id.to_string()[..8]), "description": "A product used by the benchmark.",
        "price": "19.99", "category": "Bench", "deleted": false
    }))
    .unwrap()
}

/// Raw pipelined publish with a sliding window of `window` acks in flight; returns msgs/s.
pub(crate) async fn publish_raw(
    js: &jetstream::Context,
    messages: Vec<(String, Vec<u8>)>,
    window: usize,
) -> f64 {
    let started = Instant::now();
    let n = messages.len();
    let mut inflight = std::collections::VecDeque::with_capacity(window);
    for (subject, payload) in messages {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", Uuid::now_v7().to_string().as_str());
        inflight.push_back(
            js.publish_with_headers(subject, headers, Bytes::from(payload))
                .await
                .expect("publish"),
        );
        if inflight.len() >= window {
            inflight.pop_front().unwrap().await.expect("ack");
        }
    }
    for ack in inflight {
        ack.await.expect("ack");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

pub(crate) async fn fill_products(js: &jetstream::Context, products: usize, updates: usize) -> f64 {
    js.create_or_update_stream(shared::streams::products(1))
        .await
        .expect("stream");
    let ids: Vec<Uuid> = (0..products).map(|_| Uuid::new_v4()).collect();
    let total = products.max(updates);
    let messages: Vec<(String, Vec<u8>)> = (0..total)
        .map(|i| {
            let id = ids[i % products];
            (
                format!("eshop.products.{id}"),
                product_event(id, (i / products) as u64 + 1),
            )
        })
        .collect();
    publish_raw(js, messages, 1000).await
}

/// Baseline of scenario 1: fetch 1,000 → decode → sled batch insert → one flush → ack all.
pub(crate) async fn raw_projection(js: &jetstream::Context, dir: &Path, expected: usize) -> f64 {
    let stream = js.get_stream(shared::streams::PRODUCTS).await.unwrap();
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("raw-baseline".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 4000,
            ..Default::default()
        })
        .await
        .unwrap();
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(32 << 20)
        .open()
        .unwrap();
    let tree = db.open_tree("snapshot").unwrap();
    let started = Instant::now();
    let mut done = 0;
    while done < expected {
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        let mut msgs = Vec::with_capacity(1000);
        while let Some(Ok(m)) = batch.next().await {
            msgs.push(m);
        }
        let mut sled_batch = sled::Batch::default();
        for m in &msgs {
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            let id = Uuid::parse_str(v["productId"].as_str().unwrap()).unwrap();
            sled_batch.insert(id.as_bytes().as_slice(), m.payload.to_vec());
        }
        tree.apply_batch(sled_batch).unwrap();
        db.flush_async().await.unwrap();
        for m in &msgs {
            m.ack().await.unwrap();
        }
        done += msgs.len();
    }
    expected as f64 / started.elapsed().as_secs_f64()
}

/// Raw replay without storage: fetch 1,000 + ack, until `expected` are consumed.
pub(crate) async fn raw_replay(js: &jetstream::Context, expected: usize) -> Duration {
    let started = Instant::now();
    let stream = js.get_stream(shared::streams::PRODUCTS).await.unwrap();
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some(format!("raw-replay-{}", Uuid::new_v4().simple())),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 4000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut done = 0;
    while done < expected {
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        while let Some(Ok(m)) = batch.next().await {
            m.ack().await.unwrap();
            done += 1;
        }
    }
    started.elapsed()
}

pub(crate) struct NullStock;

#[tonic::async_trait]
impl proto::product_service_server::ProductService for NullStock {
    async fn reserve_stock(
        &self,
        _: tonic::Request<proto::ReserveStockRequest>,
    ) -> Result<tonic::Response<proto::ReserveStockResponse>, tonic::Status> {
        Ok(tonic::Response::new(proto::ReserveStockResponse {
            success: true,
            ..Default::default()
        }))
    }
    async fn release_stock(
        &self,
        _: tonic::Request<proto::ReleaseStockRequest>,
    ) -> Result<tonic::Response<proto::ReleaseStockResponse>, tonic::Status> {
        Ok(tonic::Response::new(proto::ReleaseStockResponse {
            success: true,
            failure_reason: None,
        }))
    }
    async fn get_products(
        &self,
        _: tonic::Request<proto::GetProductsRequest>,
    ) -> Result<tonic::Response<proto::GetProductsResponse>, tonic::Status> {
        Ok(tonic::Response::new(proto::GetProductsResponse::default()))
    }
    async fn commit_stock(
        &self,
        _: tonic::Request<proto::CommitStockRequest>,
    ) -> Result<tonic::Response<proto::CommitStockResponse>, tonic::Status> {
        Ok(tonic::Response::new(proto::CommitStockResponse {
            committed: true,
        }))
    }
}

/// Baseline of scenario 4: a raw tonic unary round-trip (no work on the server).
pub(crate) async fn raw_tonic(clients: usize, total: usize) -> (f64, Histogram<u64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(proto::product_service_server::ProductServiceServer::new(
                NullStock,
            ))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = proto::product_service_client::ProductServiceClient::new(channel);
    let result = load(clients, total, move |_| {
        let mut c = client.clone();
        async move {
            c.reserve_stock(proto::ReserveStockRequest {
                order_id: Uuid::new_v4().to_string(),
                items: vec![],
                unrecorded: None,
            })
            .await
            .is_ok()
        }
    })
    .await;
    server.abort();
    result
}

/// A Confirmed order (full state, version 2) on its own subject, as order-svc publishes it.
pub(crate) fn order_event(product: Uuid) -> (String, Vec<u8>) {
    let id = Uuid::now_v7();
    let now = chrono::Utc::now();
    let price: rust_decimal::Decimal = "19.99".parse().unwrap();
    let event = shared::events::OrderEvent {
        event_id: Uuid::now_v7(),
        event_type: shared::events::OrderEventType::OrderConfirmed,
        schema_version: shared::events::ORDER_SCHEMA_VERSION,
        occurred_at: now,
        order_id: id,
        version: 2,
        status: shared::events::OrderStatus::Confirmed,
        customer_id: Uuid::new_v4(),
        customer_email: "bench@example.com".into(),
        items: vec![shared::events::OrderEventItem {
            product_id: product,
            product_name: "Bench product".into(),
            quantity: 1,
            unit_price: price,
            line_total: price,
        }],
        total_amount: price,
        reason: None,
        failed_product_ids: Vec::new(),
        release_owed: false,
        commit_owed: false,
        request_fingerprint: None,
        created_at: now,
        updated_at: now,
    };
    (
        format!("{}.{id}", shared::events::ORDER_SUBJECT_PREFIX),
        serde_json::to_vec(&event).unwrap(),
    )
}

/// Fills `ORDERS` with `n` orders (one message each, as the stream keeps them).
pub(crate) async fn fill_orders(js: &jetstream::Context, n: usize) -> f64 {
    js.create_or_update_stream(shared::streams::orders(
        shared::streams::ORDERS,
        shared::events::ORDER_SUBJECT_PREFIX,
        1,
    ))
    .await
    .expect("stream");
    let messages = (0..n).map(|_| order_event(Uuid::new_v4())).collect();
    publish_raw(js, messages, 1000).await
}
