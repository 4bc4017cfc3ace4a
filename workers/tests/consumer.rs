//! The consumer loop against real RabbitMQ: retry after a delay, parking after the last
//! attempt, and a shutdown that finishes the delivery in hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dropline_core::clients::amqp::{Broker, MAIL};
use dropline_testkit::{TestEnv, eventually};
use dropline_workers::consumer::{Outcome, consume};
use lapin::options::BasicGetOptions;
use tokio_util::sync::CancellationToken;

async fn fast_retry_env(max_attempts: &str) -> anyhow::Result<(TestEnv, Broker)> {
    let env = TestEnv::with_overrides(&[
        ("AMQP__RETRY_DELAY_MS", "200"),
        ("AMQP__MAX_ATTEMPTS", max_attempts),
    ])?;
    let broker = Broker::connect(&env.config.amqp).await?;
    Ok((env, broker))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_message_is_retried_after_the_delay_then_succeeds() -> anyhow::Result<()> {
    let (env, broker) = fast_retry_env("5").await?;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(consume(
        broker.clone(),
        MAIL,
        {
            let seen = Arc::clone(&seen);
            move |m| {
                let seen = Arc::clone(&seen);
                async move {
                    seen.lock()
                        .map(|mut s| s.push((m.attempt, m.routing_key.clone())))
                        .ok();
                    if m.attempt < 3 {
                        Outcome::Retry("not yet".into())
                    } else {
                        Outcome::Ack
                    }
                }
            }
        },
        shutdown.clone(),
    ));

    broker
        .publish("order.confirmed", "r-1", b"{\"n\":1}")
        .await?;
    let done = eventually(Duration::from_secs(10), || async {
        seen.lock().map(|s| s.len() >= 3).unwrap_or(false)
    })
    .await;
    assert!(
        done,
        "three attempts expected, saw {:?}",
        seen.lock().map(|s| s.len())
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let keys: Vec<String> = seen
        .lock()
        .map(|s| s.iter().map(|(_, k)| k.clone()).collect())
        .unwrap_or_default();
    assert_eq!(
        keys, ["order.confirmed"; 3],
        "the original routing key survives retries"
    );
    let attempts: Vec<u32> = seen
        .lock()
        .map(|s| s.iter().map(|(a, _)| *a).collect())
        .unwrap_or_default();
    assert_eq!(
        attempts,
        [1, 2, 3],
        "acked on the third attempt and never again"
    );
    let names = broker.names().clone();
    assert_eq!(broker.queue_len(&names.parked_queue(MAIL)).await?, 0);
    shutdown.cancel();
    task.await??;
    broker.close().await;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_is_parked_after_max_attempts_and_park_is_immediate() -> anyhow::Result<()> {
    let (env, broker) = fast_retry_env("3").await?;
    let calls = Arc::new(AtomicU32::new(0));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(consume(
        broker.clone(),
        MAIL,
        {
            let calls = Arc::clone(&calls);
            move |m| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if m.data == b"poison" {
                        Outcome::Park("malformed".into())
                    } else {
                        Outcome::Retry("always fails".into())
                    }
                }
            }
        },
        shutdown.clone(),
    ));

    broker.publish("mail.send", "p-1", b"flaky").await?;
    broker.publish("order.confirmed", "p-2", b"poison").await?;
    let parked_queue = broker.names().parked_queue(MAIL);
    let parked = eventually(Duration::from_secs(10), || async {
        broker.queue_len(&parked_queue).await.is_ok_and(|n| n == 2)
    })
    .await;
    assert!(parked, "both messages end in {parked_queue}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3 + 1,
        "3 attempts for the flaky one, 1 for the poison"
    );

    // Parked copies keep their body, and say why and how often.
    let channel = broker.channel().await?;
    let mut bodies = Vec::new();
    while let Some(got) = channel
        .basic_get(
            parked_queue.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await?
    {
        let headers = got
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        assert!(headers.inner().contains_key("x-dropline-park-reason"));
        bodies.push(String::from_utf8_lossy(&got.delivery.data).into_owned());
    }
    bodies.sort();
    assert_eq!(bodies, ["flaky", "poison"]);
    shutdown.cancel();
    task.await??;
    broker.close().await;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_delivery_in_hand_and_takes_no_more() -> anyhow::Result<()> {
    let (env, broker) = fast_retry_env("5").await?;
    let started = Arc::new(AtomicU32::new(0));
    let finished = Arc::new(AtomicU32::new(0));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(consume(
        broker.clone(),
        MAIL,
        {
            let (started, finished) = (Arc::clone(&started), Arc::clone(&finished));
            move |_m| {
                let (started, finished) = (Arc::clone(&started), Arc::clone(&finished));
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                    Outcome::Ack
                }
            }
        },
        shutdown.clone(),
    ));

    broker.publish("mail.send", "s-1", b"one").await?;
    assert!(
        eventually(Duration::from_secs(5), || async {
            started.load(Ordering::SeqCst) == 1
        })
        .await
    );
    shutdown.cancel();
    task.await??; // returns only after the handler finished
    assert_eq!(
        finished.load(Ordering::SeqCst),
        1,
        "the delivery in hand was finished"
    );

    // After the stop, a new message stays in the queue for the next worker.
    broker.publish("mail.send", "s-2", b"two").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queue = broker.names().queue(MAIL);
    assert_eq!(
        broker.queue_len(&queue).await?,
        1,
        "only the new message waits; the first was acked"
    );
    assert_eq!(started.load(Ordering::SeqCst), 1);
    broker.close().await;
    env.cleanup().await
}
