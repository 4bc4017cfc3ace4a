//! Concurrent line requests of one sale answered together ("smart batching"): status polls and
//! joins.
//!
//! A request queues its ask; one task per sale and kind takes everything queued (up to the
//! kind's [`Kind::MAX`]) and answers it with one script call (`wr_status.lua`, `wr_join.lua`),
//! which handles the asks in order as if each were its own call at the same instant. A lone
//! request goes out at once, so a quiet sale pays no delay; under load a request waits at most
//! for the batch in flight, and the Redis round trip, the script start, the reads every ask
//! shares and the system calls are paid once per batch instead of once per request. A sale whose
//! line is spread over shards also waits a little between calls ([`pause`]), so that each
//! shard's call carries about as many asks as one slot's would. While
//! Redis hangs a request waits at most [`Outage::bound`], and a sale's queue never grows past
//! [`QUEUE`]: past it the request is answered 503 at once. Asks whose caller already hung up
//! (it had its 503) are dropped before the batch goes out: such a caller was answered nothing,
//! so nothing it was told is undone.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dropline_core::clients::redis::Redis;
use dropline_core::http::error::ApiError;
use dropline_core::ids::{SaleId, UserId};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::Outage;
use crate::queue::{
    JoinAsk, JoinOptions, JoinOutcome, MAX_JOIN_BATCH, MAX_STATUS_BATCH, Status, WaitQueue,
};

/// Asks a sale may have queued, per kind. A full queue means Redis is slow or down (a healthy
/// batcher drains hundreds of asks per call in a few milliseconds): the next ask is answered
/// 503 at once rather than wait for room.
pub(super) const QUEUE: usize = 8_192;

/// One kind of batched request.
pub(super) trait Kind: Send + Sync + 'static {
    type Ask: Send + 'static;
    type Answer: Send + 'static;
    /// Most asks in one call.
    const MAX: usize;
    /// What the call does, for the 503's log line.
    const WHAT: &'static str;
    /// The histogram of batch sizes.
    const METRIC: &'static str;

    /// Answers `asks` in order with one call: the outer error is the batch's (Redis, a
    /// malformed reply), an inner one an ask's own.
    fn run(
        &self,
        queue: &WaitQueue,
        asks: &[Self::Ask],
    ) -> impl Future<Output = anyhow::Result<Vec<anyhow::Result<Self::Answer>>>> + Send;
}

/// An ask waiting for its batch, where its answer goes, and when its caller's bound
/// ([`Outage::bound`] from its arrival) runs out.
type Pending<K> = (
    <K as Kind>::Ask,
    oneshot::Sender<Result<<K as Kind>::Answer, ApiError>>,
    Instant,
);

/// The batchers of one kind, one per sale that has been asked about.
pub(super) struct Batches<K: Kind> {
    redis: Redis,
    kind: Arc<K>,
    outage: Outage,
    queues: Mutex<HashMap<SaleId, mpsc::Sender<Pending<K>>>>,
}

impl<K: Kind> std::fmt::Debug for Batches<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches")
            .field("kind", &K::WHAT)
            .finish_non_exhaustive()
    }
}

impl<K: Kind> Batches<K> {
    pub(super) fn new(redis: Redis, kind: K, outage: Outage) -> Self {
        Self {
            redis,
            kind: Arc::new(kind),
            outage,
            queues: Mutex::new(HashMap::new()),
        }
    }

    /// The answer to `ask` about `sale`, within [`Outage::bound`] (503 `unavailable` past it).
    ///
    /// The bound is kept by the batching task, not by a timer per ask (a timer entry armed and
    /// cancelled on every poll): asks are answered in arrival order, each batch's Redis call
    /// ends by the deadline of its oldest ask, and an ask whose deadline passed while an
    /// earlier batch hung is answered 503 without being sent. So no ask waits past its own
    /// deadline by more than the batching task's scheduling.
    pub(super) async fn ask(&self, sale: SaleId, ask: K::Ask) -> Result<K::Answer, ApiError> {
        let (answer, answered) = oneshot::channel();
        let deadline = Instant::now() + self.outage.bound;
        {
            // The queue has room unless Redis is slow or down: hand the ask over under the
            // lock, without cloning the sender (two shared counters touched per request).
            let mut queues = match self.queues.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            let queue = queues.entry(sale).or_insert_with(|| self.start(sale));
            match queue.try_send((ask, answer, deadline)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => return Err(self.outage.answer()),
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    return Err(ApiError::internal(anyhow::anyhow!(
                        "the batcher of {sale} ({}) stopped",
                        K::WHAT
                    )));
                }
            }
        }
        match answered.await {
            Ok(answer) => answer,
            Err(_) => Err(ApiError::internal(anyhow::anyhow!(
                "the batcher of {sale} ({}) dropped a request",
                K::WHAT
            ))),
        }
    }

    /// Starts `sale`'s batching task and returns its queue. Lives as long as this edge (sales
    /// are few, and only armed sales' askers reach here).
    fn start(&self, sale: SaleId) -> mpsc::Sender<Pending<K>> {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(drain(
            Arc::clone(&self.kind),
            WaitQueue::new(&self.redis, sale),
            self.outage,
            rx,
        ));
        tx
    }
}

/// The longest a spread sale's batcher waits between two calls ([`pause`]).
pub(super) const SPREAD_PAUSE_MAX: Duration = Duration::from_millis(2);

/// How long a batcher waits, after a call that took `took`, before it takes its next batch:
/// `(shards - 1) x took`, at most [`SPREAD_PAUSE_MAX`]; none for a line on one slot, and none
/// while `queued` asks already make a full batch of `max`.
///
/// Why a spread line waits (issue #22 §2): its batch goes out as one call per line shard, each
/// with that shard's share of the asks. Left alone, a batcher's cycle lasts one call, so each
/// shard's primary gets as many calls as one slot's would, each with a 1/L share of the asks,
/// and the part of a call that does not depend on its asks (the script's start, the clock, the
/// published fields, the reply's header, the system calls) stays whole on every primary: the
/// per-shard Redis CPU a poll then falls far less than 1/L (0.50 with three shards,
/// BENCHMARKS.md "line-spread"). A cycle L times as long gives each shard's call about as
/// many asks as one slot's, in the Redis a spread line binds on. The cost is a few
/// milliseconds on a poll whose buyer comes back in seconds, or on a join. A lone ask after a
/// quiet spell goes at once (the wait runs from the call before it); a full queue goes at
/// once, so the pause never caps how many asks a batcher answers a second.
pub(super) fn pause(shards: u16, took: Duration, queued: usize, max: usize) -> Duration {
    if shards <= 1 || queued >= max {
        return Duration::ZERO;
    }
    took.saturating_mul(u32::from(shards - 1))
        .min(SPREAD_PAUSE_MAX)
}

/// One sale's batching loop: ends when the edge (every sender) is gone.
async fn drain<K: Kind>(
    kind: Arc<K>,
    queue: WaitQueue,
    outage: Outage,
    mut rx: mpsc::Receiver<Pending<K>>,
) {
    let mut batch: Vec<Pending<K>> = Vec::with_capacity(K::MAX);
    let mut asks: Vec<K::Ask> = Vec::with_capacity(K::MAX);
    let mut answers = Vec::with_capacity(K::MAX);
    while rx.recv_many(&mut batch, K::MAX).await > 0 {
        let now = Instant::now();
        // The oldest ask sent comes first (the queue is in arrival order): its deadline ends
        // the batch's call.
        let mut until = None;
        for (ask, answer, deadline) in batch.drain(..) {
            if answer.is_closed() {
                // The caller hung up: not sent.
                continue;
            }
            if deadline <= now {
                // Its bound ran out behind a batch that hung on Redis (which logged it).
                let _ = answer.send(Err(outage.answer()));
                continue;
            }
            until.get_or_insert(deadline);
            asks.push(ask);
            answers.push(answer);
        }
        let Some(until) = until else {
            continue;
        };
        metrics::histogram!(K::METRIC).record(asks.len() as f64);
        let started = Instant::now();
        match outage
            .run_until(until, K::WHAT, kind.run(&queue, &asks))
            .await
        {
            Ok(results) => {
                for (answer, result) in answers.drain(..).zip(results) {
                    // The caller may have hung up; its request still counted.
                    let _ = answer.send(result.map_err(ApiError::internal));
                }
            }
            Err(error) => {
                for answer in answers.drain(..) {
                    let _ = answer.send(Err(error.clone()));
                }
            }
        }
        // A reply shorter than the batch (never: the queue checks the count) leaves no
        // caller waiting past the bound either: the senders are dropped here.
        answers.clear();
        asks.clear();
        let wait = pause(queue.spread(), started.elapsed(), rx.len(), K::MAX);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Status polls: where each user stands (`None`: the sale is not armed).
#[derive(Debug)]
pub(super) struct Polls {
    pub(super) return_grace: Duration,
}

impl Kind for Polls {
    type Ask = UserId;
    type Answer = Option<Status>;
    const MAX: usize = MAX_STATUS_BATCH;
    const WHAT: &'static str = "reading places in line";
    const METRIC: &'static str = "dropline_waitroom_status_batch_size";

    async fn run(
        &self,
        queue: &WaitQueue,
        users: &[UserId],
    ) -> anyhow::Result<Vec<anyhow::Result<Option<Status>>>> {
        let answers = queue.status_many(users, self.return_grace).await?;
        Ok(answers.into_iter().map(Ok).collect())
    }
}

/// Joins: each user's place, new or kept, or why a new one was refused (`None`: the sale is
/// not armed).
#[derive(Debug)]
pub(super) struct Joins {
    pub(super) options: JoinOptions,
}

impl Kind for Joins {
    type Ask = JoinAsk;
    type Answer = Option<JoinOutcome>;
    const MAX: usize = MAX_JOIN_BATCH;
    const WHAT: &'static str = "joining the line";
    const METRIC: &'static str = "dropline_waitroom_join_batch_size";

    async fn run(
        &self,
        queue: &WaitQueue,
        asks: &[JoinAsk],
    ) -> anyhow::Result<Vec<anyhow::Result<Option<JoinOutcome>>>> {
        queue.join_many(asks, &self.options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_line_on_one_slot_never_waits() {
        assert_eq!(pause(1, MS, 0, 256), Duration::ZERO);
        assert_eq!(pause(0, MS, 0, 256), Duration::ZERO);
    }

    #[test]
    fn a_spread_line_waits_a_call_per_other_shard_within_the_bound() {
        let took = Duration::from_micros(300);
        assert_eq!(pause(2, took, 0, 256), took);
        assert_eq!(pause(3, took, 10, 256), took * 2);
        assert_eq!(pause(3, 5 * MS, 0, 256), SPREAD_PAUSE_MAX);
        assert_eq!(pause(64, took, 0, 256), SPREAD_PAUSE_MAX);
        // A call that hung (the outage bound) does not overflow.
        assert_eq!(pause(u16::MAX, Duration::MAX, 0, 256), SPREAD_PAUSE_MAX);
    }

    #[test]
    fn a_full_queue_goes_at_once() {
        assert_eq!(pause(3, MS, 256, 256), Duration::ZERO);
        assert_eq!(pause(3, MS, 8_192, 256), Duration::ZERO);
        assert_eq!(pause(3, MS, 255, 256), 2 * MS);
    }
}
