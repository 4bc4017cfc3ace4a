//! The public catalog against real MySQL and Redis: product and sale lists and details, keyset
//! paging under concurrent inserts, the look-aside cache (single flight in one process and
//! across two replicas, TTL jitter, negative entries) and the Redis-only stock endpoint.
//!
//! Cache assertions read `dropline_cache_loads_total` from `/metrics`. The metrics registry is
//! per process, and nextest runs every test in its own process, so the counts belong to the test.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use common::{Reply, TestApi};
use dropline_api::Secrets;
use dropline_core::Config;
use dropline_core::clients::deps::Deps;
use dropline_testkit::{FaultProxy, eventually, url_target, url_via};
use fred::prelude::*;
use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// Helpers

fn rfc3339(offset: chrono::Duration) -> String {
    (Utc::now() + offset).to_rfc3339_opts(SecondsFormat::Millis, true)
}

async fn new_product(api: &TestApi, admin: &str, name: &str) -> anyhow::Result<Value> {
    let reply = api
        .post(
            "/api/admin/products",
            Some(admin),
            json!({"name": name, "description": "numbered", "price": 39_000}),
        )
        .await?;
    reply.expect(201, None);
    Ok(reply.body)
}

/// A sale of a new product; `extra` fields override the defaults (stock 10, open since a minute).
async fn new_sale(api: &TestApi, admin: &str, extra: Value) -> anyhow::Result<Value> {
    let product = new_product(api, admin, "sale item").await?;
    let mut body = json!({
        "product_id": product["id"],
        "stock": 10,
        "opens_at": rfc3339(chrono::Duration::minutes(-1)),
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let reply = api.post("/api/admin/sales", Some(admin), body).await?;
    reply.expect(201, None);
    Ok(reply.body)
}

fn id(value: &Value) -> anyhow::Result<String> {
    value["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no id in {value}"))
}

/// A counter's value on a server's `/metrics` (0 when not rendered yet).
async fn metric(api: &TestApi, base: &str, series: &str) -> anyhow::Result<f64> {
    let text = api
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0))
}

/// Loads that found another flight's fill lock and waited: in one process a cold key has one
/// flight, so this stays 0 unless a second replica (or a second flight) competes.
async fn fill_waits(api: &TestApi, kind: &str) -> anyhow::Result<f64> {
    metric(
        api,
        &api.base,
        &format!("dropline_cache_fill_waits_total{{kind=\"{kind}\"}}"),
    )
    .await
}

async fn loads(api: &TestApi, kind: &str) -> anyhow::Result<f64> {
    metric(
        api,
        &api.base,
        &format!("dropline_cache_loads_total{{kind=\"{kind}\"}}"),
    )
    .await
}

async fn get_at(api: &TestApi, base: &str, path: &str) -> anyhow::Result<Reply> {
    let response = api.http.get(format!("{base}{path}")).send().await?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = serde_json::from_slice(&response.bytes().await?).unwrap_or(Value::Null);
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Another api server in this process, on `config` and `deps` (a second replica).
struct Replica {
    base: String,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Replica {
    async fn start(api: &TestApi, config: &Config, deps: &Deps) -> anyhow::Result<Self> {
        let secrets = Secrets {
            keys: api.keys.clone(),
            passes: api.passes.clone(),
            pii: api.pii.clone(),
            stripe_webhook: None,
        };
        let server = dropline_api::build(config, deps, secrets).await?;
        let base = format!("http://{}", server.addr());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Ok(Self {
            base,
            shutdown,
            task,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task).await???;
        Ok(())
    }
}

/// Every page of `path` (which must already hold `?...&limit=`), following `next_cursor`;
/// `between` runs after each page.
async fn all_pages<F, Fut>(api: &TestApi, path: &str, mut between: F) -> anyhow::Result<Vec<String>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_owned(),
        };
        let page = api.get(&url, None).await?;
        page.expect(200, None);
        let items = page.body["items"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("no items in {}", page.body))?;
        for item in items {
            ids.push(id(item)?);
        }
        between().await?;
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => {
                assert!(page.body["next_cursor"].is_null(), "{}", page.body);
                return Ok(ids);
            }
        }
    }
    anyhow::bail!("paging did not end")
}

// ---------------------------------------------------------------------------------------------
// Products

#[tokio::test]
async fn products_list_and_detail_in_the_contract_shape() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;

    let empty = api.get("/api/products", None).await?;
    empty.expect(200, None);
    assert_eq!(empty.body, json!({"items": [], "next_cursor": null}));

    let mut made = Vec::new();
    for i in 0..3 {
        made.push(new_product(&api, &admin, &format!("chair {i}")).await?);
    }
    let list = api.get("/api/products", None).await?;
    list.expect(200, None);
    let items = list.body["items"].as_array().cloned().unwrap_or_default();
    // Newest first, exactly as created (the answer of the create is the product).
    let expected: Vec<Value> = made.iter().rev().cloned().collect();
    assert_eq!(items, expected);
    assert!(list.body["next_cursor"].is_null());

    let product = &made[0];
    let keys: HashSet<&str> = product
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        keys,
        HashSet::from([
            "id",
            "name",
            "description",
            "price",
            "currency",
            "created_at"
        ])
    );
    let created = product["created_at"].as_str().unwrap_or_default();
    assert!(
        created.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(created).is_ok(),
        "created_at {created} is not RFC 3339 UTC"
    );

    let detail = api
        .get(&format!("/api/products/{}", id(product)?), None)
        .await?;
    detail.expect(200, None);
    assert_eq!(&detail.body, product);

    // Unknown and malformed ids are both "no such product".
    api.get(&format!("/api/products/{}", uuid::Uuid::now_v7()), None)
        .await?
        .expect(404, Some("not_found"));
    api.get("/api/products/not-a-uuid", None)
        .await?
        .expect(404, Some("not_found"));
    api.stop().await
}

#[tokio::test]
async fn bad_limits_and_cursors_are_400() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    for path in ["/api/products", "/api/sales"] {
        for query in [
            "limit=0",
            "limit=101",
            "limit=-1",
            "limit=ten",
            "limit=",
            "cursor=garbage!",
            "cursor=",
            // Valid base64url, but not a cursor (wrong version byte, wrong length).
            "cursor=AgAAAAAAAAAAAAAAAAAAAAAA",
            "cursor=AQAA",
        ] {
            let reply = api.get(&format!("{path}?{query}"), None).await?;
            reply.expect(400, Some("bad_request"));
            let message = reply.body["error"]["message"].as_str().unwrap_or_default();
            let field = query.split('=').next().unwrap_or_default();
            assert!(message.contains(field), "{path}?{query}: `{message}`");
        }
        api.get(&format!("{path}?limit=1"), None)
            .await?
            .expect(200, None);
        api.get(&format!("{path}?limit=100"), None)
            .await?
            .expect(200, None);
    }
    api.get("/api/sales?state=soldout", None)
        .await?
        .expect(400, Some("bad_request"));
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_neither_repeats_nor_skips_while_products_are_added() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let mut existing = Vec::new();
    for i in 0..23 {
        existing.push(id(&new_product(&api, &admin, &format!("p{i}")).await?)?);
    }
    // Two new products after every page: they are newer, so they sort before the cursor.
    let added = std::sync::Mutex::new(Vec::new());
    let seen = all_pages(&api, "/api/products?limit=4", || async {
        for _ in 0..2 {
            let p = new_product(&api, &admin, "late").await?;
            if let Ok(mut a) = added.lock() {
                a.push(id(&p)?);
            }
        }
        Ok(())
    })
    .await?;
    let expected: Vec<String> = existing.iter().rev().cloned().collect();
    assert_eq!(
        seen, expected,
        "every product present at the start, once, newest first"
    );

    // Paging again from the start sees the late ones too, still each once.
    let again = all_pages(&api, "/api/products?limit=7", || async { Ok(()) }).await?;
    let unique: HashSet<&String> = again.iter().collect();
    assert_eq!(unique.len(), again.len(), "no repeats");
    let added = added.lock().map(|a| a.len()).unwrap_or(0);
    assert_eq!(again.len(), existing.len() + added);
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_product_under_a_stampede_is_loaded_once() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let product = new_product(&api, &admin, "hot").await?;
    let path = format!("/api/products/{}", id(&product)?);
    let before = loads(&api, "product").await?;

    let replies = join_all((0..200).map(|_| api.get(&path, None))).await;
    for reply in replies {
        let reply = reply?;
        reply.expect(200, None);
        assert_eq!(reply.body, product);
    }
    assert_eq!(
        loads(&api, "product").await? - before,
        1.0,
        "one MySQL read"
    );
    assert_eq!(
        fill_waits(&api, "product").await?,
        0.0,
        "the requests shared one flight in this process"
    );
    // Warm now: more reads do not load.
    api.get(&path, None).await?.expect(200, None);
    assert_eq!(loads(&api, "product").await? - before, 1.0);
    let hits = metric(
        &api,
        &api.base,
        "dropline_cache_requests_total{kind=\"product\",result=\"hit\"}",
    )
    .await?;
    assert!(hits >= 1.0, "hits are counted");
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_sale_under_a_stampede_is_loaded_once() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let sale = new_sale(&api, &admin, json!({})).await?;
    let path = format!("/api/sales/{}", id(&sale)?);
    let before = loads(&api, "sale").await?;

    let replies = join_all((0..200).map(|_| api.get(&path, None))).await;
    for reply in replies {
        let reply = reply?;
        reply.expect(200, None);
        assert_eq!(reply.body, sale);
    }
    assert_eq!(loads(&api, "sale").await? - before, 1.0, "one MySQL read");
    assert_eq!(
        fill_waits(&api, "sale").await?,
        0.0,
        "the requests shared one flight in this process"
    );
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_stampeding_one_cold_key_load_it_once() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let other = Replica::start(&api, &api.env.config, &api.deps).await?;
    let admin = api.admin().await?;
    let product = new_product(&api, &admin, "hot").await?;
    let sale = new_sale(&api, &admin, json!({})).await?;

    for (kind, path, expected) in [
        (
            "product",
            format!("/api/products/{}", id(&product)?),
            &product,
        ),
        ("sale", format!("/api/sales/{}", id(&sale)?), &sale),
    ] {
        let before = loads(&api, kind).await?;
        // Interleaved, so that both replicas miss at the same moment.
        let replies = join_all((0..200).map(|i| {
            let base = if i % 2 == 0 { &api.base } else { &other.base };
            get_at(&api, base, &path)
        }))
        .await;
        for reply in replies {
            let reply = reply?;
            reply.expect(200, None);
            assert_eq!(&reply.body, expected);
        }
        // Both servers share this process's registry: the count covers both replicas.
        assert_eq!(
            loads(&api, kind).await? - before,
            1.0,
            "{kind}: one MySQL read across two replicas"
        );
    }
    other.stop().await?;
    api.stop().await
}

#[tokio::test]
async fn unknown_ids_are_cached_briefly_too() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let ghost = uuid::Uuid::now_v7();
    let before = loads(&api, "product").await?;
    for _ in 0..5 {
        api.get(&format!("/api/products/{ghost}"), None)
            .await?
            .expect(404, Some("not_found"));
    }
    assert_eq!(loads(&api, "product").await? - before, 1.0);
    let key = api
        .state
        .cache
        .key(dropline_api::cache::Entry::Product(ghost.into()));
    let pttl: i64 = api.state.redis.pool().pttl(&key).await?;
    assert!((1..=5_000).contains(&pttl), "negative entry TTL {pttl} ms");

    let before = loads(&api, "sale").await?;
    for _ in 0..3 {
        api.get(&format!("/api/sales/{ghost}"), None)
            .await?
            .expect(404, Some("not_found"));
    }
    assert_eq!(loads(&api, "sale").await? - before, 1.0);
    api.stop().await
}

#[tokio::test]
async fn cache_ttls_are_jittered_within_bounds() -> anyhow::Result<()> {
    // ±20% of 1000 s: eight draws spread over 400 s.
    let api = TestApi::start(&[
        ("CACHE__TTL_SECONDS", "1000"),
        ("CACHE__JITTER_PERCENT", "20"),
    ])
    .await?;
    let admin = api.admin().await?;
    let mut ttls = Vec::new();
    for i in 0..8 {
        let product = new_product(&api, &admin, &format!("p{i}")).await?;
        let product_id: uuid::Uuid = id(&product)?.parse()?;
        api.get(&format!("/api/products/{product_id}"), None)
            .await?
            .expect(200, None);
        let key = api
            .state
            .cache
            .key(dropline_api::cache::Entry::Product(product_id.into()));
        let pttl: i64 = api.state.redis.pool().pttl(&key).await?;
        ttls.push(pttl);
    }
    for pttl in &ttls {
        // A little under the lower bound for the time passed since the write.
        assert!(
            (795_000..=1_200_000).contains(pttl),
            "TTL {pttl} ms outside 1000 s ± 20%"
        );
    }
    let (min, max) = (
        ttls.iter().min().copied().unwrap_or(0),
        ttls.iter().max().copied().unwrap_or(0),
    );
    assert!(max - min > 10_000, "TTLs are not jittered: {ttls:?}");
    api.stop().await
}

// ---------------------------------------------------------------------------------------------
// Sales

#[tokio::test]
async fn sale_detail_and_stock_in_the_contract_shape() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let sale = new_sale(
        &api,
        &admin,
        json!({"stock": 7, "per_user_limit": 2, "closes_at": rfc3339(chrono::Duration::hours(1))}),
    )
    .await?;
    let sale_id = id(&sale)?;
    let detail = api.get(&format!("/api/sales/{sale_id}"), None).await?;
    detail.expect(200, None);
    assert_eq!(detail.body, sale, "GET answers what POST answered");
    let keys: HashSet<&str> = detail
        .body
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    for key in [
        "id",
        "product",
        "stock_total",
        "available",
        "opens_at",
        "closes_at",
        "per_user_limit",
        "hold_seconds",
        "state",
    ] {
        assert!(keys.contains(key), "{key} missing from {}", detail.body);
    }
    assert_eq!(detail.body["state"], "open");
    assert_eq!(detail.body["available"], 7);
    assert_eq!(detail.body["product"]["name"], "sale item");

    let stock = api
        .get(&format!("/api/sales/{sale_id}/stock"), None)
        .await?;
    stock.expect(200, None);
    assert_eq!(stock.body, json!({"available": 7, "held": 0, "sold": 0}));

    // Counters move (as orders will move them): the detail and stock follow at once.
    let r = api.state.redis.clone();
    let s: uuid::Uuid = sale_id.parse()?;
    let _: i64 = r.pool().decr_by(r.sale_key(s, "avail"), 3).await?;
    let _: i64 = r.pool().incr_by(r.sale_key(s, "held"), 2).await?;
    let _: i64 = r.pool().incr_by(r.sale_key(s, "sold"), 1).await?;
    let stock = api
        .get(&format!("/api/sales/{sale_id}/stock"), None)
        .await?;
    assert_eq!(stock.body, json!({"available": 4, "held": 2, "sold": 1}));
    let detail = api.get(&format!("/api/sales/{sale_id}"), None).await?;
    assert_eq!(detail.body["available"], 4);

    for path in [
        format!("/api/sales/{}", uuid::Uuid::now_v7()),
        format!("/api/sales/{}/stock", uuid::Uuid::now_v7()),
        "/api/sales/nope".to_owned(),
        "/api/sales/nope/stock".to_owned(),
    ] {
        api.get(&path, None).await?.expect(404, Some("not_found"));
    }
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sale_states_follow_redis_and_the_list_filters_by_them() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let scheduled = id(&new_sale(
        &api,
        &admin,
        json!({"opens_at": rfc3339(chrono::Duration::hours(1))}),
    )
    .await?)?;
    let open = id(&new_sale(&api, &admin, json!({})).await?)?;
    let paused = id(&new_sale(&api, &admin, json!({})).await?)?;
    let closed = id(&new_sale(&api, &admin, json!({})).await?)?;
    let sold_out = id(&new_sale(&api, &admin, json!({"stock": 2})).await?)?;
    // Nothing available but units held: they may come back, so the sale is still open.
    let all_held = id(&new_sale(&api, &admin, json!({"stock": 2})).await?)?;

    api.call(
        Method::PATCH,
        &format!("/api/admin/sales/{paused}"),
        Some(&admin),
        Some(json!({"paused": true})),
    )
    .await?
    .expect(200, None);
    api.call(
        Method::PATCH,
        &format!("/api/admin/sales/{closed}"),
        Some(&admin),
        Some(json!({"closed": true})),
    )
    .await?
    .expect(200, None);
    let r = api.state.redis.clone();
    let s: uuid::Uuid = sold_out.parse()?;
    let _: () = r
        .pool()
        .set(r.sale_key(s, "avail"), 0, None, None, false)
        .await?;
    let _: () = r
        .pool()
        .set(r.sale_key(s, "sold"), 2, None, None, false)
        .await?;
    let h: uuid::Uuid = all_held.parse()?;
    let _: () = r
        .pool()
        .set(r.sale_key(h, "avail"), 0, None, None, false)
        .await?;
    let _: () = r
        .pool()
        .set(r.sale_key(h, "held"), 2, None, None, false)
        .await?;

    let expect = [
        (&scheduled, "scheduled"),
        (&open, "open"),
        (&paused, "paused"),
        (&closed, "closed"),
        (&sold_out, "sold_out"),
        (&all_held, "open"),
    ];
    for (sale, state) in expect {
        let detail = api.get(&format!("/api/sales/{sale}"), None).await?;
        detail.expect(200, None);
        assert_eq!(detail.body["state"], state, "{sale}");
    }
    for state in ["scheduled", "open", "paused", "sold_out", "closed"] {
        let listed = all_pages(
            &api,
            &format!("/api/sales?state={state}&limit=1"),
            || async { Ok(()) },
        )
        .await?;
        // Newest first among the sales in that state.
        let mut wanted: Vec<String> = expect
            .iter()
            .filter(|(_, s)| *s == state)
            .map(|(id, _)| (*id).clone())
            .collect();
        wanted.reverse();
        assert_eq!(listed, wanted, "state={state}");
    }
    let everything = all_pages(&api, "/api/sales?limit=4", || async { Ok(()) }).await?;
    assert_eq!(everything.len(), expect.len());
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sale_paging_neither_repeats_nor_skips_while_sales_are_added() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let mut existing = Vec::new();
    for _ in 0..9 {
        existing.push(id(&new_sale(&api, &admin, json!({})).await?)?);
    }
    let seen = all_pages(&api, "/api/sales?state=open&limit=2", || async {
        new_sale(&api, &admin, json!({})).await.map(|_| ())
    })
    .await?;
    let expected: Vec<String> = existing.iter().rev().cloned().collect();
    assert_eq!(seen, expected);
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_closes_by_itself_at_closes_at() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let sale = new_sale(
        &api,
        &admin,
        json!({"closes_at": rfc3339(chrono::Duration::milliseconds(1500))}),
    )
    .await?;
    assert_eq!(sale["state"], "open");
    let path = format!("/api/sales/{}", id(&sale)?);
    let closed = eventually(Duration::from_secs(10), || async {
        api.get(&path, None)
            .await
            .is_ok_and(|r| r.body["state"] == "closed")
    })
    .await;
    assert!(closed, "the sale did not close at closes_at");
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_is_answered_from_redis_with_mysql_unreachable() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let sale = new_sale(&api, &admin, json!({"stock": 5})).await?;
    let sale_id = id(&sale)?;
    let cold = new_sale(&api, &admin, json!({})).await?;

    // A replica whose MySQL goes through a proxy we can cut.
    let mut config = api.env.config.clone();
    let proxy = FaultProxy::start(url_target(&config.mysql.url)?).await?;
    config.mysql.url = url_via(&config.mysql.url, proxy.addr())?;
    let deps = Deps {
        mysql: Some(dropline_core::clients::mysql::connect(&config.mysql).await?),
        redis: api.deps.redis.clone(),
        broker: api.deps.broker.clone(),
    };
    let replica = Replica::start(&api, &config, &deps).await?;
    proxy.cut().await;

    for _ in 0..20 {
        let stock = get_at(&api, &replica.base, &format!("/api/sales/{sale_id}/stock")).await?;
        stock.expect(200, None);
        assert_eq!(stock.body, json!({"available": 5, "held": 0, "sold": 0}));
    }
    // A sale detail that is not cached needs MySQL: an outage, in the contract's shape.
    let detail = get_at(&api, &replica.base, &format!("/api/sales/{}", id(&cold)?)).await?;
    detail.expect(503, Some("unavailable"));

    proxy.restore();
    replica.stop().await?;
    if let Some(pool) = &deps.mysql {
        pool.close().await;
    }
    api.stop().await
}
