//! Test harness for Dropline's integration tests.
//!
//! [`TestEnv`] gives each test its own world on the machine's real servers: a fresh MySQL
//! database (`dl_test_<id>`), a Redis key prefix (`dltest-<id>`), a RabbitMQ prefix for every
//! exchange and queue (`dltest-<id>`), and port 0 for every listener. Tests therefore run in
//! parallel without seeing each other. [`TestEnv::cleanup`] removes what the test made;
//! `scripts/test` also sweeps leftovers of tests that died before cleaning up.
//!
//! [`FaultProxy`] is a TCP proxy a test puts between a component and one dependency, to cut
//! the dependency off (every connection dropped, new ones refused) and restore it, without
//! stopping the shared server that other tests use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use dropline_core::Config;
use dropline_core::config::Sources;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub mod draw;
pub mod localstripe;
pub mod openapi;
pub mod rabbit_server;
pub mod redis_server;
pub mod smtp;
pub mod webhook;

/// One test's isolated configuration and the names it owns.
#[derive(Debug)]
pub struct TestEnv {
    pub config: Config,
    pub id: String,
    pub database: String,
}

impl TestEnv {
    /// A new isolated environment on top of the process's configuration (defaults, and
    /// `DROPLINE_*` env so CI can point at other servers).
    pub fn new() -> anyhow::Result<Self> {
        Self::with_overrides(&[])
    }

    /// Like [`TestEnv::new`], with extra settings in env form (`("PAYMENT__TIMEOUT_SECONDS", "1")`).
    pub fn with_overrides(extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        init_test_logs();
        let id = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let base = Config::load(&Sources {
            file: None,
            env: true,
            overrides: Vec::new(),
        })
        .context("loading the base configuration for tests")?;
        let database = format!("dl_test_{id}");
        let mut mysql_url = url::Url::parse(&base.mysql.url).context("mysql.url")?;
        mysql_url.set_path(&database);
        let prefix = format!("dltest-{id}");
        let mut overrides: Vec<(String, String)> = vec![
            ("MYSQL__URL".into(), mysql_url.to_string()),
            ("MYSQL__CONNECT_TIMEOUT_SECONDS".into(), "10".into()),
            ("MYSQL__MAX_CONNECTIONS".into(), "5".into()),
            ("REDIS__KEY_PREFIX".into(), prefix.clone()),
            ("REDIS__CONNECT_TIMEOUT_SECONDS".into(), "10".into()),
            ("REDIS__POOL_SIZE".into(), "2".into()),
            ("AMQP__PREFIX".into(), prefix.clone()),
            ("AMQP__CONNECT_TIMEOUT_SECONDS".into(), "10".into()),
            ("WAITROOM__LISTEN".into(), "127.0.0.1:0".into()),
            ("API__LISTEN".into(), "127.0.0.1:0".into()),
            ("WORKERS__METRICS_LISTEN".into(), "127.0.0.1:0".into()),
            ("HTTP__SHUTDOWN_GRACE_SECONDS".into(), "5".into()),
        ];
        overrides.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let config = Config::load(&Sources {
            file: None,
            env: true,
            overrides,
        })
        .context("loading the test configuration")?;
        Ok(Self {
            config,
            id,
            database,
        })
    }

    /// Drops the database, deletes the Redis keys and the RabbitMQ exchanges and queues of
    /// this test. Best effort: a failure is reported, leftovers are swept by `scripts/test`.
    pub async fn cleanup(&self) -> anyhow::Result<()> {
        let mut server_url = url::Url::parse(&self.config.mysql.url)?;
        server_url.set_path("");
        let mut errors = Vec::new();
        if let Err(e) = drop_database(server_url.as_str(), &self.database).await {
            errors.push(format!("mysql: {e:#}"));
        }
        if let Err(e) = delete_redis_keys(&self.config).await {
            errors.push(format!("redis: {e:#}"));
        }
        if let Err(e) = delete_amqp_topology(&self.config).await {
            errors.push(format!("rabbitmq: {e:#}"));
        }
        anyhow::ensure!(errors.is_empty(), "cleanup: {}", errors.join("; "));
        Ok(())
    }
}

async fn drop_database(server_url: &str, database: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::MySqlConnection::connect(server_url).await?;
    let sql = format!("DROP DATABASE IF EXISTS `{database}`");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

async fn delete_redis_keys(config: &Config) -> anyhow::Result<()> {
    let redis = dropline_core::clients::redis::Redis::connect(&config.redis).await?;
    let pattern = format!("{}:*", redis.prefix());
    let keys = scan_keys(&redis, &pattern).await?;
    delete_keys(&redis, keys).await?;
    redis.quit().await;
    Ok(())
}

/// Every key matching `pattern`: on one server, or on every primary of a Redis Cluster (a
/// plain `SCAN` there sees one node's keys only).
pub async fn scan_keys(
    redis: &dropline_core::clients::redis::Redis,
    pattern: &str,
) -> anyhow::Result<Vec<String>> {
    use fred::prelude::*;
    use fred::types::scan::Scanner;
    use futures_util::{StreamExt, TryStreamExt};
    let client = redis.pool().next().clone();
    let mut pages = if client.is_clustered() {
        client.scan_cluster(pattern, Some(1000), None).boxed()
    } else {
        client.scan(pattern, Some(1000), None).boxed()
    };
    let mut keys = Vec::new();
    while let Some(mut page) = pages.try_next().await? {
        if let Some(batch) = page.take_results() {
            keys.extend(batch.into_iter().filter_map(|k| k.into_string()));
        }
    }
    Ok(keys)
}

/// Deletes `keys`, one `DEL` per hash slot (a Cluster refuses keys of several slots at once).
pub async fn delete_keys(
    redis: &dropline_core::clients::redis::Redis,
    keys: Vec<String>,
) -> anyhow::Result<()> {
    use fred::prelude::*;
    let mut by_slot: std::collections::BTreeMap<u16, Vec<String>> = Default::default();
    for key in keys {
        by_slot
            .entry(fred::util::redis_keyslot(key.as_bytes()))
            .or_default()
            .push(key);
    }
    for (_, keys) in by_slot {
        for chunk in keys.chunks(500) {
            let _: i64 = redis.pool().del(chunk.to_vec()).await?;
        }
    }
    Ok(())
}

async fn delete_amqp_topology(config: &Config) -> anyhow::Result<()> {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let names = dropline_core::clients::amqp::Names::new(&config.amqp.prefix);
    let connection =
        dropline_core::clients::amqp::connect(&config.amqp, "dropline-test-cleanup").await?;
    let channel = connection.create_channel().await?;
    for queue in names.all_queues() {
        // A queue that was never declared closes the channel with 404: open a new one then.
        if channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .is_err()
        {
            break;
        }
    }
    let channel = connection.create_channel().await?;
    for exchange in names.all_exchanges() {
        let _ = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = connection.close(200, "test cleanup".into()).await;
    Ok(())
}

/// Replaces the host and port of `url` with `addr` (to route a client through a proxy).
pub fn url_via(url: &str, addr: SocketAddr) -> anyhow::Result<String> {
    let mut parsed = url::Url::parse(url)?;
    parsed
        .set_host(Some(&addr.ip().to_string()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    parsed
        .set_port(Some(addr.port()))
        .map_err(|()| anyhow::anyhow!("cannot set port"))?;
    Ok(parsed.to_string())
}

/// The `host:port` a URL points at (default ports filled in per scheme).
pub fn url_target(url: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let parsed = url::Url::parse(url)?;
    let host = parsed.host_str().context("URL has no host")?;
    let port = parsed.port().unwrap_or(match parsed.scheme() {
        "mysql" | "mariadb" => 3306,
        "redis" => 6379,
        "amqp" => 5672,
        _ => 0,
    });
    (host, port)
        .to_socket_addrs()?
        .next()
        .context("URL host does not resolve")
}

/// A TCP proxy on loopback that a test can cut and restore.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<ProxyShared>,
}

#[derive(Debug)]
struct ProxyShared {
    target: SocketAddr,
    up: AtomicBool,
    /// Cancelled on `cut` to drop every live connection; replaced by a fresh token.
    connections: Mutex<CancellationToken>,
    stop: CancellationToken,
}

impl FaultProxy {
    /// Starts a proxy to `target` on a free loopback port.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(ProxyShared {
            target,
            up: AtomicBool::new(true),
            connections: Mutex::new(CancellationToken::new()),
            stop: CancellationToken::new(),
        });
        tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self { addr, shared })
    }

    /// Where clients should connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection and refuses new ones, as if the server died.
    pub async fn cut(&self) {
        self.shared.up.store(false, Ordering::SeqCst);
        let mut token = self.shared.connections.lock().await;
        token.cancel();
        *token = CancellationToken::new();
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.shared.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<ProxyShared>) {
    loop {
        let accepted = tokio::select! {
            () = shared.stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((mut inbound, _)) = accepted else {
            continue;
        };
        if !shared.up.load(Ordering::SeqCst) {
            drop(inbound); // refused: closed at once
            continue;
        }
        let cancel = shared.connections.lock().await.child_token();
        let stop = shared.stop.clone();
        let target = shared.target;
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(target).await else {
                return;
            };
            tokio::select! {
                () = cancel.cancelled() => {}
                () = stop.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
            }
        });
    }
}

/// Polls `check` every 100 ms until it returns true or `limit` passes; returns whether it did.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends the components' logs (warnings and errors; `DROPLINE_TEST_LOG` takes a filter such as
/// `info` or `dropline_workers=debug`) to the test's output, which the test runner shows only
/// for a test that failed: a failure in CI then says what the components saw, such as a
/// message retried after a dependency error. Once per process; a subscriber set already stays.
pub fn init_test_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DROPLINE_TEST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

/// Asserts an error answer in the contract's shape (DESIGN §9): status `want`, `{"error":
/// {"code": code, "message": <not empty>}}`.
#[track_caller]
pub fn assert_error(
    status: axum::http::StatusCode,
    body: &serde_json::Value,
    want: axum::http::StatusCode,
    code: &str,
) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}
