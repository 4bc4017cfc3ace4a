//! Catalog administration against real MySQL and Redis: the role gate, creating products and
//! sales with every validation rule, arming (the Lua script's own contract: atomic, once),
//! a Redis outage while creating a sale, `PATCH` reaching MySQL, Redis and the cache, and draw
//! sales' fields (design/draw.md: mode, entries_close_at, claim_seconds, the seed's commitment,
//! the draw states).

mod common;

use std::collections::HashMap;

use chrono::{SecondsFormat, Utc};
use common::{Reply, TestApi};
use dropline_api::cache::Entry;
use dropline_core::clients::redis::Redis;
use dropline_core::ids::{ProductId, SaleId};
use dropline_core::sale::{self, SaleConfig, SaleState};
use dropline_testkit::TestEnv;
use fred::prelude::*;
use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

fn rfc3339(offset: chrono::Duration) -> String {
    (Utc::now() + offset).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn id(value: &Value) -> anyhow::Result<Uuid> {
    Ok(value["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no id in {value}"))?
        .parse()?)
}

/// `base` with the fields of `extra` added or replaced.
fn merged(base: &Value, extra: Value) -> Value {
    let mut body = base.clone();
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

async fn patch(
    api: &TestApi,
    token: Option<&str>,
    sale: &str,
    body: Value,
) -> anyhow::Result<Reply> {
    api.call(
        Method::PATCH,
        &format!("/api/admin/sales/{sale}"),
        token,
        Some(body),
    )
    .await
}

async fn new_sale(api: &TestApi, admin: &str) -> anyhow::Result<Value> {
    let product = api.new_product(admin).await?;
    let reply = api
        .post(
            "/api/admin/sales",
            Some(admin),
            json!({
                "product_id": product["id"],
                "stock": 10,
                "opens_at": rfc3339(chrono::Duration::minutes(-1)),
            }),
        )
        .await?;
    reply.expect(201, None);
    Ok(reply.body)
}

async fn cfg(redis: &Redis, sale: SaleId) -> anyhow::Result<HashMap<String, String>> {
    Ok(redis.pool().hgetall(redis.sale_key(sale, "cfg")).await?)
}

async fn counters(redis: &Redis, sale: SaleId) -> anyhow::Result<(i64, i64, i64)> {
    let pool = redis.pool();
    let avail: i64 = pool.get(redis.sale_key(sale, "avail")).await?;
    let held: i64 = pool.get(redis.sale_key(sale, "held")).await?;
    let sold: i64 = pool.get(redis.sale_key(sale, "sold")).await?;
    Ok((avail, held, sold))
}

async fn count_sales(api: &TestApi) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM sales")
        .fetch_one(api.mysql())
        .await?)
}

// ---------------------------------------------------------------------------------------------
// The role gate

#[tokio::test]
async fn admin_routes_need_an_admin() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let buyer = api.buyer().await?;
    let sale = SaleId::new_v7();
    let calls = [
        (
            Method::POST,
            "/api/admin/products".to_owned(),
            json!({"name": "x", "price": 1}),
        ),
        (
            Method::POST,
            "/api/admin/sales".to_owned(),
            json!({"product_id": Uuid::now_v7(), "stock": 1, "opens_at": rfc3339(chrono::Duration::zero())}),
        ),
        (
            Method::PATCH,
            format!("/api/admin/sales/{sale}"),
            json!({"paused": true}),
        ),
        // Checked before the path and the body: a stranger learns nothing from them.
        (
            Method::PATCH,
            "/api/admin/sales/not-a-uuid".to_owned(),
            json!({"nope": 1}),
        ),
    ];
    for (method, path, body) in calls {
        api.call(method.clone(), &path, None, Some(body.clone()))
            .await?
            .expect(401, Some("unauthorized"));
        api.call(
            method.clone(),
            &path,
            Some("not.a.token"),
            Some(body.clone()),
        )
        .await?
        .expect(401, Some("unauthorized"));
        api.call(method, &path, Some(&buyer), Some(body))
            .await?
            .expect(403, Some("forbidden"));
    }
    api.stop().await
}

// ---------------------------------------------------------------------------------------------
// Products

#[tokio::test]
async fn create_product_answers_201_with_defaults() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let reply = api
        .post(
            "/api/admin/products",
            Some(&admin),
            json!({"name": "  Chair  ", "price": 0}),
        )
        .await?;
    reply.expect(201, None);
    let product = &reply.body;
    assert_eq!(product["name"], "Chair", "trimmed");
    assert_eq!(product["price"], 0);
    assert_eq!(product["currency"], "KRW");
    assert!(product["description"].is_null());
    assert_eq!(id(product)?.get_version_num(), 7, "UUIDv7");

    let full = api
        .post(
            "/api/admin/products",
            Some(&admin),
            json!({"name": "Lamp", "description": "Two lines\nof text", "price": 1999, "currency": "USD"}),
        )
        .await?;
    full.expect(201, None);
    assert_eq!(full.body["currency"], "USD");
    assert_eq!(full.body["description"], "Two lines\nof text");
    // Stored as answered.
    let stored = api
        .get(&format!("/api/products/{}", id(&full.body)?), None)
        .await?;
    assert_eq!(stored.body, full.body);
    api.stop().await
}

#[tokio::test]
async fn create_product_rejects_bad_input_naming_the_field() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let cases = [
        (json!({"price": 1}), "name"),
        (json!({"name": "", "price": 1}), "name"),
        (json!({"name": "   ", "price": 1}), "name"),
        (json!({"name": "x".repeat(201), "price": 1}), "name"),
        (json!({"name": "a\u{0007}b", "price": 1}), "name"),
        (json!({"name": "x"}), "price"),
        (json!({"name": "x", "price": -1}), "price"),
        (json!({"name": "x", "price": 1.5}), "price"),
        (json!({"name": "x", "price": "100"}), "price"),
        (
            json!({"name": "x", "price": 9_007_199_254_740_992_i64}),
            "price",
        ),
        (
            json!({"name": "x", "price": 1, "currency": "krw"}),
            "currency",
        ),
        (
            json!({"name": "x", "price": 1, "currency": "KRWX"}),
            "currency",
        ),
        (json!({"name": "x", "price": 1, "colour": "red"}), "colour"),
    ];
    for (body, field) in cases {
        let reply = api
            .post("/api/admin/products", Some(&admin), body.clone())
            .await?;
        reply.expect(400, Some("bad_request"));
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(field),
            "{body}: `{message}` does not name {field}"
        );
    }
    // Not JSON at all: 415, in the contract's shape.
    let response = api
        .http
        .post(format!("{}/api/admin/products", api.base))
        .bearer_auth(&admin)
        .body("name=x")
        .send()
        .await?;
    assert_eq!(response.status(), 415);
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], "unsupported_media_type");
    let none: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products")
        .fetch_one(api.mysql())
        .await?;
    assert_eq!(none, 0);
    api.stop().await
}

// ---------------------------------------------------------------------------------------------
// Sales

#[tokio::test]
async fn create_sale_writes_mysql_and_arms_redis() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let product = api.new_product(&admin).await?;
    let opens_at = "2030-01-02T03:04:05.678Z";
    let reply = api
        .post(
            "/api/admin/sales",
            Some(&admin),
            json!({
                "product_id": product["id"],
                "stock": 100,
                "opens_at": "2030-01-02T12:04:05.678+09:00",
                "closes_at": "2030-01-03T03:04:05Z",
                "per_user_limit": 2,
                "hold_seconds": 300,
                "admit_per_second": 50,
                "max_active": 500,
            }),
        )
        .await?;
    reply.expect(201, None);
    let sale = &reply.body;
    let sale_id = id(sale)?;
    assert_eq!(
        sale,
        &json!({
            "id": sale_id.to_string(),
            "product": product,
            "stock_total": 100,
            "available": 100,
            "opens_at": opens_at,
            "closes_at": "2030-01-03T03:04:05.000Z",
            "per_user_limit": 2,
            "hold_seconds": 300,
            "admit_per_second": 50,
            "max_active": 500,
            "paused": false,
            "state": "scheduled",
            "pow_difficulty": 0,
            "groups": [],
            "presale_only_until": null,
            "notice": null,
            "mode": "fcfs",
            "draw": null,
            "line_shards": 1,
        })
    );

    let redis = &api.state.redis;
    let cfg = cfg(redis, SaleId::from(sale_id)).await?;
    let opens_ms = chrono::DateTime::parse_from_rfc3339(opens_at)?.timestamp_millis();
    let closes_ms =
        chrono::DateTime::parse_from_rfc3339("2030-01-03T03:04:05Z")?.timestamp_millis();
    let expected: HashMap<String, String> = [
        ("stock_total", "100".to_owned()),
        ("opens_at", opens_ms.to_string()),
        ("closes_at", closes_ms.to_string()),
        ("per_user_limit", "2".to_owned()),
        ("hold_seconds", "300".to_owned()),
        ("admit_per_second", "50".to_owned()),
        ("max_active", "500".to_owned()),
        ("paused", "0".to_owned()),
        ("closed", "0".to_owned()),
        ("product_id", id(&product)?.to_string()),
        ("price", "390000".to_owned()),
        ("currency", "KRW".to_owned()),
        ("pow_difficulty", "0".to_owned()),
        ("groups", String::new()),
        ("presale_only_until", "0".to_owned()),
        ("notice", String::new()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(cfg, expected);
    assert_eq!(counters(redis, SaleId::from(sale_id)).await?, (100, 0, 0));

    // MySQL holds the same sale (the record a rearm would read).
    let stored = SaleConfig::load(api.mysql(), SaleId::from(sale_id))
        .await?
        .ok_or_else(|| anyhow::anyhow!("sale not in MySQL"))?;
    assert_eq!(stored.stock_total, 100);
    assert_eq!(stored.opens_at.timestamp_millis(), opens_ms);
    assert_eq!(stored.max_active, Some(500));
    assert!(!stored.paused && !stored.closed);

    // Defaults: per_user_limit 1, hold 600 s, 100 admitted per second, no active limit.
    let defaults = api
        .post(
            "/api/admin/sales",
            Some(&admin),
            json!({"product_id": product["id"], "stock": 1, "opens_at": rfc3339(chrono::Duration::minutes(-5))}),
        )
        .await?;
    defaults.expect(201, None);
    let d = &defaults.body;
    assert_eq!(
        (
            &d["per_user_limit"],
            &d["hold_seconds"],
            &d["admit_per_second"],
            &d["max_active"],
            &d["closes_at"],
            &d["state"],
        ),
        (
            &json!(1),
            &json!(600),
            &json!(100),
            &Value::Null,
            &Value::Null,
            &json!("open")
        )
    );
    let d_cfg = self::cfg(redis, SaleId::from(id(d)?)).await?;
    assert_eq!(d_cfg.get("max_active").map(String::as_str), Some("0"));
    assert_eq!(d_cfg.get("closes_at").map(String::as_str), Some("0"));
    api.stop().await
}

#[tokio::test]
async fn create_sale_rejects_bad_input_naming_the_field() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let product = api.new_product(&admin).await?;
    let opens = rfc3339(chrono::Duration::hours(1));
    let base = json!({"product_id": product["id"], "stock": 10, "opens_at": opens});
    let with = |extra: Value| merged(&base, extra);
    let without = |field: &str| {
        let mut body = base.clone();
        if let Some(b) = body.as_object_mut() {
            b.remove(field);
        }
        body
    };
    let cases = [
        (without("product_id"), "product_id"),
        (with(json!({"product_id": "chair"})), "product_id"),
        (with(json!({"product_id": Uuid::now_v7()})), "product_id"),
        (without("stock"), "stock"),
        (with(json!({"stock": 0})), "stock"),
        (with(json!({"stock": 10_000_001})), "stock"),
        (with(json!({"stock": -5})), "stock"),
        (without("opens_at"), "opens_at"),
        (with(json!({"opens_at": "next monday"})), "opens_at"),
        (with(json!({"opens_at": "2030-01-01T00:00:00"})), "opens_at"),
        (with(json!({"closes_at": opens})), "closes_at"),
        (
            with(json!({"closes_at": rfc3339(chrono::Duration::minutes(30))})),
            "closes_at",
        ),
        (with(json!({"closes_at": "soon"})), "closes_at"),
        (with(json!({"per_user_limit": 0})), "per_user_limit"),
        (with(json!({"per_user_limit": 11})), "per_user_limit"),
        (with(json!({"hold_seconds": 9})), "hold_seconds"),
        (with(json!({"hold_seconds": 86_401})), "hold_seconds"),
        (with(json!({"admit_per_second": 0})), "admit_per_second"),
        (
            with(json!({"admit_per_second": 100_001})),
            "admit_per_second",
        ),
        (with(json!({"max_active": 0})), "max_active"),
        (with(json!({"max_active": -1})), "max_active"),
        (with(json!({"price": 5})), "price"),
        (with(json!({"line_shards": 0})), "line_shards"),
        (with(json!({"line_shards": 65})), "line_shards"),
        (with(json!({"line_shards": -3})), "line_shards"),
        (with(json!({"line_shards": 2.5})), "line_shards"),
        (with(json!({"line_shards": "3"})), "line_shards"),
    ];
    for (body, field) in cases {
        let reply = api
            .post("/api/admin/sales", Some(&admin), body.clone())
            .await?;
        reply.expect(400, Some("bad_request"));
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(field),
            "{body}: `{message}` does not name {field}"
        );
    }
    // The edges that are allowed.
    for extra in [
        json!({"stock": 10_000_000, "per_user_limit": 10_000_000}),
        json!({"hold_seconds": 10, "admit_per_second": 1, "max_active": 1}),
        json!({"hold_seconds": 86_400, "admit_per_second": 100_000, "max_active": null, "closes_at": null}),
    ] {
        api.post("/api/admin/sales", Some(&admin), with(extra))
            .await?
            .expect(201, None);
    }
    assert_eq!(
        count_sales(&api).await?,
        3,
        "only the valid ones were stored"
    );
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_sale_with_redis_down_is_503_and_writes_nothing() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let product = api.new_product(&admin).await?;

    // A replica whose Redis goes through a proxy we can cut.
    let replica = api.replica_with_cuttable_redis().await?;
    let base = replica.base.clone();
    replica.proxy.cut().await;

    let response = api
        .http
        .post(format!("{base}/api/admin/sales"))
        .bearer_auth(&admin)
        .json(&json!({"product_id": product["id"], "stock": 3, "opens_at": rfc3339(chrono::Duration::zero())}))
        .send()
        .await?;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], "unavailable", "{body}");

    // Nothing half-written: no sale in MySQL, and (Redis back) no sale state in Redis.
    assert_eq!(count_sales(&api).await?, 0);
    replica.proxy.restore();
    let pattern = format!("{}:{{s:*", api.state.redis.prefix());
    let (_, keys): (String, Vec<String>) = api
        .state
        .redis
        .pool()
        .next()
        .custom(
            fred::cmd!("SCAN"),
            vec![
                "0".to_owned(),
                "MATCH".into(),
                pattern,
                "COUNT".into(),
                "1000".into(),
            ],
        )
        .await?;
    assert!(keys.is_empty(), "left in Redis: {keys:?}");

    replica.stop().await?;
    api.stop().await
}

// ---------------------------------------------------------------------------------------------
// Arming: the script's own contract

fn config(stock: i64, product: Uuid) -> SaleConfig {
    SaleConfig {
        product_id: ProductId::from(product),
        price: 1000,
        currency: "KRW".into(),
        stock_total: stock,
        opens_at: Utc::now(),
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

#[tokio::test]
async fn arming_is_idempotent_already_armed_changes_nothing() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = Redis::connect(&env.config.redis).await?;
    let sale_id = SaleId::new_v7();
    let product = Uuid::now_v7();

    assert_eq!(sale::view(&redis, sale_id).await?, None, "not armed yet");
    assert!(sale::arm(&redis, sale_id, &config(10, product)).await?);
    let first_cfg = cfg(&redis, sale_id).await?;
    assert_eq!(counters(&redis, sale_id).await?, (10, 0, 0));

    // Orders move the counters; arming again (retry, second replica, other values) changes nothing.
    let pool = redis.pool();
    let _: i64 = pool.decr_by(redis.sale_key(sale_id, "avail"), 4).await?;
    let _: i64 = pool.incr_by(redis.sale_key(sale_id, "held"), 3).await?;
    let _: i64 = pool.incr_by(redis.sale_key(sale_id, "sold"), 1).await?;
    let mut other = config(99, Uuid::now_v7());
    other.paused = true;
    assert!(!sale::arm(&redis, sale_id, &other).await?);
    assert_eq!(cfg(&redis, sale_id).await?, first_cfg);
    assert_eq!(counters(&redis, sale_id).await?, (6, 3, 1));

    let view = sale::view(&redis, sale_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("armed sale has no view"))?;
    assert_eq!((view.available, view.held, view.sold), (6, 3, 1));
    assert_eq!(view.available + view.held + view.sold, view.stock_total);
    assert_eq!(view.state(), SaleState::Open);
    // The view's clock is the Redis server's: close to ours on one machine.
    assert!((view.now_ms - Utc::now().timestamp_millis()).abs() < 5_000);
    redis.quit().await;
    env.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arming_is_atomic_under_concurrent_calls() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = Redis::connect(&env.config.redis).await?;
    for _ in 0..10 {
        let sale_id = SaleId::new_v7();
        // Fifty callers race with different stock: exactly one wins, and what is stored is
        // entirely that caller's (never a mix of two).
        let configs: Vec<SaleConfig> = (1..=50).map(|n| config(n, Uuid::now_v7())).collect();
        let outcomes = join_all(configs.iter().map(|c| sale::arm(&redis, sale_id, c))).await;
        let mut winners = Vec::new();
        for (c, outcome) in configs.iter().zip(outcomes) {
            if outcome? {
                winners.push(c);
            }
        }
        assert_eq!(winners.len(), 1, "exactly one arming call wins");
        let winner = winners[0];
        let stored = cfg(&redis, sale_id).await?;
        assert_eq!(
            stored.get("stock_total"),
            Some(&winner.stock_total.to_string())
        );
        assert_eq!(
            stored.get("product_id"),
            Some(&winner.product_id.to_string())
        );
        assert_eq!(counters(&redis, sale_id).await?, (winner.stock_total, 0, 0));
    }
    redis.quit().await;
    env.cleanup().await
}

#[tokio::test]
async fn arming_with_a_bad_argument_writes_nothing() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let redis = Redis::connect(&env.config.redis).await?;
    let sale_id = SaleId::new_v7();
    for bad in [
        config(0, Uuid::now_v7()),
        SaleConfig {
            per_user_limit: 0,
            ..config(5, Uuid::now_v7())
        },
        SaleConfig {
            currency: String::new(),
            ..config(5, Uuid::now_v7())
        },
    ] {
        let error = sale::arm(&redis, sale_id, &bad).await;
        assert!(error.is_err(), "{bad:?} was armed");
        let exists: i64 = redis.pool().exists(sale::keys(&redis, sale_id)).await?;
        assert_eq!(exists, 0, "a refused arming left keys behind");
    }
    redis.quit().await;
    env.cleanup().await
}

// ---------------------------------------------------------------------------------------------
// PATCH

#[tokio::test]
async fn patch_pauses_resumes_tunes_and_closes() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let sale = new_sale(&api, &admin).await?;
    let sale_id = id(&sale)?;
    let s = sale_id.to_string();
    let redis = &api.state.redis;
    let get_state = || async {
        let r = api.get(&format!("/api/sales/{s}"), None).await?;
        r.expect(200, None);
        Ok::<_, anyhow::Error>(r.body["state"].clone())
    };
    assert_eq!(get_state().await?, "open");

    let paused = patch(&api, Some(&admin), &s, json!({"paused": true})).await?;
    paused.expect(200, None);
    assert_eq!(paused.body["state"], "paused");
    assert_eq!(paused.body["paused"], true);
    assert_eq!(get_state().await?, "paused");
    assert_eq!(
        cfg(redis, SaleId::from(sale_id))
            .await?
            .get("paused")
            .map(String::as_str),
        Some("1")
    );
    let mysql_paused: bool = sqlx::query_scalar("SELECT paused FROM sales WHERE id = ?")
        .bind(sale_id)
        .fetch_one(api.mysql())
        .await?;
    assert!(mysql_paused);

    let resumed = patch(&api, Some(&admin), &s, json!({"paused": false})).await?;
    resumed.expect(200, None);
    assert_eq!(resumed.body["state"], "open");
    assert_eq!(get_state().await?, "open");
    assert_eq!(
        cfg(redis, SaleId::from(sale_id))
            .await?
            .get("paused")
            .map(String::as_str),
        Some("0")
    );

    let tuned = patch(
        &api,
        Some(&admin),
        &s,
        json!({"admit_per_second": 7, "max_active": 30}),
    )
    .await?;
    tuned.expect(200, None);
    assert_eq!(tuned.body["admit_per_second"], 7);
    assert_eq!(tuned.body["max_active"], 30);
    let c = cfg(redis, SaleId::from(sale_id)).await?;
    assert_eq!(
        (
            c.get("admit_per_second").map(String::as_str),
            c.get("max_active").map(String::as_str)
        ),
        (Some("7"), Some("30"))
    );
    // `null` removes the limit.
    let unlimited = patch(&api, Some(&admin), &s, json!({"max_active": null})).await?;
    unlimited.expect(200, None);
    assert!(unlimited.body["max_active"].is_null());
    assert_eq!(
        cfg(redis, SaleId::from(sale_id))
            .await?
            .get("max_active")
            .map(String::as_str),
        Some("0")
    );
    let (admit, max_active): (i32, Option<i32>) =
        sqlx::query_as("SELECT admit_per_second, max_active FROM sales WHERE id = ?")
            .bind(sale_id)
            .fetch_one(api.mysql())
            .await?;
    assert_eq!((admit, max_active), (7, None));

    let closed = patch(&api, Some(&admin), &s, json!({"closed": true})).await?;
    closed.expect(200, None);
    assert_eq!(closed.body["state"], "closed");
    assert_eq!(get_state().await?, "closed");
    assert_eq!(
        cfg(redis, SaleId::from(sale_id))
            .await?
            .get("closed")
            .map(String::as_str),
        Some("1")
    );
    let closed_at: Option<chrono::DateTime<Utc>> =
        sqlx::query_scalar("SELECT closed_at FROM sales WHERE id = ?")
            .bind(sale_id)
            .fetch_one(api.mysql())
            .await?;
    assert!(closed_at.is_some());

    // A closed sale stays closed.
    for body in [
        json!({"paused": false}),
        json!({"closed": true}),
        json!({"admit_per_second": 5}),
    ] {
        patch(&api, Some(&admin), &s, body)
            .await?
            .expect(409, Some("invalid_state"));
    }
    api.stop().await
}

#[tokio::test]
async fn patch_rejects_what_it_cannot_do() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let sale = new_sale(&api, &admin).await?;
    let s = id(&sale)?.to_string();
    for (body, field) in [
        (json!({}), "nothing to change"),
        (json!({"paused": null}), "nothing to change"),
        (json!({"closed": false}), "closed"),
        (json!({"admit_per_second": 0}), "admit_per_second"),
        (json!({"admit_per_second": 100_001}), "admit_per_second"),
        (json!({"max_active": 0}), "max_active"),
        (json!({"paused": "yes"}), "paused"),
        (json!({"stock_total": 5}), "stock_total"),
    ] {
        let reply = patch(&api, Some(&admin), &s, body.clone()).await?;
        reply.expect(400, Some("bad_request"));
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{body}: `{message}`");
    }
    patch(
        &api,
        Some(&admin),
        &Uuid::now_v7().to_string(),
        json!({"paused": true}),
    )
    .await?
    .expect(404, Some("not_found"));
    patch(&api, Some(&admin), "nope", json!({"paused": true}))
        .await?
        .expect(404, Some("not_found"));

    // A sale past its closing time is closed too.
    let product = api.new_product(&admin).await?;
    let ended = api
        .post(
            "/api/admin/sales",
            Some(&admin),
            json!({
                "product_id": product["id"],
                "stock": 1,
                "opens_at": rfc3339(chrono::Duration::hours(-2)),
                "closes_at": rfc3339(chrono::Duration::hours(-1)),
            }),
        )
        .await?;
    ended.expect(201, None);
    assert_eq!(ended.body["state"], "closed");
    patch(
        &api,
        Some(&admin),
        &id(&ended.body)?.to_string(),
        json!({"paused": true}),
    )
    .await?
    .expect(409, Some("invalid_state"));
    api.stop().await
}

#[tokio::test]
async fn patch_invalidates_the_cached_sale() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let sale = new_sale(&api, &admin).await?;
    let sale_id = id(&sale)?;
    let path = format!("/api/sales/{sale_id}");
    api.get(&path, None).await?.expect(200, None);

    // Spoil the cached record: only an invalidation brings the real one back before the TTL.
    let key = api.state.cache.key(Entry::Sale(SaleId::from(sale_id)));
    let redis = api.state.redis.pool();
    let cached: String = redis.get(&key).await?;
    let mut spoiled: Value = serde_json::from_str(&cached)?;
    // (Stock, times and limits are answered from Redis since #24's PATCH: the product's name
    // is still the record's.)
    spoiled["product"]["name"] = json!("Spoiled");
    let _: () = redis
        .set(
            &key,
            spoiled.to_string(),
            None,
            Some(fred::types::SetOptions::XX),
            false,
        )
        .await?;
    assert_eq!(
        api.get(&path, None).await?.body["product"]["name"],
        "Spoiled",
        "served from the cache"
    );

    patch(
        &api,
        Some(&admin),
        &sale_id.to_string(),
        json!({"admit_per_second": 3}),
    )
    .await?
    .expect(200, None);
    let after = api.get(&path, None).await?;
    assert_eq!(after.body["product"]["name"], "Numbered chair");
    assert_eq!(after.body["stock_total"], 10);
    assert_eq!(after.body["admit_per_second"], 3);
    api.stop().await
}

// ---------------------------------------------------------------------------------------------
// The door's sale fields (design/door.md)

#[tokio::test]
async fn door_fields_are_created_shown_armed_and_patched() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let product = api.new_product(&admin).await?;
    let presale = "2030-01-02T04:00:00.000Z";
    let reply = api
        .post(
            "/api/admin/sales",
            Some(&admin),
            json!({
                "product_id": product["id"],
                "stock": 10,
                "opens_at": "2030-01-02T03:00:00Z",
                "pow_difficulty": 15,
                "groups": ["vip", "fans"],
                "presale_only_until": presale,
                "notice": "Doors open at 20:00 <b>sharp</b>",
            }),
        )
        .await?;
    reply.expect(201, None);
    let sale_id = SaleId::from(id(&reply.body)?);
    let s = sale_id.to_string();
    let door = |body: &Value| {
        json!([
            body["pow_difficulty"],
            body["groups"],
            body["presale_only_until"],
            body["notice"]
        ])
    };
    let expected = json!([
        15,
        ["vip", "fans"],
        presale,
        "Doors open at 20:00 <b>sharp</b>"
    ]);
    assert_eq!(door(&reply.body), expected);
    let shown = api.get(&format!("/api/sales/{s}"), None).await?;
    shown.expect(200, None);
    assert_eq!(door(&shown.body), expected);

    // Redis runs the sale with them; MySQL keeps them for a rearm.
    let redis = &api.state.redis;
    let presale_ms = chrono::DateTime::parse_from_rfc3339(presale)?.timestamp_millis();
    let in_cfg = |cfg: &HashMap<String, String>| {
        ["pow_difficulty", "groups", "presale_only_until", "notice"]
            .map(|f| cfg.get(f).cloned().unwrap_or_else(|| "<missing>".into()))
    };
    assert_eq!(
        in_cfg(&cfg(redis, sale_id).await?),
        [
            "15".to_owned(),
            "vip,fans".to_owned(),
            presale_ms.to_string(),
            "Doors open at 20:00 <b>sharp</b>".to_owned()
        ]
    );
    let stored = sale::Door::load(api.mysql(), sale_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("sale not in MySQL"))?;
    assert_eq!(stored.pow_difficulty, 15);
    assert_eq!(stored.groups, ["vip", "fans"]);
    assert_eq!(
        stored.presale_only_until.map(|t| t.timestamp_millis()),
        Some(presale_ms)
    );

    // PATCH reaches MySQL, Redis and every reader; null and "" clear.
    let changed = patch(
        &api,
        Some(&admin),
        &s,
        json!({"notice": "🪑".repeat(280), "pow_difficulty": 0, "groups": ["vip"], "presale_only_until": null}),
    )
    .await?;
    changed.expect(200, None);
    let expected = json!([0, ["vip"], null, "🪑".repeat(280)]);
    assert_eq!(door(&changed.body), expected);
    assert_eq!(
        door(&api.get(&format!("/api/sales/{s}"), None).await?.body),
        expected
    );
    assert_eq!(
        in_cfg(&cfg(redis, sale_id).await?),
        [
            "0".to_owned(),
            "vip".to_owned(),
            "0".to_owned(),
            "🪑".repeat(280)
        ]
    );
    for clear in [json!({"notice": null}), json!({"notice": ""})] {
        patch(&api, Some(&admin), &s, json!({"notice": "again"}))
            .await?
            .expect(200, None);
        let cleared = patch(&api, Some(&admin), &s, clear).await?;
        cleared.expect(200, None);
        assert_eq!(cleared.body["notice"], Value::Null);
        assert_eq!(
            cfg(redis, sale_id).await?.get("notice").map(String::as_str),
            Some("")
        );
        let stored = sale::Door::load(api.mysql(), sale_id).await?;
        assert_eq!(stored.and_then(|d| d.notice), None);
    }
    api.stop().await
}

#[tokio::test]
async fn door_fields_reject_bad_input_and_groups_freeze_at_the_opening() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let product = api.new_product(&admin).await?;
    let base = json!({"product_id": product["id"], "stock": 10, "opens_at": rfc3339(chrono::Duration::hours(1))});
    let with = |extra: Value| merged(&base, extra);
    let bad = [
        (json!({"pow_difficulty": 25}), "pow_difficulty"),
        (json!({"pow_difficulty": -1}), "pow_difficulty"),
        (json!({"groups": ["VIP"]}), "groups"),
        (json!({"groups": ["public"]}), "groups"),
        (json!({"groups": ["a", "a"]}), "groups"),
        (
            json!({"groups": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]}),
            "groups",
        ),
        (json!({"groups": "vip"}), "groups"),
        (
            json!({"presale_only_until": "tomorrow", "groups": ["vip"]}),
            "presale_only_until",
        ),
        (
            json!({"presale_only_until": rfc3339(chrono::Duration::hours(2))}),
            "presale_only_until",
        ),
        (json!({"notice": "x".repeat(281)}), "notice"),
        (json!({"notice": "two\nlines"}), "notice"),
        (json!({"notice": 5}), "notice"),
    ];
    for (extra, field) in &bad {
        let reply = api
            .post("/api/admin/sales", Some(&admin), with(extra.clone()))
            .await?;
        reply.expect(400, Some("bad_request"));
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{extra}: `{message}`");
    }
    assert_eq!(count_sales(&api).await?, 0, "nothing half-created");

    // The same rules on PATCH, and nothing changes.
    let scheduled = api
        .post("/api/admin/sales", Some(&admin), base.clone())
        .await?;
    scheduled.expect(201, None);
    let s = id(&scheduled.body)?.to_string();
    for (extra, field) in &bad {
        let reply = patch(&api, Some(&admin), &s, extra.clone()).await?;
        reply.expect(400, Some("bad_request"));
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "PATCH {extra}: `{message}`");
    }
    let shown = api.get(&format!("/api/sales/{s}"), None).await?;
    assert_eq!(
        json!([
            shown.body["pow_difficulty"],
            shown.body["groups"],
            shown.body["notice"]
        ]),
        json!([0, [], null])
    );
    // Groups change while scheduled; a presale then needs them.
    patch(
        &api,
        Some(&admin),
        &s,
        json!({"groups": ["vip"], "presale_only_until": rfc3339(chrono::Duration::minutes(90))}),
    )
    .await?
    .expect(200, None);
    let reply = patch(&api, Some(&admin), &s, json!({"groups": []})).await?;
    reply.expect(400, Some("bad_request"));

    // Once open, the groups are frozen (the same list is no change); the rest still moves.
    let open = new_sale(&api, &admin).await?;
    let o = id(&open)?.to_string();
    patch(&api, Some(&admin), &o, json!({"groups": ["vip"]}))
        .await?
        .expect(409, Some("invalid_state"));
    patch(
        &api,
        Some(&admin),
        &o,
        json!({"groups": [], "notice": "Still 3 left", "pow_difficulty": 4}),
    )
    .await?
    .expect(200, None);
    api.stop().await
}

// ---------------------------------------------------------------------------------------------
// Draw sales (design/draw.md)

#[tokio::test]
async fn draw_sales_are_created_stored_armed_and_shown() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let product = api.new_product(&admin).await?;
    let reply = api
        .post(
            "/api/admin/sales",
            Some(&admin),
            json!({
                "product_id": product["id"],
                "stock": 10,
                "per_user_limit": 3,
                "opens_at": "2030-01-02T03:00:00Z",
                "mode": "draw",
                "entries_close_at": "2030-01-02T15:00:00+09:00",
                "claim_seconds": 900,
                "closes_at": "2030-01-03T03:00:00Z",
            }),
        )
        .await?;
    reply.expect(201, None);
    let sale = reply.body.clone();
    let sale_id = SaleId::from(id(&sale)?);
    assert_eq!(sale["mode"], json!("draw"));
    assert_eq!(
        sale["draw"],
        json!({
            "entries_close_at": "2030-01-02T06:00:00.000Z",
            "claim_seconds": 900,
            "entry_count": 0,
            "promoted": 0,
        })
    );
    assert_eq!(sale["state"], json!("scheduled"));
    // The public read shows the same.
    let shown = api.get(&format!("/api/sales/{sale_id}"), None).await?;
    shown.expect(200, None);
    assert_eq!(shown.body, sale);

    // MySQL: the mode and settings, and a draw whose commitment is SHA-256 of its seed.
    let (mode, claim): (String, Option<u32>) =
        sqlx::query_as("SELECT mode, claim_seconds FROM sales WHERE id = ?")
            .bind(sale_id)
            .fetch_one(api.mysql())
            .await?;
    assert_eq!((mode.as_str(), claim), ("draw", Some(900)));
    let (seed, commitment, frozen): (Vec<u8>, Vec<u8>, Option<chrono::DateTime<Utc>>) =
        sqlx::query_as("SELECT seed, seed_commitment, frozen_at FROM draws WHERE sale_id = ?")
            .bind(sale_id)
            .fetch_one(api.mysql())
            .await?;
    use sha2::Digest;
    assert_eq!(seed.len(), 32);
    assert_ne!(seed, vec![0; 32]);
    assert_eq!(commitment, sha2::Sha256::digest(&seed).to_vec());
    assert_eq!(frozen, None);
    let settings = sale::draw::DrawSettings::load(api.mysql(), sale_id).await?;
    assert_eq!(
        settings.map(|d| (d.entries_close_at.timestamp_millis(), d.claim_seconds)),
        Some((
            chrono::DateTime::parse_from_rfc3339("2030-01-02T06:00:00Z")?.timestamp_millis(),
            900
        ))
    );

    // Redis: the three draw fields in cfg.
    let cfg = cfg(&api.state.redis, sale_id).await?;
    assert_eq!(cfg.get("mode").map(String::as_str), Some("draw"));
    assert_eq!(cfg.get("claim_seconds").map(String::as_str), Some("900"));
    assert_eq!(
        cfg.get("entries_close_at").map(String::as_str),
        Some(
            chrono::DateTime::parse_from_rfc3339("2030-01-02T06:00:00Z")?
                .timestamp_millis()
                .to_string()
                .as_str()
        )
    );

    // The default claim window, and an fcfs sale keeps a cfg without the draw fields and no draw.
    let open = api
        .post(
            "/api/admin/sales",
            Some(&admin),
            json!({
                "product_id": product["id"], "stock": 5, "mode": "draw",
                "opens_at": rfc3339(chrono::Duration::minutes(-1)),
                "entries_close_at": rfc3339(chrono::Duration::hours(1)),
            }),
        )
        .await?;
    open.expect(201, None);
    assert_eq!(open.body["draw"]["claim_seconds"], json!(1800));
    assert_eq!(open.body["state"], json!("entering"));
    let fcfs = new_sale(&api, &admin).await?;
    let fcfs_id = SaleId::from(id(&fcfs)?);
    assert_eq!(
        (&fcfs["mode"], &fcfs["draw"]),
        (&json!("fcfs"), &Value::Null)
    );
    let fcfs_cfg = self::cfg(&api.state.redis, fcfs_id).await?;
    assert!(
        !fcfs_cfg.contains_key("mode") && !fcfs_cfg.contains_key("entries_close_at"),
        "{fcfs_cfg:?}"
    );
    let draws: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM draws WHERE sale_id = ?")
        .bind(fcfs_id)
        .fetch_one(api.mysql())
        .await?;
    assert_eq!(draws, 0);

    // The list filter knows the draw states.
    let entering = api.get("/api/sales?state=entering", None).await?;
    entering.expect(200, None);
    let ids: Vec<&Value> = entering.body["items"]
        .as_array()
        .map(|items| items.iter().map(|i| &i["id"]).collect())
        .unwrap_or_default();
    assert_eq!(ids, vec![&open.body["id"]]);
    api.stop().await
}

#[tokio::test]
async fn draw_sales_reject_bad_input_and_line_settings() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let product = api.new_product(&admin).await?;
    let opens = rfc3339(chrono::Duration::hours(1));
    let close = rfc3339(chrono::Duration::hours(2));
    let base = json!({"product_id": product["id"], "stock": 10, "opens_at": opens,
        "mode": "draw", "entries_close_at": close});
    let with = |extra: Value| merged(&base, extra);
    let cases = [
        (with(json!({"mode": "Draw"})), "mode"),
        (with(json!({"mode": "raffle"})), "mode"),
        (with(json!({"mode": ""})), "mode"),
        (with(json!({"mode": 1})), "mode"),
        (with(json!({"entries_close_at": null})), "entries_close_at"),
        (with(json!({"entries_close_at": opens})), "entries_close_at"),
        (
            with(json!({"entries_close_at": rfc3339(chrono::Duration::minutes(30))})),
            "entries_close_at",
        ),
        (
            with(json!({"entries_close_at": "tonight"})),
            "entries_close_at",
        ),
        (with(json!({"closes_at": close})), "closes_at"),
        (
            with(json!({"closes_at": rfc3339(chrono::Duration::minutes(90))})),
            "closes_at",
        ),
        (with(json!({"claim_seconds": 0})), "claim_seconds"),
        (with(json!({"claim_seconds": 86_401})), "claim_seconds"),
        (with(json!({"claim_seconds": -1})), "claim_seconds"),
        (with(json!({"claim_seconds": "60"})), "claim_seconds"),
        (with(json!({"admit_per_second": 10})), "admit_per_second"),
        (with(json!({"max_active": 10})), "max_active"),
        (with(json!({"groups": ["vip"]})), "groups"),
        (with(json!({"line_shards": 3})), "line_shards"),
        (with(json!({"mode": "fcfs"})), "entries_close_at"),
        (
            json!({"product_id": product["id"], "stock": 10, "opens_at": opens, "claim_seconds": 60}),
            "claim_seconds",
        ),
    ];
    for (body, field) in cases {
        let reply = api
            .post("/api/admin/sales", Some(&admin), body.clone())
            .await?;
        reply.expect(400, Some("bad_request"));
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(field),
            "{body}: `{message}` does not name {field}"
        );
    }
    assert_eq!(count_sales(&api).await?, 0, "nothing was stored");
    let draws: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM draws")
        .fetch_one(api.mysql())
        .await?;
    assert_eq!(draws, 0);

    // The edges that are allowed, and explicit fcfs.
    for extra in [
        json!({"claim_seconds": 1, "groups": [], "pow_difficulty": 4}),
        json!({"claim_seconds": 86_400, "closes_at": rfc3339(chrono::Duration::hours(3))}),
    ] {
        api.post("/api/admin/sales", Some(&admin), with(extra))
            .await?
            .expect(201, None);
    }
    let fcfs = json!({"product_id": product["id"], "stock": 1, "opens_at": opens, "mode": "fcfs"});
    api.post("/api/admin/sales", Some(&admin), fcfs)
        .await?
        .expect(201, None);

    // PATCH: a draw sale takes no line settings; pause and notice are fine.
    let draw = api
        .post("/api/admin/sales", Some(&admin), base.clone())
        .await?;
    draw.expect(201, None);
    let draw_id = id(&draw.body)?.to_string();
    for (body, field) in [
        (json!({"admit_per_second": 5}), "admit_per_second"),
        (json!({"max_active": 5}), "max_active"),
        (json!({"max_active": null}), "max_active"),
        (json!({"groups": ["vip"]}), "groups"),
    ] {
        let reply = patch(&api, Some(&admin), &draw_id, body.clone()).await?;
        reply.expect(400, Some("bad_request"));
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{body}: `{message}`");
    }
    let paused = patch(
        &api,
        Some(&admin),
        &draw_id,
        json!({"paused": true, "notice": "hi"}),
    )
    .await?;
    paused.expect(200, None);
    assert_eq!(paused.body["state"], json!("scheduled"));
    assert_eq!(paused.body["mode"], json!("draw"));
    assert_eq!(paused.body["draw"]["claim_seconds"], json!(1800));
    api.stop().await
}

/// `line_shards` (issue #22 §2): a sale made with its line spread over 3 shards keeps it in
/// MySQL (what a rearm reads), arms it into `cfg`, shows it, and its waiting room runs on the
/// shards; a sale made without it has 1 and no `cfg` field, exactly as before.
#[tokio::test]
async fn a_sale_made_with_line_shards_is_stored_armed_and_shown() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let product = api.new_product(&admin).await?;
    let reply = api
        .post(
            "/api/admin/sales",
            Some(&admin),
            json!({"product_id": product["id"], "stock": 10,
                "opens_at": rfc3339(chrono::Duration::hours(1)), "line_shards": 3}),
        )
        .await?;
    reply.expect(201, None);
    assert_eq!(reply.body["line_shards"], 3, "{}", reply.body);
    let sale = SaleId::from(id(&reply.body)?);
    let redis = &api.state.redis;
    assert_eq!(
        cfg(redis, sale)
            .await?
            .get("line_shards")
            .map(String::as_str),
        Some("3")
    );
    assert_eq!(stored_line_shards(&api, sale).await?, 3);
    let shown = api.get(&format!("/api/sales/{sale}"), None).await?;
    shown.expect(200, None);
    assert_eq!(shown.body["line_shards"], 3);
    // Fixed for the sale's life: a PATCH does not take it.
    let refused = patch(
        &api,
        Some(&admin),
        &sale.to_string(),
        json!({"line_shards": 1}),
    )
    .await?;
    refused.expect(400, Some("bad_request"));
    assert_eq!(stored_line_shards(&api, sale).await?, 3);

    let plain = new_sale(&api, &admin).await?;
    assert_eq!(plain["line_shards"], 1);
    let plain_cfg = cfg(redis, SaleId::from(id(&plain)?)).await?;
    assert!(!plain_cfg.contains_key("line_shards"), "{plain_cfg:?}");
    api.stop().await
}

async fn stored_line_shards(api: &TestApi, sale: SaleId) -> anyhow::Result<u16> {
    let stored = SaleConfig::load(api.mysql(), sale)
        .await?
        .ok_or_else(|| anyhow::anyhow!("sale not in MySQL"))?;
    Ok(stored.line_shards)
}
