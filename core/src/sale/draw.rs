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
//!
//! The ranking rule `dropline-draw-v1` lives here as pure functions ([`seed_commitment`],
//! [`entries_digest`], [`rank`]), exactly as draw.md pins it; a test recomputes it with
//! Python's hashlib/hmac.

use anyhow::Context;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

/// An entry's id: 16 random bytes (shown as 32 lowercase hex digits).
pub type EntryId = [u8; 16];
/// A draw's seed: 32 CSPRNG bytes, secret until the reveal.
pub type Seed = [u8; 32];

/// `seed_commitment` = SHA-256(seed) (dropline-draw-v1 step 1).
pub fn seed_commitment(seed: &Seed) -> [u8; 32] {
    Sha256::digest(seed).into()
}

/// `entries_digest` = SHA-256 of the ids in ascending byte order, concatenated (step 2).
pub fn entries_digest(ids: &[EntryId]) -> [u8; 32] {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    let mut hash = Sha256::new();
    for id in &sorted {
        hash.update(id);
    }
    hash.finalize().into()
}

/// An entry's ranking key: HMAC-SHA-256(key = seed, msg = the id's 16 bytes) (step 4).
pub fn rank_key(seed: &Seed, id: &EntryId) -> [u8; 32] {
    // HMAC takes a key of any length, so this never fails.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(seed) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA-256 accepts a 32-byte key"),
    };
    mac.update(id);
    mac.finalize().into_bytes().into()
}

/// The ranking (step 4): the ids by ascending (key, id), unsigned bytewise; the first is rank 1.
/// Python: `sorted(ids, key=lambda e: (hmac.new(seed, e, 'sha256').digest(), e))`.
pub fn rank(seed: &Seed, ids: &[EntryId]) -> Vec<EntryId> {
    let mut keyed: Vec<([u8; 32], EntryId)> =
        ids.iter().map(|id| (rank_key(seed, id), *id)).collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, id)| id).collect()
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

    fn id(last: u8) -> EntryId {
        let mut id = [0u8; 16];
        id[15] = last;
        id
    }

    /// draw.md's vector: seed 00×32, ids 00×15‖{00,01,02} → 01, 02, 00.
    #[test]
    fn the_published_vector_holds() {
        let seed = [0u8; 32];
        let ids = [id(0), id(1), id(2)];
        assert!(hex::encode(seed_commitment(&seed)).starts_with("66687aad"));
        assert_eq!(
            hex::encode(seed_commitment(&seed)),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
        assert_eq!(
            hex::encode(entries_digest(&[id(2), id(0), id(1)])),
            "c7a4936084c4257fb7f7c36d7ac6fdebce99410e3549e34832e6b9f5a9b13c82"
        );
        assert_eq!(rank(&seed, &ids), vec![id(1), id(2), id(0)]);
        assert_eq!(
            rank(&seed, &[id(2), id(0), id(1)]),
            vec![id(1), id(2), id(0)]
        );
    }

    /// The rule recomputed independently by Python's standard library (as an entrant would)
    /// on random seeds and entries: the same commitment, digest and order.
    #[test]
    fn python_recomputes_the_ranking() -> anyhow::Result<()> {
        use rand::RngCore;
        const SCRIPT: &str = r#"
import hashlib, hmac, json, sys
for case in json.load(sys.stdin):
    seed = bytes.fromhex(case["seed"])
    ids = [bytes.fromhex(e) for e in case["ids"]]
    order = sorted(ids, key=lambda e: (hmac.new(seed, e, "sha256").digest(), e))
    print(hashlib.sha256(seed).hexdigest(), hashlib.sha256(b"".join(sorted(ids))).hexdigest(),
          ",".join(e.hex() for e in order))
"#;
        let mut rng = rand::rng();
        let mut cases = Vec::new();
        let mut expected = String::new();
        for n in [0usize, 1, 2, 20, 500] {
            let mut seed = [0u8; 32];
            rng.fill_bytes(&mut seed);
            let ids: Vec<EntryId> = (0..n)
                .map(|_| {
                    let mut e = [0u8; 16];
                    rng.fill_bytes(&mut e);
                    e
                })
                .collect();
            cases.push(serde_json::json!({
                "seed": hex::encode(seed),
                "ids": ids.iter().map(hex::encode).collect::<Vec<_>>(),
            }));
            let order: Vec<String> = rank(&seed, &ids).iter().map(hex::encode).collect();
            expected.push_str(&format!(
                "{} {} {}\n",
                hex::encode(seed_commitment(&seed)),
                hex::encode(entries_digest(&ids)),
                order.join(",")
            ));
        }
        let mut child = std::process::Command::new("python3")
            .args(["-c", SCRIPT])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("running python3")?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().context("python3's stdin")?;
            stdin.write_all(serde_json::to_string(&cases)?.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        anyhow::ensure!(out.status.success(), "python3 failed: {:?}", out.status);
        assert_eq!(String::from_utf8(out.stdout)?, expected);
        Ok(())
    }
}
