//! Request pieces every HTTP component reads the same way: the bearer token, the client's
//! address and UUID path segments, each failing with the contract's error shape.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::extract::{ConnectInfo, FromRequestParts, RawPathParams};
use axum::http::header;
use axum::http::request::Parts;
use uuid::Uuid;

use crate::auth::keys::KeyRing;
use crate::auth::tokens::{self, AccessClaims};
use crate::http::error::{ApiError, ErrorCode};

/// The bearer token of `Authorization`, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    bearer_token(parts.headers.get(header::AUTHORIZATION)?)
}

/// The token of an `Authorization: Bearer <token>` value.
pub fn bearer_token(authorization: &axum::http::HeaderValue) -> Option<&str> {
    let value = authorization.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The claims of a bearer access token (401 `unauthorized` when missing or not valid).
pub async fn access_claims(ring: &KeyRing, token: Option<&str>) -> Result<AccessClaims, ApiError> {
    let token = token.ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthorized,
            "an access token is required (Authorization: Bearer <token>)",
        )
    })?;
    tokens::verify_access_batched(ring, token)
        .await
        .map_err(|error| {
            metrics::counter!("dropline_access_tokens_refused_total").increment(1);
            tracing::debug!(%error, "access token refused");
            ApiError::new(
                ErrorCode::Unauthorized,
                format!("the access token is not valid ({error})"),
            )
        })
}

/// The client's address: the TCP peer, or with `trust_forwarded_for` (`http.trust_forwarded_for`)
/// the last address of `X-Forwarded-For`, the one our own proxy appended.
pub fn client_ip(parts: &Parts, trust_forwarded_for: bool) -> IpAddr {
    if trust_forwarded_for {
        // Only the last entry is trusted: our proxy appended it; earlier ones are whatever the
        // client sent.
        let last = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .and_then(|s| s.trim().parse::<IpAddr>().ok());
        if let Some(ip) = last {
            return ip;
        }
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// A UUID path segment, as a bare [`Uuid`] or a typed id (`PathId<SaleId>`); anything else is
/// 404 `not_found` (no such resource can exist).
#[derive(Debug, Clone, Copy)]
pub struct PathId<T = Uuid>(pub T);

impl<S: Send + Sync, T: FromStr<Err = uuid::Error>> FromRequestParts<S> for PathId<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // The raw (percent-decoded) parameter: no deserializer and no String per request.
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found())?;
        let mut params = params.iter();
        match (params.next(), params.next()) {
            (Some((_, raw)), None) => T::from_str(raw)
                .map(Self)
                .map_err(|_| ApiError::not_found()),
            _ => Err(ApiError::not_found()),
        }
    }
}
