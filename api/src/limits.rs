//! Keyed request limits (GCRA through `governor`): login per IP and per e-mail, sign-up per IP,
//! verification e-mail resends per address, code checks per IP and per address, orders and pays per buyer. Over a limit the answer is 429 `rate_limited` with
//! `Retry-After` set to when the next request would pass ([`dropline_core::http::limit`]; counted per
//! process).

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context;
use dropline_core::config::LimitsConfig;
use dropline_core::http::error::ApiError;
use dropline_core::http::limit::{Keyed, per_minute};
use dropline_core::ids::UserId;
use governor::Quota;

/// The api's limiters.
#[derive(Debug)]
pub struct Limits {
    login_ip: Keyed<IpAddr>,
    login_email: Keyed<String>,
    signup_ip: Keyed<IpAddr>,
    resend_email: Keyed<String>,
    verify_ip: Keyed<IpAddr>,
    verify_email: Keyed<String>,
    orders_user: Keyed<UserId>,
    pay_user: Keyed<UserId>,
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
            verify_ip: Keyed::new(
                "verification",
                per_minute(
                    "limits.verify_per_ip_per_minute",
                    config.verify_per_ip_per_minute,
                )?,
            ),
            verify_email: Keyed::new(
                "verification",
                per_minute(
                    "limits.verify_per_email_per_minute",
                    config.verify_per_email_per_minute,
                )?,
            ),
            orders_user: Keyed::new(
                "order",
                per_minute(
                    "limits.orders_per_user_per_minute",
                    config.orders_per_user_per_minute,
                )?,
            ),
            pay_user: Keyed::new(
                "pay",
                per_minute(
                    "limits.pay_per_user_per_minute",
                    config.pay_per_user_per_minute,
                )?,
            ),
        })
    }

    pub fn login(&self, ip: IpAddr, email: &str) -> Result<(), ApiError> {
        self.login_ip.check(&ip)?;
        self.login_email.check(&email.to_owned())
    }

    pub fn signup(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.signup_ip.check(&ip)
    }

    /// `POST /api/orders` by `user`.
    pub fn order(&self, user: UserId) -> Result<(), ApiError> {
        self.orders_user.check(&user)
    }

    /// `POST /api/orders/{id}/pay` by `user`.
    pub fn pay(&self, user: UserId) -> Result<(), ApiError> {
        self.pay_user.check(&user)
    }

    /// `POST /api/users/verify` from `ip`.
    pub fn verify_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.verify_ip.check(&ip)
    }

    /// `POST /api/users/verify` for the canonical address `email`.
    pub fn verify_email(&self, email: &str) -> Result<(), ApiError> {
        self.verify_email.check(&email.to_owned())
    }

    pub fn resend(&self, email: &str) -> Result<(), ApiError> {
        self.resend_email.check(&email.to_owned())
    }
}
