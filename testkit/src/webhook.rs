//! A webhook receiver for alert tests: a real HTTP server on loopback that records every JSON
//! body posted to `/hook`, and can refuse the next calls with 500 to exercise retries.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;

/// The receiver; clones share what it recorded.
#[derive(Clone, Default)]
pub struct WebhookSink {
    bodies: Arc<Mutex<Vec<Value>>>,
    refuse: Arc<Mutex<u32>>,
    calls: Arc<Mutex<u32>>,
    url: String,
}

impl WebhookSink {
    /// Starts the receiver; [`WebhookSink::url`] is where to post.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let sink = Self {
            url: format!("http://{addr}/hook"),
            ..Self::default()
        };
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state(sink.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(sink)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Answers the next `n` calls with 500.
    pub fn refuse_next(&self, n: u32) {
        *lock(&self.refuse) = n;
    }

    /// Calls received so far, refused ones included.
    pub fn calls(&self) -> u32 {
        *lock(&self.calls)
    }

    /// The accepted bodies whose `dropline.kind` and `dropline.subject` match.
    pub fn alerts(&self, kind: &str, subject: &str) -> Vec<Value> {
        lock(&self.bodies)
            .iter()
            .filter(|b| b["dropline"]["kind"] == kind && b["dropline"]["subject"] == subject)
            .cloned()
            .collect()
    }

    /// Waits (up to `limit`) until at least `n` such alerts arrived; returns them.
    pub async fn wait_for(
        &self,
        kind: &str,
        subject: &str,
        n: usize,
        limit: Duration,
    ) -> Vec<Value> {
        crate::eventually(limit, || async { self.alerts(kind, subject).len() >= n }).await;
        self.alerts(kind, subject)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn hook(State(sink): State<WebhookSink>, body: axum::Json<Value>) -> StatusCode {
    *lock(&sink.calls) += 1;
    {
        let mut refuse = lock(&sink.refuse);
        if *refuse > 0 {
            *refuse -= 1;
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    lock(&sink.bodies).push(body.0);
    StatusCode::OK
}
