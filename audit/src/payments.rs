//! The money reconciliation of one sale (`dropline payments reconcile <sale>`,
//! design/payments.md "§6 adds"): what Stripe says it charged and refunded, held against the
//! books (MySQL's `orders`, `payments` and the claim rows of `payment_intents`). Read-only on
//! both sides.
//!
//! # What is a break
//!
//! Per order of the sale, with its claimed PaymentIntent read back from Stripe (and that
//! intent's refunds):
//!
//! | break | when |
//! | --- | --- |
//! | `unbooked_charge` | the intent succeeded and nothing was refunded, but the order is not paid (and not paying with time left), or MySQL has no order at all; also an intent with our sale's metadata that no claim recorded and that succeeded |
//! | `paid_and_refunded` | the order is paid and its intent was refunded |
//! | `paid_without_charge` | the order is paid (amount > 0) and there is no succeeded intent for it |
//! | `amount_mismatch` | the order is paid and the intent's amount or currency is not the order's |
//! | `ledger_mismatch` | the `payments` row disagrees with Stripe (approved without a succeeded intent, another reference, not refunded where Stripe refunded an order that is not paid), or the claim names an intent Stripe does not know |
//! | `dangling_intent` | an intent that can still move (`requires_*`, `processing`) on an order that ended, or one with our metadata that no claim recorded |
//!
//! An order PAYING with its deadline still ahead is in flight: its intent is not judged. The
//! check is meant for a settled sale (after `sale audit --settled`), where nothing is.
//!
//! # Cost
//!
//! MySQL: two queries over the sale's claims and orders (indexes `ix_payment_intents_sale`,
//! `ix_orders_sale_status`). Stripe: two `GET`s per claimed intent ([`READ_CONCURRENCY`] at a
//! time) and one `GET /v1/payment_intents` per 100 intents of the account newer than a day
//! before the sale was created (the list is newest first and read until it is older).

use std::collections::{BTreeMap, HashSet};

use anyhow::Context;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use dropline_core::ids::{OrderId, SaleId};
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt, stream};
use serde::Serialize;
use serde_json::Value;
use sqlx::MySqlPool;

/// Stripe reads in flight at once (Stripe allows 100 requests a second in live mode).
pub const READ_CONCURRENCY: usize = 4;

/// What reconciliation needs from Stripe: reads only. Implemented by the workers' Stripe
/// client; the binary hands it in.
pub trait IntentSource: Send + Sync {
    /// `GET /v1/payment_intents/{id}`; `None` when Stripe does not know it (404).
    fn intent<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<Option<Value>>>;
    /// `GET /v1/refunds?payment_intent={id}`: the refunds' objects.
    fn refunds<'a>(&'a self, intent: &'a str) -> BoxFuture<'a, anyhow::Result<Vec<Value>>>;
    /// One page of `GET /v1/payment_intents?limit=100[&starting_after=…]`: the intents and
    /// whether there are more.
    fn page<'a>(
        &'a self,
        starting_after: Option<&'a str>,
    ) -> BoxFuture<'a, anyhow::Result<(Vec<Value>, bool)>>;
}

/// The kinds of break (their JSON spelling is the contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    UnbookedCharge,
    PaidAndRefunded,
    PaidWithoutCharge,
    AmountMismatch,
    LedgerMismatch,
    DanglingIntent,
}

/// One break: a JSON line of `dropline payments reconcile`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    #[serde(rename = "break")]
    pub kind: BreakKind,
    pub sale_id: SaleId,
    /// `None` for an intent no claim recorded whose metadata names an order id we cannot read.
    pub order_id: Option<OrderId>,
    pub intent_id: Option<String>,
    /// MySQL's `orders.status` (`None`: no row).
    pub order_status: Option<String>,
    /// MySQL's `payments.status` (`None`: no row).
    pub payment_status: Option<String>,
    /// Stripe's intent `status` (`None`: no intent, or Stripe does not know it).
    pub intent_status: Option<String>,
    /// The order's amount and currency (minor units), when MySQL has the order.
    pub amount: Option<i64>,
    pub currency: Option<String>,
    /// What the intent is for (minor units, lower-case currency), when there is one.
    pub intent_amount: Option<i64>,
    pub intent_currency: Option<String>,
    /// The sum of the intent's refunds (minor units).
    pub refunded: i64,
    /// A sentence for the operator.
    pub detail: String,
}

/// What reconciling a sale found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reconciliation {
    /// Orders of the sale in MySQL.
    pub orders: usize,
    /// Intents read back from Stripe (claimed ones and unclaimed ones with our metadata).
    pub intents: usize,
    /// Orders skipped because their payment is in flight.
    pub in_flight: usize,
    pub breaks: Vec<Break>,
}

/// The books' side of one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Books {
    pub order: OrderId,
    /// `orders.status`, `amount`, `currency`, `deadline_at` (`None`: no row).
    pub status: Option<String>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub deadline: Option<DateTime<Utc>>,
    /// `payments.status` and `provider_ref`.
    pub payment_status: Option<String>,
    pub payment_ref: Option<String>,
    /// The claim's recorded intent.
    pub intent_id: Option<String>,
}

/// Stripe's side of one intent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Charge {
    /// `None`: Stripe does not know the intent the claim names.
    pub status: Option<String>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    /// The sum of its refunds (pending or succeeded; failed and canceled ones give nothing
    /// back).
    pub refunded: i64,
}

impl Charge {
    /// Reads an intent and its refunds as Stripe returned them.
    pub fn from_stripe(intent: Option<&Value>, refunds: &[Value]) -> Self {
        let refunded = refunds
            .iter()
            .filter(|r| !matches!(r["status"].as_str(), Some("failed" | "canceled")))
            .filter_map(|r| r["amount"].as_i64())
            .filter(|amount| *amount > 0)
            // Saturating: the amounts are Stripe's, and a sum must not overflow.
            .fold(0_i64, i64::saturating_add);
        Self {
            status: intent.and_then(|i| i["status"].as_str()).map(str::to_owned),
            amount: intent.and_then(|i| i["amount"].as_i64()),
            currency: intent
                .and_then(|i| i["currency"].as_str())
                .map(str::to_owned),
            refunded,
        }
    }
}

/// An intent status that can still end in a charge.
fn can_still_charge(status: &str) -> bool {
    status.starts_with("requires_") || status == "processing"
}

/// Judges one order (pure): its books, its claimed intent as Stripe has it (`None` when the
/// claim recorded no intent), at `now`. `Err(())` when the order is in flight (not judged).
#[allow(clippy::result_unit_err)]
pub fn judge(
    sale: SaleId,
    books: &Books,
    charge: Option<&Charge>,
    now: DateTime<Utc>,
) -> Result<Vec<Break>, ()> {
    let status = books.status.as_deref();
    let in_flight = matches!(status, Some("held"))
        || (status == Some("paying") && books.deadline.is_none_or(|d| d > now));
    let paid = status == Some("paid");
    let free = books.amount == Some(0);
    let mut breaks = Vec::new();
    let mut add = |kind: BreakKind, detail: String| {
        breaks.push(Break {
            kind,
            sale_id: sale,
            order_id: Some(books.order),
            intent_id: books.intent_id.clone(),
            order_status: books.status.clone(),
            payment_status: books.payment_status.clone(),
            intent_status: charge.and_then(|c| c.status.clone()),
            amount: books.amount,
            currency: books.currency.clone(),
            intent_amount: charge.and_then(|c| c.amount),
            intent_currency: charge.and_then(|c| c.currency.clone()),
            refunded: charge.map_or(0, |c| c.refunded),
            detail,
        });
    };
    let Some(charge) = charge else {
        if in_flight {
            return Err(());
        }
        if paid && !free {
            add(
                BreakKind::PaidWithoutCharge,
                "the order is paid but no PaymentIntent was recorded for it".into(),
            );
        }
        if books.payment_status.as_deref() == Some("approved") && !free {
            add(
                BreakKind::LedgerMismatch,
                "the payments row is approved but no PaymentIntent was recorded".into(),
            );
        }
        return Ok(breaks);
    };
    let Some(intent_status) = charge.status.as_deref() else {
        add(
            BreakKind::LedgerMismatch,
            "the claim names a PaymentIntent Stripe does not know".into(),
        );
        if paid {
            add(
                BreakKind::PaidWithoutCharge,
                "the order is paid but its PaymentIntent does not exist at Stripe".into(),
            );
        }
        return Ok(breaks);
    };
    let succeeded = intent_status == "succeeded";
    let refunded = charge.refunded > 0;
    if succeeded && !refunded {
        if paid {
            let currency = books.currency.as_deref().map(str::to_ascii_lowercase);
            if charge.amount != books.amount || charge.currency != currency {
                add(
                    BreakKind::AmountMismatch,
                    "Stripe charged another amount or currency than the order's".into(),
                );
            }
            if books.payment_status.as_deref() != Some("approved")
                || books.payment_ref != books.intent_id
            {
                add(
                    BreakKind::LedgerMismatch,
                    "the payments row is not the approved charge of this intent".into(),
                );
            }
        } else if in_flight {
            return Err(());
        } else {
            add(
                BreakKind::UnbookedCharge,
                match status {
                    None => "Stripe charged an order MySQL does not have".into(),
                    Some(s) => format!(
                        "Stripe charged an order that is {s}, not paid, and nothing was refunded"
                    ),
                },
            );
        }
    } else if succeeded {
        if paid {
            add(
                BreakKind::PaidAndRefunded,
                "the order is paid but its charge was refunded".into(),
            );
        } else if books.payment_status.as_deref() != Some("refunded") {
            add(
                BreakKind::LedgerMismatch,
                "Stripe refunded the charge; the payments row does not say refunded".into(),
            );
        }
    } else {
        if in_flight {
            return Err(());
        }
        if paid && !free {
            add(
                BreakKind::PaidWithoutCharge,
                format!("the order is paid but its PaymentIntent is {intent_status}"),
            );
        }
        if can_still_charge(intent_status) {
            add(
                BreakKind::DanglingIntent,
                format!(
                    "the order ended but its PaymentIntent is {intent_status} and can still charge: cancel it"
                ),
            );
        }
        if books.payment_status.as_deref() == Some("approved") {
            add(
                BreakKind::LedgerMismatch,
                format!("the payments row is approved but the PaymentIntent is {intent_status}"),
            );
        }
    }
    Ok(breaks)
}

/// Whether a PaymentIntent can have refunds: only one with a charge. An intent whose
/// `latest_charge` is present and null (never confirmed, or canceled before a charge) has
/// none, so its refunds are not asked for: one call fewer, and localstripe answers 500 to that
/// list (it dereferences the missing charge) where Stripe answers an empty list. An intent
/// without the field (an API version before it) is asked.
fn may_have_refunds(intent: &Value) -> bool {
    intent
        .get("latest_charge")
        .is_none_or(|charge| !charge.is_null())
}

/// Judges an intent with our sale's metadata that no claim recorded (an orphan: created by a
/// worker that lost the race to record its id, and cancelled by it unless it died first).
pub fn judge_orphan(sale: SaleId, intent: &Value, refunds: &[Value]) -> Option<Break> {
    let charge = Charge::from_stripe(Some(intent), refunds);
    let status = charge.status.clone().unwrap_or_default();
    let (kind, detail) = if status == "succeeded" && charge.refunded == 0 {
        (
            BreakKind::UnbookedCharge,
            "a PaymentIntent no claim recorded was charged".to_owned(),
        )
    } else if can_still_charge(&status) {
        (
            BreakKind::DanglingIntent,
            format!(
                "a PaymentIntent no claim recorded is {status} and can still charge: cancel it"
            ),
        )
    } else {
        return None;
    };
    Some(Break {
        kind,
        sale_id: sale,
        order_id: intent["metadata"]["dropline_order_id"]
            .as_str()
            .and_then(|s| OrderId::parse_str(s).ok()),
        intent_id: intent["id"].as_str().map(str::to_owned),
        order_status: None,
        payment_status: None,
        intent_status: Some(status),
        amount: None,
        currency: None,
        intent_amount: charge.amount,
        intent_currency: charge.currency,
        refunded: charge.refunded,
        detail,
    })
}

/// A sale MySQL does not know.
#[derive(Debug, thiserror::Error)]
#[error("no sale {0} in MySQL")]
pub struct UnknownSale(pub SaleId);

type BooksRow = (
    OrderId,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The books of every order of `sale` that has an order row or a claim row.
pub async fn books(mysql: &MySqlPool, sale: SaleId) -> anyhow::Result<Vec<Books>> {
    let orders: Vec<BooksRow> = sqlx::query_as(
        "SELECT o.id, o.status, o.amount, o.currency, o.deadline_at, p.status, p.provider_ref, \
                i.intent_id \
         FROM orders o \
         LEFT JOIN payments p ON p.order_id = o.id \
         LEFT JOIN payment_intents i ON i.order_id = o.id \
         WHERE o.sale_id = ?",
    )
    .bind(sale)
    .fetch_all(mysql)
    .await
    .with_context(|| format!("reading the orders of sale {sale}"))?;
    // Claims whose order MySQL does not have (yet): the recorder writes orders from the
    // outbox, and a lost Redis write may never reach it.
    let claims: Vec<BooksRow> = sqlx::query_as(
        "SELECT i.order_id, NULL, NULL, NULL, NULL, p.status, p.provider_ref, i.intent_id \
         FROM payment_intents i \
         LEFT JOIN orders o ON o.id = i.order_id \
         LEFT JOIN payments p ON p.order_id = i.order_id \
         WHERE i.sale_id = ? AND o.id IS NULL",
    )
    .bind(sale)
    .fetch_all(mysql)
    .await
    .with_context(|| format!("reading the payment claims of sale {sale}"))?;
    Ok(orders
        .into_iter()
        .chain(claims)
        .map(
            |(
                order,
                status,
                amount,
                currency,
                deadline,
                payment_status,
                payment_ref,
                intent_id,
            )| {
                Books {
                    order,
                    status,
                    amount,
                    currency,
                    deadline,
                    payment_status,
                    payment_ref,
                    intent_id,
                }
            },
        )
        .collect())
}

/// Reconciles `sale` at `now` (see the module docs). An error means it could not be checked.
pub async fn reconcile(
    mysql: &MySqlPool,
    stripe: &dyn IntentSource,
    sale: SaleId,
    now: DateTime<Utc>,
) -> anyhow::Result<Reconciliation> {
    let created: Option<(DateTime<Utc>,)> =
        sqlx::query_as("SELECT created_at FROM sales WHERE id = ?")
            .bind(sale)
            .fetch_optional(mysql)
            .await
            .with_context(|| format!("reading sale {sale}"))?;
    let Some((created,)) = created else {
        return Err(UnknownSale(sale).into());
    };
    let books = books(mysql, sale).await?;
    let mut report = Reconciliation {
        orders: books.iter().filter(|b| b.status.is_some()).count(),
        ..Reconciliation::default()
    };
    // Read each claimed intent and its refunds, a few at a time.
    let charges: BTreeMap<String, Charge> = stream::iter(
        books
            .iter()
            .filter_map(|b| b.intent_id.clone())
            .collect::<HashSet<_>>(),
    )
    .map(|id| async move {
        let intent = stripe
            .intent(&id)
            .await
            .with_context(|| format!("reading PaymentIntent {id} from Stripe"))?;
        let refunds = match &intent {
            Some(intent) if may_have_refunds(intent) => stripe
                .refunds(&id)
                .await
                .with_context(|| format!("reading the refunds of {id} from Stripe"))?,
            _ => Vec::new(),
        };
        anyhow::Ok((id, Charge::from_stripe(intent.as_ref(), &refunds)))
    })
    .buffer_unordered(READ_CONCURRENCY)
    .try_collect()
    .await?;
    report.intents = charges.len();
    for books in &books {
        let charge = books.intent_id.as_ref().and_then(|id| charges.get(id));
        match judge(sale, books, charge, now) {
            Ok(found) => report.breaks.extend(found),
            Err(()) => report.in_flight += 1,
        }
    }
    // Intents with this sale's metadata that no claim recorded.
    let claimed: HashSet<&str> = books
        .iter()
        .filter_map(|b| b.intent_id.as_deref())
        .collect();
    let oldest = created - ChronoDuration::days(1);
    let sale_text = sale.to_string();
    let mut after: Option<String> = None;
    loop {
        let (page, more) = stripe
            .page(after.as_deref())
            .await
            .context("listing PaymentIntents at Stripe")?;
        let mut older = !page.is_empty();
        for intent in &page {
            let made = intent["created"]
                .as_i64()
                .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0));
            older &= made.is_some_and(|t| t < oldest);
            let ours = intent["metadata"]["dropline_sale_id"].as_str() == Some(&sale_text);
            let id = intent["id"].as_str().unwrap_or_default();
            if !ours || claimed.contains(id) {
                continue;
            }
            report.intents += 1;
            let refunds = if may_have_refunds(intent) {
                stripe
                    .refunds(id)
                    .await
                    .with_context(|| format!("reading the refunds of {id} from Stripe"))?
            } else {
                Vec::new()
            };
            report.breaks.extend(judge_orphan(sale, intent, &refunds));
        }
        after = page
            .last()
            .and_then(|i| i["id"].as_str())
            .map(str::to_owned);
        // Newest first: a page wholly older than the sale ends the search.
        if !more || older || after.is_none() {
            break;
        }
    }
    report.breaks.sort_by_key(|b| (b.kind, b.order_id));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_an_intent_with_a_charge_or_of_an_older_shape_is_asked_for_refunds() {
        assert!(!may_have_refunds(
            &json!({"id": "pi_1", "status": "requires_confirmation", "latest_charge": null})
        ));
        assert!(may_have_refunds(
            &json!({"id": "pi_2", "status": "succeeded", "latest_charge": "ch_2"})
        ));
        assert!(
            may_have_refunds(&json!({"id": "pi_3", "status": "succeeded"})),
            "no field: an older API version, asked"
        );
    }

    fn sale() -> SaleId {
        SaleId::new_v7()
    }

    fn books(status: &str, payment: Option<&str>, intent: Option<&str>) -> Books {
        Books {
            order: OrderId::new_v7(),
            status: Some(status.into()),
            amount: Some(15_000),
            currency: Some("KRW".into()),
            deadline: Some(Utc::now() - ChronoDuration::minutes(1)),
            payment_status: payment.map(str::to_owned),
            payment_ref: intent.map(str::to_owned),
            intent_id: intent.map(str::to_owned),
        }
    }

    fn charge(status: &str, refunded: i64) -> Charge {
        Charge {
            status: Some(status.into()),
            amount: Some(15_000),
            currency: Some("krw".into()),
            refunded,
        }
    }

    fn kinds(found: Result<Vec<Break>, ()>) -> Vec<BreakKind> {
        found.map_or_else(|()| vec![], |b| b.into_iter().map(|b| b.kind).collect())
    }

    #[test]
    fn a_paid_order_with_its_charge_is_sound() {
        let b = books("paid", Some("approved"), Some("pi_1"));
        assert_eq!(
            judge(sale(), &b, Some(&charge("succeeded", 0)), Utc::now()),
            Ok(vec![])
        );
    }

    #[test]
    fn a_refunded_order_that_failed_is_sound() {
        let b = books("failed", Some("refunded"), Some("pi_1"));
        assert_eq!(
            judge(sale(), &b, Some(&charge("succeeded", 15_000)), Utc::now()),
            Ok(vec![])
        );
    }

    #[test]
    fn each_break_is_named() {
        let now = Utc::now();
        let s = sale();
        let paid = books("paid", Some("approved"), Some("pi_1"));
        assert_eq!(
            kinds(judge(s, &paid, Some(&charge("succeeded", 15_000)), now)),
            [BreakKind::PaidAndRefunded]
        );
        let refunded_unbooked = books("expired", Some("approved"), Some("pi_1"));
        assert_eq!(
            kinds(judge(
                s,
                &refunded_unbooked,
                Some(&charge("succeeded", 15_000)),
                now
            )),
            [BreakKind::LedgerMismatch]
        );
        let paid_refunded = books("paid", Some("refunded"), Some("pi_1"));
        assert_eq!(
            kinds(judge(s, &paid_refunded, Some(&charge("succeeded", 1)), now)),
            [BreakKind::PaidAndRefunded]
        );
        let mut cheaper = charge("succeeded", 0);
        cheaper.amount = Some(1_500);
        assert_eq!(
            kinds(judge(s, &paid, Some(&cheaper), now)),
            [BreakKind::AmountMismatch]
        );
        let failed = books("failed", None, Some("pi_1"));
        assert_eq!(
            kinds(judge(s, &failed, Some(&charge("succeeded", 0)), now)),
            [BreakKind::UnbookedCharge]
        );
        assert_eq!(
            kinds(judge(s, &paid, Some(&charge("canceled", 0)), now)),
            [BreakKind::PaidWithoutCharge, BreakKind::LedgerMismatch]
        );
        assert_eq!(
            kinds(judge(s, &failed, Some(&charge("requires_action", 0)), now)),
            [BreakKind::DanglingIntent]
        );
        let no_claim = books("paid", Some("approved"), None);
        assert_eq!(
            kinds(judge(s, &no_claim, None, now)),
            [BreakKind::PaidWithoutCharge, BreakKind::LedgerMismatch]
        );
        let unknown = Charge::default();
        assert_eq!(
            kinds(judge(s, &paid, Some(&unknown), now)),
            [BreakKind::LedgerMismatch, BreakKind::PaidWithoutCharge]
        );
        let missing = Books {
            status: None,
            amount: None,
            currency: None,
            deadline: None,
            ..failed.clone()
        };
        assert_eq!(
            kinds(judge(s, &missing, Some(&charge("succeeded", 0)), now)),
            [BreakKind::UnbookedCharge]
        );
    }

    #[test]
    fn payments_in_flight_are_not_judged() {
        let now = Utc::now();
        let mut paying = books("paying", None, Some("pi_1"));
        paying.deadline = Some(now + ChronoDuration::minutes(5));
        assert_eq!(
            judge(sale(), &paying, Some(&charge("succeeded", 0)), now),
            Err(())
        );
        assert_eq!(
            judge(sale(), &paying, Some(&charge("requires_action", 0)), now),
            Err(())
        );
        // Past its deadline, a paying order's charge is unbooked.
        paying.deadline = Some(now - ChronoDuration::seconds(1));
        assert_eq!(
            kinds(judge(sale(), &paying, Some(&charge("succeeded", 0)), now)),
            [BreakKind::UnbookedCharge]
        );
    }

    #[test]
    fn a_free_order_needs_no_charge() {
        let mut free = books("paid", Some("approved"), None);
        free.amount = Some(0);
        assert_eq!(judge(sale(), &free, None, Utc::now()), Ok(vec![]));
    }

    #[test]
    fn orphans_that_charged_or_can_charge_are_breaks() {
        let s = sale();
        let order = OrderId::new_v7();
        let intent = |status: &str| {
            json!({"id": "pi_x", "status": status, "amount": 100, "currency": "usd",
                   "metadata": {"dropline_order_id": order.to_string()}})
        };
        let charged = judge_orphan(s, &intent("succeeded"), &[]);
        assert_eq!(
            charged.as_ref().map(|b| b.kind),
            Some(BreakKind::UnbookedCharge)
        );
        assert_eq!(charged.and_then(|b| b.order_id), Some(order));
        assert_eq!(
            judge_orphan(s, &intent("requires_confirmation"), &[]).map(|b| b.kind),
            Some(BreakKind::DanglingIntent)
        );
        assert_eq!(judge_orphan(s, &intent("canceled"), &[]), None);
        let refund = json!({"amount": 100, "status": "succeeded"});
        assert_eq!(judge_orphan(s, &intent("succeeded"), &[refund]), None);
        let failed_refund = json!({"amount": 100, "status": "failed"});
        assert_eq!(
            judge_orphan(s, &intent("succeeded"), &[failed_refund]).map(|b| b.kind),
            Some(BreakKind::UnbookedCharge)
        );
    }

    #[test]
    fn a_break_is_one_json_object_with_its_kind_spelled_as_the_contract() -> anyhow::Result<()> {
        let b = books("paid", Some("approved"), Some("pi_1"));
        let found = judge(sale(), &b, Some(&charge("succeeded", 15_000)), Utc::now())
            .map_err(|()| anyhow::anyhow!("judged in flight"))?;
        let line = serde_json::to_string(&found[0])?;
        assert!(!line.contains('\n'));
        let value: Value = serde_json::from_str(&line)?;
        assert_eq!(value["break"], "paid_and_refunded");
        assert_eq!(value["order_id"], b.order.to_string());
        assert_eq!(value["intent_id"], "pi_1");
        assert_eq!(value["refunded"], 15_000);
        Ok(())
    }
}
