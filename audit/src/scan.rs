//! The audit's reads of Redis: one atomic snapshot of the counters (`lua/audit_snapshot.lua`),
//! a scan of the order hashes and users' counters, and the order ids still in the outbox.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use fred::interfaces::{HashesInterface, KeysInterface, SortedSetsInterface, StreamsInterface};
use fred::types::Value;
use fred::types::scan::Scanner;
use futures_util::TryStreamExt;
use futures_util::future::try_join_all;

use dropline_core::ids::{OrderId, UserId};

use crate::AUDIT_SNAPSHOT;
use crate::PAGE;
use crate::report::StateCounts;
use dropline_core::clients::redis::Redis;
use dropline_core::orders::{OrderState, Orders};
use dropline_core::sale::keys::KeyName;

/// `lua/audit_snapshot.lua`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Snapshot {
    pub(super) stock_total: i64,
    pub(super) per_user_limit: i64,
    pub(super) avail: i64,
    pub(super) held: i64,
    pub(super) sold: i64,
    pub(super) holds: u64,
    pub(super) outbox_len: u64,
    pub(super) outbox_last_id: String,
}

impl Snapshot {
    /// What moves with an order arrow (not the outbox's length: the recorder drains it
    /// without changing any order).
    pub(super) fn marker(&self) -> (i64, i64, i64, u64, &str) {
        (
            self.avail,
            self.held,
            self.sold,
            self.holds,
            &self.outbox_last_id,
        )
    }
}

/// The sale's counters at one moment; `None` when the sale is not armed.
pub(super) async fn snapshot(redis: &Redis, orders: &Orders) -> anyhow::Result<Option<Snapshot>> {
    let k = orders.keys();
    let keys = vec![
        k.cfg.clone(),
        k.avail.clone(),
        k.held.clone(),
        k.sold.clone(),
        k.holds.clone(),
        k.events.clone(),
    ];
    let reply: Vec<Value> = AUDIT_SNAPSHOT
        .run(redis, keys, Vec::<Value>::new())
        .await
        .with_context(|| format!("reading the counters of sale {}", orders.sale()))?;
    if reply.is_empty() {
        return Ok(None);
    }
    anyhow::ensure!(
        reply.len() == 9,
        "audit_snapshot returned {} items",
        reply.len()
    );
    let int = |i: usize| -> anyhow::Result<i64> {
        reply[i]
            .as_i64()
            .with_context(|| format!("audit_snapshot: item {} is not an integer", i + 1))
    };
    Ok(Some(Snapshot {
        stock_total: int(0)?,
        per_user_limit: int(1)?,
        avail: int(2)?,
        held: int(3)?,
        sold: int(4)?,
        holds: u64::try_from(int(5)?).unwrap_or(0),
        outbox_len: u64::try_from(int(6)?).unwrap_or(0),
        outbox_last_id: reply[7].as_string().unwrap_or_default(),
    }))
}

/// One order as the audit needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RedisOrder {
    pub(super) user: UserId,
    pub(super) quantity: i64,
    pub(super) state: OrderState,
}

/// What one scan of the sale's slot found.
#[derive(Debug, Default)]
pub(super) struct Scan {
    pub(super) orders: HashMap<OrderId, RedisOrder>,
    pub(super) malformed: Vec<(OrderId, String)>,
    /// `u:<user>` counters.
    pub(super) user_counters: HashMap<UserId, i64>,
    /// Members of `holds` that are order ids.
    pub(super) holds: HashSet<OrderId>,
    /// Every member of `holds`, as text.
    pub(super) holds_members: Vec<String>,
}

impl Scan {
    /// Scans the sale's order hashes and users' counters, then reads `holds`.
    pub(super) async fn read(redis: &Redis, orders: &Orders, count: u32) -> anyhow::Result<Self> {
        let sale = orders.sale();
        let layout = orders.layout();
        let pattern = layout.orders_and_users_pattern();
        let mut scan = Self::default();
        let client = redis.pool().next();
        let mut pages = client.scan(pattern, Some(count.max(10)), None);
        while let Some(mut page) = pages
            .try_next()
            .await
            .with_context(|| format!("scanning the keys of sale {sale}"))?
        {
            let keys = page.take_results().unwrap_or_default();
            // Dropping the page asks for the next one while this one is read.
            drop(page);
            let mut order_keys = Vec::new();
            let mut user_keys = Vec::new();
            for key in keys {
                let Some(name) = key.as_str() else { continue };
                let Some(named) = layout.name_of(name) else {
                    continue;
                };
                if let KeyName::Order(id) = named {
                    match OrderId::parse_str(id) {
                        Ok(id) => order_keys.push((id, name.to_owned())),
                        Err(_) => tracing::warn!(
                            key = name,
                            "skipping an order key that is not an order id"
                        ),
                    }
                } else if let KeyName::User(user) = named {
                    match UserId::parse_str(user) {
                        Ok(user) => user_keys.push((user, name.to_owned())),
                        Err(_) => {
                            tracing::warn!(key = name, "skipping a user key that is not a user id")
                        }
                    }
                }
            }
            for (id, read) in read_orders(redis, &order_keys).await? {
                match read {
                    Some(Ok(order)) => {
                        scan.orders.insert(id, order);
                    }
                    Some(Err(problem)) => scan.malformed.push((id, problem)),
                    // Gone between SCAN and HMGET: only a wipe does that.
                    None => {}
                }
            }
            if !user_keys.is_empty() {
                let names: Vec<String> = user_keys.iter().map(|(_, k)| k.clone()).collect();
                let values: Vec<Value> = redis
                    .pool()
                    .mget(names)
                    .await
                    .with_context(|| format!("reading users' counts of sale {sale}"))?;
                for ((user, key), value) in user_keys.into_iter().zip(values) {
                    if value.is_null() {
                        continue;
                    }
                    let units = value
                        .as_i64()
                        .with_context(|| format!("{key} is not an integer"))?;
                    scan.user_counters.insert(user, units);
                }
            }
        }
        let holds_key = &orders.keys().holds;
        let page = PAGE as i64;
        let mut start = 0i64;
        loop {
            let members: Vec<String> = redis
                .pool()
                .zrange(holds_key, start, start + page - 1, None, false, None, false)
                .await
                .with_context(|| format!("reading the holds of sale {sale}"))?;
            let n = members.len() as i64;
            for member in members {
                if let Ok(id) = OrderId::parse_str(&member) {
                    scan.holds.insert(id);
                }
                scan.holds_members.push(member);
            }
            if n < page {
                break;
            }
            start += page;
        }
        Ok(scan)
    }

    pub(super) fn counts(&self) -> StateCounts {
        let mut counts = StateCounts::default();
        for order in self.orders.values() {
            counts.add(order.state, order.quantity);
        }
        counts
    }

    /// Units per user in HELD + PAYING + PAID hashes.
    pub(super) fn user_units(&self) -> HashMap<UserId, i64> {
        let mut units: HashMap<UserId, i64> = HashMap::new();
        for order in self.orders.values() {
            if order.state.is_live() || order.state == OrderState::Paid {
                *units.entry(order.user).or_insert(0) += order.quantity;
            }
        }
        units
    }
}

/// Reads `user`, `qty` and `state` of each order hash, pipelined: `None` for a hash that
/// does not exist, `Some(Err(problem))` for one that cannot be read.
pub(super) async fn read_orders(
    redis: &Redis,
    keys: &[(OrderId, String)],
) -> anyhow::Result<Vec<(OrderId, Option<Result<RedisOrder, String>>)>> {
    let pool = redis.pool();
    let replies = try_join_all(keys.iter().map(|(id, key)| async move {
        let values: Vec<Value> = pool
            .hmget(key.as_str(), vec!["user", "qty", "state"])
            .await
            .with_context(|| format!("reading order {id}"))?;
        Ok::<_, anyhow::Error>((*id, values))
    }))
    .await?;
    Ok(replies
        .into_iter()
        .map(|(id, values)| (id, parse_order(&values)))
        .collect())
}

pub(super) fn parse_order(values: &[Value]) -> Option<Result<RedisOrder, String>> {
    if values.iter().all(Value::is_null) {
        return None;
    }
    let [user, qty, state] = values else {
        return Some(Err(format!("HMGET returned {} values", values.len())));
    };
    let user = match user.as_bytes().map(UserId::from_slice) {
        Some(Ok(user)) => user,
        _ => return Some(Err("field user is missing or not 16 bytes".into())),
    };
    let Some(quantity) = qty.as_i64().filter(|q| *q > 0) else {
        return Some(Err("field qty is missing or not a positive integer".into()));
    };
    let state = match state.as_string().map(|s| s.parse::<OrderState>()) {
        Some(Ok(state)) => state,
        _ => return Some(Err("field state is missing or unknown".into())),
    };
    Some(Ok(RedisOrder {
        user,
        quantity,
        state,
    }))
}

/// The order ids with an entry in the sale's outbox stream (read in pages, oldest first).
pub(super) async fn read_outbox(
    redis: &Redis,
    orders: &Orders,
) -> anyhow::Result<HashSet<OrderId>> {
    let key = &orders.keys().events;
    let mut ids = HashSet::new();
    let mut start = "-".to_owned();
    loop {
        let reply: Value = redis
            .pool()
            .xrange(key.as_str(), start.as_str(), "+", Some(PAGE as u64))
            .await
            .with_context(|| format!("reading the outbox of sale {}", orders.sale()))?;
        let entries = match reply {
            Value::Array(entries) => entries,
            Value::Null => Vec::new(),
            other => anyhow::bail!("XRANGE: unexpected reply {other:?}"),
        };
        let n = entries.len();
        let mut last = None;
        for entry in entries {
            let Value::Array(mut pair) = entry else {
                anyhow::bail!("XRANGE: an entry is not an array");
            };
            anyhow::ensure!(pair.len() == 2, "XRANGE: an entry has {} parts", pair.len());
            let fields = pair.pop().unwrap_or(Value::Null);
            last = pair.pop().and_then(|v| v.as_string());
            if let Value::Array(fields) = fields {
                let mut it = fields.iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    if k.as_string().as_deref() == Some("order") {
                        if let Some(id) = v.as_string().and_then(|s| OrderId::parse_str(&s).ok()) {
                            ids.insert(id);
                        }
                        break;
                    }
                }
            }
        }
        match last {
            Some(id) if n >= PAGE => start = format!("({id}"),
            _ => return Ok(ids),
        }
    }
}
