//! What several of the waiting room's test files share: a waitroom server on a free port with
//! its own key prefix ([`Server`]), the open sale most tests arm ([`open_sale`]), and a way to
//! make buyers look silent ([`silence`]), and one way to send a request and read its JSON
//! answer ([`Server::send`]). Each test binary uses a part of it.
#![allow(dead_code)]

use std::time::Duration;

use chrono::Utc;
use dropline_core::Config;
use dropline_core::auth::keys::KeyRing;
use dropline_core::auth::tokens::{self, Role};
use dropline_core::clients::deps::{Deps, Needs};
use dropline_core::clients::redis::Redis;
use dropline_core::ids::{ProductId, UserId};
use dropline_core::sale::SaleConfig;
use dropline_testkit::TestEnv;
use dropline_waitroom::queue::{ORDER_SPAN, QueueKeys, member};
use fred::prelude::*;
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;

/// A request's body for [`Server::send`].
pub enum Body<'a> {
    None,
    Json(serde_json::Value),
    /// A content type and text sent as they are (malformed bodies).
    Raw(&'a str, &'a str),
}

/// One waitroom server (the machine's real Redis, this test's key prefix) and what a test
/// needs around it: the access keys to mint buyers' tokens, and the public half of the pass
/// key, which is all the api holds.
pub struct Server {
    pub env: TestEnv,
    /// The configuration the server runs with (dev secrets filled in).
    pub config: Config,
    pub deps: Deps,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub http: reqwest::Client,
    pub access: KeyRing,
    pub api_pass_ring: KeyRing,
    stop: CancellationToken,
}

impl Server {
    /// Starts a server with `overrides` (`DROPLINE_` keys without the prefix) on its own prefix.
    pub async fn launch(overrides: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::launch_with(overrides, false).await
    }

    /// As [`Server::launch`], with this test's MySQL database connected (and migrated) too, as
    /// `dropline all` runs it: draw sales keep their entries there.
    pub async fn launch_with_mysql(overrides: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::launch_with(overrides, true).await
    }

    async fn launch_with(overrides: &[(&str, &str)], mysql: bool) -> anyhow::Result<Self> {
        let env = TestEnv::with_overrides(overrides)?;
        let mut config = env.config.clone();
        dropline_core::auth::keys::fill_dev_secrets(&mut config)?;
        let secrets = dropline_waitroom::Secrets::from_config(&config)?;
        let access = dropline_core::auth::keys::access_ring(&config.auth)?
            .ok_or_else(|| anyhow::anyhow!("no access ring"))?;
        let signer = secrets
            .passes
            .signer()
            .ok_or_else(|| anyhow::anyhow!("no pass signer"))?;
        let api_pass_ring = KeyRing::new(None, vec![signer.public()?])?;
        let deps = Deps::connect(
            &config,
            Needs {
                redis: true,
                mysql,
                ..Needs::default()
            },
        )
        .await?;
        let server = dropline_waitroom::build(&config, &deps, secrets).await?;
        let base = format!("http://{}", server.addr());
        let stop = CancellationToken::new();
        tokio::spawn(server.run(stop.clone()));
        Ok(Self {
            env,
            config,
            deps,
            base,
            http: reqwest::Client::new(),
            access,
            api_pass_ring,
            stop,
        })
    }

    /// Sends `method path` (with `bearer` as the token, if any) and reads the answer: its
    /// status, and its JSON (`null` for an empty body; a body that is not JSON is an error).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        body: Body<'_>,
    ) -> anyhow::Result<(StatusCode, serde_json::Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        request = match body {
            Body::None => request,
            Body::Json(value) => request.json(&value),
            Body::Raw(content_type, text) => request
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(text.to_owned()),
        };
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        let body = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{status} {path}: not JSON ({e}): {text}"))?
        };
        Ok((status, body))
    }

    pub fn redis(&self) -> anyhow::Result<&Redis> {
        self.deps.redis()
    }

    /// A ten-minute access token for `user` in `role`.
    pub fn token_as(&self, user: UserId, role: Role) -> anyhow::Result<String> {
        Ok(tokens::issue_access(&self.access, user, role, Duration::from_secs(600))?.0)
    }

    /// A buyer's ten-minute access token.
    pub fn token(&self, user: UserId) -> anyhow::Result<String> {
        self.token_as(user, Role::Buyer)
    }

    /// Stops the server, closes its connections and removes the test's keys.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.deps.close().await;
        self.env.cleanup().await
    }
}

/// A sale open since a second ago: 100 in stock, one per buyer, 100 admitted a second, no
/// `max_active`, holds of ten minutes. Tests change what they need.
pub fn open_sale() -> SaleConfig {
    SaleConfig {
        product_id: ProductId::new_v7(),
        price: 1000,
        currency: "KRW".into(),
        stock_total: 100,
        opens_at: Utc::now() - chrono::Duration::seconds(1),
        closes_at: None,
        per_user_limit: 1,
        hold_seconds: 600,
        admit_per_second: 100,
        max_active: None,
        paused: false,
        closed: false,
    }
}

/// Makes `users` look silent for `secs` seconds without waiting that long: rewrites the
/// last-poll stamp of their place (the low 16 bits of the score, Redis seconds mod 65536; see
/// `waitroom/src/queue.rs`), in the line or among the skipped places, as if their last join or
/// poll had been `secs` ago. The order key is untouched, so the place stays where it is, and
/// the scripts under test judge the silence exactly as they would after real time.
pub async fn silence(
    redis: &Redis,
    keys: &QueueKeys,
    users: &[UserId],
    secs: u64,
) -> anyhow::Result<()> {
    let t: Vec<u64> = redis
        .pool()
        .custom(fred::cmd!("TIME"), Vec::<String>::new())
        .await?;
    let now_s = *t.first().ok_or_else(|| anyhow::anyhow!("TIME: {t:?}"))?;
    let stamp = (now_s + ORDER_SPAN - secs % ORDER_SPAN) % ORDER_SPAN;
    for user in users {
        let id = Value::from(&member(*user)[..]);
        for key in [&keys.q, &keys.skip] {
            let score: Option<f64> = redis.pool().zscore(key, id.clone()).await?;
            if let Some(score) = score {
                let score = score as u64;
                let _: i64 = redis
                    .pool()
                    .custom(
                        fred::cmd!("ZADD"),
                        vec![
                            Value::from(key.as_str()),
                            Value::from("XX"),
                            Value::from((score - score % ORDER_SPAN + stamp).to_string()),
                            id.clone(),
                        ],
                    )
                    .await?;
            }
        }
    }
    Ok(())
}

/// Puts `user`'s place with `score` (the layout of `wr_join.lua`) straight into its line
/// shard's `q`, as a spread line's join will.
pub async fn place_in_shard(
    redis: &Redis,
    line: &dropline_core::sale::keys::LineShards,
    user: UserId,
    score: f64,
) -> anyhow::Result<()> {
    let () = redis
        .pool()
        .zadd(
            &line.keys_of(user).q,
            None,
            None,
            false,
            false,
            (score, user.as_bytes().to_vec()),
        )
        .await?;
    Ok(())
}
