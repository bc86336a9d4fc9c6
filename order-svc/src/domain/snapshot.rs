//! The product snapshot row and its version guard: what order-svc keeps of each catalog entry,
//! and the rule that an older or duplicate event never overwrites a newer row.
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use shared::events::ProductEvent;

/// order-svc's local copy of one catalog entry, kept by projecting product events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductView {
    pub name: String,
    pub description: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub price: Decimal,
    pub category: String,
    pub version: u64,
    pub deleted: bool,
    pub updated_at: DateTime<Utc>,
}

impl From<&ProductEvent> for ProductView {
    fn from(e: &ProductEvent) -> Self {
        Self {
            name: e.name.clone(),
            description: e.description.clone(),
            price: e.price,
            category: e.category.clone(),
            version: e.version,
            deleted: e.deleted,
            updated_at: e.occurred_at,
        }
    }
}

/// Apply only a strictly newer version: redelivered, duplicated and reordered events are no-ops.
/// (The original compared wall-clock timestamps and threw real updates away.)
pub fn should_apply(current_version: Option<u64>, incoming_version: u64) -> bool {
    current_version.is_none_or(|current| incoming_version > current)
}
