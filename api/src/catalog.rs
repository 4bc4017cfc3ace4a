//! The public catalog: products and sales as buyers read them.
//!
//! - `GET /api/products?limit=&cursor=`, `GET /api/products/{id}`
//! - `GET /api/sales?state=&limit=&cursor=`, `GET /api/sales/{id}`, `GET /api/sales/{id}/stock`
//!
//! Lists are newest first with keyset pagination on the id ([`crate::paging`]).
//!
//! Details go through the look-aside [`Cache`](crate::cache::Cache). A sale's answer joins its
//! cached static part (product, stock, times, limits: nothing a `PATCH` changes) with its live
//! state from Redis (`lua/sale_view.lua`: settings, counters and the Redis clock in one round
//! trip). The stock endpoint reads Redis only: it is the hottest read of a sale.
//!
//! The types and loaders here are shared with [`crate::admin`], which answers with the same
//! shapes.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use dropline_core::http::Json;
use dropline_core::http::error::{ApiError, ErrorCode};
use dropline_core::ids::{ProductId, SaleId};
use dropline_core::sale::draw::{self, DrawProgress, Mode};
use dropline_core::sale::{self, SaleState, SaleView, StateInputs, door};
use futures_util::future::try_join_all;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::cache::Entry;
use crate::docs::{Error, IdParam, PageParams, SaleListParams};
use crate::extract::PathId;
use crate::fail;
use crate::paging::{self, Keyset, Page, PageRequest};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_products))
        .routes(routes!(get_product))
        .routes(routes!(list_sales))
        .routes(routes!(get_sale))
        .routes(routes!(get_stock))
}

/// With a state filter, at most this many sales are examined for one page; a page may then hold
/// fewer items than asked for, with a `next_cursor` to go on from.
const MAX_SCAN: usize = 500;

/// RFC 3339 UTC with milliseconds (`2026-11-23T09:00:00.000Z`), the contract's time format.
pub(crate) mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        DateTime::<Utc>::deserialize(d)
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<DateTime<Utc>>::deserialize(d)
        }
    }
}

/// A product, as answered and as cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Product {
    #[schema(value_type = uuid::Uuid)]
    pub id: ProductId,
    pub name: String,
    pub description: Option<String>,
    /// Minor units of `currency`.
    pub price: i64,
    pub currency: String,
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
}

/// A sale's record from MySQL, cached (every admin change invalidates the entry). What moves
/// during the sale (stock, rate, pause) comes from Redis instead ([`SaleView`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleRecord {
    pub id: SaleId,
    pub product: Product,
    pub stock_total: i64,
    #[serde(with = "rfc3339")]
    pub opens_at: DateTime<Utc>,
    #[serde(with = "rfc3339::option")]
    pub closes_at: Option<DateTime<Utc>>,
    pub per_user_limit: i64,
    pub hold_seconds: i64,
    /// The door's settings (design/door.md); defaults for an entry cached before they existed.
    #[serde(default)]
    pub pow_difficulty: u8,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default, with = "rfc3339::option")]
    pub presale_only_until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub notice: Option<String>,
    /// The mode (design/draw.md); fcfs for an entry cached before draws existed.
    #[serde(default)]
    pub mode: Mode,
    /// A draw sale's freeze; `None` for fcfs.
    #[serde(default, with = "rfc3339::option")]
    pub entries_close_at: Option<DateTime<Utc>>,
    /// A draw sale's claim window; `None` for fcfs.
    #[serde(default)]
    pub claim_seconds: Option<i64>,
}

/// A draw sale's draw, as `GET /api/sales/{id}` shows it (design/draw.md).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DrawInfo {
    /// Entries are taken from `opens_at` until this instant (the freeze).
    #[serde(with = "rfc3339")]
    pub entries_close_at: DateTime<Utc>,
    /// How long a winner has to order, from the promotion.
    #[schema(minimum = 1, maximum = 86_400)]
    pub claim_seconds: i64,
    /// Entries in the frozen list, once the draw is ranked (0 before: entries are counted at
    /// the freeze).
    pub entry_count: i64,
    /// Winners promoted so far (ranks 1 to `promoted`).
    pub promoted: i64,
}

/// What a draw sale has counted so far (from Redis `drw`: the ranking's length and the wins).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrawCounts {
    pub entry_count: i64,
    pub promoted: i64,
}

/// A sale as answered: the record plus its live state.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Sale {
    #[schema(value_type = uuid::Uuid)]
    pub id: SaleId,
    pub product: Product,
    pub stock_total: i64,
    pub available: i64,
    #[serde(with = "rfc3339")]
    pub opens_at: DateTime<Utc>,
    #[serde(with = "rfc3339::option")]
    pub closes_at: Option<DateTime<Utc>>,
    pub per_user_limit: i64,
    pub hold_seconds: i64,
    pub admit_per_second: i64,
    /// `null`: no limit on active buyers.
    pub max_active: Option<i64>,
    pub paused: bool,
    #[schema(value_type = crate::docs::SaleStateDoc)]
    pub state: SaleState,
    /// Leading zero bits a join's proof of work must have (0: none asked).
    #[schema(maximum = 24)]
    pub pow_difficulty: u8,
    /// The priority groups, first served first (`public`, buyers without a code, is implicit
    /// and last).
    pub groups: Vec<String>,
    /// Before this, only buyers with an access code may join.
    #[serde(with = "rfc3339::option")]
    pub presale_only_until: Option<DateTime<Utc>>,
    /// A line the waiting page shows.
    pub notice: Option<String>,
    /// `fcfs`: the waiting room's line; `draw`: a draw among entries (design/draw.md).
    pub mode: Mode,
    /// `null` for an fcfs sale.
    pub draw: Option<DrawInfo>,
    /// The Redis line shards the waiting line is spread over (1: the sale's own slot).
    #[schema(minimum = 1, maximum = 64)]
    pub line_shards: u16,
}

impl Sale {
    /// An fcfs sale, or a draw sale before anything was counted.
    pub fn new(record: SaleRecord, view: &SaleView) -> Self {
        let counts = DrawCounts {
            entry_count: view.ranked,
            promoted: view.promoted,
        };
        Self::with_counts(record, view, counts)
    }

    /// A sale with its draw's counts (ignored for an fcfs sale).
    pub fn with_counts(record: SaleRecord, view: &SaleView, counts: DrawCounts) -> Self {
        let draw = match (record.mode, record.entries_close_at, record.claim_seconds) {
            (Mode::Draw, Some(entries_close_at), Some(claim_seconds)) => Some(DrawInfo {
                entries_close_at,
                claim_seconds,
                entry_count: counts.entry_count,
                promoted: counts.promoted,
            }),
            _ => None,
        };
        let state = match &draw {
            Some(d) => draw::derive_draw_state(
                StateInputs {
                    now_ms: view.now_ms,
                    opens_at_ms: view.opens_at_ms,
                    closes_at_ms: view.closes_at_ms,
                    paused: view.paused,
                    closed: view.closed,
                    available: view.available,
                    held: view.held,
                },
                DrawProgress {
                    entries_close_at_ms: d.entries_close_at.timestamp_millis(),
                    promoted: d.promoted,
                },
            ),
            None => view.state(),
        };
        Self {
            id: record.id,
            product: record.product,
            // From Redis, like the live fields: a scheduled sale's PATCH (#24) changes these, and
            // the Redis state is written in the same step as the "still scheduled" check.
            stock_total: view.stock_total,
            available: view.available,
            opens_at: view.opens_at(),
            closes_at: view.closes_at(),
            per_user_limit: view.per_user_limit,
            hold_seconds: view.hold_seconds,
            admit_per_second: view.admit_per_second,
            max_active: view.max_active,
            paused: view.paused,
            state,
            pow_difficulty: record.pow_difficulty,
            groups: record.groups,
            presale_only_until: record.presale_only_until,
            notice: record.notice,
            mode: record.mode,
            draw,
            line_shards: view.line_shards,
        }
    }
}

/// `GET /api/sales/{id}/stock`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Stock {
    pub available: i64,
    pub held: i64,
    pub sold: i64,
}

// ---------------------------------------------------------------------------------------------
// Loading

/// The products list, newest first.
const PRODUCTS: Keyset<'static> = Keyset {
    select: "SELECT id, name, description, price, currency, created_at FROM products",
    filter: None,
    id: "id",
};

/// A product from MySQL.
pub async fn load_product(pool: &MySqlPool, id: ProductId) -> Result<Option<Product>, ApiError> {
    sqlx::query_as::<_, Product>(
        "SELECT id, name, description, price, currency, created_at FROM products WHERE id = ?",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(|e| fail::db("reading a product", e))
}

/// One row of `sales JOIN products`.
#[derive(Debug, sqlx::FromRow)]
struct SaleRow {
    id: SaleId,
    stock_total: i32,
    opens_at: DateTime<Utc>,
    closes_at: Option<DateTime<Utc>>,
    per_user_limit: i32,
    hold_seconds: i32,
    product_id: ProductId,
    product_name: String,
    product_description: Option<String>,
    product_price: i64,
    product_currency: String,
    product_created_at: DateTime<Utc>,
    pow_difficulty: u8,
    access_groups: String,
    presale_only_until: Option<DateTime<Utc>>,
    notice: Option<String>,
    mode: String,
    entries_close_at: Option<DateTime<Utc>>,
    claim_seconds: Option<u32>,
}

const SALE_SELECT: &str = "SELECT s.id, s.stock_total, s.opens_at, s.closes_at, \
     s.per_user_limit, s.hold_seconds, p.id AS product_id, p.name AS product_name, \
     p.description AS product_description, p.price AS product_price, \
     p.currency AS product_currency, p.created_at AS product_created_at, s.pow_difficulty, \
     s.access_groups, s.presale_only_until, s.notice, s.mode, s.entries_close_at, \
     s.claim_seconds FROM sales s JOIN products p ON p.id = s.product_id";

impl From<SaleRow> for SaleRecord {
    fn from(r: SaleRow) -> Self {
        Self {
            id: r.id,
            product: Product {
                id: r.product_id,
                name: r.product_name,
                description: r.product_description,
                price: r.product_price,
                currency: r.product_currency,
                created_at: r.product_created_at,
            },
            stock_total: r.stock_total.into(),
            opens_at: r.opens_at,
            closes_at: r.closes_at,
            per_user_limit: r.per_user_limit.into(),
            hold_seconds: r.hold_seconds.into(),
            pow_difficulty: r.pow_difficulty,
            groups: door::parse_groups_field(&r.access_groups),
            presale_only_until: r.presale_only_until,
            notice: r.notice,
            // The column is an ENUM of the two names (and a CHECK ties the draw fields to it).
            mode: Mode::parse(&r.mode).unwrap_or_default(),
            entries_close_at: r.entries_close_at,
            claim_seconds: r.claim_seconds.map(i64::from),
        }
    }
}

/// A sale's record from MySQL.
pub async fn load_sale(pool: &MySqlPool, id: SaleId) -> Result<Option<SaleRecord>, ApiError> {
    sqlx::query_as::<_, SaleRow>(sqlx::AssertSqlSafe(format!("{SALE_SELECT} WHERE s.id = ?")))
        .bind(id)
        .fetch_optional(pool)
        .await
        .map(|row| row.map(SaleRecord::from))
        .map_err(|e| fail::db("reading a sale", e))
}

/// A product through the cache.
pub async fn cached_product(state: &AppState, id: ProductId) -> Result<Option<Product>, ApiError> {
    let pool = state.mysql.clone();
    state
        .cache
        .get_or_load(Entry::Product(id), move || async move {
            load_product(&pool, id).await
        })
        .await
}

/// A sale's record through the cache.
pub async fn cached_sale(state: &AppState, id: SaleId) -> Result<Option<SaleRecord>, ApiError> {
    let pool = state.mysql.clone();
    state
        .cache
        .get_or_load(Entry::Sale(id), move || async move {
            load_sale(&pool, id).await
        })
        .await
}

/// A sale's live state; `None` when it is not armed in Redis.
///
/// Callers asking at the same moment share one read (see [`dropline_core::coalesce`]): under a
/// stock storm one Redis round trip answers a whole batch, and no answer is older than the
/// read in flight when its request arrived.
pub async fn live_view(state: &AppState, id: SaleId) -> Result<Option<SaleView>, ApiError> {
    let redis = state.redis.clone();
    state
        .views
        .run(id, move || async move {
            sale::view(&redis, id)
                .await
                .map_err(|e| fail::redis("reading a sale's live state", e))
        })
        .await
        .unwrap_or_else(|aborted| Err(ApiError::internal(aborted)))
}

/// The answer for a sale that exists in MySQL but has no state in Redis: Redis lost its data
/// and the sale needs `dropline sale rearm`.
fn not_armed(id: SaleId) -> ApiError {
    tracing::error!(sale_id = %id, "sale has no state in Redis; run `dropline sale rearm {id}`");
    ApiError::new(
        ErrorCode::Unavailable,
        "the live state of this sale is not available right now",
    )
    .with_retry_after(5)
}

/// A sale as answered, from the cache and Redis; `None` when there is no such sale.
pub async fn sale_answer(state: &AppState, id: SaleId) -> Result<Option<Sale>, ApiError> {
    let (record, view) = tokio::join!(cached_sale(state, id), live_view(state, id));
    let Some(record) = record? else {
        return Ok(None);
    };
    let view = view?.ok_or_else(|| not_armed(id))?;
    Ok(Some(Sale::new(record, &view)))
}

// ---------------------------------------------------------------------------------------------
// Paging

/// Query parameters of the lists; everything arrives as text so that every mistake gets the
/// contract's 400 with a message naming the parameter.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
    state: Option<String>,
}

fn query(query: Result<Query<ListQuery>, QueryRejection>) -> Result<ListQuery, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// List products.
///
/// Newest first, a page at a time.
#[utoipa::path(get, path = "/api/products", tag = "catalog", params(PageParams), responses(
    (status = 200, description = "A page of products", body = PageOfProducts),
    (status = 400, description = "`bad_request`: `limit` or `cursor` is not valid", body = Error),
))]
#[tracing::instrument(skip_all)]
async fn list_products(
    State(state): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page<Product>>, ApiError> {
    let q = query(q)?;
    let PageRequest { limit, after } = PageRequest::parse(q.limit.as_deref(), q.cursor.as_deref())?;
    let rows = PRODUCTS
        .fetch(&state.mysql, after, limit)
        .await
        .map_err(|e| fail::db("listing products", e))?;
    Ok(Json(paging::page(rows, limit, |p: &Product| p.id)))
}

/// One product.
#[utoipa::path(get, path = "/api/products/{id}", tag = "catalog", params(IdParam), responses(
    (status = 200, description = "The product", body = Product),
    (status = 404, description = "`not_found`", body = Error),
))]
#[tracing::instrument(skip_all, fields(product_id = %id))]
async fn get_product(
    State(state): State<AppState>,
    PathId(id): PathId<ProductId>,
) -> Result<Json<Product>, ApiError> {
    cached_product(&state, id)
        .await?
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

/// The SQL pre-filter for a state: a superset of the sales in that state, from MySQL alone
/// (the exact state needs Redis). Time bounds get five minutes of slack for clock skew between
/// MySQL and Redis, whose clock decides. Constant text only.
fn state_prefilter(state: Option<SaleState>) -> &'static str {
    match state {
        None => "TRUE",
        Some(SaleState::Closed) => {
            "(s.closed_at IS NOT NULL OR s.closes_at <= UTC_TIMESTAMP(3) + INTERVAL 5 MINUTE)"
        }
        Some(SaleState::Scheduled) => {
            "s.closed_at IS NULL AND s.opens_at > UTC_TIMESTAMP(3) - INTERVAL 5 MINUTE"
        }
        Some(SaleState::Paused) => {
            "s.closed_at IS NULL \
             AND (s.closes_at IS NULL OR s.closes_at > UTC_TIMESTAMP(3) - INTERVAL 5 MINUTE) \
             AND s.paused AND s.opens_at <= UTC_TIMESTAMP(3) + INTERVAL 5 MINUTE"
        }
        Some(SaleState::Entering | SaleState::Drawing | SaleState::Claiming) => {
            "s.mode = 'draw' AND s.closed_at IS NULL \
             AND (s.closes_at IS NULL OR s.closes_at > UTC_TIMESTAMP(3) - INTERVAL 5 MINUTE) \
             AND s.opens_at <= UTC_TIMESTAMP(3) + INTERVAL 5 MINUTE"
        }
        Some(SaleState::Open | SaleState::SoldOut) => {
            "s.closed_at IS NULL \
             AND (s.closes_at IS NULL OR s.closes_at > UTC_TIMESTAMP(3) - INTERVAL 5 MINUTE) \
             AND NOT s.paused AND s.opens_at <= UTC_TIMESTAMP(3) + INTERVAL 5 MINUTE"
        }
    }
}

/// List sales.
///
/// Newest first, a page at a time, with each sale's live state and stock.
#[utoipa::path(get, path = "/api/sales", tag = "catalog", params(SaleListParams), responses(
    (status = 200, description = "A page of sales", body = PageOfSales),
    (status = 400, description = "`bad_request`: `limit`, `cursor` or `state` is not valid", body = Error),
))]
#[tracing::instrument(skip_all)]
async fn list_sales(
    State(state): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page<Sale>>, ApiError> {
    let q = query(q)?;
    let PageRequest { limit, mut after } =
        PageRequest::parse(q.limit.as_deref(), q.cursor.as_deref())?;
    let wanted = q
        .state
        .as_deref()
        .map(str::parse::<SaleState>)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("state: {e}")))?;
    let sales = Keyset {
        select: SALE_SELECT,
        filter: Some(state_prefilter(wanted)),
        id: "s.id",
    };

    let mut items = Vec::with_capacity(limit);
    let mut scanned = 0;
    loop {
        // One row more than needed tells whether anything follows the last one.
        let needed = limit - items.len();
        let rows: Vec<SaleRow> = sales
            .fetch(&state.mysql, after, needed)
            .await
            .map_err(|e| fail::db("listing sales", e))?;
        let more = rows.len() > needed;
        // Every sale's live state at once (auto-pipelined on the pool's connections).
        let views = try_join_all(rows.iter().map(|r| live_view(&state, r.id))).await?;
        for (row, view) in rows.into_iter().zip(views) {
            if items.len() == limit {
                // This row exists past a full page: there is a next page.
                let last = items.last().map(|s: &Sale| s.id.into_uuid());
                return Ok(Json(Page::new(items, last)));
            }
            scanned += 1;
            after = Some(row.id.into_uuid());
            let view = view.ok_or_else(|| not_armed(row.id))?;
            // The answer's state: a draw sale's refines the fcfs rule.
            let sale = Sale::new(row.into(), &view);
            if wanted.is_none_or(|w| w == sale.state) {
                items.push(sale);
            }
        }
        if !more {
            return Ok(Json(Page::new(items, None)));
        }
        if scanned >= MAX_SCAN {
            // Enough work for one request; the client goes on from here.
            return Ok(Json(Page::new(items, after)));
        }
    }
}

/// One sale.
///
/// With its live state and available stock.
#[utoipa::path(get, path = "/api/sales/{id}", tag = "catalog", params(IdParam), responses(
    (status = 200, description = "The sale", body = Sale),
    (status = 404, description = "`not_found`", body = Error),
))]
#[tracing::instrument(skip_all, fields(sale_id = %id))]
async fn get_sale(
    State(state): State<AppState>,
    PathId(id): PathId<SaleId>,
) -> Result<Json<Sale>, ApiError> {
    sale_answer(&state, id)
        .await?
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

/// A sale's stock.
///
/// Available, held and sold units, live. Redis only, never MySQL: a sale that is not armed is
/// 404 here.
#[utoipa::path(get, path = "/api/sales/{id}/stock", tag = "catalog", params(IdParam), responses(
    (status = 200, description = "The stock", body = Stock),
    (status = 404, description = "`not_found`", body = Error),
))]
#[tracing::instrument(skip_all, fields(sale_id = %id))]
async fn get_stock(
    State(state): State<AppState>,
    PathId(id): PathId<SaleId>,
) -> Result<Json<Stock>, ApiError> {
    let view = live_view(&state, id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(Stock {
        available: view.available,
        held: view.held,
        sold: view.sold,
    }))
}

/// A page of products (schema only).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct PageOfProducts {
    items: Vec<Product>,
    /// Pass as `cursor` for the next page; `null`: the last page.
    next_cursor: Option<String>,
}

/// A page of sales (schema only).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct PageOfSales {
    items: Vec<Sale>,
    /// Pass as `cursor` for the next page; `null`: the last page.
    next_cursor: Option<String>,
}
