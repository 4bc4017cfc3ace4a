//! `dropline-api`: the purchase API: accounts, catalog, sales administration and orders.
//!
//! Handlers only: domain rules shared with other components live in `dropline-core`, atomic
//! stock steps in `lua/`, and payment and confirmation in `dropline-workers`. It needs MySQL,
//! Redis and RabbitMQ.

pub mod accounts;

use axum::Router;
use dropline_core::Config;
use dropline_core::deps::Deps;
use dropline_core::http::{Dependency, Readiness, Server};

/// Builds the api server on `api.listen` (port 0: any free port).
pub async fn build(config: &Config, deps: &Deps) -> anyhow::Result<Server> {
    let readiness = Readiness::new(vec![
        Dependency::Mysql(deps.mysql()?.clone()),
        Dependency::Redis(deps.redis()?.clone()),
        Dependency::Rabbitmq(deps.broker()?.clone()),
    ]);
    let routes = Router::new();
    Server::bind("api", config.api_listen(), routes, readiness, &config.http).await
}
