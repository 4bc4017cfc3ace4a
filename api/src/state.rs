//! What every api handler shares: configuration, connections, keys, limiters and caches.

use std::sync::Arc;

use crate::pii::Pii;
use dropline_core::Config;
use dropline_core::auth::keys::KeyRing;
use dropline_core::auth::password::Hasher;
use dropline_core::clients::amqp::Broker;
use dropline_core::clients::deps::Deps;
use dropline_core::clients::redis::Redis;
use dropline_core::coalesce::Coalesce;
use dropline_core::config::ProviderKind;
use dropline_core::http::error::ApiError;
use dropline_core::ids::SaleId;
use dropline_core::sale::SaleView;
use sqlx::MySqlPool;

use crate::limits::Limits;

/// The secrets the api needs: the access-token key ring (with a signing key), the public
/// keys that verify passes, and the PII keys.
#[derive(Debug, Clone)]
pub struct Secrets {
    pub keys: Arc<KeyRing>,
    pub passes: Arc<KeyRing>,
    pub pii: Pii,
    /// The Stripe webhook signing secret (`whsec_...`), when `payment.provider = stripe`.
    pub stripe_webhook: Option<Arc<str>>,
}

impl Secrets {
    /// Loads the keys from `[auth]`, `[passes]` and `[pii]`; a missing one is an error naming
    /// the config key (`dropline all` fills throw-away keys in before calling this).
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let keys = dropline_core::auth::keys::access_ring(&config.auth)?
            .filter(|ring| ring.signer().is_some())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the api needs a signing key for access tokens: set auth.signing_key_file \
                     (or DROPLINE_AUTH__SIGNING_KEY) to an Ed25519 PKCS#8 PEM key \
                     (`openssl genpkey -algorithm ed25519`)"
                )
            })?;
        let passes = dropline_core::auth::keys::pass_ring(&config.passes)?.ok_or_else(|| {
            anyhow::anyhow!(
                "the api needs the waiting room's public key to verify passes: set \
                 passes.verify_key_files (DROPLINE_PASSES__VERIFY_KEY_FILES='[\"/path/pass.pub.pem\"]')"
            )
        })?;
        let pii = Pii::from_config(&config.pii)?.ok_or_else(|| {
            anyhow::anyhow!(
                "the api needs a key for personal data: set pii.key_file (or DROPLINE_PII__KEY) \
                 to 32 random bytes in base64 (`openssl rand -base64 32`)"
            )
        })?;
        let stripe_webhook = match config.payment.provider {
            ProviderKind::Simulated => None,
            ProviderKind::Stripe => Some(Arc::from(config.payment.stripe.webhook_secret()?)),
        };
        Ok(Self {
            keys: Arc::new(keys),
            passes: Arc::new(passes),
            pii,
            stripe_webhook,
        })
    }
}

/// Cheap to clone: one `Arc`.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub config: Config,
    pub mysql: MySqlPool,
    pub redis: Redis,
    pub broker: Broker,
    pub keys: Arc<KeyRing>,
    pub passes: Arc<KeyRing>,
    pub pii: Pii,
    /// See [`Secrets::stripe_webhook`].
    pub stripe_webhook: Option<Arc<str>>,
    pub hasher: Hasher,
    pub limits: Limits,
    pub cache: crate::cache::Cache,
    /// Concurrent reads of one sale's live view share one Redis round trip (the stock storm).
    pub views: Coalesce<SaleId, Result<Option<SaleView>, ApiError>>,
    /// `GET /api/admin/sales/{id}/audit`: runs shared and kept about a second (audit.rs).
    pub audits: crate::audit::Audits,
    /// `GET /api/admin/sales/{id}/report`: builds shared and kept about a second (report.rs).
    pub reports: crate::report::Reports,
    /// A hash of a random password, verified against when a login names an unknown address.
    dummy_hash: tokio::sync::OnceCell<String>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(config: &Config, deps: &Deps, secrets: Secrets) -> anyhow::Result<Self> {
        let redis = deps.redis()?.clone();
        Ok(Self(Arc::new(Inner {
            mysql: deps.mysql()?.clone(),
            broker: deps.broker()?.clone(),
            keys: secrets.keys,
            passes: secrets.passes,
            pii: secrets.pii,
            stripe_webhook: secrets.stripe_webhook,
            hasher: dropline_core::auth::password::Hasher::from_config(&config.auth)?,
            limits: Limits::new(&config.limits)?,
            cache: crate::cache::Cache::new(redis.clone(), &config.cache),
            redis,
            views: Coalesce::new(),
            audits: crate::audit::Audits::default(),
            reports: crate::report::Reports::default(),
            config: config.clone(),
            dummy_hash: tokio::sync::OnceCell::new(),
        })))
    }

    /// See [`Inner::dummy_hash`]; made on first use with the configured argon2 cost.
    pub async fn dummy_hash(&self) -> Result<String, ApiError> {
        self.dummy_hash
            .get_or_try_init(|| async {
                let random = dropline_core::config::pii_key::random_key_base64();
                self.hasher.hash_async(random).await
            })
            .await
            .cloned()
            .map_err(ApiError::internal)
    }
}
