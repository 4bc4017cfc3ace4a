//! The external services a process connects to at start, shared by every component it runs.

use anyhow::Context;
use sqlx::MySqlPool;

use crate::clients::amqp::Broker;
use crate::clients::redis::Redis;
use crate::config::Config;

/// Which dependencies to connect.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    pub mysql: bool,
    pub redis: bool,
    pub amqp: bool,
}

impl Needs {
    pub const ALL: Self = Self {
        mysql: true,
        redis: true,
        amqp: true,
    };
}

/// Connected clients. Each is a cheap clone around a shared pool.
#[derive(Debug, Clone, Default)]
pub struct Deps {
    pub mysql: Option<MySqlPool>,
    pub redis: Option<Redis>,
    pub broker: Option<Broker>,
}

impl Deps {
    /// Connects what `needs` names, all at once, each waiting its bounded time; the error names
    /// every dependency that could not be reached. Runs migrations when configured.
    pub async fn connect(config: &Config, needs: Needs) -> anyhow::Result<Self> {
        let mysql = async {
            if !needs.mysql {
                return Ok(None);
            }
            let pool = crate::clients::mysql::connect(&config.mysql).await?;
            if config.mysql.run_migrations {
                crate::clients::mysql::migrate(&pool).await?;
            }
            Ok::<_, anyhow::Error>(Some(pool))
        };
        let redis = async {
            if !needs.redis {
                return Ok(None);
            }
            Ok::<_, anyhow::Error>(Some(Redis::connect(&config.redis).await?))
        };
        let broker = async {
            if !needs.amqp {
                return Ok(None);
            }
            Ok::<_, anyhow::Error>(Some(Broker::connect(&config.amqp).await?))
        };
        let (mysql, redis, broker) = tokio::join!(mysql, redis, broker);
        let errors: Vec<String> = [
            mysql.as_ref().err(),
            redis.as_ref().err(),
            broker.as_ref().err(),
        ]
        .into_iter()
        .flatten()
        .map(|e| format!("{e:#}"))
        .collect();
        if !errors.is_empty() {
            // Close whatever did connect before failing.
            if let Ok(Some(b)) = &broker {
                b.close().await;
            }
            if let Ok(Some(r)) = &redis {
                r.quit().await;
            }
            anyhow::bail!("{}", errors.join("\n"));
        }
        Ok(Self {
            mysql: mysql?,
            redis: redis?,
            broker: broker?,
        })
    }

    pub fn mysql(&self) -> anyhow::Result<&MySqlPool> {
        self.mysql
            .as_ref()
            .context("MySQL is not connected in this process")
    }

    pub fn redis(&self) -> anyhow::Result<&Redis> {
        self.redis
            .as_ref()
            .context("Redis is not connected in this process")
    }

    pub fn broker(&self) -> anyhow::Result<&Broker> {
        self.broker
            .as_ref()
            .context("RabbitMQ is not connected in this process")
    }

    /// Closes every connection (end of process or test).
    pub async fn close(&self) {
        if let Some(b) = &self.broker {
            b.close().await;
        }
        if let Some(r) = &self.redis {
            r.quit().await;
        }
        if let Some(m) = &self.mysql {
            m.close().await;
        }
    }
}
