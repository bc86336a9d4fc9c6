//! A product's catalog state and its changes: creation, an update that bumps the version only
//! when something changed, discontinuation, and the full-state event each change publishes (the
//! event is the record: `PRODUCTS` holds it, `product_from_event` reads it back).
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use shared::events::{ProductEvent, ProductEventType, SCHEMA_VERSION};
use uuid::Uuid;

use super::{CatalogFields, NewProduct, Stock};

/// Catalog state of one product. `version` starts at 1 and grows by one on every catalog change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub price: Decimal,
    pub category: String,
    pub low_stock_threshold: i64,
    pub version: u64,
    pub deleted: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// On-hand stock at creation; the stock ledger records how it moved since.
    #[serde(default)]
    pub initial_stock: i64,
}

pub fn new_product(id: Uuid, input: &NewProduct, now: DateTime<Utc>) -> (Product, Stock) {
    let f = &input.fields;
    let product = Product {
        id,
        name: f.name.clone(),
        description: f.description.clone(),
        price: f.price,
        category: f.category.clone(),
        low_stock_threshold: f.low_stock_threshold,
        version: 1,
        deleted: false,
        created_at: now,
        updated_at: now,
        initial_stock: input.stock_quantity,
    };
    let stock = Stock {
        on_hand: input.stock_quantity,
        reserved: 0,
        low: false,
    };
    (product, stock)
}

/// Applies an update; `None` when nothing changed (no new version, no event).
pub fn apply_update(
    current: &Product,
    fields: &CatalogFields,
    now: DateTime<Utc>,
) -> Option<Product> {
    let unchanged = current.name == fields.name
        && current.description == fields.description
        && current.price == fields.price
        && current.category == fields.category
        && current.low_stock_threshold == fields.low_stock_threshold;
    if unchanged {
        return None;
    }
    Some(Product {
        name: fields.name.clone(),
        description: fields.description.clone(),
        price: fields.price,
        category: fields.category.clone(),
        low_stock_threshold: fields.low_stock_threshold,
        version: current.version + 1,
        updated_at: now,
        ..current.clone()
    })
}

/// Discontinues a product: its next version, marked deleted; `None` when it already is (no new
/// version, no event: discontinuing is idempotent).
pub fn discontinue(current: &Product, now: DateTime<Utc>) -> Option<Product> {
    (!current.deleted).then(|| Product {
        deleted: true,
        version: current.version + 1,
        updated_at: now,
        ..current.clone()
    })
}

pub fn event_for(
    product: &Product,
    event_type: ProductEventType,
    now: DateTime<Utc>,
) -> ProductEvent {
    ProductEvent {
        event_id: Uuid::now_v7(),
        event_type,
        schema_version: SCHEMA_VERSION,
        occurred_at: now,
        product_id: product.id,
        version: product.version,
        name: product.name.clone(),
        description: product.description.clone(),
        price: product.price,
        category: product.category.clone(),
        deleted: product.deleted,
        low_stock_threshold: product.low_stock_threshold,
        created_at: Some(product.created_at),
        initial_stock: product.initial_stock,
    }
}

/// The StockLow signal of `product` at `stock` (published once per crossing).
pub fn stock_low_event(
    product: &Product,
    stock: &Stock,
    now: DateTime<Utc>,
) -> shared::events::StockLowEvent {
    shared::events::StockLowEvent {
        event_id: Uuid::now_v7(),
        event_type: shared::events::STOCK_LOW.into(),
        schema_version: SCHEMA_VERSION,
        occurred_at: now,
        product_id: product.id,
        available_quantity: stock.available(),
        low_stock_threshold: product.low_stock_threshold,
    }
}

/// The product a stored event describes (an event from before the record carried every field
/// gets defaults: created at its own time, no threshold, no initial stock).
pub fn product_from_event(event: &ProductEvent) -> Product {
    Product {
        id: event.product_id,
        name: event.name.clone(),
        description: event.description.clone(),
        price: event.price,
        category: event.category.clone(),
        low_stock_threshold: event.low_stock_threshold,
        version: event.version,
        deleted: event.deleted,
        created_at: event.created_at.unwrap_or(event.occurred_at),
        updated_at: event.occurred_at,
        initial_stock: event.initial_stock,
    }
}
