//! The confirm worker: consumes `<prefix>.confirmations` (`payment.completed`) and ends each
//! paying order: PAID (MySQL, then Redis, then `order.confirmed`) or FAILED (Redis; the
//! recorder copies the arrow to MySQL).
//!
//! # Declined
//!
//! [`Orders::release`] with [`Target::Failed`]: PAYING → FAILED, the stock back exactly once.
//! Any other state (a duplicate, a late or out-of-order message) changes nothing and is acked;
//! an order Redis does not know (lost) is acked with a warning.
//!
//! # Approved
//!
//! 1. The order's Redis state is read first. An order that already ended otherwise (EXPIRED,
//!    CANCELLED, FAILED) cannot be confirmed: the payment is refunded and MySQL is not asked
//!    to book it. A HELD order means Redis lost its HELD → PAYING arrow (the api makes it
//!    before it publishes `payment.requested`, so only a failover to a replica that had not
//!    received it shows an approved payment for a HELD order): the arrow is made again
//!    ([`Orders::begin_payment`], counted in `dropline_confirm_lost_arrows_total`) and the
//!    order is booked as below; a hold already past its deadline is retried until the
//!    sweeper ends it, and then refunded. When Redis lost the order, a payment MySQL already
//!    marked refunded is not booked again.
//! 2. [`ledger::confirm_paid`] books it: the only writer of `paid`, in one transaction with
//!    `sales.sold`. Concurrent deliveries are **batched**: each handler hands its order to one
//!    writer task ([`batch`]), which takes every order queued (up to [`MAX_BATCH`]) into one
//!    transaction and answers each handler; a lone order goes at once. A batch that
//!    fails is written again order by order, so one bad row cannot hold the others back. To
//!    keep batches full, this queue's prefetch is `workers.confirm_prefetch`, not
//!    `amqp.prefetch`.
//! 3. Per order, by [`PaidOutcome`]:
//!    - `Recorded` / `AlreadyPaid` → [`Orders::confirm`] (PAYING → PAID; already PAID or an
//!      order Redis lost is fine; any other end state is a protocol breach: error log and
//!      `dropline_confirm_conflicts_total`, the MySQL record stands) → `order.confirmed` with
//!      the buyer's e-mail and name and the product's name from MySQL (one lookup per batch
//!      of orders, [`ledger::recipients`]) → ack.
//!    - `Ended(_)` → refund at the provider, payment row marked refunded → `order.refunded`
//!      (the buyer's e-mail, once per order) → ack.
//!    - `WouldOversell` → the order is failed in Redis first (so it is never confirmed
//!      later), then refunded as above; error log → ack. MySQL being full where Redis
//!      offered a unit means Redis lost writes (a failover): right after the release, the
//!      sale's Redis counters are set right from MySQL's `sales.sold`
//!      ([`repair::repair`], `lua/stock_repair.lua`), so the units MySQL sold (the one just
//!      released included) go to `sold` instead of back to the next buyer, and the sale
//!      sells out. The same repair runs when MySQL booked an order Redis does not know.
//!    - `NoSale` → parked.
//!
//! Acks come only after the work is committed. Every step repeats safely, so a crash between
//! the MySQL commit and the ack (the delivery comes back) finds the row paid (`AlreadyPaid`)
//! and finishes the remaining steps: no second payment, no second `sold`. A dependency failure
//! (MySQL deadlock, Redis or RabbitMQ down) is retried after `amqp.retry_delay_ms`.
//!
//! A completion about to be parked (after `amqp.max_attempts`, or parked at once) marks its
//! order in Redis ([`Orders::mark_parked`]): the expiry worker's sweeper then stops re-sending
//! it, and an operator re-sends it with `dropline payments resend <order>`.
//!
//! `order.confirmed` carries a message id derived from the order id ([`confirmation_id`]), so
//! every copy of one order's confirmation has the same id; the mail worker also mails once
//! per order.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crate::batch::{self, Batcher};
use crate::consumer::{Message, Outcome, consume_with_prefetch};
use crate::envelope;
use crate::ledger::{self, PaidOutcome, Recipient};
use anyhow::Context;
use chrono::Utc;
use dropline_core::Config;
use dropline_core::clients::amqp::{Broker, CONFIRMATIONS};
use dropline_core::clients::deps::Deps;
use dropline_core::clients::redis::Redis;
use dropline_core::ids::{OrderId, SaleId, UserId};
use dropline_core::messages::{
    Envelope, OrderConfirmed, OrderRef, OrderRefunded, PaymentCompleted, PaymentOutcome, kinds,
};
use dropline_core::orders::ledger::OrderRow;
use dropline_core::orders::{Order, OrderState, Orders, Target, Transition, repair};
use dropline_core::sale::from_ms;
use futures_util::future::BoxFuture;
use sqlx::MySqlPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::payment::validate;
use crate::provider::{Decision, PaymentProvider};

/// Most orders one confirm transaction carries.
pub const MAX_BATCH: usize = 256;

/// See [`Hooks::after_commit`].
pub type AfterCommit = Arc<dyn Fn(Vec<OrderId>) -> BoxFuture<'static, ()> + Send + Sync>;

/// Fault injection for tests: lets a test stop the worker at a chosen point, as if its
/// process died there.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Awaited by the MySQL writer after each committed transaction (with the ids of the
    /// orders it held), before any handler hears of it. A future that never completes leaves
    /// the batch committed and its deliveries unacked.
    pub after_commit: Option<AfterCommit>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("after_commit", &self.after_commit.is_some())
            .finish()
    }
}

/// Consumes the confirmations queue until `shutdown` fires; returns after the deliveries in
/// hand are finished and the MySQL writer has stopped.
pub async fn run(
    config: &Config,
    deps: &Deps,
    provider: Arc<dyn PaymentProvider>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with_hooks(config, deps, provider, shutdown, Hooks::default()).await
}

/// [`run`] with test [`Hooks`].
pub async fn run_with_hooks(
    config: &Config,
    deps: &Deps,
    provider: Arc<dyn PaymentProvider>,
    shutdown: CancellationToken,
    hooks: Hooks,
) -> anyhow::Result<()> {
    let broker = deps.broker()?.clone();
    let mysql = deps.mysql()?.clone();
    let prefetch = config.workers.confirm_prefetch;
    // The writer is aborted if this future is dropped (the process "dies"); otherwise it ends
    // once every handler (and so every sender) is gone.
    let pool = mysql.clone();
    let hooks = Arc::new(hooks);
    let (jobs, writer) = batch::start("confirm", MAX_BATCH, move |rows| {
        let (pool, hooks) = (pool.clone(), Arc::clone(&hooks));
        async move { write_batch(&pool, rows, &hooks).await }
    });
    let pool = mysql.clone();
    let (recipients, lookups) = batch::start("recipients", MAX_BATCH, move |wanted| {
        let pool = pool.clone();
        async move { lookup_recipients(&pool, wanted).await }
    });
    let worker = Arc::new(Confirmer {
        broker: broker.clone(),
        mysql,
        redis: deps.redis()?.clone(),
        provider,
        jobs,
        recipients,
        payment_timeout: std::time::Duration::from_secs(config.payment.timeout_seconds),
    });
    tracing::info!(prefetch, max_batch = MAX_BATCH, "confirm worker starting");
    let handler = {
        let worker = Arc::clone(&worker);
        move |message: Message| {
            let worker = Arc::clone(&worker);
            async move { worker.handle(message).await }
        }
    };
    let result = consume_with_prefetch(broker, CONFIRMATIONS, prefetch, handler, shutdown).await;
    drop(worker);
    writer.finish().await;
    lookups.finish().await;
    tracing::info!("confirm worker stopped");
    result
}

/// The message id of an order's `order.confirmed`: the order id with its version nibble set
/// to 8 (custom). Fixed per order, and never equal to an order id (UUIDv7).
pub fn confirmation_id(order: OrderId) -> Uuid {
    let mut bytes = *order.as_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid::from_bytes(bytes)
}

/// One batch of orders for `ledger::confirm_paid`: one transaction; if it fails (a
/// deadlock, or one row MySQL refuses), each order on its own, so the others go through and
/// only a bad one fails.
async fn write_batch(
    pool: &MySqlPool,
    rows: Vec<OrderRow>,
    hooks: &Hooks,
) -> Vec<anyhow::Result<PaidOutcome>> {
    let started = Instant::now();
    match ledger::confirm_paid(pool, &rows).await {
        Ok(outcomes) => {
            metrics::histogram!("dropline_confirm_batch_seconds")
                .record(started.elapsed().as_secs_f64());
            tracing::debug!(size = rows.len(), "confirm batch committed");
            after_commit(hooks, &rows).await;
            outcomes.into_iter().map(Ok).collect()
        }
        Err(error) if rows.len() == 1 => vec![Err(error)],
        Err(error) => {
            tracing::warn!(
                size = rows.len(),
                error = format!("{error:#}"),
                "confirm batch failed; writing its orders one by one"
            );
            let mut results = Vec::with_capacity(rows.len());
            for row in rows {
                let row = std::slice::from_ref(&row);
                results.push(match ledger::confirm_paid(pool, row).await {
                    Ok(outcomes) => {
                        after_commit(hooks, row).await;
                        outcomes
                            .into_iter()
                            .next()
                            .context("confirm_paid returned no outcome")
                    }
                    Err(error) => Err(error),
                });
            }
            results
        }
    }
}

/// One batch of `order.confirmed` recipients; a failed lookup fails each order of the batch
/// (its delivery is retried).
async fn lookup_recipients(
    pool: &MySqlPool,
    wanted: Vec<(SaleId, UserId)>,
) -> Vec<anyhow::Result<Option<Recipient>>> {
    match ledger::recipients(pool, &wanted).await {
        Ok(found) => found.into_iter().map(Ok).collect(),
        Err(error) => {
            let error = format!("{error:#}");
            wanted
                .iter()
                .map(|_| Err(anyhow::anyhow!("{error}")))
                .collect()
        }
    }
}

async fn after_commit(hooks: &Hooks, rows: &[OrderRow]) {
    if let Some(hook) = &hooks.after_commit {
        hook(rows.iter().map(|r| r.id).collect()).await;
    }
}

/// What one worker shares between its deliveries.
struct Confirmer {
    broker: Broker,
    mysql: MySqlPool,
    redis: Redis,
    provider: Arc<dyn PaymentProvider>,
    jobs: Batcher<OrderRow, PaidOutcome>,
    /// `(sale, user)` → who `order.confirmed` goes to, looked up a batch at a time.
    recipients: Batcher<(SaleId, UserId), Option<Recipient>>,
    /// `payment.timeout_seconds`: the deadline of a HELD → PAYING arrow made again.
    payment_timeout: std::time::Duration,
}

/// Why a payment is given back (the `reason` label of `dropline_refunds_total`).
#[derive(Debug, Clone, Copy)]
enum RefundReason {
    /// The order ended (expired, cancelled, failed) before its payment was confirmed.
    Ended,
    /// Booking it would sell more than the stock.
    WouldOversell,
}

impl RefundReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ended => "ended",
            Self::WouldOversell => "would_oversell",
        }
    }
}

impl Confirmer {
    #[tracing::instrument(skip_all, fields(message_id = message.message_id.as_deref().unwrap_or(""), order, outcome, attempt = message.attempt))]
    async fn handle(&self, message: Message) -> Outcome {
        let completed: PaymentCompleted =
            match envelope::decode("confirm", kinds::PAYMENT_COMPLETED, &message.data) {
                Ok(envelope) => envelope.data,
                Err(outcome) => return outcome,
            };
        let span = tracing::Span::current();
        span.record("order", tracing::field::display(completed.order.order_id));
        span.record("outcome", tracing::field::debug(completed.outcome));
        if let Err(reason) = validate(&completed.order) {
            return envelope::malformed(kinds::PAYMENT_COMPLETED, reason);
        }
        let result = match completed.outcome {
            PaymentOutcome::Declined => self.declined(&completed).await,
            PaymentOutcome::Approved => self.approved(&completed).await,
        };
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "payment.completed not handled; will retry"
                );
                Outcome::Retry(format!("{error:#}"))
            }
        };
        if outcome.parks(message.attempt, self.broker.config().max_attempts) {
            self.mark_parked(&completed.order).await;
        }
        outcome
    }

    /// This order's completion goes to the parking queue: mark the order so that the expiry
    /// worker's sweeper stops re-sending it (an operator re-sends it with `dropline payments
    /// resend`). Marked before the message is parked: if parking fails the delivery comes
    /// back and is parked again, and a mark on an order that then ends is harmless. A mark
    /// that cannot be written only leaves the sweeper re-sending it, backed off.
    async fn mark_parked(&self, order: &OrderRef) {
        let orders = Orders::new(&self.redis, order.sale_id);
        match orders.mark_parked(order.order_id).await {
            Ok(true) => {
                metrics::counter!("dropline_confirm_parked_orders_total").increment(1);
                tracing::warn!(
                    "payment.completed parked: the order is marked; the sweeper will not re-send it (`dropline payments resend {}`)",
                    order.order_id
                );
            }
            Ok(false) => {
                tracing::warn!("payment.completed parked for an order Redis does not know")
            }
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "payment.completed parked, but the order could not be marked; the sweeper may re-send it"
            ),
        }
    }

    /// PAYING → FAILED; anything else changes nothing.
    async fn declined(&self, completed: &PaymentCompleted) -> anyhow::Result<Outcome> {
        let order = &completed.order;
        let orders = Orders::new(&self.redis, order.sale_id);
        let transition = orders.release(order.order_id, Target::Failed).await?;
        match transition {
            Transition::Applied(_) => {
                tracing::info!(reason = %completed.provider_ref, "payment declined; order failed, stock back");
            }
            Transition::Unchanged(s) if s.state == OrderState::Failed => {
                tracing::debug!("declined again: the order is failed already");
            }
            Transition::Unchanged(s) if s.state == OrderState::Paid => {
                tracing::warn!(
                    "a declined payment for a paid order (the provider decides once; a stray message?): nothing changed"
                );
            }
            Transition::Unchanged(s) | Transition::NotDue(s) | Transition::DeadlinePassed(s) => {
                tracing::info!(state = %s.state, "declined payment for an order that is not paying: nothing changed");
            }
            Transition::NotFound => {
                tracing::warn!("declined payment for an order Redis does not know (lost?): acked");
            }
        }
        Ok(Outcome::Ack)
    }

    async fn approved(&self, completed: &PaymentCompleted) -> anyhow::Result<Outcome> {
        let order = &completed.order;
        let orders = Orders::new(&self.redis, order.sale_id);
        let current = orders.get(order.order_id).await?;
        match current.as_ref().map(|o| o.state) {
            Some(OrderState::Expired | OrderState::Cancelled | OrderState::Failed) => {
                return self.refund(&orders, order, RefundReason::Ended).await;
            }
            Some(OrderState::Held) => {
                // The api starts the payment (HELD → PAYING) before it asks for it, so Redis
                // lost that arrow (a failover). The order still holds its stock and the buyer
                // paid: make the arrow again and book it, rather than park a charge.
                if let Some(outcome) = self.redo_begin_payment(&orders, order).await? {
                    return Ok(outcome);
                }
            }
            None => {
                if let Some(payment) = ledger::payment_of(&self.mysql, order.order_id).await?
                    && payment.status == "refunded"
                {
                    tracing::warn!(
                        "approved payment for an order Redis does not know, refunded already: acked"
                    );
                    return Ok(Outcome::Ack);
                }
            }
            Some(OrderState::Paying | OrderState::Paid) => {}
        }
        let row = order_row(order, current.as_ref());
        let outcome = self.book(row).await?;
        match outcome {
            PaidOutcome::Recorded | PaidOutcome::AlreadyPaid => {
                if outcome == PaidOutcome::Recorded {
                    metrics::counter!("dropline_orders_confirmed_total").increment(1);
                }
                self.confirm_in_redis(&orders, order.order_id).await?;
                self.announce(order).await?;
                Ok(Outcome::Ack)
            }
            PaidOutcome::Ended(state) => {
                tracing::info!(mysql_state = %state, "the order ended in MySQL before its payment was confirmed");
                self.refund(&orders, order, RefundReason::Ended).await
            }
            PaidOutcome::WouldOversell => {
                self.refund(&orders, order, RefundReason::WouldOversell)
                    .await
            }
            PaidOutcome::NoSale => Ok(Outcome::Park(format!(
                "sale {} has no MySQL row",
                order.sale_id
            ))),
        }
    }

    /// HELD → PAYING again for an approved payment (see the module's "Approved"). `None`: the
    /// order is paying (or paid) now, go on booking it; `Some`: what to do with the delivery.
    async fn redo_begin_payment(
        &self,
        orders: &Orders,
        order: &OrderRef,
    ) -> anyhow::Result<Option<Outcome>> {
        let moved = orders
            .begin_payment(order.order_id, self.payment_timeout)
            .await?;
        match moved {
            Transition::Applied(_) => {
                metrics::counter!("dropline_confirm_lost_arrows_total").increment(1);
                tracing::warn!(
                    "approved payment for an order Redis showed held (its HELD → PAYING arrow was lost, a failover?): the arrow made again"
                );
                Ok(None)
            }
            Transition::Unchanged(s)
                if matches!(s.state, OrderState::Paying | OrderState::Paid) =>
            {
                Ok(None)
            }
            Transition::Unchanged(s) if s.state.is_final() => {
                // Ended meanwhile: the next delivery refunds it.
                Ok(Some(Outcome::Retry(format!(
                    "order {} ended ({}) while its approved payment was handled",
                    order.order_id, s.state
                ))))
            }
            other => Ok(Some(Outcome::Retry(format!(
                "approved payment for order {} held in Redis past its deadline ({other:?}): the sweeper ends it, then it is refunded",
                order.order_id
            )))),
        }
    }

    /// Hands the order to the writer and waits for its batch.
    async fn book(&self, row: OrderRow) -> anyhow::Result<PaidOutcome> {
        self.jobs.submit(row).await
    }

    /// PAYING → PAID in Redis, after MySQL booked it.
    async fn confirm_in_redis(&self, orders: &Orders, order: OrderId) -> anyhow::Result<()> {
        match orders.confirm(order).await? {
            Transition::Applied(_) => tracing::info!("order paid"),
            Transition::Unchanged(s) if s.state == OrderState::Paid => {
                tracing::debug!("the order was paid already in Redis");
            }
            Transition::NotFound => {
                tracing::warn!("order paid in MySQL; Redis does not know it (lost?)");
                // Its units are still in Redis's `avail` (Redis forgot the reserve): take them.
                self.repair_stock(orders).await;
            }
            Transition::Unchanged(s) | Transition::NotDue(s) | Transition::DeadlinePassed(s) => {
                metrics::counter!("dropline_confirm_conflicts_total").increment(1);
                tracing::error!(
                    redis_state = %s.state,
                    "protocol breach: the order is paid in MySQL but ended otherwise in Redis; the MySQL record stands"
                );
            }
        }
        Ok(())
    }

    /// Sets the sale's Redis stock counters right from MySQL ([`repair::repair`]). A failure
    /// is logged, not retried: the recorder's stock check repairs the sale soon after.
    async fn repair_stock(&self, orders: &Orders) {
        if let Err(error) = repair::repair(orders, &self.mysql, "confirm").await {
            tracing::warn!(
                error = format!("{error:#}"),
                "could not repair the sale's stock counters from MySQL; the recorder's stock check will"
            );
        }
    }

    /// Publishes `order.confirmed` with the buyer's and the product's names (looked up
    /// together with the other orders confirmed at the same time: [`ledger::recipients`]).
    /// Its id is fixed per order ([`confirmation_id`]).
    async fn announce(&self, order: &OrderRef) -> anyhow::Result<()> {
        self.tell_buyer(
            order,
            kinds::ORDER_CONFIRMED,
            Some(confirmation_id(order.order_id)),
            |Recipient {
                 email,
                 name,
                 product,
             }| OrderConfirmed {
                order: order.clone(),
                email,
                name,
                product,
            },
        )
        .await
    }

    /// Publishes `order.refunded` so the buyer hears why the money came back. Every copy of
    /// a refunded completion publishes it again (the refund itself is idempotent); the mail
    /// worker sends one e-mail per order.
    async fn announce_refund(&self, order: &OrderRef, reason: RefundReason) -> anyhow::Result<()> {
        self.tell_buyer(
            order,
            kinds::ORDER_REFUNDED,
            None,
            |Recipient {
                 email,
                 name,
                 product,
             }| OrderRefunded {
                order: order.clone(),
                email,
                name,
                product,
                reason: reason.as_str().to_owned(),
            },
        )
        .await
    }

    /// Publishes a message of `kind` for the order's buyer (`id`: a fixed envelope id, or a
    /// fresh one); nothing when MySQL has no buyer or product row (logged).
    async fn tell_buyer<T: serde::Serialize>(
        &self,
        order: &OrderRef,
        kind: &str,
        id: Option<Uuid>,
        message: impl FnOnce(Recipient) -> T,
    ) -> anyhow::Result<()> {
        let Some(recipient) = self.recipient(order).await? else {
            tracing::warn!(user = %order.user_id, kind, "the buyer (or product) has no MySQL row: not published");
            return Ok(());
        };
        let mut envelope = Envelope::new(kind, message(recipient));
        if let Some(id) = id {
            envelope.id = id;
        }
        let payload = envelope
            .to_json()
            .with_context(|| format!("serialising {kind}"))?;
        self.broker
            .publish(kind, &envelope.id.to_string(), &payload)
            .await
            .with_context(|| format!("publishing {kind} of order {}", order.order_id))
    }

    /// The buyer and product of an order (looked up a batch at a time: [`ledger::recipients`]).
    async fn recipient(&self, order: &OrderRef) -> anyhow::Result<Option<Recipient>> {
        self.recipients
            .submit((order.sale_id, order.user_id))
            .await
            .with_context(|| format!("reading the buyer and product of order {}", order.order_id))
    }

    /// Gives an approved payment back. For an oversell the order is failed in Redis first, so
    /// a later copy of this message finds it ended and never books it.
    async fn refund(
        &self,
        orders: &Orders,
        order: &OrderRef,
        reason: RefundReason,
    ) -> anyhow::Result<Outcome> {
        if let RefundReason::WouldOversell = reason {
            let released = orders.release(order.order_id, Target::Failed).await?;
            tracing::info!(redis = ?released.state(), "oversold order released in Redis");
            // MySQL is full where Redis offered a unit: Redis lost writes (a failover). Take
            // the units MySQL sold out of `avail`, the one just released included, rather
            // than offer them to the next buyer.
            self.repair_stock(orders).await;
        }
        let decision = self
            .provider
            .refund(order.order_id)
            .await
            .with_context(|| format!("refunding order {}", order.order_id))?;
        ledger::mark_refunded(&self.mysql, order.order_id).await?;
        metrics::counter!("dropline_refunds_total", "reason" => reason.as_str()).increment(1);
        // Only money that went back is announced: a stray approval of a charge the provider
        // declined (or never made) refunds nothing and mails nothing.
        if matches!(decision, Decision::Refunded { .. }) {
            self.announce_refund(order, reason).await?;
        }
        match reason {
            RefundReason::WouldOversell => tracing::error!(
                decision = ?decision,
                "approved payment refunded: booking it would sell more than the stock (Redis and MySQL disagree; check the sale)"
            ),
            RefundReason::Ended => tracing::error!(
                decision = ?decision,
                "approved payment refunded: the order ended before its payment was confirmed"
            ),
        }
        Ok(Outcome::Ack)
    }
}

/// The MySQL row to book: the message's order, with Redis's deadline when Redis has it.
fn order_row(order: &OrderRef, current: Option<&Order>) -> OrderRow {
    let now = Utc::now();
    OrderRow {
        id: order.order_id,
        sale: order.sale_id,
        user: order.user_id,
        quantity: order.quantity,
        amount: order.amount,
        currency: order.currency.clone(),
        state: OrderState::Paid,
        deadline: current.map_or(now, |o| from_ms(o.deadline_ms)),
        idempotency_key: order.idempotency_key.clone(),
        created: from_ms(order.created_ms),
        updated: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmation_ids_are_fixed_per_order_and_never_an_order_id() {
        let order = OrderId::new_v7();
        let id = confirmation_id(order);
        assert_eq!(id, confirmation_id(order));
        assert_ne!(id, order.into_uuid());
        assert_eq!(id.get_version_num(), 8);
        assert_ne!(confirmation_id(OrderId::new_v7()), id);
    }
}
