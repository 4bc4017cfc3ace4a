//! The order outbox: each sale's `events` stream, which every order script appends to in the
//! same atomic step as the arrow it makes (`lua/reserve.lua` documents the entry layout), read
//! by the workers' recorder with a Redis consumer group so that MySQL sees every state change
//! at least once.
//!
//! Delivery is at least once: an entry is acknowledged and deleted only after MySQL has it
//! ([`Outbox::done`]); entries a dead reader held are taken over after [`CLAIM_IDLE`]
//! ([`Outbox::claim_stale`]). Applying an entry twice is harmless ([`crate::orders::ledger::record`]
//! only moves a row forward).

use std::time::Duration;

use crate::ids::{OrderId, SaleId, UserId};
use anyhow::Context;
use fred::interfaces::StreamsInterface;
use fred::types::Value;

use crate::clients::redis::Redis;
use crate::orders::OrderState;
use crate::orders::ledger::OrderRow;
use crate::sale::from_ms;

/// The consumer group of the recorder.
pub const GROUP: &str = "recorder";
/// An entry a reader has held this long without acknowledging is taken over by another.
pub const CLAIM_IDLE: Duration = Duration::from_secs(30);

/// One sale's outbox.
#[derive(Debug, Clone)]
pub struct Outbox {
    redis: Redis,
    sale: SaleId,
    key: String,
}

/// An entry read: its stream id and the order row it carries (`None` when malformed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub row: Option<OrderRow>,
}

impl Outbox {
    pub fn new(redis: &Redis, sale: SaleId) -> Self {
        Self {
            key: crate::sale::keys::SaleKeys::new(redis, sale).events(),
            redis: redis.clone(),
            sale,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Creates the consumer group from the stream's first entry (and the stream if missing);
    /// an existing group is left as it is.
    pub async fn ensure_group(&self) -> anyhow::Result<()> {
        let created: Result<Value, fred::error::Error> = self
            .redis
            .pool()
            .xgroup_create(self.key.as_str(), GROUP, "0", true)
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.details().starts_with("BUSYGROUP") => Ok(()),
            Err(e) => {
                Err(e).with_context(|| format!("creating the outbox group of sale {}", self.sale))
            }
        }
    }

    /// Up to `count` entries never delivered to the group, for `consumer`. Does not block.
    pub async fn read(&self, consumer: &str, count: u64) -> anyhow::Result<Vec<Entry>> {
        let reply: Value = self
            .redis
            .pool()
            .xreadgroup(
                GROUP,
                consumer,
                Some(count),
                None,
                false,
                self.key.as_str(),
                ">",
            )
            .await
            .with_context(|| format!("reading the outbox of sale {}", self.sale))?;
        // [[key, [[id, [field, value, ...]], ...]]], or nil when there is nothing new.
        let streams = match reply {
            Value::Array(streams) => streams,
            Value::Map(map) => map
                .inner()
                .into_iter()
                .map(|(k, v)| Value::Array(vec![k.into(), v]))
                .collect(),
            Value::Null => return Ok(Vec::new()),
            other => anyhow::bail!("XREADGROUP: unexpected reply {other:?}"),
        };
        let mut entries = Vec::new();
        for stream in streams {
            let Value::Array(mut parts) = stream else {
                anyhow::bail!("XREADGROUP: a stream reply is not an array");
            };
            let Some(items) = parts.pop() else { continue };
            entries.extend(self.entries(items)?);
        }
        Ok(entries)
    }

    /// Takes over up to `count` entries another reader has held longer than [`CLAIM_IDLE`].
    pub async fn claim_stale(&self, consumer: &str, count: u64) -> anyhow::Result<Vec<Entry>> {
        self.claim_idle(consumer, count, CLAIM_IDLE).await
    }

    /// As [`Outbox::claim_stale`], for entries held longer than `idle`. Pending entries whose
    /// stream entry is gone (deleted by a [`Outbox::done`] whose acknowledgement was lost) are
    /// not returned: `XAUTOCLAIM` drops them from the pending list.
    pub async fn claim_idle(
        &self,
        consumer: &str,
        count: u64,
        idle: Duration,
    ) -> anyhow::Result<Vec<Entry>> {
        let reply: Value = self
            .redis
            .pool()
            .xautoclaim(
                self.key.as_str(),
                GROUP,
                consumer,
                u64::try_from(idle.as_millis()).unwrap_or(u64::MAX),
                "0-0",
                Some(count),
                false,
            )
            .await
            .with_context(|| format!("claiming stale outbox entries of sale {}", self.sale))?;
        // [next-start, [[id, fields], ...], (deleted ids)]
        let Value::Array(mut parts) = reply else {
            anyhow::bail!("XAUTOCLAIM: unexpected reply");
        };
        anyhow::ensure!(parts.len() >= 2, "XAUTOCLAIM: short reply");
        let items = parts.swap_remove(1);
        self.entries(items)
    }

    /// Deletes and then acknowledges entries MySQL has.
    ///
    /// In that order because a command can fail on the client (a timeout: Redis paused, or a
    /// failover) and still run on the server afterwards. Acknowledged first, an entry whose
    /// `XDEL` then failed stayed in the stream for good, out of every pending list, so nothing
    /// would ever look at it again and the sale's outbox never drained (a chaos run's 3 s Redis
    /// stall did this to 2 entries). Deleted first, whatever half of the pair is lost heals: an
    /// entry still in the stream is still pending and is claimed again after [`CLAIM_IDLE`]
    /// (recording it twice is harmless), and a pending id whose entry is gone is dropped from
    /// the pending list by that claim.
    pub async fn done(&self, ids: &[String]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let pool = self.redis.pool();
        let _: i64 = pool
            .xdel(self.key.as_str(), ids.to_vec())
            .await
            .with_context(|| format!("deleting outbox entries of sale {}", self.sale))?;
        let _: i64 = pool
            .xack(self.key.as_str(), GROUP, ids.to_vec())
            .await
            .with_context(|| format!("acknowledging outbox entries of sale {}", self.sale))?;
        Ok(())
    }

    /// Removes `consumer` from the group (a reader that stops with nothing pending). Entries
    /// it still held would be lost to the group, so it is left in place when it has any.
    pub async fn leave(&self, consumer: &str) -> anyhow::Result<()> {
        let pending: Value = self
            .redis
            .pool()
            .xpending(self.key.as_str(), GROUP, ("-", "+", 1, consumer))
            .await
            .with_context(|| format!("listing pending outbox entries of sale {}", self.sale))?;
        if matches!(&pending, Value::Array(items) if !items.is_empty()) {
            return Ok(());
        }
        let _: Value = self
            .redis
            .pool()
            .xgroup_delconsumer(self.key.as_str(), GROUP, consumer)
            .await
            .with_context(|| format!("leaving the outbox group of sale {}", self.sale))?;
        Ok(())
    }

    fn entries(&self, items: Value) -> anyhow::Result<Vec<Entry>> {
        let items = match items {
            Value::Array(items) => items,
            Value::Null => return Ok(Vec::new()),
            other => anyhow::bail!("outbox: entries are not an array: {other:?}"),
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let Value::Array(mut pair) = item else {
                anyhow::bail!("outbox: an entry is not an array");
            };
            anyhow::ensure!(pair.len() == 2, "outbox: an entry has {} parts", pair.len());
            let fields = pair.pop().unwrap_or(Value::Null);
            let id = pair
                .pop()
                .and_then(|v| v.as_string())
                .context("outbox: an entry id is not text")?;
            let row = match parse_row(self.sale, fields) {
                Ok(row) => Some(row),
                Err(error) => {
                    tracing::error!(sale = %self.sale, entry = %id, error = format!("{error:#}"), "malformed outbox entry; skipped");
                    None
                }
            };
            out.push(Entry { id, row });
        }
        Ok(out)
    }
}

fn parse_row(sale: SaleId, fields: Value) -> anyhow::Result<OrderRow> {
    let list = match fields {
        Value::Array(list) => list,
        // A deleted entry still pending comes back with nil fields.
        other => anyhow::bail!("fields are not an array: {other:?}"),
    };
    anyhow::ensure!(list.len() % 2 == 0, "odd number of field items");
    let mut get = std::collections::HashMap::with_capacity(list.len() / 2);
    let mut it = list.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        get.insert(k.as_string().context("a field name is not text")?, v);
    }
    let text = |name: &str| -> anyhow::Result<String> {
        get.get(name)
            .and_then(Value::as_string)
            .with_context(|| format!("field {name} missing"))
    };
    let int = |name: &str| -> anyhow::Result<i64> {
        get.get(name)
            .and_then(Value::as_i64)
            .with_context(|| format!("field {name} missing or not an integer"))
    };
    let user = get
        .get("user")
        .and_then(Value::as_bytes)
        .context("field user missing")?;
    let state: OrderState = text("state")?.parse()?;
    Ok(OrderRow {
        id: OrderId::parse_str(&text("order")?).context("field order")?,
        sale,
        user: UserId::from_slice(user).context("field user is not 16 bytes")?,
        quantity: int("qty")?,
        amount: int("amount")?,
        currency: text("currency")?,
        state,
        deadline: from_ms(int("deadline")?),
        idempotency_key: text("idem")?,
        created: from_ms(int("created")?),
        updated: from_ms(int("at")?),
    })
}
