//! Positions in a spread line: how many places of the *other* shards stand ahead of a score.
//!
//! A poll knows its own rank exactly (`ZRANK` on its shard). For the other shards the admitter
//! leader reads a few points of each shard every tick and publishes them; a poll then counts
//! from those points without touching any other shard. Each shard is described by its
//! [`CountCurve`]: the number of its places with a score below `x`, as a monotone piecewise
//! linear function through knots the leader read:
//!
//! - the first [`EXACT_HEAD`] places: knots `(s, r)` and `(s + 1, r + 1)` for the place of rank
//!   r and score s. Scores are integers (exact doubles below 2^53), so between the two knots
//!   there is no integer and the curve is exact there: the front of the line, and every line
//!   of at most [`EXACT_HEAD`] places a shard, is counted exactly (as of the last tick);
//! - the places at ranks 64, 128, 256, … and the last one, the same two knots each;
//! - the segment bounds ([`segment_starts`]): every priority group's first score, within a
//!   group the first score of an arrival after the opening (2^32 as the key) and the last
//!   such key handed out so far, with the count below each (`ZCOUNT`). Scores jump at these (a
//!   group is 2^33 keys apart from the next, the pre-open keys are random while later ones
//!   count up from 2^32 and leave the rest of the group's keys empty), so no interpolation
//!   spans one.
//!
//! Between knots the count is interpolated linearly. Within one segment the scores of a shard
//! are spread as the whole line's are (pre-open keys are uniform draws; later keys count the
//! arrivals, and a shard holds a random share of them because a place's shard is a hash of
//! its user), so the error of a position far back is a fraction of the gap between two knots.
//!
//! Every shard gets its own [`CountCurve::others`]: the sum of the other shards' curves, made as
//! the sum of all of them less its own, so the places of the others ahead of `x` are one binary
//! search, whatever the number of shards. (It was the sum and the own curve, two searches a
//! poll: the two searches were a third of a spread poll's script; both are still published for
//! edges of the release before, see [`publish`].)
//!
//! Measured on a simulated line of 60,000 places (two priority groups besides the public one,
//! a pre-queue and later arrivals) split at random over 3 and over 8 shards, from the 1,000th
//! place on, as a share of the position: median error 0.06–0.08%, 99th percentile 1.0–1.3%,
//! worst 3.5% (just past a shard's 32nd place, where the next knot is 32 places on).
//!
//! The leader's read of a shard is one call on the shard's primary ([`read_curve`],
//! `lua/wr_line_curve.lua`); [`publish`] writes the curves into every shard's `lmeta`, and
//! [`positions`] (`lua/wr_line_position.lua`) counts a poll's place from its own shard alone.

use anyhow::Context;
use dropline_core::clients::redis::Redis;
use dropline_core::ids::UserId;
use dropline_core::sale::keys::{LineKeys, LineShards};
use fred::interfaces::HashesInterface;
use fred::types::Value;

use super::tick::News;
use crate::scripts::{WR_LINE_CURVE, WR_LINE_POSITION};

/// Places at the head of each shard counted exactly.
pub const EXACT_HEAD: u64 = 32;

/// The ranks the leader reads a shard's score at, for a shard of `len` places: the first
/// [`EXACT_HEAD`], then every power of two from 64 below `len`, then the last.
pub fn checkpoint_ranks(len: u64) -> Vec<u64> {
    let mut ranks: Vec<u64> = (0..len.min(EXACT_HEAD)).collect();
    let mut rank = EXACT_HEAD * 2;
    while rank < len {
        ranks.push(rank);
        rank *= 2;
    }
    if len > 0 && ranks.last() != Some(&(len - 1)) {
        ranks.push(len - 1);
    }
    ranks
}

/// The order key at which a group's arrivals after the opening start (`wr_join.lua`: 2^32 + n).
const AFTER_OPENING: f64 = 4_294_967_296.0;
/// The order keys of one priority group (`wr_join.lua`: rank * 2^33 + k).
const GROUP_SPAN: f64 = 8_589_934_592.0;
/// A score is `order_key * 65536 + stamp`.
const STAMP: f64 = 65_536.0;

/// The scores where a line's scores jump, for `groups` priority groups besides the public one
/// and `arrivals` places made after the opening so far (the sale's `qseq`): the start of each
/// group, the start of its arrivals after the opening, and the end of those (no key past
/// 2^32 + `arrivals` exists yet, and the next group starts 2^32 keys later: an empty stretch
/// that interpolation must not spread places over). The leader counts each shard's places
/// below these (`ZCOUNT -inf (x`).
pub fn segment_starts(groups: usize, arrivals: u64) -> Vec<f64> {
    (0..=groups)
        .flat_map(|rank| {
            let base = rank as f64 * GROUP_SPAN;
            [
                base * STAMP,
                (base + AFTER_OPENING) * STAMP,
                (base + AFTER_OPENING + arrivals as f64 + 1.0) * STAMP,
            ]
        })
        .collect()
}

/// How many places of a set have a score below `x`: knots `(x, count)` sorted by `x`, the
/// count non-decreasing, linear between knots, 0 before the first and the last count after it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CountCurve {
    knots: Vec<(f64, f64)>,
}

impl CountCurve {
    /// One shard's curve from what the leader read: its length, the scores at
    /// [`checkpoint_ranks`] (`(rank, score)`, any order) and the places below each segment start
    /// (`(start, count)`).
    pub fn of_shard(len: u64, ranked: &[(u64, f64)], segments: &[(f64, u64)]) -> Self {
        let mut knots: Vec<(f64, f64)> = Vec::with_capacity(ranked.len() * 2 + segments.len());
        for &(rank, score) in ranked {
            knots.push((score, rank as f64));
            knots.push((score + 1.0, rank as f64 + 1.0));
        }
        for &(start, below) in segments {
            knots.push((start, below as f64));
        }
        knots.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        // One knot per x, the count made monotone: a segment start read in another instant
        // than the ranks (a join between the reads) must not make the curve go back.
        let mut out: Vec<(f64, f64)> = Vec::with_capacity(knots.len() + 1);
        for (x, count) in knots {
            let count = count.min(len as f64);
            match out.last().copied() {
                Some((last_x, last_count)) if last_x == x => {
                    if let Some(last) = out.last_mut() {
                        last.1 = last_count.max(count);
                    }
                }
                Some((_, last_count)) => out.push((x, count.max(last_count))),
                None => out.push((x, count)),
            }
        }
        if let Some(&(x, count)) = out.last()
            && count < len as f64
        {
            out.push((x + 1.0, len as f64));
        }
        Self { knots: out }
    }

    /// The estimated number of places with a score below `x`.
    pub fn at(&self, x: f64) -> f64 {
        let knots = &self.knots;
        // The first knot at or past x.
        let i = knots.partition_point(|k| k.0 < x);
        if i == knots.len() {
            return knots.last().map_or(0.0, |k| k.1);
        }
        if knots[i].0 == x {
            return knots[i].1;
        }
        if i == 0 {
            return 0.0;
        }
        let ((x0, c0), (x1, c1)) = (knots[i - 1], knots[i]);
        c0 + (c1 - c0) * (x - x0) / (x1 - x0)
    }

    /// The sum of `curves`: exact, since a sum of piecewise linear functions is linear between
    /// the union of their knots.
    pub fn sum(curves: &[CountCurve]) -> Self {
        Self::on_union(curves, |x| curves.iter().map(|c| c.at(x)).sum())
    }

    /// `all` less `own`, where `own` is one of the curves `all` is the sum of: what the other
    /// curves count below each `x`. Exact like [`CountCurve::sum`] (both are linear between
    /// the union of their knots), and a count is never below 0.
    pub fn others(all: &CountCurve, own: &CountCurve) -> Self {
        Self::on_union(&[all, own], |x| (all.at(x) - own.at(x)).max(0.0))
    }

    /// A curve with a knot at every x of `curves`' knots, counting `count(x)` there: exact for
    /// any function of the curves that is linear where each of them is.
    fn on_union<C: std::borrow::Borrow<CountCurve>>(
        curves: &[C],
        count: impl Fn(f64) -> f64,
    ) -> Self {
        let mut xs: Vec<f64> = curves
            .iter()
            .flat_map(|c| c.borrow().knots.iter().map(|k| k.0))
            .collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        let knots = xs.into_iter().map(|x| (x, count(x))).collect();
        Self { knots }
    }

    /// The places the curve counts (its last knot's count: every place is below +inf).
    pub fn len(&self) -> u64 {
        self.knots.last().map_or(0, |k| k.1.round() as u64)
    }

    /// Whether the curve counts no place.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The knots, for publishing.
    pub fn knots(&self) -> &[(f64, f64)] {
        &self.knots
    }
}

/// Reads one line shard's curve with one call on its primary (`lua/wr_line_curve.lua`): its
/// length, the scores at [`checkpoint_ranks`] and the count below each of `bounds`
/// ([`segment_starts`]). What the leader does for every shard each tick.
pub async fn read_curve(redis: &Redis, q: &str, bounds: &[f64]) -> anyhow::Result<CountCurve> {
    let args: Vec<String> = bounds.iter().map(|b| format!("{b:.0}")).collect();
    let reply: Value = WR_LINE_CURVE
        .run(redis, vec![q.to_owned()], args)
        .await
        .with_context(|| format!("reading the line shard {q}"))?;
    let malformed = || anyhow::anyhow!("wr_line_curve: a malformed reply for {q}");
    let Value::Array(parts) = reply else {
        return Err(malformed());
    };
    let [len, Value::Array(ranked), Value::Array(below)] = parts.as_slice() else {
        return Err(malformed());
    };
    let len = len.as_u64().ok_or_else(malformed)?;
    let ranked = ranked
        .chunks_exact(2)
        .map(|pair| Some((pair[0].as_u64()?, pair[1].as_f64()?)))
        .collect::<Option<Vec<(u64, f64)>>>()
        .ok_or_else(malformed)?;
    anyhow::ensure!(
        ranked.iter().map(|r| r.0).eq(checkpoint_ranks(len)),
        "wr_line_curve: ranks other than checkpoint_ranks({len}) for {q}"
    );
    let below = below
        .iter()
        .map(Value::as_u64)
        .collect::<Option<Vec<u64>>>()
        .ok_or_else(malformed)?;
    anyhow::ensure!(below.len() == bounds.len(), malformed());
    let segments: Vec<(f64, u64)> = bounds.iter().copied().zip(below).collect();
    Ok(CountCurve::of_shard(len, &ranked, &segments))
}

/// Writes what a poll of each shard needs to count the others (`lmeta`: `others` the sum of the
/// other shards' curves, `at` = `read_at_ms`; and, for the edges of the release before, which
/// count `all - own`, `all` the sum of `curves` and `own` the shard's own) and, with `news`,
/// the sale as a poll sees it (`state`, `opens_at`, `closes_at`, `paused`, `rate`, `notice`,
/// `groups`, `free`, `limited`, `qlen` the line's length, the curves' sum, and `seq`), one
/// `HSET` on each shard.
/// `curves` are the shards' in shard order.
pub async fn publish(
    redis: &Redis,
    line: &LineShards,
    curves: &[CountCurve],
    read_at_ms: i64,
    news: Option<&News>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        curves.len() == line.all().len(),
        "{} curves for {} line shards",
        curves.len(),
        line.all().len()
    );
    let sum = CountCurve::sum(curves);
    let all = pack(&sum);
    let mut shared: Vec<(&str, Vec<u8>)> =
        vec![("at", read_at_ms.to_string().into_bytes()), ("all", all)];
    if let Some(news) = news {
        let number = |n: i64| n.to_string().into_bytes();
        shared.extend([
            ("state", news.state.clone().into_bytes()),
            ("opens_at", number(news.opens_at)),
            ("closes_at", number(news.closes_at)),
            ("paused", number(i64::from(news.paused))),
            ("rate", number(news.admit_per_second)),
            ("notice", news.notice.clone().into_bytes()),
            ("groups", news.groups.clone().into_bytes()),
            ("free", number(news.free)),
            ("limited", number(news.limited_rate_milli)),
            ("qlen", sum.len().to_string().into_bytes()),
            ("seq", news.seq.to_string().into_bytes()),
        ]);
    }
    for (keys, curve) in line.all().iter().zip(curves) {
        let mut fields = shared.clone();
        fields.push(("own", pack(curve)));
        fields.push(("others", pack(&CountCurve::others(&sum, curve))));
        let () = redis
            .pool()
            .hset(&keys.meta, fields)
            .await
            .with_context(|| format!("publishing the curves to {}", keys.meta))?;
    }
    Ok(())
}

/// A curve as `lmeta` holds it: each knot two little-endian doubles, in order.
pub fn pack(curve: &CountCurve) -> Vec<u8> {
    let mut out = Vec::with_capacity(curve.knots.len() * 16);
    for &(x, count) in &curve.knots {
        out.extend_from_slice(&x.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
    }
    out
}

/// The curve [`pack`] made, as a poll of its shard hands it to the edge (`wr_line_status.lua`):
/// an error for bytes that are not whole knots or whose x do not rise (a search needs them
/// sorted).
pub fn unpack(packed: &[u8]) -> anyhow::Result<CountCurve> {
    let chunks = packed.chunks_exact(16);
    anyhow::ensure!(
        chunks.remainder().is_empty(),
        "a packed curve of {} bytes (knots are 16)",
        packed.len()
    );
    let mut knots: Vec<(f64, f64)> = Vec::with_capacity(packed.len() / 16);
    for knot in chunks {
        let (x, count) = knot.split_at(8);
        let x = f64::from_le_bytes(x.try_into().context("a knot's x")?);
        let count = f64::from_le_bytes(count.try_into().context("a knot's count")?);
        if let Some(&(last, _)) = knots.last() {
            anyhow::ensure!(
                x > last,
                "a packed curve's knots out of order ({last} then {x})"
            );
        }
        anyhow::ensure!(
            x.is_finite() && count.is_finite(),
            "a packed curve's knot ({x}, {count})"
        );
        knots.push((x, count));
    }
    Ok(CountCurve { knots })
}

/// The positions of `users` in the spread line, from their shard `keys` alone
/// (`lua/wr_line_position.lua`): 0 for a user not waiting there. Also when the curves read
/// were published (`at`, epoch ms, 0 for never).
pub async fn positions(
    redis: &Redis,
    keys: &LineKeys,
    users: &[UserId],
) -> anyhow::Result<(i64, Vec<u64>)> {
    let args: Vec<Vec<u8>> = users.iter().map(|u| u.as_bytes().to_vec()).collect();
    let reply: Vec<i64> = WR_LINE_POSITION
        .run(redis, vec![keys.q.clone(), keys.meta.clone()], args)
        .await
        .with_context(|| format!("positions in {}", keys.q))?;
    let (at, rest) = reply
        .split_first()
        .context("wr_line_position: an empty reply")?;
    anyhow::ensure!(
        rest.len() == users.len(),
        "wr_line_position: {} positions for {} users",
        rest.len(),
        users.len()
    );
    Ok((*at, rest.iter().map(|&p| p.max(0) as u64).collect()))
}

/// The places of the other shards ahead of the place with score `score`, from the place's own
/// shard's [`CountCurve::others`], rounded to a whole place.
pub fn ahead_in_others(others: &CountCurve, score: f64) -> u64 {
    // floor(x + 0.5), as wr_line_position.lua rounds, so the two agree on every place.
    (others.at(score).max(0.0) + 0.5).floor() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A line as `wr_join.lua` scores it: `pre` pre-open places per group (random keys), then
    /// `post` arrivals after the opening spread over the groups, with stamps.
    fn line(rng: &mut impl Rng, groups: usize, pre: usize, post: usize) -> Vec<f64> {
        let mut scores = Vec::new();
        for rank in 0..=groups {
            for _ in 0..pre {
                let key = rank as f64 * GROUP_SPAN + f64::from(rng.random::<u32>());
                scores.push(key * STAMP + f64::from(rng.random::<u16>()));
            }
        }
        for n in 0..post {
            let rank = rng.random_range(0..=groups) as f64;
            let key = rank * GROUP_SPAN + AFTER_OPENING + n as f64;
            scores.push(key * STAMP + f64::from(rng.random::<u16>()));
        }
        scores.sort_by(f64::total_cmp);
        scores.dedup();
        scores
    }

    /// What the leader would read of one shard's sorted scores, `arrivals` after the opening.
    fn read(shard: &[f64], groups: usize, arrivals: u64) -> CountCurve {
        let len = shard.len() as u64;
        let ranked: Vec<(u64, f64)> = checkpoint_ranks(len)
            .into_iter()
            .map(|r| (r, shard[r as usize]))
            .collect();
        let segments: Vec<(f64, u64)> = segment_starts(groups, arrivals)
            .into_iter()
            .map(|x| (x, shard.partition_point(|&s| s < x) as u64))
            .collect();
        CountCurve::of_shard(len, &ranked, &segments)
    }

    /// Splits `scores` over `count` shards at random (a hash of the user), reads them, and
    /// returns each place's (estimated, true) count of the other shards' places ahead, and
    /// the score up to which every shard's count is exact (the lowest 32nd score of a shard).
    fn estimates(
        scores: &[f64],
        count: usize,
        groups: usize,
        arrivals: u64,
        seed: u64,
    ) -> (Vec<(u64, u64)>, f64) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut shards: Vec<Vec<f64>> = vec![Vec::new(); count];
        let mut shard_of = Vec::with_capacity(scores.len());
        for &s in scores {
            let i = rng.random_range(0..count);
            shards[i].push(s);
            shard_of.push(i);
        }
        let curves: Vec<CountCurve> = shards.iter().map(|s| read(s, groups, arrivals)).collect();
        let all = CountCurve::sum(&curves);
        let others: Vec<CountCurve> = curves.iter().map(|c| CountCurve::others(&all, c)).collect();
        let exact_until = shards
            .iter()
            .filter_map(|s| s.get(EXACT_HEAD as usize - 1))
            .fold(f64::INFINITY, |a, &b| a.min(b + 1.0));
        let answers = scores
            .iter()
            .enumerate()
            .map(|(rank, &s)| {
                let own = &shards[shard_of[rank]];
                let own_rank = own.partition_point(|&x| x < s) as u64;
                let truth = rank as u64 - own_rank;
                (ahead_in_others(&others[shard_of[rank]], s), truth)
            })
            .collect();
        (answers, exact_until)
    }

    #[test]
    fn checkpoints_are_the_head_then_powers_of_two_then_the_last() {
        assert_eq!(checkpoint_ranks(0), Vec::<u64>::new());
        assert_eq!(checkpoint_ranks(3), [0, 1, 2]);
        assert_eq!(checkpoint_ranks(32), (0..32).collect::<Vec<_>>());
        // A power of two that is the last place is read once.
        assert_eq!(&checkpoint_ranks(65)[32..], [64]);
        assert_eq!(&checkpoint_ranks(66)[32..], [64, 65]);
        let ranks = checkpoint_ranks(1_000_000);
        assert_eq!(
            &ranks[32..],
            [
                64, 128, 256, 512, 1_024, 2_048, 4_096, 8_192, 16_384, 32_768, 65_536, 131_072,
                262_144, 524_288, 999_999
            ]
        );
    }

    #[test]
    fn small_lines_and_the_head_of_every_shard_are_exact() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // Every shard at most 32 places: every position exact.
        let small = line(&mut rng, 2, 5, 30);
        let (answers, _) = estimates(&small, 3, 2, 30, 1);
        for (estimate, truth) in answers {
            assert_eq!(estimate, truth);
        }
        // A long line: every place up to the lowest 32nd place of a shard counts the others
        // exactly (a shard's count is exact below its 32nd place).
        let long = line(&mut rng, 0, 20_000, 20_000);
        let (answers, exact_until) = estimates(&long, 3, 0, 20_000, 2);
        let head = long.partition_point(|&s| s <= exact_until);
        assert!(head >= 60, "{head}");
        for (rank, (estimate, truth)) in answers.iter().enumerate().take(head) {
            assert_eq!(estimate, truth, "rank {rank}");
        }
    }

    #[test]
    fn far_back_positions_are_within_about_a_percent() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        // Two groups besides the public one, a pre-queue and later arrivals: 60,000 places.
        let scores = line(&mut rng, 2, 10_000, 30_000);
        for shards in [3, 8] {
            let (answers, _) = estimates(&scores, shards, 2, 30_000, 3);
            let mut errors: Vec<f64> = answers
                .iter()
                .enumerate()
                .skip(1_000)
                .map(|(rank, &(estimate, truth))| {
                    (estimate as f64 - truth as f64).abs() / rank as f64
                })
                .collect();
            errors.sort_by(f64::total_cmp);
            let median = errors[errors.len() / 2];
            let p99 = errors[errors.len() * 99 / 100];
            let worst = errors[errors.len() - 1];
            // Relative to the position, from the 1,000th place on: half within 0.3%, 99%
            // within 1.5%, none past 5%.
            assert!(
                median < 0.003 && p99 < 0.015 && worst < 0.05,
                "{shards} shards: median {median}, p99 {p99}, worst {worst}"
            );
        }
    }

    #[test]
    fn a_shards_others_curve_is_the_sum_less_its_own_at_every_score() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let scores = line(&mut rng, 1, 3_000, 3_000);
        let mut shards: Vec<Vec<f64>> = vec![Vec::new(); 3];
        for &s in &scores {
            shards[rng.random_range(0..3)].push(s);
        }
        let curves: Vec<CountCurve> = shards.iter().map(|s| read(s, 1, 3_000)).collect();
        let all = CountCurve::sum(&curves);
        for (index, own) in curves.iter().enumerate() {
            let others = CountCurve::others(&all, own);
            // What the others hold in all: the other shards' lengths.
            let rest: usize = shards.iter().map(Vec::len).sum::<usize>() - shards[index].len();
            assert_eq!(others.len(), rest as u64, "shard {index}");
            // Every place's score, the scores between two places, and past both ends.
            let probes = scores
                .iter()
                .flat_map(|&s| [s, s + 0.5, s - 1.0])
                .chain([0.0, f64::MAX]);
            for x in probes {
                let two = (all.at(x) - own.at(x)).max(0.0);
                let one = others.at(x);
                assert!(
                    (one - two).abs() <= 1e-6 * two.max(1.0),
                    "shard {index}, score {x}: {one} against {two}"
                );
            }
        }
    }

    #[test]
    fn a_packed_curve_unpacks_to_itself_and_bad_bytes_are_refused() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        let scores = line(&mut rng, 1, 500, 500);
        let curve = read(&scores, 1, 500);
        assert!(curve.knots().len() > 40, "{}", curve.knots().len());
        assert_eq!(unpack(&pack(&curve)).ok(), Some(curve.clone()));
        assert_eq!(unpack(&[]).ok(), Some(CountCurve::default()));
        let packed = pack(&curve);
        // Not whole knots.
        assert!(unpack(&packed[..packed.len() - 1]).is_err());
        // Two knots swapped: a search would answer wrongly, so it is an error.
        let mut swapped = packed.clone();
        swapped[..32].rotate_left(16);
        assert!(unpack(&swapped).is_err());
        // A NaN x.
        let mut nan = packed;
        nan[..8].copy_from_slice(&f64::NAN.to_le_bytes());
        assert!(unpack(&nan).is_err());
    }

    #[test]
    fn a_curve_never_goes_back_and_ends_at_the_length() {
        // A segment count read after a join (one more place below it than the ranks say).
        let curve = CountCurve::of_shard(
            3,
            &[(0, 10.0), (1, 20.0), (2, 30.0)],
            &[(15.0, 2), (25.0, 2)],
        );
        let mut last = 0.0;
        for x in 0..40 {
            let c = curve.at(f64::from(x));
            assert!(c >= last, "{x}: {c} < {last}");
            last = c;
        }
        assert_eq!(curve.at(31.0), 3.0);
        assert_eq!(curve.at(10.0), 0.0);
        assert_eq!(CountCurve::default().at(5.0), 0.0);
        assert_eq!(
            ahead_in_others(&CountCurve::others(&curve, &curve), 25.0),
            0
        );
    }
}
