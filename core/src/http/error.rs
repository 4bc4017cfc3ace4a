//! The contract's error shape: `{"error": {"code", "message"}}` with the status of DESIGN §9.
//!
//! Handlers return [`ApiError`]. Expected failures carry a contract code and a message meant for
//! the client; unexpected ones ([`ApiError::internal`]) are logged with their whole cause chain and
//! reach the client only as `internal`, so nothing about the inside leaks.

use std::fmt;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Every error code the HTTP contract knows, plus the transport-level ones (`payload_too_large`,
/// `unsupported_media_type`, `method_not_allowed`, `internal`) that DESIGN §9 implies by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotAdmitted,
    EmailNotVerified,
    NotFound,
    MethodNotAllowed,
    InvalidCode,
    InvalidCredentials,
    IdempotencyKeyReused,
    IdempotencyKeyInUse,
    SoldOut,
    LimitExceeded,
    SaleNotOpen,
    InvalidState,
    EmailTaken,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited,
    QueueFull,
    Unavailable,
    Internal,
    /// design/door.md §1: the sale asks a proof of work and the join brought none.
    PowRequired,
    /// design/door.md §1: the challenge or nonce does not hold (or was spent).
    PowInvalid,
    /// design/door.md §2: before `presale_only_until` a join needs a code.
    AccessCodeRequired,
    /// design/door.md §2: unknown code, or a code of another sale.
    AccessCodeInvalid,
    /// design/door.md §2: the code's uses were spent by other buyers.
    AccessCodeUsed,
    /// design/draw.md: a new entry or a withdrawal after the draw's entries were frozen.
    EntriesClosed,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            BadRequest | InvalidCode => StatusCode::BAD_REQUEST,
            Unauthorized | InvalidCredentials => StatusCode::UNAUTHORIZED,
            Forbidden | NotAdmitted | EmailNotVerified | PowRequired | PowInvalid
            | AccessCodeRequired | AccessCodeInvalid => StatusCode::FORBIDDEN,
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            IdempotencyKeyReused | IdempotencyKeyInUse | SoldOut | LimitExceeded | SaleNotOpen
            | InvalidState | EmailTaken | AccessCodeUsed | EntriesClosed => StatusCode::CONFLICT,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RateLimited => StatusCode::TOO_MANY_REQUESTS,
            QueueFull | Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BadRequest => "bad_request",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            NotAdmitted => "not_admitted",
            EmailNotVerified => "email_not_verified",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            InvalidCode => "invalid_code",
            InvalidCredentials => "invalid_credentials",
            IdempotencyKeyReused => "idempotency_key_reused",
            IdempotencyKeyInUse => "idempotency_key_in_use",
            SoldOut => "sold_out",
            LimitExceeded => "limit_exceeded",
            SaleNotOpen => "sale_not_open",
            InvalidState => "invalid_state",
            EmailTaken => "email_taken",
            PayloadTooLarge => "payload_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            RateLimited => "rate_limited",
            QueueFull => "queue_full",
            Unavailable => "unavailable",
            Internal => "internal",
            PowRequired => "pow_required",
            PowInvalid => "pow_invalid",
            AccessCodeRequired => "access_code_required",
            AccessCodeInvalid => "access_code_invalid",
            AccessCodeUsed => "access_code_used",
            EntriesClosed => "entries_closed",
        }
    }

    /// The code a bare status maps to, for responses produced outside handlers
    /// (router fallbacks, body limits, timeouts, caught panics).
    pub fn for_status(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => Self::BadRequest,
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            405 => Self::MethodNotAllowed,
            409 => Self::InvalidState,
            413 => Self::PayloadTooLarge,
            415 => Self::UnsupportedMediaType,
            429 => Self::RateLimited,
            408 | 503 | 504 => Self::Unavailable,
            s if (400..500).contains(&s) => Self::BadRequest,
            _ => Self::Internal,
        }
    }

    /// The message used when nothing more specific is known.
    pub fn default_message(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BadRequest => "the request is malformed",
            Unauthorized => "a valid access token is required",
            Forbidden => "not allowed",
            NotAdmitted => "a valid pass for this sale is required",
            EmailNotVerified => "the e-mail address is not verified yet",
            NotFound => "no such resource",
            MethodNotAllowed => "method not allowed on this resource",
            InvalidCode => "the code is wrong or has expired",
            InvalidCredentials => "wrong e-mail or password",
            IdempotencyKeyReused => "this Idempotency-Key was used with a different request",
            IdempotencyKeyInUse => "a request with this Idempotency-Key is still in progress",
            SoldOut => "sold out",
            LimitExceeded => "the per-buyer limit is reached",
            SaleNotOpen => "the sale is not open",
            InvalidState => "not possible in the current state",
            EmailTaken => "this e-mail address is already registered",
            PayloadTooLarge => "the request body is too large",
            UnsupportedMediaType => "expected Content-Type: application/json",
            RateLimited => "too many requests, slow down",
            QueueFull => "the waiting room is full, try again shortly",
            Unavailable => "temporarily unavailable, try again shortly",
            Internal => "internal error",
            PowRequired => "this sale asks a proof of work: get a challenge and solve it",
            PowInvalid => "the proof of work does not hold for this challenge, or it was used",
            AccessCodeRequired => "this presale needs an access code",
            AccessCodeInvalid => "this access code is not valid for this sale",
            AccessCodeUsed => "this access code was already used",
            EntriesClosed => "the draw's entries are closed",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answered to an HTTP client in the contract's shape. `Clone`, so that one failed
/// load can answer every caller that waited on it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The code with its default message.
    pub fn code(code: ErrorCode) -> Self {
        Self::new(code, code.default_message())
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn not_found() -> Self {
        Self::code(ErrorCode::NotFound)
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// An unexpected failure: logs the whole cause chain, answers only `internal`.
    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        let error = error.into();
        tracing::error!(error = format!("{error:#}"), "internal error");
        Self::code(ErrorCode::Internal)
    }

    /// A dependency is down: logs it and answers 503 `unavailable` with a short retry hint.
    pub fn unavailable(error: impl Into<anyhow::Error>) -> Self {
        let error = error.into();
        tracing::warn!(error = format!("{error:#}"), "dependency unavailable");
        Self::code(ErrorCode::Unavailable).with_retry_after(1)
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The JSON body bytes of this error.
    pub fn body(&self) -> Vec<u8> {
        let body = Body {
            error: Inner {
                code: self.code.as_str(),
                message: &self.message,
            },
        };
        // Serialising two strings cannot fail; fall back to a fixed body just in case.
        serde_json::to_vec(&body).unwrap_or_else(|_| {
            br#"{"error":{"code":"internal","message":"internal error"}}"#.to_vec()
        })
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), self.body()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        Self::code(code)
    }
}

/// An account the api could not create: bad input is a 400, a taken address a 409.
impl From<crate::auth::accounts::CreateError> for ApiError {
    fn from(error: crate::auth::accounts::CreateError) -> Self {
        use crate::auth::accounts::CreateError;
        match error {
            CreateError::Invalid(message) => ApiError::bad_request(message),
            CreateError::EmailTaken => ApiError::code(ErrorCode::EmailTaken),
            CreateError::Other(e) => ApiError::internal(e),
        }
    }
}
