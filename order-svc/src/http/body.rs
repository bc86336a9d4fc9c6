//! The JSON shapes of the order API, as served and as documented: the OpenAPI schemas are
//! derived from these types, so the document cannot drift from what the handlers send.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::events::OrderStatus;
use uuid::Uuid;

use crate::domain::{LineDraft, Order, OrderDraft, OrderItem, ProductView};

/// An order to place: who orders, and which products in what quantities.
// Every field is optional in Rust, so that a missing one is reported by name with the others;
// the schema attributes state what the document requires.
#[derive(Debug, Default, Clone, Deserialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(test, schema(as = CreateOrder))]
pub struct CreateOrderBody {
    /// Not the nil UUID.
    #[cfg_attr(test, schema(value_type = Uuid, required = true, pattern = r"^(?!0{8}-0{4}-0{4}-0{4}-0{12}$)[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"))]
    customer_id: Option<String>,
    #[cfg_attr(test, schema(value_type = String, required = true, format = Email, max_length = 320))]
    customer_email: Option<String>,
    /// Lines of the same product are merged; their total must stay within 10000 (else 422).
    #[cfg_attr(test, schema(value_type = Vec<OrderLineBody>, required = true, min_items = 1, max_items = 100))]
    items: Option<Vec<OrderLineBody>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(test, schema(as = OrderLine))]
pub struct OrderLineBody {
    /// Not the nil UUID.
    #[cfg_attr(test, schema(value_type = Uuid, required = true, pattern = r"^(?!0{8}-0{4}-0{4}-0{4}-0{12}$)[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"))]
    product_id: Option<String>,
    #[cfg_attr(test, schema(value_type = u32, required = true, minimum = 1, maximum = 10000))]
    #[serde(default, deserialize_with = "shared::problem::json_integer")]
    quantity: Option<i64>,
}

impl From<CreateOrderBody> for OrderDraft {
    fn from(body: CreateOrderBody) -> Self {
        Self {
            customer_id: body.customer_id,
            customer_email: body.customer_email,
            items: body.items.map(|items| {
                items
                    .into_iter()
                    .map(|line| LineDraft {
                        product_id: line.product_id,
                        quantity: line.quantity,
                    })
                    .collect()
            }),
        }
    }
}

/// An order as served: money as decimal strings.
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, schema(as = Order))]
pub struct OrderBody {
    id: Uuid,
    /// 1 when placed, +1 per change.
    #[cfg_attr(test, schema(minimum = 1))]
    version: u64,
    customer_id: Uuid,
    customer_email: String,
    #[cfg_attr(test, schema(value_type = OrderStatusBody))]
    status: OrderStatus,
    #[cfg_attr(test, schema(value_type = String, example = "149.99"))]
    total_amount: String,
    /// Why it was rejected or cancelled.
    reason: Option<String>,
    /// The products that had too little stock (a Rejected order).
    failed_product_ids: Vec<Uuid>,
    items: Vec<ItemBody>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// Pending until product-svc has answered the reservation; Shipped is final.
#[cfg(test)]
#[derive(utoipa::ToSchema)]
#[cfg_attr(test, schema(as = OrderStatus))]
#[allow(dead_code)]
pub enum OrderStatusBody {
    Pending,
    Confirmed,
    Rejected,
    Cancelled,
    Shipped,
}

/// One line of an order, priced from the catalog when the order was placed.
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, schema(as = OrderItem))]
pub struct ItemBody {
    product_id: Uuid,
    product_name: String,
    quantity: u32,
    #[cfg_attr(test, schema(value_type = String, example = "49.90"))]
    unit_price: String,
    #[cfg_attr(test, schema(value_type = String, example = "99.80"))]
    line_total: String,
}

impl From<&OrderItem> for ItemBody {
    fn from(i: &OrderItem) -> Self {
        Self {
            product_id: i.product_id,
            product_name: i.product_name.clone(),
            quantity: i.quantity,
            unit_price: i.unit_price.to_string(),
            line_total: i.line_total.to_string(),
        }
    }
}

impl From<&Order> for OrderBody {
    fn from(o: &Order) -> Self {
        Self {
            id: o.id,
            version: o.version,
            customer_id: o.customer_id,
            customer_email: o.customer_email.clone(),
            status: o.status,
            total_amount: o.total_amount.to_string(),
            reason: o.reason.clone(),
            failed_product_ids: o.failed_product_ids.clone(),
            items: o.items.iter().map(ItemBody::from).collect(),
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

/// A page of orders, newest first.
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OrderPage {
    pub items: Vec<OrderBody>,
    pub page: usize,
    pub page_size: usize,
    pub total_count: usize,
    pub total_pages: usize,
    /// The next page: pass it as `cursor`; null on the last page.
    #[cfg_attr(test, schema(pattern = "^[0-9a-f]{48}$"))]
    pub next_cursor: Option<String>,
}

/// A product as this instance's snapshot holds it (projected from the catalog's events).
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, schema(as = SnapshotProduct))]
pub struct SnapshotRow {
    id: Uuid,
    name: String,
    description: String,
    #[cfg_attr(test, schema(value_type = String, example = "49.90"))]
    price: String,
    category: String,
    /// The catalog version this row reflects.
    version: u64,
    /// Discontinued: kept so a late, older event cannot bring it back.
    deleted: bool,
    updated_at: DateTime<Utc>,
}

impl SnapshotRow {
    pub fn new(id: Uuid, view: ProductView) -> Self {
        Self {
            id,
            name: view.name,
            description: view.description,
            price: view.price.to_string(),
            category: view.category,
            version: view.version,
            deleted: view.deleted,
            updated_at: view.updated_at,
        }
    }
}

/// A page of the snapshot, by product id.
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SnapshotPage {
    pub items: Vec<SnapshotRow>,
    pub page: usize,
    pub page_size: usize,
    pub total_count: usize,
    pub total_pages: usize,
}

/// Cancelling needs a reason (kept on the order).
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    #[cfg_attr(test, schema(value_type = String, required = true, min_length = 1, max_length = 500))]
    pub reason: Option<String>,
}

/// Query of the order listing (documentation only: `http/list.rs` reads the query by hand, so
/// a repeated `status` is read and a bad value is a 400 naming its parameter).
#[cfg(test)]
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListParams {
    /// Only this customer's orders (required unless the key has orders:admin); not the nil UUID.
    #[param(rename = "customerId", value_type = Option<Uuid>, pattern = r"^(?!0{8}-0{4}-0{4}-0{4}-0{12}$)[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    customer_id: Option<String>,
    /// Only orders in one of these statuses (repeat the parameter: `status=Confirmed&status=Cancelled`).
    #[param(value_type = Option<Vec<OrderStatusBody>>, style = Form, explode)]
    status: Option<Vec<String>>,
    /// Only orders created after this instant (RFC 3339, exclusive).
    #[param(rename = "createdAfter", value_type = Option<DateTime<Utc>>)]
    created_after: Option<String>,
    /// Only orders created before this instant (RFC 3339, exclusive).
    #[param(rename = "createdBefore", value_type = Option<DateTime<Utc>>)]
    created_before: Option<String>,
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1_000_000)]
    page: Option<String>,
    #[param(rename = "pageSize", value_type = Option<u32>, minimum = 1, maximum = 100)]
    page_size: Option<String>,
    /// The previous page's `nextCursor` (not with `page`).
    #[param(pattern = "^[0-9a-f]{48}$")]
    cursor: Option<String>,
}

/// Query of the snapshot listing.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(utoipa::IntoParams))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, into_params(parameter_in = Query))]
pub struct SnapshotParams {
    #[cfg_attr(test, param(value_type = Option<u32>, minimum = 1, maximum = 1_000_000))]
    pub page: Option<String>,
    #[cfg_attr(test, param(value_type = Option<u32>, minimum = 1, maximum = 1000))]
    pub page_size: Option<String>,
}

/// One state of an order: the order as `GET /api/orders/{id}` returned it at that version, and
/// the event that led to it.
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, schema(as = OrderState))]
pub struct OrderStateBody {
    /// `OrderPlaced`, `OrderConfirmed`, `OrderRejected`, `OrderCancelled`, `OrderStockReleased`,
    /// `OrderShipped` or `OrderStockCommitted`.
    pub event_type: &'static str,
    #[serde(flatten)]
    pub order: OrderBody,
}

/// An order's states, oldest first.
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[cfg_attr(test, schema(as = OrderHistory))]
pub struct OrderHistoryBody {
    pub items: Vec<OrderStateBody>,
}
