//! `sale audit` while the real workers run a small rush: the payment, confirm and expiry
//! workers (with the recorder) against the machine's Redis, MariaDB and RabbitMQ. Orders are
//! reserved and paid as the api does (`Orders`, `payment.requested`); some pay, some are
//! declined, some cancelled, some left to expire. An audit taken at any moment meanwhile
//! reports no breach (what is in flight is pending), and once everything has ended the
//! settled audit passes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dropline_audit::{AuditOptions, Report, audit};
use dropline_core::clients::deps::{Deps, Needs};
use dropline_core::ids::{OrderId, ProductId, SaleId, UserId};
use dropline_core::messages::{Envelope, PaymentRequested, kinds};
use dropline_core::orders::{Orders, ReserveOutcome, ReserveRequest, Target};
use dropline_core::sale::{self, SaleConfig};
use dropline_testkit::{TestEnv, eventually};
use dropline_workers::provider::{PaymentProvider, Simulated};
use dropline_workers::{confirm, expiry, payment};
use fred::prelude::*;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const STOCK: i64 = 30;
const BUYERS: usize = 40;

struct Worker {
    deps: Deps,
    task: JoinHandle<anyhow::Result<()>>,
}

async fn sale_in_mysql(
    pool: &sqlx::MySqlPool,
    redis: &dropline_core::clients::redis::Redis,
) -> anyhow::Result<SaleId> {
    let (product, sale) = (ProductId::new_v7(), SaleId::new_v7());
    sqlx::query(
        "INSERT INTO products (id, name, price, currency, created_at) \
         VALUES (?, 'Sneakers', 12500, 'KRW', UTC_TIMESTAMP(3))",
    )
    .bind(product)
    .execute(pool)
    .await?;
    // Holds of 2 s: the orders left held expire during the test (expiry worker).
    sqlx::query(
        "INSERT INTO sales (id, product_id, stock_total, opens_at, per_user_limit, hold_seconds, \
           admit_per_second, created_at, updated_at) \
         VALUES (?, ?, ?, UTC_TIMESTAMP(3) - INTERVAL 1 MINUTE, 2, 2, 100, UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))",
    )
    .bind(sale)
    .bind(product)
    .bind(STOCK as i32)
    .execute(pool)
    .await?;
    let config = SaleConfig::load(pool, sale)
        .await?
        .context("the sale just inserted")?;
    anyhow::ensure!(sale::arm(redis, sale, &config).await?, "armed twice");
    Ok(sale)
}

fn no_breach(report: &Report) -> anyhow::Result<()> {
    anyhow::ensure!(report.ok, "{report:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audits_during_a_rush_find_nothing_and_the_settled_sale_passes() -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let env = TestEnv::with_overrides(&[
        ("EXPIRY__SWEEP_INTERVAL_SECONDS", "1"),
        ("AMQP__RETRY_DELAY_MS", "200"),
        ("PAYMENT__SIM_LATENCY_MS", "20"),
        ("MYSQL__MAX_CONNECTIONS", "8"),
        ("REDIS__POOL_SIZE", "4"),
    ])?;
    let deps = Deps::connect(&env.config, Needs::ALL).await?;
    let (mysql, redis) = (deps.mysql()?.clone(), deps.redis()?.clone());
    let sale = sale_in_mysql(&mysql, &redis).await?;
    let orders = Orders::new(&redis, sale);
    let provider: Arc<dyn PaymentProvider> = Simulated::new(&redis, &env.config.payment);

    let shutdown = CancellationToken::new();
    let mut workers = Vec::new();
    for kind in ["payment", "confirm", "expiry"] {
        let deps = Deps::connect(&env.config, Needs::ALL).await?;
        let (config, provider, stop) = (env.config.clone(), provider.clone(), shutdown.clone());
        let worker_deps = deps.clone();
        let task = tokio::spawn(async move {
            match kind {
                "payment" => payment::run(&config, &worker_deps, provider, stop).await,
                "confirm" => confirm::run(&config, &worker_deps, provider, stop).await,
                _ => expiry::run(&config, &worker_deps, provider, stop).await,
            }
        });
        workers.push(Worker { deps, task });
    }

    let audit_now = {
        let (mysql, redis) = (mysql.clone(), redis.clone());
        move |settled: bool| {
            let (mysql, redis) = (mysql.clone(), redis.clone());
            async move {
                audit(
                    &mysql,
                    &redis,
                    sale,
                    AuditOptions {
                        settled,
                        ..AuditOptions::default()
                    },
                )
                .await
            }
        }
    };
    // Audits run all along, concurrently with the buyers below.
    let auditing = CancellationToken::new();
    let auditor = tokio::spawn({
        let auditing = auditing.clone();
        let audit_now = audit_now.clone();
        async move {
            // (audits, audits that found live or pending orders, pending orders seen)
            let mut seen = (0u32, 0u32, 0u64);
            while !auditing.is_cancelled() {
                let report = audit_now(false).await?;
                no_breach(&report)?;
                let live = report.redis.orders.held.orders + report.redis.orders.paying.orders;
                seen.0 += 1;
                if live > 0 || report.pending.orders > 0 {
                    seen.1 += 1;
                }
                seen.2 += report.pending.orders;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<_, anyhow::Error>(seen)
        }
    });

    let deadline = chrono::Utc::now().timestamp_millis() + 600_000;
    let mut made = 0;
    for i in 0..BUYERS {
        let user = UserId::new_v7();
        let _: i64 = redis
            .pool()
            .zadd(
                &orders.keys().adm,
                None,
                None,
                false,
                false,
                (deadline as f64, &user.as_bytes()[..]),
            )
            .await?;
        let quantity = if i % 3 == 0 { 2 } else { 1 };
        let id = OrderId::new_v7();
        let order = match orders
            .reserve(&ReserveRequest {
                order: id,
                user,
                quantity,
                idempotency_key: format!("k-{id}"),
            })
            .await?
        {
            ReserveOutcome::Created(order) => order,
            ReserveOutcome::SoldOut { .. } => continue,
            other => anyhow::bail!("reserve: {other:?}"),
        };
        made += 1;
        match i % 4 {
            // Left held: the expiry worker ends it.
            0 => {}
            1 => {
                orders.release(order.id, Target::Cancelled).await?;
            }
            _ => {
                let started = orders
                    .begin_payment(order.id, Duration::from_secs(60))
                    .await?;
                anyhow::ensure!(started.applied(), "begin_payment: {started:?}");
                let card = if i % 8 == 2 { "tok_fail" } else { "tok_visa" };
                let envelope = Envelope::new(
                    kinds::PAYMENT_REQUESTED,
                    PaymentRequested {
                        order: order.reference(),
                        card_token: card.into(),
                    },
                );
                deps.broker()?
                    .publish(
                        &envelope.kind,
                        &envelope.id.to_string(),
                        &envelope.to_json()?,
                    )
                    .await?;
            }
        }
        // Spread over a few seconds, so that audits (each a scan of Redis's whole keyspace)
        // run while orders are live.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(made > 10, "only {made} orders were made");

    // Quiescent once every hold has expired and MySQL caught up.
    let settled = eventually(Duration::from_secs(30), || async {
        audit_now(true).await.is_ok_and(|r| r.ok)
    })
    .await;
    auditing.cancel();
    let (reports, during, pending) = auditor.await??;
    let report = audit_now(true).await?;
    assert!(settled, "never settled:\n{report:#?}");
    tracing::info!(reports, during, pending, "audits during the rush");
    assert!(
        during >= 1,
        "no audit ran while orders were live ({reports} in all)"
    );
    let counts = report.mysql.orders;
    assert_eq!(counts.held.orders + counts.paying.orders, 0);
    assert!(
        counts.paid.orders > 0 && counts.expired.orders > 0,
        "{report:#?}"
    );
    assert_eq!(report.redis.avail, Some(STOCK - counts.paid.units));
    assert_eq!(counts.total_orders(), made);

    shutdown.cancel();
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(10), worker.task)
            .await
            .map_err(|_| anyhow::anyhow!("a worker did not stop within 10 s"))???;
        worker.deps.close().await;
    }
    deps.close().await;
    env.cleanup().await
}
