//! Catalog and sale administration (role `admin`): create products, create and arm sales, and
//! adjust a running sale.
//!
//! - `POST /api/admin/products` → 201 the product
//! - `POST /api/admin/sales` → 201 the sale (shape of `GET /api/sales/{id}`)
//! - `PATCH /api/admin/products/{id}` → 200 the product
//! - `PATCH /api/admin/sales/{id}` → 200 the sale
//!
//! Each change writes its audit-trail row ([`crate::trail`]) on the change's transaction.
//!
//! MySQL is the record and Redis runs the sale, so every write keeps the two in step: the MySQL
//! change is made in a transaction, the Redis change is made before the commit, and a Redis
//! failure rolls the transaction back (503 `unavailable`, nothing written). If the commit itself
//! fails after Redis changed, the Redis change is undone where that is safe. Cache entries are
//! invalidated after the commit.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Datelike, SubsecRound, Utc};
use dropline_core::config::{ProviderKind, STRIPE_CURRENCIES};
use dropline_core::http::Json;
use dropline_core::http::error::{ApiError, ErrorCode};
use dropline_core::ids::{ProductId, SaleId};
use dropline_core::sale::draw::{self, DrawSettings, Mode};
use dropline_core::sale::keys::MAX_LINE_SHARDS;
use dropline_core::sale::{self, Door, Edit, SaleConfig, ScheduleUpdate, SettingsUpdate, door};
use rand::RngCore;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::cache::Entry;
use crate::catalog::{self, Product, Sale, SaleRecord};
use crate::docs::{Error, IdParam};
use crate::extract::{Admin, PathId};
use crate::fail;
use crate::state::AppState;
use crate::trail::{self, Action, Subject};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_product))
        .routes(routes!(patch_product))
        .routes(routes!(create_sale))
        .routes(routes!(patch_sale))
}

/// Bounds the contract gives (DESIGN §9 and issue #3).
pub const MAX_STOCK: i64 = 10_000_000;
pub const HOLD_SECONDS: std::ops::RangeInclusive<i64> = 10..=86_400;
pub const ADMIT_PER_SECOND: std::ops::RangeInclusive<i64> = 1..=100_000;
/// The largest integer a JSON client (JavaScript) reads exactly.
const MAX_PRICE: i64 = (1 << 53) - 1;
const MAX_NAME_CHARS: usize = 200;
const MAX_DESCRIPTION_CHARS: usize = 10_000;

// ---------------------------------------------------------------------------------------------
// Products

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    /// 1 to 200 characters after trimming, no control characters.
    #[schema(
        pattern = r"^\s*[^\s\x00-\x1F\x7F-\x9F](?:[^\x00-\x1F\x7F-\x9F]{0,198}[^\s\x00-\x1F\x7F-\x9F])?\s*$"
    )]
    name: String,
    /// Up to 10,000 characters after trimming; tabs and line breaks allowed, no other control
    /// characters. Empty: none.
    #[serde(default)]
    #[schema(
        pattern = r"^\s*(?:[^\s\x00-\x1F\x7F-\x9F](?:[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]{0,9998}[^\s\x00-\x1F\x7F-\x9F])?)?\s*$"
    )]
    description: Option<String>,
    /// Minor units of `currency`, 0 to 2^53 - 1.
    #[schema(minimum = 0, maximum = 9_007_199_254_740_991_i64)]
    price: i64,
    /// ISO 4217: three upper-case letters (default `KRW`).
    #[serde(default)]
    #[schema(pattern = r"^[A-Z]{3}$")]
    currency: Option<String>,
}

fn check_text(field: &str, value: &str, max: usize, allow_newlines: bool) -> Result<(), ApiError> {
    let n = value.chars().count();
    if n > max {
        return Err(ApiError::bad_request(format!(
            "{field} must be at most {max} characters"
        )));
    }
    let bad = value
        .chars()
        .any(|c| c.is_control() && !(allow_newlines && (c == '\n' || c == '\r' || c == '\t')));
    if bad {
        return Err(ApiError::bad_request(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

/// ISO 4217 shape: three uppercase ASCII letters.
fn check_currency(raw: Option<&str>) -> Result<String, ApiError> {
    let currency = raw.unwrap_or("KRW");
    if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(currency.to_owned())
    } else {
        Err(ApiError::bad_request(format!(
            "currency must be an ISO 4217 code of three uppercase letters (such as KRW), got `{currency}`"
        )))
    }
}

impl NewProduct {
    fn validate(self) -> Result<(String, Option<String>, i64, String), ApiError> {
        let name = self.name.trim().to_owned();
        if name.is_empty() {
            return Err(ApiError::bad_request("name must not be empty"));
        }
        check_text("name", &name, MAX_NAME_CHARS, false)?;
        let description = self
            .description
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty());
        if let Some(d) = &description {
            check_text("description", d, MAX_DESCRIPTION_CHARS, true)?;
        }
        if !(0..=MAX_PRICE).contains(&self.price) {
            return Err(ApiError::bad_request(format!(
                "price must be an integer from 0 to {MAX_PRICE} (minor units)"
            )));
        }
        let currency = check_currency(self.currency.as_deref())?;
        Ok((name, description, self.price, currency))
    }
}

/// Create a product.
///
/// Role `admin`.
#[utoipa::path(post, path = "/api/admin/products", tag = "admin", security(("accessToken" = [])), request_body = NewProduct, responses(
    (status = 201, description = "The product", body = Product),
    (status = 400, description = "`bad_request`: a field breaks its bound, or the currency is not one the Stripe provider charges (KRW, JPY, USD, EUR, GBP) while it is in use", body = Error),
    (status = 403, description = "`forbidden`: not an administrator", body = Error),
))]
#[tracing::instrument(skip_all, fields(admin = %admin.sub, product_id = tracing::field::Empty))]
async fn create_product(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Json(body): Json<NewProduct>,
) -> Result<(StatusCode, Json<Product>), ApiError> {
    let (name, description, price, currency) = body.validate()?;
    check_provider_currency(&state, &currency)?;
    let product = Product {
        id: ProductId::new_v7(),
        name,
        description,
        price,
        currency,
        created_at: Utc::now().trunc_subsecs(3),
    };
    tracing::Span::current().record("product_id", tracing::field::display(product.id));
    let mut tx = state
        .mysql
        .begin()
        .await
        .map_err(|e| fail::db("starting a transaction", e))?;
    sqlx::query(
        "INSERT INTO products (id, name, description, price, currency, created_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(product.id)
    .bind(&product.name)
    .bind(&product.description)
    .bind(product.price)
    .bind(&product.currency)
    .bind(product.created_at)
    .execute(&mut *tx)
    .await
    .map_err(|e| fail::db("creating a product", e))?;
    let after = json!({
        "name": product.name,
        "description": product.description,
        "price": product.price,
        "currency": product.currency,
    });
    trail::record(
        &mut tx,
        admin.sub,
        Action::ProductCreate,
        Subject::Product(product.id),
        None,
        &after,
    )
    .await?;
    tx.commit()
        .await
        .map_err(|e| fail::db("committing a new product", e))?;
    // A fresh id cannot be cached yet, unless someone guessed it: drop a "does not exist".
    state.cache.invalidate(Entry::Product(product.id)).await;
    tracing::info!(name = %product.name, price = product.price, currency = %product.currency, "product created");
    Ok((StatusCode::CREATED, Json(product)))
}

/// The Stripe provider charges only some currencies.
fn check_provider_currency(state: &AppState, currency: &str) -> Result<(), ApiError> {
    if state.config.payment.provider == ProviderKind::Stripe
        && !STRIPE_CURRENCIES.contains(&currency)
    {
        return Err(ApiError::bad_request(format!(
            "payment.provider is stripe, which charges only {} here (currencies whose minor unit \
             Stripe and ISO 4217 agree on); got `{currency}`",
            STRIPE_CURRENCIES.join(", ")
        )));
    }
    Ok(())
}

/// At least one field; absent fields stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductPatch {
    /// As at creation: 1 to 200 characters after trimming, no control characters.
    #[serde(default)]
    #[schema(
        pattern = r"^\s*[^\s\x00-\x1F\x7F-\x9F](?:[^\x00-\x1F\x7F-\x9F]{0,198}[^\s\x00-\x1F\x7F-\x9F])?\s*$"
    )]
    name: Option<String>,
    /// Absent: unchanged; `null` or `""`: none. As at creation: up to 10,000 characters after
    /// trimming; tabs and line breaks allowed, no other control characters.
    #[serde(default, deserialize_with = "explicit_null")]
    #[schema(
        value_type = Option<String>,
        pattern = r"^\s*(?:[^\s\x00-\x1F\x7F-\x9F](?:[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]{0,9998}[^\s\x00-\x1F\x7F-\x9F])?)?\s*$"
    )]
    description: Option<Option<String>>,
    /// Only while every sale of the product is scheduled (orders quote it).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 9_007_199_254_740_991_i64)]
    price: Option<i64>,
    /// Only while every sale of the product is scheduled (orders quote it).
    #[serde(default)]
    #[schema(pattern = r"^[A-Z]{3}$")]
    currency: Option<String>,
}

/// Change a product.
///
/// Role `admin`. The name and the description change at any time. The price and the currency
/// change only while every sale of the product is `scheduled` (before `opens_at`): an order
/// quotes the price its sale has in Redis, so it must not move once buyers can order; the
/// scheduled sales get the new price in the same step (checked again there, so a sale that
/// opens meanwhile refuses the change: 409, nothing changed).
#[utoipa::path(patch, path = "/api/admin/products/{id}", tag = "admin", security(("accessToken" = [])), params(IdParam), request_body = ProductPatch, responses(
    (status = 200, description = "The product after the change", body = Product),
    (status = 400, description = "`bad_request`: nothing to change, or a field breaks its bound (as at creation)", body = Error),
    (status = 403, description = "`forbidden`: not an administrator", body = Error),
    (status = 404, description = "`not_found`", body = Error),
    (status = 409, description = "`invalid_state`: the price or currency changes while a sale of the product is no longer scheduled", body = Error),
))]
#[tracing::instrument(skip_all, fields(admin = %admin.sub, product_id = %id))]
async fn patch_product(
    State(state): State<AppState>,
    Admin(admin): Admin,
    PathId(id): PathId<ProductId>,
    Json(body): Json<ProductPatch>,
) -> Result<Json<Product>, ApiError> {
    if body.name.is_none()
        && body.description.is_none()
        && body.price.is_none()
        && body.currency.is_none()
    {
        return Err(ApiError::bad_request(
            "nothing to change: give name, description, price or currency",
        ));
    }
    let mut tx = state
        .mysql
        .begin()
        .await
        .map_err(|e| fail::db("starting a transaction", e))?;
    // Exclusive: a sale being created of it holds a shared lock on the row (create_sale).
    let old: Option<Product> = sqlx::query_as(
        "SELECT id, name, description, price, currency, created_at FROM products \
         WHERE id = ? FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| fail::db("reading a product", e))?;
    let Some(old) = old else {
        return Err(ApiError::not_found());
    };
    // The creation's checks on the product as it would be.
    let (name, description, price, currency) = NewProduct {
        name: body.name.unwrap_or_else(|| old.name.clone()),
        description: body.description.unwrap_or_else(|| old.description.clone()),
        price: body.price.unwrap_or(old.price),
        currency: Some(body.currency.unwrap_or_else(|| old.currency.clone())),
    }
    .validate()?;
    check_provider_currency(&state, &currency)?;
    let product = Product {
        name,
        description,
        price,
        currency,
        ..old.clone()
    };
    let mut before = serde_json::Map::new();
    let mut after = serde_json::Map::new();
    for (field, was, is) in [
        ("name", json!(old.name), json!(product.name)),
        (
            "description",
            json!(old.description),
            json!(product.description),
        ),
        ("price", json!(old.price), json!(product.price)),
        ("currency", json!(old.currency), json!(product.currency)),
    ] {
        if was != is {
            before.insert(field.to_owned(), was);
            after.insert(field.to_owned(), is);
        }
    }
    if after.is_empty() {
        tx.rollback()
            .await
            .map_err(|e| fail::db("ending a transaction", e))?;
        return Ok(Json(old));
    }
    let sales: Vec<SaleId> =
        sqlx::query_scalar("SELECT id FROM sales WHERE product_id = ? ORDER BY id FOR UPDATE")
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| fail::db("reading a product's sales", e))?;
    let quoted = product.price != old.price || product.currency != old.currency;
    sqlx::query(
        "UPDATE products SET name = ?, description = ?, price = ?, currency = ? WHERE id = ?",
    )
    .bind(&product.name)
    .bind(&product.description)
    .bind(product.price)
    .bind(&product.currency)
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(|e| fail::db("updating a product", e))?;
    trail::record(
        &mut tx,
        admin.sub,
        Action::ProductUpdate,
        Subject::Product(id),
        Some(&Value::Object(before)),
        &Value::Object(after),
    )
    .await?;
    // The price orders quote lives in each sale's Redis state: written there only while the
    // sale is still scheduled, sale by sale, each in one step with that check; if one refuses,
    // the ones written are put back and nothing changes.
    let mut written = Vec::new();
    if quoted {
        let to = ScheduleUpdate {
            product: Some((id, product.price, product.currency.clone())),
            ..ScheduleUpdate::default()
        };
        let mut refused = None;
        for &sale_id in &sales {
            match sale::edit_scheduled(&state.redis, sale_id, &to, &SettingsUpdate::default()).await
            {
                Ok(Edit::Applied) => written.push(sale_id),
                Ok(Edit::NotArmed) => tracing::warn!(
                    %sale_id,
                    "sale is not armed in Redis; the new price applies when it is rearmed"
                ),
                Ok(Edit::NotScheduled) => {
                    refused = Some(ApiError::new(
                        ErrorCode::InvalidState,
                        format!(
                            "price and currency are fixed once a sale of the product is no \
                             longer scheduled (orders quote them): sale {sale_id} is past \
                             opens_at"
                        ),
                    ));
                    break;
                }
                Err(e) => {
                    refused = Some(fail::redis("writing a sale's price", e));
                    break;
                }
            }
        }
        if let Some(error) = refused {
            if let Err(e) = tx.rollback().await {
                tracing::warn!(error = %e, "rollback failed; the connection drops the transaction");
            }
            put_price_back(&state, &old, &written).await;
            return Err(error);
        }
    }
    if let Err(error) = tx.commit().await {
        put_price_back(&state, &old, &written).await;
        return Err(fail::db("committing a product change", error));
    }
    // Cached copies: the product and every sale record that embeds it.
    let mut entries = vec![Entry::Product(id)];
    entries.extend(sales.iter().map(|&s| Entry::Sale(s)));
    for &entry in &entries {
        state.cache.invalidate(entry).await;
    }
    invalidate_again_later(&state, entries);
    tracing::info!(price = product.price, currency = %product.currency, sales = sales.len(), "product changed");
    Ok(Json(product))
}

/// Puts the old price back into the sales a refused product change had written.
async fn put_price_back(state: &AppState, old: &Product, written: &[SaleId]) {
    let back = ScheduleUpdate {
        product: Some((old.id, old.price, old.currency.clone())),
        ..ScheduleUpdate::default()
    };
    for &sale_id in written {
        if let Err(e) =
            sale::edit_scheduled(&state.redis, sale_id, &back, &SettingsUpdate::default()).await
        {
            tracing::error!(%sale_id, error = format!("{e:#}"), "could not put a sale's price back in Redis");
        }
    }
}

/// A second invalidation a moment after the first: a cache fill that read MySQL just before
/// the commit may write the old value after the first one (the look-aside race, harmless
/// while cached things never changed, `crate::cache`); this removes it.
fn invalidate_again_later(state: &AppState, entries: Vec<Entry>) {
    let cache = state.cache.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        for entry in entries {
            cache.invalidate(entry).await;
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Sales

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSale {
    /// An existing product.
    #[schema(format = Uuid)]
    product_id: String,
    /// Units on sale, 1 to 10,000,000.
    #[schema(minimum = 1, maximum = 10_000_000)]
    stock: i64,
    #[schema(format = DateTime, pattern = r"^(?:19[7-9][0-9]|[2-9][0-9]{3})-")]
    opens_at: String,
    /// After `opens_at`; absent or `null`: open until sold out or closed.
    #[serde(default)]
    #[schema(format = DateTime, pattern = r"^(?:19[7-9][0-9]|[2-9][0-9]{3})-")]
    closes_at: Option<String>,
    /// Units one buyer may hold or buy, 1 to `stock` (default 1).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10_000_000)]
    per_user_limit: Option<i64>,
    /// How long a hold lasts before payment, 10 to 86,400 s (default 600).
    #[serde(default)]
    #[schema(minimum = 10, maximum = 86_400)]
    hold_seconds: Option<i64>,
    /// Buyers the waiting room admits per second, 1 to 100,000 (default 100).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100_000)]
    admit_per_second: Option<i64>,
    /// The most buyers active at once; absent or `null`: no limit.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 2_147_483_647)]
    max_active: Option<i64>,
    /// Leading zero bits of the proof of work a join must bring, 0 to 24 (default 0: none).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 24)]
    pow_difficulty: Option<i64>,
    /// Priority groups in order, at most 8 distinct names of `[a-z0-9_-]{1,32}`, never
    /// `public` (implicit and last).
    #[serde(default)]
    #[schema(max_items = 8, inline, value_type = Option<Vec<GroupName>>)]
    groups: Option<Vec<String>>,
    /// Before this time only buyers with an access code of a group may join; needs `groups`.
    #[serde(default)]
    #[schema(format = DateTime, pattern = r"^(?:19[7-9][0-9]|[2-9][0-9]{3})-")]
    presale_only_until: Option<String>,
    /// A line the waiting page shows: at most 280 characters, no control characters; `null`
    /// or empty: none.
    #[serde(default)]
    #[schema(max_length = 280, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    notice: Option<String>,
    /// `fcfs` (default): the waiting room's line; `draw`: a draw among the entries made from
    /// `opens_at` to `entries_close_at` (design/draw.md). A draw sale takes no
    /// `admit_per_second`, `max_active` nor `groups`.
    #[serde(default)]
    #[schema(value_type = Option<Mode>)]
    mode: Option<String>,
    /// A draw sale's freeze, after `opens_at` (and before `closes_at`); required for a draw,
    /// refused for fcfs.
    #[serde(default)]
    #[schema(format = DateTime, pattern = r"^(?:19[7-9][0-9]|[2-9][0-9]{3})-")]
    entries_close_at: Option<String>,
    /// How long a draw winner has to order, 1 to 86,400 s (default 1,800); refused for fcfs.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86_400)]
    claim_seconds: Option<i64>,
    /// The Redis line shards the waiting line is spread over, 1 to 64 (default 1: the line on
    /// the sale's own slot). For a line of millions on Redis Cluster (README "A line that
    /// outgrows one Redis"); fixed for the sale's life; refused for a draw sale.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 64)]
    line_shards: Option<i64>,
}

/// A priority group's name: `[a-z0-9_-]{1,32}`, not `public`.
#[derive(Debug, ToSchema)]
#[schema(pattern = r"^(?!public$)[a-z0-9_-]{1,32}$")]
#[allow(dead_code)]
pub struct GroupName(String);

/// A validated [`NewSale`].
#[derive(Debug)]
struct SaleInput {
    product_id: ProductId,
    stock: i64,
    opens_at: DateTime<Utc>,
    closes_at: Option<DateTime<Utc>>,
    per_user_limit: i64,
    hold_seconds: i64,
    admit_per_second: i64,
    max_active: Option<i64>,
    door: Door,
    /// `Some` for a draw sale.
    draw: Option<DrawSettings>,
    line_shards: u16,
}

impl SaleInput {
    /// The sale's fields as stored, for the audit trail's `sale.create`.
    fn trail(&self) -> Value {
        let mode = if self.draw.is_some() {
            Mode::Draw
        } else {
            Mode::Fcfs
        };
        json!({
            "product_id": self.product_id,
            "mode": mode.as_str(),
            "stock": self.stock,
            "opens_at": self.opens_at,
            "closes_at": self.closes_at,
            "per_user_limit": self.per_user_limit,
            "hold_seconds": self.hold_seconds,
            "admit_per_second": self.admit_per_second,
            "max_active": self.max_active,
            "pow_difficulty": self.door.pow_difficulty,
            "groups": self.door.groups,
            "presale_only_until": self.door.presale_only_until,
            "notice": self.door.notice,
            "entries_close_at": self.draw.map(|d| d.entries_close_at),
            "claim_seconds": self.draw.map(|d| d.claim_seconds),
            "line_shards": self.line_shards,
        })
    }
}

/// A presale needs a group whose codes can get in before it ends.
fn check_presale(
    presale_only_until: Option<DateTime<Utc>>,
    groups: &[String],
) -> Result<(), ApiError> {
    if presale_only_until.is_some() && groups.is_empty() {
        return Err(ApiError::bad_request(
            "presale_only_until needs at least one group: before it only buyers with an access \
             code of a group may join",
        ));
    }
    Ok(())
}

fn parse_time(field: &str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "{field} must be an RFC 3339 time such as 2026-12-01T12:00:00Z, got `{raw}`"
        ))
    };
    let time = DateTime::parse_from_rfc3339(raw)
        .map_err(|_| bad())?
        .with_timezone(&Utc)
        .trunc_subsecs(3);
    // MySQL DATETIME and the epoch milliseconds in Redis both hold this range.
    if !(1970..=9999).contains(&time.year()) {
        return Err(bad());
    }
    Ok(time)
}

fn in_range(field: &str, value: i64, min: i64, max: i64) -> Result<i64, ApiError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::bad_request(format!(
            "{field} must be an integer from {min} to {max}, got {value}"
        )))
    }
}

/// `max_active`: at least 1 (absent or `null`: no limit); bounded by the MySQL column.
fn check_max_active(value: i64) -> Result<i64, ApiError> {
    if (1..=i64::from(i32::MAX)).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::bad_request(format!(
            "max_active must be an integer of at least 1 (or null for no limit), got {value}"
        )))
    }
}

impl NewSale {
    fn validate(self) -> Result<SaleInput, ApiError> {
        let product_id = ProductId::parse_str(self.product_id.trim()).map_err(|_| {
            ApiError::bad_request(format!(
                "product_id must be a product id (a UUID), got `{}`",
                self.product_id
            ))
        })?;
        let stock = in_range("stock", self.stock, 1, MAX_STOCK)?;
        let opens_at = parse_time("opens_at", &self.opens_at)?;
        let closes_at = self
            .closes_at
            .as_deref()
            .map(|raw| parse_time("closes_at", raw))
            .transpose()?;
        if closes_at.is_some_and(|c| c <= opens_at) {
            return Err(ApiError::bad_request("closes_at must be after opens_at"));
        }
        let per_user_limit =
            in_range("per_user_limit", self.per_user_limit.unwrap_or(1), 1, stock)?;
        let hold_seconds = in_range(
            "hold_seconds",
            self.hold_seconds.unwrap_or(600),
            *HOLD_SECONDS.start(),
            *HOLD_SECONDS.end(),
        )?;
        let admit_per_second = in_range(
            "admit_per_second",
            self.admit_per_second.unwrap_or(100),
            *ADMIT_PER_SECOND.start(),
            *ADMIT_PER_SECOND.end(),
        )?;
        let max_active = self.max_active.map(check_max_active).transpose()?;
        let door = Door {
            pow_difficulty: door::check_pow_difficulty(self.pow_difficulty.unwrap_or(0))
                .map_err(ApiError::bad_request)?,
            groups: door::check_groups(self.groups.as_deref().unwrap_or_default())
                .map_err(ApiError::bad_request)?,
            presale_only_until: self
                .presale_only_until
                .as_deref()
                .map(|raw| parse_time("presale_only_until", raw))
                .transpose()?,
            notice: door::check_notice(self.notice.as_deref()).map_err(ApiError::bad_request)?,
        };
        check_presale(door.presale_only_until, &door.groups)?;
        let draw = check_draw(
            &self.mode,
            self.entries_close_at.as_deref(),
            self.claim_seconds,
            opens_at,
            closes_at,
        )?;
        if draw.is_some() {
            let line_only = [
                ("admit_per_second", self.admit_per_second.is_some()),
                ("max_active", self.max_active.is_some()),
                ("groups", !door.groups.is_empty()),
                ("line_shards", self.line_shards.is_some()),
            ];
            if let Some((field, _)) = line_only.iter().find(|(_, given)| *given) {
                return Err(ApiError::bad_request(format!(
                    "{field} is for a first-come sale's line; a draw sale takes none"
                )));
            }
        }
        let line_shards = in_range(
            "line_shards",
            self.line_shards.unwrap_or(1),
            1,
            i64::from(MAX_LINE_SHARDS),
        )? as u16;
        Ok(SaleInput {
            product_id,
            stock,
            opens_at,
            closes_at,
            per_user_limit,
            hold_seconds,
            admit_per_second,
            max_active,
            door,
            draw,
            line_shards,
        })
    }
}

/// The mode and the draw fields of a new sale: `Ok(None)` for fcfs (which takes neither
/// `entries_close_at` nor `claim_seconds`), the settings of a draw.
fn check_draw(
    mode: &Option<String>,
    entries_close_at: Option<&str>,
    claim_seconds: Option<i64>,
    opens_at: DateTime<Utc>,
    closes_at: Option<DateTime<Utc>>,
) -> Result<Option<DrawSettings>, ApiError> {
    let mode = match mode.as_deref() {
        None => Mode::Fcfs,
        Some(raw) => Mode::parse(raw).ok_or_else(|| {
            ApiError::bad_request(format!("mode must be `fcfs` or `draw`, got `{raw}`"))
        })?,
    };
    if mode == Mode::Fcfs {
        if entries_close_at.is_some() || claim_seconds.is_some() {
            return Err(ApiError::bad_request(
                "entries_close_at and claim_seconds are for a draw sale (\"mode\": \"draw\")",
            ));
        }
        return Ok(None);
    }
    let raw = entries_close_at
        .ok_or_else(|| ApiError::bad_request("a draw sale needs entries_close_at"))?;
    let entries_close_at = parse_time("entries_close_at", raw)?;
    if entries_close_at <= opens_at {
        return Err(ApiError::bad_request(
            "entries_close_at must be after opens_at (entries open at opens_at)",
        ));
    }
    if closes_at.is_some_and(|c| c <= entries_close_at) {
        return Err(ApiError::bad_request(
            "closes_at must be after entries_close_at: the winners buy after the draw",
        ));
    }
    let claim_seconds = in_range(
        "claim_seconds",
        claim_seconds.unwrap_or(draw::DEFAULT_CLAIM_SECONDS),
        *draw::CLAIM_SECONDS.start(),
        *draw::CLAIM_SECONDS.end(),
    )?;
    Ok(Some(DrawSettings {
        entries_close_at,
        claim_seconds,
    }))
}

/// Create a sale.
///
/// Role `admin`. The sale is armed in Redis and the waiting room opens it at `opens_at`.
#[utoipa::path(post, path = "/api/admin/sales", tag = "admin", security(("accessToken" = [])), request_body = NewSale, responses(
    (status = 201, description = "The sale", body = Sale),
    (status = 400, description = "`bad_request`: a field breaks its bound, `closes_at` is not after `opens_at`, `per_user_limit` is over `stock`, a presale has no group, or the product does not exist", body = Error),
    (status = 403, description = "`forbidden`: not an administrator", body = Error),
))]
#[tracing::instrument(skip_all, fields(admin = %admin.sub, sale_id = tracing::field::Empty))]
async fn create_sale(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Json(body): Json<NewSale>,
) -> Result<(StatusCode, Json<Sale>), ApiError> {
    let input = body.validate()?;
    let id = SaleId::new_v7();
    tracing::Span::current().record("sale_id", tracing::field::display(id));
    let now = Utc::now().trunc_subsecs(3);

    let mut tx = state
        .mysql
        .begin()
        .await
        .map_err(|e| fail::db("starting a transaction", e))?;
    // Shared lock: the product (its price, which orders quote) cannot change under the sale
    // being made; a product PATCH takes the sales of the product under an exclusive lock.
    let product = product_for_sale(&mut tx, input.product_id).await?;
    sqlx::query(
        "INSERT INTO sales (id, product_id, stock_total, opens_at, closes_at, per_user_limit, \
         hold_seconds, admit_per_second, max_active, paused, pow_difficulty, access_groups, \
         presale_only_until, notice, mode, entries_close_at, claim_seconds, line_shards, \
         created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, FALSE, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(product.id)
    .bind(input.stock)
    // As DATETIME, not as DateTime<Utc>: sqlx sends that as a TIMESTAMP, which MariaDB cannot
    // hold past 2038 and turns into NULL (schemathesis found it: a sale opening in 2546 was a
    // 500). The columns are DATETIME(3), UTC by convention, up to 9999.
    .bind(input.opens_at.naive_utc())
    .bind(input.closes_at.map(|t| t.naive_utc()))
    .bind(input.per_user_limit)
    .bind(input.hold_seconds)
    .bind(input.admit_per_second)
    .bind(input.max_active)
    .bind(input.door.pow_difficulty)
    .bind(door::groups_field(&input.door.groups))
    .bind(input.door.presale_only_until.map(|t| t.naive_utc()))
    .bind(input.door.notice.as_deref())
    .bind(
        if input.draw.is_some() {
            Mode::Draw
        } else {
            Mode::Fcfs
        }
        .as_str(),
    )
    .bind(input.draw.map(|d| d.entries_close_at.naive_utc()))
    .bind(input.draw.map(|d| d.claim_seconds))
    .bind(input.line_shards)
    .bind(now)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(|e| fail::db("creating a sale", e))?;
    if input.draw.is_some() {
        // The seed exists before the first entry and only its commitment is public until the
        // reveal (draw.md, dropline-draw-v1 step 1).
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let commitment = draw::seed_commitment(&seed);
        sqlx::query("INSERT INTO draws (sale_id, seed, seed_commitment) VALUES (?, ?, ?)")
            .bind(id)
            .bind(&seed[..])
            .bind(&commitment[..])
            .execute(&mut *tx)
            .await
            .map_err(|e| fail::db("creating a sale's draw", e))?;
    }
    trail::record(
        &mut tx,
        admin.sub,
        Action::SaleCreate,
        Subject::Sale(id),
        None,
        &input.trail(),
    )
    .await?;

    let config = SaleConfig {
        product_id: product.id,
        price: product.price,
        currency: product.currency.clone(),
        stock_total: input.stock,
        opens_at: input.opens_at,
        closes_at: input.closes_at,
        per_user_limit: input.per_user_limit,
        hold_seconds: input.hold_seconds,
        admit_per_second: input.admit_per_second,
        max_active: input.max_active,
        paused: false,
        closed: false,
        line_shards: input.line_shards,
    };
    // Redis before the commit: if it fails, the transaction rolls back and nothing exists.
    let armed = async {
        let draw = input.draw.as_ref();
        if !sale::arm_full(&state.redis, id, &config, &input.door, draw, 0, 0).await? {
            anyhow::bail!("sale {id} was armed already");
        }
        sale::view(&state.redis, id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("sale {id} is not armed right after arming"))
    }
    .await;
    let view = match armed {
        Ok(view) => view,
        Err(error) => {
            if let Err(e) = tx.rollback().await {
                tracing::warn!(error = %e, "rollback failed; the connection drops the transaction");
            }
            // The script may have run even though the answer was lost.
            if let Err(e) = sale::unarm(&state.redis, id).await {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "could not remove a half-made sale from Redis"
                );
            }
            return Err(fail::redis("arming a new sale", error));
        }
    };
    if let Err(error) = tx.commit().await {
        undo_arm_after_failed_commit(&state, id).await;
        return Err(fail::db("committing a new sale", error));
    }
    state.cache.invalidate(Entry::Sale(id)).await;
    tracing::info!(
        product_id = %product.id,
        stock = input.stock,
        opens_at = %input.opens_at,
        draw = input.draw.is_some(),
        "sale created and armed"
    );
    let record = SaleRecord {
        id,
        product,
        stock_total: input.stock,
        opens_at: input.opens_at,
        closes_at: input.closes_at,
        per_user_limit: input.per_user_limit,
        hold_seconds: input.hold_seconds,
        pow_difficulty: input.door.pow_difficulty,
        groups: input.door.groups,
        presale_only_until: input.door.presale_only_until,
        notice: input.door.notice,
        mode: if input.draw.is_some() {
            Mode::Draw
        } else {
            Mode::Fcfs
        },
        entries_close_at: input.draw.map(|d| d.entries_close_at),
        claim_seconds: input.draw.map(|d| d.claim_seconds),
    };
    Ok((StatusCode::CREATED, Json(Sale::new(record, &view))))
}

/// A commit error does not say whether the commit happened (the answer may be what was lost).
/// The Redis state is removed only when a fresh read shows the sale is not in MySQL; when that
/// cannot be told, it stays (a sale without Redis state could not sell, an orphan state is
/// harmless) and the log says so.
async fn undo_arm_after_failed_commit(state: &AppState, id: SaleId) {
    let exists = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM sales WHERE id = ?")
        .bind(id)
        .fetch_one(&state.mysql)
        .await;
    match exists {
        Ok(0) => {
            if let Err(e) = sale::unarm(&state.redis, id).await {
                tracing::warn!(sale_id = %id, error = format!("{e:#}"), "could not remove the Redis state of an uncommitted sale");
            }
        }
        Ok(_) => tracing::warn!(sale_id = %id, "commit reported an error but the sale exists"),
        Err(e) => tracing::error!(
            sale_id = %id,
            error = %e,
            "cannot tell whether a sale was committed; its Redis state is kept"
        ),
    }
}

/// `Some(None)` for an explicit `null`, so that `"max_active": null` can remove the limit.
fn explicit_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// At least one field; absent fields stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SalePatch {
    /// 1 to 100,000.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100_000)]
    admit_per_second: Option<i64>,
    /// Absent: unchanged; `null`: no limit.
    #[serde(default, deserialize_with = "explicit_null")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 2_147_483_647)]
    max_active: Option<Option<i64>>,
    #[serde(default)]
    paused: Option<bool>,
    /// Only `true`: a closed sale cannot be reopened.
    #[serde(default)]
    closed: Option<bool>,
    /// 0 to 24.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 24)]
    pow_difficulty: Option<i64>,
    /// Only while the sale is scheduled; as in `POST /api/admin/sales`.
    #[serde(default)]
    #[schema(max_items = 8, inline, value_type = Option<Vec<GroupName>>)]
    groups: Option<Vec<String>>,
    /// Absent: unchanged; `null`: no presale.
    #[serde(default, deserialize_with = "explicit_null")]
    #[schema(value_type = Option<String>, format = DateTime, pattern = r"^(?:19[7-9][0-9]|[2-9][0-9]{3})-")]
    presale_only_until: Option<Option<String>>,
    /// Absent: unchanged; `null` or `""`: no notice.
    #[serde(default, deserialize_with = "explicit_null")]
    #[schema(value_type = Option<String>, max_length = 280, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    notice: Option<Option<String>>,
    /// Only while the sale is scheduled, as at creation (the fields from here on).
    #[serde(default)]
    #[schema(format = Uuid)]
    product_id: Option<String>,
    /// 1 to 10,000,000; at least `per_user_limit`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10_000_000)]
    stock: Option<i64>,
    /// Before `closes_at` (and a draw's `entries_close_at`).
    #[serde(default)]
    #[schema(format = DateTime, pattern = r"^(?:19[7-9][0-9]|[2-9][0-9]{3})-")]
    opens_at: Option<String>,
    /// Absent: unchanged; `null`: open until sold out or closed.
    #[serde(default, deserialize_with = "explicit_null")]
    #[schema(value_type = Option<String>, format = DateTime, pattern = r"^(?:19[7-9][0-9]|[2-9][0-9]{3})-")]
    closes_at: Option<Option<String>>,
    /// 1 to `stock`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10_000_000)]
    per_user_limit: Option<i64>,
    /// 10 to 86,400 s.
    #[serde(default)]
    #[schema(minimum = 10, maximum = 86_400)]
    hold_seconds: Option<i64>,
    /// Only the sale's own mode: a sale's mode never changes (create another sale).
    #[serde(default)]
    #[schema(value_type = Option<Mode>)]
    mode: Option<String>,
    /// A draw sale's freeze, after `opens_at` and before `closes_at`.
    #[serde(default)]
    #[schema(format = DateTime, pattern = r"^(?:19[7-9][0-9]|[2-9][0-9]{3})-")]
    entries_close_at: Option<String>,
    /// A draw sale's claim window, 1 to 86,400 s.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86_400)]
    claim_seconds: Option<i64>,
}

/// The creation fields a `PATCH` gives, unvalidated: they are checked together with the
/// sale's other creation fields by [`NewSale::validate`], the creation's own checks.
#[derive(Debug, Default)]
struct ScheduleFields {
    product_id: Option<String>,
    stock: Option<i64>,
    opens_at: Option<String>,
    closes_at: Option<Option<String>>,
    per_user_limit: Option<i64>,
    hold_seconds: Option<i64>,
    mode: Option<String>,
    entries_close_at: Option<String>,
    claim_seconds: Option<i64>,
}

impl ScheduleFields {
    /// The names of the fields given, in the order of the API.
    fn given(&self) -> Vec<&'static str> {
        [
            ("product_id", self.product_id.is_some()),
            ("stock", self.stock.is_some()),
            ("opens_at", self.opens_at.is_some()),
            ("closes_at", self.closes_at.is_some()),
            ("per_user_limit", self.per_user_limit.is_some()),
            ("hold_seconds", self.hold_seconds.is_some()),
            ("mode", self.mode.is_some()),
            ("entries_close_at", self.entries_close_at.is_some()),
            ("claim_seconds", self.claim_seconds.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }

    /// The sale's creation fields with these over the stored ones, as a [`NewSale`] to run
    /// the creation's checks on. The line's and the door's settings are left out: the `PATCH`
    /// checks those itself (they may change after opening too).
    fn merged(self, old: &SettingsRow) -> NewSale {
        let time = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        NewSale {
            product_id: self
                .product_id
                .unwrap_or_else(|| old.product_id.to_string()),
            stock: self.stock.unwrap_or(i64::from(old.stock_total)),
            opens_at: self.opens_at.unwrap_or_else(|| time(old.opens_at)),
            closes_at: self.closes_at.unwrap_or_else(|| old.closes_at.map(time)),
            per_user_limit: Some(self.per_user_limit.unwrap_or(i64::from(old.per_user_limit))),
            hold_seconds: Some(self.hold_seconds.unwrap_or(i64::from(old.hold_seconds))),
            admit_per_second: None,
            max_active: None,
            pow_difficulty: None,
            groups: None,
            presale_only_until: None,
            notice: None,
            mode: Some(self.mode.unwrap_or_else(|| old.mode.clone())),
            entries_close_at: self
                .entries_close_at
                .or_else(|| old.entries_close_at.map(time)),
            claim_seconds: self.claim_seconds.or(old.claim_seconds.map(i64::from)),
            // Fixed at creation: the places in line stay on their shards.
            line_shards: None,
        }
    }
}

impl SalePatch {
    /// The live settings, checked; and the creation fields, checked later with the sale's
    /// stored ones ([`ScheduleFields::merged`]).
    fn validate(self) -> Result<(SettingsUpdate, ScheduleFields), ApiError> {
        let schedule = ScheduleFields {
            product_id: self.product_id,
            stock: self.stock,
            opens_at: self.opens_at,
            closes_at: self.closes_at,
            per_user_limit: self.per_user_limit,
            hold_seconds: self.hold_seconds,
            mode: self.mode,
            entries_close_at: self.entries_close_at,
            claim_seconds: self.claim_seconds,
        };
        if self.admit_per_second.is_none()
            && self.max_active.is_none()
            && self.paused.is_none()
            && self.closed.is_none()
            && self.pow_difficulty.is_none()
            && self.groups.is_none()
            && self.presale_only_until.is_none()
            && self.notice.is_none()
            && schedule.given().is_empty()
        {
            return Err(ApiError::bad_request(
                "nothing to change: give admit_per_second, max_active, paused, closed, \
                 pow_difficulty, groups, presale_only_until, notice or (while the sale is \
                 scheduled) a creation field",
            ));
        }
        if self.closed == Some(false) {
            return Err(ApiError::bad_request(
                "closed can only be set to true: a closed sale cannot be reopened",
            ));
        }
        let admit_per_second = self
            .admit_per_second
            .map(|n| {
                in_range(
                    "admit_per_second",
                    n,
                    *ADMIT_PER_SECOND.start(),
                    *ADMIT_PER_SECOND.end(),
                )
            })
            .transpose()?;
        let max_active = match self.max_active {
            Some(Some(n)) => Some(Some(check_max_active(n)?)),
            other => other,
        };
        let bad = ApiError::bad_request;
        let settings = SettingsUpdate {
            admit_per_second,
            max_active,
            paused: self.paused,
            closed: self.closed,
            pow_difficulty: self
                .pow_difficulty
                .map(door::check_pow_difficulty)
                .transpose()
                .map_err(bad)?,
            groups: self
                .groups
                .as_deref()
                .map(door::check_groups)
                .transpose()
                .map_err(bad)?,
            presale_only_until: self
                .presale_only_until
                .map(|raw| {
                    raw.as_deref()
                        .map(|raw| parse_time("presale_only_until", raw))
                        .transpose()
                })
                .transpose()?,
            notice: self
                .notice
                .map(|text| door::check_notice(text.as_deref()))
                .transpose()
                .map_err(bad)?,
        };
        Ok((settings, schedule))
    }
}

/// The settings row as it was before a `PATCH`, to check the change against it and to undo
/// the Redis side if the commit fails.
#[derive(Debug, sqlx::FromRow)]
struct SettingsRow {
    admit_per_second: i32,
    max_active: Option<i32>,
    paused: bool,
    opens_at: DateTime<Utc>,
    closed_at: Option<DateTime<Utc>>,
    closes_at: Option<DateTime<Utc>>,
    pow_difficulty: u8,
    access_groups: String,
    presale_only_until: Option<DateTime<Utc>>,
    notice: Option<String>,
    mode: String,
    product_id: ProductId,
    stock_total: i32,
    per_user_limit: i32,
    hold_seconds: i32,
    entries_close_at: Option<DateTime<Utc>>,
    claim_seconds: Option<u32>,
}

impl SettingsRow {
    /// The fields `update` changes, as they are (`before`) and as they will be (`after`), for
    /// the audit trail; `None` when it changes nothing.
    fn changes(&self, update: &SettingsUpdate) -> Option<(Value, Value)> {
        let mut before = serde_json::Map::new();
        let mut after = serde_json::Map::new();
        let mut field = |name: &str, old: Value, new: Value| {
            if old != new {
                before.insert(name.to_owned(), old);
                after.insert(name.to_owned(), new);
            }
        };
        if let Some(n) = update.admit_per_second {
            field("admit_per_second", json!(self.admit_per_second), json!(n));
        }
        if let Some(n) = update.max_active {
            field("max_active", json!(self.max_active), json!(n));
        }
        if let Some(b) = update.paused {
            field("paused", json!(self.paused), json!(b));
        }
        if let Some(b) = update.closed {
            field("closed", json!(self.closed_at.is_some()), json!(b));
        }
        if let Some(n) = update.pow_difficulty {
            field("pow_difficulty", json!(self.pow_difficulty), json!(n));
        }
        if let Some(groups) = &update.groups {
            let old = door::parse_groups_field(&self.access_groups);
            field("groups", json!(old), json!(groups));
        }
        if let Some(t) = update.presale_only_until {
            field(
                "presale_only_until",
                json!(self.presale_only_until),
                json!(t),
            );
        }
        if let Some(text) = &update.notice {
            field("notice", json!(self.notice), json!(text));
        }
        (!after.is_empty()).then_some((Value::Object(before), Value::Object(after)))
    }

    /// The update that puts back what `update` changes.
    fn undo(&self, update: &SettingsUpdate) -> SettingsUpdate {
        SettingsUpdate {
            admit_per_second: update
                .admit_per_second
                .map(|_| i64::from(self.admit_per_second)),
            max_active: update.max_active.map(|_| self.max_active.map(i64::from)),
            paused: update.paused.map(|_| self.paused),
            closed: update.closed.map(|_| false),
            pow_difficulty: update.pow_difficulty.map(|_| self.pow_difficulty),
            groups: update
                .groups
                .as_ref()
                .map(|_| door::parse_groups_field(&self.access_groups)),
            presale_only_until: update.presale_only_until.map(|_| self.presale_only_until),
            notice: update.notice.as_ref().map(|_| self.notice.clone()),
        }
    }
}

impl SettingsRow {
    /// The creation fields `input` (the merged, validated [`NewSale`]) changes: the Redis
    /// update, and the trail's before and after of each changed field. `product` is the new
    /// product when `product_id` changes.
    fn schedule_changes(
        &self,
        input: &SaleInput,
        product: Option<&Product>,
    ) -> (
        ScheduleUpdate,
        serde_json::Map<String, Value>,
        serde_json::Map<String, Value>,
    ) {
        let mut update = ScheduleUpdate::default();
        let mut before = serde_json::Map::new();
        let mut after = serde_json::Map::new();
        let mut field = |name: &str, old: Value, new: Value| {
            let changed = old != new;
            if changed {
                before.insert(name.to_owned(), old);
                after.insert(name.to_owned(), new);
            }
            changed
        };
        if let Some(p) = product
            && field("product_id", json!(self.product_id), json!(p.id))
        {
            update.product = Some((p.id, p.price, p.currency.clone()));
        }
        if field("stock", json!(self.stock_total), json!(input.stock)) {
            update.stock_total = Some(input.stock);
        }
        if field("opens_at", json!(self.opens_at), json!(input.opens_at)) {
            update.opens_at = Some(input.opens_at);
        }
        if field("closes_at", json!(self.closes_at), json!(input.closes_at)) {
            update.closes_at = Some(input.closes_at);
        }
        let per_user = input.per_user_limit;
        if field(
            "per_user_limit",
            json!(self.per_user_limit),
            json!(per_user),
        ) {
            update.per_user_limit = Some(per_user);
        }
        if field(
            "hold_seconds",
            json!(self.hold_seconds),
            json!(input.hold_seconds),
        ) {
            update.hold_seconds = Some(input.hold_seconds);
        }
        if let Some(d) = input.draw {
            if field(
                "entries_close_at",
                json!(self.entries_close_at),
                json!(d.entries_close_at),
            ) {
                update.entries_close_at = Some(d.entries_close_at);
            }
            if field(
                "claim_seconds",
                json!(self.claim_seconds),
                json!(d.claim_seconds),
            ) {
                update.claim_seconds = Some(d.claim_seconds);
            }
        }
        (update, before, after)
    }

    /// The update that puts back what `update` changes.
    fn undo_schedule(&self, update: &ScheduleUpdate, product: Option<&Product>) -> ScheduleUpdate {
        ScheduleUpdate {
            stock_total: update.stock_total.map(|_| i64::from(self.stock_total)),
            opens_at: update.opens_at.map(|_| self.opens_at),
            closes_at: update.closes_at.map(|_| self.closes_at),
            per_user_limit: update
                .per_user_limit
                .map(|_| i64::from(self.per_user_limit)),
            hold_seconds: update.hold_seconds.map(|_| i64::from(self.hold_seconds)),
            entries_close_at: update.entries_close_at.and(self.entries_close_at),
            claim_seconds: update.claim_seconds.and(self.claim_seconds.map(i64::from)),
            product: update
                .product
                .as_ref()
                .and(product.map(|p| (p.id, p.price, p.currency.clone()))),
        }
    }
}

/// Reads a product under a shared lock (it cannot change under the sale being made or
/// changed); a missing one is the client's mistake, named by `product_id`.
async fn product_for_sale(
    tx: &mut sqlx::MySqlConnection,
    id: ProductId,
) -> Result<Product, ApiError> {
    let product: Option<Product> = sqlx::query_as(
        "SELECT id, name, description, price, currency, created_at FROM products \
         WHERE id = ? LOCK IN SHARE MODE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| fail::db("reading the sale's product", e))?;
    product.ok_or_else(|| ApiError::bad_request(format!("product_id: no product {id} exists")))
}

fn not_scheduled(fields: &[&str]) -> ApiError {
    let (names, verb) = match fields {
        [one] => ((*one).to_owned(), "is"),
        many => (many.join(", "), "are"),
    };
    ApiError::new(
        ErrorCode::InvalidState,
        format!(
            "{names} {verb} fixed once the sale is no longer scheduled (from opens_at on); \
             only admit_per_second, max_active, paused, closed, pow_difficulty, \
             presale_only_until and notice change after that"
        ),
    )
}

/// Change a sale.
///
/// Role `admin`. At any time until it closes: the admission rate, the active limit, pause,
/// close, and the door's settings (proof of work, presale, notice). While the sale is
/// `scheduled` (before `opens_at`) also every creation field, checked as at creation: the
/// product, `stock`, `opens_at`, `closes_at`, `per_user_limit`, `hold_seconds`, `groups`, and a
/// draw sale's `entries_close_at` and `claim_seconds` (`mode` never changes). A creation field
/// is never changed after the opening, even by a `PATCH` racing it: the Redis write checks the
/// Redis clock against `opens_at` in the same step and refuses (409, nothing changed). The
/// change, MySQL and Redis, is made whole or not at all.
#[utoipa::path(patch, path = "/api/admin/sales/{id}", tag = "admin", security(("accessToken" = [])), params(IdParam), request_body = SalePatch, responses(
    (status = 200, description = "The sale after the change", body = Sale),
    (status = 400, description = "`bad_request`: nothing to change, `closed: false`, a field breaks its bound (as at creation: `closes_at` not after `opens_at`, `per_user_limit` over `stock`, …), a presale without a group, an unknown product, a different `mode`", body = Error),
    (status = 403, description = "`forbidden`: not an administrator", body = Error),
    (status = 404, description = "`not_found`", body = Error),
    (status = 409, description = "`invalid_state`: the sale is closed, a creation field (named in the message) or the groups change after the sale opened, or a group that has access codes is dropped", body = Error),
))]
#[tracing::instrument(skip_all, fields(admin = %admin.sub, sale_id = %id))]
async fn patch_sale(
    State(state): State<AppState>,
    Admin(admin): Admin,
    PathId(id): PathId<SaleId>,
    Json(body): Json<SalePatch>,
) -> Result<Json<Sale>, ApiError> {
    let (update, fields) = body.validate()?;
    let given = fields.given();
    let mut tx = state
        .mysql
        .begin()
        .await
        .map_err(|e| fail::db("starting a transaction", e))?;
    // The row lock serialises concurrent PATCHes of one sale, so Redis ends as MySQL does.
    let row: Option<SettingsRow> = sqlx::query_as(
        "SELECT admit_per_second, max_active, paused, opens_at, closed_at, closes_at, \
         pow_difficulty, access_groups, presale_only_until, notice, mode, product_id, \
         stock_total, per_user_limit, hold_seconds, entries_close_at, claim_seconds FROM sales \
         WHERE id = ? FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| fail::db("reading a sale", e))?;
    let Some(old) = row else {
        return Err(ApiError::not_found());
    };
    // A draw sale has no line: the line's settings do not apply (design/draw.md, errors).
    if Mode::parse(&old.mode) == Some(Mode::Draw) {
        let line_only = [
            ("admit_per_second", update.admit_per_second.is_some()),
            ("max_active", update.max_active.is_some()),
            (
                "groups",
                update.groups.as_ref().is_some_and(|g| !g.is_empty()),
            ),
        ];
        if let Some((field, _)) = line_only.iter().find(|(_, given)| *given) {
            return Err(ApiError::bad_request(format!(
                "{field} is for a first-come sale's line; a draw sale takes none"
            )));
        }
    }
    // "Now" is the Redis clock, as for the state buyers see.
    let view = catalog::live_view(&state, id).await?;
    let now = view.map_or_else(|| Utc::now().trunc_subsecs(3), |v| v.now());
    let closed = old.closed_at.is_some()
        || view.is_some_and(|v| v.closed)
        || old.closes_at.is_some_and(|c| c <= now);
    // Creation fields: only while scheduled. This check gives the clear answer; the Redis
    // write below makes the same check atomically, for a PATCH that races the opening.
    let scheduled = !closed && now < old.opens_at && view.is_none_or(|v| v.held + v.sold == 0);
    if !given.is_empty() && !scheduled {
        return Err(not_scheduled(&given));
    }
    if closed {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            "the sale is closed and can no longer be changed",
        ));
    }
    if fields.mode.as_deref().is_some_and(|m| m != old.mode) {
        return Err(ApiError::bad_request(format!(
            "mode cannot change: this sale is `{}` (create another sale for the other mode)",
            old.mode
        )));
    }
    let old_groups = door::parse_groups_field(&old.access_groups);
    // The groups order the line: once buyers are let in, changing them would reorder it.
    if update.groups.as_ref().is_some_and(|g| *g != old_groups) && now >= old.opens_at {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            "groups can only change while the sale is scheduled (before opens_at)",
        ));
    }
    check_presale(
        update.presale_only_until.unwrap_or(old.presale_only_until),
        update.groups.as_deref().unwrap_or(&old_groups),
    )?;
    // A group that has access codes stays: its codes would stop letting anyone in.
    if let Some(groups) = &update.groups {
        let coded: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT group_name FROM access_codes WHERE sale_id = ?")
                .bind(id)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| fail::db("reading a sale's access codes", e))?;
        if let Some(dropped) = coded.iter().find(|g| !groups.contains(g)) {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                format!("groups: `{dropped}` has access codes and cannot be removed"),
            ));
        }
    }
    // The creation fields, checked with the stored ones exactly as a new sale's are.
    let (schedule, mut sched_before, mut sched_after) = if given.is_empty() {
        Default::default()
    } else {
        let input = fields.merged(&old).validate()?;
        let product = if input.product_id == old.product_id {
            None
        } else {
            Some(product_for_sale(&mut tx, input.product_id).await?)
        };
        old.schedule_changes(&input, product.as_ref())
    };
    // The product orders quote now, to put back in Redis if the commit fails.
    let old_product = match &schedule.product {
        Some(_) => Some(product_for_sale(&mut tx, old.product_id).await?),
        None => None,
    };

    let close = update.closed == Some(true);
    sqlx::query(
        "UPDATE sales SET admit_per_second = COALESCE(?, admit_per_second), \
         max_active = IF(?, ?, max_active), paused = COALESCE(?, paused), \
         closed_at = IF(?, ?, closed_at), pow_difficulty = COALESCE(?, pow_difficulty), \
         access_groups = COALESCE(?, access_groups), \
         presale_only_until = IF(?, ?, presale_only_until), notice = IF(?, ?, notice), \
         product_id = COALESCE(?, product_id), stock_total = COALESCE(?, stock_total), \
         opens_at = COALESCE(?, opens_at), closes_at = IF(?, ?, closes_at), \
         per_user_limit = COALESCE(?, per_user_limit), \
         hold_seconds = COALESCE(?, hold_seconds), \
         entries_close_at = COALESCE(?, entries_close_at), \
         claim_seconds = COALESCE(?, claim_seconds), updated_at = ? WHERE id = ?",
    )
    .bind(update.admit_per_second)
    .bind(update.max_active.is_some())
    .bind(update.max_active.flatten())
    .bind(update.paused)
    .bind(close)
    .bind(now)
    .bind(update.pow_difficulty)
    .bind(update.groups.as_deref().map(door::groups_field))
    .bind(update.presale_only_until.is_some())
    .bind(update.presale_only_until.flatten().map(|t| t.naive_utc()))
    .bind(update.notice.is_some())
    .bind(update.notice.clone().flatten())
    .bind(schedule.product.as_ref().map(|p| p.0))
    .bind(schedule.stock_total)
    // DATETIME, not TIMESTAMP: see create_sale.
    .bind(schedule.opens_at.map(|t| t.naive_utc()))
    .bind(schedule.closes_at.is_some())
    .bind(schedule.closes_at.flatten().map(|t| t.naive_utc()))
    .bind(schedule.per_user_limit)
    .bind(schedule.hold_seconds)
    .bind(schedule.entries_close_at.map(|t| t.naive_utc()))
    .bind(schedule.claim_seconds)
    .bind(Utc::now().trunc_subsecs(3))
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(|e| fail::db("updating a sale", e))?;
    // Only what changes is recorded; a PATCH that changes nothing leaves no event.
    let (mut before, mut after) = old
        .changes(&update)
        .and_then(|(b, a)| match (b, a) {
            (Value::Object(b), Value::Object(a)) => Some((b, a)),
            _ => None,
        })
        .unwrap_or_default();
    before.append(&mut sched_before);
    after.append(&mut sched_after);
    if !after.is_empty() {
        trail::record(
            &mut tx,
            admin.sub,
            Action::SaleUpdate,
            Subject::Sale(id),
            Some(&Value::Object(before)),
            &Value::Object(after),
        )
        .await?;
    }

    // The groups order the line: a change of them takes the same "still scheduled" step.
    let regroups = update.groups.as_ref().is_some_and(|g| *g != old_groups);
    let mut fixed = given.clone();
    if regroups {
        fixed.push("groups");
    }
    let conditional = !schedule.is_empty() || regroups;
    let written = if !conditional {
        sale::update_settings(&state.redis, id, &update)
            .await
            .map(|armed| if armed { Edit::Applied } else { Edit::NotArmed })
    } else {
        // One step with the "still scheduled" check (lua/sale_edit.lua).
        sale::edit_scheduled(&state.redis, id, &schedule, &update).await
    };
    let armed = match written {
        Ok(Edit::Applied) => true,
        Ok(Edit::NotArmed) => false,
        Ok(Edit::NotScheduled) => {
            if let Err(e) = tx.rollback().await {
                tracing::warn!(error = %e, "rollback failed; the connection drops the transaction");
            }
            tracing::info!("a creation field's change lost the race with the opening");
            return Err(not_scheduled(&fixed));
        }
        Err(error) => {
            if let Err(e) = tx.rollback().await {
                tracing::warn!(error = %e, "rollback failed; the connection drops the transaction");
            }
            return Err(fail::redis("updating a sale's settings", error));
        }
    };
    if !armed {
        tracing::warn!(
            "sale is not armed in Redis; the change is in MySQL and applies when it is rearmed"
        );
    }
    if let Err(error) = tx.commit().await {
        if armed {
            // Put Redis back as MySQL still has it. If the commit did happen after all, the
            // admin's retry (the PATCH is idempotent) writes both again.
            let before = old.undo(&update);
            let undone = if !conditional {
                sale::update_settings(&state.redis, id, &before)
                    .await
                    .map(|_| ())
            } else {
                let back = old.undo_schedule(&schedule, old_product.as_ref());
                sale::edit_scheduled(&state.redis, id, &back, &before)
                    .await
                    .map(|_| ())
            };
            if let Err(e) = undone {
                tracing::error!(
                    error = format!("{e:#}"),
                    "could not undo a sale's settings in Redis after a failed commit"
                );
            }
        }
        return Err(fail::db("committing a sale change", error));
    }
    state.cache.invalidate(Entry::Sale(id)).await;
    invalidate_again_later(&state, vec![Entry::Sale(id)]);
    tracing::info!(
        admit_per_second = ?update.admit_per_second,
        max_active = ?update.max_active,
        paused = ?update.paused,
        closed = close,
        pow_difficulty = ?update.pow_difficulty,
        groups = ?update.groups,
        presale_only_until = ?update.presale_only_until,
        notice_set = update.notice.is_some(),
        schedule = ?schedule,
        "sale settings changed"
    );
    catalog::sale_answer(&state, id)
        .await?
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_shape() {
        assert_eq!(check_currency(None).ok().as_deref(), Some("KRW"));
        assert_eq!(check_currency(Some("USD")).ok().as_deref(), Some("USD"));
        for bad in ["usd", "US", "USDT", "U5D", ""] {
            assert!(check_currency(Some(bad)).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn times_are_rfc3339_in_utc_to_the_millisecond() -> anyhow::Result<()> {
        let t = parse_time("opens_at", "2026-12-01T21:00:00.123456+09:00")
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        assert_eq!(t.to_rfc3339(), "2026-12-01T12:00:00.123+00:00");
        for bad in [
            "2026-12-01",
            "tomorrow",
            "2026-12-01T12:00:00",
            "0001-01-01T00:00:00Z",
        ] {
            assert!(parse_time("opens_at", bad).is_err(), "{bad:?} accepted");
        }
        Ok(())
    }

    #[test]
    fn patch_tells_absent_from_null() -> anyhow::Result<()> {
        let absent: SalePatch = serde_json::from_str(r#"{"paused":true}"#)?;
        assert_eq!(absent.max_active, None);
        let null: SalePatch = serde_json::from_str(r#"{"max_active":null}"#)?;
        assert_eq!(null.max_active, Some(None));
        let set: SalePatch = serde_json::from_str(r#"{"max_active":5}"#)?;
        assert_eq!(set.max_active, Some(Some(5)));
        assert!(serde_json::from_str::<SalePatch>(r#"{"stock_total":5}"#).is_err());
        let stock: SalePatch = serde_json::from_str(r#"{"stock":5,"closes_at":null}"#)?;
        assert_eq!((stock.stock, stock.closes_at), (Some(5), Some(None)));
        Ok(())
    }
}
