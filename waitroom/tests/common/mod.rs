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
        line_shards: 1,
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
    let places: Vec<(UserId, [&str; 2])> = users
        .iter()
        .map(|user| (*user, [keys.q.as_str(), keys.skip.as_str()]))
        .collect();
    restamp(redis, &places, secs).await
}

/// [`silence`] for `sale`, whose line may be spread over shards ([`test_line_shards`]): each
/// user's place is looked for on their own line shard then.
pub async fn silence_in_sale(
    redis: &Redis,
    sale: dropline_core::ids::SaleId,
    users: &[UserId],
    secs: u64,
) -> anyhow::Result<()> {
    let queue = dropline_waitroom::queue::WaitQueue::new(redis, sale);
    match queue.line().await? {
        Some(line) if line.count() > 1 => {
            let places: Vec<(UserId, [&str; 2])> = users
                .iter()
                .map(|user| {
                    let keys = line.keys_of(*user);
                    (*user, [keys.q.as_str(), keys.skip.as_str()])
                })
                .collect();
            restamp(redis, &places, secs).await
        }
        _ => silence(redis, queue.keys(), users, secs).await,
    }
}

/// Sets the last-poll stamp of each user's place, found in either of its two keys, to `secs`
/// ago.
async fn restamp(redis: &Redis, places: &[(UserId, [&str; 2])], secs: u64) -> anyhow::Result<()> {
    let t: Vec<u64> = redis
        .pool()
        .custom(fred::cmd!("TIME"), Vec::<String>::new())
        .await?;
    let now_s = *t.first().ok_or_else(|| anyhow::anyhow!("TIME: {t:?}"))?;
    let stamp = (now_s + ORDER_SPAN - secs % ORDER_SPAN) % ORDER_SPAN;
    for (user, keys) in places {
        let id = Value::from(&member(*user)[..]);
        for key in keys {
            let score: Option<f64> = redis.pool().zscore(*key, id.clone()).await?;
            if let Some(score) = score {
                let score = score as u64;
                let _: i64 = redis
                    .pool()
                    .custom(
                        fred::cmd!("ZADD"),
                        vec![
                            Value::from(*key),
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

/// The line shards the waiting-room and door suites arm their sales with: `DL_TEST_LINE_SHARDS`
/// (`scripts/cluster-test` runs those suites a second time with 3, issue #22 §2), else 1.
pub fn test_line_shards() -> u16 {
    std::env::var("DL_TEST_LINE_SHARDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Spreads a freshly armed `sale`'s line over [`test_line_shards`] shards (`cfg.line_shards`,
/// before anyone joins), as a sale created with that setting is armed.
pub async fn spread_as_asked(
    redis: &Redis,
    sale: dropline_core::ids::SaleId,
) -> anyhow::Result<()> {
    let shards = test_line_shards();
    if shards > 1 {
        let cfg = dropline_core::sale::keys::SaleKeys::new(redis, sale).cfg();
        let _: i64 = redis.pool().hset(cfg, ("line_shards", shards)).await?;
    }
    Ok(())
}

/// What the admitter's leader does for a spread line between two ticks, for tests that drive
/// admission by hand: a tick that admits nobody, so the shards hear the sale's state, settings
/// and positions (a poll of a spread line is one tick late by design). Nothing on a sale whose
/// line is not spread.
pub async fn publish_line(redis: &Redis, sale: dropline_core::ids::SaleId) -> anyhow::Result<()> {
    let queue = dropline_waitroom::queue::WaitQueue::new(redis, sale);
    if queue.line().await?.is_some_and(|line| line.count() > 1) {
        let mut quiet = dropline_waitroom::queue::AdmitParams::new(
            0,
            std::time::Duration::from_secs(120),
            std::time::Duration::from_secs(600),
        );
        quiet.scan_limit = 1;
        queue.admit(&quiet).await?;
    }
    Ok(())
}
