//! `dropline-api`: the purchase API: accounts, catalog, sales administration and orders.
//!
//! Handlers only: domain rules shared with other components live in `dropline-core`, atomic
//! stock steps in `lua/`, and payment and confirmation in `dropline-workers`. It needs MySQL,
//! Redis and RabbitMQ.

pub mod admin;
pub mod cache;
pub mod catalog;
pub mod codes;
pub mod extract;
pub mod fail;
pub mod janitor;
pub mod limits;
pub mod orders;
pub mod paging;
pub mod pii;
pub mod sessions;
pub mod state;
pub mod users;

use anyhow::Context;
use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use dropline_core::Config;
use dropline_core::clients::deps::Deps;
use dropline_core::http::{Bound, Dependency, Readiness, Server};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use state::{AppState, Secrets};

/// Every api route, with its state.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .merge(users::routes())
        .merge(sessions::routes())
        .merge(catalog::routes())
        .merge(admin::routes())
        .merge(codes::routes())
        .merge(orders::routes())
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
