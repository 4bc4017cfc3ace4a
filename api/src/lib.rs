//! `dropline-api`: the purchase API: accounts, catalog, sales administration and orders.
//!
//! Handlers only: domain rules shared with other components live in `dropline-core`, atomic
//! stock steps in `lua/`, and payment and confirmation in `dropline-workers`. It needs MySQL,
//! Redis and RabbitMQ.

pub mod accounts;
pub mod admin;
pub mod cache;
pub mod catalog;
pub mod extract;
pub mod fail;
pub mod limits;
pub mod sessions;
pub mod state;
pub mod users;

use axum::Router;
use dropline_core::Config;
use dropline_core::deps::Deps;
use dropline_core::http::{Dependency, Readiness, Server};

pub use state::{AppState, Secrets};

/// Every api route, with its state.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .merge(users::routes())
        .merge(sessions::routes())
        .merge(catalog::routes())
        .merge(admin::routes())
        .with_state(state)
}

/// Builds the api server on `api.listen` (port 0: any free port).
pub async fn build(config: &Config, deps: &Deps, secrets: Secrets) -> anyhow::Result<Server> {
    let readiness = Readiness::new(vec![
        Dependency::Mysql(deps.mysql()?.clone()),
        Dependency::Redis(deps.redis()?.clone()),
        Dependency::Rabbitmq(deps.broker()?.clone()),
    ]);
    let state = AppState::new(config, deps, secrets)?;
    Server::bind(
        "api",
        config.api_listen(),
        routes(state),
        readiness,
        &config.http,
    )
    .await
}
