//! Access-code batches (design/door.md §2) against real MySQL and Redis: generated and given
//! codes, JSON and CSV, every refusal naming its field with nothing stored, and no code in plain
//! text in either store.

mod common;

use std::collections::HashSet;

use chrono::{SecondsFormat, Utc};
use common::TestApi;
use dropline_core::ids::SaleId;
use dropline_core::sale::door;
use dropline_core::sale::keys::SaleKeys;
use fred::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

async fn sale_with_groups(api: &TestApi, admin: &str, groups: Value) -> anyhow::Result<SaleId> {
    let product = api.new_product(admin).await?;
    let opens_at =
        (Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Millis, true);
    let sale = api
        .post(
            "/api/admin/sales",
            Some(admin),
            json!({"product_id": product["id"], "stock": 10, "opens_at": opens_at, "groups": groups}),
        )
        .await?;
    sale.expect(201, None);
    let id: Uuid = sale.body["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no id"))?
        .parse()?;
    Ok(SaleId::from(id))
}

async fn stored_hashes(api: &TestApi, sale: SaleId) -> anyhow::Result<HashSet<Vec<u8>>> {
    let rows: Vec<(Vec<u8>,)> =
        sqlx::query_as("SELECT code_hash FROM access_codes WHERE sale_id = ?")
            .bind(sale)
            .fetch_all(api.mysql())
            .await?;
    Ok(rows.into_iter().map(|(h,)| h).collect())
}

async fn redis_codes(api: &TestApi, sale: SaleId) -> anyhow::Result<Vec<(Vec<u8>, String)>> {
    let key = SaleKeys::new(&api.state.redis, sale).codes();
    let all: std::collections::HashMap<Vec<u8>, String> =
        api.state.redis.pool().hgetall(&key).await?;
    Ok(all.into_iter().collect())
}

fn codes_of(body: &Value) -> Vec<String> {
    body["codes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn well_formed(code: &str) -> bool {
    let parts: Vec<&str> = code.split('-').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| p.len() == 4 && p.bytes().all(|b| door::CODE_ALPHABET.contains(&b)))
}

#[tokio::test]
async fn generated_batches_are_distinct_well_formed_and_stored_only_as_hashes() -> anyhow::Result<()>
{
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let sale = sale_with_groups(&api, &admin, json!(["vip", "fans"])).await?;
    let path = format!("/api/admin/sales/{sale}/codes");

    let reply = api
        .post(&path, Some(&admin), json!({"group": "vip", "count": 500}))
        .await?;
    reply.expect(201, None);
    assert_eq!(reply.body["group"], "vip");
    assert_eq!(reply.body["uses"], 1);
    let json_codes = codes_of(&reply.body);
    assert_eq!(json_codes.len(), 500);
    assert!(json_codes.iter().all(|c| well_formed(c)), "{json_codes:?}");
    assert_eq!(json_codes.iter().collect::<HashSet<_>>().len(), 500);

    // CSV: a header and one CRLF-ended line per code.
    let csv = api
        .http
        .post(format!("{}{path}", api.base))
        .bearer_auth(&admin)
        .header("Accept", "text/csv")
        .json(&json!({"group": "fans", "count": 3, "uses": 2}))
        .send()
        .await?;
    assert_eq!(csv.status(), 201);
    assert!(
        csv.headers()["content-type"]
            .to_str()?
            .starts_with("text/csv")
    );
    let text = csv.text().await?;
    assert!(text.ends_with("\r\n"), "{text:?}");
    let lines: Vec<&str> = text.trim_end_matches("\r\n").split("\r\n").collect();
    assert_eq!(lines[0], "code,group,uses");
    assert_eq!(lines.len(), 4, "{text:?}");
    let mut csv_codes = Vec::new();
    for line in &lines[1..] {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 3, "{line}");
        assert!(well_formed(fields[0]), "{line}");
        assert_eq!((fields[1], fields[2]), ("fans", "2"));
        csv_codes.push(fields[0].to_owned());
    }

    // Given codes are normalised, and may be reused by no other batch of the sale.
    let given = api
        .post(
            &path,
            Some(&admin),
            json!({"group": "vip", "codes": ["abcd-1234", " zzzz 99 "], "uses": 3}),
        )
        .await?;
    given.expect(201, None);
    assert_eq!(codes_of(&given.body), ["ABCD1234", "ZZZZ99"]);
    let again = api
        .post(
            &path,
            Some(&admin),
            json!({"group": "fans", "codes": ["ABCD-1234"]}),
        )
        .await?;
    again.expect(400, Some("bad_request"));
    assert!(
        again.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("ABCD1234")
    );

    // Every code is stored once, as the hash of sale and code, in MySQL and in Redis; neither
    // holds its text.
    let all: Vec<String> = json_codes
        .iter()
        .chain(&csv_codes)
        .map(|c| door::normalize_code(c).unwrap_or_default())
        .chain(["ABCD1234".to_owned(), "ZZZZ99".to_owned()])
        .collect();
    let expected: HashSet<Vec<u8>> = all
        .iter()
        .map(|c| door::code_hash(sale, c).to_vec())
        .collect();
    assert_eq!(stored_hashes(&api, sale).await?, expected);
    let in_redis = redis_codes(&api, sale).await?;
    assert_eq!(
        in_redis
            .iter()
            .map(|(h, _)| h.clone())
            .collect::<HashSet<_>>(),
        expected
    );
    // A group with codes cannot be dropped from the sale.
    api.call(
        reqwest::Method::PATCH,
        &format!("/api/admin/sales/{sale}"),
        Some(&admin),
        Some(json!({"groups": ["vip"]})),
    )
    .await?
    .expect(409, Some("invalid_state"));
    let fans = door::code_hash(
        sale,
        &door::normalize_code(&csv_codes[0]).unwrap_or_default(),
    );
    assert!(in_redis.contains(&(fans.to_vec(), "fans:2".to_owned())));
    let dump: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT HEX(code_hash), group_name, uses FROM access_codes WHERE sale_id = ?",
    )
    .bind(sale)
    .fetch_all(api.mysql())
    .await?;
    for code in &all {
        assert!(
            !dump
                .iter()
                .any(|(h, g, _)| h.contains(code.as_str()) || g.contains(code.as_str())),
            "{code} in MySQL"
        );
        assert!(
            !in_redis.iter().any(|(h, v)| {
                h.windows(code.len()).any(|w| w == code.as_bytes()) || v.contains(code.as_str())
            }),
            "{code} in Redis"
        );
    }
    api.stop().await
}

#[tokio::test]
async fn bad_batches_are_refused_naming_the_field_and_store_nothing() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let sale = sale_with_groups(&api, &admin, json!(["vip"])).await?;
    let path = format!("/api/admin/sales/{sale}/codes");
    for (body, field) in [
        (json!({"group": "vip"}), "count"),
        (
            json!({"group": "vip", "count": 2, "codes": ["ABCDEF"]}),
            "count",
        ),
        (json!({"group": "vip", "count": 0}), "count"),
        (json!({"group": "vip", "count": 100_001}), "count"),
        (json!({"group": "vip", "count": "5"}), "count"),
        (json!({"group": "vip", "codes": []}), "codes"),
        (json!({"group": "vip", "codes": ["AB-12"]}), "codes"),
        (json!({"group": "vip", "codes": ["ABC_DEF"]}), "codes"),
        (
            json!({"group": "vip", "codes": ["ABCDEF", "abc-def"]}),
            "codes",
        ),
        (json!({"group": "vip", "count": 1, "uses": 0}), "uses"),
        (json!({"group": "public", "count": 1}), "group"),
        (json!({"group": "gold", "count": 1}), "group"),
        (json!({"count": 1}), "group"),
        (json!({"group": "vip", "count": 1, "extra": true}), "extra"),
    ] {
        let reply = api.post(&path, Some(&admin), body.clone()).await?;
        reply.expect(400, Some("bad_request"));
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{body}: `{message}`");
    }
    assert!(stored_hashes(&api, sale).await?.is_empty());
    assert!(redis_codes(&api, sale).await?.is_empty());

    // Only administrators; only sales that exist.
    let buyer = api.buyer().await?;
    api.post(&path, Some(&buyer), json!({"group": "vip", "count": 1}))
        .await?
        .expect(403, Some("forbidden"));
    api.post(&path, None, json!({"group": "vip", "count": 1}))
        .await?
        .expect(401, Some("unauthorized"));
    api.post(
        &format!("/api/admin/sales/{}/codes", Uuid::now_v7()),
        Some(&admin),
        json!({"group": "vip", "count": 1}),
    )
    .await?
    .expect(404, Some("not_found"));
    api.stop().await
}
