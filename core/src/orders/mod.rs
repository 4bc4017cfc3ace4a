//! The order state machine in Redis: every arrow of DESIGN §5 is one atomic Lua script call
//! (`lua/reserve.lua`, `lua/begin_payment.lua`, `lua/confirm.lua`, `lua/release.lua`; each
//! file's header is its contract), and [`Orders`] is the typed wrapper the api and the workers
//! use. MySQL is not touched here.
//!
//! # Layout (all keys in the sale's slot, `<prefix>:{s:<sale>}:<name>`)
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `cfg`, `avail`, `held`, `sold` | hash, strings | the sale ([`crate::sale`]); `held` = units in HELD + PAYING, `sold` = units in PAID |
//! | `adm` | zset | the waiting room's admitted buyers: user (16 raw bytes) → admission deadline (epoch ms) |
//! | `o:<order>` | hash | `user` (16 raw bytes, the `adm` member), `qty`, `amount` (price × qty, minor units), `currency`, `state`, `deadline`, `created`, `updated` (epoch ms), `idem` (the client's key); on a PAYING order also `rr_n`, `rr_next` (the re-report backoff) and `parked` (epoch ms: a completion was parked), see [`rereport`] |
//! | `hold:<order>` | string | the hold timer: only its TTL matters (the keyspace `expired` event drives the expiry worker) |
//! | `holds` | zset | every live (HELD or PAYING) order id (text) → its deadline (epoch ms): the sweeper's source of truth |
//! | `u:<user>` | string | the user's units in HELD + PAYING + PAID orders (user as UUID text; deleted at 0) |
//! | `events` | stream | the outbox: one entry per arrow, the order's new row ([`crate::orders::outbox`]) |
//! | `idem:<user>:<key>` | hash | `order` (id), `fp` (request fingerprint `"<sale>:<quantity>"`), TTL [`IDEMPOTENCY_TTL`] |
//!
//! The order id is UUID text everywhere (keys and `holds` members); the user is 16 raw bytes
//! where it is a value (the order hash, `adm`) and UUID text where it is part of a key name.
//! Order hashes are not deleted when an order ends (a late message then still finds the end
//! state and changes nothing); they go with the sale's keys.
//!
//! # The arrows
//!
//! ```text
//! reserve ─▶ HELD ─ begin_payment ─▶ PAYING ─ confirm ─▶ PAID
//!             │                        │
//!             │                        └─ release(failed) ─▶ FAILED
//!             ├─ release(expired) ─▶ EXPIRED   (only once the deadline has passed)
//!             └─ release(cancelled) ─▶ CANCELLED
//! ```
//!
//! - [`Orders::reserve`]: avail → held, `u` += qty, the order HELD with deadline = now +
//!   `hold_seconds`, the timer, `holds`, the idempotency key, and the buyer's admission
//!   extended to the deadline (`ZADD adm XX GT`).
//! - [`Orders::begin_payment`]: HELD → PAYING; the deadline becomes now + payment timeout in
//!   the order, `holds` and the timer (set again, not deleted: the expiry worker hears of a
//!   payment still without outcome at its deadline). A hold past its deadline is not moved.
//! - [`Orders::confirm`]: PAYING → PAID; held → sold, `u` unchanged (paid units count toward
//!   the limit).
//! - [`Orders::release`]: HELD → EXPIRED (only once the deadline has passed by Redis time),
//!   HELD → CANCELLED, PAYING → FAILED; held → avail and `u` -= qty, exactly once.
//!
//! Every arrow that ends an order (PAID, EXPIRED, CANCELLED, FAILED) removes it from `holds`,
//! deletes its timer and removes the buyer from `adm`: DESIGN §9 counts a buyer active until an
//! order of theirs ends, so the buyer queues again for more. A call whose arrow does not start
//! at the order's current state changes nothing and reports that state ([`Transition::Unchanged`]),
//! so duplicate, late and out-of-order messages are harmless.
//!
//! At every moment: `avail + held + sold = stock_total`, `avail ≥ 0`, and per user
//! `u ≤ per_user_limit`.
//!
//! # For callers
//!
//! - The Redis client sends a command again once when its connection drops (see
//!   [`crate::clients::redis`]), so a call may run twice. Every script is safe to repeat, but the second
//!   run reports what it finds: a repeated arrow answers [`Transition::Unchanged`] with the state
//!   the first run produced, and a repeated reserve answers [`ReserveOutcome::Existing`]. Treat
//!   "the order is in the state I asked for" as success, not only [`Transition::Applied`].
//! - [`Transition::Unchanged`] from [`Orders::confirm`] with an end state other than PAID means
//!   the order was released first (e.g. failed by the sweeper after its payment deadline): the
//!   payment must be settled outside (refunded). The sweeper should ask the provider before it
//!   fails a PAYING order.
//! - Idempotency keys live in the sale's slot, so they are scoped to the user *within one
//!   sale*: the same key sent for another sale is not seen here. Enforcing "one key, one body"
//!   across sales needs a check outside this slot (the api's job).

pub mod ledger;
pub mod outbox;
pub mod repair;
pub mod rereport;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::ids::{OrderId, SaleId, UserId};
use crate::money::{BadCurrency, Money};
use anyhow::Context;
use fred::interfaces::{HashesInterface, KeysInterface};
use fred::types::Value;

use crate::clients::redis::Redis;
use crate::http::error::ErrorCode;
use crate::lua::PipelinedSet;
use crate::lua::scripts::{BEGIN_PAYMENT, CONFIRM, ORDER_DUE, RELEASE, RESERVE};
use crate::sale::SaleState;
use crate::sale::keys::SaleKeys;

/// How long an idempotency key is kept (DESIGN §9: at least 24 h).
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Longest idempotency key accepted (DESIGN §9: 1 to 64 characters).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 64;
/// Most entries one [`Orders::due`] call returns.
pub const MAX_DUE_BATCH: usize = 10_000;

/// An order's state (DESIGN §5); the names are the API's `status` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderState {
    Held,
    Paying,
    Paid,
    Expired,
    Cancelled,
    Failed,
}

impl OrderState {
    pub const ALL: [OrderState; 6] = [
        Self::Held,
        Self::Paying,
        Self::Paid,
        Self::Expired,
        Self::Cancelled,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Paying => "paying",
            Self::Paid => "paid",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }

    /// HELD or PAYING: the order holds stock and sits in `holds`.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Held | Self::Paying)
    }

    /// No arrow leaves this state.
    pub fn is_final(self) -> bool {
        !self.is_live()
    }
}

impl fmt::Display for OrderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderState {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .with_context(|| format!("unknown order state `{s}`"))
    }
}

/// Where [`Orders::release`] takes a live order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// HELD → EXPIRED, once the deadline has passed (expiry worker, sweeper).
    Expired,
    /// HELD → CANCELLED (the buyer).
    Cancelled,
    /// PAYING → FAILED (declined, or no outcome by the payment deadline).
    Failed,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        self.state().as_str()
    }

    /// The state the order ends in.
    pub fn state(self) -> OrderState {
        match self {
            Self::Expired => OrderState::Expired,
            Self::Cancelled => OrderState::Cancelled,
            Self::Failed => OrderState::Failed,
        }
    }

    /// The only state this release starts from.
    pub fn from_state(self) -> OrderState {
        match self {
            Self::Expired | Self::Cancelled => OrderState::Held,
            Self::Failed => OrderState::Paying,
        }
    }
}

/// One order as its hash holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub sale: SaleId,
    pub user: UserId,
    pub quantity: i64,
    /// price × quantity, in minor units of `currency`.
    pub amount: i64,
    pub currency: String,
    pub state: OrderState,
    /// Epoch ms: the hold's end while HELD, the payment deadline while PAYING; the last one
    /// once the order ended.
    pub deadline_ms: i64,
    pub created_ms: i64,
    /// Epoch ms of the last arrow.
    pub updated_ms: i64,
    pub idempotency_key: String,
}

impl Order {
    /// `amount` and `currency` as one [`Money`]; an error when the currency is not a code.
    pub fn money(&self) -> Result<Money, BadCurrency> {
        Money::parse(self.amount, &self.currency)
    }

    /// The order as the messages carry it (`payment.requested`, `payment.completed`).
    pub fn reference(&self) -> crate::messages::OrderRef {
        crate::messages::OrderRef {
            order_id: self.id,
            sale_id: self.sale,
            user_id: self.user,
            quantity: self.quantity,
            amount: self.amount,
            currency: self.currency.clone(),
            idempotency_key: self.idempotency_key.clone(),
            created_ms: self.created_ms,
        }
    }
}

/// A reservation to make. `order` is the id to give a new order (UUIDv7 from the caller); a
/// replayed idempotency key returns the order it made first instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveRequest {
    pub order: OrderId,
    pub user: UserId,
    /// At least 1 (the script refuses anything else with an error).
    pub quantity: u32,
    /// The client's `Idempotency-Key`, 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] bytes.
    pub idempotency_key: String,
}

/// What [`Orders::reserve`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// A new HELD order took the stock.
    Created(Order),
    /// The idempotency key was used before with the same request: that order, as it is now.
    /// Nothing changed.
    Existing(Order),
    /// The idempotency key was used before with another request (`idempotency_key_reused`).
    IdempotencyKeyReused { order: OrderId },
    /// Closed, scheduled or paused (`sale_not_open`).
    SaleNotOpen(SaleState),
    /// No admission, or it lapsed (`not_admitted`).
    NotAdmitted,
    /// `owned` + quantity would pass `limit` (`limit_exceeded`).
    LimitExceeded { owned: i64, limit: i64 },
    /// Fewer than the quantity left (`sold_out`); `available` may be above 0.
    SoldOut { available: i64 },
    /// The sale is not armed in Redis.
    SaleNotFound,
}

impl ReserveOutcome {
    /// The contract's error code for a refusal (DESIGN §9); `None` for an order.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Created(_) | Self::Existing(_) => None,
            Self::IdempotencyKeyReused { .. } => Some(ErrorCode::IdempotencyKeyReused),
            Self::SaleNotOpen(_) => Some(ErrorCode::SaleNotOpen),
            Self::NotAdmitted => Some(ErrorCode::NotAdmitted),
            Self::LimitExceeded { .. } => Some(ErrorCode::LimitExceeded),
            Self::SoldOut { .. } => Some(ErrorCode::SoldOut),
            Self::SaleNotFound => Some(ErrorCode::NotFound),
        }
    }
}

/// An order's standing as a transition script reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub state: OrderState,
    pub quantity: i64,
    pub deadline_ms: i64,
    /// Redis time when the script ran.
    pub now_ms: i64,
}

/// What [`Orders::begin_payment`], [`Orders::confirm`] or [`Orders::release`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// This call made the arrow; the standing is the new one.
    Applied(Standing),
    /// The arrow does not start at the current state: nothing changed (duplicate, late or out
    /// of order). Includes `begin_payment` on a PAYING order.
    Unchanged(Standing),
    /// `release(Expired)` on a HELD order whose deadline is still ahead: nothing changed.
    NotDue(Standing),
    /// `begin_payment` on a HELD order whose deadline has passed: nothing changed; the expiry
    /// worker releases it.
    DeadlinePassed(Standing),
    /// No such order.
    NotFound,
}

impl Transition {
    pub fn applied(&self) -> bool {
        matches!(self, Self::Applied(_))
    }

    pub fn standing(&self) -> Option<Standing> {
        match *self {
            Self::Applied(s) | Self::Unchanged(s) | Self::NotDue(s) | Self::DeadlinePassed(s) => {
                Some(s)
            }
            Self::NotFound => None,
        }
    }

    /// The order's state after the call; `None` when there is no such order.
    pub fn state(&self) -> Option<OrderState> {
        self.standing().map(|s| s.state)
    }
}

/// A live order whose deadline has passed ([`Orders::due`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DueOrder {
    pub order: OrderId,
    pub deadline_ms: i64,
}

/// The fixed keys of one sale's orders (per-order and per-user keys come from [`Orders`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderKeys {
    pub cfg: String,
    pub avail: String,
    pub held: String,
    pub sold: String,
    pub adm: String,
    /// `admch`: where an order notes a change of its buyer's admission for a spread line.
    pub admch: String,
    pub holds: String,
    /// The order outbox stream (see [`crate::orders::outbox`]).
    pub events: String,
}

/// One sale's orders in Redis. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Orders {
    redis: Redis,
    sale: SaleId,
    keys: OrderKeys,
    layout: SaleKeys,
}

impl Orders {
    pub fn new(redis: &Redis, sale: SaleId) -> Self {
        let layout = SaleKeys::new(redis, sale);
        Self {
            keys: OrderKeys {
                cfg: layout.cfg(),
                avail: layout.avail(),
                held: layout.held(),
                sold: layout.sold(),
                adm: layout.admitted(),
                admch: layout.admission_changes(),
                holds: layout.holds(),
                events: layout.events(),
            },
            layout,
            redis: redis.clone(),
            sale,
        }
    }

    pub fn sale(&self) -> SaleId {
        self.sale
    }

    pub fn keys(&self) -> &OrderKeys {
        &self.keys
    }

    /// `o:<order>`, the order's hash.
    pub fn order_key(&self, order: OrderId) -> String {
        self.layout.order(order)
    }

    /// `hold:<order>`, the order's timer.
    pub fn hold_key(&self, order: OrderId) -> String {
        self.layout.hold(order)
    }

    /// `u:<user>`, the user's units in HELD + PAYING + PAID orders.
    pub fn user_key(&self, user: UserId) -> String {
        self.layout.user(user)
    }

    /// `idem:<user>:<key>`, an idempotency key.
    pub fn idempotency_key(&self, user: UserId, key: &str) -> String {
        self.layout.idempotency(user, key)
    }

    /// The names of every key of this sale.
    pub fn layout(&self) -> &SaleKeys {
        &self.layout
    }

    /// `lua/reserve.lua`'s KEYS for `user`'s new `order` under `idempotency_key`, in its
    /// header's order (public so that tests can call the script with input the typed
    /// [`Orders::reserve`] refuses).
    pub fn reserve_keys(&self, user: UserId, order: OrderId, idempotency_key: &str) -> Vec<String> {
        let k = &self.keys;
        vec![
            k.cfg.clone(),
            k.avail.clone(),
            k.held.clone(),
            k.adm.clone(),
            k.holds.clone(),
            self.user_key(user),
            self.order_key(order),
            self.hold_key(order),
            self.idempotency_key(user, idempotency_key),
            k.events.clone(),
            self.layout.wins(),
            self.layout.open_wins(),
            self.layout.ordered_wins(),
            self.layout.draw_counters(),
            k.admch.clone(),
        ]
    }

    /// `lua/release.lua`'s KEYS for `order` of `user`, in its header's order.
    pub fn release_keys(&self, order: OrderId, user: UserId) -> Vec<String> {
        let k = &self.keys;
        vec![
            self.order_key(order),
            self.hold_key(order),
            k.holds.clone(),
            k.avail.clone(),
            k.held.clone(),
            self.user_key(user),
            k.adm.clone(),
            k.events.clone(),
            k.admch.clone(),
        ]
    }

    /// The fingerprint stored with an idempotency key: the request's sale and quantity.
    pub fn fingerprint(&self, quantity: u32) -> String {
        format!("{}:{quantity}", self.sale)
    }

    /// Takes stock for a new order, atomically (`lua/reserve.lua`; the order of the checks is
    /// in its header). A replayed idempotency key returns the order it made first, read after
    /// the script (its state may have moved on since).
    pub async fn reserve(&self, request: &ReserveRequest) -> anyhow::Result<ReserveOutcome> {
        self.reserve_after(request, None).await
    }

    /// [`Orders::reserve`], with `index` written in the same round trip just before the script
    /// (see [`Script::run_after_set`](crate::lua::Script::run_after_set)): for a key that must
    /// exist once the order does, such as the api's order → sale index. It is written whatever
    /// the script answers, so it must be harmless for an order that was never made.
    pub async fn reserve_indexed(
        &self,
        request: &ReserveRequest,
        index: &PipelinedSet<'_>,
    ) -> anyhow::Result<ReserveOutcome> {
        self.reserve_after(request, Some(index)).await
    }

    async fn reserve_after(
        &self,
        request: &ReserveRequest,
        index: Option<&PipelinedSet<'_>>,
    ) -> anyhow::Result<ReserveOutcome> {
        let key = &request.idempotency_key;
        anyhow::ensure!(
            (1..=MAX_IDEMPOTENCY_KEY_LEN).contains(&key.len()),
            "idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes, got {}",
            key.len()
        );
        let keys = self.reserve_keys(request.user, request.order, key);
        let args = vec![
            Value::from(request.order.to_string()),
            Value::from(&request.user.as_bytes()[..]),
            Value::from(i64::from(request.quantity)),
            Value::from(key.as_str()),
            Value::from(self.fingerprint(request.quantity)),
            Value::from(millis(IDEMPOTENCY_TTL)),
        ];
        let reply: anyhow::Result<Value> = match index {
            Some(set) => RESERVE.run_after_set(&self.redis, set, keys, args).await,
            None => RESERVE.run(&self.redis, keys, args).await,
        };
        let reply = reply.with_context(|| {
            format!(
                "reserving {} unit(s) of sale {} for user {}",
                request.quantity, self.sale, request.user
            )
        })?;
        let reply = Reply::new(reply, "reserve")?;
        let result = reply.text(0)?;
        let outcome = match result.as_str() {
            "created" => {
                reply.expect_len(8)?;
                let id = reply.uuid(1)?;
                anyhow::ensure!(
                    id == request.order,
                    "reserve: created order {id}, asked for {}",
                    request.order
                );
                let now = reply.int(7)?;
                ReserveOutcome::Created(Order {
                    id,
                    sale: self.sale,
                    user: request.user,
                    state: reply.text(2)?.parse()?,
                    quantity: reply.int(3)?,
                    amount: reply.int(4)?,
                    currency: reply.text(5)?,
                    deadline_ms: reply.int(6)?,
                    created_ms: now,
                    updated_ms: now,
                    idempotency_key: key.clone(),
                })
            }
            "existing" => {
                reply.expect_len(2)?;
                let id = reply.uuid(1)?;
                let order = self.get(id).await?.with_context(|| {
                    format!("reserve: idempotency key names order {id}, which has no hash")
                })?;
                ReserveOutcome::Existing(order)
            }
            "idempotency_key_reused" => {
                reply.expect_len(2)?;
                ReserveOutcome::IdempotencyKeyReused {
                    order: reply.uuid(1)?,
                }
            }
            "sale_not_open" => {
                reply.expect_len(2)?;
                let state: SaleState = reply.text(1)?.parse().context("reserve: sale_not_open")?;
                ReserveOutcome::SaleNotOpen(state)
            }
            "not_admitted" => ReserveOutcome::NotAdmitted,
            "limit_exceeded" => {
                reply.expect_len(3)?;
                ReserveOutcome::LimitExceeded {
                    owned: reply.int(1)?,
                    limit: reply.int(2)?,
                }
            }
            "sold_out" => {
                reply.expect_len(2)?;
                ReserveOutcome::SoldOut {
                    available: reply.int(1)?,
                }
            }
            "not_found" => ReserveOutcome::SaleNotFound,
            other => anyhow::bail!("reserve: unknown result `{other}`"),
        };
        metrics::counter!("dropline_reserve_total", "result" => result_label(&outcome))
            .increment(1);
        Ok(outcome)
    }

    /// HELD → PAYING, the deadline moved to now + `payment_timeout` (`lua/begin_payment.lua`).
    /// On a PAYING order: [`Transition::Unchanged`] with state PAYING (paying twice is harmless).
    pub async fn begin_payment(
        &self,
        order: OrderId,
        payment_timeout: Duration,
    ) -> anyhow::Result<Transition> {
        let timeout = millis(payment_timeout);
        anyhow::ensure!(timeout >= 1, "payment timeout must be at least 1 ms");
        let keys = vec![
            self.order_key(order),
            self.hold_key(order),
            self.keys.holds.clone(),
            self.keys.adm.clone(),
            self.keys.events.clone(),
            self.keys.admch.clone(),
        ];
        let args = vec![Value::from(order.to_string()), Value::from(timeout)];
        self.transition(&BEGIN_PAYMENT, order, keys, args).await
    }

    /// PAYING → PAID (`lua/confirm.lua`). Any other state: [`Transition::Unchanged`].
    pub async fn confirm(&self, order: OrderId) -> anyhow::Result<Transition> {
        let k = &self.keys;
        let keys = vec![
            self.order_key(order),
            self.hold_key(order),
            k.holds.clone(),
            k.held.clone(),
            k.sold.clone(),
            k.adm.clone(),
            k.events.clone(),
            k.admch.clone(),
        ];
        self.transition(&CONFIRM, order, keys, vec![Value::from(order.to_string())])
            .await
    }

    /// HELD → EXPIRED (deadline passed) / CANCELLED, PAYING → FAILED, giving the stock back
    /// exactly once (`lua/release.lua`). Reads the order's user first (it never changes) to
    /// name the user's key.
    pub async fn release(&self, order: OrderId, target: Target) -> anyhow::Result<Transition> {
        let user: Option<Value> = self
            .redis
            .pool()
            .hget(self.order_key(order), "user")
            .await
            .with_context(|| format!("reading the user of order {order}"))?;
        let user = match user {
            None | Some(Value::Null) => return Ok(Transition::NotFound),
            Some(v) => user_id(&v).with_context(|| format!("order {order}: field user"))?,
        };
        let keys = self.release_keys(order, user);
        let args = vec![
            Value::from(order.to_string()),
            Value::from(target.as_str()),
            Value::from(&user.as_bytes()[..]),
        ];
        self.transition(&RELEASE, order, keys, args).await
    }

    async fn transition(
        &self,
        script: &'static crate::lua::Script,
        order: OrderId,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> anyhow::Result<Transition> {
        let name = script.name();
        let reply: Value = script
            .run(&self.redis, keys, args)
            .await
            .with_context(|| format!("{name} of order {order} (sale {})", self.sale))?;
        let reply = Reply::new(reply, name)?;
        reply.expect_len(5)?;
        let result = reply.text(0)?;
        if result == "not_found" {
            metrics::counter!("dropline_order_transitions_total", "script" => name, "result" => "not_found")
                .increment(1);
            return Ok(Transition::NotFound);
        }
        let standing = Standing {
            state: reply.text(1)?.parse().context(name)?,
            quantity: reply.int(2)?,
            deadline_ms: reply.int(3)?,
            now_ms: reply.int(4)?,
        };
        let (transition, label) = match result.as_str() {
            "ok" => (Transition::Applied(standing), "ok"),
            "noop" => (Transition::Unchanged(standing), "noop"),
            "not_due" => (Transition::NotDue(standing), "not_due"),
            "deadline_passed" => (Transition::DeadlinePassed(standing), "deadline_passed"),
            other => anyhow::bail!("{name}: unknown result `{other}`"),
        };
        metrics::counter!("dropline_order_transitions_total", "script" => name, "result" => label)
            .increment(1);
        Ok(transition)
    }

    /// Reads one order; `None` when there is no such order.
    pub async fn get(&self, order: OrderId) -> anyhow::Result<Option<Order>> {
        const FIELDS: [&str; 9] = [
            "user", "qty", "amount", "currency", "state", "deadline", "created", "updated", "idem",
        ];
        let values: Vec<Value> = self
            .redis
            .pool()
            .hmget(self.order_key(order), FIELDS.to_vec())
            .await
            .with_context(|| format!("reading order {order} of sale {}", self.sale))?;
        anyhow::ensure!(
            values.len() == FIELDS.len(),
            "order {order}: HMGET returned {} values",
            values.len()
        );
        if values.iter().all(Value::is_null) {
            return Ok(None);
        }
        let field = |i: usize| -> anyhow::Result<&Value> {
            let v = &values[i];
            anyhow::ensure!(!v.is_null(), "order {order}: field {} missing", FIELDS[i]);
            Ok(v)
        };
        let int = |i: usize| -> anyhow::Result<i64> {
            field(i)?
                .as_i64()
                .with_context(|| format!("order {order}: field {} is not an integer", FIELDS[i]))
        };
        let text = |i: usize| -> anyhow::Result<String> {
            field(i)?
                .as_string()
                .with_context(|| format!("order {order}: field {} is not text", FIELDS[i]))
        };
        Ok(Some(Order {
            id: order,
            sale: self.sale,
            user: user_id(field(0)?).with_context(|| format!("order {order}: field user"))?,
            quantity: int(1)?,
            amount: int(2)?,
            currency: text(3)?,
            state: text(4)?
                .parse()
                .with_context(|| format!("order {order}: field state"))?,
            deadline_ms: int(5)?,
            created_ms: int(6)?,
            updated_ms: int(7)?,
            idempotency_key: text(8)?,
        }))
    }

    /// Up to `limit` (at most [`MAX_DUE_BATCH`]) live orders whose deadline is at or before
    /// Redis time, earliest first, and that time (`lua/order_due.lua`). A HELD one is due for
    /// `release(Expired)`; a PAYING one for settling with the provider or `release(Failed)`.
    /// An entry that is not an order id is skipped (logged): this code never writes one.
    pub async fn due(&self, limit: usize) -> anyhow::Result<(Vec<DueOrder>, i64)> {
        let limit = limit.clamp(1, MAX_DUE_BATCH);
        let reply: Value = ORDER_DUE
            .run(
                &self.redis,
                vec![self.keys.holds.clone()],
                vec![Value::from(limit as i64)],
            )
            .await
            .with_context(|| format!("listing due orders of sale {}", self.sale))?;
        let reply = Reply::new(reply, "order_due")?;
        anyhow::ensure!(
            reply.items.len() % 2 == 1,
            "order_due: expected an odd number of items, got {}",
            reply.items.len()
        );
        let now = reply.int(0)?;
        let mut due = Vec::with_capacity(reply.items.len() / 2);
        for i in (1..reply.items.len()).step_by(2) {
            let member = reply.text(i)?;
            match OrderId::parse_str(&member) {
                Ok(order) => due.push(DueOrder {
                    order,
                    deadline_ms: reply.int(i + 1)?,
                }),
                Err(_) => {
                    tracing::warn!(sale = %self.sale, member = %member, "skipping a holds entry that is not an order id");
                }
            }
        }
        Ok((due, now))
    }

    /// The user's units in HELD + PAYING + PAID orders of this sale.
    pub async fn units_of(&self, user: UserId) -> anyhow::Result<i64> {
        let units: Option<i64> = self
            .redis
            .pool()
            .get(self.user_key(user))
            .await
            .with_context(|| format!("reading the units of user {user} in sale {}", self.sale))?;
        Ok(units.unwrap_or(0))
    }
}

fn result_label(outcome: &ReserveOutcome) -> &'static str {
    match outcome {
        ReserveOutcome::Created(_) => "created",
        ReserveOutcome::Existing(_) => "existing",
        other => other.error_code().map_or("other", ErrorCode::as_str),
    }
}

fn user_id(value: &Value) -> anyhow::Result<UserId> {
    let bytes = value.as_bytes().context("not a string")?;
    UserId::from_slice(bytes).context("not 16 bytes")
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A script's array reply, read by position with the script's name in every error.
struct Reply {
    script: &'static str,
    items: Vec<Value>,
}

impl Reply {
    fn new(value: Value, script: &'static str) -> anyhow::Result<Self> {
        match value {
            Value::Array(items) if !items.is_empty() => Ok(Self { script, items }),
            other => anyhow::bail!("{script}: expected a non-empty array, got {other:?}"),
        }
    }

    fn expect_len(&self, len: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.items.len() == len,
            "{}: expected {len} items, got {}",
            self.script,
            self.items.len()
        );
        Ok(())
    }

    fn item(&self, i: usize) -> anyhow::Result<&Value> {
        self.items
            .get(i)
            .with_context(|| format!("{}: item {i} missing", self.script))
    }

    fn int(&self, i: usize) -> anyhow::Result<i64> {
        self.item(i)?
            .as_i64()
            .with_context(|| format!("{}: item {i} is not an integer", self.script))
    }

    fn text(&self, i: usize) -> anyhow::Result<String> {
        self.item(i)?
            .as_string()
            .with_context(|| format!("{}: item {i} is not a string", self.script))
    }

    fn uuid(&self, i: usize) -> anyhow::Result<OrderId> {
        let text = self.text(i)?;
        OrderId::parse_str(&text)
            .with_context(|| format!("{}: item {i} is not an order id: `{text}`", self.script))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_classify() -> anyhow::Result<()> {
        for state in OrderState::ALL {
            assert_eq!(state.as_str().parse::<OrderState>()?, state);
            assert_eq!(state.is_live(), !state.is_final());
        }
        assert!(OrderState::Held.is_live() && OrderState::Paying.is_live());
        assert!("HELD".parse::<OrderState>().is_err());
        for target in [Target::Expired, Target::Cancelled, Target::Failed] {
            assert!(target.state().is_final());
            assert!(target.from_state().is_live());
        }
        Ok(())
    }

    #[test]
    fn refusals_map_to_their_contract_codes() {
        let cases = [
            (
                ReserveOutcome::IdempotencyKeyReused {
                    order: OrderId::nil(),
                },
                "idempotency_key_reused",
            ),
            (
                ReserveOutcome::SaleNotOpen(SaleState::Paused),
                "sale_not_open",
            ),
            (ReserveOutcome::NotAdmitted, "not_admitted"),
            (
                ReserveOutcome::LimitExceeded { owned: 1, limit: 1 },
                "limit_exceeded",
            ),
            (ReserveOutcome::SoldOut { available: 0 }, "sold_out"),
            (ReserveOutcome::SaleNotFound, "not_found"),
        ];
        for (outcome, code) in cases {
            assert_eq!(outcome.error_code().map(ErrorCode::as_str), Some(code));
        }
    }
}
