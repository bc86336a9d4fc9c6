//! Order rules, free of I/O: request validation, pricing from the snapshot, the order state
//! machine, and the version guard of the product snapshot.
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use shared::{
    events::{ORDER_SCHEMA_VERSION, OrderEvent, OrderEventType, ProductEvent},
    problem::FieldErrors,
};
use utoipa::ToSchema;
use uuid::Uuid;

pub const MAX_ITEMS: usize = 100;
pub const MAX_QUANTITY: u32 = 10_000;
pub const MAX_EMAIL: usize = 320;
pub const MAX_REASON: usize = 500;

// ---------------------------------------------------------------------------------------------
// Product snapshot and its version guard

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

// ---------------------------------------------------------------------------------------------
// Orders

pub use shared::events::OrderStatus;

/// Order ids of keyed requests are derived from (customer, Idempotency-Key), so the first
/// publish of an order (expected subject sequence 0) is the key's global claim on every instance.
const ORDER_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_4a9e_2c57_4d0b_9f3e_80a1_c2d4_e5f6);
/// Namespace of request fingerprints (a digest, so the event need not carry the whole request).
const FINGERPRINT_NAMESPACE: Uuid = Uuid::from_u128(0x0e7c_55d1_93b8_4f62_a4c0_17d9_3e2b_8a41);

/// The id of a new order: derived from the customer and the Idempotency-Key when there is one
/// (keys are scoped per customer), otherwise a fresh time-ordered id.
pub fn order_id(customer_id: Uuid, idempotency_key: Option<&str>) -> Uuid {
    match idempotency_key {
        Some(key) => {
            let mut name = customer_id.as_bytes().to_vec();
            name.extend_from_slice(key.as_bytes());
            Uuid::new_v5(&ORDER_ID_NAMESPACE, &name)
        }
        None => Uuid::now_v7(),
    }
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

/// Why an order event on the stream cannot be applied (it is poison), or `Ok`.
pub fn check_order_event(e: &OrderEvent, subject_id: Option<Uuid>) -> Result<(), String> {
    if e.schema_version != ORDER_SCHEMA_VERSION {
        return Err(format!("unsupported schemaVersion {}", e.schema_version));
    }
    if subject_id != Some(e.order_id) {
        return Err("orderId does not match the subject".into());
    }
    if e.version == 0 {
        return Err("version must be at least 1".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Create-order validation and pricing

/// A create-order request as received: every field optional, so that a missing one is reported
/// by name with the others (the schema attributes are what the OpenAPI document states).
#[derive(Debug, Default, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = CreateOrder)]
pub struct CreateOrderInput {
    #[schema(value_type = Uuid, required = true)]
    pub customer_id: Option<String>,
    #[schema(value_type = String, required = true, format = Email, max_length = 320)]
    pub customer_email: Option<String>,
    /// Lines of the same product are merged; their total must stay within 10000 (else 422).
    #[schema(value_type = Vec<ItemInput>, required = true, min_items = 1, max_items = 100)]
    pub items: Option<Vec<ItemInput>>,
}

#[derive(Debug, Default, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = OrderLine)]
pub struct ItemInput {
    #[schema(value_type = Uuid, required = true)]
    pub product_id: Option<String>,
    #[schema(value_type = u32, required = true, minimum = 1, maximum = 10000)]
    #[serde(default, deserialize_with = "shared::problem::json_integer")]
    pub quantity: Option<i64>,
}

/// Why a create request is refused before pricing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not what the schema allows (400).
    Invalid(FieldErrors),
    /// Well-formed, but against a rule the schema cannot state (422): the merged quantity of one
    /// product over the limit, or the nil UUID as a product id.
    Unprocessable(FieldErrors),
}

/// A validated request: duplicate product ids merged (quantities summed), sorted by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderRequest {
    pub customer_id: Uuid,
    pub customer_email: String,
    pub items: Vec<(Uuid, u32)>,
}

impl OrderRequest {
    /// A digest of the request, compared when an Idempotency-Key is reused.
    pub fn fingerprint(&self) -> String {
        let text = serde_json::to_vec(self).expect("serializes");
        Uuid::new_v5(&FINGERPRINT_NAMESPACE, &text).to_string()
    }
}

pub fn validate_create(input: CreateOrderInput) -> Result<OrderRequest, Refused> {
    let mut errors = FieldErrors::new();
    let customer_id = match input.customer_id.as_deref().map(Uuid::parse_str) {
        None => {
            errors.add("customerId", "customerId is required.");
            None
        }
        Some(Ok(id)) => Some(id),
        Some(_) => {
            errors.add("customerId", "customerId must be a UUID.");
            None
        }
    };
    let email = match input.customer_email {
        None => {
            errors.add("customerEmail", "customerEmail is required.");
            None
        }
        Some(e) => {
            if e.chars().count() > MAX_EMAIL {
                errors.add(
                    "customerEmail",
                    format!("customerEmail must be at most {MAX_EMAIL} characters."),
                );
                None
            } else if !is_email(&e) {
                errors.add(
                    "customerEmail",
                    "customerEmail must be a valid email address.",
                );
                None
            } else {
                Some(e)
            }
        }
    };
    let mut merged: BTreeMap<Uuid, u64> = BTreeMap::new();
    match input.items {
        None => errors.add("items", "items is required."),
        Some(items) if items.is_empty() => {
            errors.add("items", "items must contain at least one item.")
        }
        Some(items) if items.len() > MAX_ITEMS => errors.add(
            "items",
            format!("items must contain at most {MAX_ITEMS} items."),
        ),
        Some(items) => {
            for (i, item) in items.into_iter().enumerate() {
                let id = match item.product_id.as_deref().map(Uuid::parse_str) {
                    None => {
                        errors.add(format!("items[{i}].productId"), "productId is required.");
                        None
                    }
                    Some(Ok(id)) => Some(id),
                    Some(_) => {
                        errors.add(format!("items[{i}].productId"), "productId must be a UUID.");
                        None
                    }
                };
                let qty = match item.quantity {
                    None => {
                        errors.add(format!("items[{i}].quantity"), "quantity is required.");
                        None
                    }
                    Some(q) if (1..=i64::from(MAX_QUANTITY)).contains(&q) => Some(q as u64),
                    Some(_) => {
                        errors.add(
                            format!("items[{i}].quantity"),
                            format!("quantity must be between 1 and {MAX_QUANTITY}."),
                        );
                        None
                    }
                };
                if let (Some(id), Some(q)) = (id, qty) {
                    *merged.entry(id).or_default() += q;
                }
            }
        }
    }
    errors.into_result().map_err(Refused::Invalid)?;
    let mut over = FieldErrors::new();
    if merged.contains_key(&Uuid::nil()) {
        over.add("items", "the nil UUID names no product.");
    }
    for (id, q) in &merged {
        if *q > u64::from(MAX_QUANTITY) {
            over.add(
                "items",
                format!("the total quantity of product {id} must be at most {MAX_QUANTITY}."),
            );
        }
    }
    over.into_result().map_err(Refused::Unprocessable)?;
    Ok(OrderRequest {
        customer_id: customer_id.expect("validated"),
        customer_email: email.expect("validated"),
        items: merged.into_iter().map(|(id, q)| (id, q as u32)).collect(),
    })
}

/// Pragmatic address check: one `@`, non-empty local part, a dotted domain, no spaces or controls.
pub fn is_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
}

pub fn validate_reason(reason: Option<String>) -> Result<String, FieldErrors> {
    let mut errors = FieldErrors::new();
    let reason = reason.unwrap_or_default();
    if reason.is_empty() {
        errors.add("reason", "reason is required.");
    } else if reason.chars().count() > MAX_REASON {
        errors.add(
            "reason",
            format!("reason must be at most {MAX_REASON} characters."),
        );
    }
    errors.into_result()?;
    Ok(reason)
}

/// Builds a Pending order (version 1) priced from the catalog (name and unit price captured on
/// each item). Unknown or discontinued products are returned as the error.
pub fn price_order(
    id: Uuid,
    request: &OrderRequest,
    catalog: &HashMap<Uuid, ProductView>,
    now: DateTime<Utc>,
    request_fingerprint: Option<String>,
) -> Result<Order, Vec<Uuid>> {
    let unknown: Vec<Uuid> = request
        .items
        .iter()
        .filter(|(pid, _)| catalog.get(pid).is_none_or(|p| p.deleted))
        .map(|(pid, _)| *pid)
        .collect();
    if !unknown.is_empty() {
        return Err(unknown);
    }
    let items: Vec<OrderItem> = request
        .items
        .iter()
        .map(|(pid, qty)| {
            let p = &catalog[pid];
            OrderItem {
                product_id: *pid,
                product_name: p.name.clone(),
                quantity: *qty,
                unit_price: p.price,
                line_total: p.price * Decimal::from(*qty),
            }
        })
        .collect();
    let total_amount = items.iter().map(|i| i.line_total).sum();
    Ok(Order {
        id,
        version: 1,
        customer_id: request.customer_id,
        customer_email: request.customer_email.clone(),
        status: OrderStatus::Pending,
        total_amount,
        reason: None,
        failed_product_ids: Vec::new(),
        items,
        created_at: now,
        updated_at: now,
        release_owed: false,
        commit_owed: false,
        request_fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(version: u64, price: &str) -> ProductView {
        ProductView {
            name: "Lamp".into(),
            description: String::new(),
            price: price.parse().unwrap(),
            category: "Home".into(),
            version,
            deleted: false,
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn version_guard_new_newer_older_duplicate_deleted() {
        assert!(should_apply(None, 1), "new product");
        assert!(should_apply(Some(3), 4), "newer");
        assert!(!should_apply(Some(3), 2), "older");
        assert!(!should_apply(Some(3), 3), "duplicate");
        // A delete is version 5: an older update (4) cannot resurrect the product.
        assert!(!should_apply(Some(5), 4), "older than the delete");
        assert!(should_apply(Some(5), 6));
    }

    #[test]
    fn state_machine() {
        use OrderStatus::*;
        for (from, to, ok) in [
            (Pending, Confirmed, true),
            (Pending, Rejected, true),
            (Pending, Cancelled, true),
            (Confirmed, Cancelled, true),
            (Confirmed, Rejected, false),
            (Rejected, Confirmed, false),
            (Rejected, Cancelled, false),
            (Cancelled, Cancelled, false),
            (Cancelled, Confirmed, false),
            (Confirmed, Confirmed, false),
            (Confirmed, Shipped, true),
            (Pending, Shipped, false),
            (Rejected, Shipped, false),
            (Cancelled, Shipped, false),
            (Shipped, Shipped, false),
            (Shipped, Cancelled, false),
        ] {
            assert_eq!(can_become(from, to), ok, "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn shipping_owes_a_commit_until_it_is_recorded_and_a_shipped_order_cannot_be_cancelled() {
        let now = Utc::now();
        let a = Uuid::new_v4();
        let catalog = HashMap::from([(a, view(1, "2.50"))]);
        let placed =
            price_order(Uuid::new_v4(), &request(vec![(a, 1)]), &catalog, now, None).unwrap();
        let order = placed.apply(&Change::Confirm, now).unwrap();
        let shipped = order.apply(&Change::Ship, now).unwrap();
        assert_eq!(shipped.status, OrderStatus::Shipped);
        assert!(shipped.commit_owed && !shipped.release_owed);
        assert_eq!(shipped.version, order.version + 1);
        assert!(
            shipped
                .apply(
                    &Change::Cancel {
                        reason: "late".into()
                    },
                    now
                )
                .is_err(),
            "shipped goods cannot be cancelled"
        );
        assert!(
            shipped.apply(&Change::Ship, now).is_err(),
            "a second ship is no transition"
        );
        let committed = shipped.apply(&Change::RecordCommit, now).unwrap();
        assert!(!committed.commit_owed);
        assert_eq!(committed.status, OrderStatus::Shipped);
        assert!(
            committed.apply(&Change::RecordCommit, now).is_err(),
            "recorded once"
        );
        let event = committed.to_event(Change::RecordCommit.event_type());
        assert_eq!(event.event_type, OrderEventType::OrderStockCommitted);
        assert_eq!(
            Order::from_event(&shipped.to_event(OrderEventType::OrderShipped)),
            shipped
        );
        for status in [
            OrderStatus::Pending,
            OrderStatus::Rejected,
            OrderStatus::Cancelled,
        ] {
            let mut other = placed.clone();
            other.status = status;
            assert_eq!(
                other.apply(&Change::Ship, now).unwrap_err().from,
                status,
                "the refusal names the state"
            );
        }
    }

    fn request(items: Vec<(Uuid, u32)>) -> OrderRequest {
        OrderRequest {
            customer_id: Uuid::new_v4(),
            customer_email: "a@b.io".into(),
            items,
        }
    }

    #[test]
    fn pricing_is_exact_and_captures_name_and_price() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let catalog = HashMap::from([(a, view(1, "0.10")), (b, view(1, "149.99"))]);
        let order = price_order(
            Uuid::new_v4(),
            &request(vec![(a, 3), (b, 2)]),
            &catalog,
            Utc::now(),
            None,
        )
        .unwrap();
        assert_eq!(order.total_amount.to_string(), "300.28");
        assert_eq!(order.version, 1);
        assert_eq!(order.items[0].line_total.to_string(), "0.30");
        assert_eq!(order.items[1].product_name, "Lamp");
        assert_eq!(order.status, OrderStatus::Pending);
    }

    #[test]
    fn pricing_reports_unknown_and_deleted_products() {
        let known = Uuid::new_v4();
        let gone = Uuid::new_v4();
        let missing = Uuid::new_v4();
        let mut deleted = view(2, "1.00");
        deleted.deleted = true;
        let catalog = HashMap::from([(known, view(1, "1.00")), (gone, deleted)]);
        let err = price_order(
            Uuid::new_v4(),
            &request(vec![(known, 1), (gone, 1), (missing, 1)]),
            &catalog,
            Utc::now(),
            None,
        )
        .unwrap_err();
        assert_eq!(err.len(), 2);
        assert!(err.contains(&gone) && err.contains(&missing));
    }

    #[test]
    fn validation_merges_duplicates_and_keys_errors() {
        let p = Uuid::new_v4().to_string();
        let ok = validate_create(CreateOrderInput {
            customer_id: Some(Uuid::new_v4().to_string()),
            customer_email: Some("x@y.com".into()),
            items: Some(vec![
                ItemInput {
                    product_id: Some(p.clone()),
                    quantity: Some(2),
                },
                ItemInput {
                    product_id: Some(p.clone()),
                    quantity: Some(3),
                },
            ]),
        })
        .unwrap();
        assert_eq!(ok.items.len(), 1);
        assert_eq!(ok.items[0].1, 5);

        let Err(Refused::Invalid(errors)) = validate_create(CreateOrderInput {
            customer_id: Some("not-a-uuid".into()),
            customer_email: Some("invalid@".into()),
            items: Some(vec![
                ItemInput {
                    product_id: Some("nope".into()),
                    quantity: Some(0),
                },
                ItemInput {
                    product_id: None,
                    quantity: Some(10_001),
                },
            ]),
        }) else {
            panic!("shape errors are Invalid");
        };
        for field in [
            "customerId",
            "customerEmail",
            "items[0].productId",
            "items[0].quantity",
            "items[1].productId",
            "items[1].quantity",
        ] {
            assert!(errors.contains(field), "no error for {field}: {errors:?}");
        }
        let Err(Refused::Invalid(too_many)) = validate_create(CreateOrderInput {
            customer_id: Some(Uuid::new_v4().to_string()),
            customer_email: Some("x@y.com".into()),
            items: Some(
                (0..101)
                    .map(|_| ItemInput {
                        product_id: Some(Uuid::new_v4().to_string()),
                        quantity: Some(1),
                    })
                    .collect(),
            ),
        }) else {
            panic!("101 items is Invalid");
        };
        assert!(too_many.contains("items"));
        // Each line within the schema's limit, their sum over it: a business rule (422).
        let Err(Refused::Unprocessable(merged_too_big)) = validate_create(CreateOrderInput {
            customer_id: Some(Uuid::new_v4().to_string()),
            customer_email: Some("x@y.com".into()),
            items: Some(vec![
                ItemInput {
                    product_id: Some(p.clone()),
                    quantity: Some(6000),
                },
                ItemInput {
                    product_id: Some(p),
                    quantity: Some(6000),
                },
            ]),
        }) else {
            panic!("an over-limit merged quantity is Unprocessable");
        };
        assert!(merged_too_big.contains("items"));
    }

    #[test]
    fn email_rules() {
        for ok in ["a@b.co", "first.last+tag@sub.example.org"] {
            assert!(is_email(ok), "{ok}");
        }
        for bad in [
            "", "a", "@b.co", "a@", "a@b", "a b@c.de", "a@b@c.de", "a@.co", "a@b.co.",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }

    #[test]
    fn transitions_bump_the_version_and_round_trip_as_full_state_events() {
        let a = Uuid::new_v4();
        let catalog = HashMap::from([(a, view(1, "2.50"))]);
        let order = price_order(
            Uuid::new_v4(),
            &request(vec![(a, 2)]),
            &catalog,
            Utc::now(),
            Some("fp".into()),
        )
        .unwrap();
        let confirmed = order.apply(&Change::Confirm, Utc::now()).unwrap();
        assert_eq!(
            (confirmed.status, confirmed.version),
            (OrderStatus::Confirmed, 2)
        );
        let event = confirmed.to_event(Change::Confirm.event_type());
        assert_eq!(event.event_type, OrderEventType::OrderConfirmed);
        assert_eq!(
            Order::from_event(&event),
            confirmed,
            "the event is the whole state"
        );
        assert!(check_order_event(&event, Some(confirmed.id)).is_ok());
        assert!(check_order_event(&event, Some(Uuid::new_v4())).is_err());

        let cancel = Change::Cancel {
            reason: "changed mind".into(),
        };
        let cancelled = confirmed.apply(&cancel, Utc::now()).unwrap();
        assert_eq!(cancelled.reason.as_deref(), Some("changed mind"));
        assert!(cancelled.release_owed, "a cancel owes a release");
        assert!(cancelled.apply(&Change::Confirm, Utc::now()).is_err());
        assert!(
            cancelled.apply(&cancel, Utc::now()).is_err(),
            "cancelled once"
        );
        let released = cancelled.apply(&Change::RecordRelease, Utc::now()).unwrap();
        assert_eq!((released.release_owed, released.version), (false, 4));
        assert!(
            released.apply(&Change::RecordRelease, Utc::now()).is_err(),
            "released once"
        );
        assert!(order.apply(&Change::RecordRelease, Utc::now()).is_err());

        let rejected = order
            .apply(
                &Change::Reject {
                    reason: "short".into(),
                    failed_product_ids: vec![a],
                },
                Utc::now(),
            )
            .unwrap();
        assert_eq!(rejected.failed_product_ids, vec![a]);
        assert_eq!(
            rejected.apply(&cancel, Utc::now()).unwrap_err().from,
            OrderStatus::Rejected
        );
    }

    #[test]
    fn keyed_order_ids_are_per_customer_and_stable() {
        let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(order_id(ann, Some("k")), order_id(ann, Some("k")));
        assert_ne!(order_id(ann, Some("k")), order_id(bob, Some("k")));
        assert_ne!(order_id(ann, Some("k")), order_id(ann, Some("k2")));
        assert_ne!(order_id(ann, None), order_id(ann, None));
        let r = request(vec![(Uuid::new_v4(), 1)]);
        let mut other = r.clone();
        other.items[0].1 = 2;
        assert_eq!(r.fingerprint(), r.clone().fingerprint());
        assert_ne!(r.fingerprint(), other.fingerprint());
    }

    #[test]
    fn reason_rules() {
        assert!(validate_reason(None).is_err());
        assert!(validate_reason(Some(String::new())).is_err());
        assert!(validate_reason(Some("x".repeat(501))).is_err());
        // What the schema allows is accepted as given (minLength 1).
        assert_eq!(validate_reason(Some(" ".into())).unwrap(), " ");
        assert_eq!(validate_reason(Some(" ok ".into())).unwrap(), " ok ");
    }
}
