//! `dropline sale rearm <sale>`: rebuild a sale's Redis state from MySQL after Redis lost it.
//!
//! MySQL is the record of what must last; Redis held what was in flight. So:
//! - **paid** orders stay paid: their hashes come back (a late message then finds the end state
//!   and changes nothing), their units count as sold and toward their buyers' limits;
//! - **paying** orders stay paying, with their payment deadline, timer and `holds` entry: the
//!   payment may have been charged, and the sweeper settles it at the deadline with the provider
//!   (approved → paid, nothing charged → failed and the stock back);
//! - **held** orders were only holds: they are recorded `expired` in MySQL and their stock is
//!   available again (their buyers queue again), and their hashes come back `expired`;
//! - **ended** orders (expired, cancelled, failed) get their hashes back as MySQL has them,
//!   without units or timers, so that `sale audit` finds every MySQL order in Redis (before
//!   #21 they were left out, and a sale repaired after a Redis failover never audited clean);
//! - the waiting line and admissions are not rebuilt: buyers join again;
//! - a draw sale's entries come back into the waiting room's index from `draw_entries`, with
//!   their ranks once drawn (design/draw.md; the draw leader goes on from there);
//! - the door's settings and the access codes come back from MySQL (design/door.md); which
//!   buyers had spent a code's uses lived only in Redis, so the codes come back unspent (a
//!   buyer who used one joins again with it).
//!
//! The counters are written last, in one `sale_arm.lua` call (`avail = stock_total - held -
//! sold`), so until then the sale looks unarmed and takes no order. A paying order the recorder
//! had not written before Redis was lost is not known here; if its payment is approved, the
//! confirm worker's stock guard in MySQL decides (it refuses and refunds rather than oversell).
//!
//! By default a sale still armed in Redis is refused (rearming a live sale would drop its holds
//! and line); `force` wipes the sale's keys first.

use std::process::ExitCode;

use anyhow::Context;
use dropline_core::Config;
use dropline_core::clients::deps::{Deps, Needs};
use dropline_core::ids::SaleId;
use fred::interfaces::{HashesInterface, KeysInterface, SortedSetsInterface};
use fred::types::Expiration;
use fred::types::scan::Scanner;
use futures_util::TryStreamExt;
use sqlx::MySqlPool;

use dropline_core::clients::redis::Redis;
use dropline_core::orders::ledger;
use dropline_core::orders::{OrderState, Orders};
use dropline_core::sale::keys::SaleKeys;
use dropline_core::sale::{self, SaleConfig};

/// What a rearm did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub paid_orders: u64,
    pub paid_units: i64,
    pub paying_orders: u64,
    pub paying_units: i64,
    /// Held orders recorded expired (their stock is available again).
    pub expired_holds: u64,
    pub available: i64,
    /// Keys deleted first (with `force`).
    pub wiped_keys: u64,
    /// Access codes written back.
    pub codes: u64,
    /// A draw sale's entries written back into the index (ranked ones also into `rk`).
    pub entries: u64,
    /// A draw sale's wins written back (`win`, and the open or ordered ones' indexes).
    pub wins: u64,
}

/// Rebuilds `sale` in Redis from MySQL (see the module docs).
pub async fn rearm(
    mysql: &MySqlPool,
    redis: &Redis,
    sale: SaleId,
    force: bool,
) -> anyhow::Result<Report> {
    let config = SaleConfig::load(mysql, sale)
        .await?
        .with_context(|| format!("no sale {sale} in MySQL"))?;
    let door = sale::Door::load(mysql, sale)
        .await?
        .with_context(|| format!("no sale {sale} in MySQL"))?;
    // A draw sale's settings go back into cfg, its entries into the index (restore_entries).
    let draw = sale::draw::DrawSettings::load(mysql, sale).await?;
    let mut report = Report::default();
    let cfg_key = dropline_core::sale::keys::SaleKeys::new(redis, sale).cfg();
    let armed: i64 = redis
        .pool()
        .exists(&cfg_key)
        .await
        .context("checking whether the sale is armed")?;
    if armed > 0 {
        anyhow::ensure!(
            force,
            "sale {sale} is still armed in Redis; rearm rebuilds a sale Redis lost (pass --force \
             to wipe its live state, holds and line included, and rebuild it)"
        );
    }
    if force {
        report.wiped_keys = wipe(redis, sale).await?;
    }

    let expired = sqlx::query(
        "UPDATE orders SET status = 'expired', updated_at = UTC_TIMESTAMP(3) \
         WHERE sale_id = ? AND status = 'held'",
    )
    .bind(sale)
    .execute(mysql)
    .await
    .context("recording the lost holds expired")?;
    report.expired_holds = expired.rows_affected();

    let rows = ledger::of_sale(mysql, sale).await?;
    let orders = Orders::new(redis, sale);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let pool = redis.pool();
    let mut ended = 0u64;
    // Every order gets its hash back, the ended ones (expired, cancelled, failed, and the lost
    // holds just recorded expired) too, so that `sale audit` finds each MySQL order in Redis in
    // the same state; only paid and paying ones count units and keep timers.
    for row in &rows {
        let _: i64 = pool
            .hset(orders.order_key(row.id), row.hash_fields())
            .await
            .with_context(|| format!("restoring order {}", row.id))?;
        if !matches!(row.state, OrderState::Paid | OrderState::Paying) {
            ended += 1;
            continue;
        }
        let _: i64 = pool
            .incr_by(orders.user_key(row.user), row.quantity)
            .await
            .with_context(|| format!("restoring the units of user {}", row.user))?;
        if row.state == OrderState::Paying {
            let deadline = row.deadline.timestamp_millis();
            let _: i64 = pool
                .zadd(
                    &orders.keys().holds,
                    None,
                    None,
                    false,
                    false,
                    (deadline as f64, row.id.to_string()),
                )
                .await
                .with_context(|| format!("restoring the deadline of order {}", row.id))?;
            let _: () = pool
                .set(
                    orders.hold_key(row.id),
                    "1",
                    Some(Expiration::PX((deadline - now_ms).max(1))),
                    None,
                    false,
                )
                .await
                .with_context(|| format!("restoring the timer of order {}", row.id))?;
            report.paying_orders += 1;
            report.paying_units += row.quantity;
        } else {
            report.paid_orders += 1;
            report.paid_units += row.quantity;
        }
    }

    report.codes = restore_codes(mysql, redis, sale).await?;
    if draw.is_some() {
        report.entries = restore_entries(mysql, redis, sale).await?;
        report.wins = restore_wins(mysql, redis, sale, &rows).await?;
    }

    let (_, sold_count) = ledger::sale_counts(mysql, sale)
        .await?
        .with_context(|| format!("sale {sale} vanished"))?;
    if sold_count != report.paid_units {
        tracing::error!(%sale, sales_sold = sold_count, paid_rows = report.paid_units, "sales.sold disagrees with the paid orders; rearming with the larger");
    }
    let sold = sold_count.max(report.paid_units);
    anyhow::ensure!(
        sold + report.paying_units <= config.stock_total,
        "sale {sale}: {sold} sold + {} paying exceed the stock of {}",
        report.paying_units,
        config.stock_total
    );
    let armed = sale::arm_full(
        redis,
        sale,
        &config,
        &door,
        draw.as_ref(),
        report.paying_units,
        sold,
    )
    .await?;
    anyhow::ensure!(
        armed,
        "sale {sale} was armed by someone else while rearming; run it again with --force"
    );
    report.available = config.stock_total - sold - report.paying_units;
    tracing::info!(%sale, ?report, ended_orders = ended, "sale rearmed from MySQL");
    Ok(report)
}

/// Writes a draw sale's entries from MySQL back into its `ent` index, and, once drawn, the
/// ranking into `rk` with `drw.ranked` (as the draw leader writes them); returns how many
/// entries.
async fn restore_entries(mysql: &MySqlPool, redis: &Redis, sale: SaleId) -> anyhow::Result<u64> {
    let keys = dropline_core::sale::keys::SaleKeys::new(redis, sale);
    let values = dropline_core::sale::entries::index_values(mysql, sale).await?;
    for chunk in values.chunks(1_000) {
        let pairs: Vec<(fred::types::Value, fred::types::Value)> = chunk
            .iter()
            .map(|(user, value)| {
                (
                    fred::types::Value::from(&user.as_bytes()[..]),
                    fred::types::Value::from(value.as_str()),
                )
            })
            .collect();
        let _: i64 = redis
            .pool()
            .hset(keys.entries(), pairs)
            .await
            .context("restoring draw entries")?;
    }
    let mut after = 0;
    loop {
        let ranked = dropline_core::sale::entries::ranked(mysql, sale, after, 1_000).await?;
        let Some(last) = ranked.last() else {
            break;
        };
        after = last.rank;
        let pairs: Vec<(fred::types::Value, fred::types::Value)> = ranked
            .iter()
            .map(|r| {
                (
                    fred::types::Value::from(r.rank.to_string()),
                    fred::types::Value::from(&r.user.as_bytes()[..]),
                )
            })
            .collect();
        let _: i64 = redis
            .pool()
            .hset(keys.ranks(), pairs)
            .await
            .context("restoring the draw's ranking")?;
    }
    if after > 0 {
        let _: i64 = redis
            .pool()
            .hset(keys.draw_counters(), ("ranked", after.to_string()))
            .await
            .context("restoring the draw's counters")?;
    }
    Ok(values.len() as u64)
}

/// Writes a draw sale's wins from MySQL back (`win`, `wdl`, `wod`, `adm`, and `drw`'s
/// `promoted` and `reserved`), as `lua/draw_tick.lua` keeps them: a settled win as its outcome;
/// a claiming win with an order (MySQL's orders of the sale, `rows`) as ordered, for the next
/// tick to settle from the order's state; a claiming win without one as open until its claim
/// deadline (a passed deadline lapses at the next tick). Wins Redis handed out but the leader
/// had not recorded yet are promoted again (same ranks, new deadlines). Returns how many wins.
async fn restore_wins(
    mysql: &MySqlPool,
    redis: &Redis,
    sale: SaleId,
    rows: &[ledger::OrderRow],
) -> anyhow::Result<u64> {
    use dropline_core::sale::entries::{self, Outcome};
    let keys = SaleKeys::new(redis, sale);
    // The win's one order: the latest of the user's orders in this sale.
    let mut orders: std::collections::HashMap<dropline_core::ids::UserId, &ledger::OrderRow> =
        std::collections::HashMap::new();
    for row in rows {
        let newer = orders
            .get(&row.user)
            .is_none_or(|seen| seen.created <= row.created);
        if newer {
            orders.insert(row.user, row);
        }
    }
    let pool = redis.pool();
    let (mut after, mut count, mut reserved) = (0u32, 0u64, 0u64);
    loop {
        let wins = entries::wins(mysql, sale, after, 1_000).await?;
        let Some(last) = wins.last() else {
            break;
        };
        after = last.rank;
        for win in &wins {
            let user = fred::types::Value::from(&win.user.as_bytes()[..]);
            let deadline = win.claim_deadline.timestamp_millis();
            let value = match (win.outcome, orders.get(&win.user)) {
                (Outcome::Claimed, _) => "claimed".to_owned(),
                (Outcome::Forfeited, _) => "forfeited".to_owned(),
                (Outcome::Claiming, Some(order)) => {
                    let _: i64 = pool
                        .hset(keys.ordered_wins(), (user.clone(), order.id.to_string()))
                        .await
                        .context("restoring an ordered win")?;
                    format!("ord:{}:{deadline}:{}", order.id, win.max_quantity)
                }
                (Outcome::Claiming, None) => {
                    // Its deadline among the open wins, and its admission (the pass's).
                    for key in [keys.open_wins(), keys.admitted()] {
                        let _: i64 = pool
                            .zadd(
                                key,
                                None,
                                None,
                                false,
                                false,
                                (deadline as f64, user.clone()),
                            )
                            .await
                            .context("restoring an open win")?;
                    }
                    reserved += u64::from(win.max_quantity);
                    format!("{deadline}:{}", win.max_quantity)
                }
            };
            let _: i64 = pool
                .hset(keys.wins(), (user, value))
                .await
                .context("restoring a win")?;
            count += 1;
        }
    }
    let _: i64 = pool
        .hset(
            keys.draw_counters(),
            vec![
                ("promoted", after.to_string()),
                ("reserved", reserved.to_string()),
            ],
        )
        .await
        .context("restoring the draw's promotions")?;
    Ok(count)
}

/// Writes the sale's access codes from MySQL back into its Redis `codes` hash (before the
/// counters, so the sale is whole when it looks armed); returns how many.
async fn restore_codes(mysql: &MySqlPool, redis: &Redis, sale: SaleId) -> anyhow::Result<u64> {
    let rows: Vec<(Vec<u8>, String, i32)> =
        sqlx::query_as("SELECT code_hash, group_name, uses FROM access_codes WHERE sale_id = ?")
            .bind(sale)
            .fetch_all(mysql)
            .await
            .with_context(|| format!("reading the access codes of sale {sale}"))?;
    let key = SaleKeys::new(redis, sale).codes();
    for chunk in rows.chunks(1_000) {
        let fields: std::collections::VecDeque<(fred::types::Key, String)> = chunk
            .iter()
            .map(|(hash, group, uses)| {
                (fred::types::Key::from(&hash[..]), format!("{group}:{uses}"))
            })
            .collect();
        let _: i64 = redis
            .pool()
            .hset(&key, fields)
            .await
            .with_context(|| format!("restoring the access codes of sale {sale}"))?;
    }
    Ok(rows.len() as u64)
}

/// Deletes every key of the sale's slot (`<prefix>:{s:<sale>}:*`); returns how many.
async fn wipe(redis: &Redis, sale: SaleId) -> anyhow::Result<u64> {
    let pattern = format!("{}:{{s:{sale}}}:*", redis.prefix());
    let mut deleted = 0u64;
    let mut pages = redis.pool().next().scan(pattern, Some(1000), None);
    while let Some(mut page) = pages.try_next().await.context("scanning the sale's keys")? {
        if let Some(keys) = page.take_results()
            && !keys.is_empty()
        {
            let n: i64 = redis
                .pool()
                .del(keys)
                .await
                .context("deleting the sale's keys")?;
            deleted += n.max(0) as u64;
        }
    }
    Ok(deleted)
}

/// `dropline sale rearm <sale-id> [--force]`: exit 0 rearmed (a line says what came back), 2
/// for a malformed sale id; an error when the sale cannot be rearmed.
pub async fn rearm_command(
    config: &Config,
    sale_id: &str,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let Ok(sale) = SaleId::parse_str(sale_id.trim()) else {
        eprintln!("dropline: `{sale_id}` is not a sale id (a UUID)");
        return Ok(ExitCode::from(2));
    };
    let deps = Deps::connect(
        config,
        Needs {
            mysql: true,
            redis: true,
            amqp: false,
        },
    )
    .await
    .context("connecting to dependencies")?;
    let done = rearm(deps.mysql()?, deps.redis()?, sale, force).await;
    deps.close().await;
    let report = done?;
    println!(
        "sale {sale} rearmed: {} available, {} sold in {} paid order(s), {} held by {} \
         paying order(s), {} lost hold(s) recorded expired, {} access code(s), {} key(s) wiped",
        report.available,
        report.paid_units,
        report.paid_orders,
        report.paying_units,
        report.paying_orders,
        report.expired_holds,
        report.codes,
        report.wiped_keys
    );
    Ok(ExitCode::SUCCESS)
}
