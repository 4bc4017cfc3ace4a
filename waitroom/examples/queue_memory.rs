//! Redis memory per queued buyer: fills one sale's queue through `wr_join` and prints bytes
//! per buyer, from `MEMORY USAGE` of the sale's waiting-room keys and from the growth of
//! `used_memory` in `INFO memory` (noisier when other clients use the same server).
//!
//! ```text
//! cargo run --release -p dropline-waitroom --example queue_memory -- [buyers] [pre-open|asleep]
//! ```
//!
//! `buyers` defaults to 1,000,000; `pre-open` fills the pre-queue (random draws) instead of the
//! open queue; `asleep` then lets every buyer go silent and has the reaper skip them all (moved
//! to `qskip`, door.md §6), to show a skipped place costs what a place in line does. Uses the Redis of the usual configuration (`DROPLINE_REDIS__URL`) under a fresh
//! key prefix, and deletes its keys at the end.

use std::time::Instant;

use dropline_core::clients::redis::Redis;
use dropline_core::ids::{SaleId, UserId};
use dropline_testkit::TestEnv;
use dropline_waitroom::queue::{JoinOptions, JoinOutcome, MAX_REAP_BATCH, WaitQueue};
use fred::prelude::*;
use futures_util::{StreamExt, stream};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let buyers: u64 = match args.next() {
        Some(n) => n.parse()?,
        None => 1_000_000,
    };
    let mode = args.next();
    let pre_open = mode.as_deref() == Some("pre-open");
    let asleep = mode.as_deref() == Some("asleep");
    let env = TestEnv::with_overrides(&[("REDIS__POOL_SIZE", "4")])?;
    let redis = Redis::connect(&env.config.redis).await?;
    let result = run(&redis, buyers, pre_open, asleep).await;
    redis.quit().await;
    env.cleanup().await?;
    result
}

async fn run(redis: &Redis, buyers: u64, pre_open: bool, asleep: bool) -> anyhow::Result<()> {
    let sale = SaleId::new_v7();
    let now_ms = {
        let t: Vec<i64> = redis
            .pool()
            .custom(fred::cmd!("TIME"), Vec::<String>::new())
            .await?;
        anyhow::ensure!(t.len() == 2, "TIME: {t:?}");
        t[0] * 1000 + t[1] / 1000
    };
    let opens_at = if pre_open {
        now_ms + 86_400_000
    } else {
        now_ms - 1_000
    };
    let cfg: Vec<(&str, String)> = vec![
        ("stock_total", "100".into()),
        ("opens_at", opens_at.to_string()),
        ("closes_at", "0".into()),
        ("per_user_limit", "1".into()),
        ("max_active", "0".into()),
        ("paused", "0".into()),
        ("closed", "0".into()),
    ];
    let _: () = redis.pool().hset(redis.sale_key(sale, "cfg"), cfg).await?;
    let _: () = redis
        .pool()
        .set(redis.sale_key(sale, "avail"), 100, None, None, false)
        .await?;

    let before = used_memory(redis).await?;
    let queue = WaitQueue::new(redis, sale);
    let options = JoinOptions {
        max_queue_length: 0,
        return_grace: std::time::Duration::from_secs(3_600),
        code_failures_per_hour: 10,
    };
    let started = Instant::now();
    let mut joined = 0u64;
    let mut joins = stream::iter(0..buyers)
        .map(|_| queue.join(UserId::new_v7(), &options))
        .buffer_unordered(512);
    while let Some(outcome) = joins.next().await {
        match outcome? {
            Some(JoinOutcome::Standing { new: true, .. }) => joined += 1,
            other => anyhow::bail!("unexpected join outcome: {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    if asleep {
        // Silence is judged to the second: after a second and a bit, everyone is silent for
        // longer than an abandon_after of 0, and well within the grace.
        tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
        let grace = std::time::Duration::from_secs(3_600);
        loop {
            let reaped = queue
                .reap(std::time::Duration::ZERO, grace, MAX_REAP_BATCH)
                .await?;
            if reaped.wrapped {
                anyhow::ensure!(reaped.queue_length == 0, "not all skipped: {reaped:?}");
                break;
            }
        }
    }
    let after = used_memory(redis).await?;

    let keys = queue.keys();
    let mut per_key = Vec::new();
    for key in [
        &keys.q, &keys.skip, &keys.adm, &keys.seq, &keys.wr, &keys.wt, &keys.wtc, &keys.wtp,
    ] {
        let bytes: Option<u64> = redis
            .pool()
            .custom(
                fred::cmd!("MEMORY"),
                vec![
                    "USAGE".to_owned(),
                    key.clone(),
                    "SAMPLES".into(),
                    "0".into(),
                ],
            )
            .await?;
        per_key.push((key.clone(), bytes.unwrap_or(0)));
    }
    let keys_total: u64 = per_key.iter().map(|(_, b)| b).sum();
    let n = joined as f64;
    println!(
        "{joined} buyers joined ({} queue{}) in {:.1} s ({:.0} joins/s)",
        if pre_open { "pre-open" } else { "open" },
        if asleep { ", then all skipped" } else { "" },
        elapsed.as_secs_f64(),
        n / elapsed.as_secs_f64()
    );
    for (key, bytes) in &per_key {
        println!("  MEMORY USAGE {key}: {bytes} bytes");
    }
    println!(
        "bytes per queued buyer: {:.1} (MEMORY USAGE of the waiting-room keys), {:.1} (used_memory growth)",
        keys_total as f64 / n,
        after.saturating_sub(before) as f64 / n
    );
    Ok(())
}

async fn used_memory(redis: &Redis) -> anyhow::Result<u64> {
    let info: String = redis
        .pool()
        .custom(fred::cmd!("INFO"), vec!["memory"])
        .await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("INFO memory has no used_memory"))
}
