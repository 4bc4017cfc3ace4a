//! `dropline-waitroom`: the edge that turns a stampede into an orderly line.
//!
//! Buyers join a per-sale Redis queue, poll for their place, and leave with a short-lived
//! EdDSA pass once the admitter lets them in. This crate owns the HTTP edge ([`edge`]), the
//! tickets waiting buyers poll with ([`ticket`]), the proof of work a sale may ask of a join
//! ([`pow`]), the queue in Redis ([`queue`], Lua in
//! `lua/wr_*.lua`), the admitter, the waiting page ([`page`]) and the administrators' control room
//! ([`control`]). It needs Redis only.

pub mod admitter;
pub mod control;
pub mod edge;
pub mod page;
pub mod pow;
pub mod queue;
pub mod scripts;
pub mod ticket;

use anyhow::Context;
use dropline_core::Config;
use dropline_core::clients::deps::Deps;
use dropline_core::http::{Bound, Dependency, Readiness, Server};

pub use edge::Secrets;

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
    let readiness = Readiness::new(vec![Dependency::Redis(redis.clone())]);
    let access = secrets.access.clone();
    let routes = edge::routes(edge::Edge::new(config, redis.clone(), secrets)?)
        .merge(page::routes(&config.waitroom)?)
        .merge(control::routes(&config.waitroom, redis, access)?);
    Ok(Server::on(
        "waitroom",
        bound,
        routes,
        readiness,
        &config.http,
    ))
}
