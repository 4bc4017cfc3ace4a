//! `dropline-core`: what two or more Dropline components share, one folder per concern.
//!
//! - [`config`]: the layered configuration (defaults file < `dropline.toml` < `DROPLINE_*`).
//! - [`clients`]: MySQL, Redis (and the Lua script registry, [`lua`]), RabbitMQ, the bundle of
//!   connections a process holds, and their reconnect backoff.
//! - [`http`]: the service shell every server runs in, the contract's error shape, request
//!   extractors and rate limits.
//! - [`auth`]: signing keys, access tokens and passes, password hashing, account rules.
//! - [`sale`]: a sale's state in Redis and the state a buyer sees.
//! - [`orders`]: the order state machine, its outbox to MySQL, and the MySQL ledger (the
//!   invariant audit over them is the `dropline-audit` crate).
//! - [`ids`]: the typed ids (`SaleId`, `UserId`, `OrderId`, `ProductId`); [`money`]: an amount
//!   in minor units with its currency code.
//! - [`messages`]: the RabbitMQ message envelope and payloads.
//! - [`alerts`], [`coalesce`], [`lease`], [`shutdown`], [`telemetry`]: the small shared pieces.
//!
//! Waitroom, api and workers depend on this crate and never on each other; the operator
//! commands live in `dropline-ops`, the invariant audit in `dropline-audit`.

pub mod alerts;
pub mod auth;
pub mod clients;
pub mod coalesce;
pub mod config;
pub mod http;
pub mod ids;
pub mod lease;
pub mod lua;
pub mod messages;
pub mod money;
pub mod orders;
pub mod sale;
pub mod shutdown;
pub mod stripe;
pub mod telemetry;

pub use config::Config;
pub use http::error::{ApiError, ErrorCode};
pub use ids::{OrderId, ProductId, SaleId, UserId};
pub use money::{Currency, Money};
