//! The audit's checks: Redis's counters against its order hashes, MySQL's rows against the
//! stock and the limits, the payments, and each order's two sides against each other (what is
//! in flight is pending, not a breach; see the module docs of [`super`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Context;
use futures_util::TryStreamExt;
use sqlx::MySqlPool;

use dropline_core::ids::{OrderId, SaleId, UserId};

use crate::report::*;
use crate::scan::{RedisOrder, Scan, Snapshot, read_orders};
use crate::{MAX_LISTED, MAX_PENDING_LISTED, PAGE, UnknownSale, sale_row};
use dropline_core::clients::redis::Redis;
use dropline_core::orders::{OrderState, Orders};

/// Redis checks on the snapshot and the scan.
pub(super) fn check_redis(
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
    let mut users: Vec<(&UserId, &i64)> = scan.user_counters.iter().collect();
    users.sort();
    // A counter over the limit is a breach at any moment (reserve.lua keeps it under).
    let mut over: HashSet<UserId> = HashSet::new();
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
    let mut live_ids: Vec<&OrderId> = scan
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
            OrderId::parse_str(m)
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
            OrderId::parse_str(member).ok(),
            None,
        );
    }
    let derived = scan.user_units();
    let mut all_users: Vec<UserId> = derived
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
pub(super) async fn check_mysql(
    pool: &MySqlPool,
    sale: SaleId,
    mut redis: Option<&mut HashMap<OrderId, RedisOrder>>,
    outbox: &HashSet<OrderId>,
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
    let mut users: HashMap<UserId, (i64, bool)> = HashMap::new();
    {
        type Row = (OrderId, UserId, i32, String, i64, i64);
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
    let mut over: Vec<(UserId, i64, bool)> = users
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
pub(super) fn check_payments(
    f: &mut Findings,
    id: OrderId,
    user: UserId,
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
pub(super) async fn recheck(
    redis: &Redis,
    orders: &Orders,
    f: &mut Findings,
) -> anyhow::Result<()> {
    let queued = std::mem::take(&mut f.recheck);
    for chunk in queued.chunks(PAGE) {
        let keys: Vec<(OrderId, String)> = chunk
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
pub(super) enum Verdict {
    Agree,
    /// In flight: not a breach (never with `settled`).
    Pending(String),
    /// MySQL is ahead: the order may have moved after the scan; read Redis again.
    Recheck,
    Breach,
}

/// Whether `to` is `from` or follows it by DESIGN §5's arrows.
pub(super) fn reaches(from: OrderState, to: OrderState) -> bool {
    from == to
        || match from {
            OrderState::Held => true,
            OrderState::Paying => matches!(to, OrderState::Paid | OrderState::Failed),
            _ => false,
        }
}

/// Compares Redis's state (scanned) with MySQL's (read later); `in_outbox`: a change of the
/// order is still in the outbox stream.
pub(super) fn compare(
    redis: OrderState,
    mysql: OrderState,
    in_outbox: bool,
    settled: bool,
) -> Verdict {
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
pub(super) fn rechecked(mysql: OrderState, redis_now: OrderState) -> bool {
    reaches(mysql, redis_now) || (mysql == OrderState::Paid && redis_now == OrderState::Paying)
}

/// What the audit found so far.
pub(super) struct Findings {
    pub(super) settled: bool,
    pub(super) breaches: Vec<Breach>,
    pub(super) counts: BTreeMap<BreachCode, u64>,
    pub(super) pending: Pending,
    pub(super) pending_seen: HashSet<OrderId>,
    /// (order, MySQL state, scanned Redis state) to read again from Redis.
    pub(super) recheck: Vec<(OrderId, OrderState, Option<OrderState>)>,
    pub(super) notes: Vec<String>,
}

impl Findings {
    pub(super) fn new(settled: bool) -> Self {
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

    pub(super) fn breach(
        &mut self,
        code: BreachCode,
        message: String,
        order: Option<OrderId>,
        user: Option<UserId>,
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

    pub(super) fn pending(&mut self, order: OrderId, reason: String) {
        if !self.pending_seen.insert(order) {
            return;
        }
        self.pending.orders += 1;
        if self.pending.examples.len() < MAX_PENDING_LISTED {
            self.pending.examples.push(PendingOrder { order, reason });
        }
    }

    pub(super) fn pending_user(&mut self, user: UserId, units: i64, limit: i64) {
        self.notes.push(format!(
            "user {user} has {units} unit(s) in MySQL, over the limit of {limit}, with orders in flight: not counted as a breach"
        ));
    }

    pub(super) fn finish(self, sale: SaleId, redis: RedisFigures, mysql: MysqlFigures) -> Report {
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
}
