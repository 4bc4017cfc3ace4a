//! The jsonwebtoken crypto backend Dropline installs: RustCrypto's, with the Ed25519 verifying
//! keys of this process's [`KeyRing`](crate::auth::keys::KeyRing)s kept decompressed.
//!
//! jsonwebtoken's RustCrypto backend rebuilds an Ed25519 verifying key from its 32 bytes on
//! every verification, which decompresses the curve point (a field square root): about a fifth
//! of what a verification costs, paid on every access token and pass. This backend looks the
//! key up among the ones [`remember`]ed (each [`PublicKey`](crate::auth::keys::PublicKey) is, when
//! made) and otherwise hands over to jsonwebtoken's own backend. Everything else — parsing,
//! the algorithm check, the signature equation, claims validation — is still jsonwebtoken's
//! and ed25519-dalek's: the verifier calls the same `Verifier::verify` the default one does.
//!
//! One exception, [`vouched`]: a signature the batch verifier ([`crate::auth::batch`]) has just
//! found valid is not checked a second time while jsonwebtoken decodes that very token on the
//! same thread. Only the exact key, message and signature bytes that were checked are taken.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Once, OnceLock, RwLock};

use ed25519_dalek::{Signature, VerifyingKey};
use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier};
use jsonwebtoken::signature::{Error as SignatureError, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

/// Keys a process verifies with are a handful (current, previous, other services'); the bound
/// only keeps a misuse from growing the map without end.
const MAX_KEYS: usize = 256;

static KEYS: OnceLock<RwLock<HashMap<[u8; 32], VerifyingKey>>> = OnceLock::new();
static PROVIDER: OnceLock<CryptoProvider> = OnceLock::new();
static INSTALL: Once = Once::new();

fn keys() -> &'static RwLock<HashMap<[u8; 32], VerifyingKey>> {
    KEYS.get_or_init(|| RwLock::new(HashMap::new()))
}

/// Makes this backend jsonwebtoken's default for the process (once; later calls do nothing).
/// If something installed another backend first, verification still works, only without the
/// kept keys.
pub fn install() {
    INSTALL.call_once(|| {
        let provider = PROVIDER.get_or_init(|| CryptoProvider {
            signer_factory: DEFAULT_PROVIDER.signer_factory,
            verifier_factory: verifier,
            key_utils: DEFAULT_PROVIDER.key_utils.clone(),
        });
        if provider.install_default().is_err() {
            tracing::warn!(
                "another jsonwebtoken crypto provider was installed first: Ed25519 keys are decompressed on every verification"
            );
        }
    });
}

/// Keeps `key` decompressed for later verifications.
pub fn remember(key: &VerifyingKey) {
    install();
    let mut map = match keys().write() {
        Ok(map) => map,
        // A panic while holding the lock cannot leave a half-written entry behind: take it.
        Err(poisoned) => poisoned.into_inner(),
    };
    if map.len() < MAX_KEYS {
        map.insert(key.to_bytes(), *key);
    }
}

fn kept(bytes: &[u8]) -> Option<VerifyingKey> {
    let bytes: &[u8; 32] = bytes.try_into().ok()?;
    let map = match keys().read() {
        Ok(map) => map,
        Err(poisoned) => poisoned.into_inner(),
    };
    map.get(bytes).copied()
}

fn verifier(
    algorithm: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    if *algorithm == Algorithm::EdDSA
        && key.family() == AlgorithmFamily::Ed
        && let Some(kept) = key.try_get_as_bytes().ok().and_then(kept)
    {
        return Ok(Box::new(KeptEd25519(kept)));
    }
    (DEFAULT_PROVIDER.verifier_factory)(algorithm, key)
}

struct KeptEd25519(VerifyingKey);

impl Verifier<Vec<u8>> for KeptEd25519 {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), SignatureError> {
        let signature = Signature::from_slice(signature)?;
        if is_vouched(&self.0, message, &signature) {
            return Ok(());
        }
        self.0.verify(message, &signature)
    }
}

/// A signature checked valid, for the decode that follows on this thread.
struct Vouched {
    key: [u8; 32],
    message: Vec<u8>,
    signature: [u8; 64],
}

thread_local! {
    static VOUCHED: RefCell<Option<Vouched>> = const { RefCell::new(None) };
}

/// Runs `decode` (synchronous: nothing else runs on this thread meanwhile) with `signature`
/// taken as `key`'s valid signature over `message`, which the caller has checked. Cleared when
/// `decode` returns or unwinds.
pub(crate) fn vouched<R>(
    key: &VerifyingKey,
    message: &[u8],
    signature: &Signature,
    decode: impl FnOnce() -> R,
) -> R {
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            VOUCHED.with(|v| v.borrow_mut().take());
        }
    }
    VOUCHED.with(|v| {
        *v.borrow_mut() = Some(Vouched {
            key: key.to_bytes(),
            message: message.to_vec(),
            signature: signature.to_bytes(),
        });
    });
    let _clear = Clear;
    decode()
}

fn is_vouched(key: &VerifyingKey, message: &[u8], signature: &Signature) -> bool {
    VOUCHED.with(|v| {
        v.borrow().as_ref().is_some_and(|x| {
            x.key == key.to_bytes() && x.signature == signature.to_bytes() && x.message == message
        })
    })
}

impl JwtVerifier for KeptEd25519 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_key_verifies_and_refuses_like_the_default_backend() -> anyhow::Result<()> {
        let signing = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let public = signing.verifying_key();
        remember(&public);
        let decoding = DecodingKey::from_ed_components(&{
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public.as_bytes())
        })?;
        let ours = verifier(&Algorithm::EdDSA, &decoding)?;
        let theirs = (DEFAULT_PROVIDER.verifier_factory)(&Algorithm::EdDSA, &decoding)?;
        use ed25519_dalek::Signer;
        let message = b"header.payload";
        let good = signing.sign(message).to_bytes().to_vec();
        let mut bad = good.clone();
        bad[0] ^= 1;
        for v in [&ours, &theirs] {
            assert!(v.verify(message, &good).is_ok());
            assert!(v.verify(b"header.payloaD", &good).is_err());
            assert!(v.verify(message, &bad).is_err());
            assert!(v.verify(message, &good[..63].to_vec()).is_err());
        }
        // A key nobody remembered goes to the default backend (and still verifies).
        let other = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let other_decoding = DecodingKey::from_ed_components(&{
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(other.verifying_key().as_bytes())
        })?;
        assert!(kept(other.verifying_key().as_bytes()).is_none());
        let fallback = verifier(&Algorithm::EdDSA, &other_decoding)?;
        assert!(
            fallback
                .verify(message, &other.sign(message).to_bytes().to_vec())
                .is_ok()
        );
        Ok(())
    }

    #[test]
    fn a_vouch_covers_only_its_own_key_message_and_signature_and_only_inside() -> anyhow::Result<()>
    {
        use ed25519_dalek::Signer;
        let signing = ed25519_dalek::SigningKey::from_bytes(&[11; 32]);
        let public = signing.verifying_key();
        let ours = KeptEd25519(public);
        let message = b"header.payload";
        // An invalid signature the caller (wrongly) vouches for shows exactly what is skipped.
        let bent = {
            let mut b = signing.sign(message).to_bytes();
            b[5] ^= 1;
            Signature::from_bytes(&b)
        };
        let other_key =
            KeptEd25519(ed25519_dalek::SigningKey::from_bytes(&[12; 32]).verifying_key());
        vouched(&public, message, &bent, || {
            assert!(ours.verify(message, &bent.to_vec()).is_ok());
            assert!(ours.verify(b"header.payloaD", &bent.to_vec()).is_err());
            assert!(other_key.verify(message, &bent.to_vec()).is_err());
            let mut twice = bent.to_bytes();
            twice[6] ^= 1;
            assert!(ours.verify(message, &twice.to_vec()).is_err());
        });
        assert!(
            ours.verify(message, &bent.to_vec()).is_err(),
            "the vouch ends with the call"
        );
        let unwound =
            std::panic::catch_unwind(|| vouched(&public, message, &bent, || panic!("decode")));
        assert!(unwound.is_err());
        assert!(
            ours.verify(message, &bent.to_vec()).is_err(),
            "and when it unwinds"
        );
        Ok(())
    }
}
