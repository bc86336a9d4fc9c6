//! The order flows over the order stream: place (price from the catalog → reserve → publish the
//! outcome as the order's first state, or Pending if product-svc did not answer), settle (what the reconciler runs for Pending orders),
//! cancel, and release. HTTP and the workers call these; the rules themselves are in `domain/`.
//!
//! Every write is decided from a known state and published with a CAS on that state's stream
//! sequence: when another instance moved the order first, the flow re-reads and re-decides, so a
//! cancel racing a confirm ends in one well-defined state. Reservations and releases are
//! idempotent by order id at product-svc, so two instances doing the same work is harmless; it
//! is counted (`duplicateWork`) and kept rare.
mod change;
mod place;

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    CatalogMode,
    domain::{Change, Order, OrderStatus},
    error::{Error, Result},
    order_log::{Appended, OrderLog, Stored},
    snapshot::ProductSnapshot,
    stock::{StockClient, StockError},
    view::OrdersView,
};

/// How often one request re-decides after losing a CAS before it gives up (409-free 503).
const MAX_ATTEMPTS: usize = 8;

/// The order use cases over the order stream, the orders view, the product snapshot and the
/// stock client. HTTP and the workers go through these methods, never through the parts.
#[derive(Clone)]
pub struct Orders {
    log: OrderLog,
    view: OrdersView,
    snapshot: ProductSnapshot,
    stock: Arc<StockClient>,
    catalog: CatalogMode,
    /// How long a create request waits for product-svc before answering 202 Pending.
    budget: Duration,
    /// Reserve a new order's stock before its first publish (not at an edge site: `place.rs`).
    reserve_first: bool,
    counters: Arc<Counters>,
    /// Wakes this instance's releaser after a cancel or a ship.
    stock_work_wake: Arc<Notify>,
    /// Releases and commits this instance owes from its own cancels and ships: attempted at
    /// once, where other instances take over only after the budget (so two instances rarely do
    /// the same work).
    own_stock_work: Arc<Mutex<HashSet<Uuid>>>,
}

/// How often instances stepped on each other (reported on `/health/ready`).
#[derive(Debug, Default)]
struct Counters {
    /// Publishes that lost their CAS and were re-decided.
    conflicts: AtomicU64,
    /// Reservations or releases done by an instance after another had already recorded them.
    duplicate_work: AtomicU64,
}

/// The figures `/health/ready` and `/metrics` report about the orders.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub view_rows: u64,
    pub pending: u64,
    pub owed_stock_work: u64,
    pub cas_conflicts: u64,
    pub duplicate_work: u64,
    pub breaker_open: bool,
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
    pub fn new(
        log: OrderLog,
        view: OrdersView,
        snapshot: ProductSnapshot,
        stock: StockClient,
        catalog: CatalogMode,
        budget: Duration,
        reserve_first: bool,
    ) -> Self {
        Self {
            reserve_first,
            log,
            view,
            snapshot,
            stock: Arc::new(stock),
            catalog,
            budget,
            counters: Arc::default(),
            stock_work_wake: Arc::default(),
            own_stock_work: Arc::default(),
        }
    }

    /// Each product-svc endpoint and whether its breaker is open (readiness shows them).
    pub fn stock_endpoints(&self) -> Vec<(String, bool)> {
        self.stock.endpoints()
    }

    pub fn figures(&self) -> Figures {
        Figures {
            view_rows: self.view.count().unwrap_or_default(),
            pending: self.view.pending_count().unwrap_or_default(),
            owed_stock_work: self.view.owed_count().unwrap_or_default(),
            cas_conflicts: self.counters.conflicts.load(Ordering::Relaxed),
            duplicate_work: self.counters.duplicate_work.load(Ordering::Relaxed),
            breaker_open: self.stock.breaker_open(),
        }
    }

    /// One page of the orders a listing selects, newest first, from the view (once it holds
    /// every state this instance has answered).
    pub async fn list(&self, listing: &crate::view::Listing) -> Result<crate::view::Listed> {
        self.view.caught_up().await?;
        self.view.list(listing)
    }

    /// Pending orders past their create request's budget (the reconciler settles them); none
    /// while the breaker is open.
    pub fn overdue_pending(&self, limit: usize) -> Result<Vec<Stored>> {
        if self.stock.breaker_open() {
            return Ok(Vec::new());
        }
        let cutoff = Utc::now() - chrono::Duration::from_std(self.budget).unwrap_or_default();
        let mut pending = self.view.pending(limit)?;
        pending.retain(|s| s.order.status == OrderStatus::Pending && s.order.created_at <= cutoff);
        Ok(pending)
    }

    /// Owed stock work this instance should do now: its own at once, other instances' once
    /// they have had the budget to do it.
    pub fn due_stock_work(&self, limit: usize) -> Result<Vec<Stored>> {
        let owed = self.view.owed(limit)?;
        if owed.len() < limit {
            // All owed work is in this scan: forget own work another instance did.
            let ids: HashSet<_> = owed.iter().map(|s| s.order.id).collect();
            self.own_stock_work
                .lock()
                .expect("lock")
                .retain(|id| ids.contains(id));
        }
        let takeover = Utc::now() - chrono::Duration::from_std(self.budget).unwrap_or_default();
        let own = self.own_stock_work.lock().expect("lock");
        Ok(owed
            .into_iter()
            .filter(|s| own.contains(&s.order.id) || s.order.updated_at <= takeover)
            .collect())
    }

    /// Notified after each cancel or ship of this instance (its stock work is owed at once).
    pub fn stock_work_wake(&self) -> Arc<Notify> {
        self.stock_work_wake.clone()
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
                    tracing::debug!(order_id = %id, why = %why, "Order stream unreachable; answered from the view.");
                    Ok(stored.order)
                }
                None => Err(Error::OrderStoreUnavailable(why)),
            },
            Err(e) => Err(e),
        }
    }

    /// Creates or converges the order stream (a task of its own at start), retrying until NATS
    /// answers or `stop` is cancelled.
    pub async fn prepare_stream(self, stop: tokio_util::sync::CancellationToken) {
        let mut delay = std::time::Duration::from_millis(200);
        loop {
            match self.log.prepare().await {
                Ok(()) => return,
                Err(error) => {
                    tracing::debug!(error = %shared::telemetry::error_chain(&error), "The order stream is not ready yet; retrying.")
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(std::time::Duration::from_secs(5));
        }
    }

    /// The states this instance's view takes in from now on (the watchers' one fan-out).
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<crate::view::Change> {
        self.view.subscribe()
    }

    /// Every state of an order, oldest first, with the event that led to each; `customer` (a
    /// key bound to a customer) sees only that customer's orders.
    pub async fn history(
        &self,
        id: Uuid,
        customer: Option<Uuid>,
    ) -> Result<Vec<(Order, shared::events::OrderEventType)>> {
        let states = self.log.history(id).await?;
        match states.last() {
            None => Err(Error::NotFound(id)),
            Some((latest, _)) if customer.is_some_and(|c| c != latest.customer_id) => {
                Err(Error::NotFound(id))
            }
            Some(_) => Ok(states),
        }
    }

    /// Applies `change` to `current` and publishes it with a CAS on `current`'s sequence; on a
    /// conflict, re-decides from the state that won.
    async fn transition(&self, current: Stored, change: &Change) -> Result<Decided> {
        self.transition_if(current, change, None).await
    }

    /// `transition`, only while the order is at version `expected` (a client's `If-Match`),
    /// checked before the state rules on every decision: a change that lost its CAS to another
    /// one answers [`Error::VersionMismatch`].
    async fn transition_if(
        &self,
        current: Stored,
        change: &Change,
        expected: Option<u64>,
    ) -> Result<Decided> {
        self.decide(current, change, expected).await
    }

    /// The CAS loop of every transition; returns once the view has applied the new state (the
    /// releaser's work list must hold a cancel or a ship when it is woken, the reconciler's must
    /// no longer hold a settled order).
    async fn decide(
        &self,
        mut current: Stored,
        change: &Change,
        expected: Option<u64>,
    ) -> Result<Decided> {
        let id = current.order.id;
        for _ in 0..MAX_ATTEMPTS {
            if let Some(expected) = expected
                && current.order.version != expected
            {
                return Err(Error::VersionMismatch {
                    id,
                    current: current.order.version,
                    expected,
                });
            }
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
}

/// Why owed stock work (a release or a commit) did not complete (it stays owed and is retried).
#[derive(Debug, thiserror::Error)]
pub enum StockWorkError {
    #[error(transparent)]
    Stock(StockError),
    #[error("recording the stock work failed")]
    Record(#[source] Error),
}
