//! A per-caller token bucket for both HTTP APIs: each API key (or, in anonymous mode, each
//! client IP) may make `rate` requests a second with bursts up to `burst`; beyond that the answer
//! is 429 problem+json with `Retry-After`. Small enough to own: one map under a mutex, pruned of
//! idle callers when it grows, so a flood of distinct callers cannot grow it without bound.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{auth::Caller, problem::Problem};

/// Callers remembered before idle ones are pruned.
const PRUNE_AT: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by caller. `rate == 0` turns limiting off.
#[derive(Debug)]
pub struct Limiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// Requests refused so far (for `/metrics`).
    limited: AtomicU64,
}

impl Limiter {
    pub fn new(rate: u32, burst: u32) -> Arc<Self> {
        Arc::new(Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
            limited: AtomicU64::new(0),
        })
    }

    /// Requests refused with 429 since start.
    pub fn limited(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }

    /// Takes one token for `caller` at `now`; `Err(wait)` says when the next one is due.
    pub fn take(&self, caller: &str, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() >= PRUNE_AT && !buckets.contains_key(caller) {
            // Forget callers whose bucket has refilled: they would start full anyway.
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(caller.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            self.limited.fetch_add(1, Ordering::Relaxed);
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }
}

/// The axum middleware (inside authentication): limits by API key name, or by client IP for
/// the anonymous caller. Open paths (probes, metrics, the API description) are not limited.
pub async fn limit(State(limiter): State<Arc<Limiter>>, request: Request, next: Next) -> Response {
    if crate::auth::is_open(request.uri().path()) {
        return next.run(request).await;
    }
    let caller = request.extensions().get::<Caller>();
    let key = match caller {
        Some(c) if !c.is_anonymous() => format!("key:{}", c.name),
        _ => request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "ip:unknown".to_owned(), |c| format!("ip:{}", c.0.ip())),
    };
    match limiter.take(&key, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            tracing::debug!(caller = %key, retry_after_secs = secs, "Rate limited.");
            let mut problem = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests for this API key; slow down and retry after the given time.",
            );
            problem.retry_after_secs = Some(secs);
            problem.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate_and_callers_are_separate() {
        let limiter = Limiter::new(10, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take("a", t0).is_ok());
        }
        let wait = limiter.take("a", t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO);
        assert!(
            limiter.take("b", t0).is_ok(),
            "another caller has its own bucket"
        );
        assert!(
            limiter.take("a", t0 + Duration::from_millis(100)).is_ok(),
            "refilled one"
        );
        assert!(limiter.take("a", t0 + Duration::from_millis(100)).is_err());
        // Refill never exceeds the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(limiter.take("a", later).is_ok());
        }
        assert!(limiter.take("a", later).is_err());
        let off = Limiter::new(0, 1);
        for _ in 0..100 {
            assert!(off.take("a", t0).is_ok(), "rate 0 is off");
        }
    }
}
