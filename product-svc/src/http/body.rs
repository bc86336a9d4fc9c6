//! The JSON shapes of the catalog API, as served and as documented: the OpenAPI schemas are
//! derived from these types, so the document cannot drift from what the handlers send.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    domain::{CatalogDraft, PriceDraft},
    store::Entry,
};

/// A new product: its catalog fields and the stock on hand.
// Every field is optional in Rust, so that a missing one is reported by name with the others.
#[derive(Debug, Default, Clone, Deserialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(test, schema(as = CreateProduct))]
pub struct CreateProductBody {
    #[cfg_attr(test, schema(value_type = String, required = true, max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"))]
    name: Option<String>,
    #[cfg_attr(test, schema(value_type = String, required = true, max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*$"))]
    description: Option<String>,
    /// A decimal string such as "149.99".
    #[cfg_attr(test, schema(value_type = String, required = true, example = "149.99",
        pattern = r"^(?:(?:0|[1-9][0-9]{0,8})\.(?:[0-9][1-9]|[1-9][0-9]?)|[1-9][0-9]{0,8}(?:\.[0-9]{1,2})?|1000000000(?:\.00?)?)$"))]
    price: Option<serde_json::Value>,
    #[cfg_attr(test, schema(value_type = String, required = true, max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"))]
    category: Option<String>,
    #[cfg_attr(test, schema(value_type = u32, required = true, minimum = 0, maximum = 1_000_000_000))]
    #[serde(default, deserialize_with = "shared::problem::json_integer")]
    stock_quantity: Option<i64>,
    /// Available stock below this publishes one StockLow; 0 never warns.
    #[cfg_attr(test, schema(value_type = u32, required = true, minimum = 0, maximum = 1_000_000_000))]
    #[serde(default, deserialize_with = "shared::problem::json_integer")]
    low_stock_threshold: Option<i64>,
}

/// Update body: the catalog fields and the threshold (stock changes go through `/stock`).
#[derive(Debug, Default, Clone, Deserialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(test, schema(as = UpdateProduct))]
pub struct UpdateProductBody {
    #[cfg_attr(test, schema(value_type = String, required = true, max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"))]
    name: Option<String>,
    #[cfg_attr(test, schema(value_type = String, required = true, max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*$"))]
    description: Option<String>,
    #[cfg_attr(test, schema(value_type = String, required = true, example = "149.99",
        pattern = r"^(?:(?:0|[1-9][0-9]{0,8})\.(?:[0-9][1-9]|[1-9][0-9]?)|[1-9][0-9]{0,8}(?:\.[0-9]{1,2})?|1000000000(?:\.00?)?)$"))]
    price: Option<serde_json::Value>,
    #[cfg_attr(test, schema(value_type = String, required = true, max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"))]
    category: Option<String>,
    #[cfg_attr(test, schema(value_type = u32, required = true, minimum = 0, maximum = 1_000_000_000))]
    #[serde(default, deserialize_with = "shared::problem::json_integer")]
    low_stock_threshold: Option<i64>,
}

impl CreateProductBody {
    /// The catalog fields, and the stock on hand.
    pub fn into_draft(self) -> (CatalogDraft, Option<i64>) {
        let draft = CatalogDraft {
            name: self.name,
            description: self.description,
            price: price_draft(self.price),
            category: self.category,
            low_stock_threshold: self.low_stock_threshold,
        };
        (draft, self.stock_quantity)
    }
}

impl From<UpdateProductBody> for CatalogDraft {
    fn from(body: UpdateProductBody) -> Self {
        Self {
            name: body.name,
            description: body.description,
            price: price_draft(body.price),
            category: body.category,
            low_stock_threshold: body.low_stock_threshold,
        }
    }
}

/// JSON null counts as missing; any JSON but a string is not a price.
fn price_draft(value: Option<serde_json::Value>) -> Option<PriceDraft> {
    match value? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(PriceDraft::Text(s)),
        _ => Some(PriceDraft::NotText),
    }
}

/// A product with its stock; `ETag: "<version>"` comes with it.
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, schema(as = Product))]
pub struct ProductBody {
    id: Uuid,
    name: String,
    description: String,
    #[cfg_attr(test, schema(example = "149.99"))]
    price: String,
    category: String,
    /// On hand.
    stock_quantity: i64,
    /// On hand minus reserved.
    available_quantity: i64,
    /// Held for Pending/Confirmed orders until they are cancelled (released) or shipped (committed).
    reserved_quantity: i64,
    low_stock_threshold: i64,
    /// 1 when created, +1 per catalog change; the ETag.
    version: u64,
    /// Discontinued (`POST .../discontinue`): kept, read-only, no longer sold.
    deleted: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Entry> for ProductBody {
    fn from(e: Entry) -> Self {
        let p = e.product;
        Self {
            id: p.id,
            name: p.name,
            description: p.description,
            price: p.price.to_string(),
            category: p.category,
            stock_quantity: e.stock.on_hand,
            available_quantity: e.stock.available(),
            reserved_quantity: e.stock.reserved,
            low_stock_threshold: p.low_stock_threshold,
            version: p.version,
            deleted: p.deleted,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// A page of products, by id.
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ProductPage {
    pub items: Vec<ProductBody>,
    pub page: usize,
    pub page_size: usize,
    pub total_count: usize,
    pub total_pages: usize,
}

/// A restock (+) or write-off (−) of on-hand stock; 0 changes nothing.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, schema(as = StockAdjustment))]
pub struct StockBody {
    #[cfg_attr(test, schema(value_type = i32, required = true, minimum = -1_000_000_000, maximum = 1_000_000_000))]
    #[serde(default, deserialize_with = "shared::problem::json_integer")]
    pub delta: Option<i64>,
}

/// Query of the product listing. Values are parsed by hand so a bad one is a 400 naming it.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(utoipa::IntoParams))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, into_params(parameter_in = Query))]
pub struct ListParams {
    /// Only this category (exact match; blank means every category).
    pub category: Option<String>,
    #[cfg_attr(test, param(value_type = Option<u32>, minimum = 1, maximum = 1_000_000))]
    pub page: Option<String>,
    #[cfg_attr(test, param(value_type = Option<u32>, minimum = 1, maximum = 100))]
    pub page_size: Option<String>,
}
