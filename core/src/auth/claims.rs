//! What an access token says (its claims and [`Role`]), and the memo of access tokens a key
//! ring has verified. Apart from `tokens` so that `keys` (whose rings hold the memo) and
//! `tokens` (which signs and verifies with the rings) do not import each other.

use std::sync::OnceLock;
use std::time::Duration;

use chrono::Utc;
use quick_cache::sync::Cache;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::UserId;

/// Issuer and audience of access tokens.
pub const ACCESS_ISSUER: &str = "dropline-api";
pub const ACCESS_AUDIENCE: &str = "dropline";

/// A buyer or an administrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Buyer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buyer => "buyer",
            Self::Admin => "admin",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "buyer" => Some(Self::Buyer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: UserId,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
    pub iss: String,
    pub aud: String,
}

impl AccessClaims {
    pub fn new(user: UserId, role: Role, ttl: Duration) -> Self {
        let now = Utc::now().timestamp();
        Self {
            sub: user,
            role,
            iat: now,
            exp: now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
            jti: Uuid::now_v7(),
            iss: ACCESS_ISSUER.to_owned(),
            aud: ACCESS_AUDIENCE.to_owned(),
        }
    }
}

/// Access tokens a key ring has verified, by their exact text. A buyer sends the same access
/// token with every call (join, order, pay, polling the order), and an Ed25519 check costs
/// tens of microseconds: most of the CPU an order takes. A hit needs the identical token, the
/// very bytes whose signature, issuer and audience were checked, so it proves what the check
/// proved; expiry is still checked on every use, and only tokens that verified are kept.
/// Rings never lose keys while running (rotation adds a key and restarts), so a kept token
/// never outlives its key. Bounded: quick_cache evicts the least used first.
///
/// Passes are not remembered: each admission's pass is used about once, so a memo would only
/// flatter a benchmark that reuses them.
#[derive(Debug, Default)]
pub struct VerifiedAccess(OnceLock<Cache<Box<str>, AccessClaims>>);

/// Tokens kept per ring: about 400 bytes each, so a few MiB at most.
const VERIFIED_ACCESS_CAPACITY: usize = 16_384;

impl VerifiedAccess {
    pub(crate) fn cache(&self) -> &Cache<Box<str>, AccessClaims> {
        self.0.get_or_init(|| Cache::new(VERIFIED_ACCESS_CAPACITY))
    }
}
