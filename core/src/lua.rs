//! The Lua script registry: every `lua/*.lua` embedded with `include_str!`, run by `EVALSHA`.
//!
//! A script's SHA-1 is computed at first use. When Redis answers `NOSCRIPT` (restart, failover,
//! `SCRIPT FLUSH`, or a Cluster node that never saw the script) the call falls back to `EVAL`
//! with the body, which runs it and caches it on that node, so the next call is an `EVALSHA`
//! again. Each script's header comment is its contract: KEYS, ARGV and return values.

use std::sync::OnceLock;

use fred::interfaces::LuaInterface;
use fred::types::{FromValue, MultipleKeys, MultipleValues};
use sha1::{Digest, Sha1};

use crate::redis::Redis;

/// One embedded Lua script.
#[derive(Debug)]
pub struct Script {
    name: &'static str,
    body: &'static str,
    sha: OnceLock<String>,
}

impl Script {
    pub const fn new(name: &'static str, body: &'static str) -> Self {
        Self {
            name,
            body,
            sha: OnceLock::new(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn body(&self) -> &'static str {
        self.body
    }

    /// The script's SHA-1, as Redis names it.
    pub fn sha(&self) -> &str {
        self.sha
            .get_or_init(|| hex::encode(Sha1::digest(self.body.as_bytes())))
    }

    /// Runs the script: `EVALSHA`, and `EVAL` with the body when the server answers `NOSCRIPT`.
    pub async fn run<R>(
        &self,
        redis: &Redis,
        keys: impl Into<MultipleKeys> + Send,
        args: impl TryInto<MultipleValues, Error = impl Into<fred::error::Error> + Send> + Send,
    ) -> anyhow::Result<R>
    where
        R: FromValue,
    {
        let keys: MultipleKeys = keys.into();
        let args: MultipleValues = args
            .try_into()
            .map_err(|e| anyhow::anyhow!("script {} arguments: {}", self.name, e.into()))?;
        let pool = redis.pool();
        match pool
            .evalsha::<R, _, _, _>(self.sha(), keys.clone(), args.clone())
            .await
        {
            Err(error) if is_noscript(&error) => {
                metrics::counter!("dropline_lua_noscript_reloads_total", "script" => self.name)
                    .increment(1);
                tracing::debug!(script = self.name, "NOSCRIPT: running with EVAL");
                pool.eval::<R, _, _, _>(self.body, keys, args)
                    .await
                    .map_err(|e| anyhow::anyhow!("script {}: {e}", self.name))
            }
            result => result.map_err(|e| anyhow::anyhow!("script {}: {e}", self.name)),
        }
    }
}

fn is_noscript(error: &fred::error::Error) -> bool {
    error.details().starts_with("NOSCRIPT") || error.to_string().contains("NOSCRIPT")
}

/// Every script of Dropline, by file name.
pub mod scripts {
    use super::Script;

    /// Acquire or renew a leader lease (`lua/lease_acquire.lua`).
    pub static LEASE_ACQUIRE: Script =
        Script::new("lease_acquire", include_str!("../../lua/lease_acquire.lua"));
    /// Give a leader lease up, only if still held (`lua/lease_release.lua`).
    pub static LEASE_RELEASE: Script =
        Script::new("lease_release", include_str!("../../lua/lease_release.lua"));

    /// Arm a sale: write its config hash and stock counters once (`lua/sale_arm.lua`).
    pub static SALE_ARM: Script = Script::new("sale_arm", include_str!("../../lua/sale_arm.lua"));
    /// Read a sale's config, counters and the server clock at once (`lua/sale_view.lua`).
    pub static SALE_VIEW: Script =
        Script::new("sale_view", include_str!("../../lua/sale_view.lua"));

    /// Take stock for a new order: idempotency, sale, admission, limit, stock (`lua/reserve.lua`).
    pub static RESERVE: Script = Script::new("reserve", include_str!("../../lua/reserve.lua"));
    /// HELD → PAYING, deadline moved to the payment timeout (`lua/begin_payment.lua`).
    pub static BEGIN_PAYMENT: Script =
        Script::new("begin_payment", include_str!("../../lua/begin_payment.lua"));
    /// PAYING → PAID (`lua/confirm.lua`).
    pub static CONFIRM: Script = Script::new("confirm", include_str!("../../lua/confirm.lua"));
    /// HELD → EXPIRED / CANCELLED, PAYING → FAILED, stock back once (`lua/release.lua`).
    pub static RELEASE: Script = Script::new("release", include_str!("../../lua/release.lua"));
    /// Live orders past their deadline, for the sweeper (`lua/order_due.lua`).
    pub static ORDER_DUE: Script =
        Script::new("order_due", include_str!("../../lua/order_due.lua"));

    /// All scripts, for preloading and for the test that checks every header.
    pub fn all() -> [&'static Script; 9] {
        [
            &LEASE_ACQUIRE,
            &LEASE_RELEASE,
            &SALE_ARM,
            &SALE_VIEW,
            &RESERVE,
            &BEGIN_PAYMENT,
            &CONFIRM,
            &RELEASE,
            &ORDER_DUE,
        ]
    }
}
