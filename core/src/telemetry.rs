//! Logs and metrics set-up, once per process.
//!
//! Logs go to stderr through `tracing`: human-readable on a terminal, one JSON object per line
//! otherwise (or as `log_format` says). Lines are written by a thread of their own
//! (tracing-appender's non-blocking writer): a request never waits on a slow reader of stderr
//! (a full pipe, a stalled log shipper), and when an outage makes every request log, lines
//! past a bounded queue are dropped and counted (`dropline_log_lines_dropped_total`) instead
//! of slowing the service down while it should recover. Metrics use the `metrics` facade with
//! a Prometheus recorder; every HTTP shell renders it at `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Config, LogFormat};

/// Lines the log thread may have waiting; past that, new lines are dropped (and counted).
/// At a few hundred bytes a line, tens of MiB at most.
const LOG_QUEUE_LINES: usize = 65_536;

/// Lines dropped because the log queue was full (read when metrics are rendered).
static DROPPED_LOG_LINES: OnceLock<ErrorCounter> = OnceLock::new();

/// Installs the global `tracing` subscriber. `RUST_LOG` overrides `log_filter`.
/// Calling it again (tests) is harmless. Keep the returned guard until the process ends: its
/// drop writes out the lines still queued.
pub fn init_tracing(config: &Config) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("dropline-log")
        .finish(std::io::stderr());
    let dropped = writer.error_counter();
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.log_format() {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(writer),
            )
            .try_init(),
        LogFormat::Human => registry
            .with(tracing_subscriber::fmt::layer().with_writer(writer))
            .try_init(),
    };
    // Already installed (tests build several apps in one process): keep the first.
    result.ok()?;
    let _ = DROPPED_LOG_LINES.set(dropped);
    Some(guard)
}

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Buckets for request and job latencies, in seconds: dense under 100 ms where targets live.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus handle, installing the recorder on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    METRICS.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        match builder.install_recorder() {
            Ok(handle) => {
                spawn_upkeep(handle.clone());
                handle
            }
            Err(error) => {
                // Another recorder is installed already: render from a detached one so that
                // /metrics still answers (empty) instead of failing.
                tracing::warn!(%error, "metrics recorder already installed");
                PrometheusBuilder::new().build_recorder().handle()
            }
        }
    })
}

/// How often histogram samples are folded into their buckets without a scrape.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Histograms keep every sample until they are folded into buckets, which a scrape does. With
/// no scrape (Prometheus down, or none configured) that is a few bytes per request forever:
/// a busy replica would grow by gigabytes an hour. A thread (not a task: the recorder may be
/// installed before any runtime exists) folds them every few seconds.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "could not start the metrics upkeep thread; histograms are folded only on scrape");
    }
}

/// Renders all metrics in the Prometheus text format.
pub fn render_metrics() -> String {
    let handle = metrics_handle();
    if let Some(dropped) = DROPPED_LOG_LINES.get() {
        metrics::counter!("dropline_log_lines_dropped_total")
            .absolute(dropped.dropped_lines() as u64);
    }
    handle.run_upkeep();
    handle.render()
}
