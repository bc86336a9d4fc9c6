//! The webhook routes: register, list, read, delete, and a hook's last delivery attempts. A key
//! bound to a customer sees and registers that customer's hooks only; a hook for every
//! customer's orders needs `orders:admin`. The secret is answered once, at registration.
use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{auth::Caller, problem::JsonBody};
use uuid::Uuid;

use super::{AppState, need};
use crate::{
    domain::{HookDraft, Registrar},
    error::Error,
    webhooks::{Attempt, Hook},
};

/// A hook to register: where to POST, which order events, and optionally whose orders.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(test, schema(as = CreateWebhook))]
pub struct CreateWebhookBody {
    /// `http://` or `https://`; no credentials, no fragment; loopback, private and link-local
    /// addresses are refused unless the service allows them.
    #[cfg_attr(test, schema(value_type = String, required = true, max_length = 2048, pattern = r#"^https?://[A-Za-z0-9._~:\[\]-]+(/[!-"$-~]*)?$"#))]
    url: Option<String>,
    #[cfg_attr(test, schema(value_type = Vec<WebhookEventBody>, required = true, min_items = 1))]
    events: Option<Vec<String>>,
    /// Only this customer's orders (a key bound to a customer: its own, the default). Omitted
    /// by an `orders:admin` key: every customer's orders.
    #[cfg_attr(test, schema(value_type = Option<Uuid>, pattern = r"^(?!0{8}-0{4}-0{4}-0{4}-0{12}$)[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"))]
    customer_id: Option<String>,
}

/// The order events a hook may take.
#[cfg(test)]
#[derive(utoipa::ToSchema)]
#[schema(as = WebhookEvent)]
#[allow(dead_code, clippy::enum_variant_names)]
pub enum WebhookEventBody {
    OrderPlaced,
    OrderConfirmed,
    OrderRejected,
    OrderCancelled,
    OrderShipped,
    OrderStockReleased,
    OrderStockCommitted,
}

/// A registered hook (its secret is shown only when it is registered).
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, schema(as = Webhook))]
pub struct WebhookBody {
    id: Uuid,
    url: String,
    #[cfg_attr(test, schema(value_type = Vec<WebhookEventBody>))]
    events: Vec<&'static str>,
    customer_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    /// `whsec_<base64>`: the key of every delivery's `webhook-signature` (Standard Webhooks).
    /// Answered once, by the registration.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl WebhookBody {
    fn of(hook: &Hook, with_secret: bool) -> Self {
        Self {
            id: hook.id,
            url: hook.url.clone(),
            events: hook.events.iter().map(|e| e.as_str()).collect(),
            customer_id: hook.customer_id,
            created_at: hook.created_at,
            secret: with_secret.then(|| hook.secret.clone()),
        }
    }
}

#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[cfg_attr(test, schema(as = WebhookList))]
pub struct WebhookListBody {
    items: Vec<WebhookBody>,
}

/// One delivery attempt.
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, schema(as = WebhookDelivery))]
pub struct DeliveryBody {
    webhook_id: Uuid,
    #[cfg_attr(test, schema(value_type = WebhookEventBody))]
    event_type: &'static str,
    order_id: Uuid,
    /// The order's version the event carries.
    version: u64,
    /// The `webhook-id` header: the same for every attempt of one event.
    webhook_message_id: String,
    /// 1 for the first attempt of an event.
    attempt: u32,
    /// The receiver's answer; null when there was none.
    status_code: Option<u16>,
    /// Why the attempt failed; null when it succeeded.
    error: Option<String>,
    /// The last attempt failed: the event was given up (the order's later events went on).
    parked: bool,
    at: DateTime<Utc>,
}

/// A hook's last attempts (at most 100), newest first.
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[cfg_attr(test, schema(as = WebhookDeliveries))]
pub struct DeliveriesBody {
    items: Vec<DeliveryBody>,
}

impl From<Attempt> for DeliveryBody {
    fn from(a: Attempt) -> Self {
        Self {
            webhook_id: a.webhook_id,
            event_type: a.event_type.as_str(),
            order_id: a.order_id,
            version: a.version,
            webhook_message_id: a.message_id,
            attempt: a.attempt,
            status_code: a.status_code,
            error: a.error,
            parked: a.parked,
            at: a.at,
        }
    }
}

fn parse_hook_id(raw: &str) -> Result<Uuid, Error> {
    shared::http::path_uuid(raw).ok_or(Error::NoSuchWebhook)
}

/// Register a webhook: every matching order event is POSTed to `url`, signed (Standard
/// Webhooks), at least once and in order per order.
#[cfg_attr(test, utoipa::path(post, path = "/api/webhooks", tag = "webhooks", operation_id = "createWebhook",
    request_body = CreateWebhookBody,
    responses(
        (status = 201, description = "Registered; `secret` is shown this once (Location header)", body = WebhookBody),
        (status = 400, description = "A missing or invalid field (`errors` names it): an unknown event, a URL off the documented shape", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks orders:write, acts for another customer, or registers for every customer without orders:admin", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "A URL of the documented shape that cannot be a hook's: its host does not parse, or it names a loopback, private, link-local or reserved address", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "The webhook store (NATS) is unavailable; nothing was registered", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateWebhookBody>,
) -> Result<Response, Error> {
    need(&caller, "orders:write")?;
    let draft = HookDraft {
        url: body.url,
        events: body.events,
        customer_id: body.customer_id,
    };
    let by = Registrar {
        admin: caller.has("orders:admin"),
        bound_to: caller.customer,
    };
    let hook = state.webhooks.register(draft, by).await?;
    let mut response = (
        StatusCode::CREATED,
        axum::Json(WebhookBody::of(&hook, true)),
    )
        .into_response();
    shared::http::set_location(&mut response, &format!("/api/webhooks/{}", hook.id));
    Ok(response)
}

/// The webhooks this key may see (a key bound to a customer: that customer's), oldest first.
#[cfg_attr(test, utoipa::path(get, path = "/api/webhooks", tag = "webhooks", operation_id = "listWebhooks",
    responses(
        (status = 200, description = "The hooks, without their secrets", body = WebhookListBody),
        (status = 403, description = "The key lacks orders:read", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, Error> {
    need(&caller, "orders:read")?;
    let hooks = state.webhooks.list(caller.customer).await?;
    let items = hooks.iter().map(|h| WebhookBody::of(h, false)).collect();
    Ok(axum::Json(WebhookListBody { items }).into_response())
}

/// One webhook, without its secret.
#[cfg_attr(test, utoipa::path(get, path = "/api/webhooks/{id}", tag = "webhooks", operation_id = "getWebhook",
    params(("id" = String, Path, description = "The webhook id")),
    responses(
        (status = 200, description = "The hook", body = WebhookBody),
        (status = 403, description = "The key lacks orders:read", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "Unknown hook (or another customer's, for a key bound to a customer)", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
pub async fn fetch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    need(&caller, "orders:read")?;
    let hook = state
        .webhooks
        .get(parse_hook_id(&id)?, caller.customer)
        .await?;
    Ok(axum::Json(WebhookBody::of(&hook, false)).into_response())
}

/// Delete a webhook: no event is sent to it any more (an attempt in flight may still land).
#[cfg_attr(test, utoipa::path(delete, path = "/api/webhooks/{id}", tag = "webhooks", operation_id = "deleteWebhook",
    params(("id" = String, Path, description = "The webhook id")),
    responses(
        (status = 204, description = "Deleted, with its delivery attempts"),
        (status = 403, description = "The key lacks orders:write", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "Unknown hook (or another customer's, for a key bound to a customer)", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    need(&caller, "orders:write")?;
    state
        .webhooks
        .delete(parse_hook_id(&id)?, caller.customer)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A webhook's last delivery attempts (at most 100), newest first; a parked event shows
/// `parked: true` on its last attempt.
#[cfg_attr(test, utoipa::path(get, path = "/api/webhooks/{id}/deliveries", tag = "webhooks", operation_id = "listWebhookDeliveries",
    params(("id" = String, Path, description = "The webhook id")),
    responses(
        (status = 200, description = "The attempts, newest first", body = DeliveriesBody),
        (status = 403, description = "The key lacks orders:read", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "Unknown hook (or another customer's, for a key bound to a customer)", body = shared::openapi::ProblemBody, content_type = "application/problem+json"),
    )))]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    need(&caller, "orders:read")?;
    let attempts = state
        .webhooks
        .attempts(parse_hook_id(&id)?, caller.customer)
        .await?;
    let items = attempts.into_iter().map(DeliveryBody::from).collect();
    Ok(axum::Json(DeliveriesBody { items }).into_response())
}
