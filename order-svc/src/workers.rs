//! Background workers that finish what a request could not, on **every** instance, from the
//! orders view (so no order is stranded when the instance that took it dies for good):
//! - the **reconciler** drives every Pending order older than the request budget to Confirmed or
//!   Rejected (ReserveStock is idempotent by order id);
//! - the **releaser** does the stock work an order owes (the release a cancel owes, the commit a
//!   shipment owes), retrying until product-svc confirms, and records it with a CAS publish.
//!
//! Scans are jittered (half to one and a half intervals), and an instance attempts at once only
//! the stock work of its own cancels and ships, taking over others' after the budget: so two instances
//! rarely do the same work, and when they do, the CAS lets one record it and the other counts it.
use std::time::Duration;

use futures::StreamExt;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::orders::Orders;

/// Owed stock work (releases, commits) read per scan.
const OWED_SCAN: usize = 256;

/// A scan interval with ±50 % jitter.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::rng().random_range(0.5..1.5))
}

pub async fn reconciler(orders: Orders, interval: Duration, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(jittered(interval)) => {}
        }
        // Orders still inside their create request's budget belong to that request.
        let pending = match orders.overdue_pending(512) {
            Ok(pending) => pending,
            Err(error) => {
                tracing::error!(%error, "Reading pending orders failed.");
                continue;
            }
        };
        futures::stream::iter(pending)
            .for_each_concurrent(8, |stored| {
                let orders = orders.clone();
                async move {
                    let id = stored.order.id;
                    let cid = shared::correlation::current_or_new();
                    let run = shared::correlation::scope(cid, "reconciler".into(), orders.settle(&stored));
                    match run.await {
                        Ok(Some(o)) => tracing::info!(order_id = %id, status = ?o.status, "Reconciled a pending order."),
                        Ok(None) => tracing::debug!(order_id = %id, "product-svc still unavailable; order stays Pending."),
                        Err(error) => tracing::warn!(order_id = %id, error = %shared::telemetry::error_chain(&error), "Reconciling an order failed; will retry."),
                    }
                }
            })
            .await;
    }
}

pub async fn releaser(orders: Orders, interval: Duration, cancel: CancellationToken) {
    let wake = orders.stock_work_wake();
    let mut backoff = interval;
    loop {
        // Another instance's work waits for the budget: the instance that cancelled is on it.
        let due = match orders.due_stock_work(OWED_SCAN) {
            Ok(due) => due,
            Err(error) => {
                tracing::error!(%error, "Reading owed stock work failed.");
                Vec::new()
            }
        };
        let mut failed = false;
        for stored in due {
            let id = stored.order.id;
            let cid = shared::correlation::current_or_new();
            let commit = stored.order.commit_owed;
            let work = orders.finish_stock_work(stored);
            let run = shared::correlation::scope(cid, "releaser".into(), work);
            match run.await {
                Ok(true) => tracing::info!(order_id = %id, commit, "Owed stock work done."),
                Ok(false) => {
                    tracing::debug!(order_id = %id, "Another instance had recorded this stock work.")
                }
                Err(error) => {
                    tracing::warn!(order_id = %id, commit, error = %shared::telemetry::error_chain(&error), "Owed stock work failed; will retry.");
                    failed = true;
                    break;
                }
            }
        }
        let wait = if failed {
            backoff = (backoff * 2).min(Duration::from_secs(5));
            backoff
        } else {
            backoff = interval;
            jittered(interval)
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = wake.notified(), if !failed => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
