//! Redis's stock counters set right from MySQL's `sales.sold` after lost writes (issue #21,
//! README "Lost Redis writes").
//!
//! A Redis failover can lose acknowledged writes: an order's whole life (reserve to PAID) may
//! be gone from Redis while MySQL has it booked as paid. Its units are then back in Redis's
//! `avail`, so buyers reserve and pay for units MySQL has sold; the confirm worker refuses to
//! book them (`WouldOversell`) and refunds, and the sale never sells out in Redis. [`repair`]
//! moves those units from `avail` to `sold` (`lua/stock_repair.lua`, whose header is the
//! contract): MySQL's `sales.sold` is the truth for paid units, and the live orders Redis
//! knows (HELD, PAYING) keep their units in `held`.
//!
//! The reads, in this order, make the decision safe whatever runs meanwhile:
//!
//! 1. the live order ids in `holds` (Redis);
//! 2. in one MySQL snapshot (a REPEATABLE READ transaction): the sale's `stock_total` and
//!    `sold`, and which of those orders MySQL has paid (a live order MySQL paid is a
//!    confirmation in flight, already counted in `held`);
//! 3. the script, which counts every live order the caller did not read as paid (so a
//!    reserve in between never makes it take more) and moves `min(behind, avail)` where
//!    `behind = MySQL sold - Redis sold - live orders not known unpaid`.
//!
//! It is idempotent (computed from the counters as they are, not applied as a delta): two
//! callers at once move the units once. A stale MySQL read only moves less. Called by the
//! confirm worker after it refused an oversell, and by the recorder's periodic stock check.

use anyhow::Context;
use fred::interfaces::{KeysInterface, SetsInterface, SortedSetsInterface};
use fred::types::Value;
use sqlx::{MySql, MySqlPool};

use super::{Orders, Reply};
use crate::ids::OrderId;
use crate::lua::scripts::STOCK_REPAIR;

/// Most order ids one MySQL lookup carries.
const CHUNK: usize = 1000;

/// What [`repair`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// `moved` units went from `avail` to `sold`.
    Repaired { moved: i64, counters: Counters },
    /// Redis is not behind MySQL: nothing changed.
    InStep(Counters),
    /// Redis is `behind` MySQL, but nothing is available to take: the units are in live
    /// orders MySQL cannot sell (they will fail or expire); nothing changed.
    HeldUp { behind: i64, counters: Counters },
    /// Redis's `cfg.stock_total` differs from MySQL's: nothing changed (an operator's
    /// `dropline sale rearm`). `redis`: Redis's avail + held + sold.
    StockMismatch {
        redis: i64,
        mysql: i64,
        counters: Counters,
    },
    /// The sale is not armed in Redis, or has no MySQL row: nothing changed.
    NotFound,
}

/// Redis's stock counters after a [`repair`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub avail: i64,
    pub held: i64,
    pub sold: i64,
}

impl Repair {
    /// The units moved from `avail` to `sold` (0 unless [`Repair::Repaired`]).
    pub fn moved(&self) -> i64 {
        match self {
            Self::Repaired { moved, .. } => *moved,
            _ => 0,
        }
    }

    /// The label of `dropline_stock_repairs_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Repaired { .. } => "repaired",
            Self::InStep(_) => "in_step",
            Self::HeldUp { .. } => "held_up",
            Self::StockMismatch { .. } => "stock_mismatch",
            Self::NotFound => "not_found",
        }
    }
}

/// Sets the sale's Redis stock counters right from MySQL (see the module docs). `caller`
/// names who asked, for the log and the metric.
pub async fn repair(orders: &Orders, mysql: &MySqlPool, caller: &str) -> anyhow::Result<Repair> {
    let sale = orders.sale();
    let members: Vec<String> = orders
        .redis
        .pool()
        .zrange(&orders.keys.holds, 0, -1, None, false, None, false)
        .await
        .with_context(|| format!("reading the live orders of sale {sale}"))?;
    let live: Vec<OrderId> = members
        .iter()
        .filter_map(|m| OrderId::parse_str(m).ok())
        .collect();
    let Some(snapshot) = mysql_snapshot(mysql, orders, &live).await? else {
        return Ok(Repair::NotFound);
    };
    let mut args = Vec::with_capacity(3 + 2 * live.len());
    args.push(Value::from(orders.layout.order_prefix()));
    args.push(Value::from(snapshot.stock_total));
    args.push(Value::from(snapshot.sold));
    for order in &live {
        args.push(Value::from(order.to_string()));
        args.push(Value::from(if snapshot.paid.contains(order) {
            "1"
        } else {
            "0"
        }));
    }
    let k = &orders.keys;
    let keys = vec![
        k.cfg.clone(),
        k.avail.clone(),
        k.held.clone(),
        k.sold.clone(),
        k.holds.clone(),
    ];
    let reply: Value = STOCK_REPAIR
        .run(&orders.redis, keys, args)
        .await
        .with_context(|| format!("repairing the stock counters of sale {sale}"))?;
    let reply = Reply::new(reply, "stock_repair")?;
    reply.expect_len(6)?;
    let counters = Counters {
        avail: reply.int(2)?,
        held: reply.int(3)?,
        sold: reply.int(4)?,
    };
    let behind = reply.int(5)?;
    let outcome = match reply.text(0)?.as_str() {
        "repaired" => Repair::Repaired {
            moved: reply.int(1)?,
            counters,
        },
        "in_step" => Repair::InStep(counters),
        "held_up" => Repair::HeldUp { behind, counters },
        "stock_mismatch" => Repair::StockMismatch {
            redis: counters.avail + counters.held + counters.sold,
            mysql: snapshot.stock_total,
            counters,
        },
        "not_found" => Repair::NotFound,
        other => anyhow::bail!("stock_repair: unknown result `{other}`"),
    };
    metrics::counter!("dropline_stock_repairs_total", "caller" => caller.to_owned(), "result" => outcome.label())
        .increment(1);
    match outcome {
        Repair::Repaired { moved, counters } => tracing::warn!(
            sale = %sale,
            caller,
            moved,
            behind,
            mysql_sold = snapshot.sold,
            avail = counters.avail,
            held = counters.held,
            sold = counters.sold,
            "Redis counted units MySQL has sold as available (lost writes?): moved them to sold"
        ),
        Repair::HeldUp { behind, counters } => tracing::info!(
            sale = %sale,
            caller,
            behind,
            mysql_sold = snapshot.sold,
            held = counters.held,
            sold = counters.sold,
            "Redis is behind MySQL's sold count, nothing available to take: the units are in live orders"
        ),
        Repair::StockMismatch { redis, mysql, .. } => tracing::error!(
            sale = %sale,
            caller,
            redis_stock = redis,
            mysql_stock = mysql,
            "the sale's stock differs between Redis and MySQL: not repaired (`dropline sale rearm`)"
        ),
        Repair::InStep(_) | Repair::NotFound => {
            tracing::debug!(sale = %sale, caller, result = outcome.label(), "stock check")
        }
    }
    if outcome.moved() > 0 {
        end_spent_admissions(orders, mysql).await?;
    }
    Ok(outcome)
}

/// Ends the admissions (`adm`) of buyers who have paid for `per_user_limit` units in MySQL
/// and returns how many. The lost writes that made Redis forget a paid order also took back
/// its PAID arrow's `ZREM adm`: the buyer, done and gone, stays admitted until the admission's
/// deadline (minutes), and the admitter's stock rule (`stock_room` in `lua/lib/prelude.lua`:
/// every admitted buyer may still claim `per_user_limit` units) keeps units for each such
/// buyer, so the line stops with units left (the forced-loss chaos runs). Run after a [`repair`] that moved units (the sign of those lost writes).
/// Removing a member is what `confirm.lua` does; a buyer MySQL has at the limit can buy nothing
/// more, so it is safe whatever runs meanwhile.
pub async fn end_spent_admissions(orders: &Orders, mysql: &MySqlPool) -> anyhow::Result<usize> {
    let sale = orders.sale();
    let members: Vec<Value> = orders
        .redis
        .pool()
        .zrange(&orders.keys.adm, 0, -1, None, false, None, false)
        .await
        .with_context(|| format!("reading the admitted buyers of sale {sale}"))?;
    let users: Vec<crate::ids::UserId> = members
        .iter()
        .filter_map(|m| {
            m.as_bytes()
                .and_then(|b| crate::ids::UserId::from_slice(b).ok())
        })
        .collect();
    if users.is_empty() {
        return Ok(0);
    }
    let limit: Option<(i32,)> = sqlx::query_as("SELECT per_user_limit FROM sales WHERE id = ?")
        .bind(sale)
        .fetch_optional(mysql)
        .await
        .with_context(|| format!("reading the per-user limit of sale {sale}"))?;
    let Some((limit,)) = limit else {
        return Ok(0);
    };
    let mut spent = Vec::new();
    for chunk in users.chunks(CHUNK) {
        let mut q = sqlx::QueryBuilder::<MySql>::new(
            "SELECT user_id FROM orders WHERE status = 'paid' AND sale_id = ",
        );
        q.push_bind(sale);
        q.push(" AND user_id IN (");
        let mut list = q.separated(", ");
        for user in chunk {
            list.push_bind(*user);
        }
        q.push(") GROUP BY user_id HAVING SUM(quantity) >= ");
        q.push_bind(limit);
        let found: Vec<(crate::ids::UserId,)> = q
            .build_query_as()
            .fetch_all(mysql)
            .await
            .with_context(|| format!("reading the buyers of sale {sale} at their limit"))?;
        spent.extend(found.into_iter().map(|(user,)| user));
    }
    if spent.is_empty() {
        return Ok(0);
    }
    let removed: i64 = orders
        .redis
        .pool()
        .zrem(
            &orders.keys.adm,
            spent
                .iter()
                .map(|u| Value::from(&u.as_bytes()[..]))
                .collect::<Vec<_>>(),
        )
        .await
        .with_context(|| format!("ending spent admissions of sale {sale}"))?;
    if removed > 0 {
        // For a spread line's copies only (the waiting page): the admissions are ended anyway.
        if let Err(error) = note_admission_changes(orders, &spent).await {
            tracing::warn!(sale = %sale, error = format!("{error:#}"), "noting ended admissions for the line's shards failed");
        }
        metrics::counter!("dropline_stock_repair_admissions_ended_total")
            .increment(u64::try_from(removed).unwrap_or(0));
        tracing::warn!(
            sale = %sale,
            removed,
            "admissions of buyers MySQL has at their limit ended (their PAID arrows were lost)"
        );
    }
    Ok(usize::try_from(removed).unwrap_or(0))
}

/// Notes `users` in `admch` as `adm_changed` in `lua/lib/prelude.lua` does, for a sale whose
/// line is spread over shards (only such a sale has an `admch`): the admitter's leader then
/// carries their ended admissions into the shards' copies. Two commands, not one script: a
/// note of a buyer whose admission did not change only makes the leader read it again.
async fn note_admission_changes(
    orders: &Orders,
    users: &[crate::ids::UserId],
) -> anyhow::Result<()> {
    let pool = orders.redis.pool();
    let spread: bool = pool
        .exists(&orders.keys.admch)
        .await
        .context("is the sale's line spread")?;
    if spread {
        let members: Vec<Value> = users
            .iter()
            .map(|u| Value::from(&u.as_bytes()[..]))
            .collect();
        let _: i64 = pool
            .sadd(&orders.keys.admch, members)
            .await
            .context("noting the ended admissions for the line's shards")?;
    }
    Ok(())
}

/// What MySQL says, in one snapshot.
struct Snapshot {
    stock_total: i64,
    sold: i64,
    /// The orders of `live` that MySQL has paid.
    paid: std::collections::HashSet<OrderId>,
}

/// `stock_total`, `sold` and the paid orders among `live`, in one REPEATABLE READ snapshot;
/// `None` when the sale has no row.
async fn mysql_snapshot(
    mysql: &MySqlPool,
    orders: &Orders,
    live: &[OrderId],
) -> anyhow::Result<Option<Snapshot>> {
    let sale = orders.sale();
    let mut conn = mysql.acquire().await.context("MySQL connection")?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *conn)
        .await
        .context("setting the isolation level")?;
    let mut tx = sqlx::Connection::begin(&mut *conn)
        .await
        .context("starting the stock snapshot")?;
    let counts: Option<(i32, i32)> =
        sqlx::query_as("SELECT stock_total, sold FROM sales WHERE id = ?")
            .bind(sale)
            .fetch_optional(&mut *tx)
            .await
            .with_context(|| format!("reading the counts of sale {sale}"))?;
    let Some((stock_total, sold)) = counts else {
        return Ok(None);
    };
    let mut paid = std::collections::HashSet::new();
    for chunk in live.chunks(CHUNK) {
        let mut q = sqlx::QueryBuilder::<MySql>::new("SELECT id FROM orders WHERE sale_id = ");
        q.push_bind(sale);
        q.push(" AND status = 'paid' AND id IN (");
        let mut list = q.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        q.push(")");
        let found: Vec<(OrderId,)> = q
            .build_query_as()
            .fetch_all(&mut *tx)
            .await
            .with_context(|| format!("reading the paid orders of sale {sale}"))?;
        paid.extend(found.into_iter().map(|(id,)| id));
    }
    tx.commit().await.context("ending the stock snapshot")?;
    Ok(Some(Snapshot {
        stock_total: i64::from(stock_total),
        sold: i64::from(sold),
        paid,
    }))
}
