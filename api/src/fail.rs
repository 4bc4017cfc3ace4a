//! Dependency failures to contract errors: an outage (connection refused, pool exhausted,
//! timeout) is 503 `unavailable` with `Retry-After`, anything else is a logged 500 `internal`.

use dropline_core::http::error::ApiError;

/// A MySQL error that was not expected by the handler.
pub fn db(context: &'static str, error: sqlx::Error) -> ApiError {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => {
            ApiError::unavailable(anyhow::Error::new(error).context(context))
        }
        other => ApiError::internal(anyhow::Error::new(other).context(context)),
    }
}

/// A RabbitMQ publish that did not get a confirm: the broker is down or refusing.
pub fn broker(context: &'static str, error: anyhow::Error) -> ApiError {
    ApiError::unavailable(error.context(context))
}

/// A Redis command that failed: the server is unreachable or slow.
pub fn redis(context: &'static str, error: impl Into<anyhow::Error>) -> ApiError {
    ApiError::unavailable(error.into().context(context))
}

/// Whether a transaction failed only because InnoDB chose it as a deadlock victim or gave up
/// waiting for a lock: running it again from the start is the documented remedy.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => {
            matches!(e.code().as_deref(), Some("40001"))
                || e.message().contains("Deadlock found")
                || e.message().contains("Lock wait timeout")
        }
        _ => false,
    }
}

/// A step of a transaction that either failed by the rules (`Api`) or in the database (`Db`,
/// retried by [`retry_transient`] when transient).
#[derive(Debug)]
pub enum TxError {
    Api(ApiError),
    Db(&'static str, sqlx::Error),
}

impl From<ApiError> for TxError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

/// `.map_err(tx("what"))` on a sqlx result inside a transaction body.
pub fn tx(context: &'static str) -> impl FnOnce(sqlx::Error) -> TxError {
    move |e| TxError::Db(context, e)
}

/// Runs `body` (one whole transaction) again when it failed transiently, up to 5 times.
pub async fn retry_transient<T, F, Fut>(mut body: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TxError>>,
{
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match body().await {
            Ok(value) => return Ok(value),
            Err(TxError::Api(e)) => return Err(e),
            Err(TxError::Db(context, e)) if is_transient(&e) && attempt < 5 => {
                metrics::counter!("dropline_mysql_tx_retries_total").increment(1);
                tracing::debug!(context, attempt, error = %e, "transient MySQL failure; retrying the transaction");
                let jitter = rand::random_range(0..10u64);
                tokio::time::sleep(std::time::Duration::from_millis(
                    5 * u64::from(attempt) + jitter,
                ))
                .await;
            }
            Err(TxError::Db(context, e)) if is_transient(&e) => {
                return Err(ApiError::unavailable(
                    anyhow::Error::new(e).context(context),
                ));
            }
            Err(TxError::Db(context, e)) => return Err(db(context, e)),
        }
    }
}
