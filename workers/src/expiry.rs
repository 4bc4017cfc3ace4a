//! The expiry worker: ends every live order whose deadline has passed, and runs the recorder
//! ([`crate::recorder`]) that copies every order arrow to MySQL.
//!
//! Two ways in, one handling:
//!
//! - **Keyspace events.** At start the worker adds `Ex` to `notify-keyspace-events` (keeping
//!   flags already set; a refusal is a warning) and subscribes to expired keys on every
//!   primary ([`ExpiredKeys`]). A hold timer (`hold:<order>`) that expires names its order,
//!   and that order alone is settled at once (as below); the rest of its sale waits for the
//!   sweeper.
//! - **The sweeper**, every `expiry.sweep_interval_seconds`, over each sale's `holds` index
//!   ([`Orders::due`], Redis time): events are fire-and-forget and come late or never (worker
//!   down, connection lost), so the sweeper alone guarantees every hold ends by its deadline
//!   plus one interval. Events only make it sooner.
//!
//! A due order is settled by state:
//!
//! - HELD → [`Orders::release`] to EXPIRED (the script checks the deadline by Redis time, so
//!   an early event changes nothing): the stock comes back exactly once.
//! - PAYING (no outcome by the payment deadline) → first a claim
//!   ([`Orders::claim_rereport`]), then the provider is asked ([`PaymentProvider::settle`]):
//!   with no decision yet it voids the order, which is then released to FAILED; with a
//!   decision, it is reported like the payment worker does ([`Reporter`]: payment row +
//!   `payment.completed`) and the confirm worker ends the order (PAID, or FAILED). So a
//!   payment the provider accepted is never failed with its stock sold again, and a lost
//!   `payment.requested` does not leave an order paying for ever.
//!
//! Such an order stays due until the confirm worker ends it, and a confirm worker that lags
//! must not be fed a copy of its completion every sweep: the claim is granted once per
//! window, the windows doubling per order from `expiry.rereport_backoff_seconds` up to
//! `expiry.rereport_backoff_max_seconds`, atomically in Redis (several expiry workers and the
//! timer events share it). A claim whose report failed is given back, so a dependency that
//! failed is tried again at the next sweep. An order whose completion the confirm worker
//! parked is never re-sent from here (logged, backing off the same way, and counted in
//! `dropline_expiry_parked_skipped_total`): an operator re-sends it with
//! `dropline payments resend <order>` ([`resend`]) once the cause is fixed.
//!
//! Every step repeats safely: several expiry workers may run (they share the sweep and the
//! events), and a crash anywhere is finished by the next sweep.

use std::sync::Arc;
use std::time::Duration;

use crate::keyevents::{Expired, ExpiredKeys, Notifications};
use anyhow::Context;
use dropline_core::Config;
use dropline_core::clients::deps::Deps;
use dropline_core::clients::redis::Redis;
use dropline_core::ids::{OrderId, SaleId};
use dropline_core::messages::PaymentOutcome;
use dropline_core::orders::rereport::{Backoff, Claim, Resent};
use dropline_core::orders::{Order, OrderState, Orders, Target, Transition};
use dropline_core::sale::keys::parse_hold_key;
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::payment::Reporter;
use crate::provider::{PaymentProvider, Settlement};
use crate::sales::Sales;

/// Due orders settled at once (each may wait for the provider).
const CONCURRENCY: usize = 32;
/// Due orders listed per call.
const DUE_BATCH: usize = 1_000;

/// What settling one due order did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// Ended (EXPIRED or FAILED): it leaves `holds`.
    Released,
    /// Its payment decision was reported; the confirm worker ends it.
    Reported,
    /// Nothing (not due after all, or already ended).
    Nothing,
}

/// Runs the event listener, the sweeper and the recorder until `shutdown` fires.
pub async fn run(
    config: &Config,
    deps: &Deps,
    provider: Arc<dyn PaymentProvider>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let redis = deps.redis()?.clone();
    let settler = Arc::new(Settler {
        redis: redis.clone(),
        provider,
        reporter: Reporter::new(deps)?,
        backoff: backoff(config),
    });
    let consumer = format!(
        "{}-{}-{}",
        hostname(),
        std::process::id(),
        &Uuid::now_v7().simple().to_string()[20..]
    );
    let interval = Duration::from_secs(config.expiry.sweep_interval_seconds.max(1));
    tracing::info!(sweep_interval = ?interval, consumer = %consumer, "expiry worker starting");

    let events = match ExpiredKeys::subscribe(&config.redis, config.expiry.keyspace_events).await {
        Ok((events, found)) => {
            for notifications in found {
                match notifications {
                    Notifications::Refused(reason) => tracing::warn!(
                        reason = %reason,
                        "Redis refused to turn on keyspace events; holds end by the sweeper alone (up to expiry.sweep_interval_seconds late)"
                    ),
                    Notifications::TurnedOn(value) => {
                        tracing::info!(notify_keyspace_events = %value, "turned on keyspace events for expired keys")
                    }
                    Notifications::AlreadyOn | Notifications::Untouched => {}
                }
            }
            Some(events)
        }
        Err(error) => {
            tracing::warn!(
                error = format!("{error:#}"),
                "no keyspace event subscription; holds end by the sweeper alone"
            );
            None
        }
    };

    let recorder = tokio::spawn(crate::recorder::run(
        redis.clone(),
        deps.mysql()?.clone(),
        consumer,
        Duration::from_secs(config.waitroom.admission_window_seconds),
        shutdown.clone(),
    ));
    let gauges = tokio::spawn(order_gauges_loop(
        redis.clone(),
        deps.mysql()?.clone(),
        interval,
        shutdown.clone(),
    ));
    let reports = tokio::spawn(report_loop(
        redis.clone(),
        deps.mysql()?.clone(),
        shutdown.clone(),
    ));
    let listener =
        events.map(|events| tokio::spawn(listen(events, Arc::clone(&settler), shutdown.clone())));
    sweep_loop(&settler, interval, &shutdown).await;
    if let Some(listener) = listener {
        let _ = listener.await;
    }
    let _ = gauges.await;
    let _ = reports.await;
    let _ = recorder.await;
    tracing::info!("expiry worker stopped");
    Ok(())
}

/// The re-report backoff of `config` (`expiry.rereport_backoff_*`).
pub fn backoff(config: &Config) -> Backoff {
    Backoff {
        first: Duration::from_secs(config.expiry.rereport_backoff_seconds.max(1)),
        max: Duration::from_secs(
            config
                .expiry
                .rereport_backoff_max_seconds
                .max(config.expiry.rereport_backoff_seconds),
        ),
    }
}

/// One pass of the sweeper over every sale it looks after; returns how many orders it ended
/// or reported. Public so that tests (and operators' tools) can sweep once.
pub async fn sweep_once(
    config: &Config,
    deps: &Deps,
    provider: Arc<dyn PaymentProvider>,
) -> anyhow::Result<usize> {
    let settler = Settler {
        redis: deps.redis()?.clone(),
        provider,
        reporter: Reporter::new(deps)?,
        backoff: backoff(config),
    };
    settler.sweep().await
}

/// `dropline payments resend <order>`: re-sends the completion of a PAYING order whose
/// `payment.completed` the confirm worker parked. Asks the provider as the sweeper does
/// ([`PaymentProvider::settle`]), reports the decision through the same [`Reporter`] (payment
/// row + `payment.completed`, broker-confirmed) and only then clears the parked mark, which
/// also restarts the order's re-report backoff. An order without the mark is settled the same
/// way once its payment deadline passed (an operator may push a stuck one); before it, its
/// payment may be in flight and nothing is done ([`Resent::InFlight`]).
pub async fn resend(
    config: &Config,
    deps: &Deps,
    provider: Arc<dyn PaymentProvider>,
    sale: SaleId,
    order: OrderId,
) -> anyhow::Result<Resent> {
    let orders = Orders::new(deps.redis()?, sale);
    let backoff = backoff(config);
    let Some(current) = orders.get(order).await? else {
        return Ok(Resent::NotInRedis);
    };
    let parked = orders.parked_at(order).await?;
    if current.state != OrderState::Paying {
        if parked.is_some() {
            orders.unmark_parked(order, backoff.first).await?;
        }
        return Ok(Resent::NotPaying(current.state));
    }
    if parked.is_none() && current.deadline_ms > chrono::Utc::now().timestamp_millis() {
        return Ok(Resent::InFlight {
            deadline_ms: current.deadline_ms,
        });
    }
    let settler = Settler {
        redis: deps.redis()?.clone(),
        provider,
        reporter: Reporter::new(deps)?,
        backoff,
    };
    let resent = match settler.ask_provider(&orders, &current, "operator").await? {
        Asked::Voided => Resent::Voided,
        Asked::Pending => Resent::InFlight {
            deadline_ms: current.deadline_ms,
        },
        Asked::Reported(outcome) => Resent::Reported {
            approved: outcome == PaymentOutcome::Approved,
        },
    };
    orders.unmark_parked(order, backoff.first).await?;
    tracing::info!(sale = %sale, order = %order, resent = ?resent, "parked completion re-sent by an operator");
    Ok(resent)
}

async fn sweep_loop(settler: &Settler, interval: Duration, shutdown: &CancellationToken) {
    dropline_core::shutdown::every(interval, shutdown, || async {
        match settler.sweep().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(orders = n, "sweeper settled due orders"),
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "sweep failed; next one in an interval"
            ),
        }
    })
    .await;
}

/// How often the post-sale report's figures are copied from Redis to MySQL.
pub const REPORT_COPY_EVERY: Duration = Duration::from_secs(5);
/// How often report rows past their retention are deleted.
const REPORT_PURGE_EVERY: u32 = 720;

/// The post-sale report's copy ([`dropline_audit::sale_report`]): every
/// [`REPORT_COPY_EVERY`], each current sale's live figures (Redis) are merged into MySQL,
/// the durable record; about once an hour, rows past the retention are deleted. Every expiry
/// replica copies (the merge is idempotent), so one of them down loses nothing.
async fn report_loop(redis: Redis, mysql: sqlx::MySqlPool, shutdown: CancellationToken) {
    use dropline_audit::sale_report;
    let (redis, mysql) = (&redis, &mysql);
    let rounds = std::sync::atomic::AtomicU32::new(0);
    let rounds = &rounds;
    dropline_core::shutdown::every(REPORT_COPY_EVERY, &shutdown, || async move {
        let round = rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sales = match sale_report::sales_to_copy(mysql).await {
            Ok(sales) => sales,
            Err(error) => {
                tracing::debug!(error = format!("{error:#}"), "report copy: no sales listed");
                return;
            }
        };
        for sale in sales {
            if let Err(error) = sale_report::copy(redis, mysql, sale).await {
                tracing::warn!(sale = %sale, error = format!("{error:#}"), "report copy failed; next one in an interval");
            }
        }
        if round.is_multiple_of(REPORT_PURGE_EVERY) {
            match sale_report::purge(mysql).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "deleted report rows past their retention"),
                Err(error) => tracing::warn!(error = format!("{error:#}"), "report purge failed"),
            }
        }
    })
    .await;
}

/// `dropline_orders{sale, state}`: every current sale's orders by state, as MySQL has them
/// (the recorder copies each arrow there within moments), refreshed every sweep interval. One
/// indexed `GROUP BY` per sale (`ix_orders_sale_status`); each expiry replica exports the same
/// figures, so a dashboard takes the max over replicas.
async fn order_gauges_loop(
    redis: Redis,
    mysql: sqlx::MySqlPool,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let (redis, mysql) = (&redis, &mysql);
    dropline_core::shutdown::every(interval, &shutdown, || async move {
        if let Err(error) = order_gauges_once(redis, mysql).await {
            tracing::debug!(
                error = format!("{error:#}"),
                "orders-by-state gauges not refreshed"
            );
        }
    })
    .await;
}

async fn order_gauges_once(redis: &Redis, mysql: &sqlx::MySqlPool) -> anyhow::Result<()> {
    for sale in Sales::new(redis).current().await? {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM orders WHERE sale_id = ? GROUP BY status")
                .bind(sale)
                .fetch_all(mysql)
                .await
                .with_context(|| format!("counting sale {sale}'s orders by state"))?;
        let label = sale.to_string();
        for state in OrderState::ALL {
            let count = rows
                .iter()
                .find(|(status, _)| status == state.as_str())
                .map_or(0, |(_, n)| *n);
            metrics::gauge!("dropline_orders", "sale" => label.clone(), "state" => state.as_str())
                .set(count as f64);
        }
    }
    Ok(())
}

async fn listen(mut events: ExpiredKeys, settler: Arc<Settler>, shutdown: CancellationToken) {
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    while let Some(event) = events.next(&shutdown).await {
        let key = match event {
            Expired::Key(key) => key,
            Expired::Missed => {
                // Events were lost: sweep now rather than at the next interval.
                let settler = Arc::clone(&settler);
                tokio::spawn(async move {
                    match settler.sweep().await {
                        Ok(n) => tracing::info!(orders = n, "swept after lost keyspace events"),
                        Err(error) => tracing::warn!(
                            error = format!("{error:#}"),
                            "sweep after lost keyspace events failed"
                        ),
                    }
                });
                continue;
            }
        };
        let Some((sale, order)) = parse_hold_key(&settler.redis, &key) else {
            continue; // Another key of this Redis expired.
        };
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
            break;
        };
        let settler = Arc::clone(&settler);
        tokio::spawn(async move {
            if let Err(error) = settler.on_timer(sale, order).await {
                tracing::warn!(sale = %sale, order = %order, error = format!("{error:#}"), "hold timer event not handled; the sweeper will");
            }
            drop(permit);
        });
    }
    // Let the handlers in flight finish before closing.
    let _ = limit.acquire_many(CONCURRENCY as u32).await;
    events.close().await;
}

struct Settler {
    redis: Redis,
    provider: Arc<dyn PaymentProvider>,
    reporter: Reporter,
    backoff: Backoff,
}

/// What the provider said about a PAYING order, and what was done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// No decision: voided there, the order released to FAILED (or it had ended meanwhile).
    Voided,
    /// The provider is still processing: asked again after the backoff.
    Pending,
    /// A decision, reported (`payment.completed` with this outcome).
    Reported(PaymentOutcome),
}

impl Settler {
    /// A hold timer expired: that order is settled (released if HELD and due, settled with
    /// the provider if PAYING and due), and nothing else: the sale's other due orders are the
    /// sweeper's.
    async fn on_timer(&self, sale: SaleId, order: OrderId) -> anyhow::Result<()> {
        let orders = Orders::new(&self.redis, sale);
        self.settle_due(&orders, order, "event").await?;
        Ok(())
    }

    async fn sweep(&self) -> anyhow::Result<usize> {
        let mut settled = 0;
        for sale in Sales::new(&self.redis).current().await? {
            settled += self
                .sweep_sale(sale)
                .await
                .with_context(|| format!("sweeping sale {sale}"))?;
        }
        Ok(settled)
    }

    async fn sweep_sale(&self, sale: SaleId) -> anyhow::Result<usize> {
        let orders = Orders::new(&self.redis, sale);
        let mut settled = 0;
        loop {
            let (due, _now) = orders.due(DUE_BATCH).await?;
            let full = due.len() >= DUE_BATCH;
            let results: Vec<anyhow::Result<Settled>> = futures_util::stream::iter(due)
                .map(|d| self.settle_due(&orders, d.order, "sweep"))
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            let mut released = 0;
            for result in results {
                match result {
                    Ok(Settled::Released) => released += 1,
                    Ok(Settled::Reported) => settled += 1,
                    Ok(Settled::Nothing) => {}
                    Err(error) => {
                        tracing::warn!(sale = %sale, error = format!("{error:#}"), "a due order was not settled; next sweep")
                    }
                }
            }
            settled += released;
            // Reported orders stay listed until the confirm worker ends them: go on only
            // while whole batches are being released.
            if !full || released == 0 {
                return Ok(settled);
            }
        }
    }

    /// Ends or reports one order, if it is due (by Redis time, checked by the scripts).
    async fn settle_due(
        &self,
        orders: &Orders,
        order: OrderId,
        via: &'static str,
    ) -> anyhow::Result<Settled> {
        let Some(current) = orders.get(order).await? else {
            tracing::warn!(sale = %orders.sale(), order = %order, "a due order has no hash; left for an operator");
            return Ok(Settled::Nothing);
        };
        match current.state {
            OrderState::Held => self.release(orders, order, Target::Expired, via).await,
            OrderState::Paying => self.settle_paying(orders, &current, via).await,
            _ => Ok(Settled::Nothing),
        }
    }

    /// A PAYING order past its payment deadline: claim it (backoff, parked mark, deadline by
    /// Redis time), then ask the provider. A claim not used is given back.
    async fn settle_paying(
        &self,
        orders: &Orders,
        current: &Order,
        via: &'static str,
    ) -> anyhow::Result<Settled> {
        let (sale, order) = (orders.sale(), current.id);
        let n = match orders.claim_rereport(order, self.backoff).await? {
            Claim::Granted { n, .. } => n,
            Claim::Wait { .. } => {
                metrics::counter!("dropline_expiry_rereports_deferred_total").increment(1);
                return Ok(Settled::Nothing);
            }
            Claim::Parked { until_ms, .. } => {
                metrics::counter!("dropline_expiry_parked_skipped_total").increment(1);
                tracing::warn!(
                    sale = %sale,
                    order = %order,
                    next_reminder = %dropline_core::sale::from_ms(until_ms),
                    "the confirm worker parked this order's payment.completed: not re-sent; once the cause is fixed run `dropline payments resend {order}`"
                );
                return Ok(Settled::Nothing);
            }
            Claim::NotPaying(_) | Claim::NotDue | Claim::NotFound => return Ok(Settled::Nothing),
        };
        match self.ask_provider(orders, current, via).await {
            Ok(Asked::Voided) => Ok(Settled::Released),
            Ok(Asked::Pending) => Ok(Settled::Nothing),
            Ok(Asked::Reported(_)) => Ok(Settled::Reported),
            Err(error) => {
                // Not reported: the next sweep may try again at once.
                if let Err(e) = orders.give_back_rereport(order, n).await {
                    tracing::debug!(sale = %sale, order = %order, error = format!("{e:#}"), "claim not given back; the next try waits its window");
                }
                Err(error)
            }
        }
    }

    /// Asks the provider about a PAYING order: no decision → voided there and FAILED here;
    /// a decision → reported like the payment worker does.
    async fn ask_provider(
        &self,
        orders: &Orders,
        current: &Order,
        via: &'static str,
    ) -> anyhow::Result<Asked> {
        let (sale, order) = (orders.sale(), current.id);
        let settlement = self
            .provider
            .settle(order)
            .await
            .with_context(|| format!("asking the provider about order {order}"))?;
        match settlement {
            Settlement::Voided => {
                tracing::info!(sale = %sale, order = %order, via, "no payment outcome by the deadline: voided at the provider");
                self.release(orders, order, Target::Failed, via).await?;
                Ok(Asked::Voided)
            }
            Settlement::Pending => {
                tracing::info!(sale = %sale, order = %order, via, "payment still processing at the provider: asked again later");
                Ok(Asked::Pending)
            }
            Settlement::Decided(decision) => {
                let outcome = self
                    .reporter
                    .report(&current.reference(), &decision)
                    .await?;
                tracing::info!(sale = %sale, order = %order, via, outcome = ?outcome, "payment decided but not confirmed by its deadline: reported again");
                metrics::counter!("dropline_expiry_reported_total").increment(1);
                Ok(Asked::Reported(outcome))
            }
        }
    }

    async fn release(
        &self,
        orders: &Orders,
        order: OrderId,
        target: Target,
        via: &'static str,
    ) -> anyhow::Result<Settled> {
        let transition = orders.release(order, target).await?;
        let applied = matches!(transition, Transition::Applied(_));
        if applied {
            metrics::counter!("dropline_expiry_released_total", "to" => target.as_str(), "via" => via)
                .increment(1);
            tracing::info!(sale = %orders.sale(), order = %order, to = target.as_str(), via, "order released");
        }
        Ok(if applied {
            Settled::Released
        } else {
            Settled::Nothing
        })
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned())
}
