//! What schemathesis found in the api (issue #20; README "What the tools found"), one test
//! each, so that a fix stays fixed without running the tool.

mod common;

use common::TestApi;
use serde_json::{Value, json};

async fn product(api: &TestApi, admin: &str) -> anyhow::Result<Value> {
    let reply = api
        .post(
            "/api/admin/products",
            Some(admin),
            json!({"name": "Found chair", "price": 1000}),
        )
        .await?;
    reply.expect(201, None);
    Ok(reply.body)
}

/// A sale opening after 2038 was a 500: sqlx sent the time as a TIMESTAMP, which MariaDB
/// cannot hold past 2038 and stored as NULL into a NOT NULL DATETIME column.
#[tokio::test]
async fn a_sale_after_2038_is_stored() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    let product = product(&api, &admin).await?;
    let reply = api
        .post(
            "/api/admin/sales",
            Some(&admin),
            json!({
                "product_id": product["id"],
                "stock": 1579,
                "opens_at": "2546-07-30T20:52:37.436944-05:46",
                "closes_at": "9999-12-31T00:00:00Z",
                "groups": ["vip"],
                "presale_only_until": "2600-01-01T00:00:00Z",
            }),
        )
        .await?;
    reply.expect(201, None);
    assert_eq!(reply.body["opens_at"], "2546-07-31T02:38:37.436Z");
    assert_eq!(reply.body["closes_at"], "9999-12-31T00:00:00.000Z");
    let sale = reply.body["id"].as_str().unwrap_or_default().to_owned();
    let (opens_at,): (chrono::DateTime<chrono::Utc>,) =
        sqlx::query_as("SELECT opens_at FROM sales WHERE id = ?")
            .bind(uuid::Uuid::parse_str(&sale)?)
            .fetch_one(api.mysql())
            .await?;
    assert_eq!(opens_at.to_rfc3339(), "2546-07-31T02:38:37.436+00:00");
    // PATCH binds the presale time the same way.
    let reply = api
        .call(
            reqwest::Method::PATCH,
            &format!("/api/admin/sales/{sale}"),
            Some(&admin),
            Some(json!({"presale_only_until": "2999-01-01T00:00:00Z"})),
        )
        .await?;
    reply.expect(200, None);
    assert_eq!(reply.body["presale_only_until"], "2999-01-01T00:00:00.000Z");
    api.stop().await
}

/// `5.0` and `5e2` are JSON integers (JSON Schema's too), but serde refused them for an
/// integer field: schema-valid bodies got 400.
#[tokio::test]
async fn integral_floats_are_integers() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let admin = api.admin().await?;
    for (price, expected) in [
        (json!(49_508_374_877_705.0), 49_508_374_877_705_i64),
        (json!(5e2), 500),
    ] {
        let reply = api
            .post(
                "/api/admin/products",
                Some(&admin),
                json!({"name": "Float chair", "price": price}),
            )
            .await?;
        reply.expect(201, None);
        assert_eq!(reply.body["price"], expected);
    }
    // A fraction stays an error, and so does a number past i64.
    for price in [json!(1.5), json!(1e19)] {
        api.post(
            "/api/admin/products",
            Some(&admin),
            json!({"name": "Float chair", "price": price}),
        )
        .await?
        .expect(400, Some("bad_request"));
    }
    // Unknown fields are still refused on this path.
    api.post(
        "/api/admin/products",
        Some(&admin),
        json!({"name": "Float chair", "price": 1.0, "colour": "red"}),
    )
    .await?
    .expect(400, Some("bad_request"));
    api.stop().await
}

/// Paying a paid order answers 200 `{"status": "paid"}`, which the document did not list.
#[test]
fn paying_a_paid_order_is_documented() {
    let doc = serde_json::to_value(dropline_api::openapi()).unwrap_or(Value::Null);
    let responses = &doc["paths"]["/api/orders/{id}/pay"]["post"]["responses"];
    assert!(responses.get("200").is_some(), "{responses}");
    assert!(responses.get("202").is_some(), "{responses}");
}

/// The document said `format: email`, but the api takes international addresses and trims
/// white space around one: the document now states the api's rule as a pattern.
#[tokio::test]
async fn an_international_padded_address_is_what_the_document_says() -> anyhow::Result<()> {
    let doc = serde_json::to_value(dropline_api::openapi()).unwrap_or(Value::Null);
    let email = &doc["components"]["schemas"]["SignUp"]["properties"]["email"];
    assert!(email.get("format").is_none(), "{email}");
    assert!(
        email["pattern"]
            .as_str()
            .is_some_and(|p| p.starts_with(r"^\s*"))
    );

    let api = TestApi::start(&[]).await?;
    let reply = api
        .post(
            "/api/users",
            None,
            json!({
                "email": format!("\u{c}büyer-{}@bücher.example \t", uuid::Uuid::new_v4().simple()),
                "password": "long enough",
                "name": "Büyer",
            }),
        )
        .await?;
    reply.expect(201, None);
    assert!(
        reply.body["email"]
            .as_str()
            .is_some_and(|e| e.starts_with("büyer-") && e.ends_with("@bücher.example"))
    );
    api.stop().await
}
