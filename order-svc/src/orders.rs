//! The order flows: place (price from the catalog → persist Pending → reserve → final status),
//! settle (what the reconciler runs for Pending orders) and cancel. HTTP and the workers call
//! these; the rules themselves are in `domain.rs`.
use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::Utc;
use uuid::Uuid;

use crate::{
    CatalogMode,
    domain::{self, Order, OrderRequest, OrderStatus, Outcome, ProductView},
    error::{Error, Result},
    stock::{FailCode, Reservation, StockClient, StockError},
    store::{Inserted, Store},
};

#[derive(Clone)]
pub struct Orders {
    pub store: Store,
    pub stock: Arc<StockClient>,
    pub catalog: CatalogMode,
    /// How long a create request waits for product-svc before answering 202 Pending.
    pub budget: Duration,
}

/// A placed order: final (201) or still waiting for product-svc (202).
pub enum Placed {
    Final(Order),
    Pending(Order),
}

impl Placed {
    fn of(order: Order) -> Self {
        if order.status == OrderStatus::Pending {
            Placed::Pending(order)
        } else {
            Placed::Final(order)
        }
    }
}

impl Orders {
    pub async fn place(
        &self,
        request: OrderRequest,
        idempotency_key: Option<String>,
    ) -> Result<Placed> {
        // Only a keyed request needs its fingerprint (it is the request serialized once more).
        let fingerprint = idempotency_key.as_ref().map(|_| request.fingerprint());
        if let (Some(key), Some(fingerprint)) = (&idempotency_key, &fingerprint)
            && let Some(existing) = self.store.find_idempotent(key, fingerprint)?
        {
            let order = self.store.get(existing)?.ok_or(Error::NotFound(existing))?;
            tracing::info!(order_id = %existing, "Idempotent replay of a create request.");
            return Ok(Placed::of(order));
        }
        let ids: Vec<Uuid> = request.items.iter().map(|(id, _)| *id).collect();
        let catalog = self.catalog(&ids).await?;
        let order = domain::price_order(Uuid::now_v7(), &request, &catalog, Utc::now())
            .map_err(Error::UnknownProducts)?;
        let idem = idempotency_key.as_deref().zip(fingerprint.as_deref());
        if let Inserted::Existing(existing) = self.store.insert_pending(&order, idem).await? {
            let order = self.store.get(existing)?.ok_or(Error::NotFound(existing))?;
            return Ok(Placed::of(order));
        }
        tracing::info!(order_id = %order.id, customer_id = %order.customer_id, total = %order.total_amount, "Order accepted as Pending.");
        match tokio::time::timeout(self.budget, self.settle(&order)).await {
            Ok(Ok(Some(settled))) => Ok(Placed::of(settled)),
            Ok(Ok(None)) | Err(_) => {
                tracing::warn!(order_id = %order.id, "product-svc did not answer within the request budget; the order stays Pending for the reconciler.");
                let current = self.store.get(order.id)?.unwrap_or(order);
                Ok(Placed::of(current))
            }
            Ok(Err(e)) => Err(e),
        }
    }

    /// Reserves stock for a Pending order and records the outcome. `Ok(None)` when product-svc
    /// is unavailable (the order stays Pending; ReserveStock is idempotent, so retrying is safe).
    pub async fn settle(&self, order: &Order) -> Result<Option<Order>> {
        let items: Vec<(Uuid, u32)> = order
            .items
            .iter()
            .map(|i| (i.product_id, i.quantity))
            .collect();
        let outcome = match self.stock.reserve(order.id, &items).await {
            Ok(Reservation::Reserved) => Outcome::Confirmed,
            Ok(Reservation::Failed {
                code,
                reason,
                failed_product_ids,
            }) => {
                tracing::info!(order_id = %order.id, ?code, "Stock reservation refused; rejecting the order.");
                let reason = match code {
                    FailCode::RequestMismatch => {
                        format!("the reservation for this order conflicts: {reason}")
                    }
                    _ => reason,
                };
                Outcome::Rejected {
                    reason,
                    failed_product_ids,
                }
            }
            Err(StockError::Unavailable(_)) => return Ok(None),
            Err(StockError::Failed(error)) => {
                tracing::warn!(order_id = %order.id, %error, "product-svc failed; the order stays Pending for the reconciler.");
                return Ok(None);
            }
            Err(StockError::Refused(message)) => Outcome::Rejected {
                reason: format!("product-svc refused the reservation: {message}"),
                failed_product_ids: Vec::new(),
            },
        };
        match self.store.transition(order.id, &outcome).await {
            Ok(next) => {
                tracing::info!(order_id = %order.id, status = ?next.status, "Order settled.");
                Ok(Some(next))
            }
            // Someone else (the reconciler, a cancel) moved it first: report what it is now.
            Err(Error::Transition(_)) => Ok(self.store.get(order.id)?),
            Err(e) => Err(e),
        }
    }

    pub async fn cancel(&self, id: Uuid, reason: String) -> Result<Order> {
        let order = self.store.get(id)?.ok_or(Error::NotFound(id))?;
        if !order.status.can_become(OrderStatus::Cancelled) {
            return Err(Error::NotCancellable {
                id,
                status: order.status,
            });
        }
        match self
            .store
            .transition(id, &Outcome::Cancelled { reason })
            .await
        {
            Ok(order) => {
                tracing::info!(order_id = %id, "Order cancelled; stock release queued.");
                Ok(order)
            }
            Err(Error::Transition(t)) => Err(Error::NotCancellable { id, status: t.from }),
            Err(e) => Err(e),
        }
    }

    /// Catalog entries for `ids`: from the local snapshot, reading through to product-svc for
    /// misses (an order right after a product's creation works), or always from product-svc in
    /// `grpc` mode (the original Phase-6 design, kept for comparison).
    async fn catalog(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, ProductView>> {
        let mut found = match self.catalog {
            CatalogMode::Snapshot => self.store.products(ids)?,
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
            .map_err(|e| Error::CatalogUnavailable(e.to_string()))?;
        if self.catalog == CatalogMode::Snapshot && !fetched.is_empty() {
            let updates: Vec<_> = fetched
                .iter()
                .map(|(id, view)| crate::store::SnapshotUpdate {
                    product_id: *id,
                    view: view.clone(),
                })
                .collect();
            self.store.apply_events(&updates, None)?;
            tracing::info!(
                count = updates.len(),
                "Read through to product-svc for products missing from the snapshot."
            );
        }
        found.extend(fetched);
        Ok(found)
    }
}
