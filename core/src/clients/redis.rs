//! Redis: a pooled, auto-pipelined fred client (standalone or Cluster) and the key layout.
//!
//! Every key of one sale carries the hash tag `{s:<sale_id>}`, so each Lua script touches one
//! slot and the design runs unchanged on Redis Cluster. Every key starts with the configured
//! prefix (`dl` by default) so that deployments and tests can share one server.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fred::prelude::*;
use fred::types::config::ReconnectPolicy;

use crate::clients::retry::Backoff;
use crate::clients::tls;
use crate::config::{RedisConfig, RedisTarget, redact_url};

/// A cheap-to-clone Redis handle: the pool plus the key prefix.
#[derive(Clone)]
pub struct Redis {
    pool: Pool,
    prefix: Arc<str>,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Redis {
    /// Connects, waiting at most `connect_timeout_seconds` for the server to answer. After the
    /// first connection the client reconnects by itself for as long as the process runs.
    pub async fn connect(config: &RedisConfig) -> anyhow::Result<Self> {
        let target = RedisTarget::parse(&config.url).context("redis.url")?;
        let limit = Duration::from_secs(config.connect_timeout_seconds);
        let started = tokio::time::Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            let pool = build_pool(&target, config)?;
            let attempt = async {
                pool.init().await?;
                pool.ping::<String>(None).await?;
                Ok::<_, fred::error::Error>(())
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(())) => {
                    return Ok(Self {
                        pool,
                        prefix: config.key_prefix.as_str().into(),
                    });
                }
                outcome => {
                    let reason = match outcome {
                        Ok(Err(e)) => {
                            tls::explain(&e.to_string(), &redact_url(&config.url), "redis.ca_file")
                        }
                        _ => "timed out".to_owned(),
                    };
                    let _ = pool.quit().await;
                    // A refused certificate stays refused: say so now instead of retrying.
                    if target.uses_tls() && tls::is_certificate_error(&reason) {
                        anyhow::bail!("could not connect to Redis (redis.url): {reason}");
                    }
                    if started.elapsed() + backoff.peek() >= limit {
                        anyhow::bail!(
                            "could not reach Redis at {} within {}s (redis.url): {reason}",
                            redact_url(&config.url),
                            limit.as_secs()
                        );
                    }
                    tracing::warn!(error = %reason, url = %redact_url(&config.url), "Redis not reachable yet, retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// The pool, for commands. Every call is pipelined on one of the pool's connections.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The key prefix (`redis.key_prefix`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A key outside any sale: `<prefix>:<name>`.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// A key of one sale, in the sale's slot: `<prefix>:{s:<sale>}:<name>`.
    pub fn sale_key(&self, sale: impl fmt::Display, name: &str) -> String {
        format!("{}:{{s:{sale}}}:{name}", self.prefix)
    }

    /// Readiness probe: one PING, failing fast instead of queueing behind a reconnect.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let client = self.pool.next();
        anyhow::ensure!(client.is_connected(), "not connected");
        client
            .ping::<String>(None)
            .await
            .map_err(|e| anyhow::anyhow!("PING: {e}"))?;
        Ok(())
    }

    /// Closes every connection.
    pub async fn quit(&self) {
        let _ = self.pool.quit().await;
    }
}

fn build_pool(target: &RedisTarget, config: &RedisConfig) -> anyhow::Result<Pool> {
    let command_timeout = Duration::from_millis(config.command_timeout_ms);
    Builder::from_config(target.fred_config(config.ca_file.as_deref())?)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(3);
            c.internal_command_timeout = Duration::from_secs(3);
            // A command whose connection dropped is sent again once. Every Dropline script is
            // idempotent or state-guarded, so a repeat is safe.
            c.max_command_attempts = 2;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = command_timeout;
        })
        // Keep reconnecting forever (0 = no limit), from 100 ms up to 2 s between attempts.
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
        .build_pool(config.pool_size)
        .map_err(|e| anyhow::anyhow!("building the Redis pool: {e}"))
}
