//! Read-only views of this instance's product snapshot (what create-order prices from).
use axum::{
    extract::{Path, Query, State, rejection::QueryRejection},
    response::{IntoResponse, Response},
};
use shared::{auth::Caller, problem::Problem};

use super::{
    AppState,
    body::{SnapshotPage, SnapshotParams, SnapshotRow},
    need,
};
use crate::error::Error;

/// One product as this instance's snapshot holds it.
#[cfg_attr(test, utoipa::path(get, path = "/api/snapshot/products/{id}", tag = "snapshot", operation_id = "getSnapshotProduct",
    params(("id" = String, Path, description = "The product id")),
    responses(
        (status = 200, description = "The snapshot row", body = SnapshotRow),
        (status = 403, description = "The key lacks orders:read", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "Not in the snapshot", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    need(&caller, "orders:read")?;
    let Some(id) = shared::http::path_uuid(&id) else {
        return Ok(Problem::not_found("No product has this id.").into_response());
    };
    match state.product_snapshot.product(id)? {
        Some(view) => Ok(axum::Json(SnapshotRow::new(id, view)).into_response()),
        None => {
            Ok(Problem::not_found(format!("Product {id} is not in the snapshot.")).into_response())
        }
    }
}

/// The snapshot, a page at a time, by product id.
#[cfg_attr(test, utoipa::path(get, path = "/api/snapshot/products", tag = "snapshot", operation_id = "listSnapshotProducts", params(SnapshotParams),
    responses(
        (status = 200, description = "A page of the snapshot", body = SnapshotPage),
        (status = 403, description = "The key lacks orders:read", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<SnapshotParams>, QueryRejection>,
) -> Result<Response, Error> {
    need(&caller, "orders:read")?;
    let Query(params) = params.map_err(|e| Error::Validation(shared::http::query_errors(&e)))?;
    let (page, page_size) =
        shared::http::paging(params.page.as_deref(), params.page_size.as_deref(), 1000)
            .map_err(Error::Validation)?;
    let (rows, total) = state.product_snapshot.page(page, page_size)?;
    Ok(axum::Json(SnapshotPage {
        items: rows
            .into_iter()
            .map(|(id, view)| SnapshotRow::new(id, view))
            .collect(),
        page,
        page_size,
        total_count: total,
        total_pages: total.div_ceil(page_size),
    })
    .into_response())
}
