//! The `Idempotency-Key` header parser of `POST /api/orders` on any bytes a header value may
//! hold: never a panic, and a key is accepted exactly when the document's pattern
//! `^[\x21-\x7E]{1,64}$` matches it, and then it is the header's text unchanged (the oracle is
//! the pattern written out by hand, not the parser's own code).
#![no_main]

use axum::http::{HeaderMap, HeaderValue};
use dropline_api::orders::idempotency_key;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(data) {
        headers.insert("idempotency-key", value);
    } else {
        // Not a header value at all (a CR, LF or NUL): the request never gets here, and a
        // missing header is the same refusal.
        assert!(idempotency_key(&headers).is_err());
        return;
    }
    let matches = (1..=64).contains(&data.len()) && data.iter().all(|b| (0x21..=0x7E).contains(b));
    match idempotency_key(&headers) {
        Ok(key) => {
            assert!(matches, "accepted {data:?}");
            assert_eq!(key.as_bytes(), data);
        }
        Err(_) => assert!(!matches, "refused {data:?}"),
    }
});
