//! Connections to what Dropline runs on: MySQL ([`mysql`]), Redis ([`redis`]), RabbitMQ
//! ([`amqp`]), the set a process holds ([`deps`]), and the backoff they reconnect with
//! ([`retry`]).

pub mod amqp;
pub mod deps;
pub mod mysql;
pub mod redis;
pub mod retry;
