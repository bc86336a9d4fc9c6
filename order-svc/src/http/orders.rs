//! The order routes: place, list, read, cancel, ship. Each handler checks the caller's scope,
//! parses what the schema cannot (ids, paging), and hands a typed request to `crate::orders`.
use axum::{
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use shared::{auth::Caller, fields::FieldErrors, problem::JsonBody};

use super::{
    AppState,
    body::{CancelBody, CreateOrderBody, OrderBody, OrderHistoryBody, OrderStateBody},
    need, parse_id,
};
use crate::{
    domain::{self, Order, Refused},
    error::Error,
    orders::Placed,
};

const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The order with its `ETag: "<version>"`.
fn order_body(status: StatusCode, order: &Order) -> Response {
    let mut response = (status, axum::Json(OrderBody::from(order))).into_response();
    let etag = shared::http::etag(order.version);
    response.headers_mut().insert(header::ETAG, etag);
    response
}

/// A placed order: its body and ETag, its `Location`, and on a 202 when to look again.
fn order_response(status: StatusCode, order: &Order) -> Response {
    let mut response = order_body(status, order);
    shared::http::set_location(&mut response, &format!("/api/orders/{}", order.id));
    if status == StatusCode::ACCEPTED {
        // About when the reconciler looks again (the request budget).
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    }
    response
}

/// Place an order: priced from this instance's product snapshot, its stock reserved on
/// product-svc. Confirmed or Rejected → 201; product-svc slow or unreachable → 202 Pending
/// (settled in the background). A retry with the same Idempotency-Key answers the same order.
#[cfg_attr(test, utoipa::path(post, path = "/api/orders", tag = "orders", operation_id = "createOrder",
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$",
        description = "Makes a retry safe: the same key and body answer the same order")),
    request_body = CreateOrderBody,
    responses(
        (status = 201, description = "Confirmed or Rejected (Location and ETag headers)", body = OrderBody),
        (status = 202, description = "Pending: product-svc did not answer in time; `Retry-After: 2` says when to look again (Location and ETag headers)", body = OrderBody),
        (status = 403, description = "The key lacks orders:write, or acts for another customer", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Unknown or discontinued products (`unknownProductIds`), a product's merged quantity over 10000, or an Idempotency-Key reused with another body", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The catalog or the order store (NATS) is unavailable; retry with the same Idempotency-Key", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateOrderBody>,
) -> Result<Response, Error> {
    need(&caller, "orders:write")?;
    let key = idempotency_key(&headers)?;
    let request = domain::validate_create(body.into()).map_err(|refused| match refused {
        Refused::Invalid(errors) => Error::Validation(errors),
        Refused::Unprocessable(errors) => Error::Unprocessable(errors),
    })?;
    if let Some(bound) = caller.customer
        && bound != request.customer_id
    {
        return Err(Error::Forbidden(format!(
            "This API key acts for customer {bound} only."
        )));
    }
    Ok(match state.orders.place(request, key).await? {
        Placed::Final(order) => order_response(StatusCode::CREATED, &order),
        Placed::Pending(order) => order_response(StatusCode::ACCEPTED, &order),
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Error> {
    let Some(value) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or("");
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        let mut errors = FieldErrors::new();
        errors.add(
            "Idempotency-Key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters.",
        );
        return Err(Error::Validation(errors));
    }
    Ok(Some(key.to_owned()))
}

/// Read an order from the order stream (its latest state), falling back to this instance's
/// view when the stream is unreachable.
#[cfg_attr(test, utoipa::path(get, path = "/api/orders/{id}", tag = "orders", operation_id = "getOrder",
    params(("id" = String, Path, description = "The order id (a UUID; anything else is unknown)")),
    responses(
        (status = 200, description = "The order (ETag header: its version)", body = OrderBody),
        (status = 403, description = "The key lacks orders:read", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "Unknown order (or another customer's, for a key bound to a customer)", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
pub async fn fetch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    need(&caller, "orders:read")?;
    let id = parse_id(&id)?;
    let order = state.orders.get(id).await?;
    // Another customer's order does not exist for a key bound to a customer.
    if caller.customer.is_some_and(|c| c != order.customer_id) {
        return Err(Error::NotFound(id));
    }
    Ok(order_body(StatusCode::OK, &order))
}

/// Every state of an order, oldest first, each as `GET /api/orders/{id}` returned it at that
/// version plus the event that led to it; read from the order stream.
#[cfg_attr(test, utoipa::path(get, path = "/api/orders/{id}/history", tag = "orders", operation_id = "getOrderHistory",
    params(("id" = String, Path, description = "The order id (a UUID; anything else is unknown)")),
    responses(
        (status = 200, description = "The order's states, oldest first", body = OrderHistoryBody),
        (status = 403, description = "The key lacks orders:read", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "Unknown order (or another customer's, for a key bound to a customer)", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    need(&caller, "orders:read")?;
    let id = parse_id(&id)?;
    let states = state.orders.history(id, caller.customer).await?;
    let items = states
        .iter()
        .map(|(order, event)| OrderStateBody {
            event_type: event.as_str(),
            order: OrderBody::from(order),
        })
        .collect();
    Ok(axum::Json(OrderHistoryBody { items }).into_response())
}

/// Cancel a Pending or Confirmed order; its stock is released in the background (owed durably).
/// Cancelling a Cancelled order answers it as it is.
#[cfg_attr(test, utoipa::path(post, path = "/api/orders/{id}/cancel", tag = "orders", operation_id = "cancelOrder",
    params(("id" = String, Path, description = "The order id"), shared::openapi::IfMatch),
    request_body = CancelBody,
    responses(
        (status = 200, description = "Cancelled (now, or already: a retry is safe; ETag header)", body = OrderBody),
        (status = 403, description = "The key lacks orders:write", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "Unknown order", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "Rejected or Shipped: not cancellable (`orderStatus` names it)", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 412, description = "If-Match names another version (`currentVersion` says which); checked before the state rules", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CancelBody>,
) -> Result<Response, Error> {
    need(&caller, "orders:write")?;
    let id = parse_id(&id)?;
    let if_match = if_match(&headers)?;
    let reason = domain::validate_reason(body.reason).map_err(Error::Validation)?;
    let order = state
        .orders
        .cancel(id, reason, caller.customer, if_match)
        .await?;
    Ok(order_body(StatusCode::OK, &order))
}

/// Confirmed → Shipped; the reservation is committed (an on-hand decrement) in the background,
/// owed durably. Shipping a Shipped order answers it as it is.
#[cfg_attr(test, utoipa::path(post, path = "/api/orders/{id}/ship", tag = "orders", operation_id = "shipOrder",
    params(("id" = String, Path, description = "The order id"), shared::openapi::IfMatch),
    responses(
        (status = 200, description = "Shipped (ETag header)", body = OrderBody),
        (status = 403, description = "The key lacks orders:admin", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "Unknown order", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "Not shippable in its status (`orderStatus` names it)", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 412, description = "If-Match names another version (`currentVersion` says which); checked before the state rules", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
pub async fn ship(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    if !caller.has("orders:admin") {
        return Err(Error::Forbidden(
            "This API key lacks the scope orders:admin.".into(),
        ));
    }
    let id = parse_id(&id)?;
    let order = state.orders.ship(id, if_match(&headers)?).await?;
    Ok(order_body(StatusCode::OK, &order))
}

/// `If-Match` (see `shared::http::if_match`); a malformed one is a 400 naming the header.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    shared::http::if_match(headers, "order").map_err(Error::Validation)
}
