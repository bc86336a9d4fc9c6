//! Placing an order: price it from the catalog, reserve its stock within the request budget, and
//! publish the outcome as the order's first state (Confirmed or Rejected); if product-svc does
//! not answer in time, publish it Pending and let the reconciler settle it.
use std::{collections::HashMap, sync::atomic::Ordering, time::Instant};

use chrono::Utc;
use shared::events::OrderEventType;
use uuid::Uuid;

use super::{Decided, Orders, Placed};
use crate::{
    CatalogMode,
    domain::{self, Change, Order, OrderRequest, OrderStatus, ProductView},
    error::{Error, Result},
    order_log::{Appended, Stored},
    snapshot::SnapshotUpdate,
    stock::{FailureCode, Reservation, StockError},
};

/// What a reservation call means for the order.
enum Reserved {
    /// The order's next state follows: confirmed or rejected.
    Decided(Change),
    /// A reservation with other items exists under the order id (its reason).
    Mismatch(String),
    /// product-svc did not answer (or the call was not made): the order stays Pending.
    Unanswered,
}

impl Orders {
    pub async fn place(
        &self,
        request: OrderRequest,
        idempotency_key: Option<String>,
    ) -> Result<Placed> {
        let started = Instant::now();
        // Only a keyed request needs its fingerprint (a digest of the request).
        let fingerprint = idempotency_key.as_ref().map(|_| request.fingerprint());
        let now = Utc::now();
        let id = domain::order_id(request.customer_id, idempotency_key.as_deref(), now);
        if fingerprint.is_some()
            && let Some(known) = self.view.get(id)?
        {
            // A replay: answer the order's current state (the view may be a step behind).
            let current = self.get(id).await.unwrap_or(known.order);
            return replay(current, fingerprint.as_deref());
        }
        let ids: Vec<Uuid> = request.items.iter().map(|(id, _)| *id).collect();
        let catalog = self.catalog(&ids).await?;
        let order = domain::price_order(id, &request, &catalog, now, fingerprint.clone())
            .map_err(Error::UnknownProducts)?;
        // NATS down: 503 before anything is reserved (the order could not be recorded).
        self.log.connected()?;
        let remaining = self.budget.saturating_sub(started.elapsed());
        let decided = match tokio::time::timeout(remaining, self.reserve_first(&order)).await {
            Ok(result) => result?,
            Err(_) => Reserved::Unanswered,
        };
        let (first, event_type) = match &decided {
            Reserved::Decided(change) => (
                order
                    .first_state(change, Utc::now())
                    .expect("a priced order is Pending"),
                change.event_type(),
            ),
            Reserved::Mismatch(_) => return self.key_taken(id, fingerprint.as_deref()).await,
            Reserved::Unanswered => (order, OrderEventType::OrderPlaced),
        };
        let event = first.to_event(event_type);
        let appended = self.log.append(&event, 0).await.inspect_err(|_| {
            if matches!(decided, Reserved::Decided(Change::Confirm)) {
                tracing::warn!(order_id = %id, "The order's first state may not have landed; product-svc releases its stock if it did not.");
            }
        })?;
        match appended {
            Appended::Stored(seq, payload) => {
                // Queued for the view, not awaited: a listing waits for the view to catch up.
                self.view
                    .record_written(&event, seq, payload, false)
                    .await?;
                if first.status != OrderStatus::Pending {
                    tracing::info!(order_id = %id, customer_id = %first.customer_id, total = %first.total_amount, status = ?first.status, "Order placed.");
                    return Ok(Placed::of(first));
                }
                if !self.reserve_first {
                    // An edge site: reserve now, within what is left of the budget.
                    let pending = Stored {
                        order: first.clone(),
                        seq,
                    };
                    let remaining = self.budget.saturating_sub(started.elapsed());
                    if let Ok(Ok(Some(settled))) =
                        tokio::time::timeout(remaining, self.settle(&pending)).await
                    {
                        return Ok(Placed::of(settled));
                    }
                }
                tracing::warn!(order_id = %id, "product-svc did not answer within the request budget; the order stays Pending for the reconciler.");
                Ok(Placed::of(first))
            }
            // The key's order exists (placed by this or another instance), or product-svc
            // recorded this one as rejected because its first state came too late.
            Appended::Conflict(Some(existing)) => {
                tracing::info!(order_id = %id, "Idempotent replay of a create request.");
                self.answer_existing(*existing, fingerprint.as_deref())
                    .await
            }
            Appended::Conflict(None) => Err(Error::Contended(id)),
        }
    }

    /// Reserves a new order's stock before anything is published: the order's first message
    /// is then its final state (one publish instead of two). product-svc gets the order's
    /// rejected state with it, to record in the order's place if the order never lands
    /// (`product-svc/src/unrecorded.rs`). With the breaker open nothing is called.
    /// At an edge site (`reserve_first` off) nothing is reserved before the Pending state is
    /// published: the order's subject is in the site's stream, which product-svc at the hub
    /// cannot reach to record a rejection while the uplink is down.
    async fn reserve_first(&self, order: &Order) -> Result<Reserved> {
        if !self.reserve_first || self.stock.breaker_open() {
            return Ok(Reserved::Unanswered);
        }
        let abandoned = Change::Reject {
            reason: "the order was not recorded in time; the stock held for it was released".into(),
            failed_product_ids: Vec::new(),
        };
        let state = order
            .first_state(&abandoned, Utc::now())
            .expect("a priced order is Pending")
            .to_event(abandoned.event_type());
        let state = serde_json::to_vec(&state).map_err(|e| Error::corrupt(e.to_string()))?;
        Ok(self
            .reserve(order, Some((self.log.subject(order.id), state)))
            .await)
    }

    /// A reservation under this order id holds other items: the order exists (answer it as a
    /// replay) or another request with the same key and a different body is placing it (422).
    async fn key_taken(&self, id: Uuid, fingerprint: Option<&str>) -> Result<Placed> {
        match self.log.read(id).await? {
            Some(existing) => self.answer_existing(existing, fingerprint).await,
            None => Err(Error::IdempotencyMismatch),
        }
    }

    /// A create request whose order id is taken, answered from the order's state in the stream
    /// (recorded in the view on the way).
    async fn answer_existing(&self, existing: Stored, fingerprint: Option<&str>) -> Result<Placed> {
        self.view.record(&existing).await?;
        replay(existing.order, fingerprint)
    }

    /// Reserves stock for a Pending order and records the outcome. `Ok(None)` when product-svc
    /// is unavailable (the order stays Pending; ReserveStock is idempotent, so retrying is safe).
    /// If another instance settled or cancelled it first, returns what it is now. Waits until
    /// the view holds the outcome (the reconciler's next scan must not find the order Pending).
    pub async fn settle(&self, pending: &Stored) -> Result<Option<Order>> {
        let order = &pending.order;
        let change = match self.reserve(order, None).await {
            Reserved::Decided(change) => change,
            Reserved::Mismatch(reason) => Change::Reject {
                reason: format!("the reservation for this order conflicts: {reason}"),
                failed_product_ids: Vec::new(),
            },
            Reserved::Unanswered => return Ok(None),
        };
        match self.decide(pending.clone(), &change, None).await? {
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

    /// One ReserveStock call for the order's items, as what it means for the order.
    async fn reserve(&self, order: &Order, unrecorded: Option<(String, Vec<u8>)>) -> Reserved {
        let items: Vec<(Uuid, u32)> = order
            .items
            .iter()
            .map(|i| (i.product_id, i.quantity))
            .collect();
        match self.stock.reserve(order.id, &items, unrecorded).await {
            Ok(Reservation::Reserved) => Reserved::Decided(Change::Confirm),
            Ok(Reservation::Failed {
                code: FailureCode::RequestMismatch,
                reason,
                ..
            }) => {
                tracing::info!(order_id = %order.id, "A reservation with other items exists under this order id.");
                Reserved::Mismatch(reason)
            }
            Ok(Reservation::Failed {
                code,
                reason,
                failed_product_ids,
            }) => {
                tracing::info!(order_id = %order.id, ?code, "Stock reservation refused; rejecting the order.");
                Reserved::Decided(Change::Reject {
                    reason,
                    failed_product_ids,
                })
            }
            Err(StockError::Unavailable(_) | StockError::BreakerOpen) => Reserved::Unanswered,
            Err(error @ StockError::Failed(_)) => {
                let error = shared::telemetry::error_chain(&error);
                tracing::warn!(order_id = %order.id, %error, "product-svc failed; the order stays Pending for the reconciler.");
                Reserved::Unanswered
            }
            Err(StockError::Refused(status)) => Reserved::Decided(Change::Reject {
                reason: format!(
                    "product-svc refused the reservation: {:?}: {}",
                    status.code(),
                    status.message()
                ),
                failed_product_ids: Vec::new(),
            }),
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
