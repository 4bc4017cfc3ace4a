//! The post-sale report (#24): `GET /api/admin/sales/{id}/report` → 200 with what
//! `dropline sale report <id> --json` prints ([`dropline_audit::sale_report::build`], read from
//! MySQL, the durable record); 404 for an unknown sale, 503 `unavailable` when MySQL cannot be
//! read.
//!
//! A report is a handful of indexed queries over the sale's report rows and orders; so that an
//! administrator's page refreshing it (or many open tabs) costs MySQL at most about one build a
//! second per sale and api process, concurrent calls share one build and a finished one is
//! served again for [`FRESH_FOR`] ([`Fresh`]).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use dropline_core::coalesce::Fresh;
use dropline_core::http::error::ApiError;
use dropline_core::ids::SaleId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::docs::{Error, IdParam};
use crate::extract::{Admin, PathId};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(sale_report))
}

/// How long a built report is served again.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
/// The longest one build may take before the call answers 503.
const BOUND: Duration = Duration::from_secs(10);

/// Sales whose last report one process remembers.
const REMEMBERED: usize = 64;

/// The reports of one api process: in flight and recently built ([`Fresh`]).
#[derive(Debug)]
pub struct Reports {
    answers: Fresh<SaleId, Bytes, ApiError>,
}

impl Default for Reports {
    fn default() -> Self {
        Self {
            answers: Fresh::new(FRESH_FOR, REMEMBERED),
        }
    }
}

/// A sale's post-sale report.
///
/// Role `admin`. Arrivals, admissions, orders and queue length per second since `opens_at`,
/// the sell-out time, time in line (p50/p90/p99), the accuracy of the first ETA each buyer was
/// shown, the funnel joined → admitted → ordered → paid with where buyers left, and joins
/// refused by reason. Read from MySQL, where the expiry worker copies the live figures every
/// few seconds; the answer may be up to about six seconds behind the sale.
#[utoipa::path(get, path = "/api/admin/sales/{id}/report", tag = "admin", security(("accessToken" = [])), params(IdParam), responses(
    (status = 200, description = "The sale's report", body = dropline_audit::sale_report::SaleReport),
    (status = 403, description = "`forbidden`: not an administrator", body = Error),
    (status = 404, description = "`not_found`: no such sale", body = Error),
    (status = 503, description = "`unavailable`: MySQL cannot be read", body = Error),
))]
#[tracing::instrument(skip_all, fields(admin = %admin.sub, sale_id = %id))]
async fn sale_report(
    State(state): State<AppState>,
    Admin(admin): Admin,
    PathId(id): PathId<SaleId>,
) -> Result<Response, ApiError> {
    let mysql = state.mysql.clone();
    let body = state
        .reports
        .answers
        .get_or_load(id, move || async move {
            let built = dropline_audit::sale_report::build(&mysql, id);
            let report = match tokio::time::timeout(BOUND, built).await {
                Ok(Ok(Some(report))) => report,
                Ok(Ok(None)) => return Err(ApiError::not_found()),
                Ok(Err(error)) => {
                    return Err(ApiError::unavailable(
                        error.context("building a sale report"),
                    ));
                }
                Err(_) => {
                    return Err(ApiError::unavailable(anyhow::anyhow!(
                        "building a sale report took longer than {BOUND:?}"
                    )));
                }
            };
            let body = serde_json::to_vec(&report).map_err(|e| {
                ApiError::internal(anyhow::Error::new(e).context("serialising a sale report"))
            })?;
            Ok(Bytes::from(body))
        })
        .await
        .map_err(|aborted| {
            ApiError::unavailable(anyhow::Error::new(aborted).context("building a sale report"))
        })??;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
