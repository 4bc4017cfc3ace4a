//! `dropline-waitroom`: the edge that turns a stampede into an orderly line.
//!
//! Buyers join a per-sale Redis queue, poll for their place, and leave with a short-lived
//! EdDSA pass once the admitter lets them in. This crate owns the HTTP edge, the queue and
//! admission logic, the admitter and the waiting page. It needs Redis only.

pub mod page;
pub mod queue;
pub mod scripts;

use axum::Router;
use dropline_core::Config;
use dropline_core::deps::Deps;
use dropline_core::http::{Dependency, Readiness, Server};

/// Builds the waitroom server on `waitroom.listen` (port 0: any free port).
pub async fn build(config: &Config, deps: &Deps) -> anyhow::Result<Server> {
    let readiness = Readiness::new(vec![Dependency::Redis(deps.redis()?.clone())]);
    let routes = Router::new().merge(page::routes(&config.waitroom)?);
    Server::bind(
        "waitroom",
        config.waitroom_listen(),
        routes,
        readiness,
        &config.http,
    )
    .await
}
