//! When each simulated buyer acts next: one entry per buyer in a min-heap keyed by the due
//! instant (milliseconds since the run started), driven by the single task that dispatches
//! requests. Eight bytes a waiting buyer, no task or timer object per buyer.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The buyers' next instants, earliest first (ties by buyer index, so the order is stable).
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(u32, u32)>>,
}

impl Timers {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            heap: BinaryHeap::with_capacity(n),
        }
    }

    /// Buyer `idx` acts at `due_ms`.
    pub fn schedule(&mut self, idx: u32, due_ms: u32) {
        self.heap.push(Reverse((due_ms, idx)));
    }

    /// The earliest buyer due at or before `now_ms`, with the instant it was due; `None` if
    /// nobody is due yet.
    pub fn pop_due(&mut self, now_ms: u32) -> Option<(u32, u32)> {
        match self.heap.peek() {
            Some(Reverse((due, _))) if *due <= now_ms => {
                self.heap.pop().map(|Reverse((due, idx))| (due, idx))
            }
            _ => None,
        }
    }

    /// When the next buyer is due.
    pub fn next_due(&self) -> Option<u32> {
        self.heap.peek().map(|Reverse((due, _))| *due)
    }
}

/// When buyer `i` of `n` joins: the first `pre_open` at once (`now_ms`), the rest spread
/// evenly over `spread_ms` from the opening (`opens_ms`, or now if the sale is already open).
pub fn arrival_ms(
    i: u32,
    n: u32,
    pre_open: u32,
    now_ms: u32,
    opens_ms: u32,
    spread_ms: u32,
) -> u32 {
    if i < pre_open {
        return now_ms;
    }
    let after = u64::from(n.saturating_sub(pre_open)).max(1);
    let k = u64::from(i - pre_open);
    let offset = k * u64::from(spread_ms) / after;
    opens_ms
        .max(now_ms)
        .saturating_add(u32::try_from(offset).unwrap_or(u32::MAX))
}

/// SplitMix64: a buyer's own random stream from the run's seed and its index, so that a run
/// is repeatable and nothing random is stored per buyer.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform draw in [0, 1) from a 64-bit random value.
pub fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_buyers_come_out_earliest_first_and_never_early() {
        let mut t = Timers::with_capacity(4);
        t.schedule(7, 300);
        t.schedule(3, 100);
        t.schedule(5, 100);
        t.schedule(1, 200);
        assert_eq!(t.next_due(), Some(100));
        assert_eq!(t.pop_due(99), None);
        assert_eq!(t.pop_due(150), Some((100, 3)));
        assert_eq!(t.pop_due(150), Some((100, 5)));
        assert_eq!(t.pop_due(150), None);
        assert_eq!(t.pop_due(1000), Some((200, 1)));
        assert_eq!(t.pop_due(1000), Some((300, 7)));
        assert_eq!(t.pop_due(1000), None);
        assert_eq!(t.next_due(), None);
    }

    #[test]
    fn arrivals_pre_open_at_once_the_rest_spread_after_opening() {
        // 10 buyers, 4 before opening at 5 s, 6 spread over 6 s from the opening.
        let at: Vec<u32> = (0..10)
            .map(|i| arrival_ms(i, 10, 4, 50, 5000, 6000))
            .collect();
        assert_eq!(at, [50, 50, 50, 50, 5000, 6000, 7000, 8000, 9000, 10000]);
        // A sale already open: the spread starts now.
        assert_eq!(arrival_ms(4, 10, 4, 9000, 5000, 6000), 9000);
        // Nobody after the opening, or no spread: no division by zero.
        assert_eq!(arrival_ms(3, 4, 4, 10, 20, 0), 10);
        assert_eq!(arrival_ms(5, 10, 4, 10, 20, 0), 20);
    }

    #[test]
    fn the_random_stream_is_repeatable_and_roughly_uniform() {
        assert_eq!(splitmix(42), splitmix(42));
        assert_ne!(splitmix(42), splitmix(43));
        let n = 100_000u64;
        let below_tenth = (0..n).filter(|i| unit(splitmix(*i)) < 0.1).count() as f64;
        assert!((below_tenth / n as f64 - 0.1).abs() < 0.01, "{below_tenth}");
        assert!((0..n).all(|i| (0.0..1.0).contains(&unit(splitmix(i)))));
    }
}
