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
//! Built and tested as a library; not wired yet: no poll uses it, and no sale has more than one
//! line shard.

pub mod positions;
pub mod reap;
pub mod tick;

pub use positions::{
    CountCurve, EXACT_HEAD, ahead_in_others, checkpoint_ranks, pack, positions, publish,
    read_curve, segment_starts,
};
