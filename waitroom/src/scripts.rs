//! The waiting room's Lua scripts (`lua/wr_*.lua`), embedded behind the shared prelude
//! (`lua/lib/prelude.lua`, see [`dropline_core::lua_script!`]) and run by SHA through
//! [`dropline_core::lua::Script`]. Each file's header comment is its contract (KEYS, ARGV,
//! returns); [`crate::queue`] is the typed wrapper the rest of the crate uses.

use dropline_core::lua::Script;
use dropline_core::lua_script;

/// Join the queue, or report the existing place (`lua/wr_join.lua`).
pub static WR_JOIN: Script = lua_script!("wr_join");
/// A buyer's state and position; records the poll (`lua/wr_status.lua`).
pub static WR_STATUS: Script = lua_script!("wr_status");
/// Leave the queue, idempotent (`lua/wr_leave.lua`).
pub static WR_LEAVE: Script = lua_script!("wr_leave");
/// One admission tick (`lua/wr_admit.lua`).
pub static WR_ADMIT: Script = lua_script!("wr_admit");
/// Lapsed admissions and silent waiters, in bounded batches (`lua/wr_reap.lua`).
pub static WR_REAP: Script = lua_script!("wr_reap");
/// Read-only figures for `/stats` (`lua/wr_stats.lua`).
pub static WR_STATS: Script = lua_script!("wr_stats");
/// Read-only figures for the control room (`lua/wr_control.lua`).
pub static WR_CONTROL: Script = lua_script!("wr_control");
/// Read-only: whether a sale is armed, its proof-of-work difficulty and Redis time
/// (`lua/wr_challenge.lua`).
pub static WR_CHALLENGE: Script = lua_script!("wr_challenge");

/// A draw sale's entry: read, and a join's proof of work judged (`lua/wr_entry.lua`).
pub static WR_ENTRY: Script = lua_script!("wr_entry");

/// Read-only: one line shard's checkpoints for positions across shards
/// (`lua/wr_line_curve.lua`, [`crate::line`]).
pub static WR_LINE_CURVE: Script = lua_script!("wr_line_curve");
/// Read-only: positions in a spread line from the own shard and the published curves
/// (`lua/wr_line_position.lua`, [`crate::line`]).
pub static WR_LINE_POSITION: Script = lua_script!("wr_line_position");
/// A spread line's tick, step 1: the sale's state and budget, nothing charged
/// (`lua/wr_line_budget.lua`, [`crate::line::tick`]).
pub static WR_LINE_BUDGET: Script = lua_script!("wr_line_budget");
/// A spread line's tick, step 5: taken places written into `adm`, charged and reported
/// (`lua/wr_line_commit.lua`).
pub static WR_LINE_COMMIT: Script = lua_script!("wr_line_commit");
/// A spread line's tick, step 2: one shard's live heads, its silent ones skipped
/// (`lua/wr_line_head.lua`, [`crate::line::tick`]).
pub static WR_LINE_HEAD: Script = lua_script!("wr_line_head");
/// A spread line's tick, step 4: chosen places from `q` into `ladm`, pending
/// (`lua/wr_line_take.lua`).
pub static WR_LINE_TAKE: Script = lua_script!("wr_line_take");
/// A spread line's tick, step 6: pending `ladm` entries settled (`lua/wr_line_settle.lua`).
pub static WR_LINE_SETTLE: Script = lua_script!("wr_line_settle");

/// A poll of a spread line, on its own line shard alone (`lua/wr_line_status.lua`).
pub static WR_LINE_STATUS: Script = lua_script!("wr_line_status");
/// A line shard's own counters taken for the sale's `wr` (`lua/wr_line_fold.lua`).
pub static WR_LINE_FOLD: Script = lua_script!("wr_line_fold");
/// A join's new places put on their line shard (`lua/wr_line_place.lua`).
pub static WR_LINE_PLACE: Script = lua_script!("wr_line_place");
/// The order side's changes of admissions carried into a line shard's copies
/// (`lua/wr_line_sync.lua`).
pub static WR_LINE_SYNC: Script = lua_script!("wr_line_sync");
/// The first ETAs a spread line's shards noted, into the sale's report entries
/// (`lua/wr_line_note.lua`).
pub static WR_LINE_NOTE: Script = lua_script!("wr_line_note");

/// Every waiting-room script, for preloading and for header checks.
pub fn all() -> [&'static Script; 21] {
    [
        &WR_JOIN,
        &WR_STATUS,
        &WR_LEAVE,
        &WR_ADMIT,
        &WR_REAP,
        &WR_STATS,
        &WR_CONTROL,
        &WR_CHALLENGE,
        &WR_ENTRY,
        &WR_LINE_CURVE,
        &WR_LINE_POSITION,
        &WR_LINE_HEAD,
        &WR_LINE_TAKE,
        &WR_LINE_SETTLE,
        &WR_LINE_BUDGET,
        &WR_LINE_COMMIT,
        &WR_LINE_STATUS,
        &WR_LINE_FOLD,
        &WR_LINE_PLACE,
        &WR_LINE_SYNC,
        &WR_LINE_NOTE,
    ]
}
