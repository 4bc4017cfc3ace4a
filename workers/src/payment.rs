//! The payment worker: consumes `<prefix>.payments` (`payment.requested`), charges the order
//! with the payment provider, records the outcome in MySQL and publishes `payment.completed`
//! for the confirm worker.
//!
//! For each delivery:
//!
//! 1. [`PaymentProvider::charge`] with the order id as the idempotency key: the provider
//!    decides an order's payment once, and every later call (a redelivery, the buyer paying
//!    again, a duplicate publish) gets that first decision back, never a second charge.
//! 2. [`ledger::record_payments`] writes the decision (concurrent payments' rows in one
//!    statement, [`batch`]) (`approved` with the provider's charge
//!    reference, `declined` with its reason) unless the order has a payment row already; the
//!    row that stands is the one this worker reports, so two messages never make two payments.
//! 3. `payment.completed` ([`PaymentCompleted`], message id = the payment row's id, the same
//!    for every copy) is published and confirmed by the broker, and only then is the delivery
//!    acked. A crash anywhere before the ack redelivers the request, which repeats the same
//!    steps with the same results: the confirm worker is idempotent, so a second completion is
//!    harmless.
//!
//! A [`Decision::Refunded`] means the order was charged and then given back (the confirm
//! worker could not confirm it): the payment row is marked refunded and a **declined**
//! completion is published (`provider_ref` = `refunded:<charge reference>`). Never an approved
//! one: the confirm worker must not book a payment whose money went back. A declined
//! completion for an order that has ended changes nothing (DESIGN §5).
//!
//! Deliveries are handled concurrently, up to `workers.payment_prefetch` per process: each
//! mostly waits for the provider.
//!
//! Outcomes: a malformed message (bad JSON, unknown fields, impossible values) is parked at
//! once; a provider, MySQL or RabbitMQ failure is retried after `amqp.retry_delay_ms` (and
//! parked after `amqp.max_attempts`).

use std::sync::Arc;

use crate::batch::{self, Batcher};
use crate::consumer::{Message, Outcome, consume_with_prefetch};
use crate::envelope;
use crate::ledger::{self, PaymentRow};
use anyhow::Context;
use dropline_core::Config;
use dropline_core::clients::amqp::{Broker, PAYMENTS};
use dropline_core::clients::deps::Deps;
use dropline_core::clients::redis::Redis;
use dropline_core::ids::OrderId;
use dropline_core::messages::{
    Envelope, OrderRef, PaymentCompleted, PaymentEvent, PaymentOutcome, PaymentRequested, kinds,
};
use dropline_core::orders::{OrderState, Orders};
use sqlx::MySqlPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::provider::{ChargeRequest, Decision, PaymentProvider};

/// `payments.provider_ref` is VARCHAR(128).
const MAX_PROVIDER_REF: usize = 128;

/// Consumes the payments queue until `shutdown` fires; returns after the deliveries in hand
/// are finished.
pub async fn run(
    config: &Config,
    deps: &Deps,
    provider: Arc<dyn PaymentProvider>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let worker = Arc::new(PaymentWorker {
        reporter: Reporter::new(deps)?,
        redis: deps.redis()?.clone(),
        provider,
        in_hand: InHand::default(),
    });
    tracing::info!(provider = ?worker.provider, "payment worker starting");
    let handler = {
        let worker = Arc::clone(&worker);
        move |message: Message| {
            let worker = Arc::clone(&worker);
            async move { worker.handle(message).await }
        }
    };
    let result = consume_with_prefetch(
        worker.reporter.broker.clone(),
        PAYMENTS,
        config.workers.payment_prefetch,
        handler,
        shutdown,
    )
    .await;
    tracing::info!("payment worker stopped");
    result
}

struct PaymentWorker {
    reporter: Reporter,
    redis: Redis,
    provider: Arc<dyn PaymentProvider>,
    in_hand: InHand,
}

/// The orders whose payment this process is handling right now. A copy of a request for one of
/// them is acked at once instead of waiting beside the first for the provider in a prefetch
/// slot: the first delivery finishes the order's payment (or is retried), so the copy adds
/// nothing, and a buyer's copies can no longer fill the slots other buyers' payments need.
#[derive(Default)]
struct InHand(std::sync::Mutex<std::collections::HashSet<OrderId>>);

impl InHand {
    /// Takes `order` in hand; `None` when it already is.
    fn take(&self, order: OrderId) -> Option<InHandGuard<'_>> {
        let mut orders = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        orders
            .insert(order)
            // `then`, not `then_some`: a guard built for nothing would be dropped here, under
            // the lock its drop takes.
            .then(|| InHandGuard { set: self, order })
    }
}

/// Lets the order go when the delivery is done (or dropped).
struct InHandGuard<'a> {
    set: &'a InHand,
    order: OrderId,
}

impl Drop for InHandGuard<'_> {
    fn drop(&mut self) {
        let mut orders = self
            .set
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        orders.remove(&self.order);
    }
}

/// Records a provider's decision about an order in MySQL and announces it with
/// `payment.completed` (steps 2 and 3 above). The expiry worker uses it too, for a payment
/// the provider decided but nobody reported (the buyer's request was lost, or the payment
/// worker died before publishing).
#[derive(Clone)]
pub struct Reporter {
    broker: Broker,
    mysql: MySqlPool,
    /// Concurrent payments' rows go to MySQL together ([`batch`]).
    payments: Batcher<PaymentRow, PaymentRow>,
    _writer: Arc<batch::Writer>,
}

/// Payment rows written in one statement at most.
const MAX_BATCH: usize = 256;

impl PaymentWorker {
    #[tracing::instrument(skip_all, fields(message_id = message.message_id.as_deref().unwrap_or(""), order, attempt = message.attempt))]
    async fn handle(&self, message: Message) -> Outcome {
        let body = match envelope::Body::parse(&message.data) {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let kind = match body.kind() {
            Ok(kind) => kind,
            Err(outcome) => return outcome,
        };
        if kind == kinds::PAYMENT_EVENT {
            return match body.decode::<PaymentEvent>("payment", kinds::PAYMENT_EVENT) {
                Ok(envelope) => self.handle_event(envelope.data).await,
                Err(outcome) => outcome,
            };
        }
        let request: PaymentRequested = match body.decode("payment", kinds::PAYMENT_REQUESTED) {
            Ok(envelope) => envelope.data,
            Err(outcome) => return outcome,
        };
        tracing::Span::current().record("order", tracing::field::display(request.order.order_id));
        if let Err(reason) = validate(&request.order) {
            return envelope::malformed(kinds::PAYMENT_REQUESTED, reason);
        }
        let Some(_in_hand) = self.in_hand.take(request.order.order_id) else {
            metrics::counter!("dropline_payment_copies_acked_total").increment(1);
            tracing::info!("a copy of a payment already in hand: acked");
            return Outcome::Ack;
        };
        match self.pay(&request).await {
            Ok(outcome) => {
                tracing::info!(outcome = ?outcome, "payment completed");
                Outcome::Ack
            }
            Err(error) => {
                metrics::counter!("dropline_payment_failures_total").increment(1);
                tracing::warn!(
                    error = format!("{error:#}"),
                    "payment not completed; will retry"
                );
                Outcome::Retry(format!("{error:#}"))
            }
        }
    }

    /// A `payment.event` (Stripe's webhook): the order's payment is read back from the
    /// provider and, once decided, reported like a charge. An order no longer PAYING (or
    /// unknown) has nothing to change: acked.
    async fn handle_event(&self, event: PaymentEvent) -> Outcome {
        let order_id = event.order_id;
        tracing::Span::current().record("order", tracing::field::display(order_id));
        let orders = Orders::new(&self.redis, event.sale_id);
        let current = match orders.get(order_id).await {
            Ok(Some(current)) if current.state == OrderState::Paying => current,
            Ok(other) => {
                tracing::info!(state = ?other.map(|o| o.state), intent = event.intent_id, "a payment event for an order not paying: nothing to do");
                return Outcome::Ack;
            }
            Err(error) => return Outcome::Retry(format!("{error:#}")),
        };
        let Some(_in_hand) = self.in_hand.take(order_id) else {
            // The payment in hand reads the intent itself.
            return Outcome::Ack;
        };
        let result = async {
            let Some(decision) = self
                .provider
                .follow(order_id, event.intent_id.clone())
                .await?
            else {
                return Ok(None);
            };
            if matches!(decision, Decision::Pending { .. }) {
                return Ok(None);
            }
            self.reporter
                .report(&current.reference(), &decision)
                .await
                .map(Some)
        }
        .await;
        match result {
            Ok(outcome) => {
                tracing::info!(event = event.event_id, outcome = ?outcome, "payment event handled");
                Outcome::Ack
            }
            Err(error) => {
                metrics::counter!("dropline_payment_failures_total").increment(1);
                tracing::warn!(
                    error = format!("{error:#}"),
                    "payment event not handled; will retry"
                );
                Outcome::Retry(format!("{error:#}"))
            }
        }
    }

    /// Charge, record, publish. Every step is idempotent on the order id.
    async fn pay(&self, request: &PaymentRequested) -> anyhow::Result<Option<PaymentOutcome>> {
        let order = &request.order;
        let decision = self
            .provider
            .charge(ChargeRequest {
                order: order.order_id,
                sale: order.sale_id,
                amount: order.amount,
                currency: order.currency.clone(),
                card_token: request.card_token.clone(),
            })
            .await
            .with_context(|| format!("charging order {}", order.order_id))?;
        if let Decision::Pending { status } = &decision {
            // The buyer's next step is recorded with the provider's claim; the outcome comes
            // by the webhook or the sweeper.
            metrics::counter!("dropline_payments_pending_total").increment(1);
            tracing::info!(status, "payment pending at the provider");
            return Ok(None);
        }
        self.reporter.report(order, &decision).await.map(Some)
    }
}

impl Reporter {
    pub fn new(deps: &Deps) -> anyhow::Result<Self> {
        let mysql = deps.mysql()?.clone();
        let pool = mysql.clone();
        let (payments, writer) = batch::start("payments", MAX_BATCH, move |rows| {
            let pool = pool.clone();
            async move { write_payments(&pool, rows).await }
        });
        Ok(Self {
            broker: deps.broker()?.clone(),
            mysql,
            payments,
            _writer: Arc::new(writer),
        })
    }

    /// Writes the payment row (unless the order has one: the standing row wins) and publishes
    /// `payment.completed` with the standing outcome, confirmed by the broker.
    pub async fn report(
        &self,
        order: &OrderRef,
        decision: &Decision,
    ) -> anyhow::Result<PaymentOutcome> {
        let (status, provider_ref) = match decision {
            Decision::Approved { reference } => ("approved", reference.clone()),
            Decision::Declined { reason } => ("declined", reason.clone()),
            Decision::Refunded { reference } => ("refunded", reference.clone()),
            Decision::Pending { status } => {
                anyhow::bail!(
                    "order {}: a pending payment ({status}) has no outcome to report",
                    order.order_id
                )
            }
        };
        let standing = self
            .payments
            .submit(PaymentRow {
                id: Uuid::now_v7(),
                order: order.order_id,
                sale: order.sale_id,
                amount: order.amount,
                currency: order.currency.clone(),
                status: status.to_owned(),
                provider_ref: truncate(&provider_ref, MAX_PROVIDER_REF),
            })
            .await?;
        let (outcome, provider_ref) = match (decision, standing.status.as_str()) {
            // The money went back: never report it approved (see the module docs).
            (Decision::Refunded { reference }, standing_status) => {
                if standing_status == "approved" {
                    ledger::mark_refunded(&self.mysql, order.order_id).await?;
                }
                (
                    PaymentOutcome::Declined,
                    truncate(&format!("refunded:{reference}"), MAX_PROVIDER_REF),
                )
            }
            (_, "approved") => (PaymentOutcome::Approved, standing.provider_ref.clone()),
            (_, "declined" | "refunded") => {
                (PaymentOutcome::Declined, standing.provider_ref.clone())
            }
            (_, other) => anyhow::bail!(
                "the payment of order {} has an unknown status `{other}`",
                order.order_id
            ),
        };
        if outcome == PaymentOutcome::Approved && !matches!(decision, Decision::Approved { .. }) {
            // The provider decides once, so this is a row written by something else.
            tracing::warn!(
                decision = ?decision,
                "the recorded payment is approved but the provider's decision is not; reporting the recorded one"
            );
        }
        let completed = Envelope {
            // The same id for every copy: one payment, one completion.
            id: standing.id,
            ..Envelope::new(
                kinds::PAYMENT_COMPLETED,
                PaymentCompleted {
                    order: order.clone(),
                    outcome,
                    payment_id: standing.id,
                    provider_ref,
                },
            )
        };
        let payload = completed
            .to_json()
            .context("serialising payment.completed")?;
        self.broker
            .publish(
                kinds::PAYMENT_COMPLETED,
                &completed.id.to_string(),
                &payload,
            )
            .await
            .with_context(|| format!("publishing payment.completed of order {}", order.order_id))?;
        let label = match (decision, outcome) {
            (Decision::Refunded { .. }, _) => "refunded",
            (_, PaymentOutcome::Approved) => "approved",
            (_, PaymentOutcome::Declined) => "declined",
        };
        metrics::counter!("dropline_payments_total", "outcome" => label).increment(1);
        Ok(outcome)
    }
}

/// The payments writer's call: one statement for the batch; if MySQL refuses it, each row on
/// its own, so one bad row cannot hold the others back.
async fn write_payments(
    pool: &MySqlPool,
    rows: Vec<PaymentRow>,
) -> Vec<anyhow::Result<PaymentRow>> {
    match ledger::record_payments(pool, &rows).await {
        Ok(standing) => standing.into_iter().map(Ok).collect(),
        Err(error) if rows.len() == 1 => vec![Err(error)],
        Err(error) => {
            tracing::warn!(
                size = rows.len(),
                error = format!("{error:#}"),
                "payment batch failed; writing its rows one by one"
            );
            let mut results = Vec::with_capacity(rows.len());
            for row in &rows {
                results.push(ledger::record_payment(pool, row).await);
            }
            results
        }
    }
}

/// Checks what MySQL would refuse anyway, so a bad message is parked instead of retried.
pub(crate) fn validate(order: &OrderRef) -> Result<(), String> {
    if order.quantity < 1 || order.quantity > i64::from(i32::MAX) {
        return Err(format!("quantity {} out of range", order.quantity));
    }
    if order.amount < 0 {
        return Err(format!("negative amount {}", order.amount));
    }
    if order.currency.len() != 3 || !order.currency.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!(
            "currency `{}` is not an ISO 4217 code",
            order.currency
        ));
    }
    if order.idempotency_key.is_empty()
        || order.idempotency_key.len() > dropline_core::orders::MAX_IDEMPOTENCY_KEY_LEN
    {
        return Err("idempotency key must be 1 to 64 bytes".into());
    }
    Ok(())
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dropline_core::ids::{OrderId, SaleId, UserId};

    fn order() -> OrderRef {
        OrderRef {
            order_id: OrderId::new_v7(),
            sale_id: SaleId::new_v7(),
            user_id: UserId::new_v7(),
            quantity: 1,
            amount: 100,
            currency: "KRW".into(),
            idempotency_key: "k".into(),
            created_ms: 0,
        }
    }

    #[test]
    fn validation_refuses_what_mysql_would() {
        assert!(validate(&order()).is_ok());
        assert!(
            validate(&OrderRef {
                quantity: 0,
                ..order()
            })
            .is_err()
        );
        assert!(
            validate(&OrderRef {
                amount: -1,
                ..order()
            })
            .is_err()
        );
        assert!(
            validate(&OrderRef {
                currency: "KR1".into(),
                ..order()
            })
            .is_err()
        );
        assert!(
            validate(&OrderRef {
                idempotency_key: String::new(),
                ..order()
            })
            .is_err()
        );
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("가나다", 4), "가");
        assert_eq!(truncate("abcdef", 3), "abc");
    }
}
