//! Request extractors shared by the api's handlers: the caller's access token, the admin
//! role, the client address and ids in paths, each failing with the contract's error shape.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts, Path};
use axum::http::header;
use axum::http::request::Parts;
use dropline_core::error::{ApiError, ErrorCode};
use dropline_core::tokens::{self, AccessClaims, Role};
use uuid::Uuid;

use crate::state::AppState;

/// The bearer token of `Authorization`, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A caller with a valid access token (401 `unauthorized` otherwise).
#[derive(Debug, Clone)]
pub struct Caller(pub AccessClaims);

impl<S> FromRequestParts<S> for Caller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AppState::from_ref(state);
        let token = bearer(parts).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "an access token is required (Authorization: Bearer <token>)",
            )
        })?;
        match tokens::verify_access(&state.keys, token) {
            Ok(claims) => Ok(Self(claims)),
            Err(error) => {
                metrics::counter!("dropline_access_tokens_refused_total").increment(1);
                tracing::debug!(%error, "access token refused");
                Err(ApiError::new(
                    ErrorCode::Unauthorized,
                    format!("the access token is not valid ({error})"),
                ))
            }
        }
    }
}

/// A caller whose access token carries the `admin` role (403 `forbidden` otherwise).
#[derive(Debug, Clone)]
pub struct Admin(pub AccessClaims);

impl<S> FromRequestParts<S> for Admin
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Caller(claims) = Caller::from_request_parts(parts, state).await?;
        if claims.role == Role::Admin {
            Ok(Self(claims))
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                "this needs an administrator",
            ))
        }
    }
}

/// The client's address: the TCP peer, or with `http.trust_forwarded_for` the last address
/// of `X-Forwarded-For` (the one our own proxy appended).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl<S> FromRequestParts<S> for ClientIp
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AppState::from_ref(state);
        if state.config.http.trust_forwarded_for {
            // Only the last entry is trusted: our proxy appended it; earlier ones are whatever
            // the client sent.
            let last = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .next_back()
                .and_then(|s| s.trim().parse::<IpAddr>().ok());
            if let Some(ip) = last {
                return Ok(Self(ip));
            }
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        Ok(Self(peer))
    }
}

/// A UUID path segment; anything else is 404 `not_found` (no such resource can exist).
#[derive(Debug, Clone, Copy)]
pub struct PathId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found())?;
        Uuid::parse_str(&raw)
            .map(Self)
            .map_err(|_| ApiError::not_found())
    }
}
