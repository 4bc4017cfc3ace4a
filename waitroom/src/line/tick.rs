//! The line shards' half of an admission tick of a spread line (README "A line that outgrows
//! one Redis: the design", "A tick across shards", steps 2, 3, 4 and 6).
//!
//! 1. [`budget`]: the sale's slot says its state and the tick's budget, as `wr_admit.lua`
//!    computes it, nothing charged (`lua/wr_line_budget.lua`);
//! 2. [`heads`]: each shard skips its silent head places (as `wr_admit.lua` does) and returns
//!    up to the tick's budget of live ones, left in `q` (`lua/wr_line_head.lua`);
//! 3. [`merge`]: the leader keeps the budget's lowest scores across the shards. Scores are
//!    global (`wr_join.lua`'s layout), so this is the order one shard would have admitted in:
//!    priority groups, the pre-open shuffle, arrival order, a returning buyer's old place;
//! 4. [`take`]: on each shard the chosen places still in `q` with the merged score move into
//!    `ladm` with score −(queue score): taken, not yet in the sale's `adm`
//!    (`lua/wr_line_take.lua`);
//! 5. [`commit`]: the sale's slot writes them into `adm` with the deadline, within the budget
//!    judged again, and charges the rate credit and tells the report what it wrote, as
//!    `wr_admit.lua` does (`lua/wr_line_commit.lua`; the rules are `admit_budget` and
//!    `admit_record` in `lua/lib/prelude.lua`, shared with `wr_admit.lua`);
//! 6. [`settle`]: the shard's pending entries the sale's `adm` holds take their deadline, and
//!    `ladm` is the shard's copy of `adm` (`lua/wr_line_settle.lua`). [`pending`] lists what a
//!    leader that stopped between 4 and 6 left (or what the budget of step 5 held back), for
//!    the next tick to send through 5 and 6 first.

use anyhow::Context;
use dropline_core::clients::redis::Redis;
use dropline_core::ids::UserId;
use dropline_core::sale::keys::{LineKeys, LineShards, SaleKeys};
use fred::interfaces::{HashesInterface, KeysInterface, SortedSetsInterface};
use fred::types::Value;
use futures_util::future::try_join_all;
use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::positions::{CountCurve, publish, read_curve, segment_starts};

use crate::queue::{AdmitLimit, AdmitOutcome, AdmitParams};
use crate::scripts::{
    WR_LINE_BUDGET, WR_LINE_COMMIT, WR_LINE_FOLD, WR_LINE_HEAD, WR_LINE_NOTE, WR_LINE_SETTLE,
    WR_LINE_SYNC, WR_LINE_TAKE,
};
use dropline_core::sale::SaleState;

/// What [`heads`] found at the head of one shard.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Heads {
    /// Silent places moved from `q` to `skip` now.
    pub skipped: u64,
    /// Entries looked at (the scan limit when it stopped the call).
    pub looked: u64,
    /// The live head places, lowest score first.
    pub places: Vec<(UserId, f64)>,
    /// Places in the shard's `skip` after the call.
    pub skip_length: u64,
}

/// A place [`merge`] chose: its shard, user and score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chosen {
    pub shard: u16,
    pub user: UserId,
    pub score: f64,
}

/// Step 2 on one shard: up to `budget` live places at its head, the silent ones met on the way
/// skipped (silent for longer than `abandon_after`; `None` while the outage credit runs: nobody
/// is silent), and those right behind the last live place returned too, up to the next live
/// one; at most `scan_limit` entries looked at. A budget of 0 only skips the silent head.
pub async fn heads(
    redis: &Redis,
    keys: &LineKeys,
    budget: usize,
    abandon_after: Option<Duration>,
    scan_limit: u32,
) -> anyhow::Result<Heads> {
    let abandon_ms = abandon_after.map_or(0, |d| d.as_millis().max(1) as u64);
    let reply: Value = WR_LINE_HEAD
        .run(
            redis,
            vec![keys.q.clone(), keys.skip.clone()],
            vec![
                budget.to_string(),
                abandon_ms.to_string(),
                scan_limit.to_string(),
            ],
        )
        .await
        .with_context(|| format!("the head of {}", keys.q))?;
    let malformed = || anyhow::anyhow!("wr_line_head: a malformed reply for {}", keys.q);
    let Value::Array(parts) = reply else {
        return Err(malformed());
    };
    let [
        skipped,
        looked,
        Value::Array(users),
        Value::Array(scores),
        skip_length,
    ] = parts.as_slice()
    else {
        return Err(malformed());
    };
    anyhow::ensure!(users.len() == scores.len(), malformed());
    let places = users
        .iter()
        .zip(scores)
        .map(|(user, score)| {
            let user = UserId::from_slice(user.as_bytes()?).ok()?;
            Some((user, score.as_f64()?))
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(malformed)?;
    Ok(Heads {
        skipped: skipped.as_u64().ok_or_else(malformed)?,
        looked: looked.as_u64().ok_or_else(malformed)?,
        places,
        skip_length: skip_length.as_u64().ok_or_else(malformed)?,
    })
}

/// Step 3: the `budget` lowest scores among the shards' heads (`heads[i]` is shard i's, each
/// lowest first). Equal scores (a pre-open key drawn on two shards) go to the lower shard, so
/// no tie is broken by arrival or by which shard answered first.
pub fn merge(heads: &[Vec<(UserId, f64)>], budget: usize) -> Vec<Chosen> {
    let mut next = vec![0usize; heads.len()];
    let mut chosen = Vec::with_capacity(budget.min(heads.iter().map(Vec::len).sum()));
    while chosen.len() < budget {
        let mut best: Option<(usize, f64)> = None;
        for (shard, places) in heads.iter().enumerate() {
            if let Some(&(_, score)) = places.get(next[shard])
                && best.is_none_or(|(_, b)| score < b)
            {
                best = Some((shard, score));
            }
        }
        let Some((shard, score)) = best else {
            break;
        };
        chosen.push(Chosen {
            shard: shard as u16,
            user: heads[shard][next[shard]].0,
            score,
        });
        next[shard] += 1;
    }
    chosen
}

/// The rate and claim settings a tick runs with (`wr_admit.lua`'s ARGV).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TickParams {
    /// Most places the caller lets this tick admit.
    pub want: u64,
    /// `abandon_after`: a place silent for longer is skipped.
    pub abandon_after: Duration,
    /// How long an admission lasts.
    pub window: Duration,
    /// Units each admitted buyer may claim (0: the sale's per-user limit).
    pub need: u64,
    /// The rate credit: admissions a second, its tolerance (zero: no rate credit) and its
    /// carry ([`AdmitRate::carry`](crate::queue::AdmitRate::carry)).
    pub rate: f64,
    pub tolerance: Duration,
    pub carry: Duration,
    /// The outage credit's gap (zero: none).
    pub outage_gap: Duration,
    /// The admission tick, for the report's ETA error.
    pub tick: Duration,
}

impl TickParams {
    /// The settings of a single-shard tick (`wr_admit.lua`'s), for the same tick across shards:
    /// no rate is a rate credit of tolerance 0 (none), as there.
    pub fn from_admit(params: &AdmitParams) -> Self {
        let (rate, tolerance, carry) = params
            .rate
            .map_or((0.0, Duration::ZERO, Duration::ZERO), |r| {
                (r.per_second, r.tolerance, r.carry)
            });
        Self {
            want: u64::from(params.max_admit),
            abandon_after: params.abandon_after,
            window: params.admission_window,
            need: u64::from(params.units_per_buyer),
            rate,
            tolerance,
            carry,
            outage_gap: params.outage_gap.unwrap_or(Duration::ZERO),
            tick: params.tick,
        }
    }
}

/// What step 1 says about the tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// `open`, `paused`, `scheduled`, `sold_out`, `closed` or `not_found`.
    pub state: String,
    /// Places the tick may admit (0 unless open).
    pub budget: u64,
    /// What bounds it: `rate`, `max_active`, `stock` or `state`.
    pub limit: String,
    /// The silence the shards judge by; `None` while the outage credit runs.
    pub abandon_after: Option<Duration>,
    /// Admissions live now.
    pub active: u64,
    /// The sale's priority groups besides the public one, and the places made after the
    /// opening so far: where the line's scores jump ([`segment_starts`]).
    pub groups: usize,
    pub arrivals: u64,
    /// The line's new places so far (`wr.line_placed`), for the count a join judges
    /// `max_queue_length` by.
    pub placed: u64,
    /// What a poll of the line reads, published to every shard's `lmeta`.
    pub news: News,
    /// The order side's changes of admissions taken from `admch` (user, the deadline `adm`
    /// holds now, 0 for none), for the shards' copies ([`sync`]).
    pub changes: Vec<(UserId, i64)>,
    /// The last tick used all its rate credit (`wr.admit_full`), so this one may carry: a
    /// tick that then admits nobody still commits, to clear the flag.
    pub rate_full: bool,
}

/// The sale as a poll of a spread line sees it (`lua/wr_line_status.lua` reads it from its
/// shard's `lmeta`): written by the leader every tick from step 1's reply, so a change reaches
/// the polls at most one tick late.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct News {
    /// Step 1's state (`open`, `paused`, `scheduled`, `sold_out`, `closed`, `not_found`).
    pub state: String,
    /// `opens_at` and `closes_at`, epoch ms (0: none): the poll judges the clock's own
    /// transitions itself.
    pub opens_at: i64,
    pub closes_at: i64,
    pub paused: bool,
    /// The configured admissions a second.
    pub admit_per_second: i64,
    /// The operator's notice, `""` for none.
    pub notice: String,
    /// `cfg.groups` as stored (comma-joined, highest first).
    pub groups: String,
    /// The ETA's inputs (`eta_inputs` in `lua/lib/prelude.lua`).
    pub free: i64,
    pub limited_rate_milli: i64,
    /// `qseq` as step 1 read it: the arrivals the published curves may hold (a poll counts
    /// later ones itself, `line_since` in `lua/lib/prelude.lua`).
    pub seq: u64,
}

/// Step 1 on the sale's slot (`lua/wr_line_budget.lua`).
pub async fn budget(redis: &Redis, sale: &SaleKeys, params: &TickParams) -> anyhow::Result<Budget> {
    let reply: Value = WR_LINE_BUDGET
        .run(
            redis,
            vec![
                sale.cfg(),
                sale.avail(),
                sale.held(),
                sale.admitted(),
                sale.room(),
                sale.report(),
                sale.queue_seq(),
                sale.admission_changes(),
                sale.admission_changes_taken(),
            ],
            vec![
                params.want.to_string(),
                params.abandon_after.as_millis().to_string(),
                params.need.to_string(),
                params.rate.to_string(),
                params.tolerance.as_millis().to_string(),
                params.outage_gap.as_millis().to_string(),
                SYNC_PER_TICK.to_string(),
                params.carry.as_millis().to_string(),
            ],
        )
        .await
        .context("a spread line's budget")?;
    let malformed = || anyhow::anyhow!("wr_line_budget: a malformed reply");
    let Value::Array(parts) = reply else {
        return Err(malformed());
    };
    let [
        state,
        budget,
        limit,
        abandon_ms,
        active,
        groups,
        arrivals,
        opens_at,
        closes_at,
        paused,
        admit_per_second,
        notice,
        group_names,
        free,
        limited,
        placed,
        changes,
        rate_full,
    ] = parts.as_slice()
    else {
        return Err(malformed());
    };
    let abandon_ms = abandon_ms.as_u64().ok_or_else(malformed)?;
    let state = state.as_string().ok_or_else(malformed)?;
    let text = |v: &Value| -> anyhow::Result<String> {
        match v {
            Value::Null => Ok(String::new()),
            v => v.as_string().ok_or_else(malformed),
        }
    };
    let news = News {
        state: state.clone(),
        opens_at: opens_at.as_i64().ok_or_else(malformed)?,
        closes_at: closes_at.as_i64().ok_or_else(malformed)?,
        paused: paused.as_i64().ok_or_else(malformed)? == 1,
        admit_per_second: admit_per_second.as_i64().ok_or_else(malformed)?,
        notice: text(notice)?,
        groups: text(group_names)?,
        free: free.as_i64().ok_or_else(malformed)?,
        limited_rate_milli: limited.as_i64().ok_or_else(malformed)?,
        seq: arrivals.as_u64().ok_or_else(malformed)?,
    };
    Ok(Budget {
        state,
        budget: budget.as_u64().ok_or_else(malformed)?,
        limit: limit.as_string().ok_or_else(malformed)?,
        abandon_after: (abandon_ms > 0).then(|| Duration::from_millis(abandon_ms)),
        active: active.as_u64().ok_or_else(malformed)?,
        groups: groups.as_u64().ok_or_else(malformed)? as usize,
        arrivals: arrivals.as_u64().ok_or_else(malformed)?,
        placed: placed.as_u64().ok_or_else(malformed)?,
        news,
        changes: match changes {
            Value::Array(flat) => flat
                .chunks_exact(2)
                .map(|pair| Ok((user_of(&pair[0])?, pair[1].as_i64().ok_or_else(malformed)?)))
                .collect::<anyhow::Result<Vec<_>>>()?,
            Value::Null => Vec::new(),
            _ => return Err(malformed()),
        },
        rate_full: rate_full.as_i64().ok_or_else(malformed)? == 1,
    })
}

/// The most `admch` notes one tick takes: a burst of orders (every admitted buyer confirming at
/// once) reaches the copies over a few ticks instead of making one tick long.
pub const SYNC_PER_TICK: usize = 1024;

/// After step 1, on every shard with some: the order side's changes of admissions
/// ([`Budget::changes`]) written into the shard's copies (`lua/wr_line_sync.lua`: a settled
/// copy takes the new deadline or goes; a pending one is left to step 6). Before this tick's
/// own steps 4 to 6, so a buyer whose order ended an admission and who is admitted again in
/// this tick keeps the new copy. Then the notes are done (`admchf` deleted); a failure before
/// that leaves them to the next tick, which carries them again.
pub async fn sync(
    redis: &Redis,
    sale: &SaleKeys,
    line: &LineShards,
    changes: &[(UserId, i64)],
) -> anyhow::Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    try_join_all(line.all().iter().enumerate().map(|(index, keys)| {
        let mut args: Vec<Vec<u8>> = Vec::new();
        for (user, deadline) in changes {
            if usize::from(line.shard_of(*user)) == index {
                args.push(user.as_bytes().to_vec());
                args.push(deadline.to_string().into_bytes());
            }
        }
        async move {
            if args.is_empty() {
                return Ok(());
            }
            let _: Value = WR_LINE_SYNC
                .run(redis, vec![keys.outbox.clone()], args)
                .await
                .with_context(|| format!("carrying admission changes into {}", keys.outbox))?;
            anyhow::Ok(())
        }
    }))
    .await?;
    // Every shard has them: the notes are done (until now a next tick would take them again).
    let _: i64 = redis
        .pool()
        .del(sale.admission_changes_taken())
        .await
        .context("deleting the carried admission changes (admchf)")?;
    Ok(())
}

/// Step 4 on one shard: the `chosen` places still in `q` with their merged score move into
/// `ladm` as pending. Returns the users taken, in `chosen`'s order.
pub async fn take(
    redis: &Redis,
    keys: &LineKeys,
    chosen: &[(UserId, f64)],
) -> anyhow::Result<Vec<UserId>> {
    if chosen.is_empty() {
        return Ok(Vec::new());
    }
    let mut args: Vec<Vec<u8>> = Vec::with_capacity(chosen.len() * 2);
    for (user, score) in chosen {
        args.push(user.as_bytes().to_vec());
        args.push(format!("{score:.0}").into_bytes());
    }
    let taken: Vec<Value> = WR_LINE_TAKE
        .run(
            redis,
            vec![keys.q.clone(), keys.outbox.clone(), keys.eta_wait.clone()],
            args,
        )
        .await
        .with_context(|| format!("taking places from {}", keys.q))?;
    taken.iter().map(user_of).collect()
}

/// What step 5 wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// The sale's state (nothing is written unless `open`).
    pub state: String,
    /// Places admitted now (counted and charged).
    pub admitted: u64,
    /// Every asked place now in `adm`, with the deadline `adm` holds, in the asked order.
    pub in_adm: Vec<(UserId, i64)>,
}

/// Step 5 on the sale's slot (`lua/wr_line_commit.lua`): `taken` (user, queue score), in merged
/// order, are admitted within the budget judged again; `queue_length` is the line's length
/// after the tick for the report's series (`None`: not sampled).
pub async fn commit(
    redis: &Redis,
    sale: &SaleKeys,
    params: &TickParams,
    taken: &[(UserId, f64)],
    queue_length: Option<u64>,
) -> anyhow::Result<Committed> {
    let mut args: Vec<Vec<u8>> = vec![
        params.window.as_millis().to_string().into_bytes(),
        params.need.to_string().into_bytes(),
        params.rate.to_string().into_bytes(),
        params.tolerance.as_millis().to_string().into_bytes(),
        params.tick.as_millis().to_string().into_bytes(),
        queue_length
            .map_or_else(|| "-1".to_owned(), |n| n.to_string())
            .into_bytes(),
        params.carry.as_millis().to_string().into_bytes(),
    ];
    for (user, score) in taken {
        args.push(user.as_bytes().to_vec());
        args.push(format!("{score:.0}").into_bytes());
    }
    let reply: Value = WR_LINE_COMMIT
        .run(
            redis,
            vec![
                sale.cfg(),
                sale.avail(),
                sale.held(),
                sale.admitted(),
                sale.room(),
                sale.report_entries(),
                sale.report(),
                sale.report_series(),
                sale.report_checkpoints(),
            ],
            args,
        )
        .await
        .context("admitting a spread line's places")?;
    let malformed = || anyhow::anyhow!("wr_line_commit: a malformed reply");
    let Value::Array(parts) = reply else {
        return Err(malformed());
    };
    let [
        state,
        admitted,
        Value::Array(users),
        Value::Array(deadlines),
    ] = parts.as_slice()
    else {
        return Err(malformed());
    };
    anyhow::ensure!(users.len() == deadlines.len(), malformed());
    let in_adm = users
        .iter()
        .zip(deadlines)
        .map(|(user, at)| Ok((user_of(user)?, at.as_i64().ok_or_else(malformed)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Committed {
        state: state.as_string().ok_or_else(malformed)?,
        admitted: admitted.as_u64().ok_or_else(malformed)?,
        in_adm,
    })
}

/// Step 6 on one shard: the pending `ladm` entries of `admitted` (user, the deadline `adm`
/// holds) take their deadline. Returns how many changed (0 on a repeat).
pub async fn settle(
    redis: &Redis,
    keys: &LineKeys,
    admitted: &[(UserId, i64)],
) -> anyhow::Result<u64> {
    if admitted.is_empty() {
        return Ok(0);
    }
    let mut args: Vec<Vec<u8>> = Vec::with_capacity(admitted.len() * 2);
    for (user, deadline) in admitted {
        args.push(user.as_bytes().to_vec());
        args.push(deadline.to_string().into_bytes());
    }
    WR_LINE_SETTLE
        .run(redis, vec![keys.outbox.clone()], args)
        .await
        .with_context(|| format!("settling admissions in {}", keys.outbox))
}

/// What a tick took on this shard and did not settle (a leader that stopped between steps 4
/// and 6, or places step 5's budget held back): up to `limit` (user, queue score), lowest
/// score first, for the next tick's steps 5 and 6.
pub async fn pending(
    redis: &Redis,
    keys: &LineKeys,
    limit: usize,
) -> anyhow::Result<Vec<(UserId, f64)>> {
    // Pending entries hold −(queue score): from just below 0 downwards is the lowest queue
    // score first, so a `limit` keeps the first in line (an ascending read would keep the last).
    let entries: Vec<(Value, f64)> = redis
        .pool()
        .zrevrangebyscore(&keys.outbox, "(0", "-inf", true, Some((0, limit as i64)))
        .await
        .with_context(|| format!("reading the pending admissions of {}", keys.outbox))?;
    entries
        .iter()
        .map(|(user, score)| Ok((user_of(user)?, -score)))
        .collect()
}

/// What one whole tick ([`run`]) did.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    /// What step 1 said (state, budget, what bounds it, admissions live before the tick).
    pub said: Budget,
    /// Places admitted now (counted and charged), those an earlier tick left pending included.
    pub admitted: u64,
    /// Of them, places an earlier tick took and did not settle.
    pub recovered: u64,
    /// Silent places the shards skipped now.
    pub skipped: u64,
    /// Places waiting in the line after the tick (the sum of the shards' curves).
    pub queue_length: u64,
    /// The places this tick wrote into `adm` or found there, in line order (those an earlier
    /// tick left pending first).
    pub users: Vec<UserId>,
}

impl Tick {
    /// The tick told as a single-shard tick's outcome (the admitter's metrics and alerts, the
    /// queue's callers): the sale's state and what bounded the tick as `wr_admit.lua` says
    /// them; `None` when the sale is not armed.
    pub fn outcome(self) -> anyhow::Result<Option<AdmitOutcome>> {
        if self.said.state == "not_found" {
            return Ok(None);
        }
        let state: SaleState = self
            .said
            .state
            .parse()
            .with_context(|| format!("wr_line_budget: the state {:?}", self.said.state))?;
        let limit = if self.queue_length == 0 {
            AdmitLimit::Empty
        } else {
            AdmitLimit::parse(&self.said.limit)?
        };
        Ok(Some(AdmitOutcome {
            state,
            active: self.said.active + self.admitted,
            admitted: self.users,
            skipped: self.skipped,
            queue_length: self.queue_length,
            limit,
        }))
    }
}

/// One whole admission tick of a line spread over `line`'s shards, as the admitter's leader
/// runs it for a sale with more than one line shard: the shards' counters and noted first ETAs
/// are folded into the sale's hashes ([`fold`]), then what an earlier tick left pending goes
/// through steps 5 and 6 first (a leader that stopped in between, or places step 5's budget
/// held back), then steps 1 to 6 for new places, then each shard's count curve is read and
/// published to every shard (`lmeta`) for the polls' positions. `queue_length` is the line's
/// length the caller knows (the last tick's), for the report's series. Shards are called
/// concurrently; a failed call fails the tick, and the next tick starts from what Redis holds
/// (a taken place stays in `ladm` until some tick settles it, so none is lost or admitted twice).
pub async fn run(
    redis: &Redis,
    sale: &SaleKeys,
    line: &LineShards,
    params: &TickParams,
    scan_limit: u32,
    queue_length: Option<u64>,
) -> anyhow::Result<Tick> {
    let shards = line.all();
    let want = usize::try_from(params.want).unwrap_or(usize::MAX);
    // The shards' counters and first ETAs, before anyone is admitted: an admission reads its
    // buyer's first ETA from the sale's wt. Report figures only: a failure is logged and the
    // tick admits all the same.
    if let Err(error) = fold(redis, sale, line).await {
        tracing::warn!(sale = %sale.base(), error = format!("{error:#}"), "folding a spread line's counters failed");
    }
    // What an earlier tick took and did not settle, lowest score first across the shards.
    let left = try_join_all(shards.iter().map(|keys| pending(redis, keys, want))).await?;
    let mut admitted = 0;
    let mut recovered = 0;
    let mut users = Vec::new();
    let mut held_back = false;
    if left.iter().any(|l| !l.is_empty()) {
        let merged: Vec<(UserId, f64)> = merge(&left, usize::MAX)
            .into_iter()
            .map(|c| (c.user, c.score))
            .collect();
        let committed = commit(redis, sale, params, &merged, None).await?;
        settle_all(redis, line, &committed.in_adm).await?;
        admitted += committed.admitted;
        recovered = committed.admitted;
        users.extend(committed.in_adm.iter().map(|a| a.0));
        // Places the budget held back keep their turn: no newer place passes them.
        held_back = committed.in_adm.len() < merged.len();
    }

    let said = budget(redis, sale, params).await?;
    sync(redis, sale, line, &said.changes).await?;
    let mut skipped = 0;
    // The line's skipped places as the heads' calls left them, when they ran: written with the
    // line's length below, so that /stats counts a tick's skips at once, not at the next reap.
    let mut skip_length = None;
    if said.state == "open" {
        // With nothing to admit now (the budget spent, max_active full, or places held back),
        // quota 0: each shard's walk only skips the silent places at its head, as wr_admit.lua
        // does on one slot every open tick, so the positions behind them stay honest.
        let quota = if said.budget > 0 && !held_back {
            usize::try_from(said.budget).unwrap_or(usize::MAX)
        } else {
            0
        };
        let found = try_join_all(
            shards
                .iter()
                .map(|keys| heads(redis, keys, quota, said.abandon_after, scan_limit)),
        )
        .await?;
        skipped = found.iter().map(|h| h.skipped).sum();
        skip_length = Some(found.iter().map(|h| h.skip_length).sum::<u64>());
        let places: Vec<Vec<(UserId, f64)>> = found.into_iter().map(|h| h.places).collect();
        let chosen = merge(&places, quota);
        // A shard with none of the chosen makes no call (take returns at once).
        let taken = try_join_all(shards.iter().enumerate().map(|(index, keys)| {
            let mine: Vec<(UserId, f64)> = chosen
                .iter()
                .filter(|c| usize::from(c.shard) == index)
                .map(|c| (c.user, c.score))
                .collect();
            async move { take(redis, keys, &mine).await }
        }))
        .await?;
        let taken: HashSet<UserId> = taken.into_iter().flatten().collect();
        // Step 5 in merged order: a buyer who left between the read and the take is not in it.
        let merged: Vec<(UserId, f64)> = chosen
            .iter()
            .filter(|c| taken.contains(&c.user))
            .map(|c| (c.user, c.score))
            .collect();
        if !merged.is_empty() {
            let committed = commit(redis, sale, params, &merged, queue_length).await?;
            settle_all(redis, line, &committed.in_adm).await?;
            admitted += committed.admitted;
            users.extend(committed.in_adm.iter().map(|a| a.0));
        } else if said.rate_full && !held_back {
            // Nobody to admit after a tick that used all its credit: an empty commit charges
            // nothing and clears wr.admit_full, so a crowd after this lull gets one tick's
            // burst and no carry (wr_admit.lua clears it on one slot by itself).
            commit(redis, sale, params, &[], None).await?;
        }
    }
    if skipped > 0 {
        let _: i64 = redis
            .pool()
            .hincrby(sale.room(), "skipped_total", skipped as i64)
            .await
            .context("counting a spread line's skipped places")?;
    }

    // The positions: each shard's curve, published to every shard.
    let bounds = segment_starts(said.groups, said.arrivals);
    let curves = try_join_all(
        shards
            .iter()
            .map(|keys| read_curve(redis, &keys.q, &bounds)),
    )
    .await?;
    let read_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    // Step 1 read the room for more buyers before this tick's admissions took some of it.
    let mut news = said.news.clone();
    news.free = (news.free - i64::try_from(admitted).unwrap_or(i64::MAX)).max(0);
    publish(redis, line, &curves, read_at, Some(&news)).await?;
    let queue_length: u64 = curves.iter().map(CountCurve::len).sum();
    // A join judges max_queue_length on the sale's slot against this count plus the places
    // made since step 1 read line_placed, and a poll counts the arrivals past line_seq (qseq
    // as step 1 read it) as ahead of a public arrival (wr_join.lua, line_since). A place made
    // between step 1 and the curves' read is in both: the figures err high by those, until
    // the next tick.
    let mut counts = vec![
        ("line_length", queue_length),
        ("line_seq", said.arrivals),
        ("line_placed_at", said.placed),
    ];
    if let Some(n) = skip_length {
        counts.push(("line_skipped", n));
    }
    let () = redis
        .pool()
        .hset(sale.room(), counts)
        .await
        .context("writing a spread line's length")?;
    Ok(Tick {
        said,
        admitted,
        recovered,
        skipped,
        queue_length,
        users,
    })
}

/// Step 6 on every shard, each given its own users of `in_adm`.
async fn settle_all(
    redis: &Redis,
    line: &LineShards,
    in_adm: &[(UserId, i64)],
) -> anyhow::Result<()> {
    try_join_all(line.all().iter().enumerate().map(|(index, keys)| {
        let mine: Vec<(UserId, i64)> = in_adm
            .iter()
            .filter(|a| usize::from(line.shard_of(a.0)) == index)
            .copied()
            .collect();
        async move { settle(redis, keys, &mine).await }
    }))
    .await?;
    Ok(())
}

/// The counters each shard keeps in its `lmeta` (a poll's returns and losses, the reaper's
/// skips and losses, leaving), each with the sale's hash it belongs in (`wr`, or `rep` for
/// the report's `left`), for [`fold`].
pub const SHARD_COUNTERS: [(&str, Room); 4] = [
    ("skipped_total", Room::Wr),
    ("abandoned_total", Room::Wr),
    ("returned_total", Room::Wr),
    ("left", Room::Report),
];

/// Which of the sale's hashes a shard's counter is folded into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// `wr`, the waiting room's counters (`/stats`, the control room).
    Wr,
    /// `rep`, the post-sale report's totals.
    Report,
}

/// The most first ETAs one fold takes, over all the shards (each gets its share, at least 64):
/// the moment a scheduled sale opens, every sampled buyer's first poll notes one at once (the
/// sample is at most some tens of thousands), and they reach the report over a few ticks
/// instead of one long one.
pub const ETAS_PER_FOLD: usize = 4096;

/// Takes every shard's own counters ([`SHARD_COUNTERS`], `lua/wr_line_fold.lua`) and adds them
/// to the sale's `wr` or `rep`, where `/stats`, the control room and the report read them; and
/// the first ETAs the shards noted for sampled buyers (up to [`ETAS_PER_FOLD`] in all), which
/// go into the sale's `wt` entries (`lua/wr_line_note.lua`), where an admission reads them.
/// Returns the sums, in [`SHARD_COUNTERS`]' order.
pub async fn fold(redis: &Redis, sale: &SaleKeys, line: &LineShards) -> anyhow::Result<[u64; 4]> {
    // ETAS_PER_FOLD over all the shards: one note call on the sale's slot stays bounded.
    let per_shard = (ETAS_PER_FOLD / line.all().len().max(1)).max(64);
    let mut args: Vec<String> = vec![per_shard.to_string()];
    args.extend(SHARD_COUNTERS.iter().map(|(field, _)| (*field).to_owned()));
    let taken = try_join_all(line.all().iter().map(|keys| {
        let args = args.clone();
        async move {
            let reply: Vec<Value> = WR_LINE_FOLD
                .run(redis, vec![keys.meta.clone(), keys.eta_noted.clone()], args)
                .await
                .with_context(|| format!("taking the counters of {}", keys.meta))?;
            anyhow::ensure!(
                reply.len() == SHARD_COUNTERS.len() + 1,
                "wr_line_fold: {} values for {} fields and the ETAs",
                reply.len(),
                SHARD_COUNTERS.len()
            );
            let counts = reply[..SHARD_COUNTERS.len()]
                .iter()
                .map(|v| v.as_i64().context("wr_line_fold: a count is not a number"))
                .collect::<anyhow::Result<Vec<i64>>>()?;
            let etas = match &reply[SHARD_COUNTERS.len()] {
                Value::Array(flat) => flat.clone(),
                Value::Null => Vec::new(),
                _ => anyhow::bail!("wr_line_fold: the ETAs are not a list"),
            };
            Ok((counts, etas))
        }
    }))
    .await?;
    let mut sums = [0u64; 4];
    let mut etas: Vec<Value> = Vec::new();
    for (counts, noted) in taken {
        for (sum, n) in sums.iter_mut().zip(&counts) {
            *sum += (*n).max(0).unsigned_abs();
        }
        etas.extend(noted);
    }
    if !etas.is_empty() {
        let _: i64 = WR_LINE_NOTE
            .run(redis, vec![sale.report_entries()], etas)
            .await
            .context("writing the line shards' first ETAs into the sale's report entries")?;
    }
    for ((field, room), n) in SHARD_COUNTERS.iter().zip(sums) {
        if n > 0 {
            let hash = match room {
                Room::Wr => sale.room(),
                Room::Report => sale.report(),
            };
            let _: i64 = redis
                .pool()
                .hincrby(hash, *field, n as i64)
                .await
                .with_context(|| format!("adding the line shards' {field} to the sale's"))?;
        }
    }
    Ok(sums)
}

fn user_of(value: &Value) -> anyhow::Result<UserId> {
    value
        .as_bytes()
        .and_then(|b| UserId::from_slice(b).ok())
        .context("a malformed user id in a line script's reply")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_merge_keeps_the_lowest_scores_and_breaks_ties_by_shard() {
        let u: Vec<UserId> = (0..6).map(|_| UserId::new_v7()).collect();
        let heads = vec![
            vec![(u[0], 10.0), (u[1], 40.0)],
            vec![(u[2], 20.0), (u[3], 40.0), (u[4], 50.0)],
            vec![],
            vec![(u[5], 5.0)],
        ];
        let chosen = merge(&heads, 4);
        let got: Vec<(u16, f64)> = chosen.iter().map(|c| (c.shard, c.score)).collect();
        assert_eq!(got, [(3, 5.0), (0, 10.0), (1, 20.0), (0, 40.0)]);
        assert_eq!(chosen[3].user, u[1]);
        assert_eq!(merge(&heads, 100).len(), 6);
        assert!(merge(&heads, 0).is_empty());
        assert!(merge(&[], 3).is_empty());
    }
}
