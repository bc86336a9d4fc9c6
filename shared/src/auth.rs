//! API keys for both HTTP APIs: `Authorization: Bearer <key>`, checked against a key file that
//! holds only SHA-256 digests (the keys themselves are never stored), with scopes and an optional
//! customer binding.
//!
//! The file's shape is fixed so operators and tools can write it:
//! `{"keys": [{"name": "ops", "sha256": "<hex>", "scopes": ["orders:admin"], "customerId": "<uuid>"}]}`.
//! A malformed file or an unknown scope stops the service at start with one message naming the
//! entry. A presented key is hashed and compared with **every** entry in constant time, so the
//! answer's timing says nothing about which digest came close.
use std::{path::Path, sync::Arc};

use axum::{
    extract::{FromRequestParts, Request, State},
    http::{HeaderValue, StatusCode, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::problem::Problem;

/// Why a key file or token file cannot be used; start-up stops with it (causes kept).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the {what} {}", path.display())]
    Read {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token in {} must be at least 16 characters", path.display())]
    ShortToken { path: std::path::PathBuf },
    #[error(
        "not a key file; expected {{\"keys\": [{{\"name\", \"sha256\", \"scopes\", \"customerId\"?}}]}}"
    )]
    NotAKeyFile(#[source] serde_json::Error),
    /// An entry breaks a rule; `at` names it.
    #[error("{at}: {why}")]
    Entry { at: String, why: String },
    #[error("API key file {}", path.display())]
    InFile {
        path: std::path::PathBuf,
        #[source]
        source: Box<AuthError>,
    },
    #[error(
        "{service} needs --api-keys FILE (see `just key`), or --allow-anonymous to run without authentication"
    )]
    NoKeys { service: String },
}

/// Paths anyone may call: probes, metrics and the API description.
pub fn is_open(path: &str) -> bool {
    path.starts_with("/health/") || path == "/metrics" || path == "/openapi.json"
}

/// The hex SHA-256 digest of a key, as the key file stores it.
pub fn hash_key(key: &str) -> String {
    digest(key).iter().map(|b| format!("{b:02x}")).collect()
}

/// A shared secret (the gRPC token) read from a file: its SHA-256 digest, and the token.
pub fn read_token(path: &Path) -> Result<([u8; 32], String), AuthError> {
    let token = std::fs::read_to_string(path)
        .map_err(|source| AuthError::Read {
            what: "token file",
            path: path.to_path_buf(),
            source,
        })?
        .trim()
        .to_owned();
    if token.len() < 16 {
        return Err(AuthError::ShortToken {
            path: path.to_path_buf(),
        });
    }
    Ok((digest(&token), token))
}

fn digest(value: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, value.as_bytes());
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// Whether `presented` is the secret of `expected` (compared as digests, in constant time).
pub fn token_matches(expected: &[u8; 32], presented: &str) -> bool {
    bool::from(expected.as_slice().ct_eq(&digest(presented)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    keys: Vec<KeyEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyEntry {
    name: String,
    sha256: String,
    scopes: Vec<String>,
    #[serde(default)]
    customer_id: Option<String>,
}

/// Who is calling: a key's name, scopes and customer binding (or the anonymous caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    scopes: Vec<String>,
    /// A key bound to a customer acts for that customer only.
    pub customer: Option<Uuid>,
    /// Anonymous mode (`--allow-anonymous`): every scope, no binding.
    anonymous: bool,
}

impl Caller {
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".into(),
            scopes: Vec::new(),
            customer: None,
            anonymous: true,
        }
    }

    pub fn has(&self, scope: &str) -> bool {
        self.anonymous || self.scopes.iter().any(|s| s == scope)
    }

    /// The caller of anonymous mode (rate-limited by client IP, not by key).
    pub fn is_anonymous(&self) -> bool {
        self.anonymous
    }
}

/// The keys a service accepts.
#[derive(Debug, Clone)]
pub struct Keys {
    entries: Arc<Vec<([u8; 32], Caller)>>,
}

impl Keys {
    /// Reads a key file; `scopes` are the ones this service knows. The error names the entry.
    pub fn load(path: &Path, scopes: &[&str]) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            what: "API key file",
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, scopes).map_err(|e| AuthError::InFile {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    pub fn parse(text: &str, scopes: &[&str]) -> Result<Self, AuthError> {
        let file: KeyFile = serde_json::from_str(text).map_err(AuthError::NotAKeyFile)?;
        let mut entries = Vec::with_capacity(file.keys.len());
        for (i, entry) in file.keys.into_iter().enumerate() {
            let at = format!("entry {i} ({:?})", entry.name);
            let refuse = |why: String| AuthError::Entry {
                at: at.clone(),
                why,
            };
            if entry.name.trim().is_empty() {
                return Err(refuse("name must not be empty".into()));
            }
            let digest = parse_digest(&entry.sha256).ok_or_else(|| {
                refuse("sha256 must be 64 hex digits (the SHA-256 of the key)".into())
            })?;
            if entry.scopes.is_empty() {
                return Err(refuse("scopes must not be empty".into()));
            }
            if let Some(unknown) = entry.scopes.iter().find(|s| !scopes.contains(&s.as_str())) {
                return Err(refuse(format!(
                    "unknown scope {unknown:?}; this service knows {}",
                    scopes.join(", ")
                )));
            }
            let customer = match entry.customer_id.as_deref() {
                None => None,
                Some(raw) => match Uuid::parse_str(raw) {
                    Ok(id) if !id.is_nil() => Some(id),
                    _ => return Err(refuse("customerId must be a non-nil UUID".into())),
                },
            };
            entries.push((
                digest,
                Caller {
                    name: entry.name,
                    scopes: entry.scopes,
                    customer,
                    anonymous: false,
                },
            ));
        }
        Ok(Self {
            entries: Arc::new(entries),
        })
    }

    /// The caller a presented key belongs to. Every entry is compared, in constant time.
    pub fn check(&self, presented: &str) -> Option<Caller> {
        let presented = digest(presented);
        let mut found = None;
        for (stored, caller) in self.entries.iter() {
            if bool::from(stored.ct_eq(&presented)) && found.is_none() {
                found = Some(caller.clone());
            }
        }
        found
    }
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// How a service authenticates HTTP callers.
#[derive(Debug, Clone)]
pub enum Auth {
    Keys(Keys),
    /// Every caller is [`Caller::anonymous`] (`--allow-anonymous`).
    Anonymous,
}

impl Auth {
    /// From the flags: a key file, or anonymous only when explicitly allowed.
    pub fn from_config(
        api_keys: Option<&Path>,
        allow_anonymous: bool,
        scopes: &[&str],
        service: &str,
    ) -> Result<Self, AuthError> {
        match (api_keys, allow_anonymous) {
            (Some(path), _) => Keys::load(path, scopes).map(Auth::Keys),
            (None, true) => {
                tracing::warn!(
                    service,
                    "Running without API keys (--allow-anonymous): anyone who reaches the HTTP port has every scope."
                );
                Ok(Auth::Anonymous)
            }
            (None, false) => Err(AuthError::NoKeys {
                service: service.to_owned(),
            }),
        }
    }
}

/// The axum middleware: open paths pass; others need a valid bearer key (401 otherwise), and the
/// caller is put in the request's extensions for handlers to check scopes (403).
pub async fn authenticate(State(auth): State<Auth>, mut request: Request, next: Next) -> Response {
    if is_open(request.uri().path()) {
        return next.run(request).await;
    }
    let caller = match &auth {
        Auth::Anonymous => Some(Caller::anonymous()),
        Auth::Keys(keys) => request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .and_then(|k| keys.check(k)),
    };
    match caller {
        Some(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        None => unauthorized(),
    }
}

fn unauthorized() -> Response {
    let mut response = Problem::new(
        StatusCode::UNAUTHORIZED,
        "A valid API key is required: send Authorization: Bearer <key>.",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCOPES: &[&str] = &["orders:read", "orders:write", "orders:admin"];

    fn file(entries: &str) -> String {
        format!("{{\"keys\": [{entries}]}}")
    }

    #[test]
    fn keys_are_stored_as_digests_and_matched_with_their_scopes_and_customer() {
        let customer = Uuid::new_v4();
        let text = file(&format!(
            r#"{{"name": "ops", "sha256": "{}", "scopes": ["orders:admin"]}},
               {{"name": "ann", "sha256": "{}", "scopes": ["orders:read", "orders:write"], "customerId": "{customer}"}}"#,
            hash_key("ops-secret"),
            hash_key("ann-secret")
        ));
        let keys = Keys::parse(&text, SCOPES).unwrap();
        let ops = keys.check("ops-secret").unwrap();
        assert!(ops.has("orders:admin") && !ops.has("orders:write"));
        assert_eq!(ops.customer, None);
        let ann = keys.check("ann-secret").unwrap();
        assert_eq!((ann.name.as_str(), ann.customer), ("ann", Some(customer)));
        assert!(!ann.has("orders:admin"));
        assert!(keys.check("wrong").is_none());
        assert!(keys.check("").is_none());
        assert!(Caller::anonymous().has("orders:admin"));
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_bad_file_is_refused_naming_the_entry() {
        let good = hash_key("k");
        for (text, expect) in [
            ("not json".to_owned(), "not a key file"),
            (
                file(r#"{"name": "x", "sha256": "abc", "scopes": ["orders:read"]}"#),
                "entry 0 (\"x\"): sha256",
            ),
            (
                file(&format!(
                    r#"{{"name": "a", "sha256": "{good}", "scopes": ["orders:read"]}}, {{"name": "b", "sha256": "{good}", "scopes": ["catalog:write"]}}"#
                )),
                "entry 1 (\"b\"): unknown scope \"catalog:write\"",
            ),
            (
                file(&format!(
                    r#"{{"name": "c", "sha256": "{good}", "scopes": []}}"#
                )),
                "scopes must not be empty",
            ),
            (
                file(&format!(
                    r#"{{"name": "d", "sha256": "{good}", "scopes": ["orders:read"], "customerId": "nope"}}"#
                )),
                "customerId must be a non-nil UUID",
            ),
            (
                file(&format!(
                    r#"{{"name": "e", "sha256": "{good}", "scopes": ["orders:read"], "extra": 1}}"#
                )),
                "not a key file",
            ),
        ] {
            let error = crate::telemetry::error_chain(&Keys::parse(&text, SCOPES).unwrap_err());
            assert!(error.contains(expect), "{error} should contain {expect}");
        }
        let error = Auth::from_config(None, false, SCOPES, "order-svc").unwrap_err();
        assert!(error.to_string().contains("--api-keys"), "{error}");
    }
}
