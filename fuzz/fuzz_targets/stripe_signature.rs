//! Stripe's webhook signature check (`dropline_core::stripe::verify`) on any header and body,
//! against an oracle written apart from it with the HMAC crate: never a panic, and the check
//! accepts exactly what the rule of design/payments.md accepts. Half of the inputs carry a
//! correct signature (made by the oracle) among the fuzzer's items, so both answers are reached.
#![no_main]

use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const NOW: i64 = 1_700_000_000;

/// The rule, spelled out plainly: one `t` of 1-12 digits, any `v1` of 64 hex digits equal to
/// HMAC-SHA-256(secret, t + "." + body), and |NOW - t| <= 300.
fn oracle(header: &[u8], body: &[u8], secret: &[u8]) -> bool {
    let mut ts = Vec::new();
    let mut v1s = Vec::new();
    for item in header.split(|b| *b == b',') {
        let Some(eq) = item.iter().position(|b| *b == b'=') else { continue };
        match &item[..eq] {
            b"t" => ts.push(item[eq + 1..].to_vec()),
            b"v1" => v1s.push(item[eq + 1..].to_ascii_lowercase()),
            _ => {}
        }
    }
    let [t] = ts.as_slice() else { return false };
    if t.is_empty() || t.len() > 12 || !t.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return false };
    mac.update(t);
    mac.update(b".");
    mac.update(body);
    let expected = hex::encode(mac.finalize().into_bytes()).into_bytes();
    let seconds: i64 = std::str::from_utf8(t).ok().and_then(|t| t.parse().ok()).unwrap_or(i64::MAX / 2);
    v1s.iter().any(|v| *v == expected) && (NOW - seconds).abs() <= 300
}

fuzz_target!(|data: &[u8]| {
    // [mode][secret length][header length] secret header body
    let [mode, secret_len, header_len, rest @ ..] = data else { return };
    let (secret_len, header_len) = (*secret_len as usize % 40, *header_len as usize);
    if rest.len() < secret_len + header_len {
        return;
    }
    let (secret, rest) = rest.split_at(secret_len);
    let (header, body) = rest.split_at(header_len);
    let Ok(secret) = std::str::from_utf8(secret) else { return };
    let mut header = header.to_vec();
    if mode & 1 == 1 {
        // A correct signature at a time near NOW, before or after the fuzzer's items.
        let t = (NOW + i64::from(*mode as i8)).to_string();
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { return };
        mac.update(t.as_bytes());
        mac.update(b".");
        mac.update(body);
        let good = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
        if mode & 2 == 2 {
            header.push(b',');
            header.extend_from_slice(good.as_bytes());
        } else {
            let mut front = good.into_bytes();
            front.push(b',');
            front.extend_from_slice(&header);
            header = front;
        }
    }
    let verdict = dropline_core::stripe::verify(&header, body, secret, NOW).is_ok();
    assert_eq!(verdict, oracle(&header, body, secret.as_bytes()), "header {:?}", String::from_utf8_lossy(&header));
});
