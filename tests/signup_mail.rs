//! Sign-up's codes end to end: the api publishes `mail.send`, the mail worker delivers it over
//! SMTP (a local sink the test can take down), the buyer verifies with the code that arrived.
//! The api's own tests read the published message instead; this one runs both components.

#[path = "../api/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{TestApi, email, sign_up};
use dropline_testkit::smtp::SmtpSink;
use dropline_workers::Kind;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// An api and a mail worker delivering to a fresh [`SmtpSink`].
struct MailRig {
    api: TestApi,
    sink: SmtpSink,
    stop_worker: CancellationToken,
    worker: JoinHandle<anyhow::Result<()>>,
}

impl MailRig {
    async fn start(extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        let sink = SmtpSink::start().await?;
        let port = sink.port();
        let mut overrides = vec![
            ("SMTP__HOST", "127.0.0.1"),
            ("SMTP__PORT", port.as_str()),
            ("SMTP__TLS", "none"),
            ("AMQP__RETRY_DELAY_MS", "200"),
            ("AMQP__MAX_ATTEMPTS", "100"),
        ];
        overrides.extend_from_slice(extra);
        let api = TestApi::start(&overrides).await?;
        let stop_worker = CancellationToken::new();
        let worker = tokio::spawn({
            let (config, deps, stop) = (
                api.env.config.clone(),
                api.deps.clone(),
                stop_worker.clone(),
            );
            async move { dropline_workers::run(Kind::Mail, &config, &deps, stop).await }
        });
        Ok(Self {
            api,
            sink,
            stop_worker,
            worker,
        })
    }

    /// Waits for the `n`-th mail delivered to `to` (1-based) and returns its six-digit code.
    async fn code_for(&self, to: &str, n: usize) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mails: Vec<_> = self
                .sink
                .messages()
                .into_iter()
                .filter(|m| m.recipients.iter().any(|r| r == to))
                .collect();
            if let Some(mail) = mails.get(n - 1) {
                return mail
                    .digit_code(6)
                    .ok_or_else(|| anyhow::anyhow!("no six-digit code in the mail to {to}"));
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "mail #{n} to {to} did not arrive within 20 s ({} arrived)",
                mails.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Mails delivered to `to` so far.
    fn mails_to(&self, to: &str) -> usize {
        self.sink
            .messages()
            .iter()
            .filter(|m| m.recipients.iter().any(|r| r == to))
            .count()
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop_worker.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.worker).await???;
        self.api.stop().await
    }
}

#[tokio::test]
async fn codes_sent_while_smtp_is_down_arrive_later_exactly_once() -> anyhow::Result<()> {
    let rig = MailRig::start(&[("LIMITS__SIGNUP_PER_IP_PER_MINUTE", "100")]).await?;
    let (api, sink) = (&rig.api, &rig.sink);
    sink.set_down(true);
    let emails: Vec<String> = (0..5).map(|_| email()).collect();
    for email in &emails {
        // Sign-up does not wait on SMTP.
        let started = std::time::Instant::now();
        sign_up(api, email).await?;
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // Wait until the worker has really been refused, then bring SMTP back.
    let refused =
        dropline_testkit::eventually(Duration::from_secs(20), || async { sink.refused() > 0 })
            .await;
    assert!(refused, "the mail worker never tried while SMTP was down");
    assert_eq!(sink.messages().len(), 0);
    sink.set_down(false);
    for email in &emails {
        let code = rig.code_for(email, 1).await?;
        api.post(
            "/api/users/verify",
            None,
            json!({"email": email, "code": code}),
        )
        .await?
        .expect(200, None);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for email in &emails {
        assert_eq!(rig.mails_to(email), 1, "{email} got a duplicate");
    }
    rig.stop().await
}
