//! The expiry worker's re-reports of decided payments, backed off per order, and the mark of a
//! completion the confirm worker parked (`lua/rereport.lua`; its header is the contract).
//!
//! A PAYING order past its payment deadline whose payment the provider decided is reported
//! again (`payment.completed`) in case the first report was lost. Each re-report first takes a
//! claim ([`Orders::claim_rereport`]): granted at most once per window, the windows doubling
//! from [`Backoff::first`] up to [`Backoff::max`], so a lagging confirm queue gets a few copies
//! of an order's completion instead of one per sweep, whatever the number of expiry workers.
//! An order the confirm worker parked a completion of ([`Orders::mark_parked`]) is never
//! re-reported by the sweeper; an operator re-sends it and clears the mark
//! ([`Orders::unmark_parked`]). The state is three fields of the order hash (`rr_n`,
//! `rr_next`, `parked`), in the sale's slot.

use std::time::Duration;

use anyhow::Context;
use fred::interfaces::HashesInterface;
use fred::types::Value;

use super::{OrderState, Orders, Reply, millis};
use crate::ids::OrderId;
use crate::lua::scripts::REREPORT;

/// How re-reports of one order back off (`expiry.rereport_backoff_seconds`,
/// `expiry.rereport_backoff_max_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The window after the first re-report; each next one is twice as long.
    pub first: Duration,
    /// The longest window.
    pub max: Duration,
}

/// What [`Orders::claim_rereport`] answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Report now. `n` is this claim's number (for [`Orders::give_back_rereport`]); no other
    /// claim is granted before `until_ms` (epoch ms).
    Granted { n: i64, until_ms: i64 },
    /// Another claim's window is open until `until_ms`: do not report.
    Wait { until_ms: i64 },
    /// The confirm worker parked a completion of this order: do not report (an operator
    /// re-sends it). The next `Parked` comes after `until_ms` at the earliest.
    Parked { n: i64, until_ms: i64 },
    /// The order is not PAYING: nothing to report.
    NotPaying(OrderState),
    /// Its payment deadline is still ahead (by Redis time): the payment may be in flight.
    NotDue,
    /// No such order.
    NotFound,
}

/// The script's answer: result, state, n, until_ms.
struct Answer {
    result: String,
    state: Option<OrderState>,
    n: i64,
    until_ms: i64,
}

impl Orders {
    async fn rereport(&self, order: OrderId, args: Vec<Value>) -> anyhow::Result<Answer> {
        let reply: Value = REREPORT
            .run(&self.redis, vec![self.order_key(order)], args)
            .await
            .with_context(|| format!("rereport of order {order} (sale {})", self.sale))?;
        let reply = Reply::new(reply, "rereport")?;
        reply.expect_len(5)?;
        let result = reply.text(0)?;
        let state = match reply.text(1)?.as_str() {
            "" => None,
            state => Some(state.parse().context("rereport: state")?),
        };
        Ok(Answer {
            result,
            state,
            n: reply.int(2)?,
            until_ms: reply.int(3)?,
        })
    }

    /// Asks to report `order`'s payment decision again now (see the module docs).
    pub async fn claim_rereport(&self, order: OrderId, backoff: Backoff) -> anyhow::Result<Claim> {
        let first = millis(backoff.first).max(1);
        let max = millis(backoff.max).max(first);
        let answer = self
            .rereport(
                order,
                vec![Value::from("claim"), Value::from(first), Value::from(max)],
            )
            .await?;
        let claim = match (answer.result.as_str(), answer.state) {
            ("ok", _) => Claim::Granted {
                n: answer.n,
                until_ms: answer.until_ms,
            },
            ("wait", _) => Claim::Wait {
                until_ms: answer.until_ms,
            },
            ("parked", _) => Claim::Parked {
                n: answer.n,
                until_ms: answer.until_ms,
            },
            ("not_paying", Some(state)) => Claim::NotPaying(state),
            ("not_due", _) => Claim::NotDue,
            ("not_found", _) => Claim::NotFound,
            (other, state) => {
                anyhow::bail!("rereport: unexpected claim answer `{other}` ({state:?})")
            }
        };
        Ok(claim)
    }

    /// Gives back claim `n`, which could not be used (the report failed): the next claim is
    /// granted at once. Nothing changes when a later claim was granted meanwhile.
    pub async fn give_back_rereport(&self, order: OrderId, n: i64) -> anyhow::Result<()> {
        self.rereport(order, vec![Value::from("giveback"), Value::from(n)])
            .await?;
        Ok(())
    }

    /// Marks `order`: the confirm worker parked a completion of it, so the sweeper must not
    /// re-send it. `false` when there is no such order (nothing written).
    pub async fn mark_parked(&self, order: OrderId) -> anyhow::Result<bool> {
        let answer = self.rereport(order, vec![Value::from("park")]).await?;
        Ok(answer.result == "ok")
    }

    /// Clears the parked mark once an operator re-sent the completion, and restarts the
    /// backoff with a first window of `first` (that copy is on its way). `false` when there is
    /// no such order.
    pub async fn unmark_parked(&self, order: OrderId, first: Duration) -> anyhow::Result<bool> {
        let answer = self
            .rereport(
                order,
                vec![Value::from("unpark"), Value::from(millis(first).max(1))],
            )
            .await?;
        Ok(answer.result == "ok")
    }

    /// When the confirm worker parked a completion of `order` (epoch ms), if it carries the mark.
    pub async fn parked_at(&self, order: OrderId) -> anyhow::Result<Option<i64>> {
        let value: Option<i64> = self
            .redis
            .pool()
            .hget(self.order_key(order), "parked")
            .await
            .with_context(|| format!("reading the parked mark of order {order}"))?;
        Ok(value)
    }
}

/// What re-sending a parked completion did (`dropline payments resend`; the workers do it,
/// the operator command prints it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resent {
    /// The provider's decision was reported again (`payment.completed`, broker-confirmed) and
    /// the parked mark cleared; `approved` is the reported outcome.
    Reported { approved: bool },
    /// The provider had no decision: the order was voided there and failed here (stock back),
    /// as the sweeper does at a payment deadline.
    Voided,
    /// The order is not PAYING: nothing to send (the mark, if any, cleared).
    NotPaying(OrderState),
    /// The order carries no parked mark and its payment deadline is ahead (epoch ms): its
    /// payment may be in flight, so nothing was done.
    InFlight { deadline_ms: i64 },
    /// Redis does not know the order (lost: `dropline sale rearm` first).
    NotInRedis,
}
