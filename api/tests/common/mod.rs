//! Shared harness for the api's integration tests: a real api server (own database, Redis
//! prefix and queue names per test, on a free port), throw-away keys, helpers to make
//! accounts and tokens without going through e-mail, and the `mail.send` messages the api
//! published, read from the test's own mail queue (no mail worker runs here: the message is the
//! api's side of the contract; `tests/signup_mail.rs` at the top level runs the worker too).
//! The end-to-end tests at the top level include this file as their api harness.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dropline_api::pii::Pii;
use dropline_api::{AppState, Secrets};
use dropline_core::auth::accounts::create_verified_user;
use dropline_core::auth::keys::{KeyRing, SigningKeyPair};
use dropline_core::auth::tokens::{self, Role};
use dropline_core::clients::amqp::MAIL;
use dropline_core::clients::deps::{Deps, Needs};
use dropline_core::clients::redis::Redis;
use dropline_core::ids::UserId;
use dropline_core::messages::{Envelope, MailSend};
use dropline_testkit::smtp::digit_run;
use dropline_testkit::{FaultProxy, TestEnv, url_target, url_via};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Cheap argon2 settings for tests that do not measure hashing (OWASP floor is for production).
pub const FAST_ARGON2: [(&str, &str); 3] = [
    ("AUTH__ARGON2_MEMORY_KIB", "64"),
    ("AUTH__ARGON2_ITERATIONS", "1"),
    ("AUTH__ARGON2_PARALLELISM", "1"),
];

/// A running api server and what a test needs around it.
pub struct TestApi {
    pub env: TestEnv,
    pub deps: Deps,
    pub base: String,
    pub http: reqwest::Client,
    pub keys: Arc<KeyRing>,
    /// The waiting room's pass key (signs here, so tests can mint passes).
    pub passes: Arc<KeyRing>,
    pub pii: Pii,
    pub state: AppState,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
    /// The `mail.send` messages taken from the test's mail queue so far.
    mails: Mutex<Vec<MailSend>>,
}

/// A response: status, headers and the JSON body (`Value::Null` when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The contract error code, when the body is an error.
    pub fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }

    /// Asserts the status and, for errors, the contract's shape and code.
    #[track_caller]
    pub fn expect(&self, status: u16, code: Option<&str>) -> &Self {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        if let Some(code) = code {
            assert_eq!(self.code(), Some(code), "body: {}", self.body);
            assert!(
                self.body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "error without a message: {}",
                self.body
            );
        }
        self
    }
}

impl TestApi {
    /// Takes every `mail.send` message waiting in this test's mail queue into [`Self::mails`].
    async fn take_mails(&self) -> anyhow::Result<()> {
        let broker = self.deps.broker()?;
        let queue = broker.names().queue(MAIL);
        let channel = broker.channel().await?;
        while let Some(message) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await?
        {
            let envelope: Envelope<MailSend> = serde_json::from_slice(&message.delivery.data)?;
            message.delivery.ack(BasicAckOptions::default()).await?;
            self.mails
                .lock()
                .map_err(|_| anyhow::anyhow!("mail list poisoned"))?
                .push(envelope.data);
        }
        Ok(())
    }

    /// The mails to `to` the api has published so far (bodies in order).
    pub async fn mails_for(&self, to: &str) -> anyhow::Result<Vec<String>> {
        self.take_mails().await?;
        let mails = self
            .mails
            .lock()
            .map_err(|_| anyhow::anyhow!("mail list poisoned"))?;
        Ok(mails
            .iter()
            .filter(|m| m.to == to || m.to.ends_with(&format!("<{to}>")))
            .map(|m| m.text.clone())
            .collect())
    }

    /// Waits for the `n`-th mail to `to` (1-based) and returns its six-digit code.
    pub async fn code_for(&self, to: &str, n: usize) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mails = self.mails_for(to).await?;
            if let Some(text) = mails.get(n - 1) {
                return digit_run(text, 6)
                    .ok_or_else(|| anyhow::anyhow!("no six-digit code in the mail to {to}"));
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "mail #{n} to {to} was not published within 20 s ({} were)",
                mails.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Mails to `to` published so far.
    pub async fn mails_to(&self, to: &str) -> anyhow::Result<usize> {
        Ok(self.mails_for(to).await?.len())
    }

    /// Starts an api with fast argon2 and `extra` config overrides (env form).
    pub async fn start(extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut overrides: Vec<(&str, &str)> = FAST_ARGON2.to_vec();
        overrides.extend_from_slice(extra);
        let env = TestEnv::with_overrides(&overrides)?;
        let deps = Deps::connect(&env.config, Needs::ALL).await?;
        let keys = Arc::new(KeyRing::new(Some(SigningKeyPair::generate()?), vec![])?);
        let pii = Pii::generate()?;
        let passes = Arc::new(KeyRing::new(Some(SigningKeyPair::generate()?), vec![])?);
        let secrets = Secrets {
            keys: keys.clone(),
            passes: passes.clone(),
            pii: pii.clone(),
            stripe_webhook: env
                .config
                .payment
                .stripe
                .webhook_secret()
                .ok()
                .map(Arc::from),
        };
        let state = AppState::new(&env.config, &deps, secrets.clone())?;
        let server = dropline_api::build(&env.config, &deps, secrets).await?;
        let base = format!("http://{}", server.addr());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(server.run(shutdown.clone()));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            env,
            deps,
            base,
            http,
            keys,
            passes,
            pii,
            state,
            shutdown,
            server,
            mails: Mutex::new(Vec::new()),
        })
    }

    pub fn mysql(&self) -> &sqlx::MySqlPool {
        &self.state.mysql
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Reply> {
        self.call_with(method, path, token, &[], body).await
    }

    /// [`TestApi::call`] with extra request headers.
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> anyhow::Result<Reply> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> anyhow::Result<Reply> {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> anyhow::Result<Reply> {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// A verified account made directly (no e-mail); returns its id and an access token.
    pub async fn user(&self, email: &str, role: Role) -> anyhow::Result<(UserId, String)> {
        let id = create_verified_user(
            self.mysql(),
            &self.state.hasher,
            email,
            PASSWORD,
            None,
            role,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok((id, self.token(id, role)?))
    }

    /// An access token for `user` signed by this server's key.
    pub fn token(&self, user: UserId, role: Role) -> anyhow::Result<String> {
        let (token, _) = tokens::issue_access(&self.keys, user, role, Duration::from_secs(600))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(token)
    }

    /// An admin's access token.
    pub async fn admin(&self) -> anyhow::Result<String> {
        let email = format!("admin-{}@example.com", Uuid::new_v4().simple());
        Ok(self.user(&email, Role::Admin).await?.1)
    }

    /// A buyer's access token.
    pub async fn buyer(&self) -> anyhow::Result<String> {
        let email = format!("buyer-{}@example.com", Uuid::new_v4().simple());
        Ok(self.user(&email, Role::Buyer).await?.1)
    }

    /// Stops the server (must return within 10 s), closes clients, removes the test's data.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.server).await???;
        self.deps.close().await;
        self.env.cleanup().await
    }
}

/// The password of the accounts the tests sign up and create.
pub const PASSWORD: &str = "correct horse battery";

/// A fresh buyer address.
pub fn email() -> String {
    format!("buyer-{}@example.com", Uuid::new_v4().simple())
}

/// Signs `email` up through `POST /api/users` (201 expected); returns the new account's id.
pub async fn sign_up(api: &TestApi, email: &str) -> anyhow::Result<Uuid> {
    let reply = api
        .post(
            "/api/users",
            None,
            serde_json::json!({"email": email, "password": PASSWORD, "name": "Kim Minji"}),
        )
        .await?;
    reply.expect(201, None);
    reply.body["id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| anyhow::anyhow!("no id in {}", reply.body))
}

/// A second api replica on a test's stores whose Redis goes through a [`FaultProxy`] the test
/// can cut ([`TestApi::replica_with_cuttable_redis`]); Redis commands time out after 500 ms.
pub struct CutReplica {
    pub proxy: FaultProxy,
    /// `http://host:port` of the replica.
    pub base: String,
    redis: Redis,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl TestApi {
    /// Starts a [`CutReplica`] (same MySQL, broker, keys and prefix as this api).
    pub async fn replica_with_cuttable_redis(&self) -> anyhow::Result<CutReplica> {
        let mut config = self.env.config.clone();
        let proxy = FaultProxy::start(url_target(&config.redis.url)?).await?;
        config.redis.url = url_via(&config.redis.url, proxy.addr())?;
        config.redis.command_timeout_ms = 500;
        let redis = Redis::connect(&config.redis).await?;
        let deps = Deps {
            mysql: self.deps.mysql.clone(),
            redis: Some(redis.clone()),
            broker: self.deps.broker.clone(),
        };
        let secrets = Secrets {
            keys: self.keys.clone(),
            passes: self.passes.clone(),
            pii: self.pii.clone(),
            stripe_webhook: None,
        };
        let server = dropline_api::build(&config, &deps, secrets).await?;
        let base = format!("http://{}", server.addr());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Ok(CutReplica {
            proxy,
            base,
            redis,
            shutdown,
            task,
        })
    }
}

impl CutReplica {
    /// Stops the replica (at most 10 s) and its Redis client.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task).await???;
        self.redis.quit().await;
        Ok(())
    }
}

impl TestApi {
    /// A product through the admin API as `admin` ("Numbered chair", 390,000 in the default
    /// currency): the 201's body.
    pub async fn new_product(&self, admin: &str) -> anyhow::Result<Value> {
        let reply = self
            .post(
                "/api/admin/products",
                Some(admin),
                serde_json::json!({"name": "Numbered chair", "price": 390_000}),
            )
            .await?;
        reply.expect(201, None);
        Ok(reply.body)
    }
}
