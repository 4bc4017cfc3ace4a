//! What one connection may cost a server: how long a client may take to send a request's
//! headers, how long an idle keep-alive connection stays open, and how many connections a
//! process holds at once (`http.header_read_timeout_seconds`, `http.idle_timeout_seconds`,
//! `http.max_connections`).
//!
//! Each connection is in one phase at a time, shared between its socket and its requests:
//!
//! - **idle** (just accepted, or its last response sent): the first byte of the next request
//!   must arrive within the idle timeout;
//! - **head** (a byte arrived, the request line and headers are not complete): they must be
//!   complete within the header-read timeout, counted from that first byte, however slowly the
//!   client trickles them;
//! - **request** (hyper handed the request to the service; it ends when the response body has
//!   been written): no deadline here, the shell's request timeout bounds the handler.
//!
//! A deadline that passes ends the connection (its read fails with `TimedOut`), so a client
//! that sends half its headers and stops, or holds a connection open and idle, gives its slot
//! back. This is Go's `ReadHeaderTimeout` and `IdleTimeout`; hyper's own header-read timer
//! counts both from the same instant, so it is off and this does both.
//!
//! At the connection cap a new connection is answered `503 unavailable` (`Retry-After: 1`,
//! `Connection: close`) and closed, without reaching the router.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::config::HttpConfig;

/// The connection limits of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub header_read: Duration,
    pub idle: Duration,
    pub max_connections: usize,
}

impl ConnLimits {
    pub fn from_config(http: &HttpConfig) -> Self {
        Self {
            header_read: Duration::from_secs(http.header_read_timeout_seconds),
            idle: Duration::from_secs(http.idle_timeout_seconds),
            max_connections: http.max_connections,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Idle { since: Instant },
    Head { since: Instant },
    Request,
}

#[derive(Debug)]
struct Shared {
    phase: Phase,
    /// The read that waits without a deadline (during a request), woken when the phase gets one.
    reader: Option<Waker>,
}

/// The phase of one connection, shared by its socket ([`Guarded`]) and its requests.
#[derive(Debug, Clone)]
pub struct ConnState(Arc<Mutex<Shared>>);

impl ConnState {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(Shared {
            phase: Phase::Idle {
                since: Instant::now(),
            },
            reader: None,
        })))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Phase) -> R) -> R {
        let mut shared = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut shared.phase)
    }

    /// hyper parsed a request's head and hands it to the service.
    pub fn request_started(&self) {
        self.with(|phase| *phase = Phase::Request);
    }

    /// The response was written (its body dropped): the connection waits for the next request.
    /// A read already waiting (without a deadline, as during the request) is woken to arm the
    /// idle timer.
    fn response_done(&self) {
        let reader = {
            let mut shared = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            shared.phase = Phase::Idle {
                since: Instant::now(),
            };
            shared.reader.take()
        };
        if let Some(reader) = reader {
            reader.wake();
        }
    }

    /// Bytes arrived: an idle connection starts a request's head.
    fn bytes_arrived(&self) {
        self.with(|phase| {
            if let Phase::Idle { .. } = phase {
                *phase = Phase::Head {
                    since: Instant::now(),
                };
            }
        });
    }

    /// When the connection's current phase ends it, if it has a deadline; without one, `reader`
    /// is kept to be woken when the phase changes.
    fn deadline(&self, limits: &ConnLimits, reader: &Waker) -> Option<Instant> {
        let mut shared = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match shared.phase {
            Phase::Idle { since } => Some(since + limits.idle),
            Phase::Head { since } => Some(since + limits.header_read),
            Phase::Request => {
                if !shared.reader.as_ref().is_some_and(|w| w.will_wake(reader)) {
                    shared.reader = Some(reader.clone());
                }
                None
            }
        }
    }
}

pin_project! {
    /// A socket whose reads fail with `TimedOut` once its connection's phase outlasts its limit.
    pub struct Guarded {
        #[pin]
        io: TcpStream,
        state: ConnState,
        limits: ConnLimits,
        // Boxed so that the socket stays `Unpin`, as hyper wants its IO.
        timer: Pin<Box<Sleep>>,
    }
}

impl Guarded {
    pub fn new(io: TcpStream, limits: ConnLimits) -> (Self, ConnState) {
        let state = ConnState::new();
        let first = Instant::now() + limits.idle;
        (
            Self {
                io,
                state: state.clone(),
                limits,
                timer: Box::pin(tokio::time::sleep_until(first)),
            },
            state,
        )
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut this = self.project();
        let before = buf.filled().len();
        match this.io.as_mut().poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.state.bytes_arrived();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(deadline) = this.state.deadline(this.limits, cx.waker()) else {
                    return Poll::Pending;
                };
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        metrics::counter!("dropline_http_connections_timed_out_total").increment(1);
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the client sent no complete request in time",
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

pin_project! {
    /// A response body that marks its connection idle again once it has been written (hyper
    /// drops the body then, or when the connection ends).
    pub struct Tracked<B> {
        #[pin]
        inner: B,
        state: ConnState,
    }

    impl<B> PinnedDrop for Tracked<B> {
        fn drop(this: Pin<&mut Self>) {
            this.state.response_done();
        }
    }
}

impl<B> Tracked<B> {
    pub fn new(inner: B, state: ConnState) -> Self {
        Self { inner, state }
    }
}

impl<B: Body<Data = Bytes>> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How long a refused connection may take to send its request before the 503 goes out anyway.
const REFUSAL_READ: Duration = Duration::from_millis(200);

/// Answers a connection over the cap with `503 unavailable` and closes it. Reads what the client
/// sent first (bounded in time and size), so that closing does not reset the connection before
/// the client reads the answer.
pub async fn refuse(mut stream: TcpStream) {
    metrics::counter!("dropline_http_connections_refused_total").increment(1);
    let mut request = [0u8; 8192];
    let _ = tokio::time::timeout(REFUSAL_READ, async {
        let mut read = 0;
        while read < request.len() {
            match stream.read(&mut request[read..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
            if request[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let body = r#"{"error":{"code":"unavailable","message":"this server is at its connection limit: try again in a second"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_READ, async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
