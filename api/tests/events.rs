//! The audit trail and the audit at a click (#24) against real MariaDB and Redis: every admin
//! change leaves one `admin_events` row in its own transaction (a refused change none), the
//! trail of a sale oldest first with the admin's id and before → after, never an access code
//! in plain text, paging across a page boundary, the role gate and hostile query strings;
//! `GET …/audit` answering what `dropline sale audit --json` prints, `ok` false once the sale's
//! Redis counters are corrupted.

mod common;

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use common::{Reply, TestApi};
use dropline_audit::AuditOptions;
use dropline_core::auth::tokens::Role;
use dropline_core::ids::SaleId;
use fred::prelude::*;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

fn rfc3339(offset: chrono::Duration) -> String {
    (Utc::now() + offset).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn text(value: &Value, field: &str) -> anyhow::Result<String> {
    value[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no {field} in {value}"))
}

async fn patch(api: &TestApi, token: &str, sale: &str, body: Value) -> anyhow::Result<Reply> {
    api.call(
        Method::PATCH,
        &format!("/api/admin/sales/{sale}"),
        Some(token),
        Some(body),
    )
    .await
}

/// A product and a sale of it (`extra` fields added to the sale).
async fn new_sale(api: &TestApi, admin: &str, extra: Value) -> anyhow::Result<(Value, Value)> {
    let product = api.new_product(admin).await?;
    let mut body = json!({
        "product_id": product["id"],
        "stock": 10,
        "opens_at": rfc3339(chrono::Duration::minutes(-1)),
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let sale = api.post("/api/admin/sales", Some(admin), body).await?;
    sale.expect(201, None);
    Ok((product, sale.body))
}

async fn event_rows(api: &TestApi) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM admin_events")
        .fetch_one(api.mysql())
        .await?)
}

/// Every page of a sale's trail, `limit` at a time, checking each page's shape.
async fn all_events(
    api: &TestApi,
    admin: &str,
    sale: &str,
    limit: usize,
) -> anyhow::Result<Vec<Value>> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!("/api/admin/sales/{sale}/events?limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = api.get(&path, Some(admin)).await?;
        page.expect(200, None);
        let got = page.body["items"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("no items in {}", page.body))?;
        assert!(got.len() <= limit, "{} items for limit {limit}", got.len());
        items.extend(got.iter().cloned());
        match page.body["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(got.len(), limit, "a page before the last is full");
                cursor = Some(next.to_owned());
            }
            None => {
                assert!(page.body["next_cursor"].is_null(), "{}", page.body);
                return Ok(items);
            }
        }
    }
    anyhow::bail!("the trail never ended")
}

#[tokio::test]
async fn every_admin_change_is_in_the_sale_trail_in_order_and_no_code_in_plain_text()
-> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let email = format!("admin-{}@example.com", Uuid::new_v4().simple());
    let (admin_id, admin) = api.user(&email, Role::Admin).await?;
    let admin_id = admin_id.to_string();

    // A refused create leaves nothing.
    api.post(
        "/api/admin/sales",
        Some(&admin),
        json!({"product_id": Uuid::now_v7(), "stock": 5, "opens_at": rfc3339(chrono::Duration::hours(1))}),
    )
    .await?
    .expect(400, Some("bad_request"));
    assert_eq!(event_rows(&api).await?, 0);

    // Scheduled, with a group: codes can be added and groups can still change.
    let (product, sale) = new_sale(
        &api,
        &admin,
        json!({"opens_at": rfc3339(chrono::Duration::hours(1)), "groups": ["vip"]}),
    )
    .await?;
    let sale_id = text(&sale, "id")?;
    let product_id = text(&product, "id")?;

    patch(&api, &admin, &sale_id, json!({"paused": true}))
        .await?
        .expect(200, None);
    // The same again changes nothing: no event.
    patch(&api, &admin, &sale_id, json!({"paused": true}))
        .await?
        .expect(200, None);
    patch(
        &api,
        &admin,
        &sale_id,
        json!({"admit_per_second": 50, "notice": "Doors at noon", "max_active": 7}),
    )
    .await?
    .expect(200, None);
    // Refused, before and inside the transaction: no event.
    patch(&api, &admin, &sale_id, json!({"closed": false}))
        .await?
        .expect(400, Some("bad_request"));
    patch(&api, &admin, &sale_id, json!({"admit_per_second": 0}))
        .await?
        .expect(400, Some("bad_request"));

    let generated = api
        .post(
            &format!("/api/admin/sales/{sale_id}/codes"),
            Some(&admin),
            json!({"group": "vip", "count": 3, "uses": 2}),
        )
        .await?;
    generated.expect(201, None);
    let given = api
        .post(
            &format!("/api/admin/sales/{sale_id}/codes"),
            Some(&admin),
            json!({"group": "vip", "codes": ["QWER-TYUI-OPAS"]}),
        )
        .await?;
    given.expect(201, None);
    // A group with codes cannot be dropped (409, after the row lock): no event.
    patch(&api, &admin, &sale_id, json!({"groups": []}))
        .await?
        .expect(409, Some("invalid_state"));
    patch(
        &api,
        &admin,
        &sale_id,
        json!({"max_active": null, "paused": false, "closed": true}),
    )
    .await?
    .expect(200, None);

    let events = all_events(&api, &admin, &sale_id, 100).await?;
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        actions,
        [
            "sale.create",
            "sale.update",
            "sale.update",
            "codes.create",
            "codes.create",
            "sale.update"
        ],
        "{events:#?}"
    );
    for event in &events {
        assert_eq!(event["admin_id"], json!(admin_id), "{event}");
        let at = text(event, "at")?;
        chrono::DateTime::parse_from_rfc3339(&at)?;
    }
    // Oldest first: ids and times never go back.
    for pair in events.windows(2) {
        assert!(text(&pair[0], "id")? < text(&pair[1], "id")?, "{pair:?}");
        assert!(
            chrono::DateTime::parse_from_rfc3339(&text(&pair[0], "at")?)?
                <= chrono::DateTime::parse_from_rfc3339(&text(&pair[1], "at")?)?
        );
    }
    let create = &events[0];
    assert!(create["before"].is_null(), "{create}");
    assert_eq!(create["after"]["product_id"], json!(product_id));
    assert_eq!(create["after"]["stock"], json!(10));
    assert_eq!(create["after"]["groups"], json!(["vip"]));
    assert_eq!(create["after"]["mode"], json!("fcfs"));
    assert_eq!(events[1]["before"], json!({"paused": false}));
    assert_eq!(events[1]["after"], json!({"paused": true}));
    assert_eq!(
        events[2]["before"],
        json!({"admit_per_second": 100, "max_active": null, "notice": null})
    );
    assert_eq!(
        events[2]["after"],
        json!({"admit_per_second": 50, "max_active": 7, "notice": "Doors at noon"})
    );
    assert!(events[3]["before"].is_null());
    assert_eq!(
        events[3]["after"],
        json!({"group": "vip", "uses": 2, "count": 3, "source": "generated"})
    );
    assert_eq!(
        events[4]["after"],
        json!({"group": "vip", "uses": 1, "count": 1, "source": "given"})
    );
    assert_eq!(
        events[5]["before"],
        json!({"max_active": 7, "paused": true, "closed": false})
    );
    assert_eq!(
        events[5]["after"],
        json!({"max_active": null, "paused": false, "closed": true})
    );

    // No code in plain text, in the answer or in the table (shown or normalised form).
    let mut codes: Vec<String> = generated.body["codes"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no codes in {}", generated.body))?
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    assert_eq!(codes.len(), 3);
    codes.push("QWER-TYUI-OPAS".to_owned());
    let answer = serde_json::to_string(&events)?;
    let table: Vec<(Option<String>, Option<String>, String)> =
        sqlx::query_as("SELECT before_json, after_json, action FROM admin_events")
            .fetch_all(api.mysql())
            .await?;
    let table = format!("{table:?}");
    for code in &codes {
        for form in [code.clone(), code.replace('-', "")] {
            assert!(!answer.contains(&form), "{form} in the answer");
            assert!(!table.contains(&form), "{form} in admin_events");
        }
    }

    // The product's own event is stored under the product, not listed with the sale.
    let product_events: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT action, after_json FROM admin_events WHERE product_id = ? AND sale_id IS NULL",
    )
    .bind(Uuid::parse_str(&product_id)?)
    .fetch_all(api.mysql())
    .await?;
    assert_eq!(product_events.len(), 1, "{product_events:?}");
    assert_eq!(product_events[0].0, "product.create");
    let after: Value = serde_json::from_str(product_events[0].1.as_deref().unwrap_or("null"))?;
    assert_eq!(after["price"], json!(390_000));
    assert_eq!(
        event_rows(&api).await?,
        7,
        "6 of the sale and 1 of the product"
    );

    // Across page boundaries: the same list, 4 then 2, and 1 at a time.
    assert_eq!(all_events(&api, &admin, &sale_id, 4).await?, events);
    assert_eq!(all_events(&api, &admin, &sale_id, 1).await?, events);

    // Another sale's trail holds only its own events.
    let (_, other) = new_sale(&api, &admin, json!({})).await?;
    let other_events = all_events(&api, &admin, &text(&other, "id")?, 100).await?;
    assert_eq!(other_events.len(), 1);
    assert_eq!(other_events[0]["action"], json!("sale.create"));

    api.stop().await
}

#[tokio::test]
async fn the_trail_refuses_strangers_unknown_sales_and_bad_pages() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let buyer = api.buyer().await?;
    let (_, sale) = new_sale(&api, &admin, json!({})).await?;
    let sale_id = text(&sale, "id")?;
    let events = format!("/api/admin/sales/{sale_id}/events");
    let audit = format!("/api/admin/sales/{sale_id}/audit");

    for path in [&events, &audit] {
        api.get(path, None).await?.expect(401, Some("unauthorized"));
        api.get(path, Some(&buyer))
            .await?
            .expect(403, Some("forbidden"));
    }
    for sale in [
        SaleId::new_v7().to_string(),
        "not-a-uuid".to_owned(),
        "1".to_owned(),
    ] {
        for what in ["events", "audit"] {
            api.get(&format!("/api/admin/sales/{sale}/{what}"), Some(&admin))
                .await?
                .expect(404, Some("not_found"));
        }
    }
    for query in [
        "limit=0",
        "limit=501",
        "limit=-1",
        "limit=abc",
        "limit=1e2",
        "limit=99999999999999999999",
        "limit=1&limit=2",
        "cursor=",
        "cursor=!!",
        "cursor=AQ",
        "cursor=AgGS9aRsPnshnU8aKzxNXm8",
        "cursor=AQGS9aRsPnshnU8aKzxNXm8AAAA",
        "cursor=%FF%FE",
    ] {
        api.get(&format!("{events}?{query}"), Some(&admin))
            .await?
            .expect(400, Some("bad_request"));
    }
    // The largest page is fine, and so is a valid cursor naming no event.
    let page = api
        .get(&format!("{events}?limit=500"), Some(&admin))
        .await?;
    page.expect(200, None);
    assert_eq!(page.body["items"].as_array().map(Vec::len), Some(1));
    let page = api
        .get(
            &format!("{events}?cursor=AQGS9aRsPnshnU8aKzxNXm8"),
            Some(&admin),
        )
        .await?;
    page.expect(200, None);
    api.stop().await
}

#[tokio::test]
async fn the_audit_endpoint_answers_the_command_s_report_and_sees_a_breach() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let (_, sale) = new_sale(&api, &admin, json!({})).await?;
    let sale_id: SaleId = SaleId::parse_str(&text(&sale, "id")?)?;
    let path = format!("/api/admin/sales/{sale_id}/audit");

    let fresh = api.get(&path, Some(&admin)).await?;
    fresh.expect(200, None);
    assert_eq!(fresh.body["ok"], json!(true), "{}", fresh.body);
    assert_eq!(fresh.body["sale_id"], json!(sale_id.to_string()));
    // What `dropline sale audit --json` prints: the same code with the same options.
    let redis = api.deps.redis()?;
    let direct =
        dropline_audit::audit(api.mysql(), redis, sale_id, AuditOptions::default()).await?;
    assert_eq!(
        fresh.body,
        serde_json::from_str::<Value>(&direct.to_json()?)?
    );

    // One unit more in `avail` than the stock: avail + held + sold ≠ stock_total.
    let avail = redis.sale_key(sale_id, "avail");
    let _: i64 = redis.pool().incr_by(&avail, 1).await?;
    // Answers may be up to a second old (audit.rs): wait, with a deadline, for the new run.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let last = loop {
        let reply = api.get(&path, Some(&admin)).await?;
        reply.expect(200, None);
        if reply.body["ok"] == json!(false) || tokio::time::Instant::now() > deadline {
            break reply.body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let seen = last["ok"] == json!(false);
    assert!(seen, "the breach was not reported: {last}");
    assert_eq!(
        last["breach_counts"]["stock_unbalanced"],
        json!(1),
        "{last}"
    );
    assert!(
        last["breaches"]
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["code"] == "stock_unbalanced")),
        "{last}"
    );

    // Many at once share runs: every answer is the same report.
    let replies =
        futures_util::future::join_all((0..8).map(|_| api.get(&path, Some(&admin)))).await;
    for reply in replies {
        let reply = reply?;
        reply.expect(200, None);
        assert_eq!(reply.body["ok"], json!(false));
    }
    api.stop().await
}

#[tokio::test]
async fn with_redis_cut_the_audit_is_503_and_a_failed_change_leaves_no_event() -> anyhow::Result<()>
{
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let (product, sale) = new_sale(&api, &admin, json!({})).await?;
    let sale_id = text(&sale, "id")?;
    assert_eq!(event_rows(&api).await?, 2);

    // A replica whose Redis goes through a proxy we can cut.
    let replica = api.replica_with_cuttable_redis().await?;
    let base = replica.base.clone();
    replica.proxy.cut().await;

    let audit = format!("{base}/api/admin/sales/{sale_id}/audit");
    let response = api.http.get(&audit).bearer_auth(&admin).send().await?;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], "unavailable", "{body}");

    // Changes that fail on Redis roll back with their trail rows.
    let response = api
        .http
        .patch(format!("{base}/api/admin/sales/{sale_id}"))
        .bearer_auth(&admin)
        .json(&json!({"paused": true}))
        .send()
        .await?;
    assert_eq!(response.status(), 503);
    let response = api
        .http
        .post(format!("{base}/api/admin/sales"))
        .bearer_auth(&admin)
        .json(&json!({"product_id": product["id"], "stock": 3, "opens_at": rfc3339(chrono::Duration::zero())}))
        .send()
        .await?;
    assert_eq!(response.status(), 503);
    assert_eq!(event_rows(&api).await?, 2, "no event of a failed change");

    // Redis back: the same replica audits again.
    replica.proxy.restore();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let last = loop {
        let response = api.http.get(&audit).bearer_auth(&admin).send().await?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == 200 || tokio::time::Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(last.0, 200, "{}", last.1);
    assert_eq!(last.1["ok"], json!(true), "{}", last.1);

    replica.stop().await?;
    api.stop().await
}
