//! A create request from its draft to a priced order: field validation (400), the rules the schema
//! cannot state (422), and pricing from the snapshot.
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use shared::fields::FieldErrors;
use uuid::Uuid;

use super::{Order, OrderItem, OrderStatus, ProductView};

/// Namespace of request fingerprints (a digest, so the event need not carry the whole request).
const FINGERPRINT_NAMESPACE: Uuid = Uuid::from_u128(0x0e7c_55d1_93b8_4f62_a4c0_17d9_3e2b_8a41);

pub const MAX_ITEMS: usize = 100;
/// Most units of one product in one order (after merging its lines).
pub const MAX_ORDER_QUANTITY: u32 = 10_000;
pub const MAX_EMAIL: usize = 320;
pub const MAX_REASON: usize = 500;

/// A create-order request as received, before any rule: every field optional, so that a
/// missing one is reported by name with the others.
#[derive(Debug, Default, Clone)]
pub struct OrderDraft {
    pub customer_id: Option<String>,
    pub customer_email: Option<String>,
    pub items: Option<Vec<LineDraft>>,
}

/// One line of a draft.
#[derive(Debug, Default, Clone)]
pub struct LineDraft {
    pub product_id: Option<String>,
    pub quantity: Option<i64>,
}

/// Why a create request is refused before pricing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not what the schema allows (400).
    Invalid(FieldErrors),
    /// Well-formed, but against a rule the schema cannot state (422): the merged quantity of one
    /// product over the limit.
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

pub fn validate_create(input: OrderDraft) -> Result<OrderRequest, Refused> {
    let mut errors = FieldErrors::new();
    let customer_id = uuid_field("customerId", input.customer_id.as_deref(), &mut errors);
    let email = email_field(input.customer_email, &mut errors);
    let merged = items_field(input.items, &mut errors);
    errors.into_result().map_err(Refused::Invalid)?;
    let mut over = FieldErrors::new();
    for (id, q) in &merged {
        if *q > u64::from(MAX_ORDER_QUANTITY) {
            over.add(
                "items",
                format!("the total quantity of product {id} must be at most {MAX_ORDER_QUANTITY}."),
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

/// A required id field (`field` names it in the errors): a UUID other than the nil UUID, which
/// names nobody (the original requires a non-empty `CustomerId`).
fn uuid_field(field: &str, value: Option<&str>, errors: &mut FieldErrors) -> Option<Uuid> {
    let Some(raw) = value else {
        errors.add(field, format!("{field} is required."));
        return None;
    };
    optional_id(field, Some(raw), errors)
}

/// An optional id field (a body's, a query's): absent, or a UUID other than the nil UUID (else
/// an error naming `field`).
pub fn optional_id(field: &str, value: Option<&str>, errors: &mut FieldErrors) -> Option<Uuid> {
    let id = parse_id(value?);
    if id.is_none() {
        errors.add(field, format!("{field} must be a non-nil UUID."));
    }
    id
}

/// An id given in a body or a query string: a hyphenated UUID (the documented `pattern`), not
/// the nil one.
pub fn parse_id(raw: &str) -> Option<Uuid> {
    if raw.len() != 36 {
        return None;
    }
    Uuid::parse_str(raw).ok().filter(|id| !id.is_nil())
}

fn email_field(value: Option<String>, errors: &mut FieldErrors) -> Option<String> {
    let Some(e) = value else {
        errors.add("customerEmail", "customerEmail is required.");
        return None;
    };
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

/// The items, each checked and keyed by its index; lines of the same product merged.
fn items_field(value: Option<Vec<LineDraft>>, errors: &mut FieldErrors) -> BTreeMap<Uuid, u64> {
    let mut merged: BTreeMap<Uuid, u64> = BTreeMap::new();
    let items = match value {
        None => {
            errors.add("items", "items is required.");
            return merged;
        }
        Some(items) if items.is_empty() => {
            errors.add("items", "items must contain at least one item.");
            return merged;
        }
        Some(items) if items.len() > MAX_ITEMS => {
            errors.add(
                "items",
                format!("items must contain at most {MAX_ITEMS} items."),
            );
            return merged;
        }
        Some(items) => items,
    };
    for (i, item) in items.into_iter().enumerate() {
        let id = uuid_field(
            &format!("items[{i}].productId"),
            item.product_id.as_deref(),
            errors,
        );
        let qty = match item.quantity {
            None => {
                errors.add(format!("items[{i}].quantity"), "quantity is required.");
                None
            }
            Some(q) if (1..=i64::from(MAX_ORDER_QUANTITY)).contains(&q) => Some(q as u64),
            Some(_) => {
                errors.add(
                    format!("items[{i}].quantity"),
                    format!("quantity must be between 1 and {MAX_ORDER_QUANTITY}."),
                );
                None
            }
        };
        if let (Some(id), Some(q)) = (id, qty) {
            *merged.entry(id).or_default() += q;
        }
    }
    merged
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
