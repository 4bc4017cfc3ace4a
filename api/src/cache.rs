//! Look-aside cache in Redis for product details and the static part of sale details.
//!
//! A read checks Redis first; on a miss the value is loaded from MySQL and written back with a
//! TTL of `cache.ttl_seconds` ± `cache.jitter_percent` (random per write, so keys filled together
//! do not expire together). An id that does not exist is cached too, as JSON `null`, for a few
//! seconds, so a client hammering a bad id does not reach MySQL either.
//!
//! Hits are coalesced too: concurrent readers of one key in one process share one `GET`.
//!
//! **Single flight.** A cold key under a stampede (a sale page at opening time) is loaded once:
//! - in one process, concurrent misses on a key share one load (a map of in-flight
//!   futures, [`Coalesce`]; the load runs in its own task, so a client hanging up does not cancel
//!   it for the others, and the task removes its entry once the value is in Redis);
//! - across replicas, the loader first takes a short fill lock (`SET <key>:fill NX PX`). A
//!   replica that finds the lock taken polls the cache for a moment and falls back to MySQL
//!   only if no value arrives (the holder died or is stuck).
//!
//! Redis trouble never fails a read: the cache is skipped and MySQL answers.
//!
//! What is cached rarely changes, or is re-read from elsewhere: the live fields of a sale come
//! from its Redis state, and so do the creation fields a scheduled sale's `PATCH` changes
//! (stock, times, limits). What a `PATCH` changes in the cached part (a product's name and
//! price, a sale's notice or draw times) is invalidated after the commit and once more a moment
//! later (`admin::invalidate_again_later`), which removes what the classic look-aside race (a
//! slow loader writing an old value after an invalidation) could have left.
//!
//! Metrics: `dropline_cache_requests_total{kind,result="hit"|"miss"}` for every read,
//! `dropline_cache_loads_total{kind}` for every MySQL load, and
//! `dropline_cache_fill_waits_total{kind}` for every load that found another replica's fill
//! lock and waited for its value instead.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dropline_core::clients::redis::Redis;
use dropline_core::coalesce::Coalesce;
use dropline_core::config::CacheConfig;
use dropline_core::http::error::ApiError;
use dropline_core::ids::{ProductId, SaleId};
use dropline_core::lua::scripts::LEASE_RELEASE;
use fred::interfaces::KeysInterface;
use fred::types::{Expiration, SetOptions};
use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// How long a "does not exist" entry lives (at most the normal TTL).
const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// How long a fill lock lives if its holder never releases it.
const FILL_LOCK_TTL: Duration = Duration::from_secs(5);
/// How long a replica that lost the fill lock waits for the holder's value before loading itself.
const FILL_WAIT: Duration = Duration::from_secs(2);
/// How often it looks while waiting.
const FILL_POLL: Duration = Duration::from_millis(10);

/// What is cached; names the key space and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Product,
    Sale,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Product => "product",
            Self::Sale => "sale",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One cached value: its kind and its id, typed, so that a product id never names a sale's
/// entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Product(ProductId),
    Sale(SaleId),
}

impl Entry {
    pub fn kind(self) -> Kind {
        match self {
            Self::Product(_) => Kind::Product,
            Self::Sale(_) => Kind::Sale,
        }
    }

    /// The id's UUID (its text is the key's last part).
    pub fn id(self) -> Uuid {
        match self {
            Self::Product(id) => id.into_uuid(),
            Self::Sale(id) => id.into_uuid(),
        }
    }
}

/// The JSON of `Option<T>` as stored in Redis (`null`: does not exist).
type Outcome = Result<Arc<str>, ApiError>;

/// The cache; cheap to clone.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Redis,
    ttl_ms: u64,
    jitter_percent: u8,
    inflight: Coalesce<String, Outcome>,
    /// Cache reads in flight, shared by concurrent readers of the same key.
    reads: Coalesce<String, Option<Arc<str>>>,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("ttl_ms", &self.inner.ttl_ms)
            .field("jitter_percent", &self.inner.jitter_percent)
            .finish_non_exhaustive()
    }
}

impl Cache {
    pub fn new(redis: Redis, config: &CacheConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                redis,
                ttl_ms: config.ttl_seconds.saturating_mul(1000),
                jitter_percent: config.jitter_percent,
                inflight: Coalesce::new(),
                reads: Coalesce::new(),
            }),
        }
    }

    /// The Redis key of one cached value: `<prefix>:cache:<kind>:<id>`.
    pub fn key(&self, entry: Entry) -> String {
        let (kind, id) = (entry.kind(), entry.id());
        self.inner.redis.key(&format!("cache:{kind}:{id}"))
    }

    /// The cached value of `entry`, loading it with `load` (MySQL) on a miss. `Ok(None)`:
    /// it does not exist. `load` runs at most once per process per cold key, however many
    /// callers miss at once; its error reaches every caller that waited on it.
    pub async fn get_or_load<T, F, Fut>(&self, entry: Entry, load: F) -> Result<Option<T>, ApiError>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<T>, ApiError>> + Send + 'static,
    {
        let (kind, id) = (entry.kind(), entry.id());
        let key = self.key(entry);
        // Concurrent reads of one hot key (a product page at opening time) share one GET.
        let inner = Arc::clone(&self.inner);
        let read_key = key.clone();
        let raw = self
            .inner
            .reads
            .run(key.clone(), move || async move {
                inner.read_raw(&read_key, valid::<T>).await
            })
            .await
            .unwrap_or(None);
        if let Some(value) = raw.as_deref().and_then(decode::<T>) {
            count_request(kind, "hit");
            return Ok(value);
        }
        count_request(kind, "miss");
        let json = self.flight(kind, key, load).await?;
        decode::<T>(&json).ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!(
                "the {kind} loaded for {id} does not decode"
            ))
        })
    }

    /// Drops the cached value of `entry` (after an admin write). A Redis failure is logged,
    /// not returned: the write it follows has happened, and cached values expire anyway.
    pub async fn invalidate(&self, entry: Entry) {
        let key = self.key(entry);
        if let Err(error) = self.inner.redis.pool().del::<i64, _>(&key).await {
            tracing::warn!(%error, %key, "could not invalidate a cache entry; it expires with its TTL");
        }
    }

    /// The in-flight load of `key`, started now if there is none.
    async fn flight<T, F, Fut>(&self, kind: Kind, key: String, load: F) -> Outcome
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<T>, ApiError>> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let task_key = key.clone();
        // The entry is removed only after the value is in Redis: a caller arriving in between
        // either joins this flight or hits the cache, never starts a second load.
        self.inner
            .inflight
            .run(key, move || async move {
                inner.fill(kind, &task_key, load, valid::<T>).await
            })
            .await
            .unwrap_or_else(|aborted| Err(ApiError::internal(aborted)))
    }
}

impl Inner {
    /// The cached JSON, if present and valid. Redis errors count as a miss.
    async fn read_raw(&self, key: &str, valid: fn(&str) -> bool) -> Option<Arc<str>> {
        match self.redis.pool().get::<Option<String>, _>(key).await {
            Ok(Some(raw)) if valid(&raw) => Some(raw.into()),
            Ok(Some(_)) => {
                // Written by another version of the code: reload and overwrite.
                tracing::debug!(%key, "cached value does not decode; reloading");
                None
            }
            Ok(None) => None,
            Err(error) => {
                // Debug only: during an outage this fires on every read; the fill path warns.
                tracing::debug!(%error, %key, "cache read failed; reading MySQL");
                None
            }
        }
    }

    /// One load under the cross-replica fill lock: the body of a flight.
    async fn fill<T, F, Fut>(
        &self,
        kind: Kind,
        key: &str,
        load: F,
        valid: fn(&str) -> bool,
    ) -> Outcome
    where
        T: Serialize,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, ApiError>>,
    {
        let lock = format!("{key}:fill");
        let token = Uuid::new_v4().to_string();
        let locked = self
            .redis
            .pool()
            .set::<Option<String>, _, _>(
                &lock,
                token.as_str(),
                Some(Expiration::PX(FILL_LOCK_TTL.as_millis() as i64)),
                Some(SetOptions::NX),
                false,
            )
            .await;
        match locked {
            Ok(Some(_)) => {
                // Another replica may have filled the key between our miss and our lock.
                let outcome = match self.read_raw(key, valid).await {
                    Some(raw) => Ok(raw),
                    None => self.load_and_store(kind, key, load).await,
                };
                self.unlock(&lock, &token).await;
                outcome
            }
            Ok(None) => {
                // Another replica is loading: wait for its value rather than load again.
                metrics::counter!("dropline_cache_fill_waits_total", "kind" => kind.as_str())
                    .increment(1);
                let deadline = tokio::time::Instant::now() + FILL_WAIT;
                while tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(FILL_POLL).await;
                    if let Some(raw) = self.read_raw(key, valid).await {
                        return Ok(raw);
                    }
                }
                tracing::warn!(%key, "no value from the replica holding the fill lock; loading");
                self.load_and_store(kind, key, load).await
            }
            Err(error) => {
                tracing::warn!(%error, %key, "cache fill lock unavailable; loading without it");
                self.load_and_store(kind, key, load).await
            }
        }
    }

    async fn load_and_store<T, F, Fut>(&self, kind: Kind, key: &str, load: F) -> Outcome
    where
        T: Serialize,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, ApiError>>,
    {
        metrics::counter!("dropline_cache_loads_total", "kind" => kind.as_str()).increment(1);
        let value = load().await?;
        let json: Arc<str> = serde_json::to_string(&value)
            .map_err(ApiError::internal)?
            .into();
        let ttl = if value.is_some() {
            self.ttl()
        } else {
            NEGATIVE_TTL.min(Duration::from_millis(self.ttl_ms))
        };
        let written = self
            .redis
            .pool()
            .set::<(), _, _>(
                key,
                json.as_ref(),
                Some(Expiration::PX(ttl.as_millis().max(1) as i64)),
                None,
                false,
            )
            .await;
        if let Err(error) = written {
            tracing::warn!(%error, %key, "cache write failed");
        }
        Ok(json)
    }

    async fn unlock(&self, lock: &str, token: &str) {
        // Compare-and-delete: a lock that expired and was taken by another replica is not ours.
        let released = LEASE_RELEASE
            .run::<i64>(&self.redis, vec![lock.to_owned()], vec![token.to_owned()])
            .await;
        if let Err(error) = released {
            tracing::debug!(%error, %lock, "could not release the cache fill lock; it expires");
        }
    }

    /// `ttl_seconds` ± up to `jitter_percent`, drawn per write.
    fn ttl(&self) -> Duration {
        let spread = self.ttl_ms * u64::from(self.jitter_percent) / 100;
        let ms = if spread == 0 {
            self.ttl_ms
        } else {
            rand::rng().random_range(self.ttl_ms - spread..=self.ttl_ms + spread)
        };
        Duration::from_millis(ms.max(1))
    }
}

fn decode<T: DeserializeOwned>(raw: &str) -> Option<Option<T>> {
    serde_json::from_str::<Option<T>>(raw).ok()
}

fn valid<T: DeserializeOwned>(raw: &str) -> bool {
    decode::<T>(raw).is_some()
}

fn count_request(kind: Kind, result: &'static str) {
    metrics::counter!("dropline_cache_requests_total", "kind" => kind.as_str(), "result" => result)
        .increment(1);
}
