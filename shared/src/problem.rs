//! RFC 9457 problem details: the one error body both HTTP APIs answer with, served as
//! `application/problem+json`, plus the JSON body extractor that turns every malformed body into one.
use std::collections::BTreeMap;

use axum::{
    extract::{FromRequest, Request},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use crate::{correlation, fields::FieldErrors};

pub const CONTENT_TYPE: &str = "application/problem+json";

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<BTreeMap<String, Vec<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Problem-specific members (e.g. `unknownProductIds`), flattened into the body.
    #[serde(flatten)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
    #[serde(skip)]
    pub retry_after_secs: Option<u64>,
    /// Answering before the body was read (413): tell the client not to reuse the connection.
    #[serde(skip)]
    pub close_connection: bool,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: detail.into(),
            instance: None,
            errors: None,
            correlation_id: None,
            extensions: serde_json::Map::new(),
            retry_after_secs: None,
            close_connection: false,
        }
    }
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }
    pub fn validation(errors: FieldErrors) -> Self {
        let mut p = Self::new(
            StatusCode::BAD_REQUEST,
            "One or more validation errors occurred.",
        );
        p.errors = Some(errors.0);
        p
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, detail)
    }
    /// 500 with a neutral message; the cause is logged by the caller, never sent.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "An unexpected error occurred. Quote the correlation id when reporting it.",
        )
    }
    pub fn unavailable(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut p = Self::new(StatusCode::SERVICE_UNAVAILABLE, detail);
        p.retry_after_secs = Some(retry_after_secs);
        p
    }
    pub fn with_extension(mut self, key: &str, value: serde_json::Value) -> Self {
        self.extensions.insert(key.into(), value);
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(mut self) -> Response {
        if self.instance.is_none() {
            self.instance = correlation::current_path();
        }
        if self.correlation_id.is_none() {
            self.correlation_id = correlation::current();
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response();
        if self.close_connection {
            response
                .headers_mut()
                .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                secs.to_string().parse().expect("digits"),
            );
        }
        response
    }
}

/// Like `axum::Json`, but every rejection is a problem body: 415 without a JSON content type,
/// 413 over the body limit, 400 naming the JSON path for malformed bodies, wrong types and
/// unknown fields.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let mime = v.split(';').next().unwrap_or("").trim();
                mime.eq_ignore_ascii_case("application/json")
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Expected a request body with Content-Type: application/json.",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                let mut p = Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "The request body is larger than the limit of 64 KiB.",
                );
                p.close_connection = true;
                p
            } else {
                Problem::bad_request("The request body could not be read.")
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses a JSON body, reporting the failing path as a field error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = clean_serde_message(&inner);
        if inner.is_syntax() || inner.is_eof() {
            Problem::bad_request(format!("The request body is not valid JSON: {message}."))
        } else {
            let field = if path == "." { "$".to_owned() } else { path };
            let mut errors = FieldErrors::new();
            errors.add(field, message);
            Problem::validation(errors)
        }
    })?;
    de.end().map_err(|_| {
        Problem::bad_request("The request body has trailing characters after the JSON value.")
    })?;
    Ok(value)
}

fn clean_serde_message(err: &serde_json::Error) -> String {
    // serde_json appends " at line L column C"; the path already says where.
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Deserializes an optional JSON integer the way JSON Schema counts one: `3` and `3.0` are the
/// same integer (serde would refuse the second as a float); `3.5` is refused.
pub fn json_integer<'de, D>(deserializer: D) -> Result<Option<i64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(i) = number.as_i64() {
        return Ok(Some(i));
    }
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
        Some(f) if f.fract() == 0.0 => Ok(Some(if f > 0.0 { i64::MAX } else { i64::MIN })),
        _ => Err(serde::de::Error::custom(format!(
            "invalid type: {number}, expected an integer"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Q {
        #[serde(default, deserialize_with = "json_integer")]
        q: Option<i64>,
    }

    #[test]
    fn integers_with_a_zero_fraction_are_integers() {
        let q = |text: &str| parse_json::<Q>(text.as_bytes()).map(|q| q.q);
        assert_eq!(q(r#"{"q": 3}"#).unwrap(), Some(3));
        assert_eq!(q(r#"{"q": 3.0}"#).unwrap(), Some(3));
        assert_eq!(q(r#"{"q": 1e2}"#).unwrap(), Some(100));
        assert_eq!(q(r#"{"q": -2.0}"#).unwrap(), Some(-2));
        assert_eq!(
            q(r#"{"q": 1e300}"#).unwrap(),
            Some(i64::MAX),
            "out of range stays out of range"
        );
        assert_eq!(q(r#"{"q": null}"#).unwrap(), None);
        assert_eq!(q(r#"{}"#).unwrap(), None);
        assert!(q(r#"{"q": 3.5}"#).is_err());
        assert!(q(r#"{"q": "3"}"#).is_err());
    }
}
