//! Contracts and plumbing shared by `product-svc` and `order-svc`. No business rules live here.
//!
//! - [`events`]: the JSON bodies that travel on NATS, their subjects and headers.
//! - [`streams`]: the one definition of each JetStream stream, used by publisher and consumer.
//! - [`auth`]: API keys (digests, scopes, customer binding) and the HTTP middleware.
//! - [`correlation`]: validated correlation ids carried across HTTP, gRPC and NATS.
//! - [`fields`]: validation errors keyed by JSON field, free of HTTP.
//! - [`problem`]: the `application/problem+json` body and the JSON body extractor.
//! - [`health`]: readiness, one rule and one body shape for both services.
//! - [`http`]: router defaults (fallbacks, body limit, correlation layer), paging, path ids.
//! - [`metrics`]: Prometheus families, the HTTP middleware and the scrape-time samplers.
//! - [`ratelimit`]: the per-caller token bucket of both HTTP APIs (429).
//! - [`storage`]: the storage error both services wrap.
//! - [`writer`]: the one writer task per store (queued jobs → one batch → answers).
//! - [`lifecycle`]: the start → serve → drain → close sequence of both services.
//! - [`telemetry`], [`nats`], [`shutdown`], [`instance`]: process plumbing.

pub mod auth;
pub mod correlation;
pub mod events;
pub mod fields;
pub mod health;
pub mod http;
pub mod instance;
pub mod lifecycle;
pub mod metrics;
pub mod nats;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod problem;
pub mod ratelimit;
pub mod shutdown;
pub mod storage;
pub mod streams;
pub mod telemetry;
pub mod writer;
