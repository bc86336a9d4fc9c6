//! Background workers that finish what a request could not:
//! - the **reconciler** drives every Pending order to Confirmed or Rejected (also after a
//!   restart), since ReserveStock is idempotent by order id;
//! - the **releaser** sends every stock release that a cancel recorded, retrying until
//!   product-svc confirms (the original tried once and gave up).
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::{domain::OrderStatus, orders::Orders};

pub async fn reconciler(orders: Orders, interval: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if orders.stock.breaker_open() {
            continue;
        }
        let ids = match orders.store.pending_ids(512) {
            Ok(ids) => ids,
            Err(error) => {
                tracing::error!(%error, "Reading pending orders failed.");
                continue;
            }
        };
        // Leave orders still inside their create request's budget to that request.
        let cutoff = Utc::now() - chrono::Duration::from_std(orders.budget).unwrap_or_default();
        futures::stream::iter(ids)
            .for_each_concurrent(8, |id| {
                let orders = orders.clone();
                async move {
                    let Ok(Some(order)) = orders.store.get(id) else { return };
                    if order.status != OrderStatus::Pending || order.created_at > cutoff {
                        return;
                    }
                    let cid = shared::correlation::current_or_new();
                    let run = shared::correlation::scope(cid, "reconciler".into(), orders.settle(&order));
                    match run.await {
                        Ok(Some(o)) => tracing::info!(order_id = %id, status = ?o.status, "Reconciled a pending order."),
                        Ok(None) => tracing::debug!(order_id = %id, "product-svc still unavailable; order stays Pending."),
                        Err(error) => tracing::error!(order_id = %id, %error, "Reconciling an order failed."),
                    }
                }
            })
            .await;
    }
}

pub async fn releaser(orders: Orders, interval: Duration, cancel: CancellationToken) {
    let wake = orders.store.release_wake();
    let mut backoff = interval;
    loop {
        let releases = match orders.store.releases(256) {
            Ok(r) => r,
            Err(error) => {
                tracing::error!(%error, "Reading owed releases failed.");
                Vec::new()
            }
        };
        let mut failed = false;
        for (order_id, cid) in releases {
            let result =
                shared::correlation::scope(cid, "releaser".into(), orders.stock.release(order_id))
                    .await;
            match result {
                Ok(()) => {
                    if let Err(error) = orders.store.release_done(order_id) {
                        tracing::error!(%error, "Recording a release failed.");
                    }
                    tracing::info!(order_id = %order_id, "Stock released.");
                }
                Err(error) => {
                    tracing::warn!(order_id = %order_id, %error, "Stock release failed; will retry.");
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
            if orders.store.releases_count() > 0 {
                Duration::ZERO
            } else {
                interval
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = wake.notified(), if !failed => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
