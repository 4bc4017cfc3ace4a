//! Stripe's webhook signature (design/payments.md "Webhook"), checked byte for byte.
//!
//! `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…][,<other>=…]`: the header is split
//! on `,`, each item at its first `=`. Exactly one `t` of 1 to 12 digits; at least one `v1` of
//! 64 hex digits; other items (`v0`, unknown schemes) and malformed `v1`s are ignored. The
//! expected signature is HMAC-SHA-256 with the whole secret (`whsec_…` included) as key over
//! `t` exactly as sent, `.`, and the raw body. Any `v1` equal to it (compared in constant time)
//! with `|now − t| ≤ 300 s` passes; anything else fails, before the body is parsed.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far the signature's time may be from now, either way.
pub const TOLERANCE_SECONDS: i64 = 300;

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("Stripe-Signature needs exactly one t=<1 to 12 digits>")]
    Timestamp,
    #[error("Stripe-Signature has no v1=<64 hex digits>")]
    NoSignature,
    #[error("no v1 signature matches the body")]
    Mismatch,
    #[error("the signature's time is more than 300 s from now")]
    Stale,
}

/// Checks `header` (the `Stripe-Signature` value) over `body` with `secret` at `now` (unix
/// seconds); the signed time on success.
pub fn verify(header: &[u8], body: &[u8], secret: &str, now: i64) -> Result<i64, SignatureError> {
    let mut t: Option<&[u8]> = None;
    let mut signatures: Vec<[u8; 32]> = Vec::new();
    for item in header.split(|&b| b == b',') {
        let Some(eq) = item.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (key, value) = (&item[..eq], &item[eq + 1..]);
        match key {
            b"t" => {
                if t.is_some() || value.is_empty() || value.len() > 12 {
                    return Err(SignatureError::Timestamp);
                }
                if !value.iter().all(u8::is_ascii_digit) {
                    return Err(SignatureError::Timestamp);
                }
                t = Some(value);
            }
            b"v1" => {
                let mut bytes = [0u8; 32];
                if value.len() == 64 && hex::decode_to_slice(value, &mut bytes).is_ok() {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Timestamp)?;
    if signatures.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .map_err(|_| SignatureError::Mismatch)?;
    mac.update(t);
    mac.update(b".");
    mac.update(body);
    // Every candidate is compared (constant time each), so the answer's timing does not
    // depend on which one matched.
    let matched = signatures
        .iter()
        .fold(false, |any, s| mac.clone().verify_slice(s).is_ok() | any);
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    // 1 to 12 digits: fits an i64.
    let signed: i64 = std::str::from_utf8(t)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or(SignatureError::Timestamp)?;
    if (now - signed).abs() > TOLERANCE_SECONDS {
        return Err(SignatureError::Stale);
    }
    Ok(signed)
}

/// The `v1` signature of `body` at `t` (hex), as Stripe computes it: for tests and tools.
pub fn sign(secret: &str, t: &str, body: &[u8]) -> String {
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length.
        Err(_) => return String::new(),
    };
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;

    fn header(t: i64, sigs: &[&str]) -> Vec<u8> {
        let mut h = format!("t={t}");
        for s in sigs {
            h.push_str(&format!(",v1={s}"));
        }
        h.into_bytes()
    }

    #[test]
    fn a_good_signature_passes_and_anything_else_fails() {
        let now = 1_700_000_000;
        let good = sign(SECRET, &now.to_string(), BODY);
        assert_eq!(verify(&header(now, &[&good]), BODY, SECRET, now), Ok(now));
        // Two v1, one valid; an unknown scheme and a v0 ignored.
        let other = "0".repeat(64);
        let h = format!("t={now},v0=abc,v1={other},v1={good},x=y");
        assert_eq!(verify(h.as_bytes(), BODY, SECRET, now + 300), Ok(now));
        // Tampered body, wrong secret, stale, no v1, no t, two t.
        assert_eq!(
            verify(&header(now, &[&good]), b"{}", SECRET, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&header(now, &[&good]), BODY, "whsec_other", now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&header(now, &[&good]), BODY, SECRET, now + 301),
            Err(SignatureError::Stale)
        );
        let old = now - 301;
        let signed_old = sign(SECRET, &old.to_string(), BODY);
        assert_eq!(
            verify(&header(old, &[&signed_old]), BODY, SECRET, now),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(&header(now, &[]), BODY, SECRET, now),
            Err(SignatureError::NoSignature)
        );
        assert_eq!(
            verify(format!("v1={good}").as_bytes(), BODY, SECRET, now),
            Err(SignatureError::Timestamp)
        );
        let two_t = format!("t={now},t={now},v1={good}");
        assert_eq!(
            verify(two_t.as_bytes(), BODY, SECRET, now),
            Err(SignatureError::Timestamp)
        );
        // `t` is signed as sent: a leading zero changes the message.
        let zero = format!("t=0{now},v1={good}");
        assert_eq!(
            verify(zero.as_bytes(), BODY, SECRET, now),
            Err(SignatureError::Mismatch)
        );
        // Upper-case hex is hex.
        let upper = format!("t={now},v1={}", good.to_ascii_uppercase());
        assert_eq!(verify(upper.as_bytes(), BODY, SECRET, now), Ok(now));
        // 13 digits refused.
        assert_eq!(
            verify(b"t=1234567890123,v1=00", BODY, SECRET, now),
            Err(SignatureError::Timestamp)
        );
    }
}
