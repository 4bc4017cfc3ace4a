//! The audit trail (#24): who changed what, when, from what to what.
//!
//! Every administrator's change through the api writes one `admin_events` row
//! (`migrations/20261203000005_admin_events.sql`) with [`record`], on the change's own MySQL
//! transaction: the row commits with the change or not at all, so a change never lacks its row
//! and a refused or failed one leaves none. Where the change also writes Redis, the order stays
//! the handler's (MySQL in the transaction, then Redis, then the commit); the row is part of
//! the MySQL side.
//!
//! | action | subject | before | after |
//! | --- | --- | --- | --- |
//! | `product.create` | product | `null` | the product's fields |
//! | `product.update` | product | the fields that changed, as they were | the same fields, as they are |
//! | `sale.create` | sale | `null` | the sale's fields as stored |
//! | `sale.update` | sale | the fields that changed, as they were | the same fields, as they are |
//! | `codes.create` | sale | `null` | `{group, uses, count, source}` |
//!
//! A batch of access codes is recorded by its **count** only: neither the codes nor their
//! hashes (a short code's hash can be searched back) are in the trail.
//!
//! - `GET /api/admin/sales/{id}/events` → 200 `{"items":[…],"next_cursor"}`: the sale's own
//!   events oldest first, paged by the shared keyset pager ([`crate::paging`]), 100 per page by
//!   default, at most 500. Product events are kept (with their product id) for a products
//!   endpoint to come.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::{DateTime, SubsecRound, Utc};
use dropline_core::http::Json;
use dropline_core::http::error::ApiError;
use dropline_core::ids::{ProductId, SaleId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::docs::{Error, IdParam};
use crate::extract::{Admin, PathId};
use crate::fail;
use crate::paging::{self, Keyset, Page, PageRequest};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_events))
}

/// Events per page when `limit` is not given, and the most one page holds.
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 500;

/// What an administrator did (the row's `action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ProductCreate,
    ProductUpdate,
    SaleCreate,
    SaleUpdate,
    CodesCreate,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProductCreate => "product.create",
            Self::ProductUpdate => "product.update",
            Self::SaleCreate => "sale.create",
            Self::SaleUpdate => "sale.update",
            Self::CodesCreate => "codes.create",
        }
    }
}

/// What a change is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Sale(SaleId),
    Product(ProductId),
}

/// Writes one trail row on `tx`, the transaction of the change itself (see the module docs).
pub async fn record(
    tx: &mut sqlx::MySqlConnection,
    admin: UserId,
    action: Action,
    subject: Subject,
    before: Option<&Value>,
    after: &Value,
) -> Result<(), ApiError> {
    let (sale, product) = match subject {
        Subject::Sale(id) => (Some(id), None),
        Subject::Product(id) => (None, Some(id)),
    };
    // Made inside the transaction, after the handler's locks: within one process id order is
    // change order (UUIDv7 is monotonic per process); across replicas, time order to the ms.
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO admin_events (id, at, admin_id, action, sale_id, product_id, before_json, \
         after_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(Utc::now().trunc_subsecs(3))
    .bind(admin)
    .bind(action.as_str())
    .bind(sale)
    .bind(product)
    .bind(before.map(Value::to_string))
    .bind(after.to_string())
    .execute(&mut *tx)
    .await
    .map_err(|e| fail::db("recording an admin event", e))?;
    tracing::debug!(event_id = %id, action = action.as_str(), "admin event recorded");
    Ok(())
}

/// One change of the trail.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AdminEvent {
    /// UUIDv7; events run in id order.
    pub id: Uuid,
    /// When the change was made (server time, to the millisecond).
    pub at: DateTime<Utc>,
    /// The administrator who made it.
    #[schema(value_type = Uuid)]
    pub admin_id: UserId,
    /// `sale.create`, `sale.update` or `codes.create` (and `product.create` or `product.update`
    /// for a product).
    pub action: String,
    /// The changed fields as they were; `null` for a create.
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    /// The changed fields as they are after it (a batch of access codes: its group, uses,
    /// count and source, never the codes).
    #[schema(value_type = Object)]
    pub after: Value,
}

/// A page of a sale's trail, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub items: Vec<AdminEvent>,
    /// Pass as `cursor` for the next page; `null`: the last page.
    pub next_cursor: Option<String>,
}

/// `limit` and `cursor` of the trail.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventPageParams {
    /// Events per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; absent: the first page (the oldest event).
    #[param(pattern = r"^A[Q-Za-f][A-Za-z0-9_-]{20}[AEIMQUYcgkosw048]$")]
    pub cursor: Option<String>,
}

/// The query as text, so that every mistake gets the contract's 400 naming the parameter.
#[derive(Debug, Default, Deserialize)]
struct EventQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Debug, sqlx::FromRow)]
struct EventRow {
    id: Uuid,
    at: DateTime<Utc>,
    admin_id: UserId,
    action: String,
    before_json: Option<String>,
    after_json: Option<String>,
}

impl EventRow {
    fn into_event(self) -> Result<AdminEvent, ApiError> {
        let parse = |raw: &str| {
            serde_json::from_str::<Value>(raw).map_err(|e| {
                ApiError::internal(
                    anyhow::Error::new(e).context(format!("admin event {}: stored JSON", self.id)),
                )
            })
        };
        let before = self.before_json.as_deref().map(parse).transpose()?;
        let after = self
            .after_json
            .as_deref()
            .map(parse)
            .transpose()?
            .unwrap_or(Value::Null);
        Ok(AdminEvent {
            id: self.id,
            at: self.at,
            admin_id: self.admin_id,
            action: self.action,
            before,
            after,
        })
    }
}

/// A sale's events, through the shared pager (index `ix_admin_events_sale`).
const SALE_EVENTS: Keyset<'static> = Keyset {
    select: "SELECT id, at, admin_id, action, before_json, after_json FROM admin_events",
    filter: Some("sale_id = ?"),
    id: "id",
};

/// A sale's audit trail.
///
/// Role `admin`. Every change made to the sale through the api (its creation, each `PATCH`,
/// each batch of access codes), oldest first: who (`admin_id`), when (`at`), what (`action`)
/// and the changed fields before and after. Access codes are recorded by their count only.
#[utoipa::path(get, path = "/api/admin/sales/{id}/events", tag = "admin", security(("accessToken" = [])), params(IdParam, EventPageParams), responses(
    (status = 200, description = "A page of the sale's events, oldest first", body = EventPage),
    (status = 400, description = "`bad_request`: `limit` or `cursor` is not valid", body = Error),
    (status = 403, description = "`forbidden`: not an administrator", body = Error),
    (status = 404, description = "`not_found`: no such sale", body = Error),
))]
#[tracing::instrument(skip_all, fields(admin = %admin.sub, sale_id = %id))]
async fn list_events(
    State(state): State<AppState>,
    Admin(admin): Admin,
    PathId(id): PathId<SaleId>,
    q: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Json<Page<AdminEvent>>, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))?;
    let PageRequest { limit, after } = PageRequest::parse_bounded(
        q.limit.as_deref(),
        q.cursor.as_deref(),
        DEFAULT_LIMIT,
        MAX_LIMIT,
    )?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM sales WHERE id = ?")
        .bind(id)
        .fetch_optional(&state.mysql)
        .await
        .map_err(|e| fail::db("reading a sale", e))?;
    if exists.is_none() {
        return Err(ApiError::not_found());
    }
    let rows: Vec<EventRow> = SALE_EVENTS
        .fetch_oldest_first(&state.mysql, id, after, limit)
        .await
        .map_err(|e| fail::db("reading a sale's events", e))?;
    let rows = rows
        .into_iter()
        .map(EventRow::into_event)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(paging::page(rows, limit, |e: &AdminEvent| e.id)))
}
