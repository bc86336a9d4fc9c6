//! The order flows over the order stream: place (price from the catalog → publish Pending →
//! reserve → publish the final state), settle (what the reconciler runs for Pending orders),
//! cancel, and release. HTTP and the workers call these; the rules themselves are in `domain/`.
//!
//! Every write is decided from a known state and published with a CAS on that state's stream
//! sequence: when another instance moved the order first, the flow re-reads and re-decides, so a
//! cancel racing a confirm ends in one well-defined state. Reservations and releases are
//! idempotent by order id at product-svc, so two instances doing the same work is harmless; it
//! is counted (`duplicateWork`) and kept rare.
use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use shared::events::OrderEventType;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    CatalogMode,
    domain::{self, Change, Order, OrderRequest, OrderStatus, ProductView},
    error::{Error, Result},
    order_log::{Appended, OrderLog, Stored},
    stock::{FailureCode, Reservation, StockClient, StockError},
    store::{SnapshotUpdate, Store},
    view::OrdersView,
};

/// How often one request re-decides after losing a CAS before it gives up (409-free 503).
const MAX_ATTEMPTS: usize = 8;

#[derive(Clone)]
pub struct Orders {
    pub log: OrderLog,
    pub view: OrdersView,
    pub snapshot: Store,
    pub stock: Arc<StockClient>,
    pub catalog: CatalogMode,
    /// How long a create request waits for product-svc before answering 202 Pending.
    pub budget: Duration,
    pub counters: Arc<Counters>,
    /// Wakes this instance's releaser after a cancel or a ship.
    pub stock_work_wake: Arc<Notify>,
    /// Releases and commits this instance owes from its own cancels and ships: attempted at
    /// once, where other instances take over only after the budget (so two instances rarely do
    /// the same work).
    pub own_stock_work: Arc<Mutex<HashSet<Uuid>>>,
}

/// How often instances stepped on each other (reported on `/health/ready`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Publishes that lost their CAS and were re-decided.
    pub conflicts: AtomicU64,
    /// Reservations or releases done by an instance after another had already recorded them.
    pub duplicate_work: AtomicU64,
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

/// What a transition came to.
enum Decided {
    Done(Stored),
    /// The order's current state does not allow the change.
    Refused(Stored),
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
            .map_err(|_| Error::OrderStoreUnavailable("the request budget ran out".into()))??;
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
        match tokio::time::timeout(remaining, self.settle(&pending)).await {
            Ok(Ok(Some(settled))) => Ok(Placed::of(settled)),
            Ok(Ok(None)) | Err(_) => {
                tracing::warn!(order_id = %id, "product-svc did not answer within the request budget; the order stays Pending for the reconciler.");
                Ok(Placed::of(self.latest(pending)?))
            }
            Ok(Err(error)) => {
                // The Pending state is acknowledged; whatever failed after it, the reconciler
                // finishes (ReserveStock is idempotent).
                tracing::warn!(order_id = %id, %error, "Settling failed; the order stays Pending for the reconciler.");
                Ok(Placed::of(self.latest(pending)?))
            }
        }
    }

    /// Reserves stock for a Pending order and records the outcome. `Ok(None)` when product-svc
    /// is unavailable (the order stays Pending; ReserveStock is idempotent, so retrying is safe).
    /// If another instance settled or cancelled it first, returns what it is now.
    pub async fn settle(&self, pending: &Stored) -> Result<Option<Order>> {
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
            Err(StockError::Unavailable(_)) => return Ok(None),
            Err(StockError::Failed(error)) => {
                tracing::warn!(order_id = %order.id, %error, "product-svc failed; the order stays Pending for the reconciler.");
                return Ok(None);
            }
            Err(StockError::Refused(message)) => Change::Reject {
                reason: format!("product-svc refused the reservation: {message}"),
                failed_product_ids: Vec::new(),
            },
        };
        match self.transition(pending.clone(), &change).await? {
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

    /// The order's current state, read from the stream (read-your-writes on every instance);
    /// from the view if the stream cannot be reached, or for an order on another site's
    /// subjects (a hub lists and reads the orders its stream sources from edge sites).
    pub async fn get(&self, id: Uuid) -> Result<Order> {
        match self.log.read(id).await {
            Ok(Some(stored)) => {
                self.view.record(&stored).await?;
                Ok(stored.order)
            }
            Ok(None) => match self.view.get(id)? {
                Some(stored) => Ok(stored.order),
                None => Err(Error::NotFound(id)),
            },
            Err(Error::OrderStoreUnavailable(why)) => match self.view.get(id)? {
                Some(stored) => {
                    tracing::debug!(order_id = %id, why, "Order stream unreachable; answered from the view.");
                    Ok(stored.order)
                }
                None => Err(Error::OrderStoreUnavailable(why)),
            },
            Err(e) => Err(e),
        }
    }

    /// Cancels an order; `customer` (a key bound to a customer) sees only that customer's orders.
    pub async fn cancel(&self, id: Uuid, reason: String, customer: Option<Uuid>) -> Result<Order> {
        let current = match self.view.get(id)? {
            Some(stored) => stored,
            None => self.log.read(id).await?.ok_or(Error::NotFound(id))?,
        };
        if customer.is_some_and(|c| c != current.order.customer_id) {
            return Err(Error::NotFound(id));
        }
        match self.transition(current, &Change::Cancel { reason }).await? {
            Decided::Done(cancelled) => {
                tracing::info!(order_id = %id, "Order cancelled; stock release owed.");
                self.own_stock_work.lock().expect("lock").insert(id);
                self.stock_work_wake.notify_one();
                Ok(cancelled.order)
            }
            Decided::Refused(current) => Err(Error::NotCancellable {
                id,
                status: current.order.status,
            }),
        }
    }

    /// Ships a Confirmed order; the stock commit is then owed (durably, in the order's state)
    /// and attempted at once. Shipping a Shipped order answers it as it is.
    pub async fn ship(&self, id: Uuid) -> Result<Order> {
        let current = match self.view.get(id)? {
            Some(stored) => stored,
            None => self.log.read(id).await?.ok_or(Error::NotFound(id))?,
        };
        match self.transition(current, &Change::Ship).await? {
            Decided::Done(shipped) => {
                tracing::info!(order_id = %id, "Order shipped; stock commit owed.");
                self.own_stock_work.lock().expect("lock").insert(id);
                self.stock_work_wake.notify_one();
                Ok(shipped.order)
            }
            Decided::Refused(current) if current.order.status == OrderStatus::Shipped => {
                Ok(current.order)
            }
            Decided::Refused(current) => Err(Error::NotShippable {
                id,
                status: current.order.status,
            }),
        }
    }

    /// Does the stock work an order owes (a cancelled order's release, a shipped order's
    /// commit) and records it. `Ok(false)` if another instance had already recorded it.
    pub async fn finish_stock_work(&self, owed: Stored) -> Result<bool, StockWorkError> {
        let id = owed.order.id;
        let change = if owed.order.commit_owed {
            match self.stock.commit(id).await {
                Ok(_) => {}
                // Never satisfiable (no reservation, or it was released): recorded anyway so the
                // work list drains; product-svc's audit reports the order.
                Err(StockError::Refused(why)) => {
                    tracing::error!(order_id = %id, why, "product-svc refused to commit a shipped order's stock.");
                }
                Err(e) => return Err(StockWorkError::Stock(e)),
            }
            Change::RecordCommit
        } else {
            self.stock
                .release(id)
                .await
                .map_err(StockWorkError::Stock)?;
            Change::RecordRelease
        };
        self.own_stock_work.lock().expect("lock").remove(&id);
        match self.transition(owed, &change).await {
            Ok(Decided::Done(_)) => Ok(true),
            Ok(Decided::Refused(_)) => {
                self.counters.duplicate_work.fetch_add(1, Ordering::Relaxed);
                Ok(false)
            }
            Err(e) => Err(StockWorkError::Record(e)),
        }
    }

    pub fn owns_stock_work(&self, id: Uuid) -> bool {
        self.own_stock_work.lock().expect("lock").contains(&id)
    }

    /// Drops own releases that are no longer owed (another instance took them over).
    pub fn forget_own_stock_work_except(&self, still_owed: &HashSet<Uuid>) {
        self.own_stock_work
            .lock()
            .expect("lock")
            .retain(|id| still_owed.contains(id));
    }

    /// Applies `change` to `current` and publishes it with a CAS on `current`'s sequence; on a
    /// conflict, re-decides from the state that won.
    async fn transition(&self, mut current: Stored, change: &Change) -> Result<Decided> {
        let id = current.order.id;
        for _ in 0..MAX_ATTEMPTS {
            let next = match current.order.apply(change, Utc::now()) {
                Ok(next) => next,
                Err(why) => {
                    tracing::debug!(order_id = %id, %why, "The order's state refuses the change.");
                    return Ok(Decided::Refused(current));
                }
            };
            let event = next.to_event(change.event_type());
            match self.log.append(&event, current.seq).await? {
                Appended::Stored(seq, payload) => {
                    self.view.record_written(&event, seq, payload, true).await?;
                    return Ok(Decided::Done(Stored { order: next, seq }));
                }
                Appended::Conflict(Some(latest)) => {
                    self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(order_id = %id, version = latest.order.version, "The order moved on; deciding again.");
                    self.view.record(&latest).await?;
                    current = *latest;
                }
                Appended::Conflict(None) => return Err(Error::NotFound(id)),
            }
        }
        Err(Error::Contended(id))
    }

    /// The view's state of a just-written order (it may have moved on), or `fallback`.
    fn latest(&self, fallback: Stored) -> Result<Order> {
        Ok(self.view.get(fallback.order.id)?.unwrap_or(fallback).order)
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
            .map_err(|e| Error::CatalogUnavailable(e.to_string()))?;
        if self.catalog == CatalogMode::Snapshot && !fetched.is_empty() {
            let updates: Vec<_> = fetched
                .iter()
                .map(|(id, view)| SnapshotUpdate {
                    product_id: *id,
                    view: view.clone(),
                })
                .collect();
            self.snapshot.apply_events(&updates, None)?;
            tracing::info!(
                count = updates.len(),
                "Read through to product-svc for products missing from the snapshot."
            );
        }
        found.extend(fetched);
        Ok(found)
    }
}

/// Why owed stock work (a release or a commit) did not complete (it stays owed and is retried).
#[derive(Debug, thiserror::Error)]
pub enum StockWorkError {
    #[error(transparent)]
    Stock(StockError),
    #[error("recording the stock work failed: {0}")]
    Record(Error),
}

/// The answer to a create request whose order already exists: the same request gets the order,
/// a different one (or an unkeyed request colliding with it) is refused.
fn replay(existing: Order, fingerprint: Option<&str>) -> Result<Placed> {
    match (existing.request_fingerprint.as_deref(), fingerprint) {
        (Some(stored), Some(sent)) if stored == sent => Ok(Placed::of(existing)),
        _ => Err(Error::IdempotencyMismatch),
    }
}
