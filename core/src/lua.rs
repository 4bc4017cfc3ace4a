//! The Lua script registry: every `lua/*.lua` embedded with `include_str!`, run by `EVALSHA`.
//!
//! [`lua_script!`](crate::lua_script) embeds a script behind the shared prelude
//! (`lua/lib/prelude.lua`: the clock, number helpers, the sale-state precedence, the order
//! outbox), joined at compile time with `concat!`, so the rules live once in Lua and every
//! script still reaches Redis as one self-contained body.
//!
//! A script's SHA-1 is computed at first use. When Redis answers `NOSCRIPT` (restart, failover,
//! `SCRIPT FLUSH`, or a Cluster node that never saw the script) the call falls back to `EVAL`
//! with the body, which runs it and caches it on that node, so the next call is an `EVALSHA`
//! again. Each script's header comment is its contract: KEYS, ARGV and return values.

use std::sync::OnceLock;

use fred::interfaces::{ClientLike, KeysInterface, LuaInterface};
use fred::types::{ClusterHash, CustomCommand, Expiration};
use fred::types::{FromValue, MultipleKeys, MultipleValues};
use sha1::{Digest, Sha1};

use crate::clients::redis::Redis;

/// `lua/lib/prelude.lua`, the helpers that [`lua_script!`](crate::lua_script) puts in front of
/// every script.
pub const PRELUDE: &str = include_str!("../../lua/lib/prelude.lua");

/// A [`Script`] from `lua/<name>.lua` behind [`PRELUDE`], joined at compile time:
/// `lua_script!("reserve")`. The `lua/` folder is found beside the calling crate's folder.
#[macro_export]
macro_rules! lua_script {
    ($name:literal) => {
        $crate::lua::Script::with_prelude(
            $name,
            concat!(
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../lua/lib/prelude.lua"
                )),
                "\n",
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../lua/",
                    $name,
                    ".lua"
                )),
            ),
        )
    };
}

/// One embedded Lua script.
#[derive(Debug)]
pub struct Script {
    name: &'static str,
    body: &'static str,
    /// Bytes of `body` before the script's own file (the prelude and its newline), or 0.
    prelude: usize,
    sha: OnceLock<String>,
}

impl Script {
    /// A script whose body is all its own (no prelude).
    pub const fn new(name: &'static str, body: &'static str) -> Self {
        Self {
            name,
            body,
            prelude: 0,
            sha: OnceLock::new(),
        }
    }

    /// A script whose body is [`PRELUDE`], a newline and the script's file; made by
    /// [`lua_script!`](crate::lua_script).
    pub const fn with_prelude(name: &'static str, body: &'static str) -> Self {
        Self {
            name,
            body,
            prelude: PRELUDE.len() + 1,
            sha: OnceLock::new(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// What Redis runs (and the SHA-1 names): the prelude, if any, and the script's file.
    pub fn body(&self) -> &'static str {
        self.body
    }

    /// The script's own file, whose header comment is its contract.
    pub fn source(&self) -> &'static str {
        self.body.get(self.prelude..).unwrap_or(self.body)
    }

    /// Checks what every script must be (a test helper for each crate's scripts): its body is
    /// the prelude and its own file when made by [`lua_script!`](crate::lua_script), and its
    /// header comment names KEYS, ARGV and Returns. `Err` says what is missing.
    pub fn check_contract(&self) -> Result<(), String> {
        if self.prelude > 0 && self.body != format!("{PRELUDE}\n{}", self.source()) {
            return Err(format!(
                "{}: does not run behind the shared prelude",
                self.name
            ));
        }
        let header: String = self
            .source()
            .lines()
            .take_while(|l| l.starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        for part in ["KEYS", "ARGV", "Returns"] {
            if !header.contains(part) {
                return Err(format!("{}: header lacks {part}", self.name));
            }
        }
        Ok(())
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

impl Script {
    /// Like [`Script::run`], with `SET set.key set.value PX set.ttl` sent just ahead of the
    /// script in the same round trip (a pipeline on one connection: the SET is applied first,
    /// but the two are not atomic). For a write that must exist before the script's result is
    /// answered and is harmless when the script turns out to refuse. Either failure is an error.
    pub async fn run_after_set<R>(
        &self,
        redis: &Redis,
        set: &PipelinedSet<'_>,
        keys: Vec<String>,
        args: Vec<fred::types::Value>,
    ) -> anyhow::Result<R>
    where
        R: FromValue,
    {
        let pipeline = redis.pool().next().pipeline();
        let ttl_ms = i64::try_from(set.ttl.as_millis()).unwrap_or(i64::MAX);
        let queued: Result<(), fred::error::Error> = async {
            let () = pipeline
                .set(
                    set.key,
                    set.value,
                    Some(Expiration::PX(ttl_ms)),
                    None,
                    false,
                )
                .await?;
            // fred's pipelines have no EVALSHA method; the custom command is the same frame.
            // In a cluster it goes to the slot of its first key (argument 2, after the SHA and
            // the key count), like the script's own keys, which share one slot.
            let mut frame: Vec<fred::types::Value> =
                Vec::with_capacity(2 + keys.len() + args.len());
            frame.push(self.sha().into());
            frame.push(i64::try_from(keys.len()).unwrap_or(i64::MAX).into());
            frame.extend(keys.iter().map(|k| k.as_str().into()));
            frame.extend(args.iter().cloned());
            let evalsha = CustomCommand::new_static("EVALSHA", ClusterHash::Offset(2), false);
            pipeline.custom::<(), _>(evalsha, frame).await
        }
        .await;
        queued.map_err(|e| anyhow::anyhow!("script {}: queueing the pipeline: {e}", self.name))?;
        let mut results = pipeline.try_all::<fred::types::Value>().await.into_iter();
        let (Some(set_result), Some(script_result)) = (results.next(), results.next()) else {
            anyhow::bail!(
                "script {}: the pipeline answered fewer than 2 replies",
                self.name
            );
        };
        set_result.map_err(|e| anyhow::anyhow!("script {}: SET {}: {e}", self.name, set.key))?;
        match script_result {
            Err(error) if is_noscript(&error) => {
                metrics::counter!("dropline_lua_noscript_reloads_total", "script" => self.name)
                    .increment(1);
                tracing::debug!(script = self.name, "NOSCRIPT: running with EVAL");
                redis
                    .pool()
                    .eval::<R, _, _, _>(self.body, keys, args)
                    .await
                    .map_err(|e| anyhow::anyhow!("script {}: {e}", self.name))
            }
            Err(error) => Err(anyhow::anyhow!("script {}: {error}", self.name)),
            Ok(value) => {
                R::from_value(value).map_err(|e| anyhow::anyhow!("script {}: {e}", self.name))
            }
        }
    }
}

/// The `SET key value PX ttl` that [`Script::run_after_set`] sends ahead of a script.
#[derive(Debug, Clone, Copy)]
pub struct PipelinedSet<'a> {
    pub key: &'a str,
    pub value: &'a str,
    pub ttl: std::time::Duration,
}

fn is_noscript(error: &fred::error::Error) -> bool {
    error.details().starts_with("NOSCRIPT") || error.to_string().contains("NOSCRIPT")
}

/// Every script of Dropline, by file name.
pub mod scripts {
    use super::Script;

    /// Acquire or renew a leader lease (`lua/lease_acquire.lua`).
    pub static LEASE_ACQUIRE: Script = crate::lua_script!("lease_acquire");
    /// Give a leader lease up, only if still held (`lua/lease_release.lua`).
    pub static LEASE_RELEASE: Script = crate::lua_script!("lease_release");

    /// Arm a sale: write its config hash and stock counters once (`lua/sale_arm.lua`).
    pub static SALE_ARM: Script = crate::lua_script!("sale_arm");
    /// Read a sale's config, counters and the server clock at once (`lua/sale_view.lua`).
    pub static SALE_VIEW: Script = crate::lua_script!("sale_view");
    /// Change a scheduled sale's creation settings, only while it is still scheduled
    /// (`lua/sale_edit.lua`).
    pub static SALE_EDIT: Script = crate::lua_script!("sale_edit");

    /// Take stock for a new order: idempotency, sale, admission, limit, stock (`lua/reserve.lua`).
    pub static RESERVE: Script = crate::lua_script!("reserve");
    /// HELD → PAYING, deadline moved to the payment timeout (`lua/begin_payment.lua`).
    pub static BEGIN_PAYMENT: Script = crate::lua_script!("begin_payment");
    /// PAYING → PAID (`lua/confirm.lua`).
    pub static CONFIRM: Script = crate::lua_script!("confirm");
    /// HELD → EXPIRED / CANCELLED, PAYING → FAILED, stock back once (`lua/release.lua`).
    pub static RELEASE: Script = crate::lua_script!("release");
    /// Live orders past their deadline, for the sweeper (`lua/order_due.lua`).
    pub static ORDER_DUE: Script = crate::lua_script!("order_due");
    /// A re-report's claim with its backoff, and the parked mark (`lua/rereport.lua`).
    pub static REREPORT: Script = crate::lua_script!("rereport");
    /// Paid units Redis still offers moved from avail to sold, from MySQL's count
    /// (`lua/stock_repair.lua`).
    pub static STOCK_REPAIR: Script = crate::lua_script!("stock_repair");

    /// All scripts, for preloading and for the test that checks every header.
    pub fn all() -> [&'static Script; 12] {
        [
            &LEASE_ACQUIRE,
            &LEASE_RELEASE,
            &SALE_ARM,
            &SALE_VIEW,
            &SALE_EDIT,
            &RESERVE,
            &BEGIN_PAYMENT,
            &CONFIRM,
            &RELEASE,
            &ORDER_DUE,
            &REREPORT,
            &STOCK_REPAIR,
        ]
    }
}
