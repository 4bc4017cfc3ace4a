//! Request extractors shared by the api's handlers: the caller's access token, the admin
//! role, the client address and ids in paths, each failing with the contract's error shape.

use std::net::IpAddr;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use dropline_core::auth::tokens::{AccessClaims, Role};
use dropline_core::http::error::{ApiError, ErrorCode};
use dropline_core::http::extract;
pub use dropline_core::http::extract::{PathId, bearer};

use crate::state::AppState;

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
        extract::access_claims(&state.keys, bearer(parts))
            .await
            .map(Self)
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

/// The client's address (see [`extract::client_ip`]).
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
        Ok(Self(extract::client_ip(
            parts,
            state.config.http.trust_forwarded_for,
        )))
    }
}
