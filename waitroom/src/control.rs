//! The control room: a page for administrators that shows one sale live, as charts over time.
//!
//! - `GET /w/{sale_id}/control`: the page (HTML; plain HTML, CSS and JavaScript compiled into
//!   the binary from `assets/control.*`, no framework, nothing from a CDN, the charts drawn on
//!   `<canvas>` by the page's own code). Anyone may load the page; it shows nothing until an
//!   administrator signs in (through the api's `POST /api/auth/login`, like the waiting page)
//!   or pastes an admin access token. The tokens stay in the tab's `sessionStorage`.
//! - `GET /w/{sale_id}/control/data`: the figures as JSON, for an access token with the `admin`
//!   role only (no or a bad token: 401 `unauthorized`; a buyer's: 403 `forbidden`; a sale id
//!   that is not a UUID, or a sale not armed in Redis: 404 `not_found`). One Redis round trip
//!   (`lua/wr_control.lua`); concurrent requests for one sale share it. The page polls it every
//!   second and keeps the last ten minutes in the browser.
//! - `GET /w/assets/control.js`, `GET /w/assets/control.css`: the assets, fingerprinted and
//!   cached like the waiting page's.
//! - `GET /w/{sale_id}/report` (and `GET /w/assets/report.js`): the post-sale report's page
//!   (issue #24), signed in the same way; it reads the api's `GET /api/admin/sales/{id}/report`
//!   and draws it as inline SVG (arrivals, admissions and orders per second, queue length with
//!   the sell-out marked, time in line, the funnel, where buyers left, refusals).
//!
//! The data answer:
//!
//! ```json
//! {"sale_id": "…", "state": "open", "now": "2026-…Z", "now_ms": 1790000000000,
//!  "opens_at": "…", "closes_at": null,
//!  "queue": {"length": 120, "skipped": 4, "admitted_total": 80, "abandoned_total": 3,
//!            "active": 20, "max_active": 50, "admit_per_second": 10, "admit_rate": 9.8},
//!  "stock": {"total": 100, "available": 70, "held": 12, "sold": 18},
//!  "orders": {"live": 11, "held": 8, "paying": 3}}
//! ```
//!
//! `queue.length` is the waiting line; `queue.skipped` the places of buyers silent for longer
//! than `abandon_after`, passed over by the admitter and kept for the return grace (door.md §6);
//! `queue.abandoned_total` the places lost past that grace. `queue.max_active` is null when there is no limit; `queue.admit_rate` (the admitter's
//! measured, smoothed rate) is null before it measured anything; `orders.held` / `.paying`
//! (live orders in each state) are null when more than [`MAX_ORDERS_SPLIT`] orders are live.
//! Paid orders are counted in units (`stock.sold`): Redis keeps no count of ended orders.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, TimeZone, Utc};
use dropline_core::auth::keys::KeyRing;
use dropline_core::auth::tokens::Role;
use dropline_core::clients::redis::Redis;
use dropline_core::coalesce::Coalesce;
use dropline_core::config::WaitroomConfig;
use dropline_core::http::error::{ApiError, ErrorCode};
use dropline_core::http::extract::{self, PathId};
use dropline_core::ids::SaleId;
use fred::types::Value;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::docs::{Error, SaleIdParam, SaleState as SaleStateDoc};
use crate::page::Asset;
use crate::page::admin::AdminShell;
use crate::queue::Reply;
use crate::scripts::WR_CONTROL;
use dropline_core::sale::SaleState;
use dropline_core::sale::keys::SaleKeys;

const TEMPLATE: &str = include_str!("../assets/control.html");
const SCRIPT: &str = include_str!("../assets/control.js");
const STYLESHEET: &str = include_str!("../assets/control.css");
const REPORT_TEMPLATE: &str = include_str!("../assets/report.html");
const REPORT_SCRIPT: &str = include_str!("../assets/report.js");

pub const SCRIPT_PATH: &str = "/w/assets/control.js";
pub const STYLESHEET_PATH: &str = "/w/assets/control.css";
pub const REPORT_SCRIPT_PATH: &str = "/w/assets/report.js";

/// Most live orders whose state the data call reads one by one (see `lua/wr_control.lua`).
pub const MAX_ORDERS_SPLIT: u32 = 1_000;

/// What the control room's handlers share.
#[derive(Debug)]
pub struct ControlRoom {
    redis: Redis,
    access: Arc<KeyRing>,
    /// The api's address and the shared `admin.js` (sign-in), with the report page.
    shell: AdminShell,
    script_src: String,
    stylesheet_href: String,
    /// The post-sale report page's script (the page shares the stylesheet).
    report_script_src: String,
    /// Concurrent data requests for one sale share one Redis call.
    reads: Coalesce<SaleId, Result<Option<Figures>, ApiError>>,
}

/// The control room's documented route (the data), before the state.
pub fn documented() -> OpenApiRouter<Arc<ControlRoom>> {
    OpenApiRouter::new().routes(routes!(control_data))
}

/// The control room's routes: [`documented`], and the page and its assets (HTML, CSS and
/// JavaScript for browsers, not in the OpenAPI document).
pub fn routes(
    config: &WaitroomConfig,
    redis: Redis,
    access: Arc<KeyRing>,
) -> anyhow::Result<axum::Router> {
    let javascript = "text/javascript; charset=utf-8";
    let script = Arc::new(Asset::new(SCRIPT_PATH, SCRIPT, javascript)?);
    let stylesheet = Arc::new(Asset::new(
        STYLESHEET_PATH,
        STYLESHEET,
        "text/css; charset=utf-8",
    )?);
    let report_script = Arc::new(Asset::new(REPORT_SCRIPT_PATH, REPORT_SCRIPT, javascript)?);
    let shell = AdminShell::new(config)?;
    let room = Arc::new(ControlRoom {
        redis,
        access,
        shell,
        script_src: script.versioned_url.clone(),
        stylesheet_href: stylesheet.versioned_url.clone(),
        report_script_src: report_script.versioned_url.clone(),
        reads: Coalesce::new(),
    });
    let (data, _) = documented().split_for_parts();
    Ok(data
        .route("/w/{sale_id}/control", get(control_page))
        .route(SCRIPT_PATH, script.route())
        .route(STYLESHEET_PATH, stylesheet.route())
        .route("/w/{sale_id}/report", get(report_page))
        .route(REPORT_SCRIPT_PATH, report_script.route())
        .with_state(room))
}

// ---------------------------------------------------------------------------------------------
// Figures

/// One sale's figures at one instant of the Redis clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Figures {
    pub state: SaleState,
    /// Buyers in the waiting line (skipped places do not count).
    pub queue_length: u64,
    /// Skipped places that may still come back (door.md §6).
    pub skipped: u64,
    pub admitted_total: u64,
    pub abandoned_total: u64,
    pub active: u64,
    /// The admitter's measured rate × 1000; `None` before it measured anything.
    pub measured_rate_milli: Option<u64>,
    pub admit_per_second: u64,
    /// 0 = no limit.
    pub max_active: u64,
    pub stock_total: i64,
    pub available: i64,
    pub held: i64,
    pub sold: i64,
    pub live_orders: u64,
    /// Live orders HELD / PAYING; `None` when too many are live to read each one.
    pub orders_held: Option<u64>,
    pub orders_paying: Option<u64>,
    pub now_ms: u64,
    pub opens_at_ms: u64,
    /// 0 = none.
    pub closes_at_ms: u64,
}

/// Reads a sale's figures in one round trip; `None` when the sale is not armed.
pub async fn figures(redis: &Redis, sale: SaleId) -> anyhow::Result<Option<Figures>> {
    let layout = SaleKeys::new(redis, sale);
    let keys = vec![
        layout.cfg(),
        layout.avail(),
        layout.held(),
        layout.sold(),
        layout.queue(),
        layout.admitted(),
        layout.room(),
        layout.holds(),
        layout.skipped(),
    ];
    let args = vec![
        Value::from(layout.order_prefix()),
        Value::from(MAX_ORDERS_SPLIT),
    ];
    let reply: Value = WR_CONTROL.run(redis, keys, args).await?;
    let r = Reply::new(reply, "wr_control", 19)?;
    let state = r.text(0)?;
    if state == "not_found" {
        return Ok(None);
    }
    Ok(Some(Figures {
        state: state.parse::<SaleState>()?,
        queue_length: r.uint(1)?,
        admitted_total: r.uint(2)?,
        abandoned_total: r.uint(3)?,
        active: r.uint(4)?,
        measured_rate_milli: u64::try_from(r.int(5)?).ok(),
        admit_per_second: r.uint(6)?,
        max_active: r.uint(7)?,
        stock_total: r.int(8)?,
        available: r.int(9)?,
        held: r.int(10)?,
        sold: r.int(11)?,
        live_orders: r.uint(12)?,
        orders_held: u64::try_from(r.int(13)?).ok(),
        orders_paying: u64::try_from(r.int(14)?).ok(),
        now_ms: r.uint(15)?,
        opens_at_ms: r.uint(16)?,
        closes_at_ms: r.uint(17)?,
        skipped: r.uint(18)?,
    }))
}

/// One sale's figures at one instant of the Redis clock (module docs of `control.rs`).
#[derive(Debug, Serialize, ToSchema)]
struct DataAnswer {
    #[schema(value_type = uuid::Uuid)]
    sale_id: SaleId,
    #[schema(value_type = SaleStateDoc)]
    state: &'static str,
    #[schema(format = DateTime)]
    now: String,
    /// `now` in milliseconds since the epoch.
    now_ms: u64,
    #[schema(format = DateTime)]
    opens_at: String,
    /// `null`: no closing time.
    #[schema(format = DateTime)]
    closes_at: Option<String>,
    queue: QueueAnswer,
    stock: StockAnswer,
    orders: OrdersAnswer,
}

/// The line: waiting, skipped (silent, kept for the return grace), admitted, abandoned, active.
#[derive(Debug, Serialize, ToSchema)]
struct QueueAnswer {
    length: u64,
    skipped: u64,
    admitted_total: u64,
    abandoned_total: u64,
    active: u64,
    /// `null`: no limit.
    max_active: Option<u64>,
    admit_per_second: u64,
    /// The admitter's measured, smoothed rate; `null` before it measured anything.
    admit_rate: Option<f64>,
}

/// Units: the sale's total, available, held by live orders, sold.
#[derive(Debug, Serialize, ToSchema)]
struct StockAnswer {
    total: i64,
    available: i64,
    held: i64,
    sold: i64,
}

/// Live orders, and how many are held and paying (`null` past 1,000 live orders).
#[derive(Debug, Serialize, ToSchema)]
struct OrdersAnswer {
    live: u64,
    held: Option<u64>,
    paying: Option<u64>,
}

impl DataAnswer {
    fn new(sale_id: SaleId, f: &Figures) -> Self {
        Self {
            sale_id,
            state: f.state.as_str(),
            now: rfc3339(f.now_ms),
            now_ms: f.now_ms,
            opens_at: rfc3339(f.opens_at_ms),
            closes_at: (f.closes_at_ms > 0).then(|| rfc3339(f.closes_at_ms)),
            queue: QueueAnswer {
                length: f.queue_length,
                skipped: f.skipped,
                admitted_total: f.admitted_total,
                abandoned_total: f.abandoned_total,
                active: f.active,
                max_active: (f.max_active > 0).then_some(f.max_active),
                admit_per_second: f.admit_per_second,
                admit_rate: f.measured_rate_milli.map(|milli| milli as f64 / 1000.0),
            },
            stock: StockAnswer {
                total: f.stock_total,
                available: f.available.max(0),
                held: f.held,
                sold: f.sold,
            },
            orders: OrdersAnswer {
                live: f.live_orders,
                held: f.orders_held,
                paying: f.orders_paying,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// A caller whose access token carries the `admin` role: 401 `unauthorized` without a valid
/// access token, 403 `forbidden` with a buyer's (as the api's admin routes answer).
struct AdminCaller;

impl FromRequestParts<Arc<ControlRoom>> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        room: &Arc<ControlRoom>,
    ) -> Result<Self, ApiError> {
        let claims = extract::access_claims(&room.access, extract::bearer(parts)).await?;
        if claims.role == Role::Admin {
            Ok(Self)
        } else {
            metrics::counter!("dropline_waitroom_control_refused_total").increment(1);
            Err(ApiError::new(
                ErrorCode::Forbidden,
                "the control room needs an administrator",
            ))
        }
    }
}

/// A sale's figures for the control room.
///
/// The line, the stock and the live orders at one instant, in one Redis round trip. For an
/// administrator's access token only.
#[utoipa::path(get, path = "/w/{sale_id}/control/data", tag = "control", security(("accessToken" = [])), params(SaleIdParam), responses(
    (status = 200, description = "The figures", body = DataAnswer),
    (status = 403, description = "`forbidden`: the access token is not an administrator's", body = Error),
    (status = 404, description = "`not_found`: no such sale (or not on sale yet)", body = Error),
))]
#[tracing::instrument(skip_all, fields(sale_id = %sale))]
async fn control_data(
    State(room): State<Arc<ControlRoom>>,
    PathId(sale): PathId<SaleId>,
    _admin: AdminCaller,
) -> Result<Response, ApiError> {
    let redis = room.redis.clone();
    let figures = room
        .reads
        .run(sale, move || async move {
            figures(&redis, sale)
                .await
                .map_err(|error| ApiError::unavailable(error.context("reading the sale's figures")))
        })
        .await
        .unwrap_or_else(|aborted| Err(ApiError::internal(aborted)))?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                "no such sale (or it is not on sale yet)",
            )
        })?;
    let mut response = Json(DataAnswer::new(sale, &figures)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The page's settings for `control.js`.
#[derive(Debug, Serialize)]
struct PageConfig<'a> {
    sale_id: &'a str,
    api_base_url: &'a str,
    data_url: String,
}

async fn control_page(
    State(room): State<Arc<ControlRoom>>,
    PathId(sale): PathId<SaleId>,
) -> Result<Response, ApiError> {
    let sale_id = sale.as_uuid().hyphenated().to_string();
    let config = PageConfig {
        sale_id: &sale_id,
        api_base_url: room.shell.api_base_url(),
        data_url: format!("/w/{sale_id}/control/data"),
    };
    room.shell.render(
        TEMPLATE,
        &config,
        &[
            ("{{sale_id}}", &sale_id),
            ("{{stylesheet_href}}", &room.stylesheet_href),
            ("{{script_src}}", &room.script_src),
        ],
    )
}

/// What the report page's script is told.
#[derive(Serialize)]
struct ReportPageConfig<'a> {
    sale_id: &'a str,
    api_base_url: &'a str,
    report_path: String,
}

/// `GET /w/{sale_id}/report`: the post-sale report's page (issue #24). Like the control room,
/// anyone may load it and it shows nothing until an administrator signs in; its figures come
/// from the api (`GET /api/admin/sales/{id}/report`), drawn as inline SVG by
/// `assets/report.js`. The CSP lets it reach the api's origin and nothing else.
async fn report_page(
    State(room): State<Arc<ControlRoom>>,
    PathId(sale): PathId<SaleId>,
) -> Result<Response, ApiError> {
    let sale_id = sale.as_uuid().hyphenated().to_string();
    let config = ReportPageConfig {
        sale_id: &sale_id,
        api_base_url: room.shell.api_base_url(),
        report_path: format!("/api/admin/sales/{sale_id}/report"),
    };
    room.shell.render(
        REPORT_TEMPLATE,
        &config,
        &[
            ("{{sale_id}}", &sale_id),
            ("{{stylesheet_href}}", &room.stylesheet_href),
            ("{{script_src}}", &room.report_script_src),
        ],
    )
}

fn rfc3339(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
