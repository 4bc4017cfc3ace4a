//! A sale's line spread over several Redis shards (issue #22 §2; README "A line that outgrows
//! one Redis: the design"; the keys: `dropline_core::sale::keys::LineShards`).
//!
//! - [`positions`](mod@positions): how many places of the other shards stand ahead of a buyer, from count
//!   curves the leader reads and publishes each tick, so a poll reads its own shard alone;
//! - [`tick`]: the line shards' half of an admission tick: each shard's live heads, the merge
//!   that keeps one order across the shards, and the `ladm` outbox towards the sale's `adm`.
//!
//! Built and tested as a library; not wired yet: no tick or poll uses it, and no sale has more
//! than one line shard.

pub mod positions;
pub mod tick;

pub use positions::{
    CountCurve, EXACT_HEAD, ahead_in_others, checkpoint_ranks, pack, positions, publish,
    read_curve, segment_starts,
};
