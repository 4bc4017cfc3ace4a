//! The waiting room's Redis core: one sale's queue, admissions and figures, as typed calls over
//! the `lua/wr_*.lua` scripts (each file's header is its contract).
//!
//! # Layout (all keys in the sale's slot, `<prefix>:{s:<sale>}:<name>`)
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `cfg`, `avail`, `held` | hash, strings | the sale, armed elsewhere (read only here) |
//! | `q` | zset | the queue: user id (16 raw bytes) → `order_key * 65536 + stamp` |
//! | `qskip` | zset | skipped places (below): the same member and score as they had in `q` |
//! | `adm` | zset | admitted users: user id (16 raw bytes) → admission deadline (epoch ms) |
//! | `qseq` | string | counter of arrivals after opening |
//! | `wr` | hash | `admitted_total`, `skipped_total`, `returned_total`, `abandoned_total` (below), `reap_from` and `reap_skip_from` (the reaper's cursors), `tick_at` and `resumed_at` (the outage credit, below), `admit_tat` and `admit_full` (the admission rate's GCRA state, epoch ms, and whether the last tick used all its credit, which lets the next carry; see `lua/wr_admit.lua`), `admit_rate_milli` (the measured admission rate, below) |
//! | `pow:<random>` | string | a proof-of-work challenge spent by a join, until the challenge's expiry ([`crate::pow`]) |
//! | `wt`, `wtc`, `rep`, `rps` | hash, zset, hash, hash | the post-sale report's recording: a sample of the waiting buyers' join times and first ETAs, the arrival checkpoints, totals and histograms, the per-second series (`lua/lib/prelude.lua`) |
//!
//! One sorted-set entry is a waiting buyer's whole state, which keeps a queued buyer at about
//! 125 bytes of Redis memory (measured with `examples/queue_memory.rs`; goal ≤ 150). The order
//! key sits in the high bits of the score: a CSPRNG draw below 2^36 for arrivals before
//! `opens_at` (uniformly random order at the opening, nobody gains by coming early), `2^36 + n`
//! for the n-th arrival after opening (strict arrival order, behind the whole pre-queue). The
//! low 16 bits hold the second (Redis `TIME`, mod 65536) of the buyer's last join or status
//! call, so recording a poll rewrites the score in place instead of keeping a second per-user
//! structure (a `seen` zset would double the memory). Order keys are unique, so a poll never
//! moves anyone. Silence has a resolution of one second.
//!
//! # Sleeping tabs keep their place (door.md §6)
//!
//! A buyer silent for longer than `abandon_after` is *skipped*, not removed: the admitter
//! ([`WaitQueue::admit`], at the head) or the reaper ([`WaitQueue::reap`], deeper in the line)
//! moves the entry from `q` to `qskip`, same member, same score. Positions are ranks in `q`, so
//! a skipped buyer stops counting in the positions of others and in `queue_length`, and the
//! admitter never waits for one. A skipped buyer who polls or joins within the return grace
//! (`waitroom.return_grace_seconds`) of their last poll is put back in `q` with the original
//! score: where the line has passed it, that is the head, so they are told `waiting`, position
//! 1, and are admitted at the next tick ahead of every later arrival (within the rate,
//! `max_active` and stock); otherwise it is their original place. (With priority groups in the
//! high bits of the order key, the head of `q` for that buyer is the head of their group, so
//! the position becomes "waiting buyers of higher groups + 1" with no change here.) Past the
//! grace the place is lost: the reaper, or the buyer's own poll or join, removes it, and the
//! buyer joins again at the back. Leaving removes a skipped place too. An entry is in `q` or
//! in `qskip`, never both, so a buyer holds one place at most, and memory per buyer is the same
//! wherever the entry is.
//!
//! An outage does not count toward `abandon_after` (door.md §5): the admitter stamps each tick
//! (`wr.tick_at`); a tick after a gap longer than [`AdmitParams::outage_gap`] records
//! `wr.resumed_at`, and for `abandon_after` from then neither the admission tick nor the reaper
//! skips anyone, so the line goes on in its order while buyers come back.
//!
//! Counters in `wr`: `skipped_total` (moves to `qskip`), `returned_total` (places given back),
//! `abandoned_total` (places lost past the grace, by the reaper, a poll or a join, and the
//! skipped places a closed sale drops).
//!
//! # Active buyers and the order side
//!
//! An entry in `adm` whose deadline is ahead is an *active* buyer: it holds a `max_active` slot
//! and a claim on stock (see `lua/wr_admit.lua` for the stock rule). The slot frees when the
//! deadline passes, when the buyer leaves ([`WaitQueue::leave`]), or when the order side removes
//! the entry. To keep the stock rule exact, the order side (api/workers scripts, in the sale's
//! slot) should, with the user's 16 id bytes ([`member`]):
//! - when an order is created with a pass: `ZADD <adm> XX GT <hold deadline ms> <user>`, so the
//!   buyer stays active while the order is live;
//! - when that order ends (paid, expired, cancelled, failed): `ZREM <adm> <user>`.
//!
//! Without these hooks the rules stay safe, only coarser: the slot then frees at the admission
//! deadline.
//!
//! # The measured admission rate
//!
//! While a sale is open, the admitter leader ([`crate::admitter`]) writes `admit_rate_milli`
//! into `wr` on every tick: admissions per second, smoothed over about five seconds, times
//! 1000, as an integer. The control room and `GET /w/{sale}/stats` (`admit_rate`) read it;
//! ETAs do not (door.md §3: they use the rate the admitter can admit now, `limited_rate_milli`). It is absent
//! until the sale's first open tick, and keeps its last value while the sale is paused,
//! scheduled, sold out or closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use dropline_core::clients::redis::Redis;
use dropline_core::ids::{SaleId, UserId};
use dropline_core::sale::SaleState;
use dropline_core::sale::keys::{LineShards, SaleKeys};
use fred::interfaces::HashesInterface;
use fred::types::Value;
use futures_util::future::try_join_all;
use rand::Rng;

use crate::scripts::{
    WR_ADMIT, WR_CHALLENGE, WR_JOIN, WR_LEAVE, WR_LINE_PLACE, WR_LINE_STATUS, WR_REAP, WR_STATS,
    WR_STATUS,
};

/// Scores are `order_key * ORDER_SPAN + stamp`.
pub const ORDER_SPAN: u64 = 1 << 16;
/// Within a group's band, keys below this are pre-open draws; `PRE_OPEN_KEYS + n` is the n-th
/// later arrival.
pub const PRE_OPEN_KEYS: u64 = 1 << 32;
/// Order keys per priority group (door.md §2): `rank * GROUP_BAND + key within the group`.
pub const GROUP_BAND: u64 = 1 << 33;
/// Most users in one [`WaitQueue::status_many`] call (bounds one script run to well under a
/// millisecond, so a batch never stalls Redis for others).
pub const MAX_STATUS_BATCH: usize = 256;
/// Most joins in one [`WaitQueue::join_many`] call: a join runs about 20 µs of script, so a
/// full batch holds Redis for a few milliseconds at most.
pub const MAX_JOIN_BATCH: usize = 128;
/// The keys `wr_join.lua` takes before the two of each join.
const JOIN_KEYS: usize = 15;
/// Most entries [`WaitQueue::reap`] handles per call (bounds one call's run time).
pub const MAX_REAP_BATCH: u32 = 5_000;
/// The least `scan_limit` of [`AdmitParams::new`]: a tick passes over this many silent buyers.
pub const MIN_SCAN: u32 = 4_096;

/// The queue member for a user: the UUID's 16 raw bytes.
pub fn member(user: UserId) -> [u8; 16] {
    *user.as_bytes()
}

/// The Redis keys of one sale's waiting room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKeys {
    pub cfg: String,
    pub avail: String,
    pub held: String,
    pub q: String,
    /// `qskip`, the skipped places.
    pub skip: String,
    pub adm: String,
    pub seq: String,
    pub wr: String,
    /// `codes`, the access codes' hashes (door.md §2).
    pub codes: String,
    /// `wt`, `rep`, `rps`, `wtc`: the post-sale report's sampled buyer entries, totals, series
    /// and arrival checkpoints (`lua/lib/prelude.lua`, "The post-sale report's recording").
    pub wt: String,
    pub rep: String,
    pub rps: String,
    pub wtc: String,
    /// `wtp`: the sampled buyers not yet shown an ETA (`eta_waits` in `lua/lib/prelude.lua`).
    pub wtp: String,
}

impl QueueKeys {
    pub fn new(redis: &Redis, sale: SaleId) -> Self {
        let layout = SaleKeys::new(redis, sale);
        Self {
            cfg: layout.cfg(),
            avail: layout.avail(),
            held: layout.held(),
            q: layout.queue(),
            skip: layout.skipped(),
            adm: layout.admitted(),
            seq: layout.queue_seq(),
            wr: layout.room(),
            codes: layout.codes(),
            wt: layout.report_entries(),
            wtc: layout.report_checkpoints(),
            rep: layout.report(),
            rps: layout.report_series(),
            wtp: layout.report_unshown(),
        }
    }
}

/// Where one buyer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// In the pre-queue: the sale has not opened, the position is decided at the opening.
    Scheduled,
    /// In line; `position` = users ahead in `q` + 1 (skipped places do not count; a silent
    /// buyer ahead counts until the admitter or the reaper skips it).
    Waiting {
        position: u64,
    },
    /// Admitted until `deadline_ms` (epoch ms): mint a pass that expires then.
    Admitted {
        deadline_ms: u64,
    },
    /// Nothing left and nothing held: told to everyone, admitted buyers included.
    SoldOut,
    Closed,
    /// Not in line and not admitted: never joined, left, silent past the return grace, or the
    /// admission lapsed. The client has to join again.
    NotQueued,
}

impl Place {
    /// The contract's `state` string.
    pub fn state(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Waiting { .. } => "waiting",
            Self::Admitted { .. } => "admitted",
            Self::SoldOut => "sold_out",
            Self::Closed => "closed",
            Self::NotQueued => "none",
        }
    }

    pub fn position(self) -> Option<u64> {
        match self {
            Self::Waiting { position } => Some(position),
            _ => None,
        }
    }
}

/// A buyer's standing, with what the HTTP layer needs around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub place: Place,
    pub opens_at_ms: u64,
    /// Redis time of the call, epoch ms (for `iat`, ETA and countdowns; one clock for all replicas).
    pub now_ms: u64,
    pub queue_length: u64,
    /// Admission is paused; places are kept.
    pub paused: bool,
    /// The sale's configured admission rate (users per second).
    pub admit_per_second: u64,
    /// Buyers the admitter could admit now before `max_active` or the stock rule binds (F of
    /// door.md §3); 0 unless the place is waiting.
    pub free: u64,
    /// Admissions per second × 1000 over the recent ticks that `max_active` or stock limited
    /// (M of door.md §3, `wr.limited_rate_milli`); `None` when none was measured.
    pub limited_rate_milli: Option<u64>,
    /// The operator's notice to the line (door.md §4), shared by a batch's answers.
    pub notice: Option<Arc<str>>,
    /// The place's priority group (door.md §2): one of the sale's groups or `public`; `None`
    /// without a place in line.
    pub group: Option<Arc<str>>,
}

/// What a join did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// The buyer's standing; `new` when this call made the place (else it already existed, and
    /// the same place is returned).
    Standing { status: Status, new: bool },
    /// The queue is at its maximum length and the buyer is not in it (503 `queue_full`).
    QueueFull { queue_length: u64, now_ms: u64 },
    /// The buyer has no place and the request may not make one (door.md's order of answers:
    /// these come after a place given back and before `queue_full`).
    Refused(Refusal),
}

/// Why a join without a place made none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The edge found the body malformed ([`Verdict::BadRequest`]): 400.
    BadRequest,
    /// The sale asks for proof of work and no challenge came: 403 `pow_required`.
    PowRequired,
    /// The edge refused the challenge ([`Verdict::PowInvalid`]): 403 `pow_invalid`.
    PowInvalid,
    /// The challenge expired (by Redis time): 403 `pow_invalid`.
    PowExpired,
    /// The challenge was spent by an earlier join: 403 `pow_invalid`.
    PowSpent,
    /// The user sent too many wrong codes this hour: 429 until `retry_after_ms` from now.
    CodeRateLimited { retry_after_ms: u64 },
    /// Unknown code (or another sale's): 403 `access_code_invalid`.
    AccessCodeInvalid,
    /// The code's uses were spent by other users: 409 `access_code_used`.
    AccessCodeUsed,
    /// Before `presale_only_until` without a code: 403 `access_code_required`.
    AccessCodeRequired,
    /// A draw sale (design/draw.md) has no line; nothing was written.
    DrawSale,
}

/// The edge's stateless verdict on a join's body and proof of work, for the join script to act
/// on once it knows the user has no place (a user with a place gets it back whatever this says).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Verdict {
    /// No challenge came (or none is needed).
    #[default]
    Open,
    /// The body is malformed.
    BadRequest,
    /// A challenge came and failed the stateless checks (MAC, sale, user, zero bits).
    PowInvalid,
    /// A genuine, solved challenge: the script judges its expiry and spends it.
    PowSolved {
        /// `pow:<id>` names its spent marker ([`crate::pow::Challenge::spent_id`]).
        spent_id: String,
        expires_at_ms: u64,
    },
}

impl Verdict {
    fn as_arg(&self) -> &'static str {
        match self {
            Self::Open => "none",
            Self::BadRequest => "bad",
            Self::PowInvalid => "invalid",
            Self::PowSolved { .. } => "ok",
        }
    }
}

/// One join of a batch ([`WaitQueue::join_many`]): the user, the edge's verdict on the body and
/// proof of work, and the access code's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinAsk {
    pub user: UserId,
    pub verdict: Verdict,
    pub code: Option<[u8; 32]>,
}

/// What `GET /w/{sale}/challenge` needs from Redis (read only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChallengeInfo {
    /// The sale's `pow_difficulty` as stored (0 = off; the edge caps it at
    /// [`crate::pow::MAX_DIFFICULTY`]).
    pub difficulty: u64,
    /// Redis time, epoch ms.
    pub now_ms: u64,
}

/// Settings of a join.
#[derive(Debug, Clone, Copy)]
pub struct JoinOptions {
    /// Refuse new places when the queue holds this many, skipped places included (0 = no
    /// limit).
    pub max_queue_length: u64,
    /// A place silent for longer than this is lost (`waitroom.return_grace_seconds`); within
    /// it, a skipped place comes back.
    pub return_grace: Duration,
    /// Wrong access codes a user may send per hour before joins with a code answer 429
    /// (`waitroom.code_failures_per_user_per_hour`).
    pub code_failures_per_hour: u64,
}

/// What stopped an admission tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmitLimit {
    /// The caller's budget for this tick.
    Rate,
    MaxActive,
    /// The stock rule (`lua/wr_admit.lua`).
    Stock,
    /// The queue ran out.
    Empty,
    /// `scan_limit` entries looked at (a wall of silent users at the head).
    Scan,
    /// The sale is not open, or paused.
    State,
}

impl AdmitLimit {
    pub(crate) fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "rate" => Self::Rate,
            "max_active" => Self::MaxActive,
            "stock" => Self::Stock,
            "empty" => Self::Empty,
            "scan" => Self::Scan,
            "state" => Self::State,
            other => anyhow::bail!("unknown admission limit `{other}`"),
        })
    }
}

/// Settings of one admission tick.
#[derive(Debug, Clone, Copy)]
pub struct AdmitParams {
    /// Most users to admit now (from `admit_per_second` and the time since the last tick).
    pub max_admit: u32,
    pub abandon_after: Duration,
    /// The admission lasts this long (the pass's lifetime).
    pub admission_window: Duration,
    /// Most queue entries looked at in this tick (admitted or skipped), bounding the script.
    /// Silent users are passed over at about a microsecond each, so this is what lets a tick
    /// get past a wall of them to the live buyer behind.
    pub scan_limit: u32,
    /// Units each admitted buyer may claim in the stock rule; 0 = the sale's `per_user_limit`.
    pub units_per_buyer: u32,
    /// The admission rate kept in Redis (GCRA state in `wr`); `None`: `max_admit` alone limits
    /// the tick.
    pub rate: Option<AdmitRate>,
    /// The outage credit (door.md §5, `lua/wr_admit.lua`): when the previous tick of the sale is
    /// older than this, Redis or every admitter was away, and for `abandon_after` from now nobody
    /// is skipped (here or by the reaper), so buyers who could not poll lose nothing. `None`:
    /// off (ticks are not stamped).
    pub outage_gap: Option<Duration>,
    /// The admission tick, which the edge adds to every ETA it shows: the report adds it to
    /// the first ETA noted for each buyer (`lua/wr_admit.lua` ARGV[9]).
    pub tick: Duration,
}

/// An admission rate enforced inside `lua/wr_admit.lua` against the Redis clock, with its
/// state next to the queue, so it holds across callers and leader changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmitRate {
    /// Admissions per second (0: nobody is admitted).
    pub per_second: f64,
    /// The GCRA tolerance: after a lull at most `per_second × tolerance` are admitted at once,
    /// and over any span of W seconds at most `per_second × (W + tolerance + carry)`.
    pub tolerance: Duration,
    /// How late a tick may come, after one that used all its credit, without losing any
    /// (`lua/wr_admit.lua` ARGV[10]): a tick's budget is then up to
    /// `per_second × (tolerance + carry)`. Zero: a late tick loses the excess.
    pub carry: Duration,
}

impl AdmitParams {
    /// `scan_limit` defaults to four times the budget, at least [`MIN_SCAN`]: with half the
    /// head silent a tick still fills its budget, and a wall of up to [`MIN_SCAN`] silent
    /// buyers ahead of a live one delays that buyer by at most one tick (door.md §6). Passing
    /// over 4,096 silent buyers costs a few milliseconds of Redis once; a tick with none stays
    /// well under a millisecond.
    pub fn new(max_admit: u32, abandon_after: Duration, admission_window: Duration) -> Self {
        Self {
            max_admit,
            abandon_after,
            admission_window,
            scan_limit: max_admit.saturating_mul(4).clamp(MIN_SCAN, 100_000),
            units_per_buyer: 0,
            rate: None,
            outage_gap: None,
            tick: Duration::ZERO,
        }
    }
}

/// What an admission tick did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmitOutcome {
    pub state: SaleState,
    /// The users admitted now, in queue order.
    pub admitted: Vec<UserId>,
    /// Silent users skipped at the head now (moved to `qskip`; they may come back).
    pub skipped: u64,
    pub queue_length: u64,
    /// Live admissions after the tick.
    pub active: u64,
    pub limit: AdmitLimit,
}

/// What a reap did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReapOutcome {
    /// Lapsed admissions removed.
    pub expired: u64,
    /// Silent waiters skipped (moved from `q` to `qskip`).
    pub skipped: u64,
    /// Places lost, silent past the return grace (removed from `q` or `qskip`).
    pub abandoned: u64,
    pub queue_length: u64,
    /// Skipped places left (`qskip`).
    pub skipped_length: u64,
    /// This call reached the tail of both; the next one starts at the head.
    pub wrapped: bool,
}

/// The figures behind `GET /w/{sale}/stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub state: SaleState,
    /// Buyers in the waiting line (`q`; skipped places do not count).
    pub queue_length: u64,
    /// Skipped places that may still come back (`qskip`).
    pub skipped: u64,
    pub admitted_total: u64,
    pub active: u64,
    pub available: i64,
    pub held: i64,
    pub abandoned_total: u64,
    pub now_ms: u64,
    pub opens_at_ms: u64,
    /// The admitter's smoothed measured rate × 1000 (`wr.admit_rate_milli`, for the control
    /// room and `/stats`; ETAs use the rate the admitter can admit now); `None` before the
    /// admitter measured anything.
    pub measured_rate_milli: Option<u64>,
    /// The operator's notice to the line (door.md §4).
    pub notice: Option<Arc<str>>,
}

/// One sale's waiting room in Redis. Cheap to build per request.
#[derive(Debug, Clone)]
pub struct WaitQueue {
    redis: Redis,
    sale: SaleId,
    keys: QueueKeys,
    /// The sale's line layout (`cfg.line_shards`), read once the sale is armed: it is fixed
    /// for a sale's life, so a long-lived queue (the edge's batcher) reads it once, and a sale
    /// whose line is not spread pays nothing per poll.
    line: Arc<OnceLock<LineShards>>,
    /// Each line shard's `others` curve as its polls last handed it over, by the `at` it was
    /// published with (`wr_line_status.lua`): a poll then counts the other shards' places
    /// here instead of in Redis, and Redis sends a curve only when the leader published a new
    /// one. Empty for a sale whose line is not spread.
    curves: Arc<Mutex<HashMap<usize, HeldCurve>>>,
}

/// A line shard's `others` curve and the `at` it was published with.
#[derive(Debug, Clone)]
struct HeldCurve {
    at: Vec<u8>,
    curve: Arc<crate::line::CountCurve>,
}

impl WaitQueue {
    pub fn new(redis: &Redis, sale: SaleId) -> Self {
        Self {
            keys: QueueKeys::new(redis, sale),
            sale,
            redis: redis.clone(),
            line: Arc::new(OnceLock::new()),
            curves: Arc::default(),
        }
    }

    /// The queue of a sale whose line layout the caller knows already (the admitter's leader,
    /// from `sale_view.lua` and its own record): [`WaitQueue::line`] then reads nothing.
    pub fn with_line(self, line: LineShards) -> Self {
        // A fresh queue: the cell is empty, so this sets it.
        let _ = self.line.set(line);
        self
    }

    /// The sale's line layout; `None` while the sale is not armed (nothing is remembered then,
    /// so a sale armed later is read again).
    pub async fn line(&self) -> anyhow::Result<Option<&LineShards>> {
        if let Some(line) = self.line.get() {
            return Ok(Some(line));
        }
        let (opens_at, count): (Option<String>, Option<i64>) = self
            .redis
            .pool()
            .hmget(&self.keys.cfg, vec!["opens_at", "line_shards"])
            .await
            .with_context(|| format!("reading {}'s line layout", self.sale))?;
        if opens_at.is_none() {
            return Ok(None);
        }
        let count = count.unwrap_or(1).clamp(1, i64::from(u16::MAX)) as u16;
        Ok(Some(self.line.get_or_init(|| {
            LineShards::new(&self.redis, self.sale, count)
        })))
    }

    pub fn keys(&self) -> &QueueKeys {
        &self.keys
    }

    /// How many line shards the sale's line is spread over, as far as this queue has read its
    /// layout (1 before [`WaitQueue::line`] read it, and for a line on the sale's own slot).
    /// Reads nothing.
    pub fn spread(&self) -> u16 {
        self.line.get().map_or(1, LineShards::count)
    }

    /// Joins the queue, or returns the place the user already has (from any replica).
    /// `None`: the sale is not armed in Redis.
    pub async fn join(
        &self,
        user: UserId,
        options: &JoinOptions,
    ) -> anyhow::Result<Option<JoinOutcome>> {
        self.join_through(user, options, &Verdict::Open, None).await
    }

    /// [`WaitQueue::join`] with the edge's verdict on the request's body and proof of work
    /// (door.md §1) and the access code's hash ([`dropline_core::sale::door::code_hash`],
    /// door.md §2), acted on only when the user has no place.
    pub async fn join_through(
        &self,
        user: UserId,
        options: &JoinOptions,
        verdict: &Verdict,
        code: Option<&[u8; 32]>,
    ) -> anyhow::Result<Option<JoinOutcome>> {
        let ask = JoinAsk {
            user,
            verdict: verdict.clone(),
            code: code.copied(),
        };
        let mut all = self.join_many(std::slice::from_ref(&ask), options).await?;
        all.pop().context("wr_join: no reply for the user")?
    }

    /// [`WaitQueue::join_through`] for a batch of joins in one call (one Redis round trip and
    /// one script run for all), handled in order as if each were its own call at the same
    /// instant; answers in the same order. At most [`MAX_JOIN_BATCH`] joins. The outer error is
    /// the batch's (Redis, a malformed reply); an inner one a join's own (no pre-open key was
    /// free near its draw).
    pub async fn join_many(
        &self,
        asks: &[JoinAsk],
        options: &JoinOptions,
    ) -> anyhow::Result<Vec<anyhow::Result<Option<JoinOutcome>>>> {
        anyhow::ensure!(
            !asks.is_empty() && asks.len() <= MAX_JOIN_BATCH,
            "wr_join: a batch holds 1..={MAX_JOIN_BATCH} joins, not {}",
            asks.len()
        );
        if let Some(line) = self.line().await?
            && line.count() > 1
        {
            return self.join_spread(line, asks, options).await;
        }
        Ok(self
            .join_rows(asks, options)
            .await?
            .into_iter()
            .map(|row| join_outcome(&Reply::new(row, "wr_join", 14)?))
            .collect())
    }

    /// `wr_join.lua` for `asks` on the sale's slot: its rows, in order.
    async fn join_rows(
        &self,
        asks: &[JoinAsk],
        options: &JoinOptions,
    ) -> anyhow::Result<Vec<Value>> {
        let k = &self.keys;
        let layout = SaleKeys::new(&self.redis, self.sale);
        let mut keys: Vec<String> = Vec::with_capacity(JOIN_KEYS + 2 * asks.len());
        keys.extend(
            [
                &k.cfg, &k.avail, &k.held, &k.q, &k.adm, &k.seq, &k.wr, &k.skip, &k.codes,
            ]
            .into_iter()
            .cloned(),
        );
        keys.push(layout.code_use());
        keys.extend([&k.wt, &k.rep, &k.rps, &k.wtc, &k.wtp].into_iter().cloned());
        let mut args = Vec::with_capacity(3 + 5 * asks.len());
        args.extend([
            Value::from(options.max_queue_length.to_string()),
            Value::from(millis(options.return_grace)),
            Value::from(options.code_failures_per_hour.to_string()),
        ]);
        {
            // Not Send: dropped before the call is awaited.
            let mut rng = rand::rng();
            for ask in asks {
                let (spent_key, expires_at_ms) = match &ask.verdict {
                    Verdict::PowSolved {
                        spent_id,
                        expires_at_ms,
                    } => (layout.pow_spent(spent_id), *expires_at_ms),
                    // Named for the cluster slot only: the script touches it with a solved
                    // challenge.
                    _ => (layout.pow_spent("-"), 0),
                };
                keys.push(spent_key);
                keys.push(layout.code_failures(ask.user));
                // Used only if the user is new and the sale not open yet. ThreadRng is a CSPRNG
                // (ChaCha, seeded from the OS), so nobody can predict or steer a draw.
                let draw: u64 = rng.random_range(0..2 * PRE_OPEN_KEYS);
                args.extend([
                    Value::from(&member(ask.user)[..]),
                    Value::from(draw.to_string()),
                    Value::from(ask.verdict.as_arg()),
                    Value::from(expires_at_ms.to_string()),
                    ask.code
                        .map_or_else(|| Value::from(""), |hash| Value::from(&hash[..])),
                ]);
            }
        }
        let reply: Value = WR_JOIN.run(&self.redis, keys, args).await?;
        let Value::Array(rows) = reply else {
            anyhow::bail!("wr_join: expected an array, got {reply:?}");
        };
        anyhow::ensure!(
            rows.len() == asks.len(),
            "wr_join: {} replies for {} joins",
            rows.len(),
            asks.len()
        );
        Ok(rows)
    }

    /// [`WaitQueue::join_many`] on a line spread over `line`'s shards (README "A line that
    /// outgrows one Redis: the design"), three calls: (1) each user's line shard, as a poll
    /// (`wr_line_status.lua`): a place or an admission there is the answer, nothing checked or
    /// spent; (2) the others on the sale's slot (`wr_join.lua`, which judges and spends
    /// everything as on one shard and scores new places without writing them); (3) the new
    /// places onto their shards (`wr_line_place.lua`, one place per user: a user whose other
    /// tab got there first is answered with a poll of that place). Shards are called
    /// concurrently; answers in `asks`' order.
    async fn join_spread(
        &self,
        line: &LineShards,
        asks: &[JoinAsk],
        options: &JoinOptions,
    ) -> anyhow::Result<Vec<anyhow::Result<Option<JoinOutcome>>>> {
        let users: Vec<UserId> = asks.iter().map(|ask| ask.user).collect();
        let mut out: Vec<Option<anyhow::Result<Option<JoinOutcome>>>> =
            asks.iter().map(|_| None).collect();
        // (1) A place or an admission on the user's shard.
        let standing = self
            .status_spread(line, &users, options.return_grace)
            .await?;
        let mut rest = Vec::new();
        for (index, status) in standing.into_iter().enumerate() {
            match status {
                Some(status)
                    if matches!(
                        status.place,
                        Place::Waiting { .. } | Place::Scheduled | Place::Admitted { .. }
                    ) =>
                {
                    out[index] = Some(Ok(Some(JoinOutcome::Standing { status, new: false })));
                }
                _ => rest.push(index),
            }
        }
        // (2) The sale's slot judges the others.
        // (index, the answer to be, score, sampled for the report)
        let mut new_places: Vec<(usize, Status, u64, bool)> = Vec::new();
        let mut seed: Option<Vec<Value>> = None;
        if !rest.is_empty() {
            let slot_asks: Vec<JoinAsk> = rest.iter().map(|&i| asks[i].clone()).collect();
            let rows = self.join_rows(&slot_asks, options).await?;
            for (&index, row) in rest.iter().zip(rows) {
                let answer = Reply::new(row, "wr_join", 14).and_then(|reply| {
                    if reply.text(0)? == "placed" {
                        if seed.is_none() {
                            seed = Some(placed_seed(&reply)?);
                        }
                        new_places.push((
                            index,
                            placed_status(&reply)?,
                            reply.uint(1)?,
                            reply.uint(7)? == 2,
                        ));
                        return Ok(None);
                    }
                    Ok(Some(join_outcome(&reply)))
                });
                match answer {
                    Ok(Some(outcome)) => out[index] = Some(outcome),
                    Ok(None) => {}
                    Err(error) => out[index] = Some(Err(error)),
                }
            }
        }
        // (3) The new places onto their shards.
        let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); usize::from(line.count())];
        for (k, (index, ..)) in new_places.iter().enumerate() {
            if let Some(shard) = by_shard.get_mut(usize::from(line.shard_of(users[*index]))) {
                shard.push(k);
            }
        }
        let placed = try_join_all(
            by_shard
                .iter()
                .enumerate()
                .filter(|(_, mine)| !mine.is_empty())
                .map(|(shard, mine)| {
                    let new_places = &new_places;
                    let users = &users;
                    let seed = &seed;
                    async move {
                        let keys = line.all().get(shard).context("a line shard out of range")?;
                        let mut args = seed.clone().unwrap_or_default();
                        for &k in mine {
                            let (index, _, score, sampled) = &new_places[k];
                            args.push(Value::from(&member(users[*index])[..]));
                            args.push(Value::from(score.to_string()));
                            args.push(Value::from(if *sampled { "1" } else { "0" }));
                        }
                        let reply: Vec<i64> = WR_LINE_PLACE
                            .run(&self.redis, keys.place_keys().to_vec(), args)
                            .await
                            .with_context(|| format!("new places on the line shard {}", keys.q))?;
                        anyhow::ensure!(
                            reply.len() == 2 * mine.len(),
                            "wr_line_place: {} values for {} places",
                            reply.len(),
                            mine.len()
                        );
                        anyhow::Ok(
                            mine.iter()
                                .copied()
                                .zip(reply.chunks(2).map(|pair| (pair[0] == 1, pair[1])))
                                .collect::<Vec<_>>(),
                        )
                    }
                }),
        )
        .await?;
        let mut raced = Vec::new();
        for (k, (new, position)) in placed.into_iter().flatten() {
            let (index, status, ..) = &new_places[k];
            if !new {
                raced.push(k);
                continue;
            }
            let mut status = status.clone();
            if let Place::Waiting { .. } = status.place {
                status.place = Place::Waiting {
                    position: u64::try_from(position).unwrap_or(0),
                };
            }
            out[*index] = Some(Ok(Some(JoinOutcome::Standing { status, new: true })));
        }
        // A user whose other tab placed first: that place, as a poll sees it. Before the
        // leader's first tick has published to the shard a poll cannot say (it answers as for
        // an unarmed sale); the place is then answered from what the sale's slot said, behind
        // the line as last counted (the same user twice in one batch gets the same score back
        // from wr_join.lua, so that is the place itself).
        if !raced.is_empty() {
            let raced_users: Vec<UserId> = raced.iter().map(|&k| users[new_places[k].0]).collect();
            let polled = self
                .status_spread(line, &raced_users, options.return_grace)
                .await?;
            for (k, polled) in raced.into_iter().zip(polled) {
                let (index, said, ..) = &new_places[k];
                let status = polled.unwrap_or_else(|| {
                    let mut status = said.clone();
                    if let Place::Waiting { .. } = status.place {
                        status.place = Place::Waiting {
                            position: status.queue_length.max(1),
                        };
                    }
                    status
                });
                out[*index] = Some(Ok(Some(JoinOutcome::Standing { status, new: false })));
            }
        }
        Ok(out
            .into_iter()
            .map(|answer| {
                answer.unwrap_or_else(|| Err(anyhow::anyhow!("a spread join left unanswered")))
            })
            .collect())
    }

    /// Whether the sale is armed (`None`: not), its proof-of-work difficulty and Redis time, for
    /// issuing a challenge. Read only.
    pub async fn challenge_info(&self) -> anyhow::Result<Option<ChallengeInfo>> {
        let reply: Value = WR_CHALLENGE
            .run(&self.redis, vec![&self.keys.cfg], Vec::<Value>::new())
            .await?;
        let reply = Reply::new(reply, "wr_challenge", 3)?;
        if reply.uint(0)? == 0 {
            return Ok(None);
        }
        Ok(Some(ChallengeInfo {
            // A negative difficulty is none.
            difficulty: u64::try_from(reply.int(1)?).unwrap_or(0),
            now_ms: reply.uint(2)?,
        }))
    }

    /// The user's standing; records the poll that keeps a waiting place alive and brings a
    /// skipped place back within `return_grace` of the last poll (a place silent for longer is
    /// lost). `None`: the sale is not armed in Redis.
    pub async fn status(
        &self,
        user: UserId,
        return_grace: Duration,
    ) -> anyhow::Result<Option<Status>> {
        let mut all = self.status_many(&[user], return_grace).await?;
        all.pop().context("wr_status: no reply for the user")
    }

    /// [`WaitQueue::status`] for a batch of users in one call (one Redis round trip and one
    /// script run for all), answers in the same order. Each is `None` when the sale is not
    /// armed in Redis. At most [`MAX_STATUS_BATCH`] users.
    pub async fn status_many(
        &self,
        users: &[UserId],
        return_grace: Duration,
    ) -> anyhow::Result<Vec<Option<Status>>> {
        anyhow::ensure!(
            !users.is_empty() && users.len() <= MAX_STATUS_BATCH,
            "wr_status: a batch holds 1..={MAX_STATUS_BATCH} users, not {}",
            users.len()
        );
        if let Some(line) = self.line().await?
            && line.count() > 1
        {
            return self.status_spread(line, users, return_grace).await;
        }
        let k = &self.keys;
        let mut args = Vec::with_capacity(users.len() + 1);
        args.push(Value::from(millis(return_grace)));
        args.extend(users.iter().map(|user| Value::from(&member(*user)[..])));
        let reply: Value = WR_STATUS
            .run(
                &self.redis,
                vec![
                    &k.cfg, &k.avail, &k.held, &k.q, &k.adm, &k.wr, &k.skip, &k.wt, &k.wtp,
                ],
                args,
            )
            .await?;
        status_reply(reply, users.len(), "wr_status")
    }

    /// [`WaitQueue::status_many`] of a line spread over `line`'s shards: each shard's users
    /// with one call of `wr_line_status.lua` on that shard alone (the sale's slot is not
    /// touched), the shards concurrently, the answers put back in `users`' order.
    async fn status_spread(
        &self,
        line: &LineShards,
        users: &[UserId],
        return_grace: Duration,
    ) -> anyhow::Result<Vec<Option<Status>>> {
        let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); usize::from(line.count())];
        for (index, user) in users.iter().enumerate() {
            if let Some(shard) = by_shard.get_mut(usize::from(line.shard_of(*user))) {
                shard.push(index);
            }
        }
        let grace = millis(return_grace);
        let answers = try_join_all(
            by_shard
                .iter()
                .enumerate()
                .filter(|(_, asked)| !asked.is_empty())
                .map(|(shard, asked)| async move {
                    let keys = line.all().get(shard).context("a line shard out of range")?;
                    let held = self.held_curve(shard);
                    let mut args = Vec::with_capacity(asked.len() + 2);
                    args.push(Value::from(grace));
                    args.push(Value::from(held.as_ref().map_or(&[][..], |h| &h.at[..])));
                    args.extend(asked.iter().map(|&i| Value::from(&member(users[i])[..])));
                    let reply: Value = WR_LINE_STATUS
                        .run(&self.redis, keys.place_keys().to_vec(), args)
                        .await
                        .with_context(|| format!("polls on the line shard {}", keys.q))?;
                    let answers = self
                        .line_status_reply(shard, held, reply, asked.len())
                        .with_context(|| format!("polls on the line shard {}", keys.q))?;
                    anyhow::Ok(asked.iter().copied().zip(answers).collect::<Vec<_>>())
                }),
        )
        .await?;
        let mut out = vec![None; users.len()];
        for (index, answer) in answers.into_iter().flatten() {
            out[index] = answer;
        }
        Ok(out)
    }

    /// The `others` curve this queue holds for line shard `shard`, if any.
    fn held_curve(&self, shard: usize) -> Option<HeldCurve> {
        let held = self
            .curves
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        held.get(&shard).cloned()
    }

    /// A `wr_line_status.lua` reply for `users` users of line shard `shard`, asked with the
    /// curve `held`: the other shards' places added to each position the script left to the
    /// edge (`lookup`), from the curve the reply carries (then kept for the next polls) or
    /// the one held, whichever has the reply's `at`.
    fn line_status_reply(
        &self,
        shard: usize,
        held: Option<HeldCurve>,
        reply: Value,
        users: usize,
    ) -> anyhow::Result<Vec<Option<Status>>> {
        const SCRIPT: &str = "wr_line_status";
        let Some(parts) = status_parts(reply, users, SCRIPT, StatusShape::LINE)? else {
            return Ok(vec![None; users]);
        };
        let [at, sent, packed] = &parts.extra[..] else {
            anyhow::bail!("{SCRIPT}: {} items after the header", parts.extra.len());
        };
        let at = at
            .as_bytes()
            .context("wr_line_status: `at` is not a string")?;
        let curve = if sent.as_i64() == Some(1) {
            let packed = packed
                .as_bytes()
                .context("wr_line_status: the curve is not bytes")?;
            let curve = Arc::new(crate::line::unpack(packed).context("wr_line_status's curve")?);
            let mut held = self
                .curves
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            held.insert(
                shard,
                HeldCurve {
                    at: at.to_vec(),
                    curve: Arc::clone(&curve),
                },
            );
            Some(curve)
        } else {
            held.filter(|h| h.at == at).map(|h| h.curve)
        };
        parts
            .answers
            .into_iter()
            .map(|(mut status, lookup)| {
                if lookup >= 0 {
                    let curve = curve.as_ref().with_context(|| {
                        format!("{SCRIPT}: a lookup on the curve of {at:?}, which is not held")
                    })?;
                    if let Place::Waiting { position } = &mut status.place {
                        *position += crate::line::ahead_in_others(curve, lookup as f64);
                    }
                }
                Ok(Some(status))
            })
            .collect()
    }

    /// The whole admission tick of a spread line ([`crate::line::tick::run`], positions
    /// published included); `None` when the sale's line is not spread (or it is not armed).
    /// `queue_length` is the line's length the caller last saw, for the report's series
    /// (`None`: not sampled).
    pub async fn spread_tick(
        &self,
        params: &AdmitParams,
        queue_length: Option<u64>,
    ) -> anyhow::Result<Option<crate::line::tick::Tick>> {
        let Some(line) = self.line().await?.filter(|line| line.count() > 1) else {
            return Ok(None);
        };
        let layout = SaleKeys::new(&self.redis, self.sale);
        let tick = crate::line::tick::TickParams::from_admit(params);
        let done = crate::line::tick::run(
            &self.redis,
            &layout,
            line,
            &tick,
            params.scan_limit,
            queue_length,
        )
        .await?;
        Ok(Some(done))
    }

    /// Leaves the queue (a skipped place too) and gives up an admission. `true` when there was
    /// something to remove. On a spread line, two calls: the user's line shard, then the
    /// sale's slot (`adm`, and the report's entry).
    pub async fn leave(&self, user: UserId) -> anyhow::Result<bool> {
        let k = &self.keys;
        let mut from_line = false;
        if let Some(line) = self.line().await?
            && line.count() > 1
        {
            // The place is on the user's line shard: wr_leave.lua there, with the shard's ladm
            // for adm (a copy, or a place a tick took: not admitted then), its lwt for the
            // report's entries (a sampled buyer's wait for a first ETA), its lmeta for the
            // report's totals (`left` is counted in lmeta and folded into the sale's rep by
            // the next tick) and its lwte (a first ETA noted and not yet folded: a quick
            // rejoin would otherwise get it). Then the admission on the sale's slot, below,
            // which also removes the report's entry there when this call removed something.
            let shard = line.keys_of(user);
            let removed: i64 = WR_LEAVE
                .run(
                    &self.redis,
                    vec![
                        &shard.q,
                        &shard.outbox,
                        &shard.skip,
                        &shard.eta_wait,
                        &shard.meta,
                        &shard.eta_noted,
                    ],
                    vec![Value::from(&member(user)[..])],
                )
                .await
                .with_context(|| format!("leaving the line shard {}", shard.q))?;
            from_line = removed == 1;
        }
        let mut args = vec![Value::from(&member(user)[..])];
        if from_line {
            args.push(Value::from("1"));
        }
        let removed: i64 = WR_LEAVE
            .run(
                &self.redis,
                vec![&k.q, &k.adm, &k.skip, &k.wt, &k.rep, &k.wtp],
                args,
            )
            .await?;
        Ok(from_line || removed == 1)
    }

    /// One admission tick (leader only). `None`: the sale is not armed in Redis.
    pub async fn admit(&self, params: &AdmitParams) -> anyhow::Result<Option<AdmitOutcome>> {
        if let Some(done) = self.spread_tick(params, None).await? {
            return done.outcome();
        }
        let k = &self.keys;
        let mut args = vec![
            Value::from(i64::from(params.max_admit)),
            Value::from(millis(params.abandon_after)),
            Value::from(millis(params.admission_window)),
            Value::from(i64::from(params.scan_limit.max(1))),
            Value::from(i64::from(params.units_per_buyer)),
        ];
        // ARGV[6..10] always: an absent rate is tolerance 0 (no rate credit), an absent gap 0.
        if let Some(rate) = params.rate {
            // As text: Lua's tonumber reads it exactly, fractions included.
            args.push(Value::from(rate.per_second.max(0.0).to_string()));
            args.push(Value::from(
                (rate.tolerance.as_secs_f64() * 1000.0).to_string(),
            ));
        } else {
            args.extend([Value::from("0"), Value::from("0")]);
        }
        args.push(Value::from(
            params.outage_gap.map_or(0, |gap| millis(gap).max(1)),
        ));
        args.push(Value::from(millis(params.tick)));
        args.push(Value::from(
            params.rate.map_or(0, |rate| millis(rate.carry)),
        ));
        let reply: Value = WR_ADMIT
            .run(
                &self.redis,
                vec![
                    &k.cfg, &k.avail, &k.held, &k.q, &k.adm, &k.wr, &k.skip, &k.wt, &k.rep, &k.rps,
                    &k.wtc, &k.wtp,
                ],
                args,
            )
            .await?;
        let reply = Reply::new(reply, "wr_admit", 7)?;
        let state = reply.text(0)?;
        if state == "not_found" {
            return Ok(None);
        }
        let admitted = reply
            .array(6)?
            .iter()
            .map(|v| {
                let bytes = v
                    .as_bytes()
                    .context("wr_admit: a user id is not a string")?;
                UserId::from_slice(bytes).context("wr_admit: a user id is not 16 bytes")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Some(AdmitOutcome {
            state: state.parse::<SaleState>()?,
            admitted,
            skipped: reply.uint(2)?,
            queue_length: reply.uint(3)?,
            active: reply.uint(4)?,
            limit: AdmitLimit::parse(&reply.text(5)?)?,
        }))
    }

    /// Removes lapsed admissions, skips waiters silent for longer than `abandon_after` and
    /// removes places silent for longer than `return_grace`, looking at most at `batch`
    /// (≤ [`MAX_REAP_BATCH`]) of each: admissions, line entries, skipped places.
    pub async fn reap(
        &self,
        abandon_after: Duration,
        return_grace: Duration,
        batch: u32,
    ) -> anyhow::Result<ReapOutcome> {
        let k = &self.keys;
        let keys = [&k.q, &k.adm, &k.wr, &k.skip, &k.wt, &k.wtp].map(String::as_str);
        reap_keys(&self.redis, &keys, abandon_after, return_grace, batch).await
    }

    /// The sale's figures (read only). `None`: the sale is not armed in Redis.
    pub async fn stats(&self) -> anyhow::Result<Option<Stats>> {
        let k = &self.keys;
        let reply: Value = WR_STATS
            .run(
                &self.redis,
                vec![&k.cfg, &k.avail, &k.held, &k.q, &k.adm, &k.wr, &k.skip],
                Vec::<Value>::new(),
            )
            .await?;
        let reply = Reply::new(reply, "wr_stats", 12)?;
        let state = reply.text(0)?;
        if state == "not_found" {
            return Ok(None);
        }
        Ok(Some(Stats {
            state: state.parse::<SaleState>()?,
            queue_length: reply.uint(1)?,
            admitted_total: reply.uint(2)?,
            active: reply.uint(3)?,
            available: reply.int(4)?,
            held: reply.int(5)?,
            abandoned_total: reply.uint(6)?,
            now_ms: reply.uint(7)?,
            opens_at_ms: reply.uint(8)?,
            measured_rate_milli: u64::try_from(reply.int(9)?).ok(),
            notice: reply.notice(10)?,
            skipped: reply.uint(11)?,
        }))
    }
}

/// A `wr_status.lua` reply for `users` users, in their order; `None` each when the sale is
/// not armed.
fn status_reply(
    reply: Value,
    users: usize,
    script: &'static str,
) -> anyhow::Result<Vec<Option<Status>>> {
    Ok(
        match status_parts(reply, users, script, StatusShape::SLOT)? {
            Some(parts) => parts.answers.into_iter().map(|(s, _)| Some(s)).collect(),
            None => vec![None; users],
        },
    )
}

/// How a status reply is laid out past the parts every status reply has (the header's
/// [`STATUS_HEADER`] items, each user's [`STATUS_FIELDS`] integers).
#[derive(Debug, Clone, Copy)]
struct StatusShape {
    /// Items of the header after [`STATUS_HEADER`].
    extra: usize,
    /// Whether each user's integers end with a lookup (a score, or -1).
    lookup: bool,
}

impl StatusShape {
    /// `wr_status.lua`'s: the common parts alone.
    const SLOT: Self = Self {
        extra: 0,
        lookup: false,
    };
    /// `wr_line_status.lua`'s: at, sent and curve after the header; a lookup after each
    /// user's five.
    const LINE: Self = Self {
        extra: 3,
        lookup: true,
    };
}

/// A status reply taken apart: `wr_status.lua`'s, or `wr_line_status.lua`'s with its extra
/// header items and lookups ([`StatusShape`]).
struct StatusParts {
    /// The header's items past [`STATUS_HEADER`].
    extra: Vec<Value>,
    /// Each user's answer, with its lookup (-1 without one).
    answers: Vec<(Status, i64)>,
}

/// [`StatusParts`] of a status reply for `users` users; `None` when the sale is not armed.
fn status_parts(
    reply: Value,
    users: usize,
    script: &'static str,
    shape: StatusShape,
) -> anyhow::Result<Option<StatusParts>> {
    let Value::Array(items) = reply else {
        anyhow::bail!("{script}: expected an array, got {reply:?}");
    };
    if items.len() == 1 && items.first().and_then(Value::as_str).as_deref() == Some("not_found") {
        return Ok(None);
    }
    let fields = STATUS_FIELDS + usize::from(shape.lookup);
    anyhow::ensure!(
        items.len() == STATUS_HEADER + shape.extra + fields * users,
        "{script}: {} items for {} users",
        items.len(),
        users
    );
    let mut items = items.into_iter();
    let header = Reply::new(
        Value::Array(items.by_ref().take(STATUS_HEADER).collect()),
        script,
        STATUS_HEADER,
    )?;
    let extra: Vec<Value> = items.by_ref().take(shape.extra).collect();
    let sale = Status {
        place: Place::NotQueued,
        opens_at_ms: header.uint(0)?,
        now_ms: header.uint(1)?,
        queue_length: 0,
        paused: header.uint(2)? == 1,
        admit_per_second: header.uint(3)?,
        free: header.uint(4)?,
        limited_rate_milli: u64::try_from(header.int(5)?).ok(),
        notice: header.notice(6)?,
        group: None,
    };
    let groups = Groups::new(&header.text(7)?);
    let answers = items
        .as_slice()
        .chunks_exact(fields)
        .enumerate()
        .map(|(i, fields)| {
            let malformed = || format!("{script}: malformed answer {i}: {fields:?}");
            let (place, queue_length, rank) = status_fields(fields).with_context(malformed)?;
            let more = match fields.get(STATUS_FIELDS) {
                Some(more) => more.as_i64().with_context(malformed)?,
                None => -1,
            };
            let status = Status {
                place,
                queue_length,
                group: groups.name(rank),
                ..sale.clone()
            };
            Ok((status, more))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Some(StatusParts { extra, answers }))
}

/// The sale-wide values at the head of a wr_status reply.
const STATUS_HEADER: usize = 8;
/// The integers of each user's answer after the header (`status_push` in `lua/lib/prelude.lua`).
const STATUS_FIELDS: usize = 5;

/// A sale's priority groups as the scripts answer them (`cfg.groups`), to name a group rank.
/// `public` is made once per reply, not once per row.
struct Groups {
    named: Vec<Arc<str>>,
    public: Arc<str>,
}

impl Groups {
    fn new(field: &str) -> Self {
        Self {
            named: dropline_core::sale::door::parse_groups_field(field)
                .into_iter()
                .map(Arc::from)
                .collect(),
            public: Arc::from(dropline_core::sale::door::PUBLIC_GROUP),
        }
    }

    /// The name of group `rank` (`public` after the named ones); `None` for a negative rank
    /// (no place) or one past `public` (a group the sale no longer has: not expected).
    fn name(&self, rank: i64) -> Option<Arc<str>> {
        let rank = usize::try_from(rank).ok()?;
        match rank.cmp(&self.named.len()) {
            std::cmp::Ordering::Less => self.named.get(rank).cloned(),
            std::cmp::Ordering::Equal => Some(self.public.clone()),
            std::cmp::Ordering::Greater => None,
        }
    }
}

/// One user's answer in a wr_status reply, five integers (`status_push` in
/// `lua/lib/prelude.lua`): the state's code, position, deadline_ms, queue_length and group
/// rank. Returns the place, the queue length after this user's poll and the place's group rank.
fn status_fields(fields: &[Value]) -> anyhow::Result<(Place, u64, i64)> {
    let int = |i: usize| -> anyhow::Result<i64> {
        fields
            .get(i)
            .and_then(Value::as_i64)
            .with_context(|| format!("field {i} is not an integer"))
    };
    let uint = |i: usize| -> anyhow::Result<u64> {
        let n = int(i)?;
        u64::try_from(n).with_context(|| format!("field {i} is negative ({n})"))
    };
    let place = match int(0)? {
        0 => Place::NotQueued,
        1 => Place::Scheduled,
        2 => Place::Waiting { position: uint(1)? },
        3 => Place::Admitted {
            deadline_ms: uint(2)?,
        },
        4 => Place::SoldOut,
        5 => Place::Closed,
        other => anyhow::bail!("unknown state code {other}"),
    };
    Ok((place, uint(3)?, int(4)?))
}

/// One call of `lua/wr_reap.lua` on `[q, adm, wr, skip, wt]`: a sale's own line, or one line
/// shard of a spread line (`line::reap`: its `q`, its `ladm` copy, its `lmeta` and its `skip`,
/// no `wt`: the report's entries are on the sale's slot).
pub(crate) async fn reap_keys(
    redis: &Redis,
    keys: &[&str],
    abandon_after: Duration,
    return_grace: Duration,
    batch: u32,
) -> anyhow::Result<ReapOutcome> {
    let reply: Value = WR_REAP
        .run(
            redis,
            keys.to_vec(),
            vec![
                Value::from(millis(abandon_after)),
                Value::from(i64::from(batch.clamp(1, MAX_REAP_BATCH))),
                Value::from(millis(return_grace.max(abandon_after))),
            ],
        )
        .await?;
    let reply = Reply::new(reply, "wr_reap", 6)?;
    Ok(ReapOutcome {
        expired: reply.uint(0)?,
        skipped: reply.uint(1)?,
        abandoned: reply.uint(2)?,
        queue_length: reply.uint(3)?,
        skipped_length: reply.uint(4)?,
        wrapped: reply.uint(5)? == 1,
    })
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One join's reply from `wr_join.lua`; `None`: the sale is not armed in Redis.
/// `wr_line_place.lua`'s seed of a shard's `lmeta` (ARGV[1..10]) from a `placed` row of
/// `wr_join.lua`: what the sale's slot just said.
fn placed_seed(reply: &Reply) -> anyhow::Result<Vec<Value>> {
    let scheduled = reply.uint(4)? < reply.uint(3)?;
    Ok(vec![
        Value::from(if scheduled { "scheduled" } else { "open" }),
        Value::from(reply.uint(3)?.to_string()),
        Value::from(reply.uint(6)?.to_string()),
        Value::from(reply.uint(8)?.to_string()),
        Value::from(reply.notice(11)?.as_deref().unwrap_or("").to_owned()),
        Value::from(reply.text(12)?),
        Value::from(reply.uint(9)?.to_string()),
        Value::from(reply.int(10)?.to_string()),
        Value::from(reply.uint(5)?.to_string()),
        Value::from(reply.uint(2)?.to_string()),
    ])
}

/// A `placed` row of `wr_join.lua` (a spread line's new place, before it is on its shard): the
/// answer it will be, `scheduled` before the opening and otherwise `waiting` (its position is
/// the shard's to say, [`WaitQueue::join_spread`] puts it in).
fn placed_status(reply: &Reply) -> anyhow::Result<Status> {
    let scheduled = reply.uint(4)? < reply.uint(3)?;
    let mut status = reply.status(if scheduled { "scheduled" } else { "waiting" })?;
    if !scheduled {
        status.place = Place::Waiting { position: 0 };
    }
    Ok(status)
}

fn join_outcome(reply: &Reply) -> anyhow::Result<Option<JoinOutcome>> {
    let state = reply.text(0)?;
    let refused = |why| Some(JoinOutcome::Refused(why));
    Ok(match state.as_str() {
        "not_found" => None,
        "queue_full" => Some(JoinOutcome::QueueFull {
            queue_length: reply.uint(5)?,
            now_ms: reply.uint(4)?,
        }),
        "bad_request" => refused(Refusal::BadRequest),
        "pow_required" => refused(Refusal::PowRequired),
        "pow_invalid" => refused(Refusal::PowInvalid),
        "pow_expired" => refused(Refusal::PowExpired),
        "pow_spent" => refused(Refusal::PowSpent),
        "code_rate_limited" => refused(Refusal::CodeRateLimited {
            retry_after_ms: reply.uint(2)?,
        }),
        "access_code_invalid" => refused(Refusal::AccessCodeInvalid),
        "access_code_used" => refused(Refusal::AccessCodeUsed),
        "access_code_required" => refused(Refusal::AccessCodeRequired),
        "draw" => refused(Refusal::DrawSale),
        "no_key" => anyhow::bail!("wr_join: no free pre-open key near the draw"),
        _ => Some(JoinOutcome::Standing {
            status: reply.status(&state)?,
            new: reply.uint(7)? == 1,
        }),
    })
}

/// A script's array reply, read by position with the script's name in every error.
pub(crate) struct Reply {
    script: &'static str,
    items: Vec<Value>,
}

impl Reply {
    pub(crate) fn new(value: Value, script: &'static str, len: usize) -> anyhow::Result<Self> {
        let items = match value {
            Value::Array(items) => items,
            other => anyhow::bail!("{script}: expected an array, got {other:?}"),
        };
        anyhow::ensure!(
            items.len() == len,
            "{script}: expected {len} items, got {}",
            items.len()
        );
        Ok(Self { script, items })
    }

    fn item(&self, i: usize) -> anyhow::Result<&Value> {
        self.items
            .get(i)
            .with_context(|| format!("{}: item {i} missing", self.script))
    }

    pub(crate) fn int(&self, i: usize) -> anyhow::Result<i64> {
        self.item(i)?
            .as_i64()
            .with_context(|| format!("{}: item {i} is not an integer", self.script))
    }

    pub(crate) fn uint(&self, i: usize) -> anyhow::Result<u64> {
        let n = self.int(i)?;
        u64::try_from(n).with_context(|| format!("{}: item {i} is negative ({n})", self.script))
    }

    pub(crate) fn text(&self, i: usize) -> anyhow::Result<String> {
        self.item(i)?
            .as_str()
            .map(|s| s.into_owned())
            .with_context(|| format!("{}: item {i} is not a string", self.script))
    }

    /// A notice field: the text, or `None` for `""`.
    fn notice(&self, i: usize) -> anyhow::Result<Option<Arc<str>>> {
        let text = self.text(i)?;
        Ok((!text.is_empty()).then(|| Arc::from(text)))
    }

    fn array(&self, i: usize) -> anyhow::Result<&[Value]> {
        match self.item(i)? {
            Value::Array(items) => Ok(items),
            other => anyhow::bail!("{}: item {i} is not an array: {other:?}", self.script),
        }
    }

    /// wr_join's reply: {state, position, deadline_ms, opens_at_ms,
    /// now_ms, queue_length, paused, new, admit_per_second, free, limited_rate_milli, notice,
    /// groups, group_rank}.
    fn status(&self, state: &str) -> anyhow::Result<Status> {
        let place = match state {
            "scheduled" => Place::Scheduled,
            "waiting" => Place::Waiting {
                position: self.uint(1)?,
            },
            "admitted" => Place::Admitted {
                deadline_ms: self.uint(2)?,
            },
            "sold_out" => Place::SoldOut,
            "closed" => Place::Closed,
            "none" => Place::NotQueued,
            other => anyhow::bail!("{}: unknown state `{other}`", self.script),
        };
        Ok(Status {
            place,
            opens_at_ms: self.uint(3)?,
            now_ms: self.uint(4)?,
            queue_length: self.uint(5)?,
            paused: self.uint(6)? == 1,
            admit_per_second: self.uint(8)?,
            free: self.uint(9)?,
            limited_rate_milli: u64::try_from(self.int(10)?).ok(),
            notice: self.notice(11)?,
            group: Groups::new(&self.text(12)?).name(self.int(13)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(values: &[i64]) -> Vec<Value> {
        values.iter().map(|&n| Value::Integer(n)).collect()
    }

    /// The reply of `wr_status.lua` with `answers` after a header: paused, rate 100, a notice,
    /// one priority group.
    fn reply(answers: &[i64]) -> Value {
        let mut items = ints(&[1_000, 2_000, 1, 100, 7, -1]);
        items.push(Value::from("doors at eight"));
        items.push(Value::from("vip"));
        items.extend(ints(answers));
        Value::Array(items)
    }

    #[test]
    fn each_users_five_integers_are_read_in_order() -> anyhow::Result<()> {
        let answers = status_reply(
            reply(&[2, 3, 0, 40, 1, 3, 0, 9_000, 40, -1, 0, 0, 0, 39, -1]),
            3,
            "wr_status",
        )?;
        let answers: Vec<Status> = answers.into_iter().flatten().collect();
        assert_eq!(answers.len(), 3);
        assert_eq!(answers[0].place, Place::Waiting { position: 3 });
        assert_eq!(answers[0].group.as_deref(), Some("public"));
        assert_eq!(answers[1].place, Place::Admitted { deadline_ms: 9_000 });
        assert_eq!(answers[1].group, None);
        assert_eq!(answers[2].place, Place::NotQueued);
        assert_eq!(answers[2].queue_length, 39);
        for answer in &answers {
            assert!(answer.paused);
            assert_eq!(answer.notice.as_deref(), Some("doors at eight"));
            assert_eq!((answer.admit_per_second, answer.free), (100, 7));
            assert_eq!(answer.limited_rate_milli, None);
        }
        let states: Vec<Place> = [1, 4, 5]
            .iter()
            .map(|&code| status_fields(&ints(&[code, 0, 0, 0, 0])).map(|f| f.0))
            .collect::<anyhow::Result<_>>()?;
        assert_eq!(states, [Place::Scheduled, Place::SoldOut, Place::Closed]);
        Ok(())
    }

    #[test]
    fn a_short_or_malformed_answer_is_an_error_naming_the_script() {
        for (answers, users) in [
            (vec![2, 3, 0, 40], 1),
            (vec![2, 3, 0, 40, 1, 2], 1),
            (vec![6, 0, 0, 0, -1], 1),
            (vec![2, -3, 0, 40, 1], 1),
            (vec![2, 3, 0, -40, 1], 1),
        ] {
            let err = status_reply(reply(&answers), users, "wr_status")
                .err()
                .map(|e| format!("{e:#}"));
            assert!(
                err.as_deref().is_some_and(|e| e.contains("wr_status")),
                "{answers:?}: {err:?}"
            );
        }
        let text = status_reply(
            {
                let Value::Array(mut items) = reply(&[]) else {
                    unreachable!("reply() is an array")
                };
                items.extend([Value::from("waiting 3 0 40 1")]);
                Value::Array(items)
            },
            1,
            "wr_line_status",
        );
        assert!(text.is_err());
        let not_found = status_reply(Value::Array(vec![Value::from("not_found")]), 2, "wr_status");
        assert!(matches!(not_found.as_deref(), Ok([None, None])));
    }
}
