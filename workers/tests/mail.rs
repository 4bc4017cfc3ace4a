//! The mail worker against real RabbitMQ and Redis, sending to a real SMTP server on loopback
//! (`SmtpSink`): UTF-8 delivery, retry while the SMTP server is down, no duplicates, parking
//! of malformed and permanently rejected mail, and shutdown.

use std::collections::HashSet;
use std::time::Duration;

use dropline_core::clients::amqp::{Broker, MAIL};
use dropline_core::clients::deps::Deps;
use dropline_core::messages::{Envelope, MailSend, kinds};
use dropline_testkit::smtp::{ReceivedMail, SmtpSink};
use dropline_testkit::{TestEnv, eventually};
use dropline_workers::Kind;
use fred::prelude::*;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One test's world: its config and prefixes, an SMTP sink, and a running mail worker.
struct World {
    env: TestEnv,
    sink: SmtpSink,
    deps: Deps,
    shutdown: CancellationToken,
    worker: JoinHandle<anyhow::Result<()>>,
}

impl World {
    /// Starts a sink and a mail worker pointed at it; `extra` are more config overrides.
    async fn start(extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        // Worker logs show up for a failing test (`RUST_LOG=dropline_workers=debug` for more).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let sink = SmtpSink::start().await?;
        let port = sink.port();
        let mut overrides = vec![
            ("SMTP__HOST", "127.0.0.1"),
            ("SMTP__PORT", port.as_str()),
            ("SMTP__TLS", "none"),
            ("AMQP__RETRY_DELAY_MS", "200"),
            ("AMQP__MAX_ATTEMPTS", "50"),
        ];
        overrides.extend_from_slice(extra);
        let env = TestEnv::with_overrides(&overrides)?;
        let deps = Deps::connect(&env.config, Kind::Mail.needs()).await?;
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn({
            let (config, deps, shutdown) = (env.config.clone(), deps.clone(), shutdown.clone());
            async move { dropline_workers::run(Kind::Mail, &config, &deps, shutdown).await }
        });
        Ok(Self {
            env,
            sink,
            deps,
            shutdown,
            worker,
        })
    }

    fn broker(&self) -> anyhow::Result<&Broker> {
        self.deps.broker()
    }

    async fn publish(&self, envelope: &Envelope<MailSend>) -> anyhow::Result<()> {
        self.broker()?
            .publish(
                kinds::MAIL_SEND,
                &envelope.id.to_string(),
                &envelope.to_json()?,
            )
            .await
    }

    async fn parked(&self) -> anyhow::Result<u32> {
        let broker = self.broker()?;
        broker.queue_len(&broker.names().parked_queue(MAIL)).await
    }

    /// Stops the worker (it must return within 10 s), closes the clients, removes the
    /// test's queues and keys.
    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.worker)
            .await
            .map_err(|_| anyhow::anyhow!("the mail worker did not stop within 10 s"))???;
        self.deps.close().await;
        self.env.cleanup().await
    }
}

fn mail(to: &str, subject: &str, text: &str) -> Envelope<MailSend> {
    Envelope::new(
        kinds::MAIL_SEND,
        MailSend {
            to: to.into(),
            subject: subject.into(),
            text: text.into(),
        },
    )
}

/// The Message-ID the worker derives from an envelope (`smtp.from` is `...@localhost`).
fn message_id(envelope: &Envelope<MailSend>) -> String {
    format!("<{}@localhost>", envelope.id)
}

fn message_ids(mails: &[ReceivedMail]) -> Vec<String> {
    mails
        .iter()
        .map(|m| m.header("Message-ID").unwrap_or_default())
        .collect()
}

/// Checks that `check` holds during all of `period`. Proving that something does *not*
/// happen (a duplicate) needs a period to watch; it is several retry delays (200 ms) long.
async fn holds_for<F, Fut>(period: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + period;
    while tokio::time::Instant::now() < deadline {
        if !check().await {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_send_arrives_with_utf8_headers_and_body() -> anyhow::Result<()> {
    let world = World::start(&[]).await?;
    let text = "안녕하세요, 김민준 님!\n인증 코드는 482913 입니다.\n10분 안에 입력해 주세요.";
    let subject = "[Dropline] 이메일 인증 코드 ✉";
    let envelope = mail("김민준 <minjun@example.com>", subject, text);
    world.publish(&envelope).await?;

    let got = world.sink.wait_for(1, Duration::from_secs(15)).await?;
    let m = &got[0];
    assert_eq!(m.from, "no-reply@localhost", "envelope sender is smtp.from");
    assert_eq!(m.recipients, ["minjun@example.com"]);
    let from = m.header("From").unwrap_or_default();
    assert!(
        from.contains("Dropline") && from.contains("<no-reply@localhost>"),
        "From: {from}"
    );
    let to = m.header("To").unwrap_or_default();
    assert!(
        to.contains("김민준") && to.contains("<minjun@example.com>"),
        "To: {to}"
    );
    assert_eq!(m.header("Subject").as_deref(), Some(subject));
    assert_eq!(
        m.header("Message-ID").as_deref(),
        Some(message_id(&envelope).as_str())
    );
    let content_type = m.header("Content-Type").unwrap_or_default();
    assert!(
        content_type.to_ascii_lowercase().contains("charset=utf-8"),
        "Content-Type: {content_type}"
    );
    assert_eq!(m.text_body()?, text);
    assert_eq!(m.digit_code(6).as_deref(), Some("482913"));

    // The sent marker follows the server's 250 (the sink records the mail just before it
    // answers), and lasts a week.
    let redis = world.deps.redis()?;
    let key = redis.key(&format!("mail:sent:{}", envelope.id));
    let marked = eventually(Duration::from_secs(5), || async {
        let ttl: Result<i64, _> = redis.pool().ttl(&key).await;
        ttl.is_ok_and(|t| t > 6 * 24 * 3600 && t <= 7 * 24 * 3600)
    })
    .await;
    assert!(marked, "{key} with a 7-day TTL");
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_waits_out_an_smtp_outage_and_arrives_exactly_once() -> anyhow::Result<()> {
    let world = World::start(&[]).await?;
    world.sink.set_down(true);
    let envelopes: Vec<_> = (1..=3)
        .map(|n| {
            mail(
                &format!("buyer{n}@example.com"),
                &format!("주문 {n}"),
                "본문",
            )
        })
        .collect();
    for envelope in &envelopes {
        world.publish(envelope).await?;
    }
    // Every attempt is one refused connection: 3 first attempts, then at least 6 retries.
    let retried = eventually(Duration::from_secs(15), || async {
        world.sink.refused() >= 9
    })
    .await;
    assert!(
        retried,
        "expected the worker to keep trying, saw {} refusals",
        world.sink.refused()
    );
    assert!(world.sink.messages().is_empty());
    assert_eq!(world.parked().await?, 0, "an outage parks nothing");

    world.sink.set_down(false);
    let got = world.sink.wait_for(3, Duration::from_secs(20)).await?;
    assert!(
        holds_for(Duration::from_millis(1500), || async {
            world.sink.messages().len() == 3
        })
        .await,
        "a message arrived twice: {:?}",
        message_ids(&world.sink.messages())
    );
    let ids: HashSet<String> = message_ids(&got).into_iter().collect();
    let expected: HashSet<String> = envelopes.iter().map(message_id).collect();
    assert_eq!(ids, expected, "each of the three, once");
    assert_eq!(world.parked().await?, 0);
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_envelope_published_twice_at_once_is_sent_once() -> anyhow::Result<()> {
    // Default prefetch: both copies are in hand at the same time, racing for the claim.
    let world = World::start(&[]).await?;
    let envelope = mail("twice@example.com", "once", "only once");
    world.publish(&envelope).await?;
    world.publish(&envelope).await?;
    world.sink.wait_for(1, Duration::from_secs(15)).await?;
    assert!(
        holds_for(Duration::from_millis(1500), || async {
            world.sink.messages().len() == 1
        })
        .await,
        "sent {} times",
        world.sink.messages().len()
    );
    assert_eq!(
        world.parked().await?,
        0,
        "the duplicate is acked, not parked"
    );
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_send_keeps_its_short_claim_and_its_duplicate_waits() -> anyhow::Result<()> {
    // The server takes 7 s to accept the message: longer than a sending claim lives (6 s)
    // unless its holder renews it, shorter than one SMTP command may take (10 s).
    let world = World::start(&[]).await?;
    world.sink.set_reply_delay(Duration::from_secs(7));
    let envelope = mail("slow@example.com", "slow", "taking its time");
    let redis = world.deps.redis()?;
    let claim = redis.key(&format!("mail:sending:{}", envelope.id));
    world.publish(&envelope).await?;
    world.publish(&envelope).await?;

    // The claim is short-lived (a killed holder's runs out within 6 s) ...
    let pool = redis.pool();
    let mut ttls = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(7);
    while tokio::time::Instant::now() < deadline {
        let ttl: i64 = pool.pttl(&claim).await?;
        if ttl > 0 {
            ttls.push(ttl);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!ttls.is_empty(), "nobody held the sending claim");
    assert!(
        ttls.iter().all(|&ttl| ttl <= 6_000),
        "the claim lives longer than 6 s: {ttls:?}"
    );
    // ... and renewed while the send runs, so the copy waiting for it never sends too. (Had
    // it run out at 6 s, that copy's send would land 7 s later: watch past that.)
    world.sink.wait_for(1, Duration::from_secs(20)).await?;
    assert!(
        holds_for(Duration::from_secs(8), || async {
            world.sink.messages().len() == 1
        })
        .await,
        "sent {} times",
        world.sink.messages().len()
    );
    assert_eq!(world.parked().await?, 0);
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_envelope_published_again_later_is_not_sent_again() -> anyhow::Result<()> {
    // Prefetch 1: deliveries are handled one after another in queue order, so once the
    // message published after the duplicate has arrived, the duplicate has been handled.
    let world = World::start(&[("AMQP__PREFETCH", "1")]).await?;
    let envelope = mail("again@example.com", "first", "first");
    world.publish(&envelope).await?;
    world.sink.wait_for(1, Duration::from_secs(15)).await?;

    world.publish(&envelope).await?; // redelivered or re-published: same envelope id
    let after = mail("again@example.com", "after", "after");
    world.publish(&after).await?;
    let got = world.sink.wait_for(2, Duration::from_secs(15)).await?;
    assert_eq!(
        message_ids(&got),
        [message_id(&envelope), message_id(&after)],
        "the duplicate was skipped"
    );
    assert_eq!(world.parked().await?, 0);
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_mail_is_parked_and_the_worker_keeps_going() -> anyhow::Result<()> {
    // Prefetch 1: when the last (good) message arrives, everything before it was handled.
    let world = World::start(&[("AMQP__PREFETCH", "1")]).await?;
    let broker = world.broker()?;
    broker
        .publish(kinds::MAIL_SEND, "bad-json", b"{\"id\": not json")
        .await?;
    let mut unknown_field = serde_json::to_value(mail("x@example.com", "s", "t"))?;
    unknown_field["data"]["cc"] = serde_json::json!("y@example.com");
    broker
        .publish(
            kinds::MAIL_SEND,
            "unknown-field",
            &serde_json::to_vec(&unknown_field)?,
        )
        .await?;
    broker
        .publish(
            kinds::MAIL_SEND,
            "bad-address",
            &mail("not an address", "s", "t").to_json()?,
        )
        .await?;
    // An order.confirmed without its payload fields is malformed too: parked.
    let confirmed = Envelope::new(
        kinds::ORDER_CONFIRMED,
        serde_json::json!({"order_id": "o-1"}),
    );
    broker
        .publish(
            kinds::ORDER_CONFIRMED,
            &confirmed.id.to_string(),
            &confirmed.to_json()?,
        )
        .await?;
    let good = mail("good@example.com", "still working", "yes");
    world.publish(&good).await?;

    let got = world.sink.wait_for(1, Duration::from_secs(15)).await?;
    assert_eq!(message_ids(&got), [message_id(&good)]);
    let parked = eventually(Duration::from_secs(5), || async {
        world.parked().await.is_ok_and(|n| n == 4)
    })
    .await;
    assert!(
        parked,
        "bad JSON, unknown field, bad address and the malformed order.confirmed are parked: {:?}",
        world.parked().await
    );
    assert_eq!(world.sink.messages().len(), 1);
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_smtp_rejection_is_parked_not_retried() -> anyhow::Result<()> {
    let world = World::start(&[("AMQP__PREFETCH", "1")]).await?;
    world.sink.reject_recipient("bounce@example.com");
    world
        .publish(&mail("bounce@example.com", "no", "rejected with 550"))
        .await?;
    let good = mail("good@example.com", "yes", "accepted");
    world.publish(&good).await?;
    let got = world.sink.wait_for(1, Duration::from_secs(15)).await?;
    assert_eq!(message_ids(&got), [message_id(&good)]);
    let parked = eventually(Duration::from_secs(5), || async {
        world.parked().await.is_ok_and(|n| n == 1)
    })
    .await;
    assert!(parked, "the 550 is parked: {:?}", world.parked().await);
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_token_makes_run_return() -> anyhow::Result<()> {
    let world = World::start(&[]).await?;
    // Consuming for sure: a mail went through.
    world
        .publish(&mail("first@example.com", "hello", "hello"))
        .await?;
    world.sink.wait_for(1, Duration::from_secs(15)).await?;
    // `stop` cancels and fails unless `run` returns Ok within 10 s.
    world.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_kind_without_its_connections_says_what_is_missing() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    for kind in [
        Kind::Payment,
        Kind::Confirm,
        Kind::Expiry,
        Kind::Mail,
        Kind::All,
    ] {
        let error = dropline_workers::run(
            kind,
            &env.config,
            &Deps::default(),
            CancellationToken::new(),
        )
        .await
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
        assert!(error.contains("not connected"), "{kind}: {error}");
    }
    let needs = Kind::Mail.needs();
    assert!(needs.redis && needs.amqp && !needs.mysql);
    Ok(())
}
