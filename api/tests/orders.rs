//! The orders API (DESIGN §9) against a real api server, Redis, MariaDB and RabbitMQ: create
//! with pass and idempotency key, read, list, cancel and pay, and every refusal in the
//! contract's error shape. Buyers are admitted by writing the waiting room's `adm` zset and
//! given passes signed with the test's pass key (the api holds only its public half).

mod common;

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use common::{Reply, TestApi};
use dropline_core::auth::tokens::{self, PassClaims, Role};
use dropline_core::ids::{OrderId, SaleId, UserId};
use dropline_core::orders::ledger;
use dropline_core::orders::outbox::Outbox;
use fred::prelude::*;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

fn rfc3339(offset: chrono::Duration) -> String {
    (Utc::now() + offset).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn id_of(value: &Value) -> anyhow::Result<Uuid> {
    let text = value["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no id in {value}"))?;
    Ok(Uuid::parse_str(text)?)
}

struct Buyer {
    id: UserId,
    token: String,
    pass: String,
}

struct Shop {
    api: TestApi,
    admin: String,
}

impl Shop {
    async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    async fn start_with(extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut overrides = vec![("PAYMENT__TIMEOUT_SECONDS", "30")];
        overrides.extend_from_slice(extra);
        let api = TestApi::start(&overrides).await?;
        let admin = api.admin().await?;
        Ok(Self { api, admin })
    }

    /// An open sale of `stock` units at 39,000 KRW, `limit` per buyer.
    async fn sale(&self, stock: i64, limit: i64) -> anyhow::Result<SaleId> {
        let product = self
            .api
            .post(
                "/api/admin/products",
                Some(&self.admin),
                json!({"name": "Numbered chair", "price": 39_000}),
            )
            .await?;
        product.expect(201, None);
        let sale = self
            .api
            .post(
                "/api/admin/sales",
                Some(&self.admin),
                json!({
                    "product_id": product.body["id"],
                    "stock": stock,
                    "per_user_limit": limit,
                    "opens_at": rfc3339(chrono::Duration::minutes(-1)),
                }),
            )
            .await?;
        sale.expect(201, None);
        Ok(SaleId::from(id_of(&sale.body)?))
    }

    /// A verified buyer admitted to `sale` (for 10 minutes), with a pass for it.
    async fn buyer(&self, sale: SaleId) -> anyhow::Result<Buyer> {
        let email = format!("buyer-{}@example.com", Uuid::new_v4().simple());
        let (id, token) = self.api.user(&email, Role::Buyer).await?;
        self.admit(sale, id).await?;
        let pass = self.pass(sale, id, 600)?;
        Ok(Buyer { id, token, pass })
    }

    async fn admit(&self, sale: SaleId, user: UserId) -> anyhow::Result<()> {
        let redis = self.api.deps.redis()?;
        let deadline = Utc::now().timestamp_millis() + 600_000;
        let _: i64 = redis
            .pool()
            .zadd(
                redis.sale_key(sale, "adm"),
                None,
                None,
                false,
                false,
                (deadline as f64, &user.as_bytes()[..]),
            )
            .await?;
        Ok(())
    }

    fn pass(&self, sale: SaleId, user: UserId, ttl_seconds: i64) -> anyhow::Result<String> {
        let now = Utc::now().timestamp();
        let claims = PassClaims::new(user, sale, now, now + ttl_seconds);
        tokens::sign(&self.api.passes, &claims).map_err(|e| anyhow::anyhow!("{e}"))
    }

    async fn order(
        &self,
        buyer: &Buyer,
        sale: SaleId,
        quantity: i64,
        key: &str,
    ) -> anyhow::Result<Reply> {
        self.api
            .call_with(
                Method::POST,
                "/api/orders",
                Some(&buyer.token),
                &[("Dropline-Pass", &buyer.pass), ("Idempotency-Key", key)],
                Some(json!({"sale_id": sale, "quantity": quantity})),
            )
            .await
    }

    async fn counters(&self, sale: SaleId) -> anyhow::Result<(i64, i64, i64)> {
        let redis = self.api.deps.redis()?;
        let pool = redis.pool();
        let avail: i64 = pool.get(redis.sale_key(sale, "avail")).await?;
        let held: i64 = pool.get(redis.sale_key(sale, "held")).await?;
        let sold: i64 = pool.get(redis.sale_key(sale, "sold")).await?;
        Ok((avail, held, sold))
    }

    /// What the workers' recorder does, once: the sale's outbox into MySQL (here each entry is
    /// written as it stands, in outbox order, so the last entry of an order wins).
    async fn record(&self, sale: SaleId) -> anyhow::Result<()> {
        let outbox = Outbox::new(self.api.deps.redis()?, sale);
        outbox.ensure_group().await?;
        loop {
            let entries = outbox.read("test", 500).await?;
            if entries.is_empty() {
                return Ok(());
            }
            for row in entries.iter().filter_map(|e| e.row.as_ref()) {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "REPLACE INTO orders ({}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    ledger::COLUMNS
                )))
                .bind(row.id)
                .bind(row.sale)
                .bind(row.user)
                .bind(i32::try_from(row.quantity)?)
                .bind(row.amount)
                .bind(&row.currency)
                .bind(row.state.as_str())
                .bind(row.deadline)
                .bind(&row.idempotency_key)
                .bind(row.created)
                .bind(row.updated)
                .execute(self.api.mysql())
                .await?;
            }
            let ids: Vec<String> = entries.into_iter().map(|e| e.id).collect();
            outbox.done(&ids).await?;
        }
    }
}

#[tokio::test]
async fn an_admitted_buyer_orders_once_per_idempotency_key() -> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let sale = shop.sale(10, 2).await?;
    let other_sale = shop.sale(10, 2).await?;
    let buyer = shop.buyer(sale).await?;

    let first = shop.order(&buyer, sale, 1, "k-1").await?;
    first.expect(201, None);
    let order = id_of(&first.body)?;
    assert_eq!(first.body["sale_id"], json!(sale));
    assert_eq!(first.body["quantity"], 1);
    assert_eq!(first.body["amount"], 39_000);
    assert_eq!(first.body["currency"], "KRW");
    assert_eq!(first.body["status"], "held");
    assert!(first.body["hold_expires_at"].as_str().is_some());
    assert_eq!(shop.counters(sale).await?, (9, 1, 0));

    // Same key, same body: the same order, 200, nothing taken.
    let again = shop.order(&buyer, sale, 1, "k-1").await?;
    again.expect(200, None);
    assert_eq!(id_of(&again.body)?, order);
    assert_eq!(shop.counters(sale).await?, (9, 1, 0));
    // Same key, another body (quantity, or another sale): 409.
    shop.order(&buyer, sale, 2, "k-1")
        .await?
        .expect(409, Some("idempotency_key_reused"));
    shop.admit(other_sale, buyer.id).await?;
    let other_pass = shop.pass(other_sale, buyer.id, 600)?;
    let cross = Buyer {
        id: buyer.id,
        token: buyer.token.clone(),
        pass: other_pass,
    };
    shop.order(&cross, other_sale, 1, "k-1")
        .await?
        .expect(409, Some("idempotency_key_reused"));
    assert_eq!(shop.counters(other_sale).await?, (10, 0, 0));
    // A new key is a new order (up to the limit of 2).
    shop.order(&buyer, sale, 1, "k-2").await?.expect(201, None);
    shop.order(&buyer, sale, 1, "k-3")
        .await?
        .expect(409, Some("limit_exceeded"));
    // A refused request leaves its key free: with stock back it could be used again.
    assert_eq!(shop.counters(sale).await?, (8, 2, 0));

    // Read it; another buyer sees 404.
    let read = shop
        .api
        .get(&format!("/api/orders/{order}"), Some(&buyer.token))
        .await?;
    read.expect(200, None);
    assert_eq!(read.body["status"], "held");
    let stranger = shop.buyer(sale).await?;
    shop.api
        .get(&format!("/api/orders/{order}"), Some(&stranger.token))
        .await?
        .expect(404, Some("not_found"));
    shop.api
        .get(
            &format!("/api/orders/{}", Uuid::now_v7()),
            Some(&buyer.token),
        )
        .await?
        .expect(404, Some("not_found"));
    shop.api
        .get(&format!("/api/orders/{order}"), None)
        .await?
        .expect(401, Some("unauthorized"));
    shop.api.stop().await
}

#[tokio::test]
async fn orders_without_a_valid_pass_or_key_are_refused_and_take_nothing() -> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let sale = shop.sale(5, 1).await?;
    let other_sale = shop.sale(5, 1).await?;
    let buyer = shop.buyer(sale).await?;
    let stranger = shop.buyer(sale).await?;
    let post = |pass: Option<String>, key: Option<&'static str>, body: Value| {
        let token = buyer.token.clone();
        let api = &shop.api;
        async move {
            let mut headers: Vec<(&str, String)> = Vec::new();
            if let Some(pass) = pass {
                headers.push(("Dropline-Pass", pass));
            }
            if let Some(key) = key {
                headers.push(("Idempotency-Key", key.to_owned()));
            }
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            api.call_with(
                Method::POST,
                "/api/orders",
                Some(&token),
                &headers,
                Some(body),
            )
            .await
        }
    };
    let body = json!({"sale_id": sale, "quantity": 1});
    // No pass, another sale's, another user's, expired, forged.
    post(None, Some("a"), body.clone())
        .await?
        .expect(403, Some("not_admitted"));
    post(
        Some(shop.pass(other_sale, buyer.id, 600)?),
        Some("a"),
        body.clone(),
    )
    .await?
    .expect(403, Some("not_admitted"));
    post(Some(stranger.pass.clone()), Some("a"), body.clone())
        .await?
        .expect(403, Some("not_admitted"));
    post(
        Some(shop.pass(sale, buyer.id, -120)?),
        Some("a"),
        body.clone(),
    )
    .await?
    .expect(403, Some("not_admitted"));
    let mut forged = buyer.pass.clone();
    forged.pop();
    forged.push(if buyer.pass.ends_with('A') { 'B' } else { 'A' });
    post(Some(forged), Some("a"), body.clone())
        .await?
        .expect(403, Some("not_admitted"));
    // No key, an empty or too long one; bad quantity; unknown field; not JSON.
    post(Some(buyer.pass.clone()), None, body.clone())
        .await?
        .expect(400, Some("bad_request"));
    let long: &'static str = Box::leak("k".repeat(65).into_boxed_str());
    post(Some(buyer.pass.clone()), Some(long), body.clone())
        .await?
        .expect(400, Some("bad_request"));
    for bad in [
        json!({"sale_id": sale, "quantity": 0}),
        json!({"sale_id": sale, "quantity": -1}),
        json!({"sale_id": sale, "quantity": 1, "price": 1}),
        json!({"sale_id": "nope", "quantity": 1}),
        json!({"quantity": 1}),
    ] {
        post(Some(buyer.pass.clone()), Some("a"), bad)
            .await?
            .expect(400, Some("bad_request"));
    }
    // A valid pass but the admission itself is gone (used up, or lapsed): not_admitted.
    let redis = shop.api.deps.redis()?;
    let _: i64 = redis
        .pool()
        .zrem(redis.sale_key(sale, "adm"), &buyer.id.as_bytes()[..])
        .await?;
    post(Some(buyer.pass.clone()), Some("a"), body.clone())
        .await?
        .expect(403, Some("not_admitted"));
    assert_eq!(shop.counters(sale).await?, (5, 0, 0));
    shop.api.stop().await
}

#[tokio::test]
async fn sold_out_and_paused_sales_refuse_in_the_contract_shape() -> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let sale = shop.sale(1, 1).await?;
    let first = shop.buyer(sale).await?;
    let second = shop.buyer(sale).await?;
    shop.order(&first, sale, 1, "x").await?.expect(201, None);
    shop.order(&second, sale, 1, "x")
        .await?
        .expect(409, Some("sold_out"));
    let reply = shop
        .api
        .call(
            Method::PATCH,
            &format!("/api/admin/sales/{sale}"),
            Some(&shop.admin),
            Some(json!({"paused": true})),
        )
        .await?;
    reply.expect(200, None);
    shop.order(&second, sale, 1, "y")
        .await?
        .expect(409, Some("sale_not_open"));
    assert_eq!(shop.counters(sale).await?, (0, 1, 0));
    shop.api.stop().await
}

#[tokio::test]
async fn cancel_gives_the_stock_back_once_and_only_from_held() -> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let sale = shop.sale(3, 2).await?;
    let buyer = shop.buyer(sale).await?;
    let a = id_of(&shop.order(&buyer, sale, 1, "a").await?.body)?;
    let b = id_of(&shop.order(&buyer, sale, 1, "b").await?.body)?;
    assert_eq!(shop.counters(sale).await?, (1, 2, 0));

    let path = format!("/api/orders/{a}");
    let stranger = shop.buyer(sale).await?;
    shop.api
        .call(Method::DELETE, &path, Some(&stranger.token), None)
        .await?
        .expect(404, Some("not_found"));
    let done = shop
        .api
        .call(Method::DELETE, &path, Some(&buyer.token), None)
        .await?;
    done.expect(200, None);
    assert_eq!(done.body, json!({"status": "cancelled"}));
    assert_eq!(shop.counters(sale).await?, (2, 1, 0));
    // Again: same answer, stock not given back twice.
    shop.api
        .call(Method::DELETE, &path, Some(&buyer.token), None)
        .await?
        .expect(200, None);
    assert_eq!(shop.counters(sale).await?, (2, 1, 0));
    // A paying order cannot be cancelled; a cancelled one cannot be paid.
    let pay_b = format!("/api/orders/{b}/pay");
    shop.api
        .post(&pay_b, Some(&buyer.token), json!({"card_token": "tok_ok"}))
        .await?
        .expect(202, None);
    shop.api
        .call(
            Method::DELETE,
            &format!("/api/orders/{b}"),
            Some(&buyer.token),
            None,
        )
        .await?
        .expect(409, Some("invalid_state"));
    shop.api
        .post(
            &format!("{path}/pay"),
            Some(&buyer.token),
            json!({"card_token": "tok_ok"}),
        )
        .await?
        .expect(409, Some("invalid_state"));
    assert_eq!(shop.counters(sale).await?, (2, 1, 0));
    shop.api.stop().await
}

#[tokio::test]
async fn pay_moves_to_paying_and_requests_the_payment_once_per_timeout() -> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let sale = shop.sale(3, 1).await?;
    let buyer = shop.buyer(sale).await?;
    let order = id_of(&shop.order(&buyer, sale, 1, "p").await?.body)?;
    let path = format!("/api/orders/{order}/pay");
    for bad in [
        json!({}),
        json!({"card_token": ""}),
        json!({"card_token": "a", "cvc": 1}),
    ] {
        shop.api
            .post(&path, Some(&buyer.token), bad)
            .await?
            .expect(400, Some("bad_request"));
    }
    let stranger = shop.buyer(sale).await?;
    shop.api
        .post(
            &path,
            Some(&stranger.token),
            json!({"card_token": "tok_ok"}),
        )
        .await?
        .expect(404, Some("not_found"));

    let paid = shop
        .api
        .post(&path, Some(&buyer.token), json!({"card_token": "tok_ok"}))
        .await?;
    paid.expect(202, None);
    assert_eq!(paid.body, json!({"status": "paying"}));
    let read = shop
        .api
        .get(&format!("/api/orders/{order}"), Some(&buyer.token))
        .await?;
    assert_eq!(read.body["status"], "paying");
    assert_eq!(read.body["hold_expires_at"], Value::Null);
    // Paying again is harmless: the same state, and no second request while the first was
    // confirmed within the payment timeout (whatever card the repeat names).
    for card in ["tok_ok", "tok_fail", "tok_other"] {
        shop.api
            .post(&path, Some(&buyer.token), json!({"card_token": card}))
            .await?
            .expect(202, None);
    }
    let broker = shop.api.deps.broker()?;
    let queue = broker.names().queue(dropline_core::clients::amqp::PAYMENTS);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(broker.queue_len(&queue).await?, 1);
    // Once that claim is gone (the timeout passed, or the publish failed), a pay requests the
    // payment again, with the first pay's card.
    let redis = shop.api.deps.redis()?;
    let _: i64 = redis
        .pool()
        .del(redis.sale_key(sale, &format!("payreq:{order}")))
        .await?;
    shop.api
        .post(&path, Some(&buyer.token), json!({"card_token": "tok_fail"}))
        .await?
        .expect(202, None);
    let mut cards = Vec::new();
    let channel = broker.channel().await?;
    while let Some(message) = channel
        .basic_get(
            queue.as_str().into(),
            lapin::options::BasicGetOptions::default(),
        )
        .await?
    {
        let envelope: Value = serde_json::from_slice(&message.delivery.data)?;
        cards.push(envelope["data"]["card_token"].clone());
    }
    assert_eq!(cards, vec![json!("tok_ok"), json!("tok_ok")]);
    assert_eq!(shop.counters(sale).await?, (2, 1, 0));
    shop.api.stop().await
}

#[tokio::test]
async fn the_list_shows_own_orders_newest_first_with_live_states() -> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let sale = shop.sale(10, 5).await?;
    let buyer = shop.buyer(sale).await?;
    let other = shop.buyer(sale).await?;
    let mut made = Vec::new();
    for key in ["1", "2", "3", "4", "5"] {
        made.push(id_of(&shop.order(&buyer, sale, 1, key).await?.body)?);
    }
    shop.order(&other, sale, 1, "1").await?.expect(201, None);
    shop.record(sale).await?;
    // Cancel one after recording: the list shows Redis's live state for held rows.
    shop.api
        .call(
            Method::DELETE,
            &format!("/api/orders/{}", made[4]),
            Some(&buyer.token),
            None,
        )
        .await?
        .expect(200, None);

    let page1 = shop
        .api
        .get("/api/orders?limit=3", Some(&buyer.token))
        .await?;
    page1.expect(200, None);
    let ids = |page: &Reply| -> anyhow::Result<Vec<Uuid>> {
        page.body["items"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("no items"))?
            .iter()
            .map(id_of)
            .collect()
    };
    assert_eq!(ids(&page1)?, vec![made[4], made[3], made[2]]);
    assert_eq!(page1.body["items"][0]["status"], "cancelled");
    let cursor = page1.body["next_cursor"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no cursor"))?
        .to_owned();
    let page2 = shop
        .api
        .get(
            &format!("/api/orders?limit=3&cursor={cursor}"),
            Some(&buyer.token),
        )
        .await?;
    page2.expect(200, None);
    assert_eq!(ids(&page2)?, vec![made[1], made[0]]);
    assert_eq!(page2.body["next_cursor"], Value::Null);
    shop.api
        .get("/api/orders?cursor=garbage", Some(&buyer.token))
        .await?
        .expect(400, Some("bad_request"));
    shop.api
        .get("/api/orders?limit=0", Some(&buyer.token))
        .await?
        .expect(400, Some("bad_request"));
    // MySQL agrees with Redis once recorded.
    shop.record(sale).await?;
    let row = ledger::get(shop.api.mysql(), OrderId::from(made[4]))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no row"))?;
    assert_eq!(row.state.as_str(), "cancelled");
    assert_eq!(row.user, buyer.id);
    shop.api.stop().await
}

/// Keys under this test's prefix whose name continues with `rest` (`order:*`, `idem:*`).
async fn keys_under(shop: &Shop, rest: &str) -> anyhow::Result<usize> {
    let redis = shop.api.deps.redis()?;
    let pattern = redis.key(rest);
    Ok(dropline_testkit::scan_keys(redis, &pattern).await?.len())
}

#[tokio::test]
async fn refused_orders_leave_nothing_behind() -> anyhow::Result<()> {
    // The per-buyer limit would answer most of these 429 first: off, to reach reserve.lua.
    let shop = Shop::start_with(&[("LIMITS__ORDERS_PER_USER_PER_MINUTE", "100000")]).await?;
    let sale = shop.sale(3, 1).await?;
    let buyer = shop.buyer(sale).await?;
    shop.order(&buyer, sale, 1, "first")
        .await?
        .expect(201, None);
    assert_eq!(keys_under(&shop, "order:*").await?, 1);
    assert_eq!(keys_under(&shop, "idem:*").await?, 1);
    // A buyer looping on refusals: over the limit with fresh keys, the same key with another
    // body, and replays of the order made.
    for i in 0..40 {
        shop.order(&buyer, sale, 1, &format!("more-{i}"))
            .await?
            .expect(409, Some("limit_exceeded"));
        shop.order(&buyer, sale, 2, "first")
            .await?
            .expect(409, Some("idempotency_key_reused"));
        shop.order(&buyer, sale, 1, "first")
            .await?
            .expect(200, None);
    }
    // Sold out for another buyer.
    let other = shop.buyer(sale).await?;
    let redis = shop.api.deps.redis()?;
    let _: () = redis
        .pool()
        .set(redis.sale_key(sale, "avail"), 0, None, None, false)
        .await?;
    for i in 0..20 {
        shop.order(&other, sale, 1, &format!("late-{i}"))
            .await?
            .expect(409, Some("sold_out"));
    }
    // Only the one order's index entry and binding are left.
    assert_eq!(keys_under(&shop, "order:*").await?, 1);
    assert_eq!(keys_under(&shop, "idem:*").await?, 1);
    shop.api.stop().await
}

#[tokio::test]
async fn a_key_that_made_an_order_stays_bound_to_it_under_a_race() -> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let sale = shop.sale(1_000, 2).await?;
    let elsewhere = shop.sale(1_000, 2).await?;
    for round in 0..30 {
        let buyer = shop.buyer(sale).await?;
        let key = format!("race-{round}");
        // Two bodies with one key at once: one makes the order, the other is refused.
        let (a, b) = tokio::join!(
            shop.order(&buyer, sale, 1, &key),
            shop.order(&buyer, sale, 2, &key)
        );
        let (a, b) = (a?, b?);
        let made = [&a, &b].iter().filter(|r| r.status.as_u16() == 201).count();
        assert_eq!(made, 1, "round {round}: {} and {}", a.body, b.body);
        // A third body, for another sale, must not make a second order under the key.
        let third = Buyer {
            id: buyer.id,
            token: buyer.token.clone(),
            pass: shop.pass(elsewhere, buyer.id, 600)?,
        };
        shop.admit(elsewhere, buyer.id).await?;
        shop.order(&third, elsewhere, 1, &key)
            .await?
            .expect(409, Some("idempotency_key_reused"));
    }
    shop.api.stop().await
}

#[tokio::test]
async fn a_retry_after_the_pass_expired_gets_the_order() -> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let sale = shop.sale(5, 1).await?;
    let buyer = shop.buyer(sale).await?;
    let made = shop.order(&buyer, sale, 1, "k").await?;
    made.expect(201, None);
    // The same request again with an expired pass, or with none: the stored order.
    for pass in [Some(shop.pass(sale, buyer.id, -120)?), None] {
        let mut headers = vec![("Idempotency-Key", "k")];
        if let Some(pass) = &pass {
            headers.push(("Dropline-Pass", pass.as_str()));
        }
        let again = shop
            .api
            .call_with(
                Method::POST,
                "/api/orders",
                Some(&buyer.token),
                &headers,
                Some(json!({"sale_id": sale, "quantity": 1})),
            )
            .await?;
        again.expect(200, None);
        assert_eq!(again.body, made.body);
        // Another body under the key: 409, pass or not.
        let other = shop
            .api
            .call_with(
                Method::POST,
                "/api/orders",
                Some(&buyer.token),
                &headers,
                Some(json!({"sale_id": sale, "quantity": 2})),
            )
            .await?;
        other.expect(409, Some("idempotency_key_reused"));
    }
    // A new key still needs a valid pass.
    let fresh = shop
        .api
        .call_with(
            Method::POST,
            "/api/orders",
            Some(&buyer.token),
            &[
                ("Idempotency-Key", "new"),
                ("Dropline-Pass", &shop.pass(sale, buyer.id, -120)?),
            ],
            Some(json!({"sale_id": sale, "quantity": 1})),
        )
        .await?;
    fresh.expect(403, Some("not_admitted"));
    assert_eq!(keys_under(&shop, "idem:*").await?, 1);
    shop.api.stop().await
}

#[tokio::test]
async fn orders_and_pays_are_limited_per_buyer() -> anyhow::Result<()> {
    let shop = Shop::start_with(&[
        ("LIMITS__ORDERS_PER_USER_PER_MINUTE", "3"),
        ("LIMITS__PAY_PER_USER_PER_MINUTE", "2"),
    ])
    .await?;
    let sale = shop.sale(10, 1).await?;
    let buyer = shop.buyer(sale).await?;
    let order = id_of(&shop.order(&buyer, sale, 1, "k").await?.body)?;
    shop.order(&buyer, sale, 1, "k").await?.expect(200, None);
    shop.order(&buyer, sale, 1, "k").await?.expect(200, None);
    let limited = shop.order(&buyer, sale, 1, "k").await?;
    limited.expect(429, Some("rate_limited"));
    assert!(limited.headers.contains_key("retry-after"));
    // Another buyer is not held back.
    let other = shop.buyer(sale).await?;
    shop.order(&other, sale, 1, "k").await?.expect(201, None);

    let path = format!("/api/orders/{order}/pay");
    for _ in 0..2 {
        shop.api
            .post(&path, Some(&buyer.token), json!({"card_token": "tok_ok"}))
            .await?
            .expect(202, None);
    }
    let limited = shop
        .api
        .post(&path, Some(&buyer.token), json!({"card_token": "tok_ok"}))
        .await?;
    limited.expect(429, Some("rate_limited"));
    assert!(limited.headers.contains_key("retry-after"));
    shop.api.stop().await
}

/// design/payments.md "Buyer": `payment` in GET /api/orders/{id}: null before paying,
/// processing while the provider works, the Stripe intent's next step while it waits for the
/// buyer (3-D Secure), the recorded outcome once there is one.
#[tokio::test]
async fn the_order_shows_its_payment() -> anyhow::Result<()> {
    let shop = Shop::start().await?;
    let sale = shop.sale(10, 5).await?;
    let buyer = shop.buyer(sale).await?;
    let order = id_of(&shop.order(&buyer, sale, 1, "1").await?.body)?;
    let path = format!("/api/orders/{order}");
    let read = shop.api.get(&path, Some(&buyer.token)).await?;
    assert_eq!(read.body["status"], "held");
    assert_eq!(read.body["payment"], Value::Null);
    shop.api
        .post(
            &format!("{path}/pay"),
            Some(&buyer.token),
            json!({"card_token": "tok_visa"}),
        )
        .await?
        .expect(202, None);
    let read = shop.api.get(&path, Some(&buyer.token)).await?;
    assert_eq!(
        read.body["payment"],
        json!({"provider": "simulated", "status": "processing", "reason": null, "next_action": null})
    );
    let next = json!({"type": "stripe_js", "client_secret": "pi_1_secret_2"});
    sqlx::query(
        "INSERT INTO payment_intents (order_id, sale_id, state, payment_method, intent_id, \
         intent_status, next_action, created_at, updated_at) VALUES (?, ?, 'created', \
         'pm_card_visa', 'pi_1', 'requires_action', ?, UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))",
    )
    .bind(order)
    .bind(sale)
    .bind(next.to_string())
    .execute(shop.api.mysql())
    .await?;
    let read = shop.api.get(&path, Some(&buyer.token)).await?;
    assert_eq!(
        read.body["payment"],
        json!({"provider": "stripe", "status": "requires_action", "reason": null, "next_action": next})
    );
    sqlx::query(
        "INSERT INTO payments (id, order_id, sale_id, amount, currency, status, provider_ref, \
         created_at, updated_at) VALUES (?, ?, ?, 39000, 'KRW', 'declined', 'card_declined', \
         UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))",
    )
    .bind(Uuid::now_v7())
    .bind(order)
    .bind(sale)
    .execute(shop.api.mysql())
    .await?;
    let read = shop.api.get(&path, Some(&buyer.token)).await?;
    assert_eq!(
        read.body["payment"],
        json!({"provider": "stripe", "status": "declined", "reason": "card_declined", "next_action": null})
    );
    shop.api.stop().await
}
