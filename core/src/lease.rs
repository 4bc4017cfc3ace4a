//! A leader lease in Redis: one holder at a time, lost by expiry when the holder dies.
//!
//! The holder renews well inside the lease length; if it stops (crash, partition), the key
//! expires and another candidate takes over within one lease length plus one renew interval.

use std::time::Duration;

use crate::clients::redis::Redis;
use crate::lua::scripts::{LEASE_ACQUIRE, LEASE_RELEASE};

/// One candidate for one lease key.
#[derive(Debug, Clone)]
pub struct Lease {
    redis: Redis,
    key: String,
    holder: String,
    length: Duration,
}

impl Lease {
    /// `key` is a full Redis key; `holder` must be unique per candidate process and role.
    pub fn new(redis: Redis, key: String, holder: String, length: Duration) -> Self {
        Self {
            redis,
            key,
            holder,
            length,
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes the lease if free, renews it if ours; `Ok(true)` when we hold it afterwards.
    pub async fn try_acquire(&self) -> anyhow::Result<bool> {
        let ms = self.length.as_millis().max(1) as u64;
        let held: i64 = LEASE_ACQUIRE
            .run(
                &self.redis,
                vec![self.key.clone()],
                vec![self.holder.clone(), ms.to_string()],
            )
            .await?;
        Ok(held == 1)
    }

    /// Gives the lease up if we hold it; `Ok(true)` when it was ours.
    pub async fn release(&self) -> anyhow::Result<bool> {
        let released: i64 = LEASE_RELEASE
            .run(
                &self.redis,
                vec![self.key.clone()],
                vec![self.holder.clone()],
            )
            .await?;
        Ok(released == 1)
    }
}
