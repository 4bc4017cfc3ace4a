//! Draw entries in MySQL (design/draw.md "Entering"): the durable record an `entered` answer
//! rests on. Redis only indexes entries for the waiting room's polls (`ent`); an entry exists
//! because its row was committed, so an `entered` answer survives the loss of Redis.
//!
//! The freeze (dropline-draw-v1 step 2) takes the sale row's exclusive lock; every entry and
//! withdrawal takes its shared lock and refuses once `draws.frozen_at` is set. So the frozen
//! list is exactly the entries that were answered `entered` and not withdrawn, whatever runs
//! concurrently: an entry either committed before the freeze locked the row (and is in the
//! list) or waited for the lock and then saw `frozen_at`.

use anyhow::Context;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sqlx::{MySql, MySqlPool, Transaction};

use super::draw::EntryId;
use crate::ids::{SaleId, UserId};

/// An entry's value in the waiting room's `ent` index (`<prefix>:{s:<sale>}:ent`, user →
/// value): `[-]<32 hex>[:<rank>]`, `-` once withdrawn, `:<rank>` once ranked.
pub fn index_value(id: &EntryId, rank: Option<u32>, withdrawn: bool) -> String {
    let mut value = String::with_capacity(44);
    if withdrawn {
        value.push('-');
    }
    value.push_str(&hex::encode(id));
    if let Some(rank) = rank {
        value.push(':');
        value.push_str(&rank.to_string());
    }
    value
}

/// Every entry of `sale` as the index holds it: (user, value).
pub async fn index_values(pool: &MySqlPool, sale: SaleId) -> anyhow::Result<Vec<(UserId, String)>> {
    let rows: Vec<(UserId, Vec<u8>, bool, Option<u32>)> = sqlx::query_as(
        "SELECT user_id, id, withdrawn_at IS NOT NULL, draw_rank FROM draw_entries \
         WHERE sale_id = ?",
    )
    .bind(sale)
    .fetch_all(pool)
    .await
    .context("reading the entries to index")?;
    rows.into_iter()
        .map(|(user, id, withdrawn, rank)| {
            Ok((user, index_value(&entry_id(&id)?, rank, withdrawn)))
        })
        .collect()
}

/// A nullable time column.
type Time = Option<DateTime<Utc>>;

/// What an entry attempt ended as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entered {
    /// Entered (again): `new` when this call made the row, false for a rejoin (which keeps the
    /// id, whether or not the entry had been withdrawn).
    Entered { entry: EntryId, new: bool },
    /// The list is frozen (or `entries_close_at` has passed): no new entry.
    Closed,
    /// The account has no verified e-mail address (or does not exist in this database).
    NotVerified,
    /// No draw sale of that id in MySQL.
    NoDraw,
}

/// What a withdrawal ended as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdrawn {
    /// The entry is withdrawn (now, or it was already).
    Withdrawn(EntryId),
    /// The user has no entry: nothing to do.
    NoEntry,
    /// The list is frozen: an entry can no longer be withdrawn.
    Closed,
    /// No draw sale of that id in MySQL.
    NoDraw,
}

/// A user's entry as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub id: EntryId,
    pub withdrawn: bool,
    /// 1-based, once ranked.
    pub rank: Option<u32>,
}

/// The sale's draw row under the shared lock of the entry transaction: `None` for no draw.
/// Returns whether entries are still taken at `now`.
async fn lock_shared(
    tx: &mut Transaction<'_, MySql>,
    sale: SaleId,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<bool>> {
    // The shared lock on the sale row orders every entry against the freeze's exclusive one.
    let row: Option<(Time, Time)> = sqlx::query_as(
        "SELECT s.entries_close_at, d.frozen_at FROM sales s \
         JOIN draws d ON d.sale_id = s.id \
         WHERE s.id = ? AND s.mode = 'draw' LOCK IN SHARE MODE",
    )
    .bind(sale)
    .fetch_optional(&mut **tx)
    .await
    .with_context(|| format!("locking draw sale {sale} for an entry"))?;
    Ok(row.map(|(close, frozen)| frozen.is_none() && close.is_some_and(|close| now < close)))
}

/// Enters `user` in the draw of `sale` at `now` (the caller's clock: entries close at
/// `entries_close_at` by it). Committed before it returns `Entered`.
pub async fn enter(
    pool: &MySqlPool,
    sale: SaleId,
    user: UserId,
    now: DateTime<Utc>,
) -> anyhow::Result<Entered> {
    let mut tries = 0;
    loop {
        match enter_once(pool, sale, user, now).await {
            // InnoDB picks a victim when concurrent entries of one account meet on the unique
            // key (error 1213): the retry finds the other's row.
            Err(error) if tries < 3 && is_deadlock(&error) => tries += 1,
            other => return other,
        }
    }
}

/// A deadlock (1213) or lock wait timeout (1205): the transaction was rolled back and may run
/// again.
fn is_deadlock(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .and_then(|e| e.as_database_error())
            .and_then(|e| e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
            .is_some_and(|e| matches!(e.number(), 1205 | 1213))
    })
}

async fn enter_once(
    pool: &MySqlPool,
    sale: SaleId,
    user: UserId,
    now: DateTime<Utc>,
) -> anyhow::Result<Entered> {
    let mut tx = pool.begin().await.context("starting an entry")?;
    let Some(open) = lock_shared(&mut tx, sale, now).await? else {
        return Ok(Entered::NoDraw);
    };
    let existing = find_in(&mut tx, sale, user).await?;
    if let Some(entry) = existing
        && !entry.withdrawn
    {
        // Already entered: the same answer whatever the clock says.
        return Ok(Entered::Entered {
            entry: entry.id,
            new: false,
        });
    }
    if !open {
        return Ok(Entered::Closed);
    }
    let verified: Option<(bool,)> =
        sqlx::query_as("SELECT email_verified_at IS NOT NULL FROM users WHERE id = ?")
            .bind(user)
            .fetch_optional(&mut *tx)
            .await
            .context("reading the entrant's account")?;
    if !matches!(verified, Some((true,))) {
        return Ok(Entered::NotVerified);
    }
    // Two first joins of one account at once: the second waits on the unique key and then
    // updates nothing, so both answer the one id.
    let mut id: EntryId = [0; 16];
    rand::rng().fill_bytes(&mut id);
    let written = sqlx::query(
        "INSERT INTO draw_entries (id, sale_id, user_id, entered_at) VALUES (?, ?, ?, ?) \
         ON DUPLICATE KEY UPDATE withdrawn_at = NULL",
    )
    .bind(&id[..])
    .bind(sale)
    .bind(user)
    .bind(now.naive_utc())
    .execute(&mut *tx)
    .await
    .context("writing an entry")?
    .rows_affected();
    let entry = find_in(&mut tx, sale, user)
        .await?
        .context("the entry just written is not there")?;
    let outcome = Entered::Entered {
        entry: entry.id,
        new: written == 1,
    };
    tx.commit().await.context("committing an entry")?;
    Ok(outcome)
}

/// Withdraws `user`'s entry before the freeze (idempotent).
pub async fn withdraw(
    pool: &MySqlPool,
    sale: SaleId,
    user: UserId,
    now: DateTime<Utc>,
) -> anyhow::Result<Withdrawn> {
    let mut tx = pool.begin().await.context("starting a withdrawal")?;
    let Some(open) = lock_shared(&mut tx, sale, now).await? else {
        return Ok(Withdrawn::NoDraw);
    };
    let Some(entry) = find_in(&mut tx, sale, user).await? else {
        return Ok(Withdrawn::NoEntry);
    };
    if entry.withdrawn {
        return Ok(Withdrawn::Withdrawn(entry.id));
    }
    if !open {
        return Ok(Withdrawn::Closed);
    }
    sqlx::query(
        "UPDATE draw_entries SET withdrawn_at = ? \
         WHERE sale_id = ? AND user_id = ? AND withdrawn_at IS NULL",
    )
    .bind(now.naive_utc())
    .bind(sale)
    .bind(user)
    .execute(&mut *tx)
    .await
    .context("withdrawing an entry")?;
    tx.commit().await.context("committing a withdrawal")?;
    Ok(Withdrawn::Withdrawn(entry.id))
}

async fn find_in(
    tx: &mut Transaction<'_, MySql>,
    sale: SaleId,
    user: UserId,
) -> anyhow::Result<Option<Entry>> {
    let row: Option<(Vec<u8>, bool, Option<u32>)> = sqlx::query_as(
        "SELECT id, withdrawn_at IS NOT NULL, draw_rank FROM draw_entries \
         WHERE sale_id = ? AND user_id = ?",
    )
    .bind(sale)
    .bind(user)
    .fetch_optional(&mut **tx)
    .await
    .context("reading an entry")?;
    row.map(entry_of).transpose()
}

fn entry_of((id, withdrawn, rank): (Vec<u8>, bool, Option<u32>)) -> anyhow::Result<Entry> {
    Ok(Entry {
        id: entry_id(&id)?,
        withdrawn,
        rank,
    })
}

/// An entry id from its stored bytes.
pub fn entry_id(bytes: &[u8]) -> anyhow::Result<EntryId> {
    EntryId::try_from(bytes)
        .map_err(|_| anyhow::anyhow!("an entry id of {} bytes, not 16", bytes.len()))
}

/// `user`'s entry in `sale`, if any.
pub async fn find(pool: &MySqlPool, sale: SaleId, user: UserId) -> anyhow::Result<Option<Entry>> {
    let row: Option<(Vec<u8>, bool, Option<u32>)> = sqlx::query_as(
        "SELECT id, withdrawn_at IS NOT NULL, draw_rank FROM draw_entries \
         WHERE sale_id = ? AND user_id = ?",
    )
    .bind(sale)
    .bind(user)
    .fetch_optional(pool)
    .await
    .context("reading an entry")?;
    row.map(entry_of).transpose()
}

/// A draw's public record (`GET /w/{id}/draw`), as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrawRecord {
    pub seed_commitment: [u8; 32],
    /// Only once revealed (`drawn_at` set).
    pub seed: Option<[u8; 32]>,
    pub entry_count: Option<u32>,
    pub entries_digest: Option<[u8; 32]>,
    pub frozen_at: Option<DateTime<Utc>>,
    pub drawn_at: Option<DateTime<Utc>>,
}

type DrawRow = (
    Vec<u8>,
    Vec<u8>,
    Option<u32>,
    Option<Vec<u8>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

fn bytes32(what: &str, bytes: &[u8]) -> anyhow::Result<[u8; 32]> {
    <[u8; 32]>::try_from(bytes)
        .map_err(|_| anyhow::anyhow!("{what} of {} bytes, not 32", bytes.len()))
}

/// The draw of `sale`, `None` for an fcfs sale or no such sale. The seed is only returned once
/// revealed.
pub async fn record(pool: &MySqlPool, sale: SaleId) -> anyhow::Result<Option<DrawRecord>> {
    let row: Option<DrawRow> = sqlx::query_as(
        "SELECT seed, seed_commitment, entry_count, entries_digest, frozen_at, drawn_at \
         FROM draws WHERE sale_id = ?",
    )
    .bind(sale)
    .fetch_optional(pool)
    .await
    .with_context(|| format!("reading the draw of sale {sale}"))?;
    let Some((seed, commitment, entry_count, digest, frozen_at, drawn_at)) = row else {
        return Ok(None);
    };
    Ok(Some(DrawRecord {
        seed_commitment: bytes32("a seed commitment", &commitment)?,
        seed: match drawn_at {
            Some(_) => Some(bytes32("a seed", &seed)?),
            None => None,
        },
        entry_count,
        entries_digest: digest
            .as_deref()
            .map(|d| bytes32("an entries digest", d))
            .transpose()?,
        frozen_at,
        drawn_at,
    }))
}

/// The frozen list (dropline-draw-v1 step 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frozen {
    pub entry_count: u32,
    pub entries_digest: [u8; 32],
}

/// Freezes the entry list of `sale` at `now` if it is not frozen yet (idempotent: a second
/// call, or one by another leader, returns the stored figures). Takes the sale row's exclusive
/// lock, so no entry or withdrawal is in flight while the list is read.
pub async fn freeze(
    pool: &MySqlPool,
    sale: SaleId,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Frozen>> {
    let mut tx = pool.begin().await.context("starting the freeze")?;
    let locked: Option<(i64,)> =
        sqlx::query_as("SELECT 1 FROM sales WHERE id = ? AND mode = 'draw' FOR UPDATE")
            .bind(sale)
            .fetch_optional(&mut *tx)
            .await
            .with_context(|| format!("locking draw sale {sale} for the freeze"))?;
    if locked.is_none() {
        return Ok(None);
    }
    let stored: Option<(Option<u32>, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT entry_count, entries_digest FROM draws WHERE sale_id = ? AND frozen_at IS NOT NULL \
         FOR UPDATE",
    )
    .bind(sale)
    .fetch_optional(&mut *tx)
    .await
    .context("reading the draw row")?;
    if let Some((Some(entry_count), Some(digest))) = stored {
        return Ok(Some(Frozen {
            entry_count,
            entries_digest: bytes32("an entries digest", &digest)?,
        }));
    }
    // A locking read: the latest committed rows, whatever this transaction's snapshot.
    let ids: Vec<(Vec<u8>,)> = sqlx::query_as(
        "SELECT id FROM draw_entries WHERE sale_id = ? AND withdrawn_at IS NULL FOR UPDATE",
    )
    .bind(sale)
    .fetch_all(&mut *tx)
    .await
    .context("reading the entries to freeze")?;
    let ids = ids
        .iter()
        .map(|(id,)| entry_id(id))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let frozen = Frozen {
        entry_count: u32::try_from(ids.len()).context("more than 2^32 entries")?,
        entries_digest: super::draw::entries_digest(&ids),
    };
    sqlx::query(
        "UPDATE draws SET entry_count = ?, entries_digest = ?, frozen_at = ? WHERE sale_id = ?",
    )
    .bind(frozen.entry_count)
    .bind(&frozen.entries_digest[..])
    .bind(now.naive_utc())
    .bind(sale)
    .execute(&mut *tx)
    .await
    .context("writing the freeze")?;
    tx.commit().await.context("committing the freeze")?;
    Ok(Some(frozen))
}

/// Where a draw stands in MySQL: what the leader does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub entries_close_at: DateTime<Utc>,
    pub frozen_at: Option<DateTime<Utc>>,
    pub drawn_at: Option<DateTime<Utc>>,
}

/// The progress of the draw of `sale`; `None` for an fcfs sale or no such sale.
pub async fn progress(pool: &MySqlPool, sale: SaleId) -> anyhow::Result<Option<Progress>> {
    let row: Option<(Time, Time, Time)> = sqlx::query_as(
        "SELECT s.entries_close_at, d.frozen_at, d.drawn_at FROM sales s \
             JOIN draws d ON d.sale_id = s.id WHERE s.id = ? AND s.mode = 'draw'",
    )
    .bind(sale)
    .fetch_optional(pool)
    .await
    .with_context(|| format!("reading the draw progress of sale {sale}"))?;
    Ok(match row {
        Some((Some(entries_close_at), frozen_at, drawn_at)) => Some(Progress {
            entries_close_at,
            frozen_at,
            drawn_at,
        }),
        _ => None,
    })
}

/// Rows written per statement when ranks are stored.
const RANK_CHUNK: usize = 1_000;

/// Reveals the seed of a frozen draw and ranks its entries (dropline-draw-v1 steps 3 and 4):
/// in one transaction, every frozen entry's `draw_rank` and the draw's `drawn_at`, so the seed
/// is never public without the ranking it decides. Idempotent: a revealed draw is left as it
/// is. `Ok(None)` when the draw is not frozen (or no such draw); the entry count otherwise.
pub async fn reveal(
    pool: &MySqlPool,
    sale: SaleId,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<u32>> {
    let mut tx = pool.begin().await.context("starting the reveal")?;
    let row: Option<(Vec<u8>, Option<u32>, Time)> = sqlx::query_as(
        "SELECT seed, entry_count, drawn_at FROM draws \
         WHERE sale_id = ? AND frozen_at IS NOT NULL FOR UPDATE",
    )
    .bind(sale)
    .fetch_optional(&mut *tx)
    .await
    .with_context(|| format!("locking the draw of sale {sale} for the reveal"))?;
    let Some((seed, count, drawn_at)) = row else {
        return Ok(None);
    };
    if drawn_at.is_some() {
        return Ok(count);
    }
    let seed = bytes32("a seed", &seed)?;
    let ids: Vec<(Vec<u8>,)> = sqlx::query_as(
        "SELECT id FROM draw_entries WHERE sale_id = ? AND withdrawn_at IS NULL FOR UPDATE",
    )
    .bind(sale)
    .fetch_all(&mut *tx)
    .await
    .context("reading the frozen entries")?;
    let ids = ids
        .iter()
        .map(|(id,)| entry_id(id))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(
        count == Some(u32::try_from(ids.len()).unwrap_or(u32::MAX)),
        "sale {sale}: {} entries now, {count:?} frozen: the list changed after the freeze",
        ids.len()
    );
    let ranked = super::draw::rank(&seed, &ids);
    for (chunk_no, chunk) in ranked.chunks(RANK_CHUNK).enumerate() {
        // One statement per chunk: id -> rank through a CASE keyed by the primary key.
        let mut q =
            sqlx::QueryBuilder::<MySql>::new("UPDATE draw_entries SET draw_rank = CASE id ");
        for (i, id) in chunk.iter().enumerate() {
            let rank = u32::try_from(chunk_no * RANK_CHUNK + i + 1).context("rank past 2^32")?;
            q.push("WHEN ")
                .push_bind(id.to_vec())
                .push(" THEN ")
                .push_bind(rank)
                .push(" ");
        }
        q.push("END WHERE sale_id = ")
            .push_bind(sale)
            .push(" AND id IN (");
        let mut list = q.separated(", ");
        for id in chunk {
            list.push_bind(id.to_vec());
        }
        list.push_unseparated(")");
        q.build().execute(&mut *tx).await.context("writing ranks")?;
    }
    sqlx::query("UPDATE draws SET drawn_at = ?, ranked_at = ? WHERE sale_id = ?")
        .bind(now.naive_utc())
        .bind(now.naive_utc())
        .bind(sale)
        .execute(&mut *tx)
        .await
        .context("writing the reveal")?;
    tx.commit().await.context("committing the reveal")?;
    Ok(count)
}

/// One ranked entry, for the index and the public lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ranked {
    pub rank: u32,
    pub entry: EntryId,
    pub user: UserId,
}

/// The ranked entries of `sale` from rank `after` + 1, at most `limit`, by rank.
pub async fn ranked(
    pool: &MySqlPool,
    sale: SaleId,
    after: u32,
    limit: u32,
) -> anyhow::Result<Vec<Ranked>> {
    let rows: Vec<(u32, Vec<u8>, UserId)> = sqlx::query_as(
        "SELECT draw_rank, id, user_id FROM draw_entries \
         WHERE sale_id = ? AND draw_rank > ? ORDER BY draw_rank LIMIT ?",
    )
    .bind(sale)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
    .context("reading ranked entries")?;
    rows.into_iter()
        .map(|(rank, id, user)| {
            Ok(Ranked {
                rank,
                entry: entry_id(&id)?,
                user,
            })
        })
        .collect()
}

/// What became of a win (draw.md: `claiming`, `claimed`, `forfeited`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Promoted, not settled: the winner may order (or has an order in flight).
    Claiming,
    /// The win's order was paid.
    Claimed,
    /// No order by the deadline, or the order ended unpaid.
    Forfeited,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Claiming => "claiming",
            Self::Claimed => "claimed",
            Self::Forfeited => "forfeited",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "claiming" => Some(Self::Claiming),
            "claimed" => Some(Self::Claimed),
            "forfeited" => Some(Self::Forfeited),
            _ => None,
        }
    }
}

/// A promoted entry as MySQL recorded it (the draw leader writes it from the draw outbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Win {
    pub rank: u32,
    pub entry: EntryId,
    pub user: UserId,
    pub max_quantity: u32,
    pub claim_deadline: DateTime<Utc>,
    pub outcome: Outcome,
    /// The win's order, once settled with one.
    pub order: Option<crate::ids::OrderId>,
}

type WinRow = (
    u32,
    Vec<u8>,
    UserId,
    Option<u32>,
    Time,
    Option<String>,
    Option<crate::ids::OrderId>,
);

/// The wins of `sale` from rank `after` + 1, at most `limit`, by rank: the public winners list
/// (`GET /w/{id}/draw/winners`) and `sale rearm`.
pub async fn wins(
    pool: &MySqlPool,
    sale: SaleId,
    after: u32,
    limit: u32,
) -> anyhow::Result<Vec<Win>> {
    let rows: Vec<WinRow> = sqlx::query_as(
        "SELECT draw_rank, id, user_id, max_quantity, claim_deadline, outcome, order_id \
         FROM draw_entries WHERE sale_id = ? AND won_at IS NOT NULL AND draw_rank > ? \
         ORDER BY draw_rank LIMIT ?",
    )
    .bind(sale)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
    .context("reading the draw's wins")?;
    rows.into_iter()
        .map(|(rank, id, user, max_quantity, deadline, outcome, order)| {
            Ok(Win {
                rank,
                entry: entry_id(&id)?,
                user,
                max_quantity: max_quantity.context("a win without max_quantity")?,
                claim_deadline: deadline.context("a win without claim_deadline")?,
                outcome: outcome
                    .as_deref()
                    .and_then(Outcome::parse)
                    .with_context(|| format!("a win with outcome {outcome:?}"))?,
                order,
            })
        })
        .collect()
}

/// The frozen list's ids after `after` (exclusive), ascending, at most `limit`: the public
/// entries list (`GET /w/{id}/draw/entries`).
pub async fn frozen_ids(
    pool: &MySqlPool,
    sale: SaleId,
    after: Option<EntryId>,
    limit: u32,
) -> anyhow::Result<Vec<EntryId>> {
    let sql = if after.is_some() {
        "SELECT id FROM draw_entries WHERE sale_id = ? AND withdrawn_at IS NULL AND id > ? \
         ORDER BY id LIMIT ?"
    } else {
        "SELECT id FROM draw_entries WHERE sale_id = ? AND withdrawn_at IS NULL AND id >= ? \
         ORDER BY id LIMIT ?"
    };
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as(sql)
        .bind(sale)
        .bind(after.unwrap_or([0; 16]).to_vec())
        .bind(limit)
        .fetch_all(pool)
        .await
        .context("reading the frozen entries")?;
    rows.iter().map(|(id,)| entry_id(id)).collect()
}
