//! Ed25519 signing keys for access tokens and passes, with rotation.
//!
//! A [`KeyRing`] holds one signing key (the current one) and every public key that still
//! verifies: the current one, the previous one during a rotation, and keys of other services.
//! Each key is named by a `kid` (the first 16 hex digits of SHA-256 over the public key), which
//! goes into each token's header so a verifier picks the right key without trying them all.
//! Keys are PKCS#8 / SPKI PEM, the format `openssl genpkey -algorithm ed25519` writes.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::{DecodingKey, EncodingKey};
use sha2::{Digest, Sha256};

use crate::auth::claims::VerifiedAccess;

/// A public key that verifies, with its id.
#[derive(Clone)]
pub struct PublicKey {
    pub kid: String,
    key: VerifyingKey,
    decoding: DecodingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey").field("kid", &self.kid).finish()
    }
}

impl PublicKey {
    pub fn new(key: VerifyingKey) -> anyhow::Result<Self> {
        let x = URL_SAFE_NO_PAD.encode(key.as_bytes());
        let decoding = DecodingKey::from_ed_components(&x).context("building the verifying key")?;
        crate::auth::jwt_crypto::remember(&key);
        Ok(Self {
            kid: kid_of(&key),
            key,
            decoding,
        })
    }

    /// Parses an SPKI PEM public key (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let key = VerifyingKey::from_public_key_pem(pem.trim())
            .map_err(|e| anyhow::anyhow!("not an Ed25519 public key in SPKI PEM form: {e}"))?;
        Self::new(key)
    }

    pub fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    pub fn to_pem(&self) -> anyhow::Result<String> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("encoding a public key: {e}"))
    }

    /// The key as a JWK (RFC 8037 OKP), for `/.well-known/jwks.json`.
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": "EdDSA",
            "use": "sig",
            "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(self.key.as_bytes()),
        })
    }
}

/// The private key that signs, with its id.
pub struct SigningKeyPair {
    pub kid: String,
    signing: SigningKey,
    encoding: EncodingKey,
}

impl fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyPair")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKeyPair {
    fn new(signing: SigningKey) -> anyhow::Result<Self> {
        let der = signing
            .to_pkcs8_der()
            .map_err(|e| anyhow::anyhow!("encoding a private key: {e}"))?;
        Ok(Self {
            kid: kid_of(&signing.verifying_key()),
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            signing,
        })
    }

    /// Parses a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let signing = SigningKey::from_pkcs8_pem(pem.trim())
            .map_err(|e| anyhow::anyhow!("not an Ed25519 private key in PKCS#8 PEM form: {e}"))?;
        Self::new(signing)
    }

    /// A fresh random key (development, tests, `dropline all` without configured keys).
    pub fn generate() -> anyhow::Result<Self> {
        let mut seed = [0u8; 32];
        rand::Rng::fill(&mut rand::rng(), &mut seed);
        Self::new(SigningKey::from_bytes(&seed))
    }

    pub fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }

    /// A 32-byte secret for `label`, derived from this private key (HMAC-SHA256 keyed with the
    /// key's seed). Every process holding the same key derives the same secret, and the
    /// secret reveals nothing about the key: the waiting room's ticket MAC key comes from
    /// here, so operators manage one secret, not two.
    pub fn derive_secret(&self, label: &str) -> [u8; 32] {
        use hmac::Mac;
        // HMAC takes keys of any length, so this cannot fail; fall back to hashing anyway
        // rather than panic.
        match hmac::Hmac::<sha2::Sha256>::new_from_slice(self.signing.as_bytes()) {
            Ok(mut mac) => {
                mac.update(label.as_bytes());
                mac.finalize().into_bytes().into()
            }
            Err(_) => {
                use sha2::Digest;
                let mut hash = sha2::Sha256::new();
                hash.update(self.signing.as_bytes());
                hash.update(label.as_bytes());
                hash.finalize().into()
            }
        }
    }

    pub fn public(&self) -> anyhow::Result<PublicKey> {
        PublicKey::new(self.signing.verifying_key())
    }

    pub fn to_pem(&self) -> anyhow::Result<String> {
        Ok(self
            .signing
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("encoding a private key: {e}"))?
            .to_string())
    }
}

/// Signing key (optional: a verify-only service has none) plus every key that verifies.
#[derive(Debug, Default)]
pub struct KeyRing {
    signer: Option<SigningKeyPair>,
    verifiers: BTreeMap<String, PublicKey>,
    verified_access: VerifiedAccess,
}

impl KeyRing {
    /// A ring that signs with `signer` and verifies with it and `others`.
    pub fn new(signer: Option<SigningKeyPair>, others: Vec<PublicKey>) -> anyhow::Result<Self> {
        let mut verifiers = BTreeMap::new();
        if let Some(s) = &signer {
            let public = s.public()?;
            verifiers.insert(public.kid.clone(), public);
        }
        for key in others {
            verifiers.insert(key.kid.clone(), key);
        }
        anyhow::ensure!(!verifiers.is_empty(), "a key ring needs at least one key");
        Ok(Self {
            signer,
            verifiers,
            verified_access: VerifiedAccess::default(),
        })
    }

    pub fn signer(&self) -> Option<&SigningKeyPair> {
        self.signer.as_ref()
    }

    pub fn verifier(&self, kid: &str) -> Option<&PublicKey> {
        self.verifiers.get(kid)
    }

    /// The access tokens this ring has verified ([`crate::auth::tokens::verify_access`]).
    pub fn verified_access(&self) -> &VerifiedAccess {
        &self.verified_access
    }

    pub fn public_keys(&self) -> impl Iterator<Item = &PublicKey> {
        self.verifiers.values()
    }

    /// `{"keys": [...]}` for a JWKS endpoint.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": self.public_keys().map(PublicKey::jwk).collect::<Vec<_>>() })
    }
}

/// The access-token key ring from `[auth]`: the signing key (`signing_key` or
/// `signing_key_file`) and every `verify_key_files` entry. `Ok(None)` when no key at all is
/// configured, so the caller decides between refusing to start and a throw-away dev key.
pub fn access_ring(auth: &crate::config::AuthConfig) -> anyhow::Result<Option<KeyRing>> {
    ring_from(
        "auth",
        auth.signing_key.as_deref(),
        auth.signing_key_file.as_deref(),
        &auth.verify_key_files,
    )
}

/// The pass key ring from `[passes]`, like [`access_ring`].
pub fn pass_ring(passes: &crate::config::PassesConfig) -> anyhow::Result<Option<KeyRing>> {
    ring_from(
        "passes",
        passes.signing_key.as_deref(),
        passes.signing_key_file.as_deref(),
        &passes.verify_key_files,
    )
}

fn ring_from(
    section: &str,
    pem: Option<&str>,
    file: Option<&Path>,
    verify_files: &[std::path::PathBuf],
) -> anyhow::Result<Option<KeyRing>> {
    let signer = match (pem, file) {
        (Some(pem), _) => {
            Some(SigningKeyPair::from_pem(pem).with_context(|| format!("{section}.signing_key"))?)
        }
        (None, Some(path)) => {
            let key = format!("{section}.signing_key_file");
            Some(
                SigningKeyPair::from_pem(&read_pem(&key, path)?)
                    .with_context(|| format!("{key} {}", path.display()))?,
            )
        }
        (None, None) => None,
    };
    let key = format!("{section}.verify_key_files");
    let others = verify_files
        .iter()
        .map(|path| {
            PublicKey::from_pem(&read_pem(&key, path)?)
                .with_context(|| format!("{key} {}", path.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if signer.is_none() && others.is_empty() {
        return Ok(None);
    }
    KeyRing::new(signer, others).map(Some)
}

/// For `dropline all` (development, demo): puts a throw-away key into every secret the
/// configuration leaves unset (access-token key, pass key, PII key), so every component loads
/// its keys from the configuration the same way. Returns the keys it made up.
pub fn fill_dev_secrets(config: &mut crate::config::Config) -> anyhow::Result<Vec<&'static str>> {
    let mut made = Vec::new();
    if config.auth.signing_key.is_none() && config.auth.signing_key_file.is_none() {
        config.auth.signing_key = Some(SigningKeyPair::generate()?.to_pem()?);
        made.push("auth.signing_key");
    }
    if config.passes.signing_key.is_none() && config.passes.signing_key_file.is_none() {
        config.passes.signing_key = Some(SigningKeyPair::generate()?.to_pem()?);
        made.push("passes.signing_key");
    }
    if config.pii.key.is_none() && config.pii.key_file.is_none() {
        config.pii.key = Some(crate::config::pii_key::random_key_base64());
        made.push("pii.key");
    }
    Ok(made)
}

/// Reads a PEM file, naming the config key in the error.
pub fn read_pem(key: &str, path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{key}: cannot read {}", path.display()))
}

fn kid_of(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_keeps_the_kid() -> anyhow::Result<()> {
        let pair = SigningKeyPair::generate()?;
        let again = SigningKeyPair::from_pem(&pair.to_pem()?)?;
        assert_eq!(pair.kid, again.kid);
        let public = PublicKey::from_pem(&pair.public()?.to_pem()?)?;
        assert_eq!(public.kid, pair.kid);
        assert_eq!(public.kid.len(), 16);
        Ok(())
    }

    #[test]
    fn garbage_pem_is_a_clear_error() {
        let err = SigningKeyPair::from_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("Ed25519 private key"), "{err}");
    }

    #[test]
    fn ring_publishes_current_and_previous_keys() -> anyhow::Result<()> {
        let old = SigningKeyPair::generate()?;
        let new = SigningKeyPair::generate()?;
        let ring = KeyRing::new(Some(new), vec![old.public()?])?;
        let jwks = ring.jwks();
        let keys = jwks["keys"].as_array().map(Vec::len);
        assert_eq!(keys, Some(2));
        assert!(ring.verifier(&old.kid).is_some());
        Ok(())
    }
}
