//! The HTTP JSON API for order clients: the router, the readiness probe and the one mapping of
//! the crate's errors to problem+json. The routes live in `orders.rs` and `snapshot.rs`, the
//! JSON shapes in `body.rs`, the OpenAPI document they generate in `openapi.rs`.
mod body;
mod list;
mod openapi;
mod orders;
mod snapshot;
mod watch;
mod watch_many;
mod webhooks;

pub(crate) use body::OrderBody;

use std::sync::atomic::Ordering;

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use shared::{auth::Caller, problem::Problem};
use uuid::Uuid;

use crate::{ProjectionStatus, error::Error};

/// What every handler gets: the use cases, the store reads, and the common layers' state.
pub(crate) type AppState = shared::http::AppState<Shared>;

/// The fields of [`AppState`].
pub(crate) struct Shared {
    pub(crate) auth: shared::auth::Auth,
    pub(crate) limiter: std::sync::Arc<shared::ratelimit::Limiter>,
    pub(crate) metrics: std::sync::Arc<shared::metrics::Metrics>,
    pub(crate) orders: crate::orders::Orders,
    pub(crate) product_snapshot: crate::snapshot::ProductSnapshot,
    pub(crate) snapshot: std::sync::Arc<ProjectionStatus>,
    pub(crate) orders_view: std::sync::Arc<ProjectionStatus>,
    pub(crate) nats: async_nats::Client,
    /// Cancelled when the server stops accepting: open watches end at once.
    pub(crate) stopping: tokio_util::sync::CancellationToken,
    /// How long one watch stays open.
    pub(crate) watch_max: std::time::Duration,
    pub(crate) webhooks: crate::webhooks::Webhooks,
    /// The order stream in stream order (customer watches).
    pub(crate) tail: crate::tail::OrderTail,
}

pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/api/orders", post(orders::create).get(list::list))
        .route("/api/orders/watch", get(watch_many::watch_orders))
        .route("/api/orders/{id}", get(orders::fetch))
        .route("/api/orders/{id}/history", get(orders::history))
        .route("/api/orders/{id}/watch", get(watch::watch))
        .route("/api/orders/{id}/cancel", post(orders::cancel))
        .route("/api/orders/{id}/ship", post(orders::ship))
        .route("/api/webhooks", post(webhooks::create).get(webhooks::list))
        .route(
            "/api/webhooks/{id}",
            get(webhooks::fetch).delete(webhooks::delete),
        )
        .route("/api/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/api/snapshot/products", get(snapshot::list))
        .route("/api/snapshot/products/{id}", get(snapshot::get_one))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready));
    let routes = shared::http::with_callers(routes, state.auth.clone(), state.limiter.clone());
    shared::http::with_defaults(routes, state.metrics.clone(), openapi::DOCUMENT).with_state(state)
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

/// Alive: the process answers.
#[cfg_attr(test, utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, description = "Alive"))))]
async fn live() -> StatusCode {
    StatusCode::OK
}

/// Ready when this instance can take an order now: connected to NATS (every order is written
/// to the order stream first) and both read models caught up with their streams since start.
/// Independent of product-svc (an order it cannot reserve is taken as 202 Pending). The body
/// names each check (`shared::health`).
#[cfg_attr(test, utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Ready: `checks` (nats, snapshot, ordersView) all ok; `figures` pending orders, owed stock work, conflicts", body = serde_json::Value),
        (status = 503, description = "Not ready: `detail` and `checks` name the failing check", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
async fn ready(State(state): State<AppState>) -> Response {
    let figures = state.orders.figures();
    let webhooks = state.webhooks.figures();
    let mut snapshot = projection_details(&state.snapshot);
    snapshot["products"] = state.product_snapshot.len().unwrap_or_default().into();
    let mut view = projection_details(&state.orders_view);
    view["orders"] = figures.view_rows.into();
    let connected = shared::nats::is_connected(&state.nats);
    shared::health::Readiness::new()
        .check(
            "nats",
            connected,
            serde_json::json!({"connected": connected}),
        )
        .check(
            "snapshot",
            state.snapshot.ready.load(Ordering::SeqCst),
            snapshot,
        )
        .check(
            "ordersView",
            state.orders_view.ready.load(Ordering::SeqCst),
            view,
        )
        .figure("pendingOrders", figures.pending)
        .figure("owedStockWork", figures.owed_stock_work)
        .figure("casConflicts", figures.cas_conflicts)
        .figure("duplicateWork", figures.duplicate_work)
        .figure("stockCircuitOpen", figures.breaker_open)
        .figure("stockEndpoints", stock_endpoints(&state.orders))
        .figure("webhookBacklog", webhooks.backlog.load(Ordering::Relaxed))
        .figure(
            "webhooksDelivered",
            webhooks.delivered.load(Ordering::Relaxed),
        )
        .figure("webhooksParked", webhooks.parked.load(Ordering::Relaxed))
        .into_response()
}

fn stock_endpoints(orders: &crate::orders::Orders) -> serde_json::Value {
    let endpoints = orders.stock_endpoints().into_iter();
    endpoints
        .map(|(url, open)| serde_json::json!({"url": url, "breakerOpen": open}))
        .collect()
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

/// Whose orders a listing or a watch covers: a key bound to a customer covers its own (asking
/// for another is a 403); naming no customer covers every order and needs `orders:admin`.
fn customer_scope(caller: &Caller, asked: Option<Uuid>) -> Result<Option<Uuid>, Error> {
    match (caller.customer, asked) {
        (Some(bound), None) => Ok(Some(bound)),
        (Some(bound), Some(asked)) if asked != bound => Err(Error::Forbidden(format!(
            "This API key acts for customer {bound} only."
        ))),
        (None, None) => need(caller, "orders:admin").map(|()| None),
        (_, asked) => Ok(asked),
    }
}

/// A path id that is not a UUID cannot name an order: 404, like an unknown one.
fn parse_id(raw: &str) -> Result<Uuid, Error> {
    shared::http::path_uuid(raw).ok_or(Error::NoSuchId)
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = match &self {
            Error::Validation(errors) => Problem::validation(errors.clone()),
            Error::Forbidden(why) => Problem::new(StatusCode::FORBIDDEN, why.clone()),
            Error::NoSuchId => Problem::not_found("No order has this id."),
            Error::NotFound(id) => Problem::not_found(format!("Order {id} was not found.")),
            Error::Unprocessable(errors) => {
                let mut p = Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "The request is well-formed but breaks a business rule.",
                );
                p.errors = Some(errors.0.clone());
                p
            }
            Error::UnknownProducts(ids) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Some products are unknown or discontinued.",
            )
            .with_extension("unknownProductIds", serde_json::json!(ids)),
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
            Error::VersionMismatch {
                current, expected, ..
            } => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                format!(
                    "If-Match does not match: the order is at version {current}, not {expected}."
                ),
            )
            .with_extension("currentVersion", (*current).into()),
            Error::Transition(t) => Problem::conflict(format!("{t}.")),
            Error::CatalogUnavailable(_) => {
                tracing::warn!(error = %shared::telemetry::error_chain(&self), "Catalog read-through failed.");
                Problem::unavailable("Product data is temporarily unavailable; retry shortly.", 2)
            }
            Error::OrderStoreUnavailable(_) => {
                tracing::warn!(error = %shared::telemetry::error_chain(&self), "The order stream is unreachable.");
                Problem::unavailable(
                    "The order store is temporarily unavailable; retry shortly (a retry with the \
                     same Idempotency-Key never creates a second order).",
                    1,
                )
            }
            Error::Contended(_) => {
                tracing::warn!(error = %shared::telemetry::error_chain(&self), "An order kept changing under a request.");
                Problem::unavailable("The order is changing too often; retry shortly.", 1)
            }
            Error::NoSuchWebhook => Problem::not_found("No webhook has this id."),
            Error::WebhookStoreUnavailable(_) => {
                tracing::warn!(error = %shared::telemetry::error_chain(&self), "The webhook store is unreachable.");
                Problem::unavailable(
                    "The webhook store is temporarily unavailable; retry shortly.",
                    1,
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
