//! A draw from entries to the published ranking (design/draw.md, #23), through the real
//! waitroom and the draw leader (`dropline worker draw`) against the machine's Redis and
//! MariaDB: entrants enter and some withdraw, the leader freezes the list at
//! `entries_close_at`, reveals the seed after the delay and ranks; `scripts/draw-verify` (plain
//! Python) recomputes commitment, digest, count and ranking from the public endpoints, and
//! every entrant's status shows the rank it printed. The leader's steps are idempotent (run
//! again, they change nothing), and the ranking comes back after Redis loses it (from the leader,
//! or from `sale rearm`).

#[path = "../waitroom/tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::Server;
use dropline_core::ids::{SaleId, UserId};
use dropline_core::sale::{Door, entries};
use dropline_workers::draw::{Step, advance};
use fred::prelude::*;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

async fn get(
    server: &Server,
    path: &str,
    bearer: Option<&str>,
) -> anyhow::Result<(StatusCode, Value)> {
    let mut request = server.http.get(format!("{}{path}", server.base));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// Enters every user; their tickets and entry ids.
async fn enter_all(
    server: &Server,
    sale: SaleId,
    users: &[UserId],
) -> anyhow::Result<Vec<(UserId, String, String)>> {
    let answers: Vec<anyhow::Result<(UserId, String, String)>> =
        futures_util::stream::iter(users.iter().copied())
            .map(|user| async move {
                let response = server
                    .http
                    .post(format!("{}/w/{sale}/join", server.base))
                    .bearer_auth(server.token(user)?)
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status() == StatusCode::OK,
                    "join: {}",
                    response.status()
                );
                let body: Value = response.json().await?;
                let field = |name: &str| -> anyhow::Result<String> {
                    Ok(body[name]
                        .as_str()
                        .ok_or_else(|| anyhow::anyhow!("no {name} in {body}"))?
                        .to_owned())
                };
                Ok((user, field("ticket")?, field("entry_id")?))
            })
            .buffer_unordered(32)
            .collect()
            .await;
    answers.into_iter().collect()
}

/// `scripts/draw-verify`'s ranking: entry id → rank.
async fn verify(base: &str, sale: SaleId) -> anyhow::Result<HashMap<String, u64>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/draw-verify");
    let base = base.to_owned();
    // Off the runtime's thread: the server under test answers the script on it.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args([script, &base, &sale.to_string()])
            .output()
    })
    .await??;
    anyhow::ensure!(
        out.status.success(),
        "draw-verify: {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ranks = HashMap::new();
    for line in String::from_utf8(out.stdout)?.lines() {
        // `<rank> <entry>`, and a win's max_quantity and outcome after them.
        let mut words = line.split_whitespace();
        let (Some(rank), Some(entry)) = (words.next(), words.next()) else {
            anyhow::bail!("draw-verify printed {line:?}");
        };
        ranks.insert(entry.to_owned(), rank.parse()?);
    }
    Ok(ranks)
}

#[tokio::test]
async fn the_leader_freezes_reveals_and_ranks_and_anyone_can_recompute_it() -> anyhow::Result<()> {
    const ENTRANTS: usize = 300;
    let server = Server::launch_with_mysql(&[
        ("DRAW__TICK_MS", "100"),
        ("DRAW__REVEAL_DELAY_SECONDS", "1"),
        ("WAITROOM__JOIN_PER_IP_PER_MINUTE", "100000"),
        ("WAITROOM__STATUS_PER_IP_PER_MINUTE", "100000"),
        ("MYSQL__MAX_CONNECTIONS", "10"),
    ])
    .await?;
    let pool = server.deps.mysql()?.clone();
    let redis = server.redis()?.clone();
    let sale = dropline_testkit::draw::sale(
        &pool,
        &redis,
        10,
        chrono::Duration::seconds(-1),
        chrono::Duration::seconds(4),
        &Door::default(),
        None,
    )
    .await?;
    let users = dropline_testkit::draw::accounts(&pool, ENTRANTS, true).await?;
    let entered = enter_all(&server, sale, &users).await?;
    // Five withdraw before the close.
    for (_, ticket, _) in &entered[..5] {
        let response = server
            .http
            .delete(format!("{}/w/{sale}/join", server.base))
            .bearer_auth(ticket)
            .send()
            .await?;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    let (status, body) = get(&server, &format!("/w/{sale}/draw/entries"), None).await?;
    dropline_testkit::assert_error(status, &body, StatusCode::CONFLICT, "invalid_state");

    // Paused, so the leader ranks but promotes nobody: this test looks at the ranking alone
    // (claims and backfill: tests/draw_claims.rs).
    let _: i64 = redis
        .pool()
        .hset(redis.sale_key(sale, "cfg"), ("paused", "1"))
        .await?;
    // The leader, as `dropline worker draw` runs it.
    let stop = CancellationToken::new();
    // The leader mails winners, so it needs the broker the waiting room does not.
    let leader_deps = dropline_core::clients::deps::Deps::connect(
        &server.config,
        dropline_core::clients::deps::Needs::ALL,
    )
    .await?;
    let leader = tokio::spawn({
        let config = server.config.clone();
        let deps = leader_deps.clone();
        let stop = stop.clone();
        async move { dropline_workers::draw::run(&config, &deps, stop).await }
    });
    let ranked = dropline_testkit::eventually(Duration::from_secs(20), || async {
        let ranked: Option<String> = redis
            .pool()
            .hget(redis.sale_key(sale, "drw"), "ranked")
            .await
            .ok()
            .flatten();
        ranked.is_some()
    })
    .await;
    stop.cancel();
    leader.await??;
    leader_deps.close().await;
    assert!(ranked, "the leader did not rank the draw within 20 s");

    let (status, record) = get(&server, &format!("/w/{sale}/draw"), None).await?;
    assert_eq!(status, StatusCode::OK, "{record}");
    assert_eq!(record["entry_count"], json!(ENTRANTS - 5));
    assert_eq!(record["state"], json!("paused"));
    assert!(record["seed"].is_string(), "{record}");
    assert!(record["drawn_at"].is_string(), "{record}");

    // Python recomputes it all from the public endpoints.
    let ranks = verify(&server.base, sale).await?;
    assert_eq!(ranks.len(), ENTRANTS - 5);
    let stored: Vec<(Vec<u8>, Option<u32>)> =
        sqlx::query_as("SELECT id, draw_rank FROM draw_entries WHERE sale_id = ?")
            .bind(sale)
            .fetch_all(&pool)
            .await?;
    for (id, rank) in &stored {
        assert_eq!(
            ranks.get(&hex::encode(id)).copied(),
            rank.map(u64::from),
            "entry {}",
            hex::encode(id)
        );
    }

    // Every entrant's status shows the rank the script printed; a withdrawn one has none.
    let check_statuses = || async {
        for (i, (_, ticket, entry)) in entered.iter().enumerate() {
            let (status, body) = get(&server, &format!("/w/{sale}/status"), Some(ticket)).await?;
            if i < 5 {
                anyhow::ensure!(
                    status == StatusCode::NOT_FOUND,
                    "withdrawn {i}: {status} {body}"
                );
                continue;
            }
            anyhow::ensure!(status == StatusCode::OK, "{status} {body}");
            let rank = ranks[entry];
            anyhow::ensure!(body["state"] == json!("waitlisted"), "{body}");
            anyhow::ensure!(body["rank"] == json!(rank), "{body} vs {rank}");
            anyhow::ensure!(body["position"] == json!(rank), "{body}");
        }
        Ok::<_, anyhow::Error>(())
    };
    check_statuses().await?;

    // A second leader finding everything done changes nothing; run on MySQL alone (Redis's
    // index gone), it indexes the same ranking again.
    let now = chrono::Utc::now();
    let delay = Duration::from_secs(1);
    assert_eq!(
        advance(&redis, &pool, sale, delay, now).await?,
        Step::Ranked
    );
    let frozen_again = entries::freeze(&pool, sale, now).await?;
    assert_eq!(
        frozen_again.map(|f| f.entry_count),
        Some((ENTRANTS - 5) as u32)
    );
    assert_eq!(
        entries::reveal(&pool, sale, now).await?,
        Some((ENTRANTS - 5) as u32)
    );
    for name in ["drw", "ent", "rk"] {
        let _: i64 = redis.pool().del(redis.sale_key(sale, name)).await?;
    }
    assert_eq!(
        advance(&redis, &pool, sale, delay, now).await?,
        Step::Indexed((ENTRANTS - 5) as u32)
    );
    check_statuses().await?;
    assert_eq!(verify(&server.base, sale).await?, ranks);

    // Redis loses the sale; `sale rearm` brings entries and ranking back from MySQL: every
    // status and the public draw as before, and nothing left for a leader to do.
    let report = dropline_ops::rearm::rearm(&pool, &redis, sale, true).await?;
    assert_eq!(report.entries, ENTRANTS as u64);
    assert_eq!(
        advance(&redis, &pool, sale, delay, now).await?,
        Step::Ranked
    );
    check_statuses().await?;
    assert_eq!(verify(&server.base, sale).await?, ranks);
    server.stop().await
}

/// draw.md Done-when 7: 200 draws with fixed seeds, 20 entrants, 1 unit: which entrant wins
/// is uniform (χ² with 19 degrees of freedom below 43.82, p = 0.001). Deterministic: the seeds
/// and ids are fixed, so this either always passes or always fails.
#[test]
fn winners_of_200_fixed_draws_are_uniform() {
    use dropline_core::sale::draw::{EntryId, rank};
    use sha2::{Digest, Sha256};
    let ids: Vec<EntryId> = (0u8..20)
        .map(|i| {
            let digest = Sha256::digest([b'e', i]);
            let mut id = [0u8; 16];
            id.copy_from_slice(&digest[..16]);
            id
        })
        .collect();
    let mut wins = [0u32; 20];
    for draw in 0u32..200 {
        let seed: [u8; 32] = Sha256::digest(draw.to_be_bytes()).into();
        let winner = rank(&seed, &ids)[0];
        let index = ids
            .iter()
            .position(|id| *id == winner)
            .unwrap_or(usize::MAX);
        wins[index] += 1;
    }
    let expected = 200.0 / 20.0;
    let chi2: f64 = wins
        .iter()
        .map(|&w| (f64::from(w) - expected).powi(2) / expected)
        .sum();
    assert!(chi2 < 43.82, "χ² = {chi2:.2} over {wins:?}");
}
