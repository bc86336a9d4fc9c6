//! Placing an order: price it from the catalog, publish it Pending, reserve its stock within the
//! request budget, publish the outcome. What the budget does not cover, the reconciler settles.
use std::{collections::HashMap, sync::atomic::Ordering, time::Instant};

use chrono::Utc;
use shared::events::OrderEventType;
use uuid::Uuid;

use super::{Decided, Orders, Placed};
use crate::{
    CatalogMode,
    domain::{self, Change, Order, OrderRequest, ProductView},
    error::{Error, Result},
    order_log::{Appended, Stored},
    snapshot::SnapshotUpdate,
    stock::{FailureCode, Reservation, StockError},
};

impl Orders {
    pub async fn place(
        &self,
        request: OrderRequest,
        idempotency_key: Option<String>,
    ) -> Result<Placed> {
        let started = Instant::now();
        // Only a keyed request needs its fingerprint (a digest of the request).
        let fingerprint = idempotency_key.as_ref().map(|_| request.fingerprint());
        let id = domain::order_id(request.customer_id, idempotency_key.as_deref());
        if fingerprint.is_some()
            && let Some(known) = self.view.get(id)?
        {
            // A replay: answer the order's current state (the view may be a step behind).
            let current = self.get(id).await.unwrap_or(known.order);
            return replay(current, fingerprint.as_deref());
        }
        let ids: Vec<Uuid> = request.items.iter().map(|(id, _)| *id).collect();
        let catalog = self.catalog(&ids).await?;
        let order = domain::price_order(id, &request, &catalog, Utc::now(), fingerprint.clone())
            .map_err(Error::UnknownProducts)?;
        let remaining = self.budget.saturating_sub(started.elapsed());
        let placed = order.to_event(OrderEventType::OrderPlaced);
        let appended = tokio::time::timeout(remaining, self.log.append(&placed, 0))
            .await
            .map_err(|_| {
                Error::OrderStoreUnavailable(std::sync::Arc::from(Box::from(
                    "the request budget ran out",
                )))
            })??;
        let seq = match appended {
            Appended::Stored(seq, payload) => {
                // Queued for the view, not awaited: the final state's record waits for both.
                self.view
                    .record_written(&placed, seq, payload, false)
                    .await?;
                seq
            }
            // The key's order exists (placed by this or another instance).
            Appended::Conflict(Some(existing)) => {
                self.view.record(&existing).await?;
                tracing::info!(order_id = %id, "Idempotent replay of a create request.");
                return replay(existing.order, fingerprint.as_deref());
            }
            Appended::Conflict(None) => return Err(Error::Contended(id)),
        };
        let pending = Stored { order, seq };
        tracing::info!(order_id = %id, customer_id = %pending.order.customer_id, total = %pending.order.total_amount, "Order accepted as Pending.");
        let remaining = self.budget.saturating_sub(started.elapsed());
        match tokio::time::timeout(remaining, self.settle_queued(&pending, false)).await {
            Ok(Ok(Some(settled))) => Ok(Placed::of(settled)),
            Ok(Ok(None)) | Err(_) => {
                tracing::warn!(order_id = %id, "product-svc did not answer within the request budget; the order stays Pending for the reconciler.");
                Ok(Placed::of(self.latest(pending)?))
            }
            Ok(Err(error)) => {
                // The Pending state is acknowledged; whatever failed after it, the reconciler
                // finishes (ReserveStock is idempotent).
                tracing::warn!(order_id = %id, error = %shared::telemetry::error_chain(&error), "Settling failed; the order stays Pending for the reconciler.");
                Ok(Placed::of(self.latest(pending)?))
            }
        }
    }

    /// Reserves stock for a Pending order and records the outcome. `Ok(None)` when product-svc
    /// is unavailable (the order stays Pending; ReserveStock is idempotent, so retrying is safe).
    /// If another instance settled or cancelled it first, returns what it is now.
    pub async fn settle(&self, pending: &Stored) -> Result<Option<Order>> {
        self.settle_queued(pending, true).await
    }

    /// `settle`; `wait`: return once the view holds the outcome (the reconciler's next scan
    /// must not find the order Pending), else once it is queued (the create path).
    async fn settle_queued(&self, pending: &Stored, wait: bool) -> Result<Option<Order>> {
        let order = &pending.order;
        let items: Vec<(Uuid, u32)> = order
            .items
            .iter()
            .map(|i| (i.product_id, i.quantity))
            .collect();
        let change = match self.stock.reserve(order.id, &items).await {
            Ok(Reservation::Reserved) => Change::Confirm,
            Ok(Reservation::Failed {
                code,
                reason,
                failed_product_ids,
            }) => {
                tracing::info!(order_id = %order.id, ?code, "Stock reservation refused; rejecting the order.");
                let reason = match code {
                    FailureCode::RequestMismatch => {
                        format!("the reservation for this order conflicts: {reason}")
                    }
                    _ => reason,
                };
                Change::Reject {
                    reason,
                    failed_product_ids,
                }
            }
            Err(StockError::Unavailable(_) | StockError::BreakerOpen) => return Ok(None),
            Err(error @ StockError::Failed(_)) => {
                let error = shared::telemetry::error_chain(&error);
                tracing::warn!(order_id = %order.id, %error, "product-svc failed; the order stays Pending for the reconciler.");
                return Ok(None);
            }
            Err(StockError::Refused(status)) => Change::Reject {
                reason: format!(
                    "product-svc refused the reservation: {:?}: {}",
                    status.code(),
                    status.message()
                ),
                failed_product_ids: Vec::new(),
            },
        };
        match self.decide(pending.clone(), &change, None, wait).await? {
            Decided::Done(next) => {
                tracing::info!(order_id = %order.id, status = ?next.order.status, "Order settled.");
                Ok(Some(next.order))
            }
            Decided::Refused(current) => {
                self.counters.duplicate_work.fetch_add(1, Ordering::Relaxed);
                Ok(Some(current.order))
            }
        }
    }

    /// Catalog entries for `ids`: from the local snapshot, reading through to product-svc for
    /// misses (an order right after a product's creation works), or always from product-svc in
    /// `grpc` mode (the original Phase-6 design, kept for comparison).
    async fn catalog(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, ProductView>> {
        let mut found = match self.catalog {
            CatalogMode::Snapshot => self.snapshot.products(ids)?,
            CatalogMode::Grpc => HashMap::new(),
        };
        let missing: Vec<Uuid> = ids
            .iter()
            .filter(|id| !found.contains_key(id))
            .copied()
            .collect();
        if missing.is_empty() {
            return Ok(found);
        }
        let fetched = self
            .stock
            .get_products(&missing)
            .await
            .map_err(|e| Error::CatalogUnavailable(std::sync::Arc::new(e)))?;
        if self.catalog == CatalogMode::Snapshot && !fetched.is_empty() {
            let updates: Vec<_> = fetched
                .iter()
                .map(|(id, view)| SnapshotUpdate {
                    product_id: *id,
                    view: view.clone(),
                })
                .collect();
            let count = updates.len();
            self.snapshot.apply_events(updates, None).await?;
            tracing::info!(
                count,
                "Read through to product-svc for products missing from the snapshot."
            );
        }
        found.extend(fetched);
        Ok(found)
    }
}

/// The answer to a create request whose order already exists: the same request gets the order,
/// a different one (or an unkeyed request colliding with it) is refused.
fn replay(existing: Order, fingerprint: Option<&str>) -> Result<Placed> {
    match (existing.request_fingerprint.as_deref(), fingerprint) {
        (Some(stored), Some(sent)) if stored == sent => Ok(Placed::of(existing)),
        _ => Err(Error::IdempotencyMismatch),
    }
}
