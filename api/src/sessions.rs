//! Sign-in: login, refresh-token rotation with reuse detection, logout (DESIGN §9, api).
//!
//! A login issues a short-lived access JWT and an opaque refresh token (256 random bits,
//! stored as SHA-256) that starts a *family*. Each refresh spends the presented token and
//! issues the next one in the same family. A spent token presented again means two parties
//! hold the family (a stolen token, or a replayed request): the whole family is revoked and
//! both must sign in again. Logout revokes the family; a password change revokes every
//! family of the account.

use std::time::Duration;

use axum::Json as AxumJson;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SubsecRound, Utc};
use dropline_core::auth::tokens::{self, Role};
use dropline_core::http::Json;
use dropline_core::http::error::{ApiError, ErrorCode};
use dropline_core::ids::UserId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{MySql, Transaction};
use uuid::Uuid;

use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::docs::Error;
use crate::extract::ClientIp;
use crate::fail::{self, TxError};
use crate::state::AppState;
use dropline_core::auth::accounts;

/// Refresh tokens start with this, so they are recognisable in logs and secret scanners.
const REFRESH_PREFIX: &str = "drt_";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Login {
    email: String,
    password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    refresh_token: String,
}

/// The answer of login and refresh.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPair {
    /// A short-lived JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Spent by `POST /api/auth/refresh`; presenting a spent one revokes its whole family.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds the access token lives.
    pub expires_in: u64,
}

/// The login limiter's one key for every address that is not one.
const MALFORMED_EMAIL_KEY: &str = "(malformed)";

fn invalid_credentials() -> ApiError {
    ApiError::code(ErrorCode::InvalidCredentials)
}

/// Sign in.
///
/// Trades an e-mail and password for an access token and a refresh token. Limited per IP and
/// per address; an unverified account is refused with `email_not_verified`.
#[utoipa::path(post, path = "/api/auth/login", tag = "sessions", request_body = Login, responses(
    (status = 200, description = "A token pair", body = TokenPair),
    (status = 401, description = "`invalid_credentials`", body = Error),
    (status = 403, description = "`email_not_verified`", body = Error),
    (status = 429, description = "`rate_limited`", body = Error),
))]
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<Login>,
) -> Result<Response, ApiError> {
    // Limit before any lookup, on the address as it is stored (at most 254 characters, so a
    // client cannot make the limiter keep 64 KiB keys); malformed addresses share one key, and
    // the per-IP limit comes first.
    let email = accounts::normalize_email(&body.email).ok();
    state
        .limits
        .login(ip, email.as_deref().unwrap_or(MALFORMED_EMAIL_KEY))?;
    let row: Option<(UserId, String, String, Option<DateTime<Utc>>)> = match &email {
        Some(email) => sqlx::query_as(
            "SELECT id, password_hash, role, email_verified_at FROM users WHERE email = ?",
        )
        .bind(email)
        .fetch_optional(&state.mysql)
        .await
        .map_err(|e| fail::db("reading the user", e))?,
        None => None,
    };
    let Some((user, stored, role, verified_at)) = row else {
        // Spend the same time as a real check, so response time does not tell which
        // addresses have accounts.
        let dummy = state.dummy_hash().await?;
        let _ = state.hasher.verify_async(body.password, dummy).await;
        metrics::counter!("dropline_logins_total", "outcome" => "invalid").increment(1);
        return Err(invalid_credentials());
    };
    let ok = state
        .hasher
        .verify_async(body.password.clone(), stored.clone())
        .await
        .map_err(ApiError::internal)?;
    if !ok {
        metrics::counter!("dropline_logins_total", "outcome" => "invalid").increment(1);
        return Err(invalid_credentials());
    }
    // Only after the password matched, so this does not reveal unverified accounts.
    if verified_at.is_none() {
        metrics::counter!("dropline_logins_total", "outcome" => "unverified").increment(1);
        return Err(ApiError::new(
            ErrorCode::EmailNotVerified,
            "verify the e-mail address first (POST /api/users/verify)",
        ));
    }
    if state.hasher.needs_rehash(&stored) {
        rehash(&state, user, body.password).await;
    }
    let role = Role::parse(&role).unwrap_or(Role::Buyer);
    let now = Utc::now().trunc_subsecs(3);
    let mut tx = state
        .mysql
        .begin()
        .await
        .map_err(|e| fail::db("starting login", e))?;
    let refresh_token = insert_refresh(&state, &mut tx, user, Uuid::now_v7(), now)
        .await
        .map_err(|e| fail::db("storing a refresh token", e))?;
    tx.commit()
        .await
        .map_err(|e| fail::db("committing login", e))?;
    metrics::counter!("dropline_logins_total", "outcome" => "ok").increment(1);
    tracing::info!(%user, "logged in");
    Ok(AxumJson(pair(&state, user, role, refresh_token)?).into_response())
}

/// Stores a hash made with the current argon2 parameters (after they were raised).
/// Best effort: the login succeeds either way.
async fn rehash(state: &AppState, user: UserId, password: String) {
    let outcome = async {
        let hash = state.hasher.hash_async(password).await?;
        sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
            .bind(hash)
            .bind(user)
            .execute(&state.mysql)
            .await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(error) = outcome {
        tracing::warn!(%user, error = format!("{error:#}"), "could not upgrade a password hash");
    }
}

fn pair(
    state: &AppState,
    user: UserId,
    role: Role,
    refresh_token: String,
) -> Result<TokenPair, ApiError> {
    let ttl = Duration::from_secs(state.config.auth.access_token_ttl_seconds);
    let (access_token, _) = tokens::issue_access(&state.keys, user, role, ttl)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("signing an access token: {e}")))?;
    Ok(TokenPair {
        access_token,
        refresh_token,
        token_type: "Bearer",
        expires_in: ttl.as_secs(),
    })
}

fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A new refresh token in `family`, stored hashed; returns the token itself.
async fn insert_refresh(
    state: &AppState,
    tx: &mut Transaction<'_, MySql>,
    user: UserId,
    family: Uuid,
    now: DateTime<Utc>,
) -> Result<String, sqlx::Error> {
    let mut secret = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut secret);
    let token = format!("{REFRESH_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    let ttl = i64::try_from(state.config.auth.refresh_token_ttl_seconds).unwrap_or(i64::MAX / 4);
    let expires = now + chrono::Duration::seconds(ttl.min(10 * 365 * 86_400));
    sqlx::query(
        "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, created_at, expires_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(Uuid::now_v7())
    .bind(family)
    .bind(user)
    .bind(hash_token(&token))
    .bind(now)
    .bind(expires)
    .execute(&mut **tx)
    .await?;
    Ok(token)
}

type RefreshRow = (
    Uuid,
    UserId,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

fn refused(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}

/// Refresh the tokens.
///
/// Spends the refresh token for a new pair of the same family. A spent, revoked, expired or
/// unknown token is 401.
#[utoipa::path(post, path = "/api/auth/refresh", tag = "sessions", request_body = RefreshBody, responses(
    (status = 200, description = "A new token pair", body = TokenPair),
    (status = 401, description = "`unauthorized`: the refresh token is not valid", body = Error),
))]
async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<RefreshBody>,
) -> Result<Response, ApiError> {
    let hash = hash_token(body.refresh_token.trim());
    // Concurrent refreshes of one family can make InnoDB pick a deadlock victim; the whole
    // transaction then runs again and sees the token spent.
    let (user, role, next) = fail::retry_transient(|| rotate(&state, &hash)).await?;
    Ok(AxumJson(pair(&state, user, role, next)?).into_response())
}

/// One attempt at spending the token with hash `hash` and issuing the next of its family.
async fn rotate(state: &AppState, hash: &[u8]) -> Result<(UserId, Role, String), TxError> {
    let now = Utc::now().trunc_subsecs(3);
    let mut tx = state
        .mysql
        .begin()
        .await
        .map_err(fail::tx("starting refresh"))?;
    // The row lock serialises two refreshes of one token: the second sees it spent.
    let row: Option<RefreshRow> = sqlx::query_as(
        "SELECT family_id, user_id, expires_at, spent_at, revoked_at \
         FROM refresh_tokens WHERE token_hash = ? FOR UPDATE",
    )
    .bind(hash)
    .fetch_optional(&mut *tx)
    .await
    .map_err(fail::tx("reading a refresh token"))?;
    let Some((family, user, expires_at, spent_at, revoked_at)) = row else {
        return Err(refused("unknown refresh token").into());
    };
    if revoked_at.is_some() {
        return Err(refused("this session was signed out").into());
    }
    if spent_at.is_some() {
        let revoked = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(family)
        .execute(&mut *tx)
        .await
        .map_err(fail::tx("revoking a reused family"))?
        .rows_affected();
        tx.commit()
            .await
            .map_err(fail::tx("revoking a reused family"))?;
        metrics::counter!("dropline_refresh_reuse_total").increment(1);
        tracing::warn!(%user, %family, revoked, "spent refresh token presented again; family revoked");
        return Err(refused(
            "this refresh token was already used; the session is revoked, sign in again",
        )
        .into());
    }
    if expires_at <= now {
        return Err(refused("the refresh token has expired").into());
    }
    let account: Option<(String,)> = sqlx::query_as("SELECT role FROM users WHERE id = ?")
        .bind(user)
        .fetch_optional(&mut *tx)
        .await
        .map_err(fail::tx("reading the user"))?;
    let Some((role,)) = account else {
        return Err(refused("the account no longer exists").into());
    };
    sqlx::query("UPDATE refresh_tokens SET spent_at = ? WHERE token_hash = ?")
        .bind(now)
        .bind(hash)
        .execute(&mut *tx)
        .await
        .map_err(fail::tx("spending a refresh token"))?;
    let next = insert_refresh(state, &mut tx, user, family, now)
        .await
        .map_err(fail::tx("storing a refresh token"))?;
    tx.commit().await.map_err(fail::tx("committing refresh"))?;
    Ok((user, Role::parse(&role).unwrap_or(Role::Buyer), next))
}

/// Sign out.
///
/// Revokes the family of the presented token. Idempotent: an unknown or already revoked
/// token is also 204, so a client can always sign out cleanly.
#[utoipa::path(post, path = "/api/auth/logout", tag = "sessions", request_body = RefreshBody, responses(
    (status = 204, description = "Signed out (also for an unknown or revoked token)"),
))]
async fn logout(
    State(state): State<AppState>,
    Json(body): Json<RefreshBody>,
) -> Result<Response, ApiError> {
    let hash = hash_token(body.refresh_token.trim());
    let now = Utc::now().trunc_subsecs(3);
    let mut tx = state
        .mysql
        .begin()
        .await
        .map_err(|e| fail::db("starting logout", e))?;
    let family: Option<Uuid> =
        sqlx::query_scalar("SELECT family_id FROM refresh_tokens WHERE token_hash = ?")
            .bind(&hash)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| fail::db("reading a refresh token", e))?;
    if let Some(family) = family {
        revoke_family(&mut tx, family, now).await?;
    }
    tx.commit()
        .await
        .map_err(|e| fail::db("committing logout", e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn revoke_family(
    tx: &mut Transaction<'_, MySql>,
    family: Uuid,
    now: DateTime<Utc>,
) -> Result<u64, ApiError> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(family)
    .execute(&mut **tx)
    .await
    .map(|r| r.rows_affected())
    .map_err(|e| fail::db("revoking a token family", e))
}

/// Revokes every refresh token of `user` (password change); returns how many.
pub async fn revoke_user(
    tx: &mut Transaction<'_, MySql>,
    user: UserId,
    now: DateTime<Utc>,
) -> Result<u64, ApiError> {
    sqlx::query("UPDATE refresh_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL")
        .bind(now)
        .bind(user)
        .execute(&mut **tx)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| fail::db("revoking refresh tokens", e))
}
