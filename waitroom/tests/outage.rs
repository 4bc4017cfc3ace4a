//! door.md §5, fail closed: the waiting room over HTTP, with its admitter, against a private
//! `redis-server` this test starts on a free port (never the shared one) and stops with SIGSTOP
//! for 30 s, so that its data stays and every command sent meanwhile hangs, then resumes with
//! SIGCONT. The server is killed at the end, also when the test fails.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use dropline_core::Config;
use dropline_core::auth::keys::KeyRing;
use dropline_core::auth::tokens::{self, Role};
use dropline_core::clients::deps::{Deps, Needs};
use dropline_core::ids::{ProductId, SaleId, UserId};
use dropline_core::sale::{self, SaleConfig};
use dropline_testkit::TestEnv;
use dropline_waitroom::admitter::Admitter;
use dropline_waitroom::queue::WaitQueue;
use fred::prelude::*;
use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// `redis.command_timeout_ms` here.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(1_000);
/// door.md §5: every answer within the command timeout + 1 s; one admission tick of slack.
const BOUND: Duration = Duration::from_millis(1_000 + 1_000 + 100);
const OUTAGE: Duration = Duration::from_secs(30);

/// A `redis-server` of this test's own, killed when dropped.
struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    fn start() -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting a private redis-server (is it installed?)")?;
        Ok(Self { child, port })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGSTOP (`stop = true`) or SIGCONT: the process stands still with its data and sockets.
    fn signal(&self, stop: bool) -> anyhow::Result<()> {
        let signal = if stop { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .context("kill")?;
        anyhow::ensure!(status.success(), "kill {signal} failed: {status}");
        Ok(())
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One answer: status, `Retry-After`, body, and how long it took.
struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: Value,
    took: Duration,
}

impl Answer {
    /// 503 `unavailable` in the contract's shape, with `Retry-After: retry_after`, within the
    /// bound.
    fn check_unavailable(&self, what: &str, retry_after: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.status == StatusCode::SERVICE_UNAVAILABLE
                && self.body["error"]["code"] == "unavailable"
                && self.retry_after.as_deref() == Some(retry_after),
            "{what}: {} {:?} {}",
            self.status,
            self.retry_after,
            self.body
        );
        anyhow::ensure!(self.took <= BOUND, "{what}: answered after {:?}", self.took);
        Ok(())
    }
}

struct Room {
    base: String,
    http: reqwest::Client,
    access: KeyRing,
}

impl Room {
    async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let started = Instant::now();
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| format!("{path}: not JSON: {text}"))?
        };
        Ok(Answer {
            status,
            retry_after,
            body,
            took: started.elapsed(),
        })
    }

    /// A new buyer joins: (user, ticket).
    async fn join(&self, sale: SaleId) -> anyhow::Result<(UserId, String)> {
        let user = UserId::new_v7();
        let answer = self.join_as(sale, user).await?;
        anyhow::ensure!(answer.status == StatusCode::OK, "join: {}", answer.body);
        let ticket = answer.body["ticket"]
            .as_str()
            .context("no ticket")?
            .to_owned();
        Ok((user, ticket))
    }

    async fn join_as(&self, sale: SaleId, user: UserId) -> anyhow::Result<Answer> {
        let token =
            tokens::issue_access(&self.access, user, Role::Buyer, Duration::from_secs(600))?.0;
        self.call(Method::POST, &format!("/w/{sale}/join"), Some(&token))
            .await
    }

    async fn status(&self, sale: SaleId, ticket: &str) -> anyhow::Result<Answer> {
        self.call(Method::GET, &format!("/w/{sale}/status"), Some(ticket))
            .await
    }

    /// The buyer's position, failing unless waiting.
    async fn position(&self, sale: SaleId, ticket: &str) -> anyhow::Result<u64> {
        let answer = self.status(sale, ticket).await?;
        anyhow::ensure!(
            answer.status == StatusCode::OK && answer.body["state"] == "waiting",
            "not waiting: {} {}",
            answer.status,
            answer.body
        );
        answer.body["position"].as_u64().context("no position")
    }
}

/// door.md §5 "Done when": Redis unreachable 30 s with `abandon_after` 20 s. Join, status,
/// leave and stats answer 503 `unavailable` with `Retry-After: 2` within the command timeout
/// + 1 s, a burst of 1,000 polls included (no pile-up), the admitted buyer gets no pass, and
/// `/readyz` is 503. Afterwards every waiting buyer who polls keeps the position or better; one
/// whose tab slept through the outage is not skipped for it (the outage does not count toward
/// `abandon_after`) and is in the same place at the first poll; and the line moves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_outage_fails_closed_and_keeps_every_place() -> anyhow::Result<()> {
    let redis_server = PrivateRedis::start()?;
    let url = redis_server.url();
    let env = TestEnv::with_overrides(&[
        ("REDIS__URL", &url),
        ("REDIS__COMMAND_TIMEOUT_MS", "1000"),
        ("WAITROOM__ABANDON_AFTER_SECONDS", "20"),
        ("WAITROOM__RETURN_GRACE_SECONDS", "60"),
        ("WAITROOM__OUTAGE_RETRY_AFTER_SECONDS", "2"),
        ("WAITROOM__LEASE_SECONDS", "1"),
        ("WAITROOM__STATUS_PER_USER_PER_MINUTE", "100000"),
        ("WAITROOM__STATUS_PER_IP_PER_MINUTE", "1000000"),
        ("WAITROOM__JOIN_PER_IP_PER_MINUTE", "100000"),
    ])?;
    let mut config: Config = env.config.clone();
    assert_eq!(
        Duration::from_millis(config.redis.command_timeout_ms),
        COMMAND_TIMEOUT
    );
    dropline_core::auth::keys::fill_dev_secrets(&mut config)?;
    let secrets = dropline_waitroom::Secrets::from_config(&config)?;
    let access = dropline_core::auth::keys::access_ring(&config.auth)?.context("access ring")?;
    let deps = Deps::connect(
        &config,
        Needs {
            redis: true,
            ..Needs::default()
        },
    )
    .await?;
    let redis = deps.redis()?.clone();
    let server = dropline_waitroom::build(&config, &deps, secrets).await?;
    let room = Room {
        base: format!("http://{}", server.addr()),
        http: reqwest::Client::new(),
        access,
    };
    let stop = CancellationToken::new();
    tokio::spawn(server.run(stop.clone()));
    let admitter_redis = dropline_core::clients::redis::Redis::connect(&config.redis).await?;
    let admitter = Admitter::new(admitter_redis.clone(), &config.waitroom, "outage".into());
    let admitter = tokio::spawn(admitter.run(stop.clone()));

    let sale = SaleId::new_v7();
    let cfg = SaleConfig {
        product_id: ProductId::new_v7(),
        price: 1_000,
        currency: "KRW".into(),
        stock_total: 100,
        opens_at: Utc::now() - chrono::Duration::seconds(1),
        closes_at: None,
        per_user_limit: 1,
        hold_seconds: 600,
        admit_per_second: 100,
        // One buyer in at a time: the others wait through the outage.
        max_active: Some(1),
        paused: false,
        closed: false,
        line_shards: 1,
    };
    anyhow::ensure!(sale::arm(&redis, sale, &cfg).await?, "armed already");
    let (_, first) = room.join(sale).await?;
    let mut waiting = Vec::new();
    for _ in 0..5 {
        waiting.push(room.join(sale).await?.1);
    }
    let (_, leaver) = room.join(sale).await?;
    let deadline = Instant::now() + Duration::from_secs(3);
    while room.status(sale, &first).await?.body["state"] != "admitted" {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the first buyer was not admitted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut before = Vec::new();
    for ticket in &waiting {
        before.push(room.position(sale, ticket).await?);
    }
    assert_eq!(before, [1, 2, 3, 4, 5]);
    // The third waiting buyer's tab sleeps through the outage: no poll until it is over.
    let sleeper = 2;

    // The burst below uses 1,000 connections at once: open them now, so that it measures the
    // answers, not TCP's backlog (a SYN dropped there is retried a second later).
    for warm in join_all((0..1_000).map(|_| room.call(Method::GET, "/healthz", None))).await {
        anyhow::ensure!(warm?.status == StatusCode::OK, "/healthz");
    }
    let (join_path, stats_path) = (format!("/w/{sale}/join"), format!("/w/{sale}/stats"));
    redis_server.signal(true)?;
    let outage_started = Instant::now();
    let mut rounds = 0;
    while outage_started.elapsed() < OUTAGE - Duration::from_secs(3) {
        let polls = waiting
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != sleeper)
            .map(|(_, ticket)| room.status(sale, ticket));
        let (polls, admitted, joined, left, stats, ready) = tokio::join!(
            join_all(polls),
            room.status(sale, &first),
            room.join_as(sale, UserId::new_v7()),
            room.call(Method::DELETE, &join_path, Some(&leaver)),
            room.call(Method::GET, &stats_path, None),
            room.call(Method::GET, "/readyz", None),
        );
        for poll in polls {
            poll?.check_unavailable("status", "2")?;
        }
        // The admitted buyer gets no pass either.
        admitted?.check_unavailable("status of the admitted buyer", "2")?;
        joined?.check_unavailable("join", "2")?;
        left?.check_unavailable("leave", "2")?;
        stats?.check_unavailable("stats", "2")?;
        let ready = ready?;
        anyhow::ensure!(
            ready.status == StatusCode::SERVICE_UNAVAILABLE && ready.took <= BOUND,
            "/readyz: {} after {:?}: {}",
            ready.status,
            ready.took,
            ready.body
        );
        if rounds == 1 {
            // A burst of 1,000 polls at once: each is answered within the bound, none waits for
            // the ones before it.
            let burst = (0..1_000).map(|i| {
                let ticket = &waiting[[0, 1, 3, 4][i % 4]];
                room.status(sale, ticket)
            });
            let started = Instant::now();
            let mut took = Vec::new();
            for poll in join_all(burst).await {
                let poll = poll?;
                took.push(poll.took);
                poll.check_unavailable("a poll of the burst", "2")?;
            }
            took.sort();
            println!(
                "a burst of 1,000 polls: median {:?}, slowest {:?}, all in {:?}",
                took.get(500),
                took.last(),
                started.elapsed()
            );
        }
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let left_for = OUTAGE.saturating_sub(outage_started.elapsed());
    tokio::time::sleep(left_for).await;
    redis_server.signal(false)?;
    println!(
        "{rounds} rounds of 503s in a {:?} outage",
        outage_started.elapsed()
    );

    // Back: ready again, and every waiting buyer who polls keeps the position or better.
    let deadline = Instant::now() + Duration::from_secs(5);
    while room.call(Method::GET, "/readyz", None).await?.status != StatusCode::OK {
        anyhow::ensure!(
            Instant::now() < deadline,
            "/readyz not 200 again within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The sleeper was silent for the whole outage, longer than abandon_after, but the outage
    // does not count: the admitter saw the gap between its ticks and skips nobody for
    // abandon_after from now. (A fixed wait: ten ticks in which nothing must happen.)
    let keys = WaitQueue::new(&redis, sale).keys().clone();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let resumed: Option<i64> = redis.pool().hget(&keys.wr, "resumed_at").await?;
    anyhow::ensure!(resumed.is_some(), "the admitter did not see the outage");
    let skipped: i64 = redis.pool().zcard(&keys.skip).await?;
    assert_eq!(skipped, 0, "buyers skipped for the outage");
    for (i, ticket) in waiting.iter().enumerate() {
        let position = room.position(sale, ticket).await?;
        assert!(
            position <= before[i],
            "buyer {i}: position {position} after the outage, {} before",
            before[i]
        );
    }
    assert_eq!(
        room.position(sale, &waiting[sleeper]).await?,
        before[sleeper],
        "the sleeper is back in its place"
    );
    // The line moves again: the admitted buyer leaves, the first waiting buyer goes in.
    let left = room
        .call(Method::DELETE, &format!("/w/{sale}/join"), Some(&first))
        .await?;
    assert_eq!(left.status, StatusCode::NO_CONTENT);
    let deadline = Instant::now() + Duration::from_secs(2);
    while room.status(sale, &waiting[0]).await?.body["state"] != "admitted" {
        anyhow::ensure!(Instant::now() < deadline, "the line does not move again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), admitter).await;
    admitter_redis.quit().await;
    deps.close().await;
    env.cleanup().await?;
    drop(redis_server);
    Ok(())
}
