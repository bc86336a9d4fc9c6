//! Scenarios 1 and 2: the projection rate against a raw fetch→sled→flush→ack loop, and cold
//! starts (100k products, with 100k orders, a compacted churned catalog).
use std::{
    path::Path,
    time::{Duration, Instant},
};

use async_nats::jetstream;
use tests::NatsServer;

use crate::*;

/// 1 + 2. Projection and cold start with `products` products.
pub(crate) async fn projection(report: &mut Report, dir: &Path, s: Sizes) {
    let Sizes { products, .. } = s;
    let nats = NatsServer::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let pub_rate = fill_products(&js, products, products).await;
    report.add(
        "0 setup",
        &format!("raw pipelined publish of {products} events (1,000 in flight)"),
        pub_rate,
        "msg/s",
        None,
        "",
    );
    let raw = raw_projection(&js, &dir.join("raw-sled"), products).await;
    let replay = raw_replay(&js, products).await;
    let (ready, order) = cold_start(&nats.url(), dir, "big").await;
    let rate = products as f64 / ready.as_secs_f64();
    report.add(
        "1 projection",
        &format!("order-svc cold replay of {products} events (spawn → ready)"),
        rate,
        "msg/s",
        Some(("raw fetch→sled→flush→ack", raw)),
        "≥ 1.0× raw batch loop",
    );
    report.add(
        "2 cold start",
        &format!("{products} products: spawn → /health/ready"),
        ready.as_secs_f64() * 1000.0,
        "ms",
        Some(("raw replay, no storage", replay.as_secs_f64() * 1000.0)),
        "≤ 3000 ms for 100k",
    );
    report.add(
        "5 footprint",
        &format!("order-svc RSS after replaying {products}"),
        rss_mib(order.pid()),
        "MiB",
        None,
        "",
    );
    report.add(
        "5 footprint",
        &format!("order-svc sled on disk, {products} products"),
        dir_mib(&dir.join("order-big")),
        "MiB",
        None,
        "",
    );
    // The same catalog plus as many orders: both read models replay before ready.
    fill_orders(&js, products).await;
    let (ready_both, mut both) = cold_start(&nats.url(), dir, "big-orders").await;
    report.add(
        "2 cold start",
        &format!("{products} orders + {products} products: spawn → /health/ready"),
        ready_both.as_secs_f64() * 1000.0,
        "ms",
        Some(("products only", ready.as_secs_f64() * 1000.0)),
        "≤ 3000 ms for 100k + 100k",
    );
    // A restart with no lag: a graceful stop (the caches flushed), then the same data dir. The
    // first one after the replay also has sled read back its log since its last snapshot (all
    // of the replay's writes); the second starts from the snapshot the first one left.
    for which in ["first", "second"] {
        both.terminate(Duration::from_secs(60));
        let started = Instant::now();
        both.start();
        http_ready(&both.http, Duration::from_secs(300)).await;
        report.add(
            "2 cold start",
            &format!(
                "restart with no lag ({which} after the replay), {products} orders + {products} \
                 products: spawn → /health/ready"
            ),
            started.elapsed().as_secs_f64() * 1000.0,
            "ms",
            None,
            "≤ 100 ms",
        );
    }
}

/// 2. Cold start of a small catalog, and with 100k orders in the order stream.
pub(crate) async fn coldstart(report: &mut Report, dir: &Path, s: Sizes) {
    let Sizes { small, churn, .. } = s;
    let nats = NatsServer::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    fill_products(&js, small, small).await;
    let (ready_small, _o) = cold_start(&nats.url(), dir, "small").await;
    report.add(
        "2 cold start",
        &format!("{small} products: spawn → /health/ready"),
        ready_small.as_secs_f64() * 1000.0,
        "ms",
        None,
        "",
    );
    let nats2 = NatsServer::start();
    let js2 = jetstream::new(async_nats::connect(nats2.url()).await.unwrap());
    fill_products(&js2, small, churn).await;
    let (ready_churn, _o2) = cold_start(&nats2.url(), dir, "churn").await;
    report.add(
        "2 cold start",
        &format!("{small} products after {churn} updates (compacted)"),
        ready_churn.as_secs_f64() * 1000.0,
        "ms",
        Some((
            &format!("{small} products, no churn"),
            ready_small.as_secs_f64() * 1000.0,
        )),
        "≤ 1.5×",
    );
}
