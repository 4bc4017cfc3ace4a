//! Holds Redis forgot: MySQL rows left HELD after a failover lost the hold's whole life, ended
//! as expired (issue #21, README "Lost Redis writes"). Part of the recorder.
//!
//! A hold exists in Redis first (`reserve.lua`) and reaches MySQL through the outbox. When a
//! Redis failover loses the hold after MySQL recorded it, nothing in Redis remains to end it:
//! no timer fires, the sweeper's deadline index does not list it, and no outbox entry will
//! carry its end. Its units went back to `avail` with the loss (so the stock is right), but
//! MySQL would show the order HELD for ever (the buyer's order page, `sale audit --settled`,
//! the report's funnel) and the buyer's admission would hold a place among the active buyers
//! until it timed out.
//!
//! So every [`CHECK_EVERY`] the recorder reads, per armed sale, the HELD rows whose deadline
//! passed more than [`GRACE`] ago (an expiry reaches MySQL within seconds: the timer event or
//! the sweep, then the outbox), and asks Redis about each (`lua/forgotten_hold.lua`): an order
//! Redis still has is left to its own arrows; a forgotten one is marked expired in MySQL (only
//! if still HELD, so a repeat or a second recorder changes nothing) and its buyer's admission
//! is ended unless they hold something else.
//!
//! Not handled here: a PAYING row Redis forgot (money may be moving: the payment worker's
//! deadline, the provider's webhook and `dropline payments reconcile` settle it).

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use dropline_core::clients::redis::Redis;
use dropline_core::ids::{OrderId, SaleId, UserId};
use dropline_core::lua::Script;
use dropline_core::orders::Orders;
use fred::types::Value;
use sqlx::MySqlPool;

/// How often each armed sale is checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How long past its deadline a HELD row must be before it is looked at.
pub const GRACE: Duration = Duration::from_secs(30);
/// Most rows one check reads per sale (the oldest first; the next check takes the rest).
const BATCH: i64 = 200;

/// `lua/forgotten_hold.lua`: whether Redis knows an order, ending a forgotten one's admission.
pub static FORGOTTEN_HOLD: Script = dropline_core::lua_script!("forgotten_hold");

/// What one check of a sale found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Found {
    /// HELD rows past the grace that Redis still knows (left alone).
    pub known: u64,
    /// Rows Redis forgot that this check marked expired in MySQL.
    pub expired: u64,
    /// Admissions ended with them.
    pub admissions_ended: u64,
}

/// One sale's check (see the module docs). The caller passes only armed sales.
pub async fn check(redis: &Redis, mysql: &MySqlPool, sale: SaleId) -> anyhow::Result<Found> {
    let cutoff = Utc::now()
        - chrono::Duration::from_std(GRACE).context("the forgotten-hold grace as a duration")?;
    let rows: Vec<(OrderId, UserId)> = sqlx::query_as(
        "SELECT id, user_id FROM orders \
         WHERE sale_id = ? AND status = 'held' AND deadline_at < ? \
         ORDER BY deadline_at LIMIT ?",
    )
    .bind(sale)
    .bind(cutoff)
    .bind(BATCH)
    .fetch_all(mysql)
    .await
    .with_context(|| format!("reading sale {sale}'s HELD orders past their deadline"))?;
    let mut found = Found::default();
    if rows.is_empty() {
        return Ok(found);
    }
    let orders = Orders::new(redis, sale);
    for (order, user) in rows {
        let keys = vec![
            orders.order_key(order),
            orders.user_key(user),
            orders.keys().adm.clone(),
        ];
        let args = vec![Value::from(&user.as_bytes()[..])];
        let reply: Vec<Value> = FORGOTTEN_HOLD
            .run(redis, keys, args)
            .await
            .with_context(|| format!("asking Redis about order {order}"))?;
        let (result, admission) = match reply.as_slice() {
            [result, admission] => (
                result.as_str().map(|s| s.to_string()).unwrap_or_default(),
                admission.as_i64().unwrap_or(0),
            ),
            other => anyhow::bail!("forgotten_hold: unexpected reply {other:?}"),
        };
        match result.as_str() {
            "known" => found.known += 1,
            "forgotten" => {
                let updated = sqlx::query(
                    "UPDATE orders SET status = 'expired', updated_at = ? \
                     WHERE id = ? AND status = 'held'",
                )
                .bind(Utc::now())
                .bind(order)
                .execute(mysql)
                .await
                .with_context(|| format!("marking forgotten order {order} expired"))?
                .rows_affected();
                if updated > 0 {
                    found.expired += 1;
                    tracing::warn!(
                        sale = %sale,
                        order = %order,
                        admission_ended = admission > 0,
                        "a HELD order Redis does not know, past its deadline: marked expired in MySQL"
                    );
                }
                if admission > 0 {
                    found.admissions_ended += 1;
                }
            }
            other => anyhow::bail!("forgotten_hold: unexpected result {other:?}"),
        }
    }
    if found.expired > 0 {
        metrics::counter!("dropline_forgotten_holds_expired_total").increment(found.expired);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::FORGOTTEN_HOLD;

    #[test]
    fn the_script_documents_its_contract() {
        assert_eq!(FORGOTTEN_HOLD.check_contract(), Ok(()));
    }
}
