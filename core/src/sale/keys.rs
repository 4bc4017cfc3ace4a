//! A sale's Redis key layout: the one place that names a sale's keys (DESIGN §4).
//!
//! Every key of a sale is `<prefix>:{s:<sale>}:<name>`: the hash tag `{s:<sale>}` puts all of
//! them in one slot, so each Lua script touches one slot and the design runs unchanged on Redis
//! Cluster (sales spread across shards).
//!
//! | name | type | content |
//! | --- | --- | --- |
//! | `cfg` | hash | the sale's settings ([`crate::sale`]) |
//! | `avail`, `held`, `sold` | strings | units for sale, in HELD + PAYING orders, in PAID orders |
//! | `q` | zset | the waiting line: user (16 raw bytes) → arrival score (order key and last-poll stamp) |
//! | `qskip` | zset | skipped places: buyers silent for longer than `abandon_after`, same member and score as in `q`, kept for the return grace (door.md §6) |
//! | `qseq` | string | the line's arrival counter |
//! | `wr` | hash | the waiting room's figures (admitted, skipped, returned and abandoned totals, the admission rate's state, the reaper's cursors, the outage credit's `tick_at` and `resumed_at`) |
//! | `adm` | zset | admitted buyers: user (16 raw bytes) → admission deadline (epoch ms) |
//! | `alerted:sold_out` | string | the sold-out alert went out for this spell |
//! | `codes` | hash | access codes: SHA-256 of sale id and code (32 raw bytes) → `<group>:<uses>` (design/door.md §2) |
//! | `codeuse` | hash | access codes' spent uses: code hash → count; code hash + user (48 raw bytes) → 1 |
//! | `codefail:<user>` | string | the user's wrong codes this hour (TTL an hour from the first) |
//! | `o:<order>` | hash | an order ([`crate::orders`]) |
//! | `hold:<order>` | string | the order's hold timer: only its TTL matters |
//! | `holds` | zset | live (HELD or PAYING) order ids → deadline (epoch ms) |
//! | `u:<user>` | string | the user's units in HELD + PAYING + PAID orders |
//! | `idem:<user>:<key>` | hash | an idempotency key: the order it made and the request's fingerprint |
//! | `events` | stream | the order outbox ([`crate::orders::outbox`]) |
//! | `payreq:<order>` | string | the api's claim on publishing the order's `payment.requested`: `pending` while one is published, `sent` once the broker confirmed it (TTL the payment timeout) |
//! | `paycard:<order>` | string | the card token of the order's first pay, the one every request for it carries |
//! | `pow:<random>` | string | a proof-of-work challenge spent by a join (door.md §1; expires with the challenge) |
//! | `ent` | hash | a draw sale's entries (design/draw.md): user (16 raw bytes) → entry id (32 hex), `:<rank>` once ranked, `-` in front once withdrawn; an index of MySQL `draw_entries` |
//! | `rk` | hash | a draw's ranking: rank (decimal) → user (16 raw bytes), written by the draw leader after the reveal |
//! | `drw` | hash | a draw's counters: `ranked` (the ranking is indexed: its length), `promoted` (wins handed out) |
//! | `drw` | hash | (also) `reserved`: units kept for open wins without an order (Σ `max_quantity`) |
//! | `win` | hash | a draw's wins: user → `<claim deadline ms>:<max_quantity>` while open, `ord:<order>:<deadline>:<max_quantity>` once ordered, `claimed`, `forfeited` (lua/draw_tick.lua) |
//! | `wdl` | zset | a draw's open wins without an order: user → claim deadline (epoch ms) |
//! | `wod` | hash | a draw's ordered wins not settled yet: user → order id |
//! | `rep` | hash | the post-sale report's totals and histograms (`joined`, `left`, `sold_out_at`, `w:<bucket>`, `e:<bucket>`, `e_within`, `r:<reason>`), written by the waiting room's scripts and copied to MySQL by the report worker |
//! | `rps` | hash | the report's per-second series: `a:<t>` arrivals, `m:<t>` admissions, `l:<t>` queue length, `t` seconds since `opens_at` (at most 21,600) |
//! | `wt` | hash | a waiting buyer's report entry: user (16 raw bytes) → `<join ms>` or `<join ms>:<first ETA ms>:<shown ms>`; removed at admission or leave |
//! | `wtp` | hash | the sampled waiting buyers (a `wt` entry) not yet shown an ETA: user (16 raw bytes) → `''`; while it is empty a poll reads no `wt` |
//! | `dev` | stream | the draw outbox: promotions and settlements, drained into MySQL `draw_entries` by the draw leader |
//!
//! # A line spread over shards
//!
//! A sale whose line is spread over L > 1 line shards (README "A line that outgrows one Redis:
//! the design", issue #22 §2) keeps every key above on its own slot, and holds its waiting
//! places in [`LineKeys`], one set per shard, `<prefix>:{<line tag>}:<name>`, the line tag
//! `s:<sale>:l<i>.<k>` chosen by [`LineShards`] so that shard i's slot falls in the i-th of L
//! equal slot ranges (an evenly split cluster then gives each shard its own primary):
//!
//! | name | type | content |
//! | --- | --- | --- |
//! | `q`, `qskip` | zsets | the shard's part of the line and of the skipped places, as `q`, `qskip` above |
//! | `ladm` | zset | the admitter's outbox: places taken from `q` this tick and not yet written into the sale's `adm` |
//! | `lmeta` | hash | what a poll needs from the sale's slot, written by the admitter each tick |
//!
//! With L = 1 the line is the sale's own `q` and `qskip`: a small sale pays nothing.

use crate::clients::redis::Redis;
use crate::ids::{OrderId, SaleId, UserId};

/// The names of one sale's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleKeys {
    /// `<prefix>:{s:<sale>}:`
    base: String,
}

impl SaleKeys {
    pub fn new(redis: &Redis, sale: SaleId) -> Self {
        Self {
            base: redis.sale_key(sale, ""),
        }
    }

    /// The layout under key prefix `prefix` (`redis.key_prefix`), without a client.
    pub fn with_prefix(prefix: &str, sale: SaleId) -> Self {
        Self {
            base: format!("{prefix}:{{s:{sale}}}:"),
        }
    }

    fn named(&self, name: &str) -> String {
        format!("{}{name}", self.base)
    }

    /// `<prefix>:{s:<sale>}:`, what every key of the sale starts with (a SCAN pattern's base).
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn cfg(&self) -> String {
        self.named("cfg")
    }

    pub fn avail(&self) -> String {
        self.named("avail")
    }

    pub fn held(&self) -> String {
        self.named("held")
    }

    pub fn sold(&self) -> String {
        self.named("sold")
    }

    /// The stock keys in the order the scripts take them: `cfg`, `avail`, `held`, `sold`.
    pub fn stock(&self) -> [String; 4] {
        [self.cfg(), self.avail(), self.held(), self.sold()]
    }

    /// `q`, the waiting line.
    pub fn queue(&self) -> String {
        self.named("q")
    }

    /// `qskip`, the skipped places (door.md §6).
    pub fn skipped(&self) -> String {
        self.named("qskip")
    }

    /// `qseq`, the line's arrival counter.
    pub fn queue_seq(&self) -> String {
        self.named("qseq")
    }

    /// `wr`, the waiting room's figures.
    pub fn room(&self) -> String {
        self.named("wr")
    }

    /// `rep`, the post-sale report's totals and histograms.
    pub fn report(&self) -> String {
        self.named("rep")
    }

    /// `rps`, the post-sale report's per-second series.
    pub fn report_series(&self) -> String {
        self.named("rps")
    }

    /// `wt`, the sampled waiting buyers' report entries (join time, first ETA shown).
    pub fn report_entries(&self) -> String {
        self.named("wt")
    }

    /// `wtp`, the sampled buyers not yet shown an ETA (`eta_waits` in `lua/lib/prelude.lua`).
    pub fn report_unshown(&self) -> String {
        self.named("wtp")
    }

    /// `wtc`, the report's arrival checkpoints (the join times of buyers without a `wt` entry).
    pub fn report_checkpoints(&self) -> String {
        self.named("wtc")
    }

    /// `adm`, the admitted buyers.
    pub fn admitted(&self) -> String {
        self.named("adm")
    }

    /// `admch`, the buyers whose admission an order changed since the admitter last looked,
    /// for a line spread over shards to carry into its copies (`adm_changed` in
    /// `lua/lib/prelude.lua`; exists only for such a sale, kept by its ticks' mark `""`).
    pub fn admission_changes(&self) -> String {
        self.named("admch")
    }

    /// `admchf`, the `admch` notes a tick took and has not yet carried into the line shards
    /// (`lua/wr_line_budget.lua`): the leader deletes it once every shard has them, so a leader
    /// that dies in between leaves them to the next tick instead of losing them.
    pub fn admission_changes_taken(&self) -> String {
        self.named("admchf")
    }

    /// `alerted:sold_out`, the sold-out alert's flag.
    pub fn sold_out_alerted(&self) -> String {
        self.named("alerted:sold_out")
    }

    /// `holds`, the live orders' deadlines.
    pub fn holds(&self) -> String {
        self.named("holds")
    }

    /// `codes`, the sale's access codes: code hash (32 raw bytes, [`crate::sale::door::code_hash`])
    /// → `<group>:<uses>`.
    pub fn codes(&self) -> String {
        self.named("codes")
    }

    /// `codeuse`, the access codes' spent uses: code hash → uses spent, and code hash followed
    /// by the user's 16 bytes → 1 for each user who spent one (design/door.md §2).
    pub fn code_use(&self) -> String {
        self.named("codeuse")
    }

    /// `codefail:<user>`, the user's wrong access codes this hour (expires an hour after the
    /// first).
    pub fn code_failures(&self, user: UserId) -> String {
        format!("{}codefail:{user}", self.base)
    }

    /// `events`, the order outbox.
    pub fn events(&self) -> String {
        self.named("events")
    }

    /// `o:`, what every order hash's key starts with.
    pub fn order_prefix(&self) -> String {
        self.named(ORDER)
    }

    /// `o:<order>`, the order's hash.
    pub fn order(&self, order: OrderId) -> String {
        format!("{}{ORDER}{order}", self.base)
    }

    /// `hold:<order>`, the order's timer.
    pub fn hold(&self, order: OrderId) -> String {
        format!("{}{HOLD}{order}", self.base)
    }

    /// `u:<user>`, what every user counter's key starts with.
    pub fn user_prefix(&self) -> String {
        self.named(USER)
    }

    /// `u:<user>`, the user's units in HELD + PAYING + PAID orders.
    pub fn user(&self, user: UserId) -> String {
        format!("{}{USER}{user}", self.base)
    }

    /// `payreq:<order>`, the claim on publishing the order's `payment.requested`.
    pub fn payment_request(&self, order: OrderId) -> String {
        format!("{}payreq:{order}", self.base)
    }

    /// `paycard:<order>`, the card token of the order's first pay.
    pub fn payment_card(&self, order: OrderId) -> String {
        format!("{}paycard:{order}", self.base)
    }

    /// `pow:<id>`, the spent marker of a proof-of-work challenge (`id`: its random part in hex).
    /// `ent`, a draw sale's entries by user.
    pub fn entries(&self) -> String {
        self.named("ent")
    }

    /// `rk`, a draw's ranking: rank → user.
    pub fn ranks(&self) -> String {
        self.named("rk")
    }

    /// `drw`, a draw's counters.
    pub fn draw_counters(&self) -> String {
        self.named("drw")
    }

    /// `win`, a draw's wins by user.
    pub fn wins(&self) -> String {
        self.named("win")
    }

    /// `wdl`, a draw's open wins without an order: user → claim deadline.
    pub fn open_wins(&self) -> String {
        self.named("wdl")
    }

    /// `wod`, a draw's ordered wins not settled yet: user → order id.
    pub fn ordered_wins(&self) -> String {
        self.named("wod")
    }

    /// `dev`, the draw outbox (promotions and settlements for MySQL).
    pub fn draw_events(&self) -> String {
        self.named("dev")
    }

    pub fn pow_spent(&self, id: &str) -> String {
        format!("{}pow:{id}", self.base)
    }

    /// `idem:<user>:<key>`, an idempotency key.
    pub fn idempotency(&self, user: UserId, key: &str) -> String {
        format!("{}idem:{user}:{key}", self.base)
    }
}

/// The most line shards a sale may have: each is a slot range of 16,384 / L slots, and the
/// admitter reads every shard's head each tick.
pub const MAX_LINE_SHARDS: u16 = 64;

/// Redis Cluster's slot count.
const SLOTS: u32 = 16_384;

/// How a sale's line is split over shards: which shard holds a user's place, and each shard's
/// hash tag. The tags are a pure function of the sale id and L, so every process names the same
/// keys without asking anyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineShards {
    /// Shard i's keys. One entry (the sale's own `q`, `qskip`) when the line is not spread.
    shards: Vec<LineKeys>,
}

impl LineShards {
    /// The layout of `sale`'s line over `count` shards (clamped to 1..=[`MAX_LINE_SHARDS`]).
    pub fn new(redis: &Redis, sale: SaleId, count: u16) -> Self {
        Self::with_prefix(redis.prefix(), sale, count)
    }

    /// [`LineShards::new`] under key prefix `prefix`, without a client.
    pub fn with_prefix(prefix: &str, sale: SaleId, count: u16) -> Self {
        let count = count.clamp(1, MAX_LINE_SHARDS);
        let shards = if count == 1 {
            let own = SaleKeys::with_prefix(prefix, sale);
            vec![LineKeys {
                q: own.queue(),
                skip: own.skipped(),
                outbox: own.named("ladm"),
                meta: own.named("lmeta"),
                eta_wait: own.named("lwt"),
                eta_noted: own.named("lwte"),
            }]
        } else {
            (0..count)
                .map(|index| {
                    let tag = line_tag(sale, index, count);
                    let base = format!("{prefix}:{{{tag}}}:");
                    LineKeys {
                        q: format!("{base}q"),
                        skip: format!("{base}qskip"),
                        outbox: format!("{base}ladm"),
                        meta: format!("{base}lmeta"),
                        eta_wait: format!("{base}lwt"),
                        eta_noted: format!("{base}lwte"),
                    }
                })
                .collect()
        };
        Self { shards }
    }

    /// L, the number of line shards.
    pub fn count(&self) -> u16 {
        // At most MAX_LINE_SHARDS entries (new clamps).
        self.shards.len() as u16
    }

    /// The shard that holds `user`'s place: the user id's last 8 bytes (the random part of a
    /// UUIDv7) modulo L, so a place is always found with one call and a user has one shard.
    pub fn shard_of(&self, user: UserId) -> u16 {
        shard_of(user, self.count())
    }

    /// Shard `index`'s keys (`index` modulo L).
    pub fn keys(&self, index: u16) -> &LineKeys {
        &self.shards[usize::from(index % self.count())]
    }

    /// The keys of the shard that holds `user`'s place.
    pub fn keys_of(&self, user: UserId) -> &LineKeys {
        self.keys(self.shard_of(user))
    }

    /// Every shard's keys, in shard order.
    pub fn all(&self) -> &[LineKeys] {
        &self.shards
    }
}

/// One line shard's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineKeys {
    /// `q`: the places waiting on this shard.
    pub q: String,
    /// `qskip`: the skipped places of this shard.
    pub skip: String,
    /// `ladm`: places taken from `q` by a tick and not yet written into the sale's `adm`.
    pub outbox: String,
    /// `lmeta`: the sale's state as the admitter last published it to this shard.
    pub meta: String,
    /// `lwt`: this shard's buyers sampled for the report (the sale's `wt` has their entry) who
    /// have not been shown an ETA yet (user → `""`).
    pub eta_wait: String,
    /// `lwte`: the first ETA shown to such a buyer, until the leader carries it into the
    /// sale's `wt` (user → `<eta ms>:<shown ms>`).
    pub eta_noted: String,
}

impl LineKeys {
    /// The keys `lua/wr_line_status.lua` and `lua/wr_line_place.lua` take, in their order:
    /// q, skip, ladm, lmeta, lwt, lwte.
    pub fn place_keys(&self) -> [&str; 6] {
        [
            &self.q,
            &self.skip,
            &self.outbox,
            &self.meta,
            &self.eta_wait,
            &self.eta_noted,
        ]
    }
}

/// The line shard of `user` among `count`.
fn shard_of(user: UserId, count: u16) -> u16 {
    let bytes = user.as_uuid().as_bytes();
    let mut tail = [0u8; 8];
    tail.copy_from_slice(&bytes[8..]);
    // The result is below count, a u16.
    (u64::from_be_bytes(tail) % u64::from(count.max(1))) as u16
}

/// The slots shard `index` of `count` may take: the index-th of `count` equal ranges.
pub fn line_slot_range(index: u16, count: u16) -> std::ops::Range<u16> {
    let count = u32::from(count.max(1));
    let index = u32::from(index) % count;
    // Both bounds are at most SLOTS = 16,384, inside u16.
    let start = (index * SLOTS / count) as u16;
    let end = ((index + 1) * SLOTS / count) as u16;
    start..end
}

/// Shard `index`'s hash tag, `s:<sale>:l<index>.<k>` with the smallest k whose slot falls in
/// [`line_slot_range`]. CRC16 spreads consecutive suffixes evenly, so k is about L on average;
/// the search is bounded all the same, and a tag past the bound keeps the last suffix tried
/// (its slot is then merely somewhere else: still one slot, still correct).
fn line_tag(sale: SaleId, index: u16, count: u16) -> String {
    const MAX_TRIES: u32 = 1_000_000;
    let range = line_slot_range(index, count);
    let mut tag = String::new();
    for k in 0..MAX_TRIES {
        tag = format!("s:{sale}:l{index}.{k}");
        if range.contains(&fred::util::redis_keyslot(tag.as_bytes())) {
            break;
        }
    }
    tag
}

/// What one of a sale's keys names, as a scan of the sale's keys meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyName<'a> {
    /// `o:<text>`: an order hash (the text should be an order id).
    Order(&'a str),
    /// `u:<text>`: a user's counter (the text should be a user id).
    User(&'a str),
    /// Any other key of the sale.
    Other,
}

impl SaleKeys {
    /// What `key` names; `None` when it is not one of this sale's keys.
    pub fn name_of<'a>(&self, key: &'a str) -> Option<KeyName<'a>> {
        let rest = key.strip_prefix(self.base.as_str())?;
        Some(if let Some(order) = rest.strip_prefix(ORDER) {
            KeyName::Order(order)
        } else if let Some(user) = rest.strip_prefix(USER) {
            KeyName::User(user)
        } else {
            KeyName::Other
        })
    }

    /// A SCAN pattern that matches the sale's order hashes and user counters (and no other
    /// key of the sale).
    pub fn orders_and_users_pattern(&self) -> String {
        format!("{}[ou]:*", glob_escape(&self.base))
    }
}

const ORDER: &str = "o:";
const HOLD: &str = "hold:";
const USER: &str = "u:";

/// The sale and order a hold timer key names (`<prefix>:{s:<sale>}:hold:<order>`, the inverse
/// of [`SaleKeys::hold`]), for the expiry worker's keyspace events; `None` for any other key.
pub fn parse_hold_key(redis: &Redis, key: &str) -> Option<(SaleId, OrderId)> {
    let rest = key.strip_prefix(redis.prefix())?.strip_prefix(":{s:")?;
    let (sale, rest) = rest.split_once("}:")?;
    let order = rest.strip_prefix(HOLD)?;
    Some((
        SaleId::parse_str(sale).ok()?,
        OrderId::parse_str(order).ok()?,
    ))
}

/// `s` with the characters a Redis glob pattern gives a meaning escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shards_fall_in_equal_slot_ranges_and_split_users_evenly() {
        for count in [2u16, 3, 5, 16, MAX_LINE_SHARDS] {
            let sale = SaleId::new_v7();
            let line = LineShards::with_prefix("dl", sale, count);
            assert_eq!(line.count(), count);
            for (index, keys) in line.all().iter().enumerate() {
                let index = index as u16;
                let slot = fred::util::redis_keyslot(keys.q.as_bytes());
                assert!(
                    line_slot_range(index, count).contains(&slot),
                    "shard {index} of {count}: slot {slot}"
                );
                // Every key of a shard shares its slot; no shard shares the sale's.
                for key in [&keys.skip, &keys.outbox, &keys.meta] {
                    assert_eq!(fred::util::redis_keyslot(key.as_bytes()), slot);
                }
                assert!(keys.q.starts_with("dl:{s:") && keys.q.ends_with("}:q"));
            }
            // The same layout from anyone who asks.
            assert_eq!(line, LineShards::with_prefix("dl", sale, count));
            let mut per_shard = vec![0u32; usize::from(count)];
            for _ in 0..(2_000 * u32::from(count)) {
                let user = UserId::new_v7();
                let shard = line.shard_of(user);
                assert_eq!(line.keys_of(user), line.keys(shard));
                per_shard[usize::from(shard)] += 1;
            }
            // 2,000 expected each: a fair split is well inside ±20%.
            assert!(
                per_shard.iter().all(|n| (1_600..=2_400).contains(n)),
                "{per_shard:?}"
            );
        }
        let ranges: Vec<_> = (0..3).map(|i| line_slot_range(i, 3)).collect();
        assert_eq!(ranges, [0..5461, 5461..10922, 10922..16384]);
    }

    #[test]
    fn a_line_of_one_shard_is_the_sales_own_line() {
        let sale = SaleId::new_v7();
        let own = SaleKeys::with_prefix("dl", sale);
        for count in [0, 1] {
            let line = LineShards::with_prefix("dl", sale, count);
            assert_eq!(line.count(), 1);
            assert_eq!(line.keys_of(UserId::new_v7()).q, own.queue());
            assert_eq!(line.keys(0).skip, own.skipped());
        }
        assert_eq!(
            LineShards::with_prefix("dl", sale, 1_000).count(),
            MAX_LINE_SHARDS
        );
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escape("dl:{s:x}:"), "dl:{s:x}:");
    }
}
