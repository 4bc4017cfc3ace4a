//! `PATCH /api/admin/sales/{id}` on a scheduled sale's creation fields and
//! `PATCH /api/admin/products/{id}` (#24), against real MariaDB and Redis: each field changes
//! while the sale is scheduled and shows in `GET /api/sales/{id}`, its stock and its Redis
//! state; after the opening the same PATCH is a 409 naming the field and changes nothing; a bad
//! value is the creation's 400 with nothing changed; every change leaves its trail row; and the
//! hostile cases: PATCHes racing the opening, and many concurrent PATCHes, after which the trail
//! and the state agree.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use common::{Reply, TestApi};
use dropline_core::ids::SaleId;
use fred::prelude::*;
use reqwest::Method;
use serde_json::{Value, json};

fn at(offset: chrono::Duration) -> String {
    (Utc::now() + offset).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn text(value: &Value, field: &str) -> anyhow::Result<String> {
    value[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no {field} in {value}"))
}

async fn patch(api: &TestApi, token: &str, path: &str, body: Value) -> anyhow::Result<Reply> {
    api.call(Method::PATCH, path, Some(token), Some(body)).await
}

/// A sale of `product` opening at `opens_at`, stock 10 (`extra` added).
async fn sale_of(
    api: &TestApi,
    admin: &str,
    product: &Value,
    opens_at: String,
    extra: Value,
) -> anyhow::Result<String> {
    let mut body = json!({"product_id": product["id"], "stock": 10, "opens_at": opens_at});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let sale = api.post("/api/admin/sales", Some(admin), body).await?;
    sale.expect(201, None);
    text(&sale.body, "id")
}

/// The sale's Redis `cfg` hash and its `avail` counter.
async fn redis_state(api: &TestApi, sale: &str) -> anyhow::Result<(HashMap<String, String>, i64)> {
    let redis = api.deps.redis()?;
    let id = SaleId::parse_str(sale)?;
    let cfg: HashMap<String, String> = redis.pool().hgetall(redis.sale_key(id, "cfg")).await?;
    let avail: i64 = redis.pool().get(redis.sale_key(id, "avail")).await?;
    Ok((cfg, avail))
}

/// Every row of the sale's trail, oldest first, following `next_cursor` (a page holds 500 at
/// most, and the racing test lands more than that on a quick machine).
async fn events(api: &TestApi, admin: &str, sale: &str) -> anyhow::Result<Vec<Value>> {
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(cursor) => format!("limit=500&cursor={cursor}"),
            None => "limit=500".to_owned(),
        };
        let page = api
            .get(
                &format!("/api/admin/sales/{sale}/events?{query}"),
                Some(admin),
            )
            .await?;
        page.expect(200, None);
        rows.extend(page.body["items"].as_array().cloned().unwrap_or_default());
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(rows),
        }
    }
}

fn ms(raw: &str) -> anyhow::Result<String> {
    Ok(DateTime::parse_from_rfc3339(raw)?
        .timestamp_millis()
        .to_string())
}

#[tokio::test]
async fn every_creation_field_changes_while_scheduled_and_shows_everywhere() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let first = api.new_product(&admin).await?;
    let other = api
        .post(
            "/api/admin/products",
            Some(&admin),
            json!({"name": "Lamp", "price": 1234, "currency": "USD"}),
        )
        .await?;
    other.expect(201, None);
    let other = other.body;
    let sale = sale_of(
        &api,
        &admin,
        &first,
        at(chrono::Duration::hours(1)),
        json!({}),
    )
    .await?;

    let opens = at(chrono::Duration::hours(2));
    let closes = at(chrono::Duration::hours(3));
    let reply = patch(
        &api,
        &admin,
        &format!("/api/admin/sales/{sale}"),
        json!({
            "product_id": other["id"], "stock": 25, "opens_at": opens, "closes_at": closes,
            "per_user_limit": 3, "hold_seconds": 120, "mode": "fcfs", "notice": "Soon",
        }),
    )
    .await?;
    reply.expect(200, None);
    let shown = api.get(&format!("/api/sales/{sale}"), None).await?;
    shown.expect(200, None);
    for body in [&reply.body, &shown.body] {
        assert_eq!(body["state"], "scheduled");
        assert_eq!(body["product"]["id"], other["id"]);
        assert_eq!(body["product"]["price"], 1234);
        assert_eq!(body["stock_total"], 25);
        assert_eq!(body["available"], 25);
        assert_eq!(ms(&text(body, "opens_at")?)?, ms(&opens)?);
        assert_eq!(ms(&text(body, "closes_at")?)?, ms(&closes)?);
        assert_eq!(body["per_user_limit"], 3);
        assert_eq!(body["hold_seconds"], 120);
        assert_eq!(body["notice"], "Soon");
    }
    let stock = api.get(&format!("/api/sales/{sale}/stock"), None).await?;
    stock.expect(200, None);
    assert_eq!(stock.body, json!({"available": 25, "held": 0, "sold": 0}));
    let (cfg, avail) = redis_state(&api, &sale).await?;
    assert_eq!(avail, 25);
    let want = [
        ("stock_total", "25".to_owned()),
        ("opens_at", ms(&opens)?),
        ("closes_at", ms(&closes)?),
        ("per_user_limit", "3".to_owned()),
        ("hold_seconds", "120".to_owned()),
        ("product_id", text(&other, "id")?),
        ("price", "1234".to_owned()),
        ("currency", "USD".to_owned()),
        ("notice", "Soon".to_owned()),
    ];
    for (field, value) in want {
        assert_eq!(cfg.get(field), Some(&value), "cfg {field}");
    }
    // closes_at back to none.
    let reply = patch(
        &api,
        &admin,
        &format!("/api/admin/sales/{sale}"),
        json!({"closes_at": null}),
    )
    .await?;
    reply.expect(200, None);
    assert_eq!(reply.body["closes_at"], Value::Null);
    assert_eq!(
        redis_state(&api, &sale)
            .await?
            .0
            .get("closes_at")
            .map(String::as_str),
        Some("0")
    );

    // The trail: create, then the two changes, changed fields only.
    let trail = events(&api, &admin, &sale).await?;
    assert_eq!(trail.len(), 3, "{trail:?}");
    assert_eq!(trail[1]["action"], "sale.update");
    let after = &trail[1]["after"];
    let mut changed: Vec<&str> = after
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    changed.sort_unstable();
    assert_eq!(
        changed,
        [
            "closes_at",
            "hold_seconds",
            "notice",
            "opens_at",
            "per_user_limit",
            "product_id",
            "stock"
        ]
    );
    assert_eq!(trail[1]["before"]["stock"], 10);
    assert_eq!(after["stock"], 25);
    assert_eq!(trail[1]["before"]["product_id"], first["id"]);
    assert_eq!(trail[2]["after"], json!({"closes_at": null}));
    api.stop().await
}

#[tokio::test]
async fn bad_values_are_the_creations_400_and_change_nothing() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let product = api.new_product(&admin).await?;
    let sale = sale_of(
        &api,
        &admin,
        &product,
        at(chrono::Duration::hours(1)),
        json!({"per_user_limit": 2, "closes_at": at(chrono::Duration::hours(2))}),
    )
    .await?;
    let path = format!("/api/admin/sales/{sale}");
    let before = api.get(&format!("/api/sales/{sale}"), None).await?.body;
    let cases = [
        (json!({"stock": 0}), "stock"),
        (json!({"stock": 1}), "per_user_limit"),
        (json!({"per_user_limit": 11}), "per_user_limit"),
        (
            json!({"opens_at": at(chrono::Duration::hours(3))}),
            "closes_at",
        ),
        (
            json!({"closes_at": at(chrono::Duration::minutes(30))}),
            "closes_at",
        ),
        (json!({"opens_at": "tomorrow"}), "opens_at"),
        (json!({"hold_seconds": 5}), "hold_seconds"),
        (json!({"product_id": "not-a-uuid"}), "product_id"),
        (json!({"product_id": uuid::Uuid::now_v7()}), "product_id"),
        (json!({"mode": "draw"}), "mode"),
        (json!({"claim_seconds": 60}), "claim_seconds"),
        // A good field with a bad one: nothing of it is applied.
        (json!({"stock": 50, "hold_seconds": 0}), "hold_seconds"),
    ];
    for (body, field) in cases {
        let reply = patch(&api, &admin, &path, body.clone()).await?;
        reply.expect(400, Some("bad_request"));
        let message = text(&reply.body["error"], "message")?;
        assert!(message.contains(field), "{body}: {message}");
    }
    let after = api.get(&format!("/api/sales/{sale}"), None).await?.body;
    assert_eq!(before, after);
    assert_eq!(redis_state(&api, &sale).await?.1, 10);
    assert_eq!(
        events(&api, &admin, &sale).await?.len(),
        1,
        "only the create"
    );
    api.stop().await
}

#[tokio::test]
async fn after_opening_creation_fields_are_409_and_live_fields_still_change() -> anyhow::Result<()>
{
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let product = api.new_product(&admin).await?;
    let sale = sale_of(
        &api,
        &admin,
        &product,
        at(chrono::Duration::minutes(-1)),
        json!({}),
    )
    .await?;
    let path = format!("/api/admin/sales/{sale}");
    for (body, field) in [
        (json!({"stock": 20}), "stock"),
        (
            json!({"opens_at": at(chrono::Duration::hours(1))}),
            "opens_at",
        ),
        (
            json!({"per_user_limit": 2, "admit_per_second": 5}),
            "per_user_limit",
        ),
        (json!({"hold_seconds": 60}), "hold_seconds"),
    ] {
        let reply = patch(&api, &admin, &path, body).await?;
        reply.expect(409, Some("invalid_state"));
        assert!(text(&reply.body["error"], "message")?.contains(field));
    }
    let shown = api.get(&format!("/api/sales/{sale}"), None).await?.body;
    assert_eq!(shown["stock_total"], 10);
    assert_eq!(
        shown["admit_per_second"], 100,
        "the refused PATCH changed nothing"
    );
    let reply = patch(
        &api,
        &admin,
        &path,
        json!({"admit_per_second": 7, "paused": true}),
    )
    .await?;
    reply.expect(200, None);
    assert_eq!(reply.body["state"], "paused");
    assert_eq!(events(&api, &admin, &sale).await?.len(), 2);
    // Price is quoted by orders: fixed now; the name is not.
    let product_path = format!("/api/admin/products/{}", text(&product, "id")?);
    let reply = patch(&api, &admin, &product_path, json!({"price": 1})).await?;
    reply.expect(409, Some("invalid_state"));
    assert!(text(&reply.body["error"], "message")?.contains("price"));
    let reply = patch(
        &api,
        &admin,
        &product_path,
        json!({"name": "Renamed chair"}),
    )
    .await?;
    reply.expect(200, None);
    assert_eq!(reply.body["name"], "Renamed chair");
    assert_eq!(reply.body["price"], 390_000);
    api.stop().await
}

#[tokio::test]
async fn a_product_changes_with_its_scheduled_sales_and_leaves_its_trail() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let product = api.new_product(&admin).await?;
    let id = text(&product, "id")?;
    let sales = [
        sale_of(
            &api,
            &admin,
            &product,
            at(chrono::Duration::hours(1)),
            json!({}),
        )
        .await?,
        sale_of(
            &api,
            &admin,
            &product,
            at(chrono::Duration::hours(2)),
            json!({}),
        )
        .await?,
    ];
    let path = format!("/api/admin/products/{id}");
    for (body, field) in [
        (json!({}), "nothing"),
        (json!({"price": -1}), "price"),
        (json!({"name": "  "}), "name"),
        (json!({"currency": "usd"}), "currency"),
    ] {
        let reply = patch(&api, &admin, &path, body).await?;
        reply.expect(400, Some("bad_request"));
        assert!(text(&reply.body["error"], "message")?.contains(field));
    }
    patch(
        &api,
        &admin,
        &format!("/api/admin/products/{}", uuid::Uuid::now_v7()),
        json!({"name": "x"}),
    )
    .await?
    .expect(404, Some("not_found"));
    let reply = patch(
        &api,
        &admin,
        &path,
        json!({"name": "Signed chair", "description": "Numbered and signed", "price": 410_000, "currency": "JPY"}),
    )
    .await?;
    reply.expect(200, None);
    assert_eq!(reply.body["price"], 410_000);
    let shown = api.get(&format!("/api/products/{id}"), None).await?;
    assert_eq!(shown.body["name"], "Signed chair");
    for sale in &sales {
        let shown = api.get(&format!("/api/sales/{sale}"), None).await?.body;
        assert_eq!(shown["product"]["price"], 410_000, "{shown}");
        assert_eq!(shown["product"]["currency"], "JPY");
        let (cfg, _) = redis_state(&api, sale).await?;
        assert_eq!(cfg.get("price").map(String::as_str), Some("410000"));
        assert_eq!(cfg.get("currency").map(String::as_str), Some("JPY"));
    }
    let rows: Vec<(String, Option<String>, String)> = sqlx::query_as(
        "SELECT action, before_json, after_json FROM admin_events WHERE product_id = ? ORDER BY id",
    )
    .bind(uuid::Uuid::parse_str(&id)?)
    .fetch_all(api.mysql())
    .await?;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1].0, "product.update");
    let before: Value = serde_json::from_str(rows[1].1.as_deref().unwrap_or("null"))?;
    let after: Value = serde_json::from_str(&rows[1].2)?;
    assert_eq!(before["price"], 390_000);
    assert_eq!(after["price"], 410_000);
    assert_eq!(after["currency"], "JPY");
    assert_eq!(before["description"], Value::Null);
    api.stop().await
}

/// PATCHes of the stock hammer a sale that opens mid-way: whichever side of the opening each
/// lands on, the sale ends with one stock that MySQL, Redis (cfg and avail) and the trail's last
/// change agree on; no 200 is answered for a PATCH sent after the opening was seen; and every
/// trail change follows from the one before (each `before` is the previous `after`).
#[tokio::test]
async fn patches_racing_the_opening_and_each_other_leave_trail_and_state_agreeing()
-> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let product = api.new_product(&admin).await?;
    let sale = sale_of(
        &api,
        &admin,
        &product,
        at(chrono::Duration::milliseconds(1500)),
        json!({}),
    )
    .await?;
    let path = format!("/api/admin/sales/{sale}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut tasks = Vec::new();
    for worker in 0..8_i64 {
        let (api, admin, path, sale) = (&api, admin.clone(), path.clone(), sale.clone());
        tasks.push(async move {
            let (mut ok, mut refused) = (0, 0);
            for n in 0_i64.. {
                let stock = 11 + worker * 1000 + n; // never the 10 it starts with
                let reply = patch(api, &admin, &path, json!({"stock": stock})).await?;
                match reply.status.as_u16() {
                    200 => ok += 1,
                    409 => {
                        refused += 1;
                        // Opened: one more PATCH must be refused too, then stop.
                        let shown = api.get(&format!("/api/sales/{sale}"), None).await?.body;
                        assert_ne!(shown["state"], "scheduled");
                        let again = patch(api, &admin, &path, json!({"stock": 5})).await?;
                        again.expect(409, Some("invalid_state"));
                        break;
                    }
                    other => anyhow::bail!("unexpected {other}: {:?}", reply.body),
                }
                anyhow::ensure!(tokio::time::Instant::now() < deadline, "never opened");
            }
            anyhow::Ok((ok, refused))
        });
    }
    let results = futures_util::future::try_join_all(tasks).await?;
    let ok: i64 = results.iter().map(|r| r.0).sum();
    assert!(
        ok > 0,
        "no PATCH landed before the opening: nothing was raced"
    );

    let mysql: i32 = sqlx::query_scalar("SELECT stock_total FROM sales WHERE id = ?")
        .bind(uuid::Uuid::parse_str(&sale)?)
        .fetch_one(api.mysql())
        .await?;
    let (cfg, avail) = redis_state(&api, &sale).await?;
    assert_eq!(cfg.get("stock_total"), Some(&mysql.to_string()));
    assert_eq!(avail, i64::from(mysql), "avail = stock while nothing sold");
    let trail = events(&api, &admin, &sale).await?;
    let changes: Vec<&Value> = trail.iter().skip(1).collect();
    assert_eq!(changes.len() as i64, ok, "one trail row per 200");
    let mut stock = json!(10);
    for change in &changes {
        assert_eq!(change["before"]["stock"], stock, "{change}");
        stock = change["after"]["stock"].clone();
    }
    assert_eq!(stock, json!(mysql));
    let opens_ms: i64 = cfg.get("opens_at").map_or(Ok(0), |v| v.parse())?;
    for change in &changes {
        let at = DateTime::parse_from_rfc3339(&text(change, "at")?)?.timestamp_millis();
        assert!(
            at <= opens_ms + 50,
            "a change recorded at {at}, after the opening {opens_ms}"
        );
    }
    api.stop().await
}

/// A scheduled draw sale's own creation fields: the freeze and the claim window change, shown
/// in `GET /api/sales/{id}`'s `draw` and the Redis cfg; a freeze before the opening is the
/// creation's 400; the line's fields stay refused for a draw.
#[tokio::test]
async fn a_scheduled_draw_changes_its_freeze_and_claim_window() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let product = api.new_product(&admin).await?;
    let sale = sale_of(
        &api,
        &admin,
        &product,
        at(chrono::Duration::hours(1)),
        json!({"mode": "draw", "entries_close_at": at(chrono::Duration::hours(2))}),
    )
    .await?;
    let path = format!("/api/admin/sales/{sale}");
    let freeze = at(chrono::Duration::hours(3));
    let reply = patch(
        &api,
        &admin,
        &path,
        json!({"entries_close_at": freeze, "claim_seconds": 90, "mode": "draw"}),
    )
    .await?;
    reply.expect(200, None);
    let shown = api.get(&format!("/api/sales/{sale}"), None).await?.body;
    assert_eq!(
        ms(&text(&shown["draw"], "entries_close_at")?)?,
        ms(&freeze)?
    );
    assert_eq!(shown["draw"]["claim_seconds"], 90);
    let (cfg, _) = redis_state(&api, &sale).await?;
    assert_eq!(cfg.get("entries_close_at"), Some(&ms(&freeze)?));
    assert_eq!(cfg.get("claim_seconds").map(String::as_str), Some("90"));
    for (body, field) in [
        (
            json!({"entries_close_at": at(chrono::Duration::minutes(30))}),
            "entries_close_at",
        ),
        (json!({"admit_per_second": 5}), "admit_per_second"),
        (json!({"mode": "fcfs"}), "mode"),
    ] {
        let reply = patch(&api, &admin, &path, body.clone()).await?;
        reply.expect(400, Some("bad_request"));
        assert!(
            text(&reply.body["error"], "message")?.contains(field),
            "{body}"
        );
    }
    let trail = events(&api, &admin, &sale).await?;
    assert_eq!(trail.len(), 2);
    assert_eq!(trail[1]["after"]["claim_seconds"], 90);
    assert_eq!(trail[1]["before"]["claim_seconds"], 1800);
    api.stop().await
}
