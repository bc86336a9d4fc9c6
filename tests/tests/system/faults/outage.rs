//! product-svc down under order load: every order settles, availability exact.
use std::time::{Duration, Instant};

use tests::{OrderApi, wait_for};

use crate::{get_json, wait_snapshot_version};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn product_svc_outage_ends_with_every_order_settled_and_exact_availability() {
    let outage = Duration::from_secs(env_usize("FAULT_OUTAGE_SECS", 10) as u64);
    let Processes {
        nats: _nats,
        dir: _dir,
        mut product,
        grpc: _grpc,
        order,
    } = Processes::start();
    let orders = OrderApi::new(&order.http);
    let ids = create_products(&product.http, 5, 10_000, 5).await;
    for id in &ids {
        wait_snapshot_version(&order.http, id, 1).await;
    }
    // Orders confirmed before the outage, to cancel during it.
    let mut to_cancel = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let o = orders.place(&order_body(id, 1 + i as i64)).await.body;
        assert_eq!(o["status"], "Confirmed");
        to_cancel.push(o["id"].as_str().unwrap().to_owned());
    }
    let load = Load::start(&orders, &ids);
    let placed = &load.placed;
    wait_for("some orders before the outage", LONG, || async {
        (placed.lock().unwrap().len() >= 20).then_some(())
    })
    .await;
    product.kill9();
    let outage_started = Instant::now();
    for id in &to_cancel {
        let r = orders.cancel(id, "outage").await;
        assert_eq!(r.status, 200, "cancel works while product-svc is down");
    }
    tokio::time::sleep(outage.saturating_sub(outage_started.elapsed())).await; // the outage itself, not a synchronisation
    product.start();
    let after_outage = placed.lock().unwrap().len();
    wait_for("orders after the outage", LONG, || async {
        (placed.lock().unwrap().len() >= after_outage + 20).then_some(())
    })
    .await;
    let placed = load.stop().await;
    let accepted_pending = placed.iter().filter(|(_, s, _)| *s == 202).count();
    assert!(
        accepted_pending > 0,
        "the outage produced 202 Pending answers"
    );
    assert!(
        placed.iter().all(|(_, s, _)| *s == 201 || *s == 202),
        "only 201/202 answers"
    );

    // Every order ends Confirmed or Rejected; stock reserved equals what Confirmed orders hold.
    let expected = confirmed_units(&orders, &placed).await;
    for id in &ids {
        let want = expected.get(id).copied().unwrap_or(0);
        wait_for(
            "availability to return exactly to its expected value",
            LONG,
            || async {
                let (_, p) = get_json(&format!("{}/api/products/{id}", product.http)).await;
                (p["reservedQuantity"].as_i64() == Some(want)).then_some(())
            },
        )
        .await;
    }
    crate::assert_books_agree(&product.http).await;
    eprintln!(
        "FIGURES outage: {} orders during a {outage:?} outage ({accepted_pending} answered 202 Pending), all settled; {} cancels released; availability exact",
        placed.len(),
        to_cancel.len()
    );
}
