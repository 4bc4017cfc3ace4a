//! `dropline-workers`: RabbitMQ consumers and timers (payment, confirm, expiry, mail).
//!
//! Each worker kind is a loop over deliveries or timer ticks; run more processes to scale.
//! Every worker process serves `/healthz`, `/readyz` and `/metrics` on its metrics address.
//!
//! - [`payment`]: `payment.requested` → the provider → `payments` row → `payment.completed`.
//! - [`confirm`]: `payment.completed` → MySQL `paid` + `sales.sold` (batched) → Redis PAID →
//!   `order.confirmed`; or Redis FAILED; or a refund when the order cannot be confirmed.
//! - [`expiry`]: hold timers' keyspace events and the sweeper end due orders (EXPIRED, or a
//!   stuck payment settled with the provider); its [`recorder`] copies every order arrow from
//!   the sales' outbox streams to MySQL.
//! - [`mail`]: `mail.send` and `order.confirmed` over SMTP, once per mail.
//!
//! The payment, confirm and expiry workers use the configured provider ([`make_provider`]):
//! the simulated one ([`provider::Simulated`], `payment.*` config), whose ledger lives in
//! Redis so that every process shares it, or Stripe ([`stripe::Stripe`], design/payments.md).

use std::fmt;
use std::str::FromStr;

use anyhow::Context;

use axum::Router;
use dropline_core::Config;
use dropline_core::clients::deps::{Deps, Needs};
use dropline_core::config::ProviderKind;
use dropline_core::http::{Dependency, Readiness, Server};
use tokio_util::sync::CancellationToken;

pub mod batch;
pub mod confirm;
pub mod consumer;
pub mod draw;
pub mod envelope;
pub mod expiry;
pub mod forgotten;
pub mod keyevents;
pub mod ledger;
pub mod mail;
pub mod payment;
pub mod provider;
pub mod recorder;
pub mod sales;
pub mod stripe;

/// The worker kinds of `dropline worker <kind>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Payment,
    Confirm,
    Expiry,
    Mail,
    /// The draw leader (design/draw.md): freezes, reveals and ranks draw sales.
    Draw,
    All,
}

impl Kind {
    pub const NAMES: [&'static str; 6] = ["payment", "confirm", "expiry", "mail", "draw", "all"];

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
            Self::Draw => "draw",
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
            "draw" => Ok(Self::Draw),
            "all" => Ok(Self::All),
            other => Err(format!(
                "unknown worker kind `{other}`; expected one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// Runs the worker of `kind` until `shutdown` fires. `deps` must hold what [`Kind::needs`]
/// names.
///
/// [`Kind::All`] runs every built kind in this process, sharing `deps`; when one of them
/// fails, the others are stopped and the first error is returned.
pub async fn run(
    kind: Kind,
    config: &Config,
    deps: &Deps,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if kind != Kind::All {
        return run_one(kind, config, deps, shutdown).await;
    }
    let all = shutdown.child_token();
    let guarded = |kind: Kind| {
        let all = all.clone();
        async move {
            let result = run_one(kind, config, deps, all.clone()).await;
            if let Err(e) = &result {
                tracing::error!(worker = %kind, error = format!("{e:#}"), "worker stopped; stopping the others");
                all.cancel();
            }
            result.with_context(|| format!("the {kind} worker"))
        }
    };
    let (payment, confirm, expiry, mail, draw) = tokio::join!(
        guarded(Kind::Payment),
        guarded(Kind::Confirm),
        guarded(Kind::Expiry),
        guarded(Kind::Mail),
        guarded(Kind::Draw),
    );
    payment.and(confirm).and(expiry).and(mail).and(draw)
}

async fn run_one(
    kind: Kind,
    config: &Config,
    deps: &Deps,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    match kind {
        Kind::Mail => mail::run(config, deps, shutdown).await,
        Kind::Draw => draw::run(config, deps, shutdown).await,
        Kind::Payment => payment::run(config, deps, make_provider(config, deps)?, shutdown).await,
        Kind::Confirm => confirm::run(config, deps, make_provider(config, deps)?, shutdown).await,
        Kind::Expiry => expiry::run(config, deps, make_provider(config, deps)?, shutdown).await,
        Kind::All => anyhow::bail!("`all` is not one worker"),
    }
}

/// The configured payment provider (`payment.provider`): the simulated one, or Stripe (which
/// needs `payment.stripe.secret_key`: an error naming it otherwise).
pub fn make_provider(
    config: &Config,
    deps: &Deps,
) -> anyhow::Result<std::sync::Arc<dyn provider::PaymentProvider>> {
    Ok(match config.payment.provider {
        ProviderKind::Simulated => provider::Simulated::new(deps.redis()?, &config.payment),
        ProviderKind::Stripe => stripe::Stripe::new(&config.payment.stripe, deps.mysql()?)?,
    })
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
