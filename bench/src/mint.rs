//! What the minting tools and `line-sim` share: reading a signing key and minting a buyer's
//! access token the way the api would (a fresh user id, the buyer role, valid one hour).

use std::time::Duration;

use anyhow::Context;
use dropline_core::auth::keys::{KeyRing, SigningKeyPair};
use dropline_core::auth::tokens::{Role, issue_access};
use dropline_core::ids::UserId;

/// How long minted access tokens are good for.
pub const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// The Ed25519 PKCS#8 key in the PEM file at `path`.
pub fn read_key(path: &str) -> anyhow::Result<SigningKeyPair> {
    let pem = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    SigningKeyPair::from_pem(&pem).with_context(|| format!("{path} is not an Ed25519 PEM key"))
}

/// A key ring that signs with the key in `path` (and verifies nothing else).
pub fn ring(path: &str) -> anyhow::Result<KeyRing> {
    KeyRing::new(Some(read_key(path)?), Vec::new())
}

/// A fresh buyer: its user id and an access token for it signed by `ring`.
pub fn buyer(ring: &KeyRing) -> anyhow::Result<(UserId, String)> {
    let user = UserId::new_v7();
    Ok((user, token_for(ring, user)?))
}

/// An access token for `user` signed by `ring`.
pub fn token_for(ring: &KeyRing, user: UserId) -> anyhow::Result<String> {
    let (token, _) = issue_access(ring, user, Role::Buyer, TOKEN_TTL)?;
    Ok(token)
}
