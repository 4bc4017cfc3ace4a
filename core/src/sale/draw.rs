//! Draw sales (design/draw.md): the sale's mode, its draw settings and the states of a draw.
//!
//! A draw sale is stored in MySQL (`sales.mode = 'draw'`, `entries_close_at`, `claim_seconds`;
//! its seed in `draws`) and armed with three more `cfg` fields (only on a draw sale, so an fcfs
//! sale's `cfg` hash is exactly as before):
//!
//! | field | content |
//! | --- | --- |
//! | `mode` | `draw` (absent: fcfs) |
//! | `entries_close_at` | epoch ms, the freeze |
//! | `claim_seconds` | how long a winner has to order |
//!
//! The waiting room's fcfs join (`lua/wr_join.lua`) refuses a sale whose `cfg.mode` is `draw`,
//! so a draw sale never gets a line nor admissions from the admitter.

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{SaleState, StateInputs, derive_state};
use crate::ids::SaleId;

/// `claim_seconds` when not given (draw.md §Sale).
pub const DEFAULT_CLAIM_SECONDS: i64 = 1800;
/// The bounds of `claim_seconds`.
pub const CLAIM_SECONDS: std::ops::RangeInclusive<i64> = 1..=86_400;
/// The name of the ranking rule, as `GET /w/{id}/draw` publishes it.
pub const ALGORITHM: &str = "dropline-draw-v1";

/// How a sale sells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// First come, first served: the waiting room's line (DESIGN §2–§10).
    #[default]
    Fcfs,
    /// A draw among the entries made before `entries_close_at` (design/draw.md).
    Draw,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fcfs => "fcfs",
            Self::Draw => "draw",
        }
    }

    /// The stored or requested name; `None` for anything else (spelling is exact).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fcfs" => Some(Self::Fcfs),
            "draw" => Some(Self::Draw),
            _ => None,
        }
    }
}

/// A draw sale's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrawSettings {
    /// The freeze: entries are taken from `opens_at` until this instant.
    pub entries_close_at: DateTime<Utc>,
    /// How long a winner has to order, from the promotion.
    pub claim_seconds: i64,
}

/// The `cfg` hash fields of [`DrawSettings::cfg_values`], in order.
pub const FIELDS: [&str; 3] = ["mode", "entries_close_at", "claim_seconds"];

impl DrawSettings {
    /// The values of [`FIELDS`], as the `cfg` hash stores them.
    pub fn cfg_values(&self) -> [String; 3] {
        [
            Mode::Draw.as_str().to_owned(),
            self.entries_close_at.timestamp_millis().to_string(),
            self.claim_seconds.to_string(),
        ]
    }

    /// A sale's draw settings from MySQL: `Ok(None)` for an fcfs sale or no such sale.
    pub async fn load<'e, E>(db: E, sale: SaleId) -> anyhow::Result<Option<Self>>
    where
        E: sqlx::Executor<'e, Database = sqlx::MySql>,
    {
        let row: Option<(String, Option<DateTime<Utc>>, Option<u32>)> =
            sqlx::query_as("SELECT mode, entries_close_at, claim_seconds FROM sales WHERE id = ?")
                .bind(sale)
                .fetch_optional(db)
                .await
                .with_context(|| format!("reading the draw settings of sale {sale}"))?;
        let Some((mode, entries_close_at, claim_seconds)) = row else {
            return Ok(None);
        };
        match (Mode::parse(&mode), entries_close_at, claim_seconds) {
            (Some(Mode::Fcfs), _, _) => Ok(None),
            (Some(Mode::Draw), Some(entries_close_at), Some(claim_seconds)) => Ok(Some(Self {
                entries_close_at,
                claim_seconds: claim_seconds.into(),
            })),
            _ => anyhow::bail!(
                "sale {sale} has mode `{mode}` with entries_close_at {entries_close_at:?} and \
                 claim_seconds {claim_seconds:?}: not a valid sale mode"
            ),
        }
    }
}

/// What the draw state rule needs beyond [`StateInputs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrawProgress {
    pub entries_close_at_ms: i64,
    /// Winners promoted so far (0 until the draw promoted anyone).
    pub promoted: i64,
}

/// The state rule of a draw sale (draw.md: `scheduled → entering → drawing → claiming →
/// sold_out | closed`, and `paused`), first match wins: `closed` (closed by an operator, or
/// past `closes_at`); `sold_out` (nothing available and nothing held); `scheduled` (before
/// `opens_at`); `paused`; `entering` (before `entries_close_at`); `drawing` (frozen, nobody
/// promoted yet); otherwise `claiming`.
pub fn derive_draw_state(i: StateInputs, d: DrawProgress) -> SaleState {
    match derive_state(i) {
        SaleState::Open if i.now_ms < d.entries_close_at_ms => SaleState::Entering,
        SaleState::Open if d.promoted <= 0 => SaleState::Drawing,
        SaleState::Open => SaleState::Claiming,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(now_ms: i64) -> StateInputs {
        StateInputs {
            now_ms,
            opens_at_ms: 1_000,
            closes_at_ms: Some(100_000),
            paused: false,
            closed: false,
            available: 5,
            held: 0,
        }
    }

    const D: DrawProgress = DrawProgress {
        entries_close_at_ms: 10_000,
        promoted: 0,
    };

    #[test]
    fn a_draw_goes_through_its_states() {
        assert_eq!(derive_draw_state(inputs(999), D), SaleState::Scheduled);
        assert_eq!(derive_draw_state(inputs(1_000), D), SaleState::Entering);
        assert_eq!(derive_draw_state(inputs(9_999), D), SaleState::Entering);
        assert_eq!(derive_draw_state(inputs(10_000), D), SaleState::Drawing);
        let promoted = DrawProgress { promoted: 3, ..D };
        assert_eq!(
            derive_draw_state(inputs(10_000), promoted),
            SaleState::Claiming
        );
        let gone = StateInputs {
            available: 0,
            ..inputs(20_000)
        };
        assert_eq!(derive_draw_state(gone, promoted), SaleState::SoldOut);
        assert_eq!(
            derive_draw_state(inputs(100_000), promoted),
            SaleState::Closed
        );
    }

    #[test]
    fn paused_and_closed_win_over_the_draw_states() {
        let paused = StateInputs {
            paused: true,
            ..inputs(5_000)
        };
        assert_eq!(derive_draw_state(paused, D), SaleState::Paused);
        let closed = StateInputs {
            closed: true,
            ..inputs(5_000)
        };
        assert_eq!(derive_draw_state(closed, D), SaleState::Closed);
    }

    #[test]
    fn modes_parse_exactly() {
        assert_eq!(Mode::parse("draw"), Some(Mode::Draw));
        assert_eq!(Mode::parse("fcfs"), Some(Mode::Fcfs));
        for bad in ["Draw", "DRAW", " draw", "draw ", "", "raffle"] {
            assert_eq!(Mode::parse(bad), None, "{bad:?}");
        }
    }
}
