//! Exponential backoff with full jitter, for reconnect loops.

use std::time::Duration;

use rand::Rng;

/// Delays that double from `base` up to `max`; each delay is drawn uniformly from
/// `[cap/2, cap]` so that many clients retrying at once spread out.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            current: base,
        }
    }

    /// The upper bound of the next delay.
    pub fn peek(&self) -> Duration {
        self.current
    }

    /// The next delay to sleep, advancing the schedule.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = cap / 2;
        let spread = cap.saturating_sub(half).as_millis() as u64;
        half + Duration::from_millis(rand::rng().random_range(0..=spread))
    }

    /// Back to the first delay after a success.
    pub fn reset(&mut self) {
        self.current = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_within_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let caps = [100, 200, 400, 800, 800, 800];
        for cap in caps {
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(cap), "{d:?} > {cap}ms");
            assert!(d >= Duration::from_millis(cap / 2), "{d:?} < {}ms", cap / 2);
        }
        b.reset();
        assert_eq!(b.peek(), Duration::from_millis(100));
    }
}
