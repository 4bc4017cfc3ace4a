//! `dropline-workers`: RabbitMQ consumers and timers (payment, confirm, expiry, mail).
//!
//! Each worker kind is a loop over deliveries or timer ticks; run more processes to scale.
//! Every worker process serves `/healthz`, `/readyz` and `/metrics` on its metrics address.

use std::fmt;
use std::str::FromStr;

use axum::Router;
use dropline_core::Config;
use dropline_core::deps::{Deps, Needs};
use dropline_core::http::{Dependency, Readiness, Server};
use tokio_util::sync::CancellationToken;

pub mod mail;

/// The worker kinds of `dropline worker <kind>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Payment,
    Confirm,
    Expiry,
    Mail,
    All,
}

impl Kind {
    pub const NAMES: [&'static str; 5] = ["payment", "confirm", "expiry", "mail", "all"];

    /// The issue that brings this worker, while it is not built yet.
    pub fn pending_issue(self) -> Option<u32> {
        match self {
            Self::Mail => None,
            Self::Payment | Self::Confirm | Self::Expiry | Self::All => Some(5),
        }
    }

    /// What the worker connects to.
    pub fn needs(self) -> Needs {
        match self {
            // Redis holds the "already sent" markers that keep a mail from going out twice.
            Self::Mail => Needs {
                mysql: false,
                redis: true,
                amqp: true,
            },
            _ => Needs::ALL,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Payment => "payment",
            Self::Confirm => "confirm",
            Self::Expiry => "expiry",
            Self::Mail => "mail",
            Self::All => "all",
        })
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "payment" => Ok(Self::Payment),
            "confirm" => Ok(Self::Confirm),
            "expiry" => Ok(Self::Expiry),
            "mail" => Ok(Self::Mail),
            "all" => Ok(Self::All),
            other => Err(format!(
                "unknown worker kind `{other}`; expected one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// Runs the worker of `kind` until `shutdown` fires. `deps` must hold what [`Kind::needs`]
/// names. Kinds still pending return an error naming the issue that brings them.
pub async fn run(
    kind: Kind,
    config: &Config,
    deps: &Deps,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    match (kind, kind.pending_issue()) {
        (Kind::Mail, _) => mail::run(config, deps, shutdown).await,
        (other, Some(issue)) => {
            anyhow::bail!("the {other} worker is not built yet (it arrives with issue #{issue})")
        }
        (other, None) => anyhow::bail!("the {other} worker has no runner"),
    }
}

/// The worker process's ops server (`/healthz`, `/readyz`, `/metrics`) on `addr`.
pub async fn metrics_server(
    config: &Config,
    deps: &Deps,
    addr: std::net::SocketAddr,
) -> anyhow::Result<Server> {
    let mut checks = Vec::new();
    if let Some(pool) = &deps.mysql {
        checks.push(Dependency::Mysql(pool.clone()));
    }
    if let Some(redis) = &deps.redis {
        checks.push(Dependency::Redis(redis.clone()));
    }
    if let Some(broker) = &deps.broker {
        checks.push(Dependency::Rabbitmq(broker.clone()));
    }
    Server::bind(
        "worker",
        addr,
        Router::new(),
        Readiness::new(checks),
        &config.http,
    )
    .await
}
