//! Message envelope shared by every RabbitMQ message (DESIGN §7):
//! `{ "id": uuid, "type": "...", "occurred_at": rfc3339, "data": {...} }`.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

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
}

/// Routing keys (= message `type`s) of DESIGN §7.
pub mod kinds {
    pub const MAIL_SEND: &str = "mail.send";
    pub const ORDER_CONFIRMED: &str = "order.confirmed";
    pub const PAYMENT_REQUESTED: &str = "payment.requested";
    pub const PAYMENT_COMPLETED: &str = "payment.completed";
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
