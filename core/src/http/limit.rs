//! Keyed request limits (GCRA through `governor`), answered as 429 `rate_limited` with
//! `Retry-After` set to when the next request would pass. Used by the api (login, sign-up,
//! resend) and the waiting room (join, status).
//!
//! Counting is per process: with N replicas the fleet allows N times the configured rate.
//! That is the right trade for edge limits (they stop floods and brute force, not enforce a
//! business quota), and it keeps a Redis round trip off every request.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::http::error::{ApiError, ErrorCode};

/// Every how many checks a limiter forgets keys whose state is back to idle, so memory
/// follows the clients seen recently, not every client ever seen.
const RETAIN_EVERY: u64 = 4096;

/// One limit over keys of type `K` (an IP, an e-mail, a user id).
#[derive(Debug)]
pub struct Keyed<K: Hash + Eq + Clone> {
    what: &'static str,
    limiter: DefaultKeyedRateLimiter<K>,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    /// `what` names the requests in the error message and the metric label.
    pub fn new(what: &'static str, quota: Quota) -> Self {
        Self {
            what,
            limiter: RateLimiter::keyed(quota),
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one request of `key`; 429 `rate_limited` when over the limit.
    pub fn check(&self, key: &K) -> Result<(), ApiError> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % RETAIN_EVERY == RETAIN_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            metrics::counter!("dropline_rate_limited_total", "limit" => self.what).increment(1);
            ApiError::new(
                ErrorCode::RateLimited,
                format!("too many {} requests, retry later", self.what),
            )
            .with_retry_after((wait.as_secs_f64().ceil() as u64).max(1))
        })
    }
}

/// `n` per minute; `key` names the config key in the error when `n` is 0.
pub fn per_minute(key: &str, n: u32) -> anyhow::Result<Quota> {
    let n = NonZeroU32::new(n).with_context(|| format!("{key} must be positive"))?;
    Ok(Quota::per_minute(n))
}
