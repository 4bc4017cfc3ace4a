//! The sales the expiry worker looks after: every armed sale, and every sale that still has
//! live orders or unrecorded outbox entries after it left the admitter's index.
//!
//! The admitter drops a sale from `<prefix>:sales` once it is closed and its line is empty,
//! which can be before its last holds end and before the recorder has copied its last
//! arrows. So the sales watched are a set of their own, `<prefix>:expiry:sales`
//! ([`sale::watched_key`]): a sale seen in the index is added here, the admitter adds each sale
//! it takes out of the index ([`sale::retire`], so a sale no worker saw while it was indexed is
//! watched too), and one no longer indexed is removed only when its `holds` zset and its
//! `events` stream are both empty. Every expiry worker process shares the set.

use std::collections::HashSet;

use anyhow::Context;
use dropline_core::clients::redis::Redis;
use dropline_core::ids::SaleId;
use dropline_core::orders::Orders;
use dropline_core::sale;
use fred::interfaces::{KeysInterface, SetsInterface, SortedSetsInterface, StreamsInterface};

/// The shared set of sales with expiry or recording work.
#[derive(Debug, Clone)]
pub struct Sales {
    redis: Redis,
    key: String,
}

impl Sales {
    pub fn new(redis: &Redis) -> Self {
        Self {
            key: sale::watched_key(redis),
            redis: redis.clone(),
        }
    }

    /// The sales to look after now (indexed ones, then the rest), updating the shared set.
    pub async fn current(&self) -> anyhow::Result<Vec<SaleId>> {
        let indexed = sale::indexed(&self.redis).await?;
        let pool = self.redis.pool();
        if !indexed.is_empty() {
            let members: Vec<String> = indexed.iter().map(SaleId::to_string).collect();
            let _: i64 = pool
                .sadd(self.key.as_str(), members)
                .await
                .context("adding indexed sales to the expiry set")?;
        }
        let tracked: Vec<String> = pool
            .smembers(self.key.as_str())
            .await
            .context("reading the expiry set")?;
        let seen: HashSet<SaleId> = indexed.iter().copied().collect();
        let mut sales = indexed;
        for member in tracked {
            let Ok(id) = SaleId::parse_str(&member) else {
                tracing::warn!(member = %member, "dropping an expiry set entry that is not a sale id");
                let _: i64 = pool.srem(self.key.as_str(), member).await?;
                continue;
            };
            if seen.contains(&id) {
                continue;
            }
            if self.drained(id).await? {
                tracing::info!(sale = %id, "sale out of the index with nothing live or unrecorded: no longer watched");
                let _: i64 = pool
                    .srem(self.key.as_str(), member)
                    .await
                    .context("removing a drained sale from the expiry set")?;
            } else {
                sales.push(id);
            }
        }
        Ok(sales)
    }

    /// No live order and no outbox entry left.
    async fn drained(&self, sale: SaleId) -> anyhow::Result<bool> {
        let keys = Orders::new(&self.redis, sale).keys().clone();
        let pool = self.redis.pool();
        let live: i64 = pool
            .zcard(keys.holds.as_str())
            .await
            .with_context(|| format!("counting live orders of sale {sale}"))?;
        if live > 0 {
            return Ok(false);
        }
        let exists: i64 = pool.exists(keys.events.as_str()).await?;
        if exists == 0 {
            return Ok(true);
        }
        let entries: i64 = pool
            .xlen(keys.events.as_str())
            .await
            .with_context(|| format!("counting outbox entries of sale {sale}"))?;
        Ok(entries == 0)
    }
}
