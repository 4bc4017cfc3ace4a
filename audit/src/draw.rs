//! A draw sale's invariants (design/draw.md "Claims and backfill", DESIGN §6): one entry and at
//! most one win per account (MySQL's unique key on sale and user makes the first two
//! structural), the promoted set always ranks 1..M, free stock never below 0, every order of a
//! draw sale a win's, one order per win, within the win's `max_quantity`.
//!
//! MySQL learns of wins from the draw outbox (`dev`, drained by the draw leader each tick), so
//! an order may reach MySQL (through the order outbox) before its win does: without
//! `--settled`, an order without a recorded win while `dev` still has entries is pending, not a
//! breach. With `--settled`, the outbox must be empty and Redis's `promoted` equal MySQL's wins.

use anyhow::Context;
use fred::prelude::*;
use sqlx::MySqlPool;

use dropline_core::clients::redis::Redis;
use dropline_core::ids::{OrderId, SaleId, UserId};
use dropline_core::sale::keys::SaleKeys;

use crate::checks::Findings;
use crate::report::BreachCode;

/// Checks the draw invariants of `sale` when it is a draw sale (nothing otherwise).
pub(super) async fn check(
    mysql: &MySqlPool,
    redis: &Redis,
    sale: SaleId,
    armed: bool,
    f: &mut Findings,
) -> anyhow::Result<()> {
    let mode: Option<(String,)> = sqlx::query_as("SELECT mode FROM sales WHERE id = ?")
        .bind(sale)
        .fetch_optional(mysql)
        .await
        .context("reading the sale's mode")?;
    if !matches!(mode.as_ref().map(|(m,)| m.as_str()), Some("draw")) {
        return Ok(());
    }
    let keys = SaleKeys::new(redis, sale);
    // Redis first (MySQL follows it through the draw outbox).
    let mut in_flight = false;
    let mut redis_promoted = None;
    if armed {
        let (avail, counters, dev_len): (Option<i64>, Vec<Option<i64>>, u64) = {
            let pool = redis.pool();
            let avail: Option<i64> = pool.get(keys.avail()).await.context("reading avail")?;
            let counters: Vec<Option<i64>> = pool
                .hmget(keys.draw_counters(), vec!["promoted", "reserved"])
                .await
                .context("reading the draw's counters")?;
            let dev_len: u64 = pool
                .xlen(keys.draw_events())
                .await
                .context("reading the draw outbox's length")?;
            (avail, counters, dev_len)
        };
        let promoted = counters.first().copied().flatten().unwrap_or(0);
        let reserved = counters.get(1).copied().flatten().unwrap_or(0);
        let avail = avail.unwrap_or(0);
        if avail - reserved < 0 {
            f.breach(
                BreachCode::DrawFreeNegative,
                format!(
                    "avail {avail} - reserved {reserved} < 0: open wins were promoted beyond the stock"
                ),
                None,
                None,
            );
        }
        in_flight = dev_len > 0;
        redis_promoted = Some(promoted);
        if f.settled && in_flight {
            f.breach(
                BreachCode::DrawOutboxNotDrained,
                format!("{dev_len} draw outbox entr(y/ies) not recorded in MySQL yet"),
                None,
                None,
            );
        }
    }

    // The promoted set is ranks 1..M.
    let (won, top): (i64, Option<u32>) = sqlx::query_as(
        "SELECT COUNT(*), MAX(draw_rank) FROM draw_entries \
         WHERE sale_id = ? AND won_at IS NOT NULL",
    )
    .bind(sale)
    .fetch_one(mysql)
    .await
    .context("counting the draw's wins")?;
    let top = i64::from(top.unwrap_or(0));
    if won != top {
        f.breach(
            BreachCode::DrawRanksNotPrefix,
            format!("{won} win(s) recorded but the highest promoted rank is {top}: the winners are not ranks 1..M"),
            None,
            None,
        );
    }
    if let Some(promoted) = redis_promoted {
        if promoted < top {
            f.breach(
                BreachCode::DrawPromotedMismatch,
                format!("Redis has promoted {promoted} ranks, MySQL recorded a win at rank {top}"),
                None,
                None,
            );
        } else if f.settled && promoted != top {
            f.breach(
                BreachCode::DrawPromotedMismatch,
                format!("Redis has promoted {promoted} ranks, MySQL recorded {top}"),
                None,
                None,
            );
        }
    }

    // Every order is a win's, one per win, within its max_quantity.
    let orders: Vec<(OrderId, UserId, i32, Option<u32>)> = sqlx::query_as(
        "SELECT o.id, o.user_id, o.quantity, e.max_quantity FROM orders o \
         LEFT JOIN draw_entries e ON e.sale_id = o.sale_id AND e.user_id = o.user_id \
           AND e.won_at IS NOT NULL \
         WHERE o.sale_id = ? ORDER BY o.user_id, o.created_at",
    )
    .bind(sale)
    .fetch_all(mysql)
    .await
    .context("reading the draw's orders")?;
    let mut last_user = None;
    for (order, user, quantity, max_quantity) in orders {
        match max_quantity {
            None if in_flight && !f.settled => f.pending(
                order,
                "an order whose win is still in the draw outbox (not in MySQL yet)".to_owned(),
            ),
            None => f.breach(
                BreachCode::OrderWithoutWin,
                format!("order {order} of a draw sale belongs to no recorded win"),
                Some(order),
                Some(user),
            ),
            Some(max) if i64::from(quantity) > i64::from(max) => f.breach(
                BreachCode::OrderOverWin,
                format!("order {order} is for {quantity} unit(s), its win allows {max}"),
                Some(order),
                Some(user),
            ),
            Some(_) => {}
        }
        if last_user == Some(user) {
            f.breach(
                BreachCode::WinOrdersExceeded,
                format!("user {user} has more than one order in this draw sale"),
                Some(order),
                Some(user),
            );
        }
        last_user = Some(user);
    }
    Ok(())
}
