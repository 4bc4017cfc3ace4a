//! A parked `payment.completed` waits for an operator (issue #17, hole 5): MySQL is down
//! longer than the confirm worker's retries, so the completion of an approved payment is
//! parked; the expiry worker's sweeper then does not re-send it, sweep after sweep; once MySQL
//! is back, `dropline payments resend <order>` does, and the order ends paid.

#[path = "../workers/tests/common/shop.rs"]
mod shop;

use std::time::Duration;

use anyhow::Context;
use dropline_core::ids::OrderId;
use dropline_core::orders::OrderState;
use dropline_testkit::{FaultProxy, TestEnv, eventually, url_target, url_via};
use dropline_workers::Kind;
use shop::Shop;

/// `dropline payments resend <order>` against the test's servers: (exit code, stdout, stderr).
async fn resend(env: &TestEnv, order: &str) -> anyhow::Result<(i32, String, String)> {
    let c = &env.config;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_dropline"));
    for (key, _) in std::env::vars() {
        if key.starts_with("DROPLINE_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(["payments", "resend", order])
        .env("DROPLINE_LOG_FORMAT", "json")
        .env("DROPLINE_MYSQL__URL", &c.mysql.url)
        .env("DROPLINE_REDIS__URL", &c.redis.url)
        .env("DROPLINE_REDIS__KEY_PREFIX", &c.redis.key_prefix)
        .env("DROPLINE_AMQP__URL", &c.amqp.url)
        .env("DROPLINE_AMQP__PREFIX", &c.amqp.prefix)
        // The queues' arguments, which a declare must repeat exactly.
        .env(
            "DROPLINE_AMQP__RETRY_DELAY_MS",
            c.amqp.retry_delay_ms.to_string(),
        )
        .env(
            "DROPLINE_AMQP__DELIVERY_LIMIT",
            c.amqp.delivery_limit.to_string(),
        )
        .env("DROPLINE_PAYMENT__SIM_LATENCY_MS", "5")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .context("`dropline payments resend` did not finish within 60 s")??;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_completion_is_not_resent_by_sweeps_and_an_operator_resends_it()
-> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(150), async {
        // One attempt: the first failure parks the completion.
        let shop = Shop::open(
            1,
            &[
                ("EXPIRY__SWEEP_INTERVAL_SECONDS", "1"),
                ("AMQP__MAX_ATTEMPTS", "1"),
            ],
        )
        .await?;
        // The confirm worker reaches MySQL through a proxy the test cuts.
        let proxy = FaultProxy::start(url_target(&shop.config().mysql.url)?).await?;
        let mut through_proxy = shop.config().clone();
        through_proxy.mysql.url = url_via(&shop.config().mysql.url, proxy.addr())?;
        let confirm = shop.spawn_with(Kind::Confirm, &through_proxy).await?;
        let payment = shop.spawn(Kind::Payment).await?;
        let expiry = shop.spawn(Kind::Expiry).await?;

        let pay_timeout = Duration::from_secs(20);
        let [order] = <[_; 1]>::try_from(shop.paying_orders(1, pay_timeout).await?)
            .map_err(|_| anyhow::anyhow!("one order"))?;
        proxy.cut().await;
        shop.request_payment(&order).await?;
        let parked = eventually(Duration::from_secs(15), || async {
            shop.completions_parked().await.is_ok_and(|n| n >= 1)
        })
        .await;
        anyhow::ensure!(parked, "the completion was not parked while MySQL was down");
        // From here, any completion of the order would wait in the queue.
        confirm.stop().await?;
        let now = chrono::Utc::now().timestamp_millis();
        anyhow::ensure!(
            now < order.deadline_ms,
            "parked only after the payment deadline: the test proves nothing"
        );

        // The deadline passes and the sweeper runs every second for 5 s more.
        let past =
            Duration::from_millis(u64::try_from(order.deadline_ms - now)?) + Duration::from_secs(5);
        tokio::time::sleep(past).await;
        let waiting = shop.completions_waiting().await?;
        assert_eq!(
            waiting, 0,
            "the sweeper re-sent a parked completion ({waiting} in the queue)"
        );
        assert_eq!(
            shop.orders.get(order.id).await?.map(|o| o.state),
            Some(OrderState::Paying)
        );

        // MySQL is back; the operator re-sends it.
        proxy.restore();
        let id = order.id.to_string();
        let (code, stdout, stderr) = resend(&shop.env, &id).await?;
        assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
        assert!(stdout.contains("re-sent"), "{stdout}");
        let counts = shop.take_completions().await?;
        assert_eq!(counts.get(&order.id), Some(&1), "{counts:?}");
        assert_eq!(counts.len(), 1, "{counts:?}");

        // The operator re-sent the one we took: send it again, and let a confirm worker run.
        let (code, stdout, stderr) = resend(&shop.env, &id).await?;
        assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
        let confirm = shop.spawn(Kind::Confirm).await?;
        let paid = eventually(Duration::from_secs(20), || async {
            matches!(shop.orders.get(order.id).await, Ok(Some(o)) if o.state == OrderState::Paid)
        })
        .await;
        anyhow::ensure!(paid, "the re-sent completion did not end the order paid");
        confirm.stop().await?;
        payment.stop().await?;
        expiry.stop().await?;

        // An order that ended has nothing to re-send; bad and unknown ids are refused.
        let (code, stdout, stderr) = resend(&shop.env, &id).await?;
        assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
        assert!(stdout.contains("is paid"), "{stdout}");
        let (code, _, stderr) = resend(&shop.env, "not-an-order").await?;
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("not an order id"), "{stderr}");
        let (code, _, stderr) = resend(&shop.env, &OrderId::new_v7().to_string()).await?;
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("no order"), "{stderr}");
        shop.cleanup().await
    })
    .await
    .context("the test did not finish in time")?
}
