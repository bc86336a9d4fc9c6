//! What crosses the wire: TLS on gRPC (product-svc ← order-svc) and on NATS (mutual TLS), a
//! start-up that refuses an untrusted NATS certificate fast, and the gRPC concurrency limit.
use std::time::{Duration, Instant};

use futures::future::join_all;
use proto::GetProductsRequest;
use serde_json::json;
use tests::{NatsServer, OrderService, ProductService, http_client, scratch, tls_fixture};
use tonic::Code;
use uuid::Uuid;

use crate::{create_product, wait_snapshot_version};

/// Mutual TLS with the test PKI, and the test password, for `nats/test-tls.conf`.
fn nats_tls() -> shared::nats::NatsAuth {
    shared::nats::NatsAuth {
        nats_user: Some("eshop".into()),
        nats_password: Some("test-nats-password".into()),
        nats_tls_ca: Some(tls_fixture("ca.pem")),
        nats_tls_cert: Some(tls_fixture("client.pem")),
        nats_tls_key: Some(tls_fixture("client-key.pem")),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_flow_over_tls_on_grpc_and_nats() {
    let nats = NatsServer::start_with("test-tls.conf");
    let url = nats.url().replace("nats://", "tls://");
    let dir = scratch();
    let mut pc = product_svc::Config::for_tests(dir.path().join("product"), &url);
    pc.nats_auth = nats_tls();
    pc.grpc_tls_cert = Some(tls_fixture("server.pem"));
    pc.grpc_tls_key = Some(tls_fixture("server-key.pem"));
    let product = ProductService::start_with(pc).await;
    assert!(product.grpc.starts_with("https://"), "{}", product.grpc);

    let mut oc = order_svc::Config::for_tests(dir.path().join("order"), &url, &product.grpc);
    oc.nats_auth = nats_tls();
    oc.grpc_tls_ca = Some(tls_fixture("ca.pem"));
    let order = OrderService::start_with(oc).await;
    let id = create_product(&product.http, "Sealed", "4.00", 10).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_snapshot_version(&order.http, &id, 1).await;
    let placed = http_client()
        .post(format!("{}/api/orders", order.http))
        .json(
            &json!({"customerId": Uuid::new_v4(), "customerEmail": "tls@example.com",
                      "items": [{"productId": id, "quantity": 3}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 201, "reserved over gRPC with TLS");
    let body: serde_json::Value = placed.json().await.unwrap();
    assert_eq!(body["status"], "Confirmed");

    // A plaintext client gets nowhere on the TLS port.
    let plain = product.grpc.replace("https://", "http://");
    let mut client = proto::product_service_client::ProductServiceClient::new(
        tonic::transport::Endpoint::from_shared(plain)
            .unwrap()
            .connect_lazy(),
    );
    let refused = client
        .get_products(GetProductsRequest {
            product_ids: vec![id.clone()],
        })
        .await
        .expect_err("plaintext is refused");
    // Refused by the transport, before any handler: a plaintext call that reached the service
    // would be UNAUTHENTICATED (it sends no token), or answered.
    let by_transport = std::error::Error::source(&refused)
        .is_some_and(|source| source.is::<tonic::transport::Error>());
    assert!(by_transport, "{refused:?}");
    assert_ne!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // order-svc given an https URL but no CA, or a CA with a plain URL, does not start.
    for (url, ca) in [
        (product.grpc.clone(), None),
        (
            product.grpc.replace("https://", "http://"),
            Some(tls_fixture("ca.pem")),
        ),
    ] {
        let mut bad = order_svc::Config::for_tests(dir.path().join("bad"), &nats.url(), &url);
        bad.allow_anonymous = true;
        bad.grpc_tls_ca = ca;
        let error = order_svc::App::build(bad).await.err().expect("refused");
        assert!(error.to_string().contains("--grpc-tls-ca"), "{error}");
    }
    order.stop().await;
    product.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_nats_certificate_or_a_missing_client_certificate_fails_start_up_fast() {
    let nats = NatsServer::start_with("test-tls.conf");
    let url = nats.url().replace("nats://", "tls://");
    let dir = scratch();
    let untrusted = shared::nats::NatsAuth {
        // A certificate that did not sign the server's: the server is not trusted.
        nats_tls_ca: Some(tls_fixture("client.pem")),
        ..nats_tls()
    };
    let no_client_cert = shared::nats::NatsAuth {
        nats_tls_cert: None,
        nats_tls_key: None,
        ..nats_tls()
    };
    for auth in [untrusted, no_client_cert] {
        let mut config = product_svc::Config::for_tests(dir.path().join("refused"), &url);
        config.allow_anonymous = true;
        config.nats_auth = auth;
        let started = Instant::now();
        let error = product_svc::App::build(config)
            .await
            .err()
            .expect("refused");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "fails fast: {:?}",
            started.elapsed()
        );
        assert!(error.to_string().contains("refused this client"), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_grpc_concurrency_limit_are_refused_with_resource_exhausted() {
    let nats = NatsServer::start();
    let dir = scratch();
    let mut pc = product_svc::Config::for_tests(dir.path().join("product"), &nats.url());
    pc.grpc_concurrency = 1;
    let product = ProductService::start_with(pc).await;
    let id = create_product(&product.http, "Scarce", "1.00", 1_000).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // One connection (one channel), 64 reservations at once: each waits for a flush, so they
    // overlap and all but the one in flight are shed.
    let stock = product.stock().await;
    let calls = (0..64).map(|_| {
        let (stock, id) = (stock.clone(), id.clone());
        async move {
            stock
                .reserve(Uuid::new_v4(), &[(&id, 1)])
                .await
                .map(|r| r.success)
        }
    });
    let results = join_all(calls).await;
    let ok = results.iter().filter(|r| matches!(r, Ok(true))).count();
    let shed = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted))
        .count();
    assert_eq!(ok + shed, 64, "every call is served or shed: {results:?}");
    assert!(shed > 0, "some calls went past the limit of 1");
    assert!(ok > 0, "the limit still serves");
    // What was shed reserved nothing.
    let (_, body) = crate::get_json(&format!("{}/api/products/{id}", product.http)).await;
    assert_eq!(body["reservedQuantity"], ok as u64, "{body}");
    product.stop().await;
}
