//! The order listing a client can use: by customer, by status (repeatable), by creation window,
//! newest first, a page number or a cursor. The query is read by hand: axum's `Query` cannot
//! read a repeated key, and a bad value must be a 400 naming its parameter.
use axum::{
    extract::{RawQuery, State},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use shared::{auth::Caller, events::OrderStatus, fields::FieldErrors};
use uuid::Uuid;

use super::{
    AppState,
    body::{OrderBody, OrderPage},
    customer_scope, need,
};
use crate::{
    domain,
    error::Error,
    view::{Listing, Paging},
};

/// List orders, newest first, from this instance's orders view (eventually consistent). A key
/// bound to a customer lists that customer's orders; without `customerId` it needs orders:admin.
/// `status` (repeatable), `createdAfter` and `createdBefore` filter; `page`/`pageSize` or
/// `cursor` (the previous page's `nextCursor`) page.
#[cfg_attr(test, utoipa::path(get, path = "/api/orders", tag = "orders", operation_id = "listOrders", params(super::body::ListParams),
    responses(
        (status = 200, description = "A page of orders (`nextCursor`: the next page's cursor, null on the last)", body = OrderPage),
        (status = 403, description = "Unfiltered listing without orders:admin, or another customer's listing", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, Error> {
    need(&caller, "orders:read")?;
    let (asked, mut listing) = parse(query.as_deref().unwrap_or("")).map_err(Error::Validation)?;
    listing.customer = customer_scope(&caller, asked)?;
    let listed = state.orders.list(&listing).await?;
    let (page, page_size) = match listing.page {
        Paging::Number { page, size } => (page, size),
        Paging::After { size, .. } => (1, size),
    };
    Ok(axum::Json(OrderPage {
        items: listed.orders.iter().map(OrderBody::from).collect(),
        page,
        page_size,
        total_count: listed.total,
        total_pages: listed.total.div_ceil(page_size),
        next_cursor: listed.next_cursor.map(|c| hex(&c)),
    })
    .into_response())
}

/// The customer asked for, and the listing; every bad parameter named.
fn parse(query: &str) -> Result<(Option<Uuid>, Listing), FieldErrors> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let one = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let mut errors = FieldErrors::new();
    let customer = domain::optional_id("customerId", one("customerId"), &mut errors);
    let mut statuses = Vec::new();
    for (_, value) in pairs.iter().filter(|(k, _)| k == "status") {
        match serde_json::from_value::<OrderStatus>(serde_json::Value::String(value.clone())) {
            Ok(status) if !statuses.contains(&status) => statuses.push(status),
            Ok(_) => {}
            Err(_) => errors.add(
                "status",
                "status must be Pending, Confirmed, Rejected, Cancelled or Shipped.",
            ),
        }
    }
    let mut time = |name: &str| match one(name).map(DateTime::parse_from_rfc3339) {
        None => None,
        Some(Ok(t)) => Some(t.with_timezone(&Utc)),
        Some(Err(_)) => {
            errors.add(name, format!("{name} must be an RFC 3339 date-time."));
            None
        }
    };
    let (created_after, created_before) = (time("createdAfter"), time("createdBefore"));
    let page = paging(one("page"), one("pageSize"), one("cursor"), &mut errors);
    errors.into_result()?;
    Ok((
        customer,
        Listing {
            customer: None,
            statuses,
            created_after,
            created_before,
            page,
        },
    ))
}

/// `customerId` from a query (a listing's, a watch's): absent, or a UUID other than nil.
pub(super) fn customer_param(query: &str) -> Result<Option<Uuid>, FieldErrors> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let raw = pairs.iter().find(|(k, _)| k == "customerId");
    let mut errors = FieldErrors::new();
    let customer = domain::optional_id("customerId", raw.map(|(_, v)| v.as_str()), &mut errors);
    errors.into_result()?;
    Ok(customer)
}

fn paging(
    page: Option<&str>,
    page_size: Option<&str>,
    cursor: Option<&str>,
    errors: &mut FieldErrors,
) -> Paging {
    let (number, size) = shared::http::paging(page, page_size, 100).unwrap_or_else(|more| {
        errors.extend(more);
        (1, 20)
    });
    match cursor {
        None => Paging::Number { page: number, size },
        Some(_) if page.is_some() => {
            errors.add("cursor", "cursor and page cannot be used together.");
            Paging::Number { page: number, size }
        }
        Some(text) => match unhex(text) {
            Some(cursor) if cursor.len() == crate::view::CURSOR_LEN => Paging::After {
                cursor: Some(cursor),
                size,
            },
            _ => {
                errors.add(
                    "cursor",
                    "cursor must be a nextCursor this listing returned.",
                );
                Paging::Number { page: number, size }
            }
        },
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}
