//! A sale's line spread over several Redis shards (issue #22 §2; README "A line that outgrows
//! one Redis: the design"; the keys: `dropline_core::sale::keys::LineShards`).
//!
//! - [`positions`](mod@positions): how many places of the other shards stand ahead of a buyer, from count
//!   curves the leader reads and publishes each tick, so a poll reads its own shard alone;
//! - [`tick`]: an admission tick across the shards: each shard's live heads, the merge that
//!   keeps one order across the shards, the `ladm` outbox towards the sale's `adm`, and
//!   [`tick::run`], the whole tick (a dead leader's leftovers first, then the positions
//!   published);
//! - [`reap`](mod@reap): the reaper's pass over the shards (silent places skipped, places past
//!   the return grace removed, lapsed copies dropped), counted in the sale's `wr`.
//!
//! The admitter's leader runs the tick and the reaper for a sale whose `cfg.line_shards` > 1;
//! [`crate::queue::WaitQueue`] sends such a sale's polls to `lua/wr_line_status.lua` on each
//! buyer's own shard, from what the tick publishes there ([`tick::News`], the curves), and its
//! joins (three calls: shard, sale's slot, shard) and leaves to the shards. The admin API
//! takes `line_shards` (1-64) and arms it into `cfg`; the order side notes its changes of
//! admissions in `admch`, which each tick carries into the shards' copies ([`tick::sync`]).

pub mod positions;
pub mod reap;
pub mod tick;

pub use positions::{
    CountCurve, EXACT_HEAD, ahead_in_others, checkpoint_ranks, pack, positions, publish,
    read_curve, segment_starts, unpack,
};
