//! Refused joins by reason, for the post-sale report (issue #24).
//!
//! Refusals happen in this process (a rate limit) or come back from the join script (queue
//! full, proof of work, access codes). Counting each in Redis would give a bot flood one Redis
//! write per refused request, the very cost the refusal saves; so they are counted here, in
//! memory, per sale, and a task adds the deltas to the sale's report hash (`rep`, fields
//! `r:<reason>`) once a second: one pipelined `HINCRBY` per sale and reason that moved,
//! whatever the flood's rate. A process that dies loses at most its last second of counts.
//!
//! `pow_required` is not a refusal here: it is how a proof-of-work join starts (the page asks
//! for a challenge and joins again). `pow` counts challenges that failed (invalid, expired,
//! spent), `access_code` codes refused (invalid, used, required).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use fred::interfaces::HashesInterface;

use dropline_core::clients::redis::Redis;
use dropline_core::ids::SaleId;
use dropline_core::sale::keys::SaleKeys;

/// Why a join was refused, as the report names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    RateLimited,
    QueueFull,
    Pow,
    AccessCode,
}

impl Reason {
    const ALL: [Reason; 4] = [
        Reason::RateLimited,
        Reason::QueueFull,
        Reason::Pow,
        Reason::AccessCode,
    ];

    /// The `rep` field this reason is counted in.
    pub fn field(self) -> &'static str {
        match self {
            Reason::RateLimited => "r:rate_limited",
            Reason::QueueFull => "r:queue_full",
            Reason::Pow => "r:pow",
            Reason::AccessCode => "r:access_code",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

type Counts = Mutex<HashMap<SaleId, [u64; 4]>>;

/// The process's refusal counts, flushed to Redis once a second.
#[derive(Debug)]
pub struct Refusals {
    redis: Redis,
    counts: Arc<Counts>,
    flusher: OnceLock<()>,
}

/// How often the counts go to Redis.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

impl Refusals {
    pub fn new(redis: Redis) -> Self {
        Self {
            redis,
            counts: Arc::new(Mutex::new(HashMap::new())),
            flusher: OnceLock::new(),
        }
    }

    /// Counts one refusal (a map update under a lock held for nanoseconds; no Redis call).
    pub fn count(&self, sale: SaleId, reason: Reason) {
        self.flusher.get_or_init(|| {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(flush_loop(self.redis.clone(), Arc::downgrade(&self.counts)));
            }
        });
        let mut counts = match self.counts.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        counts.entry(sale).or_default()[reason.index()] += 1;
    }
}

/// Once a second, takes the counts and adds them to each sale's `rep`; ends with the edge.
/// Counts a failed write could not deliver are put back for the next round.
async fn flush_loop(redis: Redis, counts: Weak<Counts>) {
    let mut every = tokio::time::interval(FLUSH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(counts) = counts.upgrade() else {
            return;
        };
        let taken = {
            let mut guard = match counts.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            std::mem::take(&mut *guard)
        };
        if taken.is_empty() {
            continue;
        }
        if let Err(error) = flush(&redis, &taken).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "writing refusal counts to Redis"
            );
            let mut guard = match counts.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            for (sale, n) in taken {
                let entry = guard.entry(sale).or_default();
                for (slot, add) in entry.iter_mut().zip(n) {
                    *slot += add;
                }
            }
        }
    }
}

async fn flush(redis: &Redis, taken: &HashMap<SaleId, [u64; 4]>) -> anyhow::Result<()> {
    let pipeline = redis.pool().next().pipeline();
    for (sale, n) in taken {
        let key = SaleKeys::new(redis, *sale).report();
        for reason in Reason::ALL {
            let add = n[reason.index()];
            if add > 0 {
                let () = pipeline
                    .hincrby(&key, reason.field(), i64::try_from(add).unwrap_or(i64::MAX))
                    .await?;
            }
        }
    }
    let _: Vec<fred::types::Value> = pipeline.all().await?;
    Ok(())
}
