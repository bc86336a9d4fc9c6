//! Tracing initialisation: `RUST_LOG` wins over the default filter; `LOG_FORMAT=json` switches to
//! JSON lines for log shippers. A second call is a no-op (tests start several apps per process).
//!
//! The filter takes `level` and `target=level` directives (`warn,order_svc=debug`), not
//! `EnvFilter`'s span/field directives: `EnvFilter` brings a regex engine, about 0.4 MB of each
//! binary, and nothing here needs it.
use std::str::FromStr;

use tracing_subscriber::{filter::Targets, layer::SubscriberExt, util::SubscriberInitExt};

pub fn init(default_filter: &str) {
    let (filter, rejected) = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => match Targets::from_str(&value) {
            Ok(filter) => (filter, None),
            Err(error) => (default_targets(default_filter), Some((value, error))),
        },
        _ => (default_targets(default_filter), None),
    };
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter);
    let installed = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true),
            )
            .try_init()
    } else {
        registry.with(tracing_subscriber::fmt::layer()).try_init()
    };
    if installed.is_ok()
        && let Some((value, error)) = rejected
    {
        tracing::warn!(rust_log = %value, %error, "RUST_LOG is not a valid filter; using the default.");
    }
}

/// An error and its whole source chain in one line (`outer: cause: root cause`), for logs and
/// start-up messages: every error enum keeps its cause as a `#[source]`, and this shows it.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

fn default_targets(filter: &str) -> Targets {
    Targets::from_str(filter).expect("the built-in default filter parses")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn directives_set_levels_per_target() {
        let t = Targets::from_str("warn,order_svc=debug").unwrap();
        assert!(t.would_enable("order_svc::orders", &Level::DEBUG));
        assert!(!t.would_enable("sled", &Level::INFO));
        assert!(t.would_enable("sled", &Level::WARN));
    }
}
