//! The JSON body extractor (`core::http::Json`) on any bytes, for every request body type of
//! the api: never a panic; every refusal is a contract error (400, 413 or 415).
#![no_main]

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use dropline_api::admin::{NewProduct, NewSale, SalePatch};
use dropline_api::codes::NewCodes;
use dropline_api::orders::{CreateOrder, PayOrder};
use dropline_core::http::Json;
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;

/// Runs a future that needs no waking (a body already in memory) to its end.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
}

fn extract<T: DeserializeOwned>(data: &[u8]) {
    let Ok(request) = Request::builder()
        .method("POST")
        .header("content-type", "application/json")
        .body(Body::from(data.to_vec()))
    else {
        return;
    };
    if let Err(e) = block_on(Json::<T>::from_request(request, &())) {
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }
}

fuzz_target!(|data: &[u8]| {
    extract::<NewProduct>(data);
    extract::<NewSale>(data);
    extract::<SalePatch>(data);
    extract::<NewCodes>(data);
    extract::<CreateOrder>(data);
    extract::<PayOrder>(data);
});
