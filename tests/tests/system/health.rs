//! Readiness means one thing in both services: 200 only when the instance can do its main job
//! now, and a body of one shape (`ready`, `checks`, `figures`) naming the check that fails.
use tests::{Answer, Http, System, WAIT, wait_for};

/// Waits until `/health/ready` answers `status`; returns that answer.
async fn ready_becomes(http: &Http, status: u16) -> Answer {
    wait_for(&format!("/health/ready = {status}"), WAIT, || async {
        let answer = http.ready().await;
        (answer.status == status).then_some(answer)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_nats_both_ways_and_names_the_failing_check() {
    let mut system = System::start().await;
    let (product, order) = (system.products.http().clone(), system.orders.http().clone());
    let ready = ready_becomes(&order, 200).await.body;
    assert_eq!(ready["ready"], true);
    for check in ["nats", "snapshot", "ordersView"] {
        assert_eq!(ready["checks"][check]["ok"], true, "{check}: {ready}");
    }
    assert!(ready["figures"]["pendingOrders"].is_u64(), "{ready}");
    let ready = ready_becomes(&product, 200).await.body;
    for check in ["store", "nats", "cache"] {
        assert_eq!(ready["checks"][check]["ok"], true, "{check}: {ready}");
    }
    assert_eq!(ready["figures"]["stock"]["writer"], true, "{ready}");

    system.nats.kill();
    // order-svc cannot take an order without NATS: out of the load balancer, on purpose.
    let down = ready_becomes(&order, 503).await.problem(503);
    assert_eq!(down["ready"], false);
    assert_eq!(down["checks"]["nats"]["ok"], false, "{down}");
    assert_eq!(
        down["checks"]["snapshot"]["ok"], true,
        "caught up since start: {down}"
    );
    assert!(down["detail"].as_str().unwrap().contains("nats"), "{down}");
    let down = ready_becomes(&product, 503).await.problem(503);
    assert_eq!(down["checks"]["nats"]["ok"], false, "{down}");
    assert_eq!(down["checks"]["store"]["ok"], true, "{down}");
    assert!(down["detail"].as_str().unwrap().contains("nats"), "{down}");
    assert_eq!(order.live().await.status, 200, "alive while not ready");
    assert_eq!(product.live().await.status, 200, "alive while not ready");

    system.nats.start_again();
    let back = ready_becomes(&order, 200).await.body;
    assert_eq!(back["checks"]["nats"]["ok"], true, "{back}");
    ready_becomes(&product, 200).await;
    system.stop().await;
}
