//! The HTTP JSON API for order clients. Knows request/response JSON and HTTP status codes.
use std::sync::atomic::Ordering;

use axum::{
    Router,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use shared::{
    auth::Caller,
    problem::{FieldErrors, JsonBody, Problem},
};
use uuid::Uuid;

use crate::{
    AppState, ProjectionStatus,
    domain::{self, CreateOrderInput, Order},
    error::Error,
    orders::Placed,
};

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/api/orders", post(create).get(list))
        .route("/api/orders/{id}", get(fetch))
        .route("/api/orders/{id}/cancel", post(cancel))
        .route("/api/orders/{id}/ship", post(ship))
        .route("/api/snapshot/products", get(snapshot_list))
        .route("/api/snapshot/products/{id}", get(snapshot_get))
        .route("/health/live", get(|| async { StatusCode::OK }))
        .route("/health/ready", get(ready))
        .route(
            "/openapi.json",
            get(|| async { axum::Json(crate::openapi::document()) }),
        );
    let routes = shared::http::with_callers(routes, state.auth.clone(), state.limiter.clone());
    shared::http::with_defaults(routes, state.metrics.clone()).with_state(state)
}

/// `orders:admin` allows everything the other scopes do.
fn need(caller: &Caller, scope: &str) -> Result<(), Error> {
    if caller.has(scope) || caller.has("orders:admin") {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "This API key lacks the scope {scope}."
        )))
    }
}

fn order_response(status: StatusCode, order: Order) -> Response {
    let location = format!("/api/orders/{}", order.id);
    let mut response = (status, axum::Json(order)).into_response();
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("ascii path"),
    );
    response
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(input): JsonBody<CreateOrderInput>,
) -> Result<Response, Error> {
    need(&caller, "orders:write")?;
    let key = idempotency_key(&headers)?;
    let request = domain::validate_create(input).map_err(Error::Validation)?;
    if let Some(bound) = caller.customer
        && bound != request.customer_id
    {
        return Err(Error::Forbidden(format!(
            "This API key acts for customer {bound} only."
        )));
    }
    Ok(match state.orders.place(request, key).await? {
        Placed::Final(order) => order_response(StatusCode::CREATED, order),
        Placed::Pending(order) => order_response(StatusCode::ACCEPTED, order),
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Error> {
    let Some(value) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or("").trim();
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

async fn fetch(
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
    Ok(axum::Json(order).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListParams {
    customer_id: Option<String>,
    page: Option<String>,
    page_size: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    items: Vec<Order>,
    page: usize,
    page_size: usize,
    total_count: usize,
    total_pages: usize,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, Error> {
    need(&caller, "orders:read")?;
    let mut errors = FieldErrors::new();
    let Query(params) = params.map_err(|e| Error::Validation(shared::http::query_errors(&e)))?;
    let customer = match params
        .customer_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => None,
        Some(raw) => match Uuid::parse_str(raw) {
            Ok(id) => Some(id),
            Err(_) => {
                errors.add("customerId", "customerId must be a UUID.");
                None
            }
        },
    };
    let paging = shared::http::paging(params.page.as_deref(), params.page_size.as_deref(), 100);
    let (page, page_size) = match paging {
        Ok(p) => p,
        Err(more) => {
            errors.extend(more);
            (1, 20)
        }
    };
    errors.into_result().map_err(Error::Validation)?;
    let customer = match (caller.customer, customer) {
        (Some(bound), None) => Some(bound),
        (Some(bound), Some(asked)) if asked != bound => {
            return Err(Error::Forbidden(format!(
                "This API key acts for customer {bound} only."
            )));
        }
        (None, None) => {
            need(&caller, "orders:admin")?;
            None
        }
        (_, asked) => asked,
    };
    let (items, total) = state.orders.view.list(customer, page, page_size)?;
    Ok(axum::Json(Page {
        items,
        page,
        page_size,
        total_count: total,
        total_pages: total.div_ceil(page_size),
    })
    .into_response())
}

/// A snapshot row as served: the product id plus the projected fields.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotRow {
    id: Uuid,
    #[serde(flatten)]
    view: domain::ProductView,
}

async fn snapshot_get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    need(&caller, "orders:read")?;
    let Ok(id) = parse_id(&id) else {
        return Ok(Problem::not_found("No product has this id.").into_response());
    };
    match state.orders.snapshot.product(id)? {
        Some(view) => Ok(axum::Json(SnapshotRow { id, view }).into_response()),
        None => {
            Ok(Problem::not_found(format!("Product {id} is not in the snapshot.")).into_response())
        }
    }
}

async fn snapshot_list(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, Error> {
    need(&caller, "orders:read")?;
    let Query(params) = params.map_err(|e| Error::Validation(shared::http::query_errors(&e)))?;
    let (page, page_size) =
        shared::http::paging(params.page.as_deref(), params.page_size.as_deref(), 1000)
            .map_err(Error::Validation)?;
    let (rows, total) = state.orders.snapshot.snapshot_page(page, page_size)?;
    Ok(axum::Json(serde_json::json!({
        "items": rows.into_iter().map(|(id, view)| SnapshotRow { id, view }).collect::<Vec<_>>(),
        "page": page,
        "pageSize": page_size,
        "totalCount": total,
        "totalPages": total.div_ceil(page_size),
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    reason: Option<String>,
}

async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CancelBody>,
) -> Result<Response, Error> {
    need(&caller, "orders:write")?;
    let id = parse_id(&id)?;
    let reason = domain::validate_reason(body.reason).map_err(Error::Validation)?;
    let order = state.orders.cancel(id, reason, caller.customer).await?;
    Ok(axum::Json(order).into_response())
}

/// Confirmed → Shipped (`orders:admin`); the stock commit is owed durably. Idempotent.
async fn ship(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    if !caller.has("orders:admin") {
        return Err(Error::Forbidden(
            "This API key lacks the scope orders:admin.".into(),
        ));
    }
    let id = parse_id(&id)?;
    let order = state.orders.ship(id).await?;
    Ok(axum::Json(order).into_response())
}

fn projection_details(s: &ProjectionStatus) -> serde_json::Value {
    serde_json::json!({
        "ready": s.ready.load(Ordering::SeqCst),
        "connected": s.connected.load(Ordering::SeqCst),
        "lag": s.lag.load(Ordering::Relaxed),
        "checkpoint": s.checkpoint.load(Ordering::Relaxed),
        "target": s.target.load(Ordering::Relaxed),
        "applied": s.applied.load(Ordering::Relaxed),
        "poison": s.poison.load(Ordering::Relaxed),
    })
}

/// Ready once both read models (the product snapshot and the orders view) have caught up with
/// their streams; independent of product-svc.
async fn ready(State(state): State<AppState>) -> Response {
    let orders = &state.orders;
    let mut snapshot = projection_details(&state.snapshot);
    snapshot["products"] = orders.snapshot.snapshot_len().unwrap_or_default().into();
    let mut view = projection_details(&state.orders_view);
    view["orders"] = orders.view.count().unwrap_or_default().into();
    let body = serde_json::json!({
        "snapshot": snapshot,
        "ordersView": view,
        "pendingOrders": orders.view.pending_count().unwrap_or_default(),
        "owedStockWork": orders.view.owed_count().unwrap_or_default(),
        "casConflicts": orders.counters.conflicts.load(Ordering::Relaxed),
        "duplicateWork": orders.counters.duplicate_work.load(Ordering::Relaxed),
        "stockCircuitOpen": orders.stock.breaker_open(),
    });
    let ready = state.snapshot.ready.load(Ordering::SeqCst)
        && state.orders_view.ready.load(Ordering::SeqCst);
    if ready {
        axum::Json(serde_json::json!({"status": "ready", "details": body})).into_response()
    } else {
        Problem::unavailable(
            "The product snapshot or the orders view is still catching up with its stream.",
            1,
        )
        .with_extension("details", body)
        .into_response()
    }
}

/// A path id that is not a UUID cannot name an order: 404, like an unknown one.
fn parse_id(raw: &str) -> Result<Uuid, Error> {
    shared::http::path_uuid(raw).ok_or(Error::NotFound(Uuid::nil()))
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = match &self {
            Error::Validation(errors) => Problem::validation(errors.clone()),
            Error::Forbidden(why) => Problem::new(StatusCode::FORBIDDEN, why.clone()),
            Error::NotFound(id) if id.is_nil() => Problem::not_found("No order has this id."),
            Error::NotFound(id) => Problem::not_found(format!("Order {id} was not found.")),
            Error::UnknownProducts(ids) => {
                Problem::bad_request("Some products are unknown or discontinued.")
                    .with_extension("unknownProductIds", serde_json::json!(ids))
            }
            Error::IdempotencyMismatch => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "This Idempotency-Key was already used with a different request body.",
            ),
            Error::NotCancellable { status, .. } => Problem::conflict(format!(
                "The order is {status:?}; only Pending or Confirmed orders can be cancelled."
            ))
            .with_extension("orderStatus", serde_json::json!(status)),
            Error::NotShippable { status, .. } => Problem::conflict(format!(
                "The order is {status:?}; only Confirmed orders can be shipped."
            ))
            .with_extension("orderStatus", serde_json::json!(status)),
            Error::Transition(t) => Problem::conflict(format!("{t}.")),
            Error::CatalogUnavailable(_) => {
                tracing::warn!(error = %self, "Catalog read-through failed.");
                Problem::unavailable("Product data is temporarily unavailable; retry shortly.", 2)
            }
            Error::OrderStoreUnavailable(_) => {
                tracing::warn!(error = %self, "The order stream is unreachable.");
                Problem::unavailable(
                    "The order store is temporarily unavailable; retry shortly (a retry with the \
                     same Idempotency-Key never creates a second order).",
                    1,
                )
            }
            Error::Contended(_) => {
                tracing::warn!(error = %self, "An order kept changing under a request.");
                Problem::unavailable("The order is changing too often; retry shortly.", 1)
            }
            Error::Storage(_) | Error::Corrupt(_) | Error::Flush(_) => {
                tracing::error!(error = %self, cause = ?self, "Request failed on storage.");
                Problem::internal()
            }
        };
        problem.into_response()
    }
}
