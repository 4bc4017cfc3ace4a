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
//!
//! # Forgotten order hashes
//!
//! The same loss takes the order's hash, the buyer's unit count (`u:<user>`) and the
//! idempotency key with it (one script wrote them). The units are set right by the stock repair,
//! but the hash stays missing (`sale audit` reports `missing_in_redis` until `sale rearm
//! --force`), a PAID order's units no longer count against the buyer's `per_user_limit`, and a
//! client retrying its idempotency key would make a second order. So the recorder also walks
//! each sale's orders once, by id (UUIDv7: creation order), [`SETTLE`] after their creation,
//! [`BATCH`] rows a check ([`restore_ended`]), and puts back, for each ended one (paid, expired,
//! cancelled, failed) Redis has no hash of, all three from MySQL (`lua/restore_order.lua`). A
//! hash can only go missing with the reserve's own write, lost within the replication lag
//! after it, so one look per order after that is enough. A live order (held, paying) Redis
//! forgot ends in MySQL alone (the HELD check above, or the confirm worker booking an approved
//! payment), so it is kept in a short list ([`MAX_PENDING`] at most per sale) and looked at
//! again each check until it has ([`recheck`]); a HELD row the check above ends has its hash
//! put back, as expired, at once. The walk's place and the list are kept per process: a
//! restarted worker walks each armed sale once more from the start.

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use dropline_core::clients::redis::Redis;
use dropline_core::ids::{OrderId, SaleId, UserId};
use dropline_core::lua::Script;
use dropline_core::orders::ledger::{self, OrderRow};
use dropline_core::orders::{IDEMPOTENCY_TTL, OrderState, Orders};
use fred::interfaces::KeysInterface;
use fred::types::Value;
use sqlx::MySqlPool;

/// How often each armed sale is checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How long past its deadline a HELD row must be before it is looked at.
pub const GRACE: Duration = Duration::from_secs(30);
/// Most rows one check reads per sale (the oldest first; the next check takes the rest).
const BATCH: i64 = 200;

/// How long after its creation (its UUIDv7 id's instant) an order's hash is looked at: well past
/// the replication lag (milliseconds; a failover can only lose writes younger than that), so a
/// hash seen then stays.
pub const SETTLE: Duration = Duration::from_secs(10);
/// Most live orders Redis forgot that one process keeps looking at per sale (a loss takes the
/// orders of the last moments before it: a handful).
pub const MAX_PENDING: usize = 10_000;

/// `lua/forgotten_hold.lua`: whether Redis knows an order, ending a forgotten one's admission.
pub static FORGOTTEN_HOLD: Script = dropline_core::lua_script!("forgotten_hold");
/// `lua/restore_order.lua`: an ended order's hash, unit count and idempotency key put back.
pub static RESTORE_ORDER: Script = dropline_core::lua_script!("restore_order");

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
            orders.keys().admch.clone(),
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
                    if let Some(row) = ledger::get(mysql, order).await? {
                        // Its admission was just ended by the script above.
                        restore(redis, &orders, &row, Duration::ZERO).await?;
                    }
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

/// Puts back `row`'s order hash, unit count and idempotency key if Redis has no hash of it
/// (`lua/restore_order.lua`); `row` must be ended. Returns whether it did.
/// `admission_window` (`waitroom.admission_window_seconds`) bounds the admission the order was
/// made under, which the script ends as the lost arrow did.
pub async fn restore(
    redis: &Redis,
    orders: &Orders,
    row: &OrderRow,
    admission_window: Duration,
) -> anyhow::Result<bool> {
    anyhow::ensure!(
        !matches!(row.state, OrderState::Held | OrderState::Paying),
        "order {} is {}: only an ended order's hash is restored",
        row.id,
        row.state.as_str()
    );
    let idem_left = (row.created + chrono::Duration::from_std(IDEMPOTENCY_TTL)?) - Utc::now();
    let keys = vec![
        orders.order_key(row.id),
        orders.user_key(row.user),
        orders.idempotency_key(row.user, &row.idempotency_key),
        orders.keys().adm.clone(),
        orders.keys().admch.clone(),
    ];
    let spent_by = row.created + chrono::Duration::from_std(admission_window)?;
    let quantity = u32::try_from(row.quantity).unwrap_or(u32::MAX);
    let mut args = vec![
        Value::from(row.state.as_str()),
        Value::from(row.quantity),
        Value::from(idem_left.num_milliseconds().max(0)),
        Value::from(orders.fingerprint(quantity)),
        Value::from(row.id.to_string()),
        Value::from(&row.user.as_bytes()[..]),
        Value::from(spent_by.timestamp_millis()),
    ];
    for (field, value) in row.hash_fields() {
        args.push(Value::from(field));
        args.push(value);
    }
    let restored: i64 = RESTORE_ORDER
        .run(redis, keys, args)
        .await
        .with_context(|| format!("restoring order {} in Redis", row.id))?;
    if restored > 0 {
        metrics::counter!("dropline_forgotten_orders_restored_total").increment(1);
        tracing::warn!(
            sale = %row.sale,
            order = %row.id,
            state = row.state.as_str(),
            "an ended order Redis does not know: its hash, units and idempotency key restored from MySQL"
        );
    }
    Ok(restored > 0)
}

/// What one step of the walk did ([`restore_ended`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walk {
    /// Ended orders whose hash was put back.
    pub restored: u64,
    /// The last order read (the walk goes on after it); `None` when none was read.
    pub walked: Option<OrderId>,
    /// Live orders (held, paying in MySQL) Redis has no hash of: lost with the reserve, they
    /// end in MySQL alone (the forgotten-hold check, the confirm worker), and are looked at
    /// again ([`recheck`]) until they have.
    pub live_missing: Vec<OrderId>,
}

/// One step of the walk over `sale`'s orders (module docs, "Forgotten order hashes"): the next
/// [`BATCH`] orders after `after` created more than `settle` ago (the recorder passes
/// [`SETTLE`]), each ended one restored if Redis forgot it, each live one Redis forgot listed.
pub async fn restore_ended(
    redis: &Redis,
    mysql: &MySqlPool,
    sale: SaleId,
    after: Option<OrderId>,
    settle: Duration,
    admission_window: Duration,
) -> anyhow::Result<Walk> {
    let settled = Utc::now() - chrono::Duration::from_std(settle)?;
    let before = OrderId::from(first_v7_at(settled.timestamp_millis()));
    let after = after.unwrap_or_else(|| OrderId::from(uuid::Uuid::nil()));
    let raws: Vec<ledger::RawRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM orders WHERE sale_id = ? AND id > ? AND id < ? ORDER BY id LIMIT ?",
        ledger::COLUMNS
    )))
    .bind(sale)
    .bind(after)
    .bind(before)
    .bind(BATCH)
    .fetch_all(mysql)
    .await
    .with_context(|| format!("reading sale {sale}'s settled orders"))?;
    let mut walk = Walk::default();
    let orders = Orders::new(redis, sale);
    for raw in raws {
        let row = ledger::from_raw(raw)?;
        walk.walked = Some(row.id);
        if matches!(row.state, OrderState::Held | OrderState::Paying) {
            if !known(redis, &orders, row.id).await? {
                walk.live_missing.push(row.id);
            }
        } else if restore(redis, &orders, &row, admission_window).await? {
            walk.restored += 1;
        }
    }
    Ok(walk)
}

/// Looks again at live orders Redis forgot ([`Walk::live_missing`]): each one MySQL has ended
/// since gets its hash back ([`restore`]) and leaves `pending`, as does one MySQL no longer
/// has; the rest stay. Returns how many were restored.
pub async fn recheck(
    redis: &Redis,
    mysql: &MySqlPool,
    sale: SaleId,
    pending: &mut std::collections::BTreeSet<OrderId>,
    admission_window: Duration,
) -> anyhow::Result<u64> {
    let orders = Orders::new(redis, sale);
    let mut restored = 0;
    for order in pending.clone() {
        match ledger::get(mysql, order).await? {
            Some(row) if matches!(row.state, OrderState::Held | OrderState::Paying) => {
                if known(redis, &orders, order).await? {
                    pending.remove(&order);
                }
            }
            Some(row) => {
                if restore(redis, &orders, &row, admission_window).await? {
                    restored += 1;
                }
                pending.remove(&order);
            }
            None => {
                pending.remove(&order);
            }
        }
    }
    Ok(restored)
}

/// Whether Redis has `order`'s hash.
async fn known(redis: &Redis, orders: &Orders, order: OrderId) -> anyhow::Result<bool> {
    let n: i64 = redis
        .pool()
        .exists(orders.order_key(order))
        .await
        .with_context(|| format!("asking Redis about order {order}"))?;
    Ok(n > 0)
}

/// The smallest UUIDv7 of millisecond `ms`: every id made before that instant sorts below it
/// (MySQL compares the 16 bytes; a v7 id starts with its big-endian millisecond).
fn first_v7_at(ms: i64) -> uuid::Uuid {
    let ms = u64::try_from(ms).unwrap_or(0).to_be_bytes();
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms[2..]);
    bytes[6] = 0x70;
    uuid::Uuid::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::{FORGOTTEN_HOLD, RESTORE_ORDER, first_v7_at};

    #[test]
    fn the_scripts_document_their_contract() {
        assert_eq!(FORGOTTEN_HOLD.check_contract(), Ok(()));
        assert_eq!(RESTORE_ORDER.check_contract(), Ok(()));
    }

    #[test]
    fn the_first_v7_of_an_instant_sorts_after_every_id_made_before_it() {
        let made = uuid::Uuid::now_v7();
        let ms = chrono::Utc::now().timestamp_millis();
        let bound = first_v7_at(ms + 1);
        assert!(made.as_bytes() < bound.as_bytes());
        assert!(first_v7_at(ms - 10_000).as_bytes() < made.as_bytes());
        assert_eq!(bound.get_version_num(), 7);
    }
}
