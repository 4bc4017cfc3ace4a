//! Draw sales at the edge (design/draw.md "Entering"): the join, status and leave of a sale
//! whose `cfg.mode` is `draw`, and the public record of its draw (`GET /w/{id}/draw`).
//!
//! An entry is written to MySQL and committed before the answer
//! ([`dropline_core::sale::entries`]); Redis holds an index of it (`ent`) that status polls
//! read, written after the commit. If that write is lost (Redis failed between the two, or lost
//! its data), a join or poll that finds no index entry asks MySQL and writes it back, so an
//! `entered` answer survives the loss of Redis. A withdrawn entry stays in the index (marked),
//! so polls of a buyer who left never reach MySQL.
//!
//! MySQL is reached through a pool that connects on first use: the waiting room starts and
//! serves its lines without MySQL, and a draw's join answers 503 `unavailable` while MySQL is
//! down (its `/readyz` stays Redis-only, as draw.md says).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use dropline_core::clients::redis::Redis;
use dropline_core::coalesce::Fresh;
use dropline_core::http::error::{ApiError, ErrorCode};
use dropline_core::http::extract::PathId;
use dropline_core::ids::{SaleId, UserId};
use dropline_core::sale::draw::{self, EntryId};
use dropline_core::sale::entries::{self, Entered, Withdrawn};
use dropline_core::sale::keys::SaleKeys;
use fred::prelude::*;
use rand::Rng;
use serde::Serialize;
use sqlx::MySqlPool;
use utoipa::ToSchema;

use super::{Edge, JoinRequest, Refusal, TICKET_TTL, epoch_seconds, judge, refusal_error, rfc3339};
use crate::docs::{EntryState, Error, SaleIdParam, SaleState};
use crate::queue::Verdict;
use crate::scripts::WR_ENTRY;

/// `retry_after_ms` while entries are taken: at most 300 s (draw.md).
const ENTERING_MAX_RETRY_MS: u64 = 300_000;
/// `retry_after_ms` after the freeze: at most 30 s (draw.md).
const AFTER_MAX_RETRY_MS: u64 = 30_000;
/// How long a MySQL step of a request may take before the answer is 503.
const MYSQL_BOUND: Duration = Duration::from_secs(5);
/// How long the public draw record is served from memory.
const RECORD_TTL: Duration = Duration::from_secs(1);

/// A draw entry as the `ent` index holds it: `[-]<32 hex>[:<rank>]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Indexed {
    pub id: EntryId,
    pub rank: Option<u32>,
    pub withdrawn: bool,
}

impl Indexed {
    /// The index's text; `None` for anything else (an empty field is no entry).
    pub fn parse(value: &str) -> Option<Self> {
        let (withdrawn, rest) = match value.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        let (hex_id, rank) = match rest.split_once(':') {
            Some((id, rank)) => (id, Some(rank.parse::<u32>().ok().filter(|r| *r > 0)?)),
            None => (rest, None),
        };
        if hex_id.len() != 32 {
            return None;
        }
        let mut id: EntryId = [0; 16];
        hex::decode_to_slice(hex_id, &mut id).ok()?;
        Some(Self {
            id,
            rank,
            withdrawn,
        })
    }

    /// The text [`Indexed::parse`] reads.
    pub fn value(&self) -> String {
        entries::index_value(&self.id, self.rank, self.withdrawn)
    }
}

/// A draw's win as the `win` hash holds it (lua/draw_tick.lua).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Win {
    None,
    /// Promoted, no order yet: `<deadline>:<max_quantity>`.
    Open {
        deadline_ms: u64,
        max_quantity: u32,
    },
    /// Its one order was made and is not settled: `ord:<order>:<deadline>:<max_quantity>`.
    Ordered {
        deadline_ms: u64,
        max_quantity: u32,
    },
    Claimed,
    Forfeited,
}

impl Win {
    pub fn parse(value: &str) -> Self {
        let parts = |text: &str| -> Option<(u64, u32)> {
            let (deadline, max) = text.split_once(':')?;
            Some((deadline.parse().ok()?, max.parse().ok()?))
        };
        match value {
            "claimed" => Self::Claimed,
            "forfeited" => Self::Forfeited,
            other => match other.strip_prefix("ord:") {
                Some(rest) => rest
                    .split_once(':')
                    .and_then(|(_order, rest)| parts(rest))
                    .map_or(Self::None, |(deadline_ms, max_quantity)| Self::Ordered {
                        deadline_ms,
                        max_quantity,
                    }),
                None => parts(other).map_or(Self::None, |(deadline_ms, max_quantity)| Self::Open {
                    deadline_ms,
                    max_quantity,
                }),
            },
        }
    }
}

/// What the edge keeps for draw sales.
#[derive(Debug)]
pub(super) struct Draws {
    mysql: MySqlPool,
    /// Armed sales' modes (true: draw). A mode never changes once armed, so an entry is never
    /// stale; only armed sales are kept, so ids made up by a caller cost one read each and
    /// nothing here.
    modes: quick_cache::sync::Cache<SaleId, bool>,
    reveal_delay: Duration,
    /// The public records, each for [`RECORD_TTL`] once written (a sale without one yet is
    /// read again by the next caller); concurrent misses share one MySQL read.
    records: Fresh<SaleId, Option<entries::DrawRecord>, ApiError>,
    /// Winners pages (sale, after rank), each for [`RECORD_TTL`]: a crowd (or a client
    /// repeating the call) reads MySQL once a second per page, not once per request.
    winners: Fresh<(SaleId, u32), axum::body::Bytes, ApiError>,
}

impl Draws {
    pub(super) fn new(mysql: MySqlPool, reveal_delay: Duration) -> Self {
        Self {
            mysql,
            modes: quick_cache::sync::Cache::new(10_000),
            reveal_delay,
            records: Fresh::new(RECORD_TTL, 1_000).keeping(Option::is_some),
            winners: Fresh::new(RECORD_TTL, 256),
        }
    }
}

/// Whether `sale` is a draw sale (`None`: not armed), from memory after the first call.
///
/// The Redis read is boxed, so that the handlers' futures, which every request moves, do not
/// carry its state when the mode is known (the usual case).
pub(super) async fn is_draw(edge: &Edge, sale: SaleId) -> Result<Option<bool>, ApiError> {
    if let Some(draw) = edge.0.draws.modes.get(&sale) {
        return Ok(Some(draw));
    }
    Box::pin(read_mode(edge, sale)).await
}

/// [`is_draw`] on a miss: reads `cfg.mode` and remembers it for an armed sale.
async fn read_mode(edge: &Edge, sale: SaleId) -> Result<Option<bool>, ApiError> {
    let draws = &edge.0.draws;
    let redis = edge.0.redis.clone();
    let (opens_at, mode): (Option<String>, Option<String>) = edge
        .0
        .outage
        .run("reading the sale's mode", async move {
            let cfg = SaleKeys::new(&redis, sale).cfg();
            let values: (Option<String>, Option<String>) =
                redis.pool().hmget(cfg, vec!["opens_at", "mode"]).await?;
            Ok(values)
        })
        .await?;
    if opens_at.is_none() {
        return Ok(None);
    }
    let draw = mode.as_deref() == Some(draw::Mode::Draw.as_str());
    draws.modes.insert(sale, draw);
    Ok(Some(draw))
}

/// `wr_entry.lua`'s answer.
#[derive(Debug, Clone)]
struct Look {
    result: String,
    /// The index entry (`None`: absent or unreadable).
    entry: Option<Indexed>,
    opens_at_ms: u64,
    close_at_ms: u64,
    now_ms: u64,
    notice: Option<String>,
    /// closed | sold_out | scheduled | paused | open
    state: String,
    promoted: u64,
    win: Win,
}

impl Look {
    /// The sale's state as draw.md names it.
    fn sale_state(&self) -> &'static str {
        match self.state.as_str() {
            "closed" => "closed",
            "sold_out" => "sold_out",
            "scheduled" => "scheduled",
            "paused" => "paused",
            _ if self.now_ms < self.close_at_ms => "entering",
            _ if self.promoted == 0 => "drawing",
            _ => "claiming",
        }
    }

    fn ended(&self) -> bool {
        matches!(self.state.as_str(), "closed" | "sold_out")
    }
}

async fn look(
    edge: &Edge,
    sale: SaleId,
    user: UserId,
    verdict: Option<&Verdict>,
) -> Result<Look, ApiError> {
    let redis: Redis = edge.0.redis.clone();
    let k = SaleKeys::new(&redis, sale);
    let (what, spent, expires) = match verdict {
        None => ("status", k.pow_spent("-"), 0),
        Some(Verdict::Open) => ("none", k.pow_spent("-"), 0),
        Some(Verdict::BadRequest) => ("bad", k.pow_spent("-"), 0),
        Some(Verdict::PowInvalid) => ("invalid", k.pow_spent("-"), 0),
        Some(Verdict::PowSolved {
            spent_id,
            expires_at_ms,
        }) => ("ok", k.pow_spent(spent_id), *expires_at_ms),
    };
    let keys = vec![
        k.cfg(),
        k.avail(),
        k.held(),
        k.entries(),
        k.draw_counters(),
        k.wins(),
        spent,
    ];
    let args: Vec<Value> = vec![
        Value::from(&user.as_bytes()[..]),
        Value::from(what),
        Value::from(expires.to_string()),
    ];
    let reply: Vec<Value> = edge
        .0
        .outage
        .run("reading a draw entry", WR_ENTRY.run(&redis, keys, args))
        .await?;
    parse_look(reply).map_err(ApiError::internal)
}

fn parse_look(reply: Vec<Value>) -> anyhow::Result<Look> {
    anyhow::ensure!(
        reply.len() == 10,
        "wr_entry returned {} values, expected 10",
        reply.len()
    );
    let text = |i: usize| -> String { reply[i].as_string().unwrap_or_default() };
    let uint = |i: usize| -> u64 { reply[i].as_u64().unwrap_or(0) };
    let notice = text(6);
    Ok(Look {
        result: text(0),
        entry: Indexed::parse(&text(1)),
        opens_at_ms: uint(2),
        close_at_ms: uint(3),
        now_ms: uint(4),
        notice: (!notice.is_empty()).then_some(notice),
        state: text(7),
        promoted: uint(8),
        win: Win::parse(&text(9)),
    })
}

/// Where an entrant stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Standing {
    state: EntryState,
    rank: Option<u32>,
    position: Option<u64>,
    max_quantity: Option<u32>,
    /// Only while `won`: the claim deadline (the pass's expiry).
    deadline_ms: Option<u64>,
}

fn standing(look: &Look, entry: &Indexed) -> Standing {
    let mut s = Standing {
        state: EntryState::Entered,
        rank: entry.rank,
        position: None,
        max_quantity: None,
        deadline_ms: None,
    };
    match look.win {
        Win::Claimed => s.state = EntryState::Claimed,
        Win::Forfeited => s.state = EntryState::Forfeited,
        Win::Open {
            deadline_ms,
            max_quantity,
        } => {
            s.max_quantity = Some(max_quantity);
            if deadline_ms > look.now_ms && !look.ended() {
                s.state = EntryState::Won;
                s.deadline_ms = Some(deadline_ms);
            } else {
                // Lapsed: the leader's next tick records it.
                s.state = EntryState::Forfeited;
            }
        }
        // Its order is in flight: still won until the order settles (paid: claimed; ended
        // unpaid: forfeited), with the pass while the claim window lasts (paying needs none).
        Win::Ordered {
            deadline_ms,
            max_quantity,
        } => {
            s.max_quantity = Some(max_quantity);
            s.state = EntryState::Won;
            if deadline_ms > look.now_ms {
                s.deadline_ms = Some(deadline_ms);
            }
        }
        Win::None => match entry.rank {
            _ if look.ended() => s.state = EntryState::NotWon,
            None => s.state = EntryState::Entered,
            Some(rank) => {
                s.state = EntryState::Waitlisted;
                s.position = Some(u64::from(rank).saturating_sub(look.promoted).max(1));
            }
        },
    }
    s
}

/// When to poll next: while entries are taken, at the draw (the close plus the reveal delay)
/// but at most 300 s away; after it, sooner while something may change for the entrant. Spread
/// by up to a tenth (and at least a second) so a crowd of entrants does not poll in one instant.
fn retry_after_ms(look: &Look, standing: &Standing, reveal_delay: Duration) -> u64 {
    let reveal = look
        .close_at_ms
        .saturating_add(u64::try_from(reveal_delay.as_millis()).unwrap_or(u64::MAX));
    let (base, max) = if look.now_ms < look.close_at_ms {
        (
            reveal
                .saturating_sub(look.now_ms)
                .clamp(1_000, ENTERING_MAX_RETRY_MS),
            ENTERING_MAX_RETRY_MS,
        )
    } else {
        let base = match standing.state {
            EntryState::Entered if look.now_ms < reveal => reveal - look.now_ms,
            EntryState::Entered | EntryState::Won => 2_000,
            EntryState::Waitlisted => 10_000,
            EntryState::Claimed | EntryState::Forfeited | EntryState::NotWon => AFTER_MAX_RETRY_MS,
        };
        (base.clamp(1_000, AFTER_MAX_RETRY_MS), AFTER_MAX_RETRY_MS)
    };
    let spread = (base / 10).max(1_000);
    (base + rand::rng().random_range(0..spread)).min(max)
}

/// The answer to a draw sale's join.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EntryJoinAnswer {
    #[schema(value_type = EntryState)]
    state: EntryState,
    /// The entry: 16 random bytes as 32 lowercase hex digits, one per account and sale.
    #[schema(pattern = "^[0-9a-f]{32}$")]
    entry_id: String,
    /// Places before the entrant's turn while `waitlisted`; `null` otherwise.
    position: Option<u64>,
    /// Always `null` for a draw.
    eta_seconds: Option<u64>,
    /// Milliseconds to wait before polling `GET /w/{sale_id}/status` (≤ 300,000 while entries
    /// are taken, else ≤ 30,000).
    #[schema(minimum = 1000, maximum = 300000)]
    retry_after_ms: u64,
    /// The bearer token of `status` and `DELETE join` (scheme `ticket`), good for 24 h.
    ticket: String,
    /// When entries opened (RFC 3339 UTC).
    #[schema(format = DateTime)]
    opens_at: String,
    /// When entries close and the draw is made (RFC 3339 UTC).
    #[schema(format = DateTime)]
    entries_close_at: String,
    /// The operator's notice (door.md §4), `null` when none.
    notice: Option<String>,
}

/// Where an entrant stands in a draw sale.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EntryStatusAnswer {
    #[schema(value_type = EntryState)]
    state: EntryState,
    #[schema(pattern = "^[0-9a-f]{32}$")]
    entry_id: String,
    /// 1-based place in the published ranking, once drawn.
    #[schema(minimum = 1)]
    rank: Option<u32>,
    /// While `waitlisted`: rank − promoted.
    #[schema(minimum = 1)]
    position: Option<u64>,
    /// Once promoted: the most units the win may buy.
    #[schema(minimum = 1)]
    max_quantity: Option<u32>,
    #[schema(minimum = 1000, maximum = 300000)]
    retry_after_ms: u64,
    /// Only while `won`: the pass for `POST /api/orders`, valid until the claim deadline.
    pass: Option<String>,
    #[schema(format = DateTime)]
    pass_expires_at: Option<String>,
    /// The operator's notice (door.md §4), `null` when none.
    notice: Option<String>,
}

/// A MySQL step of a request within [`MYSQL_BOUND`]; a failure is a 503.
async fn mysql<T>(
    edge: &Edge,
    what: &'static str,
    step: impl Future<Output = anyhow::Result<T>>,
) -> Result<T, ApiError> {
    let error = match tokio::time::timeout(MYSQL_BOUND, step).await {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(error)) => error,
        Err(_) => anyhow::anyhow!("MySQL did not answer within {MYSQL_BOUND:?}"),
    };
    tracing::warn!(error = %format!("{error:#}"), "MySQL unavailable while {what}: answering 503");
    metrics::counter!("dropline_waitroom_unavailable_total").increment(1);
    Err(ApiError::new(
        ErrorCode::Unavailable,
        "draw entries cannot be reached right now; nothing was lost, try again",
    )
    .with_retry_after(edge.0.outage.retry_after))
}

/// Writes `entry` to the `ent` index; a failure is only logged (MySQL holds the entry, and the
/// next join or poll that misses it writes it again).
async fn index(edge: &Edge, sale: SaleId, user: UserId, entry: Indexed) {
    let redis = edge.0.redis.clone();
    let key = SaleKeys::new(&redis, sale).entries();
    let write = async move {
        let _: i64 = redis
            .pool()
            .hset(key, (Value::from(&user.as_bytes()[..]), entry.value()))
            .await?;
        Ok::<_, anyhow::Error>(())
    };
    match tokio::time::timeout(edge.0.outage.bound, write).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(error = %format!("{error:#}"), "could not index a draw entry in Redis");
        }
        Err(_) => tracing::warn!("could not index a draw entry in Redis: timed out"),
    }
}

/// The user's live entry from MySQL when the index has none (Redis lost it), indexed again.
async fn recover(
    edge: &Edge,
    sale: SaleId,
    user: UserId,
    look: &Look,
) -> Result<Option<Indexed>, ApiError> {
    if look.entry.is_some() || look.now_ms < look.opens_at_ms {
        return Ok(None);
    }
    let found = mysql(
        edge,
        "reading a draw entry",
        entries::find(&edge.0.draws.mysql, sale, user),
    )
    .await?;
    let Some(found) = found.filter(|e| !e.withdrawn) else {
        return Ok(None);
    };
    let entry = Indexed {
        id: found.id,
        rank: found.rank,
        withdrawn: false,
    };
    metrics::counter!("dropline_waitroom_draw_entries_recovered_total").increment(1);
    index(edge, sale, user, entry).await;
    Ok(Some(entry))
}

fn join_answer(
    edge: &Edge,
    sale: SaleId,
    user: UserId,
    look: &Look,
    entry: &Indexed,
) -> Json<super::JoinReply> {
    let s = standing(look, entry);
    let expires = epoch_seconds().saturating_add(TICKET_TTL.as_secs());
    Json(super::JoinReply::Entry(EntryJoinAnswer {
        state: s.state,
        entry_id: hex::encode(entry.id),
        position: s.position,
        eta_seconds: None,
        retry_after_ms: retry_after_ms(look, &s, edge.0.draws.reveal_delay),
        ticket: edge.0.tickets.issue(sale, user, expires),
        opens_at: rfc3339(look.opens_at_ms),
        entries_close_at: rfc3339(look.close_at_ms),
        notice: look.notice.clone(),
    }))
}

/// `POST /w/{sale}/join` of a draw sale (design/draw.md "Entering").
pub(super) async fn join(
    edge: &Edge,
    sale: SaleId,
    user: UserId,
    request: JoinRequest,
) -> Result<Json<super::JoinReply>, ApiError> {
    let (verdict, refusal) = judge(edge, sale, user, request);
    let mut look = look(edge, sale, user, Some(&verdict)).await?;
    let refused = |why: Refusal| {
        let (result, error) = refusal_error(sale, why, refusal.clone(), &verdict);
        metrics::counter!("dropline_waitroom_entries_total", "result" => result).increment(1);
        Err(error)
    };
    match look.result.as_str() {
        "entered" => {
            let Some(entry) = look.entry else {
                return Err(ApiError::internal(anyhow::anyhow!(
                    "wr_entry: an entry that does not parse"
                )));
            };
            metrics::counter!("dropline_waitroom_entries_total", "result" => "again").increment(1);
            Ok(join_answer(edge, sale, user, &look, &entry))
        }
        "enter" => {
            let now = dropline_core::sale::from_ms(i64::try_from(look.now_ms).unwrap_or(0));
            let entered = mysql(
                edge,
                "writing a draw entry",
                entries::enter(&edge.0.draws.mysql, sale, user, now),
            )
            .await?;
            match entered {
                Entered::Entered { entry, new } => {
                    let entry = Indexed {
                        id: entry,
                        rank: None,
                        withdrawn: false,
                    };
                    index(edge, sale, user, entry).await;
                    metrics::counter!(
                        "dropline_waitroom_entries_total",
                        "result" => if new { "new" } else { "again" }
                    )
                    .increment(1);
                    look.entry = Some(entry);
                    look.win = Win::None;
                    Ok(join_answer(edge, sale, user, &look, &entry))
                }
                Entered::Closed => Err(entries_closed()),
                Entered::NotVerified => Err(ApiError::new(
                    ErrorCode::EmailNotVerified,
                    "only an account with a verified e-mail address may enter a draw",
                )),
                Entered::NoDraw => Err(super::no_such_sale()),
            }
        }
        "none" => {
            if let Some(entry) = recover(edge, sale, user, &look).await? {
                look.entry = Some(entry);
                return Ok(join_answer(edge, sale, user, &look, &entry));
            }
            match look.state.as_str() {
                "scheduled" => Err(ApiError::new(
                    ErrorCode::SaleNotOpen,
                    "entries have not opened yet; try again at opens_at",
                )),
                "paused" => Err(ApiError::new(
                    ErrorCode::SaleNotOpen,
                    "the draw is paused: no new entries for now",
                )),
                _ => Err(entries_closed()),
            }
        }
        "bad_request" => refused(Refusal::BadRequest),
        "pow_required" => refused(Refusal::PowRequired),
        "pow_invalid" => refused(Refusal::PowInvalid),
        "pow_expired" => refused(Refusal::PowExpired),
        "pow_spent" => refused(Refusal::PowSpent),
        // not_found, or the sale stopped being a draw (a rebuilt sale): no such draw.
        _ => Err(super::no_such_sale()),
    }
}

fn entries_closed() -> ApiError {
    ApiError::new(
        ErrorCode::EntriesClosed,
        "the draw's entries are closed: no new entry and no withdrawal",
    )
}

/// `GET /w/{sale}/status` of a draw sale.
pub(super) async fn status(
    edge: &Edge,
    sale: SaleId,
    user: UserId,
) -> Result<Json<super::StatusReply>, ApiError> {
    let look = look(edge, sale, user, None).await?;
    if look.result == "not_found" || look.result == "fcfs" {
        return Err(super::no_such_sale());
    }
    let entry = match look.entry.filter(|e| !e.withdrawn) {
        Some(entry) => entry,
        None => recover(edge, sale, user, &look).await?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                "no entry in this draw: never entered, or withdrawn; join to enter",
            )
        })?,
    };
    let s = standing(&look, &entry);
    let (pass, pass_expires_at) = match s.deadline_ms {
        Some(deadline_ms) => (
            Some(super::sign_pass(
                edge,
                sale,
                user,
                look.now_ms,
                deadline_ms,
            )?),
            Some(rfc3339(deadline_ms)),
        ),
        None => (None, None),
    };
    Ok(Json(super::StatusReply::Entry(EntryStatusAnswer {
        state: s.state,
        entry_id: hex::encode(entry.id),
        rank: s.rank,
        position: s.position,
        max_quantity: s.max_quantity,
        retry_after_ms: retry_after_ms(&look, &s, edge.0.draws.reveal_delay),
        pass,
        pass_expires_at,
        notice: look.notice.clone(),
    })))
}

/// `DELETE /w/{sale}/join` of a draw sale: withdraws before the freeze.
pub(super) async fn leave(edge: &Edge, sale: SaleId, user: UserId) -> Result<StatusCode, ApiError> {
    // Withdrawn already (the index says so): nothing to ask MySQL, so a client repeating the
    // call costs one Redis read each time, not a MySQL transaction.
    if look(edge, sale, user, None)
        .await?
        .entry
        .is_some_and(|e| e.withdrawn)
    {
        return Ok(StatusCode::NO_CONTENT);
    }
    let now = chrono::Utc::now();
    let withdrawn = mysql(
        edge,
        "withdrawing a draw entry",
        entries::withdraw(&edge.0.draws.mysql, sale, user, now),
    )
    .await?;
    match withdrawn {
        Withdrawn::Withdrawn(id) => {
            let entry = Indexed {
                id,
                rank: None,
                withdrawn: true,
            };
            index(edge, sale, user, entry).await;
            metrics::counter!("dropline_waitroom_entries_withdrawn_total").increment(1);
            Ok(StatusCode::NO_CONTENT)
        }
        Withdrawn::NoEntry => Ok(StatusCode::NO_CONTENT),
        Withdrawn::Closed => Err(entries_closed()),
        Withdrawn::NoDraw => Err(super::no_such_sale()),
    }
}

/// The public record of a draw (`GET /w/{sale}/draw`); bytes as lowercase hex, `null` until
/// known.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(super) struct DrawAnswer {
    /// `dropline-draw-v1`.
    algorithm: &'static str,
    #[schema(value_type = SaleState)]
    state: &'static str,
    /// SHA-256 of the seed, public from the sale's creation.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    seed_commitment: String,
    /// Entries in the frozen list; `null` before the freeze.
    entry_count: Option<u32>,
    /// SHA-256 of the frozen entry ids (16 bytes each) in ascending byte order.
    entries_digest: Option<String>,
    /// The seed, once revealed.
    seed: Option<String>,
    #[schema(format = DateTime)]
    drawn_at: Option<String>,
    /// Wins handed out so far.
    promoted: u64,
}

/// The draw of a sale.
///
/// Public: what anyone needs to check the draw (design/draw.md, `dropline-draw-v1`): the
/// seed's commitment from the start, the frozen list's count and digest once entries close,
/// the seed once revealed.
#[utoipa::path(get, path = "/w/{sale_id}/draw", tag = "draw", params(SaleIdParam), responses(
    (status = 200, description = "The draw's public record", body = DrawAnswer),
    (status = 404, description = "`not_found`: no such sale, or not a draw sale", body = Error),
    (status = 503, description = "`unavailable`: try again after `Retry-After`", body = Error),
))]
#[tracing::instrument(skip_all, fields(sale_id = %sale))]
pub(super) async fn draw_record(
    State(edge): State<Edge>,
    PathId(sale): PathId<SaleId>,
) -> Result<Json<DrawAnswer>, ApiError> {
    if is_draw(&edge, sale).await? != Some(true) {
        return Err(ApiError::new(ErrorCode::NotFound, "no such draw sale"));
    }
    let look = look(&edge, sale, UserId::from(uuid::Uuid::nil()), None).await?;
    let record = record(&edge, sale)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such draw sale"))?;
    Ok(Json(DrawAnswer {
        algorithm: draw::ALGORITHM,
        state: look.sale_state(),
        seed_commitment: hex::encode(record.seed_commitment),
        entry_count: record.entry_count,
        entries_digest: record.entries_digest.map(hex::encode),
        seed: record.seed.map(hex::encode),
        drawn_at: record
            .drawn_at
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        promoted: look.promoted,
    }))
}

/// The draw's MySQL record, from memory for [`RECORD_TTL`].
async fn record(edge: &Edge, sale: SaleId) -> Result<Option<entries::DrawRecord>, ApiError> {
    let draws = &edge.0.draws;
    let pool = draws.mysql.clone();
    let retry_after = edge.0.outage.retry_after;
    draws
        .records
        .get_or_load(sale, move || async move {
            match tokio::time::timeout(MYSQL_BOUND, entries::record(&pool, sale)).await {
                Ok(Ok(record)) => Ok(record),
                Ok(Err(error)) => {
                    tracing::warn!(error = %format!("{error:#}"), "reading a draw record");
                    Err(ApiError::code(ErrorCode::Unavailable).with_retry_after(retry_after))
                }
                Err(_) => Err(ApiError::code(ErrorCode::Unavailable).with_retry_after(retry_after)),
            }
        })
        .await
        .unwrap_or_else(|aborted| Err(ApiError::internal(aborted)))
}

/// Entries in a page of `GET /w/{sale}/draw/entries` (draw.md).
const ENTRIES_PAGE: u32 = 10_000;

/// `?cursor=` of the entries list.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct EntriesQuery {
    /// From a previous page's `next_cursor`; absent for the first page.
    #[param(pattern = "^[0-9a-f]{32}$")]
    cursor: Option<String>,
}

/// A page of the frozen entry list.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EntriesPage {
    /// Entry ids (32 lowercase hex digits), ascending.
    items: Vec<String>,
    /// The next page's cursor; `null` on the last page.
    #[schema(pattern = "^[0-9a-f]{32}$")]
    next_cursor: Option<String>,
}

/// The frozen entry list of a draw.
///
/// Public, once entries are frozen: every entry id in ascending byte order, 10,000 a page, so
/// that anyone can recompute `entries_digest` and `entry_count`, and with the seed the whole
/// ranking (design/draw.md, `dropline-draw-v1`).
#[utoipa::path(get, path = "/w/{sale_id}/draw/entries", tag = "draw", params(SaleIdParam, EntriesQuery), responses(
    (status = 200, description = "A page of entry ids", body = EntriesPage),
    (status = 400, description = "`bad_request`: a cursor that is not one", body = Error),
    (status = 404, description = "`not_found`: no such sale, or not a draw sale", body = Error),
    (status = 409, description = "`invalid_state`: entries are not frozen yet", body = Error),
    (status = 503, description = "`unavailable`: try again after `Retry-After`", body = Error),
))]
#[tracing::instrument(skip_all, fields(sale_id = %sale))]
pub(super) async fn draw_entries(
    State(edge): State<Edge>,
    PathId(sale): PathId<SaleId>,
    axum::extract::Query(query): axum::extract::Query<EntriesQuery>,
) -> Result<Json<EntriesPage>, ApiError> {
    let after = match query.cursor.as_deref() {
        None => None,
        Some(cursor) => {
            let mut id: EntryId = [0; 16];
            if cursor.len() != 32
                || !cursor
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                || hex::decode_to_slice(cursor, &mut id).is_err()
            {
                return Err(ApiError::bad_request(
                    "`cursor` must be a `next_cursor` of this list (32 lowercase hex digits)",
                ));
            }
            Some(id)
        }
    };
    if is_draw(&edge, sale).await? != Some(true) {
        return Err(ApiError::new(ErrorCode::NotFound, "no such draw sale"));
    }
    let record = record(&edge, sale)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such draw sale"))?;
    if record.entry_count.is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            "entries are not frozen yet: the list is published at entries_close_at",
        ));
    }
    let ids = mysql(
        &edge,
        "reading the frozen entries",
        entries::frozen_ids(&edge.0.draws.mysql, sale, after, ENTRIES_PAGE + 1),
    )
    .await?;
    let more = ids.len() > ENTRIES_PAGE as usize;
    let items: Vec<String> = ids
        .iter()
        .take(ENTRIES_PAGE as usize)
        .map(hex::encode)
        .collect();
    let next_cursor = if more { items.last().cloned() } else { None };
    Ok(Json(EntriesPage { items, next_cursor }))
}

/// Winners per page of `GET /w/{id}/draw/winners`.
const WINNERS_PAGE: u32 = 10_000;

/// `?cursor=` of the winners list.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct WinnersQuery {
    /// From a previous page's `next_cursor` (the last rank it listed); absent for the first page.
    #[param(pattern = "^[1-9][0-9]{0,8}$")]
    cursor: Option<String>,
}

/// One promoted entry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(super) struct Winner {
    #[schema(minimum = 1)]
    rank: u32,
    #[schema(pattern = "^[0-9a-f]{32}$")]
    entry_id: String,
    /// The most units the win could buy.
    #[schema(minimum = 1)]
    max_quantity: u32,
    /// `claiming` (may still order), `claimed` (paid) or `forfeited`.
    #[schema(value_type = WinOutcome)]
    outcome: entries::Outcome,
}

/// What became of a win.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // the schema of entries::Outcome
pub(super) enum WinOutcome {
    Claiming,
    Claimed,
    Forfeited,
}

/// A page of the winners list.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct WinnersPage {
    /// Promoted entries by rank: always ranks 1 to `promoted` (forfeits included), in order.
    items: Vec<Winner>,
    /// The next page's cursor; `null` on the last page.
    next_cursor: Option<String>,
}

/// The winners of a draw.
///
/// Public: every promoted entry by rank with what its win could buy and what became of it
/// (design/draw.md). With `/draw` and `/draw/entries` anyone can check that the winners are the
/// ranking's first ranks. Recorded by the draw leader a tick after the promotion; served from a
/// one-second cache.
#[utoipa::path(get, path = "/w/{sale_id}/draw/winners", tag = "draw", params(SaleIdParam, WinnersQuery), responses(
    (status = 200, description = "A page of winners", body = WinnersPage),
    (status = 400, description = "`bad_request`: a cursor that is not one", body = Error),
    (status = 404, description = "`not_found`: no such sale, or not a draw sale", body = Error),
    (status = 503, description = "`unavailable`: try again after `Retry-After`", body = Error),
))]
#[tracing::instrument(skip_all, fields(sale_id = %sale))]
pub(super) async fn draw_winners(
    State(edge): State<Edge>,
    PathId(sale): PathId<SaleId>,
    axum::extract::Query(query): axum::extract::Query<WinnersQuery>,
) -> Result<axum::response::Response, ApiError> {
    let after = match query.cursor.as_deref() {
        None => 0,
        Some(cursor) => cursor
            .parse::<u32>()
            .ok()
            .filter(|r| *r > 0 && !cursor.starts_with('0') && !cursor.starts_with('+'))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "`cursor` must be a `next_cursor` of this list (a rank: digits, no sign)",
                )
            })?,
    };
    if is_draw(&edge, sale).await? != Some(true) {
        return Err(ApiError::new(ErrorCode::NotFound, "no such draw sale"));
    }
    let draws = &edge.0.draws;
    let answer = |page: axum::body::Bytes| {
        (
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            )],
            page,
        )
            .into_response()
    };
    let pool = draws.mysql.clone();
    let retry_after = edge.0.outage.retry_after;
    let page = draws
        .winners
        .get_or_load((sale, after), move || async move {
            let read = entries::wins(&pool, sale, after, WINNERS_PAGE + 1);
            let wins = match tokio::time::timeout(MYSQL_BOUND, read).await {
                Ok(Ok(wins)) => wins,
                Ok(Err(error)) => {
                    tracing::warn!(error = %format!("{error:#}"), "reading a draw's winners");
                    return Err(
                        ApiError::code(ErrorCode::Unavailable).with_retry_after(retry_after)
                    );
                }
                Err(_) => {
                    return Err(
                        ApiError::code(ErrorCode::Unavailable).with_retry_after(retry_after)
                    );
                }
            };
            let more = wins.len() > WINNERS_PAGE as usize;
            let items: Vec<Winner> = wins
                .iter()
                .take(WINNERS_PAGE as usize)
                .map(|w| Winner {
                    rank: w.rank,
                    entry_id: hex::encode(w.entry),
                    max_quantity: w.max_quantity,
                    outcome: w.outcome,
                })
                .collect();
            let next_cursor = if more {
                items.last().map(|w| w.rank.to_string())
            } else {
                None
            };
            serde_json::to_vec(&WinnersPage { items, next_cursor })
                .map(axum::body::Bytes::from)
                .map_err(ApiError::internal)
        })
        .await
        .unwrap_or_else(|aborted| Err(ApiError::internal(aborted)))?;
    Ok(answer(page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_values_read_back() {
        let id = [0xabu8; 16];
        for entry in [
            Indexed {
                id,
                rank: None,
                withdrawn: false,
            },
            Indexed {
                id,
                rank: Some(7),
                withdrawn: false,
            },
            Indexed {
                id,
                rank: None,
                withdrawn: true,
            },
        ] {
            assert_eq!(Indexed::parse(&entry.value()), Some(entry));
        }
        for bad in [
            "",
            "-",
            "ab",
            &"g".repeat(32),
            &format!("{}:0", "a".repeat(32)),
        ] {
            assert_eq!(Indexed::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn wins_read_back() {
        assert_eq!(Win::parse(""), Win::None);
        assert_eq!(Win::parse("claimed"), Win::Claimed);
        assert_eq!(Win::parse("forfeited"), Win::Forfeited);
        assert_eq!(
            Win::parse("1700000000000:3"),
            Win::Open {
                deadline_ms: 1_700_000_000_000,
                max_quantity: 3
            }
        );
        assert_eq!(Win::parse("x:3"), Win::None);
        assert_eq!(
            Win::parse("ord:0190b3c4-0000-7000-8000-000000000000:1700000000000:2"),
            Win::Ordered {
                deadline_ms: 1_700_000_000_000,
                max_quantity: 2
            }
        );
        assert_eq!(Win::parse("ord:x"), Win::None);
    }

    fn look_at(now_ms: u64) -> Look {
        Look {
            result: "entered".into(),
            entry: None,
            opens_at_ms: 0,
            close_at_ms: 1_000_000,
            now_ms,
            notice: None,
            state: "open".into(),
            promoted: 0,
            win: Win::None,
        }
    }

    #[test]
    fn polls_wait_for_the_draw_but_never_past_the_bounds() {
        let entry = Indexed {
            id: [1; 16],
            rank: None,
            withdrawn: false,
        };
        let delay = Duration::from_secs(5);
        for now in [0, 500_000, 999_000, 1_000_000, 1_004_000, 1_010_000] {
            let look = look_at(now);
            let s = standing(&look, &entry);
            for _ in 0..100 {
                let ms = retry_after_ms(&look, &s, delay);
                let max = if now < 1_000_000 { 300_000 } else { 30_000 };
                assert!((1_000..=max).contains(&ms), "{now}: {ms}");
            }
        }
        // Just before the close the next poll comes after the reveal.
        let look = look_at(999_000);
        let s = standing(&look, &entry);
        assert!(retry_after_ms(&look, &s, delay) >= 6_000);
    }

    #[test]
    fn standings_follow_rank_promotions_and_wins() {
        let entry = Indexed {
            id: [1; 16],
            rank: Some(10),
            withdrawn: false,
        };
        let mut look = look_at(2_000_000);
        look.promoted = 4;
        let s = standing(&look, &entry);
        assert_eq!((s.state, s.position), (EntryState::Waitlisted, Some(6)));
        look.win = Win::Open {
            deadline_ms: 2_100_000,
            max_quantity: 2,
        };
        let s = standing(&look, &entry);
        assert_eq!(
            (s.state, s.max_quantity, s.deadline_ms),
            (EntryState::Won, Some(2), Some(2_100_000))
        );
        look.now_ms = 2_100_000;
        assert_eq!(standing(&look, &entry).state, EntryState::Forfeited);
        look.win = Win::None;
        look.state = "sold_out".into();
        assert_eq!(standing(&look, &entry).state, EntryState::NotWon);
        look.win = Win::Claimed;
        assert_eq!(standing(&look, &entry).state, EntryState::Claimed);
    }
}
