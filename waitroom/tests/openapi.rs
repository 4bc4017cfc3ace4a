//! The waitroom's OpenAPI document (issue #20): the committed copy `openapi/waitroom.json`
//! equals what the code generates, every operation has a description, the shared pieces are
//! there (the `Error` schema with the waitroom's codes, the security schemes, `Retry-After`),
//! and the running waitroom serves the same document at `GET /openapi.json`.
//!
//! After a change to a route or a type it shows, regenerate the copy and commit the diff:
//! `UPDATE_OPENAPI=1 cargo nextest run -p dropline-waitroom --test openapi`.

use std::path::PathBuf;

use dropline_core::http::openapi::{check_committed, undescribed};
use serde_json::Value;

mod common;

const REGENERATE: &str = "cargo nextest run -p dropline-waitroom --test openapi";

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../openapi/waitroom.json")
}

fn generated() -> Value {
    serde_json::to_value(dropline_waitroom::openapi()).unwrap_or(Value::Null)
}

#[test]
fn the_committed_document_is_the_generated_one() {
    if let Err(diff) = check_committed(&dropline_waitroom::openapi(), &committed_path(), REGENERATE)
    {
        panic!("{diff}");
    }
}

#[test]
fn every_operation_has_a_description() {
    let missing = undescribed(&dropline_waitroom::openapi());
    assert!(
        missing.is_empty(),
        "operations without a description (give the handler a doc comment): {missing:?}"
    );
}

/// The check above catches a route whose handler has no doc comment.
#[test]
fn a_route_without_a_description_is_caught() {
    #[utoipa::path(get, path = "/w/undocumented", responses((status = 200)))]
    async fn undocumented() {}

    let (_, doc) = utoipa_axum::router::OpenApiRouter::<()>::new()
        .routes(utoipa_axum::routes!(undocumented))
        .split_for_parts();
    assert_eq!(undescribed(&doc), vec!["GET /w/undocumented".to_owned()]);
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
        "POST /w/{sale_id}/join",
        "DELETE /w/{sale_id}/join",
        "GET /w/{sale_id}/challenge",
        "GET /w/{sale_id}/status",
        "GET /w/{sale_id}/stats",
        "GET /w/{sale_id}/draw",
        "GET /w/{sale_id}/draw/entries",
        "GET /w/{sale_id}/draw/winners",
        "GET /w/{sale_id}/control/data",
        "GET /.well-known/jwks.json",
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
        "not_found",
        "rate_limited",
        "queue_full",
        "unavailable",
        "payload_too_large",
        "unsupported_media_type",
        "pow_required",
        "pow_invalid",
        "access_code_required",
        "access_code_invalid",
        "access_code_used",
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
fn security_schemes_and_bounds() {
    let doc = generated();
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["accessToken"]["type"], "http");
    assert_eq!(schemes["accessToken"]["scheme"], "bearer");
    assert_eq!(schemes["ticket"]["type"], "http");
    assert_eq!(schemes["ticket"]["scheme"], "bearer");
    let paths = &doc["paths"];
    let access = serde_json::json!([{"accessToken": []}]);
    let ticket = serde_json::json!([{"ticket": []}]);
    assert_eq!(paths["/w/{sale_id}/join"]["post"]["security"], access);
    assert_eq!(paths["/w/{sale_id}/challenge"]["get"]["security"], access);
    assert_eq!(
        paths["/w/{sale_id}/control/data"]["get"]["security"],
        access
    );
    assert_eq!(paths["/w/{sale_id}/join"]["delete"]["security"], ticket);
    assert_eq!(paths["/w/{sale_id}/status"]["get"]["security"], ticket);
    for (path, method) in [
        ("/w/{sale_id}/join", "delete"),
        ("/w/{sale_id}/status", "get"),
    ] {
        assert!(
            paths[path][method]["responses"].get("401").is_some(),
            "{method} {path}: a ticket's 401"
        );
    }
    // The join's body: optional, unknown fields refused, the nonce bounded as door.md says.
    let join = &paths["/w/{sale_id}/join"]["post"];
    assert_ne!(join["requestBody"]["required"], true, "{join}");
    let body = &doc["components"]["schemas"]["JoinBody"];
    assert_eq!(body["additionalProperties"], false);
    assert_eq!(body["properties"]["nonce"]["minimum"], 0);
    assert_eq!(
        body["properties"]["nonce"]["maximum"],
        9_007_199_254_740_991_u64
    );
    let sale_id = join["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "sale_id"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(sale_id["in"], "path");
    assert_eq!(sale_id["schema"]["format"], "uuid");
}

#[tokio::test]
async fn the_waitroom_serves_it() -> anyhow::Result<()> {
    let server = common::Server::launch(&[]).await?;
    let url = format!("{}/openapi.json", server.base);
    let reply = reqwest::get(&url).await?;
    let status = reply.status();
    let content_type = reply
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = reply.json().await?;
    server.stop().await?;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/json");
    assert_eq!(body, generated());
    Ok(())
}
