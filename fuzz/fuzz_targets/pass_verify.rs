//! The api's pass and access-token checks on any text: never a panic, never a pass accepted
//! that this run's key did not sign.
#![no_main]

use std::sync::LazyLock;

use dropline_core::auth::keys::{KeyRing, SigningKeyPair};
use dropline_core::auth::tokens::{verify_access, verify_pass};
use dropline_core::ids::{SaleId, UserId};
use libfuzzer_sys::fuzz_target;

static RING: LazyLock<Option<KeyRing>> = LazyLock::new(|| {
    SigningKeyPair::generate()
        .ok()
        .and_then(|pair| KeyRing::new(Some(pair), vec![]).ok())
});

fuzz_target!(|data: &[u8]| {
    let Some(ring) = RING.as_ref() else { return };
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sale = SaleId::from_uuid(uuid::Uuid::from_u128(1));
    let user = UserId::from_uuid(uuid::Uuid::from_u128(2));
    // The key is fresh for this process: nothing the fuzzer writes can carry its signature.
    assert!(verify_pass(ring, text, sale, user).is_err());
    assert!(verify_access(ring, text).is_err());
});
