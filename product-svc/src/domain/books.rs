//! How the stock ledger's messages move the books, the same rule on every instance.
//!
//! `LEDGER` keeps one message per subject: each order's reservation (its whole record) and each
//! product's on-hand count at the moment it was last written. Every stock operation is **one**
//! message, so none can be half stored: a reserve, a release or a commit rewrites the order's
//! reservation, and an adjustment rewrites the product's count. What is derived from them:
//! - **reserved** = the sum of the Active reservations holding the product;
//! - **on hand** = the product's last count (its `initialStock` before any), less the units of
//!   every reservation committed *after* that count was written. A count always folds in the
//!   commits before it, because one writer writes both in order.
//!
//! A replay reads the last message of each subject in stream order, so a reservation may first
//! appear already Committed: it then shipped units after the count before it, and reserves
//! nothing. `effect` covers both that and a live transition.
use uuid::Uuid;

use super::{Reservation, ReservationStatus, Stock, is_low};

/// A product's stock as the cache keeps it: `on_hand` is the last count (`None`: none written
/// yet, the product's initial stock counts), `shipped` the units committed since it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StockRow {
    pub on_hand: Option<i64>,
    pub shipped: i64,
    pub reserved: i64,
}

impl StockRow {
    /// The stock of a product created with `initial_stock` and alerting below `threshold`.
    pub fn stock(&self, initial_stock: i64, threshold: i64) -> Stock {
        let on_hand = self.on_hand.unwrap_or(initial_stock) - self.shipped;
        Stock {
            on_hand,
            reserved: self.reserved,
            low: is_low(on_hand - self.reserved, threshold),
        }
    }

    /// The row that records `stock` as decided by the writer (a count that folds in everything).
    pub fn of(stock: &Stock) -> Self {
        Self {
            on_hand: Some(stock.on_hand),
            shipped: 0,
            reserved: stock.reserved,
        }
    }

    /// A count message: on hand is `count` from here on.
    pub fn counted(self, count: i64) -> Self {
        Self {
            on_hand: Some(count),
            shipped: 0,
            ..self
        }
    }
}

/// What a reservation message does to one product: units reserved (±) and units shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effect {
    pub product_id: Uuid,
    pub reserved: i64,
    pub shipped: i64,
}

/// The effect of a reservation moving from `old` (as last seen; `None`: never seen) to `new`.
pub fn effect(old: Option<&Reservation>, new: &Reservation) -> Vec<Effect> {
    let holds = |r: Option<&Reservation>| r.is_some_and(|r| r.status == ReservationStatus::Active);
    let shipped =
        |r: Option<&Reservation>| r.is_some_and(|r| r.status == ReservationStatus::Committed);
    let mut effects: std::collections::BTreeMap<Uuid, Effect> = Default::default();
    let mut add = |items: &[(Uuid, i64)], reserved: i64, shipped: i64| {
        for (id, qty) in items {
            let e = effects.entry(*id).or_insert(Effect {
                product_id: *id,
                reserved: 0,
                shipped: 0,
            });
            e.reserved += reserved * qty;
            e.shipped += shipped * qty;
        }
    };
    if holds(old) {
        add(&old.expect("held").items, -1, 0);
    }
    if holds(Some(new)) {
        add(&new.items, 1, 0);
    }
    if shipped(Some(new)) && !shipped(old) {
        add(&new.items, 0, 1);
    }
    effects
        .into_values()
        .filter(|e| e.reserved != 0 || e.shipped != 0)
        .collect()
}
