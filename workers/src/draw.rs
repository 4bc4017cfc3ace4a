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
//! 4. claims and backfill, every tick once ranked ([`claims`]): `lua/draw_tick.lua` lapses
//!    overdue wins, settles ordered ones from their orders' states and promotes the next ranks
//!    while free stock remains, appending each change to the draw outbox (`dev`); the leader
//!    then drains the outbox into MySQL (`draw_entries`: won_at, max_quantity, claim_deadline,
//!    outcome, order_id) and queues each winner's mail; once the draw is over (sold out, or the
//!    ranking exhausted with no live win), one mail to every entrant never promoted, then
//!    `draws.ended_at`.
//!
//! Each step is idempotent and stored before the next starts, so a leader killed at any point
//! is replaced by one that carries on where MySQL and Redis say it stopped; if Redis loses its
//! data (and the sale is armed again), `drw.ranked` is gone and the next leader indexes the
//! ranking again from MySQL. A promotion lives in Redis first (one Lua step decides it, so no
//! two leaders can hand out one rank twice); the outbox entry is deleted only after MySQL has
//! it and its mail was queued, so a leader killed in between records it again, and the mail's
//! id (UUIDv5 of the sale and `won:<entry>`) lets the mail worker drop the copy.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use dropline_core::Config;
use dropline_core::clients::amqp::Broker;
use dropline_core::clients::deps::Deps;
use dropline_core::clients::redis::Redis;
use dropline_core::ids::{OrderId, SaleId, UserId};
use dropline_core::lease::Lease;
use dropline_core::lua::Script;
use dropline_core::messages::{Envelope, MailSend, kinds};
use dropline_core::sale::entries;
use dropline_core::sale::keys::SaleKeys;
use fred::prelude::*;
use sqlx::MySqlPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Ranked entries indexed per Redis call.
const INDEX_CHUNK: u32 = 1_000;
/// Lapses, settlements and promotions per `draw_tick.lua` call, each.
const TICK_BOUND: u32 = 1_000;
/// Outbox entries read per round trip.
const DRAIN_CHUNK: u64 = 500;
/// Not-won mails queued per MySQL read.
const MAIL_CHUNK: u32 = 500;

/// One step of a ranked draw's claims and backfill (`lua/draw_tick.lua`).
pub static DRAW_TICK: Script = dropline_core::lua_script!("draw_tick");

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
    /// Ranked and indexed already (the leader then runs [`claims`]).
    Ranked,
}

/// What one [`claims`] step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Claims {
    pub promoted_now: u64,
    pub lapsed_now: u64,
    pub settled_now: u64,
    /// Ranks promoted so far (1..=promoted).
    pub promoted: u64,
    pub ranked: u64,
    /// Outbox entries recorded in MySQL by this step.
    pub recorded: u64,
    /// The draw is over (and its not-won mails were queued by this step or an earlier one).
    pub ended: bool,
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

/// Claims and backfill of a ranked draw, one step (module docs, 4.): `draw_tick.lua`, then the
/// outbox drained into MySQL with the winners' mails, then, once over, the not-won mails.
/// `None` when the ranking is not indexed in Redis yet.
pub async fn claims(
    redis: &Redis,
    mysql: &MySqlPool,
    broker: &Broker,
    public_url: &str,
    sale: SaleId,
) -> anyhow::Result<Option<Claims>> {
    let keys = SaleKeys::new(redis, sale);
    let script_keys = vec![
        keys.cfg(),
        keys.avail(),
        keys.held(),
        keys.draw_counters(),
        keys.ranks(),
        keys.wins(),
        keys.open_wins(),
        keys.ordered_wins(),
        keys.admitted(),
        keys.draw_events(),
    ];
    let args = vec![
        Value::from(keys.order_prefix()),
        Value::from(i64::from(TICK_BOUND)),
    ];
    let reply: Vec<Value> = DRAW_TICK
        .run(redis, script_keys, args)
        .await
        .with_context(|| format!("the claims step of sale {sale}"))?;
    anyhow::ensure!(
        reply.len() == 7,
        "draw_tick returned {} values",
        reply.len()
    );
    let result = reply[0].as_string().unwrap_or_default();
    if result != "ok" {
        return Ok(None);
    }
    let int = |i: usize| reply[i].as_u64().unwrap_or(0);
    let mut step = Claims {
        promoted_now: int(1),
        lapsed_now: int(2),
        settled_now: int(3),
        promoted: int(4),
        ranked: int(5),
        ..Claims::default()
    };
    if step.promoted_now > 0 {
        metrics::counter!("dropline_draw_steps_total", "step" => "promote")
            .increment(step.promoted_now);
    }
    if step.lapsed_now > 0 {
        metrics::counter!("dropline_draw_steps_total", "step" => "lapse")
            .increment(step.lapsed_now);
    }
    step.recorded = drain(redis, mysql, broker, public_url, sale).await?;
    if int(6) == 1 {
        finish(mysql, broker, sale).await?;
        step.ended = true;
    }
    Ok(Some(step))
}

/// A draw outbox entry (`lua/draw_tick.lua` names its fields).
#[derive(Debug, Clone, PartialEq, Eq)]
struct DrawEvent {
    kind: String,
    user: UserId,
    rank: Option<u32>,
    max_quantity: Option<u32>,
    deadline_ms: Option<i64>,
    order: Option<OrderId>,
}

fn parse_event(fields: Value) -> anyhow::Result<DrawEvent> {
    let list = match fields {
        Value::Array(list) => list,
        Value::Map(map) => map
            .inner()
            .into_iter()
            .flat_map(|(k, v)| [Value::from(k), v])
            .collect(),
        other => anyhow::bail!("fields are not an array: {other:?}"),
    };
    let mut get = std::collections::HashMap::with_capacity(list.len() / 2);
    let mut it = list.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        get.insert(k.as_string().context("a field name is not text")?, v);
    }
    let text = |name: &str| get.get(name).and_then(Value::as_string).unwrap_or_default();
    let user = get
        .get("user")
        .and_then(Value::as_bytes)
        .context("field user missing")?;
    let order = text("order");
    Ok(DrawEvent {
        kind: text("kind"),
        user: UserId::from_slice(user).context("field user is not 16 bytes")?,
        rank: text("rank").parse().ok(),
        max_quantity: text("max_quantity").parse().ok(),
        deadline_ms: text("deadline").parse().ok(),
        order: (!order.is_empty())
            .then(|| OrderId::parse_str(&order))
            .transpose()
            .context("field order is not an order id")?,
    })
}

/// Records the draw outbox in MySQL, oldest first, and deletes what MySQL has; the winners'
/// mails are queued on the way. Returns how many entries were recorded.
async fn drain(
    redis: &Redis,
    mysql: &MySqlPool,
    broker: &Broker,
    public_url: &str,
    sale: SaleId,
) -> anyhow::Result<u64> {
    let key = SaleKeys::new(redis, sale).draw_events();
    let mut recorded = 0;
    loop {
        let reply: Value = redis
            .pool()
            .xrange(key.as_str(), "-", "+", Some(DRAIN_CHUNK))
            .await
            .context("reading the draw outbox")?;
        let items = match reply {
            Value::Array(items) => items,
            Value::Null => Vec::new(),
            other => anyhow::bail!("XRANGE: unexpected reply {other:?}"),
        };
        if items.is_empty() {
            return Ok(recorded);
        }
        let mut done = Vec::with_capacity(items.len());
        for item in items {
            let Value::Array(mut pair) = item else {
                anyhow::bail!("draw outbox: an entry is not an array");
            };
            anyhow::ensure!(
                pair.len() == 2,
                "draw outbox: an entry has {} parts",
                pair.len()
            );
            let fields = pair.pop().unwrap_or(Value::Null);
            let id = pair
                .pop()
                .and_then(|v| v.as_string())
                .context("draw outbox: an entry id is not text")?;
            match parse_event(fields) {
                Ok(event) => record(mysql, broker, public_url, sale, &event).await?,
                // Only this leader writes the stream; a malformed entry is a bug, kept out of
                // the way so the rest of the draw goes on.
                Err(error) => {
                    tracing::error!(sale = %sale, entry = %id, error = format!("{error:#}"), "malformed draw outbox entry; skipped");
                }
            }
            done.push(id);
        }
        recorded += done.len() as u64;
        let _: i64 = redis
            .pool()
            .xdel(key.as_str(), done)
            .await
            .context("deleting recorded draw outbox entries")?;
    }
}

/// Writes one outbox entry to `draw_entries` (idempotent), and queues a winner's mail once.
async fn record(
    mysql: &MySqlPool,
    broker: &Broker,
    public_url: &str,
    sale: SaleId,
    event: &DrawEvent,
) -> anyhow::Result<()> {
    match event.kind.as_str() {
        "won" => {
            let (Some(rank), Some(max_quantity), Some(deadline_ms)) =
                (event.rank, event.max_quantity, event.deadline_ms)
            else {
                anyhow::bail!("a won entry without rank, max_quantity or deadline: {event:?}");
            };
            let deadline = DateTime::<Utc>::from_timestamp_millis(deadline_ms)
                .context("a claim deadline out of range")?;
            // A rank promoted again (Redis lost the win and the sale was rearmed) keeps its
            // first won_at and takes the new deadline; a settled outcome is never undone.
            sqlx::query(
                "UPDATE draw_entries SET won_at = COALESCE(won_at, UTC_TIMESTAMP(3)), \
                   max_quantity = ?, claim_deadline = ?, \
                   outcome = COALESCE(outcome, 'claiming') \
                 WHERE sale_id = ? AND user_id = ? AND draw_rank = ? \
                   AND (outcome IS NULL OR outcome = 'claiming')",
            )
            .bind(max_quantity)
            .bind(deadline.naive_utc())
            .bind(sale)
            .bind(event.user)
            .bind(rank)
            .execute(mysql)
            .await
            .context("recording a win")?;
            mail_winner(mysql, broker, public_url, sale, event.user).await
        }
        "claimed" | "forfeited" => {
            let outcome = if event.kind == "claimed" {
                entries::Outcome::Claimed
            } else {
                entries::Outcome::Forfeited
            };
            sqlx::query(
                "UPDATE draw_entries SET outcome = ?, order_id = COALESCE(?, order_id) \
                 WHERE sale_id = ? AND user_id = ? AND won_at IS NOT NULL",
            )
            .bind(outcome.as_str())
            .bind(event.order)
            .bind(sale)
            .bind(event.user)
            .execute(mysql)
            .await
            .context("recording a win's outcome")?;
            Ok(())
        }
        other => anyhow::bail!("unknown draw outbox kind {other:?}"),
    }
}

/// The mail id of an entry's `won` or `not_won` mail: UUIDv5(sale id, "<what>:" + entry hex).
pub fn mail_id(sale: SaleId, what: &str, entry: &[u8; 16]) -> Uuid {
    Uuid::new_v5(
        sale.as_uuid(),
        format!("{what}:{}", hex::encode(entry)).as_bytes(),
    )
}

async fn publish_mail(broker: &Broker, id: Uuid, mail: MailSend) -> anyhow::Result<()> {
    let mut envelope = Envelope::new(kinds::MAIL_SEND, mail);
    envelope.id = id;
    let payload = envelope.to_json().context("encoding a draw mail")?;
    broker
        .publish(kinds::MAIL_SEND, &id.to_string(), &payload)
        .await
        .context("queueing a draw mail")
}

/// Queues the winner's mail (rank, deadline, link) unless it was queued before.
async fn mail_winner(
    mysql: &MySqlPool,
    broker: &Broker,
    public_url: &str,
    sale: SaleId,
    user: UserId,
) -> anyhow::Result<()> {
    /// entry id, rank, max_quantity, claim deadline, address
    type Row = (Vec<u8>, u32, u32, Option<DateTime<Utc>>, String);
    let row: Option<Row> = sqlx::query_as(
        "SELECT e.id, e.draw_rank, e.max_quantity, e.claim_deadline, u.email \
         FROM draw_entries e JOIN users u ON u.id = e.user_id \
         WHERE e.sale_id = ? AND e.user_id = ? AND e.won_at IS NOT NULL \
           AND e.won_mail_at IS NULL",
    )
    .bind(sale)
    .bind(user)
    .fetch_optional(mysql)
    .await
    .context("reading a winner's mail")?;
    let Some((id, rank, max_quantity, deadline, email)) = row else {
        return Ok(());
    };
    let entry = entries::entry_id(&id)?;
    let deadline = deadline
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    let link = format!("{}/w/{sale}", public_url.trim_end_matches('/'));
    let mail = MailSend {
        to: email,
        subject: "You won the draw / 추첨에 당첨되었습니다".to_owned(),
        text: format!(
            "You were drawn (rank {rank}). Buy up to {max_quantity} before {deadline}:\n{link}\n\
             After that the win passes to the next entrant.\n\n\
             추첨에 당첨되었습니다 (순위 {rank}). {deadline}까지 최대 {max_quantity}개를 \
             구매하세요:\n{link}\n기한이 지나면 당첨은 다음 순위로 넘어갑니다.\n"
        ),
    };
    publish_mail(broker, mail_id(sale, "won", &entry), mail).await?;
    sqlx::query("UPDATE draw_entries SET won_mail_at = UTC_TIMESTAMP(3) WHERE id = ?")
        .bind(&id[..])
        .execute(mysql)
        .await
        .context("marking a winner's mail queued")?;
    Ok(())
}

/// The draw is over: one mail to each entrant never promoted, then `draws.ended_at`.
async fn finish(mysql: &MySqlPool, broker: &Broker, sale: SaleId) -> anyhow::Result<()> {
    let ended: Option<(Option<DateTime<Utc>>,)> =
        sqlx::query_as("SELECT ended_at FROM draws WHERE sale_id = ?")
            .bind(sale)
            .fetch_optional(mysql)
            .await
            .context("reading the draw's end")?;
    if !matches!(ended, Some((None,))) {
        return Ok(());
    }
    loop {
        let rows: Vec<(Vec<u8>, String)> = sqlx::query_as(
            "SELECT e.id, u.email FROM draw_entries e JOIN users u ON u.id = e.user_id \
             WHERE e.sale_id = ? AND e.draw_rank IS NOT NULL AND e.won_at IS NULL \
               AND e.not_won_mail_at IS NULL LIMIT ?",
        )
        .bind(sale)
        .bind(MAIL_CHUNK)
        .fetch_all(mysql)
        .await
        .context("reading the entrants not drawn")?;
        if rows.is_empty() {
            break;
        }
        for (id, email) in &rows {
            let entry = entries::entry_id(id)?;
            let mail = MailSend {
                to: email.clone(),
                subject: "The draw is over / 추첨이 끝났습니다".to_owned(),
                text: "You were not drawn this time. Thank you for entering.\n\n\
                       이번 추첨에는 당첨되지 않았습니다. 응모해 주셔서 감사합니다.\n"
                    .to_owned(),
            };
            publish_mail(broker, mail_id(sale, "not_won", &entry), mail).await?;
            sqlx::query("UPDATE draw_entries SET not_won_mail_at = UTC_TIMESTAMP(3) WHERE id = ?")
                .bind(&id[..])
                .execute(mysql)
                .await
                .context("marking a not-won mail queued")?;
        }
    }
    sqlx::query(
        "UPDATE draws SET ended_at = UTC_TIMESTAMP(3) WHERE sale_id = ? AND ended_at IS NULL",
    )
    .bind(sale)
    .execute(mysql)
    .await
    .context("marking the draw ended")?;
    tracing::info!(sale = %sale, "draw ended; entrants not drawn were mailed");
    metrics::counter!("dropline_draw_steps_total", "step" => "end").increment(1);
    Ok(())
}

/// One pass over the armed sales: each draw moved one step on. Failures of one sale are
/// logged and do not stop the others.
async fn tick(
    redis: &Redis,
    mysql: &MySqlPool,
    broker: &Broker,
    config: &Config,
) -> anyhow::Result<()> {
    let reveal_delay = Duration::from_secs(config.draw.reveal_delay_seconds);
    for sale in dropline_core::sale::indexed(redis).await? {
        let mode: Option<String> = redis
            .pool()
            .hget(SaleKeys::new(redis, sale).cfg(), "mode")
            .await
            .context("reading a sale's mode")?;
        if mode.as_deref() != Some("draw") {
            continue;
        }
        let step = match advance(redis, mysql, sale, reveal_delay, Utc::now()).await {
            Ok(step) => step,
            Err(error) => {
                tracing::warn!(sale = %sale, error = format!("{error:#}"), "draw step failed; retried next tick");
                continue;
            }
        };
        if step == Step::Ranked
            && let Err(error) = claims(redis, mysql, broker, &config.draw.public_url, sale).await
        {
            tracing::warn!(sale = %sale, error = format!("{error:#}"), "draw claims step failed; retried next tick");
        }
    }
    Ok(())
}

/// Runs the draw leader until `shutdown`.
pub async fn run(config: &Config, deps: &Deps, shutdown: CancellationToken) -> anyhow::Result<()> {
    let redis = deps.redis()?.clone();
    let mysql = deps.mysql()?.clone();
    let broker = deps.broker()?.clone();
    let tick_every = Duration::from_millis(config.draw.tick_ms.max(1));
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
        if let Err(error) = tick(&redis, &mysql, &broker, config).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The script runs behind the shared prelude, and its header is its contract.
    #[test]
    fn the_tick_script_documents_keys_argv_and_returns() {
        assert_eq!(DRAW_TICK.check_contract(), Ok(()));
    }

    #[test]
    fn mail_ids_are_fixed_per_entry_and_kind() {
        let sale = SaleId::from_uuid(Uuid::nil());
        let entry = [7u8; 16];
        assert_eq!(mail_id(sale, "won", &entry), mail_id(sale, "won", &entry));
        assert_ne!(
            mail_id(sale, "won", &entry),
            mail_id(sale, "not_won", &entry)
        );
        assert_eq!(mail_id(sale, "won", &entry).get_version_num(), 5);
    }
}
