//! `dropline-api`: the purchase API: accounts, catalog, sales administration and orders.
//!
//! Handlers only: domain rules shared with other components live in `dropline-core`, atomic
//! stock steps in `lua/`, and payment and confirmation in `dropline-workers`. It needs MySQL,
//! Redis and RabbitMQ.
//!
//! Every route is registered through `utoipa-axum`'s `routes!`, so the `#[utoipa::path]`
//! annotation next to a handler is what both documents and registers it; [`openapi`] is the
//! resulting OpenAPI 3.1 document, served at `GET /openapi.json` and committed as
//! `openapi/api.json` (kept equal by `api/tests/openapi.rs`).

pub mod admin;
pub mod audit;
pub mod cache;
pub mod catalog;
pub mod codes;
pub mod docs;
pub mod extract;
pub mod fail;
pub mod janitor;
pub mod limits;
pub mod orders;
pub mod paging;
pub mod payview;
pub mod pii;
pub mod report;
pub mod sessions;
pub mod state;
pub mod trail;
pub mod users;
pub mod webhooks;

use anyhow::Context;
use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::response::IntoResponse;
use axum::routing::get;
use dropline_core::Config;
use dropline_core::clients::deps::Deps;
use dropline_core::http::{Bound, Dependency, Readiness, Server};
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa_axum::router::OpenApiRouter;

pub use state::{AppState, Secrets};

/// Every api route with its documentation, before the state.
fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(users::routes())
        .merge(sessions::routes())
        .merge(catalog::routes())
        .merge(admin::routes())
        .merge(codes::routes())
        .merge(trail::routes())
        .merge(audit::routes())
        .merge(report::routes())
        .merge(orders::routes())
        .merge(webhooks::routes())
}

/// The api's OpenAPI document, as `GET /openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = documented().split_for_parts();
    docs::finish(&mut doc);
    doc
}

/// Every api route, with its state, and `GET /openapi.json`.
pub fn routes(state: AppState) -> Router {
    let (router, mut doc) = documented().split_for_parts();
    docs::finish(&mut doc);
    // Rendered once: the document is the same for the life of the process.
    let json = dropline_core::http::openapi::render(&doc).unwrap_or_else(|e| {
        tracing::error!(error = %e, "rendering the OpenAPI document");
        String::from("{}")
    });
    let json = axum::body::Bytes::from(json);
    router
        .route(
            "/openapi.json",
            get(move || {
                let json = json.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], json).into_response() }
            }),
        )
        .with_state(state)
}

/// Builds the api server on `api.listen` (port 0: any free port).
pub async fn build(config: &Config, deps: &Deps, secrets: Secrets) -> anyhow::Result<Server> {
    let bound = dropline_core::http::bind(config.api_listen())
        .await
        .context("api listener")?;
    build_on(bound, config, deps, secrets)
}

/// As [`build`], on a listener bound earlier.
pub fn build_on(
    bound: Bound,
    config: &Config,
    deps: &Deps,
    secrets: Secrets,
) -> anyhow::Result<Server> {
    let readiness = Readiness::new(vec![
        Dependency::Mysql(deps.mysql()?.clone()),
        Dependency::Redis(deps.redis()?.clone()),
        Dependency::Rabbitmq(deps.broker()?.clone()),
    ]);
    let state = AppState::new(config, deps, secrets)?;
    let mut routes = routes(state);
    if let Some(cors) = cors(&config.api.cors_allowed_origins)? {
        routes = routes
            .fallback(|| async { axum::http::StatusCode::NOT_FOUND })
            .layer(cors);
    }
    Ok(Server::on("api", bound, routes, readiness, &config.http))
}

/// Browser calls from other origins (the waiting page when it is not behind the same proxy):
/// only the configured origins, only the methods and headers the contract uses; tokens travel
/// in `Authorization`, never in cookies, so no credentials mode.
fn cors(origins: &[String]) -> anyhow::Result<Option<CorsLayer>> {
    if origins.is_empty() {
        return Ok(None);
    }
    let origins = origins
        .iter()
        .map(|origin| {
            let ok = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/');
            anyhow::ensure!(
                ok,
                "api.cors_allowed_origins: `{origin}` is not an origin (scheme://host[:port])"
            );
            HeaderValue::from_str(origin)
                .with_context(|| format!("api.cors_allowed_origins: `{origin}`"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("dropline-pass"),
            ])
            .expose_headers([header::RETRY_AFTER, HeaderName::from_static("x-request-id")])
            .max_age(std::time::Duration::from_secs(600)),
    ))
}
