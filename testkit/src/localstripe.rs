//! A private localstripe (PyPI `localstripe`, a stateful fake of Stripe's API) for the tests
//! of the Stripe provider: one per test process, on a free loopback port, from scratch.
//!
//! The Python comes from `LOCALSTRIPE_PYTHON`, else `<repo>/.venv-localstripe/bin/python`
//! (`scripts/test` installs it there). localstripe is started through a small wrapper that
//! (1) keeps its store in memory only (it would otherwise pickle it to the one shared
//! `/tmp/localstripe.pickle` on every write) and (2) exits when the test process is gone, so no
//! server outlives its test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;
use tokio::sync::OnceCell;

/// The wrapper: watches the parent, stubs the pickle, then runs localstripe's own `start()`.
const WRAPPER: &str = r#"
import os, sys, threading, time
parent = os.getppid()
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
import localstripe.resources as resources
resources.Store.dump_to_disk = lambda self: None
from localstripe.server import start
sys.argv = ['localstripe'] + sys.argv[1:]
start()
"#;

/// The secret key the tests use (localstripe takes any `sk_…`).
pub const SECRET_KEY: &str = "sk_test_dropline";

/// A running localstripe.
#[derive(Debug)]
pub struct LocalStripe {
    base: String,
    child: Mutex<Option<Child>>,
    http: reqwest::Client,
}

static SHARED: OnceCell<LocalStripe> = OnceCell::const_new();

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("LOCALSTRIPE_PYTHON") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(".venv-localstripe/bin/python")
}

impl LocalStripe {
    /// This process's localstripe, started on first use.
    pub async fn shared() -> anyhow::Result<&'static LocalStripe> {
        SHARED.get_or_try_init(Self::start).await
    }

    async fn start() -> anyhow::Result<Self> {
        let python = python();
        anyhow::ensure!(
            python.exists(),
            "no localstripe: {} is missing (run scripts/test once, or `python3 -m venv \
             .venv-localstripe && .venv-localstripe/bin/pip install localstripe==1.15.10`)",
            python.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(&python)
            .args(["-c", WRAPPER, "--port", &port.to_string(), "--from-scratch"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting localstripe with {}", python.display()))?;
        let this = Self {
            base: format!("http://127.0.0.1:{port}"),
            child: Mutex::new(Some(child)),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        };
        let started = Instant::now();
        loop {
            let ready = this
                .http
                .get(format!("{}/v1/payment_intents", this.base))
                .bearer_auth(SECRET_KEY)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(this);
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "localstripe did not answer on port {port} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://127.0.0.1:<port>`: `payment.stripe.api_base`.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        form: &[(&str, String)],
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(SECRET_KEY);
        request = if method == reqwest::Method::GET {
            request.query(form)
        } else {
            request.form(form)
        };
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(
            status.is_success(),
            "localstripe {method} {path}: {status} {text}"
        );
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// `POST` to localstripe (form-encoded); the answer's JSON.
    pub async fn post(&self, path: &str, form: &[(&str, String)]) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, form).await
    }

    /// `GET` from localstripe; the answer's JSON.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, query).await
    }

    /// Every PaymentIntent whose `metadata[dropline_order_id]` is `order`.
    pub async fn intents_of(&self, order: &str) -> anyhow::Result<Vec<Value>> {
        let list = self
            .get("/v1/payment_intents", &[("limit", "100".to_owned())])
            .await?;
        Ok(list["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|pi| pi["metadata"]["dropline_order_id"] == order)
            .cloned()
            .collect())
    }

    /// The refunds of `intent`.
    pub async fn refunds_of(&self, intent: &str) -> anyhow::Result<Vec<Value>> {
        let list = self
            .get("/v1/refunds", &[("payment_intent", intent.to_owned())])
            .await?;
        Ok(list["data"].as_array().cloned().unwrap_or_default())
    }

    /// A card PaymentMethod for `number` (`4000002500003155` asks for 3-D Secure).
    pub async fn card(&self, number: &str) -> anyhow::Result<String> {
        let pm = self
            .post(
                "/v1/payment_methods",
                &[
                    ("type", "card".to_owned()),
                    ("card[number]", number.to_owned()),
                    ("card[exp_month]", "12".to_owned()),
                    ("card[exp_year]", "2030".to_owned()),
                    ("card[cvc]", "123".to_owned()),
                ],
            )
            .await?;
        pm["id"]
            .as_str()
            .map(str::to_owned)
            .context("localstripe made a PaymentMethod without an id")
    }

    /// Sends every `events` event to `url`, signed with `secret` (`POST /_config/webhooks/{id}`).
    pub async fn webhook(
        &self,
        id: &str,
        url: &str,
        secret: &str,
        events: &[&str],
    ) -> anyhow::Result<()> {
        let mut form = vec![("url", url.to_owned()), ("secret", secret.to_owned())];
        let keys: Vec<String> = (0..events.len()).map(|i| format!("events[{i}]")).collect();
        for (key, event) in keys.iter().zip(events) {
            form.push((key.as_str(), (*event).to_owned()));
        }
        self.post(&format!("/_config/webhooks/{id}"), &form).await?;
        Ok(())
    }
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock()
            && let Some(mut child) = child.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
