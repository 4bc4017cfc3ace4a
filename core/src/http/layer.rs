//! The shell's per-request work as one tower layer: request id, tracing span, body limit,
//! panic capture, timeout, contract error shape and the latency histogram.
//!
//! Each `Router::layer` call wraps every route in its own boxed service, and axum clones that
//! box and boxes its future on every request. Six tower-http layers and a `from_fn` middleware
//! cost a quarter of a status poll's throughput (measured with wrk, see BENCHMARKS.md); doing
//! the same work in one hand-written service and one unboxed future costs a fraction of that.
//! The histogram handles are cached per thread, so a request builds no metric key.

/// The api's Stripe webhook route, and the body it takes whatever `http.body_limit_bytes` is.
pub const STRIPE_WEBHOOK_ROUTE: &str = "/api/webhooks/stripe";
pub const STRIPE_WEBHOOK_BODY_LIMIT: usize = 256 * 1024;

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::Limited;
use tower::{Layer, Service};

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids: a random per-process prefix and a counter (`3f9a2c1e-000000000001a7`), unique
/// across replicas without a random draw (a syscall) per request.
#[derive(Clone, Debug)]
struct RequestIds {
    /// The prefix's 8 hex digits and the dash.
    prefix: [u8; 9],
    next: Arc<AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        let mut prefix = [b'-'; 9];
        hex_into(&mut prefix[..8], u64::from(rand::random::<u32>()));
        Self {
            prefix,
            next: Arc::new(AtomicU64::new(1)),
        }
    }

    fn next(&self) -> Option<HeaderValue> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // Written by hand on the stack (a tenth of `write!`'s instructions on the status
        // path's profile): the header value is the only allocation. The counter takes 12 hex
        // digits until 2^48 requests, more after, as `{:012x}` would.
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(12) as usize;
        let mut buf = [0u8; 9 + 16];
        buf[..9].copy_from_slice(&self.prefix);
        let len = 9 + digits;
        hex_into(buf.get_mut(9..len)?, n);
        HeaderValue::from_bytes(buf.get(..len)?).ok()
    }
}

/// Writes `n`'s lowest `out.len()` hex digits (lower case) into `out`, zero-padded.
fn hex_into(out: &mut [u8], mut n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for byte in out.iter_mut().rev() {
        *byte = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// The layer [`super::shell`] puts on every route.
#[derive(Clone, Debug)]
pub(super) struct ShellLayer {
    service: &'static str,
    timeout: Duration,
    body_limit: usize,
    ids: RequestIds,
}

impl ShellLayer {
    pub(super) fn new(service: &'static str, timeout: Duration, body_limit: usize) -> Self {
        Self {
            service,
            timeout,
            body_limit,
            ids: RequestIds::new(),
        }
    }
}

impl<S> Layer<S> for ShellLayer {
    type Service = Shell<S>;

    fn layer(&self, inner: S) -> Shell<S> {
        Shell {
            inner,
            layer: self.clone(),
        }
    }
}

/// One route wrapped by [`ShellLayer`].
#[derive(Clone, Debug)]
pub(super) struct Shell<S> {
    inner: S,
    layer: ShellLayer,
}

impl<S> Service<Request> for Shell<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ShellFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let (mut parts, body) = request.into_parts();
        let id = match parts.headers.get(X_REQUEST_ID) {
            Some(id) => Some(id.clone()),
            None => {
                let id = self.layer.ids.next();
                if let Some(id) = &id {
                    parts.headers.insert(X_REQUEST_ID, id.clone());
                }
                id
            }
        };
        // Label by route template, never by raw path, to keep label cardinality bounded.
        let route = parts.extensions.get::<MatchedPath>().cloned();
        let method = method_label(&parts.method);
        let span = make_span(&parts, id.as_ref());
        let limit = match &route {
            // Stripe's events may reach 256 KiB (design/payments.md), past the usual limit.
            Some(r) if r.as_str() == STRIPE_WEBHOOK_ROUTE => {
                self.layer.body_limit.max(STRIPE_WEBHOOK_BODY_LIMIT)
            }
            _ => self.layer.body_limit,
        };
        let announced = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let state = if announced.is_some_and(|n| n > limit as u64) {
            State::Done {
                response: Some(error_response(StatusCode::PAYLOAD_TOO_LARGE)),
            }
        } else {
            // A body with a Content-Length cannot outgrow it (hyper enforces it), and an empty
            // one has nothing to limit; a streamed body is cut at the limit, and axum's
            // extractors answer 413 for it.
            let body = if announced.is_some() || http_body::Body::is_end_stream(&body) {
                body
            } else {
                Body::new(Limited::new(body, limit))
            };
            let request = Request::from_parts(parts, body);
            let _entered = span.enter();
            match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
                Ok(future) => State::Running {
                    future,
                    deadline: tokio::time::sleep(self.layer.timeout),
                },
                Err(panic) => State::Done {
                    response: Some(panicked(&*panic)),
                },
            }
        };
        ShellFuture {
            state,
            span,
            done: Done {
                service: self.layer.service,
                started,
                route,
                method,
                id,
            },
        }
    }
}

/// What the response needs once the handler is done.
struct Done {
    service: &'static str,
    started: Instant,
    route: Option<MatchedPath>,
    method: &'static str,
    id: Option<HeaderValue>,
}

pin_project_lite::pin_project! {
    /// The future of one request through [`Shell`].
    pub(super) struct ShellFuture<F> {
        #[pin]
        state: State<F>,
        span: tracing::Span,
        done: Done,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Running {
            #[pin]
            future: F,
            #[pin]
            deadline: tokio::time::Sleep,
        },
        Done { response: Option<Response> },
    }
}

impl<F> Future for ShellFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.state.project() {
            StateProj::Running { future, deadline } => {
                let _entered = this.span.enter();
                match std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(Poll::Ready(Ok(response))) => contract_errors(response),
                    Ok(Poll::Ready(Err(never))) => match never {},
                    Ok(Poll::Pending) => {
                        ready!(deadline.poll(cx));
                        tracing::warn!(
                            elapsed_ms = this.done.started.elapsed().as_millis() as u64,
                            "request timed out"
                        );
                        error_response(StatusCode::SERVICE_UNAVAILABLE)
                    }
                    Err(panic) => panicked(&*panic),
                }
            }
            StateProj::Done { response } => match response.take() {
                Some(response) => response,
                // Polled again after completion: a caller bug, answered without a panic.
                None => error_response(StatusCode::INTERNAL_SERVER_ERROR),
            },
        };
        Poll::Ready(Ok(this.done.finish(response, this.span)))
    }
}

impl Done {
    fn finish(&mut self, mut response: Response, span: &tracing::Span) -> Response {
        let status = response.status();
        let elapsed = self.started.elapsed();
        crate::alerts::record_http(self.service, status.is_server_error());
        let route = self.route.as_ref().map_or("unmatched", MatchedPath::as_str);
        record_latency(self.service, route, self.method, status, elapsed);
        let _entered = span.enter();
        if status.is_server_error() {
            tracing::error!(
                status = status.as_u16(),
                latency_ms = elapsed.as_millis() as u64,
                "request failed"
            );
        } else {
            tracing::debug!(
                status = status.as_u16(),
                latency_ms = elapsed.as_millis() as u64,
                "request finished"
            );
        }
        if let Some(id) = self.id.take() {
            response.headers_mut().insert(X_REQUEST_ID, id);
        }
        response
    }
}

fn make_span(parts: &axum::http::request::Parts, id: Option<&HeaderValue>) -> tracing::Span {
    let request_id = id.and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info_span!(
        "http",
        method = %parts.method,
        path = %parts.uri.path(),
        request_id = %request_id,
    )
}

fn panicked(panic: &(dyn std::any::Any + Send)) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "a request handler panicked");
    error_response(StatusCode::INTERNAL_SERVER_ERROR)
}

fn error_response(status: StatusCode) -> Response {
    contract_errors(status.into_response())
}

/// Turns an error response that is not JSON (produced by a layer or the router, not a
/// handler) into the contract's shape, keeping its status and headers.
fn contract_errors(response: Response) -> Response {
    use crate::http::error::{ApiError, ErrorCode};
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let code = ErrorCode::for_status(status);
    let message = match status {
        StatusCode::NOT_FOUND => "no such route",
        StatusCode::SERVICE_UNAVAILABLE => "the request took too long or a dependency is down",
        _ => code.default_message(),
    };
    let error = ApiError::new(code, message);
    let (mut parts, _) = response.into_parts();
    parts.status = status;
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    if status == StatusCode::SERVICE_UNAVAILABLE && !parts.headers.contains_key(header::RETRY_AFTER)
    {
        parts
            .headers
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    Response::from_parts(parts, Body::from(error.body()))
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Histogram handles by service, then route, then (method, status): a few dozen per thread.
type Handles =
    HashMap<&'static str, HashMap<Box<str>, Vec<(&'static str, u16, metrics::Histogram)>>>;

thread_local! {
    static HISTOGRAMS: RefCell<Handles> = RefCell::new(HashMap::new());
}

/// Records one request in `dropline_http_request_duration_seconds`.
fn record_latency(
    service: &'static str,
    route: &str,
    method: &'static str,
    status: StatusCode,
    elapsed: Duration,
) {
    let seconds = elapsed.as_secs_f64();
    let code = status.as_u16();
    HISTOGRAMS.with(|cell| {
        let Ok(mut handles) = cell.try_borrow_mut() else {
            // Re-entered from inside the recorder: record without the cache.
            histogram(service, route, method, code).record(seconds);
            return;
        };
        let routes = handles.entry(service).or_default();
        let per_route = match routes.get_mut(route) {
            Some(found) => found,
            None => routes.entry(route.into()).or_default(),
        };
        match per_route
            .iter()
            .find(|(m, s, _)| *m == method && *s == code)
        {
            Some((_, _, handle)) => handle.record(seconds),
            None => {
                let handle = histogram(service, route, method, code);
                handle.record(seconds);
                per_route.push((method, code, handle));
            }
        }
    });
}

fn histogram(
    service: &'static str,
    route: &str,
    method: &'static str,
    status: u16,
) -> metrics::Histogram {
    metrics::histogram!(
        "dropline_http_request_duration_seconds",
        "service" => service,
        "method" => method,
        "route" => route.to_owned(),
        "status" => status.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_prefix_and_counter_and_never_repeat() {
        let ids = RequestIds::new();
        let first = ids.next().and_then(|v| v.to_str().ok().map(str::to_owned));
        let second = ids.next().and_then(|v| v.to_str().ok().map(str::to_owned));
        let (Some(first), Some(second)) = (first, second) else {
            panic!("request ids are valid header values");
        };
        assert_ne!(first, second);
        for id in [&first, &second] {
            let (prefix, counter) = id.split_once('-').unwrap_or_default();
            assert_eq!(prefix.len(), 8, "{id}");
            assert_eq!(counter.len(), 12, "{id}");
            assert!(
                id.chars().all(|c| c.is_ascii_hexdigit() || c == '-'),
                "{id}"
            );
        }
        assert!(first.ends_with("000000000001"), "{first}");
        // The counter past 12 digits, as `{:012x}` writes it.
        ids.next.store(0x1_0000_0000_0000, Ordering::Relaxed);
        let long = ids.next().and_then(|v| v.to_str().ok().map(str::to_owned));
        assert_eq!(
            long.as_deref()
                .and_then(|id| id.split_once('-'))
                .map(|p| p.1),
            Some("1000000000000")
        );
        let mut out = [0u8; 8];
        hex_into(&mut out, 0x3f9a_2c1e);
        assert_eq!(&out, b"3f9a2c1e");
    }
}
