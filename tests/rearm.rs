//! `sale rearm` against the machine's real Redis and MariaDB: a sale with paid, paying, held
//! and cancelled orders loses its Redis state, and the rebuild keeps paid paid, paying paying
//! (with its timer), gives the held stock back, and takes new orders without overselling.

use anyhow::Context;
use chrono::Utc;
use dropline_core::clients::deps::{Deps, Needs};
use dropline_core::clients::redis::Redis;
use dropline_core::ids::{OrderId, ProductId, SaleId, UserId};
use dropline_core::orders::ledger;
use dropline_core::orders::outbox::Outbox;
use dropline_core::orders::{OrderState, Orders, ReserveOutcome, ReserveRequest, Target};
use dropline_core::sale::{self, SaleConfig};
use dropline_ops::rearm::rearm;
use dropline_testkit::TestEnv;
use dropline_workers::ledger as writes;
use fred::prelude::*;
use std::time::Duration;

const STOCK: i64 = 10;

async fn sale_in_mysql(pool: &sqlx::MySqlPool) -> anyhow::Result<(SaleId, SaleConfig)> {
    let product = ProductId::new_v7();
    let sale = SaleId::new_v7();
    sqlx::query(
        "INSERT INTO products (id, name, price, currency, created_at) \
         VALUES (?, 'Chair', 1000, 'KRW', UTC_TIMESTAMP(3))",
    )
    .bind(product)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO sales (id, product_id, stock_total, opens_at, per_user_limit, hold_seconds, \
           admit_per_second, created_at, updated_at) \
         VALUES (?, ?, ?, UTC_TIMESTAMP(3) - INTERVAL 1 MINUTE, 2, 600, 100, UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))",
    )
    .bind(sale)
    .bind(product)
    .bind(STOCK as i32)
    .execute(pool)
    .await?;
    let config = SaleConfig::load(pool, sale)
        .await?
        .context("the sale just inserted")?;
    Ok((sale, config))
}

async fn admit(redis: &Redis, sale: SaleId, user: UserId) -> anyhow::Result<()> {
    let deadline = Utc::now().timestamp_millis() + 600_000;
    let _: i64 = redis
        .pool()
        .zadd(
            redis.sale_key(sale, "adm"),
            None,
            None,
            false,
            false,
            (deadline as f64, &user.as_bytes()[..]),
        )
        .await?;
    Ok(())
}

async fn order(orders: &Orders, redis: &Redis, qty: u32) -> anyhow::Result<OrderId> {
    let user = UserId::new_v7();
    admit(redis, orders.sale(), user).await?;
    let id = OrderId::new_v7();
    match orders
        .reserve(&ReserveRequest {
            order: id,
            user,
            quantity: qty,
            idempotency_key: "k".into(),
        })
        .await?
    {
        ReserveOutcome::Created(_) => Ok(id),
        other => anyhow::bail!("reserve: {other:?}"),
    }
}

async fn record_outbox(pool: &sqlx::MySqlPool, redis: &Redis, sale: SaleId) -> anyhow::Result<()> {
    let outbox = Outbox::new(redis, sale);
    outbox.ensure_group().await?;
    loop {
        let entries = outbox.read("test", 500).await?;
        if entries.is_empty() {
            return Ok(());
        }
        let rows: Vec<_> = entries.iter().filter_map(|e| e.row.clone()).collect();
        writes::record(pool, &rows).await?;
        outbox
            .done(&entries.into_iter().map(|e| e.id).collect::<Vec<_>>())
            .await?;
    }
}

async fn counters(redis: &Redis, sale: SaleId) -> anyhow::Result<(i64, i64, i64)> {
    let pool = redis.pool();
    let avail: i64 = pool.get(redis.sale_key(sale, "avail")).await?;
    let held: i64 = pool.get(redis.sale_key(sale, "held")).await?;
    let sold: i64 = pool.get(redis.sale_key(sale, "sold")).await?;
    Ok((avail, held, sold))
}

#[tokio::test]
async fn a_sale_redis_lost_is_rebuilt_from_mysql_without_overselling() -> anyhow::Result<()> {
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
    let (sale, config) = sale_in_mysql(&mysql).await?;
    anyhow::ensure!(sale::arm(&redis, sale, &config).await?);
    let orders = Orders::new(&redis, sale);

    // 2 paid (3 units), 1 paying (2 units), 1 held (1 unit), 1 cancelled (1 unit).
    let paid_a = order(&orders, &redis, 1).await?;
    let paid_b = order(&orders, &redis, 2).await?;
    let paying = order(&orders, &redis, 2).await?;
    let held = order(&orders, &redis, 1).await?;
    let cancelled = order(&orders, &redis, 1).await?;
    for id in [paid_a, paid_b, paying] {
        orders.begin_payment(id, Duration::from_secs(120)).await?;
    }
    orders.release(cancelled, Target::Cancelled).await?;
    record_outbox(&mysql, &redis, sale).await?;
    // The confirm worker's order: MySQL first, then Redis.
    let mut rows = Vec::new();
    for id in [paid_a, paid_b] {
        let o = orders.get(id).await?.context("order")?;
        rows.push(ledger::OrderRow::from(&o));
    }
    writes::confirm_paid(&mysql, &rows).await?;
    for id in [paid_a, paid_b] {
        orders.confirm(id).await?;
    }
    record_outbox(&mysql, &redis, sale).await?;
    assert_eq!(counters(&redis, sale).await?, (STOCK - 6, 3, 3));

    // Armed: refused without --force.
    assert!(rearm(&mysql, &redis, sale, false).await.is_err());

    // Redis loses the sale.
    let keys: Vec<String> = {
        let pattern = format!("{}:{{s:{sale}}}:*", redis.prefix());
        redis
            .pool()
            .custom(fred::cmd!("KEYS"), vec![pattern])
            .await?
    };
    let _: i64 = redis.pool().del(keys).await?;

    let report = rearm(&mysql, &redis, sale, false).await?;
    assert_eq!(report.paid_orders, 2);
    assert_eq!(report.paid_units, 3);
    assert_eq!(report.paying_orders, 1);
    assert_eq!(report.paying_units, 2);
    assert_eq!(report.expired_holds, 1);
    assert_eq!(report.available, STOCK - 5);
    // avail + held + sold = stock_total, the held unit is back.
    assert_eq!(counters(&redis, sale).await?, (STOCK - 5, 2, 3));
    let held_row = ledger::get(&mysql, held).await?.context("held row")?;
    assert_eq!(held_row.state, OrderState::Expired);
    // Ended orders get their hash back too (as `sale audit` expects), without units or timers.
    for (id, state) in [
        (held, OrderState::Expired),
        (cancelled, OrderState::Cancelled),
    ] {
        let o = orders.get(id).await?.context("an ended order's hash")?;
        assert_eq!(o.state, state);
        let ttl: i64 = redis.pool().pttl(orders.hold_key(id)).await?;
        assert!(ttl < 0, "no timer for an ended order (pttl {ttl})");
    }
    // Paid stays paid (a late confirm changes nothing), paying keeps its deadline and timer.
    let p = orders.get(paid_a).await?.context("paid order")?;
    assert_eq!(p.state, OrderState::Paid);
    assert!(!orders.confirm(paid_a).await?.applied());
    let live = orders.get(paying).await?.context("paying order")?;
    assert_eq!(live.state, OrderState::Paying);
    let ttl: i64 = redis.pool().pttl(orders.hold_key(paying)).await?;
    assert!(ttl > 0, "the paying order's timer is back (pttl {ttl})");
    // The paying order can still be confirmed; the user limits count restored units.
    assert!(orders.confirm(paying).await?.applied());
    assert_eq!(counters(&redis, sale).await?, (STOCK - 5, 0, 5));
    // The rest sells, and not one unit more.
    let mut made = 0;
    for _ in 0..10 {
        let user = UserId::new_v7();
        admit(&redis, sale, user).await?;
        if let ReserveOutcome::Created(_) = orders
            .reserve(&ReserveRequest {
                order: OrderId::new_v7(),
                user,
                quantity: 1,
                idempotency_key: "x".into(),
            })
            .await?
        {
            made += 1;
        }
    }
    assert_eq!(made, STOCK - 5);
    assert_eq!(counters(&redis, sale).await?, (0, STOCK - 5, 5));
    deps.close().await;
    env.cleanup().await
}

/// The door's settings and the access codes (design/door.md) come back from MySQL with the
/// sale; codes as the hashes MySQL keeps, never as text.
#[tokio::test]
async fn a_rearmed_sale_keeps_its_door_settings_and_access_codes() -> anyhow::Result<()> {
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
    let (sale, _) = sale_in_mysql(&mysql).await?;
    sqlx::query(
        "UPDATE sales SET pow_difficulty = 12, access_groups = 'vip,fans', \
         presale_only_until = UTC_TIMESTAMP(3) + INTERVAL 1 HOUR, notice = 'Back soon' WHERE id = ?",
    )
    .bind(sale)
    .execute(&mysql)
    .await?;
    let codes = [("ABCDEFGHJKMN", "vip", 1), ("ZZZZ99", "fans", 3)];
    for (code, group, uses) in codes {
        sqlx::query(
            "INSERT INTO access_codes (sale_id, code_hash, group_name, uses, created_at) \
             VALUES (?, ?, ?, ?, UTC_TIMESTAMP(3))",
        )
        .bind(sale)
        .bind(&sale::door::code_hash(sale, code)[..])
        .bind(group)
        .bind(uses)
        .execute(&mysql)
        .await?;
    }

    let report = rearm(&mysql, &redis, sale, false).await?;
    assert_eq!(report.codes, 2);
    let cfg: std::collections::HashMap<String, String> =
        redis.pool().hgetall(redis.sale_key(sale, "cfg")).await?;
    assert_eq!(cfg.get("pow_difficulty").map(String::as_str), Some("12"));
    assert_eq!(cfg.get("groups").map(String::as_str), Some("vip,fans"));
    assert_eq!(cfg.get("notice").map(String::as_str), Some("Back soon"));
    let presale: i64 = cfg
        .get("presale_only_until")
        .context("presale_only_until")?
        .parse()?;
    assert!(presale > Utc::now().timestamp_millis());
    let stored: std::collections::HashMap<Vec<u8>, String> =
        redis.pool().hgetall(redis.sale_key(sale, "codes")).await?;
    for (code, group, uses) in codes {
        assert_eq!(
            stored.get(&sale::door::code_hash(sale, code)[..]),
            Some(&format!("{group}:{uses}"))
        );
    }
    assert_eq!(stored.len(), 2);
    deps.close().await;
    env.cleanup().await
}
