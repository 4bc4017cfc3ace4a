//! The waiting room's Redis core (`lua/wr_*.lua` through `dropline_waitroom::queue`) against
//! the machine's real Redis. Each test has its own key prefix ([`TestEnv`]) and its own sale,
//! so the tests run in parallel. A sale is set up by writing its keys directly, as the arming
//! code does; time moves by rewriting `opens_at` relative to Redis `TIME`, silence by
//! rewriting a place's last-poll stamp (`common::silence`), and sleeps appear only where a test
//! needs wall time to pass (admission deadlines, a sold-out spell polled through).

use std::time::Duration;

use anyhow::Context;

use dropline_core::clients::redis::Redis;
use dropline_core::ids::{SaleId, UserId};
use dropline_core::sale::SaleState;
use dropline_core::sale::keys::LineShards;
use dropline_testkit::TestEnv;
use dropline_waitroom::queue::{
    AdmitLimit, AdmitParams, JoinAsk, JoinOptions, JoinOutcome, MAX_JOIN_BATCH, Place, Refusal,
    Status, Verdict, WaitQueue, member,
};
use fred::prelude::*;
use futures_util::{StreamExt, stream};
use uuid::Uuid;

mod common;

const ABANDON: Duration = Duration::from_secs(120);
/// door.md §6's `abandon_after` of 20 s.
const ABANDON_20: Duration = Duration::from_secs(20);
/// The return grace of joins and polls (door.md §6; the default of
/// `waitroom.return_grace_seconds`).
const GRACE: Duration = Duration::from_secs(1_800);
const WINDOW: Duration = Duration::from_secs(600);

fn join_options() -> JoinOptions {
    JoinOptions {
        max_queue_length: 0,
        return_grace: GRACE,
        code_failures_per_hour: 10,
    }
}

/// A sale as the arming code leaves it in Redis.
struct SaleSpec {
    stock: i64,
    /// Opening time relative to Redis now, in ms (negative: already open).
    opens_in_ms: i64,
    per_user_limit: i64,
    max_active: i64,
}

impl Default for SaleSpec {
    fn default() -> Self {
        Self {
            stock: 1_000,
            opens_in_ms: -1_000,
            per_user_limit: 1,
            max_active: 0,
        }
    }
}

struct Sale {
    redis: Redis,
    queue: WaitQueue,
    id: SaleId,
}

impl Sale {
    async fn arm(redis: &Redis, spec: SaleSpec) -> anyhow::Result<Self> {
        let id = SaleId::new_v7();
        let opens_at = redis_now_ms(redis).await? + spec.opens_in_ms;
        let pool = redis.pool();
        let cfg: Vec<(&str, String)> = vec![
            ("stock_total", spec.stock.to_string()),
            ("opens_at", opens_at.to_string()),
            ("closes_at", "0".into()),
            ("per_user_limit", spec.per_user_limit.to_string()),
            ("hold_seconds", "600".into()),
            ("admit_per_second", "100".into()),
            ("max_active", spec.max_active.to_string()),
            ("paused", "0".into()),
            ("closed", "0".into()),
            ("product_id", Uuid::now_v7().to_string()),
            ("price", "1000".into()),
            ("currency", "KRW".into()),
        ];
        let _: () = pool.hset(redis.sale_key(id, "cfg"), cfg).await?;
        let sale = Self {
            redis: redis.clone(),
            queue: WaitQueue::new(redis, id),
            id,
        };
        sale.set_stock(spec.stock, 0, 0).await?;
        Ok(sale)
    }

    async fn set_stock(&self, avail: i64, held: i64, sold: i64) -> anyhow::Result<()> {
        for (name, value) in [("avail", avail), ("held", held), ("sold", sold)] {
            let _: () = self
                .redis
                .pool()
                .set(self.redis.sale_key(self.id, name), value, None, None, false)
                .await?;
        }
        Ok(())
    }

    async fn set_cfg(&self, field: &str, value: impl ToString) -> anyhow::Result<()> {
        let _: () = self
            .redis
            .pool()
            .hset(
                self.redis.sale_key(self.id, "cfg"),
                vec![(field, value.to_string())],
            )
            .await?;
        Ok(())
    }

    /// Moves `opens_at` to Redis now + `ms`.
    async fn opens_in(&self, ms: i64) -> anyhow::Result<()> {
        let at = redis_now_ms(&self.redis).await? + ms;
        self.set_cfg("opens_at", at).await
    }

    async fn join(&self, user: UserId) -> anyhow::Result<(Status, bool)> {
        match self.queue.join(user, &join_options()).await? {
            Some(JoinOutcome::Standing { status, new }) => Ok((status, new)),
            other => anyhow::bail!("join: {other:?}"),
        }
    }

    async fn place(&self, user: UserId) -> anyhow::Result<Place> {
        self.place_with(user, GRACE).await
    }

    /// The user's place, polled with this return grace.
    async fn place_with(&self, user: UserId, return_grace: Duration) -> anyhow::Result<Place> {
        match self.queue.status(user, return_grace).await? {
            Some(status) => Ok(status.place),
            None => anyhow::bail!("status: sale not found"),
        }
    }

    async fn admit(&self, max: u32) -> anyhow::Result<dropline_waitroom::queue::AdmitOutcome> {
        self.admit_with(AdmitParams::new(max, ABANDON, WINDOW))
            .await
    }

    async fn admit_with(
        &self,
        params: AdmitParams,
    ) -> anyhow::Result<dropline_waitroom::queue::AdmitOutcome> {
        self.queue
            .admit(&params)
            .await?
            .ok_or_else(|| anyhow::anyhow!("admit: sale not found"))
    }

    async fn stats(&self) -> anyhow::Result<dropline_waitroom::queue::Stats> {
        self.queue
            .stats()
            .await?
            .ok_or_else(|| anyhow::anyhow!("stats: sale not found"))
    }

    /// The order side's hooks (see `queue.rs`): an order keeps the buyer active until it ends.
    async fn order_placed(&self, user: UserId, qty: i64) -> anyhow::Result<()> {
        let pool = self.redis.pool();
        let _: i64 = pool
            .decr_by(self.redis.sale_key(self.id, "avail"), qty)
            .await?;
        let _: i64 = pool
            .incr_by(self.redis.sale_key(self.id, "held"), qty)
            .await?;
        let deadline = redis_now_ms(&self.redis).await? + 600_000;
        let _: i64 = pool
            .custom(
                fred::cmd!("ZADD"),
                vec![
                    Value::from(self.queue.keys().adm.as_str()),
                    Value::from("XX"),
                    Value::from("GT"),
                    Value::from(deadline),
                    Value::from(&member(user)[..]),
                ],
            )
            .await?;
        Ok(())
    }

    /// An order ends: paid (`to_sold`) or expired (units back to avail); the slot frees.
    async fn order_ended(&self, user: UserId, qty: i64, paid: bool) -> anyhow::Result<()> {
        let pool = self.redis.pool();
        let _: i64 = pool
            .decr_by(self.redis.sale_key(self.id, "held"), qty)
            .await?;
        let target = if paid { "sold" } else { "avail" };
        let _: i64 = pool
            .incr_by(self.redis.sale_key(self.id, target), qty)
            .await?;
        let _: i64 = pool
            .zrem(&self.queue.keys().adm, Value::from(&member(user)[..]))
            .await?;
        Ok(())
    }
}

async fn redis_now_ms(redis: &Redis) -> anyhow::Result<i64> {
    let t: Vec<i64> = redis
        .pool()
        .custom(fred::cmd!("TIME"), Vec::<String>::new())
        .await?;
    anyhow::ensure!(t.len() == 2, "TIME: {t:?}");
    Ok(t[0] * 1000 + t[1] / 1000)
}

async fn connect(env: &TestEnv) -> anyhow::Result<Redis> {
    Redis::connect(&env.config.redis).await
}

fn users(n: usize) -> Vec<UserId> {
    (0..n).map(|_| UserId::new_v7()).collect()
}

#[tokio::test]
async fn positions_follow_arrival_order_after_opening() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(&redis, SaleSpec::default()).await?;
    let buyers = users(50);
    for (i, &u) in buyers.iter().enumerate() {
        let (status, new) = sale.join(u).await?;
        assert!(new);
        assert_eq!(
            status.place,
            Place::Waiting {
                position: i as u64 + 1
            }
        );
        assert_eq!(status.queue_length, i as u64 + 1);
    }
    for (i, &u) in buyers.iter().enumerate() {
        assert_eq!(
            sale.place(u).await?,
            Place::Waiting {
                position: i as u64 + 1
            }
        );
    }
    // Admission takes them from the head, in the same order.
    let outcome = sale.admit(20).await?;
    assert_eq!(outcome.admitted, buyers[..20]);
    assert_eq!(outcome.limit, AdmitLimit::Rate);
    assert_eq!(
        sale.place(buyers[20]).await?,
        Place::Waiting { position: 1 }
    );
    assert_eq!(
        sale.place(buyers[49]).await?,
        Place::Waiting { position: 30 }
    );
    match sale.place(buyers[0]).await? {
        Place::Admitted { deadline_ms } => {
            let now = redis_now_ms(&redis).await? as u64;
            assert!(deadline_ms > now + WINDOW.as_millis() as u64 - 5_000);
        }
        other => panic!("expected admitted, got {other:?}"),
    }
    let stats = sale.stats().await?;
    assert_eq!(
        (
            stats.state,
            stats.queue_length,
            stats.admitted_total,
            stats.active
        ),
        (SaleState::Open, 30, 20, 20)
    );
    env.cleanup().await
}

#[tokio::test]
async fn joining_again_returns_the_same_place_from_any_connection() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let other = connect(&env).await?; // a second replica
    let sale = Sale::arm(&redis, SaleSpec::default()).await?;
    let elsewhere = WaitQueue::new(&other, sale.id);
    let buyers = users(5);
    for &u in &buyers {
        sale.join(u).await?;
    }
    // The third buyer joins again, at once from both replicas.
    let options = join_options();
    let (a, b) = tokio::join!(
        sale.queue.join(buyers[2], &options),
        elsewhere.join(buyers[2], &options)
    );
    for outcome in [a?, b?] {
        match outcome {
            Some(JoinOutcome::Standing { status, new }) => {
                assert!(!new);
                assert_eq!(status.place, Place::Waiting { position: 3 });
                assert_eq!(status.queue_length, 5);
            }
            other => panic!("{other:?}"),
        }
    }
    // Before opening too: a second join keeps the pre-open draw (no re-roll by refreshing).
    let pre = Sale::arm(
        &redis,
        SaleSpec {
            opens_in_ms: 60_000,
            ..SaleSpec::default()
        },
    )
    .await?;
    let pre_buyers = users(200);
    for &u in &pre_buyers {
        let (status, new) = pre.join(u).await?;
        assert!(new);
        assert_eq!(status.place, Place::Scheduled);
        assert_eq!(status.place.position(), None);
    }
    pre.opens_in(-1).await?;
    let mut before = Vec::new();
    for &u in &pre_buyers {
        before.push(pre.place(u).await?);
    }
    for &u in &pre_buyers {
        let (status, new) = pre.join(u).await?;
        assert!(!new);
        assert_eq!(status.queue_length, 200);
    }
    for (i, &u) in pre_buyers.iter().enumerate() {
        assert_eq!(pre.place(u).await?, before[i]);
    }
    let mut positions: Vec<u64> = before.iter().filter_map(|p| p.position()).collect();
    positions.sort_unstable();
    assert_eq!(positions, (1..=200).collect::<Vec<_>>());
    other.quit().await;
    env.cleanup().await
}

/// Spearman's rank correlation between two rankings of the same n items (each a permutation
/// of 1..=n): 1 - 6 Σd² / (n (n² - 1)).
fn spearman(a: &[u64], b: &[u64]) -> f64 {
    let n = a.len() as f64;
    let d2: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    1.0 - 6.0 * d2 / (n * (n * n - 1.0))
}

/// Final positions of `buyers` (status after opening), concurrently.
async fn positions(sale: &Sale, buyers: &[UserId]) -> anyhow::Result<Vec<u64>> {
    let places: Vec<anyhow::Result<Place>> = stream::iter(buyers.iter().copied())
        .map(|u| sale.place(u))
        .buffered(256)
        .collect()
        .await;
    places
        .into_iter()
        .map(|p| {
            p.and_then(|p| {
                p.position()
                    .ok_or_else(|| anyhow::anyhow!("not waiting: {p:?}"))
            })
        })
        .collect()
}

/// The pre-queue is shuffled. Under a uniformly random order, Spearman's ρ between two
/// independent rankings of n items has mean 0 and variance exactly 1/(n-1), and is close to
/// normal. With n = 16,000 the anchor's bound |ρ| < 0.05 sits at 0.05·√15,999 = 6.3 standard
/// deviations: a correct shuffle fails one check with probability 2·Φ(-6.3) ≈ 3·10⁻¹⁰, so the
/// test cannot flake in practice. Two checks:
/// - arrival order vs final order: fails arrival order (ρ = 1), reverse order (ρ = -1) and any
///   order correlated with arrival;
/// - two sales fed the same users in the same arrival order: any fixed pattern (any
///   deterministic function of arrival, however scrambled) gives ρ = 1 between the two runs.
#[tokio::test]
async fn pre_open_arrivals_end_up_in_uniformly_random_order() -> anyhow::Result<()> {
    const N: usize = 16_000;
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let spec = || SaleSpec {
        opens_in_ms: 3_600_000,
        ..SaleSpec::default()
    };
    let (a, b) = (
        Sale::arm(&redis, spec()).await?,
        Sale::arm(&redis, spec()).await?,
    );
    let buyers = users(N);
    // One after another, so arrival order is the order of `buyers` in both sales.
    for &u in &buyers {
        for sale in [&a, &b] {
            let (status, _) = sale.join(u).await?;
            assert_eq!(status.place, Place::Scheduled);
        }
    }
    // Later arrivals queue behind the whole pre-queue, in arrival order.
    a.opens_in(-1).await?;
    b.opens_in(-1).await?;
    let late = users(5);
    for (i, &u) in late.iter().enumerate() {
        let (status, _) = a.join(u).await?;
        assert_eq!(
            status.place,
            Place::Waiting {
                position: (N + i + 1) as u64
            }
        );
    }
    let pos_a = positions(&a, &buyers).await?;
    let pos_b = positions(&b, &buyers).await?;
    let mut sorted = pos_a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=N as u64).collect::<Vec<_>>(), "a permutation");
    let arrival: Vec<u64> = (1..=N as u64).collect();
    let rho_arrival = spearman(&arrival, &pos_a);
    let rho_runs = spearman(&pos_a, &pos_b);
    assert!(
        rho_arrival.abs() < 0.05,
        "final order correlates with arrival: ρ = {rho_arrival}"
    );
    assert!(
        rho_runs.abs() < 0.05,
        "two sales with the same arrivals got correlated orders (a fixed pattern): ρ = {rho_runs}"
    );
    // The same checks do catch the orders a broken shuffle would produce.
    let reversed: Vec<u64> = arrival.iter().rev().copied().collect();
    assert!((spearman(&arrival, &arrival) - 1.0).abs() < 1e-9);
    assert!((spearman(&arrival, &reversed) + 1.0).abs() < 1e-9);
    env.cleanup().await
}

#[tokio::test]
async fn a_full_queue_refuses_new_places_but_keeps_existing_ones() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(&redis, SaleSpec::default()).await?;
    let options = JoinOptions {
        max_queue_length: 3,
        return_grace: GRACE,
        code_failures_per_hour: 10,
    };
    let buyers = users(5);
    for &u in &buyers[..3] {
        assert!(matches!(
            sale.queue.join(u, &options).await?,
            Some(JoinOutcome::Standing { new: true, .. })
        ));
    }
    match sale.queue.join(buyers[3], &options).await? {
        Some(JoinOutcome::QueueFull { queue_length, .. }) => assert_eq!(queue_length, 3),
        other => panic!("expected queue_full, got {other:?}"),
    }
    assert_eq!(sale.place(buyers[3]).await?, Place::NotQueued);
    // Someone already in line joining again is not refused.
    assert!(matches!(
        sale.queue.join(buyers[1], &options).await?,
        Some(JoinOutcome::Standing { new: false, .. })
    ));
    // A place frees up: the next one gets in.
    assert!(sale.queue.leave(buyers[0]).await?);
    assert!(matches!(
        sale.queue.join(buyers[4], &options).await?,
        Some(JoinOutcome::Standing {
            new: true,
            status: Status {
                place: Place::Waiting { position: 3 },
                ..
            }
        })
    ));
    env.cleanup().await
}

/// Concurrent joins reach Redis as one `wr_join.lua` call (the edge's batcher): each join of
/// the batch is answered as if it had come alone, in order, the line growing as it goes.
#[tokio::test]
async fn a_batch_of_joins_is_answered_as_if_each_came_alone_in_order() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(&redis, SaleSpec::default()).await?;
    let options = JoinOptions {
        max_queue_length: 4,
        return_grace: GRACE,
        code_failures_per_hour: 10,
    };
    let [a, b, c, d, e, f] = users(6)[..] else {
        anyhow::bail!("six users");
    };
    sale.join(a).await?;
    let ask = |user, verdict| JoinAsk {
        user,
        verdict,
        code: None,
    };
    let answers = sale
        .queue
        .join_many(
            &[
                ask(b, Verdict::Open),
                ask(c, Verdict::Open),
                // The same user again in the same batch: the place the first ask made.
                ask(b, Verdict::Open),
                // A malformed body is refused for a user without a place, and writes nothing.
                ask(d, Verdict::BadRequest),
                ask(e, Verdict::Open),
                // The line is full now (a, b, c, e).
                ask(f, Verdict::Open),
            ],
            &options,
        )
        .await?;
    assert_eq!(
        described(answers)?,
        [
            "waiting Some(2) new=true len=2",
            "waiting Some(3) new=true len=3",
            "waiting Some(2) new=false len=3",
            "refused BadRequest",
            "waiting Some(4) new=true len=4",
            "queue_full len=4",
        ]
    );
    for (user, place) in [
        (a, Place::Waiting { position: 1 }),
        (b, Place::Waiting { position: 2 }),
        (c, Place::Waiting { position: 3 }),
        (d, Place::NotQueued),
        (e, Place::Waiting { position: 4 }),
        (f, Place::NotQueued),
    ] {
        assert_eq!(sale.place(user).await?, place);
    }
    // The counters count each new place once (wr_join.lua adds the batch's report counts as
    // sums after its last user): four arrivals, numbered 1 to 4, the batch's in one second.
    let keys = dropline_core::sale::keys::SaleKeys::new(&redis, sale.id);
    let joined: Option<i64> = redis.pool().hget(keys.report(), "joined").await?;
    assert_eq!(joined, Some(4));
    let series: std::collections::HashMap<String, i64> =
        redis.pool().hgetall(keys.report_series()).await?;
    let arrivals: i64 = series
        .iter()
        .filter(|(field, _)| field.starts_with("a:"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(arrivals, 4, "{series:?}");
    let seq: Option<i64> = redis.pool().get(keys.queue_seq()).await?;
    assert_eq!(seq, Some(4));
    // A batch holds at least one join and at most MAX_JOIN_BATCH.
    assert!(sale.queue.join_many(&[], &options).await.is_err());
    let too_many: Vec<JoinAsk> = users(MAX_JOIN_BATCH + 1)
        .into_iter()
        .map(|user| ask(user, Verdict::Open))
        .collect();
    assert!(sale.queue.join_many(&too_many, &options).await.is_err());
    assert_eq!(sale.stats().await?.queue_length, 4);
    env.cleanup().await
}

/// Each answer of a `join_many` as one line: state, position, whether new, the line's length;
/// or the refusal.
fn described(answers: Vec<anyhow::Result<Option<JoinOutcome>>>) -> anyhow::Result<Vec<String>> {
    answers
        .into_iter()
        .map(|answer| match answer? {
            Some(JoinOutcome::Standing { status, new }) => Ok(format!(
                "{} {:?} new={new} len={}",
                status.place.state(),
                status.place.position(),
                status.queue_length
            )),
            Some(JoinOutcome::Refused(why)) => Ok(format!("refused {why:?}")),
            Some(JoinOutcome::QueueFull { queue_length, .. }) => {
                Ok(format!("queue_full len={queue_length}"))
            }
            None => Ok("not armed".to_owned()),
        })
        .collect()
}

/// `max_queue_length` counts skipped places too. A batch reads skip's size once and keeps it
/// current: a place it brings back from skip, or finds lost there, no longer counts as skipped
/// for the joins after it in the same batch.
#[tokio::test]
async fn a_batch_counts_the_places_it_takes_out_of_skip_against_the_maximum() -> anyhow::Result<()>
{
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(&redis, SaleSpec::default()).await?;
    let [a, b, c, d, e, f, g] = users(7)[..] else {
        anyhow::bail!("seven users");
    };
    for u in [a, b, c, f] {
        sale.join(u).await?;
    }
    // c and f are skipped; then f stays silent past the grace, so its place is lost.
    common::silence(&redis, sale.queue.keys(), &[c, f], 25).await?;
    let reaped = sale.queue.reap(ABANDON_20, GRACE, 100).await?;
    assert_eq!((reaped.queue_length, reaped.skipped_length), (2, 2));
    common::silence(&redis, sale.queue.keys(), &[f], GRACE.as_secs() + 5).await?;

    let options = JoinOptions {
        max_queue_length: 6,
        return_grace: GRACE,
        code_failures_per_hour: 10,
    };
    let ask = |user| JoinAsk {
        user,
        verdict: Verdict::Open,
        code: None,
    };
    let answers = sale
        .queue
        .join_many(&[ask(d), ask(c), ask(f), ask(e), ask(g)], &options)
        .await?;
    assert_eq!(
        described(answers)?,
        [
            // 2 waiting + 2 skipped < 6.
            "waiting Some(3) new=true len=3",
            // Back from skip, ahead of d: 4 waiting, 1 skipped.
            "waiting Some(3) new=false len=4",
            // Lost in skip, so a new place: 4 waiting, 0 skipped.
            "waiting Some(5) new=true len=5",
            "waiting Some(6) new=true len=6",
            "queue_full len=6",
        ]
    );
    assert_eq!(sale.stats().await?.skipped, 0);
    env.cleanup().await
}

#[tokio::test]
async fn admitting_from_an_empty_queue_admits_nobody() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(&redis, SaleSpec::default()).await?;
    let outcome = sale.admit(100).await?;
    assert_eq!(outcome.state, SaleState::Open);
    assert!(outcome.admitted.is_empty());
    assert_eq!(
        (outcome.skipped, outcome.queue_length, outcome.active),
        (0, 0, 0)
    );
    assert_eq!(outcome.limit, AdmitLimit::Empty);
    // A zero budget admits nobody either, and says why.
    sale.join(UserId::new_v7()).await?;
    let outcome = sale.admit(0).await?;
    assert!(outcome.admitted.is_empty());
    assert_eq!(outcome.limit, AdmitLimit::Rate);
    assert_eq!(sale.stats().await?.admitted_total, 0);
    env.cleanup().await
}

#[tokio::test]
async fn sold_out_reaches_waiting_buyers_and_returning_stock_resumes_admission()
-> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(
        &redis,
        SaleSpec {
            stock: 2,
            ..SaleSpec::default()
        },
    )
    .await?;
    let b = users(5);
    for &u in &b[..4] {
        sale.join(u).await?;
    }
    // Two units: two buyers, whatever the rate allows.
    let outcome = sale.admit(100).await?;
    assert_eq!(outcome.admitted, b[..2]);
    assert_eq!(outcome.limit, AdmitLimit::Stock);
    // Both order; nothing more to admit while their units are held.
    sale.order_placed(b[0], 1).await?;
    sale.order_placed(b[1], 1).await?;
    assert!(sale.admit(100).await?.admitted.is_empty());
    // b0 pays, b1's hold expires: its unit comes back, and the next buyer gets in.
    sale.order_ended(b[0], 1, true).await?;
    assert!(sale.admit(100).await?.admitted.is_empty());
    sale.order_ended(b[1], 1, false).await?;
    let outcome = sale.admit(100).await?;
    assert_eq!(
        (outcome.admitted.as_slice(), outcome.limit),
        (&b[2..3], AdmitLimit::Stock)
    );
    // b2 orders and pays: nothing left, nothing held. Everyone hears sold_out.
    sale.order_placed(b[2], 1).await?;
    sale.order_ended(b[2], 1, true).await?;
    assert_eq!(sale.place(b[3]).await?, Place::SoldOut);
    assert_eq!(sale.place(b[0]).await?, Place::SoldOut);
    let outcome = sale.admit(100).await?;
    assert_eq!(
        (outcome.state, outcome.admitted.len()),
        (SaleState::SoldOut, 0)
    );
    assert_eq!(sale.stats().await?.state, SaleState::SoldOut);
    let (status, new) = sale.join(b[4]).await?;
    assert_eq!((status.place, new), (Place::SoldOut, false));
    // Stock comes back (an operator adds a unit): b3 kept the place and is admitted.
    sale.set_stock(1, 0, 2).await?;
    assert_eq!(sale.place(b[3]).await?, Place::Waiting { position: 1 });
    assert_eq!(sale.place(b[4]).await?, Place::NotQueued);
    let outcome = sale.admit(100).await?;
    assert_eq!(outcome.admitted, b[3..4]);
    env.cleanup().await
}

/// Sold out is not the end while stock can come back: buyers who keep polling (and hear
/// `sold_out`) keep their places; one silent past the return grace loses it.
#[tokio::test]
async fn polling_through_a_sold_out_spell_keeps_the_place() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(&redis, SaleSpec::default()).await?;
    let b = users(3);
    for &u in &b {
        sale.join(u).await?;
    }
    sale.set_stock(0, 0, 1_000).await?;
    let until = tokio::time::Instant::now() + Duration::from_millis(2_100);
    while tokio::time::Instant::now() < until {
        for &u in &b[1..] {
            assert_eq!(sale.place_with(u, GRACE_FAST).await?, Place::SoldOut);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sale.set_stock(5, 0, 995).await?;
    assert_eq!(sale.place_with(b[0], GRACE_FAST).await?, Place::NotQueued);
    assert_eq!(
        sale.place_with(b[1], GRACE_FAST).await?,
        Place::Waiting { position: 1 }
    );
    assert_eq!(
        sale.place_with(b[2], GRACE_FAST).await?,
        Place::Waiting { position: 2 }
    );
    env.cleanup().await
}

#[tokio::test]
async fn the_stock_rule_counts_each_buyer_at_the_per_user_limit() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(
        &redis,
        SaleSpec {
            stock: 5,
            per_user_limit: 2,
            ..SaleSpec::default()
        },
    )
    .await?;
    for u in users(6) {
        sale.join(u).await?;
    }
    // ceil(5 / 2) = 3 buyers: two may take 2 units each and the third still finds one.
    let outcome = sale.admit(100).await?;
    assert_eq!(
        (outcome.admitted.len(), outcome.limit),
        (3, AdmitLimit::Stock)
    );
    assert_eq!(sale.admit(100).await?.admitted.len(), 0);
    // The caller may count each buyer at one unit instead: 5 - 3 active = 2 more.
    let mut params = AdmitParams::new(100, ABANDON, WINDOW);
    params.units_per_buyer = 1;
    let outcome = sale.admit_with(params).await?;
    assert_eq!((outcome.admitted.len(), outcome.active), (2, 5));
    env.cleanup().await
}

/// door.md §3: a poll's `free` (the buyers the admitter could let in now, the ETA's first term)
/// follows the stock rule at the per-user limit and `max_active`, as the admitter does.
#[tokio::test]
async fn a_polls_free_follows_the_stock_rule_and_max_active() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(
        &redis,
        SaleSpec {
            stock: 10,
            per_user_limit: 3,
            ..SaleSpec::default()
        },
    )
    .await?;
    let b = users(6);
    for &u in &b {
        sale.join(u).await?;
    }
    let last = b[5];
    let free = || async {
        let status = sale
            .queue
            .status(last, GRACE)
            .await?
            .ok_or_else(|| anyhow::anyhow!("sale"))?;
        anyhow::Ok(status.free)
    };
    // ceil(10 / 3) = 4 buyers, nobody in yet.
    assert_eq!(free().await?, 4);
    assert_eq!(sale.admit(1).await?.admitted.len(), 1);
    assert_eq!(free().await?, 3);
    // max_active 2 with one buyer in: one more.
    sale.set_cfg("max_active", 2).await?;
    assert_eq!(free().await?, 1);
    // Two units left and none held: the buyer in may claim them, nobody more.
    sale.set_cfg("max_active", 0).await?;
    sale.set_stock(2, 0, 8).await?;
    assert_eq!(free().await?, 0);
    env.cleanup().await
}

/// Fewer units left than the per-user limit: the line still moves. The rule once rounded the
/// other way (every newcomer promised a whole `per_user_limit`), so with a limit of 2 and one
/// unit over nobody was ever let in again and the sale stopped short of sold out with buyers
/// waiting (a k6 rush: 11 of 12 sold, 89 in line, for good).
#[tokio::test]
async fn the_last_unit_below_the_per_user_limit_still_admits_a_buyer() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(
        &redis,
        SaleSpec {
            stock: 12,
            per_user_limit: 2,
            ..SaleSpec::default()
        },
    )
    .await?;
    let b = users(3);
    for &u in &b {
        sale.join(u).await?;
    }
    // 11 of 12 sold, nobody holding, nobody admitted: one unit over.
    sale.set_stock(1, 0, 11).await?;
    let outcome = sale.admit(100).await?;
    assert_eq!(
        outcome.admitted,
        b[..1],
        "the first in line is let in for the last unit"
    );
    assert_eq!((outcome.active, outcome.limit), (1, AdmitLimit::Stock));
    // That buyer may take it: nobody else is let in meanwhile, and the others keep their places.
    assert_eq!(sale.admit(100).await?.admitted.len(), 0);
    // The buyer holds it (avail 0, held 1): still one active buyer, still nobody more.
    sale.set_stock(0, 1, 11).await?;
    let outcome = sale.admit(100).await?;
    assert_eq!((outcome.admitted.len(), outcome.active), (0, 1));
    for (i, &u) in b[1..].iter().enumerate() {
        let status = sale
            .queue
            .status(u, GRACE)
            .await?
            .ok_or_else(|| anyhow::anyhow!("sale"))?;
        assert_eq!(
            status.place,
            Place::Waiting {
                position: i as u64 + 1
            }
        );
    }
    env.cleanup().await
}

#[tokio::test]
async fn pause_admits_nobody_and_keeps_every_place() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(&redis, SaleSpec::default()).await?;
    let b = users(5);
    for &u in &b {
        sale.join(u).await?;
    }
    sale.set_cfg("paused", 1).await?;
    let outcome = sale.admit(100).await?;
    assert_eq!(
        (outcome.state, outcome.admitted.len(), outcome.limit),
        (SaleState::Paused, 0, AdmitLimit::State)
    );
    assert_eq!(sale.stats().await?.state, SaleState::Paused);
    for (i, &u) in b.iter().enumerate() {
        let status = sale
            .queue
            .status(u, GRACE)
            .await?
            .ok_or_else(|| anyhow::anyhow!("sale"))?;
        assert_eq!(
            status.place,
            Place::Waiting {
                position: i as u64 + 1
            }
        );
        assert!(status.paused);
    }
    // New arrivals still queue while paused.
    let late = UserId::new_v7();
    assert_eq!(
        sale.join(late).await?.0.place,
        Place::Waiting { position: 6 }
    );
    sale.set_cfg("paused", 0).await?;
    let outcome = sale.admit(100).await?;
    assert_eq!(outcome.admitted[..5], b[..]);
    assert_eq!(outcome.admitted[5], late);
    env.cleanup().await
}

/// ANCHORS §3, issue #154 of AWS's waiting room: max_active 10, 30 joins, 10 go silent
/// before admission. The silent ones are skipped (door.md §6: passed over, their places kept
/// aside), each tick still fills its whole budget with live buyers, and the queue drains. A
/// skipped buyer back within the grace is let in first; one back past it joins again.
#[tokio::test]
async fn silent_buyers_are_skipped_and_the_queue_drains() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(
        &redis,
        SaleSpec {
            max_active: 10,
            ..SaleSpec::default()
        },
    )
    .await?;
    let b = users(30);
    for &u in &b {
        sale.join(u).await?;
    }
    let silent: Vec<UserId> = b.iter().copied().skip(2).step_by(3).collect();
    let live: Vec<UserId> = b.iter().copied().filter(|u| !silent.contains(u)).collect();
    assert_eq!((silent.len(), live.len()), (10, 20));
    common::silence(&redis, sale.queue.keys(), &silent, 25).await?;
    let params = AdmitParams::new(100, ABANDON_20, WINDOW);
    let first = sale.admit_with(params).await?;
    assert_eq!(first.admitted, live[..10], "ten live buyers, in order");
    assert_eq!(first.limit, AdmitLimit::MaxActive);
    assert!(first.skipped >= 4, "silent buyers at the head were skipped");
    // Skipped buyers count in nobody's position.
    assert_eq!(sale.place(live[10]).await?, Place::Waiting { position: 1 });
    // max_active holds: nobody more until a slot frees.
    assert!(sale.admit_with(params).await?.admitted.is_empty());
    // The first ten finish (their orders end): the rest of the line drains.
    for &u in &live[..10] {
        assert!(sale.queue.leave(u).await?);
    }
    let second = sale.admit_with(params).await?;
    assert_eq!(second.admitted, live[10..]);
    assert_eq!(second.queue_length, 0, "the queue drained");
    let stats = sale.stats().await?;
    assert_eq!(
        (
            stats.admitted_total,
            stats.abandoned_total,
            stats.queue_length,
            stats.skipped
        ),
        (20, 0, 0, 10)
    );
    // A silent buyer who comes back within the grace has the place back: the line passed it,
    // so at the head, and is admitted at the next tick once a slot is free.
    let back = silent[4];
    assert_eq!(sale.place(back).await?, Place::Waiting { position: 1 });
    assert!(sale.admit_with(params).await?.admitted.is_empty(), "full");
    assert!(sale.queue.leave(live[10]).await?);
    assert_eq!(sale.admit_with(params).await?.admitted, vec![back]);
    // One silent past the grace has lost it and joins again, at the back.
    let gone = silent[5];
    common::silence(&redis, sale.queue.keys(), &[gone], GRACE.as_secs() + 5).await?;
    assert_eq!(sale.place(gone).await?, Place::NotQueued);
    let late = UserId::new_v7();
    assert_eq!(
        sale.join(late).await?.0.place,
        Place::Waiting { position: 1 }
    );
    let (status, new) = sale.join(gone).await?;
    assert!(new);
    assert_eq!(status.place, Place::Waiting { position: 2 });
    let stats = sale.stats().await?;
    assert_eq!((stats.abandoned_total, stats.skipped), (1, 8));
    env.cleanup().await
}

/// door.md §6 "Done when", on the scripts: with `abandon_after` 20 s, A joins first and is
/// silent 25 s while B and C poll and are admitted; D arrives later. A polls again: `waiting`,
/// position 1, and the next tick lets A in, ahead of D.
#[tokio::test]
async fn a_sleeping_tab_keeps_its_place_and_goes_in_first() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(&redis, SaleSpec::default()).await?;
    let [a, b, c, d] = [(); 4].map(|()| UserId::new_v7());
    for u in [a, b, c] {
        sale.join(u).await?;
    }
    common::silence(&redis, sale.queue.keys(), &[a], 25).await?;
    assert_eq!(sale.place(b).await?, Place::Waiting { position: 2 });
    let tick = sale
        .admit_with(AdmitParams::new(2, ABANDON_20, WINDOW))
        .await?;
    assert_eq!((tick.admitted, tick.skipped), (vec![b, c], 1));
    assert_eq!(sale.join(d).await?.0.place, Place::Waiting { position: 1 });
    assert_eq!(sale.stats().await?.queue_length, 1, "A is not in the line");
    // A's tab wakes up: A has the head of the line, D is behind.
    let status = sale.queue.status(a, GRACE).await?.context("armed")?;
    assert_eq!(
        (status.place, status.queue_length),
        (Place::Waiting { position: 1 }, 2)
    );
    assert_eq!(sale.place(d).await?, Place::Waiting { position: 2 });
    let tick = sale
        .admit_with(AdmitParams::new(1, ABANDON_20, WINDOW))
        .await?;
    assert_eq!(tick.admitted, vec![a]);
    assert!(matches!(sale.place(a).await?, Place::Admitted { .. }));
    // A join within the grace brings a skipped place back the same way (no second place).
    let e = UserId::new_v7();
    sale.join(e).await?;
    common::silence(&redis, sale.queue.keys(), &[d], 25).await?;
    let tick = sale
        .admit_with(AdmitParams::new(1, ABANDON_20, WINDOW))
        .await?;
    assert_eq!((tick.admitted, tick.skipped), (vec![e], 1));
    let (status, new) = sale.join(d).await?;
    assert_eq!((status.place, new), (Place::Waiting { position: 1 }, false));
    let pool = redis.pool();
    let (q, skip): (i64, i64) = (
        pool.zcard(&sale.queue.keys().q).await?,
        pool.zcard(&sale.queue.keys().skip).await?,
    );
    assert_eq!((q, skip), (1, 0), "one place for D, in the line");
    let stats = sale.stats().await?;
    assert_eq!((stats.admitted_total, stats.abandoned_total), (4, 0));
    let wr = &sale.queue.keys().wr;
    let counters: (Option<u64>, Option<u64>) = (
        pool.hget(wr, "skipped_total").await?,
        pool.hget(wr, "returned_total").await?,
    );
    assert_eq!(counters, (Some(2), Some(2)));
    env.cleanup().await
}

/// door.md §6: a skipped buyer who polls where the line has not passed the place gets the
/// original position back; leaving removes a skipped place at once.
#[tokio::test]
async fn a_skipped_place_the_line_has_not_reached_comes_back_where_it_was() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(&redis, SaleSpec::default()).await?;
    let b = users(6);
    for &u in &b {
        sale.join(u).await?;
    }
    common::silence(&redis, sale.queue.keys(), &[b[3], b[4]], 25).await?;
    // The reaper skips them deep in the line: those behind move up.
    let reaped = sale.queue.reap(ABANDON_20, GRACE, 100).await?;
    assert_eq!((reaped.skipped, reaped.abandoned), (2, 0));
    assert_eq!(
        (reaped.queue_length, reaped.skipped_length),
        (4, 2),
        "{reaped:?}"
    );
    assert_eq!(sale.place(b[5]).await?, Place::Waiting { position: 4 });
    // b3 is back: the original place, fourth; b5 is fifth again.
    assert_eq!(sale.place(b[3]).await?, Place::Waiting { position: 4 });
    assert_eq!(sale.place(b[5]).await?, Place::Waiting { position: 5 });
    // b4 leaves while skipped: nothing is left to come back to.
    assert!(sale.queue.leave(b[4]).await?);
    assert!(!sale.queue.leave(b[4]).await?);
    assert_eq!(sale.place(b[4]).await?, Place::NotQueued);
    let stats = sale.stats().await?;
    assert_eq!((stats.queue_length, stats.skipped), (5, 0));
    env.cleanup().await
}

/// door.md §6 "Done when": 1,000 silent buyers ahead delay a live buyer's admission by at most
/// one tick. With the admitter's own parameters for 100 a second (a budget of 11 a tick), the
/// first tick passes over all of them and admits the live buyer.
#[tokio::test]
async fn a_thousand_silent_buyers_ahead_cost_a_live_buyer_no_tick() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(&redis, SaleSpec::default()).await?;
    let asleep = users(1_000);
    stream::iter(asleep.iter().copied())
        .map(|u| sale.join(u))
        .buffered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    common::silence(&redis, sale.queue.keys(), &asleep, 25).await?;
    let live = UserId::new_v7();
    assert_eq!(
        sale.join(live).await?.0.place,
        Place::Waiting { position: 1_001 }
    );
    let started = std::time::Instant::now();
    let tick = sale
        .admit_with(AdmitParams::new(11, ABANDON_20, WINDOW))
        .await?;
    println!("one tick over 1,000 silent buyers: {:?}", started.elapsed());
    assert_eq!(
        (tick.admitted, tick.skipped, tick.queue_length),
        (vec![live], 1_000, 0)
    );
    assert_eq!(sale.stats().await?.skipped, 1_000);
    env.cleanup().await
}

/// A tick that spent its budget still passes over the silent buyers now at the head (their
/// places go to skip, so the positions behind them stay honest), reading the head in chunks
/// that grow (`wr_admit.lua`): a wall of 300 takes several, stops at the next live buyer, and
/// never goes past `scan_limit` entries looked at, admitted ones included.
#[tokio::test]
async fn a_tick_skips_the_silent_head_behind_its_admissions_within_scan_limit() -> anyhow::Result<()>
{
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    for limit in [None, Some(100)] {
        let sale = Sale::arm(&redis, SaleSpec::default()).await?;
        let first = UserId::new_v7();
        sale.join(first).await?;
        let asleep = users(300);
        for user in &asleep {
            sale.join(*user).await?;
        }
        common::silence(&redis, sale.queue.keys(), &asleep, 25).await?;
        let last = UserId::new_v7();
        assert_eq!(
            sale.join(last).await?.0.place,
            Place::Waiting { position: 302 }
        );
        let mut params = AdmitParams::new(1, ABANDON_20, WINDOW);
        if let Some(limit) = limit {
            params.scan_limit = limit;
        }
        let tick = sale.admit_with(params).await?;
        match limit {
            None => {
                assert_eq!(
                    (tick.admitted, tick.skipped, tick.queue_length),
                    (vec![first], 300, 1),
                    "the whole silent wall behind the admission"
                );
                assert_eq!(sale.place(last).await?, Place::Waiting { position: 1 });
            }
            Some(limit) => {
                // The admitted place and 99 silent ones: `limit` entries looked at.
                assert_eq!(
                    (tick.admitted, tick.skipped, tick.queue_length),
                    (vec![first], u64::from(limit) - 1, 302 - u64::from(limit)),
                    "at most scan_limit entries looked at"
                );
            }
        }
    }
    env.cleanup().await
}

/// door.md §5: an outage does not count toward `abandon_after`. With the admitter's outage gap
/// set, a tick after a long gap between ticks (Redis was away: set back by hand here) starts a
/// credit of `abandon_after` during which neither the tick nor the reaper skips anyone; after
/// it, a buyer still silent is skipped as usual.
#[tokio::test]
async fn an_outage_does_not_count_toward_abandon_after() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(&redis, SaleSpec::default()).await?;
    let b = users(2);
    for &u in &b {
        sale.join(u).await?;
    }
    let mut params = AdmitParams::new(0, ABANDON_20, WINDOW);
    params.outage_gap = Some(Duration::from_secs(5));
    assert_eq!(sale.admit_with(params).await?.skipped, 0);
    // Redis comes back after 30 s: the last tick is that old, and b0 was silent all along.
    let wr = sale.queue.keys().wr.clone();
    let now = redis_now_ms(&redis).await?;
    let _: () = redis.pool().hset(&wr, ("tick_at", now - 30_000)).await?;
    common::silence(&redis, sale.queue.keys(), &[b[0]], 31).await?;
    let tick = sale.admit_with(params).await?;
    assert_eq!(
        (tick.skipped, tick.queue_length),
        (0, 2),
        "skipped for the outage"
    );
    let resumed: Option<i64> = redis.pool().hget(&wr, "resumed_at").await?;
    assert!(resumed.is_some_and(|at| at >= now), "{resumed:?}");
    let reaped = sale.queue.reap(ABANDON_20, GRACE, 100).await?;
    assert_eq!((reaped.skipped, reaped.queue_length), (0, 2));
    assert_eq!(sale.place(b[1]).await?, Place::Waiting { position: 2 });
    // abandon_after after the outage, b0 has still not polled: skipped now.
    let _: () = redis
        .pool()
        .hset(&wr, ("resumed_at", redis_now_ms(&redis).await? - 21_000))
        .await?;
    assert_eq!(sale.admit_with(params).await?.skipped, 1);
    assert_eq!(sale.place(b[1]).await?, Place::Waiting { position: 1 });
    env.cleanup().await
}

#[tokio::test]
async fn a_poll_past_the_return_grace_loses_the_place() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(&redis, SaleSpec::default()).await?;
    let b = users(3);
    for &u in &b {
        sale.join(u).await?;
    }
    common::silence(&redis, sale.queue.keys(), &[b[0], b[2]], 3).await?;
    // b1 polls within a generous grace and keeps the place; b0 is judged by a 1 s grace.
    assert_eq!(sale.place(b[1]).await?, Place::Waiting { position: 2 });
    assert_eq!(
        sale.place_with(b[0], Duration::from_secs(1)).await?,
        Place::NotQueued
    );
    assert_eq!(sale.place(b[1]).await?, Place::Waiting { position: 1 });
    // A join after the silence starts a new place at the back, under the same rule.
    let outcome = sale
        .queue
        .join(
            b[2],
            &JoinOptions {
                max_queue_length: 0,
                return_grace: Duration::from_secs(1),
                code_failures_per_hour: 10,
            },
        )
        .await?;
    assert!(matches!(
        outcome,
        Some(JoinOutcome::Standing {
            new: true,
            status: Status {
                place: Place::Waiting { position: 2 },
                ..
            }
        })
    ));
    env.cleanup().await
}

/// A return grace the tests' silences (3 s) are well past.
const GRACE_FAST: Duration = Duration::from_secs(1);

/// The user's report entry in the sale's `wt`, if any.
async fn report_entry(sale: &Sale, user: UserId) -> anyhow::Result<Option<String>> {
    Ok(sale
        .redis
        .pool()
        .hget(&sale.queue.keys().wt, &member(user)[..])
        .await?)
}

/// Joins each of `users` (places silent past [`GRACE_FAST`]) again: each must get a new place.
/// In a line past 10,000 places only every second arrival is sampled (the stride is 1 + line /
/// 10,000), so of two consecutive arrivals exactly one must hold a report entry, made by this
/// join; the other must hold none (not the lost place's).
async fn rejoin_past_the_grace_one_sampled(sale: &Sale, users: &[UserId]) -> anyhow::Result<()> {
    let before = redis_now_ms(&sale.redis).await?;
    let rejoin = JoinOptions {
        return_grace: GRACE_FAST,
        ..join_options()
    };
    let mut entries = Vec::new();
    for &u in users {
        anyhow::ensure!(
            matches!(
                sale.queue.join(u, &rejoin).await?,
                Some(JoinOutcome::Standing { new: true, .. })
            ),
            "a new place after the lost one"
        );
        entries.extend(report_entry(sale, u).await?);
    }
    assert_eq!(entries.len(), 1, "the sampled one only: {entries:?}");
    let joined: i64 = entries[0]
        .split(':')
        .next()
        .context("the join time")?
        .parse()?;
    assert!(
        joined >= before,
        "the new place's entry: {joined} < {before}"
    );
    Ok(())
}

/// A report entry (`wt`) belongs to the place it was made for: a place lost past the return
/// grace takes its entry with it, whether a poll, a join or the reaper finds it lost
/// (`hdel_users` in lua/lib/prelude.lua). Otherwise a buyer who joins again and is not
/// sampled this time would keep the lost place's entry, and be timed from its join.
#[tokio::test]
async fn a_lost_place_takes_its_report_entry_with_it() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(&redis, SaleSpec::default()).await?;
    let keys = sale.queue.keys();
    let b = users(4);
    for &u in &b {
        sale.join(u).await?;
        assert!(
            report_entry(&sale, u).await?.is_some(),
            "a short line samples every place"
        );
    }
    common::silence(&redis, keys, &b, 3).await?;

    // A poll past the grace.
    assert_eq!(sale.place_with(b[0], GRACE_FAST).await?, Place::NotQueued);
    assert_eq!(report_entry(&sale, b[0]).await?, None, "a poll's loss");

    // A join past the grace, into a line past 10,000 places.
    let filler: Vec<(f64, Vec<u8>)> = (0..10_000u32)
        .map(|i| (f64::from(i), format!("filler-{i:09}").into_bytes()))
        .collect();
    let () = redis
        .pool()
        .zadd(&keys.q, None, None, false, false, filler)
        .await?;
    rejoin_past_the_grace_one_sampled(&sale, &b[2..4]).await?;

    // The reaper: b1's place, silent past the grace, goes with its entry (the filler too).
    loop {
        if sale
            .queue
            .reap(GRACE_FAST, GRACE_FAST, 5_000)
            .await?
            .wrapped
        {
            break;
        }
    }
    assert_eq!(sale.place(b[1]).await?, Place::NotQueued);
    assert_eq!(report_entry(&sale, b[1]).await?, None, "the reaper's loss");
    env.cleanup().await
}

/// The users that are fields of the hashes `keys`, sorted.
async fn hash_users(redis: &Redis, keys: &[&str]) -> anyhow::Result<Vec<UserId>> {
    let mut users = Vec::new();
    for key in keys {
        let members: Vec<Vec<u8>> = redis.pool().hkeys(*key).await?;
        for m in members {
            users.push(UserId::from_slice(&m).context("a 16-byte user")?);
        }
    }
    users.sort();
    Ok(users)
}

/// Reaps the sale's line until the reaper's walks wrap; returns the places it skipped.
async fn reap_whole_line(
    sale: &Sale,
    abandon_after: Duration,
    return_grace: Duration,
) -> anyhow::Result<u64> {
    let mut skipped = 0;
    loop {
        let reaped = sale.queue.reap(abandon_after, return_grace, 5_000).await?;
        skipped += reaped.skipped;
        if reaped.wrapped {
            return Ok(skipped);
        }
    }
}

/// The users in the sale's `wtp`: sampled buyers not yet shown an ETA.
async fn unshown(sale: &Sale) -> anyhow::Result<Vec<UserId>> {
    hash_users(&sale.redis, &[&sale.queue.keys().wtp]).await
}

/// A sampled buyer waits in `wtp` for a first ETA only while none was shown (before the
/// opening, paused), and leaves it at the first ETA shown, or with the place: admitted, left,
/// lost to a poll or to the reaper, or skipped (a poll that brings the place back puts it
/// back while its entry has no ETA). So `wtp` empties, and then a poll reads no report entry
/// (`eta_waits` in lua/lib/prelude.lua): an entry without an ETA whose buyer is not in `wtp`
/// stays as it is.
#[tokio::test]
async fn a_sampled_buyer_waits_for_a_first_eta_only_until_one_is_shown_or_the_place_goes()
-> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(
        &redis,
        SaleSpec {
            opens_in_ms: 600_000,
            ..SaleSpec::default()
        },
    )
    .await?;
    let keys = sale.queue.keys();
    let mut b = users(7);
    b.sort();
    for &u in &b {
        assert_eq!(sale.join(u).await?.0.place, Place::Scheduled);
    }
    assert_eq!(unshown(&sale).await?, b, "a short line samples every place");
    // A poll before the opening shows no ETA.
    assert_eq!(sale.place(b[0]).await?, Place::Scheduled);
    assert_eq!(unshown(&sale).await?.len(), 7);
    // Skipped before the opening and brought back by a join or a poll that shows no ETA:
    // waiting again.
    common::silence(&redis, keys, &b[5..], 30).await?;
    assert_eq!(reap_whole_line(&sale, ABANDON_20, GRACE).await?, 2);
    assert_eq!(unshown(&sale).await?, b[..5]);
    let (status, new) = sale.join(b[5]).await?;
    assert_eq!((status.place, new), (Place::Scheduled, false));
    assert_eq!(sale.place(b[6]).await?, Place::Scheduled);
    assert_eq!(unshown(&sale).await?, b);

    sale.opens_in(-1_000).await?;
    // The first poll that shows an ETA notes it, once.
    assert!(matches!(sale.place(b[0]).await?, Place::Waiting { .. }));
    let noted = report_entry(&sale, b[0]).await?.context("b0's entry")?;
    assert_eq!(noted.split(':').count(), 3, "join:eta:shown, got {noted}");
    assert!(matches!(sale.place(b[0]).await?, Place::Waiting { .. }));
    assert_eq!(report_entry(&sale, b[0]).await?, Some(noted));
    // Leaving, a poll's loss, the reaper's loss.
    assert!(sale.queue.leave(b[1]).await?);
    common::silence(&redis, keys, &b[2..4], 100).await?;
    assert_eq!(sale.place_with(b[2], GRACE_FAST).await?, Place::NotQueued);
    assert_eq!(unshown(&sale).await?, b[3..]);
    // Silent past a grace of 20 s: b3 only.
    reap_whole_line(&sale, ABANDON_20, ABANDON_20).await?;
    assert_eq!(unshown(&sale).await?, b[4..]);
    // Skipped (silent past abandon_after, within the grace): no longer waiting for an ETA, so
    // a silent buyer does not hold wtp for the whole grace. Brought back by a poll, the place
    // has its first ETA noted all the same.
    common::silence(&redis, keys, &b[4..5], 30).await?;
    assert_eq!(reap_whole_line(&sale, ABANDON_20, GRACE).await?, 1);
    assert_eq!(unshown(&sale).await?, b[5..]);
    assert!(matches!(sale.place(b[4]).await?, Place::Waiting { .. }));
    let e = report_entry(&sale, b[4]).await?.context("b4's entry")?;
    assert_eq!(e.split(':').count(), 3, "noted as it came back: {e}");
    // Admitted before any poll showed them an ETA (b5), or skipped by the tick (b6).
    common::silence(&redis, keys, &b[6..], 150).await?;
    let outcome = sale.admit(10).await?;
    assert_eq!(
        (outcome.admitted.len(), outcome.skipped),
        (3, 1),
        "{outcome:?}"
    );
    assert!(outcome.admitted.contains(&b[5]));
    assert_eq!(unshown(&sale).await?, []);

    // Open and paused: a sampled join shows no ETA and waits for one; open: it shows one.
    sale.set_cfg("paused", 1).await?;
    let late = UserId::new_v7();
    sale.join(late).await?;
    assert_eq!(unshown(&sale).await?, [late]);
    sale.set_cfg("paused", 0).await?;
    let open = UserId::new_v7();
    sale.join(open).await?;
    let e = report_entry(&sale, open).await?.context("open's entry")?;
    assert_eq!(e.split(':').count(), 3, "noted at the join: {e}");
    assert_eq!(unshown(&sale).await?, [late]);
    assert!(matches!(sale.place(late).await?, Place::Waiting { .. }));
    assert_eq!(unshown(&sale).await?, []);
    let e = report_entry(&sale, late).await?.context("late's entry")?;
    assert_eq!(e.split(':').count(), 3, "noted at the poll: {e}");

    // With wtp empty a poll reads no entry: one without an ETA, not in wtp, stays so.
    let bare = format!("{}", redis_now_ms(&redis).await?);
    let () = redis
        .pool()
        .hset(&keys.wt, (&member(open)[..], bare.as_str()))
        .await?;
    assert!(matches!(sale.place(open).await?, Place::Waiting { .. }));
    assert_eq!(report_entry(&sale, open).await?, Some(bare.clone()));
    // In wtp, the next poll notes it.
    let () = redis
        .pool()
        .hset(&keys.wtp, (&member(open)[..], ""))
        .await?;
    assert!(matches!(sale.place(open).await?, Place::Waiting { .. }));
    let e = report_entry(&sale, open).await?.context("open's entry")?;
    assert!(e.starts_with(&format!("{bare}:")), "{e}");
    assert_eq!(unshown(&sale).await?, []);
    env.cleanup().await
}

#[tokio::test]
async fn max_active_is_never_exceeded() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(
        &redis,
        SaleSpec {
            max_active: 3,
            ..SaleSpec::default()
        },
    )
    .await?;
    let b = users(10);
    for &u in &b {
        sale.join(u).await?;
    }
    let outcome = sale.admit(100).await?;
    assert_eq!(
        (outcome.admitted.as_slice(), outcome.limit),
        (&b[..3], AdmitLimit::MaxActive)
    );
    for _ in 0..3 {
        let outcome = sale.admit(100).await?;
        assert!(outcome.admitted.is_empty());
        assert_eq!((outcome.active, outcome.limit), (3, AdmitLimit::MaxActive));
    }
    // Raising max_active (PATCH) applies at the next tick.
    sale.set_cfg("max_active", 5).await?;
    assert_eq!(sale.admit(100).await?.admitted, b[3..5]);
    assert_eq!(sale.stats().await?.active, 5);
    env.cleanup().await
}

#[tokio::test]
async fn an_admission_past_its_deadline_frees_the_slot() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(
        &redis,
        SaleSpec {
            max_active: 2,
            ..SaleSpec::default()
        },
    )
    .await?;
    let b = users(5);
    for &u in &b {
        sale.join(u).await?;
    }
    let params = AdmitParams::new(100, ABANDON, Duration::from_millis(300));
    assert_eq!(sale.admit_with(params).await?.admitted, b[..2]);
    assert!(matches!(sale.place(b[0]).await?, Place::Admitted { .. }));
    assert!(sale.admit_with(params).await?.admitted.is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The slots are free as soon as the deadline passes, before any reaping.
    assert_eq!(sale.stats().await?.active, 0);
    assert_eq!(sale.admit_with(params).await?.admitted, b[2..4]);
    // The reaper returns the lapsed entries' memory; the lapsed buyers are out.
    let reaped = sale.queue.reap(ABANDON, GRACE, 100).await?;
    assert_eq!(reaped.expired, 2);
    assert_eq!(reaped.queue_length, 1);
    assert_eq!(sale.place(b[0]).await?, Place::NotQueued);
    assert_eq!(sale.queue.reap(ABANDON, GRACE, 100).await?.expired, 0);
    env.cleanup().await
}

#[tokio::test]
async fn leaving_is_idempotent_and_frees_an_admission() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(
        &redis,
        SaleSpec {
            max_active: 1,
            ..SaleSpec::default()
        },
    )
    .await?;
    let b = users(3);
    for &u in &b {
        sale.join(u).await?;
    }
    assert!(sale.queue.leave(b[1]).await?);
    assert!(!sale.queue.leave(b[1]).await?);
    assert!(!sale.queue.leave(UserId::new_v7()).await?, "never joined");
    assert_eq!(sale.place(b[1]).await?, Place::NotQueued);
    assert_eq!(sale.place(b[2]).await?, Place::Waiting { position: 2 });
    // An admitted buyer who leaves gives the slot back at once.
    assert_eq!(sale.admit(10).await?.admitted, b[..1]);
    assert!(sale.admit(10).await?.admitted.is_empty());
    assert!(sale.queue.leave(b[0]).await?);
    assert!(!sale.queue.leave(b[0]).await?);
    assert_eq!(sale.admit(10).await?.admitted, b[2..3]);
    env.cleanup().await
}

/// The reaper skips silent waiters deep in the line in bounded batches, and removes skipped
/// places once silent past the return grace (door.md §6).
#[tokio::test]
async fn the_reaper_sweeps_silent_waiters_in_bounded_batches() -> anyhow::Result<()> {
    const ABANDON_FAST: Duration = Duration::from_secs(1);
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(&redis, SaleSpec::default()).await?;
    let b = users(25);
    for &u in &b {
        sale.join(u).await?;
    }
    let live: Vec<UserId> = b.iter().copied().step_by(5).collect();
    let silent: Vec<UserId> = b.iter().copied().filter(|u| !live.contains(u)).collect();
    common::silence(&redis, sale.queue.keys(), &silent, 3).await?;
    let (mut skipped, mut calls) = (0, 0);
    loop {
        let outcome = sale.queue.reap(ABANDON_FAST, GRACE, 7).await?;
        skipped += outcome.skipped;
        calls += 1;
        assert!(outcome.skipped <= 7);
        assert_eq!(outcome.abandoned, 0, "within the grace");
        if outcome.wrapped {
            break;
        }
    }
    assert_eq!((skipped, calls), (20, 4), "25 entries in batches of 7");
    for (i, &u) in live.iter().enumerate() {
        assert_eq!(
            sale.place(u).await?,
            Place::Waiting {
                position: i as u64 + 1
            }
        );
    }
    let stats = sale.stats().await?;
    assert_eq!(
        (stats.queue_length, stats.skipped, stats.abandoned_total),
        (5, 20, 0)
    );
    // Past the grace (1 s here: 3 s of silence), the skipped places go, in batches too.
    let mut abandoned = 0;
    loop {
        let outcome = sale.queue.reap(ABANDON_FAST, ABANDON_FAST, 7).await?;
        abandoned += outcome.abandoned;
        assert!(outcome.abandoned <= 7);
        if outcome.wrapped {
            break;
        }
    }
    assert_eq!(abandoned, 20);
    let stats = sale.stats().await?;
    assert_eq!(
        (stats.queue_length, stats.skipped, stats.abandoned_total),
        (5, 0, 20)
    );
    assert_eq!(sale.place(silent[0]).await?, Place::NotQueued);
    env.cleanup().await
}

#[tokio::test]
async fn before_opening_buyers_are_scheduled_and_nobody_is_admitted() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(
        &redis,
        SaleSpec {
            opens_in_ms: 60_000,
            ..SaleSpec::default()
        },
    )
    .await?;
    let u = UserId::new_v7();
    let (status, new) = sale.join(u).await?;
    assert!(new);
    assert_eq!(status.place, Place::Scheduled);
    assert!(status.opens_at_ms > status.now_ms + 50_000);
    assert_eq!(sale.place(u).await?, Place::Scheduled);
    let outcome = sale.admit(100).await?;
    assert_eq!(
        (outcome.state, outcome.admitted.len(), outcome.limit),
        (SaleState::Scheduled, 0, AdmitLimit::State)
    );
    assert_eq!(sale.stats().await?.state, SaleState::Scheduled);
    sale.opens_in(-1).await?;
    assert_eq!(sale.place(u).await?, Place::Waiting { position: 1 });
    assert_eq!(sale.admit(100).await?.admitted, vec![u]);
    env.cleanup().await
}

#[tokio::test]
async fn closed_sales_and_unknown_sales_say_so() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(&redis, SaleSpec::default()).await?;
    let (u, asleep) = (UserId::new_v7(), UserId::new_v7());
    sale.join(asleep).await?;
    sale.join(u).await?;
    common::silence(&redis, sale.queue.keys(), &[asleep], 25).await?;
    let skipped = sale
        .admit_with(AdmitParams::new(0, ABANDON_20, WINDOW))
        .await?;
    assert_eq!((skipped.skipped, sale.stats().await?.skipped), (1, 1));
    sale.set_cfg("closed", 1).await?;
    assert_eq!(sale.place(u).await?, Place::Closed);
    assert_eq!(sale.join(UserId::new_v7()).await?.0.place, Place::Closed);
    assert_eq!(sale.admit(10).await?.state, SaleState::Closed);
    let stats = sale.stats().await?;
    assert_eq!(stats.state, SaleState::Closed);
    // Nobody can come back to a closed sale: its skipped places are dropped, counted as lost.
    assert_eq!((stats.skipped, stats.abandoned_total), (0, 1));
    // closes_at in the past closes it too.
    let other = Sale::arm(&redis, SaleSpec::default()).await?;
    let now = redis_now_ms(&redis).await?;
    other.set_cfg("closes_at", now - 1).await?;
    assert_eq!(other.join(u).await?.0.place, Place::Closed);
    // A sale that was never armed.
    let unknown = WaitQueue::new(&redis, SaleId::new_v7());
    assert!(unknown.join(u, &join_options()).await?.is_none());
    assert!(unknown.status(u, GRACE).await?.is_none());
    assert!(
        unknown
            .admit(&AdmitParams::new(1, ABANDON, WINDOW))
            .await?
            .is_none()
    );
    assert!(unknown.stats().await?.is_none());
    env.cleanup().await
}

#[tokio::test]
async fn every_script_has_a_header_contract() {
    for script in dropline_waitroom::scripts::all() {
        // Behind the shared prelude's items it uses, none it names left out.
        assert_eq!(script.check_contract(), Ok(()), "{}", script.name());
        let body = script.source();
        let first = body.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("-- {}.lua: ", script.name())),
            "{}: first line names the file",
            script.name()
        );
        for part in ["-- KEYS[1]", "-- Returns"] {
            assert!(
                body.contains(part),
                "{}: header lacks {part}",
                script.name()
            );
        }
    }
}

#[tokio::test]
async fn a_status_batch_answers_each_user_in_order() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(&redis, SaleSpec::default()).await?;
    let buyers = users(3);
    for buyer in &buyers {
        sale.queue.join(*buyer, &join_options()).await?;
    }
    let stranger = UserId::new_v7();
    let batch = [buyers[2], stranger, buyers[0], buyers[2]];
    let answers = sale.queue.status_many(&batch, GRACE).await?;
    let places: Vec<Option<Place>> = answers
        .iter()
        .map(|a| a.as_ref().map(|s| s.place))
        .collect();
    assert_eq!(
        places,
        vec![
            Some(Place::Waiting { position: 3 }),
            Some(Place::NotQueued),
            Some(Place::Waiting { position: 1 }),
            Some(Place::Waiting { position: 3 }),
        ]
    );
    // Sale-wide values are the same for every user of the batch.
    for answer in answers.iter().flatten() {
        assert_eq!(answer.queue_length, 3);
        assert_eq!(answer.now_ms, answers[0].as_ref().map_or(0, |a| a.now_ms));
        assert!(!answer.paused);
    }
    // After one admission, the batch mixes an admitted buyer (with the deadline) and waiting ones.
    let outcome = sale.admit(1).await?;
    assert_eq!(outcome.admitted.len(), 1);
    let answers = sale.queue.status_many(&batch, GRACE).await?;
    match answers[2].as_ref().map(|a| a.place) {
        Some(Place::Admitted { deadline_ms }) => {
            assert!(
                deadline_ms > answers[2].as_ref().map_or(0, |a| a.now_ms),
                "deadline in the future"
            );
        }
        other => panic!("buyers[0] should be admitted, is {other:?}"),
    }
    assert_eq!(
        answers[0].as_ref().map(|a| (a.place, a.queue_length)),
        Some((Place::Waiting { position: 2 }, 2))
    );
    assert!(sale.queue.status_many(&[], GRACE).await.is_err());
    // An unarmed sale answers None for every user of the batch.
    let unarmed = WaitQueue::new(&redis, SaleId::new_v7());
    assert_eq!(unarmed.status_many(&batch, GRACE).await?, vec![None; 4]);
    env.cleanup().await
}

/// A draw sale (design/draw.md) has no line: the fcfs join refuses it, before and after the
/// opening, and writes nothing (no place, no arrival counted).
#[tokio::test]
async fn a_draw_sale_gets_no_line() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(&redis, SaleSpec::default()).await?;
    sale.set_cfg("mode", "draw").await?;
    let buyers = users(3);
    for opens_in in [60_000, -1_000] {
        sale.opens_in(opens_in).await?;
        for &u in &buyers {
            let outcome = sale.queue.join(u, &join_options()).await?;
            assert_eq!(outcome, Some(JoinOutcome::Refused(Refusal::DrawSale)));
        }
    }
    let pool = redis.pool();
    for key in ["q", "skip", "qseq", "adm"] {
        let exists: i64 = pool.exists(redis.sale_key(sale.id, key)).await?;
        assert_eq!(exists, 0, "{key} was written");
    }
    env.cleanup().await
}

/// The report's time-in-line histogram (`rep` fields `w:<bucket>`, bucket b holding
/// [1.05^b, 1.05^(b+1)) ms) as one geometric-middle value in ms per admitted buyer, sorted.
async fn time_in_line_ms(sale: &Sale) -> anyhow::Result<Vec<f64>> {
    let rep: std::collections::HashMap<String, u64> =
        sale.redis.pool().hgetall(&sale.queue.keys().rep).await?;
    let mut waits = Vec::new();
    for (field, n) in rep {
        if let Some(bucket) = field.strip_prefix("w:") {
            let b: i32 = bucket.parse().context("a w: bucket")?;
            let middle = 1.05_f64.powf(f64::from(b) + 0.5);
            waits.extend(std::iter::repeat_n(middle, usize::try_from(n)?));
        }
    }
    waits.sort_by(f64::total_cmp);
    Ok(waits)
}

/// A buyer without a `wt` entry (not sampled: lib/prelude.lua "Memory") has the time in line
/// of its arrival, read from the checkpoints (`wtc`): within the checkpoint slot (100 ms) and
/// the bucket's 2.5 % of the buyer's true wait. Buyers join in three bursts 400 ms apart; the
/// entries of the second and third are removed, as if the sample had passed them by.
#[tokio::test]
async fn unsampled_buyers_get_their_time_in_line_from_the_arrival_checkpoints() -> anyhow::Result<()>
{
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(&redis, SaleSpec::default()).await?;
    let mut joined = Vec::new(); // (user, Redis time before the join, after it)
    for burst in 0..3 {
        if burst > 0 {
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        for _ in 0..5 {
            let user = UserId::new_v7();
            let before = redis_now_ms(&redis).await?;
            sale.join(user).await?;
            joined.push((user, before, redis_now_ms(&redis).await?));
        }
    }
    let wt = &sale.queue.keys().wt;
    let entries: u64 = redis.pool().hlen(wt).await?;
    assert_eq!(entries, 15, "a short line samples every buyer");
    for (user, _, _) in &joined[5..] {
        let _: u64 = redis.pool().hdel(wt, &member(*user)[..]).await?;
    }
    let checkpoints: u64 = redis.pool().zcard(&sale.queue.keys().wtc).await?;
    assert!(
        (3..=15).contains(&checkpoints),
        "one checkpoint per 100 ms slot with an arrival: {checkpoints}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = redis_now_ms(&redis).await?;
    assert_eq!(sale.admit(100).await?.admitted.len(), 15);
    let after = redis_now_ms(&redis).await?;
    let entries: u64 = redis.pool().hlen(wt).await?;
    assert_eq!(entries, 0, "admission removes the entries");

    let reported = time_in_line_ms(&sale).await?;
    assert_eq!(
        reported.len(),
        15,
        "every admitted buyer has a time in line"
    );
    // The true waits lie in [before - joined after, after - joined before]; sorted, the
    // reported ones must each fall in the matching band, widened by the slot and the bucket.
    let mut low: Vec<f64> = joined.iter().map(|(_, _, a)| (before - a) as f64).collect();
    let mut high: Vec<f64> = joined.iter().map(|(_, b, _)| (after - b) as f64).collect();
    low.sort_by(f64::total_cmp);
    high.sort_by(f64::total_cmp);
    for ((r, lo), hi) in reported.iter().zip(&low).zip(&high) {
        assert!(
            *r >= lo * 0.975 - 100.0 && *r <= hi * 1.025 + 100.0,
            "reported {r:.0} ms outside [{lo}, {hi}] ms (+100 ms slot, 2.5 % bucket): \
             {reported:?} vs {low:?} .. {high:?}"
        );
    }
    env.cleanup().await
}

/// A long line keeps a sample of `wt` entries, not one per buyer (the report's memory, #22):
/// past 10,000 places only every second arrival gets one (the stride is 1 + line/10,000 at the
/// join), yet every admitted buyer still counts in the time in line.
#[tokio::test]
async fn a_long_line_samples_the_report_entries_and_still_times_every_buyer() -> anyhow::Result<()>
{
    const BUYERS: usize = 12_000;
    let env = TestEnv::with_overrides(&[("REDIS__POOL_SIZE", "8")])?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(
        &redis,
        SaleSpec {
            stock: 20_000,
            ..SaleSpec::default()
        },
    )
    .await?;
    let queue = &sale.queue;
    let results: Vec<anyhow::Result<Option<JoinOutcome>>> = stream::iter(users(BUYERS))
        .map(|user| async move { queue.join(user, &join_options()).await })
        .buffer_unordered(32)
        .collect()
        .await;
    for result in results {
        anyhow::ensure!(
            matches!(result?, Some(JoinOutcome::Standing { new: true, .. })),
            "a new place"
        );
    }
    // Arrival n (1-based, after the opening) joined a line of n - 1 places: sampled while
    // n - 1 < 10,000, then when its order key (2^32 + n) is even.
    let entries: u64 = redis.pool().hlen(&sale.queue.keys().wt).await?;
    assert_eq!(entries, 10_000 + 1_000);
    let mut admitted = 0;
    while admitted < BUYERS {
        let tick = sale.admit(4_000).await?.admitted.len();
        anyhow::ensure!(tick > 0, "admission stalled at {admitted}");
        admitted += tick;
    }
    assert_eq!(time_in_line_ms(&sale).await?.len(), BUYERS);
    env.cleanup().await
}

/// The spread line's tags (issue #22 §2): on the cluster `scripts/cluster-test` makes (three
/// primaries, slots split evenly), a sale's three line shards are served by three different
/// primaries, and Redis computes the slot the layout computed. On any server, every shard's
/// keys take a place and give it back.
#[tokio::test]
async fn a_sales_line_shards_land_on_distinct_primaries() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let line = LineShards::new(&redis, SaleId::new_v7(), 3);
    let client = redis.pool().next();
    if let Some(routing) = client.cached_cluster_state() {
        let mut owners = std::collections::HashSet::new();
        for keys in line.all() {
            let slot: u16 = client.cluster_keyslot(keys.q.as_str()).await?;
            assert_eq!(slot, fred::util::redis_keyslot(keys.q.as_bytes()));
            owners.insert(
                routing
                    .get_server(slot)
                    .context("the slot's owner")?
                    .clone(),
            );
        }
        let primaries = client.num_primary_cluster_nodes();
        assert_eq!(owners.len(), primaries.min(3), "{owners:?}");
    }
    let user = UserId::new_v7();
    for keys in line.all() {
        let pool = redis.pool();
        let () = pool
            .zadd(
                &keys.q,
                None,
                None,
                false,
                false,
                (1.0, user.as_bytes().to_vec()),
            )
            .await?;
        let () = pool
            .zadd(
                &keys.skip,
                None,
                None,
                false,
                false,
                (2.0, user.as_bytes().to_vec()),
            )
            .await?;
        let score: Option<f64> = pool.zscore(&keys.q, user.as_bytes().to_vec()).await?;
        assert_eq!(score, Some(1.0));
    }
    env.cleanup().await
}

/// Positions across line shards (issue #22 §2): what the leader reads of each shard with
/// `wr_line_curve.lua` is the curve the reference builds from the shard's sorted scores; once
/// published, a poll's position read from its own shard alone (`wr_line_position.lua`) is the
/// reference's to the place, and the true one at the head. On the cluster each call runs on
/// its shard's primary.
#[tokio::test]
async fn the_leaders_read_of_each_line_shard_is_the_reference_curve() -> anyhow::Result<()> {
    use dropline_waitroom::line::{
        CountCurve, EXACT_HEAD, ahead_in_others, checkpoint_ranks, positions, publish, read_curve,
        segment_starts,
    };
    use rand::{Rng, SeedableRng};

    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let line = LineShards::new(&redis, SaleId::new_v7(), 3);
    // One group besides the public one: 300 pre-open places per group, then 500 arrivals.
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    const GROUP: f64 = 8_589_934_592.0;
    const OPENED: f64 = 4_294_967_296.0;
    let mut places: Vec<(f64, UserId)> = Vec::new();
    for rank in 0..2 {
        for _ in 0..300 {
            let key = f64::from(rank) * GROUP + f64::from(rng.random::<u32>());
            places.push((key * 65_536.0 + 7.0, UserId::new_v7()));
        }
    }
    for n in 0..500 {
        let key = f64::from(rng.random_range(0..2u8)) * GROUP + OPENED + f64::from(n);
        places.push((key * 65_536.0 + 7.0, UserId::new_v7()));
    }
    places.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut shards: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for chunk in places.chunks(200) {
        for (index, keys) in line.all().iter().enumerate() {
            let mine: Vec<(f64, Vec<u8>)> = chunk
                .iter()
                .filter(|(_, user)| usize::from(line.shard_of(*user)) == index)
                .map(|(score, user)| (*score, user.as_bytes().to_vec()))
                .collect();
            if !mine.is_empty() {
                let () = redis
                    .pool()
                    .zadd(&keys.q, None, None, false, false, mine)
                    .await?;
            }
        }
    }
    for (score, user) in &places {
        shards[usize::from(line.shard_of(*user))].push(*score);
    }
    let bounds = segment_starts(1, 500);
    let mut curves = Vec::new();
    for (index, keys) in line.all().iter().enumerate() {
        let read = read_curve(&redis, &keys.q, &bounds).await?;
        let sorted = &shards[index];
        let len = sorted.len() as u64;
        let ranked: Vec<(u64, f64)> = checkpoint_ranks(len)
            .into_iter()
            .map(|r| (r, sorted[r as usize]))
            .collect();
        let segments: Vec<(f64, u64)> = bounds
            .iter()
            .map(|&b| (b, sorted.partition_point(|&s| s < b) as u64))
            .collect();
        assert_eq!(
            read,
            CountCurve::of_shard(len, &ranked, &segments),
            "shard {index}"
        );
        curves.push(read);
    }
    let all = CountCurve::sum(&curves);
    let exact_until = shards
        .iter()
        .filter_map(|s| s.get(EXACT_HEAD as usize - 1))
        .fold(f64::INFINITY, |a, &b| a.min(b + 1.0));
    // Published to every shard's lmeta, the positions a poll reads from its own shard alone
    // agree with the reference to the place, and are the true ones at the head.
    publish(&redis, &line, &curves, 1_234, None).await?;
    // The places of shard `index`: (rank in the whole line, score, user), in line order.
    let places_of = |index: usize| -> Vec<(usize, f64, UserId)> {
        places
            .iter()
            .enumerate()
            .filter(|(_, (_, user))| usize::from(line.shard_of(*user)) == index)
            .map(|(rank, (score, user))| (rank, *score, *user))
            .collect()
    };
    let mut exact = 0;
    for (index, keys) in line.all().iter().enumerate() {
        let users = places_of(index);
        let ids: Vec<UserId> = users.iter().map(|u| u.2).collect();
        let (at, read) = positions(&redis, keys, &ids).await?;
        assert_eq!(at, 1_234);
        for (own_rank, ((rank, score, _), position)) in users.iter().zip(read).enumerate() {
            let others = CountCurve::others(&all, &curves[index]);
            let reference = own_rank as u64 + 1 + ahead_in_others(&others, *score);
            assert_eq!(
                position, reference,
                "shard {index}, the place of rank {rank}"
            );
            if *score <= exact_until {
                assert_eq!(position, *rank as u64 + 1, "the place of rank {rank}");
                exact += 1;
            }
        }
    }
    let (_, nobody) = positions(&redis, line.keys(0), &[UserId::new_v7()]).await?;
    assert_eq!(nobody, [0]);
    assert!(exact >= 60, "{exact}");

    // Curves published by a leader of the release before (`all` and `own`, no `others`): a
    // poll counts all - own as that release did, and the head is still exact.
    for keys in line.all() {
        let _: i64 = redis.pool().hdel(&keys.meta, "others").await?;
    }
    for (index, keys) in line.all().iter().enumerate() {
        let users = places_of(index);
        let ids: Vec<UserId> = users.iter().map(|u| u.2).collect();
        let (_, read) = positions(&redis, keys, &ids).await?;
        for (own_rank, ((rank, score, _), position)) in users.iter().zip(read).enumerate() {
            let before = ((all.at(*score) - curves[index].at(*score)).max(0.0) + 0.5).floor();
            assert_eq!(
                position,
                own_rank as u64 + 1 + before as u64,
                "the release before's curves, shard {index}, the place of rank {rank}"
            );
            if *score <= exact_until {
                assert_eq!(position, *rank as u64 + 1, "the place of rank {rank}");
            }
        }
    }
    env.cleanup().await
}

/// A spread line of `n` places with pre-open keys drawn from `seed` over `line`'s shards, every
/// 7th (from the 4th) silent for 10 minutes, the rest live now: (score, user, silent), sorted.
async fn spread_line(
    redis: &Redis,
    line: &LineShards,
    n: usize,
    seed: u64,
) -> anyhow::Result<Vec<(f64, UserId, bool)>> {
    use rand::{Rng, SeedableRng};

    let now_s = redis_now_ms(redis).await? / 1000;
    let live_stamp = (now_s % 65_536) as f64;
    let silent_stamp = ((now_s - 600).rem_euclid(65_536)) as f64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut places: Vec<(f64, UserId, bool)> = (0..n)
        .map(|i| {
            let silent = i % 7 == 3;
            let stamp = if silent { silent_stamp } else { live_stamp };
            let key = f64::from(rng.random::<u32>());
            (key * 65_536.0 + stamp, UserId::new_v7(), silent)
        })
        .collect();
    places.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (score, user, _) in &places {
        common::place_in_shard(redis, line, *user, *score).await?;
    }
    Ok(places)
}

/// The rate credit of the spread-line tick tests: one a second with 30 s of tolerance, a budget
/// of 30 under the caller's 40, refilled slowly enough that a test's own pace cannot move it.
fn spread_tick_params() -> dropline_waitroom::line::tick::TickParams {
    dropline_waitroom::line::tick::TickParams {
        want: 40,
        abandon_after: ABANDON,
        window: WINDOW,
        need: 0,
        rate: 1.0,
        tolerance: Duration::from_secs(30),
        carry: Duration::ZERO,
        outage_gap: Duration::ZERO,
        tick: Duration::from_millis(100),
    }
}

/// One whole tick of a spread line with [`spread_tick_params`] (`line::tick::run`).
async fn spread_tick(
    redis: &Redis,
    sale_keys: &dropline_core::sale::keys::SaleKeys,
    line: &LineShards,
) -> anyhow::Result<dropline_waitroom::line::tick::Tick> {
    dropline_waitroom::line::tick::run(redis, sale_keys, line, &spread_tick_params(), 10_000, None)
        .await
}

/// A tick of a spread line that admits nobody (no rate) and skips nobody (abandon_after 12 h: a
/// tick skips the silent places at each shard's head even when it admits nobody, and these
/// tests silence places by hand and then poll them): what the leader publishes between
/// admissions, for the tests of polls and joins.
fn quiet_tick() -> dropline_waitroom::line::tick::TickParams {
    dropline_waitroom::line::tick::TickParams {
        rate: 0.0,
        abandon_after: Duration::from_secs(43_200),
        ..spread_tick_params()
    }
}

/// A sale armed as `spec` says with its line spread over three shards (`cfg.line_shards`,
/// before anyone joins), its line's layout and its keys.
async fn spread_sale(
    redis: &Redis,
    spec: SaleSpec,
) -> anyhow::Result<(Sale, LineShards, dropline_core::sale::keys::SaleKeys)> {
    let sale = Sale::arm(redis, spec).await?;
    sale.set_cfg("line_shards", 3).await?;
    let line = LineShards::new(redis, sale.id, 3);
    let keys = dropline_core::sale::keys::SaleKeys::new(redis, sale.id);
    Ok((sale, line, keys))
}

/// A spread line's tick (issue #22 §2 step 3), every step on real keys: the budget from the
/// sale's slot (the rate credit binds), each shard's live heads with its silent ones skipped,
/// the merge (the whole line's lowest live scores), the take (a buyer who left in between is
/// not taken), the commit into `adm` (counted and charged once; a repeat adds nothing; past the
/// budget places stay pending) and the settle (once). Also on the cluster: every call on its
/// own shard or on the sale's slot.
#[tokio::test]
async fn a_tick_across_three_line_shards_admits_the_lowest_live_scores_of_the_whole_line()
-> anyhow::Result<()> {
    use dropline_core::sale::keys::SaleKeys;
    use dropline_waitroom::line::tick::{budget, commit, heads, merge, pending, settle, take};

    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(&redis, SaleSpec::default()).await?;
    let line = LineShards::new(&redis, sale.id, 3);
    let sale_keys = SaleKeys::new(&redis, sale.id);
    // 300 places with pre-open keys, every 7th silent for 10 minutes (abandon_after is 2).
    let places = spread_line(&redis, &line, 300, 9).await?;
    let params = spread_tick_params();
    let said = budget(&redis, &sale_keys, &params).await?;
    assert_eq!(
        (
            said.state.as_str(),
            said.budget,
            said.limit.as_str(),
            said.abandon_after
        ),
        ("open", 30, "rate", Some(ABANDON))
    );
    let quota = said.budget as usize;
    let mut found = Vec::new();
    for keys in line.all() {
        found.push(heads(&redis, keys, quota, said.abandon_after, 10_000).await?);
    }
    let live_heads: Vec<Vec<(UserId, f64)>> = found.iter().map(|h| h.places.clone()).collect();
    let chosen = merge(&live_heads, quota);
    let live: Vec<UserId> = places.iter().filter(|p| !p.2).map(|p| p.1).collect();
    assert_eq!(
        chosen.iter().map(|c| c.user).collect::<Vec<_>>(),
        live[..quota]
    );
    // Each shard skipped exactly its silent places ahead of its first live place not returned
    // (those right behind its last live head returned as well, as wr_admit.lua walks past the
    // silent head after its admissions).
    for (index, (keys, found)) in line.all().iter().zip(&found).enumerate() {
        let mine = |p: &&(f64, UserId, bool)| usize::from(line.shard_of(p.1)) == index;
        let last = found.places.last().map_or(f64::NEG_INFINITY, |p| p.1);
        let next_live = places
            .iter()
            .filter(mine)
            .filter(|p| !p.2 && p.0 > last)
            .map(|p| p.0)
            .fold(f64::INFINITY, f64::min);
        let silent: Vec<&(f64, UserId, bool)> = places
            .iter()
            .filter(mine)
            .filter(|p| p.2 && p.0 < next_live)
            .collect();
        assert_eq!(found.skipped, silent.len() as u64, "shard {index}");
        for (score, user, _) in silent {
            let in_skip: Option<f64> = redis
                .pool()
                .zscore(&keys.skip, user.as_bytes().to_vec())
                .await?;
            let in_q: Option<f64> = redis
                .pool()
                .zscore(&keys.q, user.as_bytes().to_vec())
                .await?;
            assert_eq!((in_skip, in_q), (Some(*score), None));
        }
    }

    // One chosen buyer leaves before the take.
    let leaver = chosen[5];
    let () = redis
        .pool()
        .zrem(&line.keys(leaver.shard).q, leaver.user.as_bytes().to_vec())
        .await?;
    let mut taken = Vec::new();
    for (index, keys) in line.all().iter().enumerate() {
        let mine: Vec<(UserId, f64)> = chosen
            .iter()
            .filter(|c| usize::from(c.shard) == index)
            .map(|c| (c.user, c.score))
            .collect();
        let took = take(&redis, keys, &mine).await?;
        let mut waiting: Vec<UserId> = pending(&redis, keys, 1_000)
            .await?
            .iter()
            .map(|p| p.0)
            .collect();
        let mut sorted = took.clone();
        sorted.sort();
        waiting.sort();
        assert_eq!(waiting, sorted, "shard {index}: pending = taken");
        taken.extend(took);
    }
    assert_eq!(taken.len(), quota - 1);
    assert!(!taken.contains(&leaver.user));
    // Step 5 in merged order.
    let merged: Vec<(UserId, f64)> = chosen
        .iter()
        .filter(|c| taken.contains(&c.user))
        .map(|c| (c.user, c.score))
        .collect();
    let before = redis_now_ms(&redis).await?;
    let committed = commit(&redis, &sale_keys, &params, &merged, Some(240)).await?;
    assert_eq!(
        (committed.state.as_str(), committed.admitted),
        ("open", quota as u64 - 1)
    );
    assert_eq!(
        committed.in_adm.iter().map(|a| a.0).collect::<Vec<_>>(),
        merged.iter().map(|m| m.0).collect::<Vec<_>>()
    );
    let deadline = committed.in_adm[0].1;
    let window = WINDOW.as_millis() as i64;
    assert!((before + window..=before + window + 5_000).contains(&deadline));
    // A repeat (a lost reply) admits nobody again and answers the same deadlines.
    let again = commit(&redis, &sale_keys, &params, &merged, None).await?;
    assert_eq!((again.admitted, &again.in_adm), (0, &committed.in_adm));
    assert_eq!(sale.stats().await?.admitted_total, quota as u64 - 1);
    for (index, keys) in line.all().iter().enumerate() {
        let mine: Vec<(UserId, i64)> = committed
            .in_adm
            .iter()
            .filter(|a| usize::from(line.shard_of(a.0)) == index)
            .copied()
            .collect();
        assert_eq!(settle(&redis, keys, &mine).await?, mine.len() as u64);
        assert_eq!(settle(&redis, keys, &mine).await?, 0);
        assert!(pending(&redis, keys, 1_000).await?.is_empty());
        for (user, at) in &mine {
            let copy: Option<f64> = redis
                .pool()
                .zscore(&keys.outbox, user.as_bytes().to_vec())
                .await?;
            let adm: Option<f64> = redis
                .pool()
                .zscore(&sale_keys.admitted(), user.as_bytes().to_vec())
                .await?;
            assert_eq!((copy, adm), (Some(*at as f64), Some(*at as f64)));
        }
    }

    // The credit is spent: a second tick may admit the one left and what one a second refilled
    // since, and places taken past the budget stay pending for the next tick.
    let next = budget(&redis, &sale_keys, &params).await?;
    assert!(next.budget < 10, "{next:?}");
    let mut more = Vec::new();
    for keys in line.all() {
        more.push(
            heads(&redis, keys, 20, next.abandon_after, 10_000)
                .await?
                .places,
        );
    }
    let extra = merge(&more, 20);
    let mut extra_taken = Vec::new();
    for (index, keys) in line.all().iter().enumerate() {
        let mine: Vec<(UserId, f64)> = extra
            .iter()
            .filter(|c| usize::from(c.shard) == index)
            .map(|c| (c.user, c.score))
            .collect();
        extra_taken.extend(take(&redis, keys, &mine).await?);
    }
    let merged: Vec<(UserId, f64)> = extra.iter().map(|c| (c.user, c.score)).collect();
    let over = commit(&redis, &sale_keys, &params, &merged, None).await?;
    assert!(over.admitted < 10, "{over:?}");
    assert_eq!(over.in_adm.len() as u64, over.admitted);
    // The first in line went in; the rest wait in their shards' ladm, lowest score first.
    assert_eq!(
        over.in_adm.iter().map(|a| a.0).collect::<Vec<_>>(),
        merged[..over.admitted as usize]
            .iter()
            .map(|m| m.0)
            .collect::<Vec<_>>()
    );
    let mut left = 0;
    for (index, keys) in line.all().iter().enumerate() {
        let mine: Vec<(UserId, i64)> = over
            .in_adm
            .iter()
            .filter(|a| usize::from(line.shard_of(a.0)) == index)
            .copied()
            .collect();
        settle(&redis, keys, &mine).await?;
        let waiting = pending(&redis, keys, 1_000).await?;
        assert!(waiting.windows(2).all(|w| w[0].1 < w[1].1));
        // A limit keeps the first in line.
        let first = pending(&redis, keys, 1).await?;
        assert_eq!(first.first(), waiting.first());
        left += waiting.len();
    }
    assert_eq!(left as u64, extra_taken.len() as u64 - over.admitted);
    assert_eq!(
        sale.stats().await?.admitted_total,
        quota as u64 - 1 + over.admitted
    );
    env.cleanup().await
}

/// A whole tick of a spread line (`line::tick::run`, issue #22 §2): what a dead leader took goes
/// in first, then the line's lowest live scores up to the rate credit, every admission in the
/// sale's `adm` and in its shard's `ladm` copy with the same deadline, the silent skipped and
/// counted, and the positions published so that a poll reads the exact head of the line from
/// its own shard. A leader that died after writing `adm` but before settling leaves a place the
/// next tick settles without counting it again. On the cluster too.
#[tokio::test]
async fn a_whole_spread_tick_admits_in_line_order_and_finishes_what_a_dead_leader_left()
-> anyhow::Result<()> {
    use dropline_core::sale::keys::SaleKeys;
    use dropline_waitroom::line::positions;
    use dropline_waitroom::line::tick::{commit, pending, run, take};

    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(&redis, SaleSpec::default()).await?;
    let line = LineShards::new(&redis, sale.id, 3);
    let sale_keys = SaleKeys::new(&redis, sale.id);
    let places = spread_line(&redis, &line, 300, 11).await?;
    let live: Vec<(UserId, f64)> = places.iter().filter(|p| !p.2).map(|p| (p.1, p.0)).collect();
    let params = spread_tick_params();

    // A leader took the first three live places (step 4) and stopped.
    for &(user, score) in &live[..3] {
        take(&redis, line.keys_of(user), &[(user, score)]).await?;
    }
    let tick = run(&redis, &sale_keys, &line, &params, 10_000, None).await?;
    assert_eq!((tick.admitted, tick.recovered), (30, 3), "{tick:?}");
    assert_eq!(tick.said.state, "open");
    let mut skipped = 0;
    for keys in line.all() {
        assert!(pending(&redis, keys, 1_000).await?.is_empty());
        let n: u64 = redis.pool().zcard(&keys.skip).await?;
        skipped += n;
    }
    assert!(skipped > 0);
    assert_eq!(tick.skipped, skipped);
    assert_eq!(tick.queue_length, 300 - 30 - skipped);
    let counted: Option<u64> = redis.pool().hget(sale_keys.room(), "skipped_total").await?;
    assert_eq!(counted, Some(skipped));
    // The line's first 30 live places are admitted, in adm and in their shard's copy alike.
    let in_adm: Vec<(Value, f64)> = redis
        .pool()
        .zrange(sale_keys.admitted(), 0, -1, None, false, None, true)
        .await?;
    let mut admitted: Vec<UserId> = in_adm
        .iter()
        .map(|(user, _)| UserId::from_slice(user.as_bytes().unwrap_or_default()))
        .collect::<Result<_, _>>()?;
    admitted.sort();
    let mut first: Vec<UserId> = live[..30].iter().map(|l| l.0).collect();
    first.sort();
    assert_eq!(admitted, first);
    for (user, deadline) in &in_adm {
        let user = UserId::from_slice(user.as_bytes().unwrap_or_default())?;
        let copy: Option<f64> = redis
            .pool()
            .zscore(&line.keys_of(user).outbox, user.as_bytes().to_vec())
            .await?;
        assert_eq!(copy, Some(*deadline));
    }
    // Positions from each buyer's own shard: the head of what waits is exact.
    let mut waiting: Vec<(f64, UserId)> = Vec::new();
    for keys in line.all() {
        let entries: Vec<(Value, f64)> = redis
            .pool()
            .zrange(&keys.q, 0, -1, None, false, None, true)
            .await?;
        for (user, score) in entries {
            waiting.push((
                score,
                UserId::from_slice(user.as_bytes().unwrap_or_default())?,
            ));
        }
    }
    waiting.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(waiting.len() as u64, tick.queue_length);
    for (rank, (_, user)) in waiting.iter().take(20).enumerate() {
        let (at, read) = positions(&redis, line.keys_of(*user), &[*user]).await?;
        assert!(at > 0);
        assert_eq!(read, [rank as u64 + 1], "the place of rank {rank}");
    }

    // A leader that wrote adm (step 5) and died before step 6: the next tick settles the place
    // with the deadline adm holds and does not count it again.
    // The credit is spent: one second refills one place.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (next_user, next_score) = (waiting[0].1, waiting[0].0);
    take(&redis, line.keys_of(next_user), &[(next_user, next_score)]).await?;
    let written = commit(
        &redis,
        &sale_keys,
        &params,
        &[(next_user, next_score)],
        None,
    )
    .await?;
    assert_eq!(written.admitted, 1, "{written:?}");
    let before = sale.stats().await?.admitted_total;
    let again = run(&redis, &sale_keys, &line, &params, 10_000, None).await?;
    assert_eq!(again.recovered, 0, "{again:?}");
    let copy: Option<f64> = redis
        .pool()
        .zscore(
            &line.keys_of(next_user).outbox,
            next_user.as_bytes().to_vec(),
        )
        .await?;
    assert_eq!(copy.map(|c| c as i64), written.in_adm.first().map(|a| a.1));
    assert_eq!(sale.stats().await?.admitted_total, before + again.admitted);
    for keys in line.all() {
        assert!(pending(&redis, keys, 1_000).await?.is_empty());
    }
    env.cleanup().await
}

/// The reaper's pass over a spread line (`line::reap`, issue #22 §2): each shard skips its
/// places silent past `abandon_after` and removes those silent past the return grace, drops
/// its copies of lapsed admissions but never a pending entry (below 0), and the counts reach
/// the sale's `wr`. While the sale's outage credit runs, nobody is skipped or removed.
#[tokio::test]
async fn the_reaper_walks_every_line_shard_and_counts_in_the_sales_wr() -> anyhow::Result<()> {
    use dropline_core::sale::keys::SaleKeys;
    use dropline_waitroom::line::reap::reap;

    const GRACE: Duration = Duration::from_secs(1_800);
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let sale = Sale::arm(&redis, SaleSpec::default()).await?;
    let line = LineShards::new(&redis, sale.id, 3);
    let sale_keys = SaleKeys::new(&redis, sale.id);
    let now_ms = redis_now_ms(&redis).await?;
    let now_s = now_ms / 1000;
    // 90 places: a third live, a third silent 10 minutes, a third silent 50 minutes.
    let mut ages = Vec::new();
    for n in 0..90u32 {
        let user = UserId::new_v7();
        let age = [0, 600, 3_000][(n % 3) as usize];
        let stamp = ((now_s - age).rem_euclid(65_536)) as f64;
        let score = (4_294_967_296.0 + f64::from(n)) * 65_536.0 + stamp;
        common::place_in_shard(&redis, &line, user, score).await?;
        ages.push((user, age));
    }
    // Each shard's ladm: one lapsed copy, one live copy, one pending entry.
    for keys in line.all() {
        let entries: Vec<(f64, Vec<u8>)> = vec![
            (
                (now_ms - 1_000) as f64,
                UserId::new_v7().as_bytes().to_vec(),
            ),
            (
                (now_ms + 600_000) as f64,
                UserId::new_v7().as_bytes().to_vec(),
            ),
            (-1.0e15, UserId::new_v7().as_bytes().to_vec()),
        ];
        let () = redis
            .pool()
            .zadd(&keys.outbox, None, None, false, false, entries)
            .await?;
    }
    // An outage ended just now: nobody is skipped or removed.
    let () = redis
        .pool()
        .hset(sale_keys.room(), ("resumed_at", now_ms))
        .await?;
    let held = reap(&redis, &sale_keys, &line, ABANDON, GRACE, 1_000).await?;
    assert_eq!(
        (held.skipped, held.abandoned, held.queue_length),
        (0, 0, 90)
    );
    assert_eq!(held.expired, 3);
    let () = redis
        .pool()
        .hset(sale_keys.room(), ("resumed_at", now_ms - 600_000))
        .await?;
    let done = reap(&redis, &sale_keys, &line, ABANDON, GRACE, 1_000).await?;
    assert!(done.wrapped);
    assert_eq!(
        (
            done.skipped,
            done.abandoned,
            done.queue_length,
            done.skipped_length
        ),
        (30, 30, 30, 30)
    );
    for (user, age) in &ages {
        let keys = line.keys_of(*user);
        let member = user.as_bytes().to_vec();
        let in_q: Option<f64> = redis.pool().zscore(&keys.q, member.clone()).await?;
        let in_skip: Option<f64> = redis.pool().zscore(&keys.skip, member).await?;
        assert_eq!(
            (in_q.is_some(), in_skip.is_some()),
            (*age == 0, *age == 600),
            "a place silent {age} s"
        );
    }
    for keys in line.all() {
        let left: Vec<(Value, f64)> = redis
            .pool()
            .zrange(&keys.outbox, 0, -1, None, false, None, true)
            .await?;
        let scores: Vec<f64> = left.iter().map(|e| e.1).collect();
        assert_eq!(scores, [-1.0e15, (now_ms + 600_000) as f64]);
    }
    let counted: Vec<Option<u64>> = redis
        .pool()
        .hmget(sale_keys.room(), vec!["skipped_total", "abandoned_total"])
        .await?;
    assert_eq!(counted, [Some(30), Some(30)]);
    // /stats counts the whole line's skipped places from what the reaper wrote.
    sale.set_cfg("line_shards", 3).await?;
    assert_eq!(sale.stats().await?.skipped, 30);
    env.cleanup().await
}

/// The leader's read of a line shard whose last place is at a power-of-two rank (65, 129
/// places) reads that place once, as `checkpoint_ranks` does; around it too.
#[tokio::test]
async fn a_shard_whose_last_place_is_a_checkpoint_is_read_once() -> anyhow::Result<()> {
    use dropline_waitroom::line::{CountCurve, checkpoint_ranks, read_curve, segment_starts};

    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let line = LineShards::new(&redis, SaleId::new_v7(), 2);
    let q = &line.keys(0).q;
    let bounds = segment_starts(0, 200);
    let mut scores: Vec<f64> = Vec::new();
    for len in [1usize, 32, 33, 64, 65, 66, 129, 130] {
        while scores.len() < len {
            let n = scores.len() as f64;
            let score = (4_294_967_296.0 + n + 1.0) * 65_536.0 + 3.0;
            let () = redis
                .pool()
                .zadd(
                    q,
                    None,
                    None,
                    false,
                    false,
                    (score, UserId::new_v7().as_bytes().to_vec()),
                )
                .await?;
            scores.push(score);
        }
        let read = read_curve(&redis, q, &bounds).await?;
        let ranked: Vec<(u64, f64)> = checkpoint_ranks(len as u64)
            .into_iter()
            .map(|r| (r, scores[r as usize]))
            .collect();
        let segments: Vec<(f64, u64)> = bounds
            .iter()
            .map(|&b| (b, scores.partition_point(|&s| s < b) as u64))
            .collect();
        assert_eq!(
            read,
            CountCurve::of_shard(len as u64, &ranked, &segments),
            "{len}"
        );
        assert_eq!(read.len(), len as u64);
    }
    env.cleanup().await
}

/// Step 4 by hand for one waiting place: takes it with the score its shard's `q` holds now.
/// A poll rewrites the place's last-seen stamp when the second turns, so the score of the
/// arrival may be stale by the time a test takes it (a take with a stale score takes nothing,
/// as a tick's must). Fails unless the place was taken.
async fn take_as_it_stands(redis: &Redis, line: &LineShards, user: UserId) -> anyhow::Result<f64> {
    let keys = line.keys_of(user);
    let score: Option<f64> = redis
        .pool()
        .zscore(&keys.q, user.as_bytes().to_vec())
        .await?;
    let score = score.context("the place is waiting in its shard's q")?;
    let taken = dropline_waitroom::line::tick::take(redis, keys, &[(user, score)]).await?;
    anyhow::ensure!(taken == [user], "the place was not taken: {taken:?}");
    Ok(score)
}

/// A spread line's places in arrival order (keys 2^32 + n for arrivals n = 1, 2, … after the
/// opening, all live now, the sale's `qseq` at the last), each in its shard's `q`; returns the
/// users, first in line first.
async fn spread_arrivals(
    redis: &Redis,
    sale: SaleId,
    line: &LineShards,
    n: u32,
) -> anyhow::Result<Vec<(UserId, f64)>> {
    let now_s = redis_now_ms(redis).await? / 1000;
    let stamp = (now_s % 65_536) as f64;
    let mut places = Vec::new();
    for k in 1..=n {
        let user = UserId::new_v7();
        let score = (4_294_967_296.0 + f64::from(k)) * 65_536.0 + stamp;
        common::place_in_shard(redis, line, user, score).await?;
        places.push((user, score));
    }
    let seq = dropline_core::sale::keys::SaleKeys::new(redis, sale).queue_seq();
    let () = redis.pool().set(seq, n, None, None, false).await?;
    Ok(places)
}

/// How many of `users` (a spread line's places, first in line first) are counted exactly: every
/// place up to the first that is some shard's 32nd. Each shard's first 32 places are read
/// exactly; past a shard's 32nd its count is interpolated, so with the shards drawn at random
/// the exact head is not a fixed length (60 places over 3 shards reach a shard's 32nd in ~0.3%
/// of draws).
fn exact_head(line: &LineShards, users: &[UserId]) -> usize {
    let mut per_shard = vec![0u64; usize::from(line.count())];
    for (index, user) in users.iter().enumerate() {
        if let Some(count) = per_shard.get_mut(usize::from(line.shard_of(*user))) {
            *count += 1;
            if *count == dropline_waitroom::line::EXACT_HEAD {
                return index + 1;
            }
        }
    }
    users.len()
}

/// A poll of a spread line (`wr_line_status.lua`, issue #22 §2) reads its own line shard alone:
/// nothing before the leader's first tick publishes; then exact positions across the shards
/// (the head of a small line is exact), the sale's settings and notice; an admission from the shard's
/// copy, with `adm`'s deadline; a place a tick took and did not settle waits at the head and
/// is not lost by the poll. A new notice and the sale selling out reach the polls with the
/// next tick, not before (the documented lag of one tick). On the cluster the script's keys
/// are all the shard's, so a poll that reached the sale's slot would fail there.
#[tokio::test]
async fn a_poll_of_a_spread_line_reads_its_shard_and_hears_the_sale_one_tick_late()
-> anyhow::Result<()> {
    use dropline_waitroom::line::tick::run;

    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let (sale, line, sale_keys) = spread_sale(&redis, SaleSpec::default()).await?;
    sale.set_cfg("notice", "doors at eight").await?;
    let places = spread_arrivals(&redis, sale.id, &line, 60).await?;
    let users: Vec<UserId> = places.iter().map(|p| p.0).collect();

    // Nothing published yet: the poll does not guess.
    assert_eq!(sale.queue.status(users[0], GRACE).await?, None);
    // A tick with no rate admits nobody and publishes.
    let quiet = quiet_tick();
    run(&redis, &sale_keys, &line, &quiet, 10_000, None).await?;
    // /stats counts the whole line from the tick's count, not the sale's own (empty) q.
    assert_eq!(sale.stats().await?.queue_length, 60);
    let polled = sale.queue.status_many(&users, GRACE).await?;
    let exact = exact_head(&line, &users);
    for (rank, status) in polled.iter().enumerate() {
        let status = status.as_ref().context("a poll of an armed sale")?;
        let Place::Waiting { position } = status.place else {
            panic!("the place of rank {rank} is not waiting: {status:?}");
        };
        if rank < exact {
            assert_eq!(position, rank as u64 + 1, "the place of rank {rank}");
        } else {
            // Past a shard's 32nd place the other shards' count is interpolated.
            assert!(
                (1..=60).contains(&position),
                "the place of rank {rank}: {position}"
            );
        }
        assert_eq!(status.queue_length, 60);
        assert_eq!(status.admit_per_second, 100);
        assert_eq!(status.notice.as_deref(), Some("doors at eight"));
        assert_eq!(status.group.as_deref(), Some("public"));
        assert!(!status.paused);
    }

    // A tick admits the first 30: their polls say admitted, with adm's deadline.
    let tick = spread_tick(&redis, &sale_keys, &line).await?;
    assert_eq!(tick.admitted, 30, "{tick:?}");
    for user in &users[..30] {
        let deadline: Option<f64> = redis
            .pool()
            .zscore(sale_keys.admitted(), user.as_bytes().to_vec())
            .await?;
        let deadline = deadline.context("admitted in adm")? as u64;
        assert_eq!(
            sale.place(*user).await?,
            Place::Admitted {
                deadline_ms: deadline
            }
        );
    }
    assert_eq!(sale.place(users[30]).await?, Place::Waiting { position: 1 });
    assert_eq!(
        sale.place(users[59]).await?,
        Place::Waiting { position: 30 }
    );

    // A place a tick took and has not settled waits at the head, and stays taken.
    let taken_score = take_as_it_stands(&redis, &line, users[30]).await?;
    for _ in 0..3 {
        assert_eq!(sale.place(users[30]).await?, Place::Waiting { position: 1 });
    }
    let pending: Option<f64> = redis
        .pool()
        .zscore(
            &line.keys_of(users[30]).outbox,
            users[30].as_bytes().to_vec(),
        )
        .await?;
    assert_eq!(pending, Some(-taken_score));

    // A new notice and the sale selling out reach the polls with the next tick.
    sale.set_cfg("notice", "ten left").await?;
    sale.set_stock(0, 0, 30).await?;
    let before = sale
        .queue
        .status(users[40], GRACE)
        .await?
        .context("polled")?;
    assert!(matches!(before.place, Place::Waiting { .. }), "{before:?}");
    assert_eq!(before.notice.as_deref(), Some("doors at eight"));
    run(&redis, &sale_keys, &line, &quiet, 10_000, None).await?;
    let after = sale
        .queue
        .status(users[40], GRACE)
        .await?
        .context("polled")?;
    assert_eq!(after.place, Place::SoldOut);
    assert_eq!(after.notice.as_deref(), Some("ten left"));
    assert_eq!(sale.place(users[0]).await?, Place::SoldOut);
    env.cleanup().await
}

/// Each user's position as Redis counts it from the published curves alone
/// (`wr_line_position.lua` on the user's shard), `None` for one not waiting.
async fn counted_in_redis(
    redis: &Redis,
    line: &LineShards,
    users: &[UserId],
) -> anyhow::Result<Vec<Option<u64>>> {
    let mut out = Vec::with_capacity(users.len());
    for user in users {
        let (_, read) =
            dropline_waitroom::line::positions(redis, line.keys_of(*user), &[*user]).await?;
        out.push(read.first().copied().filter(|&p| p > 0));
    }
    Ok(out)
}

/// The positions `queue`'s polls answer `users`, `None` for one not waiting.
async fn polled_positions(queue: &WaitQueue, users: &[UserId]) -> anyhow::Result<Vec<Option<u64>>> {
    let mut out = Vec::with_capacity(users.len());
    for batch in users.chunks(200) {
        let polled = queue.status_many(batch, GRACE).await?;
        out.extend(
            polled
                .into_iter()
                .map(|status| match status.map(|s| s.place) {
                    Some(Place::Waiting { position }) => Some(position),
                    _ => None,
                }),
        );
    }
    Ok(out)
}

/// A poll of a spread line leaves the other shards' count to the edge (`wr_line_status.lua`'s
/// lookup, issue #22 §2): on a line long enough that the curves interpolate, every position a
/// poll answers is the one Redis counts from the same curves (`wr_line_status.lua` did so
/// itself before), to the place. So too from a queue that holds no curve yet, after a tick
/// that changes the curves, and beside sampled buyers who wait for a first ETA (whose polls
/// count in Redis, to note the ETA shown). The edge keeps a shard's curve by the `at` it was
/// published with, and Redis sends a curve only when lmeta holds another.
#[tokio::test]
async fn a_spread_polls_position_counted_at_the_edge_is_the_one_redis_counts() -> anyhow::Result<()>
{
    use dropline_waitroom::line::tick::run;

    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let (sale, line, sale_keys) = spread_sale(&redis, SaleSpec::default()).await?;
    let places = spread_arrivals(&redis, sale.id, &line, 600).await?;
    let users: Vec<UserId> = places.iter().map(|p| p.0).collect();
    run(&redis, &sale_keys, &line, &quiet_tick(), 10_000, None).await?;

    // Each comparison polls first and counts after: a poll rewrites the place's stamp (the
    // low bits of its score) when a second has passed, and the curves are searched at the
    // score, so the count has to read the scores the poll left.
    let polled = polled_positions(&sale.queue, &users).await?;
    assert!(polled.iter().all(Option::is_some), "{polled:?}");
    assert_eq!(polled, counted_in_redis(&redis, &line, &users).await?);
    // Again from the curves the queue now holds, and from a queue that holds none.
    let polled = polled_positions(&sale.queue, &users).await?;
    assert_eq!(polled, counted_in_redis(&redis, &line, &users).await?);
    let fresh = WaitQueue::new(&redis, sale.id);
    let polled = polled_positions(&fresh, &users).await?;
    assert_eq!(polled, counted_in_redis(&redis, &line, &users).await?);
    // The head of the line is exact.
    let exact_head = exact_head(&line, &users);
    let head = polled_positions(&sale.queue, &users[..exact_head]).await?;
    let exact: Vec<Option<u64>> = (1..=exact_head as u64).map(Some).collect();
    assert_eq!(head, exact);

    // A curve is sent only when lmeta holds another `at`: with the curves emptied behind the
    // same `at`, a queue that holds them counts as Redis does with the published ones, a new
    // queue with the emptied ones (the own shard's rank alone).
    let mut published: Vec<Vec<u8>> = Vec::new();
    for keys in line.all() {
        let others: Vec<u8> = redis.pool().hget(&keys.meta, "others").await?;
        published.push(others);
    }
    let set_others = |curves: Vec<Vec<u8>>| {
        let redis = redis.clone();
        let metas: Vec<String> = line.all().iter().map(|k| k.meta.clone()).collect();
        async move {
            for (meta, curve) in metas.iter().zip(curves) {
                let () = redis.pool().hset(meta, ("others", curve)).await?;
            }
            anyhow::Ok(())
        }
    };
    let emptied = vec![Vec::new(); published.len()];
    set_others(emptied.clone()).await?;
    let held = polled_positions(&sale.queue, &users).await?;
    set_others(published.clone()).await?;
    assert_eq!(held, counted_in_redis(&redis, &line, &users).await?);
    set_others(emptied).await?;
    let fresh = WaitQueue::new(&redis, sale.id);
    let polled = polled_positions(&fresh, &users).await?;
    assert_eq!(polled, counted_in_redis(&redis, &line, &users).await?);
    assert_ne!(polled, held);
    set_others(published).await?;

    // A tick admits the first 30 (the budget) and publishes new curves: the held ones are
    // replaced.
    let tick = spread_tick(&redis, &sale_keys, &line).await?;
    assert_eq!(tick.admitted, 30, "{tick:?}");
    let waiting = &users[30..];
    let polled = polled_positions(&sale.queue, waiting).await?;
    assert_eq!(polled.first().copied().flatten(), Some(1));
    assert_eq!(polled, counted_in_redis(&redis, &line, waiting).await?);

    // Two sampled buyers of shard 0 waiting for a first ETA: the one who polls gets the
    // position counted in Redis, with the ETA noted for the report; everyone else is still
    // counted at the edge; every position is the same.
    let on_shard_0: Vec<UserId> = waiting
        .iter()
        .copied()
        .filter(|u| line.shard_of(*u) == 0)
        .collect();
    let (sampled, never_polled) = match on_shard_0[..] {
        [first, .., last] => (first, last),
        _ => anyhow::bail!("two places on shard 0: {on_shard_0:?}"),
    };
    let lwt = &line.keys(0).eta_wait;
    for user in [sampled, never_polled] {
        let () = redis
            .pool()
            .hset(lwt, (fred::types::Key::from(&user.as_bytes()[..]), ""))
            .await?;
    }
    let others: Vec<UserId> = waiting
        .iter()
        .copied()
        .filter(|u| *u != never_polled)
        .collect();
    let polled = polled_positions(&sale.queue, &others).await?;
    assert_eq!(polled, counted_in_redis(&redis, &line, &others).await?);
    assert_eq!(hash_users(&redis, &[lwt.as_str()]).await?, [never_polled]);
    assert_eq!(
        hash_users(&redis, &[line.keys(0).eta_noted.as_str()]).await?,
        [sampled]
    );
    let polled = polled_positions(&fresh, &others).await?;
    assert_eq!(polled, counted_in_redis(&redis, &line, &others).await?);
    env.cleanup().await
}

/// The order side's changes of an admission reach a spread line's copies with the next tick
/// (issue #22 §2; `admch`, `wr_line_budget.lua` and `wr_line_sync.lua`): a payment that
/// lengthens the admission, a cancelled order and a paid one that end it. Before that tick the
/// copy still says what the tick wrote (the documented lag of one tick); a buyer whose order
/// ended the admission and who is admitted again in the next tick keeps the new admission; the
/// notes are taken once; notes taken by a leader that died before carrying them are carried by
/// the next tick (`admchf`). A sale on one shard keeps no `admch` at all. On the cluster the order
/// scripts note on the sale's slot and the copies change on their own shards.
#[tokio::test]
async fn an_orders_change_of_an_admission_reaches_the_spread_lines_copy_with_the_next_tick()
-> anyhow::Result<()> {
    use dropline_core::ids::OrderId;
    use dropline_core::orders::{Orders, ReserveOutcome, ReserveRequest, Target};
    use dropline_waitroom::line::tick::{budget, run};

    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let (sale, line, sale_keys) = spread_sale(&redis, SaleSpec::default()).await?;
    let places = spread_arrivals(&redis, sale.id, &line, 4).await?;
    let users: Vec<UserId> = places.iter().map(|p| p.0).collect();
    let tick = spread_tick(&redis, &sale_keys, &line).await?;
    assert_eq!(tick.admitted, 4, "{tick:?}");
    let admission = |user: UserId| {
        let redis = redis.clone();
        let adm = sale_keys.admitted();
        async move {
            let at: Option<f64> = redis.pool().zscore(adm, user.as_bytes().to_vec()).await?;
            anyhow::Ok(at.map(|at| at as u64))
        }
    };
    let first: Vec<u64> = {
        let mut first = Vec::new();
        for user in &users {
            first.push(admission(*user).await?.context("admitted")?);
        }
        first
    };

    let orders = Orders::new(&redis, sale.id);
    let mut ids = Vec::new();
    for user in &users {
        let order = OrderId::new_v7();
        let outcome = orders
            .reserve(&ReserveRequest {
                order,
                user: *user,
                quantity: 1,
                idempotency_key: format!("k-{order}"),
            })
            .await?;
        assert!(matches!(outcome, ReserveOutcome::Created(_)), "{outcome:?}");
        ids.push(order);
    }
    // users[0] pays (an hour to do it): the admission lasts as long.
    assert!(
        orders
            .begin_payment(ids[0], Duration::from_secs(3_600))
            .await?
            .applied()
    );
    // users[1] cancels and users[2] has paid: both admissions end.
    assert!(orders.release(ids[1], Target::Cancelled).await?.applied());
    assert!(
        orders
            .begin_payment(ids[2], Duration::from_secs(30))
            .await?
            .applied()
    );
    assert!(orders.confirm(ids[2]).await?.applied());
    // users[3] cancels too, and stands in line again (a later place).
    assert!(orders.release(ids[3], Target::Cancelled).await?.applied());
    let again = places[3].1 + 65_536.0 * 1_000.0;
    common::place_in_shard(&redis, &line, users[3], again).await?;
    let paying = admission(users[0]).await?.context("still admitted")?;
    assert!(
        paying > first[0] + 3_000_000 - 60_000,
        "{paying} vs {}",
        first[0]
    );
    assert_eq!(admission(users[1]).await?, None);
    assert_eq!(admission(users[2]).await?, None);

    // Until the next tick the copies say what the first tick wrote.
    for (user, at) in users[..3].iter().zip(&first) {
        assert_eq!(
            sale.place(*user).await?,
            Place::Admitted { deadline_ms: *at }
        );
    }

    // The next tick carries the changes, then admits users[3] again.
    let tick = spread_tick(&redis, &sale_keys, &line).await?;
    assert_eq!(tick.admitted, 1, "{tick:?}");
    assert_eq!(
        sale.place(users[0]).await?,
        Place::Admitted {
            deadline_ms: paying
        }
    );
    assert_eq!(sale.place(users[1]).await?, Place::NotQueued);
    assert_eq!(sale.place(users[2]).await?, Place::NotQueued);
    let readmitted = admission(users[3]).await?.context("admitted again")?;
    assert!(readmitted >= first[3], "{readmitted} vs {}", first[3]);
    assert_eq!(
        sale.place(users[3]).await?,
        Place::Admitted {
            deadline_ms: readmitted
        }
    );
    // The notes were taken once: admch keeps the mark alone, and none wait to be carried.
    let notes: Vec<Vec<u8>> = redis.pool().smembers(sale_keys.admission_changes()).await?;
    assert_eq!(notes, vec![Vec::<u8>::new()]);
    let waiting: bool = redis
        .pool()
        .exists(sale_keys.admission_changes_taken())
        .await?;
    assert!(!waiting);

    // A leader that took the notes (step 1) and died before carrying them loses none: the next
    // tick carries them, with the admission as adm has it by then.
    let order = OrderId::new_v7();
    let outcome = orders
        .reserve(&ReserveRequest {
            order,
            user: users[3],
            quantity: 1,
            idempotency_key: format!("k-{order}"),
        })
        .await?;
    assert!(matches!(outcome, ReserveOutcome::Created(_)), "{outcome:?}");
    assert!(
        orders
            .begin_payment(order, Duration::from_secs(7_200))
            .await?
            .applied()
    );
    let paying_again = admission(users[3]).await?.context("still admitted")?;
    assert!(paying_again > readmitted + 3_600_000, "{paying_again}");
    budget(&redis, &sale_keys, &spread_tick_params()).await?;
    assert_eq!(
        sale.place(users[3]).await?,
        Place::Admitted {
            deadline_ms: readmitted
        }
    );
    run(&redis, &sale_keys, &line, &quiet_tick(), 10_000, None).await?;
    assert_eq!(
        sale.place(users[3]).await?,
        Place::Admitted {
            deadline_ms: paying_again
        }
    );
    let waiting: bool = redis
        .pool()
        .exists(sale_keys.admission_changes_taken())
        .await?;
    assert!(!waiting);

    // A sale on one shard: the same orders leave no admch behind.
    let plain = Sale::arm(&redis, SaleSpec::default()).await?;
    let buyer = UserId::new_v7();
    plain.join(buyer).await?;
    assert_eq!(plain.admit(10).await?.admitted, vec![buyer]);
    let plain_orders = Orders::new(&redis, plain.id);
    let order = OrderId::new_v7();
    let outcome = plain_orders
        .reserve(&ReserveRequest {
            order,
            user: buyer,
            quantity: 1,
            idempotency_key: format!("k-{order}"),
        })
        .await?;
    assert!(matches!(outcome, ReserveOutcome::Created(_)), "{outcome:?}");
    assert!(
        plain_orders
            .release(order, Target::Cancelled)
            .await?
            .applied()
    );
    let kept: bool = redis
        .pool()
        .exists(dropline_core::sale::keys::SaleKeys::new(&redis, plain.id).admission_changes())
        .await?;
    assert!(!kept);
    env.cleanup().await
}

/// The post-sale report's ETA accuracy counts a spread line's buyers (issue #22 §2): the first
/// ETA shown to a sampled buyer is noted on their line shard (at the join when the sale is
/// open, else at the first poll that shows one: here after a pause), and the leader carries it
/// into the sale's `wt` at the start of its next tick, before that tick's admissions read it.
/// A buyer who leaves takes their shard's wait for an ETA and their report entry with them.
#[tokio::test]
async fn a_spread_lines_first_etas_reach_the_report_before_the_admissions() -> anyhow::Result<()> {
    use dropline_waitroom::line::tick::run;

    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let (sale, line, sale_keys) = spread_sale(&redis, SaleSpec::default()).await?;
    run(&redis, &sale_keys, &line, &quiet_tick(), 10_000, None).await?;
    let entry = |user: UserId| {
        let redis = redis.clone();
        let wt = sale_keys.report_entries();
        async move {
            let v: Option<String> = redis.pool().hget(wt, &user.as_bytes()[..]).await?;
            anyhow::Ok(v)
        }
    };
    let noted_on_shard = |user: UserId| {
        let redis = redis.clone();
        let keys = line.keys_of(user).clone();
        async move {
            let waiting: bool = redis
                .pool()
                .hexists(&keys.eta_wait, &user.as_bytes()[..])
                .await?;
            let noted: Option<String> = redis
                .pool()
                .hget(&keys.eta_noted, &user.as_bytes()[..])
                .await?;
            anyhow::Ok((waiting, noted))
        }
    };

    // Open: each join's answer shows an ETA, noted on the buyer's shard at once.
    let open: Vec<UserId> = (0..4).map(|_| UserId::new_v7()).collect();
    for user in &open {
        let (status, new) = sale.join(*user).await?;
        assert!(
            new && matches!(status.place, Place::Waiting { .. }),
            "{status:?}"
        );
        let (waiting, noted) = noted_on_shard(*user).await?;
        assert!(!waiting);
        let noted = noted.context("the join's ETA noted on the shard")?;
        assert!(noted.contains(':'), "{noted}");
        let joined = entry(*user).await?.context("sampled on the sale's slot")?;
        assert!(!joined.contains(':'), "not carried yet: {joined}");
    }
    // One who leaves before the next tick takes the noted ETA along.
    let quick = UserId::new_v7();
    sale.join(quick).await?;
    assert!(noted_on_shard(quick).await?.1.is_some());
    assert!(sale.queue.leave(quick).await?);
    assert_eq!(noted_on_shard(quick).await?, (false, None));
    assert_eq!(entry(quick).await?, None);
    // Paused: no ETA is shown, so none is noted; the buyer waits for one on the shard.
    sale.set_cfg("paused", 1).await?;
    run(&redis, &sale_keys, &line, &quiet_tick(), 10_000, None).await?;
    let late = UserId::new_v7();
    sale.join(late).await?;
    assert_eq!(noted_on_shard(late).await?, (true, None));
    // One who leaves takes the wait along.
    let gone = UserId::new_v7();
    sale.join(gone).await?;
    assert!(entry(gone).await?.is_some());
    assert!(sale.queue.leave(gone).await?);
    assert_eq!(noted_on_shard(gone).await?, (false, None));
    assert_eq!(entry(gone).await?, None, "the report's entry goes too");
    // The tick after the pause carried the open buyers' ETAs into wt.
    for user in &open {
        let e = entry(*user).await?.context("an entry")?;
        assert_eq!(e.split(':').count(), 3, "join:eta:shown, got {e}");
    }
    // Resumed: the first poll that shows an ETA notes it.
    sale.set_cfg("paused", 0).await?;
    run(&redis, &sale_keys, &line, &quiet_tick(), 10_000, None).await?;
    assert!(matches!(sale.place(late).await?, Place::Waiting { .. }));
    let (waiting, noted) = noted_on_shard(late).await?;
    assert!(!waiting && noted.is_some(), "{noted:?}");

    // The next tick carries it before admitting: all five are admitted with an ETA measured.
    let tick = spread_tick(&redis, &sale_keys, &line).await?;
    assert_eq!(tick.admitted, 5, "{tick:?}");
    let report: std::collections::HashMap<String, i64> =
        redis.pool().hgetall(sale_keys.report()).await?;
    let measured: i64 = report
        .iter()
        .filter(|(field, _)| field.starts_with("e:"))
        .map(|(_, n)| *n)
        .sum();
    assert_eq!(measured, 5, "{report:?}");
    assert_eq!(noted_on_shard(late).await?, (false, None));
    env.cleanup().await
}

/// On a spread line a sampled buyer's wait for a first ETA (`lwt` on their line shard) goes with
/// the place too: lost to a poll or to the shard's reaper, or taken by a tick before any poll
/// showed an ETA. So every shard's `lwt` empties, and its polls read nothing for the report.
#[tokio::test]
async fn a_spread_lines_wait_for_a_first_eta_goes_with_the_place() -> anyhow::Result<()> {
    use dropline_waitroom::line::{reap::reap, tick::run};

    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let (sale, line, sale_keys) = spread_sale(
        &redis,
        SaleSpec {
            opens_in_ms: 600_000,
            ..SaleSpec::default()
        },
    )
    .await?;
    run(&redis, &sale_keys, &line, &quiet_tick(), 10_000, None).await?;
    let lwt: Vec<&str> = line.all().iter().map(|k| k.eta_wait.as_str()).collect();
    let waits = || hash_users(&redis, &lwt);
    let mut b = users(5);
    b.sort();
    for &u in &b {
        assert_eq!(sale.join(u).await?.0.place, Place::Scheduled);
    }
    assert_eq!(waits().await?, b, "a short line samples every place");

    sale.opens_in(-1_000).await?;
    run(&redis, &sale_keys, &line, &quiet_tick(), 10_000, None).await?;
    common::silence_in_sale(&redis, sale.id, &b[..2], 100).await?;
    assert_eq!(sale.place_with(b[0], GRACE_FAST).await?, Place::NotQueued);
    assert_eq!(waits().await?, b[1..]);
    // Silent past a grace of 20 s: b1 only.
    loop {
        if reap(&redis, &sale_keys, &line, ABANDON_20, ABANDON_20, 5_000)
            .await?
            .wrapped
        {
            break;
        }
    }
    assert_eq!(waits().await?, b[2..]);
    let tick = spread_tick(&redis, &sale_keys, &line).await?;
    assert_eq!(tick.admitted, 3, "{tick:?}");
    assert_eq!(waits().await?, []);
    env.cleanup().await
}

/// A spread line's poll judges the clock itself (a scheduled sale's places wait once
/// `opens_at` passes, without a tick), and brings a skipped place back or loses one silent
/// past the grace as on one shard; those counts are the shard's until the leader folds them
/// into the sale's `wr` (`line::tick::fold`, each tick).
#[tokio::test]
async fn a_spread_lines_poll_judges_the_opening_itself_and_its_returns_reach_the_sales_counters()
-> anyhow::Result<()> {
    use dropline_waitroom::line::tick::run;

    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let (sale, line, sale_keys) = spread_sale(
        &redis,
        SaleSpec {
            opens_in_ms: 1_500,
            ..SaleSpec::default()
        },
    )
    .await?;
    let places = spread_arrivals(&redis, sale.id, &line, 12).await?;
    let quiet = quiet_tick();
    let tick = run(&redis, &sale_keys, &line, &quiet, 10_000, None).await?;
    assert_eq!(tick.said.state, "scheduled");
    assert_eq!(sale.place(places[4].0).await?, Place::Scheduled);
    // Past the opening (and a tick of slack), with no tick in between.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    assert_eq!(
        sale.place(places[4].0).await?,
        Place::Waiting { position: 5 }
    );

    // Two skipped places: one silent 10 minutes (within the grace: back at its place), one
    // silent 40 minutes (past it: lost).
    let now_s = redis_now_ms(&redis).await? / 1000;
    for (i, age) in [(2usize, 600i64), (7, 2_400)] {
        let (user, score) = places[i];
        let keys = line.keys_of(user);
        let stamp = ((now_s - age).rem_euclid(65_536)) as f64;
        let silent = score - score % 65_536.0 + stamp;
        let _: i64 = redis.pool().zrem(&keys.q, user.as_bytes().to_vec()).await?;
        let () = redis
            .pool()
            .zadd(
                &keys.skip,
                None,
                None,
                false,
                false,
                (silent, user.as_bytes().to_vec()),
            )
            .await?;
    }
    assert_eq!(
        sale.place(places[2].0).await?,
        Place::Waiting { position: 3 }
    );
    assert_eq!(sale.place(places[7].0).await?, Place::NotQueued);
    let shard_counts: Option<i64> = redis
        .pool()
        .hget(&line.keys_of(places[2].0).meta, "returned_total")
        .await?;
    assert_eq!(shard_counts, Some(1));
    let counters = || async {
        let counts: (Option<i64>, Option<i64>) = redis
            .pool()
            .hmget(sale_keys.room(), vec!["returned_total", "abandoned_total"])
            .await?;
        anyhow::Ok(counts)
    };
    assert_eq!(counters().await?, (None, None));
    run(&redis, &sale_keys, &line, &quiet, 10_000, None).await?;
    assert_eq!(counters().await?, (Some(1), Some(1)));
    // Folded once: the shards' own counts are gone, a second tick adds nothing.
    run(&redis, &sale_keys, &line, &quiet, 10_000, None).await?;
    assert_eq!(counters().await?, (Some(1), Some(1)));
    env.cleanup().await
}

/// Leaving a spread line (issue #22 §2): the place goes from its line shard (waiting, skipped or
/// taken by a tick and not settled) and the admission from the sale's `adm` and the shard's
/// copy; a second leave removes nothing; the report's `left` reaches the sale's `rep` with the
/// next tick, once.
#[tokio::test]
async fn leaving_a_spread_line_removes_the_place_from_its_shard_and_the_admission_from_the_sale()
-> anyhow::Result<()> {
    use dropline_waitroom::line::tick::run;

    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let (sale, line, sale_keys) = spread_sale(&redis, SaleSpec::default()).await?;
    let places = spread_arrivals(&redis, sale.id, &line, 40).await?;
    let tick = spread_tick(&redis, &sale_keys, &line).await?;
    assert_eq!(tick.admitted, 30, "{tick:?}");
    let (admitted, taken, waiting) = (places[0], places[30], places[35]);
    take_as_it_stands(&redis, &line, taken.0).await?;

    for (user, _) in [admitted, taken, waiting] {
        assert!(sale.queue.leave(user).await?, "the first leave removes");
        assert!(!sale.queue.leave(user).await?, "the second removes nothing");
        assert_eq!(sale.place(user).await?, Place::NotQueued);
        let keys = line.keys_of(user);
        for key in [&keys.q, &keys.skip, &keys.outbox] {
            let score: Option<f64> = redis.pool().zscore(key, user.as_bytes().to_vec()).await?;
            assert_eq!(score, None, "{key}");
        }
    }
    let in_adm: Option<f64> = redis
        .pool()
        .zscore(sale_keys.admitted(), admitted.0.as_bytes().to_vec())
        .await?;
    assert_eq!(in_adm, None);
    // The pending place left before any tick wrote it: no later tick admits it.
    let quiet = quiet_tick();
    run(&redis, &sale_keys, &line, &quiet, 10_000, None).await?;
    let in_adm: Option<f64> = redis
        .pool()
        .zscore(sale_keys.admitted(), taken.0.as_bytes().to_vec())
        .await?;
    assert_eq!(in_adm, None);
    // One left from the line itself (the waiting place), folded into the report's totals once.
    let left: Option<i64> = redis.pool().hget(sale_keys.report(), "left").await?;
    assert_eq!(left, Some(1));
    run(&redis, &sale_keys, &line, &quiet, 10_000, None).await?;
    let left: Option<i64> = redis.pool().hget(sale_keys.report(), "left").await?;
    assert_eq!(left, Some(1));
    env.cleanup().await
}

/// Joining a spread line (issue #22 §2), three calls: before the opening each new place gets a
/// random pre-open key on its own line shard and nothing in the sale's `q`; a rejoin keeps the
/// place and spends nothing; a user twice in one batch gets one place, counted once in the
/// report; after the opening places follow arrival order behind the pre-queue, and a join's
/// and a poll's positions count the other shards' arrivals since the last tick from their
/// numbers (exact here, before and after the next tick); an admission is the sale's, answered
/// to a rejoin; a solved challenge is spent once across the shards (the sale's slot judges
/// it); `max_queue_length` holds against the leader's count of the line.
#[tokio::test]
async fn joining_a_spread_line_places_each_buyer_on_their_shard_and_spends_on_the_sales_slot()
-> anyhow::Result<()> {
    use dropline_waitroom::line::tick::run;

    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let (sale, line, sale_keys) = spread_sale(
        &redis,
        SaleSpec {
            opens_in_ms: 1_500,
            ..SaleSpec::default()
        },
    )
    .await?;
    let quiet = quiet_tick();

    // The pre-queue: 30 buyers, and one of them twice in the same batch.
    let early: Vec<UserId> = (0..30).map(|_| UserId::new_v7()).collect();
    let mut asks: Vec<JoinAsk> = early
        .iter()
        .map(|&user| JoinAsk {
            user,
            verdict: Verdict::Open,
            code: None,
        })
        .collect();
    asks.push(asks[4].clone());
    let joined = sale.queue.join_many(&asks, &join_options()).await?;
    for (i, outcome) in joined.into_iter().enumerate() {
        match outcome? {
            Some(JoinOutcome::Standing { status, new }) => {
                assert_eq!(status.place, Place::Scheduled, "join {i}");
                assert_eq!(new, i < 30, "join {i}");
            }
            other => anyhow::bail!("join {i}: {other:?}"),
        }
    }
    let mut pre_keys = Vec::new();
    for user in &early {
        let score: Option<f64> = redis
            .pool()
            .zscore(&line.keys_of(*user).q, user.as_bytes().to_vec())
            .await?;
        let score = score.context("the place is on the user's own shard")?;
        pre_keys.push((score / 65_536.0).floor());
    }
    assert!(
        pre_keys.iter().all(|&k| k < 4_294_967_296.0),
        "{pre_keys:?}"
    );
    let in_sale_q: u64 = redis.pool().zcard(sale_keys.queue()).await?;
    assert_eq!(in_sale_q, 0);
    let joined_total: Option<i64> = redis.pool().hget(sale_keys.report(), "joined").await?;
    assert_eq!(joined_total, Some(30));
    let (again, new) = sale.join(early[7]).await?;
    assert_eq!((again.place, new), (Place::Scheduled, false));

    // Past the opening: arrivals in order, behind the whole pre-queue.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    run(&redis, &sale_keys, &line, &quiet, 10_000, None).await?;
    let late: Vec<UserId> = (0..10).map(|_| UserId::new_v7()).collect();
    for (n, user) in late.iter().enumerate() {
        let (status, new) = sale.join(*user).await?;
        assert!(new);
        // The curves count the line as of the last tick; the arrivals since, on every shard,
        // are counted from their numbers (line_since).
        assert_eq!(
            status.place,
            Place::Waiting {
                position: 31 + n as u64
            },
            "arrival {n}"
        );
    }
    for (n, user) in late.iter().enumerate() {
        assert_eq!(
            sale.place(*user).await?,
            Place::Waiting {
                position: 31 + n as u64
            },
            "a poll before the next tick"
        );
    }
    run(&redis, &sale_keys, &line, &quiet, 10_000, None).await?;
    for (n, user) in late.iter().enumerate() {
        assert_eq!(
            sale.place(*user).await?,
            Place::Waiting {
                position: 31 + n as u64
            }
        );
    }
    // The line's head is the pre-queue, in its drawn order: positions 1..=30 each once.
    let mut positions = Vec::new();
    for user in &early {
        match sale.place(*user).await? {
            Place::Waiting { position } => positions.push(position),
            other => anyhow::bail!("{other:?}"),
        }
    }
    positions.sort_unstable();
    assert_eq!(positions, (1..=30).collect::<Vec<u64>>());

    // Admitted on the sale's slot: a rejoin says so.
    let tick = spread_tick(&redis, &sale_keys, &line).await?;
    assert_eq!(tick.admitted, 30, "{tick:?}");
    let (status, new) = sale.join(early[0]).await?;
    assert!(matches!(status.place, Place::Admitted { .. }), "{status:?}");
    assert!(!new);

    // Proof of work on: one solved challenge makes one place, whichever shard its users are on.
    sale.set_cfg("pow_difficulty", 8).await?;
    let expires_at_ms = redis_now_ms(&redis).await? as u64 + 60_000;
    let solved = Verdict::PowSolved {
        spent_id: "a1b2c3d4e5f60718".to_owned(),
        expires_at_ms,
    };
    let (first, second) = (UserId::new_v7(), UserId::new_v7());
    let outcome = sale
        .queue
        .join_through(first, &join_options(), &solved, None)
        .await?;
    assert!(
        matches!(outcome, Some(JoinOutcome::Standing { new: true, .. })),
        "{outcome:?}"
    );
    let outcome = sale
        .queue
        .join_through(second, &join_options(), &solved, None)
        .await?;
    assert_eq!(outcome, Some(JoinOutcome::Refused(Refusal::PowSpent)));
    sale.set_cfg("pow_difficulty", 0).await?;

    // max_queue_length against the leader's count: 11 wait now.
    run(&redis, &sale_keys, &line, &quiet, 10_000, None).await?;
    let options = JoinOptions {
        max_queue_length: 11,
        ..join_options()
    };
    let outcome = sale.queue.join(UserId::new_v7(), &options).await?;
    assert!(
        matches!(
            outcome,
            Some(JoinOutcome::QueueFull {
                queue_length: 11,
                ..
            })
        ),
        "{outcome:?}"
    );
    env.cleanup().await
}

/// On a spread line the shards lose places without reaching the sale's `wt`, so the join that
/// makes a new place removes a stale entry there: a buyer who lost a sampled place and joins
/// again unsampled has no entry (timed from the checkpoints, from the new join), one sampled
/// again has a fresh one.
#[tokio::test]
async fn a_spread_lines_new_place_does_not_inherit_a_lost_places_report_entry() -> anyhow::Result<()>
{
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let (sale, line, sale_keys) = spread_sale(&redis, SaleSpec::default()).await?;
    let b: Vec<UserId> = (0..2).map(|_| UserId::new_v7()).collect();
    for &u in &b {
        let (status, new) = sale.join(u).await?;
        assert!(new, "{status:?}");
        assert!(
            report_entry(&sale, u).await?.is_some(),
            "a short line samples every place"
        );
    }
    // Both silent past the grace on their shards; the leader last counted 10,000 waiting.
    common::silence_in_sale(&redis, sale.id, &b, 3).await?;
    let _: i64 = redis
        .pool()
        .hset(sale_keys.room(), ("line_length", 10_000))
        .await?;
    rejoin_past_the_grace_one_sampled(&sale, &b).await?;
    for &u in &b {
        let place: Option<f64> = redis
            .pool()
            .zscore(&line.keys_of(u).q, u.as_bytes().to_vec())
            .await?;
        assert!(place.is_some(), "placed on its shard");
    }
    env.cleanup().await
}

/// A buyer whose admission lapsed joins a spread line again and gets a new place at once: the
/// shard's copy of the lapsed admission (which the reaper would drop within a second) does not
/// stand in the way, and the join spends one arrival number, not one per try. A pending entry
/// (a place a tick took and has not settled) and a live copy still keep their user out of q.
#[tokio::test]
async fn a_lapsed_admission_on_a_spread_line_does_not_block_joining_again() -> anyhow::Result<()> {
    use dropline_waitroom::line::tick::{TickParams, run};

    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    let (sale, line, sale_keys) = spread_sale(&redis, SaleSpec::default()).await?;
    let users: Vec<UserId> = (0..3).map(|_| UserId::new_v7()).collect();
    for &user in &users {
        let (status, new) = sale.join(user).await?;
        assert!(new, "{status:?}");
    }
    run(&redis, &sale_keys, &line, &quiet_tick(), 10_000, None).await?;
    let short = TickParams {
        window: Duration::from_millis(300),
        want: 1,
        ..spread_tick_params()
    };
    let tick = run(&redis, &sale_keys, &line, &short, 10_000, None).await?;
    assert_eq!(tick.admitted, 1, "{tick:?}");
    let first = users[0];
    assert!(
        matches!(sale.place(first).await?, Place::Admitted { .. }),
        "admitted first"
    );
    let copy = line.keys_of(first).outbox.clone();
    let held: Option<f64> = redis
        .pool()
        .zscore(&copy, first.as_bytes().to_vec())
        .await?;
    assert!(held.is_some_and(|at| at > 0.0), "a settled copy: {held:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(sale.place(first).await?, Place::NotQueued, "lapsed");

    // No reaper has run: the shard still holds the lapsed copy.
    let seq_before: Option<i64> = redis.pool().get(sale_keys.queue_seq()).await?;
    let (status, new) = sale.join(first).await?;
    assert!(new, "a new place: {status:?}");
    assert_eq!(
        status.place,
        Place::Waiting { position: 3 },
        "behind the two still waiting"
    );
    let seq_after: Option<i64> = redis.pool().get(sale_keys.queue_seq()).await?;
    assert_eq!(
        seq_after.unwrap_or(0) - seq_before.unwrap_or(0),
        1,
        "one arrival number spent"
    );
    let held: Option<f64> = redis
        .pool()
        .zscore(&copy, first.as_bytes().to_vec())
        .await?;
    assert_eq!(held, None, "the lapsed copy is gone");
    let (again, new) = sale.join(first).await?;
    assert_eq!((again.place, new), (Place::Waiting { position: 3 }, false));
    assert_eq!(sale.place(first).await?, Place::Waiting { position: 3 });

    // wr_line_place.lua itself, for users who got a ladm entry between a join's first read
    // and its last call: a pending entry (a place a tick took, not yet written into adm) and a
    // live copy (an admission the slot made since, or one the order side ended, until the
    // next tick's sync) keep their user out of q; a lapsed copy is removed and the user placed.
    let now = redis_now_ms(&redis).await? as f64;
    let seed = ["open", "0", "0", "1", "", "", "0", "-1", "0", "0"];
    for (held, placed) in [(-1.0e9, false), (now + 60_000.0, false), (now - 1.0, true)] {
        let user = UserId::new_v7();
        let keys = line.keys_of(user);
        let _: i64 = redis
            .pool()
            .zadd(
                &keys.outbox,
                None,
                None,
                false,
                false,
                (held, user.as_bytes().to_vec()),
            )
            .await?;
        let mut args: Vec<fred::types::Value> = seed.iter().map(|v| (*v).into()).collect();
        args.push(fred::types::Value::from(&user.as_bytes()[..]));
        args.push("123456".into());
        args.push("0".into());
        let reply: Vec<i64> = dropline_waitroom::scripts::WR_LINE_PLACE
            .run(&redis, keys.place_keys().to_vec(), args)
            .await?;
        assert_eq!(reply[0] == 1, placed, "ladm entry {held}: {reply:?}");
        let in_q: Option<f64> = redis
            .pool()
            .zscore(&keys.q, user.as_bytes().to_vec())
            .await?;
        assert_eq!(in_q.is_some(), placed, "ladm entry {held}");
        let left: Option<f64> = redis
            .pool()
            .zscore(&keys.outbox, user.as_bytes().to_vec())
            .await?;
        assert_eq!(left.is_none(), placed, "ladm entry {held}");
    }
    env.cleanup().await
}

/// A poll batch reads every place at once and writes the refreshed stamps at the end
/// (`poll_places` in lua/lib/prelude.lua), yet each user is answered as if alone and in order:
/// a user twice in a batch sees what their first poll did (a place brought back from skip is
/// counted once, a lost place stays lost, a kept place answers alike), the places after a move
/// count it, and every live place polled has its stamp refreshed, its order key kept to the
/// unit. On one slot and on a line spread over three shards.
#[tokio::test]
async fn a_user_twice_in_a_poll_batch_sees_what_the_first_poll_did() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = connect(&env).await?;
    for spread in [false, true] {
        let (sale, line, b) = if spread {
            let (sale, line, keys) = spread_sale(&redis, SaleSpec::default()).await?;
            let b: Vec<UserId> = spread_arrivals(&redis, sale.id, &line, 4)
                .await?
                .into_iter()
                .map(|p| p.0)
                .collect();
            (sale, Some((line, keys)), b)
        } else {
            let sale = Sale::arm(&redis, SaleSpec::default()).await?;
            let b = users(4);
            for &u in &b {
                sale.join(u).await?;
            }
            (sale, None, b)
        };
        let keys_of = |user: UserId| match &line {
            Some((line, _)) => {
                let k = line.keys_of(user);
                (k.q.clone(), k.skip.clone(), k.meta.clone())
            }
            None => {
                let k = sale.queue.keys();
                (k.q.clone(), k.skip.clone(), k.wr.clone())
            }
        };
        // b1 skipped as the reaper does (same member and score, q -> skip), b3 silent past the
        // return grace, b2 silent for a few seconds (kept, its stamp refreshed by the poll).
        let (q1, skip1, _) = keys_of(b[1]);
        let id1 = b[1].as_bytes().to_vec();
        let score: f64 = redis.pool().zscore(&q1, id1.clone()).await?;
        let _: i64 = redis.pool().zrem(&q1, id1.clone()).await?;
        let () = redis
            .pool()
            .zadd(&skip1, None, None, false, false, (score, id1))
            .await?;
        common::silence_in_sale(&redis, sale.id, &[b[3]], GRACE.as_secs() + 100).await?;
        common::silence_in_sale(&redis, sale.id, &[b[2]], 5).await?;
        // b2's order key (the score's high bits), which its restamp must keep to the unit: the
        // new stamp goes to Redis as a Lua number (a spread line's keys are past 2^32, so its
        // scores are past 10^14, where Lua's own 14-digit number format would round).
        let (q2, _, _) = keys_of(b[2]);
        let b2_before: f64 = redis.pool().zscore(&q2, b[2].as_bytes().to_vec()).await?;
        if let Some((line, keys)) = &line {
            // What a poll of a spread line reads: the leader's count (b0, b2, b3) and curves.
            dropline_waitroom::line::tick::run(&redis, keys, line, &quiet_tick(), 10_000, None)
                .await?;
        }

        let batch = [b[1], b[1], b[3], b[3], b[2], b[0], b[2]];
        let answers = sale.queue.status_many(&batch, GRACE).await?;
        let got: Vec<(Place, u64)> = answers
            .iter()
            .map(|a| a.as_ref().map(|s| (s.place, s.queue_length)))
            .collect::<Option<_>>()
            .context("an armed sale answers every poll")?;
        // On a spread line b2 counts b1, brought back on another shard, only from the next
        // tick's curve (the documented lag of one tick).
        let b2 = match &line {
            Some((line, _)) if line.shard_of(b[1]) != line.shard_of(b[2]) => 2,
            _ => 3,
        };
        let places: Vec<Place> = got.iter().map(|g| g.0).collect();
        assert_eq!(
            places,
            vec![
                Place::Waiting { position: 2 },
                Place::Waiting { position: 2 },
                Place::NotQueued,
                Place::NotQueued,
                Place::Waiting { position: b2 },
                Place::Waiting { position: 1 },
                Place::Waiting { position: b2 },
            ],
            "spread: {spread}"
        );
        let lengths: Vec<u64> = got.iter().map(|g| g.1).collect();
        if line.is_none() {
            assert_eq!(lengths, vec![4, 4, 3, 3, 3, 3, 3]);
        } else {
            // A spread line's length is the tick's count (3) plus what a shard's call moved
            // itself: b1's second poll does not count the return again.
            assert_eq!(lengths[..2], [4, 4]);
        }

        // Each change was made once: one return, one loss, summed over the counters' hashes.
        let mut counted = (0, 0);
        let mut hashes: Vec<String> = b.iter().map(|u| keys_of(*u).2).collect();
        hashes.sort();
        hashes.dedup();
        for hash in hashes {
            let returned: Option<u64> = redis.pool().hget(&hash, "returned_total").await?;
            let abandoned: Option<u64> = redis.pool().hget(&hash, "abandoned_total").await?;
            counted.0 += returned.unwrap_or(0);
            counted.1 += abandoned.unwrap_or(0);
        }
        assert_eq!(counted, (1, 1), "returned, abandoned; spread: {spread}");
        // The live places polled have this second's stamp (a tick of slack), b1 in q again.
        let now_s = redis_now_ms(&redis).await? / 1000;
        for user in [b[0], b[1], b[2]] {
            let (q, skip, _) = keys_of(user);
            let id = user.as_bytes().to_vec();
            let score: Option<f64> = redis.pool().zscore(&q, id.clone()).await?;
            let stamp = score.context("a live place stays in q")? as i64 % 65_536;
            assert!(
                [now_s % 65_536, (now_s - 1) % 65_536].contains(&stamp),
                "stamp {stamp} at {now_s}; spread: {spread}"
            );
            let skipped: Option<f64> = redis.pool().zscore(&skip, id).await?;
            assert_eq!(skipped, None);
        }
        let b2_after: Option<f64> = redis.pool().zscore(&q2, b[2].as_bytes().to_vec()).await?;
        let b2_after = b2_after.context("b2's place stays in q")?;
        assert_ne!(
            b2_after, b2_before,
            "b2's stamp refreshed; spread: {spread}"
        );
        assert_eq!(
            (b2_after / 65_536.0).floor(),
            (b2_before / 65_536.0).floor(),
            "b2's order key kept; spread: {spread}"
        );
        if spread {
            assert!(
                b2_before > 1e14,
                "a spread line's arrival scores past 10^14"
            );
        }
        let (q3, skip3, _) = keys_of(b[3]);
        for key in [q3, skip3] {
            let gone: Option<f64> = redis.pool().zscore(&key, b[3].as_bytes().to_vec()).await?;
            assert_eq!(gone, None, "b3's lost place; spread: {spread}");
        }
    }
    env.cleanup().await
}
