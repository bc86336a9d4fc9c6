//! The HTTP JSON API for catalog admins: the router, the audit and readiness routes, and the one
//! mapping of the crate's errors to problem+json. The catalog routes live in `products.rs`, the
//! JSON shapes in `body.rs`, the OpenAPI document they generate in `openapi.rs`. Nothing here
//! knows about sled.
mod body;
mod openapi;
mod products;

use std::sync::atomic::Ordering;

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use shared::{auth::Caller, problem::Problem};
use uuid::Uuid;

use crate::{domain::StockError, error::Error};

/// What every handler gets: the use cases, the store reads, and the common layers' state.
pub(crate) type AppState = shared::http::AppState<Shared>;

/// The fields of [`AppState`].
pub(crate) struct Shared {
    pub(crate) store: crate::store::Store,
    pub(crate) nats: async_nats::Client,
    pub(crate) auth: shared::auth::Auth,
    pub(crate) limiter: std::sync::Arc<shared::ratelimit::Limiter>,
    pub(crate) metrics: std::sync::Arc<shared::metrics::Metrics>,
    pub(crate) follower: std::sync::Arc<crate::follower::FollowerCounters>,
    pub(crate) cache: std::sync::Arc<crate::cache::CacheState>,
    pub(crate) orders_stream: String,
    /// Closed reservations older than this may be gone (zero: kept forever).
    pub(crate) retention: std::time::Duration,
}

pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/api/products", post(products::create).get(products::list))
        .route(
            "/api/products/{id}",
            get(products::fetch).put(products::update),
        )
        .route(
            "/api/products/{id}/discontinue",
            post(products::discontinue),
        )
        .route("/api/products/{id}/stock", post(products::adjust_stock))
        .route("/api/stock/audit", get(audit))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready));
    let routes = shared::http::with_callers(routes, state.auth.clone(), state.limiter.clone());
    shared::http::with_defaults(routes, state.metrics.clone(), openapi::DOCUMENT).with_state(state)
}

/// `catalog:write` also allows reading.
fn need(caller: &Caller, scope: &str) -> Result<(), Error> {
    if caller.has(scope) || caller.has("catalog:write") {
        Ok(())
    } else {
        Err(Error::Forbidden(scope.into()))
    }
}

/// Alive: the process answers.
#[cfg_attr(test, utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, description = "Alive"))))]
async fn live() -> StatusCode {
    StatusCode::OK
}

/// Every reservation against its order's latest state in the order stream, and every order
/// against its reservation: mismatches by kind, with the first order ids.
#[cfg_attr(test, utoipa::path(get, path = "/api/stock/audit", tag = "stock", operation_id = "auditStock",
    responses(
        (status = 200, description = "The report; `mismatches` 0 when the two services' books agree", body = crate::audit::AuditReport),
        (status = 403, description = "The key lacks catalog:write", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
async fn audit(State(state): State<AppState>, caller: Caller) -> Result<Response, Error> {
    if !caller.has("catalog:write") {
        return Err(Error::Forbidden("catalog:write".into()));
    }
    let js = shared::nats::jetstream(state.nats.clone());
    let ledger = state
        .store
        .ledger_stream()
        .await
        .map_err(|e| Error::OrdersUnavailable(e.to_string()))?
        .clone();
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(25),
        crate::audit::audit(&js, &state.orders_stream, &ledger, state.retention),
    )
    .await
    .map_err(|_| Error::OrdersUnavailable("the audit timed out".into()))??;
    Ok(axum::Json(report).into_response())
}

/// Ready when this instance can serve the catalog and stock: its cache answers, NATS is
/// connected, and the cache has caught up with the streams (the catalog since start, the stock
/// books since their last rebuild). Not being the stock writer is no reason to be unready:
/// followers serve reads and catalog writes. The body names each check (`shared::health`); the
/// stock role and the order follower's counters are figures.
#[cfg_attr(test, utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Ready: `checks` (store, nats, cache) all ok; `figures` the stock role and the order follower's counters", body = serde_json::Value),
        (status = 503, description = "Not ready: `detail` and `checks` name the failing check", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
async fn ready(State(state): State<AppState>) -> Response {
    let store = match state.store.check() {
        Ok(products) => (true, serde_json::json!({"products": products})),
        Err(error) => (false, serde_json::json!({"error": error.to_string()})),
    };
    let connected = shared::nats::is_connected(&state.nats);
    let cache = &state.cache;
    let (catalog, books, seeding) = (
        cache.catalog_ready.load(Ordering::Relaxed),
        cache.books_ready.load(Ordering::Relaxed),
        cache.seeding.load(Ordering::Relaxed),
    );
    let lease = state.store.lease();
    let role = serde_json::json!({
        "instance": lease.instance(),
        "writer": lease.fence().is_some(),
        "writerInstance": lease.holder(),
    });
    let f = &state.follower;
    let follower = serde_json::json!({
        "applied": f.applied.load(Ordering::Relaxed),
        "releases": f.releases.load(Ordering::Relaxed),
        "commits": f.commits.load(Ordering::Relaxed),
        "unrepairable": f.unrepairable.load(Ordering::Relaxed),
        "poison": f.poison.load(Ordering::Relaxed),
        "unrecordedRejected": f.unrecorded.load(Ordering::Relaxed),
    });
    shared::health::Readiness::new()
        .check("store", store.0, store.1)
        .check("nats", connected, serde_json::json!({"connected": connected}))
        .check(
            "cache",
            catalog && books && !seeding,
            serde_json::json!({"catalog": catalog, "stock": books, "seeding": seeding, "poison": cache.poison.load(Ordering::Relaxed)}),
        )
        .figure("stock", role)
        .figure("orderFollower", follower)
        .into_response()
}

/// A path id that is not a UUID cannot name a product: 404, like an unknown one.
fn parse_id(raw: &str) -> Result<Uuid, Error> {
    shared::http::path_uuid(raw).ok_or(Error::NoSuchId)
}

/// `If-Match` as `shared::http::if_match` reads it; a malformed one is a 400 naming the header.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    shared::http::if_match(headers, "product").map_err(Error::Validation)
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = match &self {
            Error::Validation(errors) => Problem::validation(errors.clone()),
            Error::Forbidden(scope) => Problem::new(
                StatusCode::FORBIDDEN,
                format!("This API key lacks the scope {scope}."),
            ),
            Error::NoSuchId => Problem::not_found("No product has this id."),
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
            Error::Stock(e @ StockError::TooLarge) => Problem::conflict(format!("{e}.")),
            Error::NotCommittable { .. } => Problem::conflict(format!("{self}.")),
            Error::OrdersUnavailable(_) => {
                tracing::warn!(error = %shared::telemetry::error_chain(&self), "The audit could not read the order stream.");
                Problem::unavailable(
                    "The order stream is temporarily unavailable; retry shortly.",
                    2,
                )
            }
            Error::NotWriter { writer } => Problem::unavailable(
                match writer {
                    Some(w) => format!(
                        "This instance is not the stock writer; instance {w} is. Send stock changes there, or retry shortly."
                    ),
                    None => "No stock writer is elected yet; retry shortly.".to_owned(),
                },
                1,
            ),
            Error::Unavailable(why) => {
                tracing::warn!(error = %why, "A write or read could not reach the streams.");
                Problem::unavailable(
                    "The catalog and stock streams did not answer in time, so the change may or may not have been made; read the product and retry shortly.",
                    2,
                )
            }
            Error::Storage(_) => {
                tracing::error!(error = %shared::telemetry::error_chain(&self), "Request failed on storage.");
                Problem::internal()
            }
        };
        problem.into_response()
    }
}
