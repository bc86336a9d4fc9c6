//! The circuit breaker in front of product-svc: consecutive transient failures open it for a
//! cool-down, so a dead product-svc costs nothing per request while open.
use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// Consecutive transient failures open the breaker for a cool-down; then calls may try again
/// (half-open), and one success closes it.
pub(super) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Default)]
pub(super) struct BreakerState {
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    pub(super) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::default(),
        }
    }

    pub(super) fn allow(&self) -> bool {
        let state = self.state.lock().expect("breaker lock");
        state.open_until.is_none_or(|until| Instant::now() >= until)
    }

    pub(super) fn is_open(&self) -> bool {
        !self.allow()
    }

    pub(super) fn success(&self) {
        let mut state = self.state.lock().expect("breaker lock");
        if state.open_until.is_some() {
            tracing::info!("Stock circuit breaker closed.");
        }
        *state = BreakerState::default();
    }

    pub(super) fn failure(&self) {
        let mut state = self.state.lock().expect("breaker lock");
        state.failures += 1;
        if state.failures >= self.threshold {
            if state.open_until.is_none_or(|until| Instant::now() >= until) {
                tracing::warn!(
                    failures = state.failures,
                    cooldown_ms = self.cooldown.as_millis() as u64,
                    "Stock circuit breaker opened."
                );
            }
            state.open_until = Some(Instant::now() + self.cooldown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_threshold_and_closes_on_success() {
        let b = Breaker::new(3, Duration::from_secs(60));
        b.failure();
        b.failure();
        assert!(b.allow());
        b.failure();
        assert!(!b.allow(), "open after 3 consecutive failures");
        b.success();
        assert!(b.allow());
    }

    #[test]
    fn breaker_half_opens_after_cooldown() {
        let b = Breaker::new(1, Duration::ZERO);
        b.failure();
        assert!(b.allow(), "cool-down of zero lets the next call try");
    }
}
