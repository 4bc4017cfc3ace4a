//! Password hashing with argon2id (parameters from `[auth]`), stored as PHC strings.
//!
//! The PHC string carries its own parameters, so raising the cost later keeps old hashes
//! verifiable; [`Hasher::needs_rehash`] tells when a login should store a fresh hash.
//! Hashing is CPU-bound (tens of milliseconds by design), so it runs on the blocking pool,
//! never on the async workers that serve requests.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::Rng;

/// argon2id with fixed parameters.
#[derive(Debug, Clone)]
pub struct Hasher {
    params: Params,
}

impl Hasher {
    /// `memory_kib`, `iterations`, `parallelism` as argon2 names them (m, t, p).
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> anyhow::Result<Self> {
        let params = Params::new(memory_kib, iterations, parallelism, None)
            .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
        Ok(Self { params })
    }

    /// The hasher for the configured argon2 parameters (`auth.argon2_*`).
    pub fn from_config(auth: &crate::config::AuthConfig) -> anyhow::Result<Self> {
        Self::new(
            auth.argon2_memory_kib,
            auth.argon2_iterations,
            auth.argon2_parallelism,
        )
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Hashes `password` with a fresh random salt (blocking; see [`Hasher::hash_async`]).
    pub fn hash(&self, password: &str) -> anyhow::Result<String> {
        let mut salt = [0u8; 16];
        rand::rng().fill(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
        self.argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
    }

    /// Whether `password` matches the PHC string `stored` (blocking). A malformed stored hash
    /// is an error, not a mismatch, so it shows in the logs.
    pub fn verify(&self, password: &str, stored: &str) -> anyhow::Result<bool> {
        let parsed = PasswordHash::new(stored).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
        Ok(self
            .argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    }

    /// Whether `stored` was made with other parameters than the current ones.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return true;
        };
        Params::try_from(&parsed).map_or(true, |p| {
            p.m_cost() != self.params.m_cost()
                || p.t_cost() != self.params.t_cost()
                || p.p_cost() != self.params.p_cost()
        })
    }

    /// [`Hasher::hash`] on the blocking pool.
    pub async fn hash_async(&self, password: String) -> anyhow::Result<String> {
        let hasher = self.clone();
        tokio::task::spawn_blocking(move || hasher.hash(&password)).await?
    }

    /// [`Hasher::verify`] on the blocking pool.
    pub async fn verify_async(&self, password: String, stored: String) -> anyhow::Result<bool> {
        let hasher = self.clone();
        tokio::task::spawn_blocking(move || hasher.verify(&password, &stored)).await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> anyhow::Result<Hasher> {
        Hasher::new(1024, 1, 1)
    }

    #[test]
    fn hash_verifies_and_is_salted() -> anyhow::Result<()> {
        let h = cheap()?;
        let a = h.hash("correct horse battery")?;
        let b = h.hash("correct horse battery")?;
        assert_ne!(a, b, "a fresh salt each time");
        assert!(a.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{a}");
        assert!(h.verify("correct horse battery", &a)?);
        assert!(!h.verify("correct horse battery!", &a)?);
        assert!(h.verify("x", "not a hash").is_err());
        Ok(())
    }

    #[test]
    fn changed_parameters_ask_for_a_rehash_but_old_hashes_verify() -> anyhow::Result<()> {
        let old = cheap()?.hash("pw-12345678")?;
        let stronger = Hasher::new(2048, 2, 1)?;
        assert!(stronger.needs_rehash(&old));
        assert!(stronger.verify("pw-12345678", &old)?);
        assert!(!stronger.needs_rehash(&stronger.hash("pw-12345678")?));
        Ok(())
    }
}
