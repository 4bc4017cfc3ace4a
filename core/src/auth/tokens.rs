//! EdDSA JSON Web Tokens: access tokens (api → every service) and, with other claims, passes.
//!
//! Signing needs the private key of a [`KeyRing`]; verifying needs only public keys, so a
//! service that checks tokens never holds a secret. Verification pins the algorithm to EdDSA
//! (an `alg: none` or HMAC token is refused before any key is looked at), picks the key by
//! `kid`, and checks issuer, audience and expiry.
//!
//! The `*_batched` forms are the same checks with the Ed25519 equation answered by the batch
//! verifier ([`crate::auth::batch`]) together with other requests'; the request paths that
//! see a new token on most calls (a join, an order's pass, an api call's first use of a
//! token) use them.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use ed25519_dalek::Signature;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{SaleId, UserId};

pub use crate::auth::claims::{ACCESS_AUDIENCE, ACCESS_ISSUER, AccessClaims, Role, VerifiedAccess};
use crate::auth::keys::{KeyRing, PublicKey};

/// Clock skew tolerated between services, in seconds.
const LEEWAY_SECONDS: u64 = 5;

/// Why a token was refused. Callers map every variant to 401 (or 403 for passes); the
/// variant is for logs and metrics only.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not allowed")]
    Algorithm,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("expired")]
    Expired,
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("this service cannot sign")]
    NoSigner,
}

/// Signs `claims` with the ring's signing key, naming it in the header's `kid`.
pub fn sign<T: Serialize>(ring: &KeyRing, claims: &T) -> Result<String, TokenError> {
    let signer = ring.signer().ok_or(TokenError::NoSigner)?;
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(signer.kid.clone());
    jsonwebtoken::encode(&header, claims, signer.encoding())
        .map_err(|e| TokenError::Invalid(e.to_string()))
}

/// Verifies an EdDSA token from `issuer` for `audience` and returns its claims.
pub fn verify<T: DeserializeOwned>(
    ring: &KeyRing,
    token: &str,
    issuer: &str,
    audience: &str,
) -> Result<T, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if header.alg != Algorithm::EdDSA {
        return Err(TokenError::Algorithm);
    }
    let kid = header.kid.ok_or(TokenError::UnknownKey)?;
    let key = ring.verifier(&kid).ok_or(TokenError::UnknownKey)?;
    decode_claims(key, token, issuer, audience)
}

/// jsonwebtoken's decode and validation of `token` under `key` (the one its header names).
fn decode_claims<T: DeserializeOwned>(
    key: &PublicKey,
    token: &str,
    issuer: &str,
    audience: &str,
) -> Result<T, TokenError> {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.leeway = LEEWAY_SECONDS;
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
    jsonwebtoken::decode::<T>(token, key.decoding(), &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
            other => TokenError::Invalid(format!("{other:?}")),
        })
}

/// [`verify`], with the signature checked by the batch verifier. Everything else is the same
/// call: a token whose signature the batch found valid is then decoded and validated by
/// jsonwebtoken as [`verify`] does, with only that signature taken as checked
/// ([`crate::auth::jwt_crypto`]'s vouch); a token it found invalid is refused as [`verify`]
/// refuses a bad signature; and one that is not even shaped like a signed token of this
/// ring goes to [`verify`] for its error (no curve work is spent on it).
pub async fn verify_batched<T: DeserializeOwned>(
    ring: &KeyRing,
    token: &str,
    issuer: &str,
    audience: &str,
) -> Result<T, TokenError> {
    let Some((verifier, message, signature)) = signed_parts(ring, token) else {
        return verify(ring, token, issuer, audience);
    };
    let key = verifier.verifying_key();
    if !crate::auth::batch::check(key, message, &signature).await {
        return Err(TokenError::Invalid(format!(
            "{:?}",
            jsonwebtoken::errors::ErrorKind::InvalidSignature
        )));
    }
    // The header was read by signed_parts (an EdDSA one naming this key): what verify would
    // check of it again holds, so only jsonwebtoken's decode and validation are left.
    crate::auth::jwt_crypto::vouched(key, message, &signature, || {
        decode_claims(verifier, token, issuer, audience)
    })
}

/// The key `token` names (if the header is an EdDSA one and the ring has the key), the signed
/// message (`header.payload`) and the signature.
fn signed_parts<'r, 't>(
    ring: &'r KeyRing,
    token: &'t str,
) -> Option<(&'r PublicKey, &'t [u8], Signature)> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    if header.alg != Algorithm::EdDSA {
        return None;
    }
    let key = ring.verifier(header.kid.as_deref()?)?;
    let (message, signature) = token.rsplit_once('.')?;
    let bytes = URL_SAFE_NO_PAD.decode(signature).ok()?;
    let signature = Signature::from_slice(&bytes).ok()?;
    Some((key, message.as_bytes(), signature))
}

/// Signs an access token; returns it with its claims.
pub fn issue_access(
    ring: &KeyRing,
    user: UserId,
    role: Role,
    ttl: Duration,
) -> Result<(String, AccessClaims), TokenError> {
    let claims = AccessClaims::new(user, role, ttl);
    Ok((sign(ring, &claims)?, claims))
}

/// Verifies an access token (remembering it: see [`VerifiedAccess`]).
pub fn verify_access(ring: &KeyRing, token: &str) -> Result<AccessClaims, TokenError> {
    if let Some(known) = remembered_access(ring, token) {
        return known;
    }
    let claims: AccessClaims = verify(ring, token, ACCESS_ISSUER, ACCESS_AUDIENCE)?;
    Ok(remember_access(ring, token, claims))
}

/// [`verify_access`] with a new token's signature checked by the batch verifier.
pub async fn verify_access_batched(
    ring: &KeyRing,
    token: &str,
) -> Result<AccessClaims, TokenError> {
    if let Some(known) = remembered_access(ring, token) {
        return known;
    }
    let claims: AccessClaims = verify_batched(ring, token, ACCESS_ISSUER, ACCESS_AUDIENCE).await?;
    Ok(remember_access(ring, token, claims))
}

/// Keeps a token that was just verified in full in the memo, and hands its claims back.
fn remember_access(ring: &KeyRing, token: &str, claims: AccessClaims) -> AccessClaims {
    ring.verified_access()
        .cache()
        .insert(token.into(), claims.clone());
    claims
}

/// The answer for a token verified before, if it is remembered.
fn remembered_access(ring: &KeyRing, token: &str) -> Option<Result<AccessClaims, TokenError>> {
    let claims = ring.verified_access().cache().get(token)?;
    // The same text was verified before; only time has moved since.
    if claims.exp < Utc::now().timestamp() - LEEWAY_SECONDS as i64 {
        return Some(Err(TokenError::Expired));
    }
    Some(Ok(claims))
}

/// Issuer and audience of passes (DESIGN §9, waitroom).
pub const PASS_ISSUER: &str = "dropline-waitroom";
pub const PASS_AUDIENCE: &str = "dropline-api";

/// The claims of a pass: proof that `sub` was admitted to `sale` by the waiting room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassClaims {
    pub sub: UserId,
    pub sale: SaleId,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
    pub iss: String,
    pub aud: String,
}

impl PassClaims {
    /// A pass for `user` in `sale`, valid until `expires_at` (epoch seconds).
    pub fn new(user: UserId, sale: SaleId, issued_at: i64, expires_at: i64) -> Self {
        Self {
            sub: user,
            sale,
            iat: issued_at,
            exp: expires_at,
            jti: Uuid::now_v7(),
            iss: PASS_ISSUER.to_owned(),
            aud: PASS_AUDIENCE.to_owned(),
        }
    }
}

/// Why a pass does not admit this request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PassError {
    #[error("the pass is not valid: {0}")]
    Token(#[from] TokenError),
    #[error("the pass is for another sale")]
    OtherSale,
    #[error("the pass is for another user")]
    OtherUser,
}

/// Verifies a pass and that it admits `user` to `sale`.
pub fn verify_pass(
    ring: &KeyRing,
    token: &str,
    sale: SaleId,
    user: UserId,
) -> Result<PassClaims, PassError> {
    let claims: PassClaims = verify(ring, token, PASS_ISSUER, PASS_AUDIENCE)?;
    pass_admits(claims, sale, user)
}

/// [`verify_pass`] with the signature checked by the batch verifier.
pub async fn verify_pass_batched(
    ring: &KeyRing,
    token: &str,
    sale: SaleId,
    user: UserId,
) -> Result<PassClaims, PassError> {
    let claims: PassClaims = verify_batched(ring, token, PASS_ISSUER, PASS_AUDIENCE).await?;
    pass_admits(claims, sale, user)
}

fn pass_admits(claims: PassClaims, sale: SaleId, user: UserId) -> Result<PassClaims, PassError> {
    if claims.sale != sale {
        return Err(PassError::OtherSale);
    }
    if claims.sub != user {
        return Err(PassError::OtherUser);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;
    use crate::auth::keys::SigningKeyPair;

    fn ring() -> anyhow::Result<KeyRing> {
        KeyRing::new(Some(SigningKeyPair::generate()?), vec![])
    }

    #[test]
    fn issued_token_verifies_with_public_key_only() -> anyhow::Result<()> {
        let signing = ring()?;
        let user = UserId::new_v7();
        let (token, claims) = issue_access(&signing, user, Role::Admin, Duration::from_secs(60))?;
        let public_only = KeyRing::new(None, signing.public_keys().cloned().collect())?;
        let back = verify_access(&public_only, &token)?;
        assert_eq!(back, claims);
        assert_eq!(back.sub, user);
        // The typed id is plain UUID text in the claims (#18: the wire did not change).
        let payload = URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap_or_default())?;
        let payload: serde_json::Value = serde_json::from_slice(&payload)?;
        assert_eq!(payload["sub"], user.as_uuid().hyphenated().to_string());
        assert_eq!(back.role, Role::Admin);
        Ok(())
    }

    #[test]
    fn tampered_token_is_refused() -> anyhow::Result<()> {
        let ring = ring()?;
        let (token, _) = issue_access(
            &ring,
            UserId::new_v7(),
            Role::Buyer,
            Duration::from_secs(60),
        )?;
        // The genuine token is remembered as verified; that must not help a forgery of it.
        assert_eq!(verify_access(&ring, &token)?.role, Role::Buyer);
        // Swap the payload for one claiming admin, keeping the signature.
        let parts: Vec<&str> = token.split('.').collect();
        let payload = URL_SAFE_NO_PAD.decode(parts.get(1).copied().unwrap_or_default())?;
        let forged = String::from_utf8(payload)?.replace("\"buyer\"", "\"admin\"");
        let forged = format!(
            "{}.{}.{}",
            parts.first().copied().unwrap_or_default(),
            URL_SAFE_NO_PAD.encode(forged),
            parts.get(2).copied().unwrap_or_default()
        );
        assert!(matches!(
            verify_access(&ring, &forged),
            Err(TokenError::Invalid(_))
        ));
        Ok(())
    }

    #[test]
    fn a_remembered_token_still_expires() -> anyhow::Result<()> {
        let signer = ring()?;
        let (token, claims) = issue_access(
            &signer,
            UserId::new_v7(),
            Role::Buyer,
            Duration::from_secs(60),
        )?;
        assert_eq!(verify_access(&signer, &token)?, claims);
        // A second use is answered from the memo (same claims) ...
        assert_eq!(
            signer.verified_access().cache().get(token.as_str()),
            Some(claims.clone())
        );
        assert_eq!(verify_access(&signer, &token)?, claims);
        // ... until the clock passes its expiry (and the leeway): stand in for the passing
        // time by remembering it with an expiry in the past.
        let lapsed = AccessClaims {
            exp: Utc::now().timestamp() - LEEWAY_SECONDS as i64 - 1,
            ..claims
        };
        signer
            .verified_access()
            .cache()
            .insert(token.as_str().into(), lapsed);
        assert_eq!(verify_access(&signer, &token), Err(TokenError::Expired));
        // A token that failed is not remembered.
        let other = ring()?;
        assert!(verify_access(&other, &token).is_err());
        assert_eq!(other.verified_access().cache().get(token.as_str()), None);
        Ok(())
    }

    #[test]
    fn alg_none_and_hmac_tokens_are_refused() -> anyhow::Result<()> {
        let ring = ring()?;
        let claims = AccessClaims::new(UserId::new_v7(), Role::Admin, Duration::from_secs(60));
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?);
        let kid = ring
            .public_keys()
            .next()
            .map(|k| k.kid.clone())
            .unwrap_or_default();
        let none_header =
            URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#));
        let none_token = format!("{none_header}.{payload}.");
        assert!(verify_access(&ring, &none_token).is_err());

        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid);
        let hmac = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"guess"),
        )?;
        assert_eq!(verify_access(&ring, &hmac), Err(TokenError::Algorithm));
        Ok(())
    }

    #[test]
    fn expired_token_is_refused() -> anyhow::Result<()> {
        let ring = ring()?;
        let mut claims = AccessClaims::new(UserId::new_v7(), Role::Buyer, Duration::from_secs(60));
        claims.iat -= 3600;
        claims.exp = Utc::now().timestamp() - 60;
        let token = sign(&ring, &claims)?;
        assert_eq!(verify_access(&ring, &token), Err(TokenError::Expired));
        Ok(())
    }

    #[test]
    fn token_from_another_key_or_audience_is_refused() -> anyhow::Result<()> {
        let ours = ring()?;
        let theirs = ring()?;
        let (token, _) = issue_access(
            &theirs,
            UserId::new_v7(),
            Role::Buyer,
            Duration::from_secs(60),
        )?;
        assert_eq!(verify_access(&ours, &token), Err(TokenError::UnknownKey));

        let mut claims = AccessClaims::new(UserId::new_v7(), Role::Buyer, Duration::from_secs(60));
        claims.aud = "dropline-api".into();
        let token = sign(&ours, &claims)?;
        assert!(matches!(
            verify_access(&ours, &token),
            Err(TokenError::Invalid(_))
        ));
        Ok(())
    }

    #[test]
    fn rotation_keeps_old_tokens_valid() -> anyhow::Result<()> {
        let old = SigningKeyPair::generate()?;
        let old_ring = KeyRing::new(Some(SigningKeyPair::from_pem(&old.to_pem()?)?), vec![])?;
        let (old_token, _) = issue_access(
            &old_ring,
            UserId::new_v7(),
            Role::Buyer,
            Duration::from_secs(60),
        )?;
        let rotated = KeyRing::new(Some(SigningKeyPair::generate()?), vec![old.public()?])?;
        verify_access(&rotated, &old_token)?;
        let (new_token, _) = issue_access(
            &rotated,
            UserId::new_v7(),
            Role::Buyer,
            Duration::from_secs(60),
        )?;
        verify_access(&rotated, &new_token)?;
        Ok(())
    }

    #[test]
    fn passes_are_bound_to_sale_user_issuer_and_time() -> anyhow::Result<()> {
        let waitroom = ring()?;
        let api_side = KeyRing::new(None, waitroom.public_keys().cloned().collect())?;
        let (user, sale) = (UserId::new_v7(), SaleId::new_v7());
        let now = Utc::now().timestamp();
        let pass = sign(&waitroom, &PassClaims::new(user, sale, now, now + 600))?;
        // The typed ids are plain UUID text in the claims (#18: the wire did not change).
        let payload = URL_SAFE_NO_PAD.decode(pass.split('.').nth(1).unwrap_or_default())?;
        let payload: serde_json::Value = serde_json::from_slice(&payload)?;
        assert_eq!(payload["sub"], user.as_uuid().hyphenated().to_string());
        assert_eq!(payload["sale"], sale.as_uuid().hyphenated().to_string());
        assert_eq!(verify_pass(&api_side, &pass, sale, user)?.sub, user);
        assert_eq!(
            verify_pass(&api_side, &pass, SaleId::new_v7(), user),
            Err(PassError::OtherSale)
        );
        assert_eq!(
            verify_pass(&api_side, &pass, sale, UserId::new_v7()),
            Err(PassError::OtherUser)
        );
        let expired = sign(
            &waitroom,
            &PassClaims::new(user, sale, now - 700, now - 100),
        )?;
        assert_eq!(
            verify_pass(&api_side, &expired, sale, user),
            Err(PassError::Token(TokenError::Expired))
        );
        // An access token is not a pass, even from the same key: issuer and audience differ.
        let (access, _) = issue_access(&waitroom, user, Role::Buyer, Duration::from_secs(60))?;
        assert!(matches!(
            verify_pass(&api_side, &access, sale, user),
            Err(PassError::Token(TokenError::Invalid(_)))
        ));
        // A pass signed by a key the api does not trust.
        let foreign = sign(&ring()?, &PassClaims::new(user, sale, now, now + 600))?;
        assert_eq!(
            verify_pass(&api_side, &foreign, sale, user),
            Err(PassError::Token(TokenError::UnknownKey))
        );
        Ok(())
    }

    /// Every kind of token the plain check tells apart gets the same answer from the batched
    /// check, for access tokens and passes, including a payload swapped under a genuine
    /// signature, a bent signature, one cut short and a signature taken from another token.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_batched_checks_answer_as_the_plain_ones() -> anyhow::Result<()> {
        let signer = ring()?;
        let theirs = ring()?;
        let user = UserId::new_v7();
        let sale = SaleId::new_v7();
        let now = Utc::now().timestamp();
        let (access, _) = issue_access(&signer, user, Role::Buyer, Duration::from_secs(60))?;
        let (other_access, _) = issue_access(
            &signer,
            UserId::new_v7(),
            Role::Admin,
            Duration::from_secs(60),
        )?;
        let pass = sign(&signer, &PassClaims::new(user, sale, now, now + 600))?;
        let parts: Vec<&str> = access.split('.').collect();
        let [head, body, sig] = parts.as_slice() else {
            anyhow::bail!("a token has three parts");
        };
        let admin_body = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(body)?)?.replace("\"buyer\"", "\"admin\""),
        );
        let mut bent = URL_SAFE_NO_PAD.decode(sig)?;
        bent[3] ^= 1;
        let other_sig = other_access.rsplit('.').next().unwrap_or_default();
        let mut expired_claims = AccessClaims::new(user, Role::Buyer, Duration::from_secs(60));
        expired_claims.iat -= 3600;
        expired_claims.exp = now - 60;
        let mut audience = AccessClaims::new(user, Role::Buyer, Duration::from_secs(60));
        audience.aud = "dropline-api".into();
        let tokens = vec![
            access.clone(),
            pass.clone(),
            format!("{head}.{admin_body}.{sig}"),
            format!("{head}.{body}.{}", URL_SAFE_NO_PAD.encode(&bent)),
            format!("{head}.{body}.{}", &sig[..sig.len() - 4]),
            format!("{head}.{body}.{other_sig}"),
            format!("{head}.{body}"),
            format!("{head}.{body}.{sig}.{sig}"),
            sign(&signer, &expired_claims)?,
            sign(&signer, &audience)?,
            issue_access(&theirs, user, Role::Buyer, Duration::from_secs(60))?.0,
            sign(&signer, &PassClaims::new(user, sale, now - 700, now - 100))?,
            "not a token".to_owned(),
            String::new(),
        ];
        for (i, token) in tokens.iter().enumerate() {
            // Rings of their own, so that neither answer comes from the other's memo.
            let plain = KeyRing::new(None, signer.public_keys().cloned().collect())?;
            let batched = KeyRing::new(None, signer.public_keys().cloned().collect())?;
            assert_eq!(
                verify_access_batched(&batched, token).await,
                verify_access(&plain, token),
                "access, token {i}"
            );
            for (s, u) in [
                (sale, user),
                (SaleId::new_v7(), user),
                (sale, UserId::new_v7()),
            ] {
                assert_eq!(
                    verify_pass_batched(&batched, token, s, u).await,
                    verify_pass(&plain, token, s, u),
                    "pass, token {i}"
                );
            }
        }
        let fresh = KeyRing::new(None, signer.public_keys().cloned().collect())?;
        assert_eq!(verify_access_batched(&fresh, &access).await?.sub, user);
        assert_eq!(
            verify_pass_batched(&fresh, &pass, sale, user).await?.sub,
            user
        );
        Ok(())
    }

    /// Many buyers at once, one in five with a forged token: each answer is its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_batched_checks_refuse_exactly_the_forged_tokens() -> anyhow::Result<()> {
        let signer = std::sync::Arc::new(ring()?);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..300usize {
            let user = UserId::new_v7();
            let (token, _) = issue_access(&signer, user, Role::Buyer, Duration::from_secs(60))?;
            let forged = i % 5 == 2;
            let token = if forged {
                let (message, sig) = token.rsplit_once('.').unwrap_or_default();
                let mut bytes = URL_SAFE_NO_PAD.decode(sig)?;
                bytes[20] ^= 4;
                format!("{message}.{}", URL_SAFE_NO_PAD.encode(bytes))
            } else {
                token
            };
            let signer = signer.clone();
            tasks.spawn(async move {
                let got = verify_access_batched(&signer, &token).await;
                (i, forged, user, got)
            });
        }
        while let Some(done) = tasks.join_next().await {
            let (i, forged, user, got) = done?;
            if forged {
                assert!(
                    matches!(got, Err(TokenError::Invalid(_))),
                    "token {i}: {got:?}"
                );
            } else {
                assert_eq!(got.map(|c| c.sub), Ok(user), "token {i}");
            }
        }
        Ok(())
    }
}
