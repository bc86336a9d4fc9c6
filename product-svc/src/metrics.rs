//! product-svc's state figures for `/metrics`, read on each scrape from what `/health/ready`
//! reads, so the two always agree.
use std::sync::{Arc, atomic::Ordering::Relaxed};

use shared::{metrics::Metrics, ratelimit::Limiter};

use crate::{follower::FollowerCounters, store::Store};

/// The state figures of `/metrics`, read on each scrape.
pub fn sample_state(
    metrics: &Metrics,
    store: &Store,
    limiter: &Arc<Limiter>,
    follower: &Arc<FollowerCounters>,
) {
    let (store, limiter, follower) = (store.clone(), limiter.clone(), follower.clone());
    metrics.sample(move |s| {
        for (kind, value) in [
            ("release", follower.releases.load(Relaxed)),
            ("commit", follower.commits.load(Relaxed)),
        ] {
            s.counter(
                "ledger_repairs",
                "Reservations the order follower repaired, by kind",
                &[("kind", kind)],
                value,
            );
        }
        s.counter(
            "ledger_unrepairable",
            "Order states whose reservation disagrees beyond repair",
            &[],
            follower.unrepairable.load(Relaxed),
        );
        s.counter(
            "ledger_follower_applied",
            "Order states the follower has checked",
            &[],
            follower.applied.load(Relaxed),
        );
        s.gauge(
            "outbox_depth",
            "Catalog and stock events written but not yet acknowledged by JetStream",
            &[],
            shared::outbox::depth(&store.outbox_tree()) as f64,
        );
        s.gauge(
            "sled_size_bytes",
            "Size of the sled database on disk",
            &[],
            store.size_on_disk() as f64,
        );
        s.counter(
            "http_rate_limited",
            "HTTP requests refused with 429 by the per-caller rate limit",
            &[],
            limiter.limited(),
        );
        s.gauge(
            "products",
            "Products in the catalog (discontinued ones included)",
            &[],
            store.product_count().unwrap_or_default() as f64,
        );
    });
}
