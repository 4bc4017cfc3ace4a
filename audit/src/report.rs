//! What an audit finds: the figures of both sides, the orders in flight, and every breach by
//! its stable code (`--json` prints a [`Report`] as is).

use std::collections::BTreeMap;
use std::fmt;

use anyhow::Context;
use serde::Serialize;

use dropline_core::ids::{OrderId, SaleId, UserId};

use dropline_core::orders::OrderState;

/// What went wrong, one code per kind (the JSON `code`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreachCode {
    /// The sale has a MySQL row but no `cfg` in Redis (Redis lost it: `sale rearm`).
    RedisNotArmed,
    /// Redis `cfg` and MySQL disagree on `stock_total` or `per_user_limit`.
    ConfigMismatch,
    /// `avail < 0`: Redis sold more than the stock.
    AvailNegative,
    /// `avail + held + sold ≠ stock_total` in Redis.
    StockUnbalanced,
    /// Redis `held` or `sold` disagrees with the order hashes.
    CounterDrift,
    /// `holds` lacks a live order, or lists one that is not live.
    HoldsDrift,
    /// A user's `u:<user>` disagrees with their order hashes.
    UserCounterDrift,
    /// A user holds more than `per_user_limit` units (Redis or MySQL).
    UserLimitExceeded,
    /// An order hash that cannot be read (fields missing or malformed).
    RedisOrderMalformed,
    /// `SUM(qty of paid rows) > stock_total` in MySQL.
    MysqlOversold,
    /// `sales.sold ≠ SUM(qty of paid rows)`.
    SoldMismatch,
    /// An order Redis has, MySQL does not, and none of its changes is in flight.
    MissingInMysql,
    /// An order MySQL has and Redis does not.
    MissingInRedis,
    /// Redis and MySQL show states that no in-flight change explains.
    StateMismatch,
    /// Redis and MySQL disagree on an order's user or quantity.
    OrderFieldsMismatch,
    /// More than one `payments` row for an order.
    DuplicatePayment,
    /// A paid order without a `payments` row.
    PaidWithoutPayment,
    /// A paid order whose payment is declined or refunded.
    PaymentNotApproved,
    /// `--settled`: an approved payment on an order that is not paid.
    ApprovedPaymentUnpaid,
    /// `--settled`: a HELD or PAYING order (Redis or MySQL).
    LiveOrderLeft,
    /// `--settled`: the outbox still has entries MySQL has not recorded.
    OutboxNotDrained,
    /// `--settled`: `avail + sold ≠ stock_total`.
    UnsettledStock,
    /// `--settled`: an order changed while the audit ran.
    NotSettled,
    /// A draw's wins are not ranks 1..M.
    DrawRanksNotPrefix,
    /// A draw's open wins reserve more than is available (`avail - reserved < 0`).
    DrawFreeNegative,
    /// Redis's promoted ranks disagree with MySQL's recorded wins.
    DrawPromotedMismatch,
    /// `--settled`: the draw outbox still has entries MySQL has not recorded.
    DrawOutboxNotDrained,
    /// An order of a draw sale that belongs to no win.
    OrderWithoutWin,
    /// An order of a draw sale for more than its win's `max_quantity`.
    OrderOverWin,
    /// More than one order for one win.
    WinOrdersExceeded,
}

impl BreachCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RedisNotArmed => "redis_not_armed",
            Self::ConfigMismatch => "config_mismatch",
            Self::AvailNegative => "avail_negative",
            Self::StockUnbalanced => "stock_unbalanced",
            Self::CounterDrift => "counter_drift",
            Self::HoldsDrift => "holds_drift",
            Self::UserCounterDrift => "user_counter_drift",
            Self::UserLimitExceeded => "user_limit_exceeded",
            Self::RedisOrderMalformed => "redis_order_malformed",
            Self::MysqlOversold => "mysql_oversold",
            Self::SoldMismatch => "sold_mismatch",
            Self::MissingInMysql => "missing_in_mysql",
            Self::MissingInRedis => "missing_in_redis",
            Self::StateMismatch => "state_mismatch",
            Self::OrderFieldsMismatch => "order_fields_mismatch",
            Self::DuplicatePayment => "duplicate_payment",
            Self::PaidWithoutPayment => "paid_without_payment",
            Self::PaymentNotApproved => "payment_not_approved",
            Self::ApprovedPaymentUnpaid => "approved_payment_unpaid",
            Self::LiveOrderLeft => "live_order_left",
            Self::OutboxNotDrained => "outbox_not_drained",
            Self::UnsettledStock => "unsettled_stock",
            Self::NotSettled => "not_settled",
            Self::DrawRanksNotPrefix => "draw_ranks_not_prefix",
            Self::DrawFreeNegative => "draw_free_negative",
            Self::DrawPromotedMismatch => "draw_promoted_mismatch",
            Self::DrawOutboxNotDrained => "draw_outbox_not_drained",
            Self::OrderWithoutWin => "order_without_win",
            Self::OrderOverWin => "order_over_win",
            Self::WinOrdersExceeded => "win_orders_exceeded",
        }
    }
}

impl fmt::Display for BreachCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One breach.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Breach {
    pub code: BreachCode,
    pub message: String,
    /// The order concerned, if one.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Uuid))]
    pub order: Option<OrderId>,
    /// The user concerned, if one.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Uuid))]
    pub user: Option<UserId>,
}

/// Orders and units in one state.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub orders: u64,
    pub units: i64,
}

/// Orders and units per state (DESIGN §5).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    pub held: Tally,
    pub paying: Tally,
    pub paid: Tally,
    pub expired: Tally,
    pub cancelled: Tally,
    pub failed: Tally,
}

impl StateCounts {
    fn slot(&mut self, state: OrderState) -> &mut Tally {
        match state {
            OrderState::Held => &mut self.held,
            OrderState::Paying => &mut self.paying,
            OrderState::Paid => &mut self.paid,
            OrderState::Expired => &mut self.expired,
            OrderState::Cancelled => &mut self.cancelled,
            OrderState::Failed => &mut self.failed,
        }
    }

    pub(super) fn add(&mut self, state: OrderState, units: i64) {
        let t = self.slot(state);
        t.orders += 1;
        t.units += units;
    }

    pub fn get(&self, state: OrderState) -> Tally {
        match state {
            OrderState::Held => self.held,
            OrderState::Paying => self.paying,
            OrderState::Paid => self.paid,
            OrderState::Expired => self.expired,
            OrderState::Cancelled => self.cancelled,
            OrderState::Failed => self.failed,
        }
    }

    pub fn total_orders(&self) -> u64 {
        OrderState::ALL.iter().map(|s| self.get(*s).orders).sum()
    }
}

/// Redis's side of the sale.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RedisFigures {
    /// The sale has a `cfg` hash; the other figures are null/zero when it has not.
    pub armed: bool,
    pub stock_total: Option<i64>,
    pub per_user_limit: Option<i64>,
    pub avail: Option<i64>,
    /// Units in HELD + PAYING orders (the counter).
    pub held: Option<i64>,
    /// Units in PAID orders (the counter).
    pub sold: Option<i64>,
    /// Members of `holds` (live orders).
    pub holds: Option<u64>,
    /// Entries in the outbox stream not yet recorded in MySQL.
    pub outbox_entries: u64,
    /// The order hashes, by state (from the last scan).
    pub orders: StateCounts,
    /// Scans made.
    pub scans: u32,
    /// No arrow happened during the last scan, so the counters were compared with the hashes.
    pub stable: bool,
}

/// MySQL's side of the sale.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MysqlFigures {
    pub stock_total: i64,
    pub per_user_limit: i64,
    /// `sales.sold`.
    pub sold: i64,
    /// `SUM(qty)` of the paid rows.
    pub paid_units: i64,
    pub orders: StateCounts,
    /// `payments` rows of the sale's orders.
    pub payments: u64,
}

/// An order whose Redis and MySQL states differ for a reason that is still in flight.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingOrder {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub order: OrderId,
    pub reason: String,
}

/// Orders in flight (never with `--settled`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = AuditPending))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pending {
    pub orders: u64,
    /// Up to [`MAX_PENDING_LISTED`] of them.
    pub examples: Vec<PendingOrder>,
}

/// The outcome of an audit (`--json` prints it as is).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = AuditReport))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub sale_id: SaleId,
    /// The quiescent invariants were asserted (`--settled`).
    pub settled: bool,
    /// No breach.
    pub ok: bool,
    pub redis: RedisFigures,
    pub mysql: MysqlFigures,
    pub pending: Pending,
    /// Up to [`MAX_LISTED`] per code, in the order found.
    pub breaches: Vec<Breach>,
    /// Every breach counted, by code (the list may be shorter).
    pub breach_counts: BTreeMap<BreachCode, u64>,
    /// What was not checked and why.
    pub notes: Vec<String>,
}

impl Report {
    /// Every code found.
    pub fn codes(&self) -> Vec<BreachCode> {
        self.breach_counts.keys().copied().collect()
    }

    pub fn has(&self, code: BreachCode) -> bool {
        self.breach_counts.contains_key(&code)
    }

    /// The report as pretty-printed JSON (`dropline sale audit --json`).
    pub fn to_json(&self) -> anyhow::Result<String> {
        serde_json::to_string_pretty(self).context("serialising the audit report")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_names() -> anyhow::Result<()> {
        for code in [
            BreachCode::AvailNegative,
            BreachCode::CounterDrift,
            BreachCode::MissingInRedis,
            BreachCode::UserLimitExceeded,
            BreachCode::DuplicatePayment,
            BreachCode::LiveOrderLeft,
            BreachCode::NotSettled,
        ] {
            assert_eq!(
                serde_json::to_string(&code)?,
                format!("\"{}\"", code.as_str())
            );
        }
        Ok(())
    }
}
