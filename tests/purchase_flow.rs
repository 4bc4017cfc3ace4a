//! End to end through the real api, RabbitMQ, MariaDB and Redis with every worker running
//! (payment, confirm, expiry + recorder, mail): the seeds' scenarios, with DESIGN §6 checked at
//! samples taken during the run and at the end.
//!
//! - 10,000 concurrent buyers against stock 10 → exactly 10 orders, all paid;
//! - 8,500 concurrent orders against stock 1,000 → exactly 1,000 paid, some declined first
//!   (their stock comes back and sells again);
//! - at every sample: `avail + held + sold = stock_total`, `avail ≥ 0`, MySQL `sold` = the paid
//!   rows' units ≤ stock; at the end also `avail + sold = stock_total`, Redis and MySQL agree on
//!   every order, one payment row per paid order, every buyer within the per-user limit.

#[path = "../api/tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use chrono::{SecondsFormat, Utc};
use common::TestApi;
use dropline_core::auth::tokens::{self, PassClaims, Role};
use dropline_core::ids::{OrderId, SaleId, UserId};
use dropline_core::orders::ledger;
use dropline_core::orders::{OrderState, Orders};
use dropline_workers::Kind;
use fred::prelude::*;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::json;
use tokio_util::sync::CancellationToken;

struct Rig {
    api: TestApi,
    admin: String,
    workers: tokio::task::JoinHandle<anyhow::Result<()>>,
    stop_workers: CancellationToken,
}

impl Rig {
    async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    /// [`Rig::start`] with more config overrides (env form).
    async fn start_with(extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut overrides = vec![
            ("PAYMENT__SIM_LATENCY_MS", "5"),
            ("EXPIRY__SWEEP_INTERVAL_SECONDS", "1"),
            ("MYSQL__MAX_CONNECTIONS", "20"),
            ("REDIS__POOL_SIZE", "4"),
        ];
        overrides.extend_from_slice(extra);
        let api = TestApi::start(&overrides).await?;
        let admin = api.admin().await?;
        let stop_workers = CancellationToken::new();
        let workers = tokio::spawn({
            let config = api.env.config.clone();
            let deps = api.deps.clone();
            let stop = stop_workers.clone();
            async move { dropline_workers::run(Kind::All, &config, &deps, stop).await }
        });
        Ok(Self {
            api,
            admin,
            workers,
            stop_workers,
        })
    }

    async fn sale(&self, stock: i64, limit: i64) -> anyhow::Result<SaleId> {
        let product = self
            .api
            .post(
                "/api/admin/products",
                Some(&self.admin),
                json!({"name": "Limited chair", "price": 1_000}),
            )
            .await?;
        product.expect(201, None);
        let opens = (Utc::now() - chrono::Duration::minutes(1))
            .to_rfc3339_opts(SecondsFormat::Millis, true);
        let sale = self
            .api
            .post(
                "/api/admin/sales",
                Some(&self.admin),
                json!({"product_id": product.body["id"], "stock": stock,
                       "per_user_limit": limit, "opens_at": opens}),
            )
            .await?;
        sale.expect(201, None);
        Ok(SaleId::parse_str(
            sale.body["id"].as_str().context("sale id")?,
        )?)
    }

    /// `n` buyers: rows in `users` (the mail worker needs their address), access tokens,
    /// admissions and passes, made in bulk (argon2 sign-ups are not what this measures).
    async fn buyers(
        &self,
        sale: SaleId,
        n: usize,
    ) -> anyhow::Result<Vec<(UserId, String, String)>> {
        let ids: Vec<UserId> = (0..n).map(|_| UserId::new_v7()).collect();
        for chunk in ids.chunks(1000) {
            let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(
                "INSERT INTO users (id, email, password_hash, name, role, email_verified_at, created_at, updated_at) ",
            );
            q.push_values(chunk, |mut b, id| {
                b.push_bind(*id)
                    .push_bind(format!("{}@buyers.example", id.as_uuid().simple()))
                    .push_bind("not-a-hash")
                    .push_bind("Buyer")
                    .push_bind("buyer")
                    .push_bind(Utc::now())
                    .push_bind(Utc::now())
                    .push_bind(Utc::now());
            });
            q.build().execute(self.api.mysql()).await?;
        }
        let redis = self.api.deps.redis()?;
        let deadline = (Utc::now().timestamp_millis() + 600_000) as f64;
        for chunk in ids.chunks(1000) {
            let members: Vec<(f64, Vec<u8>)> = chunk
                .iter()
                .map(|id| (deadline, id.as_bytes().to_vec()))
                .collect();
            let _: i64 = redis
                .pool()
                .zadd(
                    redis.sale_key(sale, "adm"),
                    None,
                    None,
                    false,
                    false,
                    members,
                )
                .await?;
        }
        let now = Utc::now().timestamp();
        ids.into_iter()
            .map(|id| {
                let token = self.api.token(id, Role::Buyer)?;
                let pass =
                    tokens::sign(&self.api.passes, &PassClaims::new(id, sale, now, now + 600))
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok((id, token, pass))
            })
            .collect()
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop_workers.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.workers).await???;
        self.api.stop().await
    }
}

/// DESIGN §6 at one moment (Redis counters, MySQL sold vs paid rows); returns
/// (avail, held, sold) in Redis.
async fn invariants(
    redis: &dropline_core::clients::redis::Redis,
    mysql: &sqlx::MySqlPool,
    sale: SaleId,
    stock: i64,
) -> anyhow::Result<(i64, i64, i64)> {
    let keys: Vec<String> = ["avail", "held", "sold"]
        .iter()
        .map(|k| redis.sale_key(sale, k))
        .collect();
    // One round trip: the three counters move together inside each script.
    let values: Vec<i64> = redis.pool().mget(keys).await?;
    let [avail, held, sold] = values[..] else {
        anyhow::bail!("MGET returned {values:?}");
    };
    anyhow::ensure!(avail >= 0, "avail {avail} < 0");
    anyhow::ensure!(
        avail + held + sold == stock,
        "avail {avail} + held {held} + sold {sold} != {stock}"
    );
    let mut tx = mysql.begin().await?;
    let (mysql_sold,): (i32,) = sqlx::query_as("SELECT sold FROM sales WHERE id = ?")
        .bind(sale)
        .fetch_one(&mut *tx)
        .await?;
    let (paid,): (i64,) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(quantity), 0) AS SIGNED) FROM orders \
         WHERE sale_id = ? AND status = 'paid'",
    )
    .bind(sale)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    anyhow::ensure!(
        i64::from(mysql_sold) == paid,
        "sales.sold {mysql_sold} != paid rows {paid}"
    );
    anyhow::ensure!(paid <= stock, "MySQL paid {paid} > stock {stock}");
    Ok((avail, held, sold))
}

/// Checks the invariants every 20 ms until stopped; the task fails on the first breach and
/// otherwise returns how many samples it took.
fn sampler(
    api: &TestApi,
    sale: SaleId,
    stock: i64,
) -> anyhow::Result<(
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<u32>>,
)> {
    let stop = CancellationToken::new();
    let redis = api.deps.redis()?.clone();
    let mysql = api.mysql().clone();
    let flag = stop.clone();
    let handle = tokio::spawn(async move {
        let mut samples = 0u32;
        while !flag.is_cancelled() {
            invariants(&redis, &mysql, sale, stock)
                .await
                .with_context(|| format!("sample {samples}"))?;
            samples += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(samples)
    });
    Ok((stop, handle))
}

type Buyer = (UserId, String, String);

/// Every buyer in `who` orders (one unit) and, if it got an order, pays; ~1 in 10 (by id)
/// pays with `tok_fail`. Returns each buyer with the order's status code.
async fn round<'a>(
    api: &TestApi,
    sale: SaleId,
    who: &[&'a Buyer],
) -> anyhow::Result<Vec<(&'a Buyer, u16)>> {
    futures_util::stream::iter(who.iter().copied())
        .map(|b| async move {
            let (status, order) = order(api, b, sale).await?;
            if let Some(order) = order {
                let card = if b.0.as_uuid().as_u128() % 10 == 0 {
                    "tok_fail"
                } else {
                    "tok_ok"
                };
                anyhow::ensure!(pay(api, &b.1, order, card).await? == 202, "pay refused");
            }
            Ok::<_, anyhow::Error>((b, status))
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

async fn order(
    api: &TestApi,
    buyer: &Buyer,
    sale: SaleId,
) -> anyhow::Result<(u16, Option<OrderId>)> {
    let reply = api
        .call_with(
            Method::POST,
            "/api/orders",
            Some(&buyer.1),
            &[("Dropline-Pass", &buyer.2), ("Idempotency-Key", "only")],
            Some(json!({"sale_id": sale, "quantity": 1})),
        )
        .await?;
    let id = reply.body["id"]
        .as_str()
        .and_then(|s| OrderId::parse_str(s).ok());
    Ok((reply.status.as_u16(), id))
}

async fn pay(api: &TestApi, token: &str, order: OrderId, card: &str) -> anyhow::Result<u16> {
    let reply = api
        .post(
            &format!("/api/orders/{order}/pay"),
            Some(token),
            json!({"card_token": card}),
        )
        .await?;
    Ok(reply.status.as_u16())
}

/// Waits until Redis and MySQL agree on every order of the sale and none is live.
async fn settle(
    api: &TestApi,
    sale: SaleId,
    limit: Duration,
) -> anyhow::Result<HashMap<OrderId, OrderState>> {
    let orders = Orders::new(api.deps.redis()?, sale);
    let started = std::time::Instant::now();
    loop {
        let rows = ledger::of_sale(api.mysql(), sale).await?;
        let mut agreed = true;
        let mut states = HashMap::new();
        for row in &rows {
            let redis = orders
                .get(row.id)
                .await?
                .context("order missing in Redis")?;
            if redis.state != row.state || redis.state.is_live() {
                agreed = false;
                break;
            }
            states.insert(row.id, row.state);
        }
        if agreed {
            return Ok(states);
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "Redis and MySQL did not agree within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_buyers_for_ten_chairs_make_exactly_ten_paid_orders() -> anyhow::Result<()> {
    let rig = Rig::start().await?;
    let stock = 10;
    let sale = rig.sale(stock, 1).await?;
    let buyers = rig.buyers(sale, 10_000).await?;
    let api = &rig.api;

    let results: Vec<anyhow::Result<(u16, Option<OrderId>)>> =
        futures_util::stream::iter(buyers.iter())
            .map(|b| order(api, b, sale))
            .buffer_unordered(256)
            .collect()
            .await;
    let mut winners = Vec::new();
    let mut sold_out = 0;
    for r in results {
        match r? {
            (201, Some(id)) => winners.push(id),
            (409, _) => sold_out += 1,
            (status, _) => anyhow::bail!("unexpected status {status}"),
        }
    }
    assert_eq!(winners.len(), 10, "exactly the stock is reserved");
    assert_eq!(sold_out, 10_000 - 10);
    invariants(api.deps.redis()?, api.mysql(), sale, stock).await?;

    let by_order: HashMap<OrderId, &(UserId, String, String)> = {
        let orders = Orders::new(api.deps.redis()?, sale);
        let mut map = HashMap::new();
        for id in &winners {
            let o = orders.get(*id).await?.context("winner's order")?;
            let buyer = buyers.iter().find(|b| b.0 == o.user).context("winner")?;
            map.insert(*id, buyer);
        }
        map
    };
    for (order, buyer) in &by_order {
        assert_eq!(pay(api, &buyer.1, *order, "tok_ok").await?, 202);
    }
    let states = settle(api, sale, Duration::from_secs(60)).await?;
    assert_eq!(states.len(), 10);
    assert!(
        states.values().all(|s| *s == OrderState::Paid),
        "{states:?}"
    );
    assert_eq!(
        invariants(api.deps.redis()?, api.mysql(), sale, stock).await?,
        (0, 0, 10)
    );
    let (payments,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM payments WHERE sale_id = ? AND status = 'approved'")
            .bind(sale)
            .fetch_one(api.mysql())
            .await?;
    assert_eq!(payments, 10, "one payment per paid order");
    rig.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_thousand_five_hundred_orders_for_a_thousand_units_sell_exactly_a_thousand()
-> anyhow::Result<()> {
    let rig = Rig::start().await?;
    let stock = 1_000;
    let sale = rig.sale(stock, 1).await?;
    let buyers = rig.buyers(sale, 8_500).await?;
    let api = &rig.api;
    let (stop_sampling, samples) = sampler(api, sale, stock)?;

    // Everyone orders at once; each winner pays at once, one in ten with a card that is
    // declined, so stock comes back mid-run and the losers' next try can take it. Rounds go
    // on until the stock is sold for good.
    let mut pending: Vec<&Buyer> = buyers.iter().collect();
    for _ in 0..10 {
        let mut next = Vec::new();
        for (b, status) in round(api, sale, &pending).await? {
            match status {
                201 => {}
                409 => next.push(b),
                other => anyhow::bail!("unexpected status {other}"),
            }
        }
        // Declines release their stock before the next round.
        settle(api, sale, Duration::from_secs(60)).await?;
        pending = next;
        let (avail, _, _) = invariants(api.deps.redis()?, api.mysql(), sale, stock).await?;
        if avail == 0 {
            break;
        }
    }
    let states = settle(api, sale, Duration::from_secs(90)).await?;
    stop_sampling.cancel();
    let samples = samples.await??;
    assert!(samples > 10, "only {samples} samples");
    let paid = states.values().filter(|s| **s == OrderState::Paid).count();
    assert_eq!(paid, 1_000, "exactly the stock is paid");
    assert_eq!(
        invariants(api.deps.redis()?, api.mysql(), sale, stock).await?,
        (0, 0, 1_000)
    );
    // One approved payment per paid order, none for the others; every buyer within the limit.
    let (approved,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM payments WHERE sale_id = ? AND status = 'approved'")
            .bind(sale)
            .fetch_one(api.mysql())
            .await?;
    assert_eq!(approved, 1_000);
    let (over,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM (SELECT user_id FROM orders WHERE sale_id = ? AND status = 'paid' \
         GROUP BY user_id HAVING SUM(quantity) > 1) t",
    )
    .bind(sale)
    .fetch_one(api.mysql())
    .await?;
    assert_eq!(over, 0, "a buyer over the per-user limit");
    rig.stop().await
}

/// Places an order for a buyer made by [`Rig::buyers`] and returns its id.
async fn place(
    rig: &Rig,
    sale: SaleId,
    buyer: &(UserId, String, String),
    key: &str,
) -> anyhow::Result<OrderId> {
    let (_, token, pass) = buyer;
    let made = rig
        .api
        .call_with(
            Method::POST,
            "/api/orders",
            Some(token),
            &[("Dropline-Pass", pass.as_str()), ("Idempotency-Key", key)],
            Some(json!({"sale_id": sale, "quantity": 1})),
        )
        .await?;
    made.expect(201, None);
    Ok(OrderId::parse_str(
        made.body["id"].as_str().context("order id")?,
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_buyer_hammering_pay_does_not_delay_another_buyers_payment() -> anyhow::Result<()> {
    // Few payment slots, a slow card that answers only after the payment timeout (9 s here),
    // and no per-user pay limit: what is measured is that copies of one order's request do not
    // take the slots. Were they to, the honest payment would wait in line behind the slow card
    // and be paid only after it answered; so the check is an order of events, not a wall-clock
    // threshold that a loaded machine can cross: the honest order is paid while the slow one is
    // still paying.
    let rig = Rig::start_with(&[
        ("WORKERS__PAYMENT_PREFETCH", "4"),
        ("PAYMENT__TIMEOUT_SECONDS", "8"),
        ("LIMITS__PAY_PER_USER_PER_MINUTE", "1000000"),
    ])
    .await?;
    let sale = rig.sale(10, 1).await?;
    let buyers = rig.buyers(sale, 2).await?;
    let (hostile, honest) = (&buyers[0], &buyers[1]);
    let slow_order = place(&rig, sale, hostile, "h").await?;
    let honest_order = place(&rig, sale, honest, "o").await?;

    // 600 pays of one order with the slow card, 50 at a time.
    let path = format!("/api/orders/{slow_order}/pay");
    let hammer = futures_util::stream::iter(0..600)
        .map(|_| {
            let (api, path, token) = (&rig.api, path.clone(), hostile.1.clone());
            async move {
                api.post(&path, Some(&token), json!({"card_token": "tok_slow"}))
                    .await
            }
        })
        .buffer_unordered(50)
        .collect::<Vec<_>>()
        .await;
    for reply in hammer {
        let reply = reply?;
        assert!(
            reply.status.as_u16() == 202,
            "{}: {}",
            reply.status,
            reply.body
        );
    }

    // The honest buyer pays once and is paid while the slow card has not answered.
    let started = std::time::Instant::now();
    rig.api
        .post(
            &format!("/api/orders/{honest_order}/pay"),
            Some(&honest.1),
            json!({"card_token": "tok_ok"}),
        )
        .await?
        .expect(202, None);
    let status = |order: OrderId, token: String| {
        let api = &rig.api;
        async move {
            api.get(&format!("/api/orders/{order}"), Some(&token))
                .await
                .map(|r| r.body["status"].as_str().unwrap_or_default().to_owned())
                .unwrap_or_default()
        }
    };
    let paid = dropline_testkit::eventually(Duration::from_secs(20), || async {
        status(honest_order, honest.1.clone()).await == "paid"
    })
    .await;
    let honest_took = started.elapsed();
    let slow_then = status(slow_order, hostile.1.clone()).await;
    assert!(
        paid,
        "the honest payment was not paid within 20 s (it is {})",
        status(honest_order, honest.1.clone()).await
    );
    assert_eq!(
        slow_then, "paying",
        "the honest payment was paid only after the slow card answered ({honest_took:?})"
    );
    rig.stop().await
}
