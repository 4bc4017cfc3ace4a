//! `dropline payments resend <order-id>`: re-sends a `payment.completed` the confirm worker
//! parked (issue #17, hole 5). `dropline payments reconcile <sale-id>`: Stripe's charges and
//! refunds against the books ([`reconcile_command`]).
//!
//! The confirm worker marks an order whose completion it parks, and the expiry worker's
//! sweeper then leaves it alone instead of re-sending it every sweep. Once the cause is fixed
//! (MySQL back, a missing row restored), an operator runs this: the order's sale is found in
//! MySQL, then the workers' code asks the provider and reports its decision through the same
//! path as the sweeper (payment row + `payment.completed`, broker-confirmed) and clears the
//! mark. The workers' part is passed in by the binary ([`ResendFn`]), since this crate
//! depends on `core` only.
//!
//! Exit status: 0 re-sent (or nothing left to send: the order ended), 1 not done (a payment
//! still in flight, an order Redis lost, a dependency failed), 2 a malformed order id or one
//! MySQL does not know (nothing changed).

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use dropline_audit::payments::{IntentSource, UnknownSale, reconcile};
use dropline_core::Config;
use dropline_core::clients::deps::{Deps, Needs};
use dropline_core::clients::mysql;
use dropline_core::config::ProviderKind;
use dropline_core::ids::{OrderId, SaleId};
use dropline_core::orders::ledger;
use dropline_core::orders::rereport::Resent;
use sqlx::MySqlPool;

/// What the workers' re-send returns.
pub type ResendFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Resent>> + Send + 'a>>;

/// The workers' re-send of one order of one sale (`dropline_workers::expiry::resend`).
pub type ResendFn = for<'a> fn(&'a Config, &'a Deps, SaleId, OrderId) -> ResendFuture<'a>;

/// `dropline payments resend <order-id>` (see the module docs).
pub async fn resend_command(
    config: &Config,
    order_id: &str,
    resend: ResendFn,
) -> anyhow::Result<ExitCode> {
    let Ok(order) = OrderId::parse_str(order_id.trim()) else {
        eprintln!("dropline: `{order_id}` is not an order id (a UUID)");
        return Ok(ExitCode::from(2));
    };
    let deps = Deps::connect(config, Needs::ALL)
        .await
        .context("connecting to dependencies")?;
    let done = resend_order(config, &deps, order, resend).await;
    deps.close().await;
    let Some(resent) = done? else {
        eprintln!("dropline: no order {order} in MySQL (check the id and mysql.url)");
        return Ok(ExitCode::from(2));
    };
    let (code, text) = describe(order, &resent);
    println!("{text}");
    Ok(code)
}

/// Finds the order's sale in MySQL and re-sends; `None` when MySQL does not know the order.
async fn resend_order(
    config: &Config,
    deps: &Deps,
    order: OrderId,
    resend: ResendFn,
) -> anyhow::Result<Option<Resent>> {
    let Some(row) = ledger::get(deps.mysql()?, order).await? else {
        return Ok(None);
    };
    let resent = resend(config, deps, row.sale, order)
        .await
        .with_context(|| format!("re-sending the completion of order {order}"))?;
    Ok(Some(resent))
}

/// The exit status and the line printed for what was done.
fn describe(order: OrderId, resent: &Resent) -> (ExitCode, String) {
    match resent {
        Resent::Reported { approved } => (
            ExitCode::SUCCESS,
            format!(
                "order {order}: payment.completed ({}) re-sent to the confirm worker; parked mark cleared",
                if *approved { "approved" } else { "declined" }
            ),
        ),
        Resent::Voided => (
            ExitCode::SUCCESS,
            format!(
                "order {order}: the provider had no decision; voided there, the order failed and its stock is back"
            ),
        ),
        Resent::NotPaying(state) => (
            ExitCode::SUCCESS,
            format!("order {order} is {state}: nothing to re-send (parked mark cleared)"),
        ),
        Resent::InFlight { deadline_ms } => (
            ExitCode::from(1),
            format!(
                "order {order}: no parked completion and its payment may be in flight until {}; nothing done",
                dropline_core::sale::from_ms(*deadline_ms).to_rfc3339()
            ),
        ),
        Resent::NotInRedis => (
            ExitCode::from(1),
            format!(
                "order {order}: Redis does not know it (run `dropline sale rearm` for its sale first); nothing done"
            ),
        ),
    }
}

/// Builds the Stripe reader for `payments reconcile` (the workers' Stripe client; passed in by
/// the binary, since this crate depends on `core` and `audit` only).
pub type StripeFn = fn(&Config, &MySqlPool) -> anyhow::Result<Arc<dyn IntentSource>>;

/// `dropline payments reconcile <sale-id>`: one JSON line per break on stdout
/// ([`dropline_audit::payments::Break`]), a summary on stderr. Exit status: 0 no break, 1 any
/// break, 2 it could not check (a malformed or unknown sale, the provider is not Stripe, or
/// MySQL or Stripe could not be read).
pub async fn reconcile_command(
    config: &Config,
    sale_id: &str,
    stripe: StripeFn,
) -> anyhow::Result<ExitCode> {
    let Ok(sale) = SaleId::parse_str(sale_id.trim()) else {
        eprintln!("dropline: `{sale_id}` is not a sale id (a UUID)");
        return Ok(ExitCode::from(2));
    };
    if config.payment.provider != ProviderKind::Stripe {
        eprintln!(
            "dropline: payment.provider is not `stripe`: there are no charges to reconcile (the simulated provider's ledger is checked by `sale audit`)"
        );
        return Ok(ExitCode::from(2));
    }
    let mysql = match mysql::connect_existing(&config.mysql).await {
        Ok(mysql) => mysql,
        Err(error) => {
            eprintln!("dropline: cannot check: connecting to MySQL: {error:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let done = match stripe(config, &mysql) {
        Ok(source) => reconcile(&mysql, source.as_ref(), sale, Utc::now()).await,
        Err(error) => Err(error),
    };
    mysql.close().await;
    let report = match done {
        Ok(report) => report,
        Err(error) if error.downcast_ref::<UnknownSale>().is_some() => {
            eprintln!("dropline: no sale {sale} in MySQL (check the id and mysql.url)");
            return Ok(ExitCode::from(2));
        }
        Err(error) => {
            eprintln!("dropline: cannot check sale {sale}: {error:#}");
            return Ok(ExitCode::from(2));
        }
    };
    for found in &report.breaks {
        println!(
            "{}",
            serde_json::to_string(found).context("writing a break as JSON")?
        );
    }
    eprintln!(
        "sale {sale}: {} orders, {} PaymentIntents read from Stripe, {} in flight (not judged), {} breaks",
        report.orders,
        report.intents,
        report.in_flight,
        report.breaks.len()
    );
    Ok(if report.breaks.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
