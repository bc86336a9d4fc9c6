//! The gRPC client for product-svc's stock API: deadline per attempt, retries with exponential
//! backoff and jitter on transient codes only, a circuit breaker so a dead product-svc costs
//! nothing per request while open, lazy connect, and the correlation id in metadata.
//! Only this module (and nowhere else in order-svc) names proto types.
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use proto::{
    CommitStockRequest, ErrorCode, GetProductsRequest, OrderItem, ReleaseStockRequest,
    ReserveStockRequest, product_service_client::ProductServiceClient,
};
use rust_decimal::Decimal;
use shared::metrics::Rpc;
use tonic::{Code, Request, Status, transport::Channel};
use uuid::Uuid;

use crate::domain::ProductView;

mod breaker;

use breaker::Breaker;

#[derive(Debug, Clone)]
pub struct StockConfig {
    pub url: String,
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
    client: ProductServiceClient<Channel>,
    config: StockConfig,
    breaker: Breaker,
    metrics: Rpc,
}

/// The service path the metrics name calls by, as product-svc's server side does.
const SERVICE_PATH: &str = "/eshop.product.v1.ProductService/";

enum CallError {
    Status(Status),
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
    /// Never fails on an unreachable product-svc: the channel connects lazily. Fails on a URL
    /// or CA that cannot work.
    pub fn new(config: StockConfig, metrics: Rpc) -> anyhow::Result<Self> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(config.url.clone())?;
        if let Some(ca) = &config.tls_ca {
            anyhow::ensure!(
                String::from_utf8_lossy(ca).contains("-----BEGIN CERTIFICATE-----"),
                "the gRPC TLS CA file holds no PEM certificate"
            );
            endpoint = endpoint.tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
            )?;
        }
        let channel = endpoint
            .connect_timeout(config.attempt_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok(Self {
            client: ProductServiceClient::new(channel),
            breaker: Breaker::new(config.breaker_threshold, config.breaker_cooldown),
            config,
            metrics,
        })
    }

    pub fn breaker_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// Runs one unary call with deadline, metadata, retries and the breaker.
    async fn call<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        req: Req,
        f: F,
    ) -> Result<Resp, StockError>
    where
        Req: Clone,
        F: Fn(ProductServiceClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let cid = shared::correlation::current_or_new();
        let path = format!("{SERVICE_PATH}{method}");
        let call_started = Instant::now();
        let attempt = std::sync::atomic::AtomicU32::new(0);
        let op = || async {
            if !self.breaker.allow() {
                return Err(CallError::Open);
            }
            let n = attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let request = self.request(req.clone(), &cid);
            let started = Instant::now();
            let result =
                tokio::time::timeout(self.config.attempt_timeout, f(self.client.clone(), request))
                    .await
                    .unwrap_or_else(|_| Err(Status::deadline_exceeded("client deadline exceeded")));
            self.attempted(method, n, &cid, started.elapsed(), result.as_ref().err());
            result
                .map(tonic::Response::into_inner)
                .map_err(CallError::Status)
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.config.initial_backoff)
            .with_factor(2.0)
            .with_max_delay(self.config.max_backoff)
            .with_max_times(self.config.retries)
            .with_jitter();
        let result = op
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e| matches!(e, CallError::Status(s) if transient(s)))
            .notify(|_, _| self.metrics.retry(&path))
            .await;
        let code = match &result {
            Ok(_) => "Ok".to_owned(),
            Err(CallError::Open) => "BreakerOpen".to_owned(),
            Err(CallError::Status(s)) => format!("{:?}", s.code()),
        };
        self.metrics.observe(&path, &code, call_started.elapsed());
        result.map_err(StockError::from)
    }

    /// One attempt's request: its deadline, the correlation id and the token.
    fn request<Req>(&self, req: Req, cid: &str) -> Request<Req> {
        let mut request = Request::new(req);
        request.set_timeout(self.config.attempt_timeout);
        if let Ok(v) = cid.parse() {
            request
                .metadata_mut()
                .insert(shared::correlation::HEADER, v);
        }
        if let Some(token) = &self.config.token
            && let Ok(v) = format!("Bearer {token}").parse()
        {
            request.metadata_mut().insert("authorization", v);
        }
        request
    }

    /// Feeds one attempt's outcome to the breaker (only transient failures count) and the log.
    fn attempted(
        &self,
        method: &str,
        attempt: u32,
        correlation_id: &str,
        took: Duration,
        failure: Option<&Status>,
    ) {
        let micros = took.as_micros() as u64;
        match failure {
            None => {
                self.breaker.success();
                tracing::debug!(
                    method,
                    attempt,
                    code = "Ok",
                    micros,
                    correlation_id,
                    "Stock call done."
                );
            }
            Some(s) if transient(s) => {
                self.breaker.failure();
                tracing::warn!(method, attempt, code = ?s.code(), micros, correlation_id, message = s.message(), "Stock call failed (transient).");
            }
            Some(s) => {
                self.breaker.success();
                tracing::warn!(method, attempt, code = ?s.code(), micros, correlation_id, message = s.message(), "Stock call failed.");
            }
        }
    }

    pub async fn reserve(
        &self,
        order_id: Uuid,
        items: &[(Uuid, u32)],
    ) -> Result<Reservation, StockError> {
        let req = ReserveStockRequest {
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
