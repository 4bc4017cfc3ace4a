//! Request coalescing ("single flight" inside one process): concurrent callers asking for the
//! same key share one load instead of each starting their own.
//!
//! Used where a stampede asks for the same thing at the same moment: the live view of a sale
//! (thousands of stock reads per second become one Redis round trip per batch) and cold cache
//! keys (one MySQL read however many callers miss at once).
//!
//! A caller joins only a load that is still in flight, never a finished one: the answer is at
//! most one load old, there is no TTL and nothing to invalidate. The load runs in its own task,
//! so a caller that hangs up does not cancel it for the others, and the task removes its entry
//! when it ends, even if every caller has gone.
//!
//! [`Fresh`] adds a short memory on top: a finished load's answer is served again for a fixed
//! time (about a second where it is used), so callers one after another, not only concurrent
//! ones, cost one load per key per that time. It is for answers that may be that old and that
//! a crowd or a repeating client asks for: a draw's public record and winners pages, the
//! admin's audit at a click.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

/// The load's task panicked or was cancelled (runtime shutting down); the text says which.
#[derive(Debug, Clone, thiserror::Error)]
#[error("coalesced load did not finish: {0}")]
pub struct Aborted(pub String);

/// One load in flight, awaited by every caller that joined it.
pub type Flight<V> = Shared<BoxFuture<'static, Result<V, Aborted>>>;

/// A map of in-flight loads keyed by `K`, each producing a `V` (usually a `Result`). Cheap to
/// clone; clones share the map.
pub struct Coalesce<K, V> {
    inflight: Arc<Mutex<HashMap<K, Flight<V>>>>,
}

impl<K, V> Clone for Coalesce<K, V> {
    fn clone(&self) -> Self {
        Self {
            inflight: Arc::clone(&self.inflight),
        }
    }
}

impl<K, V> Default for Coalesce<K, V> {
    fn default() -> Self {
        Self {
            inflight: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<K, V> std::fmt::Debug for Coalesce<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalesce").finish_non_exhaustive()
    }
}

impl<K, V> Coalesce<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new() -> Self {
        Self::default()
    }

    /// The result of the load of `key` in flight now, or of `load` started now if there is
    /// none. `load` is called only when this caller starts the flight.
    pub fn run<F, Fut>(&self, key: K, load: F) -> Flight<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let mut inflight = lock(&self.inflight);
        if let Some(flight) = inflight.get(&key) {
            return flight.clone();
        }
        let map = Arc::clone(&self.inflight);
        let task_key = key.clone();
        let fut = load();
        let task = tokio::spawn(async move {
            // Removed when the task ends, before the value is handed out (a caller arriving
            // after that starts a new load, and so sees anything written after this one
            // read), and also if the load panics.
            let _entry = Entry {
                map,
                key: Some(task_key),
            };
            fut.await
        });
        let flight: Flight<V> = async move { task.await.map_err(|e| Aborted(e.to_string())) }
            .boxed()
            .shared();
        inflight.insert(key, flight.clone());
        flight
    }

    /// Loads in flight now (for tests and metrics).
    pub fn in_flight(&self) -> usize {
        lock(&self.inflight).len()
    }
}

/// Answers loaded at most once per key per `ttl`: [`Coalesce`] for the loads in flight and a
/// bounded memory (least used evicted first) of the finished ones. Only answers the keep rule
/// accepts are remembered (by default every `Ok`); an `Err` is never kept, so a failed load is
/// retried by the next caller. Cheap to clone; clones share everything.
pub struct Fresh<K, V, E> {
    ttl: Duration,
    keep: fn(&V) -> bool,
    recent: Arc<quick_cache::sync::Cache<K, (Instant, V)>>,
    flights: Coalesce<K, Result<V, E>>,
}

impl<K, V, E> Clone for Fresh<K, V, E> {
    fn clone(&self) -> Self {
        Self {
            ttl: self.ttl,
            keep: self.keep,
            recent: Arc::clone(&self.recent),
            flights: self.flights.clone(),
        }
    }
}

impl<K, V, E> std::fmt::Debug for Fresh<K, V, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fresh")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<K, V, E> Fresh<K, V, E>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    /// Answers kept for `ttl`, for at most about `capacity` keys.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            keep: |_| true,
            recent: Arc::new(quick_cache::sync::Cache::new(capacity.max(1))),
            flights: Coalesce::new(),
        }
    }

    /// Remember only the answers `keep` accepts (e.g. a record that exists, so that one
    /// written a moment later is seen by the next caller).
    pub fn keeping(mut self, keep: fn(&V) -> bool) -> Self {
        self.keep = keep;
        self
    }

    /// The answer for `key`: from memory if one is younger than `ttl`, else from the load in
    /// flight for it, else from `load` started now (in its own task, so a caller that hangs up
    /// does not cancel it). `Err(Aborted)`: the load panicked or the runtime is shutting down.
    pub async fn get_or_load<F, Fut>(&self, key: K, load: F) -> Result<Result<V, E>, Aborted>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        if let Some((at, value)) = self.recent.get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(Ok(value));
        }
        let recent = Arc::clone(&self.recent);
        let keep = self.keep;
        let task_key = key.clone();
        self.flights
            .run(key, move || {
                let fut = load();
                async move {
                    let answer = fut.await;
                    if let Ok(value) = &answer
                        && keep(value)
                    {
                        recent.insert(task_key, (Instant::now(), value.clone()));
                    }
                    answer
                }
            })
            .await
    }
}

/// Removes its key from the map when dropped.
struct Entry<K: Eq + Hash, V> {
    map: Arc<Mutex<HashMap<K, Flight<V>>>>,
    key: Option<K>,
}

impl<K: Eq + Hash, V> Drop for Entry<K, V> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            lock(&self.map).remove(&key);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map inconsistent (one insert or one
    // remove), so keep using it.
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_load_and_later_ones_start_another() -> anyhow::Result<()>
    {
        let coalesce: Coalesce<u32, usize> = Coalesce::new();
        let loads = Arc::new(AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        let mut waiters = Vec::new();
        for _ in 0..50 {
            let loads = Arc::clone(&loads);
            let mut gate = gate.clone();
            waiters.push(tokio::spawn(coalesce.run(7, move || async move {
                let n = loads.fetch_add(1, Ordering::SeqCst) + 1;
                let _ = gate.wait_for(|open| *open).await;
                n
            })));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(coalesce.in_flight(), 1);
        release.send(true)?;
        for waiter in waiters {
            assert_eq!(waiter.await??, 1);
        }
        assert_eq!(coalesce.in_flight(), 0);
        // The flight is over: the next caller loads again.
        let loads2 = Arc::clone(&loads);
        let again = coalesce
            .run(7, move || async move {
                loads2.fetch_add(1, Ordering::SeqCst) + 1
            })
            .await?;
        assert_eq!(again, 2);
        Ok(())
    }

    #[tokio::test]
    async fn different_keys_do_not_share() -> anyhow::Result<()> {
        let coalesce: Coalesce<u32, u32> = Coalesce::new();
        let (a, b) = tokio::join!(
            coalesce.run(1, || async { 10 }),
            coalesce.run(2, || async { 20 })
        );
        assert_eq!((a?, b?), (10, 20));
        Ok(())
    }

    #[tokio::test]
    async fn a_caller_hanging_up_does_not_cancel_the_load() -> anyhow::Result<()> {
        let coalesce: Coalesce<u32, u32> = Coalesce::new();
        let done = Arc::new(AtomicUsize::new(0));
        let done2 = Arc::clone(&done);
        let first = coalesce.run(1, move || async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            done2.fetch_add(1, Ordering::SeqCst);
            5
        });
        // Poll once so it starts, then drop it.
        let _ = tokio::time::timeout(Duration::from_millis(1), first).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(done.load(Ordering::SeqCst), 1);
        assert_eq!(coalesce.in_flight(), 0);
        Ok(())
    }

    #[tokio::test]
    async fn fresh_serves_a_finished_answer_until_it_is_ttl_old() -> anyhow::Result<()> {
        let fresh: Fresh<u32, usize, String> = Fresh::new(Duration::from_millis(200), 16);
        let loads = Arc::new(AtomicUsize::new(0));
        let load = |loads: &Arc<AtomicUsize>| {
            let loads = Arc::clone(loads);
            move || async move { Ok(loads.fetch_add(1, Ordering::SeqCst) + 1) }
        };
        // One after another, not concurrent: the second and third are served from memory.
        for _ in 0..3 {
            assert_eq!(fresh.get_or_load(1, load(&loads)).await?, Ok(1));
        }
        assert_eq!(
            fresh.get_or_load(2, load(&loads)).await?,
            Ok(2),
            "keys apart"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(fresh.get_or_load(1, load(&loads)).await?, Ok(3), "ttl over");
        Ok(())
    }

    #[tokio::test]
    async fn fresh_never_keeps_an_error_nor_what_the_rule_refuses() -> anyhow::Result<()> {
        let fresh: Fresh<u32, Option<u32>, String> =
            Fresh::new(Duration::from_secs(60), 16).keeping(Option::is_some);
        let failed = fresh
            .get_or_load(1, || async { Err("down".to_owned()) })
            .await?;
        assert_eq!(failed, Err("down".to_owned()));
        assert_eq!(fresh.get_or_load(1, || async { Ok(None) }).await?, Ok(None));
        assert_eq!(
            fresh.get_or_load(1, || async { Ok(Some(7)) }).await?,
            Ok(Some(7)),
            "neither the error nor the refused None was kept"
        );
        assert_eq!(
            fresh.get_or_load(1, || async { Ok(Some(8)) }).await?,
            Ok(Some(7)),
            "a kept answer is served"
        );
        Ok(())
    }

    #[tokio::test]
    async fn fresh_concurrent_misses_share_one_load() -> anyhow::Result<()> {
        let fresh: Fresh<u32, usize, String> = Fresh::new(Duration::from_secs(60), 16);
        let loads = Arc::new(AtomicUsize::new(0));
        let calls = (0..20).map(|_| {
            let loads = Arc::clone(&loads);
            fresh.get_or_load(5, move || async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(loads.fetch_add(1, Ordering::SeqCst) + 1)
            })
        });
        for answer in futures_util::future::join_all(calls).await {
            assert_eq!(answer?, Ok(1));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_panicking_load_reaches_every_caller_as_aborted() {
        let coalesce: Coalesce<u32, u32> = Coalesce::new();
        let (a, b) = tokio::join!(
            coalesce.run(1, || async { panic!("boom") }),
            coalesce.run(1, || async { 1 })
        );
        assert!(a.is_err() && b.is_err());
        assert_eq!(
            coalesce.in_flight(),
            0,
            "a panicked load leaves no entry behind"
        );
        assert_eq!(coalesce.run(1, || async { 2 }).await.ok(), Some(2));
    }
}
