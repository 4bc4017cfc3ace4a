//! `dropline sale audit <sale>`: checks DESIGN §6 for one sale, Redis against MySQL, and
//! reports every breach with a stable code ([`BreachCode`]). Read-only: it never writes to
//! Redis or MySQL.
//!
//! # What is checked
//!
//! - **Redis counters** (one atomic snapshot, `lua/audit_snapshot.lua`): `avail + held + sold =
//!   stock_total`, `avail ≥ 0`, and the `cfg` hash's `stock_total` / `per_user_limit` equal
//!   MySQL's.
//! - **Redis counters against the order hashes**: `held` = units of HELD + PAYING hashes, `sold`
//!   = units of PAID hashes, `holds` = exactly the live orders, each `u:<user>` = the user's
//!   HELD + PAYING + PAID units, and those units ≤ `per_user_limit`.
//! - **MySQL** (one consistent snapshot): `SUM(qty of paid rows) ≤ stock_total`, `sales.sold`
//!   = that sum, per user held + paying + paid units ≤ `per_user_limit`; per order at most one
//!   `payments` row, a paid order has one and it is `approved`.
//! - **Redis against MySQL, per order**: the same user and quantity, and compatible states.
//!
//! # Orders in flight (without `--settled`)
//!
//! Redis decides; MySQL follows through the sale's outbox stream (`events`) and the confirm
//! worker (see [`crate::orders::ledger`]). The audit reads Redis first (the scan), then the outbox,
//! then MySQL, so for an order Redis showed in state R:
//!
//! - R's outbox entry is still in the stream: MySQL may lag behind R (or not have the row
//!   yet): **pending**, not a breach;
//! - otherwise the recorder wrote R before the outbox was read, so MySQL must show R or a
//!   state after it. MySQL *behind* R is a breach; MySQL *ahead* of R means the order moved
//!   after the scan: its hash is read again and must now be at or past MySQL's state;
//! - PAYING in Redis and PAID in MySQL is the confirm worker between its MySQL commit and
//!   `confirm.lua`: pending. PAID in Redis is always PAID in MySQL (MySQL is written first),
//!   outbox or not;
//! - an order in MySQL that the scan did not see is read again from Redis (it may have been
//!   made during the scan); still absent is a breach;
//! - an approved payment on an order not paid yet is the confirm worker's job in flight:
//!   pending.
//!
//! The counters-against-hashes checks need one moment's picture, which a scan is not: the
//! snapshot is taken before and after the scan, and when an arrow happened in between (the
//! outbox's last id moved) the scan is repeated, up to [`AuditOptions::max_scans`] times. A
//! sale that never held still is reported with those checks skipped (a note, not a breach).
//!
//! # `--settled`
//!
//! Asserts the quiescent invariants instead: no arrow during the audit, the outbox drained,
//! no HELD or PAYING order on either side, `avail + sold = stock_total`, every order in the
//! same state on both sides, and no approved payment on an order that is not paid. Nothing is
//! pending then: anything in flight is a breach.
//!
//! # Cost
//!
//! Redis: one `SCAN … MATCH <sale slot>:[ou]:*` over the node's whole keyspace (`COUNT`
//! [`AuditOptions::scan_count`] per step; on Cluster, only the node owning the sale's slot),
//! one pipelined `HMGET` per order and one `MGET` per page of users' counters, `holds` and the
//! outbox read in pages; repeated per scan attempt. MySQL: one streamed query over the sale's
//! orders (index `ix_orders_sale_status`) with two lookups per order in `payments` (its unique
//! order key). Memory: about 150 bytes per order (the map of Redis orders the MySQL rows are
//! matched against: id, user, quantity, state; per-user sums on both sides; the outbox's order
//! ids), so ~15 MB for 100,000 orders. Measured: 100,000 orders with 640,000 keys in Redis in
//! 2.7 s (debug build on 2 busy cores; the ignored test `a_sale_of_100k_orders`). Breaches are
//! listed up to [`MAX_LISTED`] per code (all are counted).
//!
//! # Not checked
//!
//! A `payments` row whose order has no `orders` row is not seen (payments are reached through
//! the sale's orders; `payments` has no index on the sale), nor what the provider charged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use anyhow::Context;
use fred::interfaces::{HashesInterface, KeysInterface, SortedSetsInterface, StreamsInterface};
use fred::types::Value;
use fred::types::scan::Scanner;
use futures_util::TryStreamExt;
use futures_util::future::try_join_all;
use serde::Serialize;
use sqlx::MySqlPool;
use uuid::Uuid;

use crate::clients::redis::Redis;
use crate::lua::scripts::AUDIT_SNAPSHOT;
use crate::orders::{OrderState, Orders};
use crate::sale::keys::KeyName;

/// Breaches of one code listed in a report; the rest are only counted.
pub const MAX_LISTED: usize = 50;
/// Pending orders listed in a report; the rest are only counted.
pub const MAX_PENDING_LISTED: usize = 20;
/// Entries per read of `holds`, the outbox, and orders read again.
const PAGE: usize = 1000;

/// How to audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditOptions {
    /// Assert the quiescent invariants (see the module docs).
    pub settled: bool,
    /// Scans of the order hashes before giving up on a still picture (at least 1).
    pub max_scans: u32,
    /// `SCAN … COUNT`: keys the server looks at per call (the scan walks the node's whole
    /// keyspace; larger means fewer round trips but longer calls).
    pub scan_count: u32,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            settled: false,
            max_scans: 3,
            scan_count: 5000,
        }
    }
}

/// The sale has no MySQL row (the command maps this to a bad-input exit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no sale {0} in MySQL")]
pub struct UnknownSale(pub Uuid);

/// What went wrong, one code per kind (the JSON `code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreachCode {
    /// The sale has a MySQL row but no `cfg` in Redis (Redis lost it: `sale rearm`).
    RedisNotArmed,
    /// Redis `cfg` and MySQL disagree on `stock_total` or `per_user_limit`.
    ConfigMismatch,
    /// `avail < 0`: Redis sold more than the stock.
    AvailNegative,
    /// `avail + held + sold ≠ stock_total` in Redis.
    StockUnbalanced,
    /// Redis `held` or `sold` disagrees with the order hashes.
    CounterDrift,
    /// `holds` lacks a live order, or lists one that is not live.
    HoldsDrift,
    /// A user's `u:<user>` disagrees with their order hashes.
    UserCounterDrift,
    /// A user holds more than `per_user_limit` units (Redis or MySQL).
    UserLimitExceeded,
    /// An order hash that cannot be read (fields missing or malformed).
    RedisOrderMalformed,
    /// `SUM(qty of paid rows) > stock_total` in MySQL.
    MysqlOversold,
    /// `sales.sold ≠ SUM(qty of paid rows)`.
    SoldMismatch,
    /// An order Redis has, MySQL does not, and none of its changes is in flight.
    MissingInMysql,
    /// An order MySQL has and Redis does not.
    MissingInRedis,
    /// Redis and MySQL show states that no in-flight change explains.
    StateMismatch,
    /// Redis and MySQL disagree on an order's user or quantity.
    OrderFieldsMismatch,
    /// More than one `payments` row for an order.
    DuplicatePayment,
    /// A paid order without a `payments` row.
    PaidWithoutPayment,
    /// A paid order whose payment is declined or refunded.
    PaymentNotApproved,
    /// `--settled`: an approved payment on an order that is not paid.
    ApprovedPaymentUnpaid,
    /// `--settled`: a HELD or PAYING order (Redis or MySQL).
    LiveOrderLeft,
    /// `--settled`: the outbox still has entries MySQL has not recorded.
    OutboxNotDrained,
    /// `--settled`: `avail + sold ≠ stock_total`.
    UnsettledStock,
    /// `--settled`: an order changed while the audit ran.
    NotSettled,
}

impl BreachCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RedisNotArmed => "redis_not_armed",
            Self::ConfigMismatch => "config_mismatch",
            Self::AvailNegative => "avail_negative",
            Self::StockUnbalanced => "stock_unbalanced",
            Self::CounterDrift => "counter_drift",
            Self::HoldsDrift => "holds_drift",
            Self::UserCounterDrift => "user_counter_drift",
            Self::UserLimitExceeded => "user_limit_exceeded",
            Self::RedisOrderMalformed => "redis_order_malformed",
            Self::MysqlOversold => "mysql_oversold",
            Self::SoldMismatch => "sold_mismatch",
            Self::MissingInMysql => "missing_in_mysql",
            Self::MissingInRedis => "missing_in_redis",
            Self::StateMismatch => "state_mismatch",
            Self::OrderFieldsMismatch => "order_fields_mismatch",
            Self::DuplicatePayment => "duplicate_payment",
            Self::PaidWithoutPayment => "paid_without_payment",
            Self::PaymentNotApproved => "payment_not_approved",
            Self::ApprovedPaymentUnpaid => "approved_payment_unpaid",
            Self::LiveOrderLeft => "live_order_left",
            Self::OutboxNotDrained => "outbox_not_drained",
            Self::UnsettledStock => "unsettled_stock",
            Self::NotSettled => "not_settled",
        }
    }
}

impl fmt::Display for BreachCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One breach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Breach {
    pub code: BreachCode,
    pub message: String,
    /// The order concerned, if one.
    pub order: Option<Uuid>,
    /// The user concerned, if one.
    pub user: Option<Uuid>,
}

/// Orders and units in one state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub orders: u64,
    pub units: i64,
}

/// Orders and units per state (DESIGN §5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    pub held: Tally,
    pub paying: Tally,
    pub paid: Tally,
    pub expired: Tally,
    pub cancelled: Tally,
    pub failed: Tally,
}

impl StateCounts {
    fn slot(&mut self, state: OrderState) -> &mut Tally {
        match state {
            OrderState::Held => &mut self.held,
            OrderState::Paying => &mut self.paying,
            OrderState::Paid => &mut self.paid,
            OrderState::Expired => &mut self.expired,
            OrderState::Cancelled => &mut self.cancelled,
            OrderState::Failed => &mut self.failed,
        }
    }

    fn add(&mut self, state: OrderState, units: i64) {
        let t = self.slot(state);
        t.orders += 1;
        t.units += units;
    }

    pub fn get(&self, state: OrderState) -> Tally {
        match state {
            OrderState::Held => self.held,
            OrderState::Paying => self.paying,
            OrderState::Paid => self.paid,
            OrderState::Expired => self.expired,
            OrderState::Cancelled => self.cancelled,
            OrderState::Failed => self.failed,
        }
    }

    pub fn total_orders(&self) -> u64 {
        OrderState::ALL.iter().map(|s| self.get(*s).orders).sum()
    }
}

/// Redis's side of the sale.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RedisFigures {
    /// The sale has a `cfg` hash; the other figures are null/zero when it has not.
    pub armed: bool,
    pub stock_total: Option<i64>,
    pub per_user_limit: Option<i64>,
    pub avail: Option<i64>,
    /// Units in HELD + PAYING orders (the counter).
    pub held: Option<i64>,
    /// Units in PAID orders (the counter).
    pub sold: Option<i64>,
    /// Members of `holds` (live orders).
    pub holds: Option<u64>,
    /// Entries in the outbox stream not yet recorded in MySQL.
    pub outbox_entries: u64,
    /// The order hashes, by state (from the last scan).
    pub orders: StateCounts,
    /// Scans made.
    pub scans: u32,
    /// No arrow happened during the last scan, so the counters were compared with the hashes.
    pub stable: bool,
}

/// MySQL's side of the sale.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MysqlFigures {
    pub stock_total: i64,
    pub per_user_limit: i64,
    /// `sales.sold`.
    pub sold: i64,
    /// `SUM(qty)` of the paid rows.
    pub paid_units: i64,
    pub orders: StateCounts,
    /// `payments` rows of the sale's orders.
    pub payments: u64,
}

/// An order whose Redis and MySQL states differ for a reason that is still in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingOrder {
    pub order: Uuid,
    pub reason: String,
}

/// Orders in flight (never with `--settled`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pending {
    pub orders: u64,
    /// Up to [`MAX_PENDING_LISTED`] of them.
    pub examples: Vec<PendingOrder>,
}

/// The outcome of an audit (`--json` prints it as is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub sale_id: Uuid,
    /// The quiescent invariants were asserted (`--settled`).
    pub settled: bool,
    /// No breach.
    pub ok: bool,
    pub redis: RedisFigures,
    pub mysql: MysqlFigures,
    pub pending: Pending,
    /// Up to [`MAX_LISTED`] per code, in the order found.
    pub breaches: Vec<Breach>,
    /// Every breach counted, by code (the list may be shorter).
    pub breach_counts: BTreeMap<BreachCode, u64>,
    /// What was not checked and why.
    pub notes: Vec<String>,
}

impl Report {
    /// Every code found.
    pub fn codes(&self) -> Vec<BreachCode> {
        self.breach_counts.keys().copied().collect()
    }

    pub fn has(&self, code: BreachCode) -> bool {
        self.breach_counts.contains_key(&code)
    }

    /// The report as pretty-printed JSON (`dropline sale audit --json`).
    pub fn to_json(&self) -> anyhow::Result<String> {
        serde_json::to_string_pretty(self).context("serialising the audit report")
    }
}

/// Audits `sale` (see the module docs). `Err` only when the audit could not run (a
/// dependency failed, or [`UnknownSale`]); breaches are in the report.
pub async fn audit(
    mysql: &MySqlPool,
    redis: &Redis,
    sale: Uuid,
    options: AuditOptions,
) -> anyhow::Result<Report> {
    let started = std::time::Instant::now();
    let (stock_total, _, per_user_limit) = sale_row(mysql, sale).await?.ok_or(UnknownSale(sale))?;
    let mut f = Findings::new(options.settled);
    let orders = Orders::new(redis, sale);

    // 1. Redis: counters, the order hashes and users' counts, again until the picture is still.
    let mut figures = RedisFigures::default();
    let mut scan = Scan::default();
    let mut last: Option<Snapshot> = None;
    for attempt in 1..=options.max_scans.max(1) {
        let Some(before) = snapshot(redis, &orders).await? else {
            break;
        };
        scan = Scan::read(redis, &orders, options.scan_count).await?;
        let after = snapshot(redis, &orders)
            .await?
            .context("the sale was unarmed in Redis during the audit")?;
        figures.scans = attempt;
        figures.stable = before.marker() == after.marker();
        last = Some(after);
        if figures.stable {
            break;
        }
        tracing::debug!(%sale, attempt, "the sale moved during the scan; scanning again");
    }
    // 2. The outbox: orders whose last change MySQL may not have yet.
    let outbox = match &last {
        Some(_) => read_outbox(redis, &orders).await?,
        None => HashSet::new(),
    };
    match &last {
        None => f.breach(
            BreachCode::RedisNotArmed,
            format!(
                "sale {sale} is in MySQL but not armed in Redis (Redis lost it? see `dropline sale rearm`); Redis was not compared"
            ),
            None,
            None,
        ),
        Some(snap) => {
            figures.armed = true;
            figures.stock_total = Some(snap.stock_total);
            figures.per_user_limit = Some(snap.per_user_limit);
            figures.avail = Some(snap.avail);
            figures.held = Some(snap.held);
            figures.sold = Some(snap.sold);
            figures.holds = Some(snap.holds);
            figures.outbox_entries = snap.outbox_len;
            figures.orders = scan.counts();
            check_redis(&mut f, snap, &scan, &figures, stock_total, per_user_limit);
        }
    }

    if options.settled {
        let mut live: Vec<(&Uuid, &RedisOrder)> = scan
            .orders
            .iter()
            .filter(|(_, o)| o.state.is_live())
            .collect();
        live.sort_by_key(|(id, _)| **id);
        for (id, order) in live {
            f.breach(
                BreachCode::LiveOrderLeft,
                format!("order {id} is still {} in Redis", order.state),
                Some(*id),
                Some(order.user),
            );
        }
    }

    // 3. MySQL, in one snapshot, matched against the scan.
    let redis_orders = if last.is_some() {
        Some(&mut scan.orders)
    } else {
        None
    };
    let mysql_figures = check_mysql(mysql, sale, redis_orders, &outbox, &mut f).await?;

    // 4. What only a second look at Redis can settle, and the orders MySQL does not have.
    if last.is_some() {
        recheck(redis, &orders, &mut f).await?;
        let mut left: Vec<(&Uuid, &RedisOrder)> = scan.orders.iter().collect();
        left.sort_by_key(|(id, _)| **id);
        for (id, order) in left {
            // PAID never waits for the outbox: the confirm worker writes the MySQL row first.
            if outbox.contains(id) && !options.settled && order.state != OrderState::Paid {
                f.pending(
                    *id,
                    format!(
                        "{} in Redis; MySQL has no row yet (in the outbox)",
                        order.state
                    ),
                );
            } else {
                f.breach(
                    BreachCode::MissingInMysql,
                    format!(
                        "order {id} is {} in Redis but has no MySQL row{}",
                        order.state,
                        if order.state == OrderState::Paid {
                            " (the confirm worker writes MySQL before Redis)"
                        } else if outbox.contains(id) {
                            " (its change is still in the outbox)"
                        } else {
                            ", and no change of it is in flight"
                        }
                    ),
                    Some(*id),
                    Some(order.user),
                );
            }
        }
    }
    if options.settled {
        if let Some(snap) = &last
            && snap.avail + snap.sold != snap.stock_total
        {
            f.breach(
                BreachCode::UnsettledStock,
                format!(
                    "avail {} + sold {} != stock_total {} in Redis once settled",
                    snap.avail, snap.sold, snap.stock_total
                ),
                None,
                None,
            );
        }
        if figures.armed && !figures.stable {
            f.breach(
                BreachCode::NotSettled,
                format!(
                    "the sale changed during each of {} scan(s): it is not settled",
                    figures.scans
                ),
                None,
                None,
            );
        }
        if figures.outbox_entries > 0 || !outbox.is_empty() {
            f.breach(
                BreachCode::OutboxNotDrained,
                format!(
                    "{} outbox entr{} for {} order(s) not recorded in MySQL yet",
                    figures.outbox_entries,
                    if figures.outbox_entries == 1 {
                        "y"
                    } else {
                        "ies"
                    },
                    outbox.len()
                ),
                None,
                None,
            );
        }
    }
    if figures.armed && !figures.stable && !options.settled {
        f.notes.push(format!(
            "the sale changed during each of {} scan(s): the counters, `holds` and users' counts \
             were not compared with the order hashes (run again when it is quieter)",
            figures.scans
        ));
    }
    let report = f.finish(sale, figures, mysql_figures);
    tracing::info!(
        %sale,
        ok = report.ok,
        breaches = report.breach_counts.values().sum::<u64>(),
        pending = report.pending.orders,
        scans = report.redis.scans,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "sale audited"
    );
    Ok(report)
}

/// Redis checks on the snapshot and the scan.
fn check_redis(
    f: &mut Findings,
    snap: &Snapshot,
    scan: &Scan,
    figures: &RedisFigures,
    mysql_stock: i64,
    mysql_limit: i64,
) {
    if snap.stock_total != mysql_stock || snap.per_user_limit != mysql_limit {
        f.breach(
            BreachCode::ConfigMismatch,
            format!(
                "Redis cfg has stock_total {} and per_user_limit {}, MySQL {} and {}",
                snap.stock_total, snap.per_user_limit, mysql_stock, mysql_limit
            ),
            None,
            None,
        );
    }
    if snap.avail < 0 {
        f.breach(
            BreachCode::AvailNegative,
            format!("avail is {} in Redis: oversold", snap.avail),
            None,
            None,
        );
    }
    if snap.avail + snap.held + snap.sold != snap.stock_total {
        f.breach(
            BreachCode::StockUnbalanced,
            format!(
                "avail {} + held {} + sold {} = {} != stock_total {} in Redis",
                snap.avail,
                snap.held,
                snap.sold,
                snap.avail + snap.held + snap.sold,
                snap.stock_total
            ),
            None,
            None,
        );
    }
    for (id, problem) in &scan.malformed {
        f.breach(
            BreachCode::RedisOrderMalformed,
            format!("order hash {id} cannot be read: {problem}"),
            Some(*id),
            None,
        );
    }
    let limit = snap.per_user_limit;
    let mut users: Vec<(&Uuid, &i64)> = scan.user_counters.iter().collect();
    users.sort();
    // A counter over the limit is a breach at any moment (reserve.lua keeps it under).
    let mut over: HashSet<Uuid> = HashSet::new();
    for (user, units) in &users {
        if **units > limit {
            over.insert(**user);
            f.breach(
                BreachCode::UserLimitExceeded,
                format!("user {user} has {units} unit(s) in Redis (u counter), over the limit of {limit}"),
                None,
                Some(**user),
            );
        }
    }
    if !figures.stable {
        return;
    }
    let counts = &figures.orders;
    let live = counts.held.units + counts.paying.units;
    if live != snap.held {
        f.breach(
            BreachCode::CounterDrift,
            format!(
                "held counter is {}, but the HELD + PAYING order hashes hold {live} unit(s)",
                snap.held
            ),
            None,
            None,
        );
    }
    if counts.paid.units != snap.sold {
        f.breach(
            BreachCode::CounterDrift,
            format!(
                "sold counter is {}, but the PAID order hashes hold {} unit(s)",
                snap.sold, counts.paid.units
            ),
            None,
            None,
        );
    }
    let mut live_ids: Vec<&Uuid> = scan
        .orders
        .iter()
        .filter(|(_, o)| o.state.is_live())
        .map(|(id, _)| id)
        .collect();
    live_ids.sort();
    for id in live_ids {
        if !scan.holds.contains(id) {
            f.breach(
                BreachCode::HoldsDrift,
                format!("live order {id} is not in holds: no sweeper would end it"),
                Some(*id),
                None,
            );
        }
    }
    let mut stray: Vec<&String> = scan
        .holds_members
        .iter()
        .filter(|m| {
            Uuid::parse_str(m)
                .ok()
                .and_then(|id| scan.orders.get(&id))
                .is_none_or(|o| !o.state.is_live())
        })
        .collect();
    stray.sort();
    for member in stray {
        f.breach(
            BreachCode::HoldsDrift,
            format!("holds lists `{member}`, which is not a live order"),
            Uuid::parse_str(member).ok(),
            None,
        );
    }
    let derived = scan.user_units();
    let mut all_users: Vec<Uuid> = derived
        .keys()
        .chain(scan.user_counters.keys())
        .copied()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    all_users.sort();
    for user in all_users {
        let from_orders = derived.get(&user).copied().unwrap_or(0);
        let counter = scan.user_counters.get(&user).copied().unwrap_or(0);
        if from_orders != counter {
            f.breach(
                BreachCode::UserCounterDrift,
                format!(
                    "user {user}: u counter is {counter}, but their HELD + PAYING + PAID orders hold {from_orders} unit(s)"
                ),
                None,
                Some(user),
            );
        }
        if from_orders > limit && !over.contains(&user) {
            f.breach(
                BreachCode::UserLimitExceeded,
                format!(
                    "user {user} has {from_orders} unit(s) in HELD + PAYING + PAID orders in Redis, over the limit of {limit}"
                ),
                None,
                Some(user),
            );
        }
    }
}

/// Reads the sale's MySQL rows in one snapshot and matches them against the Redis scan
/// (`redis` is `None` when the sale is not armed). Matched orders are removed from the map,
/// so what is left is what MySQL does not have. Orders to read again from Redis are queued
/// in `f.recheck`.
async fn check_mysql(
    pool: &MySqlPool,
    sale: Uuid,
    mut redis: Option<&mut HashMap<Uuid, RedisOrder>>,
    outbox: &HashSet<Uuid>,
    f: &mut Findings,
) -> anyhow::Result<MysqlFigures> {
    let mut conn = pool.acquire().await.context("MySQL connection")?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *conn)
        .await
        .context("setting the isolation level")?;
    let mut tx = sqlx::Connection::begin_with(
        &mut *conn,
        "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
    )
    .await
    .context("starting a read-only snapshot")?;
    let (stock_total, sold, per_user_limit) =
        sale_row(&mut *tx, sale).await?.ok_or(UnknownSale(sale))?;
    let mut figures = MysqlFigures {
        stock_total,
        per_user_limit,
        sold,
        ..MysqlFigures::default()
    };
    // user → (units in held + paying + paid rows, some of them in flight)
    let mut users: HashMap<Uuid, (i64, bool)> = HashMap::new();
    {
        type Row = (Uuid, Uuid, i32, String, i64, i64);
        let mut rows = sqlx::query_as::<_, Row>(
            "SELECT o.id, o.user_id, o.quantity, o.status, \
                    (SELECT COUNT(*) FROM payments p WHERE p.order_id = o.id), \
                    (SELECT COUNT(*) FROM payments p WHERE p.order_id = o.id AND p.status = 'approved') \
             FROM orders o WHERE o.sale_id = ?",
        )
        .bind(sale)
        .fetch(&mut *tx);
        while let Some((id, user, quantity, status, payments, approved)) = rows
            .try_next()
            .await
            .with_context(|| format!("reading the orders of sale {sale}"))?
        {
            let qty = i64::from(quantity);
            let state: OrderState = status
                .parse()
                .with_context(|| format!("order {id}: status"))?;
            figures.orders.add(state, qty);
            figures.payments += u64::try_from(payments).unwrap_or(0);
            if state == OrderState::Paid {
                figures.paid_units += qty;
            }
            let in_flight = check_payments(f, id, user, state, payments, approved);
            let mut unsure = in_flight || outbox.contains(&id);
            let scanned = redis.as_deref_mut().map(|orders| orders.remove(&id));
            // Reported once per order: the Redis side was reported already.
            if f.settled && state.is_live() && !scanned.flatten().is_some_and(|r| r.state.is_live())
            {
                f.breach(
                    BreachCode::LiveOrderLeft,
                    format!("order {id} is still {state} in MySQL"),
                    Some(id),
                    Some(user),
                );
            }
            if let Some(scanned) = scanned {
                match scanned {
                    Some(r) => {
                        if r.user != user || r.quantity != qty {
                            f.breach(
                                BreachCode::OrderFieldsMismatch,
                                format!(
                                    "order {id}: Redis has user {} and quantity {}, MySQL user {user} and quantity {qty}",
                                    r.user, r.quantity
                                ),
                                Some(id),
                                Some(user),
                            );
                        }
                        match compare(r.state, state, outbox.contains(&id), f.settled) {
                            Verdict::Agree => {}
                            Verdict::Pending(reason) => {
                                unsure = true;
                                f.pending(id, reason);
                            }
                            Verdict::Recheck => {
                                unsure = true;
                                f.recheck.push((id, state, Some(r.state)));
                            }
                            Verdict::Breach => f.breach(
                                BreachCode::StateMismatch,
                                format!("order {id} is {} in Redis but {state} in MySQL", r.state),
                                Some(id),
                                Some(user),
                            ),
                        }
                    }
                    None => {
                        unsure = true;
                        f.recheck.push((id, state, None));
                    }
                }
            }
            if state.is_live() || state == OrderState::Paid {
                let entry = users.entry(user).or_insert((0, false));
                entry.0 += qty;
                entry.1 |= unsure;
            }
        }
    }
    tx.rollback()
        .await
        .context("ending the read-only snapshot")?;
    if figures.paid_units > stock_total {
        f.breach(
            BreachCode::MysqlOversold,
            format!(
                "paid rows hold {} unit(s), more than the stock of {stock_total}",
                figures.paid_units
            ),
            None,
            None,
        );
    }
    if figures.sold != figures.paid_units {
        f.breach(
            BreachCode::SoldMismatch,
            format!(
                "sales.sold is {}, but the paid rows hold {} unit(s)",
                figures.sold, figures.paid_units
            ),
            None,
            None,
        );
    }
    let mut over: Vec<(Uuid, i64, bool)> = users
        .into_iter()
        .filter(|(_, (units, _))| *units > per_user_limit)
        .map(|(user, (units, unsure))| (user, units, unsure))
        .collect();
    over.sort();
    for (user, units, unsure) in over {
        if unsure && !f.settled {
            f.pending_user(user, units, per_user_limit);
        } else {
            f.breach(
                BreachCode::UserLimitExceeded,
                format!(
                    "user {user} has {units} unit(s) in held + paying + paid rows in MySQL, over the limit of {per_user_limit}"
                ),
                None,
                Some(user),
            );
        }
    }
    Ok(figures)
}

/// The payment checks of one order; returns whether a payment is in flight (approved, the
/// order not paid yet).
fn check_payments(
    f: &mut Findings,
    id: Uuid,
    user: Uuid,
    state: OrderState,
    payments: i64,
    approved: i64,
) -> bool {
    if payments > 1 {
        f.breach(
            BreachCode::DuplicatePayment,
            format!("order {id} has {payments} payment rows"),
            Some(id),
            Some(user),
        );
    }
    if state == OrderState::Paid {
        if payments == 0 {
            f.breach(
                BreachCode::PaidWithoutPayment,
                format!("order {id} is paid in MySQL without a payment row"),
                Some(id),
                Some(user),
            );
        } else if approved == 0 {
            f.breach(
                BreachCode::PaymentNotApproved,
                format!(
                    "order {id} is paid, but its payment is not approved (declined or refunded)"
                ),
                Some(id),
                Some(user),
            );
        }
        return false;
    }
    if approved > 0 {
        if f.settled {
            f.breach(
                BreachCode::ApprovedPaymentUnpaid,
                format!("order {id} is {state} in MySQL with an approved payment (not refunded)"),
                Some(id),
                Some(user),
            );
        } else {
            f.pending(
                id,
                format!("{state} in MySQL with an approved payment (the confirm worker's turn)"),
            );
            return true;
        }
    }
    false
}

/// Reads again, from Redis, the orders MySQL is ahead of or the scan did not see.
async fn recheck(redis: &Redis, orders: &Orders, f: &mut Findings) -> anyhow::Result<()> {
    let queued = std::mem::take(&mut f.recheck);
    for chunk in queued.chunks(PAGE) {
        let keys: Vec<(Uuid, String)> = chunk
            .iter()
            .map(|(id, _, _)| (*id, orders.order_key(*id)))
            .collect();
        let fresh = read_orders(redis, &keys).await?;
        for ((id, mysql, scanned), (_, now)) in chunk.iter().zip(fresh) {
            let (id, mysql) = (*id, *mysql);
            match now {
                None => f.breach(
                    BreachCode::MissingInRedis,
                    format!("order {id} is {mysql} in MySQL but has no hash in Redis"),
                    Some(id),
                    None,
                ),
                Some(Err(problem)) => f.breach(
                    BreachCode::RedisOrderMalformed,
                    format!("order hash {id} cannot be read: {problem}"),
                    Some(id),
                    None,
                ),
                Some(Ok(now)) => {
                    let fine = if f.settled {
                        now.state == mysql
                    } else {
                        rechecked(mysql, now.state)
                    };
                    if !fine {
                        f.breach(
                            BreachCode::StateMismatch,
                            format!(
                                "order {id} is {mysql} in MySQL but {} in Redis{}",
                                now.state,
                                scanned.map_or(String::new(), |s| format!(" (scanned {s})"))
                            ),
                            Some(id),
                            Some(now.user),
                        );
                    } else if mysql == OrderState::Paid && now.state == OrderState::Paying {
                        f.pending(
                            id,
                            "paid in MySQL, paying in Redis (the confirm worker's turn)".into(),
                        );
                    } else if scanned.is_none() {
                        // Made during the scan: not in the tallies, but it agrees.
                        tracing::debug!(order = %id, "order made during the scan");
                    }
                }
            }
        }
    }
    Ok(())
}

/// How a Redis state (read first) and a MySQL state (read after) relate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Agree,
    /// In flight: not a breach (never with `settled`).
    Pending(String),
    /// MySQL is ahead: the order may have moved after the scan; read Redis again.
    Recheck,
    Breach,
}

/// Whether `to` is `from` or follows it by DESIGN §5's arrows.
fn reaches(from: OrderState, to: OrderState) -> bool {
    from == to
        || match from {
            OrderState::Held => true,
            OrderState::Paying => matches!(to, OrderState::Paid | OrderState::Failed),
            _ => false,
        }
}

/// Compares Redis's state (scanned) with MySQL's (read later); `in_outbox`: a change of the
/// order is still in the outbox stream.
fn compare(redis: OrderState, mysql: OrderState, in_outbox: bool, settled: bool) -> Verdict {
    if redis == mysql {
        return Verdict::Agree;
    }
    if settled {
        return Verdict::Breach;
    }
    if redis == OrderState::Paying && mysql == OrderState::Paid {
        // The confirm worker writes MySQL, then confirm.lua.
        return Verdict::Pending(
            "paid in MySQL, paying in Redis (the confirm worker's turn)".into(),
        );
    }
    if reaches(redis, mysql) {
        return Verdict::Recheck;
    }
    if reaches(mysql, redis) && redis != OrderState::Paid && in_outbox {
        // MySQL behind, and the change is still in the outbox. (PAID never: MySQL is
        // written before Redis.)
        return Verdict::Pending(format!(
            "{redis} in Redis, still {mysql} in MySQL (in the outbox)"
        ));
    }
    Verdict::Breach
}

/// Whether Redis's state read *after* MySQL's is consistent with it.
fn rechecked(mysql: OrderState, redis_now: OrderState) -> bool {
    reaches(mysql, redis_now) || (mysql == OrderState::Paid && redis_now == OrderState::Paying)
}

/// What the audit found so far.
struct Findings {
    settled: bool,
    breaches: Vec<Breach>,
    counts: BTreeMap<BreachCode, u64>,
    pending: Pending,
    pending_seen: HashSet<Uuid>,
    /// (order, MySQL state, scanned Redis state) to read again from Redis.
    recheck: Vec<(Uuid, OrderState, Option<OrderState>)>,
    notes: Vec<String>,
}

impl Findings {
    fn new(settled: bool) -> Self {
        Self {
            settled,
            breaches: Vec::new(),
            counts: BTreeMap::new(),
            pending: Pending::default(),
            pending_seen: HashSet::new(),
            recheck: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn breach(
        &mut self,
        code: BreachCode,
        message: String,
        order: Option<Uuid>,
        user: Option<Uuid>,
    ) {
        let n = self.counts.entry(code).or_insert(0);
        *n += 1;
        if *n as usize <= MAX_LISTED {
            tracing::debug!(code = code.as_str(), %message, "breach");
            self.breaches.push(Breach {
                code,
                message,
                order,
                user,
            });
        }
    }

    fn pending(&mut self, order: Uuid, reason: String) {
        if !self.pending_seen.insert(order) {
            return;
        }
        self.pending.orders += 1;
        if self.pending.examples.len() < MAX_PENDING_LISTED {
            self.pending.examples.push(PendingOrder { order, reason });
        }
    }

    fn pending_user(&mut self, user: Uuid, units: i64, limit: i64) {
        self.notes.push(format!(
            "user {user} has {units} unit(s) in MySQL, over the limit of {limit}, with orders in flight: not counted as a breach"
        ));
    }

    fn finish(self, sale: Uuid, redis: RedisFigures, mysql: MysqlFigures) -> Report {
        Report {
            sale_id: sale,
            settled: self.settled,
            ok: self.counts.is_empty(),
            redis,
            mysql,
            pending: self.pending,
            breaches: self.breaches,
            breach_counts: self.counts,
            notes: self.notes,
        }
    }
}

/// `stock_total`, `sold`, `per_user_limit` of a sale.
async fn sale_row<'e, E>(db: E, sale: Uuid) -> anyhow::Result<Option<(i64, i64, i64)>>
where
    E: sqlx::Executor<'e, Database = sqlx::MySql>,
{
    let row: Option<(i32, i32, i32)> =
        sqlx::query_as("SELECT stock_total, sold, per_user_limit FROM sales WHERE id = ?")
            .bind(sale)
            .fetch_optional(db)
            .await
            .with_context(|| format!("reading sale {sale}"))?;
    Ok(row.map(|(t, s, l)| (t.into(), s.into(), l.into())))
}

/// `lua/audit_snapshot.lua`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    stock_total: i64,
    per_user_limit: i64,
    avail: i64,
    held: i64,
    sold: i64,
    holds: u64,
    outbox_len: u64,
    outbox_last_id: String,
}

impl Snapshot {
    /// What moves with an order arrow (not the outbox's length: the recorder drains it
    /// without changing any order).
    fn marker(&self) -> (i64, i64, i64, u64, &str) {
        (
            self.avail,
            self.held,
            self.sold,
            self.holds,
            &self.outbox_last_id,
        )
    }
}

/// The sale's counters at one moment; `None` when the sale is not armed.
async fn snapshot(redis: &Redis, orders: &Orders) -> anyhow::Result<Option<Snapshot>> {
    let k = orders.keys();
    let keys = vec![
        k.cfg.clone(),
        k.avail.clone(),
        k.held.clone(),
        k.sold.clone(),
        k.holds.clone(),
        k.events.clone(),
    ];
    let reply: Vec<Value> = AUDIT_SNAPSHOT
        .run(redis, keys, Vec::<Value>::new())
        .await
        .with_context(|| format!("reading the counters of sale {}", orders.sale()))?;
    if reply.is_empty() {
        return Ok(None);
    }
    anyhow::ensure!(
        reply.len() == 9,
        "audit_snapshot returned {} items",
        reply.len()
    );
    let int = |i: usize| -> anyhow::Result<i64> {
        reply[i]
            .as_i64()
            .with_context(|| format!("audit_snapshot: item {} is not an integer", i + 1))
    };
    Ok(Some(Snapshot {
        stock_total: int(0)?,
        per_user_limit: int(1)?,
        avail: int(2)?,
        held: int(3)?,
        sold: int(4)?,
        holds: u64::try_from(int(5)?).unwrap_or(0),
        outbox_len: u64::try_from(int(6)?).unwrap_or(0),
        outbox_last_id: reply[7].as_string().unwrap_or_default(),
    }))
}

/// One order as the audit needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RedisOrder {
    user: Uuid,
    quantity: i64,
    state: OrderState,
}

/// What one scan of the sale's slot found.
#[derive(Debug, Default)]
struct Scan {
    orders: HashMap<Uuid, RedisOrder>,
    malformed: Vec<(Uuid, String)>,
    /// `u:<user>` counters.
    user_counters: HashMap<Uuid, i64>,
    /// Members of `holds` that are order ids.
    holds: HashSet<Uuid>,
    /// Every member of `holds`, as text.
    holds_members: Vec<String>,
}

impl Scan {
    /// Scans the sale's order hashes and users' counters, then reads `holds`.
    async fn read(redis: &Redis, orders: &Orders, count: u32) -> anyhow::Result<Self> {
        let sale = orders.sale();
        let layout = orders.layout();
        let pattern = layout.orders_and_users_pattern();
        let mut scan = Self::default();
        let client = redis.pool().next();
        let mut pages = client.scan(pattern, Some(count.max(10)), None);
        while let Some(mut page) = pages
            .try_next()
            .await
            .with_context(|| format!("scanning the keys of sale {sale}"))?
        {
            let keys = page.take_results().unwrap_or_default();
            // Dropping the page asks for the next one while this one is read.
            drop(page);
            let mut order_keys = Vec::new();
            let mut user_keys = Vec::new();
            for key in keys {
                let Some(name) = key.as_str() else { continue };
                let Some(named) = layout.name_of(name) else {
                    continue;
                };
                if let KeyName::Order(id) = named {
                    match Uuid::parse_str(id) {
                        Ok(id) => order_keys.push((id, name.to_owned())),
                        Err(_) => tracing::warn!(
                            key = name,
                            "skipping an order key that is not an order id"
                        ),
                    }
                } else if let KeyName::User(user) = named {
                    match Uuid::parse_str(user) {
                        Ok(user) => user_keys.push((user, name.to_owned())),
                        Err(_) => {
                            tracing::warn!(key = name, "skipping a user key that is not a user id")
                        }
                    }
                }
            }
            for (id, read) in read_orders(redis, &order_keys).await? {
                match read {
                    Some(Ok(order)) => {
                        scan.orders.insert(id, order);
                    }
                    Some(Err(problem)) => scan.malformed.push((id, problem)),
                    // Gone between SCAN and HMGET: only a wipe does that.
                    None => {}
                }
            }
            if !user_keys.is_empty() {
                let names: Vec<String> = user_keys.iter().map(|(_, k)| k.clone()).collect();
                let values: Vec<Value> = redis
                    .pool()
                    .mget(names)
                    .await
                    .with_context(|| format!("reading users' counts of sale {sale}"))?;
                for ((user, key), value) in user_keys.into_iter().zip(values) {
                    if value.is_null() {
                        continue;
                    }
                    let units = value
                        .as_i64()
                        .with_context(|| format!("{key} is not an integer"))?;
                    scan.user_counters.insert(user, units);
                }
            }
        }
        let holds_key = &orders.keys().holds;
        let page = PAGE as i64;
        let mut start = 0i64;
        loop {
            let members: Vec<String> = redis
                .pool()
                .zrange(holds_key, start, start + page - 1, None, false, None, false)
                .await
                .with_context(|| format!("reading the holds of sale {sale}"))?;
            let n = members.len() as i64;
            for member in members {
                if let Ok(id) = Uuid::parse_str(&member) {
                    scan.holds.insert(id);
                }
                scan.holds_members.push(member);
            }
            if n < page {
                break;
            }
            start += page;
        }
        Ok(scan)
    }

    fn counts(&self) -> StateCounts {
        let mut counts = StateCounts::default();
        for order in self.orders.values() {
            counts.add(order.state, order.quantity);
        }
        counts
    }

    /// Units per user in HELD + PAYING + PAID hashes.
    fn user_units(&self) -> HashMap<Uuid, i64> {
        let mut units: HashMap<Uuid, i64> = HashMap::new();
        for order in self.orders.values() {
            if order.state.is_live() || order.state == OrderState::Paid {
                *units.entry(order.user).or_insert(0) += order.quantity;
            }
        }
        units
    }
}

/// Reads `user`, `qty` and `state` of each order hash, pipelined: `None` for a hash that
/// does not exist, `Some(Err(problem))` for one that cannot be read.
async fn read_orders(
    redis: &Redis,
    keys: &[(Uuid, String)],
) -> anyhow::Result<Vec<(Uuid, Option<Result<RedisOrder, String>>)>> {
    let pool = redis.pool();
    let replies = try_join_all(keys.iter().map(|(id, key)| async move {
        let values: Vec<Value> = pool
            .hmget(key.as_str(), vec!["user", "qty", "state"])
            .await
            .with_context(|| format!("reading order {id}"))?;
        Ok::<_, anyhow::Error>((*id, values))
    }))
    .await?;
    Ok(replies
        .into_iter()
        .map(|(id, values)| (id, parse_order(&values)))
        .collect())
}

fn parse_order(values: &[Value]) -> Option<Result<RedisOrder, String>> {
    if values.iter().all(Value::is_null) {
        return None;
    }
    let [user, qty, state] = values else {
        return Some(Err(format!("HMGET returned {} values", values.len())));
    };
    let user = match user.as_bytes().map(Uuid::from_slice) {
        Some(Ok(user)) => user,
        _ => return Some(Err("field user is missing or not 16 bytes".into())),
    };
    let Some(quantity) = qty.as_i64().filter(|q| *q > 0) else {
        return Some(Err("field qty is missing or not a positive integer".into()));
    };
    let state = match state.as_string().map(|s| s.parse::<OrderState>()) {
        Some(Ok(state)) => state,
        _ => return Some(Err("field state is missing or unknown".into())),
    };
    Some(Ok(RedisOrder {
        user,
        quantity,
        state,
    }))
}

/// The order ids with an entry in the sale's outbox stream (read in pages, oldest first).
async fn read_outbox(redis: &Redis, orders: &Orders) -> anyhow::Result<HashSet<Uuid>> {
    let key = &orders.keys().events;
    let mut ids = HashSet::new();
    let mut start = "-".to_owned();
    loop {
        let reply: Value = redis
            .pool()
            .xrange(key.as_str(), start.as_str(), "+", Some(PAGE as u64))
            .await
            .with_context(|| format!("reading the outbox of sale {}", orders.sale()))?;
        let entries = match reply {
            Value::Array(entries) => entries,
            Value::Null => Vec::new(),
            other => anyhow::bail!("XRANGE: unexpected reply {other:?}"),
        };
        let n = entries.len();
        let mut last = None;
        for entry in entries {
            let Value::Array(mut pair) = entry else {
                anyhow::bail!("XRANGE: an entry is not an array");
            };
            anyhow::ensure!(pair.len() == 2, "XRANGE: an entry has {} parts", pair.len());
            let fields = pair.pop().unwrap_or(Value::Null);
            last = pair.pop().and_then(|v| v.as_string());
            if let Value::Array(fields) = fields {
                let mut it = fields.iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    if k.as_string().as_deref() == Some("order") {
                        if let Some(id) = v.as_string().and_then(|s| Uuid::parse_str(&s).ok()) {
                            ids.insert(id);
                        }
                        break;
                    }
                }
            }
        }
        match last {
            Some(id) if n >= PAGE => start = format!("({id}"),
            _ => return Ok(ids),
        }
    }
}

/// Escapes the glob characters of a Redis `MATCH` pattern.
#[cfg(test)]
mod tests {
    use super::*;
    use OrderState::*;

    #[test]
    fn arrows_reach_forward_only() {
        assert!(reaches(Held, Paid) && reaches(Held, Expired) && reaches(Paying, Failed));
        assert!(!reaches(Paying, Held) && !reaches(Paying, Cancelled) && !reaches(Paid, Failed));
        for s in OrderState::ALL {
            assert!(reaches(s, s));
        }
    }

    #[test]
    fn in_flight_changes_are_pending_and_the_rest_breaches() {
        // Same state: fine, settled or not.
        assert_eq!(compare(Paid, Paid, false, true), Verdict::Agree);
        // MySQL behind Redis, the change still in the outbox: pending; not in it: breach.
        assert!(matches!(
            compare(Paying, Held, true, false),
            Verdict::Pending(_)
        ));
        assert_eq!(compare(Paying, Held, false, false), Verdict::Breach);
        assert!(matches!(
            compare(Expired, Held, true, false),
            Verdict::Pending(_)
        ));
        // Redis PAID means MySQL was written first: never pending.
        assert_eq!(compare(Paid, Paying, true, false), Verdict::Breach);
        // The confirm worker between MySQL and Redis.
        assert!(matches!(
            compare(Paying, Paid, false, false),
            Verdict::Pending(_)
        ));
        // MySQL ahead: the order may have moved after the scan.
        assert_eq!(compare(Held, Cancelled, false, false), Verdict::Recheck);
        // Different end states: nothing explains them.
        assert_eq!(compare(Expired, Cancelled, true, false), Verdict::Breach);
        assert_eq!(compare(Failed, Paid, true, false), Verdict::Breach);
        // Settled: any difference is a breach.
        assert_eq!(compare(Paying, Paid, false, true), Verdict::Breach);
        assert_eq!(compare(Paying, Held, true, true), Verdict::Breach);
    }

    #[test]
    fn a_second_look_must_be_at_or_past_mysql() {
        assert!(rechecked(Cancelled, Cancelled));
        assert!(rechecked(Paying, Paid));
        assert!(rechecked(Paid, Paying));
        assert!(!rechecked(Cancelled, Held));
        assert!(!rechecked(Paid, Failed));
    }

    #[test]
    fn codes_serialize_as_their_names() -> anyhow::Result<()> {
        for code in [
            BreachCode::AvailNegative,
            BreachCode::CounterDrift,
            BreachCode::MissingInRedis,
            BreachCode::UserLimitExceeded,
            BreachCode::DuplicatePayment,
            BreachCode::LiveOrderLeft,
            BreachCode::NotSettled,
        ] {
            assert_eq!(
                serde_json::to_string(&code)?,
                format!("\"{}\"", code.as_str())
            );
        }
        Ok(())
    }
}
