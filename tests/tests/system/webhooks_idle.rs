//! With no hook registered, order events are not consumed for webhooks at all: the dispatcher
//! has no durable until the first hook, and deletes it when the last one goes; a hook registered
//! after that gets the orders that follow.
use async_nats::jetstream;
use serde_json::json;
use tests::{
    NatsServer, OrderService, ProductService, Receiver, WAIT, order_body, scratch, wait_for,
};
use uuid::Uuid;

use crate::webhooks::order_config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_hooks_no_order_event_is_consumed_and_a_later_hook_gets_what_follows() {
    let nats = NatsServer::start();
    let dir = scratch();
    let product = ProductService::start(&nats.url(), &dir.path().join("product")).await;
    let config = order_config(&nats.url(), &product.grpc, &dir.path().join("order"));
    let order = OrderService::start_with(config).await;
    let api = order.api();
    let p = product.api().create_product("Idle", "1.00", 100).await;
    api.wait_snapshot_version(&p, 1).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let durable_exists = || async {
        let stream = js.get_stream("ORDERS").await.unwrap();
        stream.consumer_info("order-svc-webhooks").await.is_ok()
    };
    let ann = Uuid::new_v4();
    let place = || async {
        let body = order_body(ann, &[(&p, 1)]);
        api.place(&body).await.expect(201)["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let receiver = Receiver::start().await;
    let hook = json!({"url": receiver.url(), "events": ["OrderConfirmed"], "customerId": ann});

    // No hook: orders go by and nothing consumes them for webhooks.
    place().await;
    assert!(!durable_exists().await, "no hook, no webhook durable");

    // A hook: its customer's confirmations are delivered.
    let first = api.register_hook(&hook).await.expect(201);
    receiver.trust(first["secret"].as_str().unwrap());
    receiver.wait_for_order(&place().await).await;
    assert!(durable_exists().await);

    // The last hook goes, and the durable with it.
    let first_id = first["id"].as_str().unwrap();
    api.delete_hook(first_id).await.expect(204);
    wait_for("the webhook durable deleted", WAIT, || async {
        (!durable_exists().await).then_some(())
    })
    .await;
    place().await;

    // A new hook gets the orders that follow.
    let second = api.register_hook(&hook).await.expect(201);
    receiver.trust(second["secret"].as_str().unwrap());
    receiver.wait_for_order(&place().await).await;
    order.stop().await;
    product.stop().await;
}
