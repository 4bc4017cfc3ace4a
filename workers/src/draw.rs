//! `dropline worker draw`: the draw leader (design/draw.md). One process leads at a time
//! (lease `<prefix>:drawer`, as the admitter's); each `draw.tick_ms` it walks the armed draw
//! sales and moves each one step on:
//!
//! 1. at `entries_close_at`, the freeze: the entry list's count and digest, in MySQL, under
//!    the sale row's exclusive lock ([`entries::freeze`]);
//! 2. `draw.reveal_delay_seconds` after the freeze, the reveal: every frozen entry's rank and
//!    the draw's `drawn_at` in one MySQL transaction ([`entries::reveal`]), so the seed is never
//!    public without the ranking it decides;
//! 3. the ranking indexed in Redis for the waiting room's polls: `ent` (user → entry and rank),
//!    `rk` (rank → user), then `drw.ranked` = the count, written last.
//!
//! Each step is idempotent and stored before the next starts, so a leader killed at any point
//! is replaced by one that carries on where MySQL and Redis say it stopped; if Redis loses its
//! data (and the sale is armed again), `drw.ranked` is gone and the next leader indexes the
//! ranking again from MySQL.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use dropline_core::Config;
use dropline_core::clients::deps::Deps;
use dropline_core::clients::redis::Redis;
use dropline_core::ids::SaleId;
use dropline_core::lease::Lease;
use dropline_core::sale::entries;
use dropline_core::sale::keys::SaleKeys;
use fred::prelude::*;
use sqlx::MySqlPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Ranked entries indexed per Redis call.
const INDEX_CHUNK: u32 = 1_000;

/// The lease of the draw leader, `<prefix>:drawer`.
pub fn lease_key(redis: &Redis) -> String {
    redis.key("drawer")
}

/// What [`advance`] did to one sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Not a draw sale (or no longer in MySQL).
    NotDraw,
    /// Nothing due yet.
    Waiting,
    /// The entries were frozen: this many.
    Frozen(u32),
    /// The seed was revealed and this many entries ranked.
    Revealed(u32),
    /// The ranking (this many) was indexed in Redis.
    Indexed(u32),
    /// Ranked and indexed already.
    Ranked,
}

/// Moves the draw of `sale` one step on at `now` (module docs).
pub async fn advance(
    redis: &Redis,
    mysql: &MySqlPool,
    sale: SaleId,
    reveal_delay: Duration,
    now: DateTime<Utc>,
) -> anyhow::Result<Step> {
    let keys = SaleKeys::new(redis, sale);
    let ranked: Option<String> = redis
        .pool()
        .hget(keys.draw_counters(), "ranked")
        .await
        .context("reading the draw's counters")?;
    if ranked.is_some() {
        return Ok(Step::Ranked);
    }
    let Some(progress) = entries::progress(mysql, sale).await? else {
        return Ok(Step::NotDraw);
    };
    let Some(frozen_at) = progress.frozen_at else {
        if now < progress.entries_close_at {
            return Ok(Step::Waiting);
        }
        let frozen = entries::freeze(mysql, sale, now)
            .await?
            .context("the draw vanished during its freeze")?;
        tracing::info!(sale = %sale, entries = frozen.entry_count, digest = %hex::encode(frozen.entries_digest), "draw entries frozen");
        metrics::counter!("dropline_draw_steps_total", "step" => "freeze").increment(1);
        return Ok(Step::Frozen(frozen.entry_count));
    };
    if progress.drawn_at.is_none() {
        let delay = chrono::Duration::from_std(reveal_delay).unwrap_or(chrono::TimeDelta::MAX);
        if now < frozen_at + delay {
            return Ok(Step::Waiting);
        }
        let count = entries::reveal(mysql, sale, now)
            .await?
            .context("the draw was not frozen at its reveal")?;
        tracing::info!(sale = %sale, entries = count, "draw seed revealed and entries ranked");
        metrics::counter!("dropline_draw_steps_total", "step" => "reveal").increment(1);
        return Ok(Step::Revealed(count));
    }
    let count = index(redis, mysql, sale).await?;
    tracing::info!(sale = %sale, entries = count, "draw ranking indexed in Redis");
    metrics::counter!("dropline_draw_steps_total", "step" => "index").increment(1);
    Ok(Step::Indexed(count))
}

/// Writes the ranking of `sale` into Redis (`ent`, `rk`), then `drw.ranked`.
async fn index(redis: &Redis, mysql: &MySqlPool, sale: SaleId) -> anyhow::Result<u32> {
    let keys = SaleKeys::new(redis, sale);
    let mut after = 0;
    loop {
        let chunk = entries::ranked(mysql, sale, after, INDEX_CHUNK).await?;
        let Some(last) = chunk.last() else {
            break;
        };
        after = last.rank;
        let mut by_user: Vec<(Value, Value)> = Vec::with_capacity(chunk.len());
        let mut by_rank: Vec<(Value, Value)> = Vec::with_capacity(chunk.len());
        for r in &chunk {
            let user = Value::from(&r.user.as_bytes()[..]);
            by_user.push((
                user.clone(),
                Value::from(entries::index_value(&r.entry, Some(r.rank), false)),
            ));
            by_rank.push((Value::from(r.rank.to_string()), user));
        }
        let _: i64 = redis
            .pool()
            .hset(keys.entries(), by_user)
            .await
            .context("indexing ranked entries")?;
        let _: i64 = redis
            .pool()
            .hset(keys.ranks(), by_rank)
            .await
            .context("indexing the ranking")?;
    }
    let _: i64 = redis
        .pool()
        .hset(keys.draw_counters(), ("ranked", after.to_string()))
        .await
        .context("marking the ranking indexed")?;
    Ok(after)
}

/// One pass over the armed sales: each draw moved one step on. Failures of one sale are
/// logged and do not stop the others.
async fn tick(redis: &Redis, mysql: &MySqlPool, reveal_delay: Duration) -> anyhow::Result<()> {
    for sale in dropline_core::sale::indexed(redis).await? {
        let mode: Option<String> = redis
            .pool()
            .hget(SaleKeys::new(redis, sale).cfg(), "mode")
            .await
            .context("reading a sale's mode")?;
        if mode.as_deref() != Some("draw") {
            continue;
        }
        if let Err(error) = advance(redis, mysql, sale, reveal_delay, Utc::now()).await {
            tracing::warn!(sale = %sale, error = format!("{error:#}"), "draw step failed; retried next tick");
        }
    }
    Ok(())
}

/// Runs the draw leader until `shutdown`.
pub async fn run(config: &Config, deps: &Deps, shutdown: CancellationToken) -> anyhow::Result<()> {
    let redis = deps.redis()?.clone();
    let mysql = deps.mysql()?.clone();
    let tick_every = Duration::from_millis(config.draw.tick_ms.max(1));
    let reveal_delay = Duration::from_secs(config.draw.reveal_delay_seconds);
    let holder = format!(
        "draw-{}-{}",
        std::process::id(),
        &Uuid::now_v7().simple().to_string()[20..]
    );
    let lease_length = Duration::from_secs(config.waitroom.lease_seconds).max(tick_every * 4);
    let lease = Lease::new(
        redis.clone(),
        lease_key(&redis),
        holder.clone(),
        lease_length,
    );
    let mut interval = tokio::time::interval(tick_every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leader = false;
    tracing::info!(holder = %holder, tick = ?tick_every, "draw leader candidate starting");
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = interval.tick() => {}
        }
        match lease.try_acquire().await {
            Ok(true) => {
                if !leader {
                    tracing::info!(holder = %holder, "leading the draws");
                    metrics::gauge!("dropline_draw_leader").set(1.0);
                    leader = true;
                }
            }
            Ok(false) => {
                if leader {
                    tracing::warn!(holder = %holder, "lost the draw lease");
                    metrics::gauge!("dropline_draw_leader").set(0.0);
                    leader = false;
                }
                continue;
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "draw lease: Redis unavailable"
                );
                continue;
            }
        }
        if let Err(error) = tick(&redis, &mysql, reveal_delay).await {
            tracing::warn!(error = format!("{error:#}"), "draw tick failed");
        }
    }
    if leader {
        match lease.release().await {
            Ok(_) => tracing::info!("draw lease released at shutdown"),
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "could not release the draw lease; it expires by itself"
                );
            }
        }
    }
    Ok(())
}
