//! Stock arithmetic: available = on hand − reserved, on hand never below reserved, and the
//! low-stock edge (one StockLow per crossing).
use serde::{Deserialize, Serialize};

use super::MAX_QUANTITY;

/// Inventory of one product. Available = on hand − reserved; on hand never drops below reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stock {
    pub on_hand: i64,
    pub reserved: i64,
    /// Whether available stock is currently below the threshold (for the edge trigger).
    pub low: bool,
}

impl Stock {
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

/// Low means available stock strictly below the threshold; a threshold of 0 never warns.
pub fn is_low(available: i64, threshold: i64) -> bool {
    available < threshold
}

/// Recomputes the low flag; returns true when the stock has just crossed below the threshold
/// (the edge that publishes one StockLow event).
pub fn update_low_flag(stock: &mut Stock, threshold: i64) -> bool {
    let low = is_low(stock.available(), threshold);
    let crossed = low && !stock.low;
    stock.low = low;
    crossed
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StockError {
    #[error(
        "on-hand stock cannot drop below the {reserved} units reserved (requested on-hand {requested})"
    )]
    BelowReserved { requested: i64, reserved: i64 },
    #[error("on-hand stock cannot exceed {MAX_QUANTITY}")]
    TooLarge,
}

/// Applies a restock (+) or write-off (−).
pub fn adjust(stock: Stock, delta: i64) -> Result<Stock, StockError> {
    let on_hand = stock.on_hand.saturating_add(delta);
    if on_hand > MAX_QUANTITY {
        return Err(StockError::TooLarge);
    }
    if on_hand < stock.reserved || on_hand < 0 {
        return Err(StockError::BelowReserved {
            requested: on_hand,
            reserved: stock.reserved,
        });
    }
    Ok(Stock { on_hand, ..stock })
}
