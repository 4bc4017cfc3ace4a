//! Access codes and priority groups at the join (door.md §2) over real HTTP against the
//! machine's real Redis: the presale's refusals, single and shared uses, the wrong-code limit,
//! strict priority between groups with arrival order kept inside each (a few hundred buyers),
//! the pre-open shuffle per group, and no code in plain text. Each test runs its own waitroom
//! server on a free port with its own key prefix ([`TestEnv`]); codes are written to the sale's
//! `codes` hash as `POST /api/admin/sales/{id}/codes` writes them (hash of sale and code).

use std::time::Duration;

use chrono::Utc;
use dropline_core::ids::{SaleId, UserId};
use dropline_core::sale::keys::SaleKeys;
use dropline_core::sale::{self, Door, SaleConfig, door};
use dropline_testkit::assert_error;
use dropline_waitroom::queue::{AdmitParams, WaitQueue, member};
use fred::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod common;

// One waitroom server and what a test needs around it (`common::Server`, with this file's
// calls below).
use common::Server as Room;

impl Room {
    async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    /// A server with `extra` config overrides on top of the ones every test here needs.
    async fn start_with(extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        // Hundreds of buyers join from this one address.
        let mut overrides = vec![("WAITROOM__JOIN_PER_IP_PER_MINUTE", "1000000")];
        overrides.extend_from_slice(extra);
        Self::launch(&overrides).await
    }

    /// A sale with `groups`, open since a second ago unless `opens_in` is given, a presale
    /// until `presale` from now when given.
    async fn sale(
        &self,
        groups: &[&str],
        opens_in: Option<Duration>,
        presale: Option<Duration>,
    ) -> anyhow::Result<SaleId> {
        self.sale_at(groups, opens_in, presale, 100).await
    }

    /// [`Room::sale`] admitting `admit_per_second`.
    async fn sale_at(
        &self,
        groups: &[&str],
        opens_in: Option<Duration>,
        presale: Option<Duration>,
        admit_per_second: i64,
    ) -> anyhow::Result<SaleId> {
        let id = SaleId::new_v7();
        let opens_at = match opens_in {
            Some(d) => Utc::now() + chrono::Duration::from_std(d)?,
            None => Utc::now() - chrono::Duration::seconds(1),
        };
        let cfg = SaleConfig {
            stock_total: 1000,
            opens_at,
            admit_per_second,
            ..common::open_sale()
        };
        let door = Door {
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            presale_only_until: presale
                .map(|d| chrono::Duration::from_std(d).map(|d| Utc::now() + d))
                .transpose()?,
            ..Door::default()
        };
        sale::arm_with(self.redis()?, id, &cfg, &door, 0, 0).await?;
        common::spread_as_asked(self.redis()?, id).await?;
        Ok(id)
    }

    /// Adds `code` for `group` with `uses`, as the api stores it.
    async fn code(&self, sale: SaleId, code: &str, group: &str, uses: u32) -> anyhow::Result<()> {
        let normal = door::normalize_code(code).ok_or_else(|| anyhow::anyhow!("bad code"))?;
        let key = SaleKeys::new(self.redis()?, sale).codes();
        let _: i64 = self
            .redis()?
            .pool()
            .hset(
                key,
                (
                    fred::types::Key::from(&door::code_hash(sale, &normal)[..]),
                    format!("{group}:{uses}"),
                ),
            )
            .await?;
        Ok(())
    }

    async fn join(
        &self,
        sale: SaleId,
        user: UserId,
        body: Value,
    ) -> anyhow::Result<(StatusCode, reqwest::header::HeaderMap, Value)> {
        let token = self.token(user)?;
        let response = self
            .http
            .post(format!("{}/w/{sale}/join", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body: Value = response.json().await?;
        Ok((status, headers, body))
    }

    /// Joins and expects a place; answers the join's body.
    async fn joined(&self, sale: SaleId, user: UserId, body: Value) -> anyhow::Result<Value> {
        let (status, _, answer) = self.join(sale, user, body).await?;
        anyhow::ensure!(status == StatusCode::OK, "join: {status} {answer}");
        Ok(answer)
    }

    /// Admits everyone in line, `per_call` at a time, and answers them in admission order.
    async fn admit_all(&self, sale: SaleId, per_call: u32) -> anyhow::Result<Vec<UserId>> {
        let queue = WaitQueue::new(self.redis()?, sale);
        let params = AdmitParams::new(per_call, Duration::from_secs(120), Duration::from_secs(600));
        let mut order = Vec::new();
        loop {
            let outcome = queue
                .admit(&params)
                .await?
                .ok_or_else(|| anyhow::anyhow!("sale not armed"))?;
            if outcome.admitted.is_empty() {
                return Ok(order);
            }
            order.extend(outcome.admitted);
        }
    }

    async fn uses_spent(&self, sale: SaleId, code: &str) -> anyhow::Result<i64> {
        let normal = door::normalize_code(code).ok_or_else(|| anyhow::anyhow!("bad code"))?;
        let spent: Option<i64> = self
            .redis()?
            .pool()
            .hget(
                SaleKeys::new(self.redis()?, sale).code_use(),
                fred::types::Key::from(&door::code_hash(sale, &normal)[..]),
            )
            .await?;
        Ok(spent.unwrap_or(0))
    }
}

#[tokio::test]
async fn a_presale_lets_in_code_holders_only_and_a_code_is_spent_once() -> anyhow::Result<()> {
    let room = Room::start().await?;
    let sale = room
        .sale(&["vip"], None, Some(Duration::from_secs(3600)))
        .await?;
    room.code(sale, "ABCD-EFGH-JKMN", "vip", 1).await?;
    let (a, b) = (UserId::new_v7(), UserId::new_v7());

    // No code: refused until the presale ends. A wrong code, of any shape: invalid.
    let (status, _, body) = room.join(sale, a, json!({})).await?;
    assert_error(status, &body, StatusCode::FORBIDDEN, "access_code_required");
    for wrong in ["WRONG-CODE-1", "!", "abcd-efgh-jkmm"] {
        let (status, _, body) = room.join(sale, a, json!({"access_code": wrong})).await?;
        assert_error(status, &body, StatusCode::FORBIDDEN, "access_code_invalid");
    }
    // Typed in lower case with spaces: the code, its group named in the answers.
    let joined = room
        .joined(sale, a, json!({"access_code": " abcd efgh-jkmn "}))
        .await?;
    assert_eq!(joined["state"], "waiting");
    assert_eq!(joined["position"], 1);
    assert_eq!(joined["group"], "vip");
    let ticket = joined["ticket"].as_str().unwrap_or_default().to_owned();
    let polled: Value = room
        .http
        .get(format!("{}/w/{sale}/status", room.base))
        .bearer_auth(&ticket)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(polled["group"], "vip", "{polled}");
    assert_eq!(room.uses_spent(sale, "ABCDEFGHJKMN").await?, 1);

    // Its one use is spent: another buyer hears so.
    let (status, _, body) = room
        .join(sale, b, json!({"access_code": "ABCD-EFGH-JKMN"}))
        .await?;
    assert_error(status, &body, StatusCode::CONFLICT, "access_code_used");

    // The holder joining again, with the code or anything else, keeps place and uses.
    for again in [
        json!({"access_code": "ABCDEFGHJKMN"}),
        json!({"access_code": "nonsense"}),
        json!({}),
    ] {
        let answer = room.joined(sale, a, again).await?;
        assert_eq!(
            (&answer["position"], &answer["group"]),
            (&json!(1), &json!("vip"))
        );
    }
    assert_eq!(room.uses_spent(sale, "ABCDEFGHJKMN").await?, 1);
    // Leaving and coming back with the same code: the use is already theirs.
    let left = room
        .http
        .delete(format!("{}/w/{sale}/join", room.base))
        .bearer_auth(&ticket)
        .send()
        .await?;
    assert_eq!(left.status(), StatusCode::NO_CONTENT);
    let back = room
        .joined(sale, a, json!({"access_code": "ABCD-EFGH-JKMN"}))
        .await?;
    assert_eq!(back["group"], "vip");
    assert_eq!(room.uses_spent(sale, "ABCDEFGHJKMN").await?, 1);

    // Nowhere in Redis is the code's text.
    let pool = room.redis()?.pool();
    let layout = SaleKeys::new(room.redis()?, sale);
    for key in [layout.codes(), layout.code_use()] {
        let all: std::collections::HashMap<Vec<u8>, Vec<u8>> = pool.hgetall(&key).await?;
        for (field, value) in &all {
            for text in [&b"ABCDEFGHJKMN"[..], b"ABCD-EFGH-JKMN"] {
                assert!(!field.windows(text.len()).any(|w| w == text), "{key}");
                assert!(!value.windows(text.len()).any(|w| w == text), "{key}");
            }
        }
    }
    room.stop().await
}

#[tokio::test]
async fn wrong_codes_are_limited_per_user_and_hour() -> anyhow::Result<()> {
    let room = Room::start().await?;
    let sale = room.sale(&["vip"], None, None).await?;
    room.code(sale, "GOOD-CODE-123", "vip", 5).await?;
    let guesser = UserId::new_v7();
    for i in 0..10 {
        let (status, _, body) = room
            .join(
                sale,
                guesser,
                json!({"access_code": format!("GUESS{i:04}")}),
            )
            .await?;
        assert_error(status, &body, StatusCode::FORBIDDEN, "access_code_invalid");
    }
    // The 11th try is refused before the code is looked at, even a right one.
    for code in ["GUESS9999", "GOOD-CODE-123"] {
        let (status, headers, body) = room
            .join(sale, guesser, json!({"access_code": code}))
            .await?;
        assert_error(status, &body, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        let retry: u64 = headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or_default();
        assert!((3_500..=3_600).contains(&retry), "Retry-After {retry}");
    }
    // Without a code the guesser still joins the public line; others are not affected.
    let public = room.joined(sale, guesser, json!({})).await?;
    assert_eq!(public["group"], "public");
    let other = room
        .joined(
            sale,
            UserId::new_v7(),
            json!({"access_code": "GOOD-CODE-123"}),
        )
        .await?;
    assert_eq!(
        (&other["group"], &other["position"]),
        (&json!("vip"), &json!(1))
    );
    room.stop().await
}

/// door.md §2's check at a few hundred buyers: public buyers join first, then vip and fans
/// alternately, then more public ones. Positions count higher groups first, and admission
/// takes every vip, then every fan, then the public, each group in its join order.
#[tokio::test]
async fn higher_groups_go_first_and_each_keeps_its_arrival_order() -> anyhow::Result<()> {
    let room = Room::start().await?;
    let sale = room.sale(&["vip", "fans"], None, None).await?;
    room.code(sale, "VIPVIP", "vip", 1000).await?;
    room.code(sale, "FANFAN", "fans", 1000).await?;
    let (mut vip, mut fans, mut public) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..100 {
        let user = UserId::new_v7();
        room.joined(sale, user, json!({})).await?;
        public.push(user);
    }
    for i in 0..200 {
        let user = UserId::new_v7();
        let (code, group) = if i % 2 == 0 {
            ("VIPVIP", "vip")
        } else {
            ("FANFAN", "fans")
        };
        let answer = room
            .joined(sale, user, json!({"access_code": code}))
            .await?;
        assert_eq!(answer["group"], group);
        // Ahead: every vip so far, and for a fan every fan so far too.
        let expected = if group == "vip" {
            vip.push(user);
            vip.len()
        } else {
            fans.push(user);
            vip.len() + fans.len()
        };
        assert_eq!(answer["position"], expected, "{group} #{i}");
        // A spread line counts a higher group's arrivals on the other shards from the leader's
        // next tick (a public arrival's from their numbers at once): one tick between joins.
        // No-op on one shard.
        common::publish_line(room.redis()?, sale).await?;
    }
    for _ in 0..50 {
        let user = UserId::new_v7();
        let answer = room.joined(sale, user, json!({})).await?;
        assert_eq!(answer["group"], "public");
        public.push(user);
    }
    // The first public buyer now has every vip and fan ahead: exactly on one shard; on a
    // spread line place 201 is past each shard's exact head (32 places), so it is the count
    // curves' estimate, within 1% (README "Positions: exact in the own shard, estimated across").
    let first_public = answer_position(&room, sale, public[0]).await?;
    if common::test_line_shards() > 1 {
        let near = first_public
            .as_u64()
            .is_some_and(|p| (199..=203).contains(&p));
        assert!(near, "{first_public}");
    } else {
        assert_eq!(first_public, 201);
    }

    let admitted = room.admit_all(sale, 5).await?;
    let expected: Vec<UserId> = vip.iter().chain(&fans).chain(&public).copied().collect();
    assert_eq!(admitted.len(), expected.len());
    assert!(
        admitted == expected,
        "admission order is not vip, fans, public in join order"
    );
    room.stop().await
}

/// door.md §2's live check: the admitter running at 5 a second, 50 public buyers in line and
/// being let in, then 20 vip buyers join. Every vip is admitted before any public buyer who
/// was still waiting when the last vip joined, and the vips in their join order.
///
/// Admission order is read from the admitted set, sampled every 20 ms: a buyer first seen in
/// a sample was admitted after the previous sample began. So a public buyer first seen in a
/// sample whose previous one began after the last vip's join was certainly waiting then; it
/// may appear only in the sample where the last vip does or later (within one sample, a tick
/// takes vips before the public).
#[tokio::test]
async fn the_live_admitter_lets_every_vip_in_before_the_public_still_waiting() -> anyhow::Result<()>
{
    let room = Room::start_with(&[
        ("WAITROOM__LEASE_SECONDS", "1"),
        ("WAITROOM__ADMIT_TICK_MS", "100"),
    ])
    .await?;
    let sale = room.sale_at(&["vip"], None, None, 5).await?;
    room.code(sale, "VIPVIP", "vip", 1000).await?;
    let mut public = Vec::new();
    for _ in 0..50 {
        let user = UserId::new_v7();
        room.joined(sale, user, json!({})).await?;
        public.push(user);
    }

    let redis = room.redis()?.clone();
    let adm = SaleKeys::new(&redis, sale).admitted();
    let sampling = CancellationToken::new();
    let sampler = {
        let (redis, adm, stop) = (redis.clone(), adm.clone(), sampling.clone());
        tokio::spawn(async move {
            // (instant the sample began, members first seen in it)
            let mut samples: Vec<(tokio::time::Instant, Vec<Vec<u8>>)> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            // One last sample after the stop: the test stops sampling once it has seen every
            // admission it waits for, and under load the sample before may be older than that.
            loop {
                let last = stop.is_cancelled();
                let began = tokio::time::Instant::now();
                let members: Vec<Vec<u8>> = redis
                    .pool()
                    .zrange(&adm, 0, -1, None, false, None, false)
                    .await?;
                let new: Vec<Vec<u8>> = members
                    .into_iter()
                    .filter(|m| seen.insert(m.clone()))
                    .collect();
                samples.push((began, new));
                if last {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(samples)
        })
    };
    let admitter_stop = CancellationToken::new();
    let admitter = dropline_waitroom::admitter::spawn(
        redis.clone(),
        room.env.config.waitroom.clone(),
        "codes-test".to_owned(),
        dropline_waitroom::admitter::DEFAULT_STALL_AFTER,
        admitter_stop.clone(),
    );
    let admitted = || async {
        let n: i64 = redis.pool().zcard(&adm).await.unwrap_or(0);
        n
    };
    anyhow::ensure!(
        dropline_testkit::eventually(Duration::from_secs(10), || async { admitted().await >= 3 })
            .await,
        "the admitter let nobody in"
    );

    let mut vip = Vec::new();
    for _ in 0..20 {
        let user = UserId::new_v7();
        let answer = room
            .joined(sale, user, json!({"access_code": "VIPVIP"}))
            .await?;
        assert_eq!(answer["group"], "vip");
        vip.push(user);
    }
    let last_vip_joined = tokio::time::Instant::now();
    let before = admitted().await;
    // 20 vips at 5 a second: 4 s, with a generous margin for a loaded machine.
    let all_in = dropline_testkit::eventually(Duration::from_secs(20), || async {
        admitted().await >= before + 20 + 3
    })
    .await;
    sampling.cancel();
    admitter_stop.cancel();
    let samples = sampler.await??;
    let _ = admitter.await;
    anyhow::ensure!(all_in, "the vips were not all admitted within 20 s");

    let group_of = |m: &[u8]| -> Option<(&str, usize)> {
        if let Some(i) = vip.iter().position(|u| &member(*u)[..] == m) {
            return Some(("vip", i));
        }
        public
            .iter()
            .position(|u| &member(*u)[..] == m)
            .map(|i| ("public", i))
    };
    let (mut vips_in, mut waiting_public_in, mut last_vip_index) = (0, 0, None);
    for (k, (_, new)) in samples.iter().enumerate() {
        let after_last_join = k > 0 && samples[k - 1].0 > last_vip_joined;
        let (mut public_here, mut vips_here) = (0, Vec::new());
        for m in new {
            match group_of(m) {
                Some(("vip", i)) => {
                    vips_in += 1;
                    vips_here.push(i);
                }
                Some((_, _)) if after_last_join => public_here += 1,
                Some(_) => {}
                None => anyhow::bail!("a stranger was admitted"),
            }
        }
        if public_here > 0 {
            assert_eq!(
                vips_in,
                20,
                "a public buyer waiting since before the vips joined was admitted while {} vips still waited",
                20 - vips_in
            );
            waiting_public_in += public_here;
        }
        // Across samples the vips come in their join order (within one, in any).
        if let (Some(first), Some(last)) = (vips_here.iter().min(), vips_here.iter().max()) {
            assert!(
                last_vip_index.is_none_or(|prev| prev < *first),
                "vip #{first} admitted after vip #{}",
                last_vip_index.unwrap_or_default()
            );
            last_vip_index = Some(*last);
        }
    }
    assert_eq!(vips_in, 20);
    // And then the public line went on.
    assert!(
        waiting_public_in >= 3,
        "only {waiting_public_in} public buyers admitted after the vips"
    );
    room.stop().await
}

/// The position a join again reports for `user`.
async fn answer_position(room: &Room, sale: SaleId, user: UserId) -> anyhow::Result<Value> {
    Ok(room.joined(sale, user, json!({})).await?["position"].clone())
}

/// Before the opening each group's pre-queue is shuffled on its own; at the opening every vip
/// stands ahead of every public buyer, whoever came first.
#[tokio::test]
async fn the_pre_open_shuffle_stays_inside_each_group() -> anyhow::Result<()> {
    let room = Room::start().await?;
    let sale = room
        .sale(&["vip"], Some(Duration::from_secs(3)), None)
        .await?;
    room.code(sale, "EARLYBIRD", "vip", 100).await?;
    let (mut vip, mut public) = (Vec::new(), Vec::new());
    for i in 0..80 {
        let user = UserId::new_v7();
        let answer = if i % 2 == 0 {
            public.push(user);
            room.joined(sale, user, json!({})).await?
        } else {
            vip.push(user);
            room.joined(sale, user, json!({"access_code": "EARLYBIRD"}))
                .await?
        };
        assert_eq!(answer["state"], "scheduled");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let admitted = room.admit_all(sale, 10).await?;
    assert_eq!(admitted.len(), 80);
    let (first, rest) = admitted.split_at(40);
    assert!(
        first.iter().all(|u| vip.contains(u)),
        "a public buyer before a vip"
    );
    assert!(rest.iter().all(|u| public.contains(u)));
    // Shuffled, not in arrival order (40! orders; arrival order by chance is 1 in 8e47).
    assert_ne!(first, &vip[..]);
    room.stop().await
}
