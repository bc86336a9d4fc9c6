//! Correlation ids: one id follows a request from HTTP through gRPC and NATS into every log line.
//!
//! Incoming values are untrusted (the original accepted any string, a log-injection vector): a
//! missing value, one longer than 128 characters, or one with characters outside `[A-Za-z0-9._-]`
//! is replaced by a fresh UUID. The id lives in a task-local for the request, so clients (gRPC,
//! event writers) pick it up without threading it through every signature.
use std::time::Instant;

use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};
use tracing::Instrument;
use uuid::Uuid;

/// HTTP header and gRPC metadata key (lower case; HTTP header names are case-insensitive).
pub const HEADER: &str = "x-correlation-id";
pub const MAX_LEN: usize = 128;

/// Request context available to everything that runs inside a request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub correlation_id: String,
    pub path: String,
}

tokio::task_local! {
    static CONTEXT: RequestContext;
}

pub fn is_valid(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The incoming id if it is acceptable, otherwise a fresh UUID.
pub fn normalize(value: Option<&str>) -> String {
    match value {
        Some(v) if is_valid(v) => v.to_owned(),
        _ => Uuid::new_v4().to_string(),
    }
}

pub fn from_headers(headers: &http::HeaderMap) -> String {
    normalize(headers.get(HEADER).and_then(|v| v.to_str().ok()))
}

/// The correlation id of the current request, if there is one.
pub fn current() -> Option<String> {
    CONTEXT.try_with(|c| c.correlation_id.clone()).ok()
}

/// The current request's id, or a new one for background work that has none.
pub fn current_or_new() -> String {
    current().unwrap_or_else(|| Uuid::new_v4().to_string())
}

/// The path of the current HTTP request (used as problem `instance`).
pub fn current_path() -> Option<String> {
    CONTEXT.try_with(|c| c.path.clone()).ok()
}

/// Runs `fut` with `correlation_id` as the ambient id (for background jobs and gRPC handlers).
pub async fn scope<F: Future>(correlation_id: String, path: String, fut: F) -> F::Output {
    CONTEXT
        .scope(
            RequestContext {
                correlation_id,
                path,
            },
            fut,
        )
        .await
}

/// axum middleware: validates or creates the id, puts it on the span and the task-local,
/// echoes it on the response, and logs method, path, status and duration once per request.
pub async fn http_layer(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = from_headers(req.headers());
    let header = HeaderName::from_static(HEADER);
    let value = HeaderValue::from_str(&id).expect("validated correlation id is a header value");
    req.headers_mut().insert(header.clone(), value.clone());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let span = tracing::info_span!("http", correlation_id = %id, %method, %path);
    let context = RequestContext {
        correlation_id: id,
        path: path.clone(),
    };
    let mut response = CONTEXT
        .scope(context, next.run(req))
        .instrument(span.clone())
        .await;
    response.headers_mut().insert(header, value);
    let status = response.status().as_u16();
    let micros = started.elapsed().as_micros() as u64;
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, micros, "Request failed.");
        } else {
            tracing::debug!(status, micros, "Request handled.");
        }
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_valid_ids() {
        assert_eq!(normalize(Some("abc-DEF_1.2")), "abc-DEF_1.2");
        let max = "a".repeat(128);
        assert_eq!(normalize(Some(&max)), max);
    }

    #[test]
    fn replaces_missing_long_or_unsafe_ids() {
        for bad in [
            None,
            Some(""),
            Some("a b"),
            Some("x\ny"),
            Some("ü"),
            Some("a/b"),
        ] {
            let id = normalize(bad);
            assert!(Uuid::parse_str(&id).is_ok(), "{bad:?} -> {id}");
        }
        let long = "a".repeat(129);
        assert_ne!(normalize(Some(&long)), long);
    }
}
