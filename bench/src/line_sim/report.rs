//! The run's figures from what the buyers saw: per-second series, latency percentiles, the
//! ETA's accuracy (door.md §3) and the admission rate against the sale's. Pure arithmetic,
//! so that it is tested apart from the network.

use hdrhistogram::Histogram;
use serde::Serialize;

/// A count per second of the run (index = whole seconds since the start).
#[derive(Debug, Default, Clone)]
pub struct Series(pub Vec<u64>);

impl Series {
    pub fn bump(&mut self, at_ms: u32) {
        let s = (at_ms / 1000) as usize;
        if self.0.len() <= s {
            self.0.resize(s + 1, 0);
        }
        self.0[s] += 1;
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The most counted in any `window` consecutive seconds (the whole run if shorter).
    pub fn max_window(&self, window: usize) -> u64 {
        let w = window.max(1);
        if self.0.len() <= w {
            return self.total();
        }
        self.0.windows(w).map(|s| s.iter().sum()).max().unwrap_or(0)
    }

    /// The mean per second from the first to the last non-zero second (0 if none).
    pub fn mean_over_span(&self) -> f64 {
        let first = self.0.iter().position(|c| *c > 0);
        let last = self.0.iter().rposition(|c| *c > 0);
        match (first, last) {
            (Some(f), Some(l)) => self.0[f..=l].iter().sum::<u64>() as f64 / (l - f + 1) as f64,
            _ => 0.0,
        }
    }
}

/// A latency histogram in microseconds, 1 µs to 10 min at three significant digits.
pub fn latency_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub fn latency(h: &Histogram<u64>) -> Latency {
    let ms = |us: u64| us as f64 / 1000.0;
    Latency {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

/// door.md §3's accuracy over admitted buyers: E the first `eta_seconds` a buyer was shown,
/// W the wait from that answer to its first `admitted`; within the bound when
/// |W − E| ≤ 0.2·E + 2 s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EtaAccuracy {
    pub measured: usize,
    pub within: usize,
    /// `within / measured` (0 when nobody was measured).
    pub share_within: f64,
    pub median_abs_error_s: f64,
}

/// `samples`: (E in seconds, W in milliseconds) per admitted buyer who was shown an ETA.
pub fn eta_accuracy(samples: &[(u32, u32)]) -> EtaAccuracy {
    let mut errors: Vec<f64> = Vec::with_capacity(samples.len());
    let mut within = 0;
    for &(e_s, w_ms) in samples {
        let e = f64::from(e_s);
        let w = f64::from(w_ms) / 1000.0;
        let err = (w - e).abs();
        if err <= 0.2 * e + 2.0 {
            within += 1;
        }
        errors.push(err);
    }
    errors.sort_by(f64::total_cmp);
    let median = match errors.len() {
        0 => 0.0,
        n if n % 2 == 1 => errors[n / 2],
        n => (errors[n / 2 - 1] + errors[n / 2]) / 2.0,
    };
    EtaAccuracy {
        measured: samples.len(),
        within,
        share_within: if samples.is_empty() {
            0.0
        } else {
            within as f64 / samples.len() as f64
        },
        median_abs_error_s: median,
    }
}

/// The admissions the buyers saw against the sale's rate R: the most seen in any 10 s
/// against R·10. Buyers see an admission at their next poll, so this is the rate as seen from
/// outside, smeared by up to one poll interval, not the admitter's own count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AdmissionRate {
    pub rate_per_second: Option<f64>,
    pub mean_seen_per_second: f64,
    pub max_seen_in_10s: u64,
    /// `max_seen_in_10s / (R·10)` when R is known.
    pub max_10s_over_rate: Option<f64>,
}

pub fn admission_rate(admitted: &Series, rate: Option<f64>) -> AdmissionRate {
    let max10 = admitted.max_window(10);
    AdmissionRate {
        rate_per_second: rate,
        mean_seen_per_second: admitted.mean_over_span(),
        max_seen_in_10s: max10,
        max_10s_over_rate: rate.filter(|r| *r > 0.0).map(|r| max10 as f64 / (r * 10.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_count_per_second_and_find_the_busiest_window() {
        let mut s = Series::default();
        for ms in [0, 999, 1000, 3500, 3600, 3700, 9999] {
            s.bump(ms);
        }
        assert_eq!(s.0, [2, 1, 0, 3, 0, 0, 0, 0, 0, 1]);
        assert_eq!(s.total(), 7);
        assert_eq!(s.max_window(2), 3);
        assert_eq!(s.max_window(4), 6);
        assert_eq!(s.max_window(100), 7);
        assert_eq!(s.max_window(0), 3);
        // From the first to the last busy second: 7 over 10 s.
        assert!((s.mean_over_span() - 0.7).abs() < 1e-9);
        assert_eq!(Series::default().mean_over_span(), 0.0);
        assert_eq!(Series(vec![0, 0, 4, 2, 0]).mean_over_span(), 3.0);
    }

    #[test]
    fn latency_percentiles_come_out_in_milliseconds() -> anyhow::Result<()> {
        let mut h = latency_histogram()?;
        for us in 1..=1000u64 {
            h.record(us * 1000)?;
        }
        let l = latency(&h);
        assert_eq!(l.count, 1000);
        assert!((l.p50_ms - 500.0).abs() < 1.0, "{l:?}");
        assert!((l.p99_ms - 990.0).abs() < 1.0, "{l:?}");
        assert!((l.max_ms - 1000.0).abs() < 1.0, "{l:?}");
        Ok(())
    }

    #[test]
    fn eta_within_twenty_percent_plus_two_seconds() {
        // E = 10 s: the bound is 4 s, so W of 14 s is in, 14.001 s out, 6 s in, 5.9 s out.
        let a = eta_accuracy(&[(10, 14_000), (10, 14_001), (10, 6_000), (10, 5_900)]);
        assert_eq!((a.measured, a.within), (4, 2));
        assert!((a.share_within - 0.5).abs() < 1e-9);
        // Errors 4, 4.001, 4, 4.1: the median is (4 + 4.001) / 2.
        assert!((a.median_abs_error_s - 4.0005).abs() < 1e-9, "{a:?}");
        // E = 0: only the 2 s.
        let b = eta_accuracy(&[(0, 2_000), (0, 2_500), (1, 0)]);
        assert_eq!(b.within, 2);
        // Errors 2, 2.5 and 1: the median is 2.
        assert!((b.median_abs_error_s - 2.0).abs() < 1e-9, "{b:?}");
        let none = eta_accuracy(&[]);
        assert_eq!((none.measured, none.share_within), (0, 0.0));
    }

    #[test]
    fn admissions_against_the_rate() {
        let seen = Series(vec![20; 30]);
        let a = admission_rate(&seen, Some(20.0));
        assert_eq!(a.max_seen_in_10s, 200);
        assert_eq!(a.max_10s_over_rate, Some(1.0));
        assert_eq!(a.mean_seen_per_second, 20.0);
        assert_eq!(admission_rate(&seen, None).max_10s_over_rate, None);
        assert_eq!(admission_rate(&seen, Some(0.0)).max_10s_over_rate, None);
    }
}
