//! The floor of CreateOrder: the same I/O as order-svc's create path with no business logic, so
//! every CreateOrder figure can be read as a ratio to what the parts alone cost on this box.
//!
//! Two child processes of this binary (so each one's CPU is measured apart, like the services'):
//! `floor-grpc` answers ReserveStock at once (`NullStock`); `floor-http` serves
//! `POST /api/orders` as axum → JetStream publish with `Nats-Expected-Last-Subject-Sequence: 0`,
//! ack awaited → tonic ReserveStock → a second publish with a CAS on the first one's sequence,
//! ack awaited → 201 with the order JSON. Same crates and versions as the services, and a stream
//! with `ORDERS`'s settings (`shared::streams::orders`) on the same nats-server.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::Arc,
};

use async_nats::jetstream::{self, message::PublishMessage};
use axum::{Json, extract::State, http::StatusCode, routing::post};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{Value, json};
use tests::NatsServer;
use uuid::Uuid;

use crate::*;

const STREAM: &str = "FLOOR";
const PREFIX: &str = "eshop.floor";

/// Runs this process as a floor child if asked to (`floor-grpc`, `floor-http <nats> <grpc>`);
/// returns false otherwise.
pub(crate) async fn child_mode() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("floor-grpc") => serve_grpc().await,
        Some("floor-http") => serve_http(&args[1], &args[2]).await,
        _ => return false,
    }
    true
}

/// The floor's two processes, killed on drop.
pub(crate) struct Floor {
    pub(crate) http: String,
    children: Vec<Child>,
}

impl Floor {
    pub(crate) fn start(nats: &str) -> Self {
        let (grpc_child, grpc) = spawn_child(&["floor-grpc"]);
        let (http_child, http) = spawn_child(&["floor-http", nats, &grpc]);
        Self {
            http: format!("http://{http}"),
            children: vec![grpc_child, http_child],
        }
    }

    /// CPU seconds of the (gRPC side, HTTP side) so far.
    fn cpu(&self) -> [f64; 2] {
        [
            cpu_secs(self.children[0].id()),
            cpu_secs(self.children[1].id()),
        ]
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts this binary in a child mode; returns it with the address it printed.
fn spawn_child(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn a floor process");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("the floor process prints its address");
    assert!(
        !line.trim().is_empty(),
        "floor process {args:?} printed no address"
    );
    (child, line.trim().to_owned())
}

/// One floor run: rate, latencies, and CPU µs per order of (nats-server, gRPC side, HTTP side,
/// load generator).
pub(crate) struct FloorRun {
    pub(crate) rate: f64,
    pub(crate) hist: Histogram<u64>,
    pub(crate) cpu_us: [f64; 4],
}

impl FloorRun {
    /// CPU per order of what the system's services stand for (load generator excluded).
    pub(crate) fn service_cpu_us(&self) -> f64 {
        self.cpu_us[..3].iter().sum()
    }
}

/// `total` orders from `clients` clients against the floor.
pub(crate) async fn run_floor(
    floor: &Floor,
    nats: &NatsServer,
    client: &reqwest::Client,
    ids: &Arc<Vec<String>>,
    clients: usize,
    total: usize,
) -> FloorRun {
    let nats_pid = nats.pid().unwrap_or(0);
    let before = (
        cpu_secs(nats_pid),
        floor.cpu(),
        cpu_secs(std::process::id()),
    );
    let (rate, hist) = create_orders(
        client,
        std::slice::from_ref(&floor.http),
        ids,
        clients,
        total,
    )
    .await;
    let after = (
        cpu_secs(nats_pid),
        floor.cpu(),
        cpu_secs(std::process::id()),
    );
    let per_order = |secs: f64| secs * 1e6 / total as f64;
    FloorRun {
        rate,
        hist,
        cpu_us: [
            per_order(after.0 - before.0),
            per_order(after.1[0] - before.1[0]),
            per_order(after.1[1] - before.1[1]),
            per_order(after.2 - before.2),
        ],
    }
}

/// The floor's rows: rate, latencies and CPU per order per process.
pub(crate) fn floor_rows(report: &mut Report, label: &str, one: &FloorRun, many: &FloorRun) {
    let scenario = "4 floor";
    for (clients, run) in [(1, one), (64, many)] {
        let name = format!("floor{label}, {clients} clients");
        report.add(scenario, &name, run.rate, "orders/s", None, "");
    }
    latency_rows(
        report,
        scenario,
        &format!("floor{label}, 1 client"),
        &one.hist,
        None,
    );
    let names = ["nats-server", "gRPC side", "HTTP side", "load generator"];
    for (name, cpu) in names.iter().zip(many.cpu_us) {
        let metric = format!("floor{label}, 64 clients: CPU of {name} per order");
        report.add(scenario, &metric, cpu, "µs", None, "");
    }
}

async fn serve_grpc() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", listener.local_addr().unwrap());
    tonic::transport::Server::builder()
        .add_service(proto::product_service_server::ProductServiceServer::new(
            NullStock,
        ))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
        .await
        .unwrap();
}

struct Side {
    js: jetstream::Context,
    stock: proto::product_service_client::ProductServiceClient<tonic::transport::Channel>,
}

async fn serve_http(nats: &str, grpc: &str) {
    let js = jetstream::new(async_nats::connect(nats).await.unwrap());
    js.get_or_create_stream(shared::streams::orders(STREAM, PREFIX, 1))
        .await
        .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let side = Arc::new(Side {
        js,
        stock: proto::product_service_client::ProductServiceClient::new(channel),
    });
    let app = axum::Router::new()
        .route("/api/orders", post(place))
        .with_state(side);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", listener.local_addr().unwrap());
    axum::serve(listener, app).await.unwrap();
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Place {
    customer_id: Uuid,
    customer_email: String,
    items: Vec<Value>,
}

/// Publish (CAS 0) → reserve → publish (CAS on the first) → 201.
async fn place(
    State(side): State<Arc<Side>>,
    Json(body): Json<Place>,
) -> (StatusCode, Json<Value>) {
    let id = Uuid::now_v7();
    let subject = format!("{PREFIX}.{id}");
    let mut order = json!({
        "id": id, "customerId": body.customer_id, "customerEmail": body.customer_email,
        "items": body.items, "status": "Pending", "version": 1,
    });
    let failed = || (StatusCode::INTERNAL_SERVER_ERROR, Json(Value::Null));
    let Some(placed) = publish(&side.js, &subject, &order, 0).await else {
        return failed();
    };
    let reserved = side
        .stock
        .clone()
        .reserve_stock(proto::ReserveStockRequest {
            order_id: id.to_string(),
            items: vec![],
            unrecorded: None,
        })
        .await;
    if reserved.is_err() {
        return failed();
    }
    order["status"] = "Confirmed".into();
    order["version"] = 2.into();
    match publish(&side.js, &subject, &order, placed).await {
        Some(_) => (StatusCode::CREATED, Json(order)),
        None => failed(),
    }
}

/// Publishes `order` if `subject`'s last sequence is `expected`; its sequence once acknowledged.
async fn publish(
    js: &jetstream::Context,
    subject: &str,
    order: &Value,
    expected: u64,
) -> Option<u64> {
    let publish = PublishMessage::build()
        .payload(serde_json::to_vec(order).ok()?.into())
        .message_id(Uuid::new_v4().to_string())
        .expected_last_subject_sequence(expected);
    let ack = js.send_publish(subject.to_owned(), publish).await.ok()?;
    Some(ack.await.ok()?.sequence)
}
