//! `dropline-core`: what every Dropline component shares.
//!
//! Configuration ([`config`]), the contract's error shape ([`error`]), logs and metrics
//! ([`telemetry`]), the clients for MySQL ([`mysql`]), Redis ([`redis`]) and RabbitMQ
//! ([`amqp`]), the Lua script registry ([`lua`]), the message envelope ([`messages`]), the HTTP
//! service shell ([`http`]) and process shutdown ([`shutdown`]). Waitroom, api and workers
//! depend on this crate and never on each other.

pub mod alerts;
pub mod amqp;
pub mod audit;
pub mod batch;
pub mod coalesce;
pub mod config;
pub mod consumer;
pub mod deps;
pub mod error;
pub mod extract;
pub mod http;
pub mod jwt_crypto;
pub mod keyevents;
pub mod keys;
pub mod lease;
pub mod ledger;
pub mod limit;
pub mod lua;
pub mod messages;
pub mod mysql;
pub mod orders;
pub mod outbox;
pub mod password;
pub mod pii;
pub mod rearm;
pub mod redis;
pub mod retry;
pub mod sale;
pub mod shutdown;
pub mod telemetry;
pub mod tokens;

pub use config::Config;
pub use error::{ApiError, ErrorCode};
