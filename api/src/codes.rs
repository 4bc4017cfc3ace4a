//! Access codes for presales and priority groups (design/door.md §2), role `admin`.
//!
//! `POST /api/admin/sales/{id}/codes` `{"group", "count" | "codes", "uses"?}` → 201
//! `{"group","uses","codes":[…]}`, or with `Accept: text/csv` the same batch as CSV
//! (`code,group,uses`, CRLF). A batch is generated (`count`, 1 to 100,000 random codes of 60
//! bits, shown `XXXX-XXXX-XXXX`) or given (`codes`, each normalised by
//! [`door::normalize_code`], new in the sale). The answer is the only place the codes appear in
//! plain text: MySQL (`access_codes`) and the sale's Redis `codes` hash keep SHA-256 of sale id
//! and code ([`door::code_hash`]). As every admin write, MySQL in a transaction, Redis before the
//! commit, a Redis failure rolls back: a batch is stored whole or not at all. The audit trail
//! records a batch by its count (`codes.create`, [`crate::trail`]), never by its codes.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{SubsecRound, Utc};
use dropline_core::http::Json;
use dropline_core::http::error::{ApiError, ErrorCode};
use dropline_core::ids::SaleId;
use dropline_core::sale::door;
use dropline_core::sale::keys::SaleKeys;
use fred::interfaces::HashesInterface;
use fred::types::Key;
use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::docs::{Error, IdParam};
use crate::extract::{Admin, PathId};
use crate::fail;
use crate::state::AppState;
use crate::trail::{self, Action, Subject};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_codes))
}

/// The largest batch (door.md §2).
pub const MAX_BATCH: i64 = 100_000;
/// The most buyers one code may let in.
pub const MAX_USES: i64 = 1_000_000;
/// Rows per multi-row `INSERT` and fields per `HSET`: large enough to be quick, small enough
/// to stay far below MySQL's packet limit and Redis's argument limits.
const CHUNK: usize = 1_000;
/// A generated batch draws again when a code exists already (2^60 codes: practically never).
const MAX_DRAWS: usize = 3;

/// Exactly one of `count` and `codes`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCodes {
    /// One of the sale's groups.
    group: String,
    /// Codes to generate (60 random bits each, shown `XXXX-XXXX-XXXX`), 1 to 100,000.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100_000)]
    count: Option<i64>,
    /// Your own codes, 1 to 100,000 of them, each 6 to 32 of `0-9A-Z` once spaces and dashes
    /// are dropped and letters upper-cased; distinct and new in the sale.
    #[serde(default)]
    #[schema(min_items = 1, max_items = 100_000, inline, value_type = Option<Vec<GivenCode>>)]
    codes: Option<Vec<String>>,
    /// Buyers one code lets in, 1 to 1,000,000 (default 1).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000)]
    uses: Option<i64>,
}

/// An access code as an operator gives it.
#[derive(Debug, ToSchema)]
#[schema(pattern = r"^[ -]*(?:[0-9A-Za-z][ -]*){6,32}$")]
#[allow(dead_code)]
pub struct GivenCode(String);

/// The answer (JSON).
#[derive(Debug, Serialize, ToSchema)]
struct Batch {
    group: String,
    uses: i64,
    codes: Vec<String>,
}

/// What a batch is made of.
enum Source {
    Generate(usize),
    /// Normalised, distinct.
    Given(Vec<String>),
}

impl NewCodes {
    fn validate(self) -> Result<(String, i64, Source), ApiError> {
        let uses = self.uses.unwrap_or(1);
        if !(1..=MAX_USES).contains(&uses) {
            return Err(ApiError::bad_request(format!(
                "uses must be an integer from 1 to {MAX_USES}, got {uses}"
            )));
        }
        let source = match (self.count, self.codes) {
            (Some(count), None) => {
                if !(1..=MAX_BATCH).contains(&count) {
                    return Err(ApiError::bad_request(format!(
                        "count must be an integer from 1 to {MAX_BATCH}, got {count}"
                    )));
                }
                Source::Generate(count as usize)
            }
            (None, Some(given)) => {
                if given.is_empty() || given.len() as i64 > MAX_BATCH {
                    return Err(ApiError::bad_request(format!(
                        "codes must list 1 to {MAX_BATCH} codes, got {}",
                        given.len()
                    )));
                }
                let mut seen = HashSet::with_capacity(given.len());
                let mut codes = Vec::with_capacity(given.len());
                for raw in &given {
                    let code = door::normalize_code(raw).ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "codes: `{raw}` is not a code (6 to 32 of 0-9 and A-Z once spaces \
                             and dashes are dropped)"
                        ))
                    })?;
                    if !seen.insert(code.clone()) {
                        return Err(ApiError::bad_request(format!(
                            "codes: `{raw}` is in the batch twice"
                        )));
                    }
                    codes.push(code);
                }
                Source::Given(codes)
            }
            _ => {
                return Err(ApiError::bad_request(
                    "give either count (codes to generate) or codes (your own), not both",
                ));
            }
        };
        Ok((self.group, uses, source))
    }
}

/// Add access codes to a sale.
///
/// Role `admin`. The answer is the only place the codes appear in plain text: the server keeps
/// their hashes. With `Accept: text/csv` the batch comes as CSV (`code,group,uses`, CRLF).
#[utoipa::path(post, path = "/api/admin/sales/{id}/codes", tag = "admin", security(("accessToken" = [])), params(IdParam), request_body = NewCodes, responses(
    (status = 201, description = "The batch, stored whole", content(
        (Batch = "application/json"),
        (String = "text/csv", example = "code,group,uses\r\nABCD-EFGH-JKMN,vip,1\r\n"),
    )),
    (status = 400, description = "`bad_request`: not exactly one of `count` and `codes`, a bound broken, a group the sale does not have, a code twice or already in the sale", body = Error),
    (status = 403, description = "`forbidden`: not an administrator", body = Error),
    (status = 404, description = "`not_found`", body = Error),
    (status = 409, description = "`invalid_state`: the sale is closed", body = Error),
))]
#[tracing::instrument(skip_all, fields(admin = %admin.sub, sale_id = %id))]
async fn create_codes(
    State(state): State<AppState>,
    Admin(admin): Admin,
    PathId(id): PathId<SaleId>,
    headers: HeaderMap,
    Json(body): Json<NewCodes>,
) -> Result<Response, ApiError> {
    let csv = wants_csv(&headers);
    let (group, uses, source) = body.validate()?;

    let mut tx = state
        .mysql
        .begin()
        .await
        .map_err(|e| fail::db("starting a transaction", e))?;
    // Shared lock: the sale's groups cannot change under the batch.
    let row: Option<(String, Option<chrono::DateTime<Utc>>)> = sqlx::query_as(
        "SELECT access_groups, closed_at FROM sales WHERE id = ? LOCK IN SHARE MODE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| fail::db("reading a sale", e))?;
    let Some((groups, closed_at)) = row else {
        return Err(ApiError::not_found());
    };
    if closed_at.is_some() {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            "the sale is closed: codes can no longer be added",
        ));
    }
    let groups = door::parse_groups_field(&groups);
    if !groups.contains(&group) {
        return Err(ApiError::bad_request(format!(
            "group: `{group}` is not one of this sale's groups ({})",
            if groups.is_empty() {
                "it has none: set `groups` on the sale first".to_owned()
            } else {
                groups.join(", ")
            }
        )));
    }

    let source_name = match source {
        Source::Generate(_) => "generated",
        Source::Given(_) => "given",
    };
    let codes = match source {
        Source::Given(codes) => {
            if let Some(taken) = first_existing(&mut tx, id, &codes).await? {
                return Err(ApiError::bad_request(format!(
                    "codes: `{taken}` exists in this sale already"
                )));
            }
            codes
        }
        Source::Generate(count) => generate_new(&mut tx, id, count).await?,
    };
    let hashes: Vec<[u8; 32]> = codes.iter().map(|c| door::code_hash(id, c)).collect();

    let now = Utc::now().trunc_subsecs(3);
    for chunk in hashes.chunks(CHUNK) {
        let mut insert = sqlx::QueryBuilder::<sqlx::MySql>::new(
            "INSERT INTO access_codes (sale_id, code_hash, group_name, uses, created_at) ",
        );
        insert.push_values(chunk, |mut row, hash| {
            row.push_bind(id)
                .push_bind(&hash[..])
                .push_bind(&group)
                .push_bind(uses)
                .push_bind(now);
        });
        insert.build().execute(&mut *tx).await.map_err(|e| {
            // Two batches racing with the same code: the later one loses, whole.
            if e.as_database_error()
                .is_some_and(|d| d.is_unique_violation())
            {
                ApiError::bad_request("codes: a code of this batch was added to the sale meanwhile")
            } else {
                fail::db("storing access codes", e)
            }
        })?;
    }

    // The trail keeps the batch's size, never its codes nor their hashes (crate::trail).
    let after = serde_json::json!({
        "group": group,
        "uses": uses,
        "count": codes.len(),
        "source": source_name,
    });
    trail::record(
        &mut tx,
        admin.sub,
        Action::CodesCreate,
        Subject::Sale(id),
        None,
        &after,
    )
    .await?;

    // Redis before the commit: the batch joins the live sale whole, or the transaction rolls
    // back. Fields are unique hashes, so a retried HSET writes the same values.
    let key = SaleKeys::new(&state.redis, id).codes();
    let value = format!("{group}:{uses}");
    for chunk in hashes.chunks(CHUNK) {
        let fields: VecDeque<(Key, String)> = chunk
            .iter()
            .map(|hash| (Key::from(&hash[..]), value.clone()))
            .collect();
        let written: Result<i64, _> = state.redis.pool().hset(&key, fields).await;
        if let Err(error) = written {
            if let Err(e) = tx.rollback().await {
                tracing::warn!(error = %e, "rollback failed; the connection drops the transaction");
            }
            remove_from_redis(&state, &key, &hashes).await;
            return Err(fail::redis("storing access codes", error));
        }
    }
    if let Err(error) = tx.commit().await {
        remove_from_redis(&state, &key, &hashes).await;
        return Err(fail::db("committing access codes", error));
    }
    tracing::info!(group = %group, uses, count = codes.len(), "access codes created");

    let shown: Vec<String> = codes.iter().map(|c| door::display_code(c)).collect();
    if csv {
        let mut text = String::from("code,group,uses\r\n");
        for code in &shown {
            text.push_str(&format!("{code},{group},{uses}\r\n"));
        }
        return Ok((
            StatusCode::CREATED,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            )],
            text,
        )
            .into_response());
    }
    Ok((
        StatusCode::CREATED,
        Json(Batch {
            group,
            uses,
            codes: shown,
        }),
    )
        .into_response())
}

/// `Accept: text/csv` asks for CSV (JSON otherwise, also for `*/*`).
fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            media
                .split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/csv"))
        })
}

/// The first of `codes` the sale has already, if any.
async fn first_existing(
    tx: &mut sqlx::MySqlConnection,
    sale: SaleId,
    codes: &[String],
) -> Result<Option<String>, ApiError> {
    for chunk in codes.chunks(CHUNK) {
        let hashes: Vec<[u8; 32]> = chunk.iter().map(|c| door::code_hash(sale, c)).collect();
        let mut query = sqlx::QueryBuilder::<sqlx::MySql>::new(
            "SELECT code_hash FROM access_codes WHERE sale_id = ",
        );
        query.push_bind(sale).push(" AND code_hash IN (");
        let mut list = query.separated(", ");
        for hash in &hashes {
            list.push_bind(&hash[..]);
        }
        list.push_unseparated(")");
        let taken: Vec<Vec<u8>> = query
            .build_query_scalar()
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| fail::db("checking access codes", e))?;
        if let Some(code) = chunk
            .iter()
            .zip(&hashes)
            .find(|(_, hash)| taken.iter().any(|t| t[..] == hash[..]))
            .map(|(code, _)| code)
        {
            return Ok(Some(code.clone()));
        }
    }
    Ok(None)
}

/// `count` new codes, none of them already in the sale.
async fn generate_new(
    tx: &mut sqlx::MySqlConnection,
    sale: SaleId,
    count: usize,
) -> Result<Vec<String>, ApiError> {
    let mut codes: Vec<String> = Vec::with_capacity(count);
    let mut seen: HashSet<String> = HashSet::with_capacity(count);
    while codes.len() < count {
        let code = door::generate_code();
        if seen.insert(code.clone()) {
            codes.push(code);
        }
    }
    for _ in 0..MAX_DRAWS {
        let Some(taken) = first_existing(tx, sale, &codes).await? else {
            return Ok(codes);
        };
        // Astronomically rare at 60 bits: draw that one again and check the batch again.
        let fresh = loop {
            let code = door::generate_code();
            if seen.insert(code.clone()) {
                break code;
            }
        };
        if let Some(slot) = codes.iter_mut().find(|c| **c == taken) {
            *slot = fresh;
        }
    }
    Err(ApiError::internal(anyhow::anyhow!(
        "could not draw {count} new access codes for sale {sale}"
    )))
}

/// Undoes a batch's Redis side after the MySQL side failed (best effort: a code left in Redis
/// without its row would let buyers in that MySQL does not know of, so it is logged loudly).
async fn remove_from_redis(state: &AppState, key: &str, hashes: &[[u8; 32]]) {
    for chunk in hashes.chunks(CHUNK) {
        let fields: Vec<Key> = chunk.iter().map(|h| Key::from(&h[..])).collect();
        let removed: Result<i64, _> = state.redis.pool().hdel(key, fields).await;
        if let Err(e) = removed {
            tracing::error!(
                error = %e,
                "could not remove access codes from Redis after their batch failed"
            );
            return;
        }
    }
}
