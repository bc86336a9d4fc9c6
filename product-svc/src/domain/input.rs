//! Catalog input from JSON to typed fields: every rule the OpenAPI document states, enforced
//! exactly as stated, with errors keyed by JSON field.
use rust_decimal::Decimal;
use serde::Deserialize;
use shared::problem::FieldErrors;

use super::{MAX_CATEGORY, MAX_DESCRIPTION, MAX_NAME, MAX_QUANTITY};

// The documents state these rules as patterns (ECMA-262, as JSON Schema uses); `text` and
// `validate_price` enforce exactly the same ones, so a schema-valid value is never refused.
// Name and category: no control characters, at least one non-space character.
// Description: no control characters but newline and tab.
// Price: a decimal string, > 0, at most 1000000000, at most two decimals, no leading zeros.

/// Create body as it arrives; every field optional so a missing one is a keyed validation error.
#[derive(Debug, Default, Clone, Deserialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(test, schema(as = CreateProduct))]
pub struct CreateInput {
    #[cfg_attr(test, schema(value_type = String, required = true, max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"))]
    pub name: Option<String>,
    #[cfg_attr(test, schema(value_type = String, required = true, max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*$"))]
    pub description: Option<String>,
    /// A decimal string such as "149.99".
    #[cfg_attr(test, schema(value_type = String, required = true, example = "149.99",
        pattern = r"^(?:(?:0|[1-9][0-9]{0,8})\.(?:[0-9][1-9]|[1-9][0-9]?)|[1-9][0-9]{0,8}(?:\.[0-9]{1,2})?|1000000000(?:\.00?)?)$"))]
    pub price: Option<serde_json::Value>,
    #[cfg_attr(test, schema(value_type = String, required = true, max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"))]
    pub category: Option<String>,
    #[cfg_attr(test, schema(value_type = u32, required = true, minimum = 0, maximum = 1_000_000_000))]
    #[serde(default, deserialize_with = "shared::problem::json_integer")]
    pub stock_quantity: Option<i64>,
    /// Available stock below this publishes one StockLow; 0 never warns.
    #[cfg_attr(test, schema(value_type = u32, required = true, minimum = 0, maximum = 1_000_000_000))]
    #[serde(default, deserialize_with = "shared::problem::json_integer")]
    pub low_stock_threshold: Option<i64>,
}

/// Update body: the catalog fields and the threshold (stock changes go through `/stock`).
#[derive(Debug, Default, Clone, Deserialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(test, schema(as = UpdateProduct))]
pub struct UpdateInput {
    #[cfg_attr(test, schema(value_type = String, required = true, max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"))]
    pub name: Option<String>,
    #[cfg_attr(test, schema(value_type = String, required = true, max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*$"))]
    pub description: Option<String>,
    #[cfg_attr(test, schema(value_type = String, required = true, example = "149.99",
        pattern = r"^(?:(?:0|[1-9][0-9]{0,8})\.(?:[0-9][1-9]|[1-9][0-9]?)|[1-9][0-9]{0,8}(?:\.[0-9]{1,2})?|1000000000(?:\.00?)?)$"))]
    pub price: Option<serde_json::Value>,
    #[cfg_attr(test, schema(value_type = String, required = true, max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"))]
    pub category: Option<String>,
    #[cfg_attr(test, schema(value_type = u32, required = true, minimum = 0, maximum = 1_000_000_000))]
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
