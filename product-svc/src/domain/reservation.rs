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
