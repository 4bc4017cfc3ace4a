//! The post-sale report (issue #24): what happened at a sale's door, from figures recorded
//! while it ran, and the copy that keeps them in MySQL.
//!
//! # Where the figures come from
//!
//! - **Redis, live** (written inside scripts the requests already run, see
//!   `lua/lib/prelude.lua` "The post-sale report's recording"): the sale's `rep` hash (totals:
//!   `joined`, `joined_before_open`, `left`, `sold_out_at`; the time-in-line histogram
//!   `w:<bucket>`; the ETA error histogram `e:<bucket>` and `e_within`; refusals `r:<reason>`,
//!   flushed once a second by each waitroom process) and `rps` (per second since `opens_at`:
//!   `a:<t>` arrivals, `m:<t>` admissions, `l:<t>` queue length). Histogram bucket b holds
//!   durations in [1.05^b, 1.05^(b+1)) ms, so a percentile read at a bucket's geometric middle is
//!   within 2.5 % of the true one, and a day fits in under 400 buckets.
//! - **MySQL, durable**: [`copy`] (run every few seconds by the expiry worker for every sale that
//!   opened less than [`COPY_WINDOW`] ago or has not opened yet) merges `rep`, the waiting room's
//!   `wr` totals and the new seconds of `rps` into `sale_report_figures` and
//!   `sale_report_seconds`. The merge never lowers a count (`GREATEST`; `sold_out_at` keeps the
//!   earliest), so a Redis that lost the sale's keys cannot erase what was copied. Orders per
//!   second and the funnel's order figures are the `orders` and `payments` rows themselves.
//! - [`build`] reads MySQL only: the report is the durable record, and the endpoint costs a few
//!   indexed queries. Rows are kept [`RETENTION_DAYS`] days after the sale ends ([`purge`]).
//!
//! # Bounds
//!
//! The series covers at most [`SERIES_SECONDS`] seconds from `opens_at` (6 h; the scripts stop
//! adding fields past it, totals and histograms go on), so neither Redis nor the report grows
//! with the crowd: a million buyers cost the same series and histograms as a thousand.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use fred::interfaces::{HashesInterface, SortedSetsInterface};
use serde::Serialize;
use sqlx::MySqlPool;

use dropline_core::clients::redis::Redis;
use dropline_core::ids::SaleId;
use dropline_core::sale::keys::SaleKeys;

/// Seconds of the per-second series after `opens_at` (`REPORT_SECONDS` in the prelude).
pub const SERIES_SECONDS: i64 = 21_600;
/// How long after `opens_at` the worker keeps copying a sale (the series' span and an hour).
pub const COPY_WINDOW: ChronoDuration = ChronoDuration::hours(7);
/// Report rows are deleted this many days after the sale ended (≥ 30 days promised).
pub const RETENTION_DAYS: i64 = 90;
/// Seconds copied again each time (they may still be counting).
const RECOPY_SECONDS: i64 = 10;
/// A bucket's growth (`report_bucket` in the prelude).
const BUCKET_GROWTH: f64 = 1.05;

/// The report of one sale (`GET /api/admin/sales/{id}/report`, `dropline sale report --json`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SaleReport {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub sale_id: SaleId,
    /// `scheduled | open | paused | sold_out | closed`, as MySQL has it.
    pub state: String,
    pub opens_at: DateTime<Utc>,
    /// The first admission tick that found no unit available; `null` if it never sold out.
    pub sold_out_at: Option<DateTime<Utc>>,
    /// One entry per second from `opens_at` to the last second with a figure (at most 21,600).
    pub series: Vec<Second>,
    /// New places made before `opens_at` (not in `series`).
    pub arrivals_before_open: u64,
    pub time_in_line: TimeInLine,
    pub eta_accuracy: EtaAccuracy,
    pub funnel: Funnel,
    pub refusals: Refusals,
}

/// One second of the sale.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Second {
    /// Seconds since `opens_at`.
    pub t: i64,
    /// New places in line.
    pub arrivals: u64,
    pub admissions: u64,
    /// Orders made (holds).
    pub orders: u64,
    /// Waiting buyers after the second's last admission tick.
    pub queue_length: u64,
}

/// Time from joining (or `opens_at`, for earlier arrivals) to admission, admitted buyers only.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct TimeInLine {
    /// Seconds (within 2.5 %); `null` when nobody was admitted.
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub count: u64,
}

/// The first ETA each admitted buyer was shown against the wait they had from then
/// (design/door.md §3).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct EtaAccuracy {
    /// Median of |wait − ETA| in seconds (within 2.5 %); `null` without data.
    pub median_abs_error_seconds: Option<f64>,
    /// Share of buyers with |wait − ETA| ≤ 0.2 × ETA + 2 s (0..1); `null` without data.
    pub share_within: Option<f64>,
    pub count: u64,
}

/// Joined → admitted → ordered → paid, and where buyers left.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Funnel {
    /// New places made (a buyer who lost a place and joined again counts again).
    pub joined: u64,
    /// Admissions.
    pub admitted: u64,
    /// Orders made.
    pub ordered: u64,
    /// Orders paid.
    pub paid: u64,
    /// Places given up with "leave the line".
    pub left_line: u64,
    /// Places lost: silent past the return grace.
    pub abandoned: u64,
    /// Admissions that ended without an order (exact once every pass has expired).
    pub pass_expired_unused: u64,
    /// Orders whose hold expired.
    pub hold_expired: u64,
    /// Orders the buyer cancelled.
    pub cancelled: u64,
    /// Orders whose payment failed.
    pub payment_failed: u64,
    /// Paid orders refunded.
    pub refunded: u64,
}

/// Joins refused, by reason.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Refusals {
    pub rate_limited: u64,
    pub queue_full: u64,
    /// Challenges that failed (invalid, expired or spent).
    pub pow: u64,
    /// Access codes refused (invalid, used, or none during the presale).
    pub access_code: u64,
}

/// The sale's row, as the report needs it.
struct SaleRow {
    opens_at: DateTime<Utc>,
    state: String,
}

/// `opens_at, closes_at, closed_at, paused, sold, stock_total` of `sales`.
type SalesRow = (
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    bool,
    i32,
    i32,
);

async fn sale_row(mysql: &MySqlPool, sale: SaleId) -> anyhow::Result<Option<SaleRow>> {
    let row: Option<SalesRow> = sqlx::query_as(
        "SELECT opens_at, closes_at, closed_at, paused, sold, stock_total \
         FROM sales WHERE id = ?",
    )
    .bind(sale)
    .fetch_optional(mysql)
    .await
    .context("reading the sale")?;
    let now = Utc::now();
    Ok(
        row.map(|(opens_at, closes_at, closed_at, paused, sold, stock)| {
            let state = if closed_at.is_some() || closes_at.is_some_and(|c| c <= now) {
                "closed"
            } else if sold >= stock {
                "sold_out"
            } else if now < opens_at {
                "scheduled"
            } else if paused {
                "paused"
            } else {
                "open"
            };
            SaleRow {
                opens_at,
                state: state.to_owned(),
            }
        }),
    )
}

/// What one [`copy`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub figures: usize,
    pub seconds: usize,
}

/// Copies the sale's live figures from Redis to MySQL (idempotent; never lowers a count).
/// `None`: no such sale in MySQL.
#[tracing::instrument(skip_all, fields(sale_id = %sale))]
pub async fn copy(
    redis: &Redis,
    mysql: &MySqlPool,
    sale: SaleId,
) -> anyhow::Result<Option<Copied>> {
    let Some(row) = sale_row(mysql, sale).await? else {
        return Ok(None);
    };
    let keys = SaleKeys::new(redis, sale);
    let pool = redis.pool();
    let rep: HashMap<String, String> = pool
        .hgetall(keys.report())
        .await
        .context("reading the report hash")?;
    let mut figures: BTreeMap<String, i64> = rep
        .iter()
        .filter_map(|(name, value)| Some((name.clone(), value.parse::<i64>().ok()?)))
        .collect();
    let room: Vec<Option<i64>> = pool
        .hmget(keys.room(), vec!["admitted_total", "abandoned_total"])
        .await
        .context("reading the waiting room's totals")?;
    for (name, value) in ["admitted_total", "abandoned_total"].iter().zip(room) {
        if let Some(value) = value {
            figures.insert((*name).to_owned(), value);
        }
    }
    let now_ms = Utc::now().timestamp_millis();
    let active: i64 = pool
        .zcount(keys.admitted(), (now_ms + 1) as f64, f64::INFINITY)
        .await
        .context("counting live admissions")?;
    figures.insert("active".to_owned(), active);

    let elapsed = (Utc::now() - row.opens_at).num_seconds();
    let last: Option<(i64,)> =
        sqlx::query_as("SELECT last_t FROM sale_report_copies WHERE sale_id = ?")
            .bind(sale)
            .fetch_optional(mysql)
            .await
            .context("reading the copy's progress")?;
    let from = last.map_or(0, |(t,)| (t - RECOPY_SECONDS).max(0));
    let to = elapsed.min(SERIES_SECONDS - 1);
    let mut seconds: Vec<(i64, i64, i64, i64)> = Vec::new();
    let mut t = from;
    while t <= to {
        let end = (t + 999).min(to);
        let fields: Vec<String> = (t..=end)
            .flat_map(|s| [format!("a:{s}"), format!("m:{s}"), format!("l:{s}")])
            .collect();
        let values: Vec<Option<i64>> = pool
            .hmget(keys.report_series(), fields)
            .await
            .context("reading the report's series")?;
        for (i, chunk) in values.chunks(3).enumerate() {
            let get = |j: usize| chunk.get(j).copied().flatten().unwrap_or(0);
            let (a, m, l) = (get(0), get(1), get(2));
            if a != 0 || m != 0 || l != 0 {
                seconds.push((t + i as i64, a, m, l));
            }
        }
        t = end + 1;
    }

    let mut tx = mysql.begin().await.context("starting the report copy")?;
    if !figures.is_empty() {
        let mut insert =
            sqlx::QueryBuilder::new("INSERT INTO sale_report_figures (sale_id, name, value) ");
        insert.push_values(&figures, |mut b, (name, value)| {
            b.push_bind(sale).push_bind(name).push_bind(*value);
        });
        insert.push(
            " ON DUPLICATE KEY UPDATE value = CASE name \
               WHEN 'sold_out_at' THEN LEAST(value, VALUES(value)) \
               WHEN 'active' THEN VALUES(value) \
               ELSE GREATEST(value, VALUES(value)) END",
        );
        insert
            .build()
            .execute(&mut *tx)
            .await
            .context("writing the report's figures")?;
    }
    for part in seconds.chunks(1000) {
        let mut insert = sqlx::QueryBuilder::new(
            "INSERT INTO sale_report_seconds (sale_id, t, arrivals, admissions, queue_length) ",
        );
        insert.push_values(part, |mut b, (t, a, m, l)| {
            b.push_bind(sale)
                .push_bind(*t)
                .push_bind(*a)
                .push_bind(*m)
                .push_bind(*l);
        });
        insert.push(
            " ON DUPLICATE KEY UPDATE arrivals = GREATEST(arrivals, VALUES(arrivals)), \
               admissions = GREATEST(admissions, VALUES(admissions)), \
               queue_length = GREATEST(queue_length, VALUES(queue_length))",
        );
        insert
            .build()
            .execute(&mut *tx)
            .await
            .context("writing the report's series")?;
    }
    sqlx::query(
        "INSERT INTO sale_report_copies (sale_id, last_t, copied_at) VALUES (?, ?, ?) \
         ON DUPLICATE KEY UPDATE last_t = GREATEST(last_t, VALUES(last_t)), \
         copied_at = VALUES(copied_at)",
    )
    .bind(sale)
    .bind(to.max(0))
    .bind(Utc::now())
    .execute(&mut *tx)
    .await
    .context("writing the copy's progress")?;
    tx.commit().await.context("committing the report copy")?;
    Ok(Some(Copied {
        figures: figures.len(),
        seconds: seconds.len(),
    }))
}

/// The sales [`copy`] looks after now: not opened yet, or opened within [`COPY_WINDOW`].
pub async fn sales_to_copy(mysql: &MySqlPool) -> anyhow::Result<Vec<SaleId>> {
    let rows: Vec<(SaleId,)> = sqlx::query_as("SELECT id FROM sales WHERE opens_at > ?")
        .bind(Utc::now() - COPY_WINDOW)
        .fetch_all(mysql)
        .await
        .context("listing the sales to copy the report of")?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Deletes the report rows of sales that ended more than [`RETENTION_DAYS`] ago (their end:
/// `closed_at`, else `closes_at`, else `opens_at` + the series' span). Returns rows deleted.
pub async fn purge(mysql: &MySqlPool) -> anyhow::Result<u64> {
    let cutoff = Utc::now() - ChronoDuration::days(RETENTION_DAYS);
    // One statement per table, each a literal (sqlx audits dynamic SQL).
    const PURGES: [(&str, &str); 3] = [
        (
            "sale_report_seconds",
            "DELETE r FROM sale_report_seconds r JOIN sales s ON s.id = r.sale_id \
             WHERE COALESCE(s.closed_at, s.closes_at, s.opens_at + INTERVAL 6 HOUR) < ?",
        ),
        (
            "sale_report_figures",
            "DELETE r FROM sale_report_figures r JOIN sales s ON s.id = r.sale_id \
             WHERE COALESCE(s.closed_at, s.closes_at, s.opens_at + INTERVAL 6 HOUR) < ?",
        ),
        (
            "sale_report_copies",
            "DELETE r FROM sale_report_copies r JOIN sales s ON s.id = r.sale_id \
             WHERE COALESCE(s.closed_at, s.closes_at, s.opens_at + INTERVAL 6 HOUR) < ?",
        ),
    ];
    let mut deleted = 0;
    for (table, sql) in PURGES {
        deleted += sqlx::query(sql)
            .bind(cutoff)
            .execute(mysql)
            .await
            .with_context(|| format!("purging old rows of {table}"))?
            .rows_affected();
    }
    Ok(deleted)
}

/// A sale's report from MySQL. `None`: no such sale.
#[tracing::instrument(skip_all, fields(sale_id = %sale))]
pub async fn build(mysql: &MySqlPool, sale: SaleId) -> anyhow::Result<Option<SaleReport>> {
    let Some(row) = sale_row(mysql, sale).await? else {
        return Ok(None);
    };
    let figures: Vec<(String, i64)> =
        sqlx::query_as("SELECT name, value FROM sale_report_figures WHERE sale_id = ?")
            .bind(sale)
            .fetch_all(mysql)
            .await
            .context("reading the report's figures")?;
    let figures: HashMap<String, i64> = figures.into_iter().collect();
    let fig = |name: &str| u64::try_from(figures.get(name).copied().unwrap_or(0)).unwrap_or(0);

    let stored: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT t, arrivals, admissions, queue_length FROM sale_report_seconds \
         WHERE sale_id = ? ORDER BY t",
    )
    .bind(sale)
    .fetch_all(mysql)
    .await
    .context("reading the report's series")?;
    let orders: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT CAST(FLOOR(TIMESTAMPDIFF(MICROSECOND, ?, created_at) / 1000000) AS SIGNED) AS t, \
                COUNT(*) FROM orders WHERE sale_id = ? GROUP BY t",
    )
    .bind(row.opens_at)
    .bind(sale)
    .fetch_all(mysql)
    .await
    .context("counting orders per second")?;
    let mut by_second: BTreeMap<i64, Second> = BTreeMap::new();
    for (t, a, m, l) in stored {
        if (0..SERIES_SECONDS).contains(&t) {
            let s = by_second.entry(t).or_insert(Second {
                t,
                ..Second::default()
            });
            s.arrivals = u64::try_from(a).unwrap_or(0);
            s.admissions = u64::try_from(m).unwrap_or(0);
            s.queue_length = u64::try_from(l).unwrap_or(0);
        }
    }
    for (t, n) in orders {
        if (0..SERIES_SECONDS).contains(&t) {
            let s = by_second.entry(t).or_insert(Second {
                t,
                ..Second::default()
            });
            s.orders = u64::try_from(n).unwrap_or(0);
        }
    }
    let last = by_second.keys().next_back().copied();
    let series: Vec<Second> = match last {
        None => Vec::new(),
        Some(last) => (0..=last)
            .map(|t| {
                by_second.get(&t).copied().unwrap_or(Second {
                    t,
                    ..Second::default()
                })
            })
            .collect(),
    };

    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, COUNT(*) FROM orders WHERE sale_id = ? GROUP BY status")
            .bind(sale)
            .fetch_all(mysql)
            .await
            .context("counting orders by status")?;
    let statuses: HashMap<String, u64> = statuses
        .into_iter()
        .map(|(s, n)| (s, u64::try_from(n).unwrap_or(0)))
        .collect();
    let status = |s: &str| statuses.get(s).copied().unwrap_or(0);
    let (buyers, refunded): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(DISTINCT user_id) FROM orders WHERE sale_id = ?), \
                (SELECT COUNT(*) FROM payments p JOIN orders o ON o.id = p.order_id \
                 WHERE o.sale_id = ? AND p.status = 'refunded')",
    )
    .bind(sale)
    .bind(sale)
    .fetch_one(mysql)
    .await
    .context("counting buyers and refunds")?;
    let admitted = fig("admitted_total");
    let funnel = Funnel {
        joined: fig("joined"),
        admitted,
        ordered: statuses.values().sum(),
        paid: status("paid"),
        left_line: fig("left"),
        abandoned: fig("abandoned_total"),
        pass_expired_unused: admitted
            .saturating_sub(u64::try_from(buyers).unwrap_or(0))
            .saturating_sub(fig("active")),
        hold_expired: status("expired"),
        cancelled: status("cancelled"),
        payment_failed: status("failed"),
        refunded: u64::try_from(refunded).unwrap_or(0),
    };

    let waits = histogram(&figures, "w:");
    let errors = histogram(&figures, "e:");
    let wait_count: u64 = waits.values().sum();
    let error_count: u64 = errors.values().sum();
    let report = SaleReport {
        sale_id: sale,
        state: row.state,
        opens_at: row.opens_at,
        sold_out_at: figures
            .get("sold_out_at")
            .and_then(|&ms| DateTime::<Utc>::from_timestamp_millis(ms)),
        series,
        arrivals_before_open: fig("joined_before_open"),
        time_in_line: TimeInLine {
            p50: percentile(&waits, 0.50),
            p90: percentile(&waits, 0.90),
            p99: percentile(&waits, 0.99),
            count: wait_count,
        },
        eta_accuracy: EtaAccuracy {
            median_abs_error_seconds: percentile(&errors, 0.50),
            share_within: (error_count > 0).then(|| fig("e_within") as f64 / error_count as f64),
            count: error_count,
        },
        funnel,
        refusals: Refusals {
            rate_limited: fig("r:rate_limited"),
            queue_full: fig("r:queue_full"),
            pow: fig("r:pow"),
            access_code: fig("r:access_code"),
        },
    };
    Ok(Some(report))
}

/// Bucket → count of the histogram whose fields start with `prefix`.
fn histogram(figures: &HashMap<String, i64>, prefix: &str) -> BTreeMap<i64, u64> {
    figures
        .iter()
        .filter_map(|(name, &n)| {
            let bucket = name.strip_prefix(prefix)?.parse::<i64>().ok()?;
            Some((bucket, u64::try_from(n).ok()?))
        })
        .collect()
}

/// The q-quantile in seconds: the geometric middle of the bucket holding the ⌈q·n⌉-th value.
fn percentile(buckets: &BTreeMap<i64, u64>, q: f64) -> Option<f64> {
    let count: u64 = buckets.values().sum();
    if count == 0 {
        return None;
    }
    let rank = ((q * count as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (&bucket, &n) in buckets {
        seen += n;
        if seen >= rank {
            let ms = if bucket <= 0 {
                0.5
            } else {
                BUCKET_GROWTH.powf(bucket as f64 + 0.5)
            };
            return Some(ms.round() / 1000.0);
        }
    }
    None
}

impl SaleReport {
    /// The terminal form of `dropline sale report`.
    pub fn render_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let secs = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s"));
        let _ = writeln!(out, "Sale {} ({})", self.sale_id, self.state);
        let _ = writeln!(out, "  opened      {}", self.opens_at.to_rfc3339());
        let _ = writeln!(
            out,
            "  sold out    {}",
            self.sold_out_at.map_or_else(
                || "no".to_owned(),
                |at| format!(
                    "{} ({} s after opening)",
                    at.to_rfc3339(),
                    (at - self.opens_at).num_seconds()
                )
            )
        );
        let peak = |f: fn(&Second) -> u64| self.series.iter().map(f).max().unwrap_or(0);
        let _ = writeln!(
            out,
            "  per second  peak arrivals {}, admissions {}, orders {}; longest line {} ({} s recorded)",
            peak(|s| s.arrivals),
            peak(|s| s.admissions),
            peak(|s| s.orders),
            peak(|s| s.queue_length),
            self.series.len()
        );
        let t = &self.time_in_line;
        let _ = writeln!(
            out,
            "  time in line  p50 {}  p90 {}  p99 {}  ({} admitted buyers)",
            secs(t.p50),
            secs(t.p90),
            secs(t.p99),
            t.count
        );
        let e = &self.eta_accuracy;
        let _ = writeln!(
            out,
            "  ETA accuracy  median error {}, within ±20% + 2 s: {}  ({} buyers)",
            secs(e.median_abs_error_seconds),
            e.share_within
                .map_or_else(|| "-".to_owned(), |s| format!("{:.0}%", s * 100.0)),
            e.count
        );
        let f = &self.funnel;
        let _ = writeln!(
            out,
            "  funnel      joined {} → admitted {} → ordered {} → paid {}",
            f.joined, f.admitted, f.ordered, f.paid
        );
        let _ = writeln!(
            out,
            "  left        left the line {}, abandoned {}, pass expired unused {}, hold expired {}, cancelled {}, payment failed {}, refunded {}",
            f.left_line,
            f.abandoned,
            f.pass_expired_unused,
            f.hold_expired,
            f.cancelled,
            f.payment_failed,
            f.refunded
        );
        let r = &self.refusals;
        let _ = writeln!(
            out,
            "  refused     rate limited {}, queue full {}, proof of work {}, access code {}",
            r.rate_limited, r.queue_full, r.pow, r.access_code
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_read_the_bucket_middle() {
        // 100 waits of 10 s: bucket floor(ln(10000)/ln(1.05)) = 188.
        let b = (10_000f64.ln() / 1.05f64.ln()).floor() as i64;
        let buckets = BTreeMap::from([(b, 100)]);
        let p50 = percentile(&buckets, 0.5).unwrap_or(0.0);
        assert!((p50 - 10.0).abs() / 10.0 < 0.05, "{p50}");
        assert_eq!(percentile(&BTreeMap::new(), 0.5), None);
    }
}
