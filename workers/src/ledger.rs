//! The workers' writes to MySQL (`orders`, `payments`, `sales.sold`): the two writers of an
//! order's row, and the payments.
//!
//! Redis decides every arrow of an order (`dropline_core::orders`); MySQL follows, through two
//! writers with separate rights:
//!
//! - [`record`] (the recorder, fed by the sale's outbox stream) inserts a row or moves it
//!   forward: `held` → `paying` → an end state, never backwards, never from one end state to
//!   another, and **never to `paid`**. A `paid` entry for a row it does not know yet inserts the
//!   row as `paying`.
//! - [`confirm_paid`] (the confirm worker) alone writes `paid`, in one transaction with the
//!   sale's `sold`, guarded by the expected state (the row is `held`/`paying`, or new) and by
//!   the stock (`sold + qty <= stock_total`). So `sales.sold` is always the sum of the paid rows'
//!   quantities, and MySQL refuses to record an oversell even if Redis were wrong.
//!
//! Both are idempotent: a duplicate or late write changes nothing. The rows every reader shares
//! are in `dropline_core::orders::ledger`.

use std::collections::BTreeMap;

use anyhow::Context;

use dropline_core::ids::{OrderId, SaleId, UserId};
use dropline_core::orders::OrderState;
use dropline_core::orders::ledger::{COLUMNS, OrderRow};
use sqlx::{MySql, MySqlPool, Transaction};
use uuid::Uuid;

/// The recorder's forward-only rule, on the row's old `status` and the incoming `VALUES(status)`.
const FORWARD: &str = "(VALUES(status) <> 'paid' AND ((status = 'held' AND VALUES(status) <> 'held') \
                        OR (status = 'paying' AND VALUES(status) = 'failed')))";

/// Most rows one [`record`] statement carries (placeholders stay well under MySQL's 65,535).
pub const MAX_RECORD_BATCH: usize = 1000;

/// Applies outbox rows (the recorder). Rows of one order are folded first (the furthest
/// state wins), then written with one upsert per [`MAX_RECORD_BATCH`] rows, each of which
/// moves a row only forward (see the module docs). Safe to repeat.
pub async fn record(pool: &MySqlPool, rows: &[OrderRow]) -> anyhow::Result<()> {
    let mut folded: BTreeMap<OrderId, OrderRow> = BTreeMap::new();
    for row in rows {
        match folded.get(&row.id) {
            Some(seen) if rank(seen.state) >= rank(row.state) => {}
            _ => {
                folded.insert(row.id, row.clone());
            }
        }
    }
    let rows: Vec<OrderRow> = folded.into_values().collect();
    for chunk in rows.chunks(MAX_RECORD_BATCH) {
        let mut q = sqlx::QueryBuilder::<MySql>::new(format!("INSERT INTO orders ({COLUMNS}) "));
        q.push_values(chunk, |mut b, row| {
            // `paid` is the confirm worker's to write (with sales.sold); a row first seen
            // as paid goes in as paying, and the confirm worker's transaction moves it.
            let state = match row.state {
                OrderState::Paid => OrderState::Paying,
                other => other,
            };
            b.push_bind(row.id)
                .push_bind(row.sale)
                .push_bind(row.user)
                .push_bind(clamp_i32(row.quantity))
                .push_bind(row.amount)
                .push_bind(row.currency.as_str())
                .push_bind(state.as_str())
                .push_bind(row.deadline)
                .push_bind(row.idempotency_key.as_str())
                .push_bind(row.created)
                .push_bind(row.updated);
        });
        // Assignments run left to right and see earlier ones, so `status` goes last and the
        // others test the same forward-only condition on the old status.
        q.push(format!(
            " ON DUPLICATE KEY UPDATE deadline_at = IF({FORWARD}, VALUES(deadline_at), deadline_at), \
               updated_at = IF({FORWARD}, VALUES(updated_at), updated_at), \
               status = IF({FORWARD}, VALUES(status), status)"
        ));
        q.build()
            .execute(pool)
            .await
            .with_context(|| format!("recording {} order row(s)", chunk.len()))?;
    }
    Ok(())
}

/// held 0, paying 1, paid 3, the other end states 2: the order in which the recorder lets a
/// row move (paid outranks the rest so that a batch holding both a paying and a paid entry
/// keeps the paid one, which [`record`] writes as paying).
fn rank(state: OrderState) -> u8 {
    match state {
        OrderState::Held => 0,
        OrderState::Paying => 1,
        OrderState::Expired | OrderState::Cancelled | OrderState::Failed => 2,
        OrderState::Paid => 3,
    }
}

fn clamp_i32(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// What [`confirm_paid`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaidOutcome {
    /// This call wrote the row as paid and added its quantity to `sales.sold`.
    Recorded,
    /// The row was paid already (a duplicate): nothing changed.
    AlreadyPaid,
    /// The row had ended otherwise (expired, cancelled, failed): nothing changed. The payment
    /// must be refunded.
    Ended(OrderState),
    /// `sold + qty` would pass `stock_total`: nothing changed. Redis sold more than the stock;
    /// the payment must be refunded and an operator told.
    WouldOversell,
    /// The sale has no row.
    NoSale,
}

/// Writes a batch of orders as paid, each with its sale's `sold`, in one transaction. Every
/// row of `orders` must be an order whose payment the provider approved (any state in it is
/// ignored). Returns one outcome per row, in order. On a database error nothing is written.
///
/// Runs at READ COMMITTED so that looking up rows that do not exist yet takes no gap locks
/// (concurrent batches would deadlock on them at REPEATABLE READ).
pub async fn confirm_paid(
    pool: &MySqlPool,
    orders: &[OrderRow],
) -> anyhow::Result<Vec<PaidOutcome>> {
    let mut conn = pool.acquire().await.context("MySQL connection")?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .execute(&mut *conn)
        .await
        .context("setting the isolation level")?;
    let mut tx: Transaction<'_, MySql> = sqlx::Connection::begin(&mut *conn)
        .await
        .context("starting the confirm transaction")?;
    let mut outcomes = Vec::with_capacity(orders.len());
    // Rows of the same order in one batch: the first decides, the rest are duplicates.
    let mut seen: BTreeMap<OrderId, ()> = BTreeMap::new();
    // Sales touched, locked once each in id order (no lock-order deadlocks between batches).
    let mut sales: BTreeMap<SaleId, Option<(i64, i64)>> = BTreeMap::new();
    for row in orders {
        sales.entry(row.sale).or_insert(None);
    }
    for (sale, slot) in sales.iter_mut() {
        let found: Option<(i32, i32)> =
            sqlx::query_as("SELECT stock_total, sold FROM sales WHERE id = ? FOR UPDATE")
                .bind(*sale)
                .fetch_optional(&mut *tx)
                .await
                .with_context(|| format!("locking sale {sale}"))?;
        *slot = found.map(|(total, sold)| (i64::from(total), i64::from(sold)));
    }
    // Every order's current row, locked, in one statement (no gap locks at READ COMMITTED:
    // ids with no row yet lock nothing).
    let mut current: BTreeMap<OrderId, OrderState> = BTreeMap::new();
    let ids: Vec<OrderId> = orders
        .iter()
        .map(|r| r.id)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for chunk in ids.chunks(MAX_RECORD_BATCH) {
        let mut q = sqlx::QueryBuilder::<MySql>::new("SELECT id, status FROM orders WHERE id IN (");
        push_in_list(&mut q, chunk.iter().copied());
        q.push(") ORDER BY id FOR UPDATE");
        let found: Vec<(OrderId, String)> = q
            .build_query_as()
            .fetch_all(&mut *tx)
            .await
            .context("locking the batch's order rows")?;
        for (id, status) in found {
            current.insert(id, status.parse().with_context(|| format!("order {id}"))?);
        }
    }
    let mut added: BTreeMap<SaleId, i64> = BTreeMap::new();
    let mut to_update: Vec<OrderId> = Vec::new();
    let mut to_insert: Vec<&OrderRow> = Vec::new();
    for row in orders {
        if seen.insert(row.id, ()).is_some() {
            outcomes.push(PaidOutcome::AlreadyPaid);
            continue;
        }
        let Some(Some((total, sold))) = sales.get(&row.sale).copied() else {
            outcomes.push(PaidOutcome::NoSale);
            continue;
        };
        let state = current.get(&row.id).copied();
        match state {
            Some(OrderState::Paid) => {
                outcomes.push(PaidOutcome::AlreadyPaid);
                continue;
            }
            Some(end @ (OrderState::Expired | OrderState::Cancelled | OrderState::Failed)) => {
                outcomes.push(PaidOutcome::Ended(end));
                continue;
            }
            Some(OrderState::Held | OrderState::Paying) | None => {}
        }
        let so_far = added.get(&row.sale).copied().unwrap_or(0);
        if sold + so_far + row.quantity > total {
            outcomes.push(PaidOutcome::WouldOversell);
            continue;
        }
        if state.is_some() {
            to_update.push(row.id);
        } else {
            to_insert.push(row);
        }
        *added.entry(row.sale).or_insert(0) += row.quantity;
        outcomes.push(PaidOutcome::Recorded);
    }
    for chunk in to_update.chunks(MAX_RECORD_BATCH) {
        let mut q = sqlx::QueryBuilder::<MySql>::new(
            "UPDATE orders SET status = 'paid', updated_at = UTC_TIMESTAMP(3) \
             WHERE status IN ('held', 'paying') AND id IN (",
        );
        push_in_list(&mut q, chunk.iter().copied());
        q.push(")");
        q.build()
            .execute(&mut *tx)
            .await
            .with_context(|| format!("marking {} order(s) paid", chunk.len()))?;
    }
    for chunk in to_insert.chunks(MAX_RECORD_BATCH) {
        let mut q = sqlx::QueryBuilder::<MySql>::new(format!("INSERT INTO orders ({COLUMNS}) "));
        q.push_values(chunk, |mut b, row| {
            b.push_bind(row.id)
                .push_bind(row.sale)
                .push_bind(row.user)
                .push_bind(clamp_i32(row.quantity))
                .push_bind(row.amount)
                .push_bind(row.currency.as_str())
                .push_bind(OrderState::Paid.as_str())
                .push_bind(row.deadline)
                .push_bind(row.idempotency_key.as_str())
                .push_bind(row.created)
                .push_bind(row.updated);
        });
        // A row the recorder inserted since the lookup makes this fail (duplicate key): the
        // whole batch rolls back and is tried again, and then finds the row.
        q.build()
            .execute(&mut *tx)
            .await
            .with_context(|| format!("inserting {} order(s) as paid", chunk.len()))?;
    }
    for (sale, qty) in &added {
        let done = sqlx::query(
            "UPDATE sales SET sold = sold + ?, updated_at = UTC_TIMESTAMP(3) \
             WHERE id = ? AND sold + ? <= stock_total",
        )
        .bind(*qty)
        .bind(*sale)
        .bind(*qty)
        .execute(&mut *tx)
        .await
        .with_context(|| format!("adding {qty} to the sold count of sale {sale}"))?;
        // The row is locked and checked above, so this only fails if the schema changed.
        anyhow::ensure!(
            done.rows_affected() == 1,
            "sale {sale}: the sold count refused +{qty}"
        );
    }
    tx.commit().await.context("committing the confirm batch")?;
    Ok(outcomes)
}

/// A payment as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRow {
    pub id: Uuid,
    pub order: OrderId,
    pub sale: SaleId,
    pub amount: i64,
    pub currency: String,
    /// approved | declined | refunded
    pub status: String,
    pub provider_ref: String,
}

/// A `payments` row as selected by [`PAYMENT_COLUMNS`].
type RawPayment = (Uuid, OrderId, SaleId, i64, String, String, String);
const PAYMENT_COLUMNS: &str = "id, order_id, sale_id, amount, currency, status, provider_ref";

impl From<RawPayment> for PaymentRow {
    fn from((id, order, sale, amount, currency, status, provider_ref): RawPayment) -> Self {
        Self {
            id,
            order,
            sale,
            amount,
            currency,
            status,
            provider_ref,
        }
    }
}

/// Records a payment outcome, once per order: the first row stays (`INSERT IGNORE` on the
/// unique order id). Returns the row that is recorded, which may be an earlier one.
pub async fn record_payment(pool: &MySqlPool, payment: &PaymentRow) -> anyhow::Result<PaymentRow> {
    record_payments(pool, std::slice::from_ref(payment))
        .await?
        .into_iter()
        .next()
        .with_context(|| format!("the payment of order {} vanished", payment.order))
}

/// [`record_payment`] for many orders in one statement (one commit): returns the standing row
/// of each, in the order given.
pub async fn record_payments(
    pool: &MySqlPool,
    payments: &[PaymentRow],
) -> anyhow::Result<Vec<PaymentRow>> {
    if payments.is_empty() {
        return Ok(Vec::new());
    }
    let mut insert = sqlx::QueryBuilder::<sqlx::MySql>::new(
        "INSERT IGNORE INTO payments \
           (id, order_id, sale_id, amount, currency, status, provider_ref, created_at, updated_at) ",
    );
    insert.push_values(payments, |mut b, p| {
        b.push_bind(p.id)
            .push_bind(p.order)
            .push_bind(p.sale)
            .push_bind(p.amount)
            .push_bind(p.currency.as_str())
            .push_bind(p.status.as_str())
            .push_bind(p.provider_ref.as_str())
            .push("UTC_TIMESTAMP(3)")
            .push("UTC_TIMESTAMP(3)");
    });
    insert
        .build()
        .execute(pool)
        .await
        .with_context(|| format!("recording {} payments", payments.len()))?;
    let mut select = sqlx::QueryBuilder::<sqlx::MySql>::new(format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id IN ("
    ));
    push_in_list(&mut select, payments.iter().map(|p| p.order));
    select.push(")");
    let rows: Vec<RawPayment> = select
        .build_query_as()
        .fetch_all(pool)
        .await
        .context("reading the recorded payments")?;
    let standing: std::collections::HashMap<OrderId, PaymentRow> = rows
        .into_iter()
        .map(|raw| (raw.1, PaymentRow::from(raw)))
        .collect();
    payments
        .iter()
        .map(|p| {
            standing
                .get(&p.order)
                .cloned()
                .with_context(|| format!("the payment of order {} vanished", p.order))
        })
        .collect()
}

/// Marks an approved payment refunded (idempotent).
pub async fn mark_refunded(pool: &MySqlPool, order: OrderId) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE payments SET status = 'refunded', updated_at = UTC_TIMESTAMP(3) \
         WHERE order_id = ? AND status = 'approved'",
    )
    .bind(order)
    .execute(pool)
    .await
    .with_context(|| format!("marking the payment of order {order} refunded"))?;
    Ok(())
}

/// The payment recorded for an order.
pub async fn payment_of(pool: &MySqlPool, order: OrderId) -> anyhow::Result<Option<PaymentRow>> {
    let row: Option<RawPayment> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = ?"
    )))
    .bind(order)
    .fetch_optional(pool)
    .await
    .with_context(|| format!("reading the payment of order {order}"))?;
    Ok(row.map(PaymentRow::from))
}

/// Who an `order.confirmed` goes to and what it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub email: String,
    pub name: String,
    pub product: String,
}

/// The buyer's e-mail and name and the product's name for each `(sale, user)`, in order; `None`
/// where the user or the sale (or its product) has no row. Two statements for the whole list,
/// however long: the confirm worker asks for a batch of paid orders at once.
pub async fn recipients(
    pool: &MySqlPool,
    wanted: &[(SaleId, UserId)],
) -> anyhow::Result<Vec<Option<Recipient>>> {
    let users: std::collections::BTreeSet<UserId> = wanted.iter().map(|(_, u)| *u).collect();
    let sales: std::collections::BTreeSet<SaleId> = wanted.iter().map(|(s, _)| *s).collect();
    let mut people: BTreeMap<UserId, (String, String)> = BTreeMap::new();
    let users: Vec<UserId> = users.into_iter().collect();
    for chunk in users.chunks(MAX_RECORD_BATCH) {
        let mut q =
            sqlx::QueryBuilder::<MySql>::new("SELECT id, email, name FROM users WHERE id IN (");
        push_in_list(&mut q, chunk.iter().copied());
        q.push(")");
        let found: Vec<(UserId, String, String)> = q
            .build_query_as()
            .fetch_all(pool)
            .await
            .with_context(|| format!("reading {} buyer(s)", chunk.len()))?;
        people.extend(
            found
                .into_iter()
                .map(|(id, email, name)| (id, (email, name))),
        );
    }
    let mut products: BTreeMap<SaleId, String> = BTreeMap::new();
    let sales: Vec<SaleId> = sales.into_iter().collect();
    for chunk in sales.chunks(MAX_RECORD_BATCH) {
        let mut q = sqlx::QueryBuilder::<MySql>::new(
            "SELECT s.id, p.name FROM sales s JOIN products p ON p.id = s.product_id WHERE s.id IN (",
        );
        push_in_list(&mut q, chunk.iter().copied());
        q.push(")");
        let found: Vec<(SaleId, String)> = q
            .build_query_as()
            .fetch_all(pool)
            .await
            .with_context(|| format!("reading the products of {} sale(s)", chunk.len()))?;
        products.extend(found);
    }
    Ok(wanted
        .iter()
        .map(|(sale, user)| {
            let (email, name) = people.get(user)?.clone();
            let product = products.get(sale)?.clone();
            Some(Recipient {
                email,
                name,
                product,
            })
        })
        .collect())
}

/// Pushes `ids` as the items of an `IN (...)` list, padded to the next power of two by
/// repeating the last id (a repeat changes nothing in `IN`). MySQL prepares a statement per
/// distinct text, so unpadded batches of every length from 1 to 1,000 would each cost a
/// prepare round trip and crowd sqlx's statement cache; padded, there are ten shapes.
fn push_in_list(q: &mut sqlx::QueryBuilder<MySql>, ids: impl IntoIterator<Item = impl Into<Uuid>>) {
    let ids: Vec<Uuid> = ids.into_iter().map(Into::into).collect();
    let Some(last) = ids.last().copied() else {
        return;
    };
    let pad = ids.len().next_power_of_two() - ids.len();
    let mut list = q.separated(", ");
    for id in ids.into_iter().chain(std::iter::repeat_n(last, pad)) {
        list.push_bind(id);
    }
}
