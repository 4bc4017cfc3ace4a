//! Connections to what Dropline runs on: MySQL ([`mysql`]), Redis ([`redis`]), RabbitMQ
//! ([`amqp`]), the set a process holds ([`deps`]), the backoff they reconnect with
//! ([`retry`]), and the trusted roots of `rediss://` and `amqps://` ([`tls`]).

pub mod amqp;
pub mod deps;
pub mod mysql;
pub mod redis;
pub mod retry;
pub mod tls;
