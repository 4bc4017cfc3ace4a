//! Personal data at rest (phone, address): AES-256-GCM with key ids, so keys can rotate.
//!
//! A stored value is `key_id (1 byte) || nonce (12 random bytes) || ciphertext || tag`. The
//! current key encrypts; it and every retired key (`pii.previous_keys`) decrypt, chosen by the
//! id in the value. Callers pass associated data naming the column and the row (for example
//! `users.phone:<user id>`), so a ciphertext copied into another row or column fails to decrypt
//! instead of showing one buyer's phone number on another's profile.

use std::collections::BTreeMap;
use std::fmt;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use anyhow::Context;

use dropline_core::config::PiiConfig;
use dropline_core::config::pii_key::{parse_key, parse_previous, random_key};

const NONCE_LEN: usize = 12;

/// Encrypts and decrypts personal data.
#[derive(Clone)]
pub struct Pii {
    current: u8,
    current_key: [u8; 32],
    ciphers: BTreeMap<u8, Aes256Gcm>,
}

impl fmt::Debug for Pii {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pii")
            .field("current", &self.current)
            .field("key_ids", &self.ciphers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Pii {
    /// A cipher set that encrypts with `key` under `id` and decrypts with it and `previous`.
    pub fn new(id: u8, key: &[u8; 32], previous: &[(u8, [u8; 32])]) -> anyhow::Result<Self> {
        anyhow::ensure!(id > 0, "pii key ids are 1 to 255");
        let mut ciphers = BTreeMap::new();
        for (pid, pkey) in previous {
            anyhow::ensure!(
                *pid != id,
                "pii.previous_keys reuses the current key id {id}"
            );
            ciphers.insert(*pid, Aes256Gcm::new(pkey.into()));
        }
        ciphers.insert(id, Aes256Gcm::new(key.into()));
        Ok(Self {
            current: id,
            current_key: *key,
            ciphers,
        })
    }

    /// The configured keys, or `None` when no current key is set.
    pub fn from_config(config: &PiiConfig) -> anyhow::Result<Option<Self>> {
        let text = match (&config.key, &config.key_file) {
            (Some(key), _) => key.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("pii.key_file: cannot read {}", path.display()))?,
            (None, None) => return Ok(None),
        };
        let key = parse_key(&text).map_err(|e| anyhow::anyhow!("pii.key: {e}"))?;
        let previous = config
            .previous_keys
            .iter()
            .map(|e| parse_previous(e).map_err(|e| anyhow::anyhow!("pii.previous_keys: {e}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Self::new(config.key_id, &key, &previous).map(Some)
    }

    /// A random key (development, tests, `dropline all` without a configured key).
    pub fn generate() -> anyhow::Result<Self> {
        Self::new(1, &random_key(), &[])
    }

    /// Encrypts `plain`, bound to `aad`.
    pub fn encrypt(&self, plain: &str, aad: &[u8]) -> anyhow::Result<Vec<u8>> {
        let cipher = self
            .ciphers
            .get(&self.current)
            .context("the current pii key is missing")?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::Rng::fill(&mut rand::rng(), &mut nonce);
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad,
                },
            )
            .map_err(|_| anyhow::anyhow!("AES-GCM encryption failed"))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(self.current);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypts a value made by [`Pii::encrypt`] with the same `aad`.
    pub fn decrypt(&self, stored: &[u8], aad: &[u8]) -> anyhow::Result<String> {
        anyhow::ensure!(stored.len() > 1 + NONCE_LEN, "pii value too short");
        let id = stored[0];
        let cipher = self
            .ciphers
            .get(&id)
            .with_context(|| format!("no pii key with id {id} is configured"))?;
        let (nonce, sealed) = stored[1..].split_at(NONCE_LEN);
        let plain = cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map_err(|_| anyhow::anyhow!("pii value does not authenticate (key {id})"))?;
        String::from_utf8(plain).context("pii value is not UTF-8")
    }

    /// Whether a stored value was written with a retired key (re-encrypt it when convenient).
    pub fn is_stale(&self, stored: &[u8]) -> bool {
        stored.first() != Some(&self.current)
    }

    /// A keyed digest of `data` for values that must be compared but never read back (e-mail
    /// verification codes): HMAC-SHA-256 under a key derived from the current PII key and
    /// `label`, so a stolen table cannot be brute-forced offline without the key.
    pub fn digest(&self, label: &str, data: &[u8]) -> Vec<u8> {
        use hmac::{Hmac, Mac};
        use sha2::{Digest, Sha256};
        let derived = Sha256::new()
            .chain_update(b"dropline-pii-digest\0")
            .chain_update(label.as_bytes())
            .chain_update([0u8])
            .chain_update(self.current_key)
            .finalize();
        // HMAC takes keys of any length, so this never falls back; if it did, a plain hash
        // over key and data still binds the digest to the key.
        match <Hmac<Sha256> as Mac>::new_from_slice(&derived) {
            Ok(mut mac) => {
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            Err(_) => Sha256::new()
                .chain_update(derived)
                .chain_update(data)
                .finalize()
                .to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_fresh_nonce_each_time() -> anyhow::Result<()> {
        let pii = Pii::generate()?;
        let a = pii.encrypt("010-1234-5678", b"users.phone:1")?;
        let b = pii.encrypt("010-1234-5678", b"users.phone:1")?;
        assert_ne!(a, b, "a nonce was reused");
        assert_eq!(pii.decrypt(&a, b"users.phone:1")?, "010-1234-5678");
        Ok(())
    }

    #[test]
    fn value_moved_to_another_row_does_not_decrypt() -> anyhow::Result<()> {
        let pii = Pii::generate()?;
        let a = pii.encrypt("Seoul", b"users.address:1")?;
        assert!(pii.decrypt(&a, b"users.address:2").is_err());
        let mut tampered = a.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert!(pii.decrypt(&tampered, b"users.address:1").is_err());
        Ok(())
    }

    #[test]
    fn rotation_keeps_old_values_readable() -> anyhow::Result<()> {
        let old_key = random_key();
        let old = Pii::new(1, &old_key, &[])?;
        let stored = old.encrypt("Busan", b"x")?;
        let new = Pii::new(2, &random_key(), &[(1, old_key)])?;
        assert_eq!(new.decrypt(&stored, b"x")?, "Busan");
        assert!(new.is_stale(&stored));
        assert!(!new.is_stale(&new.encrypt("Busan", b"x")?));
        // Without the old key the value is refused with a message naming the key id.
        let without = Pii::new(2, &random_key(), &[])?;
        let err = without
            .decrypt(&stored, b"x")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("id 1"), "{err}");
        Ok(())
    }

    #[test]
    fn digest_depends_on_key_and_label() -> anyhow::Result<()> {
        let a = Pii::generate()?;
        let b = Pii::generate()?;
        assert_eq!(a.digest("code", b"123456"), a.digest("code", b"123456"));
        assert_ne!(a.digest("code", b"123456"), b.digest("code", b"123456"));
        assert_ne!(a.digest("code", b"123456"), a.digest("other", b"123456"));
        Ok(())
    }
}
