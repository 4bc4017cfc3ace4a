//! Accounts over HTTP: sign-up with an e-mail code, verification, resending the code, the
//! caller's profile, and password change (DESIGN §9, api).
//!
//! Sign-up never waits on SMTP: the user, the hashed code and a `mail.send` message are
//! written together (the publish is confirmed by the broker before the transaction commits,
//! so either both happen or neither does) and the mail worker delivers it.

use axum::Json as AxumJson;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, SubsecRound, Utc};
use dropline_core::http::Json;
use dropline_core::http::error::{ApiError, ErrorCode};
use dropline_core::ids::UserId;
use dropline_core::messages::{Envelope, MailSend, kinds};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sqlx::{MySql, Transaction};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::docs::{Accepted, Error, Verified};
use crate::extract::{Caller, ClientIp};
use crate::fail;
use crate::state::AppState;
use dropline_core::auth::accounts;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sign_up))
        .routes(routes!(verify))
        .routes(routes!(resend))
        .routes(routes!(me))
        .routes(routes!(change_password))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SignUp {
    /// An e-mail address: one `@`, a dotted domain (IDNA rules), a local part of 1 to 64 bytes,
    /// at most 254 characters once trimmed, no white space or control characters but around it. Not
    /// `format: email`: international addresses (`büyer@bücher.example`) are taken.
    #[schema(
        pattern = r"^\s*[^\s\x00-\x1F\x7F-\x9F@]{1,64}@[^\s\x00-\x1F\x7F-\x9F@]+\.[^\s\x00-\x1F\x7F-\x9F@]+\s*$"
    )]
    email: String,
    /// 8 to 128 characters.
    #[schema(min_length = 8, max_length = 128)]
    password: String,
    /// 1 to 100 characters after trimming, no control characters.
    #[schema(
        pattern = r"^\s*[^\s\x00-\x1F\x7F-\x9F](?:[^\x00-\x1F\x7F-\x9F]{0,98}[^\s\x00-\x1F\x7F-\x9F])?\s*$"
    )]
    name: String,
    /// 4 to 32 characters of digits, spaces and `+ - ( ) .`, at least 4 digits.
    #[serde(default)]
    #[schema(pattern = r"^\s*(?=(?:[^0-9]*[0-9]){4})[0-9+()\-. ]{4,32}\s*$")]
    phone: Option<String>,
    /// 1 to 500 characters after trimming; line breaks allowed, no other control characters.
    #[serde(default)]
    #[schema(
        pattern = r"^\s*[^\s\x00-\x1F\x7F-\x9F](?:[^\x00-\x09\x0B\x0C\x0E-\x1F\x7F-\x9F]{0,498}[^\s\x00-\x1F\x7F-\x9F])?\s*$"
    )]
    address: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct SignedUp {
    #[schema(value_type = uuid::Uuid)]
    id: UserId,
    email: String,
    /// `false` until the e-mailed code is confirmed.
    verified: bool,
}

/// Associated data binding an encrypted column value to its row.
pub fn pii_aad(column: &str, user: UserId) -> Vec<u8> {
    format!("users.{column}:{user}").into_bytes()
}

/// Sign up.
///
/// Creates an unverified account and e-mails a six-digit code to confirm the address with
/// `POST /api/users/verify`. An address whose account was never verified within the grace
/// period can be signed up again (the code goes to the address, so only its owner can finish).
#[utoipa::path(post, path = "/api/users", tag = "accounts", request_body = SignUp, responses(
    (status = 201, description = "The account, unverified", body = SignedUp),
    (status = 400, description = "`bad_request`: a field breaks its bound", body = Error),
    (status = 409, description = "`email_taken`", body = Error),
    (status = 429, description = "`rate_limited`: too many sign-ups from this address", body = Error),
))]
async fn sign_up(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<SignUp>,
) -> Result<Response, ApiError> {
    state.limits.signup(ip)?;
    let email = accounts::normalize_email(&body.email)?;
    accounts::check_password(&body.password)?;
    let name = accounts::check_name(&body.name)?;
    let phone = body
        .phone
        .as_deref()
        .map(accounts::check_phone)
        .transpose()?;
    let address = body
        .address
        .as_deref()
        .map(accounts::check_address)
        .transpose()?;

    // Cheap check before paying for argon2; the unique key still decides under a race. An
    // account never verified within auth.unverified_grace_seconds does not hold its address:
    // this sign-up takes it over (the code goes to the address, as always, so only its owner
    // can finish either sign-up).
    let grace = Duration::seconds(
        i64::try_from(state.config.auth.unverified_grace_seconds).unwrap_or(i64::MAX / 2_000),
    );
    let holder: Option<(UserId, Option<DateTime<Utc>>, DateTime<Utc>)> =
        sqlx::query_as("SELECT id, email_verified_at, created_at FROM users WHERE email = ?")
            .bind(&email)
            .fetch_optional(&state.mysql)
            .await
            .map_err(|e| fail::db("checking the e-mail", e))?;
    let stale_before = Utc::now().trunc_subsecs(3) - grace;
    let takeover = match holder {
        None => None,
        Some((old, None, created_at)) if created_at <= stale_before => Some(old),
        Some(_) => return Err(ApiError::code(ErrorCode::EmailTaken)),
    };
    let hash = state
        .hasher
        .hash_async(body.password)
        .await
        .map_err(ApiError::internal)?;

    let id = UserId::new_v7();
    let now = Utc::now().trunc_subsecs(3);
    let encrypt = |column: &str, value: Option<String>| -> Result<Option<Vec<u8>>, ApiError> {
        value
            .map(|v| state.pii.encrypt(&v, &pii_aad(column, id)))
            .transpose()
            .map_err(ApiError::internal)
    };
    let phone_enc = encrypt("phone", phone)?;
    let address_enc = encrypt("address", address)?;

    let mut tx = state
        .mysql
        .begin()
        .await
        .map_err(|e| fail::db("starting sign-up", e))?;
    if let Some(old) = takeover {
        // Still unverified and still past the grace (re-checked under the row lock): a
        // verify or another takeover in between wins, and this one is `email_taken`.
        let deleted = sqlx::query(
            "DELETE FROM users WHERE id = ? AND email_verified_at IS NULL AND created_at <= ?",
        )
        .bind(old)
        .bind(stale_before)
        .execute(&mut *tx)
        .await
        .map_err(|e| fail::db("taking over an unverified address", e))?;
        if deleted.rows_affected() != 1 {
            return Err(ApiError::code(ErrorCode::EmailTaken));
        }
        metrics::counter!("dropline_signup_takeovers_total").increment(1);
        tracing::info!(old_user = %old, user = %id, "sign-up took over an address whose account was never verified");
    }
    let inserted = sqlx::query(
        "INSERT INTO users (id, email, password_hash, name, phone_enc, address_enc, role, \
         email_verified_at, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, 'buyer', NULL, ?, ?)",
    )
    .bind(id)
    .bind(&email)
    .bind(&hash)
    .bind(&name)
    .bind(phone_enc)
    .bind(address_enc)
    .bind(now)
    .bind(now)
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(ApiError::code(ErrorCode::EmailTaken));
        }
        Err(e) => return Err(fail::db("inserting a user", e)),
    }
    if let Err(why) = issue_code(&state, &mut tx, id, &email, now).await? {
        // A new account has no code window yet; this would be a bug, not the buyer's doing.
        return Err(ApiError::internal(anyhow::anyhow!(
            "a new account's first code was not sent ({why:?})"
        )));
    }
    tx.commit()
        .await
        .map_err(|e| fail::db("committing sign-up", e))?;
    metrics::counter!("dropline_signups_total").increment(1);
    tracing::info!(user = %id, "signed up; verification code sent to the mail queue");
    Ok((
        StatusCode::CREATED,
        AxumJson(SignedUp {
            id,
            email,
            verified: false,
        }),
    )
        .into_response())
}

/// Six random digits, uniform over 000000..=999999.
fn new_code() -> String {
    format!("{:06}", rand::rng().random_range(0..1_000_000u32))
}

fn code_digest(state: &AppState, user: UserId, code: &str) -> Vec<u8> {
    state
        .pii
        .digest("email-code", format!("{user}:{code}").as_bytes())
}

/// The window that caps codes per account and keeps its wrong tries.
const CODE_WINDOW: Duration = Duration::hours(1);

/// Why [`issue_code`] sent nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotSent {
    /// `auth.email_codes_per_hour` codes went out in this window.
    Cap,
    /// This window's wrong tries are spent: a new code could not be used before it ends.
    TriesSpent,
}

/// Stores a fresh code for `user` (replacing any earlier one) and publishes the e-mail carrying
/// it to `email`, the account's *stored* address, inside `tx`: the caller commits only once
/// the broker confirmed.
///
/// A new code never restores spent tries: within one window (an hour from its first code)
/// the wrong tries add up across codes, and at most `auth.email_codes_per_hour` codes are
/// sent; a new window starts both afresh.
async fn issue_code(
    state: &AppState,
    tx: &mut Transaction<'_, MySql>,
    user: UserId,
    email: &str,
    now: DateTime<Utc>,
) -> Result<Result<(), NotSent>, ApiError> {
    let previous: Option<(Option<DateTime<Utc>>, i32, i32)> = sqlx::query_as(
        "SELECT window_started_at, codes_in_window, attempts FROM email_codes \
         WHERE user_id = ? FOR UPDATE",
    )
    .bind(user)
    .fetch_optional(&mut **tx)
    .await
    .map_err(|e| fail::db("reading the code window", e))?;
    let (window_started, sent, attempts) = match previous {
        Some((Some(started), sent, attempts)) if started + CODE_WINDOW > now => {
            (started, sent, attempts)
        }
        _ => (now, 0, 0),
    };
    let cap = i32::try_from(state.config.auth.email_codes_per_hour).unwrap_or(i32::MAX);
    if sent >= cap {
        return Ok(Err(NotSent::Cap));
    }
    let max_tries = i32::try_from(state.config.auth.email_code_max_attempts).unwrap_or(5);
    if attempts >= max_tries {
        return Ok(Err(NotSent::TriesSpent));
    }
    let code = new_code();
    let ttl = state.config.auth.email_code_ttl_seconds;
    let expires = now + Duration::seconds(i64::try_from(ttl).unwrap_or(600));
    sqlx::query(
        "INSERT INTO email_codes (user_id, code_hash, attempts, expires_at, sent_at, \
         window_started_at, codes_in_window) VALUES (?, ?, ?, ?, ?, ?, ?) \
         ON DUPLICATE KEY UPDATE code_hash = VALUES(code_hash), attempts = VALUES(attempts), \
         expires_at = VALUES(expires_at), sent_at = VALUES(sent_at), \
         window_started_at = VALUES(window_started_at), codes_in_window = VALUES(codes_in_window)",
    )
    .bind(user)
    .bind(code_digest(state, user, &code))
    .bind(attempts)
    .bind(expires)
    .bind(now)
    .bind(window_started)
    .bind(sent + 1)
    .execute(&mut **tx)
    .await
    .map_err(|e| fail::db("storing a verification code", e))?;
    let minutes = ttl.div_ceil(60);
    let mail = Envelope::new(
        kinds::MAIL_SEND,
        MailSend {
            to: email.to_owned(),
            subject: "Dropline verification code / 인증 코드".to_owned(),
            text: format!(
                "Your Dropline verification code: {code}\n\
                 It expires in {minutes} minutes. If you did not sign up, ignore this e-mail.\n\n\
                 Dropline 인증 코드: {code}\n\
                 {minutes}분 안에 입력해 주세요. 가입하지 않으셨다면 이 메일을 무시하세요.\n"
            ),
        },
    );
    let payload = mail.to_json().map_err(ApiError::internal)?;
    state
        .broker
        .publish(kinds::MAIL_SEND, &mail.id.to_string(), &payload)
        .await
        .map_err(|e| fail::broker("queueing the verification e-mail", e))?;
    Ok(Ok(()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Verify {
    email: String,
    /// Six digits.
    #[schema(pattern = r"^\s*[0-9]{6}\s*$")]
    code: String,
}

/// Verify the e-mail address.
///
/// Checks a code. Five wrong codes burn it. Limited per IP and per (canonical) address, so that guessing is slow from
/// one machine and against one account from many.
#[utoipa::path(post, path = "/api/users/verify", tag = "accounts", request_body = Verify, responses(
    (status = 200, description = "The address is verified (again: also 200)", body = Verified),
    (status = 400, description = "`invalid_code`: wrong, expired or burnt code, or an address without a code; `bad_request`", body = Error),
    (status = 429, description = "`rate_limited`: too many tries from this address or for this e-mail", body = Error),
))]
async fn verify(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<Verify>,
) -> Result<Response, ApiError> {
    state.limits.verify_ip(ip)?;
    let invalid = |message: &str| ApiError::new(ErrorCode::InvalidCode, message);
    let Ok(email) = accounts::normalize_email(&body.email) else {
        return Err(invalid("the code is wrong or has expired"));
    };
    state.limits.verify_email(&email)?;
    let code = body.code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("the code is six digits"));
    }
    let mut tx = state
        .mysql
        .begin()
        .await
        .map_err(|e| fail::db("starting verification", e))?;
    let user = lock_user(&mut tx, &email).await?;
    // An unknown address gets the same answer as a wrong code: no account enumeration.
    let Some((user, verified_at)) = user else {
        return Err(invalid("the code is wrong or has expired"));
    };
    // A verified account answers `verified` only to the code that verified it (kept until it
    // expires, so a retried request is harmless); any other code, and every reason a code is
    // refused, gets the unknown address's answer, so verify does not tell who has a verified
    // account. An unverified account's buyer gets the helpful reasons.
    let verified = verified_at.is_some();
    let invalid = |message: &str| {
        if verified {
            invalid("the code is wrong or has expired")
        } else {
            invalid(message)
        }
    };
    let pending: Option<PendingCode> = sqlx::query_as(
        "SELECT code_hash, attempts, expires_at, window_started_at FROM email_codes \
         WHERE user_id = ? FOR UPDATE",
    )
    .bind(user)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| fail::db("reading the code", e))?;
    let Some((stored, attempts, expires_at, window_started)) = pending else {
        return Err(invalid("no code is pending: ask for a new one"));
    };
    let max = i32::try_from(state.config.auth.email_code_max_attempts).unwrap_or(5);
    if attempts >= max {
        return Err(invalid(&tries_spent_message(window_started)));
    }
    if expires_at <= Utc::now() {
        return Err(invalid("the code has expired: ask for a new one"));
    }
    if !constant_time_eq(&stored, &code_digest(&state, user, code)) {
        sqlx::query("UPDATE email_codes SET attempts = attempts + 1 WHERE user_id = ?")
            .bind(user)
            .execute(&mut *tx)
            .await
            .map_err(|e| fail::db("counting a wrong code", e))?;
        tx.commit()
            .await
            .map_err(|e| fail::db("counting a wrong code", e))?;
        let left = max - attempts - 1;
        metrics::counter!("dropline_email_codes_wrong_total").increment(1);
        return Err(if left > 0 {
            invalid(&format!("the code is wrong ({left} tries left)"))
        } else {
            invalid(&format!(
                "the code is wrong and now burnt; {}",
                tries_spent_message(window_started)
            ))
        });
    }
    if verified {
        return Ok(verified_response());
    }
    let now = Utc::now().trunc_subsecs(3);
    sqlx::query("UPDATE users SET email_verified_at = ?, updated_at = ? WHERE id = ?")
        .bind(now)
        .bind(now)
        .bind(user)
        .execute(&mut *tx)
        .await
        .map_err(|e| fail::db("marking the user verified", e))?;
    // The code stays (its digest, until it expires and the janitor purges it) so that the same
    // request again answers `verified`; it can verify nothing else.
    tx.commit()
        .await
        .map_err(|e| fail::db("committing verification", e))?;
    tracing::info!(%user, "e-mail verified");
    Ok(verified_response())
}

/// A pending code: its digest, wrong tries (in its window), expiry, and window start.
type PendingCode = (Vec<u8>, i32, DateTime<Utc>, Option<DateTime<Utc>>);

/// When a new code can help again: a new code keeps the window's spent tries.
fn tries_spent_message(window_started: Option<DateTime<Utc>>) -> String {
    let minutes = window_started
        .map(|started| (started + CODE_WINDOW - Utc::now()).num_seconds().max(0))
        .map_or(0, |seconds| (seconds + 59) / 60);
    if minutes > 0 {
        format!("too many wrong tries: ask for a new code in {minutes} minutes")
    } else {
        "too many wrong tries: ask for a new code".to_owned()
    }
}

fn verified_response() -> Response {
    AxumJson(serde_json::json!({"verified": true})).into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Resend {
    /// An e-mail address: one `@`, a dotted domain (IDNA rules), a local part of 1 to 64 bytes,
    /// at most 254 characters once trimmed, no white space or control characters but around it. Not
    /// `format: email`: international addresses (`büyer@bücher.example`) are taken.
    #[schema(
        pattern = r"^\s*[^\s\x00-\x1F\x7F-\x9F@]{1,64}@[^\s\x00-\x1F\x7F-\x9F@]+\.[^\s\x00-\x1F\x7F-\x9F@]+\s*$"
    )]
    email: String,
}

/// Send the verification code again.
///
/// Always 202 for a well-formed address, whether or not an unverified account has it, so the
/// endpoint does not reveal who signed up. Limited per (canonical) address; the code goes to
/// the address the account has stored, never to the text typed here; a code is sent only
/// within the account's hourly cap and while its tries are not spent ([`issue_code`]).
#[utoipa::path(post, path = "/api/users/verify/resend", tag = "accounts", request_body = Resend, responses(
    (status = 202, description = "Accepted (whether or not an account needs a code)", body = Accepted),
    (status = 400, description = "`bad_request`: not an e-mail address", body = Error),
    (status = 429, description = "`rate_limited`: too many requests for this address", body = Error),
))]
async fn resend(
    State(state): State<AppState>,
    Json(body): Json<Resend>,
) -> Result<Response, ApiError> {
    let email = accounts::normalize_email(&body.email)?;
    state.limits.resend(&email)?;
    let mut tx = state
        .mysql
        .begin()
        .await
        .map_err(|e| fail::db("starting resend", e))?;
    let account: Option<(UserId, String, Option<DateTime<Utc>>)> =
        sqlx::query_as("SELECT id, email, email_verified_at FROM users WHERE email = ? FOR UPDATE")
            .bind(&email)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| fail::db("reading the user", e))?;
    if let Some((user, stored, None)) = account {
        let now = Utc::now().trunc_subsecs(3);
        match issue_code(&state, &mut tx, user, &stored, now).await? {
            Ok(()) => {
                tx.commit()
                    .await
                    .map_err(|e| fail::db("committing resend", e))?;
                tracing::info!(%user, "verification code sent again");
            }
            Err(why) => {
                metrics::counter!("dropline_email_codes_withheld_total").increment(1);
                tracing::info!(%user, reason = ?why, "verification code not sent again");
            }
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        AxumJson(serde_json::json!({"status": "accepted"})),
    )
        .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
struct Profile {
    #[schema(value_type = uuid::Uuid)]
    id: UserId,
    email: String,
    name: String,
    phone: Option<String>,
    address: Option<String>,
    /// `buyer` or `admin`.
    role: String,
    verified: bool,
    created_at: DateTime<Utc>,
}

type ProfileRow = (
    UserId,
    String,
    String,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    String,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
);

/// The caller's profile.
///
/// Phone and address are stored encrypted and shown only here.
#[utoipa::path(get, path = "/api/me", tag = "accounts", security(("accessToken" = [])), responses(
    (status = 200, description = "The profile", body = Profile),
    (status = 404, description = "`not_found`: the account is gone", body = Error),
))]
async fn me(State(state): State<AppState>, Caller(claims): Caller) -> Result<Response, ApiError> {
    let row: Option<ProfileRow> = sqlx::query_as(
        "SELECT id, email, name, phone_enc, address_enc, role, email_verified_at, created_at \
         FROM users WHERE id = ?",
    )
    .bind(claims.sub)
    .fetch_optional(&state.mysql)
    .await
    .map_err(|e| fail::db("reading the profile", e))?;
    let Some((id, email, name, phone, address, role, verified_at, created_at)) = row else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "the account no longer exists",
        ));
    };
    // A value that does not decrypt (a key that is no longer configured) is reported and left
    // out rather than failing the whole profile.
    let decrypt = |column: &str, value: Option<Vec<u8>>| {
        value.and_then(|v| match state.pii.decrypt(&v, &pii_aad(column, id)) {
            Ok(plain) => Some(plain),
            Err(error) => {
                tracing::error!(user = %id, column, error = format!("{error:#}"), "cannot decrypt personal data");
                metrics::counter!("dropline_pii_decrypt_failures_total").increment(1);
                None
            }
        })
    };
    Ok(AxumJson(Profile {
        id,
        email,
        name,
        phone: decrypt("phone", phone),
        address: decrypt("address", address),
        role,
        verified: verified_at.is_some(),
        created_at,
    })
    .into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ChangePassword {
    current_password: String,
    /// 8 to 128 characters.
    #[schema(min_length = 8, max_length = 128)]
    new_password: String,
}

/// Change the password.
///
/// Checks the current password, stores the new one and revokes every refresh token of the
/// account (other devices must sign in again; access tokens run out within their short TTL).
#[utoipa::path(put, path = "/api/me/password", tag = "accounts", security(("accessToken" = [])), request_body = ChangePassword, responses(
    (status = 204, description = "Changed; every refresh token of the account is revoked"),
    (status = 401, description = "`invalid_credentials`: the current password is wrong; `unauthorized`", body = Error),
    (status = 404, description = "`not_found`: the account is gone", body = Error),
    (status = 429, description = "`rate_limited`: too many wrong passwords", body = Error),
))]
async fn change_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Caller(claims): Caller,
    Json(body): Json<ChangePassword>,
) -> Result<Response, ApiError> {
    accounts::check_password(&body.new_password)?;
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT email, password_hash FROM users WHERE id = ?")
            .bind(claims.sub)
            .fetch_optional(&state.mysql)
            .await
            .map_err(|e| fail::db("reading the account", e))?;
    let Some((email, stored)) = row else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "the account no longer exists",
        ));
    };
    // Guessing the current password is limited like logins are.
    state.limits.login(ip, &email)?;
    let ok = state
        .hasher
        .verify_async(body.current_password, stored)
        .await
        .map_err(ApiError::internal)?;
    if !ok {
        return Err(ApiError::new(
            ErrorCode::InvalidCredentials,
            "the current password is wrong",
        ));
    }
    let hash = state
        .hasher
        .hash_async(body.new_password)
        .await
        .map_err(ApiError::internal)?;
    let now = Utc::now().trunc_subsecs(3);
    let mut tx = state
        .mysql
        .begin()
        .await
        .map_err(|e| fail::db("starting password change", e))?;
    sqlx::query("UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?")
        .bind(&hash)
        .bind(now)
        .bind(claims.sub)
        .execute(&mut *tx)
        .await
        .map_err(|e| fail::db("storing the new password", e))?;
    let revoked = crate::sessions::revoke_user(&mut tx, claims.sub, now).await?;
    tx.commit()
        .await
        .map_err(|e| fail::db("committing password change", e))?;
    tracing::info!(user = %claims.sub, revoked, "password changed; refresh tokens revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The user with this (normalised) address and when it was verified, row-locked for the rest of
/// the transaction so that concurrent verify/resend calls on one account run one at a time.
async fn lock_user(
    tx: &mut Transaction<'_, MySql>,
    email: &str,
) -> Result<Option<(UserId, Option<DateTime<Utc>>)>, ApiError> {
    sqlx::query_as("SELECT id, email_verified_at FROM users WHERE email = ? FOR UPDATE")
        .bind(email)
        .fetch_optional(&mut **tx)
        .await
        .map_err(|e| fail::db("reading the user", e))
}
