//! The payment provider seen by the workers, and the simulated one of the contract.
//!
//! Every call is idempotent on the order id, as a real provider's idempotency key makes it:
//! the first decision about an order (approved, declined, or voided because no outcome came in
//! time) is final, and asking again returns it. That is what lets the payment worker retry,
//! and the sweeper settle a payment in flight, without ever charging twice:
//!
//! - [`PaymentProvider::charge`] decides an order's payment once;
//! - [`PaymentProvider::settle`] returns that decision, or, when there is none yet, voids the
//!   order at the provider so that a charge still on its way is declined when it arrives;
//! - [`PaymentProvider::refund`] gives an approved charge back (an order that could not be
//!   confirmed).
//!
//! [`Simulated`] keeps its ledger in Redis (`<prefix>:psp:<order>`, one `SET NX` per decision,
//! kept 7 days) so that every worker process shares it, like a real provider's database. It
//! approves every card token but `tok_fail` (declined) and `tok_slow` (answers only after the
//! payment timeout), waits `payment.sim_latency_ms` per charge and declines a random
//! `payment.sim_failure_rate` share.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dropline_core::clients::redis::Redis;
use dropline_core::config::PaymentConfig;
use dropline_core::ids::{OrderId, SaleId};
use fred::interfaces::KeysInterface;
use fred::types::{Expiration, SetOptions};
use futures_util::future::BoxFuture;
use rand::Rng;
use uuid::Uuid;

/// A charge to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    pub order: OrderId,
    /// The order's sale (Stripe keeps it in the intent's metadata).
    pub sale: SaleId,
    pub amount: i64,
    pub currency: String,
    pub card_token: String,
}

/// The provider's decision about an order's payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Charged; `reference` is the provider's id of the charge.
    Approved { reference: String },
    /// Not charged, for `reason` (declined card, random failure, or voided for no outcome).
    Declined { reason: String },
    /// Charged, then given back.
    Refunded { reference: String },
    /// No outcome yet: the buyer must act (3-D Secure) or the provider is processing. Stripe
    /// only; the outcome comes with the webhook, or the sweeper asks at the deadline.
    Pending { status: String },
}

/// What [`PaymentProvider::settle`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// There was a decision already.
    Decided(Decision),
    /// There was none: the order is now voided at the provider and will never be charged.
    Voided,
    /// The provider is still processing the payment (Stripe's `processing`): ask again later.
    Pending,
}

/// A payment provider (PSP). Object-safe so the workers can hold any provider.
pub trait PaymentProvider: Send + Sync + fmt::Debug {
    /// Charges once per order; a repeat returns the first decision.
    fn charge(&self, request: ChargeRequest) -> BoxFuture<'_, anyhow::Result<Decision>>;
    /// The decision about `order`, voiding it at the provider when there is none yet.
    fn settle(&self, order: OrderId) -> BoxFuture<'_, anyhow::Result<Settlement>>;
    /// Refunds an approved charge; a repeat (or an order never charged) changes nothing.
    fn refund(&self, order: OrderId) -> BoxFuture<'_, anyhow::Result<Decision>>;
    /// The provider told us about the order's payment (`intent`, a webhook): its decision as
    /// the provider holds it now, without starting a charge; `None` when the provider has no
    /// payment of that order to follow (another intent, none claimed). The simulated provider
    /// sends no events.
    fn follow(
        &self,
        order: OrderId,
        intent: String,
    ) -> BoxFuture<'_, anyhow::Result<Option<Decision>>> {
        let _ = (order, intent);
        Box::pin(async { Ok(None) })
    }
}

/// The card token the simulated provider declines.
pub const TOKEN_FAIL: &str = "tok_fail";
/// The card token the simulated provider answers only after the payment timeout.
pub const TOKEN_SLOW: &str = "tok_slow";
/// How long the simulated ledger keeps a decision.
const LEDGER_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The simulated provider of the contract.
#[derive(Clone)]
pub struct Simulated {
    redis: Redis,
    latency: Duration,
    failure_rate: f64,
    /// `tok_slow` answers this long after it is asked: past the payment timeout.
    slow: Duration,
}

impl fmt::Debug for Simulated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulated")
            .field("latency", &self.latency)
            .field("failure_rate", &self.failure_rate)
            .finish()
    }
}

impl Simulated {
    pub fn new(redis: &Redis, config: &PaymentConfig) -> Arc<Self> {
        Arc::new(Self {
            redis: redis.clone(),
            latency: Duration::from_millis(config.sim_latency_ms),
            failure_rate: config.sim_failure_rate.clamp(0.0, 1.0),
            slow: Duration::from_secs(config.timeout_seconds) + Duration::from_secs(1),
        })
    }

    fn key(&self, order: OrderId) -> String {
        self.redis.key(&format!("psp:{order}"))
    }

    /// Stores `value` as the order's decision unless there is one; returns the one that stands.
    async fn decide(&self, order: OrderId, value: &str) -> anyhow::Result<String> {
        let key = self.key(order);
        let set: Option<String> = self
            .redis
            .pool()
            .set(
                &key,
                value,
                Some(Expiration::PX(LEDGER_TTL.as_millis() as i64)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .with_context(|| format!("simulated provider: deciding order {order}"))?;
        if set.is_some() {
            return Ok(value.to_owned());
        }
        let current: Option<String> = self
            .redis
            .pool()
            .get(&key)
            .await
            .with_context(|| format!("simulated provider: reading order {order}"))?;
        current.with_context(|| format!("simulated provider: the decision on {order} vanished"))
    }

    async fn lookup(&self, order: OrderId) -> anyhow::Result<Option<String>> {
        self.redis
            .pool()
            .get(self.key(order))
            .await
            .with_context(|| format!("simulated provider: reading order {order}"))
    }
}

/// Ledger values: `approved:<ref>`, `declined:<reason>`, `refunded:<ref>`, `voided`.
fn parse(value: &str) -> anyhow::Result<Option<Decision>> {
    Ok(match value.split_once(':') {
        Some(("approved", r)) => Some(Decision::Approved {
            reference: r.to_owned(),
        }),
        Some(("declined", r)) => Some(Decision::Declined {
            reason: r.to_owned(),
        }),
        Some(("refunded", r)) => Some(Decision::Refunded {
            reference: r.to_owned(),
        }),
        None if value == "voided" => None,
        _ => anyhow::bail!("simulated provider: unreadable ledger value `{value}`"),
    })
}

fn voided() -> Decision {
    Decision::Declined {
        reason: "voided: no outcome within the payment timeout".into(),
    }
}

impl PaymentProvider for Simulated {
    fn charge(&self, request: ChargeRequest) -> BoxFuture<'_, anyhow::Result<Decision>> {
        Box::pin(async move {
            // A decision made before (a retried message) comes back at once.
            if let Some(value) = self.lookup(request.order).await? {
                return Ok(parse(&value)?.unwrap_or_else(voided));
            }
            let wait = if request.card_token == TOKEN_SLOW {
                self.slow
            } else {
                self.latency
            };
            tokio::time::sleep(wait).await;
            let value = if request.card_token == TOKEN_FAIL {
                "declined:card_declined".to_owned()
            } else if self.failure_rate > 0.0 && rand::rng().random_bool(self.failure_rate) {
                "declined:simulated_failure".to_owned()
            } else {
                format!("approved:sim_{}", Uuid::now_v7().simple())
            };
            let standing = self.decide(request.order, &value).await?;
            Ok(parse(&standing)?.unwrap_or_else(voided))
        })
    }

    fn settle(&self, order: OrderId) -> BoxFuture<'_, anyhow::Result<Settlement>> {
        Box::pin(async move {
            let standing = self.decide(order, "voided").await?;
            Ok(match parse(&standing)? {
                Some(decision) => Settlement::Decided(decision),
                None => Settlement::Voided,
            })
        })
    }

    fn refund(&self, order: OrderId) -> BoxFuture<'_, anyhow::Result<Decision>> {
        Box::pin(async move {
            let Some(value) = self.lookup(order).await? else {
                // Never charged: nothing to give back; void it so it never will be.
                let standing = self.decide(order, "voided").await?;
                return Ok(parse(&standing)?.unwrap_or_else(voided));
            };
            match parse(&value)? {
                Some(Decision::Approved { reference }) => {
                    let refunded = format!("refunded:{reference}");
                    let _: () = self
                        .redis
                        .pool()
                        .set(
                            self.key(order),
                            refunded.as_str(),
                            Some(Expiration::PX(LEDGER_TTL.as_millis() as i64)),
                            Some(SetOptions::XX),
                            false,
                        )
                        .await
                        .with_context(|| format!("simulated provider: refunding order {order}"))?;
                    Ok(Decision::Refunded { reference })
                }
                Some(other) => Ok(other),
                None => Ok(voided()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_values_parse() -> anyhow::Result<()> {
        assert_eq!(
            parse("approved:sim_1")?,
            Some(Decision::Approved {
                reference: "sim_1".into()
            })
        );
        assert_eq!(
            parse("declined:card_declined")?,
            Some(Decision::Declined {
                reason: "card_declined".into()
            })
        );
        assert_eq!(parse("voided")?, None);
        assert!(parse("weird").is_err());
        Ok(())
    }
}
