//! Proof of work at the join (door.md §1): stateless challenges that a client pays for in
//! hashes before it may take a new place in a sale's line.
//!
//! A sale's `pow_difficulty` d (0–24 in its Redis cfg hash; 0 = off) makes every *new* place
//! cost about 2^d SHA-256 computations. `GET /w/{sale}/challenge` hands out a challenge; the
//! client finds a nonce n with
//!
//! ```text
//! SHA-256(ASCII(challenge) ‖ n as 8 bytes big endian) starts with d zero bits (byte 0, bit 7 first)
//! ```
//!
//! and joins with `{"challenge", "nonce"}`. The nonce is a JSON integer 0 ≤ n ≤ 2^53 − 1 (every
//! JSON client can write it exactly).
//!
//! # Layout
//!
//! `pow1.` + base64url(sale 16 ‖ user 16 ‖ expires_at epoch ms 8 (big endian) ‖ difficulty 1 ‖
//! random 8) + `.` + base64url(first 16 bytes of HMAC-SHA256(key, those 49 bytes)), without
//! padding: 94 characters of `[A-Za-z0-9._-]`. The key is derived from the pass signing key under
//! its own label ([`PowKey::LABEL`], through
//! [`dropline_core::auth::keys::SigningKeyPair::derive_secret`]), never the key itself, so every
//! replica shares it and it rotates with the pass key.
//!
//! Issuing writes nothing anywhere: a challenge is checked from its own bytes (MAC, sale, user,
//! the nonce's zero bits at the difficulty the challenge states) here, and its expiry and
//! single use in the join script (`lua/wr_join.lua`), which sets
//! `<prefix>:{s:<sale>}:pow:<random as 16 hex digits>` with `NX PXAT <expires_at>` when a join
//! passes with it. Redis memory is therefore bounded by the joins made within one challenge
//! lifetime (`waitroom.pow_challenge_ttl_seconds`), however many challenges are fetched.
//!
//! A challenge states its difficulty, so a change of the sale's difficulty applies to challenges
//! issued afterwards; those already out stay good at theirs until they expire.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dropline_core::ids::{SaleId, UserId};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The challenge's version prefix.
pub const PREFIX: &str = "pow1.";
/// The highest difficulty a sale may ask for (door.md §1; the api's
/// [`dropline_core::sale::door::MAX_POW_DIFFICULTY`]).
pub const MAX_DIFFICULTY: u8 = 24;
/// The largest nonce: the largest integer every JSON reader holds exactly (2^53 − 1).
pub const MAX_NONCE: u64 = (1 << 53) - 1;

const BODY: usize = 16 + 16 + 8 + 1 + 8;
const TAG: usize = 16;
/// Characters of the encoded body and tag (base64 without padding).
const BODY_CHARS: usize = (BODY * 4).div_ceil(3);
const TAG_CHARS: usize = (TAG * 4).div_ceil(3);
/// The length of every challenge.
pub const CHALLENGE_LEN: usize = PREFIX.len() + BODY_CHARS + 1 + TAG_CHARS;

/// Why a challenge and nonce do not pass (before the join script looks at expiry and reuse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PowError {
    #[error("the challenge is not one this waiting room issued")]
    Malformed,
    #[error("the challenge's signature does not match")]
    BadTag,
    #[error("the challenge is for another sale")]
    OtherSale,
    #[error("the challenge is for another user")]
    OtherUser,
    #[error("the nonce does not give the challenge's number of leading zero bits")]
    TooFewZeroBits,
}

/// What a genuine challenge says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    pub sale: SaleId,
    pub user: UserId,
    /// Epoch ms after which the challenge is refused (judged by the join script's Redis time).
    pub expires_at_ms: u64,
    pub difficulty: u8,
    /// The challenge's random part: names its spent marker in Redis.
    pub random: [u8; 8],
}

impl Challenge {
    /// The spent marker's key suffix: the random part as 16 hex digits.
    pub fn spent_id(&self) -> String {
        format!("{:016x}", u64::from_be_bytes(self.random))
    }
}

/// The MAC key of challenges (keyed once; each use clones the keyed state).
#[derive(Clone)]
pub struct PowKey {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for PowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PowKey").finish_non_exhaustive()
    }
}

impl PowKey {
    /// The label under which the key is derived from the pass signing key (not the tickets').
    pub const LABEL: &'static str = "dropline waitroom pow challenge v1";

    pub fn new(key: [u8; 32]) -> anyhow::Result<Self> {
        let mac = Hmac::<Sha256>::new_from_slice(&key)
            .map_err(|e| anyhow::anyhow!("keying the challenge MAC: {e}"))?;
        Ok(Self { mac })
    }

    fn tag(&self, body: &[u8; BODY]) -> [u8; TAG] {
        let mut mac = self.mac.clone();
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG];
        tag.copy_from_slice(&full[..TAG]);
        tag
    }

    /// A challenge for `user` in `sale` at `difficulty`, good until `expires_at_ms`, with the
    /// given random part (from a CSPRNG: [`PowKey::issue`]).
    pub fn issue_with(&self, challenge: &Challenge) -> String {
        let mut body = [0u8; BODY];
        body[..16].copy_from_slice(challenge.sale.as_bytes());
        body[16..32].copy_from_slice(challenge.user.as_bytes());
        body[32..40].copy_from_slice(&challenge.expires_at_ms.to_be_bytes());
        body[40] = challenge.difficulty;
        body[41..].copy_from_slice(&challenge.random);
        let tag = self.tag(&body);
        let mut out = String::with_capacity(CHALLENGE_LEN);
        out.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(body, &mut out);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, &mut out);
        out
    }

    /// A fresh challenge (8 random bytes from the thread's CSPRNG).
    pub fn issue(&self, sale: SaleId, user: UserId, expires_at_ms: u64, difficulty: u8) -> String {
        self.issue_with(&Challenge {
            sale,
            user,
            expires_at_ms,
            difficulty,
            random: rand::random(),
        })
    }

    /// The challenge, when it is genuine (this key's MAC), for `sale` and `user`, and `nonce`
    /// gives it the zero bits it states. Expiry and single use are the join script's to judge
    /// (one clock and one record for every replica).
    pub fn verify(
        &self,
        challenge: &str,
        nonce: u64,
        sale: SaleId,
        user: UserId,
    ) -> Result<Challenge, PowError> {
        let parsed = self.open(challenge)?;
        if parsed.sale != sale {
            return Err(PowError::OtherSale);
        }
        if parsed.user != user {
            return Err(PowError::OtherUser);
        }
        if !solves(challenge, nonce, parsed.difficulty) {
            return Err(PowError::TooFewZeroBits);
        }
        Ok(parsed)
    }

    /// A genuine challenge's contents (MAC checked in constant time).
    pub fn open(&self, challenge: &str) -> Result<Challenge, PowError> {
        if challenge.len() != CHALLENGE_LEN {
            return Err(PowError::Malformed);
        }
        let rest = challenge.strip_prefix(PREFIX).ok_or(PowError::Malformed)?;
        let (body_b64, tag_b64) = rest.split_once('.').ok_or(PowError::Malformed)?;
        if body_b64.len() != BODY_CHARS || tag_b64.len() != TAG_CHARS {
            return Err(PowError::Malformed);
        }
        // The decoder refuses non-zero trailing bits, so every challenge has one spelling.
        let mut body = [0u8; BODY];
        match URL_SAFE_NO_PAD.decode_slice(body_b64, &mut body) {
            Ok(n) if n == BODY => {}
            _ => return Err(PowError::Malformed),
        }
        let mut tag = [0u8; TAG];
        match URL_SAFE_NO_PAD.decode_slice(tag_b64, &mut tag) {
            Ok(n) if n == TAG => {}
            _ => return Err(PowError::Malformed),
        }
        let mut mac = self.mac.clone();
        mac.update(&body);
        mac.verify_truncated_left(&tag)
            .map_err(|_| PowError::BadTag)?;
        let id = |range: std::ops::Range<usize>| {
            let mut raw = [0u8; 16];
            raw.copy_from_slice(&body[range]);
            uuid::Uuid::from_bytes(raw)
        };
        let mut expires = [0u8; 8];
        expires.copy_from_slice(&body[32..40]);
        let mut random = [0u8; 8];
        random.copy_from_slice(&body[41..]);
        Ok(Challenge {
            sale: SaleId::from(id(0..16)),
            user: UserId::from(id(16..32)),
            expires_at_ms: u64::from_be_bytes(expires),
            difficulty: body[40],
            random,
        })
    }
}

/// SHA-256(ASCII(challenge) ‖ nonce as 8 bytes big endian): the digest a nonce is judged by.
pub fn digest(challenge: &str, nonce: u64) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(challenge.as_bytes());
    hash.update(nonce.to_be_bytes());
    hash.finalize().into()
}

/// The number of leading zero bits of `digest` (byte 0, bit 7 first).
pub fn leading_zero_bits(digest: &[u8]) -> u32 {
    let mut bits = 0;
    for byte in digest {
        if *byte == 0 {
            bits += 8;
        } else {
            return bits + byte.leading_zeros();
        }
    }
    bits
}

/// The nonce a join's JSON `nonce` names, if it is one: an integer from 0 to [`MAX_NONCE`],
/// written as an integer (`101`) or as a number with an integral value (`101.0`, `1.01e2`):
/// JSON Schema's `integer` is the value, not the spelling, and tools that generate requests
/// from the document (schemathesis) send both. A fraction, a negative, 2^53 and beyond are
/// none (door.md §1: 400). A float is read as serde_json reads it: exactly while its digits
/// (with the trailing zeros written) stay below 2^53, as in `101.0` or `9007199254740991e0`;
/// past that its best-effort parse may be one unit off, and the nonce read then fails the
/// check like any wrong nonce (403 `pow_invalid`, never a wrong admission). Integers are exact.
pub fn nonce_from_json(number: &serde_json::Number) -> Option<u64> {
    if let Some(n) = number.as_u64() {
        return (n <= MAX_NONCE).then_some(n);
    }
    if number.is_i64() {
        return None;
    }
    let f = number.as_f64()?;
    // MAX_NONCE (2^53 - 1) is exact as a double, and every integral double up to it is too.
    (f.fract() == 0.0 && (0.0..=MAX_NONCE as f64).contains(&f)).then_some(f as u64)
}

/// Whether `nonce` solves `challenge` at `difficulty` (the byte rule of door.md §1).
pub fn solves(challenge: &str, nonce: u64, difficulty: u8) -> bool {
    nonce <= MAX_NONCE && leading_zero_bits(&digest(challenge, nonce)) >= u32::from(difficulty)
}

/// The smallest nonce that solves `challenge` at `difficulty` (about 2^difficulty hashes; for
/// tests, tools and load generators).
pub fn solve(challenge: &str, difficulty: u8) -> Option<u64> {
    (0..=MAX_NONCE).find(|&n| solves(challenge, n, difficulty))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// schemathesis sent `"nonce": 101.0` (an integer by JSON Schema) and got 400.
    #[test]
    fn an_integral_float_is_that_nonce() -> anyhow::Result<()> {
        let nonce = |text: &str| -> anyhow::Result<Option<u64>> {
            Ok(nonce_from_json(&serde_json::from_str(text)?))
        };
        assert_eq!(nonce("101")?, Some(101));
        assert_eq!(nonce("101.0")?, Some(101));
        assert_eq!(nonce("1.01e2")?, Some(101));
        assert_eq!(nonce("-0.0")?, Some(0));
        assert_eq!(nonce("9007199254740991")?, Some(MAX_NONCE));
        assert_eq!(nonce("9007199254740991e0")?, Some(MAX_NONCE));
        for refused in [
            "9007199254740992",
            "9007199254740992.0",
            "1e300",
            "101.5",
            "-1",
            "-1.0",
        ] {
            assert_eq!(nonce(refused)?, None, "{refused}");
        }
        Ok(())
    }

    fn key(byte: u8) -> PowKey {
        match PowKey::new([byte; 32]) {
            Ok(key) => key,
            Err(error) => panic!("{error}"),
        }
    }

    /// door.md §1's vector: `pow1.example`, n = 7772 → `000a00fa…`, 12 zero bits, the first n
    /// with 12.
    #[test]
    fn the_contract_vector_holds() {
        let d = digest("pow1.example", 7772);
        assert_eq!(&d[..4], &[0x00, 0x0a, 0x00, 0xfa]);
        assert_eq!(leading_zero_bits(&d), 12);
        assert!(solves("pow1.example", 7772, 12));
        assert!(!solves("pow1.example", 7772, 13));
        assert_eq!(solve("pow1.example", 12), Some(7772), "no smaller n works");
    }

    #[test]
    fn the_highest_difficulty_is_the_one_the_api_accepts() {
        assert_eq!(
            i64::from(MAX_DIFFICULTY),
            dropline_core::sale::door::MAX_POW_DIFFICULTY
        );
    }

    #[test]
    fn zero_bits_are_counted_from_the_top_of_byte_zero() {
        assert_eq!(leading_zero_bits(&[0x80]), 0);
        assert_eq!(leading_zero_bits(&[0x01]), 7);
        assert_eq!(leading_zero_bits(&[0x00, 0x40]), 9);
        assert_eq!(leading_zero_bits(&[0x00; 32]), 256);
    }

    #[test]
    fn a_challenge_is_short_url_safe_and_says_what_it_was_issued_for() -> anyhow::Result<()> {
        let (sale, user) = (SaleId::new_v7(), UserId::new_v7());
        let challenge = key(1).issue(sale, user, 1_700_000_000_123, 8);
        assert_eq!(challenge.len(), 94);
        assert_eq!(CHALLENGE_LEN, 94, "≤ 128 (door.md)");
        assert!(challenge.starts_with(PREFIX));
        assert!(
            challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
            "{challenge}"
        );
        let nonce = solve(&challenge, 8).ok_or_else(|| anyhow::anyhow!("no nonce"))?;
        let opened = key(1).verify(&challenge, nonce, sale, user)?;
        assert_eq!(opened.expires_at_ms, 1_700_000_000_123);
        assert_eq!(opened.difficulty, 8);
        assert_eq!(opened.spent_id().len(), 16);
        assert_ne!(
            key(1).issue(sale, user, 1, 8),
            key(1).issue(sale, user, 1, 8),
            "random"
        );
        Ok(())
    }

    #[test]
    fn forged_foreign_garbled_and_unsolved_challenges_are_refused() -> anyhow::Result<()> {
        let (sale, user) = (SaleId::new_v7(), UserId::new_v7());
        let challenge = key(1).issue(sale, user, 1_000, 6);
        let nonce = solve(&challenge, 6).ok_or_else(|| anyhow::anyhow!("no nonce"))?;
        assert_eq!(
            key(2).verify(&challenge, nonce, sale, user),
            Err(PowError::BadTag)
        );
        assert_eq!(
            key(1).verify(&challenge, nonce, SaleId::new_v7(), user),
            Err(PowError::OtherSale)
        );
        assert_eq!(
            key(1).verify(&challenge, nonce, sale, UserId::new_v7()),
            Err(PowError::OtherUser)
        );
        let wrong = (0..64)
            .find(|&n| !solves(&challenge, n, 6))
            .ok_or_else(|| anyhow::anyhow!("every small nonce solves"))?;
        assert_eq!(
            key(1).verify(&challenge, wrong, sale, user),
            Err(PowError::TooFewZeroBits)
        );
        assert!(
            key(1)
                .verify(&challenge, MAX_NONCE + 1, sale, user)
                .is_err()
        );
        // Every character changed in turn: each is caught.
        for i in 0..challenge.len() {
            let mut bent = challenge.clone().into_bytes();
            bent[i] = if bent[i] == b'A' { b'B' } else { b'A' };
            let bent = String::from_utf8(bent)?;
            assert!(key(1).verify(&bent, nonce, sale, user).is_err(), "char {i}");
        }
        for garbage in [
            "",
            "pow1.example",
            &challenge[1..],
            &format!("{challenge}A"),
        ] {
            assert_eq!(
                key(1).verify(garbage, nonce, sale, user),
                Err(PowError::Malformed)
            );
        }
        Ok(())
    }

    /// The server's cost of one verification (decode, MAC, one SHA-256), for BENCHMARKS.md:
    /// `cargo test --release -p dropline-waitroom --lib pow::tests::verification_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn verification_cost() -> anyhow::Result<()> {
        let (sale, user) = (SaleId::new_v7(), UserId::new_v7());
        let key = key(7);
        let challenge = key.issue(sale, user, u64::MAX, 4);
        let nonce = solve(&challenge, 4).ok_or_else(|| anyhow::anyhow!("no nonce"))?;
        const N: u32 = 200_000;
        let start = std::time::Instant::now();
        for _ in 0..N {
            std::hint::black_box(key.verify(
                std::hint::black_box(&challenge),
                nonce,
                sale,
                user,
            )?);
        }
        let per = start.elapsed() / N;
        println!(
            "pow verify: {} ns per verification ({N} runs)",
            per.as_nanos()
        );
        Ok(())
    }
}
