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

/// Reads from `stream` until the server closes it (or it errs); returns what arrived and when
/// the connection ended, failing if it stays open past `limit`.
async fn until_closed(
    stream: &mut tokio::net::TcpStream,
    limit: Duration,
) -> anyhow::Result<(Vec<u8>, Duration)> {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Err(_) => anyhow::bail!("the connection was still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok((got, started.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

fn addr_of(base: &str) -> anyhow::Result<String> {
    Ok(base
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("not an http base: {base}"))?
        .to_owned())
}

#[tokio::test]
async fn a_client_that_sends_half_its_headers_loses_the_connection() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut env = TestEnv::new()?;
    env.config.http.header_read_timeout_seconds = 1;
    env.config.http.idle_timeout_seconds = 30;
    let app = start(&env.config, Readiness::default()).await?;
    let addr = addr_of(&app.base)?;

    // Half the headers, then nothing: cut one header-read timeout after the first byte.
    let mut half = tokio::net::TcpStream::connect(&addr).await?;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        .await?;
    let (got, after) = until_closed(&mut half, Duration::from_secs(5)).await?;
    assert!(
        got.is_empty(),
        "answered: {}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "closed after {after:?}"
    );

    // Trickling a byte every 300 ms does not stretch it: the clock runs from the first byte.
    let mut slow = tokio::net::TcpStream::connect(&addr).await?;
    let started = std::time::Instant::now();
    let trickle = async {
        for byte in b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaa" {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), trickle).await;
    let (got, _) = until_closed(&mut slow, Duration::from_secs(5)).await?;
    assert!(got.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "a trickling client held the connection {:?}",
        started.elapsed()
    );

    // A complete request on a fresh connection is still answered.
    let response = reqwest::get(format!("{}/healthz", app.base)).await?;
    assert_eq!(response.status(), StatusCode::OK);
    app.shutdown.cancel();
    app.task.await??;
    Ok(())
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut env = TestEnv::new()?;
    env.config.http.header_read_timeout_seconds = 10;
    env.config.http.idle_timeout_seconds = 1;
    let app = start(&env.config, Readiness::default()).await?;
    let addr = addr_of(&app.base)?;

    // A connection that never sends a byte.
    let mut silent = tokio::net::TcpStream::connect(&addr).await?;
    let (_, after) = until_closed(&mut silent, Duration::from_secs(5)).await?;
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "closed after {after:?}"
    );

    // A keep-alive connection: answered, then closed once idle for the timeout.
    let mut kept = tokio::net::TcpStream::connect(&addr).await?;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await?;
    let mut head = [0u8; 12];
    kept.read_exact(&mut head).await?;
    assert_eq!(&head, b"HTTP/1.1 200");
    // Still served within the idle time: a second request on the same connection.
    tokio::time::sleep(Duration::from_millis(500)).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await?;
    let (got, after) = until_closed(&mut kept, Duration::from_secs(5)).await?;
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 1, "{text}");
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "closed {after:?} after the second request"
    );
    app.shutdown.cancel();
    app.task.await??;
    Ok(())
}

#[tokio::test]
async fn past_the_connection_cap_a_new_connection_gets_503_and_is_closed() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut env = TestEnv::new()?;
    env.config.http.max_connections = 2;
    let app = start(&env.config, Readiness::default()).await?;
    let addr = addr_of(&app.base)?;

    let held_a = tokio::net::TcpStream::connect(&addr).await?;
    let _held_b = tokio::net::TcpStream::connect(&addr).await?;
    // Let the server accept both before the third arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = tokio::net::TcpStream::connect(&addr).await?;
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await?;
    let (got, _) = until_closed(&mut third, Duration::from_secs(5)).await?;
    let text = String::from_utf8_lossy(&got).to_lowercase();
    assert!(text.starts_with("http/1.1 503"), "{text}");
    assert!(text.contains("\r\nretry-after: 1\r\n"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no body in {text}"))?;
    let body: Value = serde_json::from_str(body)?;
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );

    // A slot that frees is taken by the next connection.
    drop(held_a);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let served = eventually(Duration::from_secs(5), || async {
        http.get(format!("{}/healthz", app.base))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    assert!(served, "the freed slot was never served");
    app.shutdown.cancel();
    app.task.await??;
    Ok(())
}

#[tokio::test]
async fn every_body_must_be_a_json_object() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let app = start(&env.config, Readiness::default()).await?;
    let http = reqwest::Client::new();
    let post = |body: &'static str, content_type: &'static str| {
        http.post(format!("{}/echo", app.base))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    // serde's sequence form of a struct, a bare string, a number: 400, never taken.
    for body in [r#"["alice"]"#, r#"  ["alice"]"#, r#""alice""#, "7", "null"] {
        let response = post(body, "application/json").await?;
        assert_error(response, 400, "bad_request").await?;
    }
    // Objects still pass, with leading white space and a +json type; the other errors stay.
    let ok = post("\n {\"name\":\"alice\"}", "application/json; charset=utf-8").await?;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.json::<Value>().await?["name"], "alice");
    let ok = post(r#"{"name":"bob"}"#, "application/vnd.dropline+json").await?;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_error(
        post(r#"{"name":"x"}"#, "text/plain").await?,
        415,
        "unsupported_media_type",
    )
    .await?;
    assert_error(
        post(r#"{"name":1}"#, "application/json").await?,
        400,
        "bad_request",
    )
    .await?;
    assert_error(post("{", "application/json").await?, 400, "bad_request").await?;
    app.shutdown.cancel();
    app.task.await??;
    Ok(())
}
