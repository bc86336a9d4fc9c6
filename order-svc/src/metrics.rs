//! order-svc's state figures for `/metrics`, read on each scrape from what `/health/ready`
//! reads (the projections' atomics, the view's counts, the breaker), so the two always agree.
use std::sync::{Arc, atomic::Ordering};

use shared::{metrics::Samples, ratelimit::Limiter};

use crate::{ProjectionStatus, orders::Orders, store::Store};

pub fn sample_state(
    metrics: &shared::metrics::Metrics,
    orders: Orders,
    store: Store,
    projections: [(&'static str, Arc<ProjectionStatus>); 2],
    limiter: Arc<Limiter>,
) {
    metrics.sample(move |s| {
        for (name, status) in &projections {
            projection(s, name, status);
        }
        let figures = orders.figures();
        s.gauge(
            "orders_pending",
            "Orders waiting for product-svc's answer (settled by the reconciler)",
            &[],
            figures.pending as f64,
        );
        s.gauge(
            "stock_work_owed",
            "Cancelled orders whose release, or shipped orders whose commit, product-svc has not confirmed",
            &[],
            figures.owed_stock_work as f64,
        );
        s.gauge(
            "orders_view_rows",
            "Orders in this instance's view",
            &[],
            figures.view_rows as f64,
        );
        s.gauge(
            "stock_breaker_open",
            "1 while the circuit breaker in front of product-svc is open",
            &[],
            f64::from(u8::from(figures.breaker_open)),
        );
        s.counter(
            "order_cas_conflicts",
            "Order publishes that lost their compare-and-set and were re-decided",
            &[],
            figures.cas_conflicts,
        );
        s.counter(
            "order_duplicate_work",
            "Reservations or releases repeated by an instance after another had recorded them",
            &[],
            figures.duplicate_work,
        );
        s.counter(
            "http_rate_limited",
            "HTTP requests refused with 429 by the per-caller rate limit",
            &[],
            limiter.limited(),
        );
        s.gauge(
            "sled_size_bytes",
            "Size of the sled database on disk",
            &[],
            store.size_on_disk() as f64,
        );
    });
}

fn projection(s: &mut Samples, name: &str, status: &ProjectionStatus) {
    let labels = [("projection", name)];
    s.counter(
        "projection_applied",
        "Stream messages applied to the read model",
        &labels,
        status.applied.load(Ordering::Relaxed),
    );
    s.counter(
        "projection_poison",
        "Malformed stream messages terminated and skipped",
        &labels,
        status.poison.load(Ordering::Relaxed),
    );
    s.gauge(
        "projection_lag",
        "Stream messages not yet applied",
        &labels,
        status.lag.load(Ordering::Relaxed) as f64,
    );
    s.gauge(
        "projection_checkpoint",
        "Stream sequence the read model has applied up to",
        &labels,
        status.checkpoint.load(Ordering::Relaxed) as f64,
    );
    s.gauge(
        "projection_ready",
        "1 once the read model has caught up with its stream",
        &labels,
        f64::from(u8::from(status.ready.load(Ordering::Relaxed))),
    );
}
