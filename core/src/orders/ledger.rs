//! The orders' record in MySQL (`orders`, `sales`): the row every reader shares ([`OrderRow`])
//! and the reads the api, the audit and rearm make.
//!
//! Redis decides every arrow of an order ([`crate::orders`]); MySQL follows, through two writers
//! with separate rights, both in the workers (`dropline_workers::ledger`): the recorder, fed by
//! the sale's outbox stream, moves a row only forward and never to `paid`; the confirm worker
//! alone writes `paid`, in one transaction with the sale's `sold`, guarded by the expected state
//! and by the stock. So `sales.sold` is always the sum of the paid rows' quantities, and MySQL
//! refuses to record an oversell even if Redis were wrong.

use crate::ids::{OrderId, SaleId, UserId};
use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::MySqlPool;

use crate::orders::{Order, OrderState};
use crate::sale::from_ms;

/// One order row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    pub id: OrderId,
    pub sale: SaleId,
    pub user: UserId,
    pub quantity: i64,
    pub amount: i64,
    pub currency: String,
    pub state: OrderState,
    /// Hold end while held, payment deadline while paying, the last one after.
    pub deadline: DateTime<Utc>,
    pub idempotency_key: String,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

impl From<&Order> for OrderRow {
    fn from(o: &Order) -> Self {
        Self {
            id: o.id,
            sale: o.sale,
            user: o.user,
            quantity: o.quantity,
            amount: o.amount,
            currency: o.currency.clone(),
            state: o.state,
            deadline: from_ms(o.deadline_ms),
            idempotency_key: o.idempotency_key.clone(),
            created: from_ms(o.created_ms),
            updated: from_ms(o.updated_ms),
        }
    }
}

impl OrderRow {
    /// The order's Redis hash (`o:<order>`) as `reserve.lua` and the state arrows write it,
    /// field by field: for putting back a hash Redis lost (`sale rearm`, the recorder's
    /// restore of forgotten orders).
    pub fn hash_fields(&self) -> Vec<(&'static str, fred::types::Value)> {
        vec![
            ("user", (&self.user.as_bytes()[..]).into()),
            ("qty", self.quantity.into()),
            ("amount", self.amount.into()),
            ("currency", self.currency.as_str().into()),
            ("state", self.state.as_str().into()),
            ("deadline", self.deadline.timestamp_millis().into()),
            ("created", self.created.timestamp_millis().into()),
            ("updated", self.updated.timestamp_millis().into()),
            ("idem", self.idempotency_key.as_str().into()),
        ]
    }
}

/// An `orders` row as selected by [`COLUMNS`].
pub type RawRow = (
    OrderId,
    SaleId,
    UserId,
    i32,
    i64,
    String,
    String,
    DateTime<Utc>,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
);

/// The columns of an [`OrderRow`], in [`RawRow`]'s order.
pub const COLUMNS: &str = "id, sale_id, user_id, quantity, amount, currency, status, deadline_at, \
                       idempotency_key, created_at, updated_at";

/// The row a [`RawRow`] holds.
pub fn from_raw(raw: RawRow) -> anyhow::Result<OrderRow> {
    let (id, sale, user, quantity, amount, currency, status, deadline, idem, created, updated) =
        raw;
    Ok(OrderRow {
        id,
        sale,
        user,
        quantity: quantity.into(),
        amount,
        currency,
        state: status
            .parse()
            .with_context(|| format!("order {id}: status"))?,
        deadline,
        idempotency_key: idem,
        created,
        updated,
    })
}

/// One order row by id.
pub async fn get(pool: &MySqlPool, order: OrderId) -> anyhow::Result<Option<OrderRow>> {
    let raw: Option<RawRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM orders WHERE id = ?"
    )))
    .bind(order)
    .fetch_optional(pool)
    .await
    .with_context(|| format!("reading order {order}"))?;
    raw.map(from_raw).transpose()
}

/// A user's orders, newest first, strictly older than `before` (keyset on the UUIDv7 id).
pub async fn list_for_user(
    pool: &MySqlPool,
    user: UserId,
    before: Option<OrderId>,
    limit: u32,
) -> anyhow::Result<Vec<OrderRow>> {
    let raws: Vec<RawRow> = match before {
        Some(before) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM orders WHERE user_id = ? AND id < ? ORDER BY id DESC LIMIT ?"
        )))
        .bind(user)
        .bind(before)
        .bind(i64::from(limit)),
        None => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM orders WHERE user_id = ? ORDER BY id DESC LIMIT ?"
        )))
        .bind(user)
        .bind(i64::from(limit)),
    }
    .fetch_all(pool)
    .await
    .with_context(|| format!("listing the orders of user {user}"))?;
    raws.into_iter().map(from_raw).collect()
}

/// Every order row of a sale (audit, rearm).
pub async fn of_sale(pool: &MySqlPool, sale: SaleId) -> anyhow::Result<Vec<OrderRow>> {
    let raws: Vec<RawRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM orders WHERE sale_id = ? ORDER BY id"
    )))
    .bind(sale)
    .fetch_all(pool)
    .await
    .with_context(|| format!("reading the orders of sale {sale}"))?;
    raws.into_iter().map(from_raw).collect()
}

/// `sales.stock_total` and `sales.sold`.
pub async fn sale_counts(pool: &MySqlPool, sale: SaleId) -> anyhow::Result<Option<(i64, i64)>> {
    let row: Option<(i32, i32)> =
        sqlx::query_as("SELECT stock_total, sold FROM sales WHERE id = ?")
            .bind(sale)
            .fetch_optional(pool)
            .await
            .with_context(|| format!("reading the counts of sale {sale}"))?;
    Ok(row.map(|(t, s)| (i64::from(t), i64::from(s))))
}
