//! The HTTP service shell every Dropline server shares.
//!
//! [`shell`] wraps a component's routes with: `/healthz`, `/readyz` (503 naming what is down),
//! `/metrics`, request ids (`x-request-id`, generated or propagated), a tracing span per request,
//! per-route latency histograms, a body size limit, a request timeout, panic capture, and a last
//! layer that turns every error response produced outside a handler (unknown route, 405, 413,
//! timeout, panic) into the contract's JSON error shape. [`serve`] runs a router until a
//! cancellation token fires, then drains in-flight requests within a grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::future::join_all;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clients::amqp::Broker;
use crate::clients::redis::Redis;
use crate::config::HttpConfig;
use crate::http::error::{ApiError, ErrorCode};

pub mod conn;
pub mod error;
pub mod extract;
mod layer;
pub mod limit;
#[cfg(feature = "openapi")]
pub mod openapi;
use layer::ShellLayer;

/// A dependency `/readyz` checks.
#[derive(Clone, Debug)]
pub enum Dependency {
    Mysql(sqlx::MySqlPool),
    Redis(Redis),
    Rabbitmq(Broker),
}

impl Dependency {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Mysql(_) => "mysql",
            Self::Redis(_) => "redis",
            Self::Rabbitmq(_) => "rabbitmq",
        }
    }

    async fn check(&self) -> anyhow::Result<()> {
        match self {
            Self::Mysql(pool) => crate::clients::mysql::ping(pool).await,
            Self::Redis(redis) => redis.ping().await,
            Self::Rabbitmq(broker) => broker.ping().await,
        }
    }
}

/// How long one readiness check may take before it counts as down.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The dependencies one service needs to be ready.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    deps: Arc<Vec<Dependency>>,
}

impl Readiness {
    pub fn new(deps: Vec<Dependency>) -> Self {
        Self {
            deps: Arc::new(deps),
        }
    }

    /// Checks every dependency at once; `Err` lists each one that is down and why.
    pub async fn check(&self) -> Result<Vec<&'static str>, String> {
        let results = join_all(self.deps.iter().map(|dep| async move {
            let outcome = tokio::time::timeout(READY_CHECK_TIMEOUT, dep.check()).await;
            let outcome = match outcome {
                Ok(inner) => inner.map_err(|e| format!("{e:#}")),
                Err(_) => Err(format!("no answer within {READY_CHECK_TIMEOUT:?}")),
            };
            (dep.name(), outcome)
        }))
        .await;
        let mut down = Vec::new();
        let mut up = Vec::new();
        for (name, outcome) in results {
            metrics::gauge!("dropline_dependency_up", "dependency" => name)
                .set(if outcome.is_ok() { 1.0 } else { 0.0 });
            match outcome {
                Ok(()) => up.push(name),
                Err(e) => down.push(format!("{name} ({e})")),
            }
        }
        if down.is_empty() {
            Ok(up)
        } else {
            Err(format!("not ready: {} unreachable", down.join(", ")))
        }
    }
}

/// Wraps `routes` with the shared endpoints and layers. `service` names the component in metrics.
pub fn shell(
    service: &'static str,
    routes: Router,
    readiness: Readiness,
    http: &HttpConfig,
) -> Router {
    // Install the recorder before the first request records anything.
    crate::telemetry::metrics_handle();
    let ops = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_endpoint))
        .with_state(readiness);

    let routes = routes.merge(ops);
    // axum's body extractors stop at 2 MiB unless told otherwise; the shell's own limit (a
    // `Limited` body and a Content-Length check) is the one that counts.
    let routes = if http.body_limit_bytes > AXUM_DEFAULT_BODY_LIMIT {
        routes.layer(axum::extract::DefaultBodyLimit::max(http.body_limit_bytes))
    } else {
        routes
    };
    routes.layer(ShellLayer::new(
        service,
        http.request_timeout(),
        http.body_limit_bytes,
    ))
}

/// The limit axum's `Bytes`/`Json` extractors apply when no `DefaultBodyLimit` is set.
const AXUM_DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;

async fn healthz() -> impl IntoResponse {
    json_ok(serde_json::json!({"status": "ok"}))
}

async fn readyz(axum::extract::State(readiness): axum::extract::State<Readiness>) -> Response {
    match readiness.check().await {
        Ok(up) => json_ok(serde_json::json!({"status": "ready", "dependencies": up})),
        Err(message) => {
            tracing::warn!(%message, "readiness check failed");
            ApiError::new(ErrorCode::Unavailable, message)
                .with_retry_after(1)
                .into_response()
        }
    }
}

async fn metrics_endpoint() -> Response {
    let mut response = crate::telemetry::render_metrics().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn json_ok(value: serde_json::Value) -> Response {
    axum::Json(value).into_response()
}

/// A JSON body extractor whose every rejection is a contract error: wrong content type → 415,
/// too large → 413, malformed or unknown fields (with `deny_unknown_fields`) → 400.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::code(ErrorCode::UnsupportedMediaType));
        }
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(bytes) => bytes,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::code(ErrorCode::PayloadTooLarge));
            }
            Err(_) => return Err(ApiError::bad_request("could not read the request body")),
        };
        parse_json(&bytes).map(Self)
    }
}

/// A JSON request body already read, with [`Json`]'s rules: it must be an object (serde would
/// also take an array for a struct, its sequence form: `["a@b.c","secret"]` as a login, which
/// no client means); malformed JSON or data (unknown fields with `deny_unknown_fields`) → 400.
/// For handlers that must read a body without refusing it before other checks (the waitroom's
/// join judges its body only after it knows the caller has no place).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    use axum::extract::rejection::JsonRejection;
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    match axum::Json::<T>::from_bytes(bytes) {
        Ok(axum::Json(value)) => Ok(value),
        Err(JsonRejection::MissingJsonContentType(_)) => {
            Err(ApiError::code(ErrorCode::UnsupportedMediaType))
        }
        Err(JsonRejection::JsonDataError(e)) => {
            let refused = || {
                ApiError::bad_request(format!(
                    "invalid request body: {}",
                    e.body_text().trim_start_matches(
                        "Failed to deserialize the JSON body into the target type: "
                    )
                ))
            };
            // JSON has one number type: `5.0` and `5e2` are the integers 5 and 500 (JSON
            // Schema says so too, and schemathesis sends them), which serde refuses for an
            // integer field. Only on this error path: a body serde took costs nothing.
            match with_integral_floats(bytes) {
                Some(value) => serde_json::from_value::<T>(value).map_err(|_| refused()),
                None => Err(refused()),
            }
        }
        Err(JsonRejection::JsonSyntaxError(_)) => {
            Err(ApiError::bad_request("the request body is not valid JSON"))
        }
        Err(JsonRejection::BytesRejection(e)) => {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Err(ApiError::code(ErrorCode::PayloadTooLarge))
            } else {
                Err(ApiError::bad_request("could not read the request body"))
            }
        }
        Err(other) => Err(ApiError::bad_request(other.body_text())),
    }
}

/// The body with every integral float (`5.0`, `5e2`) written as the integer it is; `None`
/// when it has none (or is not JSON), so that the caller's first error stands.
fn with_integral_floats(bytes: &[u8]) -> Option<serde_json::Value> {
    fn fix(value: &mut serde_json::Value) -> bool {
        match value {
            serde_json::Value::Number(n) if n.is_f64() => {
                let Some(f) = n.as_f64() else { return false };
                // In range: `i64::MAX as f64` is 2^63, and 2^63 and beyond stay floats.
                if f.fract() != 0.0 || f.abs() >= i64::MAX as f64 {
                    return false;
                }
                #[allow(clippy::cast_possible_truncation)]
                let i = f as i64;
                *value = serde_json::Value::from(i);
                true
            }
            serde_json::Value::Array(items) => items.iter_mut().fold(false, |c, v| fix(v) | c),
            serde_json::Value::Object(map) => map.values_mut().fold(false, |c, v| fix(v) | c),
            _ => false,
        }
    }
    let mut value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    fix(&mut value).then_some(value)
}

/// `Content-Type: application/json` or `application/<anything>+json`, parameters allowed (what
/// axum's own `Json` accepts).
pub fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A bound listener: the address it really got (port 0 resolved) and the socket.
#[derive(Debug)]
pub struct Bound {
    pub addr: SocketAddr,
    pub listener: TcpListener,
}

/// Binds `addr`; port 0 picks a free port, reported in [`Bound::addr`].
pub async fn bind(addr: SocketAddr) -> anyhow::Result<Bound> {
    use anyhow::Context;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let addr = listener.local_addr()?;
    Ok(Bound { addr, listener })
}

/// Serves `router` until `shutdown` fires, then lets in-flight requests finish for at most
/// `grace` before returning.
///
/// HTTP/1.1 only, each connection on hyper's `http1` server (what nginx and load balancers
/// speak to a backend). axum's own `serve` sniffs every connection for HTTP/2 and wraps it in
/// more layers; on a status poll that was a few percent of the CPU for nothing.
///
/// Each connection is held to [`conn::ConnLimits`]: a client that sends half its headers and
/// stops, or leaves a keep-alive connection idle, loses it; past `max_connections` a new
/// connection is answered 503 and closed.
pub async fn serve(
    bound: Bound,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
    limits: conn::ConnLimits,
) -> anyhow::Result<()> {
    let addr = bound.addr;
    let listener = bound.listener;
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Small JSON answers go out at once instead of waiting on Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(conn::refuse(stream));
            continue;
        };
        let (stream, state) = conn::Guarded::new(stream, limits);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            state.request_started();
            let state = state.clone();
            let response = tower::ServiceExt::oneshot(router.clone(), request);
            async move {
                let response = response.await?;
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| conn::Tracked::new(body, state)),
                )
            }
        });
        // hyper's own header-read timer is off: it would count the idle wait and the header
        // read from one instant (see `conn`).
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(None)
            .serve_connection(TokioIo::new(stream), service);
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(error) = connection.await {
                // A client that hangs up mid-request is routine; nothing to act on.
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    // Stopped accepting; in-flight requests finish, idle connections close.
    drop(listener);
    match tokio::time::timeout(grace, connections.shutdown()).await {
        Ok(()) => Ok(()),
        Err(_) => {
            tracing::warn!(%addr, grace_secs = grace.as_secs(), "in-flight requests did not finish within the grace period");
            Ok(())
        }
    }
}

/// An `accept` that failed: a connection that died in the backlog is skipped at once; running
/// out of file descriptors or memory is logged and waited out, so the loop does not spin.
async fn accept_failed(error: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A component's HTTP server, bound and ready to run.
#[derive(Debug)]
pub struct Server {
    name: &'static str,
    bound: Bound,
    router: Router,
    grace: Duration,
    limits: conn::ConnLimits,
}

impl Server {
    /// Binds `addr` and wraps `routes` in the [`shell`].
    pub async fn bind(
        name: &'static str,
        addr: SocketAddr,
        routes: Router,
        readiness: Readiness,
        http: &HttpConfig,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let bound = bind(addr)
            .await
            .with_context(|| format!("{name} listener"))?;
        Ok(Self::on(name, bound, routes, readiness, http))
    }

    /// Wraps `routes` in the [`shell`] on a listener bound earlier (`dropline all` binds every
    /// listener first, so each component can be told the others' addresses).
    pub fn on(
        name: &'static str,
        bound: Bound,
        routes: Router,
        readiness: Readiness,
        http: &HttpConfig,
    ) -> Self {
        Self {
            name,
            bound,
            router: shell(name, routes, readiness, http),
            grace: http.shutdown_grace(),
            limits: conn::ConnLimits::from_config(http),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The address really bound (port 0 resolved).
    pub fn addr(&self) -> SocketAddr {
        self.bound.addr
    }

    /// Serves until `shutdown` fires, then drains (see [`serve`]).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(service = self.name, addr = %self.bound.addr, "listening");
        serve(self.bound, self.router, shutdown, self.grace, self.limits).await?;
        tracing::info!(service = self.name, "stopped");
        Ok(())
    }
}
