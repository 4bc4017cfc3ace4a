//! The expiry worker's re-reports of decided payments (issue #17, hole 5), against the real
//! Redis, MariaDB and RabbitMQ: a confirm worker that lags gets a few copies of each
//! completion, not one per sweep, and a hold timer's event settles its own order only.

#[path = "common/shop.rs"]
mod shop;

use std::time::Duration;

use anyhow::Context;
use dropline_core::orders::OrderState;
use dropline_testkit::eventually;
use dropline_workers::Kind;
use dropline_workers::provider::{ChargeRequest, Decision, PaymentProvider, Simulated};
use fred::interfaces::KeysInterface;
use shop::Shop;
use tokio::time::Instant;

/// How long the lagging-confirm test watches the confirmations queue.
const WATCH: Duration = Duration::from_secs(60);

/// Issue #17's test: 100 orders approved while the confirm worker is stopped, the sweeper
/// running every second past their payment deadlines: in 60 s, at most 2 `payment.completed`
/// per order reach the confirmations queue (the payment worker's, and one re-report at the
/// deadline; the next waits `expiry.rereport_backoff_seconds`, 60 by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_confirm_worker_gets_at_most_two_completions_per_order_in_a_minute()
-> anyhow::Result<()> {
    tokio::time::timeout(WATCH + Duration::from_secs(90), async {
        let shop = Shop::open(100, &[("EXPIRY__SWEEP_INTERVAL_SECONDS", "1")]).await?;
        let payment = shop.spawn(Kind::Payment).await?;
        let expiry = shop.spawn(Kind::Expiry).await?;
        let orders = shop.paying_orders(100, Duration::from_secs(10)).await?;
        let started = Instant::now();
        for order in &orders {
            shop.request_payment(order).await?;
        }
        tokio::time::sleep_until(started + WATCH).await;
        let counts = shop.take_completions().await?;
        payment.stop().await?;
        expiry.stop().await?;

        let mut over = Vec::new();
        for order in &orders {
            match counts.get(&order.id).copied().unwrap_or(0) {
                0 => anyhow::bail!("no completion of order {} reached the queue", order.id),
                1 | 2 => {}
                n => over.push((order.id, n)),
            }
        }
        anyhow::ensure!(
            counts.len() == orders.len(),
            "completions of orders not made here: {counts:?}"
        );
        let total: usize = counts.values().sum();
        anyhow::ensure!(
            over.is_empty(),
            "{} of 100 orders got more than 2 completions in {WATCH:?} ({total} in all), e.g. {:?}",
            over.len(),
            &over[..over.len().min(5)]
        );
        shop.cleanup().await
    })
    .await
    .context("the test did not finish in time")?
}

/// Two PAYING orders past their deadline, both decided at the provider; only A's hold timer
/// fires (B's timer is gone, as after a lost event). A's event reports A and leaves B to the
/// sweeper (here once an hour): before, each such event swept the whole sale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_timer_event_settles_its_own_order_only() -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(60), async {
        let shop = Shop::open(2, &[("EXPIRY__SWEEP_INTERVAL_SECONDS", "3600")]).await?;
        // Started first: its sweep at start finds nothing due, the next is an hour away.
        let expiry = shop.spawn(Kind::Expiry).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let [a, b] = <[_; 2]>::try_from(shop.paying_orders(2, Duration::from_secs(3)).await?)
            .map_err(|_| anyhow::anyhow!("two orders"))?;
        let provider = Simulated::new(shop.deps.redis()?, &shop.config().payment);
        for order in [&a, &b] {
            let decision = provider
                .charge(ChargeRequest {
                    order: order.id,
                    sale: order.sale,
                    amount: order.amount,
                    currency: order.currency.clone(),
                    card_token: "tok_visa".into(),
                })
                .await?;
            anyhow::ensure!(
                matches!(decision, Decision::Approved { .. }),
                "{decision:?}"
            );
        }
        let redis = shop.deps.redis()?;
        let _: i64 = redis.pool().del(shop.orders.hold_key(b.id)).await?;

        // Touching an expired key makes Redis delete it (and announce it) at once.
        let a_timer = shop.orders.hold_key(a.id);
        let reported = eventually(Duration::from_secs(20), || async {
            let _: Result<i64, _> = redis.pool().exists(&a_timer).await;
            shop.completions_waiting().await.is_ok_and(|n| n >= 1)
        })
        .await;
        anyhow::ensure!(reported, "A's timer event reported nothing");
        // A quiet moment for anything else the event might have set off.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let counts = shop.take_completions().await?;
        expiry.stop().await?;

        assert_eq!(counts.get(&a.id), Some(&1), "A reported once: {counts:?}");
        assert_eq!(
            counts.get(&b.id),
            None,
            "B was settled by A's event: {counts:?}"
        );
        let b_now = shop.orders.get(b.id).await?.context("order B")?;
        assert_eq!(b_now.state, OrderState::Paying);
        let (b_payments,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM payments WHERE order_id = ?")
                .bind(b.id)
                .fetch_one(shop.deps.mysql()?)
                .await?;
        assert_eq!(b_payments, 0, "B's decision was recorded by A's event");
        shop.cleanup().await
    })
    .await
    .context("the test did not finish in time")?
}
