//! `bare-hyper`: the ceiling for Dropline's HTTP read paths in benchmarks.
//!
//! A hyper HTTP/1.1 server on the same tokio runtime flavour as `dropline`, answering every
//! request with a fixed small JSON body and no work at all. `scripts/bench` measures it next
//! to Dropline's endpoints in the same run, so the ratio says how much of the machine's
//! request-handling capacity an endpoint keeps after doing its real work.
//!
//! Usage: `bare-hyper [ADDR]` (default `127.0.0.1:0`); prints `listening on http://ADDR`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

// The same allocator as `dropline`, so the ceiling is measured like for like.
// Request handling allocates many small short-lived objects; mimalloc serves them with far
// less contention than glibc malloc (profiled: malloc/free were the top user-space symbols).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BODY: &[u8] = br#"{"available":100,"held":0,"sold":0}"#;

async fn answer(_: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}
