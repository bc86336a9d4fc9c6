//! Readiness, one rule and one shape for both services. `/health/ready` answers 200 only when
//! the instance can do its main job now, so a load balancer takes it out of rotation otherwise;
//! the body names every check and says which fails, so a person sees why without the logs.
//!
//! Ready: `{"ready": true, "checks": {name: {"ok": true, ...}}, "figures": {...}}`.
//! Not ready: 503 `application/problem+json` with the same `ready`, `checks` and `figures`
//! members, its `detail` naming the failing checks.
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::problem::Problem;

/// The checks of one readiness answer, and figures that inform but do not decide.
#[derive(Debug, Default)]
pub struct Readiness {
    checks: Map<String, Value>,
    failing: Vec<String>,
    figures: Map<String, Value>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// One check: whether it passes, and its detail (an object's members are kept beside `ok`).
    pub fn check(mut self, name: &str, ok: bool, detail: Value) -> Self {
        let mut entry = match detail {
            Value::Object(members) => members,
            Value::Null => Map::new(),
            other => Map::from_iter([("detail".to_owned(), other)]),
        };
        entry.insert("ok".into(), ok.into());
        if !ok {
            self.failing.push(name.to_owned());
        }
        self.checks.insert(name.to_owned(), Value::Object(entry));
        self
    }

    /// A figure shown with the checks (counters, sizes); never decides readiness.
    pub fn figure(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.figures.insert(name.to_owned(), value.into());
        self
    }

    pub fn is_ready(&self) -> bool {
        self.failing.is_empty()
    }
}

impl IntoResponse for Readiness {
    fn into_response(self) -> Response {
        if self.is_ready() {
            let body = serde_json::json!({
                "ready": true,
                "checks": self.checks,
                "figures": self.figures,
            });
            return axum::Json(body).into_response();
        }
        Problem::unavailable(
            format!("Not ready: {} failing.", self.failing.join(", ")),
            1,
        )
        .with_extension("ready", false.into())
        .with_extension("checks", Value::Object(self.checks))
        .with_extension("figures", Value::Object(self.figures))
        .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failing_check_makes_it_unready_and_is_named() {
        let ready = Readiness::new()
            .check("nats", true, serde_json::json!({"connected": true}))
            .check("snapshot", false, serde_json::json!({"lag": 3}))
            .figure("pendingOrders", 2);
        assert!(!ready.is_ready());
        assert_eq!(ready.failing, vec!["snapshot".to_owned()]);
        assert_eq!(ready.checks["nats"]["ok"], true);
        assert_eq!(ready.checks["snapshot"]["lag"], 3);
        assert_eq!(ready.checks["snapshot"]["ok"], false);
        assert!(
            Readiness::new()
                .check("store", true, Value::Null)
                .is_ready()
        );
    }
}
