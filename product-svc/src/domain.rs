//! The product rules, free of I/O: catalog validation, stock arithmetic, the low-stock edge, and
//! the all-or-nothing reservation check. `store.rs` loads state, calls these, and writes results.
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use shared::{
    events::{ProductEvent, ProductEventType, SCHEMA_VERSION},
    problem::FieldErrors,
};
use utoipa::ToSchema;
use uuid::Uuid;

pub const MAX_NAME: usize = 200;
pub const MAX_DESCRIPTION: usize = 2000;
pub const MAX_CATEGORY: usize = 100;
/// Quantities travel as int32 on gRPC; one billion leaves head-room for sums.
pub const MAX_QUANTITY: i64 = 1_000_000_000;

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
}

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

// ---------------------------------------------------------------------------------------------
// Catalog input validation

// The documents state these rules as patterns (ECMA-262, as JSON Schema uses); `text` and
// `validate_price` enforce exactly the same ones, so a schema-valid value is never refused.
// Name and category: no control characters, at least one non-space character.
// Description: no control characters but newline and tab.
// Price: a decimal string, > 0, at most 1000000000, at most two decimals, no leading zeros.

/// Create body as it arrives; every field optional so a missing one is a keyed validation error.
#[derive(Debug, Default, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = CreateProduct)]
pub struct CreateInput {
    #[schema(value_type = String, required = true, max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$")]
    pub name: Option<String>,
    #[schema(value_type = String, required = true, max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*$")]
    pub description: Option<String>,
    /// A decimal string such as "149.99".
    #[schema(value_type = String, required = true, example = "149.99",
        pattern = r"^(?:(?:0|[1-9][0-9]{0,8})\.(?:[0-9][1-9]|[1-9][0-9]?)|[1-9][0-9]{0,8}(?:\.[0-9]{1,2})?|1000000000(?:\.00?)?)$")]
    pub price: Option<serde_json::Value>,
    #[schema(value_type = String, required = true, max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$")]
    pub category: Option<String>,
    #[schema(value_type = u32, required = true, minimum = 0, maximum = 1_000_000_000)]
    #[serde(default, deserialize_with = "shared::problem::json_integer")]
    pub stock_quantity: Option<i64>,
    /// Available stock below this publishes one StockLow; 0 never warns.
    #[schema(value_type = u32, required = true, minimum = 0, maximum = 1_000_000_000)]
    #[serde(default, deserialize_with = "shared::problem::json_integer")]
    pub low_stock_threshold: Option<i64>,
}

/// Update body: the catalog fields and the threshold (stock changes go through `/stock`).
#[derive(Debug, Default, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = UpdateProduct)]
pub struct UpdateInput {
    #[schema(value_type = String, required = true, max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$")]
    pub name: Option<String>,
    #[schema(value_type = String, required = true, max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*$")]
    pub description: Option<String>,
    #[schema(value_type = String, required = true, example = "149.99",
        pattern = r"^(?:(?:0|[1-9][0-9]{0,8})\.(?:[0-9][1-9]|[1-9][0-9]?)|[1-9][0-9]{0,8}(?:\.[0-9]{1,2})?|1000000000(?:\.00?)?)$")]
    pub price: Option<serde_json::Value>,
    #[schema(value_type = String, required = true, max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$")]
    pub category: Option<String>,
    #[schema(value_type = u32, required = true, minimum = 0, maximum = 1_000_000_000)]
    #[serde(default, deserialize_with = "shared::problem::json_integer")]
    pub low_stock_threshold: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CatalogFields {
    pub name: String,
    pub description: String,
    pub price: Decimal,
    pub category: String,
    pub low_stock_threshold: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewProduct {
    pub fields: CatalogFields,
    pub stock_quantity: i64,
}

pub fn validate_create(input: CreateInput) -> Result<NewProduct, FieldErrors> {
    let mut errors = FieldErrors::new();
    let fields = validate_fields(
        input.name,
        input.description,
        input.price,
        input.category,
        input.low_stock_threshold,
        &mut errors,
    );
    let stock_quantity = quantity("stockQuantity", input.stock_quantity, &mut errors);
    errors.into_result()?;
    Ok(NewProduct {
        fields: fields.expect("no errors means every field is present"),
        stock_quantity,
    })
}

pub fn validate_update(input: UpdateInput) -> Result<CatalogFields, FieldErrors> {
    let mut errors = FieldErrors::new();
    let fields = validate_fields(
        input.name,
        input.description,
        input.price,
        input.category,
        input.low_stock_threshold,
        &mut errors,
    );
    errors.into_result()?;
    Ok(fields.expect("no errors means every field is present"))
}

fn validate_fields(
    name: Option<String>,
    description: Option<String>,
    price: Option<serde_json::Value>,
    category: Option<String>,
    low_stock_threshold: Option<i64>,
    errors: &mut FieldErrors,
) -> Option<CatalogFields> {
    let name = text("name", name, true, MAX_NAME, errors);
    let description = text("description", description, false, MAX_DESCRIPTION, errors);
    let category = text("category", category, true, MAX_CATEGORY, errors);
    let price = validate_price(price, errors);
    let threshold = quantity("lowStockThreshold", low_stock_threshold, errors);
    Some(CatalogFields {
        name: name?,
        description: description?,
        price: price?,
        category: category?,
        low_stock_threshold: threshold,
    })
}

fn text(
    field: &str,
    value: Option<String>,
    required: bool,
    max: usize,
    errors: &mut FieldErrors,
) -> Option<String> {
    let Some(value) = value else {
        errors.add(field, format!("{field} is required."));
        return None;
    };
    let trimmed = value.trim();
    if required && trimmed.is_empty() {
        errors.add(field, format!("{field} must not be empty."));
        return None;
    }
    if value.chars().count() > max {
        errors.add(field, format!("{field} must be at most {max} characters."));
        return None;
    }
    if value
        .chars()
        .any(|c| c.is_control() && !(field == "description" && (c == '\n' || c == '\t')))
    {
        errors.add(
            field,
            format!("{field} must not contain control characters."),
        );
        return None;
    }
    Some(trimmed.to_owned())
}

fn quantity(field: &str, value: Option<i64>, errors: &mut FieldErrors) -> i64 {
    match value {
        None => {
            errors.add(field, format!("{field} is required."));
            0
        }
        Some(v) if v < 0 => {
            errors.add(field, format!("{field} must be zero or more."));
            0
        }
        Some(v) if v > MAX_QUANTITY => {
            errors.add(field, format!("{field} must be at most {MAX_QUANTITY}."));
            0
        }
        Some(v) => v,
    }
}

/// Money is a decimal string on the wire ("149.99"): > 0, at most 1000000000, at most two
/// decimals, no sign, exponent, spaces or leading zeros (the documents' pattern, exactly).
pub fn validate_price(
    value: Option<serde_json::Value>,
    errors: &mut FieldErrors,
) -> Option<Decimal> {
    let text = match value {
        None | Some(serde_json::Value::Null) => {
            errors.add("price", "price is required.");
            return None;
        }
        Some(serde_json::Value::String(s)) => s,
        Some(_) => {
            errors.add(
                "price",
                "price must be a decimal string such as \"149.99\".",
            );
            return None;
        }
    };
    let (whole, cents) = text.split_once('.').unwrap_or((&text, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let well_formed = digits(whole)
        && digits(cents)
        && cents.len() <= 2
        && whole.len() <= 10
        && (whole == "0" || !whole.starts_with('0'));
    let Some(price) = well_formed.then(|| text.parse::<Decimal>().ok()).flatten() else {
        errors.add(
            "price",
            "price must be a decimal string such as \"149.99\" (at most two decimals).",
        );
        return None;
    };
    if price <= Decimal::ZERO {
        errors.add("price", "price must be greater than 0.");
        return None;
    }
    if price > Decimal::from(1_000_000_000u64) {
        errors.add("price", "price must be at most 1000000000.");
        return None;
    }
    let mut price = price.normalize();
    price.rescale(2);
    Some(price)
}

// ---------------------------------------------------------------------------------------------
// Catalog changes and their events

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
    }
}

// ---------------------------------------------------------------------------------------------
// Reservations

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

#[cfg(test)]
mod tests {

    #[test]
    fn committing_moves_held_units_out_of_on_hand_and_is_idempotent() {
        let held = Reservation {
            items: vec![(Uuid::new_v4(), 3)],
            status: ReservationStatus::Active,
            failure: None,
            closed_at: None,
        };
        assert_eq!(commit_decision(Some(&held)), Ok(true));
        let committed = Reservation {
            status: ReservationStatus::Committed,
            ..held.clone()
        };
        assert_eq!(
            commit_decision(Some(&committed)),
            Ok(false),
            "a repeat changes nothing"
        );
        assert_eq!(commit_decision(None), Err(CommitRefusal::Unknown));
        for status in [ReservationStatus::Released, ReservationStatus::Failed] {
            let r = Reservation {
                status,
                ..held.clone()
            };
            assert_eq!(
                commit_decision(Some(&r)),
                Err(CommitRefusal::NotHeld(status))
            );
        }
        let before = Stock {
            on_hand: 10,
            reserved: 4,
            low: false,
        };
        let after = commit_units(before, 3);
        assert_eq!((after.on_hand, after.reserved), (7, 1));
        assert_eq!(
            after.available(),
            before.available(),
            "available does not move"
        );
    }

    use super::*;

    fn product(threshold: i64) -> Product {
        let now = Utc::now();
        Product {
            id: Uuid::new_v4(),
            name: "n".into(),
            description: String::new(),
            price: Decimal::ONE,
            category: "c".into(),
            low_stock_threshold: threshold,
            version: 1,
            deleted: false,
            created_at: now,
            updated_at: now,
        }
    }

    fn stock(on_hand: i64, reserved: i64) -> Stock {
        Stock {
            on_hand,
            reserved,
            low: false,
        }
    }

    #[test]
    fn adjust_never_drops_on_hand_below_reserved() {
        assert_eq!(adjust(stock(10, 4), -6).unwrap().on_hand, 4);
        assert_eq!(
            adjust(stock(10, 4), -7),
            Err(StockError::BelowReserved {
                requested: 3,
                reserved: 4
            })
        );
        assert_eq!(adjust(stock(10, 0), 5).unwrap().on_hand, 15);
        assert_eq!(
            adjust(stock(10, 0), MAX_QUANTITY),
            Err(StockError::TooLarge)
        );
    }

    #[test]
    fn low_stock_fires_once_per_crossing() {
        let mut s = stock(12, 0);
        assert!(!update_low_flag(&mut s, 10));
        s.reserved = 3; // available 9 < 10
        assert!(update_low_flag(&mut s, 10));
        s.reserved = 5; // still low: no second event
        assert!(!update_low_flag(&mut s, 10));
        s.reserved = 0; // back above
        assert!(!update_low_flag(&mut s, 10));
        s.reserved = 4;
        assert!(update_low_flag(&mut s, 10), "a new crossing fires again");
        let mut zero = stock(0, 0);
        assert!(!update_low_flag(&mut zero, 0), "threshold 0 never warns");
    }

    #[test]
    fn merge_sums_duplicates_and_sorts() {
        let a = Uuid::from_u128(2);
        let b = Uuid::from_u128(1);
        assert_eq!(merge_items([(a, 1), (b, 2), (a, 3)]), vec![(b, 2), (a, 4)]);
    }

    #[test]
    fn reservation_is_all_or_nothing_and_reports_every_failure() {
        let ok = (product(0), stock(10, 0));
        let short = (product(0), stock(3, 1));
        let mut gone = (product(0), stock(10, 0));
        gone.0.deleted = true;
        let unknown = Uuid::new_v4();
        let items = vec![(ok.0.id, 5), (short.0.id, 3), (gone.0.id, 1), (unknown, 1)];
        let state = vec![
            Some(ok.clone()),
            Some(short.clone()),
            Some(gone.clone()),
            None,
        ];
        let failure = plan_reservation(&items, &state).unwrap_err();
        assert_eq!(failure.code, FailureCode::ProductNotFound);
        assert_eq!(failure.failed_product_ids.len(), 3);
        assert!(failure.failed_product_ids.contains(&short.0.id));
        assert!(failure.failed_product_ids.contains(&gone.0.id));
        assert!(failure.failed_product_ids.contains(&unknown));

        let only_short = plan_reservation(&items[1..2], &state[1..2]).unwrap_err();
        assert_eq!(only_short.code, FailureCode::InsufficientStock);

        let planned = plan_reservation(&items[..1], &state[..1]).unwrap();
        assert_eq!(planned[0].reserved, 5);
        assert_eq!(planned[0].available(), 5);
    }

    #[test]
    fn validation_keys_errors_by_json_field() {
        let errors = validate_create(CreateInput {
            name: Some("  ".into()),
            description: Some("x".repeat(2001)),
            price: Some(serde_json::json!("1.234")),
            category: None,
            stock_quantity: Some(-1),
            low_stock_threshold: Some(0),
        })
        .unwrap_err();
        for field in ["name", "description", "price", "category", "stockQuantity"] {
            assert!(
                errors.contains(field),
                "missing error for {field}: {errors:?}"
            );
        }
        assert!(!errors.contains("lowStockThreshold"));
    }

    #[test]
    fn price_rules() {
        let check = |v: serde_json::Value| {
            let mut e = FieldErrors::new();
            validate_price(Some(v), &mut e).map(|p| p.to_string())
        };
        assert_eq!(check(serde_json::json!("149.99")), Some("149.99".into()));
        assert_eq!(check(serde_json::json!("12.5")), Some("12.50".into()));
        assert_eq!(check(serde_json::json!("7")), Some("7.00".into()));
        assert_eq!(check(serde_json::json!("0.1")), Some("0.10".into()));
        assert_eq!(check(serde_json::json!("0.01")), Some("0.01".into()));
        assert_eq!(
            check(serde_json::json!("1000000000.00")),
            Some("1000000000.00".into())
        );
        for refused in [
            "0",
            "0.00",
            "1000000000.01",
            "01.5",
            "1.500",
            "+1",
            " 1",
            "1_000",
            "1.",
            ".5",
        ] {
            assert_eq!(check(serde_json::json!(refused)), None, "{refused}");
        }
        assert_eq!(
            check(serde_json::json!(7)),
            None,
            "a JSON number is not money"
        );
        assert_eq!(check(serde_json::json!("-1")), None);
        assert_eq!(check(serde_json::json!("1.001")), None);
        assert_eq!(check(serde_json::json!("1e3")), None);
        assert_eq!(check(serde_json::json!("abc")), None);
        assert_eq!(check(serde_json::json!(true)), None);
    }

    #[test]
    fn update_bumps_version_only_when_something_changed() {
        let p = product(10);
        let same = CatalogFields {
            name: p.name.clone(),
            description: p.description.clone(),
            price: p.price,
            category: p.category.clone(),
            low_stock_threshold: 10,
        };
        assert!(apply_update(&p, &same, Utc::now()).is_none());
        let renamed = CatalogFields {
            name: "new".into(),
            ..same
        };
        let next = apply_update(&p, &renamed, Utc::now()).unwrap();
        assert_eq!(next.version, 2);
    }
}
