//! The admitter's alerts against real Redis and a real webhook receiver: a sale that sells out
//! alerts once (also across a change of leader), and a sale whose buyers wait while nobody is
//! admitted (here: `max_active` reached by buyers who never order) alerts as stalled. The
//! notifier is process-wide, so alerts are told apart by their subject (the sale id).

use std::time::Duration;

use chrono::Utc;
use dropline_core::alerts;
use dropline_core::clients::redis::Redis;
use dropline_core::config::AlertsConfig;
use dropline_core::ids::{ProductId, SaleId, UserId};
use dropline_core::sale::{self, SaleConfig};
use dropline_testkit::TestEnv;
use dropline_testkit::webhook::WebhookSink;
use dropline_waitroom::admitter::Admitter;
use dropline_waitroom::queue::{JoinOptions, WaitQueue};
use fred::prelude::*;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

async fn arm(redis: &Redis, stock: i64, max_active: Option<i64>) -> anyhow::Result<SaleId> {
    let id = SaleId::new_v7();
    let config = SaleConfig {
        product_id: ProductId::new_v7(),
        price: 1_000,
        currency: "KRW".into(),
        stock_total: stock,
        opens_at: Utc::now() - chrono::Duration::seconds(10),
        closes_at: None,
        per_user_limit: 1,
        hold_seconds: 600,
        admit_per_second: 50,
        max_active,
        paused: false,
        closed: false,
        line_shards: 1,
    };
    anyhow::ensure!(
        sale::arm(&redis.clone(), id, &config).await?,
        "armed already"
    );
    let queue = WaitQueue::new(redis, id);
    let options = JoinOptions {
        max_queue_length: 0,
        return_grace: Duration::from_secs(1_800),
        code_failures_per_hour: 10,
    };
    for _ in 0..5 {
        queue.join(UserId::new_v7(), &options).await?;
    }
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sold_out_and_stalled_sales_alert_the_webhook() -> anyhow::Result<()> {
    let sink = WebhookSink::start().await?;
    let env = TestEnv::with_overrides(&[
        ("WAITROOM__LEASE_SECONDS", "1"),
        ("WAITROOM__ADMIT_TICK_MS", "100"),
    ])?;
    let config = AlertsConfig {
        webhook_url: Some(sink.url().to_owned()),
        ..env.config.alerts.clone()
    };
    alerts::install(&config, "waitroom");
    let redis = Redis::connect(&env.config.redis).await?;

    // Sold out: all stock taken (sold), buyers still in line.
    let sold_out = arm(&redis, 2, None).await?;
    let _: () = redis
        .pool()
        .set(redis.sale_key(sold_out, "avail"), 0, None, None, false)
        .await?;
    let _: () = redis
        .pool()
        .set(redis.sale_key(sold_out, "sold"), 2, None, None, false)
        .await?;
    // Stalled: one buyer admitted fills max_active; four wait and never get in.
    let stalled = arm(&redis, 100, Some(1)).await?;

    let run = |holder: &str| -> anyhow::Result<(CancellationToken, tokio::task::JoinHandle<()>)> {
        let admitter = Admitter::new(redis.clone(), &env.config.waitroom, holder.to_owned())
            .stall_after(Duration::from_secs(1));
        let shutdown = CancellationToken::new();
        Ok((shutdown.clone(), tokio::spawn(admitter.run(shutdown))))
    };
    let (stop_a, a) = run("a")?;

    let sold = sink
        .wait_for("sold_out", &sold_out.to_string(), 1, WAIT)
        .await;
    assert_eq!(sold.len(), 1, "{sold:?}");
    assert!(
        sold[0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("sold out") && t.contains("5 buyer(s)")),
        "{sold:?}"
    );
    let stall = sink
        .wait_for("admission_stalled", &stalled.to_string(), 1, WAIT)
        .await;
    assert_eq!(stall.len(), 1, "{stall:?}");
    assert!(
        stall[0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("MaxActive") && t.contains("4 buyer(s) in line")),
        "{stall:?}"
    );
    // Nothing about the sold-out sale being stalled (its line waits for stock, not a fault).
    assert!(
        sink.alerts("admission_stalled", &sold_out.to_string())
            .is_empty()
    );

    // A new leader does not announce the same sell-out again (the flag lives in Redis).
    stop_a.cancel();
    a.await?;
    let (stop_b, b) = run("b")?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sink.alerts("sold_out", &sold_out.to_string()).len(), 1);
    stop_b.cancel();
    b.await?;
    redis.quit().await;
    env.cleanup().await
}
