//! The event contract on NATS. Changes are additive only; `schemaVersion` says which shape a body has.
//!
//! Product events carry the **full** catalog state of one product and its per-product `version`,
//! never a delta: the `PRODUCTS` stream keeps only the latest message per product, so a consumer
//! that skips intermediate events (or replays from scratch) still ends with the right state.
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Header carrying the event id; JetStream dedupes on it inside the stream's duplicate window.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
/// Header naming the event type, so consumers can route without parsing the body.
pub const HEADER_EVENT_TYPE: &str = "Eshop-Event-Type";
/// Header carrying the correlation id of the request that caused the event.
pub const HEADER_CORRELATION_ID: &str = "X-Correlation-ID";

pub const SCHEMA_VERSION: u32 = 1;

pub fn product_subject(product_id: Uuid) -> String {
    format!("eshop.products.{product_id}")
}

pub fn stock_subject(product_id: Uuid) -> String {
    format!("eshop.stock.{product_id}")
}

pub fn order_subject(order_id: Uuid) -> String {
    format!("eshop.orders.{order_id}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProductEventType {
    ProductCreated,
    ProductUpdated,
    ProductDeleted,
}

impl ProductEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProductCreated => "ProductCreated",
            Self::ProductUpdated => "ProductUpdated",
            Self::ProductDeleted => "ProductDeleted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductEvent {
    pub event_id: Uuid,
    pub event_type: ProductEventType,
    pub schema_version: u32,
    pub occurred_at: DateTime<Utc>,
    pub product_id: Uuid,
    pub version: u64,
    pub name: String,
    pub description: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub price: Decimal,
    pub category: String,
    pub deleted: bool,
}

/// Published (edge-triggered) when a product's available stock drops to or below its threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockLowEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub occurred_at: DateTime<Utc>,
    pub product_id: Uuid,
    pub available_quantity: i64,
    pub low_stock_threshold: i64,
}

pub const STOCK_LOW: &str = "StockLow";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEventType {
    OrderConfirmed,
    OrderRejected,
    OrderCancelled,
}

impl OrderEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderConfirmed => "OrderConfirmed",
            Self::OrderRejected => "OrderRejected",
            Self::OrderCancelled => "OrderCancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderEventItem {
    pub product_id: Uuid,
    pub product_name: String,
    pub quantity: u32,
    #[serde(with = "rust_decimal::serde::str")]
    pub unit_price: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderEvent {
    pub event_id: Uuid,
    pub event_type: OrderEventType,
    pub schema_version: u32,
    pub occurred_at: DateTime<Utc>,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub customer_email: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub total_amount: Decimal,
    /// OrderConfirmed only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<OrderEventItem>>,
    /// OrderRejected and OrderCancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// OrderRejected only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_product_ids: Option<Vec<Uuid>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_event_json_is_camel_case_with_price_as_string() {
        let event = ProductEvent {
            event_id: Uuid::now_v7(),
            event_type: ProductEventType::ProductCreated,
            schema_version: SCHEMA_VERSION,
            occurred_at: Utc::now(),
            product_id: Uuid::new_v4(),
            version: 1,
            name: "Lamp".into(),
            description: "A lamp".into(),
            price: "12.50".parse().unwrap(),
            category: "Home".into(),
            deleted: false,
        };
        let json: serde_json::Value = serde_json::to_value(&event).unwrap();
        assert_eq!(json["eventType"], "ProductCreated");
        assert_eq!(json["price"], "12.50");
        assert_eq!(json["schemaVersion"], 1);
        assert!(json.get("productId").is_some());
        let back: ProductEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}
