//! The waiting room's HTTP API (DESIGN §9, waitroom): join, status, leave, stats and the JWKS
//! that verifies passes.
//!
//! - `POST /w/{sale}/join` (access token) puts the buyer in line, or returns the place they
//!   already have, and hands out a [ticket](crate::ticket). An optional JSON body
//!   `{"challenge"?, "nonce"?, "access_code"?}` carries the [proof of work](crate::pow) a sale
//!   with `pow_difficulty` > 0 asks of a new place (`access_code` is accepted and not used yet).
//!   Answers in door.md's order: 401, 429, 404; a user who has a place gets it back (200),
//!   nothing checked or spent; then 400, `pow_required` / `pow_invalid` (403), `queue_full`.
//! - `GET /w/{sale}/challenge` (access token, join's limits) a proof-of-work challenge for the
//!   caller; writes nothing.
//! - `GET /w/{sale}/status` (ticket) says where the buyer stands and keeps the place alive;
//!   once admitted it carries the pass: an EdDSA JWT bound to the sale and the user that
//!   expires with the admission.
//! - `DELETE /w/{sale}/join` (ticket) leaves the line (and gives up an admission).
//! - `GET /w/{sale}/stats` the sale's public figures; `GET /.well-known/jwks.json` the keys.
//!
//! Concurrent status polls of one sale are answered together, one Redis call per batch, and so
//! are concurrent joins ([`batch`]).
//!
//! Every answer carries `retry_after_ms`, chosen here so that the total poll load stays bounded
//! whatever the crowd (see [`retry_after_ms`]), and an ETA from the admission rate the admitter
//! actually measured. Join and status are limited per client IP and per user (governor).
//!
//! # Fail closed (door.md §5)
//!
//! Redis holds every place and admission, so when it is down or a command times out, join,
//! status, leave and stats answer 503 `unavailable` with `Retry-After:
//! waitroom.outage_retry_after_seconds`, within `redis.command_timeout_ms` (each request's Redis
//! step is bounded by it here, whatever the client's own timeout and reconnect policy do), plus
//! the time to write the answer. Nothing is answered from a cache: a stats read shared by
//! concurrent callers is one live call, not a kept value. Without a status answer from Redis no
//! pass is minted, and the admitter, which works only through Redis, admits nobody. A status poll
//! or join waits at most that bound for its batch, and a sale's queue of them has a fixed size
//! ([`batch::QUEUE`]): past it the request is answered 503 at once, so requests cannot pile up
//! while Redis hangs; those whose caller gave up are dropped before the next batch goes out.
//! Places are not touched by an outage, and it does not count toward `abandon_after`: the
//! admitter sees the gap between its ticks and skips nobody for `abandon_after` after it
//! ([`crate::queue::AdmitParams::outage_gap`]); a buyer silent even after that is skipped and
//! gets the place back at the next poll within the grace (door.md §6). Polling buyers keep their
//! position or better.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeZone, Utc};
use dropline_core::Config;
use dropline_core::auth::keys::KeyRing;
use dropline_core::auth::tokens::{self, PassClaims};
use dropline_core::clients::redis::Redis;
use dropline_core::coalesce::Coalesce;
use dropline_core::http::error::{ApiError, ErrorCode};
use dropline_core::http::extract::{self, PathId};
use dropline_core::http::limit::{Keyed, per_minute};
use dropline_core::http::{json_content_type, parse_json};
use dropline_core::ids::{SaleId, UserId};
use dropline_core::sale::door;
use rand::Rng;
use serde::{Deserialize, Serialize};

use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::docs::{Error, Jwks, PlaceState, SaleIdParam, SaleState};

mod batch;
mod draw;
use crate::pow::{self, PowError, PowKey};
use crate::queue::{
    JoinAsk, JoinOptions, JoinOutcome, Place, Refusal, Stats, Status, Verdict, WaitQueue,
};
use crate::refusals::{Reason, Refusals};
use crate::ticket::TicketKey;
use batch::{Batches, Joins, Polls};

/// No buyer is ever asked to wait longer than this between polls (DESIGN §9).
const MAX_RETRY_MS: u64 = 30_000;
/// Nor asked to come back sooner than this, unless due within that time.
const MIN_RETRY_MS: u64 = 1_000;
/// A buyer due within a second polls again after the ETA, but not sooner than this.
const DUE_RETRY_MS: u64 = 250;
/// Polls per second the whole pre-queue may send right after the opening instant: buyers who
/// waited for the opening come back spread over `queue_length / OPENING_POLL_BUDGET` seconds
/// (at most [`MAX_RETRY_MS`]) instead of all in the same second.
const OPENING_POLL_BUDGET: u64 = 5_000;
/// How long a ticket lasts. It only proves who the poller is; the place has its own rules.
const TICKET_TTL: Duration = Duration::from_secs(24 * 3600);
/// Retry hint for `queue_full`.
const QUEUE_FULL_RETRY_S: u64 = 30;

/// The keys the waiting room needs: access-token verifiers and the pass signing key.
#[derive(Debug, Clone)]
pub struct Secrets {
    pub access: Arc<KeyRing>,
    pub passes: Arc<KeyRing>,
}

impl Secrets {
    /// Loads the keys from `[auth]` and `[passes]`; a missing one is an error naming the config
    /// key (`dropline all` fills throw-away keys in before calling this).
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let access = dropline_core::auth::keys::access_ring(&config.auth)?.ok_or_else(|| {
            anyhow::anyhow!(
                "the waiting room needs the api's public key to verify access tokens: set \
                 auth.verify_key_files (DROPLINE_AUTH__VERIFY_KEY_FILES='[\"/path/access.pub.pem\"]')"
            )
        })?;
        let passes = dropline_core::auth::keys::pass_ring(&config.passes)?
            .filter(|ring| ring.signer().is_some())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the waiting room needs a private key to sign passes: set \
                     passes.signing_key_file (or DROPLINE_PASSES__SIGNING_KEY) to an Ed25519 \
                     PKCS#8 PEM key (`openssl genpkey -algorithm ed25519`)"
                )
            })?;
        Ok(Self {
            access: Arc::new(access),
            passes: Arc::new(passes),
        })
    }
}

/// Join and status limits, per client IP and per user. Challenges have join's quotas, in
/// buckets of their own (a page that is told `pow_required` asks for a challenge and joins
/// again).
#[derive(Debug)]
struct Limits {
    join_ip: Keyed<IpAddr>,
    join_user: Keyed<UserId>,
    challenge_ip: Keyed<IpAddr>,
    challenge_user: Keyed<UserId>,
    status_ip: Keyed<IpAddr>,
    status_user: Keyed<UserId>,
}

/// What every handler shares; cheap to clone.
#[derive(Debug, Clone)]
pub struct Edge(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    redis: Redis,
    access: Arc<KeyRing>,
    passes: Arc<KeyRing>,
    tickets: TicketKey,
    /// The MAC key of proof-of-work challenges.
    pow: PowKey,
    /// How long a challenge is good for (`waitroom.pow_challenge_ttl_seconds`).
    challenge_ttl: Duration,
    limits: Limits,
    /// `waitroom.abandon_after_seconds`: bounds `retry_after_ms` (several polls fit in it).
    abandon_after: Duration,
    /// The admitter's tick (`waitroom.admit_tick_ms`): the ETA's last step.
    tick: Duration,
    trust_forwarded_for: bool,
    /// Concurrent stats reads of one sale share one Redis call.
    stats: Coalesce<SaleId, Result<Option<Stats>, ApiError>>,
    /// Refused joins by reason, for the post-sale report ([`crate::refusals`]).
    refusals: Refusals,
    /// Concurrent status polls of one sale share one Redis call, and so do concurrent joins
    /// (`waitroom.return_grace_seconds`, `max_queue_length` and
    /// `code_failures_per_user_per_hour` live in them).
    polls: Batches<Polls>,
    joins: Batches<Joins>,
    outage: Outage,
    /// Draw sales: their entries' MySQL pool and what the edge keeps of them.
    draws: draw::Draws,
}

/// How the edge answers while Redis is down or slow (door.md §5; module docs).
#[derive(Debug, Clone, Copy)]
struct Outage {
    /// `redis.command_timeout_ms`: the longest a request's Redis step may take.
    bound: Duration,
    /// `waitroom.outage_retry_after_seconds`, the `Retry-After` of the 503.
    retry_after: u64,
}

impl Outage {
    fn new(config: &Config) -> Self {
        Self {
            bound: Duration::from_millis(config.redis.command_timeout_ms.max(1)),
            retry_after: config.waitroom.outage_retry_after_seconds,
        }
    }

    /// Runs one Redis step of a request within [`Outage::bound`]; a failure or a timeout is a
    /// 503 `unavailable` (logged at most once a second across the process).
    async fn run<T>(
        self,
        what: &'static str,
        step: impl Future<Output = anyhow::Result<T>>,
    ) -> Result<T, ApiError> {
        self.run_until(tokio::time::Instant::now() + self.bound, what, step)
            .await
    }

    /// [`Outage::run`] with the bound ending at `deadline` instead of [`Outage::bound`] from
    /// now (a batch: the deadline of its oldest ask).
    async fn run_until<T>(
        self,
        deadline: tokio::time::Instant,
        what: &'static str,
        step: impl Future<Output = anyhow::Result<T>>,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout_at(deadline, step).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.error(what, error)),
            Err(_) => Err(self.error(
                what,
                anyhow::anyhow!("Redis did not answer within {:?}", self.bound),
            )),
        }
    }

    fn error(self, what: &'static str, error: anyhow::Error) -> ApiError {
        warn_throttled(what, &error);
        self.answer()
    }

    /// The 503 itself, without logging (for the many polls of one failed batch).
    fn answer(self) -> ApiError {
        metrics::counter!("dropline_waitroom_unavailable_total").increment(1);
        ApiError::new(
            ErrorCode::Unavailable,
            "the waiting room cannot reach its store right now; places are kept, try again",
        )
        .with_retry_after(self.retry_after)
    }
}

/// Logs a Redis failure at warn, at most once a second across the process (an outage fails
/// every request; the count of the ones left out goes with the next line).
fn warn_throttled(what: &str, error: &anyhow::Error) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    static HELD: AtomicU64 = AtomicU64::new(0);
    let now = epoch_seconds();
    if LAST.swap(now, Ordering::Relaxed) == now {
        HELD.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let suppressed = HELD.swap(0, Ordering::Relaxed);
    tracing::warn!(error = %format!("{error:#}"), suppressed, "Redis unavailable while {what}: answering 503");
}

impl Edge {
    /// The edge on `redis`; `mysql` holds draw entries only (a pool that may connect lazily).
    pub fn new(
        config: &Config,
        redis: Redis,
        mysql: sqlx::MySqlPool,
        secrets: Secrets,
    ) -> anyhow::Result<Self> {
        let signer = secrets
            .passes
            .signer()
            .ok_or_else(|| anyhow::anyhow!("the pass key ring has no signing key"))?;
        let tickets = TicketKey::new(signer.derive_secret(TicketKey::LABEL))?;
        let pow = PowKey::new(signer.derive_secret(PowKey::LABEL))?;
        let w = &config.waitroom;
        let outage = Outage::new(config);
        let return_grace = Duration::from_secs(w.return_grace_seconds);
        let join_ip = per_minute("waitroom.join_per_ip_per_minute", w.join_per_ip_per_minute)?;
        let join_user = per_minute(
            "waitroom.join_per_user_per_minute",
            w.join_per_user_per_minute,
        )?;
        Ok(Self(Arc::new(Inner {
            redis: redis.clone(),
            access: secrets.access,
            passes: secrets.passes,
            tickets,
            pow,
            challenge_ttl: Duration::from_secs(w.pow_challenge_ttl_seconds),
            limits: Limits {
                join_ip: Keyed::new("join", join_ip),
                join_user: Keyed::new("join", join_user),
                challenge_ip: Keyed::new("challenge", join_ip),
                challenge_user: Keyed::new("challenge", join_user),
                status_ip: Keyed::new(
                    "status",
                    per_minute(
                        "waitroom.status_per_ip_per_minute",
                        w.status_per_ip_per_minute,
                    )?,
                ),
                status_user: Keyed::new(
                    "status",
                    per_minute(
                        "waitroom.status_per_user_per_minute",
                        w.status_per_user_per_minute,
                    )?,
                ),
            },
            abandon_after: Duration::from_secs(w.abandon_after_seconds),
            tick: Duration::from_millis(w.admit_tick_ms),
            trust_forwarded_for: config.http.trust_forwarded_for,
            stats: Coalesce::new(),
            refusals: Refusals::new(redis.clone()),
            polls: Batches::new(redis.clone(), Polls { return_grace }, outage),
            joins: Batches::new(
                redis,
                Joins {
                    options: JoinOptions {
                        max_queue_length: w.max_queue_length,
                        return_grace,
                        code_failures_per_hour: w.code_failures_per_user_per_hour,
                    },
                },
                outage,
            ),
            outage,
            draws: draw::Draws::new(mysql, Duration::from_secs(config.draw.reveal_delay_seconds)),
        })))
    }

    fn queue(&self, sale: SaleId) -> WaitQueue {
        WaitQueue::new(&self.0.redis, sale)
    }
}

/// The routes of this module with their documentation (`routes!`: the annotation of a handler
/// is what registers it), before the state.
pub fn routes() -> OpenApiRouter<Edge> {
    OpenApiRouter::new()
        .routes(routes!(join, leave))
        .routes(routes!(challenge))
        .routes(routes!(status))
        .routes(routes!(stats))
        .routes(routes!(jwks))
        .routes(routes!(draw::draw_record))
        .routes(routes!(draw::draw_entries))
        .routes(routes!(draw::draw_winners))
}

/// A join's answer: a place in a line, or a draw sale's entry (their `state`s never overlap).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
enum JoinReply {
    Line(JoinAnswer),
    Entry(draw::EntryJoinAnswer),
}

/// A status answer: a place in a line, or a draw sale's entry.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
enum StatusReply {
    Line(StatusAnswer),
    Entry(draw::EntryStatusAnswer),
}

// ---------------------------------------------------------------------------------------------
// Answers

/// The answer to a join: the place, and the ticket to poll it with.
#[derive(Debug, Serialize, ToSchema)]
struct JoinAnswer {
    #[schema(value_type = PlaceState)]
    state: &'static str,
    /// 1-based place in line while `waiting`; `null` otherwise.
    #[schema(minimum = 1)]
    position: Option<u64>,
    /// Seconds until admission (door.md §3); `null` when no honest figure exists.
    eta_seconds: Option<u64>,
    /// Milliseconds to wait before polling `GET /w/{sale_id}/status`.
    #[schema(minimum = 250, maximum = 30000)]
    retry_after_ms: u64,
    /// The bearer token of `status` and `DELETE join` (scheme `ticket`), good for 24 h.
    ticket: String,
    /// When the sale opens (RFC 3339 UTC).
    #[schema(format = DateTime)]
    opens_at: String,
    /// The operator's notice to the line (door.md §4), `null` when none.
    notice: Option<String>,
    /// The place's priority group (door.md §2): a group of the sale or `public`; `null` without
    /// a place in line.
    group: Option<String>,
}

/// `GET /w/{sale}/challenge`: all three null but `difficulty` (0) when the sale asks for none.
#[derive(Debug, Serialize, ToSchema)]
struct ChallengeAnswer {
    /// Opaque, to be sent back with its `nonce` (door.md §1).
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,128}$")]
    challenge: Option<String>,
    /// Leading zero bits SHA-256(challenge ‖ nonce as 8 bytes big-endian) must have, 0 to 24.
    #[schema(maximum = 24)]
    difficulty: u8,
    /// When the challenge stops being accepted (RFC 3339 UTC).
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

/// Where the buyer stands; once admitted, with the pass for the api's `POST /api/orders`.
#[derive(Debug, Serialize, ToSchema)]
struct StatusAnswer {
    #[schema(value_type = PlaceState)]
    state: &'static str,
    /// 1-based place in line while `waiting`; `null` otherwise.
    #[schema(minimum = 1)]
    position: Option<u64>,
    /// Seconds until admission (door.md §3); `null` when no honest figure exists.
    eta_seconds: Option<u64>,
    /// Milliseconds to wait before the next poll.
    #[schema(minimum = 250, maximum = 30000)]
    retry_after_ms: u64,
    /// Only when `admitted`: the pass (an EdDSA JWT for this sale and user), sent to the api
    /// as `Dropline-Pass`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pass: Option<String>,
    /// Only when `admitted`: when the admission and the pass end (RFC 3339 UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pass_expires_at: Option<String>,
    /// The operator's notice to the line (door.md §4), `null` when none.
    // Shared with the batch's other answers (no copy per poll), written as the string it is.
    #[serde(serialize_with = "shared_text")]
    #[schema(value_type = Option<String>)]
    notice: Option<Arc<str>>,
    /// The place's priority group (door.md §2).
    #[serde(serialize_with = "shared_text")]
    #[schema(value_type = Option<String>)]
    group: Option<Arc<str>>,
}

/// Serializes a text shared between answers exactly as an `Option<String>` (serde's own `Arc`
/// support needs its `rc` feature).
fn shared_text<S: serde::Serializer>(text: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match text {
        Some(text) => s.serialize_some(&**text),
        None => s.serialize_none(),
    }
}

/// A sale's public figures.
#[derive(Debug, Serialize, ToSchema)]
struct StatsAnswer {
    #[schema(value_type = SaleState)]
    state: &'static str,
    /// Buyers waiting in line.
    queue_length: u64,
    /// Buyers admitted since the sale was armed.
    admitted_total: u64,
    /// Users admitted per second, as measured by the admitter (smoothed); the configured rate
    /// is not a measurement, so this is 0 until the admitter has measured.
    admit_rate: f64,
    /// Units not sold or held.
    #[schema(minimum = 0)]
    available: i64,
    /// The operator's notice to the line (door.md §4), `null` when none.
    notice: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// The caller's address and `Authorization` header (a cheap clone of the header's bytes).
struct Caller {
    ip: IpAddr,
    authorization: Option<HeaderValue>,
}

impl Caller {
    /// The bearer token, if any.
    fn token(&self) -> Option<&str> {
        self.authorization.as_ref().and_then(extract::bearer_token)
    }
}

impl FromRequestParts<Edge> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, edge: &Edge) -> Result<Self, ApiError> {
        Ok(Self {
            ip: extract::client_ip(parts, edge.0.trust_forwarded_for),
            authorization: parts.headers.get(header::AUTHORIZATION).cloned(),
        })
    }
}

/// The body of `POST /w/{sale}/join` (door.md): every field optional, unknown ones refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct JoinBody {
    /// A challenge from `GET /w/{sale_id}/challenge` (door.md §1), with its `nonce`.
    #[serde(default)]
    challenge: Option<String>,
    /// The nonce that solves `challenge`: an integer from 0 to 2^53 − 1.
    // Any JSON number here, so that a float or a huge integer is told apart from a string
    // (both 400, with their own message).
    #[serde(default)]
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 9007199254740991_u64)]
    nonce: Option<serde_json::Number>,
    /// door.md §2: the code of a presale or priority group (`XXXX-XXXX-XXXX`; case, spaces and
    /// `-` do not matter).
    #[serde(default)]
    access_code: Option<String>,
}

/// The hash the join script looks an access code up by (door.md §2): of the normalised code,
/// or, for text that is no code at all, of the text itself (it matches nothing and counts as a
/// wrong code, as a mistyped code does). An empty or blank code is no code.
fn code_of(sale: SaleId, request: &JoinRequest) -> Option<[u8; 32]> {
    let JoinRequest::Body(body) = request else {
        return None;
    };
    let raw = body.access_code.as_deref()?.trim();
    if raw.is_empty() {
        return None;
    }
    let code = door::normalize_code(raw).unwrap_or_else(|| raw.to_owned());
    Some(door::code_hash(sale, &code))
}

/// A join's body as read, never refused by itself: its verdict waits until the join script
/// knows whether the caller already has a place (then nothing in it matters).
#[derive(Debug)]
enum JoinRequest {
    /// No body, or only whitespace: `{}`.
    Empty,
    Body(JoinBody),
    /// What is wrong with it (400, 413 or 415), answered only when the caller has no place.
    Bad(ApiError),
}

impl<S: Send + Sync> FromRequest<S> for JoinRequest {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = json_content_type(req.headers());
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(bytes) => bytes,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Ok(Self::Bad(ApiError::code(ErrorCode::PayloadTooLarge)));
            }
            Err(_) => {
                return Ok(Self::Bad(ApiError::bad_request(
                    "could not read the request body",
                )));
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::Empty);
        }
        if !json {
            return Ok(Self::Bad(ApiError::code(ErrorCode::UnsupportedMediaType)));
        }
        Ok(match parse_json::<JoinBody>(&bytes) {
            Ok(body) => Self::Body(body),
            Err(error) => Self::Bad(error),
        })
    }
}

/// The stateless part of door.md §1 for one join: the verdict the join script acts on, and
/// the answer to give if it refuses for the edge's reason (a malformed body, a challenge that
/// fails the MAC, sale, user or zero-bit check).
fn judge(
    edge: &Edge,
    sale: SaleId,
    user: UserId,
    request: JoinRequest,
) -> (Verdict, Option<ApiError>) {
    let pow_invalid = |why: PowError| {
        ApiError::new(
            ErrorCode::PowInvalid,
            format!("{why}; fetch a new challenge (GET /w/{sale}/challenge)"),
        )
    };
    let body = match request {
        JoinRequest::Empty => return (Verdict::Open, None),
        JoinRequest::Bad(error) => return (Verdict::BadRequest, Some(error)),
        JoinRequest::Body(body) => body,
    };
    let nonce = match body.nonce.as_ref().map(pow::nonce_from_json) {
        None => None,
        Some(Some(nonce)) => Some(nonce),
        Some(None) => {
            return (
                Verdict::BadRequest,
                Some(ApiError::bad_request(format!(
                    "`nonce` must be a JSON integer from 0 to {} (2^53 - 1)",
                    pow::MAX_NONCE
                ))),
            );
        }
    };
    match (body.challenge, nonce) {
        (None, _) => (Verdict::Open, None),
        (Some(_), None) => (
            Verdict::BadRequest,
            Some(ApiError::bad_request("a `challenge` needs its `nonce`")),
        ),
        (Some(challenge), Some(nonce)) => match edge.0.pow.verify(&challenge, nonce, sale, user) {
            Ok(solved) => (
                Verdict::PowSolved {
                    spent_id: solved.spent_id(),
                    expires_at_ms: solved.expires_at_ms,
                },
                None,
            ),
            Err(why) => (Verdict::PowInvalid, Some(pow_invalid(why))),
        },
    }
}

/// The answer to a join refused for `why`, with the metrics label: `refusal` is the edge's
/// own verdict on the body (the answer when the script refuses for the edge's reason).
fn refusal_error(
    sale: SaleId,
    why: Refusal,
    refusal: Option<ApiError>,
    verdict: &Verdict,
) -> (&'static str, ApiError) {
    let edge_says = |what: &str| {
        refusal.clone().unwrap_or_else(|| {
            ApiError::internal(anyhow::anyhow!(
                "the join script refused with `{what}` although the edge's verdict was {verdict:?}"
            ))
        })
    };
    match why {
        Refusal::BadRequest => ("bad_request", edge_says("bad_request")),
        Refusal::PowRequired => ("pow_required", pow_required(sale)),
        Refusal::PowInvalid => ("pow_invalid", edge_says("pow_invalid")),
        Refusal::PowExpired => (
            "pow_invalid",
            ApiError::new(
                ErrorCode::PowInvalid,
                format!("the challenge has expired; fetch a new one (GET /w/{sale}/challenge)"),
            ),
        ),
        Refusal::PowSpent => (
            "pow_invalid",
            ApiError::new(
                ErrorCode::PowInvalid,
                format!(
                    "the challenge was already used by a join; fetch a new one \
                     (GET /w/{sale}/challenge)"
                ),
            ),
        ),
        Refusal::CodeRateLimited { retry_after_ms } => (
            "code_rate_limited",
            ApiError::new(
                ErrorCode::RateLimited,
                "too many wrong access codes; try again later",
            )
            .with_retry_after(retry_after_ms.div_ceil(1000).max(1)),
        ),
        Refusal::AccessCodeInvalid => (
            "access_code_invalid",
            ApiError::code(ErrorCode::AccessCodeInvalid),
        ),
        Refusal::AccessCodeUsed => (
            "access_code_used",
            ApiError::code(ErrorCode::AccessCodeUsed),
        ),
        Refusal::AccessCodeRequired => (
            "access_code_required",
            ApiError::new(
                ErrorCode::AccessCodeRequired,
                "until the presale ends only buyers with an access code may join: send \
                 {\"access_code\": \"XXXX-XXXX-XXXX\"}",
            ),
        ),
        // A draw sale takes entries (the join hands it to `draw::join` before this).
        Refusal::DrawSale => (
            "draw_sale",
            ApiError::internal(anyhow::anyhow!("a draw sale's join reached the line")),
        ),
    }
}

fn pow_required(sale: SaleId) -> ApiError {
    ApiError::new(
        ErrorCode::PowRequired,
        format!(
            "this sale asks for proof of work: GET /w/{sale}/challenge, find the nonce and join \
             with {{\"challenge\", \"nonce\"}}"
        ),
    )
}

/// Join the line.
///
/// Puts the caller in the sale's line and answers the place with a ticket to poll it with. A
/// caller who already has a place gets it back (200), and then nothing in the body is looked
/// at or spent. The optional body carries the proof of work of a sale with `pow_difficulty` > 0
/// (`challenge` and `nonce`, door.md §1) and an access code (door.md §2). Checked in this
/// order: 401, 429, 404, the place already held, 400, 403, 409, `queue_full`.
#[utoipa::path(post, path = "/w/{sale_id}/join", tag = "line", security(("accessToken" = [])), params(SaleIdParam), request_body(content = JoinBody, description = "Optional: no body is `{}`", content_type = "application/json"), responses(
    (status = 200, description = "The place in line and its ticket; for a draw sale (design/draw.md) the entry and its ticket", body = JoinReply),
    (status = 409, description = "`access_code_used`: the code's uses were spent by other buyers; a draw sale: `sale_not_open` (before `opens_at`, or paused), `entries_closed` (after the freeze)", body = Error),
    (status = 400, description = "`bad_request`: not JSON, an unknown field, a `nonce` that is not an integer from 0 to 2^53 − 1, a `challenge` without its `nonce`", body = Error),
    (status = 403, description = "`pow_required`, `pow_invalid` (bad, expired or spent challenge, wrong nonce), `access_code_required`, `access_code_invalid`", body = Error),
    (status = 404, description = "`not_found`: no such sale (or not on sale yet)", body = Error),
    (status = 429, description = "`rate_limited`: too many joins from this address or user, or too many wrong access codes", body = Error),
    (status = 503, description = "`queue_full`: the line is full, or `unavailable`: try again after `Retry-After`", body = Error),
))]
#[tracing::instrument(skip_all, fields(sale_id = %sale))]
async fn join(
    State(edge): State<Edge>,
    PathId(sale): PathId<SaleId>,
    caller: Caller,
    request: JoinRequest,
) -> Result<Json<JoinReply>, ApiError> {
    let e = &edge.0;
    let limited = |_: &ApiError| e.refusals.count(sale, Reason::RateLimited);
    e.limits.join_ip.check(&caller.ip).inspect_err(limited)?;
    let user = extract::access_claims(&e.access, caller.token()).await?.sub;
    e.limits.join_user.check(&user).inspect_err(limited)?;
    if draw::is_draw(&edge, sale).await? == Some(true) {
        // Boxed: the draw path's MySQL futures would otherwise size (and so copy) every
        // join's future (see `status`).
        return Box::pin(draw::join(&edge, sale, user, request)).await;
    }
    let code = code_of(sale, &request);
    let (verdict, refusal) = judge(&edge, sale, user, request);
    let ask = JoinAsk {
        user,
        verdict: verdict.clone(),
        code,
    };
    let outcome = e.joins.ask(sale, ask).await?.ok_or_else(no_such_sale)?;
    let (status, new) = match outcome {
        JoinOutcome::Standing { status, new } => (status, new),
        JoinOutcome::Refused(why) => {
            let (result, error) = refusal_error(sale, why, refusal, &verdict);
            match result {
                "code_rate_limited" => e.refusals.count(sale, Reason::RateLimited),
                "pow_invalid" => e.refusals.count(sale, Reason::Pow),
                "access_code_invalid" | "access_code_used" | "access_code_required" => {
                    e.refusals.count(sale, Reason::AccessCode);
                }
                _ => {}
            }
            tracing::debug!(result, reason = ?why, "join refused");
            metrics::counter!("dropline_waitroom_joins_total", "result" => result).increment(1);
            return Err(error);
        }
        JoinOutcome::QueueFull { .. } => {
            e.refusals.count(sale, Reason::QueueFull);
            metrics::counter!("dropline_waitroom_joins_total", "result" => "queue_full")
                .increment(1);
            return Err(ApiError::new(
                ErrorCode::QueueFull,
                "the line for this sale is full; try again later",
            )
            .with_retry_after(QUEUE_FULL_RETRY_S));
        }
    };
    metrics::counter!(
        "dropline_waitroom_joins_total",
        "result" => if new { "new" } else { "again" }
    )
    .increment(1);
    let expires = epoch_seconds().saturating_add(TICKET_TTL.as_secs());
    Ok(Json(JoinReply::Line(JoinAnswer {
        state: status.place.state(),
        position: status.place.position(),
        eta_seconds: eta_seconds(&status, e.tick),
        retry_after_ms: retry_after_ms(&status, e.abandon_after, e.tick),
        ticket: e.tickets.issue(sale, user, expires),
        opens_at: rfc3339(status.opens_at_ms),
        notice: status.notice.as_deref().map(str::to_owned),
        group: status.group.as_deref().map(str::to_owned),
    })))
}

/// A proof-of-work challenge.
///
/// A challenge for the caller and this sale (door.md §1), good for
/// `waitroom.pow_challenge_ttl_seconds`; all `null` but `difficulty` (0) when the sale asks
/// for none. Join's limits apply; nothing is written.
#[utoipa::path(get, path = "/w/{sale_id}/challenge", tag = "line", security(("accessToken" = [])), params(SaleIdParam), responses(
    (status = 200, description = "The challenge", body = ChallengeAnswer),
    (status = 404, description = "`not_found`: no such sale (or not on sale yet)", body = Error),
    (status = 429, description = "`rate_limited`: too many requests from this address or user", body = Error),
))]
#[tracing::instrument(skip_all, fields(sale_id = %sale))]
async fn challenge(
    State(edge): State<Edge>,
    PathId(sale): PathId<SaleId>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let e = &edge.0;
    e.limits.challenge_ip.check(&caller.ip)?;
    let user = extract::access_claims(&e.access, caller.token()).await?.sub;
    e.limits.challenge_user.check(&user)?;
    let info = e
        .outage
        .run(
            "reading the sale's proof-of-work difficulty",
            edge.queue(sale).challenge_info(),
        )
        .await?
        .ok_or_else(no_such_sale)?;
    let difficulty = u8::try_from(info.difficulty)
        .unwrap_or(u8::MAX)
        .min(pow::MAX_DIFFICULTY);
    if u64::from(difficulty) != info.difficulty {
        tracing::warn!(
            stored = info.difficulty,
            used = difficulty,
            "pow_difficulty out of range in the sale's cfg; capped"
        );
    }
    let answer = if difficulty == 0 {
        ChallengeAnswer {
            challenge: None,
            difficulty: 0,
            expires_at: None,
        }
    } else {
        let ttl = u64::try_from(e.challenge_ttl.as_millis()).unwrap_or(u64::MAX);
        let expires_at_ms = info.now_ms.saturating_add(ttl);
        metrics::counter!("dropline_waitroom_challenges_issued_total").increment(1);
        ChallengeAnswer {
            challenge: Some(e.pow.issue(sale, user, expires_at_ms, difficulty)),
            difficulty,
            expires_at: Some(rfc3339(expires_at_ms)),
        }
    };
    // Each challenge is the caller's own and new: never from a cache.
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(answer),
    )
        .into_response())
}

/// Where the caller stands.
///
/// Polled with the join's ticket every `retry_after_ms`; each poll keeps the place alive (a
/// place silent past the return grace is lost). Once admitted the answer carries the pass for
/// the api's `POST /api/orders` (`Dropline-Pass`), valid until `pass_expires_at`.
#[utoipa::path(get, path = "/w/{sale_id}/status", tag = "line", security(("ticket" = [])), params(SaleIdParam), responses(
    (status = 200, description = "The place, and the pass once admitted; for a draw sale the entry's standing, and the pass once won", body = StatusReply),
    (status = 401, description = "`unauthorized`: no ticket, or one forged, expired or for another sale", body = Error),
    (status = 404, description = "`not_found`: no such sale, or not in line (never joined, left, silent past the grace, admission lapsed)", body = Error),
    (status = 429, description = "`rate_limited`: too many polls from this address or user", body = Error),
))]
#[tracing::instrument(skip_all, fields(sale_id = %sale))]
async fn status(
    State(edge): State<Edge>,
    PathId(sale): PathId<SaleId>,
    caller: Caller,
) -> Result<Json<StatusReply>, ApiError> {
    let e = &edge.0;
    e.limits.status_ip.check(&caller.ip)?;
    let user = ticket_user(&edge, sale, caller.token())?;
    e.limits.status_user.check(&user)?;
    if draw::is_draw(&edge, sale).await? == Some(true) {
        // Boxed: a draw entry's future (MySQL reads and writes) is several KiB, and axum moves
        // each handler's future into a box twice per request; inline, every line poll copied
        // it (#18, BENCHMARKS.md "Status path profile").
        return Box::pin(draw::status(&edge, sale, user)).await;
    }
    let status = e.polls.ask(sale, user).await?.ok_or_else(no_such_sale)?;
    let (pass, pass_expires_at) = match status.place {
        Place::NotQueued => {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                "not in line: never joined, left, silent past the return grace, or the \
                 admission lapsed; join again",
            ));
        }
        Place::Admitted { deadline_ms } => {
            let pass = sign_pass(&edge, sale, user, status.now_ms, deadline_ms)?;
            (Some(pass), Some(rfc3339(deadline_ms)))
        }
        _ => (None, None),
    };
    Ok(Json(StatusReply::Line(StatusAnswer {
        state: status.place.state(),
        position: status.place.position(),
        eta_seconds: eta_seconds(&status, e.tick),
        retry_after_ms: retry_after_ms(&status, e.abandon_after, e.tick),
        pass,
        pass_expires_at,
        notice: status.notice,
        group: status.group,
    })))
}

/// Leave the line.
///
/// Gives up the place, or the admission. Idempotent: leaving twice, or after the place was
/// lost, is 204 again.
#[utoipa::path(delete, path = "/w/{sale_id}/join", tag = "line", security(("ticket" = [])), params(SaleIdParam), responses(
    (status = 204, description = "Not in line (any more); a draw sale's entry is withdrawn"),
    (status = 401, description = "`unauthorized`: no ticket, or one forged, expired or for another sale", body = Error),
    (status = 404, description = "`not_found`: the sale id is not a UUID", body = Error),
    (status = 409, description = "`entries_closed`: a draw sale's entries are frozen, an entry can no longer be withdrawn", body = Error),
    (status = 503, description = "`unavailable`: try again after `Retry-After`", body = Error),
))]
#[tracing::instrument(skip_all, fields(sale_id = %sale))]
async fn leave(
    State(edge): State<Edge>,
    PathId(sale): PathId<SaleId>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    let user = ticket_user(&edge, sale, caller.token())?;
    if draw::is_draw(&edge, sale).await? == Some(true) {
        return Box::pin(draw::leave(&edge, sale, user)).await;
    }
    let removed = edge
        .0
        .outage
        .run("leaving the line", Box::pin(edge.queue(sale).leave(user)))
        .await?;
    if removed {
        metrics::counter!("dropline_waitroom_leaves_total").increment(1);
    }
    // Idempotent: leaving twice, or after the place was lost, is still "not in line".
    Ok(StatusCode::NO_CONTENT)
}

/// A sale's figures.
///
/// Public: the sale's state, the length of its line, how many were admitted and at what
/// measured rate, and the units left.
#[utoipa::path(get, path = "/w/{sale_id}/stats", tag = "line", params(SaleIdParam), responses(
    (status = 200, description = "The figures", body = StatsAnswer),
    (status = 404, description = "`not_found`: no such sale (or not on sale yet)", body = Error),
))]
#[tracing::instrument(skip_all, fields(sale_id = %sale))]
async fn stats(
    State(edge): State<Edge>,
    PathId(sale): PathId<SaleId>,
) -> Result<Json<StatsAnswer>, ApiError> {
    let queue = edge.queue(sale);
    let outage = edge.0.outage;
    let stats = edge
        .0
        .stats
        .run(sale, move || async move {
            outage
                .run("reading the sale's figures", queue.stats())
                .await
        })
        .await
        .unwrap_or_else(|aborted| Err(ApiError::internal(aborted)))?
        .ok_or_else(no_such_sale)?;
    Ok(Json(StatsAnswer {
        state: stats.state.as_str(),
        queue_length: stats.queue_length,
        admitted_total: stats.admitted_total,
        admit_rate: stats
            .measured_rate_milli
            .map_or(0.0, |milli| milli as f64 / 1000.0),
        available: stats.available.max(0),
        notice: stats.notice.as_deref().map(str::to_owned),
    }))
}

/// The pass verification keys.
///
/// The public keys passes are signed with (JWKS, Ed25519), for a service other than the api
/// that checks passes itself. Cacheable for five minutes.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "line", responses(
    (status = 200, description = "The key set", body = Jwks),
))]
async fn jwks(State(edge): State<Edge>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(edge.0.passes.jwks()),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Pieces

/// The user a request's ticket names (401 `unauthorized` when missing, forged, expired or for
/// another sale).
fn ticket_user(edge: &Edge, sale: SaleId, token: Option<&str>) -> Result<UserId, ApiError> {
    let token = token.ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthorized,
            "a ticket is required (Authorization: Bearer <ticket from join>)",
        )
    })?;
    edge.0
        .tickets
        .verify(token, sale, epoch_seconds())
        .map_err(|error| {
            metrics::counter!("dropline_waitroom_tickets_refused_total").increment(1);
            ApiError::new(
                ErrorCode::Unauthorized,
                format!("{error}; join again with an access token"),
            )
        })
}

/// The pass of an admitted buyer: valid from the admission to its deadline, the same
/// expiry on every replica (both come from Redis).
fn sign_pass(
    edge: &Edge,
    sale: SaleId,
    user: UserId,
    now_ms: u64,
    deadline_ms: u64,
) -> Result<String, ApiError> {
    let iat = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
    let exp = i64::try_from(deadline_ms / 1000).unwrap_or(i64::MAX);
    let claims = PassClaims::new(user, sale, iat, exp);
    let pass = tokens::sign(&edge.0.passes, &claims).map_err(ApiError::internal)?;
    metrics::counter!("dropline_waitroom_passes_issued_total").increment(1);
    Ok(pass)
}

/// Seconds until a waiting buyer at position p is admitted (door.md §3), with R the live
/// `admit_per_second`, F the buyers admissible now before `max_active` or stock binds
/// ([`Status::free`]) and M the rate measured over recent ticks those limits bound
/// ([`Status::limited_rate_milli`]):
///
/// - p ≤ F: p / R + tick: the admitter can take everyone up to p at the configured rate, so
///   the rate it *can* admit now is the honest one (a measured rate is near zero when arrivals
///   are scarce, which made a lone buyer wait 30 s for an admission that came at the next tick);
/// - p > F: F / R + (p − F) / M + tick: past F, admissions wait for slots or stock to come back,
///   at the pace they did lately.
///
/// `None` when the buyer is not waiting, the sale is paused, or M is needed and unknown or 0
/// (no honest figure exists then).
pub fn eta(status: &Status, tick: Duration) -> Option<Duration> {
    let position = status.place.position()?;
    if status.paused || status.admit_per_second == 0 {
        return None;
    }
    let r = status.admit_per_second as f64;
    let seconds = if position <= status.free {
        position as f64 / r
    } else {
        let m = status.limited_rate_milli.filter(|&m| m > 0)? as f64 / 1000.0;
        status.free as f64 / r + (position - status.free) as f64 / m
    };
    Some(Duration::from_secs_f64(seconds.min(1e9)) + tick)
}

/// [`eta`] in whole seconds, rounded up: the contract's `eta_seconds`.
pub fn eta_seconds(status: &Status, tick: Duration) -> Option<u64> {
    eta(status, tick).map(|eta| {
        let ms = u64::try_from(eta.as_millis()).unwrap_or(u64::MAX);
        ms.div_ceil(1000)
    })
}

/// How long the page should wait before the next poll, so the total poll load stays bounded:
/// - waiting, due within a second: the ETA itself, at least 250 ms (door.md §3: a buyer let in
///   at the next tick hears it at once, not a second later);
/// - waiting: a quarter of the ETA (each buyer polls about four times before their turn, so
///   the crowd's polls per second grow with the logarithm of the line, not its length), at
///   least 1 s, at most 30 s, and never more than a third of `abandon_after`, so a buyer who
///   honours it never loses the place;
/// - scheduled: half the time left to the opening; close to it, the opening instant plus a
///   random spread sized to the pre-queue (see [`OPENING_POLL_BUDGET`]);
/// - admitted, sold out, closed: the maximum (the page stops polling anyway).
pub fn retry_after_ms(status: &Status, abandon_after: Duration, tick: Duration) -> u64 {
    let abandon_ms = u64::try_from(abandon_after.as_millis()).unwrap_or(u64::MAX);
    let max = MAX_RETRY_MS.min(abandon_ms / 3).max(MIN_RETRY_MS);
    let clamp = |ms: u64| ms.clamp(MIN_RETRY_MS, max);
    match status.place {
        Place::Waiting { .. } => match eta(status, tick) {
            Some(eta) if eta <= Duration::from_secs(1) => u64::try_from(eta.as_millis())
                .map_or(MIN_RETRY_MS, |ms| ms.clamp(DUE_RETRY_MS, MIN_RETRY_MS)),
            Some(eta) => clamp(u64::try_from(eta.as_millis()).unwrap_or(u64::MAX) / 4),
            // Paused or stalled: nothing moves soon.
            None => clamp(max / 2),
        },
        Place::Scheduled => {
            let to_open = status.opens_at_ms.saturating_sub(status.now_ms);
            if to_open > 2 * max {
                clamp(to_open / 2)
            } else {
                let spread = (status.queue_length.saturating_mul(1000) / OPENING_POLL_BUDGET)
                    .clamp(MIN_RETRY_MS, max);
                clamp(to_open + rand::rng().random_range(0..=spread))
            }
        }
        Place::Admitted { .. } | Place::SoldOut | Place::Closed | Place::NotQueued => max,
    }
}

fn no_such_sale() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "no such sale (or it is not on sale yet)",
    )
}

fn epoch_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn rfc3339(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(100);

    fn status(place: Place) -> Status {
        Status {
            place,
            opens_at_ms: 0,
            now_ms: 1_000_000,
            queue_length: 10_000,
            paused: false,
            admit_per_second: 100,
            free: u64::MAX,
            limited_rate_milli: None,
            notice: None,
            group: None,
        }
    }

    /// door.md §3: within F at the configured rate, past F at the measured limited rate.
    #[test]
    fn eta_is_the_rate_the_admitter_can_admit_now() {
        let waiting = status(Place::Waiting { position: 1_000 });
        assert_eq!(eta_seconds(&waiting, TICK), Some(11), "1,000 / 100 + tick");
        // Within F only the configured rate counts, however scarce arrivals were.
        let scarce = Status {
            admit_per_second: 20,
            place: Place::Waiting { position: 1 },
            ..waiting.clone()
        };
        assert_eq!(eta(&scarce, TICK), Some(Duration::from_millis(150)));
        assert_eq!(eta_seconds(&scarce, TICK), Some(1));
        // Past F: F / R + (p - F) / M + tick.
        let bound = Status {
            free: 100,
            limited_rate_milli: Some(10_000),
            ..waiting.clone()
        };
        assert_eq!(
            eta(&bound, TICK),
            Some(Duration::from_secs(1) + Duration::from_secs(90) + TICK)
        );
        // M unknown or 0 past F: no honest figure.
        for m in [None, Some(0)] {
            let unknown = Status {
                limited_rate_milli: m,
                ..bound.clone()
            };
            assert_eq!(eta_seconds(&unknown, TICK), None);
        }
        let paused = Status {
            paused: true,
            ..waiting.clone()
        };
        assert_eq!(eta_seconds(&paused, TICK), None);
        assert_eq!(eta_seconds(&status(Place::Scheduled), TICK), None);
    }

    #[test]
    fn a_buyer_due_within_a_second_polls_within_a_second() {
        let abandon = Duration::from_secs(120);
        let lone = Status {
            admit_per_second: 20,
            ..status(Place::Waiting { position: 1 })
        };
        assert_eq!(
            retry_after_ms(&lone, abandon, TICK),
            250,
            "150 ms, at least 250"
        );
        let soon = Status {
            admit_per_second: 20,
            ..status(Place::Waiting { position: 16 })
        };
        assert_eq!(retry_after_ms(&soon, abandon, TICK), 900);
        let later = Status {
            admit_per_second: 20,
            ..status(Place::Waiting { position: 200 })
        };
        assert_eq!(
            retry_after_ms(&later, abandon, TICK),
            2_525,
            "a quarter of 10.1 s"
        );
    }

    #[test]
    fn retry_after_grows_with_position_and_stays_within_bounds() {
        let abandon = Duration::from_secs(120);
        let mut last = 0;
        for position in [100, 1_000, 5_000, 10_000, 100_000, 10_000_000] {
            let ms = retry_after_ms(&status(Place::Waiting { position }), abandon, TICK);
            assert!((MIN_RETRY_MS..=MAX_RETRY_MS).contains(&ms), "{ms}");
            assert!(ms >= last, "position {position}: {ms} < {last}");
            last = ms;
        }
        assert_eq!(last, MAX_RETRY_MS);
        // A short abandon_after keeps several polls inside it.
        let short = Duration::from_secs(9);
        let ms = retry_after_ms(
            &status(Place::Waiting {
                position: 1_000_000,
            }),
            short,
            TICK,
        );
        assert_eq!(ms, 3_000);
    }

    #[test]
    fn the_crowd_polls_a_bounded_number_of_times_per_second() {
        // 200,000 waiting at 100/s: sum of 1/retry over the line.
        let abandon = Duration::from_secs(120);
        let polls: f64 = (1..=200_000u64)
            .map(|p| {
                1000.0
                    / retry_after_ms(&status(Place::Waiting { position: p }), abandon, TICK) as f64
            })
            .sum();
        // Far below one poll per buyer per second (200,000/s).
        assert!(polls < 12_000.0, "{polls} polls/s");
    }

    #[test]
    fn scheduled_buyers_spread_their_first_poll_after_the_opening() {
        let abandon = Duration::from_secs(120);
        let far = Status {
            opens_at_ms: 1_000_000 + 600_000,
            ..status(Place::Scheduled)
        };
        assert_eq!(retry_after_ms(&far, abandon, TICK), MAX_RETRY_MS);
        let near = Status {
            opens_at_ms: 1_000_000 + 5_000,
            queue_length: 50_000,
            ..status(Place::Scheduled)
        };
        let draws: Vec<u64> = (0..200)
            .map(|_| retry_after_ms(&near, abandon, TICK))
            .collect();
        assert!(draws.iter().all(|&ms| (5_000..=MAX_RETRY_MS).contains(&ms)));
        let distinct: std::collections::HashSet<_> = draws.iter().collect();
        assert!(distinct.len() > 50, "spread, not one instant");
    }
}

#[cfg(test)]
mod future_sizes {
    use super::*;

    /// The size of the future a handler taking three extractors returns, without calling it.
    fn future_size<A, B, C, Fut, F: FnOnce(A, B, C) -> Fut>(_: &F) -> usize {
        std::mem::size_of::<Fut>()
    }

    fn future_size4<A, B, C, D, Fut, F: FnOnce(A, B, C, D) -> Fut>(_: &F) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// axum moves a handler's future into a box, and the route's service boxes it again: its
    /// size is copied on every request (#18). A draw sale's path (MySQL futures) made the line's
    /// status poll's future several KiB; it is boxed apart, as are the Lua steps of join and
    /// leave, and this keeps it that way (sizes of a debug build, larger than a release one's).
    #[test]
    fn the_line_handlers_futures_stay_small() {
        let status = future_size(&status);
        let leave = future_size(&leave);
        let join = future_size4(&join);
        eprintln!("status {status}, leave {leave}, join {join} bytes");
        for (handler, size) in [("status", status), ("leave", leave), ("join", join)] {
            assert!(
                size <= 2048,
                "the {handler} handler's future is {size} bytes"
            );
        }
    }
}
