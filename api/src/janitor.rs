//! The janitor: deletes sign-in state that can no longer be used, so the tables stay the size
//! of the live sessions rather than of every login ever made.
//!
//! - refresh tokens a day after they expired (an expired token is refused anyway; the day
//!   keeps recent ones for an incident investigation);
//! - e-mail codes once expired and their hour window (codes sent, tries spent) has ended.
//!
//! Every api replica runs it, at a random offset within the interval; the deletes are
//! idempotent, in batches of [`BATCH`] rows so no statement holds locks for long.
//! Metric: `dropline_janitor_deleted_total{table}`.

use std::time::Duration;

use anyhow::Context;
use rand::Rng;
use sqlx::MySqlPool;
use tokio_util::sync::CancellationToken;

/// Rows per DELETE statement.
pub const BATCH: u64 = 5_000;

/// What one [`purge`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub refresh_tokens: u64,
    pub email_codes: u64,
}

/// Deletes expired sign-in state now (see the module docs).
pub async fn purge(mysql: &MySqlPool) -> anyhow::Result<Purged> {
    let refresh_tokens = delete_in_batches(
        mysql,
        "refresh_tokens",
        "DELETE FROM refresh_tokens WHERE expires_at < NOW(3) - INTERVAL 1 DAY LIMIT ?",
    )
    .await?;
    let email_codes = delete_in_batches(
        mysql,
        "email_codes",
        // Kept while its hour window runs: the window's count and tries outlive the code.
        "DELETE FROM email_codes WHERE expires_at < NOW(3) \
         AND (window_started_at IS NULL OR window_started_at < UTC_TIMESTAMP(3) - INTERVAL 1 HOUR) LIMIT ?",
    )
    .await?;
    Ok(Purged {
        refresh_tokens,
        email_codes,
    })
}

async fn delete_in_batches(
    mysql: &MySqlPool,
    table: &'static str,
    sql: &'static str,
) -> anyhow::Result<u64> {
    let mut total = 0;
    loop {
        let deleted = sqlx::query(sql)
            .bind(BATCH)
            .execute(mysql)
            .await
            .with_context(|| format!("deleting expired rows of {table}"))?
            .rows_affected();
        total += deleted;
        metrics::counter!("dropline_janitor_deleted_total", "table" => table).increment(deleted);
        if deleted < BATCH {
            return Ok(total);
        }
    }
}

/// Runs [`purge`] every `interval` (the first run at a random point within it, so replicas
/// started together do not purge together) until `shutdown`.
pub fn spawn(
    mysql: MySqlPool,
    interval: Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let first = rand::rng().random_range(Duration::ZERO..=interval);
        let mut wait = first;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            match purge(&mysql).await {
                Ok(purged) if purged != Purged::default() => {
                    tracing::info!(
                        refresh_tokens = purged.refresh_tokens,
                        email_codes = purged.email_codes,
                        "janitor deleted expired sign-in state"
                    );
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(error = format!("{error:#}"), "janitor run failed"),
            }
            wait = interval;
        }
    })
}
