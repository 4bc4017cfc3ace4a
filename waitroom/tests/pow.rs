//! Proof of work at the join (door.md §1) over real HTTP against the machine's real Redis: the
//! challenge endpoint, the join's order of answers, single use, expiry, and what it costs Redis.
//! Each test runs its own waitroom server on a free port with its own key prefix ([`TestEnv`]).
//! A sale's difficulty is armed and changed as the api does it (`sale::arm_with` with its door
//! settings, `sale::update_settings` for a `PATCH`).
//!
//! One check solves with Python's `hashlib` (`python3` on the PATH): JSON clients follow the
//! byte rule, not our Rust.

use std::time::Duration;

use chrono::Utc;
use dropline_core::ids::{SaleId, UserId};
use dropline_core::sale::{self, Door, SettingsUpdate};
use dropline_testkit::assert_error;
use dropline_waitroom::pow;
use fred::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

mod common;

// One waitroom server and what a test needs around it (`common::Server`, with this file's
// calls below).
use common::{Body, Server as Edge};

impl Edge {
    async fn start(overrides: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::launch(overrides).await
    }

    /// An open sale asking for `difficulty` zero bits (0: none).
    async fn sale(&self, difficulty: u8) -> anyhow::Result<SaleId> {
        let id = SaleId::new_v7();
        let cfg = common::open_sale();
        let door = Door {
            pow_difficulty: difficulty,
            ..Door::default()
        };
        sale::arm_with(self.redis()?, id, &cfg, &door, 0, 0).await?;
        common::spread_as_asked(self.redis()?, id).await?;
        Ok(id)
    }

    /// What the api's `PATCH {"pow_difficulty"}` writes to Redis.
    async fn set_difficulty(&self, sale: SaleId, difficulty: u8) -> anyhow::Result<()> {
        let update = SettingsUpdate {
            pow_difficulty: Some(difficulty),
            ..SettingsUpdate::default()
        };
        anyhow::ensure!(
            sale::update_settings(self.redis()?, sale, &update).await?,
            "sale {sale} is not armed"
        );
        Ok(())
    }

    async fn join(
        &self,
        sale: SaleId,
        user: UserId,
        body: Body<'_>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.send(
            reqwest::Method::POST,
            &format!("/w/{sale}/join"),
            Some(&self.token(user)?),
            body,
        )
        .await
    }

    async fn challenge(&self, sale: SaleId, user: UserId) -> anyhow::Result<(StatusCode, Value)> {
        self.send(
            reqwest::Method::GET,
            &format!("/w/{sale}/challenge"),
            Some(&self.token(user)?),
            Body::None,
        )
        .await
    }

    /// A challenge for `user`, and the nonce that solves it (found in Rust).
    async fn solved(&self, sale: SaleId, user: UserId) -> anyhow::Result<(String, u64)> {
        let (status, body) = self.challenge(sale, user).await?;
        anyhow::ensure!(status == StatusCode::OK, "challenge: {status} {body}");
        let challenge = body["challenge"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no challenge in {body}"))?
            .to_owned();
        let difficulty = u8::try_from(body["difficulty"].as_u64().unwrap_or_default())?;
        let nonce = pow::solve(&challenge, difficulty)
            .ok_or_else(|| anyhow::anyhow!("no nonce for {challenge}"))?;
        Ok((challenge, nonce))
    }

    async fn leave(&self, sale: SaleId, ticket: &str) -> anyhow::Result<StatusCode> {
        let (status, _) = self
            .send(
                reqwest::Method::DELETE,
                &format!("/w/{sale}/join"),
                Some(ticket),
                Body::None,
            )
            .await?;
        Ok(status)
    }

    /// Every key under this test's prefix.
    async fn keys(&self, pattern: &str) -> anyhow::Result<Vec<String>> {
        let redis = self.redis()?;
        dropline_testkit::scan_keys(redis, &format!("{}:{pattern}", redis.prefix())).await
    }
}

fn proof(challenge: &str, nonce: u64) -> Body<'static> {
    Body::Json(json!({"challenge": challenge, "nonce": nonce}))
}

/// A join refused because its challenge was spent: 403 `pow_invalid`, saying so.
fn assert_already_used(status: StatusCode, answer: &Value) {
    assert_error(status, answer, StatusCode::FORBIDDEN, "pow_invalid");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("already used")),
        "{answer}"
    );
}

/// The nonce Python's hashlib finds for `challenge` at `difficulty` (≤ 32): the byte rule of
/// door.md §1 written by someone else.
fn python_solve(challenge: &str, difficulty: u8) -> anyhow::Result<u64> {
    const SOLVER: &str = "import hashlib, sys\n\
        c = sys.argv[1].encode('ascii'); d = int(sys.argv[2]); n = 0\n\
        while int.from_bytes(hashlib.sha256(c + n.to_bytes(8, 'big')).digest()[:4], 'big') >> (32 - d):\n\
        \x20   n += 1\n\
        print(n)\n";
    let out = std::process::Command::new("python3")
        .args(["-c", SOLVER, challenge, &difficulty.to_string()])
        .output()
        .map_err(|e| anyhow::anyhow!("running python3 (needed for this check): {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

#[tokio::test]
async fn at_difficulty_zero_the_join_is_unchanged() -> anyhow::Result<()> {
    let edge = Edge::start(&[]).await?;
    let sale = edge.sale(0).await?;
    let (status, body) = edge.challenge(sale, UserId::new_v7()).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"challenge": null, "difficulty": 0, "expires_at": null})
    );
    // No body, `{}`, a stray challenge: all join (an access code is judged on its own, see
    // tests/codes.rs).
    for body in [
        Body::None,
        Body::Json(json!({})),
        Body::Json(json!({"challenge": "pow1.nope", "nonce": 1})),
    ] {
        let (status, answer) = edge.join(sale, UserId::new_v7(), body).await?;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["state"], "waiting");
    }
    assert!(edge.keys("*:pow:*").await?.is_empty(), "nothing spent");
    edge.stop().await
}

#[tokio::test]
async fn at_difficulty_12_a_join_needs_a_solved_challenge_once() -> anyhow::Result<()> {
    let edge = Edge::start(&[]).await?;
    let sale = edge.sale(12).await?;
    let user = UserId::new_v7();
    for body in [Body::None, Body::Json(json!({}))] {
        let (status, answer) = edge.join(sale, user, body).await?;
        assert_error(status, &answer, StatusCode::FORBIDDEN, "pow_required");
    }

    let (status, body) = edge.challenge(sale, user).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["difficulty"], 12);
    let challenge = body["challenge"].as_str().unwrap_or_default().to_owned();
    assert!(challenge.starts_with("pow1."), "{challenge}");
    assert!(challenge.len() <= 128);
    assert!(
        challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    );
    let expires = chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap_or(""))?;
    let left = expires.timestamp() - Utc::now().timestamp();
    assert!((115..=121).contains(&left), "expires in {left} s");

    // Solved by Python's hashlib: a JSON client following the byte rule gets in.
    let nonce = python_solve(&challenge, 12)?;
    assert!(pow::solves(&challenge, nonce, 12));
    let (status, joined) = edge.join(sale, user, proof(&challenge, nonce)).await?;
    assert_eq!(status, StatusCode::OK, "{joined}");
    assert_eq!(joined["state"], "waiting");
    assert_eq!(joined["position"], 1);
    let ticket = joined["ticket"].as_str().unwrap_or_default().to_owned();

    // A user with a place gets it back, nothing checked or spent: no body, a spent challenge,
    // even a malformed body.
    for body in [
        Body::None,
        proof(&challenge, nonce),
        Body::Json(json!({"nonce": "1"})),
    ] {
        let (status, again) = edge.join(sale, user, body).await?;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["position"], 1);
    }

    // After leaving, the same solution is spent.
    assert_eq!(edge.leave(sale, &ticket).await?, StatusCode::NO_CONTENT);
    let (status, answer) = edge.join(sale, user, proof(&challenge, nonce)).await?;
    assert_already_used(status, &answer);
    // A fresh challenge gets the user back in line.
    let (challenge, nonce) = edge.solved(sale, user).await?;
    let (status, answer) = edge.join(sale, user, proof(&challenge, nonce)).await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    edge.stop().await
}

#[tokio::test]
async fn foreign_bent_unsolved_and_expired_challenges_are_refused() -> anyhow::Result<()> {
    let edge = Edge::start(&[("WAITROOM__POW_CHALLENGE_TTL_SECONDS", "2")]).await?;
    let sale = edge.sale(12).await?;
    let other_sale = edge.sale(12).await?;
    let user = UserId::new_v7();

    // Another user's solution.
    let (theirs, their_nonce) = edge.solved(sale, UserId::new_v7()).await?;
    // Another sale's.
    let (elsewhere, elsewhere_nonce) = edge.solved(other_sale, user).await?;
    // One character of a genuine challenge changed.
    let (mine, my_nonce) = edge.solved(sale, user).await?;
    let mut bent = mine.clone().into_bytes();
    bent[20] = if bent[20] == b'A' { b'B' } else { b'A' };
    let bent = String::from_utf8(bent)?;
    // A nonce that does not solve it.
    let wrong = (0..100)
        .find(|&n| !pow::solves(&mine, n, 12))
        .unwrap_or(my_nonce + 1);
    for (what, body) in [
        ("another user's", proof(&theirs, their_nonce)),
        ("another sale's", proof(&elsewhere, elsewhere_nonce)),
        ("a bent one", proof(&bent, my_nonce)),
        ("a wrong nonce", proof(&mine, wrong)),
        ("not a challenge", proof("pow1.example", 7772)),
    ] {
        let (status, answer) = edge.join(sale, user, body).await?;
        assert_error(status, &answer, StatusCode::FORBIDDEN, "pow_invalid");
        eprintln!("{what}: {}", answer["error"]["message"]);
    }
    // Expired: a genuine solution presented after the 2 s TTL.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let (status, answer) = edge.join(sale, user, proof(&mine, my_nonce)).await?;
    assert_error(status, &answer, StatusCode::FORBIDDEN, "pow_invalid");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expired")),
        "{answer}"
    );
    assert!(edge.keys("*:pow:*").await?.is_empty(), "no refusal spent");
    edge.stop().await
}

#[tokio::test]
async fn malformed_bodies_are_400_after_the_place_and_before_the_work() -> anyhow::Result<()> {
    let edge = Edge::start(&[]).await?;
    let sale = edge.sale(12).await?;
    let (challenge, nonce) = edge.solved(sale, UserId::new_v7()).await?;
    let too_big = json!({"challenge": challenge, "nonce": 9_007_199_254_740_992u64});
    for body in [
        Body::Json(too_big),
        Body::Json(json!({"challenge": challenge, "nonce": "1"})),
        Body::Json(json!({"challenge": challenge, "nonce": -1})),
        Body::Json(json!({"challenge": challenge, "nonce": 1.5})),
        Body::Json(json!({"challenge": challenge})),
        Body::Json(json!({"challenge": 7, "nonce": 1})),
        Body::Json(json!({"nonce": "1"})),
        Body::Json(json!({"surprise": true})),
        Body::Json(json!([challenge, nonce])),
        Body::Raw("application/json", "{\"challenge\":"),
        Body::Raw(
            "application/json",
            "{\"nonce\": 1e300, \"challenge\": \"x\"}",
        ),
        Body::Raw(
            "application/json",
            "{\"nonce\": 9007199254740992.0, \"challenge\": \"x\"}",
        ),
    ] {
        let (status, answer) = edge.join(sale, UserId::new_v7(), body).await?;
        assert_error(status, &answer, StatusCode::BAD_REQUEST, "bad_request");
    }
    let (status, answer) = edge
        .join(sale, UserId::new_v7(), Body::Raw("text/plain", "{}"))
        .await?;
    assert_error(
        status,
        &answer,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    // 2^53 - 1 is a nonce (this one just does not solve).
    let (status, answer) = edge
        .join(
            sale,
            UserId::new_v7(),
            proof(&challenge, 9_007_199_254_740_991),
        )
        .await?;
    assert_error(status, &answer, StatusCode::FORBIDDEN, "pow_invalid");
    // Before all of that: 401 and 404.
    let (status, answer) = edge
        .send(
            reqwest::Method::POST,
            &format!("/w/{sale}/join"),
            None,
            Body::Json(json!({"nonce": "1"})),
        )
        .await?;
    assert_error(status, &answer, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, answer) = edge
        .join(
            SaleId::new_v7(),
            UserId::new_v7(),
            Body::Json(json!({"nonce": "1"})),
        )
        .await?;
    assert_error(status, &answer, StatusCode::NOT_FOUND, "not_found");
    edge.stop().await
}

/// schemathesis found it (issue #20): `"nonce": 101.0` is the integer 101 by JSON Schema (and
/// by the document), but the join refused it with 400. An integral float up to 2^53 − 1 is
/// that nonce; 2^53, a fraction and the string `"1"` stay 400 (the test above).
#[tokio::test]
async fn a_nonce_written_as_an_integral_float_is_that_nonce() -> anyhow::Result<()> {
    let edge = Edge::start(&[]).await?;
    let sale = edge.sale(12).await?;
    let user = UserId::new_v7();
    let (challenge, nonce) = edge.solved(sale, user).await?;
    let body = format!("{{\"challenge\": \"{challenge}\", \"nonce\": {nonce}.0}}");
    let (status, joined) = edge
        .join(sale, user, Body::Raw("application/json", &body))
        .await?;
    assert_eq!(status, StatusCode::OK, "{joined}");
    assert_eq!(joined["position"], 1);
    // 1e3 is 1000: a nonce, which does not solve this challenge.
    let (status, answer) = edge
        .join(
            sale,
            UserId::new_v7(),
            Body::Raw("application/json", "{\"nonce\": 1e3, \"challenge\": \"x\"}"),
        )
        .await?;
    assert_error(status, &answer, StatusCode::FORBIDDEN, "pow_invalid");
    edge.stop().await
}

#[tokio::test]
async fn a_join_that_ends_queue_full_spends_nothing() -> anyhow::Result<()> {
    let edge = Edge::start(&[("WAITROOM__MAX_QUEUE_LENGTH", "1")]).await?;
    let sale = edge.sale(8).await?;
    let first = UserId::new_v7();
    let (challenge, nonce) = edge.solved(sale, first).await?;
    let (status, joined) = edge.join(sale, first, proof(&challenge, nonce)).await?;
    assert_eq!(status, StatusCode::OK, "{joined}");
    let ticket = joined["ticket"].as_str().unwrap_or_default().to_owned();

    let second = UserId::new_v7();
    let (challenge, nonce) = edge.solved(sale, second).await?;
    // The work is judged before the line's length: no challenge is still pow_required.
    let (status, answer) = edge.join(sale, second, Body::None).await?;
    assert_error(status, &answer, StatusCode::FORBIDDEN, "pow_required");
    let (status, answer) = edge.join(sale, second, proof(&challenge, nonce)).await?;
    assert_error(
        status,
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "queue_full",
    );
    // The join checks and spends a challenge in one step and gives it back on queue_full: only
    // the first buyer's marker is left.
    let spent = edge.keys("*:pow:*").await?;
    assert_eq!(spent.len(), 1, "{spent:?}");
    // Room again: the same solution still works, once.
    assert_eq!(edge.leave(sale, &ticket).await?, StatusCode::NO_CONTENT);
    // A spread line's length is the leader's count, which hears the leave with its next tick
    // (no-op on one shard).
    common::publish_line(edge.redis()?, sale).await?;
    let (status, answer) = edge.join(sale, second, proof(&challenge, nonce)).await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    edge.stop().await
}

#[tokio::test]
async fn a_join_refused_for_its_access_code_spends_the_challenge() -> anyhow::Result<()> {
    let edge = Edge::start(&[]).await?;
    // A presale for the `fans` group's code holders, at difficulty 8.
    let sale = SaleId::new_v7();
    let door = Door {
        pow_difficulty: 8,
        groups: vec!["fans".to_owned()],
        presale_only_until: Some(Utc::now() + chrono::Duration::hours(1)),
        ..Door::default()
    };
    sale::arm_with(edge.redis()?, sale, &common::open_sale(), &door, 0, 0).await?;
    common::spread_as_asked(edge.redis()?, sale).await?;

    // Without a code, then with a wrong one: each refusal spends the work it came with, so a
    // bot cannot replay one solution to try codes (door.md §1, §2).
    let cases = [
        (json!({}), "access_code_required"),
        (
            json!({"access_code": "WRONG-CODE-1"}),
            "access_code_invalid",
        ),
    ];
    for (n, (extra, refusal)) in cases.into_iter().enumerate() {
        let user = UserId::new_v7();
        let (challenge, nonce) = edge.solved(sale, user).await?;
        let mut body = json!({"challenge": challenge, "nonce": nonce});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let (status, answer) = edge.join(sale, user, Body::Json(body.clone())).await?;
        assert_error(status, &answer, StatusCode::FORBIDDEN, refusal);
        let spent = edge.keys("*:pow:*").await?;
        assert_eq!(spent.len(), n + 1, "{refusal}: {spent:?}");
        let (status, answer) = edge.join(sale, user, Body::Json(body)).await?;
        assert_already_used(status, &answer);
    }
    edge.stop().await
}

#[tokio::test]
async fn challenges_write_nothing_and_spent_ones_are_forgotten_at_their_expiry()
-> anyhow::Result<()> {
    const CHALLENGES: usize = 10_000;
    let edge = Edge::start(&[
        ("WAITROOM__POW_CHALLENGE_TTL_SECONDS", "2"),
        ("WAITROOM__JOIN_PER_IP_PER_MINUTE", "1000000"),
        ("WAITROOM__JOIN_PER_USER_PER_MINUTE", "1000000"),
    ])
    .await?;
    let sale = edge.sale(4).await?;
    let before = edge.keys("*").await?;
    let user = UserId::new_v7();
    let token = edge.token(user)?;
    let url = format!("{}/w/{sale}/challenge", edge.base);
    let mut seen = std::collections::HashSet::new();
    for chunk in 0..CHALLENGES / 100 {
        let answers = futures_util::future::join_all((0..100).map(|_| {
            let request = edge.http.get(&url).bearer_auth(&token);
            async move {
                let response = request.send().await?;
                anyhow::ensure!(response.status() == StatusCode::OK, "chunk {chunk}");
                let body: Value = response.json().await?;
                Ok::<_, anyhow::Error>(body["challenge"].as_str().unwrap_or_default().to_owned())
            }
        }))
        .await;
        for answer in answers {
            seen.insert(answer?);
        }
    }
    assert_eq!(seen.len(), CHALLENGES, "every challenge is new");
    let after = edge.keys("*").await?;
    assert_eq!(
        before.len(),
        after.len(),
        "{CHALLENGES} challenges added keys: {:?}",
        after
            .iter()
            .filter(|k| !before.contains(k))
            .collect::<Vec<_>>()
    );

    // Three joins spend three challenges: one marker each, expiring with its challenge.
    for _ in 0..3 {
        let user = UserId::new_v7();
        let (challenge, nonce) = edge.solved(sale, user).await?;
        let (status, answer) = edge.join(sale, user, proof(&challenge, nonce)).await?;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let spent = edge.keys("*:pow:*").await?;
    assert_eq!(spent.len(), 3, "{spent:?}");
    let redis = edge.redis()?;
    for key in &spent {
        let ttl: i64 = redis.pool().pttl(key).await?;
        assert!((1..=2_000).contains(&ttl), "{key}: PTTL {ttl}");
    }
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    for key in &spent {
        let exists: i64 = redis.pool().exists(key).await?;
        assert_eq!(exists, 0, "{key} outlived its challenge");
    }
    assert!(edge.keys("*:pow:*").await?.is_empty());
    edge.stop().await
}

#[tokio::test]
async fn the_challenge_endpoint_answers_like_join() -> anyhow::Result<()> {
    let edge = Edge::start(&[("WAITROOM__JOIN_PER_USER_PER_MINUTE", "2")]).await?;
    let sale = edge.sale(10).await?;
    let (status, body) = edge
        .send(
            reqwest::Method::GET,
            &format!("/w/{sale}/challenge"),
            None,
            Body::None,
        )
        .await?;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, body) = edge.challenge(SaleId::new_v7(), UserId::new_v7()).await?;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let user = UserId::new_v7();
    for _ in 0..2 {
        let (status, body) = edge.challenge(sale, user).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["difficulty"], 10);
    }
    let (status, body) = edge.challenge(sale, user).await?;
    assert_error(status, &body, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // A new difficulty applies to challenges issued afterwards; one already out keeps its own.
    let other = UserId::new_v7();
    let (old, old_nonce) = edge.solved(sale, other).await?;
    edge.set_difficulty(sale, 14).await?;
    let (_, body) = edge.challenge(sale, UserId::new_v7()).await?;
    assert_eq!(body["difficulty"], 14);
    let (status, answer) = edge.join(sale, other, proof(&old, old_nonce)).await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    edge.stop().await
}
