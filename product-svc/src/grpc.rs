//! The gRPC stock API (`eshop.product.v1.ProductService`). Only this file names proto types.
use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use proto::{
    CommitStockRequest, CommitStockResponse, ErrorCode, GetProductsRequest, GetProductsResponse,
    ProductInfo, ReleaseStockRequest, ReleaseStockResponse, ReserveStockRequest,
    ReserveStockResponse, product_service_server::ProductService,
};
use tonic::{Request, Response, Status};
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    domain::{self, CommitRefusal, FailureCode, MAX_QUANTITY, ReservationStatus, Unrecorded},
    error::Error,
    store::{Entry, Store},
};

/// Most items (or ids) one call may carry.
pub const MAX_ITEMS: usize = 1000;

pub struct StockService {
    pub store: Store,
}

#[tonic::async_trait]
impl ProductService for StockService {
    async fn reserve_stock(
        &self,
        request: Request<ReserveStockRequest>,
    ) -> Result<Response<ReserveStockResponse>, Status> {
        let req = request.into_inner();
        let order_id = parse_uuid("order_id", &req.order_id)?;
        if req.items.is_empty() {
            return Err(Status::invalid_argument(
                "items: at least one item is required",
            ));
        }
        if req.items.len() > MAX_ITEMS {
            return Err(Status::invalid_argument(format!(
                "items: at most {MAX_ITEMS} items are allowed"
            )));
        }
        let mut items = Vec::with_capacity(req.items.len());
        for (i, item) in req.items.iter().enumerate() {
            let id = parse_uuid(&format!("items[{i}].product_id"), &item.product_id)?;
            if item.quantity <= 0 {
                return Err(Status::invalid_argument(format!(
                    "items[{i}].quantity: must be greater than 0"
                )));
            }
            items.push((id, i64::from(item.quantity)));
        }
        let items = domain::merge_items(items);
        if items.iter().any(|(_, q)| *q > MAX_QUANTITY) {
            return Err(Status::invalid_argument(format!(
                "items: the quantity of one product must be at most {MAX_QUANTITY}"
            )));
        }
        let unrecorded = match req.unrecorded {
            Some(u) => Some(
                Unrecorded::check(order_id, u.subject, &u.state)
                    .map_err(Status::invalid_argument)?,
            ),
            None => None,
        };
        let reservation = self.store.reserve(order_id, &items, unrecorded).await?;
        let response = match (&reservation.status, reservation.failure) {
            (ReservationStatus::Failed, Some(failure)) => {
                tracing::info!(order_id = %order_id, code = ?failure.code, failed = failure.failed_product_ids.len(), "Reservation refused.");
                ReserveStockResponse {
                    success: false,
                    failure_reason: Some(failure.reason),
                    error_code: match failure.code {
                        FailureCode::InsufficientStock => ErrorCode::InsufficientStock,
                        FailureCode::ProductNotFound => ErrorCode::ProductNotFound,
                        FailureCode::RequestMismatch => ErrorCode::RequestMismatch,
                    } as i32,
                    failed_product_ids: failure
                        .failed_product_ids
                        .iter()
                        .map(Uuid::to_string)
                        .collect(),
                }
            }
            _ => {
                // The correlation id as the handler sees it (the task-local the observe layer set).
                let correlation_id = shared::correlation::current().unwrap_or_default();
                tracing::debug!(order_id = %order_id, items = items.len(), correlation_id, "Stock reserved.");
                ReserveStockResponse {
                    success: true,
                    failure_reason: None,
                    error_code: ErrorCode::None as i32,
                    failed_product_ids: Vec::new(),
                }
            }
        };
        Ok(Response::new(response))
    }

    async fn release_stock(
        &self,
        request: Request<ReleaseStockRequest>,
    ) -> Result<Response<ReleaseStockResponse>, Status> {
        let order_id = parse_uuid("order_id", &request.get_ref().order_id)?;
        let released = self.store.release(order_id).await?;
        tracing::debug!(order_id = %order_id, released, "Release handled.");
        Ok(Response::new(ReleaseStockResponse {
            success: true,
            failure_reason: None,
        }))
    }

    async fn commit_stock(
        &self,
        request: Request<CommitStockRequest>,
    ) -> Result<Response<CommitStockResponse>, Status> {
        let order_id = parse_uuid("order_id", &request.get_ref().order_id)?;
        let committed = self.store.commit(order_id).await?;
        tracing::info!(order_id = %order_id, committed, "Commit handled.");
        Ok(Response::new(CommitStockResponse { committed }))
    }

    async fn get_products(
        &self,
        request: Request<GetProductsRequest>,
    ) -> Result<Response<GetProductsResponse>, Status> {
        let req = request.into_inner();
        if req.product_ids.len() > MAX_ITEMS {
            return Err(Status::invalid_argument(format!(
                "product_ids: at most {MAX_ITEMS} ids are allowed"
            )));
        }
        let ids = req
            .product_ids
            .iter()
            .enumerate()
            .map(|(i, raw)| parse_uuid(&format!("product_ids[{i}]"), raw))
            .collect::<Result<Vec<_>, _>>()?;
        // A product created on another instance a moment ago is in the catalog already.
        self.store.known(ids.iter().copied()).await?;
        let mut response = GetProductsResponse::default();
        for (id, entry) in ids.iter().zip(self.store.get_many(&ids)?) {
            match entry {
                Some(entry) => response.products.push(product_info(entry)),
                None => response.missing_product_ids.push(id.to_string()),
            }
        }
        Ok(Response::new(response))
    }
}

fn product_info(e: Entry) -> ProductInfo {
    let clamp = |v: i64| v.clamp(0, i64::from(i32::MAX)) as i32;
    ProductInfo {
        product_id: e.product.id.to_string(),
        name: e.product.name,
        description: e.product.description,
        price: e.product.price.to_string(),
        stock_quantity: clamp(e.stock.on_hand),
        version: e.product.version,
        deleted: e.product.deleted,
        available_quantity: clamp(e.stock.available()),
        category: e.product.category,
    }
}

fn parse_uuid(field: &str, raw: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(raw)
        .ok()
        .filter(|id| !id.is_nil())
        .ok_or_else(|| Status::invalid_argument(format!("{field}: must be a non-nil UUID")))
}

/// The stock API's interceptor: the caller must send the shared token as
/// `authorization: Bearer <token>` (checked as a digest, in constant time); `None` lets anyone in
/// (anonymous mode). Health is a separate service and stays open.
#[derive(Clone, Copy)]
pub struct RequireToken(pub Option<[u8; 32]>);

impl tonic::service::Interceptor for RequireToken {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let Some(expected) = &self.0 else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(token) if shared::auth::token_matches(expected, token.trim()) => Ok(request),
            _ => Err(Status::unauthenticated(
                "a valid token is required: authorization: Bearer <token>",
            )),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Validation(_) => Status::invalid_argument(error.to_string()),
            Error::NotFound(_)
            | Error::NoSuchId
            | Error::NotCommittable {
                why: CommitRefusal::Unknown,
                ..
            } => Status::not_found(error.to_string()),
            Error::NotCommittable { .. } => Status::failed_precondition(error.to_string()),
            Error::OrdersUnavailable(_) | Error::Unavailable(_) => {
                Status::unavailable(error.to_string())
            }
            // order-svc fails over to another instance at once on UNAVAILABLE.
            Error::NotWriter { ref writer } => Status::unavailable(match writer {
                Some(w) => format!("this instance is not the stock writer; {w} is"),
                None => "this instance is not the stock writer; none is elected yet".into(),
            }),
            Error::Forbidden(_) => Status::permission_denied(error.to_string()),
            Error::VersionMismatch { .. } | Error::Discontinued(_) | Error::Stock(_) => {
                Status::failed_precondition(error.to_string())
            }
            Error::Storage(_) => {
                tracing::error!(error = %error, cause = ?error, "gRPC call failed on storage.");
                Status::internal("internal storage error")
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A tower layer around every gRPC call: validates the correlation id from metadata, runs the call
// in its span and task-local scope, and logs method, status and duration once.

#[derive(Debug, Clone)]
pub struct ObserveLayer(pub shared::metrics::Rpc);

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: shared::metrics::Rpc,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B, RB> tower::Service<http::Request<B>> for Observe<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let id = shared::correlation::from_headers(req.headers());
        if let Ok(value) = http::HeaderValue::from_str(&id) {
            req.headers_mut().insert(shared::correlation::HEADER, value);
        }
        let method = req.uri().path().to_owned();
        let span = tracing::info_span!("grpc", correlation_id = %id, method = %method);
        let correlation_id = id.clone();
        let call = self.inner.call(req);
        let metrics = self.metrics.clone();
        Box::pin(
            async move {
                let result = shared::correlation::scope(id, method.clone(), call).await;
                let elapsed = started.elapsed();
                let micros = elapsed.as_micros() as u64;
                match &result {
                    Ok(response) => {
                        let status = response
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<i32>().ok())
                            .unwrap_or(0);
                        let code = tonic::Code::from_i32(status);
                        metrics.observe(&method, &format!("{code:?}"), elapsed);
                        if matches!(
                            code,
                            tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss
                        ) {
                            tracing::warn!(method = %method, ?code, micros, correlation_id = %correlation_id, "gRPC call failed.");
                        } else {
                            tracing::debug!(method = %method, ?code, micros, correlation_id = %correlation_id, "gRPC call handled.");
                        }
                    }
                    Err(_) => {
                        metrics.observe(&method, "Transport", elapsed);
                        tracing::warn!(method = %method, code = "Transport", micros, correlation_id = %correlation_id, "gRPC transport error.");
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

/// The gRPC server: health, reflection when asked for, and the stock service behind the token
/// check, with a deadline per call, a per-connection concurrency limit that sheds the excess
/// (RESOURCE_EXHAUSTED) and the observe layer.
pub struct Server {
    pub store: Store,
    pub token: Option<[u8; 32]>,
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    pub reflection: bool,
    pub concurrency: u32,
    pub metrics: shared::metrics::Rpc,
}

impl Server {
    /// Checks the TLS identity and reflection set-up, then returns the serving future (it stops
    /// accepting when `stop` is cancelled).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        stop: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<impl Future<Output = Result<(), tonic::transport::Error>> + Send> {
        use anyhow::Context;
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<proto::product_service_server::ProductServiceServer<StockService>>()
            .await;
        let reflection = if self.reflection {
            Some(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                    .build_v1()
                    .context("failed to build gRPC reflection")?,
            )
        } else {
            None
        };
        let service = proto::product_service_server::ProductServiceServer::with_interceptor(
            StockService { store: self.store },
            RequireToken(self.token),
        );
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = self.tls {
            builder = builder
                .tls_config(tls)
                .context("invalid gRPC TLS certificate or key")?;
        }
        Ok(builder
            .timeout(std::time::Duration::from_secs(30))
            .concurrency_limit_per_connection(self.concurrency as usize)
            .load_shed(true)
            .layer(ObserveLayer(self.metrics))
            .add_service(health_service)
            .add_optional_service(reflection)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned()))
    }
}
