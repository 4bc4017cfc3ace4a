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
//! | `dev` | stream | the draw outbox: promotions and settlements, drained into MySQL `draw_entries` by the draw leader |

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

    /// `wtc`, the report's arrival checkpoints (the join times of buyers without a `wt` entry).
    pub fn report_checkpoints(&self) -> String {
        self.named("wtc")
    }

    /// `adm`, the admitted buyers.
    pub fn admitted(&self) -> String {
        self.named("adm")
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
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escape("dl:{s:x}:"), "dl:{s:x}:");
    }
}
