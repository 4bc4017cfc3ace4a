//! Alerts to a chat webhook: sold out, admission stalled, parked messages, error-rate spikes.
//!
//! A process installs one notifier at start ([`install`], from `[alerts]`); code anywhere then
//! calls [`raise`], like it records metrics, and nothing happens when no webhook is set. An alert
//! is a Slack-compatible JSON body (`{"text": ...}`, which Slack, Mattermost, Rocket.Chat and
//! Discord's `/slack` endpoints take) with a `dropline` object beside it for machines (kind,
//! subject, service, time). Each (kind, subject) is sent at most once per
//! `alerts.repeat_after_seconds`, so a stuck condition reminds without flooding. Sending happens
//! on a task of its own through a bounded queue: [`raise`] never blocks or fails the caller; a
//! full queue or an unreachable webhook drops the alert, counted in
//! `dropline_alerts_dropped_total{kind}` (sent ones in `dropline_alerts_sent_total{kind}`).
//!
//! The error-rate watch ([`record_http`], fed by the HTTP shell) alerts when a service answered
//! more than `alerts.error_rate` of its requests with 5xx over one `alerts.check_interval_seconds`
//! window of at least `alerts.error_rate_min_requests` requests.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::AlertsConfig;

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    SoldOut,
    AdmissionStalled,
    Parked,
    ErrorRate,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SoldOut => "sold_out",
            Self::AdmissionStalled => "admission_stalled",
            Self::Parked => "parked",
            Self::ErrorRate => "error_rate",
        }
    }

    fn emoji(self) -> &'static str {
        match self {
            Self::SoldOut => ":tada:",
            Self::AdmissionStalled => ":warning:",
            Self::Parked => ":warning:",
            Self::ErrorRate => ":rotating_light:",
        }
    }
}

/// The body posted to the webhook.
#[derive(Debug, Clone, Serialize)]
pub struct Payload {
    /// What a chat shows.
    pub text: String,
    pub dropline: Details,
}

#[derive(Debug, Clone, Serialize)]
pub struct Details {
    pub kind: AlertKind,
    /// The sale, queue or service the alert is about.
    pub subject: String,
    pub service: String,
    pub at: String,
}

struct Notifier {
    tx: mpsc::Sender<Payload>,
    repeat_after: Duration,
    service: String,
    last: Mutex<HashMap<(AlertKind, String), Instant>>,
    error_rate: f64,
    error_rate_min_requests: u64,
}

static NOTIFIER: OnceLock<Notifier> = OnceLock::new();

/// Requests and 5xx answers per service since the last error-rate check.
static HTTP_COUNTS: OnceLock<Mutex<HashMap<&'static str, (u64, u64)>>> = OnceLock::new();

const QUEUE: usize = 256;
const ATTEMPTS: u32 = 3;

/// Starts the notifier for this process (`service` names it in alerts). Does nothing without
/// `alerts.webhook_url`, or when one is already installed. Needs a Tokio runtime.
pub fn install(config: &AlertsConfig, service: &str) {
    let Some(url) = config.webhook_url.as_deref().filter(|u| !u.is_empty()) else {
        return;
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    let notifier = Notifier {
        tx,
        repeat_after: Duration::from_secs(config.repeat_after_seconds),
        service: service.to_owned(),
        last: Mutex::new(HashMap::new()),
        error_rate: config.error_rate,
        error_rate_min_requests: config.error_rate_min_requests,
    };
    if NOTIFIER.set(notifier).is_err() {
        return;
    }
    let timeout = Duration::from_secs(config.timeout_seconds.max(1));
    tokio::spawn(send_loop(url.to_owned(), timeout, rx));
    let interval = Duration::from_secs(config.check_interval_seconds.max(1));
    tokio::spawn(watch_error_rate(interval));
    tracing::info!(webhook = %crate::config::redact_url(url), "alerts on");
}

/// Raises an alert about `subject` (a sale, a queue, a service); see the module doc.
pub fn raise(kind: AlertKind, subject: &str, message: impl Into<String>) {
    let Some(notifier) = NOTIFIER.get() else {
        return;
    };
    let now = Instant::now();
    {
        let mut last = match notifier.last.lock() {
            Ok(last) => last,
            Err(poisoned) => poisoned.into_inner(),
        };
        let key = (kind, subject.to_owned());
        if let Some(at) = last.get(&key)
            && now.duration_since(*at) < notifier.repeat_after
        {
            return;
        }
        last.insert(key, now);
    }
    let message = message.into();
    let payload = Payload {
        text: format!("{} *{}* {message}", kind.emoji(), notifier.service),
        dropline: Details {
            kind,
            subject: subject.to_owned(),
            service: notifier.service.clone(),
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        },
    };
    tracing::warn!(alert = kind.as_str(), subject, %message, "alert");
    match notifier.tx.try_send(payload) {
        Ok(()) => {}
        Err(_) => {
            metrics::counter!("dropline_alerts_dropped_total", "kind" => kind.as_str())
                .increment(1);
        }
    }
}

/// Counts one HTTP answer of `service` for the error-rate watch (a no-op without alerts).
pub fn record_http(service: &'static str, server_error: bool) {
    if NOTIFIER.get().is_none() {
        return;
    }
    let counts = HTTP_COUNTS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut counts = match counts.lock() {
        Ok(c) => c,
        Err(poisoned) => poisoned.into_inner(),
    };
    let entry = counts.entry(service).or_default();
    entry.0 += 1;
    if server_error {
        entry.1 += 1;
    }
}

async fn watch_error_rate(interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(notifier) = NOTIFIER.get() else {
            return;
        };
        let window: Vec<(&'static str, (u64, u64))> = {
            let counts = HTTP_COUNTS.get_or_init(|| Mutex::new(HashMap::new()));
            let mut counts = match counts.lock() {
                Ok(c) => c,
                Err(poisoned) => poisoned.into_inner(),
            };
            counts.drain().collect()
        };
        for (service, (requests, errors)) in window {
            if requests < notifier.error_rate_min_requests.max(1) {
                continue;
            }
            let rate = errors as f64 / requests as f64;
            if rate > notifier.error_rate {
                raise(
                    AlertKind::ErrorRate,
                    service,
                    format!(
                        "{service}: {errors} of {requests} requests failed with 5xx in the last {}s ({:.1}%)",
                        interval.as_secs(),
                        rate * 100.0
                    ),
                );
            }
        }
    }
}

async fn send_loop(url: String, timeout: Duration, mut rx: mpsc::Receiver<Payload>) {
    let client = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "alerts: cannot build the HTTP client; alerts are off");
            return;
        }
    };
    while let Some(payload) = rx.recv().await {
        let kind = payload.dropline.kind.as_str();
        let mut delay = Duration::from_millis(500);
        let mut sent = false;
        for attempt in 1..=ATTEMPTS {
            match client.post(&url).json(&payload).send().await {
                Ok(response) if response.status().is_success() => {
                    sent = true;
                    break;
                }
                Ok(response) => {
                    tracing::warn!(kind, attempt, status = %response.status(), "alerts: the webhook refused an alert");
                }
                Err(error) => {
                    tracing::warn!(kind, attempt, error = %error, "alerts: the webhook is unreachable");
                }
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        let counter = if sent {
            "dropline_alerts_sent_total"
        } else {
            "dropline_alerts_dropped_total"
        };
        metrics::counter!(counter, "kind" => kind).increment(1);
    }
}
