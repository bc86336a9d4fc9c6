//! The JSON shapes of the catalog API, as served and as documented: the OpenAPI schemas are
//! derived from these types, so the document cannot drift from what the handlers send.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::Entry;

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
    /// Discontinued (`DELETE`): kept, read-only, no longer sold.
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
