//! The line shards' half of an admission tick of a spread line (README "A line that outgrows
//! one Redis: the design", "A tick across shards", steps 2, 3, 4 and 6).
//!
//! 2. [`heads`]: each shard skips its silent head places (as `wr_admit.lua` does) and returns
//!    up to the tick's budget of live ones, left in `q` (`lua/wr_line_head.lua`);
//! 3. [`merge`]: the leader keeps the budget's lowest scores across the shards. Scores are
//!    global (`wr_join.lua`'s layout), so this is the order one shard would have admitted in:
//!    priority groups, the pre-open shuffle, arrival order, a returning buyer's old place;
//! 4. [`take`]: on each shard the chosen places still in `q` with the merged score move into
//!    `ladm` with score −deadline: taken, not yet in the sale's `adm` (`lua/wr_line_take.lua`);
//! 6. [`settle`]: once the sale's slot wrote them into `adm`, −deadline becomes +deadline and
//!    `ladm` is the shard's copy of `adm` (`lua/wr_line_settle.lua`). [`pending`] lists what a
//!    leader that died between 4 and 6 left, for the next tick to send through 5 and 6.
//!
//! Steps 1 and 5 run on the sale's slot and are not built yet.

use anyhow::Context;
use dropline_core::clients::redis::Redis;
use dropline_core::ids::UserId;
use dropline_core::sale::keys::LineKeys;
use fred::interfaces::SortedSetsInterface;
use fred::types::Value;
use std::time::Duration;

use crate::scripts::{WR_LINE_HEAD, WR_LINE_SETTLE, WR_LINE_TAKE};

/// What [`heads`] found at the head of one shard.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Heads {
    /// Silent places moved from `q` to `skip` now.
    pub skipped: u64,
    /// Entries looked at (the scan limit when it stopped the call).
    pub looked: u64,
    /// The live head places, lowest score first.
    pub places: Vec<(UserId, f64)>,
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
/// is silent), at most `scan_limit` entries looked at.
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
    let [skipped, looked, Value::Array(users), Value::Array(scores)] = parts.as_slice() else {
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

/// Step 4 on one shard: the `chosen` places still in `q` with their merged score move into
/// `ladm` as pending (−`deadline_ms`). Returns the users taken, in `chosen`'s order.
pub async fn take(
    redis: &Redis,
    keys: &LineKeys,
    deadline_ms: i64,
    chosen: &[(UserId, f64)],
) -> anyhow::Result<Vec<UserId>> {
    if chosen.is_empty() {
        return Ok(Vec::new());
    }
    let mut args: Vec<Vec<u8>> = Vec::with_capacity(1 + chosen.len() * 2);
    args.push(deadline_ms.to_string().into_bytes());
    for (user, score) in chosen {
        args.push(user.as_bytes().to_vec());
        args.push(format!("{score:.0}").into_bytes());
    }
    let taken: Vec<Value> = WR_LINE_TAKE
        .run(redis, vec![keys.q.clone(), keys.outbox.clone()], args)
        .await
        .with_context(|| format!("taking places from {}", keys.q))?;
    taken
        .iter()
        .map(|v| {
            v.as_bytes()
                .and_then(|b| UserId::from_slice(b).ok())
                .context("wr_line_take: a malformed user id")
        })
        .collect()
}

/// Step 6 on one shard: `users`, now in the sale's `adm`, are settled in `ladm` (+deadline).
/// Returns how many changed (0 on a repeat).
pub async fn settle(
    redis: &Redis,
    keys: &LineKeys,
    deadline_ms: i64,
    users: &[UserId],
) -> anyhow::Result<u64> {
    if users.is_empty() {
        return Ok(0);
    }
    let mut args: Vec<Vec<u8>> = Vec::with_capacity(1 + users.len());
    args.push(deadline_ms.to_string().into_bytes());
    args.extend(users.iter().map(|u| u.as_bytes().to_vec()));
    WR_LINE_SETTLE
        .run(redis, vec![keys.outbox.clone()], args)
        .await
        .with_context(|| format!("settling admissions in {}", keys.outbox))
}

/// What a tick took on this shard and did not settle (a leader that stopped between steps 4
/// and 6): up to `limit` (user, deadline ms), for the next tick's steps 5 and 6.
pub async fn pending(
    redis: &Redis,
    keys: &LineKeys,
    limit: usize,
) -> anyhow::Result<Vec<(UserId, i64)>> {
    let entries: Vec<(Value, f64)> = redis
        .pool()
        .zrangebyscore(&keys.outbox, "-inf", "(0", true, Some((0, limit as i64)))
        .await
        .with_context(|| format!("reading the pending admissions of {}", keys.outbox))?;
    entries
        .into_iter()
        .map(|(user, score)| {
            let user = user
                .as_bytes()
                .and_then(|b| UserId::from_slice(b).ok())
                .context("a malformed user id in ladm")?;
            Ok((user, -score as i64))
        })
        .collect()
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
