//! The order state machine (`lua/reserve.lua`, `begin_payment.lua`, `confirm.lua`,
//! `release.lua`, `order_due.lua` through `dropline_core::orders`) against the machine's real
//! Redis. Each test has its own key prefix ([`TestEnv`]) and arms its own sale with
//! `sale::arm`; buyers are admitted by writing the waiting room's `adm` zset directly.
//!
//! "Changes nothing" is checked on a snapshot of every key of the sale (type, content, and
//! absolute expiry time), taken before and after the call. Sleeps appear only where a deadline
//! must pass (holds are at least 1 s: `hold_seconds` is whole seconds).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use dropline_core::clients::redis::Redis;
use dropline_core::ids::{OrderId, ProductId, SaleId, UserId};
use dropline_core::lua::scripts;
use dropline_core::orders::{
    DueOrder, IDEMPOTENCY_TTL, Order, OrderState, Orders, ReserveOutcome, ReserveRequest, Target,
    Transition,
};
use dropline_core::sale::keys::parse_hold_key;
use dropline_core::sale::{self, SaleConfig, SaleState};
use dropline_testkit::TestEnv;
use fred::prelude::*;
use fred::types::scan::Scanner;
use futures_util::TryStreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PAY_TIMEOUT: Duration = Duration::from_secs(60);
const PRICE: i64 = 12_500;

/// A sale to arm, relative to Redis now.
#[derive(Debug, Clone, Copy)]
struct Spec {
    stock: i64,
    per_user_limit: i64,
    hold_seconds: i64,
    opens_in_ms: i64,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            stock: 100,
            per_user_limit: 2,
            hold_seconds: 600,
            opens_in_ms: -1_000,
        }
    }
}

struct TestSale {
    redis: Redis,
    id: SaleId,
    orders: Orders,
    stock: i64,
}

impl TestSale {
    async fn arm(redis: &Redis, spec: Spec) -> anyhow::Result<Self> {
        let id = SaleId::new_v7();
        let now = redis_now_ms(redis).await?;
        let config = SaleConfig {
            product_id: ProductId::new_v7(),
            price: PRICE,
            currency: "KRW".into(),
            stock_total: spec.stock,
            opens_at: sale::from_ms(now + spec.opens_in_ms),
            closes_at: None,
            per_user_limit: spec.per_user_limit,
            hold_seconds: spec.hold_seconds,
            admit_per_second: 100,
            max_active: None,
            paused: false,
            closed: false,
            line_shards: 1,
        };
        anyhow::ensure!(sale::arm(redis, id, &config).await?, "sale armed twice");
        Ok(Self {
            redis: redis.clone(),
            id,
            orders: Orders::new(redis, id),
            stock: spec.stock,
        })
    }

    async fn set_cfg(&self, field: &str, value: impl ToString) -> anyhow::Result<()> {
        let _: i64 = self
            .redis
            .pool()
            .hset(
                &self.orders.keys().cfg,
                vec![(field.to_owned(), value.to_string())],
            )
            .await?;
        Ok(())
    }

    /// Admits users until Redis now + `ms` (writes `adm` as the admitter does).
    async fn admit(&self, users: &[UserId], ms: i64) -> anyhow::Result<()> {
        let deadline = redis_now_ms(&self.redis).await? + ms;
        for chunk in users.chunks(1_000) {
            let mut args = vec![Value::from(self.orders.keys().adm.as_str())];
            for u in chunk {
                args.push(Value::from(deadline));
                args.push(Value::from(&u.as_bytes()[..]));
            }
            let _: i64 = self.redis.pool().custom(fred::cmd!("ZADD"), args).await?;
        }
        Ok(())
    }

    async fn admission(&self, user: UserId) -> anyhow::Result<Option<i64>> {
        let score: Option<f64> = self
            .redis
            .pool()
            .zscore(&self.orders.keys().adm, Value::from(&user.as_bytes()[..]))
            .await?;
        Ok(score.map(|s| s as i64))
    }

    /// (avail, held, sold) in one command, so the three are one moment.
    async fn counters(&self) -> anyhow::Result<(i64, i64, i64)> {
        let k = self.orders.keys();
        let v: Vec<Option<i64>> = self
            .redis
            .pool()
            .mget(vec![k.avail.clone(), k.held.clone(), k.sold.clone()])
            .await?;
        match v.as_slice() {
            [a, h, s] => Ok((a.unwrap_or(0), h.unwrap_or(0), s.unwrap_or(0))),
            other => anyhow::bail!("MGET: {other:?}"),
        }
    }

    /// DESIGN §6 on the counters: avail + held + sold = stock_total, avail >= 0.
    async fn check_counters(&self) -> anyhow::Result<(i64, i64, i64)> {
        let (a, h, s) = self.counters().await?;
        anyhow::ensure!(
            a + h + s == self.stock && a >= 0 && h >= 0 && s >= 0,
            "invariant broken: avail {a} + held {h} + sold {s} != {}",
            self.stock
        );
        Ok((a, h, s))
    }

    async fn pttl(&self, key: &str) -> anyhow::Result<i64> {
        Ok(self
            .redis
            .pool()
            .custom(fred::cmd!("PTTL"), vec![key.to_owned()])
            .await?)
    }

    async fn holds_score(&self, order: OrderId) -> anyhow::Result<Option<i64>> {
        let score: Option<f64> = self
            .redis
            .pool()
            .zscore(&self.orders.keys().holds, order.to_string())
            .await?;
        Ok(score.map(|s| s as i64))
    }

    /// Every key of the sale whose name (after the sale's part) starts with `start`.
    async fn scan_keys(&self, start: &str) -> anyhow::Result<Vec<String>> {
        // The pattern carries the sale's hash tag, so on a Redis Cluster the scan goes to the
        // node that owns the sale's slot.
        let pattern = self.redis.sale_key(self.id, &format!("{start}*"));
        let mut pages = self.redis.pool().next().scan(pattern, Some(1000), None);
        let mut keys = Vec::new();
        while let Some(mut page) = pages.try_next().await? {
            if let Some(batch) = page.take_results() {
                keys.extend(batch.into_iter().filter_map(|k| k.into_string()));
            }
        }
        Ok(keys)
    }

    /// Every key of the sale: name → type, canonical content and absolute expiry (ms, or -1).
    async fn snapshot(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let pool = self.redis.pool();
        let mut out = BTreeMap::new();
        for key in self.scan_keys("").await? {
            let kind: String = pool.custom(fred::cmd!("TYPE"), vec![key.clone()]).await?;
            let content: Value = match kind.as_str() {
                "string" => pool.custom(fred::cmd!("GET"), vec![key.clone()]).await?,
                "hash" => {
                    pool.custom(fred::cmd!("HGETALL"), vec![key.clone()])
                        .await?
                }
                "zset" => {
                    pool.custom(
                        fred::cmd!("ZRANGE"),
                        vec![key.clone(), "0".into(), "-1".into(), "WITHSCORES".into()],
                    )
                    .await?
                }
                // The outbox: every entry, with its id (an arrow appends exactly one).
                "stream" => {
                    pool.custom(
                        fred::cmd!("XRANGE"),
                        vec![key.clone(), "-".into(), "+".into()],
                    )
                    .await?
                }
                "none" => continue,
                other => anyhow::bail!("unexpected type {other} for {key}"),
            };
            let expires: i64 = pool
                .custom(fred::cmd!("PEXPIRETIME"), vec![key.clone()])
                .await?;
            let content = if kind == "hash" {
                pairs_sorted(&content)
            } else {
                render(&content)
            };
            out.insert(key, format!("{kind} {content} expires {expires}"));
        }
        Ok(out)
    }

    /// Asserts that the sale's keys are as in `before`, as of Redis time now: a key whose TTL
    /// ran out between the two snapshots (a hold timer on a loaded machine) is dropped from
    /// both, because it vanished by itself, not by what the test did.
    async fn assert_unchanged(
        &self,
        before: &BTreeMap<String, String>,
        what: &str,
    ) -> anyhow::Result<()> {
        let after = self.snapshot().await?;
        let now = redis_now_ms(&self.redis).await?;
        let live = |snap: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            snap.iter()
                .filter(|(_, v)| {
                    let expires = v
                        .rsplit_once(" expires ")
                        .and_then(|(_, t)| t.parse::<i64>().ok())
                        .unwrap_or(-1);
                    expires < 0 || expires > now
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        assert_eq!(live(&after), live(before), "{what}");
        Ok(())
    }

    /// Every order hash of the sale, read back through [`Orders::get`].
    async fn all_orders(&self) -> anyhow::Result<Vec<Order>> {
        let prefix = self.redis.sale_key(self.id, "o:");
        let mut orders = Vec::new();
        for key in self.scan_keys("o:").await? {
            if let Some(id) = key.strip_prefix(&prefix) {
                let id = OrderId::parse_str(id)?;
                orders.push(self.orders.get(id).await?.context("order vanished")?);
            }
        }
        Ok(orders)
    }

    /// Every (user, units) in `u:<user>` keys.
    async fn user_units(&self) -> anyhow::Result<HashMap<UserId, i64>> {
        let prefix = self.redis.sale_key(self.id, "u:");
        let mut units = HashMap::new();
        for key in self.scan_keys("u:").await? {
            if let Some(user) = key.strip_prefix(&prefix) {
                let user = UserId::parse_str(user)?;
                units.insert(user, self.orders.units_of(user).await?);
            }
        }
        Ok(units)
    }

    /// The whole picture agrees: counters, order states, the per-user counts, `holds` and the
    /// timers. Needs a quiet sale (no call in flight).
    async fn audit(&self, per_user_limit: i64) -> anyhow::Result<Vec<Order>> {
        let (avail, held, sold) = self.check_counters().await?;
        let orders = self.all_orders().await?;
        let sum = |f: &dyn Fn(&Order) -> bool| -> i64 {
            orders.iter().filter(|o| f(o)).map(|o| o.quantity).sum()
        };
        anyhow::ensure!(
            held == sum(&|o| o.state.is_live()),
            "held {held} != units of live orders"
        );
        anyhow::ensure!(
            sold == sum(&|o| o.state == OrderState::Paid),
            "sold {sold} != units of paid orders"
        );
        anyhow::ensure!(avail == self.stock - held - sold);
        let mut per_user: HashMap<UserId, i64> = HashMap::new();
        for o in orders
            .iter()
            .filter(|o| o.state.is_live() || o.state == OrderState::Paid)
        {
            *per_user.entry(o.user).or_default() += o.quantity;
        }
        let units = self.user_units().await?;
        anyhow::ensure!(
            units == per_user,
            "u:<user> keys disagree with the orders: {units:?} vs {per_user:?}"
        );
        anyhow::ensure!(units.values().all(|&u| u > 0 && u <= per_user_limit));
        let holds: Vec<(String, f64)> = self
            .redis
            .pool()
            .zrange(&self.orders.keys().holds, 0, -1, None, false, None, true)
            .await?;
        let holds: HashMap<OrderId, i64> = holds
            .into_iter()
            .map(|(m, s)| Ok((OrderId::parse_str(&m)?, s as i64)))
            .collect::<anyhow::Result<_>>()?;
        let live: HashMap<OrderId, i64> = orders
            .iter()
            .filter(|o| o.state.is_live())
            .map(|o| (o.id, o.deadline_ms))
            .collect();
        anyhow::ensure!(holds == live, "holds != live orders with their deadlines");
        for o in &orders {
            let ttl = self.pttl(&self.orders.hold_key(o.id)).await?;
            if o.state.is_final() {
                anyhow::ensure!(ttl == -2, "ended order {} still has a timer", o.id);
            } else if ttl <= 0 {
                // The timer is set with the deadline (PX = deadline - now in one script), so a
                // live order's timer may only be gone once its deadline has passed. The clock is
                // read after the timer: the loop over hundreds of orders can outlast a deadline.
                let now = redis_now_ms(&self.redis).await?;
                anyhow::ensure!(
                    o.deadline_ms <= now,
                    "live order {} has no timer {} ms before its deadline",
                    o.id,
                    o.deadline_ms - now
                );
            }
        }
        Ok(orders)
    }
}

fn render(v: &Value) -> String {
    match v {
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(render).collect();
            format!("[{}]", parts.join(","))
        }
        Value::Map(map) => {
            let mut parts: Vec<String> = map
                .clone()
                .inner()
                .iter()
                .map(|(k, v)| format!("{:?}={}", String::from_utf8_lossy(k.as_bytes()), render(v)))
                .collect();
            parts.sort();
            format!("{{{}}}", parts.join(","))
        }
        other => match other.as_bytes() {
            Some(b) => match std::str::from_utf8(b) {
                Ok(s) => format!("{s:?}"),
                Err(_) => format!("0x{}", hex::encode(b)),
            },
            None => format!("{other:?}"),
        },
    }
}

fn pairs_sorted(v: &Value) -> String {
    match v {
        Value::Array(items) => {
            let mut parts: Vec<String> = items
                .chunks(2)
                .map(|c| c.iter().map(render).collect::<Vec<_>>().join("="))
                .collect();
            parts.sort();
            format!("{{{}}}", parts.join(","))
        }
        other => render(other),
    }
}

async fn redis_now_ms(redis: &Redis) -> anyhow::Result<i64> {
    let t: Vec<i64> = redis
        .pool()
        .custom(fred::cmd!("TIME"), Vec::<String>::new())
        .await?;
    match t.as_slice() {
        [s, us] => Ok(s * 1000 + us / 1000),
        other => anyhow::bail!("TIME: {other:?}"),
    }
}

async fn connect(env: &TestEnv) -> anyhow::Result<Redis> {
    Redis::connect(&env.config.redis).await
}

/// A test environment whose Redis pool has several connections and a roomy command timeout,
/// for the load tests (thousands of calls in flight on a shared 2-core machine).
fn load_env() -> anyhow::Result<TestEnv> {
    TestEnv::with_overrides(&[
        ("REDIS__POOL_SIZE", "8"),
        ("REDIS__COMMAND_TIMEOUT_MS", "30000"),
    ])
}

fn request(user: UserId, quantity: u32, key: &str) -> ReserveRequest {
    ReserveRequest {
        order: OrderId::new_v7(),
        user,
        quantity,
        idempotency_key: key.to_owned(),
    }
}

async fn created(sale: &TestSale, req: &ReserveRequest) -> anyhow::Result<Order> {
    match sale.orders.reserve(req).await? {
        ReserveOutcome::Created(order) => Ok(order),
        other => anyhow::bail!("expected a new order, got {other:?}"),
    }
}

/// A new admitted buyer's new HELD order.
async fn held_order(sale: &TestSale, quantity: u32) -> anyhow::Result<Order> {
    let user = UserId::new_v7();
    sale.admit(&[user], 600_000).await?;
    created(sale, &request(user, quantity, "k1")).await
}

fn applied(t: Transition, state: OrderState) -> anyhow::Result<()> {
    match t {
        Transition::Applied(s) if s.state == state => Ok(()),
        other => anyhow::bail!("expected an arrow to {state}, got {other:?}"),
    }
}

fn unchanged(t: Transition, state: OrderState) -> anyhow::Result<()> {
    match t {
        Transition::Unchanged(s) if s.state == state => Ok(()),
        other => anyhow::bail!("expected no change at {state}, got {other:?}"),
    }
}

#[tokio::test]
async fn reserve_takes_stock_and_writes_the_whole_order() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = TestSale::arm(&redis, Spec::default()).await?;
    let user = UserId::new_v7();
    sale.admit(&[user], 5_000).await?;
    let req = request(user, 2, "first-try");
    let before = redis_now_ms(&redis).await?;
    let order = created(&sale, &req).await?;
    let after = redis_now_ms(&redis).await?;

    assert_eq!(order.id, req.order);
    assert_eq!((order.user, order.sale), (user, sale.id));
    assert_eq!(order.state, OrderState::Held);
    assert_eq!((order.quantity, order.amount), (2, 2 * PRICE));
    assert_eq!(order.currency, "KRW");
    assert!(order.created_ms >= before && order.created_ms <= after);
    assert_eq!(order.deadline_ms, order.created_ms + 600_000);
    assert_eq!(sale.orders.get(order.id).await?, Some(order.clone()));

    assert_eq!(sale.check_counters().await?, (98, 2, 0));
    assert_eq!(sale.orders.units_of(user).await?, 2);
    assert_eq!(sale.holds_score(order.id).await?, Some(order.deadline_ms));
    let timer = sale.pttl(&sale.orders.hold_key(order.id)).await?;
    assert!(timer > 590_000 && timer <= 600_000, "timer {timer}");
    let idem = sale
        .pttl(&sale.orders.idempotency_key(user, "first-try"))
        .await?;
    let day = IDEMPOTENCY_TTL.as_millis() as i64;
    assert!(day >= 86_400_000 && idem > day - 10_000, "idem ttl {idem}");
    // The admission (5 s) now lasts as long as the hold.
    assert_eq!(sale.admission(user).await?, Some(order.deadline_ms));

    // An admission that outlasts the hold is left alone (GT).
    let long = UserId::new_v7();
    sale.admit(&[long], 3_600_000).await?;
    let admitted = sale.admission(long).await?;
    created(&sale, &request(long, 1, "k")).await?;
    assert_eq!(sale.admission(long).await?, admitted);

    // The hold timer key names its sale and order (what the expiry worker gets).
    assert_eq!(
        parse_hold_key(&redis, &sale.orders.hold_key(order.id)),
        Some((sale.id, order.id))
    );
    assert_eq!(
        parse_hold_key(&redis, &sale.orders.order_key(order.id)),
        None
    );
    assert_eq!(parse_hold_key(&redis, "other:{s:x}:hold:y"), None);
    sale.audit(2).await?;
    redis.quit().await;
    env.cleanup().await
}

#[tokio::test]
async fn amounts_are_exact_integers_past_two_to_the_53() -> anyhow::Result<()> {
    let env = load_env()?;
    let redis = connect(&env).await?;
    let spec = Spec {
        stock: 10_000,
        per_user_limit: 1_000,
        ..Spec::default()
    };
    let sale = TestSale::arm(&redis, spec).await?;
    let max_price: i64 = (1 << 53) - 1;
    for (price, quantity) in [
        (max_price, 3_u32),
        (max_price, 1_000),
        (max_price - 2, 7),
        (100_000_007, 999),
        (123, 1),
        (0, 5),
    ] {
        sale.set_cfg("price", price).await?;
        let order = held_order(&sale, quantity).await?;
        let want = i128::from(price) * i128::from(quantity);
        assert_eq!(i128::from(order.amount), want, "{price} x {quantity}");
        // The order hash and the outbox row carry the same exact amount.
        let stored: String = redis
            .pool()
            .hget(sale.orders.order_key(order.id), "amount")
            .await?;
        assert_eq!(stored, want.to_string());
        let read = sale
            .orders
            .get(order.id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("order {} not found", order.id))?;
        assert_eq!(i128::from(read.amount), want);
    }
    let outbox = dropline_core::orders::outbox::Outbox::new(&redis, sale.id);
    outbox.ensure_group().await?;
    let entries = outbox.read("test", 100).await?;
    let first = entries
        .iter()
        .filter_map(|e| e.row.as_ref())
        .find(|row| row.quantity == 3)
        .ok_or_else(|| anyhow::anyhow!("no outbox row for the first order"))?;
    assert_eq!(i128::from(first.amount), i128::from(max_price) * 3);
    env.cleanup().await
}

/// `Outbox::done` deletes before it acknowledges, so losing either half heals: an entry
/// deleted whose acknowledgement never ran leaves only a pending id, which the next claim
/// drops; an entry acknowledged but never deleted (the old order, after a timed-out `XDEL`)
/// could not be reached by anything and kept the outbox from draining.
#[tokio::test]
async fn an_outbox_entry_whose_acknowledgement_was_lost_still_drains() -> anyhow::Result<()> {
    use fred::interfaces::StreamsInterface;
    use std::time::Duration;
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = TestSale::arm(&redis, Spec::default()).await?;
    held_order(&sale, 1).await?;
    held_order(&sale, 1).await?;
    let outbox = dropline_core::orders::outbox::Outbox::new(&redis, sale.id);
    outbox.ensure_group().await?;
    let entries = outbox.read("reader-1", 100).await?;
    assert_eq!(entries.len(), 2, "{entries:?}");
    // The first: `done` ran whole. The second: its XDEL ran and its XACK was lost.
    outbox.done(&[entries[0].id.clone()]).await?;
    let _: i64 = redis
        .pool()
        .xdel(outbox.key(), vec![entries[1].id.clone()])
        .await?;
    let len: u64 = redis.pool().xlen(outbox.key()).await?;
    assert_eq!(len, 0, "the stream is drained");
    let pending = |redis: &dropline_core::clients::redis::Redis| {
        let redis = redis.clone();
        let key = outbox.key().to_owned();
        async move {
            let summary: fred::types::Value = redis
                .pool()
                .xpending(key.as_str(), dropline_core::orders::outbox::GROUP, ())
                .await?;
            let count = match summary {
                fred::types::Value::Array(parts) => parts
                    .first()
                    .and_then(fred::types::Value::as_u64)
                    .unwrap_or(u64::MAX),
                other => anyhow::bail!("XPENDING: {other:?}"),
            };
            anyhow::Ok(count)
        }
    };
    assert_eq!(pending(&redis).await?, 1, "one id left pending");
    // Another reader's claim returns nothing to record and clears the pending list.
    let claimed = outbox.claim_idle("reader-2", 100, Duration::ZERO).await?;
    assert!(claimed.is_empty(), "{claimed:?}");
    assert_eq!(pending(&redis).await?, 0, "the pending list is clear");
    env.cleanup().await
}

#[tokio::test]
async fn every_allowed_arrow_moves_the_stock_exactly() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = TestSale::arm(
        &redis,
        Spec {
            stock: 20,
            ..Spec::default()
        },
    )
    .await?;
    let o = &sale.orders;

    // HELD → PAYING → PAID.
    let a = held_order(&sale, 2).await?;
    let t = o.begin_payment(a.id, PAY_TIMEOUT).await?;
    applied(t, OrderState::Paying)?;
    let paying = o.get(a.id).await?.context("order a")?;
    assert_eq!(paying.state, OrderState::Paying);
    assert_eq!(
        sale.check_counters().await?,
        (18, 2, 0),
        "paying is still held"
    );
    applied(o.confirm(a.id).await?, OrderState::Paid)?;
    assert_eq!(sale.check_counters().await?, (18, 0, 2));
    assert_eq!(
        o.units_of(a.user).await?,
        2,
        "paid units count toward the limit"
    );
    assert_eq!(sale.holds_score(a.id).await?, None);
    assert_eq!(sale.pttl(&o.hold_key(a.id)).await?, -2, "timer deleted");
    assert_eq!(
        sale.admission(a.user).await?,
        None,
        "the buyer's slot frees"
    );

    // HELD → CANCELLED.
    let b = held_order(&sale, 1).await?;
    assert_eq!(sale.check_counters().await?, (17, 1, 2));
    applied(
        o.release(b.id, Target::Cancelled).await?,
        OrderState::Cancelled,
    )?;
    assert_eq!(sale.check_counters().await?, (18, 0, 2));
    assert_eq!(o.units_of(b.user).await?, 0);
    assert_eq!(sale.holds_score(b.id).await?, None);
    assert_eq!(sale.pttl(&o.hold_key(b.id)).await?, -2);
    assert_eq!(sale.admission(b.user).await?, None);

    // HELD → PAYING → FAILED.
    let c = held_order(&sale, 2).await?;
    applied(
        o.begin_payment(c.id, PAY_TIMEOUT).await?,
        OrderState::Paying,
    )?;
    applied(o.release(c.id, Target::Failed).await?, OrderState::Failed)?;
    assert_eq!(sale.check_counters().await?, (18, 0, 2));
    assert_eq!(o.units_of(c.user).await?, 0);
    assert_eq!(sale.admission(c.user).await?, None);

    // HELD → EXPIRED, on a sale with one-second holds.
    let short = TestSale::arm(
        &redis,
        Spec {
            stock: 5,
            hold_seconds: 1,
            ..Spec::default()
        },
    )
    .await?;
    let d = held_order(&short, 2).await?;
    assert_eq!(short.check_counters().await?, (3, 2, 0));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    applied(
        short.orders.release(d.id, Target::Expired).await?,
        OrderState::Expired,
    )?;
    assert_eq!(short.check_counters().await?, (5, 0, 0));
    assert_eq!(short.orders.units_of(d.user).await?, 0);
    assert_eq!(short.admission(d.user).await?, None);

    let ended = sale.audit(2).await?;
    assert_eq!(ended.len(), 3);
    short.audit(2).await?;
    redis.quit().await;
    env.cleanup().await
}

#[tokio::test]
async fn forbidden_arrows_change_nothing() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = TestSale::arm(&redis, Spec::default()).await?;
    let short = TestSale::arm(
        &redis,
        Spec {
            hold_seconds: 1,
            ..Spec::default()
        },
    )
    .await?;
    let o = &sale.orders;

    // One order in each state.
    let held = held_order(&sale, 1).await?;
    let paying = held_order(&sale, 1).await?;
    applied(
        o.begin_payment(paying.id, PAY_TIMEOUT).await?,
        OrderState::Paying,
    )?;
    let paid = held_order(&sale, 1).await?;
    applied(
        o.begin_payment(paid.id, PAY_TIMEOUT).await?,
        OrderState::Paying,
    )?;
    applied(o.confirm(paid.id).await?, OrderState::Paid)?;
    let cancelled = held_order(&sale, 1).await?;
    applied(
        o.release(cancelled.id, Target::Cancelled).await?,
        OrderState::Cancelled,
    )?;
    let failed = held_order(&sale, 1).await?;
    applied(
        o.begin_payment(failed.id, PAY_TIMEOUT).await?,
        OrderState::Paying,
    )?;
    applied(
        o.release(failed.id, Target::Failed).await?,
        OrderState::Failed,
    )?;
    let expired = held_order(&short, 1).await?;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    applied(
        short.orders.release(expired.id, Target::Expired).await?,
        OrderState::Expired,
    )?;

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Pay,
        Confirm,
        Release(Target),
    }
    let ops = [
        Op::Pay,
        Op::Confirm,
        Op::Release(Target::Expired),
        Op::Release(Target::Cancelled),
        Op::Release(Target::Failed),
    ];
    // The arrows that exist (DESIGN §5); everything else must be a no-op.
    let allowed = |state: OrderState, op: Op| {
        matches!(
            (state, op),
            (OrderState::Held, Op::Pay)
                | (
                    OrderState::Held,
                    Op::Release(Target::Expired | Target::Cancelled)
                )
                | (OrderState::Paying, Op::Confirm)
                | (OrderState::Paying, Op::Release(Target::Failed))
        )
    };
    let cases = [
        (&sale, &held, OrderState::Held),
        (&sale, &paying, OrderState::Paying),
        (&sale, &paid, OrderState::Paid),
        (&sale, &cancelled, OrderState::Cancelled),
        (&sale, &failed, OrderState::Failed),
        (&short, &expired, OrderState::Expired),
    ];
    let mut checked = 0;
    for (s, order, state) in cases {
        assert_eq!(s.orders.get(order.id).await?.map(|o| o.state), Some(state));
        for op in ops {
            if allowed(state, op) {
                continue;
            }
            let before = s.snapshot().await?;
            let t = match op {
                Op::Pay => s.orders.begin_payment(order.id, PAY_TIMEOUT).await?,
                Op::Confirm => s.orders.confirm(order.id).await?,
                Op::Release(target) => s.orders.release(order.id, target).await?,
            };
            unchanged(t, state).with_context(|| format!("{op:?} on {state}"))?;
            s.assert_unchanged(&before, &format!("{op:?} on {state} changed keys"))
                .await?;
            checked += 1;
        }
    }
    assert_eq!(checked, 6 * 5 - 5, "every forbidden pair was tried");
    sale.audit(2).await?;
    short.audit(2).await?;
    redis.quit().await;
    env.cleanup().await
}

#[tokio::test]
async fn duplicate_and_late_calls_change_nothing() -> anyhow::Result<()> {
    let env = load_env()?;
    let redis = connect(&env).await?;
    let sale = TestSale::arm(&redis, Spec::default()).await?;
    let o = &sale.orders;

    // Paying twice: the second call reports paying and does not move the deadline again.
    let a = held_order(&sale, 1).await?;
    applied(
        o.begin_payment(a.id, PAY_TIMEOUT).await?,
        OrderState::Paying,
    )?;
    let before = sale.snapshot().await?;
    unchanged(
        o.begin_payment(a.id, Duration::from_secs(5)).await?,
        OrderState::Paying,
    )?;
    sale.assert_unchanged(&before, "").await?;

    // 20 redelivered confirmations at once: one arrow, 19 no-ops.
    let results = futures_util::future::join_all((0..20).map(|_| o.confirm(a.id))).await;
    let mut done = 0;
    for r in results {
        match r? {
            Transition::Applied(s) if s.state == OrderState::Paid => done += 1,
            other => unchanged(other, OrderState::Paid)?,
        }
    }
    assert_eq!(done, 1);
    // A late failure for a paid order, and yet another confirmation: nothing changes.
    let before = sale.snapshot().await?;
    unchanged(o.release(a.id, Target::Failed).await?, OrderState::Paid)?;
    unchanged(o.confirm(a.id).await?, OrderState::Paid)?;
    sale.assert_unchanged(&before, "").await?;

    // A late success after the order failed: nothing changes (the caller must refund).
    let b = held_order(&sale, 1).await?;
    applied(
        o.begin_payment(b.id, PAY_TIMEOUT).await?,
        OrderState::Paying,
    )?;
    applied(o.release(b.id, Target::Failed).await?, OrderState::Failed)?;
    let before = sale.snapshot().await?;
    unchanged(o.confirm(b.id).await?, OrderState::Failed)?;
    unchanged(o.release(b.id, Target::Failed).await?, OrderState::Failed)?;
    sale.assert_unchanged(&before, "").await?;

    // Twenty cancels at once: the stock comes back once.
    let c = held_order(&sale, 2).await?;
    let (avail, _, _) = sale.check_counters().await?;
    let results =
        futures_util::future::join_all((0..20).map(|_| o.release(c.id, Target::Cancelled))).await;
    let mut done = 0;
    for r in results {
        match r? {
            Transition::Applied(_) => done += 1,
            other => unchanged(other, OrderState::Cancelled)?,
        }
    }
    assert_eq!(done, 1);
    assert_eq!(sale.check_counters().await?.0, avail + 2);

    // Success and failure racing on one payment, many times: exactly one of them wins.
    for _ in 0..30 {
        let d = held_order(&sale, 1).await?;
        applied(
            o.begin_payment(d.id, PAY_TIMEOUT).await?,
            OrderState::Paying,
        )?;
        let (ok, fail) = tokio::join!(o.confirm(d.id), o.release(d.id, Target::Failed));
        let (ok, fail) = (ok?, fail?);
        assert!(ok.applied() != fail.applied(), "{ok:?} / {fail:?}");
        let end = o.get(d.id).await?.context("order d")?.state;
        assert_eq!(ok.state(), Some(end));
        assert_eq!(fail.state(), Some(end));
    }
    sale.audit(2).await?;

    // Unknown orders: not found, nothing written.
    let before = sale.snapshot().await?;
    let ghost = OrderId::new_v7();
    assert_eq!(
        o.begin_payment(ghost, PAY_TIMEOUT).await?,
        Transition::NotFound
    );
    assert_eq!(o.confirm(ghost).await?, Transition::NotFound);
    for target in [Target::Expired, Target::Cancelled, Target::Failed] {
        assert_eq!(o.release(ghost, target).await?, Transition::NotFound);
    }
    assert_eq!(o.get(ghost).await?, None);
    sale.assert_unchanged(&before, "").await?;
    redis.quit().await;
    env.cleanup().await
}

#[tokio::test]
async fn idempotency_key_returns_the_same_order_or_refuses_another_body() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = TestSale::arm(&redis, Spec::default()).await?;
    let o = &sale.orders;
    let user = UserId::new_v7();
    sale.admit(&[user], 600_000).await?;
    let first = created(&sale, &request(user, 1, "key-A")).await?;

    // The same key and body again (a client retry makes a new order id): the first order,
    // and nothing changes.
    let before = sale.snapshot().await?;
    match o.reserve(&request(user, 1, "key-A")).await? {
        ReserveOutcome::Existing(order) => assert_eq!(order, first),
        other => panic!("expected the existing order, got {other:?}"),
    }
    sale.assert_unchanged(&before, "").await?;

    // Another body with the same key.
    match o.reserve(&request(user, 2, "key-A")).await? {
        ReserveOutcome::IdempotencyKeyReused { order } => assert_eq!(order, first.id),
        other => panic!("expected idempotency_key_reused, got {other:?}"),
    }
    sale.assert_unchanged(&before, "").await?;

    // The replay shows the order's current state, even once the buyer is no longer admitted
    // and the sale has closed: the key is checked first.
    applied(
        o.begin_payment(first.id, PAY_TIMEOUT).await?,
        OrderState::Paying,
    )?;
    applied(o.confirm(first.id).await?, OrderState::Paid)?;
    assert_eq!(sale.admission(user).await?, None);
    sale.set_cfg("closed", 1).await?;
    let before = sale.snapshot().await?;
    match o.reserve(&request(user, 1, "key-A")).await? {
        ReserveOutcome::Existing(order) => {
            assert_eq!(order.id, first.id);
            assert_eq!(order.state, OrderState::Paid);
        }
        other => panic!("expected the existing order, got {other:?}"),
    }
    sale.assert_unchanged(&before, "").await?;
    sale.set_cfg("closed", 0).await?;

    // Keys are scoped to the user: another user's "key-A" is a new order.
    let other = UserId::new_v7();
    sale.admit(&[other], 600_000).await?;
    let theirs = created(&sale, &request(other, 1, "key-A")).await?;
    assert_ne!(theirs.id, first.id);

    // A refused request stores no key: the same key works once the refusal is gone.
    let late = UserId::new_v7();
    assert_eq!(
        o.reserve(&request(late, 1, "key-B")).await?,
        ReserveOutcome::NotAdmitted
    );
    sale.admit(&[late], 600_000).await?;
    created(&sale, &request(late, 1, "key-B")).await?;

    // Concurrent retries of one request make one order.
    let racer = UserId::new_v7();
    sale.admit(&[racer], 600_000).await?;
    let results = futures_util::future::join_all(
        (0..20).map(|_| async move { o.reserve(&request(racer, 2, "same")).await }),
    )
    .await;
    let mut ids = HashSet::new();
    let mut made = 0;
    for r in results {
        match r? {
            ReserveOutcome::Created(order) => {
                made += 1;
                ids.insert(order.id);
            }
            ReserveOutcome::Existing(order) => {
                ids.insert(order.id);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((made, ids.len()), (1, 1));
    assert_eq!(o.units_of(racer).await?, 2);

    // Keys are 1 to 64 bytes.
    assert!(o.reserve(&request(racer, 1, "")).await.is_err());
    assert!(
        o.reserve(&request(racer, 1, &"x".repeat(65)))
            .await
            .is_err()
    );
    sale.audit(2).await?;
    redis.quit().await;
    env.cleanup().await
}

#[tokio::test]
async fn per_user_limit_counts_held_paying_and_paid_units() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = TestSale::arm(
        &redis,
        Spec {
            per_user_limit: 3,
            ..Spec::default()
        },
    )
    .await?;
    let o = &sale.orders;
    let user = UserId::new_v7();
    sale.admit(&[user], 600_000).await?;

    let before = sale.snapshot().await?;
    assert_eq!(
        o.reserve(&request(user, 4, "too-many")).await?,
        ReserveOutcome::LimitExceeded { owned: 0, limit: 3 }
    );
    sale.assert_unchanged(&before, "").await?;

    let a = created(&sale, &request(user, 1, "a")).await?;
    let b = created(&sale, &request(user, 1, "b")).await?;
    applied(
        o.begin_payment(b.id, PAY_TIMEOUT).await?,
        OrderState::Paying,
    )?;
    let c = created(&sale, &request(user, 1, "c")).await?;
    applied(
        o.begin_payment(c.id, PAY_TIMEOUT).await?,
        OrderState::Paying,
    )?;
    applied(o.confirm(c.id).await?, OrderState::Paid)?;
    // held 1 + paying 1 + paid 1 = 3: nothing more, whatever the state of each.
    sale.admit(&[user], 600_000).await?;
    assert_eq!(o.units_of(user).await?, 3);
    let before = sale.snapshot().await?;
    assert_eq!(
        o.reserve(&request(user, 1, "d")).await?,
        ReserveOutcome::LimitExceeded { owned: 3, limit: 3 }
    );
    sale.assert_unchanged(&before, "").await?;

    // A released order frees its units for the limit (the buyer is admitted again).
    applied(
        o.release(a.id, Target::Cancelled).await?,
        OrderState::Cancelled,
    )?;
    sale.admit(&[user], 600_000).await?;
    assert_eq!(
        o.reserve(&request(user, 2, "e")).await?,
        ReserveOutcome::LimitExceeded { owned: 2, limit: 3 }
    );
    created(&sale, &request(user, 1, "f")).await?;
    assert_eq!(o.units_of(user).await?, 3);
    sale.audit(3).await?;
    redis.quit().await;
    env.cleanup().await
}

#[tokio::test]
async fn only_active_admitted_buyers_reserve() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = TestSale::arm(&redis, Spec::default()).await?;
    let o = &sale.orders;

    // Never admitted: refused, and not added to adm either.
    let stranger = UserId::new_v7();
    let before = sale.snapshot().await?;
    assert_eq!(
        o.reserve(&request(stranger, 1, "k")).await?,
        ReserveOutcome::NotAdmitted
    );
    sale.assert_unchanged(&before, "").await?;
    assert_eq!(sale.admission(stranger).await?, None);

    // Admission lapsed (deadline just passed, entry not yet reaped).
    let lapsed = UserId::new_v7();
    sale.admit(&[lapsed], -1).await?;
    let before = sale.snapshot().await?;
    assert_eq!(
        o.reserve(&request(lapsed, 1, "k")).await?,
        ReserveOutcome::NotAdmitted
    );
    sale.assert_unchanged(&before, "").await?;

    // Admission running out by itself.
    let brief = UserId::new_v7();
    sale.admit(&[brief], 300).await?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        o.reserve(&request(brief, 1, "k")).await?,
        ReserveOutcome::NotAdmitted
    );

    // Admitted: fine; once the order ends the buyer is no longer active.
    let buyer = UserId::new_v7();
    sale.admit(&[buyer], 60_000).await?;
    let order = created(&sale, &request(buyer, 1, "k")).await?;
    applied(
        o.release(order.id, Target::Cancelled).await?,
        OrderState::Cancelled,
    )?;
    assert_eq!(
        o.reserve(&request(buyer, 1, "k2")).await?,
        ReserveOutcome::NotAdmitted
    );
    sale.audit(2).await?;
    redis.quit().await;
    env.cleanup().await
}

#[tokio::test]
async fn a_sale_that_is_not_open_takes_no_order() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = TestSale::arm(&redis, Spec::default()).await?;
    let o = &sale.orders;
    let user = UserId::new_v7();
    sale.admit(&[user], 600_000).await?;
    let live = created(&sale, &request(user, 1, "live")).await?;

    let now = redis_now_ms(&redis).await?;
    let setups = [
        (
            "scheduled",
            vec![("opens_at", (now + 60_000).to_string())],
            SaleState::Scheduled,
        ),
        ("paused", vec![("paused", "1".into())], SaleState::Paused),
        ("closed", vec![("closed", "1".into())], SaleState::Closed),
        (
            "past closes_at",
            vec![("closes_at", (now - 1).to_string())],
            SaleState::Closed,
        ),
    ];
    let open: Vec<(&str, String)> = vec![
        ("opens_at", (now - 1_000).to_string()),
        ("paused", "0".into()),
        ("closed", "0".into()),
        ("closes_at", "0".into()),
    ];
    for (name, fields, state) in setups {
        for (f, v) in &fields {
            sale.set_cfg(f, v).await?;
        }
        let before = sale.snapshot().await?;
        assert_eq!(
            o.reserve(&request(user, 1, name)).await?,
            ReserveOutcome::SaleNotOpen(state),
            "{name}"
        );
        sale.assert_unchanged(&before, name).await?;
        for (f, v) in &open {
            sale.set_cfg(f, v).await?;
        }
    }

    // Paused stops new orders only: a live order still pays.
    sale.set_cfg("paused", 1).await?;
    applied(
        o.begin_payment(live.id, PAY_TIMEOUT).await?,
        OrderState::Paying,
    )?;
    applied(o.confirm(live.id).await?, OrderState::Paid)?;
    sale.set_cfg("paused", 0).await?;

    // A sale that is not armed.
    let ghost = Orders::new(&redis, SaleId::new_v7());
    assert_eq!(
        ghost.reserve(&request(user, 1, "x")).await?,
        ReserveOutcome::SaleNotFound
    );
    sale.audit(2).await?;
    redis.quit().await;
    env.cleanup().await
}

#[tokio::test]
async fn sold_out_reports_what_is_left_and_takes_nothing() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = TestSale::arm(
        &redis,
        Spec {
            stock: 3,
            ..Spec::default()
        },
    )
    .await?;
    let a = held_order(&sale, 2).await?;
    let user = UserId::new_v7();
    sale.admit(&[user], 600_000).await?;
    let before = sale.snapshot().await?;
    assert_eq!(
        sale.orders.reserve(&request(user, 2, "k")).await?,
        ReserveOutcome::SoldOut { available: 1 }
    );
    sale.assert_unchanged(&before, "").await?;
    created(&sale, &request(user, 1, "k")).await?;
    assert_eq!(
        sale.orders.reserve(&request(user, 1, "k2")).await?,
        ReserveOutcome::SoldOut { available: 0 }
    );
    // Stock that comes back is for sale again.
    applied(
        sale.orders.release(a.id, Target::Cancelled).await?,
        OrderState::Cancelled,
    )?;
    created(&sale, &request(user, 1, "k3")).await?;
    assert_eq!(sale.check_counters().await?, (1, 2, 0));
    sale.audit(2).await?;
    redis.quit().await;
    env.cleanup().await
}

#[tokio::test]
async fn malformed_arguments_are_errors_and_write_nothing() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = TestSale::arm(&redis, Spec::default()).await?;
    let o = &sale.orders;
    let user = UserId::new_v7();
    sale.admit(&[user], 600_000).await?;
    let before = sale.snapshot().await?;

    assert!(o.reserve(&request(user, 0, "zero")).await.is_err());
    // The script itself, with quantities the typed wrapper cannot express.
    let order = OrderId::new_v7();
    let keys = o.reserve_keys(user, order, "raw");
    for qty in ["-1", "1.5", "abc", "", "0"] {
        let args = vec![
            Value::from(order.to_string()),
            Value::from(&user.as_bytes()[..]),
            Value::from(qty),
            Value::from("raw"),
            Value::from(o.fingerprint(1)),
            Value::from(86_400_000_i64),
        ];
        let r: anyhow::Result<Value> = scripts::RESERVE.run(&redis, keys.clone(), args).await;
        let err = r
            .err()
            .with_context(|| format!("quantity {qty:?} was accepted"))?;
        assert!(format!("{err:#}").contains("quantity"), "{err:#}");
    }
    // A user id that is not 16 bytes.
    let args = vec![
        Value::from(order.to_string()),
        Value::from(user.to_string()),
        Value::from("1"),
        Value::from("raw"),
        Value::from(o.fingerprint(1)),
        Value::from(86_400_000_i64),
    ];
    let r: anyhow::Result<Value> = scripts::RESERVE.run(&redis, keys.clone(), args).await;
    assert!(r.is_err());
    // An unknown release target.
    let held = held_order(&sale, 1).await?;
    let before_release = sale.snapshot().await?;
    let args = vec![
        Value::from(held.id.to_string()),
        Value::from("refunded"),
        Value::from(&held.user.as_bytes()[..]),
    ];
    let release_keys = o.release_keys(held.id, held.user);
    let r: anyhow::Result<Value> = scripts::RELEASE
        .run(&redis, release_keys.clone(), args)
        .await;
    assert!(r.is_err());
    // A user that is not the order's.
    let args = vec![
        Value::from(held.id.to_string()),
        Value::from("cancelled"),
        Value::from(&user.as_bytes()[..]),
    ];
    let r: anyhow::Result<Value> = scripts::RELEASE.run(&redis, release_keys, args).await;
    assert!(r.is_err());
    assert!(o.begin_payment(held.id, Duration::ZERO).await.is_err());
    sale.assert_unchanged(&before_release, "").await?;
    applied(
        o.release(held.id, Target::Cancelled).await?,
        OrderState::Cancelled,
    )?;
    // Apart from that order's own keys (made and ended above) and its two outbox entries,
    // nothing was written.
    let mut after = sale.snapshot().await?;
    after.retain(|k, _| {
        !k.contains(&held.id.to_string())
            && !k.contains(&held.user.to_string())
            && k != &o.keys().events
    });
    assert_eq!(after, before);
    sale.audit(2).await?;
    redis.quit().await;
    env.cleanup().await
}

#[tokio::test]
async fn a_hold_expires_only_after_its_deadline_and_once() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    // Early (a stale or wrong event): nothing happens. A sale of its own with a long hold, so
    // no machine is slow enough for the deadline to pass during the check.
    let early = TestSale::arm(
        &redis,
        Spec {
            stock: 10,
            hold_seconds: 600,
            ..Spec::default()
        },
    )
    .await?;
    let live = held_order(&early, 2).await?;
    let before = early.snapshot().await?;
    match early.orders.release(live.id, Target::Expired).await? {
        Transition::NotDue(s) => {
            assert_eq!(s.state, OrderState::Held);
            assert_eq!(s.deadline_ms, live.deadline_ms);
            assert!(s.now_ms < s.deadline_ms);
        }
        other => panic!("expected not_due, got {other:?}"),
    }
    early.assert_unchanged(&before, "").await?;
    assert_eq!(early.orders.due(100).await?.0, Vec::<DueOrder>::new());

    // Past the deadline: a sale whose holds last a second.
    let sale = TestSale::arm(
        &redis,
        Spec {
            stock: 10,
            hold_seconds: 1,
            ..Spec::default()
        },
    )
    .await?;
    let o = &sale.orders;
    let a = held_order(&sale, 2).await?;
    let b = held_order(&sale, 1).await?;

    let wait = b.deadline_ms - redis_now_ms(&redis).await? + 50;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;

    // Past the deadline, before the expiry ran: payment can no longer start.
    let before = sale.snapshot().await?;
    match o.begin_payment(a.id, PAY_TIMEOUT).await? {
        Transition::DeadlinePassed(s) => assert_eq!(s.state, OrderState::Held),
        other => panic!("expected deadline_passed, got {other:?}"),
    }
    sale.assert_unchanged(&before, "").await?;

    // The sweeper sees both, earliest first.
    let (due, now) = o.due(100).await?;
    let expected: HashSet<DueOrder> = [
        DueOrder {
            order: a.id,
            deadline_ms: a.deadline_ms,
        },
        DueOrder {
            order: b.id,
            deadline_ms: b.deadline_ms,
        },
    ]
    .into();
    assert_eq!(due.iter().copied().collect::<HashSet<_>>(), expected);
    assert!(due[0].deadline_ms <= due[1].deadline_ms, "earliest first");
    assert!(now >= b.deadline_ms);
    assert_eq!(o.due(1).await?.0.len(), 1);

    applied(o.release(a.id, Target::Expired).await?, OrderState::Expired)?;
    assert_eq!(sale.check_counters().await?, (9, 1, 0));
    // A second expiry event, and a late cancel: the stock came back once.
    let before = sale.snapshot().await?;
    unchanged(o.release(a.id, Target::Expired).await?, OrderState::Expired)?;
    unchanged(
        o.release(a.id, Target::Cancelled).await?,
        OrderState::Expired,
    )?;
    sale.assert_unchanged(&before, "").await?;
    // Cancelling a hold whose deadline passed is still a cancel (stock back once as well).
    applied(
        o.release(b.id, Target::Cancelled).await?,
        OrderState::Cancelled,
    )?;
    assert_eq!(sale.check_counters().await?, (10, 0, 0));
    assert!(o.due(100).await?.0.is_empty());
    early.audit(2).await?;
    sale.audit(2).await?;
    redis.quit().await;
    env.cleanup().await
}

#[tokio::test]
async fn a_hold_cannot_expire_while_its_payment_is_in_flight() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = TestSale::arm(
        &redis,
        Spec {
            stock: 10,
            // Room on a loaded machine: each payment below must start within the hold.
            hold_seconds: 3,
            ..Spec::default()
        },
    )
    .await?;
    let o = &sale.orders;
    let user = UserId::new_v7();
    sale.admit(&[user], 500).await?;
    let a = created(&sale, &request(user, 1, "k")).await?;
    assert_eq!(sale.admission(user).await?, Some(a.deadline_ms));
    let t = o.begin_payment(a.id, Duration::from_secs(30)).await?;
    let standing = t.standing().context("begin_payment")?;
    applied(t, OrderState::Paying)?;
    assert_eq!(standing.deadline_ms, standing.now_ms + 30_000);
    assert_eq!(sale.holds_score(a.id).await?, Some(standing.deadline_ms));
    let timer = sale.pttl(&o.hold_key(a.id)).await?;
    assert!(
        timer > 25_000,
        "the timer follows the payment deadline: {timer}"
    );
    assert_eq!(sale.admission(a.user).await?, Some(standing.deadline_ms));

    // The hold's own end passes: the expiry event (or the sweeper) finds nothing to do.
    let wait = a.deadline_ms - redis_now_ms(&redis).await? + 100;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    assert!(o.due(100).await?.0.is_empty());
    let before = sale.snapshot().await?;
    unchanged(o.release(a.id, Target::Expired).await?, OrderState::Paying)?;
    unchanged(
        o.release(a.id, Target::Cancelled).await?,
        OrderState::Paying,
    )?;
    sale.assert_unchanged(&before, "").await?;
    applied(o.confirm(a.id).await?, OrderState::Paid)?;

    // A payment with no outcome by its deadline shows up for the sweeper, which fails it.
    let b = held_order(&sale, 2).await?;
    applied(
        o.begin_payment(b.id, Duration::from_secs(2)).await?,
        OrderState::Paying,
    )?;
    assert!(o.due(100).await?.0.is_empty());
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let (due, _) = o.due(100).await?;
    assert_eq!(due.iter().map(|d| d.order).collect::<Vec<_>>(), vec![b.id]);
    unchanged(o.release(b.id, Target::Expired).await?, OrderState::Paying)?;
    applied(o.release(b.id, Target::Failed).await?, OrderState::Failed)?;
    assert_eq!(sale.check_counters().await?, (9, 0, 1));
    sale.audit(2).await?;
    redis.quit().await;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_buyers_for_ten_units_make_exactly_ten_orders() -> anyhow::Result<()> {
    let env = load_env()?;
    let redis = connect(&env).await?;
    let sale = Arc::new(
        TestSale::arm(
            &redis,
            Spec {
                stock: 10,
                per_user_limit: 1,
                ..Spec::default()
            },
        )
        .await?,
    );
    let users: Vec<UserId> = (0..10_000).map(|_| UserId::new_v7()).collect();
    sale.admit(&users, 600_000).await?;

    let tasks: Vec<_> = users
        .iter()
        .map(|&u| {
            let sale = Arc::clone(&sale);
            tokio::spawn(async move { sale.orders.reserve(&request(u, 1, "buy")).await })
        })
        .collect();
    let mut winners = Vec::new();
    let mut sold_out = 0;
    for t in tasks {
        match t.await?? {
            ReserveOutcome::Created(order) => winners.push(order),
            ReserveOutcome::SoldOut { available: 0 } => sold_out += 1,
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    assert_eq!((winners.len(), sold_out), (10, 9_990));
    assert_eq!(
        winners.iter().map(|o| o.user).collect::<HashSet<_>>().len(),
        10
    );
    assert_eq!(sale.check_counters().await?, (0, 10, 0));

    // The ten pay: exactly ten PAID.
    let paid = futures_util::future::join_all(winners.iter().map(|w| {
        let sale = Arc::clone(&sale);
        let id = w.id;
        async move {
            sale.orders.begin_payment(id, PAY_TIMEOUT).await?;
            sale.orders.confirm(id).await
        }
    }))
    .await;
    for t in paid {
        applied(t?, OrderState::Paid)?;
    }
    assert_eq!(sale.check_counters().await?, (0, 0, 10));
    let orders = sale.audit(1).await?;
    assert_eq!(orders.len(), 10);
    redis.quit().await;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_thousand_five_hundred_orders_never_oversell() -> anyhow::Result<()> {
    let env = load_env()?;
    let redis = connect(&env).await?;
    let sampler_redis = connect(&env).await?;
    let sale = Arc::new(
        TestSale::arm(
            &redis,
            Spec {
                stock: 1_000,
                per_user_limit: 2,
                ..Spec::default()
            },
        )
        .await?,
    );
    // 6,000 buyers; the first 2,500 send a second order; quantities 1 and 2, and every 50th
    // asks for 3 (always over the limit).
    let users: Vec<UserId> = (0..6_000).map(|_| UserId::new_v7()).collect();
    sale.admit(&users, 600_000).await?;
    let mut requests = Vec::new();
    for (i, &u) in users.iter().chain(users[..2_500].iter()).enumerate() {
        let qty = if i % 50 == 0 {
            3
        } else if i % 3 == 0 {
            2
        } else {
            1
        };
        requests.push(request(u, qty, &format!("r{i}")));
    }
    assert_eq!(requests.len(), 8_500);

    // The invariant, sampled from another connection for as long as the orders run.
    let running = Arc::new(AtomicBool::new(true));
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let sampler = {
        let sampling = TestSale {
            redis: sampler_redis.clone(),
            id: sale.id,
            orders: Orders::new(&sampler_redis, sale.id),
            stock: sale.stock,
        };
        let running = Arc::clone(&running);
        tokio::spawn(async move {
            let mut samples = 0_u64;
            let mut started = Some(started_tx);
            loop {
                let still = running.load(Ordering::SeqCst);
                sampling.check_counters().await?;
                samples += 1;
                if let Some(tx) = started.take() {
                    let _ = tx.send(());
                }
                if !still {
                    return anyhow::Ok(samples);
                }
                tokio::task::yield_now().await;
            }
        })
    };
    started_rx.await?;
    let tasks: Vec<_> = requests
        .iter()
        .cloned()
        .map(|req| {
            let sale = Arc::clone(&sale);
            tokio::spawn(async move {
                let outcome = sale.orders.reserve(&req).await?;
                anyhow::Ok((req, outcome))
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await??);
    }
    running.store(false, Ordering::SeqCst);
    let samples = sampler.await??;
    assert!(samples >= 2, "the invariant was sampled {samples} times");

    let mut made: Vec<Order> = Vec::new();
    let (mut sold_out, mut over_limit) = (0, 0);
    for (req, outcome) in outcomes {
        match outcome {
            ReserveOutcome::Created(order) => made.push(order),
            ReserveOutcome::SoldOut { available } => {
                assert!(
                    available < i64::from(req.quantity),
                    "sold out with {available} left"
                );
                sold_out += 1;
            }
            ReserveOutcome::LimitExceeded { owned, limit } => {
                assert_eq!(limit, 2);
                assert!(owned + i64::from(req.quantity) > 2);
                over_limit += 1;
            }
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    assert!(
        over_limit >= 170,
        "every quantity-3 request is over the limit"
    );
    assert!(sold_out > 5_000);
    let units: i64 = made.iter().map(|o| o.quantity).sum();
    // Thousands of single-unit requests came after the stock ran low, so none is left.
    assert_eq!(units, 1_000, "exactly the stock was taken");
    assert_eq!(sale.check_counters().await?, (0, 1_000, 0));
    sale.audit(2).await?;

    // Everyone pays: exactly 1,000 units sold.
    let paid: Vec<_> = made
        .iter()
        .map(|o| {
            let sale = Arc::clone(&sale);
            let id = o.id;
            tokio::spawn(async move {
                sale.orders.begin_payment(id, PAY_TIMEOUT).await?;
                sale.orders.confirm(id).await
            })
        })
        .collect();
    for t in paid {
        applied(t.await??, OrderState::Paid)?;
    }
    assert_eq!(sale.check_counters().await?, (0, 0, 1_000));
    sale.audit(2).await?;
    sampler_redis.quit().await;
    redis.quit().await;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_of_every_call_keeps_counters_and_orders_consistent() -> anyhow::Result<()> {
    const TASKS: u64 = 32;
    const STEPS: usize = 150;
    const LIMIT: i64 = 2;
    let env = load_env()?;
    let redis = connect(&env).await?;
    let sampler_redis = connect(&env).await?;
    // Two-second holds and one-second payments: deadlines pass during the storm, so expiry
    // and sweeping race with payment and cancellation.
    let sale = Arc::new(
        TestSale::arm(
            &redis,
            Spec {
                stock: 300,
                per_user_limit: LIMIT,
                hold_seconds: 2,
                ..Spec::default()
            },
        )
        .await?,
    );
    let users: Arc<Vec<UserId>> = Arc::new((0..400).map(|_| UserId::new_v7()).collect());
    let known: Arc<tokio::sync::Mutex<Vec<OrderId>>> = Arc::default();
    // Applied arrows by kind: reserve, pay, confirm, cancel, fail, expire.
    let counts: Arc<[AtomicU64; 6]> = Arc::new(Default::default());

    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = TestSale {
            redis: sampler_redis.clone(),
            id: sale.id,
            orders: Orders::new(&sampler_redis, sale.id),
            stock: sale.stock,
        };
        let running = Arc::clone(&running);
        tokio::spawn(async move {
            let mut samples = 0_u64;
            while running.load(Ordering::SeqCst) {
                sampling.check_counters().await?;
                samples += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            anyhow::Ok(samples)
        })
    };

    let tasks: Vec<_> = (0..TASKS)
        .map(|seed| {
            let (sale, users, known, counts) = (
                Arc::clone(&sale),
                Arc::clone(&users),
                Arc::clone(&known),
                Arc::clone(&counts),
            );
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed);
                let o = &sale.orders;
                let count = |i: usize| counts[i].fetch_add(1, Ordering::Relaxed);
                for step in 0..STEPS {
                    let roll = rng.random_range(0..100);
                    let pick = {
                        let known = known.lock().await;
                        (!known.is_empty()).then(|| known[rng.random_range(0..known.len())])
                    };
                    match (roll, pick) {
                        (0..40, _) | (_, None) => {
                            let user = users[rng.random_range(0..users.len())];
                            if rng.random_range(0..10) < 9 {
                                sale.admit(&[user], 60_000).await?;
                            }
                            // A few retries reuse a recent key of this task.
                            let key = if step > 0 && rng.random_range(0..10) == 0 {
                                format!("t{seed}-s{}", step - 1)
                            } else {
                                format!("t{seed}-s{step}")
                            };
                            let qty = rng.random_range(1..=2);
                            match o.reserve(&request(user, qty, &key)).await? {
                                ReserveOutcome::Created(order) => {
                                    count(0);
                                    known.lock().await.push(order.id);
                                }
                                ReserveOutcome::SaleNotOpen(s) => {
                                    anyhow::bail!("sale not open: {s}")
                                }
                                ReserveOutcome::SaleNotFound => anyhow::bail!("sale not found"),
                                _ => {}
                            }
                        }
                        (40..55, Some(id)) => {
                            if o.begin_payment(id, Duration::from_secs(1)).await?.applied() {
                                count(1);
                            }
                        }
                        (55..70, Some(id)) => {
                            if o.confirm(id).await?.applied() {
                                count(2);
                            }
                        }
                        (70..80, Some(id)) => {
                            if o.release(id, Target::Cancelled).await?.applied() {
                                count(3);
                            }
                        }
                        (80..88, Some(id)) => {
                            if o.release(id, Target::Failed).await?.applied() {
                                count(4);
                            }
                        }
                        (88..95, Some(id)) => {
                            if o.release(id, Target::Expired).await?.applied() {
                                count(5);
                            }
                        }
                        (_, Some(_)) => {
                            // A sweeper pass: expire due holds, fail due payments.
                            let (due, _) = o.due(50).await?;
                            for d in due {
                                let target = match o.get(d.order).await?.map(|x| x.state) {
                                    Some(OrderState::Held) => Target::Expired,
                                    Some(OrderState::Paying) => Target::Failed,
                                    _ => continue,
                                };
                                if o.release(d.order, target).await?.applied() {
                                    count(if target == Target::Expired { 5 } else { 4 });
                                }
                            }
                        }
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    running.store(false, Ordering::SeqCst);
    let samples = sampler.await??;
    assert!(samples >= 2, "the invariant was sampled {samples} times");

    let n = |i: usize| counts[i].load(Ordering::Relaxed);
    let made = known.lock().await.len() as u64;
    assert_eq!(made, n(0));
    assert!(made >= 100, "only {made} orders were made");
    for (i, kind) in ["pay", "confirm", "cancel", "fail"].iter().enumerate() {
        assert!(n(i + 1) > 0, "no {kind} arrow was applied");
    }
    let orders = sale.audit(LIMIT).await?;
    assert_eq!(orders.len() as u64, made, "no order outside the ones made");
    let ended = orders.iter().filter(|o| o.state.is_final()).count() as u64;
    assert_eq!(
        ended,
        n(2) + n(3) + n(4) + n(5),
        "every end was one applied arrow"
    );

    // Traffic stops; the sweeper runs until every deadline has passed and been handled
    // (PAYING with no outcome: failed). Then avail + sold = stock_total.
    let give_up = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (due, _) = sale.orders.due(1_000).await?;
        for d in &due {
            match sale.orders.get(d.order).await?.map(|o| o.state) {
                Some(OrderState::Held) => {
                    applied(
                        sale.orders.release(d.order, Target::Expired).await?,
                        OrderState::Expired,
                    )?;
                }
                Some(OrderState::Paying) => {
                    applied(
                        sale.orders.release(d.order, Target::Failed).await?,
                        OrderState::Failed,
                    )?;
                }
                other => anyhow::bail!("a due order in state {other:?}"),
            }
        }
        let live: Vec<(String, f64)> = redis
            .pool()
            .zrange(&sale.orders.keys().holds, 0, -1, None, false, None, true)
            .await?;
        if live.is_empty() {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < give_up, "holds never drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let orders = sale.audit(LIMIT).await?;
    assert!(orders.iter().all(|o| o.state.is_final()));
    let (avail, held, sold) = sale.check_counters().await?;
    assert_eq!(held, 0);
    assert_eq!(avail + sold, 300);
    assert_eq!(
        sold,
        orders
            .iter()
            .filter(|o| o.state == OrderState::Paid)
            .map(|o| o.quantity)
            .sum::<i64>()
    );
    sampler_redis.quit().await;
    redis.quit().await;
    env.cleanup().await
}

/// `lua/rereport.lua`: a PAYING order past its deadline is claimed once per window, the windows
/// doubling up to the cap; concurrent claims grant one; a parked order is never granted; a
/// claim given back is granted again at once; unpark clears the mark and opens a first window.
#[tokio::test]
async fn rereport_claims_back_off_per_order_and_skip_parked_ones() -> anyhow::Result<()> {
    use dropline_core::orders::rereport::{Backoff, Claim};
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = TestSale::arm(&redis, Spec::default()).await?;
    let o = &sale.orders;
    let backoff = Backoff {
        first: Duration::from_millis(200),
        max: Duration::from_millis(500),
    };
    let order = held_order(&sale, 1).await?;
    assert_eq!(
        o.claim_rereport(order.id, backoff).await?,
        Claim::NotPaying(OrderState::Held)
    );
    applied(
        o.begin_payment(order.id, Duration::from_millis(300))
            .await?,
        OrderState::Paying,
    )?;
    assert_eq!(o.claim_rereport(order.id, backoff).await?, Claim::NotDue);
    tokio::time::sleep(Duration::from_millis(350)).await;

    // Ten at once: one is granted.
    let claims =
        futures_util::future::join_all((0..10).map(|_| o.claim_rereport(order.id, backoff)))
            .await
            .into_iter()
            .collect::<anyhow::Result<Vec<_>>>()?;
    let granted: Vec<_> = claims
        .iter()
        .filter(|c| matches!(c, Claim::Granted { .. }))
        .collect();
    assert_eq!(granted.len(), 1, "{claims:?}");
    assert!(
        claims
            .iter()
            .all(|c| matches!(c, Claim::Granted { .. } | Claim::Wait { .. }))
    );

    // Windows of 200, 400, then 500 ms (the cap).
    let mut windows = Vec::new();
    for _ in 0..3 {
        let until = loop {
            match o.claim_rereport(order.id, backoff).await? {
                Claim::Wait { until_ms } => {
                    let left = until_ms - redis_now_ms(&redis).await?;
                    tokio::time::sleep(Duration::from_millis(u64::try_from(left.max(0))? + 5))
                        .await;
                }
                Claim::Granted { n, until_ms } => break (n, until_ms),
                other => anyhow::bail!("{other:?}"),
            }
        };
        windows.push((until.0, until.1 - redis_now_ms(&redis).await?));
    }
    let ns: Vec<i64> = windows.iter().map(|w| w.0).collect();
    assert_eq!(ns, [2, 3, 4]);
    for ((_, left), want) in windows.iter().zip([400, 500, 500]) {
        assert!((want - 100..=want).contains(left), "{windows:?}");
    }

    // Given back: granted again at once, with the same number.
    let Claim::Wait { until_ms } = o.claim_rereport(order.id, backoff).await? else {
        anyhow::bail!("expected a window");
    };
    assert!(until_ms > redis_now_ms(&redis).await?);
    o.give_back_rereport(order.id, 4).await?;
    assert!(matches!(
        o.claim_rereport(order.id, backoff).await?,
        Claim::Granted { n: 4, .. }
    ));

    // Parked: never granted, the reminder backs off too; unpark opens a first window.
    assert!(o.mark_parked(order.id).await?);
    assert!(o.parked_at(order.id).await?.is_some());
    o.give_back_rereport(order.id, 4).await?;
    assert!(matches!(
        o.claim_rereport(order.id, backoff).await?,
        Claim::Parked { n: 4, .. }
    ));
    assert!(matches!(
        o.claim_rereport(order.id, backoff).await?,
        Claim::Wait { .. }
    ));
    assert!(o.unmark_parked(order.id, backoff.first).await?);
    assert_eq!(o.parked_at(order.id).await?, None);
    assert!(matches!(
        o.claim_rereport(order.id, backoff).await?,
        Claim::Wait { .. }
    ));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(matches!(
        o.claim_rereport(order.id, backoff).await?,
        Claim::Granted { n: 1, .. }
    ));

    // No such order: nothing written.
    let ghost = OrderId::new_v7();
    assert_eq!(o.claim_rereport(ghost, backoff).await?, Claim::NotFound);
    assert!(!o.mark_parked(ghost).await?);
    let exists: i64 = redis.pool().exists(o.order_key(ghost)).await?;
    assert_eq!(exists, 0);
    redis.quit().await;
    env.cleanup().await
}
