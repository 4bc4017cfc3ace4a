//! MySQL (MariaDB) pool: bounded wait for the server, database created if missing, migrations.
//!
//! Migrations are the files in `migrations/`, embedded at compile time. sqlx takes a MySQL
//! advisory lock while it migrates, so several replicas starting at once are safe.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{ConnectOptions, Connection};

use crate::clients::retry::Backoff;
use crate::config::{MysqlConfig, redact_url};

/// The embedded migrations (`migrations/*.sql`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Connects to the configured database, creating it if missing, waiting at most
/// `connect_timeout_seconds` for the server to answer.
pub async fn connect(config: &MysqlConfig) -> anyhow::Result<MySqlPool> {
    let options = options_naming_a_database(config)?;
    let database = options.get_database().unwrap_or_default().to_owned();
    let deadline = Duration::from_secs(config.connect_timeout_seconds);
    // The same server without a database selected: the database may not exist yet.
    let mut server_url = url::Url::parse(&config.url).context("mysql.url is not a URL")?;
    server_url.set_path("");
    let server = MySqlConnectOptions::from_str(server_url.as_str())
        .context("mysql.url without its database is not valid")?;

    wait_for(config, deadline, || create_database(&server, &database)).await?;
    open(config, options, deadline).await
}

/// Like [`connect`], but never creates the database: for read-only tools (`sale audit`),
/// which must change nothing, not even make an empty database under a mistyped URL.
pub async fn connect_existing(config: &MysqlConfig) -> anyhow::Result<MySqlPool> {
    let options = options_naming_a_database(config)?;
    open(
        config,
        options,
        Duration::from_secs(config.connect_timeout_seconds),
    )
    .await
}

/// A pool that connects on first use and never waits at start: for a process whose main work
/// needs no MySQL (the waiting room, which writes only draw entries), so that it starts and
/// serves its lines while MySQL is down; a query then fails after the pool's acquire timeout.
pub fn lazy(config: &MysqlConfig) -> anyhow::Result<MySqlPool> {
    let options = options_naming_a_database(config)?;
    Ok(pool(config, options, 0, Duration::from_secs(3)))
}

/// `mysql.url` parsed, refused unless it names a database.
fn options_naming_a_database(config: &MysqlConfig) -> anyhow::Result<MySqlConnectOptions> {
    let options = MySqlConnectOptions::from_str(&config.url)
        .with_context(|| format!("mysql.url `{}` is not valid", redact_url(&config.url)))?;
    anyhow::ensure!(
        options.get_database().is_some(),
        "mysql.url names no database"
    );
    Ok(options)
}

/// A pool on `options` that connects on first use, keeping `min` connections once it has.
fn pool(
    config: &MysqlConfig,
    options: MySqlConnectOptions,
    min: u32,
    acquire_timeout: Duration,
) -> MySqlPool {
    MySqlPoolOptions::new()
        .max_connections(config.max_connections)
        .min_connections(min)
        .acquire_timeout(acquire_timeout)
        // A connection idle longer than MariaDB's wait_timeout would be dead on use.
        .idle_timeout(Duration::from_secs(300))
        .test_before_acquire(true)
        .connect_lazy_with(
            options
                .charset("utf8mb4")
                .log_statements(tracing::log::LevelFilter::Trace),
        )
}

/// The pool on `options`, once one query went through (waiting at most `deadline`).
async fn open(
    config: &MysqlConfig,
    options: MySqlConnectOptions,
    deadline: Duration,
) -> anyhow::Result<MySqlPool> {
    let pool = pool(config, options, 1, Duration::from_secs(5));
    wait_for(config, deadline, || async {
        sqlx::query("SELECT 1").execute(&pool).await?;
        Ok(())
    })
    .await?;
    Ok(pool)
}

/// Applies pending migrations, then the data steps that follow them. Idempotent: applied
/// migrations are skipped (checked by checksum), completed steps too.
///
/// A data step that cannot finish logs why and lets the service start: one account's data an
/// operator must look at (two addresses that become one) must not stop every replica.
pub async fn migrate(pool: &MySqlPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("applying MySQL migrations")?;
    if let Err(error) = crate::auth::accounts::canonicalize_stored(pool).await {
        tracing::error!(
            error = format!("{error:#}"),
            "the canonical e-mail step did not finish; it runs again at the next start"
        );
    }
    Ok(())
}

/// Readiness probe: one round trip.
pub async fn ping(pool: &MySqlPool) -> anyhow::Result<()> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .context("SELECT 1")?;
    Ok(())
}

async fn create_database(server: &MySqlConnectOptions, database: &str) -> anyhow::Result<()> {
    let mut conn = sqlx::mysql::MySqlConnection::connect_with(server).await?;
    // The name was validated (letters, digits, `_`), so quoting with backticks is safe.
    let sql = format!(
        "CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .with_context(|| format!("creating database `{database}`"))?;
    conn.close().await.ok();
    Ok(())
}

async fn wait_for<F, Fut>(
    config: &MysqlConfig,
    limit: Duration,
    mut attempt: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let started = tokio::time::Instant::now();
    loop {
        match attempt().await {
            Ok(()) => return Ok(()),
            Err(error) if started.elapsed() + backoff.peek() < limit => {
                tracing::warn!(error = format!("{error:#}"), url = %redact_url(&config.url), "MySQL not reachable yet, retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(error) => {
                return Err(error.context(format!(
                    "could not reach MySQL at {} within {}s (mysql.url)",
                    redact_url(&config.url),
                    limit.as_secs()
                )));
            }
        }
    }
}
