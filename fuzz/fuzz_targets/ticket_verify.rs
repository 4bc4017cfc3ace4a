//! The waiting room's ticket check on any text: never a panic, and a ticket the key issued for
//! bytes of the input verifies to the user it names (round trip).
#![no_main]

use std::sync::LazyLock;

use dropline_core::ids::{SaleId, UserId};
use dropline_waitroom::ticket::TicketKey;
use libfuzzer_sys::fuzz_target;

static KEY: LazyLock<Option<TicketKey>> = LazyLock::new(|| TicketKey::new([7; 32]).ok());

fuzz_target!(|data: &[u8]| {
    let Some(key) = KEY.as_ref() else { return };
    let sale = SaleId::from_uuid(uuid::Uuid::from_u128(
        0x0192_0000_0000_7000_8000_0000_0000_0001,
    ));
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = key.verify(text, sale, 0);
        let _ = key.verify(text, sale, u64::MAX);
    }
    if let (Some(user), Some(expiry)) = (data.get(..16), data.get(16..24)) {
        let user = UserId::from_slice(user).unwrap_or_else(|_| UserId::nil());
        let expires_at = u64::from_be_bytes(expiry.try_into().unwrap_or([0; 8]));
        let ticket = key.issue(sale, user, expires_at);
        if expires_at > 0 {
            assert_eq!(key.verify(&ticket, sale, expires_at - 1).ok(), Some(user));
        }
    }
});
