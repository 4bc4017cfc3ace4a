//! The recorder: copies every order arrow from the sales' outbox streams to MySQL
//! ([`dropline_core::orders::outbox`], [`ledger::record`](crate::ledger::record)). Part of the expiry worker.
//!
//! Every expiry worker process reads as its own consumer of the stream's consumer group, so
//! processes share the entries. Per sale and round: up to [`BATCH`] new entries, written to
//! MySQL in one call, then acknowledged and deleted. Entries a dead process held are claimed
//! every [`CLAIM_EVERY`]. Writing an entry twice is harmless (rows only move forward), so a
//! crash between the MySQL write and the acknowledgement costs nothing but a repeat.
//!
//! # The stock check
//!
//! Every [`STOCK_CHECK_EVERY`] the recorder also compares each sale's `sales.sold` in MySQL
//! with Redis's `sold`. MySQL ahead (more units paid than Redis counts as sold) is usually a
//! confirmation in flight (MySQL commits before Redis's PAYING → PAID), but after a Redis
//! failover that lost writes it can be paid orders Redis forgot, whose units Redis then offers
//! again: buyers would pay for them and be refunded, and the sale would never sell out. So
//! then it runs [`repair::repair`] (`lua/stock_repair.lua`), which tells the two apart and moves
//! only units MySQL sold and Redis counts nowhere but in `avail` to `sold`. Repeating it (every
//! expiry worker process runs the check) is harmless.
//!
//! # Forgotten holds
//!
//! Every [`forgotten::CHECK_EVERY`] it also ends, in MySQL, HELD orders long past their
//! deadline that Redis no longer knows, and puts back the hashes of ended orders Redis forgot
//! ([`forgotten`]).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::{forgotten, ledger};
use anyhow::Context;
use dropline_core::clients::redis::Redis;
use dropline_core::ids::{OrderId, SaleId};
use dropline_core::orders::outbox::{Entry, Outbox};
use dropline_core::orders::{Orders, repair};
use fred::interfaces::KeysInterface;
use sqlx::MySqlPool;
use tokio_util::sync::CancellationToken;

use crate::sales::Sales;

/// Entries read per sale and round.
pub const BATCH: u64 = 512;
/// The pause after a round that found nothing.
const IDLE: Duration = Duration::from_millis(50);
/// How often stale entries of dead readers are claimed.
const CLAIM_EVERY: Duration = Duration::from_secs(10);
/// How often the list of sales is read again.
const SALES_EVERY: Duration = Duration::from_secs(1);
/// The pause after a failed round (MySQL or Redis down).
const BACKOFF: Duration = Duration::from_secs(1);
/// How often each sale's sold counts are compared (see "The stock check").
pub const STOCK_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Records until `shutdown` fires. `consumer` names this process in the consumer groups.
/// `admission_window` (`waitroom.admission_window_seconds`) is for the restore of forgotten
/// orders ([`forgotten::restore`]).
pub async fn run(
    redis: Redis,
    mysql: MySqlPool,
    consumer: String,
    admission_window: Duration,
    shutdown: CancellationToken,
) {
    let sales = Sales::new(&redis);
    let mut outboxes: HashMap<SaleId, Outbox> = HashMap::new();
    let mut listed: Vec<SaleId> = Vec::new();
    let mut listed_at: Option<Instant> = None;
    let mut claimed_at = Instant::now();
    let mut stock_checked_at = Instant::now();
    let mut forgotten_checked_at = Instant::now();
    // Where the walk over each sale's orders stands, and the live orders Redis forgot it looks
    // at again (forgotten::restore_ended, forgotten::recheck).
    let mut walks: HashMap<SaleId, (Option<OrderId>, BTreeSet<OrderId>)> = HashMap::new();
    let mut failures = 0u32;
    tracing::info!(consumer = %consumer, "recorder starting");
    while !shutdown.is_cancelled() {
        if listed_at.is_none_or(|at| at.elapsed() >= SALES_EVERY) {
            match sales.current().await {
                Ok(current) => {
                    outboxes.retain(|id, _| current.contains(id));
                    listed = current;
                    listed_at = Some(Instant::now());
                }
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "recorder: could not list the sales"
                    );
                }
            }
        }
        let claim = claimed_at.elapsed() >= CLAIM_EVERY;
        if claim {
            claimed_at = Instant::now();
        }
        let mut full = false;
        let mut failed = false;
        for &sale in &listed {
            let outbox = match outboxes.get(&sale) {
                Some(outbox) => outbox.clone(),
                None => {
                    let outbox = Outbox::new(&redis, sale);
                    if let Err(error) = outbox.ensure_group().await {
                        tracing::warn!(sale = %sale, error = format!("{error:#}"), "recorder: no consumer group");
                        failed = true;
                        continue;
                    }
                    outboxes.insert(sale, outbox.clone());
                    outbox
                }
            };
            match round(&outbox, &mysql, &consumer, claim).await {
                Ok(n) => full |= n >= BATCH as usize,
                Err(error) => {
                    failed = true;
                    // A group lost with its stream (the sale's keys were deleted) is made again.
                    outboxes.remove(&sale);
                    if failures.is_multiple_of(30) {
                        tracing::warn!(sale = %sale, error = format!("{error:#}"), "recorder: round failed; will retry");
                    }
                }
            }
        }
        if stock_checked_at.elapsed() >= STOCK_CHECK_EVERY {
            stock_checked_at = Instant::now();
            for &sale in &listed {
                if let Err(error) = check_stock(&redis, &mysql, sale).await {
                    tracing::warn!(sale = %sale, error = format!("{error:#}"), "recorder: stock check failed; will retry");
                }
            }
        }
        if forgotten_checked_at.elapsed() >= forgotten::CHECK_EVERY {
            forgotten_checked_at = Instant::now();
            for &sale in &listed {
                if let Err(error) = forgotten::check(&redis, &mysql, sale).await {
                    tracing::warn!(sale = %sale, error = format!("{error:#}"), "recorder: forgotten-hold check failed; will retry");
                }
                let (after, pending) = walks.entry(sale).or_default();
                let walked = forgotten::restore_ended(
                    &redis,
                    &mysql,
                    sale,
                    *after,
                    forgotten::SETTLE,
                    admission_window,
                );
                match walked.await {
                    Ok(walk) => {
                        *after = walk.walked.or(*after);
                        for order in walk.live_missing {
                            if pending.len() < forgotten::MAX_PENDING {
                                pending.insert(order);
                            }
                        }
                    }
                    Err(error) => {
                        tracing::warn!(sale = %sale, error = format!("{error:#}"), "recorder: forgotten-order walk failed; will retry");
                    }
                }
                if !pending.is_empty()
                    && let Err(error) =
                        forgotten::recheck(&redis, &mysql, sale, pending, admission_window).await
                {
                    tracing::warn!(sale = %sale, error = format!("{error:#}"), "recorder: forgotten-order recheck failed; will retry");
                }
            }
        }
        failures = if failed {
            failures.saturating_add(1)
        } else {
            0
        };
        let pause = if failed {
            BACKOFF
        } else if full {
            Duration::ZERO
        } else {
            IDLE
        };
        if !pause.is_zero() {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
    for outbox in outboxes.values() {
        if let Err(error) = outbox.leave(&consumer).await {
            tracing::debug!(
                error = format!("{error:#}"),
                "recorder: could not leave a consumer group"
            );
        }
    }
    tracing::info!("recorder stopped");
}

/// One sale's round: stale entries (when `claim`), then new ones. Returns how many new
/// entries were read.
async fn round(
    outbox: &Outbox,
    mysql: &MySqlPool,
    consumer: &str,
    claim: bool,
) -> anyhow::Result<usize> {
    if claim {
        let stale = outbox.claim_stale(consumer, BATCH).await?;
        if !stale.is_empty() {
            tracing::info!(
                entries = stale.len(),
                "recorder: took over entries of a dead reader"
            );
            write(outbox, mysql, stale).await?;
        }
    }
    let entries = outbox.read(consumer, BATCH).await?;
    let n = entries.len();
    if n > 0 {
        write(outbox, mysql, entries).await?;
    }
    Ok(n)
}

async fn write(outbox: &Outbox, mysql: &MySqlPool, entries: Vec<Entry>) -> anyhow::Result<()> {
    let mut ids = Vec::with_capacity(entries.len());
    let mut rows = Vec::with_capacity(entries.len());
    for entry in entries {
        ids.push(entry.id);
        // A malformed entry was logged when read; it is acknowledged so it does not block.
        if let Some(row) = entry.row {
            rows.push(row);
        }
    }
    ledger::record(mysql, &rows).await?;
    outbox.done(&ids).await?;
    metrics::counter!("dropline_recorder_entries_total").increment(ids.len() as u64);
    Ok(())
}

/// One sale's stock check (see "The stock check"): MySQL's `sold` first, then Redis's, so a
/// confirmation in flight at the MySQL read has mostly reached Redis by the second; only when
/// MySQL is still ahead does the repair read the live orders and decide.
async fn check_stock(redis: &Redis, mysql: &MySqlPool, sale: SaleId) -> anyhow::Result<()> {
    let Some((_, mysql_sold)) = dropline_core::orders::ledger::sale_counts(mysql, sale).await?
    else {
        return Ok(());
    };
    let orders = Orders::new(redis, sale);
    let redis_sold: Option<i64> = redis
        .pool()
        .get(&orders.keys().sold)
        .await
        .with_context(|| format!("reading the sold count of sale {sale}"))?;
    if mysql_sold > redis_sold.unwrap_or(0) {
        repair::repair(&orders, mysql, "recorder").await?;
    }
    Ok(())
}
