//! The HTTP JSON API for catalog admins. Knows request/response JSON and nothing about sled.
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
    AppState,
    domain::{self, CreateInput, MAX_QUANTITY, StockError, UpdateInput},
    error::Error,
    store::Entry,
};

pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/api/products", post(create).get(list))
        .route(
            "/api/products/{id}",
            get(fetch).put(update).delete(discontinue),
        )
        .route("/api/products/{id}/stock", post(adjust_stock))
        .route("/api/stock/audit", get(audit))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready));
    let routes = shared::http::with_callers(routes, state.auth.clone(), state.limiter.clone());
    shared::http::with_defaults(routes, state.metrics.clone()).with_state(state)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductDto {
    id: Uuid,
    name: String,
    description: String,
    price: String,
    category: String,
    stock_quantity: i64,
    available_quantity: i64,
    reserved_quantity: i64,
    low_stock_threshold: i64,
    version: u64,
    deleted: bool,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<Entry> for ProductDto {
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

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Page<T> {
    items: Vec<T>,
    page: usize,
    page_size: usize,
    total_count: usize,
    total_pages: usize,
}

/// 200 with the product and its `ETag: "<version>"`.
fn product_response(status: StatusCode, entry: Entry) -> Response {
    let etag = format!("\"{}\"", entry.product.version);
    let mut response = (status, axum::Json(ProductDto::from(entry))).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

/// `catalog:write` also allows reading.
fn need(caller: &Caller, scope: &str) -> Result<(), Error> {
    if caller.has(scope) || caller.has("catalog:write") {
        Ok(())
    } else {
        Err(Error::Forbidden(scope.into()))
    }
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(input): JsonBody<CreateInput>,
) -> Result<Response, Error> {
    need(&caller, "catalog:write")?;
    let new = domain::validate_create(input).map_err(Error::Validation)?;
    let entry = state.store.create(&new).await?;
    let location = format!("/api/products/{}", entry.product.id);
    let mut response = product_response(StatusCode::CREATED, entry);
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("ascii path"),
    );
    Ok(response)
}

async fn fetch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    need(&caller, "catalog:read")?;
    let id = parse_id(&id)?;
    let entry = state.store.get(id)?.ok_or(Error::NotFound(id))?;
    Ok(product_response(StatusCode::OK, entry))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListParams {
    category: Option<String>,
    page: Option<String>,
    page_size: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, Error> {
    need(&caller, "catalog:read")?;
    let Query(params) = params.map_err(|e| Error::Validation(shared::http::query_errors(&e)))?;
    let (page, page_size) =
        shared::http::paging(params.page.as_deref(), params.page_size.as_deref(), 100)
            .map_err(Error::Validation)?;
    let category = params
        .category
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    let (items, total) = state.store.list(category, page, page_size)?;
    Ok(axum::Json(Page {
        items: items.into_iter().map(ProductDto::from).collect(),
        page,
        page_size,
        total_count: total,
        total_pages: total.div_ceil(page_size),
    })
    .into_response())
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(input): JsonBody<UpdateInput>,
) -> Result<Response, Error> {
    need(&caller, "catalog:write")?;
    let id = parse_id(&id)?;
    let if_match = if_match(&headers, id)?;
    let fields = domain::validate_update(input).map_err(Error::Validation)?;
    let entry = state.store.update(id, &fields, if_match).await?;
    Ok(product_response(StatusCode::OK, entry))
}

async fn discontinue(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    need(&caller, "catalog:write")?;
    let id = parse_id(&id)?;
    let if_match = if_match(&headers, id)?;
    let entry = state.store.delete(id, if_match).await?;
    Ok(product_response(StatusCode::OK, entry))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StockBody {
    delta: Option<i64>,
}

async fn adjust_stock(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<StockBody>,
) -> Result<Response, Error> {
    need(&caller, "catalog:write")?;
    let id = parse_id(&id)?;
    let mut errors = FieldErrors::new();
    match body.delta {
        None => errors.add("delta", "delta is required."),
        Some(0) => errors.add("delta", "delta must not be 0."),
        Some(d) if d.abs() > MAX_QUANTITY => errors.add(
            "delta",
            format!("delta must be between -{MAX_QUANTITY} and {MAX_QUANTITY}."),
        ),
        Some(_) => {}
    }
    errors.into_result().map_err(Error::Validation)?;
    let entry = state
        .store
        .adjust_stock(id, body.delta.expect("validated"))
        .await?;
    Ok(product_response(StatusCode::OK, entry))
}

async fn live() -> StatusCode {
    StatusCode::OK
}

/// Every reservation against its order's latest state (`catalog:write`).
async fn audit(State(state): State<AppState>, caller: Caller) -> Result<Response, Error> {
    if !caller.has("catalog:write") {
        return Err(Error::Forbidden("catalog:write".into()));
    }
    let js = shared::nats::jetstream(state.nats.clone());
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(25),
        crate::audit::audit(&js, &state.orders_stream, &state.store, state.retention),
    )
    .await
    .map_err(|_| Error::OrdersUnavailable("the audit timed out".into()))??;
    Ok(axum::Json(report).into_response())
}

async fn ready(State(state): State<AppState>) -> Response {
    if shared::nats::is_connected(&state.nats) {
        let f = &state.follower;
        let follower = serde_json::json!({
            "applied": f.applied.load(Ordering::Relaxed),
            "releases": f.releases.load(Ordering::Relaxed),
            "commits": f.commits.load(Ordering::Relaxed),
            "unrepairable": f.unrepairable.load(Ordering::Relaxed),
            "poison": f.poison.load(Ordering::Relaxed),
        });
        axum::Json(serde_json::json!({"status": "ready", "nats": "connected", "products": state.store.product_count().unwrap_or_default(), "orderFollower": follower}))
            .into_response()
    } else {
        Problem::unavailable("Not connected to NATS.", 2).into_response()
    }
}

/// A path id that is not a UUID cannot name a product: 404, like an unknown one.
fn parse_id(raw: &str) -> Result<Uuid, Error> {
    shared::http::path_uuid(raw).ok_or(Error::NotFound(Uuid::nil()))
}

/// `If-Match: "<version>"` (weak tags and `*` accepted). An unparseable tag can never match.
fn if_match(headers: &HeaderMap, id: Uuid) -> Result<Option<u64>, Error> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.trim_start_matches("W/").trim_matches('"');
    tag.parse::<u64>()
        .map(Some)
        .map_err(|_| Error::VersionMismatch {
            id,
            expected: 0,
            current: 0,
        })
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = match &self {
            Error::Validation(errors) => Problem::validation(errors.clone()),
            Error::Forbidden(scope) => Problem::new(
                StatusCode::FORBIDDEN,
                format!("This API key lacks the scope {scope}."),
            ),
            Error::NotFound(id) if id.is_nil() => Problem::not_found("No product has this id."),
            Error::NotFound(id) => Problem::not_found(format!("Product {id} was not found.")),
            Error::VersionMismatch {
                current, expected, ..
            } => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                format!(
                    "If-Match does not match: the product is at version {current}, not {expected}."
                ),
            )
            .with_extension("currentVersion", (*current).into()),
            Error::Discontinued(id) => Problem::conflict(format!(
                "Product {id} is discontinued and cannot be changed."
            )),
            Error::Stock(e @ StockError::BelowReserved { .. }) => {
                Problem::conflict(format!("{e}."))
            }
            Error::Stock(e @ StockError::TooLarge) => {
                let mut errors = FieldErrors::new();
                errors.add("delta", format!("{e}."));
                Problem::validation(errors)
            }
            Error::NotCommittable { .. } => Problem::conflict(format!("{self}.")),
            Error::OrdersUnavailable(_) => {
                tracing::warn!(error = %self, "The audit could not read the order stream.");
                Problem::unavailable(
                    "The order stream is temporarily unavailable; retry shortly.",
                    2,
                )
            }
            Error::Storage(_) | Error::Corrupt(_) | Error::Flush(_) => {
                tracing::error!(error = %self, cause = ?self, "Request failed on storage.");
                Problem::internal()
            }
        };
        problem.into_response()
    }
}
