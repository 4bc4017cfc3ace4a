//! The harness itself: the api starts on a free port and answers /readyz.

mod common;

#[tokio::test]
async fn api_starts_and_is_ready() -> anyhow::Result<()> {
    let api = common::TestApi::start(&[]).await?;
    let ready = api.get("/readyz", None).await?;
    ready.expect(200, None);
    let unknown = api.get("/api/nope", None).await?;
    unknown.expect(404, Some("not_found"));
    api.stop().await
}

/// Browser calls from another origin: only the configured origins get CORS headers, and a
/// preflight for a POST with `Authorization` and `Idempotency-Key` is answered.
#[tokio::test]
async fn cors_lets_only_the_configured_origins_in() -> anyhow::Result<()> {
    let api =
        common::TestApi::start(&[("API__CORS_ALLOWED_ORIGINS", "[\"http://127.0.0.1:8080\"]")])
            .await?;
    let preflight = |origin: &'static str| {
        api.http
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/api/auth/login", api.base),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,idempotency-key,dropline-pass",
            )
            .send()
    };
    let allowed = preflight("http://127.0.0.1:8080").await?;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://127.0.0.1:8080"
    );
    let methods = allowed.headers()["access-control-allow-methods"].to_str()?;
    assert!(methods.contains("POST"), "{methods}");
    let headers = allowed.headers()["access-control-allow-headers"]
        .to_str()?
        .to_ascii_lowercase();
    assert!(headers.contains("idempotency-key"), "{headers}");
    assert!(headers.contains("dropline-pass"), "{headers}");
    let other = preflight("http://evil.example").await?;
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // A plain request from the allowed origin carries the header too.
    let get = api
        .http
        .get(format!("{}/api/sales", api.base))
        .header("origin", "http://127.0.0.1:8080")
        .send()
        .await?;
    assert_eq!(
        get.headers()["access-control-allow-origin"],
        "http://127.0.0.1:8080"
    );
    // A route that does not exist is still a readable 404 to the page, not a network error.
    let missing = api
        .http
        .get(format!("{}/api/nope", api.base))
        .header("origin", "http://127.0.0.1:8080")
        .send()
        .await?;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["access-control-allow-origin"],
        "http://127.0.0.1:8080"
    );
    let body: serde_json::Value = missing.json().await?;
    assert_eq!(body["error"]["code"], "not_found");
    api.stop().await
}
