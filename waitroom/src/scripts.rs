//! The waiting room's Lua scripts (`lua/wr_*.lua`), embedded and run by SHA through
//! [`dropline_core::lua::Script`]. Each file's header comment is its contract (KEYS, ARGV,
//! returns); [`crate::queue`] is the typed wrapper the rest of the crate uses.

use dropline_core::lua::Script;

/// Join the queue, or report the existing place (`lua/wr_join.lua`).
pub static WR_JOIN: Script = Script::new("wr_join", include_str!("../../lua/wr_join.lua"));
/// A buyer's state and position; records the poll (`lua/wr_status.lua`).
pub static WR_STATUS: Script = Script::new("wr_status", include_str!("../../lua/wr_status.lua"));
/// Leave the queue, idempotent (`lua/wr_leave.lua`).
pub static WR_LEAVE: Script = Script::new("wr_leave", include_str!("../../lua/wr_leave.lua"));
/// One admission tick (`lua/wr_admit.lua`).
pub static WR_ADMIT: Script = Script::new("wr_admit", include_str!("../../lua/wr_admit.lua"));
/// Lapsed admissions and silent waiters, in bounded batches (`lua/wr_reap.lua`).
pub static WR_REAP: Script = Script::new("wr_reap", include_str!("../../lua/wr_reap.lua"));
/// Read-only figures for `/stats` (`lua/wr_stats.lua`).
pub static WR_STATS: Script = Script::new("wr_stats", include_str!("../../lua/wr_stats.lua"));
/// Read-only figures for the control room (`lua/wr_control.lua`).
pub static WR_CONTROL: Script = Script::new("wr_control", include_str!("../../lua/wr_control.lua"));

/// Every waiting-room script, for preloading and for header checks.
pub fn all() -> [&'static Script; 7] {
    [
        &WR_JOIN,
        &WR_STATUS,
        &WR_LEAVE,
        &WR_ADMIT,
        &WR_REAP,
        &WR_STATS,
        &WR_CONTROL,
    ]
}
