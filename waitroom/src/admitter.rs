//! The admitter: the loop that lets buyers out of every sale's line at the sale's rate.
//!
//! Every waitroom replica runs one candidate ([`spawn`]); one of them leads at a time, through
//! the Redis lease `<prefix>:admitter` ([`dropline_core::lease::Lease`]). Each tick
//! (`waitroom.admit_tick_ms`) a candidate takes or renews the lease, and only the holder works:
//!
//! - **Admission.** For every armed sale ([`sale::indexed`]) it reads the live
//!   `admit_per_second` (an admin change counts from the next tick) and runs one
//!   [`WaitQueue::admit`], which also applies `max_active`, the stock rule, pause and the sale's
//!   state. A sale that is closed and whose line is empty leaves the index.
//! - **Measured rate.** While a sale is open it writes the admissions per second, smoothed over
//!   about [`RATE_TIME_CONSTANT`], into the sale's `wr` hash as [`RATE_FIELD`] (rate × 1000,
//!   an integer), for ETAs and `GET /w/{sale}/stats`.
//! - **Reaping.** Every `waitroom.reap_interval_ms` it starts a pass of [`WaitQueue::reap`]
//!   over every sale, so buyers who stopped polling are skipped deep in the line too (the
//!   admission tick skips them at the head), places silent past `waitroom.return_grace_seconds`
//!   and admissions that lapsed leave (door.md §6). A pass is up to [`REAP_CALLS`] calls of
//!   [`REAP_BATCH`] entries a sale, made a step at a time right after admission ticks (one call
//!   a sale a step, more only when the interval is shorter than that many ticks), the steps
//!   spread evenly over the interval (after every tick by default), so it never holds a tick
//!   back by more than one small call: four calls of 2,500 in a row held the loop for 40–50 ms
//!   on a busy Redis, and for 240 ms under a tenth of a core, where whole ticks were then
//!   skipped (BENCHMARKS.md "full core"); one such call every other tick still held the tick
//!   after it back on a slow Redis, where one of 1,000 after every tick does not ("reap
//!   steps").
//!
//! A leader that dies stops renewing; its lease expires after `waitroom.lease_seconds` and the
//! next candidate to tick takes over, within one lease length plus one tick. At shutdown the
//! leader gives the lease up, so a successor takes over at its next tick. A leader also stops
//! working once its last renewal is older than the lease length less one tick, so it does not
//! act on a lease it may have lost while stalled.
//!
//! # The rate limit lives in Redis
//!
//! The budget of a tick is a GCRA (generic cell rate algorithm) computed inside
//! `lua/wr_admit.lua` against the Redis clock, its state (`admit_tat`) kept in the sale's `wr`
//! hash; see [`AdmitRate`]. It is not a `governor` limiter in this process, although governor
//! is the GCRA crate used elsewhere, because a limiter in process memory cannot keep the rule
//! "never more than `admit_per_second` across all replicas" once leadership moves: a new leader
//! starts with a fresh limiter and adds a burst right after its predecessor's last tick, and a
//! stalled leader that resumes before noticing it lost the lease admits on a second limiter
//! next to the new leader's. Governor also cannot say "up to N now" (`check_n` is all or
//! nothing) nor give back budget a tick did not use (short queue, stock rule, `max_active`).
//! With the state next to the queue, every caller draws on one budget, charged only for what
//! was admitted, and a rate change takes effect without resetting anything.
//!
//! The tolerance is one tick plus one admission interval (see `tolerance` for why the extra
//! interval), so after a lull at most one tick's worth plus one buyer are admitted at once. In
//! steady operation a tick admits the rate times the time since the previous tick. A tick
//! that comes late after one that used all its credit keeps up to half a tick of credit that
//! would otherwise be lost (the carry, see `carry`): on a Redis kept busy by polls the calls
//! ahead of the admitter's vary its timing by tens of milliseconds, which cost 1.4–2.1% of
//! the rate without it, 3–4% in the slowest 10 s (BENCHMARKS.md line-sim "full core"). So over any span of W seconds at most
//! `admit_per_second × (W + tolerance + carry)` are admitted, on the Redis clock, across
//! leader changes; a tick later than half a tick still loses the rest.
//! Exactly `admit_per_second` in *every* sliding second is not possible at a steady rate with
//! admissions in ticks: a one-second window that happens to hold eleven ticks would have to be
//! starved, and ticks jitter, so that costs several percent of the rate.
//!
//! # Metrics
//!
//! `dropline_waitroom_admitted_total{sale}`, `dropline_waitroom_skipped_total{sale}` (silent
//! buyers passed over, at the head by admission and deeper by the reaper; they may come back),
//! `dropline_waitroom_abandoned_total{sale}` (places lost past the return grace, removed by the
//! reaper; a poll or join that finds its own place lost counts only in Redis, `wr`), the gauges
//! `dropline_waitroom_queue_length{sale}` and `dropline_waitroom_active{sale}` (set by the leader
//! only; a replica that loses the lead sets its own to 0, so a sum over replicas is right),
//! `dropline_waitroom_admitter_leader` (1 on the leader) and the histograms
//! `dropline_waitroom_admit_tick_seconds` (a leader's whole tick) and
//! `dropline_waitroom_reap_round_seconds` (a leader's reap step: a call for each sale, run
//! after a tick, so a step longer than what is left of the tick delays the next one).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use dropline_core::alerts::{self, AlertKind};
use dropline_core::clients::redis::Redis;
use dropline_core::config::WaitroomConfig;
use dropline_core::ids::SaleId;
use dropline_core::lease::Lease;
use dropline_core::sale;
use fred::interfaces::{HashesInterface, KeysInterface};
use fred::types::{Expiration, SetOptions};
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::line;
use crate::queue::{AdmitLimit, AdmitOutcome, AdmitParams, AdmitRate, ReapOutcome, WaitQueue};
use dropline_core::sale::SaleState;
use dropline_core::sale::keys::{LineShards, SaleKeys};

/// The field of a sale's `wr` hash that holds the measured admission rate: admissions per
/// second × 1000, an integer (`50000` = 50 a second).
pub const RATE_FIELD: &str = "admit_rate_milli";

/// The field of a sale's `wr` hash that holds M of door.md §3: admissions per second × 1000
/// over the ticks of the last `waitroom.eta_rate_window_seconds` that `max_active` or stock
/// limited, `-1` when there was none. The ETA of a buyer behind those limits comes from it.
pub const LIMITED_RATE_FIELD: &str = "limited_rate_milli";

/// Time constant of the measured rate's exponential smoothing: a change of the real rate shows
/// two thirds of the way after this long.
pub const RATE_TIME_CONSTANT: Duration = Duration::from_secs(5);

/// Queue entries one reap call looks at, and calls per sale per reap interval: at the default
/// interval of 1 s the reaper sweeps a line of a million in under two minutes, each call about
/// a millisecond of Redis time. (The head of the line is also cleaned by every admission tick.)
/// The calls of a pass are spread over the ticks of its interval ([`ReapPlan`]), one after each
/// tick at the default tick and interval: small calls, because the tick after a call waits for
/// it (under a tenth of a core a call of 2,500 held Redis for 45–75 ms, one of 1,000 for 14–33).
const REAP_BATCH: u32 = 1_000;
const REAP_CALLS: usize = 10;

/// A sale's ticks this far apart mean Redis, or every admitter, was away (a leader change takes
/// a lease plus a tick, 3.1 s by default): buyers then get `abandon_after` to poll again before
/// anyone is skipped (door.md §5; [`AdmitParams::outage_gap`]).
const OUTAGE_GAP: Duration = Duration::from_secs(5);

/// Sales worked on at once in one tick (each is two or three Redis round trips).
const SALE_CONCURRENCY: usize = 16;

/// How long shutdown waits for the lease release before leaving the lease to expire.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// A repeated error is logged at most this often (with the count of the ones left out).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A sale's view as [`sale::view`] read it.
type Viewed = anyhow::Result<Option<sale::SaleView>>;

/// The Redis key of the admitter lease (holds the leader's holder id, with a TTL).
pub fn lease_key(redis: &Redis) -> String {
    redis.key("admitter")
}

/// Starts a candidate for the admitter lease and returns its task, which ends after `shutdown`
/// (releasing the lease if it leads). With `waitroom.run_admitter = false` the task ends at
/// once. `holder` must be unique per process (host, pid and a random part, say).
///
/// Use [`Admitter::new`] and [`Admitter::run`] instead to keep a [`Watch`] on the candidate.
pub fn spawn(
    redis: Redis,
    config: WaitroomConfig,
    holder: String,
    stall_after: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(
        Admitter::new(redis, &config, holder)
            .stall_after(stall_after)
            .run(shutdown),
    )
}

/// A sold-out flag outlives any sale's sold-out spell worth one alert.
const SOLD_OUT_FLAG_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The default of `alerts.stall_after_seconds`.
pub const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(30);

/// What one candidate is doing, readable from outside its task (tests, health output).
#[derive(Debug, Clone, Default)]
pub struct Watch {
    inner: Arc<WatchInner>,
}

#[derive(Debug, Default)]
struct WatchInner {
    leader: AtomicBool,
    admitted: AtomicU64,
}

impl Watch {
    /// Whether this candidate holds the lease (as of its last tick).
    pub fn is_leader(&self) -> bool {
        self.inner.leader.load(Ordering::Relaxed)
    }

    /// Buyers this candidate admitted since it started, over all sales.
    pub fn admitted(&self) -> u64 {
        self.inner.admitted.load(Ordering::Relaxed)
    }
}

/// One candidate for the admitter lease, and the leader's work when it holds it.
pub struct Admitter {
    ctx: Ctx,
    lease: Lease,
    lease_length: Duration,
    reap_interval: Duration,
    /// How a reap pass's calls spread over the ticks of its interval.
    reap_plan: ReapPlan,
    /// Ticks since the current reap pass started (`None`: no pass running); the plan says
    /// which of them carry a step.
    reap_ticks: Option<usize>,
    enabled: bool,
    /// Leader only: per-sale state, dropped when the lead is lost.
    sales: HashMap<SaleId, Track>,
    leader: bool,
    /// The lease is surely ours until then (from the send time of the last renewal).
    valid_until: Instant,
    lease_errors: Throttle,
    index_errors: Throttle,
}

/// What every per-sale job reads.
struct Ctx {
    redis: Redis,
    holder: String,
    tick: Duration,
    abandon_after: Duration,
    /// `waitroom.return_grace_seconds`: the reaper removes places silent for longer.
    return_grace: Duration,
    admission_window: Duration,
    /// The span over which [`LimitedRate`] measures.
    eta_window: Duration,
    /// No admission for this long, with buyers waiting on an open sale: an alert.
    stall_after: Duration,
    watch: Watch,
}

impl Admitter {
    pub fn new(redis: Redis, config: &WaitroomConfig, holder: String) -> Self {
        // Config validation keeps these positive and the lease longer than a tick; the max()
        // guards keep a hand-built config from making a zero-period interval.
        let tick = Duration::from_millis(config.admit_tick_ms.max(1));
        let lease_length = Duration::from_secs(config.lease_seconds).max(tick * 2);
        let reap_interval = Duration::from_millis(config.reap_interval_ms.max(1));
        let lease = Lease::new(
            redis.clone(),
            lease_key(&redis),
            holder.clone(),
            lease_length,
        );
        Self {
            ctx: Ctx {
                redis,
                holder,
                tick,
                abandon_after: Duration::from_secs(config.abandon_after_seconds),
                return_grace: Duration::from_secs(config.return_grace_seconds),
                admission_window: Duration::from_secs(config.admission_window_seconds),
                eta_window: Duration::from_secs(config.eta_rate_window_seconds.max(1)),
                stall_after: DEFAULT_STALL_AFTER,
                watch: Watch::default(),
            },
            lease,
            lease_length,
            reap_interval,
            reap_plan: ReapPlan::new(tick, reap_interval),
            reap_ticks: None,
            enabled: config.run_admitter,
            sales: HashMap::new(),
            leader: false,
            valid_until: Instant::now(),
            lease_errors: Throttle::default(),
            index_errors: Throttle::default(),
        }
    }

    /// How long an open sale with buyers in line may go without an admission before an
    /// `admission_stalled` alert (`alerts.stall_after_seconds`).
    pub fn stall_after(mut self, after: Duration) -> Self {
        self.ctx.stall_after = after.max(Duration::from_secs(1));
        self
    }

    pub fn watch(&self) -> Watch {
        self.ctx.watch.clone()
    }

    /// Runs until `shutdown`; then releases the lease if it leads.
    pub async fn run(self, shutdown: CancellationToken) {
        let span = tracing::info_span!("admitter", holder = %self.ctx.holder);
        self.run_inner(shutdown).instrument(span).await;
    }

    async fn run_inner(mut self, shutdown: CancellationToken) {
        if !self.enabled {
            tracing::info!("admitter not started (waitroom.run_admitter = false)");
            return;
        }
        metrics::gauge!("dropline_waitroom_admitter_leader").set(0.0);
        // Skip: after a stall the ticks go back to the grid instead of firing in a burst. The
        // budget does not depend on the tick count anyway (it is time-based, in Redis).
        let mut admit_tick = tokio::time::interval(self.ctx.tick);
        admit_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut reap_tick = tokio::time::interval(self.reap_interval);
        reap_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            // A round is bounded (Redis calls time out), but shutdown does not wait for it:
            // a Redis call cut off here either ran in full or not at all.
            let stop = tokio::select! {
                biased;
                () = shutdown.cancelled() => true,
                _ = admit_tick.tick() => tokio::select! {
                    biased;
                    () = shutdown.cancelled() => true,
                    () = async {
                        self.admit_round().await;
                        self.reap_step().await;
                    } => false,
                },
                _ = reap_tick.tick(), if self.leader => {
                    // A new pass: its calls go after the ticks that follow, a step every
                    // `reap_plan.gap` of them.
                    self.reap_ticks = Some(0);
                    for track in self.sales.values_mut() {
                        track.reap_done = false;
                    }
                    false
                }
            };
            if stop {
                break;
            }
        }
        self.step_down_at_shutdown().await;
    }

    /// Takes or renews the lease; `true` when this candidate may work now.
    async fn hold_lease(&mut self) -> bool {
        let sent = Instant::now();
        let result = self.lease.try_acquire().await;
        self.lease_taken(sent, result)
    }

    /// Acts on a lease call sent at `sent`; `true` when this candidate may work now.
    fn lease_taken(&mut self, sent: Instant, result: anyhow::Result<bool>) -> bool {
        match result {
            Ok(true) => {
                self.lease_errors.reset();
                // The lease runs from when Redis ran the call, which is after `sent`; one tick
                // of margin covers the time a round takes to start each call.
                self.valid_until = sent + self.lease_length.saturating_sub(self.ctx.tick);
                if !self.leader {
                    self.leader = true;
                    self.ctx.watch.inner.leader.store(true, Ordering::Relaxed);
                    metrics::gauge!("dropline_waitroom_admitter_leader").set(1.0);
                    tracing::info!(
                        lease_seconds = self.lease_length.as_secs_f64(),
                        "admitter leadership gained"
                    );
                }
                true
            }
            Ok(false) => {
                self.lease_errors.reset();
                if self.leader {
                    self.step_down("another candidate holds the lease");
                }
                false
            }
            Err(error) => {
                if let Some(suppressed) = self.lease_errors.allow() {
                    tracing::warn!(error = %format!("{error:#}"), suppressed, "admitter: cannot take or renew the lease");
                }
                if self.leader && Instant::now() >= self.valid_until {
                    self.step_down("the lease could not be renewed in time");
                }
                false
            }
        }
    }

    fn step_down(&mut self, reason: &str) {
        self.leader = false;
        self.ctx.watch.inner.leader.store(false, Ordering::Relaxed);
        metrics::gauge!("dropline_waitroom_admitter_leader").set(0.0);
        for id in self.sales.keys() {
            zero_gauges(*id);
        }
        self.sales.clear();
        tracing::info!(reason, "admitter leadership lost");
    }

    async fn step_down_at_shutdown(&mut self) {
        if !self.leader {
            return;
        }
        match tokio::time::timeout(RELEASE_TIMEOUT, self.lease.release()).await {
            Ok(Ok(true)) => tracing::info!("admitter lease released at shutdown"),
            Ok(Ok(false)) => tracing::info!("admitter lease was no longer ours at shutdown"),
            Ok(Err(error)) => {
                tracing::warn!(error = %format!("{error:#}"), "admitter: could not release the lease; it expires by itself");
            }
            Err(_) => {
                tracing::warn!("admitter: releasing the lease timed out; it expires by itself");
            }
        }
        self.step_down("shutdown");
    }

    /// The armed sales, or `None` (logged) when the index cannot be read.
    fn indexed(&mut self, result: anyhow::Result<Vec<SaleId>>) -> Option<Vec<SaleId>> {
        match result {
            Ok(ids) => {
                self.index_errors.reset();
                Some(ids)
            }
            Err(error) => {
                if let Some(suppressed) = self.index_errors.allow() {
                    tracing::warn!(error = %format!("{error:#}"), suppressed, "admitter: cannot read the index of sales");
                }
                None
            }
        }
    }

    /// One admission tick: lease, then every sale.
    ///
    /// A leader sends the lease renewal, the index read and the views of the sales it worked on
    /// last tick at once, so a sale's `wr_admit.lua` waits one round trip instead of three: on
    /// a busy Redis each call queues behind the polls, and a tick later than the carry loses
    /// credit. The reads are acted on only once the renewal succeeds. A candidate that does not
    /// lead sends the renewal alone (followers cost Redis one call a tick), and a new leader's
    /// first tick reads the rest after it.
    async fn admit_round(&mut self) {
        let started = Instant::now();
        let (ids, mut views) = if self.leader {
            let sent = Instant::now();
            let redis = &self.ctx.redis;
            let known: Vec<SaleId> = self.sales.keys().copied().collect();
            let (lease, index, views) = tokio::join!(
                self.lease.try_acquire(),
                sale::indexed(redis),
                futures_util::stream::iter(known)
                    .map(|id| async move { (id, sale::view(redis, id).await) })
                    .buffer_unordered(SALE_CONCURRENCY)
                    .collect::<HashMap<_, _>>(),
            );
            if !self.lease_taken(sent, lease) {
                return;
            }
            (self.indexed(index), views)
        } else {
            if !self.hold_lease().await {
                return;
            }
            let index = sale::indexed(&self.ctx.redis).await;
            (self.indexed(index), HashMap::new())
        };
        let Some(ids) = ids else {
            return;
        };
        // Sales that left the index (unarmed elsewhere) are forgotten.
        let listed: HashSet<SaleId> = ids.iter().copied().collect();
        self.sales.retain(|id, _| {
            let keep = listed.contains(id);
            if !keep {
                zero_gauges(*id);
            }
            keep
        });
        let ctx = &self.ctx;
        let valid_until = self.valid_until;
        let jobs: Vec<(SaleId, Track, Option<Viewed>)> = ids
            .into_iter()
            .map(|id| {
                let track = self.sales.remove(&id).unwrap_or_default();
                (id, track, views.remove(&id))
            })
            .collect();
        let done: Vec<(SaleId, Option<Track>)> = futures_util::stream::iter(jobs)
            .map(|(id, track, view)| async move {
                if Instant::now() >= valid_until {
                    // Stalled past the lease: do not act on it; the next tick renews or not.
                    return (id, Some(track));
                }
                (id, ctx.admit_sale(id, track, view).await)
            })
            .buffer_unordered(SALE_CONCURRENCY)
            .collect()
            .await;
        for (id, track) in done {
            if let Some(track) = track {
                self.sales.insert(id, track);
            }
        }
        metrics::histogram!("dropline_waitroom_admit_tick_seconds")
            .record(started.elapsed().as_secs_f64());
    }

    /// One step of the current reap pass, right after a tick (leader only; the tick renewed
    /// the lease): `reap_plan.calls` calls for every sale the tick worked on whose pass has
    /// not yet swept its whole line, every `reap_plan.gap` ticks. Nothing when no pass runs.
    async fn reap_step(&mut self) {
        let Some(ticks) = self.reap_ticks.filter(|_| self.leader) else {
            return;
        };
        self.reap_ticks = (ticks + 1 < self.reap_plan.ticks()).then_some(ticks + 1);
        if !self.reap_plan.step_due(ticks) {
            return;
        }
        let started = Instant::now();
        let ctx = &self.ctx;
        let valid_until = self.valid_until;
        let calls = self.reap_plan.calls;
        let ids: Vec<SaleId> = self
            .sales
            .iter()
            .filter(|(_, track)| !track.reap_done)
            .map(|(id, _)| *id)
            .collect();
        let jobs: Vec<(SaleId, Track)> = ids
            .into_iter()
            .filter_map(|id| self.sales.remove(&id).map(|track| (id, track)))
            .collect();
        let done: Vec<(SaleId, Track)> = futures_util::stream::iter(jobs)
            .map(|(id, mut track)| async move {
                if Instant::now() < valid_until {
                    ctx.reap_sale(id, &mut track, calls).await;
                }
                (id, track)
            })
            .buffer_unordered(SALE_CONCURRENCY)
            .collect()
            .await;
        self.sales.extend(done);
        metrics::histogram!("dropline_waitroom_reap_round_seconds")
            .record(started.elapsed().as_secs_f64());
    }
}

impl Ctx {
    /// One sale's tick, on `view` when the round read it already. `None`: the sale left the
    /// index (closed and drained, or not armed).
    async fn admit_sale(
        &self,
        id: SaleId,
        mut track: Track,
        view: Option<Viewed>,
    ) -> Option<Track> {
        match self.try_admit_sale(id, &mut track, view).await {
            Ok(true) => Some(track),
            Ok(false) => None,
            Err(error) => {
                if let Some(suppressed) = track.errors.allow() {
                    tracing::warn!(sale = %id, error = %format!("{error:#}"), suppressed, "admitter: admission tick failed");
                }
                Some(track)
            }
        }
    }

    /// `Ok(false)` when the sale was taken out of the index.
    async fn try_admit_sale(
        &self,
        id: SaleId,
        track: &mut Track,
        view: Option<Viewed>,
    ) -> anyhow::Result<bool> {
        let view = match view {
            Some(view) => view?,
            None => sale::view(&self.redis, id).await?,
        };
        let Some(view) = view else {
            tracing::info!(sale = %id, "sale in the index is not armed: removing it from the index");
            self.unindex(id).await?;
            return Ok(false);
        };
        stock_gauges(id, &view);
        let rate = AdmitRate {
            per_second: view.admit_per_second.max(0) as f64,
            tolerance: tolerance(self.tick, view.admit_per_second),
            carry: carry(self.tick),
        };
        // The most the rate credit can grant (it is the real limit); also sizes scan_limit.
        let max_admit = (rate.per_second * (rate.tolerance + rate.carry).as_secs_f64())
            .ceil()
            .clamp(0.0, 100_000.0) as u32;
        let mut params = AdmitParams::new(max_admit, self.abandon_after, self.admission_window);
        params.rate = Some(rate);
        params.outage_gap = Some(OUTAGE_GAP);
        params.tick = self.tick;
        // The line's layout is a pure function of the sale and its shard count: made once per
        // sale and leader, for the tick here and the reaper.
        let line = match track.line.take() {
            Some(line) if line.count() == view.line_shards.max(1) => line,
            _ => LineShards::new(&self.redis, id, view.line_shards),
        };
        track.line = Some(line.clone());
        let queue = WaitQueue::new(&self.redis, id).with_line(line);
        let outcome = if view.line_shards > 1 {
            // A spread line: the tick across the shards, its own count of the line kept for
            // the report's series and for the next tick.
            let done = queue
                .spread_tick(&params, track.queue_length)
                .await?
                .context("a spread sale's tick without its line shards")?;
            track.queue_length = Some(done.queue_length);
            let admitted = done.admitted;
            done.outcome()?.map(|outcome| Ticked {
                admitted,
                ..Ticked::from(&outcome)
            })
        } else {
            queue.admit(&params).await?.map(|o| Ticked::from(&o))
        };
        let Some(outcome) = outcome else {
            tracing::info!(sale = %id, "sale disappeared from Redis: removing it from the index");
            self.unindex(id).await?;
            return Ok(false);
        };
        track.errors.reset();
        let label = id.to_string();
        let admitted = outcome.admitted;
        if admitted > 0 {
            metrics::counter!("dropline_waitroom_admitted_total", "sale" => label.clone())
                .increment(admitted);
            self.watch
                .inner
                .admitted
                .fetch_add(admitted, Ordering::Relaxed);
        }
        if outcome.skipped > 0 {
            metrics::counter!("dropline_waitroom_skipped_total", "sale" => label.clone())
                .increment(outcome.skipped);
        }
        metrics::gauge!("dropline_waitroom_queue_length", "sale" => label.clone())
            .set(outcome.queue_length as f64);
        metrics::gauge!("dropline_waitroom_active", "sale" => label).set(outcome.active as f64);
        tracing::trace!(sale = %id, admitted, skipped = outcome.skipped, queue_length = outcome.queue_length, active = outcome.active, limit = ?outcome.limit, "admission tick");

        let now = Instant::now();
        self.alert_on(id, &outcome, track, now).await;
        if outcome.state == SaleState::Open {
            if track.meter.is_none() {
                // A new leader goes on from its predecessor's figure, so ETAs do not jump.
                let previous: Option<i64> = self
                    .redis
                    .pool()
                    .hget(&queue.keys().wr, RATE_FIELD)
                    .await
                    .context("reading the measured admission rate")?;
                track.meter = Some(Meter::new(
                    previous.map(|milli| milli.max(0) as f64 / 1000.0),
                    now,
                ));
            }
            let meter = track.meter.get_or_insert_with(|| Meter::new(None, now));
            let measured = meter.observe(admitted, now, self.tick);
            let milli = (measured * 1000.0).round() as i64;
            let bound = matches!(outcome.limit, AdmitLimit::MaxActive | AdmitLimit::Stock);
            let limited = track
                .limited
                .observe(now, admitted, bound, self.tick, self.eta_window)
                .map_or(-1, |rate| (rate * 1000.0).round() as i64);
            let _: i64 = self
                .redis
                .pool()
                .hset(
                    &queue.keys().wr,
                    vec![(RATE_FIELD, milli), (LIMITED_RATE_FIELD, limited)],
                )
                .await
                .context("writing the measured admission rates")?;
        } else {
            // Not open: the figures stand still (paused, sold out...) and the gap is not
            // counted as time without admissions when the sale opens again.
            if let Some(meter) = track.meter.as_mut() {
                meter.hold(now);
            }
            track.limited.hold(now);
        }

        if outcome.state == SaleState::Closed && outcome.queue_length == 0 {
            tracing::info!(sale = %id, "sale closed and its line is empty: removing it from the index");
            self.unindex(id).await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Sold out (once per sold-out spell of the sale, across leaders: a Redis flag) and
    /// admission stalled (the sale is open, buyers wait, and nobody was admitted for
    /// `stall_after` for a reason other than stock all being held).
    async fn alert_on(&self, id: SaleId, outcome: &Ticked, track: &mut Track, now: Instant) {
        if outcome.state == SaleState::SoldOut {
            if !track.sold_out_alerted {
                track.sold_out_alerted = true;
                let flag = SaleKeys::new(&self.redis, id).sold_out_alerted();
                let first: Result<Option<String>, _> = self
                    .redis
                    .pool()
                    .set(
                        &flag,
                        "1",
                        Some(Expiration::EX(SOLD_OUT_FLAG_TTL.as_secs() as i64)),
                        Some(SetOptions::NX),
                        false,
                    )
                    .await;
                // NX answers OK (Some) when this leader set it first; nil when already set.
                if matches!(first, Ok(Some(_)) | Err(_)) {
                    alerts::raise(
                        AlertKind::SoldOut,
                        &id.to_string(),
                        format!(
                            "sale {id} is sold out; {} buyer(s) were still in line",
                            outcome.queue_length
                        ),
                    );
                }
            }
        } else if track.sold_out_alerted {
            // Stock came back (an expired or failed order): a later sell-out alerts again.
            track.sold_out_alerted = false;
            let flag = SaleKeys::new(&self.redis, id).sold_out_alerted();
            let _: Result<i64, _> = self.redis.pool().del(&flag).await;
        }

        let waiting_without_admission = outcome.state == SaleState::Open
            && outcome.queue_length > 0
            && outcome.admitted == 0
            && !matches!(outcome.limit, AdmitLimit::Stock | AdmitLimit::State);
        if !waiting_without_admission {
            track.stalled_since = None;
            return;
        }
        let since = *track.stalled_since.get_or_insert(now);
        let stalled = now.duration_since(since);
        if stalled >= self.stall_after {
            alerts::raise(
                AlertKind::AdmissionStalled,
                &id.to_string(),
                format!(
                    "sale {id}: {} buyer(s) in line and nobody admitted for {}s (limited by {:?}; {} active)",
                    outcome.queue_length,
                    stalled.as_secs(),
                    outcome.limit,
                    outcome.active
                ),
            );
        }
    }

    /// Out of the index, into the expiry worker's watch (its holds may outlive the line).
    async fn unindex(&self, id: SaleId) -> anyhow::Result<()> {
        sale::retire(&self.redis, id).await?;
        zero_gauges(id);
        Ok(())
    }

    /// Up to `calls` reap calls on one sale; its pass is done once a call wraps (the cursor
    /// went round the whole line) or fails (the next pass starts over).
    async fn reap_sale(&self, id: SaleId, track: &mut Track, calls: usize) {
        let queue = WaitQueue::new(&self.redis, id);
        let spread = track.line.clone().filter(|line| line.count() > 1);
        let (mut expired, mut skipped, mut abandoned) = (0, 0, 0);
        for _ in 0..calls {
            match self.reap_once(id, &queue, spread.as_ref()).await {
                Ok(outcome) => {
                    expired += outcome.expired;
                    skipped += outcome.skipped;
                    abandoned += outcome.abandoned;
                    metrics::gauge!("dropline_waitroom_queue_length", "sale" => id.to_string())
                        .set(outcome.queue_length as f64);
                    if outcome.wrapped {
                        track.reap_done = true;
                        break;
                    }
                }
                Err(error) => {
                    if let Some(suppressed) = track.errors.allow() {
                        tracing::warn!(sale = %id, error = %format!("{error:#}"), suppressed, "admitter: reaping failed");
                    }
                    track.reap_done = true;
                    break;
                }
            }
        }
        if skipped > 0 {
            metrics::counter!("dropline_waitroom_skipped_total", "sale" => id.to_string())
                .increment(skipped);
        }
        if abandoned > 0 {
            metrics::counter!("dropline_waitroom_abandoned_total", "sale" => id.to_string())
                .increment(abandoned);
        }
        if expired + skipped + abandoned > 0 {
            tracing::debug!(sale = %id, expired, skipped, abandoned, "reaped");
        }
    }

    /// One reap batch: the sale's own keys (lapsed admissions in `adm`; its line, unless the
    /// line is spread), and for a spread line each of its shards, summed.
    async fn reap_once(
        &self,
        id: SaleId,
        queue: &WaitQueue,
        spread: Option<&LineShards>,
    ) -> anyhow::Result<ReapOutcome> {
        let own = queue
            .reap(self.abandon_after, self.return_grace, REAP_BATCH)
            .await?;
        let Some(line) = spread else {
            return Ok(own);
        };
        let mut shards = line::reap::reap(
            &self.redis,
            &SaleKeys::new(&self.redis, id),
            line,
            self.abandon_after,
            self.return_grace,
            REAP_BATCH,
        )
        .await?;
        shards.expired += own.expired;
        shards.wrapped &= own.wrapped;
        Ok(shards)
    }
}

/// The GCRA tolerance: one tick plus one admission interval. The interval is what makes the
/// rate exact: a tick rarely grants a whole number of admissions, and the fraction it carries to
/// the next tick must fit in the bucket next to that tick's own share, else it spills over and
/// is lost (a bucket of exactly one tick loses most of a unit on every uneven tick: 8% at 50/s).
fn tolerance(tick: Duration, per_second: i64) -> Duration {
    if per_second <= 0 {
        return tick;
    }
    tick + Duration::from_secs_f64(1.0 / per_second as f64)
}

/// How a reap pass goes over the ticks of its interval: [`REAP_CALLS`] calls a sale, in
/// `steps` steps of `calls` each (one a step unless the interval holds fewer ticks than a pass
/// has calls), a step every `gap` ticks, spread evenly (after every tick by default: ten steps
/// in ten ticks). Evenly, so that a tick waits for one step at most, and where the interval
/// holds more ticks than the pass has steps the ticks between two steps catch up: on a slow
/// Redis, where a tick and a step together outlast a tick, steps bunched on consecutive ticks
/// made each following tick later than the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReapPlan {
    calls: usize,
    steps: usize,
    gap: usize,
}

impl ReapPlan {
    fn new(tick: Duration, interval: Duration) -> Self {
        let ticks = usize::try_from((interval.as_nanos() / tick.as_nanos().max(1)).max(1))
            .unwrap_or(usize::MAX);
        let calls = REAP_CALLS.div_ceil(ticks.min(REAP_CALLS));
        let steps = REAP_CALLS.div_ceil(calls);
        Self {
            calls,
            steps,
            gap: (ticks / steps.max(1)).max(1),
        }
    }

    /// Whether the pass's tick `tick` (counted from 0, the first tick after the pass started)
    /// carries a step: every `gap`-th, `steps` of them.
    fn step_due(&self, tick: usize) -> bool {
        tick.is_multiple_of(self.gap) && tick / self.gap < self.steps
    }

    /// The ticks a pass spans: up to the one of its last step.
    fn ticks(&self) -> usize {
        (self.steps.max(1) - 1) * self.gap + 1
    }
}

/// The rate credit's carry: half a tick. A tick that comes up to half a tick late, after one
/// that used all its credit, loses nothing (a busy Redis delays the admitter's calls by tens
/// of milliseconds, unevenly); the price is that a span of W seconds that starts at such a
/// late tick may hold `rate × (W + tolerance + carry)`. At the default tick (100 ms) that is
/// 50 ms of the rate, half of #22's 1% of 10 s.
fn carry(tick: Duration) -> Duration {
    tick / 2
}

fn zero_gauges(id: SaleId) {
    let label = id.to_string();
    metrics::gauge!("dropline_waitroom_queue_length", "sale" => label.clone()).set(0.0);
    metrics::gauge!("dropline_waitroom_active", "sale" => label).set(0.0);
}

/// The sale's stock as the leader read it this tick: `dropline_sale_stock_units{sale, state}`
/// with `state` available, held (HELD and PAYING) or sold. Only the leader ticks, so a
/// dashboard takes the max over replicas (a former leader's figure stops moving).
fn stock_gauges(id: SaleId, view: &sale::SaleView) {
    let label = id.to_string();
    for (state, units) in [
        ("available", view.available),
        ("held", view.held),
        ("sold", view.sold),
    ] {
        metrics::gauge!("dropline_sale_stock_units", "sale" => label.clone(), "state" => state)
            .set(units as f64);
    }
}

/// What a tick did, whichever layout the sale's line has.
#[derive(Debug, Clone, PartialEq)]
struct Ticked {
    state: SaleState,
    admitted: u64,
    skipped: u64,
    queue_length: u64,
    /// Live admissions after the tick.
    active: u64,
    limit: AdmitLimit,
}

impl From<&AdmitOutcome> for Ticked {
    fn from(outcome: &AdmitOutcome) -> Self {
        Self {
            state: outcome.state,
            admitted: outcome.admitted.len() as u64,
            skipped: outcome.skipped,
            queue_length: outcome.queue_length,
            active: outcome.active,
            limit: outcome.limit,
        }
    }
}

/// The leader's state for one sale.
#[derive(Debug, Default)]
struct Track {
    /// A spread line's shards (their tags are computed once), and its length at the last tick
    /// (for the report's series).
    line: Option<LineShards>,
    queue_length: Option<u64>,
    /// `None` until the sale's first open tick under this leader.
    meter: Option<Meter>,
    limited: LimitedRate,
    errors: Throttle,
    /// Since when buyers wait on the open sale without anyone being admitted.
    stalled_since: Option<Instant>,
    /// The sold-out alert went out for the current sold-out spell.
    sold_out_alerted: bool,
    /// The current reap pass has swept this sale's line (or failed on it).
    reap_done: bool,
}

/// Admissions per second, exponentially smoothed in time: the ratio of two decayed sums,
/// admissions over elapsed seconds, each term weighted by `exp(-age / RATE_TIME_CONSTANT)`.
/// Unlike a plain EWMA of per-tick rates it copes with uneven ticks and is not biased towards
/// its starting value: the first ticks already give the real rate.
#[derive(Debug, Clone, Copy)]
struct Meter {
    admitted: f64,
    seconds: f64,
    last: Instant,
    /// No tick observed yet: the first one is taken to span one tick.
    fresh: bool,
}

impl Meter {
    /// `seed`: a rate measured before (by a previous leader), weighted as one time constant.
    fn new(seed: Option<f64>, now: Instant) -> Self {
        let (admitted, seconds) = match seed {
            Some(rate) if rate.is_finite() => {
                let weight = RATE_TIME_CONSTANT.as_secs_f64();
                (rate * weight, weight)
            }
            _ => (0.0, 0.0),
        };
        Self {
            admitted,
            seconds,
            last: now,
            fresh: true,
        }
    }

    /// Adds one open tick that admitted `admitted`; returns the smoothed rate.
    fn observe(&mut self, admitted: u64, now: Instant, tick: Duration) -> f64 {
        let dt = if self.fresh {
            tick.as_secs_f64()
        } else {
            now.saturating_duration_since(self.last).as_secs_f64()
        };
        self.fresh = false;
        self.last = now;
        let keep = (-dt / RATE_TIME_CONSTANT.as_secs_f64()).exp();
        self.admitted = self.admitted * keep + admitted as f64;
        self.seconds = self.seconds * keep + dt;
        self.rate()
    }

    /// A tick while the sale is not open: the time until the next open tick does not count.
    fn hold(&mut self, now: Instant) {
        self.last = now;
    }

    fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.admitted / self.seconds
        } else {
            0.0
        }
    }
}

/// M of door.md §3: admissions per second over the open ticks of the last `window` that
/// `max_active` or stock limited, each tick counted for the time since the previous open tick.
/// `None` when no such tick fell in the window (the ETA then has no figure past F).
#[derive(Debug, Default)]
struct LimitedRate {
    /// (when, admitted, seconds spanned) of each limited tick in the window, oldest first.
    ticks: VecDeque<(Instant, u64, f64)>,
    last: Option<Instant>,
}

impl LimitedRate {
    /// A tick while the sale is not open: that time is no tick's span.
    fn hold(&mut self, now: Instant) {
        self.last = Some(now);
    }

    fn observe(
        &mut self,
        now: Instant,
        admitted: u64,
        limited: bool,
        tick: Duration,
        window: Duration,
    ) -> Option<f64> {
        let span = self
            .last
            .map_or(tick, |last| now.saturating_duration_since(last));
        self.last = Some(now);
        if limited {
            self.ticks.push_back((now, admitted, span.as_secs_f64()));
        }
        while self
            .ticks
            .front()
            .is_some_and(|(when, _, _)| now.saturating_duration_since(*when) > window)
        {
            self.ticks.pop_front();
        }
        let seconds: f64 = self.ticks.iter().map(|(_, _, s)| s).sum();
        // (An empty window sums to 0 s: no figure.)
        let admitted: u64 = self.ticks.iter().map(|(_, n, _)| n).sum();
        (seconds > 0.0).then(|| admitted as f64 / seconds)
    }
}

/// Lets a repeated error through once per [`LOG_EVERY`], counting the ones held back.
#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(suppressed since the last one)` when this one should be logged.
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < LOG_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Success: the next error is logged at once.
    fn reset(&mut self) {
        self.last = None;
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {

    /// M counts only ticks that max_active or stock limited, over the window.
    #[test]
    fn the_limited_rate_counts_only_limited_ticks_in_the_window() {
        let tick = Duration::from_millis(100);
        let window = Duration::from_secs(10);
        let start = Instant::now();
        let mut m = LimitedRate::default();
        // Rate-limited ticks only: no figure.
        for i in 1..=10 {
            assert_eq!(m.observe(start + tick * i, 2, false, tick, window), None);
        }
        // Limited ticks admitting 1 per 100 ms: 10 a second.
        let mut last = None;
        for i in 11..=30 {
            last = m.observe(start + tick * i, 1, true, tick, window);
        }
        let rate = last.unwrap_or_default();
        assert!((rate - 10.0).abs() < 1e-6, "{rate}");
        // Twenty seconds later, the old limited ticks left the window.
        let later = start + Duration::from_secs(23);
        assert_eq!(m.observe(later, 5, false, tick, window), None);
    }
    use super::*;

    #[test]
    fn the_meter_gives_the_steady_rate_from_the_first_ticks() {
        let tick = Duration::from_millis(100);
        let start = Instant::now();
        let mut meter = Meter::new(None, start);
        let mut rate = 0.0;
        for i in 1..=5 {
            rate = meter.observe(5, start + tick * i, tick);
        }
        assert!((rate - 50.0).abs() < 1e-6, "{rate}");
    }

    #[test]
    fn the_meter_follows_a_change_with_its_time_constant() {
        let tick = Duration::from_millis(100);
        let start = Instant::now();
        let mut meter = Meter::new(Some(50.0), start);
        // The rate drops to 10/s: after one time constant about 1 - 1/e of the way is done
        // (the seed weighs one time constant too, so a little less than that).
        let ticks = (RATE_TIME_CONSTANT.as_millis() / tick.as_millis()) as u32;
        let mut rate = 0.0;
        for i in 1..=ticks {
            rate = meter.observe(1, start + tick * i, tick);
        }
        assert!(rate > 10.0 && rate < 30.0, "{rate}");
        for i in ticks + 1..=ticks * 8 {
            rate = meter.observe(1, start + tick * i, tick);
        }
        assert!((rate - 10.0).abs() < 0.5, "{rate}");
    }

    #[test]
    fn a_held_meter_does_not_count_the_pause() {
        let tick = Duration::from_millis(100);
        let start = Instant::now();
        let mut meter = Meter::new(None, start);
        for i in 1..=20 {
            meter.observe(2, start + tick * i, tick);
        }
        // A minute paused, then the same rate again.
        meter.hold(start + tick * 20 + Duration::from_secs(60));
        let rate = meter.observe(2, start + tick * 21 + Duration::from_secs(60), tick);
        assert!((rate - 20.0).abs() < 1e-6, "{rate}");
    }

    #[test]
    fn a_reap_pass_is_spread_over_the_ticks_of_its_interval() {
        let tick = Duration::from_millis(100);
        let plan = |interval_ms| ReapPlan::new(tick, Duration::from_millis(interval_ms));
        // The default: one call a sale after every tick.
        let (calls, steps, gap) = (1, REAP_CALLS, 1);
        assert_eq!(plan(1_000), ReapPlan { calls, steps, gap });
        // Fewer ticks than calls in an interval: more calls a step, the pass still whole.
        assert_eq!(plan(400).calls, 3);
        assert_eq!(plan(300).calls, 4);
        assert_eq!(plan(200).calls, 5);
        assert_eq!(plan(100).calls, REAP_CALLS);
        assert_eq!(plan(1).calls, REAP_CALLS);
        // More ticks than calls: a step every few ticks, evenly.
        assert_eq!(plan(2_000).calls, 1);
        // The steps spread evenly, and the last one still comes before the next pass.
        for (interval_ms, gap) in [
            (1_000, 1),
            (400, 1),
            (300, 1),
            (100, 1),
            (1, 1),
            (2_000, 2),
            (5_000, 5),
            (7_500, 7),
        ] {
            let plan = plan(interval_ms);
            assert_eq!(plan.gap, gap, "interval {interval_ms} ms");
            assert!(
                plan.steps * plan.calls >= REAP_CALLS,
                "interval {interval_ms} ms"
            );
            let ticks = (interval_ms / 100).max(1) as usize;
            // The pass's steps, tick by tick: `steps` of them, `gap` apart, the first on the
            // first tick, the last before the next pass.
            let due: Vec<usize> = (0..plan.ticks() + gap * 2)
                .filter(|&t| plan.step_due(t))
                .collect();
            let expected: Vec<usize> = (0..plan.steps).map(|s| s * gap).collect();
            assert_eq!(due, expected, "interval {interval_ms} ms");
            assert_eq!(
                plan.ticks(),
                due[due.len() - 1] + 1,
                "interval {interval_ms} ms"
            );
            assert!(
                plan.ticks() <= ticks.max(plan.steps),
                "interval {interval_ms} ms"
            );
        }
    }

    #[test]
    fn the_tolerance_is_one_tick_and_one_admission_interval() {
        let tick = Duration::from_millis(100);
        assert_eq!(tolerance(tick, 50), Duration::from_millis(120));
        assert_eq!(tolerance(tick, 2), Duration::from_millis(600));
        assert_eq!(tolerance(tick, 0), tick);
    }

    #[test]
    fn the_throttle_lets_one_through_then_counts() {
        let mut throttle = Throttle::default();
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.suppressed, 2);
        throttle.reset();
        assert_eq!(throttle.allow(), Some(0));
    }
}
