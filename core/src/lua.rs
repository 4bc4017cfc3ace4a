//! The Lua script registry: every `lua/*.lua` embedded with `include_str!`, run by `EVALSHA`.
//!
//! [`lua_script!`](crate::lua_script) embeds a script behind the shared prelude
//! (`lua/lib/prelude.lua`: the clock, number helpers, the sale-state precedence, the order
//! outbox), joined at compile time with `concat!`, so the rules live once in Lua and every
//! script still reaches Redis as one self-contained body.
//!
//! What Redis runs is the prelude's top-level items the script uses (directly or through another
//! item) followed by the script ([`runnable`]): Lua runs a script's whole body on every call,
//! and making every helper's closure cost each call ~5 µs of Redis's CPU whether or not it was
//! used (BENCHMARKS.md "lua-prelude").
//!
//! A script's SHA-1 is computed at first use. When Redis answers `NOSCRIPT` (restart, failover,
//! `SCRIPT FLUSH`, or a Cluster node that never saw the script) the call falls back to `EVAL`
//! with the body, which runs it and caches it on that node, so the next call is an `EVALSHA`
//! again. Each script's header comment is its contract: KEYS, ARGV and return values.

use std::collections::HashSet;
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
    /// The prelude (when made by [`lua_script!`](crate::lua_script)), a newline and the file.
    text: &'static str,
    /// Bytes of `text` before the script's own file (the prelude and its newline), or 0.
    prelude: usize,
    /// What Redis runs: [`runnable`] of the prelude and the file, made at first use.
    body: OnceLock<String>,
    sha: OnceLock<String>,
}

impl Script {
    /// A script whose body is all its own (no prelude).
    pub const fn new(name: &'static str, body: &'static str) -> Self {
        Self {
            name,
            text: body,
            prelude: 0,
            body: OnceLock::new(),
            sha: OnceLock::new(),
        }
    }

    /// A script whose text is [`PRELUDE`], a newline and the script's file; made by
    /// [`lua_script!`](crate::lua_script).
    pub const fn with_prelude(name: &'static str, text: &'static str) -> Self {
        Self {
            name,
            text,
            prelude: PRELUDE.len() + 1,
            body: OnceLock::new(),
            sha: OnceLock::new(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// What Redis runs (and the SHA-1 names): the prelude's items the script uses, if it has a
    /// prelude ([`runnable`]), and the script's file.
    pub fn body(&self) -> &str {
        if self.prelude == 0 {
            return self.text;
        }
        self.body.get_or_init(|| {
            let prelude = self.text.get(..self.prelude - 1).unwrap_or_default();
            runnable(prelude, self.source())
        })
    }

    /// The script's own file, whose header comment is its contract.
    pub fn source(&self) -> &'static str {
        self.text.get(self.prelude..).unwrap_or(self.text)
    }

    /// Checks what every script must be (a test helper for each crate's scripts): made by
    /// [`lua_script!`](crate::lua_script), it is the shared prelude and its own file, and what
    /// Redis runs is its file behind prelude items only, leaving out none that it names; its
    /// header comment names KEYS, ARGV and Returns. `Err` says what is missing.
    pub fn check_contract(&self) -> Result<(), String> {
        if self.prelude > 0 {
            if self.text != format!("{PRELUDE}\n{}", self.source()) {
                return Err(format!(
                    "{}: does not run behind the shared prelude",
                    self.name
                ));
            }
            let body = self.body();
            if !body.ends_with(self.source()) {
                return Err(format!(
                    "{}: what Redis runs does not end with the file",
                    self.name
                ));
            }
            // Checked apart from runnable's own reasoning: every top-level name of the prelude
            // that a line of code in the body names is defined in the body.
            let used: HashSet<&str> = words(body.split('\n')).collect();
            let kept: HashSet<&str> = defined(body.split('\n')).collect();
            for name in defined(PRELUDE.split('\n')) {
                if used.contains(name) && !kept.contains(name) {
                    return Err(format!(
                        "{}: uses the prelude's `{name}`, which was left out",
                        self.name
                    ));
                }
            }
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
            .get_or_init(|| hex::encode(Sha1::digest(self.body().as_bytes())))
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
                pool.eval::<R, _, _, _>(self.body(), keys, args)
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
                    .eval::<R, _, _, _>(self.body(), keys, args)
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

/// What Redis runs for a script with a prelude: the prelude's top-level items that `source`
/// names, and those that they name in turn, in the prelude's order, then a newline and
/// `source`.
///
/// Redis runs a script's whole body on every call, so every `local function` of the prelude
/// makes a closure each call: ~5 µs of Redis's CPU a call for the whole prelude, 1–2 µs for
/// the part a script uses. An item is a top-level `local` line (a function to its `end`, or a
/// value) with the comment lines before it; a name is used when it appears as a word on a line
/// of code (comment lines do not count; strings do, which only keeps more). Lua reaches a local
/// only by its name, and a prelude item only names the items before it, so nothing used is left
/// out. A prelude this reading does not fit (a long string or comment, `[[`, or a top-level line
/// that is neither `local`, `end` nor a comment) is kept whole.
pub fn runnable(prelude: &str, source: &str) -> String {
    let whole = || format!("{prelude}\n{source}");
    if prelude.contains("[[")
        || prelude.contains("[=")
        || source.contains("[[")
        || source.contains("[=")
    {
        return whole();
    }
    // Items: each starts at a top-level `local` line, with the comment and blank lines just
    // before it.
    let mut items: Vec<Vec<&str>> = Vec::new();
    let mut item: Vec<&str> = Vec::new();
    for line in prelude.split('\n') {
        let top =
            !line.starts_with([' ', '\t']) && !line.trim().is_empty() && !line.starts_with("--");
        if top && !line.starts_with("local ") && !line.starts_with("end") {
            return whole();
        }
        if top && line.starts_with("local ") && item.iter().any(|l| is_code(l)) {
            let mut lead = Vec::new();
            while item.last().is_some_and(|l| !is_code(l)) {
                lead.extend(item.pop());
            }
            lead.reverse();
            items.push(std::mem::replace(&mut item, lead));
        }
        item.push(line);
    }
    items.push(item);
    // Keep, from the last item back, each one that a kept item or the source names (an item
    // defining nothing is kept).
    let mut need: HashSet<&str> = words(source.split('\n')).collect();
    let mut keep = vec![false; items.len()];
    for (i, item) in items.iter().enumerate().rev() {
        let mut names = defined(item.iter().copied()).peekable();
        let wanted = names.peek().is_none() || names.any(|n| need.contains(n));
        if wanted {
            keep[i] = true;
            need.extend(words(item.iter().copied()));
        }
    }
    let mut out = String::with_capacity(prelude.len() + source.len() + 1);
    for (item, _) in items.iter().zip(&keep).filter(|(_, keep)| **keep) {
        out.push_str(&item.join("\n"));
        out.push('\n');
    }
    out.push_str(source);
    out
}

/// A line of Lua that is not blank and not only a comment.
fn is_code(line: &str) -> bool {
    let line = line.trim_start();
    !line.is_empty() && !line.starts_with("--")
}

/// The words (Lua names) on the lines of code among `lines`.
fn words<'a>(lines: impl Iterator<Item = &'a str>) -> impl Iterator<Item = &'a str> {
    lines
        .filter(|l| is_code(l))
        .flat_map(|l| l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
}

/// The names that the top-level `local` lines among `lines` define: `local function f`,
/// `local a, b =`.
fn defined<'a>(lines: impl Iterator<Item = &'a str>) -> impl Iterator<Item = &'a str> {
    lines
        .filter_map(|l| l.strip_prefix("local "))
        .flat_map(|rest| {
            let names = match rest.strip_prefix("function ") {
                Some(f) => f.split('(').next().unwrap_or_default(),
                None => rest.split('=').next().unwrap_or_default(),
            };
            names.split(',').map(str::trim).filter(|n| !n.is_empty())
        })
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

#[cfg(test)]
mod tests {
    use super::runnable;

    const PRELUDE: &str = "-- The prelude.\n\n-- a: one.\nlocal function a() return 1 end\n\n-- b: uses a.\nlocal function b(x)\n  return a() + x\nend\n\nlocal C, D = 3, 4\n-- e: uses C.\nlocal function e()\n  -- d is only named in a comment\n  return C\nend";

    #[test]
    fn a_script_runs_behind_the_prelude_items_it_uses_and_theirs() {
        // b uses a; C and D are one item; e is not named; the leading comment defines nothing.
        let body = runnable(PRELUDE, "return b(D)");
        assert_eq!(
            body,
            "-- The prelude.\n\n-- a: one.\nlocal function a() return 1 end\n\n-- b: uses a.\nlocal function b(x)\n  return a() + x\nend\n\nlocal C, D = 3, 4\nreturn b(D)"
        );
        // Named in a comment only: not used.
        assert!(!runnable(PRELUDE, "-- e()\nreturn 0").contains("function e"));
        // e, and through it C (and D with it).
        let body = runnable(PRELUDE, "return e()");
        assert!(body.contains("local C, D") && body.contains("function e"));
        assert!(!body.contains("function a") && !body.contains("function b"));
        // Named inside a string: kept (more than needed, never less).
        assert!(runnable(PRELUDE, "return 'a'").contains("function a"));
    }

    #[test]
    fn a_prelude_it_cannot_read_is_kept_whole() {
        for prelude in [
            format!("{PRELUDE}\nlocal s = [[\nlocal x = 1\n]]"),
            format!("{PRELUDE}\nif true then\n  a()\nend"),
        ] {
            assert_eq!(
                runnable(&prelude, "return 0"),
                format!("{prelude}\nreturn 0")
            );
        }
        assert_eq!(
            runnable(PRELUDE, "--[[ a long comment ]] return 0"),
            format!("{PRELUDE}\n--[[ a long comment ]] return 0")
        );
    }

    #[test]
    fn every_script_runs_what_it_names() {
        for script in super::scripts::all() {
            assert_eq!(script.check_contract(), Ok(()), "{}", script.name());
            assert!(script.body().len() < script.text.len(), "{}", script.name());
        }
    }
}
