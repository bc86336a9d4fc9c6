//! product-svc's state figures for `/metrics`, read on each scrape from what `/health/ready`
//! reads, so the two always agree.
use std::sync::{Arc, atomic::Ordering::Relaxed};

use shared::{metrics::Metrics, ratelimit::Limiter};

use crate::{cache::CacheState, follower::FollowerCounters, store::Store};

/// The state figures of `/metrics`, read on each scrape.
pub fn sample_state(
    metrics: &Metrics,
    store: &Store,
    limiter: &Arc<Limiter>,
    follower: &Arc<FollowerCounters>,
    cache: &Arc<CacheState>,
) {
    let (store, limiter, follower, cache) = (
        store.clone(),
        limiter.clone(),
        follower.clone(),
        cache.clone(),
    );
    metrics.sample(move |s| {
        for (kind, value) in [
            ("release", follower.releases.load(Relaxed)),
            ("commit", follower.commits.load(Relaxed)),
            ("unrecorded", follower.unrecorded.load(Relaxed)),
        ] {
            s.counter(
                "ledger_repairs",
                "Reservations the order follower repaired, by kind (unrecorded: held for an order that never reached the order stream, rejected and released)",
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
            "stock_writer",
            "1 while this instance is the stock writer",
            &[],
            f64::from(u8::from(store.lease().fence().is_some())),
        );
        s.counter(
            "cache_poison",
            "Undecodable messages the cache skipped",
            &[],
            cache.poison.load(Relaxed),
        );
        s.counter(
            "stock_book_rebuilds",
            "Times the stock books were rebuilt from the ledger after this instance stopped writing",
            &[],
            cache.rebuilds.load(Relaxed),
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
            store.product_count() as f64,
        );
    });
}
