//! The reaper's pass over a spread line's shards (README "A line that outgrows one Redis: the
//! design", "Abandonment and returns": each shard's own). `lua/wr_reap.lua` runs on each
//! shard's own keys, so a reap touches one shard per call, as on a sale's own line; the counts
//! are kept in each shard's `lmeta` and folded into the sale's `wr` counters
//! ([`super::tick::fold`]), where `wr_stats.lua` and the report read them.

use anyhow::Context;
use dropline_core::clients::redis::Redis;
use dropline_core::sale::keys::{LineShards, SaleKeys};
use fred::interfaces::HashesInterface;
use futures_util::future::try_join_all;
use std::time::Duration;

use crate::queue::{ReapOutcome, reap_keys};

/// One batch of `wr_reap.lua` on every line shard (`q`, its `ladm` copy, `lmeta`, `skip`,
/// `lwt`): copies lapsed past their deadline are dropped, silent places skipped, places silent
/// past `return_grace` removed (with their wait for a first ETA). The outage credit's `resumed_at` is the sale's: it is copied into
/// each shard's `lmeta` first, so nobody is skipped while the credit runs. Returns the sums
/// (`wrapped` when every shard's walk came round).
pub async fn reap(
    redis: &Redis,
    sale: &SaleKeys,
    line: &LineShards,
    abandon_after: Duration,
    return_grace: Duration,
    batch: u32,
) -> anyhow::Result<ReapOutcome> {
    let resumed: Option<String> = redis
        .pool()
        .hget(sale.room(), "resumed_at")
        .await
        .context("reading the sale's outage credit")?;
    let outcomes = try_join_all(line.all().iter().map(|keys| {
        let resumed = resumed.as_deref();
        async move {
            if let Some(at) = resumed {
                let () = redis
                    .pool()
                    .hset(&keys.meta, ("resumed_at", at))
                    .await
                    .with_context(|| format!("copying the outage credit to {}", keys.meta))?;
            }
            let shard = [
                &keys.q,
                &keys.outbox,
                &keys.meta,
                &keys.skip,
                &keys.eta_wait,
            ]
            .map(String::as_str);
            reap_keys(redis, &shard, abandon_after, return_grace, batch)
                .await
                .with_context(|| format!("reaping the line shard {}", keys.q))
        }
    }))
    .await?;
    let mut sum = ReapOutcome {
        expired: 0,
        skipped: 0,
        abandoned: 0,
        queue_length: 0,
        skipped_length: 0,
        wrapped: true,
    };
    for o in &outcomes {
        sum.expired += o.expired;
        sum.skipped += o.skipped;
        sum.abandoned += o.abandoned;
        sum.queue_length += o.queue_length;
        sum.skipped_length += o.skipped_length;
        sum.wrapped &= o.wrapped;
    }
    // wr_reap.lua counted into each shard's lmeta: those counts go to the sale's wr.
    super::tick::fold(redis, sale, line).await?;
    // The skipped places of the whole line, for /stats and the control room (line_counts in
    // lua/lib/prelude.lua); the waiting ones are the tick's line_length.
    let () = redis
        .pool()
        .hset(sale.room(), ("line_skipped", sum.skipped_length))
        .await
        .context("writing a spread line's skipped places")?;
    Ok(sum)
}
