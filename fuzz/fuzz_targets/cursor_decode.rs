//! The lists' cursor on any text: never a panic, and a cursor that decodes is the one
//! `encode_cursor` makes for its id (one spelling per cursor, as the document's pattern says).
#![no_main]

use dropline_api::paging::{decode_cursor, encode_cursor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Some(id)) = decode_cursor(Some(text)) {
        assert_eq!(encode_cursor(id), text);
    }
});
