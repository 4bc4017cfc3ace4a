//! Configuration: built-in defaults < `dropline.toml` (or `--config FILE`) < `DROPLINE_*` env.
//!
//! The defaults live in `core/defaults.toml`, compiled in, with every key documented there.
//! [`Config::load`] layers the sources, refuses unknown keys, and runs [`Config::validate`], so
//! a bad or missing value stops the process at start with a message naming the key.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

/// The compiled-in defaults file (documented; also printed by `dropline config defaults`).
pub const DEFAULTS_TOML: &str = include_str!("../defaults.toml");

/// The longest `waitroom.return_grace_seconds`: 12 h, well inside the 18 h wrap of the
/// last-poll stamp a place carries.
pub const MAX_RETURN_GRACE_SECONDS: u64 = 43_200;

/// Environment variable naming the config file, as an alternative to `--config`.
pub const CONFIG_FILE_ENV: &str = "DROPLINE_CONFIG";

/// A configuration problem, naming the key and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    /// Parse or type errors from a layer; figment's message names the key and the source.
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

impl ConfigError {
    fn invalid(key: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            message: message.into(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// Everything Dropline reads from its configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `None`: human on a terminal, JSON otherwise.
    #[serde(default)]
    pub log_format: Option<LogFormat>,
    pub log_filter: String,
    pub waitroom: WaitroomConfig,
    pub api: ApiConfig,
    pub auth: AuthConfig,
    pub passes: PassesConfig,
    pub pii: PiiConfig,
    pub limits: LimitsConfig,
    pub cache: CacheConfig,
    pub workers: WorkersConfig,
    pub http: HttpConfig,
    pub mysql: MysqlConfig,
    pub redis: RedisConfig,
    pub amqp: AmqpConfig,
    pub smtp: SmtpConfig,
    pub payment: PaymentConfig,
    pub expiry: ExpiryConfig,
    pub draw: DrawConfig,
    pub loadtest: LoadtestConfig,
    pub alerts: AlertsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitroomConfig {
    pub listen: String,
    pub abandon_after_seconds: u64,
    pub return_grace_seconds: u64,
    pub outage_retry_after_seconds: u64,
    /// Wrong access codes a user may send per hour and sale before joins with a code answer
    /// 429 (door.md §2).
    pub code_failures_per_user_per_hour: u64,
    pub admission_window_seconds: u64,
    pub max_queue_length: u64,
    pub join_per_ip_per_minute: u32,
    pub join_per_user_per_minute: u32,
    pub status_per_ip_per_minute: u32,
    pub status_per_user_per_minute: u32,
    pub admit_tick_ms: u64,
    pub eta_rate_window_seconds: u64,
    /// How long a proof-of-work challenge is good for (door.md §1).
    pub pow_challenge_ttl_seconds: u64,
    pub lease_seconds: u64,
    pub reap_interval_ms: u64,
    pub run_admitter: bool,
    pub api_base_url: String,
    #[serde(default)]
    pub page_template_file: Option<PathBuf>,
    #[serde(default)]
    pub locales_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: String,
    #[serde(default)]
    pub cors_allowed_origins: Vec<String>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub access_token_ttl_seconds: u64,
    pub refresh_token_ttl_seconds: u64,
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    #[serde(default)]
    pub signing_key: Option<String>,
    #[serde(default)]
    pub verify_key_files: Vec<PathBuf>,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    pub email_code_ttl_seconds: u64,
    pub email_code_max_attempts: u32,
    pub email_codes_per_hour: u32,
    pub unverified_grace_seconds: u64,
    pub purge_interval_seconds: u64,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassesConfig {
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    #[serde(default)]
    pub signing_key: Option<String>,
    #[serde(default)]
    pub verify_key_files: Vec<PathBuf>,
}

impl fmt::Debug for PassesConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassesConfig")
            .field("signing_key_file", &self.signing_key_file)
            .field("signing_key", &self.signing_key.as_ref().map(|_| "***"))
            .field("verify_key_files", &self.verify_key_files)
            .finish()
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiiConfig {
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<String>,
    pub key_id: u8,
    #[serde(default)]
    pub previous_keys: Vec<String>,
}

impl fmt::Debug for PiiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PiiConfig")
            .field("key_file", &self.key_file)
            .field("key", &self.key.as_ref().map(|_| "***"))
            .field("key_id", &self.key_id)
            .field("previous_keys", &self.previous_keys.len())
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub login_per_ip_per_minute: u32,
    pub login_per_email_per_minute: u32,
    pub signup_per_ip_per_minute: u32,
    pub resend_interval_seconds: u64,
    pub verify_per_ip_per_minute: u32,
    pub verify_per_email_per_minute: u32,
    pub orders_per_user_per_minute: u32,
    pub pay_per_user_per_minute: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    pub ttl_seconds: u64,
    pub jitter_percent: u8,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("access_token_ttl_seconds", &self.access_token_ttl_seconds)
            .field("refresh_token_ttl_seconds", &self.refresh_token_ttl_seconds)
            .field("signing_key_file", &self.signing_key_file)
            .field("signing_key", &self.signing_key.as_ref().map(|_| "***"))
            .field("verify_key_files", &self.verify_key_files)
            .field("argon2_memory_kib", &self.argon2_memory_kib)
            .field("argon2_iterations", &self.argon2_iterations)
            .field("argon2_parallelism", &self.argon2_parallelism)
            .field("email_code_ttl_seconds", &self.email_code_ttl_seconds)
            .field("email_code_max_attempts", &self.email_code_max_attempts)
            .field("email_codes_per_hour", &self.email_codes_per_hour)
            .field("unverified_grace_seconds", &self.unverified_grace_seconds)
            .field("purge_interval_seconds", &self.purge_interval_seconds)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersConfig {
    pub metrics_listen: String,
    /// Prefetch of the confirm worker's consumer (it batches MySQL writes, so it wants many
    /// deliveries in hand at once); the other queues use `amqp.prefetch`.
    pub confirm_prefetch: u16,
    /// Prefetch of the payment worker's consumer: the payments one process has in flight
    /// with the provider.
    pub payment_prefetch: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub body_limit_bytes: usize,
    pub request_timeout_seconds: u64,
    pub shutdown_grace_seconds: u64,
    pub trust_forwarded_for: bool,
    pub header_read_timeout_seconds: u64,
    pub idle_timeout_seconds: u64,
    pub max_connections: usize,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    pub url: String,
    pub max_connections: u32,
    pub connect_timeout_seconds: u64,
    pub run_migrations: bool,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    pub key_prefix: String,
    pub pool_size: usize,
    pub connect_timeout_seconds: u64,
    pub command_timeout_ms: u64,
    /// PEM file of the CA(s) a `rediss://` server's certificate may chain to, trusted besides
    /// the platform's roots (`DROPLINE_REDIS__CA_FILE`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    pub url: String,
    pub prefix: String,
    pub connect_timeout_seconds: u64,
    pub prefetch: u16,
    pub max_attempts: u32,
    pub retry_delay_ms: u64,
    pub delivery_limit: u32,
    /// PEM file of the CA(s) an `amqps://` broker's certificate may chain to, trusted besides
    /// the platform's roots (`DROPLINE_AMQP__CA_FILE`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    None,
    Starttls,
    Tls,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    pub from: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentConfig {
    /// Which provider charges the cards (payments.md): `simulated` (default) or `stripe`.
    #[serde(default)]
    pub provider: ProviderKind,
    pub timeout_seconds: u64,
    pub sim_latency_ms: u64,
    pub sim_failure_rate: f64,
    pub stripe: StripeConfig,
}

/// The payment provider in use (`payment.provider`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    #[default]
    Simulated,
    Stripe,
}

/// The currencies charged through Stripe: those whose Stripe exponent is ISO 4217's, so the
/// order's minor units go to Stripe as they are (payments.md "Amounts").
pub const STRIPE_CURRENCIES: [&str; 5] = ["KRW", "JPY", "USD", "EUR", "GBP"];

/// `[payment.stripe]` (payments.md "Config").
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeConfig {
    /// `https://api.stripe.com`; `http` only to a loopback host (localstripe in tests).
    pub api_base: String,
    /// The secret API key (`sk_...`): the workers and `payments reconcile` need it.
    #[serde(default)]
    pub secret_key: Option<String>,
    #[serde(default)]
    pub secret_key_file: Option<PathBuf>,
    /// The webhook endpoint's signing secret (`whsec_...`): the api needs it.
    #[serde(default)]
    pub webhook_secret: Option<String>,
    #[serde(default)]
    pub webhook_secret_file: Option<PathBuf>,
    /// Sent as `Stripe-Version`.
    pub api_version: String,
    /// Where a 3-D Secure redirect comes back to; empty: not sent.
    #[serde(default)]
    pub return_url: Option<String>,
    /// The publishable key (`pk_...`) the buyer's page uses with Stripe.js.
    #[serde(default)]
    pub publishable_key: Option<String>,
    /// Where the waiting page loads Stripe.js from (`https://js.stripe.com/v3/`; `http` only to
    /// a loopback host: localstripe's mock at `<base>/js.stripe.com/v3/` in tests).
    pub js_url: String,
    /// One request to Stripe at most this long.
    pub timeout_ms: u64,
}

impl fmt::Debug for StripeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeConfig")
            .field("api_base", &self.api_base)
            // Labels without the word `secret`: tests check Debug output never shows one.
            .field("api_key", &self.secret_key.as_ref().map(|_| "***"))
            .field("api_key_file", &self.secret_key_file)
            .field("webhook_key", &self.webhook_secret.as_ref().map(|_| "***"))
            .field("webhook_key_file", &self.webhook_secret_file)
            .field("api_version", &self.api_version)
            .field("return_url", &self.return_url)
            .field("publishable_key", &self.publishable_key)
            .field("js_url", &self.js_url)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

impl StripeConfig {
    /// The secret API key, from `secret_key` or `secret_key_file`; an error naming the key
    /// when neither is set (the workers and `payments reconcile` refuse to start without it).
    pub fn secret_key(&self) -> anyhow::Result<String> {
        read_secret(
            "payment.stripe.secret_key",
            &self.secret_key,
            &self.secret_key_file,
            "DROPLINE_PAYMENT__STRIPE__SECRET_KEY[_FILE]",
        )
    }

    /// The webhook signing secret (`whsec_...`), whole, from `webhook_secret` or its file;
    /// an error naming the key when neither is set (the api refuses to start without it).
    pub fn webhook_secret(&self) -> anyhow::Result<String> {
        read_secret(
            "payment.stripe.webhook_secret",
            &self.webhook_secret,
            &self.webhook_secret_file,
            "DROPLINE_PAYMENT__STRIPE__WEBHOOK_SECRET[_FILE]",
        )
    }
}

fn read_secret(
    key: &str,
    value: &Option<String>,
    file: &Option<PathBuf>,
    env: &str,
) -> anyhow::Result<String> {
    let secret = match (value, file) {
        (Some(_), Some(_)) => anyhow::bail!("set {key}_file or {key}, not both"),
        (Some(value), None) => value.trim().to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {key}_file {}", path.display()))?
            .trim()
            .to_owned(),
        (None, None) => {
            anyhow::bail!("payment.provider = stripe needs {key}: set {env}")
        }
    };
    if secret.is_empty() {
        anyhow::bail!("{key} is empty: set {env}");
    }
    Ok(secret)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpiryConfig {
    pub sweep_interval_seconds: u64,
    /// Turn on keyspace events for expired keys at start (`CONFIG SET`).
    pub keyspace_events: bool,
    /// The wait after an order's first re-report of a decided payment; doubled each time.
    pub rereport_backoff_seconds: u64,
    /// The cap of that doubling.
    pub rereport_backoff_max_seconds: u64,
}

/// Draw sales (design/draw.md "Storage, config").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrawConfig {
    /// The draw leader's period: freeze, reveal, lapse and promote.
    pub tick_ms: u64,
    /// How long the entries' digest is public before the seed is revealed.
    pub reveal_delay_seconds: u64,
    /// The base of the link in winners' mails (`{public_url}/w/{id}`).
    pub public_url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadtestConfig {
    /// `dropline loadtest seed` runs only when this is true.
    pub allow: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Slack-compatible incoming webhook; empty or absent = no alerts.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// The same alert (kind and subject) is sent again at most this often.
    pub repeat_after_seconds: u64,
    /// An open sale with buyers waiting and no admission for this long is stalled.
    pub stall_after_seconds: u64,
    /// Share of 5xx answers (0 to 1) over one check window that raises an error-rate alert.
    pub error_rate: f64,
    /// Fewer requests than this in a window raise nothing.
    pub error_rate_min_requests: u64,
    pub check_interval_seconds: u64,
    /// Per webhook call.
    pub timeout_seconds: u64,
}

/// Where the configuration comes from, besides the built-in defaults.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// An explicit file (`--config`); must exist. Without it `dropline.toml` is read if present.
    pub file: Option<PathBuf>,
    /// Read `DROPLINE_*` variables from the process environment.
    pub env: bool,
    /// Extra `(key, value)` pairs applied last, in env form without the prefix
    /// (`"REDIS__KEY_PREFIX"`). Used by tests to isolate without touching the process env.
    pub overrides: Vec<(String, String)>,
}

impl Sources {
    /// The usual sources of a process: `--config`/`DROPLINE_CONFIG` or `dropline.toml`, then env.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        let file = file.or_else(|| std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from));
        Self {
            file,
            env: true,
            overrides: Vec::new(),
        }
    }
}

impl Config {
    /// Loads and validates the configuration from `sources`.
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS_TOML));
        match &sources.file {
            Some(path) => {
                check_readable(path)?;
                figment = figment.merge(Toml::file_exact(path));
            }
            None => {
                let default_path = Path::new("dropline.toml");
                if default_path.is_file() {
                    figment = figment.merge(Toml::file_exact(default_path));
                }
            }
        }
        if sources.env {
            figment = figment.merge(Env::prefixed("DROPLINE_").ignore(&["config"]).split("__"));
        }
        for (key, value) in &sources.overrides {
            let key = key.to_ascii_lowercase().replace("__", ".");
            figment = figment.merge(figment::providers::Serialized::global(
                &key,
                parse_env_value(value),
            ));
        }
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Parse(render_figment_error(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// The defaults alone (validated), for tests and tools.
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::load(&Sources::default())
    }

    /// Checks values that types alone cannot: addresses, URL schemes, ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        parse_listen("waitroom.listen", &self.waitroom.listen)?;
        parse_listen("api.listen", &self.api.listen)?;
        parse_listen("workers.metrics_listen", &self.workers.metrics_listen)?;
        positive(
            "waitroom.abandon_after_seconds",
            self.waitroom.abandon_after_seconds,
        )?;
        // A skipped place's last-poll stamp is Redis seconds mod 65536 (waitroom/src/queue.rs):
        // the grace must stay well inside that wrap, and at least abandon_after (a place must
        // not be lost before it can even be skipped).
        if self.waitroom.return_grace_seconds < self.waitroom.abandon_after_seconds
            || self.waitroom.return_grace_seconds > MAX_RETURN_GRACE_SECONDS
        {
            return Err(ConfigError::invalid(
                "waitroom.return_grace_seconds",
                format!(
                    "must be between waitroom.abandon_after_seconds ({}) and {MAX_RETURN_GRACE_SECONDS} \
                     (12 h), got {}",
                    self.waitroom.abandon_after_seconds, self.waitroom.return_grace_seconds
                ),
            ));
        }
        positive("draw.tick_ms", self.draw.tick_ms)?;
        if self.draw.reveal_delay_seconds > 86_400 {
            return Err(ConfigError::invalid(
                "draw.reveal_delay_seconds",
                "at most 86400 (a day)",
            ));
        }
        match url::Url::parse(&self.draw.public_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => {
                return Err(ConfigError::invalid(
                    "draw.public_url",
                    format!("expected an http(s) URL, got `{}`", self.draw.public_url),
                ));
            }
        }
        positive(
            "waitroom.outage_retry_after_seconds",
            self.waitroom.outage_retry_after_seconds,
        )?;
        positive(
            "waitroom.code_failures_per_user_per_hour",
            self.waitroom.code_failures_per_user_per_hour,
        )?;
        positive(
            "waitroom.admission_window_seconds",
            self.waitroom.admission_window_seconds,
        )?;
        positive("waitroom.admit_tick_ms", self.waitroom.admit_tick_ms)?;
        positive(
            "waitroom.eta_rate_window_seconds",
            self.waitroom.eta_rate_window_seconds,
        )?;
        positive(
            "waitroom.pow_challenge_ttl_seconds",
            self.waitroom.pow_challenge_ttl_seconds,
        )?;
        positive("waitroom.lease_seconds", self.waitroom.lease_seconds)?;
        positive("waitroom.reap_interval_ms", self.waitroom.reap_interval_ms)?;
        for (key, value) in [
            (
                "waitroom.join_per_ip_per_minute",
                self.waitroom.join_per_ip_per_minute,
            ),
            (
                "waitroom.join_per_user_per_minute",
                self.waitroom.join_per_user_per_minute,
            ),
            (
                "waitroom.status_per_ip_per_minute",
                self.waitroom.status_per_ip_per_minute,
            ),
            (
                "waitroom.status_per_user_per_minute",
                self.waitroom.status_per_user_per_minute,
            ),
        ] {
            positive(key, u64::from(value))?;
        }
        if self.waitroom.lease_seconds.saturating_mul(1000) <= self.waitroom.admit_tick_ms {
            return Err(ConfigError::invalid(
                "waitroom.lease_seconds",
                "must be longer than one admission tick (waitroom.admit_tick_ms)",
            ));
        }
        positive(
            "auth.access_token_ttl_seconds",
            self.auth.access_token_ttl_seconds,
        )?;
        positive(
            "auth.refresh_token_ttl_seconds",
            self.auth.refresh_token_ttl_seconds,
        )?;
        positive(
            "auth.purge_interval_seconds",
            self.auth.purge_interval_seconds,
        )?;
        file_or_value(
            "auth.signing_key",
            &self.auth.signing_key_file,
            &self.auth.signing_key,
        )?;
        if self.auth.argon2_memory_kib < 8 * self.auth.argon2_parallelism.max(1)
            || self.auth.argon2_iterations == 0
            || self.auth.argon2_parallelism == 0
        {
            return Err(ConfigError::invalid(
                "auth.argon2_memory_kib",
                "argon2 needs iterations >= 1, parallelism >= 1 and memory >= 8 KiB per lane",
            ));
        }
        positive(
            "auth.email_code_ttl_seconds",
            self.auth.email_code_ttl_seconds,
        )?;
        positive(
            "auth.email_code_max_attempts",
            u64::from(self.auth.email_code_max_attempts),
        )?;
        positive(
            "auth.email_codes_per_hour",
            u64::from(self.auth.email_codes_per_hour),
        )?;
        file_or_value(
            "passes.signing_key",
            &self.passes.signing_key_file,
            &self.passes.signing_key,
        )?;
        file_or_value("pii.key", &self.pii.key_file, &self.pii.key)?;
        if self.pii.key_id == 0 {
            return Err(ConfigError::invalid("pii.key_id", "expected 1 to 255"));
        }
        if let Some(key) = &self.pii.key {
            pii_key::parse_key(key).map_err(|e| ConfigError::invalid("pii.key", e))?;
        }
        for entry in &self.pii.previous_keys {
            pii_key::parse_previous(entry)
                .map_err(|e| ConfigError::invalid("pii.previous_keys", e))?;
        }
        positive(
            "limits.login_per_ip_per_minute",
            u64::from(self.limits.login_per_ip_per_minute),
        )?;
        positive(
            "limits.login_per_email_per_minute",
            u64::from(self.limits.login_per_email_per_minute),
        )?;
        positive(
            "limits.signup_per_ip_per_minute",
            u64::from(self.limits.signup_per_ip_per_minute),
        )?;
        positive(
            "limits.verify_per_ip_per_minute",
            u64::from(self.limits.verify_per_ip_per_minute),
        )?;
        positive(
            "limits.verify_per_email_per_minute",
            u64::from(self.limits.verify_per_email_per_minute),
        )?;
        positive(
            "limits.orders_per_user_per_minute",
            u64::from(self.limits.orders_per_user_per_minute),
        )?;
        positive(
            "limits.pay_per_user_per_minute",
            u64::from(self.limits.pay_per_user_per_minute),
        )?;
        positive(
            "limits.resend_interval_seconds",
            self.limits.resend_interval_seconds,
        )?;
        positive("cache.ttl_seconds", self.cache.ttl_seconds)?;
        if self.cache.jitter_percent > 50 {
            return Err(ConfigError::invalid(
                "cache.jitter_percent",
                "expected 0 to 50",
            ));
        }
        if self.http.body_limit_bytes == 0 {
            return Err(ConfigError::invalid(
                "http.body_limit_bytes",
                "expected a positive number of bytes",
            ));
        }
        positive(
            "http.request_timeout_seconds",
            self.http.request_timeout_seconds,
        )?;
        positive(
            "http.header_read_timeout_seconds",
            self.http.header_read_timeout_seconds,
        )?;
        positive("http.idle_timeout_seconds", self.http.idle_timeout_seconds)?;
        positive("http.max_connections", self.http.max_connections as u64)?;

        check_scheme("mysql.url", &self.mysql.url, &["mysql", "mariadb"])?;
        let mysql_url = url::Url::parse(&self.mysql.url)
            .map_err(|e| ConfigError::invalid("mysql.url", format!("not a URL: {e}")))?;
        let db = mysql_url.path().trim_start_matches('/');
        if db.is_empty() || !db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError::invalid(
                "mysql.url",
                "expected a database name of letters, digits and `_` in the path, e.g. mysql://root@127.0.0.1:3306/dropline",
            ));
        }
        if self.mysql.max_connections == 0 {
            return Err(ConfigError::invalid(
                "mysql.max_connections",
                "expected at least 1",
            ));
        }
        positive(
            "mysql.connect_timeout_seconds",
            self.mysql.connect_timeout_seconds,
        )?;

        check_scheme(
            "redis.url",
            &self.redis.url,
            &["redis", "rediss", "redis+cluster", "redis+sentinel"],
        )?;
        RedisTarget::parse(&self.redis.url)
            .map_err(|e| ConfigError::invalid("redis.url", e.to_string()))?;
        let prefix = &self.redis.key_prefix;
        if prefix.is_empty()
            || prefix.len() > 64
            || prefix.contains(['{', '}', ':', ' '])
            || !prefix.is_ascii()
        {
            return Err(ConfigError::invalid(
                "redis.key_prefix",
                "expected 1-64 ASCII characters without `{`, `}`, `:` or spaces",
            ));
        }
        if self.redis.pool_size == 0 || self.redis.pool_size > 256 {
            return Err(ConfigError::invalid("redis.pool_size", "expected 1 to 256"));
        }
        positive(
            "redis.connect_timeout_seconds",
            self.redis.connect_timeout_seconds,
        )?;
        positive("redis.command_timeout_ms", self.redis.command_timeout_ms)?;
        check_ca_file(
            "redis.ca_file",
            self.redis.ca_file.as_deref(),
            &self.redis.url,
            "rediss://",
        )?;

        check_scheme("amqp.url", &self.amqp.url, &["amqp", "amqps"])?;
        check_ca_file(
            "amqp.ca_file",
            self.amqp.ca_file.as_deref(),
            &self.amqp.url,
            "amqps://",
        )?;
        let amqp_prefix = &self.amqp.prefix;
        if amqp_prefix.is_empty()
            || amqp_prefix.len() > 100
            || !amqp_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(ConfigError::invalid(
                "amqp.prefix",
                "expected 1-100 characters of letters, digits, `-`, `_` or `.`",
            ));
        }
        positive(
            "amqp.connect_timeout_seconds",
            self.amqp.connect_timeout_seconds,
        )?;
        if self.workers.confirm_prefetch == 0 {
            return Err(ConfigError::invalid(
                "workers.confirm_prefetch",
                "expected at least 1",
            ));
        }
        if self.workers.payment_prefetch == 0 {
            return Err(ConfigError::invalid(
                "workers.payment_prefetch",
                "expected at least 1",
            ));
        }
        if self.amqp.prefetch == 0 {
            return Err(ConfigError::invalid("amqp.prefetch", "expected at least 1"));
        }
        if self.amqp.max_attempts == 0 {
            return Err(ConfigError::invalid(
                "amqp.max_attempts",
                "expected at least 1",
            ));
        }
        if self.amqp.delivery_limit == 0 {
            return Err(ConfigError::invalid(
                "amqp.delivery_limit",
                "expected at least 1",
            ));
        }

        if self.smtp.host.trim().is_empty() {
            return Err(ConfigError::invalid("smtp.host", "expected a host name"));
        }
        if self.smtp.port == 0 {
            return Err(ConfigError::invalid("smtp.port", "expected 1 to 65535"));
        }
        if self.smtp.user.is_some() != self.smtp.password.is_some() {
            return Err(ConfigError::invalid(
                "smtp.user",
                "smtp.user and smtp.password must be set together",
            ));
        }
        if !self.smtp.from.contains('@') {
            return Err(ConfigError::invalid(
                "smtp.from",
                "expected a mailbox such as `Dropline <no-reply@example.com>`",
            ));
        }

        positive("payment.timeout_seconds", self.payment.timeout_seconds)?;
        self.validate_stripe()?;
        let rate = self.payment.sim_failure_rate;
        if !(0.0..=1.0).contains(&rate) {
            return Err(ConfigError::invalid(
                "payment.sim_failure_rate",
                format!("expected 0.0 to 1.0, got {rate}"),
            ));
        }
        positive(
            "expiry.sweep_interval_seconds",
            self.expiry.sweep_interval_seconds,
        )?;
        positive(
            "expiry.rereport_backoff_seconds",
            self.expiry.rereport_backoff_seconds,
        )?;
        if self.expiry.rereport_backoff_max_seconds < self.expiry.rereport_backoff_seconds {
            return Err(ConfigError::invalid(
                "expiry.rereport_backoff_max_seconds",
                format!(
                    "expected at least expiry.rereport_backoff_seconds ({}), got {}",
                    self.expiry.rereport_backoff_seconds, self.expiry.rereport_backoff_max_seconds
                ),
            ));
        }
        self.validate_alerts()
    }

    /// `[payment.stripe]`: checked whatever the provider, so a typo shows before a switch.
    fn validate_stripe(&self) -> Result<(), ConfigError> {
        let stripe = &self.payment.stripe;
        check_scheme(
            "payment.stripe.api_base",
            &stripe.api_base,
            &["https", "http"],
        )?;
        let base = url::Url::parse(&stripe.api_base)
            .map_err(|e| ConfigError::invalid("payment.stripe.api_base", e.to_string()))?;
        if base.scheme() == "http" && !is_loopback_host(&base) {
            return Err(ConfigError::invalid(
                "payment.stripe.api_base",
                "http:// only to a loopback host (a local test server); use https://",
            ));
        }
        file_or_value(
            "payment.stripe.secret_key",
            &stripe.secret_key_file,
            &stripe.secret_key,
        )?;
        file_or_value(
            "payment.stripe.webhook_secret",
            &stripe.webhook_secret_file,
            &stripe.webhook_secret,
        )?;
        if stripe.api_version.trim().is_empty() {
            return Err(ConfigError::invalid(
                "payment.stripe.api_version",
                "expected a Stripe API version such as 2024-06-20",
            ));
        }
        if let Some(url) = stripe.return_url.as_deref().filter(|u| !u.is_empty()) {
            check_scheme("payment.stripe.return_url", url, &["http", "https"])?;
        }
        check_stripe_js_url(&stripe.js_url)?;
        if let Some(key) = stripe.publishable_key.as_deref()
            && !is_publishable_key(key)
        {
            return Err(ConfigError::invalid(
                "payment.stripe.publishable_key",
                "expected a publishable key such as pk_live_… (letters, digits and `_`)",
            ));
        }
        positive("payment.stripe.timeout_ms", stripe.timeout_ms)
    }

    fn validate_alerts(&self) -> Result<(), ConfigError> {
        let alerts = &self.alerts;
        if let Some(url) = alerts.webhook_url.as_deref().filter(|u| !u.is_empty()) {
            check_scheme("alerts.webhook_url", url, &["http", "https"])?;
            url::Url::parse(url)
                .map_err(|e| ConfigError::invalid("alerts.webhook_url", e.to_string()))?;
        }
        positive("alerts.repeat_after_seconds", alerts.repeat_after_seconds)?;
        positive("alerts.stall_after_seconds", alerts.stall_after_seconds)?;
        positive(
            "alerts.check_interval_seconds",
            alerts.check_interval_seconds,
        )?;
        positive("alerts.timeout_seconds", alerts.timeout_seconds)?;
        let rate = alerts.error_rate;
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(ConfigError::invalid(
                "alerts.error_rate",
                format!("expected more than 0.0, up to 1.0, got {rate}"),
            ));
        }
        Ok(())
    }

    /// The resolved log format: configured, else human on a terminal and JSON otherwise.
    pub fn log_format(&self) -> LogFormat {
        use std::io::IsTerminal;
        self.log_format.unwrap_or_else(|| {
            if std::io::stderr().is_terminal() {
                LogFormat::Human
            } else {
                LogFormat::Json
            }
        })
    }

    pub fn waitroom_listen(&self) -> SocketAddr {
        // validated in `validate`
        parse_listen("waitroom.listen", &self.waitroom.listen).unwrap_or(FALLBACK_ADDR)
    }

    pub fn api_listen(&self) -> SocketAddr {
        parse_listen("api.listen", &self.api.listen).unwrap_or(FALLBACK_ADDR)
    }

    pub fn workers_metrics_listen(&self) -> SocketAddr {
        parse_listen("workers.metrics_listen", &self.workers.metrics_listen)
            .unwrap_or(FALLBACK_ADDR)
    }
}

const FALLBACK_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

impl HttpConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

/// Parses a bind address; `":port"` means every interface.
pub fn parse_listen(key: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    let candidate = if let Some(port) = value.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else {
        value.to_owned()
    };
    candidate.parse().map_err(|_| {
        ConfigError::invalid(
            key,
            format!(
                "expected host:port such as 127.0.0.1:8080 (port 0 = any free port), got `{value}`"
            ),
        )
    })
}

fn positive(key: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(ConfigError::invalid(key, "expected a positive number"))
    } else {
        Ok(())
    }
}

/// A secret given either inline (`key`) or as a file (`key` + `_file`): not both.
fn file_or_value<F, V>(
    key: &'static str,
    file: &Option<F>,
    value: &Option<V>,
) -> Result<(), ConfigError> {
    if file.is_some() && value.is_some() {
        return Err(ConfigError::invalid(
            key,
            format!("set {key}_file or {key}, not both"),
        ));
    }
    Ok(())
}

/// `payment.stripe.js_url`: the page loads a script from it, so `https://` (or `http://` to a
/// loopback host, for a local mock), a host, no credentials and no fragment.
fn check_stripe_js_url(value: &str) -> Result<(), ConfigError> {
    const KEY: &str = "payment.stripe.js_url";
    check_scheme(KEY, value, &["https", "http"])?;
    let url = url::Url::parse(value).map_err(|e| ConfigError::invalid(KEY, e.to_string()))?;
    let why = if url.host_str().is_none_or(str::is_empty) {
        Some("no host")
    } else if url.scheme() == "http" && !is_loopback_host(&url) {
        Some("http:// only to a loopback host (a local mock of Stripe.js); use https://")
    } else if !url.username().is_empty() || url.password().is_some() {
        Some("no credentials in the URL")
    } else if url.fragment().is_some() {
        Some("no fragment")
    } else {
        None
    };
    match why {
        Some(why) => Err(ConfigError::invalid(KEY, why)),
        None => Ok(()),
    }
}

/// `pk_` and 1 to 255 letters, digits or `_` (Stripe's publishable keys).
pub fn is_publishable_key(key: &str) -> bool {
    key.strip_prefix("pk_").is_some_and(|rest| {
        (1..=255).contains(&rest.len())
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// `localhost`, `127.0.0.0/8` or `::1`.
fn is_loopback_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn check_scheme(key: &'static str, value: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let scheme = value.split_once("://").map(|(s, _)| s);
    match scheme {
        Some(s) if schemes.contains(&s) => Ok(()),
        _ => Err(ConfigError::invalid(
            key,
            format!(
                "expected a URL starting with {}, got `{}`",
                schemes
                    .iter()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(" or "),
                redact_url(value)
            ),
        )),
    }
}

/// A CA file (`redis.ca_file`, `amqp.ca_file`): only with a TLS URL, and readable PEM with at
/// least one certificate, so a typo stops the start instead of the first connection.
fn check_ca_file(
    key: &'static str,
    path: Option<&Path>,
    url: &str,
    tls_scheme: &str,
) -> Result<(), ConfigError> {
    let Some(path) = path else {
        return Ok(());
    };
    if !url.starts_with(tls_scheme) {
        return Err(ConfigError::invalid(
            key,
            format!(
                "is set ({}) but the URL `{}` does not start with {tls_scheme}: the CA is only used for TLS",
                path.display(),
                redact_url(url)
            ),
        ));
    }
    crate::clients::tls::read_ca_file(path).map_err(|e| ConfigError::invalid(key, e))?;
    Ok(())
}

fn check_readable(path: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(ConfigError::File {
            path: path.to_owned(),
            reason: "not a regular file".into(),
        }),
        Err(e) => Err(ConfigError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Parses an override value the way figment parses env values (numbers, bools, else string).
fn parse_env_value(value: &str) -> figment::value::Value {
    value
        .parse::<figment::value::Value>()
        .unwrap_or_else(|_| figment::value::Value::from(value.to_owned()))
}

fn render_figment_error(error: figment::Error) -> String {
    // One line per problem: "<what> for key `a.b` (from <source>)".
    error
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                String::new()
            } else {
                format!(" for key `{}`", e.path.join("."))
            };
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(src) => format!(" (from {} {src})", m.name),
                    None => format!(" (from {})", m.name),
                })
                .unwrap_or_default();
            format!("{}{key}{source}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Hides the password of a URL (also the comma-separated cluster form) for logs and messages.
pub fn redact_url(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_owned();
    };
    let Some(at) = rest.rfind('@') else {
        return value.to_owned();
    };
    let (userinfo, hosts) = rest.split_at(at);
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{hosts}"),
        None => value.to_owned(),
    }
}

macro_rules! redacted_debug {
    ($ty:ty, $($field:ident),*) => {
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("url", &redact_url(&self.url))
                    $(.field(stringify!($field), &self.$field))*
                    .finish()
            }
        }
    };
}
redacted_debug!(
    MysqlConfig,
    max_connections,
    connect_timeout_seconds,
    run_migrations
);
redacted_debug!(
    RedisConfig,
    key_prefix,
    pool_size,
    connect_timeout_seconds,
    command_timeout_ms,
    ca_file
);
redacted_debug!(
    AmqpConfig,
    prefix,
    connect_timeout_seconds,
    prefetch,
    max_attempts,
    retry_delay_ms,
    delivery_limit,
    ca_file
);

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("from", &self.from)
            .finish()
    }
}

/// The key material of `pii.key` and `pii.previous_keys`: parsed here so that a bad key is a
/// configuration error at load, and used by the api's cipher (`dropline_api::pii`).
pub mod pii_key {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    /// Parses a base64 key of exactly 32 bytes.
    pub fn parse_key(text: &str) -> Result<[u8; 32], String> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| "expected 32 bytes in standard base64 (`openssl rand -base64 32`)")?;
        bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("expected 32 bytes, got {}", b.len()))
    }

    /// Parses a retired key entry `"id:base64key"`.
    pub fn parse_previous(entry: &str) -> Result<(u8, [u8; 32]), String> {
        let (id, key) = entry
            .split_once(':')
            .ok_or("expected \"id:base64key\", e.g. \"1:q2Fz...\"")?;
        let id: u8 = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id > 0)
            .ok_or("the key id must be 1 to 255")?;
        Ok((id, parse_key(key)?))
    }

    /// 32 random bytes.
    pub fn random_key() -> [u8; 32] {
        let mut key = [0u8; 32];
        rand::Rng::fill(&mut rand::rng(), &mut key);
        key
    }

    /// A random key in the base64 form `pii.key` takes.
    pub fn random_key_base64() -> String {
        STANDARD.encode(random_key())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn keys_are_parsed_strictly() {
            assert!(parse_key(&random_key_base64()).is_ok());
            assert!(parse_key("c2hvcnQ=").is_err());
            assert!(parse_key("not base64!").is_err());
            assert!(parse_previous(&format!("3:{}", random_key_base64())).is_ok());
            assert!(parse_previous(&format!("0:{}", random_key_base64())).is_err());
            assert!(parse_previous(&random_key_base64()).is_err());
        }
    }
}

/// Where Redis lives, parsed from `redis.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `redis://[user:pass@]host[:port][/db]`, or `rediss://` for TLS.
    Standalone(String),
    /// `redis+cluster://[user:pass@]host:port,host:port,...`
    Cluster {
        nodes: Vec<(String, u16)>,
        username: Option<String>,
        password: Option<String>,
    },
    /// `redis+sentinel://[user:pass@]host:port,host:port,.../<master-name>[/db]`: the
    /// Sentinels to ask where the primary of `master` is; the client follows it through a
    /// failover. The credentials are the data nodes' (Sentinels without a password).
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master: String,
        db: Option<u8>,
        username: Option<String>,
        password: Option<String>,
    },
}

/// `rediss://...` as `redis://...`: fred would build its own TLS connector from the scheme
/// (platform roots only); [`RedisTarget::fred_config`] sets Dropline's instead.
fn without_tls_scheme(url: &str) -> String {
    match url.strip_prefix("rediss://") {
        Some(rest) => format!("redis://{rest}"),
        None => url.to_owned(),
    }
}

/// `[user:pass@]rest` of a multi-host URL: (username, password, rest).
fn split_credentials(rest: &str) -> (Option<String>, Option<String>, &str) {
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (Some(auth), hosts),
        None => (None, rest),
    };
    let (username, password) = match auth {
        None => (None, None),
        Some(a) => match a.split_once(':') {
            Some((u, p)) => (
                (!u.is_empty()).then(|| u.to_owned()),
                (!p.is_empty()).then(|| p.to_owned()),
            ),
            None => (None, Some(a.to_owned())),
        },
    };
    (username, password, hosts)
}

/// `host:port,host:port,...` (at least one), `what` naming them in errors.
fn host_list(hosts: &str, what: &str) -> anyhow::Result<Vec<(String, u16)>> {
    let mut nodes = Vec::new();
    for node in hosts.split(',').filter(|n| !n.is_empty()) {
        let (host, port) = node
            .rsplit_once(':')
            .with_context(|| format!("{what} `{node}` needs host:port"))?;
        anyhow::ensure!(!host.is_empty(), "{what} `{node}` has no host");
        let port: u16 = port
            .parse()
            .with_context(|| format!("{what} `{node}` has a bad port"))?;
        nodes.push((host.to_owned(), port));
    }
    anyhow::ensure!(!nodes.is_empty(), "the URL names no {what}");
    Ok(nodes)
}

impl RedisTarget {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let (username, password, hosts) = split_credentials(rest);
            let nodes = host_list(hosts.trim_end_matches('/'), "cluster node")?;
            Ok(Self::Cluster {
                nodes,
                username,
                password,
            })
        } else if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            let (username, password, rest) = split_credentials(rest);
            let (hosts, path) = rest
                .split_once('/')
                .context("redis+sentinel:// needs /<master-name> after the Sentinels")?;
            let sentinels = host_list(hosts, "Sentinel")?;
            let (master, db) = match path.trim_end_matches('/').split_once('/') {
                Some((master, db)) => (
                    master,
                    Some(
                        db.parse::<u8>()
                            .with_context(|| format!("bad database number `{db}`"))?,
                    ),
                ),
                None => (path.trim_end_matches('/'), None),
            };
            anyhow::ensure!(
                !master.is_empty()
                    && master
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "redis+sentinel:// needs a master name of letters, digits, `-`, `_` or `.`"
            );
            Ok(Self::Sentinel {
                sentinels,
                master: master.to_owned(),
                db,
                username,
                password,
            })
        } else if url.starts_with("redis://") || url.starts_with("rediss://") {
            fred::types::config::Config::from_url(&without_tls_scheme(url))
                .map_err(|e| anyhow::anyhow!("{}", e.details()))?;
            Ok(Self::Standalone(url.to_owned()))
        } else {
            anyhow::bail!("expected redis://, rediss://, redis+cluster:// or redis+sentinel://")
        }
    }

    /// Whether the connection is TLS (`rediss://`).
    pub fn uses_tls(&self) -> bool {
        matches!(self, Self::Standalone(url) if url.starts_with("rediss://"))
    }

    /// The fred client configuration for this target. A `rediss://` target gets a rustls
    /// connector trusting the platform's roots and the certificates of `ca_file`
    /// (`redis.ca_file`); the server name checked is the URL's host.
    pub fn fred_config(
        &self,
        ca_file: Option<&Path>,
    ) -> anyhow::Result<fred::types::config::Config> {
        use fred::types::config::{Config, Server, ServerConfig, TlsConnector};
        Ok(match self {
            Self::Standalone(url) => {
                let mut config = Config::from_url(&without_tls_scheme(url))
                    .map_err(|e| anyhow::anyhow!("{}", e.details()))?;
                if self.uses_tls() {
                    let tls = crate::clients::tls::client_config("redis.ca_file", ca_file)?;
                    config.tls = Some(TlsConnector::from(tls).into());
                }
                config
            }
            Self::Cluster {
                nodes,
                username,
                password,
            } => Config {
                server: ServerConfig::new_clustered(nodes.clone()),
                username: username.clone(),
                password: password.clone(),
                ..Default::default()
            },
            Self::Sentinel {
                sentinels,
                master,
                db,
                username,
                password,
            } => Config {
                server: ServerConfig::Sentinel {
                    hosts: sentinels
                        .iter()
                        .map(|(host, port)| Server::new(host.as_str(), *port))
                        .collect(),
                    service_name: master.clone(),
                },
                database: *db,
                username: username.clone(),
                password: password.clone(),
                ..Default::default()
            },
        })
    }
}

#[cfg(test)]
mod redis_target_tests {
    use super::*;

    #[test]
    fn sentinel_urls_name_the_sentinels_and_the_master() -> anyhow::Result<()> {
        assert_eq!(
            RedisTarget::parse("redis+sentinel://10.0.0.1:26379,sentinel-b:26380/shop")?,
            RedisTarget::Sentinel {
                sentinels: vec![("10.0.0.1".into(), 26379), ("sentinel-b".into(), 26380)],
                master: "shop".into(),
                db: None,
                username: None,
                password: None,
            }
        );
        assert_eq!(
            RedisTarget::parse("redis+sentinel://app:s3cret@h:1/mymaster/2")?,
            RedisTarget::Sentinel {
                sentinels: vec![("h".into(), 1)],
                master: "mymaster".into(),
                db: Some(2),
                username: Some("app".into()),
                password: Some("s3cret".into()),
            }
        );
        for bad in [
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/",
            "redis+sentinel:///m",
            "redis+sentinel://h/m",
            "redis+sentinel://h:x/m",
            "redis+sentinel://h:1/m m",
            "redis+sentinel://h:1/m/300",
        ] {
            assert!(RedisTarget::parse(bad).is_err(), "{bad} accepted");
        }
        let config = RedisTarget::parse("redis+sentinel://h:1,g:2/m/1")?.fred_config(None)?;
        assert_eq!(config.database, Some(1));
        assert!(matches!(
            config.server,
            fred::types::config::ServerConfig::Sentinel { ref service_name, ref hosts } if service_name == "m" && hosts.len() == 2
        ));
        Ok(())
    }
}

#[cfg(test)]
mod file_or_value_tests {
    use super::*;

    #[test]
    fn a_secret_set_both_inline_and_as_a_file_is_refused_naming_both_keys() -> anyhow::Result<()> {
        let defaults = Config::load(&Sources::default())?;
        let file = Some(PathBuf::from("/run/secrets/key"));
        let value = Some("inline".to_owned());
        let mut auth = defaults.clone();
        (auth.auth.signing_key_file, auth.auth.signing_key) = (file.clone(), value.clone());
        let mut passes = defaults.clone();
        (passes.passes.signing_key_file, passes.passes.signing_key) = (file.clone(), value.clone());
        let mut pii = defaults;
        (pii.pii.key_file, pii.pii.key) = (file, value);
        for (config, message) in [
            (
                auth,
                "config key `auth.signing_key`: set auth.signing_key_file or auth.signing_key, not both",
            ),
            (
                passes,
                "config key `passes.signing_key`: set passes.signing_key_file or passes.signing_key, not both",
            ),
            (
                pii,
                "config key `pii.key`: set pii.key_file or pii.key, not both",
            ),
        ] {
            let error = config.validate().err().map(|e| e.to_string());
            assert_eq!(error.as_deref(), Some(message));
        }
        Ok(())
    }
}
