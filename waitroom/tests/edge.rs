//! The waiting room's HTTP edge (join, status, leave, stats, JWKS) over real HTTP against the
//! machine's real Redis. Each test runs its own waitroom server on a free port with its own key
//! prefix ([`TestEnv`]) and throw-away keys. Admission is driven by calling the admission step
//! directly, so these tests do not depend on the admitter's timing.

use std::time::Duration;

use chrono::Utc;
use dropline_core::auth::keys::{KeyRing, SigningKeyPair};
use dropline_core::auth::tokens::{self, PassClaims, PassError, Role};
use dropline_core::ids::{SaleId, UserId};
use dropline_core::sale::{self, SaleConfig};
use dropline_testkit::assert_error;
use dropline_waitroom::queue::{AdmitParams, WaitQueue};
use fred::prelude::*;
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod common;

// One waitroom server and what a test needs around it (`common::Server`, with this file's
// calls below).
use common::Server as Edge;

impl Edge {
    async fn start() -> anyhow::Result<Self> {
        Self::launch(&[]).await
    }

    async fn start_with(overrides: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::launch(overrides).await
    }

    /// An armed sale, open since a second ago unless `tweak` says otherwise.
    async fn sale(&self, tweak: impl FnOnce(&mut SaleConfig)) -> anyhow::Result<SaleId> {
        let id = SaleId::new_v7();
        let mut cfg = common::open_sale();
        tweak(&mut cfg);
        sale::arm(self.redis()?, id, &cfg).await?;
        common::spread_as_asked(self.redis()?, id).await?;
        Ok(id)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
    ) -> anyhow::Result<(StatusCode, reqwest::header::HeaderMap, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{status} {path}: not JSON ({e}): {text}"))?
        };
        Ok((status, headers, body))
    }

    async fn join(&self, sale: SaleId, token: &str) -> anyhow::Result<(StatusCode, Value)> {
        let (status, _, body) = self
            .call(
                reqwest::Method::POST,
                &format!("/w/{sale}/join"),
                Some(token),
            )
            .await?;
        Ok((status, body))
    }

    async fn status(&self, sale: SaleId, ticket: &str) -> anyhow::Result<(StatusCode, Value)> {
        let (status, _, body) = self
            .call(
                reqwest::Method::GET,
                &format!("/w/{sale}/status"),
                Some(ticket),
            )
            .await?;
        Ok((status, body))
    }

    /// Joins as a new user and returns (user, ticket).
    async fn joined(&self, sale: SaleId) -> anyhow::Result<(UserId, String, Value)> {
        let user = UserId::new_v7();
        let (status, body) = self.join(sale, &self.token(user)?).await?;
        anyhow::ensure!(status == StatusCode::OK, "join: {status} {body}");
        let ticket = body["ticket"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no ticket in {body}"))?
            .to_owned();
        Ok((user, ticket, body))
    }

    async fn admit(&self, sale: SaleId, n: u32) -> anyhow::Result<usize> {
        let params = AdmitParams::new(
            n,
            Duration::from_secs(self.config.waitroom.abandon_after_seconds),
            Duration::from_secs(self.config.waitroom.admission_window_seconds),
        );
        let outcome = WaitQueue::new(self.redis()?, sale)
            .admit(&params)
            .await?
            .ok_or_else(|| anyhow::anyhow!("sale not armed"))?;
        Ok(outcome.admitted.len())
    }
}

#[tokio::test]
async fn join_gives_positions_in_arrival_order_and_the_same_place_again() -> anyhow::Result<()> {
    let edge = Edge::start().await?;
    let sale = edge.sale(|_| {}).await?;
    let mut users = Vec::new();
    for expected in 1..=3u64 {
        let (user, ticket, body) = edge.joined(sale).await?;
        assert_eq!(body["state"], "waiting");
        assert_eq!(body["position"], expected);
        // Due within the next tick at 100/s: told so, and to come back within a second.
        assert_eq!(body["eta_seconds"], 1, "{body}");
        let retry = body["retry_after_ms"].as_u64().unwrap_or_default();
        assert!((250..=1_000).contains(&retry), "{body}");
        assert!(body["opens_at"].as_str().is_some_and(|s| s.ends_with('Z')));
        users.push((user, ticket));
    }
    // Joining again (another tab: a fresh access token) keeps the place.
    let (status, again) = edge.join(sale, &edge.token(users[1].0)?).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["position"], 2);
    // So does a second replica sharing the keys and Redis.
    let replica_secrets = dropline_waitroom::Secrets::from_config(&edge.config)?;
    let replica = dropline_waitroom::build(&edge.config, &edge.deps, replica_secrets).await?;
    let replica_base = format!("http://{}", replica.addr());
    let stop = CancellationToken::new();
    tokio::spawn(replica.run(stop.clone()));
    let body: Value = edge
        .http
        .post(format!("{replica_base}/w/{sale}/join"))
        .bearer_auth(edge.token(users[2].0)?)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(body["position"], 3);
    // And a ticket from one replica works on the other.
    let body: Value = edge
        .http
        .get(format!("{replica_base}/w/{sale}/status"))
        .bearer_auth(&users[0].1)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(body["state"], "waiting");
    assert_eq!(body["position"], 1);
    stop.cancel();
    edge.stop().await
}

#[tokio::test]
async fn before_opening_the_place_is_scheduled_without_a_position() -> anyhow::Result<()> {
    let edge = Edge::start().await?;
    let opens = Utc::now() + chrono::Duration::seconds(3600);
    let sale = edge.sale(|c| c.opens_at = opens).await?;
    let (_, ticket, body) = edge.joined(sale).await?;
    assert_eq!(body["state"], "scheduled");
    assert!(body["position"].is_null(), "{body}");
    assert!(body["eta_seconds"].is_null(), "{body}");
    assert_eq!(body["retry_after_ms"], 30_000, "an hour away: the maximum");
    let opens_at = chrono::DateTime::parse_from_rfc3339(body["opens_at"].as_str().unwrap_or(""))?;
    assert_eq!(opens_at.timestamp(), opens.timestamp());
    let (status, body) = edge.status(sale, &ticket).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["state"], "scheduled");
    assert!(body.get("pass").is_none(), "{body}");
    edge.stop().await
}

#[tokio::test]
async fn admitted_buyers_get_a_pass_that_only_the_right_sale_and_user_accept() -> anyhow::Result<()>
{
    let edge = Edge::start().await?;
    let sale = edge.sale(|_| {}).await?;
    let (first, first_ticket, _) = edge.joined(sale).await?;
    let (_, second_ticket, _) = edge.joined(sale).await?;
    assert_eq!(edge.admit(sale, 1).await?, 1);

    let (status, body) = edge.status(sale, &first_ticket).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "admitted");
    assert!(body["position"].is_null());
    let pass = body["pass"].as_str().unwrap_or_default().to_owned();
    let expires =
        chrono::DateTime::parse_from_rfc3339(body["pass_expires_at"].as_str().unwrap_or_default())?;
    let window = edge.config.waitroom.admission_window_seconds as i64;
    let left = expires.timestamp() - Utc::now().timestamp();
    assert!((window - 5..=window).contains(&left), "{left}");

    // The api's verifier, holding the public key only.
    let claims = tokens::verify_pass(&edge.api_pass_ring, &pass, sale, first)?;
    assert_eq!(claims.exp, expires.timestamp());
    assert_eq!(
        tokens::verify_pass(&edge.api_pass_ring, &pass, SaleId::new_v7(), first),
        Err(PassError::OtherSale)
    );
    assert_eq!(
        tokens::verify_pass(&edge.api_pass_ring, &pass, sale, UserId::new_v7()),
        Err(PassError::OtherUser)
    );
    // A bad signature: the same claims signed by a key the api does not trust.
    let stranger = KeyRing::new(Some(SigningKeyPair::generate()?), Vec::new())?;
    let forged = tokens::sign(&stranger, &claims)?;
    assert!(tokens::verify_pass(&edge.api_pass_ring, &forged, sale, first).is_err());
    // Tampered payload.
    let mut parts: Vec<String> = pass.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].chars().rev().collect();
    assert!(tokens::verify_pass(&edge.api_pass_ring, &parts.join("."), sale, first).is_err());
    // Expired: genuine key, past exp.
    let secrets = dropline_waitroom::Secrets::from_config(&edge.config)?;
    let now = Utc::now().timestamp();
    let old = PassClaims::new(first, sale, now - 700, now - 100);
    let expired = tokens::sign(&secrets.passes, &old)?;
    assert!(tokens::verify_pass(&edge.api_pass_ring, &expired, sale, first).is_err());

    // The JWKS publishes the key that signed it.
    let (status, _, jwks) = edge
        .call(reqwest::Method::GET, "/.well-known/jwks.json", None)
        .await?;
    assert_eq!(status, StatusCode::OK);
    let header = jsonwebtoken::decode_header(&pass)?;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .map(|keys| keys.iter().filter_map(|k| k["kid"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        header.kid.as_deref().is_some_and(|k| kids.contains(&k)),
        "{jwks}"
    );

    // The one not admitted is first in line now.
    let (_, body) = edge.status(sale, &second_ticket).await?;
    assert_eq!(body["state"], "waiting");
    assert_eq!(body["position"], 1);
    assert!(body.get("pass").is_none());
    edge.stop().await
}

#[tokio::test]
async fn tokens_and_tickets_are_checked() -> anyhow::Result<()> {
    let edge = Edge::start().await?;
    let sale = edge.sale(|_| {}).await?;
    let other_sale = edge.sale(|_| {}).await?;
    let user = UserId::new_v7();
    let token = edge.token(user)?;
    // Join: no token, a garbled token, a token signed by a stranger.
    let (status, _, body) = edge
        .call(reqwest::Method::POST, &format!("/w/{sale}/join"), None)
        .await?;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, body) = edge.join(sale, "not-a-token").await?;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let stranger = KeyRing::new(Some(SigningKeyPair::generate()?), Vec::new())?;
    let (foreign, _) = tokens::issue_access(&stranger, user, Role::Buyer, Duration::from_secs(60))?;
    let (status, body) = edge.join(sale, &foreign).await?;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");

    let (status, body) = edge.join(sale, &token).await?;
    assert_eq!(status, StatusCode::OK);
    let ticket = body["ticket"].as_str().unwrap_or_default().to_owned();
    // Status: no ticket, the access token instead of a ticket, a ticket of another sale, a
    // ticket with one character changed.
    let (status, _, body) = edge
        .call(reqwest::Method::GET, &format!("/w/{sale}/status"), None)
        .await?;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, body) = edge.status(sale, &token).await?;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, body) = edge.status(other_sale, &ticket).await?;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let mut bent: Vec<char> = ticket.chars().collect();
    bent[40] = if bent[40] == 'A' { 'B' } else { 'A' };
    let bent: String = bent.into_iter().collect();
    let (status, body) = edge.status(sale, &bent).await?;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    // Leave needs the ticket too.
    let (status, _, body) = edge
        .call(reqwest::Method::DELETE, &format!("/w/{sale}/join"), None)
        .await?;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    // Unknown sale and a path that is not a sale id.
    let (status, body) = edge.join(SaleId::new_v7(), &token).await?;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = edge.join(SaleId::nil(), &token).await?;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, _, body) = edge
        .call(reqwest::Method::POST, "/w/not-a-sale/join", Some(&token))
        .await?;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, _, body) = edge
        .call(
            reqwest::Method::GET,
            &format!("/w/{}/stats", Uuid::now_v7()),
            None,
        )
        .await?;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    edge.stop().await
}

#[tokio::test]
async fn leaving_removes_the_place_and_status_then_says_join_again() -> anyhow::Result<()> {
    let edge = Edge::start().await?;
    let sale = edge.sale(|_| {}).await?;
    let (_, first, _) = edge.joined(sale).await?;
    let (_, second, _) = edge.joined(sale).await?;
    let (status, _, body) = edge
        .call(
            reqwest::Method::DELETE,
            &format!("/w/{sale}/join"),
            Some(&first),
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = edge.status(sale, &first).await?;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, _, _) = edge
        .call(
            reqwest::Method::DELETE,
            &format!("/w/{sale}/join"),
            Some(&first),
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT, "leaving twice is fine");
    // A spread line counts the other shards as of the leader's last tick (no-op on one shard).
    common::publish_line(edge.redis()?, sale).await?;
    let (_, body) = edge.status(sale, &second).await?;
    assert_eq!(body["position"], 1, "the one behind moved up");
    edge.stop().await
}

/// door.md §6 over HTTP: with `abandon_after` 20 s, A joins first and is silent 25 s (its
/// last-poll stamp set back) while B and C are admitted. A's status: `waiting`, position 1,
/// and the next admission is A's, with a pass. Past the grace a status says join again (404);
/// leaving removes a skipped place at once.
#[tokio::test]
async fn a_sleeping_tab_keeps_its_place_over_http() -> anyhow::Result<()> {
    let edge = Edge::start_with(&[
        ("WAITROOM__ABANDON_AFTER_SECONDS", "20"),
        ("WAITROOM__RETURN_GRACE_SECONDS", "60"),
    ])
    .await?;
    let sale = edge.sale(|_| {}).await?;
    let (a, a_ticket, _) = edge.joined(sale).await?;
    let (_, b_ticket, _) = edge.joined(sale).await?;
    let (_, c_ticket, _) = edge.joined(sale).await?;
    let (d, d_ticket, _) = edge.joined(sale).await?;
    let (e, e_ticket, _) = edge.joined(sale).await?;
    common::silence_in_sale(edge.redis()?, sale, &[a, d, e], 25).await?;
    for ticket in [&b_ticket, &c_ticket] {
        let (status, body) = edge.status(sale, ticket).await?;
        assert_eq!(
            (status, body["state"].as_str()),
            (StatusCode::OK, Some("waiting"))
        );
    }
    assert_eq!(edge.admit(sale, 2).await?, 2, "B and C, A passed over");
    // A's tab wakes up within the grace: the head of the line, and in at the next tick.
    let (status, body) = edge.status(sale, &a_ticket).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["state"].as_str(), &body["position"]),
        (Some("waiting"), &Value::from(1))
    );
    assert_eq!(edge.admit(sale, 1).await?, 1);
    let (_, body) = edge.status(sale, &a_ticket).await?;
    assert_eq!(body["state"], "admitted", "{body}");
    assert!(body["pass"].as_str().is_some(), "{body}");
    // D leaves while skipped: nothing to come back to.
    let (status, _, _) = edge
        .call(
            reqwest::Method::DELETE,
            &format!("/w/{sale}/join"),
            Some(&d_ticket),
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = edge.status(sale, &d_ticket).await?;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    // E comes back past the grace: the place is gone; joining again starts at the back.
    common::silence_in_sale(edge.redis()?, sale, &[e], 65).await?;
    let (status, body) = edge.status(sale, &e_ticket).await?;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    // On a spread line a new place counts the other shards' places from the curves of the last
    // tick, which still held D when D was on another shard and no tick had skipped it (the
    // documented lag of one tick): the leader's next tick first.
    common::publish_line(edge.redis()?, sale).await?;
    let (status, body) = edge.join(sale, &edge.token(e)?).await?;
    assert_eq!(
        (status, &body["position"]),
        (StatusCode::OK, &Value::from(1)),
        "{body}"
    );
    edge.stop().await
}

#[tokio::test]
async fn sold_out_and_closed_reach_joiners_and_waiting_buyers() -> anyhow::Result<()> {
    let edge = Edge::start().await?;
    let sale = edge.sale(|_| {}).await?;
    let (_, ticket, _) = edge.joined(sale).await?;
    // Nothing left, nothing held.
    let redis = edge.redis()?;
    let _: () = redis
        .pool()
        .set(redis.sale_key(sale, "avail"), 0, None, None, false)
        .await?;
    // A spread line hears the sale's news with the leader's next tick (no-op on one shard).
    common::publish_line(redis, sale).await?;
    let (status, body) = edge.status(sale, &ticket).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["state"], "sold_out");
    assert!(body["position"].is_null());
    let (status, body) = edge.join(sale, &edge.token(UserId::new_v7())?).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "sold_out");
    // Stock comes back: the waiting buyer's place was kept.
    let _: () = redis
        .pool()
        .set(redis.sale_key(sale, "avail"), 1, None, None, false)
        .await?;
    common::publish_line(redis, sale).await?;
    let (_, body) = edge.status(sale, &ticket).await?;
    assert_eq!(body["state"], "waiting");
    assert_eq!(body["position"], 1);
    let _: () = redis
        .pool()
        .hset(redis.sale_key(sale, "cfg"), ("closed", "1"))
        .await?;
    common::publish_line(redis, sale).await?;
    let (_, body) = edge.status(sale, &ticket).await?;
    assert_eq!(body["state"], "closed");
    edge.stop().await
}

#[tokio::test]
async fn a_full_line_answers_queue_full_with_retry_after() -> anyhow::Result<()> {
    let edge = Edge::start_with(&[("WAITROOM__MAX_QUEUE_LENGTH", "2")]).await?;
    let sale = edge.sale(|_| {}).await?;
    let (_, _, _) = edge.joined(sale).await?;
    let (second, _, _) = edge.joined(sale).await?;
    let (status, headers, body) = edge
        .call(
            reqwest::Method::POST,
            &format!("/w/{sale}/join"),
            Some(&edge.token(UserId::new_v7())?),
        )
        .await?;
    assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "queue_full");
    assert!(headers.get("retry-after").is_some());
    // Someone already in line is never refused.
    let (status, _) = edge.join(sale, &edge.token(second)?).await?;
    assert_eq!(status, StatusCode::OK);
    edge.stop().await
}

/// Hostile: forged tokens, each claiming an honest buyer's id, sent at once with the honest
/// joins so that they share the signature batches (`core::auth::batch`). Each forgery is
/// refused on its own, every honest buyer gets a place, and the forgeries spent nothing of the
/// buyers they name: not a place, not one of their joins per minute.
#[tokio::test]
async fn forged_tokens_among_honest_joins_are_refused_one_by_one() -> anyhow::Result<()> {
    const BUYERS: usize = 60;
    let edge = Edge::start_with(&[
        ("WAITROOM__JOIN_PER_USER_PER_MINUTE", "2"),
        ("WAITROOM__JOIN_PER_IP_PER_MINUTE", "100000"),
    ])
    .await?;
    let sale = edge.sale(|_| {}).await?;
    let mut asks = Vec::new();
    for _ in 0..BUYERS {
        let user = UserId::new_v7();
        let token = edge.token(user)?;
        // Two forgeries per buyer: the buyer's own header and claims under a bent signature.
        let (message, signature) = token.rsplit_once('.').unwrap_or_default();
        // (One base64url character changed, away from the last, which carries padding bits.)
        for at in [10, 30] {
            let mut sig = signature.as_bytes().to_vec();
            sig[at] = if sig[at] == b'A' { b'B' } else { b'A' };
            let forged = format!("{message}.{}", String::from_utf8(sig)?);
            asks.push((user, forged, false));
        }
        asks.push((user, token, true));
    }
    let answers = futures_util::future::join_all(asks.iter().map(|(user, token, honest)| {
        let edge = &edge;
        async move {
            let (status, body) = edge.join(sale, token).await?;
            Ok::<_, anyhow::Error>((*user, *honest, status, body))
        }
    }))
    .await;
    let mut positions = std::collections::BTreeSet::new();
    for answer in answers {
        let (user, honest, status, body) = answer?;
        if honest {
            assert_eq!(status, StatusCode::OK, "{user}: {body}");
            positions.insert(body["position"].as_u64().unwrap_or_default());
        } else {
            assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }
    let want: std::collections::BTreeSet<u64> = (1..=BUYERS as u64).collect();
    assert_eq!(positions, want, "one place each, nothing for a forgery");
    // Each buyer's second join of the minute is still theirs (a forgery counted would have
    // made it a 429), and it answers the place they hold.
    for (user, token, honest) in &asks {
        if *honest {
            let (status, body) = edge.join(sale, token).await?;
            assert_eq!(status, StatusCode::OK, "{user}: {body}");
        }
    }
    edge.stop().await
}

#[tokio::test]
async fn join_and_status_are_limited_per_user() -> anyhow::Result<()> {
    let edge = Edge::start_with(&[
        ("WAITROOM__JOIN_PER_USER_PER_MINUTE", "2"),
        ("WAITROOM__STATUS_PER_USER_PER_MINUTE", "3"),
    ])
    .await?;
    let sale = edge.sale(|_| {}).await?;
    let user = UserId::new_v7();
    let token = edge.token(user)?;
    let (_, body) = edge.join(sale, &token).await?;
    let ticket = body["ticket"].as_str().unwrap_or_default().to_owned();
    let (status, _) = edge.join(sale, &token).await?;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, body) = edge
        .call(
            reqwest::Method::POST,
            &format!("/w/{sale}/join"),
            Some(&token),
        )
        .await?;
    assert_error(status, &body, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(headers.get("retry-after").is_some());
    for _ in 0..3 {
        let (status, _) = edge.status(sale, &ticket).await?;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, body) = edge.status(sale, &ticket).await?;
    assert_error(status, &body, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // Another user is not affected.
    let (status, _) = edge.join(sale, &edge.token(UserId::new_v7())?).await?;
    assert_eq!(status, StatusCode::OK);
    edge.stop().await
}

#[tokio::test]
async fn stats_show_the_line_and_the_measured_rate() -> anyhow::Result<()> {
    let edge = Edge::start().await?;
    let sale = edge.sale(|c| c.stock_total = 7).await?;
    for _ in 0..4 {
        edge.joined(sale).await?;
    }
    assert_eq!(edge.admit(sale, 1).await?, 1);
    let (status, _, body) = edge
        .call(reqwest::Method::GET, &format!("/w/{sale}/stats"), None)
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "open");
    assert_eq!(body["queue_length"], 3);
    assert_eq!(body["admitted_total"], 1);
    assert_eq!(body["available"], 7);
    assert_eq!(body["admit_rate"], 0.0, "nothing measured yet");
    // The admitter's measurement is what stats shows (ETAs do not use it).
    let redis = edge.redis()?;
    let wr = WaitQueue::new(redis, sale).keys().wr.clone();
    let _: () = redis.pool().hset(&wr, ("admit_rate_milli", 2_500)).await?;
    let (_, _, body) = edge
        .call(reqwest::Method::GET, &format!("/w/{sale}/stats"), None)
        .await?;
    assert_eq!(body["admit_rate"], 2.5);
    // The ETA is the rate the admitter can admit now (door.md §3), not the measured one: 4th
    // in line with 6 admissible at 100/s is due within the next tick.
    let (_, _, body) = edge.joined(sale).await?;
    assert_eq!(body["position"], 4);
    assert_eq!(body["eta_seconds"], 1, "{body}");
    edge.stop().await
}

#[tokio::test]
async fn concurrent_polls_share_redis_calls_and_each_gets_its_own_place() -> anyhow::Result<()> {
    let edge = Edge::start().await?;
    let sale = edge.sale(|_| {}).await?;
    let mut tickets = Vec::new();
    for _ in 0..60 {
        tickets.push(edge.joined(sale).await?.1);
    }
    // All at once (and some twice): batched into few wr_status calls, answered per user.
    let polls = futures_util::future::join_all(
        tickets
            .iter()
            .chain(tickets.iter().take(10))
            .map(|ticket| edge.status(sale, ticket)),
    )
    .await;
    for (i, poll) in polls.into_iter().enumerate() {
        let (status, body) = poll?;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["state"], "waiting");
        assert_eq!(body["position"], (i % 60) as u64 + 1, "{body}");
    }
    edge.stop().await
}

/// Concurrent joins are batched into few `wr_join.lua` calls (like polls): every buyer still
/// gets a place of their own, and a buyer joining twice at once gets the one place twice.
#[tokio::test]
async fn concurrent_joins_share_redis_calls_and_each_gets_its_own_place() -> anyhow::Result<()> {
    let edge = Edge::start().await?;
    let sale = edge.sale(|_| {}).await?;
    let tokens = (0..80)
        .map(|_| edge.token(UserId::new_v7()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let joins = futures_util::future::join_all(
        tokens
            .iter()
            .chain(tokens.iter().take(20))
            .map(|token| edge.join(sale, token)),
    )
    .await;
    let mut positions = Vec::new();
    for join in joins {
        let (status, body) = join?;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["state"], "waiting", "{body}");
        positions.push(
            body["position"]
                .as_u64()
                .ok_or_else(|| anyhow::anyhow!("no position: {body}"))?,
        );
    }
    for (first, again) in positions.iter().zip(&positions[80..]) {
        assert_eq!(first, again, "one place per buyer");
    }
    let mut distinct = positions[..80].to_vec();
    distinct.sort_unstable();
    assert_eq!(distinct, (1..=80).collect::<Vec<u64>>());
    edge.stop().await
}

/// door.md §4: the notice is stored in the sale's cfg before the admin's 200, and join, status
/// and stats read it in the same script call as the place, so the first poll that starts after
/// the change carries it; clearing it reaches the next poll the same way.
#[tokio::test]
async fn the_operators_notice_reaches_join_status_and_stats_at_the_next_call() -> anyhow::Result<()>
{
    let edge = Edge::start().await?;
    let sale = edge.sale(|_| {}).await?;
    let (_, ticket, joined) = edge.joined(sale).await?;
    assert_eq!(joined["notice"], Value::Null, "{joined}");
    let (_, polled) = edge.status(sale, &ticket).await?;
    assert_eq!(polled["notice"], Value::Null, "{polled}");

    let text = "Drop delayed 5 minutes <b>x</b> 🪑";
    let set = sale::SettingsUpdate {
        notice: Some(Some(text.to_owned())),
        ..sale::SettingsUpdate::default()
    };
    assert!(sale::update_settings(edge.redis()?, sale, &set).await?);
    // A spread line's polls hear it with the leader's next tick (no-op on one shard).
    common::publish_line(edge.redis()?, sale).await?;
    let (status, polled) = edge.status(sale, &ticket).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(polled["notice"], text, "the first poll after the change");
    assert_eq!(polled["state"], "waiting");
    let (_, rejoined) = edge.join(sale, &edge.token(UserId::new_v7())?).await?;
    assert_eq!(rejoined["notice"], text);
    let (_, _, stats) = edge
        .call(reqwest::Method::GET, &format!("/w/{sale}/stats"), None)
        .await?;
    assert_eq!(stats["notice"], text);

    let clear = sale::SettingsUpdate {
        notice: Some(None),
        ..sale::SettingsUpdate::default()
    };
    assert!(sale::update_settings(edge.redis()?, sale, &clear).await?);
    common::publish_line(edge.redis()?, sale).await?;
    let (_, polled) = edge.status(sale, &ticket).await?;
    assert_eq!(polled["notice"], Value::Null, "{polled}");
    edge.stop().await
}

/// A sale whose line is spread over three line shards (issue #22 §2), over HTTP: joins put each
/// buyer on their own shard, a poll after the leader's tick says the whole line's position from
/// that shard alone, the tick's admissions reach the polls with a pass the api accepts, and
/// leaving takes the place away, the ones behind moving up.
#[tokio::test]
async fn a_spread_line_joins_polls_admits_and_leaves_over_http() -> anyhow::Result<()> {
    use dropline_core::sale::keys::{LineShards, SaleKeys};
    use dropline_waitroom::line::tick::{TickParams, run};

    let edge = Edge::start().await?;
    let sale = edge.sale(|_| {}).await?;
    let redis = edge.redis()?;
    let sale_keys = SaleKeys::new(redis, sale);
    let _: i64 = redis
        .pool()
        .hset(sale_keys.cfg(), ("line_shards", 3))
        .await?;
    let line = LineShards::new(redis, sale, 3);
    let mut joined = Vec::new();
    for _ in 0..6 {
        let (user, ticket, body) = edge.joined(sale).await?;
        assert_eq!(body["state"], "waiting", "{body}");
        let on_shard: Option<f64> = redis
            .pool()
            .zscore(&line.keys_of(user).q, user.as_bytes().to_vec())
            .await?;
        assert!(on_shard.is_some(), "the place is on the user's shard");
        joined.push((user, ticket));
    }
    let tick = |want: u64, rate: f64| TickParams {
        want,
        abandon_after: Duration::from_secs(edge.config.waitroom.abandon_after_seconds),
        window: Duration::from_secs(edge.config.waitroom.admission_window_seconds),
        need: 0,
        rate,
        tolerance: Duration::from_secs(30),
        carry: Duration::ZERO,
        outage_gap: Duration::ZERO,
        tick: Duration::from_millis(100),
    };
    run(redis, &sale_keys, &line, &tick(0, 0.0), 1_000, None).await?;
    for (rank, (_, ticket)) in joined.iter().enumerate() {
        let (status, body) = edge.status(sale, ticket).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["state"], "waiting", "{body}");
        assert_eq!(body["position"], rank + 1, "{body}");
    }
    let done = run(redis, &sale_keys, &line, &tick(2, 1.0), 1_000, None).await?;
    assert_eq!(done.admitted, 2, "{done:?}");
    for (user, ticket) in &joined[..2] {
        let (_, body) = edge.status(sale, ticket).await?;
        assert_eq!(body["state"], "admitted", "{body}");
        let pass = body["pass"].as_str().unwrap_or_default();
        tokens::verify_pass(&edge.api_pass_ring, pass, sale, *user)?;
    }
    let (status, _, _) = edge
        .call(
            reqwest::Method::DELETE,
            &format!("/w/{sale}/join"),
            Some(&joined[2].1),
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = edge.status(sale, &joined[2].1).await?;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    run(redis, &sale_keys, &line, &tick(0, 0.0), 1_000, None).await?;
    let (_, body) = edge.status(sale, &joined[3].1).await?;
    assert_eq!(body["position"], 1, "the one behind moved up: {body}");
    edge.stop().await
}
