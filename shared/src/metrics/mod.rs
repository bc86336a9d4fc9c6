//! Prometheus metrics for `GET /metrics`, on `prometheus-client` (small tree, text encoder).
//!
//! Two kinds of figures, so that no component carries a metrics handle it does not need:
//! - **events** (HTTP and gRPC calls, their latency, retries) are
//!   recorded where they happen, through the families on [`Metrics`];
//! - **state** (projection lag and checkpoint, pending orders, owed releases, the breaker, sled's
//!   size on disk, counters the components already keep for `/health/ready`) is *sampled at
//!   scrape time* by closures the services register with [`Metrics::sample`]. The figures are
//!   read from the same atomics `/health/ready` reads, so the two cannot disagree.
//!
//! Every name carries the `eshop_` prefix; counters get `_total` from the encoder.
mod samplers;

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use samplers::Samplers;
pub use samplers::Samples;

/// Latency buckets: 250 µs to ~8 s, doubling (16 buckets).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

/// Calls and latency of one side of an RPC (server or client), by method and status code, and
/// (client side) retried attempts. A cheap clone of shared families: components hold an `Rpc`,
/// never the [`Metrics`] (whose samplers may hold the components: that would be a cycle).
#[derive(Debug, Clone)]
pub struct Rpc {
    calls: Family<RpcLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    retries: Family<MethodLabels, Counter>,
}

impl Rpc {
    fn new() -> Self {
        Self {
            calls: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            retries: Family::default(),
        }
    }

    /// One attempt of `method` failed transiently and will be retried.
    pub fn retry(&self, method: &str) {
        self.retries
            .get_or_create(&MethodLabels {
                method: method.to_owned(),
            })
            .inc();
    }

    /// One finished call: `method` is the full path (`/pkg.Service/Method`), `code` the gRPC
    /// status name (`Ok`, `Unavailable`, ...).
    pub fn observe(&self, method: &str, code: &str, elapsed: Duration) {
        self.calls
            .get_or_create(&RpcLabels {
                method: method.to_owned(),
                code: code.to_owned(),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels {
                method: method.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// A service's metrics: the registry, the event families, and the state samplers.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// gRPC calls this service answers.
    pub grpc_server: Rpc,
    /// gRPC calls this service makes (order-svc → product-svc).
    pub grpc_client: Rpc,
    samplers: Samplers,
}

impl Metrics {
    /// A registry with the families every service has and `eshop_build_info{service, version}`.
    pub fn new(service: &'static str, version: &'static str) -> Arc<Self> {
        let mut registry = Registry::with_prefix("eshop");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            http_requests.clone(),
        );
        let http_latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency, by method and route",
            http_latency.clone(),
        );
        let grpc_server = Rpc::new();
        registry.register(
            "grpc_server_calls",
            "gRPC calls answered, by method and status code",
            grpc_server.calls.clone(),
        );
        registry.register(
            "grpc_server_call_duration_seconds",
            "gRPC call latency as served, by method",
            grpc_server.latency.clone(),
        );
        let grpc_client = Rpc::new();
        registry.register(
            "grpc_client_calls",
            "gRPC calls made (after retries), by method and status code",
            grpc_client.calls.clone(),
        );
        registry.register(
            "grpc_client_call_duration_seconds",
            "gRPC call latency as seen by the caller, retries included, by method",
            grpc_client.latency.clone(),
        );
        registry.register(
            "grpc_client_retries",
            "gRPC attempts retried after a transient failure, by method",
            grpc_client.retries.clone(),
        );
        let samplers = Samplers::default();
        samplers.add(move |s| {
            s.gauge(
                "build_info",
                "Always 1; the labels name the build",
                &[("service", service), ("version", version)],
                1.0,
            );
        });
        registry.register_collector(Box::new(samplers.clone()));
        Arc::new(Self {
            registry,
            http_requests,
            http_latency,
            grpc_server,
            grpc_client,
            samplers,
        })
    }

    /// Registers a closure that reports state figures on every scrape. It may hold the service's
    /// components, so they must not hold this `Metrics` (hold an [`Rpc`] or a `Histogram`).
    pub fn sample(&self, sampler: impl Fn(&mut Samples) + Send + Sync + 'static) {
        self.samplers.add(sampler);
    }

    /// The Prometheus text exposition of every family and sample.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The axum middleware counting and timing every answered request by its route template
/// (`/api/orders/{id}`, never the raw path, so ids cannot explode the label space).
pub async fn track_http(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    metrics
        .http_latency
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method,
            route,
            status,
        })
        .inc();
    response
}

/// `GET /metrics`: the text format Prometheus scrapes.
pub async fn serve(State(metrics): State<Arc<Metrics>>) -> Response {
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_samples_render_in_the_text_format() {
        let metrics = Metrics::new("test-svc", "1.2.3");
        metrics
            .grpc_server
            .observe("/p.S/M", "Ok", Duration::from_millis(2));
        metrics.grpc_client.retry("/p.S/M");
        metrics.sample(|s| {
            s.gauge("lag", "How far behind", &[("projection", "a")], 3.0);
            s.counter("applied", "Events applied", &[("projection", "a")], 7);
            s.gauge("lag", "How far behind", &[("projection", "b")], 0.0);
            s.counter("refused", "Refused", &[], 4);
        });
        let text = metrics.render();
        assert!(text.contains(r#"eshop_build_info{service="test-svc",version="1.2.3"} 1"#));
        assert!(text.contains(r#"eshop_grpc_server_calls_total{method="/p.S/M",code="Ok"} 1"#));
        assert!(text.contains(r#"eshop_grpc_client_retries_total{method="/p.S/M"} 1"#));
        assert!(text.contains(r#"eshop_lag{projection="a"} 3"#));
        assert!(text.contains(r#"eshop_lag{projection="b"} 0"#));
        assert!(text.contains(r#"eshop_applied_total{projection="a"} 7"#));
        assert!(
            text.contains("\neshop_refused_total 4\n"),
            "no empty braces"
        );
        assert_eq!(text.matches("# TYPE eshop_lag gauge").count(), 1);
        assert!(text.ends_with("# EOF\n"));
    }
}
