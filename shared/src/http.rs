//! What both HTTP APIs share besides the problem body: the common router layers and fallbacks,
//! paging rules, query and path-id parsing. One place, so both services answer alike.
use std::sync::Arc;

use axum::{
    Router,
    extract::{DefaultBodyLimit, State, rejection::QueryRejection},
    http::StatusCode,
};
use uuid::Uuid;

use crate::{fields::FieldErrors, metrics::Metrics, problem::Problem};

/// A service's handler state: its fields behind one `Arc`. axum clones the state for every
/// request, and cloning and dropping order-svc's fields one by one was an eighth of its CPU
/// per order.
pub struct AppState<T>(Arc<T>);

impl<T> AppState<T> {
    pub fn new(shared: T) -> Self {
        Self(Arc::new(shared))
    }
}

impl<T> Clone for AppState<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> std::ops::Deref for AppState<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Request body limit of both APIs (the 413 message in `problem.rs` says 64 KiB).
pub const BODY_LIMIT: usize = 64 * 1024;

/// How long one HTTP request may take before it is answered 503 (a stuck dependency must not
/// hold a connection forever).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

async fn time_limit(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!("A request ran past the HTTP request timeout.");
            Problem::unavailable("The request took too long; retry shortly.", 1).into_response()
        }
    }
}

/// Adds what every route of both services has: `GET /metrics` and `GET /openapi.json` (the
/// service's committed `document`; both open, outside authentication), problem+json 404/405 fallbacks,
/// the body limit, the request timeout, request metrics (outside authentication and the rate
/// limit, so 401 and 429 are counted) and the correlation-id middleware (outermost, so every
/// answer carries the id).
pub fn with_defaults<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    metrics: Arc<Metrics>,
    document: &'static str,
) -> Router<S> {
    let scrape = metrics.clone();
    router
        .route(
            "/metrics",
            axum::routing::get(move || crate::metrics::serve(State(scrape.clone()))),
        )
        .route(
            "/openapi.json",
            axum::routing::get(move || async move { json_text(document) }),
        )
        .fallback(|| async { Problem::not_found("No such resource.") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "This method is not allowed on this resource.",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(time_limit))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            crate::metrics::track_http,
        ))
        .layer(axum::middleware::from_fn(crate::correlation::http_layer))
}

/// Authenticates the routes added so far (401, or the `Caller` in the request), then limits each
/// caller's rate (429): authentication runs first so the limit is per key. Routes and fallbacks
/// added later are not covered.
pub fn with_callers<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    auth: crate::auth::Auth,
    limiter: std::sync::Arc<crate::ratelimit::Limiter>,
) -> Router<S> {
    router
        .layer(axum::middleware::from_fn_with_state(
            limiter,
            crate::ratelimit::limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::authenticate,
        ))
}

/// A JSON document kept as text (an OpenAPI document, compacted), served as `application/json`.
pub fn json_text(text: &'static str) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response()
}

/// A `&'static str` of the JSON text `$json` (a constant) without the whitespace between its
/// tokens, worked out at compile time: each service serves its committed OpenAPI document
/// (pretty, for people and diffs) this way, so only the compact text is in the binary (~25 KB
/// less for order-svc's document).
#[macro_export]
macro_rules! compact_json {
    ($json:expr) => {{
        const JSON: &str = $json;
        static COMPACT: [u8; $crate::http::minified_json_len(JSON)] =
            $crate::http::minify_json(JSON);
        match ::core::str::from_utf8(&COMPACT) {
            Ok(text) => text,
            Err(_) => panic!("compacted JSON stays UTF-8"),
        }
    }};
}

/// The length of `json` without the whitespace between its tokens (for [`crate::compact_json!`]).
pub const fn minified_json_len(json: &str) -> usize {
    compact(json, &mut [])
}

/// `json` without the whitespace between its tokens; `N` is [`minified_json_len`] of it.
pub const fn minify_json<const N: usize>(json: &str) -> [u8; N] {
    let mut out = [0u8; N];
    assert!(
        compact(json, &mut out) == N,
        "N must be minified_json_len of the same text"
    );
    out
}

/// Copies the bytes of `json` that stay into `out`, as far as it is long; returns how many stay.
const fn compact(json: &str, out: &mut [u8]) -> usize {
    let bytes = json.as_bytes();
    let (mut i, mut len, mut state) = (0, 0, Scan::new());
    while i < bytes.len() {
        if state.keeps(bytes[i]) {
            if len < out.len() {
                out[len] = bytes[i];
            }
            len += 1;
        }
        i += 1;
    }
    len
}

/// Where a scan of JSON text is: inside a string, and just after a backslash in one.
struct Scan {
    in_string: bool,
    escaped: bool,
}

impl Scan {
    const fn new() -> Self {
        Self {
            in_string: false,
            escaped: false,
        }
    }

    /// Whether byte `b` stays: everything in a string, outside only what is not whitespace.
    const fn keeps(&mut self, b: u8) -> bool {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
            }
            return true;
        }
        if b == b'"' {
            self.in_string = true;
        }
        !matches!(b, b' ' | b'\n' | b'\r' | b'\t')
    }
}

/// The last page a listing accepts (the documents state it as the maximum).
pub const MAX_PAGE: usize = 1_000_000;

/// page ≥ 1 (default 1), pageSize 1..=max (default 20); errors keyed `page` / `pageSize`.
pub fn paging(
    page: Option<&str>,
    page_size: Option<&str>,
    max: usize,
) -> Result<(usize, usize), FieldErrors> {
    let mut errors = FieldErrors::new();
    // Digits only: `str::parse` would also take a sign ("+5"), which the documents do not allow.
    let number = |s: &str| {
        if s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse::<usize>().ok()
        } else {
            None
        }
    };
    let page = match page.map(number) {
        None => 1,
        Some(Some(p)) if (1..=MAX_PAGE).contains(&p) => p,
        Some(_) => {
            errors.add(
                "page",
                format!("page must be an integer between 1 and {MAX_PAGE}."),
            );
            1
        }
    };
    let page_size = match page_size.map(number) {
        None => 20,
        Some(Some(s)) if (1..=max).contains(&s) => s,
        Some(_) => {
            errors.add(
                "pageSize",
                format!("pageSize must be an integer between 1 and {max}."),
            );
            20
        }
    };
    errors.into_result()?;
    Ok((page, page_size))
}

/// A query string axum could not parse, as a field error.
pub fn query_errors(rejection: &QueryRejection) -> FieldErrors {
    let mut errors = FieldErrors::new();
    errors.add("query", rejection.body_text());
    errors
}

/// `If-Match: "<version>"`, `W/"<version>"`, a bare `<version>` or `*` (any version) → the
/// version it names (`None`: no header, or `*`). Anything else is an error naming the header;
/// `entity` names what the version is of, in its message.
pub fn if_match(headers: &axum::http::HeaderMap, entity: &str) -> Result<Option<u64>, FieldErrors> {
    let Some(value) = headers.get(axum::http::header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("");
    if text == "*" {
        return Ok(None);
    }
    fn unquote(t: &str) -> Option<&str> {
        t.strip_prefix('"')?.strip_suffix('"')
    }
    // A weak tag must be quoted; a strong one may also be the bare version.
    let version = match text.strip_prefix("W/") {
        Some(weak) => unquote(weak),
        None => unquote(text).or(Some(text)),
    }
    .filter(|v| (1..=19).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()))
    .and_then(|v| v.parse::<u64>().ok());
    version.map(Some).ok_or_else(|| {
        let mut errors = FieldErrors::new();
        errors.add(
            "If-Match",
            format!("If-Match must be an entity tag such as \"3\" (the {entity}'s version) or *."),
        );
        errors
    })
}

/// Sets `Location` on a created resource's answer (`path` is one of our ASCII paths).
pub fn set_location(response: &mut axum::response::Response, path: &str) {
    let value = axum::http::HeaderValue::from_str(path).expect("an ASCII path");
    response
        .headers_mut()
        .insert(axum::http::header::LOCATION, value);
}

/// The strong entity tag of a version: `"<version>"`.
pub fn etag(version: u64) -> axum::http::HeaderValue {
    axum::http::HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a header value")
}

/// A path id: a non-nil UUID, or `None` (the caller answers 404, as for an unknown id).
pub fn path_uuid(raw: &str) -> Option<Uuid> {
    Uuid::parse_str(raw).ok().filter(|id| !id.is_nil())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_minified_outside_strings_only() {
        const RAW: &str =
            "{\n  \"a b\": [1, 2],\n\t\"c\": \"x \\\" { y\",\r\n  \"d\": \"\\\\\" }\n";
        static MIN: &str = crate::compact_json!(RAW);
        let min = MIN;
        assert_eq!(min, r#"{"a b":[1,2],"c":"x \" { y","d":"\\"}"#);
        let value: serde_json::Value = serde_json::from_str(RAW).unwrap();
        assert_eq!(min, serde_json::to_string(&value).unwrap());
    }

    #[test]
    fn paging_defaults_and_bounds() {
        assert_eq!(paging(None, None, 100).unwrap(), (1, 20));
        assert_eq!(paging(Some("3"), Some("100"), 100).unwrap(), (3, 100));
        let errors = paging(Some("0"), Some("101"), 100).unwrap_err();
        assert!(errors.contains("page") && errors.contains("pageSize"));
        assert!(paging(Some("x"), None, 100).is_err());
    }

    #[test]
    fn path_ids_must_be_non_nil_uuids() {
        assert!(path_uuid(&Uuid::new_v4().to_string()).is_some());
        assert!(path_uuid(&Uuid::nil().to_string()).is_none());
        assert!(path_uuid("nope").is_none());
    }

    #[test]
    fn if_match_takes_the_documented_forms_and_names_the_header_otherwise() {
        let tag = |value: &str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(axum::http::header::IF_MATCH, value.parse().unwrap());
            if_match(&headers, "order")
        };
        assert_eq!(
            if_match(&axum::http::HeaderMap::new(), "order").unwrap(),
            None
        );
        assert_eq!(tag("*").unwrap(), None);
        assert_eq!(tag("\"3\"").unwrap(), Some(3));
        assert_eq!(tag("W/\"3\"").unwrap(), Some(3));
        assert_eq!(tag("3").unwrap(), Some(3));
        for bad in [
            "W/3",
            "\"\"",
            "\"3",
            "abc",
            "\"-1\"",
            "\"99999999999999999999\"",
            " 3",
        ] {
            let errors = tag(bad).unwrap_err();
            assert!(errors.contains("If-Match"), "{bad}");
        }
        assert_eq!(etag(7), "\"7\"");
    }
}
