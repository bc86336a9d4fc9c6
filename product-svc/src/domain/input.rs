//! Catalog input from its draft to typed fields: every rule the OpenAPI document states, enforced
//! exactly as stated, with errors keyed by JSON field.
use rust_decimal::Decimal;
use shared::fields::FieldErrors;

use super::{MAX_CATEGORY, MAX_DESCRIPTION, MAX_NAME, MAX_QUANTITY};

// The documents state these rules as patterns (ECMA-262, as JSON Schema uses); `text` and
// `validate_price` enforce exactly the same ones, so a schema-valid value is never refused.
// Name and category: no control characters, at least one non-space character.
// Description: no control characters but newline and tab.
// Price: a decimal string, > 0, at most 1000000000, at most two decimals, no leading zeros.

/// The catalog fields as received, before any rule: every field optional, so that a missing
/// one is reported by name with the others.
#[derive(Debug, Default, Clone)]
pub struct CatalogDraft {
    pub name: Option<String>,
    pub description: Option<String>,
    pub price: Option<PriceDraft>,
    pub category: Option<String>,
    pub low_stock_threshold: Option<i64>,
}

/// A price as received: money travels as a decimal string, so anything else is refused by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriceDraft {
    Text(String),
    NotText,
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

pub fn validate_create(
    draft: CatalogDraft,
    stock_quantity: Option<i64>,
) -> Result<NewProduct, FieldErrors> {
    let mut errors = FieldErrors::new();
    let fields = validate_fields(draft, &mut errors);
    let stock_quantity = quantity("stockQuantity", stock_quantity, &mut errors);
    errors.into_result()?;
    Ok(NewProduct {
        fields: fields.expect("no errors means every field is present"),
        stock_quantity,
    })
}

pub fn validate_update(draft: CatalogDraft) -> Result<CatalogFields, FieldErrors> {
    let mut errors = FieldErrors::new();
    let fields = validate_fields(draft, &mut errors);
    errors.into_result()?;
    Ok(fields.expect("no errors means every field is present"))
}

fn validate_fields(draft: CatalogDraft, errors: &mut FieldErrors) -> Option<CatalogFields> {
    let name = text("name", draft.name, true, MAX_NAME, errors);
    let description = text(
        "description",
        draft.description,
        false,
        MAX_DESCRIPTION,
        errors,
    );
    let category = text("category", draft.category, true, MAX_CATEGORY, errors);
    let price = validate_price(draft.price, errors);
    let threshold = quantity("lowStockThreshold", draft.low_stock_threshold, errors);
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
pub fn validate_price(value: Option<PriceDraft>, errors: &mut FieldErrors) -> Option<Decimal> {
    let text = match value {
        None => {
            errors.add("price", "price is required.");
            return None;
        }
        Some(PriceDraft::Text(s)) => s,
        Some(PriceDraft::NotText) => {
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
