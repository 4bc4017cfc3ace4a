//! Orders: create (reserve), read, list own, cancel, pay (DESIGN §9).
//!
//! - `POST /api/orders`: access token + `Dropline-Pass` (verified with the waiting room's public
//!   key, for this sale and this user) + `Idempotency-Key`; one `lua/reserve.lua` call decides.
//!   MySQL is not on this path: the order reaches it through the sale's outbox
//!   ([`dropline_core::orders::outbox`], written by the workers' recorder).
//! - `GET /api/orders/{id}`, `DELETE /api/orders/{id}` (held only), `POST /api/orders/{id}/pay`:
//!   the order is found through a lookup key (`<prefix>:order:<id>` → sale, written when the
//!   order is made, kept [`LOOKUP_TTL`]), or through MySQL once that key is gone. Another user's
//!   order is 404, the same as one that does not exist.
//! - `GET /api/orders?cursor=&limit=`: the caller's orders from MySQL, newest first (keyset on
//!   the UUIDv7 id), with the live state of held and paying ones read from Redis. An order made
//!   a moment ago may be missing from the list until the recorder has written it (≈100 ms).
//!
//! Idempotency keys are scoped to the user (DESIGN §9): the key is bound to the sale it was first
//! used for (`<prefix>:idem:<user>:<key>`, 24 h), so the same key for another sale is
//! `idempotency_key_reused`; within the sale, `reserve.lua` compares the whole request. A key
//! that made an order is answered from what it made before the pass is looked at, and stays
//! bound for 24 h whatever the order's state; a refused request leaves neither a binding nor an
//! index entry behind.
//!
//! Pay: `begin_payment.lua` (HELD → PAYING, deadline moved to the payment timeout), then
//! `payment.requested` with a publisher confirm. If the broker does not confirm, the caller gets
//! 503 and the order stays PAYING: paying again (harmless, as the contract says) publishes again,
//! and the payment worker and the provider are idempotent on the order. A buyer who never comes
//! back is settled by the sweeper at the payment deadline (asks the provider, fails the order
//! if nothing was charged). There is no PAYING → HELD arrow: DESIGN §5 has none.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use dropline_core::auth::tokens::{PassError, TokenError, verify_pass_batched};
use dropline_core::config::{ProviderKind, STRIPE_CURRENCIES};
use dropline_core::http::Json;
use dropline_core::http::error::{ApiError, ErrorCode};
use dropline_core::ids::{OrderId, SaleId, UserId};
use dropline_core::lua::PipelinedSet;
use dropline_core::messages::{Envelope, PaymentRequested, kinds};
use dropline_core::orders::ledger::{self, OrderRow};
use dropline_core::orders::{
    IDEMPOTENCY_TTL, MAX_IDEMPOTENCY_KEY_LEN, Order, OrderState, Orders, ReserveOutcome,
    ReserveRequest, Transition,
};
use dropline_core::sale::from_ms;
use fred::interfaces::{HashesInterface, KeysInterface};
use fred::types::{Expiration, SetOptions};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::catalog::rfc3339;
use crate::docs::{Error, IdParam, IdempotencyKey, PageParams};
use crate::extract::{Caller, PathId};
use crate::fail;
use crate::paging::{decode_cursor, encode_cursor};
use crate::payview::{OrderDetail, payment_of};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(read, cancel))
        .routes(routes!(pay))
}

/// How long the order → sale lookup key lives; after it, orders are found through MySQL.
pub const LOOKUP_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most units one order may ask for (the sale's per-user limit is usually far lower).
pub const MAX_QUANTITY: u32 = 1000;
/// Longest card token accepted.
pub const MAX_CARD_TOKEN_LEN: usize = 128;
const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    /// The sale the pass admits to.
    #[schema(value_type = uuid::Uuid)]
    pub sale_id: SaleId,
    /// Units, 1 to 1,000 (and within the sale's per-user limit).
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: u32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayOrder {
    /// 1 to 128 visible ASCII characters around any white space. The simulated provider
    /// declines `tok_fail` and answers `tok_slow` after the payment timeout. With the Stripe
    /// provider: a PaymentMethod id, `^pm_[A-Za-z0-9_]{1,125}$` (such as `pm_card_visa`).
    #[schema(pattern = r"^\s*[\x21-\x7E]{1,128}\s*$")]
    pub card_token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// An order as the api shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct OrderView {
    #[schema(value_type = uuid::Uuid)]
    pub id: OrderId,
    #[schema(value_type = uuid::Uuid)]
    pub sale_id: SaleId,
    pub quantity: i64,
    /// Minor units of `currency`: the product's price times `quantity`.
    pub amount: i64,
    pub currency: String,
    #[schema(value_type = OrderStatus)]
    pub status: String,
    /// When the hold ends, while the order is held; null after.
    #[serde(with = "rfc3339::option")]
    pub hold_expires_at: Option<DateTime<Utc>>,
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl From<&Order> for OrderView {
    fn from(o: &Order) -> Self {
        Self {
            id: o.id,
            sale_id: o.sale,
            quantity: o.quantity,
            amount: o.amount,
            currency: o.currency.clone(),
            status: o.state.as_str().to_owned(),
            hold_expires_at: (o.state == OrderState::Held).then(|| from_ms(o.deadline_ms)),
            created_at: from_ms(o.created_ms),
        }
    }
}

impl From<&OrderRow> for OrderView {
    fn from(o: &OrderRow) -> Self {
        Self {
            id: o.id,
            sale_id: o.sale,
            quantity: o.quantity,
            amount: o.amount,
            currency: o.currency.clone(),
            status: o.state.as_str().to_owned(),
            hold_expires_at: (o.state == OrderState::Held).then_some(o.deadline),
            created_at: o.created,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderView>,
    /// Pass as `cursor` for the next page; `null`: the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatusView {
    #[schema(value_type = OrderStatus)]
    pub status: String,
}

/// An order's state (DESIGN §5, lower case).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum OrderStatus {
    Held,
    Paying,
    Paid,
    Expired,
    Cancelled,
    Failed,
}

fn lookup_key(state: &AppState, order: OrderId) -> String {
    state.redis.key(&format!("order:{order}"))
}

fn user_idem_key(state: &AppState, user: UserId, key: &str) -> String {
    state.redis.key(&format!("idem:{user}:{key}"))
}

/// The `Idempotency-Key` header: 1 to 64 visible ASCII characters (the document's
/// [`dropline_core::http::openapi::IDEMPOTENCY_KEY_PATTERN`]); missing or anything else is 400.
/// Public for the fuzz target `idempotency_key` (`fuzz/`).
pub fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let raw = headers
        .get("idempotency-key")
        .ok_or_else(|| ApiError::bad_request("the Idempotency-Key header is required"))?;
    let key = raw
        .to_str()
        .ok()
        .filter(|k| {
            (1..=MAX_IDEMPOTENCY_KEY_LEN).contains(&k.len())
                && k.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
            ))
        })?;
    Ok(key.to_owned())
}

fn pass_header(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get("dropline-pass")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotAdmitted,
                "a pass from the waiting room is required (Dropline-Pass header)",
            )
        })
}

/// Order (reserve stock).
///
/// Needs the access token, the pass the waiting room gave for this sale (`Dropline-Pass`) and
/// an `Idempotency-Key`. Holds the units for the sale's `hold_seconds`; pay within that time.
/// The same key with the same body answers the order it made (200), even after the pass expired.
#[utoipa::path(post, path = "/api/orders", tag = "orders", security(("accessToken" = [], "pass" = [])), params(IdempotencyKey), request_body = CreateOrder, responses(
    (status = 201, description = "The order, held", body = OrderView),
    (status = 200, description = "The order this Idempotency-Key made before", body = OrderView),
    (status = 400, description = "`bad_request`: `Idempotency-Key` missing or malformed, `quantity` out of range", body = Error),
    (status = 403, description = "`not_admitted`: no pass, a pass not valid for this sale and user, or an admission lapsed or used", body = Error),
    (status = 404, description = "`not_found`: no such sale", body = Error),
    (status = 409, description = "`sold_out`, `limit_exceeded`, `sale_not_open`, `idempotency_key_reused`, `idempotency_key_in_use`", body = Error),
    (status = 429, description = "`rate_limited`: too many orders from this buyer", body = Error),
))]
#[tracing::instrument(skip_all, fields(sale = %body.sale_id))]
async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    Json(body): Json<CreateOrder>,
) -> Result<(StatusCode, Json<OrderView>), ApiError> {
    // The order of the checks (#17): the access token (401, the extractor), the key's format and
    // the body (400), a key this user already used (its stored answer, whatever the pass), then
    // the pass (403). A buyer retrying after the pass expired gets the order they have. A buyer
    // looping is limited first (429), before any of it costs Redis a command.
    state.limits.order(caller.sub)?;
    let key = idempotency_key(&headers)?;
    if !(1..=MAX_QUANTITY).contains(&body.quantity) {
        return Err(ApiError::bad_request(format!(
            "quantity must be 1 to {MAX_QUANTITY}"
        )));
    }
    let orders = Orders::new(&state.redis, body.sale_id);
    let sale_text = body.sale_id.to_string();
    let binding = Binding {
        key: user_idem_key(&state, caller.sub, &key),
        sale: sale_text.as_str(),
        slot_key: orders.idempotency_key(caller.sub, &key),
    };
    // One round trip: bind the key to this sale unless it is bound already (answering the
    // earlier binding), and read what this sale holds under the key.
    let (bound, earlier) = binding.claim(&state).await?;
    let fresh = bound.is_none();
    if let Some(previous) = &bound
        && previous != &sale_text
    {
        return Err(reused());
    }
    if let Some((order_id, fingerprint)) = earlier {
        // The key made an order in this sale: the stored answer, or 409 for another body.
        if fingerprint != orders.fingerprint(body.quantity) {
            return Err(reused());
        }
        let order = orders
            .get(order_id)
            .await
            .map_err(|e| fail::redis("reading the order", e))?
            .ok_or_else(|| {
                ApiError::unavailable(anyhow::anyhow!(
                    "order {order_id} of an idempotency key has no hash"
                ))
            })?;
        index_order(&state, order.id, &sale_text).await?;
        return Ok((StatusCode::OK, Json(OrderView::from(&order))));
    }

    let admitted = match pass_header(&headers) {
        Ok(pass) => verify_pass_batched(&state.passes, pass, body.sale_id, caller.sub)
            .await
            .map_err(pass_refused),
        Err(missing) => Err(missing),
    };
    if let Err(refused) = admitted {
        if fresh {
            binding.release(&state).await;
        }
        return Err(refused);
    }

    let request = ReserveRequest {
        order: OrderId::new_v7(),
        user: caller.sub,
        quantity: body.quantity,
        idempotency_key: key,
    };
    // The order → sale index goes out in the same round trip as the reservation, so a GET
    // right after the answer finds the order. When no order was made under it (a refusal, or a
    // concurrent request that made the order first), it is deleted again before the answer.
    let index_key = lookup_key(&state, request.order);
    let index = PipelinedSet {
        key: &index_key,
        value: &sale_text,
        ttl: LOOKUP_TTL,
    };
    let outcome = orders
        .reserve_indexed(&request, &index)
        .await
        .map_err(|e| fail::redis("reserving stock", e))?;
    let (status, order) = match outcome {
        ReserveOutcome::Created(order) => (StatusCode::CREATED, order),
        ReserveOutcome::Existing(order) => (StatusCode::OK, order),
        refusal => {
            forget_index(&state, &index_key).await;
            // An order exists under the key when the script says `idempotency_key_reused`:
            // its binding stays.
            if fresh && !matches!(refusal, ReserveOutcome::IdempotencyKeyReused { .. }) {
                binding.release(&state).await;
            }
            return Err(refusal_error(&refusal));
        }
    };
    if order.id != request.order {
        // A concurrent request with this key made the order first.
        forget_index(&state, &index_key).await;
        index_order(&state, order.id, &sale_text).await?;
    }
    if status == StatusCode::CREATED {
        tracing::info!(order = %order.id, user = %caller.sub, quantity = order.quantity, "order held");
    }
    Ok((status, Json(OrderView::from(&order))))
}

fn reused() -> ApiError {
    ApiError::new(
        ErrorCode::IdempotencyKeyReused,
        "this Idempotency-Key was used for another request",
    )
}

fn pass_refused(e: PassError) -> ApiError {
    let (reason, message) = match e {
        PassError::OtherSale => ("other_sale", "the pass is for another sale"),
        PassError::OtherUser => ("other_user", "the pass is for another user"),
        PassError::Token(TokenError::Expired) => {
            ("expired", "the pass has expired: join the line again")
        }
        PassError::Token(_) => (
            "invalid",
            "the pass is not valid or has expired: join the line again",
        ),
    };
    metrics::counter!("dropline_passes_refused_total", "reason" => reason).increment(1);
    ApiError::new(ErrorCode::NotAdmitted, message)
}

/// A user's idempotency key bound to the sale it was first used for (`<prefix>:idem:<user>:<key>`,
/// 24 h), beside what the sale holds under the key (`idem:<user>:<key>` in the sale's slot, written
/// by `reserve.lua` with the order it made).
struct Binding<'a> {
    key: String,
    sale: &'a str,
    slot_key: String,
}

impl Binding<'_> {
    /// `SET key sale NX GET PX 24h` and `HMGET slot_key order fp`, pipelined: the earlier binding
    /// (`None`: this call made it) and the order this sale holds under the key, if any.
    async fn claim(
        &self,
        state: &AppState,
    ) -> Result<(Option<String>, Option<(OrderId, String)>), ApiError> {
        let pipeline = state.redis.pool().next().pipeline();
        let queued: Result<(), fred::error::Error> = async {
            let () = pipeline
                .set(
                    &self.key,
                    self.sale,
                    Some(Expiration::PX(IDEMPOTENCY_TTL.as_millis() as i64)),
                    Some(SetOptions::NX),
                    true,
                )
                .await?;
            pipeline
                .hmget::<(), _, _>(&self.slot_key, vec!["order", "fp"])
                .await
        }
        .await;
        queued.map_err(|e| fail::redis("binding the idempotency key", e))?;
        let (bound, slot): (Option<String>, (Option<String>, Option<String>)) = pipeline
            .all()
            .await
            .map_err(|e| fail::redis("binding the idempotency key", e))?;
        let earlier = match slot {
            (Some(order), Some(fingerprint)) => OrderId::parse_str(&order)
                .ok()
                .map(|order| (order, fingerprint)),
            _ => None,
        };
        Ok((bound, earlier))
    }

    /// Frees a binding this request made and made no order under, so a refused request leaves
    /// nothing behind. If a concurrent request with the key made an order in the meantime, the
    /// binding is written again: once an order exists for a key, the key stays bound to it.
    /// Best effort: a failure leaves the binding to expire (24 h), which refuses the key for
    /// another sale, never more.
    async fn release(&self, state: &AppState) {
        let pool = state.redis.pool();
        if let Err(error) = pool.del::<i64, _>(&self.key).await {
            tracing::warn!(%error, "could not free an idempotency key binding");
            return;
        }
        match pool.exists::<i64, _>(&self.slot_key).await {
            Ok(0) => {}
            Ok(_) => {
                let restored: Result<(), _> = pool
                    .set(
                        &self.key,
                        self.sale,
                        Some(Expiration::PX(IDEMPOTENCY_TTL.as_millis() as i64)),
                        None,
                        false,
                    )
                    .await;
                if let Err(error) = restored {
                    tracing::warn!(%error, "could not restore an idempotency key binding");
                }
            }
            Err(error) => tracing::warn!(%error, "could not check an idempotency key"),
        }
    }
}

/// Writes the order → sale index (`<prefix>:order:<id>`).
async fn index_order(state: &AppState, order: OrderId, sale: &str) -> Result<(), ApiError> {
    state
        .redis
        .pool()
        .set::<(), _, _>(
            lookup_key(state, order),
            sale,
            Some(Expiration::PX(LOOKUP_TTL.as_millis() as i64)),
            None,
            false,
        )
        .await
        .map_err(|e| fail::redis("indexing the order", e))
}

/// Deletes an index entry written ahead of a reservation that made no order. Best effort: one
/// left behind reads as 404 like any unknown id, and expires.
async fn forget_index(state: &AppState, index_key: &str) {
    if let Err(error) = state.redis.pool().del::<i64, _>(index_key).await {
        tracing::warn!(%error, "could not delete an unused order index entry");
    }
}

fn refusal_error(outcome: &ReserveOutcome) -> ApiError {
    let code = outcome.error_code().unwrap_or(ErrorCode::Internal);
    let message = match outcome {
        ReserveOutcome::IdempotencyKeyReused { .. } => {
            "this Idempotency-Key was used for another request".to_owned()
        }
        ReserveOutcome::SaleNotOpen(state) => format!("the sale is {state}"),
        ReserveOutcome::NotAdmitted => {
            "your admission has lapsed or was used: join the line again".to_owned()
        }
        ReserveOutcome::LimitExceeded { owned, limit } => {
            format!("you hold {owned} of the {limit} units one buyer may have")
        }
        ReserveOutcome::SoldOut { available } => {
            format!("not enough stock left ({available} available)")
        }
        ReserveOutcome::SaleNotFound => "no such sale".to_owned(),
        ReserveOutcome::Created(_) | ReserveOutcome::Existing(_) => String::new(),
    };
    ApiError::new(code, message)
}

/// The caller's order `id` with its sale's handle; 404 for someone else's or a missing one.
async fn resolve(
    state: &AppState,
    caller: UserId,
    id: OrderId,
) -> Result<(Orders, Order), ApiError> {
    let sale: Option<String> = state
        .redis
        .pool()
        .get(lookup_key(state, id))
        .await
        .map_err(|e| fail::redis("finding the order", e))?;
    let sale = match sale.as_deref().map(SaleId::parse_str) {
        Some(Ok(sale)) => Some(sale),
        _ => None,
    };
    let sale = match sale {
        Some(sale) => sale,
        None => {
            let row = ledger::get(&state.mysql, id)
                .await
                .map_err(|e| ApiError::unavailable(e.context("reading the order")))?;
            match row {
                Some(row) if row.user == caller => row.sale,
                _ => return Err(ApiError::not_found()),
            }
        }
    };
    let orders = Orders::new(&state.redis, sale);
    let order = orders
        .get(id)
        .await
        .map_err(|e| fail::redis("reading the order", e))?;
    match order {
        Some(order) if order.user == caller => Ok((orders, order)),
        Some(_) => Err(ApiError::not_found()),
        None => Err(ApiError::not_found()),
    }
}

/// One of the caller's orders.
///
/// Another user's order is 404, the same as one that does not exist.
#[utoipa::path(get, path = "/api/orders/{id}", tag = "orders", security(("accessToken" = [])), params(IdParam), responses(
    (status = 200, description = "The order and its payment", body = OrderDetail),
    (status = 404, description = "`not_found`", body = Error),
))]
#[tracing::instrument(skip_all, fields(order = %id.0))]
async fn read(
    State(state): State<AppState>,
    Caller(caller): Caller,
    id: PathId<OrderId>,
) -> Result<Json<OrderDetail>, ApiError> {
    let (view, status) = read_view(&state, caller.sub, id.0).await?;
    let payment = payment_of(&state, view.id, status).await?;
    Ok(Json(OrderDetail {
        order: view,
        payment,
    }))
}

/// The order as Redis has it, or as MySQL recorded it when Redis lost it.
async fn read_view(
    state: &AppState,
    caller: UserId,
    id: OrderId,
) -> Result<(OrderView, OrderState), ApiError> {
    match resolve(state, caller, id).await {
        Ok((_, order)) => Ok((OrderView::from(&order), order.state)),
        Err(e) if e.status() == StatusCode::NOT_FOUND => {
            // Redis may have lost the order (a rearmed sale): MySQL still has its record.
            let row = ledger::get(&state.mysql, id)
                .await
                .map_err(|e| ApiError::unavailable(e.context("reading the order")))?;
            match row {
                Some(row) if row.user == caller => Ok((OrderView::from(&row), row.state)),
                _ => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// The caller's orders.
///
/// Newest first, a page at a time. An order made a moment ago may be missing for about 100 ms.
#[utoipa::path(get, path = "/api/orders", tag = "orders", security(("accessToken" = [])), params(PageParams), responses(
    (status = 200, description = "A page of orders", body = OrderPage),
    (status = 400, description = "`bad_request`: `limit` or `cursor` is not valid, or an unknown parameter", body = Error),
))]
#[tracing::instrument(skip_all)]
async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<OrderPage>, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let before = decode_cursor(q.cursor.as_deref())?.map(OrderId::from);
    let mut rows = ledger::list_for_user(&state.mysql, caller.sub, before, limit + 1)
        .await
        .map_err(|e| ApiError::unavailable(e.context("listing orders")))?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|r| encode_cursor(r.id))
    } else {
        None
    };
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        // MySQL follows Redis by a moment: a live order shows its state as Redis has it now.
        let live = if row.state.is_live() {
            Orders::new(&state.redis, row.sale)
                .get(row.id)
                .await
                .map_err(|e| fail::redis("reading a live order", e))?
        } else {
            None
        };
        items.push(match live {
            Some(order) => OrderView::from(&order),
            None => OrderView::from(row),
        });
    }
    Ok(Json(OrderPage { items, next_cursor }))
}

/// Cancel a held order.
///
/// Gives its units back. Again on a cancelled order: the same 200 (safe to retry).
#[utoipa::path(delete, path = "/api/orders/{id}", tag = "orders", security(("accessToken" = [])), params(IdParam), responses(
    (status = 200, description = "`{\"status\": \"cancelled\"}`", body = StatusView),
    (status = 404, description = "`not_found`", body = Error),
    (status = 409, description = "`invalid_state`: the order is not held", body = Error),
))]
#[tracing::instrument(skip_all, fields(order = %id.0))]
async fn cancel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    id: PathId<OrderId>,
) -> Result<Json<StatusView>, ApiError> {
    let (orders, order) = resolve(&state, caller.sub, id.0).await?;
    let done = orders
        .release(order.id, dropline_core::orders::Target::Cancelled)
        .await
        .map_err(|e| fail::redis("cancelling the order", e))?;
    match done {
        Transition::Applied(_) => {
            tracing::info!(order = %order.id, "order cancelled");
            Ok(Json(StatusView {
                status: OrderState::Cancelled.as_str().into(),
            }))
        }
        Transition::Unchanged(s) if s.state == OrderState::Cancelled => Ok(Json(StatusView {
            status: OrderState::Cancelled.as_str().into(),
        })),
        Transition::NotFound => Err(ApiError::not_found()),
        other => Err(invalid_state(other, "only a held order can be cancelled")),
    }
}

fn invalid_state(t: Transition, why: &str) -> ApiError {
    let state = t.state().map_or("unknown", OrderState::as_str);
    ApiError::new(
        ErrorCode::InvalidState,
        format!("{why}; this one is {state}"),
    )
}

/// How long one api process may take to publish a `payment.requested` before another may try.
const PUBLISH_CLAIM: Duration = Duration::from_secs(10);

/// `^pm_[A-Za-z0-9_]{1,125}$`: the `card_token` the Stripe provider takes (payments.md).
pub fn is_stripe_payment_method(token: &str) -> bool {
    token.strip_prefix("pm_").is_some_and(|rest| {
        (1..=125).contains(&rest.len())
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// Publishes the order's `payment.requested`, at most once per payment timeout across every api
/// process, always with the card token of the order's first pay. A buyer paying again and again
/// (or a thousand times at once) would otherwise put a copy per call in the payment queue, each
/// held by a worker for as long as the provider takes: with a slow card, enough copies fill
/// every worker's prefetch and other buyers' payments wait past their deadline.
///
/// The claim (`payreq:<order>`) is `pending` while a process publishes and `sent` once the
/// broker confirmed, for the payment timeout; a publish that fails frees it, so the buyer's
/// retry publishes again. Within the timeout the payment is in the worker's hands (or settled
/// by the sweeper at the deadline), so another copy would add nothing.
async fn request_payment(
    state: &AppState,
    orders: &Orders,
    order: &Order,
    token: &str,
    timeout: Duration,
) -> Result<(), ApiError> {
    let claim_key = orders.layout().payment_request(order.id);
    let card_key = orders.layout().payment_card(order.id);
    let pipeline = state.redis.pool().next().pipeline();
    let queued: Result<(), fred::error::Error> = async {
        let () = pipeline
            .set(
                &claim_key,
                "pending",
                Some(Expiration::PX(PUBLISH_CLAIM.as_millis() as i64)),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        pipeline
            .set::<(), _, _>(
                &card_key,
                token,
                Some(Expiration::PX((timeout + PUBLISH_CLAIM).as_millis() as i64)),
                Some(SetOptions::NX),
                true,
            )
            .await
    }
    .await;
    queued.map_err(|e| fail::redis("claiming the payment request", e))?;
    let (claimed, first_card): (Option<String>, Option<String>) = pipeline
        .all()
        .await
        .map_err(|e| fail::redis("claiming the payment request", e))?;
    if claimed.is_none() {
        metrics::counter!("dropline_payment_requests_deduplicated_total").increment(1);
        return Ok(());
    }
    let message = Envelope::new(
        kinds::PAYMENT_REQUESTED,
        PaymentRequested {
            order: order.reference(),
            card_token: first_card.unwrap_or_else(|| token.to_owned()),
        },
    );
    let payload = message.to_json().map_err(ApiError::internal)?;
    if let Err(e) = state
        .broker
        .publish(kinds::PAYMENT_REQUESTED, &message.id.to_string(), &payload)
        .await
    {
        let _: Result<i64, _> = state.redis.pool().del(&claim_key).await;
        return Err(fail::broker("requesting the payment", e));
    }
    // The request is out: a failure here only shortens the claim to its pending 10 s.
    let marked: Result<(), _> = state
        .redis
        .pool()
        .set(
            &claim_key,
            "sent",
            Some(Expiration::PX(timeout.as_millis() as i64)),
            None,
            false,
        )
        .await;
    if let Err(error) = marked {
        tracing::warn!(%error, order = %order.id, "could not mark the payment requested");
    }
    Ok(())
}

/// Pay a held order.
///
/// Starts the payment: the order goes to `paying`, then `paid` or `failed`; poll the order.
/// Calling again is harmless.
#[utoipa::path(post, path = "/api/orders/{id}/pay", tag = "orders", security(("accessToken" = [])), params(IdParam), request_body = PayOrder, responses(
    (status = 202, description = "`{\"status\": \"paying\"}`: the payment is under way", body = StatusView),
    (status = 200, description = "`{\"status\": \"paid\"}`: paid already, nothing done", body = StatusView),
    (status = 400, description = "`bad_request`: `card_token` malformed (with the Stripe provider: not a `pm_...` id)", body = Error),
    (status = 404, description = "`not_found`", body = Error),
    (status = 409, description = "`invalid_state`: the order is neither held nor paying, or (Stripe provider) its currency is one Stripe is not used for", body = Error),
    (status = 429, description = "`rate_limited`: too many payments from this buyer", body = Error),
))]
#[tracing::instrument(skip_all, fields(order = %id.0))]
async fn pay(
    State(state): State<AppState>,
    Caller(caller): Caller,
    id: PathId<OrderId>,
    Json(body): Json<PayOrder>,
) -> Result<(StatusCode, Json<StatusView>), ApiError> {
    state.limits.pay(caller.sub)?;
    let token = body.card_token.trim();
    if token.is_empty()
        || token.len() > MAX_CARD_TOKEN_LEN
        || !token.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::bad_request(format!(
            "card_token must be 1 to {MAX_CARD_TOKEN_LEN} visible ASCII characters"
        )));
    }
    let stripe = state.config.payment.provider == ProviderKind::Stripe;
    if stripe && !is_stripe_payment_method(token) {
        return Err(ApiError::bad_request(
            "card_token must be a Stripe PaymentMethod id (pm_ and 1 to 125 letters, digits or `_`, \
             such as pm_card_visa)",
        ));
    }
    let (orders, order) = resolve(&state, caller.sub, id.0).await?;
    if stripe && !STRIPE_CURRENCIES.contains(&order.currency.as_str()) {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!(
                "the order is in {}, which the Stripe provider does not charge (only {})",
                order.currency,
                STRIPE_CURRENCIES.join(", ")
            ),
        ));
    }
    let timeout = Duration::from_secs(state.config.payment.timeout_seconds);
    let moved = orders
        .begin_payment(order.id, timeout)
        .await
        .map_err(|e| fail::redis("starting the payment", e))?;
    match moved {
        Transition::Applied(_) => {}
        Transition::Unchanged(s) if s.state == OrderState::Paying => {}
        Transition::Unchanged(s) if s.state == OrderState::Paid => {
            return Ok((
                StatusCode::OK,
                Json(StatusView {
                    status: OrderState::Paid.as_str().into(),
                }),
            ));
        }
        Transition::DeadlinePassed(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                "the hold has expired; the stock went back",
            ));
        }
        Transition::NotFound => return Err(ApiError::not_found()),
        other => return Err(invalid_state(other, "only a held order can be paid")),
    }
    request_payment(&state, &orders, &order, token, timeout).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(StatusView {
            status: OrderState::Paying.as_str().into(),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_payment_methods_are_pm_ids() {
        assert!(is_stripe_payment_method("pm_card_visa"));
        assert!(is_stripe_payment_method(&format!("pm_{}", "a".repeat(125))));
        assert!(!is_stripe_payment_method(&format!(
            "pm_{}",
            "a".repeat(126)
        )));
        assert!(!is_stripe_payment_method("pm_"));
        assert!(!is_stripe_payment_method("tok_visa"));
        assert!(!is_stripe_payment_method("pm_card-visa"));
        assert!(!is_stripe_payment_method("pm_카드"));
    }
}
