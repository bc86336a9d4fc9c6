//! Reservations: the all-or-nothing plan, commit rules, and expiry of closed reservations.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Product, Stock, update_low_flag};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureCode {
    InsufficientStock,
    ProductNotFound,
    RequestMismatch,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub code: FailureCode,
    pub reason: String,
    pub failed_product_ids: Vec<Uuid>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReservationStatus {
    /// Stock is held for the order.
    Active,
    /// Stock was given back (or the order was released before it ever reserved).
    Released,
    /// The request failed; nothing is held. Kept so a retry gets the same answer.
    Failed,
    /// The order shipped: the held stock left on-hand (nothing is held any more).
    Committed,
}

/// What is stored per order id: the (merged, sorted) request and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    pub items: Vec<(Uuid, i64)>,
    pub status: ReservationStatus,
    pub failure: Option<Failure>,
    /// When it stopped holding stock (released, committed or failed): retention counts from
    /// here. `None` while Active (and in records from before retention existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<DateTime<Utc>>,
    /// Held before its order reached the order stream: what to publish as the order's first
    /// state if it never does (`unrecorded.rs`). Dropped when the reservation closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unrecorded: Option<Unrecorded>,
}

/// An order that was not on the order stream when its stock was held: its subject, and the
/// state (an `OrderRejected` full state, JSON as order-svc wrote it) that claims the subject if
/// the order's own first publish never lands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unrecorded {
    pub subject: String,
    pub state: Box<serde_json::value::RawValue>,
}

impl Unrecorded {
    /// Checks what a reserve call sent: the subject is the order's (one literal subject ending
    /// in the order id) and the state its first state as `OrderRejected`, version 1. The error
    /// names the field.
    pub fn check(order_id: Uuid, subject: String, state: &[u8]) -> Result<Self, String> {
        let literal = !subject.contains(['*', '>', ' ']) && !subject.starts_with('.');
        if !literal || !subject.ends_with(&format!(".{order_id}")) {
            return Err(format!(
                "unrecorded.subject: must be the order's subject, ending in .{order_id}"
            ));
        }
        let bad = |why: &str| format!("unrecorded.state: {why}");
        let event: shared::events::OrderEvent =
            serde_json::from_slice(state).map_err(|e| bad(&format!("not an order event: {e}")))?;
        if event.order_id != order_id {
            return Err(bad("its orderId is not the order's"));
        }
        if event.status != shared::events::OrderStatus::Rejected || event.version != 1 {
            return Err(bad(
                "must be the order's first state (version 1) as Rejected",
            ));
        }
        let state = serde_json::value::RawValue::from_string(
            String::from_utf8(state.to_vec()).map_err(|_| bad("not UTF-8"))?,
        )
        .map_err(|e| bad(&e.to_string()))?;
        Ok(Self { subject, state })
    }

    /// The event id of the state (its message id when published).
    pub fn event_id(&self) -> Option<Uuid> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Id {
            event_id: Uuid,
        }
        serde_json::from_str::<Id>(self.state.get())
            .ok()
            .map(|i| i.event_id)
    }
}

impl PartialEq for Unrecorded {
    fn eq(&self, other: &Self) -> bool {
        self.subject == other.subject && self.state.get() == other.state.get()
    }
}
impl Eq for Unrecorded {}

impl Reservation {
    /// Stock held for `items`.
    pub fn held(items: &[(Uuid, i64)], unrecorded: Option<Unrecorded>) -> Self {
        Self {
            items: items.to_vec(),
            status: ReservationStatus::Active,
            failure: None,
            closed_at: None,
            unrecorded,
        }
    }

    /// A refused request: nothing held, kept so a retry gets the same answer.
    pub fn failed(items: &[(Uuid, i64)], failure: Failure, now: DateTime<Utc>) -> Self {
        Self {
            items: items.to_vec(),
            status: ReservationStatus::Failed,
            failure: Some(failure),
            closed_at: Some(now),
            unrecorded: None,
        }
    }

    /// What a release for an order that never reserved leaves behind: a released reservation of
    /// nothing, so a late (retried) reserve for it cannot hold stock that nobody will release.
    pub fn tombstone(now: DateTime<Utc>) -> Self {
        Self {
            items: Vec::new(),
            status: ReservationStatus::Released,
            failure: None,
            closed_at: Some(now),
            unrecorded: None,
        }
    }

    /// Stops holding stock (`Released` or `Committed`); retention counts from `now`.
    pub fn close(&mut self, status: ReservationStatus, now: DateTime<Utc>) {
        self.status = status;
        self.closed_at = Some(now);
        self.unrecorded = None;
    }
}

/// The answer to a reserve call for an order id that already has a reservation: the stored
/// outcome for the same request; for a different one, a `RequestMismatch` failure (which is not
/// stored: the existing reservation stays as it is).
pub fn replay_reserve(existing: Reservation, order_id: Uuid, items: &[(Uuid, i64)]) -> Reservation {
    if existing.items == items {
        return existing;
    }
    let reason = if existing.status == ReservationStatus::Released && existing.items.is_empty() {
        format!("order {order_id} was already released; it cannot reserve stock")
    } else {
        format!("order {order_id} already reserved a different set of items")
    };
    Reservation {
        items: items.to_vec(),
        status: ReservationStatus::Failed,
        failure: Some(Failure {
            code: FailureCode::RequestMismatch,
            reason,
            failed_product_ids: Vec::new(),
        }),
        closed_at: None,
        unrecorded: None,
    }
}

/// The answer to a reserve for an order that is no longer Pending in the order stream while no
/// reservation of it is kept (compacted): refused, and not stored.
pub fn refuse_settled(
    order_id: Uuid,
    items: &[(Uuid, i64)],
    status: shared::events::OrderStatus,
) -> Reservation {
    Reservation {
        items: items.to_vec(),
        status: ReservationStatus::Failed,
        failure: Some(Failure {
            code: FailureCode::RequestMismatch,
            reason: format!("order {order_id} is {status:?} already; it cannot reserve stock"),
            failed_product_ids: Vec::new(),
        }),
        closed_at: None,
        unrecorded: None,
    }
}

/// Stock after an order's `quantity` held units are given back (never below zero held).
pub fn release_units(stock: Stock, quantity: i64) -> Stock {
    Stock {
        reserved: (stock.reserved - quantity).max(0),
        ..stock
    }
}

/// Whether a reservation may be compacted away: it holds nothing and closed before `horizon`.
/// Active reservations are kept forever (they are stock).
pub fn expired(reservation: &Reservation, horizon: DateTime<Utc>) -> bool {
    reservation.status != ReservationStatus::Active
        && reservation.closed_at.is_some_and(|t| t < horizon)
}

/// Why a reservation cannot be committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommitRefusal {
    #[error("no reservation is known for this order")]
    Unknown,
    #[error("the reservation is {0:?}, so there is nothing to commit")]
    NotHeld(ReservationStatus),
}

/// Whether committing `reservation` changes stock: `Ok(true)` for an Active one, `Ok(false)` for
/// one already committed (a repeated call), a refusal otherwise.
pub fn commit_decision(reservation: Option<&Reservation>) -> Result<bool, CommitRefusal> {
    match reservation.map(|r| r.status) {
        None => Err(CommitRefusal::Unknown),
        Some(ReservationStatus::Active) => Ok(true),
        Some(ReservationStatus::Committed) => Ok(false),
        Some(status) => Err(CommitRefusal::NotHeld(status)),
    }
}

/// Stock after `quantity` held units ship: they leave both on-hand and reserved, so available
/// stock does not move.
pub fn commit_units(stock: Stock, quantity: i64) -> Stock {
    Stock {
        on_hand: (stock.on_hand - quantity).max(0),
        reserved: (stock.reserved - quantity).max(0),
        low: stock.low,
    }
}

/// Sums duplicate product ids and sorts, so equal requests compare equal.
pub fn merge_items(items: impl IntoIterator<Item = (Uuid, i64)>) -> Vec<(Uuid, i64)> {
    let mut merged: std::collections::BTreeMap<Uuid, i64> = Default::default();
    for (id, qty) in items {
        *merged.entry(id).or_default() += qty;
    }
    merged.into_iter().collect()
}

/// Decides a reservation against current state, reporting **every** failing product.
/// `state[i]` is the product and stock of `items[i]` (`None` when unknown).
pub fn plan_reservation(
    items: &[(Uuid, i64)],
    state: &[Option<(Product, Stock)>],
) -> Result<Vec<Stock>, Failure> {
    let mut missing = Vec::new();
    let mut short = Vec::new();
    let mut reasons = Vec::new();
    let mut planned = Vec::with_capacity(items.len());
    for ((id, qty), entry) in items.iter().zip(state) {
        match entry {
            None => {
                missing.push(*id);
                reasons.push(format!("product {id} not found"));
            }
            Some((product, _)) if product.deleted => {
                missing.push(*id);
                reasons.push(format!("product {id} is discontinued"));
            }
            Some((_, stock)) if stock.available() < *qty => {
                short.push(*id);
                reasons.push(format!(
                    "insufficient stock for product {id}: requested {qty}, available {}",
                    stock.available()
                ));
            }
            Some((product, stock)) => {
                let mut next = Stock {
                    reserved: stock.reserved + qty,
                    ..*stock
                };
                let _ = update_low_flag(&mut next, product.low_stock_threshold);
                planned.push(next);
            }
        }
    }
    if missing.is_empty() && short.is_empty() {
        return Ok(planned);
    }
    let code = if missing.is_empty() {
        FailureCode::InsufficientStock
    } else {
        FailureCode::ProductNotFound
    };
    let mut failed = missing;
    failed.extend(short);
    Err(Failure {
        code,
        reason: reasons.join("; "),
        failed_product_ids: failed,
    })
}
