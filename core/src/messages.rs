//! Message envelope shared by every RabbitMQ message (DESIGN §7):
//! `{ "id": uuid, "type": "...", "occurred_at": rfc3339, "data": {...} }`.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{OrderId, SaleId, UserId};

/// A message on the bus. `id` is the idempotency handle consumers deduplicate on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope<T> {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(with = "rfc3339")]
    pub occurred_at: DateTime<Utc>,
    pub data: T,
}

impl<T: Serialize> Envelope<T> {
    /// A new message of `kind` (its routing key) with a fresh time-ordered id.
    pub fn new(kind: &str, data: T) -> Self {
        Self {
            id: Uuid::now_v7(),
            kind: kind.to_owned(),
            // Millisecond precision, as on the wire, so a round trip is exact.
            occurred_at: Utc::now().trunc_subsecs(3),
            data,
        }
    }

    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(self)
    }
}

mod rfc3339 {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_in_contract_shape() -> anyhow::Result<()> {
        let env = Envelope::new("mail.send", serde_json::json!({"to": "a@b.c"}));
        let json: serde_json::Value = serde_json::from_slice(&env.to_json()?)?;
        let obj = json
            .as_object()
            .ok_or_else(|| anyhow::anyhow!("not an object"))?;
        let mut keys: Vec<_> = obj.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["data", "id", "occurred_at", "type"]);
        assert_eq!(json["type"], "mail.send");
        assert!(
            json["occurred_at"]
                .as_str()
                .is_some_and(|s| s.ends_with('Z'))
        );
        let back: Envelope<serde_json::Value> = serde_json::from_value(json)?;
        assert_eq!(back, env);
        Ok(())
    }

    /// #18: the typed ids of a message are plain UUID text, as before they were typed.
    #[test]
    fn order_ref_ids_are_uuid_text() -> anyhow::Result<()> {
        let (order, sale, user) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let reference = OrderRef {
            order_id: order.into(),
            sale_id: sale.into(),
            user_id: user.into(),
            quantity: 1,
            amount: 100,
            currency: "KRW".into(),
            idempotency_key: "k".into(),
            created_ms: 1,
        };
        let json = serde_json::to_value(&reference)?;
        assert_eq!(json["order_id"], order.hyphenated().to_string());
        assert_eq!(json["sale_id"], sale.hyphenated().to_string());
        assert_eq!(json["user_id"], user.hyphenated().to_string());
        assert_eq!(serde_json::from_value::<OrderRef>(json)?, reference);
        Ok(())
    }
}

/// Routing keys (= message `type`s) of DESIGN §7.
pub mod kinds {
    pub const MAIL_SEND: &str = "mail.send";
    pub const ORDER_CONFIRMED: &str = "order.confirmed";
    pub const ORDER_REFUNDED: &str = "order.refunded";
    pub const PAYMENT_REQUESTED: &str = "payment.requested";
    pub const PAYMENT_COMPLETED: &str = "payment.completed";
    pub const PAYMENT_EVENT: &str = "payment.event";
}

/// `mail.send`: one e-mail, already rendered by the producer, sent by the mail worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailSend {
    /// One recipient mailbox (`a@b.c` or `Name <a@b.c>`).
    pub to: String,
    pub subject: String,
    /// Plain-text body (UTF-8).
    pub text: String,
}

/// The order fields every purchase message carries, so that a consumer never needs Redis to
/// know what it handles (Redis may have been lost and rearmed meanwhile).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRef {
    pub order_id: OrderId,
    pub sale_id: SaleId,
    pub user_id: UserId,
    pub quantity: i64,
    /// Minor units of `currency`.
    pub amount: i64,
    pub currency: String,
    /// The client's idempotency key of the order (MySQL keeps it with the row).
    pub idempotency_key: String,
    /// Epoch ms the order was created (the row's `created_at`).
    pub created_ms: i64,
}

/// `payment.requested`: charge this order (api → payment worker). Sent again when the buyer
/// pays again while the order is PAYING; the provider call is idempotent on the order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequested {
    pub order: OrderRef,
    /// The provider's card token (`tok_fail` declines, `tok_slow` answers late in the
    /// simulated provider).
    pub card_token: String,
}

/// `payment.event`: Stripe said something about an order's PaymentIntent (api webhook →
/// payment worker, design/payments.md). Only ids: the payment worker reads the intent back
/// from Stripe and reports what it finds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentEvent {
    /// Stripe's event id (`evt_…`).
    pub event_id: String,
    /// The PaymentIntent (`pi_…`).
    pub intent_id: String,
    pub order_id: OrderId,
    pub sale_id: SaleId,
}

/// How a payment ended, as the provider said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentOutcome {
    Approved,
    Declined,
}

/// `payment.completed`: the provider's answer (payment worker or sweeper → confirm worker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentCompleted {
    pub order: OrderRef,
    pub outcome: PaymentOutcome,
    /// The recorded payment's id (`payments.id`).
    pub payment_id: Uuid,
    /// The provider's charge reference when approved, its reason when declined.
    pub provider_ref: String,
}

/// `order.confirmed`: the order is PAID (confirm worker → mail worker, and anyone listening).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderConfirmed {
    pub order: OrderRef,
    /// The buyer's mailbox and name, read by the confirm worker, so the mail worker needs no
    /// database.
    pub email: String,
    pub name: String,
    /// The product's name, for the e-mail.
    pub product: String,
}

/// `order.refunded`: an approved payment was given back because the order could not be
/// fulfilled (confirm worker → mail worker, design/payments.md "Unfulfillable"). One e-mail
/// per order, however many copies are published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRefunded {
    pub order: OrderRef,
    /// The buyer's mailbox and name, as in [`OrderConfirmed`].
    pub email: String,
    pub name: String,
    pub product: String,
    /// Why: `ended` (the order ended before its payment was confirmed) or `would_oversell`
    /// (booking it would have sold more than the stock).
    pub reason: String,
}
