//! The audit at a click (#24): `GET /api/admin/sales/{id}/audit` → 200 with the report that
//! `dropline sale audit <id> --json` prints (the same code, [`dropline_audit::audit`], with its
//! default options), `ok` false when it finds a breach; 404 for an unknown sale, 503
//! `unavailable` when Redis or MySQL cannot be read.
//!
//! An audit is not cheap (a `SCAN` over the Redis node's keyspace and a pass over the sale's
//! orders in MySQL), and it shares both with the buyers. So that an administrator pressing the
//! button again and again cannot starve them, per api process:
//! - concurrent calls for one sale share one run, and a finished run's answer is served again
//!   for [`FRESH_FOR`] (about one second), so calls one after another run at most about once a
//!   second per sale ([`Fresh`], as the waiting room's draw record and winners pages);
//! - at most [`MAX_RUNNING`] audits of different sales run at once; the others wait their turn.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use dropline_audit::{AuditOptions, UnknownSale};
use dropline_core::coalesce::Fresh;
use dropline_core::http::error::ApiError;
use dropline_core::ids::SaleId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::docs::{Error, IdParam};
use crate::extract::{Admin, PathId};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(audit_sale))
}

/// How long a finished audit's answer is served again.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
/// Audits running at once in one process (different sales).
pub const MAX_RUNNING: usize = 2;
/// The longest one audit may take before the call answers 503 (a dependency that hangs).
const BOUND: Duration = Duration::from_secs(60);
/// Sales whose last audit answer one process remembers.
const REMEMBERED: usize = 64;

/// The audits of one api process: in flight and recently finished ([`Fresh`]), and the permits.
#[derive(Debug)]
pub struct Audits {
    answers: Fresh<SaleId, Bytes, ApiError>,
    permits: Arc<tokio::sync::Semaphore>,
}

impl Default for Audits {
    fn default() -> Self {
        Self {
            answers: Fresh::new(FRESH_FOR, REMEMBERED),
            permits: Arc::new(tokio::sync::Semaphore::new(MAX_RUNNING)),
        }
    }
}

/// Audit a sale.
///
/// Role `admin`. Runs the invariant audit of `dropline sale audit <id> --json` (DESIGN §6,
/// Redis against MySQL) and answers its report: `ok` is `false` when a breach was found, which
/// is still a 200. The answer may be up to about one second old: concurrent and repeated calls
/// share one run.
#[utoipa::path(get, path = "/api/admin/sales/{id}/audit", tag = "admin", security(("accessToken" = [])), params(IdParam), responses(
    (status = 200, description = "The audit's report (`ok` false: breaches found)", body = dropline_audit::Report),
    (status = 403, description = "`forbidden`: not an administrator", body = Error),
    (status = 404, description = "`not_found`: no such sale", body = Error),
))]
#[tracing::instrument(skip_all, fields(admin = %admin.sub, sale_id = %id))]
async fn audit_sale(
    State(state): State<AppState>,
    Admin(admin): Admin,
    PathId(id): PathId<SaleId>,
) -> Result<Response, ApiError> {
    let audits = &state.audits;
    let mysql = state.mysql.clone();
    let redis = state.redis.clone();
    let permits = Arc::clone(&audits.permits);
    let body = audits
        .answers
        .get_or_load(id, move || async move {
            let _permit = permits
                .acquire_owned()
                .await
                .map_err(|e| ApiError::internal(anyhow::Error::new(e).context("audit permits")))?;
            let run = dropline_audit::audit(&mysql, &redis, id, AuditOptions::default());
            let report = match tokio::time::timeout(BOUND, run).await {
                Ok(Ok(report)) => report,
                Ok(Err(error)) if error.downcast_ref::<UnknownSale>().is_some() => {
                    return Err(ApiError::not_found());
                }
                Ok(Err(error)) => {
                    return Err(ApiError::unavailable(error.context("auditing a sale")));
                }
                Err(_) => {
                    return Err(ApiError::unavailable(anyhow::anyhow!(
                        "auditing a sale took longer than {BOUND:?}"
                    )));
                }
            };
            let body = serde_json::to_vec(&report).map_err(|e| {
                ApiError::internal(anyhow::Error::new(e).context("serialising an audit report"))
            })?;
            Ok(Bytes::from(body))
        })
        .await
        .map_err(|aborted| {
            ApiError::unavailable(anyhow::Error::new(aborted).context("auditing a sale"))
        })??;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
