//! Changing a placed order: cancel and ship (each owes stock work, recorded in the order's
//! state), and doing that owed work (release or commit) until product-svc confirms it.
use std::sync::atomic::Ordering;

use uuid::Uuid;

use super::{Decided, Orders, StockWorkError};
use crate::{
    domain::{Change, Order, OrderStatus},
    error::{Error, Result},
    order_log::Stored,
    stock::StockError,
};

impl Orders {
    /// Cancels an order; `customer` (a key bound to a customer) sees only that customer's orders.
    /// Cancelling a Cancelled order answers it as it is (a client may retry safely); a Rejected
    /// or Shipped order is refused. `if_match`: only from that version (checked first).
    pub async fn cancel(
        &self,
        id: Uuid,
        reason: String,
        customer: Option<Uuid>,
        if_match: Option<u64>,
    ) -> Result<Order> {
        let current = match self.view.get(id)? {
            Some(stored) => stored,
            None => self.log.read(id).await?.ok_or(Error::NotFound(id))?,
        };
        if customer.is_some_and(|c| c != current.order.customer_id) {
            return Err(Error::NotFound(id));
        }
        let change = Change::Cancel { reason };
        match self.transition_if(current, &change, if_match).await? {
            Decided::Done(cancelled) => {
                tracing::info!(order_id = %id, "Order cancelled; stock release owed.");
                self.own_stock_work.lock().expect("lock").insert(id);
                self.stock_work_wake.notify_one();
                Ok(cancelled.order)
            }
            Decided::Refused(current) if current.order.status == OrderStatus::Cancelled => {
                Ok(current.order)
            }
            Decided::Refused(current) => Err(Error::NotCancellable {
                id,
                status: current.order.status,
            }),
        }
    }

    /// Ships a Confirmed order; the stock commit is then owed (durably, in the order's state)
    /// and attempted at once. Shipping a Shipped order answers it as it is. `if_match`: only
    /// from that version (checked first).
    pub async fn ship(&self, id: Uuid, if_match: Option<u64>) -> Result<Order> {
        let current = match self.view.get(id)? {
            Some(stored) => stored,
            None => self.log.read(id).await?.ok_or(Error::NotFound(id))?,
        };
        match self.transition_if(current, &Change::Ship, if_match).await? {
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
                    tracing::error!(order_id = %id, code = ?why.code(), why = why.message(), "product-svc refused to commit a shipped order's stock.");
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
}
