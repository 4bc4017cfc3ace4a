//! The HTTP shell: contract error shape for every failure, readiness that names a dependency
//! that went down and recovers without a restart, and graceful drain on shutdown.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use dropline_core::clients::deps::{Deps, Needs};
use dropline_core::config::Config;
use dropline_core::http::{Dependency, Json, Readiness, Server};
use dropline_testkit::{FaultProxy, TestEnv, eventually, url_target, url_via};
use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Echo {
    name: String,
}

fn test_routes() -> Router {
    Router::new()
        .route("/echo", post(|Json(e): Json<Echo>| async move { Json(e) }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(700)).await;
                "done"
            }),
        )
        .route(
            "/stuck",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "too late"
            }),
        )
        .route(
            "/panic",
            get(|| async {
                let v: Vec<u8> = Vec::new();
                // Index out of bounds on purpose: the shell must answer 500 in contract shape.
                #[allow(clippy::indexing_slicing)]
                let x = v[usize::from(v.is_empty())];
                x.to_string()
            }),
        )
}

struct Running {
    base: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(config: &Config, readiness: Readiness) -> anyhow::Result<Running> {
    let server = Server::bind(
        "test",
        "127.0.0.1:0".parse()?,
        test_routes(),
        readiness,
        &config.http,
    )
    .await?;
    let base = format!("http://{}", server.addr());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));
    Ok(Running {
        base,
        shutdown,
        task,
    })
}

async fn metrics_text(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    Ok(http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?)
}

async fn assert_error(
    response: reqwest::Response,
    status: u16,
    code: &str,
) -> anyhow::Result<Value> {
    let got = response.status();
    let ct = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body: Value = response.json().await?;
    dropline_testkit::assert_error(got, &body, StatusCode::from_u16(status)?, code);
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(1),
        "only `error` at the top: {body}"
    );
    assert_eq!(
        body["error"].as_object().map(|o| o.len()),
        Some(2),
        "{body}"
    );
    Ok(body)
}

#[tokio::test]
async fn every_error_has_the_contract_shape() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let app = start(&env.config, Readiness::default()).await?;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", app.base);

    // Success path, with a request id on the response.
    let ok = http
        .post(url("/echo"))
        .json(&serde_json::json!({"name": "x"}))
        .send()
        .await?;
    assert_eq!(ok.status(), 200);
    assert!(ok.headers().contains_key("x-request-id"));
    // A caller's request id is propagated.
    let ok = http
        .get(url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await?;
    assert_eq!(
        ok.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("abc-123")
    );

    let unknown_route = http.get(url("/nope")).send().await?;
    assert!(
        unknown_route.headers().contains_key("x-request-id"),
        "errors carry a request id too"
    );
    assert_error(unknown_route, 404, "not_found").await?;
    assert_error(
        http.delete(url("/echo")).send().await?,
        405,
        "method_not_allowed",
    )
    .await?;
    assert_error(
        http.post(url("/echo"))
            .header("content-type", "text/plain")
            .body("{\"name\":\"x\"}")
            .send()
            .await?,
        415,
        "unsupported_media_type",
    )
    .await?;
    assert_error(
        http.post(url("/echo"))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await?,
        400,
        "bad_request",
    )
    .await?;
    let unknown = assert_error(
        http.post(url("/echo"))
            .json(&serde_json::json!({"name": "x", "extra": 1}))
            .send()
            .await?,
        400,
        "bad_request",
    )
    .await?;
    assert!(
        unknown["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("extra")),
        "{unknown}"
    );

    // Over 64 KiB: announced by Content-Length, and streamed without one.
    let big = format!("{{\"name\":\"{}\"}}", "a".repeat(70 * 1024));
    assert_error(
        http.post(url("/echo"))
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await?,
        413,
        "payload_too_large",
    )
    .await?;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .into_bytes()
        .chunks(8 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let streamed = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    assert_error(
        http.post(url("/echo"))
            .header("content-type", "application/json")
            .body(streamed)
            .send()
            .await?,
        413,
        "payload_too_large",
    )
    .await?;
    // Just under the limit is fine.
    let fits = format!("{{\"name\":\"{}\"}}", "a".repeat(60 * 1024));
    let ok = http
        .post(url("/echo"))
        .header("content-type", "application/json")
        .body(fits)
        .send()
        .await?;
    assert_eq!(ok.status(), 200);

    assert_error(http.get(url("/panic")).send().await?, 500, "internal").await?;
    // The server survived the panic.
    assert_eq!(http.get(url("/healthz")).send().await?.status(), 200);

    app.shutdown.cancel();
    app.task.await??;
    Ok(())
}

#[tokio::test]
async fn a_request_over_the_timeout_gets_503_in_contract_shape() -> anyhow::Result<()> {
    let mut env = TestEnv::new()?;
    env.config.http.request_timeout_seconds = 1;
    let app = start(&env.config, Readiness::default()).await?;
    let http = reqwest::Client::new();
    let started = std::time::Instant::now();
    let response = http.get(format!("{}/stuck", app.base)).send().await?;
    let waited = started.elapsed();
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert!(response.headers().contains_key("x-request-id"));
    assert_error(response, 503, "unavailable").await?;
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "answered after {waited:?}"
    );
    // The timed-out request is in the latency histogram with its status.
    let text = metrics_text(&http, &app.base).await?;
    assert!(
        text.lines()
            .any(|l| l.starts_with("dropline_http_request_duration_seconds")
                && l.contains("route=\"/stuck\"")
                && l.contains("status=\"503\"")),
        "{text}"
    );
    app.shutdown.cancel();
    app.task.await??;
    Ok(())
}

#[tokio::test]
async fn metrics_endpoint_reports_request_latency_by_route() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let app = start(&env.config, Readiness::default()).await?;
    let http = reqwest::Client::new();
    http.post(format!("{}/echo", app.base))
        .json(&serde_json::json!({"name": "m"}))
        .send()
        .await?;
    let text = metrics_text(&http, &app.base).await?;
    assert!(
        text.lines().any(
            |l| l.starts_with("dropline_http_request_duration_seconds_bucket")
                && l.contains("route=\"/echo\"")
                && l.contains("service=\"test\"")
        ),
        "{text}"
    );
    app.shutdown.cancel();
    app.task.await??;
    Ok(())
}

/// Routes every dependency of `env` through its own fault proxy.
async fn proxied(env: &mut TestEnv) -> anyhow::Result<[FaultProxy; 3]> {
    let c = &mut env.config;
    let mysql = FaultProxy::start(url_target(&c.mysql.url)?).await?;
    let redis = FaultProxy::start(url_target(&c.redis.url)?).await?;
    let amqp = FaultProxy::start(url_target(&c.amqp.url)?).await?;
    c.mysql.url = url_via(&c.mysql.url, mysql.addr())?;
    c.redis.url = url_via(&c.redis.url, redis.addr())?;
    c.amqp.url = url_via(&c.amqp.url, amqp.addr())?;
    Ok([mysql, redis, amqp])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_a_lost_dependency_and_recovers_without_restart() -> anyhow::Result<()> {
    let mut env = TestEnv::new()?;
    let proxies = proxied(&mut env).await?;
    let deps = Deps::connect(&env.config, Needs::ALL).await?;
    let readiness = Readiness::new(vec![
        Dependency::Mysql(deps.mysql()?.clone()),
        Dependency::Redis(deps.redis()?.clone()),
        Dependency::Rabbitmq(deps.broker()?.clone()),
    ]);
    let app = start(&env.config, readiness).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let ready = format!("{}/readyz", app.base);
    assert_eq!(http.get(&ready).send().await?.status(), 200);

    for (proxy, name) in proxies.iter().zip(["mysql", "redis", "rabbitmq"]) {
        proxy.cut().await;
        let down = eventually(Duration::from_secs(10), || async {
            match http.get(&ready).send().await {
                Ok(r) if r.status() == 503 => r
                    .text()
                    .await
                    .is_ok_and(|t| t.contains("\"unavailable\"") && t.contains(name)),
                _ => false,
            }
        })
        .await;
        assert!(down, "{name} cut, but /readyz did not report it");
        // Health (liveness) stays 200: the process is fine, only a dependency is gone.
        assert_eq!(
            http.get(format!("{}/healthz", app.base))
                .send()
                .await?
                .status(),
            200
        );

        proxy.restore();
        let up = eventually(Duration::from_secs(20), || async {
            http.get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(up, "{name} restored, but /readyz did not recover");
    }
    // The broker works for real again after its reconnect, not just its status flag.
    deps.broker()?
        .publish("mail.send", "after-recovery", b"{}")
        .await?;

    app.shutdown.cancel();
    app.task.await??;
    deps.close().await;
    env.cleanup().await
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_stops_accepting() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let app = start(&env.config, Readiness::default()).await?;
    let http = reqwest::Client::new();
    let slow = tokio::spawn({
        let http = http.clone();
        let url = format!("{}/slow", app.base);
        async move { http.get(url).send().await?.text().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.shutdown.cancel();
    assert_eq!(slow.await??, "done", "the in-flight request finished");
    app.task.await??;
    let after = reqwest::Client::new()
        .get(format!("{}/healthz", app.base))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(after.is_err(), "no new requests after shutdown");
    Ok(())
}
