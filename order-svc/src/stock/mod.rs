//! The gRPC client for product-svc's stock API: one or more product-svc endpoints, each with its
//! own channel and circuit breaker (a dead instance never opens the breaker of a healthy one);
//! deadline per attempt; a transient failure fails over to the next endpoint at once, and only
//! when every endpoint failed does the call back off (exponential, with jitter) and retry; lazy
//! connect; the correlation id in metadata. Only this module (and nowhere else in order-svc)
//! names proto types.
use std::{sync::atomic::AtomicUsize, time::Duration};

use proto::{
    CommitStockRequest, ErrorCode, GetProductsRequest, OrderItem, ReleaseStockRequest,
    ReserveStockRequest, UnrecordedOrder,
};
use rust_decimal::Decimal;
use shared::metrics::Rpc;
use tonic::{Code, Status};
use uuid::Uuid;

use crate::domain::ProductView;

mod breaker;
mod call;
mod endpoint;

use endpoint::Endpoint;

#[derive(Debug, Clone)]
pub struct StockConfig {
    /// product-svc's gRPC URLs (`--product-grpc-url`, comma-separated): every instance is a
    /// peer; calls stick to the last one that answered and fail over on a transient failure.
    pub urls: Vec<String>,
    pub attempt_timeout: Duration,
    pub retries: usize,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
    /// Sent as `authorization: Bearer <token>` on every call (`None`: anonymous product-svc).
    pub token: Option<String>,
    /// PEM CA to verify product-svc's certificate with (`https://` URLs only).
    pub tls_ca: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StockError {
    /// The circuit breaker is open: product-svc was not called.
    #[error("product-svc unavailable: the circuit breaker is open")]
    BreakerOpen,
    /// product-svc is unreachable or overloaded (after retries).
    #[error("product-svc unavailable")]
    Unavailable(#[source] Status),
    /// product-svc failed on its side (INTERNAL, UNKNOWN, ...): not retried in-call, but worth
    /// retrying later (an order stays Pending for the reconciler).
    #[error("product-svc failed")]
    Failed(#[source] Status),
    /// product-svc refused the request itself (INVALID_ARGUMENT, NOT_FOUND, ...): retrying the
    /// same request cannot help.
    #[error("product-svc refused the call")]
    Refused(#[source] Status),
}

impl StockError {
    /// Worth trying again later (not a refusal).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::BreakerOpen | Self::Unavailable(_))
    }
}

/// Business outcome of ReserveStock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    Reserved,
    Failed {
        code: FailureCode,
        reason: String,
        failed_product_ids: Vec<Uuid>,
    },
}

/// Why product-svc refused a reservation: its `FailureCode` as the proto carries it, plus
/// `Other` for a code this client does not know (a newer server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCode {
    InsufficientStock,
    ProductNotFound,
    RequestMismatch,
    Other,
}

pub struct StockClient {
    endpoints: Vec<Endpoint>,
    /// The endpoint calls start with: the last one that answered.
    preferred: AtomicUsize,
    config: StockConfig,
    metrics: Rpc,
}

/// The service path the metrics name calls by, as product-svc's server side does.
const SERVICE_PATH: &str = "/eshop.product.v1.ProductService/";

enum CallError {
    Status(Status),
    /// Every endpoint's breaker is open: nothing was called.
    Open,
}

impl From<CallError> for StockError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Open => StockError::BreakerOpen,
            CallError::Status(s) if transient(&s) => StockError::Unavailable(s),
            CallError::Status(s) if permanent(&s) => StockError::Refused(s),
            CallError::Status(s) => StockError::Failed(s),
        }
    }
}

/// Worth retrying at once: the call may not have reached product-svc, or its reply was lost
/// (tonic reports a connection cut mid-call as UNKNOWN "transport error").
fn transient(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Cancelled => true,
        Code::Unknown => status.message().contains("transport error"),
        _ => false,
    }
}

/// The request itself is wrong: the same call can never succeed. (A refused token is not the
/// order's fault: UNAUTHENTICATED and PERMISSION_DENIED leave orders Pending until the
/// configuration is fixed.)
fn permanent(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unimplemented
    )
}

impl StockClient {
    /// A client of every URL in `config.urls` (at least one). Never fails on an unreachable
    /// product-svc (channels connect lazily); fails on a URL or CA that cannot work.
    pub fn new(config: StockConfig, metrics: Rpc) -> anyhow::Result<Self> {
        anyhow::ensure!(!config.urls.is_empty(), "no product-svc gRPC URL");
        let endpoints = config
            .urls
            .iter()
            .map(|url| {
                let breaker =
                    breaker::Breaker::new(config.breaker_threshold, config.breaker_cooldown);
                Endpoint::connect(
                    url,
                    config.tls_ca.as_deref(),
                    config.attempt_timeout,
                    breaker,
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            endpoints,
            preferred: AtomicUsize::new(0),
            config,
            metrics,
        })
    }

    /// Every endpoint's breaker is open: no product-svc is worth calling now.
    pub fn breaker_open(&self) -> bool {
        self.endpoints.iter().all(|e| e.breaker.is_open())
    }

    /// Each endpoint's URL and whether its breaker is open (readiness shows them).
    pub fn endpoints(&self) -> Vec<(String, bool)> {
        self.endpoints
            .iter()
            .map(|e| (e.url.clone(), e.breaker.is_open()))
            .collect()
    }

    /// Reserves an order's items. `unrecorded`: the order is not on the order stream yet; the
    /// subject and the state (JSON) product-svc publishes there if it never lands.
    pub async fn reserve(
        &self,
        order_id: Uuid,
        items: &[(Uuid, u32)],
        unrecorded: Option<(String, Vec<u8>)>,
    ) -> Result<Reservation, StockError> {
        let req = ReserveStockRequest {
            unrecorded: unrecorded.map(|(subject, state)| UnrecordedOrder { subject, state }),
            order_id: order_id.to_string(),
            items: items
                .iter()
                .map(|(id, q)| OrderItem {
                    product_id: id.to_string(),
                    quantity: *q as i32,
                })
                .collect(),
        };
        let resp = self
            .call("ReserveStock", req, |mut c, r| async move {
                c.reserve_stock(r).await
            })
            .await?;
        if resp.success {
            return Ok(Reservation::Reserved);
        }
        let code = match ErrorCode::try_from(resp.error_code) {
            Ok(ErrorCode::InsufficientStock) => FailureCode::InsufficientStock,
            Ok(ErrorCode::ProductNotFound) => FailureCode::ProductNotFound,
            Ok(ErrorCode::RequestMismatch) => FailureCode::RequestMismatch,
            _ => FailureCode::Other,
        };
        Ok(Reservation::Failed {
            code,
            reason: resp
                .failure_reason
                .unwrap_or_else(|| "stock reservation failed".into()),
            failed_product_ids: resp
                .failed_product_ids
                .iter()
                .filter_map(|s| Uuid::parse_str(s).ok())
                .collect(),
        })
    }

    pub async fn release(&self, order_id: Uuid) -> Result<(), StockError> {
        let req = ReleaseStockRequest {
            order_id: order_id.to_string(),
        };
        let resp = self
            .call("ReleaseStock", req, |mut c, r| async move {
                c.release_stock(r).await
            })
            .await?;
        if resp.success {
            Ok(())
        } else {
            Err(StockError::Refused(Status::failed_precondition(
                resp.failure_reason.unwrap_or_default(),
            )))
        }
    }

    /// Commits a shipped order's reservation: `Ok(false)` if it was already committed. An
    /// unknown or released reservation is `Refused` (it can never be committed).
    pub async fn commit(&self, order_id: Uuid) -> Result<bool, StockError> {
        let req = CommitStockRequest {
            order_id: order_id.to_string(),
        };
        let resp = self
            .call("CommitStock", req, |mut c, r| async move {
                c.commit_stock(r).await
            })
            .await?;
        Ok(resp.committed)
    }

    /// Batch catalog read: the found products as snapshot views (ids product-svc lacks are absent).
    pub async fn get_products(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, ProductView)>, StockError> {
        let req = GetProductsRequest {
            product_ids: ids.iter().map(Uuid::to_string).collect(),
        };
        let resp = self
            .call("GetProducts", req, |mut c, r| async move {
                c.get_products(r).await
            })
            .await?;
        let now = chrono::Utc::now();
        Ok(resp
            .products
            .into_iter()
            .filter_map(|p| {
                let id = Uuid::parse_str(&p.product_id).ok()?;
                let price = p.price.parse::<Decimal>().ok()?;
                Some((
                    id,
                    ProductView {
                        name: p.name,
                        description: p.description,
                        price,
                        category: p.category,
                        version: p.version,
                        deleted: p.deleted,
                        updated_at: now,
                    },
                ))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_codes_are_retried() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Aborted,
            Code::Cancelled,
        ] {
            assert!(transient(&Status::new(code, "")), "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::Internal,
            Code::FailedPrecondition,
            Code::PermissionDenied,
        ] {
            assert!(!transient(&Status::new(code, "")), "{code:?}");
        }
        assert!(
            transient(&Status::unknown("transport error")),
            "a cut connection is transient"
        );
        assert!(!transient(&Status::unknown("boom")));
        assert!(permanent(&Status::invalid_argument("x")));
        assert!(
            !permanent(&Status::internal("x")),
            "a server failure is retried later, not final"
        );
    }
}
