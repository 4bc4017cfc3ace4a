//! Claims and backfill of draw sales (design/draw.md "Claims and backfill", #23), end to end
//! as `dropline all` runs them: the waiting room (entries, statuses, passes), the api (orders
//! and payments), every worker (the draw leader among them) and a mail sink, on the machine's
//! Redis, MariaDB and RabbitMQ, each test on its own key prefix, database and queues.
//!
//! - Done-when 3: 5 units, 20 entrants, claims of 5 s: ranks 1-2 idle, 3 cancels, 4-5 pay →
//!   6, 7, 8 promoted in order, within 7 s; the winners are ranks 1..M at every sample.
//! - Done-when 4: stock 10, limit 3 → wins of 3, 3, 3, 1; buying 1 of 3 promotes the next with
//!   2; one order per win, none above its `max_quantity`; then Redis loses the sale and `sale
//!   rearm` brings every status and the public draw back (Done-when 6), `sale audit --settled`
//!   clean.
//! - Done-when 1: 1,000 entrants, 10 units: 10 won, 990 waitlisted; all pay → sold out, 10
//!   paid, 990 not drawn, 1,000 mails (10 won, 990 not drawn).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use dropline_core::clients::deps::{Deps, Needs};
use dropline_core::ids::{OrderId, SaleId, UserId};
use dropline_core::sale::Door;
use dropline_testkit::TestEnv;
use dropline_testkit::draw::Options;
use dropline_testkit::smtp::SmtpSink;
use dropline_workers::Kind;
use fred::prelude::*;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The whole system in this process.
struct Rig {
    env: TestEnv,
    deps: Deps,
    waitroom: String,
    api: String,
    http: reqwest::Client,
    access: dropline_core::auth::keys::KeyRing,
    sink: SmtpSink,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Rig {
    async fn start(extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        let sink = SmtpSink::start().await?;
        let port = sink.port();
        let mut overrides = vec![
            ("SMTP__HOST", "127.0.0.1"),
            ("SMTP__PORT", port.as_str()),
            ("SMTP__TLS", "none"),
            ("DRAW__TICK_MS", "100"),
            ("DRAW__REVEAL_DELAY_SECONDS", "1"),
            ("WAITROOM__JOIN_PER_IP_PER_MINUTE", "1000000"),
            ("WAITROOM__STATUS_PER_IP_PER_MINUTE", "1000000"),
            ("PAYMENT__SIM_LATENCY_MS", "5"),
            ("EXPIRY__SWEEP_INTERVAL_SECONDS", "1"),
            ("MYSQL__MAX_CONNECTIONS", "20"),
            ("REDIS__POOL_SIZE", "4"),
            ("AUTH__ARGON2_MEMORY_KIB", "64"),
            ("AUTH__ARGON2_ITERATIONS", "1"),
        ];
        overrides.extend_from_slice(extra);
        let env = TestEnv::with_overrides(&overrides)?;
        let mut config = env.config.clone();
        dropline_core::auth::keys::fill_dev_secrets(&mut config)?;
        let access =
            dropline_core::auth::keys::access_ring(&config.auth)?.context("no access ring")?;
        let deps = Deps::connect(&config, Needs::ALL).await?;
        let waitroom = dropline_waitroom::build(
            &config,
            &deps,
            dropline_waitroom::Secrets::from_config(&config)?,
        )
        .await?;
        let api = dropline_api::build(&config, &deps, dropline_api::Secrets::from_config(&config)?)
            .await?;
        let (waitroom_base, api_base) = (
            format!("http://{}", waitroom.addr()),
            format!("http://{}", api.addr()),
        );
        let stop = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(waitroom.run(stop.clone())),
            tokio::spawn(api.run(stop.clone())),
            tokio::spawn({
                let (config, deps, stop) = (config.clone(), deps.clone(), stop.clone());
                async move { dropline_workers::run(Kind::All, &config, &deps, stop).await }
            }),
        ];
        Ok(Self {
            env,
            deps,
            waitroom: waitroom_base,
            api: api_base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            access,
            sink,
            stop,
            tasks,
        })
    }

    fn mysql(&self) -> anyhow::Result<&sqlx::MySqlPool> {
        self.deps.mysql()
    }

    fn redis(&self) -> anyhow::Result<&dropline_core::clients::redis::Redis> {
        self.deps.redis()
    }

    fn token(&self, user: UserId) -> anyhow::Result<String> {
        Ok(dropline_core::auth::tokens::issue_access(
            &self.access,
            user,
            dropline_core::auth::tokens::Role::Buyer,
            Duration::from_secs(600),
        )?
        .0)
    }

    async fn get(&self, url: String, bearer: Option<&str>) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self.http.get(url);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Enters every user: (user, access token, ticket).
    async fn enter(
        &self,
        sale: SaleId,
        users: &[UserId],
    ) -> anyhow::Result<Vec<(UserId, String, String)>> {
        let answers: Vec<anyhow::Result<(UserId, String, String)>> =
            futures_util::stream::iter(users.iter().copied())
                .map(|user| async move {
                    let token = self.token(user)?;
                    let response = self
                        .http
                        .post(format!("{}/w/{sale}/join", self.waitroom))
                        .bearer_auth(&token)
                        .send()
                        .await?;
                    anyhow::ensure!(
                        response.status() == StatusCode::OK,
                        "join: {}",
                        response.status()
                    );
                    let body: Value = response.json().await?;
                    let ticket = body["ticket"].as_str().context("no ticket")?.to_owned();
                    Ok((user, token, ticket))
                })
                .buffer_unordered(32)
                .collect()
                .await;
        answers.into_iter().collect()
    }

    async fn status(&self, sale: SaleId, ticket: &str) -> anyhow::Result<Value> {
        let (status, body) = self
            .get(format!("{}/w/{sale}/status", self.waitroom), Some(ticket))
            .await?;
        anyhow::ensure!(status == StatusCode::OK, "status: {status} {body}");
        Ok(body)
    }

    /// `POST /api/orders` with the win's pass: (status, body).
    async fn order(
        &self,
        sale: SaleId,
        token: &str,
        pass: &str,
        quantity: u32,
        key: &str,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let response = self
            .http
            .post(format!("{}/api/orders", self.api))
            .bearer_auth(token)
            .header("Dropline-Pass", pass)
            .header("Idempotency-Key", key)
            .json(&json!({"sale_id": sale, "quantity": quantity}))
            .send()
            .await?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn pay(&self, token: &str, order: &str) -> anyhow::Result<StatusCode> {
        let response = self
            .http
            .post(format!("{}/api/orders/{order}/pay", self.api))
            .bearer_auth(token)
            .json(&json!({"card_token": "tok_visa"}))
            .send()
            .await?;
        Ok(response.status())
    }

    async fn cancel(&self, token: &str, order: &str) -> anyhow::Result<StatusCode> {
        let response = self
            .http
            .delete(format!("{}/api/orders/{order}", self.api))
            .bearer_auth(token)
            .send()
            .await?;
        Ok(response.status())
    }

    /// Every page of `/draw/winners`: (rank, max_quantity, outcome).
    async fn winners(&self, sale: SaleId) -> anyhow::Result<Vec<(u64, u64, String)>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                Some(c) => format!("{}/w/{sale}/draw/winners?cursor={c}", self.waitroom),
                None => format!("{}/w/{sale}/draw/winners", self.waitroom),
            };
            let (status, body) = self.get(url, None).await?;
            anyhow::ensure!(status == StatusCode::OK, "winners: {status} {body}");
            for item in body["items"].as_array().context("no items")? {
                out.push((
                    item["rank"].as_u64().context("rank")?,
                    item["max_quantity"].as_u64().context("max_quantity")?,
                    item["outcome"].as_str().context("outcome")?.to_owned(),
                ));
            }
            match body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(out),
            }
        }
    }

    /// `drw.promoted` in Redis.
    async fn promoted(&self, sale: SaleId) -> anyhow::Result<u64> {
        let redis = self.redis()?;
        let promoted: Option<u64> = redis
            .pool()
            .hget(redis.sale_key(sale, "drw"), "promoted")
            .await?;
        Ok(promoted.unwrap_or(0))
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(15), task).await???;
        }
        self.deps.close().await;
        self.env.cleanup().await
    }
}

/// Entrants by rank (1-based index 0 = rank 1): (user, token, ticket), once the draw is ranked.
async fn by_rank(
    rig: &Rig,
    sale: SaleId,
    entered: &[(UserId, String, String)],
) -> anyhow::Result<Vec<(UserId, String, String)>> {
    let ranked = dropline_testkit::eventually(Duration::from_secs(20), || async {
        rig.status(sale, &entered[0].2)
            .await
            .is_ok_and(|s| s["rank"].is_u64())
    })
    .await;
    anyhow::ensure!(ranked, "the draw was not ranked within 20 s");
    let mut ranks: Vec<(u64, (UserId, String, String))> = Vec::with_capacity(entered.len());
    for e in entered {
        let body = rig.status(sale, &e.2).await?;
        ranks.push((body["rank"].as_u64().context("no rank")?, e.clone()));
    }
    ranks.sort_by_key(|(rank, _)| *rank);
    for (i, (rank, _)) in ranks.iter().enumerate() {
        anyhow::ensure!(*rank == i as u64 + 1, "ranks are not 1..n: {rank} at {i}");
    }
    Ok(ranks.into_iter().map(|(_, e)| e).collect())
}

/// Moves the close of entries to a second from now (MySQL and the armed `cfg`), once every
/// entrant is in: a thousand joins take a while in a debug build.
async fn close_entries_soon(
    pool: &sqlx::MySqlPool,
    redis: &dropline_core::clients::redis::Redis,
    sale: SaleId,
) -> anyhow::Result<()> {
    let close = chrono::Utc::now() + chrono::Duration::seconds(1);
    sqlx::query("UPDATE sales SET entries_close_at = ? WHERE id = ?")
        .bind(close.naive_utc())
        .bind(sale)
        .execute(pool)
        .await?;
    let _: i64 = redis
        .pool()
        .hset(
            redis.sale_key(sale, "cfg"),
            ("entries_close_at", close.timestamp_millis().to_string()),
        )
        .await?;
    Ok(())
}

/// A won entrant's pass (waits for it).
async fn pass_of(rig: &Rig, sale: SaleId, ticket: &str) -> anyhow::Result<(Value, String)> {
    let started = Instant::now();
    loop {
        let body = rig.status(sale, ticket).await?;
        if body["state"] == json!("won")
            && let Some(pass) = body["pass"].as_str()
        {
            return Ok((body.clone(), pass.to_owned()));
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(20),
            "no win within 20 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every entrant's status (without the parts that differ per call), the public draw (without
/// its state) and the winners.
async fn snapshot(
    rig: &Rig,
    sale: SaleId,
    ranked: &[(UserId, String, String)],
) -> anyhow::Result<(Vec<Value>, Value, Vec<(u64, u64, String)>)> {
    let mut out = Vec::new();
    for e in ranked {
        let mut body = rig.status(sale, &e.2).await?;
        // Spread and a fresh signature differ per call.
        for volatile in ["retry_after_ms", "pass"] {
            body[volatile] = Value::Null;
        }
        out.push(body);
    }
    let (_, mut draw) = rig
        .get(format!("{}/w/{sale}/draw", rig.waitroom), None)
        .await?;
    draw["state"] = Value::Null;
    Ok((out, draw, rig.winners(sale).await?))
}

/// The winners are ranks 1..M, in order.
fn assert_prefix(winners: &[(u64, u64, String)]) -> anyhow::Result<()> {
    for (i, (rank, _, _)) in winners.iter().enumerate() {
        anyhow::ensure!(
            *rank == i as u64 + 1,
            "winners are not ranks 1..M: {winners:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclaimed_and_cancelled_wins_pass_to_the_next_ranks_in_order() -> anyhow::Result<()> {
    let rig = Rig::start(&[]).await?;
    let pool = rig.mysql()?.clone();
    let sale = dropline_testkit::draw::sale_with(
        &pool,
        rig.redis()?,
        &Options {
            stock: 5,
            close_in: chrono::Duration::seconds(2),
            claim_seconds: 5,
            ..Options::default()
        },
        &Door::default(),
    )
    .await?;
    let users = dropline_testkit::draw::accounts(&pool, 20, true).await?;
    let entered = rig.enter(sale, &users).await?;
    let ranked = by_rank(&rig, sale, &entered).await?;

    // Ranks 1-5 win; 6.. wait with their place.
    let mut passes = Vec::new();
    for e in &ranked[..5] {
        passes.push(pass_of(&rig, sale, &e.2).await?);
    }
    let promoted_at = Instant::now();
    for (i, (status, _)) in passes.iter().enumerate() {
        assert_eq!(status["max_quantity"], json!(1), "{status}");
        assert_eq!(status["rank"], json!(i + 1));
    }
    let sixth = rig.status(sale, &ranked[5].2).await?;
    assert_eq!(sixth["state"], json!("waitlisted"), "{sixth}");
    assert_eq!(sixth["position"], json!(1), "{sixth}");
    assert_eq!(rig.promoted(sale).await?, 5);

    // A waitlisted entrant has no pass; a pass of another buyer is not theirs.
    let (status, body) = rig
        .order(sale, &ranked[5].1, &passes[0].1, 1, "steal")
        .await?;
    assert!(status.is_client_error(), "{status} {body}");

    // 3 cancels, 4 and 5 pay; 1 and 2 do nothing.
    let (status, body) = rig.order(sale, &ranked[2].1, &passes[2].1, 1, "k3").await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let order3 = body["id"].as_str().context("order id")?.to_owned();
    assert_eq!(rig.cancel(&ranked[2].1, &order3).await?, StatusCode::OK);
    let mut paid = Vec::new();
    for r in [3, 4] {
        let (status, body) = rig.order(sale, &ranked[r].1, &passes[r].1, 1, "k").await?;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let order = body["id"].as_str().context("order id")?.to_owned();
        assert_eq!(rig.pay(&ranked[r].1, &order).await?, StatusCode::ACCEPTED);
        paid.push(order);
    }
    // One order per win: a second order of rank 4 is refused.
    let (status, body) = rig
        .order(sale, &ranked[3].1, &passes[3].1, 1, "again")
        .await?;
    dropline_testkit::assert_error(status, &body, StatusCode::FORBIDDEN, "not_admitted");

    // The cancelled win passes to 6 at once; 1 and 2 lapse at 5 s and pass to 7 and 8. Each new
    // winner orders as soon as it sees its win (6 pays, 7 and 8 hold), so nothing more lapses
    // and exactly three more ranks are promoted.
    let mut samples = 0;
    let mut sixth_at = None;
    let mut acted = [false; 3];
    loop {
        let winners = rig.winners(sale).await?;
        assert_prefix(&winners)?;
        samples += 1;
        let promoted = rig.promoted(sale).await?;
        if promoted >= 6 && sixth_at.is_none() {
            sixth_at = Some(promoted_at.elapsed());
        }
        for (i, done) in acted.iter_mut().enumerate() {
            let rank = 6 + i;
            if *done || promoted < rank as u64 {
                continue;
            }
            let e = &ranked[rank - 1];
            let (_, pass) = pass_of(&rig, sale, &e.2).await?;
            let (status, body) = rig.order(sale, &e.1, &pass, 1, "k").await?;
            assert_eq!(status, StatusCode::CREATED, "rank {rank}: {body}");
            if rank == 6 {
                let order = body["id"].as_str().context("order id")?;
                assert_eq!(rig.pay(&e.1, order).await?, StatusCode::ACCEPTED);
            }
            *done = true;
        }
        if acted.iter().all(|a| *a) && winners.len() >= 8 {
            break;
        }
        assert!(
            promoted_at.elapsed() < Duration::from_secs(7) + Duration::from_millis(500),
            "ranks 6-8 not promoted within 7 s: promoted {promoted}, winners {winners:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(samples > 1);
    assert!(
        sixth_at.is_some_and(|at| at < Duration::from_secs(4)),
        "the cancelled win passed on only at {sixth_at:?}"
    );

    // Where everyone stands.
    let expect = [
        "forfeited",
        "forfeited",
        "forfeited",
        "claimed",
        "claimed",
        "claimed",
        "claiming",
        "claiming",
    ];
    let settled = dropline_testkit::eventually(Duration::from_secs(20), || async {
        let winners = rig.winners(sale).await.unwrap_or_default();
        winners.iter().map(|w| w.2.as_str()).eq(expect)
    })
    .await;
    assert!(settled, "winners: {:?}", rig.winners(sale).await?);
    assert_eq!(rig.promoted(sale).await?, 8, "exactly three more promoted");
    for (i, outcome) in expect.iter().enumerate() {
        let state = if *outcome == "claiming" {
            "won"
        } else {
            outcome
        };
        let body = rig.status(sale, &ranked[i].2).await?;
        assert_eq!(body["state"], json!(state), "rank {}: {body}", i + 1);
        assert_eq!(body["pass"].is_string(), state == "won", "{body}");
    }
    for (i, e) in ranked.iter().enumerate().skip(8) {
        let body = rig.status(sale, &e.2).await?;
        assert_eq!(body["state"], json!("waitlisted"), "{body}");
        assert_eq!(body["position"], json!(i + 1 - 8), "{body}");
    }
    // A lapsed winner's pass no longer orders.
    let (status, body) = rig
        .order(sale, &ranked[0].1, &passes[0].1, 1, "late")
        .await?;
    assert!(status.is_client_error(), "{status} {body}");
    // MySQL has every win as the list shows it; the leader mailed the eight winners.
    let (won,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM draw_entries WHERE sale_id = ? AND won_at IS NOT NULL",
    )
    .bind(sale)
    .fetch_one(&pool)
    .await?;
    assert_eq!(won, 8);
    let mailed = dropline_testkit::eventually(Duration::from_secs(20), || async {
        rig.sink.messages().len() >= 8
    })
    .await;
    assert!(mailed, "{} mails", rig.sink.messages().len());
    let first = rig.sink.messages()[0].text_body()?;
    assert!(first.contains(&format!("/w/{sale}")), "{first}");
    rig.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wins_share_the_stock_and_what_a_winner_leaves_passes_on_and_survives_rearm()
-> anyhow::Result<()> {
    let rig = Rig::start(&[]).await?;
    let pool = rig.mysql()?.clone();
    let redis = rig.redis()?.clone();
    let sale = dropline_testkit::draw::sale_with(
        &pool,
        &redis,
        &Options {
            stock: 10,
            per_user_limit: 3,
            close_in: chrono::Duration::seconds(2),
            ..Options::default()
        },
        &Door::default(),
    )
    .await?;
    let users = dropline_testkit::draw::accounts(&pool, 8, true).await?;
    let entered = rig.enter(sale, &users).await?;
    let ranked = by_rank(&rig, sale, &entered).await?;
    let mut passes = Vec::new();
    for e in &ranked[..4] {
        passes.push(pass_of(&rig, sale, &e.2).await?);
    }
    let maxes: Vec<&Value> = passes.iter().map(|(s, _)| &s["max_quantity"]).collect();
    assert_eq!(maxes, [&json!(3), &json!(3), &json!(3), &json!(1)]);
    assert_eq!(rig.promoted(sale).await?, 4);

    // Above the win's quantity: 409 limit_exceeded, nothing taken.
    let (status, body) = rig.order(sale, &ranked[3].1, &passes[3].1, 2, "k").await?;
    dropline_testkit::assert_error(status, &body, StatusCode::CONFLICT, "limit_exceeded");
    // Rank 1 buys 1 of 3: the 2 left pass to rank 5.
    let (status, body) = rig.order(sale, &ranked[0].1, &passes[0].1, 1, "k").await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let order = body["id"].as_str().context("order id")?.to_owned();
    let (fifth, _) = pass_of(&rig, sale, &ranked[4].2).await?;
    assert_eq!(fifth["max_quantity"], json!(2), "{fifth}");
    assert_eq!(rig.pay(&ranked[0].1, &order).await?, StatusCode::ACCEPTED);
    let claimed = dropline_testkit::eventually(Duration::from_secs(20), || async {
        rig.status(sale, &ranked[0].2)
            .await
            .is_ok_and(|s| s["state"] == json!("claimed"))
    })
    .await;
    assert!(claimed);
    // Everything the leader has to record is in MySQL before the snapshot.
    let recorded = dropline_testkit::eventually(Duration::from_secs(10), || async {
        let winners = rig.winners(sale).await.unwrap_or_default();
        winners.len() == 5 && winners[0].2 == "claimed"
    })
    .await;
    assert!(recorded, "{:?}", rig.winners(sale).await?);

    // Redis loses the sale; `sale rearm` rebuilds it from MySQL with the same statuses and
    // public draw.
    let before = snapshot(&rig, sale, &ranked).await?;
    let keys =
        dropline_testkit::scan_keys(&redis, &format!("{}*", redis.sale_key(sale, ""))).await?;
    dropline_testkit::delete_keys(&redis, keys).await?;
    let report = dropline_ops::rearm::rearm(&pool, &redis, sale, false).await?;
    assert_eq!(report.wins, 5);
    // The records are cached for a second.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let after = snapshot(&rig, sale, &ranked).await?;
    assert_eq!(before.0, after.0, "statuses");
    assert_eq!(before.1, after.1, "the public draw");
    assert_eq!(before.2, after.2, "the winners");
    assert_eq!(rig.promoted(sale).await?, 5, "nothing promoted twice");

    // The open wins go on: rank 2 buys all 3 and pays.
    let (status, body) = rig.order(sale, &ranked[1].1, &passes[1].1, 3, "k").await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let order = body["id"].as_str().context("order id")?.to_owned();
    assert_eq!(rig.pay(&ranked[1].1, &order).await?, StatusCode::ACCEPTED);
    let claimed = dropline_testkit::eventually(Duration::from_secs(20), || async {
        rig.status(sale, &ranked[1].2)
            .await
            .is_ok_and(|s| s["state"] == json!("claimed"))
    })
    .await;
    assert!(claimed);
    let audited = dropline_testkit::eventually(Duration::from_secs(20), || async {
        dropline_audit::audit(
            &pool,
            &redis,
            sale,
            dropline_audit::AuditOptions {
                settled: true,
                max_scans: 3,
                scan_count: 1000,
            },
        )
        .await
        .is_ok_and(|r| r.ok)
    })
    .await;
    let report = dropline_audit::audit(
        &pool,
        &redis,
        sale,
        dropline_audit::AuditOptions {
            settled: true,
            max_scans: 3,
            scan_count: 1000,
        },
    )
    .await?;
    assert!(audited, "{report:#?}");
    rig.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_entrants_for_ten_units_all_winners_pay_and_everyone_is_told()
-> anyhow::Result<()> {
    const ENTRANTS: usize = 1_000;
    let rig = Rig::start(&[("MYSQL__MAX_CONNECTIONS", "30")]).await?;
    let pool = rig.mysql()?.clone();
    let sale = dropline_testkit::draw::sale_with(
        &pool,
        rig.redis()?,
        &Options {
            stock: 10,
            close_in: chrono::Duration::seconds(300),
            ..Options::default()
        },
        &Door::default(),
    )
    .await?;
    let users = dropline_testkit::draw::accounts(&pool, ENTRANTS, true).await?;
    let entered = rig.enter(sale, &users).await?;
    close_entries_soon(&pool, rig.redis()?, sale).await?;
    let ranked = by_rank(&rig, sale, &entered).await?;
    let mut orders: HashMap<UserId, OrderId> = HashMap::new();
    for e in &ranked[..10] {
        let (_, pass) = pass_of(&rig, sale, &e.2).await?;
        let (status, body) = rig.order(sale, &e.1, &pass, 1, "k").await?;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let order = body["id"].as_str().context("order id")?.to_owned();
        assert_eq!(rig.pay(&e.1, &order).await?, StatusCode::ACCEPTED);
        orders.insert(e.0, OrderId::parse_str(&order)?);
    }
    let states = |want: &'static str, range: std::ops::Range<usize>| {
        let ranked = &ranked;
        let rig = &rig;
        async move {
            for e in &ranked[range] {
                let body = rig.status(sale, &e.2).await?;
                anyhow::ensure!(body["state"] == json!(want), "{body}");
            }
            Ok::<_, anyhow::Error>(())
        }
    };
    // Before the end: the rest wait in rank order.
    let tenth_plus = rig.status(sale, &ranked[10].2).await?;
    assert!(
        tenth_plus["state"] == json!("waitlisted") || tenth_plus["state"] == json!("not_won"),
        "{tenth_plus}"
    );
    let sold_out = dropline_testkit::eventually(Duration::from_secs(30), || async {
        rig.get(format!("{}/api/sales/{sale}", rig.api), None)
            .await
            .is_ok_and(|(_, s)| s["state"] == json!("sold_out"))
    })
    .await;
    assert!(sold_out);
    let over = dropline_testkit::eventually(Duration::from_secs(30), || async {
        states("claimed", 0..10).await.is_ok()
    })
    .await;
    assert!(over, "{:?}", states("claimed", 0..10).await);
    states("not_won", 10..ENTRANTS).await?;
    let (paid,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM orders WHERE sale_id = ? AND status = 'paid'")
            .bind(sale)
            .fetch_one(&pool)
            .await?;
    assert_eq!(paid, 10);
    let (_, record) = rig
        .get(format!("{}/api/sales/{sale}", rig.api), None)
        .await?;
    assert_eq!(record["draw"]["promoted"], json!(10), "{record}");
    assert_eq!(record["draw"]["entry_count"], json!(ENTRANTS), "{record}");

    // 1,000 mails: 10 won, 990 not drawn, each once.
    let mailed = dropline_testkit::eventually(Duration::from_secs(120), || async {
        rig.sink.messages().len() >= ENTRANTS
    })
    .await;
    let mails = rig.sink.messages();
    assert!(mailed, "{} mails", mails.len());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mails = rig.sink.messages();
    let mut to: HashMap<String, Vec<String>> = HashMap::new();
    let mut bodies = Vec::with_capacity(mails.len());
    for mail in &mails {
        let body = mail.text_body()?;
        for r in &mail.recipients {
            to.entry(r.clone()).or_default().push(body.clone());
        }
        bodies.push(body);
    }
    // Order confirmations come too: count the draw's own mails.
    let won = bodies
        .iter()
        .filter(|b| b.contains("You were drawn"))
        .count();
    let not_won = bodies
        .iter()
        .filter(|b| b.contains("not drawn this time"))
        .count();
    assert_eq!((won, not_won), (10, 990));
    for e in &ranked[10..] {
        let address = format!("{}@example.test", e.0);
        let bodies = to.get(&address).cloned().unwrap_or_default();
        assert_eq!(bodies.len(), 1, "{address}: {bodies:?}");
    }
    assert_eq!(orders.len(), 10);
    rig.stop().await
}
