//! `dropline-waitroom`: the edge that turns a stampede into an orderly line.
//!
//! Buyers join a per-sale Redis queue, poll for their place, and leave with a short-lived
//! EdDSA pass once the admitter lets them in. This crate owns the HTTP edge ([`edge`]), the
//! tickets waiting buyers poll with ([`ticket`]), the proof of work a sale may ask of a join
//! ([`pow`]), the queue in Redis ([`queue`], Lua in
//! `lua/wr_*.lua`), positions in a line spread over shards ([`line`], issue #22 §2, not wired
//! yet), the admitter, the waiting page ([`page`]), the administrators' control room
//! ([`control`]) and the operator's console ([`console`]). It needs Redis, and MySQL for draw
//! sales' entries only (design/draw.md).
//!
//! Every JSON route is registered through `utoipa-axum`'s `routes!`, so the `#[utoipa::path]`
//! annotation next to a handler is what both documents and registers it; [`openapi`] is the
//! resulting OpenAPI 3.1 document ([`docs`]), served at `GET /openapi.json` and committed as
//! `openapi/waitroom.json` (kept equal by `waitroom/tests/openapi.rs`).

pub mod admitter;
pub mod console;
pub mod control;
pub mod docs;
pub mod edge;
pub mod line;
pub mod page;
pub mod pow;
pub mod queue;
pub mod refusals;
pub mod scripts;
pub mod ticket;

use anyhow::Context;
use axum::http::header;
use axum::response::IntoResponse;
use dropline_core::Config;
use dropline_core::clients::deps::Deps;
use dropline_core::http::{Bound, Dependency, Readiness, Server};

pub use edge::Secrets;

/// The waitroom's OpenAPI document, as `GET /openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = edge::routes().split_for_parts();
    let (_, control) = control::documented().split_for_parts();
    doc.merge(control);
    docs::finish(&mut doc);
    doc
}

/// `GET /openapi.json`: [`openapi`], rendered once (it is the same for the life of the process).
fn openapi_route() -> axum::Router {
    let json = dropline_core::http::openapi::render(&openapi()).unwrap_or_else(|e| {
        tracing::error!(error = %e, "rendering the OpenAPI document");
        String::from("{}")
    });
    let json = axum::body::Bytes::from(json);
    axum::Router::new().route(
        "/openapi.json",
        axum::routing::get(move || {
            let json = json.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], json).into_response() }
        }),
    )
}

/// Builds the waitroom server on `waitroom.listen` (port 0: any free port).
pub async fn build(config: &Config, deps: &Deps, secrets: Secrets) -> anyhow::Result<Server> {
    let bound = dropline_core::http::bind(config.waitroom_listen())
        .await
        .context("waitroom listener")?;
    build_on(bound, config, deps, secrets)
}

/// As [`build`], on a listener bound earlier.
pub fn build_on(
    bound: Bound,
    config: &Config,
    deps: &Deps,
    secrets: Secrets,
) -> anyhow::Result<Server> {
    let redis = deps.redis()?.clone();
    // Draw entries only: a process that connected MySQL shares its pool, the waitroom alone
    // gets one that connects on first use (it starts and serves lines without MySQL).
    let mysql = match &deps.mysql {
        Some(pool) => pool.clone(),
        None => dropline_core::clients::mysql::lazy(&config.mysql)?,
    };
    let readiness = Readiness::new(vec![Dependency::Redis(redis.clone())]);
    let access = secrets.access.clone();
    let (edge_routes, _) = edge::routes().split_for_parts();
    let routes = edge_routes
        .with_state(edge::Edge::new(config, redis.clone(), mysql, secrets)?)
        .merge(page::routes(&config.waitroom, &config.payment)?)
        .merge(control::routes(&config.waitroom, redis, access)?)
        .merge(console::routes(&config.waitroom)?)
        .merge(page::admin::routes()?)
        .merge(openapi_route());
    Ok(Server::on(
        "waitroom",
        bound,
        routes,
        readiness,
        &config.http,
    ))
}
