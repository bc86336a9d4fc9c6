//! One unary call across the endpoints: per attempt, the endpoints in turn from the preferred
//! one (skipping those whose breaker is open), each with its deadline; the first answer wins and
//! becomes the preferred endpoint. A transient failure moves on to the next endpoint at once;
//! when all failed (or all breakers are open) the call backs off and retries, within
//! `--stock-retries`. Every try is logged and feeds its endpoint's breaker.
use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use backon::{ExponentialBuilder, Retryable};
use proto::product_service_client::ProductServiceClient;
use tonic::{Request, Status, transport::Channel};

use super::{CallError, SERVICE_PATH, StockClient, StockError, endpoint::Endpoint, transient};

impl StockClient {
    /// Runs one unary call with deadline, metadata, failover, retries and the breakers.
    pub(super) async fn call<Req, Resp, F, Fut>(
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
        let attempt = AtomicU32::new(0);
        let op = || async {
            let n = attempt.fetch_add(1, Ordering::Relaxed) + 1;
            let first = self.preferred.load(Ordering::Relaxed);
            let mut last_failure = None;
            for i in 0..self.endpoints.len() {
                let index = (first + i) % self.endpoints.len();
                let endpoint = &self.endpoints[index];
                if !endpoint.breaker.allow() {
                    continue;
                }
                let request = self.request(req.clone(), &cid);
                let started = Instant::now();
                let result = tokio::time::timeout(
                    self.config.attempt_timeout,
                    f(endpoint.client.clone(), request),
                )
                .await
                .unwrap_or_else(|_| Err(Status::deadline_exceeded("client deadline exceeded")));
                let failure = result.as_ref().err();
                self.attempted(endpoint, method, n, &cid, started.elapsed(), failure);
                match result {
                    Ok(response) => {
                        self.preferred.store(index, Ordering::Relaxed);
                        return Ok(response.into_inner());
                    }
                    Err(status) if transient(&status) => last_failure = Some(status),
                    Err(status) => return Err(CallError::Status(status)),
                }
            }
            Err(last_failure.map_or(CallError::Open, CallError::Status))
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

    /// One try's request: its deadline, the correlation id and the token.
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

    /// Feeds one try's outcome to its endpoint's breaker (only transient failures count) and
    /// the log.
    fn attempted(
        &self,
        endpoint: &Endpoint,
        method: &str,
        attempt: u32,
        correlation_id: &str,
        took: Duration,
        failure: Option<&Status>,
    ) {
        let micros = took.as_micros() as u64;
        let url = endpoint.url.as_str();
        match failure {
            None => {
                endpoint.breaker.success();
                tracing::debug!(
                    method,
                    attempt,
                    url,
                    code = "Ok",
                    micros,
                    correlation_id,
                    "Stock call done."
                );
            }
            Some(s) if transient(s) => {
                endpoint.breaker.failure();
                tracing::warn!(method, attempt, url, code = ?s.code(), micros, correlation_id, message = s.message(), "Stock call failed (transient).");
            }
            Some(s) => {
                endpoint.breaker.success();
                tracing::warn!(method, attempt, url, code = ?s.code(), micros, correlation_id, message = s.message(), "Stock call failed.");
            }
        }
    }
}
