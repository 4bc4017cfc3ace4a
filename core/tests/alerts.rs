//! The alert notifier against a real HTTP webhook (a local server standing in for Slack).
//!
//! The notifier is process-wide (like the metrics recorder), so everything about it is checked
//! in one test: throttling per kind and subject, the Slack-compatible body, retry after a failed
//! call, and the error-rate watch fed by the HTTP shell's counts.

use std::time::Duration;

use dropline_core::alerts::{self, AlertKind};
use dropline_core::config::AlertsConfig;
use dropline_testkit::webhook::WebhookSink;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_the_webhook_once_per_spell_and_survive_a_failed_call() -> anyhow::Result<()> {
    let sink = WebhookSink::start().await?;

    let config = AlertsConfig {
        webhook_url: Some(sink.url().to_owned()),
        repeat_after_seconds: 3,
        stall_after_seconds: 30,
        error_rate: 0.5,
        error_rate_min_requests: 4,
        check_interval_seconds: 1,
        timeout_seconds: 2,
    };
    alerts::install(&config, "test-service");

    // The same kind and subject twice: one alert. Another subject: its own alert.
    alerts::raise(AlertKind::SoldOut, "sale-a", "sale-a is sold out");
    alerts::raise(AlertKind::SoldOut, "sale-a", "sale-a is sold out again");
    alerts::raise(AlertKind::SoldOut, "sale-b", "sale-b is sold out");
    let a = sink.wait_for("sold_out", "sale-a", 1, WAIT).await;
    let b = sink.wait_for("sold_out", "sale-b", 1, WAIT).await;
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(b.len(), 1, "{b:?}");
    let text = a[0]["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("test-service") && text.contains("sale-a is sold out"),
        "Slack shows `text`: {text}"
    );
    assert_eq!(a[0]["dropline"]["service"], "test-service");
    assert!(
        a[0]["dropline"]["at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sink.alerts("sold_out", "sale-a").len(),
        1,
        "no repeat inside the window"
    );

    // A webhook that fails once: the alert is retried and arrives.
    sink.refuse_next(1);
    let calls_before = sink.calls();
    alerts::raise(AlertKind::Parked, "queue-x", "a message was parked");
    let parked = sink.wait_for("parked", "queue-x", 1, WAIT).await;
    assert_eq!(parked.len(), 1, "delivered after the retry");
    let calls = sink.calls() - calls_before;
    assert_eq!(calls, 2, "one refused call, one accepted");

    // After the repeat window, a condition that lasts alerts again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    alerts::raise(AlertKind::SoldOut, "sale-a", "sale-a is still sold out");
    assert_eq!(sink.wait_for("sold_out", "sale-a", 2, WAIT).await.len(), 2);

    // Error rate: 3 of 5 answers 5xx (60% > 50%) within a window → one alert for the service;
    // a quiet service (below the minimum of requests) raises nothing.
    for error in [true, true, true, false, false] {
        alerts::record_http("svc-failing", error);
    }
    for _ in 0..3 {
        alerts::record_http("svc-quiet", true);
    }
    let failing = sink.wait_for("error_rate", "svc-failing", 1, WAIT).await;
    assert_eq!(failing.len(), 1, "{failing:?}");
    assert!(
        failing[0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("3 of 5")),
        "{failing:?}"
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(sink.alerts("error_rate", "svc-quiet").is_empty());
    Ok(())
}
