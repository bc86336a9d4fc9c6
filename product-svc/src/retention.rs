//! Compaction of closed reservations, so the ledger does not grow forever.
//!
//! What is kept, and why: **held** (Active) reservations always, since they are stock. Closed
//! ones (released, committed, failed, and the tombstones a release of an unknown order leaves)
//! are kept for the retention window (`--reservation-retention-secs`, 7 days by default): while
//! kept, they answer a retried ReserveStock with its first outcome, stop a late reserve of a
//! released order from holding stock, and show the audit a shipped order's commit. order-svc
//! retries a call for seconds, not days, and past the window the order follower still releases
//! stock held for a cancelled order, so a week is ample. The audit does not report a shipped
//! order older than the window for its missing (compacted) reservation.
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Sweeps every tenth of the window (between a second and an hour), while the stock writer.
pub async fn run(store: Store, retention: Duration, cancel: CancellationToken) {
    let every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if store.lease().fence().is_none() {
            continue;
        }
        let horizon = Utc::now() - chrono::Duration::from_std(retention).unwrap_or_default();
        let ledger = match store.ledger_stream().await {
            Ok(ledger) => ledger.clone(),
            Err(error) => {
                tracing::warn!(%error, "Compacting reservations: the ledger is unreachable; will retry.");
                continue;
            }
        };
        match store.compact(horizon, &ledger).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "Compacted closed reservations past retention."),
            Err(error) => tracing::warn!(%error, "Compacting reservations failed; will retry."),
        }
    }
}
