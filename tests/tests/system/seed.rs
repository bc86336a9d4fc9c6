//! `--seed N` fills an empty catalog with N products, through the normal write path (so they
//! reach order-svc's snapshot), and does nothing to a catalog that has any product.
use tests::{NatsServer, OrderService, ProductService, WAIT, scratch, wait_for};

async fn product_svc(nats: &NatsServer, dir: &std::path::Path, seed: usize) -> ProductService {
    let mut config = product_svc::Config::for_tests(dir.join("product"), &nats.url());
    config.seed = seed;
    ProductService::start_with(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeding_fills_an_empty_catalog_once_and_reaches_the_snapshot() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = product_svc(&nats, dir.path(), 7).await;
    assert_eq!(product.api().list("").await.expect(200)["totalCount"], 7);
    let order = OrderService::start(&nats.url(), &product.grpc, &dir.path().join("order")).await;
    wait_for("7 seeded products in the snapshot", WAIT, || async {
        (order.api().snapshot_count().await == 7).then_some(())
    })
    .await;
    product.stop().await;

    // A restart, with the same N or another, adds nothing.
    for seed in [7, 12] {
        let again = product_svc(&nats, dir.path(), seed).await;
        assert_eq!(
            again.api().list("").await.expect(200)["totalCount"],
            7,
            "--seed {seed}"
        );
        again.stop().await;
    }
    let js = crate::js(&nats.url()).await;
    crate::wait_stream_messages(&js, "PRODUCTS", 7).await;
    order.stop().await;

    // A catalog with one product of its own is not empty: nothing is seeded.
    let (nats, dir) = (NatsServer::start(), scratch());
    let first = product_svc(&nats, dir.path(), 0).await;
    first.api().create_product("Mine", "1.00", 1).await;
    first.stop().await;
    let seeded = product_svc(&nats, dir.path(), 5).await;
    assert_eq!(seeded.api().list("").await.expect(200)["totalCount"], 1);
    seeded.stop().await;
}
