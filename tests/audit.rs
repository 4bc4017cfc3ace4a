//! `sale audit` (`dropline_audit`) against the machine's real Redis and MariaDB. Each
//! test builds a sale through the real code paths (`Orders` for every arrow, the outbox
//! drained into `ledger::record` as the recorder does, payment rows with
//! `ledger::record_payments` as the payment worker does, `ledger::confirm_paid` before
//! `confirm.lua` as the confirm worker does), checks that the audit passes, then tampers with
//! Redis or MySQL directly and checks that the breach is reported with its code.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use dropline_audit::{AuditOptions, BreachCode, Report, audit};
use dropline_core::clients::deps::{Deps, Needs};
use dropline_core::clients::redis::Redis;
use dropline_core::ids::{OrderId, ProductId, SaleId, UserId};
use dropline_core::orders::ledger::OrderRow;
use dropline_core::orders::outbox::Outbox;
use dropline_core::orders::{Orders, ReserveOutcome, ReserveRequest, Target};
use dropline_core::sale::{self, SaleConfig};
use dropline_testkit::TestEnv;
use dropline_workers::ledger::{self, PaymentRow};
use fred::prelude::*;
use uuid::Uuid;

const STOCK: i64 = 20;
const LIMIT: i64 = 2;

struct World {
    env: TestEnv,
    deps: Deps,
    mysql: sqlx::MySqlPool,
    redis: Redis,
    sale: SaleId,
    orders: Orders,
}

/// The orders of [`World::healthy`], by what happened to them.
struct Made {
    /// user A: 2 units, paid.
    paid_a: OrderId,
    user_a: UserId,
    /// user B: 1 unit paid, 1 unit held (at the limit of 2).
    paid_b: OrderId,
    held_b: OrderId,
    /// 1 unit, paying (no outcome yet).
    paying: OrderId,
    /// 1 unit, expired.
    expired: OrderId,
    /// 2 units, cancelled.
    cancelled: OrderId,
    /// 1 unit, failed (declined).
    failed: OrderId,
}

impl World {
    async fn start() -> anyhow::Result<Self> {
        let env = TestEnv::new()?;
        let deps = Deps::connect(
            &env.config,
            Needs {
                mysql: true,
                redis: true,
                amqp: false,
            },
        )
        .await?;
        let (mysql, redis) = (deps.mysql()?.clone(), deps.redis()?.clone());
        let product = ProductId::new_v7();
        let sale = SaleId::new_v7();
        sqlx::query(
            "INSERT INTO products (id, name, price, currency, created_at) \
             VALUES (?, 'Lamp', 1000, 'KRW', UTC_TIMESTAMP(3))",
        )
        .bind(product)
        .execute(&mysql)
        .await?;
        // Holds of 1 s at first, for the order that is to expire (see `healthy`).
        sqlx::query(
            "INSERT INTO sales (id, product_id, stock_total, opens_at, per_user_limit, hold_seconds, \
               admit_per_second, created_at, updated_at) \
             VALUES (?, ?, ?, UTC_TIMESTAMP(3) - INTERVAL 1 MINUTE, ?, 1, 100, UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))",
        )
        .bind(sale)
        .bind(product)
        .bind(STOCK as i32)
        .bind(LIMIT as i32)
        .execute(&mysql)
        .await?;
        let config = SaleConfig::load(&mysql, sale)
            .await?
            .context("the sale just inserted")?;
        anyhow::ensure!(sale::arm(&redis, sale, &config).await?, "armed twice");
        Ok(Self {
            orders: Orders::new(&redis, sale),
            env,
            deps,
            mysql,
            redis,
            sale,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.deps.close().await;
        self.env.cleanup().await
    }

    async fn audit(&self, settled: bool) -> anyhow::Result<Report> {
        audit(
            &self.mysql,
            &self.redis,
            self.sale,
            AuditOptions {
                settled,
                ..AuditOptions::default()
            },
        )
        .await
    }

    /// A new buyer, admitted for ten minutes (as the admitter writes `adm`).
    async fn buyer(&self) -> anyhow::Result<UserId> {
        let user = UserId::new_v7();
        let deadline = Utc::now().timestamp_millis() + 600_000;
        let _: i64 = self
            .redis
            .pool()
            .zadd(
                &self.orders.keys().adm,
                None,
                None,
                false,
                false,
                (deadline as f64, &user.as_bytes()[..]),
            )
            .await?;
        Ok(user)
    }

    /// A HELD order, as the api makes it.
    async fn reserve(&self, user: UserId, quantity: u32) -> anyhow::Result<OrderId> {
        let id = OrderId::new_v7();
        match self
            .orders
            .reserve(&ReserveRequest {
                order: id,
                user,
                quantity,
                idempotency_key: format!("k-{id}"),
            })
            .await?
        {
            ReserveOutcome::Created(_) => Ok(id),
            other => anyhow::bail!("reserve: {other:?}"),
        }
    }

    /// HELD → PAYING, as `POST /api/orders/{id}/pay` does.
    async fn begin_payment(&self, order: OrderId) -> anyhow::Result<()> {
        let t = self
            .orders
            .begin_payment(order, Duration::from_secs(600))
            .await?;
        anyhow::ensure!(t.applied(), "begin_payment: {t:?}");
        Ok(())
    }

    /// The payment worker's row.
    async fn payment_row(&self, order: OrderId, status: &str) -> anyhow::Result<()> {
        let o = self.orders.get(order).await?.context("order")?;
        ledger::record_payments(
            &self.mysql,
            &[PaymentRow {
                id: Uuid::now_v7(),
                order,
                sale: self.sale,
                amount: o.amount,
                currency: o.currency,
                status: status.into(),
                provider_ref: format!("ref-{order}"),
            }],
        )
        .await?;
        Ok(())
    }

    /// PAYING → PAID as the payment and confirm workers do it: payment row, MySQL, Redis.
    async fn pay(&self, order: OrderId) -> anyhow::Result<()> {
        self.payment_row(order, "approved").await?;
        let o = self.orders.get(order).await?.context("order")?;
        ledger::confirm_paid(&self.mysql, &[OrderRow::from(&o)]).await?;
        anyhow::ensure!(self.orders.confirm(order).await?.applied(), "confirm");
        Ok(())
    }

    /// PAYING → FAILED on a declined payment.
    async fn decline(&self, order: OrderId) -> anyhow::Result<()> {
        self.payment_row(order, "declined").await?;
        anyhow::ensure!(
            self.orders.release(order, Target::Failed).await?.applied(),
            "release failed"
        );
        Ok(())
    }

    /// Drains the outbox into MySQL, as the recorder does.
    async fn record(&self) -> anyhow::Result<()> {
        let outbox = Outbox::new(&self.redis, self.sale);
        outbox.ensure_group().await?;
        loop {
            let entries = outbox.read("test", 500).await?;
            if entries.is_empty() {
                return Ok(());
            }
            let rows: Vec<_> = entries.iter().filter_map(|e| e.row.clone()).collect();
            ledger::record(&self.mysql, &rows).await?;
            outbox
                .done(&entries.into_iter().map(|e| e.id).collect::<Vec<_>>())
                .await?;
        }
    }

    /// Orders in every state, all recorded in MySQL.
    async fn healthy(&self) -> anyhow::Result<Made> {
        // The order to expire gets a 1 s hold; the others get ten minutes (the operator's
        // hold time only applies to orders made after it changed).
        let expired = self.reserve(self.buyer().await?, 1).await?;
        self.set_cfg("hold_seconds", "600").await?;
        sqlx::query("UPDATE sales SET hold_seconds = 600 WHERE id = ?")
            .bind(self.sale)
            .execute(&self.mysql)
            .await?;
        let user_a = self.buyer().await?;
        let paid_a = self.reserve(user_a, 2).await?;
        let user_b = self.buyer().await?;
        let paid_b = self.reserve(user_b, 1).await?;
        let held_b = self.reserve(user_b, 1).await?;
        let paying = self.reserve(self.buyer().await?, 1).await?;
        let cancelled = self.reserve(self.buyer().await?, 2).await?;
        let failed = self.reserve(self.buyer().await?, 1).await?;
        for id in [paid_a, paid_b, paying, failed] {
            self.begin_payment(id).await?;
        }
        self.record().await?;
        self.pay(paid_a).await?;
        self.pay(paid_b).await?;
        self.decline(failed).await?;
        anyhow::ensure!(
            self.orders
                .release(cancelled, Target::Cancelled)
                .await?
                .applied()
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !self
            .orders
            .release(expired, Target::Expired)
            .await?
            .applied()
        {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the 1 s hold never came due"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.record().await?;
        Ok(Made {
            paid_a,
            user_a,
            paid_b,
            held_b,
            paying,
            expired,
            cancelled,
            failed,
        })
    }

    async fn set_cfg(&self, field: &str, value: &str) -> anyhow::Result<()> {
        let _: i64 = self
            .redis
            .pool()
            .hset(&self.orders.keys().cfg, vec![(field, value)])
            .await?;
        Ok(())
    }

    async fn incr(&self, key: &str, by: i64) -> anyhow::Result<()> {
        let _: i64 = self.redis.pool().incr_by(key, by).await?;
        Ok(())
    }

    async fn sql(&self, statement: &str, id: impl Into<Uuid>) -> anyhow::Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
            .bind(id.into())
            .execute(&self.mysql)
            .await
            .with_context(|| statement.to_owned())?;
        Ok(())
    }
}

fn codes(report: &Report) -> HashSet<BreachCode> {
    report.codes().into_iter().collect()
}

/// The report has exactly these codes (and says so in its messages).
fn assert_codes(report: &Report, expected: &[BreachCode]) {
    let expected: HashSet<BreachCode> = expected.iter().copied().collect();
    assert_eq!(codes(report), expected, "{report:#?}");
    assert_eq!(report.ok, expected.is_empty());
    for code in expected {
        assert!(
            report.breaches.iter().any(|b| b.code == code),
            "{code} counted but not listed"
        );
    }
}

#[tokio::test]
async fn a_healthy_sale_with_orders_in_every_state_passes() -> anyhow::Result<()> {
    let world = World::start().await?;
    let made = world.healthy().await?;
    let report = world.audit(false).await?;
    assert_codes(&report, &[]);
    assert_eq!(report.pending.orders, 0, "{report:#?}");
    assert!(report.redis.stable && report.redis.armed);
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    // Counts per state, the same on both sides: paid 2 orders (3 units), held 1, paying 1,
    // expired 1, cancelled 1 (2 units), failed 1.
    for counts in [report.redis.orders, report.mysql.orders] {
        assert_eq!((counts.paid.orders, counts.paid.units), (2, 3));
        assert_eq!((counts.held.orders, counts.held.units), (1, 1));
        assert_eq!((counts.paying.orders, counts.paying.units), (1, 1));
        assert_eq!((counts.expired.orders, counts.expired.units), (1, 1));
        assert_eq!((counts.cancelled.orders, counts.cancelled.units), (1, 2));
        assert_eq!((counts.failed.orders, counts.failed.units), (1, 1));
    }
    assert_eq!(report.redis.avail, Some(STOCK - 5));
    assert_eq!(report.redis.held, Some(2));
    assert_eq!(report.redis.sold, Some(3));
    assert_eq!(report.mysql.sold, 3);
    assert_eq!(report.mysql.paid_units, 3);
    assert_eq!(report.mysql.payments, 3);

    // The JSON has the stable shape.
    let json: serde_json::Value = serde_json::from_str(&report.to_json()?)?;
    assert_eq!(json["sale_id"], world.sale.to_string());
    assert_eq!(json["ok"], true);
    assert_eq!(json["redis"]["orders"]["paid"]["units"], 3);
    assert_eq!(json["mysql"]["orders"]["cancelled"]["orders"], 1);
    assert_eq!(json["redis"]["avail"], STOCK - 5);
    assert!(json["breaches"].as_array().is_some_and(Vec::is_empty));

    // Settled: the held and paying orders are left (Redis and MySQL agree on them, so each
    // is reported once), and their stock is neither available nor sold.
    let report = world.audit(true).await?;
    assert_codes(
        &report,
        &[BreachCode::LiveOrderLeft, BreachCode::UnsettledStock],
    );
    let left: HashSet<OrderId> = report.breaches.iter().filter_map(|b| b.order).collect();
    assert_eq!(left, HashSet::from([made.held_b, made.paying]));
    assert!(report.breaches.iter().any(|b| {
        b.message
            .contains(&format!("order {} is still held in Redis", made.held_b))
    }));

    // Once they end, the sale is settled.
    world.pay(made.paying).await?;
    anyhow::ensure!(
        world
            .orders
            .release(made.held_b, Target::Cancelled)
            .await?
            .applied()
    );
    world.record().await?;
    let report = world.audit(true).await?;
    assert_codes(&report, &[]);
    assert_eq!(report.redis.avail, Some(STOCK - 4));
    assert_eq!(report.mysql.orders.paid.units, 4);
    let _ = (made.expired, made.cancelled, made.failed, made.paid_b);
    world.stop().await
}

#[tokio::test]
async fn changes_still_in_the_outbox_are_pending_not_breaches() -> anyhow::Result<()> {
    let world = World::start().await?;
    let made = world.healthy().await?;
    // Not recorded yet: a new order, a cancellation, a payment started.
    let fresh = world.reserve(world.buyer().await?, 1).await?;
    anyhow::ensure!(
        world
            .orders
            .release(made.held_b, Target::Cancelled)
            .await?
            .applied()
    );
    world.begin_payment(fresh).await?;
    // The confirm worker between its MySQL commit and confirm.lua.
    world.payment_row(made.paying, "approved").await?;
    let o = world.orders.get(made.paying).await?.context("order")?;
    ledger::confirm_paid(&world.mysql, &[OrderRow::from(&o)]).await?;

    let report = world.audit(false).await?;
    assert_codes(&report, &[]);
    let pending: HashSet<OrderId> = report.pending.examples.iter().map(|p| p.order).collect();
    assert_eq!(
        pending,
        HashSet::from([fresh, made.held_b, made.paying]),
        "{report:#?}"
    );
    assert_eq!(report.pending.orders, 3);

    // Settled, all of it is a breach.
    let report = world.audit(true).await?;
    for code in [
        BreachCode::OutboxNotDrained,
        BreachCode::MissingInMysql,
        BreachCode::StateMismatch,
        BreachCode::LiveOrderLeft,
    ] {
        assert!(report.has(code), "{code}: {report:#?}");
    }

    // Recorded and confirmed, it is settled.
    anyhow::ensure!(world.orders.confirm(made.paying).await?.applied());
    world.pay(fresh).await?;
    world.record().await?;
    assert_codes(&world.audit(true).await?, &[]);
    world.stop().await
}

#[tokio::test]
async fn tampered_redis_counters_are_breaches() -> anyhow::Result<()> {
    let world = World::start().await?;
    let made = world.healthy().await?;
    let k = world.orders.keys().clone();

    // Oversold: avail below zero.
    world.incr(&k.avail, -(STOCK - 5) - 1).await?;
    let report = world.audit(false).await?;
    assert_codes(
        &report,
        &[BreachCode::AvailNegative, BreachCode::StockUnbalanced],
    );
    assert_eq!(report.redis.avail, Some(-1));
    world.incr(&k.avail, STOCK - 5 + 1).await?;
    assert_codes(&world.audit(false).await?, &[]);

    // A unit moved from avail to held without an order: the sum holds, the counter drifts.
    world.incr(&k.avail, -1).await?;
    world.incr(&k.held, 1).await?;
    assert_codes(&world.audit(false).await?, &[BreachCode::CounterDrift]);
    world.incr(&k.held, -1).await?;
    world.incr(&k.avail, 1).await?;

    // The same for sold.
    world.incr(&k.avail, -1).await?;
    world.incr(&k.sold, 1).await?;
    assert_codes(&world.audit(false).await?, &[BreachCode::CounterDrift]);
    world.incr(&k.sold, -1).await?;
    world.incr(&k.avail, 1).await?;

    // A user's count drifts from their orders.
    world.incr(&world.orders.user_key(made.user_a), -1).await?;
    let report = world.audit(false).await?;
    assert_codes(&report, &[BreachCode::UserCounterDrift]);
    assert_eq!(report.breaches[0].user, Some(made.user_a));
    world.incr(&world.orders.user_key(made.user_a), 1).await?;

    // A live order falls out of the sweeper's index.
    let _: i64 = world
        .redis
        .pool()
        .zrem(&k.holds, made.held_b.to_string())
        .await?;
    let report = world.audit(false).await?;
    assert_codes(&report, &[BreachCode::HoldsDrift]);
    assert_eq!(report.breaches[0].order, Some(made.held_b));
    world.stop().await
}

#[tokio::test]
async fn orders_redis_and_mysql_disagree_on_are_breaches() -> anyhow::Result<()> {
    let world = World::start().await?;
    let made = world.healthy().await?;
    let hash = world.orders.order_key(made.paid_a);
    let moved = format!("{hash}-moved");

    // PAID in MySQL, missing in Redis (renamed out of the scan's sight, then back).
    let _: () = world.redis.pool().rename(&hash, &moved).await?;
    let report = world.audit(false).await?;
    assert!(report.has(BreachCode::MissingInRedis), "{report:#?}");
    let missing = report
        .breaches
        .iter()
        .find(|b| b.code == BreachCode::MissingInRedis)
        .context("listed")?;
    assert_eq!(missing.order, Some(made.paid_a));
    assert!(
        missing.message.contains("paid in MySQL"),
        "{}",
        missing.message
    );
    // The sold counter and the user's count no longer match the hashes either.
    assert!(report.has(BreachCode::CounterDrift));
    let _: () = world.redis.pool().rename(&moved, &hash).await?;
    assert_codes(&world.audit(false).await?, &[]);

    // PAID in MySQL, FAILED in Redis.
    let _: i64 = world.redis.pool().hset(&hash, ("state", "failed")).await?;
    let report = world.audit(false).await?;
    assert!(report.has(BreachCode::StateMismatch), "{report:#?}");
    let _: i64 = world.redis.pool().hset(&hash, ("state", "paid")).await?;

    // Another quantity in MySQL.
    world
        .sql(
            "UPDATE orders SET quantity = quantity + 1 WHERE id = ?",
            made.cancelled,
        )
        .await?;
    assert_codes(
        &world.audit(false).await?,
        &[BreachCode::OrderFieldsMismatch],
    );
    world
        .sql(
            "UPDATE orders SET quantity = quantity - 1 WHERE id = ?",
            made.cancelled,
        )
        .await?;

    // An order MySQL lost, with nothing in flight.
    world
        .sql("DELETE FROM orders WHERE id = ?", made.expired)
        .await?;
    let report = world.audit(false).await?;
    assert_codes(&report, &[BreachCode::MissingInMysql]);
    assert_eq!(report.breaches[0].order, Some(made.expired));

    // PAID in Redis without a MySQL row is a breach even while its changes are still in the
    // outbox: the confirm worker writes MySQL before Redis.
    let late = world.reserve(world.buyer().await?, 1).await?;
    world.begin_payment(late).await?;
    world.pay(late).await?;
    world.sql("DELETE FROM orders WHERE id = ?", late).await?;
    let report = world.audit(false).await?;
    assert!(
        report
            .breaches
            .iter()
            .any(|b| b.code == BreachCode::MissingInMysql && b.order == Some(late)),
        "{report:#?}"
    );
    assert_eq!(report.pending.orders, 0, "{report:#?}");
    world.stop().await
}

#[tokio::test]
async fn a_user_over_the_limit_is_a_breach_on_both_sides() -> anyhow::Result<()> {
    let world = World::start().await?;
    let made = world.healthy().await?;
    // User A holds 2 units; the limit drops to 1 on both sides (the config agrees).
    world.set_cfg("per_user_limit", "1").await?;
    world
        .sql(
            "UPDATE sales SET per_user_limit = 1 WHERE id = ?",
            world.sale,
        )
        .await?;
    let report = world.audit(false).await?;
    assert_codes(&report, &[BreachCode::UserLimitExceeded]);
    let users: HashSet<UserId> = report.breaches.iter().filter_map(|b| b.user).collect();
    assert!(users.contains(&made.user_a), "{report:#?}");
    let sides: Vec<bool> = report
        .breaches
        .iter()
        .map(|b| b.message.contains("in MySQL"))
        .collect();
    assert!(
        sides.contains(&true) && sides.contains(&false),
        "Redis and MySQL both: {report:#?}"
    );
    // A limit that differs between the two is a breach of its own.
    world.set_cfg("per_user_limit", "2").await?;
    assert!(world.audit(false).await?.has(BreachCode::ConfigMismatch));
    world.stop().await
}

#[tokio::test]
async fn payment_and_sold_count_breaches_in_mysql() -> anyhow::Result<()> {
    let world = World::start().await?;
    let made = world.healthy().await?;

    // A paid order without its payment row.
    world
        .sql("DELETE FROM payments WHERE order_id = ?", made.paid_a)
        .await?;
    let report = world.audit(false).await?;
    assert_codes(&report, &[BreachCode::PaidWithoutPayment]);
    assert_eq!(report.breaches[0].order, Some(made.paid_a));

    // A second payment row for an order (the unique key dropped, as a bad migration would).
    sqlx::query("ALTER TABLE payments DROP INDEX uq_payments_order")
        .execute(&world.mysql)
        .await?;
    world
        .sql(
            "INSERT INTO payments (id, order_id, sale_id, amount, currency, status, provider_ref, \
               created_at, updated_at) \
             SELECT UNHEX(REPLACE(UUID(), '-', '')), order_id, sale_id, amount, currency, status, \
               'again', created_at, updated_at FROM payments WHERE order_id = ?",
            made.paid_b,
        )
        .await?;
    let report = world.audit(false).await?;
    assert_codes(
        &report,
        &[BreachCode::PaidWithoutPayment, BreachCode::DuplicatePayment],
    );
    assert!(
        report
            .breaches
            .iter()
            .any(|b| b.code == BreachCode::DuplicatePayment && b.order == Some(made.paid_b))
    );

    // A paid order whose payment was refunded.
    world
        .sql(
            "UPDATE payments SET status = 'refunded' WHERE order_id = ?",
            made.paid_b,
        )
        .await?;
    assert!(
        world
            .audit(false)
            .await?
            .has(BreachCode::PaymentNotApproved)
    );

    // sales.sold no longer the sum of the paid rows.
    world
        .sql("UPDATE sales SET sold = sold - 1 WHERE id = ?", world.sale)
        .await?;
    let report = world.audit(false).await?;
    assert!(report.has(BreachCode::SoldMismatch), "{report:#?}");
    assert_eq!(report.mysql.sold, 2);
    assert_eq!(report.mysql.paid_units, 3);
    world.stop().await
}

#[tokio::test]
async fn a_sale_redis_lost_and_an_unknown_sale() -> anyhow::Result<()> {
    let world = World::start().await?;
    world.healthy().await?;
    // Unknown sale: an error of its own type, not a report.
    let unknown = audit(
        &world.mysql,
        &world.redis,
        SaleId::new_v7(),
        AuditOptions::default(),
    )
    .await;
    let error = unknown.err().context("an unknown sale is an error")?;
    assert!(
        error
            .downcast_ref::<dropline_audit::UnknownSale>()
            .is_some(),
        "{error:#}"
    );
    // Redis lost the sale: one breach says so; MySQL is still checked.
    let pattern = format!("{}:{{s:{}}}:*", world.redis.prefix(), world.sale);
    let keys: Vec<String> = world
        .redis
        .pool()
        .custom(fred::cmd!("KEYS"), vec![pattern])
        .await?;
    let _: i64 = world.redis.pool().del(keys).await?;
    let report = world.audit(false).await?;
    assert_codes(&report, &[BreachCode::RedisNotArmed]);
    assert!(!report.redis.armed);
    assert_eq!(report.mysql.orders.paid.units, 3);
    world.stop().await
}

/// A sale of 100,000 orders (held, paying, paid, cancelled), all recorded: the audit passes,
/// and prints how long it took. Not a pass/fail check of speed on a shared machine; run with
/// `cargo nextest run -p dropline-core --test audit --run-ignored only --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run explicitly"]
async fn a_sale_of_100k_orders() -> anyhow::Result<()> {
    use futures_util::{StreamExt, TryStreamExt};
    const ORDERS: usize = 100_000;
    let world = World::start().await?;
    world.set_cfg("hold_seconds", "3600").await?;
    let started = std::time::Instant::now();
    let users: Vec<UserId> = (0..ORDERS).map(|_| UserId::new_v7()).collect();
    let deadline = Utc::now().timestamp_millis() + 3_600_000;
    for chunk in users.chunks(1000) {
        let mut args = vec![Value::from(world.orders.keys().adm.as_str())];
        for user in chunk {
            args.push(Value::from(deadline));
            args.push(Value::from(&user.as_bytes()[..]));
        }
        let _: i64 = world.redis.pool().custom(fred::cmd!("ZADD"), args).await?;
    }
    // Stock for all of them: raise it on both sides before any order.
    let stock = ORDERS as i64;
    world.set_cfg("stock_total", &stock.to_string()).await?;
    world
        .incr(&world.orders.keys().avail, stock - STOCK)
        .await?;
    sqlx::query("UPDATE sales SET stock_total = ? WHERE id = ?")
        .bind(stock)
        .bind(world.sale)
        .execute(&world.mysql)
        .await?;
    let ids: Vec<OrderId> = futures_util::stream::iter(users.iter().copied())
        .map(|user| world.reserve(user, 1))
        .buffered(64)
        .try_collect()
        .await?;
    let paying: Vec<OrderId> = ids.iter().copied().step_by(4).collect();
    let cancelled: Vec<OrderId> = ids.iter().copied().skip(1).step_by(4).collect();
    futures_util::stream::iter(paying.iter().copied())
        .map(|id| world.begin_payment(id))
        .buffered(64)
        .try_collect::<Vec<()>>()
        .await?;
    futures_util::stream::iter(cancelled.iter().copied())
        .map(|id| {
            let orders = &world.orders;
            async move {
                orders.release(id, Target::Cancelled).await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffered(64)
        .try_collect::<Vec<()>>()
        .await?;
    world.record().await?;
    // Half the paying ones are paid, a batch of 500 at a time as the workers do.
    for chunk in paying.chunks(1000).map(|c| &c[..500]) {
        let mut rows = Vec::new();
        let mut payments = Vec::new();
        for id in chunk {
            let o = world.orders.get(*id).await?.context("order")?;
            payments.push(PaymentRow {
                id: Uuid::now_v7(),
                order: *id,
                sale: world.sale,
                amount: o.amount,
                currency: o.currency.clone(),
                status: "approved".into(),
                provider_ref: format!("ref-{id}"),
            });
            rows.push(OrderRow::from(&o));
        }
        ledger::record_payments(&world.mysql, &payments).await?;
        ledger::confirm_paid(&world.mysql, &rows).await?;
        for id in chunk {
            world.orders.confirm(*id).await?;
        }
    }
    world.record().await?;
    eprintln!(
        "made {ORDERS} orders in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let timed = std::time::Instant::now();
    let report = world.audit(false).await?;
    let elapsed = timed.elapsed();
    assert_codes(&report, &[]);
    assert_eq!(report.redis.orders.total_orders(), ORDERS as u64);
    assert_eq!(report.mysql.orders.total_orders(), ORDERS as u64);
    let keys: i64 = world.redis.pool().dbsize().await?;
    eprintln!(
        "audit of {ORDERS} orders ({keys} keys in Redis): {:.2} s, {} scan(s)\n{}",
        elapsed.as_secs_f64(),
        report.redis.scans,
        report.to_json()?
    );
    world.stop().await
}
