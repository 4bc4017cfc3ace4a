//! The api's OpenAPI document (issue #20): the committed copy `openapi/api.json` equals what the
//! code generates, every operation has a description, the shared pieces are there (the `Error`
//! schema with every contract code, the security schemes, `Retry-After`), and the running api
//! serves the same document at `GET /openapi.json`.
//!
//! After a change to a route or a type it shows, regenerate the copy and commit the diff:
//! `UPDATE_OPENAPI=1 cargo nextest run -p dropline-api --test openapi`.

mod common;

use std::path::PathBuf;

use common::TestApi;
use dropline_core::http::openapi::{self, check_committed, undescribed};
use serde_json::Value;

const REGENERATE: &str = "cargo nextest run -p dropline-api --test openapi";

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../openapi/api.json")
}

fn generated() -> Value {
    serde_json::to_value(dropline_api::openapi()).unwrap_or(Value::Null)
}

#[test]
fn the_committed_document_is_the_generated_one() {
    if let Err(diff) = check_committed(&dropline_api::openapi(), &committed_path(), REGENERATE) {
        panic!("{diff}");
    }
}

#[test]
fn every_operation_has_a_description() {
    let missing = undescribed(&dropline_api::openapi());
    assert!(
        missing.is_empty(),
        "operations without a description (give the handler a doc comment): {missing:?}"
    );
}

/// The check above catches a route whose handler has no doc comment.
#[test]
fn a_route_without_a_description_is_caught() {
    #[utoipa::path(get, path = "/undocumented", responses((status = 200)))]
    async fn undocumented() {}

    let (_, doc) = utoipa_axum::router::OpenApiRouter::<()>::new()
        .routes(utoipa_axum::routes!(undocumented))
        .split_for_parts();
    assert_eq!(undescribed(&doc), vec!["GET /undocumented".to_owned()]);
}

#[test]
fn every_route_of_the_contract_is_in_it() {
    let doc = generated();
    let mut operations: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
            operations.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    operations.sort();
    let mut expected = vec![
        "POST /api/users",
        "POST /api/users/verify",
        "POST /api/users/verify/resend",
        "POST /api/webhooks/stripe",
        "GET /api/me",
        "PUT /api/me/password",
        "POST /api/auth/login",
        "POST /api/auth/refresh",
        "POST /api/auth/logout",
        "GET /api/products",
        "GET /api/products/{id}",
        "GET /api/sales",
        "GET /api/sales/{id}",
        "GET /api/sales/{id}/stock",
        "POST /api/admin/products",
        "PATCH /api/admin/products/{id}",
        "POST /api/admin/sales",
        "PATCH /api/admin/sales/{id}",
        "POST /api/admin/sales/{id}/codes",
        "GET /api/admin/sales/{id}/events",
        "GET /api/admin/sales/{id}/audit",
        "GET /api/admin/sales/{id}/report",
        "POST /api/orders",
        "GET /api/orders",
        "GET /api/orders/{id}",
        "DELETE /api/orders/{id}",
        "POST /api/orders/{id}/pay",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /openapi.json",
    ];
    expected.sort();
    assert_eq!(operations, expected);
}

#[test]
fn errors_share_one_schema_with_every_code() {
    let doc = generated();
    assert_eq!(doc["openapi"], "3.1.0");
    let codes = &doc["components"]["schemas"]["ErrorCode"]["enum"];
    for code in [
        "bad_request",
        "unauthorized",
        "forbidden",
        "not_admitted",
        "email_not_verified",
        "not_found",
        "invalid_code",
        "invalid_credentials",
        "idempotency_key_reused",
        "sold_out",
        "limit_exceeded",
        "sale_not_open",
        "invalid_state",
        "email_taken",
        "rate_limited",
        "queue_full",
        "unavailable",
        "payload_too_large",
        "unsupported_media_type",
    ] {
        assert!(
            codes
                .as_array()
                .is_some_and(|c| c.contains(&Value::from(code))),
            "{code} missing from ErrorCode: {codes}"
        );
    }
    dropline_testkit::openapi::assert_operations_follow_the_contract(&doc);
}

#[test]
fn security_schemes_and_headers() {
    let doc = generated();
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["accessToken"]["type"], "http");
    assert_eq!(schemes["accessToken"]["scheme"], "bearer");
    assert_eq!(schemes["pass"]["type"], "apiKey");
    assert_eq!(schemes["pass"]["in"], "header");
    assert_eq!(schemes["pass"]["name"], openapi::PASS_HEADER);
    let create = &doc["paths"]["/api/orders"]["post"];
    // Both at once: one requirement object naming the two schemes.
    assert_eq!(
        create["security"],
        serde_json::json!([{"accessToken": [], "pass": []}])
    );
    let key = create["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "Idempotency-Key"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(key["in"], "header");
    assert_eq!(key["required"], true);
    assert_eq!(key["schema"]["pattern"], openapi::IDEMPOTENCY_KEY_PATTERN);
    // Unknown fields are refused: every request body says so.
    for name in [
        "SignUp",
        "NewSale",
        "SalePatch",
        "NewCodes",
        "CreateOrder",
        "PayOrder",
    ] {
        assert_eq!(
            doc["components"]["schemas"][name]["additionalProperties"], false,
            "{name}"
        );
    }
}

#[tokio::test]
async fn the_api_serves_it() -> anyhow::Result<()> {
    let api = TestApi::start(&[]).await?;
    let reply = api.get("/openapi.json", None).await?;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, generated());
    api.stop().await
}

#[test]
fn every_cursor_has_the_one_pattern() {
    let doc = generated();
    for path in [
        "/api/products",
        "/api/sales",
        "/api/orders",
        "/api/admin/sales/{id}/events",
    ] {
        let cursor = doc["paths"][path]["get"]["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "cursor"))
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(
            cursor["schema"]["pattern"],
            dropline_api::docs::CURSOR_PATTERN,
            "{path}"
        );
    }
}
