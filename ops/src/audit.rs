//! `dropline sale audit <sale-id>`: runs the shared audit (`dropline_audit`:
//! DESIGN §6 for one sale, Redis against MySQL, read-only) and prints its report, as text for
//! a terminal or as one JSON object.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context;
use dropline_audit::{AuditOptions, Report, UnknownSale, audit};
use dropline_core::Config;
use dropline_core::clients::mysql;
use dropline_core::clients::redis::Redis;
use dropline_core::ids::SaleId;
use dropline_core::orders::OrderState;

/// `dropline sale audit`: 0 no breach, 1 a breach (or the audit could not run: then nothing
/// is printed on stdout), 2 a malformed or unknown sale id. Connects without migrating or
/// creating anything: the audit only reads.
pub async fn sale_audit(
    config: &Config,
    sale_id: &str,
    json: bool,
    settled: bool,
) -> anyhow::Result<ExitCode> {
    let Ok(sale) = SaleId::parse_str(sale_id.trim()) else {
        eprintln!("dropline: `{sale_id}` is not a sale id (a UUID)");
        return Ok(ExitCode::from(2));
    };
    let mysql = mysql::connect_existing(&config.mysql)
        .await
        .context("connecting to MySQL")?;
    let redis = match Redis::connect(&config.redis).await {
        Ok(redis) => redis,
        Err(error) => {
            mysql.close().await;
            return Err(error.context("connecting to Redis"));
        }
    };
    let options = AuditOptions {
        settled,
        ..AuditOptions::default()
    };
    let done = audit(&mysql, &redis, sale, options).await;
    mysql.close().await;
    redis.quit().await;
    let report = match done {
        Ok(report) => report,
        Err(error) if error.downcast_ref::<UnknownSale>().is_some() => {
            eprintln!("dropline: no sale {sale} in MySQL (check the id and mysql.url)");
            return Ok(ExitCode::from(2));
        }
        Err(error) => return Err(error.context(format!("auditing sale {sale}"))),
    };
    if json {
        println!("{}", report.to_json()?);
    } else {
        print!("{}", human(&report));
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The report as text for a terminal (`dropline sale audit` without `--json`).
pub fn human(report: &Report) -> String {
    let mut out = String::new();
    let total: u64 = report.breach_counts.values().sum();
    let verdict = if report.ok {
        "OK".to_owned()
    } else {
        format!("{total} BREACH(ES)")
    };
    let mode = if report.settled { " (settled)" } else { "" };
    let _ = writeln!(out, "sale {}{mode}: {verdict}", report.sale_id);
    let m = &report.mysql;
    let r = &report.redis;
    let _ = writeln!(
        out,
        "  stock    {} in MySQL (per-user limit {}), sold {} = paid rows {}",
        m.stock_total, m.per_user_limit, m.sold, m.paid_units
    );
    if r.armed {
        let v = |x: Option<i64>| x.map_or_else(|| "?".to_owned(), |x| x.to_string());
        let _ = writeln!(
            out,
            "  redis    avail {} + held {} + sold {} (stock {}), {} in holds, {} outbox entr{}",
            v(r.avail),
            v(r.held),
            v(r.sold),
            v(r.stock_total),
            r.holds.unwrap_or(0),
            r.outbox_entries,
            if r.outbox_entries == 1 { "y" } else { "ies" }
        );
        let _ = writeln!(
            out,
            "  scan     {} pass(es), {}",
            r.scans,
            if r.stable {
                "no order changed meanwhile"
            } else {
                "orders changed during each"
            }
        );
    } else {
        let _ = writeln!(out, "  redis    not armed");
    }
    let _ = writeln!(
        out,
        "  orders   {:>13} {:>13} {:>13} {:>13} {:>13} {:>13}  orders (units)",
        "held", "paying", "paid", "expired", "cancelled", "failed"
    );
    for (name, counts) in [("redis", &r.orders), ("mysql", &m.orders)] {
        let cells: Vec<String> = OrderState::ALL
            .iter()
            .map(|s| {
                let t = counts.get(*s);
                let cell = format!("{} ({})", t.orders, t.units);
                format!("{cell:>13}")
            })
            .collect();
        let _ = writeln!(out, "  {name:<8} {}", cells.join(" "));
    }
    let _ = writeln!(out, "  payments {}", m.payments);
    if report.pending.orders > 0 {
        let _ = writeln!(
            out,
            "pending: {} order(s) in flight (not breaches)",
            report.pending.orders
        );
        for p in &report.pending.examples {
            let _ = writeln!(out, "  {}: {}", p.order, p.reason);
        }
        if report.pending.orders > report.pending.examples.len() as u64 {
            let _ = writeln!(
                out,
                "  ... and {} more",
                report.pending.orders - report.pending.examples.len() as u64
            );
        }
    }
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    if report.breaches.is_empty() {
        let _ = writeln!(out, "breaches: none");
    } else {
        let _ = writeln!(out, "breaches:");
        for b in &report.breaches {
            let _ = writeln!(out, "  {}: {}", b.code, b.message);
        }
        for (code, n) in &report.breach_counts {
            let listed = report.breaches.iter().filter(|b| b.code == *code).count() as u64;
            if *n > listed {
                let _ = writeln!(out, "  {code}: ... and {} more", n - listed);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use dropline_audit::{
        Breach, BreachCode, MysqlFigures, Pending, PendingOrder, RedisFigures, Report, Tally,
    };
    use dropline_core::ids::{OrderId, SaleId};
    use uuid::Uuid;

    use super::human;

    fn report() -> Report {
        let sale = SaleId::from_uuid(Uuid::from_u128(1));
        let mut redis = RedisFigures {
            armed: true,
            stock_total: Some(20),
            per_user_limit: Some(2),
            avail: Some(15),
            held: Some(2),
            sold: Some(3),
            holds: Some(2),
            outbox_entries: 1,
            scans: 1,
            stable: true,
            ..RedisFigures::default()
        };
        redis.orders.paid = Tally {
            orders: 2,
            units: 3,
        };
        Report {
            sale_id: sale,
            settled: true,
            ok: false,
            redis,
            mysql: MysqlFigures {
                stock_total: 20,
                per_user_limit: 2,
                sold: 3,
                paid_units: 3,
                payments: 2,
                ..MysqlFigures::default()
            },
            pending: Pending {
                orders: 3,
                examples: vec![PendingOrder {
                    order: OrderId::from_uuid(Uuid::from_u128(7)),
                    reason: "paying in Redis".into(),
                }],
            },
            breaches: vec![Breach {
                code: BreachCode::LiveOrderLeft,
                message: "order 9 is still held in Redis".into(),
                order: None,
                user: None,
            }],
            breach_counts: BTreeMap::from([(BreachCode::LiveOrderLeft, 4)]),
            notes: vec!["a note".into()],
        }
    }

    #[test]
    fn the_terminal_report_shows_figures_pending_orders_and_every_breach() {
        let text = human(&report());
        for line in [
            "sale 00000000-0000-0000-0000-000000000001 (settled): 4 BREACH(ES)",
            "  stock    20 in MySQL (per-user limit 2), sold 3 = paid rows 3",
            "  redis    avail 15 + held 2 + sold 3 (stock 20), 2 in holds, 1 outbox entry",
            "  scan     1 pass(es), no order changed meanwhile",
            "  payments 2",
            "pending: 3 order(s) in flight (not breaches)",
            "  00000000-0000-0000-0000-000000000007: paying in Redis",
            "  ... and 2 more",
            "note: a note",
            "breaches:",
            "  live_order_left: order 9 is still held in Redis",
            "  live_order_left: ... and 3 more",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        assert!(
            text.lines()
                .any(|l| l.starts_with("  redis ") && l.contains("2 (3)")),
            "{text}"
        );
    }

    #[test]
    fn a_clean_report_says_ok_and_no_breaches() {
        let mut clean = report();
        clean.ok = true;
        clean.settled = false;
        clean.breaches.clear();
        clean.breach_counts.clear();
        let text = human(&clean);
        assert!(
            text.starts_with("sale 00000000-0000-0000-0000-000000000001: OK\n"),
            "{text}"
        );
        assert!(text.ends_with("breaches: none\n"), "{text}");
    }
}
