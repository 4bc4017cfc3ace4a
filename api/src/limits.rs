//! Keyed request limits (GCRA through `governor`): login per IP and per e-mail, sign-up per IP,
//! verification e-mail resends per address. Over a limit the answer is 429 `rate_limited` with
//! `Retry-After` set to when the next request would pass.
//!
//! Counting is per process: with N api replicas the fleet allows N times the configured rate.
//! That is the right trade for these limits (they stop brute force and mail bombing, not
//! enforce a business quota), and it keeps a Redis round trip off every login.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use dropline_core::config::LimitsConfig;
use dropline_core::error::{ApiError, ErrorCode};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Every how many checks a limiter forgets keys whose state is back to idle.
const RETAIN_EVERY: u64 = 4096;

#[derive(Debug)]
struct Keyed<K: Hash + Eq + Clone> {
    what: &'static str,
    limiter: DefaultKeyedRateLimiter<K>,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn new(what: &'static str, quota: Quota) -> Self {
        Self {
            what,
            limiter: RateLimiter::keyed(quota),
            checks: AtomicU64::new(0),
        }
    }

    fn check(&self, key: &K) -> Result<(), ApiError> {
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
            .with_retry_after(wait.as_secs_f64().ceil() as u64)
        })
    }
}

/// The api's limiters.
#[derive(Debug)]
pub struct Limits {
    login_ip: Keyed<IpAddr>,
    login_email: Keyed<String>,
    signup_ip: Keyed<IpAddr>,
    resend_email: Keyed<String>,
}

fn per_minute(key: &str, n: u32) -> anyhow::Result<Quota> {
    let n = NonZeroU32::new(n).with_context(|| format!("{key} must be positive"))?;
    Ok(Quota::per_minute(n))
}

impl Limits {
    pub fn new(config: &LimitsConfig) -> anyhow::Result<Self> {
        let resend = Quota::with_period(Duration::from_secs(config.resend_interval_seconds))
            .context("limits.resend_interval_seconds must be positive")?;
        Ok(Self {
            login_ip: Keyed::new(
                "login",
                per_minute(
                    "limits.login_per_ip_per_minute",
                    config.login_per_ip_per_minute,
                )?,
            ),
            login_email: Keyed::new(
                "login",
                per_minute(
                    "limits.login_per_email_per_minute",
                    config.login_per_email_per_minute,
                )?,
            ),
            signup_ip: Keyed::new(
                "sign-up",
                per_minute(
                    "limits.signup_per_ip_per_minute",
                    config.signup_per_ip_per_minute,
                )?,
            ),
            resend_email: Keyed::new("verification e-mail", resend),
        })
    }

    pub fn login(&self, ip: IpAddr, email: &str) -> Result<(), ApiError> {
        self.login_ip.check(&ip)?;
        self.login_email.check(&email.to_owned())
    }

    pub fn signup(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.signup_ip.check(&ip)
    }

    pub fn resend(&self, email: &str) -> Result<(), ApiError> {
        self.resend_email.check(&email.to_owned())
    }
}
