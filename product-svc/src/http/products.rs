//! The catalog routes: create, list, read, update, discontinue, adjust stock. Each handler checks
//! the caller's scope, parses ids and If-Match, and hands typed input to the store.
use axum::{
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use shared::{auth::Caller, fields::FieldErrors, problem::JsonBody};

use super::{
    AppState,
    body::{CreateProductBody, ListParams, ProductBody, ProductPage, StockBody, UpdateProductBody},
    if_match, need, parse_id,
};
use crate::{
    domain::{self, MAX_QUANTITY},
    error::Error,
    store::Entry,
};

/// The product and its `ETag: "<version>"`.
fn product_response(status: StatusCode, entry: Entry) -> Response {
    let etag = shared::http::etag(entry.product.version);
    let mut response = (status, axum::Json(ProductBody::from(entry))).into_response();
    response.headers_mut().insert(header::ETAG, etag);
    response
}

/// Create a product: its ProductCreated event is in `PRODUCTS` (the catalog's record) when this
/// answers 201. Any instance takes catalog writes.
#[cfg_attr(test, utoipa::path(post, path = "/api/products", tag = "catalog", operation_id = "createProduct",
    request_body = CreateProductBody,
    responses(
        (status = 201, description = "Created (Location and ETag headers)", body = ProductBody),
        (status = 403, description = "The key lacks catalog:write", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The streams did not answer in time (Retry-After)", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateProductBody>,
) -> Result<Response, Error> {
    need(&caller, "catalog:write")?;
    let (draft, stock_quantity) = body.into_draft();
    let new = domain::validate_create(draft, stock_quantity).map_err(Error::Validation)?;
    let entry = state.store.create(&new).await?;
    let location = format!("/api/products/{}", entry.product.id);
    let mut response = product_response(StatusCode::CREATED, entry);
    shared::http::set_location(&mut response, &location);
    Ok(response)
}

/// Read a product (discontinued ones too).
#[cfg_attr(test, utoipa::path(get, path = "/api/products/{id}", tag = "catalog", operation_id = "getProduct",
    params(("id" = String, Path, description = "The product id (a UUID; anything else is unknown)")),
    responses(
        (status = 200, description = "The product (ETag header)", body = ProductBody),
        (status = 403, description = "The key lacks catalog:read", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "Unknown product", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The streams did not answer in time (Retry-After)", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
pub async fn fetch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    need(&caller, "catalog:read")?;
    let id = parse_id(&id)?;
    // Read-your-writes on every instance: a write acknowledged anywhere shows here.
    state.store.sync().await?;
    let entry = state.store.get(id)?.ok_or(Error::NotFound(id))?;
    Ok(product_response(StatusCode::OK, entry))
}

/// List products by id, a page at a time, optionally of one category.
#[cfg_attr(test, utoipa::path(get, path = "/api/products", tag = "catalog", operation_id = "listProducts", params(ListParams),
    responses(
        (status = 200, description = "A page of products", body = ProductPage),
        (status = 403, description = "The key lacks catalog:read", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The streams did not answer in time (Retry-After)", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
pub async fn list(
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
    state.store.sync().await?;
    let (items, total) = state.store.list(category, page, page_size)?;
    Ok(axum::Json(ProductPage {
        items: items.into_iter().map(ProductBody::from).collect(),
        page,
        page_size,
        total_count: total,
        total_pages: total.div_ceil(page_size),
    })
    .into_response())
}

/// Replace the catalog fields; the version grows only when something changed.
#[cfg_attr(test, utoipa::path(put, path = "/api/products/{id}", tag = "catalog", operation_id = "updateProduct",
    params(("id" = String, Path, description = "The product id"), shared::openapi::IfMatch),
    request_body = UpdateProductBody,
    responses(
        (status = 200, description = "Updated (ETag header)", body = ProductBody),
        (status = 403, description = "The key lacks catalog:write", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "Unknown product", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "Discontinued: read-only", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 412, description = "If-Match names another version (`currentVersion` says which)", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The streams did not answer in time (Retry-After)", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<UpdateProductBody>,
) -> Result<Response, Error> {
    need(&caller, "catalog:write")?;
    let id = parse_id(&id)?;
    let if_match = if_match(&headers)?;
    let fields = domain::validate_update(body.into()).map_err(Error::Validation)?;
    let entry = state.store.update(id, &fields, if_match).await?;
    Ok(product_response(StatusCode::OK, entry))
}

/// Discontinue a product: kept and readable with `deleted: true`, read-only, no longer sold
/// (ProductDeleted in the changelog). An action rather than `DELETE`: the product stays.
#[cfg_attr(test, utoipa::path(post, path = "/api/products/{id}/discontinue", tag = "catalog", operation_id = "discontinueProduct",
    params(("id" = String, Path, description = "The product id"), shared::openapi::IfMatch),
    responses(
        (status = 200, description = "Discontinued (or already was)", body = ProductBody),
        (status = 403, description = "The key lacks catalog:write", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "Unknown product", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 412, description = "If-Match names another version", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The streams did not answer in time (Retry-After)", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
pub async fn discontinue(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    need(&caller, "catalog:write")?;
    let id = parse_id(&id)?;
    let if_match = if_match(&headers)?;
    let entry = state.store.discontinue(id, if_match).await?;
    Ok(product_response(StatusCode::OK, entry))
}

/// Restock (+) or write off (−) on-hand stock. Taken by the stock writer instance only.
#[cfg_attr(test, utoipa::path(post, path = "/api/products/{id}/stock", tag = "catalog", operation_id = "adjustStock",
    params(("id" = String, Path, description = "The product id")),
    request_body = StockBody,
    responses(
        (status = 200, description = "Adjusted", body = ProductBody),
        (status = 403, description = "The key lacks catalog:write", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "Unknown product", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "On hand would drop below what is reserved, or exceed 1000000000", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "This instance is not the stock writer (the detail names it), or the streams did not answer in time (Retry-After)", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
pub async fn adjust_stock(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<StockBody>,
) -> Result<Response, Error> {
    need(&caller, "catalog:write")?;
    let id = parse_id(&id)?;
    let mut errors = FieldErrors::new();
    let delta = match body.delta {
        None => {
            errors.add("delta", "delta is required.");
            0
        }
        Some(d) if !(-MAX_QUANTITY..=MAX_QUANTITY).contains(&d) => {
            errors.add(
                "delta",
                format!("delta must be between -{MAX_QUANTITY} and {MAX_QUANTITY}."),
            );
            0
        }
        Some(d) => d,
    };
    errors.into_result().map_err(Error::Validation)?;
    let entry = state.store.adjust_stock(id, delta).await?;
    Ok(product_response(StatusCode::OK, entry))
}
