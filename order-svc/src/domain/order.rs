//! The order and its state machine: ids, transitions with versions, and the full-state events
//! every transition publishes (an order's latest event is the order).
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use shared::events::{ORDER_SCHEMA_VERSION, OrderEvent, OrderEventType};
use uuid::Uuid;

pub use shared::events::OrderStatus;

/// Order ids of keyed requests are derived from (customer, Idempotency-Key), so the first
/// publish of an order (expected subject sequence 0) is the key's global claim on every instance.
const ORDER_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_4a9e_2c57_4d0b_9f3e_80a1_c2d4_e5f6);

/// The id of a new order created at `now`: derived from the customer and the Idempotency-Key
/// when there is one (keys are scoped per customer), otherwise a time-ordered id whose
/// timestamp is `now`'s millisecond: the orders view then finds the order's row (keyed by its
/// creation time) from the id alone, with no id index (`view/rows.rs`).
pub fn order_id(customer_id: Uuid, idempotency_key: Option<&str>, now: DateTime<Utc>) -> Uuid {
    match idempotency_key {
        Some(key) => {
            let mut name = customer_id.as_bytes().to_vec();
            name.extend_from_slice(key.as_bytes());
            Uuid::new_v5(&ORDER_ID_NAMESPACE, &name)
        }
        None => {
            let millis = created_millis(now);
            let ts = uuid::Timestamp::from_unix(
                uuid::NoContext,
                millis / 1000,
                (millis % 1000) as u32 * 1_000_000,
            );
            Uuid::new_v7(ts)
        }
    }
}

/// A creation time as the millisecond the orders view keys it by (times before 1970 as 0).
pub fn created_millis(at: DateTime<Utc>) -> u64 {
    at.timestamp_millis().max(0) as u64
}

/// The creation millisecond an order id tells: a time-ordered (v7) id's timestamp. (Whether it
/// is the order's creation time is for the caller to check: ids from elsewhere need not be.)
pub fn id_millis(id: Uuid) -> Option<u64> {
    if id.get_version_num() != 7 {
        return None;
    }
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    Some(secs * 1000 + u64::from(nanos) / 1_000_000)
}

pub fn can_become(from: OrderStatus, next: OrderStatus) -> bool {
    use OrderStatus::*;
    matches!(
        (from, next),
        (Pending, Confirmed)
            | (Pending, Rejected)
            | (Pending, Cancelled)
            | (Confirmed, Cancelled)
            | (Confirmed, Shipped)
    )
}

/// An order line: product, the name and unit price captured when the order was priced, and the
/// line total. The event's item type, since every order state is published whole.
pub use shared::events::OrderEventItem as OrderItem;

/// One order state, as published and as served (camelCase JSON, money as decimal strings).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: Uuid,
    /// 1 when placed, +1 per transition.
    pub version: u64,
    pub customer_id: Uuid,
    pub customer_email: String,
    pub status: OrderStatus,
    #[serde(with = "rust_decimal::serde::str")]
    pub total_amount: Decimal,
    pub reason: Option<String>,
    pub failed_product_ids: Vec<Uuid>,
    pub items: Vec<OrderItem>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// A cancelled order whose reservation product-svc has not confirmed released yet.
    #[serde(skip)]
    pub release_owed: bool,
    /// A shipped order whose reservation product-svc has not confirmed committed yet.
    #[serde(skip)]
    pub commit_owed: bool,
    #[serde(skip)]
    pub request_fingerprint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an order that is {from:?} cannot be {to}")]
pub struct InvalidTransition {
    pub from: OrderStatus,
    pub to: &'static str,
}

/// A decided change to an order: how a reservation ended, a cancel, or a recorded release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Confirm,
    Reject {
        reason: String,
        failed_product_ids: Vec<Uuid>,
    },
    Cancel {
        reason: String,
    },
    /// product-svc confirmed the release a cancel owed.
    RecordRelease,
    /// Confirmed → Shipped: the reservation is now owed as an on-hand decrement.
    Ship,
    /// product-svc confirmed the commit a shipment owed.
    RecordCommit,
}

impl Change {
    pub fn event_type(&self) -> OrderEventType {
        match self {
            Change::Confirm => OrderEventType::OrderConfirmed,
            Change::Reject { .. } => OrderEventType::OrderRejected,
            Change::Cancel { .. } => OrderEventType::OrderCancelled,
            Change::RecordRelease => OrderEventType::OrderStockReleased,
            Change::Ship => OrderEventType::OrderShipped,
            Change::RecordCommit => OrderEventType::OrderStockCommitted,
        }
    }
}

impl Order {
    /// The next state after `change`, one version up; or why the order does not allow it.
    /// A cancel always owes a release: even a Pending order may hold a reservation whose reply
    /// was lost (and releasing an order product-svc never saw blocks a late reserve).
    pub fn apply(&self, change: &Change, now: DateTime<Utc>) -> Result<Order, InvalidTransition> {
        let (to, label) = match change {
            Change::Confirm => (OrderStatus::Confirmed, "confirmed"),
            Change::Reject { .. } => (OrderStatus::Rejected, "rejected"),
            Change::Cancel { .. } => (OrderStatus::Cancelled, "cancelled"),
            Change::RecordRelease => (OrderStatus::Cancelled, "released"),
            Change::Ship => (OrderStatus::Shipped, "shipped"),
            Change::RecordCommit => (OrderStatus::Shipped, "committed"),
        };
        let allowed = match change {
            Change::RecordRelease => self.status == OrderStatus::Cancelled && self.release_owed,
            Change::RecordCommit => self.status == OrderStatus::Shipped && self.commit_owed,
            _ => can_become(self.status, to),
        };
        if !allowed {
            return Err(InvalidTransition {
                from: self.status,
                to: label,
            });
        }
        let mut next = self.clone();
        next.status = to;
        next.version += 1;
        next.updated_at = now;
        match change {
            Change::Confirm => {}
            Change::Reject {
                reason,
                failed_product_ids,
            } => {
                next.reason = Some(reason.clone());
                next.failed_product_ids = failed_product_ids.clone();
            }
            Change::Cancel { reason } => {
                next.reason = Some(reason.clone());
                next.release_owed = true;
            }
            Change::RecordRelease => next.release_owed = false,
            Change::Ship => next.commit_owed = true,
            Change::RecordCommit => next.commit_owed = false,
        }
        Ok(next)
    }

    /// The first state of an order whose reservation was decided before anything was published
    /// (a confirm or a reject of the priced Pending order): that state as version 1, since the
    /// Pending state is never published. Its event is the change's (`OrderConfirmed`,
    /// `OrderRejected`), so an order's first message may be its final state.
    pub fn first_state(
        &self,
        change: &Change,
        now: DateTime<Utc>,
    ) -> Result<Order, InvalidTransition> {
        let mut first = self.apply(change, now)?;
        first.version = self.version;
        Ok(first)
    }

    /// This state as the full-state event published on the order's subject.
    pub fn to_event(&self, event_type: OrderEventType) -> OrderEvent {
        OrderEvent {
            event_id: Uuid::now_v7(),
            event_type,
            schema_version: ORDER_SCHEMA_VERSION,
            occurred_at: self.updated_at,
            order_id: self.id,
            version: self.version,
            status: self.status,
            customer_id: self.customer_id,
            customer_email: self.customer_email.clone(),
            items: self.items.clone(),
            total_amount: self.total_amount,
            reason: self.reason.clone(),
            failed_product_ids: self.failed_product_ids.clone(),
            release_owed: self.release_owed,
            commit_owed: self.commit_owed,
            request_fingerprint: self.request_fingerprint.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    pub fn from_event(e: &OrderEvent) -> Order {
        Order {
            id: e.order_id,
            version: e.version,
            customer_id: e.customer_id,
            customer_email: e.customer_email.clone(),
            status: e.status,
            total_amount: e.total_amount,
            reason: e.reason.clone(),
            failed_product_ids: e.failed_product_ids.clone(),
            items: e.items.clone(),
            created_at: e.created_at,
            updated_at: e.updated_at,
            release_owed: e.release_owed,
            commit_owed: e.commit_owed,
            request_fingerprint: e.request_fingerprint.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unkeyed order's id tells its creation millisecond; a keyed one's tells nothing.
    #[test]
    fn unkeyed_order_ids_carry_their_creation_millisecond() {
        let now = Utc::now();
        let millis = now.timestamp_millis() as u64;
        assert_eq!(id_millis(order_id(Uuid::new_v4(), None, now)), Some(millis));
        assert_eq!(id_millis(order_id(Uuid::new_v4(), Some("k"), now)), None);
        assert_eq!(id_millis(Uuid::new_v4()), None);
    }

    #[test]
    fn keyed_order_ids_are_per_customer_and_stable() {
        let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let now = Utc::now();
        let later = now + chrono::Duration::seconds(1);
        assert_eq!(
            order_id(ann, Some("k"), now),
            order_id(ann, Some("k"), later)
        );
        assert_ne!(order_id(ann, Some("k"), now), order_id(bob, Some("k"), now));
        assert_ne!(
            order_id(ann, Some("k"), now),
            order_id(ann, Some("k2"), now)
        );
        assert_ne!(order_id(ann, None, now), order_id(ann, None, now));
    }
}
