//! Entering a draw sale (design/draw.md "Entering") over real HTTP against the machine's real
//! Redis and MariaDB: one entry per account committed to MySQL before the answer, rejoining
//! and withdrawing, the errors of draw.md's table, proof of work on entries, an entry that
//! survives the loss of Redis's index, 5,000 concurrent entrants, the freeze's digest, and the
//! waiting room without MySQL. Each test runs its own waitroom on a free port with its own key
//! prefix and database.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dropline_core::ids::{SaleId, UserId};
use dropline_core::sale::draw::DrawSettings;
use dropline_core::sale::{self, Door, SaleConfig, SettingsUpdate, entries};
use dropline_testkit::assert_error;
use dropline_waitroom::pow;
use fred::prelude::*;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

mod common;

use common::Server;

/// A draw sale of 10 units (testkit::draw::sale).
async fn draw_sale(
    server: &Server,
    opens_in: chrono::Duration,
    close_in: chrono::Duration,
    door: &Door,
) -> anyhow::Result<SaleId> {
    dropline_testkit::draw::sale(
        server.deps.mysql()?,
        server.redis()?,
        10,
        opens_in,
        close_in,
        door,
        None,
    )
    .await
}

/// An open draw sale taking entries for an hour.
async fn entering_sale(server: &Server) -> anyhow::Result<SaleId> {
    draw_sale(
        server,
        chrono::Duration::seconds(-1),
        chrono::Duration::hours(1),
        &Door::default(),
    )
    .await
}

async fn accounts(server: &Server, n: usize, verified: bool) -> anyhow::Result<Vec<UserId>> {
    dropline_testkit::draw::accounts(server.deps.mysql()?, n, verified).await
}

impl Server {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let body = body.map_or(common::Body::None, common::Body::Json);
        self.send(method, path, bearer, body).await
    }

    async fn enter(&self, sale: SaleId, user: UserId) -> anyhow::Result<(StatusCode, Value)> {
        self.enter_with(sale, user, None).await
    }

    async fn enter_with(
        &self,
        sale: SaleId,
        user: UserId,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let token = self.token(user)?;
        self.call(
            reqwest::Method::POST,
            &format!("/w/{sale}/join"),
            Some(&token),
            body,
        )
        .await
    }

    async fn entry_status(
        &self,
        sale: SaleId,
        ticket: &str,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.call(
            reqwest::Method::GET,
            &format!("/w/{sale}/status"),
            Some(ticket),
            None,
        )
        .await
    }

    async fn withdraw(&self, sale: SaleId, ticket: &str) -> anyhow::Result<(StatusCode, Value)> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/w/{sale}/join"),
            Some(ticket),
            None,
        )
        .await
    }

    async fn public_draw(&self, sale: SaleId) -> anyhow::Result<(StatusCode, Value)> {
        self.call(reqwest::Method::GET, &format!("/w/{sale}/draw"), None, None)
            .await
    }

    async fn entry_rows(&self, sale: SaleId) -> anyhow::Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM draw_entries WHERE sale_id = ?")
            .bind(sale)
            .fetch_one(self.deps.mysql()?)
            .await?;
        Ok(n)
    }
}

fn text<'a>(body: &'a Value, field: &str) -> anyhow::Result<&'a str> {
    body[field]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no `{field}` in {body}"))
}

fn ms(body: &Value) -> u64 {
    body["retry_after_ms"].as_u64().unwrap_or(u64::MAX)
}

#[tokio::test]
async fn an_entrant_enters_once_rejoins_withdraws_and_comes_back_with_the_same_entry()
-> anyhow::Result<()> {
    let server = Server::launch_with_mysql(&[]).await?;
    let sale = entering_sale(&server).await?;
    let [user] = accounts(&server, 1, true).await?[..] else {
        anyhow::bail!("one account")
    };

    let (status, body) = server.enter(sale, user).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], json!("entered"));
    let entry = text(&body, "entry_id")?.to_owned();
    assert_eq!(entry.len(), 32);
    assert!(entry.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
    assert_eq!(body["position"], Value::Null);
    assert_eq!(body["eta_seconds"], Value::Null);
    assert!((1_000..=300_000).contains(&ms(&body)), "{body}");
    let close: DateTime<Utc> = text(&body, "entries_close_at")?.parse()?;
    assert!(close > Utc::now() + chrono::Duration::minutes(59));
    let ticket = text(&body, "ticket")?.to_owned();
    // Committed to MySQL before the answer.
    let stored = entries::find(server.deps.mysql()?, sale, user).await?;
    assert_eq!(
        stored.map(|e| (hex::encode(e.id), e.withdrawn)),
        Some((entry.clone(), false))
    );

    // Rejoining answers the same entry.
    let (status, again) = server.enter(sale, user).await?;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["entry_id"], json!(entry));

    let (status, polled) = server.entry_status(sale, &ticket).await?;
    assert_eq!(status, StatusCode::OK, "{polled}");
    assert_eq!(polled["state"], json!("entered"));
    assert_eq!(polled["entry_id"], json!(entry));
    assert_eq!(polled["rank"], Value::Null);
    assert_eq!(polled["pass"], Value::Null);
    assert!((1_000..=300_000).contains(&ms(&polled)), "{polled}");

    // Withdrawing, twice: 204 both times; then the poll finds no entry.
    for _ in 0..2 {
        let (status, body) = server.withdraw(sale, &ticket).await?;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    let (status, body) = server.entry_status(sale, &ticket).await?;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let stored = entries::find(server.deps.mysql()?, sale, user).await?;
    assert_eq!(stored.map(|e| e.withdrawn), Some(true));

    // Back again: the same entry id, live.
    let (status, back) = server.enter(sale, user).await?;
    assert_eq!(status, StatusCode::OK, "{back}");
    assert_eq!(back["entry_id"], json!(entry));
    assert_eq!(server.entry_rows(sale).await?, 1);
    let stored = entries::find(server.deps.mysql()?, sale, user).await?;
    assert_eq!(stored.map(|e| e.withdrawn), Some(false));
    server.stop().await
}

#[tokio::test]
async fn five_thousand_concurrent_entrants_make_five_thousand_entries() -> anyhow::Result<()> {
    const N: usize = 5_000;
    let server = Server::launch_with_mysql(&[
        ("WAITROOM__JOIN_PER_IP_PER_MINUTE", "1000000"),
        ("MYSQL__MAX_CONNECTIONS", "16"),
    ])
    .await?;
    let sale = entering_sale(&server).await?;
    let users = accounts(&server, N, true).await?;
    // Each account joins twice at once: 10,000 calls, 5,000 entries.
    let calls = users.iter().chain(users.iter()).copied();
    let answers: Vec<anyhow::Result<(StatusCode, Value)>> = futures_util::stream::iter(calls)
        .map(|user| {
            let server = &server;
            async move { server.enter(sale, user).await }
        })
        .buffer_unordered(128)
        .collect()
        .await;
    let mut ids = HashSet::new();
    for answer in answers {
        let (status, body) = answer?;
        assert_eq!(status, StatusCode::OK, "{body}");
        ids.insert(text(&body, "entry_id")?.to_owned());
    }
    assert_eq!(ids.len(), N);
    assert_eq!(server.entry_rows(sale).await?, N as i64);
    let indexed: u64 = server
        .redis()?
        .pool()
        .hlen(server.redis()?.sale_key(sale, "ent"))
        .await?;
    assert_eq!(indexed, N as u64);
    server.stop().await
}

#[tokio::test]
async fn draw_errors_answer_as_the_table_says() -> anyhow::Result<()> {
    let server = Server::launch_with_mysql(&[]).await?;
    let users = accounts(&server, 4, true).await?;
    let [unverified] = accounts(&server, 1, false).await?[..] else {
        anyhow::bail!("one account")
    };

    // Before opens_at: 409 sale_not_open.
    let later = draw_sale(
        &server,
        chrono::Duration::hours(1),
        chrono::Duration::hours(2),
        &Door::default(),
    )
    .await?;
    let (status, body) = server.enter(later, users[0]).await?;
    assert_error(status, &body, StatusCode::CONFLICT, "sale_not_open");

    // An account without a verified address: 403, and nothing stored.
    let sale = entering_sale(&server).await?;
    let (status, body) = server.enter(sale, unverified).await?;
    assert_error(status, &body, StatusCode::FORBIDDEN, "email_not_verified");
    assert_eq!(server.entry_rows(sale).await?, 0);

    // Paused: a new entrant 409 sale_not_open, an existing one their standing.
    let (status, entered) = server.enter(sale, users[0]).await?;
    assert_eq!(status, StatusCode::OK, "{entered}");
    let update = SettingsUpdate {
        paused: Some(true),
        ..SettingsUpdate::default()
    };
    anyhow::ensure!(sale::update_settings(server.redis()?, sale, &update).await?);
    let (status, body) = server.enter(sale, users[1]).await?;
    assert_error(status, &body, StatusCode::CONFLICT, "sale_not_open");
    let (status, body) = server.enter(sale, users[0]).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["entry_id"], entered["entry_id"]);
    let resume = SettingsUpdate {
        paused: Some(false),
        ..SettingsUpdate::default()
    };
    anyhow::ensure!(sale::update_settings(server.redis()?, sale, &resume).await?);

    // The fcfs sale has no draw: 404; an unknown sale too.
    let fcfs = SaleId::new_v7();
    sale::arm(server.redis()?, fcfs, &common::open_sale()).await?;
    let (status, body) = server.public_draw(fcfs).await?;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = server.public_draw(SaleId::new_v7()).await?;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");

    // Entries closing in a second: after it, a new join is 409 entries_closed, an entrant's
    // join still answers their entry (for mail links), and withdrawing after the freeze is 409.
    let closing = draw_sale(
        &server,
        chrono::Duration::seconds(-1),
        chrono::Duration::milliseconds(1_500),
        &Door::default(),
    )
    .await?;
    let (status, early) = server.enter(closing, users[2]).await?;
    assert_eq!(status, StatusCode::OK, "{early}");
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    let (status, body) = server.enter(closing, users[3]).await?;
    assert_error(status, &body, StatusCode::CONFLICT, "entries_closed");
    let (status, body) = server.enter(closing, users[2]).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["entry_id"], early["entry_id"]);
    assert!(ms(&body) <= 30_000, "{body}");
    let frozen = entries::freeze(server.deps.mysql()?, closing, Utc::now()).await?;
    assert_eq!(frozen.map(|f| f.entry_count), Some(1));
    let (status, body) = server.withdraw(closing, text(&early, "ticket")?).await?;
    assert_error(status, &body, StatusCode::CONFLICT, "entries_closed");
    // Even a join whose Redis clock check is fooled meets the frozen list in MySQL.
    let outcome = entries::enter(
        server.deps.mysql()?,
        closing,
        users[3],
        Utc::now() - chrono::Duration::seconds(10),
    )
    .await?;
    assert_eq!(outcome, entries::Entered::Closed);
    server.stop().await
}

#[tokio::test]
async fn an_entry_survives_the_loss_of_its_redis_index() -> anyhow::Result<()> {
    let server = Server::launch_with_mysql(&[]).await?;
    let sale = entering_sale(&server).await?;
    let [user] = accounts(&server, 1, true).await?[..] else {
        anyhow::bail!("one account")
    };
    let (status, body) = server.enter(sale, user).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ticket = text(&body, "ticket")?.to_owned();
    let ent = server.redis()?.sale_key(sale, "ent");
    let _: i64 = server.redis()?.pool().del(&ent).await?;

    let (status, polled) = server.entry_status(sale, &ticket).await?;
    assert_eq!(status, StatusCode::OK, "{polled}");
    assert_eq!(polled["entry_id"], body["entry_id"]);
    assert_eq!(polled["state"], json!("entered"));
    // Written back: the next poll needs no MySQL.
    let indexed: u64 = server.redis()?.pool().hlen(&ent).await?;
    assert_eq!(indexed, 1);

    let _: i64 = server.redis()?.pool().del(&ent).await?;
    let (status, again) = server.enter(sale, user).await?;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["entry_id"], body["entry_id"]);
    assert_eq!(server.entry_rows(sale).await?, 1);
    server.stop().await
}

#[tokio::test]
async fn a_draw_asking_proof_of_work_takes_each_challenge_once() -> anyhow::Result<()> {
    let server = Server::launch_with_mysql(&[]).await?;
    let door = Door {
        pow_difficulty: 8,
        ..Door::default()
    };
    let sale = draw_sale(
        &server,
        chrono::Duration::seconds(-1),
        chrono::Duration::hours(1),
        &door,
    )
    .await?;
    let users = accounts(&server, 2, true).await?;
    let (status, body) = server.enter(sale, users[0]).await?;
    assert_error(status, &body, StatusCode::FORBIDDEN, "pow_required");
    let (status, body) = server
        .enter_with(sale, users[0], Some(json!({"challenge": "x", "nonce": 1})))
        .await?;
    assert_error(status, &body, StatusCode::FORBIDDEN, "pow_invalid");
    assert_eq!(server.entry_rows(sale).await?, 0);

    let token = server.token(users[0])?;
    let (status, challenge) = server
        .call(
            reqwest::Method::GET,
            &format!("/w/{sale}/challenge"),
            Some(&token),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{challenge}");
    let text_challenge = text(&challenge, "challenge")?.to_owned();
    let nonce = pow::solve(&text_challenge, 8).ok_or_else(|| anyhow::anyhow!("no nonce"))?;
    let proof = json!({"challenge": text_challenge, "nonce": nonce});
    let (status, body) = server
        .enter_with(sale, users[0], Some(proof.clone()))
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The entrant's own rejoin needs nothing; the spent challenge serves nobody else.
    let (status, _) = server.enter(sale, users[0]).await?;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server.enter_with(sale, users[1], Some(proof)).await?;
    assert_error(status, &body, StatusCode::FORBIDDEN, "pow_invalid");
    server.stop().await
}

#[tokio::test]
async fn the_public_draw_shows_the_commitment_and_then_the_frozen_list() -> anyhow::Result<()> {
    let server = Server::launch_with_mysql(&[]).await?;
    let sale = draw_sale(
        &server,
        chrono::Duration::seconds(-1),
        chrono::Duration::milliseconds(1_500),
        &Door::default(),
    )
    .await?;
    let users = accounts(&server, 3, true).await?;
    let mut ids = Vec::new();
    for user in &users {
        let (status, body) = server.enter(sale, *user).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        let mut id = [0u8; 16];
        hex::decode_to_slice(text(&body, "entry_id")?, &mut id)?;
        ids.push(id);
    }
    // One withdraws: not in the list.
    let (_, last) = server.enter(sale, users[2]).await?;
    let (status, _) = server.withdraw(sale, text(&last, "ticket")?).await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    ids.pop();

    let (status, record) = server.public_draw(sale).await?;
    assert_eq!(status, StatusCode::OK, "{record}");
    assert_eq!(record["algorithm"], json!("dropline-draw-v1"));
    assert_eq!(record["state"], json!("entering"));
    assert_eq!(record["entry_count"], Value::Null);
    assert_eq!(record["seed"], Value::Null);
    let (seed,): (Vec<u8>,) = sqlx::query_as("SELECT seed FROM draws WHERE sale_id = ?")
        .bind(sale)
        .fetch_one(server.deps.mysql()?)
        .await?;
    assert_eq!(
        record["seed_commitment"],
        json!(hex::encode(Sha256::digest(&seed)))
    );

    tokio::time::sleep(Duration::from_millis(1_700)).await;
    entries::freeze(server.deps.mysql()?, sale, Utc::now()).await?;
    // Served from memory for at most a second.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (status, record) = server.public_draw(sale).await?;
    assert_eq!(status, StatusCode::OK, "{record}");
    assert_eq!(record["state"], json!("drawing"));
    assert_eq!(record["entry_count"], json!(2));
    ids.sort_unstable();
    let mut digest = Sha256::new();
    for id in &ids {
        digest.update(id);
    }
    assert_eq!(
        record["entries_digest"],
        json!(hex::encode(digest.finalize()))
    );
    assert_eq!(
        record["seed"],
        Value::Null,
        "the seed stays secret until the reveal"
    );

    // The frozen list, and cursors that are not one: 400 in the contract's shape.
    let (status, page) = server
        .call(
            reqwest::Method::GET,
            &format!("/w/{sale}/draw/entries"),
            None,
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["next_cursor"], Value::Null);
    let upper = "A".repeat(32);
    let long = "0".repeat(33);
    for bad in ["xyz", upper.as_str(), "%00", long.as_str()] {
        let (status, body) = server
            .call(
                reqwest::Method::GET,
                &format!("/w/{sale}/draw/entries?cursor={bad}"),
                None,
                None,
            )
            .await?;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    }
    server.stop().await
}

#[tokio::test]
async fn without_mysql_the_line_runs_and_a_draw_entry_is_503() -> anyhow::Result<()> {
    // A MySQL URL nobody answers on: the waitroom starts anyway (its pool connects lazily).
    let port = dropline_testkit::redis_server::free_port()?;
    let url = format!("mysql://root@127.0.0.1:{port}/dl_nowhere");
    let server = Server::launch(&[("MYSQL__URL", url.as_str())]).await?;
    let fcfs = SaleId::new_v7();
    sale::arm(server.redis()?, fcfs, &common::open_sale()).await?;
    let (status, body) = server.enter(fcfs, UserId::new_v7()).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], json!("waiting"));

    // A draw sale armed in Redis only (its MySQL is down).
    let draw_id = SaleId::new_v7();
    let settings = DrawSettings {
        entries_close_at: Utc::now() + chrono::Duration::hours(1),
        claim_seconds: 1800,
    };
    let config = SaleConfig {
        opens_at: Utc::now() - chrono::Duration::seconds(1),
        ..common::open_sale()
    };
    sale::arm_full(
        server.redis()?,
        draw_id,
        &config,
        &Door::default(),
        Some(&settings),
        0,
        0,
    )
    .await?;
    let started = std::time::Instant::now();
    let (status, body) = server.enter(draw_id, UserId::new_v7()).await?;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    assert!(started.elapsed() < Duration::from_secs(7));
    // The cleanup cannot drop a database on a server that is not there; the Redis keys go.
    if let Err(error) = server.stop().await {
        anyhow::ensure!(
            format!("{error:#}").contains("mysql:") && !format!("{error:#}").contains("redis:"),
            "{error:#}"
        );
    }
    Ok(())
}
