//! The admitter (`dropline_waitroom::admitter`) against the machine's real Redis: the rate it
//! admits at, leadership and failover, pause, stock, `max_active`, the measured rate, the
//! reaper and the index of sales. Each test has its own key prefix ([`TestEnv`]), so the tests
//! run in parallel, each with its own admitters (a lease of 1 s, ticks of 100 ms).
//!
//! Rates are read from the Redis counter `admitted_total` by sampling it every 20 ms. Each
//! sample keeps the instants just before and just after its read, so the counter difference
//! between two samples covers at most the span from the first send to the second receive: the
//! rate bound is checked over that span, which can only make the check stricter. Fixed waits
//! appear only where a test shows that something does *not* happen (nobody admitted).

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use dropline_core::clients::redis::Redis;
use dropline_core::config::WaitroomConfig;
use dropline_core::ids::{ProductId, SaleId, UserId};
use dropline_core::sale::{self, SaleConfig, SaleState, SettingsUpdate};
use dropline_testkit::{TestEnv, eventually};
use dropline_waitroom::admitter::{self, Admitter, RATE_FIELD, Watch};
use dropline_waitroom::edge;
use dropline_waitroom::queue::{
    AdmitLimit, AdmitParams, AdmitRate, JoinOptions, JoinOutcome, Place, Stats, WaitQueue, member,
};
use fred::prelude::*;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod common;

const TICK: Duration = Duration::from_millis(100);
const LEASE: Duration = Duration::from_secs(1);
const ABANDON: Duration = Duration::from_secs(120);
/// The return grace of joins and polls (the default of `waitroom.return_grace_seconds`).
const GRACE: Duration = Duration::from_secs(1_800);

/// One test's world: its own key prefix, with short lease and tick.
struct World {
    env: TestEnv,
    redis: Redis,
}

impl World {
    async fn new(extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut overrides = vec![
            ("WAITROOM__LEASE_SECONDS", "1"),
            ("WAITROOM__ADMIT_TICK_MS", "100"),
            ("WAITROOM__REAP_INTERVAL_MS", "1000"),
        ];
        overrides.extend_from_slice(extra);
        let env = TestEnv::with_overrides(&overrides)?;
        let redis = Redis::connect(&env.config.redis).await?;
        Ok(Self { env, redis })
    }

    fn config(&self) -> WaitroomConfig {
        self.env.config.waitroom.clone()
    }

    /// A candidate with its own Redis connection, as another replica would have.
    async fn candidate(&self, holder: &str) -> anyhow::Result<Candidate> {
        let redis = Redis::connect(&self.env.config.redis).await?;
        let admitter = Admitter::new(redis, &self.config(), holder.to_owned());
        let watch = admitter.watch();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(admitter.run(shutdown.clone()));
        Ok(Candidate {
            watch,
            shutdown,
            task,
        })
    }

    async fn lease_holder(&self) -> anyhow::Result<Option<String>> {
        Ok(self
            .redis
            .pool()
            .get(admitter::lease_key(&self.redis))
            .await?)
    }

    async fn arm(&self, spec: Spec) -> anyhow::Result<TestSale> {
        let id = SaleId::new_v7();
        let config = SaleConfig {
            product_id: ProductId::new_v7(),
            price: 1_000,
            currency: "KRW".into(),
            stock_total: spec.stock,
            opens_at: Utc::now() - chrono::Duration::seconds(10),
            closes_at: None,
            per_user_limit: 1,
            hold_seconds: 600,
            admit_per_second: spec.rate,
            max_active: spec.max_active,
            paused: spec.paused,
            closed: false,
            line_shards: 1,
        };
        anyhow::ensure!(sale::arm(&self.redis, id, &config).await?, "armed already");
        common::spread_as_asked(&self.redis, id).await?;
        Ok(TestSale {
            id,
            redis: self.redis.clone(),
            queue: WaitQueue::new(&self.redis, id),
        })
    }

    async fn finish(self, candidates: Vec<Candidate>) -> anyhow::Result<()> {
        for c in candidates {
            c.stop().await?;
        }
        self.redis.quit().await;
        self.env.cleanup().await
    }
}

struct Spec {
    rate: i64,
    stock: i64,
    max_active: Option<i64>,
    paused: bool,
}

impl Spec {
    /// The default sale, admitting `rate` a second.
    fn at(rate: i64) -> Self {
        Self {
            rate,
            ..Self::default()
        }
    }
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            rate: 50,
            stock: 100_000,
            max_active: None,
            paused: false,
        }
    }
}

struct Candidate {
    watch: Watch,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Candidate {
    /// Graceful stop: the task ends, releasing the lease if it leads.
    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .context("the admitter did not stop within 5 s")??;
        Ok(())
    }

    /// Crash: the task is dropped where it stands; the lease is not released.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

struct TestSale {
    id: SaleId,
    redis: Redis,
    queue: WaitQueue,
}

impl TestSale {
    /// `n` buyers join, one after the other (so the line is in this order).
    async fn fill(&self, n: usize) -> anyhow::Result<Vec<UserId>> {
        let options = JoinOptions {
            max_queue_length: 0,
            return_grace: GRACE,
            code_failures_per_hour: 10,
        };
        let mut users = Vec::with_capacity(n);
        for _ in 0..n {
            let user = UserId::new_v7();
            match self.queue.join(user, &options).await? {
                Some(JoinOutcome::Standing { new: true, .. }) => users.push(user),
                other => anyhow::bail!("join: {other:?}"),
            }
        }
        Ok(users)
    }

    async fn wr_field(&self, field: &str) -> anyhow::Result<Option<i64>> {
        Ok(self.redis.pool().hget(&self.queue.keys().wr, field).await?)
    }

    async fn admitted_total(&self) -> anyhow::Result<u64> {
        Ok(self.wr_field("admitted_total").await?.unwrap_or(0) as u64)
    }

    async fn stats(&self) -> anyhow::Result<Stats> {
        self.queue.stats().await?.context("stats: sale not armed")
    }

    async fn place(&self, user: UserId) -> anyhow::Result<Place> {
        Ok(self
            .queue
            .status(user, GRACE)
            .await?
            .context("status: sale not armed")?
            .place)
    }

    /// Waits (2 s at most) until each of `users` reads as admitted. On a spread line a tick
    /// counts its admissions (`admitted_total`) a step before the shards' copies settle, and a
    /// poll in between answers such a place as waiting at the head (README "A line that outgrows
    /// one Redis"), so a place read just after the count may not show the admission yet.
    async fn wait_admitted(&self, users: &[UserId]) -> anyhow::Result<()> {
        wait_until(Duration::from_secs(2), "admitted", || async {
            for &user in users {
                if !matches!(self.place(user).await?, Place::Admitted { .. }) {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await
    }

    async fn set(&self, name: &str, value: i64) -> anyhow::Result<()> {
        let _: () = self
            .redis
            .pool()
            .set(self.redis.sale_key(self.id, name), value, None, None, false)
            .await?;
        Ok(())
    }

    async fn incr(&self, name: &str, by: i64) -> anyhow::Result<()> {
        let _: i64 = self
            .redis
            .pool()
            .incr_by(self.redis.sale_key(self.id, name), by)
            .await?;
        Ok(())
    }

    /// The order side's hooks (see `queue.rs`): a buyer with a live order stays active...
    async fn hold_active(&self, user: UserId) -> anyhow::Result<()> {
        let t: Vec<i64> = self
            .redis
            .pool()
            .custom(fred::cmd!("TIME"), Vec::<String>::new())
            .await?;
        let deadline = t.first().context("TIME")? * 1000 + 600_000;
        let _: i64 = self
            .redis
            .pool()
            .zadd(
                &self.queue.keys().adm,
                None,
                None,
                false,
                false,
                (deadline as f64, Value::from(&member(user)[..])),
            )
            .await?;
        Ok(())
    }

    /// ...until the order ends, which frees the slot.
    async fn order_ended(&self, user: UserId) -> anyhow::Result<()> {
        let _: i64 = self
            .redis
            .pool()
            .zrem(&self.queue.keys().adm, Value::from(&member(user)[..]))
            .await?;
        Ok(())
    }

    async fn update(&self, update: SettingsUpdate) -> anyhow::Result<()> {
        anyhow::ensure!(sale::update_settings(&self.redis, self.id, &update).await?);
        Ok(())
    }

    async fn indexed(&self) -> anyhow::Result<bool> {
        Ok(sale::indexed(&self.redis).await?.contains(&self.id))
    }
}

/// One read of `admitted_total`, between `sent` and `received`.
#[derive(Debug, Clone, Copy)]
struct Sample {
    sent: Instant,
    received: Instant,
    count: u64,
}

/// Samples `admitted_total` every 20 ms for `span`.
async fn sample(sale: &TestSale, span: Duration) -> anyhow::Result<Vec<Sample>> {
    let until = Instant::now() + span;
    let mut samples = Vec::new();
    loop {
        let sent = Instant::now();
        let count = sale.admitted_total().await?;
        let received = Instant::now();
        samples.push(Sample {
            sent,
            received,
            count,
        });
        if received >= until {
            return Ok(samples);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Samples in a task of its own (so the test can act meanwhile) until `stop` is cancelled.
fn sample_in_background(
    sale: &TestSale,
    stop: CancellationToken,
) -> JoinHandle<anyhow::Result<Vec<Sample>>> {
    let redis = sale.redis.clone();
    let wr = sale.queue.keys().wr.clone();
    tokio::spawn(async move {
        let mut samples = Vec::new();
        while !stop.is_cancelled() {
            let sent = Instant::now();
            let count: Option<i64> = redis.pool().hget(&wr, "admitted_total").await?;
            let received = Instant::now();
            samples.push(Sample {
                sent,
                received,
                count: count.unwrap_or(0) as u64,
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(samples)
    })
}

/// The admission rate over the samples: (count, seconds between the middles of the two reads).
fn rate_over(samples: &[Sample]) -> anyhow::Result<(u64, f64)> {
    let (first, last) = (
        samples.first().context("no samples")?,
        samples.last().context("no samples")?,
    );
    let middle = |s: &Sample| s.sent + (s.received - s.sent) / 2;
    Ok((
        last.count - first.count,
        (middle(last) - middle(first)).as_secs_f64(),
    ))
}

/// The limiter's promise, checked on every pair of samples: over any span of L seconds at most
/// `rate × (L + tolerance + carry)` admissions, where the tolerance is one tick plus one
/// admission interval (a burst of one tick's worth and one) and the carry half a tick (what a
/// late tick after a full one may catch up). Returns the most admitted within any sampled span
/// of at most 1 s.
fn check_rate_bound(samples: &[Sample], rate: f64) -> anyhow::Result<u64> {
    let tolerance = TICK.as_secs_f64() * 1.5 + 1.0 / rate;
    let mut most_in_a_second = 0;
    for (i, a) in samples.iter().enumerate() {
        for b in &samples[i + 1..] {
            let span = (b.received - a.sent).as_secs_f64();
            let admitted = b.count - a.count;
            let bound = rate * (span + tolerance);
            anyhow::ensure!(
                admitted as f64 <= bound + 1e-6,
                "{admitted} admitted within {span:.3} s: more than {rate}/s allows ({bound:.2})"
            );
            if span <= 1.0 {
                most_in_a_second = most_in_a_second.max(admitted);
            }
        }
    }
    Ok(most_in_a_second)
}

async fn wait_for_leader(watch: &Watch, limit: Duration) -> anyhow::Result<()> {
    let w = watch.clone();
    anyhow::ensure!(
        eventually(limit, || {
            let w = w.clone();
            async move { w.is_leader() }
        })
        .await,
        "no leadership within {limit:?}"
    );
    Ok(())
}

/// Waits until `check` holds, polling every 50 ms, or fails with `what`.
async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await? {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue #4: the admitted count over 10 s is within ±5% of `admit_per_second`, no span goes
/// over the rate by more than the burst (one tick's worth and one), the measured rate in `wr`
/// converges on the configured one, and the metric agrees with Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admits_at_the_configured_rate_for_ten_seconds() -> anyhow::Result<()> {
    let metrics = dropline_core::telemetry::metrics_handle();
    let world = World::new(&[]).await?;
    let sale = world.arm(Spec::default()).await?;
    sale.fill(1_000).await?;
    let a = world.candidate("a").await?;
    wait_until(Duration::from_secs(3), "first admission", || async {
        Ok(sale.admitted_total().await? > 0)
    })
    .await?;

    let samples = sample(&sale, Duration::from_secs(10)).await?;
    let (admitted, seconds) = rate_over(&samples)?;
    let expected = 50.0 * seconds;
    let most = check_rate_bound(&samples, 50.0)?;
    println!(
        "{admitted} admitted in {seconds:.3} s (expected {expected:.1}); at most {most} in any second"
    );
    assert!(
        (admitted as f64 - expected).abs() <= 0.05 * expected,
        "{admitted} admitted in {seconds:.3} s, expected {expected:.1} ± 5%"
    );

    let milli = sale
        .wr_field(RATE_FIELD)
        .await?
        .context("no measured rate")?;
    assert!(
        (47_500..=52_500).contains(&milli),
        "measured rate {milli} milli/s, expected 50000 ± 5%"
    );

    a.stop().await?;
    let total = sale.admitted_total().await?;
    let metric_line = format!("dropline_waitroom_admitted_total{{sale=\"{}\"}} ", sale.id);
    let rendered = metrics.render();
    let metric: u64 = rendered
        .lines()
        .find_map(|l| l.strip_prefix(&metric_line))
        .context("no admitted_total metric for the sale")?
        .trim()
        .parse()?;
    assert_eq!(metric, total, "the metric counts what Redis counts");
    assert!(rendered.contains(&format!(
        "dropline_waitroom_queue_length{{sale=\"{}\"}}",
        sale.id
    )));
    assert!(rendered.contains("dropline_waitroom_admit_tick_seconds"));
    // The leader reaped at least once in the seconds above (every reap_interval_ms).
    assert!(rendered.contains("dropline_waitroom_reap_round_seconds"));
    world.finish(vec![]).await
}

/// Two candidates at once: exactly one leads, only it admits, and the rate is not doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_candidate_leads_and_admits() -> anyhow::Result<()> {
    let world = World::new(&[]).await?;
    let sale = world.arm(Spec::default()).await?;
    sale.fill(500).await?;
    let (a, b) = tokio::try_join!(world.candidate("a"), world.candidate("b"))?;
    wait_until(Duration::from_secs(3), "a leader", || async {
        Ok(a.watch.is_leader() || b.watch.is_leader())
    })
    .await?;

    let stop = CancellationToken::new();
    let sampler = sample_in_background(&sale, stop.clone());
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert!(
            !(a.watch.is_leader() && b.watch.is_leader()),
            "two leaders at once"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.cancel();
    let samples = sampler.await??;
    check_rate_bound(&samples, 50.0)?;
    let (admitted, seconds) = rate_over(&samples)?;
    let expected = 50.0 * seconds;
    assert!(
        (admitted as f64 - expected).abs() <= 0.05 * expected + 5.0,
        "{admitted} admitted in {seconds:.3} s with two candidates, expected {expected:.1}"
    );
    let (leader, other) = if a.watch.is_leader() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert!(leader.watch.admitted() > 0);
    assert_eq!(other.watch.admitted(), 0, "a follower admitted");
    let holder = world.lease_holder().await?;
    let expected_holder = if a.watch.is_leader() { "a" } else { "b" };
    assert_eq!(holder.as_deref(), Some(expected_holder));
    world.finish(vec![a, b]).await
}

/// The leader dies without releasing the lease: the other candidate takes over within two
/// lease periods, admission goes on, and the rate bound holds across the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_leader_is_replaced_within_two_lease_periods() -> anyhow::Result<()> {
    let world = World::new(&[]).await?;
    let sale = world.arm(Spec::default()).await?;
    sale.fill(500).await?;
    let a = world.candidate("a").await?;
    wait_for_leader(&a.watch, Duration::from_secs(3)).await?;
    let b = world.candidate("b").await?;
    let stop = CancellationToken::new();
    let sampler = sample_in_background(&sale, stop.clone());
    wait_until(Duration::from_secs(3), "admissions by a", || async {
        Ok(a.watch.admitted() >= 20)
    })
    .await?;
    assert!(!b.watch.is_leader());
    assert_eq!(b.watch.admitted(), 0);

    a.kill().await;
    let killed = Instant::now();
    wait_for_leader(&b.watch, 2 * LEASE).await?;
    let takeover = killed.elapsed();
    assert_eq!(world.lease_holder().await?.as_deref(), Some("b"));
    let before = sale.admitted_total().await?;
    wait_until(Duration::from_secs(2), "admissions by b", || async {
        Ok(b.watch.admitted() >= 20 && sale.admitted_total().await? >= before + 20)
    })
    .await?;
    stop.cancel();
    let samples = sampler.await??;
    let most = check_rate_bound(&samples, 50.0)?;
    println!("takeover after {takeover:?}; at most {most} admitted in any second");
    world.finish(vec![b]).await
}

/// At shutdown the leader releases the lease: the other candidate leads at its next tick, far
/// sooner than the lease (3 s here) would expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_shuts_down_hands_over_at_once() -> anyhow::Result<()> {
    let world = World::new(&[("WAITROOM__LEASE_SECONDS", "3")]).await?;
    let a = world.candidate("a").await?;
    wait_for_leader(&a.watch, Duration::from_secs(3)).await?;
    let b = world.candidate("b").await?;
    tokio::time::sleep(3 * TICK).await;
    assert!(!b.watch.is_leader());
    let a_watch = a.watch.clone();
    a.stop().await?;
    let stopped = Instant::now();
    assert!(!a_watch.is_leader());
    wait_for_leader(&b.watch, Duration::from_secs(1)).await?;
    assert!(
        stopped.elapsed() < Duration::from_millis(600),
        "took {:?}",
        stopped.elapsed()
    );
    assert_eq!(world.lease_holder().await?.as_deref(), Some("b"));
    world.finish(vec![b]).await
}

/// Pause admits nobody and keeps every place; resume goes on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_admission_without_losing_places() -> anyhow::Result<()> {
    let world = World::new(&[]).await?;
    let sale = world.arm(Spec::default()).await?;
    let users = sale.fill(200).await?;
    let a = world.candidate("a").await?;
    wait_until(Duration::from_secs(3), "first admissions", || async {
        Ok(sale.admitted_total().await? >= 10)
    })
    .await?;
    let pause = SettingsUpdate {
        paused: Some(true),
        ..SettingsUpdate::default()
    };
    sale.update(pause).await?;
    // Every admission tick from here on sees the pause (Redis runs one call at a time; on a
    // spread line the commit on the sale's slot checks the state again). A spread line's tick
    // writes the line's length a step after it counts its admissions, so a tick that committed
    // just before the pause may still owe its length: wait until every one of the 200 places
    // is counted once, admitted, waiting or skipped.
    wait_until(
        Duration::from_secs(2),
        "the last tick's figures",
        || async {
            let stats = sale.stats().await?;
            Ok(stats.admitted_total + stats.queue_length + stats.skipped == 200)
        },
    )
    .await?;
    let admitted = sale.admitted_total().await?;
    let queued = sale.stats().await?.queue_length;
    let last = *users.last().context("users")?;
    let Place::Waiting { position } = sale.place(last).await? else {
        anyhow::bail!("the last buyer is not waiting");
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = sale.stats().await?;
    assert_eq!(stats.state, SaleState::Paused);
    assert_eq!(stats.admitted_total, admitted, "admitted while paused");
    assert_eq!(stats.queue_length, queued, "places lost while paused");
    assert_eq!(sale.place(last).await?, Place::Waiting { position });

    let resume = SettingsUpdate {
        paused: Some(false),
        ..SettingsUpdate::default()
    };
    sale.update(resume).await?;
    wait_until(Duration::from_secs(2), "admission resumed", || async {
        Ok(sale.admitted_total().await? >= admitted + 10)
    })
    .await?;
    match sale.place(last).await? {
        Place::Waiting { position: now } => assert!(now < position, "{now} !< {position}"),
        other => anyhow::bail!("the last buyer: {other:?}"),
    }
    world.finish(vec![a]).await
}

/// The stock rule: nobody is admitted for stock the buyers already in can still claim; stock
/// coming back (an order expires) admits again; sold out admits nobody and keeps the line;
/// stock added then resumes admission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_follows_the_stock() -> anyhow::Result<()> {
    let world = World::new(&[]).await?;
    let sale = world
        .arm(Spec {
            stock: 2,
            ..Spec::default()
        })
        .await?;
    // Two earlier buyers hold the two units in live orders.
    let (x, y) = (UserId::new_v7(), UserId::new_v7());
    sale.hold_active(x).await?;
    sale.hold_active(y).await?;
    sale.set("avail", 0).await?;
    sale.set("held", 2).await?;
    let users = sale.fill(10).await?;
    let a = world.candidate("a").await?;
    wait_for_leader(&a.watch, Duration::from_secs(3)).await?;
    tokio::time::sleep(5 * TICK).await;
    assert_eq!(
        sale.admitted_total().await?,
        0,
        "admitted with no stock to claim"
    );
    assert_eq!(sale.stats().await?.state, SaleState::Open);

    // x's order expires: its unit is back, one buyer more is admitted, and only one.
    sale.incr("held", -1).await?;
    sale.incr("avail", 1).await?;
    sale.order_ended(x).await?;
    wait_until(Duration::from_secs(2), "one admission", || async {
        Ok(sale.admitted_total().await? == 1)
    })
    .await?;
    sale.wait_admitted(&users[..1]).await?;
    tokio::time::sleep(5 * TICK).await;
    assert_eq!(sale.admitted_total().await?, 1);

    // y and the newly admitted buyer pay: nothing left, nothing held: sold out.
    sale.incr("held", -1).await?;
    sale.incr("sold", 1).await?;
    sale.order_ended(y).await?;
    sale.incr("avail", -1).await?;
    sale.incr("sold", 1).await?;
    sale.order_ended(users[0]).await?;
    tokio::time::sleep(5 * TICK).await;
    let stats = sale.stats().await?;
    assert_eq!(stats.state, SaleState::SoldOut);
    assert_eq!((stats.admitted_total, stats.queue_length), (1, 9));
    assert_eq!(sale.place(users[1]).await?, Place::SoldOut);

    // Three units come back: three more buyers are admitted, in order.
    sale.incr("avail", 3).await?;
    wait_until(Duration::from_secs(2), "three more admissions", || async {
        Ok(sale.admitted_total().await? == 4)
    })
    .await?;
    sale.wait_admitted(&users[1..4]).await?;
    assert_eq!(sale.place(users[4]).await?, Place::Waiting { position: 1 });
    world.finish(vec![a]).await
}

/// `max_active` caps the buyers in at once; a slot frees when an order ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_active_is_respected() -> anyhow::Result<()> {
    let world = World::new(&[]).await?;
    let sale = world
        .arm(Spec {
            max_active: Some(5),
            ..Spec::default()
        })
        .await?;
    let users = sale.fill(30).await?;
    let a = world.candidate("a").await?;
    wait_until(Duration::from_secs(3), "five admissions", || async {
        Ok(sale.admitted_total().await? == 5)
    })
    .await?;
    tokio::time::sleep(5 * TICK).await;
    let stats = sale.stats().await?;
    assert_eq!((stats.admitted_total, stats.active), (5, 5));

    sale.order_ended(users[0]).await?;
    sale.order_ended(users[1]).await?;
    wait_until(Duration::from_secs(2), "two more admissions", || async {
        Ok(sale.admitted_total().await? == 7)
    })
    .await?;
    tokio::time::sleep(5 * TICK).await;
    let stats = sale.stats().await?;
    assert_eq!((stats.admitted_total, stats.active), (7, 5));
    world.finish(vec![a]).await
}

/// An admin change of `admit_per_second` takes effect at once, and the measured rate follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_change_takes_effect_at_the_next_tick() -> anyhow::Result<()> {
    let world = World::new(&[]).await?;
    let sale = world.arm(Spec::at(20)).await?;
    sale.fill(800).await?;
    let a = world.candidate("a").await?;
    wait_until(Duration::from_secs(3), "first admission", || async {
        Ok(sale.admitted_total().await? > 0)
    })
    .await?;
    let slow = sample(&sale, Duration::from_secs(2)).await?;
    check_rate_bound(&slow, 20.0)?;
    let faster = SettingsUpdate {
        admit_per_second: Some(80),
        ..SettingsUpdate::default()
    };
    sale.update(faster).await?;
    let fast = sample(&sale, Duration::from_secs(3)).await?;
    check_rate_bound(&fast, 80.0)?;
    for (samples, rate) in [(&slow, 20.0), (&fast, 80.0)] {
        let (admitted, seconds) = rate_over(samples)?;
        let expected = rate * seconds;
        // One tick's burst either way (the change lands inside a tick) and 5%.
        assert!(
            (admitted as f64 - expected).abs() <= 0.05 * expected + rate * TICK.as_secs_f64(),
            "{admitted} admitted in {seconds:.3} s at {rate}/s, expected {expected:.1}"
        );
    }
    // The measured rate has moved most of the way from 20 to 80 in 3 s (time constant 5 s).
    let milli = sale
        .wr_field(RATE_FIELD)
        .await?
        .context("no measured rate")?;
    assert!(
        (45_000..=82_000).contains(&milli),
        "measured rate {milli} milli/s after the change to 80/s"
    );
    world.finish(vec![a]).await
}

/// A closed sale leaves the index once its line is empty, not before; open sales stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_sales_with_an_empty_line_leave_the_index() -> anyhow::Result<()> {
    let world = World::new(&[]).await?;
    let drained = world.arm(Spec::default()).await?;
    let waiting = world.arm(Spec::default()).await?;
    let open = world.arm(Spec::default()).await?;
    let close = SettingsUpdate {
        closed: Some(true),
        ..SettingsUpdate::default()
    };
    waiting.fill(1).await?;
    drained.update(close.clone()).await?;
    waiting.update(close).await?;
    let a = world.candidate("a").await?;
    wait_until(
        Duration::from_secs(3),
        "the drained sale unindexed",
        || async { Ok(!drained.indexed().await?) },
    )
    .await?;
    // Handed to the expiry worker's watch, whose holds may outlive the line (#17 hole 10).
    let watched: Vec<String> = world
        .redis
        .pool()
        .smembers(world.redis.key("expiry:sales"))
        .await?;
    assert_eq!(
        watched,
        vec![drained.id.to_string()],
        "the unindexed sale is not in the expiry worker's watch"
    );
    tokio::time::sleep(5 * TICK).await;
    assert!(
        waiting.indexed().await?,
        "a closed sale with a line left the index"
    );
    assert!(open.indexed().await?, "an open sale left the index");
    world.finish(vec![a]).await
}

/// The reaper skips silent waiters deep in the line, removes their places once silent past
/// the return grace, and removes lapsed admissions; buyers who poll stay. (The sale is paused,
/// so admission ticks do not clean the head themselves.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_skips_silent_buyers_then_removes_them_past_the_grace() -> anyhow::Result<()> {
    let world = World::new(&[
        ("WAITROOM__ABANDON_AFTER_SECONDS", "1"),
        ("WAITROOM__RETURN_GRACE_SECONDS", "2"),
        ("WAITROOM__REAP_INTERVAL_MS", "200"),
    ])
    .await?;
    let sale = world
        .arm(Spec {
            paused: true,
            ..Spec::default()
        })
        .await?;
    let users = sale.fill(30).await?;
    let live = users[15];
    let lapsed: Vec<Value> = (0..3)
        .map(|_| Value::from(&member(UserId::new_v7())[..]))
        .collect();
    for user in &lapsed {
        let _: i64 = sale
            .redis
            .pool()
            .zadd(
                &sale.queue.keys().adm,
                None,
                None,
                false,
                false,
                (1_000.0, user.clone()),
            )
            .await?;
    }
    let a = world.candidate("a").await?;
    let grace = Duration::from_secs(2);
    let seen_skipped = std::cell::Cell::new(0);
    wait_until(Duration::from_secs(8), "silent buyers reaped", || async {
        // The live buyer polls (every 50 ms here), well inside abandon_after.
        let place = sale
            .queue
            .status(live, grace)
            .await?
            .context("status")?
            .place;
        anyhow::ensure!(
            matches!(place, Place::Waiting { .. }),
            "the live buyer: {place:?}"
        );
        let stats = sale.stats().await?;
        seen_skipped.set(seen_skipped.get().max(stats.skipped));
        let adm: i64 = sale.redis.pool().zcard(&sale.queue.keys().adm).await?;
        Ok(
            stats.queue_length == 1
                && stats.skipped == 0
                && stats.abandoned_total == 29
                && adm == 0,
        )
    })
    .await?;
    assert!(
        seen_skipped.get() > 0,
        "the silent were skipped before they were removed"
    );
    assert_eq!(sale.place(live).await?, Place::Waiting { position: 1 });
    assert_eq!(sale.place(users[0]).await?, Place::NotQueued);
    world.finish(vec![a]).await
}

/// While nobody can be admitted (`max_active` full), every tick still skips the silent places at
/// the head, so a live buyer behind them is told their honest position within a tick of the
/// silence, not when the reaper comes round (its interval here is longer than the test). On a
/// spread line each shard's head is walked with a budget of 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sale_still_skips_the_silent_head_every_tick() -> anyhow::Result<()> {
    let world = World::new(&[
        ("WAITROOM__ABANDON_AFTER_SECONDS", "1"),
        ("WAITROOM__RETURN_GRACE_SECONDS", "60"),
        ("WAITROOM__REAP_INTERVAL_MS", "600000"),
    ])
    .await?;
    let sale = world
        .arm(Spec {
            max_active: Some(1),
            ..Spec::default()
        })
        .await?;
    let users = sale.fill(6).await?;
    let live = users[5];
    let a = world.candidate("a").await?;
    wait_until(Duration::from_secs(3), "the first admitted", || async {
        Ok(sale.admitted_total().await? == 1)
    })
    .await?;
    sale.wait_admitted(&users[..1]).await?;
    // users[1..5] say nothing from here; the live buyer polls (every check below is a poll).
    wait_until(
        Duration::from_secs(4),
        "the silent head skipped",
        || async { Ok(sale.place(live).await? == Place::Waiting { position: 1 }) },
    )
    .await?;
    // /stats counts the tick's skips at once, on a spread line too (the reaper, which also
    // writes them there, comes round only every 10 min here).
    wait_until(
        Duration::from_secs(1),
        "the line's length and skips",
        || async {
            let stats = sale.stats().await?;
            Ok(stats.queue_length == 1 && stats.skipped == 4)
        },
    )
    .await?;
    assert_eq!(sale.admitted_total().await?, 1, "admitted past max_active");
    world.finish(vec![a]).await
}

/// door.md §6 "Done when", with the admitter running: `abandon_after` 20 s; A joins first and
/// is silent 25 s while B and C are admitted (`max_active` 2 then holds the line); D arrives
/// later. A polls again: `waiting`, position 1 (D is second), and is admitted within 2 s of
/// that poll once a slot frees, ahead of D. E, silent past the grace (60 s here), must join
/// again, at the back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_tab_polls_again_and_is_let_in_first() -> anyhow::Result<()> {
    let world = World::new(&[
        ("WAITROOM__ABANDON_AFTER_SECONDS", "20"),
        ("WAITROOM__RETURN_GRACE_SECONDS", "60"),
    ])
    .await?;
    let sale = world
        .arm(Spec {
            max_active: Some(2),
            ..Spec::default()
        })
        .await?;
    let grace = Duration::from_secs(60);
    let line = sale.fill(3).await?;
    let (a, b, c) = (line[0], line[1], line[2]);
    common::silence_in_sale(&world.redis, sale.id, &[a], 25).await?;
    let admitter = world.candidate("a").await?;
    wait_until(Duration::from_secs(3), "B and C admitted", || async {
        Ok(sale.admitted_total().await? == 2)
    })
    .await?;
    sale.wait_admitted(&[b, c]).await?;
    let later = sale.fill(2).await?;
    let (d, e) = (later[0], later[1]);
    common::silence_in_sale(&world.redis, sale.id, &[e], 65).await?;
    assert_eq!(sale.place(d).await?, Place::Waiting { position: 1 });

    let woke = Instant::now();
    let status = sale.queue.status(a, grace).await?.context("armed")?;
    assert_eq!(status.place, Place::Waiting { position: 1 });
    // On a spread line D counts A's return on another shard from the leader's next tick.
    wait_until(Duration::from_secs(1), "D behind A", || async {
        Ok(sale.place(d).await? == Place::Waiting { position: 2 })
    })
    .await?;
    // B's order ends: the slot goes to A at the next tick, not to D.
    sale.order_ended(b).await?;
    loop {
        let place = sale.queue.status(a, grace).await?.context("armed")?.place;
        if matches!(place, Place::Admitted { .. }) {
            break;
        }
        anyhow::ensure!(
            woke.elapsed() < Duration::from_secs(2),
            "A not admitted 2 s after polling again: {place:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("A admitted {:?} after polling again", woke.elapsed());
    assert_eq!(sale.place(d).await?, Place::Waiting { position: 1 });
    assert_eq!(sale.admitted_total().await?, 3);
    // E, silent past the grace, has no place left and joins at the back.
    assert_eq!(
        sale.queue.status(e, grace).await?.context("armed")?.place,
        Place::NotQueued
    );
    let options = JoinOptions {
        max_queue_length: 0,
        return_grace: grace,
        code_failures_per_hour: 10,
    };
    match sale.queue.join(e, &options).await? {
        Some(JoinOutcome::Standing { status, new }) => {
            assert!(new);
            assert_eq!(status.place, Place::Waiting { position: 2 });
        }
        other => anyhow::bail!("join: {other:?}"),
    }
    world.finish(vec![admitter]).await
}

/// The rate budget lives in Redis: two callers ticking on their own (a new leader next to a
/// stale one) share one budget and cannot add up to more than the rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_callers_share_one_rate_budget() -> anyhow::Result<()> {
    let world = World::new(&[]).await?;
    let sale = world.arm(Spec::default()).await?;
    sale.fill(400).await?;
    let rate = AdmitRate {
        per_second: 50.0,
        tolerance: TICK,
        carry: Duration::ZERO,
    };
    let caller = |redis: Redis| {
        let id = sale.id;
        async move {
            let queue = WaitQueue::new(&redis, id);
            let mut params = AdmitParams::new(5, ABANDON, Duration::from_secs(600));
            params.rate = Some(rate);
            let until = Instant::now() + Duration::from_secs(2);
            let mut admitted = 0;
            let mut limited = 0;
            while Instant::now() < until {
                let outcome = queue.admit(&params).await?.context("admit")?;
                admitted += outcome.admitted.len();
                if outcome.limit == AdmitLimit::Rate {
                    limited += 1;
                }
                tokio::time::sleep(Duration::from_millis(7)).await;
            }
            redis.quit().await;
            anyhow::Ok((admitted, limited))
        }
    };
    let stop = CancellationToken::new();
    let sampler = sample_in_background(&sale, stop.clone());
    let (one, two) = tokio::try_join!(
        caller(Redis::connect(&world.env.config.redis).await?),
        caller(Redis::connect(&world.env.config.redis).await?)
    )?;
    stop.cancel();
    let samples = sampler.await??;
    check_rate_bound(&samples, 50.0)?;
    let (admitted, seconds) = rate_over(&samples)?;
    let expected = 50.0 * seconds;
    assert!(
        one.0 > 0 && two.0 > 0,
        "both callers admitted: {one:?} {two:?}"
    );
    assert!(one.1 > 0 && two.1 > 0, "the rate stopped both callers");
    assert!(
        (admitted as f64 - expected).abs() <= 0.05 * expected + 5.0,
        "{admitted} admitted in {seconds:.3} s by two callers, expected {expected:.1}"
    );
    world.finish(vec![]).await
}

/// The rate credit's carry: a tick that comes late after one that used all its credit keeps
/// the credit of up to `carry` of lateness (a busy Redis delays the admitter's calls), where
/// without a carry the excess is lost; after a lull (a tick with fewer buyers than credit, or
/// none at all) a late tick gets one tick's burst and no more. Ticks are called by hand at
/// 100 a second, a tolerance of 110 ms (11 at once) and a carry of 50 ms; on a spread line
/// (`DL_TEST_LINE_SHARDS`) the same holds through its budget and commit steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_tick_keeps_its_carry_after_a_full_tick_and_not_after_a_lull() -> anyhow::Result<()>
{
    let world = World::new(&[]).await?;
    let params = |carry: Duration| {
        let mut params = AdmitParams::new(100, ABANDON, Duration::from_secs(600));
        params.rate = Some(AdmitRate {
            per_second: 100.0,
            tolerance: Duration::from_millis(110),
            carry,
        });
        params
    };
    let carry = params(Duration::from_millis(50));
    let late = Duration::from_millis(150);
    async fn tick(sale: &TestSale, params: &AdmitParams) -> anyhow::Result<usize> {
        let outcome = sale.queue.admit(params).await?.context("armed")?;
        Ok(outcome.admitted.len())
    }

    // Busy: the first tick takes its 11, the next comes 150 ms later (40 past the tolerance)
    // and takes 15 (16 if it ran 10 ms later still; the carry caps it at 160 ms' worth).
    let busy = world.arm(Spec::at(100)).await?;
    busy.fill(200).await?;
    assert_eq!(tick(&busy, &carry).await?, 11, "the first tick's burst");
    tokio::time::sleep(late).await;
    let caught_up = tick(&busy, &carry).await?;
    assert!(
        (15..=16).contains(&caught_up),
        "a tick 150 ms after a full one admitted {caught_up}, not 15 or 16"
    );

    // The same without a carry loses the 40 ms: 11 again.
    let lossy = world.arm(Spec::at(100)).await?;
    lossy.fill(200).await?;
    let none = params(Duration::ZERO);
    assert_eq!(tick(&lossy, &none).await?, 11);
    tokio::time::sleep(late).await;
    assert_eq!(
        tick(&lossy, &none).await?,
        11,
        "no carry: the excess is lost"
    );

    // After a lull there is no carry: a tick 150 ms after the last gets one tick's burst, 11,
    // not the carry's 16. Two lulls: 11 buyers, all admitted (a full tick), then 60 ms on a
    // tick that finds nobody (6 of credit unused clears the flag); and a tick short of buyers
    // (5 of its 11).
    for (first, empty_tick) in [(11, true), (5, false)] {
        let sale = world.arm(Spec::at(100)).await?;
        sale.fill(first).await?;
        assert_eq!(tick(&sale, &carry).await?, first);
        if empty_tick {
            tokio::time::sleep(Duration::from_millis(60)).await;
            assert_eq!(tick(&sale, &carry).await?, 0, "the line is empty");
        }
        sale.fill(100).await?;
        tokio::time::sleep(late).await;
        assert_eq!(
            tick(&sale, &carry).await?,
            11,
            "after {first} admitted (then an empty tick: {empty_tick}): one tick's burst"
        );
    }
    world.finish(vec![]).await
}

/// door.md §3 "Done when": a lone buyer at an open sale admitting 20 a second, after the line
/// stood empty for 60 s (the measured rate decayed to about zero), is told `eta_seconds` ≤ 1
/// and `retry_after_ms` ≤ 1000, and polling as told is admitted within 1.5 s of the join.
/// (On the measured-rate ETA this buyer was told about 28 s and waited 30.) The answers are
/// computed by the edge's own functions from the join's and each poll's standing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_buyer_after_an_idle_minute_is_told_the_truth_and_let_in_at_once()
-> anyhow::Result<()> {
    let world = World::new(&[]).await?;
    let sale = world.arm(Spec::at(20)).await?;
    let a = world.candidate("a").await?;
    wait_for_leader(&a.watch, 3 * LEASE).await?;
    // A warm-up buyer, admitted, so the rate was measured once; then a minute with nobody.
    sale.fill(1).await?;
    wait_until(
        Duration::from_secs(3),
        "the warm-up buyer admitted",
        || async { Ok(sale.admitted_total().await? == 1) },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let measured = sale.wr_field(RATE_FIELD).await?.unwrap_or(-1);
    assert!(
        measured < 100,
        "the measured rate is about zero: {measured} milli/s"
    );

    let user = UserId::new_v7();
    let joined_at = Instant::now();
    let options = JoinOptions {
        max_queue_length: 0,
        return_grace: GRACE,
        code_failures_per_hour: 10,
    };
    let Some(JoinOutcome::Standing { status, .. }) = sale.queue.join(user, &options).await? else {
        anyhow::bail!("join refused");
    };
    assert_eq!(status.place, Place::Waiting { position: 1 });
    let eta = edge::eta_seconds(&status, TICK);
    assert!(eta.is_some_and(|s| s <= 1), "eta_seconds {eta:?}");
    let mut retry = edge::retry_after_ms(&status, ABANDON, TICK);
    assert!(retry <= 1_000, "retry_after_ms {retry}");
    loop {
        tokio::time::sleep(Duration::from_millis(retry)).await;
        let status = sale
            .queue
            .status(user, GRACE)
            .await?
            .context("sale not armed")?;
        if matches!(status.place, Place::Admitted { .. }) {
            break;
        }
        anyhow::ensure!(
            joined_at.elapsed() < Duration::from_secs(5),
            "not admitted 5 s after the join: {status:?}"
        );
        retry = edge::retry_after_ms(&status, ABANDON, TICK);
    }
    let waited = joined_at.elapsed();
    assert!(
        waited <= Duration::from_millis(1_500),
        "admitted {waited:?} after the join"
    );
    world.finish(vec![a]).await
}

/// door.md §3: behind `max_active`, a buyer's ETA comes from the admission rate the admitter
/// measured over ticks that limit bound (M), past the F buyers it can still admit now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_max_active_the_eta_uses_the_limited_rate() -> anyhow::Result<()> {
    let world = World::new(&[]).await?;
    let sale = world
        .arm(Spec {
            rate: 100,
            max_active: Some(5),
            ..Spec::default()
        })
        .await?;
    let users = sale.fill(20).await?;
    let a = world.candidate("a").await?;
    wait_for_leader(&a.watch, 3 * LEASE).await?;
    wait_until(Duration::from_secs(3), "five admitted", || async {
        Ok(sale.admitted_total().await? == 5)
    })
    .await?;
    // Full: nobody admissible now, and no limited rate known while nobody left.
    let last = users.last().copied().context("users")?;
    let status = sale.queue.status(last, GRACE).await?.context("armed")?;
    assert_eq!(status.free, 0);
    // One slot frees every 200 ms for two seconds: M about 5/s.
    for user in &users[..10] {
        tokio::time::sleep(Duration::from_millis(200)).await;
        sale.order_ended(*user).await?;
    }
    let status = sale.queue.status(last, GRACE).await?.context("armed")?;
    let Place::Waiting { position } = status.place else {
        anyhow::bail!("last buyer not waiting: {status:?}");
    };
    let m = status
        .limited_rate_milli
        .context("no limited rate measured")?;
    assert!((2_500..=8_000).contains(&m), "M = {m} milli/s");
    let eta = edge::eta(&status, TICK).context("no ETA")?;
    let expected = position as f64 * 1000.0 / m as f64 + TICK.as_secs_f64();
    assert!(
        (eta.as_secs_f64() - expected).abs() < 0.5,
        "ETA {eta:?} for position {position} at M {m}"
    );
    world.finish(vec![a]).await
}

/// A sale whose line is spread over three line shards (`cfg.line_shards`, issue #22 §2): the
/// leader runs the spread tick, so the places go in across the shards in the order of their
/// scores, at the sale's rate, each shard's `ladm` holds the copy of its admissions, and the
/// positions a poll would read from its own shard are published (the head is exact).
#[tokio::test]
async fn a_spread_line_is_admitted_across_its_shards_in_line_order_at_the_rate()
-> anyhow::Result<()> {
    use dropline_core::sale::keys::{LineShards, SaleKeys};
    use dropline_waitroom::line::{self, tick::TickParams};

    let world = World::new(&[]).await?;
    let sale = world.arm(Spec::default()).await?;
    let cfg = SaleKeys::new(&world.redis, sale.id).cfg();
    let _: i64 = world.redis.pool().hset(&cfg, ("line_shards", 3)).await?;
    let line = LineShards::new(&world.redis, sale.id, 3);
    // 300 arrivals after the opening, live now: key 2^32 + n, as wr_join.lua scores them.
    let t: Vec<i64> = world
        .redis
        .pool()
        .custom(fred::cmd!("TIME"), Vec::<String>::new())
        .await?;
    let stamp = (t.first().context("TIME")? % 65_536) as f64;
    let mut places = Vec::new();
    for n in 1..=300u32 {
        let user = UserId::new_v7();
        let score = (4_294_967_296.0 + f64::from(n)) * 65_536.0 + stamp;
        common::place_in_shard(&world.redis, &line, user, score).await?;
        places.push(user);
    }
    let started = Instant::now();
    let a = world.candidate("a").await?;
    wait_until(Duration::from_secs(5), "100 admitted", || async {
        Ok(sale.admitted_total().await? >= 100)
    })
    .await?;
    a.stop().await?;
    let elapsed = started.elapsed().as_secs_f64();
    let total = sale.admitted_total().await?;
    // At most the rate over the time plus its tolerance (one tick and one interval) and its
    // carry (half a tick).
    assert!(
        total as f64 <= 50.0 * elapsed + 8.5,
        "{total} admitted in {elapsed:.2} s at 50/s"
    );
    // A stop may cut a tick short: what the next leader's tick finishes first (here one that
    // admits nobody new) settles every copy and publishes the positions.
    let sale_keys = SaleKeys::new(&world.redis, sale.id);
    let finish = TickParams {
        want: 40,
        abandon_after: ABANDON,
        window: Duration::from_secs(600),
        need: 0,
        rate: 0.0,
        tolerance: Duration::from_secs(1),
        carry: Duration::ZERO,
        outage_gap: Duration::ZERO,
        tick: TICK,
    };
    let last = line::tick::run(&world.redis, &sale_keys, &line, &finish, 1_000, None).await?;
    assert_eq!(last.admitted, 0, "{last:?}");
    let mut waiting = Vec::new();
    for (rank, user) in places.iter().enumerate() {
        let member = user.as_bytes().to_vec();
        let in_adm: Option<f64> = world
            .redis
            .pool()
            .zscore(sale_keys.admitted(), member.clone())
            .await?;
        let copy: Option<f64> = world
            .redis
            .pool()
            .zscore(&line.keys_of(*user).outbox, member.clone())
            .await?;
        let in_q: Option<f64> = world
            .redis
            .pool()
            .zscore(&line.keys_of(*user).q, member)
            .await?;
        // The first `total` in line are in, each with its copy; nobody behind them (a place
        // taken by a cut tick and not yet written waits in ladm as pending, below 0).
        assert_eq!(
            in_adm.is_some(),
            (rank as u64) < total,
            "the place of rank {rank}"
        );
        if in_adm.is_some() {
            assert_eq!(copy, in_adm, "the copy of rank {rank}");
        } else {
            assert!(copy.is_none_or(|c| c < 0.0), "the copy of rank {rank}");
        }
        if in_q.is_some() {
            waiting.push(*user);
        }
    }
    // The first still waiting is told place 1 from their own shard; the 20th, place 20.
    for ahead in [0usize, 19] {
        let user = waiting[ahead];
        let (at, read) = line::positions(&world.redis, line.keys_of(user), &[user]).await?;
        assert!(at > 0);
        assert_eq!(read, [ahead as u64 + 1]);
    }
    world.finish(vec![]).await
}
