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

/// The stock ledger's subjects (stream `LEDGER`, one message per subject): product-svc's stock
/// writer lease, its liveness, each product's on-hand count, each order's reservation.
pub const LEDGER_LEASE: &str = "eshop.ledger.lease";
pub const LEDGER_ALIVE: &str = "eshop.ledger.alive";
pub const LEDGER_STOCK_PREFIX: &str = "eshop.ledger.stock.";
pub const LEDGER_RESERVATION_PREFIX: &str = "eshop.ledger.reservations.";

pub fn ledger_stock_subject(product_id: Uuid) -> String {
    format!("{LEDGER_STOCK_PREFIX}{product_id}")
}

pub fn ledger_reservation_subject(order_id: Uuid) -> String {
    format!("{LEDGER_RESERVATION_PREFIX}{order_id}")
}

/// The default subject prefix of order events (`<prefix>.<orderId>`); an edge site uses its own.
pub const ORDER_SUBJECT_PREFIX: &str = "eshop.orders";

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
    /// Since `PRODUCTS` became the catalog's record these travel too (absent in older events:
    /// defaults). `initialStock` is the on-hand count the product was created with; the stock
    /// ledger (`LEDGER`) says how it moved since.
    #[serde(default)]
    pub low_stock_threshold: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub initial_stock: i64,
}

impl ProductEvent {
    /// Decodes a product event stored on `subject`, refusing what a reader must skip as poison:
    /// an unknown schema version, a product id other than the subject's, version 0.
    pub fn decode(subject: &str, payload: &[u8]) -> Result<Self, String> {
        let event: Self =
            serde_json::from_slice(payload).map_err(|e| format!("undecodable: {e}"))?;
        let schema = (event.schema_version, SCHEMA_VERSION);
        check_stored(
            subject,
            schema,
            ("productId", event.product_id),
            event.version,
        )?;
        Ok(event)
    }
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

/// Order events carry their own schema version: since version 2 every event is the order's
/// **full state** (the `ORDERS` stream is the system of record and keeps the latest per order).
/// Shipping added a status, two event types and `commitOwed` (defaulted): additive, still 2.
pub const ORDER_SCHEMA_VERSION: u32 = 2;

/// The transition that produced an order state. The body is always the whole order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEventType {
    /// Accepted and priced, stock not yet reserved (status Pending, version 1).
    OrderPlaced,
    OrderConfirmed,
    OrderRejected,
    /// Cancelled; `releaseOwed` says product-svc still has to release its reservation.
    OrderCancelled,
    /// A cancelled order's reservation was released (`releaseOwed` is now false).
    OrderStockReleased,
    /// Confirmed → Shipped; `commitOwed` says product-svc still has to commit the reservation.
    OrderShipped,
    /// A shipped order's reservation became an on-hand decrement (`commitOwed` is now false).
    OrderStockCommitted,
}

impl OrderEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderPlaced => "OrderPlaced",
            Self::OrderConfirmed => "OrderConfirmed",
            Self::OrderRejected => "OrderRejected",
            Self::OrderCancelled => "OrderCancelled",
            Self::OrderStockReleased => "OrderStockReleased",
            Self::OrderShipped => "OrderShipped",
            Self::OrderStockCommitted => "OrderStockCommitted",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Rejected,
    Cancelled,
    Shipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderEventItem {
    pub product_id: Uuid,
    pub product_name: String,
    pub quantity: u32,
    #[serde(with = "rust_decimal::serde::str")]
    pub unit_price: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub line_total: Decimal,
}

/// One state of an order, published on `<prefix>.<orderId>` with a CAS on the subject's last
/// sequence, so `version` grows by exactly one per transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderEvent {
    pub event_id: Uuid,
    pub event_type: OrderEventType,
    pub schema_version: u32,
    pub occurred_at: DateTime<Utc>,
    pub order_id: Uuid,
    pub version: u64,
    pub status: OrderStatus,
    pub customer_id: Uuid,
    pub customer_email: String,
    pub items: Vec<OrderEventItem>,
    #[serde(with = "rust_decimal::serde::str")]
    pub total_amount: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub failed_product_ids: Vec<Uuid>,
    /// product-svc still holds (or may hold) a reservation for this cancelled order.
    #[serde(default)]
    pub release_owed: bool,
    /// product-svc has not yet turned this shipped order's reservation into an on-hand decrement.
    #[serde(default)]
    pub commit_owed: bool,
    /// A digest of the create request, when it carried an Idempotency-Key: a retry with the same
    /// key and another body is refused (422).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_fingerprint: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl OrderEvent {
    /// Decodes an order state stored on `subject` (`<prefix>.<orderId>`; a site's orders at a
    /// hub have one more token before the id), refusing what is poison. Every reader of
    /// `ORDERS` (order-svc's view, reads, watches and webhooks; product-svc's follower, audit
    /// and stock writer) decodes with this, so they agree on which messages are an order's
    /// states.
    pub fn decode(subject: &str, payload: &[u8]) -> Result<Self, String> {
        let event: Self =
            serde_json::from_slice(payload).map_err(|e| format!("undecodable: {e}"))?;
        event.check(subject)?;
        Ok(event)
    }

    /// Why this state cannot be an order's state on `subject`, if it cannot.
    pub fn check(&self, subject: &str) -> Result<(), String> {
        let schema = (self.schema_version, ORDER_SCHEMA_VERSION);
        check_stored(subject, schema, ("orderId", self.order_id), self.version)
    }
}

/// What every stored state must be: of the schema this build reads (`schema`: found,
/// expected), of the entity its subject ends with (`id`: its field name and value), and
/// versioned from 1.
fn check_stored(
    subject: &str,
    (found, expected): (u32, u32),
    (field, id): (&str, Uuid),
    version: u64,
) -> Result<(), String> {
    if found != expected {
        return Err(format!("unsupported schemaVersion {found}"));
    }
    let subject_id = subject
        .rsplit('.')
        .next()
        .and_then(|t| Uuid::parse_str(t).ok());
    if subject_id != Some(id) {
        return Err(format!("{field} does not match the subject"));
    }
    if version == 0 {
        return Err("version must be at least 1".into());
    }
    Ok(())
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
            low_stock_threshold: 5,
            created_at: None,
            initial_stock: 10,
        };
        let json: serde_json::Value = serde_json::to_value(&event).unwrap();
        assert_eq!(json["eventType"], "ProductCreated");
        assert_eq!(json["price"], "12.50");
        assert_eq!(json["schemaVersion"], 1);
        assert!(json.get("productId").is_some());
        let back: ProductEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn an_order_state_is_decoded_only_on_its_own_subject_with_a_known_schema_and_a_version() {
        let id = Uuid::now_v7();
        let now = Utc::now();
        let event = OrderEvent {
            event_id: Uuid::now_v7(),
            event_type: OrderEventType::OrderConfirmed,
            schema_version: ORDER_SCHEMA_VERSION,
            occurred_at: now,
            order_id: id,
            version: 1,
            status: OrderStatus::Confirmed,
            customer_id: Uuid::new_v4(),
            customer_email: "ann@example.com".into(),
            items: vec![],
            total_amount: "0".parse().unwrap(),
            reason: None,
            failed_product_ids: vec![],
            release_owed: false,
            commit_owed: false,
            request_fingerprint: None,
            created_at: now,
            updated_at: now,
        };
        let subject = format!("{ORDER_SUBJECT_PREFIX}.{id}");
        let site_subject = format!("eshop.site-1.orders.{id}");
        let json = |e: &OrderEvent| serde_json::to_vec(e).unwrap();
        assert_eq!(
            OrderEvent::decode(&subject, &json(&event)),
            Ok(event.clone())
        );
        assert_eq!(
            OrderEvent::decode(&site_subject, &json(&event)),
            Ok(event.clone())
        );
        let refused =
            |subject: &str, payload: &[u8]| OrderEvent::decode(subject, payload).unwrap_err();
        assert!(refused(&subject, b"{not json").starts_with("undecodable"));
        let other = format!("{ORDER_SUBJECT_PREFIX}.{}", Uuid::now_v7());
        assert_eq!(
            refused(&other, &json(&event)),
            "orderId does not match the subject"
        );
        assert_eq!(
            refused(ORDER_SUBJECT_PREFIX, &json(&event)),
            "orderId does not match the subject"
        );
        let old = OrderEvent {
            schema_version: 1,
            ..event.clone()
        };
        assert_eq!(
            refused(&subject, &json(&old)),
            "unsupported schemaVersion 1"
        );
        let unversioned = OrderEvent {
            version: 0,
            ..event
        };
        assert_eq!(
            refused(&subject, &json(&unversioned)),
            "version must be at least 1"
        );
    }
}
