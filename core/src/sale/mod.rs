//! A sale's live state in Redis and the state a buyer sees, shared by the api and the waiting room.
//!
//! MySQL is the record of a sale; Redis holds what moves during the sale (DESIGN §4), under the
//! sale's hash tag so that every script touches one slot:
//!
//! | key (`r.sale_key(id, ..)`) | type | content |
//! | --- | --- | --- |
//! | `cfg` | hash | `stock_total`, `opens_at` / `closes_at` (epoch ms, `closes_at` 0 = none), `per_user_limit`, `hold_seconds`, `admit_per_second`, `max_active` (0 = no limit), `paused` / `closed` (0/1), `product_id`, `price`, `currency`, and the door's settings ([`door`]) |
//! | `avail` | string | units still for sale (starts at `stock_total`) |
//! | `held` | string | units in HELD and PAYING orders (starts at 0) |
//! | `sold` | string | units in PAID orders (starts at 0) |
//!
//! `avail + held + sold = stock_total` at every moment. [`arm`] writes all four at once
//! (`lua/sale_arm.lua`); [`view`] reads them together with the Redis clock
//! (`lua/sale_view.lua`), and [`SaleView::state`] derives the [`SaleState`] from that one
//! snapshot, so every replica agrees on "now".

pub mod door;
pub mod draw;
pub mod entries;
pub mod keys;

use std::fmt;
use std::str::FromStr;

use crate::ids::{ProductId, SaleId};
use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use fred::interfaces::{HashesInterface, KeysInterface, SetsInterface, SortedSetsInterface};
use serde::{Deserialize, Serialize};

use crate::clients::redis::Redis;
use crate::lua::scripts::{SALE_ARM, SALE_EDIT, SALE_VIEW};
pub use door::Door;

/// What a buyer sees of a sale (DESIGN §9; a draw sale's own states: design/draw.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaleState {
    Scheduled,
    Open,
    Paused,
    SoldOut,
    Closed,
    /// A draw sale taking entries ([`draw::derive_draw_state`]).
    Entering,
    /// A draw sale past `entries_close_at` that has promoted nobody yet.
    Drawing,
    /// A draw sale whose winners are buying.
    Claiming,
}

impl SaleState {
    pub const ALL: [SaleState; 8] = [
        Self::Scheduled,
        Self::Open,
        Self::Paused,
        Self::SoldOut,
        Self::Closed,
        Self::Entering,
        Self::Drawing,
        Self::Claiming,
    ];

    /// The states of a first-come sale ([`derive_state`] and the Lua `sale_state`).
    pub const FCFS: [SaleState; 5] = [
        Self::Scheduled,
        Self::Open,
        Self::Paused,
        Self::SoldOut,
        Self::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Open => "open",
            Self::Paused => "paused",
            Self::SoldOut => "sold_out",
            Self::Closed => "closed",
            Self::Entering => "entering",
            Self::Drawing => "drawing",
            Self::Claiming => "claiming",
        }
    }
}

impl fmt::Display for SaleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown state name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown sale state `{0}` (expected scheduled, open, paused, sold_out, closed, entering, \
     drawing or claiming)"
)]
pub struct UnknownState(pub String);

impl FromStr for SaleState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, UnknownState> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// The inputs of [`derive_state`], all from one Redis snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateInputs {
    pub now_ms: i64,
    pub opens_at_ms: i64,
    /// `None`: the sale has no closing time.
    pub closes_at_ms: Option<i64>,
    pub paused: bool,
    pub closed: bool,
    pub available: i64,
    pub held: i64,
}

/// The state rule, first match wins: `closed` (closed by an operator, or past `closes_at`);
/// `sold_out` (nothing available and nothing held, so no stock can come back: final news for
/// the buyers, even while paused); `scheduled` (before `opens_at`); `paused`; otherwise `open`.
///
/// The Lua scripts take the rule from `sale_state` in `lua/lib/prelude.lua`; this is its one
/// Rust form, for [`SaleView`]: `lua/sale_view.lua` answers the inputs (13 integers), not the
/// state, so the api and the admitter derive it here. A test (`core/tests/clients.rs`) runs
/// both on the same inputs.
///
/// A sale with units still held is `open` even at `available == 0`: a hold that expires or is
/// cancelled puts its units back on sale.
pub fn derive_state(i: StateInputs) -> SaleState {
    if i.closed || i.closes_at_ms.is_some_and(|c| i.now_ms >= c) {
        SaleState::Closed
    } else if i.available <= 0 && i.held <= 0 {
        SaleState::SoldOut
    } else if i.now_ms < i.opens_at_ms {
        SaleState::Scheduled
    } else if i.paused {
        SaleState::Paused
    } else {
        SaleState::Open
    }
}

/// The four Redis keys of a sale's live state, in the order the scripts take them.
pub fn keys(redis: &Redis, sale: SaleId) -> Vec<String> {
    keys::SaleKeys::new(redis, sale).stock().into()
}

/// Everything [`arm`] writes into the `cfg` hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleConfig {
    pub product_id: ProductId,
    pub price: i64,
    pub currency: String,
    pub stock_total: i64,
    pub opens_at: DateTime<Utc>,
    pub closes_at: Option<DateTime<Utc>>,
    pub per_user_limit: i64,
    pub hold_seconds: i64,
    pub admit_per_second: i64,
    /// `None`: no limit on active buyers.
    pub max_active: Option<i64>,
    pub paused: bool,
    pub closed: bool,
    /// The line's shards, 1 to [`keys::MAX_LINE_SHARDS`] (issue #22 §2): 1 is the line on the
    /// sale's own slot. Fixed for the sale's life.
    pub line_shards: u16,
}

type SaleRow = (
    ProductId,
    i64,
    String,
    i32,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    i32,
    i32,
    i32,
    Option<i32>,
    bool,
    Option<DateTime<Utc>>,
    u16,
);

impl SaleConfig {
    /// Reads a sale's configuration from MySQL (the record); `None` when there is no such sale.
    pub async fn load<'e, E>(db: E, sale: SaleId) -> anyhow::Result<Option<Self>>
    where
        E: sqlx::Executor<'e, Database = sqlx::MySql>,
    {
        let row: Option<SaleRow> = sqlx::query_as(
            "SELECT s.product_id, p.price, p.currency, s.stock_total, s.opens_at, s.closes_at, \
                    s.per_user_limit, s.hold_seconds, s.admit_per_second, s.max_active, s.paused, \
                    s.closed_at, s.line_shards \
             FROM sales s JOIN products p ON p.id = s.product_id WHERE s.id = ?",
        )
        .bind(sale)
        .fetch_optional(db)
        .await
        .with_context(|| format!("reading sale {sale}"))?;
        Ok(row.map(
            |(
                product_id,
                price,
                currency,
                stock_total,
                opens_at,
                closes_at,
                per_user_limit,
                hold_seconds,
                admit_per_second,
                max_active,
                paused,
                closed_at,
                line_shards,
            )| Self {
                product_id,
                price,
                currency,
                stock_total: stock_total.into(),
                opens_at,
                closes_at,
                per_user_limit: per_user_limit.into(),
                hold_seconds: hold_seconds.into(),
                admit_per_second: admit_per_second.into(),
                max_active: max_active.map(Into::into),
                paused,
                closed: closed_at.is_some(),
                line_shards,
            },
        ))
    }

    fn arm_args(&self) -> Vec<String> {
        vec![
            self.stock_total.to_string(),
            self.opens_at.timestamp_millis().to_string(),
            self.closes_at
                .map_or(0, |c| c.timestamp_millis())
                .to_string(),
            self.per_user_limit.to_string(),
            self.hold_seconds.to_string(),
            self.admit_per_second.to_string(),
            self.max_active.unwrap_or(0).to_string(),
            u8::from(self.paused).to_string(),
            u8::from(self.closed).to_string(),
            self.product_id.to_string(),
            self.price.to_string(),
            self.currency.clone(),
        ]
    }
}

/// Arms a sale with the default door settings in Redis (`lua/sale_arm.lua`): `Ok(true)` when
/// this call wrote its state, `Ok(false)` when it was armed already (then nothing changed).
pub async fn arm(redis: &Redis, sale: SaleId, config: &SaleConfig) -> anyhow::Result<bool> {
    arm_with(redis, sale, config, &Door::default(), 0, 0).await
}

/// [`arm`] with the sale's door settings and the units already held (HELD + PAYING) and sold
/// (PAID), for `sale rearm`: `avail = stock_total - held - sold`.
pub async fn arm_with(
    redis: &Redis,
    sale: SaleId,
    config: &SaleConfig,
    door: &Door,
    held: i64,
    sold: i64,
) -> anyhow::Result<bool> {
    arm_full(redis, sale, config, door, None, held, sold).await
}

/// [`arm_with`] for a sale of either mode: `draw` is `Some` for a draw sale (its settings go
/// into `cfg`, see [`draw`]).
pub async fn arm_full(
    redis: &Redis,
    sale: SaleId,
    config: &SaleConfig,
    door: &Door,
    draw: Option<&draw::DrawSettings>,
    held: i64,
    sold: i64,
) -> anyhow::Result<bool> {
    let mut args = config.arm_args();
    args.push(held.to_string());
    args.push(sold.to_string());
    args.extend(door.cfg_values());
    if let Some(draw) = draw {
        args.extend(draw.cfg_values());
    } else if config.line_shards > 1 {
        args.push("fcfs".to_owned());
        args.push(config.line_shards.to_string());
    }
    let armed: i64 = SALE_ARM
        .run(redis, keys(redis, sale), args)
        .await
        .with_context(|| format!("arming sale {sale}"))?;
    // Outside the script: the index is one key for all sales, so on Redis Cluster it lives in
    // another slot. Written on every call, so arming again repairs a lost index entry.
    let _: i64 = redis
        .pool()
        .zadd(
            index_key(redis),
            None,
            None,
            false,
            false,
            (config.opens_at.timestamp_millis() as f64, sale.to_string()),
        )
        .await
        .with_context(|| format!("indexing sale {sale}"))?;
    Ok(armed == 1)
}

/// The index of armed sales that the admitter walks: a zset `<prefix>:sales`, member the sale
/// id (text), score its `opens_at` (epoch ms). [`arm`] adds to it; the admitter removes a
/// sale once it is closed and its line is empty.
pub fn index_key(redis: &Redis) -> String {
    redis.key("sales")
}

/// Every sale in the index, earliest opening first. An entry that is not a UUID is skipped
/// (logged): it was not written by this code.
pub async fn indexed(redis: &Redis) -> anyhow::Result<Vec<SaleId>> {
    let members: Vec<String> = redis
        .pool()
        .zrange(index_key(redis), 0, -1, None, false, None, false)
        .await
        .context("reading the index of armed sales")?;
    Ok(members
        .into_iter()
        .filter_map(|m| match SaleId::parse_str(&m) {
            Ok(id) => Some(id),
            Err(_) => {
                tracing::warn!(member = %m, "skipping a sale index entry that is not a UUID");
                None
            }
        })
        .collect())
}

/// The set of sales the expiry worker watches, `<prefix>:expiry:sales` (members: sale ids as
/// text). A sale stays in it while it has live holds or outbox entries the recorder has not
/// copied, even after it left [`index_key`]: the expiry worker adds every indexed sale, the
/// admitter hands over each sale it takes out of the index ([`retire`]), and only the expiry
/// worker removes a sale, once nothing of it is left to end or record.
pub fn watched_key(redis: &Redis) -> String {
    redis.key("expiry:sales")
}

/// Takes a sale out of the admitter's index, handing it to the expiry worker's watch first
/// ([`watched_key`]): a sale that closes and leaves the index before any expiry worker saw it
/// still has its holds ended and its outbox recorded. The two keys live in different slots
/// under Redis Cluster, so this is two calls, in this order: a crash between them leaves the
/// sale in both, which costs the expiry worker one check.
pub async fn retire(redis: &Redis, sale: SaleId) -> anyhow::Result<()> {
    let _: i64 = redis
        .pool()
        .sadd(watched_key(redis), sale.to_string())
        .await
        .with_context(|| format!("handing sale {sale} to the expiry worker's watch"))?;
    unindex(redis, sale).await
}

/// Drops a sale from the index without handing it over (only for undoing an [`arm`]).
pub async fn unindex(redis: &Redis, sale: SaleId) -> anyhow::Result<()> {
    let _: i64 = redis
        .pool()
        .zrem(index_key(redis), sale.to_string())
        .await
        .with_context(|| format!("removing sale {sale} from the index"))?;
    Ok(())
}

/// Deletes a sale's live state. Only for undoing an [`arm`] whose MySQL insert did not commit:
/// on a live sale this would lose its counters.
pub async fn unarm(redis: &Redis, sale: SaleId) -> anyhow::Result<()> {
    let _: i64 = redis
        .pool()
        .del(keys(redis, sale))
        .await
        .with_context(|| format!("deleting the Redis state of sale {sale}"))?;
    unindex(redis, sale).await
}

/// One snapshot of a sale's live state, read by [`view`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaleView {
    pub stock_total: i64,
    pub opens_at_ms: i64,
    pub closes_at_ms: Option<i64>,
    pub per_user_limit: i64,
    pub hold_seconds: i64,
    pub admit_per_second: i64,
    pub max_active: Option<i64>,
    pub paused: bool,
    pub closed: bool,
    pub available: i64,
    pub held: i64,
    pub sold: i64,
    /// The Redis server's clock when the snapshot was taken.
    pub now_ms: i64,
    /// A draw's wins handed out so far (ranks 1 to `promoted`); 0 for an fcfs sale.
    pub promoted: i64,
    /// A draw's ranked entries (the frozen list's length once ranked); 0 before and for fcfs.
    pub ranked: i64,
    /// The line's shards (`cfg.line_shards`, 1 to [`keys::MAX_LINE_SHARDS`]; 1 when unset:
    /// the line on the sale's own slot).
    pub line_shards: u16,
}

impl SaleView {
    /// Parses the 16 integers `lua/sale_view.lua` returns.
    pub fn from_values(v: &[i64]) -> anyhow::Result<Self> {
        let &[
            stock_total,
            opens_at_ms,
            closes_at_ms,
            per_user_limit,
            hold_seconds,
            admit_per_second,
            max_active,
            paused,
            closed,
            available,
            held,
            sold,
            now_ms,
            promoted,
            ranked,
            line_shards,
        ] = v
        else {
            anyhow::bail!("sale_view returned {} values, expected 16", v.len());
        };
        Ok(Self {
            stock_total,
            opens_at_ms,
            closes_at_ms: (closes_at_ms > 0).then_some(closes_at_ms),
            per_user_limit,
            hold_seconds,
            admit_per_second,
            max_active: (max_active > 0).then_some(max_active),
            paused: paused != 0,
            closed: closed != 0,
            available,
            held,
            sold,
            now_ms,
            promoted,
            ranked,
            line_shards: line_shards.clamp(1, i64::from(keys::MAX_LINE_SHARDS)) as u16,
        })
    }

    pub fn state(&self) -> SaleState {
        derive_state(StateInputs {
            now_ms: self.now_ms,
            opens_at_ms: self.opens_at_ms,
            closes_at_ms: self.closes_at_ms,
            paused: self.paused,
            closed: self.closed,
            available: self.available,
            held: self.held,
        })
    }

    pub fn opens_at(&self) -> DateTime<Utc> {
        from_ms(self.opens_at_ms)
    }

    pub fn closes_at(&self) -> Option<DateTime<Utc>> {
        self.closes_at_ms.map(from_ms)
    }

    pub fn now(&self) -> DateTime<Utc> {
        from_ms(self.now_ms)
    }
}

/// Epoch milliseconds to a UTC time (out-of-range values clamp to the epoch).
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// Reads a sale's live state in one round trip; `None` when the sale is not armed.
pub async fn view(redis: &Redis, sale: SaleId) -> anyhow::Result<Option<SaleView>> {
    let mut view_keys = keys(redis, sale);
    view_keys.push(keys::SaleKeys::new(redis, sale).draw_counters());
    let values: Vec<i64> = SALE_VIEW
        .run(redis, view_keys, Vec::<String>::new())
        .await
        .with_context(|| format!("reading the live state of sale {sale}"))?;
    if values.is_empty() {
        return Ok(None);
    }
    SaleView::from_values(&values).map(Some)
}

/// A change to the settings an operator may adjust (admin `PATCH`); `None`: unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsUpdate {
    pub admit_per_second: Option<i64>,
    /// `Some(None)`: remove the limit.
    pub max_active: Option<Option<i64>>,
    pub paused: Option<bool>,
    pub closed: Option<bool>,
    pub pow_difficulty: Option<u8>,
    pub groups: Option<Vec<String>>,
    /// `Some(None)`: no presale.
    pub presale_only_until: Option<Option<DateTime<Utc>>>,
    /// `Some(None)`: clear the notice.
    pub notice: Option<Option<String>>,
}

impl SettingsUpdate {
    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = Vec::new();
        if let Some(n) = self.admit_per_second {
            fields.push(("admit_per_second", n.to_string()));
        }
        if let Some(n) = self.max_active {
            fields.push(("max_active", n.unwrap_or(0).to_string()));
        }
        if let Some(b) = self.paused {
            fields.push(("paused", u8::from(b).to_string()));
        }
        if let Some(b) = self.closed {
            fields.push(("closed", u8::from(b).to_string()));
        }
        if let Some(d) = self.pow_difficulty {
            fields.push(("pow_difficulty", d.to_string()));
        }
        if let Some(groups) = &self.groups {
            fields.push(("groups", door::groups_field(groups)));
        }
        if let Some(until) = self.presale_only_until {
            let ms = until.map_or(0, |t| t.timestamp_millis());
            fields.push(("presale_only_until", ms.to_string()));
        }
        if let Some(notice) = &self.notice {
            fields.push(("notice", notice.clone().unwrap_or_default()));
        }
        fields
    }
}

/// Writes `update` into an armed sale's `cfg` hash. `Ok(false)` when the sale is not armed:
/// then nothing is written, because a partial `cfg` would look armed to [`arm`]; the settings
/// reach Redis with the next arming, which reads MySQL.
pub async fn update_settings(
    redis: &Redis,
    sale: SaleId,
    update: &SettingsUpdate,
) -> anyhow::Result<bool> {
    let fields = update.fields();
    let cfg = keys::SaleKeys::new(redis, sale).cfg();
    let exists: i64 = redis
        .pool()
        .exists(&cfg)
        .await
        .with_context(|| format!("checking that sale {sale} is armed"))?;
    if exists == 0 {
        return Ok(false);
    }
    if fields.is_empty() {
        return Ok(true);
    }
    // The cfg hash only disappears when Redis loses its data, so the gap between EXISTS and
    // HSET is not a practical race.
    let _: i64 = redis
        .pool()
        .hset(&cfg, fields)
        .await
        .with_context(|| format!("updating the settings of sale {sale}"))?;
    Ok(true)
}

/// A change to the creation settings of a scheduled sale (admin `PATCH` before opening, #24);
/// `None`: unchanged. Written by [`edit_scheduled`] only while the sale is still scheduled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleUpdate {
    pub stock_total: Option<i64>,
    pub opens_at: Option<DateTime<Utc>>,
    /// `Some(None)`: no closing time.
    pub closes_at: Option<Option<DateTime<Utc>>>,
    pub per_user_limit: Option<i64>,
    pub hold_seconds: Option<i64>,
    /// A draw sale's freeze.
    pub entries_close_at: Option<DateTime<Utc>>,
    /// A draw sale's claim window.
    pub claim_seconds: Option<i64>,
    /// The product, with the price and currency orders will quote.
    pub product: Option<(ProductId, i64, String)>,
}

impl ScheduleUpdate {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = Vec::new();
        if let Some(t) = self.opens_at {
            fields.push(("opens_at", t.timestamp_millis().to_string()));
        }
        if let Some(t) = self.closes_at {
            let ms = t.map_or(0, |t| t.timestamp_millis());
            fields.push(("closes_at", ms.to_string()));
        }
        if let Some(n) = self.per_user_limit {
            fields.push(("per_user_limit", n.to_string()));
        }
        if let Some(n) = self.hold_seconds {
            fields.push(("hold_seconds", n.to_string()));
        }
        if let Some(t) = self.entries_close_at {
            fields.push(("entries_close_at", t.timestamp_millis().to_string()));
        }
        if let Some(n) = self.claim_seconds {
            fields.push(("claim_seconds", n.to_string()));
        }
        if let Some((id, price, currency)) = &self.product {
            fields.push(("product_id", id.to_string()));
            fields.push(("price", price.to_string()));
            fields.push(("currency", currency.clone()));
        }
        fields
    }
}

/// What [`edit_scheduled`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    /// Written.
    Applied,
    /// The sale is not armed: nothing written (the change reaches Redis with the next arming).
    NotArmed,
    /// The sale opened (or closed, or has orders): nothing written.
    NotScheduled,
}

/// Writes `schedule` and `settings` into a sale's Redis state in one step, only while the sale
/// is still scheduled by the Redis clock (`lua/sale_edit.lua`): this is what keeps a creation
/// field from changing after `opens_at` when a `PATCH` races the opening. A new `opens_at` is
/// also written into the admitter's index (another slot under Redis Cluster, so after the
/// script; the index's score only orders the walk).
pub async fn edit_scheduled(
    redis: &Redis,
    sale: SaleId,
    schedule: &ScheduleUpdate,
    settings: &SettingsUpdate,
) -> anyhow::Result<Edit> {
    let mut args = vec![
        schedule
            .stock_total
            .map(|n| n.to_string())
            .unwrap_or_default(),
    ];
    for (field, value) in schedule.fields().into_iter().chain(settings.fields()) {
        args.push(field.to_owned());
        args.push(value);
    }
    let done: i64 = SALE_EDIT
        .run(redis, keys(redis, sale), args)
        .await
        .with_context(|| format!("editing scheduled sale {sale}"))?;
    let edit = match done {
        1 => Edit::Applied,
        0 => Edit::NotArmed,
        _ => Edit::NotScheduled,
    };
    if let (Edit::Applied, Some(opens_at)) = (edit, schedule.opens_at) {
        let _: i64 = redis
            .pool()
            .zadd(
                index_key(redis),
                None,
                None,
                false,
                false,
                (opens_at.timestamp_millis() as f64, sale.to_string()),
            )
            .await
            .with_context(|| format!("re-indexing sale {sale} at its new opening"))?;
    }
    Ok(edit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> StateInputs {
        StateInputs {
            now_ms: 10_000,
            opens_at_ms: 5_000,
            closes_at_ms: Some(20_000),
            paused: false,
            closed: false,
            available: 3,
            held: 0,
        }
    }

    #[test]
    fn open_when_nothing_else_applies() {
        assert_eq!(derive_state(inputs()), SaleState::Open);
        let no_close = StateInputs {
            closes_at_ms: None,
            ..inputs()
        };
        assert_eq!(derive_state(no_close), SaleState::Open);
    }

    #[test]
    fn closed_wins_over_everything() {
        let all = StateInputs {
            closed: true,
            paused: true,
            now_ms: 1_000, // before opening
            available: 0,
            ..inputs()
        };
        assert_eq!(derive_state(all), SaleState::Closed);
        // Reaching closes_at closes, exactly at the instant.
        let at = StateInputs {
            now_ms: 20_000,
            ..inputs()
        };
        assert_eq!(derive_state(at), SaleState::Closed);
        let just_before = StateInputs {
            now_ms: 19_999,
            ..inputs()
        };
        assert_eq!(derive_state(just_before), SaleState::Open);
    }

    #[test]
    fn scheduled_before_opening_even_if_paused() {
        let before = StateInputs {
            now_ms: 4_999,
            paused: true,
            ..inputs()
        };
        assert_eq!(derive_state(before), SaleState::Scheduled);
        let at = StateInputs {
            now_ms: 5_000,
            ..inputs()
        };
        assert_eq!(derive_state(at), SaleState::Open, "opens at the instant");
    }

    #[test]
    fn sold_out_wins_over_paused_and_scheduled() {
        let paused = StateInputs {
            paused: true,
            available: 0,
            ..inputs()
        };
        assert_eq!(derive_state(paused), SaleState::SoldOut);
        let paused_with_stock = StateInputs {
            paused: true,
            ..inputs()
        };
        assert_eq!(derive_state(paused_with_stock), SaleState::Paused);
        let early_paused = StateInputs {
            paused: true,
            now_ms: 0,
            ..inputs()
        };
        assert_eq!(derive_state(early_paused), SaleState::Scheduled);
    }

    #[test]
    fn sold_out_only_when_nothing_can_come_back() {
        let empty = StateInputs {
            available: 0,
            held: 0,
            ..inputs()
        };
        assert_eq!(derive_state(empty), SaleState::SoldOut);
        let held = StateInputs {
            available: 0,
            held: 2,
            ..inputs()
        };
        assert_eq!(
            derive_state(held),
            SaleState::Open,
            "held units may return to stock"
        );
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for state in SaleState::ALL {
            assert_eq!(state.as_str().parse::<SaleState>(), Ok(state));
            assert_eq!(
                serde_json::to_value(state).ok(),
                Some(serde_json::Value::String(state.as_str().into()))
            );
        }
        assert!("sold-out".parse::<SaleState>().is_err());
        assert!("".parse::<SaleState>().is_err());
    }

    #[test]
    fn view_parses_the_script_output() -> anyhow::Result<()> {
        let view =
            SaleView::from_values(&[10, 1_000, 0, 2, 600, 100, 0, 1, 0, 7, 2, 1, 1_500, 0, 0, 0])?;
        assert_eq!(view.stock_total, 10);
        assert_eq!(view.closes_at_ms, None);
        assert_eq!(view.max_active, None);
        assert!(view.paused && !view.closed);
        assert_eq!((view.available, view.held, view.sold), (7, 2, 1));
        assert_eq!(view.state(), SaleState::Paused);
        assert_eq!(view.opens_at().timestamp_millis(), 1_000);
        assert_eq!(view.line_shards, 1);
        let mut spread = [10, 1_000, 0, 2, 600, 100, 0, 1, 0, 7, 2, 1, 1_500, 0, 0, 3];
        assert_eq!(SaleView::from_values(&spread)?.line_shards, 3);
        spread[15] = 1_000;
        assert_eq!(
            SaleView::from_values(&spread)?.line_shards,
            keys::MAX_LINE_SHARDS
        );
        assert!(SaleView::from_values(&[1, 2, 3]).is_err());
        Ok(())
    }
}
